//! `ClusterMember` in process against a real etcd (`tests/support/etcd.rs`), with a fake
//! `TermEngine`: a member whose finished term left an engine task running does not start a
//! new term until that task has ended. Otherwise the task of the deposed term would write
//! through the shared store under the new term's fence. Waits poll with a deadline
//! (`support::until`); the clock is real because etcd is.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::Client;
use support::etcd::EtcdServer;
use support::{DEADLINE, until};
use syncer::cluster::member::{
    ClusterMember, EtcdSource, EtcdTasks, MemberSettings, TermDeps, TermEngine,
};
use syncer::gossip::transport::MemoryNetwork;
use syncer::gossip::{self, GossipConfig, GossipMetrics, NodeId, NodeMeta, Profile};
use syncer::registry::memory::MemoryRegistry;
use syncer::sync::SyncError;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The prefix the daemon would use for cluster `dc1`.
const PREFIX: &str = "/syncer/v2/dc1/";
/// How long the first term's straggler ignores its cancellation: longer than the member's
/// bounded wait for a term's engine (4 s), so the member gives the lease up while it runs.
const STRAGGLER: Duration = Duration::from_secs(7);

/// Counts its starts; the first term's engine leaves a task that ignores cancellation for
/// [`STRAGGLER`].
#[derive(Default)]
struct StragglingEngine {
    starts: AtomicUsize,
    /// Whether the first term's task still runs.
    straggling: Arc<AtomicBool>,
    /// Set when a term started while the first term's task still ran.
    started_while_straggling: AtomicBool,
}

#[async_trait]
impl TermEngine for StragglingEngine {
    async fn start(
        &self,
        _deps: TermDeps,
        _token: CancellationToken,
        tracker: &TaskTracker,
    ) -> Result<(), SyncError> {
        if self.straggling.load(Ordering::SeqCst) {
            self.started_while_straggling.store(true, Ordering::SeqCst);
        }
        if self.starts.fetch_add(1, Ordering::SeqCst) == 0 {
            let straggling = self.straggling.clone();
            straggling.store(true, Ordering::SeqCst);
            tracker.spawn(async move {
                tokio::time::sleep(STRAGGLER).await;
                straggling.store(false, Ordering::SeqCst);
            });
        }
        Ok(())
    }

    fn stand_by(&self) {}
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

#[tokio::test]
async fn a_member_does_not_campaign_again_before_the_last_terms_engine_stopped() {
    let server = EtcdServer::start();
    let net = MemoryNetwork::new();
    let gossip_addr = addr(20_001);
    let socket = net.bind(gossip_addr).expect("bind a gossip address");
    let gossip_token = CancellationToken::new();
    let gossip_tracker = TaskTracker::new();
    let gossip = gossip::spawn(
        GossipConfig {
            identity: NodeId {
                name: "a".into(),
                addr: gossip_addr,
                generation: 1,
                bump: 0,
                meta: NodeMeta::new("dc1", addr(30_001), "cluster"),
            },
            label: String::new(),
            profile: Profile::Local,
            join: Vec::new(),
            state_file: None,
            remembered: Vec::new(),
            resolver: None,
            seed: Some(1),
        },
        Arc::new(socket),
        GossipMetrics::default(),
        gossip_token.clone(),
        &gossip_tracker,
    );
    let engine = Arc::new(StragglingEngine::default());
    let member = ClusterMember {
        settings: MemberSettings {
            node: "a".into(),
            etcd: EtcdSource::Endpoints(vec![server.url()]),
            prefix: PREFIX.into(),
            leader_lease: Duration::from_secs(2),
        },
        gossip,
        registry: Arc::new(MemoryRegistry::new("dc1")),
        engine: engine.clone(),
    };
    let token = CancellationToken::new();
    let tracker = TaskTracker::new();
    let etcd = EtcdTasks {
        token: CancellationToken::new(),
        tracker: TaskTracker::new(),
    };
    let run = tokio::spawn({
        let token = token.clone();
        let tracker = tracker.clone();
        async move { member.run(token, etcd, &tracker).await }
    });

    until("the member wins its first term", || async {
        engine.starts.load(Ordering::SeqCst) == 1
    })
    .await;
    // End the term from outside: the keeper sees the leader key change hands.
    let mut client = Client::connect([server.endpoint()], None)
        .await
        .expect("connect a raw etcd client");
    client
        .delete(format!("{PREFIX}leader"), None)
        .await
        .expect("delete the leader key");

    until("the member wins a second term", || async {
        engine.starts.load(Ordering::SeqCst) >= 2
    })
    .await;
    assert!(
        !engine.started_while_straggling.load(Ordering::SeqCst),
        "a new term started while a task of the previous term still ran"
    );

    token.cancel();
    tokio::time::timeout(DEADLINE, run)
        .await
        .expect("the member stops")
        .expect("the member task does not panic")
        .expect("the member stops without an error");
    gossip_token.cancel();
    gossip_tracker.close();
    gossip_tracker.wait().await;
}

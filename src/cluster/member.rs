//! One syncer of a data centre in cluster mode: it opens the etcd store (through the managed
//! etcd member it runs, or `--etcd-endpoints`), campaigns for the leader key, runs the sync
//! engine for each term it wins and stands by between terms, until it is stopped.
//!
//! The engine is reached through [`TermEngine`], so this module knows when a term's engine
//! starts and stops but not how it is built. A term ends in one order whether it was lost or
//! the daemon stops: the engine's tasks stop first, then the lease is given up
//! ([`Term::resign`]), then the member announces itself as a standby. So a graceful stop
//! writes nothing after the revocation, and a standby takes over at once. The member does not
//! campaign again until every task of the last term's engine has ended, however long that
//! takes, so no task of a deposed term writes under a later term's fence.
//!
//! The managed etcd member runs on its own token and tracker, given by the node: it outlives
//! the member (the node stops it only after the lease was given up and the pool left).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};
use url::Url;

use super::gated::GatedRegistry;
use super::leader::{Election, LEASE_RECORD_FILE, Term};
use super::managed::{ManagedEtcd, ManagedEtcdConfig, ManagedEtcdError};
use crate::backoff::Backoff;
use crate::gossip::{GossipHandle, Role};
use crate::registry::{LONGEST_CALL, Registry};
use crate::store::{EtcdConnection, EtcdStore, EtcdTimeouts, EtcdTls, MappingStore, StoreError};
use crate::sync::SyncError;
use crate::tls::reload::ReloadSet;

/// Why a standby member refuses `Pull` and `Push`; callers go to the active member.
pub const STANDBY: &str = "standby: this member is not the active syncer of its data centre";
/// How long a finished term's engine may take to stop before the lease is given up anyway.
const ENGINE_STOP_TIMEOUT: Duration = Duration::from_secs(4);
/// How long giving the lease up may take: the keeper's own bound on its revoke call, so the
/// keeper (on the same tracker) has ended too when the term has.
const LEASE_RELEASE_TIMEOUT: Duration = super::leader::RELEASE_TIMEOUT;
/// The longest [`ClusterMember`] takes to end a term: the node's shutdown step "stop the
/// engine and give up the lease" allows at least this, so leaving the gossip pool never
/// overtakes the lease.
pub const TERM_STOP_BOUND: Duration = ENGINE_STOP_TIMEOUT.saturating_add(LEASE_RELEASE_TIMEOUT);
/// How often a member waiting for the last term's engine to stop says so.
const STRAGGLER_WARNING: Duration = Duration::from_secs(10);
/// Lease of a member's gossip address in `<prefix>members/<node>`: a member killed without a
/// chance to remove it is forgotten this long after.
const MEMBER_KEY_TTL_SECS: i64 = 10;
/// How often a member renews its `members/` key and reads the others' (so a member alone in
/// the pool tries addresses registered meanwhile within this).
const MEMBER_KEY_EVERY: Duration = Duration::from_secs(2);
/// How long one etcd request of the member registration may take.
const MEMBER_KEY_TIMEOUT: Duration = Duration::from_secs(2);
/// Pauses before adding an etcd endpoint to the client again after a failure.
const ENDPOINT_RETRY: Backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));

/// Why the member stopped before it was asked to.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("the managed etcd member failed: {0}")]
    ManagedEtcd(#[from] ManagedEtcdError),
    #[error("the sync engine failed: {0}")]
    Store(#[from] StoreError),
    #[error("the sync engine failed: {0}")]
    Engine(#[from] SyncError),
}

/// What one term's engine gets besides what it was built with.
pub struct TermDeps {
    /// The registry, with writes gated by the term's lease.
    pub registry: Arc<dyn Registry>,
    /// The etcd store, fenced by the term's lease.
    pub store: Arc<dyn MappingStore>,
    /// The first moment the engine may remove copies: a request the previous leader sent
    /// before its gate closed may still be applied (one lease plus
    /// [`LONGEST_CALL`] from the election).
    pub removals_from: Instant,
}

/// The sync engine as a term sees it.
#[async_trait]
pub trait TermEngine: Send + Sync {
    /// Starts the engine of one term; its tasks run on `tracker` until `token` is cancelled.
    /// Returns once it serves.
    ///
    /// # Errors
    /// When the engine cannot run on this store (it is corrupt).
    async fn start(
        &self,
        deps: TermDeps,
        token: CancellationToken,
        tracker: &TaskTracker,
    ) -> Result<(), SyncError>;

    /// No engine runs: `Pull` and `Push` are refused as a standby's.
    fn stand_by(&self);
}

/// Where the member finds etcd.
#[derive(Debug, Clone)]
pub enum EtcdSource {
    /// `--etcd-endpoints`: an etcd cluster run by somebody else, with the TLS of `https://`
    /// endpoints (`--etcd-ca`, `--etcd-cert`, `--etcd-key`).
    Endpoints {
        urls: Vec<Url>,
        tls: Option<EtcdTls>,
    },
    /// A managed member of the data centre's own etcd cluster.
    Managed(Box<ManagedEtcdConfig>),
}

/// The member's settings.
#[derive(Debug, Clone)]
pub struct MemberSettings {
    /// This syncer's node name: its value in the leader key.
    pub node: String,
    pub etcd: EtcdSource,
    /// The data centre's etcd key prefix, ending with `/`.
    pub prefix: String,
    /// The leader key's lease.
    pub leader_lease: Duration,
    /// The data directory, locked by this process: the lease of each term won is recorded
    /// there, so a restart takes over its own previous lease at once (`cluster::leader`).
    /// `None`: nothing recorded, a previous incarnation's lease is waited out.
    pub data_dir: Option<PathBuf>,
}

/// The managed etcd member's token and tracker: stopped by the node after the member.
#[derive(Debug, Clone)]
pub struct EtcdTasks {
    pub token: CancellationToken,
    pub tracker: TaskTracker,
}

/// A cluster-mode syncer, built by the node and run until its token is cancelled.
pub struct ClusterMember {
    pub settings: MemberSettings,
    pub gossip: GossipHandle,
    /// The registry, ungated; each term gates it with its own lease.
    pub registry: Arc<dyn Registry>,
    pub engine: Arc<dyn TermEngine>,
    /// What SIGHUP reloads: the etcd client joins it when it speaks TLS.
    pub reloadable: ReloadSet,
}

impl ClusterMember {
    /// Stands by until elected, runs the engine for the term, and stands by again when the
    /// term ends, until `token` is cancelled; the member's own tasks (lease keeper, endpoint
    /// follower) run on `tracker`. Returns after the last term's engine stopped and its lease
    /// was given up.
    ///
    /// # Errors
    /// A managed etcd member that cannot start, an etcd store that cannot be opened, or an
    /// engine that cannot start.
    pub async fn run(
        self,
        token: CancellationToken,
        etcd: EtcdTasks,
        tracker: &TaskTracker,
    ) -> Result<(), ClusterError> {
        self.engine.stand_by();
        let (endpoints, tls, updates) = match &self.settings.etcd {
            EtcdSource::Endpoints { urls, tls } => (urls.clone(), tls.clone(), None),
            EtcdSource::Managed(config) => {
                let Some(managed) =
                    start_managed((**config).clone(), &self.gossip, &token, etcd).await?
                else {
                    return Ok(());
                };
                (
                    managed.endpoints(),
                    config.tls.clone(),
                    Some(managed.subscribe_endpoints()),
                )
            }
        };
        let Some(store) = EtcdStore::connect_patiently(
            &endpoints,
            tls.as_ref(),
            self.settings.prefix.clone(),
            EtcdTimeouts::default(),
            &token,
        )
        .await?
        else {
            return Ok(());
        };
        let store = Arc::new(store);
        store.connection().join(&self.reloadable);
        if let Some(updates) = updates {
            tracker.spawn(follow_endpoints(
                updates,
                store.connection().clone(),
                endpoints,
                token.clone(),
            ));
        }
        info!(
            store = store.kind(),
            prefix = store.prefix(),
            "mapping store open"
        );
        tracker.spawn(advertise(
            store.connection().clone(),
            store.prefix().to_owned(),
            self.settings.node.clone(),
            self.gossip.clone(),
            token.clone(),
        ));
        let mut election = Election::new(
            store.connection().clone(),
            store.prefix(),
            self.settings.node.clone(),
            self.settings.leader_lease,
        );
        if let Some(dir) = &self.settings.data_dir {
            election = election.with_lease_record(dir.join(LEASE_RECORD_FILE));
        }
        loop {
            let Some(term) = election.acquire(&token, tracker).await else {
                return Ok(());
            };
            store.set_fence(Some(term.fence.clone()));
            let engine_tasks = TaskTracker::new();
            self.serve_term(&term, store.clone(), &token, &engine_tasks)
                .await?;
            if token.is_cancelled() {
                return Ok(());
            }
            // `end_term` gives the lease up after a bounded wait, so an engine task may still
            // run. The store is shared across terms: were this member to win again, such a
            // task of the deposed term would write under the new term's fence. So it does
            // not campaign until every task of the last term has ended.
            if !wait_for_last_engine(&engine_tasks, &token).await {
                return Ok(());
            }
            info!("standing by again");
        }
    }

    /// Runs the engine for `term` on `engine_tasks` until the term ends or `token` is
    /// cancelled, then stops it in order: engine, lease, role.
    async fn serve_term(
        &self,
        term: &Term,
        store: Arc<EtcdStore>,
        token: &CancellationToken,
        engine_tasks: &TaskTracker,
    ) -> Result<(), ClusterError> {
        let engine_token = term.ended.child_token();
        let deps = TermDeps {
            registry: Arc::new(GatedRegistry::new(self.registry.clone(), term.gate.clone())),
            store,
            removals_from: removals_from(term),
        };
        let start = self.engine.start(deps, engine_token.clone(), engine_tasks);
        tokio::pin!(start);
        let started = tokio::select! {
            biased;
            started = &mut start => started,
            // The engine may be waiting for the store: let it end by itself.
            () = token.cancelled() => {
                engine_token.cancel();
                start.await
            }
        };
        if started.is_ok() {
            let number = term.number;
            self.announce(move |m| {
                m.role = Role::Active;
                m.term = number;
            })
            .await;
            tokio::select! {
                () = engine_token.cancelled() => {}
                () = token.cancelled() => {}
            }
        }
        self.end_term(term, engine_token, engine_tasks).await;
        started.map_err(ClusterError::Engine)
    }

    /// Stops the term's engine, waits for its tasks, then gives the lease up and announces
    /// the standby role; within [`TERM_STOP_BOUND`].
    async fn end_term(&self, term: &Term, engine_token: CancellationToken, tasks: &TaskTracker) {
        engine_token.cancel();
        self.engine.stand_by();
        tasks.close();
        if tokio::time::timeout(ENGINE_STOP_TIMEOUT, tasks.wait())
            .await
            .is_err()
        {
            warn!(timeout = ?ENGINE_STOP_TIMEOUT, "the sync engine of the finished term is still stopping; giving the lease up anyway");
        }
        term.resign();
        if tokio::time::timeout(LEASE_RELEASE_TIMEOUT, term.released.cancelled())
            .await
            .is_err()
        {
            warn!(timeout = ?LEASE_RELEASE_TIMEOUT, "the finished term's lease is still being given up");
        }
        self.announce(|m| {
            m.role = Role::Standby;
            m.term = 0;
        })
        .await;
    }

    async fn announce(&self, change: impl FnOnce(&mut crate::gossip::NodeMeta) + Send + 'static) {
        if let Err(e) = self.gossip.update_meta(change).await {
            debug!(error = %e, "role not announced");
        }
    }
}

/// The first moment a new term's engine may remove copies, for a term won just now. The
/// previous leader sent its last gated request before its gate closed, which was before its
/// lease ran out and so before this term's campaign could put the key. A gated call is
/// aborted when its gate closes, but a request already sent may still be applied for up to
/// [`LONGEST_CALL`]; the lease on top covers a predecessor whose clock ran slow and keeps
/// the margin the design promises (one lease plus the longest call, DESIGN.md).
fn removals_from(term: &Term) -> Instant {
    Instant::now() + term.lease + LONGEST_CALL
}

/// Waits, without a time limit, until every task of a finished term's engine has ended,
/// warning every [`STRAGGLER_WARNING`] while one still runs; `false` when `token` is
/// cancelled first (the daemon stops: nothing will campaign any more).
async fn wait_for_last_engine(tasks: &TaskTracker, token: &CancellationToken) -> bool {
    let ended = tasks.wait();
    tokio::pin!(ended);
    // The first tick is at once: `end_term` already waited its bounded time.
    let mut warning = tokio::time::interval(STRAGGLER_WARNING);
    loop {
        tokio::select! {
            biased;
            () = &mut ended => return true,
            () = token.cancelled() => return false,
            _ = warning.tick() => warn!(
                running = tasks.len(),
                "the last term's sync engine is still stopping; this member will not campaign until it has"
            ),
        }
    }
}

/// Starts the managed etcd member on the node's etcd token and tracker; `None` when `token`
/// is cancelled first.
async fn start_managed(
    config: ManagedEtcdConfig,
    gossip: &GossipHandle,
    token: &CancellationToken,
    etcd: EtcdTasks,
) -> Result<Option<ManagedEtcd>, ManagedEtcdError> {
    // Its own child: cancelled when the member stops during the start; once started, only
    // the node's etcd stage stops it.
    let starting = etcd.token.child_token();
    let start = ManagedEtcd::start(config, gossip.clone(), starting.clone(), &etcd.tracker);
    tokio::pin!(start);
    let started = tokio::select! {
        biased;
        // Let the start end by itself: it stops a child it started in order (SIGTERM first)
        // rather than having it killed with the dropped future.
        () = token.cancelled() => {
            starting.cancel();
            start.await
        }
        started = &mut start => started,
    };
    match started {
        Ok(etcd) => Ok(Some(etcd)),
        Err(ManagedEtcdError::Cancelled) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The one follower of the managed member's endpoints: adds the client URL of every managed
/// etcd member that joins the data centre's cluster later to the etcd client, so the store
/// and the election still reach etcd through them when the local member is down.
async fn follow_endpoints(
    mut updates: watch::Receiver<Vec<Url>>,
    connection: EtcdConnection,
    mut known: Vec<Url>,
    token: CancellationToken,
) {
    let mut retry = ENDPOINT_RETRY;
    loop {
        let wanted = updates.borrow_and_update().clone();
        let mut failed = false;
        for url in wanted {
            if known.contains(&url) {
                continue;
            }
            match connection
                .add_endpoint(url.as_str().trim_end_matches('/'))
                .await
            {
                Ok(()) => {
                    info!(endpoint = %url, "etcd client: endpoint added");
                    known.push(url);
                }
                Err(e) => {
                    debug!(endpoint = %url, error = %e, "etcd client: endpoint not added");
                    failed = true;
                }
            }
        }
        let pause = if failed {
            Some(retry.pause())
        } else {
            retry.reset();
            None
        };
        tokio::select! {
            () = token.cancelled() => return,
            changed = updates.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            () = tokio::time::sleep(pause.unwrap_or_default()), if pause.is_some() => {}
        }
    }
}

/// Registers this member's gossip address under `<prefix>members/<node>` with its own lease,
/// renews it every [`MEMBER_KEY_EVERY`], and hands the addresses the other members registered
/// to the gossip pool, which tries them whenever it is alone: a member restarted on a new
/// address with no `--join-addr` and nothing remembered (or only dead addresses) still finds
/// its data centre. The key's lease is revoked on a graceful stop; a round under way is
/// dropped at once then, so an etcd that hangs does not hold the stop up.
async fn advertise(
    connection: EtcdConnection,
    prefix: String,
    node: String,
    gossip: GossipHandle,
    token: CancellationToken,
) {
    let mut registration = Registration {
        connection,
        key: format!("{prefix}members/{node}"),
        dir: format!("{prefix}members/"),
        own: gossip.local().addr,
        lease: None,
    };
    loop {
        let found = tokio::select! {
            () = token.cancelled() => break,
            found = registration.round() => found,
        };
        if let Some(addrs) = found
            && gossip.discovered(addrs).await.is_err()
        {
            break;
        }
        tokio::select! {
            () = token.cancelled() => break,
            () = tokio::time::sleep(MEMBER_KEY_EVERY) => {}
        }
    }
    if let Some(id) = registration.lease {
        let mut client = registration.connection.client();
        let _ = tokio::time::timeout(LEASE_RELEASE_TIMEOUT, client.lease_revoke(id)).await;
    }
}

/// This member's key under `<prefix>members/`.
struct Registration {
    connection: EtcdConnection,
    key: String,
    dir: String,
    own: SocketAddr,
    /// The key's lease, once granted and the key put.
    lease: Option<i64>,
}

impl Registration {
    /// Puts or renews the key, then reads the other members' addresses (`None`: etcd did not
    /// answer). Every request is bounded by [`MEMBER_KEY_TIMEOUT`].
    async fn round(&mut self) -> Option<Vec<SocketAddr>> {
        use etcd_client::GetOptions;

        let mut client = self.connection.client();
        if let Err(e) = self.register(&mut client).await {
            debug!(key = %self.key, error = %e, "gossip address not registered in etcd (yet)");
        }
        let reply = tokio::time::timeout(
            MEMBER_KEY_TIMEOUT,
            client.get(self.dir.as_str(), Some(GetOptions::new().with_prefix())),
        )
        .await
        .ok()?
        .ok()?;
        Some(
            reply
                .kvs()
                .iter()
                .filter(|kv| kv.key() != self.key.as_bytes())
                .filter_map(|kv| std::str::from_utf8(kv.value()).ok()?.parse().ok())
                .collect(),
        )
    }

    /// One renewal of the key's lease, or (first, or after the lease was lost while etcd was
    /// away) a new lease and the key put with it.
    async fn register(&mut self, client: &mut etcd_client::Client) -> Result<(), String> {
        use etcd_client::PutOptions;

        let bounded = |e: Result<Result<_, etcd_client::Error>, _>| match e {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {MEMBER_KEY_TIMEOUT:?}")),
        };
        if let Some(id) = self.lease {
            let ttl = bounded(
                tokio::time::timeout(MEMBER_KEY_TIMEOUT, async {
                    let (mut keeper, mut stream) = client.lease_keep_alive(id).await?;
                    keeper.keep_alive().await?;
                    Ok(stream.message().await?.map_or(0, |r| r.ttl()))
                })
                .await,
            )?;
            if ttl > 0 {
                return Ok(());
            }
            self.lease = None;
        }
        let id = bounded(
            tokio::time::timeout(MEMBER_KEY_TIMEOUT, async {
                let id = client.lease_grant(MEMBER_KEY_TTL_SECS, None).await?.id();
                let options = PutOptions::new().with_lease(id);
                client
                    .put(self.key.as_str(), self.own.to_string(), Some(options))
                    .await?;
                Ok(id)
            })
            .await,
        )?;
        debug!(key = %self.key, gossip_addr = %self.own, "gossip address registered in etcd");
        self.lease = Some(id);
        Ok(())
    }
}

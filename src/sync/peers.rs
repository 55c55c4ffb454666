//! The peer directory: the active syncer of every other data centre, from gossip metadata.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::gossip::{GossipHandle, MemberInfo, MemberStatus, Role};

/// Data centre (cluster name) → rpc address of its active syncer.
pub type PeerMap = BTreeMap<String, SocketAddr>;

/// The directory is also refreshed this often, in case an event was missed.
const REFRESH: Duration = Duration::from_secs(2);

/// The active member of each other data centre among `members`. When several claim to be
/// active (a changing leader), the newest incarnation wins.
pub fn active_peers(members: &[MemberInfo], local_cluster: &str) -> PeerMap {
    let mut best: BTreeMap<String, &MemberInfo> = BTreeMap::new();
    for member in members {
        let id = &member.id;
        let usable = !member.local
            && matches!(member.status, MemberStatus::Alive | MemberStatus::Suspect)
            && id.meta.role == Role::Active
            && id.meta.cluster != local_cluster
            && !id.meta.cluster.is_empty()
            && id.meta.rpc_addr.port() != 0;
        if !usable {
            continue;
        }
        let newer = best
            .get(&id.meta.cluster)
            .is_none_or(|b| (b.id.generation, b.id.bump) < (id.generation, id.bump));
        if newer {
            best.insert(id.meta.cluster.clone(), member);
        }
    }
    best.into_iter()
        .map(|(cluster, m)| (cluster, m.id.meta.rpc_addr))
        .collect()
}

/// Keeps `tx` equal to the active peers of the pool until `token` is cancelled.
pub(crate) async fn run(
    gossip: GossipHandle,
    local_cluster: String,
    tx: watch::Sender<PeerMap>,
    token: CancellationToken,
) {
    let mut events = gossip.subscribe();
    loop {
        if let Ok(members) = gossip.members().await {
            let peers = active_peers(&members, &local_cluster);
            tx.send_if_modified(|current| {
                if *current == peers {
                    return false;
                }
                info!(peers = ?peers, "active syncers of other data centres");
                *current = peers;
                true
            });
        }
        tokio::select! {
            biased;
            () = token.cancelled() => return,
            event = events.recv() => match event {
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return,
            },
            () = tokio::time::sleep(REFRESH) => {}
        }
    }
}

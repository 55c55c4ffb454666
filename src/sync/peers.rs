//! The peer directory: the active syncer of every other data centre, from gossip metadata.
//!
//! A data centre whose name is in conflict (claimed by members serving different registries,
//! see the gossip pool) has no entry: nothing can tell which claimant's instances are the
//! data centre's, so none is pulled from or pushed to until the conflict ends. The names in
//! conflict are published beside the directory, for the import router (which refuses their
//! pushes and announcements) and for `/health`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::gossip::{GossipHandle, MemberInfo, MemberStatus, Role};

/// Data centre (cluster name) → rpc address of its active syncer.
pub type PeerMap = BTreeMap<String, SocketAddr>;
/// Cluster names claimed by members serving different registries.
pub type Conflicts = BTreeSet<String>;

/// The directory is also refreshed this often, in case an event was missed.
const REFRESH: Duration = Duration::from_secs(2);

/// The cluster names the pool flags as claimed by members of different registries.
pub fn conflicts(members: &[MemberInfo]) -> Conflicts {
    members
        .iter()
        .filter(|m| m.conflict)
        .map(|m| m.id.meta.cluster.clone())
        .collect()
}

/// The active member of each other data centre among `members`. When several claim to be
/// active (a changing leader whose predecessor is not seen down yet), the larger term wins,
/// then the newest incarnation. A name in conflict ([`conflicts`]) has no entry.
pub fn active_peers(members: &[MemberInfo], local_cluster: &str) -> PeerMap {
    let conflicted = conflicts(members);
    let mut best: BTreeMap<String, &MemberInfo> = BTreeMap::new();
    for member in members {
        let id = &member.id;
        let usable = !member.local
            && matches!(member.status, MemberStatus::Alive | MemberStatus::Suspect)
            && id.meta.role == Role::Active
            && id.meta.cluster != local_cluster
            && !id.meta.cluster.is_empty()
            && !conflicted.contains(&id.meta.cluster)
            && id.meta.rpc_addr.port() != 0;
        if !usable {
            continue;
        }
        let newer = best.get(&id.meta.cluster).is_none_or(|b| {
            (b.id.meta.term, b.id.generation, b.id.bump) < (id.meta.term, id.generation, id.bump)
        });
        if newer {
            best.insert(id.meta.cluster.clone(), member);
        }
    }
    best.into_iter()
        .map(|(cluster, m)| (cluster, m.id.meta.rpc_addr))
        .collect()
}

/// Keeps `tx` equal to the active peers of the pool, and `conflicts_tx` to the names in
/// conflict, until `token` is cancelled. Each conflict is logged once when it begins and once
/// when it ends.
pub(crate) async fn run(
    gossip: GossipHandle,
    local_cluster: String,
    tx: watch::Sender<PeerMap>,
    conflicts_tx: watch::Sender<Conflicts>,
    token: CancellationToken,
) {
    let mut events = gossip.subscribe();
    loop {
        if let Ok(members) = gossip.members().await {
            let now = conflicts(&members);
            conflicts_tx.send_if_modified(|current| {
                if *current == now {
                    return false;
                }
                for name in now.difference(current) {
                    if *name == local_cluster {
                        warn!(cluster = %name, "this data centre's name is also claimed by members serving another registry: no other data centre imports it until the conflict ends");
                    } else {
                        warn!(origin = %name, "not importing this data centre while its name is claimed by members serving different registries; its copies are left as they are");
                    }
                }
                for name in current.difference(&now) {
                    info!(cluster = %name, "the name is no longer in conflict; syncing with it again");
                }
                *current = now;
                true
            });
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gossip::{NodeId, NodeMeta};

    fn member(name: &str, cluster: &str, port: u16, generation: u64, term: u64) -> MemberInfo {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut meta = NodeMeta::new(
            cluster,
            SocketAddr::from(([127, 0, 0, 1], port + 1)),
            "cluster",
        );
        meta.role = if term > 0 {
            Role::Active
        } else {
            Role::Standby
        };
        meta.protocol = 3;
        meta.term = term;
        MemberInfo {
            id: NodeId {
                name: name.into(),
                addr,
                generation,
                bump: 1,
                meta,
            },
            status: MemberStatus::Alive,
            local: false,
            conflict: false,
        }
    }

    #[test]
    fn the_newer_term_wins_over_a_leader_not_yet_seen_down() {
        // dc1-a led in term 7 and died; gossip still shows it alive. dc1-b, which started
        // earlier (smaller generation), leads in term 9.
        let members = [
            member("dc1-a", "dc1", 1000, 500, 7),
            member("dc1-b", "dc1", 2000, 100, 9),
            member("dc1-c", "dc1", 3000, 900, 0),
            member("dc2-a", "dc2", 4000, 100, 3),
        ];
        let peers = active_peers(&members, "dc2");
        assert_eq!(peers.len(), 1);
        assert_eq!(peers["dc1"], SocketAddr::from(([127, 0, 0, 1], 2001)));
        // Single mode (no terms): the newest incarnation.
        let single = [
            member("x", "dc3", 5000, 100, 0),
            member("y", "dc3", 6000, 200, 0),
        ]
        .map(|mut m| {
            m.id.meta.role = Role::Active;
            m
        });
        assert_eq!(
            active_peers(&single, "dc1")["dc3"],
            SocketAddr::from(([127, 0, 0, 1], 6001))
        );
    }
}

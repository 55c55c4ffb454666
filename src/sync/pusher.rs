//! Pushes: one loop per other data centre sends this data centre's new increments to its
//! active syncer as soon as they are exported, continuing the cursor that syncer reported.
//! A peer whose cursor is too old (or from another epoch) is left to pull a snapshot; it
//! learns of new revisions from gossip announcements and anti-entropy.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::debug;

use super::export::Revision;
use super::exporter::SharedExportView;
use super::link::PeerLink;
use super::metrics::SyncMetrics;
use super::peers::PeerMap;

/// One push may take this long (the receiver applies it before answering).
const PUSH_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause after a failed push.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Starts and stops one push loop per peer data centre as the directory changes.
pub(crate) async fn run(
    exported: Arc<SharedExportView>,
    mut peers: watch::Receiver<PeerMap>,
    link: Arc<dyn PeerLink>,
    metrics: SyncMetrics,
    token: CancellationToken,
    tracker: TaskTracker,
) {
    let mut loops: HashMap<String, (watch::Sender<SocketAddr>, CancellationToken)> = HashMap::new();
    loop {
        let current = peers.borrow_and_update().clone();
        loops.retain(|cluster, (_, stop)| {
            let keep = current.contains_key(cluster);
            if !keep {
                stop.cancel();
            }
            keep
        });
        for (cluster, addr) in &current {
            match loops.get(cluster) {
                Some((tx, _)) => {
                    tx.send_if_modified(|a| std::mem::replace(a, *addr) != *addr);
                }
                None => {
                    let (tx, rx) = watch::channel(*addr);
                    let stop = token.child_token();
                    tracker.spawn(push_loop(
                        cluster.clone(),
                        rx,
                        exported.clone(),
                        link.clone(),
                        metrics.clone(),
                        stop.clone(),
                    ));
                    loops.insert(cluster.clone(), (tx, stop));
                }
            }
        }
        tokio::select! {
            biased;
            () = token.cancelled() => return,
            changed = peers.changed() => if changed.is_err() { return },
        }
    }
}

async fn push_loop(
    peer: String,
    mut addr: watch::Receiver<SocketAddr>,
    exported: Arc<SharedExportView>,
    link: Arc<dyn PeerLink>,
    metrics: SyncMetrics,
    token: CancellationToken,
) {
    let mut revisions = exported.watch();
    // Until the peer tells its cursor, assume it has what existed when we met it: a peer
    // that is further behind says so and pulls.
    let mut peer_cursor: Revision = *revisions.borrow_and_update();
    let mut previous = peer_cursor;
    let mut retry = false;
    loop {
        if !retry {
            tokio::select! {
                biased;
                () = token.cancelled() => return,
                changed = revisions.changed() => if changed.is_err() { return },
                changed = addr.changed() => if changed.is_err() { return },
            }
        } else {
            tokio::select! {
                biased;
                () = token.cancelled() => return,
                () = tokio::time::sleep(RETRY_AFTER) => {}
            }
        }
        retry = false;
        let target = *addr.borrow_and_update();
        let current = *revisions.borrow_and_update();
        if exported.since(peer_cursor).is_none() {
            // The peer needed a snapshot and has pulled one since: assume it is where we
            // were at the last wake-up; a refusal tells its real cursor.
            peer_cursor = previous;
        }
        previous = current;
        // Send everything the peer lacks, in bounded batches.
        // A peer too far behind for increments (`None`) pulls a snapshot.
        while let Some(changes) = exported.since(peer_cursor) {
            if changes.is_empty() {
                break;
            }
            let started = tokio::time::Instant::now();
            let from = peer_cursor;
            let pushed = tokio::select! {
                biased;
                () = token.cancelled() => return,
                // The peer's active syncer moved (a failover there; the old one may be
                // frozen): this push is given up and the next goes to the new one.
                changed = addr.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    debug!(%peer, %target, "the peer's active syncer changed; push given up");
                    retry = true;
                    break;
                }
                pushed = link.push(target, &exported.cluster, from, &changes, PUSH_TIMEOUT) => pushed,
            };
            match pushed {
                Ok(outcome) => {
                    let reply = outcome.reply;
                    let theirs = reply.cursor();
                    metrics.transfer(
                        "push_sent",
                        if reply.applied { "applied" } else { "refused" },
                    );
                    debug!(%peer, applied = reply.applied, changes = outcome.sent, cursor = ?theirs, elapsed = ?started.elapsed(), "pushed");
                    peer_cursor = theirs;
                    if !reply.applied && theirs == from {
                        // Refused although it continued the peer's cursor: leave it to pull.
                        break;
                    }
                    // Applied, or refused with the peer's real cursor: continue from there
                    // (a peer too far behind gets no increments and pulls a snapshot).
                }
                Err(e) => {
                    metrics.transfer("push_sent", "error");
                    debug!(%peer, %target, error = %e, "push failed");
                    retry = true;
                    break;
                }
            }
        }
    }
}

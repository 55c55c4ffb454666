//! Metrics of the gossip pool, under the `syncer_gossip_` prefix.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use crate::telemetry::Metrics;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct Reason {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct Status {
    pub status: &'static str,
}

/// The pool's counters and gauges. Clones share them.
#[derive(Clone, Debug, Default)]
pub struct GossipMetrics {
    pub(super) members: Family<Status, Gauge>,
    pub(super) received: Counter,
    pub(super) sent: Counter,
    pub(super) dropped: Family<Reason, Counter>,
    pub(super) events_sent: Counter,
    pub(super) events_received: Counter,
    pub(super) conflicts: Gauge,
    pub(super) join_attempts: Counter,
    pub(super) changes: Family<Status, Counter>,
}

impl GossipMetrics {
    /// Adds the pool's metrics to `metrics`.
    pub fn register(&self, metrics: &Metrics) {
        metrics.register(
            "syncer_gossip_members",
            "Members known to this syncer by status (the local one included)",
            self.members.clone(),
        );
        metrics.register(
            "syncer_gossip_datagrams_received",
            "Gossip datagrams received",
            self.received.clone(),
        );
        metrics.register(
            "syncer_gossip_datagrams_sent",
            "Gossip datagrams sent",
            self.sent.clone(),
        );
        metrics.register(
            "syncer_gossip_datagrams_dropped",
            "Gossip datagrams dropped: oversized, malformed, label (another pool), receive_error, \
             decrypt (no gossip key of ours opens it, or plain/sealed mismatch), undecodable \
             (refused by foca), send_failed",
            self.dropped.clone(),
        );
        metrics.register(
            "syncer_gossip_events_sent",
            "User events broadcast by this syncer",
            self.events_sent.clone(),
        );
        metrics.register(
            "syncer_gossip_events_received",
            "User events received from other members (each counted once)",
            self.events_received.clone(),
        );
        metrics.register(
            "syncer_gossip_cluster_conflicts",
            "Cluster names claimed by live members that serve different registries",
            self.conflicts.clone(),
        );
        metrics.register(
            "syncer_gossip_join_attempts",
            "Attempts to join the pool through --join-addr or remembered members",
            self.join_attempts.clone(),
        );
        metrics.register(
            "syncer_gossip_membership_changes",
            "Membership changes seen, by new status (alive, down, left, updated)",
            self.changes.clone(),
        );
    }

    pub(super) fn drop(&self, reason: &'static str) {
        self.dropped.get_or_create(&Reason { reason }).inc();
    }

    pub(super) fn change(&self, status: &'static str) {
        self.changes.get_or_create(&Status { status }).inc();
    }

    /// Datagrams dropped for `reason` so far (tests and benches).
    pub fn dropped_total(&self, reason: &'static str) -> u64 {
        self.dropped.get_or_create(&Reason { reason }).get()
    }
}

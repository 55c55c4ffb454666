//! Metrics of the sync engine, under the `syncer_sync_` prefix (and the periodic
//! inspection's, `syncer_inspect_`), and the troubles `/health` reports
//! ([`ServiceFailures`], the inspection alarm).

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

use crate::telemetry::Metrics;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct OpOutcome {
    pub op: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct Rejected {
    pub rpc: &'static str,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct OriginLabel {
    pub origin: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct OriginState {
    pub origin: String,
    /// `desired` (the origin's instances this data centre accepts), `mapped` (copies syncer
    /// registered, by the mapping table), `present` (copies the local registry shows).
    pub state: &'static str,
}

/// The buckets of the latency histograms, in seconds.
const LATENCY_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct OriginReason {
    pub origin: String,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct Outcome {
    pub outcome: &'static str,
}

/// The engine's counters, gauges and histograms. Clones share them.
#[derive(Clone, Debug)]
pub struct SyncMetrics {
    /// 1 while this member runs the engine (always, once started, in single mode; the
    /// elected member in cluster mode).
    pub(crate) active: Gauge,
    pub(crate) exported_instances: Gauge,
    /// Removals of own instances the mass removal hold keeps back (`sync::hold`).
    pub(crate) removals_held: Gauge,
    pub(crate) exported_seq: Gauge,
    pub(crate) copies: Family<OriginState, Gauge>,
    pub(crate) stale: Family<OriginLabel, Gauge>,
    pub(crate) registry_ops: Family<OpOutcome, Counter>,
    pub(crate) transfers: Family<OpOutcome, Counter>,
    pub(crate) rejected: Family<Rejected, Counter>,
    pub(crate) removals: Family<OriginLabel, Counter>,
    pub(crate) removals_paused: Family<OriginLabel, Counter>,
    pub(crate) heartbeats: Family<Outcome, Counter>,
    /// Objects of other data centres the local registry kind cannot hold.
    pub(crate) refused: Family<OriginReason, Counter>,
    /// Refused or failed attempts to ensure the local service of copies, by reason.
    pub(crate) service_failures: Family<OriginReason, Counter>,
    /// The services in trouble now, for `/health`.
    failing_services: ServiceFailures,
    /// Origin syncer saw the change → this syncer wrote the copy.
    pub(crate) apply_latency: Histogram,
    /// The same, by origin.
    pub(crate) lag: Family<OriginLabel, Histogram, fn() -> Histogram>,
    /// Unix time of the last successful exchange (push, pull, anti-entropy) with an origin.
    pub(crate) last_exchange: Family<OriginLabel, Gauge<f64, AtomicU64>>,
    /// The periodic inspection: drift that persisted over two inspections, by kind.
    inspect_drift: Family<KindLabel, Gauge>,
    /// Inspections that could not be made (an origin or the local registry did not answer).
    inspect_failures: Counter,
    /// While an inspection alarm lasts, its reason (for `/health`).
    inspect_alarm: Arc<Mutex<Option<String>>>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct KindLabel {
    pub kind: &'static str,
}

impl Default for SyncMetrics {
    fn default() -> SyncMetrics {
        SyncMetrics {
            active: Gauge::default(),
            exported_instances: Gauge::default(),
            removals_held: Gauge::default(),
            exported_seq: Gauge::default(),
            copies: Family::default(),
            stale: Family::default(),
            registry_ops: Family::default(),
            transfers: Family::default(),
            rejected: Family::default(),
            removals: Family::default(),
            removals_paused: Family::default(),
            heartbeats: Family::default(),
            refused: Family::default(),
            service_failures: Family::default(),
            failing_services: ServiceFailures::default(),
            apply_latency: latency_histogram(),
            lag: Family::new_with_constructor(latency_histogram),
            last_exchange: Family::default(),
            inspect_drift: Family::default(),
            inspect_failures: Counter::default(),
            inspect_alarm: Arc::default(),
        }
    }
}

impl SyncMetrics {
    /// Adds the engine's metrics to `metrics`.
    pub fn register(&self, metrics: &Metrics) {
        metrics.register(
            "syncer_sync_active",
            "1 while this member is its data centre's active syncer (runs the sync engine)",
            self.active.clone(),
        );
        metrics.register(
            "syncer_sync_exported_instances",
            "Local instances this data centre exports",
            self.exported_instances.clone(),
        );
        metrics.register(
            "syncer_sync_removals_held",
            "Removals of this data centre's own instances held back after more than half of them vanished in one answer of the registry (--removal-hold)",
            self.removals_held.clone(),
        );
        metrics.register(
            "syncer_sync_exported_seq",
            "Sequence number of the last exported change in the current epoch",
            self.exported_seq.clone(),
        );
        metrics.register(
            "syncer_sync_copies",
            "Instances of each origin data centre by state: desired (accepted for import), mapped (copies syncer registered), present (copies the local registry shows)",
            self.copies.clone(),
        );
        metrics.register(
            "syncer_sync_origin_stale",
            "1 while an origin has had no successful exchange for longer than the grace period",
            self.stale.clone(),
        );
        metrics.register(
            "syncer_sync_registry_ops",
            "Writes to the local registry by the importer, by operation and outcome",
            self.registry_ops.clone(),
        );
        metrics.register(
            "syncer_sync_transfers",
            "Push and pull calls, by direction and outcome",
            self.transfers.clone(),
        );
        metrics.register(
            "syncer_sync_rpc_rejected",
            "Refused as malformed, by reason: pushes received (rpc=push), local objects left out of export (rpc=export)",
            self.rejected.clone(),
        );
        metrics.register(
            "syncer_sync_removals",
            "Copies removed because their origin instance is gone",
            self.removals.clone(),
        );
        metrics.register(
            "syncer_sync_removals_paused",
            "Copy removals postponed by the per-origin removal cap",
            self.removals_paused.clone(),
        );
        metrics.register(
            "syncer_sync_heartbeats",
            "Batch heartbeats for copies, by outcome",
            self.heartbeats.clone(),
        );
        metrics.register(
            "syncer_sync_refused",
            "Objects of other data centres kept out of import because the local registry kind cannot hold them, by origin and reason",
            self.refused.clone(),
        );
        metrics.register(
            "syncer_sync_service_failures",
            "Attempts to create a copy's local service (or to write its properties) that the local registry refused or did not answer, by origin and reason (properties_too_large, alias_conflict, quota, too_large, refused, unavailable)",
            self.service_failures.clone(),
        );
        metrics.register(
            "syncer_sync_apply_latency_seconds",
            "From the origin syncer seeing a change to this syncer writing the copy",
            self.apply_latency.clone(),
        );
        metrics.register(
            "syncer_sync_lag_seconds",
            "By origin: from the origin syncer's feed seeing a change to this syncer writing the copy (the origin's clock against this one's; negative skew counts as 0)",
            self.lag.clone(),
        );
        metrics.register(
            "syncer_inspect_drift",
            "Findings of the periodic inspection (--inspect-interval) that persisted over two inspections, by kind (missing, stale, duplicate, unmapped, copy_of_copy, drift)",
            self.inspect_drift.clone(),
        );
        metrics.register(
            "syncer_inspect_failures",
            "Periodic inspections that could not be made (the local registry or an origin's active syncer did not answer)",
            self.inspect_failures.clone(),
        );
        metrics.register(
            "syncer_sync_origin_last_exchange_seconds",
            "Unix time of the last successful exchange (push, pull or anti-entropy) with each origin data centre",
            self.last_exchange.clone(),
        );
    }

    pub(crate) fn registry_op(&self, op: &'static str, outcome: &'static str) {
        self.registry_ops
            .get_or_create(&OpOutcome { op, outcome })
            .inc();
    }

    pub(crate) fn transfer(&self, op: &'static str, outcome: &'static str) {
        self.transfers
            .get_or_create(&OpOutcome { op, outcome })
            .inc();
    }

    pub(crate) fn reject(&self, rpc: &'static str, reason: &'static str) {
        self.rejected.get_or_create(&Rejected { rpc, reason }).inc();
    }

    pub(crate) fn refused(&self, origin: &str, reason: &'static str) {
        self.refused
            .get_or_create(&OriginReason {
                origin: origin.to_owned(),
                reason,
            })
            .inc();
    }

    pub(crate) fn service_failure(&self, origin: &str, reason: &'static str) {
        self.service_failures
            .get_or_create(&OriginReason {
                origin: origin.to_owned(),
                reason,
            })
            .inc();
    }

    /// Sets `syncer_inspect_drift{kind}` to `count` (see [`crate::audit::Kind::name`]).
    pub fn set_inspect_drift(&self, kind: &'static str, count: usize) {
        self.inspect_drift
            .get_or_create(&KindLabel { kind })
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// Counts an inspection that could not be made.
    pub fn inspect_failed(&self) {
        self.inspect_failures.inc();
    }

    /// Raises (`Some`) or clears (`None`) the inspection alarm `/health` reports.
    pub fn set_inspect_alarm(&self, reason: Option<String>) {
        *self
            .inspect_alarm
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = reason;
    }

    /// The inspection alarm's reason while it lasts.
    pub fn inspect_alarm(&self) -> Option<String> {
        self.inspect_alarm
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The origin services whose local service is in trouble now (shared by clones).
    pub fn service_failures(&self) -> ServiceFailures {
        self.failing_services.clone()
    }

    pub(crate) fn origin(&self, origin: &str) -> OriginLabel {
        OriginLabel {
            origin: origin.to_owned(),
        }
    }
}

/// The origin services whose copies' local service is in trouble now (not created, or its
/// changed properties refused), with the reason: `/health` says degraded while any is listed.
/// Clones share the list.
#[derive(Clone, Debug, Default)]
pub struct ServiceFailures {
    /// `(origin, service label)` → reason.
    failing: Arc<Mutex<BTreeMap<(String, String), &'static str>>>,
}

impl ServiceFailures {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, String), &'static str>> {
        self.failing.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn set(&self, origin: &str, service: &str, reason: &'static str) {
        self.lock()
            .insert((origin.to_owned(), service.to_owned()), reason);
    }

    pub(crate) fn clear(&self, origin: &str, service: &str) {
        self.lock().remove(&(origin.to_owned(), service.to_owned()));
    }

    pub(crate) fn clear_origin(&self, origin: &str) {
        self.lock().retain(|(o, _), _| o != origin);
    }

    /// `(origin, service as app/name/version, reason)` of every service in trouble, sorted.
    pub fn list(&self) -> Vec<(String, String, &'static str)> {
        self.lock()
            .iter()
            .map(|((origin, service), reason)| (origin.clone(), service.clone(), *reason))
            .collect()
    }
}

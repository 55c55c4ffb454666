//! Metrics of the Eureka adapter: calls by operation and outcome, errors by kind and
//! failovers under the same names as the ServiceComb adapter's, plus what is Eureka's own:
//! full fetches against deltas, hash mismatches, renewals and re-registrations after a 404.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use crate::telemetry::Metrics;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpOutcome {
    op: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Kind {
    kind: &'static str,
}

/// The adapter's counters. Clones share the same counters.
#[derive(Clone, Debug, Default)]
pub struct EurekaMetrics {
    /// HTTP calls by operation and outcome (`ok` or an error kind), after failover.
    requests: Family<OpOutcome, Counter>,
    /// Errors returned to the adapter's callers, by kind.
    errors: Family<Kind, Counter>,
    /// Moves to the next address after a connection failure, timeout or 5xx.
    failovers: Counter,
    /// Full `GET /apps` reads of the change feeds.
    full_fetches: Counter,
    /// `GET /apps/delta` reads of the change feeds.
    deltas: Counter,
    /// Deltas whose result did not match the server's `apps__hashcode` (then a full read).
    hash_mismatches: Counter,
    /// Renewal calls (one per instance: Eureka has no batch renew).
    renewals: Counter,
    /// Re-registrations from the kept body after a renewal answered 404.
    reregistrations: Counter,
    /// HTTP calls, all labels together (not exported).
    calls: Counter,
}

impl EurekaMetrics {
    /// Adds the adapter's metrics to `metrics` under the `syncer_registry_` prefix:
    /// `requests_total{op,outcome}`, `errors_total{kind}`, `failovers_total` (as the
    /// ServiceComb adapter's) and `eureka_full_fetches_total`, `eureka_deltas_total`,
    /// `eureka_hash_mismatches_total`, `eureka_renewals_total`,
    /// `eureka_reregistrations_total`. Call once per registry.
    pub fn register(&self, metrics: &Metrics) {
        metrics.register(
            "syncer_registry_requests",
            "Calls to the registry by operation and outcome",
            self.requests.clone(),
        );
        metrics.register(
            "syncer_registry_errors",
            "Registry errors returned to the sync engine, by kind",
            self.errors.clone(),
        );
        metrics.register(
            "syncer_registry_failovers",
            "Moves to another registry address after a connection failure, timeout or 5xx",
            self.failovers.clone(),
        );
        metrics.register(
            "syncer_registry_eureka_full_fetches",
            "Full registry reads (GET /apps) of the Eureka change feeds",
            self.full_fetches.clone(),
        );
        metrics.register(
            "syncer_registry_eureka_deltas",
            "Delta reads (GET /apps/delta) of the Eureka change feeds",
            self.deltas.clone(),
        );
        metrics.register(
            "syncer_registry_eureka_hash_mismatches",
            "Deltas whose result did not match Eureka's apps__hashcode",
            self.hash_mismatches.clone(),
        );
        metrics.register(
            "syncer_registry_eureka_renewals",
            "Lease renewals sent to Eureka, one per instance",
            self.renewals.clone(),
        );
        metrics.register(
            "syncer_registry_eureka_reregistrations",
            "Re-registrations after Eureka answered a renewal with 404",
            self.reregistrations.clone(),
        );
    }

    /// HTTP calls so far, all operations and outcomes.
    pub fn requests(&self) -> u64 {
        self.calls.get()
    }

    /// Failovers so far.
    pub fn failovers(&self) -> u64 {
        self.failovers.get()
    }

    /// Full reads of the feeds so far.
    pub fn full_fetches(&self) -> u64 {
        self.full_fetches.get()
    }

    /// Delta reads of the feeds so far.
    pub fn deltas(&self) -> u64 {
        self.deltas.get()
    }

    /// Hash mismatches so far.
    pub fn hash_mismatches(&self) -> u64 {
        self.hash_mismatches.get()
    }

    /// Renewal calls so far.
    pub fn renewals(&self) -> u64 {
        self.renewals.get()
    }

    /// Re-registrations after a 404 so far.
    pub fn reregistrations(&self) -> u64 {
        self.reregistrations.get()
    }

    pub(super) fn count_request(&self, op: &'static str, outcome: &'static str) {
        self.requests
            .get_or_create(&OpOutcome { op, outcome })
            .inc();
        self.calls.inc();
    }

    pub(super) fn count_error(&self, kind: &'static str) {
        self.errors.get_or_create(&Kind { kind }).inc();
    }

    pub(super) fn count_failover(&self) {
        self.failovers.inc();
    }

    pub(super) fn count_full_fetch(&self) {
        self.full_fetches.inc();
    }

    pub(super) fn count_delta(&self) {
        self.deltas.inc();
    }

    pub(super) fn count_hash_mismatch(&self) {
        self.hash_mismatches.inc();
    }

    pub(super) fn count_renewal(&self) {
        self.renewals.inc();
    }

    pub(super) fn count_reregistration(&self) {
        self.reregistrations.inc();
    }
}

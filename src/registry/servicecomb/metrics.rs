//! Metrics of the ServiceComb adapter: calls by operation and outcome, errors by kind,
//! failovers between addresses, and body bytes both ways. The families live here and are
//! handed to the node's [`Metrics`] registry by [`ServiceCombMetrics::register`].

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
pub struct ServiceCombMetrics {
    /// HTTP calls to SC by operation and outcome (`ok` or an error kind), after failover.
    requests: Family<OpOutcome, Counter>,
    /// Errors returned to the adapter's callers (trait methods and feeds), by kind.
    errors: Family<Kind, Counter>,
    /// Moves from one SC address to the next after a connection failure or timeout.
    failovers: Counter,
    /// HTTP calls, all labels together (not exported: the sum of `requests`).
    calls: Counter,
    /// Request body bytes sent.
    sent_bytes: Counter,
    /// Response body bytes received.
    received_bytes: Counter,
}

impl ServiceCombMetrics {
    /// Adds the adapter's metrics to `metrics`, under the `syncer_registry_` prefix:
    /// `requests_total{op,outcome}`, `errors_total{kind}`, `failovers_total`,
    /// `request_bytes_total` and `response_bytes_total`. Call once per registry.
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
            "Moves to another registry address after a connection failure or timeout",
            self.failovers.clone(),
        );
        metrics.register(
            "syncer_registry_request_bytes",
            "Request body bytes sent to the registry",
            self.sent_bytes.clone(),
        );
        metrics.register(
            "syncer_registry_response_bytes",
            "Response body bytes received from the registry",
            self.received_bytes.clone(),
        );
    }

    /// HTTP calls so far, all operations and outcomes.
    pub fn requests(&self) -> u64 {
        self.calls.get()
    }

    /// Request body bytes sent so far.
    pub fn sent_bytes(&self) -> u64 {
        self.sent_bytes.get()
    }

    /// Response body bytes received so far.
    pub fn received_bytes(&self) -> u64 {
        self.received_bytes.get()
    }

    /// Failovers so far.
    pub fn failovers(&self) -> u64 {
        self.failovers.get()
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

    pub(super) fn add_sent(&self, bytes: usize) {
        self.sent_bytes.inc_by(bytes as u64);
    }

    pub(super) fn add_received(&self, bytes: usize) {
        self.received_bytes.inc_by(bytes as u64);
    }
}

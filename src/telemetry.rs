//! Logging and metrics, set up once per process.
//!
//! Logs go to stderr as text or JSON lines (`--log-format`), filtered by `--log-level`.
//! Metrics are kept in a prometheus-client registry owned by the node and served by the admin
//! endpoint; every metric name starts with `syncer_`.

use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Installs the global tracing subscriber. Call once, from `main`.
///
/// # Errors
/// When the filter does not parse (validated with the configuration already) or a subscriber
/// is already installed.
pub fn init_logging(log: &LogConfig) -> Result<(), String> {
    let filter = EnvFilter::builder()
        .parse(&log.filter)
        .map_err(|e| e.to_string())?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match log.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    }
    .map_err(|e| e.to_string())
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
    node: String,
    cluster: String,
    mode: String,
}

/// The node's metrics registry. Subsystems register their metrics at start; the admin
/// endpoint encodes them on request.
#[derive(Clone, Default)]
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
}

impl Metrics {
    /// A registry that already holds `syncer_build_info`.
    pub fn new(node: &str, cluster: &str, mode: &str) -> Metrics {
        let metrics = Metrics::default();
        let build = Family::<BuildLabels, Gauge>::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").to_owned(),
                node: node.to_owned(),
                cluster: cluster.to_owned(),
                mode: mode.to_owned(),
            })
            .set(1);
        metrics.register(
            "syncer_build_info",
            "Version and identity of this syncer",
            build,
        );
        metrics
    }

    /// Adds a metric; `name` must start with `syncer_`.
    pub fn register(
        &self,
        name: &str,
        help: &str,
        metric: impl prometheus_client::registry::Metric,
    ) {
        debug_assert!(
            name.starts_with("syncer_"),
            "metric {name} lacks the syncer_ prefix"
        );
        // prometheus-client adds its own prefix only when asked; names are registered verbatim.
        let mut registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        registry.register(name, help, metric);
    }

    /// The registry in the Prometheus text format.
    pub fn encode(&self) -> String {
        let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::new();
        // Encoding into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }
}

/// At most one log line per period for a failure that repeats many times a second (a full
/// disk makes every store write fail): `allow` says whether to log now, and how many calls
/// since the last line were not logged.
#[derive(Debug)]
pub struct LogThrottle {
    period_ms: u64,
    last_ms: std::sync::atomic::AtomicU64,
    skipped: std::sync::atomic::AtomicU64,
}

impl LogThrottle {
    pub const fn new(period_ms: u64) -> LogThrottle {
        LogThrottle {
            period_ms,
            last_ms: std::sync::atomic::AtomicU64::new(0),
            skipped: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// `Some(skipped)` when a line may be logged now (with the calls not logged since the
    /// last one), `None` when this call is only counted.
    pub fn allow(&self) -> Option<u64> {
        use std::sync::atomic::Ordering;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let last = self.last_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= self.period_ms
            && self
                .last_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            Some(self.skipped.swap(0, Ordering::Relaxed))
        } else {
            self.skipped.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

#[cfg(test)]
mod throttle_tests {
    use super::LogThrottle;

    #[test]
    fn one_line_per_period_and_the_rest_counted() {
        let throttle = LogThrottle::new(60_000);
        assert_eq!(throttle.allow(), Some(0));
        for _ in 0..5 {
            assert_eq!(throttle.allow(), None);
        }
        let now = LogThrottle::new(0);
        assert_eq!(now.allow(), Some(0));
        assert_eq!(now.allow(), Some(0));
    }
}

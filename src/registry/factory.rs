//! The registry factory: the configured registry kind becomes one `Arc<dyn Registry>`.
//!
//! The node does not know which adapter it runs. Each adapter owns its tuning, its defaults
//! and its metrics behind one `build` function taking the registry part of the configuration,
//! the sync settings it polls by, and the metrics registry. Adding a registry kind is one
//! folder under `src/registry/` plus one arm in [`build`] (and the kind's name in the
//! configuration's [`Plugin`]).

use std::sync::Arc;

use super::eureka::Eureka;
use super::servicecomb::ServiceComb;
use super::{Registry, RegistryError};
use crate::config::{Plugin, RegistryConfig, SyncConfig};
use crate::telemetry::Metrics;

/// The adapter of the configured registry kind, with its counters registered in `metrics`.
/// Does not contact the registry.
///
/// # Errors
/// [`RegistryError::Invalid`] when the adapter cannot use its settings (for example a zero
/// poll interval).
pub fn build(
    registry: &RegistryConfig,
    sync: &SyncConfig,
    metrics: &Metrics,
) -> Result<Arc<dyn Registry>, RegistryError> {
    Ok(match registry.plugin {
        Plugin::ServiceCenter => Arc::new(ServiceComb::build(registry, sync, metrics)?),
        Plugin::Eureka => Arc::new(Eureka::build(registry, sync, metrics)?),
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use url::Url;

    use super::*;

    fn registry_config() -> RegistryConfig {
        RegistryConfig {
            plugin: Plugin::ServiceCenter,
            addresses: vec![Url::parse("http://127.0.0.1:30100").expect("constant URL")],
            credentials: None,
            tls: Default::default(),
            confirm_removal: None,
            tenants: Vec::new(),
        }
    }

    fn sync_config(poll_interval: Duration) -> SyncConfig {
        SyncConfig {
            export: true,
            resync_interval: Duration::from_secs(30),
            removal_cap: SyncConfig::DEFAULT_REMOVAL_CAP,
            removal_hold: crate::sync::hold::MASS_REMOVAL_HOLD,
            origin_grace: SyncConfig::DEFAULT_ORIGIN_GRACE,
            keep_stale: SyncConfig::DEFAULT_KEEP_STALE,
            keep_stale_for: SyncConfig::DEFAULT_KEEP_STALE_FOR,
            copy_lease: SyncConfig::DEFAULT_COPY_LEASE,
            anti_entropy_interval: SyncConfig::DEFAULT_ANTI_ENTROPY_INTERVAL,
            poll_interval,
            filter: Default::default(),
            inspect_interval: None,
            inspect_alarm_count: 3,
        }
    }

    #[test]
    fn servicecenter_builds_the_servicecomb_adapter_with_its_metrics_and_rules() {
        let metrics = Metrics::new("n1", "dc1", "single");
        let registry = build(
            &registry_config(),
            &sync_config(SyncConfig::DEFAULT_POLL_INTERVAL),
            &metrics,
        )
        .expect("adapter");
        assert!(
            metrics
                .encode()
                .contains("syncer_registry_failovers_total 0"),
            "the adapter registers its metrics:\n{}",
            metrics.encode()
        );
        // SC's rules, not the trait's default of accepting everything.
        let eureka_style = crate::registry::fixtures::eureka_style_instance();
        let refusal = registry.accepts_instance(&eureka_style).unwrap_err();
        assert_eq!(refusal.field, "instance.instance_id");
    }

    #[test]
    fn the_adapter_takes_the_sync_settings_it_polls_by() {
        let sc = crate::registry::servicecomb::ServiceCombConfig::from_config(
            &registry_config(),
            &sync_config(Duration::from_millis(300)),
        );
        assert_eq!(sc.poll_interval, Duration::from_millis(300));
        assert_eq!(sc.discovery_interval, Duration::from_millis(1500));
        assert_eq!(sc.resync_interval, Duration::from_secs(30));
        assert_eq!(sc.heartbeat_batch, 5_000);
        assert_eq!(sc.addresses, registry_config().addresses);
    }

    #[test]
    fn eureka_builds_the_eureka_adapter_with_its_metrics_and_rules() {
        let metrics = Metrics::new("n1", "dc1", "single");
        let config = RegistryConfig {
            plugin: Plugin::Eureka,
            addresses: vec![
                Url::parse("http://127.0.0.1:8761").expect("constant URL"),
                Url::parse("http://127.0.0.1:8762/eureka/").expect("constant URL"),
            ],
            ..registry_config()
        };
        let sync = sync_config(Duration::from_millis(300));
        let registry = build(&config, &sync, &metrics).expect("adapter");
        let text = metrics.encode();
        assert!(
            text.contains("syncer_registry_failovers_total 0")
                && text.contains("syncer_registry_eureka_full_fetches_total 0"),
            "the adapter registers its metrics:\n{text}"
        );
        // Eureka's rules: its own ids are fine, an instance without an address is not.
        let eureka_style = crate::registry::fixtures::eureka_style_instance();
        assert_eq!(registry.accepts_instance(&eureka_style), Ok(()));
        let mut no_address = eureka_style;
        no_address.host_name = String::new();
        assert_eq!(
            registry.accepts_instance(&no_address).unwrap_err().field,
            "instance.host_name"
        );
        let eureka = crate::registry::eureka::EurekaConfig::from_config(&config, &sync);
        assert_eq!(
            eureka.addresses,
            [
                "http://127.0.0.1:8761/eureka",
                "http://127.0.0.1:8762/eureka"
            ]
        );
        assert_eq!(eureka.poll_interval, Duration::from_millis(300));
        assert_eq!(eureka.resync_interval, Duration::from_secs(30));
        assert_eq!(eureka.timeout, crate::registry::LONGEST_CALL);
    }

    #[test]
    fn unusable_settings_are_refused() {
        let metrics = Metrics::new("n1", "dc1", "single");
        let e = build(&registry_config(), &sync_config(Duration::ZERO), &metrics)
            .err()
            .expect("a zero poll interval is refused");
        assert!(
            matches!(&e, RegistryError::Invalid(m) if m.contains("poll_interval")),
            "{e}"
        );
    }
}

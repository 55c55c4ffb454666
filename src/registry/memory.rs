//! `MemoryRegistry`: an in-memory [`Registry`] for tests of the sync engine and gossip layers.
//!
//! It keeps services and instances in maps, wakes its change feeds on every write, and can
//! be switched "down" to simulate an unreachable registry. It has no leases: tests remove
//! instances explicitly. Behaviour follows the contract (`contract.rs`), which it passes.
//!
//! It models ServiceComb (same service identity, statuses, a re-registered id keeps its
//! data), so it also answers [`Registry::accepts_service`] and [`Registry::accepts_instance`]
//! with SC's rules ([`super::servicecomb::rules`]): a test of the engine sees the refusals a
//! real SC would cause. [`MemoryRegistry::without_kind_rules`] makes a twin of a registry
//! kind without those rules (Eureka-like ids such as `host:app:8080` accepted), for tests of
//! data centres of different kinds. Writes themselves are not checked against the rules: the
//! engine asks before it writes.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::sync::watch;

use super::model::{
    Change, Instance, InstanceRef, RegistryIdentity, Service, Snapshot, Tenant, diff,
};
use super::servicecomb::rules;
use super::{ChangeFeed, HeartbeatReport, Refusal, Registry, RegistryError};

/// Statuses an instance may have.
const STATUSES: [&str; 5] = ["UP", "DOWN", "STARTING", "TESTING", "OUTOFSERVICE"];

#[derive(Debug, Default)]
struct State {
    services: BTreeMap<(Tenant, String), Service>,
    instances: BTreeMap<InstanceRef, Instance>,
    down: bool,
}

impl State {
    fn snapshot(&self) -> Snapshot {
        Snapshot {
            services: self.services.values().cloned().collect(),
            instances: self.instances.values().cloned().collect(),
        }
    }

    fn check_up(&self) -> Result<(), RegistryError> {
        if self.down {
            Err(RegistryError::Unavailable(
                "memory registry is switched down".into(),
            ))
        } else {
            Ok(())
        }
    }
}

/// An in-memory registry. Cheap to clone; clones share state.
#[derive(Clone)]
pub struct MemoryRegistry {
    id: String,
    /// Whether [`Registry::accepts_service`] and [`Registry::accepts_instance`] apply SC's
    /// rules (the default) or accept everything within the shared bounds.
    sc_rules: bool,
    state: Arc<Mutex<State>>,
    /// Bumped on every write; change feeds wait on it.
    version_tx: Arc<watch::Sender<u64>>,
}

impl MemoryRegistry {
    /// An empty registry identified by `id`.
    pub fn new(id: &str) -> MemoryRegistry {
        let (version_tx, _) = watch::channel(0);
        MemoryRegistry {
            id: id.to_owned(),
            sc_rules: true,
            state: Arc::new(Mutex::new(State::default())),
            version_tx: Arc::new(version_tx),
        }
    }

    fn write<T>(
        &self,
        f: impl FnOnce(&mut State) -> Result<T, RegistryError>,
    ) -> Result<T, RegistryError> {
        let result = {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            state.check_up()?;
            f(&mut state)
        };
        if result.is_ok() {
            self.version_tx.send_modify(|v| *v += 1);
        }
        result
    }

    fn read<T>(
        &self,
        f: impl FnOnce(&State) -> Result<T, RegistryError>,
    ) -> Result<T, RegistryError> {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.check_up()?;
        f(&state)
    }

    /// This registry (and its later clones) without SC's kind rules: it accepts every service
    /// and instance, as a registry kind without id or format rules would.
    pub fn without_kind_rules(mut self) -> MemoryRegistry {
        self.sc_rules = false;
        self
    }

    /// Makes every call fail with [`RegistryError::Unavailable`] (`true`) or work again.
    pub fn set_down(&self, down: bool) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).down = down;
        self.version_tx.send_modify(|v| *v += 1);
    }

    /// The current content, regardless of the down switch.
    pub fn contents(&self) -> Snapshot {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .snapshot()
    }
}

#[async_trait]
impl Registry for MemoryRegistry {
    async fn identity(&self) -> Result<RegistryIdentity, RegistryError> {
        self.read(|_| {
            Ok(RegistryIdentity {
                kind: "memory".into(),
                version: env!("CARGO_PKG_VERSION").into(),
                id: self.id.clone(),
            })
        })
    }

    async fn snapshot(&self) -> Result<Snapshot, RegistryError> {
        self.read(|state| Ok(state.snapshot()))
    }

    fn change_feed(&self) -> Box<dyn ChangeFeed> {
        Box::new(MemoryFeed {
            registry: self.clone(),
            version_rx: self.version_tx.subscribe(),
            last: None,
        })
    }

    fn accepts_service(&self, service: &Service) -> Result<(), Refusal> {
        if self.sc_rules {
            rules::check_service(service)
        } else {
            Ok(())
        }
    }

    fn accepts_instance(&self, instance: &Instance) -> Result<(), Refusal> {
        if self.sc_rules {
            rules::check_instance(instance)
        } else {
            Ok(())
        }
    }

    async fn ensure_service(&self, service: &Service) -> Result<String, RegistryError> {
        self.write(|state| {
            // Same identity as ServiceComb: tenant, environment, app, name, version. As with
            // the ServiceComb adapter, an existing service is the answer even when another id
            // was asked for.
            let existing = state.services.values().find(|s| {
                s.tenant == service.tenant
                    && s.environment == service.environment
                    && s.app == service.app
                    && s.name == service.name
                    && s.version == service.version
            });
            if let Some(existing) = existing {
                return Ok(existing.service_id.clone());
            }
            let mut created = service.clone();
            if created.service_id.is_empty() {
                created.service_id = format!("svc-{}", state.services.len() + 1);
            }
            let key = (created.tenant.clone(), created.service_id.clone());
            if state.services.contains_key(&key) {
                return Err(RegistryError::Invalid(format!(
                    "service id {} is taken",
                    created.service_id
                )));
            }
            let id = created.service_id.clone();
            state.services.insert(key, created);
            Ok(id)
        })
    }

    async fn set_service_properties(
        &self,
        tenant: &Tenant,
        service_id: &str,
        properties: &BTreeMap<String, String>,
    ) -> Result<(), RegistryError> {
        self.write(|state| {
            let service = state
                .services
                .get_mut(&(tenant.clone(), service_id.to_owned()))
                .ok_or_else(|| RegistryError::NotFound(format!("service {tenant}/{service_id}")))?;
            service.properties = properties.clone();
            Ok(())
        })
    }

    async fn register(&self, instance: &Instance) -> Result<(), RegistryError> {
        self.write(|state| {
            let service_key = (instance.tenant.clone(), instance.service_id.clone());
            let service = state.services.get(&service_key).ok_or_else(|| {
                RegistryError::NotFound(format!(
                    "service {}/{}",
                    instance.tenant, instance.service_id
                ))
            })?;
            if instance.instance_id.is_empty() {
                return Err(RegistryError::Invalid("instance id is empty".into()));
            }
            let version = service.version.clone();
            // As ServiceComb: an existing id is only renewed, its data kept.
            state
                .instances
                .entry(instance.reference())
                .or_insert_with(|| {
                    let mut stored = instance.clone();
                    if stored.status.is_empty() {
                        stored.status = "UP".into();
                    }
                    stored.version = version;
                    stored
                });
            Ok(())
        })
    }

    async fn heartbeat(&self, instances: &[InstanceRef]) -> Result<HeartbeatReport, RegistryError> {
        self.read(|state| {
            Ok(HeartbeatReport {
                unknown: instances
                    .iter()
                    .filter(|r| !state.instances.contains_key(*r))
                    .cloned()
                    .collect(),
            })
        })
    }

    async fn set_status(&self, instance: &InstanceRef, status: &str) -> Result<(), RegistryError> {
        if !STATUSES.contains(&status) {
            return Err(RegistryError::Invalid(format!("unknown status {status}")));
        }
        self.write(|state| {
            let stored = state
                .instances
                .get_mut(instance)
                .ok_or_else(|| RegistryError::NotFound(format!("instance {instance}")))?;
            stored.status = status.to_owned();
            Ok(())
        })
    }

    async fn set_instance_properties(
        &self,
        instance: &InstanceRef,
        properties: &BTreeMap<String, String>,
    ) -> Result<(), RegistryError> {
        self.write(|state| {
            let stored = state
                .instances
                .get_mut(instance)
                .ok_or_else(|| RegistryError::NotFound(format!("instance {instance}")))?;
            stored.properties = properties.clone();
            Ok(())
        })
    }

    async fn unregister(&self, instance: &InstanceRef) -> Result<(), RegistryError> {
        self.write(|state| {
            state
                .instances
                .remove(instance)
                .map(|_| ())
                .ok_or_else(|| RegistryError::NotFound(format!("instance {instance}")))
        })
    }
}

/// A feed that waits for a write and reports the difference since its last batch.
struct MemoryFeed {
    registry: MemoryRegistry,
    version_rx: watch::Receiver<u64>,
    last: Option<Snapshot>,
}

#[async_trait]
impl ChangeFeed for MemoryFeed {
    async fn next(&mut self) -> Result<Vec<Change>, RegistryError> {
        if let Some(last) = &self.last {
            // A closed channel cannot happen while `registry` holds the sender.
            let _ = self.version_rx.changed().await;
            let now = self.registry.snapshot().await?;
            let changes = diff(last, &now);
            self.last = Some(now);
            return Ok(changes);
        }
        self.version_rx.mark_unchanged();
        let now = self.registry.snapshot().await?;
        self.last = Some(now.clone());
        Ok(vec![Change::Resync(now)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_registry_passes_the_contract() {
        let registry = MemoryRegistry::new("mem-1");
        super::super::contract::registry_contract(&registry).await;
    }

    #[test]
    fn kind_rules_are_sc_unless_switched_off() {
        let eureka_style = Instance {
            tenant: Tenant::default_tenant(),
            service_id: "ORDERS".into(),
            instance_id: "host:app:8080".into(),
            host_name: "host".into(),
            status: "UP".into(),
            ..Instance::default()
        };
        let sc = MemoryRegistry::new("mem-sc");
        let refusal = sc.accepts_instance(&eureka_style).unwrap_err();
        assert_eq!(
            (refusal.field.as_str(), refusal.reason),
            ("instance.instance_id", "bad_id")
        );
        let open = MemoryRegistry::new("mem-open").without_kind_rules();
        assert_eq!(open.clone().accepts_instance(&eureka_style), Ok(()));
        let versionless = Service {
            service_id: "ORDERS".into(),
            name: "ORDERS".into(),
            ..Service::default()
        };
        assert_eq!(
            sc.accepts_service(&versionless).unwrap_err().field,
            "service.app"
        );
        assert_eq!(open.accepts_service(&versionless), Ok(()));
    }

    #[tokio::test]
    async fn down_switch_makes_calls_unavailable() {
        let registry = MemoryRegistry::new("mem-2");
        registry.set_down(true);
        let err = registry.snapshot().await.unwrap_err();
        assert!(err.is_retryable());
        registry.set_down(false);
        assert!(registry.snapshot().await.is_ok());
    }
}

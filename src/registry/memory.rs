//! `MemoryRegistry`: an in-memory [`Registry`] for tests of the sync engine and gossip layers.
//!
//! It keeps services and instances in maps, wakes its change feeds on every write, and can
//! be switched "down" to simulate an unreachable registry. Behaviour follows the contract
//! (`contract.rs`), which it passes with every option below on or off.
//!
//! Three options serve scenario tests of the engine (all off by default, all on tokio's
//! clock, so they work under a paused clock):
//! - **Leases** ([`MemoryRegistry::with_leases`]): an instance registered with a `push`
//!   health check lives interval × (times + 1) seconds past its registration or its last
//!   heartbeat, as Service Center's lease (reference §4); `set_status` and property updates
//!   do not renew it. Expiry is lazy: every call, and [`MemoryRegistry::contents`], first
//!   removes the instances whose lease ended, and each change feed also sleeps until the
//!   next lease end, so a feed reports an expiry at that moment as a removal (a write that
//!   wakes every feed) without a reaper task the test would have to own. Instances without a
//!   push health check never expire (SC would give them 120 s; tests register origin
//!   instances that way so that they need no heartbeats).
//! - **A slow registry** ([`MemoryRegistry::set_write_delay`]): every call that changes
//!   something (heartbeats included, they renew leases) first waits this long; a feed's
//!   first, full read waits [`MemoryRegistry::set_read_delay`] (a large registry's dump), and
//!   every later one [`MemoryRegistry::set_feed_lag`] (a feed that lists new services late).
//! - **Call counts** ([`MemoryRegistry::calls`]): how often each operation was called,
//!   failed calls included, to assert that the engine did not write needlessly.
//! - **Refused services** ([`MemoryRegistry::refuse_service`]): creating a service of a given
//!   name fails with the error given (a quota, an alias conflict), to show that one refused
//!   service does not hold back the others.
//!
//! As Service Center (`maxbody`), [`Registry::set_service_properties`] refuses a body over
//! [`PROPERTIES_BODY_BYTES`] (`{"properties":{...}}` as JSON) while a service's create takes
//! its properties whatever their size: a service created with large properties cannot have
//! them changed by a PUT.
//!
//! It models ServiceComb (same service identity, statuses, a re-registered id keeps its
//! data), so it also answers [`Registry::accepts_service`] and [`Registry::accepts_instance`]
//! with SC's rules ([`super::servicecomb::rules`]): a test of the engine sees the refusals a
//! real SC would cause. [`MemoryRegistry::without_kind_rules`] makes a twin of a registry
//! kind without those rules (Eureka-like ids such as `host:app:8080` accepted), for tests of
//! data centres of different kinds. Writes themselves are not checked against the rules: the
//! engine asks before it writes.
//!
//! [`MemoryRegistry::eureka_like`] is a twin of a Eureka data centre as the Eureka adapter
//! shows it through the trait (the shared mapping of issue 16), so that the engine's tests
//! meet Eureka's differences without HTTP:
//! - there are no services at rest: [`Registry::ensure_service`] only records the service
//!   (as the adapter's table does) and returns its derived id ([`eureka_service_id`], never
//!   the id asked for); a service shows in snapshots and feeds only while it has an
//!   instance, with its identity alone (no properties, schemas, tags, rules, alias);
//! - [`Registry::set_service_properties`] is a no-op, schemas, tags and rules keep the
//!   trait's refusals, and no kind rules apply (`host:app:8080` is a valid id);
//! - registering an existing id replaces its data (Eureka's register), statuses are kept as
//!   given, and an instance whose status is `UNKNOWN` is left out of snapshots and feeds;
//! - [`MemoryRegistry::register_native`] adds an instance as an application registers it
//!   with Eureka, its service derived from the app, VIP address and `sc.*` metadata;
//!   [`MemoryRegistry::restart_adapter`] drops what only the adapter's table knew.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;
use tokio::time::Instant;

use super::model::{
    AccessRule, Change, Instance, InstanceRef, RegistryIdentity, Schema, Service, Snapshot, Tenant,
    diff,
};
use super::servicecomb::rules;
use super::{ChangeFeed, HeartbeatReport, Refusal, Registry, RegistryError, SCHEMA_REFUSED};

/// Service Center's cap on the body of the service properties PUT (3 KiB; a service's create
/// takes up to 2 MiB).
pub const PROPERTIES_BODY_BYTES: usize = 3 * 1024;

/// Statuses an instance may have.
const STATUSES: [&str; 5] = ["UP", "DOWN", "STARTING", "TESTING", "OUTOFSERVICE"];

/// Prefix of the local id of every service of a Eureka-like registry.
pub const EUREKA_SERVICE_PREFIX: &str = "eureka-";

/// The status of a Eureka instance the adapter leaves out of snapshots and feeds.
const EUREKA_UNKNOWN: &str = "UNKNOWN";

/// The local id a Eureka data centre gives a service: the Eureka adapter's own derivation
/// ([`super::eureka::service_id`]), so the twin and the adapter can never disagree.
pub fn eureka_service_id(service: &Service) -> String {
    super::eureka::service_id(service)
}

/// What a Eureka data centre keeps of `service`: its identity, under its derived id (the
/// adapter's [`super::eureka::service_entry`]).
fn eureka_service(service: &Service) -> Service {
    super::eureka::service_entry(service)
}

/// Which registry kind a [`MemoryRegistry`] behaves as through the trait.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Flavour {
    /// Service Center: services at rest, properties, contracts; a re-registered id keeps
    /// its data.
    #[default]
    ServiceComb,
    /// Eureka as its adapter shows it (see the module doc).
    Eureka,
}

/// One operation of the [`Registry`] trait, for [`MemoryRegistry::calls`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RegistryOp {
    Identity,
    Snapshot,
    EnsureService,
    SetServiceProperties,
    Register,
    Heartbeat,
    SetStatus,
    SetInstanceProperties,
    Unregister,
    Schemas,
    PutSchema,
    SetServiceTags,
    SetServiceRules,
}

impl RegistryOp {
    /// Whether the operation changes the registry (and so waits out the write delay).
    fn writes(self) -> bool {
        !matches!(
            self,
            RegistryOp::Identity | RegistryOp::Snapshot | RegistryOp::Schemas
        )
    }

    /// The operation's name in the trait.
    pub fn as_str(self) -> &'static str {
        match self {
            RegistryOp::Identity => "identity",
            RegistryOp::Snapshot => "snapshot",
            RegistryOp::EnsureService => "ensure_service",
            RegistryOp::SetServiceProperties => "set_service_properties",
            RegistryOp::Register => "register",
            RegistryOp::Heartbeat => "heartbeat",
            RegistryOp::SetStatus => "set_status",
            RegistryOp::SetInstanceProperties => "set_instance_properties",
            RegistryOp::Unregister => "unregister",
            RegistryOp::Schemas => "schemas",
            RegistryOp::PutSchema => "put_schema",
            RegistryOp::SetServiceTags => "set_service_tags",
            RegistryOp::SetServiceRules => "set_service_rules",
        }
    }
}

impl fmt::Display for RegistryOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Default)]
struct State {
    services: BTreeMap<(Tenant, String), Service>,
    instances: BTreeMap<InstanceRef, Instance>,
    /// When each leased instance expires (only with leases on, only push health checks).
    leases: BTreeMap<InstanceRef, Instant>,
    leases_on: bool,
    down: bool,
    write_delay: Duration,
    read_delay: Duration,
    feed_lag: Duration,
    calls: BTreeMap<RegistryOp, u64>,
    /// Service names whose create fails, with the error it fails with.
    refused_services: BTreeMap<String, RegistryError>,
    /// Schema contents by service; their ids and summaries are also in the service.
    schemas: BTreeMap<(Tenant, String), BTreeMap<String, Schema>>,
    flavour: Flavour,
}

impl State {
    fn snapshot(&self) -> Snapshot {
        match self.flavour {
            Flavour::ServiceComb => Snapshot {
                services: self.services.values().cloned().collect(),
                instances: self.instances.values().cloned().collect(),
            },
            // Only instances Eureka reports with a usable status, and the services they
            // belong to: a service exists while it has instances.
            Flavour::Eureka => {
                let instances: Vec<Instance> = self
                    .instances
                    .values()
                    .filter(|i| i.status != EUREKA_UNKNOWN)
                    .cloned()
                    .collect();
                let shown: BTreeSet<(&Tenant, &str)> = instances
                    .iter()
                    .map(|i| (&i.tenant, i.service_id.as_str()))
                    .collect();
                let services = self
                    .services
                    .values()
                    .filter(|s| shown.contains(&(&s.tenant, s.service_id.as_str())))
                    .cloned()
                    .collect();
                Snapshot {
                    services,
                    instances,
                }
            }
        }
    }

    /// Stores `schema` in service `key`, with Service Center's rule for a service whose
    /// environment is empty or `production` unless `force`: a schema with content is frozen,
    /// and a new id is taken only while the service lists none.
    fn put_schema(
        &mut self,
        key: &(Tenant, String),
        schema: &Schema,
        force: bool,
    ) -> Result<(), RegistryError> {
        let service = self
            .services
            .get_mut(key)
            .ok_or_else(|| RegistryError::NotFound(format!("service {}/{}", key.0, key.1)))?;
        let stored = self.schemas.entry(key.clone()).or_default();
        let listed = service.schemas.contains(&schema.id);
        let production = service.environment.is_empty() || service.environment == "production";
        if production && !force {
            let refused = |detail: &str| {
                Err(RegistryError::Refused(Refusal {
                    field: format!("put_schema {}", schema.id),
                    reason: SCHEMA_REFUSED,
                    detail: detail.to_owned(),
                }))
            };
            if !service.schemas.is_empty() && !listed {
                return refused("400014: Non-existent schemaID can't be added in production");
            }
            if stored.contains_key(&schema.id) {
                return refused("400015: schema already exist, can not be changed in production");
            }
        }
        if !listed {
            service.schemas.push(schema.id.clone());
        }
        service
            .schema_summaries
            .insert(schema.id.clone(), schema.summary.clone());
        stored.insert(schema.id.clone(), schema.clone());
        Ok(())
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

    /// The lease of `instance`, if it has one: its push health check's TTL.
    fn lease_of(&self, instance: &Instance) -> Option<Duration> {
        let check = instance.health_check.as_ref()?;
        (self.leases_on && check.mode == "push").then(|| Duration::from_secs(check.ttl_seconds()))
    }

    /// Starts or renews the lease of a stored instance.
    fn renew(&mut self, r: &InstanceRef, now: Instant) {
        let Some(ttl) = self.instances.get(r).and_then(|i| self.lease_of(i)) else {
            return;
        };
        self.leases.insert(r.clone(), now + ttl);
    }

    /// Removes every instance whose lease ended by `now`; whether any did.
    fn expire(&mut self, now: Instant) -> bool {
        let ended: Vec<InstanceRef> = self
            .leases
            .iter()
            .filter(|(_, until)| **until <= now)
            .map(|(r, _)| r.clone())
            .collect();
        for r in &ended {
            self.leases.remove(r);
            self.instances.remove(r);
        }
        !ended.is_empty()
    }

    /// The earliest lease end, if any.
    fn next_expiry(&self) -> Option<Instant> {
        self.leases.values().min().copied()
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
    /// An empty registry identified by `id`, without leases.
    pub fn new(id: &str) -> MemoryRegistry {
        let (version_tx, _) = watch::channel(0);
        MemoryRegistry {
            id: id.to_owned(),
            sc_rules: true,
            state: Arc::new(Mutex::new(State::default())),
            version_tx: Arc::new(version_tx),
        }
    }

    /// An empty registry identified by `id` whose instances with a `push` health check
    /// expire unless heartbeated, as in Service Center (see the module doc).
    pub fn with_leases(id: &str) -> MemoryRegistry {
        let registry = MemoryRegistry::new(id);
        registry.lock().leases_on = true;
        registry
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Nothing done under the lock panics half-way through a change.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts the call, waits out the write delay of a write, and expires ended leases;
    /// the lock is not held across the wait.
    async fn enter(&self, op: RegistryOp) {
        let delay = {
            let mut state = self.lock();
            *state.calls.entry(op).or_default() += 1;
            state.write_delay
        };
        if op.writes() && !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        self.expire_now();
    }

    /// Expires ended leases now, waking the feeds when an instance went.
    fn expire_now(&self) {
        if self.lock().expire(Instant::now()) {
            self.version_tx.send_modify(|v| *v += 1);
        }
    }

    async fn write<T>(
        &self,
        op: RegistryOp,
        f: impl FnOnce(&mut State) -> Result<T, RegistryError>,
    ) -> Result<T, RegistryError> {
        self.enter(op).await;
        let result = {
            let mut state = self.lock();
            state.check_up()?;
            f(&mut state)
        };
        if result.is_ok() {
            self.version_tx.send_modify(|v| *v += 1);
        }
        result
    }

    async fn read<T>(
        &self,
        op: RegistryOp,
        f: impl FnOnce(&mut State) -> Result<T, RegistryError>,
    ) -> Result<T, RegistryError> {
        self.enter(op).await;
        let mut state = self.lock();
        state.check_up()?;
        f(&mut state)
    }

    /// This registry (and its later clones) without SC's kind rules: it accepts every service
    /// and instance, as a registry kind without id or format rules would.
    pub fn without_kind_rules(mut self) -> MemoryRegistry {
        self.sc_rules = false;
        self
    }

    /// An empty twin of a Eureka data centre identified by `id`, as the Eureka adapter
    /// shows one through the trait (see the module doc), with leases: a copy lives as long
    /// as its push health check says unless renewed, as a Eureka lease from the copy's
    /// `leaseInfo`.
    pub fn eureka_like(id: &str) -> MemoryRegistry {
        let registry = MemoryRegistry::with_leases(id).without_kind_rules();
        registry.lock().flavour = Flavour::Eureka;
        registry
    }

    /// Whether this is a [`MemoryRegistry::eureka_like`] twin.
    pub fn is_eureka_like(&self) -> bool {
        self.lock().flavour == Flavour::Eureka
    }

    /// Registers `instance` as an application registers itself with a Eureka data centre
    /// under app `app` and VIP address `vip_address`, with `instance.properties` as its
    /// metadata; only for a [`MemoryRegistry::eureka_like`] twin. Its service is what the
    /// adapter derives (tenant `default/default`; app `sc.appId` else `default`; name
    /// `sc.serviceName`, else the VIP address when it equals the app but for case, else the
    /// lower-cased app; version `sc.version` else `0.0.1`; environment `sc.env` else
    /// empty), and the `sc.*` metadata is not among its properties. An existing id is
    /// replaced. Not counted in [`MemoryRegistry::calls`]: it is no call of the engine.
    /// Returns the instance as snapshots show it (the status `UNKNOWN` hides it).
    ///
    /// # Panics
    /// When the registry is not Eureka-like (a test's mistake).
    pub fn register_native(&self, app: &str, vip_address: &str, instance: &Instance) -> Instance {
        assert!(
            self.is_eureka_like(),
            "register_native needs a Eureka-like registry"
        );
        let meta = |key: &str| instance.properties.get(key).cloned();
        let name = meta("sc.serviceName").unwrap_or_else(|| {
            if vip_address.eq_ignore_ascii_case(app) {
                vip_address.to_owned()
            } else {
                app.to_lowercase()
            }
        });
        let service = eureka_service(&Service {
            tenant: Tenant::default_tenant(),
            app: meta("sc.appId").unwrap_or_else(|| "default".into()),
            name,
            version: meta("sc.version").unwrap_or_else(|| "0.0.1".into()),
            environment: meta("sc.env").unwrap_or_default(),
            ..Service::default()
        });
        let mut stored = instance.clone();
        stored.tenant = service.tenant.clone();
        stored.service_id = service.service_id.clone();
        stored.version = service.version.clone();
        stored.properties.retain(|k, _| !k.starts_with("sc."));
        if stored.status.is_empty() {
            stored.status = "UP".into();
        }
        {
            let mut state = self.lock();
            state
                .services
                .entry((service.tenant.clone(), service.service_id.clone()))
                .or_insert(service);
            state.instances.insert(stored.reference(), stored.clone());
            state.renew(&stored.reference(), Instant::now());
        }
        self.version_tx.send_modify(|v| *v += 1);
        stored
    }

    /// Forgets the services [`Registry::ensure_service`] recorded that hold no instance
    /// now, as a restarted Eureka adapter has only what Eureka shows to rebuild its table
    /// from; a no-op for other flavours.
    pub fn restart_adapter(&self) {
        let mut state = self.lock();
        if state.flavour != Flavour::Eureka {
            return;
        }
        let held: BTreeSet<(Tenant, String)> = state
            .instances
            .values()
            .map(|i| (i.tenant.clone(), i.service_id.clone()))
            .collect();
        state.services.retain(|key, _| held.contains(key));
    }

    /// Makes every call fail with [`RegistryError::Unavailable`] (`true`) or work again.
    pub fn set_down(&self, down: bool) {
        self.lock().down = down;
        self.version_tx.send_modify(|v| *v += 1);
    }

    /// Makes every call that changes something wait `delay` first (zero: no wait): a slow
    /// registry. Calls already waiting keep the delay they started with.
    pub fn set_write_delay(&self, delay: Duration) {
        self.lock().write_delay = delay;
    }

    /// Makes the first, full read of every new change feed wait `delay` (zero: no wait): a
    /// registry whose dump takes a while, so a syncer that has just started has not read it
    /// yet when its peers first ask.
    pub fn set_read_delay(&self, delay: Duration) {
        self.lock().read_delay = delay;
    }

    /// Makes every change feed report what changed `lag` late (zero: at once): a feed that
    /// finds new services only at its next listing, as ServiceComb's does (up to a second).
    pub fn set_feed_lag(&self, lag: Duration) {
        self.lock().feed_lag = lag;
    }

    /// Makes creating a service named `name` fail with `error` (`None`: work again). A
    /// service that exists already is still found.
    pub fn refuse_service(&self, name: &str, error: Option<RegistryError>) {
        let mut state = self.lock();
        match error {
            Some(error) => state.refused_services.insert(name.to_owned(), error),
            None => state.refused_services.remove(name),
        };
    }

    /// Writes `schema` into service `service_id` of `tenant` past Service Center's
    /// production rule, as a registry whose schemas are editable would (a test's origin
    /// whose contract changes).
    ///
    /// # Errors
    /// [`RegistryError::NotFound`] when the service does not exist.
    pub fn force_schema(
        &self,
        tenant: &Tenant,
        service_id: &str,
        schema: &Schema,
    ) -> Result<(), RegistryError> {
        let result = self
            .lock()
            .put_schema(&(tenant.clone(), service_id.to_owned()), schema, true);
        if result.is_ok() {
            self.version_tx.send_modify(|v| *v += 1);
        }
        result
    }

    /// How often each operation was called so far, failed calls included.
    pub fn calls(&self) -> BTreeMap<RegistryOp, u64> {
        self.lock().calls.clone()
    }

    /// How often `op` was called so far, failed calls included.
    pub fn calls_of(&self, op: RegistryOp) -> u64 {
        self.lock().calls.get(&op).copied().unwrap_or(0)
    }

    /// When the lease of `instance` ends, if it has one.
    pub fn lease_end(&self, instance: &InstanceRef) -> Option<Instant> {
        self.lock().leases.get(instance).copied()
    }

    /// The current content, regardless of the down switch; ended leases are expired first.
    pub fn contents(&self) -> Snapshot {
        self.expire_now();
        self.lock().snapshot()
    }
}

#[async_trait]
impl Registry for MemoryRegistry {
    async fn identity(&self) -> Result<RegistryIdentity, RegistryError> {
        self.read(RegistryOp::Identity, |state| {
            Ok(RegistryIdentity {
                kind: match state.flavour {
                    Flavour::ServiceComb => "memory",
                    Flavour::Eureka => "memory-eureka",
                }
                .into(),
                version: env!("CARGO_PKG_VERSION").into(),
                id: self.id.clone(),
            })
        })
        .await
    }

    async fn snapshot(&self) -> Result<Snapshot, RegistryError> {
        self.read(RegistryOp::Snapshot, |state| Ok(state.snapshot()))
            .await
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
        self.write(RegistryOp::EnsureService, |state| {
            if state.flavour == Flavour::Eureka {
                // Recorded in the adapter's table only: nothing shows until an instance does.
                let kept = eureka_service(service);
                let key = (kept.tenant.clone(), kept.service_id.clone());
                if !state.services.contains_key(&key)
                    && let Some(error) = state.refused_services.get(&service.name)
                {
                    return Err(error.clone());
                }
                let id = kept.service_id.clone();
                state.services.entry(key).or_insert(kept);
                return Ok(id);
            }
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
            if let Some(error) = state.refused_services.get(&service.name) {
                return Err(error.clone());
            }
            let mut created = service.clone();
            // Summaries are the registry's, of the contents it holds: none yet.
            created.schema_summaries.clear();
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
        .await
    }

    async fn set_service_properties(
        &self,
        tenant: &Tenant,
        service_id: &str,
        properties: &BTreeMap<String, String>,
    ) -> Result<(), RegistryError> {
        let body = serde_json::json!({ "properties": properties }).to_string();
        self.write(RegistryOp::SetServiceProperties, |state| {
            if state.flavour == Flavour::Eureka {
                // Eureka holds no service properties; the adapter does nothing.
                return Ok(());
            }
            if body.len() > PROPERTIES_BODY_BYTES {
                return Err(RegistryError::Refused(Refusal {
                    field: "set_service_properties".into(),
                    reason: "too_large",
                    detail: format!(
                        "a body of {} bytes: http: request body too large",
                        body.len()
                    ),
                }));
            }
            let service = state
                .services
                .get_mut(&(tenant.clone(), service_id.to_owned()))
                .ok_or_else(|| RegistryError::NotFound(format!("service {tenant}/{service_id}")))?;
            service.properties = properties.clone();
            Ok(())
        })
        .await
    }

    async fn schemas(
        &self,
        tenant: &Tenant,
        service_id: &str,
    ) -> Result<Vec<Schema>, RegistryError> {
        self.read(RegistryOp::Schemas, |state| {
            if state.flavour == Flavour::Eureka {
                return Ok(Vec::new());
            }
            let key = (tenant.clone(), service_id.to_owned());
            if !state.services.contains_key(&key) {
                return Err(RegistryError::NotFound(format!(
                    "service {tenant}/{service_id}"
                )));
            }
            Ok(state
                .schemas
                .get(&key)
                .map(|s| s.values().cloned().collect())
                .unwrap_or_default())
        })
        .await
    }

    async fn put_schema(
        &self,
        tenant: &Tenant,
        service_id: &str,
        schema: &Schema,
    ) -> Result<(), RegistryError> {
        self.write(RegistryOp::PutSchema, |state| {
            if state.flavour == Flavour::Eureka {
                return Err(unsupported(
                    format!("schema {}", schema.id),
                    SCHEMA_REFUSED,
                    "contracts",
                ));
            }
            state.put_schema(&(tenant.clone(), service_id.to_owned()), schema, false)
        })
        .await
    }

    async fn set_service_tags(
        &self,
        tenant: &Tenant,
        service_id: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<(), RegistryError> {
        self.write(RegistryOp::SetServiceTags, |state| {
            if state.flavour == Flavour::Eureka {
                return Err(unsupported(
                    "set_service_tags".into(),
                    "unsupported",
                    "tags",
                ));
            }
            let service = state
                .services
                .get_mut(&(tenant.clone(), service_id.to_owned()))
                .ok_or_else(|| RegistryError::NotFound(format!("service {tenant}/{service_id}")))?;
            service.tags = tags.clone();
            Ok(())
        })
        .await
    }

    async fn set_service_rules(
        &self,
        tenant: &Tenant,
        service_id: &str,
        rules: &[AccessRule],
    ) -> Result<(), RegistryError> {
        self.write(RegistryOp::SetServiceRules, |state| {
            if state.flavour == Flavour::Eureka {
                return Err(unsupported(
                    "set_service_rules".into(),
                    "unsupported",
                    "access rules",
                ));
            }
            let service = state
                .services
                .get_mut(&(tenant.clone(), service_id.to_owned()))
                .ok_or_else(|| RegistryError::NotFound(format!("service {tenant}/{service_id}")))?;
            let mut sorted = rules.to_vec();
            sorted.sort();
            service.rules = sorted;
            Ok(())
        })
        .await
    }

    async fn register(&self, instance: &Instance) -> Result<(), RegistryError> {
        self.write(RegistryOp::Register, |state| {
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
            let mut stored = instance.clone();
            if stored.status.is_empty() {
                stored.status = "UP".into();
            }
            stored.version = service.version.clone();
            if state.flavour == Flavour::Eureka {
                // As Eureka: a registration replaces the instance.
                state.instances.insert(instance.reference(), stored);
            } else {
                // As ServiceComb: an existing id is only renewed, its data kept.
                state
                    .instances
                    .entry(instance.reference())
                    .or_insert(stored);
            }
            // Registering again renews the lease, as a heartbeat (reference §3.1).
            state.renew(&instance.reference(), Instant::now());
            Ok(())
        })
        .await
    }

    async fn heartbeat(&self, instances: &[InstanceRef]) -> Result<HeartbeatReport, RegistryError> {
        // A heartbeat renews leases but changes nothing a feed reports (SC emits no event).
        self.read(RegistryOp::Heartbeat, |state| {
            let now = Instant::now();
            let mut unknown = Vec::new();
            for r in instances {
                if state.instances.contains_key(r) {
                    state.renew(r, now);
                } else {
                    unknown.push(r.clone());
                }
            }
            Ok(HeartbeatReport { unknown })
        })
        .await
    }

    async fn set_status(&self, instance: &InstanceRef, status: &str) -> Result<(), RegistryError> {
        if !STATUSES.contains(&status) {
            return Err(RegistryError::Invalid(format!("unknown status {status}")));
        }
        // The lease is kept, not renewed (reference §3.9).
        self.write(RegistryOp::SetStatus, |state| {
            let stored = state
                .instances
                .get_mut(instance)
                .ok_or_else(|| RegistryError::NotFound(format!("instance {instance}")))?;
            stored.status = status.to_owned();
            Ok(())
        })
        .await
    }

    async fn set_instance_properties(
        &self,
        instance: &InstanceRef,
        properties: &BTreeMap<String, String>,
    ) -> Result<(), RegistryError> {
        self.write(RegistryOp::SetInstanceProperties, |state| {
            let stored = state
                .instances
                .get_mut(instance)
                .ok_or_else(|| RegistryError::NotFound(format!("instance {instance}")))?;
            stored.properties = properties.clone();
            Ok(())
        })
        .await
    }

    async fn unregister(&self, instance: &InstanceRef) -> Result<(), RegistryError> {
        self.write(RegistryOp::Unregister, |state| {
            state.leases.remove(instance);
            state
                .instances
                .remove(instance)
                .map(|_| ())
                .ok_or_else(|| RegistryError::NotFound(format!("instance {instance}")))
        })
        .await
    }
}

/// The refusal the trait's defaults give for what a registry kind without `what` is asked
/// to hold (a Eureka-like twin refuses as the Eureka adapter does).
fn unsupported(field: String, reason: &'static str, what: &str) -> RegistryError {
    RegistryError::Refused(Refusal {
        field,
        reason,
        detail: format!("this registry kind holds no {what}"),
    })
}

/// A feed that waits for a write (or the next lease end) and reports the difference since
/// its last batch. Its reads are not counted in [`MemoryRegistry::calls`]: they are the
/// registry's own watch, not calls of the engine.
struct MemoryFeed {
    registry: MemoryRegistry,
    version_rx: watch::Receiver<u64>,
    last: Option<Snapshot>,
}

impl MemoryFeed {
    /// Expires ended leases, then marks the version seen, then reads: the snapshot covers
    /// every write marked, and a write after it wakes the next call.
    fn read(&mut self) -> Result<Snapshot, RegistryError> {
        self.registry.expire_now();
        self.version_rx.mark_unchanged();
        let state = self.registry.lock();
        state.check_up()?;
        Ok(state.snapshot())
    }
}

#[async_trait]
impl ChangeFeed for MemoryFeed {
    async fn next(&mut self) -> Result<Vec<Change>, RegistryError> {
        if self.last.is_some() {
            let next_expiry = self.registry.lock().next_expiry();
            match next_expiry {
                Some(at) => tokio::select! {
                    // A closed channel cannot happen while `registry` holds the sender.
                    _ = self.version_rx.changed() => {}
                    () = tokio::time::sleep_until(at) => {}
                },
                None => {
                    let _ = self.version_rx.changed().await;
                }
            }
        }
        let delay = {
            let state = self.registry.lock();
            if self.last.is_none() {
                state.read_delay
            } else {
                state.feed_lag
            }
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let now = self.read()?;
        let changes = match &self.last {
            Some(last) => diff(last, &now),
            None => vec![Change::Resync(now.clone())],
        };
        self.last = Some(now);
        Ok(changes)
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
        let eureka_style = crate::registry::fixtures::eureka_style_instance();
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
    async fn memory_registry_with_leases_passes_the_contract() {
        let registry = MemoryRegistry::with_leases("mem-3");
        super::super::contract::registry_contract(&registry).await;
    }

    fn service() -> Service {
        Service {
            service_id: "s1".into(),
            app: "a".into(),
            name: "n".into(),
            version: "1.0.0".into(),
            ..Service::default()
        }
    }

    fn leased(id: &str, interval: u32, times: u32) -> Instance {
        Instance {
            service_id: "s1".into(),
            instance_id: id.into(),
            health_check: Some(crate::registry::HealthCheck {
                mode: "push".into(),
                interval,
                times,
                port: 0,
                url: String::new(),
            }),
            ..Instance::default()
        }
    }

    fn ids(registry: &MemoryRegistry) -> Vec<String> {
        registry
            .contents()
            .instances
            .into_iter()
            .map(|i| i.instance_id)
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn leases_end_unless_heartbeated_and_feeds_see_the_instance_go() {
        let registry = MemoryRegistry::with_leases("mem-4");
        registry.ensure_service(&service()).await.unwrap();
        // 2 s × (1 + 1) = 4 s.
        let a = leased("a", 2, 1);
        let b = leased("b", 2, 1);
        let mut forever = leased("forever", 2, 1);
        forever.health_check = None;
        for i in [&a, &b, &forever] {
            registry.register(i).await.unwrap();
        }
        let mut feed = registry.change_feed();
        assert!(matches!(
            feed.next().await.unwrap()[..],
            [Change::Resync(_)]
        ));
        let start = Instant::now();

        tokio::time::sleep(Duration::from_secs(3)).await;
        // A status change keeps the lease; a heartbeat renews it.
        registry.set_status(&a.reference(), "DOWN").await.unwrap();
        let report = registry.heartbeat(&[b.reference()]).await.unwrap();
        assert!(report.unknown.is_empty());
        assert_eq!(
            registry.lease_end(&b.reference()),
            Some(start + Duration::from_secs(7))
        );
        let batch = feed.next().await.unwrap();
        assert!(matches!(&batch[..], [Change::Instance(i)] if i.status == "DOWN"));

        // The feed wakes by itself when the lease of `a` ends, exactly on time.
        let batch = feed.next().await.unwrap();
        assert_eq!(batch, vec![Change::InstanceRemoved(a.reference())]);
        assert_eq!(start.elapsed(), Duration::from_secs(4));
        let report = registry.heartbeat(&[a.reference()]).await.unwrap();
        assert_eq!(
            report.unknown,
            vec![a.reference()],
            "an expired lease is gone"
        );

        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(ids(&registry), ["forever"], "no push check, no lease");
        // Registering again starts a new lease.
        registry.register(&b).await.unwrap();
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(ids(&registry), ["b", "forever"]);
    }

    #[tokio::test(start_paused = true)]
    async fn without_leases_nothing_expires() {
        let registry = MemoryRegistry::new("mem-5");
        registry.ensure_service(&service()).await.unwrap();
        registry.register(&leased("a", 1, 0)).await.unwrap();
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert_eq!(ids(&registry), ["a"]);
        assert_eq!(registry.lease_end(&leased("a", 1, 0).reference()), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_registry_delays_writes_and_calls_are_counted() {
        let registry = MemoryRegistry::new("mem-6");
        registry.set_write_delay(Duration::from_millis(250));
        let start = Instant::now();
        registry.ensure_service(&service()).await.unwrap();
        registry.register(&leased("a", 1, 0)).await.unwrap();
        registry
            .heartbeat(&[leased("a", 1, 0).reference()])
            .await
            .unwrap();
        assert_eq!(start.elapsed(), Duration::from_millis(750));
        registry.snapshot().await.unwrap();
        assert_eq!(
            start.elapsed(),
            Duration::from_millis(750),
            "reads are not slowed"
        );
        registry.set_down(true);
        assert!(
            registry
                .unregister(&leased("a", 1, 0).reference())
                .await
                .is_err()
        );
        assert_eq!(
            registry.calls(),
            BTreeMap::from([
                (RegistryOp::Snapshot, 1),
                (RegistryOp::EnsureService, 1),
                (RegistryOp::Register, 1),
                (RegistryOp::Heartbeat, 1),
                (RegistryOp::Unregister, 1),
            ])
        );
        assert_eq!(registry.calls_of(RegistryOp::SetStatus), 0);
    }

    fn eureka_instance(service_id: &str, id: &str) -> Instance {
        Instance {
            service_id: service_id.into(),
            instance_id: id.into(),
            endpoints: vec!["rest://10.0.0.1:8080".into()],
            host_name: "10.0.0.1".into(),
            status: "UP".into(),
            properties: BTreeMap::from([("zone".into(), "z1".into())]),
            ..Instance::default()
        }
    }

    #[test]
    fn eureka_service_ids_are_sha1_of_the_length_prefixed_identity() {
        let orders = Service {
            service_id: "ignored".into(),
            app: "default".into(),
            name: "orders".into(),
            version: "0.0.1".into(),
            properties: BTreeMap::from([("ignored".into(), "too".into())]),
            ..Service::default()
        };
        // Computed apart from this code (Python's hashlib over the same bytes).
        assert_eq!(
            eureka_service_id(&orders),
            "eureka-7f61b0727cfd530426078684a6c7bb99"
        );
        let other_app = Service {
            app: "shop".into(),
            ..orders.clone()
        };
        assert_ne!(eureka_service_id(&orders), eureka_service_id(&other_app));
    }

    #[tokio::test]
    async fn a_eureka_like_service_exists_while_it_has_instances() {
        let registry = MemoryRegistry::eureka_like("eureka-1");
        let mut feed = registry.change_feed();
        assert_eq!(
            feed.next().await.unwrap(),
            vec![Change::Resync(Snapshot::default())]
        );
        let asked = Service {
            tags: BTreeMap::from([("t".into(), "1".into())]),
            ..service()
        };
        let id = registry.ensure_service(&asked).await.unwrap();
        assert_eq!(id, eureka_service_id(&asked), "never the id asked for");
        assert_eq!(registry.ensure_service(&asked).await.unwrap(), id);
        assert_eq!(registry.contents(), Snapshot::default(), "nothing at rest");
        let props = BTreeMap::from([("k".into(), "v".into())]);
        registry
            .set_service_properties(&Tenant::default(), &id, &props)
            .await
            .expect("a no-op");

        let a = eureka_instance(&id, "host:app:8080");
        assert_eq!(registry.accepts_instance(&a), Ok(()));
        registry.register(&a).await.unwrap();
        let shown = registry.contents();
        let kept = Service {
            service_id: id.clone(),
            app: "a".into(),
            name: "n".into(),
            version: "1.0.0".into(),
            ..Service::default()
        };
        assert_eq!(shown.services, vec![kept.clone()], "its identity alone");
        assert_eq!(shown.instances[0].instance_id, "host:app:8080");
        assert_eq!(shown.instances[0].version, "1.0.0");
        let batch = feed.next().await.unwrap();
        assert!(batch.contains(&Change::Service(kept)), "{batch:?}");

        // Statuses are kept as given; a registration replaces the data.
        for status in ["TESTING", "OUTOFSERVICE", "STARTING", "DOWN", "UP"] {
            registry.set_status(&a.reference(), status).await.unwrap();
            assert_eq!(registry.contents().instances[0].status, status);
        }
        let mut moved = a.clone();
        moved.endpoints = vec!["rest://10.0.0.2:8080".into()];
        registry.register(&moved).await.unwrap();
        assert_eq!(registry.contents().instances[0].endpoints, moved.endpoints);

        // The service goes with its last instance and is found again by its id.
        registry.unregister(&a.reference()).await.unwrap();
        let batch = feed.next().await.unwrap();
        assert!(
            batch.contains(&Change::ServiceRemoved {
                tenant: Tenant::default(),
                service_id: id.clone()
            }),
            "{batch:?}"
        );
        assert_eq!(registry.contents(), Snapshot::default());
        registry
            .register(&a)
            .await
            .expect("the table still knows it");
        registry.unregister(&a.reference()).await.unwrap();
        registry.restart_adapter();
        assert!(
            registry.register(&a).await.unwrap_err().is_not_found(),
            "a restarted adapter forgot the empty service"
        );
    }

    #[tokio::test]
    async fn a_eureka_like_registry_refuses_contracts_tags_and_rules() {
        let registry = MemoryRegistry::eureka_like("eureka-2");
        let id = registry.ensure_service(&service()).await.unwrap();
        let tenant = Tenant::default();
        let refusal = |e: RegistryError| match e {
            RegistryError::Refused(r) => r.reason,
            other => panic!("not a refusal: {other:?}"),
        };
        let schema = Schema {
            id: "hello".into(),
            ..Schema::default()
        };
        let e = registry
            .put_schema(&tenant, &id, &schema)
            .await
            .unwrap_err();
        assert_eq!(refusal(e), SCHEMA_REFUSED);
        let e = registry
            .set_service_tags(&tenant, &id, &BTreeMap::new())
            .await
            .unwrap_err();
        assert_eq!(refusal(e), "unsupported");
        let e = registry
            .set_service_rules(&tenant, &id, &[])
            .await
            .unwrap_err();
        assert_eq!(refusal(e), "unsupported");
        assert_eq!(registry.schemas(&tenant, &id).await.unwrap(), []);
        assert_eq!(
            registry.identity().await.unwrap().kind,
            "memory-eureka",
            "told apart from the ServiceComb twin"
        );
    }

    #[test]
    fn native_eureka_instances_get_the_adapters_service() {
        let registry = MemoryRegistry::eureka_like("eureka-3");
        let plain = eureka_instance("ignored", "host:orders:8080");
        let stored = registry.register_native("ORDERS", "orders", &plain);
        let orders = Service {
            app: "default".into(),
            name: "orders".into(),
            version: "0.0.1".into(),
            ..Service::default()
        };
        assert_eq!(stored.service_id, eureka_service_id(&orders));
        assert_eq!(stored.properties, plain.properties);

        // A VIP address other than the app: the lower-cased app names it.
        let billing = registry.register_native("BILLING", "billing-vip", &plain);
        let name = |s: &Instance| {
            registry
                .contents()
                .service(&Tenant::default(), &s.service_id)
                .map(|s| s.name.clone())
        };
        assert_eq!(name(&billing).as_deref(), Some("billing"));
        // VIP equal to the app but for case: the VIP address as it is.
        let mixed = registry.register_native("PAYMENTS", "Payments", &plain);
        assert_eq!(name(&mixed).as_deref(), Some("Payments"));

        // `sc.*` metadata names the service and is not a property.
        let mut qualified = eureka_instance("ignored", "q:1");
        for (k, v) in [
            ("sc.appId", "shop"),
            ("sc.serviceName", "cart"),
            ("sc.version", "2.1.0"),
            ("sc.env", "production"),
        ] {
            qualified.properties.insert(k.into(), v.into());
        }
        let stored = registry.register_native("CART", "cart", &qualified);
        let service = registry
            .contents()
            .service(&Tenant::default(), &stored.service_id)
            .cloned()
            .expect("shown");
        assert_eq!(
            (
                service.app.as_str(),
                service.name.as_str(),
                service.version.as_str(),
                service.environment.as_str()
            ),
            ("shop", "cart", "2.1.0", "production")
        );
        assert_eq!(stored.properties, plain.properties, "no sc.* property");

        // UNKNOWN: left out, and so is a service with nothing else.
        let mut unknown = eureka_instance("ignored", "u:1");
        unknown.status = "UNKNOWN".into();
        let hidden = registry.register_native("GHOST", "ghost", &unknown);
        let shown = registry.contents();
        assert!(shown.instance(&hidden.reference()).is_none());
        assert!(
            shown
                .service(&Tenant::default(), &hidden.service_id)
                .is_none()
        );
        assert_eq!(shown.instances.len(), 4);
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

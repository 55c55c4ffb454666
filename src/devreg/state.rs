//! The in-memory data of one dev registry and the lookups every endpoint shares.
//!
//! Everything lives in one [`Store`] behind a `std::sync::Mutex` in [`Registry`]: critical
//! sections are short, never await, and each request takes the lock once or twice. Data are
//! partitioned per tenant (`domain/project`): services by id, instances by
//! `(serviceId, instanceId)` (the order of SC's etcd keys), and dependency rules by consumer.
//! A global counter plays etcd's revision: every write stamps the entry it touches, which gives
//! the dump's `rev` and the `X-Resource-Revision` of find/list/get.
//!
//! Instance events are produced here ([`Store::notify`]) because only the store knows which
//! consumers depend on a provider; they go to the watch sockets through bounded channels.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha1::{Digest, Sha1};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::warn;

use super::DevRegistryConfig;
use super::lease::Deferral;
use super::model::{
    HealthCheck, MicroService, MicroServiceInstance, MicroServiceKey, ServiceRule, StrMap,
    WatchEvent,
};
use super::version::Rule;

/// SC's own tenant; also the only one allowed to dump.
pub const DEFAULT_TENANT: &str = "default/default";
/// appId of SC's self-registration and of shared services.
pub const SC_APP_ID: &str = "default";
/// serviceName and alias of SC's self-registration; the only shared service.
pub const SC_SERVICE_NAME: &str = "SERVICECENTER";
/// SC's environment: the shipped `app.conf` has `runmode = dev`, which gives `development`.
pub const SC_ENVIRONMENT: &str = "development";
/// Longest lease the emulator keeps (an `int32` of seconds is about 68 years).
pub const MAX_LEASE: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
/// The default lease: 30 s × (3 + 1).
pub const DEFAULT_INTERVAL_SECS: i32 = 30;
pub const DEFAULT_TIMES: i32 = 3;

/// Unix seconds as SC writes them in `timestamp`/`modTimestamp`, derived from tokio's clock so
/// a paused test clock moves them too.
pub struct Clock {
    start_wall: SystemTime,
    start: Instant,
}

impl Clock {
    fn new() -> Self {
        Clock {
            start_wall: SystemTime::now(),
            start: Instant::now(),
        }
    }

    /// Current Unix time in seconds, as a decimal string.
    pub fn unix_secs(&self) -> String {
        let wall = self.start_wall + self.start.elapsed();
        wall.duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
            .to_string()
    }
}

/// A dependency rule change waiting to be applied (SC's dependency queue).
#[derive(Clone, Debug)]
pub struct DepJob {
    pub tenant: String,
    /// The consumer's key (exact version).
    pub consumer: MicroServiceKey,
    pub providers: Vec<MicroServiceKey>,
    /// PUT (replace) rather than POST/implicit (append); also triggers the clean-up of rules
    /// whose provider no longer exists, as SC does after every override job.
    pub overwrite: bool,
}

/// Everything the handlers and background tasks of one dev registry share.
pub struct Registry {
    pub config: DevRegistryConfig,
    pub clock: Clock,
    /// Host name reported for SC's own instance.
    pub hostname: String,
    /// The listen address, for SC's own endpoint and the dump's `appConf`.
    pub listen: std::net::SocketAddr,
    store: Mutex<Store>,
    /// Woken when an earlier lease deadline or a delete check window appears.
    pub lease_wakeup: Notify,
    /// Dependency jobs for the delayed worker; `None` when rules apply at once.
    pub dep_tx: Option<mpsc::Sender<(Instant, DepJob)>>,
    /// Cancelled when the registry stops.
    pub shutdown: CancellationToken,
    /// Every task of this registry (server, lease loop, dependency worker, sockets).
    pub tracker: TaskTracker,
    /// Tokens handed out by `POST /v4/token` (RBAC).
    pub tokens: super::auth::Tokens,
    /// Lagged copies of the store for reads (read lag).
    pub history: super::view::History,
}

impl Registry {
    pub fn new(
        config: DevRegistryConfig,
        listen: std::net::SocketAddr,
        dep_tx: Option<mpsc::Sender<(Instant, DepJob)>>,
        shutdown: CancellationToken,
        tracker: TaskTracker,
    ) -> Self {
        let hostname = gethostname::gethostname().to_string_lossy().into_owned();
        let reg = Registry {
            config,
            clock: Clock::new(),
            hostname,
            listen,
            store: Mutex::new(Store::default()),
            lease_wakeup: Notify::new(),
            dep_tx,
            shutdown,
            tracker,
            tokens: Default::default(),
            history: Default::default(),
        };
        if reg.config.self_register {
            reg.register_self();
        }
        reg
    }

    /// Locks the store. A poisoned lock (a panic elsewhere) still gives the data: every
    /// critical section leaves the store consistent before anything can panic.
    pub fn lock(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Lease TTL after `lease_scale`, from a Go `int32` TTL in seconds; capped at
    /// [`MAX_LEASE`] so deadlines never overflow.
    pub fn scaled_ttl(&self, secs: i64) -> Duration {
        let secs = secs.max(0) as f64 * self.config.lease_scale;
        Duration::try_from_secs_f64(secs)
            .unwrap_or(MAX_LEASE)
            .min(MAX_LEASE)
    }

    /// Applies dependency jobs now, or hands them to the delayed worker.
    pub async fn submit_dependencies(&self, jobs: Vec<DepJob>) {
        if jobs.is_empty() {
            return;
        }
        match &self.dep_tx {
            None => {
                let mut store = self.lock();
                for job in jobs {
                    store.apply_dependency(job);
                }
            }
            Some(tx) => {
                for job in jobs {
                    if tx.send((Instant::now(), job)).await.is_err() {
                        warn!("dependency queue closed; rule dropped");
                    }
                }
            }
        }
    }

    /// SC registers itself in `default/default` at start (reference §1.5).
    fn register_self(&self) {
        let now = self.clock.unix_secs();
        let service = MicroService {
            app_id: SC_APP_ID.into(),
            service_name: SC_SERVICE_NAME.into(),
            alias: SC_SERVICE_NAME.into(),
            version: self.config.version.clone(),
            environment: SC_ENVIRONMENT.into(),
            level: "BACK".into(),
            status: "UP".into(),
            schemas: vec![
                "servicecenter.grpc.api.ServiceCtrl".into(),
                "servicecenter.grpc.api.ServiceInstanceCtrl".into(),
            ],
            properties: [("allowCrossApp".to_owned(), "true".to_owned())].into(),
            timestamp: now.clone(),
            mod_timestamp: now.clone(),
            ..Default::default()
        };
        let service_id = generated_service_id(DEFAULT_TENANT, &service);
        let instance = MicroServiceInstance {
            instance_id: random_instance_id(),
            service_id: service_id.clone(),
            endpoints: vec![format!("rest://{}/", self.listen)],
            host_name: self.hostname.clone(),
            status: "UP".into(),
            health_check: Some(HealthCheck {
                mode: "push".into(),
                interval: DEFAULT_INTERVAL_SECS,
                times: DEFAULT_TIMES,
                ..Default::default()
            }),
            // SC 2.x registers itself through its ordinary register path, which writes the
            // inner properties over every instance's: its own instance shows them too.
            properties: if self.config.is_v2() {
                self.config.inner_properties.clone()
            } else {
                StrMap::new()
            },
            timestamp: now.clone(),
            mod_timestamp: now,
            version: self.config.version.clone(),
            ..Default::default()
        };
        let mut store = self.lock();
        let rev = store.next_rev();
        store
            .tenant_mut(DEFAULT_TENANT)
            .insert_service(ServiceEntry {
                service: MicroService {
                    service_id: service_id.clone(),
                    ..service
                },
                rev,
                tags: StrMap::new(),
                tags_rev: 0,
                schemas: BTreeMap::new(),
                rules: BTreeMap::new(),
            });
        let rev = store.next_rev();
        let ttl = self.scaled_ttl(120);
        store.tenant_mut(DEFAULT_TENANT).instances.insert(
            (service_id.clone(), instance.instance_id.clone()),
            InstanceEntry {
                instance,
                rev,
                ttl,
                expires_at: Instant::now() + ttl,
                // SC heartbeats its own instance every 30 s; here it simply never expires.
                pinned: true,
                deferred: None,
            },
        );
        store.sc_service_id = Some(service_id);
    }
}

/// `/cse-sr/ms/indexes/{tenant}/{env}/{app}/{name}/{version}` of a service.
pub fn index_key(tenant: &str, env: &str, app: &str, name: &str, version: &str) -> String {
    format!("/cse-sr/ms/indexes/{tenant}/{env}/{app}/{name}/{version}")
}

/// SC's `context` uuid plugin: the lowercase hex SHA-1 of the service's index key.
pub fn generated_service_id(tenant: &str, s: &MicroService) -> String {
    let key = index_key(
        tenant,
        &s.environment,
        &s.app_id,
        &s.service_name,
        &s.version,
    );
    hex::encode(Sha1::digest(key.as_bytes()))
}

/// A fresh instance id: 32 lowercase hex digits, like SC's dash-less UUIDv1 (opaque to clients).
pub fn random_instance_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// `FormatRevision` with one cluster: SHA-1 of `"{maxModRevision}.{count},"`.
pub fn format_revision<'a>(entries: impl IntoIterator<Item = &'a InstanceEntry>) -> String {
    let (mut max, mut count) = (0i64, 0i64);
    for e in entries {
        max = max.max(e.rev);
        count += 1;
    }
    hex::encode(Sha1::digest(format!("{max}.{count},").as_bytes()))
}

/// One stored service.
#[derive(Clone, Debug)]
pub struct ServiceEntry {
    pub service: MicroService,
    /// Revision of the last write of the service (create or properties update).
    pub rev: i64,
    /// Tags (`tags` of the create body, the tag API).
    pub tags: StrMap,
    pub tags_rev: i64,
    /// Uploaded contracts by schema id (SC's schema and summary keys). Independent of
    /// `service.schemas`, the id list, as in SC.
    pub schemas: BTreeMap<String, SchemaEntry>,
    /// Black/white-list rules by rule id (SC's rule keys, in key order).
    pub rules: BTreeMap<String, ServiceRule>,
}

/// One uploaded schema: SC keeps content and summary under two keys, so either may be absent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SchemaEntry {
    /// The content key; `None` when only a summary is left (never after an upload).
    pub content: Option<String>,
    /// The summary key; `None` when the schema was uploaded without a summary.
    pub summary: Option<String>,
}

/// One stored instance and its lease.
#[derive(Clone, Debug)]
pub struct InstanceEntry {
    pub instance: MicroServiceInstance,
    /// Revision of the last write (register, status, properties); heartbeats leave it alone.
    pub rev: i64,
    /// Lease length, already scaled.
    pub ttl: Duration,
    pub expires_at: Instant,
    /// SC's own instance: never expires.
    pub pinned: bool,
    /// Deleted in the store but still served from "cache" (real-SC delete check window and
    /// self-preservation): what is left of its self-preservation budget.
    pub deferred: Option<Duration>,
}

impl InstanceEntry {
    /// Whether store-level operations (heartbeat, unregister, updates) see the instance.
    pub fn is_live(&self) -> bool {
        self.deferred.is_none()
    }
}

/// Identity of a consumer's dependency rule: its exact key.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ConsumerKey {
    pub environment: String,
    pub app_id: String,
    pub service_name: String,
    pub version: String,
}

impl ConsumerKey {
    pub fn of(k: &MicroServiceKey) -> Self {
        ConsumerKey {
            environment: k.environment.clone(),
            app_id: k.app_id.clone(),
            service_name: k.service_name.clone(),
            version: k.version.clone(),
        }
    }
}

/// The providers one consumer depends on.
#[derive(Clone, Debug)]
pub struct DepRule {
    /// The consumer's key as given (with tenant, maybe alias).
    pub consumer: MicroServiceKey,
    /// Provider keys; `version` is a rule, `serviceName` may be `*`.
    pub providers: Vec<MicroServiceKey>,
    pub rev: i64,
}

/// `(environment, appId, name or alias)`: the index key without the version.
type NameKey = (String, String, String);

/// The data of one `domain/project`.
#[derive(Clone, Debug, Default)]
pub struct Tenant {
    /// Services by id. Insert and remove through [`Tenant::insert_service`] and
    /// [`Tenant::remove_service`], which keep the name indexes in step.
    pub services: BTreeMap<String, ServiceEntry>,
    pub instances: BTreeMap<(String, String), InstanceEntry>,
    pub dep_rules: BTreeMap<ConsumerKey, DepRule>,
    /// Service ids by `(env, app, serviceName)` (SC's index keys).
    by_name: BTreeMap<NameKey, BTreeSet<String>>,
    /// Service ids by `(env, app, alias)` for services with an alias.
    by_alias: BTreeMap<NameKey, BTreeSet<String>>,
}

fn name_key(env: &str, app: &str, name: &str) -> NameKey {
    (env.to_owned(), app.to_owned(), name.to_owned())
}

impl Tenant {
    pub fn insert_service(&mut self, entry: ServiceEntry) {
        let s = &entry.service;
        let id = s.service_id.clone();
        self.by_name
            .entry(name_key(&s.environment, &s.app_id, &s.service_name))
            .or_default()
            .insert(id.clone());
        if !s.alias.is_empty() {
            self.by_alias
                .entry(name_key(&s.environment, &s.app_id, &s.alias))
                .or_default()
                .insert(id.clone());
        }
        self.services.insert(id, entry);
    }

    pub fn remove_service(&mut self, id: &str) -> Option<ServiceEntry> {
        let entry = self.services.remove(id)?;
        let s = &entry.service;
        for (index, name) in [
            (&mut self.by_name, &s.service_name),
            (&mut self.by_alias, &s.alias),
        ] {
            let key = name_key(&s.environment, &s.app_id, name);
            if let Some(ids) = index.get_mut(&key) {
                ids.remove(id);
                if ids.is_empty() {
                    index.remove(&key);
                }
            }
        }
        Some(entry)
    }

    /// Services with this `(env, app, name)` (or alias), any version.
    pub fn named(
        &self,
        env: &str,
        app: &str,
        name: &str,
        by_alias: bool,
    ) -> impl Iterator<Item = &ServiceEntry> {
        let index = if by_alias {
            &self.by_alias
        } else {
            &self.by_name
        };
        index
            .get(&name_key(env, app, name))
            .into_iter()
            .flatten()
            .filter_map(|id| self.services.get(id))
    }

    /// `GetServiceID`: the exact key by name, then by alias.
    pub fn service_id_by_key(
        &self,
        env: &str,
        app: &str,
        name: &str,
        alias: &str,
        version: &str,
    ) -> Option<&str> {
        self.named(env, app, name, false)
            .find(|e| e.service.version == version)
            .or_else(|| {
                (!alias.is_empty())
                    .then(|| {
                        self.named(env, app, alias, true)
                            .find(|e| e.service.version == version)
                    })
                    .flatten()
            })
            .map(|e| e.service.service_id.as_str())
    }

    /// `(version, id)` of every version of a name (or of an alias).
    fn versions(&self, env: &str, app: &str, name: &str, by_alias: bool) -> Vec<(&str, &str)> {
        if name.is_empty() {
            return Vec::new();
        }
        self.named(env, app, name, by_alias)
            .map(|e| (e.service.version.as_str(), e.service.service_id.as_str()))
            .collect()
    }

    /// `FindServiceIds`: the ids a version rule selects (highest version first) and whether
    /// the name (or alias) exists at all. For an exact version "exists" means that version.
    pub fn find_service_ids(
        &self,
        rule: &str,
        env: &str,
        app: &str,
        name: &str,
        alias: &str,
    ) -> (Vec<String>, bool) {
        let parsed = Rule::parse(rule);
        if let Rule::Exact(v) = &parsed {
            return match self.service_id_by_key(env, app, name, alias, v) {
                Some(id) => (vec![id.to_owned()], true),
                None => (Vec::new(), false),
            };
        }
        let mut candidates = self.versions(env, app, name, false);
        if candidates.is_empty() && !alias.is_empty() {
            candidates = self.versions(env, app, alias, true);
        }
        if candidates.is_empty() {
            return (Vec::new(), false);
        }
        let ids = parsed.select(&candidates);
        (ids.into_iter().map(str::to_owned).collect(), true)
    }

    /// Instances of a service as find/list see them (including deferred deletes).
    pub fn cached_instances<'a>(
        &'a self,
        service_id: &'a str,
    ) -> impl Iterator<Item = &'a InstanceEntry> + 'a {
        self.instances
            .range((service_id.to_owned(), String::new())..)
            .take_while(move |((sid, _), _)| sid == service_id)
            .map(|(_, e)| e)
    }

    /// An instance as store-level operations see it.
    pub fn live_instance_mut(&mut self, sid: &str, iid: &str) -> Option<&mut InstanceEntry> {
        self.instances
            .get_mut(&(sid.to_owned(), iid.to_owned()))
            .filter(|e| e.is_live())
    }

    /// Whether `provider` is the highest version of its name (`latest` rule matching).
    fn is_latest(&self, provider: &MicroService) -> bool {
        let candidates = self.versions(
            &provider.environment,
            &provider.app_id,
            &provider.service_name,
            false,
        );
        Rule::Latest.select(&candidates).first() == Some(&provider.service_id.as_str())
    }

    /// Whether a provider rule (not `*`) selects `provider`.
    fn rule_matches(&self, rule: &MicroServiceKey, provider: &MicroService) -> bool {
        rule.environment == provider.environment
            && rule.app_id == provider.app_id
            && rule.service_name == provider.service_name
            && if rule.version == "latest" {
                self.is_latest(provider)
            } else {
                Rule::parse(&rule.version).matches(&provider.version)
            }
    }

    /// `GetDependencyConsumerIds`: ids of the consumers depending on `provider`, `*` rules of
    /// the provider's environment first; one entry per matching rule (not deduplicated).
    pub fn consumers_of(&self, provider: &MicroService) -> Vec<String> {
        let mut all_rules = Vec::new();
        let mut specific = Vec::new();
        for rule in self.dep_rules.values() {
            for p in &rule.providers {
                if p.service_name == "*" {
                    if p.environment == provider.environment {
                        all_rules.push(&rule.consumer);
                    }
                } else if self.rule_matches(p, provider) {
                    specific.push(&rule.consumer);
                }
            }
        }
        all_rules
            .into_iter()
            .chain(specific)
            .filter_map(|c| {
                self.service_id_by_key(
                    &c.environment,
                    &c.app_id,
                    &c.service_name,
                    &c.alias,
                    &c.version,
                )
            })
            .map(str::to_owned)
            .collect()
    }

    /// `GetDependencyProviderIds`: ids of the services a consumer depends on; a `*` rule means
    /// every service of the tenant in that environment (and only those).
    pub fn providers_of(&self, consumer: &MicroService) -> Vec<String> {
        let key = ConsumerKey {
            environment: consumer.environment.clone(),
            app_id: consumer.app_id.clone(),
            service_name: consumer.service_name.clone(),
            version: consumer.version.clone(),
        };
        let Some(rule) = self.dep_rules.get(&key) else {
            return Vec::new();
        };
        let mut ids = Vec::new();
        for p in &rule.providers {
            if p.service_name == "*" {
                let mut all: Vec<&MicroService> = self
                    .services
                    .values()
                    .map(|e| &e.service)
                    .filter(|s| s.environment == p.environment)
                    .collect();
                // Index key order: app, name, version.
                all.sort_by(|a, b| {
                    (&a.app_id, &a.service_name, &a.version).cmp(&(
                        &b.app_id,
                        &b.service_name,
                        &b.version,
                    ))
                });
                return all.into_iter().map(|s| s.service_id.clone()).collect();
            }
            let (found, _) = self.find_service_ids(
                &p.version,
                &p.environment,
                &p.app_id,
                &p.service_name,
                &p.alias,
            );
            ids.extend(found);
        }
        ids
    }
}

/// A registered watch socket.
#[derive(Debug)]
pub struct WatcherSlot {
    pub tenant: String,
    /// The watching consumer's service id.
    pub consumer_id: String,
    /// Text frames to send; bounded, events are dropped when full (as SC does).
    pub tx: mpsc::Sender<String>,
}

/// All data of one dev registry.
#[derive(Debug, Default)]
pub struct Store {
    /// etcd-like revision: bumped by every write.
    pub revision: i64,
    pub tenants: BTreeMap<String, Tenant>,
    pub watchers: BTreeMap<u64, WatcherSlot>,
    pub next_watcher_id: u64,
    /// The delete check window and self-preservation state.
    pub deferral: Deferral,
    /// SC's own service id in `default/default`, when self-registered.
    pub sc_service_id: Option<String>,
}

/// Instance event kinds sent to watchers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Create,
    Update,
    Delete,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "CREATE",
            Action::Update => "UPDATE",
            Action::Delete => "DELETE",
        }
    }
}

impl Store {
    pub fn next_rev(&mut self) -> i64 {
        self.revision += 1;
        self.revision
    }

    /// A copy of the data reads see (tenants, revision, SC's id), for the read lag.
    pub fn read_copy(&self) -> Store {
        Store {
            revision: self.revision,
            tenants: self.tenants.clone(),
            sc_service_id: self.sc_service_id.clone(),
            ..Store::default()
        }
    }

    pub fn tenant(&self, name: &str) -> Option<&Tenant> {
        self.tenants.get(name)
    }

    pub fn tenant_mut(&mut self, name: &str) -> &mut Tenant {
        self.tenants.entry(name.to_owned()).or_default()
    }

    /// Whether `(tenant, provider)` is SC's shared service (`IsShared`).
    pub fn is_shared(tenant: &str, app: &str, name_or_alias: &str) -> bool {
        tenant == DEFAULT_TENANT && app == SC_APP_ID && name_or_alias == SC_SERVICE_NAME
    }

    /// Total number of instances in the "cache" (all tenants, deferred deletes included).
    pub fn instance_count(&self) -> usize {
        self.tenants.values().map(|t| t.instances.len()).sum()
    }

    /// Sends an instance event of provider `service_id` to every watcher whose consumer
    /// depends on it. Nothing is sent when the provider service is gone (as in SC, whose
    /// event handler looks the provider up first).
    pub fn notify(
        &self,
        tenant: &str,
        service_id: &str,
        action: Action,
        instance: &MicroServiceInstance,
    ) {
        let Some(t) = self.tenants.get(tenant) else {
            return;
        };
        let Some(provider) = t.services.get(service_id) else {
            return;
        };
        let consumers: BTreeSet<String> = t.consumers_of(&provider.service).into_iter().collect();
        if consumers.is_empty() {
            return;
        }
        let key = MicroServiceKey::of_service(tenant, &provider.service);
        let event = WatchEvent {
            action: action.as_str(),
            key: &key,
            instance,
        };
        let Ok(text) = serde_json::to_string(&event) else {
            return;
        };
        for (id, w) in &self.watchers {
            if w.tenant == tenant && consumers.contains(&w.consumer_id) {
                match w.tx.try_send(text.clone()) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        warn!(watcher = id, consumer = %w.consumer_id, "watcher queue is full, event dropped");
                    }
                    // The socket is closing; its guard removes the slot.
                    Err(mpsc::error::TrySendError::Closed(_)) => {}
                }
            }
        }
    }
}

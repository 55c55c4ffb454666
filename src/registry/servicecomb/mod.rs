//! The ServiceComb Service Center adapter (REST API v4): [`ServiceComb`] implements
//! [`Registry`] for one SC, reached through one or more addresses.
//!
//! Written from `servicecomb-sc-v4-api.md` (the "reference"; § numbers below point into it),
//! for SC 1.4.8 and 2.x alike: where they differ (batch heartbeat answers, find without a
//! version) the adapter reads the answer's shape rather than asking for a version.
//!
//! # Layout
//! - `mod.rs`: configuration, the adapter and the single-call operations.
//! - `client.rs`: HTTP, tenants, failover between addresses, error mapping.
//! - `auth.rs`: the login and token of SC 2.x access control (RBAC).
//! - `added.rs`: the properties SC 2.x adds to every instance, left out of what is reported.
//! - `wire.rs`: SC's JSON shapes (private to the adapter).
//! - `contracts.rs`: schemas (contracts), tags and access rules: reads, writes, and the
//!   summaries, tags and rules the feed adds to every service.
//! - `convert.rs`: wire ↔ model, dump keys, SC's own services.
//! - `heartbeat.rs`: batch heartbeats in both SC dialects.
//! - `dump.rs`: the admin dump, streamed and parsed element by element under its own deadlines.
//! - `feed.rs`: the change feed (dump + batch find with revisions).
//! - `metrics.rs`: the adapter's counters.
//! - `rules.rs`: what SC requires of the data it stores ([`Registry::accepts_service`],
//!   [`Registry::accepts_instance`]), beyond the bounds every registry shares.
//!
//! # Transparency
//! A syncer must not change how SC behaves for applications, so the adapter never sends
//! `X-ConsumerId` (a find with it records dependency rules, §3.5.3) and never creates a
//! watcher or a `*` dependency rule (§5.3: that makes every non-force service delete fail
//! with `400023`). It sees changes by polling instead.

mod added;
mod auth;
mod client;
mod contracts;
mod convert;
mod dump;
mod feed;
#[cfg(test)]
mod fuzz;
mod heartbeat;
mod metrics;
pub mod rules;
mod wire;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use reqwest::Method;
use serde::de::DeserializeOwned;
use tracing::{debug, warn};
use url::Url;

pub use self::dump::DumpDeadlines;
pub use self::metrics::ServiceCombMetrics;

use self::added::AddedProperties;
use self::auth::Auth;
use self::client::{Fault, Request, ScClient};
use self::convert::InternalServices;
use self::wire::{
    CreateServiceRequest, GovernReply, InstanceIdReply, InstancesReply, PropertiesRequest,
    RegisterInstanceRequest, ServiceIdReply, ServiceReply, ServicesReply, VersionReply,
    WireInstance,
};
use super::{
    AccessRule, ChangeFeed, HeartbeatReport, Instance, InstanceRef, Refusal, Registry,
    RegistryError, RegistryIdentity, Schema, Service, Snapshot, Tenant,
};
use crate::config::{Credentials, RegistryConfig, SyncConfig};
use crate::registry::tls::RegistryTls;
use crate::telemetry::Metrics;

/// The adapter kind reported by [`Registry::identity`].
pub const KIND: &str = "servicecenter";

/// At most this many tenants learnt from the adapter's own writes are remembered for the
/// feeds (the dump finds every tenant anyway; this only makes new ones visible sooner).
const MAX_WRITTEN_TENANTS: usize = 10_000;

/// How to reach and poll one Service Center.
#[derive(Debug, Clone)]
pub struct ServiceCombConfig {
    /// Addresses of the same SC (`http://host:30100`), preferred first. Calls go to the
    /// first; on a connection failure or timeout they move to the next.
    pub addresses: Vec<Url>,
    /// Bound of one HTTP attempt on one address: connect, send and read the whole answer.
    /// A call that fails over may take up to one `timeout` per address. The dump has
    /// deadlines of its own (`dump_deadlines`). Default 5 s.
    pub timeout: Duration,
    /// How long calls stay on a fallback address before trying the preferred one again.
    /// Default 30 s.
    pub failback_after: Duration,
    /// Time between two batch-find polls of a change feed (one call per tenant per poll).
    /// Default 100 ms.
    pub poll_interval: Duration,
    /// Time between two service listings (one `GET …/microservices` per known tenant),
    /// which find new, changed and deleted services, when SC does not answer statistics
    /// (`statistics` off, or refused). Default 1 s.
    pub discovery_interval: Duration,
    /// Whether each poll also asks SC's statistics of every known tenant (service names and
    /// instances counted), and lists a tenant at once when they count something the feed has
    /// not seen: a new service is then found within one poll instead of one
    /// `discovery_interval`, and listings are only a safety net (`listing_interval`). An SC
    /// that refuses the statistics turns them off for `STATISTICS_RETRY`. Default on.
    pub statistics: bool,
    /// Time between two service listings while the statistics work: they catch what the
    /// statistics do not count (a service's properties, a new version of a name without
    /// instances, a new service and a removed one within one poll). Default 2 s.
    pub listing_interval: Duration,
    /// Time between two dumps of the whole registry; each one is reported as a
    /// [`crate::registry::Change::Resync`] and is also how tenants nobody wrote to through
    /// this adapter are found. Default 30 s.
    pub resync_interval: Duration,
    /// Names of SC's shared services (SC's `CSE_SHARED_SERVICES`), hidden with their
    /// instances when in `default/default` with appId `default`. `SERVICECENTER` is always
    /// hidden, listed here or not. Default `["SERVICECENTER"]`.
    pub shared_services: Vec<String>,
    /// Most instances in one batch heartbeat call; larger batches are split. Default 1000.
    pub heartbeat_batch: usize,
    /// Most services in one batch-find call of a feed poll; tenants with more services take
    /// several calls. Keeps requests well below SC's 2 MiB body limit. Default 1000.
    pub find_batch: usize,
    /// Most calls a feed has in flight at once (tenants polled in parallel). Default 4.
    pub max_concurrent_calls: usize,
    /// Largest answer accepted, in bytes (the dump is the large one: about 600 bytes per
    /// instance). Larger answers fail as [`RegistryError::Protocol`]. Default 256 MiB.
    pub max_response_bytes: usize,
    /// Deadlines of the dump, which replace `timeout` for it: 90 MB at SC's default quota
    /// cannot be read in 5 s. Defaults in [`DumpDeadlines`].
    pub dump_deadlines: DumpDeadlines,
    /// The account to log in with when SC's access control (2.x RBAC) is on. Default none.
    pub credentials: Option<Credentials>,
    /// How long a disappearance must last before a feed reports it: an instance or service
    /// missing from one answer is reported gone only when an answer read at least this much
    /// later still misses it. With several SC nodes behind `addresses`, a failover to a node
    /// whose cache trails the others then does not read as a mass deletion. Zero reports a
    /// disappearance at once. Default 1 s with several addresses, zero with one: a single
    /// node's cache may trail its own writes, but what it no longer shows is gone, and a
    /// deregistration should reach the other data centres in well under a second.
    pub confirm_removal: Duration,
    /// TLS of `https://` addresses. Default: the web PKI roots, no client certificate.
    pub tls: RegistryTls,
    /// Tenants listed and counted from the start, besides those a dump shows and those the
    /// adapter wrote into (`--sc-tenants`). Default none.
    pub tenants: Vec<Tenant>,
}

impl ServiceCombConfig {
    /// Defaults for SC reached at `addresses`.
    pub fn new(addresses: Vec<Url>) -> ServiceCombConfig {
        let addresses_count = addresses.len();
        ServiceCombConfig {
            addresses,
            timeout: super::LONGEST_CALL,
            failback_after: Duration::from_secs(30),
            poll_interval: Duration::from_millis(100),
            discovery_interval: Duration::from_secs(1),
            statistics: true,
            listing_interval: Duration::from_secs(2),
            resync_interval: Duration::from_secs(30),
            shared_services: vec![convert::SERVICECENTER.to_owned()],
            heartbeat_batch: 1000,
            find_batch: 1000,
            max_concurrent_calls: 4,
            max_response_bytes: 256 << 20,
            dump_deadlines: DumpDeadlines::default(),
            credentials: None,
            tls: RegistryTls::default(),
            tenants: Vec::new(),
            confirm_removal: if addresses_count > 1 {
                Duration::from_secs(1)
            } else {
                Duration::ZERO
            },
        }
    }

    /// # Errors
    /// [`RegistryError::Invalid`] naming the first unusable setting.
    fn validate(&self) -> Result<(), RegistryError> {
        let durations = [
            ("timeout", self.timeout),
            ("poll_interval", self.poll_interval),
            ("discovery_interval", self.discovery_interval),
            ("listing_interval", self.listing_interval),
            ("resync_interval", self.resync_interval),
        ];
        for (name, value) in durations {
            if value.is_zero() {
                return Err(RegistryError::Invalid(format!(
                    "registry.servicecomb.{name} must be above zero"
                )));
            }
        }
        let counts = [
            ("heartbeat_batch", self.heartbeat_batch),
            ("find_batch", self.find_batch),
            ("max_concurrent_calls", self.max_concurrent_calls),
            ("max_response_bytes", self.max_response_bytes),
        ];
        for (name, value) in counts {
            if value == 0 {
                return Err(RegistryError::Invalid(format!(
                    "registry.servicecomb.{name} must be above zero"
                )));
            }
        }
        self.dump_deadlines.validate()
    }
}

impl ServiceCombConfig {
    /// The daemon's settings for the SC described by the registry part of the configuration,
    /// polled as the sync settings ask. Settings the configuration does not expose keep their
    /// defaults or follow from the poll interval.
    pub fn from_config(registry: &RegistryConfig, sync: &SyncConfig) -> ServiceCombConfig {
        let mut sc = ServiceCombConfig::new(registry.addresses.clone());
        sc.credentials = registry.credentials.clone();
        sc.tls = registry.tls.clone();
        sc.tenants = registry.tenants.clone();
        if let Some(confirm) = registry.confirm_removal {
            sc.confirm_removal = confirm;
        }
        sc.poll_interval = sync.poll_interval;
        sc.resync_interval = sync.resync_interval;
        // New services are found by the statistics within a poll; without them, by listing
        // every five polls. With them, a listing every ten polls catches the rest.
        sc.discovery_interval = sync.poll_interval * 5;
        sc.listing_interval = sync.poll_interval * 10;
        // 10 000 copies renewed in two calls per heartbeat period.
        sc.heartbeat_batch = 5_000;
        sc
    }
}

impl Default for ServiceCombConfig {
    /// SC at its default address, `http://127.0.0.1:30100`.
    fn default() -> ServiceCombConfig {
        let address =
            Url::parse("http://127.0.0.1:30100").unwrap_or_else(|_| unreachable!("constant URL"));
        ServiceCombConfig::new(vec![address])
    }
}

/// What SC's statistics count in one tenant: service names (`environment/app/name`,
/// versions folded, SC's shared services left out) and the instances of those services.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct TenantCounts {
    services: u64,
    instances: u64,
}

/// The ServiceComb adapter. Cheap to clone; clones share the HTTP client and counters.
#[derive(Clone)]
pub struct ServiceComb {
    inner: Arc<Inner>,
}

/// What the adapter and its feeds share.
struct Inner {
    config: ServiceCombConfig,
    client: ScClient,
    internal: InternalServices,
    metrics: ServiceCombMetrics,
    /// Tenants this adapter wrote into, so that feeds watch them before the next dump.
    written_tenants: Mutex<BTreeSet<Tenant>>,
    /// What SC adds to every instance, left out of what the adapter reports.
    added: AddedProperties,
}

impl ServiceComb {
    /// An adapter for the SC described by `config`. Does not contact SC.
    ///
    /// # Errors
    /// [`RegistryError::Invalid`] for an unusable configuration.
    pub fn new(config: ServiceCombConfig) -> Result<ServiceComb, RegistryError> {
        config.validate()?;
        let metrics = ServiceCombMetrics::default();
        let client = ScClient::new(
            config.addresses.clone(),
            config.timeout,
            config.failback_after,
            config.max_response_bytes,
            metrics.clone(),
            config
                .credentials
                .as_ref()
                .map(|c| Auth::new(c.user.clone(), c.password.clone())),
            &config.tls,
        )?;
        Ok(ServiceComb {
            inner: Arc::new(Inner {
                internal: InternalServices::new(&config.shared_services),
                config,
                client,
                metrics,
                written_tenants: Mutex::new(BTreeSet::new()),
                added: AddedProperties::default(),
            }),
        })
    }

    /// The adapter the daemon runs: [`ServiceCombConfig::from_config`], with its counters
    /// registered in `metrics`. Does not contact SC.
    ///
    /// # Errors
    /// [`RegistryError::Invalid`] for an unusable configuration.
    pub fn build(
        registry: &RegistryConfig,
        sync: &SyncConfig,
        metrics: &Metrics,
    ) -> Result<ServiceComb, RegistryError> {
        let sc = ServiceComb::new(ServiceCombConfig::from_config(registry, sync))?;
        sc.metrics().register(metrics);
        Ok(sc)
    }

    /// The adapter's counters; [`ServiceCombMetrics::register`] exports them.
    pub fn metrics(&self) -> &ServiceCombMetrics {
        &self.inner.metrics
    }

    /// The address the next call will go to first.
    pub fn active_address(&self) -> Url {
        self.inner.client.active_address()
    }
}

impl Inner {
    /// Sends one call.
    async fn call(&self, request: Request<'_>) -> Result<Vec<u8>, Fault> {
        self.client.send(request).await
    }

    /// Logs and counts an error leaving the adapter. `NotFound` is an ordinary answer
    /// (callers often only want something gone), so it is logged at debug level.
    fn record<T>(
        &self,
        op: &'static str,
        result: Result<T, RegistryError>,
    ) -> Result<T, RegistryError> {
        if let Err(error) = &result {
            self.metrics.count_error(error.kind());
            match error {
                RegistryError::NotFound(_) => {
                    debug!(op, kind = error.kind(), %error, "registry call failed")
                }
                _ => warn!(op, kind = error.kind(), %error, "registry call failed"),
            }
        }
        result
    }

    /// Remembers that the adapter wrote into `tenant`.
    fn note_tenant(&self, tenant: &Tenant) {
        let mut tenants = self
            .written_tenants
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if tenants.len() < MAX_WRITTEN_TENANTS && !tenants.contains(tenant) {
            tenants.insert(tenant.clone());
        }
    }

    fn written_tenants(&self) -> BTreeSet<Tenant> {
        self.written_tenants
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Every service and instance of every tenant (§5.2).
    async fn dump(&self) -> Result<Snapshot, RegistryError> {
        let config = &self.config;
        let mut snapshot = dump::read(
            &self.client,
            config.dump_deadlines,
            config.max_response_bytes,
            &self.internal,
        )
        .await?;
        // What SC adds to every instance is learnt from SC's own instances.
        self.learn_added().await;
        for instance in &mut snapshot.instances {
            self.added.strip(instance);
        }
        Ok(snapshot)
    }

    /// SC's own instances (`GET …/health`, §1.5), or `None` when SC has none or does not
    /// answer with them.
    ///
    /// # Errors
    /// The call's failure.
    async fn own_instances(&self) -> Result<Option<Vec<WireInstance>>, Fault> {
        let home = Tenant::default_tenant();
        match self
            .call(Request::new("health", Method::GET, &home, &["health"]))
            .await
        {
            Ok(body) => Ok(Some(
                parse::<InstancesReply>("health", &body)
                    .map_err(Fault::new)?
                    .instances,
            )),
            Err(fault) if fault.is(client::SERVICE_NOT_EXIST) => Ok(None),
            Err(fault) => Err(fault),
        }
    }

    /// Learns what SC adds to every instance ([`AddedProperties::learn`]); a failure only
    /// leaves what was learnt before.
    async fn learn_added(&self) {
        match self.own_instances().await {
            Ok(Some(own)) => self.added.learn(own.iter().map(|i| &i.properties)),
            Ok(None) => {}
            Err(fault) => debug!(error = %fault.error, "cannot read SC's own instances"),
        }
    }

    /// The services of one tenant (§2.3), by id, without SC's own.
    async fn list_services(
        &self,
        tenant: &Tenant,
    ) -> Result<BTreeMap<String, Service>, RegistryError> {
        let body = self
            .call(Request::new(
                "list_services",
                Method::GET,
                tenant,
                &["microservices"],
            ))
            .await?;
        let reply: ServicesReply = parse("list_services", &body)?;
        Ok(convert::services_of_tenant(
            tenant,
            reply.services,
            &self.internal,
        ))
    }

    /// SC's counts of `tenant`'s services (names, versions folded) and instances, from
    /// `GET /v4/<project>/govern/microservices?options=statistics`: one small answer, read
    /// from SC's cache, that tells the feed when a tenant holds something it has not seen.
    async fn statistics(&self, tenant: &Tenant) -> Result<TenantCounts, RegistryError> {
        let query = [("options", "statistics")];
        let body = self
            .call(
                Request::new("feed_statistics", Method::GET, tenant, &["microservices"])
                    .govern()
                    .query(&query),
            )
            .await?;
        let reply: GovernReply = parse("feed_statistics", &body)?;
        let statistics = reply.statistics.ok_or_else(|| {
            RegistryError::Protocol("feed_statistics: the answer has no statistics".into())
        })?;
        Ok(TenantCounts {
            services: statistics.services.count,
            instances: statistics.instances.count,
        })
    }

    /// `service` exists under another id, or its id is taken: find which (§2.5, §2.2).
    async fn existing_service(&self, service: &Service) -> Result<String, RegistryError> {
        // SC's create defaults (§2.1), so that the lookup uses the key SC stored.
        let app = if service.app.is_empty() {
            "default"
        } else {
            &service.app
        };
        let version = if service.version.is_empty() {
            "0.0.1"
        } else {
            &service.version
        };
        let mut query = vec![
            ("type", "microservice"),
            ("appId", app),
            ("serviceName", &service.name),
            ("version", version),
        ];
        if !service.environment.is_empty() {
            query.push(("env", &service.environment));
        }
        let request =
            Request::new("existence", Method::GET, &service.tenant, &["existence"]).query(&query);
        let taken = || {
            RegistryError::Refused(Refusal {
                field: "create_service".into(),
                reason: "alias_conflict",
                detail: format!(
                    "service {app}/{}/{version} of {}: SC reports a conflict (id {:?} or alias \
                     {:?} used by another service)",
                    service.name, service.tenant, service.service_id, service.alias
                ),
            })
        };
        let id = match self.call(request).await {
            Ok(body) => parse::<ServiceIdReply>("existence", &body)?.service_id,
            Err(fault) if fault.error.is_not_found() => return Err(taken()),
            Err(fault) => return Err(fault.into()),
        };
        // Existence also matches aliases: check that the service found is this one.
        let body = self
            .call(Request::new(
                "get_service",
                Method::GET,
                &service.tenant,
                &["microservices", &id],
            ))
            .await?;
        let found = parse::<ServiceReply>("get_service", &body)?
            .service
            .ok_or_else(|| {
                RegistryError::Protocol("get_service: answer without a service".into())
            })?;
        let same = found.app_id == app
            && found.service_name == service.name
            && found.version == version
            && found.environment == service.environment;
        if same { Ok(id) } else { Err(taken()) }
    }
}

/// Reads a JSON answer.
///
/// # Errors
/// [`RegistryError::Protocol`] when `body` is not the expected JSON.
fn parse<T: DeserializeOwned>(op: &str, body: &[u8]) -> Result<T, RegistryError> {
    serde_json::from_slice(body)
        .map_err(|e| RegistryError::Protocol(format!("{op}: malformed answer: {e}")))
}

/// Serializes a request body (cannot fail for the adapter's own types, but never panics).
fn to_json<T: serde::Serialize>(op: &str, value: &T) -> Result<Vec<u8>, RegistryError> {
    serde_json::to_vec(value)
        .map_err(|e| RegistryError::Invalid(format!("{op}: cannot encode the request: {e}")))
}

/// Runs `op` and records its error, if any.
async fn observed<T>(
    inner: &Inner,
    op: &'static str,
    work: impl Future<Output = Result<T, RegistryError>>,
) -> Result<T, RegistryError> {
    let result = work.await;
    inner.record(op, result)
}

#[async_trait]
impl Registry for ServiceComb {
    /// The version comes from `GET /v4/default/registry/version`. The id is the smallest
    /// instance id of SC's own instances (`GET /v4/default/registry/health`, §1.5): stable
    /// while that SC process runs, shared by every address of the same SC cluster. When SC
    /// has not registered itself, the id is `addresses:` followed by the configured
    /// addresses, sorted and comma-separated.
    async fn identity(&self) -> Result<RegistryIdentity, RegistryError> {
        let inner = &self.inner;
        observed(inner, "identity", async {
            let home = Tenant::default_tenant();
            let body = inner
                .call(Request::new("version", Method::GET, &home, &["version"]))
                .await?;
            let version = parse::<VersionReply>("version", &body)?.version;
            let id = match inner.own_instances().await {
                Ok(Some(own)) => {
                    inner.added.learn(own.iter().map(|i| &i.properties));
                    own.into_iter()
                        .map(|i| i.instance_id)
                        .filter(|id| !id.is_empty())
                        .min()
                }
                Ok(None) => None,
                Err(fault) if fault.is(client::UNHEALTHY) => {
                    return Err(RegistryError::Unavailable(format!(
                        "SC reports itself unhealthy: {}",
                        fault.error
                    )));
                }
                Err(fault) => return Err(fault.into()),
            };
            let id = id.unwrap_or_else(|| {
                let mut addresses: Vec<&str> =
                    inner.client.addresses().iter().map(Url::as_str).collect();
                addresses.sort_unstable();
                format!("addresses:{}", addresses.join(","))
            });
            Ok(RegistryIdentity {
                kind: KIND.to_owned(),
                version,
                id,
            })
        })
        .await
    }

    async fn snapshot(&self) -> Result<Snapshot, RegistryError> {
        observed(&self.inner, "snapshot", self.inner.dump()).await
    }

    fn change_feed(&self) -> Box<dyn ChangeFeed> {
        let feed = Box::new(feed::ScFeed::new(self.inner.clone()));
        Box::new(contracts::SummaryFeed::new(self.inner.clone(), feed))
    }

    /// SC's rules for services ([`rules::check_service`]).
    fn accepts_service(&self, service: &Service) -> Result<(), Refusal> {
        rules::check_service(service)
    }

    /// SC's rules for instances ([`rules::check_instance`]).
    fn accepts_instance(&self, instance: &Instance) -> Result<(), Refusal> {
        rules::check_instance(instance)
    }

    /// Creates the service under its chosen id (§2.1). SC answers an existing service
    /// (same tenant, environment, app, name, version) with its id when no id or the same id
    /// is asked for; with `400010` otherwise, and then the existing service is looked up
    /// (§2.5) and its id returned.
    async fn ensure_service(&self, service: &Service) -> Result<String, RegistryError> {
        let inner = &self.inner;
        observed(inner, "ensure_service", async {
            let body = to_json(
                "ensure_service",
                &CreateServiceRequest {
                    service: convert::service_to_wire(service),
                },
            )?;
            let request = Request::new(
                "create_service",
                Method::POST,
                &service.tenant,
                &["microservices"],
            )
            .json(body);
            let id = match inner.call(request).await {
                Ok(body) => parse::<ServiceIdReply>("create_service", &body)?.service_id,
                Err(fault) if fault.is(client::SERVICE_ALREADY_EXISTS) => {
                    inner.existing_service(service).await?
                }
                Err(fault) => return Err(fault.into()),
            };
            if id.is_empty() {
                return Err(RegistryError::Protocol(
                    "create_service: answer without a serviceId".into(),
                ));
            }
            inner.note_tenant(&service.tenant);
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
        let inner = &self.inner;
        observed(inner, "set_service_properties", async {
            let body = to_json("set_service_properties", &PropertiesRequest { properties })?;
            let path = ["microservices", service_id, "properties"];
            inner
                .call(Request::new("set_service_properties", Method::PUT, tenant, &path).json(body))
                .await?;
            Ok(())
        })
        .await
    }

    async fn schemas(
        &self,
        tenant: &Tenant,
        service_id: &str,
    ) -> Result<Vec<Schema>, RegistryError> {
        let inner = &self.inner;
        observed(
            inner,
            "schemas",
            contracts::schemas(inner, tenant, service_id, true),
        )
        .await
    }

    async fn put_schema(
        &self,
        tenant: &Tenant,
        service_id: &str,
        schema: &Schema,
    ) -> Result<(), RegistryError> {
        let inner = &self.inner;
        observed(
            inner,
            "put_schema",
            contracts::put_schema(inner, tenant, service_id, schema),
        )
        .await
    }

    async fn set_service_tags(
        &self,
        tenant: &Tenant,
        service_id: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<(), RegistryError> {
        let inner = &self.inner;
        observed(
            inner,
            "set_service_tags",
            contracts::set_tags(inner, tenant, service_id, tags),
        )
        .await
    }

    async fn set_service_rules(
        &self,
        tenant: &Tenant,
        service_id: &str,
        rules: &[AccessRule],
    ) -> Result<(), RegistryError> {
        let inner = &self.inner;
        observed(
            inner,
            "set_service_rules",
            contracts::set_rules(inner, tenant, service_id, rules),
        )
        .await
    }

    /// §3.1 with the chosen instance id. SC treats a known id as a heartbeat and keeps the
    /// stored data.
    async fn register(&self, instance: &Instance) -> Result<(), RegistryError> {
        let inner = &self.inner;
        observed(inner, "register", async {
            if instance.instance_id.is_empty() {
                return Err(RegistryError::Invalid(
                    "register: the instance id is empty".into(),
                ));
            }
            let body = to_json(
                "register",
                &RegisterInstanceRequest {
                    instance: convert::instance_to_wire(instance),
                },
            )?;
            let path = ["microservices", instance.service_id.as_str(), "instances"];
            let reply = inner
                .call(Request::new("register", Method::POST, &instance.tenant, &path).json(body))
                .await?;
            let id = parse::<InstanceIdReply>("register", &reply)?.instance_id;
            if id != instance.instance_id {
                return Err(RegistryError::Protocol(format!(
                    "register: SC stored instance {id:?} instead of {:?}",
                    instance.instance_id
                )));
            }
            inner.note_tenant(&instance.tenant);
            inner.added.note_written(
                &instance.service_id,
                &instance.instance_id,
                &instance.properties,
            );
            Ok(())
        })
        .await
    }

    async fn heartbeat(&self, instances: &[InstanceRef]) -> Result<HeartbeatReport, RegistryError> {
        observed(
            &self.inner,
            "heartbeat",
            heartbeat::heartbeat(&self.inner, instances),
        )
        .await
    }

    async fn set_status(&self, instance: &InstanceRef, status: &str) -> Result<(), RegistryError> {
        let inner = &self.inner;
        observed(inner, "set_status", async {
            let path = [
                "microservices",
                &instance.service_id,
                "instances",
                &instance.instance_id,
                "status",
            ];
            let query = [("value", status)];
            inner
                .call(
                    Request::new("set_status", Method::PUT, &instance.tenant, &path).query(&query),
                )
                .await?;
            Ok(())
        })
        .await
    }

    async fn set_instance_properties(
        &self,
        instance: &InstanceRef,
        properties: &BTreeMap<String, String>,
    ) -> Result<(), RegistryError> {
        let inner = &self.inner;
        observed(inner, "set_instance_properties", async {
            let body = to_json("set_instance_properties", &PropertiesRequest { properties })?;
            let path = [
                "microservices",
                &instance.service_id,
                "instances",
                &instance.instance_id,
                "properties",
            ];
            inner
                .call(
                    Request::new(
                        "set_instance_properties",
                        Method::PUT,
                        &instance.tenant,
                        &path,
                    )
                    .json(body),
                )
                .await?;
            inner
                .added
                .note_written(&instance.service_id, &instance.instance_id, properties);
            Ok(())
        })
        .await
    }

    async fn unregister(&self, instance: &InstanceRef) -> Result<(), RegistryError> {
        let inner = &self.inner;
        observed(inner, "unregister", async {
            let path = [
                "microservices",
                &instance.service_id,
                "instances",
                &instance.instance_id,
            ];
            inner
                .call(Request::new(
                    "unregister",
                    Method::DELETE,
                    &instance.tenant,
                    &path,
                ))
                .await?;
            inner
                .added
                .forget(&instance.service_id, &instance.instance_id);
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Disappearances are confirmed only where a lagging sibling node can fake them: with one
    /// address a deregistration is reported at once.
    #[test]
    fn removals_are_confirmed_only_with_several_addresses() {
        let url = |port: u16| Url::parse(&format!("http://127.0.0.1:{port}")).expect("url");
        assert_eq!(
            ServiceCombConfig::new(vec![url(30100)]).confirm_removal,
            Duration::ZERO
        );
        assert_eq!(
            ServiceCombConfig::new(vec![url(30100), url(30101)]).confirm_removal,
            Duration::from_secs(1)
        );
    }
}

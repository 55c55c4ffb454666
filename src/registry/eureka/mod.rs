//! The Netflix Eureka adapter: [`Eureka`] implements [`Registry`] for one Eureka cluster,
//! reached through one or more base URLs (`http://host:8761/eureka`).
//!
//! Written from `eureka-rest-api.md` (the "reference"; § numbers below point into it).
//!
//! # Layout
//! - `mod.rs`: configuration, the adapter and its operations.
//! - `client.rs`: HTTP, JSON headers, failover between addresses.
//! - `wire.rs`: Eureka's JSON, read leniently (private to the adapter).
//! - `convert.rs`: the mapping between the model and Eureka records, both ways.
//! - `feed.rs`: the change feed (`GET /apps`, then `GET /apps/delta` checked by the hash).
//! - `metrics.rs`: the adapter's counters.
//! - `rules.rs`: what Eureka requires ([`Registry::accepts_service`],
//!   [`Registry::accepts_instance`]).
//!
//! # What Eureka is not
//! Eureka has no services at rest: a service exists while it has instances, and its id is
//! derived from what names it (`convert::service_id`). [`Registry::ensure_service`] makes no
//! call: it records the service in the adapter's table so that instances can be registered
//! under it. Service properties, schemas, tags and access rules cannot be carried
//! (`set_service_properties` does nothing; the others keep the trait's refusals), and
//! `ensure_service` says so once per service in the log. Eureka has no batch renewal: each
//! copy is renewed with its own call, many in flight at once, and a copy Eureka lost is
//! registered again at once from the body kept for it (the Eureka client's own rule, §3).
//!
//! # Status changes
//! Eureka's status rules (§4.3) make a re-registration unable to leave `OUT_OF_SERVICE`,
//! and a renewal never changes the status. So `OUT_OF_SERVICE` (ServiceComb's
//! `OUTOFSERVICE` and `TESTING`) is always set as an override (`PUT …/status`): a record
//! without syncer's override is registered `STARTING` first (its own `STARTING` wins over
//! any override, while a new record registered `OUT_OF_SERVICE` outright would get none and
//! nothing could lift it); one with it is registered `OUT_OF_SERVICE`, so a property change
//! never shows it `STARTING`. `UP` first lifts an override (`DELETE …/status?value=UP`), is
//! registered, then pinned with `PUT …/status?value=UP` (a no-op unless the record is stuck
//! `OUT_OF_SERVICE` without an override, which a registration cannot leave). `DOWN` and
//! `STARTING` are registered (a record's own `DOWN` wins over any override).

mod client;
mod convert;
mod feed;
mod metrics;
pub mod rules;
mod wire;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use reqwest::{Method, StatusCode};
use tracing::{debug, info, warn};
use url::Url;

pub use self::convert::{service_entry, service_id};
pub use self::metrics::EurekaMetrics;

use self::client::{Answer, EurekaClient, Request};
use self::convert::Decoded;
use super::{
    ChangeFeed, HeartbeatReport, Instance, InstanceRef, Refusal, Registry, RegistryError,
    RegistryIdentity, Service, Snapshot, Tenant,
};
use crate::config::{Credentials, RegistryConfig, SyncConfig};
use crate::registry::tls::RegistryTls;
use crate::telemetry::Metrics;

/// The adapter kind reported by [`Registry::identity`].
pub const KIND: &str = "eureka";

/// At most this many instances are remembered as logged for an `UNKNOWN` status.
const MAX_LOGGED: usize = 10_000;

/// How to reach and poll one Eureka cluster.
#[derive(Debug, Clone)]
pub struct EurekaConfig {
    /// Base URLs of the same Eureka cluster (`http://host:8761/eureka`, no trailing `/`),
    /// preferred first. Calls go to the first; on a connection failure, timeout or 5xx they
    /// move to the next.
    pub addresses: Vec<String>,
    /// Bound of one HTTP attempt on one address. Default [`super::LONGEST_CALL`].
    pub timeout: Duration,
    /// How long calls stay on a fallback address before trying the preferred one again.
    /// Default 30 s.
    pub failback_after: Duration,
    /// Time between two delta reads of a change feed. Default 100 ms.
    pub poll_interval: Duration,
    /// Time between two full reads, each reported as a [`super::Change::Resync`]. Default 30 s.
    pub resync_interval: Duration,
    /// Most renewal calls in flight at once in one heartbeat. Default 32.
    pub heartbeat_concurrency: usize,
    /// Largest answer accepted, in bytes. Default 256 MiB.
    pub max_response_bytes: usize,
    /// HTTP basic credentials, for a Eureka behind Spring Security. Default none.
    pub credentials: Option<Credentials>,
    /// TLS of `https://` addresses. Default: the web PKI roots, no client certificate.
    pub tls: RegistryTls,
}

/// `url` as a Eureka base: an empty path (or `/`) gets Spring Cloud's `/eureka`, a trailing
/// `/` is dropped, query and fragment are left out.
pub fn normalise_address(url: &Url) -> String {
    let mut url = url.clone();
    url.set_query(None);
    url.set_fragment(None);
    if url.path().is_empty() || url.path() == "/" {
        url.set_path("/eureka");
    }
    url.as_str().trim_end_matches('/').to_owned()
}

impl EurekaConfig {
    /// Defaults for Eureka reached at `addresses` (normalised with [`normalise_address`]).
    pub fn new(addresses: &[Url]) -> EurekaConfig {
        EurekaConfig {
            addresses: addresses.iter().map(normalise_address).collect(),
            timeout: super::LONGEST_CALL,
            failback_after: Duration::from_secs(30),
            poll_interval: Duration::from_millis(100),
            resync_interval: Duration::from_secs(30),
            heartbeat_concurrency: 32,
            max_response_bytes: 256 << 20,
            credentials: None,
            tls: RegistryTls::default(),
        }
    }

    /// The daemon's settings for the Eureka of the registry part of the configuration
    /// (`--sc-addr`, one or more; `--sc-user`/`--sc-password` become HTTP basic
    /// credentials), polled as the sync settings ask.
    pub fn from_config(registry: &RegistryConfig, sync: &SyncConfig) -> EurekaConfig {
        let mut config = EurekaConfig::new(&registry.addresses);
        config.credentials = registry.credentials.clone();
        config.tls = registry.tls.clone();
        config.poll_interval = sync.poll_interval;
        config.resync_interval = sync.resync_interval;
        config
    }

    /// # Errors
    /// [`RegistryError::Invalid`] naming the first unusable setting.
    fn validate(&self) -> Result<(), RegistryError> {
        for (name, value) in [
            ("timeout", self.timeout),
            ("poll_interval", self.poll_interval),
            ("resync_interval", self.resync_interval),
        ] {
            if value.is_zero() {
                return Err(RegistryError::Invalid(format!(
                    "registry.eureka.{name} must be above zero"
                )));
            }
        }
        for (name, value) in [
            ("heartbeat_concurrency", self.heartbeat_concurrency),
            ("max_response_bytes", self.max_response_bytes),
        ] {
            if value == 0 {
                return Err(RegistryError::Invalid(format!(
                    "registry.eureka.{name} must be above zero"
                )));
            }
        }
        Ok(())
    }
}

/// What syncer last registered for an instance: enough to register it again.
#[derive(Debug, Clone)]
struct Kept {
    /// Shared with the adapter's service table (one body per service, not per copy).
    service: Arc<Service>,
    instance: Instance,
    /// The `lastDirtyTimestamp` of that registration, sent with every renewal.
    stamp: u64,
    /// Whether syncer's `OUT_OF_SERVICE` override is in place (set by `PUT …/status`, lifted
    /// by `DELETE …/status`, dropped by Eureka with the lease).
    oos_override: bool,
}

/// The Eureka adapter. Cheap to clone; clones share the client, tables and counters.
#[derive(Clone)]
pub struct Eureka {
    inner: Arc<Inner>,
}

/// What the adapter and its feeds share.
struct Inner {
    config: EurekaConfig,
    client: EurekaClient,
    metrics: EurekaMetrics,
    /// Services by local id: ensured by the engine or seen in reads. Records read share
    /// these bodies when theirs is equal, so 10 000 copies of 100 services hold 100 bodies.
    services: Mutex<HashMap<String, Arc<Service>>>,
    /// Service ids ensured per Eureka application, to tell when two share one.
    apps: Mutex<HashMap<String, BTreeSet<String>>>,
    /// Services whose uncarried parts were logged.
    logged_services: Mutex<HashSet<String>>,
    /// Instances whose `UNKNOWN` status was logged.
    logged_unknown: Mutex<HashSet<String>>,
    /// The last body registered per instance (only what syncer registered); shared, so a
    /// renewal takes it without copying.
    kept: Mutex<HashMap<InstanceRef, Arc<Kept>>>,
    /// The last `lastDirtyTimestamp` given out: stamps strictly increase.
    last_stamp: AtomicU64,
    /// Whether what a native Eureka instance loses in the model was logged.
    logged_native: std::sync::atomic::AtomicBool,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl Eureka {
    /// An adapter for the Eureka described by `config`. Does not contact Eureka.
    ///
    /// # Errors
    /// [`RegistryError::Invalid`] for an unusable configuration.
    pub fn new(config: EurekaConfig) -> Result<Eureka, RegistryError> {
        config.validate()?;
        let metrics = EurekaMetrics::default();
        let client = EurekaClient::new(
            config.addresses.clone(),
            config.timeout,
            config.failback_after,
            config.max_response_bytes,
            config.credentials.clone(),
            metrics.clone(),
            &config.tls,
        )?;
        Ok(Eureka {
            inner: Arc::new(Inner {
                config,
                client,
                metrics,
                services: Mutex::new(HashMap::new()),
                apps: Mutex::new(HashMap::new()),
                logged_services: Mutex::new(HashSet::new()),
                logged_unknown: Mutex::new(HashSet::new()),
                kept: Mutex::new(HashMap::new()),
                last_stamp: AtomicU64::new(0),
                logged_native: std::sync::atomic::AtomicBool::new(false),
            }),
        })
    }

    /// The adapter the daemon runs: [`EurekaConfig::from_config`], with its counters
    /// registered in `metrics`. Does not contact Eureka.
    ///
    /// # Errors
    /// [`RegistryError::Invalid`] for an unusable configuration.
    pub fn build(
        registry: &RegistryConfig,
        sync: &SyncConfig,
        metrics: &Metrics,
    ) -> Result<Eureka, RegistryError> {
        let eureka = Eureka::new(EurekaConfig::from_config(registry, sync))?;
        eureka.metrics().register(metrics);
        Ok(eureka)
    }

    /// The adapter's counters.
    pub fn metrics(&self) -> &EurekaMetrics {
        &self.inner.metrics
    }

    /// The base URL the next call will go to first.
    pub fn active_address(&self) -> String {
        self.inner.client.active_base().to_owned()
    }
}

/// Milliseconds since the Unix epoch.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or_default()
}

/// A 4xx/other answer the operation did not expect.
fn unexpected(op: &str, answer: &Answer) -> RegistryError {
    RegistryError::Protocol(format!(
        "{op}: unexpected status {} from {}: {}",
        answer.status,
        answer.base,
        wire::preview(&answer.body)
    ))
}

impl Inner {
    /// Logs and counts an error leaving the adapter (`NotFound` at debug level).
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

    /// A `lastDirtyTimestamp` above every one given out before and above `above`.
    fn next_stamp(&self, above: u64) -> u64 {
        let mut current = self.last_stamp.load(Ordering::Relaxed);
        loop {
            let next = now_ms().max(current + 1).max(above + 1);
            match self.last_stamp.compare_exchange_weak(
                current,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return next,
                Err(seen) => current = seen,
            }
        }
    }

    fn service(&self, service_id: &str) -> Option<Arc<Service>> {
        lock(&self.services).get(service_id).cloned()
    }

    /// Decodes one record; one with a status the model lacks is left out (logged once per
    /// instance). The record's service joins the table.
    fn decode_one(&self, record: &wire::WireInstance) -> Option<Decoded> {
        let Some(mut decoded) = convert::decode(record) else {
            let mut logged = lock(&self.logged_unknown);
            let key = format!("{}/{}", record.app, record.instance_id);
            if logged.len() < MAX_LOGGED && logged.insert(key) {
                info!(app = %record.app, instance = %record.instance_id, status = %record.status, "a Eureka instance with a status ServiceComb lacks is left out of the sync");
            }
            return None;
        };
        if !record.metadata.contains_key(convert::SERVICE_NAME)
            && !self.logged_native.swap(true, Ordering::Relaxed)
        {
            info!(app = %record.app, "native Eureka instances are mirrored with app id \"default\", version 0.0.1, the lower-cased application (or its VIP address in another case) as the service name, rest:// endpoints from ipAddr and the enabled ports, metadata as properties and leaseInfo as the health check; not carried: home/status/health-check URLs, dataCenterInfo, countryId, appGroupName/asgName, a VIP address other than the name, overriddenStatus");
        }
        let mut services = lock(&self.services);
        match services.get(&decoded.service.service_id) {
            Some(known) if **known == *decoded.service => decoded.service = known.clone(),
            Some(_) => {}
            None => {
                services.insert(decoded.service.service_id.clone(), decoded.service.clone());
            }
        }
        Some(decoded)
    }

    /// `GET /apps`, every record handed to `each` as it is read (the answer is never held
    /// as a whole document, see [`wire::apps_each`]).
    async fn fetch_each(
        &self,
        op: &'static str,
        each: &mut (dyn FnMut(wire::WireInstance) + Send),
    ) -> Result<wire::AppsHeader, RegistryError> {
        let answer = self
            .client
            .send(&Request::new(op, Method::GET, &["apps"]))
            .await?;
        match answer.status {
            StatusCode::OK => wire::apps_each(&answer.body, each)
                .map_err(|e| RegistryError::Protocol(format!("{op}: from {}: {e}", answer.base))),
            // §1.2.4: a lone server refuses reads for a while after start.
            StatusCode::FORBIDDEN => Err(RegistryError::Unavailable(format!(
                "{op}: {} refuses reads (403) for now",
                answer.base
            ))),
            _ => Err(unexpected(op, &answer)),
        }
    }

    /// The whole registry in the model.
    async fn read_snapshot(&self) -> Result<Snapshot, RegistryError> {
        let mut decoded = Vec::new();
        self.fetch_each("snapshot", &mut |r| decoded.extend(self.decode_one(&r)))
            .await?;
        Ok(snapshot_of(decoded))
    }

    /// Sets the status of a registered record with `PUT …/status?value=` (§4.2), which
    /// records an override unless the record has that status already.
    async fn put_status(
        &self,
        op: &'static str,
        app: &str,
        instance_id: &str,
        value: &str,
    ) -> Result<(), RegistryError> {
        let path = ["apps", app, instance_id, "status"];
        let query = [("value", value)];
        let answer = self
            .client
            .send(&Request::new(op, Method::PUT, &path).query(&query))
            .await?;
        match answer.status {
            StatusCode::OK => Ok(()),
            StatusCode::NOT_FOUND => Err(RegistryError::NotFound(format!(
                "{op}: instance {instance_id} of {app} vanished before its status was set"
            ))),
            _ => Err(unexpected(op, &answer)),
        }
    }

    /// Registers `kept` (§2): `POST /apps/{APP}` with a stamp above `kept.stamp`, then the
    /// status the rules of §4.3 would not give (see the module documentation), and keeps
    /// the body. `force_status` (a status change) also pins `UP` with `PUT …/status`, which
    /// lifts an `OUT_OF_SERVICE` that has no override to lift.
    async fn write_and_keep(
        &self,
        op: &'static str,
        mut kept: Kept,
        force_status: bool,
    ) -> Result<(), RegistryError> {
        let stamp = self.next_stamp(kept.stamp);
        let status = convert::eureka_status(&kept.instance.status);
        let out_of_service = status == convert::EUREKA_OUT_OF_SERVICE;
        // A new record sent OUT_OF_SERVICE would get no override, and nothing could lift it;
        // sent STARTING (its own STARTING beats any override) it gets one from the PUT. Where
        // our override is in place, OUT_OF_SERVICE keeps it without a moment of STARTING.
        let sent = match (out_of_service, kept.oos_override) {
            (true, false) => "STARTING",
            _ => status,
        };
        let body = serde_json::to_vec(&convert::encode(&kept.service, &kept.instance, sent, stamp))
            .map_err(|e| RegistryError::Invalid(format!("{op}: cannot encode: {e}")))?;
        let app = convert::app_name(&kept.service);
        let answer = self
            .client
            .send(&Request::new(op, Method::POST, &["apps", &app]).json(body))
            .await?;
        match answer.status {
            StatusCode::NO_CONTENT => {}
            StatusCode::BAD_REQUEST => {
                return Err(RegistryError::Invalid(format!(
                    "{op}: Eureka at {} refused instance {} of {app}: {}",
                    answer.base,
                    kept.instance.instance_id,
                    wire::preview(&answer.body)
                )));
            }
            _ => return Err(unexpected(op, &answer)),
        }
        kept.stamp = stamp;
        if out_of_service {
            self.put_status(
                op,
                &app,
                &kept.instance.instance_id,
                convert::EUREKA_OUT_OF_SERVICE,
            )
            .await?;
            kept.oos_override = true;
        } else if force_status && status == "UP" {
            self.put_status(op, &app, &kept.instance.instance_id, "UP")
                .await?;
            kept.oos_override = false;
        }
        lock(&self.kept).insert(kept.instance.reference(), Arc::new(kept));
        Ok(())
    }

    /// The body of `r` to change and register again: the kept one, else the record read
    /// from Eureka (`GET /apps/{APP}/{ID}`).
    async fn load(&self, op: &'static str, r: &InstanceRef) -> Result<Kept, RegistryError> {
        if let Some(kept) = lock(&self.kept).get(r).map(|k| Kept::clone(k)) {
            return Ok(kept);
        }
        let not_found = || RegistryError::NotFound(format!("{op}: instance {r}"));
        let service = self.service(&r.service_id).ok_or_else(not_found)?;
        let app = convert::app_name(&service);
        let path = ["apps", &app, &r.instance_id];
        let answer = self
            .client
            .send(&Request::new(op, Method::GET, &path))
            .await?;
        match answer.status {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => return Err(not_found()),
            StatusCode::FORBIDDEN => {
                return Err(RegistryError::Unavailable(format!(
                    "{op}: {} refuses reads (403)",
                    answer.base
                )));
            }
            _ => return Err(unexpected(op, &answer)),
        }
        let record = wire::instance_reply(&answer.body)
            .map_err(|e| RegistryError::Protocol(format!("{op}: {e}")))?;
        let decoded = convert::decode(&record)
            .filter(|d| d.service.service_id == r.service_id && d.service.tenant == r.tenant)
            .ok_or_else(not_found)?;
        Ok(Kept {
            service: decoded.service,
            instance: decoded.instance,
            stamp: record.last_dirty_ms.unwrap_or_default(),
            oos_override: record.overridden_status == convert::EUREKA_OUT_OF_SERVICE,
        })
    }

    /// Renews one instance (§3); on 404 registers it again from the kept body. `Ok(false)`:
    /// Eureka does not know it and nothing is kept to register it again.
    async fn renew(&self, r: &InstanceRef) -> Result<bool, RegistryError> {
        let kept = lock(&self.kept).get(r).cloned();
        let app = match (&kept, self.service(&r.service_id)) {
            (Some(k), _) => convert::app_name(&k.service),
            (None, Some(service)) => convert::app_name(&service),
            (None, None) => return Ok(false),
        };
        let stamp = kept.as_ref().map(|k| k.stamp.to_string());
        let mut query = vec![("status", "UP")];
        if let Some(stamp) = &stamp {
            query.push(("lastDirtyTimestamp", stamp));
        }
        let path = ["apps", &app, &r.instance_id];
        self.metrics.count_renewal();
        let answer = self
            .client
            .send(&Request::new("heartbeat", Method::PUT, &path).query(&query))
            .await?;
        match answer.status {
            // 409 comes only with the replication header (never sent); the lease was
            // renewed before the stamps were compared.
            StatusCode::OK | StatusCode::CONFLICT => Ok(true),
            StatusCode::NOT_FOUND => {
                let Some(kept) = kept else {
                    return Ok(false);
                };
                self.metrics.count_reregistration();
                debug!(instance = %r, "Eureka lost the instance: registered again");
                // A new lease: Eureka dropped any override with the old one.
                let kept = Kept {
                    oos_override: false,
                    ..Kept::clone(&kept)
                };
                match self.write_and_keep("reregister", kept, false).await {
                    Ok(()) => Ok(true),
                    Err(e) if e.is_not_found() => Ok(false),
                    Err(e) => Err(e),
                }
            }
            _ => Err(unexpected("heartbeat", &answer)),
        }
    }

    /// Logs once per service what Eureka cannot carry of it, and once per application that
    /// it holds services of several ServiceComb apps.
    fn note_service(&self, service: &Service, entry: &Service) {
        if lock(&self.logged_services).insert(entry.service_id.clone()) {
            let mut lost = Vec::new();
            let properties: Vec<&str> = service.properties.keys().map(String::as_str).collect();
            if !properties.is_empty() {
                lost.push(format!("properties {properties:?}"));
            }
            if !service.schemas.is_empty() || !service.schema_summaries.is_empty() {
                lost.push("schemas".to_owned());
            }
            if !service.tags.is_empty() {
                lost.push("tags".to_owned());
            }
            if !service.rules.is_empty() {
                lost.push("access rules".to_owned());
            }
            if !service.alias.is_empty() {
                lost.push("alias".to_owned());
            }
            if !service.description.is_empty() {
                lost.push("description".to_owned());
            }
            if !lost.is_empty() {
                info!(service = %service.name, app = %service.app, not_carried = %lost.join(", "), "Eureka holds no service data: these parts of the service are not carried");
            }
        }
        let app = convert::app_name(entry);
        let mut apps = lock(&self.apps);
        let ids = apps.entry(app.clone()).or_default();
        if ids.insert(entry.service_id.clone()) && ids.len() == 2 {
            info!(eureka_app = %app, "services of several ServiceComb apps (or versions) share this Eureka application; their instances stay apart through their sc.* metadata");
        }
    }
}

/// A snapshot of decoded records: every service with an instance, every instance.
fn snapshot_of(decoded: impl IntoIterator<Item = Decoded>) -> Snapshot {
    let mut services: BTreeMap<(Tenant, String), Arc<Service>> = BTreeMap::new();
    let mut instances = Vec::new();
    for d in decoded {
        services
            .entry((d.service.tenant.clone(), d.service.service_id.clone()))
            .or_insert(d.service);
        instances.push(d.instance);
    }
    Snapshot {
        services: services.into_values().map(Arc::unwrap_or_clone).collect(),
        instances,
    }
}

async fn observed<T>(
    inner: &Inner,
    op: &'static str,
    work: impl std::future::Future<Output = Result<T, RegistryError>>,
) -> Result<T, RegistryError> {
    let result = work.await;
    inner.record(op, result)
}

#[async_trait]
impl Registry for Eureka {
    /// `GET /apps`: an answer that is not `{"applications": …}` names the address and says
    /// it is not a Eureka server. Eureka reports no version (`unknown`); the id is
    /// `addresses:` and the sorted base URLs.
    async fn identity(&self) -> Result<RegistryIdentity, RegistryError> {
        let inner = &self.inner;
        observed(inner, "identity", async {
            let answer = inner
                .client
                .send(&Request::new("identity", Method::GET, &["apps"]))
                .await?;
            let url = format!("{}/apps", answer.base);
            match answer.status {
                StatusCode::OK => {
                    wire::apps_each(&answer.body, &mut |_| ()).map_err(|e| {
                        RegistryError::Protocol(format!(
                            "{} is not a Eureka server: GET {url} answered {e}",
                            answer.base
                        ))
                    })?;
                }
                StatusCode::FORBIDDEN => {
                    return Err(RegistryError::Unavailable(format!(
                        "Eureka at {} refuses reads (403) for now",
                        answer.base
                    )));
                }
                status => {
                    return Err(RegistryError::Protocol(format!(
                        "{} is not a Eureka server: GET {url} answered {status}: {}",
                        answer.base,
                        wire::preview(&answer.body)
                    )));
                }
            }
            let mut bases: Vec<&str> = inner.client.bases().iter().map(String::as_str).collect();
            bases.sort_unstable();
            bases.dedup();
            Ok(RegistryIdentity {
                kind: KIND.to_owned(),
                version: "unknown".to_owned(),
                id: format!("addresses:{}", bases.join(",")),
            })
        })
        .await
    }

    async fn snapshot(&self) -> Result<Snapshot, RegistryError> {
        observed(&self.inner, "snapshot", self.inner.read_snapshot()).await
    }

    fn change_feed(&self) -> Box<dyn ChangeFeed> {
        Box::new(feed::EurekaFeed::new(self.inner.clone()))
    }

    fn accepts_service(&self, service: &Service) -> Result<(), Refusal> {
        rules::check_service(service)
    }

    fn accepts_instance(&self, instance: &Instance) -> Result<(), Refusal> {
        rules::check_instance(instance)
    }

    /// No call: records the service and returns its derived id (`eureka-` + hash).
    async fn ensure_service(&self, service: &Service) -> Result<String, RegistryError> {
        let inner = &self.inner;
        observed(inner, "ensure_service", async {
            if let Err(refusal) = rules::check_service(service) {
                return Err(RegistryError::Refused(refusal));
            }
            let entry = convert::service_entry(service);
            inner.note_service(service, &entry);
            let id = entry.service_id.clone();
            lock(&inner.services).insert(id.clone(), Arc::new(entry));
            Ok(id)
        })
        .await
    }

    /// Eureka holds no service properties: nothing to write (see `ensure_service`'s log).
    async fn set_service_properties(
        &self,
        _tenant: &Tenant,
        _service_id: &str,
        _properties: &BTreeMap<String, String>,
    ) -> Result<(), RegistryError> {
        Ok(())
    }

    /// `POST /apps/{APP}` (§2): only 204 is success; 400 is `Invalid` with Eureka's text.
    async fn register(&self, instance: &Instance) -> Result<(), RegistryError> {
        let inner = &self.inner;
        observed(inner, "register", async {
            let service = inner
                .service(&instance.service_id)
                .filter(|s| s.tenant == instance.tenant)
                .ok_or_else(|| {
                    RegistryError::NotFound(format!(
                        "register: service {} of {} is not known",
                        instance.service_id, instance.tenant
                    ))
                })?;
            if let Err(refusal) = rules::check_instance(instance) {
                return Err(RegistryError::Invalid(format!("register: {refusal}")));
            }
            let mut instance = instance.clone();
            instance.version = service.version.clone();
            let oos_override = lock(&inner.kept)
                .get(&instance.reference())
                .is_some_and(|k| k.oos_override);
            let kept = Kept {
                service,
                instance,
                stamp: 0,
                oos_override,
            };
            inner.write_and_keep("register", kept, false).await
        })
        .await
    }

    /// One renewal per instance, `heartbeat_concurrency` in flight. An error is returned
    /// only when no renewal got an answer; otherwise failed ones are logged and retried at
    /// the next heartbeat.
    async fn heartbeat(&self, instances: &[InstanceRef]) -> Result<HeartbeatReport, RegistryError> {
        let inner = &self.inner;
        observed(inner, "heartbeat", async {
            let results: Vec<(InstanceRef, Result<bool, RegistryError>)> =
                futures::stream::iter(instances.iter().cloned())
                    .map(|r| async move {
                        let result = inner.renew(&r).await;
                        (r, result)
                    })
                    .buffer_unordered(inner.config.heartbeat_concurrency)
                    .collect()
                    .await;
            let mut report = HeartbeatReport::default();
            let mut first_error = None;
            let mut answered = 0usize;
            let mut failed = 0usize;
            for (r, result) in results {
                match result {
                    Ok(true) => answered += 1,
                    Ok(false) => {
                        answered += 1;
                        report.unknown.push(r);
                    }
                    Err(e) => {
                        failed += 1;
                        first_error.get_or_insert(e);
                    }
                }
            }
            report.unknown.sort();
            match first_error {
                Some(error) if answered == 0 => Err(error),
                Some(error) => {
                    warn!(failed, %error, "some Eureka renewals failed; they are tried again at the next heartbeat");
                    Ok(report)
                }
                None => Ok(report),
            }
        })
        .await
    }

    /// Through Eureka's override rules (§4.2–§4.4); see the module documentation.
    async fn set_status(&self, r: &InstanceRef, status: &str) -> Result<(), RegistryError> {
        let inner = &self.inner;
        observed(inner, "set_status", async {
            if !convert::MODEL_STATUSES.contains(&status) {
                return Err(RegistryError::Invalid(format!(
                    "set_status: {status:?} is none of {:?}",
                    convert::MODEL_STATUSES
                )));
            }
            let mut kept = inner.load("set_status", r).await?;
            if status == "UP" {
                let app = convert::app_name(&kept.service);
                let path = ["apps", &app, &r.instance_id, "status"];
                let query = [("value", "UP")];
                let answer = inner
                    .client
                    .send(&Request::new("set_status", Method::DELETE, &path).query(&query))
                    .await?;
                match answer.status {
                    StatusCode::OK => kept.oos_override = false,
                    StatusCode::NOT_FOUND => {
                        lock(&inner.kept).remove(r);
                        return Err(RegistryError::NotFound(format!("set_status: {r}")));
                    }
                    _ => return Err(unexpected("set_status", &answer)),
                }
            }
            kept.instance.status = status.to_owned();
            inner.write_and_keep("set_status", kept, true).await
        })
        .await
    }

    /// Registers again with the new metadata (never `PUT …/metadata`: §4.5 says the next
    /// registration wipes what it set).
    async fn set_instance_properties(
        &self,
        r: &InstanceRef,
        properties: &BTreeMap<String, String>,
    ) -> Result<(), RegistryError> {
        let inner = &self.inner;
        observed(inner, "set_instance_properties", async {
            let mut kept = inner.load("set_instance_properties", r).await?;
            kept.instance.properties = properties.clone();
            inner
                .write_and_keep("set_instance_properties", kept, false)
                .await
        })
        .await
    }

    /// `DELETE /apps/{APP}/{ID}` (§4.1); 404 is `NotFound`.
    async fn unregister(&self, r: &InstanceRef) -> Result<(), RegistryError> {
        let inner = &self.inner;
        observed(inner, "unregister", async {
            let service = lock(&inner.kept)
                .get(r)
                .map(|k| k.service.clone())
                .or_else(|| inner.service(&r.service_id));
            let Some(service) = service else {
                return Err(RegistryError::NotFound(format!("unregister: {r}")));
            };
            let app = convert::app_name(&service);
            let path = ["apps", &app, &r.instance_id];
            let answer = inner
                .client
                .send(&Request::new("unregister", Method::DELETE, &path))
                .await?;
            lock(&inner.kept).remove(r);
            match answer.status {
                StatusCode::OK | StatusCode::NO_CONTENT => Ok(()),
                StatusCode::NOT_FOUND => Err(RegistryError::NotFound(format!("unregister: {r}"))),
                _ => Err(unexpected("unregister", &answer)),
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_get_the_eureka_path_when_they_have_none() {
        let n = |text: &str| normalise_address(&Url::parse(text).expect("url"));
        assert_eq!(n("http://e:8761"), "http://e:8761/eureka");
        assert_eq!(n("http://e:8761/"), "http://e:8761/eureka");
        assert_eq!(n("http://e:8761/eureka/"), "http://e:8761/eureka");
        assert_eq!(n("http://e:8761/eureka/v2"), "http://e:8761/eureka/v2");
        assert_eq!(n("https://e/custom/?x=1"), "https://e/custom");
    }

    #[test]
    fn stamps_strictly_increase() {
        let eureka = Eureka::new(EurekaConfig::new(&[
            Url::parse("http://127.0.0.1:1").expect("url")
        ]))
        .expect("adapter");
        let a = eureka.inner.next_stamp(0);
        let b = eureka.inner.next_stamp(0);
        assert!(b > a);
        let far = a + 10_000_000;
        assert!(eureka.inner.next_stamp(far) > far);
    }

    #[test]
    fn unusable_settings_are_refused() {
        let mut config = EurekaConfig::new(&[Url::parse("http://127.0.0.1:1").expect("url")]);
        config.heartbeat_concurrency = 0;
        assert!(matches!(
            Eureka::new(config).err(),
            Some(RegistryError::Invalid(m)) if m.contains("heartbeat_concurrency")
        ));
    }
}

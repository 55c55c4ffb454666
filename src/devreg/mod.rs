//! The dev registry: an in-memory emulator of Apache ServiceComb Service Center's v4 REST API,
//! for development and tests. It speaks SC 1.4.8 by default and SC 2.x (v2.2.0) as a
//! [`Dialect`]; [`DevRegistryConfig::real_sc_1_4_8`] and [`DevRegistryConfig::real_sc_2`] turn on
//! every real-SC behaviour of each version.
//!
//! It follows `shared/reference/servicecomb-sc-v4-api.md` case by case: paths, JSON shapes
//! with Go's `omitempty`, error bodies, defaults and validation, leases, revisions, the admin
//! dump and the watch websockets with SC's dependency rules. Several registries can run in one
//! process; each owns its state, tasks and shutdown token, and all time comes from tokio.
//!
//! # Layout
//! - `state`: the data (tenants, services, instances, rules, watchers) and shared lookups.
//! - `http`: route table, tenant resolution, body limits, response framing, request logging.
//! - `services`, `instances`, `discovery`, `dependencies`, `admin`, `watch`, `schemas`,
//!   `tags`, `access` (black/white-list rules), `govern` (the governance listing's
//!   statistics): the endpoints.
//! - `lease`: lease expiry, the delete check window and self-preservation (SC 2.x).
//! - `auth`: SC 2.x RBAC (`POST /v4/token`, the bearer-token check of every other call).
//! - `retire`: SC 2.x's job deleting old versions without instances.
//! - `view`: the read-after-write lag (reads served from a copy that trails writes).
//! - `model`: the JSON shapes; `validate`: SC's validation rules; `version`: version rules;
//!   `errors`: SC's error codes and body.
//! - [`eureka`]: a separate emulator of Netflix Eureka's REST API (`dev-registry --kind eureka`).
//!
//! # Examples
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use syncer::devreg::{DevRegistryConfig, spawn};
//! use tokio_util::sync::CancellationToken;
//!
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let shutdown = CancellationToken::new();
//! let handle = spawn(listener, DevRegistryConfig::default(), shutdown.clone()).await;
//! println!("SC at {}", handle.url());
//! shutdown.cancel();
//! handle.stopped().await;
//! # Ok(()) }
//! ```

mod access;
mod admin;
mod auth;
mod dependencies;
mod discovery;
mod errors;
pub mod eureka;
mod govern;
mod http;
mod instances;
mod lease;
mod model;
mod retire;
mod schemas;
mod services;
mod state;
mod tags;
pub mod tls;
mod validate;
mod version;
mod view;
mod watch;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;
use tracing::warn;

use state::Registry;

/// Capacity of the delayed dependency queue (jobs waiting for `dependency_delay`).
const DEPENDENCY_QUEUE_CAPACITY: usize = 1024;

/// How the batch heartbeat (`PUT /v4/{project}/registry/heartbeats`) answers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HeartbeatStyle {
    /// SC 1.4.8: `200` with an empty body when every instance is known, otherwise
    /// `400`/`400017` without the per-instance list (known instances are still renewed).
    #[default]
    V1_4,
    /// SC 2.x: always `200` with `{"instances":[{serviceId, instanceId, errMessage?}]}`.
    V2,
}

/// Which Service Center the emulator behaves as, where 1.4.8 and 2.x differ.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Dialect {
    /// SC 1.4.8.
    #[default]
    V1_4_8,
    /// SC 2.x as of v2.2.0: find ignores `version`; push health checks raised to at least
    /// `interval` 5 s / `times` 3; quota and service lookup before the re-register shortcut;
    /// inner properties on every instance; exact-version existence; the service list hides
    /// SC's own service from `default/default` unless `withShared=true`; the retire job.
    V2,
}

/// SC 2.x's built-in RBAC: one account; every call but `/v4/token`, version and health needs
/// `Authorization: Bearer {token}`.
#[derive(Clone, Debug)]
pub struct RbacConfig {
    /// Account name (SC's initial account is `root`).
    pub user: String,
    /// Its password.
    pub password: String,
    /// Lifetime of a token whose login body gives no `tokenExpirationTime`. SC's default is
    /// 12 h; tests shorten it to watch a refresh.
    pub token_ttl: Duration,
}

impl RbacConfig {
    /// SC's default token lifetime (`DefaultTokenExpirationDuration`).
    pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(12 * 3600);

    /// An account with SC's default token lifetime.
    pub fn new(user: impl Into<String>, password: impl Into<String>) -> Self {
        RbacConfig {
            user: user.into(),
            password: password.into(),
            token_ttl: Self::DEFAULT_TOKEN_TTL,
        }
    }
}

/// Settings of one dev registry.
#[derive(Clone, Debug)]
pub struct DevRegistryConfig {
    /// Version reported by `/version`, the dump and SC's own service. Default `1.4.8`.
    pub version: String,
    /// The SC version whose behaviour differences are emulated. Default [`Dialect::V1_4_8`].
    pub dialect: Dialect,
    /// Seed SC's own `SERVICECENTER` service and instance in `default/default` (§1.5), as SC
    /// does at start. Default `true`.
    pub self_register: bool,
    /// Answer style of the batch heartbeat (§3.8). Default [`HeartbeatStyle::V1_4`].
    pub heartbeat_style: HeartbeatStyle,
    /// The 2 s check window before an instance deletion (unregister or expiry) becomes
    /// visible to find/list/get, the dump and watchers (§4): SC 1.4.0-1.4.4 and 2.x, not
    /// 1.4.5-1.4.8. Default `false`.
    pub delete_check_window: bool,
    /// SC's self-preservation (§4; same versions as the check window): when ≥ 80 % of more
    /// than 5 instances are pending deletion, keep serving them for up to their TTL. Works
    /// through the check window, so it implies it. Default `false`.
    pub self_preservation: bool,
    /// Multiplies every lease TTL (`interval × (times + 1)` seconds), e.g. `0.05` turns the
    /// default 120 s into 6 s. Default `1.0`.
    pub lease_scale: f64,
    /// Delay before a dependency rule change (PUT/POST dependencies, implicit rules of finds,
    /// service deletion) takes effect, as SC's asynchronous dependency queue. Zero applies
    /// rules before the request returns. Default zero.
    pub dependency_delay: Duration,
    /// Instances per tenant before `400100` (SC's default `QUOTA_INSTANCE`, 150 000).
    pub instance_quota: usize,
    /// SC 2.x's `registry.instance.properties`: added to the properties of every instance
    /// at register, properties update and heartbeat ([`Dialect::V2`] only). Default empty.
    pub inner_properties: BTreeMap<String, String>,
    /// Period of the retire job ([`Dialect::V2`] only; SC runs it daily, `0 1 * * *`).
    /// Default 24 h.
    pub retire_period: Duration,
    /// Versions of each service the retire job keeps (`registry.service.retire.reserve`).
    /// Default 3.
    pub retire_reserve: usize,
    /// RBAC with one account, `None` for none. Default `None`.
    pub rbac: Option<RbacConfig>,
    /// Read-after-write lag: find, list, get and the dump are served from a copy of the data
    /// that trails writes by this much, as SC serves them from a cache fed by an etcd watch.
    /// Zero reads the live data. Default zero.
    pub read_lag: Duration,
    /// Serve HTTPS with this configuration ([`tls::server_config`]); `None` serves plain
    /// HTTP. Default `None`.
    pub tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
}

impl Default for DevRegistryConfig {
    fn default() -> Self {
        DevRegistryConfig {
            version: "1.4.8".to_owned(),
            dialect: Dialect::V1_4_8,
            self_register: true,
            heartbeat_style: HeartbeatStyle::V1_4,
            delete_check_window: false,
            self_preservation: false,
            lease_scale: 1.0,
            dependency_delay: Duration::ZERO,
            instance_quota: 150_000,
            inner_properties: BTreeMap::new(),
            retire_period: Duration::from_secs(24 * 3600),
            retire_reserve: 3,
            rbac: None,
            read_lag: Duration::ZERO,
            tls: None,
        }
    }
}

impl DevRegistryConfig {
    /// Real SC 1.4.8: asynchronous dependency rules (200 ms); no delete check window and no
    /// self-preservation (both left SC in 1.4.5).
    pub fn real_sc_1_4_8() -> Self {
        DevRegistryConfig {
            dependency_delay: Duration::from_millis(200),
            ..Self::default()
        }
    }

    /// Real SC 2.x (v2.2.0): the [`Dialect::V2`] differences, the 2.x batch heartbeat
    /// answer, the delete check window, self-preservation and asynchronous dependency rules.
    /// RBAC, inner properties and the read lag stay off until set.
    pub fn real_sc_2() -> Self {
        DevRegistryConfig {
            version: "2.2.0".to_owned(),
            dialect: Dialect::V2,
            heartbeat_style: HeartbeatStyle::V2,
            delete_check_window: true,
            self_preservation: true,
            dependency_delay: Duration::from_millis(200),
            ..Self::default()
        }
    }

    /// Whether the 2.x dialect is on.
    pub fn is_v2(&self) -> bool {
        self.dialect == Dialect::V2
    }
}

/// A running dev registry: its address and a way to wait for it to stop. Cheap to clone.
#[derive(Clone, Debug)]
pub struct DevRegistryHandle {
    addr: SocketAddr,
    tracker: TaskTracker,
    tls: bool,
}

impl DevRegistryHandle {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ip:port` (`https://` when it serves TLS), the registry address to give
    /// clients.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Waits until the server and every task of the registry have finished (after the
    /// shutdown token was cancelled).
    pub async fn stopped(&self) {
        self.tracker.wait().await;
    }
}

/// Starts a dev registry on `listener` and returns at once; it runs until `shutdown` is
/// cancelled.
pub async fn spawn(
    listener: TcpListener,
    config: DevRegistryConfig,
    shutdown: CancellationToken,
) -> DevRegistryHandle {
    let addr = listener
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)));
    let tracker = TaskTracker::new();
    let tls = config.tls.clone();
    let delay = config.dependency_delay;
    let (dep_tx, dep_rx) = if delay.is_zero() {
        (None, None)
    } else {
        let (tx, rx) = mpsc::channel(DEPENDENCY_QUEUE_CAPACITY);
        (Some(tx), Some(rx))
    };
    let reg = Arc::new(Registry::new(
        config,
        addr,
        dep_tx,
        shutdown.clone(),
        tracker.clone(),
    ));
    tracker.spawn(lease::lease_loop(reg.clone()));
    if reg.config.is_v2() {
        tracker.spawn(retire::retire_loop(reg.clone()));
    }
    if !reg.config.read_lag.is_zero() {
        tracker.spawn(view::snapshot_loop(reg.clone()));
    }
    if let Some(rx) = dep_rx {
        tracker.spawn(dependencies::dependency_loop(reg.clone(), rx, delay));
    }
    let app = Router::new().fallback(http::dispatch).with_state(reg);
    let serves_tls = tls.is_some();
    tracker.spawn(async move {
        let stop = shutdown.cancelled_owned();
        let served = match tls {
            Some(tls) => {
                axum::serve(tls::TlsListener::new(listener, tls), app)
                    .with_graceful_shutdown(stop)
                    .await
            }
            None => {
                axum::serve(listener, app)
                    .with_graceful_shutdown(stop)
                    .await
            }
        };
        if let Err(e) = served {
            warn!(error = %e, "dev registry server failed");
        }
    });
    tracker.close();
    DevRegistryHandle {
        addr,
        tracker,
        tls: serves_tls,
    }
}

/// A dev registry that owns its shutdown: stopped when dropped. Handy in tests and demos.
#[derive(Debug)]
pub struct DevRegistry {
    handle: DevRegistryHandle,
    shutdown: CancellationToken,
    _guard: DropGuard,
}

impl DevRegistry {
    /// Binds `127.0.0.1:0` and starts a registry with `config`.
    ///
    /// # Errors
    /// When the port cannot be bound.
    pub async fn start(config: DevRegistryConfig) -> std::io::Result<DevRegistry> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let shutdown = CancellationToken::new();
        let handle = spawn(listener, config, shutdown.clone()).await;
        Ok(DevRegistry {
            handle,
            _guard: shutdown.clone().drop_guard(),
            shutdown,
        })
    }

    /// A cheap handle (address, wait for the stop) that outlives `self`.
    pub fn handle(&self) -> &DevRegistryHandle {
        &self.handle
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.handle.addr()
    }

    /// `http://ip:port`.
    pub fn url(&self) -> String {
        self.handle.url()
    }

    /// Stops the registry and waits for its tasks.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        self.handle.stopped().await;
    }
}

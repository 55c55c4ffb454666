//! The Eureka dev registry: an in-memory emulator of Netflix Eureka's REST API (the server
//! Spring Cloud and other Eureka clients talk to), for development and tests.
//!
//! It follows `shared/reference/eureka-rest-api.md` §1–§6: `204` on register and the
//! validation order, app upper-casing, port objects and string-typed fields, `@class` keys,
//! renew rules (404/409 on dirty timestamps, `status` ignored), status overrides and their
//! rules, metadata merge, the delta queue and `apps__hashcode`, `/vips`, `/svips`,
//! `/instances/{id}`, lease expiry and eviction. It is served under both `/eureka/…` and
//! `/eureka/v2/…`. The emulator shares no code or wire types with the Eureka adapter of
//! `crate::registry`: each is written from the reference on its own.
//!
//! [`EurekaDevConfig::default`] is faithful but fast: no response cache, a lease expires one
//! duration after its last renewal, eviction runs every second, no self-preservation — so sync
//! tests see changes within milliseconds. [`EurekaDevConfig::real`] turns on real Eureka's
//! timing (the 2 × duration lease bug, 60 s eviction, self-preservation).
//!
//! All timers and timestamps come from tokio's clock (a wall-clock base read once at start),
//! so tests on a paused clock can move through minutes of lease time in milliseconds.
//!
//! # Layout
//! - `model`: the instance record, lenient body parsing, JSON output, the reconcile hash.
//! - `xml`: XML output (and a small reader for XML register bodies).
//! - `state`: leases, overrides, the delta queue, eviction and self-preservation.
//! - `cache`: list payloads and the read-only/read-write response cache.
//! - `http`: routes, content negotiation, gzip, request log.
//!
//! # Examples
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use syncer::devreg::eureka::{EurekaDevConfig, spawn};
//! use tokio_util::sync::CancellationToken;
//!
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let shutdown = CancellationToken::new();
//! let handle = spawn(listener, EurekaDevConfig::default(), shutdown.clone()).await;
//! println!("Eureka at {}", handle.url()); // http://127.0.0.1:PORT/eureka
//! shutdown.cancel();
//! handle.stopped().await;
//! # Ok(()) }
//! ```

mod cache;
mod http;
mod model;
mod state;
mod xml;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use tokio::time::{Instant, MissedTickBehavior, interval_at};
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;
use tracing::warn;

use state::Registry;

/// Settings of one Eureka dev registry. Public fields; [`Default`] is the fast faithful mode,
/// [`EurekaDevConfig::real`] real Eureka's timing (`--real-eureka`).
#[derive(Clone, Debug)]
pub struct EurekaDevConfig {
    /// Eureka's lease bug (§6.2): a renewal sets the lease's last update to now + duration,
    /// so a renewed lease lives 2 × duration past its last beat. Default `false` (1 ×).
    pub lease_bug: bool,
    /// Period of the eviction pass. Default 1 s (real: 60 s).
    pub eviction_interval: Duration,
    /// Cap each eviction pass at `size − ⌊size × renewal_percent_threshold⌋` leases, picked
    /// at random (§6.3). Default `true`.
    pub eviction_cap: bool,
    /// Self-preservation (§6.3): no eviction unless the renewals of the last full minute exceed
    /// the threshold. Default `false` (real: `true`).
    pub self_preservation: bool,
    /// `renewalPercentThreshold`. Default 0.85.
    pub renewal_percent_threshold: f64,
    /// `expectedClientRenewalIntervalSeconds`. Default 30 s.
    pub expected_renewal_interval: Duration,
    /// Period of the expected-renewals update (`renewalThresholdUpdateIntervalMs`). Default
    /// 15 min.
    pub renewal_threshold_update_interval: Duration,
    /// Expected renewals at start: 1 as Spring Cloud's server opens (0 models a lone Netflix
    /// server, which never evicts before the first threshold update). Default 1.
    pub initial_expected_renewals: i64,
    /// How long a change stays in the delta queue. Default 180 s.
    pub delta_retention: Duration,
    /// Period of the delta queue pruning. Default 30 s.
    pub delta_prune_interval: Duration,
    /// The read-only response cache of list reads (§6.4): refreshed at multiples of this
    /// period on the clock. `None` serves lists live. Default `None` (real: 30 s).
    pub response_cache: Option<Duration>,
    /// Lifetime of a payload in the read-write cache layer. Default 180 s.
    pub response_cache_expiry: Duration,
    /// A lone Netflix server refuses list reads with 403 for this long after start
    /// (`waitTimeInMsWhenSyncEmpty`, §1.2.4). Default `None` (Spring Cloud does not).
    pub refuse_reads_for: Option<Duration>,
    /// How many requests [`EurekaDevHandle::requests`] keeps (the newest). Default 10 000.
    pub request_log_limit: usize,
    /// Serve HTTPS with this configuration ([`crate::devreg::tls::server_config`]); `None`
    /// serves plain HTTP. Default `None`.
    pub tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
}

impl Default for EurekaDevConfig {
    fn default() -> Self {
        EurekaDevConfig {
            lease_bug: false,
            eviction_interval: Duration::from_secs(1),
            eviction_cap: true,
            self_preservation: false,
            renewal_percent_threshold: 0.85,
            expected_renewal_interval: Duration::from_secs(30),
            renewal_threshold_update_interval: Duration::from_secs(15 * 60),
            initial_expected_renewals: 1,
            delta_retention: Duration::from_secs(180),
            delta_prune_interval: Duration::from_secs(30),
            response_cache: None,
            response_cache_expiry: Duration::from_secs(180),
            refuse_reads_for: None,
            request_log_limit: 10_000,
            tls: None,
        }
    }
}

impl EurekaDevConfig {
    /// Real Eureka's timing (Spring Cloud's server with Netflix defaults): the 30 s read-only
    /// response cache, the 2 × duration lease bug, 60 s eviction, self-preservation.
    pub fn real() -> Self {
        EurekaDevConfig {
            lease_bug: true,
            eviction_interval: Duration::from_secs(60),
            self_preservation: true,
            response_cache: Some(Duration::from_secs(30)),
            ..Self::default()
        }
    }
}

/// One request as the emulator received it, for tests to assert headers, query and body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedRequest {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The path as sent (not decoded), e.g. `/eureka/apps/ORDERS/h%3Aorders%3A8080`.
    pub path: String,
    /// The raw query string without `?` (empty when none).
    pub query: String,
    /// Headers in arrival order, names lower-case.
    pub headers: Vec<(String, String)>,
    /// The body as text (lossy UTF-8).
    pub body: String,
}

impl RecordedRequest {
    /// The first value of a header (name in any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The bounded request log.
#[derive(Debug)]
pub(crate) struct RequestLog {
    limit: usize,
    entries: Mutex<VecDeque<RecordedRequest>>,
}

impl RequestLog {
    fn new(limit: usize) -> Self {
        RequestLog {
            limit,
            entries: Mutex::new(VecDeque::new()),
        }
    }

    pub(crate) fn push(&self, r: RecordedRequest) {
        if self.limit == 0 {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= self.limit {
            entries.pop_front();
        }
        entries.push_back(r);
    }

    fn snapshot(&self) -> Vec<RecordedRequest> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries.iter().cloned().collect()
    }
}

/// What the HTTP handler shares.
#[derive(Debug)]
pub(crate) struct Server {
    pub(crate) registry: Registry,
    pub(crate) cache: cache::ResponseCache,
    pub(crate) log: RequestLog,
}

/// A running Eureka dev registry. Cheap to clone.
#[derive(Clone, Debug)]
pub struct EurekaDevHandle {
    addr: SocketAddr,
    tracker: TaskTracker,
    server: Arc<Server>,
    tls: bool,
}

impl EurekaDevHandle {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ip:port/eureka` (`https://` when it serves TLS; no trailing slash): the
    /// service URL to give clients.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}/eureka", self.addr)
    }

    /// Waits until the server and every task have finished (after the shutdown token was
    /// cancelled).
    pub async fn stopped(&self) {
        self.tracker.wait().await;
    }

    /// The requests received so far (the newest [`EurekaDevConfig::request_log_limit`]).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.server.log.snapshot()
    }
}

/// Runs `tick` every `period` (first after one period) until `shutdown`.
async fn every(period: Duration, shutdown: CancellationToken, tick: impl Fn()) {
    let period = period.max(Duration::from_millis(1));
    let mut timer = interval_at(Instant::now() + period, period);
    timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = timer.tick() => tick(),
        }
    }
}

/// Starts a Eureka dev registry on `listener` and returns at once; it runs until `shutdown` is
/// cancelled.
pub async fn spawn(
    listener: TcpListener,
    config: EurekaDevConfig,
    shutdown: CancellationToken,
) -> EurekaDevHandle {
    let addr = listener
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)));
    let tracker = TaskTracker::new();
    let tls = config.tls.clone();
    let serves_tls = tls.is_some();
    let server = Arc::new(Server {
        log: RequestLog::new(config.request_log_limit),
        cache: cache::ResponseCache::default(),
        registry: Registry::new(config),
    });
    let cfg = &server.registry.config;
    type Tick = fn(&Registry);
    let timers: [(Duration, Tick); 4] = [
        (cfg.eviction_interval, |r| {
            r.evict();
        }),
        (cfg.delta_prune_interval, Registry::prune_delta),
        (Duration::from_secs(60), Registry::roll_renewal_minute),
        (
            cfg.renewal_threshold_update_interval,
            Registry::update_renewal_threshold,
        ),
    ];
    for (period, tick) in timers {
        let s = server.clone();
        tracker.spawn(every(period, shutdown.clone(), move || tick(&s.registry)));
    }
    if let Some(period) = server.registry.config.response_cache {
        tracker.spawn(cache::refresh_loop(
            server.clone(),
            period,
            shutdown.clone(),
        ));
    }
    let app = Router::new()
        .fallback(http::dispatch)
        .with_state(server.clone());
    tracker.spawn(async move {
        let stop = shutdown.cancelled_owned();
        let served = match tls {
            Some(tls) => {
                axum::serve(crate::devreg::tls::TlsListener::new(listener, tls), app)
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
            warn!(error = %e, "eureka dev registry server failed");
        }
    });
    tracker.close();
    EurekaDevHandle {
        addr,
        tracker,
        server,
        tls: serves_tls,
    }
}

/// A Eureka dev registry that owns its shutdown: stopped when dropped. Handy in tests.
#[derive(Debug)]
pub struct EurekaDev {
    handle: EurekaDevHandle,
    shutdown: CancellationToken,
    _guard: DropGuard,
}

impl EurekaDev {
    /// Binds `127.0.0.1:0` and starts a registry with `config`.
    ///
    /// # Errors
    /// When the port cannot be bound.
    pub async fn start(config: EurekaDevConfig) -> std::io::Result<EurekaDev> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let shutdown = CancellationToken::new();
        let handle = spawn(listener, config, shutdown.clone()).await;
        Ok(EurekaDev {
            handle,
            _guard: shutdown.clone().drop_guard(),
            shutdown,
        })
    }

    /// A cheap handle that outlives `self`.
    pub fn handle(&self) -> &EurekaDevHandle {
        &self.handle
    }

    /// `http://ip:port/eureka`.
    pub fn url(&self) -> String {
        self.handle.url()
    }

    /// The requests received so far.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.handle.requests()
    }

    /// Stops the registry and waits for its tasks.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        self.handle.stopped().await;
    }
}

//! One syncer node: binds its listeners, owns its data directory and tasks, and shuts them
//! down in order.
//!
//! `Listeners::bind` runs before `run` so that tests (and `syncer demo`) can bind port 0 and
//! learn the real addresses. Every task is spawned on the node's `TaskTracker`; a task that
//! fails fatally reports through a channel, which stops the node with an error (exit 1).

use std::fs::{File, TryLockError};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::cluster::gated::GatedRegistry;
use crate::cluster::leader::Election;
use crate::cluster::managed::{ManagedEtcd, ManagedEtcdConfig, ManagedEtcdError};
use crate::config::{Config, Mode};
use crate::gossip::{self, GossipConfig, GossipHandle, GossipMetrics, NodeId, NodeMeta, Role};
use crate::registry::{self, Registry};
use crate::rpc::proto::NodeInfo;
use crate::rpc::{self, PROTOCOL_VERSION, PeerService};
use crate::store::{EtcdStore, EtcdTimeouts, MappingStore, RedbStore, StoreError};
use crate::sync::{self, EngineDeps, EngineSettings, SyncHandle, SyncMetrics};
use crate::telemetry::Metrics;

/// Why the node could not run. All of these are runtime failures (exit status 1).
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("cannot bind the {what} listener to {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("data directory {}: {source}", path.display())]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("data directory {} is in use by another syncer (lock file {})", path.display(), path.join(LOCK_FILE).display())]
    DataDirLocked { path: PathBuf },
    #[error("the {what} server failed: {reason}")]
    Serve { what: &'static str, reason: String },
    #[error("the registry client cannot be set up: {0}")]
    Registry(String),
    #[error("the sync engine failed: {0}")]
    Sync(String),
    #[error("the managed etcd member failed: {0}")]
    ManagedEtcd(String),
    #[error("graceful shutdown did not finish within {0:?}")]
    ShutdownTimeout(std::time::Duration),
}

const LOCK_FILE: &str = "LOCK";
/// The gossip pool's memory across restarts (generation, last known members).
const GOSSIP_STATE_FILE: &str = "gossip.json";
/// How long joining through an rpc address waits for that syncer's `Info` answer.
const JOIN_INFO_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest pause between attempts to identify the registry.
const REGISTRY_RETRY_MAX: Duration = Duration::from_secs(30);

/// The sockets a node serves on, bound before it starts.
#[derive(Debug)]
pub struct Listeners {
    /// Gossip datagrams (`--bind-addr`).
    pub gossip: UdpSocket,
    /// gRPC (`--rpc-addr`).
    pub rpc: TcpListener,
    /// `/health` and `/metrics` (`--admin-addr`), when enabled.
    pub admin: Option<TcpListener>,
}

impl Listeners {
    /// Binds every listener of `config`.
    ///
    /// # Errors
    /// [`NodeError::Bind`] naming the listener and address that failed.
    pub async fn bind(config: &Config) -> Result<Listeners, NodeError> {
        let bind_err = |what, addr| move |source| NodeError::Bind { what, addr, source };
        let gossip_addr = config.gossip.bind_addr;
        let gossip = UdpSocket::bind(gossip_addr)
            .await
            .map_err(bind_err("gossip", gossip_addr))?;
        let rpc_addr = config.rpc.listen_addr;
        let rpc = TcpListener::bind(rpc_addr)
            .await
            .map_err(bind_err("rpc", rpc_addr))?;
        let admin = match config.admin_addr {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(bind_err("admin", addr))?,
            ),
            None => None,
        };
        Ok(Listeners { gossip, rpc, admin })
    }

    fn local(&self) -> (Option<SocketAddr>, Option<SocketAddr>, Option<SocketAddr>) {
        (
            self.gossip.local_addr().ok(),
            self.rpc.local_addr().ok(),
            self.admin.as_ref().and_then(|a| a.local_addr().ok()),
        )
    }
}

/// An exclusive lock on the data directory, held while the node runs.
#[derive(Debug)]
struct DataDirGuard {
    _file: File,
}

fn lock_data_dir(path: &Path) -> Result<DataDirGuard, NodeError> {
    let dir_err = |source| NodeError::DataDir {
        path: path.to_owned(),
        source,
    };
    std::fs::create_dir_all(path).map_err(dir_err)?;
    let mut file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path.join(LOCK_FILE))
        .map_err(dir_err)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            return Err(NodeError::DataDirLocked {
                path: path.to_owned(),
            });
        }
        Err(TryLockError::Error(e)) => return Err(dir_err(e)),
    }
    // The pid is for the operator reading the file; the lock itself is what counts.
    file.set_len(0).map_err(dir_err)?;
    writeln!(file, "{}", std::process::id()).map_err(dir_err)?;
    Ok(DataDirGuard { _file: file })
}

/// Runs a node on already bound `listeners` until `shutdown` is cancelled or a task fails.
///
/// # Errors
/// A [`NodeError`] when the data directory cannot be locked, a server fails, or the graceful
/// shutdown overruns its deadline.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<(), NodeError> {
    let _data_dir = lock_data_dir(&config.node.data_dir)?;
    let (gossip_local, rpc_local, admin_local) = listeners.local();
    let advertise = |local: Option<SocketAddr>| {
        local
            .map(|a| SocketAddr::new(config.gossip.advertise_ip, a.port()).to_string())
            .unwrap_or_default()
    };
    let info = NodeInfo {
        name: config.node.name.clone(),
        cluster_name: config.node.cluster_name.clone(),
        mode: config.node.mode.to_string(),
        gossip_addr: advertise(gossip_local),
        rpc_addr: advertise(rpc_local),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        protocol_version: PROTOCOL_VERSION,
    };
    let metrics = Metrics::new(&info.name, &info.cluster_name, &info.mode);

    let tracker = TaskTracker::new();
    let (fatal_tx, mut fatal_rx) = mpsc::channel::<NodeError>(4);
    // Stopped first, so peers see calls refused rather than half-served.
    let rpc_token = shutdown.child_token();
    let admin_token = shutdown.child_token();

    let gossip_token = shutdown.child_token();
    let gossip = {
        let gossip_addr = SocketAddr::new(
            config.gossip.advertise_ip,
            gossip_local.map_or(0, |a| a.port()),
        );
        let rpc_addr = SocketAddr::new(
            config.gossip.advertise_ip,
            rpc_local.map_or(0, |a| a.port()),
        );
        let gossip_metrics = GossipMetrics::default();
        gossip_metrics.register(&metrics);
        gossip::spawn(
            gossip_config(&config, gossip_addr, rpc_addr),
            Arc::new(listeners.gossip),
            gossip_metrics,
            gossip_token.clone(),
            &tracker,
        )
    };
    let registry = registry::build(&config.registry, &config.sync, &metrics)
        .map_err(|e| NodeError::Registry(e.to_string()))?;
    {
        let (gossip, token) = (gossip.clone(), shutdown.clone());
        tracker.spawn(announce_registry(registry.clone(), gossip, token));
    }
    let sync_metrics = SyncMetrics::default();
    sync_metrics.register(&metrics);
    let sync = SyncHandle::new(sync_metrics);
    {
        let (sync, token, tracker_inner, fatal_tx) = (
            sync.clone(),
            shutdown.clone(),
            tracker.clone(),
            fatal_tx.clone(),
        );
        let (config, gossip, registry) = (config.clone(), gossip.clone(), registry.clone());
        tracker.spawn(async move {
            let result = match config.node.mode {
                Mode::Single => {
                    start_engine(config, gossip, registry, &sync, token, &tracker_inner).await
                }
                Mode::Cluster => {
                    run_cluster_member(config, gossip, registry, sync, token, &tracker_inner).await
                }
            };
            if let Err(e) = result {
                let _ = fatal_tx.send(e).await;
            }
        });
    }

    {
        let fatal_tx = fatal_tx.clone();
        let service = PeerService::new(info.clone(), gossip.clone(), sync.clone());
        let token = rpc_token.clone();
        tracker.spawn(async move {
            if let Err(e) = rpc::serve(listeners.rpc, service, token).await {
                let _ = fatal_tx
                    .send(NodeError::Serve {
                        what: "rpc",
                        reason: e.to_string(),
                    })
                    .await;
            }
            debug!("rpc server stopped");
        });
    }
    if let Some(admin) = listeners.admin {
        let fatal_tx = fatal_tx.clone();
        let (info, metrics, stopping, token) = (
            info.clone(),
            metrics.clone(),
            shutdown.clone(),
            admin_token.clone(),
        );
        tracker.spawn(async move {
            if let Err(e) = crate::admin::serve(admin, info, metrics, stopping, token).await {
                let _ = fatal_tx
                    .send(NodeError::Serve {
                        what: "admin",
                        reason: e.to_string(),
                    })
                    .await;
            }
            debug!("admin server stopped");
        });
    }
    drop(fatal_tx);

    info!(
        node = %info.name,
        cluster = %info.cluster_name,
        mode = %info.mode,
        gossip_addr = %info.gossip_addr,
        rpc_addr = %info.rpc_addr,
        admin_addr = %admin_local.map(|a| a.to_string()).unwrap_or_else(|| "off".into()),
        data_dir = %config.node.data_dir.display(),
        registry = %config.registry.addresses.iter().map(|u| u.as_str()).collect::<Vec<_>>().join(","),
        "syncer is ready"
    );

    let outcome = tokio::select! {
        biased;
        _ = shutdown.cancelled() => Ok(()),
        Some(error) = fatal_rx.recv() => Err(error),
    };

    // Shutdown order: stop taking calls, then the rest, then wait for every task.
    rpc_token.cancel();
    admin_token.cancel();
    shutdown.cancel();
    tracker.close();
    if tokio::time::timeout(config.shutdown_timeout, tracker.wait())
        .await
        .is_err()
    {
        warn!(timeout = ?config.shutdown_timeout, "tasks still running at the shutdown deadline");
        return Err(NodeError::ShutdownTimeout(config.shutdown_timeout));
    }
    info!("syncer stopped");
    outcome
}

/// The pool settings of this node: a generation newer than the last run's (saved at once, so
/// even a crash right after start counts), the members remembered from then, and a resolver
/// that turns an rpc address given as `--join-addr` into that syncer's gossip address.
fn gossip_config(config: &Config, gossip_addr: SocketAddr, rpc_addr: SocketAddr) -> GossipConfig {
    let state_file = config.node.data_dir.join(GOSSIP_STATE_FILE);
    let saved = gossip::load_state(&state_file).unwrap_or_else(|e| {
        warn!(error = %e, "ignoring the saved gossip state");
        gossip::SavedState::default()
    });
    let generation = gossip::next_generation((saved.generation > 0).then_some(saved.generation));
    let fresh = gossip::SavedState {
        generation,
        members: saved.members.clone(),
    };
    if let Err(e) = gossip::save_state(&state_file, &fresh) {
        warn!(path = %state_file.display(), error = %e, "cannot save the gossip state");
    }
    // The registry fingerprint, the managed etcd member's URLs and the term are published
    // later, as they become known.
    let mut meta = NodeMeta::new(
        config.node.cluster_name.clone(),
        rpc_addr,
        config.node.mode.to_string(),
    );
    // Cluster mode elects its active member; until then every member stands by.
    meta.role = match config.node.mode {
        Mode::Single => Role::Active,
        Mode::Cluster => Role::Standby,
    };
    meta.protocol = PROTOCOL_VERSION;
    let identity = NodeId {
        name: config.node.name.clone(),
        addr: gossip_addr,
        generation,
        bump: 0,
        meta,
    };
    let resolver: gossip::Resolver = Arc::new(|target: String| {
        Box::pin(async move {
            let info = rpc::client::node_info(&target, JOIN_INFO_TIMEOUT)
                .await
                .ok()?;
            info.gossip_addr.parse().ok()
        })
    });
    GossipConfig {
        identity,
        label: config.gossip.label.clone(),
        profile: config.gossip.profile,
        join: config.gossip.join.iter().map(ToString::to_string).collect(),
        state_file: Some(state_file),
        remembered: saved.members.iter().map(|m| m.addr).collect(),
        resolver: Some(resolver),
        seed: None,
    }
}

/// Opens the mapping store (etcd when endpoints are given, else the embedded store), then
/// starts the sync engine. An etcd that cannot be reached yet is waited for.
async fn start_engine(
    config: Config,
    gossip: GossipHandle,
    registry: Arc<dyn Registry>,
    sync: &SyncHandle,
    token: CancellationToken,
    tracker: &TaskTracker,
) -> Result<(), NodeError> {
    let store: Arc<dyn MappingStore> = if config.etcd_endpoints.is_empty() {
        let store = RedbStore::open(&config.node.data_dir)
            .await
            .map_err(|e| NodeError::Sync(e.to_string()))?;
        Arc::new(store)
    } else {
        match connect_etcd(&config, &config.etcd_endpoints, &token).await? {
            Some(store) => store,
            None => return Ok(()),
        }
    };
    info!(store = store.kind(), "mapping store open");
    let deps = EngineDeps {
        cluster: config.node.cluster_name.clone(),
        registry,
        store,
        gossip,
        settings: EngineSettings::from_config(&config.sync),
        link: Arc::new(rpc::transfer::GrpcLink::new()),
    };
    sync::start(deps, sync, token, tracker)
        .await
        .map_err(|e| NodeError::Sync(e.to_string()))
}

/// The etcd key prefix of this data centre.
fn etcd_prefix(config: &Config) -> String {
    format!("/syncer/v2/{}/", config.node.cluster_name)
}

/// Connects the etcd store, waiting for an etcd that cannot be reached yet; `None` when
/// the daemon stops first.
async fn connect_etcd(
    config: &Config,
    endpoints: &[url::Url],
    token: &CancellationToken,
) -> Result<Option<Arc<EtcdStore>>, NodeError> {
    let mut backoff = Duration::from_millis(500);
    loop {
        match EtcdStore::connect(endpoints, etcd_prefix(config), EtcdTimeouts::default()).await {
            Ok(store) => return Ok(Some(Arc::new(store))),
            Err(StoreError::Unavailable(reason)) => {
                warn!(%reason, retry_in = ?backoff, "etcd not reachable yet");
            }
            Err(e) => return Err(NodeError::Sync(e.to_string())),
        }
        tokio::select! {
            () = token.cancelled() => return Ok(None),
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(REGISTRY_RETRY_MAX);
    }
}

/// Why a standby member refuses `Pull` and `Push`; callers go to the active member.
const STANDBY: &str = "standby: this member is not the active syncer of its data centre";
/// How long a finished term's tasks may take to stop.
const TERM_STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Cluster mode: stands by until elected, runs the sync engine for the term, and stands by
/// again when the term ends, until the daemon stops.
async fn run_cluster_member(
    config: Config,
    gossip: GossipHandle,
    registry: Arc<dyn Registry>,
    sync: SyncHandle,
    token: CancellationToken,
    tracker: &TaskTracker,
) -> Result<(), NodeError> {
    sync.stop(STANDBY);
    // The managed etcd member outlives the terms: it stops only after the last term gave its
    // lease up, so a graceful stop still hands over at once.
    let etcd_token = CancellationToken::new();
    let _stop_etcd = etcd_token.clone().drop_guard();
    let managed = if config.etcd_endpoints.is_empty() {
        let settings = ManagedEtcdConfig::from_config(&config, config.gossip.advertise_ip);
        let start = ManagedEtcd::start(settings, gossip.clone(), etcd_token.clone(), tracker);
        tokio::pin!(start);
        let started = tokio::select! {
            biased;
            // Let the start end by itself: it stops a child it started in order (SIGTERM
            // first) rather than having it killed with the dropped future.
            () = token.cancelled() => {
                etcd_token.cancel();
                start.await
            }
            started = &mut start => started,
        };
        match started {
            Ok(etcd) => Some(etcd),
            Err(ManagedEtcdError::Cancelled) => return Ok(()),
            Err(e) => return Err(NodeError::ManagedEtcd(e.to_string())),
        }
    } else {
        None
    };
    let endpoints = managed
        .as_ref()
        .map_or_else(|| config.etcd_endpoints.clone(), ManagedEtcd::endpoints);
    let Some(store) = connect_etcd(&config, &endpoints, &token).await? else {
        return Ok(());
    };
    if let Some(etcd) = managed {
        tracker.spawn(follow_endpoints(
            etcd,
            store.client(),
            endpoints,
            token.clone(),
        ));
    }
    info!(
        store = store.kind(),
        prefix = store.prefix(),
        "mapping store open"
    );
    let election = Election::new(
        store.client(),
        store.prefix(),
        config.node.name.clone(),
        config.cluster.leader_lease,
    );
    loop {
        let Some(term) = election.acquire(&token, tracker).await else {
            return Ok(());
        };
        store.set_fence(Some(term.fence.clone()));
        let term_tracker = TaskTracker::new();
        let engine_token = term.ended.clone();
        let registry: Arc<dyn Registry> =
            Arc::new(GatedRegistry::new(registry.clone(), term.gate.clone()));
        let mut settings = EngineSettings::from_config(&config.sync);
        // The previous leader may still be finishing a call: no removal within its lease.
        settings.removals_from = Some(term.began + config.cluster.leader_lease);
        let deps = EngineDeps {
            cluster: config.node.cluster_name.clone(),
            registry,
            store: store.clone(),
            gossip: gossip.clone(),
            settings,
            link: Arc::new(rpc::transfer::GrpcLink::new()),
        };
        let started = sync::start(deps, &sync, engine_token.clone(), &term_tracker).await;
        if let Err(e) = started {
            engine_token.cancel();
            // Give the lease up before the managed etcd member stops with this function.
            let _ = tokio::time::timeout(TERM_STOP_TIMEOUT, term.released.cancelled()).await;
            return Err(NodeError::Sync(e.to_string()));
        }
        let number = term.number;
        let announced = gossip.update_meta(move |m| {
            m.role = Role::Active;
            m.term = number;
        });
        if let Err(e) = announced.await {
            debug!(error = %e, "role not announced");
        }
        engine_token.cancelled().await;
        sync.stop(STANDBY);
        if tokio::time::timeout(TERM_STOP_TIMEOUT, term.released.cancelled())
            .await
            .is_err()
        {
            warn!(timeout = ?TERM_STOP_TIMEOUT, "the finished term's lease is still being given up");
        }
        let announced = gossip.update_meta(|m| {
            m.role = Role::Standby;
            m.term = 0;
        });
        if let Err(e) = announced.await {
            debug!(error = %e, "role not announced");
        }
        term_tracker.close();
        if tokio::time::timeout(TERM_STOP_TIMEOUT, term_tracker.wait())
            .await
            .is_err()
        {
            warn!(timeout = ?TERM_STOP_TIMEOUT, "the sync engine of the finished term is still stopping");
        }
        if token.is_cancelled() {
            return Ok(());
        }
        info!("standing by again");
    }
}

/// How often the etcd client learns the client URLs of managed members that joined later.
const ENDPOINTS_FOLLOW_EVERY: Duration = Duration::from_secs(10);

/// Adds the client URL of every managed etcd member that joins the data centre's cluster
/// after this one started to the etcd client, so the store and the election can still reach
/// etcd through them when the local member is down.
async fn follow_endpoints(
    etcd: ManagedEtcd,
    client: etcd_client::Client,
    mut known: Vec<url::Url>,
    token: CancellationToken,
) {
    loop {
        for url in etcd.endpoints() {
            if known.contains(&url) {
                continue;
            }
            match client
                .add_endpoint(url.as_str().trim_end_matches('/'))
                .await
            {
                Ok(()) => {
                    info!(endpoint = %url, "etcd client: endpoint added");
                    known.push(url);
                }
                Err(e) => debug!(endpoint = %url, error = %e, "etcd client: endpoint not added"),
            }
        }
        tokio::select! {
            () = token.cancelled() => return,
            () = tokio::time::sleep(ENDPOINTS_FOLLOW_EVERY) => {}
        }
    }
}

/// Asks the registry who it is until it answers, then announces its fingerprint in gossip,
/// so that data centres that picked the same cluster name by accident are noticed.
async fn announce_registry(
    registry: Arc<dyn Registry>,
    gossip: GossipHandle,
    token: CancellationToken,
) {
    let mut backoff = Duration::from_secs(1);
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let identity = tokio::select! {
            biased;
            () = token.cancelled() => return,
            identity = registry.identity() => identity,
        };
        match identity {
            Ok(identity) => {
                let fingerprint = gossip::registry_fingerprint(&identity.kind, &identity.id);
                info!(kind = %identity.kind, version = %identity.version, id = %identity.id, %fingerprint, "registry identified");
                if let Err(e) = gossip.update_meta(|m| m.registry = fingerprint).await {
                    debug!(error = %e, "registry fingerprint not announced");
                }
                return;
            }
            Err(e) => {
                warn!(attempt, error = %e, retry_in = ?backoff, "registry not reachable yet");
            }
        }
        tokio::select! {
            biased;
            () = token.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(REGISTRY_RETRY_MAX);
    }
}

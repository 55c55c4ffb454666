//! One syncer node: build, spawn, wait, stop.
//!
//! `Listeners::bind` runs before `run` so that tests (and `syncer demo`) can bind port 0 and
//! learn the real addresses. `run` locks the data directory, builds the gossip pool, the
//! registry client, the sync engine (single mode) or the cluster member, the gRPC and admin
//! servers, the TLS reload watcher and the periodic inspection (when asked for); spawns each on the tracker of the shutdown step that stops it; waits for a signal
//! or a fatal error (reported through a channel: exit 1); then stops in order (see
//! `Stages` and docs/DESIGN.md "Process skeleton").

use std::fs::{File, TryLockError};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::backoff::Backoff;
use crate::cluster::managed::ManagedEtcdConfig;
use crate::cluster::member::{
    ClusterError, ClusterMember, EtcdSource, EtcdTasks, MemberSettings, STANDBY, TermDeps,
    TermEngine,
};
use crate::config::{Config, Mode};
use crate::gossip::{self, GossipConfig, GossipHandle, GossipMetrics, NodeId, NodeMeta, Role};
use crate::registry::{self, Registry, RegistryError};
use crate::rpc::proto::NodeInfo;
use crate::rpc::{self, PROTOCOL_VERSION, PeerService};
use crate::service::{self, Notifier};
use crate::shutdown::{Stage, stop_in_order};
use crate::store::{EtcdStore, EtcdTimeouts, MappingStore, RedbStore, StoreError};
use crate::sync::{self, EngineDeps, EngineSettings, SyncError, SyncHandle, SyncMetrics};
use crate::telemetry::Metrics;
use crate::tls::TlsMetrics;
use crate::tls::reload::ReloadSet;

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
    #[error("the {what} server failed: {source}")]
    Serve {
        what: &'static str,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("the registry client cannot be set up: {0}")]
    Registry(#[source] RegistryError),
    #[error("the sync engine failed: {0}")]
    Sync(#[from] SyncError),
    #[error("the sync engine failed: {0}")]
    Store(#[from] StoreError),
    /// The cluster member's errors name their part (managed etcd member, sync engine).
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error("the data centre name: {0}")]
    Name(#[from] crate::dc_name::NameError),
    #[error(transparent)]
    Keyring(#[from] gossip::KeyringError),
    #[error("graceful shutdown did not finish within {0:?}")]
    ShutdownTimeout(Duration),
}

const LOCK_FILE: &str = "LOCK";
/// The gossip pool's memory across restarts (generation, last known members).
const GOSSIP_STATE_FILE: &str = "gossip.json";
/// How long joining through an rpc address waits for that syncer's `Info` answer.
const JOIN_INFO_TIMEOUT: Duration = Duration::from_secs(1);
/// Pauses between attempts to identify the registry.
const REGISTRY_RETRY: Backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
/// Why `Pull` and `Push` are refused from the first signal on.
const STOPPING: &str = "stopping: this syncer is shutting down";

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

/// The steps of the stop, in order, each with its token, tracker and deadline. Nothing of
/// one step hangs under another's token: the first signal starts step 1 only.
struct Stages {
    /// 1. Stop taking calls: the gRPC server sends GOAWAY and lets the calls in flight finish
    ///    (`rpc::server::DRAIN_TIMEOUT`); `/health` answers 503 from the first signal on.
    rpc: Stage,
    /// 2. Stop the engine and give up the lease: single mode's engine tasks end (the store
    ///    writer flushes); cluster mode's member stops its term's engine, then revokes.
    engine: Stage,
    /// 3. Leave the gossip pool (leave notices to every live member).
    gossip: Stage,
    /// 4. Stop the managed etcd member (SIGTERM, then SIGKILL after its grace).
    etcd: Stage,
    /// 5. The rest: the admin server (its requests in flight for up to
    ///    `admin::DRAIN_TIMEOUT`), then any task still running.
    rest: Stage,
}

impl Stages {
    fn new() -> Stages {
        Stages {
            rpc: Stage::new(
                "stop taking calls",
                rpc::server::DRAIN_TIMEOUT + Duration::from_secs(1),
            ),
            engine: Stage::new(
                "stop the engine and give up the lease",
                crate::cluster::member::TERM_STOP_BOUND + Duration::from_secs(1),
            ),
            gossip: Stage::new("leave the gossip pool", Duration::from_secs(2)),
            etcd: Stage::new(
                "stop the managed etcd member",
                crate::cluster::managed::STOP_GRACE + Duration::from_secs(1),
            ),
            rest: Stage::new("stop the remaining tasks", Duration::from_secs(2)),
        }
    }

    fn in_order(self) -> [Stage; 5] {
        [self.rpc, self.engine, self.gossip, self.etcd, self.rest]
    }
}

/// Runs a node on already bound `listeners` until `shutdown` is cancelled or a task fails.
///
/// # Errors
/// A [`NodeError`] when the data directory cannot be locked, the registry client cannot be
/// set up, a part fails, or the graceful shutdown overruns its deadline.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<(), NodeError> {
    run_notifying(config, listeners, shutdown, Notifier::disabled()).await
}

/// [`run`], telling the service manager through `notifier` when the node is ready, while it
/// is alive (watchdog) and when it stops (see `crate::service`).
///
/// # Errors
/// As [`run`].
pub async fn run_notifying(
    mut config: Config,
    listeners: Listeners,
    shutdown: CancellationToken,
    notifier: Notifier,
) -> Result<(), NodeError> {
    let _data_dir = lock_data_dir(&config.node.data_dir)?;
    let keyring = gossip::Keyring::load_or_seed(&config.node.data_dir, config.gossip.key.as_ref())?;
    let stages = Stages::new();
    // SIGHUP and changed files reload the TLS certificates, from now on: a registry CA fixed
    // while the data centre name waits for the registry is picked up too.
    let tls_metrics = TlsMetrics::default();
    // The etcd client joins once etcd is reached.
    let reloadable = ReloadSet::default();
    {
        if let Some(tls) = &config.rpc.tls {
            reloadable.add(Arc::new(tls.clone()));
        }
        if config.registry.tls.has_files() {
            reloadable.add(Arc::new(config.registry.tls.clone()));
        }
        let (metrics, token) = (tls_metrics.clone(), stages.rpc.token.clone());
        let set = reloadable.clone();
        stages
            .rpc
            .tasks
            .spawn(crate::tls::reload::watch(set, metrics, token));
    }
    // The watcher stops with the rpc stage, or here when the node returns before it runs.
    let _stop_watcher = stages.rpc.token.clone().drop_guard();
    if config.node.cluster_name.is_empty() {
        match default_cluster_name(&config, &shutdown).await? {
            Some(name) => config.node.cluster_name = name,
            None => return Ok(()),
        }
    }
    let (gossip_local, rpc_local, admin_local) = listeners.local();
    let info = node_info(&config, gossip_local, rpc_local);
    let metrics = Metrics::new(&info.name, &info.cluster_name, &info.mode);
    tls_metrics.register(&metrics);
    // `/health` says `stopping` from the first signal (or a fatal error) on.
    let stopping = shutdown.child_token();
    let (fatal_tx, mut fatal_rx) = mpsc::channel::<NodeError>(4);

    // Build.
    let gossip = {
        let advertised = |local: Option<SocketAddr>| {
            SocketAddr::new(config.gossip.advertise_ip, local.map_or(0, |a| a.port()))
        };
        let gossip_metrics = GossipMetrics::default();
        gossip_metrics.register(&metrics);
        gossip::spawn(
            gossip_config(
                &config,
                advertised(gossip_local),
                advertised(rpc_local),
                keyring,
            ),
            Arc::new(listeners.gossip),
            gossip_metrics,
            stages.gossip.token.clone(),
            &stages.gossip.tasks,
        )
    };
    let registry = build_registry(&config, &metrics)?;
    let sync_metrics = SyncMetrics::default();
    sync_metrics.register(&metrics);
    let sync = SyncHandle::new(sync_metrics).with_registry(
        registry.clone(),
        config
            .registry
            .addresses
            .iter()
            .map(|u| u.to_string())
            .collect(),
    );
    let engine = SyncEngine {
        config: config.clone(),
        gossip: gossip.clone(),
        sync: sync.clone(),
    };

    // Spawn.
    let (engine_token, engine_tasks) = (&stages.engine.token, &stages.engine.tasks);
    engine_tasks.spawn(announce_registry(
        registry.clone(),
        gossip.clone(),
        config.gossip.profile.identity_refresh(),
        engine_token.clone(),
    ));
    match config.node.mode {
        Mode::Single => {
            let (token, tasks) = (engine_token.clone(), engine_tasks.clone());
            let (registry, store_config) = (registry.clone(), config.clone());
            let reloadable = reloadable.clone();
            spawn_part(&stages.engine.tasks, &fatal_tx, async move {
                let store = open_store(&store_config, &reloadable, &token).await?;
                match store {
                    Some(store) => engine.start_single(registry, store, token, &tasks).await,
                    None => Ok(()),
                }
            });
        }
        Mode::Cluster => {
            let member = ClusterMember {
                settings: member_settings(&config),
                gossip: gossip.clone(),
                registry: registry.clone(),
                engine: Arc::new(engine),
                reloadable: reloadable.clone(),
            };
            let etcd = EtcdTasks {
                token: stages.etcd.token.clone(),
                tracker: stages.etcd.tasks.clone(),
            };
            let (token, tasks) = (engine_token.clone(), engine_tasks.clone());
            spawn_part(&stages.engine.tasks, &fatal_tx, async move {
                Ok(member.run(token, etcd, &tasks).await?)
            });
        }
    }
    {
        let service = PeerService::new(info.clone(), gossip.clone(), sync.clone())
            .with_peer_tls(config.rpc.tls.as_ref().map(rpc::tls::RpcTls::client));
        let tls = config.rpc.tls.clone();
        let (rpc_listener, rpc_token) = (listeners.rpc, stages.rpc.token.clone());
        let tls_metrics = tls_metrics.clone();
        let serve =
            async move { rpc::serve(rpc_listener, service, rpc_token, tls, tls_metrics).await };
        spawn_part(&stages.rpc.tasks, &fatal_tx, async move {
            serve.await.map_err(|e| NodeError::Serve {
                what: "rpc",
                source: Box::new(e),
            })?;
            debug!("rpc server stopped");
            Ok(())
        });
    }
    if let Some(interval) = config.sync.inspect_interval {
        let settings = crate::inspect::InspectSettings {
            interval,
            alarm_count: config.sync.inspect_alarm_count,
            cluster: info.cluster_name.clone(),
        };
        stages.engine.tasks.spawn(crate::inspect::run(
            settings,
            sync.clone(),
            config.rpc.tls.as_ref().map(|t| t.client()),
            stages.engine.token.clone(),
        ));
    }
    if let Some(admin) = listeners.admin {
        let serve = crate::admin::serve(
            admin,
            info.clone(),
            metrics.clone(),
            gossip.clone(),
            sync.metrics().clone(),
            stopping.clone(),
            stages.rest.token.clone(),
        );
        spawn_part(&stages.rest.tasks, &fatal_tx, async move {
            serve.await.map_err(|e| NodeError::Serve {
                what: "admin",
                source: Box::new(e),
            })?;
            debug!("admin server stopped");
            Ok(())
        });
    }
    drop(fatal_tx);
    info!(
        node = %info.name,
        cluster = %info.cluster_name,
        mode = %info.mode,
        gossip_addr = %info.gossip_addr,
        rpc_addr = %info.rpc_addr,
        rpc_tls = match &config.rpc.tls {
            None => "off",
            Some(tls) if tls.verifies_peers() => "mutual",
            Some(_) => "on",
        },
        admin_addr = %admin_local.map(|a| a.to_string()).unwrap_or_else(|| "off".into()),
        data_dir = %config.node.data_dir.display(),
        registry = %config.registry.addresses.iter().map(|u| u.as_str()).collect::<Vec<_>>().join(","),
        services = %config.sync.filter,
        "syncer is ready"
    );
    notify_ready(&notifier, &info, &gossip, &stages.rpc);

    // Wait.
    let outcome = tokio::select! {
        biased;
        _ = shutdown.cancelled() => Ok(()),
        Some(error) = fatal_rx.recv() => Err(error),
    };

    // Stop, in order.
    notifier.stopping();
    stopping.cancel();
    sync.stop(STOPPING);
    if !stop_in_order(&stages.in_order(), config.shutdown_timeout).await {
        warn!(timeout = ?config.shutdown_timeout, "tasks still running at the shutdown deadline");
        return Err(NodeError::ShutdownTimeout(config.shutdown_timeout));
    }
    info!("syncer stopped");
    outcome
}

/// Tells the service manager the node is ready, and spawns the watchdog's keeper on `stage`.
/// Its probe is a round trip through the gossip pool's actor, the loop every mode runs from
/// start to stop (probes, failure detection, the role announcements): a ping proves that
/// the runtime schedules tasks and that this loop takes commands. It does not prove that the
/// registry or a peer answers (`/health` and the metrics tell that).
fn notify_ready(notifier: &Notifier, info: &NodeInfo, gossip: &GossipHandle, stage: &Stage) {
    let (name, cluster, mode) = (
        info.name.clone(),
        info.cluster_name.clone(),
        info.mode.clone(),
    );
    let status = move |role: Role| service::status_text(&name, &cluster, &mode, role.as_str());
    let ready = status(gossip.local().meta.role);
    notifier.ready(&ready);
    let gossip = gossip.clone();
    let probe = move || {
        let (gossip, status) = (gossip.clone(), status.clone());
        async move {
            gossip.members().await.ok()?;
            Some(status(gossip.local().meta.role))
        }
    };
    service::spawn_keeper(notifier, ready, probe, stage.token.clone(), &stage.tasks);
}

/// The data centre's name when `--cluster-name` is not given (see `crate::dc_name`); `None`
/// when the node is stopped while the registry does not answer on a first start.
async fn default_cluster_name(
    config: &Config,
    shutdown: &CancellationToken,
) -> Result<Option<String>, NodeError> {
    // A client of its own, whose metrics go nowhere: the node's metrics are labelled with
    // the name this finds.
    let metrics = Metrics::new(&config.node.name, "", &config.node.mode.to_string());
    let registry = build_registry(config, &metrics)?;
    let legacy = crate::config::default_cluster_name(&config.registry.addresses);
    Ok(crate::dc_name::resolve(&config.node.data_dir, registry.as_ref(), legacy, shutdown).await?)
}

/// Spawns one part of the node on `tasks`; its error stops the node.
fn spawn_part(
    tasks: &TaskTracker,
    fatal: &mpsc::Sender<NodeError>,
    part: impl Future<Output = Result<(), NodeError>> + Send + 'static,
) {
    let fatal = fatal.clone();
    tasks.spawn(async move {
        if let Err(e) = part.await {
            let _ = fatal.send(e).await;
        }
    });
}

/// What `Info` answers: this node's names and advertised addresses.
fn node_info(
    config: &Config,
    gossip_local: Option<SocketAddr>,
    rpc_local: Option<SocketAddr>,
) -> NodeInfo {
    let advertise = |local: Option<SocketAddr>| {
        local
            .map(|a| SocketAddr::new(config.gossip.advertise_ip, a.port()).to_string())
            .unwrap_or_default()
    };
    NodeInfo {
        name: config.node.name.clone(),
        cluster_name: config.node.cluster_name.clone(),
        mode: config.node.mode.to_string(),
        gossip_addr: advertise(gossip_local),
        rpc_addr: advertise(rpc_local),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        protocol_version: PROTOCOL_VERSION,
    }
}

/// The registry client of the configured kind, its metrics registered.
fn build_registry(config: &Config, metrics: &Metrics) -> Result<Arc<dyn Registry>, NodeError> {
    registry::build(&config.registry, &config.sync, metrics).map_err(NodeError::Registry)
}

/// The pool settings of this node: a generation newer than the last run's (saved at once, so
/// even a crash right after start counts), the members remembered from then, and a resolver
/// that turns an rpc address given as `--join-addr` into that syncer's gossip address.
fn gossip_config(
    config: &Config,
    gossip_addr: SocketAddr,
    rpc_addr: SocketAddr,
    keyring: Option<gossip::Keyring>,
) -> GossipConfig {
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
    meta.tls = config.rpc.tls.is_some();
    let identity = NodeId {
        name: config.node.name.clone(),
        addr: gossip_addr,
        generation,
        bump: 0,
        meta,
    };
    let tls = config.rpc.tls.as_ref().map(rpc::tls::RpcTls::client);
    let resolver: gossip::Resolver = Arc::new(move |target: String| {
        let tls = tls.clone();
        Box::pin(async move {
            let info = rpc::client::node_info(&target, JOIN_INFO_TIMEOUT, tls.as_ref())
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
        previous_generation: (saved.generation > 0).then_some(saved.generation),
        resolver: Some(resolver),
        seed: None,
        keyring,
    }
}

/// The etcd key prefix of this data centre.
fn etcd_prefix(config: &Config) -> String {
    format!("/syncer/v2/{}/", config.node.cluster_name)
}

/// Opens the mapping store of single mode: etcd when endpoints are given (waiting for an etcd
/// that cannot be reached yet; `None` when the node stops first), else the embedded store.
/// An etcd client with TLS joins `reloadable`.
async fn open_store(
    config: &Config,
    reloadable: &ReloadSet,
    token: &CancellationToken,
) -> Result<Option<Arc<dyn MappingStore>>, StoreError> {
    if config.etcd_endpoints.is_empty() {
        return Ok(Some(Arc::new(
            RedbStore::open(&config.node.data_dir).await?,
        )));
    }
    let store = EtcdStore::connect_patiently(
        &config.etcd_endpoints,
        config.etcd_tls.as_ref(),
        etcd_prefix(config),
        EtcdTimeouts::default(),
        token,
    )
    .await?;
    if let Some(store) = &store {
        store.connection().join(reloadable);
    }
    Ok(store.map(|store| Arc::new(store) as Arc<dyn MappingStore>))
}

/// The cluster member's settings from the configuration.
fn member_settings(config: &Config) -> MemberSettings {
    let etcd = if config.etcd_endpoints.is_empty() {
        EtcdSource::Managed(Box::new(ManagedEtcdConfig::from_config(
            config,
            config.gossip.advertise_ip,
        )))
    } else {
        EtcdSource::Endpoints {
            urls: config.etcd_endpoints.clone(),
            tls: config.etcd_tls.clone(),
        }
    };
    MemberSettings {
        node: config.node.name.clone(),
        etcd,
        prefix: etcd_prefix(config),
        leader_lease: config.cluster.leader_lease,
        data_dir: Some(config.node.data_dir.clone()),
    }
}

/// The sync engine as this node starts it: for good in single mode, per term in cluster mode.
struct SyncEngine {
    config: Config,
    gossip: GossipHandle,
    sync: SyncHandle,
}

impl SyncEngine {
    /// The engine's inputs; one place for both modes.
    fn deps(
        &self,
        registry: Arc<dyn Registry>,
        store: Arc<dyn MappingStore>,
        settings: EngineSettings,
    ) -> EngineDeps {
        EngineDeps {
            cluster: self.config.node.cluster_name.clone(),
            registry,
            store,
            gossip: self.gossip.clone(),
            settings,
            link: Arc::new(
                rpc::transfer::GrpcLink::with_tls(
                    self.config.rpc.tls.as_ref().map(rpc::tls::RpcTls::client),
                )
                .from_source(self.config.rpc.listen_addr.ip()),
            ),
        }
    }

    /// Single mode: starts the engine on `store` until `token` is cancelled.
    async fn start_single(
        &self,
        registry: Arc<dyn Registry>,
        store: Arc<dyn MappingStore>,
        token: CancellationToken,
        tracker: &TaskTracker,
    ) -> Result<(), NodeError> {
        info!(store = store.kind(), "mapping store open");
        let settings = EngineSettings::from_config(&self.config.sync);
        let deps = self.deps(registry, store, settings);
        Ok(sync::start(deps, &self.sync, token, tracker).await?)
    }
}

#[async_trait]
impl TermEngine for SyncEngine {
    async fn start(
        &self,
        term: TermDeps,
        token: CancellationToken,
        tracker: &TaskTracker,
    ) -> Result<(), SyncError> {
        let mut settings = EngineSettings::from_config(&self.config.sync);
        settings.removals_from = Some(term.removals_from);
        let deps = self.deps(term.registry, term.store, settings);
        sync::start(deps, &self.sync, token, tracker).await
    }

    fn stand_by(&self) {
        self.sync.stop(STANDBY);
    }
}

/// Asks the registry who it is until it answers, then announces its fingerprint in gossip,
/// so that data centres that picked the same cluster name by accident are noticed. Asks
/// again every [`gossip::Profile::identity_refresh`]: a registry that restarted has a new
/// identity (Service Center registers itself under a new instance id), and the members of a
/// data centre must announce the same one or they would look like two data centres.
async fn announce_registry(
    registry: Arc<dyn Registry>,
    gossip: GossipHandle,
    refresh: Duration,
    token: CancellationToken,
) {
    let mut backoff = REGISTRY_RETRY;
    let mut attempt = 0u32;
    let mut announced: Option<String> = None;
    loop {
        attempt += 1;
        let identity = tokio::select! {
            biased;
            () = token.cancelled() => return,
            identity = registry.identity() => identity,
        };
        let wait = match identity {
            Ok(identity) => {
                attempt = 0;
                backoff = REGISTRY_RETRY;
                let fingerprint = gossip::registry_fingerprint(&identity.kind, &identity.id);
                if announced.as_deref() != Some(fingerprint.as_str()) {
                    match &announced {
                        None => {
                            info!(kind = %identity.kind, version = %identity.version, id = %identity.id, %fingerprint, "registry identified");
                        }
                        Some(before) => {
                            info!(kind = %identity.kind, id = %identity.id, %fingerprint, %before, "the registry's identity changed (it restarted); announcing the new one");
                        }
                    }
                    let value = fingerprint.clone();
                    match gossip.update_meta(move |m| m.registry = value).await {
                        Ok(()) => announced = Some(fingerprint),
                        Err(e) => debug!(error = %e, "registry fingerprint not announced"),
                    }
                }
                refresh
            }
            Err(e) => {
                if announced.is_none() {
                    warn!(attempt, error = %e, retry_in = ?backoff.peek(), "registry not reachable yet");
                } else {
                    debug!(error = %e, "registry identity not refreshed");
                }
                if announced.is_none() {
                    if !backoff.wait(&token).await {
                        return;
                    }
                    continue;
                }
                refresh
            }
        };
        tokio::select! {
            () = token.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

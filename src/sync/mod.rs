//! The sync engine: exports local changes, pushes them to the other data centres, imports
//! theirs into the local registry, and keeps mirrored copies alive.
//!
//! - [`ids`], [`copy`], [`export`], [`safety`]: pure building blocks (copy ids and marks,
//!   copy bodies and update plans, the numbered export view, the removal guard).
//! - `exporter`: reads the local change feed into the export view and announces revisions.
//! - `pusher`: sends new increments to every other data centre's active syncer.
//! - `local`: splits the local feed into own instances (for the exporter) and copies (for
//!   the importers), before either side sees it.
//! - `import`: one actor per origin data centre mirrors its instances locally (router,
//!   planner, executor, actor).
//! - `peers`: the active syncer of each other data centre, from gossip.
//! - [`link`]: how the engine reaches those syncers ([`link::PeerLink`]: pull since a
//!   revision, push a batch), with an in-memory twin for tests.
//!
//! [`start`] wires them together; [`SyncHandle`] serves pulls and pushes in model terms
//! ([`SyncHandle::serve_pull`], [`SyncHandle::serve_push`]). The wire (gRPC, protobuf,
//! statuses) is `crate::rpc`'s: nothing here knows it.

pub mod copy;
pub mod export;
mod exporter;
pub mod hold;
pub mod ids;
mod import;
pub mod link;
mod local;
mod metrics;
pub mod peers;
mod pusher;
pub mod safety;
pub mod status;

use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{broadcast::error::RecvError, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use self::copy::CopyLease;
use self::export::Revision;
use self::exporter::{Announce, SharedExportView};
use self::import::{ImportCtx, Importers};
use self::link::{PeerLink, PullAnswer, PullBody, Push, PushReply};
pub use self::metrics::{ServiceFailures, SyncMetrics};
use self::status::{EngineStatus, ExportStatus, MappingEntry, Probe};
use crate::backoff::{Backoff, sleep_or_cancel};
use crate::config::SyncConfig;
use crate::gossip::GossipHandle;
pub use crate::registry::filter::ServiceFilter;
use crate::registry::{Registry, Schema, Tenant};
use crate::store::{Group, MappingStore, Op, StoreError, StoreHandle, spawn_writer};

/// Store writes queued before callers wait (the writer batches them into commits).
const WRITER_QUEUE: usize = 1024;
/// Store meta key of the last export epoch.
const EPOCH_KEY: &str = "export_epoch";
/// Pauses between attempts to load the mapping store.
const LOAD_RETRY: Backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
/// Pause between attempts to record the export epoch (a constant one: the store was just
/// loaded, so it is expected back soon).
const EPOCH_RETRY: Duration = Duration::from_secs(1);

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The engine's settings, from [`SyncConfig`].
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// Export local instances (`false`: import only, as the original's idle task).
    pub export: bool,
    pub lease: CopyLease,
    pub origin_grace: Duration,
    pub keep_stale: bool,
    /// With `keep_stale`: how long past `origin_grace` a stale origin's copies are kept.
    pub keep_stale_for: Duration,
    pub anti_entropy_interval: Duration,
    pub removal_cap: usize,
    /// How long the exporter holds removals after a mass vanishing (`sync::hold`); zero:
    /// no hold.
    pub removal_hold: Duration,
    /// No copy is removed before this moment (a new leader waits out its predecessor's
    /// lease).
    pub removals_from: Option<tokio::time::Instant>,
    /// Which services are exported and imported.
    pub filter: Arc<ServiceFilter>,
}

impl EngineSettings {
    pub fn from_config(config: &SyncConfig) -> EngineSettings {
        EngineSettings {
            export: config.export,
            lease: CopyLease::from_lease(config.copy_lease),
            origin_grace: config.origin_grace,
            keep_stale: config.keep_stale,
            keep_stale_for: config.keep_stale_for,
            anti_entropy_interval: config.anti_entropy_interval,
            removal_cap: config.removal_cap,
            removal_hold: config.removal_hold,
            removals_from: None,
            filter: Arc::new(config.filter.clone()),
        }
    }
}

/// Why the engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("the mapping store is unusable: {0}")]
    Store(#[source] StoreError),
}

struct Core {
    view: Arc<SharedExportView>,
    importers: Arc<Importers>,
    /// The local registry, read for the contracts a peer asks for.
    registry: Arc<dyn Registry>,
    /// The mapping store's kind and writer (`syncer status`).
    store_kind: &'static str,
    store: StoreHandle,
    /// The service filter (`syncer diff` audits against it).
    filter: Arc<ServiceFilter>,
}

/// What a member knows of its node for `syncer status` while no engine runs (a standby).
#[derive(Clone)]
struct NodeFacts {
    registry: Arc<dyn Registry>,
    registry_addresses: Vec<String>,
}

/// Why the engine does not serve a call. `crate::rpc::status` maps these to gRPC statuses;
/// the in-memory link to [`link::LinkError`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// No engine has run yet.
    #[error("the sync engine is starting")]
    Starting,
    /// The engine was stopped ([`SyncHandle::stop`]), for this reason (a standby member of
    /// cluster mode).
    #[error("{0}")]
    Standby(&'static str),
    /// The local registry has not been read in full yet: the view is not a snapshot, and
    /// serving it would make peers remove copies.
    #[error("the local registry has not been read yet")]
    NotReady,
    /// A push claims to come from this data centre.
    #[error("origin {0:?} is this data centre")]
    OwnOrigin(String),
    /// The importer stopped while the push waited for it.
    #[error("the importer is stopping")]
    Stopping,
    /// The origin's importer had no room for the push within its wait (it is stuck on a
    /// slow registry): retried by the sender, and caught up by a pull.
    #[error("the importer is busy: no room for the push, retry later")]
    Busy,
    /// The push's origin names a data centre whose name is claimed by members serving
    /// different registries: nothing of it is imported until the conflict ends.
    #[error(
        "origin {0:?} is claimed by members serving different registries; not importing it until the conflict ends"
    )]
    OriginConflict(String),
    /// Mappings were asked for an origin this data centre does not import (the names of
    /// those it does follow).
    #[error("this data centre does not import {0}; it imports: {1}")]
    UnknownOrigin(String, String),
    /// The importers of these origins did not answer a mapping query in time (busy with a
    /// long reconcile).
    #[error("the importers of {0} did not answer in time; try again")]
    Importing(String),
    /// Contracts were asked for a service this data centre does not export.
    #[error("service {0} is not exported")]
    NotExported(String),
    /// The local registry could not answer (contracts asked for): retry later.
    #[error("the local registry cannot answer: {0}")]
    Registry(String),
}

impl EngineError {
    /// Whether the caller should retry later or elsewhere (the request itself was fine).
    pub fn is_unavailable(&self) -> bool {
        !matches!(
            self,
            EngineError::OwnOrigin(_)
                | EngineError::NotExported(_)
                | EngineError::UnknownOrigin(..)
        )
    }
}

/// Serves pulls and pushes while the engine runs; otherwise they are refused as
/// unavailable ([`EngineError::Starting`], or [`EngineError::Standby`] on a standby member
/// of cluster mode), which callers retry or take elsewhere.
#[derive(Clone, Default)]
pub struct SyncHandle {
    core: Arc<RwLock<Option<Arc<Core>>>>,
    /// Why calls are refused while no engine runs (`None`: starting).
    idle: Arc<RwLock<Option<&'static str>>>,
    metrics: SyncMetrics,
    /// When this handle (the node) was made, Unix milliseconds.
    started_ms: u64,
    node: Option<NodeFacts>,
}

impl std::fmt::Debug for SyncHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncHandle")
            .field("running", &self.running())
            .finish()
    }
}

impl SyncHandle {
    /// A handle whose counters are `metrics`.
    pub fn new(metrics: SyncMetrics) -> SyncHandle {
        SyncHandle {
            core: Arc::default(),
            idle: Arc::default(),
            metrics,
            started_ms: unix_ms(),
            node: None,
        }
    }

    /// The same handle, told the local registry and its addresses, so that `syncer status`
    /// can say whether the registry answers even while no engine runs.
    #[must_use]
    pub fn with_registry(
        mut self,
        registry: Arc<dyn Registry>,
        addresses: Vec<String>,
    ) -> SyncHandle {
        self.node = Some(NodeFacts {
            registry,
            registry_addresses: addresses,
        });
        self
    }

    /// What this data centre's registry holds now, read in full, and the service filter:
    /// the inventory `syncer diff` audits. Only the running engine answers (a standby's view
    /// of the registry is the active member's business).
    ///
    /// # Errors
    /// [`EngineError`] while no engine runs; [`EngineError::NotReady`] when the registry
    /// cannot be read.
    pub async fn inventory(
        &self,
    ) -> Result<(crate::registry::Snapshot, Arc<ServiceFilter>), EngineError> {
        let core = self.core()?;
        let snapshot = core
            .registry
            .snapshot()
            .await
            .map_err(|_| EngineError::NotReady)?;
        Ok((snapshot, core.filter.clone()))
    }

    /// What this member's engine knows (`syncer status`): the registry is asked now (for at
    /// most `probe_timeout`), everything else is read from what the engine tracks.
    pub async fn status(&self, probe_timeout: Duration) -> EngineStatus {
        let core = self.core();
        let idle = core.as_ref().err().map(ToString::to_string);
        let registry = match (&core, &self.node) {
            (Ok(core), _) => Some(core.registry.clone()),
            (Err(_), Some(node)) => Some(node.registry.clone()),
            (Err(_), None) => None,
        };
        let registry = match registry {
            Some(registry) => {
                let answer = tokio::time::timeout(probe_timeout, registry.identity()).await;
                let error = match answer {
                    Ok(Ok(_)) => None,
                    Ok(Err(e)) => Some(e.to_string()),
                    Err(_) => Some(format!("no answer within {probe_timeout:?}")),
                };
                Some(Probe {
                    at_ms: unix_ms(),
                    error,
                })
            }
            None => None,
        };
        let mut status = EngineStatus {
            idle,
            started_ms: self.started_ms,
            registry_addresses: self
                .node
                .as_ref()
                .map(|n| n.registry_addresses.clone())
                .unwrap_or_default(),
            registry,
            store_kind: String::new(),
            store: None,
            export: None,
            origins: Vec::new(),
        };
        if let Ok(core) = core {
            status.store_kind = core.store_kind.to_owned();
            status.store = core.store.metrics().last_commit().map(|c| Probe {
                at_ms: c.at_ms,
                error: c.error,
            });
            let (instances, services) = core.view.counts();
            status.export = Some(ExportStatus {
                ready: core.view.is_ready(),
                revision: core.view.revision(),
                instances: instances as u64,
                services: services as u64,
            });
            status.origins = core.importers.status();
        }
        status
    }

    /// Each origin this engine imports, with its importer's state (no registry call; empty
    /// while no engine runs).
    pub fn origins(&self) -> Vec<status::OriginStatus> {
        self.core()
            .map(|core| core.importers.status())
            .unwrap_or_default()
    }

    /// The mapping entries of this data centre (of `origin` only, when given), with their
    /// state against the local registry; each importer is waited for at most `wait`.
    ///
    /// # Errors
    /// An engine that does not run, or [`EngineError::Importing`].
    pub async fn mappings(
        &self,
        origin: Option<&str>,
        wait: Duration,
    ) -> Result<Vec<MappingEntry>, EngineError> {
        let core = self.core()?;
        core.importers.mappings(origin, wait).await
    }

    /// Whether an engine serves calls.
    pub fn running(&self) -> bool {
        self.core
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }

    /// Stops serving calls (the engine stopped); they are refused with
    /// [`EngineError::Standby`]`(why)`.
    pub fn stop(&self, why: &'static str) {
        *self.idle.write().unwrap_or_else(PoisonError::into_inner) = Some(why);
        *self.core.write().unwrap_or_else(PoisonError::into_inner) = None;
        self.metrics.active.set(0);
    }

    /// The engine's counters (the rpc side counts the calls it refuses as malformed).
    pub(crate) fn metrics(&self) -> &SyncMetrics {
        &self.metrics
    }

    fn core(&self) -> Result<Arc<Core>, EngineError> {
        self.core
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or_else(
                || match *self.idle.read().unwrap_or_else(PoisonError::into_inner) {
                    Some(why) => EngineError::Standby(why),
                    None => EngineError::Starting,
                },
            )
    }

    /// Whether an engine runs to take a call: checked before a request is decoded, so a
    /// member that cannot serve says so whatever the request.
    ///
    /// # Errors
    /// [`EngineError::Starting`] or [`EngineError::Standby`].
    pub fn serving(&self) -> Result<(), EngineError> {
        self.core().map(drop)
    }

    /// Answers a pull from a peer at `since` (`None`: it asks for a snapshot): the
    /// increments after it when they are still held (none: up to date), else a snapshot.
    ///
    /// # Errors
    /// [`EngineError::Starting`], [`EngineError::Standby`] or [`EngineError::NotReady`].
    pub fn serve_pull(&self, since: Option<Revision>) -> Result<PullAnswer, EngineError> {
        let core = self.core()?;
        let view = &core.view;
        if !view.is_ready() {
            return Err(EngineError::NotReady);
        }
        let body = match since.and_then(|since| view.since(since).map(|c| (since, c))) {
            Some((since, changes)) if changes.is_empty() => PullBody::UpToDate(since),
            Some((since, changes)) => PullBody::Increments {
                to: Revision {
                    epoch: since.epoch,
                    seq: changes.last().map_or(since.seq, |(seq, _, _)| *seq),
                },
                changes,
            },
            None => PullBody::Snapshot(view.snapshot()),
        };
        self.metrics.transfer("pull_served", body.kind());
        Ok(PullAnswer {
            origin: view.cluster.clone(),
            body,
        })
    }

    /// Answers a peer's request for the contents of schemas `ids` of exported service
    /// `service_id` of `tenant`: those the local registry has content for, in the order
    /// asked.
    ///
    /// # Errors
    /// [`EngineError::NotExported`] for a service not exported (contracts of other
    /// services do not leave the data centre), [`EngineError::Registry`] when the registry
    /// cannot be read, or an engine that does not serve.
    pub async fn serve_contracts(
        &self,
        tenant: &Tenant,
        service_id: &str,
        ids: &[String],
    ) -> Result<Vec<Schema>, EngineError> {
        let core = self.core()?;
        if !core.view.exports_service(tenant, service_id) {
            self.metrics.reject("contracts", "not_exported");
            return Err(EngineError::NotExported(format!("{tenant}/{service_id}")));
        }
        let mut held = core
            .registry
            .schemas(tenant, service_id)
            .await
            .map_err(|e| EngineError::Registry(e.to_string()))?;
        let mut answer = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(at) = held.iter().position(|s| &s.id == id) {
                answer.push(held.swap_remove(at));
            }
        }
        self.metrics.transfer("contracts_served", "ok");
        Ok(answer)
    }

    /// Applies a push from another data centre; resolves once it is applied (or refused
    /// because it does not continue this side's cursor, which the reply then tells).
    ///
    /// # Errors
    /// [`EngineError::OwnOrigin`] (counted as a rejected push), or an unavailable engine
    /// ([`EngineError::Busy`] when the origin's importer had no room for the push).
    pub async fn serve_push(&self, push: Push) -> Result<PushReply, EngineError> {
        let core = self.core()?;
        if push.origin == core.view.cluster {
            self.metrics.reject("push", "own_origin");
            return Err(EngineError::OwnOrigin(push.origin));
        }
        core.importers.push(push).await
    }
}

/// What the engine runs on.
pub struct EngineDeps {
    /// This data centre's name.
    pub cluster: String,
    pub registry: Arc<dyn Registry>,
    pub store: Arc<dyn MappingStore>,
    pub gossip: GossipHandle,
    pub settings: EngineSettings,
    /// How pulls and pushes reach the other data centres (gRPC in the daemon).
    pub link: Arc<dyn PeerLink>,
}

/// Loads the mapping store, starts every task of the engine on `tracker`, then makes
/// `handle` serve. Returns once started; the tasks run until `token` is cancelled.
///
/// # Errors
/// [`SyncError::Store`] when the store is corrupt (an unavailable store is waited for).
pub async fn start(
    deps: EngineDeps,
    handle: &SyncHandle,
    token: CancellationToken,
    tracker: &TaskTracker,
) -> Result<(), SyncError> {
    let metrics = handle.metrics.clone();
    let Some(stored) = load(deps.store.as_ref(), &token).await? else {
        return Ok(());
    };
    let writer = spawn_writer(deps.store.clone(), WRITER_QUEUE, token.clone(), tracker);
    let status_store = writer.clone();
    let last_epoch = stored
        .meta
        .get(EPOCH_KEY)
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    let epoch = (last_epoch + 1).max(unix_ms());
    loop {
        let write = writer.write(Group::from(Op::PutMeta {
            key: EPOCH_KEY.to_owned(),
            value: epoch.to_string(),
        }));
        match write.await {
            Ok(()) => break,
            Err(e @ (StoreError::Corrupt { .. } | StoreError::Invalid(_))) => {
                return Err(SyncError::Store(e));
            }
            Err(e) => {
                warn!(error = %e, "cannot record the export epoch yet");
                if !sleep_or_cancel(EPOCH_RETRY, &token).await {
                    return Ok(());
                }
            }
        }
    }
    info!(
        epoch,
        mappings = stored.mappings.len(),
        origins = stored.cursors.len(),
        "sync engine starting"
    );

    let (peers_tx, peers_rx) = watch::channel(peers::PeerMap::new());
    let (conflicts_tx, conflicts_rx) = watch::channel(peers::Conflicts::new());
    tracker.spawn(peers::run(
        deps.gossip.clone(),
        deps.cluster.clone(),
        peers_tx,
        conflicts_tx,
        token.clone(),
    ));
    let view = Arc::new(SharedExportView::new(deps.cluster.clone(), epoch));
    let ctx = Arc::new(
        ImportCtx::new(
            deps.cluster.clone(),
            deps.registry.clone(),
            writer,
            deps.settings.clone(),
            metrics.clone(),
            peers_rx.clone(),
            deps.link.clone(),
        )
        .with_conflicts(conflicts_rx),
    );
    let importers = Importers::new(ctx, stored.mappings, token.clone(), tracker.clone());
    // The feed is split before either side sees it: the exporter reads own instances only,
    // the import router gets the copies.
    let feed = local::SplitFeed::new(deps.registry.change_feed(), importers.clone());
    tracker.spawn(exporter::run(
        Box::new(feed),
        view.clone(),
        exporter::ExportSettings {
            enabled: deps.settings.export,
            removal_hold: deps.settings.removal_hold,
            filter: deps.settings.filter.clone(),
        },
        deps.gossip.clone(),
        metrics.clone(),
        token.clone(),
    ));
    tracker.spawn(pusher::run(
        view.clone(),
        peers_rx.clone(),
        deps.link,
        metrics,
        token.clone(),
        tracker.clone(),
    ));
    tracker.spawn(follow_peers(peers_rx, importers.clone(), token.clone()));
    tracker.spawn(follow_announcements(
        deps.gossip.clone(),
        deps.cluster.clone(),
        importers.clone(),
        token,
    ));
    *handle.core.write().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(Core {
        view,
        importers,
        registry: deps.registry,
        store_kind: deps.store.kind(),
        store: status_store,
        filter: deps.settings.filter.clone(),
    }));
    handle.metrics.active.set(1);
    Ok(())
}

/// Loads the store, waiting while it is unavailable; `None` when cancelled first.
async fn load(
    store: &dyn MappingStore,
    token: &CancellationToken,
) -> Result<Option<crate::store::Stored>, SyncError> {
    let mut retry = LOAD_RETRY;
    loop {
        let result = tokio::select! {
            () = token.cancelled() => return Ok(None),
            result = store.load() => result,
        };
        match result {
            Ok(stored) => return Ok(Some(stored)),
            Err(e @ (StoreError::Corrupt { .. } | StoreError::Invalid(_) | StoreError::Io(_))) => {
                return Err(SyncError::Store(e));
            }
            Err(e) => {
                warn!(store = store.kind(), error = %e, retry_in = ?retry.peek(), "cannot load the mapping store yet");
                if !retry.wait(token).await {
                    return Ok(None);
                }
            }
        }
    }
}

async fn follow_peers(
    mut peers: watch::Receiver<peers::PeerMap>,
    importers: Arc<Importers>,
    token: CancellationToken,
) {
    loop {
        // A copy, not the borrow: the watch's read lock must not be held while an actor is
        // created (`Actor::new` borrows the same watch; a second read behind a waiting
        // writer, the peer directory, deadlocks every worker of the runtime).
        let seen = peers.borrow_and_update().clone();
        importers.peers_seen(&seen);
        tokio::select! {
            () = token.cancelled() => return,
            changed = peers.changed() => if changed.is_err() { return },
        }
    }
}

async fn follow_announcements(
    gossip: GossipHandle,
    local_cluster: String,
    importers: Arc<Importers>,
    token: CancellationToken,
) {
    let mut events = gossip.events();
    loop {
        let event = tokio::select! {
            () = token.cancelled() => return,
            event = events.recv() => event,
        };
        match event {
            Ok(event) => {
                if let Some(a) = Announce::decode(&event.payload)
                    && a.cluster != local_cluster
                    && !a.cluster.is_empty()
                {
                    importers.announce(
                        &a.cluster,
                        Revision {
                            epoch: a.epoch,
                            seq: a.seq,
                        },
                    );
                }
            }
            Err(RecvError::Lagged(_)) => {}
            Err(RecvError::Closed) => return,
        }
    }
}

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
//! - `transfer`: the `Pull`/`Push` calls, validated.
//!
//! [`start`] wires them together; [`SyncHandle`] serves the `Pull` and `Push` RPCs.

pub mod copy;
pub mod export;
mod exporter;
pub mod ids;
mod import;
mod local;
mod metrics;
pub mod peers;
mod pusher;
pub mod safety;
mod transfer;

use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{broadcast::error::RecvError, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use self::copy::CopyLease;
use self::export::Revision;
use self::exporter::{Announce, Exported};
use self::import::{ImportCtx, Importers};
pub use self::metrics::SyncMetrics;
use self::transfer::Channels;
pub use self::transfer::MAX_MESSAGE_BYTES;
use crate::config::SyncConfig;
use crate::gossip::GossipHandle;
use crate::registry::Registry;
use crate::rpc::convert;
use crate::rpc::proto::{
    ChangeBatch, PullChunk, PullComplete, PullRequest, PushReply, PushRequest, pull_chunk,
};
use crate::store::{Group, MappingStore, Op, StoreError, spawn_writer};

/// Store writes queued before callers wait (the writer batches them into commits).
const WRITER_QUEUE: usize = 1024;
/// Store meta key of the last export epoch.
const EPOCH_KEY: &str = "export_epoch";
/// Longest pause between attempts to load the mapping store.
const LOAD_RETRY_MAX: Duration = Duration::from_secs(30);

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
    pub anti_entropy_interval: Duration,
    pub removal_cap: usize,
    /// No copy is removed before this moment (a new leader waits out its predecessor's
    /// lease).
    pub removals_from: Option<tokio::time::Instant>,
}

impl EngineSettings {
    pub fn from_config(config: &SyncConfig) -> EngineSettings {
        EngineSettings {
            export: config.export,
            lease: CopyLease::from_lease(config.copy_lease),
            origin_grace: config.origin_grace,
            keep_stale: config.keep_stale,
            anti_entropy_interval: config.anti_entropy_interval,
            removal_cap: config.removal_cap,
            removals_from: None,
        }
    }
}

/// Why the engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("the mapping store is unusable: {0}")]
    Store(StoreError),
}

struct Core {
    exported: Arc<Exported>,
    importers: Arc<Importers>,
}

/// Serves `Pull` and `Push` while the engine runs; otherwise they answer `unavailable`
/// (starting, or a standby member of cluster mode), which callers retry or take elsewhere.
#[derive(Clone, Default)]
pub struct SyncHandle {
    core: Arc<RwLock<Option<Arc<Core>>>>,
    /// Why calls are refused while no engine runs.
    idle: Arc<RwLock<&'static str>>,
    metrics: SyncMetrics,
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
            idle: Arc::new(RwLock::new("the sync engine is starting")),
            metrics,
        }
    }

    /// Whether an engine serves calls.
    pub fn running(&self) -> bool {
        self.core
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }

    /// Stops serving calls (the engine stopped); they answer `unavailable` with `why`.
    pub fn stop(&self, why: &'static str) {
        *self.idle.write().unwrap_or_else(PoisonError::into_inner) = why;
        *self.core.write().unwrap_or_else(PoisonError::into_inner) = None;
        self.metrics.active.set(0);
    }

    fn core(&self) -> Result<Arc<Core>, tonic::Status> {
        self.core
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or_else(|| {
                tonic::Status::unavailable(
                    *self.idle.read().unwrap_or_else(PoisonError::into_inner),
                )
            })
    }

    /// Answers a `Pull`: the increments after the asker's revision when they are still
    /// held, else a snapshot in chunks; always closed by a completion marker.
    ///
    /// # Errors
    /// `unavailable` while the engine starts.
    pub fn pull(&self, request: &PullRequest) -> Result<Vec<PullChunk>, tonic::Status> {
        let core = self.core()?;
        let exported = &core.exported;
        if !exported.is_ready() {
            return Err(tonic::Status::unavailable(
                "the local registry has not been read yet",
            ));
        }
        let since = (request.since_epoch != 0).then_some(Revision {
            epoch: request.since_epoch,
            seq: request.since_seq,
        });
        let mut chunks = Vec::new();
        if let Some(since) = since
            && let Some(changes) = exported.since(since)
        {
            let to = changes.last().map_or(since.seq, |(seq, _, _)| *seq);
            let kind = if changes.is_empty() {
                "up_to_date"
            } else {
                "increments"
            };
            let mut rest = &changes[..];
            while !rest.is_empty() {
                let batch = transfer::fitting(rest);
                rest = &rest[batch.len()..];
                chunks.push(PullChunk {
                    body: Some(pull_chunk::Body::Increments(ChangeBatch {
                        changes: batch
                            .iter()
                            .map(|(seq, ms, export)| convert::change_to_wire(*seq, *ms, export))
                            .collect(),
                    })),
                });
            }
            chunks.push(complete(&exported.cluster, since.epoch, to, kind, 0, 0));
            self.metrics.transfer("pull_served", kind);
            return Ok(chunks);
        }
        let snapshot = exported.snapshot();
        for data in convert::snapshot_chunks(&snapshot.items) {
            chunks.push(PullChunk {
                body: Some(pull_chunk::Body::Snapshot(data)),
            });
        }
        chunks.push(complete(
            &exported.cluster,
            snapshot.revision.epoch,
            snapshot.revision.seq,
            "snapshot",
            snapshot.digest.count,
            snapshot.digest.sum,
        ));
        self.metrics.transfer("pull_served", "snapshot");
        Ok(chunks)
    }

    /// Applies a `Push` from another data centre.
    ///
    /// # Errors
    /// `invalid_argument` for a malformed push (counted by reason), `unavailable` while the
    /// engine starts or stops.
    pub async fn push(&self, request: PushRequest) -> Result<PushReply, tonic::Status> {
        let core = self.core()?;
        let push = convert::push_from_wire(request).map_err(|e| {
            self.metrics.reject("push", e.reason());
            warn!(error = %e, "malformed push refused");
            tonic::Status::invalid_argument(e.to_string())
        })?;
        if push.origin == core.exported.cluster {
            self.metrics.reject("push", "own_origin");
            return Err(tonic::Status::invalid_argument(format!(
                "origin {:?} is this data centre",
                push.origin
            )));
        }
        core.importers
            .push(push)
            .await
            .ok_or_else(|| tonic::Status::unavailable("the importer is stopping"))
    }
}

fn complete(origin: &str, epoch: u64, seq: u64, kind: &str, count: u64, digest: u64) -> PullChunk {
    PullChunk {
        body: Some(pull_chunk::Body::Complete(PullComplete {
            origin: origin.to_owned(),
            epoch,
            seq,
            kind: kind.to_owned(),
            count,
            digest,
        })),
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
                tokio::select! {
                    () = token.cancelled() => return Ok(()),
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
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
    tracker.spawn(peers::run(
        deps.gossip.clone(),
        deps.cluster.clone(),
        peers_tx,
        token.clone(),
    ));
    let channels = Arc::new(Channels::default());
    let exported = Arc::new(Exported::new(deps.cluster.clone(), epoch));
    let ctx = Arc::new(ImportCtx::new(
        deps.cluster.clone(),
        deps.registry.clone(),
        writer,
        deps.settings.clone(),
        metrics.clone(),
        peers_rx.clone(),
        channels.clone(),
    ));
    let importers = Importers::new(ctx, stored.mappings, token.clone(), tracker.clone());
    // The feed is split before either side sees it: the exporter reads own instances only,
    // the import router gets the copies.
    let feed = local::SplitFeed::new(deps.registry.change_feed(), importers.clone());
    tracker.spawn(exporter::run(
        Box::new(feed),
        exported.clone(),
        deps.settings.export,
        deps.gossip.clone(),
        metrics.clone(),
        token.clone(),
    ));
    tracker.spawn(pusher::run(
        exported.clone(),
        peers_rx.clone(),
        channels,
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
        exported,
        importers,
    }));
    handle.metrics.active.set(1);
    Ok(())
}

/// Loads the store, waiting while it is unavailable; `None` when cancelled first.
async fn load(
    store: &dyn MappingStore,
    token: &CancellationToken,
) -> Result<Option<crate::store::Stored>, SyncError> {
    let mut backoff = Duration::from_millis(500);
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
                warn!(store = store.kind(), error = %e, retry_in = ?backoff, "cannot load the mapping store yet");
                tokio::select! {
                    () = token.cancelled() => return Ok(None),
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(LOAD_RETRY_MAX);
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
        importers.peers_seen(&peers.borrow_and_update());
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

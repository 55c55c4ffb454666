//! The import side: one actor per origin data centre mirrors that origin's exported
//! instances into the local registry and keeps the copies alive.
//!
//! Each actor holds three views and reconciles them:
//! - **desired**: the origin's exported instances, from pushes and pulls;
//! - **mappings**: the copies syncer registered (the mapping store, written intent first);
//! - **present**: the copies the local registry actually holds, from its change feed and
//!   written through by the actor's own calls.
//!
//! Work on a set of instances is planned in memory, then executed with bounded concurrency
//! (registry calls and store writes of one batch overlap; the store writer merges the
//! writes into few commits). The actor handles one message at a time, so plans never race.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use super::copy::{
    CopyUpdate, PresentCopy, copy_body, fingerprint, plan_update, properties_digest,
};
use super::export::{Export, Increment, Revision};
use super::exporter::saturating_i64;
use super::ids::{OriginKey, copy_instance_id, copy_origin, is_copy};
use super::link::{LinkError, PeerLink, Pulled, Push, PushReply};
use super::metrics::{OriginLabel, SyncMetrics};
use super::peers::PeerMap;
use super::safety::{RemovalGuard, Removals};
use super::{EngineSettings, unix_ms};
use crate::registry::{Change, Instance, InstanceRef, Registry, RegistryError, Service, Tenant};
use crate::store::{Cursor, Group, Mapping, Op, StoreError, StoreHandle};

/// Registry calls of one batch in flight at once.
const PARALLEL_CALLS: usize = 32;
/// Instances planned and executed together: a snapshot of 10 000 is reconciled in slices,
/// so the plans and results of all of them are never held at once.
const RECONCILE_SLICE: usize = 1024;
/// How often an actor looks at its timers.
const TICK: Duration = Duration::from_millis(100);
/// A gossip announcement that the origin moved on triggers a pull after this long unless a
/// push brought the change first.
const ANNOUNCE_PULL_DELAY: Duration = Duration::from_millis(300);
/// Failed work is retried after this long.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// A whole pull stream may take this long.
const PULL_TIMEOUT: Duration = Duration::from_secs(60);
/// Replacement generations searched when adopting a copy that has no mapping.
const ADOPT_GENERATIONS: u32 = 8;
/// Cursors are written to the store at most this often (they are informational: a
/// restarted importer always starts from a full snapshot).
const CURSOR_WRITE_EVERY: Duration = Duration::from_secs(5);
/// Loud removal-cap warnings at most this often per origin.
const CAP_WARN_EVERY: Duration = Duration::from_secs(10);

/// What the local registry's feed said about syncer's copies.
#[derive(Debug, Clone)]
pub(crate) enum LocalEvent {
    /// Every copy of this origin present now (from a full resync), by instance id.
    Present(Vec<(String, PresentCopy)>),
    /// A copy appeared or changed; `marked` when it carries this origin's mark.
    Seen {
        id: String,
        copy: Box<PresentCopy>,
        marked: bool,
    },
    /// An instance is gone (maybe a copy).
    Gone(InstanceRef),
    /// A service is gone with all its instances.
    ServiceGone(Tenant, String),
}

enum Msg {
    Push(Push, oneshot::Sender<PushReply>),
    Announce(Revision),
    Local(LocalEvent),
}

/// Shared by every actor.
pub(crate) struct ImportCtx {
    /// This data centre.
    pub cluster: String,
    pub registry: Arc<dyn Registry>,
    pub store: StoreHandle,
    pub settings: EngineSettings,
    pub metrics: SyncMetrics,
    pub peers: watch::Receiver<PeerMap>,
    pub link: Arc<dyn PeerLink>,
    /// Local service ids of origin services already ensured, with the properties set.
    services: Mutex<HashMap<ServiceKey, EnsuredService>>,
}

/// `(origin, tenant, origin service id)`.
type ServiceKey = (String, Tenant, String);
/// The local id of an ensured service and the properties set on it.
type EnsuredService = (String, BTreeMap<String, String>);

impl ImportCtx {
    pub(crate) fn new(
        cluster: String,
        registry: Arc<dyn Registry>,
        store: StoreHandle,
        settings: EngineSettings,
        metrics: SyncMetrics,
        peers: watch::Receiver<PeerMap>,
        link: Arc<dyn PeerLink>,
    ) -> ImportCtx {
        ImportCtx {
            cluster,
            registry,
            store,
            settings,
            metrics,
            peers,
            link,
            services: Mutex::new(HashMap::new()),
        }
    }

    fn cached_service(&self, key: &ServiceKey) -> Option<EnsuredService> {
        self.services
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .cloned()
    }

    fn cache_service(&self, key: ServiceKey, id: String, properties: BTreeMap<String, String>) {
        self.services
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, (id, properties));
    }

    fn forget_services(&self, tenant: &Tenant, local_id: &str) {
        self.services
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|(_, t, _), (id, _)| !(t == tenant && id == local_id));
    }
}

/// Every origin's actor, created on first need.
pub(crate) struct Importers {
    ctx: Arc<ImportCtx>,
    actors: Mutex<HashMap<String, mpsc::UnboundedSender<Msg>>>,
    /// Mappings loaded from the store, handed to each origin's actor when it starts.
    loaded: Mutex<HashMap<String, Vec<Mapping>>>,
    /// Set once the first full resync of the local registry was routed: an actor created
    /// later knows that its origin had no copies then (any copy would have created it).
    local_seen: std::sync::atomic::AtomicBool,
    token: CancellationToken,
    tracker: TaskTracker,
}

impl Importers {
    pub(crate) fn new(
        ctx: Arc<ImportCtx>,
        mappings: Vec<Mapping>,
        token: CancellationToken,
        tracker: TaskTracker,
    ) -> Arc<Importers> {
        let mut loaded: HashMap<String, Vec<Mapping>> = HashMap::new();
        for mapping in mappings {
            loaded
                .entry(mapping.origin.clone())
                .or_default()
                .push(mapping);
        }
        let origins: Vec<String> = loaded.keys().cloned().collect();
        let importers = Arc::new(Importers {
            ctx,
            actors: Mutex::new(HashMap::new()),
            loaded: Mutex::new(loaded),
            local_seen: std::sync::atomic::AtomicBool::new(false),
            token,
            tracker,
        });
        // Origins with copies start at once: their copies are kept alive while the origin
        // is reached again (within the grace period).
        for origin in origins {
            importers.actor(&origin);
        }
        importers
    }

    fn actor(&self, origin: &str) -> mpsc::UnboundedSender<Msg> {
        let mut actors = self.actors.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(tx) = actors.get(origin) {
            return tx.clone();
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let mappings = self
            .loaded
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(origin)
            .unwrap_or_default();
        let mut actor = Actor::new(origin.to_owned(), self.ctx.clone(), mappings);
        actor.local_ready = self.local_seen.load(std::sync::atomic::Ordering::SeqCst);
        self.tracker.spawn(actor.run(rx, self.token.clone()));
        actors.insert(origin.to_owned(), tx.clone());
        tx
    }

    /// Makes sure every data centre in `peers` has an actor.
    pub(crate) fn peers_seen(&self, peers: &PeerMap) {
        for origin in peers.keys() {
            self.actor(origin);
        }
    }

    /// A push from `push.origin`; resolves when it is applied (or refused).
    pub(crate) async fn push(&self, push: Push) -> Option<PushReply> {
        let (tx, rx) = oneshot::channel();
        self.actor(&push.origin).send(Msg::Push(push, tx)).ok()?;
        rx.await.ok()
    }

    /// A gossip announcement: `origin` is at `revision`.
    pub(crate) fn announce(&self, origin: &str, revision: Revision) {
        let _ = self.actor(origin).send(Msg::Announce(revision));
    }

    /// Routes what the local feed says about copies to the actors concerned, moving the
    /// copies out: the rest is what the exporter needs (it never exports copies).
    pub(crate) fn take_local_copies(&self, changes: Vec<Change>) -> Vec<Change> {
        let mut rest = Vec::with_capacity(changes.len());
        for change in changes {
            match change {
                Change::Resync(mut snapshot) => {
                    let (copies, own): (Vec<Instance>, Vec<Instance>) =
                        snapshot.instances.into_iter().partition(is_copy);
                    snapshot.instances = own;
                    self.route_present(copies);
                    rest.push(Change::Resync(snapshot));
                }
                Change::Instance(instance) if is_copy(&instance) => {
                    let copy = Box::new(PresentCopy::of(&instance));
                    let origin = copy_origin(&instance).map(str::to_owned);
                    let id = instance.instance_id;
                    match origin {
                        Some(origin) if origin != self.ctx.cluster => {
                            let _ = self.actor(&origin).send(Msg::Local(LocalEvent::Seen {
                                id,
                                copy,
                                marked: true,
                            }));
                        }
                        // A copy that lost its origin mark: every actor checks its mappings.
                        _ => self.to_all(&LocalEvent::Seen {
                            id,
                            copy,
                            marked: false,
                        }),
                    }
                }
                Change::InstanceRemoved(r) => {
                    if r.instance_id.starts_with(super::ids::COPY_ID_PREFIX) {
                        self.to_all(&LocalEvent::Gone(r.clone()));
                    }
                    rest.push(Change::InstanceRemoved(r));
                }
                Change::ServiceRemoved { tenant, service_id } => {
                    self.ctx.forget_services(&tenant, &service_id);
                    self.to_all(&LocalEvent::ServiceGone(tenant.clone(), service_id.clone()));
                    rest.push(Change::ServiceRemoved { tenant, service_id });
                }
                other => rest.push(other),
            }
        }
        rest
    }

    /// A full resync's copies: every actor learns the complete set of its origin's.
    fn route_present(&self, copies: Vec<Instance>) {
        let mut by_origin: HashMap<String, Vec<(String, PresentCopy)>> = HashMap::new();
        for instance in copies {
            if let Some(origin) = copy_origin(&instance) {
                let copy = PresentCopy::of(&instance);
                by_origin
                    .entry(origin.to_owned())
                    .or_default()
                    .push((instance.instance_id, copy));
            }
        }
        self.local_seen
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let known: Vec<String> = self
            .actors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .cloned()
            .collect();
        for origin in known {
            by_origin.entry(origin).or_default();
        }
        for (origin, present) in by_origin {
            if origin == self.ctx.cluster {
                continue;
            }
            let _ = self
                .actor(&origin)
                .send(Msg::Local(LocalEvent::Present(present)));
        }
    }

    fn to_all(&self, event: &LocalEvent) {
        for tx in self
            .actors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
        {
            let _ = tx.send(Msg::Local(event.clone()));
        }
    }
}

/// One origin instance as exported.
#[derive(Debug, Clone)]
struct Desired {
    service: Arc<Service>,
    instance: Arc<Instance>,
}

/// One unit of work on the local registry.
#[derive(Debug)]
enum Action {
    /// Record a copy found in the registry without a mapping (left by a crash).
    Adopt { key: InstanceRef, mapping: Mapping },
    /// Register a copy of `instance` (new, missing or replacing `replace`).
    Register {
        key: InstanceRef,
        service: Arc<Service>,
        instance: Arc<Instance>,
        generation: u32,
        replace: Option<Mapping>,
    },
    /// Change status and/or properties of the present copy.
    Update {
        key: InstanceRef,
        copy: InstanceRef,
        status: Option<String>,
        properties: Option<BTreeMap<String, String>>,
    },
    /// Remove a copy and its mapping (either may be missing).
    Remove {
        key: Option<InstanceRef>,
        copy: InstanceRef,
        mapping: Option<Mapping>,
    },
}

/// What an executed action changed.
enum Done {
    Mapped {
        key: InstanceRef,
        mapping: Box<Mapping>,
        /// What was registered (`None`: adopted).
        registered: Option<Box<PresentCopy>>,
        dropped: Option<Box<Mapping>>,
    },
    Updated {
        copy_id: String,
        status: Option<String>,
        properties: Option<BTreeMap<String, String>>,
    },
    Removed {
        key: Option<InstanceRef>,
        copy_id: String,
    },
    /// Failed; retry these keys (or the whole view) later.
    Failed(Option<InstanceRef>),
}

struct Actor {
    origin: String,
    /// `origin` as a metric label.
    label: OriginLabel,
    ctx: Arc<ImportCtx>,
    desired: HashMap<InstanceRef, Desired>,
    /// The services of `desired`, each held once however many instances it has.
    services: HashMap<(Tenant, String), Arc<Service>>,
    mappings: HashMap<InstanceRef, Mapping>,
    /// Copy instance id → origin instance, for every mapping.
    by_copy: HashMap<String, InstanceRef>,
    /// Mappings whose origin instance already has a newer one (a crash mid-replacement).
    extra_mappings: Vec<Mapping>,
    /// Copies of this origin in the local registry, by copy instance id.
    present: HashMap<String, PresentCopy>,
    /// Whether `present` was filled by a full resync of the local registry.
    local_ready: bool,
    cursor: Option<Revision>,
    guard: RemovalGuard,
    /// Instances (origin refs) to reconcile at the next opportunity.
    dirty: HashSet<InstanceRef>,
    /// Copies present without a mapping, or extra mappings, need a look.
    orphans_dirty: bool,
    retry_at: Option<Instant>,
    last_ok: Instant,
    stale: bool,
    pull_at: Option<Instant>,
    next_anti_entropy: Instant,
    next_heartbeat: Instant,
    cursor_written: Option<(Revision, Instant)>,
    last_cap_warning: Option<Instant>,
}

impl Actor {
    fn new(origin: String, ctx: Arc<ImportCtx>, loaded: Vec<Mapping>) -> Actor {
        let now = Instant::now();
        let mut mappings: HashMap<InstanceRef, Mapping> = HashMap::new();
        let mut extra_mappings = Vec::new();
        for mapping in loaded {
            let key = origin_ref(&mapping);
            match mappings.get(&key) {
                Some(kept) if kept.generation >= mapping.generation => extra_mappings.push(mapping),
                _ => {
                    if let Some(old) = mappings.insert(key, mapping) {
                        extra_mappings.push(old);
                    }
                }
            }
        }
        let by_copy = mappings
            .iter()
            .map(|(k, m)| (m.instance_id.clone(), k.clone()))
            .collect();
        let heartbeat = ctx.settings.lease.heartbeat_period();
        let removal_cap = ctx.settings.removal_cap;
        let mut guard = RemovalGuard::new(removal_cap);
        if let Some(t) = ctx.settings.removals_from {
            guard.hold_until(t);
        }
        info!(origin = %origin, copies = mappings.len(), "importer started");
        Actor {
            label: ctx.metrics.origin(&origin),
            origin,
            ctx,
            desired: HashMap::new(),
            services: HashMap::new(),
            mappings,
            by_copy,
            extra_mappings,
            present: HashMap::new(),
            local_ready: false,
            cursor: None,
            guard,
            dirty: HashSet::new(),
            orphans_dirty: false,
            retry_at: None,
            last_ok: now,
            stale: false,
            // The first pull goes as soon as the origin's syncer is known.
            pull_at: Some(now),
            next_anti_entropy: now,
            next_heartbeat: now + heartbeat,
            cursor_written: None,
            last_cap_warning: None,
        }
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Msg>, token: CancellationToken) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut peers = self.ctx.peers.clone();
        loop {
            tokio::select! {
                biased;
                () = token.cancelled() => break,
                msg = rx.recv() => match msg {
                    Some(msg) => self.handle(msg).await,
                    None => break,
                },
                Ok(()) = peers.changed() => {
                    let known = peers.borrow_and_update().contains_key(&self.origin);
                    if known && self.cursor.is_none() {
                        self.pull_at = Some(Instant::now());
                    }
                }
                _ = tick.tick() => self.on_tick().await,
            }
        }
        self.write_cursor(true).await;
        debug!(origin = %self.origin, "importer stopped");
    }

    async fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Push(push, reply) => {
                let applied = self.on_push(push).await;
                let cursor = self.cursor.unwrap_or_default();
                let _ = reply.send(PushReply {
                    applied,
                    epoch: cursor.epoch,
                    seq: cursor.seq,
                });
            }
            Msg::Announce(revision) => {
                if self.cursor != Some(revision) && self.pull_at.is_none() {
                    self.pull_at = Some(Instant::now() + ANNOUNCE_PULL_DELAY);
                }
            }
            Msg::Local(event) => self.on_local(event).await,
        }
    }

    async fn on_push(&mut self, push: Push) -> bool {
        let expected = Revision {
            epoch: push.epoch,
            seq: push.from_seq,
        };
        if self.cursor != Some(expected) {
            self.ctx.metrics.transfer("push_received", "out_of_order");
            debug!(origin = %self.origin, cursor = ?self.cursor, push_from = ?expected, "push does not continue our cursor; pulling");
            if self.pull_at.is_none() {
                self.pull_at = Some(Instant::now());
            }
            return false;
        }
        self.ctx.metrics.transfer("push_received", "applied");
        self.exchanged();
        let to = Revision {
            epoch: push.epoch,
            seq: push.to_seq,
        };
        let observed = self.apply_changes(push.changes);
        self.cursor = Some(to);
        self.reconcile().await;
        self.observe_latency(&observed);
        self.write_cursor(false).await;
        true
    }

    async fn on_local(&mut self, event: LocalEvent) {
        match event {
            LocalEvent::Present(copies) => {
                self.present = copies.into_iter().collect();
                self.local_ready = true;
                // Compare everything: copies deleted behind syncer's back, orphans.
                self.dirty.extend(self.desired.keys().cloned());
                self.dirty.extend(self.mappings.keys().cloned());
                self.orphans_dirty = true;
            }
            LocalEvent::Seen { id, copy, marked } => {
                if !marked && !self.by_copy.contains_key(&id) {
                    return;
                }
                let key = self.key_of_copy(&id);
                self.present.insert(id, *copy);
                match key {
                    Some(key) => {
                        self.dirty.insert(key);
                    }
                    None => self.orphans_dirty = true,
                }
            }
            LocalEvent::Gone(r) => {
                if self.present.remove(&r.instance_id).is_some()
                    && let Some(key) = self.key_of_copy(&r.instance_id)
                {
                    self.dirty.insert(key);
                }
            }
            LocalEvent::ServiceGone(tenant, service_id) => {
                let gone: Vec<String> = self
                    .present
                    .iter()
                    .filter(|(_, c)| c.tenant == tenant && c.service_id == service_id)
                    .map(|(id, _)| id.clone())
                    .collect();
                for id in gone {
                    self.present.remove(&id);
                    if let Some(key) = self.key_of_copy(&id) {
                        self.dirty.insert(key);
                    }
                }
            }
        }
        if !self.dirty.is_empty() || self.orphans_dirty {
            self.reconcile().await;
        }
    }

    fn key_of_copy(&self, copy_id: &str) -> Option<InstanceRef> {
        self.by_copy.get(copy_id).cloned()
    }

    fn set_mapping(&mut self, key: InstanceRef, mapping: Mapping) {
        let id = mapping.instance_id.clone();
        self.by_copy.insert(id.clone(), key.clone());
        if let Some(old) = self.mappings.insert(key, mapping)
            && old.instance_id != id
        {
            self.by_copy.remove(&old.instance_id);
        }
    }

    fn drop_mapping(&mut self, key: &InstanceRef) {
        if let Some(old) = self.mappings.remove(key) {
            self.by_copy.remove(&old.instance_id);
        }
    }

    async fn on_tick(&mut self) {
        let now = Instant::now();
        let grace = self.ctx.settings.origin_grace;
        if !self.stale && now.duration_since(self.last_ok) > grace {
            self.set_stale(true);
            if self.ctx.settings.keep_stale {
                warn!(origin = %self.origin, ?grace, copies = self.mappings.len(), "no successful exchange with this data centre within the grace period; keeping its copies alive as configured (--keep-stale-copies)");
            } else {
                warn!(origin = %self.origin, ?grace, copies = self.mappings.len(), "no successful exchange with this data centre within the grace period; its copies are no longer kept alive and expire with their lease");
            }
        }
        if now >= self.next_anti_entropy {
            self.next_anti_entropy = now + self.ctx.settings.anti_entropy_interval;
            if self.pull_at.is_none() {
                self.pull_at = Some(now);
            }
        }
        if self.pull_at.is_some_and(|at| now >= at) {
            self.pull_at = None;
            self.pull().await;
        }
        if now >= self.next_heartbeat {
            self.next_heartbeat = now + self.ctx.settings.lease.heartbeat_period();
            self.heartbeat().await;
        }
        if self.retry_at.is_some_and(|at| now >= at) {
            self.retry_at = None;
            self.reconcile().await;
        }
        self.write_cursor(false).await;
    }

    fn set_stale(&mut self, stale: bool) {
        self.stale = stale;
        self.ctx
            .metrics
            .stale
            .get_or_create(&self.label)
            .set(i64::from(stale));
    }

    /// A successful exchange with the origin.
    fn exchanged(&mut self) {
        self.last_ok = Instant::now();
        if self.stale {
            self.set_stale(false);
            info!(origin = %self.origin, "this data centre is reachable again");
            self.dirty.extend(self.desired.keys().cloned());
            // Heartbeat at once: copies may be close to the end of their lease.
            self.next_heartbeat = Instant::now();
        }
    }

    async fn pull(&mut self) {
        let Some(addr) = self.ctx.peers.borrow().get(&self.origin).copied() else {
            debug!(origin = %self.origin, "no active syncer known for this data centre");
            return;
        };
        let since = if self.guard.is_complete(&self.origin) {
            self.cursor
        } else {
            None
        };
        let result = self
            .ctx
            .link
            .pull(addr, &self.ctx.cluster, &self.origin, since, PULL_TIMEOUT)
            .await;
        match result {
            Ok(pulled) => {
                self.exchanged();
                self.apply_pulled(pulled).await;
            }
            Err(e) => {
                self.ctx.metrics.transfer("pull", e.outcome());
                match &e {
                    LinkError::Malformed(_) | LinkError::Incomplete(_) => {
                        warn!(origin = %self.origin, %addr, error = %e, "pull refused")
                    }
                    _ => debug!(origin = %self.origin, %addr, error = %e, "pull failed"),
                }
                self.pull_at = Some(Instant::now() + RETRY_AFTER);
            }
        }
    }

    async fn apply_pulled(&mut self, pulled: Pulled) {
        match pulled {
            Pulled::UpToDate(revision) => {
                self.ctx.metrics.transfer("pull", "up_to_date");
                if self.cursor != Some(revision) {
                    // Same content, new numbering (cannot happen with a sane peer); a
                    // snapshot sets it straight.
                    self.cursor = None;
                    self.guard.mark_incomplete(&self.origin);
                    self.pull_at = Some(Instant::now());
                }
            }
            Pulled::Increments { to, changes } => {
                self.ctx.metrics.transfer("pull", "increments");
                let observed = self.apply_changes(changes);
                self.cursor = Some(to);
                self.reconcile().await;
                self.observe_latency(&observed);
            }
            Pulled::Snapshot { revision, items } => {
                self.ctx.metrics.transfer("pull", "snapshot");
                let count = items.len();
                let mut services: HashMap<(Tenant, String), Arc<Service>> = HashMap::new();
                let mut desired = HashMap::with_capacity(items.len());
                for (service, instance) in items {
                    // Chunks share a service body within a chunk; here across them.
                    let service = services
                        .entry((service.tenant.clone(), service.service_id.clone()))
                        .or_insert(service)
                        .clone();
                    desired.insert(
                        instance.reference(),
                        Desired {
                            service,
                            instance: Arc::new(instance),
                        },
                    );
                }
                self.services = services;
                self.dirty.extend(self.desired.keys().cloned());
                self.dirty.extend(desired.keys().cloned());
                self.dirty.extend(self.mappings.keys().cloned());
                self.desired = desired;
                self.cursor = Some(revision);
                self.orphans_dirty = true;
                let first = !self.guard.is_complete(&self.origin);
                self.guard.mark_complete(&self.origin);
                if first {
                    info!(origin = %self.origin, instances = count, ?revision, "complete snapshot received");
                }
                self.reconcile().await;
                self.write_cursor(true).await;
            }
        }
    }

    /// The one shared body of `service` (a push carries a body per instance).
    fn intern(&mut self, service: Arc<Service>) -> Arc<Service> {
        let key = (service.tenant.clone(), service.service_id.clone());
        match self.services.get(&key) {
            Some(known) if **known == *service => known.clone(),
            _ => {
                self.services.insert(key, service.clone());
                service
            }
        }
    }

    /// Updates the desired view; returns when the origin saw each change.
    fn apply_changes(&mut self, changes: Vec<Increment>) -> Vec<u64> {
        let mut observed = Vec::with_capacity(changes.len());
        for (_, observed_ms, export) in changes {
            match export {
                Export::Upsert { service, instance } => {
                    let key = instance.reference();
                    self.dirty.insert(key.clone());
                    observed.push(observed_ms);
                    let service = self.intern(service);
                    self.desired.insert(key, Desired { service, instance });
                }
                Export::Service(service) => {
                    let service = self.intern(service);
                    for (key, d) in &mut self.desired {
                        if d.service.tenant == service.tenant
                            && d.service.service_id == service.service_id
                        {
                            d.service = service.clone();
                            self.dirty.insert(key.clone());
                        }
                    }
                }
                Export::Removed(key) => {
                    observed.push(observed_ms);
                    self.desired.remove(&key);
                    self.dirty.insert(key);
                }
            }
        }
        observed
    }

    /// Latency from the origin seeing each change to its copy written here.
    fn observe_latency(&self, observed: &[u64]) {
        let now = unix_ms();
        for &ms in observed.iter().filter(|&&ms| ms > 0) {
            let seconds = now.saturating_sub(ms) as f64 / 1000.0;
            self.ctx.metrics.apply_latency.observe(seconds);
        }
    }

    /// Plans and executes the work the dirty keys (and orphans) need.
    async fn reconcile(&mut self) {
        if !self.local_ready {
            // Without the registry's view every copy would look missing.
            return;
        }
        // What is dirty now, in slices; keys dirtied meanwhile (failures, adoptions) wait for
        // the next round, so a failing registry is not retried in a tight loop.
        let mut keys: Vec<InstanceRef> = self.dirty.drain().collect();
        loop {
            let slice = keys.split_off(keys.len().saturating_sub(RECONCILE_SLICE));
            if !self.reconcile_slice(slice).await {
                // Not done: everything not looked at yet is looked at again later.
                self.dirty.extend(keys);
                return;
            }
            if keys.is_empty() {
                return;
            }
        }
    }

    /// Plans and executes `keys` (and the orphans, when due); false when it has to be retried
    /// later.
    async fn reconcile_slice(&mut self, keys: Vec<InstanceRef>) -> bool {
        // Services of every instance looked at: new ones are created, changed properties set.
        let services: Vec<Arc<Service>> = if self.stale {
            Vec::new()
        } else {
            keys.iter()
                .filter_map(|k| self.desired.get(k).map(|d| d.service.clone()))
                .collect()
        };
        let mut actions = Vec::new();
        let mut removals = Vec::new();
        for key in &keys {
            match self.plan(key) {
                Some(action @ Action::Remove { .. }) => removals.push(action),
                Some(action) => actions.push(action),
                None => {}
            }
        }
        if std::mem::take(&mut self.orphans_dirty) {
            self.plan_orphans(&mut actions, &mut removals);
        }
        if !removals.is_empty() {
            self.admit_removals(&mut removals, &mut actions);
        }
        let needs_services = !services.is_empty();
        if actions.is_empty() && !needs_services {
            return true;
        }
        if !self.ensure_services(services).await {
            // Everything looked at is looked at again.
            self.dirty.extend(keys);
            for action in &actions {
                match action_key(action) {
                    Some(key) => {
                        self.dirty.insert(key.clone());
                    }
                    None => self.orphans_dirty = true,
                }
            }
            self.retry_later();
            return false;
        }
        if actions.is_empty() {
            return true;
        }
        let ctx = self.ctx.clone();
        let origin = self.origin.clone();
        let mut results = futures::stream::iter(actions)
            .map(|action| execute(ctx.clone(), origin.clone(), action))
            .buffer_unordered(PARALLEL_CALLS);
        while let Some(done) = results.next().await {
            self.record(done);
        }
        self.ctx
            .metrics
            .copies
            .get_or_create(&self.label)
            .set(saturating_i64(self.mappings.len() as u64));
        true
    }

    fn plan(&mut self, key: &InstanceRef) -> Option<Action> {
        let desired = self.desired.get(key);
        let mapping = self.mappings.get(key);
        match (desired, mapping) {
            (Some(d), None) => {
                if self.stale {
                    return None;
                }
                if let Some(action) = self.adoption(key) {
                    return Some(action);
                }
                Some(register(key, d, 0, None))
            }
            (Some(d), Some(m)) => {
                if self.stale {
                    return None;
                }
                match self.present.get(&m.instance_id) {
                    None => {
                        let same = fingerprint(&d.instance) == m.fingerprint;
                        let generation = if same {
                            m.generation
                        } else {
                            m.generation.wrapping_add(1)
                        };
                        Some(register(key, d, generation, (!same).then(|| m.clone())))
                    }
                    Some(copy) => {
                        let copy_id = &m.instance_id;
                        match plan_update(
                            &self.origin,
                            &d.instance,
                            copy,
                            &m.fingerprint,
                            m.generation,
                        ) {
                            CopyUpdate::Unchanged => None,
                            CopyUpdate::InPlace { status, properties } => Some(Action::Update {
                                key: key.clone(),
                                copy: copy.reference(copy_id),
                                status,
                                properties,
                            }),
                            CopyUpdate::Replace { generation } => {
                                Some(register(key, d, generation, Some(m.clone())))
                            }
                        }
                    }
                }
            }
            (None, Some(m)) => Some(Action::Remove {
                key: Some(key.clone()),
                copy: copy_ref(m),
                mapping: Some(m.clone()),
            }),
            (None, None) => None,
        }
    }

    fn plan_orphans(&mut self, actions: &mut Vec<Action>, removals: &mut Vec<Action>) {
        let mapped: HashSet<&str> = self
            .mappings
            .values()
            .map(|m| m.instance_id.as_str())
            .collect();
        // Copies of desired instances that a lost mapping left behind are adopted, not
        // removed.
        let planned: HashSet<&InstanceRef> = actions.iter().filter_map(action_key).collect();
        let mut adoptions = Vec::new();
        if !self.stale {
            for key in self.desired.keys() {
                if !self.mappings.contains_key(key)
                    && !planned.contains(key)
                    && let Some(action) = self.adoption(key)
                {
                    adoptions.push(action);
                }
            }
        }
        let adopted: HashSet<String> = actions
            .iter()
            .chain(&adoptions)
            .filter_map(|a| match a {
                Action::Adopt { mapping, .. } => Some(mapping.instance_id.clone()),
                _ => None,
            })
            .collect();
        actions.extend(adoptions);
        for (id, present) in &self.present {
            if mapped.contains(id.as_str()) || adopted.contains(id) {
                continue;
            }
            removals.push(Action::Remove {
                key: None,
                copy: present.reference(id),
                mapping: None,
            });
        }
        for mapping in std::mem::take(&mut self.extra_mappings) {
            removals.push(Action::Remove {
                key: None,
                copy: copy_ref(&mapping),
                mapping: Some(mapping),
            });
        }
    }

    /// Adopting the present copy of `key` that carries one of its derived ids, if any.
    fn adoption(&self, key: &InstanceRef) -> Option<Action> {
        let origin_key = self.origin_key(key);
        (0..ADOPT_GENERATIONS).find_map(|generation| {
            let id = copy_instance_id(&origin_key, generation);
            let present = self.present.get(&id)?;
            Some(Action::Adopt {
                key: key.clone(),
                mapping: self.mapping_for(key, &id, present, generation),
            })
        })
    }

    /// Lets through what the removal guard allows; the rest waits.
    fn admit_removals(&mut self, removals: &mut Vec<Action>, actions: &mut Vec<Action>) {
        let now = Instant::now();
        match self.guard.request(&self.origin, removals.len(), now) {
            Removals::Incomplete => {
                // Not before a complete snapshot: keep them for later.
                for action in removals.drain(..) {
                    self.defer(action);
                }
            }
            Removals::Held(until) => {
                for action in removals.drain(..) {
                    self.defer(action);
                }
                self.retry_at = Some(self.retry_at.map_or(until, |t| t.max(until)));
            }
            Removals::Allowed {
                now: allowed,
                paused,
            } => {
                let waiting = removals.split_off(allowed);
                actions.append(removals);
                if paused > 0 {
                    self.ctx
                        .metrics
                        .removals_paused
                        .get_or_create(&self.label)
                        .inc_by(paused as u64);
                    if self
                        .last_cap_warning
                        .is_none_or(|t| now.duration_since(t) >= CAP_WARN_EVERY)
                    {
                        self.last_cap_warning = Some(now);
                        error!(origin = %self.origin, paused, cap = self.ctx.settings.removal_cap, "removal cap reached: further removals of this data centre's copies are paused (raise --removal-cap if this is expected)");
                    }
                    for action in waiting {
                        self.defer(action);
                    }
                    self.retry_later();
                }
            }
        }
    }

    fn defer(&mut self, action: Action) {
        match action_key(&action) {
            Some(key) => {
                self.dirty.insert(key.clone());
            }
            None => {
                if let Action::Remove {
                    mapping: Some(mapping),
                    ..
                } = action
                {
                    self.extra_mappings.push(mapping);
                }
                self.orphans_dirty = true;
            }
        }
    }

    fn retry_later(&mut self) {
        if self.retry_at.is_none() {
            self.retry_at = Some(Instant::now() + RETRY_AFTER);
        }
    }

    /// Ensures the local service of each of `services` exists with the origin's properties;
    /// false when one failed.
    async fn ensure_services(&mut self, services: Vec<Arc<Service>>) -> bool {
        let mut needed: HashMap<ServiceKey, Arc<Service>> = HashMap::new();
        for service in services {
            let skey = (
                self.origin.clone(),
                service.tenant.clone(),
                service.service_id.clone(),
            );
            if needed.contains_key(&skey) {
                continue;
            }
            let fresh = self
                .ctx
                .cached_service(&skey)
                .is_some_and(|(_, props)| props == service.properties);
            if !fresh {
                needed.insert(skey, service);
            }
        }
        let ctx = self.ctx.clone();
        let results: Vec<bool> = futures::stream::iter(needed)
            .map(|(skey, service)| {
                let ctx = ctx.clone();
                async move {
                    let id = match ctx.registry.ensure_service(&service).await {
                        Ok(id) => id,
                        Err(e) => {
                            ctx.metrics.registry_op("ensure_service", e.kind());
                            warn!(service = %service.name, error = %e, "cannot create the local service of a copy");
                            return false;
                        }
                    };
                    ctx.metrics.registry_op("ensure_service", "ok");
                    if let Err(e) = ctx
                        .registry
                        .set_service_properties(&service.tenant, &id, &service.properties)
                        .await
                    {
                        ctx.metrics.registry_op("set_service_properties", e.kind());
                        warn!(service = %service.name, error = %e, "cannot set the properties of a copy's service");
                        return false;
                    }
                    ctx.metrics.registry_op("set_service_properties", "ok");
                    ctx.cache_service(skey, id, service.properties.clone());
                    true
                }
            })
            .buffer_unordered(PARALLEL_CALLS)
            .collect()
            .await;
        results.into_iter().all(|ok| ok)
    }

    fn record(&mut self, done: Done) {
        match done {
            Done::Mapped {
                key,
                mapping,
                registered,
                dropped,
            } => {
                if let Some(old) = dropped {
                    self.present.remove(&old.instance_id);
                }
                let mapping_id = mapping.instance_id.clone();
                self.set_mapping(key.clone(), *mapping);
                match registered {
                    // Registered: the registry holds exactly this body now.
                    Some(copy) => {
                        self.present.insert(mapping_id, *copy);
                    }
                    // Adopted: the copy found may still need an update, at once.
                    None => {
                        self.dirty.insert(key);
                        self.retry_at = Some(Instant::now());
                    }
                }
            }
            Done::Updated {
                copy_id,
                status,
                properties,
            } => {
                if let Some(copy) = self.present.get_mut(&copy_id) {
                    if let Some(status) = status {
                        copy.status = status;
                    }
                    if let Some(properties) = properties {
                        copy.properties = properties_digest(&properties);
                    }
                }
            }
            Done::Removed { key, copy_id } => {
                self.present.remove(&copy_id);
                if let Some(key) = key {
                    self.drop_mapping(&key);
                }
                self.ctx.metrics.removals.get_or_create(&self.label).inc();
            }
            Done::Failed(key) => {
                match key {
                    Some(key) => {
                        self.dirty.insert(key);
                    }
                    None => self.orphans_dirty = true,
                }
                self.retry_later();
            }
        }
    }

    async fn heartbeat(&mut self) {
        if self.stale && !self.ctx.settings.keep_stale {
            return;
        }
        let refs: Vec<InstanceRef> = self.mappings.values().map(copy_ref).collect();
        if refs.is_empty() {
            return;
        }
        match self.ctx.registry.heartbeat(&refs).await {
            Ok(report) => {
                self.ctx
                    .metrics
                    .heartbeats
                    .get_or_create(&super::metrics::Outcome { outcome: "ok" })
                    .inc();
                if !report.unknown.is_empty() {
                    info!(origin = %self.origin, unknown = report.unknown.len(), "copies unknown to the registry; registering them again");
                }
                for r in report.unknown {
                    self.present.remove(&r.instance_id);
                    if let Some(key) = self.key_of_copy(&r.instance_id) {
                        self.dirty.insert(key);
                    }
                }
                if !self.dirty.is_empty() {
                    self.reconcile().await;
                }
            }
            Err(e) => {
                self.ctx
                    .metrics
                    .heartbeats
                    .get_or_create(&super::metrics::Outcome { outcome: e.kind() })
                    .inc();
                warn!(origin = %self.origin, copies = refs.len(), error = %e, "heartbeat of copies failed");
            }
        }
    }

    async fn write_cursor(&mut self, force: bool) {
        let Some(cursor) = self.cursor else { return };
        let due = match self.cursor_written {
            None => true,
            Some((written, at)) => {
                written != cursor && (force || at.elapsed() >= CURSOR_WRITE_EVERY)
            }
        };
        if !due {
            return;
        }
        let op = Op::PutCursor {
            origin: self.origin.clone(),
            cursor: Cursor {
                epoch: cursor.epoch,
                seq: cursor.seq,
                complete: self.guard.is_complete(&self.origin),
                updated_ms: unix_ms(),
            },
        };
        match self.ctx.store.write(Group::from(op)).await {
            Ok(()) => self.cursor_written = Some((cursor, Instant::now())),
            Err(e) => debug!(origin = %self.origin, error = %e, "cursor not written"),
        }
    }

    fn origin_key(&self, key: &InstanceRef) -> OriginKey {
        OriginKey {
            origin: self.origin.clone(),
            tenant: key.tenant.clone(),
            service_id: key.service_id.clone(),
            instance_id: key.instance_id.clone(),
        }
    }

    fn mapping_for(
        &self,
        key: &InstanceRef,
        copy_id: &str,
        copy: &PresentCopy,
        generation: u32,
    ) -> Mapping {
        Mapping {
            origin: self.origin.clone(),
            domain: key.tenant.domain.clone(),
            project: key.tenant.project.clone(),
            origin_service_id: key.service_id.clone(),
            origin_instance_id: key.instance_id.clone(),
            service_id: copy.service_id.clone(),
            instance_id: copy_id.to_owned(),
            fingerprint: copy.fingerprint.clone(),
            generation,
            updated_ms: unix_ms(),
        }
    }
}

fn register(key: &InstanceRef, d: &Desired, generation: u32, replace: Option<Mapping>) -> Action {
    Action::Register {
        key: key.clone(),
        service: d.service.clone(),
        instance: d.instance.clone(),
        generation,
        replace,
    }
}

fn action_key(action: &Action) -> Option<&InstanceRef> {
    match action {
        Action::Adopt { key, .. } | Action::Register { key, .. } | Action::Update { key, .. } => {
            Some(key)
        }
        Action::Remove { key, .. } => key.as_ref(),
    }
}

fn origin_ref(mapping: &Mapping) -> InstanceRef {
    InstanceRef {
        tenant: Tenant::new(mapping.domain.clone(), mapping.project.clone()),
        service_id: mapping.origin_service_id.clone(),
        instance_id: mapping.origin_instance_id.clone(),
    }
}

fn copy_ref(mapping: &Mapping) -> InstanceRef {
    InstanceRef {
        tenant: Tenant::new(mapping.domain.clone(), mapping.project.clone()),
        service_id: mapping.service_id.clone(),
        instance_id: mapping.instance_id.clone(),
    }
}

fn store_failed(ctx: &ImportCtx, what: &str, e: &StoreError) {
    ctx.metrics.registry_op("store_write", "error");
    warn!(what, error = %e, "mapping store write failed");
}

fn registry_failed(ctx: &ImportCtx, op: &'static str, copy: &InstanceRef, e: &RegistryError) {
    ctx.metrics.registry_op(op, e.kind());
    warn!(op, copy = %copy, error = %e, "registry call for a copy failed");
}

/// Executes one action; never panics, reports what changed.
async fn execute(ctx: Arc<ImportCtx>, origin: String, action: Action) -> Done {
    match action {
        Action::Adopt { key, mapping } => {
            match ctx
                .store
                .write(Group::from(Op::PutMapping(mapping.clone())))
                .await
            {
                Ok(()) => {
                    info!(origin = %origin, copy = %mapping.instance_id, "adopted a copy that had no mapping");
                    Done::Mapped {
                        key,
                        mapping: Box::new(mapping),
                        registered: None,
                        dropped: None,
                    }
                }
                Err(e) => {
                    store_failed(&ctx, "adopt", &e);
                    Done::Failed(Some(key))
                }
            }
        }
        Action::Register {
            key,
            service,
            instance,
            generation,
            replace,
        } => {
            let skey = (
                origin.clone(),
                service.tenant.clone(),
                service.service_id.clone(),
            );
            let Some((service_id, _)) = ctx.cached_service(&skey) else {
                return Done::Failed(Some(key));
            };
            let origin_key = OriginKey {
                origin: origin.clone(),
                tenant: key.tenant.clone(),
                service_id: key.service_id.clone(),
                instance_id: key.instance_id.clone(),
            };
            let body = copy_body(
                &origin_key,
                &instance,
                &service_id,
                generation,
                ctx.settings.lease,
            );
            let mapping = Mapping {
                origin: origin.clone(),
                domain: key.tenant.domain.clone(),
                project: key.tenant.project.clone(),
                origin_service_id: key.service_id.clone(),
                origin_instance_id: key.instance_id.clone(),
                service_id: service_id.clone(),
                instance_id: body.instance_id.clone(),
                fingerprint: fingerprint(&instance),
                generation,
                updated_ms: unix_ms(),
            };
            // Intent first: a crash after this leaves a mapping whose copy is re-registered
            // or removed, never an unmarked copy.
            if let Err(e) = ctx
                .store
                .write(Group::from(Op::PutMapping(mapping.clone())))
                .await
            {
                store_failed(&ctx, "register", &e);
                return Done::Failed(Some(key));
            }
            if let Err(e) = ctx.registry.register(&body).await {
                if e.is_not_found() {
                    // The local service vanished behind our back: create it again next time.
                    ctx.forget_services(&service.tenant, &service_id);
                }
                registry_failed(&ctx, "register", &body.reference(), &e);
                return Done::Failed(Some(key));
            }
            ctx.metrics.registry_op("register", "ok");
            let mut dropped = None;
            if let Some(old) = replace
                && old.instance_id != mapping.instance_id
            {
                match ctx.registry.unregister(&copy_ref(&old)).await {
                    Ok(()) => ctx.metrics.registry_op("unregister", "ok"),
                    Err(e) if e.is_not_found() => {}
                    Err(e) => {
                        registry_failed(&ctx, "unregister", &copy_ref(&old), &e);
                        // The new copy is registered; the old one is removed on retry.
                        return Done::Failed(Some(key));
                    }
                }
                let delete = Op::DeleteMapping {
                    origin: origin.clone(),
                    instance_id: old.instance_id.clone(),
                };
                if let Err(e) = ctx.store.write(Group::from(delete)).await {
                    store_failed(&ctx, "replace", &e);
                }
                dropped = Some(Box::new(old));
            }
            Done::Mapped {
                key,
                mapping: Box::new(mapping),
                registered: Some(Box::new(PresentCopy::of(&body))),
                dropped,
            }
        }
        Action::Update {
            key,
            copy,
            status,
            properties,
        } => {
            if let Some(status) = &status {
                if let Err(e) = ctx.registry.set_status(&copy, status).await {
                    registry_failed(&ctx, "set_status", &copy, &e);
                    return Done::Failed(Some(key));
                }
                ctx.metrics.registry_op("set_status", "ok");
            }
            // `plan_update` built the whole map with the origin mark: a property update
            // replaces every property.
            if let Some(properties) = &properties {
                if let Err(e) = ctx
                    .registry
                    .set_instance_properties(&copy, properties)
                    .await
                {
                    registry_failed(&ctx, "set_properties", &copy, &e);
                    return Done::Failed(Some(key));
                }
                ctx.metrics.registry_op("set_properties", "ok");
            }
            Done::Updated {
                copy_id: copy.instance_id,
                status,
                properties,
            }
        }
        Action::Remove { key, copy, mapping } => {
            match ctx.registry.unregister(&copy).await {
                Ok(()) => ctx.metrics.registry_op("unregister", "ok"),
                Err(e) if e.is_not_found() => {}
                Err(e) => {
                    registry_failed(&ctx, "unregister", &copy, &e);
                    return Done::Failed(key);
                }
            }
            if let Some(mapping) = mapping {
                let delete = Op::DeleteMapping {
                    origin: origin.clone(),
                    instance_id: mapping.instance_id,
                };
                if let Err(e) = ctx.store.write(Group::from(delete)).await {
                    store_failed(&ctx, "remove", &e);
                    return Done::Failed(key);
                }
            }
            Done::Removed {
                key,
                copy_id: copy.instance_id,
            }
        }
    }
}

//! One origin's actor: owns its views, takes one message at a time (so plans never race),
//! pulls from the origin, heartbeats the copies and reconciles through the planner and the
//! executor.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::super::copy::{PresentCopy, copy_body, properties_digest};
use super::super::export::{Increment, Revision};
use super::super::ids::{OriginKey, copy_origin, is_copy};
use super::super::link::{LinkError, Pulled, Push, PushReply};
use super::super::metrics::{OriginLabel, Outcome};
use super::super::safety::{RemovalGuard, Removals};
use super::super::unix_ms;
use super::ImportCtx;
use super::execute::{Done, ensure_services, execute_all};
use super::mailbox::{Inbox, LocalBatch, LocalEvent};
use super::plan::{self, Action, HealthChange, Input, OriginHealth, Plan};
use super::views::{Admit, Views};
use crate::backoff::Backoff;
use crate::registry::{Instance, InstanceRef, Service};
use crate::store::{Cursor, Group, Mapping, Op};

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
/// Longest pause between failed pulls. Kept at the 1 s pace that the documented recovery
/// after a partition relies on; raise it to make pulls back off from a dead peer.
const PULL_RETRY_MAX: Duration = RETRY_AFTER;
/// Longest pause between failed re-reads of the local registry (after a queue overflow).
const REREAD_RETRY_MAX: Duration = Duration::from_secs(30);
/// A whole pull stream may take this long.
const PULL_TIMEOUT: Duration = Duration::from_secs(60);
/// Cursors are written to the store at most this often (they are informational: a
/// restarted importer always starts from a full snapshot).
const CURSOR_WRITE_EVERY: Duration = Duration::from_secs(5);
/// Loud removal-cap warnings at most this often per origin.
const CAP_WARN_EVERY: Duration = Duration::from_secs(10);
/// Most refused objects remembered per origin, so each is logged once.
const REFUSED_MEMORY: usize = 10_000;

/// When the actor does what it does on its own.
#[derive(Debug)]
struct Timers {
    /// Reconcile what failed or waits for the removal guard.
    retry_at: Option<Instant>,
    /// Pull from the origin.
    pull_at: Option<Instant>,
    pull_backoff: Backoff,
    /// Next periodic pull (anti-entropy).
    next_anti_entropy: Instant,
    /// Next batch heartbeat of the copies.
    next_heartbeat: Instant,
    /// Re-read the local registry's copies (the local queue overflowed, a re-read failed).
    reread_at: Option<Instant>,
    reread_backoff: Backoff,
    /// The cursor last written to the store, and when.
    cursor_written: Option<(Revision, Instant)>,
    last_cap_warning: Option<Instant>,
}

impl Timers {
    fn new(now: Instant, heartbeat: Duration) -> Timers {
        Timers {
            retry_at: None,
            // The first pull goes as soon as the origin's syncer is known.
            pull_at: Some(now),
            pull_backoff: Backoff::new(RETRY_AFTER, PULL_RETRY_MAX),
            next_anti_entropy: now,
            next_heartbeat: now + heartbeat,
            reread_at: None,
            reread_backoff: Backoff::new(RETRY_AFTER, REREAD_RETRY_MAX),
            cursor_written: None,
            last_cap_warning: None,
        }
    }

    /// Pull at `at` unless a pull is already due.
    fn pull_by(&mut self, at: Instant) {
        if self.pull_at.is_none() {
            self.pull_at = Some(at);
        }
    }

    fn retry_later(&mut self) {
        if self.retry_at.is_none() {
            self.retry_at = Some(Instant::now() + RETRY_AFTER);
        }
    }
}

pub(super) struct Actor {
    origin: String,
    /// `origin` as a metric label.
    label: OriginLabel,
    ctx: Arc<ImportCtx>,
    views: Views,
    /// Whether the present view was filled by a full read of the local registry.
    local_ready: bool,
    cursor: Option<Revision>,
    guard: RemovalGuard,
    health: OriginHealth,
    /// Instances (origin refs) to reconcile at the next opportunity.
    dirty: HashSet<InstanceRef>,
    /// Copies present without a mapping, or extra mappings, need a look.
    orphans_dirty: bool,
    timers: Timers,
    /// Objects the local registry kind refused, logged once each.
    refused: HashSet<String>,
}

impl Actor {
    pub(super) fn new(
        origin: String,
        ctx: Arc<ImportCtx>,
        loaded: Vec<Mapping>,
        local_ready: bool,
    ) -> Actor {
        let now = Instant::now();
        let views = Views::new(origin.clone(), loaded);
        let mut guard = RemovalGuard::new(ctx.settings.removal_cap);
        if let Some(t) = ctx.settings.removals_from {
            guard.hold_until(t);
        }
        info!(origin = %origin, copies = views.mappings().len(), "importer started");
        Actor {
            label: ctx.metrics.origin(&origin),
            timers: Timers::new(now, ctx.settings.lease.heartbeat_period()),
            origin,
            ctx,
            views,
            local_ready,
            cursor: None,
            guard,
            health: OriginHealth::new(now),
            dirty: HashSet::new(),
            orphans_dirty: false,
            refused: HashSet::new(),
        }
    }

    pub(super) async fn run(mut self, mut inbox: Inbox, token: CancellationToken) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut peers = self.ctx.peers.clone();
        loop {
            tokio::select! {
                biased;
                () = token.cancelled() => break,
                msg = inbox.push.recv() => match msg {
                    Some((push, reply)) => {
                        let applied = self.on_push(push).await;
                        let cursor = self.cursor.unwrap_or_default();
                        let _ = reply.send(PushReply {
                            applied,
                            epoch: cursor.epoch,
                            seq: cursor.seq,
                        });
                    }
                    None => break,
                },
                Ok(()) = inbox.announce.changed() => {
                    let announced = *inbox.announce.borrow_and_update();
                    if let Some(revision) = announced
                        && self.cursor != Some(revision)
                    {
                        self.timers.pull_by(Instant::now() + ANNOUNCE_PULL_DELAY);
                    }
                }
                () = inbox.local.ready() => {
                    let batch = inbox.local.take();
                    self.on_local(batch).await;
                }
                Ok(()) = peers.changed() => {
                    let known = peers.borrow_and_update().contains_key(&self.origin);
                    if known && self.cursor.is_none() {
                        self.timers.pull_at = Some(Instant::now());
                    }
                }
                _ = tick.tick() => self.on_tick().await,
            }
        }
        self.write_cursor(true).await;
        debug!(origin = %self.origin, "importer stopped");
    }

    async fn on_push(&mut self, push: Push) -> bool {
        let expected = Revision {
            epoch: push.epoch,
            seq: push.from_seq,
        };
        if self.cursor != Some(expected) {
            self.ctx.metrics.transfer("push_received", "out_of_order");
            debug!(origin = %self.origin, cursor = ?self.cursor, push_from = ?expected, "push does not continue our cursor; pulling");
            self.timers.pull_by(Instant::now());
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

    async fn on_local(&mut self, batch: LocalBatch) {
        let LocalBatch {
            reread,
            present,
            events,
        } = batch;
        let mut touched = false;
        if reread {
            info!(origin = %self.origin, "local copy observations overflowed their queue; re-reading the local registry");
            touched |= self.reread_local().await;
        }
        if let Some(present) = present {
            self.timers.reread_at = None;
            self.apply_present(present);
            touched = true;
        }
        for event in events {
            touched |= self.apply_local(event);
        }
        if touched && (!self.dirty.is_empty() || self.orphans_dirty) {
            self.reconcile().await;
        }
    }

    /// Every copy of this origin present now: compare everything (copies deleted behind
    /// syncer's back, orphans).
    fn apply_present(&mut self, present: Vec<(String, PresentCopy)>) {
        self.views.replace_present(present, &mut self.dirty);
        self.local_ready = true;
        self.orphans_dirty = true;
    }

    /// Applies one local observation; false when it does not concern this origin.
    fn apply_local(&mut self, event: LocalEvent) -> bool {
        match event {
            LocalEvent::Seen { id, copy, marked } => {
                match self.views.copy_seen(id, *copy, marked) {
                    None => return false,
                    Some(Some(key)) => {
                        self.dirty.insert(key);
                    }
                    Some(None) => self.orphans_dirty = true,
                }
            }
            LocalEvent::Gone(r) => {
                if let Some(key) = self.views.copy_gone(&r.instance_id) {
                    self.dirty.insert(key);
                }
            }
            LocalEvent::ServiceGone(tenant, service_id) => {
                let keys = self.views.service_gone(&tenant, &service_id);
                self.dirty.extend(keys);
            }
        }
        true
    }

    /// Reads this origin's copies from the local registry (instead of the events a full
    /// queue dropped); false when the read failed (retried with back-off).
    async fn reread_local(&mut self) -> bool {
        match self.ctx.registry.snapshot().await {
            Ok(snapshot) => {
                self.timers.reread_backoff.reset();
                self.timers.reread_at = None;
                let present = snapshot
                    .instances
                    .into_iter()
                    .filter(|i| is_copy(i) && copy_origin(i) == Some(self.origin.as_str()))
                    .map(|i| {
                        let copy = PresentCopy::of(&i);
                        (i.instance_id, copy)
                    })
                    .collect();
                self.apply_present(present);
                true
            }
            Err(e) => {
                let pause = self.timers.reread_backoff.pause();
                warn!(origin = %self.origin, error = %e, retry_in = ?pause, "cannot re-read the local registry's copies");
                self.timers.reread_at = Some(Instant::now() + pause);
                false
            }
        }
    }

    async fn on_tick(&mut self) {
        let now = Instant::now();
        let grace = self.ctx.settings.origin_grace;
        if self.health.check(now, grace) == Some(HealthChange::BecameStale) {
            self.stale_gauge(true);
            let copies = self.views.mappings().len();
            if self.ctx.keeps_stale(&self.origin) {
                warn!(origin = %self.origin, ?grace, copies, "no successful exchange with this data centre within the grace period; keeping its copies alive (--keep-stale-copies, or its name is in conflict)");
            } else {
                warn!(origin = %self.origin, ?grace, copies, "no successful exchange with this data centre within the grace period; its copies are no longer kept alive and expire with their lease");
            }
        }
        if now >= self.timers.next_anti_entropy {
            self.timers.next_anti_entropy = now + self.ctx.settings.anti_entropy_interval;
            self.timers.pull_by(now);
        }
        if self.timers.pull_at.is_some_and(|at| now >= at) {
            self.timers.pull_at = None;
            self.pull().await;
        }
        if now >= self.timers.next_heartbeat {
            self.timers.next_heartbeat = now + self.ctx.settings.lease.heartbeat_period();
            self.heartbeat().await;
        }
        if self.timers.reread_at.is_some_and(|at| now >= at) && self.reread_local().await {
            self.reconcile().await;
        }
        if self.timers.retry_at.is_some_and(|at| now >= at) {
            self.timers.retry_at = None;
            self.reconcile().await;
        }
        self.write_cursor(false).await;
    }

    fn stale_gauge(&self, stale: bool) {
        self.ctx
            .metrics
            .stale
            .get_or_create(&self.label)
            .set(i64::from(stale));
    }

    /// A successful exchange with the origin.
    fn exchanged(&mut self) {
        if self.health.exchanged(Instant::now()) == Some(HealthChange::Recovered) {
            self.stale_gauge(false);
            info!(origin = %self.origin, "this data centre is reachable again");
            self.dirty.extend(self.views.desired.keys().cloned());
            // Heartbeat at once: copies may be close to the end of their lease.
            self.timers.next_heartbeat = Instant::now();
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
                self.timers.pull_backoff.reset();
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
                self.timers.pull_at = Some(Instant::now() + self.timers.pull_backoff.pause());
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
                    self.timers.pull_at = Some(Instant::now());
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
                let mut admit = KindRules {
                    ctx: &self.ctx,
                    label: &self.label,
                    refused: &mut self.refused,
                };
                self.views
                    .replace_desired(items, &mut admit, &mut self.dirty);
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

    /// Updates the desired view; returns when the origin saw each change.
    fn apply_changes(&mut self, changes: Vec<Increment>) -> Vec<u64> {
        let mut admit = KindRules {
            ctx: &self.ctx,
            label: &self.label,
            refused: &mut self.refused,
        };
        self.views
            .apply_changes(changes, &mut admit, &mut self.dirty)
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
        let orphans = std::mem::take(&mut self.orphans_dirty);
        let now = Instant::now();
        let input = Input {
            views: &self.views,
            keys: &keys,
            orphans,
            stale: self.health.is_stale(),
            now,
            now_ms: unix_ms(),
        };
        let Plan {
            services,
            actions,
            waiting,
            removals,
        } = plan::plan(&input, &mut self.guard);
        if orphans {
            // Planned above: removed, or deferred again below.
            self.views.extra_mappings.clear();
        }
        for action in waiting {
            self.defer(action);
        }
        if let Some(answer) = removals {
            self.removals_answered(answer, now);
        }
        if actions.is_empty() && services.is_empty() {
            return true;
        }
        if !ensure_services(&self.ctx, &self.origin, services).await {
            // Everything looked at is looked at again.
            self.dirty.extend(keys);
            for action in &actions {
                match action.key() {
                    Some(key) => {
                        self.dirty.insert(key.clone());
                    }
                    None => self.orphans_dirty = true,
                }
            }
            self.timers.retry_later();
            return false;
        }
        if actions.is_empty() {
            return true;
        }
        let mut results = execute_all(self.ctx.clone(), self.origin.clone(), actions);
        while let Some(done) = results.next().await {
            self.record(done);
        }
        let copies = i64::try_from(self.views.mappings().len()).unwrap_or(i64::MAX);
        self.ctx
            .metrics
            .copies
            .get_or_create(&self.label)
            .set(copies);
        true
    }

    /// Timers, logs and metrics for the removal guard's answer (the removals held back are
    /// deferred already).
    fn removals_answered(&mut self, answer: Removals, now: Instant) {
        match answer {
            // Not before a complete snapshot: kept for later.
            Removals::Incomplete | Removals::Allowed { paused: 0, .. } => {}
            Removals::Held(until) => {
                self.timers.retry_at = Some(self.timers.retry_at.map_or(until, |t| t.max(until)));
            }
            Removals::Allowed { paused, .. } => {
                self.ctx
                    .metrics
                    .removals_paused
                    .get_or_create(&self.label)
                    .inc_by(paused as u64);
                if self
                    .timers
                    .last_cap_warning
                    .is_none_or(|t| now.duration_since(t) >= CAP_WARN_EVERY)
                {
                    self.timers.last_cap_warning = Some(now);
                    error!(origin = %self.origin, paused, cap = self.ctx.settings.removal_cap, "removal cap reached: further removals of this data centre's copies are paused (raise --removal-cap if this is expected)");
                }
                self.timers.retry_later();
            }
        }
    }

    /// Looks at a held-back action again later.
    fn defer(&mut self, action: Action) {
        match action.key() {
            Some(key) => {
                self.dirty.insert(key.clone());
            }
            None => {
                if let Action::Remove {
                    mapping: Some(mapping),
                    ..
                } = action
                {
                    self.views.extra_mappings.push(mapping);
                }
                self.orphans_dirty = true;
            }
        }
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
                    self.views.present.remove(&old.instance_id);
                }
                let mapping_id = mapping.instance_id.clone();
                self.views.set_mapping(key.clone(), *mapping);
                match registered {
                    // Registered: the registry holds exactly this body now.
                    Some(copy) => {
                        self.views.present.insert(mapping_id, *copy);
                    }
                    // Adopted: the copy found may still need an update, at once.
                    None => {
                        self.dirty.insert(key);
                        self.timers.retry_at = Some(Instant::now());
                    }
                }
            }
            Done::Updated {
                copy_id,
                status,
                properties,
            } => {
                if let Some(copy) = self.views.present.get_mut(&copy_id) {
                    if let Some(status) = status {
                        copy.status = status;
                    }
                    if let Some(properties) = properties {
                        copy.properties = properties_digest(&properties);
                    }
                }
            }
            Done::Removed { key, copy_id } => {
                self.views.present.remove(&copy_id);
                if let Some(key) = key {
                    self.views.drop_mapping(&key);
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
                self.timers.retry_later();
            }
        }
    }

    async fn heartbeat(&mut self) {
        let refs = plan::heartbeat_targets(
            &self.views,
            self.health.is_stale(),
            self.ctx.keeps_stale(&self.origin),
        );
        if refs.is_empty() {
            return;
        }
        match self.ctx.registry.heartbeat(&refs).await {
            Ok(report) => {
                self.ctx
                    .metrics
                    .heartbeats
                    .get_or_create(&Outcome { outcome: "ok" })
                    .inc();
                if !report.unknown.is_empty() {
                    info!(origin = %self.origin, unknown = report.unknown.len(), "copies unknown to the registry; registering them again");
                }
                for r in report.unknown {
                    self.views.present.remove(&r.instance_id);
                    if let Some(key) = self.views.key_of_copy(&r.instance_id) {
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
                    .get_or_create(&Outcome { outcome: e.kind() })
                    .inc();
                warn!(origin = %self.origin, copies = refs.len(), error = %e, "heartbeat of copies failed");
            }
        }
    }

    async fn write_cursor(&mut self, force: bool) {
        let Some(cursor) = self.cursor else { return };
        let due = match self.timers.cursor_written {
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
            Ok(()) => self.timers.cursor_written = Some((cursor, Instant::now())),
            Err(e) => debug!(origin = %self.origin, error = %e, "cursor not written"),
        }
    }
}

/// The local registry kind's rules, applied where desired state enters the actor: a refused
/// object is kept out of desired, counted by reason and logged once.
///
/// Kept out of desired, an instance that has a copy is planned as a removal (through the
/// removal guard, like any other). That is deliberate: the registry could not hold the object
/// as it is now. It never removes a copy that was fine for what syncer itself writes: the
/// instance is checked as its copy body, whose id, origin mark and lease are syncer's and
/// pass every rule (`copy::tests`), so only fields carried from the origin can be refused;
/// before the registry-kind split the origin's exporter refused the same fields (its copy went
/// at the exporter's next resync; now at once).
struct KindRules<'a> {
    ctx: &'a ImportCtx,
    /// The origin's metric label; `label.origin` is the origin itself.
    label: &'a OriginLabel,
    refused: &'a mut HashSet<String>,
}

impl KindRules<'_> {
    fn refuse(&mut self, what: String, refusal: &crate::registry::Refusal) {
        self.ctx.metrics.refused(&self.label.origin, refusal.reason);
        if self.refused.len() < REFUSED_MEMORY && self.refused.insert(what.clone()) {
            warn!(origin = %self.label.origin, object = %what, error = %refusal, "not imported: the local registry cannot hold it");
        }
    }
}

impl Admit for KindRules<'_> {
    fn service(&mut self, service: &Service) -> bool {
        match self.ctx.registry.accepts_service(service) {
            Ok(()) => true,
            Err(refusal) => {
                self.refuse(
                    format!("service {}/{}", service.tenant, service.service_id),
                    &refusal,
                );
                false
            }
        }
    }

    fn instance(&mut self, _service: &Service, instance: &Instance) -> bool {
        // The copy is what the registry would hold: syncer's id, mark and lease.
        let key = OriginKey {
            origin: self.label.origin.clone(),
            tenant: instance.tenant.clone(),
            service_id: instance.service_id.clone(),
            instance_id: instance.instance_id.clone(),
        };
        let body = copy_body(
            &key,
            instance,
            &instance.service_id,
            0,
            self.ctx.settings.lease,
        );
        match self.ctx.registry.accepts_instance(&body) {
            Ok(()) => true,
            Err(refusal) => {
                self.refuse(format!("instance {}", instance.reference()), &refusal);
                false
            }
        }
    }
}

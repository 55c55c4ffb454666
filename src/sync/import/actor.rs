//! One origin's actor: owns its views, takes one message at a time (so plans never race),
//! pulls from the origin, heartbeats the copies and reconciles through the planner and the
//! executor.
//!
//! A pull runs as a task beside the actor ([`InFlight`], one at a time): its answer comes
//! back into the actor's loop as one more message, and meanwhile the actor serves pushes,
//! local events and its timers. So a peer that accepted the call and went silent (a frozen
//! process, a hung server, a blackholed connection) delays nothing but the next pull: the
//! copies are heartbeated on their own schedule and the origin is judged stale only after
//! `origin_grace` without an exchange, measured with the time of the judgement. A pull is
//! bounded by [`PullDeadlines::STANDARD`] and given up as soon as the peer directory names
//! another syncer for the origin (a failover there), which is pulled from at once.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use tokio::task::{JoinError, JoinHandle};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::super::copy::{PresentCopy, copy_body, properties_digest};
use super::super::export::{Increment, Revision};
use super::super::ids::{OriginKey, copy_origin, is_copy};
use super::super::link::{LinkError, PullDeadlines, Pulled, Push, PushReply};
use super::super::metrics::{OriginLabel, OriginState, Outcome};
use super::super::safety::{RemovalGuard, Removals};
use super::super::status::{EntryState, HeldRemovals, ImportState, LastError, MappingEntry};
use super::super::unix_ms;
use super::ImportCtx;
use super::execute::{Done, ensure_services, execute_all};
use super::failures::{Ensured, FailingServices};
use super::mailbox::{Inbox, LocalBatch, LocalEvent};
use super::plan::{self, Action, HealthChange, Input, OriginHealth, Plan};
use super::views::{Admit, Views};
use crate::backoff::Backoff;
use crate::registry::{Instance, InstanceRef, Service, Tenant};
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
/// Cursors are written to the store at most this often (they are informational: a
/// restarted importer always starts from a full snapshot).
const CURSOR_WRITE_EVERY: Duration = Duration::from_secs(5);
/// Loud removal-cap warnings at most this often per origin.
const CAP_WARN_EVERY: Duration = Duration::from_secs(10);
/// Most refused objects remembered per origin, so each is logged once.
const REFUSED_MEMORY: usize = 10_000;
/// How often the services in trouble are checked against what the origin still exports.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

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
    /// Next look for services in trouble that the origin no longer exports.
    next_sweep: Instant,
}

impl Timers {
    fn new(now: Instant) -> Timers {
        Timers {
            retry_at: None,
            // The first pull goes as soon as the origin's syncer is known.
            pull_at: Some(now),
            pull_backoff: Backoff::new(RETRY_AFTER, PULL_RETRY_MAX),
            next_anti_entropy: now,
            // At once: a new importer (a restart, a new leader) takes over copies whose last
            // renewal may be most of a lease ago. Chaos suite: two failovers within one
            // copy lease, each new leader waiting a heartbeat period before its first
            // renewal, let the copies lapse.
            next_heartbeat: now,
            reread_at: None,
            reread_backoff: Backoff::new(RETRY_AFTER, REREAD_RETRY_MAX),
            cursor_written: None,
            last_cap_warning: None,
            next_sweep: now + SWEEP_EVERY,
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

/// The pull in flight: where it goes, the cursor its answer continues, and its task.
///
/// Dropping it aborts the task, so an actor that stops (its token cancelled) or gives up on
/// an address leaves nothing running and nothing to apply later.
struct InFlight {
    addr: SocketAddr,
    /// The actor's cursor when the pull started; pushes may move it on meanwhile.
    base: Option<Revision>,
    task: JoinHandle<Result<Pulled, LinkError>>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The end of the pull in flight; never ready while there is none.
async fn pull_ended(
    pulling: &mut Option<InFlight>,
) -> Result<Result<Pulled, LinkError>, JoinError> {
    match pulling {
        Some(flight) => (&mut flight.task).await,
        None => std::future::pending().await,
    }
}

/// What is left of a pull's answer after pushes moved the cursor on to `cursor` while the
/// pull was in flight (the answer continues the cursor the pull started from): the changes
/// past `cursor` of increments that reach further, a snapshot unless it is older than
/// `cursor`, nothing else. Applying the whole answer would set the origin's instances back
/// to an older state for a moment.
fn rebase(pulled: Pulled, cursor: Option<Revision>) -> Option<Pulled> {
    let Some(cursor) = cursor else {
        return Some(pulled);
    };
    match pulled {
        Pulled::UpToDate(_) => None,
        Pulled::Increments { to, changes } => {
            if to.epoch != cursor.epoch || to.seq <= cursor.seq {
                return None;
            }
            let changes: Vec<Increment> = changes
                .into_iter()
                .filter(|(seq, _, _)| *seq > cursor.seq)
                .collect();
            // Consecutive up to `to` (checked by the link), so they continue `cursor`.
            (changes.first().map(|(seq, _, _)| *seq) == Some(cursor.seq + 1))
                .then_some(Pulled::Increments { to, changes })
        }
        Pulled::Snapshot { revision, .. }
            if revision.epoch == cursor.epoch && revision.seq < cursor.seq =>
        {
            None
        }
        snapshot @ Pulled::Snapshot { .. } => Some(snapshot),
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
    /// The pull in flight, at most one.
    pulling: Option<InFlight>,
    /// The origin's active syncer as the peer directory last named it.
    peer_addr: Option<SocketAddr>,
    /// Objects the local registry kind refused, logged once each.
    refused: HashSet<String>,
    /// Services whose local service is in trouble, and the copies waiting for them.
    failing: FailingServices,
    /// Last successful exchange with the origin, Unix milliseconds (0: none yet).
    last_exchange_ms: u64,
    last_error: Option<LastError>,
    /// Removals held back by the safety rules in the last reconcile round that asked.
    held: HeldRemovals,
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
        let peer_addr = ctx.peers.borrow().get(&origin).copied();
        let failing = FailingServices::new(origin.clone(), ctx.metrics.clone());
        Actor {
            label: ctx.metrics.origin(&origin),
            timers: Timers::new(now),
            origin,
            ctx,
            views,
            local_ready,
            cursor: None,
            guard,
            health: OriginHealth::new(now),
            dirty: HashSet::new(),
            orphans_dirty: false,
            pulling: None,
            peer_addr,
            refused: HashSet::new(),
            failing,
            last_exchange_ms: 0,
            last_error: None,
            held: HeldRemovals::default(),
        }
    }

    /// Remembers a failure for `syncer status`.
    fn failed(&mut self, what: &str, error: &dyn std::fmt::Display) {
        self.last_error = Some(LastError {
            text: format!("{what}: {error}"),
            at_ms: unix_ms(),
        });
    }

    /// What `syncer status` shows of this importer.
    fn state(&self) -> ImportState {
        let keeping_stale = self.health.is_stale()
            && self.ctx.keeps_stale(
                &self.origin,
                self.health.keeps_stale_copies(self.ctx.settings.keep_stale),
            );
        ImportState {
            peer: self.peer_addr,
            cursor: self.cursor,
            complete: self.guard.is_complete(&self.origin),
            copies: self.views.mappings().len() as u64,
            present: self.views.present.len() as u64,
            desired: self.views.desired.len() as u64,
            last_exchange_ms: self.last_exchange_ms,
            last_error: self.last_error.clone(),
            stale: self.health.is_stale(),
            keeping_stale,
            held: self.held,
            failing_services: self.failing.services() as u64,
        }
    }

    /// The mapping entries of this origin against the present view (`syncer mappings`).
    fn entries(&self) -> Vec<MappingEntry> {
        let entry = |m: &Mapping, state: EntryState| MappingEntry {
            origin: self.origin.clone(),
            tenant: Tenant::new(&m.domain, &m.project),
            origin_service_id: m.origin_service_id.clone(),
            origin_instance_id: m.origin_instance_id.clone(),
            copy_service_id: m.service_id.clone(),
            copy_instance_id: m.instance_id.clone(),
            generation: m.generation,
            updated_ms: m.updated_ms,
            state,
        };
        let mut out: Vec<MappingEntry> = self
            .views
            .mappings()
            .values()
            .map(|m| {
                let state = if self.views.present.contains_key(&m.instance_id) {
                    EntryState::Present
                } else {
                    EntryState::Missing
                };
                entry(m, state)
            })
            .collect();
        out.extend(
            self.views
                .extra_mappings
                .iter()
                .map(|m| entry(m, EntryState::ExtraGeneration)),
        );
        let extra: HashSet<&str> = self
            .views
            .extra_mappings
            .iter()
            .map(|m| m.instance_id.as_str())
            .collect();
        out.extend(
            self.views
                .present
                .iter()
                .filter(|(id, _)| !self.views.is_mapped_copy(id) && !extra.contains(id.as_str()))
                .map(|(id, copy)| MappingEntry {
                    origin: self.origin.clone(),
                    tenant: copy.tenant.clone(),
                    origin_service_id: String::new(),
                    origin_instance_id: String::new(),
                    copy_service_id: copy.service_id.clone(),
                    copy_instance_id: id.clone(),
                    generation: 0,
                    updated_ms: 0,
                    state: EntryState::Unmapped,
                }),
        );
        out
    }

    pub(super) async fn run(mut self, mut inbox: Inbox, token: CancellationToken) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut peers = self.ctx.peers.clone();
        let published = inbox.state.clone();
        loop {
            *published.lock().unwrap_or_else(PoisonError::into_inner) = self.state();
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
                    let addr = peers.borrow_and_update().get(&self.origin).copied();
                    self.on_directory(addr);
                }
                ended = pull_ended(&mut self.pulling) => {
                    if let Some(flight) = self.pulling.take() {
                        self.on_pulled(flight.addr, flight.base, ended).await;
                    }
                }
                Some(asker) = inbox.query.recv() => {
                    let _ = asker.send(self.entries());
                }
                _ = tick.tick() => self.on_tick().await,
            }
        }
        // A pull in flight is aborted: its answer would have nobody to apply it.
        self.pulling = None;
        // Whoever runs this origin's import next reports its own troubles.
        self.failing.clear_all();
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
            // The origin pushes, so it serves now, whatever an earlier pull met (its
            // registry not read yet, a restart): pull at once, not after that pull's
            // back-off.
            self.timers.pull_backoff.reset();
            if self.pulling.is_none() {
                self.start_pull();
            }
            if self.pulling.is_none() {
                self.timers.pull_at = Some(Instant::now());
            } else {
                self.timers.pull_at = None;
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
                self.failed("re-read of the local registry", &e);
                warn!(origin = %self.origin, error = %e, retry_in = ?pause, "cannot re-read the local registry's copies");
                self.timers.reread_at = Some(Instant::now() + pause);
                false
            }
        }
    }

    /// The timers. Every step reads the clock afresh: the steps before it may have waited
    /// on the registry or the store.
    async fn on_tick(&mut self) {
        let now = Instant::now();
        self.check_health(now);
        if now >= self.timers.next_anti_entropy {
            self.timers.next_anti_entropy = now + self.ctx.settings.anti_entropy_interval;
            self.timers.pull_by(now);
        }
        // A pull due while another is in flight waits for its end.
        if self.pulling.is_none() && self.timers.pull_at.is_some_and(|at| now >= at) {
            self.timers.pull_at = None;
            self.start_pull();
        }
        if self.heartbeat_due() && self.heartbeat().await {
            self.reconcile().await;
        }
        if self.timers.reread_at.is_some_and(|at| Instant::now() >= at) && self.reread_local().await
        {
            self.reconcile().await;
        }
        if self.timers.retry_at.is_some_and(|at| Instant::now() >= at) {
            self.timers.retry_at = None;
            self.reconcile().await;
        }
        if !self.failing.is_empty() {
            self.services_due().await;
        }
        self.write_cursor(false).await;
    }

    /// Plans again the copies of services whose back-off ended, and forgets the troubles of
    /// services the origin no longer exports.
    async fn services_due(&mut self) {
        let now = Instant::now();
        let before = self.dirty.len();
        if now >= self.timers.next_sweep {
            self.timers.next_sweep = now + SWEEP_EVERY;
            let exported: HashSet<(&Tenant, &str)> = self
                .views
                .desired
                .keys()
                .map(|k| (&k.tenant, k.service_id.as_str()))
                .collect();
            let back = self
                .failing
                .sweep(|tenant, id| exported.contains(&(tenant, id)));
            self.dirty.extend(back);
            let desired = &self.views.desired;
            self.failing.sweep_copies(|key| desired.contains_key(key));
        }
        if self.failing.next_retry().is_some_and(|at| now >= at) {
            let (keys, services) = self.failing.due(now);
            self.dirty.extend(keys);
            if !services.is_empty() {
                let services: HashSet<(Tenant, String)> = services.into_iter().collect();
                let of_services = self
                    .views
                    .desired
                    .keys()
                    .filter(|k| services.contains(&(k.tenant.clone(), k.service_id.clone())));
                self.dirty.extend(of_services.cloned());
            }
        }
        // Only for what this added: other dirty keys keep their own retry time.
        if self.dirty.len() > before {
            self.reconcile().await;
        }
    }

    /// Judges the origin at `now` (the time of the judgement, never one read before a wait):
    /// stale once `origin_grace` passed without an exchange.
    fn check_health(&mut self, now: Instant) {
        let grace = self.ctx.settings.origin_grace;
        if self.health.check(now, grace) == Some(HealthChange::BecameStale) {
            self.stale_gauge(true);
            let copies = self.views.mappings().len();
            if self
                .ctx
                .keeps_stale(&self.origin, self.ctx.settings.keep_stale)
            {
                warn!(origin = %self.origin, ?grace, copies, "no successful exchange with this data centre within the grace period; keeping its copies alive (--keep-stale-copies, or its name is in conflict)");
            } else {
                warn!(origin = %self.origin, ?grace, copies, "no successful exchange with this data centre within the grace period; its copies are no longer kept alive and expire with their lease");
            }
        }
        let keep_for = self.ctx.settings.keep_stale_for;
        if self.ctx.settings.keep_stale && self.health.check_keep(now, grace, keep_for) {
            error!(origin = %self.origin, ?grace, ?keep_for, copies = self.views.mappings().len(), "no successful exchange with this data centre for longer than the grace period plus --keep-stale-for; its copies are no longer kept alive and expire with their lease");
        }
    }

    /// The peer directory changed. A pull in flight to another address than the one it
    /// names now is given up (a failover in the origin's data centre: the member it went to
    /// may be frozen and never answer), and the new address is pulled from at once.
    fn on_directory(&mut self, addr: Option<SocketAddr>) {
        let moved = addr != self.peer_addr;
        self.peer_addr = addr;
        let Some(addr) = addr else { return };
        if let Some(flight) = &self.pulling
            && flight.addr != addr
        {
            info!(origin = %self.origin, from = %flight.addr, to = %addr, "this data centre's active syncer changed; giving up the pull in flight");
            self.pulling = None;
        }
        if moved || self.cursor.is_none() {
            self.timers.pull_backoff.reset();
            self.timers.pull_at = Some(Instant::now());
        }
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
        self.last_exchange_ms = unix_ms();
        self.ctx
            .metrics
            .last_exchange
            .get_or_create(&self.label)
            .set(unix_ms() as f64 / 1000.0);
        if self.health.exchanged(Instant::now()) == Some(HealthChange::Recovered) {
            self.stale_gauge(false);
            info!(origin = %self.origin, "this data centre is reachable again");
            self.dirty.extend(self.views.desired.keys().cloned());
            // Heartbeat at once: copies may be close to the end of their lease.
            self.timers.next_heartbeat = Instant::now();
        }
    }

    /// Starts a pull from the origin's active syncer, as a task whose end comes back through
    /// the actor's loop ([`pull_ended`]).
    fn start_pull(&mut self) {
        let Some(addr) = self.ctx.peers.borrow().get(&self.origin).copied() else {
            self.last_error = Some(LastError {
                text: "no active syncer of this data centre in the pool".to_owned(),
                at_ms: unix_ms(),
            });
            debug!(origin = %self.origin, "no active syncer known for this data centre");
            return;
        };
        let since = if self.guard.is_complete(&self.origin) {
            self.cursor
        } else {
            None
        };
        let link = self.ctx.link.clone();
        let (asker, origin) = (self.ctx.cluster.clone(), self.origin.clone());
        let task = tokio::spawn(async move {
            link.pull(addr, &asker, &origin, since, PullDeadlines::STANDARD)
                .await
        });
        self.pulling = Some(InFlight {
            addr,
            base: self.cursor,
            task,
        });
    }

    /// The end of the pull to `addr` that continued `base`.
    async fn on_pulled(
        &mut self,
        addr: SocketAddr,
        base: Option<Revision>,
        ended: Result<Result<Pulled, LinkError>, JoinError>,
    ) {
        let result = match ended {
            Ok(result) => result,
            Err(e) => {
                self.failed(&format!("pull from {addr}"), &e);
                error!(origin = %self.origin, %addr, error = %e, "the pull task failed");
                self.timers.pull_at = Some(Instant::now() + self.timers.pull_backoff.pause());
                return;
            }
        };
        match result {
            Ok(pulled) => {
                self.timers.pull_backoff.reset();
                self.exchanged();
                let pulled = if self.cursor == base {
                    Some(pulled)
                } else {
                    // Pushes moved the cursor on while the pull was in flight.
                    rebase(pulled, self.cursor)
                };
                match pulled {
                    Some(pulled) => self.apply_pulled(pulled).await,
                    None => {
                        debug!(origin = %self.origin, cursor = ?self.cursor, "pushes went past the pulled answer")
                    }
                }
            }
            Err(e) => {
                self.failed(&format!("pull from {addr}"), &e);
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
    ///
    /// The origin's clock stamps when its feed saw the change, this one's when the copy was
    /// written: skew between the two shifts every figure, and a change stamped in this
    /// clock's future counts as 0 rather than as negative.
    fn observe_latency(&self, observed: &[u64]) {
        let now = unix_ms();
        let lag = self.ctx.metrics.lag.get_or_create(&self.label);
        for &ms in observed.iter().filter(|&&ms| ms > 0) {
            let seconds = now.saturating_sub(ms) as f64 / 1000.0;
            self.ctx.metrics.apply_latency.observe(seconds);
            lag.observe(seconds);
        }
    }

    /// Plans and executes the work the dirty keys (and orphans) need.
    async fn reconcile(&mut self) {
        if !self.local_ready {
            // Without the registry's view every copy would look missing.
            return;
        }
        // Every held removal is dirty again, so each round counts them afresh.
        self.held = HeldRemovals::default();
        // What is dirty now, in slices; keys dirtied meanwhile (failures, adoptions) wait for
        // the next round, so a failing registry is not retried in a tight loop.
        let mut keys: Vec<InstanceRef> = self.dirty.drain().collect();
        loop {
            let slice = keys.split_off(keys.len().saturating_sub(RECONCILE_SLICE));
            if !self.reconcile_slice(slice).await {
                // The registry did not answer: what is not looked at yet waits for the next
                // round instead of a call per service of every slice now.
                self.dirty.extend(keys);
                self.timers.retry_later();
                return;
            }
            if keys.is_empty() {
                self.copies_gauge();
                return;
            }
            // A long reconcile (a first snapshot into a slow registry) does not hold back
            // the heartbeats of the copies already there.
            if self.heartbeat_due() && self.heartbeat().await {
                self.timers.retry_later();
            }
        }
    }

    /// Plans and executes `keys` (and the orphans, when due). The copies of a service whose
    /// local service cannot be ensured wait for its back-off (`failures`); everything else
    /// goes on. False when the registry did not answer for a service (the rest of the round
    /// waits).
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
        if let Some(answer) = removals {
            self.count_held(answer, waiting.len() as u64);
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
        // A service in back-off is not asked for again before its time.
        let services: Vec<Arc<Service>> = services
            .into_iter()
            .filter(|s| !self.failing.waits(s, now))
            .collect();
        let mut answered = true;
        for (service, ensured) in ensure_services(&self.ctx, &self.origin, services).await {
            if let Ensured::Failed { error, .. } = &ensured {
                answered &= !error.is_retryable();
            }
            let back = self.failing.record(&service, ensured, Instant::now());
            if !back.is_empty() {
                self.dirty.extend(back);
                self.timers.retry_later();
            }
        }
        // The copies of a service that is not there wait for it; removals, updates and
        // every other service's copies go on.
        let (parked, actions): (Vec<Action>, Vec<Action>) =
            actions.into_iter().partition(|action| match action {
                Action::Register { key, .. } => self.failing.blocks(&key.tenant, &key.service_id),
                _ => false,
            });
        for action in parked {
            if let Some(key) = action.key() {
                self.failing.park(key.clone());
            }
        }
        // A copy the registry refused is not written again with the same content before
        // its back-off ends (`failures::due` plans it again then).
        let actions: Vec<Action> = actions
            .into_iter()
            .filter(|action| !self.failing.copy_waits(action, now))
            .collect();
        if actions.is_empty() {
            return answered;
        }
        let mut results = execute_all(self.ctx.clone(), self.origin.clone(), actions);
        while let Some(done) = results.next().await {
            self.record(done);
        }
        self.copies_gauge();
        answered
    }

    /// Counts the `held` removals the guard's `answer` kept back, for `syncer status`.
    fn count_held(&mut self, answer: Removals, held: u64) {
        match answer {
            Removals::Incomplete => self.held.awaiting_snapshot += held,
            Removals::Held(until) => {
                self.held.leader_hold += held;
                let left = until.saturating_duration_since(Instant::now());
                self.held.leader_hold_until_ms =
                    unix_ms() + u64::try_from(left.as_millis()).unwrap_or(u64::MAX / 2);
            }
            Removals::Allowed { .. } => self.held.cap += held,
        }
    }

    /// `syncer_sync_copies{origin, state}` from the views.
    fn copies_gauge(&self) {
        let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        for (state, n) in [
            ("desired", self.views.desired.len()),
            ("mapped", self.views.mappings().len()),
            ("present", self.views.present.len()),
        ] {
            self.ctx
                .metrics
                .copies
                .get_or_create(&OriginState {
                    origin: self.origin.clone(),
                    state,
                })
                .set(count(n));
        }
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

    /// A key (or the orphans) to reconcile again later.
    fn retry(&mut self, key: Option<InstanceRef>) {
        match key {
            Some(key) => {
                self.dirty.insert(key);
            }
            None => self.orphans_dirty = true,
        }
        self.timers.retry_later();
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
                if registered.is_some() {
                    self.failing.copy_written(&key);
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
                key,
                copy_id,
                status,
                properties,
            } => {
                self.failing.copy_written(&key);
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
            Done::Refused {
                key,
                digest,
                reason,
                error,
            } => {
                self.failing
                    .copy_refused(key, digest, reason, &error, Instant::now());
            }
            Done::RemoveFailed(key) => {
                // Chaos suite (etcd killed): removals retried while the store was down used
                // up the cap, and removals waited up to a minute after it was back.
                self.guard.refund(&self.origin, 1);
                self.retry(key);
            }
            Done::Failed(key) => self.retry(key),
        }
    }

    fn heartbeat_due(&self) -> bool {
        Instant::now() >= self.timers.next_heartbeat
    }

    /// Renews this origin's copies (those the planner says are kept alive now); true when
    /// the registry did not know some, which are dirty now and need a reconcile.
    async fn heartbeat(&mut self) -> bool {
        // Judged now: the copies of an origin that went stale meanwhile are not renewed.
        let now = Instant::now();
        self.check_health(now);
        self.timers.next_heartbeat = now + self.ctx.settings.lease.heartbeat_period();
        let refs = plan::heartbeat_targets(
            &self.views,
            self.health.is_stale(),
            self.ctx.keeps_stale(
                &self.origin,
                self.health.keeps_stale_copies(self.ctx.settings.keep_stale),
            ),
        );
        if refs.is_empty() {
            return false;
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
                !self.dirty.is_empty()
            }
            Err(e) => {
                self.ctx
                    .metrics
                    .heartbeats
                    .get_or_create(&Outcome { outcome: e.kind() })
                    .inc();
                self.failed("heartbeat of copies", &e);
                warn!(origin = %self.origin, copies = refs.len(), error = %e, "heartbeat of copies failed");
                false
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

impl KindRules<'_> {
    /// Whether this data centre's service filter (`--include`, `--exclude`) accepts
    /// `service`; one that it does not is logged once, at info: a choice, not an error.
    fn filtered_in(&mut self, service: &Service) -> bool {
        let filter = &self.ctx.settings.filter;
        if filter.is_open() || filter.allows(service) {
            return true;
        }
        let what = format!("{}/{}/{}", service.tenant, service.app, service.name);
        if self.refused.len() < REFUSED_MEMORY && self.refused.insert(format!("filter {what}")) {
            info!(origin = %self.label.origin, service = %what, filter = %filter, "not imported: the service filter keeps it out");
        }
        false
    }
}

impl Admit for KindRules<'_> {
    fn service(&mut self, service: &Service) -> bool {
        if !self.filtered_in(service) {
            return false;
        }
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

    fn instance(&mut self, service: &Service, instance: &Instance) -> bool {
        if !self.filtered_in(service) {
            return false;
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Tenant;

    fn at(epoch: u64, seq: u64) -> Revision {
        Revision { epoch, seq }
    }

    fn removed(seq: u64) -> Increment {
        (
            seq,
            0,
            super::super::super::export::Export::Removed(InstanceRef {
                tenant: Tenant::default_tenant(),
                service_id: "s".into(),
                instance_id: format!("i-{seq}"),
            }),
        )
    }

    fn seqs(pulled: Option<Pulled>) -> Option<Vec<u64>> {
        match pulled {
            Some(Pulled::Increments { changes, .. }) => {
                Some(changes.iter().map(|(seq, _, _)| *seq).collect())
            }
            _ => None,
        }
    }

    #[test]
    fn an_answer_overtaken_by_pushes_keeps_only_what_they_did_not_bring() {
        let increments = || Pulled::Increments {
            to: at(3, 5),
            changes: (3..=5).map(removed).collect(),
        };
        // Pulled from 3:2; pushes brought the cursor to 3:3, then to 3:5, then past.
        assert_eq!(seqs(rebase(increments(), Some(at(3, 3)))), Some(vec![4, 5]));
        assert!(rebase(increments(), Some(at(3, 5))).is_none());
        assert!(rebase(increments(), Some(at(3, 7))).is_none());
        assert!(
            rebase(increments(), Some(at(4, 1))).is_none(),
            "another epoch"
        );
        assert!(rebase(Pulled::UpToDate(at(3, 2)), Some(at(3, 3))).is_none());

        let snapshot = |seq| Pulled::Snapshot {
            revision: at(3, seq),
            items: Vec::new(),
        };
        assert!(rebase(snapshot(4), Some(at(3, 5))).is_none(), "older");
        assert!(matches!(
            rebase(snapshot(5), Some(at(3, 5))),
            Some(Pulled::Snapshot { .. })
        ));
        assert!(matches!(
            rebase(snapshot(1), Some(at(2, 9))),
            Some(Pulled::Snapshot { .. })
        ));
    }
}

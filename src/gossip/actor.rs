//! The task that owns foca. Every input (datagrams, timers, commands, join attempts) arrives
//! in one `select!` loop; foca answers through an accumulating runtime, which the loop then
//! drains: datagrams are sent without waiting (dropped and counted when they cannot leave),
//! timers go into one ordered queue, notifications become membership events.
//!
//! Every turn of the loop must be short: a slow turn delays acks, and a member that acks late
//! is suspected.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use foca::{AccumulatingRuntime, OwnedNotification, PostcardCodec, State, Timer};
use foca_rand::SeedableRng;
use foca_rand::rngs::SmallRng;
use tokio::sync::{broadcast as channel, mpsc, watch};
use tokio::time::{Instant, sleep, sleep_until};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use crate::backoff::Backoff;

use super::broadcast::{Handler, Item};
use super::keyring::{Keyring, KeyringOp, KeyringOpError};
use super::metrics::{GossipMetrics, Status};
use super::packet::{self, FRAME_OVERHEAD_BYTES, Kind, MAX_DATAGRAM_BYTES, SEALED_OVERHEAD_BYTES};
use super::persist::{SavedMember, SavedState, save_state};
use super::{
    Command, GossipConfig, GossipError, MemberInfo, MemberStatus, MembershipEvent, NodeId,
    NodeMeta, Profile, Resolver, UserEvent,
};

type Foca = foca::Foca<NodeId, PostcardCodec, SmallRng, Handler>;

/// A rotation step's name for the log (never the key).
fn op_name(op: &KeyringOp) -> &'static str {
    match op {
        KeyringOp::List => "list",
        KeyringOp::Install(_) => "install",
        KeyringOp::Use(_) => "use",
        KeyringOp::Remove(_) => "remove",
    }
}

/// How long after a membership change the list of live members is written to the state file:
/// changes that come together (a join brings several members up at once) are written once,
/// and the file lists the members well within a second of the change.
const PERSIST_DEBOUNCE: Duration = Duration::from_millis(150);
/// How soon writing the state file is tried again after it failed (a full disk, say).
const PERSIST_RETRY: Duration = Duration::from_secs(5);
/// Receive buffer: large enough to see that an oversized datagram is oversized.
const RECV_BUFFER_BYTES: usize = 65_536;
/// How long one join attempt may spend resolving a name or asking an rpc address.
const JOIN_LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);

pub(super) struct Channels {
    pub commands: mpsc::Sender<Command>,
    pub commands_rx: mpsc::Receiver<Command>,
    pub membership: channel::Sender<MembershipEvent>,
    pub events: channel::Sender<UserEvent>,
    pub local: watch::Sender<NodeId>,
}

struct Join {
    /// Configured `host:port` targets (gossip or rpc addresses).
    targets: Vec<String>,
    /// Gossip addresses remembered from the last run.
    remembered: Vec<SocketAddr>,
    /// Gossip addresses found elsewhere ([`Command::Discovered`]).
    discovered: Vec<SocketAddr>,
    joined: bool,
    attempts: u32,
    /// Pause between attempts until foca reports the member active; reset once it is.
    backoff: Backoff,
    next_attempt: Instant,
}

impl Join {
    fn has_targets(&self) -> bool {
        !self.targets.is_empty() || !self.remembered.is_empty() || !self.discovered.is_empty()
    }
}

pub(super) struct Actor {
    foca: Foca,
    runtime: AccumulatingRuntime<NodeId>,
    socket: Arc<dyn super::Socket>,
    label: Vec<u8>,
    /// Seals every datagram sent and opens every one received; `None`: plain gossip.
    keyring: Option<Keyring>,
    profile: Profile,
    timers: BTreeMap<(Instant, u64), Timer<NodeId>>,
    timer_seq: u64,
    deliveries: Arc<Mutex<VecDeque<Item>>>,
    /// Members that announced a graceful leave: address -> generation that left.
    left: HashMap<SocketAddr, u64>,
    /// Live members as the notifications told us, by address.
    live: HashMap<SocketAddr, NodeId>,
    /// Cluster names in conflict, with the last moment two live members claimed them for
    /// different registries (a conflict ends [`Profile::conflict_hold`] after that).
    conflicts: BTreeMap<String, Instant>,
    /// Cluster names claimed for different registries, not (yet) a conflict: since when
    /// (a conflict once that lasted [`Profile::conflict_settle`]). Imports of a disputed
    /// name are frozen as in a conflict, but a dispute ends as soon as the claims agree.
    disputed: BTreeMap<String, Instant>,
    /// Members seen suspect, with the incarnation and when first seen so (see `sweep`).
    suspects: HashMap<SocketAddr, (NodeId, foca::Incarnation, Instant)>,
    /// foca's current timer token, as carried by the timers it schedules.
    timer_token: Option<foca::TimerToken>,
    event_seq: u64,
    /// Set once the graceful leave began: foca then reports itself defunct, as it should.
    leaving: bool,
    join: Join,
    resolver: Option<Resolver>,
    state_file: Option<PathBuf>,
    /// The generation of this data directory's last run (see [`GossipConfig`]).
    previous_generation: Option<u64>,
    /// When the state file is due to be written: set by a membership change (see
    /// [`PERSIST_DEBOUNCE`]), cleared once written.
    persist_at: Option<Instant>,
    metrics: GossipMetrics,
    ch: Channels,
    tracker: TaskTracker,
    out: Vec<u8>,
}

impl Actor {
    pub(super) fn new(
        config: GossipConfig,
        socket: Arc<dyn super::Socket>,
        metrics: GossipMetrics,
        ch: Channels,
        tracker: TaskTracker,
    ) -> Actor {
        let label = config.label.into_bytes();
        let seal_overhead = if config.keyring.is_some() {
            SEALED_OVERHEAD_BYTES
        } else {
            0
        };
        let max_packet = MAX_DATAGRAM_BYTES - FRAME_OVERHEAD_BYTES - seal_overhead - label.len();
        let deliveries = Arc::new(Mutex::new(VecDeque::new()));
        let rng = match config.seed {
            Some(seed) => SmallRng::seed_from_u64(seed),
            None => SmallRng::seed_from_u64(rand::random()),
        };
        let foca = Foca::with_custom_broadcast(
            config.identity,
            config.profile.foca_config(max_packet),
            rng,
            PostcardCodec,
            Handler::new(deliveries.clone()),
        );
        let own = foca.identity().addr;
        Actor {
            foca,
            runtime: AccumulatingRuntime::new(),
            socket,
            label,
            keyring: config.keyring,
            profile: config.profile,
            timers: BTreeMap::new(),
            timer_seq: 0,
            deliveries,
            left: HashMap::new(),
            live: HashMap::new(),
            conflicts: BTreeMap::new(),
            disputed: BTreeMap::new(),
            suspects: HashMap::new(),
            timer_token: None,
            event_seq: 0,
            leaving: false,
            join: Join {
                targets: config.join,
                remembered: config
                    .remembered
                    .into_iter()
                    .filter(|a| *a != own)
                    .collect(),
                discovered: Vec::new(),
                joined: false,
                attempts: 0,
                backoff: Backoff::new(
                    config.profile.join_backoff_min(),
                    config.profile.join_backoff_max(),
                ),
                next_attempt: Instant::now(),
            },
            resolver: config.resolver,
            state_file: config.state_file,
            previous_generation: config.previous_generation,
            // The node wrote the state file (new generation, remembered members) just before:
            // nothing to write until membership changes.
            persist_at: None,
            metrics,
            ch,
            tracker,
            out: Vec::with_capacity(MAX_DATAGRAM_BYTES),
        }
    }

    fn me(&self) -> &NodeId {
        self.foca.identity()
    }

    pub(super) async fn run(mut self, token: CancellationToken) {
        let me = self.me().clone();
        info!(
            node = %me.name,
            gossip_addr = %me.addr,
            generation = me.generation,
            profile = self.profile.as_str(),
            label = %String::from_utf8_lossy(&self.label),
            "gossip pool starting"
        );
        self.update_gauges();
        let socket = self.socket.clone();
        let mut buf = vec![0u8; RECV_BUFFER_BYTES];
        let suspicion = self.foca_suspicion();
        let mut sweep = tokio::time::interval(suspicion);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let far = Instant::now() + Duration::from_secs(365 * 24 * 3600);
        loop {
            let next_timer = self.timers.keys().next().map(|(at, _)| *at);
            let joining = !self.join.joined && self.join.has_targets();
            tokio::select! {
                biased;
                () = token.cancelled() => break,
                Some(command) = self.ch.commands_rx.recv() => self.on_command(command),
                received = socket.recv_from(&mut buf) => match received {
                    Ok((len, from)) => self.on_datagram(&buf[..len], from),
                    Err(e) => {
                        // ICMP errors of earlier sends surface here on some systems.
                        debug!(error = %e, "gossip receive failed");
                        self.metrics.drop("receive_error");
                    }
                },
                () = sleep_until(next_timer.unwrap_or(far)), if next_timer.is_some() => {
                    self.fire_timers();
                }
                () = sleep_until(self.join.next_attempt), if joining => self.attempt_join(),
                () = sleep_until(self.persist_at.unwrap_or(far)), if self.persist_at.is_some() => {
                    self.persist();
                }
                _ = sweep.tick() => {
                    self.sweep(suspicion);
                    // A conflict whose hold ran out ends here when membership is quiet.
                    self.check_conflicts();
                }
            }
            self.drain();
        }
        self.leave().await;
    }

    // ---- inputs -------------------------------------------------------------------------

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Members(reply) => {
                let _ = reply.send(self.members());
            }
            Command::Broadcast(payload, reply) => {
                let _ = reply.send(self.broadcast(payload));
            }
            Command::Keyring(op, reply) => {
                let result = match &mut self.keyring {
                    // A plain pool stays plain: foca's packets were sized without the seal.
                    None => Err(KeyringOpError::NotEncrypted.into()),
                    Some(keyring) => match keyring.apply(&op) {
                        Ok(()) => {
                            if op != KeyringOp::List {
                                info!(step = op_name(&op), "gossip keyring changed");
                            }
                            Ok(keyring.list())
                        }
                        Err(e) => Err(e.into()),
                    },
                };
                let _ = reply.send(result);
            }
            Command::UpdateMeta(change, reply) => {
                let mut meta = self.me().meta.clone();
                change(&mut meta);
                let changed = meta != self.me().meta;
                let _ = reply.send(self.set_meta(meta));
                // A welcome already on its way answers the old identity and is lost: ask
                // again at once rather than after the join back-off.
                if changed && !self.join.joined && self.join.attempts > 0 && self.join.has_targets()
                {
                    self.send_join_requests();
                }
            }
            Command::Discovered(mut addrs) => {
                let own = self.me().addr;
                addrs.retain(|a| *a != own);
                addrs.sort_unstable();
                addrs.dedup();
                if addrs != self.join.discovered {
                    debug!(found = ?addrs, "members found outside the pool");
                    let new = addrs.iter().any(|a| !self.join.discovered.contains(a));
                    self.join.discovered = addrs;
                    // Alone: try the new addresses now rather than after the back-off.
                    if new && !self.join.joined {
                        self.join.next_attempt = Instant::now();
                    }
                }
            }
            Command::Hello(addrs) => {
                for addr in addrs {
                    if addr != self.me().addr {
                        let hello = postcard::to_allocvec(self.me()).unwrap_or_default();
                        self.send_framed(Kind::Hello, &hello, addr);
                    }
                }
            }
        }
    }

    fn on_datagram(&mut self, datagram: &[u8], from: SocketAddr) {
        self.metrics.received.inc();
        let mut plain = Vec::new();
        let opened = match &self.keyring {
            Some(keyring) => packet::open(&self.label, keyring, datagram, &mut plain),
            None => packet::unframe(&self.label, datagram),
        };
        let (kind, body) = match opened {
            Ok(framed) => framed,
            Err(reject) => {
                debug!(%from, reason = reject.as_str(), len = datagram.len(), "gossip datagram dropped");
                self.metrics.drop(reject.as_str());
                return;
            }
        };
        match kind {
            Kind::Foca => {
                if let Err(e) = self.foca.handle_data(body, &mut self.runtime) {
                    debug!(%from, error = %e, "foca refused a datagram");
                    self.metrics.drop("undecodable");
                }
            }
            Kind::Hello => match postcard::from_bytes::<NodeId>(body) {
                Ok(newcomer) => {
                    debug!(%from, name = %newcomer.name, "join request");
                    let welcome = postcard::to_allocvec(self.me()).unwrap_or_default();
                    self.send_framed(Kind::Welcome, &welcome, from);
                }
                Err(_) => self.metrics.drop("malformed"),
            },
            Kind::Welcome => match postcard::from_bytes::<NodeId>(body) {
                Ok(member) if member.addr != self.me().addr => {
                    debug!(%from, name = %member.name, "welcomed; announcing");
                    if let Err(e) = self.foca.announce(member, &mut self.runtime) {
                        warn!(error = %e, "announce failed");
                    }
                }
                Ok(_) => {}
                Err(_) => self.metrics.drop("malformed"),
            },
            Kind::Notice => match postcard::from_bytes::<Item>(body) {
                Ok(Item::Leave {
                    name,
                    addr,
                    generation,
                }) => self.on_leave(&name, addr, generation),
                Ok(Item::Event { .. }) | Err(_) => self.metrics.drop("malformed"),
            },
        }
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        let mut due = Vec::new();
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > now {
                break;
            }
            due.push(entry.remove());
        }
        // Timers that fell due together go in foca's own order (see `foca::Timer`'s Ord).
        due.sort();
        for timer in due {
            if let Err(e) = self.foca.handle_timer(timer, &mut self.runtime) {
                warn!(error = %e, "foca timer failed");
            }
        }
    }

    fn attempt_join(&mut self) {
        self.join.attempts += 1;
        self.metrics.join_attempts.inc();
        if self.join.attempts > 1 {
            warn!(
                attempt = self.join.attempts,
                targets = %self.join_targets_text(),
                retry_in = ?self.join.backoff.peek(),
                "not in the gossip pool yet: no member answered; retrying"
            );
        } else {
            info!(targets = %self.join_targets_text(), "joining the gossip pool");
        }
        self.send_join_requests();
        // The attempt is a deadline of the actor's loop, not a sleep: only the pause is taken.
        self.join.next_attempt = Instant::now() + self.join.backoff.pause();
    }

    /// Sends `Hello` to every join target (resolving configured ones first).
    fn send_join_requests(&mut self) {
        let mut known = self.join.remembered.clone();
        for addr in &self.join.discovered {
            if !known.contains(addr) {
                known.push(*addr);
            }
        }
        self.on_command(Command::Hello(known));
        for target in self.join.targets.clone() {
            let commands = self.ch.commands.clone();
            let resolver = self.resolver.clone();
            self.tracker.spawn(async move {
                resolve_target(target, resolver, commands).await;
            });
        }
    }

    fn join_targets_text(&self) -> String {
        let mut all: Vec<String> = self.join.targets.clone();
        all.extend(self.join.remembered.iter().map(ToString::to_string));
        all.extend(self.join.discovered.iter().map(ToString::to_string));
        all.join(",")
    }

    fn foca_suspicion(&self) -> Duration {
        self.profile
            .foca_config(MAX_DATAGRAM_BYTES)
            .suspect_to_down_after
    }

    /// Ends suspicions that foca forgot. foca drops its pending suspect-to-down timers
    /// whenever its own identity changes (an automatic rejoin after a partition, a metadata
    /// change); a member suspected just before then stays suspect until it refutes, which it
    /// never does if the suspicion no longer reaches it. A suspicion older than twice the
    /// suspicion time gets its timer again, with foca's current token, so it ends as foca
    /// would have ended it: down (and the member, told so, rejoins as a newer incarnation).
    fn sweep(&mut self, suspicion: Duration) {
        let now = Instant::now();
        let mut current = HashMap::new();
        for member in self.foca.iter_membership_state() {
            if member.state() == State::Suspect {
                let id = member.id().clone();
                let since = match self.suspects.get(&id.addr) {
                    Some((seen, incarnation, since))
                        if *seen == id && *incarnation == member.incarnation() =>
                    {
                        *since
                    }
                    _ => now,
                };
                current.insert(id.addr, (id, member.incarnation(), since));
            }
        }
        self.suspects = current;
        let Some(token) = self.timer_token else {
            return;
        };
        let stale: Vec<(NodeId, foca::Incarnation)> = self
            .suspects
            .values()
            .filter(|(_, _, since)| now.duration_since(*since) > suspicion * 2)
            .map(|(id, incarnation, _)| (id.clone(), *incarnation))
            .collect();
        for (member_id, incarnation) in stale {
            debug!(name = %member_id.name, "suspicion outlived its timer; ending it");
            let timer = Timer::ChangeSuspectToDown {
                member_id,
                incarnation,
                token,
            };
            if let Err(e) = self.foca.handle_timer(timer, &mut self.runtime) {
                warn!(error = %e, "foca timer failed");
            }
        }
    }

    // ---- commands -------------------------------------------------------------------------

    fn broadcast(&mut self, payload: Vec<u8>) -> Result<(), GossipError> {
        let item = Item::Event {
            origin: self.me().name.clone(),
            generation: self.me().generation,
            seq: self.event_seq,
            payload,
        };
        self.event_seq += 1;
        self.foca
            .add_broadcast(&item.encode())
            .map_err(|e| GossipError::Foca(e.to_string()))?;
        self.metrics.events_sent.inc();
        // Send it now rather than waiting for the next probe or gossip round.
        self.foca
            .broadcast(&mut self.runtime)
            .map_err(|e| GossipError::Foca(e.to_string()))
    }

    fn set_meta(&mut self, meta: NodeMeta) -> Result<(), GossipError> {
        if meta == self.me().meta {
            return Ok(());
        }
        let next = self.me().with_meta(meta);
        self.foca
            .change_identity(next.clone(), &mut self.runtime)
            .map_err(|e| GossipError::Foca(e.to_string()))?;
        // foca now waits for a message addressed to the new identity before it probes again,
        // and drops gossip addressed to identities it gave up. When several members change at
        // once, each one's gossip names identities the others just left, and the pool would go
        // silent for good. An announce is accepted by any identity at the right address, so
        // announce to every member we know: each answers with its view, addressed to us.
        let known: Vec<NodeId> = self.foca.iter_members().map(|m| m.id().clone()).collect();
        for member in known {
            if let Err(e) = self.foca.announce(member, &mut self.runtime) {
                debug!(error = %e, "announcing new metadata failed");
            }
        }
        info!(bump = next.bump, role = next.meta.role.as_str(), registry = %next.meta.registry, "announcing new metadata");
        self.ch.local.send_replace(next);
        self.check_conflicts();
        Ok(())
    }

    // ---- outputs ----------------------------------------------------------------------------

    fn send_framed(&mut self, kind: Kind, body: &[u8], to: SocketAddr) {
        match &self.keyring {
            Some(keyring) => packet::seal(&self.label, keyring, kind, body, &mut self.out),
            None => {
                packet::frame(&self.label, kind, &mut self.out);
                self.out.extend_from_slice(body);
            }
        }
        match self.socket.try_send_to(&self.out, to) {
            Ok(()) => {
                self.metrics.sent.inc();
            }
            Err(e) => {
                debug!(%to, error = %e, "gossip send failed");
                self.metrics.drop("send_failed");
            }
        }
    }

    /// Carries out everything foca asked for, until nothing is left.
    fn drain(&mut self) {
        loop {
            let mut progressed = false;
            while let Some((to, data)) = self.runtime.to_send() {
                progressed = true;
                self.send_framed(Kind::Foca, &data, to.addr);
            }
            while let Some((after, timer)) = self.runtime.to_schedule() {
                progressed = true;
                if let Timer::ProbeRandomMember(token)
                | Timer::PeriodicGossip(token)
                | Timer::PeriodicAnnounce(token)
                | Timer::PeriodicAnnounceDown(token) = timer
                {
                    self.timer_token = Some(token);
                }
                self.timer_seq += 1;
                self.timers
                    .insert((Instant::now() + after, self.timer_seq), timer);
            }
            while let Some(notification) = self.runtime.to_notify() {
                progressed = true;
                self.on_notification(notification);
            }
            let deliveries: Vec<Item> = self
                .deliveries
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .drain(..)
                .collect();
            if !deliveries.is_empty() {
                progressed = true;
                for delivery in deliveries {
                    self.on_delivery(delivery);
                }
                // Pass news on at once (epidemic push), besides piggybacking it later.
                if let Err(e) = self.foca.broadcast(&mut self.runtime) {
                    debug!(error = %e, "forwarding broadcasts failed");
                }
            }
            if !progressed {
                break;
            }
        }
    }

    fn on_notification(&mut self, notification: OwnedNotification<NodeId>) {
        match notification {
            OwnedNotification::MemberUp(id) => {
                if id.name == self.me().name && id.addr != self.me().addr {
                    self.same_name(&id);
                }
                if self.left.get(&id.addr) != Some(&id.generation) {
                    self.left.remove(&id.addr);
                }
                info!(name = %id.name, addr = %id.addr, cluster = %id.meta.cluster, "member up");
                self.live.insert(id.addr, id.clone());
                self.membership_changed("alive");
                let info = self.info(&id, MemberStatus::Alive);
                let _ = self.ch.membership.send(MembershipEvent::Up(info));
            }
            OwnedNotification::MemberDown(id) => {
                self.live.remove(&id.addr);
                self.membership_changed("down");
                if self.left.get(&id.addr) == Some(&id.generation) {
                    debug!(name = %id.name, "member that left is now down in foca");
                } else {
                    warn!(name = %id.name, addr = %id.addr, cluster = %id.meta.cluster, "member down");
                    let info = self.info(&id, MemberStatus::Down);
                    let _ = self.ch.membership.send(MembershipEvent::Down(info));
                }
            }
            OwnedNotification::Rename(before, after) => {
                if self.live.remove(&before.addr).is_some() {
                    info!(name = %after.name, generation = after.generation, bump = after.bump, "member updated");
                    self.live.insert(after.addr, after.clone());
                    self.membership_changed("updated");
                    let info = self.info(&after, MemberStatus::Alive);
                    let _ = self.ch.membership.send(MembershipEvent::Updated {
                        before: Box::new(before),
                        after: info,
                    });
                }
            }
            OwnedNotification::Active => {
                if !self.join.joined {
                    info!(
                        members = self.foca.num_members() + 1,
                        "joined the gossip pool"
                    );
                }
                self.join.joined = true;
                self.join.attempts = 0;
                self.join.backoff.reset();
            }
            OwnedNotification::Idle => {
                warn!(
                    "no live member left in the gossip pool; rejoining through --join-addr and remembered members"
                );
                self.join.joined = false;
                self.join.next_attempt = Instant::now();
            }
            OwnedNotification::Rejoin(id) => {
                warn!(
                    bump = id.bump,
                    "the pool declared this syncer down; rejoined as a newer incarnation"
                );
                self.ch.local.send_replace(id);
            }
            OwnedNotification::Defunct if self.leaving => {}
            OwnedNotification::Defunct => {
                error!(
                    "this syncer was declared down and cannot rejoin by itself; rejoining with its current identity"
                );
                if self.foca.reuse_down_identity().is_ok() {
                    self.join.joined = false;
                    self.join.next_attempt = Instant::now();
                }
            }
        }
    }

    /// Another address announces this member's name: this member's previous incarnation
    /// (this process restarted on another address, and the pool has not declared the old one
    /// down yet), or a second process given the same `--node`. An earlier incarnation has a
    /// generation this data directory used already (at most the one the state file held at
    /// start); a second process has its own, which this data directory never handed out. A
    /// newer generation is never an earlier incarnation.
    fn same_name(&self, other: &NodeId) {
        let me = self.me();
        if self
            .previous_generation
            .is_some_and(|previous| other.generation <= previous)
        {
            info!(
                name = %other.name,
                previous_addr = %other.addr,
                previous_generation = other.generation,
                generation = me.generation,
                "my previous incarnation is still listed in the pool; it will be declared down"
            );
        } else {
            error!(
                name = %other.name,
                other = %other.addr,
                other_generation = other.generation,
                generation = me.generation,
                "another member uses this node's name; node names must be unique in the pool (--node)"
            );
        }
    }

    fn on_delivery(&mut self, delivery: Item) {
        match delivery {
            Item::Event {
                origin,
                seq,
                payload,
                ..
            } => {
                self.metrics.events_received.inc();
                let _ = self.ch.events.send(UserEvent {
                    origin,
                    seq,
                    payload,
                });
            }
            Item::Leave {
                name,
                addr,
                generation,
            } => self.on_leave(&name, addr, generation),
        }
    }

    fn on_leave(&mut self, name: &str, addr: SocketAddr, generation: u64) {
        if addr == self.me().addr || self.left.get(&addr) == Some(&generation) {
            return;
        }
        self.left.insert(addr, generation);
        let known = self
            .foca
            .iter_membership_state()
            .find(|m| m.id().addr == addr && m.id().generation == generation)
            .map(|m| m.id().clone());
        if let Some(id) = known {
            info!(%name, %addr, "member left");
            self.live.remove(&addr);
            self.membership_changed("left");
            let info = self.info(&id, MemberStatus::Left);
            let _ = self.ch.membership.send(MembershipEvent::Left(info));
        }
    }

    // ---- state ------------------------------------------------------------------------------

    fn status_of(&self, id: &NodeId, state: State) -> MemberStatus {
        if self.left.get(&id.addr) == Some(&id.generation) {
            return MemberStatus::Left;
        }
        match state {
            State::Alive => MemberStatus::Alive,
            State::Suspect => MemberStatus::Suspect,
            State::Down => MemberStatus::Down,
        }
    }

    fn info(&self, id: &NodeId, status: MemberStatus) -> MemberInfo {
        MemberInfo {
            id: id.clone(),
            status,
            local: id.addr == self.me().addr,
            // Disputed names are frozen as well: until the dispute settles nobody knows
            // which claimant is the data centre everyone imported so far.
            conflict: !id.meta.registry.is_empty()
                && (self.conflicts.contains_key(&id.meta.cluster)
                    || self.disputed.contains_key(&id.meta.cluster)),
        }
    }

    fn members(&self) -> Vec<MemberInfo> {
        let mut others: Vec<MemberInfo> = self
            .foca
            .iter_membership_state()
            .map(|m| self.info(m.id(), self.status_of(m.id(), m.state())))
            .collect();
        // A member that came back under another address (a restart with port 0) is listed
        // once, as its live self.
        let live_names: BTreeSet<String> = others
            .iter()
            .filter(|m| m.status.is_live())
            .map(|m| m.id.name.clone())
            .chain(std::iter::once(self.me().name.clone()))
            .collect();
        others.retain(|m| m.status.is_live() || !live_names.contains(&m.id.name));
        others.sort_by(|a, b| a.id.name.cmp(&b.id.name).then(a.id.addr.cmp(&b.id.addr)));
        let mut all = vec![self.info(self.me(), MemberStatus::Alive)];
        all.extend(others);
        all
    }

    fn membership_changed(&mut self, what: &'static str) {
        self.metrics.change(what);
        if self.persist_at.is_none() {
            self.persist_at = Some(Instant::now() + PERSIST_DEBOUNCE);
        }
        self.check_conflicts();
        self.update_gauges();
    }

    fn update_gauges(&self) {
        let mut counts: HashMap<&'static str, i64> = HashMap::new();
        for member in self.members() {
            *counts.entry(member.status.as_str()).or_default() += 1;
        }
        for status in ["alive", "suspect", "down", "left"] {
            self.metrics
                .members
                .get_or_create(&Status { status })
                .set(counts.get(status).copied().unwrap_or(0));
        }
    }

    /// Finds cluster names claimed by live members serving different registries, and says so
    /// loudly: such data centres would otherwise ignore each other silently, and a third data
    /// centre would import whichever claimant it happened to see. A conflict lasts until no
    /// two live members claimed the name for different registries for
    /// [`Profile::conflict_hold`], so that a claimant's restart does not end it.
    fn check_conflicts(&mut self) {
        let now = Instant::now();
        let mut disputed = std::mem::take(&mut self.disputed);
        let mut registries: BTreeMap<&str, BTreeMap<&str, Vec<&str>>> = BTreeMap::new();
        let me = self.me();
        for id in self.live.values().chain(std::iter::once(me)) {
            if !id.meta.registry.is_empty() {
                registries
                    .entry(id.meta.cluster.as_str())
                    .or_default()
                    .entry(id.meta.registry.as_str())
                    .or_default()
                    .push(id.name.as_str());
            }
        }
        let claimed: BTreeSet<String> = registries
            .iter()
            .filter(|(_, by_registry)| by_registry.len() > 1)
            .map(|(cluster, _)| (*cluster).to_owned())
            .collect();
        // A disagreement becomes a conflict only once it has lasted: members of one data
        // centre whose registry restarted announce its new identity one after the other.
        let settle = self.profile.conflict_settle();
        disputed.retain(|cluster, _| claimed.contains(cluster));
        for cluster in &claimed {
            if !disputed.contains_key(cluster) && !self.conflicts.contains_key(cluster) {
                info!(%cluster, ?settle, "members of one cluster name announce different registries; a conflict if it lasts (a registry that restarted has a new identity until every member asked it again)");
            }
            disputed.entry(cluster.clone()).or_insert(now);
        }
        let live: BTreeSet<String> = claimed
            .into_iter()
            .filter(|cluster| {
                self.conflicts.contains_key(cluster)
                    || disputed
                        .get(cluster)
                        .is_some_and(|since| now.duration_since(*since) >= settle)
            })
            .collect();
        for cluster in &live {
            if self.conflicts.contains_key(cluster) {
                continue;
            }
            let detail: Vec<String> = registries
                .get(cluster.as_str())
                .into_iter()
                .flatten()
                .map(|(registry, names)| format!("registry {registry}: {}", names.join(" ")))
                .collect();
            error!(
                %cluster,
                members = %detail.join("; "),
                "members claim the same cluster name but serve different registries; they will not sync with each other and no data centre imports this name until the conflict ends. Give each data centre its own --cluster-name"
            );
        }
        let hold = self.profile.conflict_hold();
        let mut conflicts = std::mem::take(&mut self.conflicts);
        conflicts.retain(|cluster, last| {
            let keep = live.contains(cluster) || now.duration_since(*last) < hold;
            if !keep {
                info!(%cluster, ?hold, "cluster name conflict resolved");
            }
            keep
        });
        for cluster in live {
            conflicts.insert(cluster, now);
        }
        self.metrics
            .conflicts
            .set(i64::try_from(conflicts.len()).unwrap_or(i64::MAX));
        self.conflicts = conflicts;
        self.disputed = disputed;
    }

    fn persist(&mut self) {
        if self.persist_at.take().is_none() {
            return;
        }
        let Some(path) = self.state_file.clone() else {
            return;
        };
        let mut members: Vec<SavedMember> = self
            .live
            .values()
            .map(|id| SavedMember {
                name: id.name.clone(),
                addr: id.addr,
            })
            .collect();
        if members.is_empty() {
            // Every peer is down or gone: keep remembering the last ones known (the file has
            // this run's generation already), so a restart still knows where to look.
            return;
        }
        members.sort_by(|a, b| a.name.cmp(&b.name));
        let state = SavedState {
            generation: self.me().generation,
            members,
        };
        if let Err(e) = save_state(&path, &state) {
            // Tried again a little later, or at the next change.
            warn!(path = %path.display(), error = %e, "cannot save the gossip state");
            self.persist_at = Some(Instant::now() + PERSIST_RETRY);
        }
    }

    /// Announces a graceful departure: straight to every live member (so they show it as
    /// `left` at once), piggybacked for anyone missed, then foca's own leave.
    async fn leave(&mut self) {
        self.leaving = true;
        self.persist();
        let me = self.me().clone();
        let item = Item::Leave {
            name: me.name.clone(),
            addr: me.addr,
            generation: me.generation,
        }
        .encode();
        let _ = self.foca.add_broadcast(&item);
        let targets: Vec<SocketAddr> = self.live.keys().copied().collect();
        for addr in targets {
            self.send_framed(Kind::Notice, &item, addr);
        }
        if let Err(e) = self.foca.leave_cluster(&mut self.runtime) {
            warn!(error = %e, "leaving the pool failed");
        }
        self.drain();
        // Give the leave a moment to spread before the socket closes (serf's
        // LeavePropagateDelay).
        sleep(self.profile.leave_delay()).await;
        self.drain();
        info!(node = %me.name, "left the gossip pool");
    }
}

/// Resolves one join target and asks the actor to greet what it found: the address itself
/// (if it is a gossip address) and, through `resolver`, the gossip address of a syncer whose
/// rpc address it is.
async fn resolve_target(
    target: String,
    resolver: Option<Resolver>,
    commands: mpsc::Sender<Command>,
) {
    match tokio::time::timeout(
        JOIN_LOOKUP_TIMEOUT,
        tokio::net::lookup_host(target.as_str()),
    )
    .await
    {
        Ok(Ok(addrs)) => {
            let _ = commands.send(Command::Hello(addrs.collect())).await;
        }
        Ok(Err(e)) => warn!(%target, error = %e, "cannot resolve join address"),
        Err(_) => warn!(%target, "resolving join address timed out"),
    }
    let Some(resolver) = resolver else {
        return;
    };
    if let Ok(Some(gossip)) =
        tokio::time::timeout(JOIN_LOOKUP_TIMEOUT, resolver(target.clone())).await
    {
        debug!(%target, %gossip, "join address is a syncer rpc address; joining through its gossip address");
        let _ = commands.send(Command::Hello(vec![gossip])).await;
    }
}

//! The gossip pool: every syncer of every data centre is a member of one SWIM pool (foca)
//! over UDP on `--bind-addr`. It gives membership with distributed failure detection, the
//! metadata each member announces (cluster, rpc address, role, registry), and small broadcast
//! events.
//!
//! Shape (STYLE.md §2.4-2.6): one task (`actor.rs`) owns `Foca`; foca's runtime only queues
//! sends, timers and notifications, which the actor then carries out; all timers sit in one
//! ordered queue driven by tokio's clock. `transport/` has the UDP socket and an in-memory
//! twin that can cut links, for tests under a paused clock. The rest of the daemon talks to
//! the pool through a cheap [`GossipHandle`].

mod actor;
mod broadcast;
pub mod identity;
mod keyring;
mod meta;
mod metrics;
mod packet;
mod persist;
pub mod transport;

use std::fmt;
use std::net::SocketAddr;
use std::num::{NonZeroU8, NonZeroUsize};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::{broadcast as channel, mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use identity::{NodeId, next_generation, registry_fingerprint};
pub use keyring::{
    GossipKey, KEYRING_FILE, KeyError, KeyList, Keyring, KeyringError, KeyringOp, KeyringOpError,
};
pub use meta::{MetaError, NodeMeta, Role};
pub use metrics::GossipMetrics;
pub use packet::{MAX_DATAGRAM_BYTES, MAX_LABEL_BYTES};
pub use persist::{SavedState, load_state, save_state};
pub use transport::Socket;

/// Largest user-event payload, as serf's default user-event limit.
pub const MAX_EVENT_BYTES: usize = 512;
/// Capacity of the command queue into the actor.
const COMMAND_QUEUE: usize = 256;
/// Membership and user events buffered per subscriber before a slow one starts missing them.
const SUBSCRIBER_BUFFER: usize = 1024;

/// Failure-detection timing, chosen per network (`--gossip-profile`). The names are the
/// configuration's ([`crate::config::GossipProfile`]); the timing of each is here.
pub use crate::config::GossipProfile as Profile;

/// The timing of a [`Profile`], in foca's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Each member probes one other member per period.
    pub probe_period: Duration,
    /// How long a direct probe waits for its ack before asking others to probe.
    pub probe_rtt: Duration,
    /// How long a suspect member has to refute before it is declared down.
    pub suspicion: Duration,
    /// Every this often, a member sends its pending updates to [`Timing::GOSSIP_FANOUT`]
    /// others.
    pub gossip_every: Duration,
    /// Every this often, a member announces itself to one other (and gets its view back).
    pub announce_every: Duration,
    /// Every this often, a member announces itself to two members it holds down.
    pub announce_down_every: Duration,
}

impl Timing {
    /// Members each periodic gossip round goes to.
    pub const GOSSIP_FANOUT: usize = 3;

    /// Periodic gossip rounds until an update has reached every one of `members`: push
    /// gossip with fan-out f informs about (f + 1)× more members per round until most know,
    /// then needs about ln(n) / f rounds to reach the last ones (Pittel's bound for f = 1 is
    /// log2 n + ln n), so ⌈log_(f+1)(n) + ln(n) / f⌉. Piggybacking on probes only helps.
    pub fn dissemination_rounds(members: usize) -> u32 {
        let n = members.max(2) as f64;
        let f = Self::GOSSIP_FANOUT as f64;
        (n.ln() / (f + 1.0).ln() + n.ln() / f).ceil() as u32
    }

    /// How long until every one of `members` sees a crashed member down, when someone
    /// probes it within `probe_periods` periods: each member probes one other per period,
    /// so a given member escapes every probe of one period with probability about 1/e, and
    /// is probed within k periods with probability 1 - e^-k (k = 3: 95 %, k = 7: 99.9 %).
    /// Then one period for the direct and indirect probes, the suspicion timeout, and
    /// [`Timing::dissemination_rounds`] of periodic gossip for the verdict. The number of
    /// members enters only through the dissemination, logarithmically: foca's suspicion
    /// timeout is fixed, not scaled with the pool.
    pub fn detection_bound(&self, members: usize, probe_periods: u32) -> Duration {
        self.probe_period * (probe_periods + 1)
            + self.suspicion
            + self.gossip_every * Self::dissemination_rounds(members)
    }
}

impl Profile {
    /// The failure-detection timing of this profile.
    pub fn timing(self) -> Timing {
        let ms = Duration::from_millis;
        let (probe_period, probe_rtt, suspicion, gossip_every, announce_every, announce_down_every) =
            match self {
                Profile::Lan => (ms(500), ms(200), ms(1500), ms(200), ms(2000), ms(10_000)),
                Profile::Wan => (
                    ms(2000),
                    ms(1000),
                    ms(6000),
                    ms(500),
                    ms(10_000),
                    ms(30_000),
                ),
                Profile::Local => (ms(100), ms(50), ms(300), ms(50), ms(500), ms(1000)),
            };
        Timing {
            probe_period,
            probe_rtt,
            suspicion,
            gossip_every,
            announce_every,
            announce_down_every,
        }
    }

    /// The foca configuration of this profile for datagrams of `max_packet_size` bytes.
    ///
    /// Detection time is roughly: wait until some member probes the dead one (each member
    /// probes one other per period, so with n members a given one is probed within k periods
    /// with probability 1 - e^-k), one period for the direct and indirect probes, the
    /// suspicion time, then dissemination of the verdict (periodic gossip, a few rounds):
    /// [`Timing::detection_bound`]. For `lan` and 500 members with k = 3 that is
    /// 1.5 + 0.5 + 1.5 + 7 × 0.2 = 4.9 s.
    pub fn foca_config(self, max_packet_size: usize) -> foca::Config {
        let mut config = foca::Config::simple();
        let timing = self.timing();
        config.probe_period = timing.probe_period;
        config.probe_rtt = timing.probe_rtt;
        config.suspect_to_down_after = timing.suspicion;
        config.num_indirect_probes = NonZeroUsize::MIN.saturating_add(2);
        // Enough retransmissions for a few hundred members (memberlist: 4 × log10(n + 1)).
        config.max_transmissions = NonZeroU8::MIN.saturating_add(9);
        // Down and left members stay listed (and are re-announced to, which heals partitions)
        // for a day, as foca's default.
        config.remove_down_after = Some(Duration::from_secs(24 * 3600));
        config.max_packet_size = NonZeroUsize::new(max_packet_size).unwrap_or(NonZeroUsize::MIN);
        config.notify_down_members = true;
        config.periodic_announce = Some(foca::PeriodicParams {
            frequency: timing.announce_every,
            num_members: NonZeroUsize::MIN,
        });
        config.periodic_announce_to_down_members = Some(foca::PeriodicParams {
            frequency: timing.announce_down_every,
            num_members: NonZeroUsize::MIN.saturating_add(1),
        });
        config.periodic_gossip = Some(foca::PeriodicParams {
            frequency: timing.gossip_every,
            num_members: NonZeroUsize::new(Timing::GOSSIP_FANOUT).unwrap_or(NonZeroUsize::MIN),
        });
        config
    }

    /// First delay between join attempts (it doubles up to [`Profile::join_backoff_max`]).
    fn join_backoff_min(self) -> Duration {
        match self {
            Profile::Local => Duration::from_millis(200),
            _ => Duration::from_secs(1),
        }
    }

    fn join_backoff_max(self) -> Duration {
        match self {
            Profile::Local => Duration::from_secs(2),
            _ => Duration::from_secs(30),
        }
    }

    /// How long a cluster name stays in conflict after the last moment two live members
    /// claimed it for different registries. A claimant that restarts leaves the pool and
    /// comes back (without a registry fingerprint until its registry answers): the conflict
    /// must outlast that window, or a data centre importing that name would resume with
    /// whichever claimant it sees alone and flip to the other one's instances.
    pub fn conflict_hold(self) -> Duration {
        match self {
            Profile::Local => Duration::from_secs(5),
            Profile::Lan => Duration::from_secs(30),
            Profile::Wan => Duration::from_secs(60),
        }
    }

    /// How often a member asks its registry who it is again. A registry's identity changes
    /// when it restarts (Service Center registers itself under a new instance id), so the
    /// members of one data centre may announce different fingerprints until each has asked.
    pub fn identity_refresh(self) -> Duration {
        match self {
            Profile::Local => Duration::from_secs(1),
            _ => Duration::from_secs(3),
        }
    }

    /// How long live members must keep claiming one cluster name for different registries
    /// before it is a conflict (logged as an error, held for [`Profile::conflict_hold`]):
    /// several identity refreshes, so that a registry that restarted (its members announcing
    /// its new identity one after the other) is not mistaken for a second data centre using
    /// the same name. Until then the name is disputed: its imports are frozen all the same.
    pub fn conflict_settle(self) -> Duration {
        match self {
            Profile::Local => Duration::from_secs(3),
            Profile::Lan => Duration::from_secs(15),
            Profile::Wan => Duration::from_secs(30),
        }
    }

    /// How long a leaving member keeps sending after announcing its departure.
    fn leave_delay(self) -> Duration {
        match self {
            Profile::Local => Duration::from_millis(50),
            Profile::Lan => Duration::from_millis(200),
            Profile::Wan => Duration::from_millis(500),
        }
    }
}

/// Learns a member's gossip address from an address that may be its rpc address (the original
/// README joins through `:30191`); `None` when that address does not answer as a syncer.
pub type Resolver = Arc<dyn Fn(String) -> BoxFuture<'static, Option<SocketAddr>> + Send + Sync>;

/// Everything the pool needs to start.
#[derive(Clone)]
pub struct GossipConfig {
    /// This member, with its generation already chosen (see [`next_generation`]).
    pub identity: NodeId,
    /// Pool label; members with another label never see each other.
    pub label: String,
    pub profile: Profile,
    /// `host:port` addresses to join through (gossip or rpc addresses).
    pub join: Vec<String>,
    /// Where the last known members are remembered (`--data-dir/gossip.json`).
    pub state_file: Option<PathBuf>,
    /// Gossip addresses remembered from the last run, tried when `join` does not answer.
    pub remembered: Vec<SocketAddr>,
    /// The generation of the last run (from the state file): a member with this node's name
    /// and a generation up to this one is this member's own earlier incarnation, not a
    /// second process with the same name.
    pub previous_generation: Option<u64>,
    pub resolver: Option<Resolver>,
    /// Seed of foca's random choices; random when `None`.
    pub seed: Option<u64>,
    /// Keys that seal and open every datagram; `None` sends and accepts plain datagrams.
    pub keyring: Option<Keyring>,
}

impl fmt::Debug for GossipConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GossipConfig")
            .field("identity", &self.identity)
            .field("label", &self.label)
            .field("profile", &self.profile)
            .field("join", &self.join)
            .field("state_file", &self.state_file)
            .field("remembered", &self.remembered)
            .field("previous_generation", &self.previous_generation)
            .field("keyring", &self.keyring)
            .finish_non_exhaustive()
    }
}

/// How the pool sees a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MemberStatus {
    Alive,
    /// Failed a probe; declared down unless it refutes in time.
    Suspect,
    /// Declared down by the pool (crashed, or unreachable).
    Down,
    /// Announced its own departure (graceful shutdown).
    Left,
}

impl MemberStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            MemberStatus::Alive => "alive",
            MemberStatus::Suspect => "suspect",
            MemberStatus::Down => "down",
            MemberStatus::Left => "left",
        }
    }

    /// Alive or suspect: still counted as a member.
    pub fn is_live(self) -> bool {
        matches!(self, MemberStatus::Alive | MemberStatus::Suspect)
    }
}

/// One member of the pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberInfo {
    pub id: NodeId,
    pub status: MemberStatus,
    /// This member is the local node.
    pub local: bool,
    /// Its cluster name is also claimed by a live member serving a different registry (or was,
    /// within [`Profile::conflict_hold`]). Other data centres do not import that name while
    /// this lasts.
    pub conflict: bool,
}

/// A change of membership, for the rest of the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MembershipEvent {
    Up(MemberInfo),
    Down(MemberInfo),
    Left(MemberInfo),
    /// A live member announced new metadata or restarted (`before` is its previous identity).
    Updated {
        before: Box<NodeId>,
        after: MemberInfo,
    },
}

/// A user event broadcast by another member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserEvent {
    /// Node name of the sender.
    pub origin: String,
    /// Sequence number within the sender's generation.
    pub seq: u64,
    pub payload: Vec<u8>,
}

/// Errors of the gossip pool's handle.
#[derive(Debug, thiserror::Error)]
pub enum GossipError {
    #[error("event payload of {size} bytes exceeds the limit of {max} bytes")]
    EventTooLarge { size: usize, max: usize },
    #[error("the gossip pool has stopped")]
    Stopped,
    #[error("foca refused the operation: {0}")]
    Foca(String),
    #[error("gossip keyring: {0}")]
    Keyring(#[from] KeyringOpError),
}

type MetaChange = Box<dyn FnOnce(&mut NodeMeta) + Send>;

enum Command {
    Members(oneshot::Sender<Vec<MemberInfo>>),
    Broadcast(Vec<u8>, oneshot::Sender<Result<(), GossipError>>),
    /// A change of this member's metadata, applied by the actor to its current metadata so
    /// that concurrent changes of different fields all land.
    UpdateMeta(MetaChange, oneshot::Sender<Result<(), GossipError>>),
    /// Addresses resolved for a join attempt: send `Hello` to them.
    Hello(Vec<SocketAddr>),
    /// Gossip addresses of members found elsewhere (cluster mode: the shared etcd): join
    /// targets besides `--join-addr` and the remembered members, replacing the last list.
    Discovered(Vec<SocketAddr>),
    /// One rotation step on this member's keyring.
    Keyring(KeyringOp, oneshot::Sender<Result<KeyList, GossipError>>),
}

/// A cheap, cloneable handle on the running pool.
#[derive(Clone)]
pub struct GossipHandle {
    commands: mpsc::Sender<Command>,
    membership: channel::Sender<MembershipEvent>,
    events: channel::Sender<UserEvent>,
    local: watch::Receiver<NodeId>,
}

impl fmt::Debug for GossipHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GossipHandle")
            .field("local", &*self.local.borrow())
            .finish_non_exhaustive()
    }
}

impl GossipHandle {
    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, GossipError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .await
            .map_err(|_| GossipError::Stopped)?;
        rx.await.map_err(|_| GossipError::Stopped)
    }

    /// Every member foca knows, the local one first, then by name.
    ///
    /// # Errors
    /// [`GossipError::Stopped`] after shutdown.
    pub async fn members(&self) -> Result<Vec<MemberInfo>, GossipError> {
        self.ask(Command::Members).await
    }

    /// Applies one rotation step to this member's keyring (saved to its keyring file) and
    /// answers the keys installed afterwards. Only this member changes: a whole-pool rotation
    /// applies each step on every member before the next step.
    ///
    /// # Errors
    /// [`GossipError::Keyring`] when the step is refused or the pool is not encrypted;
    /// [`GossipError::Stopped`].
    pub async fn keyring(&self, op: KeyringOp) -> Result<KeyList, GossipError> {
        self.ask(|tx| Command::Keyring(op, tx)).await?
    }

    /// Broadcasts `payload` to every live member; each receives it once.
    ///
    /// # Errors
    /// [`GossipError::EventTooLarge`] above [`MAX_EVENT_BYTES`]; [`GossipError::Stopped`].
    pub async fn broadcast(&self, payload: Vec<u8>) -> Result<(), GossipError> {
        if payload.len() > MAX_EVENT_BYTES {
            return Err(GossipError::EventTooLarge {
                size: payload.len(),
                max: MAX_EVENT_BYTES,
            });
        }
        self.ask(|tx| Command::Broadcast(payload, tx)).await?
    }

    /// Changes some of this member's metadata (role, registry, ...) and announces it. The
    /// change is applied to the metadata current when the pool handles it, so concurrent
    /// changes of different fields never undo each other.
    ///
    /// # Errors
    /// [`GossipError::Stopped`] after shutdown.
    pub async fn update_meta(
        &self,
        change: impl FnOnce(&mut NodeMeta) + Send + 'static,
    ) -> Result<(), GossipError> {
        self.ask(|tx| Command::UpdateMeta(Box::new(change), tx))
            .await?
    }

    /// Tells the pool where other members were found (cluster mode: registered in the shared
    /// etcd). A member that is not in the pool (alone since it started, or since every peer
    /// went down) tries them at once, besides `--join-addr` and the remembered members; this
    /// list replaces the one given before.
    ///
    /// # Errors
    /// [`GossipError::Stopped`] after shutdown.
    pub async fn discovered(&self, addrs: Vec<SocketAddr>) -> Result<(), GossipError> {
        self.commands
            .send(Command::Discovered(addrs))
            .await
            .map_err(|_| GossipError::Stopped)
    }

    /// This member's current identity.
    pub fn local(&self) -> NodeId {
        self.local.borrow().clone()
    }

    /// Membership changes from now on.
    pub fn subscribe(&self) -> channel::Receiver<MembershipEvent> {
        self.membership.subscribe()
    }

    /// User events from other members, from now on.
    pub fn events(&self) -> channel::Receiver<UserEvent> {
        self.events.subscribe()
    }
}

/// Starts the pool on `socket`. It leaves the pool gracefully when `token` is cancelled; the
/// task is spawned on `tracker`.
pub fn spawn(
    config: GossipConfig,
    socket: Arc<dyn Socket>,
    metrics: GossipMetrics,
    token: CancellationToken,
    tracker: &TaskTracker,
) -> GossipHandle {
    let (commands, commands_rx) = mpsc::channel(COMMAND_QUEUE);
    let (membership, _) = channel::channel(SUBSCRIBER_BUFFER);
    let (events, _) = channel::channel(SUBSCRIBER_BUFFER);
    let (local_tx, local) = watch::channel(config.identity.clone());
    let handle = GossipHandle {
        commands: commands.clone(),
        membership: membership.clone(),
        events: events.clone(),
        local,
    };
    let actor = actor::Actor::new(
        config,
        socket,
        metrics,
        actor::Channels {
            commands,
            commands_rx,
            membership,
            events,
            local: local_tx,
        },
        tracker.clone(),
    );
    tracker.spawn(actor.run(token));
    handle
}

#[cfg(test)]
mod tests;

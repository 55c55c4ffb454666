//! How the engine reaches the other data centres' syncers, in model terms only: pull an
//! origin's data since a revision, push a batch of increments, fetch the contents of an
//! exported service's schemas. The engine sees nothing of the wire; [`PeerLink`] has two implementations:
//!
//! - the gRPC one, `crate::rpc::transfer::GrpcLink`, used by the daemon;
//! - [`MemoryNetwork`] / [`MemoryLink`], an in-memory twin that routes calls to engines
//!   registered in the same process and can drop, delay, freeze and partition them, for tests that
//!   run several data centres under tokio's paused clock.
//!
//! The serving side is [`crate::sync::SyncHandle::serve_pull`],
//! [`crate::sync::SyncHandle::serve_push`] and `serve_contracts`, which both implementations call (the gRPC one
//! through the `Peer` service of the other process).

mod memory;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::export::{ExportViewSnapshot, Increment, Revision};
use crate::registry::{Instance, Schema, Service, Tenant};

pub use memory::{MemoryLink, MemoryNetwork, MemoryStats};

/// How long a pull may wait for its answer: the importer gives up on a peer that stopped
/// answering (a frozen process, a hung server, a blackholed connection) within seconds, not
/// minutes, and pulls again, elsewhere when the peer directory moved on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PullDeadlines {
    /// From the call to the first message of the answer, connecting included.
    pub first: Duration,
    /// Between two messages of the answer.
    pub idle: Duration,
    /// The whole answer, whatever its pace.
    pub whole: Duration,
}

impl PullDeadlines {
    /// The importer's deadlines.
    ///
    /// - `first`, 10 s: the serving syncer builds its answer from memory before it sends the
    ///   first message (a 10 000-instance snapshot takes tens of milliseconds), and a
    ///   connection attempt is bounded at 2 s, so 10 s leaves a loaded peer on a slow WAN a
    ///   wide margin; a peer that accepted the call and went silent is given up after a
    ///   sixth of the default `--origin-grace` (60 s), so several pulls fit in the grace
    ///   period.
    /// - `idle`, 10 s: a message is at most 2 MiB (a snapshot chunk of up to 500
    ///   instances), so a stream keeps going down to about 200 KiB/s; a 10 000-instance
    ///   snapshot is some 20 such chunks and streams at whatever pace the link allows.
    /// - `whole`, 60 s: the bound that held for the whole stream before; it only stops a
    ///   peer that dribbles forever, since heartbeats never wait on a pull.
    pub const STANDARD: PullDeadlines = PullDeadlines {
        first: Duration::from_secs(10),
        idle: Duration::from_secs(10),
        whole: Duration::from_secs(60),
    };
}

/// A validated push: consecutive changes `from_seq + 1 ..= to_seq` of `origin`'s `epoch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Push {
    pub origin: String,
    pub epoch: u64,
    pub from_seq: u64,
    pub to_seq: u64,
    /// `(seq, observed_ms, export)`, in order.
    pub changes: Vec<Increment>,
}

/// The receiver's answer to a push: whether it applied the changes, and its cursor for the
/// origin after the call (its real cursor when it refused, so the sender can continue from
/// there).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PushReply {
    pub applied: bool,
    pub epoch: u64,
    pub seq: u64,
}

impl PushReply {
    /// The receiver's cursor after the call.
    pub fn cursor(&self) -> Revision {
        Revision {
            epoch: self.epoch,
            seq: self.seq,
        }
    }
}

/// What a push told the sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PushOutcome {
    pub reply: PushReply,
    /// How many of the offered changes were sent (a link sends the first run that fits one
    /// message; the sender continues from the receiver's cursor).
    pub sent: usize,
}

/// What an engine answers to a pull.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullAnswer {
    /// The data centre the data comes from (the answering engine's).
    pub origin: String,
    pub body: PullBody,
}

/// The content of a [`PullAnswer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PullBody {
    /// Nothing after the asker's revision, which is this one.
    UpToDate(Revision),
    /// The changes after the asker's revision (never empty), up to `to`.
    Increments {
        to: Revision,
        changes: Vec<Increment>,
    },
    /// Everything exported now, with its revision and digest.
    Snapshot(ExportViewSnapshot),
}

impl PullBody {
    /// The completion kind, as counted in `syncer_sync_transfers_total{outcome}`.
    pub fn kind(&self) -> &'static str {
        match self {
            PullBody::UpToDate(_) => "up_to_date",
            PullBody::Increments { .. } => "increments",
            PullBody::Snapshot(_) => "snapshot",
        }
    }
}

/// What a pull brought, checked (sequence continuity, snapshot digest, origin).
#[derive(Debug)]
pub enum Pulled {
    /// Nothing new: the origin is at this revision.
    UpToDate(Revision),
    /// The changes after the asked revision, up to `to`.
    Increments {
        to: Revision,
        changes: Vec<Increment>,
    },
    /// Everything the origin exports at `revision`, digest checked.
    Snapshot {
        revision: Revision,
        items: Vec<(Arc<Service>, Instance)>,
    },
}

/// Why a call to a peer failed.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The peer cannot be reached or cannot serve now (starting, standby, stopping, no
    /// connection): retried later or elsewhere.
    #[error("call failed: unavailable: {0}")]
    Unavailable(String),
    /// The peer refused the call (it judged the request invalid).
    #[error("call failed: refused: {0}")]
    Refused(String),
    /// The answer did not pass validation.
    #[error("malformed answer: {0}")]
    Malformed(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The answer was inconsistent or cut short (no completion marker, gaps, digest
    /// mismatch, another origin, an unknown completion kind).
    #[error("incomplete answer: {0}")]
    Incomplete(String),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
}

impl LinkError {
    /// The `outcome` label of `syncer_sync_transfers_total` for this failure.
    pub fn outcome(&self) -> &'static str {
        match self {
            LinkError::Unavailable(_) | LinkError::Refused(_) => "error",
            LinkError::Malformed(_) => "malformed",
            LinkError::Incomplete(_) => "incomplete",
            LinkError::Timeout(_) => "timeout",
        }
    }
}

/// The engine's way to other data centres' active syncers, addressed by their rpc address.
#[async_trait]
pub trait PeerLink: Send + Sync {
    /// Pulls from the syncer at `addr` the data of `origin` after `since` (`None`: a full
    /// snapshot), on behalf of `asker` (this data centre), within `deadlines`
    /// ([`LinkError::Timeout`] names the one that passed).
    async fn pull(
        &self,
        addr: SocketAddr,
        asker: &str,
        origin: &str,
        since: Option<Revision>,
        deadlines: PullDeadlines,
    ) -> Result<Pulled, LinkError>;

    /// Asks the syncer at `addr` for the contents of schemas `ids` of its exported service
    /// `service_id` of `tenant`, within `timeout`; answers those its registry has content
    /// for. The default refuses (a link without contracts).
    async fn contracts(
        &self,
        _addr: SocketAddr,
        _tenant: &Tenant,
        _service_id: &str,
        _ids: &[String],
        _timeout: Duration,
    ) -> Result<Vec<Schema>, LinkError> {
        Err(LinkError::Refused(
            "contracts are not carried by this link".into(),
        ))
    }

    /// Pushes to the syncer at `addr` the first run of `changes` (consecutive after `from`,
    /// exported by `origin`) that fits one message, within `timeout`.
    async fn push(
        &self,
        addr: SocketAddr,
        origin: &str,
        from: Revision,
        changes: &[Increment],
        timeout: Duration,
    ) -> Result<PushOutcome, LinkError>;
}

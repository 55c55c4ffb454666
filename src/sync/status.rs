//! What the engine tells about itself (`syncer status`, `syncer mappings`), in model terms:
//! `crate::rpc` turns these into the `Status` and `Mappings` answers.
//!
//! Each importer publishes its [`ImportState`] after every message it handles, so a status
//! call reads it without waiting for a busy importer. The mapping list, which can hold
//! 150 000 entries, is asked of the importer itself (it owns the views) and waited for with
//! a deadline.

use std::net::SocketAddr;

use super::export::Revision;
use crate::registry::Tenant;

/// How far behind an importer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lag {
    /// This many changes behind the origin's last announced revision (same epoch).
    Changes(u64),
    /// The origin's epoch differs from the cursor's (or no complete snapshot was applied
    /// yet): the next pull is a full snapshot.
    SnapshotPending,
}

/// Judges the lag of a cursor against what the origin announced last.
pub fn lag(cursor: Option<Revision>, announced: Option<Revision>, complete: bool) -> Lag {
    match (cursor, announced) {
        (None, _) => Lag::SnapshotPending,
        (Some(_), _) if !complete => Lag::SnapshotPending,
        // A push may have brought the cursor past the last announcement.
        (Some(_), None) => Lag::Changes(0),
        (Some(c), Some(a)) if c.epoch == a.epoch => Lag::Changes(a.seq.saturating_sub(c.seq)),
        // The cursor is on a newer epoch than an old announcement: up to date.
        (Some(c), Some(a)) if c.epoch > a.epoch => Lag::Changes(0),
        (Some(_), Some(_)) => Lag::SnapshotPending,
    }
}

/// Removals of copies the safety rules hold back, as of the importer's last reconcile round
/// that asked for removals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeldRemovals {
    /// Over the removal cap (`--removal-cap` per minute): wait for the window to move.
    pub cap: u64,
    /// No complete snapshot of the origin applied yet since the start.
    pub awaiting_snapshot: u64,
    /// A new leader waits out its predecessor's copy lease.
    pub leader_hold: u64,
    /// Until when the new-leader hold lasts (Unix milliseconds; 0: none).
    pub leader_hold_until_ms: u64,
}

impl HeldRemovals {
    /// All removals held back.
    pub fn total(&self) -> u64 {
        self.cap + self.awaiting_snapshot + self.leader_hold
    }
}

/// One failure of the importer, as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastError {
    pub text: String,
    /// Unix milliseconds.
    pub at_ms: u64,
}

/// What one origin's importer knows, published after every message it handles.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportState {
    /// The rpc address of the origin's active syncer, from the peer directory.
    pub peer: Option<SocketAddr>,
    /// The revision of the origin applied here.
    pub cursor: Option<Revision>,
    /// Whether a complete snapshot of the origin was applied (removals may happen).
    pub complete: bool,
    /// Copies held (mappings).
    pub copies: u64,
    /// Copies of the origin the local registry holds now.
    pub present: u64,
    /// Instances the origin exports (as admitted here).
    pub desired: u64,
    /// Last successful exchange (pull or push), Unix milliseconds; 0: none.
    pub last_exchange_ms: u64,
    pub last_error: Option<LastError>,
    /// No exchange within `--origin-grace`.
    pub stale: bool,
    /// While stale: the copies are still heartbeated (`--keep-stale-copies`, or the origin's
    /// name is in conflict).
    pub keeping_stale: bool,
    pub held: HeldRemovals,
    /// Services whose local service is in trouble (their copies wait).
    pub failing_services: u64,
}

/// One origin in [`EngineStatus`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginStatus {
    pub origin: String,
    /// The origin's revision as last announced in gossip.
    pub announced: Option<Revision>,
    pub state: ImportState,
    /// Whether the origin's name is claimed by members serving different registries.
    pub conflict: bool,
}

impl OriginStatus {
    pub fn lag(&self) -> Lag {
        lag(self.state.cursor, self.announced, self.state.complete)
    }
}

/// What this data centre exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportStatus {
    /// The local registry was read in full: peers are served.
    pub ready: bool,
    pub revision: Revision,
    pub instances: u64,
    pub services: u64,
}

/// Whether a dependency answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// Checked (or last used) at, Unix milliseconds.
    pub at_ms: u64,
    /// Why it did not answer; `None` when it did.
    pub error: Option<String>,
}

/// What the engine of this member knows (a standby answers with `running` set to why not,
/// and no export or origins).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineStatus {
    /// `None` while the engine runs; else why it does not (starting, standby, stopping).
    pub idle: Option<String>,
    /// Since when this node runs, Unix milliseconds.
    pub started_ms: u64,
    /// The local registry's addresses.
    pub registry_addresses: Vec<String>,
    /// The local registry, asked now; `None` when this member has no registry handle.
    pub registry: Option<Probe>,
    /// The mapping store's kind (`redb`, `etcd`, `memory`); empty when not open here.
    pub store_kind: String,
    /// The store's last commit; `None` before the first (or not open).
    pub store: Option<Probe>,
    pub export: Option<ExportStatus>,
    pub origins: Vec<OriginStatus>,
}

/// State of one mapping entry against the local registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum EntryState {
    /// The mapping's copy is in the local registry.
    Present,
    /// The mapping's copy is not in the local registry (being registered again, or gone).
    Missing,
    /// An older generation of an origin instance's mapping (a crash mid-replacement),
    /// removed in the next reconcile.
    ExtraGeneration,
    /// A copy of the origin in the local registry with no mapping (an orphan, removed
    /// through the removal guard).
    Unmapped,
}

impl EntryState {
    pub fn as_str(self) -> &'static str {
        match self {
            EntryState::Present => "present",
            EntryState::Missing => "missing",
            EntryState::ExtraGeneration => "extra_generation",
            EntryState::Unmapped => "unmapped",
        }
    }
}

/// One entry of `syncer mappings`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappingEntry {
    pub origin: String,
    pub tenant: Tenant,
    /// Empty for [`EntryState::Unmapped`].
    pub origin_service_id: String,
    pub origin_instance_id: String,
    pub copy_service_id: String,
    pub copy_instance_id: String,
    pub generation: u32,
    pub updated_ms: u64,
    pub state: EntryState,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(epoch: u64, seq: u64) -> Option<Revision> {
        Some(Revision { epoch, seq })
    }

    #[test]
    fn lag_counts_changes_within_an_epoch_and_waits_for_a_snapshot_across() {
        assert_eq!(lag(at(5, 3), at(5, 10), true), Lag::Changes(7));
        assert_eq!(lag(at(5, 10), at(5, 10), true), Lag::Changes(0));
        assert_eq!(
            lag(at(5, 12), at(5, 10), true),
            Lag::Changes(0),
            "push first"
        );
        assert_eq!(lag(at(5, 3), None, true), Lag::Changes(0));
        assert_eq!(lag(at(5, 3), at(6, 1), true), Lag::SnapshotPending);
        assert_eq!(lag(at(6, 1), at(5, 9), true), Lag::Changes(0));
        assert_eq!(lag(None, at(5, 1), false), Lag::SnapshotPending);
        assert_eq!(lag(at(5, 1), at(5, 1), false), Lag::SnapshotPending);
    }
}

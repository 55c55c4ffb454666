//! The mapping store: which copy in this data centre mirrors which origin instance. An
//! embedded store in `--data-dir` serves a single node; etcd (`--etcd-endpoints`) serves
//! cluster mode. Keys and values are described in docs/DESIGN.md.
//!
//! - [`MappingStore`]: the trait the sync engine talks to: `load` everything once, then
//!   `commit` batches of atomic [`Group`]s.
//! - [`memory`]: the in-memory twin, which can be made unavailable for engine tests.
//! - [`mod@redb`]: the embedded store, one file `<data-dir>/mappings.redb`.
//! - [`etcd`]: the etcd store for cluster mode, with an optional leader fence.
//! - [`etcd_conn`]: the one etcd client of a node, shared and rebuilt when its TLS files change.
//! - [`etcd_tls`]: the etcd client's TLS (CA, client certificate), files checked at start.
//! - [`writer`]: group commit: many concurrent writers, few durable commits.
//! - [`contract`]: the suite every store must pass.

pub mod contract;
pub mod etcd;
pub mod etcd_conn;
pub mod etcd_tls;
pub mod memory;
pub mod redb;
pub mod writer;

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub use self::etcd::{EtcdStore, EtcdTimeouts, Fence};
pub use self::etcd_conn::EtcdConnection;
pub use self::etcd_tls::{EtcdTls, EtcdTlsError};
pub use self::memory::MemoryStore;
pub use self::redb::RedbStore;
pub use self::writer::{StoreHandle, StoreMetrics, spawn_writer};

/// The most operations one [`Group`] may hold. Larger groups are rejected with
/// [`StoreError::Invalid`]: a group must fit into one etcd transaction (etcd's default
/// `--max-txn-ops` is 128) with room to pack several groups together.
pub const MAX_GROUP_OPS: usize = 64;

/// One mirrored instance: the origin instance in a remote data centre and the copy syncer
/// registered for it in the local registry. Keyed by `(origin, instance_id)`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mapping {
    /// Cluster name of the data centre the instance comes from.
    pub origin: String,
    /// Tenant domain of the instance.
    pub domain: String,
    /// Tenant project of the instance.
    pub project: String,
    /// Service id of the origin instance in its own registry.
    pub origin_service_id: String,
    /// Instance id of the origin instance in its own registry.
    pub origin_instance_id: String,
    /// Service id of the local copy.
    pub service_id: String,
    /// Instance id of the local copy; unique in the local registry, part of the key.
    pub instance_id: String,
    /// Opaque hash of the body registered for the copy, chosen by the sync engine.
    pub fingerprint: String,
    /// How often the copy was replaced (re-registered under a new id).
    pub generation: u32,
    /// When the mapping was last written, in milliseconds since the Unix epoch.
    pub updated_ms: u64,
}

/// How far the import from one origin data centre got.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// The origin's feed epoch; a new epoch invalidates `seq`.
    pub epoch: u64,
    /// The last sequence number applied within `epoch`.
    pub seq: u64,
    /// Whether a full snapshot from the origin was applied.
    pub complete: bool,
    /// When the cursor was last written, in milliseconds since the Unix epoch.
    pub updated_ms: u64,
}

/// One change to the store. Putting what is already stored and deleting what is missing both
/// succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Insert or replace the mapping under `(origin, instance_id)`.
    PutMapping(Mapping),
    /// Remove the mapping under `(origin, instance_id)`.
    DeleteMapping { origin: String, instance_id: String },
    /// Insert or replace the cursor of `origin`.
    PutCursor { origin: String, cursor: Cursor },
    /// Remove the cursor of `origin`.
    DeleteCursor { origin: String },
    /// Insert or replace a free-form setting of the engine.
    PutMeta { key: String, value: String },
    /// Remove a setting.
    DeleteMeta { key: String },
}

/// Operations applied atomically: all or none (for example make-before-break: put the new
/// copy's mapping and delete the old one). Ops apply in order, so a later op on the same key
/// wins. At most [`MAX_GROUP_OPS`] ops.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Group {
    /// The operations, in order.
    pub ops: Vec<Op>,
}

impl Group {
    /// A group of `ops`.
    pub fn new(ops: Vec<Op>) -> Group {
        Group { ops }
    }

    /// Number of operations.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether the group has no operation.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

impl From<Op> for Group {
    fn from(op: Op) -> Group {
        Group { ops: vec![op] }
    }
}

impl From<Vec<Op>> for Group {
    fn from(ops: Vec<Op>) -> Group {
        Group { ops }
    }
}

/// Groups committed together; a store may split a batch between groups into several
/// transactions.
pub type Batch = Vec<Group>;

/// Everything in a store, as [`MappingStore::load`] returns it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stored {
    /// Every mapping, sorted by `(origin, instance_id)`.
    pub mappings: Vec<Mapping>,
    /// The cursor of each origin.
    pub cursors: BTreeMap<String, Cursor>,
    /// The engine's settings.
    pub meta: BTreeMap<String, String>,
}

/// Why a store operation failed, sorted by what the caller should do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The store could not be reached or did not answer in time (etcd down, a timeout, no
    /// leader). Nothing or part of a batch was written; retry later.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A fence compare failed: this node no longer holds the leader key and must stop
    /// writing. Nothing of the failed transaction was written.
    #[error("fenced: {0}")]
    Fenced(String),
    /// A stored key or value does not decode.
    #[error("corrupt store entry {key}: {reason}")]
    Corrupt {
        /// The key, as the store names it (the full etcd key, or `table/key` for redb).
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The request itself is invalid (a group too large, an empty name). Retrying the same
    /// request fails again.
    #[error("invalid store request: {0}")]
    Invalid(String),
    /// The local database file failed (disk error, file already open elsewhere).
    #[error("store i/o error: {0}")]
    Io(String),
}

impl StoreError {
    /// Whether retrying the same call later can succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }

    /// A short label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            StoreError::Unavailable(_) => "unavailable",
            StoreError::Fenced(_) => "fenced",
            StoreError::Corrupt { .. } => "corrupt",
            StoreError::Invalid(_) => "invalid",
            StoreError::Io(_) => "io",
        }
    }
}

/// Where the mapping table lives.
///
/// The engine loads everything once at start and then only writes; a store keeps no cache of
/// its own. Every method is safe to call concurrently, but writes are meant to go through one
/// [`writer`] task, which batches them.
#[async_trait]
pub trait MappingStore: Send + Sync + 'static {
    /// A short name of the implementation (`memory`, `redb`, `etcd`).
    fn kind(&self) -> &'static str;

    /// Reads the whole store, at one point in time.
    ///
    /// # Errors
    /// `Unavailable` when the store cannot be read now; `Corrupt` naming the first entry
    /// that does not decode; `Io` for a failed local file.
    async fn load(&self) -> Result<Stored, StoreError>;

    /// Applies `batch`. Each group is atomic; the whole batch is validated before anything
    /// is written, but it may be written in several transactions (never splitting a group),
    /// so after an `Unavailable` or `Fenced` error a prefix of the groups may be stored.
    /// Committing the same batch again is harmless. Returns once the batch is durable.
    ///
    /// # Errors
    /// `Invalid` for a group of more than [`MAX_GROUP_OPS`] ops or an empty or malformed
    /// name (nothing is written); `Unavailable`, `Fenced` or `Io` as for [`Self::load`].
    async fn commit(&self, batch: &[Group]) -> Result<(), StoreError>;
}

/// Checks one group against the rules every store shares: at most [`MAX_GROUP_OPS`] ops,
/// and names that are not empty and hold no NUL character.
///
/// # Errors
/// `Invalid`, naming the offending op.
pub fn validate_group(group: &Group) -> Result<(), StoreError> {
    if group.ops.len() > MAX_GROUP_OPS {
        return Err(StoreError::Invalid(format!(
            "a group holds {} ops, more than the {MAX_GROUP_OPS} allowed",
            group.ops.len()
        )));
    }
    for op in &group.ops {
        match op {
            Op::PutMapping(m) => {
                check_name("mapping origin", &m.origin)?;
                check_name("mapping instance id", &m.instance_id)?;
            }
            Op::DeleteMapping {
                origin,
                instance_id,
            } => {
                check_name("mapping origin", origin)?;
                check_name("mapping instance id", instance_id)?;
            }
            Op::PutCursor { origin, .. } | Op::DeleteCursor { origin } => {
                check_name("cursor origin", origin)?;
            }
            Op::PutMeta { key, .. } | Op::DeleteMeta { key } => check_name("meta key", key)?,
        }
    }
    Ok(())
}

/// [`validate_group`] for every group of a batch.
///
/// # Errors
/// The first group's error.
pub fn validate_batch(batch: &[Group]) -> Result<(), StoreError> {
    batch.iter().try_for_each(validate_group)
}

/// Names become parts of keys: an empty one would collide with the table's own prefix, and
/// NUL separates the two halves of a redb mapping key.
fn check_name(what: &str, name: &str) -> Result<(), StoreError> {
    if name.is_empty() {
        return Err(StoreError::Invalid(format!("{what} is empty")));
    }
    if name.contains('\0') {
        return Err(StoreError::Invalid(format!(
            "{what} {name:?} contains a NUL character"
        )));
    }
    Ok(())
}

/// Applies `ops` in order to in-memory tables: the one reference semantics, shared by the
/// memory store and the tests of the others.
pub(crate) fn apply_ops<'a>(
    ops: impl IntoIterator<Item = &'a Op>,
    mappings: &mut BTreeMap<(String, String), Mapping>,
    cursors: &mut BTreeMap<String, Cursor>,
    meta: &mut BTreeMap<String, String>,
) {
    for op in ops {
        match op {
            Op::PutMapping(m) => {
                mappings.insert((m.origin.clone(), m.instance_id.clone()), m.clone());
            }
            Op::DeleteMapping {
                origin,
                instance_id,
            } => {
                mappings.remove(&(origin.clone(), instance_id.clone()));
            }
            Op::PutCursor { origin, cursor } => {
                cursors.insert(origin.clone(), *cursor);
            }
            Op::DeleteCursor { origin } => {
                cursors.remove(origin);
            }
            Op::PutMeta { key, value } => {
                meta.insert(key.clone(), value.clone());
            }
            Op::DeleteMeta { key } => {
                meta.remove(key);
            }
        }
    }
}

/// Decodes a stored mapping value found under `key`, which names `origin` and `instance_id`;
/// a value that does not parse or belongs to another key is `Corrupt`, naming `key`.
pub(crate) fn decode_mapping(
    key: &str,
    origin: &str,
    instance_id: &str,
    value: &[u8],
) -> Result<Mapping, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        key: key.to_owned(),
        reason,
    };
    let mapping: Mapping = serde_json::from_slice(value)
        .map_err(|e| corrupt(format!("value is not a mapping: {e}")))?;
    if mapping.origin != origin || mapping.instance_id != instance_id {
        return Err(corrupt(format!(
            "value belongs to {}/{}",
            mapping.origin, mapping.instance_id
        )));
    }
    Ok(mapping)
}

/// Decodes a stored cursor value found under `key`.
pub(crate) fn decode_cursor(key: &str, value: &[u8]) -> Result<Cursor, StoreError> {
    serde_json::from_slice(value).map_err(|e| StoreError::Corrupt {
        key: key.to_owned(),
        reason: format!("value is not a cursor: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(origin: &str, instance_id: &str) -> Op {
        Op::PutMapping(Mapping {
            origin: origin.into(),
            instance_id: instance_id.into(),
            ..Mapping::default()
        })
    }

    #[test]
    fn groups_up_to_the_limit_are_valid() {
        let ops = (0..MAX_GROUP_OPS).map(|i| put("dc2", &format!("i{i}")));
        assert_eq!(validate_group(&Group::new(ops.collect())), Ok(()));
        let ops = (0..=MAX_GROUP_OPS).map(|i| put("dc2", &format!("i{i}")));
        let err = validate_group(&Group::new(ops.collect())).unwrap_err();
        assert!(matches!(err, StoreError::Invalid(_)), "{err:?}");
        assert!(!err.is_retryable());
    }

    #[test]
    fn empty_and_nul_names_are_invalid() {
        for op in [
            put("", "i1"),
            put("dc2", ""),
            put("dc\0", "i1"),
            Op::DeleteCursor { origin: "".into() },
            Op::PutMeta {
                key: "".into(),
                value: "v".into(),
            },
        ] {
            let err = validate_group(&op.clone().into()).unwrap_err();
            assert_eq!(err.kind(), "invalid", "{op:?}");
        }
        assert_eq!(validate_group(&put("dc/2", "a%b").into()), Ok(()));
    }

    #[test]
    fn only_unavailable_is_retryable() {
        assert!(StoreError::Unavailable("x".into()).is_retryable());
        assert!(!StoreError::Fenced("x".into()).is_retryable());
        assert!(!StoreError::Io("x".into()).is_retryable());
        let corrupt = StoreError::Corrupt {
            key: "/syncer/v2/dc1/mappings/dc2/i1".into(),
            reason: "not JSON".into(),
        };
        assert!(
            corrupt
                .to_string()
                .contains("/syncer/v2/dc1/mappings/dc2/i1")
        );
    }

    #[test]
    fn mapping_json_round_trips() {
        let m = Mapping {
            origin: "dc2".into(),
            domain: "default".into(),
            project: "default".into(),
            origin_service_id: "s1".into(),
            origin_instance_id: "o1".into(),
            service_id: "s2".into(),
            instance_id: "i2".into(),
            fingerprint: "abc".into(),
            generation: 3,
            updated_ms: 1_700_000_000_000,
        };
        let text = serde_json::to_string(&m).unwrap();
        assert_eq!(serde_json::from_str::<Mapping>(&text).unwrap(), m);
    }
}

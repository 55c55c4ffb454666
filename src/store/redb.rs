//! The embedded mapping store for a single node: one redb file, `<data-dir>/mappings.redb`.
//!
//! Three tables with byte keys and JSON values: `mappings` (key `<origin>\0<instance_id>`,
//! value a [`Mapping`](super::Mapping)), `cursors` (key the origin, value a [`Cursor`](super::Cursor)) and `meta` (key and
//! value verbatim text). Keys and values are stored as bytes rather than `&str` so that a
//! damaged file yields [`StoreError::Corrupt`] instead of a panic inside redb's decoding.
//!
//! Every `commit` is one write transaction with immediate durability: a batch of 10 000
//! mappings costs one fsync. redb blocks, so every call runs on tokio's blocking pool.
//!
//! After an I/O error during a write (a full disk, a file system turned read-only) redb
//! refuses every later transaction until the database is closed and opened again. A failed
//! commit therefore looks whether that is the case and, if so, closes and reopens the file
//! (redb repairs it on open), so the store works again as soon as the disk does; until
//! then every call fails with the I/O error and is tried again by its caller. Found by the
//! chaos suite's full-disk fault: the store stayed dead until the process restarted.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use ::redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use async_trait::async_trait;
use tracing::{info, warn};

use super::{
    Group, MappingStore, Op, StoreError, Stored, decode_cursor, decode_mapping, validate_batch,
};

/// The file inside the data directory.
pub const FILE_NAME: &str = "mappings.redb";

const MAPPINGS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("mappings");
const CURSORS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("cursors");
const META: TableDefinition<&[u8], &[u8]> = TableDefinition::new("meta");
/// Bytes of pages redb keeps in memory (see `open_blocking`).
const CACHE_BYTES: usize = 4 << 20;

/// A mapping store in a redb file. Cheap to clone; clones share the open database.
#[derive(Clone)]
pub struct RedbStore {
    /// The open database (redb serialises write transactions itself); `None` while it is
    /// closed after an I/O error and could not be opened again yet.
    db: Arc<Mutex<Option<Arc<Database>>>>,
    /// Where the file is, for messages.
    path: PathBuf,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore")
            .field("path", &self.path)
            .finish()
    }
}

impl RedbStore {
    /// Opens `<data_dir>/mappings.redb`, creating the file and its tables if needed.
    ///
    /// # Errors
    /// `Io` when the file cannot be created or opened (also when another process has it
    /// open); `Corrupt` when redb finds the file damaged.
    pub async fn open(data_dir: &Path) -> Result<RedbStore, StoreError> {
        let path = data_dir.join(FILE_NAME);
        let file = path.clone();
        let db = run_blocking(move || open_blocking(&file)).await?;
        Ok(RedbStore {
            db: Arc::new(Mutex::new(Some(Arc::new(db)))),
            path,
        })
    }

    /// The open database, opened again first if an I/O error closed it.
    async fn handle(&self) -> Result<Arc<Database>, StoreError> {
        let slot = self.db.clone();
        let path = self.path.clone();
        run_blocking(move || {
            let mut db = slot.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(db) = db.as_ref() {
                return Ok(db.clone());
            }
            let reopened = Arc::new(open_blocking(&path)?);
            info!(path = %path.display(), "mapping store open again");
            *db = Some(reopened.clone());
            Ok(reopened)
        })
        .await
    }

    /// After a failed write: when redb refuses every transaction since an I/O error, closes
    /// the database so that the next call opens it again.
    async fn recover(&self, failed: Arc<Database>) {
        let slot = self.db.clone();
        let path = self.path.clone();
        let _ = run_blocking(move || {
            let poisoned = matches!(
                failed.begin_write().map_err(::redb::Error::from),
                Err(::redb::Error::PreviousIo)
            );
            if !poisoned {
                return Ok(());
            }
            let mut db = slot.lock().unwrap_or_else(PoisonError::into_inner);
            if db.as_ref().is_some_and(|current| Arc::ptr_eq(current, &failed)) {
                warn!(path = %path.display(), "the mapping store met an I/O error (disk full or read-only?); closing it, to open it again on the next write");
                *db = None;
            }
            drop(failed);
            Ok(())
        })
        .await;
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[async_trait]
impl MappingStore for RedbStore {
    fn kind(&self) -> &'static str {
        "redb"
    }

    async fn load(&self) -> Result<Stored, StoreError> {
        let db = self.handle().await?;
        run_blocking(move || load_blocking(&db)).await
    }

    async fn commit(&self, batch: &[Group]) -> Result<(), StoreError> {
        validate_batch(batch)?;
        if batch.iter().all(Group::is_empty) {
            return Ok(());
        }
        let db = self.handle().await?;
        let batch = batch.to_vec();
        let used = db.clone();
        let result = run_blocking(move || commit_blocking(&db, &batch)).await;
        if result.is_err() {
            self.recover(used).await;
        }
        result
    }
}

/// Runs `f` on the blocking pool; a panic there becomes an `Io` error.
async fn run_blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Io(format!("redb task failed: {e}")))?
}

fn open_blocking(path: &Path) -> Result<Database, StoreError> {
    // redb caches up to 1 GiB by default. The mapping table is read in full once, at start,
    // and then only written: a small cache keeps the daemon's memory flat while the kernel's
    // page cache serves the rest.
    let db = Database::builder()
        .set_cache_size(CACHE_BYTES)
        .create(path)
        .map_err(|e| match redb_error(e) {
            StoreError::Io(reason) => {
                StoreError::Io(format!("cannot open {}: {reason}", path.display()))
            }
            other => other,
        })?;
    // Create the tables once, so that reads never meet a missing table.
    let mut txn = db.begin_write().map_err(redb_error)?;
    txn.set_durability(Durability::Immediate)
        .map_err(|e| StoreError::Io(e.to_string()))?;
    for table in [MAPPINGS, CURSORS, META] {
        txn.open_table(table).map_err(redb_error)?;
    }
    txn.commit().map_err(redb_error)?;
    Ok(db)
}

fn load_blocking(db: &Database) -> Result<Stored, StoreError> {
    let txn = db.begin_read().map_err(redb_error)?;
    let mut stored = Stored::default();

    let table = txn.open_table(MAPPINGS).map_err(redb_error)?;
    for entry in table.iter().map_err(redb_error)? {
        let (key, value) = entry.map_err(redb_error)?;
        let (key, value) = (key.value(), value.value());
        let name = format!("mappings/{}", key.escape_ascii());
        let (origin, instance_id) =
            split_mapping_key(key).map_err(|reason| StoreError::Corrupt {
                key: name.clone(),
                reason,
            })?;
        stored
            .mappings
            .push(decode_mapping(&name, &origin, &instance_id, value)?);
    }

    let table = txn.open_table(CURSORS).map_err(redb_error)?;
    for entry in table.iter().map_err(redb_error)? {
        let (key, value) = entry.map_err(redb_error)?;
        let (key, value) = (key.value(), value.value());
        let name = format!("cursors/{}", key.escape_ascii());
        let origin = text(key).map_err(|reason| StoreError::Corrupt {
            key: name.clone(),
            reason,
        })?;
        stored.cursors.insert(origin, decode_cursor(&name, value)?);
    }

    let table = txn.open_table(META).map_err(redb_error)?;
    for entry in table.iter().map_err(redb_error)? {
        let (key, value) = entry.map_err(redb_error)?;
        let (key, value) = (key.value(), value.value());
        let corrupt = |reason: String| StoreError::Corrupt {
            key: format!("meta/{}", key.escape_ascii()),
            reason,
        };
        let name = text(key).map_err(corrupt)?;
        let value = text(value).map_err(corrupt)?;
        stored.meta.insert(name, value);
    }
    Ok(stored)
}

fn commit_blocking(db: &Database, batch: &[Group]) -> Result<(), StoreError> {
    let mut txn = db.begin_write().map_err(redb_error)?;
    txn.set_durability(Durability::Immediate)
        .map_err(|e| StoreError::Io(e.to_string()))?;
    {
        let mut mappings = txn.open_table(MAPPINGS).map_err(redb_error)?;
        let mut cursors = txn.open_table(CURSORS).map_err(redb_error)?;
        let mut meta = txn.open_table(META).map_err(redb_error)?;
        for op in batch.iter().flat_map(|g| &g.ops) {
            match op {
                Op::PutMapping(m) => {
                    let value = to_json(m)?;
                    mappings
                        .insert(
                            mapping_key(&m.origin, &m.instance_id).as_slice(),
                            value.as_slice(),
                        )
                        .map_err(redb_error)?;
                }
                Op::DeleteMapping {
                    origin,
                    instance_id,
                } => {
                    mappings
                        .remove(mapping_key(origin, instance_id).as_slice())
                        .map_err(redb_error)?;
                }
                Op::PutCursor { origin, cursor } => {
                    let value = to_json(cursor)?;
                    cursors
                        .insert(origin.as_bytes(), value.as_slice())
                        .map_err(redb_error)?;
                }
                Op::DeleteCursor { origin } => {
                    cursors.remove(origin.as_bytes()).map_err(redb_error)?;
                }
                Op::PutMeta { key, value } => {
                    meta.insert(key.as_bytes(), value.as_bytes())
                        .map_err(redb_error)?;
                }
                Op::DeleteMeta { key } => {
                    meta.remove(key.as_bytes()).map_err(redb_error)?;
                }
            }
        }
    }
    // An error before this point drops the transaction, which aborts it: the batch is
    // written whole or not at all.
    txn.commit().map_err(redb_error)
}

/// `<origin>\0<instance_id>`: NUL sorts before every other byte, so keys sort like the
/// `(origin, instance_id)` pairs. Validation keeps NUL out of both names.
fn mapping_key(origin: &str, instance_id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(origin.len() + 1 + instance_id.len());
    key.extend_from_slice(origin.as_bytes());
    key.push(0);
    key.extend_from_slice(instance_id.as_bytes());
    key
}

fn split_mapping_key(key: &[u8]) -> Result<(String, String), String> {
    let Some(at) = key.iter().position(|b| *b == 0) else {
        return Err("key has no NUL separator".into());
    };
    Ok((text(&key[..at])?, text(&key[at + 1..])?))
}

fn text(bytes: &[u8]) -> Result<String, String> {
    String::from_utf8(bytes.to_vec()).map_err(|e| format!("not UTF-8: {e}"))
}

fn to_json(value: &impl serde::Serialize) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|e| StoreError::Invalid(format!("cannot encode: {e}")))
}

/// Sorts redb's errors into ours.
fn redb_error(e: impl Into<::redb::Error>) -> StoreError {
    match e.into() {
        ::redb::Error::Corrupted(reason) => StoreError::Corrupt {
            key: FILE_NAME.into(),
            reason,
        },
        ::redb::Error::DatabaseAlreadyOpen => {
            StoreError::Io("the database is already open in another process".into())
        }
        ::redb::Error::ValueTooLarge(size) => {
            StoreError::Invalid(format!("a value of {size} bytes is too large"))
        }
        other => StoreError::Io(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Cursor, Mapping};

    #[tokio::test]
    async fn redb_store_passes_the_contract() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(dir.path()).await.unwrap();
        assert_eq!(store.path(), dir.path().join("mappings.redb"));
        super::super::contract::store_contract(&store).await;
    }

    #[tokio::test]
    async fn data_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let m = Mapping {
            origin: "dc2".into(),
            instance_id: "i1".into(),
            ..Mapping::default()
        };
        let batch = [Group::new(vec![
            Op::PutMapping(m.clone()),
            Op::PutCursor {
                origin: "dc2".into(),
                cursor: Cursor {
                    epoch: 1,
                    seq: 2,
                    complete: true,
                    updated_ms: 3,
                },
            },
            Op::PutMeta {
                key: "k".into(),
                value: "v".into(),
            },
        ])];
        {
            let store = RedbStore::open(dir.path()).await.unwrap();
            store.commit(&batch).await.unwrap();
        }
        let store = RedbStore::open(dir.path()).await.unwrap();
        let stored = store.load().await.unwrap();
        assert_eq!(stored.mappings, vec![m]);
        assert_eq!(stored.cursors["dc2"].seq, 2);
        assert_eq!(stored.meta["k"], "v");
    }

    #[tokio::test]
    async fn a_second_open_of_the_same_file_fails() {
        let dir = tempfile::tempdir().unwrap();
        let _first = RedbStore::open(dir.path()).await.unwrap();
        let err = RedbStore::open(dir.path()).await.unwrap_err();
        assert!(matches!(err, StoreError::Io(_)), "{err:?}");
    }

    #[tokio::test]
    async fn undecodable_entries_are_corrupt_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(dir.path()).await.unwrap();
        let db = store.handle().await.unwrap();
        let write_raw = |table: TableDefinition<&[u8], &[u8]>, key: &[u8], value: &[u8]| {
            let txn = db.begin_write().unwrap();
            txn.open_table(table).unwrap().insert(key, value).unwrap();
            txn.commit().unwrap();
        };
        let clear = |table: TableDefinition<&[u8], &[u8]>, key: &[u8]| {
            let txn = db.begin_write().unwrap();
            txn.open_table(table).unwrap().remove(key).unwrap();
            txn.commit().unwrap();
        };

        write_raw(MAPPINGS, b"dc2\0i1", b"not json");
        match store.load().await {
            Err(StoreError::Corrupt { key, .. }) => assert_eq!(key, "mappings/dc2\\x00i1"),
            other => panic!("expected Corrupt, got {other:?}"),
        }
        // A value that decodes but belongs to another key.
        let other = serde_json::to_vec(&Mapping {
            origin: "dc3".into(),
            instance_id: "i1".into(),
            ..Mapping::default()
        })
        .unwrap();
        write_raw(MAPPINGS, b"dc2\0i1", &other);
        assert_eq!(store.load().await.unwrap_err().kind(), "corrupt");
        clear(MAPPINGS, b"dc2\0i1");
        write_raw(MAPPINGS, b"no-separator", &other);
        assert_eq!(store.load().await.unwrap_err().kind(), "corrupt");
        clear(MAPPINGS, b"no-separator");

        write_raw(CURSORS, b"dc2", b"{\"epoch\":\"x\"}");
        match store.load().await {
            Err(StoreError::Corrupt { key, .. }) => assert_eq!(key, "cursors/dc2"),
            other => panic!("expected Corrupt, got {other:?}"),
        }
        clear(CURSORS, b"dc2");

        write_raw(META, b"k", &[0xff, 0xfe]);
        match store.load().await {
            Err(StoreError::Corrupt { key, .. }) => assert_eq!(key, "meta/k"),
            other => panic!("expected Corrupt, got {other:?}"),
        }
        clear(META, b"k");
        assert_eq!(store.load().await.unwrap(), Stored::default());
    }
}

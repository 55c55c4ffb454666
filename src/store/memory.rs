//! The in-memory twin of the mapping store, for tests of the sync engine. It keeps the same
//! rules as the real stores (validation, atomic groups, idempotent ops), counts its commits,
//! and can be switched to fail every call with `Unavailable`.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use async_trait::async_trait;

use super::{Cursor, Group, Mapping, MappingStore, StoreError, Stored, apply_ops, validate_batch};

/// The tables, behind one lock.
#[derive(Debug, Default)]
struct Tables {
    mappings: BTreeMap<(String, String), Mapping>,
    cursors: BTreeMap<String, Cursor>,
    meta: BTreeMap<String, String>,
}

/// A mapping store in memory. Nothing survives the value.
#[derive(Debug, Default)]
pub struct MemoryStore {
    /// The stored data; the lock is held only to copy in or out, never across an await.
    tables: Mutex<Tables>,
    /// When set, `load` and `commit` fail with `Unavailable` and change nothing.
    unavailable: AtomicBool,
    /// Successful `commit` calls.
    commits: AtomicU64,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// Makes every later call fail with `Unavailable` (`true`) or work again (`false`).
    pub fn set_unavailable(&self, unavailable: bool) {
        self.unavailable.store(unavailable, Ordering::SeqCst);
    }

    /// Successful `commit` calls so far.
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::SeqCst)
    }

    fn check_available(&self) -> Result<(), StoreError> {
        if self.unavailable.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable(
                "memory store switched off by the test".into(),
            ));
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tables> {
        // Nothing done under the lock panics half-way through a change, so the tables behind
        // a poisoned lock are still consistent.
        self.tables.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl MappingStore for MemoryStore {
    fn kind(&self) -> &'static str {
        "memory"
    }

    async fn load(&self) -> Result<Stored, StoreError> {
        self.check_available()?;
        let tables = self.lock();
        Ok(Stored {
            mappings: tables.mappings.values().cloned().collect(),
            cursors: tables.cursors.clone(),
            meta: tables.meta.clone(),
        })
    }

    async fn commit(&self, batch: &[Group]) -> Result<(), StoreError> {
        self.check_available()?;
        validate_batch(batch)?;
        {
            let mut tables = self.lock();
            let Tables {
                mappings,
                cursors,
                meta,
            } = &mut *tables;
            // Validation passed, so applying cannot fail half-way: the batch is atomic here.
            apply_ops(batch.iter().flat_map(|g| &g.ops), mappings, cursors, meta);
        }
        self.commits.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Op;

    #[tokio::test]
    async fn memory_store_passes_the_contract() {
        let store = MemoryStore::new();
        super::super::contract::store_contract(&store).await;
    }

    #[tokio::test]
    async fn unavailable_switch_fails_calls_and_changes_nothing() {
        let store = MemoryStore::new();
        store.set_unavailable(true);
        let group = Group::from(Op::PutMeta {
            key: "k".into(),
            value: "v".into(),
        });
        let err = store
            .commit(std::slice::from_ref(&group))
            .await
            .unwrap_err();
        assert!(err.is_retryable(), "{err:?}");
        assert!(store.load().await.unwrap_err().is_retryable());
        assert_eq!(store.commits(), 0);

        store.set_unavailable(false);
        assert_eq!(store.load().await.unwrap(), Stored::default());
        store.commit(&[group]).await.unwrap();
        assert_eq!(store.commits(), 1);
        assert_eq!(store.load().await.unwrap().meta["k"], "v");
    }
}

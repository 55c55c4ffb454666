//! The in-memory twin of the mapping store, for tests of the sync engine. It keeps the same
//! rules as the real stores (validation, atomic groups, idempotent ops), counts its commits,
//! and can be switched to fail every call with `Unavailable`.
//!
//! Fencing mirrors [`super::EtcdStore::set_fence`] for two engines that share one store, as
//! two cluster members share etcd: the shared tables hold the current leader term (etcd's
//! leader key and its lease), each handle may carry a fence (the term it believes it leads
//! in), and a commit through a handle whose fence is not the current term fails with
//! [`StoreError::Fenced`] and writes nothing. Handles made with [`MemoryStore::handle`] or
//! [`MemoryStore::fenced`] share the tables; a handle without a fence is never fenced, as an
//! `EtcdStore` without a fence (single mode). Loads are not fenced (neither are etcd's).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::{Cursor, Group, Mapping, MappingStore, StoreError, Stored, apply_ops, validate_batch};

/// The tables, behind one lock.
#[derive(Debug, Default)]
struct Tables {
    mappings: BTreeMap<(String, String), Mapping>,
    cursors: BTreeMap<String, Cursor>,
    meta: BTreeMap<String, String>,
    /// The term of the current leader, which fenced commits must carry (`None`: no leader).
    leader_term: Option<u64>,
}

/// What every handle of one store shares.
#[derive(Debug, Default)]
struct Shared {
    /// The stored data; the lock is held only to copy in or out, never across an await.
    tables: Mutex<Tables>,
    /// When set, `load` and `commit` fail with `Unavailable` and change nothing.
    unavailable: AtomicBool,
    /// Successful `commit` calls, through any handle.
    commits: AtomicU64,
    /// Commits refused as fenced, through any handle.
    fenced: AtomicU64,
}

/// A mapping store in memory. Nothing survives the last handle.
#[derive(Debug, Default)]
pub struct MemoryStore {
    shared: Arc<Shared>,
    /// The leader term this handle writes in (`None`: unfenced).
    fence: Mutex<Option<u64>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// Another unfenced handle on the same tables.
    pub fn handle(&self) -> MemoryStore {
        MemoryStore {
            shared: self.shared.clone(),
            fence: Mutex::new(None),
        }
    }

    /// Another handle on the same tables, fenced by leader term `term`: its commits succeed
    /// only while `term` is the current one ([`MemoryStore::set_leader_term`]).
    pub fn fenced(&self, term: u64) -> MemoryStore {
        MemoryStore {
            shared: self.shared.clone(),
            fence: Mutex::new(Some(term)),
        }
    }

    /// Sets or clears this handle's fence for every later commit, as
    /// [`super::EtcdStore::set_fence`].
    pub fn set_fence(&self, term: Option<u64>) {
        *self.fence.lock().unwrap_or_else(|p| p.into_inner()) = term;
    }

    /// This handle's fence.
    pub fn fence(&self) -> Option<u64> {
        *self.fence.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes `term` the current leader term of the store (`None`: no leader, every fenced
    /// commit fails), as a new leader taking the leader key in etcd.
    pub fn set_leader_term(&self, term: Option<u64>) {
        self.lock().leader_term = term;
    }

    /// The current leader term.
    pub fn leader_term(&self) -> Option<u64> {
        self.lock().leader_term
    }

    /// Makes every later call fail with `Unavailable` (`true`) or work again (`false`), for
    /// every handle.
    pub fn set_unavailable(&self, unavailable: bool) {
        self.shared.unavailable.store(unavailable, Ordering::SeqCst);
    }

    /// Successful `commit` calls so far, through any handle.
    pub fn commits(&self) -> u64 {
        self.shared.commits.load(Ordering::SeqCst)
    }

    /// Commits refused as fenced so far, through any handle.
    pub fn fenced_commits(&self) -> u64 {
        self.shared.fenced.load(Ordering::SeqCst)
    }

    fn check_available(&self) -> Result<(), StoreError> {
        if self.shared.unavailable.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable(
                "memory store switched off by the test".into(),
            ));
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tables> {
        // Nothing done under the lock panics half-way through a change, so the tables behind
        // a poisoned lock are still consistent.
        self.shared.tables.lock().unwrap_or_else(|p| p.into_inner())
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
        let fence = self.fence();
        {
            let mut tables = self.lock();
            let Tables {
                mappings,
                cursors,
                meta,
                leader_term,
            } = &mut *tables;
            // The compare and the writes happen under one lock, as one etcd transaction.
            if let Some(term) = fence
                && *leader_term != Some(term)
            {
                self.shared.fenced.fetch_add(1, Ordering::SeqCst);
                return Err(StoreError::Fenced(format!(
                    "leader term {term}, current {leader_term:?}"
                )));
            }
            // Validation passed, so applying cannot fail half-way: the batch is atomic here.
            apply_ops(batch.iter().flat_map(|g| &g.ops), mappings, cursors, meta);
        }
        self.shared.commits.fetch_add(1, Ordering::SeqCst);
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

    fn meta(key: &str) -> Group {
        Group::from(Op::PutMeta {
            key: key.into(),
            value: "v".into(),
        })
    }

    #[tokio::test]
    async fn a_fenced_store_passes_the_contract_while_its_term_is_current() {
        let store = MemoryStore::new();
        store.set_leader_term(Some(4));
        super::super::contract::store_contract(&store.fenced(4)).await;
    }

    #[tokio::test]
    async fn a_handle_whose_term_is_no_longer_current_is_fenced_and_writes_nothing() {
        let store = MemoryStore::new();
        store.set_leader_term(Some(1));
        let a = store.fenced(1);
        a.commit(&[meta("a1")]).await.unwrap();

        // B takes over with a fresh term; A's late write is refused, B's lands.
        store.set_leader_term(Some(2));
        let b = store.fenced(2);
        let err = a.commit(&[meta("a2")]).await.unwrap_err();
        assert!(matches!(err, StoreError::Fenced(_)), "{err:?}");
        assert!(!err.is_retryable());
        b.commit(&[meta("b1")]).await.unwrap();

        let stored = store.load().await.unwrap();
        assert_eq!(
            stored.meta.keys().map(String::as_str).collect::<Vec<_>>(),
            ["a1", "b1"]
        );
        assert_eq!(a.load().await.unwrap(), stored, "loads are not fenced");
        assert_eq!((store.commits(), store.fenced_commits()), (2, 1));

        // No leader: every fenced handle is refused; an unfenced one is not.
        store.set_leader_term(None);
        assert!(matches!(
            b.commit(&[meta("b2")]).await,
            Err(StoreError::Fenced(_))
        ));
        store.handle().commit(&[meta("free")]).await.unwrap();
        // A handle's fence can be moved, as EtcdStore::set_fence.
        store.set_leader_term(Some(3));
        a.set_fence(Some(3));
        assert_eq!(a.fence(), Some(3));
        a.commit(&[meta("a3")]).await.unwrap();
        assert_eq!(store.load().await.unwrap().meta.len(), 4);
    }
}

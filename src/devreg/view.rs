//! The read-after-write lag ([`DevRegistryConfig::read_lag`](super::DevRegistryConfig)).
//!
//! Real SC serves find, list, get and the dump from a cache that an etcd watch keeps up to
//! date, so a read right after a write (on the same node, more so on another node) may not
//! see it yet. With a lag, [`snapshot_loop`] copies the data every `lag / 20` (at least every
//! 5 ms) and reads use the newest copy at least `lag` old: a write becomes visible to reads
//! between `lag` and `lag + tick` after it. Writes and store-level checks (heartbeat,
//! unregister, updates) keep using the live data, as SC's do.
//!
//! Each tick copies the whole store when it changed, which is fine for tests and demos, not
//! for a registry with 100 000 instances.

use std::collections::VecDeque;
use std::ops::Deref;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::{Instant, sleep};

use super::state::{Registry, Store};

/// Shortest interval between two copies.
const MIN_TICK: Duration = Duration::from_millis(5);

/// What identifies a change of the data reads can see (revision, counts of services,
/// instances and deferred deletions): heartbeats change none of them and need no copy.
type Fingerprint = (i64, usize, usize, usize);

fn fingerprint(store: &Store) -> Fingerprint {
    let mut services = 0;
    let mut instances = 0;
    let mut deferred = 0;
    for t in store.tenants.values() {
        services += t.services.len();
        instances += t.instances.len();
        deferred += t.instances.values().filter(|e| !e.is_live()).count();
    }
    (store.revision, services, instances, deferred)
}

/// Copies of the store, oldest first, each with the moment it was taken.
#[derive(Debug, Default)]
pub struct History {
    copies: Mutex<VecDeque<(Instant, Fingerprint, Arc<Store>)>>,
}

impl History {
    fn lock(&self) -> MutexGuard<'_, VecDeque<(Instant, Fingerprint, Arc<Store>)>> {
        self.copies.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The newest copy taken at least `lag` ago (the oldest one if none is that old yet).
    fn lagged(&self, lag: Duration) -> Option<Arc<Store>> {
        let copies = self.lock();
        let now = Instant::now();
        copies
            .iter()
            .rev()
            .find(|(at, _, _)| now.saturating_duration_since(*at) >= lag)
            .or_else(|| copies.front())
            .map(|(_, _, store)| store.clone())
    }

    /// Records the current data (unless unchanged) and drops copies no read can pick anymore.
    fn record(&self, store: &Store, lag: Duration) {
        let now = Instant::now();
        let print = fingerprint(store);
        let mut copies = self.lock();
        if copies.back().is_none_or(|(_, last, _)| *last != print) {
            copies.push_back((now, print, Arc::new(store.read_copy())));
        }
        // Keep the newest copy that is at least `lag` old, and everything newer.
        while copies.len() > 1
            && copies
                .get(1)
                .is_some_and(|(at, _, _)| now.saturating_duration_since(*at) >= lag)
        {
            copies.pop_front();
        }
    }
}

/// The data a read sees: the live store (locked) or a lagged copy.
pub enum ReadView<'a> {
    Live(MutexGuard<'a, Store>),
    Lagged(Arc<Store>),
}

impl Deref for ReadView<'_> {
    type Target = Store;

    fn deref(&self) -> &Store {
        match self {
            ReadView::Live(guard) => guard,
            ReadView::Lagged(store) => store,
        }
    }
}

impl Registry {
    /// The data find, list, get and the dump read: live, or `read_lag` behind.
    pub fn read_view(&self) -> ReadView<'_> {
        let lag = self.config.read_lag;
        if !lag.is_zero()
            && let Some(copy) = self.history.lagged(lag)
        {
            return ReadView::Lagged(copy);
        }
        ReadView::Live(self.lock())
    }
}

/// Copies the store every tick while the registry runs (only with a read lag).
pub async fn snapshot_loop(reg: Arc<Registry>) {
    let lag = reg.config.read_lag;
    let tick = (lag / 20).max(MIN_TICK);
    loop {
        {
            let store = reg.lock();
            reg.history.record(&store, lag);
        }
        tokio::select! {
            () = reg.shutdown.cancelled() => break,
            () = sleep(tick) => {}
        }
    }
}

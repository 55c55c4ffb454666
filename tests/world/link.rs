//! The peer transfer of the world: the one place that knows how engines reach each other.
//!
//! Engines find each other's rpc addresses through gossip and call `pull` and `push` on the
//! peer at that address. In the world, those calls go through the engine's in-memory link,
//! which routes them by address to the [`SyncHandle`] of the engine registered there, and
//! which can cut a pair of data centres apart or drop pushes.
//!
//! TODO(link): the in-memory twin of the peer transfer (`sync::link::MemoryLink`) is being
//! added to the engine. Until it lands, [`Link`] only records what the scenarios ask for,
//! and the engines, started without a link, try gRPC at addresses nobody serves: no data
//! moves between data centres and the scenarios fail at their first deadline. Wiring it in
//! is this file (hold a `MemoryLink`, forward the five methods below) plus the `link` field
//! of `EngineDeps` in `harness::World::start_engine`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use syncer::sync::SyncHandle;

/// What the link was asked to do, kept so that the scenarios' intent is visible in one
/// place until the engine's link replaces it.
#[derive(Default)]
struct LinkState {
    /// The engine serving at each rpc address.
    engines: BTreeMap<SocketAddr, SyncHandle>,
    /// Cut pairs, smaller address first.
    cut: BTreeSet<(SocketAddr, SocketAddr)>,
    /// Addresses whose incoming pushes are dropped.
    drop_pushes_to: BTreeSet<SocketAddr>,
}

/// The world's peer transfer. Clones share one link.
#[derive(Clone, Default)]
pub struct Link {
    state: Arc<Mutex<LinkState>>,
}

fn ordered(a: SocketAddr, b: SocketAddr) -> (SocketAddr, SocketAddr) {
    if a <= b { (a, b) } else { (b, a) }
}

impl Link {
    fn with<R>(&self, f: impl FnOnce(&mut LinkState) -> R) -> R {
        f(&mut self.state.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Makes the engine behind `handle` answer calls to `addr`.
    pub fn attach(&self, addr: SocketAddr, handle: &SyncHandle) {
        self.with(|s| s.engines.insert(addr, handle.clone()));
    }

    /// Calls to `addr` fail from now on, as to a process that is gone.
    pub fn detach(&self, addr: SocketAddr) {
        self.with(|s| s.engines.remove(&addr));
    }

    /// Calls between `a` and `b` fail, both ways.
    pub fn partition(&self, a: SocketAddr, b: SocketAddr) {
        self.with(|s| s.cut.insert(ordered(a, b)));
    }

    /// Calls between `a` and `b` go through again.
    pub fn heal(&self, a: SocketAddr, b: SocketAddr) {
        self.with(|s| s.cut.remove(&ordered(a, b)));
    }

    /// Pushes to `addr` are dropped (`true`: the caller sees a failed call) or delivered.
    pub fn drop_pushes_to(&self, addr: SocketAddr, drop: bool) {
        self.with(|s| {
            if drop {
                s.drop_pushes_to.insert(addr);
            } else {
                s.drop_pushes_to.remove(&addr);
            }
        });
    }

    /// Whether an engine is attached at `addr`.
    pub fn serves(&self, addr: SocketAddr) -> bool {
        self.with(|s| s.engines.get(&addr).is_some_and(SyncHandle::running))
    }
}

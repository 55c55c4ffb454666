//! The peer transfer of the world: the one place that knows how engines reach each other.
//!
//! Engines find each other's rpc addresses through gossip and call `pull` and `push` on the
//! peer at that address. In the world, those calls go through the engine's in-memory link
//! network, which routes them by address to the [`SyncHandle`] registered there, and can cut
//! two addresses apart or lose the next calls to one.
//!
//! TODO(link): the in-memory twin of the peer transfer (`syncer::sync::link::MemoryNetwork`
//! with `MemoryLink`, branch wt-rpc) is not on main yet. Until it is, [`Link`] only records
//! what the scenarios ask for, with that network's method names and meaning, and the
//! engines, started without a link, try gRPC at addresses nobody serves: no data moves
//! between data centres and the scenarios fail at their first deadline. Wiring it in:
//! 1. here: `Link` holds a `syncer::sync::link::MemoryNetwork` and forwards `attach`
//!    (`register`), `detach` (`unregister`), `partition`, `heal`, `lose_next` and
//!    `failed_calls` (`stats().failed`) to it, and gains
//!    `peer_link(from) -> Arc<dyn PeerLink>` returning `Arc::new(network.link(from))`;
//! 2. `harness::World::start_engine`: `link: self.link.peer_link(member.rpc_addr),` in
//!    `EngineDeps`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use syncer::sync::SyncHandle;

/// What the link was asked to do (see the module doc).
#[derive(Default)]
struct LinkState {
    /// The engine serving at each rpc address.
    engines: BTreeMap<SocketAddr, SyncHandle>,
    /// Cut pairs, smaller address first.
    cut: BTreeSet<(SocketAddr, SocketAddr)>,
    /// Calls to each address still to be lost.
    lose: BTreeMap<SocketAddr, usize>,
}

/// The world's peer transfer. Clones share one link network.
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

    /// Makes the engine behind `handle` answer calls to `addr` (replacing whatever was
    /// there).
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

    /// Loses the next `calls` calls to `to` (they fail as unavailable); 0 stops losing.
    pub fn lose_next(&self, to: SocketAddr, calls: usize) {
        self.with(|s| {
            if calls == 0 {
                s.lose.remove(&to);
            } else {
                s.lose.insert(to, calls);
            }
        });
    }

    /// Calls the network refused so far (cut, lost, or nothing attached there).
    ///
    /// TODO(link): `network.stats().failed`; nothing is called through this stub.
    pub fn failed_calls(&self) -> u64 {
        0
    }
}

//! The peer transfer of the world: the one place that knows how engines reach each other.
//!
//! Engines find each other's rpc addresses through gossip and call `pull` and `push` on the
//! peer at that address. In the world, those calls go through the engine's in-memory link
//! network ([`syncer::sync::link::MemoryNetwork`]), which routes them by address to the
//! [`SyncHandle`] registered there, and can cut two addresses apart, lose the next calls to
//! one, or freeze one (calls accepted, never answered).

use std::net::SocketAddr;
use std::sync::Arc;

use syncer::sync::SyncHandle;
use syncer::sync::link::{MemoryNetwork as LinkNetwork, MemoryStats, PeerLink};

/// The world's peer transfer. Clones share one link network.
#[derive(Clone, Default)]
pub struct Link {
    network: LinkNetwork,
}

impl Link {
    /// The link an engine serving at `from` calls its peers through (partitions of `from`
    /// apply to it).
    pub fn peer_link(&self, from: SocketAddr) -> Arc<dyn PeerLink> {
        Arc::new(self.network.link(from))
    }

    /// Makes the engine behind `handle` answer calls to `addr` (replacing whatever was
    /// there).
    pub fn attach(&self, addr: SocketAddr, handle: &SyncHandle) {
        self.network.register(addr, handle.clone());
    }

    /// Calls to `addr` fail from now on, as to a process that is gone.
    pub fn detach(&self, addr: SocketAddr) {
        self.network.unregister(addr);
    }

    /// Calls between `a` and `b` fail, both ways.
    pub fn partition(&self, a: SocketAddr, b: SocketAddr) {
        self.network.partition(a, b);
    }

    /// Calls between `a` and `b` go through again.
    pub fn heal(&self, a: SocketAddr, b: SocketAddr) {
        self.network.heal(a, b);
    }

    /// Loses the next `calls` calls to `to` (they fail as unavailable); 0 stops losing.
    pub fn lose_next(&self, to: SocketAddr, calls: usize) {
        self.network.lose_next(to, calls);
    }

    /// Calls the network refused so far (cut, lost, or nothing registered there).
    pub fn failed_calls(&self) -> u64 {
        self.stats().failed
    }

    /// Every call the network carried or refused so far (the scale bench counts them).
    pub fn stats(&self) -> MemoryStats {
        self.network.stats()
    }

    /// Calls to and from `addr` are accepted and never answered from now on, as by a process
    /// stopped with SIGSTOP: each ends when its caller's deadline passes.
    pub fn freeze(&self, addr: SocketAddr) {
        self.network.freeze(addr);
    }

    /// Calls to and from `addr` go through again (calls already held stay held).
    pub fn thaw(&self, addr: SocketAddr) {
        self.network.thaw(addr);
    }

    /// Calls to `to` held by a freeze so far.
    pub fn hung_calls_to(&self, to: SocketAddr) -> u64 {
        self.network.hung_to(to)
    }
}

//! How gossip datagrams travel: a real UDP socket, or an in-memory network for protocol tests
//! that can cut links between members.

mod memory;
mod udp;

use std::io;
use std::net::SocketAddr;

pub use memory::{MemoryNetwork, MemorySocket};

/// A datagram socket as the gossip actor uses it.
///
/// `recv_from` must be cancel-safe (the actor selects on it); `try_send_to` never waits: a
/// datagram that cannot leave at once is dropped, as UDP itself would drop it.
#[async_trait::async_trait]
pub trait Socket: Send + Sync + 'static {
    /// Receives one datagram into `buf`; returns its length and sender. A datagram longer than
    /// `buf` is truncated to it, as UDP does.
    async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)>;
    /// Sends one datagram without waiting.
    fn try_send_to(&self, data: &[u8], to: SocketAddr) -> io::Result<()>;
    /// The address this socket is bound to.
    fn local_addr(&self) -> io::Result<SocketAddr>;
}

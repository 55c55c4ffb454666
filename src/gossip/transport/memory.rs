//! An in-memory datagram network for protocol tests: sockets are channels, links can be cut
//! and healed, and it runs under tokio's paused clock (no real I/O).

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use tokio::sync::mpsc;

use super::Socket;

/// Datagrams one socket buffers before further ones are dropped, like a full UDP buffer.
const SOCKET_QUEUE_DATAGRAMS: usize = 1024;
/// The largest datagram the network carries (an Ethernet-sized UDP payload would be 1472;
/// a larger send is refused with an error so that tests catch oversized output).
pub const MEMORY_MTU_BYTES: usize = 1500;

type Datagram = (Bytes, SocketAddr);

#[derive(Default)]
struct NetState {
    sockets: HashMap<SocketAddr, mpsc::Sender<Datagram>>,
    /// Cut links, stored with the smaller address first.
    cut: HashSet<(SocketAddr, SocketAddr)>,
    /// Addresses cut off from everyone.
    isolated: HashSet<SocketAddr>,
    delivered: u64,
}

impl NetState {
    fn link_up(&self, a: SocketAddr, b: SocketAddr) -> bool {
        !self.cut.contains(&ordered(a, b))
            && !self.isolated.contains(&a)
            && !self.isolated.contains(&b)
    }
}

fn ordered(a: SocketAddr, b: SocketAddr) -> (SocketAddr, SocketAddr) {
    if a <= b { (a, b) } else { (b, a) }
}

/// A network of in-memory sockets. Clones share the same network.
#[derive(Clone, Default)]
pub struct MemoryNetwork {
    state: Arc<Mutex<NetState>>,
}

impl MemoryNetwork {
    pub fn new() -> MemoryNetwork {
        MemoryNetwork::default()
    }

    fn with<R>(&self, f: impl FnOnce(&mut NetState) -> R) -> R {
        f(&mut self.state.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Binds a socket at `addr`.
    ///
    /// # Errors
    /// `AddrInUse` when a socket of this network already holds `addr`.
    pub fn bind(&self, addr: SocketAddr) -> io::Result<MemorySocket> {
        let (tx, rx) = mpsc::channel(SOCKET_QUEUE_DATAGRAMS);
        self.with(|state| {
            if state.sockets.contains_key(&addr) {
                return Err(io::Error::new(io::ErrorKind::AddrInUse, addr.to_string()));
            }
            state.sockets.insert(addr, tx);
            Ok(())
        })?;
        Ok(MemorySocket {
            addr,
            rx: tokio::sync::Mutex::new(rx),
            network: self.clone(),
        })
    }

    /// Cuts the link between `a` and `b` (both directions).
    pub fn partition(&self, a: SocketAddr, b: SocketAddr) {
        self.with(|state| state.cut.insert(ordered(a, b)));
    }

    /// Restores the link between `a` and `b`.
    pub fn heal(&self, a: SocketAddr, b: SocketAddr) {
        self.with(|state| state.cut.remove(&ordered(a, b)));
    }

    /// Cuts `addr` off from every other socket.
    pub fn isolate(&self, addr: SocketAddr) {
        self.with(|state| state.isolated.insert(addr));
    }

    /// Restores every cut link.
    pub fn heal_all(&self) {
        self.with(|state| {
            state.cut.clear();
            state.isolated.clear();
        });
    }

    /// Datagrams delivered so far.
    pub fn delivered(&self) -> u64 {
        self.with(|state| state.delivered)
    }
}

/// One socket of a [`MemoryNetwork`]; unbinds itself when dropped.
pub struct MemorySocket {
    addr: SocketAddr,
    rx: tokio::sync::Mutex<mpsc::Receiver<Datagram>>,
    network: MemoryNetwork,
}

impl Drop for MemorySocket {
    fn drop(&mut self) {
        let addr = self.addr;
        self.network.with(|state| state.sockets.remove(&addr));
    }
}

#[async_trait::async_trait]
impl Socket for MemorySocket {
    async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        let mut rx = self.rx.lock().await;
        match rx.recv().await {
            Some((data, from)) => {
                let n = data.len().min(buf.len());
                buf[..n].copy_from_slice(&data[..n]);
                Ok((n, from))
            }
            None => Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "memory socket closed",
            )),
        }
    }

    fn try_send_to(&self, data: &[u8], to: SocketAddr) -> io::Result<()> {
        if data.len() > MEMORY_MTU_BYTES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("datagram of {} bytes exceeds the MTU", data.len()),
            ));
        }
        let from = self.addr;
        self.network.with(|state| {
            if !state.link_up(from, to) {
                return;
            }
            if let Some(tx) = state.sockets.get(&to)
                && tx.try_send((Bytes::copy_from_slice(data), from)).is_ok()
            {
                state.delivered += 1;
            }
        });
        Ok(())
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[tokio::test]
    async fn delivers_and_partitions() {
        let net = MemoryNetwork::new();
        let a = net.bind(addr(1)).unwrap();
        let b = net.bind(addr(2)).unwrap();
        assert!(net.bind(addr(1)).is_err());
        a.try_send_to(b"hi", addr(2)).unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(b.recv_from(&mut buf).await.unwrap(), (2, addr(1)));
        net.partition(addr(2), addr(1));
        a.try_send_to(b"lost", addr(2)).unwrap();
        net.heal(addr(1), addr(2));
        a.try_send_to(b"back", addr(2)).unwrap();
        let (n, _) = b.recv_from(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"back");
        assert!(a.try_send_to(&[0; MEMORY_MTU_BYTES + 1], addr(2)).is_err());
        drop(b);
        a.try_send_to(b"nobody", addr(2)).unwrap();
        assert_eq!(net.delivered(), 2);
    }
}

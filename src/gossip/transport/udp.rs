//! The real transport: one UDP socket, bound by the node before the gossip actor starts.

use std::io;
use std::net::SocketAddr;

use tokio::net::UdpSocket;

use super::Socket;

#[async_trait::async_trait]
impl Socket for UdpSocket {
    async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        UdpSocket::recv_from(self, buf).await
    }

    fn try_send_to(&self, data: &[u8], to: SocketAddr) -> io::Result<()> {
        UdpSocket::try_send_to(self, data, to).map(|_| ())
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        UdpSocket::local_addr(self)
    }
}

//! The one place that builds gRPC client channels: every call to another syncer (transfer,
//! `syncer members`, the join probe) goes through [`endpoint`], so transport settings (HTTP/2
//! keep-alive, TLS) are set once for all of them. A channel built with TLS speaks nothing else:
//! there is no fallback to plain text.

use std::fmt;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tonic::codegen::Service;
use tonic::codegen::http::Uri;
use tonic::transport::{Channel, Endpoint};

use super::proto::peer_client::PeerClient;
use super::tls::ClientTls;
use crate::config::DEFAULT_RPC_PORT;

/// The largest message accepted or sent, both ways (gRPC's default, stated explicitly).
pub const MAX_MESSAGE_BYTES: usize = 4 << 20;
/// An HTTP/2 PING goes out on every connection this often, calls in flight or not.
///
/// Without it, a connection whose peer froze or whose packets are blackholed looks open
/// forever: a call on it waits for its own deadline, and so does every next call. With it,
/// the connection is closed within [`KEEP_ALIVE_INTERVAL`] + [`KEEP_ALIVE_TIMEOUT`] (20 s),
/// calls on it fail at once, and the next call connects again. Every peer is a syncer
/// (tonic's server answers PINGs without a rate limit), so the pings cost a few bytes per
/// peer every 10 s.
pub const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// How long a PING may go unanswered before the connection is closed.
pub const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the calls through a channel may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// One connection attempt.
    pub connect: Duration,
    /// Every call as a whole; `None` leaves it to each call.
    pub call: Option<Duration>,
}

/// Why no endpoint could be made.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("'{addr}' is not an rpc address (expected HOST:PORT): {source}")]
    Address {
        addr: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("'{addr}' is not an rpc address (expected HOST:PORT): {reason}")]
    ServerName { addr: String, reason: String },
}

/// The endpoint of one syncer: tonic's, and the TLS its connections make.
#[derive(Debug, Clone)]
pub struct PeerEndpoint {
    endpoint: Endpoint,
    tls: Option<TlsConnector>,
}

impl PeerEndpoint {
    /// Connects now.
    ///
    /// # Errors
    /// tonic's error when the connection or the TLS handshake fails.
    pub async fn connect(&self) -> Result<Channel, tonic::transport::Error> {
        match &self.tls {
            Some(tls) => self.endpoint.connect_with_connector(tls.clone()).await,
            None => self.endpoint.connect().await,
        }
    }

    /// Connections made from `source` (the caller's own rpc address), so that the receiver
    /// sees which member calls; `None` lets the system choose.
    #[must_use]
    pub fn with_source(mut self, source: Option<IpAddr>) -> PeerEndpoint {
        self.endpoint = self.endpoint.local_address(source);
        if let Some(tls) = &mut self.tls {
            tls.source = source;
        }
        self
    }

    /// A channel that connects on first use (and again after a connection is lost).
    pub fn connect_lazy(&self) -> Channel {
        match &self.tls {
            Some(tls) => self.endpoint.connect_with_connector_lazy(tls.clone()),
            None => self.endpoint.connect_lazy(),
        }
    }
}

/// The endpoint of the syncer at `addr` (`host:port`) with `timeouts`, over TLS when `tls`
/// is given (the server is then verified against `addr`'s host, and every new connection
/// takes the client configuration in force, so that a reload applies to it); connect it
/// with `connect` or `connect_lazy`.
///
/// # Errors
/// [`EndpointError`] when `addr` does not form a URI or a TLS server name.
pub fn endpoint(
    addr: &str,
    timeouts: Timeouts,
    tls: Option<&ClientTls>,
) -> Result<PeerEndpoint, EndpointError> {
    // The scheme stays http: TLS is done by our own connector, never by tonic's.
    let endpoint = Endpoint::from_shared(format!("http://{addr}")).map_err(|source| {
        EndpointError::Address {
            addr: addr.to_owned(),
            source,
        }
    })?;
    let tls = match tls {
        Some(tls) => Some(TlsConnector::new(addr, endpoint.uri(), tls.clone())?),
        None => None,
    };
    let endpoint = endpoint
        .connect_timeout(timeouts.connect)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(KEEP_ALIVE_INTERVAL)
        .keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
        .keep_alive_while_idle(true);
    let endpoint = match timeouts.call {
        Some(call) => endpoint.timeout(call),
        None => endpoint,
    };
    Ok(PeerEndpoint { endpoint, tls })
}

/// Makes the connections of a TLS endpoint: TCP to the address, then the rustls handshake
/// with the client configuration in force and the server name of the address. A handshake
/// that fails fails the connection: there is no fallback to plain text.
#[derive(Clone)]
struct TlsConnector {
    tls: ClientTls,
    server_name: ServerName<'static>,
    /// The local address connections are made from, if chosen.
    source: Option<IpAddr>,
}

impl fmt::Debug for TlsConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConnector")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl TlsConnector {
    fn new(addr: &str, uri: &Uri, tls: ClientTls) -> Result<TlsConnector, EndpointError> {
        let host = uri.host().unwrap_or_default();
        // An IPv6 literal comes bracketed in a URI.
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let server_name =
            ServerName::try_from(host.to_owned()).map_err(|e| EndpointError::ServerName {
                addr: addr.to_owned(),
                reason: e.to_string(),
            })?;
        Ok(TlsConnector {
            tls,
            server_name,
            source: None,
        })
    }
}

type Connecting =
    Pin<Box<dyn Future<Output = Result<TokioIo<TlsStream<TcpStream>>, std::io::Error>> + Send>>;

impl Service<Uri> for TlsConnector {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = std::io::Error;
    type Future = Connecting;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let config = self.tls.config();
        let server_name = self.server_name.clone();
        let source = self.source;
        Box::pin(async move {
            let host = uri.host().unwrap_or_default();
            let host = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let port = uri.port_u16().unwrap_or(DEFAULT_RPC_PORT);
            let tcp = match source {
                Some(source) => connect_from(source, &host, port).await?,
                None => TcpStream::connect((host.as_str(), port)).await?,
            };
            tcp.set_nodelay(true)?;
            let stream = tokio_rustls::TlsConnector::from(config)
                .connect(server_name, tcp)
                .await?;
            Ok(TokioIo::new(stream))
        })
    }
}

/// A TCP connection to `host:port` made from the local address `source`.
async fn connect_from(source: IpAddr, host: &str, port: u16) -> std::io::Result<TcpStream> {
    let target = tokio::net::lookup_host((host, port))
        .await?
        .find(|a| a.is_ipv4() == source.is_ipv4())
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::AddrNotAvailable,
                format!("{host} has no address of the family of {source}"),
            )
        })?;
    let socket = if source.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.bind(std::net::SocketAddr::new(source, 0))?;
    socket.connect(target).await
}

/// A `Peer` client on `channel`, with the message size limits of this protocol.
pub fn peer_client(channel: Channel) -> PeerClient<Channel> {
    PeerClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn timeouts() -> Timeouts {
        Timeouts {
            connect: Duration::from_secs(1),
            call: None,
        }
    }

    fn client_tls() -> ClientTls {
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
        ClientTls::from_config(config)
    }

    /// The TLS server name comes from the address: an IP (v4 or bracketed v6) or a DNS name.
    #[test]
    fn tls_endpoints_take_the_server_name_from_the_address() {
        let tls = client_tls();
        for (addr, name) in [
            ("127.0.0.1:30191", "127.0.0.1"),
            ("[::1]:30191", "::1"),
            ("syncer-1.dc1.example:30191", "syncer-1.dc1.example"),
        ] {
            let endpoint = endpoint(addr, timeouts(), Some(&tls)).expect(addr);
            let connector = endpoint.tls.expect("a TLS connector");
            assert_eq!(connector.server_name.to_str(), name, "{addr}");
        }
        let plain = endpoint("127.0.0.1:30191", timeouts(), None).expect("plain");
        assert!(plain.tls.is_none());
        let err = endpoint("not an address", timeouts(), Some(&tls)).expect_err("bad address");
        assert!(err.to_string().contains("not an address"), "{err}");
    }
}

//! HTTPS for the dev registries (`syncer dev-registry --tls-cert F --tls-key F [--tls-ca F]`),
//! so that the registry client's TLS (`--sc-addr https://...`, `--sc-tls-*`) is tested end to
//! end against a real TLS server.
//!
//! [`TlsListener`] is an [`axum::serve::Listener`]: it accepts TCP connections and hands axum
//! the connections whose TLS handshake succeeded. Handshakes run concurrently, each bounded,
//! so a client that connects and says nothing does not hold up the others; a failed handshake
//! is logged and the connection dropped. With a CA, the server asks every client for a
//! certificate signed by it (a registry that demands client certificates).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::server::TlsStream;
use tracing::debug;

use crate::tls::{self, Identity, TlsError, TlsOptions, pem};

/// Longest TLS handshake accepted.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the dev registry's TLS files cannot be used (the errors of `crate::tls`, naming the
/// file).
pub type DevTlsError = TlsError;

/// The server configuration of a dev registry: its certificate and key, and the CA client
/// certificates must be signed by when one is given; ALPN `h2` and `http/1.1`.
///
/// # Errors
/// A [`DevTlsError`] naming the file that cannot be used.
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<Arc<rustls::ServerConfig>, DevTlsError> {
    let names = &pem::RPC;
    let identity = Identity::load(names, cert, key, None)?;
    let roots = client_ca
        .map(|path| tls::roots(names.ca, path, &pem::read(names.ca, path)?))
        .transpose()?;
    let mut config = tls::server_config(names, &TlsOptions::default(), &identity, roots)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A TCP listener that serves TLS: see the module documentation.
pub struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    handshakes: JoinSet<Option<(TlsStream<TcpStream>, SocketAddr)>>,
}

impl TlsListener {
    /// Serves TLS with `config` on `tcp`.
    pub fn new(tcp: TcpListener, config: Arc<rustls::ServerConfig>) -> TlsListener {
        TlsListener {
            tcp,
            acceptor: TlsAcceptor::from(config),
            handshakes: JoinSet::new(),
        }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            tokio::select! {
                (stream, addr) = axum::serve::Listener::accept(&mut self.tcp) => {
                    let acceptor = self.acceptor.clone();
                    self.handshakes.spawn(async move {
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                            Ok(Ok(tls)) => Some((tls, addr)),
                            Ok(Err(e)) => {
                                debug!(peer = %addr, error = %e, "TLS handshake failed");
                                None
                            }
                            Err(_) => {
                                debug!(peer = %addr, "TLS handshake timed out");
                                None
                            }
                        }
                    });
                }
                Some(done) = self.handshakes.join_next(), if !self.handshakes.is_empty() => {
                    if let Ok(Some(connection)) = done {
                        return connection;
                    }
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

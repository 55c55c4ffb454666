//! The one place that builds gRPC client channels: every call to another syncer (transfer,
//! `syncer members`, the join probe) goes through [`endpoint`], so transport settings (HTTP/2
//! keep-alive, TLS) are set once for all of them. A channel built with TLS speaks nothing else:
//! there is no fallback to plain text.

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use super::proto::peer_client::PeerClient;
use super::tls::ClientTls;

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
    #[error("cannot set up TLS to {addr}: {source}")]
    Tls {
        addr: String,
        #[source]
        source: tonic::transport::Error,
    },
}

/// The endpoint of the syncer at `addr` (`host:port`) with `timeouts`, over TLS when `tls`
/// is given (the server is then verified against `addr`'s host); connect it with `connect`
/// or `connect_lazy`.
///
/// # Errors
/// [`EndpointError`] when `addr` does not form a URI or TLS cannot be set up.
pub fn endpoint(
    addr: &str,
    timeouts: Timeouts,
    tls: Option<&ClientTls>,
) -> Result<Endpoint, EndpointError> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}")).map_err(|source| {
        EndpointError::Address {
            addr: addr.to_owned(),
            source,
        }
    })?;
    if let Some(tls) = tls {
        endpoint = endpoint
            .tls_config(tls.config())
            .map_err(|source| EndpointError::Tls {
                addr: addr.to_owned(),
                source,
            })?;
    }
    let endpoint = endpoint
        .connect_timeout(timeouts.connect)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(KEEP_ALIVE_INTERVAL)
        .keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
        .keep_alive_while_idle(true);
    Ok(match timeouts.call {
        Some(call) => endpoint.timeout(call),
        None => endpoint,
    })
}

/// A `Peer` client on `channel`, with the message size limits of this protocol.
pub fn peer_client(channel: Channel) -> PeerClient<Channel> {
    PeerClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

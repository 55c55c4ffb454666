//! Calls to another syncer's `Peer` service (and from `syncer members`, `syncer keyring`;
//! the operator's other calls are in `ops.rs`).

use std::time::Duration;

use tonic::transport::Channel;

use super::channel::{self, Timeouts};
use super::proto::peer_client::PeerClient;
use super::proto::{InfoRequest, KeyringReply, KeyringRequest, Member, MembersRequest, NodeInfo};
use super::tls::ClientTls;

/// Why a call to a peer failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Endpoint(#[from] channel::EndpointError),
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        source: tonic::transport::Error,
    },
    #[error("{addr} answered with an error: {status}")]
    Call { addr: String, status: tonic::Status },
}

/// Connects to the syncer at `addr` (`host:port`), over TLS when `tls` is given, waiting at
/// most `timeout` for the connection and for every call.
///
/// # Errors
/// [`ClientError::Endpoint`] or [`ClientError::Connect`].
pub async fn connect(
    addr: &str,
    timeout: Duration,
    tls: Option<&ClientTls>,
) -> Result<PeerClient<Channel>, ClientError> {
    let timeouts = Timeouts {
        connect: timeout,
        call: Some(timeout),
    };
    let endpoint = channel::endpoint(addr, timeouts, tls)?;
    let channel = endpoint
        .connect()
        .await
        .map_err(|source| ClientError::Connect {
            addr: addr.to_owned(),
            source,
        })?;
    Ok(channel::peer_client(channel))
}

/// Asks the syncer at `addr` who it is.
///
/// # Errors
/// A [`ClientError`] when it cannot be reached or does not answer as a syncer.
pub async fn node_info(
    addr: &str,
    timeout: Duration,
    tls: Option<&ClientTls>,
) -> Result<NodeInfo, ClientError> {
    let mut client = connect(addr, timeout, tls).await?;
    let reply = client.info(InfoRequest {}).await;
    answer(addr, reply)
}

/// The message of a reply, or the call's error naming `addr`.
pub(crate) fn answer<T>(
    addr: &str,
    reply: Result<tonic::Response<T>, tonic::Status>,
) -> Result<T, ClientError> {
    reply
        .map(tonic::Response::into_inner)
        .map_err(|status| ClientError::Call {
            addr: addr.to_owned(),
            status,
        })
}

/// The gossip pool as the syncer at `addr` sees it.
///
/// # Errors
/// A [`ClientError`] when it cannot be reached or the call fails.
pub async fn members(
    addr: &str,
    timeout: Duration,
    tls: Option<&ClientTls>,
) -> Result<Vec<Member>, ClientError> {
    let mut client = connect(addr, timeout, tls).await?;
    let reply = client.members(MembersRequest {}).await;
    Ok(answer(addr, reply)?.members)
}

/// One keyring step on the syncer at `addr` (and, with `request.fan_out`, on the whole pool
/// through it).
///
/// # Errors
/// A [`ClientError`] when it cannot be reached or refuses the request as a whole (a key that
/// is not a gossip key, an unknown operation); refusals of single members are rows of the
/// reply.
pub async fn keyring(
    addr: &str,
    timeout: Duration,
    tls: Option<&ClientTls>,
    request: KeyringRequest,
) -> Result<KeyringReply, ClientError> {
    let mut client = connect(addr, timeout, tls).await?;
    let reply = client.keyring(request).await;
    answer(addr, reply)
}

/// A short name of a gossip key for terminals and logs: the first 8 bytes of the SHA-1 of its
/// base64 text, in hex. It tells keys apart without revealing them (the key has 256 random
/// bits; the fingerprint cannot be turned back into it).
pub fn fingerprint(key_base64: &str) -> String {
    use sha1::{Digest, Sha1};
    let digest = Sha1::digest(key_base64.trim().as_bytes());
    hex::encode(&digest[..8])
}

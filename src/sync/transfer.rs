//! Calls between syncers that move instance data: `Pull` (a snapshot or the increments after
//! a revision, always closed by a completion marker) and `Push` (increments continuing the
//! receiver's cursor). Everything received is validated by [`crate::rpc::convert`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use super::export::{Digest64, Increment, Revision};
use crate::registry::{Instance, Service};
use crate::rpc::convert::{self, ConvertError};
use crate::rpc::proto::peer_client::PeerClient;
use crate::rpc::proto::{PullRequest, PushReply, pull_chunk};

/// How long one connection attempt to a peer may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// The largest message accepted from a peer (gRPC's default, stated explicitly).
pub const MAX_MESSAGE_BYTES: usize = 4 << 20;

/// Why a transfer failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TransferError {
    #[error("call failed: {0}")]
    Call(#[from] tonic::Status),
    #[error("malformed answer: {0}")]
    Malformed(#[from] ConvertError),
    #[error("incomplete answer: {0}")]
    Incomplete(String),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
}

/// What a pull brought.
#[derive(Debug)]
pub(crate) enum Pulled {
    /// Nothing new: the origin is at this revision.
    UpToDate(Revision),
    /// The changes after the asked revision, up to `to`.
    Increments {
        to: Revision,
        changes: Vec<Increment>,
    },
    /// Everything the origin exports at `revision`, digest checked.
    Snapshot {
        revision: Revision,
        items: Vec<(Arc<Service>, Instance)>,
    },
}

/// Lazily connected, reused gRPC channels, one per peer address.
#[derive(Debug, Default)]
pub(crate) struct Channels {
    channels: Mutex<HashMap<SocketAddr, PeerClient<Channel>>>,
}

impl Channels {
    /// A client for `addr`; the connection is made on first use and kept.
    pub(crate) fn client(&self, addr: SocketAddr) -> PeerClient<Channel> {
        let mut channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        channels
            .entry(addr)
            .or_insert_with(|| {
                let endpoint = Endpoint::from_shared(format!("http://{addr}"))
                    .unwrap_or_else(|_| Endpoint::from_static("http://127.0.0.1:1"))
                    .connect_timeout(CONNECT_TIMEOUT)
                    .tcp_nodelay(true);
                PeerClient::new(endpoint.connect_lazy())
                    .max_decoding_message_size(MAX_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_MESSAGE_BYTES)
            })
            .clone()
    }
}

/// Pulls from `client` the data of `origin` after `since` (`None`: a full snapshot), within
/// `timeout` for the whole stream.
pub(crate) async fn pull(
    mut client: PeerClient<Channel>,
    local_cluster: &str,
    origin: &str,
    since: Option<Revision>,
    timeout: Duration,
) -> Result<Pulled, TransferError> {
    let request = PullRequest {
        cluster_name: local_cluster.to_owned(),
        since_epoch: since.map_or(0, |r| r.epoch),
        since_seq: since.map_or(0, |r| r.seq),
        ..PullRequest::default()
    };
    let work = async {
        let mut stream = client.pull(request).await?.into_inner();
        let mut items = Vec::new();
        let mut changes = Vec::new();
        let mut digest = Digest64::default();
        while let Some(chunk) = stream.message().await? {
            match chunk.body {
                Some(pull_chunk::Body::Snapshot(data)) => {
                    for (service, instance) in convert::chunk_from_wire(data)? {
                        digest.add(&service, &instance);
                        items.push((service, instance));
                    }
                }
                Some(pull_chunk::Body::Increments(batch)) => {
                    changes.extend(convert::increments_from_wire(batch)?);
                }
                Some(pull_chunk::Body::Complete(done)) => {
                    if done.origin != origin {
                        return Err(TransferError::Incomplete(format!(
                            "asked {origin}, answered for {:?}",
                            done.origin
                        )));
                    }
                    let revision = Revision {
                        epoch: done.epoch,
                        seq: done.seq,
                    };
                    return match done.kind.as_str() {
                        "snapshot" => {
                            if done.count != digest.count || done.digest != digest.sum {
                                return Err(TransferError::Incomplete(format!(
                                    "snapshot digest mismatch: {} items received, {} announced",
                                    digest.count, done.count
                                )));
                            }
                            Ok(Pulled::Snapshot { revision, items })
                        }
                        "increments" | "up_to_date" => {
                            if !items.is_empty() {
                                return Err(TransferError::Incomplete(
                                    "snapshot chunks in an increments answer".into(),
                                ));
                            }
                            check_increments(since, revision, &changes)?;
                            if changes.is_empty() {
                                Ok(Pulled::UpToDate(revision))
                            } else {
                                Ok(Pulled::Increments {
                                    to: revision,
                                    changes,
                                })
                            }
                        }
                        other => Err(TransferError::Incomplete(format!(
                            "unknown completion kind {other:?}"
                        ))),
                    };
                }
                None => return Err(TransferError::Incomplete("empty chunk".into())),
            }
        }
        Err(TransferError::Incomplete(
            "the stream ended without its completion marker".into(),
        ))
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| TransferError::Timeout(timeout))?
}

/// Increments must continue `since` exactly and end at `to`.
fn check_increments(
    since: Option<Revision>,
    to: Revision,
    changes: &[Increment],
) -> Result<(), TransferError> {
    let Some(since) = since else {
        return Err(TransferError::Incomplete(
            "increments answered to a snapshot request".into(),
        ));
    };
    if since.epoch != to.epoch {
        return Err(TransferError::Incomplete("increments across epochs".into()));
    }
    let mut expected = since.seq;
    for (seq, _, _) in changes {
        expected += 1;
        if *seq != expected {
            return Err(TransferError::Incomplete(format!(
                "increments skip from {} to {seq}",
                expected - 1
            )));
        }
    }
    if expected != to.seq {
        return Err(TransferError::Incomplete(format!(
            "increments end at {expected}, marker says {}",
            to.seq
        )));
    }
    Ok(())
}

/// The first run of `changes` that fits one message: at most
/// [`convert::MAX_PUSH_CHANGES`] changes and about [`convert::MAX_CHUNK_BYTES`] encoded (at
/// least one change, which alone is bounded by the validation limits).
pub(crate) fn fitting(changes: &[Increment]) -> &[Increment] {
    use prost::Message;
    let mut bytes = 0;
    for (i, (seq, ms, export)) in changes.iter().enumerate() {
        if i == convert::MAX_PUSH_CHANGES {
            return &changes[..i];
        }
        bytes += convert::change_to_wire(*seq, *ms, export).encoded_len();
        if bytes > convert::MAX_CHUNK_BYTES && i > 0 {
            return &changes[..i];
        }
    }
    changes
}

/// Pushes `changes` (continuing `from_seq` of `epoch`) to `client`.
pub(crate) async fn push(
    mut client: PeerClient<Channel>,
    origin: &str,
    epoch: u64,
    from_seq: u64,
    changes: &[Increment],
    timeout: Duration,
) -> Result<PushReply, TransferError> {
    let request = convert::push_to_wire(origin, epoch, from_seq, changes);
    let mut request = tonic::Request::new(request);
    request.set_timeout(timeout);
    tokio::time::timeout(timeout, client.push(request))
        .await
        .map_err(|_| TransferError::Timeout(timeout))?
        .map(tonic::Response::into_inner)
        .map_err(TransferError::Call)
}

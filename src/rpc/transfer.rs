//! The `Pull`, `Push` and `Contracts` calls between syncers, both halves, in wire terms.
//!
//! - Server: [`serve_pull`] and [`serve_push`] turn a request into the engine's model call
//!   ([`SyncHandle::serve_pull`], [`SyncHandle::serve_push`]) and its answer back into
//!   messages: a pull is streamed as chunks closed by one completion marker;
//!   [`serve_contracts`] answers the schema contents of an exported service.
//! - Client: [`GrpcLink`] is the engine's [`PeerLink`] over gRPC: it validates everything
//!   received (`super::convert`), checks that increments continue the asked revision and
//!   that a snapshot matches its announced count and digest, and keeps one lazily connected
//!   channel per peer address.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use futures::{Stream, StreamExt};
use prost::Message;
use tokio::time::Instant;
use tonic::Status;
use tonic::transport::Channel;
use tracing::warn;

use super::channel::{self, Timeouts};
use super::convert;
use super::proto::peer_client::PeerClient;
use super::proto::{
    Change, ChangeBatch, CompletionKind, ContractsReply, ContractsRequest, PullChunk, PullComplete,
    PullRequest, PushReply as WireReply, PushRequest, pull_chunk,
};
use super::status;
use super::tls::ClientTls;
use crate::registry::{Schema, Tenant};
use crate::sync::SyncHandle;
use crate::sync::export::{Digest64, Increment, Revision};
use crate::sync::link::{
    LinkError, PeerLink, PullBody, PullDeadlines, Pulled, PushOutcome, PushReply,
};

/// How long one connection attempt to a peer may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The chunks of a `Pull` answer, made as the stream is read.
pub type PullChunks = Box<dyn Iterator<Item = PullChunk> + Send>;

/// Answers a `Pull`: the increments after the asker's revision when they are still held,
/// else a snapshot in chunks; always closed by a completion marker. The chunks are encoded
/// one at a time as the call's stream asks for them (the engine's snapshot shares the
/// exported bodies, so a large snapshot is never held twice).
///
/// # Errors
/// The engine's refusal as a status (`unavailable` while it starts or stands by).
pub fn serve_pull(sync: &SyncHandle, request: &PullRequest) -> Result<PullChunks, Status> {
    let since = (request.since_epoch != 0).then_some(Revision {
        epoch: request.since_epoch,
        seq: request.since_seq,
    });
    let answer = sync
        .serve_pull(since)
        .map_err(|e| status::from_engine(&e))?;
    let origin = answer.origin;
    let close = move |revision, kind, digest| {
        std::iter::once(PullChunk {
            body: Some(pull_chunk::Body::Complete(complete(
                origin, revision, kind, digest,
            ))),
        })
    };
    Ok(match answer.body {
        PullBody::UpToDate(revision) => Box::new(close(
            revision,
            CompletionKind::UpToDate,
            Digest64::default(),
        )),
        PullBody::Increments { to, changes } => {
            let mut at = 0;
            let chunks = std::iter::from_fn(move || {
                let batch = fitting(changes.get(at..).filter(|rest| !rest.is_empty())?);
                at += batch.len().max(1);
                Some(PullChunk {
                    body: Some(pull_chunk::Body::Increments(ChangeBatch { changes: batch })),
                })
            });
            Box::new(chunks.chain(close(to, CompletionKind::Increments, Digest64::default())))
        }
        PullBody::Snapshot(snapshot) => {
            let chunks =
                convert::SnapshotChunks::new(snapshot.items.into_iter()).map(|data| PullChunk {
                    body: Some(pull_chunk::Body::Snapshot(data)),
                });
            Box::new(chunks.chain(close(
                snapshot.revision,
                CompletionKind::Snapshot,
                snapshot.digest,
            )))
        }
    })
}

/// The completion marker. The deprecated string `kind` is still filled in for syncers that
/// predate the enum (see `PullComplete` in the proto file).
#[allow(deprecated)]
fn complete(
    origin: String,
    revision: Revision,
    kind: CompletionKind,
    digest: Digest64,
) -> PullComplete {
    PullComplete {
        origin,
        epoch: revision.epoch,
        seq: revision.seq,
        kind: kind_text(kind).to_owned(),
        count: digest.count,
        digest: digest.sum,
        completion: kind.into(),
    }
}

/// The text older syncers read in `PullComplete.kind`.
fn kind_text(kind: CompletionKind) -> &'static str {
    match kind {
        CompletionKind::Unspecified => "",
        CompletionKind::Snapshot => "snapshot",
        CompletionKind::Increments => "increments",
        CompletionKind::UpToDate => "up_to_date",
    }
}

/// The completion kind of a received marker: the enum, or for a sender that predates it
/// (enum unset) the deprecated string. `None` when neither names a known kind.
fn received_kind(done: &PullComplete) -> Option<CompletionKind> {
    match CompletionKind::try_from(done.completion) {
        Ok(CompletionKind::Unspecified) => {
            #[allow(deprecated)]
            let text = done.kind.as_str();
            [
                CompletionKind::Snapshot,
                CompletionKind::Increments,
                CompletionKind::UpToDate,
            ]
            .into_iter()
            .find(|k| kind_text(*k) == text)
        }
        Ok(kind) => Some(kind),
        Err(_) => None,
    }
}

/// Applies a `Push` from another data centre.
///
/// # Errors
/// `unavailable` while the engine starts, stands by or stops; `invalid_argument` for a
/// malformed push (counted by reason) or one from this data centre.
/// `judge` may still refuse a well-formed push by its origin (the server checks who sends
/// it).
pub async fn serve_push(
    sync: &SyncHandle,
    request: PushRequest,
    judge: impl AsyncFnOnce(&str) -> Result<(), Status>,
) -> Result<WireReply, Status> {
    // An engine that cannot serve says so before the request is judged.
    sync.serving().map_err(|e| status::from_engine(&e))?;
    let push = convert::push_from_wire(request).map_err(|e| {
        sync.metrics().reject("push", e.reason());
        warn!(error = %e, "malformed push refused");
        status::from_malformed(&e)
    })?;
    judge(&push.origin).await?;
    let reply = sync
        .serve_push(push)
        .await
        .map_err(|e| status::from_engine(&e))?;
    Ok(WireReply {
        applied: reply.applied,
        epoch: reply.epoch,
        seq: reply.seq,
    })
}

/// Answers a peer's `Contracts` request: validated, then read from the local registry
/// through the engine (only for an exported service), as many as fit one reply.
///
/// # Errors
/// `invalid_argument` for a malformed request or a service not exported, `unavailable`
/// when the engine or the registry cannot answer.
pub async fn serve_contracts(
    sync: &SyncHandle,
    request: ContractsRequest,
) -> Result<ContractsReply, Status> {
    sync.serving().map_err(|e| status::from_engine(&e))?;
    let (tenant, service_id, ids) = convert::contracts_request_from_wire(request).map_err(|e| {
        sync.metrics().reject("contracts", e.reason());
        warn!(error = %e, "malformed contracts request refused");
        status::from_malformed(&e)
    })?;
    let schemas = sync
        .serve_contracts(&tenant, &service_id, &ids)
        .await
        .map_err(|e| status::from_engine(&e))?;
    Ok(convert::contracts_reply(&schemas))
}

/// The wire form of the first run of `changes` that fits one message: at most
/// [`convert::MAX_PUSH_CHANGES`] changes and about [`convert::MAX_CHUNK_BYTES`] encoded (at
/// least one change, which alone is bounded by the validation limits). Each change is
/// converted once: what is measured is what is sent.
fn fitting(changes: &[Increment]) -> Vec<Change> {
    let mut wire = Vec::new();
    let mut bytes = 0;
    for (seq, ms, export) in changes.iter().take(convert::MAX_PUSH_CHANGES) {
        let change = convert::change_to_wire(*seq, *ms, export);
        bytes += change.encoded_len();
        if bytes > convert::MAX_CHUNK_BYTES && !wire.is_empty() {
            break;
        }
        wire.push(change);
    }
    wire
}

/// The engine's [`PeerLink`] over gRPC: lazily connected, reused channels, one per peer
/// address; over TLS for every peer when built [`GrpcLink::with_tls`].
#[derive(Debug, Default)]
pub struct GrpcLink {
    clients: Mutex<HashMap<SocketAddr, PeerClient<Channel>>>,
    tls: Option<ClientTls>,
    /// This member's rpc address, which calls are made from when it is a specific one.
    source: Option<IpAddr>,
}

impl GrpcLink {
    /// A plain-text link.
    pub fn new() -> GrpcLink {
        GrpcLink::default()
    }

    /// A link that calls every peer over TLS when `tls` is given (and never in plain text).
    pub fn with_tls(tls: Option<ClientTls>) -> GrpcLink {
        GrpcLink {
            clients: Mutex::default(),
            tls,
            source: None,
        }
    }

    /// Calls peers from `rpc_ip` (this member's rpc address) unless it is a wildcard, so
    /// that a receiver tells which member pushes (`server::impersonated`). A loopback address
    /// is used for loopback peers only.
    #[must_use]
    pub fn from_source(mut self, rpc_ip: IpAddr) -> GrpcLink {
        self.source = (!rpc_ip.is_unspecified()).then_some(rpc_ip);
        self
    }

    /// A client for `addr`; the connection is made on first use and kept.
    fn client(&self, addr: SocketAddr) -> Result<PeerClient<Channel>, LinkError> {
        let mut clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(client) = clients.get(&addr) {
            return Ok(client.clone());
        }
        let timeouts = Timeouts {
            connect: CONNECT_TIMEOUT,
            call: None,
        };
        // A socket address always forms a URI; refused all the same rather than panicking.
        let source = self.source.filter(|ip| {
            ip.is_ipv4() == addr.is_ipv4() && ip.is_loopback() == addr.ip().is_loopback()
        });
        let endpoint = channel::endpoint(&addr.to_string(), timeouts, self.tls.as_ref())
            .map_err(|e| LinkError::Unavailable(e.to_string()))?
            .with_source(source);
        let client = channel::peer_client(endpoint.connect_lazy());
        clients.insert(addr, client.clone());
        Ok(client)
    }
}

#[async_trait]
impl PeerLink for GrpcLink {
    async fn pull(
        &self,
        addr: SocketAddr,
        asker: &str,
        origin: &str,
        since: Option<Revision>,
        deadlines: PullDeadlines,
    ) -> Result<Pulled, LinkError> {
        let client = self.client(addr)?;
        tokio::time::timeout(
            deadlines.whole,
            pull(client, asker, origin, since, deadlines),
        )
        .await
        .map_err(|_| LinkError::Timeout(deadlines.whole))?
    }

    async fn contracts(
        &self,
        addr: SocketAddr,
        tenant: &Tenant,
        service_id: &str,
        ids: &[String],
        timeout: Duration,
    ) -> Result<Vec<Schema>, LinkError> {
        let client = self.client(addr)?;
        tokio::time::timeout(timeout, contracts(client, tenant, service_id, ids, timeout))
            .await
            .map_err(|_| LinkError::Timeout(timeout))?
    }

    async fn push(
        &self,
        addr: SocketAddr,
        origin: &str,
        from: Revision,
        changes: &[Increment],
        timeout: Duration,
    ) -> Result<PushOutcome, LinkError> {
        let mut client = self.client(addr)?;
        let batch = fitting(changes);
        let sent = batch.len();
        let request = convert::push_request(origin, from.epoch, from.seq, batch);
        let mut request = tonic::Request::new(request);
        request.set_timeout(timeout);
        let reply = tokio::time::timeout(timeout, client.push(request))
            .await
            .map_err(|_| LinkError::Timeout(timeout))?
            .map_err(|s| status::to_link_error(&s))?
            .into_inner();
        Ok(PushOutcome {
            reply: PushReply {
                applied: reply.applied,
                epoch: reply.epoch,
                seq: reply.seq,
            },
            sent,
        })
    }
}

/// Asks `client` for schemas `ids` of `service_id` of `tenant` until every one is answered
/// or left out (each reply carries at least one, or names none to come), by `deadline`.
async fn contracts(
    mut client: PeerClient<Channel>,
    tenant: &Tenant,
    service_id: &str,
    ids: &[String],
    timeout: Duration,
) -> Result<Vec<Schema>, LinkError> {
    let mut schemas = Vec::new();
    let mut wanted = ids.to_vec();
    while !wanted.is_empty() {
        let mut request =
            tonic::Request::new(convert::contracts_request(tenant, service_id, &wanted));
        request.set_timeout(timeout);
        let reply = client
            .contracts(request)
            .await
            .map_err(|s| status::to_link_error(&s))?
            .into_inner();
        let (got, more) = convert::contracts_from_wire(reply, &wanted)
            .map_err(|e| LinkError::Malformed(Box::new(e)))?;
        schemas.extend(got);
        wanted = more;
    }
    Ok(schemas)
}

/// Pulls from `client` the data of `origin` after `since` (`None`: a full snapshot), within
/// the first-message and idle deadlines of `deadlines` (the caller bounds the whole).
async fn pull(
    mut client: PeerClient<Channel>,
    asker: &str,
    origin: &str,
    since: Option<Revision>,
    deadlines: PullDeadlines,
) -> Result<Pulled, LinkError> {
    let request = PullRequest {
        cluster_name: asker.to_owned(),
        since_epoch: since.map_or(0, |r| r.epoch),
        since_seq: since.map_or(0, |r| r.seq),
        ..PullRequest::default()
    };
    let mut request = tonic::Request::new(request);
    // The server may stop working on an answer nobody waits for any more.
    request.set_timeout(deadlines.whole);
    // The response headers come once the server has built its answer: they count against
    // the first-message deadline, as does connecting.
    let first = Instant::now() + deadlines.first;
    let stream = tokio::time::timeout_at(first, client.pull(request))
        .await
        .map_err(|_| LinkError::Timeout(deadlines.first))?
        .map_err(|s| status::to_link_error(&s))?
        .into_inner();
    read_answer(stream, origin, since, deadlines, first).await
}

/// Reads a pull answer from `stream` until its completion marker: the first message by
/// `first`, each next one within `deadlines.idle` of the one before.
pub(super) async fn read_answer(
    mut stream: impl Stream<Item = Result<PullChunk, Status>> + Unpin,
    origin: &str,
    since: Option<Revision>,
    deadlines: PullDeadlines,
    first: Instant,
) -> Result<Pulled, LinkError> {
    let call = |s: Status| status::to_link_error(&s);
    let malformed = |e: convert::ConvertError| LinkError::Malformed(Box::new(e));
    let mut items = Vec::new();
    let mut changes = Vec::new();
    let mut digest = Digest64::default();
    let (mut by, mut waited) = (first, deadlines.first);
    loop {
        let next = tokio::time::timeout_at(by, stream.next())
            .await
            .map_err(|_| LinkError::Timeout(waited))?;
        let Some(chunk) = next.transpose().map_err(call)? else {
            break;
        };
        (by, waited) = (Instant::now() + deadlines.idle, deadlines.idle);
        match chunk.body {
            Some(pull_chunk::Body::Snapshot(data)) => {
                for (service, instance) in convert::chunk_from_wire(data).map_err(malformed)? {
                    digest.add(&service, &instance);
                    items.push((service, instance));
                }
            }
            Some(pull_chunk::Body::Increments(batch)) => {
                changes.extend(convert::increments_from_wire(batch).map_err(malformed)?);
            }
            Some(pull_chunk::Body::Complete(done)) => {
                if done.origin != origin {
                    return Err(LinkError::Incomplete(format!(
                        "asked {origin}, answered for {:?}",
                        done.origin
                    )));
                }
                let revision = Revision {
                    epoch: done.epoch,
                    seq: done.seq,
                };
                return match received_kind(&done) {
                    Some(CompletionKind::Snapshot) => {
                        if done.count != digest.count || done.digest != digest.sum {
                            return Err(LinkError::Incomplete(format!(
                                "snapshot digest mismatch: {} items received, {} announced",
                                digest.count, done.count
                            )));
                        }
                        Ok(Pulled::Snapshot { revision, items })
                    }
                    Some(CompletionKind::Increments | CompletionKind::UpToDate) => {
                        if !items.is_empty() {
                            return Err(LinkError::Incomplete(
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
                    Some(CompletionKind::Unspecified) | None => {
                        #[allow(deprecated)]
                        let text = &done.kind;
                        Err(LinkError::Incomplete(format!(
                            "unknown completion kind {} ({text:?})",
                            done.completion
                        )))
                    }
                };
            }
            None => return Err(LinkError::Incomplete("empty chunk".into())),
        }
    }
    Err(LinkError::Incomplete(
        "the stream ended without its completion marker".into(),
    ))
}

/// Increments must continue `since` exactly and end at `to`.
fn check_increments(
    since: Option<Revision>,
    to: Revision,
    changes: &[Increment],
) -> Result<(), LinkError> {
    let Some(since) = since else {
        return Err(LinkError::Incomplete(
            "increments answered to a snapshot request".into(),
        ));
    };
    if since.epoch != to.epoch {
        return Err(LinkError::Incomplete("increments across epochs".into()));
    }
    let mut expected = since.seq;
    for (seq, _, _) in changes {
        expected += 1;
        if *seq != expected {
            return Err(LinkError::Incomplete(format!(
                "increments skip from {} to {seq}",
                expected - 1
            )));
        }
    }
    if expected != to.seq {
        return Err(LinkError::Incomplete(format!(
            "increments end at {expected}, marker says {}",
            to.seq
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(deprecated)]
    fn marker(completion: i32, kind: &str) -> PullComplete {
        PullComplete {
            completion,
            kind: kind.into(),
            ..PullComplete::default()
        }
    }

    #[test]
    fn the_completion_kind_is_the_enum_or_else_the_old_text() {
        for kind in [
            CompletionKind::Snapshot,
            CompletionKind::Increments,
            CompletionKind::UpToDate,
        ] {
            let written = complete("dc1".into(), Revision::default(), kind, Digest64::default());
            assert_eq!(received_kind(&written), Some(kind), "what we send");
            assert_eq!(
                received_kind(&marker(0, kind_text(kind))),
                Some(kind),
                "an older sender"
            );
        }
        // The enum wins over the text.
        assert_eq!(
            received_kind(&marker(CompletionKind::Increments.into(), "snapshot")),
            Some(CompletionKind::Increments)
        );
        assert_eq!(received_kind(&marker(0, "")), None);
        assert_eq!(received_kind(&marker(0, "everything")), None);
        assert_eq!(
            received_kind(&marker(99, "snapshot")),
            None,
            "unknown enum value"
        );
    }

    fn deadlines(first_ms: u64, idle_ms: u64) -> PullDeadlines {
        PullDeadlines {
            first: Duration::from_millis(first_ms),
            idle: Duration::from_millis(idle_ms),
            whole: Duration::from_secs(60),
        }
    }

    /// A peer that accepts TCP connections and never says a word (a frozen process): the
    /// pull fails at its first-message deadline, not after the whole stream's.
    #[tokio::test]
    async fn a_pull_from_a_silent_peer_ends_at_the_first_message_deadline() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a local port");
        let addr = listener.local_addr().expect("a bound address");
        let silent = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        let link = GrpcLink::new();
        // The whole answer is allowed longer than the test waits.
        let deadlines = PullDeadlines {
            whole: Duration::from_secs(3),
            ..deadlines(300, 300)
        };
        let started = std::time::Instant::now();
        let pulled = link.pull(addr, "dc2", "dc1", None, deadlines).await;
        let took = started.elapsed();
        assert!(
            matches!(pulled, Err(LinkError::Timeout(d)) if d == deadlines.first),
            "{pulled:?}"
        );
        assert!(took < Duration::from_secs(2), "took {took:?}");
        silent.abort();
    }

    fn chunk(seq: u64) -> Result<PullChunk, Status> {
        let export = crate::sync::export::Export::Removed(crate::registry::InstanceRef {
            tenant: crate::registry::Tenant::default_tenant(),
            service_id: "s".into(),
            instance_id: format!("i-{seq}"),
        });
        Ok(PullChunk {
            body: Some(pull_chunk::Body::Increments(ChangeBatch {
                changes: vec![convert::change_to_wire(seq, 0, &export)],
            })),
        })
    }

    /// An answer that starts and then stalls ends at the idle deadline after its last
    /// message; one that never starts at the first-message deadline.
    #[tokio::test(start_paused = true)]
    async fn a_stalled_answer_ends_at_the_idle_deadline() {
        let since = Some(Revision { epoch: 1, seq: 0 });
        let deadlines = deadlines(5_000, 2_000);
        let started = Instant::now();
        let stalled = futures::stream::iter([chunk(1), chunk(2)]).chain(futures::stream::pending());
        let first = started + deadlines.first;
        let read = read_answer(stalled, "dc1", since, deadlines, first).await;
        assert!(
            matches!(read, Err(LinkError::Timeout(d)) if d == deadlines.idle),
            "{read:?}"
        );
        assert_eq!(started.elapsed(), deadlines.idle);

        let started = Instant::now();
        let silent = futures::stream::pending::<Result<PullChunk, Status>>();
        let first = started + deadlines.first;
        let read = read_answer(silent, "dc1", since, deadlines, first).await;
        assert!(
            matches!(read, Err(LinkError::Timeout(d)) if d == deadlines.first),
            "{read:?}"
        );
        assert_eq!(started.elapsed(), deadlines.first);
    }

    #[test]
    fn increments_must_continue_the_asked_revision() {
        let at = |seq| Revision { epoch: 5, seq };
        let change = |seq| {
            (
                seq,
                0,
                crate::sync::export::Export::Removed(crate::registry::InstanceRef {
                    tenant: crate::registry::Tenant::default_tenant(),
                    service_id: "s".into(),
                    instance_id: "i".into(),
                }),
            )
        };
        assert!(check_increments(Some(at(2)), at(4), &[change(3), change(4)]).is_ok());
        assert!(
            check_increments(Some(at(4)), at(4), &[]).is_ok(),
            "up to date"
        );
        for (since, to, changes) in [
            (None, at(3), vec![change(3)]),
            (Some(at(2)), Revision { epoch: 6, seq: 3 }, vec![change(3)]),
            (Some(at(2)), at(4), vec![change(4)]),
            (Some(at(2)), at(5), vec![change(3), change(4)]),
        ] {
            assert!(matches!(
                check_increments(since, to, &changes),
                Err(LinkError::Incomplete(_))
            ));
        }
    }
}

//! Serves the `Peer` gRPC service on the rpc listener.

use std::collections::BTreeSet;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tracing::{debug, warn};

use super::channel::{KEEP_ALIVE_INTERVAL, KEEP_ALIVE_TIMEOUT, MAX_MESSAGE_BYTES};
use super::client::{self, fingerprint};
use super::proto::peer_server::{Peer, PeerServer};
use super::proto::{
    ContractsReply, ContractsRequest, InfoRequest, InventoryChunk, InventoryRequest,
    KeyringMemberResult, KeyringReply, KeyringRequest, MappingsChunk, MappingsRequest, Member,
    MembersReply, MembersRequest, NodeInfo, PullChunk, PullRequest, PushReply, PushRequest,
    StatusReply, StatusRequest,
};
use super::tls::{ClientTls, RpcTls};
use super::transfer;
use crate::gossip::{GossipHandle, GossipKey, KeyringOp, MemberInfo, MemberStatus};
use crate::sync::SyncHandle;
use crate::tls::TlsMetrics;

/// The `Peer` service of one node.
#[derive(Debug, Clone)]
pub struct PeerService {
    /// What `Info` answers; fixed for the life of the node.
    info: NodeInfo,
    gossip: GossipHandle,
    sync: SyncHandle,
    /// How this node calls the other members when it fans a keyring step out; `Some` when its
    /// own listener runs TLS (a TLS pool is TLS throughout).
    peer_tls: Option<ClientTls>,
}

/// How long the fan-out of a keyring step waits for each member.
pub const KEYRING_MEMBER_TIMEOUT: Duration = Duration::from_secs(5);

impl PeerService {
    pub fn new(info: NodeInfo, gossip: GossipHandle, sync: SyncHandle) -> PeerService {
        PeerService {
            info,
            gossip,
            sync,
            peer_tls: None,
        }
    }

    /// Calls the other members over TLS with this client configuration (the node's own
    /// certificate) when fanning out a keyring step, and marks the listener as TLS so that
    /// keyring changes do not warn about plain text.
    #[must_use]
    pub fn with_peer_tls(mut self, tls: Option<ClientTls>) -> PeerService {
        self.peer_tls = tls;
        self
    }

    /// Applies `op` on this member and reports it as one result row.
    async fn keyring_here(&self, op: KeyringOp) -> KeyringMemberResult {
        let mut row = KeyringMemberResult {
            name: self.info.name.clone(),
            rpc_addr: self.info.rpc_addr.clone(),
            ..KeyringMemberResult::default()
        };
        match self.gossip.keyring(op).await {
            Ok(list) => {
                row.ok = true;
                row.primary = fingerprint(&list.primary);
                row.installed = list.installed.iter().map(|k| fingerprint(k)).collect();
            }
            Err(e) => row.error = e.to_string(),
        }
        row
    }

    /// Forwards the step to one other member (without fan-out) and reports its answer.
    async fn keyring_there(
        &self,
        member: MemberInfo,
        request: KeyringRequest,
    ) -> KeyringMemberResult {
        let name = member.id.name.clone();
        let rpc_addr = member.id.meta.rpc_addr.to_string();
        let failed = |error: String| KeyringMemberResult {
            name: name.clone(),
            rpc_addr: rpc_addr.clone(),
            error,
            ..KeyringMemberResult::default()
        };
        if member.status == MemberStatus::Down {
            return failed("the member is down".to_owned());
        }
        let answer = client::keyring(
            &rpc_addr,
            KEYRING_MEMBER_TIMEOUT,
            self.peer_tls.as_ref(),
            request,
        )
        .await;
        match answer {
            Ok(reply) => match reply.members.into_iter().next() {
                Some(row) => KeyringMemberResult {
                    name: name.clone(),
                    rpc_addr: rpc_addr.clone(),
                    ..row
                },
                None => failed("it answered without a result".to_owned()),
            },
            Err(e) => failed(e.to_string()),
        }
    }
}

/// The keyring step a request names.
fn keyring_op(request: &KeyringRequest) -> Result<KeyringOp, Status> {
    let key = || {
        GossipKey::from_base64(&request.key)
            .map_err(|e| Status::invalid_argument(format!("the key is not a gossip key: {e}")))
    };
    match request.op.as_str() {
        "list" => Ok(KeyringOp::List),
        "install" => Ok(KeyringOp::Install(key()?)),
        "use" => Ok(KeyringOp::Use(key()?)),
        "remove" => Ok(KeyringOp::Remove(key()?)),
        other => Err(Status::invalid_argument(format!(
            "unknown keyring operation {other:?}; expected list, install, use or remove"
        ))),
    }
}

/// The data centre a push from `from` really comes from when it claims another: `from` is
/// the address (gossip or rpc) of members of other data centres and of no member of
/// `origin`. `None` when it is an address of `origin`'s members, or of no known member (NAT,
/// a host with several addresses): such a push is judged on its contents as before. Members
/// call out from their rpc address (`GrpcLink::from_source`), so their pushes come from an
/// address of their own data centre.
fn impersonated(origin: &str, from: IpAddr, members: &[MemberInfo]) -> Option<String> {
    let from = from.to_canonical();
    let mut others = BTreeSet::new();
    for m in members {
        let ips = [m.id.addr.ip(), m.id.meta.rpc_addr.ip()];
        if !ips.iter().any(|ip| ip.to_canonical() == from) {
            continue;
        }
        if m.id.meta.cluster == origin {
            return None;
        }
        others.insert(m.id.meta.cluster.as_str());
    }
    (!others.is_empty()).then(|| others.into_iter().collect::<Vec<_>>().join(", "))
}

fn member(info: MemberInfo) -> Member {
    let id = info.id;
    Member {
        name: id.name,
        gossip_addr: id.addr.to_string(),
        rpc_addr: id.meta.rpc_addr.to_string(),
        cluster: id.meta.cluster,
        role: id.meta.role.as_str().to_owned(),
        status: info.status.as_str().to_owned(),
        mode: id.meta.mode,
        registry: id.meta.registry,
        generation: id.generation,
        protocol_version: id.meta.protocol,
        local: info.local,
        conflict: info.conflict,
        tls: id.meta.tls,
    }
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn info(&self, _request: Request<InfoRequest>) -> Result<Response<NodeInfo>, Status> {
        Ok(Response::new(self.info.clone()))
    }

    async fn members(
        &self,
        _request: Request<MembersRequest>,
    ) -> Result<Response<MembersReply>, Status> {
        let members = self
            .gossip
            .members()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(MembersReply {
            members: members.into_iter().map(member).collect(),
        }))
    }

    type PullStream =
        std::pin::Pin<Box<dyn futures::Stream<Item = Result<PullChunk, Status>> + Send>>;

    async fn pull(
        &self,
        request: Request<PullRequest>,
    ) -> Result<Response<Self::PullStream>, Status> {
        let chunks = transfer::serve_pull(&self.sync, request.get_ref())?;
        let stream = futures::stream::iter(chunks.map(Ok));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn contracts(
        &self,
        request: Request<ContractsRequest>,
    ) -> Result<Response<ContractsReply>, Status> {
        transfer::serve_contracts(&self.sync, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn keyring(
        &self,
        request: Request<KeyringRequest>,
    ) -> Result<Response<KeyringReply>, Status> {
        let remote = request.remote_addr();
        let request = request.into_inner();
        let op = keyring_op(&request)?;
        if op != KeyringOp::List && self.peer_tls.is_none() {
            warn!(
                op = request.op,
                from = ?remote,
                "gossip keyring change over plain-text rpc: anyone who reaches the rpc port can change the gossip keys; run with --tls-cert/--tls-key/--tls-ca"
            );
        }
        let mut members = vec![self.keyring_here(op).await];
        if request.fan_out {
            let others = self
                .gossip
                .members()
                .await
                .map_err(|e| Status::unavailable(e.to_string()))?
                .into_iter()
                .filter(|m| !m.local && m.status != MemberStatus::Left);
            let forwarded = KeyringRequest {
                fan_out: false,
                ..request
            };
            let calls = others.map(|m| self.keyring_there(m, forwarded.clone()));
            members.extend(futures::future::join_all(calls).await);
        }
        Ok(Response::new(KeyringReply { members }))
    }

    async fn push(&self, request: Request<PushRequest>) -> Result<Response<PushReply>, Status> {
        let from = request.remote_addr();
        let cluster = self.info.cluster_name.as_str();
        // Judged once the push is known to be well formed and not of this data centre (both
        // refused for what they are): whether its sender is a member of the data centre it
        // claims to come from.
        let judge = async |origin: &str| -> Result<(), Status> {
            let Some(from) = from.filter(|_| origin != cluster) else {
                return Ok(());
            };
            let Ok(members) = self.gossip.members().await else {
                return Ok(());
            };
            match impersonated(origin, from.ip(), &members) {
                None => Ok(()),
                Some(theirs) => {
                    self.sync.metrics().reject("push", "origin_mismatch");
                    warn!(origin, %from, member_of = theirs, "push refused: it comes from a member of another data centre than the one it claims");
                    Err(Status::permission_denied(format!(
                        "push.origin: {origin:?}, but {} is the address of a member of {theirs}",
                        from.ip()
                    )))
                }
            }
        };
        transfer::serve_push(&self.sync, request.into_inner(), judge)
            .await
            .map(Response::new)
    }

    async fn status(
        &self,
        request: Request<StatusRequest>,
    ) -> Result<Response<StatusReply>, Status> {
        let reply =
            super::ops::serve_status(&self.info, &self.gossip, &self.sync, request.into_inner())
                .await;
        Ok(Response::new(reply))
    }

    type MappingsStream =
        std::pin::Pin<Box<dyn futures::Stream<Item = Result<MappingsChunk, Status>> + Send>>;

    async fn mappings(
        &self,
        request: Request<MappingsRequest>,
    ) -> Result<Response<Self::MappingsStream>, Status> {
        let chunks = super::ops::serve_mappings(&self.sync, request.into_inner()).await?;
        let stream = futures::stream::iter(chunks.map(Ok));
        Ok(Response::new(Box::pin(stream)))
    }

    type InventoryStream =
        std::pin::Pin<Box<dyn futures::Stream<Item = Result<InventoryChunk, Status>> + Send>>;

    async fn inventory(
        &self,
        _request: Request<InventoryRequest>,
    ) -> Result<Response<Self::InventoryStream>, Status> {
        let chunks = super::ops::serve_inventory(&self.info, &self.sync).await?;
        let stream = futures::stream::iter(chunks.map(Ok));
        Ok(Response::new(Box::pin(stream)))
    }
}

/// How long calls in flight may run after shutdown begins. The server also waits for clients
/// to close their connections after its GOAWAY; one that never does must not hold the
/// daemon, so the remaining connections are dropped after this.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);

/// How long an incoming connection may take to finish its TLS handshake. Handshakes run
/// each in its own task, so a slow or silent caller never holds up the accept loop.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed `accept` (out of file descriptors, say) before the next one.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);
/// Connections whose handshake is done, waiting for the server to take them.
const ACCEPTED_BACKLOG: usize = 64;

/// Serves `service` on `listener` until `shutdown` is cancelled, then finishes the calls in
/// flight for up to [`DRAIN_TIMEOUT`]. With `tls` the listener speaks TLS only, with the
/// server configuration in force when each connection arrives (it asks callers for a
/// certificate signed by its CA when it verifies them): a plain-text call fails its
/// handshake, and failed handshakes are counted in `metrics`.
///
/// # Errors
/// When the server fails (a transport error); not for individual failed calls.
pub async fn serve(
    listener: TcpListener,
    service: PeerService,
    shutdown: CancellationToken,
    tls: Option<RpcTls>,
    metrics: TlsMetrics,
) -> Result<(), tonic::transport::Error> {
    // Pings on every connection, as the client side does: the connection of a peer that
    // froze or vanished behind a blackholed link is closed instead of held for ever.
    let router = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(KEEP_ALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEP_ALIVE_TIMEOUT))
        .add_service(
            PeerServer::new(service)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        );
    let stopped = shutdown.clone().cancelled_owned();
    let server: Pin<Box<dyn Future<Output = Result<(), tonic::transport::Error>> + Send>> =
        match tls {
            Some(tls) => {
                let incoming = tls_incoming(listener, tls, metrics, shutdown.clone());
                Box::pin(router.serve_with_incoming_shutdown(incoming, stopped))
            }
            None => Box::pin(
                router.serve_with_incoming_shutdown(TcpListenerStream::new(listener), stopped),
            ),
        };
    let drain_deadline = async {
        shutdown.cancelled().await;
        tokio::time::sleep(DRAIN_TIMEOUT).await;
    };
    tokio::select! {
        result = server => result,
        () = drain_deadline => {
            warn!(timeout = ?DRAIN_TIMEOUT, "rpc clients still connected at the drain deadline; closing their connections");
            Ok(())
        }
    }
}

/// The TLS connections of `listener`: an accept loop that hands every new connection to its
/// own handshake task (bounded by [`HANDSHAKE_TIMEOUT`]) and yields those that complete.
fn tls_incoming(
    listener: TcpListener,
    tls: RpcTls,
    metrics: TlsMetrics,
    shutdown: CancellationToken,
) -> ReceiverStream<Result<TlsStream<TcpStream>, std::io::Error>> {
    let (tx, rx) = mpsc::channel(ACCEPTED_BACKLOG);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                () = shutdown.cancelled() => break,
                () = tx.closed() => break,
                accepted = listener.accept() => accepted,
            };
            let (tcp, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    warn!(error = %e, "rpc listener cannot accept a connection");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            // The configuration in force now: a reload applies to the next connection.
            let acceptor = TlsAcceptor::from(tls.server_config());
            let (tx, metrics) = (tx.clone(), metrics.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        // The server is gone when this fails; the connection just closes.
                        let _ = tx.send(Ok(stream)).await;
                    }
                    Ok(Err(e)) => {
                        metrics.handshake_failed();
                        debug!(%peer, error = %e, "rpc TLS handshake failed");
                    }
                    Err(_) => {
                        metrics.handshake_failed();
                        debug!(%peer, timeout = ?HANDSHAKE_TIMEOUT, "rpc TLS handshake timed out");
                    }
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(op: &str, key: &str) -> KeyringRequest {
        KeyringRequest {
            op: op.to_owned(),
            key: key.to_owned(),
            fan_out: true,
        }
    }

    #[test]
    fn keyring_requests_name_a_step_and_a_valid_key() {
        let key = GossipKey::generate();
        let text = key.to_base64();
        assert_eq!(keyring_op(&request("list", "")).ok(), Some(KeyringOp::List));
        assert_eq!(
            keyring_op(&request("use", &text)).ok(),
            Some(KeyringOp::Use(key.clone()))
        );
        let short = keyring_op(&request("install", "c2hvcnQ=")).expect_err("a 5-byte key");
        assert_eq!(short.code(), tonic::Code::InvalidArgument);
        assert!(short.message().contains("32 bytes"), "{}", short.message());
        let unknown = keyring_op(&request("rotate", &text)).expect_err("no such step");
        assert!(unknown.message().contains("list, install, use or remove"));
        assert!(!unknown.message().contains(&text), "the key is echoed");
    }

    #[test]
    fn fingerprints_tell_keys_apart_without_showing_them() {
        let (a, b) = (
            GossipKey::generate().to_base64(),
            GossipKey::generate().to_base64(),
        );
        assert_eq!(fingerprint(&a), fingerprint(&format!(" {a}\n")));
        assert_ne!(fingerprint(&a), fingerprint(&b));
        assert_eq!(fingerprint(&a).len(), 16);
        assert!(!a.contains(&fingerprint(&a)));
    }

    fn member_at(cluster: &str, ip: [u8; 4]) -> MemberInfo {
        let addr = std::net::SocketAddr::from((ip, 30190));
        MemberInfo {
            id: crate::gossip::NodeId {
                name: format!("{cluster}-a"),
                addr,
                generation: 1,
                bump: 0,
                meta: crate::gossip::NodeMeta::new(
                    cluster,
                    std::net::SocketAddr::from((ip, 30191)),
                    "single",
                ),
            },
            status: MemberStatus::Alive,
            local: false,
            conflict: false,
        }
    }

    #[test]
    fn a_push_from_a_member_of_another_data_centre_is_told_apart() {
        let members = [
            member_at("dc1", [10, 0, 0, 1]),
            member_at("dc2", [10, 0, 0, 2]),
            member_at("dc3", [10, 0, 0, 3]),
            // Two data centres on one host: either may push from it.
            member_at("dc4", [10, 0, 0, 9]),
            member_at("dc5", [10, 0, 0, 9]),
        ];
        let ip = |last: u8| IpAddr::from([10, 0, 0, last]);
        assert_eq!(impersonated("dc1", ip(1), &members), None);
        assert_eq!(impersonated("dc1", ip(3), &members).as_deref(), Some("dc3"));
        assert_eq!(impersonated("dc9", ip(2), &members).as_deref(), Some("dc2"));
        assert_eq!(impersonated("dc4", ip(9), &members), None);
        assert_eq!(
            impersonated("dc1", ip(9), &members).as_deref(),
            Some("dc4, dc5")
        );
        // An address no member has (NAT, a second interface): judged on its contents.
        assert_eq!(impersonated("dc1", ip(77), &members), None);
        // An IPv4 peer seen on an IPv6 listener.
        let mapped = IpAddr::from(std::net::Ipv4Addr::new(10, 0, 0, 3).to_ipv6_mapped());
        assert_eq!(
            impersonated("dc1", mapped, &members).as_deref(),
            Some("dc3")
        );
    }
}

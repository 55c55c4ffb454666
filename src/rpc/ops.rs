//! The operator's calls `Status`, `Mappings` and `Inventory`: the engine's snapshot
//! ([`SyncHandle::status`], [`SyncHandle::mappings`]) and the local registry read in full
//! ([`SyncHandle::inventory`]) in wire terms, and the client calls of `syncer status`,
//! `syncer mappings`, `syncer diff` and the periodic inspection.

use std::time::Duration;

use tonic::Status;

use super::client::{ClientError, answer, connect};
use super::proto::{
    ExportState, ImportStatus, InventoryChunk, InventoryRequest, MappingRow, MappingsChunk,
    MappingsRequest, NodeInfo, Probe, StatusReply, StatusRequest,
};
use super::tls::ClientTls;
use crate::gossip::{GossipHandle, MemberInfo};
use crate::sync::SyncHandle;
use crate::sync::status::{self as model, Lag};

/// How long the registry is given to answer the status probe.
pub const REGISTRY_PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long each importer is given to list its mappings.
pub const MAPPINGS_WAIT: Duration = Duration::from_secs(10);
/// Entries per `MappingsChunk`: an entry is a few hundred bytes, so a chunk stays far under
/// the 4 MiB message limit.
pub const MAPPINGS_CHUNK: usize = 1000;

fn probe(p: Option<model::Probe>) -> Option<Probe> {
    p.map(|p| Probe {
        checked: true,
        ok: p.error.is_none(),
        error: p.error.unwrap_or_default(),
        at_ms: p.at_ms,
    })
}

fn origin(o: model::OriginStatus, members: &[MemberInfo]) -> ImportStatus {
    let lag = o.lag();
    let s = o.state;
    let active_rpc_addr = s.peer.map(|a| a.to_string()).unwrap_or_default();
    let active_member = s
        .peer
        .and_then(|addr| {
            members
                .iter()
                .find(|m| m.id.meta.rpc_addr == addr && m.id.meta.cluster == o.origin)
                .map(|m| m.id.name.clone())
        })
        .unwrap_or_default();
    let (last_error, last_error_ms) = s.last_error.map(|e| (e.text, e.at_ms)).unwrap_or_default();
    ImportStatus {
        origin: o.origin,
        active_member,
        active_rpc_addr,
        announced: o.announced.is_some(),
        announced_epoch: o.announced.map_or(0, |r| r.epoch),
        announced_seq: o.announced.map_or(0, |r| r.seq),
        has_cursor: s.cursor.is_some(),
        cursor_epoch: s.cursor.map_or(0, |r| r.epoch),
        cursor_seq: s.cursor.map_or(0, |r| r.seq),
        complete: s.complete,
        behind: match lag {
            Lag::Changes(n) => n,
            Lag::SnapshotPending => 0,
        },
        snapshot_pending: lag == Lag::SnapshotPending,
        copies: s.copies,
        present: s.present,
        desired: s.desired,
        last_exchange_ms: s.last_exchange_ms,
        last_error,
        last_error_ms,
        stale: s.stale,
        keeping_stale: s.keeping_stale,
        conflict: o.conflict,
        held_cap: s.held.cap,
        held_awaiting_snapshot: s.held.awaiting_snapshot,
        held_leader: s.held.leader_hold,
        held_leader_until_ms: s.held.leader_hold_until_ms,
        failing_services: s.failing_services,
    }
}

/// Answers `Status` for this node.
pub async fn serve_status(
    info: &NodeInfo,
    gossip: &GossipHandle,
    sync: &SyncHandle,
    _request: StatusRequest,
) -> StatusReply {
    let engine = sync.status(REGISTRY_PROBE_TIMEOUT).await;
    let members = gossip.members().await.unwrap_or_default();
    let role = members
        .iter()
        .find(|m| m.local)
        .map(|m| m.id.meta.role.as_str().to_owned())
        .unwrap_or_default();
    StatusReply {
        name: info.name.clone(),
        cluster: info.cluster_name.clone(),
        mode: info.mode.clone(),
        version: info.version.clone(),
        rpc_addr: info.rpc_addr.clone(),
        role,
        idle: engine.idle.unwrap_or_default(),
        now_ms: crate::sync::unix_ms(),
        started_ms: engine.started_ms,
        registry_addresses: engine.registry_addresses,
        registry: probe(engine.registry),
        store_kind: engine.store_kind,
        store: probe(engine.store),
        export: engine.export.map(|e| ExportState {
            ready: e.ready,
            epoch: e.revision.epoch,
            seq: e.revision.seq,
            instances: e.instances,
            services: e.services,
        }),
        origins: engine
            .origins
            .into_iter()
            .map(|o| origin(o, &members))
            .collect(),
    }
}

/// The chunks of a `Mappings` or `Inventory` answer, made as the stream is read.
pub type Chunks<T> = Box<dyn Iterator<Item = T> + Send>;

/// Answers `Mappings`: the entries in chunks of [`MAPPINGS_CHUNK`], each made into wire rows
/// only when the stream asks for it.
///
/// # Errors
/// Unavailable when the engine does not run here (a standby: ask the active member) or an
/// importer is too busy to answer; not found for an origin this data centre does not
/// import.
pub async fn serve_mappings(
    sync: &SyncHandle,
    request: MappingsRequest,
) -> Result<Chunks<MappingsChunk>, Status> {
    let origin = (!request.origin.is_empty()).then_some(request.origin.as_str());
    let entries = sync.mappings(origin, MAPPINGS_WAIT).await.map_err(|e| {
        if e.is_unavailable() {
            Status::unavailable(e.to_string())
        } else {
            Status::not_found(e.to_string())
        }
    })?;
    let rows = entries.into_iter().map(|e| MappingRow {
        origin: e.origin,
        domain_project: e.tenant.to_string(),
        origin_service_id: e.origin_service_id,
        origin_instance_id: e.origin_instance_id,
        copy_service_id: e.copy_service_id,
        copy_instance_id: e.copy_instance_id,
        state: e.state.as_str().to_owned(),
        generation: e.generation,
        updated_ms: e.updated_ms,
    });
    Ok(Box::new(chunks(rows)))
}

/// `rows` in messages of at most [`MAPPINGS_CHUNK`], one message made per step.
fn chunks(
    rows: impl Iterator<Item = MappingRow> + Send,
) -> impl Iterator<Item = MappingsChunk> + Send {
    let mut rows = rows.peekable();
    std::iter::from_fn(move || {
        rows.peek()?;
        Some(MappingsChunk {
            rows: rows.by_ref().take(MAPPINGS_CHUNK).collect(),
        })
    })
}

/// Answers `Inventory`: the local registry read in full (own instances and copies alike,
/// each with its service), in chunks under the message limit, with the service filter in
/// the first. The registry's snapshot is read whole (that is what a registry read gives);
/// its chunks are encoded one at a time as the stream asks for them.
///
/// # Errors
/// `unavailable` while no engine runs here or the registry cannot be read.
pub async fn serve_inventory(
    info: &NodeInfo,
    sync: &SyncHandle,
) -> Result<Chunks<InventoryChunk>, Status> {
    let (snapshot, filter) = sync
        .inventory()
        .await
        .map_err(|e| super::status::from_engine(&e))?;
    let crate::registry::Snapshot {
        services,
        instances,
    } = snapshot;
    let services: std::collections::HashMap<_, _> = services
        .into_iter()
        .map(|s| {
            (
                (s.tenant.clone(), s.service_id.clone()),
                std::sync::Arc::new(s),
            )
        })
        .collect();
    let pairs = instances.into_iter().filter_map(move |i| {
        services
            .get(&(i.tenant.clone(), i.service_id.clone()))
            .map(|s| (s.clone(), i))
    });
    let cluster = info.cluster_name.clone();
    let mut first = Some((filter.includes(), filter.excludes()));
    let mut data = super::convert::SnapshotChunks::new(pairs)
        .map(Some)
        .peekable();
    if data.peek().is_none() {
        // An empty registry: one chunk all the same, for the cluster name and the filter.
        return Ok(Box::new(std::iter::once(InventoryChunk {
            cluster,
            include: filter.includes(),
            exclude: filter.excludes(),
            ..InventoryChunk::default()
        })));
    }
    Ok(Box::new(data.map(move |data| {
        let (include, exclude) = first.take().unwrap_or_default();
        InventoryChunk {
            cluster: cluster.clone(),
            data,
            include,
            exclude,
        }
    })))
}

/// What [`inventory`] brings back: the data centre, its filter and what its registry holds.
#[derive(Debug, Clone, Default)]
pub struct InventoryAnswer {
    pub cluster: String,
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    pub services: Vec<crate::registry::Service>,
    pub instances: Vec<crate::registry::Instance>,
}

impl InventoryAnswer {
    /// The answering syncer's service filter. Its patterns were checked where they are held;
    /// one that does not parse here (another version) leaves the filter open rather than
    /// failing an audit.
    pub fn filter(&self) -> crate::registry::filter::ServiceFilter {
        crate::registry::filter::ServiceFilter::new(&self.include, &self.exclude)
            .unwrap_or_default()
    }
}

/// Asks the active syncer at `addr` for its data centre's inventory.
///
/// # Errors
/// A [`ClientError`] when it cannot be reached, refuses, the stream breaks or a chunk does
/// not decode.
pub async fn inventory(
    addr: &str,
    timeout: Duration,
    tls: Option<&ClientTls>,
) -> Result<InventoryAnswer, ClientError> {
    let mut client = connect(addr, timeout, tls).await?;
    let reply = client.inventory(InventoryRequest {}).await;
    let mut stream = answer(addr, reply)?;
    let mut out = InventoryAnswer::default();
    let mut seen = std::collections::HashSet::new();
    loop {
        match stream.message().await {
            Ok(Some(chunk)) => {
                if out.cluster.is_empty() {
                    out.cluster = chunk.cluster;
                    out.include = chunk.include;
                    out.exclude = chunk.exclude;
                }
                let Some(data) = chunk.data else { continue };
                let pairs =
                    super::convert::chunk_from_wire(data).map_err(|e| ClientError::Call {
                        addr: addr.to_owned(),
                        status: Status::invalid_argument(format!("inventory: {e}")),
                    })?;
                for (service, instance) in pairs {
                    if seen.insert((service.tenant.clone(), service.service_id.clone())) {
                        out.services.push((*service).clone());
                    }
                    out.instances.push(instance);
                }
            }
            Ok(None) => return Ok(out),
            Err(status) => {
                return Err(ClientError::Call {
                    addr: addr.to_owned(),
                    status,
                });
            }
        }
    }
}

/// Asks the syncer at `addr` for its status.
///
/// # Errors
/// A [`ClientError`] when it cannot be reached or the call fails.
pub async fn status(
    addr: &str,
    timeout: Duration,
    tls: Option<&ClientTls>,
) -> Result<StatusReply, ClientError> {
    let mut client = connect(addr, timeout, tls).await?;
    let reply = client.status(StatusRequest {}).await;
    answer(addr, reply)
}

/// Asks the syncer at `addr` for its data centre's mapping entries (of `origin` only, when
/// not empty).
///
/// # Errors
/// A [`ClientError`] when it cannot be reached, refuses, or the stream breaks.
pub async fn mappings(
    addr: &str,
    timeout: Duration,
    tls: Option<&ClientTls>,
    origin: &str,
) -> Result<Vec<MappingRow>, ClientError> {
    let mut client = connect(addr, timeout, tls).await?;
    let reply = client
        .mappings(MappingsRequest {
            origin: origin.to_owned(),
        })
        .await;
    let mut stream = answer(addr, reply)?;
    let mut rows = Vec::new();
    loop {
        match stream.message().await {
            Ok(Some(chunk)) => rows.extend(chunk.rows),
            Ok(None) => return Ok(rows),
            Err(status) => {
                return Err(ClientError::Call {
                    addr: addr.to_owned(),
                    status,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::rpc::channel::MAX_MESSAGE_BYTES;

    #[test]
    fn mappings_travel_in_chunks_far_under_the_message_limit() {
        // Ids as long as the registry allows (SC: 64 characters; tenants 2 × 64).
        let long = |c: char| std::iter::repeat_n(c, 64).collect::<String>();
        let row = MappingRow {
            origin: long('o'),
            domain_project: format!("{}/{}", long('d'), long('p')),
            origin_service_id: long('s'),
            origin_instance_id: long('i'),
            copy_service_id: long('t'),
            copy_instance_id: long('c'),
            state: "extra_generation".into(),
            generation: u32::MAX,
            updated_ms: u64::MAX,
        };
        let chunks: Vec<MappingsChunk> =
            chunks(vec![row; 2 * MAPPINGS_CHUNK + 500].into_iter()).collect();
        let sizes: Vec<usize> = chunks.iter().map(|c| c.rows.len()).collect();
        assert_eq!(sizes, [MAPPINGS_CHUNK, MAPPINGS_CHUNK, 500]);
        assert!(
            chunks[0].encoded_len() < MAX_MESSAGE_BYTES / 4,
            "{}",
            chunks[0].encoded_len()
        );
        assert_eq!(super::chunks(Vec::new().into_iter()).count(), 0);
    }
}

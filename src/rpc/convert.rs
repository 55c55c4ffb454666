//! Conversion between the registry-neutral model ([`crate::registry::model`], the export
//! side's [`Export`]) and the `syncer.v1` wire messages, with validation of everything a
//! peer sends.
//!
//! # Validation policy
//!
//! Every message from the network is checked completely before the engine sees any of it,
//! and a message that fails is refused as a whole: a [`ConvertError`] names the field
//! (`push.changes[3].upsert.instance.host_name: empty`), and [`ConvertError::reason`] is the
//! metric label. What is checked here is what every registry kind shares:
//!
//! - **The wire-safety bounds** of [`crate::registry::bounds`], the same the exporter applies
//!   before it exports: sizes and counts, so that a broken or hostile peer cannot make the
//!   receiver allocate without limit; no control characters in ids, names and anything else
//!   that ends up in logs, store keys or another registry's API (descriptions, property keys
//!   and values are carried as they are); the fields the model needs (a tenant
//!   `domain/project`, with no fallback to `default/default` because syncers always send it;
//!   service id and name; instance id, host name and status).
//! - **Decoding**: integers the model holds unsigned are not negative; converted with
//!   `try_from`, never `as`.
//! - **Structure**: a change names its kind and has a sequence of at least 1; an upsert
//!   carries both bodies and its instance belongs to its service; every instance of a
//!   snapshot chunk finds its service in the chunk, once; sequence numbers are consecutive;
//!   a push comes from a named origin.
//!
//! The rules of a registry kind (ServiceComb's id characters, version format, environments,
//! upper-case statuses, its shorter lengths) are not checked here: a value another kind of
//! registry allows travels, and the importer of a data centre whose registry cannot hold it
//! refuses that one object ([`crate::registry::Registry::accepts_instance`]).
//!
//! A service's schemas travel as their ids and summaries only; their contents are asked for
//! with `Contracts` ([`contracts_reply`], [`contracts_from_wire`]) by a receiver whose copy
//! lacks them. Not carried: a service's framework, registering agent and schema id list, an
//! instance's
//! modification time; the opaque `expansions` are neither sent nor read. Nothing here panics
//! on wire data.

use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use prost::Message;

use super::proto;
use crate::registry::bounds::{
    self, BoundsError, MAX_ENDPOINTS, MAX_PROPERTIES, MAX_RULES, MAX_SCHEMAS, MAX_TAGS,
};
use crate::registry::model::DataCenterInfo;
use crate::registry::{AccessRule, HealthCheck, Instance, InstanceRef, Schema, Service, Tenant};
use crate::sync::export::Export;

/// Most instances in one snapshot chunk.
pub const MAX_CHUNK_INSTANCES: usize = 500;
/// Most changes in one `Push` or one `ChangeBatch` of increments.
pub const MAX_PUSH_CHANGES: usize = 1000;
/// Encoded size [`snapshot_chunks`] keeps a chunk under, besides the instance count: half
/// of gRPC's default 4 MiB decoding limit. A chunk is closed before an item that would pass
/// it, and one item is bounded far below it by the limits below (about 200 KiB at most), so
/// fat instances cannot make a chunk that the receiver fails to decode.
pub const MAX_CHUNK_BYTES: usize = 2 * 1024 * 1024;
/// Registry kind sent in `plugin_name`.
pub const PLUGIN_NAME: &str = "servicecenter";

/// Origin data centre (cluster name) of a push, in bytes.
pub const MAX_ORIGIN_BYTES: usize = 128;

/// Why a message from a peer was refused. `reason()` is a short metric label; the message
/// names the field and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    /// A value outside the wire-safety bounds every registry shares (a required field empty,
    /// an id, tenant or value out of bounds, too large, an instance without its service):
    /// refused on the wire exactly as the exporter refuses to send it.
    #[error(transparent)]
    Bounds(#[from] BoundsError),
    /// An epoch or sequence numbers that do not line up.
    #[error("{field}: {detail}")]
    BadSequence { field: String, detail: String },
    /// The same service or instance twice in one chunk.
    #[error("{field}: {detail}")]
    Duplicate { field: String, detail: String },
}

impl ConvertError {
    /// A short label for metrics (`missing_field`, `bad_id`, ...).
    pub fn reason(&self) -> &'static str {
        match self {
            ConvertError::Bounds(e) => e.reason(),
            ConvertError::BadSequence { .. } => "bad_sequence",
            ConvertError::Duplicate { .. } => "duplicate",
        }
    }

    /// The offending field, as a path (`chunk.instances[7].host_name`).
    pub fn field(&self) -> &str {
        match self {
            ConvertError::Bounds(e) => e.field(),
            ConvertError::BadSequence { field, .. } | ConvertError::Duplicate { field, .. } => {
                field
            }
        }
    }
}

/// Where a message sits in what was received; field names are appended to it.
#[derive(Clone, Copy)]
struct At<'a>(&'a str);

impl<'a> At<'a> {
    fn field(self, name: &str) -> String {
        format!("{}.{name}", self.0)
    }

    fn missing(self, name: &str, detail: &str) -> ConvertError {
        BoundsError::MissingField {
            field: self.field(name),
            detail: detail.to_owned(),
        }
        .into()
    }

    fn bad_value(self, name: &str, detail: String) -> ConvertError {
        BoundsError::BadValue {
            field: self.field(name),
            detail,
        }
        .into()
    }

    fn too_large(self, name: &str, detail: String) -> ConvertError {
        BoundsError::TooLarge {
            field: self.field(name),
            detail,
        }
        .into()
    }

    fn bad_sequence(self, name: &str, detail: String) -> ConvertError {
        ConvertError::BadSequence {
            field: self.field(name),
            detail,
        }
    }

    /// The same place, for the shared bounds.
    fn bounds(self) -> bounds::At<'a> {
        bounds::At(self.0)
    }
}

fn tenant_from_wire(at: At, name: &str, text: &str) -> Result<Tenant, ConvertError> {
    if text.is_empty() {
        return Err(at.missing(name, "empty"));
    }
    let tenant = Tenant::parse(text).ok_or_else(|| BoundsError::BadTenant {
        field: at.field(name),
        detail: format!("{} is not domain/project", bounds::shown(text)),
    })?;
    bounds::check_tenant(at.bounds(), name, &tenant)?;
    Ok(tenant)
}

fn check_service_at(at: At, s: &Service) -> Result<(), ConvertError> {
    Ok(bounds::service_at(at.0, s)?)
}

fn check_instance_at(at: At, i: &Instance) -> Result<(), ConvertError> {
    Ok(bounds::instance_at(at.0, i)?)
}

fn check_belongs(at: At, service: &Service, instance: &Instance) -> Result<(), ConvertError> {
    Ok(bounds::belongs_at(at.0, service, instance)?)
}

/// A wire properties map in the model, bounded before it is copied.
fn properties_from_wire(
    at: At,
    properties: HashMap<String, String>,
) -> Result<BTreeMap<String, String>, ConvertError> {
    if properties.len() > MAX_PROPERTIES {
        return Err(at.too_large(
            "properties",
            format!("{} entries, at most {MAX_PROPERTIES}", properties.len()),
        ));
    }
    Ok(properties.into_iter().collect())
}

/// A wire schema-summaries map in the model, bounded before it is copied.
fn summaries_from_wire(
    at: At,
    summaries: HashMap<String, String>,
) -> Result<BTreeMap<String, String>, ConvertError> {
    if summaries.len() > MAX_SCHEMAS {
        return Err(at.too_large(
            "schema_summaries",
            format!("{} entries, at most {MAX_SCHEMAS}", summaries.len()),
        ));
    }
    Ok(summaries.into_iter().collect())
}

/// A wire tags map in the model, bounded before it is copied.
fn tags_from_wire(
    at: At,
    tags: HashMap<String, String>,
) -> Result<BTreeMap<String, String>, ConvertError> {
    if tags.len() > MAX_TAGS {
        return Err(at.too_large(
            "tags",
            format!("{} entries, at most {MAX_TAGS}", tags.len()),
        ));
    }
    Ok(tags.into_iter().collect())
}

/// Wire access rules in the model, bounded before they are copied.
fn rules_from_wire(at: At, rules: Vec<proto::AccessRule>) -> Result<Vec<AccessRule>, ConvertError> {
    if rules.len() > MAX_RULES {
        return Err(at.too_large(
            "rules",
            format!("{} entries, at most {MAX_RULES}", rules.len()),
        ));
    }
    Ok(rules
        .into_iter()
        .map(|r| AccessRule {
            rule_type: r.rule_type,
            attribute: r.attribute,
            pattern: r.pattern,
            description: r.description,
        })
        .collect())
}

/// Encoded size a `Contracts` reply is kept under: what does not fit is named in `more`
/// and asked for again.
pub const MAX_CONTRACTS_BYTES: usize = 2 * 1024 * 1024;

/// The request for the contents of schemas `ids` of origin service `service_id` of `tenant`.
pub fn contracts_request(
    tenant: &Tenant,
    service_id: &str,
    ids: &[String],
) -> proto::ContractsRequest {
    proto::ContractsRequest {
        domain_project: tenant.to_string(),
        service_id: service_id.to_owned(),
        schema_ids: ids.to_vec(),
    }
}

/// A `Contracts` request received from a peer, validated: tenant, service id and the ids
/// asked for (at most [`MAX_SCHEMAS`], each a valid schema id).
pub fn contracts_request_from_wire(
    r: proto::ContractsRequest,
) -> Result<(Tenant, String, Vec<String>), ConvertError> {
    let at = At("contracts");
    let tenant = tenant_from_wire(at, "domain_project", &r.domain_project)?;
    if r.schema_ids.len() > MAX_SCHEMAS {
        return Err(at.too_large(
            "schema_ids",
            format!("{} entries, at most {MAX_SCHEMAS}", r.schema_ids.len()),
        ));
    }
    // The shared service bounds check the id; the ids are checked as summaries' keys.
    let probe = Service {
        tenant: tenant.clone(),
        service_id: r.service_id.clone(),
        name: "-".into(),
        schema_summaries: r
            .schema_ids
            .iter()
            .map(|id| (id.clone(), String::new()))
            .collect(),
        ..Service::default()
    };
    check_service_at(at, &probe)?;
    Ok((tenant, r.service_id, r.schema_ids))
}

/// The reply carrying `schemas` (those of the ids asked for, in order) up to
/// [`MAX_CONTRACTS_BYTES`]; the ids that did not fit are named in `more`. The first one is
/// always carried (one schema is bounded far below the budget).
pub fn contracts_reply(schemas: &[Schema]) -> proto::ContractsReply {
    let mut reply = proto::ContractsReply::default();
    let mut size = 0;
    for schema in schemas {
        let contract = proto::Contract {
            schema_id: schema.id.clone(),
            summary: schema.summary.clone(),
            content: schema.content.clone(),
        };
        let len = contract.encoded_len() + 8;
        if !reply.contracts.is_empty() && size + len > MAX_CONTRACTS_BYTES || !reply.more.is_empty()
        {
            reply.more.push(schema.id.clone());
            continue;
        }
        size += len;
        reply.contracts.push(contract);
    }
    reply
}

/// A `Contracts` reply received from a peer, validated against what was asked (`asked`):
/// the schemas, and the ids still to ask for.
pub fn contracts_from_wire(
    reply: proto::ContractsReply,
    asked: &[String],
) -> Result<(Vec<Schema>, Vec<String>), ConvertError> {
    let at = At("contracts_reply");
    let asked: HashSet<&str> = asked.iter().map(String::as_str).collect();
    if reply.contracts.len() + reply.more.len() > asked.len() {
        return Err(at.too_large(
            "contracts",
            format!(
                "{} entries for {} asked",
                reply.contracts.len() + reply.more.len(),
                asked.len()
            ),
        ));
    }
    let mut seen = HashSet::new();
    let mut schemas = Vec::with_capacity(reply.contracts.len());
    for (n, c) in reply.contracts.into_iter().enumerate() {
        let path = format!("contracts_reply.contracts[{n}]");
        let schema = Schema {
            id: c.schema_id,
            summary: c.summary,
            content: c.content,
        };
        bounds::schema_at(&path, &schema)?;
        if !asked.contains(schema.id.as_str()) || !seen.insert(schema.id.clone()) {
            return Err(ConvertError::Duplicate {
                field: format!("{path}.schema_id"),
                detail: format!("{} not asked for, or twice", bounds::shown(&schema.id)),
            });
        }
        schemas.push(schema);
    }
    for (n, id) in reply.more.iter().enumerate() {
        if !asked.contains(id.as_str()) || !seen.insert(id.clone()) {
            return Err(ConvertError::Duplicate {
                field: format!("contracts_reply.more[{n}]"),
                detail: format!("{} not asked for, or twice", bounds::shown(id)),
            });
        }
    }
    if schemas.is_empty() && !reply.more.is_empty() {
        return Err(ConvertError::BadSequence {
            field: "contracts_reply.more".into(),
            detail: "nothing carried, yet more to come".into(),
        });
    }
    Ok((schemas, reply.more))
}

/// `service` as sent to peers.
pub fn service_to_wire(s: &Service) -> proto::SyncService {
    proto::SyncService {
        service_id: s.service_id.clone(),
        app: s.app.clone(),
        name: s.name.clone(),
        version: s.version.clone(),
        status: s.status.clone(),
        domain_project: s.tenant.to_string(),
        environment: s.environment.clone(),
        plugin_name: PLUGIN_NAME.to_owned(),
        expansions: Vec::new(),
        properties: s
            .properties
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        alias: s.alias.clone(),
        description: s.description.clone(),
        level: s.level.clone(),
        schema_summaries: s
            .schema_summaries
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        tags: s.tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        rules: s
            .rules
            .iter()
            .map(|r| proto::AccessRule {
                rule_type: r.rule_type.clone(),
                attribute: r.attribute.clone(),
                pattern: r.pattern.clone(),
                description: r.description.clone(),
            })
            .collect(),
    }
}

/// A service received from a peer, validated. Framework, registering agent and schema list are
/// not carried: they come back empty.
pub fn service_from_wire(s: proto::SyncService) -> Result<Service, ConvertError> {
    service_at(At("service"), s)
}

fn service_at(at: At, s: proto::SyncService) -> Result<Service, ConvertError> {
    let service = Service {
        tenant: tenant_from_wire(at, "domain_project", &s.domain_project)?,
        properties: properties_from_wire(at, s.properties)?,
        service_id: s.service_id,
        app: s.app,
        name: s.name,
        version: s.version,
        environment: s.environment,
        alias: s.alias,
        description: s.description,
        level: s.level,
        status: s.status,
        schemas: Vec::new(),
        schema_summaries: summaries_from_wire(at, s.schema_summaries)?,
        tags: tags_from_wire(at, s.tags)?,
        rules: rules_from_wire(at, s.rules)?,
        framework: None,
        register_by: String::new(),
    };
    check_service_at(at, &service)?;
    Ok(service)
}

/// Saturates: a model value beyond `i32` is invalid anyway and refused by the receiver.
fn wire_int(value: u32) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}

/// `instance` as sent to peers; an absent data centre travels as empty strings.
pub fn instance_to_wire(i: &Instance) -> proto::SyncInstance {
    let dc = i.data_center.as_ref();
    let dc_field = |f: fn(&DataCenterInfo) -> &String| dc.map(f).cloned().unwrap_or_default();
    proto::SyncInstance {
        instance_id: i.instance_id.clone(),
        service_id: i.service_id.clone(),
        endpoints: i.endpoints.clone(),
        host_name: i.host_name.clone(),
        status: i.status.clone(),
        health_check: i.health_check.as_ref().map(|h| proto::HealthCheck {
            mode: h.mode.clone(),
            port: wire_int(h.port),
            interval: wire_int(h.interval),
            times: wire_int(h.times),
            url: h.url.clone(),
        }),
        version: i.version.clone(),
        plugin_name: PLUGIN_NAME.to_owned(),
        expansions: Vec::new(),
        properties: i
            .properties
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        domain_project: i.tenant.to_string(),
        data_center_name: dc_field(|d| &d.name),
        data_center_region: dc_field(|d| &d.region),
        data_center_zone: dc_field(|d| &d.available_zone),
    }
}

/// An instance received from a peer, validated. The modification time is not carried
/// (`None`).
pub fn instance_from_wire(i: proto::SyncInstance) -> Result<Instance, ConvertError> {
    instance_at(At("instance"), i)
}

fn health_check_from_wire(at: At, h: proto::HealthCheck) -> Result<HealthCheck, ConvertError> {
    let at_check = at.field("health_check");
    let at = At(&at_check);
    let unsigned = |name: &str, value: i32| {
        u32::try_from(value).map_err(|_| at.bad_value(name, format!("{value}, negative")))
    };
    Ok(HealthCheck {
        interval: unsigned("interval", h.interval)?,
        times: unsigned("times", h.times)?,
        port: unsigned("port", h.port)?,
        mode: h.mode,
        url: h.url,
    })
}

fn instance_at(at: At, i: proto::SyncInstance) -> Result<Instance, ConvertError> {
    if i.endpoints.len() > MAX_ENDPOINTS {
        return Err(at.too_large(
            "endpoints",
            format!("{} entries, at most {MAX_ENDPOINTS}", i.endpoints.len()),
        ));
    }
    let all_empty = i.data_center_name.is_empty()
        && i.data_center_region.is_empty()
        && i.data_center_zone.is_empty();
    let instance = Instance {
        tenant: tenant_from_wire(at, "domain_project", &i.domain_project)?,
        properties: properties_from_wire(at, i.properties)?,
        health_check: i
            .health_check
            .map(|h| health_check_from_wire(at, h))
            .transpose()?,
        // Partly set comes through (the bounds leave each part optional); a registry kind
        // that wants all three, such as ServiceComb, refuses it when importing.
        data_center: (!all_empty).then_some(DataCenterInfo {
            name: i.data_center_name,
            region: i.data_center_region,
            available_zone: i.data_center_zone,
        }),
        service_id: i.service_id,
        instance_id: i.instance_id,
        endpoints: i.endpoints,
        host_name: i.host_name,
        status: i.status,
        version: i.version,
        mod_timestamp: None,
    };
    check_instance_at(at, &instance)?;
    Ok(instance)
}

fn key_to_wire(r: &InstanceRef) -> proto::InstanceKey {
    proto::InstanceKey {
        domain_project: r.tenant.to_string(),
        service_id: r.service_id.clone(),
        instance_id: r.instance_id.clone(),
    }
}

fn key_at(at: At, k: proto::InstanceKey) -> Result<InstanceRef, ConvertError> {
    let key = InstanceRef {
        tenant: tenant_from_wire(at, "domain_project", &k.domain_project)?,
        service_id: k.service_id,
        instance_id: k.instance_id,
    };
    bounds::reference_at(at.0, &key)?;
    Ok(key)
}

/// One exported change, numbered `seq` and seen at `observed_ms` (Unix milliseconds).
pub fn change_to_wire(seq: u64, observed_ms: u64, export: &Export) -> proto::Change {
    use proto::change::Kind;
    let kind = match export {
        Export::Upsert { service, instance } => Kind::Upsert(proto::Upsert {
            service: Some(service_to_wire(service)),
            instance: Some(instance_to_wire(instance)),
        }),
        Export::Service(service) => Kind::Service(service_to_wire(service)),
        Export::Removed(r) => Kind::Removed(key_to_wire(r)),
    };
    proto::Change {
        seq,
        observed_ms,
        kind: Some(kind),
    }
}

/// A change received from a peer, validated: `(seq, observed_ms, export)`.
pub fn change_from_wire(c: proto::Change) -> Result<(u64, u64, Export), ConvertError> {
    change_at(At("change"), c)
}

fn change_at(at: At, c: proto::Change) -> Result<(u64, u64, Export), ConvertError> {
    use proto::change::Kind;
    if c.seq == 0 {
        return Err(at.bad_sequence("seq", "0, sequences start at 1".to_owned()));
    }
    let export = match c.kind {
        None => return Err(at.missing("kind", "missing (upsert, service or removed)")),
        Some(Kind::Upsert(upsert)) => {
            let path = at.field("upsert");
            let at = At(&path);
            let service = upsert
                .service
                .ok_or_else(|| at.missing("service", "missing"))?;
            let instance = upsert
                .instance
                .ok_or_else(|| at.missing("instance", "missing"))?;
            let service = service_at(At(&at.field("service")), service)?;
            let instance_path = at.field("instance");
            let instance = instance_at(At(&instance_path), instance)?;
            check_belongs(At(&instance_path), &service, &instance)?;
            Export::Upsert {
                service: Arc::new(service),
                instance: Arc::new(instance),
            }
        }
        Some(Kind::Service(service)) => {
            Export::Service(Arc::new(service_at(At(&at.field("service")), service)?))
        }
        Some(Kind::Removed(key)) => Export::Removed(key_at(At(&at.field("removed")), key)?),
    };
    Ok((c.seq, c.observed_ms, export))
}

/// Encoded size of `message` as one element of a repeated field of `SyncData` (one-byte tag,
/// length, body), so the sizes of a chunk's elements add up to the chunk's.
fn framed_len(message: &impl Message) -> usize {
    let len = message.encoded_len();
    1 + prost::length_delimiter_len(len) + len
}

/// Splits a snapshot into chunks of at most [`MAX_CHUNK_INSTANCES`] instances and at most
/// [`MAX_CHUNK_BYTES`] encoded (unless one item alone is larger); each chunk carries exactly
/// the (deduplicated) services its instances belong to, in order of first use. Items keep their order. When two items
/// carry different bodies of one service, the first one in each chunk goes. An empty
/// snapshot has no chunks. All chunks at once: servers stream [`SnapshotChunks`] instead.
pub fn snapshot_chunks<S: Borrow<Service>, I: Borrow<Instance>>(
    items: &[(S, I)],
) -> Vec<proto::SyncData> {
    SnapshotChunks::new(items.iter().map(|(s, i)| (s.borrow(), i.borrow()))).collect()
}

/// The chunks of [`snapshot_chunks`], each encoded only when it is asked for: a server that
/// streams a large snapshot (a `Pull` of 150 000 instances, an `Inventory`) holds one chunk
/// in wire form at a time, not a second copy of the whole snapshot.
pub struct SnapshotChunks<It: Iterator> {
    items: std::iter::Peekable<It>,
}

impl<It: Iterator> SnapshotChunks<It> {
    pub fn new(items: It) -> SnapshotChunks<It> {
        SnapshotChunks {
            items: items.peekable(),
        }
    }
}

impl<It, S, I> Iterator for SnapshotChunks<It>
where
    It: Iterator<Item = (S, I)>,
    S: Borrow<Service>,
    I: Borrow<Instance>,
{
    type Item = proto::SyncData;

    fn next(&mut self) -> Option<proto::SyncData> {
        let mut chunk = proto::SyncData::default();
        let mut bytes = 0usize;
        // Services in this chunk; the last one apart, as items come grouped by service.
        let mut carried: HashSet<(Tenant, String)> = HashSet::new();
        let mut last: Option<(Tenant, String)> = None;
        while let Some((service, instance)) = self.items.peek() {
            let (service, instance) = (service.borrow(), instance.borrow());
            let is_last = last
                .as_ref()
                .is_some_and(|(t, id)| *t == service.tenant && *id == service.service_id);
            let known = is_last || {
                let key = (service.tenant.clone(), service.service_id.clone());
                let known = carried.contains(&key);
                if let Some(previous) = last.replace(key) {
                    carried.insert(previous);
                }
                known
            };
            let wire_instance = instance_to_wire(instance);
            let wire_service = (!known).then(|| service_to_wire(service));
            let cost = framed_len(&wire_instance) + wire_service.as_ref().map_or(0, framed_len);
            let full = chunk.instances.len() >= MAX_CHUNK_INSTANCES
                || bytes.saturating_add(cost) > MAX_CHUNK_BYTES;
            if full && !chunk.instances.is_empty() {
                return Some(chunk);
            }
            if let Some(wire_service) = wire_service {
                bytes += framed_len(&wire_service);
                chunk.services.push(wire_service);
            }
            bytes += framed_len(&wire_instance);
            chunk.instances.push(wire_instance);
            self.items.next();
        }
        (!chunk.instances.is_empty()).then_some(chunk)
    }
}

/// One received snapshot chunk back to `(service, instance)` pairs, in the order of the
/// instances. Each instance must find its service (same tenant and service id) in the same
/// chunk (`unknown_service`); more than [`MAX_CHUNK_INSTANCES`] instances or services is
/// `too_large`; a service or instance twice is `duplicate`. Services no instance uses are
/// ignored. Instances of one service share its body.
pub fn chunk_from_wire(d: proto::SyncData) -> Result<Vec<(Arc<Service>, Instance)>, ConvertError> {
    let at = At("chunk");
    for (name, len) in [
        ("instances", d.instances.len()),
        ("services", d.services.len()),
    ] {
        if len > MAX_CHUNK_INSTANCES {
            return Err(at.too_large(
                name,
                format!("{len} entries, at most {MAX_CHUNK_INSTANCES}"),
            ));
        }
    }
    let mut services: HashMap<(Tenant, String), Arc<Service>> = HashMap::new();
    for (n, wire) in d.services.into_iter().enumerate() {
        let path = format!("chunk.services[{n}]");
        let service = service_at(At(&path), wire)?;
        let key = (service.tenant.clone(), service.service_id.clone());
        if services.contains_key(&key) {
            return Err(ConvertError::Duplicate {
                field: path,
                detail: format!("service {}/{} is in the chunk twice", key.0, key.1),
            });
        }
        services.insert(key, Arc::new(service));
    }
    let mut seen: HashSet<InstanceRef> = HashSet::new();
    let mut items = Vec::with_capacity(d.instances.len());
    for (n, wire) in d.instances.into_iter().enumerate() {
        let path = format!("chunk.instances[{n}]");
        let instance = instance_at(At(&path), wire)?;
        let Some(service) = services.get(&(instance.tenant.clone(), instance.service_id.clone()))
        else {
            return Err(BoundsError::UnknownService {
                field: At(&path).field("service_id"),
                detail: format!(
                    "service {}/{} is not in the chunk",
                    instance.tenant, instance.service_id
                ),
            }
            .into());
        };
        if !seen.insert(instance.reference()) {
            return Err(ConvertError::Duplicate {
                field: path,
                detail: format!("instance {} is in the chunk twice", instance.reference()),
            });
        }
        items.push((service.clone(), instance));
    }
    Ok(items)
}

/// A validated `Push` is the engine's model type.
pub use crate::sync::link::Push;

/// The origin data centre of a push: a cluster name.
fn check_origin(at: At, origin: &str) -> Result<(), ConvertError> {
    bounds::check_max_bytes(at.bounds(), "origin", origin, MAX_ORIGIN_BYTES)?;
    let rule = bounds::plain(true, MAX_ORIGIN_BYTES);
    Ok(bounds::check_text(at.bounds(), "origin", origin, &rule)?)
}

/// Checks that `seqs` are consecutive after `from_seq` and returns the last one (`from_seq`
/// when there are none).
fn check_consecutive(
    at: At,
    from_seq: u64,
    seqs: impl Iterator<Item = u64>,
) -> Result<u64, ConvertError> {
    let mut last = from_seq;
    for (n, seq) in seqs.enumerate() {
        let Some(expected) = last.checked_add(1) else {
            return Err(at.bad_sequence(
                &format!("changes[{n}].seq"),
                format!("{seq}, but nothing follows {last}"),
            ));
        };
        if seq != expected {
            return Err(at.bad_sequence(
                &format!("changes[{n}].seq"),
                format!("{seq}, expected {expected}"),
            ));
        }
        last = seq;
    }
    Ok(last)
}

fn changes_at(
    path: &str,
    changes: Vec<proto::Change>,
) -> Result<Vec<(u64, u64, Export)>, ConvertError> {
    changes
        .into_iter()
        .enumerate()
        .map(|(n, c)| change_at(At(&format!("{path}.changes[{n}]")), c))
        .collect()
}

/// Validates a `PushRequest`: origin non-empty (at most [`MAX_ORIGIN_BYTES`], no control
/// characters), epoch at least 1, 1 to [`MAX_PUSH_CHANGES`] changes numbered exactly
/// `from_seq + 1, from_seq + 2, ..., to_seq`, every change valid.
pub fn push_from_wire(p: proto::PushRequest) -> Result<Push, ConvertError> {
    let at = At("push");
    check_origin(at, &p.origin)?;
    if p.epoch == 0 {
        return Err(at.bad_sequence("epoch", "0, epochs start at 1".to_owned()));
    }
    if p.changes.is_empty() {
        return Err(at.missing("changes", "empty"));
    }
    if p.changes.len() > MAX_PUSH_CHANGES {
        return Err(at.too_large(
            "changes",
            format!("{} entries, at most {MAX_PUSH_CHANGES}", p.changes.len()),
        ));
    }
    let last = check_consecutive(at, p.from_seq, p.changes.iter().map(|c| c.seq))?;
    if p.to_seq != last {
        return Err(at.bad_sequence(
            "to_seq",
            format!("{}, but the last change is {last}", p.to_seq),
        ));
    }
    Ok(Push {
        changes: changes_at("push", p.changes)?,
        origin: p.origin,
        epoch: p.epoch,
        from_seq: p.from_seq,
        to_seq: p.to_seq,
    })
}

/// A `PushRequest` of `changes` already in wire form ([`change_to_wire`], consecutive after
/// `from_seq`); `to_seq` is the last change's sequence, or `from_seq` when there is none.
pub fn push_request(
    origin: &str,
    epoch: u64,
    from_seq: u64,
    changes: Vec<proto::Change>,
) -> proto::PushRequest {
    proto::PushRequest {
        origin: origin.to_owned(),
        epoch,
        from_seq,
        to_seq: changes.last().map_or(from_seq, |c| c.seq),
        changes,
    }
}

/// [`push_request`] of model changes `(seq, observed_ms, export)`, for tests.
#[cfg(test)]
pub fn push_to_wire(
    origin: &str,
    epoch: u64,
    from_seq: u64,
    changes: &[(u64, u64, Export)],
) -> proto::PushRequest {
    let changes = changes
        .iter()
        .map(|(seq, observed_ms, export)| change_to_wire(*seq, *observed_ms, export))
        .collect();
    push_request(origin, epoch, from_seq, changes)
}

/// Validates a `ChangeBatch` of a `Pull`: at most [`MAX_PUSH_CHANGES`] changes with
/// consecutive sequences, every change valid. Whether the first one continues the asker's
/// cursor (and the previous batch) is for the caller to check. An empty batch is no change.
pub fn increments_from_wire(
    b: proto::ChangeBatch,
) -> Result<Vec<(u64, u64, Export)>, ConvertError> {
    let at = At("increments");
    if b.changes.len() > MAX_PUSH_CHANGES {
        return Err(at.too_large(
            "changes",
            format!("{} entries, at most {MAX_PUSH_CHANGES}", b.changes.len()),
        ));
    }
    if let Some(first) = b.changes.first() {
        // A first sequence of 0 is refused here: nothing comes before it.
        let before = first.seq.saturating_sub(1);
        check_consecutive(at, before, b.changes.iter().map(|c| c.seq))?;
    }
    changes_at("increments", b.changes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::bounds::{check_instance, check_item, check_service};
    use crate::sync::export::Digest64;

    fn tenant() -> Tenant {
        Tenant::new("acme", "shop")
    }

    fn service(id: &str) -> Service {
        Service {
            tenant: tenant(),
            service_id: id.into(),
            app: "mall".into(),
            name: format!("svc-{id}"),
            version: "1.0.2".into(),
            environment: "production".into(),
            alias: "mall:orders".into(),
            description: "Orders.\nAll of them.".into(),
            level: "BACK".into(),
            status: "UP".into(),
            properties: BTreeMap::from([("allowCrossApp".into(), "true".into())]),
            schemas: Vec::new(),
            schema_summaries: BTreeMap::from([("hello".into(), "abc".into())]),
            tags: BTreeMap::from([("team".into(), "pay".into())]),
            rules: vec![AccessRule {
                rule_type: "BLACK".into(),
                attribute: "ServiceName".into(),
                pattern: "^bad".into(),
                description: String::new(),
            }],
            framework: None,
            register_by: String::new(),
        }
    }

    fn instance(service_id: &str, id: &str) -> Instance {
        Instance {
            tenant: tenant(),
            service_id: service_id.into(),
            instance_id: id.into(),
            endpoints: vec![
                "rest://10.0.0.1:8080?sslEnabled=false".into(),
                "highway://10.0.0.1:7070".into(),
            ],
            host_name: "node-1".into(),
            status: "UP".into(),
            properties: BTreeMap::from([("zone".into(), "a".into()), ("k".into(), "".into())]),
            health_check: Some(HealthCheck {
                mode: "push".into(),
                interval: 30,
                times: 3,
                port: 0,
                url: String::new(),
            }),
            data_center: Some(DataCenterInfo {
                name: "dc1".into(),
                region: "eu-west".into(),
                available_zone: "az_1".into(),
            }),
            version: "1.0.2".into(),
            mod_timestamp: None,
        }
    }

    fn upsert(service_id: &str, id: &str) -> Export {
        Export::Upsert {
            service: Arc::new(service(service_id)),
            instance: Arc::new(instance(service_id, id)),
        }
    }

    fn reason<T: std::fmt::Debug, E: Into<ConvertError>>(r: Result<T, E>) -> &'static str {
        match r {
            Ok(value) => panic!("should be refused: {value:?}"),
            Err(e) => e.into().reason(),
        }
    }

    #[test]
    fn service_round_trips() {
        let s = service("0123456789abcdef");
        let wire = service_to_wire(&s);
        assert_eq!(wire.plugin_name, "servicecenter");
        assert_eq!(wire.domain_project, "acme/shop");
        assert_eq!(service_from_wire(wire), Ok(s));
        let bare = Service {
            environment: String::new(),
            alias: String::new(),
            description: String::new(),
            level: String::new(),
            status: String::new(),
            properties: BTreeMap::new(),
            ..service("s")
        };
        assert_eq!(service_from_wire(service_to_wire(&bare)), Ok(bare));
    }

    #[test]
    fn uncarried_service_fields_come_back_empty() {
        let s = Service {
            schemas: vec!["a".into()],
            framework: Some(("java-chassis".into(), "2.8".into())),
            register_by: "SDK".into(),
            ..service("s")
        };
        assert_eq!(service_from_wire(service_to_wire(&s)), Ok(service("s")));
    }

    fn schema(id: &str, bytes: usize) -> Schema {
        Schema {
            id: id.into(),
            summary: format!("sum{id}"),
            content: "c".repeat(bytes),
        }
    }

    #[test]
    fn contracts_are_split_across_replies_and_checked_against_what_was_asked() {
        let asked: Vec<String> = ["a", "b", "c"].iter().map(|s| (*s).to_owned()).collect();
        let big = MAX_CONTRACTS_BYTES / 2;
        let reply = contracts_reply(&[schema("a", big), schema("b", big), schema("c", 10)]);
        assert_eq!(
            reply.contracts.len(),
            1,
            "the second does not fit with the first"
        );
        assert_eq!(reply.more, vec!["b".to_owned(), "c".to_owned()]);
        let (got, more) = contracts_from_wire(reply, &asked).expect("valid");
        assert_eq!((got, more.len()), (vec![schema("a", big)], 2));
        let rest = contracts_reply(&[schema("b", big), schema("c", 10)]);
        assert!(rest.more.is_empty());
        assert_eq!(contracts_from_wire(rest, &more).expect("valid").0.len(), 2);

        // Not asked for, too large, or nothing carried with more to come: refused.
        let stray = contracts_reply(&[schema("z", 1)]);
        assert_eq!(reason(contracts_from_wire(stray, &asked)), "duplicate");
        let huge = contracts_reply(&[schema("a", bounds::MAX_SCHEMA_BYTES + 1)]);
        assert_eq!(reason(contracts_from_wire(huge, &asked)), "too_large");
        let empty = proto::ContractsReply {
            contracts: Vec::new(),
            more: vec!["a".into()],
        };
        assert_eq!(reason(contracts_from_wire(empty, &asked)), "bad_sequence");
        let request = contracts_request(&tenant(), "s", &["hello".into()]);
        assert!(contracts_request_from_wire(request).is_ok());
        let request = contracts_request(&tenant(), "s", &["bad\u{7}id".into()]);
        assert_eq!(reason(contracts_request_from_wire(request)), "bad_id");
    }

    #[test]
    fn too_many_tags_rules_or_summaries_are_refused() {
        let mut wire = service_to_wire(&service("s"));
        wire.tags = (0..=MAX_TAGS)
            .map(|n| (n.to_string(), String::new()))
            .collect();
        assert_eq!(reason(service_from_wire(wire)), "too_large");
        let mut wire = service_to_wire(&service("s"));
        wire.rules = vec![proto::AccessRule::default(); MAX_RULES + 1];
        assert_eq!(reason(service_from_wire(wire)), "too_large");
        let mut wire = service_to_wire(&service("s"));
        wire.schema_summaries = (0..=MAX_SCHEMAS)
            .map(|n| (n.to_string(), String::new()))
            .collect();
        assert_eq!(reason(service_from_wire(wire)), "too_large");
        let mut wire = service_to_wire(&service("s"));
        wire.rules[0].rule_type = String::new();
        assert_eq!(reason(service_from_wire(wire)), "missing_field");
    }

    #[test]
    fn instance_round_trips() {
        let i = instance("s1", "i-1");
        let wire = instance_to_wire(&i);
        assert_eq!(wire.data_center_zone, "az_1");
        assert_eq!(instance_from_wire(wire), Ok(i));
        let bare = Instance {
            endpoints: Vec::new(),
            properties: BTreeMap::new(),
            health_check: None,
            data_center: None,
            version: String::new(),
            ..instance("s1", "i-2")
        };
        let wire = instance_to_wire(&bare);
        assert_eq!(
            (wire.data_center_name.as_str(), wire.health_check.is_none()),
            ("", true)
        );
        assert_eq!(instance_from_wire(wire), Ok(bare));
        let stamped = Instance {
            mod_timestamp: Some(1_700_000_000),
            ..instance("s1", "i-3")
        };
        assert_eq!(
            instance_from_wire(instance_to_wire(&stamped)),
            Ok(instance("s1", "i-3"))
        );
    }

    #[test]
    fn changes_round_trip() {
        let exports = [
            upsert("s1", "i1"),
            Export::Service(Arc::new(service("s1"))),
            Export::Removed(instance("s1", "i1").reference()),
        ];
        for (n, export) in exports.into_iter().enumerate() {
            let seq = 10 + u64::try_from(n).unwrap();
            let wire = change_to_wire(seq, 1_700_000_000_123, &export);
            assert_eq!(change_from_wire(wire), Ok((seq, 1_700_000_000_123, export)));
        }
    }

    #[test]
    fn malformed_changes_are_refused() {
        let mut c = change_to_wire(1, 0, &upsert("s1", "i1"));
        c.kind = None;
        let e = change_from_wire(c).unwrap_err();
        assert_eq!((e.reason(), e.field()), ("missing_field", "change.kind"));

        let c = change_to_wire(0, 0, &upsert("s1", "i1"));
        assert_eq!(reason(change_from_wire(c)), "bad_sequence");

        for drop_service in [true, false] {
            let mut c = change_to_wire(1, 0, &upsert("s1", "i1"));
            if let Some(proto::change::Kind::Upsert(u)) = &mut c.kind {
                if drop_service {
                    u.service = None;
                } else {
                    u.instance = None;
                }
            }
            assert_eq!(reason(change_from_wire(c)), "missing_field");
        }

        let mismatched = Export::Upsert {
            service: Arc::new(service("s1")),
            instance: Arc::new(instance("s2", "i1")),
        };
        let e = change_from_wire(change_to_wire(1, 0, &mismatched)).unwrap_err();
        assert_eq!(e.reason(), "unknown_service");
        assert_eq!(e.field(), "change.upsert.instance.service_id");

        let mut removed = instance("s1", "i1").reference();
        removed.instance_id = "a\u{7}b".into();
        let c = change_to_wire(1, 0, &Export::Removed(removed));
        let e = change_from_wire(c).unwrap_err();
        assert_eq!(
            (e.reason(), e.field()),
            ("bad_id", "change.removed.instance_id")
        );
    }

    #[test]
    fn empty_instance_id_names_the_field() {
        let mut wire = instance_to_wire(&instance("s1", "i1"));
        wire.instance_id.clear();
        let e = instance_from_wire(wire).unwrap_err();
        assert_eq!(e.to_string(), "instance.instance_id: empty");
        assert_eq!(e.reason(), "missing_field");
    }

    /// Every instance rule, by the reason it gives.
    #[test]
    fn bad_instances_are_refused() {
        type Edit = fn(&mut proto::SyncInstance);
        let cases: &[(&str, &str, Edit)] = &[
            ("missing_field", "instance.service_id", |w| {
                w.service_id.clear()
            }),
            ("missing_field", "instance.host_name", |w| {
                w.host_name.clear()
            }),
            ("missing_field", "instance.host_name", |w| {
                w.host_name = "   ".into()
            }),
            ("missing_field", "instance.status", |w| w.status.clear()),
            ("missing_field", "instance.domain_project", |w| {
                w.domain_project.clear()
            }),
            ("missing_field", "instance.endpoints[1]", |w| {
                w.endpoints[1] = " ".into()
            }),
            ("bad_id", "instance.service_id", |w| {
                w.service_id = "s\u{0}".into()
            }),
            ("bad_tenant", "instance.domain_project", |w| {
                w.domain_project = "default".into()
            }),
            ("bad_tenant", "instance.domain_project", |w| {
                w.domain_project = "a/b/c".into()
            }),
            ("bad_tenant", "instance.domain_project", |w| {
                w.domain_project = "/b".into()
            }),
            ("bad_tenant", "instance.domain_project", |w| {
                w.domain_project = format!("a/{}", "b".repeat(300))
            }),
            ("bad_value", "instance.host_name", |w| {
                w.host_name = "a\nb".into()
            }),
            ("bad_value", "instance.endpoints[0]", |w| {
                w.endpoints[0] = "rest://a\u{1b}[31m".into()
            }),
            ("bad_value", "instance.health_check.interval", |w| {
                w.health_check.as_mut().unwrap().interval = -30
            }),
            ("bad_value", "instance.health_check.times", |w| {
                w.health_check.as_mut().unwrap().times = -1
            }),
            ("bad_value", "instance.health_check.port", |w| {
                w.health_check.as_mut().unwrap().port = 70_000
            }),
            ("bad_value", "instance.health_check.port", |w| {
                w.health_check.as_mut().unwrap().port = i32::MIN
            }),
            ("too_large", "instance.status", |w| {
                w.status = "U".repeat(33)
            }),
            ("too_large", "instance.endpoints", |w| {
                w.endpoints = vec!["rest://a:1".into(); 65]
            }),
            ("too_large", "instance.endpoints[0]", |w| {
                w.endpoints[0] = format!("rest://{}", "a".repeat(1100))
            }),
            ("too_large", "instance.properties", |w| {
                w.properties = (0..257).map(|n| (n.to_string(), String::new())).collect()
            }),
            ("too_large", "instance.properties", |w| {
                w.properties.insert("big".into(), "v".repeat(5000));
            }),
            ("too_large", "instance.properties", |w| {
                w.properties.insert("k".repeat(1025), String::new());
            }),
            ("too_large", "instance.properties", |w| {
                w.properties = (0..20).map(|n| (n.to_string(), "v".repeat(4000))).collect()
            }),
        ];
        for (expected, field, edit) in cases {
            let mut wire = instance_to_wire(&instance("s1", "i1"));
            edit(&mut wire);
            let shown = format!("{wire:?}");
            let e = instance_from_wire(wire).unwrap_err();
            assert_eq!(
                (e.reason(), e.field()),
                (*expected, *field),
                "{e} for {shown}"
            );
            assert!(e.to_string().starts_with(field), "{e}");
        }
    }

    #[test]
    fn bad_services_are_refused() {
        type Edit = fn(&mut proto::SyncService);
        let cases: &[(&str, &str, Edit)] = &[
            ("missing_field", "service.name", |w| w.name.clear()),
            ("missing_field", "service.service_id", |w| {
                w.service_id.clear()
            }),
            ("bad_tenant", "service.domain_project", |w| {
                w.domain_project = "acme/".into()
            }),
            ("bad_value", "service.name", |w| w.name = "a\tb".into()),
            ("too_large", "service.properties", |w| {
                w.properties.insert("v".into(), "v".repeat(4097));
            }),
        ];
        for (expected, field, edit) in cases {
            let mut wire = service_to_wire(&service("s1"));
            edit(&mut wire);
            let e = service_from_wire(wire).unwrap_err();
            assert_eq!((e.reason(), e.field()), (*expected, *field), "{e}");
        }
    }

    #[test]
    fn sc_leniency_is_kept() {
        // Client-chosen service ids may hold anything but whitespace; versions up to four
        // parts; any upper-case status; unusual but valid texts.
        let s = Service {
            service_id: "my-svc:v1/ü".into(),
            version: "1.2.3.4".into(),
            status: "DOWN".into(),
            description: "d\u{0}".repeat(128),
            ..service("x")
        };
        assert_eq!(service_from_wire(service_to_wire(&s)), Ok(s.clone()));
        let i = Instance {
            service_id: s.service_id.clone(),
            instance_id: "A.b_c-9".into(),
            status: "TESTING".into(),
            host_name: " host with spaces ".into(),
            health_check: Some(HealthCheck {
                mode: "pull".into(),
                interval: 1,
                times: 0,
                port: 65_535,
                url: "/health".into(),
            }),
            properties: BTreeMap::from([("".into(), "line\nbreak".into())]),
            ..instance("x", "i")
        };
        assert_eq!(instance_from_wire(instance_to_wire(&i)), Ok(i.clone()));
        assert_eq!(check_item(&s, &i), Ok(()));
    }

    /// The rules of a registry kind are not wire rules: what ServiceComb would refuse (and
    /// `registry::servicecomb::rules` does) travels, so that a data centre of another kind can
    /// receive it. Each of these was refused here before the split.
    #[test]
    fn kind_rules_are_not_checked_on_the_wire() {
        let s = Service {
            service_id: "s".repeat(65),
            app: String::new(),
            version: "latest".into(),
            environment: "prod".into(),
            status: "Up".into(),
            level: "back end".into(),
            description: "d".repeat(257),
            ..service("x")
        };
        assert_eq!(service_from_wire(service_to_wire(&s)), Ok(s.clone()));
        let i = Instance {
            service_id: s.service_id.clone(),
            instance_id: "host:app:8080".into(),
            status: "OUT_OF_SERVICE".into(),
            host_name: "h".repeat(65),
            health_check: Some(HealthCheck {
                mode: "tcp".into(),
                interval: 0,
                times: 0,
                port: 8080,
                url: "/a b".into(),
            }),
            data_center: Some(DataCenterInfo {
                name: "dc 1".into(),
                region: String::new(),
                available_zone: "z".repeat(129),
            }),
            ..instance("x", "i")
        };
        assert_eq!(instance_from_wire(instance_to_wire(&i)), Ok(i.clone()));
        assert_eq!(check_item(&s, &i), Ok(()));
        let mut removed = i.reference();
        removed.instance_id = "a/b".into();
        let c = change_to_wire(1, 0, &Export::Removed(removed.clone()));
        assert_eq!(change_from_wire(c), Ok((1, 0, Export::Removed(removed))));
    }

    #[test]
    fn out_of_range_model_values_never_panic() {
        let mut i = instance("s1", "i1");
        i.health_check = Some(HealthCheck {
            mode: "push".into(),
            interval: u32::MAX,
            times: u32::MAX,
            port: u32::MAX,
            url: String::new(),
        });
        let wire = instance_to_wire(&i);
        let h = wire.health_check.clone().unwrap();
        assert_eq!(
            (h.interval, h.times, h.port),
            (i32::MAX, i32::MAX, i32::MAX)
        );
        assert_eq!(reason(instance_from_wire(wire)), "bad_value");
        assert_eq!(reason(check_instance(&i)), "bad_value");
    }

    #[test]
    fn check_item_matches_the_receiving_side() {
        assert_eq!(check_item(&service("s1"), &instance("s1", "i1")), Ok(()));
        assert_eq!(
            reason(check_item(&service("s1"), &instance("s2", "i1"))),
            "unknown_service"
        );
        let bad = Service {
            name: "a\u{0}".into(),
            ..service("s1")
        };
        assert_eq!(reason(check_service(&bad)), "bad_value");
        let bad = Instance {
            tenant: Tenant::new("a/b", "c"),
            ..instance("s1", "i1")
        };
        assert_eq!(reason(check_instance(&bad)), "bad_tenant");
        let bad = Instance {
            host_name: String::new(),
            ..instance("s1", "i1")
        };
        assert_eq!(reason(check_instance(&bad)), "missing_field");
    }

    fn items(per_service: &[(&str, usize)]) -> Vec<(Service, Instance)> {
        per_service
            .iter()
            .flat_map(|(s, n)| (0..*n).map(move |k| (service(s), instance(s, &format!("{s}-{k}")))))
            .collect()
    }

    fn digest(items: &[(Service, Instance)]) -> Digest64 {
        let mut d = Digest64::default();
        for (s, i) in items {
            d.add(s, i);
        }
        d
    }

    /// Chunks are made one at a time from an owned iterator (a streamed `Pull`): each
    /// takes from the items only what it holds (plus the one it stops before), and services
    /// interleaved out of order are still carried once per chunk.
    #[test]
    fn snapshot_chunks_are_made_as_they_are_asked_for() {
        let mut all = items(&[("s1", 300), ("s2", 300), ("s3", 300)]);
        // Interleave: s1, s2, s3, s1, ... so the services are not grouped.
        all.sort_by(|a, b| {
            let k = |i: &Instance| i.instance_id.rsplit('-').next().map(str::to_owned);
            k(&a.1)
                .cmp(&k(&b.1))
                .then(a.1.instance_id.cmp(&b.1.instance_id))
        });
        let taken = std::cell::Cell::new(0usize);
        let source = all
            .clone()
            .into_iter()
            .inspect(|_| taken.set(taken.get() + 1));
        let mut chunks = SnapshotChunks::new(source);
        let first = chunks.next().expect("a chunk");
        assert_eq!(first.instances.len(), MAX_CHUNK_INSTANCES);
        assert!(taken.get() <= MAX_CHUNK_INSTANCES + 1, "{}", taken.get());
        let mut ids: Vec<&str> = first
            .services
            .iter()
            .map(|s| s.service_id.as_str())
            .collect();
        ids.sort_unstable();
        assert_eq!(ids, ["s1", "s2", "s3"], "each service once");
        let rest: Vec<proto::SyncData> = chunks.collect();
        let mut streamed = vec![first];
        streamed.extend(rest);
        assert_eq!(streamed, snapshot_chunks(&all));
        let back: Vec<(Service, Instance)> = streamed
            .into_iter()
            .flat_map(|c| chunk_from_wire(c).expect("valid chunk"))
            .map(|(s, i)| ((*s).clone(), i))
            .collect();
        assert_eq!(digest(&back), digest(&all));
    }

    #[test]
    fn snapshots_are_chunked_with_their_services() {
        let all = items(&[("s1", 400), ("s2", 400), ("s3", 401)]);
        let chunks = snapshot_chunks(&all);
        let shape: Vec<(usize, Vec<&str>)> = chunks
            .iter()
            .map(|c| {
                (
                    c.instances.len(),
                    c.services.iter().map(|s| s.service_id.as_str()).collect(),
                )
            })
            .collect();
        assert_eq!(
            shape,
            vec![
                (500, vec!["s1", "s2"]),
                (500, vec!["s2", "s3"]),
                (201, vec!["s3"])
            ]
        );
        let back: Vec<(Service, Instance)> = chunks
            .into_iter()
            .flat_map(|c| chunk_from_wire(c).unwrap())
            .map(|(s, i)| (Arc::unwrap_or_clone(s), i))
            .collect();
        assert_eq!(back, all);
        assert_eq!(digest(&back), digest(&all));
        assert!(snapshot_chunks::<Service, Instance>(&[]).is_empty());
    }

    #[test]
    fn fat_instances_make_smaller_chunks() {
        let mut all = items(&[("s1", 300)]);
        for (_, i) in &mut all {
            i.properties = (0..15).map(|n| (n.to_string(), "v".repeat(4000))).collect();
        }
        let chunks = snapshot_chunks(&all);
        assert!(chunks.len() > 1, "{} chunks", chunks.len());
        let bytes: usize = all
            .iter()
            .map(|(s, i)| framed_len(&instance_to_wire(i)) + framed_len(&service_to_wire(s)))
            .sum();
        assert!(
            bytes > 2 * MAX_CHUNK_BYTES,
            "the test needs fat items: {bytes}"
        );
        for c in &chunks {
            assert!(c.encoded_len() <= MAX_CHUNK_BYTES, "{}", c.encoded_len());
            assert_eq!(c.services.len(), 1);
        }
        let back: Vec<_> = chunks
            .into_iter()
            .flat_map(|c| chunk_from_wire(c).unwrap())
            .map(|(s, i)| (Arc::unwrap_or_clone(s), i))
            .collect();
        assert_eq!(back, all);
    }

    #[test]
    fn bad_chunks_are_refused() {
        let mut c = snapshot_chunks(&items(&[("s1", 2), ("s2", 1)])).remove(0);
        c.services.retain(|s| s.service_id != "s2");
        let e = chunk_from_wire(c).unwrap_err();
        assert_eq!(
            (e.reason(), e.field()),
            ("unknown_service", "chunk.instances[2].service_id")
        );

        // Same service id, other tenant: not its service.
        let mut c = snapshot_chunks(&items(&[("s1", 1)])).remove(0);
        c.instances[0].domain_project = "default/default".into();
        assert_eq!(reason(chunk_from_wire(c)), "unknown_service");

        let mut c = snapshot_chunks(&items(&[("s1", 2)])).remove(0);
        c.instances[1].host_name.clear();
        let e = chunk_from_wire(c).unwrap_err();
        assert_eq!(e.to_string(), "chunk.instances[1].host_name: empty");

        let mut c = snapshot_chunks(&items(&[("s1", 1)])).remove(0);
        c.instances.push(c.instances[0].clone());
        assert_eq!(reason(chunk_from_wire(c)), "duplicate");

        let mut c = snapshot_chunks(&items(&[("s1", 1)])).remove(0);
        c.services.push(c.services[0].clone());
        assert_eq!(reason(chunk_from_wire(c)), "duplicate");

        let mut c = snapshot_chunks(&items(&[("s1", 1)])).remove(0);
        c.instances = vec![c.instances[0].clone(); MAX_CHUNK_INSTANCES + 1];
        let e = chunk_from_wire(c).unwrap_err();
        assert_eq!((e.reason(), e.field()), ("too_large", "chunk.instances"));
    }

    fn numbered(from_seq: u64, n: u64) -> Vec<(u64, u64, Export)> {
        (1..=n)
            .map(|k| (from_seq + k, 1_000 + k, upsert("s1", &format!("i{k}"))))
            .collect()
    }

    #[test]
    fn pushes_round_trip() {
        let changes = numbered(41, 3);
        let wire = push_to_wire("dc-east", 7, 41, &changes);
        assert_eq!(wire.to_seq, 44);
        assert_eq!(
            push_from_wire(wire),
            Ok(Push {
                origin: "dc-east".into(),
                epoch: 7,
                from_seq: 41,
                to_seq: 44,
                changes
            })
        );
        assert_eq!(push_to_wire("dc", 1, 9, &[]).to_seq, 9);
    }

    #[test]
    fn push_sequences_are_checked() {
        let good = || push_to_wire("dc-east", 7, 41, &numbered(41, 3));
        type Edit = fn(&mut proto::PushRequest);
        let cases: &[(&str, &str, Edit)] = &[
            ("bad_sequence", "push.changes[0].seq", |p| p.from_seq = 40),
            ("bad_sequence", "push.changes[0].seq", |p| p.from_seq = 42),
            ("bad_sequence", "push.changes[2].seq", |p| {
                p.changes[2].seq = 45
            }),
            ("bad_sequence", "push.changes[1].seq", |p| {
                p.changes.swap(1, 2)
            }),
            ("bad_sequence", "push.to_seq", |p| p.to_seq = 45),
            ("bad_sequence", "push.to_seq", |p| p.to_seq = 43),
            ("bad_sequence", "push.epoch", |p| p.epoch = 0),
            ("bad_sequence", "push.changes[0].seq", |p| {
                p.from_seq = u64::MAX;
                p.changes.truncate(1);
                p.changes[0].seq = 0;
            }),
            ("missing_field", "push.changes", |p| p.changes.clear()),
            ("missing_field", "push.origin", |p| p.origin.clear()),
            ("too_large", "push.origin", |p| p.origin = "o".repeat(129)),
            ("bad_value", "push.origin", |p| p.origin = "dc\n1".into()),
            ("missing_field", "push.changes[1].kind", |p| {
                p.changes[1].kind = None
            }),
            ("too_large", "push.changes", |p| {
                let changes = numbered(0, 1001);
                *p = push_to_wire("dc", 1, 0, &changes);
            }),
        ];
        for (expected, field, edit) in cases {
            let mut p = good();
            edit(&mut p);
            let e = push_from_wire(p).unwrap_err();
            assert_eq!((e.reason(), e.field()), (*expected, *field), "{e}");
        }
        let full = numbered(0, 1000);
        assert!(push_from_wire(push_to_wire("dc", 1, 0, &full)).is_ok());
    }

    #[test]
    fn increments_are_checked() {
        let batch = |changes: &[(u64, u64, Export)]| proto::ChangeBatch {
            changes: changes
                .iter()
                .map(|(s, o, e)| change_to_wire(*s, *o, e))
                .collect(),
        };
        let changes = numbered(5, 4);
        assert_eq!(increments_from_wire(batch(&changes)), Ok(changes.clone()));
        assert_eq!(
            increments_from_wire(proto::ChangeBatch::default()),
            Ok(Vec::new())
        );

        let mut gap = batch(&changes);
        gap.changes.remove(2);
        let e = increments_from_wire(gap).unwrap_err();
        assert_eq!(
            (e.reason(), e.field()),
            ("bad_sequence", "increments.changes[2].seq")
        );

        let mut zero = batch(&changes[..1]);
        zero.changes[0].seq = 0;
        assert_eq!(reason(increments_from_wire(zero)), "bad_sequence");

        let mut bad = batch(&changes);
        bad.changes[3].kind = None;
        let e = increments_from_wire(bad).unwrap_err();
        assert_eq!(
            e.to_string(),
            "increments.changes[3].kind: missing (upsert, service or removed)"
        );

        assert_eq!(
            reason(increments_from_wire(batch(&numbered(0, 1001)))),
            "too_large"
        );
    }
}

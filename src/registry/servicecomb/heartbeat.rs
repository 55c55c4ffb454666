//! Batch heartbeats (reference §3.8) in both SC dialects, told apart by the answer's shape:
//!
//! - SC 1.4.8 answers `200` with an empty body when every instance is known, and `400017`
//!   without saying which ones are not. The adapter then asks once more, with a batch find
//!   of the same instances (§3.6, `instances` section): each `failed` entry is unknown.
//! - SC 2.x answers `200` with one element per instance; an `errMessage` marks a failure.
//!
//! Any failure reported for an instance counts as unknown: the caller registers it again,
//! which SC treats as a heartbeat when the instance does exist (§3.1), so a wrong guess
//! costs one call and no harm.

use std::collections::{BTreeMap, HashSet};

use reqwest::Method;

use super::client::{self, Request};
use super::wire::{
    BatchFindReply, BatchFindRequest, FindInstanceEntry, HeartbeatSetReply, HeartbeatSetRequest,
    InstanceKey,
};
use super::{Inner, parse, to_json};
use crate::registry::{HeartbeatReport, InstanceRef, RegistryError, Tenant};

/// Renews `instances`, tenant by tenant and in batches of `heartbeat_batch`, and reports the
/// unknown ones in the order given.
///
/// # Errors
/// The first call that fails for another reason than unknown instances.
pub(super) async fn heartbeat(
    inner: &Inner,
    instances: &[InstanceRef],
) -> Result<HeartbeatReport, RegistryError> {
    let mut by_tenant: BTreeMap<&Tenant, Vec<&InstanceRef>> = BTreeMap::new();
    let mut seen = HashSet::new();
    for r in instances {
        // SC ignores duplicate pairs; not sending them keeps batches small.
        if seen.insert(r) {
            by_tenant.entry(&r.tenant).or_default().push(r);
        }
    }
    let mut unknown: HashSet<&InstanceRef> = HashSet::new();
    for (tenant, refs) in by_tenant {
        for chunk in refs.chunks(inner.config.heartbeat_batch) {
            unknown.extend(heartbeat_chunk(inner, tenant, chunk).await?);
        }
    }
    Ok(HeartbeatReport {
        unknown: instances
            .iter()
            .filter(|r| unknown.remove(r))
            .cloned()
            .collect(),
    })
}

/// One batch heartbeat call for instances of one tenant; returns the unknown ones.
async fn heartbeat_chunk<'a>(
    inner: &Inner,
    tenant: &Tenant,
    chunk: &[&'a InstanceRef],
) -> Result<Vec<&'a InstanceRef>, RegistryError> {
    let keys = chunk
        .iter()
        .map(|r| InstanceKey {
            service_id: &r.service_id,
            instance_id: &r.instance_id,
        })
        .collect();
    let body = to_json("heartbeat", &HeartbeatSetRequest { instances: keys })?;
    match inner
        .call(Request::new("heartbeat", Method::PUT, tenant, &["heartbeats"]).json(body))
        .await
    {
        Ok(reply) => unknown_from_reply(chunk, &reply),
        Err(fault) if fault.is(client::INSTANCE_NOT_EXIST) => {
            find_unknown(inner, tenant, chunk).await
        }
        Err(fault) => Err(fault.into()),
    }
}

/// A `200` answer: empty (1.4.8, all known) or a per-instance list (2.x).
fn unknown_from_reply<'a>(
    chunk: &[&'a InstanceRef],
    reply: &[u8],
) -> Result<Vec<&'a InstanceRef>, RegistryError> {
    if reply.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    let reply: HeartbeatSetReply = parse("heartbeat", reply)?;
    let failed: HashSet<(&str, &str)> = reply
        .instances
        .iter()
        .filter(|r| !r.err_message.is_empty())
        .map(|r| (r.service_id.as_str(), r.instance_id.as_str()))
        .collect();
    Ok(chunk
        .iter()
        .filter(|r| failed.contains(&(r.service_id.as_str(), r.instance_id.as_str())))
        .copied()
        .collect())
}

/// Asks which instances of `chunk` SC does not know, with one batch find (1.4.8 path).
async fn find_unknown<'a>(
    inner: &Inner,
    tenant: &Tenant,
    chunk: &[&'a InstanceRef],
) -> Result<Vec<&'a InstanceRef>, RegistryError> {
    let entries = chunk
        .iter()
        .map(|r| FindInstanceEntry {
            instance: InstanceKey {
                service_id: &r.service_id,
                instance_id: &r.instance_id,
            },
            rev: "",
        })
        .collect();
    let body = to_json(
        "heartbeat_check",
        &BatchFindRequest {
            services: Vec::new(),
            instances: entries,
        },
    )?;
    let query = [("type", "query")];
    let path = ["instances", "action"];
    let reply = inner
        .call(
            Request::new("heartbeat_check", Method::POST, tenant, &path)
                .query(&query)
                .json(body),
        )
        .await?;
    let reply: BatchFindReply = parse("heartbeat_check", &reply)?;
    unknown_from_find(chunk, reply)
}

/// Reads the batch find of [`find_unknown`]. An instance is known only when SC returned it
/// under its own id: SC looks one instance up by key prefix, so asking for `pfx-1` when only
/// `pfx-10` exists answers `pfx-10` (while its heartbeat answers `400017`). Trusting such a
/// hit would leave `pfx-1` unregistered for good.
fn unknown_from_find<'a>(
    chunk: &[&'a InstanceRef],
    reply: BatchFindReply,
) -> Result<Vec<&'a InstanceRef>, RegistryError> {
    let mut unknown = Vec::new();
    let at = |index: i64| {
        usize::try_from(index)
            .ok()
            .and_then(|i| chunk.get(i).copied())
            .ok_or_else(|| {
                RegistryError::Protocol(format!(
                    "heartbeat_check: index {index} outside the {} instances asked",
                    chunk.len()
                ))
            })
    };
    for group in reply.instances.failed {
        let gone = matches!(
            group.error.error_code,
            Some(client::INSTANCE_NOT_EXIST | client::SERVICE_NOT_EXIST)
        );
        if !gone {
            return Err(RegistryError::Unavailable(format!(
                "heartbeat_check: SC could not look instances up: {:?} {} ({})",
                group.error.error_code, group.error.error_message, group.error.detail
            )));
        }
        for index in group.indexes {
            unknown.push(at(index)?);
        }
    }
    for found in reply.instances.updated {
        let r = at(found.index)?;
        let itself = found
            .instances
            .iter()
            .any(|i| i.instance_id == r.instance_id && i.service_id == r.service_id);
        if !itself {
            unknown.push(r);
        }
    }
    Ok(unknown)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(id: &str) -> InstanceRef {
        InstanceRef {
            tenant: Tenant::default_tenant(),
            service_id: "s".into(),
            instance_id: id.into(),
        }
    }

    #[test]
    fn reads_both_dialects() {
        let (a, b) = (r("a"), r("b"));
        let chunk = [&a, &b];
        assert!(unknown_from_reply(&chunk, b"").unwrap().is_empty());
        assert!(unknown_from_reply(&chunk, b"\n").unwrap().is_empty());
        let v2 = br#"{"instances":[{"serviceId":"s","instanceId":"b","errMessage":"Instance does not exist"},{"serviceId":"s","instanceId":"a"}]}"#;
        assert_eq!(unknown_from_reply(&chunk, v2).unwrap(), vec![&b]);
        assert!(matches!(
            unknown_from_reply(&chunk, b"<html>"),
            Err(RegistryError::Protocol(_))
        ));
    }

    /// SC's one-instance lookup is a prefix search: only `pfx-10` registered, a find of
    /// `pfx-1` answers with `pfx-10`. That hit does not make `pfx-1` known.
    #[test]
    fn a_prefix_hit_is_not_the_instance_asked_for() {
        let (short, long, gone) = (r("pfx-1"), r("pfx-10"), r("x"));
        let chunk = [&short, &long, &gone];
        let reply: BatchFindReply = serde_json::from_str(
            r#"{"instances":{
                "updated":[
                    {"index":0,"rev":"r","instances":[{"instanceId":"pfx-10","serviceId":"s"}]},
                    {"index":1,"rev":"r","instances":[{"instanceId":"pfx-10","serviceId":"s"}]}],
                "failed":[{"indexes":[2],"error":{"errorCode":"400017","errorMessage":"gone"}}]}}"#,
        )
        .unwrap();
        let unknown = unknown_from_find(&chunk, reply).unwrap();
        assert_eq!(unknown, vec![&gone, &short]);
    }
}

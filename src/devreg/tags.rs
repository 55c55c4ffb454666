//! The tag API of SC 1.4.8 (`tag_controller.go`, `service/tag.go`).
//!
//! A service's tags are one map. `POST …/tags` *replaces* it (SC writes the whole map under
//! one key), `PUT …/tags/{key}?value=` changes one existing tag, `DELETE …/tags/{k1,k2}`
//! removes existing tags (all or nothing). The POST body is read as Go's
//! `map[string]map[string]string`, so only the exact key `tags` counts.

use std::collections::BTreeMap;

use axum::body::Body;
use serde_json::json;

use super::errors::{self, ScError};
use super::http::{Ctx, MAX_BODY_BYTES, Reply, empty_ok, json_ok, read_body};
use super::model::StrMap;
use super::state::ServiceEntry;
use super::validate::{self, Pat, Rule, check_list, check_map, check_str};

/// Tags per service (SC's default `QUOTA_TAG`).
pub const TAG_QUOTA: i64 = 100;
const TAG: Rule = Rule::new(0, 0, Some(Pat::Tag));

fn not_exists() -> ScError {
    ScError::new(errors::SERVICE_NOT_EXISTS, "Service does not exist.")
}

fn check_service(owner: &str, service_id: &str) -> Result<(), ScError> {
    check_str(owner, "ServiceId", service_id, validate::SERVICE_ID).map_err(ScError::invalid)
}

/// Writes a new tag map (one etcd put in SC: a new revision for the tags).
fn store_tags(
    ctx: &Ctx,
    service_id: &str,
    edit: impl FnOnce(&mut ServiceEntry) -> Result<(), ScError>,
) -> Reply {
    let mut store = ctx.reg.lock();
    let rev = store.next_rev();
    let entry = store
        .tenant_mut(&ctx.tenant)
        .services
        .get_mut(service_id)
        .ok_or_else(not_exists)?;
    edit(entry)?;
    entry.tags_rev = rev;
    Ok(empty_ok())
}

/// `POST …/microservices/{serviceId}/tags` with `{"tags":{k:v}}`.
pub async fn add(ctx: &Ctx, service_id: &str, body: Body) -> Reply {
    let bytes = read_body(body, MAX_BODY_BYTES).await?;
    let mut req: BTreeMap<String, Option<StrMap>> =
        serde_json::from_slice(&bytes).map_err(|e| ScError::invalid(e.to_string()))?;
    let tags = req.remove("tags").flatten().unwrap_or_default();
    check_service("AddServiceTagsRequest", service_id)?;
    check_map(
        "AddServiceTagsRequest",
        "Tags",
        &tags,
        Rule::new(0, TAG_QUOTA, Some(Pat::Tag)),
    )
    .map_err(ScError::invalid)?;
    store_tags(ctx, service_id, |e| {
        e.tags = tags;
        Ok(())
    })
}

/// `GET …/microservices/{serviceId}/tags`: `{"tags":{…}}`, `{}` without tags.
pub fn get(ctx: &Ctx, service_id: &str) -> Reply {
    check_service("GetServiceTagsRequest", service_id)?;
    let store = ctx.reg.lock();
    let entry = store
        .tenant(&ctx.tenant)
        .and_then(|t| t.services.get(service_id))
        .ok_or_else(not_exists)?;
    if entry.tags.is_empty() {
        return Ok(json_ok(&json!({})));
    }
    Ok(json_ok(&json!({ "tags": entry.tags })))
}

/// `PUT …/microservices/{serviceId}/tags/{key}?value=…`.
pub fn update(ctx: &Ctx, service_id: &str, key: &str) -> Reply {
    const O: &str = "UpdateServiceTagRequest";
    let value = ctx.q("value").to_owned();
    check_service(O, service_id)?;
    check_str(O, "Key", key, TAG)
        .and_then(|()| check_str(O, "Value", &value, TAG))
        .map_err(ScError::invalid)?;
    store_tags(ctx, service_id, |e| {
        let Some(slot) = e.tags.get_mut(key) else {
            return Err(ScError::new(
                errors::TAG_NOT_EXISTS,
                "Tag does not exist, please add one first.",
            ));
        };
        *slot = value;
        Ok(())
    })
}

/// `DELETE …/microservices/{serviceId}/tags/{key1,key2}`.
pub fn delete(ctx: &Ctx, service_id: &str, keys: &str) -> Reply {
    const O: &str = "DeleteServiceTagsRequest";
    let keys: Vec<String> = keys.split(',').map(str::to_owned).collect();
    check_service(O, service_id)?;
    check_list(O, "Keys", &keys, Rule::new(1, TAG_QUOTA, Some(Pat::Tag)))
        .map_err(ScError::invalid)?;
    store_tags(ctx, service_id, |e| {
        let mut tags = e.tags.clone();
        for key in &keys {
            if tags.remove(key).is_none() {
                return Err(ScError::new(
                    errors::TAG_NOT_EXISTS,
                    format!("Delete tags failed for this key {key} does not exist."),
                ));
            }
        }
        e.tags = tags;
        Ok(())
    })
}

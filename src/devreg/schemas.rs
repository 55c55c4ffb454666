//! The schema (contract) API of SC 1.4.8 (`schema_controller.go`, `service/schema.go`):
//! upload one (`PUT …/schemas/{schemaId}`), upload all (`POST …/schemas`), read one (content
//! in the body, summary in `X-Schema-Summary`), list (`withSchema=1` adds contents), delete,
//! and the `type=schema` existence check.
//!
//! Whether an existing schema may change depends on the service's environment: SC treats a
//! service whose `environment` is empty or `production` as "not editable" (its
//! `SCHEMA_EDITABLE` switch is off by default). There a schema that already has content and a
//! summary is frozen (`400015` on a single upload, silently kept on a batch upload), new ids
//! may only be added while the service's `schemas` list is empty (`400014` otherwise), and a
//! batch upload never deletes. Everywhere else uploads add, replace and (batch) delete freely,
//! and the `schemas` list follows.

use axum::body::Body;
use axum::http::HeaderValue;
use axum::response::Response;
use serde_json::json;

use super::errors::{self, ScError};
use super::http::{Ctx, MAX_BODY_BYTES, Reply, empty_ok, json_ok, read_body};
use super::model::{
    ModifySchemaRequest, ModifySchemasRequest, Schema, SchemasResponse, parse_body,
};
use super::state::{SchemaEntry, ServiceEntry, Store};
use super::validate::{self, Pat, Rule, check_str};

/// Schemas per service (SC's default `QUOTA_SCHEMA`).
pub const SCHEMA_QUOTA: usize = 100;
/// `GetSchemaReqValidator`'s schema id rule.
const SCHEMA_ID: Rule = Rule::new(1, 160, Some(Pat::SchemaIdUnlimited));
/// Summary rule of a single upload (may be empty, "forward compatibility").
const SUMMARY_OPTIONAL: Rule = Rule::new(0, 128, Some(Pat::SchemaSummary));
/// Summary rule of a batch upload element.
const SUMMARY_REQUIRED: Rule = Rule::new(1, 128, Some(Pat::SchemaSummary));
/// Content rule: not empty.
const CONTENT: Rule = Rule::new(1, 0, None);
/// SC's name for a production service.
const ENV_PROD: &str = "production";

/// `isSchemaEditable` with `SCHEMA_EDITABLE` unset.
pub fn editable(entry: &ServiceEntry) -> bool {
    let env = entry.service.environment.as_str();
    !env.is_empty() && env != ENV_PROD
}

fn not_exists() -> ScError {
    ScError::new(errors::SERVICE_NOT_EXISTS, "Service does not exist.")
}

fn with_summary(mut resp: Response, summary: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(summary) {
        resp.headers_mut().insert("x-schema-summary", v);
    }
    resp
}

fn check_ids(owner: &str, service_id: &str, schema_id: &str) -> Result<(), ScError> {
    check_str(owner, "ServiceId", service_id, validate::SERVICE_ID)
        .and_then(|()| check_str(owner, "SchemaId", schema_id, SCHEMA_ID))
        .map_err(ScError::invalid)
}

/// `400100` when `apply` more schemas do not fit next to the `current` ones.
fn apply_quota(current: usize, apply: usize) -> Result<(), ScError> {
    if current + apply > SCHEMA_QUOTA {
        return Err(ScError::new(
            errors::NOT_ENOUGH_QUOTA,
            format!(
                "no quota to create SCHEMA, max num is {SCHEMA_QUOTA}, curNum is {current}, apply num is {apply}"
            ),
        ));
    }
    Ok(())
}

/// `GET …/schemas/{schemaId}`: `{"schema":"…"}` and the summary in `X-Schema-Summary`.
pub fn get(ctx: &Ctx, service_id: &str, schema_id: &str) -> Reply {
    check_ids("GetSchemaRequest", service_id, schema_id)?;
    let store = ctx.reg.lock();
    let entry = store
        .tenant(&ctx.tenant)
        .and_then(|t| t.services.get(service_id))
        .ok_or_else(not_exists)?;
    let Some(SchemaEntry {
        content: Some(content),
        summary,
    }) = entry.schemas.get(schema_id)
    else {
        return Err(ScError::new(
            errors::SCHEMA_NOT_EXISTS,
            "Do not have this schema info.",
        ));
    };
    let summary = summary.clone().unwrap_or_default();
    Ok(with_summary(
        json_ok(&json!({ "schema": content })),
        &summary,
    ))
}

/// `GET …/schemas[?withSchema=0|1]`: one entry per id of the service's `schemas` list, with
/// its summary and (with `withSchema=1`) its content when uploaded.
pub fn list(ctx: &Ctx, service_id: &str) -> Reply {
    let with_schema = ctx.q("withSchema");
    if with_schema != "0" && with_schema != "1" && !with_schema.trim().is_empty() {
        return Err(ScError::invalid("parameter withSchema must be 1 or 0"));
    }
    check_str(
        "GetAllSchemaRequest",
        "ServiceId",
        service_id,
        validate::SERVICE_ID,
    )
    .map_err(ScError::invalid)?;
    let store = ctx.reg.lock();
    let entry = store
        .tenant(&ctx.tenant)
        .and_then(|t| t.services.get(service_id))
        .ok_or_else(not_exists)?;
    let schemas = entry
        .service
        .schemas
        .iter()
        .map(|id| {
            let stored = entry.schemas.get(id);
            Schema {
                schema_id: id.clone(),
                summary: stored.and_then(|s| s.summary.clone()).unwrap_or_default(),
                schema: if with_schema == "1" {
                    stored.and_then(|s| s.content.clone()).unwrap_or_default()
                } else {
                    String::new()
                },
            }
        })
        .collect();
    Ok(json_ok(&SchemasResponse { schemas }))
}

/// `DELETE …/schemas/{schemaId}`: removes content and summary; the id stays in the service's
/// `schemas` list, as in SC.
pub fn delete(ctx: &Ctx, service_id: &str, schema_id: &str) -> Reply {
    check_ids("DeleteSchemaRequest", service_id, schema_id)?;
    let mut store = ctx.reg.lock();
    let rev = store.next_rev();
    let entry = store
        .tenant_mut(&ctx.tenant)
        .services
        .get_mut(service_id)
        .ok_or_else(not_exists)?;
    if entry
        .schemas
        .get(schema_id)
        .is_none_or(|s| s.content.is_none())
    {
        return Err(ScError::new(
            errors::SCHEMA_NOT_EXISTS,
            "Schema info does not exist.",
        ));
    }
    entry.schemas.remove(schema_id);
    entry.rev = rev;
    Ok(empty_ok())
}

/// `PUT …/schemas/{schemaId}` with `{"schema":"…","summary":"…"}`.
pub async fn put_one(ctx: &Ctx, service_id: &str, schema_id: &str, body: Body) -> Reply {
    const O: &str = "ModifySchemaRequest";
    let bytes = read_body(body, MAX_BODY_BYTES).await?;
    let req: ModifySchemaRequest = parse_body(&bytes).map_err(ScError::invalid)?;
    if service_id.is_empty() || schema_id.is_empty() {
        return Err(ScError::invalid("serviceID or schemaID is nil"));
    }
    check_str(O, "ServiceId", service_id, validate::SERVICE_ID)
        .and_then(|()| check_str(O, "SchemaId", schema_id, SCHEMA_ID))
        .and_then(|()| check_str(O, "Schema", &req.schema, CONTENT))
        .and_then(|()| check_str(O, "Summary", &req.summary, SUMMARY_OPTIONAL))
        .map_err(ScError::invalid)?;
    let mut store = ctx.reg.lock();
    let rev = store.next_rev();
    let entry = store
        .tenant_mut(&ctx.tenant)
        .services
        .get_mut(service_id)
        .ok_or_else(not_exists)?;
    apply_quota(entry.schemas.len(), 1)?;
    let listed = entry.service.schemas.iter().any(|id| id == schema_id);
    if editable(entry) {
        if !listed {
            entry.service.schemas.push(schema_id.to_owned());
        }
    } else {
        if !entry.service.schemas.is_empty() && !listed {
            return Err(ScError::new(
                errors::UNDEFINED_SCHEMA_ID,
                format!("Non-existent schemaID can't be added in {ENV_PROD}"),
            ));
        }
        if let Some(old) = entry.schemas.get(schema_id)
            && old.content.is_some()
            && (req.summary.is_empty() || old.summary.is_some())
        {
            return Err(ScError::new(
                errors::MODIFY_SCHEMA_NOT_ALLOW,
                format!("schema already exist, can not be changed in {ENV_PROD}"),
            ));
        }
        if entry.service.schemas.is_empty() {
            entry.service.schemas.push(schema_id.to_owned());
        }
    }
    let slot = entry.schemas.entry(schema_id.to_owned()).or_default();
    slot.content = Some(req.schema);
    if !req.summary.is_empty() {
        slot.summary = Some(req.summary);
    }
    entry.rev = rev;
    Ok(empty_ok())
}

/// `POST …/schemas` with `{"schemas":[{schemaId, summary, schema}]}`.
pub async fn put_all(ctx: &Ctx, service_id: &str, body: Body) -> Reply {
    let bytes = read_body(body, MAX_BODY_BYTES).await?;
    let req: ModifySchemasRequest = parse_body(&bytes).map_err(ScError::invalid)?;
    // SC answers every validation failure of this request with the same fixed detail.
    validate_all(service_id, &req.schemas).map_err(|_| ScError::invalid("Invalid request."))?;
    let mut store = ctx.reg.lock();
    let rev = store.next_rev();
    let entry = store
        .tenant_mut(&ctx.tenant)
        .services
        .get_mut(service_id)
        .ok_or_else(not_exists)?;
    modify_all(entry, req.schemas)?;
    entry.rev = rev;
    Ok(empty_ok())
}

fn validate_all(service_id: &str, schemas: &[Schema]) -> Result<(), String> {
    const O: &str = "Schema";
    check_str(
        "ModifySchemasRequest",
        "ServiceId",
        service_id,
        validate::SERVICE_ID,
    )?;
    if schemas.is_empty() || schemas.len() > SCHEMA_QUOTA {
        return Err("schemas".to_owned());
    }
    for s in schemas {
        check_str(O, "SchemaId", &s.schema_id, SCHEMA_ID)?;
        check_str(O, "Summary", &s.summary, SUMMARY_REQUIRED)?;
        check_str(O, "Schema", &s.schema, CONTENT)?;
    }
    Ok(())
}

/// SC's `modifySchemas` on one service (the request already validated).
fn modify_all(entry: &mut ServiceEntry, schemas: Vec<Schema>) -> Result<(), ScError> {
    // First occurrence of each id wins (`schemasAnalysis`).
    let mut seen = std::collections::BTreeSet::new();
    let schemas: Vec<Schema> = schemas
        .into_iter()
        .filter(|s| seen.insert(s.schema_id.clone()))
        .collect();
    let in_db = |id: &str| entry.schemas.get(id).is_some_and(|s| s.content.is_some());
    let (update, add): (Vec<&Schema>, Vec<&Schema>) =
        schemas.iter().partition(|s| in_db(&s.schema_id));
    let not_listed: Vec<String> = schemas
        .iter()
        .filter(|s| !entry.service.schemas.contains(&s.schema_id))
        .map(|s| s.schema_id.clone())
        .collect();
    let stored = entry
        .schemas
        .values()
        .filter(|s| s.content.is_some())
        .count();
    let put = |entry: &mut ServiceEntry, s: &Schema| {
        entry.schemas.insert(
            s.schema_id.clone(),
            SchemaEntry {
                content: Some(s.schema.clone()),
                summary: Some(s.summary.clone()),
            },
        );
    };
    if !editable(entry) {
        if entry.service.schemas.is_empty() {
            apply_quota(stored, not_listed.len())?;
            entry.service.schemas = not_listed;
        } else {
            if !not_listed.is_empty() {
                return Err(ScError::new(
                    errors::UNDEFINED_SCHEMA_ID,
                    format!("Non-existent schemaIDs [{}]", not_listed.join(" ")),
                ));
            }
            for s in &update {
                // A schema with a summary is frozen: kept as it is, without an error.
                if entry
                    .schemas
                    .get(&s.schema_id)
                    .is_none_or(|e| e.summary.is_none())
                {
                    put(entry, s);
                }
            }
        }
        for s in &add {
            put(entry, s);
        }
        return Ok(());
    }
    let wanted: std::collections::BTreeSet<&str> =
        schemas.iter().map(|s| s.schema_id.as_str()).collect();
    let delete: Vec<String> = entry
        .schemas
        .iter()
        .filter(|(id, s)| s.content.is_some() && !wanted.contains(id.as_str()))
        .map(|(id, _)| id.clone())
        .collect();
    if add.len() > delete.len() {
        apply_quota(stored, add.len() - delete.len())?;
    }
    for s in add.iter().chain(&update) {
        put(entry, s);
    }
    for id in &delete {
        entry.schemas.remove(id);
    }
    entry.service.schemas = add
        .iter()
        .chain(&update)
        .map(|s| s.schema_id.clone())
        .collect();
    Ok(())
}

/// `GET …/existence?type=schema&serviceId=…&schemaId=…`: `{"schemaId":"…"}` and the summary
/// in `X-Schema-Summary` (written by the caller on every answer).
pub fn exists(
    store: &Store,
    tenant: &str,
    service_id: &str,
    schema_id: &str,
) -> Result<(Response, String), ScError> {
    const O: &str = "GetExistenceRequest";
    check_str(O, "ServiceId", service_id, validate::SERVICE_ID).map_err(ScError::invalid)?;
    check_str(
        O,
        "SchemaId",
        schema_id,
        Rule::new(1, 160, Some(Pat::SchemaId)),
    )
    .map_err(ScError::invalid)?;
    let entry = store
        .tenant(tenant)
        .and_then(|t| t.services.get(service_id))
        .ok_or_else(|| ScError::new(errors::SERVICE_NOT_EXISTS, "service does not exist."))?;
    match entry.schemas.get(schema_id) {
        Some(SchemaEntry {
            content: Some(_),
            summary,
        }) => Ok((
            json_ok(&json!({ "schemaId": schema_id })),
            summary.clone().unwrap_or_default(),
        )),
        _ => Err(ScError::new(
            errors::SCHEMA_NOT_EXISTS,
            "schema does not exist.",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devreg::model::MicroService;

    fn service(env: &str, ids: &[&str]) -> ServiceEntry {
        ServiceEntry {
            service: MicroService {
                environment: env.into(),
                schemas: ids.iter().map(|s| (*s).to_owned()).collect(),
                ..Default::default()
            },
            rev: 0,
            tags: Default::default(),
            tags_rev: 0,
            schemas: Default::default(),
            rules: Default::default(),
        }
    }

    fn schema(id: &str, content: &str) -> Schema {
        Schema {
            schema_id: id.into(),
            summary: format!("sum{content}"),
            schema: content.into(),
        }
    }

    #[test]
    fn production_batch_keeps_summarised_schemas_and_refuses_new_ids() {
        let mut e = service("", &["a"]);
        modify_all(&mut e, vec![schema("a", "1")]).unwrap();
        modify_all(&mut e, vec![schema("a", "2")]).unwrap();
        assert_eq!(e.schemas["a"].content.as_deref(), Some("1"));
        let err = modify_all(&mut e, vec![schema("a", "1"), schema("b", "1")]).unwrap_err();
        assert_eq!(err.code, errors::UNDEFINED_SCHEMA_ID);
        assert_eq!(err.detail, "Non-existent schemaIDs [b]");
    }

    #[test]
    fn development_batch_replaces_the_whole_set() {
        let mut e = service("development", &[]);
        modify_all(&mut e, vec![schema("a", "1"), schema("b", "1")]).unwrap();
        modify_all(&mut e, vec![schema("b", "2"), schema("c", "1")]).unwrap();
        assert_eq!(e.service.schemas, vec!["c", "b"]);
        assert!(!e.schemas.contains_key("a"));
        assert_eq!(e.schemas["b"].content.as_deref(), Some("2"));
    }
}

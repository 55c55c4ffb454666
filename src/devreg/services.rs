//! Microservice endpoints (reference §2.1–§2.6): create, get, list, delete (single and batch),
//! existence and the properties PUT.
//!
//! Service ids are client-chosen or the SHA-1 of the index key; re-creating a service returns
//! the existing id without updating it. Deleting checks, in SC's order: SC itself, existence,
//! consumers depending on it (`400023`, including `*` rules), instances (`400013`).

use axum::body::Body;
use axum::response::IntoResponse;
use serde_json::json;

use super::access;
use super::errors::{self, ScError};
use super::http::{
    Ctx, MAX_BODY_BYTES, PROPERTIES_BODY_BYTES, Reply, empty_ok, json_ok, read_body,
};
use super::instances::register_locked;
use super::model::{
    CreateServiceRequest, DelServicesRequest, DelServicesResponse, DelServicesRspInfo,
    MicroService, MicroServiceKey, PropertiesRequest, ServiceResponse, ServicesResponse,
    parse_body,
};
use super::schemas;
use super::state::{Action, DepJob, ServiceEntry, Store, generated_service_id};
use super::validate::{self, Pat, Rule, check_map, check_str};

/// Services per tenant before `400100` (SC's default `QUOTA_SERVICE`).
const SERVICE_QUOTA: usize = 50_000;
/// Tags per service (SC's default `QUOTA_TAG`).
const TAG_QUOTA: i64 = 100;

/// `POST /v4/{project}/registry/microservices`.
pub async fn create(ctx: &Ctx, body: Body) -> Reply {
    let bytes = read_body(body, MAX_BODY_BYTES).await?;
    let req: CreateServiceRequest = parse_body(&bytes).map_err(ScError::invalid)?;
    let Some(mut service) = req.service else {
        return Err(ScError::invalid("Request body is empty"));
    };
    set_defaults(&mut service);
    validate::create_service(&service).map_err(ScError::invalid)?;
    let now = ctx.reg.clock.unix_secs();
    let mut store = ctx.reg.lock();
    let service_id = create_locked(&mut store, &ctx.tenant, service, &now)?;
    // Tags and instances of the body (`CreateServiceEx`): failures are reported after the
    // service was created, as SC does.
    let mut errors = Vec::new();
    if !req.tags.is_empty() {
        match validate_tags(&service_id, &req.tags) {
            Ok(()) => {
                let rev = store.next_rev();
                if let Some(e) = store.tenant_mut(&ctx.tenant).services.get_mut(&service_id) {
                    e.tags.extend(req.tags.clone());
                    e.tags_rev = rev;
                }
            }
            Err(detail) => errors.push(detail),
        }
    }
    if !req.rules.is_empty() {
        let outcome = req
            .rules
            .iter()
            .try_for_each(|r| access::validate_rule(r).map_err(ScError::invalid))
            .and_then(|()| {
                let entry = store
                    .tenant_mut(&ctx.tenant)
                    .services
                    .get_mut(&service_id)
                    .ok_or_else(|| {
                        ScError::new(errors::SERVICE_NOT_EXISTS, "Service does not exist.")
                    })?;
                access::add_locked(entry, &req.rules, &now).map(|_| ())
            });
        if let Err(e) = outcome {
            errors.push(e.detail);
        }
    }
    for mut instance in req.instances {
        instance.service_id = service_id.clone();
        let endpoints = instance.endpoints.join(" ");
        if let Err(e) = register_locked(&ctx.reg, &mut store, &ctx.tenant, instance, &now) {
            errors.push(format!("{{instance:[{endpoints}],result:{}}}", e.detail));
        }
    }
    drop(store);
    if !errors.is_empty() {
        return Err(ScError::invalid(format!(
            "errMessages: [{}]",
            errors.join(" ")
        )));
    }
    Ok(json_ok(&json!({ "serviceId": service_id })))
}

/// `SetServiceDefaultValue`.
fn set_defaults(s: &mut MicroService) {
    if s.app_id.is_empty() {
        s.app_id = "default".into();
    }
    if s.version.is_empty() {
        s.version = "0.0.1".into();
    }
    if s.level.is_empty() {
        s.level = "BACK".into();
    }
    if s.status.is_empty() {
        s.status = "UP".into();
    }
}

fn validate_tags(service_id: &str, tags: &super::model::StrMap) -> Result<(), String> {
    check_str(
        "AddServiceTagsRequest",
        "ServiceId",
        service_id,
        validate::SERVICE_ID,
    )?;
    check_map(
        "AddServiceTagsRequest",
        "Tags",
        tags,
        Rule::new(0, TAG_QUOTA, Some(Pat::Tag)),
    )
}

/// The create transaction: succeeds only when the index key, the alias key and the id are all
/// free; otherwise answers with the id that holds the key, or `400010` when the client asked
/// for another id.
fn create_locked(
    store: &mut Store,
    tenant: &str,
    mut service: MicroService,
    now: &str,
) -> Result<String, ScError> {
    let requested = service.service_id.clone();
    if requested.is_empty() {
        service.service_id = generated_service_id(tenant, &service);
    }
    let t = store.tenant_mut(tenant);
    let same_version = |e: &&ServiceEntry| e.service.version == service.version;
    let index_owner = t
        .named(
            &service.environment,
            &service.app_id,
            &service.service_name,
            false,
        )
        .find(same_version)
        .map(|e| e.service.service_id.clone());
    let alias_owner = (!service.alias.is_empty())
        .then(|| {
            t.named(&service.environment, &service.app_id, &service.alias, true)
                .find(same_version)
        })
        .flatten()
        .map(|e| e.service.service_id.clone());
    let id_taken = t.services.contains_key(&service.service_id);
    if index_owner.is_none() && alias_owner.is_none() && !id_taken {
        if t.services.len() >= SERVICE_QUOTA {
            return Err(ScError::new(
                errors::NOT_ENOUGH_QUOTA,
                format!(
                    "no quota to create service, max num is {SERVICE_QUOTA}, curNum is {}, apply num is 1",
                    t.services.len()
                ),
            ));
        }
        service.timestamp = now.to_owned();
        service.mod_timestamp = now.to_owned();
        let id = service.service_id.clone();
        let rev = store.next_rev();
        store.tenant_mut(tenant).insert_service(ServiceEntry {
            service,
            rev,
            tags: Default::default(),
            tags_rev: 0,
            schemas: Default::default(),
            rules: Default::default(),
        });
        return Ok(id);
    }
    let holder = index_owner.or(alias_owner);
    if !requested.is_empty() && holder.as_deref() != Some(requested.as_str()) {
        return Err(ScError::new(
            errors::SERVICE_ALREADY_EXISTS,
            "ServiceID conflict or found the same service with different id.",
        ));
    }
    holder.ok_or_else(|| ScError::new(errors::INTERNAL, "Unexpected txn response."))
}

/// `GET /v4/{project}/registry/microservices/{serviceId}`.
pub fn get(ctx: &Ctx, service_id: &str) -> Reply {
    check_str(
        "GetServiceRequest",
        "ServiceId",
        service_id,
        validate::SERVICE_ID,
    )
    .map_err(ScError::invalid)?;
    let store = ctx.reg.read_view();
    let service = store
        .tenant(&ctx.tenant)
        .and_then(|t| t.services.get(service_id))
        .ok_or_else(|| ScError::new(errors::SERVICE_NOT_EXISTS, "Service does not exist."))?;
    Ok(json_ok(&ServiceResponse {
        service: &service.service,
    }))
}

/// `GET /v4/{project}/registry/microservices`.
pub fn list(ctx: &Ctx) -> Reply {
    let store = ctx.reg.read_view();
    // SC 2.x hides SC's own (global) service from `default/default` without `withShared`.
    let with_shared = !ctx.reg.config.is_v2()
        || matches!(
            ctx.q("withShared").trim().to_ascii_lowercase().as_str(),
            "1" | "true"
        );
    let services: Vec<&MicroService> = store
        .tenant(&ctx.tenant)
        .map(|t| t.services.values().map(|e| &e.service).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .filter(|s| {
            with_shared
                || !(Store::is_shared(&ctx.tenant, &s.app_id, &s.service_name)
                    || Store::is_shared(&ctx.tenant, &s.app_id, &s.alias))
        })
        .collect();
    Ok(json_ok(&ServicesResponse { services }))
}

/// `PUT /v4/{project}/registry/microservices/{serviceId}/properties`: replaces the map.
pub async fn update_properties(ctx: &Ctx, service_id: &str, body: Body) -> Reply {
    let bytes = read_body(body, PROPERTIES_BODY_BYTES).await?;
    let req: PropertiesRequest = parse_body(&bytes).map_err(ScError::invalid)?;
    check_str(
        "UpdateServicePropsRequest",
        "ServiceId",
        service_id,
        validate::SERVICE_ID,
    )
    .map_err(ScError::invalid)?;
    let now = ctx.reg.clock.unix_secs();
    let mut store = ctx.reg.lock();
    let rev = store.next_rev();
    let entry = store
        .tenant_mut(&ctx.tenant)
        .services
        .get_mut(service_id)
        .ok_or_else(|| ScError::new(errors::SERVICE_NOT_EXISTS, "Service does not exist."))?;
    entry.service.properties = req.properties;
    entry.service.mod_timestamp = now;
    entry.rev = rev;
    Ok(empty_ok())
}

/// `force` as SC's controller reads it.
fn parse_force(force: &str) -> Result<bool, ScError> {
    match force {
        "" | "false" | "0" => Ok(false),
        "true" | "1" => Ok(true),
        _ => Err(ScError::invalid("parameter force must be false or true")),
    }
}

/// `DELETE /v4/{project}/registry/microservices/{serviceId}[?force=]`.
pub async fn delete(ctx: &Ctx, service_id: &str) -> Reply {
    let force = parse_force(ctx.q("force"))?;
    check_str(
        "DeleteServiceRequest",
        "ServiceId",
        service_id,
        validate::SERVICE_ID,
    )
    .map_err(ScError::invalid)?;
    let job = {
        let mut store = ctx.reg.lock();
        delete_locked(&mut store, &ctx.tenant, service_id, force)?
    };
    ctx.reg.submit_dependencies(vec![job]).await;
    Ok(empty_ok())
}

/// `DELETE /v4/{project}/registry/microservices` with `{"serviceIds":[…],"force":…}`.
pub async fn delete_batch(ctx: &Ctx, body: Body) -> Reply {
    let bytes = read_body(body, MAX_BODY_BYTES).await?;
    let req: DelServicesRequest = parse_body(&bytes).map_err(ScError::invalid)?;
    if req.service_ids.is_empty() {
        return Err(ScError::invalid("'serviceIDs' is empty"));
    }
    let mut results = Vec::new();
    let mut jobs = Vec::new();
    {
        let mut store = ctx.reg.lock();
        let mut seen = std::collections::BTreeSet::new();
        for id in &req.service_ids {
            if !seen.insert(id.clone()) {
                continue;
            }
            let outcome = check_str(
                "DeleteServiceRequest",
                "ServiceId",
                id,
                validate::SERVICE_ID,
            )
            .map_err(ScError::invalid)
            .and_then(|()| delete_locked(&mut store, &ctx.tenant, id, req.force));
            let err_message = match outcome {
                Ok(job) => {
                    jobs.push(job);
                    String::new()
                }
                Err(e) => e.detail,
            };
            results.push(DelServicesRspInfo {
                err_message,
                service_id: id.clone(),
            });
        }
    }
    ctx.reg.submit_dependencies(jobs).await;
    if results.iter().any(|r| !r.err_message.is_empty()) {
        return Err(ScError::invalid("Delete services failed."));
    }
    Ok(json_ok(&DelServicesResponse { services: results }))
}

/// SC's `DeleteServicePri`. Returns the dependency job that drops the service's own rules.
pub(super) fn delete_locked(
    store: &mut Store,
    tenant: &str,
    service_id: &str,
    force: bool,
) -> Result<DepJob, ScError> {
    if store.sc_service_id.as_deref() == Some(service_id) {
        return Err(ScError::invalid("not allow to delete service center"));
    }
    let t = store.tenant_mut(tenant);
    let service = t
        .services
        .get(service_id)
        .map(|e| e.service.clone())
        .ok_or_else(|| ScError::new(errors::SERVICE_NOT_EXISTS, "Service does not exist."))?;
    if !force {
        let consumers = t.consumers_of(&service);
        if consumers.len() > 1 || (consumers.len() == 1 && consumers[0] != service_id) {
            return Err(ScError::new(
                errors::DEPENDED_ON_CONSUMER,
                "Can not delete this service, other service rely it.",
            ));
        }
        if t.cached_instances(service_id).next().is_some() {
            return Err(ScError::new(
                errors::DEPLOYED_INSTANCE,
                "Can not delete the service deployed instance(s).",
            ));
        }
    }
    // Instances go first, while the provider still exists, so watchers get their DELETE.
    let keys: Vec<(String, String)> = t
        .instances
        .keys()
        .filter(|(sid, _)| sid == service_id)
        .cloned()
        .collect();
    for key in keys {
        // Deferred deletions have not been announced yet either.
        if let Some(entry) = store.tenant_mut(tenant).instances.remove(&key) {
            store.notify(tenant, service_id, Action::Delete, &entry.instance);
        }
    }
    store.tenant_mut(tenant).remove_service(service_id);
    Ok(DepJob {
        tenant: tenant.to_owned(),
        consumer: MicroServiceKey::of_service(tenant, &service),
        providers: Vec::new(),
        overwrite: true,
    })
}

/// `GET /v4/{project}/registry/existence?type=microservice|schema&…`.
pub fn existence(ctx: &Ctx) -> Reply {
    let (reply, summary) = match ctx.q("type") {
        "microservice" => (microservice_exists(ctx), String::new()),
        "schema" => {
            let store = ctx.reg.lock();
            match schemas::exists(&store, &ctx.tenant, ctx.q("serviceId"), ctx.q("schemaId")) {
                Ok((resp, summary)) => (Ok(resp), summary),
                Err(e) => (Err(e), String::new()),
            }
        }
        _ => (
            Err(ScError::invalid(
                "Only micro-service and schema can be used as type.",
            )),
            String::new(),
        ),
    };
    // `X-Schema-Summary` is always written, empty unless a schema with a summary was found.
    let mut resp = reply.unwrap_or_else(IntoResponse::into_response);
    if let Ok(v) = axum::http::HeaderValue::from_str(&summary) {
        resp.headers_mut().insert("x-schema-summary", v);
    }
    Ok(resp)
}

fn microservice_exists(ctx: &Ctx) -> Reply {
    let (env, app, name, version) = (
        ctx.q("env"),
        ctx.q("appId"),
        ctx.q("serviceName"),
        ctx.q("version"),
    );
    validate::find_key("GetExistenceRequest", app, name, version, env).map_err(ScError::invalid)?;
    let flag = format!("{env}/{app}/{name}/{version}");
    let store = ctx.reg.lock();
    let (ids, exists) = store
        .tenant(&ctx.tenant)
        .map(|t| {
            if ctx.reg.config.is_v2() {
                // 2.x: the version string is matched exactly, never as a rule.
                let exists = t.named(env, app, name, false).next().is_some()
                    || t.named(env, app, name, true).next().is_some();
                let id = t.service_id_by_key(env, app, name, name, version);
                (id.map(str::to_owned).into_iter().collect(), exists)
            } else {
                t.find_service_ids(version, env, app, name, name)
            }
        })
        .unwrap_or_default();
    if !exists {
        return Err(ScError::new(
            errors::SERVICE_NOT_EXISTS,
            format!("{flag} does not exist."),
        ));
    }
    let Some(id) = ids.first() else {
        return Err(ScError::new(
            errors::SERVICE_VERSION_NOT_EXISTS,
            format!("{flag} version mismatch."),
        ));
    };
    Ok(json_ok(&json!({ "serviceId": id })))
}

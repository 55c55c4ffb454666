//! Instance write endpoints (reference §3.1, §3.4, §3.7–§3.10): register, unregister,
//! heartbeat, batch heartbeat, status and properties.
//!
//! Registering a client-chosen id that already exists is only a heartbeat (the body is not
//! applied and no event is sent). Registering, status and properties changes bump the
//! instance's revision and notify watchers; heartbeats only renew the lease.

use axum::body::Body;
use serde_json::json;
use tokio::time::Instant;

use super::HeartbeatStyle;
use super::errors::{self, ScError};
use super::http::{
    Ctx, INSTANCE_BODY_BYTES, MAX_BODY_BYTES, PROPERTIES_BODY_BYTES, Reply, empty_ok, json_ok,
    read_body,
};
use super::model::{
    HealthCheck, HeartbeatSetRequest, HeartbeatSetResponse, InstanceHbRst, MicroServiceInstance,
    PropertiesRequest, RegisterInstanceRequest, parse_body,
};
use super::state::{
    Action, DEFAULT_INTERVAL_SECS, DEFAULT_TIMES, InstanceEntry, Registry, Store,
    random_instance_id,
};
use super::validate::{self, Pat, Rule, check_str};

/// SC 2.x's least push `interval` (`registry.instance.minInterval`, 5 s) and `times`.
const MIN_INTERVAL_V2: i32 = 5;
const MIN_TIMES_V2: i32 = 3;
/// Go's text for a malformed instance body.
const UNMARSHAL_ERROR: &str = "Unmarshal error";

/// `POST /v4/{project}/registry/microservices/{serviceId}/instances`.
pub async fn register(ctx: &Ctx, service_id: &str, body: Body) -> Reply {
    let bytes = read_body(body, INSTANCE_BODY_BYTES).await?;
    let req: RegisterInstanceRequest =
        parse_body(&bytes).map_err(|_| ScError::invalid(UNMARSHAL_ERROR))?;
    let Some(mut instance) = req.instance else {
        return Err(ScError::invalid(
            "field 'RegisterInstanceRequest.Instance' invalid value '<nil>' does not match rule: {Min: 1}",
        ));
    };
    instance.service_id = service_id.to_owned();
    let now = ctx.reg.clock.unix_secs();
    let id = {
        let mut store = ctx.reg.lock();
        register_locked(&ctx.reg, &mut store, &ctx.tenant, instance, &now)?
    };
    Ok(json_ok(&json!({ "instanceId": id })))
}

/// SC's `Register` on a locked store: validation, reuse of an existing id (heartbeat only),
/// defaults, then the insert with its `CREATE` event. Returns the instance id.
///
/// # Errors
/// `400001` (validation, health check), `400012` (unknown service), `400100` (quota).
pub fn register_locked(
    reg: &Registry,
    store: &mut Store,
    tenant: &str,
    mut instance: MicroServiceInstance,
    now: &str,
) -> Result<String, ScError> {
    validate::register_instance(&instance).map_err(ScError::invalid)?;
    let v2 = reg.config.is_v2();
    if v2 {
        // SC 2.x checks the quota and looks the service up before the shortcut below.
        check_quota(store, tenant, reg.config.instance_quota)?;
        service_version(store, tenant, &instance.service_id)?;
    }
    if !instance.instance_id.is_empty()
        && renew(store, tenant, &instance.service_id, &instance.instance_id).is_ok()
    {
        return Ok(instance.instance_id);
    }
    if instance.status.is_empty() {
        instance.status = "UP".into();
    }
    if instance.instance_id.is_empty() {
        instance.instance_id = random_instance_id();
    }
    instance.timestamp = now.to_owned();
    instance.mod_timestamp = now.to_owned();
    let hc = instance.health_check.get_or_insert_with(|| HealthCheck {
        mode: "push".into(),
        interval: DEFAULT_INTERVAL_SECS,
        times: DEFAULT_TIMES,
        ..Default::default()
    });
    if v2 && hc.mode == "push" {
        // 2.x's `registry.instance.minInterval` / `minTimes` defaults.
        hc.interval = hc.interval.max(MIN_INTERVAL_V2);
        hc.times = hc.times.max(MIN_TIMES_V2);
    }
    match hc.mode.as_str() {
        // Go computes this in int32, overflow included.
        "push" if hc.interval.wrapping_mul(hc.times.wrapping_add(1)) <= 0 => {
            return Err(ScError::invalid(
                "Invalid 'healthCheck' settings in request body.",
            ));
        }
        "pull" => {
            hc.interval = DEFAULT_INTERVAL_SECS;
            hc.times = DEFAULT_TIMES;
        }
        _ => {}
    }
    let ttl_secs = i64::from(hc.interval.wrapping_mul(hc.times.wrapping_add(1)));
    instance.version = service_version(store, tenant, &instance.service_id)?;
    if v2 {
        instance
            .properties
            .extend(reg.config.inner_properties.clone());
    } else {
        check_quota(store, tenant, reg.config.instance_quota)?;
    }
    let ttl = reg.scaled_ttl(ttl_secs);
    let rev = store.next_rev();
    let key = (instance.service_id.clone(), instance.instance_id.clone());
    let id = instance.instance_id.clone();
    // A deferred deletion of the same key is superseded; watchers see a CREATE.
    store.tenant_mut(tenant).instances.insert(
        key.clone(),
        InstanceEntry {
            instance,
            rev,
            ttl,
            expires_at: Instant::now() + ttl,
            pinned: false,
            deferred: None,
        },
    );
    if let Some(entry) = store.tenant(tenant).and_then(|t| t.instances.get(&key)) {
        store.notify(tenant, &key.0, Action::Create, &entry.instance);
    }
    reg.lease_wakeup.notify_one();
    Ok(id)
}

/// The version of the instance's service.
///
/// # Errors
/// `400012` when the service does not exist.
fn service_version(store: &Store, tenant: &str, service_id: &str) -> Result<String, ScError> {
    store
        .tenant(tenant)
        .and_then(|t| t.services.get(service_id))
        .map(|e| e.service.version.clone())
        .ok_or_else(|| {
            ScError::new(
                errors::SERVICE_NOT_EXISTS,
                "Invalid 'serviceID' in request body.",
            )
        })
}

/// `400100` when the tenant is at the instance quota.
fn check_quota(store: &Store, tenant: &str, quota: usize) -> Result<(), ScError> {
    let count = store.tenant(tenant).map_or(0, |t| t.instances.len());
    if count >= quota {
        return Err(ScError::new(
            errors::NOT_ENOUGH_QUOTA,
            format!(
                "no quota to create instance, max num is {quota}, curNum is {count}, apply num is 1"
            ),
        ));
    }
    Ok(())
}

/// Renews a live instance's lease (`HeartbeatUtil`).
fn renew(store: &mut Store, tenant: &str, sid: &str, iid: &str) -> Result<(), ScError> {
    let entry = store
        .tenant_mut(tenant)
        .live_instance_mut(sid, iid)
        .ok_or_else(|| {
            ScError::new(
                errors::INSTANCE_NOT_EXISTS,
                "leaseId not exist, instance not exist",
            )
        })?;
    entry.expires_at = Instant::now() + entry.ttl;
    Ok(())
}

/// `PUT …/instances/{instanceId}/heartbeat`.
pub fn heartbeat(ctx: &Ctx, sid: &str, iid: &str) -> Reply {
    validate::instance_key("HeartbeatRequest", sid, iid).map_err(ScError::invalid)?;
    renew(&mut ctx.reg.lock(), &ctx.tenant, sid, iid)?;
    Ok(empty_ok())
}

/// `PUT /v4/{project}/registry/heartbeats`, answered in the configured SC version's style.
pub async fn heartbeats(ctx: &Ctx, body: Body) -> Reply {
    let bytes = read_body(body, MAX_BODY_BYTES).await?;
    let req: HeartbeatSetRequest =
        parse_body(&bytes).map_err(|_| ScError::invalid(UNMARSHAL_ERROR))?;
    if req.instances.is_empty() {
        return Err(ScError::invalid("Request format invalid."));
    }
    let mut results = Vec::new();
    {
        let mut store = ctx.reg.lock();
        // SC deduplicates on the concatenation `serviceId + instanceId`.
        let mut seen = std::collections::BTreeSet::new();
        for e in &req.instances {
            if !seen.insert(format!("{}{}", e.service_id, e.instance_id)) {
                continue;
            }
            let err_message = renew(&mut store, &ctx.tenant, &e.service_id, &e.instance_id)
                .err()
                .map(|err| err.go_error_text())
                .unwrap_or_default();
            results.push(InstanceHbRst {
                service_id: e.service_id.clone(),
                instance_id: e.instance_id.clone(),
                err_message,
            });
        }
    }
    match ctx.reg.config.heartbeat_style {
        HeartbeatStyle::V2 => Ok(json_ok(&HeartbeatSetResponse { instances: results })),
        HeartbeatStyle::V1_4 => {
            if results.iter().any(|r| !r.err_message.is_empty()) {
                return Err(ScError::new(
                    errors::INSTANCE_NOT_EXISTS,
                    "Heartbeat set failed.",
                ));
            }
            Ok(empty_ok())
        }
    }
}

/// `DELETE …/instances/{instanceId}`.
pub fn unregister(ctx: &Ctx, sid: &str, iid: &str) -> Reply {
    validate::instance_key("UnregisterInstanceRequest", sid, iid).map_err(ScError::invalid)?;
    let mut store = ctx.reg.lock();
    if !ctx.reg.delete_instance(&mut store, &ctx.tenant, sid, iid) {
        return Err(ScError::new(
            errors::INSTANCE_NOT_EXISTS,
            "Instance's leaseId not exist.",
        ));
    }
    Ok(empty_ok())
}

/// Applies `change` to a live instance, stamps it and sends `UPDATE`.
fn update_instance(
    ctx: &Ctx,
    sid: &str,
    iid: &str,
    change: impl FnOnce(&mut MicroServiceInstance),
) -> Reply {
    let now = ctx.reg.clock.unix_secs();
    let mut store = ctx.reg.lock();
    let rev = store.next_rev();
    let entry = store
        .tenant_mut(&ctx.tenant)
        .live_instance_mut(sid, iid)
        .ok_or_else(|| {
            ScError::new(
                errors::INSTANCE_NOT_EXISTS,
                "Service instance does not exist.",
            )
        })?;
    change(&mut entry.instance);
    entry.instance.mod_timestamp = now;
    entry.rev = rev;
    let instance = entry.instance.clone();
    store.notify(&ctx.tenant, sid, Action::Update, &instance);
    Ok(empty_ok())
}

/// `PUT …/instances/{instanceId}/status?value=`.
pub fn update_status(ctx: &Ctx, sid: &str, iid: &str) -> Reply {
    const O: &str = "UpdateInstanceStatusRequest";
    let status = ctx.q("value").to_owned();
    validate::instance_key(O, sid, iid).map_err(ScError::invalid)?;
    check_str(
        O,
        "Status",
        &status,
        Rule::new(0, 0, Some(Pat::InstanceStatusRequired)),
    )
    .map_err(ScError::invalid)?;
    update_instance(ctx, sid, iid, |i| i.status = status)
}

/// `PUT …/instances/{instanceId}/properties`: replaces the map.
pub async fn update_properties(ctx: &Ctx, sid: &str, iid: &str, body: Body) -> Reply {
    let bytes = read_body(body, PROPERTIES_BODY_BYTES).await?;
    let req: PropertiesRequest =
        parse_body(&bytes).map_err(|_| ScError::invalid(UNMARSHAL_ERROR))?;
    validate::instance_key("UpdateInstancePropsRequest", sid, iid).map_err(ScError::invalid)?;
    let mut properties = req.properties;
    if ctx.reg.config.is_v2() {
        properties.extend(ctx.reg.config.inner_properties.clone());
    }
    update_instance(ctx, sid, iid, |i| i.properties = properties)
}

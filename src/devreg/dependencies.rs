//! Dependency rules (reference §2.7, §5.3): the PUT/POST endpoints, the providers/consumers
//! listings, and how queued rule changes are applied.
//!
//! A rule says "consumer C (exact key) depends on providers P…" where a provider has a version
//! rule, or `serviceName: "*"` for every service of the tenant in one environment. Rules come
//! from `PUT` (replace), `POST` (append) and implicitly from consumer finds; SC applies them
//! asynchronously through its dependency queue, which the emulator reproduces with
//! `dependency_delay` (see [`super::state::Registry::submit_dependencies`]).

use std::sync::Arc;

use axum::body::Body;
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};

use super::errors::{self, ScError};
use super::http::{Ctx, MAX_BODY_BYTES, Reply, empty_ok, json_ok, read_body};
use super::model::{
    ConsumersResponse, DependenciesRequest, MicroService, MicroServiceKey, ProvidersResponse,
    parse_body,
};
use super::state::{ConsumerKey, DepJob, DepRule, Registry, Store};
use super::validate::{self, check_str};

/// Same provider identity for SC: environment, appId and name (or `*`) and version.
fn same_rule(a: &MicroServiceKey, b: &MicroServiceKey) -> bool {
    if a.service_name == "*" || b.service_name == "*" {
        return a.service_name == b.service_name && a.environment == b.environment;
    }
    a.environment == b.environment
        && a.app_id == b.app_id
        && a.service_name == b.service_name
        && a.version == b.version
}

/// Same provider except the version (`diffServiceVersion`): the older rule is replaced.
fn other_version(a: &MicroServiceKey, b: &MicroServiceKey) -> bool {
    a.service_name != "*"
        && b.service_name != "*"
        && a.environment == b.environment
        && a.app_id == b.app_id
        && a.service_name == b.service_name
        && a.version != b.version
}

impl Store {
    /// Applies one queued rule change (`parseOverrideRules` / `parseAddOrUpdateRules`), then,
    /// for replacements, SC's clean-up of rules whose provider no longer exists.
    pub fn apply_dependency(&mut self, job: DepJob) {
        let key = ConsumerKey::of(&job.consumer);
        let tenant = self.tenant_mut(&job.tenant);
        let old: Vec<MicroServiceKey> = tenant
            .dep_rules
            .get(&key)
            .map(|r| r.providers.clone())
            .unwrap_or_default();
        let new = if job.overwrite {
            job.providers
        } else {
            if old.iter().any(|p| p.service_name == "*") {
                // A `*` rule absorbs every later append.
                return;
            }
            let mut created: Vec<MicroServiceKey> = Vec::new();
            let mut replaced: Vec<MicroServiceKey> = Vec::new();
            for p in job.providers {
                if old.iter().any(|o| same_rule(o, &p)) {
                    continue;
                }
                if p.service_name == "*" {
                    created = vec![p];
                    replaced = old.clone();
                    break;
                }
                if let Some(o) = old.iter().find(|o| other_version(o, &p)) {
                    replaced.push(o.clone());
                }
                created.push(p);
            }
            let kept = old
                .iter()
                .filter(|o| !replaced.iter().any(|r| same_rule(r, o)))
                .cloned();
            created.into_iter().chain(kept).collect()
        };
        if new == old {
            if job.overwrite {
                self.clean_up_rules(&job.tenant);
            }
            return;
        }
        let rev = self.next_rev();
        let tenant = self.tenant_mut(&job.tenant);
        if new.is_empty() {
            tenant.dep_rules.remove(&key);
        } else {
            tenant.dep_rules.insert(
                key,
                DepRule {
                    consumer: job.consumer,
                    providers: new,
                    rev,
                },
            );
        }
        if job.overwrite {
            self.clean_up_rules(&job.tenant);
        }
    }

    /// `CleanUpDependencyRules`: drops provider rules (not `*`) that select no existing
    /// service; consumers with a `*` rule are left alone.
    fn clean_up_rules(&mut self, tenant_name: &str) {
        let tenant = self.tenant_mut(tenant_name);
        let mut changes = Vec::new();
        for (key, rule) in &tenant.dep_rules {
            if rule.providers.iter().any(|p| p.service_name == "*") {
                continue;
            }
            let left: Vec<MicroServiceKey> = rule
                .providers
                .iter()
                .filter(|p| {
                    tenant
                        .find_service_ids(
                            &p.version,
                            &p.environment,
                            &p.app_id,
                            &p.service_name,
                            &p.alias,
                        )
                        .1
                })
                .cloned()
                .collect();
            if left.len() != rule.providers.len() {
                changes.push((key.clone(), left));
            }
        }
        if changes.is_empty() {
            return;
        }
        let rev = self.next_rev();
        let tenant = self.tenant_mut(tenant_name);
        for (key, left) in changes {
            if left.is_empty() {
                tenant.dep_rules.remove(&key);
            } else if let Some(rule) = tenant.dep_rules.get_mut(&key) {
                rule.providers = left;
                rule.rev = rev;
            }
        }
    }
}

/// The delayed dependency worker: applies each job `delay` after it was queued, in order.
pub async fn dependency_loop(
    reg: Arc<Registry>,
    mut rx: mpsc::Receiver<(Instant, DepJob)>,
    delay: std::time::Duration,
) {
    loop {
        let (queued_at, job) = tokio::select! {
            biased;
            () = reg.shutdown.cancelled() => break,
            next = rx.recv() => match next {
                Some(item) => item,
                None => break,
            },
        };
        tokio::select! {
            biased;
            () = reg.shutdown.cancelled() => break,
            () = sleep_until(queued_at + delay) => {}
        }
        reg.lock().apply_dependency(job);
    }
}

fn with_deprecation(mut resp: Response) -> Response {
    resp.headers_mut()
        .insert("deprecation", HeaderValue::from_static("version=\"v4\""));
    resp
}

/// `PUT` (overwrite) or `POST` (append) `/v4/{project}/registry/dependencies`.
pub async fn put_or_post(ctx: &Ctx, body: Body, overwrite: bool) -> Reply {
    let bytes = read_body(body, MAX_BODY_BYTES).await?;
    let req: DependenciesRequest = parse_body(&bytes).map_err(ScError::invalid)?;
    let outcome = match queue_dependencies(ctx, req, overwrite) {
        Ok(jobs) => {
            ctx.reg.submit_dependencies(jobs).await;
            empty_ok()
        }
        Err(e) => e.into_response(),
    };
    Ok(with_deprecation(outcome))
}

fn validate_request(req: &DependenciesRequest, overwrite: bool) -> Result<(), String> {
    let owner = if overwrite {
        "CreateDependenciesRequest"
    } else {
        "AddDependenciesRequest"
    };
    let n = req.dependencies.len();
    if !(1..=100).contains(&n) {
        return Err(format!(
            "field '{owner}.Dependencies' invalid value '[{}]' does not match rule: {{Min: 1, Max: 100}}",
            if n == 0 { "" } else { "…" }
        ));
    }
    for d in &req.dependencies {
        let Some(consumer) = &d.consumer else {
            return Err(
                "field 'ConsumerDependency.Consumer' invalid value '<nil>' does not match rule: {Min: 1}"
                    .to_owned(),
            );
        };
        validate::dependency_consumer(consumer)?;
        if !overwrite && d.providers.is_empty() {
            return Err(
                "field 'ConsumerDependency.Providers' invalid value '[]' does not match rule: {Min: 1}"
                    .to_owned(),
            );
        }
        for p in &d.providers {
            validate::dependency_provider(p)?;
        }
    }
    Ok(())
}

/// Validates the request and turns it into queue jobs (all or nothing, as SC commits the
/// queue entries in one transaction).
fn queue_dependencies(
    ctx: &Ctx,
    req: DependenciesRequest,
    overwrite: bool,
) -> Result<Vec<DepJob>, ScError> {
    validate_request(&req, overwrite).map_err(ScError::invalid)?;
    let store = ctx.reg.lock();
    let mut jobs = Vec::new();
    for d in req.dependencies {
        let mut consumer = d.consumer.unwrap_or_default();
        consumer.tenant = ctx.tenant.clone();
        let mut providers = d.providers;
        // `ParamsChecker`: default appId, required version, no duplicates; stops at `*`.
        let mut seen: Vec<(String, String, String)> = Vec::new();
        for p in &mut providers {
            p.tenant = ctx.tenant.clone();
            if p.service_name == "*" {
                break;
            }
            if p.app_id.is_empty() {
                p.app_id = consumer.app_id.clone();
            }
            if p.version.is_empty() {
                return Err(ScError::invalid("Required provider version"));
            }
            let id = (
                p.environment.clone(),
                p.app_id.clone(),
                p.service_name.clone(),
            );
            if seen.contains(&id) {
                return Err(ScError::invalid(
                    "Invalid request body for provider info.Duplicate provider or (serviceName and appId is same).",
                ));
            }
            seen.push(id);
        }
        let exists = store.tenant(&ctx.tenant).and_then(|t| {
            t.service_id_by_key(
                &consumer.environment,
                &consumer.app_id,
                &consumer.service_name,
                &consumer.alias,
                &consumer.version,
            )
        });
        if exists.is_none() {
            return Err(ScError::new(
                errors::SERVICE_NOT_EXISTS,
                format!(
                    "Consumer {}/{}/{}/{} does not exist.",
                    consumer.environment, consumer.app_id, consumer.service_name, consumer.version
                ),
            ));
        }
        jobs.push(DepJob {
            tenant: ctx.tenant.clone(),
            consumer,
            providers,
            overwrite,
        });
    }
    Ok(jobs)
}

fn lookup_service(ctx: &Ctx, id: &str, missing: &str) -> Result<MicroService, ScError> {
    check_str(
        "GetDependenciesRequest",
        "ServiceId",
        id,
        validate::SERVICE_ID,
    )
    .map_err(ScError::invalid)?;
    ctx.reg
        .lock()
        .tenant(&ctx.tenant)
        .and_then(|t| t.services.get(id))
        .map(|e| e.service.clone())
        .ok_or_else(|| ScError::new(errors::SERVICE_NOT_EXISTS, missing))
}

fn services_of(ctx: &Ctx, ids: Vec<String>, self_id: &str) -> Vec<MicroService> {
    let no_self = ctx.q("noSelf") == "1";
    let store = ctx.reg.lock();
    let Some(t) = store.tenant(&ctx.tenant) else {
        return Vec::new();
    };
    ids.iter()
        .filter(|id| !(no_self && *id == self_id))
        .filter_map(|id| t.services.get(id).map(|e| e.service.clone()))
        .collect()
}

/// `GET /v4/{project}/registry/microservices/{consumerId}/providers`.
pub fn providers(ctx: &Ctx, consumer_id: &str) -> Reply {
    let consumer = lookup_service(ctx, consumer_id, "Consumer does not exist")?;
    let ids = ctx
        .reg
        .lock()
        .tenant(&ctx.tenant)
        .map(|t| t.providers_of(&consumer))
        .unwrap_or_default();
    Ok(json_ok(&ProvidersResponse {
        providers: services_of(ctx, ids, consumer_id),
    }))
}

/// `GET /v4/{project}/registry/microservices/{providerId}/consumers`.
pub fn consumers(ctx: &Ctx, provider_id: &str) -> Reply {
    let provider = lookup_service(ctx, provider_id, "Provider does not exist")?;
    let ids = ctx
        .reg
        .lock()
        .tenant(&ctx.tenant)
        .map(|t| t.consumers_of(&provider))
        .unwrap_or_default();
    Ok(json_ok(&ConsumersResponse {
        consumers: services_of(ctx, ids, provider_id),
    }))
}

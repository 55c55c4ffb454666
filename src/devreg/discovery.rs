//! Instance read endpoints (reference §3.2, §3.3, §3.5, §3.6, §5.1): find, batch find, list a
//! service's instances, get one instance, with SC's revisions and `304 Not Modified`.
//!
//! A find with `X-ConsumerId` uses the consumer's environment, silently filters providers the
//! consumer may not access (other appId without `allowCrossApp=true`, other environment), and
//! records an implicit dependency rule consumer → provider, which drives watch events and the
//! `400023` protection on delete.

use axum::body::Body;
use axum::response::IntoResponse;
use serde::Serialize;

use super::access;
use super::errors::{self, ErrorBody, ScError};
use super::http::{Ctx, MAX_BODY_BYTES, Reply, json_ok, not_modified, read_body, with_revision};
use super::model::{
    BatchFindRequest, InstanceResponse, InstancesResponse, MicroService, MicroServiceInstance,
    MicroServiceKey, ServiceRule, StrMap, parse_body,
};
use super::state::{
    ConsumerKey, DepJob, InstanceEntry, SC_ENVIRONMENT, Store, Tenant, format_revision,
};
use super::validate::{self, check_str};

/// A find query (`FindInstancesRequest`).
struct FindQuery<'a> {
    consumer_id: &'a str,
    app_id: &'a str,
    service_name: &'a str,
    version_rule: &'a str,
    environment: &'a str,
    tags: Vec<String>,
}

/// A successful find, list or get.
struct Found {
    instances: Vec<MicroServiceInstance>,
    rev: String,
    /// The implicit dependency rule to record, if any.
    dep_job: Option<DepJob>,
}

impl Found {
    /// The instances of the services `ids`, in that order, with their revision.
    fn collect(t: &Tenant, ids: &[String], dep_job: Option<DepJob>) -> Found {
        let entries: Vec<&InstanceEntry> =
            ids.iter().flat_map(|id| t.cached_instances(id)).collect();
        Found {
            rev: format_revision(entries.iter().copied()),
            instances: entries.into_iter().map(|e| e.instance.clone()).collect(),
            dep_job,
        }
    }
}

/// `?tags=a,b` as SC splits it.
fn tags_of(ctx: &Ctx) -> Vec<String> {
    let tags = ctx.q("tags");
    if tags.is_empty() {
        Vec::new()
    } else {
        tags.split(',').map(str::to_owned).collect()
    }
}

/// Go's `util.StringTRUE`: `1` or `true`, any case, surrounding spaces ignored.
fn string_true(s: &str) -> bool {
    let s = s.trim();
    s == "1" || s.eq_ignore_ascii_case("true")
}

/// Whether the `rev` comparison applies (`noCache` and `cacheOnly`, `1` or `true`, disable
/// it, as SC's cache handler does).
fn request_rev(ctx: &Ctx) -> Option<&str> {
    let rev = ctx.q("rev");
    let bypass = string_true(ctx.q("noCache")) || string_true(ctx.q("cacheOnly"));
    (!rev.is_empty() && !bypass).then_some(rev)
}

/// SC's find, list and get controllers set `X-Resource-Revision` before writing anything,
/// so a failure carries it too, empty.
fn with_empty_revision(reply: Reply) -> Reply {
    Ok(match reply {
        Ok(resp) => resp,
        Err(e) => with_revision(e.into_response(), ""),
    })
}

/// 200 with the instances, or 304 when the client's revision is current.
fn answer(rev_in: Option<&str>, found: Found) -> Reply {
    if rev_in == Some(found.rev.as_str()) {
        return Ok(not_modified(&found.rev));
    }
    let body = InstancesResponse {
        instances: found.instances,
    };
    Ok(with_revision(json_ok(&body), &found.rev))
}

/// `AllowAcrossDimension`: same appId or `allowCrossApp=true`; same environment unless the
/// provider is the shared SERVICECENTER.
fn accessible(tenant: &str, consumer: &MicroService, provider: &MicroService) -> bool {
    if provider.app_id != consumer.app_id {
        let allowed = provider
            .properties
            .get("allowCrossApp")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        if !allowed {
            return false;
        }
    }
    let shared = Store::is_shared(tenant, &provider.app_id, &provider.service_name)
        || Store::is_shared(tenant, &provider.app_id, &provider.alias);
    shared || provider.environment == consumer.environment
}

/// Keeps the provider ids that have every requested tag (services without tags never match).
fn filter_tags(t: &Tenant, ids: Vec<String>, tags: &[String]) -> Vec<String> {
    if tags.is_empty() {
        return ids;
    }
    ids.into_iter()
        .filter(|id| {
            t.services
                .get(id)
                .is_some_and(|e| !e.tags.is_empty() && tags.iter().all(|k| e.tags.contains_key(k)))
        })
        .collect()
}

/// Keeps the provider ids the consumer may access (`AccessibleFilter`): appId and
/// environment first, then the provider's black/white-list rules against the consumer and
/// its tags.
fn filter_access(
    t: &Tenant,
    tenant: &str,
    consumer: &MicroService,
    ids: Vec<String>,
) -> Vec<String> {
    if consumer.service_id.is_empty() {
        return ids;
    }
    let no_tags = StrMap::new();
    let consumer_tags = t
        .services
        .get(&consumer.service_id)
        .map_or(&no_tags, |e| &e.tags);
    ids.into_iter()
        .filter(|id| {
            t.services.get(id).is_some_and(|p| {
                let rules: Vec<&ServiceRule> = p.rules.values().collect();
                accessible(tenant, consumer, &p.service)
                    && access::allows(&rules, consumer, consumer_tags)
            })
        })
        .collect()
}

fn consumer_flag(c: &MicroService) -> String {
    format!(
        "Consumer[{}][{}/{}/{}/{}]",
        c.service_id, c.environment, c.app_id, c.service_name, c.version
    )
}

fn validate_find(q: &FindQuery) -> Result<(), ScError> {
    const O: &str = "FindInstancesRequest";
    check_str(O, "ConsumerServiceId", q.consumer_id, validate::CONSUMER_ID)
        .and_then(|()| check_str(O, "AppId", q.app_id, validate::APP_ID))
        .and_then(|()| check_str(O, "ServiceName", q.service_name, validate::NAME_FOR_FIND))
        .and_then(|()| check_str(O, "VersionRule", q.version_rule, validate::VERSION_RULE))
        .and_then(|()| validate::check_list(O, "Tags", &q.tags, validate::TAG))
        .and_then(|()| check_str(O, "Environment", q.environment, validate::ENVIRONMENT))
        .map_err(ScError::invalid)
}

/// The ids of the services `q` names in `env` that have all of `q`'s tags. `400012` when the
/// name has no service in `env`, its detail starting with `who()` (`… find`).
fn provider_ids(
    t: &Tenant,
    q: &FindQuery,
    env: &str,
    who: impl FnOnce() -> String,
) -> Result<Vec<String>, ScError> {
    let (ids, exists) = t.find_service_ids(
        q.version_rule,
        env,
        q.app_id,
        q.service_name,
        q.service_name,
    );
    if !exists {
        return Err(ScError::new(
            errors::SERVICE_NOT_EXISTS,
            format!(
                "{} provider[{env}/{}/{}/{}] failed, provider does not exist",
                who(),
                q.app_id,
                q.service_name,
                q.version_rule
            ),
        ));
    }
    Ok(filter_tags(t, ids, &q.tags))
}

/// SC's `Find` on a locked store.
fn find_locked(store: &Store, tenant: &str, q: &FindQuery) -> Result<Found, ScError> {
    validate_find(q)?;
    let empty = Tenant::default();
    let t = store.tenant(tenant).unwrap_or(&empty);
    if Store::is_shared(tenant, q.app_id, q.service_name) {
        // Shared services are looked up in SC's environment, without consumer checks.
        let ids = provider_ids(t, q, SC_ENVIRONMENT, || "find shared".to_owned())?;
        return Ok(Found::collect(t, &ids, None));
    }
    let mut consumer = request_consumer(t, q.consumer_id)?;
    if q.consumer_id.is_empty() {
        consumer.environment = q.environment.to_owned();
    }
    // With a consumer, `env` is ignored: the consumer's own environment is used.
    let who = || format!("{} find", consumer_flag(&consumer));
    let ids = provider_ids(t, q, &consumer.environment, who)?;
    let ids = filter_access(t, tenant, &consumer, ids);
    let dep_job = implicit_rule(t, tenant, &consumer, &ids, q.version_rule);
    Ok(Found::collect(t, &ids, dep_job))
}

/// The dependency rule a consumer's find records: consumer → provider's real name with the
/// queried version rule, unless the consumer already has exactly that rule (or a `*` rule,
/// which absorbs everything).
fn implicit_rule(
    t: &Tenant,
    tenant: &str,
    consumer: &MicroService,
    ids: &[String],
    version_rule: &str,
) -> Option<DepJob> {
    if consumer.service_id.is_empty() {
        return None;
    }
    let provider = &t.services.get(ids.first()?)?.service;
    let mut key = MicroServiceKey::of_service(tenant, provider);
    key.version = version_rule.to_owned();
    let consumer_key = MicroServiceKey::of_service(tenant, consumer);
    if let Some(rule) = t.dep_rules.get(&ConsumerKey::of(&consumer_key)) {
        let known = rule.providers.iter().any(|p| {
            p.service_name == "*"
                || (p.environment == key.environment
                    && p.app_id == key.app_id
                    && p.service_name == key.service_name
                    && p.version == key.version)
        });
        if known {
            return None;
        }
    }
    Some(DepJob {
        tenant: tenant.to_owned(),
        consumer: consumer_key,
        providers: vec![key],
        overwrite: false,
    })
}

/// SC 2.x finds every version of the provider whatever `version` says (`0.0.0+`, also the
/// version of the implicit dependency rule); 1.4.8 applies the rule.
fn version_rule<'a>(ctx: &Ctx, asked: &'a str) -> &'a str {
    if ctx.reg.config.is_v2() {
        ALL_VERSIONS
    } else {
        asked
    }
}

/// SC 2.x's `datasource.AllVersions`.
const ALL_VERSIONS: &str = "0.0.0+";

/// `GET /v4/{project}/registry/instances`.
pub async fn find(ctx: &Ctx) -> Reply {
    with_empty_revision(find_inner(ctx).await)
}

async fn find_inner(ctx: &Ctx) -> Reply {
    let query = FindQuery {
        consumer_id: ctx.consumer_id(),
        app_id: ctx.q("appId"),
        service_name: ctx.q("serviceName"),
        version_rule: version_rule(ctx, ctx.q("version")),
        environment: ctx.q("env"),
        tags: tags_of(ctx),
    };
    let mut found = find_locked(&ctx.reg.read_view(), &ctx.tenant, &query)?;
    if let Some(job) = found.dep_job.take() {
        ctx.reg.submit_dependencies(vec![job]).await;
    }
    answer(request_rev(ctx), found)
}

/// The consumer (or an empty one) of find, list and get requests.
fn request_consumer(t: &Tenant, consumer_id: &str) -> Result<MicroService, ScError> {
    if consumer_id.is_empty() {
        return Ok(MicroService::default());
    }
    t.services
        .get(consumer_id)
        .map(|e| e.service.clone())
        .ok_or_else(|| {
            ScError::new(
                errors::SERVICE_NOT_EXISTS,
                format!("Consumer[{consumer_id}] does not exist."),
            )
        })
}

fn request_provider(t: &Tenant, provider_id: &str) -> Result<MicroService, ScError> {
    t.services
        .get(provider_id)
        .map(|e| e.service.clone())
        .ok_or_else(|| {
            ScError::new(
                errors::SERVICE_NOT_EXISTS,
                format!("Provider[{provider_id}] does not exist."),
            )
        })
}

fn provider_flag(p: &MicroService) -> String {
    format!(
        "provider[{}][{}/{}/{}/{}]",
        p.service_id, p.environment, p.app_id, p.service_name, p.version
    )
}

/// SC's `GetOneInstance` on a locked store.
fn get_one_locked(
    store: &Store,
    tenant: &str,
    consumer_id: &str,
    sid: &str,
    iid: &str,
    tags: &[String],
) -> Result<Found, ScError> {
    const O: &str = "GetOneInstanceRequest";
    check_str(O, "ConsumerServiceId", consumer_id, validate::CONSUMER_ID)
        .and_then(|()| check_str(O, "ProviderServiceId", sid, validate::SERVICE_ID))
        .and_then(|()| check_str(O, "ProviderInstanceId", iid, validate::INSTANCE_ID))
        .and_then(|()| validate::check_list(O, "Tags", tags, validate::TAG))
        .map_err(ScError::invalid)?;
    let empty = Tenant::default();
    let t = store.tenant(tenant).unwrap_or(&empty);
    let consumer = request_consumer(t, consumer_id)?;
    let provider = request_provider(t, sid)?;
    let ids = filter_tags(t, vec![sid.to_owned()], tags);
    let ids = filter_access(t, tenant, &consumer, ids);
    // SC reads the instance key `…/{serviceId}/{instanceId}` as a *prefix*: every instance
    // whose id starts with the requested one is found, the first in key order is answered.
    let matched: Vec<&InstanceEntry> = if ids.is_empty() {
        Vec::new()
    } else {
        t.cached_instances(sid)
            .filter(|e| e.instance.instance_id.starts_with(iid))
            .collect()
    };
    let Some(entry) = matched.first() else {
        return Err(ScError::new(
            errors::INSTANCE_NOT_EXISTS,
            format!(
                "{} find {} instance[{iid}] failed, provider instance does not exist",
                consumer_flag(&consumer),
                provider_flag(&provider)
            ),
        ));
    };
    Ok(Found {
        instances: vec![entry.instance.clone()],
        rev: format_revision(matched.iter().copied()),
        dep_job: None,
    })
}

/// `GET …/microservices/{serviceId}/instances/{instanceId}`.
pub fn get_one(ctx: &Ctx, sid: &str, iid: &str) -> Reply {
    with_empty_revision(get_one_inner(ctx, sid, iid))
}

fn get_one_inner(ctx: &Ctx, sid: &str, iid: &str) -> Reply {
    let found = get_one_locked(
        &ctx.reg.read_view(),
        &ctx.tenant,
        ctx.consumer_id(),
        sid,
        iid,
        &tags_of(ctx),
    )?;
    let rev_in = request_rev(ctx);
    if rev_in == Some(found.rev.as_str()) {
        return Ok(not_modified(&found.rev));
    }
    let instance = found.instances.into_iter().next();
    Ok(with_revision(
        json_ok(&InstanceResponse { instance }),
        &found.rev,
    ))
}

/// `GET …/microservices/{serviceId}/instances`: every status, deferred deletes included.
pub fn list(ctx: &Ctx, sid: &str) -> Reply {
    with_empty_revision(list_inner(ctx, sid))
}

fn list_inner(ctx: &Ctx, sid: &str) -> Reply {
    const O: &str = "GetInstancesRequest";
    let consumer_id = ctx.consumer_id();
    let tags = tags_of(ctx);
    check_str(O, "ConsumerServiceId", consumer_id, validate::CONSUMER_ID)
        .and_then(|()| check_str(O, "ProviderServiceId", sid, validate::SERVICE_ID))
        .and_then(|()| validate::check_list(O, "Tags", &tags, validate::TAG))
        .map_err(ScError::invalid)?;
    let store = ctx.reg.read_view();
    let empty = Tenant::default();
    let t = store.tenant(&ctx.tenant).unwrap_or(&empty);
    let consumer = request_consumer(t, consumer_id)?;
    let provider = request_provider(t, sid)?;
    let ids = filter_tags(t, vec![sid.to_owned()], &tags);
    let ids = filter_access(t, &ctx.tenant, &consumer, ids);
    if ids.is_empty() {
        return Err(ScError::new(
            errors::SERVICE_NOT_EXISTS,
            format!(
                "{} find {} instances failed, provider instance does not exist",
                consumer_flag(&consumer),
                provider_flag(&provider)
            ),
        ));
    }
    let found = Found::collect(t, &ids, None);
    drop(store);
    answer(request_rev(ctx), found)
}

/// `updated` entry of a batch find.
#[derive(Serialize)]
struct FindResult {
    index: usize,
    rev: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    instances: Vec<MicroServiceInstance>,
}

/// `failed` entry of a batch find: the indexes that failed with one code.
#[derive(Serialize)]
struct FailedResult {
    indexes: Vec<usize>,
    error: ErrorBody,
}

#[derive(Default, Serialize)]
#[serde(rename_all = "camelCase")]
struct BatchFindResult {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    failed: Vec<FailedResult>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    not_modified: Vec<usize>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    updated: Vec<FindResult>,
}

impl BatchFindResult {
    /// `AppendFindResponse`.
    fn push(&mut self, index: usize, rev_in: &str, outcome: Result<Found, ScError>) {
        match outcome {
            Err(e) => match self
                .failed
                .iter_mut()
                .find(|f| f.error.error_code == e.code.to_string())
            {
                Some(group) => group.indexes.push(index),
                None => self.failed.push(FailedResult {
                    indexes: vec![index],
                    error: e.body(),
                }),
            },
            Ok(found) if !rev_in.is_empty() && rev_in == found.rev => {
                self.not_modified.push(index);
            }
            Ok(found) => self.updated.push(FindResult {
                index,
                rev: found.rev,
                instances: found.instances,
            }),
        }
    }
}

#[derive(Serialize)]
struct BatchFindResponse {
    #[serde(skip_serializing_if = "Option::is_none")]
    services: Option<BatchFindResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    instances: Option<BatchFindResult>,
}

fn validate_batch(consumer_id: &str, req: &BatchFindRequest) -> Result<(), String> {
    check_str(
        "BatchFindInstancesRequest",
        "ConsumerServiceId",
        consumer_id,
        validate::CONSUMER_ID,
    )?;
    for s in &req.services {
        let Some(k) = &s.service else {
            return Err(
                "field 'FindService.Service' invalid value '<nil>' does not match rule: {Min: 1}"
                    .to_owned(),
            );
        };
        validate::find_key(
            "MicroServiceKey",
            &k.app_id,
            &k.service_name,
            &k.version,
            &k.environment,
        )?;
    }
    for i in &req.instances {
        let Some(k) = &i.instance else {
            return Err(
                "field 'FindInstance.Instance' invalid value '<nil>' does not match rule: {Min: 1}"
                    .to_owned(),
            );
        };
        validate::instance_key("HeartbeatSetElement", &k.service_id, &k.instance_id)?;
    }
    Ok(())
}

/// `POST /v4/{project}/registry/instances/action?type=query`.
pub async fn action(ctx: &Ctx, body: Body) -> Reply {
    let bytes = read_body(body, MAX_BODY_BYTES).await?;
    let kind = ctx.q("type");
    if kind != "query" {
        return Err(ScError::invalid(format!("Invalid action: {kind}")));
    }
    let req: BatchFindRequest =
        parse_body(&bytes).map_err(|_| ScError::invalid("Unmarshal error"))?;
    if req.services.is_empty() && req.instances.is_empty() {
        return Err(ScError::invalid("Required services or instances"));
    }
    let consumer_id = ctx.consumer_id();
    validate_batch(consumer_id, &req).map_err(ScError::invalid)?;
    let mut jobs = Vec::new();
    let mut response = BatchFindResponse {
        services: None,
        instances: None,
    };
    {
        let store = ctx.reg.read_view();
        if !req.services.is_empty() {
            let mut result = BatchFindResult::default();
            for (index, s) in req.services.iter().enumerate() {
                let k = s.service.clone().unwrap_or_default();
                let query = FindQuery {
                    consumer_id,
                    app_id: &k.app_id,
                    service_name: &k.service_name,
                    version_rule: version_rule(ctx, &k.version),
                    environment: &k.environment,
                    tags: Vec::new(),
                };
                let mut outcome = find_locked(&store, &ctx.tenant, &query);
                if let Ok(found) = &mut outcome {
                    jobs.extend(found.dep_job.take());
                }
                result.push(index, &s.rev, outcome);
            }
            response.services = Some(result);
        }
        if !req.instances.is_empty() {
            let mut result = BatchFindResult::default();
            for (index, i) in req.instances.iter().enumerate() {
                let k = i.instance.clone().unwrap_or_default();
                let outcome = get_one_locked(
                    &store,
                    &ctx.tenant,
                    consumer_id,
                    &k.service_id,
                    &k.instance_id,
                    &[],
                );
                result.push(index, &i.rev, outcome);
            }
            response.instances = Some(result);
        }
    }
    ctx.reg.submit_dependencies(jobs).await;
    Ok(json_ok(&response))
}

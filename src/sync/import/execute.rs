//! The executor: runs planned actions against the local registry and the mapping store,
//! [`PARALLEL_CALLS`] at a time, and reports what each changed. Never panics; a failure is
//! reported as [`Done::Failed`] for the actor to retry.
//!
//! Order inside an action is what keeps a crash harmless: the mapping is written before the
//! copy is registered (intent first), and removed after the copy is gone, so a crash at any
//! point leaves a mapping whose copy is re-registered or removed, never an unmarked copy.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use tracing::{debug, info, warn};

use super::super::copy::{PresentCopy, copy_body, fingerprint, properties_digest};
use super::super::ids::OriginKey;
use super::super::unix_ms;
use super::failures::{
    Ensured, instance_reason, is_refusal, reason_of, register_digest, update_digest,
};
use super::plan::Action;
use super::services::{Ownership, marked};
use super::views::copy_ref;
use super::{ImportCtx, ServiceKey};
use crate::registry::{InstanceRef, RegistryError, SCHEMA_REFUSED, Service};
use crate::store::{Group, Mapping, Op, StoreError};

/// Registry calls of one batch in flight at once.
pub(crate) const PARALLEL_CALLS: usize = 32;

/// What an executed action changed.
#[derive(Debug)]
pub(crate) enum Done {
    Mapped {
        key: InstanceRef,
        mapping: Box<Mapping>,
        /// What was registered (`None`: adopted).
        registered: Option<Box<PresentCopy>>,
        dropped: Option<Box<Mapping>>,
    },
    Updated {
        key: InstanceRef,
        copy_id: String,
        status: Option<String>,
        properties: Option<BTreeMap<String, String>>,
    },
    Removed {
        key: Option<InstanceRef>,
        copy_id: String,
    },
    /// Failed; retry these keys (or the orphans) later.
    Failed(Option<InstanceRef>),
    /// A removal failed; retried later like [`Done::Failed`], and given back to the removal
    /// cap, which counts removals made, not attempts.
    RemoveFailed(Option<InstanceRef>),
    /// The registry refused the copy of `key` (its content: a size cap, a rule); the same
    /// write (`digest`) waits for a back-off (`failures`).
    Refused {
        key: InstanceRef,
        digest: u64,
        reason: &'static str,
        error: RegistryError,
    },
}

/// Runs `actions` for `origin`, [`PARALLEL_CALLS`] at a time; results in completion order.
pub(crate) fn execute_all(
    ctx: Arc<ImportCtx>,
    origin: String,
    actions: Vec<Action>,
) -> impl Stream<Item = Done> {
    futures::stream::iter(actions)
        .map(move |action| execute(ctx.clone(), origin.clone(), action))
        .buffer_unordered(PARALLEL_CALLS)
}

/// Ensures the local service of each of `services` exists, and tells how each ended (those
/// already ensured with the same origin properties are not asked for again, and not listed).
///
/// A missing service is created with the origin's properties and syncer's mark naming the
/// origin, in one call. The origin's properties are written into an existing service only
/// when it is one syncer created for this origin's copies and it holds no instance of its
/// own (`services::Ownership::Mirror`): a service deployed in both data centres keeps each
/// side's own properties, and a change on one side is never reverted by the other's. When
/// the registry refuses that write (Service Center caps it at 3 KiB, its create at 2 MiB),
/// the service is ready for copies all the same and the same content is not sent again.
pub(crate) async fn ensure_services(
    ctx: &Arc<ImportCtx>,
    origin: &str,
    services: Vec<Arc<Service>>,
) -> Vec<(Arc<Service>, Ensured)> {
    let mut needed: HashMap<ServiceKey, Arc<Service>> = HashMap::new();
    for service in services {
        let skey = (
            origin.to_owned(),
            service.tenant.clone(),
            service.service_id.clone(),
        );
        if needed.contains_key(&skey) {
            continue;
        }
        let fresh = ctx
            .cached_service(&skey)
            .is_some_and(|(_, props)| props.as_ref() == Some(&service.properties))
            && (service.schema_summaries.is_empty()
                || ctx
                    .contracts_settled(&skey, properties_digest(&service.schema_summaries))
                    .is_some())
            && (ctx.access_settled(&skey, access_digest(&service)).is_some()
                || (service.tags.is_empty()
                    && service.rules.is_empty()
                    && !ctx.access_known(&skey)));
        if !fresh {
            needed.insert(skey, service);
        }
    }
    futures::stream::iter(needed)
        .map(|(skey, service)| {
            let ctx = ctx.clone();
            async move {
                let ensured = ensure_one(&ctx, &skey, &service).await;
                (service, ensured)
            }
        })
        .buffer_unordered(PARALLEL_CALLS)
        .collect()
        .await
}

/// Ensures one local service (see [`ensure_services`]).
async fn ensure_one(ctx: &ImportCtx, skey: &ServiceKey, service: &Service) -> Ensured {
    let wanted = marked(&skey.0, &service.properties);
    let mut body = service.clone();
    body.properties = wanted.clone();
    // Created listing the origin's schema ids, so that a registry that freezes the schemas
    // of a production service still takes their first upload (Service Center's 400014).
    body.schemas = service.schema_summaries.keys().cloned().collect();
    body.schema_summaries.clear();
    // Tags and rules are written with their own calls (SC's create takes them, but a
    // refused rule would then refuse the whole service).
    body.tags.clear();
    body.rules.clear();
    let id = match ctx.registry.ensure_service(&body).await {
        Ok(id) => id,
        Err(error) => {
            ctx.metrics.registry_op("ensure_service", error.kind());
            debug!(service = %service.name, error = %error, "cannot create the local service of a copy");
            return Ensured::Failed {
                reason: reason_of(&error, false),
                error,
            };
        }
    };
    ctx.metrics.registry_op("ensure_service", "ok");
    let mut ensured = Ensured::Ready;
    let ownership = ctx.ownership(&skey.0, &service.tenant, &id);
    let contracts = match &ownership {
        Ownership::Mirror(_) => true,
        // Not shown by the local feed yet: created a moment ago by this very call when it
        // has the origin's id (a service created by anyone else has an id of its own).
        Ownership::Keep if !ctx.local_known(&service.tenant, &id) => id == service.service_id,
        Ownership::Keep => {
            if !service.schema_summaries.is_empty() {
                let digest = properties_digest(&service.schema_summaries);
                ctx.settle_contracts(skey, digest, None);
            }
            ctx.settle_access(skey, access_digest(service), None);
            false
        }
    };
    match ownership {
        Ownership::Mirror(current) if current != wanted => {
            let digest = properties_digest(&wanted);
            if let Some(reason) = ctx.properties_refused(skey, digest) {
                debug!(service = %service.name, reason, "these properties were refused before; not sent again");
                ensured = Ensured::RefusedBefore { reason };
            } else {
                match ctx
                    .registry
                    .set_service_properties(&service.tenant, &id, &wanted)
                    .await
                {
                    Ok(()) => {
                        ctx.metrics.registry_op("set_service_properties", "ok");
                        ctx.refuse_properties(skey, None);
                    }
                    // Not answered (or the service went meanwhile): tried again.
                    Err(error) if error.is_retryable() || error.is_not_found() => {
                        ctx.metrics
                            .registry_op("set_service_properties", error.kind());
                        debug!(service = %service.name, error = %error, "cannot set the properties of a copy's service");
                        return Ensured::Failed {
                            reason: reason_of(&error, true),
                            error,
                        };
                    }
                    // Refused: the same content would be refused again.
                    Err(error) => {
                        ctx.metrics
                            .registry_op("set_service_properties", error.kind());
                        let reason = reason_of(&error, true);
                        ctx.refuse_properties(skey, Some((digest, reason)));
                        ensured = Ensured::PropertiesRefused { reason, error };
                    }
                }
            }
        }
        Ownership::Mirror(_) => ctx.refuse_properties(skey, None),
        Ownership::Keep => {
            debug!(origin = %skey.0, service = %service.name, local_id = %id, "the local service is not one syncer created for this origin's copies alone; its properties are left as they are");
        }
    }
    if contracts {
        // A refused property write is reported already; the contracts' or access's refusal
        // otherwise.
        for refused in [
            mirror_contracts(ctx, skey, service, &id).await,
            mirror_access(ctx, skey, service, &id).await,
        ]
        .into_iter()
        .flatten()
        {
            if matches!(ensured, Ensured::Ready) {
                ensured = refused;
            }
        }
    }
    // A local service the feed has not shown yet (created a moment ago) is left alone, so it
    // is not settled either: a change of the origin's properties meanwhile would be lost.
    // The feed shows it with its copies, which brings it back here.
    let settled = ctx
        .local_known(&service.tenant, &id)
        .then(|| service.properties.clone());
    ctx.cache_service(skey.clone(), id, settled);
    ensured
}

/// A digest of the tags and access rules (in any order) of `service`.
fn access_digest(service: &Service) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut rules = service.rules.clone();
    rules.sort();
    let mut h = std::hash::DefaultHasher::new();
    service.tags.hash(&mut h);
    rules.hash(&mut h);
    h.finish()
}

/// The reason a refused write of tags or rules is reported with.
const ACCESS_REFUSED: &str = "access_refused";

/// Writes the origin's tags and access rules into local service `local_id` where they
/// differ from what the local feed reports, settled as contracts are (see
/// [`mirror_contracts`]); the rules' effect on consumers then matches the origin's.
async fn mirror_access(
    ctx: &ImportCtx,
    skey: &ServiceKey,
    service: &Service,
    local_id: &str,
) -> Option<Ensured> {
    let digest = access_digest(service);
    match ctx.access_settled(skey, digest) {
        Some(None) => return None,
        Some(Some(reason)) => return Some(Ensured::RefusedBefore { reason }),
        None => {}
    }
    let local = ctx.local_extras(&service.tenant, local_id);
    let mut rules = service.rules.clone();
    rules.sort();
    let tags = if local.tags == service.tags {
        Ok(())
    } else {
        let result = ctx
            .registry
            .set_service_tags(&service.tenant, local_id, &service.tags)
            .await;
        ctx.metrics.registry_op(
            "set_service_tags",
            result.as_ref().err().map_or("ok", RegistryError::kind),
        );
        result
    };
    let rules = match tags {
        Ok(()) if local.rules != rules => {
            let result = ctx
                .registry
                .set_service_rules(&service.tenant, local_id, &rules)
                .await;
            ctx.metrics.registry_op(
                "set_service_rules",
                result.as_ref().err().map_or("ok", RegistryError::kind),
            );
            result
        }
        other => other,
    };
    match rules {
        Ok(()) => {
            ctx.settle_access(skey, digest, None);
            None
        }
        Err(error) if error.is_retryable() || error.is_not_found() => {
            debug!(service = %service.name, error = %error, "cannot write the tags or access rules of a copy's service; tried again later");
            None
        }
        Err(error) => {
            ctx.settle_access(skey, digest, Some(ACCESS_REFUSED));
            Some(Ensured::PropertiesRefused {
                reason: ACCESS_REFUSED,
                error,
            })
        }
    }
}

/// How long fetching an origin service's contracts from its syncer may take.
const CONTRACTS_TIMEOUT: Duration = Duration::from_secs(10);

/// Writes into local service `local_id` the origin's contracts it lacks (by summary),
/// fetched from the origin's syncer. Settled once written or refused: nothing is fetched
/// nor written again until the origin's summaries change. Returns the refusal to report
/// (`schema_refused`), if any; a fetch or a write that can succeed later is left unsettled
/// and tried again when the service is ensured next.
async fn mirror_contracts(
    ctx: &ImportCtx,
    skey: &ServiceKey,
    service: &Service,
    local_id: &str,
) -> Option<Ensured> {
    if service.schema_summaries.is_empty() {
        return None;
    }
    debug!(origin = %skey.0, service = %service.name, schemas = service.schema_summaries.len(), "mirroring the contracts of a copy's service");
    let digest = properties_digest(&service.schema_summaries);
    match ctx.contracts_settled(skey, digest) {
        Some(None) => return None,
        Some(Some(reason)) => return Some(Ensured::RefusedBefore { reason }),
        None => {}
    }
    let local = ctx.local_extras(&service.tenant, local_id).summaries;
    let needed: Vec<String> = service
        .schema_summaries
        .iter()
        .filter(|(id, summary)| local.get(*id) != Some(*summary))
        .map(|(id, _)| id.clone())
        .collect();
    if needed.is_empty() {
        ctx.settle_contracts(skey, digest, None);
        return None;
    }
    let addr = ctx.peers.borrow().get(&skey.0).copied();
    let Some(addr) = addr else {
        debug!(origin = %skey.0, service = %service.name, "no address of the origin's syncer for its contracts; tried again later");
        return None;
    };
    let fetched = ctx
        .link
        .contracts(
            addr,
            &service.tenant,
            &service.service_id,
            &needed,
            CONTRACTS_TIMEOUT,
        )
        .await;
    let schemas = match fetched {
        Ok(schemas) => {
            ctx.metrics.transfer("contracts", "ok");
            schemas
        }
        Err(error) => {
            ctx.metrics.transfer("contracts", error.outcome());
            debug!(origin = %skey.0, service = %service.name, error = %error, "cannot fetch the origin's contracts; tried again later");
            return None;
        }
    };
    for schema in &schemas {
        match ctx
            .registry
            .put_schema(&service.tenant, local_id, schema)
            .await
        {
            Ok(()) => ctx.metrics.registry_op("put_schema", "ok"),
            Err(error) if error.is_retryable() || error.is_not_found() => {
                ctx.metrics.registry_op("put_schema", error.kind());
                debug!(service = %service.name, schema = %schema.id, error = %error, "cannot write a contract of a copy's service; tried again later");
                return None;
            }
            Err(error) => {
                ctx.metrics.registry_op("put_schema", error.kind());
                ctx.settle_contracts(skey, digest, Some(SCHEMA_REFUSED));
                return Some(Ensured::PropertiesRefused {
                    reason: SCHEMA_REFUSED,
                    error,
                });
            }
        }
    }
    ctx.settle_contracts(skey, digest, None);
    None
}

/// Store write failures come by the hundred a second when the store is down (a full disk):
/// one line every 10 s, with how many were not logged; every one is counted.
static STORE_FAILURES: crate::telemetry::LogThrottle = crate::telemetry::LogThrottle::new(10_000);

fn store_failed(ctx: &ImportCtx, what: &str, e: &StoreError) {
    ctx.metrics.registry_op("store_write", "error");
    if let Some(not_logged) = STORE_FAILURES.allow() {
        warn!(what, error = %e, not_logged, "mapping store write failed (more in the next 10 s are counted, op store_write, not logged)");
    }
}

fn registry_failed(ctx: &ImportCtx, op: &'static str, copy: &InstanceRef, e: &RegistryError) {
    ctx.metrics.registry_op(op, e.kind());
    warn!(op, copy = %copy, error = %e, "registry call for a copy failed");
}

/// Executes one action; never panics, reports what changed.
async fn execute(ctx: Arc<ImportCtx>, origin: String, action: Action) -> Done {
    match action {
        Action::Adopt { key, mapping } => adopt(&ctx, &origin, key, mapping).await,
        Action::Register {
            key,
            service,
            instance,
            generation,
            replace,
        } => {
            let skey = (
                origin.clone(),
                service.tenant.clone(),
                service.service_id.clone(),
            );
            let Some((service_id, _)) = ctx.cached_service(&skey) else {
                return Done::Failed(Some(key));
            };
            let origin_key = OriginKey {
                origin: origin.clone(),
                tenant: key.tenant.clone(),
                service_id: key.service_id.clone(),
                instance_id: key.instance_id.clone(),
            };
            let body = copy_body(
                &origin_key,
                &instance,
                &service_id,
                generation,
                ctx.settings.lease,
            );
            let mapping = Mapping {
                origin: origin.clone(),
                domain: key.tenant.domain.clone(),
                project: key.tenant.project.clone(),
                origin_service_id: key.service_id.clone(),
                origin_instance_id: key.instance_id.clone(),
                service_id: service_id.clone(),
                instance_id: body.instance_id.clone(),
                fingerprint: fingerprint(&instance),
                generation,
                updated_ms: unix_ms(),
            };
            // Intent first: a crash after this leaves a mapping whose copy is re-registered
            // or removed, never an unmarked copy.
            if let Err(e) = ctx
                .store
                .write(Group::from(Op::PutMapping(mapping.clone())))
                .await
            {
                store_failed(&ctx, "register", &e);
                return Done::Failed(Some(key));
            }
            if let Err(e) = ctx.registry.register(&body).await {
                if e.is_not_found() {
                    // The local service vanished behind our back: create it again next time.
                    ctx.forget_services(&service.tenant, &service_id);
                }
                registry_failed(&ctx, "register", &body.reference(), &e);
                if is_refusal(&e) {
                    return Done::Refused {
                        key,
                        digest: register_digest(&instance),
                        reason: instance_reason(&e, false),
                        error: e,
                    };
                }
                return Done::Failed(Some(key));
            }
            ctx.metrics.registry_op("register", "ok");
            debug!(
                origin = %origin,
                service = %format!("{}/{}", service.app, service.name),
                instance = %key,
                copy = %body.instance_id,
                generation,
                "copy registered"
            );
            let mut dropped = None;
            if let Some(old) = replace
                && old.instance_id != mapping.instance_id
            {
                match ctx.registry.unregister(&copy_ref(&old)).await {
                    Ok(()) => {
                        ctx.metrics.registry_op("unregister", "ok");
                        debug!(origin = %origin, instance = %key, copy = %old.instance_id, "copy of the previous generation removed");
                    }
                    Err(e) if e.is_not_found() => {}
                    Err(e) => {
                        registry_failed(&ctx, "unregister", &copy_ref(&old), &e);
                        // The new copy is registered; the old one is removed on retry.
                        return Done::Failed(Some(key));
                    }
                }
                let delete = Op::DeleteMapping {
                    origin: origin.clone(),
                    instance_id: old.instance_id.clone(),
                };
                if let Err(e) = ctx.store.write(Group::from(delete)).await {
                    store_failed(&ctx, "replace", &e);
                }
                dropped = Some(Box::new(old));
            }
            Done::Mapped {
                key,
                mapping: Box::new(mapping),
                registered: Some(Box::new(PresentCopy::of(&body))),
                dropped,
            }
        }
        Action::Update {
            key,
            copy,
            status,
            properties,
        } => {
            let refused = |key: InstanceRef, e: RegistryError, properties_put: bool| {
                if is_refusal(&e) {
                    Done::Refused {
                        digest: update_digest(status.as_ref(), properties.as_ref()),
                        reason: instance_reason(&e, properties_put),
                        error: e,
                        key,
                    }
                } else {
                    Done::Failed(Some(key))
                }
            };
            if let Some(status) = &status {
                if let Err(e) = ctx.registry.set_status(&copy, status).await {
                    registry_failed(&ctx, "set_status", &copy, &e);
                    return refused(key, e, false);
                }
                ctx.metrics.registry_op("set_status", "ok");
                debug!(origin = %origin, instance = %key, copy = %copy.instance_id, status, "copy status set");
            }
            // `plan_update` built the whole map with the origin mark: a property update
            // replaces every property.
            if let Some(properties) = &properties {
                if let Err(e) = ctx
                    .registry
                    .set_instance_properties(&copy, properties)
                    .await
                {
                    registry_failed(&ctx, "set_properties", &copy, &e);
                    return refused(key, e, true);
                }
                ctx.metrics.registry_op("set_properties", "ok");
                debug!(origin = %origin, instance = %key, copy = %copy.instance_id, properties = properties.len(), "copy properties set");
            }
            Done::Updated {
                key,
                copy_id: copy.instance_id,
                status,
                properties,
            }
        }
        Action::Remove { key, copy, mapping } => {
            match ctx.registry.unregister(&copy).await {
                Ok(()) => {
                    ctx.metrics.registry_op("unregister", "ok");
                    match &key {
                        Some(key) => {
                            debug!(origin = %origin, instance = %key, copy = %copy.instance_id, "copy removed");
                        }
                        None => {
                            debug!(origin = %origin, copy = %copy.instance_id, "orphan copy removed");
                        }
                    }
                }
                Err(e) if e.is_not_found() => {}
                Err(e) => {
                    registry_failed(&ctx, "unregister", &copy, &e);
                    return Done::RemoveFailed(key);
                }
            }
            if let Some(mapping) = mapping {
                let delete = Op::DeleteMapping {
                    origin: origin.clone(),
                    instance_id: mapping.instance_id,
                };
                if let Err(e) = ctx.store.write(Group::from(delete)).await {
                    store_failed(&ctx, "remove", &e);
                    return Done::RemoveFailed(key);
                }
            }
            Done::Removed {
                key,
                copy_id: copy.instance_id,
            }
        }
    }
}

async fn adopt(ctx: &ImportCtx, origin: &str, key: InstanceRef, mapping: Mapping) -> Done {
    match ctx
        .store
        .write(Group::from(Op::PutMapping(mapping.clone())))
        .await
    {
        Ok(()) => {
            info!(origin = %origin, copy = %mapping.instance_id, "adopted a copy that had no mapping");
            Done::Mapped {
                key,
                mapping: Box::new(mapping),
                registered: None,
                dropped: None,
            }
        }
        Err(e) => {
            store_failed(ctx, "adopt", &e);
            Done::Failed(Some(key))
        }
    }
}

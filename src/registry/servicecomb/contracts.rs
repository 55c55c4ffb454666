//! Contracts (schemas), tags and access rules in Service Center 1.4.8 and 2.x: list
//! (`GET …/schemas`, contents with `withSchema=1`), upload one (`PUT …/schemas/{schemaId}`),
//! tags (`GET`/`POST …/tags`, `DELETE …/tags/{keys}`), rules (`GET`/`POST …/rules`,
//! `DELETE …/rules/{ids}`), and the summaries, tags and rules every reported service carries.
//!
//! None of them is part of SC's service record, so [`SummaryFeed`] reads them: the tags and
//! rules of a service when it is first seen with instances (only those are exported), and
//! again for a rotating slice of the services at each resync (a tenth, at least 16: every service within ten resyncs), so that a change
//! reaches peers within ten resync intervals at a bounded cost per resync.
//!
//! SC's service record lists schema ids only; the summaries (the SDK's hash of each
//! contract) need `GET …/schemas`. [`SummaryFeed`] wraps the change feed and asks for them
//! only when a service first appears or its `schemas` list changes, and again at each resync
//! for services whose schemas SC lets change in place (an environment other than empty or
//! `production`): a production service's contract with content is frozen by SC (`400015`),
//! so there a known list means known summaries. Contents are read only when a peer asks
//! ([`schemas`] with `withSchema=1`).
//!
//! An upload SC refuses by its production rule (`400015`: a schema with content cannot
//! change; `400014`: a new id once the service lists some) is a
//! [`RegistryError::Refused`] with reason [`SCHEMA_REFUSED`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use futures::stream::{self, StreamExt};
use reqwest::Method;
use serde::{Deserialize, Serialize};
use tracing::debug;

use super::client::Request;
use super::{Inner, parse, to_json};
use crate::registry::{
    AccessRule, Change, ChangeFeed, Refusal, RegistryError, SCHEMA_REFUSED, Schema, Service, Tenant,
};

/// SC: a new schema id cannot be added to a production service that lists some.
const UNDEFINED_SCHEMA_ID: u32 = 400014;
/// SC: a production service's schema that has content cannot change.
const MODIFY_SCHEMA_NOT_ALLOW: u32 = 400015;

/// `{"schemas":[{schemaId, summary, schema}]}`; `{}` when there are none.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct SchemasReply {
    schemas: Vec<WireSchema>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct WireSchema {
    schema_id: String,
    summary: String,
    schema: String,
}

/// `PUT …/schemas/{schemaId}` body.
#[derive(Debug, Serialize)]
struct PutSchemaRequest<'a> {
    schema: &'a str,
    summary: &'a str,
}

/// The schemas of service `service_id` of `tenant`: with `content`, those that have content
/// (contents included); without, those that have a summary (contents empty). An id SC lists
/// without an upload has neither and is left out.
pub(super) async fn schemas(
    inner: &Inner,
    tenant: &Tenant,
    service_id: &str,
    content: bool,
) -> Result<Vec<Schema>, RegistryError> {
    let path = ["microservices", service_id, "schemas"];
    let query: &[(&str, &str)] = if content { &[("withSchema", "1")] } else { &[] };
    let body = inner
        .call(Request::new("schemas", Method::GET, tenant, &path).query(query))
        .await?;
    let reply = parse::<SchemasReply>("schemas", &body)?;
    Ok(reply
        .schemas
        .into_iter()
        .filter(|s| {
            !s.schema_id.is_empty()
                && if content {
                    !s.schema.is_empty()
                } else {
                    !s.summary.is_empty()
                }
        })
        .map(|s| Schema {
            id: s.schema_id,
            summary: s.summary,
            content: s.schema,
        })
        .collect())
}

/// Uploads `schema` into service `service_id` of `tenant`.
pub(super) async fn put_schema(
    inner: &Inner,
    tenant: &Tenant,
    service_id: &str,
    schema: &Schema,
) -> Result<(), RegistryError> {
    let body = to_json(
        "put_schema",
        &PutSchemaRequest {
            schema: &schema.content,
            summary: &schema.summary,
        },
    )?;
    let path = ["microservices", service_id, "schemas", schema.id.as_str()];
    match inner
        .call(Request::new("put_schema", Method::PUT, tenant, &path).json(body))
        .await
    {
        Ok(_) => Ok(()),
        Err(fault) if fault.is(MODIFY_SCHEMA_NOT_ALLOW) || fault.is(UNDEFINED_SCHEMA_ID) => {
            Err(RegistryError::Refused(Refusal {
                field: format!("put_schema {}", schema.id),
                reason: SCHEMA_REFUSED,
                detail: fault.error.to_string(),
            }))
        }
        Err(fault) => Err(fault.into()),
    }
}

/// What the feed last learnt of a service.
struct Known {
    /// The service as last reported, summaries, tags and rules included.
    service: Service,
    /// Whether its summaries were asked for on an instance change since the last resync.
    asked: bool,
    /// Whether its tags and rules were read at least once.
    access_read: bool,
}

impl Known {
    /// Some listed id has no summary yet: its content may still be uploaded (SDKs register
    /// the service with its schema ids, upload the contents, then register the instance).
    fn incomplete(&self) -> bool {
        self.service
            .schemas
            .iter()
            .any(|id| !self.service.schema_summaries.contains_key(id))
    }
}

/// Whether SC lets the schemas of `service` change in place (`SCHEMA_EDITABLE` off, the
/// default): not when its environment is empty or `production`.
fn editable(service: &Service) -> bool {
    !service.environment.is_empty() && service.environment != "production"
}

/// Fewest services whose tags and rules are read again at each resync.
const ACCESS_REFRESH_MIN: usize = 16;
/// Share of the services whose tags and rules are read again at each resync (one in ten:
/// every service within ten resyncs).
const ACCESS_REFRESH_DIVISOR: usize = 10;

/// `{"tags":{…}}`; `{}` without tags.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct TagsReply {
    tags: BTreeMap<String, String>,
}

/// `{"rules":[…]}`; `{}` without rules.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RulesReply {
    rules: Vec<WireRule>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default, rename_all = "camelCase")]
struct WireRule {
    #[serde(skip_serializing_if = "String::is_empty")]
    rule_id: String,
    rule_type: String,
    attribute: String,
    pattern: String,
    description: String,
}

impl WireRule {
    fn model(&self) -> AccessRule {
        AccessRule {
            rule_type: self.rule_type.clone(),
            attribute: self.attribute.clone(),
            pattern: self.pattern.clone(),
            description: self.description.clone(),
        }
    }
}

/// The tags of service `service_id` of `tenant`.
async fn tags(
    inner: &Inner,
    tenant: &Tenant,
    service_id: &str,
) -> Result<BTreeMap<String, String>, RegistryError> {
    let path = ["microservices", service_id, "tags"];
    let body = inner
        .call(Request::new("tags", Method::GET, tenant, &path))
        .await?;
    Ok(parse::<TagsReply>("tags", &body)?.tags)
}

/// The access rules of service `service_id` of `tenant`, with SC's ids.
async fn wire_rules(
    inner: &Inner,
    tenant: &Tenant,
    service_id: &str,
) -> Result<Vec<WireRule>, RegistryError> {
    let path = ["microservices", service_id, "rules"];
    let body = inner
        .call(Request::new("rules", Method::GET, tenant, &path))
        .await?;
    Ok(parse::<RulesReply>("rules", &body)?.rules)
}

/// The tags and access rules (sorted) of service `service_id` of `tenant`.
async fn access(
    inner: &Inner,
    tenant: &Tenant,
    service_id: &str,
) -> Result<(BTreeMap<String, String>, Vec<AccessRule>), RegistryError> {
    let tags = tags(inner, tenant, service_id).await?;
    let mut rules: Vec<AccessRule> = wire_rules(inner, tenant, service_id)
        .await?
        .iter()
        .map(WireRule::model)
        .collect();
    rules.sort();
    Ok((tags, rules))
}

/// Replaces the tags of service `service_id` of `tenant`: `POST …/tags` with the wanted
/// ones, then `DELETE …/tags/{k1,k2}` for any other left.
pub(super) async fn set_tags(
    inner: &Inner,
    tenant: &Tenant,
    service_id: &str,
    wanted: &BTreeMap<String, String>,
) -> Result<(), RegistryError> {
    let mut current = tags(inner, tenant, service_id).await?;
    if current == *wanted {
        return Ok(());
    }
    if !wanted.is_empty() {
        let body = to_json("set_service_tags", &serde_json::json!({ "tags": wanted }))?;
        let path = ["microservices", service_id, "tags"];
        inner
            .call(Request::new("set_service_tags", Method::POST, tenant, &path).json(body))
            .await?;
        current = tags(inner, tenant, service_id).await?;
    }
    let stale: Vec<&str> = current
        .keys()
        .filter(|k| !wanted.contains_key(*k))
        .map(String::as_str)
        .collect();
    if !stale.is_empty() {
        let keys = stale.join(",");
        let path = ["microservices", service_id, "tags", keys.as_str()];
        inner
            .call(Request::new(
                "set_service_tags",
                Method::DELETE,
                tenant,
                &path,
            ))
            .await?;
    }
    Ok(())
}

/// Replaces the access rules of service `service_id` of `tenant`: the rules not wanted are
/// deleted first (SC keeps one rule type per service), then the missing ones added.
pub(super) async fn set_rules(
    inner: &Inner,
    tenant: &Tenant,
    service_id: &str,
    wanted: &[AccessRule],
) -> Result<(), RegistryError> {
    let current = wire_rules(inner, tenant, service_id).await?;
    let stale: Vec<&str> = current
        .iter()
        .filter(|r| !wanted.contains(&r.model()))
        .map(|r| r.rule_id.as_str())
        .collect();
    if !stale.is_empty() {
        let ids = stale.join(",");
        let path = ["microservices", service_id, "rules", ids.as_str()];
        inner
            .call(Request::new(
                "set_service_rules",
                Method::DELETE,
                tenant,
                &path,
            ))
            .await?;
    }
    let held: Vec<AccessRule> = current.iter().map(WireRule::model).collect();
    let missing: Vec<WireRule> = wanted
        .iter()
        .filter(|r| !held.contains(r))
        .map(|r| WireRule {
            rule_id: String::new(),
            rule_type: r.rule_type.clone(),
            attribute: r.attribute.clone(),
            pattern: r.pattern.clone(),
            description: r.description.clone(),
        })
        .collect();
    if !missing.is_empty() {
        let body = to_json(
            "set_service_rules",
            &serde_json::json!({ "rules": missing }),
        )?;
        let path = ["microservices", service_id, "rules"];
        inner
            .call(Request::new("set_service_rules", Method::POST, tenant, &path).json(body))
            .await?;
    }
    Ok(())
}

/// What one service's lookups found.
type Found = (
    usize,
    Option<Result<Vec<Schema>, RegistryError>>,
    Option<Result<(BTreeMap<String, String>, Vec<AccessRule>), RegistryError>>,
);

/// The change feed with schema summaries, tags and rules filled in (see the module
/// documentation).
pub(super) struct SummaryFeed {
    inner: Arc<Inner>,
    feed: Box<dyn ChangeFeed>,
    known: HashMap<(Tenant, String), Known>,
    /// Where the next resync's refresh of tags and rules starts, in key order.
    refresh_from: usize,
}

impl SummaryFeed {
    pub(super) fn new(inner: Arc<Inner>, feed: Box<dyn ChangeFeed>) -> SummaryFeed {
        SummaryFeed {
            inner,
            feed,
            known: HashMap::new(),
            refresh_from: 0,
        }
    }

    /// The services whose tags and rules a resync reads again: a rotating slice.
    fn refresh_slice(&mut self) -> HashSet<(Tenant, String)> {
        let mut keys: Vec<&(Tenant, String)> = self.known.keys().collect();
        if keys.is_empty() {
            return HashSet::new();
        }
        keys.sort();
        let take = (keys.len() / ACCESS_REFRESH_DIVISOR)
            .max(ACCESS_REFRESH_MIN)
            .min(keys.len());
        let from = self.refresh_from % keys.len();
        self.refresh_from = from + take;
        keys.iter()
            .cycle()
            .skip(from)
            .take(take)
            .map(|k| (*k).clone())
            .collect()
    }

    /// Fills the summaries, tags and rules of `services`, asking SC, a few at a time: the
    /// summaries of those whose list changed (or is new) and, at a resync, of those whose
    /// schemas may still change (editable, or listed ids without content); the tags and
    /// rules of those in `read_access`; the others keep those last read (none if never
    /// read).
    async fn fill(
        &mut self,
        services: &mut [Service],
        resync: bool,
        read_access: &HashSet<(Tenant, String)>,
    ) {
        let mut ask = Vec::new();
        for (n, service) in services.iter_mut().enumerate() {
            let key = (service.tenant.clone(), service.service_id.clone());
            let known = self.known.get(&key);
            let ask_schemas = !service.schemas.is_empty()
                && known.is_none_or(|k| {
                    k.service.schemas != service.schemas
                        || (resync && (editable(service) || k.incomplete()))
                });
            let ask_access = read_access.contains(&key);
            if let Some(k) = known {
                if !ask_schemas && !service.schemas.is_empty() {
                    service
                        .schema_summaries
                        .clone_from(&k.service.schema_summaries);
                }
                if !ask_access {
                    service.tags.clone_from(&k.service.tags);
                    service.rules.clone_from(&k.service.rules);
                }
            }
            if ask_schemas || ask_access {
                ask.push((n, ask_schemas, ask_access));
            }
        }
        let inner = self.inner.clone();
        let answers: Vec<Found> = stream::iter(ask.into_iter().map(|(n, s, a)| {
            let inner = inner.clone();
            let (tenant, id) = (services[n].tenant.clone(), services[n].service_id.clone());
            async move {
                let summaries = if s {
                    Some(schemas(&inner, &tenant, &id, false).await)
                } else {
                    None
                };
                let tags_rules = if a {
                    Some(access(&inner, &tenant, &id).await)
                } else {
                    None
                };
                (n, summaries, tags_rules)
            }
        }))
        .buffer_unordered(self.inner.config.max_concurrent_calls.max(1))
        .collect()
        .await;
        let mut read = HashSet::new();
        for (n, summaries, tags_rules) in answers {
            let service = &mut services[n];
            let key = (service.tenant.clone(), service.service_id.clone());
            let known = self.known.get(&key);
            match summaries {
                Some(Ok(found)) => {
                    service.schema_summaries =
                        found.into_iter().map(|s| (s.id, s.summary)).collect();
                }
                // Reported with what was last known, asked again when next due.
                Some(Err(error)) => {
                    debug!(service = %service.name, error = %error, "cannot read the schema summaries of a service");
                    if let Some(k) = known {
                        service
                            .schema_summaries
                            .clone_from(&k.service.schema_summaries);
                    }
                }
                None => {}
            }
            match tags_rules {
                Some(Ok((tags, rules))) => {
                    service.tags = tags;
                    service.rules = rules;
                    read.insert(key);
                }
                Some(Err(error)) => {
                    debug!(service = %service.name, error = %error, "cannot read the tags and rules of a service");
                    if let Some(k) = known {
                        service.tags.clone_from(&k.service.tags);
                        service.rules.clone_from(&k.service.rules);
                    }
                }
                None => {}
            }
        }
        for service in services.iter() {
            let key = (service.tenant.clone(), service.service_id.clone());
            let before = self.known.get(&key);
            let asked = !resync && before.is_some_and(|k| k.asked);
            let access_read = read.contains(&key) || before.is_some_and(|k| k.access_read);
            self.known.insert(
                key,
                Known {
                    service: service.clone(),
                    asked,
                    access_read,
                },
            );
        }
    }

    /// On a change of an instance of a known service: reads its tags and rules if never
    /// read (a service is first seen without instances, and only services with instances
    /// are exported), and, once per resync, its summaries while listed schemas lack
    /// contents. Returns the service with what changed, if anything did.
    async fn on_instance(&mut self, tenant: &Tenant, service_id: &str) -> Option<Service> {
        let key = (tenant.clone(), service_id.to_owned());
        let known = self.known.get_mut(&key)?;
        let need_schemas = !known.asked && known.incomplete();
        let need_access = !known.access_read;
        if !need_schemas && !need_access {
            return None;
        }
        let mut changed = false;
        if need_schemas {
            known.asked = true;
            match schemas(&self.inner, tenant, service_id, false).await {
                Ok(found) => {
                    let summaries: BTreeMap<String, String> =
                        found.into_iter().map(|s| (s.id, s.summary)).collect();
                    if summaries != known.service.schema_summaries {
                        known.service.schema_summaries = summaries;
                        changed = true;
                    }
                }
                Err(error) => {
                    debug!(service = %known.service.name, error = %error, "cannot read the schema summaries of a service");
                }
            }
        }
        if need_access {
            match access(&self.inner, tenant, service_id).await {
                Ok((tags, rules)) => {
                    known.access_read = true;
                    if tags != known.service.tags || rules != known.service.rules {
                        known.service.tags = tags;
                        known.service.rules = rules;
                        changed = true;
                    }
                }
                Err(error) => {
                    debug!(service = %known.service.name, error = %error, "cannot read the tags and rules of a service");
                }
            }
        }
        changed.then(|| known.service.clone())
    }
}

#[async_trait]
impl ChangeFeed for SummaryFeed {
    async fn next(&mut self) -> Result<Vec<Change>, RegistryError> {
        let changes = self.feed.next().await?;
        let mut out = Vec::with_capacity(changes.len());
        for mut change in changes {
            match &mut change {
                Change::Service(service) => {
                    self.fill(std::slice::from_mut(service), false, &HashSet::new())
                        .await;
                }
                Change::Resync(snapshot) => {
                    let present: HashSet<(Tenant, String)> = snapshot
                        .services
                        .iter()
                        .map(|s| (s.tenant.clone(), s.service_id.clone()))
                        .collect();
                    self.known.retain(|key, _| present.contains(key));
                    // Tags and rules are read for services with instances (only those are
                    // exported): not read yet, or due for a refresh.
                    let mut access = self.refresh_slice();
                    for i in &snapshot.instances {
                        let key = (i.tenant.clone(), i.service_id.clone());
                        if !access.contains(&key)
                            && self.known.get(&key).is_none_or(|k| !k.access_read)
                        {
                            access.insert(key);
                        }
                    }
                    self.fill(&mut snapshot.services, true, &access).await;
                }
                Change::ServiceRemoved { tenant, service_id } => {
                    self.known.remove(&(tenant.clone(), service_id.clone()));
                }
                Change::Instance(instance) => {
                    let (tenant, id) = (instance.tenant.clone(), instance.service_id.clone());
                    if let Some(service) = self.on_instance(&tenant, &id).await {
                        out.push(Change::Service(service));
                    }
                }
                Change::InstanceRemoved(_) => {}
            }
            out.push(change);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use tokio_util::sync::CancellationToken;
    use url::Url;

    use super::super::{ServiceComb, ServiceCombConfig};
    use super::*;
    use crate::devreg::{DevRegistryConfig, spawn};
    use crate::registry::Registry;

    async fn adapter() -> (ServiceComb, CancellationToken) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let token = CancellationToken::new();
        let handle = spawn(listener, DevRegistryConfig::default(), token.clone()).await;
        let url = Url::parse(&handle.url()).expect("url");
        let sc = ServiceComb::new(ServiceCombConfig::new(vec![url])).expect("adapter");
        (sc, token)
    }

    fn schema(id: &str, content: &str, summary: &str) -> Schema {
        Schema {
            id: id.into(),
            summary: summary.into(),
            content: content.into(),
        }
    }

    fn rule(rule_type: &str, pattern: &str) -> AccessRule {
        AccessRule {
            rule_type: rule_type.into(),
            attribute: "ServiceName".into(),
            pattern: pattern.into(),
            description: String::new(),
        }
    }

    /// SC's production rule reads as `schema_refused`: a schema with content cannot change
    /// (`400015`), and an id the service does not list cannot be added (`400014`).
    #[tokio::test]
    async fn production_schemas_are_frozen_and_their_refusal_is_named() {
        let (sc, token) = adapter().await;
        let tenant = Tenant::default();
        let service = Service {
            service_id: "prov".into(),
            app: "shop".into(),
            name: "prov".into(),
            version: "1.0.0".into(),
            schemas: vec!["a".into()],
            ..Service::default()
        };
        let id = sc.ensure_service(&service).await.expect("create");
        let a = schema("a", "openapi: 3.0.0", "s1");
        sc.put_schema(&tenant, &id, &a).await.expect("first upload");
        assert_eq!(sc.schemas(&tenant, &id).await, Ok(vec![a.clone()]));
        for refused in [schema("a", "changed", "s2"), schema("b", "new", "s3")] {
            match sc.put_schema(&tenant, &id, &refused).await {
                Err(RegistryError::Refused(r)) => assert_eq!(r.reason, SCHEMA_REFUSED),
                other => panic!("{} should be refused: {other:?}", refused.id),
            }
        }
        assert_eq!(sc.schemas(&tenant, &id).await, Ok(vec![a]));
        token.cancel();
    }

    /// Tags and rules are replaced, a switch of rule type included.
    #[tokio::test]
    async fn tags_and_rules_are_replaced() {
        let (sc, token) = adapter().await;
        let tenant = Tenant::default();
        let service = Service {
            app: "shop".into(),
            name: "guarded".into(),
            version: "1.0.0".into(),
            ..Service::default()
        };
        let id = sc.ensure_service(&service).await.expect("create");
        let inner = &sc.inner;
        let first = BTreeMap::from([
            ("a".to_owned(), "one".to_owned()),
            ("b".into(), "two".into()),
        ]);
        sc.set_service_tags(&tenant, &id, &first)
            .await
            .expect("tags");
        let second = BTreeMap::from([("b".to_owned(), "three".to_owned())]);
        sc.set_service_tags(&tenant, &id, &second)
            .await
            .expect("tags");
        sc.set_service_rules(&tenant, &id, &[rule("BLACK", "^x")])
            .await
            .expect("rules");
        let white = vec![rule("WHITE", "^a"), rule("WHITE", "^b")];
        sc.set_service_rules(&tenant, &id, &white)
            .await
            .expect("switch to a white list");
        assert_eq!(access(inner, &tenant, &id).await, Ok((second, white)));
        sc.set_service_tags(&tenant, &id, &BTreeMap::new())
            .await
            .expect("no tags");
        sc.set_service_rules(&tenant, &id, &[])
            .await
            .expect("no rules");
        assert_eq!(
            access(inner, &tenant, &id).await,
            Ok((BTreeMap::new(), Vec::new()))
        );
        token.cancel();
    }
}

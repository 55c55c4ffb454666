//! Contracts (schemas) in Service Center 1.4.8 and 2.x: list (`GET …/schemas`, contents
//! with `withSchema=1`), upload one (`PUT …/schemas/{schemaId}`), and the summaries every
//! reported service carries.
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
    Change, ChangeFeed, Refusal, RegistryError, SCHEMA_REFUSED, Schema, Service, Tenant,
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

/// What the feed last learnt of a service's schemas.
struct Known {
    /// The service as last reported, summaries included.
    service: Service,
    /// Whether its summaries were asked for on an instance change since the last resync.
    asked: bool,
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

/// The change feed with schema summaries filled in (see the module documentation).
pub(super) struct SummaryFeed {
    inner: Arc<Inner>,
    feed: Box<dyn ChangeFeed>,
    known: HashMap<(Tenant, String), Known>,
}

impl SummaryFeed {
    pub(super) fn new(inner: Arc<Inner>, feed: Box<dyn ChangeFeed>) -> SummaryFeed {
        SummaryFeed {
            inner,
            feed,
            known: HashMap::new(),
        }
    }

    /// Fills the summaries of `services`, asking SC, a few at a time, for those whose list
    /// changed (or is new) and, at a resync, for those whose schemas may still change
    /// (editable, or listed ids without content).
    async fn fill(&mut self, services: &mut [Service], resync: bool) {
        let mut ask = Vec::new();
        for (n, service) in services.iter_mut().enumerate() {
            let key = (service.tenant.clone(), service.service_id.clone());
            if service.schemas.is_empty() {
                self.known.remove(&key);
                continue;
            }
            match self.known.get(&key) {
                Some(known)
                    if known.service.schemas == service.schemas
                        && !(resync && (editable(service) || known.incomplete())) =>
                {
                    service
                        .schema_summaries
                        .clone_from(&known.service.schema_summaries);
                }
                _ => ask.push(n),
            }
        }
        let inner = self.inner.clone();
        let answers: Vec<(usize, Result<Vec<Schema>, RegistryError>)> =
            stream::iter(ask.into_iter().map(|n| {
                let inner = inner.clone();
                let (tenant, id) = (services[n].tenant.clone(), services[n].service_id.clone());
                async move { (n, schemas(&inner, &tenant, &id, false).await) }
            }))
            .buffer_unordered(self.inner.config.max_concurrent_calls.max(1))
            .collect()
            .await;
        for (n, answer) in answers {
            let service = &mut services[n];
            let key = (service.tenant.clone(), service.service_id.clone());
            match answer {
                Ok(found) => {
                    service.schema_summaries =
                        found.into_iter().map(|s| (s.id, s.summary)).collect();
                }
                // Reported with the summaries last known, asked again when next due.
                Err(error) => {
                    debug!(service = %service.name, error = %error, "cannot read the schema summaries of a service");
                    if let Some(known) = self.known.get(&key) {
                        service
                            .schema_summaries
                            .clone_from(&known.service.schema_summaries);
                    }
                }
            }
        }
        for service in services.iter().filter(|s| !s.schemas.is_empty()) {
            let key = (service.tenant.clone(), service.service_id.clone());
            let asked = !resync && self.known.get(&key).is_some_and(|k| k.asked);
            self.known.insert(
                key,
                Known {
                    service: service.clone(),
                    asked,
                },
            );
        }
    }

    /// On a change of an instance of a service whose listed schemas lack contents, asks
    /// once (per resync) whether they came: the service with its new summaries, if they
    /// changed.
    async fn uploaded(&mut self, tenant: &Tenant, service_id: &str) -> Option<Service> {
        let key = (tenant.clone(), service_id.to_owned());
        let known = self.known.get_mut(&key)?;
        if known.asked || !known.incomplete() {
            return None;
        }
        known.asked = true;
        let found = match schemas(&self.inner, tenant, service_id, false).await {
            Ok(found) => found,
            Err(error) => {
                debug!(service = %known.service.name, error = %error, "cannot read the schema summaries of a service");
                return None;
            }
        };
        let summaries: BTreeMap<String, String> =
            found.into_iter().map(|s| (s.id, s.summary)).collect();
        debug!(service = %known.service.name, schemas = summaries.len(), "schema summaries read after an instance change");
        if summaries == known.service.schema_summaries {
            return None;
        }
        known.service.schema_summaries = summaries;
        Some(known.service.clone())
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
                    self.fill(std::slice::from_mut(service), false).await;
                }
                Change::Resync(snapshot) => {
                    let present: HashSet<(Tenant, String)> = snapshot
                        .services
                        .iter()
                        .map(|s| (s.tenant.clone(), s.service_id.clone()))
                        .collect();
                    self.known.retain(|key, _| present.contains(key));
                    self.fill(&mut snapshot.services, true).await;
                }
                Change::ServiceRemoved { tenant, service_id } => {
                    self.known.remove(&(tenant.clone(), service_id.clone()));
                }
                Change::Instance(instance) => {
                    let (tenant, id) = (instance.tenant.clone(), instance.service_id.clone());
                    if let Some(service) = self.uploaded(&tenant, &id).await {
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

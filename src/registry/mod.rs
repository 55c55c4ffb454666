//! Registry adapters: the one trait the sync engine talks to, the registry-neutral data model
//! it speaks, the rules data must follow to travel, and one folder per registry kind.
//!
//! - [`Registry`]: the operations the sync engine needs, nothing more.
//! - [`ChangeFeed`]: the local registry's changes, as a pull-based stream each adapter
//!   implements in the way its registry allows (ServiceComb: batch find with revisions).
//! - [`model`]: services, instances and snapshots, independent of any registry's JSON.
//! - [`factory`]: [`build`] turns the configured registry kind into an `Arc<dyn Registry>`;
//!   each adapter owns its tuning, defaults and metrics.
//! - [`bounds`]: the wire-safety bounds every registry shares (sizes, counts, control
//!   characters, the fields the model needs), checked on everything received from a peer and
//!   on everything exported.
//! - [`servicecomb`]: Apache ServiceComb Service Center, REST API v4, with its own rules
//!   (`servicecomb::rules`) behind [`Registry::accepts_service`] and
//!   [`Registry::accepts_instance`].
//! - [`eureka`]: Netflix Eureka (REST API, also behind Spring Cloud's `/eureka`), with its
//!   own rules (`eureka::rules`); it has no services at rest, so service ids are derived and
//!   service properties, contracts, tags and rules are not carried.
//! - [`memory`]: an in-memory twin (of ServiceComb, rules included) for tests of the layers
//!   above.
//! - [`contract`]: the suite every adapter must pass.
//!
//! # Two kinds of rules
//! What may travel between data centres is decided twice. The [`bounds`] are the same for
//! every registry: a peer refuses a message that breaks them, and the exporter leaves out a
//! local object that breaks them. Whether a registry can *hold* a value is the rule of its
//! kind, asked through [`Registry::accepts_service`] / [`Registry::accepts_instance`] by the
//! importer before it writes a copy: a Eureka instance id `host:app:8080` travels, and is
//! refused (counted, logged) only where a ServiceComb would receive it.
//!
//! # Adding a registry kind
//! One folder, `src/registry/<kind>/`, with the adapter (its `*Config` with a `from_config`
//! and defaults, HTTP client, JSON types kept private, metrics, and its `rules.rs` behind
//! `accepts_*`), passing [`contract::registry_contract`] (or [`contract::registry_contract_with`]
//! and a profile whose differences `contract.rs` documents, as Eureka's); then one arm in
//! [`factory::build`] and the kind's name in the configuration's `Plugin`.

pub mod bounds;
pub mod contract;
pub mod eureka;
pub mod factory;
pub mod filter;
#[cfg(test)]
pub(crate) mod fixtures;
#[cfg(test)]
pub(crate) mod fuzz_json;
pub mod memory;
pub mod model;
mod route;
pub mod servicecomb;
pub mod tls;

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;

pub use factory::build;
pub use model::{
    AccessRule, Change, HealthCheck, Instance, InstanceRef, RegistryIdentity, Schema, Service,
    Snapshot, Tenant,
};

/// The longest one attempt of a registry call may take before the adapter gives it up (the
/// ServiceComb adapter's default `timeout` per address). A request already sent may still be
/// applied by the registry until this long after it was sent, whatever the caller does: a
/// new leader's removal hold counts with it (see `cluster::member`).
pub const LONGEST_CALL: Duration = Duration::from_secs(5);

/// Why a registry operation failed, sorted by what the caller should do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// The service or instance named in the call does not exist (SC `400012`, `400017`).
    #[error("not found: {0}")]
    NotFound(String),
    /// The registry refused the data as invalid (SC `400001` and other 4xx). Retrying the
    /// same call will fail again.
    #[error("rejected by the registry: {0}")]
    Invalid(String),
    /// The registry could not be reached or answered with a server error or timeout. Retry
    /// later.
    #[error("registry unavailable: {0}")]
    Unavailable(String),
    /// The registry answered something this adapter does not understand: malformed JSON, an
    /// unexpected status or shape. Logged and counted; retried later.
    #[error("unexpected registry reply: {0}")]
    Protocol(String),
    /// The registry refused the call for a reason worth telling apart (`refusal.reason`:
    /// `too_large` for a body over the registry's cap, `quota`, `alias_conflict`), so the
    /// caller can count and report it as such. Retrying the same call fails again until the
    /// data or the registry changes.
    #[error("refused by the registry: {0}")]
    Refused(Refusal),
}

impl RegistryError {
    /// Whether retrying the same call later can succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            RegistryError::Unavailable(_) | RegistryError::Protocol(_)
        )
    }

    /// Whether the named object does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, RegistryError::NotFound(_))
    }

    /// A short label for metrics (`not_found`, `invalid`, `unavailable`, `protocol`,
    /// `refused`).
    pub fn kind(&self) -> &'static str {
        match self {
            RegistryError::NotFound(_) => "not_found",
            RegistryError::Invalid(_) => "invalid",
            RegistryError::Unavailable(_) => "unavailable",
            RegistryError::Protocol(_) => "protocol",
            RegistryError::Refused(_) => "refused",
        }
    }
}

/// Why a registry kind cannot hold an object that passed the wire-safety bounds every
/// registry shares ([`bounds`]): a rule of that kind (ServiceComb's id characters, for
/// example).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {detail}")]
pub struct Refusal {
    /// The field that breaks the rule, as a path (`instance.instance_id`, `service.app`);
    /// in a [`RegistryError::Refused`], the call the registry refused.
    pub field: String,
    /// A short label for metrics, from the same set as the bounds' (`bad_id`, `bad_value`,
    /// `missing_field`, `too_large`); a registry's refusal adds `quota` and `alias_conflict`.
    pub reason: &'static str,
    /// What is wrong, for logs.
    pub detail: String,
}

/// The [`Refusal::reason`] of a schema write the registry refuses (a change of a
/// production contract).
pub const SCHEMA_REFUSED: &str = "schema_refused";

/// What a batch heartbeat found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeartbeatReport {
    /// Instances the registry does not know (expired or deleted): the caller registers
    /// them again. Every other instance of the batch was renewed.
    pub unknown: Vec<InstanceRef>,
}

/// One registry, as the sync engine sees it. Every method is one registry operation with a
/// timeout; none retries on its own beyond moving to another address of the same registry.
///
/// Objects of the registry itself (ServiceComb's `SERVICECENTER` and shared services) are
/// never part of a snapshot or the change feed.
#[async_trait]
pub trait Registry: Send + Sync {
    /// Which registry this is: kind, version and a stable identifier, so that syncers
    /// claiming one data centre but serving different registries can be told apart.
    ///
    /// # Errors
    /// [`RegistryError::Unavailable`] when the registry cannot be reached; doubles as the
    /// health check.
    async fn identity(&self) -> Result<RegistryIdentity, RegistryError>;

    /// Every service and instance of every tenant, as one consistent view.
    ///
    /// # Errors
    /// When the registry cannot be read; never returns a partial snapshot.
    async fn snapshot(&self) -> Result<Snapshot, RegistryError>;

    /// A new feed of this registry's changes. Each feed keeps its own position.
    fn change_feed(&self) -> Box<dyn ChangeFeed>;

    /// Whether this kind of registry can hold `service` (as the service of a copy): its own
    /// rules for ids, names and fields, beyond the wire-safety bounds every registry shares.
    /// The importer checks before any write, so an object another kind of registry allows
    /// is refused here, counted and logged, instead of failing call after call. The default
    /// accepts everything (a kind without rules of its own); a wrapper such as
    /// `cluster::gated::GatedRegistry` forwards to the registry it wraps.
    ///
    /// # Errors
    /// A [`Refusal`] naming the field and the rule.
    fn accepts_service(&self, _service: &Service) -> Result<(), Refusal> {
        Ok(())
    }

    /// Whether this kind of registry can hold `instance` as a copy; see
    /// [`Registry::accepts_service`].
    ///
    /// # Errors
    /// A [`Refusal`] naming the field and the rule.
    fn accepts_instance(&self, _instance: &Instance) -> Result<(), Refusal> {
        Ok(())
    }

    /// Makes sure a service like `service` exists in `service.tenant` and returns its id
    /// there, creating it under `service.service_id` when missing. Idempotent: calling it
    /// again for the same service returns the same id. The properties and alias of an
    /// existing service are not changed (use [`Registry::set_service_properties`]).
    ///
    /// # Errors
    /// [`RegistryError::Invalid`] when the registry refuses the service (for example an id
    /// already used by another service).
    async fn ensure_service(&self, service: &Service) -> Result<String, RegistryError>;

    /// Replaces the properties of a service.
    ///
    /// # Errors
    /// [`RegistryError::NotFound`] when the service does not exist.
    async fn set_service_properties(
        &self,
        tenant: &Tenant,
        service_id: &str,
        properties: &BTreeMap<String, String>,
    ) -> Result<(), RegistryError>;

    /// The schemas of service `service_id` of `tenant` that have content, contents
    /// included: read only when a peer asks for them (a contract is tens of KiB and changes
    /// rarely). The default knows no schemas (a registry kind without contracts).
    ///
    /// # Errors
    /// [`RegistryError::NotFound`] when the service does not exist.
    async fn schemas(
        &self,
        _tenant: &Tenant,
        _service_id: &str,
    ) -> Result<Vec<Schema>, RegistryError> {
        Ok(Vec::new())
    }

    /// Writes one schema (content and summary) of service `service_id` of `tenant`,
    /// replacing one with the same id. A registry that refuses to change a schema that has
    /// content (ServiceComb in a `production` environment, `400015`; a new id there,
    /// `400014`) answers [`RegistryError::Refused`] with reason `schema_refused`. The
    /// default refuses every write (a registry kind without contracts).
    ///
    /// # Errors
    /// [`RegistryError::NotFound`] when the service does not exist,
    /// [`RegistryError::Refused`] as above.
    async fn put_schema(
        &self,
        _tenant: &Tenant,
        _service_id: &str,
        schema: &Schema,
    ) -> Result<(), RegistryError> {
        Err(RegistryError::Refused(Refusal {
            field: format!("schema {}", schema.id),
            reason: SCHEMA_REFUSED,
            detail: "this registry kind holds no contracts".into(),
        }))
    }

    /// Replaces the tags of a service. The default refuses (a registry kind without tags).
    ///
    /// # Errors
    /// [`RegistryError::NotFound`] when the service does not exist.
    async fn set_service_tags(
        &self,
        _tenant: &Tenant,
        _service_id: &str,
        _tags: &BTreeMap<String, String>,
    ) -> Result<(), RegistryError> {
        Err(RegistryError::Refused(Refusal {
            field: "set_service_tags".into(),
            reason: "unsupported",
            detail: "this registry kind holds no tags".into(),
        }))
    }

    /// Replaces the access rules of a service. The default refuses (a registry kind
    /// without access rules).
    ///
    /// # Errors
    /// [`RegistryError::NotFound`] when the service does not exist.
    async fn set_service_rules(
        &self,
        _tenant: &Tenant,
        _service_id: &str,
        _rules: &[AccessRule],
    ) -> Result<(), RegistryError> {
        Err(RegistryError::Refused(Refusal {
            field: "set_service_rules".into(),
            reason: "unsupported",
            detail: "this registry kind holds no access rules".into(),
        }))
    }

    /// Registers `instance` under its own `instance_id` in service `instance.service_id`.
    /// Registering an id that already exists renews it; whether its data is replaced depends
    /// on the registry (ServiceComb keeps the old data), so callers change status and
    /// properties with the dedicated calls and replace an instance to change endpoints.
    ///
    /// # Errors
    /// [`RegistryError::NotFound`] when the service does not exist,
    /// [`RegistryError::Invalid`] when the registry refuses the instance.
    async fn register(&self, instance: &Instance) -> Result<(), RegistryError>;

    /// Renews the leases of `instances` in as few calls as the registry allows, and tells
    /// which of them the registry does not know, even where its answer does not say.
    ///
    /// # Errors
    /// When the registry cannot be reached; an unknown instance is not an error.
    async fn heartbeat(&self, instances: &[InstanceRef]) -> Result<HeartbeatReport, RegistryError>;

    /// Sets the status (`UP`, `DOWN`, `STARTING`, `TESTING`, `OUTOFSERVICE`) of an instance.
    ///
    /// # Errors
    /// [`RegistryError::NotFound`] for an unknown instance, [`RegistryError::Invalid`] for
    /// a status the registry does not know.
    async fn set_status(&self, instance: &InstanceRef, status: &str) -> Result<(), RegistryError>;

    /// Replaces the properties of an instance.
    ///
    /// # Errors
    /// [`RegistryError::NotFound`] for an unknown instance.
    async fn set_instance_properties(
        &self,
        instance: &InstanceRef,
        properties: &BTreeMap<String, String>,
    ) -> Result<(), RegistryError>;

    /// Removes an instance.
    ///
    /// # Errors
    /// [`RegistryError::NotFound`] when it does not exist (callers that only want it gone
    /// treat that as success).
    async fn unregister(&self, instance: &InstanceRef) -> Result<(), RegistryError>;
}

/// The changes of one registry, pulled one batch at a time.
///
/// `next` waits until there is something to report (or its poll interval passes) and
/// returns the changes since the previous call. The first call returns a
/// [`Change::Resync`] with the full snapshot; later calls return increments, and a periodic
/// [`Change::Resync`] as a safety net against anything an increment missed.
#[async_trait]
pub trait ChangeFeed: Send {
    /// The next batch of changes; may be empty when a poll found nothing.
    ///
    /// # Errors
    /// When the registry cannot be read; the feed keeps its position, so the next call
    /// carries on.
    async fn next(&mut self) -> Result<Vec<Change>, RegistryError>;
}

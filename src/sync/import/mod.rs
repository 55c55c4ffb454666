//! The import side: one actor per origin data centre mirrors that origin's exported
//! instances into the local registry and keeps the copies alive.
//!
//! Each actor holds three views ([`views::Views`]) and reconciles them:
//! - **desired**: the origin's exported instances, from pushes and pulls;
//! - **mappings**: the copies syncer registered (the mapping store, written intent first);
//! - **present**: the copies the local registry actually holds, from its change feed and
//!   written through by the actor's own calls.
//!
//! The parts, in the order data goes through them:
//! - [`router`]: [`Importers`], one actor per origin, created on first need; routes pushes,
//!   announcements and copy observations to the actor concerned.
//! - [`mailbox`]: the bounded, coalescing mailbox between the router and an actor.
//! - `actor`: the loop that owns the views, its timers, pulls and heartbeats.
//! - [`views`]: the three views and how pushes, pulls and the local feed change them.
//! - [`plan`]: the pure planner: views × safety state → actions.
//! - `execute`: runs actions against the registry and the store, 32 at a time.
//! - `services`: which local services may take an origin's service properties (only those
//!   syncer created for that origin's copies, without instances of their own).
//! - `failures`: the services whose local service is in trouble; their copies wait with
//!   back-off while every other service's go on.

mod actor;
mod execute;
mod failures;
pub(crate) mod mailbox;
pub(crate) mod plan;
mod router;
mod services;
pub(crate) mod views;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::watch;

pub(crate) use self::router::Importers;
use self::services::{Extras, LocalServices, Ownership};
use super::EngineSettings;
use super::link::PeerLink;
use super::metrics::SyncMetrics;
use super::peers::{Conflicts, PeerMap};
use crate::registry::{Change, Registry, Tenant};
use crate::store::StoreHandle;

/// Shared by every actor.
pub(crate) struct ImportCtx {
    /// This data centre.
    pub cluster: String,
    pub registry: Arc<dyn Registry>,
    pub store: StoreHandle,
    pub settings: EngineSettings,
    pub metrics: SyncMetrics,
    pub peers: watch::Receiver<PeerMap>,
    /// Cluster names in conflict: such an origin is not imported while it lasts.
    conflicts: watch::Receiver<Conflicts>,
    pub link: Arc<dyn PeerLink>,
    /// Local service ids of origin services already ensured, with the origin properties
    /// handled (mirrored, or found to belong to someone else).
    services: Mutex<HashMap<ServiceKey, EnsuredService>>,
    /// The local services as the local feed reports them: which ones take an origin's
    /// properties.
    local_services: Mutex<LocalServices>,
    /// Digest of the properties (as they would be written) the local registry refused for
    /// each origin service: the same content is not sent again.
    refused_properties: Mutex<HashMap<ServiceKey, (u64, &'static str)>>,
    /// Digest of the origin's schema summaries last settled for each origin service's local
    /// service: written, or refused (with the reason): not fetched nor written again until
    /// the origin's contracts change.
    contracts: Mutex<HashMap<ServiceKey, (u64, Option<&'static str>)>>,
    /// The same for the origin's tags and access rules (one digest over both).
    access: Mutex<HashMap<ServiceKey, (u64, Option<&'static str>)>>,
}

/// `(origin, tenant, origin service id)`.
type ServiceKey = (String, Tenant, String);
/// The local id of an ensured service and the origin properties it is settled for: `None`
/// while the local feed has not shown the service (its properties are not known, so it is
/// ensured again at its next use).
type EnsuredService = (String, Option<BTreeMap<String, String>>);

impl ImportCtx {
    pub(crate) fn new(
        cluster: String,
        registry: Arc<dyn Registry>,
        store: StoreHandle,
        settings: EngineSettings,
        metrics: SyncMetrics,
        peers: watch::Receiver<PeerMap>,
        link: Arc<dyn PeerLink>,
    ) -> ImportCtx {
        let (_, conflicts) = watch::channel(Conflicts::new());
        ImportCtx {
            cluster,
            registry,
            store,
            settings,
            metrics,
            peers,
            conflicts,
            link,
            services: Mutex::new(HashMap::new()),
            local_services: Mutex::new(LocalServices::default()),
            refused_properties: Mutex::new(HashMap::new()),
            contracts: Mutex::new(HashMap::new()),
            access: Mutex::new(HashMap::new()),
        }
    }

    /// The same context, told the names in conflict by `conflicts`.
    pub(crate) fn with_conflicts(mut self, conflicts: watch::Receiver<Conflicts>) -> ImportCtx {
        self.conflicts = conflicts;
        self
    }

    /// Whether `origin`'s name is claimed by members serving different registries now.
    fn in_conflict(&self, origin: &str) -> bool {
        self.conflicts.borrow().contains(origin)
    }

    /// Whether `origin`'s copies are kept alive when no exchange with it succeeded within
    /// the grace period: with `--keep-stale-copies`, and while its name is in conflict. A
    /// conflict is a misconfiguration elsewhere (a second data centre claiming the name);
    /// the data centre the copies mirror may be fine, and letting them expire would turn
    /// that mistake into an outage of its instances everywhere else. So they stay as they
    /// were before the conflict, neither updated nor removed, until it ends (and `/health`
    /// says degraded meanwhile).
    ///
    /// `keep_stale_copies` is the operator's `--keep-stale-copies`, already bounded by
    /// `--keep-stale-for` (`OriginHealth::keeps_stale_copies`); a conflict is not bounded.
    fn keeps_stale(&self, origin: &str, keep_stale_copies: bool) -> bool {
        keep_stale_copies || self.in_conflict(origin)
    }

    /// Takes the own changes of one local feed batch into the table of local services.
    fn local_changes(&self, changes: &[Change]) {
        self.local_services
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .apply(changes);
    }

    /// Whether `origin`'s service properties may be written into local service `local_id`.
    fn ownership(&self, origin: &str, tenant: &Tenant, local_id: &str) -> Ownership {
        self.local_services
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .ownership(origin, tenant, local_id)
    }

    fn cached_service(&self, key: &ServiceKey) -> Option<EnsuredService> {
        self.services
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .cloned()
    }

    fn cache_service(
        &self,
        key: ServiceKey,
        id: String,
        properties: Option<BTreeMap<String, String>>,
    ) {
        self.services
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, (id, properties));
    }

    /// Why the local registry refused exactly `digest` as the properties of `key`'s local
    /// service, if it did.
    fn properties_refused(&self, key: &ServiceKey, digest: u64) -> Option<&'static str> {
        self.refused_properties
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .filter(|(refused, _)| *refused == digest)
            .map(|(_, reason)| *reason)
    }

    /// Remembers (`Some((digest, reason))`) or forgets the properties the local registry
    /// refused for `key`.
    fn refuse_properties(&self, key: &ServiceKey, digest: Option<(u64, &'static str)>) {
        let mut refused = self
            .refused_properties
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match digest {
            Some(digest) => refused.insert(key.clone(), digest),
            None => refused.remove(key),
        };
    }

    /// Whether the local feed has shown local service `local_id` of `tenant`.
    fn local_known(&self, tenant: &Tenant, local_id: &str) -> bool {
        self.local_services
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .knows(tenant, local_id)
    }

    /// The schema summaries, tags and access rules local service `local_id` of `tenant`
    /// has.
    fn local_extras(&self, tenant: &Tenant, local_id: &str) -> Extras {
        self.local_services
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extras(tenant, local_id)
    }

    /// As [`ImportCtx::contracts_settled`], for the origin's tags and access rules.
    fn access_settled(&self, key: &ServiceKey, digest: u64) -> Option<Option<&'static str>> {
        self.access
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .filter(|(settled, _)| *settled == digest)
            .map(|(_, refused)| *refused)
    }

    /// Whether tags and access rules were ever settled for `key`.
    fn access_known(&self, key: &ServiceKey) -> bool {
        self.access
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(key)
    }

    /// As [`ImportCtx::settle_contracts`], for the origin's tags and access rules.
    fn settle_access(&self, key: &ServiceKey, digest: u64, refused: Option<&'static str>) {
        self.access
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key.clone(), (digest, refused));
    }

    /// How the origin's contracts with summaries digest `digest` were settled for `key`'s
    /// local service: `Some(None)` written, `Some(Some(reason))` refused, `None` not yet.
    fn contracts_settled(&self, key: &ServiceKey, digest: u64) -> Option<Option<&'static str>> {
        self.contracts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .filter(|(settled, _)| *settled == digest)
            .map(|(_, refused)| *refused)
    }

    /// Remembers that the contracts with digest `digest` were written (`None`) or refused.
    fn settle_contracts(&self, key: &ServiceKey, digest: u64, refused: Option<&'static str>) {
        self.contracts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key.clone(), (digest, refused));
    }

    fn forget_services(&self, tenant: &Tenant, local_id: &str) {
        self.services
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|(_, t, _), (id, _)| !(t == tenant && id == local_id));
    }
}

//! The three views an actor reconciles, and how what it learns changes them.
//!
//! - **desired**: the origin's exported instances (pushes, pulled increments and
//!   snapshots), each with its service body held once;
//! - **mappings**: the copies syncer registered, by origin instance, with the reverse index
//!   copy id → origin instance, and the extra mappings a crash mid-replacement left;
//! - **present**: the copies of this origin the local registry holds, by copy id.
//!
//! No I/O: the actor feeds these from its messages and the executor's results, and the
//! planner reads them. Every change names the origin instances it touched (`dirty`), which
//! the actor plans again.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tracing::warn;

use super::super::copy::PresentCopy;
use super::super::export::{Export, Increment};
use super::super::ids::{OriginKey, is_copy_id};
use crate::registry::{Instance, InstanceRef, Service, Tenant};
use crate::store::Mapping;

/// Most suspicious instances remembered per origin, so each is logged once.
const SUSPICIOUS_MEMORY: usize = 10_000;

/// One origin instance as exported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Desired {
    pub service: Arc<Service>,
    pub instance: Arc<Instance>,
}

/// Whether the local registry kind can hold what an origin exports (see
/// `Registry::accepts_service`); refused objects are kept out of the desired view.
pub(crate) trait Admit {
    /// Whether a copy's service may be created like `service`.
    fn service(&mut self, service: &Service) -> bool;
    /// Whether a copy of `instance` (of `service`) may be registered.
    fn instance(&mut self, service: &Service, instance: &Instance) -> bool;
}

/// Admits everything (tests of the views and the planner).
#[cfg(test)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct AdmitAll;

#[cfg(test)]
impl Admit for AdmitAll {
    fn service(&mut self, _: &Service) -> bool {
        true
    }

    fn instance(&mut self, _: &Service, _: &Instance) -> bool {
        true
    }
}

/// The desired, mapped and present views of one origin.
#[derive(Debug, Default)]
pub(crate) struct Views {
    /// The origin data centre.
    pub origin: String,
    pub desired: HashMap<InstanceRef, Desired>,
    /// The services of `desired`, each held once however many instances it has.
    services: HashMap<(Tenant, String), Arc<Service>>,
    /// The origin's instances kept out of `desired` only because the local kind refuses
    /// their service as it is now: an update of the service that it accepts brings them
    /// back (an increment carries the service alone, not its instances).
    held: HashMap<InstanceRef, Arc<Instance>>,
    mappings: HashMap<InstanceRef, Mapping>,
    /// Copy instance id → origin instance, for every mapping.
    by_copy: HashMap<String, InstanceRef>,
    /// Mappings whose origin instance already has a newer one (a crash mid-replacement).
    pub extra_mappings: Vec<Mapping>,
    /// Copies of this origin in the local registry, by copy instance id: only instances
    /// with both marks (a copy id and this origin's property) or a mapping, so nothing else
    /// is ever removed as an orphan.
    pub present: HashMap<String, PresentCopy>,
    /// Instances that name this origin in their property without a copy id: applications'
    /// instances, logged once each and left alone.
    suspicious: HashSet<String>,
}

impl Views {
    /// The views of `origin` at start: the mappings loaded from the store (the newest
    /// generation of each origin instance; older ones are extra), nothing desired or present.
    pub(crate) fn new(origin: String, loaded: Vec<Mapping>) -> Views {
        let mut views = Views {
            origin,
            ..Views::default()
        };
        for mapping in loaded {
            let key = origin_ref(&mapping);
            match views.mappings.get(&key) {
                Some(kept) if kept.generation >= mapping.generation => {
                    views.extra_mappings.push(mapping);
                }
                _ => {
                    if let Some(old) = views.mappings.insert(key, mapping) {
                        views.extra_mappings.push(old);
                    }
                }
            }
        }
        views.by_copy = views
            .mappings
            .iter()
            .map(|(k, m)| (m.instance_id.clone(), k.clone()))
            .collect();
        views
    }

    /// The mapping of each origin instance (extra mappings aside).
    pub(crate) fn mappings(&self) -> &HashMap<InstanceRef, Mapping> {
        &self.mappings
    }

    /// The origin instance whose mapping names copy `copy_id`.
    pub(crate) fn key_of_copy(&self, copy_id: &str) -> Option<InstanceRef> {
        self.by_copy.get(copy_id).cloned()
    }

    /// Whether a mapping names copy `copy_id`.
    pub(crate) fn is_mapped_copy(&self, copy_id: &str) -> bool {
        self.by_copy.contains_key(copy_id)
    }

    /// Records the mapping of `key` (replacing its previous one, and its copy id index).
    pub(crate) fn set_mapping(&mut self, key: InstanceRef, mapping: Mapping) {
        let id = mapping.instance_id.clone();
        self.by_copy.insert(id.clone(), key.clone());
        if let Some(old) = self.mappings.insert(key, mapping)
            && old.instance_id != id
        {
            self.by_copy.remove(&old.instance_id);
        }
    }

    /// Forgets the mapping of `key` (its copy and mapping are gone).
    pub(crate) fn drop_mapping(&mut self, key: &InstanceRef) {
        if let Some(old) = self.mappings.remove(key) {
            self.by_copy.remove(&old.instance_id);
        }
    }

    /// `key` of this origin, across data centres.
    pub(crate) fn origin_key(&self, key: &InstanceRef) -> OriginKey {
        OriginKey {
            origin: self.origin.clone(),
            tenant: key.tenant.clone(),
            service_id: key.service_id.clone(),
            instance_id: key.instance_id.clone(),
        }
    }

    /// The one shared body of `service` (a push carries a body per instance).
    fn intern(&mut self, service: Arc<Service>) -> Arc<Service> {
        let key = (service.tenant.clone(), service.service_id.clone());
        match self.services.get(&key) {
            Some(known) if **known == *service => known.clone(),
            _ => {
                self.services.insert(key, service.clone());
                service
            }
        }
    }

    /// Applies increments (a push or a pull) to the desired view; returns when the origin
    /// saw each instance change. What `admit` refuses is taken out of desired, as if removed;
    /// instances taken out for their service's sake come back with an update of the service
    /// that `admit` accepts.
    pub(crate) fn apply_changes(
        &mut self,
        changes: Vec<Increment>,
        admit: &mut dyn Admit,
        dirty: &mut HashSet<InstanceRef>,
    ) -> Vec<u64> {
        let mut observed = Vec::with_capacity(changes.len());
        for (_, observed_ms, export) in changes {
            match export {
                Export::Upsert { service, instance } => {
                    let key = instance.reference();
                    dirty.insert(key.clone());
                    observed.push(observed_ms);
                    self.held.remove(&key);
                    if !admit.service(&service) {
                        self.desired.remove(&key);
                        self.held.insert(key, instance);
                    } else if admit.instance(&service, &instance) {
                        let service = self.intern(service);
                        self.desired.insert(key, Desired { service, instance });
                    } else {
                        self.desired.remove(&key);
                    }
                }
                Export::Service(service) => {
                    let admitted = admit.service(&service);
                    let service = self.intern(service);
                    let of_service = |r: &InstanceRef| {
                        r.tenant == service.tenant && r.service_id == service.service_id
                    };
                    let mut refused = Vec::new();
                    for (key, d) in &mut self.desired {
                        if of_service(key) {
                            d.service = service.clone();
                            dirty.insert(key.clone());
                            if !admitted {
                                refused.push(key.clone());
                            }
                        }
                    }
                    for key in refused {
                        if let Some(d) = self.desired.remove(&key) {
                            self.held.insert(key, d.instance);
                        }
                    }
                    if admitted {
                        let back: Vec<InstanceRef> = self
                            .held
                            .keys()
                            .filter(|k| of_service(k))
                            .cloned()
                            .collect();
                        for key in back {
                            let Some(instance) = self.held.remove(&key) else {
                                continue;
                            };
                            if admit.instance(&service, &instance) {
                                let service = service.clone();
                                self.desired
                                    .insert(key.clone(), Desired { service, instance });
                            }
                            dirty.insert(key);
                        }
                    }
                }
                Export::Removed(key) => {
                    observed.push(observed_ms);
                    self.desired.remove(&key);
                    self.held.remove(&key);
                    dirty.insert(key);
                }
            }
        }
        observed
    }

    /// Replaces the desired view with a complete snapshot of the origin (what `admit`
    /// refuses left out, instances of a refused service held for its next update); every
    /// instance desired before or now, and every mapped one, is dirty.
    pub(crate) fn replace_desired(
        &mut self,
        items: Vec<(Arc<Service>, Instance)>,
        admit: &mut dyn Admit,
        dirty: &mut HashSet<InstanceRef>,
    ) {
        let mut services: HashMap<(Tenant, String), Arc<Service>> = HashMap::new();
        let mut verdicts: HashMap<(Tenant, String), bool> = HashMap::new();
        let mut desired = HashMap::with_capacity(items.len());
        self.held.clear();
        for (service, instance) in items {
            let skey = (service.tenant.clone(), service.service_id.clone());
            let admitted = *verdicts
                .entry(skey.clone())
                .or_insert_with(|| admit.service(&service));
            if !admitted {
                self.held.insert(instance.reference(), Arc::new(instance));
                continue;
            }
            if !admit.instance(&service, &instance) {
                continue;
            }
            // Chunks share a service body within a chunk; here across them.
            let service = services.entry(skey).or_insert(service).clone();
            desired.insert(
                instance.reference(),
                Desired {
                    service,
                    instance: Arc::new(instance),
                },
            );
        }
        self.services = services;
        dirty.extend(self.desired.keys().cloned());
        dirty.extend(desired.keys().cloned());
        dirty.extend(self.mappings.keys().cloned());
        self.desired = desired;
    }

    /// Every copy of this origin present now (a full resync of the local registry): every
    /// desired and mapped instance is dirty (copies deleted behind syncer's back), and the
    /// orphans need a look.
    pub(crate) fn replace_present(
        &mut self,
        present: Vec<(String, PresentCopy)>,
        dirty: &mut HashSet<InstanceRef>,
    ) {
        let present: Vec<(String, PresentCopy)> = present
            .into_iter()
            .filter(|(id, _)| self.is_ours(id))
            .collect();
        self.present = present.into_iter().collect();
        dirty.extend(self.desired.keys().cloned());
        dirty.extend(self.mappings.keys().cloned());
    }

    /// A copy was seen in the local registry; `marked` when it carries this origin's mark.
    /// Returns whether it concerns this origin, and makes its origin instance dirty (`None`
    /// in `dirty`'s place: an orphan to look at).
    pub(crate) fn copy_seen(
        &mut self,
        id: String,
        copy: PresentCopy,
        marked: bool,
    ) -> Option<Option<InstanceRef>> {
        if !marked && !self.is_mapped_copy(&id) {
            return None;
        }
        if !self.is_ours(&id) {
            return None;
        }
        let key = self.key_of_copy(&id);
        self.present.insert(id, copy);
        Some(key)
    }

    /// Whether the instance `id`, which carries this origin's property or a mapping names,
    /// is one of syncer's copies: mapped (a derived id syncer registered) or with a copy id.
    /// Anything else is logged once as suspicious and never becomes present, so it is never
    /// removed.
    fn is_ours(&mut self, id: &str) -> bool {
        if is_copy_id(id) || self.is_mapped_copy(id) {
            return true;
        }
        if self.suspicious.len() < SUSPICIOUS_MEMORY && self.suspicious.insert(id.to_owned()) {
            warn!(origin = %self.origin, instance = id, "an instance carries this data centre's copy mark but not a copy id: left alone, neither exported nor removed");
        }
        false
    }

    /// How many suspicious instances were seen (each counted once).
    #[cfg(test)]
    pub(crate) fn suspicious(&self) -> usize {
        self.suspicious.len()
    }

    /// A copy is gone from the local registry; its origin instance, if mapped.
    pub(crate) fn copy_gone(&mut self, copy_id: &str) -> Option<InstanceRef> {
        self.present.remove(copy_id)?;
        self.key_of_copy(copy_id)
    }

    /// A local service is gone with its copies; their origin instances, if mapped.
    pub(crate) fn service_gone(&mut self, tenant: &Tenant, service_id: &str) -> Vec<InstanceRef> {
        let gone: Vec<String> = self
            .present
            .iter()
            .filter(|(_, c)| c.tenant == *tenant && c.service_id == service_id)
            .map(|(id, _)| id.clone())
            .collect();
        gone.iter()
            .filter_map(|id| {
                self.present.remove(id);
                self.key_of_copy(id)
            })
            .collect()
    }
}

/// The origin instance a mapping mirrors.
pub(crate) fn origin_ref(mapping: &Mapping) -> InstanceRef {
    InstanceRef {
        tenant: Tenant::new(mapping.domain.clone(), mapping.project.clone()),
        service_id: mapping.origin_service_id.clone(),
        instance_id: mapping.origin_instance_id.clone(),
    }
}

/// The copy a mapping names.
pub(crate) fn copy_ref(mapping: &Mapping) -> InstanceRef {
    InstanceRef {
        tenant: Tenant::new(mapping.domain.clone(), mapping.project.clone()),
        service_id: mapping.service_id.clone(),
        instance_id: mapping.instance_id.clone(),
    }
}

//! The export side: what this data centre offers the others, numbered with our own revisions.
//!
//! SC revisions are opaque per query and the dump has none, so each data centre numbers its
//! own changes `(epoch, seq)`. The epoch is bumped whenever the exporter starts without its
//! state (a restart, a new leader); within an epoch every exported change gets the next
//! `seq`. The [`ExportView`] keeps the exported instances (never syncer's own copies, see
//! [`super::ids::is_copy`]) with their services, and a bounded outbox of recent increments:
//! a peer whose cursor is still in the outbox gets increments, any other gets a snapshot.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use super::ids::{PartsHasher, is_copy};
use crate::registry::{Change, Instance, InstanceRef, Service, Tenant};

/// A position in one data centre's stream of exported changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Revision {
    pub epoch: u64,
    pub seq: u64,
}

/// One exported change. Bodies are shared (`Arc`) between the exported view, the outbox and
/// snapshots: 10 000 instances are held once, not once per place that refers to them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Export {
    /// An instance appeared or changed; its service as it is now comes along, so the importer
    /// can create the service from the change alone.
    Upsert {
        service: Arc<Service>,
        instance: Arc<Instance>,
    },
    /// The service of exported instances changed (properties, alias, ...).
    Service(Arc<Service>),
    /// An exported instance is gone.
    Removed(InstanceRef),
}

/// One numbered change: `(seq, seen_ms, export)`, where `seen_ms` is when this syncer saw
/// it (Unix milliseconds; 0 when unknown), carried along for latency metrics.
pub type Increment = (u64, u64, Export);

/// What a peer at some revision needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Since {
    UpToDate,
    /// The increments after its revision, in order.
    Increments(Vec<Increment>),
    /// Its revision is from another epoch, ahead of ours, or older than the outbox.
    Snapshot,
}

/// A copy of the [`ExportView`] at one revision: every exported instance with its service,
/// and their order-independent digest. This is what a snapshot pull serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportViewSnapshot {
    pub revision: Revision,
    pub items: Vec<(Arc<Service>, Arc<Instance>)>,
    pub digest: Digest64,
}

/// An order-independent digest of exported items: the wrapping sum of one 64-bit hash per
/// item, and the count. Both sides compute it the same way whatever order items arrive in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Digest64 {
    pub sum: u64,
    pub count: u64,
}

impl Digest64 {
    pub fn add(&mut self, service: &Service, instance: &Instance) {
        self.sum = self.sum.wrapping_add(item_hash(service, instance));
        self.count += 1;
    }
}

/// Services by tenant, then id: looked up by reference, without building an owned key.
type Services = HashMap<Tenant, HashMap<String, Arc<Service>>>;

/// The export view: what this data centre offers the others (the local registry's own
/// instances with their services, never copies), numbered with our revisions, with the
/// outbox of recent increments. Pure: the exporter task owns it through
/// `exporter::SharedExportView`.
#[derive(Debug)]
pub struct ExportView {
    revision: Revision,
    services: Services,
    instances: BTreeMap<InstanceRef, Arc<Instance>>,
    outbox: VecDeque<Increment>,
    outbox_cap: usize,
}

impl ExportView {
    /// An empty view at the start of `epoch`, keeping at most `outbox_cap` increments.
    pub fn new(epoch: u64, outbox_cap: usize) -> ExportView {
        ExportView {
            revision: Revision { epoch, seq: 0 },
            services: HashMap::new(),
            instances: BTreeMap::new(),
            outbox: VecDeque::new(),
            outbox_cap: outbox_cap.max(1),
        }
    }

    pub fn revision(&self) -> Revision {
        self.revision
    }

    /// Exported instances (those whose service is known).
    pub fn len(&self) -> usize {
        self.items().count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Exported instances and the services they belong to.
    pub fn counts(&self) -> (usize, usize) {
        let mut services = std::collections::HashSet::new();
        let mut instances = 0;
        for (service, _) in self.items() {
            instances += 1;
            services.insert((&service.tenant, &service.service_id));
        }
        (instances, services.len())
    }

    fn items(&self) -> impl Iterator<Item = (&Arc<Service>, &Arc<Instance>)> {
        self.instances
            .values()
            .filter_map(|i| self.service(&i.tenant, &i.service_id).map(|s| (s, i)))
    }

    fn service(&self, tenant: &Tenant, service_id: &str) -> Option<&Arc<Service>> {
        self.services.get(tenant)?.get(service_id)
    }

    /// Whether service `service_id` of `tenant` is exported (has exported instances).
    pub fn exports_service(&self, tenant: &Tenant, service_id: &str) -> bool {
        self.service(tenant, service_id).is_some()
    }

    /// Instances the view holds (exported or waiting for their service).
    pub fn held_instances(&self) -> usize {
        self.instances.len()
    }

    pub fn contains(&self, r: &InstanceRef) -> bool {
        self.instances.contains_key(r)
    }

    /// The instances of one service in the view.
    pub fn instances_of(&self, tenant: &Tenant, service_id: &str) -> Vec<InstanceRef> {
        self.instances
            .keys()
            .filter(|r| &r.tenant == tenant && r.service_id == service_id)
            .cloned()
            .collect()
    }

    /// The instances `change` would take out of the view.
    pub fn removed_by(&self, change: &Change) -> Vec<InstanceRef> {
        match change {
            Change::InstanceRemoved(r) if self.contains(r) => vec![r.clone()],
            Change::ServiceRemoved { tenant, service_id } => self.instances_of(tenant, service_id),
            Change::Resync(snapshot) => {
                let present: HashSet<InstanceRef> =
                    snapshot.instances.iter().map(Instance::reference).collect();
                self.instances
                    .keys()
                    .filter(|r| !present.contains(*r))
                    .cloned()
                    .collect()
            }
            _ => Vec::new(),
        }
    }

    /// The view's instances not in `present`, with their bodies.
    pub fn missing_from(&self, present: &HashSet<InstanceRef>) -> Vec<(InstanceRef, Instance)> {
        self.instances
            .iter()
            .filter(|(r, _)| !present.contains(*r))
            .map(|(r, i)| (r.clone(), (**i).clone()))
            .collect()
    }

    /// The view's services not in `present`.
    pub fn services_missing_from(&self, present: &HashSet<(Tenant, String)>) -> Vec<Service> {
        self.services
            .iter()
            .flat_map(|(t, ids)| ids.iter().map(move |(id, s)| (t, id, s)))
            .filter(|(t, id, _)| !present.contains(&((*t).clone(), (*id).clone())))
            .map(|(_, _, s)| (**s).clone())
            .collect()
    }

    /// Applies one change from the registry's feed; returns the numbered increments it made
    /// (none when it changed nothing that is exported).
    pub fn apply(&mut self, change: Change) -> Vec<(u64, Export)> {
        self.apply_seen(change, 0)
    }

    /// [`ExportView::apply`] for a change seen at `seen_ms` (Unix milliseconds), which the
    /// outbox keeps with each increment.
    pub fn apply_seen(&mut self, change: Change, seen_ms: u64) -> Vec<(u64, Export)> {
        let mut out = Vec::new();
        self.apply_into(change, seen_ms, &mut out);
        out
    }

    fn apply_into(&mut self, change: Change, seen_ms: u64, out: &mut Vec<(u64, Export)>) {
        match change {
            Change::Service(service) => {
                if self
                    .service(&service.tenant, &service.service_id)
                    .map(|s| &**s)
                    == Some(&service)
                {
                    return;
                }
                let service = Arc::new(service);
                let before = self
                    .services
                    .entry(service.tenant.clone())
                    .or_default()
                    .insert(service.service_id.clone(), service.clone());
                let members: Vec<Arc<Instance>> = self
                    .instances
                    .values()
                    .filter(|i| i.tenant == service.tenant && i.service_id == service.service_id)
                    .cloned()
                    .collect();
                if members.is_empty() {
                    return;
                }
                if before.is_some() {
                    self.emit(seen_ms, Export::Service(service), out);
                } else {
                    // Instances that arrived before their service go out now.
                    for instance in members {
                        self.emit(
                            seen_ms,
                            Export::Upsert {
                                service: service.clone(),
                                instance,
                            },
                            out,
                        );
                    }
                }
            }
            Change::ServiceRemoved { tenant, service_id } => {
                let gone: Vec<InstanceRef> = self
                    .instances
                    .keys()
                    .filter(|r| r.tenant == tenant && r.service_id == service_id)
                    .cloned()
                    .collect();
                for r in gone {
                    self.apply_into(Change::InstanceRemoved(r), seen_ms, out);
                }
                if let Some(services) = self.services.get_mut(&tenant) {
                    services.remove(&service_id);
                    if services.is_empty() {
                        self.services.remove(&tenant);
                    }
                }
            }
            Change::Instance(instance) => {
                if is_copy(&instance) {
                    return;
                }
                let r = instance.reference();
                if self
                    .instances
                    .get(&r)
                    .is_some_and(|old| old.same_body(&instance))
                {
                    // Same body (a resync, a modification time): nothing to tell.
                    return;
                }
                let instance = Arc::new(instance);
                self.instances.insert(r, instance.clone());
                if let Some(service) = self
                    .service(&instance.tenant, &instance.service_id)
                    .cloned()
                {
                    self.emit(seen_ms, Export::Upsert { service, instance }, out);
                }
            }
            Change::InstanceRemoved(r) => {
                if let Some(old) = self.instances.remove(&r)
                    && self.service(&old.tenant, &old.service_id).is_some()
                {
                    self.emit(seen_ms, Export::Removed(r), out);
                }
            }
            Change::Resync(snapshot) => {
                // The difference, without copying the current view: removed instances, removed
                // services, then every service and instance of the dump (unchanged ones are
                // no-ops above).
                let mut instances = snapshot.instances;
                instances.retain(|i| !is_copy(i));
                let (removed, removed_services) = {
                    let wanted: HashSet<(&Tenant, &str, &str)> = instances
                        .iter()
                        .map(|i| (&i.tenant, i.service_id.as_str(), i.instance_id.as_str()))
                        .collect();
                    let wanted_services: HashSet<(&Tenant, &str)> = snapshot
                        .services
                        .iter()
                        .map(|s| (&s.tenant, s.service_id.as_str()))
                        .collect();
                    let removed: Vec<InstanceRef> = self
                        .instances
                        .keys()
                        .filter(|r| {
                            !wanted.contains(&(
                                &r.tenant,
                                r.service_id.as_str(),
                                r.instance_id.as_str(),
                            ))
                        })
                        .cloned()
                        .collect();
                    let removed_services: Vec<(Tenant, String)> = self
                        .services
                        .iter()
                        .flat_map(|(t, ids)| ids.keys().map(move |id| (t, id)))
                        .filter(|(t, id)| !wanted_services.contains(&(*t, id.as_str())))
                        .map(|(t, id)| (t.clone(), id.clone()))
                        .collect();
                    (removed, removed_services)
                };
                for r in removed {
                    self.apply_into(Change::InstanceRemoved(r), seen_ms, out);
                }
                for (tenant, service_id) in removed_services {
                    self.apply_into(Change::ServiceRemoved { tenant, service_id }, seen_ms, out);
                }
                for service in snapshot.services {
                    self.apply_into(Change::Service(service), seen_ms, out);
                }
                for instance in instances {
                    self.apply_into(Change::Instance(instance), seen_ms, out);
                }
            }
        }
    }

    fn emit(&mut self, seen_ms: u64, export: Export, out: &mut Vec<(u64, Export)>) {
        self.revision.seq += 1;
        let seq = self.revision.seq;
        if self.outbox.len() == self.outbox_cap {
            self.outbox.pop_front();
        }
        self.outbox.push_back((seq, seen_ms, export.clone()));
        out.push((seq, export));
    }

    /// What a peer that applied everything up to `after` needs next.
    pub fn since(&self, after: Revision) -> Since {
        if after.epoch != self.revision.epoch || after.seq > self.revision.seq {
            return Since::Snapshot;
        }
        if after.seq == self.revision.seq {
            return Since::UpToDate;
        }
        match self.outbox.front() {
            Some((first, _, _)) if *first <= after.seq + 1 => Since::Increments(
                self.outbox
                    .iter()
                    .filter(|(seq, _, _)| *seq > after.seq)
                    .cloned()
                    .collect(),
            ),
            _ => Since::Snapshot,
        }
    }

    /// Everything exported now.
    pub fn snapshot(&self) -> ExportViewSnapshot {
        let mut digest = Digest64::default();
        let items: Vec<(Arc<Service>, Arc<Instance>)> = self
            .items()
            .map(|(s, i)| {
                digest.add(s, i);
                (s.clone(), i.clone())
            })
            .collect();
        ExportViewSnapshot {
            revision: self.revision,
            items,
            digest,
        }
    }
}

/// A stable 64-bit hash of everything exported about one instance and its service. Fields
/// are length-prefixed and maps sorted, so the bytes are canonical whatever their source.
pub fn item_hash(service: &Service, instance: &Instance) -> u64 {
    let mut h = PartsHasher::default();
    h.parts([
        service.tenant.domain.as_str(),
        service.tenant.project.as_str(),
        service.service_id.as_str(),
        service.app.as_str(),
        service.name.as_str(),
        service.version.as_str(),
        service.environment.as_str(),
        service.alias.as_str(),
    ]);
    h.parts(
        service
            .properties
            .iter()
            .flat_map(|(k, v)| [k.as_str(), v.as_str()]),
    );
    h.part("\u{0}instance");
    h.parts([
        instance.instance_id.as_str(),
        instance.host_name.as_str(),
        instance.status.as_str(),
    ]);
    h.parts(instance.endpoints.iter().map(String::as_str));
    h.parts(
        instance
            .properties
            .iter()
            .flat_map(|(k, v)| [k.as_str(), v.as_str()]),
    );
    let digest = h.finish();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Snapshot;
    use crate::sync::ids::ORIGIN_PROPERTY;

    fn service(id: &str) -> Service {
        Service {
            service_id: id.into(),
            app: "app".into(),
            name: format!("name-{id}"),
            version: "1.0.0".into(),
            ..Service::default()
        }
    }

    fn instance(service: &str, id: &str) -> Instance {
        Instance {
            service_id: service.into(),
            instance_id: id.into(),
            host_name: "h".into(),
            endpoints: vec!["rest://10.0.0.1:8080".into()],
            status: "UP".into(),
            ..Instance::default()
        }
    }

    #[test]
    fn changes_are_numbered_and_copies_never_exported() {
        let mut state = ExportView::new(7, 100);
        assert!(
            state.apply(Change::Service(service("s1"))).is_empty(),
            "no instance yet"
        );
        let out = state.apply(Change::Instance(instance("s1", "i1")));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, 1);
        assert!(matches!(out[0].1, Export::Upsert { .. }));
        // The same body again (say, from a resync) is no change.
        let mut again = instance("s1", "i1");
        again.mod_timestamp = Some(5);
        assert!(state.apply(Change::Instance(again)).is_empty());
        // Copies, by either mark, are not exported.
        let mut copy = instance("s1", "syncer-0123");
        assert!(state.apply(Change::Instance(copy.clone())).is_empty());
        copy.instance_id = "plain".into();
        copy.properties.insert(ORIGIN_PROPERTY.into(), "dc2".into());
        assert!(state.apply(Change::Instance(copy)).is_empty());
        // A status change is a change.
        let mut down = instance("s1", "i1");
        down.status = "DOWN".into();
        assert_eq!(state.apply(Change::Instance(down)).len(), 1);
        let mut s1 = service("s1");
        s1.properties.insert("k".into(), "v".into());
        let out = state.apply(Change::Service(s1));
        assert!(matches!(out[..], [(3, Export::Service(_))]));
        let out = state.apply(Change::InstanceRemoved(instance("s1", "i1").reference()));
        assert!(matches!(out[..], [(4, Export::Removed(_))]));
        assert_eq!(state.revision(), Revision { epoch: 7, seq: 4 });
        assert!(state.is_empty());
    }

    #[test]
    fn instances_wait_for_their_service() {
        let mut state = ExportView::new(1, 100);
        assert!(
            state
                .apply(Change::Instance(instance("s1", "i1")))
                .is_empty()
        );
        let out = state.apply(Change::Service(service("s1")));
        assert!(
            matches!(&out[..], [(1, Export::Upsert { instance, .. })] if instance.instance_id == "i1")
        );
        let out = state.apply(Change::ServiceRemoved {
            tenant: Tenant::default(),
            service_id: "s1".into(),
        });
        assert!(matches!(out[..], [(2, Export::Removed(_))]));
    }

    #[test]
    fn resync_exports_only_the_difference() {
        let mut state = ExportView::new(1, 100);
        let snapshot = Snapshot {
            services: vec![service("s1"), service("s2")],
            instances: vec![
                instance("s1", "i1"),
                instance("s2", "i2"),
                instance("s2", "syncer-x"),
            ],
        };
        assert_eq!(state.apply(Change::Resync(snapshot.clone())).len(), 2);
        assert!(state.apply(Change::Resync(snapshot)).is_empty());
        let smaller = Snapshot {
            services: vec![service("s1")],
            instances: vec![instance("s1", "i1")],
        };
        let out = state.apply(Change::Resync(smaller));
        assert!(matches!(out[..], [(3, Export::Removed(ref r))] if r.instance_id == "i2"));
        assert_eq!(state.len(), 1);
    }

    #[test]
    fn peers_get_increments_or_a_snapshot() {
        let mut state = ExportView::new(3, 2);
        state.apply(Change::Service(service("s1")));
        for i in 0..3 {
            state.apply(Change::Instance(instance("s1", &format!("i{i}"))));
        }
        let at = |seq| Revision { epoch: 3, seq };
        assert_eq!(state.since(at(3)), Since::UpToDate);
        assert!(
            matches!(state.since(at(2)), Since::Increments(ref v) if v.len() == 1 && v[0].0 == 3)
        );
        assert!(matches!(state.since(at(1)), Since::Increments(ref v) if v.len() == 2));
        assert_eq!(state.since(at(0)), Since::Snapshot, "older than the outbox");
        assert_eq!(state.since(at(9)), Since::Snapshot, "ahead of us");
        assert_eq!(state.since(Revision { epoch: 2, seq: 3 }), Since::Snapshot);
    }

    #[test]
    fn snapshot_digest_ignores_order_but_not_content() {
        let mut a = ExportView::new(1, 10);
        let mut b = ExportView::new(1, 10);
        a.apply(Change::Service(service("s1")));
        b.apply(Change::Service(service("s1")));
        for id in ["i1", "i2"] {
            a.apply(Change::Instance(instance("s1", id)));
        }
        for id in ["i2", "i1"] {
            b.apply(Change::Instance(instance("s1", id)));
        }
        assert_eq!(a.snapshot().digest, b.snapshot().digest);
        assert_eq!(a.snapshot().digest.count, 2);
        let mut changed = instance("s1", "i2");
        changed.endpoints = vec!["rest://10.0.0.2:8080".into()];
        b.apply(Change::Instance(changed));
        assert_ne!(a.snapshot().digest, b.snapshot().digest);
    }
}

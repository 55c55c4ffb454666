//! Which local services syncer may write an origin's service properties (and contracts)
//! into.
//!
//! A service with the same tenant, environment, app, name and version in two data centres is
//! one service to the registry: importing an instance of it finds the local service, and
//! mirroring the origin's properties there would overwrite the local team's own (and revert
//! their changes, back and forth). So properties are mirrored only into a service that
//! - syncer created for copies of this very origin: created with the origin's properties and
//!   the mark [`ORIGIN_PROPERTY`]` = <origin>` in one call, so the mark is there from the
//!   first moment and survives restarts (it lives in the registry, not in syncer's memory);
//!   a service created by anyone else has no mark, and a service created for another origin's
//!   copies follows that origin only (two origins never fight over one service);
//! - and holds no instance of its own (not a copy) right now: a team that deploys into a
//!   service syncer created makes it theirs, and its properties are left alone from then on.
//!
//! [`LocalServices`] is what the local feed says about both, kept up to date from the own
//! changes of every feed batch (`local::SplitFeed` hands them over before the copies of the
//! same batch, so an actor that reconciles after a resync sees that resync's services). A
//! service the table does not know yet was created after the last read, by syncer itself in
//! all likelihood (with the origin's properties already); nothing is written into it until the
//! feed shows it: an unknown service is never written, and not settled either (the importer
//! ensures it again at its next use, so an origin's change that came meanwhile is written
//! once the feed shows the service).

use std::collections::{BTreeMap, HashMap, HashSet};

use super::super::ids::{ORIGIN_PROPERTY, is_copy};
use crate::registry::{AccessRule, Change, Service, Tenant};

/// `(tenant, service id)` of a local service.
type LocalKey = (Tenant, String);

/// What a local service allows an origin's importer to do with its properties.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ownership {
    /// Syncer created it for this origin's copies and it holds no own instance: its
    /// properties follow the origin's. Carries its current properties.
    Mirror(BTreeMap<String, String>),
    /// Someone else's (own instances, no mark, another origin's mark), or not seen yet:
    /// its properties are never written.
    Keep,
}

/// The local registry's services as the local feed reports them: properties, and the ids of
/// their own (non-copy) instances.
#[derive(Debug, Default)]
pub(crate) struct LocalServices {
    properties: HashMap<LocalKey, BTreeMap<String, String>>,
    /// Schema summaries, tags and access rules of the services that have any.
    extras: HashMap<LocalKey, Extras>,
    own: HashMap<LocalKey, HashSet<String>>,
}

impl LocalServices {
    /// Applies the own changes of one feed batch (copies are already taken out).
    pub(crate) fn apply(&mut self, changes: &[Change]) {
        for change in changes {
            match change {
                Change::Resync(snapshot) => {
                    self.properties = snapshot
                        .services
                        .iter()
                        .map(|s| {
                            (
                                (s.tenant.clone(), s.service_id.clone()),
                                s.properties.clone(),
                            )
                        })
                        .collect();
                    self.extras = snapshot
                        .services
                        .iter()
                        .filter_map(|s| {
                            Extras::of(s).map(|e| ((s.tenant.clone(), s.service_id.clone()), e))
                        })
                        .collect();
                    self.own.clear();
                    for instance in snapshot.instances.iter().filter(|i| !is_copy(i)) {
                        self.own
                            .entry((instance.tenant.clone(), instance.service_id.clone()))
                            .or_default()
                            .insert(instance.instance_id.clone());
                    }
                }
                Change::Service(s) => {
                    let key = (s.tenant.clone(), s.service_id.clone());
                    match Extras::of(s) {
                        Some(extras) => self.extras.insert(key.clone(), extras),
                        None => self.extras.remove(&key),
                    };
                    self.properties.insert(key, s.properties.clone());
                }
                Change::ServiceRemoved { tenant, service_id } => {
                    let key = (tenant.clone(), service_id.clone());
                    self.properties.remove(&key);
                    self.extras.remove(&key);
                    self.own.remove(&key);
                }
                Change::Instance(i) if !is_copy(i) => {
                    self.own
                        .entry((i.tenant.clone(), i.service_id.clone()))
                        .or_default()
                        .insert(i.instance_id.clone());
                }
                Change::Instance(_) => {}
                Change::InstanceRemoved(r) => {
                    let key = (r.tenant.clone(), r.service_id.clone());
                    if let Some(ids) = self.own.get_mut(&key) {
                        ids.remove(&r.instance_id);
                        if ids.is_empty() {
                            self.own.remove(&key);
                        }
                    }
                }
            }
        }
    }

    /// Whether `origin`'s importer may mirror its service properties into local service
    /// `service_id` of `tenant` (see the module documentation).
    pub(crate) fn ownership(&self, origin: &str, tenant: &Tenant, service_id: &str) -> Ownership {
        let key = (tenant.clone(), service_id.to_owned());
        let Some(properties) = self.properties.get(&key) else {
            return Ownership::Keep;
        };
        let ours = properties.get(ORIGIN_PROPERTY).map(String::as_str) == Some(origin);
        if ours && !self.own.contains_key(&key) {
            Ownership::Mirror(properties.clone())
        } else {
            Ownership::Keep
        }
    }
}

impl LocalServices {
    /// Whether the local feed has shown service `service_id` of `tenant`.
    pub(crate) fn knows(&self, tenant: &Tenant, service_id: &str) -> bool {
        self.properties
            .contains_key(&(tenant.clone(), service_id.to_owned()))
    }

    /// The schema summaries, tags and access rules local service `service_id` of `tenant`
    /// has, as the local feed last reported them (empty when none or not seen yet).
    pub(crate) fn extras(&self, tenant: &Tenant, service_id: &str) -> Extras {
        self.extras
            .get(&(tenant.clone(), service_id.to_owned()))
            .cloned()
            .unwrap_or_default()
    }
}

/// What a local service holds besides its record proper: schema summaries, tags and access
/// rules (rules sorted).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Extras {
    pub summaries: BTreeMap<String, String>,
    pub tags: BTreeMap<String, String>,
    pub rules: Vec<AccessRule>,
}

impl Extras {
    /// Those of `service`, `None` when it has none.
    fn of(service: &Service) -> Option<Extras> {
        let mut rules = service.rules.clone();
        rules.sort();
        let extras = Extras {
            summaries: service.schema_summaries.clone(),
            tags: service.tags.clone(),
            rules,
        };
        (extras != Extras::default()).then_some(extras)
    }
}

/// The properties a service syncer creates for `origin`'s copies carries: the origin's, and
/// the mark naming it.
pub(crate) fn marked(
    origin: &str,
    properties: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut marked = properties.clone();
    marked.insert(ORIGIN_PROPERTY.to_owned(), origin.to_owned());
    marked
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{Instance, InstanceRef, Snapshot};

    fn service(id: &str, props: &[(&str, &str)]) -> Service {
        Service {
            service_id: id.into(),
            properties: props
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..Service::default()
        }
    }

    fn instance(service: &str, id: &str) -> Instance {
        Instance {
            service_id: service.into(),
            instance_id: id.into(),
            ..Instance::default()
        }
    }

    fn is_mirror(table: &LocalServices, origin: &str, id: &str) -> bool {
        matches!(
            table.ownership(origin, &Tenant::default(), id),
            Ownership::Mirror(_)
        )
    }

    #[test]
    fn only_a_marked_service_without_own_instances_follows_its_origin() {
        let mut copy = instance("created", "syncer-1");
        copy.properties.insert(ORIGIN_PROPERTY.into(), "dc1".into());
        let mut table = LocalServices::default();
        table.apply(&[Change::Resync(Snapshot {
            services: vec![
                service("created", &[(ORIGIN_PROPERTY, "dc1"), ("k", "v")]),
                service("shared", &[("k", "mine")]),
                service("taken", &[(ORIGIN_PROPERTY, "dc1")]),
            ],
            instances: vec![copy, instance("shared", "a"), instance("taken", "b")],
        })]);
        assert_eq!(
            table.ownership("dc1", &Tenant::default(), "created"),
            Ownership::Mirror(marked("dc1", &BTreeMap::from([("k".into(), "v".into())])))
        );
        assert!(!is_mirror(&table, "dc3", "created"), "another origin's");
        assert!(!is_mirror(&table, "dc1", "shared"), "no mark");
        assert!(!is_mirror(&table, "dc1", "taken"), "own instances");
        assert!(!is_mirror(&table, "dc1", "unknown"), "not seen yet");

        // The team that deployed into `taken` leaves: it follows its origin again.
        table.apply(&[Change::InstanceRemoved(InstanceRef {
            tenant: Tenant::default(),
            service_id: "taken".into(),
            instance_id: "b".into(),
        })]);
        assert!(is_mirror(&table, "dc1", "taken"));
        // A team deploys into `created`: it is theirs from now on.
        table.apply(&[Change::Instance(instance("created", "c"))]);
        assert!(!is_mirror(&table, "dc1", "created"));
        table.apply(&[Change::ServiceRemoved {
            tenant: Tenant::default(),
            service_id: "taken".into(),
        }]);
        assert!(!is_mirror(&table, "dc1", "taken"));
    }
}

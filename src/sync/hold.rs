//! Self-preservation of the export side: when more than half of what this data centre
//! exports vanishes in one answer of its registry, the removals are held for a while instead of
//! being passed on.
//!
//! A registry that restarts may answer from a partial or empty view while it loads its data
//! (Service Center rebuilds its cache from etcd), and one that lost its data gets it back as
//! the applications register again. Passing such a vanishing on would remove every copy of
//! this data centre everywhere, then create them all again seconds later. Instead the
//! removals wait [`MASS_REMOVAL_HOLD`]: what comes back meanwhile was never removed
//! anywhere; what is still gone then is removed as usual. Service Center 2.x and Eureka
//! protect their own clients the same way (self-preservation).
//!
//! Pure bookkeeping over the [`ExportView`]: the caller passes the time.

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use tokio::time::Instant;
use tracing::{info, warn};

use super::export::ExportView;
use crate::registry::{Change, InstanceRef, Tenant};

/// How long removals are held once a mass vanishing is seen, by default (`--removal-hold`). Longer than a Service Center
/// restart, and than the 30 s heartbeat period of its SDKs, in which applications notice
/// that their registry lost them and register again.
pub const MASS_REMOVAL_HOLD: Duration = Duration::from_secs(30);
/// Smaller views are never held: a handful of instances going at once is ordinary.
const MIN_VIEW: usize = 10;

#[derive(Debug, Default)]
pub struct RemovalHold {
    /// How long a hold lasts (`--removal-hold`); zero: never hold.
    hold: Duration,
    /// While holding: until when.
    until: Option<Instant>,
    /// Instance removals held back.
    instances: BTreeSet<InstanceRef>,
    /// Service removals held back.
    services: BTreeSet<(Tenant, String)>,
    /// How many held removals were dropped because their object came back.
    came_back: usize,
}

impl RemovalHold {
    pub fn new(hold: Duration) -> RemovalHold {
        RemovalHold {
            hold,
            ..RemovalHold::default()
        }
    }

    /// Instance removals held back now.
    pub fn held(&self) -> usize {
        self.instances.len()
    }

    /// When the hold ends, if one is in force.
    pub fn deadline(&self) -> Option<Instant> {
        self.until
    }

    /// The changes of one feed batch to apply now: removals are held back when they make a
    /// mass vanishing (or one is being held); what comes back is no longer held.
    pub fn filter(&mut self, changes: Vec<Change>, view: &ExportView, now: Instant) -> Vec<Change> {
        if self.until.is_none() {
            if self.hold.is_zero() {
                return changes;
            }
            // One batch is one answer of the registry (a poll, a listing, a full read):
            // ordinary churn never takes half of a data centre in one answer.
            let removing: HashSet<InstanceRef> =
                changes.iter().flat_map(|c| view.removed_by(c)).collect();
            let size = view.held_instances();
            if size < MIN_VIEW || removing.len() * 2 <= size {
                return changes;
            }
            warn!(
                vanished = removing.len(),
                exported = size,
                hold = ?self.hold,
                "more than half of this data centre's instances vanished from one answer of its registry; holding their removal (a registry restarting or answering in part); what comes back meanwhile is never removed elsewhere"
            );
            self.until = Some(now + self.hold);
            self.came_back = 0;
        }
        let mut out = Vec::with_capacity(changes.len());
        for change in changes {
            match change {
                Change::InstanceRemoved(r) => {
                    if view.contains(&r) {
                        self.instances.insert(r);
                    }
                }
                Change::ServiceRemoved { tenant, service_id } => {
                    for r in view.instances_of(&tenant, &service_id) {
                        self.instances.insert(r);
                    }
                    self.services.insert((tenant, service_id));
                }
                Change::Instance(instance) => {
                    if self.instances.remove(&instance.reference()) {
                        self.came_back += 1;
                    }
                    out.push(Change::Instance(instance));
                }
                Change::Service(service) => {
                    self.services
                        .remove(&(service.tenant.clone(), service.service_id.clone()));
                    out.push(Change::Service(service));
                }
                Change::Resync(mut snapshot) => {
                    // What the resync would remove is held: the view keeps it, so the
                    // snapshot is given those instances and services back.
                    let present: HashSet<InstanceRef> =
                        snapshot.instances.iter().map(|i| i.reference()).collect();
                    for r in &present {
                        if self.instances.remove(r) {
                            self.came_back += 1;
                        }
                    }
                    let services: HashSet<(Tenant, String)> = snapshot
                        .services
                        .iter()
                        .map(|s| (s.tenant.clone(), s.service_id.clone()))
                        .collect();
                    self.services.retain(|s| !services.contains(s));
                    for (r, kept) in view.missing_from(&present) {
                        snapshot.instances.push(kept);
                        self.instances.insert(r);
                    }
                    for kept in view.services_missing_from(&services) {
                        self.services
                            .insert((kept.tenant.clone(), kept.service_id.clone()));
                        snapshot.services.push(kept);
                    }
                    out.push(Change::Resync(snapshot));
                }
            }
        }
        out
    }

    /// Once the hold ran out: the removals still held, to apply now. A held service removal
    /// goes only when none of the service's instances came back.
    pub fn release(&mut self, view: &ExportView, now: Instant) -> Vec<Change> {
        if self.until.is_none_or(|until| now < until) {
            return Vec::new();
        }
        self.until = None;
        let instances = std::mem::take(&mut self.instances);
        let services = std::mem::take(&mut self.services);
        info!(
            removed = instances.len(),
            came_back = self.came_back,
            "mass removal hold over: removing what did not come back"
        );
        let services: Vec<Change> = services
            .into_iter()
            .filter(|(tenant, service_id)| {
                view.instances_of(tenant, service_id)
                    .iter()
                    .all(|r| instances.contains(r))
            })
            .map(|(tenant, service_id)| Change::ServiceRemoved { tenant, service_id })
            .collect();
        instances
            .into_iter()
            .map(Change::InstanceRemoved)
            .chain(services)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{Instance, Service, Snapshot};
    use crate::sync::export::Export;

    fn service(id: &str) -> Service {
        Service {
            service_id: id.into(),
            app: "app".into(),
            name: format!("name-{id}"),
            version: "1.0.0".into(),
            ..Service::default()
        }
    }

    fn instance(service: &str, n: usize) -> Instance {
        Instance {
            service_id: service.into(),
            instance_id: format!("i{n}"),
            host_name: format!("h{n}"),
            endpoints: vec![format!("rest://10.0.0.{n}:8080")],
            status: "UP".into(),
            ..Instance::default()
        }
    }

    /// A view of two services with `n` instances each.
    fn view(n: usize) -> ExportView {
        let mut view = ExportView::new(1, 1000);
        for s in ["s1", "s2"] {
            view.apply(Change::Service(service(s)));
            for i in 0..n {
                view.apply(Change::Instance(instance(s, i)));
            }
        }
        view
    }

    /// Applies what `hold` lets through; the exported removals.
    fn pass(
        view: &mut ExportView,
        hold: &mut RemovalHold,
        changes: Vec<Change>,
        now: Instant,
    ) -> usize {
        let mut changes = hold.filter(changes, view, now);
        changes.extend(hold.release(view, now));
        changes
            .into_iter()
            .flat_map(|c| view.apply(c))
            .filter(|(_, e)| matches!(e, Export::Removed(_)))
            .count()
    }

    #[test]
    fn ordinary_removals_pass_at_once() {
        let mut view = view(10);
        let mut hold = RemovalHold::new(MASS_REMOVAL_HOLD);
        let now = Instant::now();
        // A whole service, half of the data centre: not more than half.
        let gone = vec![Change::ServiceRemoved {
            tenant: Tenant::default(),
            service_id: "s2".into(),
        }];
        assert_eq!(pass(&mut view, &mut hold, gone, now), 10);
        let gone: Vec<Change> = (0..5)
            .map(|i| Change::InstanceRemoved(instance("s1", i).reference()))
            .collect();
        assert_eq!(pass(&mut view, &mut hold, gone, now), 5);
        assert_eq!(hold.deadline(), None);
    }

    #[test]
    fn an_empty_answer_is_held_and_what_comes_back_is_never_removed() {
        let mut view = view(10);
        let mut hold = RemovalHold::new(MASS_REMOVAL_HOLD);
        let start = Instant::now();
        // The registry restarted empty: both services vanish in one listing.
        let wiped = ["s1", "s2"]
            .iter()
            .map(|s| Change::ServiceRemoved {
                tenant: Tenant::default(),
                service_id: (*s).into(),
            })
            .collect();
        assert_eq!(
            pass(&mut view, &mut hold, wiped, start),
            0,
            "nothing removed"
        );
        assert_eq!(hold.deadline(), Some(start + MASS_REMOVAL_HOLD));
        // Most come back (the same bodies: nothing to export either); i0 and i1 of s1 do not.
        let back: Vec<Change> = std::iter::once(Change::Service(service("s1")))
            .chain(std::iter::once(Change::Service(service("s2"))))
            .chain((2..10).map(|i| Change::Instance(instance("s1", i))))
            .chain((0..10).map(|i| Change::Instance(instance("s2", i))))
            .collect();
        let made: Vec<_> = hold
            .filter(back, &view, start + Duration::from_secs(3))
            .into_iter()
            .flat_map(|c| view.apply(c))
            .collect();
        assert!(
            made.is_empty(),
            "unchanged instances export nothing: {made:?}"
        );
        // Later removals while holding are held too.
        let later = vec![Change::InstanceRemoved(instance("s2", 9).reference())];
        assert_eq!(
            pass(&mut view, &mut hold, later, start + Duration::from_secs(5)),
            0
        );
        // When the hold runs out, what did not come back goes; the services stay.
        let released = pass(&mut view, &mut hold, Vec::new(), start + MASS_REMOVAL_HOLD);
        assert_eq!(released, 3);
        assert_eq!(hold.deadline(), None);
        assert!(view.exports_service(&Tenant::default(), "s1"));
        assert_eq!(view.held_instances(), 17);
    }

    #[test]
    fn a_resync_from_a_partial_answer_keeps_what_it_misses() {
        let mut view = view(10);
        let mut hold = RemovalHold::new(MASS_REMOVAL_HOLD);
        let start = Instant::now();
        // A full read that sees only 4 instances of s1 and nothing of s2.
        let partial = Snapshot {
            services: vec![service("s1")],
            instances: (0..4).map(|i| instance("s1", i)).collect(),
        };
        assert_eq!(
            pass(&mut view, &mut hold, vec![Change::Resync(partial)], start),
            0
        );
        assert_eq!(
            view.held_instances(),
            20,
            "the view keeps what the answer missed"
        );
        // The next full read is whole again: nothing is removed, now or when the hold ends.
        let whole = Snapshot {
            services: vec![service("s1"), service("s2")],
            instances: ["s1", "s2"]
                .iter()
                .flat_map(|s| (0..10).map(move |i| instance(s, i)))
                .collect(),
        };
        assert_eq!(
            pass(
                &mut view,
                &mut hold,
                vec![Change::Resync(whole)],
                start + Duration::from_secs(1)
            ),
            0
        );
        assert_eq!(
            pass(&mut view, &mut hold, Vec::new(), start + MASS_REMOVAL_HOLD),
            0
        );
        assert_eq!(view.held_instances(), 20);
    }

    #[test]
    fn small_data_centres_are_never_held() {
        let mut view = view(4);
        let mut hold = RemovalHold::new(MASS_REMOVAL_HOLD);
        let gone = vec![
            Change::ServiceRemoved {
                tenant: Tenant::default(),
                service_id: "s1".into(),
            },
            Change::ServiceRemoved {
                tenant: Tenant::default(),
                service_id: "s2".into(),
            },
        ];
        assert_eq!(pass(&mut view, &mut hold, gone, Instant::now()), 8);
    }
}

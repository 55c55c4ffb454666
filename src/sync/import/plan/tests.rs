//! One test per row of the desired × mapping × present table, then orphans, adoption, the
//! removal guard and cap, and origin grace. No actor, no registry, no clock.

use std::collections::HashSet;

use super::*;
use crate::registry::Tenant;
use crate::sync::copy::{CopyLease, copy_body};
use crate::sync::export::Export;
use crate::sync::ids::OriginKey;
use crate::sync::import::views::{Admit, AdmitAll};
use crate::sync::safety::REMOVAL_WINDOW;

const ORIGIN: &str = "dc1";
/// The local id of the copies' service (the origin's is `svc`).
const LOCAL_SERVICE: &str = "local-svc";

fn service() -> Arc<Service> {
    Arc::new(Service {
        service_id: "svc".into(),
        app: "app".into(),
        name: "orders".into(),
        version: "1.0.0".into(),
        ..Service::default()
    })
}

fn instance(id: &str) -> Instance {
    Instance {
        service_id: "svc".into(),
        instance_id: id.into(),
        host_name: "h1".into(),
        endpoints: vec!["rest://10.0.0.1:8080".into()],
        status: "UP".into(),
        ..Instance::default()
    }
}

fn key(id: &str) -> InstanceRef {
    instance(id).reference()
}

fn origin_key(id: &str) -> OriginKey {
    OriginKey {
        origin: ORIGIN.into(),
        tenant: Tenant::default(),
        service_id: "svc".into(),
        instance_id: id.into(),
    }
}

/// The copy syncer registers for `origin` at `generation`.
fn body(origin: &Instance, generation: u32) -> Instance {
    copy_body(
        &origin_key(&origin.instance_id),
        origin,
        LOCAL_SERVICE,
        generation,
        CopyLease::default(),
    )
}

fn mapping(origin: &Instance, generation: u32) -> Mapping {
    let copy = body(origin, generation);
    Mapping {
        origin: ORIGIN.into(),
        domain: copy.tenant.domain.clone(),
        project: copy.tenant.project.clone(),
        origin_service_id: origin.service_id.clone(),
        origin_instance_id: origin.instance_id.clone(),
        service_id: LOCAL_SERVICE.into(),
        instance_id: copy.instance_id.clone(),
        fingerprint: fingerprint(&copy),
        generation,
        updated_ms: 1,
    }
}

/// Views built row by row: what the origin exports, what is mapped, what is present.
struct Fixture {
    views: Views,
    guard: RemovalGuard,
    now: Instant,
}

impl Fixture {
    /// A complete snapshot was applied: removals are allowed (up to 1 000 a minute).
    fn new() -> Fixture {
        Fixture::with(Vec::new())
    }

    fn with(mappings: Vec<Mapping>) -> Fixture {
        let mut guard = RemovalGuard::new(1000);
        guard.mark_complete(ORIGIN);
        Fixture {
            views: Views::new(ORIGIN.into(), mappings),
            guard,
            now: Instant::now(),
        }
    }

    fn desire(&mut self, origin: &Instance) -> &mut Fixture {
        let items = self
            .views
            .desired
            .values()
            .map(|d| (d.service.clone(), (*d.instance).clone()))
            .chain([(service(), origin.clone())])
            .collect();
        self.views
            .replace_desired(items, &mut AdmitAll, &mut HashSet::new());
        self
    }

    fn map(&mut self, origin: &Instance, generation: u32) -> &mut Fixture {
        self.views
            .set_mapping(origin.reference(), mapping(origin, generation));
        self
    }

    fn present(&mut self, copy: &Instance) -> &mut Fixture {
        self.views
            .present
            .insert(copy.instance_id.clone(), PresentCopy::of(copy));
        self
    }

    fn plan_with(&mut self, keys: &[InstanceRef], orphans: bool, stale: bool) -> Plan {
        let input = Input {
            views: &self.views,
            keys,
            orphans,
            stale,
            now: self.now,
            now_ms: 7,
        };
        plan(&input, &mut self.guard)
    }

    fn plan(&mut self, keys: &[InstanceRef]) -> Plan {
        self.plan_with(keys, false, false)
    }
}

fn register(origin: &Instance, generation: u32, replace: Option<Mapping>) -> Action {
    Action::Register {
        key: origin.reference(),
        service: service(),
        instance: Arc::new(origin.clone()),
        generation,
        replace,
    }
}

fn remove_mapped(m: &Mapping) -> Action {
    Action::Remove {
        key: Some(super::super::views::origin_ref(m)),
        copy: copy_ref(m),
        mapping: Some(m.clone()),
    }
}

fn remove_orphan(copy: &Instance) -> Action {
    Action::Remove {
        key: None,
        copy: copy.reference(),
        mapping: None,
    }
}

fn adopt(origin: &Instance, generation: u32) -> Action {
    let mut mapping = mapping(origin, generation);
    mapping.updated_ms = 7;
    Action::Adopt {
        key: origin.reference(),
        mapping,
    }
}

// Row 1: desired, no mapping, a copy with a derived id of generation 0-7: adopt it.
#[test]
fn row_desired_unmapped_with_a_derived_copy_is_adopted_at_every_generation() {
    let i1 = instance("i1");
    for generation in 0..ADOPT_GENERATIONS {
        let mut f = Fixture::new();
        f.desire(&i1).present(&body(&i1, generation));
        let plan = f.plan(&[key("i1")]);
        assert_eq!(
            plan.actions,
            [adopt(&i1, generation)],
            "generation {generation}"
        );
        assert_eq!(plan.services, [service()]);
    }
}

#[test]
fn adoption_takes_the_lowest_generation_and_stops_at_eight() {
    let i1 = instance("i1");
    let mut f = Fixture::new();
    f.desire(&i1).present(&body(&i1, 5)).present(&body(&i1, 2));
    assert_eq!(f.plan(&[key("i1")]).actions, [adopt(&i1, 2)]);

    // Generation 8 is beyond the search: a new copy is registered, and the old one is an
    // orphan to remove.
    let beyond = body(&i1, ADOPT_GENERATIONS);
    let mut f = Fixture::new();
    f.desire(&i1).present(&beyond);
    assert_eq!(f.plan(&[key("i1")]).actions, [register(&i1, 0, None)]);
    assert_eq!(
        f.plan_with(&[key("i1")], true, false).actions,
        [register(&i1, 0, None), remove_orphan(&beyond)]
    );
}

// Row 2: desired, no mapping, no copy: register generation 0.
#[test]
fn row_desired_unmapped_without_a_copy_is_registered_at_generation_0() {
    let i1 = instance("i1");
    let mut f = Fixture::new();
    f.desire(&i1);
    let plan = f.plan(&[key("i1")]);
    assert_eq!(plan.actions, [register(&i1, 0, None)]);
    assert_eq!(plan.services, [service()]);
    assert!(plan.waiting.is_empty());
    assert_eq!(plan.removals, None);
}

// Row 3: desired, mapped, copy missing: register again, same generation while the
// fingerprint matches, the next one (replacing the mapping) when it changed.
#[test]
fn row_desired_mapped_without_a_copy_is_registered_again() {
    let i1 = instance("i1");
    let mut f = Fixture::new();
    f.desire(&i1).map(&i1, 2);
    assert_eq!(f.plan(&[key("i1")]).actions, [register(&i1, 2, None)]);

    let mut moved = i1.clone();
    moved.endpoints = vec!["rest://10.0.0.2:8080".into()];
    let mut f = Fixture::new();
    f.desire(&moved).map(&i1, 2);
    assert_eq!(
        f.plan(&[key("i1")]).actions,
        [register(&moved, 3, Some(mapping(&i1, 2)))]
    );
}

// Row 4: desired, mapped, present: plan_update decides.
#[test]
fn row_desired_mapped_present_goes_through_plan_update() {
    let i1 = instance("i1");
    let copy = body(&i1, 1);

    // Nothing to do; the service is still ensured (its properties may have changed).
    let mut f = Fixture::new();
    f.desire(&i1).map(&i1, 1).present(&copy);
    let plan = f.plan(&[key("i1")]);
    assert!(plan.actions.is_empty());
    assert_eq!(plan.services, [service()]);

    // In place: status and/or properties.
    let mut down = i1.clone();
    down.status = "DOWN".into();
    let mut f = Fixture::new();
    f.desire(&down).map(&i1, 1).present(&copy);
    assert_eq!(
        f.plan(&[key("i1")]).actions,
        [Action::Update {
            key: key("i1"),
            copy: copy.reference(),
            status: Some("DOWN".into()),
            properties: None,
        }]
    );

    // Replace: what only registration sets changed; make-before-break at the next generation.
    let mut renamed = i1.clone();
    renamed.host_name = "h2".into();
    let mut f = Fixture::new();
    f.desire(&renamed).map(&i1, 1).present(&copy);
    assert_eq!(
        f.plan(&[key("i1")]).actions,
        [register(&renamed, 2, Some(mapping(&i1, 1)))]
    );
}

// Row 5: mapped but no longer desired: remove the copy, then the mapping.
#[test]
fn row_mapped_but_not_desired_is_removed_with_its_mapping() {
    let i1 = instance("i1");
    let m = mapping(&i1, 0);
    for present in [false, true] {
        let mut f = Fixture::with(vec![m.clone()]);
        if present {
            f.present(&body(&i1, 0));
        }
        let plan = f.plan(&[key("i1")]);
        assert_eq!(plan.actions, [remove_mapped(&m)], "present: {present}");
        assert!(plan.services.is_empty());
        assert_eq!(plan.removals, Some(Removals::Allowed { now: 1, paused: 0 }));
    }
}

// Row 6: a marked copy of this origin nobody maps: removed when orphans are looked at.
#[test]
fn row_an_unmapped_marked_copy_is_removed_as_an_orphan() {
    let stray = body(&instance("gone"), 0);
    let mut f = Fixture::new();
    f.present(&stray);
    assert!(f.plan(&[]).actions.is_empty(), "orphans not asked for");
    assert_eq!(
        f.plan_with(&[], true, false).actions,
        [remove_orphan(&stray)]
    );
}

#[test]
fn neither_desired_nor_mapped_is_left_alone() {
    let mut f = Fixture::new();
    assert_eq!(f.plan(&[key("i1")]), Plan::default());
}

#[test]
fn orphans_adopt_copies_of_desired_instances_and_remove_extra_mappings() {
    let i1 = instance("i1");
    let i2 = instance("i2");
    // A crash mid-replacement left generations 0 and 1 of i2 mapped: 1 is kept (and
    // present, so the old copy may go: see `a_crash_mid_replacement_...`).
    let mut f = Fixture::with(vec![mapping(&i2, 0), mapping(&i2, 1)]);
    assert_eq!(f.views.extra_mappings, [mapping(&i2, 0)]);
    f.desire(&i1)
        .desire(&i2)
        .present(&body(&i1, 0))
        .present(&body(&i2, 1));
    let plan = f.plan_with(&[], true, false);
    assert_eq!(
        plan.actions,
        [
            adopt(&i1, 0),
            Action::Remove {
                key: None,
                copy: copy_ref(&mapping(&i2, 0)),
                mapping: Some(mapping(&i2, 0)),
            },
        ],
        "the adopted copy is not an orphan"
    );

    // An instance planned already is not adopted twice.
    let plan = f.plan_with(&[key("i1")], true, false);
    assert_eq!(plan.actions.first(), Some(&adopt(&i1, 0)));
    assert_eq!(
        plan.actions
            .iter()
            .filter(|a| matches!(a, Action::Adopt { .. }))
            .count(),
        1
    );
}

#[test]
fn no_removal_before_a_complete_snapshot() {
    let m = mapping(&instance("i1"), 0);
    let stray = body(&instance("gone"), 0);
    let mut f = Fixture::with(vec![m.clone()]);
    f.guard = RemovalGuard::new(1000);
    f.present(&stray);
    let plan = f.plan_with(&[key("i1")], true, false);
    assert!(plan.actions.is_empty());
    assert_eq!(plan.waiting, [remove_mapped(&m), remove_orphan(&stray)]);
    assert_eq!(plan.removals, Some(Removals::Incomplete));

    f.guard.mark_complete(ORIGIN);
    let plan = f.plan_with(&[key("i1")], true, false);
    assert_eq!(plan.actions, [remove_mapped(&m), remove_orphan(&stray)]);
}

#[test]
fn a_new_leader_holds_removals_until_its_predecessors_lease_ends() {
    let m = mapping(&instance("i1"), 0);
    let mut f = Fixture::with(vec![m.clone()]);
    let until = f.now + Duration::from_secs(3);
    f.guard.hold_until(until);
    let plan = f.plan(&[key("i1")]);
    assert!(plan.actions.is_empty());
    assert_eq!(plan.waiting, [remove_mapped(&m)]);
    assert_eq!(plan.removals, Some(Removals::Held(until)));

    f.now = until;
    assert_eq!(f.plan(&[key("i1")]).actions, [remove_mapped(&m)]);
}

#[test]
fn removals_are_capped_per_origin_in_a_sliding_minute() {
    let instances: Vec<Instance> = (0..3).map(|n| instance(&format!("i{n}"))).collect();
    let mappings: Vec<Mapping> = instances.iter().map(|i| mapping(i, 0)).collect();
    let keys: Vec<InstanceRef> = instances.iter().map(Instance::reference).collect();
    let mut f = Fixture::with(mappings.clone());
    f.guard = RemovalGuard::new(2);
    f.guard.mark_complete(ORIGIN);
    let start = f.now;

    let plan = f.plan(&keys);
    assert_eq!(plan.actions.len(), 2);
    assert_eq!(plan.waiting.len(), 1);
    assert_eq!(plan.removals, Some(Removals::Allowed { now: 2, paused: 1 }));
    for m in &mappings {
        let removal = remove_mapped(m);
        assert!(plan.actions.contains(&removal) || plan.waiting.contains(&removal));
    }

    // Half a minute later the window is still full; a full minute after, there is room.
    let rest = plan.waiting[0]
        .key()
        .cloned()
        .into_iter()
        .collect::<Vec<_>>();
    f.now = start + REMOVAL_WINDOW / 2;
    let plan = f.plan(&rest);
    assert!(plan.actions.is_empty());
    assert_eq!(plan.removals, Some(Removals::Allowed { now: 0, paused: 1 }));
    f.now = start + REMOVAL_WINDOW;
    let plan = f.plan(&rest);
    assert_eq!(plan.actions.len(), 1);
    assert!(plan.waiting.is_empty());

    // Another origin has its own budget in the same guard.
    let mut other = Views::new(
        "dc2".into(),
        vec![Mapping {
            origin: "dc2".into(),
            ..mapping(&instance("j"), 0)
        }],
    );
    other.origin = "dc2".into();
    f.guard.mark_complete("dc2");
    let input = Input {
        views: &other,
        keys: &[key("j")],
        orphans: false,
        stale: false,
        now: f.now,
        now_ms: 7,
    };
    assert_eq!(plan_fn(&input, &mut f.guard).actions.len(), 1);
}

fn plan_fn(input: &Input<'_>, guard: &mut RemovalGuard) -> Plan {
    plan(input, guard)
}

#[test]
fn a_stale_origin_gets_no_registration_nor_update_but_removals_go_on() {
    let i1 = instance("i1");
    let i2 = instance("i2");
    let mut down = instance("i3");
    down.status = "DOWN".into();
    let gone = mapping(&instance("i4"), 0);
    let stray = body(&instance("i5"), 0);
    let adoptable = instance("i6");
    let mut f = Fixture::with(vec![gone.clone()]);
    f.desire(&i1)
        .desire(&i2)
        .map(&i2, 0)
        .desire(&down)
        .map(&instance("i3"), 0)
        .present(&body(&instance("i3"), 0))
        .present(&stray)
        .desire(&adoptable)
        .present(&body(&adoptable, 0));
    let keys = [key("i1"), key("i2"), key("i3"), key("i4"), key("i6")];
    let plan = f.plan_with(&keys, true, true);
    assert!(plan.services.is_empty(), "no service is ensured");
    // Without adoption while stale, the copy of i6 is an orphan like any other.
    assert_eq!(plan.actions.len(), 3, "{:?}", plan.actions);
    for removal in [
        remove_mapped(&gone),
        remove_orphan(&stray),
        remove_orphan(&body(&adoptable, 0)),
    ] {
        assert!(plan.actions.contains(&removal), "{removal:?}");
    }

    // The same views, not stale: everything is planned.
    let plan = f.plan_with(&keys, true, false);
    assert!(plan.actions.contains(&register(&i1, 0, None)));
    assert!(plan.actions.contains(&register(&i2, 0, None)));
    assert!(plan.actions.contains(&adopt(&adoptable, 0)));
    assert!(
        plan.actions
            .iter()
            .any(|a| matches!(a, Action::Update { .. }))
    );
}

#[test]
fn heartbeats_stop_for_a_stale_origin_unless_stale_copies_are_kept() {
    let mut f = Fixture::new();
    f.map(&instance("i1"), 0).map(&instance("i2"), 3);
    let all: HashSet<InstanceRef> = f.views.mappings().values().map(copy_ref).collect();
    for (stale, keep_stale, renewed) in [
        (false, false, true),
        (false, true, true),
        (true, true, true),
        (true, false, false),
    ] {
        let targets: HashSet<InstanceRef> = heartbeat_targets(&f.views, stale, keep_stale)
            .into_iter()
            .collect();
        let expected = if renewed { all.clone() } else { HashSet::new() };
        assert_eq!(targets, expected, "stale {stale}, keep_stale {keep_stale}");
    }
}

#[test]
fn an_origin_is_stale_after_the_grace_period_and_recovers_on_an_exchange() {
    let grace = Duration::from_secs(60);
    let start = Instant::now();
    let mut health = OriginHealth::new(start);
    assert_eq!(
        health.check(start + grace, grace),
        None,
        "grace is inclusive"
    );
    assert!(!health.is_stale());
    let late = start + grace + Duration::from_millis(1);
    assert_eq!(health.check(late, grace), Some(HealthChange::BecameStale));
    assert!(health.is_stale());
    assert_eq!(health.check(late + grace, grace), None, "reported once");
    assert_eq!(health.exchanged(late), Some(HealthChange::Recovered));
    assert!(!health.is_stale());
    assert_eq!(health.exchanged(late), None);
    assert_eq!(health.check(late + grace, grace), None);
}

/// Refuses one instance id and one service id, as a registry kind's rules would.
struct Refuse;

impl Admit for Refuse {
    fn service(&mut self, service: &Service) -> bool {
        service.service_id != "bad-svc"
    }

    fn instance(&mut self, _: &Service, instance: &Instance) -> bool {
        instance.instance_id != "bad"
    }
}

#[test]
fn refused_objects_are_kept_out_of_desired() {
    let bad_service = Arc::new(Service {
        service_id: "bad-svc".into(),
        ..(*service()).clone()
    });
    let mut bad_service_instance = instance("j1");
    bad_service_instance.service_id = "bad-svc".into();
    let mut views = Views::new(ORIGIN.into(), Vec::new());
    let mut dirty = HashSet::new();
    views.replace_desired(
        vec![
            (service(), instance("i1")),
            (service(), instance("bad")),
            (bad_service.clone(), bad_service_instance.clone()),
        ],
        &mut Refuse,
        &mut dirty,
    );
    assert_eq!(
        views.desired.keys().collect::<Vec<_>>(),
        [&key("i1")],
        "snapshot"
    );

    // An increment that turns an instance into a refused one takes it out, as a removal.
    dirty.clear();
    let observed = views.apply_changes(
        vec![
            (
                1,
                11,
                Export::Upsert {
                    service: service(),
                    instance: Arc::new(instance("bad")),
                },
            ),
            (
                2,
                12,
                Export::Upsert {
                    service: service(),
                    instance: Arc::new(instance("i2")),
                },
            ),
        ],
        &mut Refuse,
        &mut dirty,
    );
    assert_eq!(observed, [11, 12]);
    assert!(dirty.contains(&key("bad")));
    assert!(!views.desired.contains_key(&key("bad")));
    assert!(views.desired.contains_key(&key("i2")));

    // A service update the kind refuses takes its instances out.
    let refused = Arc::new(Service {
        service_id: "svc".into(),
        ..(*bad_service).clone()
    });
    struct RefuseAll;
    impl Admit for RefuseAll {
        fn service(&mut self, _: &Service) -> bool {
            false
        }
        fn instance(&mut self, _: &Service, _: &Instance) -> bool {
            false
        }
    }
    views.apply_changes(
        vec![(3, 13, Export::Service(refused))],
        &mut RefuseAll,
        &mut dirty,
    );
    assert!(views.desired.is_empty());
}

/// Refuses services whose version is not a number, as SC's rules do (`latest`).
struct RefuseLatest;

impl Admit for RefuseLatest {
    fn service(&mut self, service: &Service) -> bool {
        service.version != "latest"
    }

    fn instance(&mut self, _: &Service, instance: &Instance) -> bool {
        instance.instance_id != "bad"
    }
}

/// A service update takes its instances out of desired while the kind refuses it; the update
/// that makes it acceptable again brings them back (an increment carries only the service,
/// not its instances, so they must not be forgotten meanwhile). The same after a snapshot
/// that held them out.
#[test]
fn instances_held_out_by_a_refused_service_return_with_an_accepted_one() {
    let latest = Arc::new(Service {
        version: "latest".into(),
        ..(*service()).clone()
    });
    let fixed = Arc::new(Service {
        version: "2.0.0".into(),
        ..(*service()).clone()
    });
    let service_change = |seq, s: &Arc<Service>| (seq, 0, Export::Service(s.clone()));
    let mut views = Views::new(ORIGIN.into(), Vec::new());
    let mut dirty = HashSet::new();
    views.replace_desired(
        vec![
            (service(), instance("i1")),
            (service(), instance("i2")),
            (service(), instance("bad")),
        ],
        &mut RefuseLatest,
        &mut dirty,
    );
    let admitted = || HashSet::from([key("i1"), key("i2")]);
    let desired = |views: &Views| views.desired.keys().cloned().collect::<HashSet<_>>();
    assert_eq!(desired(&views), admitted());

    views.apply_changes(
        vec![service_change(1, &latest)],
        &mut RefuseLatest,
        &mut dirty,
    );
    assert!(views.desired.is_empty(), "held out while refused");
    // Meanwhile one instance goes and one changes.
    let mut changed = instance("i2");
    changed.status = "DOWN".into();
    views.apply_changes(
        vec![
            (2, 0, Export::Removed(key("i1"))),
            (
                3,
                0,
                Export::Upsert {
                    service: latest.clone(),
                    instance: Arc::new(changed.clone()),
                },
            ),
        ],
        &mut RefuseLatest,
        &mut dirty,
    );
    assert!(views.desired.is_empty());

    dirty.clear();
    views.apply_changes(
        vec![service_change(4, &fixed)],
        &mut RefuseLatest,
        &mut dirty,
    );
    assert_eq!(desired(&views), HashSet::from([key("i2")]), "back, i1 gone");
    assert_eq!(
        *views.desired[&key("i2")].instance,
        changed,
        "the latest body"
    );
    assert_eq!(views.desired[&key("i2")].service, fixed);
    assert!(dirty.contains(&key("i2")));

    // A snapshot that holds them out, then the accepted service.
    views.replace_desired(
        vec![(latest.clone(), instance("i1")), (latest, instance("bad"))],
        &mut RefuseLatest,
        &mut dirty,
    );
    assert!(views.desired.is_empty());
    views.apply_changes(
        vec![service_change(5, &fixed)],
        &mut RefuseLatest,
        &mut dirty,
    );
    assert_eq!(
        desired(&views),
        HashSet::from([key("i1")]),
        "the instance the kind refuses on its own stays out"
    );
}

fn moved(origin: &Instance, endpoint: &str) -> Instance {
    Instance {
        endpoints: vec![endpoint.into()],
        ..origin.clone()
    }
}

fn remove_extra(m: &Mapping) -> Action {
    Action::Remove {
        key: None,
        copy: copy_ref(m),
        mapping: Some(m.clone()),
    }
}

// Issue 21, item 8: a crash between registering the new generation (its mapping written
// first) and removing the old copy. The restart must not remove the old copy in the batch
// that registers the new one (they run in parallel: a moment with no copy, none at all if
// the registration fails).
#[test]
fn a_crash_mid_replacement_removes_the_old_copy_only_once_the_new_one_is_present() {
    let i1 = instance("i1");
    let e2 = moved(&i1, "rest://10.0.0.2:8080");
    let mut f = Fixture::with(vec![mapping(&i1, 0), mapping(&e2, 1)]);
    f.desire(&e2).present(&body(&i1, 0));
    let plan = f.plan_with(&[key("i1")], true, false);
    assert_eq!(plan.actions, [register(&e2, 1, None)]);
    assert_eq!(plan.waiting, [remove_extra(&mapping(&i1, 0))]);
    assert!(
        heartbeat_targets(&f.views, false, false).contains(&body(&i1, 0).reference()),
        "the old copy is kept alive while it waits"
    );

    // The new copy is registered: now the old one goes.
    f.present(&body(&e2, 1));
    let plan = f.plan_with(&[key("i1")], true, false);
    assert_eq!(plan.actions, [remove_extra(&mapping(&i1, 0))]);
    assert!(plan.waiting.is_empty());

    // The old mapping is lost too, only its copy is left: the same.
    let mut f = Fixture::with(vec![mapping(&e2, 1)]);
    f.desire(&e2).present(&body(&i1, 0));
    let plan = f.plan_with(&[key("i1")], true, false);
    assert_eq!(plan.actions, [register(&e2, 1, None)]);
    assert_eq!(plan.waiting, [remove_orphan(&body(&i1, 0))]);

    // A copy of an instance no longer desired is removed at once, as before.
    let mut f = Fixture::with(vec![mapping(&i1, 0), mapping(&e2, 1)]);
    f.present(&body(&i1, 0));
    let plan = f.plan_with(&[key("i1")], true, false);
    assert!(plan.actions.contains(&remove_extra(&mapping(&i1, 0))));
    assert!(plan.waiting.is_empty());
}

// With every mapping lost, both generations are present: the one matching the origin is
// adopted (the lowest before), the other removed as an orphan, the adopted copy is kept.
#[test]
fn after_a_lost_store_the_copy_matching_the_origin_is_adopted() {
    let i1 = instance("i1");
    let e2 = moved(&i1, "rest://10.0.0.2:8080");
    let mut f = Fixture::new();
    f.desire(&e2).present(&body(&i1, 0)).present(&body(&e2, 1));
    let plan = f.plan_with(&[key("i1")], true, false);
    assert_eq!(
        plan.actions,
        [adopt(&e2, 1), remove_orphan(&body(&i1, 0))],
        "{plan:?}"
    );
}

// Issue 21, item 8: an application's instance that names this origin in `syncer.origin`
// without a copy id is never present as a copy, so never removed as an orphan.
#[test]
fn an_instance_with_only_the_origin_property_is_never_removed() {
    let mut forged = instance("app-1");
    forged
        .properties
        .insert(crate::sync::ids::ORIGIN_PROPERTY.into(), ORIGIN.into());
    let stray = body(&instance("gone"), 0);
    let mut f = Fixture::new();
    f.views.replace_present(
        vec![
            (forged.instance_id.clone(), PresentCopy::of(&forged)),
            (stray.instance_id.clone(), PresentCopy::of(&stray)),
        ],
        &mut HashSet::new(),
    );
    assert_eq!(
        f.views
            .copy_seen("app-2".into(), PresentCopy::of(&forged), true),
        None,
        "a feed observation neither"
    );
    assert_eq!(f.views.suspicious(), 2, "each counted once");
    let plan = f.plan_with(&[], true, false);
    assert_eq!(plan.actions, [remove_orphan(&stray)]);
}

// Issue 21, item 8: a registration of generation 1 timed out but landed (endpoints E1), the
// origin moved on (E2). Generation 1 is skipped (the registry would keep E1 under it), and
// a copy whose body is not what its mapping says is replaced.
#[test]
fn a_copy_out_of_step_with_its_mapping_is_replaced() {
    let i1 = instance("i1");
    let e1 = moved(&i1, "rest://10.0.0.2:8080");
    let e2 = moved(&i1, "rest://10.0.0.3:8080");
    let mut f = Fixture::new();
    f.desire(&e2)
        .map(&i1, 0)
        .present(&body(&i1, 0))
        .present(&body(&e1, 1));
    assert_eq!(
        f.plan(&[key("i1")]).actions,
        [register(&e2, 2, Some(mapping(&i1, 0)))]
    );

    // The mapping already says E2 at generation 1, the registry holds E1 there.
    let mut f = Fixture::new();
    f.desire(&e2).map(&e2, 1).present(&body(&e1, 1));
    assert_eq!(
        f.plan(&[key("i1")]).actions,
        [register(&e2, 2, Some(mapping(&e2, 1)))]
    );
}

// Issue 21, item 8: `--keep-stale-copies` keeps a stale origin's copies for a bounded time.
#[test]
fn stale_copies_are_kept_for_a_bounded_time() {
    let grace = Duration::from_secs(60);
    let keep_for = Duration::from_secs(3600);
    let start = Instant::now();
    let mut health = OriginHealth::new(start);
    let stale_at = start + grace + Duration::from_millis(1);
    assert_eq!(
        health.check(stale_at, grace),
        Some(HealthChange::BecameStale)
    );
    assert!(health.keeps_stale_copies(true));
    assert!(!health.check_keep(start + grace + keep_for, grace, keep_for));
    assert!(health.keeps_stale_copies(true));
    let over = start + grace + keep_for + Duration::from_millis(1);
    assert!(health.check_keep(over, grace, keep_for), "said once");
    assert!(!health.check_keep(over, grace, keep_for));
    assert!(!health.keeps_stale_copies(true));
    assert!(!health.keeps_stale_copies(false));
    health.exchanged(over);
    assert!(health.keeps_stale_copies(true), "an exchange starts over");
}

//! Scenarios of heterogeneous sync (issue 16): data centres of Service Center and of Eureka,
//! the latter as a [`MemoryRegistry::eureka_like`] twin that behaves through the trait as the
//! Eureka adapter does: no services at rest (a service shows while it has instances, under
//! an id derived from its identity), no service properties, contracts, tags or rules, and
//! instance ids such as `host:orders:8080`.
//!
//! Each scenario asserts what the registries hold in the end (copies, their data, their
//! services), that no echo and no copy of a copy appears, and, where the difference of kinds
//! could make the engine write again and again or report a trouble, that it does neither.

use std::collections::BTreeMap;
use std::time::Duration;

use syncer::registry::memory::{MemoryRegistry, RegistryOp, eureka_service_id};
use syncer::registry::{AccessRule, Instance, InstanceRef, Registry, Schema, Service, Tenant};
use syncer::sync::ids::{ORIGIN_PROPERTY, is_copy_id};
use syncer::telemetry::Metrics;

use super::harness::{Kind, SETTLE, World, fast_settings};

use Kind::{Eureka, ServiceComb};

/// A Service Center service of app `app`, version 1.0.0, with id = name.
fn sc_service(id: &str, app: &str, name: &str) -> Service {
    Service {
        tenant: Tenant::default(),
        service_id: id.into(),
        app: app.into(),
        name: name.into(),
        version: "1.0.0".into(),
        ..Service::default()
    }
}

fn instance(service_id: &str, id: &str, host: &str) -> Instance {
    Instance {
        tenant: Tenant::default(),
        service_id: service_id.into(),
        instance_id: id.into(),
        endpoints: vec![format!("rest://{host}:8080")],
        host_name: host.into(),
        status: "UP".into(),
        properties: BTreeMap::from([("zone".to_owned(), "z1".to_owned())]),
        ..Instance::default()
    }
}

/// Registers `body` in Eureka data centre `dc` as an application would, under app `app`
/// and VIP address `vip`; returns its reference there.
fn register_native(w: &mut World, dc: usize, app: &str, vip: &str, body: &Instance) -> InstanceRef {
    let stored = w.registry(dc).register_native(app, vip, body);
    w.record_origin(dc, stored.reference());
    stored.reference()
}

/// The local id the Eureka adapter gives a service of app `app`, name `name`, version
/// `version` of the default tenant.
fn eureka_id(app: &str, name: &str, version: &str) -> String {
    eureka_service_id(&Service {
        app: app.into(),
        name: name.into(),
        version: version.into(),
        ..Service::default()
    })
}

/// The services `dc`'s registry shows (a Eureka one: those with instances).
fn services(w: &World, dc: usize) -> Vec<Service> {
    w.registry(dc).contents().services
}

/// `(origin, service, reason)` of the services `dc`'s syncer reports in trouble (`/health`).
fn troubles(w: &World, dc: usize) -> Vec<(String, String, &'static str)> {
    w.dcs[dc].members[0].metrics.service_failures().list()
}

/// Every `syncer_sync_service_failures_total` of `dc`'s syncer, summed over its labels.
fn failures_counted(w: &World, dc: usize) -> u64 {
    let metrics = Metrics::default();
    w.dcs[dc].members[0].metrics.register(&metrics);
    metrics
        .encode()
        .lines()
        .filter(|line| line.starts_with("syncer_sync_service_failures_total"))
        .filter_map(|line| line.rsplit(' ').next())
        .filter_map(|value| value.trim().parse::<u64>().ok())
        .sum()
}

/// How often each operation that changes a registry was called on `registry`, heartbeats
/// left out.
fn writes(registry: &MemoryRegistry) -> BTreeMap<RegistryOp, u64> {
    registry
        .calls()
        .into_iter()
        .filter(|(op, _)| {
            !matches!(
                op,
                RegistryOp::Identity
                    | RegistryOp::Snapshot
                    | RegistryOp::Schemas
                    | RegistryOp::Heartbeat
            )
        })
        .collect()
}

/// A Service Center instance reaches the Eureka data centre as a marked copy in the service
/// the adapter derives (created by nothing but the copy's arrival), follows its status
/// (every Service Center status, TESTING included) and properties, and goes with it, its
/// service with it.
#[tokio::test(start_paused = true)]
async fn sc_to_eureka_an_instance_is_mirrored_through_its_whole_life() {
    let mut w = World::of_kinds(&[ServiceComb, Eureka], fast_settings()).await;
    let a = w.register(0, "orders", "a1").await;
    w.wait_mirrored("a1's copy in the Eureka data centre").await;
    let copy = w.copy_of(1, 0, &a).expect("a copy");
    let derived = eureka_id("world", "orders", "1.0.0");
    assert_eq!(
        copy.service_id, derived,
        "in the service the adapter derives"
    );
    assert!(is_copy_id(&copy.instance_id));
    assert_eq!(copy.properties[ORIGIN_PROPERTY], "dc1");
    let shown = services(&w, 1);
    assert_eq!(shown.len(), 1, "{shown:?}");
    assert_eq!(
        (shown[0].app.as_str(), shown[0].name.as_str()),
        ("world", "orders")
    );
    assert!(shown[0].properties.is_empty(), "Eureka holds no properties");

    for status in ["DOWN", "TESTING", "OUTOFSERVICE", "STARTING", "UP"] {
        w.set_status(0, &a, status).await;
        w.wait_until(&format!("status {status} in the copy"), SETTLE, |w| {
            w.copy_of(1, 0, &a).is_some_and(|c| c.status == status)
        })
        .await;
    }
    w.set_properties(0, &a, &[("zone", "z2"), ("weight", "5")])
        .await;
    w.wait_mirrored("the properties in the copy").await;
    let updated = w.copy_of(1, 0, &a).expect("a copy");
    assert_eq!(updated.instance_id, copy.instance_id, "updated in place");
    assert_eq!(updated.properties["weight"], "5");

    w.unregister(0, &a).await;
    w.wait_until("the copy gone, its service with it", SETTLE, |w| {
        w.copies(1).is_empty() && services(w, 1).is_empty()
    })
    .await;
    w.assert_invariants();
    w.shutdown().await;
}

/// A Eureka application's instance `host:orders:8080` reaches Service Center as a copy
/// under syncer's id, in a service named as the adapter derives it; its status (Eureka's
/// OUT_OF_SERVICE reads as OUTOFSERVICE), metadata and removal follow. An instance Eureka
/// reports as UNKNOWN is left out, so its copy goes.
#[tokio::test(start_paused = true)]
async fn eureka_to_sc_a_native_instance_is_mirrored_through_its_whole_life() {
    let mut w = World::of_kinds(&[Eureka, ServiceComb], fast_settings()).await;
    let body = instance("", "host:orders:8080", "10.0.0.5");
    let a = register_native(&mut w, 0, "ORDERS", "orders", &body);
    w.wait_mirrored("the native instance's copy in Service Center")
        .await;
    let copy = w.copy_of(1, 0, &a).expect("a copy");
    assert!(
        is_copy_id(&copy.instance_id),
        "a syncer id, not {}",
        copy.instance_id
    );
    assert_eq!(copy.endpoints, ["rest://10.0.0.5:8080"]);
    let derived = eureka_id("default", "orders", "0.0.1");
    assert_eq!(a.service_id, derived);
    assert_eq!(copy.service_id, derived, "Service Center takes the same id");
    let service = w
        .registry(1)
        .contents()
        .service(&Tenant::default(), &derived)
        .cloned()
        .expect("the copy's service in Service Center");
    assert_eq!(
        (
            service.app.as_str(),
            service.name.as_str(),
            service.version.as_str()
        ),
        ("default", "orders", "0.0.1")
    );

    for status in ["OUTOFSERVICE", "DOWN", "STARTING", "UP"] {
        w.set_status(0, &a, status).await;
        w.wait_until(&format!("status {status} in the copy"), SETTLE, |w| {
            w.copy_of(1, 0, &a).is_some_and(|c| c.status == status)
        })
        .await;
    }
    w.set_properties(0, &a, &[("zone", "z9"), ("management.port", "8081")])
        .await;
    w.wait_mirrored("the metadata in the copy").await;

    // Eureka says UNKNOWN: the adapter leaves it out, and the copy goes.
    let mut unknown = body.clone();
    unknown.status = "UNKNOWN".into();
    w.registry(0).register_native("ORDERS", "orders", &unknown);
    w.wait_until("the copy of an UNKNOWN instance gone", SETTLE, |w| {
        w.copies(1).is_empty()
    })
    .await;
    register_native(&mut w, 0, "ORDERS", "orders", &body);
    w.wait_mirrored("back once UP").await;

    w.unregister(0, &a).await;
    w.wait_until("the copy gone", SETTLE, |w| w.copies(1).is_empty())
        .await;
    w.assert_invariants();
    w.shutdown().await;
}

/// Three data centres, Service Center, Eureka, Service Center: every own instance reaches
/// both others, once, and stays that way: no echo, no copy of a copy, no write repeated.
#[tokio::test(start_paused = true)]
async fn three_data_centres_of_two_kinds_mirror_without_echo() {
    let mut w = World::of_kinds(&[ServiceComb, Eureka, ServiceComb], fast_settings()).await;
    let a = w.register(0, "orders", "a1").await;
    let native = instance("", "host:billing:8080", "10.0.0.7");
    let b = register_native(&mut w, 1, "BILLING", "billing", &native);
    let c = w.register(2, "orders", "c1").await;
    w.wait_mirrored("every instance in both other data centres")
        .await;
    w.holds_for("mirrored without echo", Duration::from_secs(30), |w| {
        w.mirrored().is_ok() && w.check_invariants().is_ok()
    })
    .await;
    assert_eq!(w.copies(0).len(), 2, "{}", w.describe());
    assert_eq!(w.copies(1).len(), 2, "{}", w.describe());
    assert_eq!(w.copies(2).len(), 2, "{}", w.describe());
    // Settled both ways: a minute of anti-entropy rounds writes nothing but heartbeats.
    let before: Vec<_> = (0..3).map(|dc| writes(w.registry(dc))).collect();
    w.pass(Duration::from_secs(60)).await;
    for (dc, before) in before.iter().enumerate() {
        assert_eq!(&writes(w.registry(dc)), before, "writes in {}", w.name(dc));
    }
    // Both Service Center instances of `world/orders` share one Eureka service.
    assert_eq!(
        w.copy_of(1, 0, &a).map(|c| c.service_id),
        w.copy_of(1, 2, &c).map(|c| c.service_id)
    );
    assert!(w.copy_of(0, 1, &b).is_some() && w.copy_of(2, 1, &b).is_some());
    w.unregister(1, &b).await;
    w.unregister(0, &a).await;
    w.wait_mirrored("removals everywhere").await;
    assert_eq!(w.copies(1).len(), 1);
    w.assert_invariants();
    w.shutdown().await;
}

/// A Service Center provider with properties, tags, access rules and contracts: its
/// instances reach the Eureka data centre, which can hold none of the rest, without a
/// trouble reported and without writes repeated round after round (only heartbeats), while
/// a Service Center data centre gets the whole of it.
#[tokio::test(start_paused = true)]
async fn a_rich_sc_service_mirrors_into_eureka_quietly() {
    let mut w = World::of_kinds(&[ServiceComb, Eureka, ServiceComb], fast_settings()).await;
    let mut provider = sc_service("provider", "world", "provider");
    provider.environment = "development".into();
    provider.properties = BTreeMap::from([("owner".into(), "team-a".into())]);
    let origin = w.registry(0).clone();
    origin.ensure_service(&provider).await.expect("create");
    let hello = Schema {
        id: "hello".into(),
        summary: "sum-hello".into(),
        content: "openapi: 3.0.0\n".into(),
    };
    origin
        .put_schema(&Tenant::default(), "provider", &hello)
        .await
        .expect("upload");
    origin
        .set_service_tags(
            &Tenant::default(),
            "provider",
            &BTreeMap::from([("tier".into(), "gold".into())]),
        )
        .await
        .expect("tags");
    let rule = AccessRule {
        rule_type: "WHITE".into(),
        attribute: "tag_tier".into(),
        pattern: "gold".into(),
        description: String::new(),
    };
    origin
        .set_service_rules(&Tenant::default(), "provider", std::slice::from_ref(&rule))
        .await
        .expect("rules");
    let p1 = instance("provider", "p-1", "10.0.1.1");
    let p2 = instance("provider", "p-2", "10.0.1.2");
    w.register_in(0, &provider, &p1).await;
    w.register_in(0, &provider, &p2).await;
    w.wait_mirrored("the provider's instances everywhere").await;
    w.wait_until(
        "the whole service in the other Service Center",
        SETTLE,
        |w| {
            w.registry(2)
                .contents()
                .service(&Tenant::default(), "provider")
                .is_some_and(|s| s.rules == [rule.clone()] && s.schemas == ["hello"])
        },
    )
    .await;

    // Settled: several anti-entropy rounds and resyncs add no write but heartbeats.
    w.pass(SETTLE).await;
    let before = writes(w.registry(1));
    let heartbeats = w.registry(1).calls_of(RegistryOp::Heartbeat);
    w.holds_for("no trouble reported", Duration::from_secs(60), |w| {
        troubles(w, 1).is_empty()
    })
    .await;
    assert_eq!(
        writes(w.registry(1)),
        before,
        "no write repeated in the Eureka data centre"
    );
    assert!(
        w.registry(1).calls_of(RegistryOp::Heartbeat) > heartbeats,
        "the copies are kept alive"
    );
    assert_eq!(failures_counted(&w, 1), 0, "no failure counted");
    assert_eq!(
        w.registry(1).calls_of(RegistryOp::PutSchema)
            + w.registry(1).calls_of(RegistryOp::SetServiceTags)
            + w.registry(1).calls_of(RegistryOp::SetServiceRules),
        0,
        "nothing Eureka cannot hold is sent"
    );
    w.wait_mirrored("still mirrored").await;
    w.assert_invariants();
    w.shutdown().await;
}

/// Two Service Center services named alike in two apps stay two services in the Eureka
/// data centre; removing one's instances leaves the other's copies alone.
#[tokio::test(start_paused = true)]
async fn same_named_services_of_two_apps_do_not_collide_in_eureka() {
    let mut w = World::of_kinds(&[ServiceComb, Eureka], fast_settings()).await;
    let shop = sc_service("orders-shop", "shop", "orders");
    let bank = sc_service("orders-bank", "bank", "orders");
    let s1 = instance("orders-shop", "s1", "10.0.2.1");
    let b1 = instance("orders-bank", "b1", "10.0.2.2");
    w.register_in(0, &shop, &s1).await;
    w.register_in(0, &bank, &b1).await;
    w.wait_mirrored("both services' instances").await;
    let in_shop = w.copy_of(1, 0, &s1.reference()).expect("shop's copy");
    let in_bank = w.copy_of(1, 0, &b1.reference()).expect("bank's copy");
    assert_eq!(in_shop.service_id, eureka_id("shop", "orders", "1.0.0"));
    assert_eq!(in_bank.service_id, eureka_id("bank", "orders", "1.0.0"));
    assert_eq!(services(&w, 1).len(), 2);

    w.unregister(0, &s1.reference()).await;
    w.wait_until("shop's copy gone", SETTLE, |w| {
        w.copy_of(1, 0, &s1.reference()).is_none()
    })
    .await;
    w.holds_for("bank's copy stays", Duration::from_secs(20), |w| {
        w.copy_of(1, 0, &b1.reference()).is_some()
    })
    .await;
    let left = services(&w, 1);
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0].app, "bank");
    w.assert_invariants();
    w.shutdown().await;
}

/// A copy removed behind syncer's back in the Eureka data centre comes back; so does the
/// copy of a service whose last copy went (the service vanished meanwhile), whether its
/// origin instance went and came back or the copy was removed by hand.
#[tokio::test(start_paused = true)]
async fn copies_and_services_vanished_in_eureka_come_back() {
    let mut w = World::of_kinds(&[ServiceComb, Eureka], fast_settings()).await;
    let a = w.register(0, "orders", "a1").await;
    let b = w.register(0, "orders", "b1").await;
    w.wait_mirrored("both copies").await;

    // One of two copies removed by hand.
    let copy = w.copy_of(1, 0, &a).expect("a copy");
    w.registry(1)
        .unregister(&copy.reference())
        .await
        .expect("removed by hand");
    w.wait_mirrored("the removed copy back").await;

    // Both removed by hand: the service vanishes, then both copies come back.
    for r in [&a, &b] {
        let copy = w.copy_of(1, 0, r).expect("a copy");
        w.registry(1)
            .unregister(&copy.reference())
            .await
            .expect("removed by hand");
    }
    assert!(services(&w, 1).is_empty(), "the service vanished");
    w.wait_mirrored("both copies back, and their service").await;
    assert_eq!(services(&w, 1).len(), 1);

    // The origin's last instances go, then one comes back.
    w.unregister(0, &a).await;
    w.unregister(0, &b).await;
    w.wait_until("the service gone with its copies", SETTLE, |w| {
        services(w, 1).is_empty() && w.copies(1).is_empty()
    })
    .await;
    w.pass(Duration::from_secs(10)).await;
    let a = w.register(0, "orders", "a1").await;
    w.wait_mirrored("a1 mirrored again").await;
    assert!(w.copy_of(1, 0, &a).is_some());

    // The adapter restarts meanwhile and forgets the service it recorded: still mirrored.
    w.unregister(0, &a).await;
    w.wait_until("the copy gone", SETTLE, |w| w.copies(1).is_empty())
        .await;
    w.registry(1).restart_adapter();
    w.register(0, "orders", "a2").await;
    w.wait_mirrored("a2 mirrored after the adapter forgot the service")
        .await;
    w.assert_invariants();
    w.shutdown().await;
}

/// Restarts of the syncers on a kept store: the Eureka side's (its importer finds its copies
/// and registers only what changed meanwhile; its adapter table is rebuilt from Eureka) and
/// the Service Center side's; no duplicate copy anywhere.
#[tokio::test(start_paused = true)]
async fn restarts_on_either_side_leave_no_duplicate() {
    let mut w = World::of_kinds(&[ServiceComb, Eureka], fast_settings()).await;
    let a = w.register(0, "orders", "a1").await;
    let b = w.register(0, "billing", "b1").await;
    let native = instance("", "host:stock:8080", "10.0.3.1");
    let n = register_native(&mut w, 1, "STOCK", "stock", &native);
    w.wait_mirrored("both ways").await;

    // The Eureka side's syncer stops; the origin changes meanwhile.
    w.stop_engine(1).await;
    w.unregister(0, &b).await;
    let c = w.register(0, "payments", "c1").await;
    w.registry(1).restart_adapter();
    let registered = w.registry(1).calls_of(RegistryOp::Register);
    w.restart_engine(1).await;
    w.wait_mirrored("caught up after the restart").await;
    assert!(w.copy_of(1, 0, &c).is_some() && w.copy_of(1, 0, &b).is_none());
    assert!(w.copy_of(1, 0, &a).is_some());
    w.pass(SETTLE).await;
    assert_eq!(
        w.registry(1).calls_of(RegistryOp::Register) - registered,
        1,
        "only the new instance registered"
    );

    // The Service Center side's syncer restarts: its copy of the native instance stays one.
    let sc_copy = w.copy_of(0, 1, &n).expect("a copy").instance_id;
    w.restart_engine(0).await;
    w.wait_mirrored("mirrored after the second restart").await;
    w.holds_for("no duplicate", Duration::from_secs(20), |w| {
        w.check_invariants().is_ok() && w.copies(0).len() == 1 && w.copies(1).len() == 2
    })
    .await;
    assert_eq!(w.copy_of(0, 1, &n).expect("a copy").instance_id, sc_copy);
    w.assert_invariants();
    w.shutdown().await;
}

/// One service deployed in both kinds of data centre (a ServiceComb `default/orders/0.0.1`
/// and a Eureka app `ORDERS`): each side's instances join the other side's own in one
/// service, both ways, whichever side came first and whichever leaves first.
#[tokio::test(start_paused = true)]
async fn a_service_deployed_in_both_kinds_is_one_service_on_each_side() {
    let mut w = World::of_kinds(&[ServiceComb, Eureka], fast_settings()).await;
    let mut orders = sc_service("orders-sc", "default", "orders");
    orders.version = "0.0.1".into();
    let s1 = instance("orders-sc", "s1", "10.0.4.1");
    w.register_in(0, &orders, &s1).await;
    w.wait_mirrored("the ServiceComb instance in Eureka").await;
    let derived = eureka_id("default", "orders", "0.0.1");
    assert_eq!(
        w.copy_of(1, 0, &s1.reference()).map(|c| c.service_id),
        Some(derived.clone())
    );

    // A Spring Cloud instance of the same app joins the service the copy made visible.
    let native = instance("", "host:orders:8080", "10.0.4.2");
    let n1 = register_native(&mut w, 1, "ORDERS", "orders", &native);
    assert_eq!(n1.service_id, derived);
    w.wait_mirrored("the Eureka instance in ServiceComb").await;
    assert_eq!(
        w.copy_of(0, 1, &n1).map(|c| c.service_id).as_deref(),
        Some("orders-sc"),
        "in the ServiceComb service of the same identity"
    );

    // The ServiceComb side leaves first: the service stays in Eureka with its own instance.
    w.unregister(0, &s1.reference()).await;
    w.wait_mirrored("the copy in Eureka gone").await;
    assert_eq!(services(&w, 1).len(), 1);
    w.set_status(1, &n1, "DOWN").await;
    w.wait_mirrored("the native's status in ServiceComb").await;
    let s2 = instance("orders-sc", "s2", "10.0.4.3");
    w.register_in(0, &orders, &s2).await;
    w.wait_mirrored("a new ServiceComb instance joins the native")
        .await;
    // Then the Eureka side leaves first: the copy keeps the service visible.
    w.unregister(1, &n1).await;
    w.wait_mirrored("the native's copy gone").await;
    assert!(w.copy_of(1, 0, &s2.reference()).is_some());
    w.assert_invariants();
    w.shutdown().await;
}

/// The Eureka side's syncer is away longer than its copies' lease: Eureka lets them expire
/// (their services vanish with them); back, the syncer registers each again, once.
#[tokio::test(start_paused = true)]
async fn copies_expired_in_eureka_while_its_syncer_was_away_come_back_once() {
    let mut w = World::of_kinds(&[ServiceComb, Eureka], fast_settings()).await;
    let refs = [
        w.register(0, "orders", "a1").await,
        w.register(0, "orders", "a2").await,
        w.register(0, "billing", "b1").await,
    ];
    w.wait_mirrored("three copies").await;
    w.stop_engine(1).await;
    w.wait_until("the copies expired", SETTLE, |w| {
        w.copies(1).is_empty() && services(w, 1).is_empty()
    })
    .await;
    let registered = w.registry(1).calls_of(RegistryOp::Register);
    w.restart_engine(1).await;
    w.wait_mirrored("the copies back").await;
    w.pass(SETTLE).await;
    assert_eq!(
        w.registry(1).calls_of(RegistryOp::Register) - registered,
        3,
        "each registered once"
    );
    for r in &refs {
        assert!(w.copy_of(1, 0, r).is_some());
    }
    w.assert_invariants();
    w.shutdown().await;
}

//! The contract every [`Registry`] adapter must pass.
//!
//! `registry_contract` drives an adapter through the trait alone and panics with a message
//! on the first broken promise. [`feed_until`], its wait for a change, is public for the
//! adapters' own feed tests. It creates its own uniquely named services in two tenants,
//! so it can run against a registry that other tests use at the same time, and it never
//! sleeps: it polls the change feed with a deadline.
//!
//! # Where a registry kind legitimately differs
//! [`registry_contract_with`] takes a [`ContractProfile`]; [`registry_contract`] is the
//! ServiceComb profile ([`ContractProfile::SERVICECOMB`]). Eureka
//! ([`ContractProfile::EUREKA`]) differs in exactly these promises:
//! - **Service ids are the registry's.** Eureka has no service ids: the adapter derives one
//!   from what names a service, so `ensure_service` returns that id whatever id is asked for
//!   (still idempotent, still the same for the same service without or under another id).
//! - **No services at rest.** A Eureka service exists while it has instances: it is absent
//!   from a snapshot before its first instance and after its last, and it has no properties
//!   (`set_service_properties` is accepted and does nothing, for any service id).
//!
//! Schemas, tags and access rules are outside this contract (the trait's defaults refuse
//! them, which is what Eureka keeps).

use std::collections::BTreeMap;
use std::time::Duration;

use super::model::{Change, HealthCheck, Instance, InstanceRef, Service, Tenant};
use super::{ChangeFeed, Registry};

/// How long the feed may take to report a change.
const FEED_DEADLINE: Duration = Duration::from_secs(10);

fn unique_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!("{}x{}", nanos, COUNTER.fetch_add(1, Ordering::Relaxed))
}

fn service(tenant: &Tenant, id: &str, name: &str) -> Service {
    Service {
        tenant: tenant.clone(),
        service_id: id.to_owned(),
        app: "contract".into(),
        name: name.to_owned(),
        version: "1.0.0".into(),
        ..Service::default()
    }
}

fn instance(tenant: &Tenant, service_id: &str, id: &str) -> Instance {
    Instance {
        tenant: tenant.clone(),
        service_id: service_id.to_owned(),
        instance_id: id.to_owned(),
        endpoints: vec![format!("rest://10.1.2.3:8080?id={id}")],
        host_name: "contract-host".into(),
        status: "UP".into(),
        properties: BTreeMap::from([("zone".to_owned(), "z1".to_owned())]),
        health_check: Some(HealthCheck {
            mode: "push".into(),
            interval: 30,
            times: 3,
            port: 0,
            url: String::new(),
        }),
        ..Instance::default()
    }
}

/// Pulls `feed` until a change satisfies `pred`, and returns every change seen on the way
/// (the batch with the match included).
///
/// The contract waits with it; adapter tests use it for their own feed checks.
///
/// # Panics
/// When the feed fails, or does not report such a change within 10 seconds.
pub async fn feed_until(
    feed: &mut Box<dyn ChangeFeed>,
    what: &str,
    mut pred: impl FnMut(&Change) -> bool,
) -> Vec<Change> {
    let mut seen = Vec::new();
    let wait = async {
        loop {
            match feed.next().await {
                Ok(batch) => {
                    let found = batch.iter().any(&mut pred);
                    seen.extend(batch);
                    if found {
                        return;
                    }
                }
                Err(e) => panic!("change feed failed while waiting for {what}: {e}"),
            }
        }
    };
    if tokio::time::timeout(FEED_DEADLINE, wait).await.is_err() {
        panic!("change feed did not report {what} within {FEED_DEADLINE:?}");
    }
    seen
}

fn is_instance(change: &Change, r: &InstanceRef, check: impl Fn(&Instance) -> bool) -> bool {
    match change {
        Change::Instance(i) => i.reference() == *r && check(i),
        Change::Resync(snapshot) => snapshot.instance(r).is_some_and(check),
        _ => false,
    }
}

/// Where a registry kind differs from ServiceComb in the contract (see the module
/// documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContractProfile {
    /// `ensure_service` creates the service under the id the caller chose.
    pub chosen_service_ids: bool,
    /// Services exist without instances and hold properties.
    pub services_at_rest: bool,
}

impl ContractProfile {
    /// Apache ServiceComb Service Center (and the in-memory twin).
    pub const SERVICECOMB: ContractProfile = ContractProfile {
        chosen_service_ids: true,
        services_at_rest: true,
    };
    /// Netflix Eureka.
    pub const EUREKA: ContractProfile = ContractProfile {
        chosen_service_ids: false,
        services_at_rest: false,
    };
}

/// Runs the whole contract against `registry`, as a ServiceComb-like registry.
///
/// # Panics
/// On the first behaviour that breaks the [`Registry`] contract.
pub async fn registry_contract(registry: &dyn Registry) {
    registry_contract_with(registry, ContractProfile::SERVICECOMB).await;
}

/// Runs the whole contract against `registry`, with the differences `profile` allows.
///
/// # Panics
/// On the first behaviour that breaks the [`Registry`] contract.
pub async fn registry_contract_with(registry: &dyn Registry, profile: ContractProfile) {
    let suffix = unique_suffix();
    let home = Tenant::default_tenant();
    let other = Tenant::new(format!("contract{suffix}"), "proj1");

    // Identity doubles as the health check.
    let identity = registry.identity().await.expect("identity");
    assert!(
        !identity.kind.is_empty() && !identity.id.is_empty(),
        "identity is incomplete: {identity:?}"
    );

    // A feed opened now starts with a full snapshot.
    let mut feed = registry.change_feed();
    let first = feed.next().await.expect("first feed batch");
    assert!(
        matches!(first.as_slice(), [Change::Resync(_)]),
        "the first batch of a feed must be one Resync, got {first:?}"
    );

    // ensure_service: created under the chosen id (or the registry's own), idempotent.
    let chosen_id = format!("contract-svc-{suffix}");
    let svc = service(&home, &chosen_id, &format!("contract-{suffix}"));
    let service_id = registry.ensure_service(&svc).await.expect("ensure_service");
    if profile.chosen_service_ids {
        assert_eq!(service_id, chosen_id);
    } else {
        assert!(!service_id.is_empty(), "ensure_service returned no id");
    }
    assert_eq!(
        registry
            .ensure_service(&svc)
            .await
            .expect("ensure_service again"),
        service_id
    );
    // The same service without an id resolves to the existing one.
    let anonymous = Service {
        service_id: String::new(),
        ..svc.clone()
    };
    assert_eq!(
        registry
            .ensure_service(&anonymous)
            .await
            .expect("ensure_service without id"),
        service_id
    );
    // So does the same service under another chosen id: SC answers the create with
    // `400010`, and the existing id is what the caller gets.
    let other_id = Service {
        service_id: format!("contract-svc-other-{suffix}"),
        ..svc.clone()
    };
    assert_eq!(
        registry
            .ensure_service(&other_id)
            .await
            .expect("ensure_service under another id"),
        service_id,
        "the same service under another id must resolve to the existing one"
    );

    // Service properties are replaced (where services hold any).
    let props = BTreeMap::from([("owner".to_owned(), "syncer".to_owned())]);
    registry
        .set_service_properties(&home, &service_id, &props)
        .await
        .expect("set_service_properties");
    let snapshot = registry.snapshot().await.expect("snapshot");
    if profile.services_at_rest {
        let stored = snapshot
            .service(&home, &service_id)
            .expect("service in snapshot");
        assert_eq!(stored.properties, props);
        assert_eq!(
            (stored.app.as_str(), stored.version.as_str()),
            ("contract", "1.0.0")
        );
        let missing = registry
            .set_service_properties(&home, "no-such-service", &props)
            .await;
        assert!(
            missing.is_err_and(|e| e.is_not_found()),
            "unknown service must be NotFound"
        );
    } else {
        assert!(
            snapshot.service(&home, &service_id).is_none(),
            "a service without instances is not at rest in this kind of registry"
        );
    }
    assert!(
        !snapshot.services.iter().any(|s| s.name == "SERVICECENTER"),
        "registry-internal services must not be in a snapshot"
    );
    assert!(
        snapshot.service(&home, &other_id.service_id).is_none(),
        "ensuring an existing service under another id must not create a second one"
    );

    // register: under the chosen id, visible in the snapshot and the feed.
    let a = instance(&home, &service_id, &format!("contract-a-{suffix}"));
    registry.register(&a).await.expect("register a");
    let snapshot = registry.snapshot().await.expect("snapshot");
    let stored = snapshot
        .instance(&a.reference())
        .expect("instance a in snapshot");
    assert_eq!(stored.endpoints, a.endpoints);
    assert_eq!(stored.host_name, a.host_name);
    assert_eq!(stored.status, "UP");
    assert_eq!(stored.properties, a.properties);
    assert_eq!(
        stored.version, "1.0.0",
        "an instance carries its service's version"
    );
    if !profile.services_at_rest {
        let stored = snapshot
            .service(&home, &service_id)
            .expect("the service of an instance is in the snapshot");
        assert_eq!(
            (stored.app.as_str(), stored.version.as_str()),
            ("contract", "1.0.0")
        );
    }
    feed_until(&mut feed, "the new instance", |c| {
        is_instance(c, &a.reference(), |_| true)
    })
    .await;
    // Registering again is harmless.
    registry.register(&a).await.expect("register a again");

    // Unknown service.
    let orphan = instance(&home, "no-such-service", &format!("contract-o-{suffix}"));
    let err = registry
        .register(&orphan)
        .await
        .expect_err("register on unknown service");
    assert!(
        err.is_not_found(),
        "register on an unknown service must be NotFound, got {err:?}"
    );

    // Status and properties changes reach the feed.
    registry
        .set_status(&a.reference(), "DOWN")
        .await
        .expect("set_status");
    feed_until(&mut feed, "status DOWN", |c| {
        is_instance(c, &a.reference(), |i| i.status == "DOWN")
    })
    .await;
    let new_props = BTreeMap::from([("zone".to_owned(), "z2".to_owned())]);
    registry
        .set_instance_properties(&a.reference(), &new_props)
        .await
        .expect("set_instance_properties");
    feed_until(&mut feed, "new properties", |c| {
        is_instance(c, &a.reference(), |i| i.properties == new_props)
    })
    .await;
    let err = registry
        .set_status(&a.reference(), "SIDEWAYS")
        .await
        .expect_err("invalid status");
    assert!(
        !err.is_retryable(),
        "an invalid status is not retryable: {err:?}"
    );

    // Heartbeats name the unknown instances.
    let ghost = InstanceRef {
        tenant: home.clone(),
        service_id: service_id.clone(),
        instance_id: format!("contract-ghost-{suffix}"),
    };
    let report = registry
        .heartbeat(&[a.reference()])
        .await
        .expect("heartbeat");
    assert!(
        report.unknown.is_empty(),
        "known instance reported unknown: {report:?}"
    );
    let report = registry
        .heartbeat(&[a.reference(), ghost.clone()])
        .await
        .expect("heartbeat with a ghost");
    assert_eq!(report.unknown, vec![ghost.clone()]);

    // Unknown instances are NotFound.
    for (what, result) in [
        ("set_status", registry.set_status(&ghost, "UP").await),
        (
            "set_instance_properties",
            registry.set_instance_properties(&ghost, &props).await,
        ),
        ("unregister", registry.unregister(&ghost).await),
    ] {
        assert!(
            result.as_ref().is_err_and(|e| e.is_not_found()),
            "{what} of an unknown instance: {result:?}"
        );
    }

    // Tenants are kept apart and carried through.
    let other_chosen = format!("contract-svc2-{suffix}");
    let other_svc = service(&other, &other_chosen, &format!("contract-{suffix}"));
    let other_id = registry
        .ensure_service(&other_svc)
        .await
        .expect("ensure in other tenant");
    if profile.chosen_service_ids {
        assert_eq!(other_id, other_chosen);
    } else {
        assert_ne!(
            other_id, service_id,
            "the same service in another tenant is another service"
        );
    }
    let b = instance(&other, &other_id, &format!("contract-b-{suffix}"));
    registry
        .register(&b)
        .await
        .expect("register in other tenant");
    let snapshot = registry.snapshot().await.expect("snapshot");
    let stored = snapshot
        .instance(&b.reference())
        .expect("other tenant's instance in snapshot");
    assert_eq!(stored.tenant, other);
    assert!(
        snapshot.service(&home, &other_id).is_none(),
        "tenants must not mix"
    );
    feed_until(&mut feed, "the other tenant's instance", |c| {
        is_instance(c, &b.reference(), |_| true)
    })
    .await;

    // unregister: gone from snapshot and feed.
    registry
        .unregister(&a.reference())
        .await
        .expect("unregister a");
    feed_until(&mut feed, "the removal", |c| match c {
        Change::InstanceRemoved(r) => *r == a.reference(),
        Change::Resync(s) => s.instance(&a.reference()).is_none(),
        _ => false,
    })
    .await;
    assert!(
        registry
            .snapshot()
            .await
            .expect("snapshot")
            .instance(&a.reference())
            .is_none()
    );
    registry
        .unregister(&b.reference())
        .await
        .expect("unregister b");
    if !profile.services_at_rest {
        let snapshot = registry.snapshot().await.expect("snapshot");
        assert!(
            snapshot.service(&home, &service_id).is_none()
                && snapshot.service(&other, &other_id).is_none(),
            "a service whose last instance is gone is gone"
        );
    }
}

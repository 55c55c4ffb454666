//! The smaller gaps of issue 21, item 8: a restart after a crash mid-replacement never
//! leaves an instance without a copy, an application's instance that carries the origin
//! property is not syncer's to delete, `--keep-stale-copies` is bounded, and a copy whose
//! body is out of step with its mapping is replaced.

use std::collections::BTreeMap;
use std::time::Duration;

use syncer::registry::{Instance, Registry};
use syncer::store::{Group, MappingStore, Op};
use syncer::sync::copy::fingerprint;
use syncer::sync::ids::{ORIGIN_PROPERTY, OriginKey, copy_instance_id};

use super::harness::{SETTLE, World, fast_settings};

/// A crash between writing the replacement's mapping (intent first) and registering its
/// copy: after the restart the old copy is not removed in the batch that registers the new
/// one. The mapping store fails from the restart on, so the registration cannot happen:
/// the old copy must stay (and be heartbeated) until it can, then give way.
#[tokio::test(start_paused = true)]
async fn a_restart_after_a_crash_mid_replacement_never_leaves_no_copy() {
    let mut w = World::new(2).await;
    let a = w.register(0, "orders", "a1").await;
    w.wait_mirrored("the mirror").await;
    let old = w.copy_of(1, 0, &a).expect("a copy");
    let old_mapping = w
        .mappings(1)
        .into_iter()
        .find(|m| m.instance_id == old.instance_id)
        .expect("its mapping");

    w.stop_engine(1).await;
    w.set_endpoints(0, &a, &["rest://a1.moved:8080"]).await;
    let moved = w.instance(0, &a).expect("the moved instance");
    let key = OriginKey {
        origin: w.name(0).to_owned(),
        tenant: a.tenant.clone(),
        service_id: a.service_id.clone(),
        instance_id: a.instance_id.clone(),
    };
    let intent = syncer::store::Mapping {
        instance_id: copy_instance_id(&key, 1),
        fingerprint: fingerprint(&moved),
        generation: 1,
        ..old_mapping
    };
    w.store(1)
        .commit(&[Group::from(Op::PutMapping(intent))])
        .await
        .expect("the intent is written");

    w.restart_engine(1).await;
    w.store(1).set_unavailable(true);
    w.holds_for("a copy of a1 while the store fails", SETTLE, |w| {
        !w.copies_of(1, 0, &a).is_empty()
    })
    .await;

    w.store(1).set_unavailable(false);
    w.wait_until("the replacement alone", SETTLE, |w| {
        let copies = w.copies_of(1, 0, &a);
        assert!(!copies.is_empty(), "no copy of a1 left\n{}", w.describe());
        copies.len() == 1 && copies[0].endpoints == moved.endpoints
    })
    .await;
    w.wait_mirrored("the mirror").await;
    w.assert_invariants();
    w.shutdown().await;
}

/// An application's instance that names an origin in `syncer.origin` but has no copy id
/// survives the import side's looks (feed, full re-read after a restart), and is not
/// exported either.
#[tokio::test(start_paused = true)]
async fn an_instance_with_only_the_origin_property_survives() {
    let mut w = World::new(2).await;
    w.register(0, "orders", "a1").await;
    w.wait_mirrored("the mirror").await;

    let forged = Instance {
        service_id: "billing".into(),
        instance_id: "app-1".into(),
        endpoints: vec!["rest://app-1.dc2:8080".into()],
        host_name: "app-1-host".into(),
        status: "UP".into(),
        properties: BTreeMap::from([(ORIGIN_PROPERTY.to_owned(), w.name(0).to_owned())]),
        ..Instance::default()
    };
    w.register_body(1, &forged).await;
    let r = forged.reference();
    w.holds_for("the application's instance", SETTLE, |w| {
        w.instance(1, &r).is_some()
    })
    .await;
    w.restart_engine(1).await;
    w.holds_for("the application's instance after a restart", SETTLE, |w| {
        w.instance(1, &r).is_some()
    })
    .await;
    assert!(w.copies_from(0, 1).is_empty(), "not exported");
    w.shutdown().await;
}

/// With `keep_stale` and a bound, the copies of an origin gone for good stay for the
/// grace period plus the bound, then expire as without the switch.
#[tokio::test(start_paused = true)]
async fn stale_copies_are_kept_only_for_the_bound() {
    let mut settings = fast_settings();
    settings.keep_stale = true;
    settings.keep_stale_for = Duration::from_secs(20);
    let kept = settings.origin_grace + settings.keep_stale_for;
    let mut w = World::with_settings(2, settings).await;
    for i in 0..3 {
        w.register(0, "orders", &format!("a{i}")).await;
    }
    w.wait_mirrored("the mirror").await;

    w.stop_engine(0).await;
    w.holds_for("the stale copies", kept - Duration::from_secs(1), |w| {
        w.copies(1).len() == 3
    })
    .await;
    w.wait_until("the copies expired", SETTLE, |w| w.copies(1).is_empty())
        .await;

    w.restart_engine(0).await;
    w.wait_mirrored("the copies back").await;
    w.assert_invariants();
    w.shutdown().await;
}

/// The registry holds a body under the copy's id other than the one its mapping records
/// (as after a registration that timed out but landed, followed by another change): the
/// copy is replaced by one in step with the origin.
#[tokio::test(start_paused = true)]
async fn a_copy_out_of_step_with_its_mapping_is_replaced() {
    let mut w = World::new(2).await;
    let a = w.register(0, "orders", "a1").await;
    w.wait_mirrored("the mirror").await;
    let copy = w.copy_of(1, 0, &a).expect("a copy");

    let registry = w.registry(1).clone();
    let out_of_step = Instance {
        endpoints: vec!["rest://a1.elsewhere:8080".into()],
        mod_timestamp: None,
        ..copy.clone()
    };
    registry
        .unregister(&copy.reference())
        .await
        .expect("unregister");
    registry.register(&out_of_step).await.expect("register");

    let origin = w.instance(0, &a).expect("the origin instance");
    w.wait_until("the copy in step again", SETTLE, |w| {
        w.copy_of(1, 0, &a)
            .is_some_and(|c| c.endpoints == origin.endpoints)
    })
    .await;
    w.wait_mirrored("the mirror").await;
    w.assert_invariants();
    w.shutdown().await;
}

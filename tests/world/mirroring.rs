//! Scenarios of mirroring when nothing fails: a whole instance life, three data centres
//! without echo, a lost copy, restarts on a kept store, lost mappings, a late data centre.

use std::time::Duration;

use syncer::registry::Registry;
use syncer::registry::memory::RegistryOp;
use syncer::store::{Group, MappingStore, Op};
use syncer::sync::ids::ORIGIN_PROPERTY;

use super::harness::{SETTLE, World};

/// The harness itself, with no data moving: the pool forms, every engine serves.
#[tokio::test(start_paused = true)]
async fn the_world_forms_and_every_engine_serves() {
    let w = World::new(3).await;
    for dc in &w.dcs {
        assert!(dc.members[0].handle.running(), "{} serves", dc.name);
    }
    w.assert_invariants();
    w.shutdown().await;
}

/// (1) Register → a marked copy in every other data centre; status, properties and
/// endpoints follow (endpoints by replacement under a new id, make-before-break);
/// unregister → the copies go.
#[tokio::test(start_paused = true)]
async fn an_instance_is_mirrored_through_its_whole_life() {
    let mut w = World::new(3).await;
    let a = w.register(0, "orders", "a1").await;
    w.wait_mirrored("copies of a1 in dc2 and dc3").await;
    let mut first_ids = Vec::new();
    for dc in [1, 2] {
        let copy = w.copy_of(dc, 0, &a).expect("a copy");
        assert_eq!(
            copy.properties[ORIGIN_PROPERTY], "dc1",
            "the copy is marked"
        );
        assert_eq!(w.generation_of(0, &a, &copy), Some(0));
        first_ids.push(copy.instance_id);
    }

    w.set_status(0, &a, "DOWN").await;
    w.wait_until("the status reaches both copies", SETTLE, |w| {
        [1, 2]
            .iter()
            .all(|&dc| w.copy_of(dc, 0, &a).is_some_and(|c| c.status == "DOWN"))
    })
    .await;

    w.set_properties(0, &a, &[("zone", "z2"), ("weight", "5")])
        .await;
    w.wait_mirrored("the properties reach both copies").await;
    let copy = w.copy_of(1, 0, &a).expect("a copy");
    assert_eq!(copy.properties["weight"], "5");
    assert_eq!(
        copy.properties[ORIGIN_PROPERTY], "dc1",
        "the mark survives an update"
    );
    assert_eq!(copy.instance_id, first_ids[0], "updated in place");

    // Endpoints can only be set by registering: a new copy under the next generation, and
    // the old one goes only once the new one is there.
    w.set_endpoints(0, &a, &["rest://a1.dc1:9090"]).await;
    w.wait_until("the replacement in both data centres", SETTLE, |w| {
        assert!(
            [1, 2].iter().all(|&dc| !w.copies_of(dc, 0, &a).is_empty()),
            "make-before-break: a data centre was left without a copy of a1\n{}",
            w.describe()
        );
        w.mirrored().is_ok()
    })
    .await;
    for (dc, first) in [1, 2].into_iter().zip(&first_ids) {
        let copy = w.copy_of(dc, 0, &a).expect("a copy");
        assert_ne!(&copy.instance_id, first, "replaced under a new id");
        assert_eq!(w.generation_of(0, &a, &copy), Some(1));
        assert_eq!(copy.endpoints, ["rest://a1.dc1:9090"]);
    }
    w.assert_invariants();

    w.unregister(0, &a).await;
    w.wait_until("the copies go", SETTLE, |w| {
        w.copies_of(1, 0, &a).is_empty() && w.copies_of(2, 0, &a).is_empty()
    })
    .await;
    assert!(w.copies(1).is_empty() && w.copies(2).is_empty());
    w.assert_invariants();
    w.shutdown().await;
}

/// (2) Three data centres, each with its own instances: each ends with its own plus one
/// copy of every other's, never a copy of a copy, and stays so over anti-entropy rounds.
#[tokio::test(start_paused = true)]
async fn three_data_centres_mirror_each_other_without_echo() {
    let mut w = World::new(3).await;
    for (dc, service) in [(0, "orders"), (1, "billing"), (2, "search")] {
        for i in 0..3 {
            w.register(dc, service, &format!("{service}-{i}")).await;
        }
    }
    w.wait_mirrored("every data centre mirrors the others")
        .await;
    w.assert_invariants();
    let registered: Vec<u64> = (0..3)
        .map(|dc| w.registry(dc).calls_of(RegistryOp::Register))
        .collect();
    // Three anti-entropy rounds: nothing moves any more.
    w.holds_for("the mirror without echo", Duration::from_secs(16), |w| {
        w.mirrored().is_ok() && (0..3).all(|dc| w.instances(dc).len() == 9 && w.own(dc).len() == 3)
    })
    .await;
    for (dc, before) in registered.iter().enumerate() {
        assert_eq!(
            w.registry(dc).calls_of(RegistryOp::Register),
            *before,
            "{} registered again at rest",
            w.name(dc)
        );
    }
    w.assert_invariants();
    w.shutdown().await;
}

/// (3) A copy deleted behind syncer's back is registered again, under the same id.
#[tokio::test(start_paused = true)]
async fn a_lost_copy_is_created_again() {
    let mut w = World::new(2).await;
    let a = w.register(0, "orders", "a1").await;
    w.wait_mirrored("the copy").await;
    let copy = w.copy_of(1, 0, &a).expect("a copy");
    w.registry(1)
        .unregister(&copy.reference())
        .await
        .expect("delete the copy");
    assert!(w.copy_of(1, 0, &a).is_none());
    w.wait_mirrored("the copy again").await;
    assert_eq!(
        w.copy_of(1, 0, &a).expect("a copy").instance_id,
        copy.instance_id,
        "the same id: the copy is restored, not duplicated"
    );
    w.assert_invariants();
    w.shutdown().await;
}

/// (6) A restarted syncer finds its copies through the kept store: same ids, no
/// re-registration, no duplicates; a restarted origin changes nothing either.
#[tokio::test(start_paused = true)]
async fn a_restart_on_a_kept_store_changes_nothing() {
    let mut w = World::new(2).await;
    for i in 0..5 {
        w.register(0, "orders", &format!("a{i}")).await;
    }
    w.register(1, "billing", "b0").await;
    w.wait_mirrored("the mirror").await;
    let before = (w.copy_ids(0), w.copy_ids(1));
    let registered = (
        w.registry(0).calls_of(RegistryOp::Register),
        w.registry(1).calls_of(RegistryOp::Register),
    );

    w.restart_engine(1).await;
    w.wait_for_pool().await;
    // Two anti-entropy rounds after the restart.
    w.holds_for(
        "the mirror across the restart",
        Duration::from_secs(12),
        |w| w.mirrored().is_ok(),
    )
    .await;
    w.restart_engine(0).await;
    w.wait_for_pool().await;
    w.holds_for(
        "the mirror across the origin's restart",
        Duration::from_secs(12),
        |w| w.mirrored().is_ok(),
    )
    .await;

    assert_eq!((w.copy_ids(0), w.copy_ids(1)), before, "the same copies");
    assert_eq!(
        (
            w.registry(0).calls_of(RegistryOp::Register),
            w.registry(1).calls_of(RegistryOp::Register),
        ),
        registered,
        "no copy registered again"
    );
    w.assert_invariants();
    w.shutdown().await;
}

/// (11) Copies whose mappings were lost (a crash between registering and recording, a
/// wiped store) are adopted by their marks, not registered a second time.
#[tokio::test(start_paused = true)]
async fn copies_without_mappings_are_adopted_not_duplicated() {
    let mut w = World::new(2).await;
    for i in 0..5 {
        w.register(0, "orders", &format!("a{i}")).await;
    }
    w.wait_mirrored("the mirror").await;
    let before = w.copy_ids(1);

    w.stop_engine(1).await;
    let wipe: Vec<Op> = w
        .mappings(1)
        .into_iter()
        .map(|m| Op::DeleteMapping {
            origin: m.origin,
            instance_id: m.instance_id,
        })
        .collect();
    assert_eq!(wipe.len(), 5);
    w.store(1)
        .commit(&[Group::new(wipe)])
        .await
        .expect("wipe the mappings");
    let registered = w.registry(1).calls_of(RegistryOp::Register);

    w.restart_engine(1).await;
    w.wait_until("every copy mapped again", SETTLE, |w| {
        w.mappings(1).len() == 5 && w.mirrored().is_ok()
    })
    .await;
    assert_eq!(w.copy_ids(1), before, "adopted under their ids");
    assert_eq!(
        w.registry(1).calls_of(RegistryOp::Register),
        registered,
        "adopted, not registered again"
    );
    w.assert_invariants();
    w.shutdown().await;
}

/// A data centre that joins late receives everything in a snapshot, and its own
/// instances reach the others.
#[tokio::test(start_paused = true)]
async fn a_late_data_centre_gets_a_snapshot() {
    let mut w = World::new(2).await;
    for i in 0..20 {
        w.register(0, "orders", &format!("a{i}")).await;
    }
    w.register(1, "billing", "b0").await;
    w.wait_mirrored("the mirror of two").await;

    let late = w.add_dc().await;
    w.register(late, "search", "c0").await;
    w.wait_mirrored("the mirror of three").await;
    assert_eq!(w.copies_from(late, 0).len(), 20);
    w.assert_invariants();
    w.shutdown().await;
}

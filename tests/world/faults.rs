//! Scenarios of failure: the removal cap, an unreachable origin (with and without
//! `keep_stale`), partitions, dropped pushes, a slow registry, and a restart while the
//! origin is away.

use std::time::Duration;

use syncer::registry::memory::RegistryOp;
use syncer::registry::{Instance, InstanceRef, Registry, Service, Tenant};
use syncer::sync::copy::CopyLease;
use syncer::sync::ids::COPY_ID_PREFIX;
use tokio::time::Instant;

use super::harness::{SETTLE, World, fast_settings};

/// (4) Fifty origin instances go at once with a cap of ten per minute: ten copies go at
/// once, no more within the minute, and the rest follow minute by minute.
#[tokio::test(start_paused = true)]
async fn the_removal_cap_spreads_mass_removals_over_minutes() {
    let mut settings = fast_settings();
    settings.removal_cap = 10;
    // The origin unregisters all fifty in one go: without this its own mass removal hold
    // (sync::hold, tested in its module and by the chaos suite) would hold them first.
    settings.removal_hold = Duration::ZERO;
    let mut w = World::with_settings(2, settings).await;
    let mut all = Vec::new();
    for i in 0..50 {
        all.push(w.register(0, "orders", &format!("a{i}")).await);
    }
    w.wait_mirrored("the mirror").await;
    let unregistered = w.registry(1).calls_of(RegistryOp::Unregister);

    let start = Instant::now();
    for r in &all {
        w.unregister(0, r).await;
    }
    w.wait_until("the first ten removals", SETTLE, |w| {
        w.copies(1).len() == 40
    })
    .await;
    // The window is a sliding minute from the first removals.
    let rest_of_window = Duration::from_secs(58).saturating_sub(start.elapsed());
    w.holds_for("the cap within the first minute", rest_of_window, |w| {
        w.copies(1).len() >= 40
    })
    .await;
    w.wait_until("every copy gone", Duration::from_secs(300), |w| {
        let left = w.copies(1).len();
        // By minute k (0-based) at most 10 × (k + 1) copies are gone.
        let minutes = start.elapsed().as_secs() / 60;
        let allowed = usize::try_from(10 * (minutes + 1)).unwrap_or(usize::MAX);
        assert!(
            50 - left <= allowed,
            "{} removals after {:?}",
            50 - left,
            start.elapsed()
        );
        left == 0
    })
    .await;
    assert!(
        start.elapsed() >= Duration::from_secs(4 * 60),
        "fifty removals at ten a minute take four more minutes, took {:?}",
        start.elapsed()
    );
    assert_eq!(
        w.registry(1).calls_of(RegistryOp::Unregister) - unregistered,
        50,
        "each copy removed once"
    );
    w.assert_invariants();
    w.shutdown().await;
}

/// (5a) The origin's syncer is gone: its copies are kept alive through the grace period,
/// then no longer heartbeated, so they expire with their lease (nobody removes them); when
/// the origin is back, they return.
#[tokio::test(start_paused = true)]
async fn copies_of_an_unreachable_origin_expire_after_the_grace_period() {
    let settings = fast_settings();
    let (grace, lease) = (settings.origin_grace, Duration::from_secs(3));
    let mut w = World::with_settings(2, settings).await;
    for i in 0..3 {
        w.register(0, "orders", &format!("a{i}")).await;
    }
    w.wait_mirrored("the mirror").await;
    let unregistered = w.registry(1).calls_of(RegistryOp::Unregister);

    w.stop_engine(0).await;
    w.holds_for(
        "the copies during the grace period",
        grace - Duration::from_secs(1),
        |w| w.copies(1).len() == 3,
    )
    .await;
    w.wait_until("the copies expired", lease + Duration::from_secs(4), |w| {
        w.copies(1).is_empty()
    })
    .await;
    assert_eq!(
        w.registry(1).calls_of(RegistryOp::Unregister),
        unregistered,
        "the copies expired with their lease; syncer removed none"
    );

    w.restart_engine(0).await;
    w.wait_mirrored("the copies back").await;
    w.assert_invariants();
    w.shutdown().await;
}

/// (5b) With `keep_stale`, the copies of an unreachable origin stay alive however long it
/// is away.
#[tokio::test(start_paused = true)]
async fn with_keep_stale_copies_of_an_unreachable_origin_stay() {
    let mut settings = fast_settings();
    settings.keep_stale = true;
    let grace = settings.origin_grace;
    let mut w = World::with_settings(2, settings).await;
    for i in 0..3 {
        w.register(0, "orders", &format!("a{i}")).await;
    }
    w.wait_mirrored("the mirror").await;

    w.stop_engine(0).await;
    w.holds_for("the stale copies", grace * 3, |w| w.copies(1).len() == 3)
        .await;
    w.restart_engine(0).await;
    w.holds_for("the mirror once the origin is back", SETTLE, |w| {
        w.mirrored().is_ok()
    })
    .await;
    w.assert_invariants();
    w.shutdown().await;
}

/// (7) Changes made while two data centres are cut apart reach the other side after the
/// partition heals; a third data centre gets them at once.
#[tokio::test(start_paused = true)]
async fn changes_during_a_partition_arrive_after_healing() {
    let mut w = World::new(3).await;
    let a = w.register(0, "orders", "a1").await;
    w.wait_mirrored("the mirror").await;

    w.partition(0, 1);
    w.set_status(0, &a, "DOWN").await;
    let a2 = w.register(0, "orders", "a2").await;
    w.wait_until("dc3 gets the changes", SETTLE, |w| {
        w.mirrored_among(&[0, 2]).is_ok()
    })
    .await;
    // Shorter than the grace period: dc2 keeps its copy as it was.
    w.holds_for("dc2 cut off from dc1", Duration::from_secs(5), |w| {
        w.copy_of(1, 0, &a).is_some_and(|c| c.status == "UP") && w.copy_of(1, 0, &a2).is_none()
    })
    .await;

    w.heal(0, 1);
    w.wait_mirrored("dc2 catches up").await;
    w.assert_invariants();
    w.shutdown().await;
}

/// (8) A push to a data centre is lost: the change still arrives by pull, triggered by
/// the gossip announcement well before the next anti-entropy round.
#[tokio::test(start_paused = true)]
async fn a_lost_push_is_recovered_by_pull() {
    let mut settings = fast_settings();
    // An anti-entropy round far away, so that only the announcement can bring the change.
    settings.anti_entropy_interval = Duration::from_secs(60);
    let mut w = World::with_settings(2, settings).await;
    w.register(0, "orders", "a0").await;
    w.wait_until("the mirror", Duration::from_secs(70), |w| {
        w.mirrored().is_ok()
    })
    .await;

    // With anti-entropy a minute away, the next calls to dc2 are dc1's pushes.
    let failed = w.link.failed_calls();
    w.link.lose_next(w.dcs[1].members[0].rpc_addr, 2);
    let a1 = w.register(0, "orders", "a1").await;
    let took = w
        .wait_until("the copy by pull", Duration::from_secs(5), |w| {
            w.copy_of(1, 0, &a1).is_some()
        })
        .await;
    assert!(took < Duration::from_secs(5), "pulled after {took:?}");
    assert!(w.link.failed_calls() > failed, "a push was lost on the way");
    w.link.lose_next(w.dcs[1].members[0].rpc_addr, 0);
    w.wait_mirrored("the mirror").await;
    w.assert_invariants();
    w.shutdown().await;
}

/// (9) A slow registry under a burst of changes: the engine's queues stay bounded and
/// coalesce, and everything converges, nothing lost.
#[tokio::test(start_paused = true)]
async fn a_slow_registry_converges_under_a_burst() {
    let mut w = World::new(2).await;
    w.registry(1).set_write_delay(Duration::from_millis(200));
    let mut refs: Vec<InstanceRef> = Vec::new();
    for i in 0..200 {
        refs.push(w.register(0, "orders", &format!("a{i}")).await);
        if i % 50 == 49 {
            // Let the engines see the burst in a few batches.
            w.pass(Duration::from_millis(100)).await;
        }
    }
    for r in refs.iter().step_by(3) {
        w.set_status(0, r, "DOWN").await;
    }
    for r in refs.iter().skip(1).step_by(5) {
        w.set_properties(0, r, &[("zone", "z9")]).await;
    }
    for r in refs.iter().skip(2).step_by(7) {
        w.unregister(0, r).await;
    }
    w.wait_until(
        "the slow registry converges",
        Duration::from_secs(120),
        |w| w.mirrored().is_ok(),
    )
    .await;
    w.assert_invariants();
    w.shutdown().await;
}

/// A burst of local observations larger than an actor's local queue (4 096) overflows it:
/// the queue is dropped and the actor re-reads the local registry's copies instead. Here one
/// feed batch says first that a copy was deleted behind syncer's back, then 5 000 times that
/// an unmarked instance with a copy's id appeared (every actor is told of those); the
/// deletion is among the dropped events. The copy is registered again at once, from the
/// re-read, not only when the next heartbeat (200 s away here) finds it unknown.
#[tokio::test(start_paused = true)]
async fn an_overflowing_local_queue_is_replaced_by_a_reread() {
    const NOISE: usize = 5000;
    let mut settings = fast_settings();
    // Heartbeats every 200 s: only the re-read can notice the deletion within the test.
    settings.lease = CopyLease::from_lease(Duration::from_secs(600));
    let mut w = World::with_settings(2, settings).await;
    let a = w.register(0, "orders", "a1").await;
    w.wait_mirrored("the copy").await;
    let copy = w.copy_of(1, 0, &a).expect("a copy");
    let snapshots = w.registry(1).calls_of(RegistryOp::Snapshot);

    // No await point yields in between: the feed reports all of it in one batch, the
    // removal first.
    let registry = w.registry(1).clone();
    registry
        .unregister(&copy.reference())
        .await
        .expect("delete the copy");
    let noise = |i: usize| Instance {
        instance_id: format!("{COPY_ID_PREFIX}noise-{i}"),
        properties: Default::default(),
        ..copy.clone()
    };
    for i in 0..NOISE {
        registry.register(&noise(i)).await.expect("register noise");
    }
    w.wait_until("the copy again", Duration::from_secs(5), |w| {
        w.copy_of(1, 0, &a).is_some()
    })
    .await;
    assert_eq!(
        w.copy_of(1, 0, &a).expect("a copy").instance_id,
        copy.instance_id,
        "restored under the same id"
    );
    assert!(
        w.registry(1).calls_of(RegistryOp::Snapshot) > snapshots,
        "the actor re-read the registry"
    );

    for i in 0..NOISE {
        registry
            .unregister(&noise(i).reference())
            .await
            .expect("unregister noise");
    }
    w.wait_mirrored("the mirror after the noise").await;
    w.assert_invariants();
    w.shutdown().await;
}

/// (12) A syncer restarted while its origin is unreachable removes nothing: it has not
/// seen a complete snapshot, so copies missing from what it knows are not evidence.
/// When the origin is back, exactly the instances it lost go.
#[tokio::test(start_paused = true)]
async fn no_removal_on_partial_knowledge_after_a_restart() {
    let mut settings = fast_settings();
    // Keep the copies alive while the origin is away: only removals are under test.
    settings.keep_stale = true;
    let mut w = World::with_settings(2, settings).await;
    let mut refs = Vec::new();
    for i in 0..4 {
        refs.push(w.register(0, "orders", &format!("a{i}")).await);
    }
    w.wait_mirrored("the mirror").await;

    w.stop_engine(1).await;
    w.stop_engine(0).await;
    w.unregister(0, &refs[0]).await;
    w.unregister(0, &refs[1]).await;
    let unregistered = w.registry(1).calls_of(RegistryOp::Unregister);
    w.restart_engine(1).await;
    w.holds_for(
        "every copy while the origin is away",
        Duration::from_secs(25),
        |w| w.copies(1).len() == 4,
    )
    .await;
    assert_eq!(w.registry(1).calls_of(RegistryOp::Unregister), unregistered);

    w.restart_engine(0).await;
    w.wait_mirrored("the two lost instances' copies go").await;
    assert_eq!(w.copies(1).len(), 2);
    w.assert_invariants();
    w.shutdown().await;
}

/// A service the receiving registry's kind refuses (here SC's version rule: `latest` is not
/// a version) is kept out, and it does not hold up anything else from the same origin: the
/// other service's instances are mirrored, later changes too, and the refused service is
/// never written to the receiving registry.
#[tokio::test(start_paused = true)]
async fn a_refused_service_does_not_block_the_others() {
    let mut w = World::new(2).await;
    let legacy = Service {
        tenant: Tenant::default(),
        service_id: "legacy".into(),
        app: "shop".into(),
        name: "legacy".into(),
        version: "latest".into(),
        ..Service::default()
    };
    let refused = Instance {
        tenant: Tenant::default(),
        service_id: "legacy".into(),
        instance_id: "l1".into(),
        endpoints: vec!["rest://l1.dc1:8080".into()],
        host_name: "l1-host".into(),
        status: "UP".into(),
        ..Instance::default()
    };
    w.register_in(0, &legacy, &refused).await;
    let first = w.register(0, "orders", "o1").await;
    w.wait_until("o1 is mirrored in dc2", SETTLE, |w| {
        w.copy_of(1, 0, &first).is_some()
    })
    .await;
    let second = w.register(0, "orders", "o2").await;
    w.wait_until("a later instance follows", SETTLE, |w| {
        w.copy_of(1, 0, &second).is_some()
    })
    .await;
    w.holds_for(
        "the refused service and its instance stay out of dc2",
        SETTLE,
        |w| {
            w.copies_of(1, 0, &refused.reference()).is_empty()
                && w.registry(1)
                    .contents()
                    .services
                    .iter()
                    .all(|s| s.version != "latest")
        },
    )
    .await;
    w.assert_invariants();
    w.shutdown().await;
}

/// Regression (chaos suite, dc2's etcd killed): removals that fail while the mapping store is
/// down are tried again and again; each try used to count against the removal cap, so once
/// the store was back the removals waited for the cap's minute. Only removals made count now.
#[tokio::test(start_paused = true)]
async fn failed_removals_do_not_use_up_the_removal_cap() {
    let mut settings = fast_settings();
    settings.removal_cap = 10;
    let mut w = World::with_settings(2, settings).await;
    let mut all = Vec::new();
    for i in 0..10 {
        all.push(w.register(0, "orders", &format!("a{i}")).await);
    }
    w.wait_mirrored("the mirror").await;
    w.store(1).set_unavailable(true);
    for r in &all[..5] {
        w.unregister(0, r).await;
    }
    // Long enough for many retries of the five removals while the store is down.
    w.pass(Duration::from_secs(20)).await;
    w.store(1).set_unavailable(false);
    w.wait_until("the first five copies gone", SETTLE, |w| {
        w.copies(1).len() == 5
    })
    .await;
    // Five more removals, well within the cap of ten a minute: they go at once.
    for r in &all[5..] {
        w.unregister(0, r).await;
    }
    w.wait_until("the other five copies gone at once", SETTLE, |w| {
        w.copies(1).is_empty()
    })
    .await;
    w.assert_invariants();
    w.shutdown().await;
}

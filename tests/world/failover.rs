//! Failover between two engines of one data centre sharing its store, as two cluster
//! members share etcd: the old leader's late writes are fenced, the new one adopts its
//! copies without duplicating them and removes nothing while it waits out the old lease.

use std::time::Duration;

use tokio::time::Instant;

use super::harness::{SETTLE, World};

/// The new leader's hold: its predecessor's lease.
const HOLD: Duration = Duration::from_secs(20);

/// (10) Engine A of dc2 stops being leader while still running; B starts in a newer term
/// on the same store. A's late writes are `Fenced`, no copy is duplicated, B removes
/// nothing during its hold and everything afterwards.
#[tokio::test(start_paused = true)]
async fn failover_fences_the_old_leader_and_holds_removals() {
    let mut w = World::new(2).await;
    // A (member 0 of dc2) leads in term 1.
    w.lead(1, 0, 1).await;
    let a1 = w.register(0, "orders", "a1").await;
    let a2 = w.register(0, "orders", "a2").await;
    w.wait_mirrored("the mirror under A").await;
    let a2_copy = w.copy_of(1, 0, &a2).expect("a copy").instance_id;
    let store = w.dcs[1].store.clone();

    // A stands down (without noticing yet) and B leads in term 2.
    w.demote(1, 0).await;
    let started = Instant::now();
    let b = w.add_leader(1, "dc2-b", 2, HOLD).await;
    assert_eq!(store.leader_term(), Some(2));
    w.wait_for_pool().await;

    // A change A still acts on: its store writes are refused, and write nothing.
    let fenced_before = store.fenced_commits();
    let a3 = w.register(0, "orders", "a3").await;
    w.wait_until("a fenced write of A", SETTLE, |_| {
        store.fenced_commits() > fenced_before
    })
    .await;
    w.stop_member(1, 0).await;
    w.wait_mirrored("the mirror under B").await;
    assert!(w.copy_of(1, 0, &a3).is_some());
    assert_eq!(
        w.copy_of(1, 0, &a2).expect("a copy").instance_id,
        a2_copy,
        "B keeps A's copy"
    );
    w.assert_invariants();

    // B removes nothing before its hold ends, then what it must.
    w.unregister(0, &a1).await;
    let rest_of_hold = HOLD
        .saturating_sub(started.elapsed())
        .saturating_sub(Duration::from_secs(1));
    w.holds_for("the copy of a1 during B's hold", rest_of_hold, |w| {
        w.copy_of(1, 0, &a1).is_some()
    })
    .await;
    w.wait_until("a1's copy gone after the hold", SETTLE, |w| {
        w.copy_of(1, 0, &a1).is_none()
    })
    .await;
    assert!(w.dcs[1].members[b].handle.running());
    w.wait_mirrored("the mirror").await;
    w.assert_invariants();
    w.shutdown().await;
}

/// Regression (chaos suite, seed 77: a failover that killed the active member and the one
/// taking over, then another kill): leaders that follow each other faster than a heartbeat
/// period. Each new leader used to renew the copies one heartbeat period after it started,
/// so a run of short terms left them unrenewed for longer than their lease and the
/// registry expired them. A new importer renews them at once now.
#[tokio::test(start_paused = true)]
async fn copies_survive_leaders_that_each_last_less_than_a_heartbeat_period() {
    let mut w = World::new(2).await;
    w.lead(1, 0, 1).await;
    for i in 0..3 {
        w.register(0, "orders", &format!("a{i}")).await;
    }
    w.wait_mirrored("the mirror under the first leader").await;
    // The copies' lease is 3 s, renewed every second: four leaders of 0.9 s each leave them
    // without a renewal for 3.6 s unless each leader renews at once.
    let mut current = 0;
    for term in 2..=5u64 {
        w.stop_member(1, current).await;
        current = w
            .add_leader(1, &format!("dc2-{term}"), term, Duration::ZERO)
            .await;
        w.holds_for(
            "every copy alive through the short terms",
            Duration::from_millis(900),
            |w| w.copies(1).len() == 3,
        )
        .await;
    }
    w.wait_mirrored("the mirror under the last leader").await;
    w.assert_invariants();
    w.shutdown().await;
}

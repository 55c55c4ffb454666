//! Stalls: an origin's syncer that accepts calls and never answers (a process stopped with
//! SIGSTOP, a hung rpc server, a blackholed connection). The copies of its instances in the
//! other data centres keep their promise: alive through `origin_grace`, then expired with
//! their lease (or kept, with `keep_stale`), because heartbeats never wait on a pull; and when
//! a standby of the frozen syncer takes over, the importers move to it at once.

use std::time::Duration;

use syncer::registry::memory::RegistryOp;
use tokio::time::Instant;

use super::harness::{SETTLE, World, fast_settings};

/// The copies' lease in [`fast_settings`].
const LEASE: Duration = Duration::from_secs(3);

/// (1a) dc1's syncer freezes: dc2's copies of dc1 stay alive through the grace period
/// although every pull to dc1 hangs, then expire with their lease (nobody removes them); once
/// dc1 answers again they come back.
#[tokio::test(start_paused = true)]
async fn copies_of_a_frozen_origin_live_through_the_grace_period_then_expire() {
    let settings = fast_settings();
    let grace = settings.origin_grace;
    let mut w = World::with_settings(2, settings).await;
    for i in 0..3 {
        w.register(0, "orders", &format!("a{i}")).await;
    }
    w.wait_mirrored("the mirror").await;
    let unregistered = w.registry(1).calls_of(RegistryOp::Unregister);

    w.freeze(0, 0);
    w.holds_for(
        "the copies of the frozen origin during the grace period",
        grace - Duration::from_secs(1),
        |w| w.copies_from(1, 0).len() == 3,
    )
    .await;
    assert!(
        w.link.hung_calls_to(w.dcs[0].members[0].rpc_addr) > 0,
        "pulls to the frozen syncer hung"
    );
    w.wait_until(
        "the copies expired after grace and lease",
        LEASE + Duration::from_secs(4),
        |w| w.copies_from(1, 0).is_empty(),
    )
    .await;
    assert_eq!(
        w.registry(1).calls_of(RegistryOp::Unregister),
        unregistered,
        "the copies expired with their lease; syncer removed none"
    );

    w.thaw(0, 0);
    w.wait_mirrored("the copies back once dc1 answers").await;
    w.assert_invariants();
    w.shutdown().await;
}

/// (1b) With `keep_stale`, the copies of a frozen origin stay alive as long as it is frozen.
#[tokio::test(start_paused = true)]
async fn with_keep_stale_copies_of_a_frozen_origin_stay() {
    let mut settings = fast_settings();
    settings.keep_stale = true;
    let grace = settings.origin_grace;
    let mut w = World::with_settings(2, settings).await;
    for i in 0..3 {
        w.register(0, "orders", &format!("a{i}")).await;
    }
    w.wait_mirrored("the mirror").await;

    w.freeze(0, 0);
    w.holds_for("the copies of the frozen origin", grace * 3, |w| {
        w.copies_from(1, 0).len() == 3
    })
    .await;
    assert!(
        w.link.hung_calls_to(w.dcs[0].members[0].rpc_addr) > 0,
        "pulls to the frozen syncer hung"
    );
    w.assert_invariants();
    w.shutdown().await;
}

/// (2) dc1's active syncer freezes while dc2 pulls from it, and a standby takes over in a
/// newer term. dc2's importer gives up the hung pull as soon as the peer directory names the
/// new leader and pulls from it: its copies of dc1 never lapse, and new instances of dc1 are
/// mirrored through the new leader.
///
/// The grace period (10 s) is shorter than the hung pull's own deadline plus the time since
/// the exchange before it: an importer that waited for that deadline instead of moving on
/// would let the copies expire.
#[tokio::test(start_paused = true)]
async fn a_failover_away_from_a_frozen_leader_keeps_the_copies_alive() {
    let mut w = World::new(2).await;
    w.lead(0, 0, 1).await;
    let mut origin = Vec::new();
    for i in 0..3 {
        origin.push(w.register(0, "orders", &format!("a{i}")).await);
    }
    w.wait_mirrored("the mirror").await;

    w.freeze(0, 0);
    let frozen = w.dcs[0].members[0].rpc_addr;
    w.wait_until("a pull of dc2 held by the frozen leader", SETTLE, |w| {
        w.link.hung_calls_to(frozen) > 0
    })
    .await;
    let b = w.add_leader(0, "dc1-b", 2, Duration::from_secs(5)).await;
    let grace = fast_settings().origin_grace;
    w.holds_for("dc2's copies of dc1 through the failover", grace * 3, |w| {
        w.copies_from(1, 0).len() == 3
    })
    .await;

    let late = w.register(0, "orders", "a3").await;
    w.wait_until(
        "a new instance mirrored through the new leader",
        SETTLE,
        |w| w.copy_of(1, 0, &late).is_some(),
    )
    .await;
    assert!(w.dcs[0].members[b].handle.running());
    for r in &origin {
        assert!(w.copy_of(1, 0, r).is_some(), "the copy of {r} stays");
    }
    w.stop_member(0, 0).await;
    w.wait_mirrored("the mirror under the new leader").await;
    w.assert_invariants();
    w.shutdown().await;
}

/// (3) A syncer stops at once although its pull and its push hang on a frozen peer: the
/// stop cancels both rather than waiting out their deadlines.
#[tokio::test(start_paused = true)]
async fn an_engine_stops_at_once_with_calls_hung_on_a_frozen_peer() {
    let mut w = World::new(2).await;
    w.register(0, "orders", "a0").await;
    w.wait_mirrored("the mirror").await;

    w.freeze(0, 0);
    let frozen = w.dcs[0].members[0].rpc_addr;
    // dc2 pushes its new instance to the frozen syncer at once, and pulls from it within an
    // anti-entropy round: both hang.
    w.register(1, "orders", "b0").await;
    w.wait_until("a push and a pull of dc2 held by dc1", SETTLE, |w| {
        w.link.hung_calls_to(frozen) >= 2
    })
    .await;
    let started = Instant::now();
    w.stop_member(1, 0).await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "stopping took {:?}",
        started.elapsed()
    );
    w.shutdown().await;
}

/// A data centre whose syncer has just started and not read its registry yet answers the
/// first pull "not read yet", and the importer waits its pull back-off (1 s) before asking
/// again. A push from that origin proves it serves now: the pull goes at once, so the first
/// change after a start is mirrored in milliseconds, not after the back-off (`syncer demo`
/// showed 1.1 s in one run out of three).
#[tokio::test(start_paused = true)]
async fn a_push_from_an_origin_that_was_not_ready_brings_the_pull_forward() {
    let mut w = World::new(2).await;
    w.wait_for_pool().await;
    // Both syncers start again; dc1's takes 200 ms to read its registry. dc2's importer
    // asks at once, is told "not read yet" and backs off.
    w.registry(0).set_read_delay(Duration::from_millis(200));
    w.restart_engine(0).await;
    w.restart_engine(1).await;
    w.pass(Duration::from_millis(250)).await;
    let a = w.register(0, "orders", "a1").await;
    let took = w
        .wait_until("a copy of a1 in dc2", Duration::from_secs(5), |w| {
            w.copy_of(1, 0, &a).is_some()
        })
        .await;
    assert!(
        took < Duration::from_millis(300),
        "the copy took {took:?}: the pull waited for its back-off although the origin pushed"
    );
    w.assert_invariants();
    w.shutdown().await;
}

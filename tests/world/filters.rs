//! Service filters (`--include`, `--exclude`): what a data centre offers (export) and what it
//! accepts (import), and a filter changed across a restart removing and adding copies through
//! the usual safe path.

use std::sync::Arc;

use syncer::sync::ServiceFilter;

use super::harness::{SETTLE, World, fast_settings};

fn filter(include: &[&str], exclude: &[&str]) -> Arc<ServiceFilter> {
    Arc::new(ServiceFilter::new(include, exclude).expect("patterns"))
}

/// dc1 keeps `world/secret` back: dc2 and dc3 mirror its other services only.
#[tokio::test(start_paused = true)]
async fn an_export_filter_keeps_a_service_home() {
    let mut w = World::new(3).await;
    w.stop_engine(0).await;
    w.dcs[0].members[0].settings.filter = filter(&[], &["world/secret"]);
    w.restart_engine(0).await;
    w.wait_for_pool().await;
    let orders = w.register(0, "orders", "o1").await;
    let secret = w.register(0, "secret", "s1").await;
    w.wait_until("orders mirrored in dc2 and dc3", SETTLE, |w| {
        [1, 2].iter().all(|&dc| w.copy_of(dc, 0, &orders).is_some())
    })
    .await;
    w.holds_for("secret stays home", SETTLE, |w| {
        [1, 2].iter().all(|&dc| w.copy_of(dc, 0, &secret).is_none())
    })
    .await;
    w.assert_invariants();
    w.shutdown().await;
}

/// dc2 filters on `world/orders*`: it takes in only those of dc1's services, while dc3,
/// unfiltered, takes everything; and the same filter decides what dc2 offers, so its own
/// `billing` stays in dc2.
#[tokio::test(start_paused = true)]
async fn an_import_filter_takes_in_only_what_it_names() {
    let mut w = World::new(3).await;
    w.stop_engine(1).await;
    w.dcs[1].members[0].settings.filter = filter(&["world/orders*"], &[]);
    w.restart_engine(1).await;
    w.wait_for_pool().await;
    let orders = w.register(0, "orders-eu", "o1").await;
    let payroll = w.register(0, "payroll", "p1").await;
    let billing = w.register(1, "billing", "b1").await;
    w.wait_until("everything of dc1 in dc3, orders in dc2", SETTLE, |w| {
        w.copy_of(2, 0, &orders).is_some()
            && w.copy_of(2, 0, &payroll).is_some()
            && w.copy_of(1, 0, &orders).is_some()
    })
    .await;
    w.holds_for("payroll is kept out of dc2", SETTLE, |w| {
        w.copy_of(1, 0, &payroll).is_none()
    })
    .await;
    w.holds_for("billing, outside dc2's filter, stays in dc2", SETTLE, |w| {
        w.copy_of(0, 1, &billing).is_none() && w.copy_of(2, 1, &billing).is_none()
    })
    .await;
    w.assert_invariants();
    w.shutdown().await;
}

/// A filter changed over a restart: copies no longer allowed go (as removals, through the
/// removal guard), newly allowed ones come, and nothing else moves.
#[tokio::test(start_paused = true)]
async fn a_filter_changed_over_a_restart_removes_and_adds_copies() {
    let mut w = World::with_settings(2, fast_settings()).await;
    let orders = w.register(0, "orders", "o1").await;
    let payroll = w.register(0, "payroll", "p1").await;
    w.wait_until("both mirrored in dc2", SETTLE, |w| {
        w.copy_of(1, 0, &orders).is_some() && w.copy_of(1, 0, &payroll).is_some()
    })
    .await;
    let orders_copy = w.copy_of(1, 0, &orders).expect("copy").instance_id;

    w.stop_engine(1).await;
    w.dcs[1].members[0].settings.filter = filter(&[], &["world/payroll"]);
    w.restart_engine(1).await;
    w.wait_until("the payroll copy is removed from dc2", SETTLE, |w| {
        w.copy_of(1, 0, &payroll).is_none()
    })
    .await;
    assert_eq!(
        w.copy_of(1, 0, &orders).map(|c| c.instance_id),
        Some(orders_copy.clone()),
        "the orders copy is left as it was"
    );
    assert!(
        !w.mappings(1)
            .iter()
            .any(|m| m.origin_instance_id == payroll.instance_id),
        "the payroll mapping goes with its copy"
    );

    w.stop_engine(1).await;
    w.dcs[1].members[0].settings.filter = filter(&["world/payroll"], &[]);
    w.restart_engine(1).await;
    w.wait_until("payroll back, orders gone", SETTLE, |w| {
        w.copy_of(1, 0, &payroll).is_some() && w.copy_of(1, 0, &orders).is_none()
    })
    .await;
    w.assert_invariants();
    w.shutdown().await;
}

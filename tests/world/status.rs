//! The engine's status snapshot (`SyncHandle::status`, `SyncHandle::mappings`, behind
//! `syncer status` and `syncer mappings`): caught-up imports, removals held by the cap,
//! mapping entries against the registry, and a stopped engine that says why.

use std::time::Duration;

use syncer::sync::status::{EngineStatus, EntryState, Lag};
use tokio::time::Instant;

use super::harness::{SETTLE, World, fast_settings};

const WAIT: Duration = Duration::from_secs(5);

/// Polls data centre `dc`'s status (every 100 ms of virtual time) until `check` holds.
async fn status_until(
    w: &World,
    dc: usize,
    what: &str,
    check: impl Fn(&EngineStatus) -> bool,
) -> EngineStatus {
    let until = Instant::now() + SETTLE;
    loop {
        let status = w.dcs[dc].members[0].handle.status(WAIT).await;
        if check(&status) {
            return status;
        }
        assert!(
            Instant::now() < until,
            "timed out waiting for {what}: {status:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn status_follows_an_import_and_the_removals_the_cap_holds() {
    let mut settings = fast_settings();
    settings.removal_cap = 10;
    // The origin's own mass removal hold would hold the thirty removals first.
    settings.removal_hold = Duration::ZERO;
    let mut w = World::with_settings(2, settings).await;
    let mut all = Vec::new();
    for i in 0..30 {
        all.push(w.register(0, "orders", &format!("a{i}")).await);
    }
    w.wait_mirrored("the mirror").await;

    let origin = w.name(0).to_owned();
    let status = status_until(&w, 1, "dc1's import caught up", |s| {
        s.origins.iter().any(|o| {
            o.origin == origin
                && o.state.copies == 30
                && o.state.present == 30
                && o.lag() == Lag::Changes(0)
        })
    })
    .await;
    assert_eq!(status.idle, None);
    assert!(status.registry.as_ref().is_some_and(|p| p.error.is_none()));
    assert_eq!(status.store_kind, "memory");
    let import = status
        .origins
        .iter()
        .find(|o| o.origin == origin)
        .expect("import");
    assert!(import.state.complete && !import.state.stale);
    assert!(import.state.last_exchange_ms > 0);
    assert_eq!(import.state.held.total(), 0);
    let exporter = w.dcs[0].members[0].handle.status(WAIT).await;
    let export = exporter.export.expect("dc0 exports");
    assert!(export.ready);
    assert_eq!((export.instances, export.services), (30, 1));

    let entries = w.dcs[1].members[0]
        .handle
        .mappings(Some(origin.as_str()), WAIT)
        .await
        .expect("mappings");
    let mut listed: Vec<String> = entries
        .iter()
        .filter(|e| e.state == EntryState::Present)
        .map(|e| e.copy_instance_id.clone())
        .collect();
    listed.sort();
    assert_eq!(listed, w.copy_ids(1), "the entries are exactly the copies");
    let unknown = w.dcs[1].members[0]
        .handle
        .mappings(Some("elsewhere"), WAIT)
        .await
        .expect_err("an origin not imported");
    assert!(
        unknown.to_string().contains("does not import elsewhere")
            && unknown.to_string().contains(&origin),
        "{unknown}"
    );

    // Thirty removals at ten a minute: twenty are held by the cap, and status says so.
    for r in &all {
        w.unregister(0, r).await;
    }
    let status = status_until(&w, 1, "removals held by the cap", |s| {
        s.origins
            .iter()
            .any(|o| o.origin == origin && o.state.held.cap == 20 && o.state.copies == 20)
    })
    .await;
    let import = status
        .origins
        .iter()
        .find(|o| o.origin == origin)
        .expect("import");
    assert_eq!(import.state.held.awaiting_snapshot, 0);
    assert_eq!(import.state.desired, 0);

    // A stopped engine answers with why, and nothing of the engine.
    w.stop_engine(1).await;
    let status = w.dcs[1].members[0].handle.status(WAIT).await;
    assert_eq!(status.idle.as_deref(), Some("stopped by the test"));
    assert!(status.origins.is_empty() && status.export.is_none());
    assert!(
        w.dcs[1].members[0]
            .handle
            .mappings(None, WAIT)
            .await
            .is_err(),
        "no importers to list"
    );
    w.shutdown().await;
}

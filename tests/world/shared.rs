//! Scenarios of what two data centres share by name: a service deployed in both keeps each
//! side's own properties, while a service syncer created for copies follows its origin.

use std::collections::BTreeMap;
use std::time::Duration;

use syncer::registry::{Registry, Tenant};
use syncer::sync::ids::ORIGIN_PROPERTY;

use super::harness::{SETTLE, World};

/// The properties of service `service` in `dc` (the world creates services with id = name).
fn service_props(w: &World, dc: usize, service: &str) -> Option<BTreeMap<String, String>> {
    w.registry(dc)
        .contents()
        .services
        .into_iter()
        .find(|s| s.service_id == service)
        .map(|s| s.properties)
}

async fn set_service_props(w: &World, dc: usize, service: &str, props: &[(&str, &str)]) {
    let props = props
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    w.registry(dc)
        .set_service_properties(&Tenant::default(), service, &props)
        .await
        .expect("set_service_properties");
}

fn props(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// (item 5 of issue 21) A service deployed in both data centres is one service to each
/// registry: importing the other side's instances must not overwrite the local properties,
/// and a change on one side must not be reverted by the other's.
#[tokio::test(start_paused = true)]
async fn a_service_deployed_in_both_data_centres_keeps_each_sides_properties() {
    let mut w = World::new(2).await;
    w.register(0, "api", "a1").await;
    w.register(1, "api", "b1").await;
    set_service_props(&w, 0, "api", &[("owner", "team-1")]).await;
    set_service_props(&w, 1, "api", &[("owner", "team-2")]).await;
    w.wait_mirrored("each side's api instance copied to the other")
        .await;
    let own = |w: &World, a: &str, b: &str| {
        service_props(w, 0, "api") == Some(props(&[("owner", a)]))
            && service_props(w, 1, "api") == Some(props(&[("owner", b)]))
    };
    w.holds_for("each side keeps its own api properties", SETTLE, |w| {
        own(w, "team-1", "team-2")
    })
    .await;

    // Both sides change theirs at once: neither change is reverted.
    set_service_props(&w, 0, "api", &[("owner", "team-1b")]).await;
    set_service_props(&w, 1, "api", &[("owner", "team-2b")]).await;
    w.holds_for("each side keeps its changed api properties", SETTLE, |w| {
        own(w, "team-1b", "team-2b")
    })
    .await;
    w.wait_mirrored("still mirrored").await;
    w.assert_invariants();
    w.shutdown().await;
}

/// (item 5 of issue 21) A service syncer created for copies follows its origin's property
/// changes, also after a restart (the mark it was created with says it is syncer's); once a
/// team deploys its own instance into it, it is theirs and no longer follows.
#[tokio::test(start_paused = true)]
async fn a_service_syncer_created_follows_its_origin_until_it_has_own_instances() {
    let mut w = World::new(2).await;
    set_up_web(&mut w).await;
    w.wait_until(
        "dc2's web service created with dc1's properties",
        SETTLE,
        |w| service_props(w, 1, "web").is_some_and(|p| p.get("v").map(String::as_str) == Some("1")),
    )
    .await;
    assert_eq!(
        service_props(&w, 1, "web").and_then(|p| p.get(ORIGIN_PROPERTY).cloned()),
        Some("dc1".to_owned()),
        "a service syncer created carries the mark naming its origin"
    );

    set_service_props(&w, 0, "web", &[("v", "2")]).await;
    w.wait_until("dc1's change reaches dc2's web", SETTLE, |w| {
        service_props(w, 1, "web") == Some(props(&[("v", "2"), (ORIGIN_PROPERTY, "dc1")]))
    })
    .await;

    // A restart forgets everything syncer knew in memory: the mark still says whose it is.
    w.restart_engine(1).await;
    w.wait_mirrored("mirrored after the restart").await;
    set_service_props(&w, 0, "web", &[("v", "3")]).await;
    w.wait_until(
        "a change after the restart reaches dc2's web",
        SETTLE,
        |w| service_props(w, 1, "web") == Some(props(&[("v", "3"), (ORIGIN_PROPERTY, "dc1")])),
    )
    .await;

    // A team of dc2 deploys into it and sets its own properties: they stay.
    w.register(1, "web", "local-1").await;
    set_service_props(&w, 1, "web", &[("v", "mine")]).await;
    w.pass(Duration::from_secs(1)).await;
    set_service_props(&w, 0, "web", &[("v", "4")]).await;
    w.holds_for("dc2's web keeps its own properties", SETTLE, |w| {
        service_props(w, 1, "web") == Some(props(&[("v", "mine")]))
    })
    .await;
    w.wait_mirrored("mirrored both ways").await;
    w.assert_invariants();
    w.shutdown().await;
}

async fn set_up_web(w: &mut World) {
    w.register(0, "web", "w1").await;
    set_service_props(w, 0, "web", &[("v", "1")]).await;
}

/// (item 6 of issue 21) A data centre that claims another's name (misconfigured, with its own
/// registry): a third data centre imports neither claimant while the conflict lasts (not
/// even the real one's new instances), keeps the copies it had (past the grace period), and
/// does not flip to the other one's instances when either restarts; once the impostor is
/// gone for good, it syncs with the real one again.
#[tokio::test(start_paused = true)]
async fn a_name_claimed_by_two_data_centres_is_not_imported_while_in_conflict() {
    let mut w = World::new(2).await;
    let real: Vec<_> = [
        w.register(0, "pay", "a1").await,
        w.register(0, "pay", "a2").await,
    ]
    .into();
    w.wait_mirrored("dc2 mirrors the real dc1").await;

    let impostor = w.add_dc_named("dc1").await;
    let fake: Vec<_> = [
        w.register(impostor, "pay", "b1").await,
        w.register(impostor, "pay", "b2").await,
        w.register(impostor, "pay", "b3").await,
    ]
    .into();
    wait_conflict(&w, true).await;

    // The copies of the real dc1 stay as they were (kept alive past the grace period), none
    // of the impostor's appears, and nothing new of either is imported.
    let late = w.register(0, "pay", "a3").await;
    let frozen = |w: &World| {
        fake.iter().all(|b| w.copies_of(1, impostor, b).is_empty())
            && real.iter().all(|a| w.copy_of(1, 0, a).is_some())
            && w.copy_of(1, 0, &late).is_none()
    };
    w.holds_for(
        "dc2's copies of dc1 frozen during the conflict",
        SETTLE,
        frozen,
    )
    .await;
    // Either claimant restarting does not end the conflict, nor flip dc2 to the other one.
    w.restart_engine(impostor).await;
    w.holds_for("no flip after the impostor restarted", SETTLE, frozen)
        .await;
    w.restart_engine(0).await;
    w.holds_for("no flip after the real dc1 restarted", SETTLE, frozen)
        .await;
    assert!(w.conflicts(1).await.contains("dc1"), "still in conflict");

    // The impostor goes for good: the conflict ends, dc2 syncs with the real dc1 again.
    w.stop_engine(impostor).await;
    wait_conflict(&w, false).await;
    w.wait_until("dc2 mirrors the real dc1 again", SETTLE, |w| {
        w.mirrored_among(&[0, 1]).is_ok()
    })
    .await;
    assert!(
        w.copy_of(1, 0, &late).is_some(),
        "the late instance arrived"
    );
    w.shutdown().await;
}

/// Waits until dc2 sees the name dc1 in conflict (`true`) or no conflict at all (`false`).
async fn wait_conflict(w: &World, conflict: bool) {
    for _ in 0..400 {
        let now = w.conflicts(1).await;
        if now.contains("dc1") == conflict && (conflict || now.is_empty()) {
            return;
        }
        w.pass(Duration::from_millis(50)).await;
    }
    panic!("dc2 never saw conflict = {conflict} for dc1");
}

//! Scenarios of contracts (issue 15 item 2): a provider's schemas, tags and access rules
//! travel with its service.
//! Only which contracts exist (id → summary) travels with the service; the importer fetches
//! the contents its copy's service lacks from the origin's syncer (`Contracts`) and writes
//! them into the service it created for the copies, so that a consumer in the other data
//! centre loads the provider's contract from its own registry. A change the local registry
//! refuses (Service Center freezes the schemas of a production service) is reported once and
//! not tried again until the origin's contracts change; instances keep syncing.

use std::collections::BTreeMap;
use std::time::Duration;

use syncer::registry::memory::RegistryOp;
use syncer::registry::{AccessRule, Instance, Registry, Schema, Service, Tenant};
use syncer::telemetry::Metrics;

use super::harness::{SETTLE, World};

fn service(name: &str, environment: &str) -> Service {
    Service {
        tenant: Tenant::default(),
        service_id: name.into(),
        app: "world".into(),
        name: name.into(),
        version: "1.0.0".into(),
        environment: environment.into(),
        ..Service::default()
    }
}

fn instance(service: &str, id: &str) -> Instance {
    Instance {
        tenant: Tenant::default(),
        service_id: service.into(),
        instance_id: id.into(),
        endpoints: vec![format!("rest://{id}:8080")],
        host_name: format!("{id}-host"),
        status: "UP".into(),
        ..Instance::default()
    }
}

/// A contract whose summary is derived from its content, as an SDK's hash would be.
fn schema(id: &str, content: &str) -> Schema {
    Schema {
        id: id.into(),
        summary: format!(
            "sum-{}-{}",
            content.len(),
            content.bytes().map(u64::from).sum::<u64>()
        ),
        content: content.into(),
    }
}

/// The schemas service `service` holds in `dc`, sorted by id.
async fn schemas(w: &World, dc: usize, service: &str) -> Vec<Schema> {
    let mut held = w
        .registry(dc)
        .schemas(&Tenant::default(), service)
        .await
        .unwrap_or_default();
    held.sort_by(|a, b| a.id.cmp(&b.id));
    held
}

/// Polls until `service` in `dc` holds exactly `expected` (sorted by id).
async fn wait_schemas(w: &World, dc: usize, service: &str, expected: &[Schema], what: &str) {
    let start = tokio::time::Instant::now();
    while schemas(w, dc, service).await != expected {
        assert!(
            start.elapsed() < SETTLE,
            "timed out waiting for {what}: {:?}\n{}",
            schemas(w, dc, service).await,
            w.describe()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `syncer_sync_service_failures_total{origin, reason}` of `dc`'s syncer.
fn failures_counted(w: &World, dc: usize, origin: &str, reason: &str) -> u64 {
    let metrics = Metrics::default();
    w.dcs[dc].members[0].metrics.register(&metrics);
    let labels = format!("{{origin=\"{origin}\",reason=\"{reason}\"}}");
    metrics
        .encode()
        .lines()
        .filter_map(|line| line.strip_prefix("syncer_sync_service_failures_total"))
        .filter_map(|rest| rest.strip_prefix(labels.as_str()))
        .filter_map(|value| value.trim().parse::<u64>().ok())
        .sum()
}

/// Java-chassis-style start-up: the provider uploads two contracts, then registers its
/// instance. The other data centre's copy service holds the same contents and summaries;
/// a change of a contract of a service whose schemas may change (not `production`) follows.
#[tokio::test(start_paused = true)]
async fn a_providers_contracts_reach_the_other_data_centre_and_follow_changes() {
    let mut w = World::new(2).await;
    let provider = service("provider", "development");
    let origin = w.registry(0).clone();
    origin.ensure_service(&provider).await.expect("create");
    let hello = schema("hello", "openapi: 3.0.0\npaths:\n  /hello: {}\n");
    let orders = schema(
        "orders",
        &format!("openapi: 3.0.0\n# {}\n", "x".repeat(30_000)),
    );
    for s in [&hello, &orders] {
        origin
            .put_schema(&Tenant::default(), "provider", s)
            .await
            .expect("upload");
    }
    let p1 = instance("provider", "p-1");
    w.register_in(0, &provider, &p1).await;
    w.wait_mirrored("the provider's instance").await;
    wait_schemas(
        &w,
        1,
        "provider",
        &[hello.clone(), orders.clone()],
        "the provider's contracts in dc2's registry",
    )
    .await;

    // The provider changes one contract (allowed outside production).
    let hello2 = schema(
        "hello",
        "openapi: 3.0.0\npaths:\n  /hello: {}\n  /bye: {}\n",
    );
    origin
        .put_schema(&Tenant::default(), "provider", &hello2)
        .await
        .expect("change");
    wait_schemas(
        &w,
        1,
        "provider",
        &[hello2.clone(), orders.clone()],
        "the changed contract",
    )
    .await;
    w.shutdown().await;
}

/// A production service: its contract reaches the copy's service once; when the origin's
/// contract changes (past its own registry's rule, as a registry in another mode allows),
/// the local registry refuses the change: reported once (metric, `/health`), not tried
/// again, and the service's instances keep syncing.
#[tokio::test(start_paused = true)]
async fn a_refused_contract_change_in_production_is_reported_once_and_not_looped() {
    let mut w = World::new(2).await;
    let svc = service("billing", "production");
    let origin = w.registry(0).clone();
    origin.ensure_service(&svc).await.expect("create");
    let v1 = schema("billing", "openapi: 3.0.0\n# v1\n");
    origin
        .put_schema(&Tenant::default(), "billing", &v1)
        .await
        .expect("upload");
    let b1 = instance("billing", "b-1");
    w.register_in(0, &svc, &b1).await;
    w.wait_mirrored("billing's instance").await;
    wait_schemas(
        &w,
        1,
        "billing",
        std::slice::from_ref(&v1),
        "billing's contract",
    )
    .await;

    let v2 = schema("billing", "openapi: 3.0.0\n# v2, changed in place\n");
    origin
        .force_schema(&Tenant::default(), "billing", &v2)
        .expect("forced change at the origin");
    w.wait_until("the refusal reported", SETTLE, |w| {
        failures_counted(w, 1, "dc1", "schema_refused") == 1
    })
    .await;
    assert_eq!(
        w.dcs[1].members[0].metrics.service_failures().list(),
        vec![("dc1".into(), "world/billing/1.0.0".into(), "schema_refused")],
        "listed for /health"
    );
    let puts = w.registry(1).calls_of(RegistryOp::PutSchema);
    // Instances keep syncing, and the refused change is not written again.
    let b2 = instance("billing", "b-2");
    w.register_in(0, &svc, &b2).await;
    w.wait_mirrored("billing's second instance").await;
    w.pass(Duration::from_secs(60)).await;
    w.wait_mirrored("everything, a minute later").await;
    assert_eq!(
        w.registry(1).calls_of(RegistryOp::PutSchema),
        puts,
        "the refused contract is not written again"
    );
    assert_eq!(
        failures_counted(&w, 1, "dc1", "schema_refused"),
        1,
        "said once"
    );
    assert_eq!(
        schemas(&w, 1, "billing").await,
        vec![v1],
        "the copy keeps its contract"
    );
    w.assert_invariants();
    w.shutdown().await;
}

/// The tags and access rules of service `service` in `dc`.
fn access(
    w: &World,
    dc: usize,
    service: &str,
) -> Option<(BTreeMap<String, String>, Vec<AccessRule>)> {
    w.registry(dc)
        .contents()
        .services
        .into_iter()
        .find(|s| s.service_id == service)
        .map(|s| (s.tags, s.rules))
}

fn rule(rule_type: &str, pattern: &str) -> AccessRule {
    AccessRule {
        rule_type: rule_type.into(),
        attribute: "ServiceName".into(),
        pattern: pattern.into(),
        description: format!("{rule_type} {pattern}"),
    }
}

/// Tags and black/white rules follow the origin's into the copy's service, changes and
/// removals included, so that access control in the other data centre matches the origin's.
#[tokio::test(start_paused = true)]
async fn tags_and_access_rules_follow_the_origins() {
    let mut w = World::new(2).await;
    let svc = service("guarded", "development");
    let origin = w.registry(0).clone();
    let tenant = Tenant::default();
    origin.ensure_service(&svc).await.expect("create");
    let tags = BTreeMap::from([("team".to_owned(), "pay".to_owned())]);
    origin
        .set_service_tags(&tenant, "guarded", &tags)
        .await
        .expect("tags");
    origin
        .set_service_rules(&tenant, "guarded", &[rule("BLACK", "^intruder")])
        .await
        .expect("rules");
    w.register_in(0, &svc, &instance("guarded", "g-1")).await;
    w.wait_mirrored("guarded's instance").await;
    w.wait_until("tags and rules in dc2", SETTLE, |w| {
        access(w, 1, "guarded") == Some((tags.clone(), vec![rule("BLACK", "^intruder")]))
    })
    .await;

    // The origin switches to a white list and drops its tags.
    let white = vec![rule("WHITE", "^friend"), rule("WHITE", "^ally")];
    origin
        .set_service_rules(&tenant, "guarded", &white)
        .await
        .expect("rules");
    origin
        .set_service_tags(&tenant, "guarded", &BTreeMap::new())
        .await
        .expect("tags");
    let mut sorted = white.clone();
    sorted.sort();
    w.wait_until("the white list in dc2, without tags", SETTLE, |w| {
        access(w, 1, "guarded") == Some((BTreeMap::new(), sorted.clone()))
    })
    .await;
    w.assert_invariants();
    w.shutdown().await;
}

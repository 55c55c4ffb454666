//! The ServiceComb adapter against real HTTP servers on `127.0.0.1:0`: the dev registry
//! (`syncer::devreg`, an SC emulator) for the contract, the feed and failover, and tiny axum
//! stubs for replies a healthy SC never gives. Nothing sleeps for synchronisation: waits poll
//! with a deadline.

use std::future::Future;
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use syncer::registry::servicecomb::{ServiceComb, ServiceCombConfig};
use syncer::registry::{InstanceRef, Registry, RegistryError, Tenant};
use tokio::net::TcpListener;
use url::Url;

/// How long a test waits for something that should happen quickly.
const DEADLINE: Duration = Duration::from_secs(10);

/// Fast timings for tests: polls every 20 ms, listings every 100 ms, dumps every 500 ms,
/// disappearances confirmed after 100 ms (before the next dump reports them anyway).
fn test_config(addresses: Vec<Url>) -> ServiceCombConfig {
    ServiceCombConfig {
        timeout: Duration::from_secs(2),
        failback_after: Duration::from_millis(200),
        poll_interval: Duration::from_millis(20),
        discovery_interval: Duration::from_millis(100),
        resync_interval: Duration::from_millis(500),
        confirm_removal: Duration::from_millis(100),
        ..ServiceCombConfig::new(addresses)
    }
}

fn url_of(addr: std::net::SocketAddr) -> Url {
    Url::parse(&format!("http://{addr}")).expect("url")
}

/// Serves `router` on `listener` until the test's runtime ends.
fn serve(listener: TcpListener, router: Router) -> Url {
    let url = url_of(listener.local_addr().expect("local addr"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    url
}

/// A stub SC answering every request with `reply`.
async fn stub<F, Fut, R>(reply: F) -> Url
where
    F: Fn() -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = R> + Send + 'static,
    R: IntoResponse + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    serve(listener, Router::new().fallback(reply))
}

/// An address nothing listens on (a listener bound and dropped): connection refused.
async fn dead_address() -> Url {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    url_of(listener.local_addr().expect("local addr"))
}

fn ghost() -> InstanceRef {
    InstanceRef {
        tenant: Tenant::default_tenant(),
        service_id: "s".into(),
        instance_id: "i".into(),
    }
}

/// Polls `check` until it returns true, or panics after [`DEADLINE`].
async fn wait_until<Fut: Future<Output = bool>>(what: &str, mut check: impl FnMut() -> Fut) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} did not happen within {DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn garbage_body_is_a_protocol_error() {
    let url = stub(|| async { "this is not json" }).await;
    let sc = ServiceComb::new(test_config(vec![url])).expect("adapter");
    let err = sc.snapshot().await.expect_err("garbage");
    assert!(matches!(err, RegistryError::Protocol(_)), "{err:?}");
    let err = sc.identity().await.expect_err("garbage");
    assert!(matches!(err, RegistryError::Protocol(_)), "{err:?}");
}

#[tokio::test]
async fn server_error_is_unavailable() {
    let url = stub(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "boom") }).await;
    let sc = ServiceComb::new(test_config(vec![url])).expect("adapter");
    let err = sc.unregister(&ghost()).await.expect_err("500");
    assert!(matches!(err, RegistryError::Unavailable(_)), "{err:?}");
    assert!(err.is_retryable());
}

#[tokio::test]
async fn slow_reply_is_unavailable() {
    // The stub never answers: only the adapter's timeout ends the call.
    let url = stub(std::future::pending::<&'static str>).await;
    let config = ServiceCombConfig {
        timeout: Duration::from_millis(200),
        ..test_config(vec![url])
    };
    let sc = ServiceComb::new(config).expect("adapter");
    let started = std::time::Instant::now();
    let err = sc.heartbeat(&[ghost()]).await.expect_err("timeout");
    assert!(matches!(err, RegistryError::Unavailable(_)), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the timeout bounds the call"
    );
}

#[tokio::test]
async fn numeric_error_code_still_parses() {
    let url = stub(|| async {
        (
            StatusCode::BAD_REQUEST,
            [("content-type", "application/json")],
            r#"{"errorCode":400017,"errorMessage":"Instance does not exist","detail":"gone"}"#,
        )
    })
    .await;
    let sc = ServiceComb::new(test_config(vec![url])).expect("adapter");
    let err = sc.unregister(&ghost()).await.expect_err("400017");
    assert!(err.is_not_found(), "{err:?}");

    let url = stub(|| async {
        (
            StatusCode::BAD_REQUEST,
            r#"{"errorCode":400001,"errorMessage":"Invalid parameter(s)"}"#,
        )
    })
    .await;
    let sc = ServiceComb::new(test_config(vec![url])).expect("adapter");
    let err = sc.set_status(&ghost(), "UP").await.expect_err("400001");
    assert!(matches!(err, RegistryError::Invalid(_)), "{err:?}");
}

#[tokio::test]
async fn unknown_route_is_a_protocol_error() {
    let url = stub(|| async { (StatusCode::NOT_FOUND, "404 page not found") }).await;
    let sc = ServiceComb::new(test_config(vec![url])).expect("adapter");
    let err = sc.unregister(&ghost()).await.expect_err("404");
    assert!(matches!(err, RegistryError::Protocol(_)), "{err:?}");
}

/// A stub that answers `version` and `health` like SC, with `name` as its version, so a
/// test can tell which address served a call.
fn named_sc(name: &'static str) -> Router {
    use axum::routing::get;
    Router::new()
        .route(
            "/v4/default/registry/version",
            get(move || async move { format!(r#"{{"version":"{name}"}}"#) }),
        )
        .route(
            "/v4/default/registry/health",
            get(|| async { r#"{"instances":[{"instanceId":"b"},{"instanceId":"a"}]}"# }),
        )
}

#[tokio::test]
async fn fails_over_and_back_to_the_preferred_address() {
    let first = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let first_addr = first.local_addr().expect("addr");
    drop(first);
    let second = dead_address().await;
    let third = serve(
        TcpListener::bind("127.0.0.1:0").await.expect("bind"),
        named_sc("third"),
    );
    let sc = ServiceComb::new(test_config(vec![url_of(first_addr), second, third.clone()]))
        .expect("adapter");

    let identity = sc
        .identity()
        .await
        .expect("identity through the third address");
    assert_eq!(
        (
            identity.version.as_str(),
            identity.id.as_str(),
            identity.kind.as_str()
        ),
        ("third", "a", "servicecenter")
    );
    assert_eq!(sc.active_address(), third);
    assert!(sc.metrics().failovers() >= 2, "two failovers counted");

    // The preferred address comes back: after the back-off, calls return to it.
    let Ok(first) = TcpListener::bind(first_addr).await else {
        // Another process took the port in the meantime; nothing left to check.
        return;
    };
    serve(first, named_sc("first"));
    wait_until("a call through the first address", || async {
        sc.identity().await.is_ok_and(|i| i.version == "first")
    })
    .await;
    assert_eq!(sc.active_address(), url_of(first_addr));
}

#[tokio::test]
async fn all_addresses_dead_is_unavailable() {
    let sc = ServiceComb::new(test_config(vec![
        dead_address().await,
        dead_address().await,
    ]))
    .expect("adapter");
    let err = sc.identity().await.expect_err("nobody listens");
    assert!(matches!(err, RegistryError::Unavailable(_)), "{err:?}");
}

#[tokio::test]
async fn identity_falls_back_when_sc_is_not_self_registered() {
    use axum::routing::get;
    let router = Router::new()
        .route("/v4/default/registry/version", get(|| async { r#"{"version":"1.4.8"}"# }))
        .route(
            "/v4/default/registry/health",
            get(|| async {
                (
                    StatusCode::BAD_REQUEST,
                    r#"{"errorCode":"400012","errorMessage":"Micro-service does not exist","detail":"ServiceCenter's serviceID not exist."}"#,
                )
            }),
        );
    let url = serve(
        TcpListener::bind("127.0.0.1:0").await.expect("bind"),
        router,
    );
    let sc = ServiceComb::new(test_config(vec![url.clone()])).expect("adapter");
    let identity = sc.identity().await.expect("identity");
    assert_eq!(identity.id, format!("addresses:{url}"));
}

/// What a recording stub saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    query: String,
    domain: Option<String>,
    consumer: Option<String>,
    body: String,
}

/// A stub SC with one service (`s1`, one instance) in `default/default` that records every
/// request. Batch finds answer "not modified".
async fn recording_sc() -> (Url, std::sync::Arc<std::sync::Mutex<Vec<Seen>>>) {
    use std::sync::{Arc, Mutex};
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let log = seen.clone();
    let handler = move |request: axum::extract::Request| {
        let log = log.clone();
        async move {
            let (parts, body) = request.into_parts();
            let body = axum::body::to_bytes(body, 1 << 20)
                .await
                .unwrap_or_default();
            let header = |name: &str| {
                parts
                    .headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            let path = parts.uri.path().to_owned();
            log.lock().unwrap().push(Seen {
                method: parts.method.to_string(),
                path: path.clone(),
                query: parts.uri.query().unwrap_or_default().to_owned(),
                domain: header("x-domain-name"),
                consumer: header("x-consumerid"),
                body: String::from_utf8_lossy(&body).into_owned(),
            });
            let service = r#"{"serviceId":"s1","appId":"a","serviceName":"n","version":"1.0.0","environment":"production"}"#;
            match path.as_str() {
                "/v4/default/admin/dump" => format!(
                    r#"{{"cache":{{"services":[{{"key":"/cse-sr/ms/files/default/default/s1","rev":1,"value":{service}}}],
                    "instances":[{{"key":"/cse-sr/inst/files/default/default/s1/i1","rev":2,"value":{{"instanceId":"i1","serviceId":"s1","hostName":"h","status":"UP"}}}}]}}}}"#
                ),
                "/v4/default/registry/microservices" => format!(r#"{{"services":[{service}]}}"#),
                "/v4/default/registry/instances/action" => {
                    r#"{"services":{"notModified":[0]}}"#.to_owned()
                }
                _ => "{}".to_owned(),
            }
        }
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    (serve(listener, Router::new().fallback(handler)), seen)
}

#[tokio::test]
async fn feed_polls_by_exact_key_and_stays_transparent() {
    let (url, seen) = recording_sc().await;
    let sc = ServiceComb::new(test_config(vec![url])).expect("adapter");
    let mut feed = sc.change_feed();
    let first = feed.next().await.expect("first batch");
    assert!(
        matches!(first.as_slice(), [syncer::registry::Change::Resync(s)] if s.instances.len() == 1),
        "{first:?}"
    );
    // Polls and a listing: "not modified" everywhere, so nothing to report.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !seen
        .lock()
        .unwrap()
        .iter()
        .any(|s| s.path.ends_with("/microservices"))
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no listing within {DEADLINE:?}"
        );
        assert!(feed.next().await.expect("poll").is_empty());
    }

    let seen = seen.lock().unwrap().clone();
    let poll = seen
        .iter()
        .find(|s| s.path == "/v4/default/registry/instances/action")
        .expect("a batch find");
    assert_eq!(
        (poll.method.as_str(), poll.query.as_str()),
        ("POST", "type=query")
    );
    let body: serde_json::Value = serde_json::from_str(&poll.body).expect("json body");
    assert_eq!(
        body,
        serde_json::json!({"services":[{"service":{"appId":"a","serviceName":"n","version":"1.0.0","environment":"production"}}]})
    );
    assert_eq!(seen[0].query, "options=cache");
    for request in &seen {
        assert_eq!(request.consumer, None, "X-ConsumerId sent: {request:?}");
        assert_eq!(request.domain.as_deref(), Some("default"), "{request:?}");
        assert!(
            !request.path.contains("watcher") && !request.path.contains("dependencies"),
            "{request:?}"
        );
    }
}

fn instance_ref(id: &str) -> InstanceRef {
    InstanceRef {
        tenant: Tenant::default_tenant(),
        service_id: "s".into(),
        instance_id: id.into(),
    }
}

#[tokio::test]
async fn heartbeat_reads_the_1_4_8_dialect() {
    use axum::routing::{post, put};
    // 1.4.8: one unknown instance fails the whole batch without saying which; a batch find
    // of the instances tells.
    let router = Router::new()
        .route(
            "/v4/default/registry/heartbeats",
            put(|| async { (StatusCode::BAD_REQUEST, r#"{"errorCode":"400017","errorMessage":"Instance does not exist","detail":"Heartbeat set failed."}"#) }),
        )
        .route(
            "/v4/default/registry/instances/action",
            post(|body: String| async move {
                assert!(body.contains(r#""instances":[{"instance":{"serviceId":"s","instanceId":"a"}}"#), "{body}");
                r#"{"instances":{"updated":[{"index":0,"rev":"r","instances":[{"instanceId":"a","serviceId":"s"}]}],
                    "failed":[{"indexes":[1],"error":{"errorCode":"400017","errorMessage":"Instance does not exist"}}]}}"#
            }),
        );
    let url = serve(
        TcpListener::bind("127.0.0.1:0").await.expect("bind"),
        router,
    );
    let sc = ServiceComb::new(test_config(vec![url])).expect("adapter");
    let report = sc
        .heartbeat(&[instance_ref("a"), instance_ref("b")])
        .await
        .expect("heartbeat");
    assert_eq!(report.unknown, vec![instance_ref("b")]);
}

#[tokio::test]
async fn heartbeat_reads_the_2x_dialect() {
    use axum::routing::put;
    let router = Router::new().route(
        "/v4/default/registry/heartbeats",
        put(|| async {
            r#"{"instances":[{"serviceId":"s","instanceId":"b","errMessage":"Instance does not exist"},{"serviceId":"s","instanceId":"a"}]}"#
        }),
    );
    let url = serve(
        TcpListener::bind("127.0.0.1:0").await.expect("bind"),
        router,
    );
    let sc = ServiceComb::new(test_config(vec![url])).expect("adapter");
    let report = sc
        .heartbeat(&[instance_ref("a"), instance_ref("b")])
        .await
        .expect("heartbeat");
    assert_eq!(report.unknown, vec![instance_ref("b")]);
}

#[tokio::test]
async fn heartbeat_batches_are_split() {
    use axum::routing::put;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let router = Router::new().route(
        "/v4/default/registry/heartbeats",
        put(move |body: String| {
            counter.fetch_add(1, Ordering::SeqCst);
            async move {
                let sent = body.matches("instanceId").count();
                assert!(sent <= 3, "batch of {sent}");
                ""
            }
        }),
    );
    let url = serve(
        TcpListener::bind("127.0.0.1:0").await.expect("bind"),
        router,
    );
    let config = ServiceCombConfig {
        heartbeat_batch: 3,
        ..test_config(vec![url])
    };
    let sc = ServiceComb::new(config).expect("adapter");
    let refs: Vec<InstanceRef> = (0..7).map(|i| instance_ref(&format!("i{i}"))).collect();
    assert!(
        sc.heartbeat(&refs)
            .await
            .expect("heartbeat")
            .unknown
            .is_empty()
    );
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

// ---- against the dev registry ----

use syncer::devreg::{DevRegistry, DevRegistryConfig, HeartbeatStyle};
use syncer::registry::contract::feed_until;
use syncer::registry::{Change, Instance, Service};

async fn dev_registry(config: DevRegistryConfig) -> DevRegistry {
    DevRegistry::start(config).await.expect("dev registry")
}

fn adapter_for(registry: &DevRegistry) -> ServiceComb {
    let url = Url::parse(&registry.url()).expect("url");
    ServiceComb::new(test_config(vec![url])).expect("adapter")
}

#[tokio::test]
async fn contract_with_1_4_8_heartbeats() {
    let registry = dev_registry(DevRegistryConfig {
        heartbeat_style: HeartbeatStyle::V1_4,
        ..DevRegistryConfig::default()
    })
    .await;
    syncer::registry::contract::registry_contract(&adapter_for(&registry)).await;
    registry.shutdown().await;
}

#[tokio::test]
async fn contract_with_2x_heartbeats() {
    let registry = dev_registry(DevRegistryConfig {
        heartbeat_style: HeartbeatStyle::V2,
        ..DevRegistryConfig::default()
    })
    .await;
    syncer::registry::contract::registry_contract(&adapter_for(&registry)).await;
    registry.shutdown().await;
}

#[tokio::test]
async fn contract_with_real_sc_1_4_8() {
    let registry = dev_registry(DevRegistryConfig::real_sc_1_4_8()).await;
    syncer::registry::contract::registry_contract(&adapter_for(&registry)).await;
    registry.shutdown().await;
}

#[tokio::test]
async fn contract_with_real_sc_2() {
    let registry = dev_registry(DevRegistryConfig::real_sc_2()).await;
    syncer::registry::contract::registry_contract(&adapter_for(&registry)).await;
    registry.shutdown().await;
}

fn service(tenant: &Tenant, id: &str) -> Service {
    Service {
        tenant: tenant.clone(),
        service_id: id.to_owned(),
        app: "feedtest".into(),
        name: format!("name-{id}"),
        version: "1.0.0".into(),
        ..Service::default()
    }
}

fn instance(tenant: &Tenant, service_id: &str, id: &str) -> Instance {
    Instance {
        tenant: tenant.clone(),
        service_id: service_id.to_owned(),
        instance_id: id.to_owned(),
        endpoints: vec![format!("rest://127.0.0.1:8080/{id}")],
        host_name: "host".into(),
        status: "UP".into(),
        ..Instance::default()
    }
}

fn is_internal(change: &Change) -> bool {
    let internal = |s: &Service| s.name == "SERVICECENTER";
    match change {
        Change::Service(s) => internal(s),
        Change::Resync(snapshot) => snapshot.services.iter().any(internal),
        _ => false,
    }
}

#[tokio::test]
async fn internal_services_never_appear() {
    let registry = dev_registry(DevRegistryConfig::default()).await;
    let sc = adapter_for(&registry);
    // The dev registry seeds SC's own service and instance, as SC does.
    let raw = reqwest::get(format!(
        "{}/v4/default/registry/microservices",
        registry.url()
    ))
    .await
    .expect("list")
    .text()
    .await
    .expect("body");
    assert!(
        raw.contains("SERVICECENTER"),
        "the dev registry seeds SERVICECENTER: {raw}"
    );
    let sc_instances = reqwest::get(format!("{}/v4/default/registry/health", registry.url()))
        .await
        .expect("health")
        .text()
        .await
        .expect("body");

    let snapshot = sc.snapshot().await.expect("snapshot");
    assert!(snapshot.services.is_empty(), "{snapshot:?}");
    assert!(
        snapshot.instances.is_empty(),
        "SC's own instances leaked: {snapshot:?} (health: {sc_instances})"
    );

    let mut feed = sc.change_feed();
    let first = feed.next().await.expect("first");
    assert!(
        !first.iter().any(is_internal),
        "internal service in the first resync: {first:?}"
    );
    let home = Tenant::default_tenant();
    sc.ensure_service(&service(&home, "svc1"))
        .await
        .expect("ensure");
    sc.register(&instance(&home, "svc1", "i1"))
        .await
        .expect("register");
    let seen = feed_until(
        &mut feed,
        "the new instance",
        |c| matches!(c, Change::Instance(i) if i.instance_id == "i1"),
    )
    .await;
    assert!(
        !seen.iter().any(is_internal),
        "internal service in the feed: {seen:?}"
    );
    // A few more cycles, past a listing and a dump.
    let more = feed_until(&mut feed, "a periodic resync", |c| {
        matches!(c, Change::Resync(_))
    })
    .await;
    assert!(
        !more.iter().any(is_internal),
        "internal service in the feed: {more:?}"
    );
    if let Some(Change::Resync(snapshot)) = more.last() {
        assert!(
            snapshot.instances.iter().all(|i| i.service_id == "svc1"),
            "{snapshot:?}"
        );
    }
    registry.shutdown().await;
}

#[tokio::test]
async fn feed_reports_status_changes_and_removals() {
    let registry = dev_registry(DevRegistryConfig::default()).await;
    let sc = adapter_for(&registry);
    let home = Tenant::default_tenant();
    sc.ensure_service(&service(&home, "svc1"))
        .await
        .expect("ensure");
    let a = instance(&home, "svc1", "a");
    sc.register(&a).await.expect("register");

    let mut feed = sc.change_feed();
    let first = feed.next().await.expect("first");
    assert!(
        matches!(first.as_slice(), [Change::Resync(s)] if s.instance(&a.reference()).is_some()),
        "{first:?}"
    );

    sc.set_status(&a.reference(), "DOWN").await.expect("status");
    let seen = feed_until(
        &mut feed,
        "status DOWN",
        |c| matches!(c, Change::Instance(i) if i.instance_id == "a" && i.status == "DOWN"),
    )
    .await;
    assert!(
        !seen.iter().any(|c| matches!(c, Change::InstanceRemoved(_))),
        "{seen:?}"
    );

    sc.unregister(&a.reference()).await.expect("unregister");
    feed_until(
        &mut feed,
        "the removal",
        |c| matches!(c, Change::InstanceRemoved(r) if *r == a.reference()),
    )
    .await;

    // A deleted service: reported as removed with its instances.
    let b = instance(&home, "svc1", "b");
    sc.register(&b).await.expect("register b");
    feed_until(
        &mut feed,
        "instance b",
        |c| matches!(c, Change::Instance(i) if i.instance_id == "b"),
    )
    .await;
    let deleted = reqwest::Client::new()
        .delete(format!(
            "{}/v4/default/registry/microservices/svc1?force=true",
            registry.url()
        ))
        .send()
        .await
        .expect("delete");
    assert!(deleted.status().is_success(), "{deleted:?}");
    let seen = feed_until(
        &mut feed,
        "the service removal",
        |c| matches!(c, Change::ServiceRemoved { service_id, .. } if service_id == "svc1"),
    )
    .await;
    assert!(
        seen.iter()
            .any(|c| matches!(c, Change::InstanceRemoved(r) if *r == b.reference())),
        "the service's instance is reported gone too: {seen:?}"
    );
    registry.shutdown().await;
}

#[tokio::test]
async fn feed_picks_up_other_tenants() {
    let registry = dev_registry(DevRegistryConfig::default()).await;
    let watcher = adapter_for(&registry);
    let mut feed = watcher.change_feed();
    feed.next().await.expect("first");

    // Another client (not this adapter) writes into a tenant the feed has never seen: only a
    // dump can find it.
    let writer = adapter_for(&registry);
    let tenant = Tenant::new("dom1", "proj1");
    let mut svc = service(&tenant, "svc-t");
    svc.properties.insert("team".into(), "one".into());
    writer.ensure_service(&svc).await.expect("ensure");
    let c = instance(&tenant, "svc-t", "c");
    writer.register(&c).await.expect("register");
    feed_until(
        &mut feed,
        "the other tenant's instance",
        |change| match change {
            Change::Instance(i) => i.reference() == c.reference(),
            Change::Resync(s) => s
                .instance(&c.reference())
                .is_some_and(|i| i.tenant == tenant),
            _ => false,
        },
    )
    .await;

    // From then on the tenant is polled: changes arrive as increments.
    writer
        .set_status(&c.reference(), "OUTOFSERVICE")
        .await
        .expect("status");
    feed_until(&mut feed, "the status change", |change| match change {
        Change::Instance(i) => i.reference() == c.reference() && i.status == "OUTOFSERVICE",
        Change::Resync(s) => s
            .instance(&c.reference())
            .is_some_and(|i| i.status == "OUTOFSERVICE"),
        _ => false,
    })
    .await;
    let props = std::collections::BTreeMap::from([("team".to_owned(), "two".to_owned())]);
    writer
        .set_service_properties(&tenant, "svc-t", &props)
        .await
        .expect("properties");
    feed_until(
        &mut feed,
        "the service property change",
        |change| match change {
            Change::Service(s) => s.service_id == "svc-t" && s.properties == props,
            Change::Resync(s) => s
                .service(&tenant, "svc-t")
                .is_some_and(|s| s.properties == props),
            _ => false,
        },
    )
    .await;
    registry.shutdown().await;
}

#[tokio::test]
async fn ensure_service_resolves_id_conflicts() {
    let registry = dev_registry(DevRegistryConfig::default()).await;
    let sc = adapter_for(&registry);
    let home = Tenant::default_tenant();
    let original = service(&home, "first-id");
    assert_eq!(
        sc.ensure_service(&original).await.expect("create"),
        "first-id"
    );
    // The same service under another chosen id: SC says 400010, the adapter finds the
    // existing one.
    let again = Service {
        service_id: "second-id".into(),
        ..original.clone()
    };
    assert_eq!(
        sc.ensure_service(&again).await.expect("existing"),
        "first-id"
    );
    // Another service asking for a taken id is refused.
    let other = Service {
        name: "someone-else".into(),
        ..original.clone()
    };
    let err = sc.ensure_service(&other).await.expect_err("id taken");
    // SC's 400010 names no cause: an id or an alias taken by another service.
    assert!(
        matches!(&err, RegistryError::Refused(r) if r.reason == "alias_conflict"),
        "{err:?}"
    );
    // An instance id that SC would not store as asked is refused by SC itself.
    let bad = instance(&home, "first-id", "not/valid");
    assert!(sc.register(&bad).await.is_err());
    registry.shutdown().await;
}

#[tokio::test]
async fn metrics_are_exported() {
    let registry = dev_registry(DevRegistryConfig::default()).await;
    let sc = adapter_for(&registry);
    let metrics = syncer::telemetry::Metrics::new("n1", "c1", "single");
    sc.metrics().register(&metrics);
    sc.snapshot().await.expect("snapshot");
    let _ = sc.unregister(&ghost()).await;
    let text = metrics.encode();
    assert!(
        text.contains(r#"syncer_registry_requests_total{op="dump",outcome="ok"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"syncer_registry_errors_total{kind="not_found"} 1"#),
        "{text}"
    );
    assert!(
        text.contains("syncer_registry_response_bytes_total"),
        "{text}"
    );
    registry.shutdown().await;
}

/// A Service Center with access control (2.x RBAC), reduced to what the adapter's login
/// needs: `POST /v4/token` gives out `tok-<n>` for `syncer`/`s3cret`, and every other call
/// needs the newest token as `Authorization: Bearer` (else `401`, as SC's auth handler).
mod rbac {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use axum::body::Bytes;
    use axum::extract::State;
    use axum::http::HeaderMap;
    use axum::routing::{get, post};
    use syncer::config::{Credentials, Secret};

    use super::*;

    #[derive(Default)]
    struct Fake {
        /// Logins answered (granted or refused).
        logins: AtomicUsize,
        /// Number of the token currently valid; 0 before the first login.
        current: AtomicUsize,
        /// Refuse every token, even a fresh one (an account without the roles it needs).
        refuse_all: AtomicBool,
        /// Whether any call arrived with a password in its headers or query.
        leaked: AtomicBool,
        /// Tokens are JWTs expiring this many seconds after the login (0: opaque tokens).
        life_secs: AtomicUsize,
        /// Calls refused with `401`.
        refused: AtomicUsize,
        /// Tokens given out, newest last: only the newest is accepted.
        tokens: std::sync::Mutex<Vec<String>>,
        /// When the newest token was given out.
        issued_at: std::sync::Mutex<Option<std::time::Instant>>,
    }

    /// Unpadded base64url, as in JWTs.
    fn base64url(bytes: &[u8]) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
            for i in 0..=chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            }
        }
        out
    }

    fn unauthorized() -> (StatusCode, &'static str) {
        (
            StatusCode::UNAUTHORIZED,
            r#"{"errorCode":"401002","errorMessage":"Request unauthorized","detail":"token expired"}"#,
        )
    }

    async fn login(State(fake): State<Arc<Fake>>, body: Bytes) -> impl IntoResponse {
        fake.logins.fetch_add(1, Ordering::SeqCst);
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        if body["name"] != "syncer" || body["password"] != "s3cret" {
            return unauthorized().into_response();
        }
        let n = fake.current.fetch_add(1, Ordering::SeqCst) + 1;
        let life = fake.life_secs.load(Ordering::SeqCst);
        let token = if life == 0 {
            format!("tok-{n}")
        } else {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock")
                .as_secs();
            let claims = format!(r#"{{"exp":{},"n":{n}}}"#, now + life as u64);
            format!("e30.{}.c2ln", base64url(claims.as_bytes()))
        };
        fake.tokens.lock().expect("lock").push(token.clone());
        *fake.issued_at.lock().expect("lock") = Some(std::time::Instant::now());
        (StatusCode::OK, format!(r#"{{"token":"{token}"}}"#)).into_response()
    }

    async fn guarded(
        State(fake): State<Arc<Fake>>,
        headers: HeaderMap,
        reply: &'static str,
    ) -> axum::response::Response {
        let wanted = format!(
            "Bearer {}",
            fake.tokens
                .lock()
                .expect("lock")
                .last()
                .cloned()
                .unwrap_or_default()
        );
        let expired = fake.life_secs.load(Ordering::SeqCst) > 0
            && fake.issued_at.lock().expect("lock").is_some_and(|at| {
                at.elapsed() >= Duration::from_secs(fake.life_secs.load(Ordering::SeqCst) as u64)
            });
        let given = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if headers.iter().any(|(_, v)| v.as_bytes() == b"s3cret") {
            fake.leaked.store(true, Ordering::SeqCst);
        }
        if fake.refuse_all.load(Ordering::SeqCst) || given != wanted || expired {
            fake.refused.fetch_add(1, Ordering::SeqCst);
            return unauthorized().into_response();
        }
        (StatusCode::OK, reply).into_response()
    }

    async fn start(password: &str) -> (Arc<Fake>, ServiceComb) {
        let fake = Arc::new(Fake::default());
        let router = Router::new()
            .route("/v4/token", post(login))
            .route(
                "/v4/default/registry/version",
                get(|s, h| guarded(s, h, r#"{"version":"2.2.0"}"#)),
            )
            .route(
                "/v4/default/registry/health",
                get(|s, h| guarded(s, h, r#"{"instances":[{"instanceId":"sc1"}]}"#)),
            )
            .with_state(fake.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = serve(listener, router);
        let config = ServiceCombConfig {
            credentials: Some(Credentials {
                user: "syncer".into(),
                password: Secret::new(password),
            }),
            ..test_config(vec![url])
        };
        (fake, ServiceComb::new(config).expect("adapter"))
    }

    /// One login serves many calls; a token SC stops accepting is replaced by exactly one
    /// new login, and the call that saw the `401` succeeds on its retry.
    #[tokio::test]
    async fn logs_in_once_and_again_when_the_token_is_refused() {
        let (fake, sc) = start("s3cret").await;
        for _ in 0..3 {
            assert_eq!(sc.identity().await.expect("identity").version, "2.2.0");
        }
        assert_eq!(fake.logins.load(Ordering::SeqCst), 1, "one login, reused");
        // SC revokes the token (restart with a new key, expiry): the next login's token wins.
        fake.tokens.lock().expect("lock").push("revoked".into());
        assert_eq!(sc.identity().await.expect("identity").id, "sc1");
        assert_eq!(fake.logins.load(Ordering::SeqCst), 2, "one re-login");
        assert!(
            !fake.leaked.load(Ordering::SeqCst),
            "password only in the login body"
        );
    }

    /// A fresh token refused too: one re-login, then an error that names the cause.
    #[tokio::test]
    async fn a_fresh_token_refused_is_an_error_naming_the_account() {
        let (fake, sc) = start("s3cret").await;
        sc.identity().await.expect("identity");
        fake.refuse_all.store(true, Ordering::SeqCst);
        let error = sc.identity().await.expect_err("refused");
        assert!(matches!(error, RegistryError::Unavailable(_)), "{error:?}");
        let text = error.to_string();
        assert!(
            text.contains("fresh token") && text.contains("syncer"),
            "{text}"
        );
        assert_eq!(
            fake.logins.load(Ordering::SeqCst),
            2,
            "exactly one re-login"
        );
    }

    /// A wrong password: the login is refused, said so, and not tried again at once (SC
    /// locks an account after two refusals); the password is not in the error.
    #[tokio::test]
    async fn a_refused_login_is_not_retried_at_once() {
        let (fake, sc) = start("wrong-password").await;
        for _ in 0..3 {
            let error = sc.identity().await.expect_err("refused");
            let text = error.to_string();
            assert!(text.contains("login") && text.contains("syncer"), "{text}");
            assert!(!text.contains("wrong-password"), "{text}");
        }
        assert_eq!(fake.logins.load(Ordering::SeqCst), 1);
    }

    /// A token is renewed before it expires (at four fifths of its life, read from the
    /// JWT's `exp`): calls going on across its expiry never see a `401`.
    #[tokio::test]
    async fn the_token_is_renewed_before_it_expires() {
        let (fake, sc) = start("s3cret").await;
        fake.life_secs.store(3, Ordering::SeqCst);
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while fake.logins.load(Ordering::SeqCst) < 2 {
            assert!(tokio::time::Instant::now() < deadline, "no renewal");
            sc.identity().await.expect("identity");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(fake.refused.load(Ordering::SeqCst), 0, "renewed in time");
    }
}

/// A Service Center 2.x that adds `engine=dc2` ("inner properties") to every instance at
/// registration and at every properties update, its own instance included; it serves the
/// dump, health, register and properties calls of one service `s1`.
mod inner_properties {
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};

    use axum::body::Bytes;
    use axum::extract::{Path, State};
    use axum::routing::{get, post, put};
    use syncer::registry::Instance;

    use super::*;

    type Store = Arc<Mutex<BTreeMap<String, BTreeMap<String, String>>>>;

    fn with_inner(mut properties: BTreeMap<String, String>) -> BTreeMap<String, String> {
        properties.insert("engine".into(), "dc2".into());
        properties
    }

    async fn register(
        State(store): State<Store>,
        Path(_service): Path<String>,
        body: Bytes,
    ) -> String {
        let body: serde_json::Value = serde_json::from_slice(&body).expect("json");
        let id = body["instance"]["instanceId"]
            .as_str()
            .expect("id")
            .to_owned();
        let properties =
            serde_json::from_value(body["instance"]["properties"].clone()).unwrap_or_default();
        store
            .lock()
            .expect("lock")
            .insert(id.clone(), with_inner(properties));
        format!(r#"{{"instanceId":"{id}"}}"#)
    }

    async fn put_properties(
        State(store): State<Store>,
        Path((_service, id)): Path<(String, String)>,
        body: Bytes,
    ) -> &'static str {
        let body: serde_json::Value = serde_json::from_slice(&body).expect("json");
        let properties = serde_json::from_value(body["properties"].clone()).unwrap_or_default();
        store
            .lock()
            .expect("lock")
            .insert(id, with_inner(properties));
        "{}"
    }

    async fn dump(State(store): State<Store>) -> String {
        let instances: Vec<serde_json::Value> = store
            .lock()
            .expect("lock")
            .iter()
            .map(|(id, properties)| {
                serde_json::json!({
                    "key": format!("/cse-sr/inst/files/default/default/s1/{id}"),
                    "value": {"instanceId": id, "serviceId": "s1", "hostName": "h",
                              "endpoints": ["rest://10.0.0.1:80"], "status": "UP",
                              "properties": properties},
                })
            })
            .collect();
        serde_json::json!({"cache": {
            "services": [{"key": "/cse-sr/ms/files/default/default/s1",
                          "value": {"serviceId": "s1", "appId": "app", "serviceName": "one",
                                    "version": "1.0.0"}}],
            "instances": instances,
        }})
        .to_string()
    }

    fn copy(properties: &[(&str, &str)]) -> Instance {
        Instance {
            tenant: Tenant::default_tenant(),
            service_id: "s1".into(),
            instance_id: "copy1".into(),
            host_name: "h".into(),
            endpoints: vec!["rest://10.0.0.1:80".into()],
            status: "UP".into(),
            properties: properties
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..Instance::default()
        }
    }

    /// What syncer writes is what it reads back: the registry's own additions never make a
    /// copy look different from the body syncer wants (else every property update would be
    /// answered by SC adding them again, forever). An origin property SC overwrites reads
    /// back as syncer wrote it.
    #[tokio::test]
    async fn what_sc_adds_is_not_reported() {
        let store: Store = Arc::default();
        let router = Router::new()
            .route(
                "/v4/default/registry/health",
                get(|| async {
                    r#"{"instances":[{"instanceId":"sc1","properties":{"engine":"dc2"}}]}"#
                }),
            )
            .route("/v4/default/admin/dump", get(dump))
            .route(
                "/v4/default/registry/microservices/{service}/instances",
                post(register),
            )
            .route(
                "/v4/default/registry/microservices/{service}/instances/{id}/properties",
                put(put_properties),
            )
            .with_state(store.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let sc = ServiceComb::new(test_config(vec![serve(listener, router)])).expect("adapter");
        sc.snapshot()
            .await
            .expect("first dump learns SC's own instance");

        let body = copy(&[("syncer.origin", "dc1"), ("zone", "a")]);
        sc.register(&body).await.expect("register");
        let read = sc.snapshot().await.expect("dump");
        assert_eq!(read.instances.len(), 1);
        assert_eq!(read.instances[0].properties, body.properties, "as written");

        let wanted = copy(&[("syncer.origin", "dc1"), ("engine", "dc1")]).properties;
        sc.set_instance_properties(&body.reference(), &wanted)
            .await
            .expect("put");
        let read = sc.snapshot().await.expect("dump");
        assert_eq!(read.instances[0].properties, wanted, "as written");
        assert_eq!(
            store.lock().expect("lock")["copy1"]["engine"],
            "dc2",
            "SC's value is what it stores"
        );
    }
}

/// SC 2.x's retire job deletes old versions of a service that have no instances, copy
/// services included. Registering into the deleted service is `NotFound` (the importer then
/// forgets the cached id), and ensuring the service again creates it under the same id, so
/// the copy comes back after one failed call and nothing else changes.
#[tokio::test]
async fn a_retired_copy_service_is_created_again_under_its_id() {
    let registry = dev_registry(DevRegistryConfig::default()).await;
    let sc = adapter_for(&registry);
    let service = Service {
        tenant: Tenant::default_tenant(),
        service_id: "copy-svc-1".into(),
        app: "app".into(),
        name: "retired".into(),
        version: "1.0.0".into(),
        ..Service::default()
    };
    let id = sc.ensure_service(&service).await.expect("create");
    assert_eq!(id, "copy-svc-1");
    let copy = Instance {
        tenant: Tenant::default_tenant(),
        service_id: id.clone(),
        instance_id: "copy-1".into(),
        host_name: "h".into(),
        endpoints: vec!["rest://10.0.0.1:80".into()],
        status: "UP".into(),
        ..Instance::default()
    };
    // What the retire job does to a version without instances.
    let deleted = reqwest::Client::new()
        .delete(format!(
            "{}/v4/default/registry/microservices/{id}",
            registry.url()
        ))
        .send()
        .await
        .expect("delete");
    assert!(deleted.status().is_success(), "{deleted:?}");
    let error = sc.register(&copy).await.expect_err("service gone");
    assert!(error.is_not_found(), "{error:?}");
    assert_eq!(
        sc.ensure_service(&service).await.expect("again"),
        "copy-svc-1"
    );
    sc.register(&copy).await.expect("registered again");
}

/// Timings where only SC's statistics can find something new: listings and dumps an hour
/// apart (after the first of each).
fn statistics_only_config(url: Url) -> ServiceCombConfig {
    ServiceCombConfig {
        discovery_interval: Duration::from_secs(3600),
        listing_interval: Duration::from_secs(3600),
        resync_interval: Duration::from_secs(3600),
        ..test_config(vec![url])
    }
}

/// A feed that has read its first dump and done its first listing.
async fn settled_feed(sc: &ServiceComb) -> Box<dyn syncer::registry::ChangeFeed> {
    let mut feed = sc.change_feed();
    feed.next().await.expect("the dump");
    feed.next().await.expect("the first listing and poll");
    feed
}

#[tokio::test]
async fn a_new_service_is_found_by_the_statistics_before_any_listing() {
    use syncer::registry::Change;
    let registry = dev_registry(DevRegistryConfig::default()).await;
    let url = Url::parse(&registry.url()).expect("url");
    let watcher = ServiceComb::new(statistics_only_config(url)).expect("adapter");
    let mut feed = settled_feed(&watcher).await;

    // Another client creates a service and its first instance.
    let writer = adapter_for(&registry);
    let tenant = Tenant::default_tenant();
    writer
        .ensure_service(&service(&tenant, "svc-new"))
        .await
        .expect("ensure");
    let first = instance(&tenant, "svc-new", "first");
    writer.register(&first).await.expect("register");
    let seen = feed_until(
        &mut feed,
        "the new service's first instance",
        |change| matches!(change, Change::Instance(i) if i.reference() == first.reference()),
    )
    .await;
    assert!(
        seen.iter()
            .any(|c| matches!(c, Change::Service(s) if s.service_id == "svc-new")),
        "the service is reported with it: {seen:?}"
    );
    assert!(
        !seen.iter().any(|c| matches!(c, Change::Resync(_))),
        "found without a dump: {seen:?}"
    );
    registry.shutdown().await;
}

#[tokio::test]
async fn a_tenant_given_in_the_settings_is_watched_from_the_start() {
    use syncer::registry::Change;
    let registry = dev_registry(DevRegistryConfig::default()).await;
    let url = Url::parse(&registry.url()).expect("url");
    let tenant = Tenant::new("team1", "shop");
    let watcher = ServiceComb::new(ServiceCombConfig {
        tenants: vec![tenant.clone()],
        ..statistics_only_config(url)
    })
    .expect("adapter");
    let mut feed = settled_feed(&watcher).await;

    // Written by another client into a tenant no dump has shown the watcher yet.
    let writer = adapter_for(&registry);
    writer
        .ensure_service(&service(&tenant, "svc-t"))
        .await
        .expect("ensure");
    let first = instance(&tenant, "svc-t", "first");
    writer.register(&first).await.expect("register");
    feed_until(
        &mut feed,
        "the first instance of the tenant",
        |change| matches!(change, Change::Instance(i) if i.reference() == first.reference()),
    )
    .await;
    registry.shutdown().await;
}

/// An SC whose governance route is not reachable (blocked by a gateway, or an account
/// without the permission): the feed lists every `discovery_interval` instead, and still
/// finds new services.
#[tokio::test]
async fn without_statistics_new_services_are_found_by_listing() {
    use syncer::registry::Change;
    let registry = dev_registry(DevRegistryConfig::default()).await;
    let upstream = registry.url();
    let client = reqwest::Client::new();
    let asked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = asked.clone();
    let proxy = move |request: axum::extract::Request| {
        let (client, upstream, counter) = (client.clone(), upstream.clone(), counter.clone());
        async move {
            let (parts, body) = request.into_parts();
            if parts.uri.path().contains("/govern/") {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                return (StatusCode::NOT_FOUND, "404 page not found\n").into_response();
            }
            let body = axum::body::to_bytes(body, 64 << 20)
                .await
                .unwrap_or_default();
            let url = format!("{upstream}{}", parts.uri);
            let mut forward = client.request(parts.method, url).body(body);
            for (name, value) in &parts.headers {
                forward = forward.header(name, value);
            }
            match forward.send().await {
                Ok(reply) => {
                    let status = reply.status();
                    let bytes = reply.bytes().await.unwrap_or_default();
                    (status, bytes).into_response()
                }
                Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
            }
        }
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = serve(listener, Router::new().fallback(proxy));
    let watcher = ServiceComb::new(ServiceCombConfig {
        listing_interval: Duration::from_secs(3600),
        resync_interval: Duration::from_secs(3600),
        ..test_config(vec![url])
    })
    .expect("adapter");
    let mut feed = settled_feed(&watcher).await;

    let writer = adapter_for(&registry);
    let tenant = Tenant::default_tenant();
    writer
        .ensure_service(&service(&tenant, "svc-listed"))
        .await
        .expect("ensure");
    let first = instance(&tenant, "svc-listed", "first");
    writer.register(&first).await.expect("register");
    feed_until(
        &mut feed,
        "the new service's first instance",
        |change| matches!(change, Change::Instance(i) if i.reference() == first.reference()),
    )
    .await;
    assert_eq!(
        asked.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "a refusal turns the statistics off rather than asking every poll"
    );
    registry.shutdown().await;
}

/// A service that holds only syncer's copies is not asked by every poll; what changes its
/// counts (an application's own instance, a copy gone behind syncer's back) makes the feed
/// ask it at once, without waiting for a listing.
#[tokio::test]
async fn a_service_of_copies_only_is_asked_when_its_counts_move() {
    use syncer::registry::Change;
    let registry = dev_registry(DevRegistryConfig::default()).await;
    let url = Url::parse(&registry.url()).expect("url");
    let watcher = ServiceComb::new(statistics_only_config(url)).expect("adapter");
    let tenant = Tenant::default_tenant();
    let writer = adapter_for(&registry);
    writer
        .ensure_service(&service(&tenant, "svc-copies"))
        .await
        .expect("ensure");
    let copy = Instance {
        properties: [("syncer.origin".to_owned(), "dc9".to_owned())].into(),
        ..instance(
            &tenant,
            "svc-copies",
            "syncer-0123456789abcdef0123456789abcdef",
        )
    };
    writer.register(&copy).await.expect("register the copy");
    let mut feed = settled_feed(&watcher).await;

    let own = instance(&tenant, "svc-copies", "own");
    writer
        .register(&own)
        .await
        .expect("register an own instance");
    feed_until(
        &mut feed,
        "the service's own instance",
        |change| matches!(change, Change::Instance(i) if i.reference() == own.reference()),
    )
    .await;

    // Quiet again once the own instance leaves; then a copy deregistered by someone else.
    writer
        .unregister(&own.reference())
        .await
        .expect("unregister");
    feed_until(
        &mut feed,
        "the own instance gone",
        |change| matches!(change, Change::InstanceRemoved(r) if *r == own.reference()),
    )
    .await;
    writer
        .unregister(&copy.reference())
        .await
        .expect("unregister the copy");
    feed_until(
        &mut feed,
        "the copy gone",
        |change| matches!(change, Change::InstanceRemoved(r) if *r == copy.reference()),
    )
    .await;
    registry.shutdown().await;
}

/// An application's instance replaced again and again in a service that is otherwise empty
/// (a quiet service between its instances): every arrival is reported without a listing,
/// however the changes fall against the polls.
#[tokio::test]
async fn instances_coming_and_going_in_an_empty_service_are_each_reported() {
    use syncer::registry::Change;
    let registry = dev_registry(DevRegistryConfig::default()).await;
    let url = Url::parse(&registry.url()).expect("url");
    let watcher = ServiceComb::new(statistics_only_config(url)).expect("adapter");
    let tenant = Tenant::default_tenant();
    let writer = adapter_for(&registry);
    writer
        .ensure_service(&service(&tenant, "svc-empty"))
        .await
        .expect("ensure");
    let mut feed = settled_feed(&watcher).await;
    // Each instance leaves right before the next arrives: the departure may be seen by one
    // poll and the arrival only by the statistics read after it, the same counts as an
    // earlier arrival's.
    let mut previous: Option<Instance> = None;
    for n in 0..30u64 {
        let own = instance(&tenant, "svc-empty", &format!("own-{n}"));
        if let Some(previous) = previous.take() {
            writer
                .unregister(&previous.reference())
                .await
                .expect("unregister");
        }
        writer.register(&own).await.expect("register");
        feed_until(
            &mut feed,
            "the instance",
            |change| matches!(change, Change::Instance(i) if i.reference() == own.reference()),
        )
        .await;
        previous = Some(own);
    }
    registry.shutdown().await;
}

//! The Eureka adapter against real HTTP servers on `127.0.0.1:0`: scripted axum stubs for
//! the feed's delta/hash reconciliation, failover and replies a healthy Eureka rarely gives;
//! a ServiceComb dev registry for "not a Eureka server"; the Eureka emulator
//! (`syncer::devreg::eureka`) for the contract and the adapter's Eureka-specific behaviour;
//! and a real `syncer daemon --sc-plugin eureka` for the start-up log. Nothing sleeps for
//! synchronisation: waits poll with a deadline.

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use syncer::registry::contract::feed_until;
use syncer::registry::eureka::{Eureka, EurekaConfig};
use syncer::registry::{Change, Registry, RegistryError};
use tokio::net::TcpListener;
use url::Url;

/// Fast timings for tests: deltas every 20 ms, a full read every 30 s (never within a test
/// unless asked), 2 s per attempt, back to the first address after 200 ms.
fn test_config(addresses: &[Url]) -> EurekaConfig {
    EurekaConfig {
        timeout: Duration::from_secs(2),
        failback_after: Duration::from_millis(200),
        poll_interval: Duration::from_millis(20),
        resync_interval: Duration::from_secs(30),
        ..EurekaConfig::new(addresses)
    }
}

fn url_of(addr: std::net::SocketAddr) -> Url {
    Url::parse(&format!("http://{addr}")).expect("url")
}

/// An address nothing listens on (a listener bound and dropped): connection refused.
async fn dead_address() -> Url {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    url_of(listener.local_addr().expect("local addr"))
}

// ---- scripted stub ----

/// What the stub answers and what it was asked.
#[derive(Default)]
struct Script {
    /// Body of `GET /eureka/apps`.
    full: String,
    /// Status and body of `GET /eureka/apps/delta`.
    delta: (u16, String),
    /// Status of every other request (and of `/apps` when not 200).
    full_status: Option<u16>,
    /// Method, path and headers (`name: value`, lower-case names) of every request.
    seen: Vec<(String, String, Vec<String>)>,
    /// How long the delta takes to answer.
    delta_delay: Duration,
    /// When each delta request arrived.
    delta_times: Vec<std::time::Instant>,
}

type Shared = Arc<Mutex<Script>>;

async fn scripted(State(shared): State<Shared>, request: Request) -> Response {
    let delay = {
        let mut script = shared.lock().unwrap();
        if request.uri().path() == "/eureka/apps/delta" {
            script.delta_times.push(std::time::Instant::now());
            script.delta_delay
        } else {
            Duration::ZERO
        }
    };
    if !delay.is_zero() {
        // A slow server, not a synchronisation.
        tokio::time::sleep(delay).await;
    }
    let mut script = shared.lock().unwrap();
    let headers = request
        .headers()
        .iter()
        .map(|(k, v)| format!("{}: {}", k.as_str(), v.to_str().unwrap_or("?")))
        .collect();
    let path = request.uri().path().to_owned();
    script
        .seen
        .push((request.method().to_string(), path.clone(), headers));
    let json = [("content-type", "application/json")];
    match path.as_str() {
        "/eureka/apps/delta" => {
            let (status, body) = script.delta.clone();
            (StatusCode::from_u16(status).unwrap(), json, body).into_response()
        }
        "/eureka/apps" => match script.full_status {
            Some(status) => StatusCode::from_u16(status).unwrap().into_response(),
            None => (StatusCode::OK, json, script.full.clone()).into_response(),
        },
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn stub(script: Shared) -> Url {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = url_of(listener.local_addr().expect("addr"));
    let router = Router::new().fallback(scripted).with_state(script);
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    url
}

/// One instance record as Eureka writes it (reference §1.3), native (no `sc.` metadata).
fn record(app: &str, id: &str, status: &str, action: &str) -> String {
    format!(
        r#"{{"instanceId":"{id}","hostName":"10.0.0.5","app":"{app}","ipAddr":"10.0.0.5",
        "status":"{status}","overriddenStatus":"UNKNOWN",
        "port":{{"$":8080,"@enabled":"true"}},"securePort":{{"$":443,"@enabled":"false"}},
        "countryId":1,"dataCenterInfo":{{"@class":"com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo","name":"MyOwn"}},
        "leaseInfo":{{"renewalIntervalInSecs":30,"durationInSecs":90}},
        "metadata":{{"@class":"java.util.Collections$EmptyMap"}},"vipAddress":"{lower}",
        "lastUpdatedTimestamp":"1700000000000","lastDirtyTimestamp":"1699999999000",
        "actionType":"{action}"}}"#,
        lower = app.to_lowercase()
    )
}

/// `{"applications": …}` of `records` (all in one application per name).
fn applications(version: &str, hash: &str, records: &[(&str, String)]) -> String {
    let mut by_app: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (app, record) in records {
        by_app.entry(app).or_default().push(record);
    }
    let apps: Vec<String> = by_app
        .iter()
        .map(|(app, records)| format!(r#"{{"name":"{app}","instance":[{}]}}"#, records.join(",")))
        .collect();
    format!(
        r#"{{"applications":{{"versions__delta":"{version}","apps__hashcode":"{hash}","application":[{}]}}}}"#,
        apps.join(",")
    )
}

fn has_instance(changes: &[Change], id: &str) -> bool {
    changes.iter().any(|c| match c {
        Change::Instance(i) => i.instance_id == id,
        Change::Resync(s) => s.instances.iter().any(|i| i.instance_id == id),
        _ => false,
    })
}

/// The feed applies deltas while the hash agrees, skips a delta it already applied, and
/// reads the whole registry again on a hash mismatch or a delta it cannot have.
#[tokio::test]
async fn feed_applies_deltas_and_falls_back_to_full_reads() {
    let a = record("ORDERS", "h:orders:1", "UP", "ADDED");
    let b = record("ORDERS", "h:orders:2", "UP", "ADDED");
    let c = record("PAY", "h:pay:1", "DOWN", "ADDED");
    let script: Shared = Arc::default();
    script.lock().unwrap().full = applications("1", "UP_1_", &[("ORDERS", a.clone())]);
    script.lock().unwrap().delta = (200, applications("1", "UP_1_", &[]));
    let url = stub(script.clone()).await;
    let eureka = Eureka::new(test_config(&[url])).expect("adapter");
    let metrics = eureka.metrics().clone();
    let mut feed = eureka.change_feed();

    let first = feed.next().await.expect("first batch");
    assert!(
        matches!(first.as_slice(), [Change::Resync(s)] if s.instances.len() == 1 && s.services.len() == 1),
        "{first:?}"
    );
    // A delta adding b, whose hash agrees: applied without a full read.
    script.lock().unwrap().delta = (200, applications("2", "UP_2_", &[("ORDERS", b.clone())]));
    let seen = feed_until(
        &mut feed,
        "b from the delta",
        |c| matches!(c, Change::Instance(i) if i.instance_id == "h:orders:2"),
    )
    .await;
    assert!(
        !has_instance(&seen, "h:orders:1"),
        "a did not change: {seen:?}"
    );
    assert_eq!(metrics.full_fetches(), 1);
    assert_eq!(metrics.hash_mismatches(), 0);
    // The same delta again: nothing to report, still no full read.
    let deltas = metrics.deltas();
    while metrics.deltas() < deltas + 3 {
        assert_eq!(feed.next().await.expect("poll"), Vec::new());
    }
    assert_eq!(metrics.full_fetches(), 1);

    // A delta that misses c (the server's hash counts it): a full read finds it.
    script.lock().unwrap().full = applications(
        "1",
        "DOWN_1_UP_2_",
        &[("ORDERS", a.clone()), ("ORDERS", b.clone()), ("PAY", c)],
    );
    script.lock().unwrap().delta = (200, applications("3", "DOWN_1_UP_2_", &[]));
    let seen = feed_until(
        &mut feed,
        "c after the hash mismatch",
        |c| matches!(c, Change::Instance(i) if i.instance_id == "h:pay:1" && i.status == "DOWN"),
    )
    .await;
    assert!(
        seen.iter()
            .any(|c| matches!(c, Change::Service(s) if s.name == "pay")),
        "the new service is reported: {seen:?}"
    );
    assert_eq!(metrics.hash_mismatches(), 1);
    assert_eq!(metrics.full_fetches(), 2);

    // A delta removing a (DELETED carries the last record).
    let gone = record("ORDERS", "h:orders:1", "UP", "DELETED");
    script.lock().unwrap().delta = (200, applications("4", "DOWN_1_UP_1_", &[("ORDERS", gone)]));
    feed_until(
        &mut feed,
        "a removed",
        |c| matches!(c, Change::InstanceRemoved(r) if r.instance_id == "h:orders:1"),
    )
    .await;
    assert_eq!(metrics.full_fetches(), 2);

    // Deltas refused (403, `disableDelta`): full reads, and what they show.
    script.lock().unwrap().full = applications("1", "UP_1_", &[("ORDERS", b)]);
    script.lock().unwrap().delta = (403, String::new());
    feed_until(
        &mut feed,
        "c removed through a full read",
        |c| matches!(c, Change::InstanceRemoved(r) if r.instance_id == "h:pay:1"),
    )
    .await;
    assert!(metrics.full_fetches() >= 3);

    // Every request asked for JSON; none carried the replication header.
    let script = script.lock().unwrap();
    for (method, path, headers) in &script.seen {
        assert!(
            headers.iter().any(|h| h == "accept: application/json"),
            "{method} {path} without Accept JSON: {headers:?}"
        );
        assert!(
            !headers
                .iter()
                .any(|h| h.starts_with("x-netflix-discovery-replication")),
            "{method} {path} sent the replication header"
        );
    }
}

/// A poll that took long is followed by a wait at least as long (never more than half the
/// time spent reading), on top of the poll interval.
#[tokio::test]
async fn a_slow_delta_spaces_the_polls() {
    let script: Shared = Arc::default();
    script.lock().unwrap().full = applications("1", "", &[]);
    script.lock().unwrap().delta = (200, applications("1", "", &[]));
    script.lock().unwrap().delta_delay = Duration::from_millis(150);
    let eureka = Eureka::new(test_config(&[stub(script.clone()).await])).expect("adapter");
    let mut feed = eureka.change_feed();
    while script.lock().unwrap().delta_times.len() < 4 {
        feed.next().await.expect("poll");
    }
    let times = script.lock().unwrap().delta_times.clone();
    for pair in times.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= Duration::from_millis(290),
            "polls {gap:?} apart after a 150 ms answer"
        );
    }
}

/// A lone Netflix server refuses reads for minutes after start (403): retryable.
#[tokio::test]
async fn forbidden_reads_are_retryable() {
    let script: Shared = Arc::default();
    script.lock().unwrap().full_status = Some(403);
    let eureka = Eureka::new(test_config(&[stub(script).await])).expect("adapter");
    let error = eureka.snapshot().await.expect_err("403");
    assert!(
        matches!(error, RegistryError::Unavailable(_)) && error.is_retryable(),
        "{error:?}"
    );
    let error = eureka.identity().await.expect_err("403");
    assert!(error.is_retryable(), "{error:?}");
}

/// Calls move to the next address when one cannot be reached or answers 5xx, and the
/// identity stays that of the whole set of addresses.
#[tokio::test]
async fn calls_fail_over_between_addresses() {
    let script: Shared = Arc::default();
    script.lock().unwrap().full = applications("1", "", &[]);
    let live = stub(script.clone()).await;
    let failing: Shared = Arc::default();
    failing.lock().unwrap().full_status = Some(503);
    let failing = stub(failing).await;
    let dead = dead_address().await;
    let eureka =
        Eureka::new(test_config(&[dead.clone(), failing.clone(), live.clone()])).expect("adapter");
    let identity = eureka
        .identity()
        .await
        .expect("identity through the live address");
    assert_eq!(identity.kind, "eureka");
    assert!(
        identity.id.contains(&format!("{}eureka", dead.as_str()))
            && identity.id.contains(&format!("{}eureka", live.as_str())),
        "{identity:?}"
    );
    assert_eq!(eureka.metrics().failovers(), 2);
    assert_eq!(eureka.active_address(), format!("{}eureka", live.as_str()));
    eureka
        .snapshot()
        .await
        .expect("snapshot stays on the live address");
    assert_eq!(eureka.metrics().failovers(), 2);

    // The same addresses in another order are the same registry.
    let again = Eureka::new(test_config(&[live, dead, failing])).expect("adapter");
    assert_eq!(again.identity().await.expect("identity").id, identity.id);
}

/// `--sc-user`/`--sc-password` reach a Eureka behind Spring Security as HTTP basic
/// credentials, on every call.
#[tokio::test]
async fn credentials_are_sent_as_basic_auth() {
    let script: Shared = Arc::default();
    script.lock().unwrap().full = applications("1", "", &[]);
    let config = EurekaConfig {
        credentials: Some(syncer::config::Credentials {
            user: "eureka".into(),
            password: syncer::config::Secret::new("s3cret"),
        }),
        ..test_config(&[stub(script.clone()).await])
    };
    let eureka = Eureka::new(config).expect("adapter");
    eureka.identity().await.expect("identity");
    eureka.snapshot().await.expect("snapshot");
    let script = script.lock().unwrap();
    assert_eq!(script.seen.len(), 2);
    for (_, _, headers) in &script.seen {
        // base64("eureka:s3cret")
        assert!(
            headers
                .iter()
                .any(|h| h == "authorization: Basic ZXVyZWthOnMzY3JldA=="),
            "{headers:?}"
        );
    }
}

/// A heartbeat fails as a whole only when no renewal got an answer.
#[tokio::test]
async fn a_heartbeat_nobody_answers_is_an_error() {
    let eureka = Eureka::new(test_config(&[dead_address().await])).expect("adapter");
    let id = eureka
        .ensure_service(&syncer::registry::Service {
            name: "orders".into(),
            app: "shop".into(),
            version: "1.0.0".into(),
            ..syncer::registry::Service::default()
        })
        .await
        .expect("no call");
    let r = syncer::registry::InstanceRef {
        tenant: syncer::registry::Tenant::default_tenant(),
        service_id: id,
        instance_id: "i".into(),
    };
    let error = eureka
        .heartbeat(std::slice::from_ref(&r))
        .await
        .expect_err("nobody answers");
    assert!(error.is_retryable(), "{error:?}");
}

/// A ServiceComb at `--sc-addr` is not taken for a Eureka: the error names the address.
#[tokio::test]
async fn a_servicecomb_is_not_a_eureka() {
    let sc = syncer::devreg::DevRegistry::start(syncer::devreg::DevRegistryConfig::default())
        .await
        .expect("dev registry");
    let url = Url::parse(&sc.url()).expect("url");
    let eureka = Eureka::new(test_config(std::slice::from_ref(&url))).expect("adapter");
    let error = eureka.identity().await.expect_err("not a Eureka");
    let text = error.to_string();
    assert!(
        text.contains(&format!("{}eureka is not a Eureka server", url.as_str())),
        "{text}"
    );
    assert!(matches!(error, RegistryError::Protocol(_)), "{error:?}");
    sc.shutdown().await;
}

/// The daemon started against a ServiceComb with `--sc-plugin eureka` says, in its log,
/// which address is not a Eureka server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_names_a_non_eureka_address_at_start() {
    let sc = syncer::devreg::DevRegistry::start(syncer::devreg::DevRegistryConfig::default())
        .await
        .expect("dev registry");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = support::syncer(dir.path());
    cmd.args([
        "daemon",
        "--node",
        "eureka-start",
        "--bind-addr",
        "127.0.0.1:0",
        "--rpc-addr",
        "127.0.0.1:0",
        "--admin-addr",
        "127.0.0.1:0",
        "--log-format",
        "json",
        "--cluster-name",
        "eureka-test",
        "--sc-plugin",
        "eureka",
        "--sc-addr",
        &sc.url(),
        "--data-dir",
    ])
    .arg(dir.path().join("data"));
    let mut daemon = support::Daemon::spawn(cmd);
    let line = daemon.wait_for_line("is not a Eureka server");
    let base = format!("{}/eureka", sc.url().trim_end_matches('/'));
    assert!(line.contains(&base), "the line names {base}: {line}");
    daemon.signal("TERM");
    daemon.wait_exit();
    sc.shutdown().await;
}

// ---- against the Eureka emulator ----

use syncer::devreg::eureka::{EurekaDev, EurekaDevConfig};
use syncer::registry::contract::{ContractProfile, registry_contract_with};
use syncer::registry::model::DataCenterInfo;
use syncer::registry::{HealthCheck, Instance, InstanceRef, Service, Tenant};

async fn emulator() -> EurekaDev {
    EurekaDev::start(EurekaDevConfig::default())
        .await
        .expect("emulator")
}

fn adapter_for(dev: &EurekaDev) -> Eureka {
    let url = Url::parse(&dev.url()).expect("url");
    Eureka::new(test_config(&[url])).expect("adapter")
}

fn service(app: &str, name: &str) -> Service {
    Service {
        tenant: Tenant::default_tenant(),
        service_id: format!("origin-{app}-{name}"),
        app: app.into(),
        name: name.into(),
        version: "1.0.0".into(),
        properties: BTreeMap::from([("syncer.origin".into(), "dc1".into())]),
        ..Service::default()
    }
}

/// A copy as the importer writes it (`sync::copy::copy_body`): origin mark, push check.
fn copy(service_id: &str, id: &str) -> Instance {
    Instance {
        tenant: Tenant::default_tenant(),
        service_id: service_id.into(),
        instance_id: id.into(),
        endpoints: vec!["rest://10.0.0.7:8080".into()],
        host_name: "node-7".into(),
        status: "UP".into(),
        properties: BTreeMap::from([("syncer.origin".into(), "dc1".into())]),
        health_check: Some(HealthCheck {
            mode: "push".into(),
            interval: 10,
            times: 2,
            port: 0,
            url: String::new(),
        }),
        version: "1.0.0".into(),
        ..Instance::default()
    }
}

/// `GET {base}/apps/{APP}/{ID}` as JSON, straight from the emulator.
async fn raw_record(dev: &EurekaDev, app: &str, id: &str) -> Option<serde_json::Value> {
    let response = reqwest::Client::new()
        .get(format!(
            "{}/apps/{app}/{}",
            dev.url(),
            id.replace(':', "%3A")
        ))
        .header("accept", "application/json")
        .send()
        .await
        .expect("emulator answers");
    if response.status() == 404 {
        return None;
    }
    Some(response.json().await.expect("JSON"))
}

#[tokio::test]
async fn contract_against_the_emulator() {
    let dev = emulator().await;
    registry_contract_with(&adapter_for(&dev), ContractProfile::EUREKA).await;
    dev.shutdown().await;
}

#[tokio::test]
async fn contract_against_the_emulator_in_real_eureka_mode_without_its_cache() {
    // Real timing but live lists: the contract's feed deadline (10 s) is below the 30 s
    // response cache, which docs/PERFORMANCE.md accounts for separately.
    let dev = EurekaDev::start(EurekaDevConfig {
        response_cache: None,
        ..EurekaDevConfig::real()
    })
    .await
    .expect("emulator");
    registry_contract_with(&adapter_for(&dev), ContractProfile::EUREKA).await;
    dev.shutdown().await;
}

/// What the importer compares reads back as it was written: host name, endpoints, data
/// centre, status, properties, health check (a difference would be a write loop).
#[tokio::test]
async fn copies_read_back_as_written() {
    let dev = emulator().await;
    let eureka = adapter_for(&dev);
    let id = eureka
        .ensure_service(&service("shop", "orders"))
        .await
        .expect("service");
    let mut odd = copy(&id, "syncer-00000000000000000000000000000001");
    odd.endpoints = vec![
        "rest://10.0.0.7:8080?sslEnabled=false".into(),
        "highway://10.0.0.7:7070".into(),
    ];
    odd.status = "TESTING".into();
    odd.properties
        .insert("weird key/<x>".into(), "value".into());
    odd.properties.insert("sc.version".into(), "mine".into());
    odd.data_center = Some(DataCenterInfo {
        name: "dc1".into(),
        region: "eu".into(),
        available_zone: "az1".into(),
    });
    let plain = copy(&id, "syncer-00000000000000000000000000000002");
    let mut no_host = copy(&id, "host:orders:8080");
    no_host.host_name = String::new();
    for instance in [&odd, &plain, &no_host] {
        eureka.register(instance).await.expect("register");
    }
    let snapshot = eureka.snapshot().await.expect("snapshot");
    for instance in [&odd, &plain, &no_host] {
        let back = snapshot
            .instance(&instance.reference())
            .unwrap_or_else(|| panic!("{} in the snapshot", instance.instance_id));
        assert!(back.same_body(instance), "{back:?}\n{instance:?}");
    }
    let record = raw_record(&dev, "ORDERS", "syncer-00000000000000000000000000000001")
        .await
        .expect("record");
    assert_eq!(record["instance"]["status"], "OUT_OF_SERVICE");
    assert_eq!(record["instance"]["leaseInfo"]["durationInSecs"], 30);
    dev.shutdown().await;
}

/// Status changes hold against Eureka's override rules, and renewals never undo them.
#[tokio::test]
async fn status_changes_go_through_overrides() {
    let dev = emulator().await;
    let eureka = adapter_for(&dev);
    let id = eureka
        .ensure_service(&service("shop", "orders"))
        .await
        .expect("service");
    let a = copy(&id, "syncer-0000000000000000000000000000000a");
    eureka.register(&a).await.expect("register");
    let mut registered_oos = copy(&id, "syncer-0000000000000000000000000000000b");
    registered_oos.status = "OUTOFSERVICE".into();
    eureka.register(&registered_oos).await.expect("register");

    let status_of = |r: InstanceRef| {
        let eureka = eureka.clone();
        async move {
            eureka
                .snapshot()
                .await
                .expect("snapshot")
                .instance(&r)
                .map(|i| i.status.clone())
        }
    };
    assert_eq!(
        status_of(registered_oos.reference()).await.as_deref(),
        Some("OUTOFSERVICE")
    );
    let raw = raw_record(&dev, "ORDERS", &registered_oos.instance_id)
        .await
        .expect("record");
    assert_eq!(
        raw["instance"]["overriddenStatus"], "OUT_OF_SERVICE",
        "an override, so that UP can lift it: {raw}"
    );
    for (r, path) in [
        (
            a.reference(),
            [
                "OUTOFSERVICE",
                "UP",
                "TESTING",
                "DOWN",
                "UP",
                "STARTING",
                "TESTING",
                "UP",
            ]
            .as_slice(),
        ),
        (
            registered_oos.reference(),
            ["UP", "DOWN", "OUTOFSERVICE", "UP"].as_slice(),
        ),
    ] {
        for status in path {
            eureka.set_status(&r, status).await.expect("set_status");
            assert_eq!(
                status_of(r.clone()).await.as_deref(),
                Some(*status),
                "after set_status({status}) of {}",
                r.instance_id
            );
            let report = eureka
                .heartbeat(std::slice::from_ref(&r))
                .await
                .expect("heartbeat");
            assert!(report.unknown.is_empty(), "{report:?}");
            assert_eq!(
                status_of(r.clone()).await.as_deref(),
                Some(*status),
                "a renewal keeps {status}"
            );
        }
    }
    // Properties change by registering again, and keep the status.
    eureka
        .set_status(&a.reference(), "OUTOFSERVICE")
        .await
        .expect("status");
    let props = BTreeMap::from([
        ("syncer.origin".into(), "dc1".into()),
        ("k".into(), "v".into()),
    ]);
    eureka
        .set_instance_properties(&a.reference(), &props)
        .await
        .expect("properties");
    let snapshot = eureka.snapshot().await.expect("snapshot");
    let back = snapshot.instance(&a.reference()).expect("a");
    assert_eq!(
        (back.status.as_str(), &back.properties),
        ("OUTOFSERVICE", &props)
    );
    assert!(
        !dev.requests().iter().any(|r| r.path.ends_with("/metadata")),
        "the metadata PUT is never used"
    );
    dev.shutdown().await;
}

/// A copy Eureka lost is registered again at once from the kept body (the Eureka client's
/// rule); an instance nothing is kept for is reported unknown. No call ever carries the
/// replication header.
#[tokio::test]
async fn a_lost_copy_is_registered_again_on_404() {
    let dev = emulator().await;
    let eureka = adapter_for(&dev);
    let id = eureka
        .ensure_service(&service("shop", "orders"))
        .await
        .expect("service");
    let mut a = copy(&id, "syncer-000000000000000000000000000000aa");
    a.status = "TESTING".into();
    eureka.register(&a).await.expect("register");
    let deleted = reqwest::Client::new()
        .delete(format!("{}/apps/ORDERS/{}", dev.url(), a.instance_id))
        .header("accept", "application/json")
        .send()
        .await
        .expect("delete");
    assert_eq!(deleted.status(), 200);
    assert!(raw_record(&dev, "ORDERS", &a.instance_id).await.is_none());

    let ghost = InstanceRef {
        tenant: Tenant::default_tenant(),
        service_id: id.clone(),
        instance_id: "syncer-000000000000000000000000000000bb".into(),
    };
    let report = eureka
        .heartbeat(&[a.reference(), ghost.clone()])
        .await
        .expect("heartbeat");
    assert_eq!(report.unknown, vec![ghost]);
    assert_eq!(eureka.metrics().reregistrations(), 1);
    assert_eq!(eureka.metrics().renewals(), 2);
    let back = eureka.snapshot().await.expect("snapshot");
    let back = back.instance(&a.reference()).expect("registered again");
    assert!(back.same_body(&a), "{back:?}");

    let renewals: Vec<_> = dev
        .requests()
        .into_iter()
        .filter(|r| r.method == "PUT" && r.path.ends_with(&a.instance_id))
        .collect();
    assert!(
        renewals
            .iter()
            .all(|r| r.query.contains("status=UP") && r.query.contains("lastDirtyTimestamp=")),
        "{renewals:?}"
    );
    for request in dev.requests() {
        assert!(
            request.header("x-netflix-discovery-replication").is_none(),
            "{} {} sent the replication header",
            request.method,
            request.path
        );
        assert!(
            request
                .header("accept")
                .is_some_and(|a| a.contains("application/json")),
            "{} {} without Accept JSON",
            request.method,
            request.path
        );
    }
    dev.shutdown().await;
}

/// The feed follows the emulator through deltas alone while the hash agrees.
#[tokio::test]
async fn the_feed_follows_deltas_of_the_emulator() {
    let dev = emulator().await;
    let eureka = adapter_for(&dev);
    let id = eureka
        .ensure_service(&service("shop", "orders"))
        .await
        .expect("service");
    let mut feed = eureka.change_feed();
    feed.next().await.expect("first batch");
    let a = copy(&id, "syncer-0000000000000000000000000000a001");
    eureka.register(&a).await.expect("register");
    feed_until(
        &mut feed,
        "a",
        |c| matches!(c, Change::Instance(i) if i.instance_id == a.instance_id),
    )
    .await;
    eureka
        .set_status(&a.reference(), "DOWN")
        .await
        .expect("down");
    feed_until(&mut feed, "a down", |c| {
        matches!(c, Change::Instance(i) if i.instance_id == a.instance_id && i.status == "DOWN")
    })
    .await;
    eureka.unregister(&a.reference()).await.expect("unregister");
    let seen = feed_until(
        &mut feed,
        "a gone",
        |c| matches!(c, Change::InstanceRemoved(r) if r.instance_id == a.instance_id),
    )
    .await;
    assert!(
        seen.iter()
            .any(|c| matches!(c, Change::ServiceRemoved { service_id, .. } if *service_id == id)),
        "the service goes with its last instance: {seen:?}"
    );
    assert_eq!(eureka.metrics().full_fetches(), 1, "deltas were enough");
    assert_eq!(eureka.metrics().hash_mismatches(), 0);
    dev.shutdown().await;
}

/// Two addresses of one Eureka: the dead one is left for the live one.
#[tokio::test]
async fn writes_fail_over_to_the_live_address() {
    let dev = emulator().await;
    let dead = dead_address().await;
    let live = Url::parse(&dev.url()).expect("url");
    let eureka = Eureka::new(test_config(&[dead, live])).expect("adapter");
    let id = eureka
        .ensure_service(&service("shop", "orders"))
        .await
        .expect("service");
    let a = copy(&id, "syncer-0000000000000000000000000000f001");
    eureka
        .register(&a)
        .await
        .expect("register through the live address");
    assert_eq!(eureka.metrics().failovers(), 1);
    assert!(raw_record(&dev, "ORDERS", &a.instance_id).await.is_some());
    dev.shutdown().await;
}

/// An instance Eureka cannot hold is an error naming the reason; the others go through.
#[tokio::test]
async fn a_refused_instance_does_not_block_the_others() {
    let dev = emulator().await;
    let eureka = adapter_for(&dev);
    let id = eureka
        .ensure_service(&service("shop", "orders"))
        .await
        .expect("service");
    let mut bad = copy(&id, "syncer-0000000000000000000000000000e001");
    bad.endpoints.clear();
    bad.host_name = String::new();
    let refusal = eureka.accepts_instance(&bad).expect_err("no address");
    assert!(refusal.detail.contains("Missing ip address"), "{refusal}");
    let error = eureka.register(&bad).await.expect_err("refused");
    assert!(
        matches!(&error, RegistryError::Invalid(m) if m.contains("Missing ip address")),
        "{error:?}"
    );
    let good = copy(&id, "syncer-0000000000000000000000000000e002");
    eureka.register(&good).await.expect("the others go through");
    let report = eureka
        .heartbeat(&[bad.reference(), good.reference()])
        .await
        .expect("heartbeat");
    assert_eq!(report.unknown, vec![bad.reference()]);
    // Two services of the same name in two apps: one Eureka application, two services.
    let other = eureka
        .ensure_service(&service("other-app", "orders"))
        .await
        .expect("service");
    assert_ne!(other, id);
    let twin = copy(&other, "syncer-0000000000000000000000000000e003");
    eureka.register(&twin).await.expect("register");
    let snapshot = eureka.snapshot().await.expect("snapshot");
    assert_eq!(
        snapshot.instance(&twin.reference()).map(|i| &i.service_id),
        Some(&other)
    );
    assert_eq!(
        snapshot.instance(&good.reference()).map(|i| &i.service_id),
        Some(&id)
    );
    dev.shutdown().await;
}

/// Status changes hold when someone changed the record behind syncer's back: an override
/// lifted by an operator, or a record stuck `OUT_OF_SERVICE` without an override (which a
/// re-registration with `UP` cannot leave, §4.3 rule 3). And a copy kept out of service
/// whose properties change is never shown `STARTING` on the way.
#[tokio::test]
async fn status_changes_hold_after_changes_behind_syncers_back() {
    let dev = emulator().await;
    let eureka = adapter_for(&dev);
    let http = reqwest::Client::new();
    let id = eureka
        .ensure_service(&service("shop", "orders"))
        .await
        .expect("service");
    let status_of = |r: InstanceRef| {
        let eureka = eureka.clone();
        async move {
            eureka
                .snapshot()
                .await
                .expect("snapshot")
                .instance(&r)
                .map(|i| i.status.clone())
        }
    };

    // Kept out of service; properties change: re-registered OUT_OF_SERVICE, never STARTING.
    let mut a = copy(&id, "syncer-0000000000000000000000000000c001");
    a.status = "OUTOFSERVICE".into();
    eureka.register(&a).await.expect("register");
    let before = dev.requests().len();
    let props = BTreeMap::from([
        ("syncer.origin".into(), "dc1".into()),
        ("k".into(), "2".into()),
    ]);
    eureka
        .set_instance_properties(&a.reference(), &props)
        .await
        .expect("properties");
    let posts: Vec<_> = dev.requests()[before..]
        .iter()
        .filter(|r| r.method == "POST")
        .cloned()
        .collect();
    assert_eq!(posts.len(), 1);
    assert!(
        posts[0].body.contains("\"OUT_OF_SERVICE\"") && !posts[0].body.contains("STARTING"),
        "{}",
        posts[0].body
    );
    assert_eq!(
        status_of(a.reference()).await.as_deref(),
        Some("OUTOFSERVICE")
    );

    // An operator lifts the override: the next write puts it back.
    let lifted = http
        .delete(format!(
            "{}/apps/ORDERS/{}/status?value=UP",
            dev.url(),
            a.instance_id
        ))
        .header("accept", "application/json")
        .send()
        .await
        .expect("lift");
    assert_eq!(lifted.status(), 200);
    assert_eq!(status_of(a.reference()).await.as_deref(), Some("UP"));
    let props = BTreeMap::from([
        ("syncer.origin".into(), "dc1".into()),
        ("k".into(), "3".into()),
    ]);
    eureka
        .set_instance_properties(&a.reference(), &props)
        .await
        .expect("properties");
    assert_eq!(
        status_of(a.reference()).await.as_deref(),
        Some("OUTOFSERVICE")
    );

    // Someone registers the record OUT_OF_SERVICE afresh (no override) with a newer stamp:
    // UP still wins.
    let b = copy(&id, "syncer-0000000000000000000000000000c002");
    eureka.register(&b).await.expect("register");
    let deleted = http
        .delete(format!("{}/apps/ORDERS/{}", dev.url(), b.instance_id))
        .header("accept", "application/json")
        .send()
        .await
        .expect("delete");
    assert_eq!(deleted.status(), 200);
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis()
        + 60_000;
    let body = serde_json::json!({"instance": {
        "instanceId": b.instance_id, "hostName": "node-7", "app": "ORDERS",
        "ipAddr": "10.0.0.7", "status": "OUT_OF_SERVICE", "vipAddress": "orders",
        "port": {"$": 8080, "@enabled": "true"},
        "dataCenterInfo": {"@class": "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo", "name": "MyOwn"},
        "metadata": {"sc.appId": "shop", "sc.serviceName": "orders", "sc.version": "1.0.0",
                     "syncer.origin": "dc1"},
        "lastDirtyTimestamp": stamp.to_string(),
    }});
    let registered = http
        .post(format!("{}/apps/ORDERS", dev.url()))
        .header("accept", "application/json")
        .json(&body)
        .send()
        .await
        .expect("register behind syncer's back");
    assert_eq!(registered.status(), 204);
    assert_eq!(
        status_of(b.reference()).await.as_deref(),
        Some("OUTOFSERVICE")
    );
    eureka
        .set_status(&b.reference(), "UP")
        .await
        .expect("set_status");
    assert_eq!(status_of(b.reference()).await.as_deref(), Some("UP"));
    let report = eureka
        .heartbeat(std::slice::from_ref(&b.reference()))
        .await
        .expect("heartbeat");
    assert!(report.unknown.is_empty(), "{report:?}");
    assert_eq!(status_of(b.reference()).await.as_deref(), Some("UP"));
    dev.shutdown().await;
}

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
}

type Shared = Arc<Mutex<Script>>;

async fn scripted(State(script): State<Shared>, request: Request) -> Response {
    let mut script = script.lock().unwrap();
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

//! Conformance tests of the dev registry (`syncer::devreg`) against
//! `shared/reference/servicecomb-sc-v4-api.md`.
//!
//! Every test starts its own registry on `127.0.0.1:0` and talks to it over HTTP with reqwest
//! and `serde_json::Value` only: no wire type of the emulator is imported, so the shapes are
//! checked against the reference, not against the implementation. Tests `cNN_*` follow the
//! reference's §6.3 checklist item NN; the others cover the rest of the brief. Nothing sleeps
//! to synchronise: waits poll with a deadline.

use std::future::Future;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use reqwest::Method;
use serde_json::{Value, json};
use syncer::devreg::{DevRegistry, DevRegistryConfig, HeartbeatStyle};
use tokio::time::{Instant, sleep, timeout};
use tokio_tungstenite::tungstenite::Message;

/// How long a wait for something asynchronous may take.
const DEADLINE: Duration = Duration::from_secs(8);
/// Poll period inside a deadline loop.
const POLL: Duration = Duration::from_millis(25);

/// One HTTP answer.
struct Resp {
    status: u16,
    headers: reqwest::header::HeaderMap,
    text: String,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.text))
    }

    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// Asserts an SC error: status = code / 1000, `errorCode` a JSON string.
    #[track_caller]
    fn assert_error(&self, code: &str) -> Value {
        let body = self.json();
        assert_eq!(
            body["errorCode"],
            Value::String(code.to_owned()),
            "body: {}",
            self.text
        );
        let status: u16 = code[..3].parse().unwrap();
        assert_eq!(self.status, status, "body: {}", self.text);
        assert!(self.text.ends_with('\n'), "error bodies end with a newline");
        assert!(self.header("content-type").starts_with("application/json"));
        body
    }

    /// Asserts an SC error (as [`Resp::assert_error`]) with this `detail`.
    #[track_caller]
    fn assert_detail(&self, code: &str, detail: &str) {
        assert_eq!(
            self.assert_error(code)["detail"],
            detail,
            "body: {}",
            self.text
        );
    }

    /// Asserts an SC error (as [`Resp::assert_error`]) and returns its `detail`.
    #[track_caller]
    fn error_detail(&self, code: &str) -> String {
        self.assert_error(code)["detail"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Asserts SC's answer to a successful write: 200, empty text/plain body.
    #[track_caller]
    fn assert_empty_ok(&self) {
        assert_eq!(self.status, 200, "body: {}", self.text);
        assert_eq!(self.text, "");
        assert!(self.header("content-type").starts_with("text/plain"));
        assert_eq!(self.header("x-response-status"), "200");
    }

    /// Asserts a 200 JSON answer and returns it.
    #[track_caller]
    fn ok_json(&self) -> Value {
        assert_eq!(self.status, 200, "body: {}", self.text);
        assert!(self.text.ends_with('\n'), "JSON bodies end with a newline");
        assert!(self.header("content-type").starts_with("application/json"));
        self.json()
    }

    /// Asserts a 200 JSON answer and returns its string field `name` (`serviceId`, …).
    #[track_caller]
    fn ok_id(&self, name: &str) -> String {
        self.ok_json()[name].as_str().unwrap().to_owned()
    }
}

/// `/microservices/{sid}`.
fn service_path(sid: &str) -> String {
    format!("/microservices/{sid}")
}

/// `/microservices/{sid}/instances`.
fn instances_path(sid: &str) -> String {
    format!("/microservices/{sid}/instances")
}

/// `/microservices/{sid}/instances/{iid}`.
fn instance_path(sid: &str, iid: &str) -> String {
    format!("/microservices/{sid}/instances/{iid}")
}

/// A running dev registry and an HTTP client for it.
struct Sc {
    reg: DevRegistry,
    http: reqwest::Client,
}

impl Sc {
    async fn start() -> Sc {
        Sc::with(DevRegistryConfig::default()).await
    }

    async fn with(config: DevRegistryConfig) -> Sc {
        let reg = DevRegistry::start(config)
            .await
            .expect("start dev registry");
        Sc {
            reg,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
        }
    }

    /// `…/v4/default/registry{path}`.
    fn url(&self, path: &str) -> String {
        format!("{}/v4/default/registry{path}", self.reg.url())
    }

    async fn send(
        &self,
        method: Method,
        url: String,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Resp {
        let mut req = self.http.request(method, url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.body(b);
        }
        let resp = req.send().await.expect("request");
        Resp {
            status: resp.status().as_u16(),
            headers: resp.headers().clone(),
            text: resp.text().await.unwrap(),
        }
    }

    /// GET of a full URL, for paths outside `default/default`'s registry API.
    async fn get_at(&self, url: String) -> Resp {
        self.send(Method::GET, url, &[], None).await
    }

    async fn get(&self, path: &str) -> Resp {
        self.get_at(self.url(path)).await
    }

    async fn get_h(&self, path: &str, headers: &[(&str, &str)]) -> Resp {
        self.send(Method::GET, self.url(path), headers, None).await
    }

    /// A request with `body` sent as it is (or none).
    async fn call_raw(&self, method: Method, path: &str, body: Option<Vec<u8>>) -> Resp {
        self.send(method, self.url(path), &[], body).await
    }

    async fn call(&self, method: Method, path: &str, body: Value) -> Resp {
        self.call_raw(method, path, Some(body.to_string().into_bytes()))
            .await
    }

    async fn put_empty(&self, path: &str) -> Resp {
        self.call_raw(Method::PUT, path, None).await
    }

    async fn delete(&self, path: &str) -> Resp {
        self.call_raw(Method::DELETE, path, None).await
    }

    /// `POST /microservices` with `{"service": service}`.
    async fn create(&self, service: Value) -> Resp {
        let body = json!({ "service": service });
        self.call(Method::POST, "/microservices", body).await
    }

    /// Creates a service; returns its id.
    async fn service(&self, service: Value) -> String {
        self.create(service).await.ok_id("serviceId")
    }

    /// Creates service `name` in app `app`; returns its id.
    async fn app_service(&self, name: &str) -> String {
        self.service(json!({ "appId": "app", "serviceName": name }))
            .await
    }

    /// Creates a service in tenant `domain/project` (no domain header when `domain` is
    /// empty); returns its id.
    async fn service_in(&self, domain: &str, project: &str, service: Value) -> String {
        let url = format!("{}/v4/{project}/registry/microservices", self.reg.url());
        let headers: Vec<(&str, &str)> = if domain.is_empty() {
            vec![]
        } else {
            vec![("X-Domain-Name", domain)]
        };
        let body = json!({ "service": service }).to_string().into_bytes();
        self.send(Method::POST, url, &headers, Some(body))
            .await
            .ok_id("serviceId")
    }

    /// The stored service (`GET /microservices/{sid}`, which must answer 200).
    async fn get_service(&self, sid: &str) -> Value {
        self.get(&service_path(sid)).await.ok_json()["service"].clone()
    }

    async fn force_delete(&self, sid: &str) -> Resp {
        self.delete(&format!("{}?force=true", service_path(sid)))
            .await
    }

    /// The `providers` list of a consumer (`GET …/providers`, which must answer 200).
    async fn providers(&self, sid: &str) -> Value {
        let path = format!("{}/providers", service_path(sid));
        self.get(&path).await.ok_json()["providers"].clone()
    }

    /// `POST …/instances` with `{"instance": instance}`.
    async fn register(&self, sid: &str, instance: Value) -> Resp {
        let body = json!({ "instance": instance });
        self.call(Method::POST, &instances_path(sid), body).await
    }

    /// Registers an instance; returns its id.
    async fn instance(&self, sid: &str, instance: Value) -> String {
        self.register(sid, instance).await.ok_id("instanceId")
    }

    /// The stored instance (`GET …/instances/{iid}`, which must answer 200).
    async fn get_instance(&self, sid: &str, iid: &str) -> Value {
        self.get(&instance_path(sid, iid)).await.ok_json()["instance"].clone()
    }

    async fn heartbeat(&self, sid: &str, iid: &str) -> Resp {
        self.put_empty(&format!("{}/heartbeat", instance_path(sid, iid)))
            .await
    }

    async fn set_status(&self, sid: &str, iid: &str, value: &str) -> Resp {
        let path = format!("{}/status?value={value}", instance_path(sid, iid));
        self.put_empty(&path).await
    }

    /// `PUT {path}/properties` of a service or instance path.
    async fn set_properties(&self, path: &str, body: Value) -> Resp {
        let path = format!("{path}/properties");
        self.call(Method::PUT, &path, body).await
    }

    /// Batch heartbeat, `PUT /heartbeats`.
    async fn heartbeats(&self, body: Value) -> Resp {
        self.call(Method::PUT, "/heartbeats", body).await
    }

    /// Batch find, `POST /instances/action?type=query`.
    async fn batch_find(&self, body: Value) -> Resp {
        self.call(Method::POST, "/instances/action?type=query", body)
            .await
    }

    async fn dependencies(&self, method: Method, body: Value) -> Resp {
        self.call(method, "/dependencies", body).await
    }

    async fn find(&self, query: &str) -> Resp {
        self.find_h(query, &[]).await
    }

    /// A find as service `consumer` (`X-ConsumerId`).
    async fn find_as(&self, consumer: &str, query: &str) -> Resp {
        self.find_h(query, &[("X-ConsumerId", consumer)]).await
    }

    async fn find_h(&self, query: &str, headers: &[(&str, &str)]) -> Resp {
        self.get_h(&format!("/instances?{query}"), headers).await
    }

    /// Ids of the instances a find returns, in order.
    async fn find_ids(&self, query: &str) -> Vec<String> {
        instance_ids(&self.find(query).await.ok_json())
    }

    /// Ids of the instances a find as `consumer` returns, in order.
    async fn find_ids_as(&self, consumer: &str, query: &str) -> Vec<String> {
        instance_ids(&self.find_as(consumer, query).await.ok_json())
    }

    fn ws_url(&self, consumer: &str, kind: &str) -> String {
        format!(
            "ws://{}/v4/default/registry/microservices/{consumer}/{kind}",
            self.reg.addr()
        )
    }

    /// Opens the `kind` watch (`watcher`, `listwatcher`) of `consumer`.
    async fn watch(&self, consumer: &str, kind: &str) -> Ws {
        let (ws, _) = tokio_tungstenite::connect_async(self.ws_url(consumer, kind))
            .await
            .expect("websocket");
        ws
    }
}

fn instance_ids(body: &Value) -> Vec<String> {
    body["instances"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|i| i["instanceId"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The string `field` of every element of the JSON array `list`.
fn field_values<'a>(list: &'a Value, field: &str) -> Vec<&'a str> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|s| s[field].as_str().unwrap())
        .collect()
}

fn host(name: &str) -> Value {
    json!({ "hostName": name, "endpoints": [format!("rest://{name}:8080")] })
}

/// Polls `check` until it is true or the deadline passes.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + DEADLINE;
    loop {
        if check().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        sleep(POLL).await;
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Next text frame (control frames skipped), or `None` when the connection ends.
async fn next_text(ws: &mut Ws) -> Option<String> {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match timeout(left, ws.next()).await {
            Err(_) => panic!("no websocket frame within {DEADLINE:?}"),
            Ok(None) | Ok(Some(Err(_))) | Ok(Some(Ok(Message::Close(_)))) => return None,
            Ok(Some(Ok(Message::Text(t)))) => return Some(t.to_string()),
            Ok(Some(Ok(_))) => continue,
        }
    }
}

/// Next watch event as JSON.
async fn next_event(ws: &mut Ws) -> Value {
    let text = next_text(ws).await.expect("an event frame");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("event is not JSON ({e}): {text}"))
}

/// Next watch event, asserted to be `action` on instance `instance_id`.
async fn expect_event(ws: &mut Ws, action: &str, instance_id: &str) -> Value {
    let event = next_event(ws).await;
    assert_eq!(event["action"], action, "{event}");
    assert_eq!(event["instance"]["instanceId"], instance_id, "{event}");
    event
}

// ---------------------------------------------------------------------------------------------
// §6.3 checklist
// ---------------------------------------------------------------------------------------------

/// §6.3 item 1, §2.1: create defaults appId/version/level/status; no environment.
#[tokio::test]
async fn c01_create_defaults() {
    let sc = Sc::start().await;
    let id = sc.service(json!({ "serviceName": "defaults" })).await;
    let s = sc.get_service(&id).await;
    assert_eq!(s["appId"], "default");
    assert_eq!(s["version"], "0.0.1");
    assert_eq!(s["level"], "BACK");
    assert_eq!(s["status"], "UP");
    assert_eq!(s["serviceId"], id.as_str());
    assert!(
        s.get("environment").is_none(),
        "empty environment is omitted"
    );
    assert!(s.get("properties").is_none(), "empty maps are omitted");
    let ts = s["timestamp"].as_str().unwrap();
    assert!(
        ts.parse::<u64>().is_ok(),
        "timestamp is Unix seconds as a string"
    );
    assert_eq!(s["timestamp"], s["modTimestamp"]);
    // Generated ids: SHA-1 (40 hex) of the index key, deterministic.
    assert_eq!(id.len(), 40);
    assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
}

/// §6.3 item 2, §2.1: re-creating is idempotent; another explicit id conflicts.
#[tokio::test]
async fn c02_create_twice_and_conflict() {
    let sc = Sc::start().await;
    let body = json!({ "appId": "a", "serviceName": "twice", "version": "1.0.0" });
    let first = sc.service(body.clone()).await;
    let mut changed = body.clone();
    changed["description"] = json!("ignored");
    let second = sc.service(changed).await;
    assert_eq!(first, second);
    assert!(
        sc.get_service(&first).await.get("description").is_none(),
        "existing service is not updated"
    );
    let mut other = body.clone();
    other["serviceId"] = json!("another-id");
    sc.create(other).await.assert_error("400010");
    // The same explicit id as the existing one is fine.
    let mut same = body;
    same["serviceId"] = json!(first.clone());
    assert_eq!(sc.service(same).await, first);
}

/// §6.3 item 3: an unused explicit serviceId is honoured.
#[tokio::test]
async fn c03_explicit_service_id() {
    let sc = Sc::start().await;
    let id = sc
        .service(json!({ "serviceId": "my-own-id", "serviceName": "explicit" }))
        .await;
    assert_eq!(id, "my-own-id");
    sc.get("/microservices/my-own-id").await.ok_json();
    // The id is taken now: a different service asking for it conflicts.
    sc.create(json!({ "serviceId": "my-own-id", "serviceName": "other" }))
        .await
        .assert_error("400010");
}

/// §6.3 item 4, §1.3: the error body of an unknown service.
#[tokio::test]
async fn c04_get_unknown_service() {
    let sc = Sc::start().await;
    let r = sc.get("/microservices/nope").await;
    let body = r.assert_error("400012");
    assert_eq!(body["errorMessage"], "Micro-service does not exist");
    assert_eq!(body["detail"], "Service does not exist.");
    assert_eq!(r.header("x-response-status"), "400");
    // Ids longer than 64 characters are invalid parameters.
    let long = "x".repeat(65);
    sc.get(&service_path(&long)).await.assert_error("400001");
}

/// §6.3 item 5, §6.2: invalid names and versions.
#[tokio::test]
async fn c05_invalid_name_and_version() {
    let sc = Sc::start().await;
    for service in [
        json!({ "serviceName": "-bad" }),
        json!({ "serviceName": "ok", "version": "1.0.0.0.0" }),
        json!({ "serviceName": "ok", "version": "1.99999" }),
        json!({ "serviceName": "" }),
        json!({ "serviceName": "ok", "environment": "prod" }),
        json!({ "serviceName": "ok", "level": "TOP" }),
    ] {
        let body = sc.create(service).await.assert_error("400001");
        assert!(
            body["detail"]
                .as_str()
                .unwrap()
                .starts_with("field 'MicroService."),
            "{body}"
        );
    }
    sc.call(Method::POST, "/microservices", json!({}))
        .await
        .assert_detail("400001", "Request body is empty");
}

/// §6.3 item 6, §2.5: existence with version rules.
#[tokio::test]
async fn c06_existence_version_rules() {
    let sc = Sc::start().await;
    let v1 = sc
        .service(json!({ "appId": "app", "serviceName": "ex", "version": "1.0.0" }))
        .await;
    let v2 = sc
        .service(
            json!({ "appId": "app", "serviceName": "ex", "version": "2.0.0", "alias": "exalias" }),
        )
        .await;
    let q = |v: &str| format!("/existence?type=microservice&appId=app&serviceName=ex&version={v}");
    let r = sc.get(&q("latest")).await;
    assert_eq!(r.ok_json()["serviceId"], v2.as_str());
    assert_eq!(r.header("x-schema-summary"), "");
    assert!(r.headers.contains_key("x-schema-summary"));
    assert_eq!(
        sc.get(&q("1.0.0")).await.ok_json()["serviceId"],
        v1.as_str()
    );
    assert_eq!(
        sc.get(&q("1.0.0%2B")).await.ok_json()["serviceId"],
        v2.as_str()
    );
    sc.get(&q("3.0.0")).await.assert_error("400012");
    let detail = sc.get(&q("9.0.0%2B")).await.error_detail("400026");
    assert!(detail.ends_with("version mismatch."));
    sc.get("/existence?type=microservice&appId=app&serviceName=unknown&version=latest")
        .await
        .assert_error("400012");
    // Aliases are found too.
    let r = sc
        .get("/existence?type=microservice&appId=app&serviceName=exalias&version=2.0.0")
        .await;
    assert_eq!(r.ok_json()["serviceId"], v2.as_str());
    let r = sc
        .get("/existence?appId=app&serviceName=ex&version=latest")
        .await;
    r.assert_detail(
        "400001",
        "Only micro-service and schema can be used as type.",
    );
    assert!(r.headers.contains_key("x-schema-summary"));
    sc.get("/existence?type=microservice&serviceName=ex&version=latest")
        .await
        .assert_error("400001");
    // type=schema: unknown service, then a schema that was never uploaded.
    sc.get("/existence?type=schema&serviceId=nope&schemaId=s1")
        .await
        .assert_error("400012");
    sc.get(&format!(
        "/existence?type=schema&serviceId={v1}&schemaId=s1"
    ))
    .await
    .assert_error("400016");
}

/// §6.3 item 7, §3.1: register validation.
#[tokio::test]
async fn c07_register_validation() {
    let sc = Sc::start().await;
    let sid = sc.service(json!({ "serviceName": "reg" })).await;
    sc.call(Method::POST, &instances_path(&sid), json!({}))
        .await
        .assert_error("400001");
    for instance in [
        json!({ "endpoints": ["rest://x:1"] }),
        json!({ "hostName": "   " }),
        json!({ "hostName": "h", "dataCenterInfo": { "name": "dc" } }),
    ] {
        sc.register(&sid, instance).await.assert_error("400001");
    }
    sc.register("unknown", host("h"))
        .await
        .assert_error("400012");
    let bad_check =
        json!({ "hostName": "h", "healthCheck": { "mode": "push", "interval": 5, "times": -1 } });
    sc.register(&sid, bad_check)
        .await
        .assert_detail("400001", "Invalid 'healthCheck' settings in request body.");
}

/// §6.3 item 8, §3.1: instance defaults.
#[tokio::test]
async fn c08_instance_defaults() {
    let sc = Sc::start().await;
    let sid = sc
        .service(json!({ "serviceName": "defs", "version": "3.2.1" }))
        .await;
    let iid = sc.instance(&sid, json!({ "hostName": "h1" })).await;
    assert_eq!(iid.len(), 32, "generated instance ids are 32 hex digits");
    assert!(iid.chars().all(|c| c.is_ascii_hexdigit()));
    let i = sc.get_instance(&sid, &iid).await;
    assert_eq!(i["status"], "UP");
    assert_eq!(
        i["healthCheck"],
        json!({ "mode": "push", "interval": 30, "times": 3 })
    );
    assert_eq!(i["version"], "3.2.1");
    assert_eq!(i["serviceId"], sid.as_str());
    assert_eq!(i["timestamp"], i["modTimestamp"]);
    assert!(
        i.get("endpoints").is_none(),
        "an empty endpoint list is omitted"
    );
}

/// §6.3 item 9, §3.1: registering an existing instanceId is only a heartbeat.
#[tokio::test]
async fn c09_reregister_existing_id() {
    let sc = Sc::start().await;
    let sid = sc.service(json!({ "serviceName": "reuse" })).await;
    let body = json!({ "instanceId": "fixed-1", "hostName": "h", "endpoints": ["rest://old:1"] });
    assert_eq!(sc.instance(&sid, body).await, "fixed-1");
    let again = json!({ "instanceId": "fixed-1", "hostName": "h", "endpoints": ["rest://new:2"], "status": "DOWN" });
    assert_eq!(sc.instance(&sid, again).await, "fixed-1");
    let i = sc.get_instance(&sid, "fixed-1").await;
    assert_eq!(i["endpoints"], json!(["rest://old:1"]));
    assert_eq!(i["status"], "UP");
}

/// §6.3 item 10, §3.7: single heartbeat.
#[tokio::test]
async fn c10_heartbeat() {
    let sc = Sc::start().await;
    let sid = sc.service(json!({ "serviceName": "hb" })).await;
    let iid = sc.instance(&sid, host("h")).await;
    sc.heartbeat(&sid, &iid).await.assert_empty_ok();
    sc.heartbeat(&sid, "unknown").await.assert_error("400017");
}

/// §6.3 item 11, §3.8: batch heartbeat, 1.4.8 style.
#[tokio::test]
async fn c11_batch_heartbeat_v1_4() {
    let sc = Sc::start().await;
    let sid = sc.service(json!({ "serviceName": "hbs" })).await;
    let a = sc.instance(&sid, host("a")).await;
    let b = sc.instance(&sid, host("b")).await;
    let known = json!({ "instances": [
        { "serviceId": sid, "instanceId": a },
        { "serviceId": sid, "instanceId": b },
        { "serviceId": sid, "instanceId": a }
    ]});
    sc.heartbeats(known).await.assert_empty_ok();
    let one_unknown = json!({ "instances": [
        { "serviceId": sid, "instanceId": a },
        { "serviceId": sid, "instanceId": "gone" }
    ]});
    let body = sc.heartbeats(one_unknown).await.assert_error("400017");
    assert_eq!(body["detail"], "Heartbeat set failed.");
    assert!(
        body.get("instances").is_none(),
        "1.4.8 sends no per-instance list"
    );
    sc.heartbeats(json!({ "instances": [] }))
        .await
        .assert_detail("400001", "Request format invalid.");
    sc.call_raw(Method::PUT, "/heartbeats", Some(b"{not json".to_vec()))
        .await
        .assert_detail("400001", "Unmarshal error");
}

/// §6.3 item 12, §4: a short push lease expires; heartbeats then fail.
#[tokio::test]
async fn c12_short_lease_expires() {
    let sc = Sc::start().await;
    let sid = sc.service(json!({ "serviceName": "short" })).await;
    let iid = sc
        .instance(
            &sid,
            json!({ "hostName": "h", "healthCheck": { "mode": "push", "interval": 2, "times": 0 } }),
        )
        .await;
    let started = Instant::now();
    let path = instance_path(&sid, &iid);
    eventually("the instance to expire", || async {
        sc.get(&path).await.status == 400
    })
    .await;
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(1500),
        "expired too early: {elapsed:?}"
    );
    sc.get(&path).await.assert_error("400017");
    sc.heartbeat(&sid, &iid).await.assert_error("400017");
}

/// §6.3 item 13, §3.1/§4: pull mode health checks.
#[tokio::test]
async fn c13_pull_health_check() {
    let sc = Sc::start().await;
    let sid = sc.service(json!({ "serviceName": "pull" })).await;
    for health_check in [json!({ "mode": "pull" }), json!({ "interval": 5 })] {
        sc.register(
            &sid,
            json!({ "hostName": "h", "healthCheck": health_check }),
        )
        .await
        .assert_error("400001");
    }
    let iid = sc
        .instance(
            &sid,
            json!({ "hostName": "h", "healthCheck": { "mode": "pull", "interval": 5, "times": 1 } }),
        )
        .await;
    let i = sc.get_instance(&sid, &iid).await;
    assert_eq!(
        i["healthCheck"],
        json!({ "mode": "pull", "interval": 30, "times": 3 })
    );
}

/// Three versions of `app/svc`, one instance each; returns (service ids, instance ids).
async fn three_versions(sc: &Sc) -> (Vec<String>, Vec<String>) {
    let mut sids = Vec::new();
    let mut iids = Vec::new();
    for v in ["1.0.0", "1.5.0", "2.0.0"] {
        let sid = sc
            .service(json!({ "appId": "app", "serviceName": "svc", "version": v }))
            .await;
        iids.push(sc.instance(&sid, host(&format!("h{v}"))).await);
        sids.push(sid);
    }
    (sids, iids)
}

/// §6.3 item 14, §3.5.1: version rules of find, descending version order.
#[tokio::test]
async fn c14_find_version_rules() {
    let sc = Sc::start().await;
    let (_, i) = three_versions(&sc).await;
    let q = |v: &str| format!("appId=app&serviceName=svc&version={v}");
    assert_eq!(sc.find_ids(&q("latest")).await, vec![i[2].clone()]);
    assert_eq!(
        sc.find_ids(&q("1.0.0%2B")).await,
        vec![i[2].clone(), i[1].clone(), i[0].clone()]
    );
    assert_eq!(
        sc.find_ids(&q("1.0.0-2.0.0")).await,
        vec![i[1].clone(), i[0].clone()]
    );
    assert_eq!(sc.find_ids(&q("1.5.0")).await, vec![i[1].clone()]);
    // Exact rules are string matches: `1.5` is not `1.5.0`.
    sc.find(&q("1.5")).await.assert_error("400012");
}

/// §6.3 item 15, §3.5.2: find errors and the empty answer.
#[tokio::test]
async fn c15_find_errors() {
    let sc = Sc::start().await;
    three_versions(&sc).await;
    let detail = sc
        .find("appId=app&serviceName=unknown&version=latest")
        .await
        .error_detail("400012");
    assert!(detail.contains("provider does not exist"), "{detail}");
    let r = sc.find("appId=app&serviceName=svc&version=9.0.0%2B").await;
    assert_eq!(r.ok_json(), json!({}));
    assert_eq!(r.text, "{}\n");
    for query in [
        "appId=app&serviceName=svc",
        "serviceName=svc&version=latest",
        "appId=app&serviceName=svc&version=latest&env=prod",
    ] {
        sc.find(query).await.assert_error("400001");
    }
    sc.find_as("nobody", "appId=app&serviceName=svc&version=latest")
        .await
        .assert_error("400012");
}

/// §6.3 item 16, §5.1: revisions and 304.
#[tokio::test]
async fn c16_find_revision() {
    let sc = Sc::start().await;
    let (sids, iids) = three_versions(&sc).await;
    let q = "appId=app&serviceName=svc&version=latest";
    let r = sc.find(q).await;
    r.ok_json();
    let rev = r.header("x-resource-revision").to_owned();
    assert_eq!(rev.len(), 40, "revision is 40 hex digits: {rev:?}");
    let r = sc.find(&format!("{q}&rev={rev}")).await;
    assert_eq!(r.status, 304);
    assert_eq!(r.text, "");
    assert_eq!(r.header("x-resource-revision"), rev);
    // noCache disables the comparison.
    assert_eq!(
        sc.find(&format!("{q}&rev={rev}&noCache=1")).await.status,
        200
    );
    // A heartbeat does not change the revision...
    sc.heartbeat(&sids[2], &iids[2]).await.assert_empty_ok();
    assert_eq!(sc.find(&format!("{q}&rev={rev}")).await.status, 304);
    // ...a status change does.
    sc.set_status(&sids[2], &iids[2], "DOWN")
        .await
        .assert_empty_ok();
    let r = sc.find(&format!("{q}&rev={rev}")).await;
    r.ok_json();
    assert_ne!(r.header("x-resource-revision"), rev);
    // List and get-one carry revisions too.
    let list_path = instances_path(&sids[0]);
    let list = sc.get(&list_path).await;
    list.ok_json();
    let lrev = list.header("x-resource-revision").to_owned();
    assert_eq!(sc.get(&format!("{list_path}?rev={lrev}")).await.status, 304);
    let one_path = instance_path(&sids[0], &iids[0]);
    let one = sc.get(&one_path).await;
    let orev = one.header("x-resource-revision").to_owned();
    assert_eq!(sc.get(&format!("{one_path}?rev={orev}")).await.status, 304);
    // An empty result set has a revision as well.
    let eq = "appId=app&serviceName=svc&version=7.0.0%2B";
    let erev = sc.find(eq).await.header("x-resource-revision").to_owned();
    assert_eq!(erev.len(), 40);
    assert_eq!(sc.find(&format!("{eq}&rev={erev}")).await.status, 304);
}

/// §6.3 item 17, §3.5.5: cross-app access needs `allowCrossApp`.
#[tokio::test]
async fn c17_cross_app_access() {
    let sc = Sc::start().await;
    let consumer = sc
        .service(json!({ "appId": "A", "serviceName": "cons" }))
        .await;
    let provider = sc
        .service(json!({ "appId": "B", "serviceName": "prov" }))
        .await;
    let iid = sc.instance(&provider, host("p")).await;
    let q = "appId=B&serviceName=prov&version=latest";
    assert_eq!(sc.find_as(&consumer, q).await.ok_json(), json!({}));
    // Listing the provider's instances as that consumer is refused with 400012.
    sc.get_h(&instances_path(&provider), &[("X-ConsumerId", &consumer)])
        .await
        .assert_error("400012");
    let allow = json!({ "properties": { "allowCrossApp": "TRUE" } });
    sc.set_properties(&service_path(&provider), allow)
        .await
        .assert_empty_ok();
    assert_eq!(sc.find_ids_as(&consumer, q).await, vec![iid]);
}

/// §6.3 item 18, §3.5.3: with a consumer, `env` is ignored.
#[tokio::test]
async fn c18_consumer_ignores_env() {
    let sc = Sc::start().await;
    let consumer = sc
        .service(json!({ "appId": "app", "serviceName": "c", "environment": "testing" }))
        .await;
    let prov = sc
        .service(json!({ "appId": "app", "serviceName": "p", "environment": "testing" }))
        .await;
    let iid = sc.instance(&prov, host("p")).await;
    // Without a consumer, env selects the environment (default "").
    sc.find("appId=app&serviceName=p&version=latest")
        .await
        .assert_error("400012");
    assert_eq!(
        sc.find_ids("appId=app&serviceName=p&version=latest&env=testing")
            .await,
        vec![iid.clone()]
    );
    // With one, its own environment wins over env.
    let q = "appId=app&serviceName=p&version=latest&env=production";
    assert_eq!(sc.find_ids_as(&consumer, q).await, vec![iid]);
}

/// §6.3 item 19, §2.4/§3.5.3: a consumer's find protects the provider from deletion.
#[tokio::test]
async fn c19_consumer_find_protects_provider() {
    let sc = Sc::start().await;
    let consumer = sc.app_service("c").await;
    let prov = sc.app_service("p").await;
    sc.find_as(&consumer, "appId=app&serviceName=p&version=latest")
        .await
        .ok_json();
    sc.delete(&service_path(&prov)).await.assert_detail(
        "400023",
        "Can not delete this service, other service rely it.",
    );
    // The rule shows in the listings.
    assert_eq!(sc.providers(&consumer).await[0]["serviceId"], prov.as_str());
    let consumers = sc
        .get(&format!("/microservices/{prov}/consumers"))
        .await
        .ok_json();
    assert_eq!(consumers["consumers"][0]["serviceId"], consumer.as_str());
    sc.force_delete(&prov).await.assert_empty_ok();
    sc.get(&service_path(&prov)).await.assert_error("400012");
}

/// §6.3 item 20, §2.4: instances block a non-force delete; `force` is validated.
#[tokio::test]
async fn c20_delete_with_instances() {
    let sc = Sc::start().await;
    let sid = sc.service(json!({ "serviceName": "busy" })).await;
    sc.instance(&sid, host("h")).await;
    let path = service_path(&sid);
    sc.delete(&path).await.assert_error("400013");
    sc.delete(&format!("{path}?force=maybe"))
        .await
        .assert_detail("400001", "parameter force must be false or true");
    sc.delete(&format!("{path}?force=1"))
        .await
        .assert_empty_ok();
    sc.delete(&path).await.assert_error("400012");
    // SC itself cannot be deleted.
    let list = sc.get("/microservices").await.ok_json();
    let sc_id = list["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["serviceName"] == "SERVICECENTER")
        .unwrap()["serviceId"]
        .as_str()
        .unwrap()
        .to_owned();
    sc.force_delete(&sc_id)
        .await
        .assert_detail("400001", "not allow to delete service center");
}

/// §6.3 item 21, §3.4: unregister twice.
#[tokio::test]
async fn c21_unregister_twice() {
    let sc = Sc::start().await;
    let sid = sc.service(json!({ "serviceName": "unreg" })).await;
    let iid = sc.instance(&sid, host("h")).await;
    let path = instance_path(&sid, &iid);
    sc.delete(&path).await.assert_empty_ok();
    sc.delete(&path)
        .await
        .assert_detail("400017", "Instance's leaseId not exist.");
    sc.delete(&instance_path(&sid, "bad%20id"))
        .await
        .assert_error("400001");
}

/// §6.3 item 22, §3.9: status updates; DOWN instances are still found.
#[tokio::test]
async fn c22_status_down_still_found() {
    let sc = Sc::start().await;
    let sid = sc.app_service("st").await;
    let iid = sc.instance(&sid, host("h")).await;
    sc.set_status(&sid, &iid, "DOWN").await.assert_empty_ok();
    let found = sc
        .find("appId=app&serviceName=st&version=latest")
        .await
        .ok_json();
    assert_eq!(found["instances"][0]["status"], "DOWN");
    sc.set_status(&sid, &iid, "down")
        .await
        .assert_error("400001");
    sc.put_empty(&format!("{}/status", instance_path(&sid, &iid)))
        .await
        .assert_error("400001");
    sc.set_status(&sid, "nope", "UP")
        .await
        .assert_detail("400017", "Service instance does not exist.");
}

/// §6.3 item 23, §2.6/§3.10: properties PUTs replace the map.
#[tokio::test]
async fn c23_properties_replace() {
    let sc = Sc::start().await;
    let sid = sc
        .service(json!({ "serviceName": "props", "properties": { "a": "1", "b": "2" } }))
        .await;
    let path = service_path(&sid);
    sc.set_properties(&path, json!({ "properties": { "c": "3" } }))
        .await
        .assert_empty_ok();
    let s = sc.get_service(&sid).await;
    assert_eq!(s["properties"], json!({ "c": "3" }));
    let ts: u64 = s["timestamp"].as_str().unwrap().parse().unwrap();
    let mts: u64 = s["modTimestamp"].as_str().unwrap().parse().unwrap();
    assert!(mts >= ts);
    sc.set_properties(&path, json!({})).await.assert_empty_ok();
    let s = sc.get_service(&sid).await;
    assert!(
        s.get("properties").is_none(),
        "an empty body clears the map"
    );
    sc.set_properties("/microservices/nope", json!({ "properties": {} }))
        .await
        .assert_error("400012");
    // Instance properties.
    let iid = sc
        .instance(&sid, json!({ "hostName": "h", "properties": { "x": "1" } }))
        .await;
    let ipath = instance_path(&sid, &iid);
    sc.set_properties(&ipath, json!({ "properties": { "y": "2" } }))
        .await
        .assert_empty_ok();
    let i = sc.get_instance(&sid, &iid).await;
    assert_eq!(i["properties"], json!({ "y": "2" }));
    sc.put_empty(&format!("{ipath}/properties"))
        .await
        .assert_detail("400001", "Unmarshal error");
    sc.set_properties(&instance_path(&sid, "nope"), json!({ "properties": {} }))
        .await
        .assert_error("400017");
}

/// §6.3 item 24, §5.3: a listwatcher gets INIT, then CREATE, UPDATE and DELETE (unregister
/// and expiry) of the providers it found.
#[tokio::test]
async fn c24_listwatcher_events() {
    let sc = Sc::start().await;
    let consumer = sc.app_service("c").await;
    let prov = sc
        .service(json!({ "appId": "app", "serviceName": "p", "version": "1.0.0" }))
        .await;
    let first = sc.instance(&prov, host("first")).await;
    sc.find_as(&consumer, "appId=app&serviceName=p&version=latest")
        .await
        .ok_json();
    let mut ws = sc.watch(&consumer, "listwatcher").await;
    let init = expect_event(&mut ws, "INIT", &first).await;
    assert_eq!(
        init["key"],
        json!({ "appId": "app", "serviceName": "p", "version": "1.0.0" })
    );
    let second = sc.instance(&prov, host("second")).await;
    let created = expect_event(&mut ws, "CREATE", &second).await;
    assert_eq!(created["key"]["tenant"], "default/default");
    assert_eq!(created["key"]["serviceName"], "p");
    sc.set_status(&prov, &second, "DOWN")
        .await
        .assert_empty_ok();
    let updated = next_event(&mut ws).await;
    assert_eq!(updated["action"], "UPDATE");
    assert_eq!(updated["instance"]["status"], "DOWN");
    sc.delete(&instance_path(&prov, &second))
        .await
        .assert_empty_ok();
    expect_event(&mut ws, "DELETE", &second).await;
    // Heartbeats produce no event; expiry produces DELETE.
    sc.heartbeat(&prov, &first).await.assert_empty_ok();
    let short = sc
        .instance(
            &prov,
            json!({ "hostName": "short", "healthCheck": { "mode": "push", "interval": 1, "times": 0 } }),
        )
        .await;
    expect_event(&mut ws, "CREATE", &short).await;
    expect_event(&mut ws, "DELETE", &short).await;
    ws.close(None).await.ok();
}

/// §6.3 item 25, §5.3: an unknown consumer gets one text frame, then the connection closes.
#[tokio::test]
async fn c25_watch_unknown_consumer() {
    let sc = Sc::start().await;
    for kind in ["watcher", "listwatcher"] {
        let (mut ws, _) = tokio_tungstenite::connect_async(sc.ws_url("nobody", kind))
            .await
            .expect("the upgrade always succeeds");
        assert_eq!(
            next_text(&mut ws).await.as_deref(),
            Some("service does not exist")
        );
        assert_eq!(next_text(&mut ws).await, None, "then the connection ends");
    }
}

/// §6.3 item 26, §5.2: dump is for default/default only and has `{key,rev,value,cluster}`.
#[tokio::test]
async fn c26_dump() {
    let sc = Sc::start().await;
    let dump_url = format!("{}/v4/default/admin/dump", sc.reg.url());
    sc.send(
        Method::GET,
        dump_url.clone(),
        &[("X-Domain-Name", "other")],
        None,
    )
    .await
    .assert_detail("403001", "Required admin permission");
    sc.get_at(format!("{}/v4/proj/admin/dump", sc.reg.url()))
        .await
        .assert_error("403001");
    // Another tenant's data shows in the dump too.
    let other = sc
        .service_in("d2", "p2", json!({ "serviceName": "elsewhere" }))
        .await;
    let sid = sc.service(json!({ "serviceName": "dumped" })).await;
    let iid = sc.instance(&sid, host("h")).await;
    let dump = sc.get_at(dump_url.clone()).await.ok_json();
    let cache = &dump["cache"];
    assert!(dump.get("info").is_none(), "no options -> cache only");
    for item in cache["services"].as_array().unwrap() {
        let keys: Vec<&String> = item.as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), 4, "{item}");
        assert!(item["key"].is_string() && item["rev"].is_i64());
        assert_eq!(item["cluster"], "default");
    }
    let service_keys = field_values(&cache["services"], "key");
    assert!(service_keys.contains(&format!("/cse-sr/ms/files/default/default/{sid}").as_str()));
    assert!(service_keys.contains(&format!("/cse-sr/ms/files/d2/p2/{other}").as_str()));
    let inst = cache["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["value"]["instanceId"] == iid.as_str())
        .expect("instance in dump");
    assert_eq!(
        inst["key"],
        format!("/cse-sr/inst/files/default/default/{sid}/{iid}").as_str()
    );
    assert_eq!(inst["cluster"], "default");
    assert!(inst["rev"].as_i64().unwrap() > 0);
    let all = sc.get_at(format!("{dump_url}?options=all")).await.ok_json();
    for section in ["info", "appConf", "environments", "cache"] {
        assert!(all.get(section).is_some(), "options=all has {section}");
    }
    assert_eq!(all["info"]["version"], "1.4.8");
    let info = sc
        .get_at(format!("{dump_url}?options=info"))
        .await
        .ok_json();
    assert!(info.get("cache").is_none() && info.get("info").is_some());
}

// ---------------------------------------------------------------------------------------------
// Beyond the checklist
// ---------------------------------------------------------------------------------------------

/// §3.1: client-chosen instance ids; the same id under another service is another instance.
#[tokio::test]
async fn client_chosen_ids() {
    let sc = Sc::start().await;
    let s1 = sc.service(json!({ "serviceName": "one" })).await;
    let s2 = sc.service(json!({ "serviceName": "two" })).await;
    let a = json!({ "instanceId": "same", "hostName": "a" });
    assert_eq!(sc.instance(&s1, a).await, "same");
    let b = json!({ "instanceId": "same", "hostName": "b" });
    assert_eq!(sc.instance(&s2, b).await, "same");
    assert_eq!(sc.get_instance(&s1, "same").await["hostName"], "a");
    assert_eq!(sc.get_instance(&s2, "same").await["hostName"], "b");
    // Invalid client ids.
    sc.register(&s1, json!({ "instanceId": "a/b", "hostName": "h" }))
        .await
        .assert_error("400001");
    // Deleting and recreating a service gives the same generated id.
    sc.force_delete(&s2).await.assert_empty_ok();
    assert_eq!(sc.service(json!({ "serviceName": "two" })).await, s2);
    // Creating with instances registers them.
    let sid = sc
        .call(
            Method::POST,
            "/microservices",
            json!({ "service": { "serviceName": "withinst" }, "instances": [ { "hostName": "x" } ] }),
        )
        .await
        .ok_id("serviceId");
    let list = sc.get(&instances_path(&sid)).await.ok_json();
    assert_eq!(list["instances"].as_array().unwrap().len(), 1);
    // A bad instance is reported, but the service exists.
    let detail = sc
        .call(
            Method::POST,
            "/microservices",
            json!({ "service": { "serviceName": "badinst" }, "instances": [ {} ] }),
        )
        .await
        .error_detail("400001");
    assert!(detail.starts_with("errMessages: ["), "{detail}");
    sc.get("/existence?type=microservice&appId=default&serviceName=badinst&version=0.0.1")
        .await
        .ok_json();
}

/// §4: `lease_scale` shortens the default 120 s lease.
#[tokio::test]
async fn lease_scale_expiry() {
    let sc = Sc::with(DevRegistryConfig {
        lease_scale: 0.01,
        ..Default::default()
    })
    .await;
    let sid = sc.service(json!({ "serviceName": "scaled" })).await;
    let keep = sc.instance(&sid, host("keep")).await;
    let lose = sc.instance(&sid, host("lose")).await;
    // Keep one alive with heartbeats while the other runs out (1.2 s).
    let deadline = Instant::now() + DEADLINE;
    loop {
        sc.heartbeat(&sid, &keep).await.assert_empty_ok();
        let r = sc.get(&instance_path(&sid, &lose)).await;
        if r.status == 400 {
            r.assert_error("400017");
            break;
        }
        assert!(Instant::now() < deadline, "lease did not expire");
        sleep(Duration::from_millis(200)).await;
    }
    sc.get_instance(&sid, &keep).await;
    // SC's own instance never expires.
    let health = sc.get("/health").await.ok_json();
    assert_eq!(health["instances"].as_array().unwrap().len(), 1);
}

/// §1.1: tenants (domain header and project segment) never see each other.
#[tokio::test]
async fn tenants_isolation() {
    let sc = Sc::start().await;
    let base = sc.reg.url();
    let same = json!({ "serviceName": "same" });
    let a = sc.service_in("", "default", same.clone()).await;
    let b = sc.service_in("d1", "default", same.clone()).await;
    let c = sc.service_in("", "p1", same).await;
    assert_ne!(a, b);
    assert_ne!(a, c);
    assert_ne!(b, c);
    let list = |domain: &'static str, project: &'static str| {
        let url = format!("{base}/v4/{project}/registry/microservices");
        let sc = &sc;
        async move {
            let headers: Vec<(&str, &str)> = vec![("X-Domain-Name", domain)];
            sc.send(Method::GET, url, &headers, None).await.ok_json()
        }
    };
    // d1/default: only its own service (no SERVICECENTER there).
    let d1 = list("d1", "default").await;
    assert_eq!(d1["services"].as_array().unwrap().len(), 1);
    assert_eq!(d1["services"][0]["serviceId"], b.as_str());
    assert_eq!(list("d9", "default").await, json!({}));
    // default/default also holds SERVICECENTER; an empty header means `default`.
    let dd = list("", "default").await;
    assert_eq!(dd["services"].as_array().unwrap().len(), 2);
    sc.get_at(format!("{base}/v4/p1/registry/microservices/{a}"))
        .await
        .assert_error("400012");
    // SERVICECENTER is found from default/default with any env (shared service)...
    let found = sc
        .find("appId=default&serviceName=SERVICECENTER&version=latest&env=testing")
        .await
        .ok_json();
    assert_eq!(found["instances"].as_array().unwrap().len(), 1);
}

/// §3.6: batch find with per-entry revisions, notModified and failed groups.
#[tokio::test]
async fn batch_find() {
    let sc = Sc::start().await;
    let (sids, iids) = three_versions(&sc).await;
    let body = json!({
        "services": [
            { "service": { "appId": "app", "serviceName": "svc", "version": "latest" } },
            { "service": { "appId": "app", "serviceName": "svc", "version": "1.0.0+" } },
            { "service": { "appId": "app", "serviceName": "nope", "version": "latest" } },
            { "service": { "appId": "app", "serviceName": "nope2", "version": "latest" } }
        ],
        "instances": [
            { "instance": { "serviceId": sids[0], "instanceId": iids[0] } },
            { "instance": { "serviceId": sids[0], "instanceId": "gone" } }
        ]
    });
    let r = sc.batch_find(body).await.ok_json();
    let updated = r["services"]["updated"].as_array().unwrap();
    assert_eq!(updated.len(), 2);
    assert_eq!(updated[0]["index"], 0);
    assert_eq!(updated[1]["index"], 1);
    assert_eq!(updated[1]["instances"].as_array().unwrap().len(), 3);
    let failed = &r["services"]["failed"];
    assert_eq!(failed[0]["indexes"], json!([2, 3]));
    assert_eq!(failed[0]["error"]["errorCode"], "400012");
    assert_eq!(
        r["instances"]["updated"][0]["instances"][0]["instanceId"],
        iids[0].as_str()
    );
    assert_eq!(r["instances"]["failed"][0]["indexes"], json!([1]));
    assert_eq!(r["instances"]["failed"][0]["error"]["errorCode"], "400017");
    // Send the revisions back: unchanged entries are notModified.
    let rev0 = updated[0]["rev"].as_str().unwrap();
    let irev = r["instances"]["updated"][0]["rev"].as_str().unwrap();
    let body = json!({
        "services": [
            { "service": { "appId": "app", "serviceName": "svc", "version": "latest" }, "rev": rev0 },
            { "service": { "appId": "app", "serviceName": "svc", "version": "1.0.0+" }, "rev": "stale" }
        ],
        "instances": [ { "instance": { "serviceId": sids[0], "instanceId": iids[0] }, "rev": irev } ]
    });
    let r = sc.batch_find(body).await.ok_json();
    assert_eq!(r["services"]["notModified"], json!([0]));
    assert_eq!(r["services"]["updated"][0]["index"], 1);
    assert!(r["services"].get("failed").is_none());
    assert_eq!(r["instances"]["notModified"], json!([0]));
    // A status change makes the same revision stale.
    sc.set_status(&sids[2], &iids[2], "DOWN")
        .await
        .assert_empty_ok();
    let body = json!({ "services": [
        { "service": { "appId": "app", "serviceName": "svc", "version": "latest" }, "rev": rev0 }
    ] });
    let r = sc.batch_find(body).await.ok_json();
    assert!(r["services"].get("notModified").is_none(), "{r}");
    assert_eq!(
        r["services"]["updated"][0]["instances"][0]["status"],
        "DOWN"
    );
    assert_ne!(r["services"]["updated"][0]["rev"], rev0);
    // Only the services section when no instances were asked for.
    let r = sc
        .batch_find(json!({ "services": [ { "service": { "appId": "app", "serviceName": "svc", "version": "latest" } } ] }))
        .await
        .ok_json();
    assert!(r.get("instances").is_none());
    sc.batch_find(json!({}))
        .await
        .assert_detail("400001", "Required services or instances");
    sc.call(Method::POST, "/instances/action?type=other", json!({}))
        .await
        .assert_detail("400001", "Invalid action: other");
}

/// §3.8 [2.x]: batch heartbeat always answers 200 with a per-instance list.
#[tokio::test]
async fn batch_heartbeat_v2() {
    let sc = Sc::with(DevRegistryConfig {
        heartbeat_style: HeartbeatStyle::V2,
        ..Default::default()
    })
    .await;
    let sid = sc.service(json!({ "serviceName": "hb2" })).await;
    let a = sc.instance(&sid, host("a")).await;
    let r = sc
        .heartbeats(json!({ "instances": [
            { "serviceId": sid, "instanceId": a },
            { "serviceId": sid, "instanceId": "gone" }
        ]}))
        .await
        .ok_json();
    let items = r["instances"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    let ok = items
        .iter()
        .find(|i| i["instanceId"] == a.as_str())
        .unwrap();
    assert!(ok.get("errMessage").is_none());
    let bad = items.iter().find(|i| i["instanceId"] == "gone").unwrap();
    assert!(!bad["errMessage"].as_str().unwrap().is_empty());
    sc.heartbeats(json!({ "instances": [] }))
        .await
        .assert_error("400001");
}

/// §4 real SC 2.x (also 1.4.0-1.4.4, not 1.4.8): a deletion becomes visible only after the
/// 2 s check window, while store-level operations see it at once.
#[tokio::test]
async fn real_sc_delete_check_window() {
    let sc = Sc::with(DevRegistryConfig::real_sc_2()).await;
    let sid = sc.app_service("win").await;
    let iid = sc.instance(&sid, host("h")).await;
    let path = instance_path(&sid, &iid);
    let deleted_at = Instant::now();
    sc.delete(&path).await.assert_empty_ok();
    // Gone for heartbeats and unregister...
    sc.heartbeat(&sid, &iid).await.assert_error("400017");
    sc.delete(&path).await.assert_error("400017");
    // ...but still served by find/get and still blocking a non-force delete.
    let q = "appId=app&serviceName=win&version=latest";
    assert_eq!(sc.find_ids(q).await, vec![iid.clone()]);
    sc.get(&path).await.ok_json();
    sc.delete(&service_path(&sid)).await.assert_error("400013");
    eventually("the deletion to become visible", || async {
        sc.get(&path).await.status == 400
    })
    .await;
    let waited = deleted_at.elapsed();
    assert!(
        waited >= Duration::from_millis(1500),
        "visible too early: {waited:?}"
    );
    assert!(sc.find_ids(q).await.is_empty());
    sc.delete(&service_path(&sid)).await.assert_empty_ok();
}

/// §5.3: a `*` dependency makes the consumer watch every service of its environment, across
/// appIds, and blocks every ordinary service delete there with 400023.
#[tokio::test]
async fn wildcard_dependency_and_delete_protection() {
    let sc = Sc::start().await;
    let syncer = sc
        .service(json!({ "appId": "sync", "serviceName": "syncer", "version": "1.0.0" }))
        .await;
    let before = sc
        .service(json!({ "appId": "a1", "serviceName": "early" }))
        .await;
    let early = sc.instance(&before, host("early")).await;
    let r = sc
        .dependencies(
            Method::PUT,
            json!({ "dependencies": [ {
                "consumer": { "appId": "sync", "serviceName": "syncer", "version": "1.0.0" },
                "providers": [ { "serviceName": "*" } ]
            } ] }),
        )
        .await;
    r.assert_empty_ok();
    assert_eq!(r.header("deprecation"), "version=\"v4\"");
    let mut ws = sc.watch(&syncer, "listwatcher").await;
    expect_event(&mut ws, "INIT", &early).await;
    // A service created later, in another app, is watched too.
    let later = sc
        .service(json!({ "appId": "a2", "serviceName": "late" }))
        .await;
    let late = sc.instance(&later, host("late")).await;
    let ev = expect_event(&mut ws, "CREATE", &late).await;
    assert_eq!(ev["key"]["appId"], "a2");
    // Other environments are not.
    let prod = sc
        .service(json!({ "appId": "a2", "serviceName": "prodsvc", "environment": "production" }))
        .await;
    sc.instance(&prod, host("prod")).await;
    // Every ordinary delete in the environment fails while the `*` consumer exists...
    let empty = sc
        .service(json!({ "appId": "a3", "serviceName": "empty" }))
        .await;
    sc.delete(&service_path(&empty))
        .await
        .assert_error("400023");
    // ...but not in another environment, and not with force.
    let prod_empty = sc
        .service(json!({ "appId": "a3", "serviceName": "pe", "environment": "production" }))
        .await;
    sc.delete(&service_path(&prod_empty))
        .await
        .assert_empty_ok();
    sc.force_delete(&later).await.assert_empty_ok();
    // The force delete announces the instances.
    expect_event(&mut ws, "DELETE", &late).await;
    // The consumer's providers are every service of its environment.
    let providers = sc.providers(&syncer).await;
    let names = field_values(&providers, "serviceName");
    assert!(
        names.contains(&"early") && names.contains(&"empty"),
        "{names:?}"
    );
    assert!(!names.contains(&"prodsvc"));
    ws.close(None).await.ok();
}

/// §2.7: dependency validation and the append mode.
#[tokio::test]
async fn dependencies_endpoints() {
    let sc = Sc::start().await;
    let consumer = sc
        .service(json!({ "appId": "app", "serviceName": "c", "version": "1.0.0" }))
        .await;
    let p1 = sc
        .service(json!({ "appId": "app", "serviceName": "p1", "version": "1.0.0" }))
        .await;
    let p2 = sc
        .service(json!({ "appId": "app", "serviceName": "p2", "version": "2.0.0" }))
        .await;
    let cons = json!({ "appId": "app", "serviceName": "c", "version": "1.0.0" });
    let post = |providers: Value| json!({ "dependencies": [ { "consumer": cons.clone(), "providers": providers } ] });
    let p1_from_1 = post(json!([{ "serviceName": "p1", "version": "1.0.0+" }]));
    sc.dependencies(Method::POST, p1_from_1)
        .await
        .assert_empty_ok();
    let p2_latest = post(json!([{ "serviceName": "p2", "version": "latest" }]));
    sc.dependencies(Method::POST, p2_latest.clone())
        .await
        .assert_empty_ok();
    let providers = sc.providers(&consumer).await;
    let mut ids = field_values(&providers, "serviceId");
    ids.sort_unstable();
    let mut expected = vec![p1.as_str(), p2.as_str()];
    expected.sort_unstable();
    assert_eq!(ids, expected);
    // Errors.
    let r = sc
        .dependencies(Method::POST, post(json!([{ "serviceName": "p1" }])))
        .await;
    r.assert_detail("400001", "Required provider version");
    assert_eq!(r.header("deprecation"), "version=\"v4\"");
    let twice = post(json!([
        { "serviceName": "p1", "version": "1.0.0" },
        { "serviceName": "p1", "version": "2.0.0" }
    ]));
    sc.dependencies(Method::PUT, twice)
        .await
        .assert_error("400001");
    sc.dependencies(Method::PUT, json!({ "dependencies": [] }))
        .await
        .assert_error("400001");
    sc.dependencies(
        Method::PUT,
        json!({ "dependencies": [ {
            "consumer": { "appId": "app", "serviceName": "ghost", "version": "1.0.0" },
            "providers": [ { "serviceName": "p1", "version": "1.0.0" } ]
        } ] }),
    )
    .await
    .assert_error("400012");
    // PUT replaces: only p2 is left.
    sc.dependencies(Method::PUT, p2_latest)
        .await
        .assert_empty_ok();
    let providers = sc.providers(&consumer).await;
    assert_eq!(providers.as_array().unwrap().len(), 1);
    assert_eq!(providers[0]["serviceId"], p2.as_str());
    sc.delete(&service_path(&p1)).await.assert_empty_ok();
    sc.delete(&service_path(&p2)).await.assert_error("400023");
}

/// §2.7: dependency rules can apply asynchronously, as SC's dependency queue does.
#[tokio::test]
async fn dependency_rules_apply_asynchronously() {
    let sc = Sc::with(DevRegistryConfig {
        dependency_delay: Duration::from_secs(1),
        ..Default::default()
    })
    .await;
    let consumer = sc.app_service("c").await;
    let prov = sc.app_service("p").await;
    let queued_at = Instant::now();
    sc.find_as(&consumer, "appId=app&serviceName=p&version=latest")
        .await
        .ok_json();
    let consumers = format!("/microservices/{prov}/consumers");
    let early = sc.get(&consumers).await.ok_json();
    if queued_at.elapsed() < Duration::from_millis(800) {
        assert_eq!(early, json!({}), "the rule is not applied yet");
    }
    eventually("the implicit rule to apply", || async {
        sc.get(&consumers)
            .await
            .ok_json()
            .get("consumers")
            .is_some()
    })
    .await;
    sc.delete(&service_path(&prov)).await.assert_error("400023");
}

/// §4 self-preservation (real SC 2.x, not 1.4.8): when ≥80 % of more than 5 instances are deleted at once, SC keeps
/// serving them past the check window, for up to their TTL.
#[tokio::test]
async fn real_sc_self_preservation() {
    let sc = Sc::with(DevRegistryConfig {
        // TTL budget 120 s × 0.025 = 3 s, released at the second check tick (≈4 s).
        lease_scale: 0.025,
        ..DevRegistryConfig::real_sc_2()
    })
    .await;
    let sid = sc.app_service("mass").await;
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(sc.instance(&sid, host(&format!("h{n}"))).await);
    }
    // SC's own instance makes 6 in the cache; deleting 5 is 83 %.
    let started = Instant::now();
    for iid in &ids {
        sc.delete(&instance_path(&sid, iid)).await.assert_empty_ok();
    }
    let q = "appId=app&serviceName=mass&version=latest";
    eventually("the preserved instances to be released", || async {
        sc.find_ids(q).await.is_empty()
    })
    .await;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(3500),
        "released after {waited:?}, before the TTL budget ran out"
    );
}

/// §1.1: unknown paths answer Go's 404, known paths with another method 405.
#[tokio::test]
async fn routing_404_405() {
    let sc = Sc::start().await;
    let r = sc.get("/nothing/here").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.text.trim_end(), "404 page not found");
    assert!(r.header("content-type").starts_with("text/plain"));
    let r = sc
        .get_at(format!(
            "{}/v3/default/registry/microservices",
            sc.reg.url()
        ))
        .await;
    assert_eq!(r.status, 404);
    let r = sc.call_raw(Method::PATCH, "/microservices", None).await;
    assert_eq!(r.status, 405);
    assert_eq!(r.text.trim_end(), "Method Not Allowed");
    let allow = r.header("allow").to_owned();
    for m in ["GET", "POST", "DELETE"] {
        assert!(allow.contains(m), "Allow: {allow}");
    }
    let r = sc.put_empty("/instances").await;
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), "GET");
}

/// §1.3: malformed JSON gives 400001 with the handler's detail.
#[tokio::test]
async fn malformed_json() {
    let sc = Sc::start().await;
    let bad = Some(b"{\"service\": ".to_vec());
    let detail = sc
        .call_raw(Method::POST, "/microservices", bad.clone())
        .await
        .error_detail("400001");
    assert!(
        !detail.is_empty() && detail != "Unmarshal error",
        "services give the JSON error: {detail}"
    );
    sc.call_raw(Method::POST, "/microservices", None)
        .await
        .assert_detail("400001", "unexpected end of JSON input");
    let sid = sc.service(json!({ "serviceName": "m" })).await;
    sc.call_raw(Method::POST, &instances_path(&sid), Some(b"[1,2]".to_vec()))
        .await
        .assert_detail("400001", "Unmarshal error");
    sc.call_raw(Method::PUT, "/dependencies", bad)
        .await
        .assert_error("400001");
    // Unknown keys are ignored and null means "not given", as in Go.
    let id = sc
        .service(json!({ "serviceName": "lenient", "unknown": 1, "appId": null }))
        .await;
    assert_eq!(sc.get_service(&id).await["appId"], "default");
}

/// §1.2: body size limits: 5 KiB for register, 3 KiB for properties, 2 MiB elsewhere.
#[tokio::test]
async fn body_size_limits() {
    const TOO_LARGE: &str = "http: request body too large";
    let sc = Sc::start().await;
    let sid = sc.service(json!({ "serviceName": "big" })).await;
    let pad = "x".repeat(6 * 1024);
    sc.register(
        &sid,
        json!({ "hostName": "h", "properties": { "pad": pad } }),
    )
    .await
    .assert_detail("400001", TOO_LARGE);
    let small = "x".repeat(3 * 1024);
    sc.set_properties(
        &service_path(&sid),
        json!({ "properties": { "pad": small } }),
    )
    .await
    .assert_detail("400001", TOO_LARGE);
    // The same 6 KiB fits the default limit of a service create.
    let id = sc
        .service(json!({ "serviceName": "bigdesc", "properties": { "pad": pad } }))
        .await;
    assert!(!id.is_empty());
    let huge = "x".repeat(2 * 1024 * 1024 + 1);
    sc.call_raw(Method::POST, "/microservices", Some(huge.into_bytes()))
        .await
        .assert_detail("400001", TOO_LARGE);
}

/// §1.5: version, health and SC's self-registration.
#[tokio::test]
async fn version_health_and_self_registration() {
    let sc = Sc::start().await;
    let r = sc.get("/version").await;
    assert_eq!(r.status, 200);
    assert!(!r.text.ends_with('\n'), "version has no trailing newline");
    let v = r.json();
    assert_eq!(v["version"], "1.4.8");
    assert_eq!(v["apiVersion"], "4.0.0");
    assert!(v["config"].is_object());
    let health = sc.get("/health").await.ok_json();
    let inst = &health["instances"][0];
    assert!(inst.get("properties").is_none());
    assert_eq!(
        inst["healthCheck"],
        json!({ "mode": "push", "interval": 30, "times": 3 })
    );
    let list = sc.get("/microservices").await.ok_json();
    let me = list["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["serviceName"] == "SERVICECENTER")
        .expect("SC registers itself")
        .clone();
    assert_eq!(me["alias"], "SERVICECENTER");
    assert_eq!(me["appId"], "default");
    assert_eq!(me["properties"]["allowCrossApp"], "true");
    let bare = Sc::with(DevRegistryConfig {
        self_register: false,
        ..Default::default()
    })
    .await;
    assert_eq!(bare.get("/microservices").await.ok_json(), json!({}));
    bare.get("/health").await.assert_error("400012");
}

/// §2.4: batch delete.
#[tokio::test]
async fn batch_delete() {
    let sc = Sc::start().await;
    let delete = |body: Value| sc.call(Method::DELETE, "/microservices", body);
    let a = sc.service(json!({ "serviceName": "ba" })).await;
    let b = sc.service(json!({ "serviceName": "bb" })).await;
    let r = delete(json!({ "serviceIds": [a, b] })).await.ok_json();
    assert_eq!(
        r["services"],
        json!([{ "serviceId": a }, { "serviceId": b }])
    );
    let c = sc.service(json!({ "serviceName": "bc" })).await;
    sc.instance(&c, host("h")).await;
    delete(json!({ "serviceIds": [c, "nope"] }))
        .await
        .assert_detail("400001", "Delete services failed.");
    delete(json!({ "serviceIds": [c], "force": true }))
        .await
        .ok_json();
    delete(json!({ "serviceIds": [] }))
        .await
        .assert_error("400001");
}

/// Several registries in one process are independent.
#[tokio::test]
async fn registries_are_independent() {
    let one = Sc::start().await;
    let two = Sc::start().await;
    let id = one.service(json!({ "serviceName": "only-in-one" })).await;
    two.get(&service_path(&id)).await.assert_error("400012");
    let handle = two.reg.handle().clone();
    two.reg.shutdown().await;
    assert!(
        reqwest::get(format!("{}/v4/default/registry/version", handle.url()))
            .await
            .is_err(),
        "a stopped registry does not answer"
    );
    one.get_service(&id).await;
}

/// §5.3: a plain watcher has no INIT frames, and client pings are answered.
#[tokio::test]
async fn watcher_without_init() {
    let sc = Sc::start().await;
    let consumer = sc.app_service("c").await;
    let prov = sc.app_service("p").await;
    sc.instance(&prov, host("before")).await;
    sc.find_as(&consumer, "appId=app&serviceName=p&version=latest")
        .await
        .ok_json();
    let mut ws = sc.watch(&consumer, "watcher").await;
    ws.send(Message::Ping(b"hi".to_vec().into())).await.unwrap();
    let pong = timeout(DEADLINE, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(matches!(pong, Message::Pong(_)), "got {pong:?}");
    let after = sc.instance(&prov, host("after")).await;
    // No INIT on /watcher: the first event is the new instance.
    expect_event(&mut ws, "CREATE", &after).await;
    ws.close(None).await.ok();
}

/// The `syncer dev-registry` subcommand: prints its address, serves, stops on SIGTERM; bad
/// flags exit with 2.
#[test]
fn cli_subcommand() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let exe = env!("CARGO_BIN_EXE_syncer");
    let bad = Command::new(exe)
        .args(["dev-registry", "--heartbeat-style", "3.0"])
        .output()
        .expect("run syncer");
    assert_eq!(bad.status.code(), Some(2));
    let mut child = Command::new(exe)
        .args([
            "dev-registry",
            "--listen",
            "127.0.0.1:0",
            "--real-sc",
            "1.4.8",
            "--lease-scale",
            "0.5",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn syncer");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(DEADLINE).expect("the listening line");
    let url = line
        .trim()
        .strip_prefix("dev registry listening on ")
        .unwrap_or_else(|| panic!("unexpected line {line:?}"))
        .to_owned();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let version: Value = runtime.block_on(async {
        reqwest::get(format!("{url}/v4/default/registry/version"))
            .await
            .expect("request")
            .json()
            .await
            .expect("json")
    });
    assert_eq!(version["version"], "1.4.8");
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(killed.success());
    let deadline = std::time::Instant::now() + DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "did not stop on SIGTERM"
        );
        std::thread::sleep(POLL);
    };
    assert!(status.success(), "exit status {status:?}");
}

// ---------------------------------------------------------------------------------------------
// Schema, tag and rule APIs, and SC's observable quirks (issue 15 item 3).
// ---------------------------------------------------------------------------------------------

/// `/microservices/{sid}/{rest}`.
fn sub_path(sid: &str, rest: &str) -> String {
    format!("/microservices/{sid}/{rest}")
}

#[tokio::test]
async fn schema_upload_read_list_delete_and_existence() {
    let sc = Sc::start().await;
    let sid = sc
        .service(json!({"serviceName": "contracts", "environment": "development"}))
        .await;
    sc.call(
        Method::PUT,
        &sub_path(&sid, "schemas/hello"),
        json!({"schema": "openapi: 3.0", "summary": "abc123"}),
    )
    .await
    .assert_empty_ok();
    // The id joins the service's `schemas` list.
    assert_eq!(sc.get_service(&sid).await["schemas"], json!(["hello"]));
    let r = sc.get(&sub_path(&sid, "schemas/hello")).await;
    assert_eq!(r.ok_json(), json!({"schema": "openapi: 3.0"}));
    assert_eq!(r.header("x-schema-summary"), "abc123");
    let listed = sc.get(&sub_path(&sid, "schemas")).await.ok_json();
    assert_eq!(
        listed,
        json!({"schemas": [{"schemaId": "hello", "summary": "abc123"}]})
    );
    let full = sc
        .get(&sub_path(&sid, "schemas?withSchema=1"))
        .await
        .ok_json();
    assert_eq!(
        full,
        json!({"schemas": [{"schemaId": "hello", "summary": "abc123", "schema": "openapi: 3.0"}]})
    );
    sc.get(&sub_path(&sid, "schemas?withSchema=2"))
        .await
        .assert_detail("400001", "parameter withSchema must be 1 or 0");
    let r = sc
        .get(&format!(
            "/existence?type=schema&serviceId={sid}&schemaId=hello"
        ))
        .await;
    assert_eq!(r.ok_json(), json!({"schemaId": "hello"}));
    assert_eq!(r.header("x-schema-summary"), "abc123");
    sc.delete(&sub_path(&sid, "schemas/hello"))
        .await
        .assert_empty_ok();
    sc.get(&sub_path(&sid, "schemas/hello"))
        .await
        .assert_error("400016");
    sc.delete(&sub_path(&sid, "schemas/hello"))
        .await
        .assert_error("400016");
    // The id stays in the list, now without a summary.
    assert_eq!(
        sc.get(&sub_path(&sid, "schemas")).await.ok_json(),
        json!({"schemas": [{"schemaId": "hello"}]})
    );
    sc.get(&sub_path("nope", "schemas/hello"))
        .await
        .assert_error("400012");
    // SC 1.4.8 uploads one schema with PUT only.
    let r = sc
        .call(
            Method::POST,
            &sub_path(&sid, "schemas/hello"),
            json!({"schema": "x"}),
        )
        .await;
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), "GET, DELETE, PUT");
}

#[tokio::test]
async fn schema_production_rules() {
    let sc = Sc::start().await;
    // No environment counts as production (SC's `SCHEMA_EDITABLE` is off by default).
    let sid = sc
        .service(json!({"serviceName": "prod", "schemas": ["a"]}))
        .await;
    let sc = &sc;
    let put = |id: &str, schema: &str, summary: &str| {
        let path = sub_path(&sid, &format!("schemas/{id}"));
        let body = json!({"schema": schema, "summary": summary});
        async move { sc.call(Method::PUT, &path, body).await }
    };
    put("a", "v1", "").await.assert_empty_ok();
    // Content without a summary may still get its summary once.
    put("a", "v1", "s1").await.assert_empty_ok();
    put("a", "v2", "s2").await.assert_detail(
        "400015",
        "schema already exist, can not be changed in production",
    );
    put("b", "v1", "s1").await.assert_detail(
        "400014",
        "Non-existent schemaID can't be added in production",
    );
    // A batch upload keeps the frozen schema without an error, and refuses unknown ids.
    sc.call(
        Method::POST,
        &sub_path(&sid, "schemas"),
        json!({"schemas": [{"schemaId": "a", "summary": "s2", "schema": "v2"}]}),
    )
    .await
    .assert_empty_ok();
    let r = sc.get(&sub_path(&sid, "schemas/a")).await;
    assert_eq!(r.ok_json()["schema"], "v1");
    assert_eq!(r.header("x-schema-summary"), "s1");
    sc.call(
        Method::POST,
        &sub_path(&sid, "schemas"),
        json!({"schemas": [{"schemaId": "b", "summary": "s", "schema": "v"}]}),
    )
    .await
    .assert_detail("400014", "Non-existent schemaIDs [b]");
    // A production service without a schema list takes the first uploaded id.
    let bare = sc
        .service(json!({"serviceName": "bare", "environment": "production"}))
        .await;
    sc.call(
        Method::PUT,
        &sub_path(&bare, "schemas/x"),
        json!({"schema": "c"}),
    )
    .await
    .assert_empty_ok();
    assert_eq!(sc.get_service(&bare).await["schemas"], json!(["x"]));
}

#[tokio::test]
async fn schema_batch_upload_replaces_the_set_outside_production() {
    let sc = Sc::start().await;
    let sid = sc
        .service(json!({"serviceName": "dev", "environment": "testing"}))
        .await;
    let sc = &sc;
    let batch = |schemas: Value| {
        let path = sub_path(&sid, "schemas");
        async move {
            sc.call(Method::POST, &path, json!({ "schemas": schemas }))
                .await
        }
    };
    batch(json!([
        {"schemaId": "a", "summary": "sa", "schema": "A"},
        {"schemaId": "b", "summary": "sb", "schema": "B"}
    ]))
    .await
    .assert_empty_ok();
    assert_eq!(sc.get_service(&sid).await["schemas"], json!(["a", "b"]));
    batch(json!([{"schemaId": "b", "summary": "sb2", "schema": "B2"}]))
        .await
        .assert_empty_ok();
    assert_eq!(sc.get_service(&sid).await["schemas"], json!(["b"]));
    sc.get(&sub_path(&sid, "schemas/a"))
        .await
        .assert_error("400016");
    assert_eq!(
        sc.get(&sub_path(&sid, "schemas/b")).await.ok_json()["schema"],
        "B2"
    );
    // Every element needs a summary; SC's detail is fixed.
    batch(json!([{"schemaId": "c", "schema": "C"}]))
        .await
        .assert_detail("400001", "Invalid request.");
    batch(json!([]))
        .await
        .assert_detail("400001", "Invalid request.");
}

#[tokio::test]
async fn tag_api() {
    let sc = Sc::start().await;
    let sid = sc.service(json!({"serviceName": "tagged"})).await;
    let tags = sub_path(&sid, "tags");
    assert_eq!(sc.get(&tags).await.ok_json(), json!({}));
    sc.call(Method::POST, &tags, json!({"tags": {"a": "v1", "b": "v2"}}))
        .await
        .assert_empty_ok();
    assert_eq!(
        sc.get(&tags).await.ok_json(),
        json!({"tags": {"a": "v1", "b": "v2"}})
    );
    sc.put_empty(&format!("{tags}/a?value=x1"))
        .await
        .assert_empty_ok();
    sc.put_empty(&format!("{tags}/zz?value=x1"))
        .await
        .assert_detail("400018", "Tag does not exist, please add one first.");
    sc.delete(&format!("{tags}/a,zz")).await.assert_detail(
        "400018",
        "Delete tags failed for this key zz does not exist.",
    );
    assert_eq!(
        sc.get(&tags).await.ok_json(),
        json!({"tags": {"a": "x1", "b": "v2"}})
    );
    sc.delete(&format!("{tags}/a")).await.assert_empty_ok();
    // POST replaces the whole map.
    sc.call(Method::POST, &tags, json!({"tags": {"c": "v3"}}))
        .await
        .assert_empty_ok();
    assert_eq!(sc.get(&tags).await.ok_json(), json!({"tags": {"c": "v3"}}));
    sc.call(Method::POST, &tags, json!({"tags": {"1bad": "x"}}))
        .await
        .assert_error("400001");
    sc.get(&sub_path("nope", "tags"))
        .await
        .assert_error("400012");
}

#[tokio::test]
async fn rule_api() {
    let sc = Sc::start().await;
    let sid = sc.service(json!({"serviceName": "guarded"})).await;
    let rules = sub_path(&sid, "rules");
    assert_eq!(sc.get(&rules).await.ok_json(), json!({}));
    let black = json!({"ruleType": "BLACK", "attribute": "ServiceName", "pattern": "^bad", "description": "d"});
    let added = sc
        .call(Method::POST, &rules, json!({ "rules": [black] }))
        .await
        .ok_json();
    let id = added["RuleIds"][0].as_str().unwrap().to_owned();
    // The same attribute and pattern again: nothing added.
    assert_eq!(
        sc.call(Method::POST, &rules, json!({ "rules": [black] }))
            .await
            .ok_json(),
        json!({})
    );
    let listed = sc.get(&rules).await.ok_json();
    let rule = &listed["rules"][0];
    assert_eq!(rule["ruleId"], id.as_str());
    assert_eq!(rule["ruleType"], "BLACK");
    assert_eq!(rule["attribute"], "ServiceName");
    assert_eq!(rule["pattern"], "^bad");
    assert!(rule["timestamp"].is_string() && rule["modTimestamp"].is_string());
    let white = json!({"ruleType": "WHITE", "attribute": "tag_team", "pattern": "x"});
    sc.call(Method::POST, &rules, json!({ "rules": [white] }))
        .await
        .assert_error("400020");
    sc.call(Method::PUT, &format!("{rules}/{id}"), white.clone())
        .await
        .assert_error("400021");
    let black2 = json!({"ruleType": "BLACK", "attribute": "Version", "pattern": "1"});
    sc.call(Method::PUT, &format!("{rules}/{id}"), black2.clone())
        .await
        .assert_empty_ok();
    assert_eq!(
        sc.get(&rules).await.ok_json()["rules"][0]["attribute"],
        "Version"
    );
    sc.call(Method::PUT, &format!("{rules}/nope"), black2)
        .await
        .assert_error("400022");
    let bad = json!({"ruleType": "GREY", "attribute": "ServiceName", "pattern": "x"});
    sc.call(Method::POST, &rules, json!({ "rules": [bad] }))
        .await
        .assert_error("400001");
    let bad_attr = json!({"ruleType": "BLACK", "attribute": "Name", "pattern": "x"});
    sc.call(Method::POST, &rules, json!({ "rules": [bad_attr] }))
        .await
        .assert_error("400001");
    // SC answers an unknown service on add with 400001.
    sc.call(
        Method::POST,
        &sub_path("nope", "rules"),
        json!({ "rules": [black] }),
    )
    .await
    .assert_detail("400001", "Service does not exist.");
    sc.delete(&format!("{rules}/{id},nope"))
        .await
        .assert_error("400022");
    sc.delete(&format!("{rules}/{id}")).await.assert_empty_ok();
    assert_eq!(sc.get(&rules).await.ok_json(), json!({}));
}

#[tokio::test]
async fn rules_are_enforced_on_consumer_finds() {
    let sc = Sc::start().await;
    let provider = sc.app_service("provider").await;
    let iid = sc.instance(&provider, host("p1")).await;
    let bad = sc.app_service("bad-consumer").await;
    let good = sc.app_service("good-consumer").await;
    let query = "appId=app&serviceName=provider&version=0.0.1";
    assert_eq!(sc.find_ids_as(&bad, query).await, vec![iid.clone()]);
    let rules = sub_path(&provider, "rules");
    let black = json!({"ruleType": "BLACK", "attribute": "ServiceName", "pattern": "^bad"});
    let added = sc
        .call(Method::POST, &rules, json!({ "rules": [black] }))
        .await
        .ok_json();
    let rule_id = added["RuleIds"][0].as_str().unwrap().to_owned();
    // Hidden, not refused: 200 without instances.
    assert_eq!(sc.find_as(&bad, query).await.ok_json(), json!({}));
    assert_eq!(sc.find_ids_as(&good, query).await, vec![iid.clone()]);
    sc.get_h(&instance_path(&provider, &iid), &[("X-ConsumerId", &bad)])
        .await
        .assert_error("400017");
    let batch = sc
        .send(
            Method::POST,
            sc.url("/instances/action?type=query"),
            &[("X-ConsumerId", &bad)],
            Some(
                json!({"services": [{"service": {"appId": "app", "serviceName": "provider", "version": "0.0.1"}}]})
                    .to_string()
                    .into_bytes(),
            ),
        )
        .await
        .ok_json();
    assert_eq!(batch["services"]["updated"][0]["index"], 0);
    assert!(batch["services"]["updated"][0]["instances"].is_null());
    // A WHITE list: only consumers whose tag matches see the provider.
    sc.delete(&format!("{rules}/{rule_id}"))
        .await
        .assert_empty_ok();
    let white = json!({"ruleType": "WHITE", "attribute": "tag_team", "pattern": "^blue$"});
    sc.call(Method::POST, &rules, json!({ "rules": [white] }))
        .await
        .ok_json();
    sc.call(
        Method::POST,
        &sub_path(&good, "tags"),
        json!({"tags": {"team": "blue"}}),
    )
    .await
    .assert_empty_ok();
    assert_eq!(sc.find_ids_as(&good, query).await, vec![iid.clone()]);
    assert_eq!(sc.find_as(&bad, query).await.ok_json(), json!({}));
    // Without a consumer no rule applies.
    assert_eq!(sc.find_ids(query).await, vec![iid]);
}

#[tokio::test]
async fn rules_given_on_create_are_stored() {
    let sc = Sc::start().await;
    let body = json!({
        "service": {"serviceName": "with-rules"},
        "rules": [{"ruleType": "WHITE", "attribute": "AppId", "pattern": "^default$"}]
    });
    let sid = sc
        .call(Method::POST, "/microservices", body)
        .await
        .ok_id("serviceId");
    let rules = sc.get(&sub_path(&sid, "rules")).await.ok_json();
    assert_eq!(rules["rules"][0]["ruleType"], "WHITE");
}

#[tokio::test]
async fn quirk_instance_lookups_are_prefix_searches() {
    let sc = Sc::start().await;
    let sid = sc.app_service("pfx").await;
    let mut inst = host("h");
    inst["instanceId"] = json!("pfx-10");
    assert_eq!(sc.instance(&sid, inst).await, "pfx-10");
    let r = sc.get(&instance_path(&sid, "pfx-1")).await;
    assert_eq!(r.ok_json()["instance"]["instanceId"], "pfx-10");
    assert!(!r.header("x-resource-revision").is_empty());
    // Store-level operations are exact.
    sc.heartbeat(&sid, "pfx-1").await.assert_error("400017");
    let batch = sc
        .batch_find(json!({"instances": [{"instance": {"serviceId": sid, "instanceId": "pfx-1"}}]}))
        .await
        .ok_json();
    assert_eq!(
        batch["instances"]["updated"][0]["instances"][0]["instanceId"],
        "pfx-10"
    );
    sc.get(&instance_path(&sid, "pfx-2"))
        .await
        .assert_error("400017");
}

#[tokio::test]
async fn quirk_version_range_takes_the_first_version_below_its_end() {
    let sc = Sc::start().await;
    let mut ids = Vec::new();
    for version in ["1.0.0", "3.0.0"] {
        let sid = sc
            .service(json!({"appId": "app", "serviceName": "ranged", "version": version}))
            .await;
        ids.push(sc.instance(&sid, host(version)).await);
    }
    assert_eq!(
        sc.find_ids("appId=app&serviceName=ranged&version=2.0.0-2.5.0")
            .await,
        vec![ids[0].clone()]
    );
    assert!(
        sc.find_ids("appId=app&serviceName=ranged&version=3.5.0-4.0.0")
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn quirk_request_keys_match_case_insensitively() {
    let sc = Sc::start().await;
    let body = json!({"Service": {
        "ServiceName": "folded", "AppId": "app", "VERSION": "1.2.3",
        "Properties": {"ServiceName": "kept"}
    }});
    let sid = sc
        .call(Method::POST, "/microservices", body)
        .await
        .ok_id("serviceId");
    let service = sc.get_service(&sid).await;
    assert_eq!(service["serviceName"], "folded");
    assert_eq!(service["appId"], "app");
    assert_eq!(service["version"], "1.2.3");
    // Keys of free maps are data: not renamed.
    assert_eq!(service["properties"], json!({"ServiceName": "kept"}));
    let iid = sc
        .call(
            Method::POST,
            &instances_path(&sid),
            json!({"Instance": {"HostName": "h", "Endpoints": ["rest://1.2.3.4:80"]}}),
        )
        .await
        .ok_id("instanceId");
    assert_eq!(sc.get_instance(&sid, &iid).await["hostName"], "h");
}

#[tokio::test]
async fn quirk_revision_header_on_every_find_list_and_get() {
    let sc = Sc::start().await;
    let sid = sc.app_service("rev").await;
    for r in [
        sc.find("appId=app&serviceName=missing&version=1.0.0").await,
        sc.get(&instances_path("nope")).await,
        sc.get(&instance_path(&sid, "nope")).await,
    ] {
        assert!(r.status >= 400, "{}", r.text);
        assert!(
            r.headers.contains_key("x-resource-revision"),
            "no revision header on {}",
            r.text
        );
    }
    for r in [
        sc.find("appId=app&serviceName=rev&version=0.0.1").await,
        sc.get(&instances_path(&sid)).await,
    ] {
        assert_eq!(r.status, 200);
        assert!(!r.header("x-resource-revision").is_empty());
    }
}

#[tokio::test]
async fn quirk_no_cache_accepts_one_and_true() {
    let sc = Sc::start().await;
    let sid = sc.app_service("nc").await;
    sc.instance(&sid, host("h")).await;
    let query = "appId=app&serviceName=nc&version=0.0.1";
    let rev = sc
        .find(query)
        .await
        .header("x-resource-revision")
        .to_owned();
    assert_eq!(sc.find(&format!("{query}&rev={rev}")).await.status, 304);
    for flag in ["1", "true", "TRUE"] {
        let r = sc.find(&format!("{query}&rev={rev}&noCache={flag}")).await;
        assert_eq!(r.status, 200, "noCache={flag}");
    }
}

/// `GET /v4/{project}/govern/microservices?options=statistics` (SC's governance route; not in
/// the reference, facts from SC 1.4.8's `server/rest/govern`): names counted with versions
/// folded, SC's own (shared) service left out, instances of counted services, zeros omitted.
#[tokio::test]
async fn govern_statistics_count_names_and_instances_of_one_tenant() {
    let sc = Sc::start().await;
    let stats = |domain: &'static str| {
        let url = format!(
            "{}/v4/default/govern/microservices?options=statistics",
            sc.reg.url()
        );
        let headers: Vec<(&str, &str)> = if domain.is_empty() {
            vec![]
        } else {
            vec![("X-Domain-Name", domain)]
        };
        let sc = &sc;
        async move { sc.send(Method::GET, url, &headers, None).await.ok_json() }
    };
    // A fresh SC: only SERVICECENTER, which is shared and so not counted.
    assert_eq!(
        stats("").await,
        json!({"statistics": {"services": {}, "instances": {}, "apps": {}}})
    );

    let v1 = sc
        .service(json!({"appId": "app", "serviceName": "a", "version": "1.0.0"}))
        .await;
    let v2 = sc
        .service(json!({"appId": "app", "serviceName": "a", "version": "2.0.0"}))
        .await;
    sc.service(json!({"appId": "other", "serviceName": "b"}))
        .await;
    sc.register(&v1, host("h1")).await.ok_id("instanceId");
    sc.register(&v2, host("h2")).await.ok_id("instanceId");
    sc.register(&v2, host("h3")).await.ok_id("instanceId");
    assert_eq!(
        stats("").await,
        json!({"statistics": {
            "services": {"count": 2, "onlineCount": 1},
            "instances": {"count": 3, "countByDomain": 3},
            "apps": {"count": 2}
        }})
    );
    // Another domain sees its own tenant only.
    assert_eq!(
        stats("elsewhere").await,
        json!({"statistics": {"services": {}, "instances": {}, "apps": {}}})
    );
    // withShared counts SC's own service and instance too.
    let shared = sc
        .get_at(format!(
            "{}/v4/default/govern/microservices?options=statistics&withShared=true",
            sc.reg.url()
        ))
        .await
        .ok_json();
    assert_eq!(shared["statistics"]["services"]["count"], 3);
    assert_eq!(shared["statistics"]["instances"]["count"], 4);

    let bad = sc
        .get_at(format!(
            "{}/v4/default/govern/microservices?options=statistics&countOnly=yes",
            sc.reg.url()
        ))
        .await;
    bad.assert_detail("400001", "parameter countOnly must be 1 or 0");
    // Without the statistics option: the services, without properties and schemas.
    let list = sc
        .get_at(format!("{}/v4/default/govern/microservices", sc.reg.url()))
        .await
        .ok_json();
    let names: Vec<&str> = list["allServicesDetail"]
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|d| d["microService"]["serviceName"].as_str())
        .collect();
    assert_eq!(names.len(), 3, "{list}");
    assert!(list.get("statistics").is_none(), "{list}");
}

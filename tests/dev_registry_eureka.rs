//! Conformance tests of the Eureka dev registry (`syncer::devreg::eureka`) against
//! `shared/reference/eureka-rest-api.md`, and of `syncer dev-registry --kind eureka`.
//!
//! Every test starts its own emulator on `127.0.0.1:0` and talks to it over HTTP with
//! `serde_json::Value` only: no wire type of the emulator is imported, so shapes are checked
//! against the reference. Tests `cNN_*` follow the reference's §8.2 checklist item NN.
//!
//! Timing items (8, 17, 19, 20) run on a paused tokio clock: time moves only through
//! `tokio::time::advance`, and requests go through a small blocking HTTP/1.1 client inside
//! `spawn_blocking`, which keeps tokio from auto-advancing the paused clock while a request is
//! in flight. Nothing sleeps to synchronise.

#[path = "eureka/python.rs"]
mod python;

use std::io::{Read, Write};

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::{Value, json};
use syncer::devreg::eureka::{EurekaDev, EurekaDevConfig};

const DC_CLASS: &str = "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo";
const JSON: (&str, &str) = ("Accept", "application/json");
/// Upper bound of one request of the blocking client.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// One HTTP answer.
#[derive(Debug)]
struct Resp {
    status: u16,
    /// Header names lower-case.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    #[track_caller]
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.text()))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A minimal blocking HTTP/1.1 client (`Connection: close`, `Content-Length` bodies).
fn raw_http(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Resp {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    let mut req = format!(
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).expect("write");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).expect("read");
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of headers");
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = buf[split + 4..].to_vec();
    if let Some(len) = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok())
    {
        body.truncate(len);
    }
    Resp {
        status,
        headers,
        body,
    }
}

/// An emulator and a way to call it (works on a paused clock: see the file's doc).
struct Eu {
    dev: EurekaDev,
    addr: SocketAddr,
}

impl Eu {
    async fn start(config: EurekaDevConfig) -> Eu {
        let dev = EurekaDev::start(config).await.expect("start emulator");
        let addr = dev.handle().addr();
        Eu { dev, addr }
    }

    /// `path` is relative to `/eureka` (e.g. `/apps`).
    async fn call(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Resp {
        let addr = self.addr;
        let (method, target) = (method.to_owned(), format!("/eureka{path}"));
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let body = body.to_owned();
        tokio::task::spawn_blocking(move || {
            let h: Vec<(&str, &str)> = headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            raw_http(addr, &method, &target, &h, &body)
        })
        .await
        .expect("request task")
    }

    async fn get(&self, path: &str) -> Resp {
        self.call("GET", path, &[JSON], "").await
    }

    async fn register(&self, app: &str, body: &Value) -> Resp {
        self.call(
            "POST",
            &format!("/apps/{app}"),
            &[("Content-Type", "application/json")],
            &body.to_string(),
        )
        .await
    }

    async fn put(&self, path: &str) -> Resp {
        self.call("PUT", path, &[], "").await
    }

    async fn delete(&self, path: &str) -> Resp {
        self.call("DELETE", path, &[], "").await
    }

    /// `GET /apps/{app}/{id}` as JSON, `None` on 404.
    async fn instance(&self, app: &str, id: &str) -> Option<Value> {
        let r = self.get(&format!("/apps/{app}/{id}")).await;
        match r.status {
            200 => Some(r.json()["instance"].clone()),
            404 => None,
            s => panic!("GET instance: {s} {}", r.text()),
        }
    }

    /// Ids in `GET /apps` (JSON), sorted.
    async fn listed_ids(&self) -> Vec<String> {
        let r = self.get("/apps").await;
        assert_eq!(r.status, 200);
        let mut ids: Vec<String> = instances_of(&r.json()["applications"])
            .iter()
            .map(|i| i["instanceId"].as_str().unwrap_or_default().to_owned())
            .collect();
        ids.sort();
        ids
    }
}

/// Every instance of an `applications` object.
fn instances_of(apps: &Value) -> Vec<Value> {
    apps["application"]
        .as_array()
        .expect("application is an array")
        .iter()
        .flat_map(|a| a["instance"].as_array().cloned().unwrap_or_default())
        .collect()
}

/// A register body as a Spring Cloud client sends it.
fn body(app: &str, id: &str, host: &str) -> Value {
    json!({"instance": {
        "instanceId": id, "hostName": host, "app": app, "ipAddr": "10.0.0.5",
        "status": "UP", "overriddenStatus": "UNKNOWN",
        "port": {"$": 8080, "@enabled": "true"}, "securePort": {"$": 443, "@enabled": "false"},
        "countryId": 1,
        "dataCenterInfo": {"@class": DC_CLASS, "name": "MyOwn"},
        "leaseInfo": {"renewalIntervalInSecs": 30, "durationInSecs": 90},
        "metadata": {"zone": "a"},
        "vipAddress": app.to_lowercase(), "secureVipAddress": app.to_lowercase(),
        "lastDirtyTimestamp": "1000"
    }})
}

/// `body` with fields replaced (`null` removes a field).
fn with(mut b: Value, changes: Value) -> Value {
    let inst = b["instance"].as_object_mut().expect("instance");
    for (k, v) in changes.as_object().expect("object") {
        if v.is_null() {
            inst.remove(k);
        } else {
            inst.insert(k.clone(), v.clone());
        }
    }
    b
}

/// Moves the paused clock forward one second at a time so every periodic task runs on time.
async fn advance_secs(secs: u64) {
    for _ in 0..secs {
        tokio::time::advance(Duration::from_secs(1)).await;
        for _ in 0..4 {
            tokio::task::yield_now().await;
        }
    }
}

#[tokio::test(start_paused = true)]
async fn c01_register_204_and_app_upper_cased() {
    let eu = Eu::start(EurekaDevConfig::default()).await;
    let r = eu
        .register("orders", &body("orders", "h:orders:8080", "h"))
        .await;
    assert_eq!(r.status, 204);
    assert!(r.body.is_empty());
    let inst = eu
        .instance("ORDERS", "h:orders:8080")
        .await
        .expect("stored");
    assert_eq!(inst["app"], "ORDERS");
    assert_eq!(inst["status"], "UP");
    assert_eq!(inst["actionType"], "ADDED");
    // Both path forms serve, and the app segment is case-insensitive.
    let r = eu
        .call("GET", "/apps/orders/h:orders:8080", &[JSON], "")
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let r = raw_http_v2(&eu, "/apps/ORDERS/h%3Aorders%3A8080").await;
    assert_eq!(r.status, 200, "{}", r.text());
}

async fn raw_http_v2(eu: &Eu, path: &str) -> Resp {
    let addr = eu.addr;
    let target = format!("/eureka/v2{path}");
    tokio::task::spawn_blocking(move || raw_http(addr, "GET", &target, &[JSON], ""))
        .await
        .expect("request task")
}

#[tokio::test(start_paused = true)]
async fn c02_validation_errors_are_400_in_order() {
    let eu = Eu::start(EurekaDevConfig::default()).await;
    let base = body("orders", "h:orders:8080", "h");
    let cases = [
        (
            with(base.clone(), json!({"instanceId": null, "hostName": null})),
            "Missing instanceId",
        ),
        (
            with(base.clone(), json!({"hostName": ""})),
            "Missing hostname",
        ),
        (
            with(base.clone(), json!({"ipAddr": null})),
            "Missing ip address",
        ),
        (with(base.clone(), json!({"app": " "})), "Missing appName"),
        (
            with(base.clone(), json!({"app": "billing"})),
            "Mismatched appName, expecting ORDERS but was BILLING",
        ),
        (
            with(base.clone(), json!({"dataCenterInfo": null})),
            "Missing dataCenterInfo",
        ),
        (
            with(
                base.clone(),
                json!({"dataCenterInfo": {"@class": DC_CLASS}}),
            ),
            "Missing dataCenterInfo Name",
        ),
    ];
    for (b, message) in cases {
        let r = eu.register("orders", &b).await;
        assert_eq!((r.status, r.text().as_str()), (400, message));
    }
    assert_eq!(eu.get("/apps/ORDERS").await.status, 404, "nothing stored");
    assert_eq!(eu.register("orders", &base).await.status, 204);
}

#[tokio::test(start_paused = true)]
async fn c03_unparseable_bodies_are_json_400() {
    let eu = Eu::start(EurekaDevConfig::default()).await;
    let base = body("orders", "h:orders:8080", "h");
    let bodies = [
        with(base.clone(), json!({"dataCenterInfo": {"name": "MyOwn"}})).to_string(),
        with(base.clone(), json!({"port": 8080})).to_string(),
        base["instance"].to_string(),
        "{\"instance\":".to_owned(),
    ];
    for b in bodies {
        let r = eu
            .call(
                "POST",
                "/apps/orders",
                &[("Content-Type", "application/json")],
                &b,
            )
            .await;
        assert_eq!(r.status, 400, "{b}");
        assert_eq!(r.json(), json!({"error": "cannot parse request body"}));
    }
}

#[tokio::test(start_paused = true)]
async fn c04_no_instance_id_is_keyed_by_host_name() {
    let eu = Eu::start(EurekaDevConfig::default()).await;
    let b = with(body("orders", "x", "host-1"), json!({"instanceId": null}));
    assert_eq!(eu.register("orders", &b).await.status, 204);
    let inst = eu
        .instance("ORDERS", "host-1")
        .await
        .expect("under hostName");
    assert!(inst.get("instanceId").is_none(), "unset id is omitted");
    assert_eq!(eu.get("/instances/host-1").await.status, 200);
}

#[tokio::test(start_paused = true)]
async fn c05_defaults_for_status_and_ports() {
    let eu = Eu::start(EurekaDevConfig::default()).await;
    let b = with(
        body("orders", "h:orders:1", "h"),
        json!({"status": null, "port": null, "securePort": null}),
    );
    assert_eq!(eu.register("orders", &b).await.status, 204);
    let inst = eu.instance("ORDERS", "h:orders:1").await.expect("stored");
    assert_eq!(inst["status"], "UP");
    assert_eq!(inst["port"], json!({"$": 7001, "@enabled": "true"}));
    assert_eq!(inst["securePort"], json!({"$": 7002, "@enabled": "false"}));
}

#[tokio::test(start_paused = true)]
async fn c06_output_types() {
    let eu = Eu::start(EurekaDevConfig::default()).await;
    let b = with(body("orders", "h:orders:1", "h"), json!({"metadata": null}));
    assert_eq!(eu.register("orders", &b).await.status, 204);
    let apps = eu.get("/apps").await.json();
    assert!(apps["applications"]["versions__delta"].is_string());
    assert!(apps["applications"]["apps__hashcode"].is_string());
    let inst = &instances_of(&apps["applications"])[0];
    for key in [
        "isCoordinatingDiscoveryServer",
        "lastUpdatedTimestamp",
        "lastDirtyTimestamp",
        "actionType",
        "vipAddress",
    ] {
        assert!(inst[key].is_string(), "{key} is a string: {inst}");
    }
    assert_eq!(inst["isCoordinatingDiscoveryServer"], "false");
    assert!(inst["port"]["@enabled"].is_string());
    assert!(inst["port"]["$"].is_number());
    assert!(inst["countryId"].is_number());
    for key in [
        "renewalIntervalInSecs",
        "durationInSecs",
        "registrationTimestamp",
        "lastRenewalTimestamp",
        "evictionTimestamp",
        "serviceUpTimestamp",
    ] {
        assert!(inst["leaseInfo"][key].is_number(), "leaseInfo.{key}");
    }
    assert_eq!(
        inst["metadata"],
        json!({"@class": "java.util.Collections$EmptyMap"})
    );
    assert_eq!(inst["dataCenterInfo"]["@class"], DC_CLASS);
    assert_eq!(inst["dataCenterInfo"]["name"], "MyOwn");
}

/// Gunzips a body.
fn gunzip(bytes: &[u8]) -> String {
    let mut out = String::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_string(&mut out)
        .expect("gzip body");
    out
}

#[tokio::test(start_paused = true)]
async fn c07_xml_without_json_accept_and_gzip_on_lists_only() {
    let eu = Eu::start(EurekaDevConfig::default()).await;
    let b = with(
        body("orders", "h:orders:8080", "h"),
        json!({"metadata": {"zone": "a<b"}}),
    );
    eu.register("orders", &b).await;
    // No Accept: XML, in XStream's element names.
    let r = eu.call("GET", "/apps", &[], "").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/xml"));
    assert!(r.header("content-encoding").is_none());
    let x = r.text();
    assert!(
        x.starts_with(
            "<applications><versions__delta>1</versions__delta>\
             <apps__hashcode>UP_1_</apps__hashcode><application><name>ORDERS</name><instance>"
        ),
        "{x}"
    );
    for part in [
        "<instanceId>h:orders:8080</instanceId>",
        "<port enabled=\"true\">8080</port>",
        "<securePort enabled=\"false\">443</securePort>",
        &format!("<dataCenterInfo class=\"{DC_CLASS}\"><name>MyOwn</name></dataCenterInfo>"),
        "<overriddenstatus>UNKNOWN</overriddenstatus>",
        "<metadata><zone>a&lt;b</zone></metadata>",
        "<leaseInfo><renewalIntervalInSecs>30</renewalIntervalInSecs><durationInSecs>90</durationInSecs>",
        "<isCoordinatingDiscoveryServer>false</isCoordinatingDiscoveryServer>",
        "<actionType>ADDED</actionType>",
    ] {
        assert!(x.contains(part), "{part} in {x}");
    }
    // Any Accept without "json" is XML too; with it, JSON.
    let r = eu.call("GET", "/apps", &[("Accept", "*/*")], "").await;
    assert!(r.text().starts_with("<applications>"));
    let r = eu
        .call("GET", "/apps", &[("Accept", "application/json")], "")
        .await;
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.json()["applications"]["apps__hashcode"], "UP_1_");
    // gzip on /apps and /apps/delta when accepted, in either format.
    for (path, accept) in [
        ("/apps", ""),
        ("/apps/delta", ""),
        ("/apps", "application/json"),
    ] {
        let mut headers = vec![("Accept-Encoding", "gzip, deflate")];
        if !accept.is_empty() {
            headers.push(("Accept", accept));
        }
        let r = eu.call("GET", path, &headers, "").await;
        assert_eq!(r.header("content-encoding"), Some("gzip"), "{path}");
        let text = gunzip(&r.body);
        if accept.is_empty() {
            assert!(text.starts_with("<applications>"), "{text}");
        } else {
            assert!(serde_json::from_str::<Value>(&text).is_ok(), "{text}");
        }
    }
    // ... and nowhere else.
    for path in ["/apps/ORDERS", "/apps/ORDERS/h:orders:8080", "/vips/orders"] {
        let r = eu
            .call("GET", path, &[("Accept-Encoding", "gzip"), JSON], "")
            .await;
        assert_eq!(r.status, 200, "{path}");
        assert!(r.header("content-encoding").is_none(), "{path}");
    }
    let r = eu.call("GET", "/apps/ORDERS/h:orders:8080", &[], "").await;
    assert!(
        r.text()
            .starts_with("<instance><instanceId>h:orders:8080</instanceId>")
    );
    let r = eu.call("GET", "/apps/ORDERS", &[], "").await;
    assert!(
        r.text()
            .starts_with("<application><name>ORDERS</name><instance>")
    );
}

#[tokio::test(start_paused = true)]
async fn xml_register_bodies_are_read_like_json_ones() {
    let eu = Eu::start(EurekaDevConfig::default()).await;
    let doc = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><instance><instanceId>x1</instanceId>\
         <hostName>h</hostName><app>orders</app><ipAddr>10.0.0.9</ipAddr><status>UP</status>\
         <port enabled=\"true\">8081</port><securePort enabled=\"false\">443</securePort>\
         <dataCenterInfo class=\"{DC_CLASS}\"><name>MyOwn</name></dataCenterInfo>\
         <leaseInfo><durationInSecs>30</durationInSecs></leaseInfo>\
         <metadata><zone>b</zone></metadata><vipAddress>orders</vipAddress></instance>"
    );
    let r = eu
        .call(
            "POST",
            "/apps/ORDERS",
            &[("Content-Type", "application/xml")],
            &doc,
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text());
    let inst = eu.instance("ORDERS", "x1").await.expect("stored");
    assert_eq!(inst["port"], json!({"$": 8081, "@enabled": "true"}));
    assert_eq!(inst["metadata"], json!({"zone": "b"}));
    assert_eq!(inst["leaseInfo"]["durationInSecs"], 30);
    let r = eu
        .call(
            "POST",
            "/apps/ORDERS",
            &[("Content-Type", "application/xml")],
            "<instance><hostName>h</instance>",
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json(), json!({"error": "cannot parse request body"}));
}

#[tokio::test(start_paused = true)]
async fn c08_renew_unknown_404_known_200_moves_last_renewal() {
    let eu = Eu::start(EurekaDevConfig::default()).await;
    assert_eq!(eu.put("/apps/ORDERS/nobody").await.status, 404);
    eu.register("orders", &body("orders", "i1", "h")).await;
    let before = eu.instance("ORDERS", "i1").await.expect("stored")["leaseInfo"].clone();
    advance_secs(5).await;
    let r = eu
        .put("/apps/ORDERS/i1?status=UP&lastDirtyTimestamp=1000")
        .await;
    assert_eq!((r.status, r.body.len()), (200, 0));
    let after = eu.instance("ORDERS", "i1").await.expect("stored")["leaseInfo"].clone();
    let moved = after["lastRenewalTimestamp"].as_i64().unwrap()
        - before["lastRenewalTimestamp"].as_i64().unwrap();
    assert_eq!(moved, 5000);
    assert_eq!(
        after["registrationTimestamp"], before["registrationTimestamp"],
        "a renewal is not a registration"
    );
}

#[tokio::test(start_paused = true)]
async fn c09_renew_dirty_timestamps_404_200_409() {
    let eu = Eu::start(EurekaDevConfig::default()).await;
    eu.register("orders", &body("orders", "i1", "h")).await;
    let r = eu.put("/apps/ORDERS/i1?lastDirtyTimestamp=2000").await;
    assert_eq!(r.status, 404, "client newer than the server");
    let r = eu.put("/apps/ORDERS/i1?lastDirtyTimestamp=500").await;
    assert_eq!(r.status, 200, "older without replication");
    let r = eu.put("/apps/ORDERS/i1?lastDirtyTimestamp=1000").await;
    assert_eq!(r.status, 200, "equal");
    let r = eu
        .call(
            "PUT",
            "/apps/ORDERS/i1?lastDirtyTimestamp=500",
            &[("x-netflix-discovery-replication", "true"), JSON],
            "",
        )
        .await;
    assert_eq!(r.status, 409);
    let inst = r.json()["instance"].clone();
    assert_eq!(inst["instanceId"], "i1");
    assert_eq!(inst["lastDirtyTimestamp"], "1000");
}

#[tokio::test(start_paused = true)]
async fn c10_renew_ignores_status() {
    let eu = Eu::start(EurekaDevConfig::default()).await;
    eu.register("orders", &body("orders", "i1", "h")).await;
    let r = eu.put("/apps/ORDERS/i1?status=DOWN").await;
    assert_eq!(r.status, 200);
    let inst = eu.instance("ORDERS", "i1").await.expect("stored");
    assert_eq!(inst["status"], "UP");
}

#[tokio::test(start_paused = true)]
async fn c11_reregister_newer_replaces_older_is_dropped_with_204() {
    let eu = Eu::start(EurekaDevConfig::default()).await;
    eu.register("orders", &body("orders", "i1", "h")).await;
    let newer = with(
        body("orders", "i1", "h"),
        json!({"lastDirtyTimestamp": "2000", "metadata": {"v": "2"}, "ipAddr": "10.0.0.6"}),
    );
    assert_eq!(eu.register("orders", &newer).await.status, 204);
    let inst = eu.instance("ORDERS", "i1").await.expect("stored");
    assert_eq!(
        (&inst["ipAddr"], &inst["metadata"]["v"]),
        (&json!("10.0.0.6"), &json!("2"))
    );
    let older = with(
        body("orders", "i1", "h"),
        json!({"lastDirtyTimestamp": "1500", "ipAddr": "10.0.0.7"}),
    );
    assert_eq!(eu.register("orders", &older).await.status, 204);
    let inst = eu.instance("ORDERS", "i1").await.expect("stored");
    assert_eq!(inst["ipAddr"], "10.0.0.6", "older body dropped");
    assert_eq!(inst["lastDirtyTimestamp"], "2000");
}

#[tokio::test(start_paused = true)]
async fn c12_cancel_then_404_and_empty_app_vanishes() {
    let eu = Eu::start(EurekaDevConfig::default()).await;
    eu.register("orders", &body("orders", "i1", "h")).await;
    eu.register("billing", &body("billing", "b1", "h")).await;
    let r = eu.delete("/apps/ORDERS/i1").await;
    assert_eq!((r.status, r.body.len()), (200, 0));
    assert_eq!(eu.delete("/apps/ORDERS/i1").await.status, 404);
    assert_eq!(eu.get("/apps/ORDERS").await.status, 404);
    let apps = eu.get("/apps").await.json();
    let names: Vec<&str> = apps["applications"]["application"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["BILLING"]);
    let app = eu.get("/apps/billing").await;
    assert_eq!(app.status, 200);
    assert_eq!(app.json()["application"]["name"], "BILLING");
    assert_eq!(app.json()["application"]["instance"][0]["instanceId"], "b1");
}

#[tokio::test(start_paused = true)]
async fn c13_status_override_sticks_and_bad_value_is_500() {
    let eu = Eu::start(EurekaDevConfig::default()).await;
    eu.register("orders", &body("orders", "i1", "h")).await;
    let r = eu
        .put("/apps/ORDERS/i1/status?value=OUT_OF_SERVICE&lastDirtyTimestamp=1000")
        .await;
    assert_eq!(r.status, 200);
    let inst = eu.instance("ORDERS", "i1").await.expect("stored");
    assert_eq!(inst["status"], "OUT_OF_SERVICE");
    assert_eq!(inst["overriddenStatus"], "OUT_OF_SERVICE");
    let delta = eu.get("/apps/delta").await.json();
    let changed = instances_of(&delta["applications"]);
    assert_eq!(changed.len(), 1);
    assert_eq!(changed[0]["actionType"], "MODIFIED");
    // Re-registering UP (newer stamp) cannot clear the override.
    let again = with(
        body("orders", "i1", "h"),
        json!({"lastDirtyTimestamp": "3000"}),
    );
    assert_eq!(eu.register("orders", &again).await.status, 204);
    let inst = eu.instance("ORDERS", "i1").await.expect("stored");
    assert_eq!(inst["status"], "OUT_OF_SERVICE");
    // Client DOWN beats the operator's override.
    let down = with(
        body("orders", "i1", "h"),
        json!({"lastDirtyTimestamp": "4000", "status": "DOWN"}),
    );
    eu.register("orders", &down).await;
    assert_eq!(
        eu.instance("ORDERS", "i1").await.expect("stored")["status"],
        "DOWN"
    );
    assert_eq!(
        eu.put("/apps/ORDERS/i1/status?value=bogus").await.status,
        500
    );
    assert_eq!(eu.put("/apps/ORDERS/i1/status").await.status, 500);
    assert_eq!(
        eu.put("/apps/ORDERS/i1/status?value=out_of_service")
            .await
            .status,
        500
    );
    assert_eq!(
        eu.put("/apps/ORDERS/nobody/status?value=UP").await.status,
        404
    );
}

#[tokio::test(start_paused = true)]
async fn c14_delete_override_without_value_unknown_then_renew_404() {
    let eu = Eu::start(EurekaDevConfig::default()).await;
    eu.register("orders", &body("orders", "i1", "h")).await;
    eu.register("orders", &body("orders", "i2", "h")).await;
    eu.register("orders", &body("orders", "i3", "h")).await;
    for id in ["i1", "i2"] {
        let r = eu
            .put(&format!("/apps/ORDERS/{id}/status?value=OUT_OF_SERVICE"))
            .await;
        assert_eq!(r.status, 200);
    }
    // Without value: UNKNOWN, and the next heartbeat is told to re-register.
    assert_eq!(eu.delete("/apps/ORDERS/i1/status").await.status, 200);
    let inst = eu.instance("ORDERS", "i1").await.expect("stored");
    assert_eq!(inst["status"], "UNKNOWN");
    assert_eq!(inst["overriddenStatus"], "UNKNOWN");
    assert_eq!(eu.put("/apps/ORDERS/i1").await.status, 404);
    // With value=UP: UP, and heartbeats go on.
    assert_eq!(
        eu.delete("/apps/ORDERS/i2/status?value=UP").await.status,
        200
    );
    let inst = eu.instance("ORDERS", "i2").await.expect("stored");
    assert_eq!(inst["status"], "UP");
    assert_eq!(eu.put("/apps/ORDERS/i2").await.status, 200);
    // No override present: 200 and nothing changes.
    let before = eu.instance("ORDERS", "i3").await.expect("stored");
    assert_eq!(eu.delete("/apps/ORDERS/i3/status").await.status, 200);
    let after = eu.instance("ORDERS", "i3").await.expect("stored");
    assert_eq!(
        (&after["status"], &after["actionType"]),
        (&before["status"], &before["actionType"])
    );
    assert_eq!(
        eu.delete("/apps/ORDERS/i3/status?value=nope").await.status,
        500
    );
    assert_eq!(eu.delete("/apps/ORDERS/nobody/status").await.status, 404);
}

#[tokio::test(start_paused = true)]
async fn c15_metadata_put_merges() {
    let eu = Eu::start(EurekaDevConfig::default()).await;
    eu.register("orders", &body("orders", "i1", "h")).await;
    let r = eu
        .put("/apps/ORDERS/i1/metadata?k1=v1&zone=b&k1=ignored")
        .await;
    assert_eq!(r.status, 200);
    let inst = eu.instance("ORDERS", "i1").await.expect("stored");
    assert_eq!(inst["metadata"], json!({"zone": "b", "k1": "v1"}));
    assert_eq!(inst["actionType"], "ADDED");
    assert_eq!(inst["lastDirtyTimestamp"], "1000", "stamp unchanged");
    assert_eq!(eu.put("/apps/ORDERS/nobody/metadata?a=b").await.status, 404);
}

#[tokio::test(start_paused = true)]
async fn c16_hash_counts_statuses_and_delta_hash_is_full_hash() {
    let eu = Eu::start(EurekaDevConfig::default()).await;
    let empty = eu.get("/apps").await.json();
    assert_eq!(empty["applications"]["apps__hashcode"], "");
    assert_eq!(empty["applications"]["application"], json!([]));
    for id in ["a", "b", "c"] {
        eu.register("orders", &body("orders", id, "h")).await;
    }
    let down = with(body("billing", "d", "h"), json!({"status": "DOWN"}));
    eu.register("billing", &down).await;
    let full = eu.get("/apps").await.json();
    assert_eq!(full["applications"]["apps__hashcode"], "DOWN_1_UP_3_");
    assert_eq!(full["applications"]["versions__delta"], "1");
    eu.delete("/apps/ORDERS/a").await;
    let delta = eu.get("/apps/delta").await.json();
    assert_eq!(delta["applications"]["apps__hashcode"], "DOWN_1_UP_2_");
    let full = eu.get("/apps").await.json();
    assert_eq!(full["applications"]["apps__hashcode"], "DOWN_1_UP_2_");
}

#[tokio::test(start_paused = true)]
async fn c17_delta_holds_each_change_once_for_its_window() {
    let eu = Eu::start(EurekaDevConfig::default()).await;
    eu.register("orders", &body("orders", "kept", "h")).await;
    eu.register("orders", &body("orders", "gone", "h")).await;
    eu.delete("/apps/ORDERS/gone").await;
    for _ in 0..3 {
        assert_eq!(eu.put("/apps/ORDERS/kept").await.status, 200);
    }
    let delta = |v: Value| {
        let mut out: Vec<(String, String)> = instances_of(&v["applications"])
            .iter()
            .map(|i| {
                (
                    i["instanceId"].as_str().unwrap().to_owned(),
                    i["actionType"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        out.sort();
        out
    };
    let first = eu.get("/apps/delta").await.json();
    let expected = vec![
        ("gone".to_owned(), "DELETED".to_owned()),
        ("kept".to_owned(), "ADDED".to_owned()),
    ];
    assert_eq!(delta(first.clone()), expected);
    let v1: i64 = first["applications"]["versions__delta"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    // Keep `kept` alive (its lease is 90 s) while the window runs out.
    for step in [30, 30, 30, 30, 30, 30, 20] {
        advance_secs(step).await;
        assert_eq!(eu.put("/apps/ORDERS/kept").await.status, 200);
    }
    let later = eu.get("/apps/delta").await.json();
    assert_eq!(delta(later.clone()), expected, "still inside 180-210 s");
    let v2: i64 = later["applications"]["versions__delta"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(v2 > v1, "versions__delta grows");
    advance_secs(11).await;
    let pruned = eu.get("/apps/delta").await.json();
    assert_eq!(delta(pruned.clone()), vec![], "pruned by t=211 s");
    assert_eq!(pruned["applications"]["apps__hashcode"], "UP_1_");
}

#[tokio::test(start_paused = true)]
async fn c18_vips_match_exact_list_elements() {
    let eu = Eu::start(EurekaDevConfig::default()).await;
    let b = with(
        body("orders", "i1", "h"),
        json!({"vipAddress": "orders,orders-v2", "secureVipAddress": "s-orders"}),
    );
    eu.register("orders", &b).await;
    let other = with(
        body("billing", "b1", "h"),
        json!({"vipAddress": "orders-v", "secureVipAddress": null}),
    );
    eu.register("billing", &other).await;
    let ids = |v: Value| -> Vec<String> {
        instances_of(&v["applications"])
            .iter()
            .map(|i| i["instanceId"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ids(eu.get("/vips/orders-v2").await.json()), ["i1"]);
    assert_eq!(ids(eu.get("/vips/orders").await.json()), ["i1"]);
    assert_eq!(ids(eu.get("/vips/orders-v").await.json()), ["b1"]);
    assert_eq!(ids(eu.get("/svips/s-orders").await.json()), ["i1"]);
    let unknown = eu.get("/vips/nothing").await;
    assert_eq!(unknown.status, 200);
    assert_eq!(ids(unknown.json()), Vec::<String>::new());
    assert_eq!(unknown.json()["applications"]["application"], json!([]));
}

#[tokio::test(start_paused = true)]
async fn c19_lease_expiry_twice_duration_and_self_preservation() {
    // Real timing without self-preservation and with live lists.
    let eu = Eu::start(EurekaDevConfig {
        self_preservation: false,
        response_cache: None,
        ..EurekaDevConfig::real()
    })
    .await;
    eu.register("orders", &body("orders", "renewed", "h")).await;
    eu.register("orders", &body("orders", "silent", "h")).await;
    assert_eq!(eu.put("/apps/ORDERS/renewed").await.status, 200);
    let lease = eu.instance("ORDERS", "renewed").await.expect("stored")["leaseInfo"].clone();
    assert_eq!(
        lease["lastRenewalTimestamp"].as_i64().unwrap()
            - lease["registrationTimestamp"].as_i64().unwrap(),
        90_000,
        "a renewal dates the lease one duration ahead (the 2 x duration bug)"
    );
    advance_secs(119).await;
    assert_eq!(eu.listed_ids().await, ["renewed", "silent"]);
    assert!(
        eu.instance("ORDERS", "silent").await.is_none(),
        "expired leases are hidden from single reads"
    );
    advance_secs(2).await; // t = 121: the pass at 120 s evicted the silent one.
    assert_eq!(eu.listed_ids().await, ["renewed"]);
    advance_secs(58).await; // t = 179
    assert_eq!(eu.listed_ids().await, ["renewed"]);
    advance_secs(60).await; // t = 239: the pass at 180 s found it alive (180 is not > 180).
    assert_eq!(eu.listed_ids().await, ["renewed"]);
    advance_secs(2).await; // t = 241: evicted at 240 s.
    assert_eq!(eu.listed_ids().await, Vec::<String>::new());
    let delta = eu.get("/apps/delta").await.json();
    let evicted = instances_of(&delta["applications"]);
    assert!(evicted.iter().all(|i| i["actionType"] == "DELETED"));
    assert!(
        evicted[0]["leaseInfo"]["evictionTimestamp"]
            .as_i64()
            .unwrap()
            > 0
    );

    // Self-preservation on, nobody renewing: nothing is evicted.
    let eu = Eu::start(EurekaDevConfig {
        response_cache: None,
        ..EurekaDevConfig::real()
    })
    .await;
    eu.register("orders", &body("orders", "silent", "h")).await;
    advance_secs(600).await;
    assert_eq!(eu.listed_ids().await, ["silent"]);
    assert!(
        eu.instance("ORDERS", "silent").await.is_some(),
        "expiry is off while self-preservation holds"
    );
}

/// Moves the paused clock forward by `ms` milliseconds.
async fn advance_ms(ms: u64) {
    tokio::time::advance(Duration::from_millis(ms)).await;
    for _ in 0..4 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn c20_read_only_cache_keeps_lists_until_the_next_30s_boundary() {
    let eu = Eu::start(EurekaDevConfig::real()).await;
    assert_eq!(eu.listed_ids().await, Vec::<String>::new());
    eu.register("orders", &body("orders", "i1", "h")).await;
    let inst = eu
        .instance("ORDERS", "i1")
        .await
        .expect("single reads are live");
    assert_eq!(eu.listed_ids().await, Vec::<String>::new(), "cached list");
    // A key never read before is filled fresh.
    assert_eq!(eu.get("/apps/ORDERS").await.status, 200);
    let now: u64 = inst["lastUpdatedTimestamp"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let to_boundary = 30_000 - now % 30_000;
    if to_boundary > 1 {
        advance_ms(to_boundary - 1).await;
        assert_eq!(eu.listed_ids().await, Vec::<String>::new(), "1 ms before");
    }
    advance_ms(2).await;
    assert_eq!(eu.listed_ids().await, ["i1"], "refreshed at the boundary");
    // Renewals do not invalidate; a cancel shows at the following boundary.
    assert_eq!(eu.delete("/apps/ORDERS/i1").await.status, 200);
    assert_eq!(eu.listed_ids().await, ["i1"]);
    advance_ms(30_000).await;
    assert_eq!(eu.listed_ids().await, Vec::<String>::new());
}

#[tokio::test(start_paused = true)]
async fn lone_netflix_server_refuses_list_reads_at_first() {
    let eu = Eu::start(EurekaDevConfig {
        refuse_reads_for: Some(Duration::from_secs(300)),
        ..EurekaDevConfig::default()
    })
    .await;
    eu.register("orders", &body("orders", "i1", "h")).await;
    for path in ["/apps", "/apps/delta", "/apps/ORDERS", "/vips/orders"] {
        assert_eq!(eu.get(path).await.status, 403, "{path}");
    }
    assert!(
        eu.instance("ORDERS", "i1").await.is_some(),
        "not a list read"
    );
    for _ in 0..10 {
        advance_secs(30).await;
        assert_eq!(eu.put("/apps/ORDERS/i1").await.status, 200);
    }
    assert_eq!(eu.get("/apps").await.status, 200);
}

#[tokio::test(start_paused = true)]
async fn default_mode_expires_after_one_duration_within_a_second() {
    let eu = Eu::start(EurekaDevConfig::default()).await;
    let short = with(
        body("orders", "i1", "h"),
        json!({"leaseInfo": {"durationInSecs": 5}}),
    );
    eu.register("orders", &short).await;
    advance_secs(4).await;
    assert_eq!(eu.put("/apps/ORDERS/i1").await.status, 200);
    advance_secs(5).await; // t = 9: renewed at 4, expires after 9.
    assert_eq!(eu.listed_ids().await, ["i1"]);
    advance_secs(2).await; // t = 11: the pass at 10 s evicted it.
    assert_eq!(eu.listed_ids().await, Vec::<String>::new());
}

#[tokio::test(start_paused = true)]
async fn eviction_is_capped_at_15_percent_per_pass() {
    let eu = Eu::start(EurekaDevConfig::default()).await;
    for i in 0..20 {
        let b = with(
            body("orders", &format!("i{i:02}"), "h"),
            json!({"leaseInfo": {"durationInSecs": 1}}),
        );
        eu.register("orders", &b).await;
    }
    advance_secs(2).await; // one pass with all 20 expired: at most 20 - 17 = 3 go.
    assert_eq!(eu.listed_ids().await.len(), 17);
}

#[tokio::test(start_paused = true)]
async fn requests_are_recorded_with_headers_query_and_body() {
    let eu = Eu::start(EurekaDevConfig::default()).await;
    let b = body("orders", "h:orders:1", "h");
    eu.register("orders", &b).await;
    eu.put("/apps/ORDERS/h:orders:1?status=UP").await;
    let log = eu.dev.requests();
    assert_eq!(log.len(), 2);
    assert_eq!(log[0].method, "POST");
    assert_eq!(log[0].path, "/eureka/apps/orders");
    assert_eq!(log[0].header("content-type"), Some("application/json"));
    assert_eq!(
        serde_json::from_str::<Value>(&log[0].body).expect("json body"),
        b
    );
    assert_eq!(log[1].query, "status=UP");
    assert!(log[1].headers.iter().all(|(k, _)| *k == k.to_lowercase()));
}

#[tokio::test(start_paused = true)]
async fn bad_input_never_breaks_the_server() {
    let eu = Eu::start(EurekaDevConfig::default()).await;
    for (method, path, b) in [
        ("POST", "/apps/x", "\u{0}\u{ff}"),
        ("POST", "/apps/x", "{\"instance\":{\"port\":{\"$\":\"x\"}}}"),
        ("POST", "/apps/x", "{\"instance\":{\"metadata\":[1]}}"),
        ("PUT", "/apps/X/y?lastDirtyTimestamp=abc", ""),
        ("GET", "/apps/%ff%fe", ""),
        ("PATCH", "/apps/X/y", ""),
        ("GET", "/nothing/here", ""),
    ] {
        let r = eu.call(method, path, &[JSON], b).await;
        assert!(r.status >= 400, "{method} {path}: {}", r.status);
    }
    assert_eq!(eu.get("/apps").await.status, 200);
}

// ---- `syncer dev-registry --kind eureka` -----------------------------------------------

/// Spawns `syncer dev-registry ARGS` and returns it with the line it printed.
fn spawn_cli(args: &[&str]) -> (std::process::Child, String) {
    spawn_cli_with(args, std::process::Stdio::null())
}

/// As [`spawn_cli`], with stderr (the log) going to `stderr`.
fn spawn_cli_with(args: &[&str], stderr: std::process::Stdio) -> (std::process::Child, String) {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_syncer"))
        .arg("dev-registry")
        .args(args)
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("spawn syncer");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the listening line");
    (child, line.trim().to_owned())
}

#[test]
fn cli_kind_eureka_prints_its_url_and_serves() {
    for extra in [&[][..], &["--real-eureka"][..]] {
        let mut args = vec!["--kind", "eureka", "--listen", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        let (mut child, line) = spawn_cli(&args);
        let url = line
            .strip_prefix("dev registry listening on ")
            .unwrap_or_else(|| panic!("unexpected line {line:?}"))
            .to_owned();
        assert!(url.starts_with("http://127.0.0.1:") && url.ends_with("/eureka"));
        let addr: SocketAddr = url
            .trim_start_matches("http://")
            .trim_end_matches("/eureka")
            .parse()
            .expect("address");
        let r = raw_http(addr, "GET", "/eureka/apps", &[JSON], "");
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["applications"]["apps__hashcode"], "");
        child.kill().ok();
        child.wait().ok();
    }
}

#[test]
fn cli_refuses_flags_of_the_other_kind() {
    let exe = env!("CARGO_BIN_EXE_syncer");
    let cases: [(&[&str], &str); 4] = [
        (
            &["--kind", "eureka", "--lease-scale", "0.5"],
            "--lease-scale",
        ),
        (
            &["--kind", "eureka", "--real-sc", "2.x", "--no-self-register"],
            "--real-sc, --no-self-register",
        ),
        (&["--real-eureka"], "--real-eureka needs --kind eureka"),
        (&["--kind", "consul"], "consul"),
    ];
    for (args, needle) in cases {
        let out = std::process::Command::new(exe)
            .arg("dev-registry")
            .args(args)
            .args(["--listen", "127.0.0.1:0"])
            .output()
            .expect("run syncer");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}: nothing served");
    }
}

// ---- a real client ------------------------------------------------------------------------

/// PyPI's `py-eureka-client` 0.13.3, unchanged (`scripts/setup` installs it in
/// `.tools/pyeureka`), against a `syncer dev-registry --kind eureka` process: it registers,
/// renews, changes status, re-registers after its override is removed, discovers itself and a
/// peer over XML + gzip, calls the peer and an instance registered like a mirrored copy at
/// the discovered addresses, and cancels (`tests/eureka/client_check.py` prints one `OK` line
/// per step).
#[test]
fn real_python_client_registers_renews_changes_status_discovers_and_cancels() {
    use std::process::{Command, Stdio};
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = match python::py_eureka_client() {
        Ok(python) => python,
        Err(why) => {
            println!("SKIP real_python_client: py-eureka-client cannot run here: {why}");
            return;
        }
    };
    let (mut registry, line) = spawn_cli_with(
        &[
            "--kind",
            "eureka",
            "--listen",
            "127.0.0.1:0",
            "--log-level",
            "syncer::devreg::eureka=debug",
        ],
        Stdio::piped(),
    );
    let url = line
        .strip_prefix("dev registry listening on ")
        .unwrap_or_else(|| panic!("unexpected line {line:?}"))
        .to_owned();
    let registry_log = {
        let mut r = registry.stderr.take().expect("registry stderr");
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    // An instance of another app, as syncer would mirror one: the client must find it and
    // call it at the address it discovered (`--call`).
    let mirrored = std::net::TcpListener::bind("127.0.0.1:0").expect("bind mirrored");
    let mirrored_port = mirrored.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for mut conn in mirrored.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf);
            let body = "hello from the mirrored instance";
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    let registry_addr: SocketAddr = url
        .trim_start_matches("http://")
        .trim_end_matches("/eureka")
        .parse()
        .expect("address");
    let copy = with(
        body(
            "mirrored",
            &format!("127.0.0.1:mirrored:{mirrored_port}"),
            "127.0.0.1",
        ),
        json!({"ipAddr": "127.0.0.1", "port": {"$": mirrored_port, "@enabled": "true"}}),
    );
    let r = raw_http(
        registry_addr,
        "POST",
        "/eureka/apps/MIRRORED",
        &[("Content-Type", "application/json")],
        &copy.to_string(),
    );
    assert_eq!(r.status, 204);
    let mut child = Command::new(&python)
        .arg(root.join("tests/eureka/client_check.py"))
        .arg(&url)
        .args([
            "--call",
            "mirrored",
            "/hi",
            "hello from the mirrored instance",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python");
    let read_all = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let out = read_all(Box::new(child.stdout.take().expect("stdout")));
    let err = read_all(Box::new(child.stderr.take().expect("stderr")));
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait python") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            child.kill().ok();
            child.wait().ok();
            break std::process::ExitStatus::default();
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let (out, err) = (
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default(),
    );
    registry.kill().ok();
    registry.wait().ok();
    let registry_log = strip_ansi(&registry_log.join().unwrap_or_default());
    let tail: String = err
        .lines()
        .rev()
        .take(30)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        status.success(),
        "client_check failed:\n{out}\n--- stderr (tail) ---\n{tail}"
    );
    for step in [
        "OK registered PY-CHECK/127.0.0.1:py-check:9099",
        "OK renewed",
        "OK status OUT_OF_SERVICE",
        "OK override removed, re-registered UP",
        "OK discovered itself",
        "OK called peer hello from py-peer at /hello",
        "OK xml+gzip hash UP_3_",
        "OK called mirrored hello from the mirrored instance",
        "OK cancelled",
        "DONE",
    ] {
        assert!(
            out.lines().any(|l| l == step),
            "missing {step:?} in:\n{out}"
        );
    }
    // stop() cancelled: the emulator logged the client's DELETE with 200.
    let instance_path = "path=/eureka/apps/PY-CHECK/127.0.0.1%3Apy-check%3A9099 ";
    assert!(
        registry_log
            .lines()
            .any(|l| l.contains("eureka dev registry request")
                && l.contains("method=DELETE")
                && l.contains(instance_path)
                && l.contains("status=200")),
        "no DELETE of the instance answered 200 in the registry log"
    );
}

/// Removes ANSI escape sequences (in case the log is coloured).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

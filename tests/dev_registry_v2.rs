//! The dev registry's two real-SC modes (`DevRegistryConfig::real_sc_1_4_8` and
//! `DevRegistryConfig::real_sc_2`, `syncer dev-registry --real-sc 1.4.8|2.x`): one test per
//! behaviour where SC 1.4.8 and SC 2.x (v2.2.0) differ, RBAC and the read-after-write lag.
//!
//! As in `tests/dev_registry.rs`, every test starts its own registry on `127.0.0.1:0` and
//! speaks HTTP with `serde_json::Value` only; waits poll with a deadline.

use std::future::Future;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use syncer::devreg::{DevRegistry, DevRegistryConfig, RbacConfig};
use tokio::time::{Instant, sleep};

/// How long a wait for something asynchronous may take.
const DEADLINE: Duration = Duration::from_secs(8);
/// Poll period inside a deadline loop.
const POLL: Duration = Duration::from_millis(20);

/// One HTTP answer.
struct Resp {
    status: u16,
    text: String,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.text))
    }

    /// Asserts an SC error: status = code / 1000, `errorCode` a JSON string; returns the body.
    #[track_caller]
    fn assert_error(&self, code: &str) -> Value {
        let body = self.json();
        assert_eq!(body["errorCode"], code, "body: {}", self.text);
        let status: u16 = code[..3].parse().unwrap();
        assert_eq!(self.status, status, "body: {}", self.text);
        body
    }

    /// Asserts a 200 JSON answer and returns it.
    #[track_caller]
    fn ok_json(&self) -> Value {
        assert_eq!(self.status, 200, "body: {}", self.text);
        self.json()
    }

    #[track_caller]
    fn ok_id(&self, name: &str) -> String {
        self.ok_json()[name].as_str().unwrap().to_owned()
    }

    #[track_caller]
    fn assert_ok(&self) {
        assert_eq!(self.status, 200, "body: {}", self.text);
    }
}

/// A running dev registry, an HTTP client and the bearer token to send, if any.
struct Sc {
    reg: DevRegistry,
    http: reqwest::Client,
    token: Option<String>,
}

impl Sc {
    async fn with(config: DevRegistryConfig) -> Sc {
        Sc {
            reg: DevRegistry::start(config)
                .await
                .expect("start dev registry"),
            http: reqwest::Client::new(),
            token: None,
        }
    }

    /// A request to `{url}{path}` (`path` from the root, e.g. `/v4/token`).
    async fn raw(&self, method: Method, path: &str, body: Option<Value>) -> Resp {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.reg.url()));
        if let Some(token) = &self.token {
            req = req.header("Authorization", format!("Bearer {token}"));
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.expect("request");
        Resp {
            status: resp.status().as_u16(),
            text: resp.text().await.expect("body"),
        }
    }

    /// A request below `/v4/default/registry`.
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Resp {
        self.raw(method, &format!("/v4/default/registry{path}"), body)
            .await
    }

    async fn get(&self, path: &str) -> Resp {
        self.call(Method::GET, path, None).await
    }

    async fn service(&self, name: &str, version: &str) -> String {
        self.call(
            Method::POST,
            "/microservices",
            Some(json!({ "service": {
                "appId": "app", "serviceName": name, "version": version
            }})),
        )
        .await
        .ok_id("serviceId")
    }

    async fn register(&self, sid: &str, instance: Value) -> Resp {
        self.call(
            Method::POST,
            &format!("/microservices/{sid}/instances"),
            Some(json!({ "instance": instance })),
        )
        .await
    }

    async fn instance(&self, sid: &str, host: &str) -> String {
        self.register(
            sid,
            json!({ "hostName": host, "endpoints": [format!("rest://{host}:80")] }),
        )
        .await
        .ok_id("instanceId")
    }

    async fn get_instance(&self, sid: &str, iid: &str) -> Value {
        self.get(&format!("/microservices/{sid}/instances/{iid}"))
            .await
            .ok_json()["instance"]
            .clone()
    }

    /// Instance ids `GET …/microservices/{sid}/instances` answers.
    async fn listed(&self, sid: &str) -> Vec<String> {
        ids(&self
            .get(&format!("/microservices/{sid}/instances"))
            .await
            .ok_json())
    }
}

fn ids(body: &Value) -> Vec<String> {
    let mut ids: Vec<String> = body["instances"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|i| i["instanceId"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default();
    ids.sort();
    ids
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

/// SC 1.4.8 has no delete check window: an unregistered instance is gone for reads at once.
#[tokio::test]
async fn real_1_4_8_has_no_delete_window() {
    let sc = Sc::with(DevRegistryConfig::real_sc_1_4_8()).await;
    let sid = sc.service("win", "1.0.0").await;
    let iid = sc.instance(&sid, "h1").await;
    sc.call(
        Method::DELETE,
        &format!("/microservices/{sid}/instances/{iid}"),
        None,
    )
    .await
    .assert_ok();
    assert!(sc.listed(&sid).await.is_empty());
    sc.get(&format!("/microservices/{sid}/instances/{iid}"))
        .await
        .assert_error("400017");
}

/// SC 2.x keeps serving an unregistered instance until the 2 s check tick.
#[tokio::test]
async fn real_2_has_the_delete_window() {
    let sc = Sc::with(DevRegistryConfig::real_sc_2()).await;
    let sid = sc.service("win", "1.0.0").await;
    let iid = sc.instance(&sid, "h1").await;
    let deleted_at = Instant::now();
    sc.call(
        Method::DELETE,
        &format!("/microservices/{sid}/instances/{iid}"),
        None,
    )
    .await
    .assert_ok();
    assert_eq!(sc.listed(&sid).await, vec![iid.clone()]);
    eventually("the deletion to show", || async {
        sc.listed(&sid).await.is_empty()
    })
    .await;
    assert!(deleted_at.elapsed() >= Duration::from_millis(1900));
}

/// Two versions with one instance each; returns (v1 instance, v2 instance).
async fn two_versions(sc: &Sc) -> (String, String) {
    let v1 = sc.service("multi", "1.0.0").await;
    let v2 = sc.service("multi", "2.0.0").await;
    (sc.instance(&v1, "h1").await, sc.instance(&v2, "h2").await)
}

async fn find_raw(sc: &Sc, version: &str) -> Resp {
    sc.get(&format!(
        "/instances?appId=app&serviceName=multi&version={version}"
    ))
    .await
}

async fn find(sc: &Sc, version: &str) -> Vec<String> {
    ids(&find_raw(sc, version).await.ok_json())
}

/// SC 2.x's find ignores `version`; 1.4.8 applies it as a rule.
#[tokio::test]
async fn find_ignores_version_in_2x() {
    let sc = Sc::with(DevRegistryConfig::real_sc_1_4_8()).await;
    let (i1, _) = two_versions(&sc).await;
    assert_eq!(find(&sc, "1.0.0").await, vec![i1]);
    find_raw(&sc, "9.9.9").await.assert_error("400012");

    let sc = Sc::with(DevRegistryConfig::real_sc_2()).await;
    let (i1, i2) = two_versions(&sc).await;
    let mut both = vec![i1, i2];
    both.sort();
    assert_eq!(find(&sc, "1.0.0").await, both);
    assert_eq!(find(&sc, "9.9.9").await, both);
}

/// SC 2.x raises a push health check to at least interval 5 s / times 3; 1.4.8 keeps it.
#[tokio::test]
async fn push_health_check_minimum_in_2x() {
    let hc = json!({ "mode": "push", "interval": 1, "times": 1 });
    for (config, want) in [
        (DevRegistryConfig::real_sc_1_4_8(), (1, 1)),
        (DevRegistryConfig::real_sc_2(), (5, 3)),
    ] {
        let sc = Sc::with(config).await;
        let sid = sc.service("hc", "1.0.0").await;
        let iid = sc
            .register(
                &sid,
                json!({ "hostName": "h", "endpoints": ["rest://h:1"], "healthCheck": hc }),
            )
            .await
            .ok_id("instanceId");
        let got = sc.get_instance(&sid, &iid).await["healthCheck"].clone();
        assert_eq!(
            (got["interval"].clone(), got["times"].clone()),
            (json!(want.0), json!(want.1))
        );
    }
}

/// SC 2.x adds its inner properties at register and at a properties update.
#[tokio::test]
async fn inner_properties_on_every_instance() {
    let sc = Sc::with(DevRegistryConfig {
        inner_properties: [("engineID".to_owned(), "e1".to_owned())].into(),
        ..DevRegistryConfig::real_sc_2()
    })
    .await;
    let sid = sc.service("props", "1.0.0").await;
    let iid = sc
        .register(
            &sid,
            json!({ "hostName": "h", "endpoints": ["rest://h:1"], "properties": { "a": "1" } }),
        )
        .await
        .ok_id("instanceId");
    assert_eq!(
        sc.get_instance(&sid, &iid).await["properties"],
        json!({ "a": "1", "engineID": "e1" })
    );
    let props = format!("/microservices/{sid}/instances/{iid}/properties");
    sc.call(
        Method::PUT,
        &props,
        Some(json!({ "properties": { "b": "2" } })),
    )
    .await
    .assert_ok();
    assert_eq!(
        sc.get_instance(&sid, &iid).await["properties"],
        json!({ "b": "2", "engineID": "e1" })
    );

    // 1.4.8 adds nothing.
    let sc = Sc::with(DevRegistryConfig {
        inner_properties: [("engineID".to_owned(), "e1".to_owned())].into(),
        ..DevRegistryConfig::real_sc_1_4_8()
    })
    .await;
    let sid = sc.service("props", "1.0.0").await;
    let iid = sc.instance(&sid, "h").await;
    assert_eq!(sc.get_instance(&sid, &iid).await.get("properties"), None);
}

/// SC 2.x checks the instance quota before the re-register shortcut; 1.4.8 renews the
/// lease of an existing id even at the quota.
#[tokio::test]
async fn quota_before_reregister_shortcut_in_2x() {
    for (config, v2) in [
        (DevRegistryConfig::real_sc_1_4_8(), false),
        (DevRegistryConfig::real_sc_2(), true),
    ] {
        let sc = Sc::with(DevRegistryConfig {
            instance_quota: 1,
            self_register: false,
            ..config
        })
        .await;
        let sid = sc.service("quota", "1.0.0").await;
        let body = json!({ "instanceId": "fixed", "hostName": "h", "endpoints": ["rest://h:1"] });
        assert_eq!(
            sc.register(&sid, body.clone()).await.ok_id("instanceId"),
            "fixed"
        );
        let again = sc.register(&sid, body).await;
        if v2 {
            again.assert_error("400100");
        } else {
            assert_eq!(again.ok_id("instanceId"), "fixed");
        }
    }
}

/// SC 2.x's existence matches the version string exactly; 1.4.8 applies it as a rule.
#[tokio::test]
async fn exact_version_existence_in_2x() {
    let path = "/existence?type=microservice&appId=app&serviceName=exists&version=1.0.0%2B";
    let sc = Sc::with(DevRegistryConfig::real_sc_1_4_8()).await;
    let sid = sc.service("exists", "1.2.0").await;
    assert_eq!(sc.get(path).await.ok_id("serviceId"), sid);

    let sc = Sc::with(DevRegistryConfig::real_sc_2()).await;
    let sid = sc.service("exists", "1.2.0").await;
    let body = sc.get(path).await.assert_error("400026");
    assert_eq!(body["detail"], "/app/exists/1.0.0+ version mismatch.");
    let exact = "/existence?type=microservice&appId=app&serviceName=exists&version=1.2.0";
    assert_eq!(sc.get(exact).await.ok_id("serviceId"), sid);
}

/// SC 2.x hides its own service from `default/default`'s list unless `withShared=true`.
#[tokio::test]
async fn with_shared_in_2x() {
    let names = |body: Value| -> Vec<String> {
        body["services"]
            .as_array()
            .map(|l| {
                l.iter()
                    .map(|s| s["serviceName"].as_str().unwrap().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let sc = Sc::with(DevRegistryConfig::real_sc_2()).await;
    sc.service("mine", "1.0.0").await;
    assert_eq!(
        names(sc.get("/microservices").await.ok_json()),
        vec!["mine"]
    );
    let shared = names(sc.get("/microservices?withShared=true").await.ok_json());
    assert!(shared.contains(&"SERVICECENTER".to_owned()), "{shared:?}");

    let sc = Sc::with(DevRegistryConfig::real_sc_1_4_8()).await;
    sc.service("mine", "1.0.0").await;
    let listed = names(sc.get("/microservices").await.ok_json());
    assert!(listed.contains(&"SERVICECENTER".to_owned()), "{listed:?}");
}

/// SC 2.x's retire job keeps the 3 highest versions of a name and deletes the older ones
/// that have no instance.
#[tokio::test]
async fn retire_job_deletes_old_versions_without_instances() {
    let sc = Sc::with(DevRegistryConfig {
        retire_period: Duration::from_millis(200),
        ..DevRegistryConfig::real_sc_2()
    })
    .await;
    let mut ids = Vec::new();
    for v in ["1.0.0", "2.0.0", "3.0.0", "4.0.0", "5.0.0"] {
        ids.push(sc.service("old", v).await);
    }
    sc.instance(&ids[0], "h").await;
    eventually("2.0.0 to retire", || async {
        sc.get(&format!("/microservices/{}", ids[1])).await.status == 400
    })
    .await;
    sc.get(&format!("/microservices/{}", ids[1]))
        .await
        .assert_error("400012");
    for kept in [&ids[0], &ids[2], &ids[3], &ids[4]] {
        sc.get(&format!("/microservices/{kept}")).await.assert_ok();
    }
}

/// SC 2.x's batch heartbeat always answers 200 with one entry per instance.
#[tokio::test]
async fn batch_heartbeat_answer_in_2x() {
    let sc = Sc::with(DevRegistryConfig::real_sc_2()).await;
    let sid = sc.service("hb", "1.0.0").await;
    let iid = sc.instance(&sid, "h").await;
    let body = json!({ "instances": [
        { "serviceId": sid, "instanceId": iid },
        { "serviceId": sid, "instanceId": "gone" },
    ]});
    let answer = sc
        .raw(Method::PUT, "/v4/default/registry/heartbeats", Some(body))
        .await
        .ok_json();
    let list = answer["instances"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert!(
        list.iter()
            .any(|i| i["instanceId"] == "gone" && i["errMessage"] != "")
    );
}

fn rbac_config(token_ttl: Duration) -> DevRegistryConfig {
    DevRegistryConfig {
        rbac: Some(RbacConfig {
            token_ttl,
            ..RbacConfig::new("root", "Pa55word!")
        }),
        ..DevRegistryConfig::real_sc_2()
    }
}

async fn login(sc: &Sc, password: &str) -> Resp {
    sc.raw(
        Method::POST,
        "/v4/token",
        Some(json!({ "name": "root", "password": password })),
    )
    .await
}

/// RBAC: no token 401/401204, a bad header or unknown token 401/401201, a wrong password
/// 401/401202, version and health open, a valid token 200.
#[tokio::test]
async fn rbac_needs_a_token() {
    let mut sc = Sc::with(rbac_config(RbacConfig::DEFAULT_TOKEN_TTL)).await;
    sc.get("/microservices").await.assert_error("401204");
    sc.get("/version").await.assert_ok();
    sc.get("/health").await.assert_ok();
    login(&sc, "wrong").await.assert_error("401202");
    let token = login(&sc, "Pa55word!").await.ok_id("token");
    assert_eq!(token.split('.').count(), 3, "JWT-shaped: {token}");

    sc.token = Some("forged".to_owned());
    sc.get("/microservices").await.assert_error("401201");
    let bare = sc
        .http
        .get(format!(
            "{}/v4/default/registry/microservices",
            sc.reg.url()
        ))
        .header("Authorization", "Bearer")
        .send()
        .await
        .unwrap();
    assert_eq!(bare.status().as_u16(), 401);

    sc.token = Some(token);
    sc.get("/microservices").await.ok_json();
    sc.service("secured", "1.0.0").await;
    // A lifetime outside SC's 15m..24h is refused.
    sc.raw(
        Method::POST,
        "/v4/token",
        Some(json!({ "name": "root", "password": "Pa55word!", "tokenExpirationTime": "1m" })),
    )
    .await
    .assert_error("400001");

    // Without RBAC there is no login route and no check.
    let open = Sc::with(DevRegistryConfig::real_sc_2()).await;
    assert_eq!(login(&open, "x").await.status, 404);
    open.get("/microservices").await.ok_json();
}

/// RBAC: a token expires (401/401205) and a new login gives a working one.
#[tokio::test]
async fn rbac_token_expires() {
    let mut sc = Sc::with(rbac_config(Duration::from_millis(500))).await;
    sc.token = Some(login(&sc, "Pa55word!").await.ok_id("token"));
    sc.get("/microservices").await.ok_json();
    eventually("the token to expire", || async {
        sc.get("/microservices").await.status == 401
    })
    .await;
    sc.get("/microservices").await.assert_error("401205");
    sc.token = Some(login(&sc, "Pa55word!").await.ok_id("token"));
    sc.get("/microservices").await.ok_json();
}

/// Read lag: a registered instance shows in list only after the lag, while store-level
/// operations (heartbeat) see it at once.
#[tokio::test]
async fn read_lag_is_observable() {
    let lag = Duration::from_millis(300);
    let sc = Sc::with(DevRegistryConfig {
        read_lag: lag,
        ..DevRegistryConfig::real_sc_1_4_8()
    })
    .await;
    let sid = sc.service("lagged", "1.0.0").await;
    eventually("the service to show", || async {
        sc.get(&format!("/microservices/{sid}")).await.status == 200
    })
    .await;
    let registered = Instant::now();
    let iid = sc.instance(&sid, "h").await;
    assert!(sc.listed(&sid).await.is_empty(), "visible before the lag");
    sc.call(
        Method::PUT,
        &format!("/microservices/{sid}/instances/{iid}/heartbeat"),
        None,
    )
    .await
    .assert_ok();
    eventually("the instance to show", || async {
        sc.listed(&sid).await == vec![iid.clone()]
    })
    .await;
    assert!(registered.elapsed() >= lag, "{:?}", registered.elapsed());
}

/// `syncer dev-registry --real-sc 2.x` reports 2.2.0; a bare `--real-sc` means 1.4.8 and
/// says so; 2.x-only flags without `--real-sc 2.x` are refused.
#[test]
fn cli_real_sc_modes() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let exe = env!("CARGO_BIN_EXE_syncer");
    let refused = Command::new(exe)
        .args([
            "dev-registry",
            "--rbac-user",
            "root",
            "--rbac-password",
            "x",
        ])
        .output()
        .expect("run syncer");
    assert_eq!(refused.status.code(), Some(2));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    for (flags, version, warns) in [
        (vec!["--real-sc", "2.x"], "2.2.0", false),
        (vec!["--real-sc"], "1.4.8", true),
    ] {
        let mut child = Command::new(exe)
            .args(["dev-registry", "--listen", "127.0.0.1:0"])
            .args(&flags)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn syncer");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("listening line");
        let url = line
            .trim()
            .strip_prefix("dev registry listening on ")
            .unwrap_or_else(|| panic!("unexpected line {line:?}"))
            .to_owned();
        let got: Value = runtime.block_on(async {
            reqwest::get(format!("{url}/v4/default/registry/version"))
                .await
                .unwrap()
                .json()
                .await
                .unwrap()
        });
        assert_eq!(got["version"], version, "{flags:?}");
        child.kill().expect("kill");
        let out = child.wait_with_output().expect("wait");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.contains("means --real-sc 1.4.8"), warns, "{stderr}");
    }
}

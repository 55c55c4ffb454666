//! A Eureka data centre for the end-to-end tests: the in-process Eureka development registry
//! (`syncer::devreg::eureka`), which can be stopped and started again on the same address,
//! and a small client of Eureka's REST API written from the reference
//! (`shared/reference/eureka-rest-api.md`), with its own reading of the JSON: it shares no
//! code with the adapter under test, nor with the emulator.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use syncer::devreg::eureka::{EurekaDevConfig, EurekaDevHandle, spawn};
use tokio_util::sync::CancellationToken;

use super::sync::{ORIGIN, POLL};

/// One HTTP request may take this long.
const HTTP_TIMEOUT: Duration = Duration::from_secs(2);

/// One instance as Eureka lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EInst {
    /// The app, upper-cased by Eureka.
    pub app: String,
    pub instance_id: String,
    pub host_name: String,
    pub ip: String,
    pub vip: String,
    /// The port, when enabled.
    pub port: Option<u16>,
    /// The secure port, when enabled.
    pub secure_port: Option<u16>,
    pub status: String,
    pub metadata: BTreeMap<String, String>,
}

impl EInst {
    /// The `syncer.origin` metadata, if any.
    pub fn origin(&self) -> Option<&str> {
        self.metadata.get(ORIGIN).map(String::as_str)
    }

    /// Whether syncer registered it (it names an origin).
    pub fn is_copy(&self) -> bool {
        self.origin().is_some()
    }
}

impl fmt::Display for EInst {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{} {} ip={} port={:?} secure={:?} {} {:?}",
            self.app,
            self.instance_id,
            self.host_name,
            self.ip,
            self.port,
            self.secure_port,
            self.status,
            self.metadata
        )
    }
}

/// A Eureka instance to register: `host:app:port` style id, one port.
#[derive(Debug, Clone)]
pub struct NewEureka {
    pub app: String,
    pub instance_id: String,
    pub ip: String,
    pub port: u16,
    pub status: String,
    pub metadata: BTreeMap<String, String>,
}

impl NewEureka {
    /// `ip:app:port`, UP, as a Spring Cloud client registers it.
    pub fn new(app: &str, ip: &str, port: u16) -> NewEureka {
        NewEureka {
            app: app.to_owned(),
            instance_id: format!("{ip}:{}:{port}", app.to_lowercase()),
            ip: ip.to_owned(),
            port,
            status: "UP".to_owned(),
            metadata: BTreeMap::new(),
        }
    }

    pub fn metadata(mut self, key: &str, value: &str) -> NewEureka {
        self.metadata.insert(key.to_owned(), value.to_owned());
        self
    }

    /// The registration body, as the Java client writes it.
    fn body(&self) -> Value {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or_default()
            .to_string();
        json!({"instance": {
            "instanceId": self.instance_id,
            "hostName": self.ip,
            "app": self.app.to_uppercase(),
            "ipAddr": self.ip,
            "status": self.status,
            "overriddenStatus": "UNKNOWN",
            "port": {"$": self.port, "@enabled": "true"},
            "securePort": {"$": 443, "@enabled": "false"},
            "countryId": 1,
            "dataCenterInfo": {
                "@class": "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo",
                "name": "MyOwn"
            },
            "leaseInfo": {"renewalIntervalInSecs": 30, "durationInSecs": 90},
            "metadata": self.metadata,
            "vipAddress": self.app.to_lowercase(),
            "secureVipAddress": self.app.to_lowercase(),
            "homePageUrl": format!("http://{}:{}/", self.ip, self.port),
            "lastDirtyTimestamp": now,
        }})
    }
}

/// The Eureka development registry of one data centre.
pub struct EurekaReg {
    rt: tokio::runtime::Handle,
    client: reqwest::Client,
    addr: SocketAddr,
    config: EurekaDevConfig,
    running: Option<(CancellationToken, EurekaDevHandle)>,
}

impl EurekaReg {
    /// Starts a registry with `config` on `addr` (port 0: a free one).
    pub fn start_with(
        rt: &tokio::runtime::Runtime,
        addr: SocketAddr,
        config: EurekaDevConfig,
    ) -> EurekaReg {
        let client = reqwest::Client::builder()
            .timeout(HTTP_TIMEOUT)
            .pool_max_idle_per_host(0)
            .build()
            .expect("build an HTTP client");
        let mut registry = EurekaReg {
            rt: rt.handle().clone(),
            client,
            addr,
            config,
            running: None,
        };
        registry.start_again();
        registry
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ip:port/eureka`, what `--sc-addr` names.
    pub fn url(&self) -> String {
        format!("http://{}/eureka", self.addr)
    }

    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// The requests the registry received so far (method, path, headers, body).
    pub fn requests(&self) -> Vec<syncer::devreg::eureka::RecordedRequest> {
        self.running
            .as_ref()
            .map(|(_, handle)| handle.requests())
            .unwrap_or_default()
    }

    /// Stops the registry (its data is lost) and waits until it no longer serves.
    pub fn stop(&mut self) {
        let Some((token, handle)) = self.running.take() else {
            return;
        };
        token.cancel();
        let stopped = self.rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(10), handle.stopped()).await
        });
        assert!(
            stopped.is_ok(),
            "the Eureka registry at {} did not stop within 10 s",
            self.addr
        );
    }

    /// Starts an empty registry on the same address again (port 0 the first time).
    pub fn start_again(&mut self) {
        assert!(self.running.is_none(), "the registry is running");
        let addr = self.addr;
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match self.rt.block_on(tokio::net::TcpListener::bind(addr)) {
                Ok(listener) => break listener,
                Err(e) => {
                    assert!(
                        Instant::now() < deadline,
                        "cannot bind the Eureka registry to {addr} again: {e}"
                    );
                    std::thread::sleep(POLL);
                }
            }
        };
        let token = CancellationToken::new();
        let handle = self
            .rt
            .block_on(spawn(listener, self.config.clone(), token.clone()));
        self.addr = handle.addr();
        self.running = Some((token, handle));
    }

    /// Sends a request to `{base}{path}` (JSON in and out); the answer's status and body.
    pub fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, String), String> {
        let url = format!("{}{path}", self.url());
        self.rt.block_on(async {
            let mut request = self
                .client
                .request(method.clone(), &url)
                .header("Accept", "application/json");
            if let Some(body) = body {
                request = request.json(&body);
            }
            let response = request
                .send()
                .await
                .map_err(|e| format!("{method} {url}: {e}"))?;
            let status = response.status().as_u16();
            let text = response
                .text()
                .await
                .map_err(|e| format!("{method} {url}: reading the body: {e}"))?;
            Ok((status, text))
        })
    }

    fn expect(&self, method: reqwest::Method, path: &str, body: Option<Value>, want: u16) {
        let (status, text) = self
            .call(method.clone(), path, body)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(status, want, "{method} {path}: {text}");
    }

    /// Registers `new` (expects 204).
    pub fn register(&self, new: &NewEureka) {
        self.expect(
            reqwest::Method::POST,
            &format!("/apps/{}", new.app.to_uppercase()),
            Some(new.body()),
            204,
        );
    }

    /// Renews the lease of `app/id` (expects 200).
    pub fn renew(&self, app: &str, id: &str) {
        self.expect(
            reqwest::Method::PUT,
            &format!("/apps/{}/{}", app.to_uppercase(), id),
            None,
            200,
        );
    }

    /// An operator's status override (`PUT …/status?value=`), expects 200.
    pub fn override_status(&self, app: &str, id: &str, status: &str) {
        self.expect(
            reqwest::Method::PUT,
            &format!("/apps/{}/{}/status?value={status}", app.to_uppercase(), id),
            None,
            200,
        );
    }

    /// Removes the override, falling back to `status` (`DELETE …/status?value=`).
    pub fn clear_override(&self, app: &str, id: &str, status: &str) {
        self.expect(
            reqwest::Method::DELETE,
            &format!("/apps/{}/{}/status?value={status}", app.to_uppercase(), id),
            None,
            200,
        );
    }

    /// Cancels `app/id` (expects 200).
    pub fn unregister(&self, app: &str, id: &str) {
        self.expect(
            reqwest::Method::DELETE,
            &format!("/apps/{}/{}", app.to_uppercase(), id),
            None,
            200,
        );
    }

    /// Every instance of every app (`GET /apps`).
    pub fn instances(&self) -> Result<Vec<EInst>, String> {
        let (status, text) = self.call(reqwest::Method::GET, "/apps", None)?;
        if status != 200 {
            return Err(format!("GET /apps: {status} {text}"));
        }
        let v: Value = serde_json::from_str(&text).map_err(|e| format!("GET /apps: {e}"))?;
        let mut out = Vec::new();
        for app in as_list(&v["applications"]["application"]) {
            for i in as_list(&app["instance"]) {
                out.push(read_instance(i)?);
            }
        }
        out.sort_by(|a, b| (&a.app, &a.instance_id).cmp(&(&b.app, &b.instance_id)));
        Ok(out)
    }

    /// [`EurekaReg::instances`], empty when the registry does not answer.
    pub fn list(&self) -> Vec<EInst> {
        self.instances().unwrap_or_default()
    }

    /// The instances syncer registered.
    pub fn copies(&self) -> Vec<EInst> {
        self.list().into_iter().filter(EInst::is_copy).collect()
    }

    /// The instances nobody mirrored here.
    pub fn locals(&self) -> Vec<EInst> {
        self.list().into_iter().filter(|i| !i.is_copy()).collect()
    }
}

impl Drop for EurekaReg {
    fn drop(&mut self) {
        if let Some((token, _)) = self.running.take() {
            token.cancel();
        }
    }
}

/// An array, or a bare object standing for a one-element array (old servers), or nothing.
fn as_list(v: &Value) -> Vec<&Value> {
    match v {
        Value::Array(items) => items.iter().collect(),
        Value::Object(_) => vec![v],
        _ => Vec::new(),
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => String::new(),
    }
}

/// A port object `{"$": 8080, "@enabled": "true"}`: the port when enabled.
fn port(v: &Value) -> Option<u16> {
    let enabled = text(&v["@enabled"]) == "true";
    let number = text(&v["$"]).parse::<u16>().ok()?;
    enabled.then_some(number)
}

fn read_instance(v: &Value) -> Result<EInst, String> {
    let metadata = match &v["metadata"] {
        Value::Object(map) => map
            .iter()
            .filter(|(k, _)| *k != "@class")
            .map(|(k, v)| (k.clone(), text(v)))
            .collect(),
        _ => BTreeMap::new(),
    };
    let instance_id = text(&v["instanceId"]);
    if instance_id.is_empty() {
        return Err(format!("an instance without instanceId: {v}"));
    }
    Ok(EInst {
        app: text(&v["app"]),
        instance_id,
        host_name: text(&v["hostName"]),
        ip: text(&v["ipAddr"]),
        vip: text(&v["vipAddress"]),
        port: port(&v["port"]),
        secure_port: port(&v["securePort"]),
        status: text(&v["status"]),
        metadata,
    })
}

//! Harness of the end-to-end sync tests (`tests/sync.rs`): in-process dev registries that can
//! be stopped and started again on the same address, real `syncer daemon` processes (one per
//! data centre, all in one gossip pool), small JSON helpers for the registry's v4 REST API,
//! and waits that poll with a deadline and print every registry and daemon log on failure.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use syncer::devreg::{DevRegistryConfig, DevRegistryHandle, spawn};
use tokio::runtime::Runtime;
use tokio_util::sync::CancellationToken;

use super::eureka::EurekaReg;
use super::{Daemon, syncer};

/// The property every copy carries: its origin data centre.
pub const ORIGIN: &str = "syncer.origin";
/// The prefix of every copy's instance id.
pub const COPY_PREFIX: &str = "syncer-";
/// How long a change may take to reach every data centre.
pub const SYNC_DEADLINE: Duration = Duration::from_secs(15);
/// Pause between two looks at the registries.
pub const POLL: Duration = Duration::from_millis(20);
/// One HTTP request to a registry or an admin endpoint may take this long.
const HTTP_TIMEOUT: Duration = Duration::from_secs(2);
/// Log lines of each daemon shown in a failure report.
const LOG_TAIL: usize = 150;
/// The default flags of every test daemon (fast timing for one machine).
pub const FAST: [&str; 10] = [
    "--copy-lease",
    "3s",
    "--origin-grace",
    "2s",
    "--anti-entropy-interval",
    "500ms",
    "--poll-interval",
    "50ms",
    "--gossip-profile",
    "local",
];

/// One instance as a registry lists it, with the service it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inst {
    pub service_id: String,
    pub app: String,
    pub name: String,
    pub version: String,
    pub instance_id: String,
    pub host_name: String,
    pub endpoints: Vec<String>,
    pub status: String,
    pub properties: BTreeMap<String, String>,
}

impl Inst {
    /// The `syncer.origin` property, if any.
    pub fn origin(&self) -> Option<&str> {
        self.properties.get(ORIGIN).map(String::as_str)
    }

    /// Whether syncer registered it: its id has the copy prefix or it carries the origin mark.
    pub fn is_copy(&self) -> bool {
        self.instance_id.starts_with(COPY_PREFIX) || self.origin().is_some()
    }
}

impl std::fmt::Display for Inst {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{}/{} ({}) instance {} host {} endpoints {:?} status {} properties {:?}",
            self.app,
            self.name,
            self.version,
            self.service_id,
            self.instance_id,
            self.host_name,
            self.endpoints,
            self.status,
            self.properties
        )
    }
}

/// What to register.
#[derive(Debug, Clone)]
pub struct NewInstance {
    /// Empty: the registry chooses.
    pub instance_id: String,
    pub host_name: String,
    pub endpoints: Vec<String>,
    pub properties: BTreeMap<String, String>,
}

impl NewInstance {
    pub fn new(host_name: &str, endpoint: &str) -> NewInstance {
        NewInstance {
            instance_id: String::new(),
            host_name: host_name.to_owned(),
            endpoints: vec![endpoint.to_owned()],
            properties: BTreeMap::new(),
        }
    }

    pub fn id(mut self, instance_id: &str) -> NewInstance {
        self.instance_id = instance_id.to_owned();
        self
    }

    pub fn property(mut self, key: &str, value: &str) -> NewInstance {
        self.properties.insert(key.to_owned(), value.to_owned());
        self
    }
}

/// `{"k":"v",...}` as a map.
pub fn props(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// A dev registry running in the test's runtime, in `default/default` over HTTP.
pub struct Registry {
    rt: tokio::runtime::Handle,
    client: reqwest::Client,
    addr: SocketAddr,
    /// The settings it runs with (again after a restart).
    config: DevRegistryConfig,
    /// The test's own RBAC token, fetched at the first call (RBAC registries only).
    token: std::sync::Mutex<Option<String>>,
    running: Option<(CancellationToken, DevRegistryHandle)>,
}

impl Registry {
    /// Starts a registry on `addr` (port 0: a free one).
    pub fn start(rt: &Runtime, addr: SocketAddr) -> Registry {
        Registry::start_with(rt, addr, DevRegistryConfig::default())
    }

    /// Starts a registry with `config` on `addr` (port 0: a free one). With RBAC the test's
    /// own calls log in with the configured account.
    pub fn start_with(rt: &Runtime, addr: SocketAddr, config: DevRegistryConfig) -> Registry {
        let client = reqwest::Client::builder()
            .timeout(HTTP_TIMEOUT)
            // No pooled connections: a restarted registry must not meet stale ones.
            .pool_max_idle_per_host(0)
            .build()
            .expect("build an HTTP client");
        let mut registry = Registry {
            rt: rt.handle().clone(),
            client,
            addr,
            config,
            token: std::sync::Mutex::new(None),
            running: None,
        };
        registry.start_again();
        registry
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ip:port`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// Stops the registry (all its data is lost) and waits until it no longer serves.
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
            "the dev registry at {} did not stop within 10 s",
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
                        "cannot bind the dev registry to {addr} again: {e}"
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
        *self.token.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// The `Authorization` header value of the test's calls: a token of one hour (RBAC
    /// registries), fetched once per run of the registry.
    async fn bearer(&self) -> Result<Option<String>, String> {
        let Some(rbac) = &self.config.rbac else {
            return Ok(None);
        };
        if let Some(token) = self.token.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            return Ok(Some(format!("Bearer {token}")));
        }
        let url = format!("{}/v4/token", self.url());
        let body =
            json!({"name": rbac.user, "password": rbac.password, "tokenExpirationTime": "1h"});
        let response = self
            .client
            .post(&url)
            .json(&body)
            .send()
            .await
            .map_err(|e| format!("POST {url}: {e}"))?;
        let text = response
            .text()
            .await
            .map_err(|e| format!("POST {url}: {e}"))?;
        let v: Value =
            serde_json::from_str(&text).map_err(|e| format!("POST {url}: {e}: {text}"))?;
        let token = v["token"]
            .as_str()
            .ok_or_else(|| format!("POST {url}: no token in {text}"))?
            .to_owned();
        *self.token.lock().unwrap_or_else(|p| p.into_inner()) = Some(token.clone());
        Ok(Some(format!("Bearer {token}")))
    }

    fn path(&self, path: &str) -> String {
        format!("{}/v4/default/registry{path}", self.url())
    }

    /// Sends a request; the answer's status and body.
    fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, String), String> {
        let url = self.path(path);
        self.rt.block_on(async {
            let mut request = self.client.request(method.clone(), &url);
            if let Some(bearer) = self.bearer().await? {
                request = request.header("Authorization", bearer);
            }
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

    /// Sends a request to `/v4/default/registry{path}`; the answer's status and body.
    pub fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, String) {
        self.call(method, path, body)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// `GET /v4/default/registry{path}` as consumer service `consumer` (`X-ConsumerId`);
    /// the answer's status and body.
    pub fn get_as(&self, consumer: &str, path: &str) -> (u16, String) {
        let url = self.path(path);
        self.rt.block_on(async {
            let response = self
                .client
                .get(&url)
                .header("x-consumerid", consumer)
                .send()
                .await
                .unwrap_or_else(|e| panic!("GET {url}: {e}"));
            let status = response.status().as_u16();
            (status, response.text().await.unwrap_or_default())
        })
    }

    /// A request that must answer 200; its body.
    fn must(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> String {
        let what = format!("{method} {path}");
        match self.call(method, path, body) {
            Ok((200, text)) => text,
            Ok((status, text)) => panic!("{what} at {}: {status} {text}", self.url()),
            Err(e) => panic!("{e}"),
        }
    }

    /// `GET /v4/default/registry{path}` answered with 200: its JSON body.
    pub fn get_json(&self, path: &str) -> Result<Value, String> {
        match self.call(reqwest::Method::GET, path, None)? {
            (200, text) => {
                serde_json::from_str(&text).map_err(|e| format!("GET {path}: {e}: {text}"))
            }
            (status, text) => Err(format!("GET {path}: {status} {text}")),
        }
    }

    /// Creates (or finds) the service `app/name/version`; returns its id.
    pub fn create_service(&self, app: &str, name: &str, version: &str) -> String {
        let body = json!({"service": {"appId": app, "serviceName": name, "version": version}});
        let text = self.must(reqwest::Method::POST, "/microservices", Some(body));
        let v: Value = serde_json::from_str(&text).expect("create service answers JSON");
        v["serviceId"]
            .as_str()
            .unwrap_or_else(|| panic!("no serviceId in {text}"))
            .to_owned()
    }

    /// Creates (or finds) the service `app/name/version` with `properties` in the create body;
    /// returns its id.
    pub fn create_service_with(
        &self,
        app: &str,
        name: &str,
        version: &str,
        properties: &BTreeMap<String, String>,
    ) -> String {
        let body = json!({"service": {
            "appId": app, "serviceName": name, "version": version, "properties": properties,
        }});
        let text = self.must(reqwest::Method::POST, "/microservices", Some(body));
        let v: Value = serde_json::from_str(&text).expect("create service answers JSON");
        v["serviceId"]
            .as_str()
            .unwrap_or_else(|| panic!("no serviceId in {text}"))
            .to_owned()
    }

    /// PUTs the properties of service `service_id`; the answer's status and body.
    pub fn set_service_properties(
        &self,
        service_id: &str,
        properties: &BTreeMap<String, String>,
    ) -> (u16, String) {
        self.call(
            reqwest::Method::PUT,
            &format!("/microservices/{service_id}/properties"),
            Some(json!({ "properties": properties })),
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    /// The properties of the service named `name` (the first one found), if there is one.
    pub fn service_properties(&self, name: &str) -> Option<BTreeMap<String, String>> {
        let (status, text) = self
            .call(reqwest::Method::GET, "/microservices", None)
            .ok()?;
        if status != 200 {
            return None;
        }
        let services: Value = serde_json::from_str(&text).ok()?;
        let service = services["services"]
            .as_array()?
            .iter()
            .find(|s| s["serviceName"] == name)?;
        Some(
            service["properties"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect(),
        )
    }

    /// Registers an instance (default lease of 120 s: longer than any test); returns its id.
    pub fn register(&self, service_id: &str, new: &NewInstance) -> String {
        let mut instance = json!({
            "hostName": new.host_name,
            "endpoints": new.endpoints,
            "status": "UP",
            "properties": new.properties,
        });
        if !new.instance_id.is_empty() {
            instance["instanceId"] = json!(new.instance_id);
        }
        let text = self.must(
            reqwest::Method::POST,
            &format!("/microservices/{service_id}/instances"),
            Some(json!({ "instance": instance })),
        );
        let v: Value = serde_json::from_str(&text).expect("register answers JSON");
        v["instanceId"]
            .as_str()
            .unwrap_or_else(|| panic!("no instanceId in {text}"))
            .to_owned()
    }

    pub fn set_status(&self, service_id: &str, instance_id: &str, status: &str) {
        self.must(
            reqwest::Method::PUT,
            &format!("/microservices/{service_id}/instances/{instance_id}/status?value={status}"),
            None,
        );
    }

    pub fn set_properties(
        &self,
        service_id: &str,
        instance_id: &str,
        properties: &BTreeMap<String, String>,
    ) {
        self.must(
            reqwest::Method::PUT,
            &format!("/microservices/{service_id}/instances/{instance_id}/properties"),
            Some(json!({ "properties": properties })),
        );
    }

    pub fn unregister(&self, service_id: &str, instance_id: &str) {
        self.must(
            reqwest::Method::DELETE,
            &format!("/microservices/{service_id}/instances/{instance_id}"),
            None,
        );
    }

    /// Every instance of every service of `default/default` except SC's own.
    pub fn instances(&self) -> Result<Vec<Inst>, String> {
        let (status, text) = self.call(reqwest::Method::GET, "/microservices", None)?;
        if status != 200 {
            return Err(format!("list services: {status} {text}"));
        }
        let services: Value =
            serde_json::from_str(&text).map_err(|e| format!("list services: {e}: {text}"))?;
        let mut out = Vec::new();
        for service in services["services"].as_array().into_iter().flatten() {
            let field = |key: &str| service[key].as_str().unwrap_or_default().to_owned();
            if field("serviceName") == "SERVICECENTER" {
                continue;
            }
            let service_id = field("serviceId");
            let (status, text) = self.call(
                reqwest::Method::GET,
                &format!("/microservices/{service_id}/instances"),
                None,
            )?;
            if status != 200 {
                // Deleted between the two calls.
                continue;
            }
            let instances: Value = serde_json::from_str(&text)
                .map_err(|e| format!("list instances of {service_id}: {e}: {text}"))?;
            for i in instances["instances"].as_array().into_iter().flatten() {
                let text_of = |key: &str| i[key].as_str().unwrap_or_default().to_owned();
                out.push(Inst {
                    service_id: service_id.clone(),
                    app: field("appId"),
                    name: field("serviceName"),
                    version: field("version"),
                    instance_id: text_of("instanceId"),
                    host_name: text_of("hostName"),
                    endpoints: i["endpoints"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|e| e.as_str().map(str::to_owned))
                        .collect(),
                    status: text_of("status"),
                    properties: i["properties"]
                        .as_object()
                        .into_iter()
                        .flatten()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                        .collect(),
                });
            }
        }
        out.sort_by(|a, b| a.instance_id.cmp(&b.instance_id));
        Ok(out)
    }

    /// [`Registry::instances`], empty when the registry does not answer.
    pub fn list(&self) -> Vec<Inst> {
        self.instances().unwrap_or_default()
    }

    /// The copies syncer registered here.
    pub fn copies(&self) -> Vec<Inst> {
        self.list().into_iter().filter(Inst::is_copy).collect()
    }

    /// The instances that are not copies.
    pub fn locals(&self) -> Vec<Inst> {
        self.list().into_iter().filter(|i| !i.is_copy()).collect()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        if let Some((token, _)) = self.running.take() {
            token.cancel();
        }
    }
}

/// A running `syncer daemon` and the addresses it reported as ready.
pub struct Node {
    pub daemon: Daemon,
    pub gossip: String,
    pub rpc: String,
    pub admin: String,
}

/// One data centre: a registry and (while it runs) its syncer.
pub struct Dc {
    /// The cluster name, `dc1`, `dc2`, ...
    pub name: String,
    /// Loopback address of its syncer's listeners.
    pub ip: String,
    pub registry: DcRegistry,
    pub data_dir: PathBuf,
    /// Flags of this data centre's syncer only (after the world's).
    pub flags: Vec<String>,
    /// Environment variables of this data centre's syncer only.
    pub env: Vec<(String, String)>,
    /// The `--sc-addr` of its syncer when not its registry's address (a forwarder).
    pub sc_addr: Option<String>,
    pub node: Option<Node>,
    /// Log lines of earlier runs of this data centre's syncer.
    pub old_logs: Vec<String>,
}

/// The registry of one data centre: a ServiceComb or a Eureka development registry.
pub enum DcRegistry {
    ServiceComb(Registry),
    Eureka(EurekaReg),
}

impl DcRegistry {
    /// What its syncer's `--sc-addr` names.
    pub fn url(&self) -> String {
        match self {
            DcRegistry::ServiceComb(r) => r.url(),
            DcRegistry::Eureka(r) => r.url(),
        }
    }

    pub fn is_running(&self) -> bool {
        match self {
            DcRegistry::ServiceComb(r) => r.is_running(),
            DcRegistry::Eureka(r) => r.is_running(),
        }
    }

    /// One line per instance, for failure reports.
    fn lines(&self) -> Result<Vec<String>, String> {
        match self {
            DcRegistry::ServiceComb(r) => {
                Ok(r.instances()?.iter().map(|i| i.to_string()).collect())
            }
            DcRegistry::Eureka(r) => Ok(r.instances()?.iter().map(|i| i.to_string()).collect()),
        }
    }
}

/// How one data centre of [`World::start_each`] runs.
#[derive(Clone, Debug, Default)]
pub struct DcSetup {
    /// Its dev registry's settings.
    pub registry: DevRegistryConfig,
    /// A Eureka development registry with these settings instead of a ServiceComb one (its
    /// syncer runs with `--sc-plugin eureka`).
    pub eureka: Option<syncer::devreg::eureka::EurekaDevConfig>,
    /// Flags given to its syncer only.
    pub flags: Vec<String>,
    /// Environment variables given to its syncer only.
    pub env: Vec<(String, String)>,
}

impl DcSetup {
    /// A data centre whose registry is a Eureka (the emulator's defaults).
    pub fn eureka() -> DcSetup {
        DcSetup {
            eureka: Some(syncer::devreg::eureka::EurekaDevConfig::default()),
            ..DcSetup::default()
        }
    }
}

/// Several data centres whose syncers form one gossip pool.
pub struct World {
    /// Flags added to every daemon's command line.
    extra: Vec<String>,
    pub dcs: Vec<Dc>,
    /// Runs the registries and the HTTP and gRPC clients.
    pub rt: Runtime,
    pub dir: tempfile::TempDir,
}

impl World {
    /// `n` data centres `dc1..dcN` (syncers on 127.0.0.1..N), each with its own dev registry
    /// and a syncer started with the fast flags plus `extra`; all syncers join dc1's.
    pub fn start(n: usize, extra: &[&str]) -> World {
        World::start_each(vec![DcSetup::default(); n], extra)
    }

    /// One data centre per entry of `setups`, each with its registry's settings and its
    /// syncer's own flags; otherwise as [`World::start`].
    pub fn start_each(setups: Vec<DcSetup>, extra: &[&str]) -> World {
        let mut world = World::prepare_each(setups, extra);
        for i in 0..world.dcs.len() {
            world.start_daemon(i);
        }
        world
    }

    /// [`World::start_each`] without starting the syncers: the test starts each with
    /// [`World::start_daemon`] once it has set up what they connect to.
    pub fn prepare_each(setups: Vec<DcSetup>, extra: &[&str]) -> World {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("build a runtime");
        let dir = tempfile::Builder::new()
            .prefix("syncer-sync-")
            .tempdir()
            .expect("create a temporary directory");
        let mut dcs = Vec::new();
        for (k, setup) in (1..).zip(setups) {
            let name = format!("dc{k}");
            let any_port = SocketAddr::from(([127, 0, 0, 1], 0));
            let registry = match setup.eureka {
                Some(config) => DcRegistry::Eureka(EurekaReg::start_with(&rt, any_port, config)),
                None => {
                    DcRegistry::ServiceComb(Registry::start_with(&rt, any_port, setup.registry))
                }
            };
            dcs.push(Dc {
                ip: format!("127.0.0.{k}"),
                registry,
                data_dir: dir.path().join(&name),
                flags: setup.flags,
                env: setup.env,
                sc_addr: None,
                name,
                node: None,
                old_logs: Vec::new(),
            });
        }
        World {
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
            dcs,
            rt,
            dir,
        }
    }

    /// The ServiceComb registry of data centre `i` (0-based: `reg(0)` is dc1's).
    pub fn reg(&self, i: usize) -> &Registry {
        match &self.dcs[i].registry {
            DcRegistry::ServiceComb(r) => r,
            DcRegistry::Eureka(_) => panic!("{}'s registry is a Eureka", self.dcs[i].name),
        }
    }

    /// The ServiceComb registry of data centre `i`, to stop and start it.
    pub fn reg_mut(&mut self, i: usize) -> &mut Registry {
        let dc = &mut self.dcs[i];
        match &mut dc.registry {
            DcRegistry::ServiceComb(r) => r,
            DcRegistry::Eureka(_) => panic!("{}'s registry is a Eureka", dc.name),
        }
    }

    /// The Eureka registry of data centre `i`.
    pub fn eureka(&self, i: usize) -> &EurekaReg {
        match &self.dcs[i].registry {
            DcRegistry::Eureka(r) => r,
            DcRegistry::ServiceComb(_) => {
                panic!("{}'s registry is a ServiceComb", self.dcs[i].name)
            }
        }
    }

    /// The running syncer of data centre `i`.
    pub fn node(&self, i: usize) -> &Node {
        self.dcs[i]
            .node
            .as_ref()
            .unwrap_or_else(|| panic!("{}'s syncer is not running", self.dcs[i].name))
    }

    /// Starts (or starts again, on the same data directory) the syncer of data centre `i`,
    /// joining the gossip address of the first other data centre whose syncer runs.
    pub fn start_daemon(&mut self, i: usize) {
        assert!(
            self.dcs[i].node.is_none(),
            "{} runs already",
            self.dcs[i].name
        );
        let join = self
            .dcs
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .find_map(|(_, dc)| dc.node.as_ref().map(|n| n.gossip.clone()));
        let dc = &self.dcs[i];
        let ip = &dc.ip;
        let mut cmd = syncer(self.dir.path());
        cmd.arg("daemon")
            .args([
                "--sc-addr",
                dc.sc_addr.as_deref().unwrap_or(&dc.registry.url()),
            ])
            .args(["--bind-addr", &format!("{ip}:0")])
            .args(["--rpc-addr", &format!("{ip}:0")])
            .args(["--admin-addr", &format!("{ip}:0")])
            .args(["--node", &format!("{}-a", dc.name)])
            .args(["--cluster-name", &dc.name])
            .arg("--data-dir")
            .arg(&dc.data_dir)
            .args(FAST)
            .args(["--log-format", "json"])
            .args(["--log-level", "info,syncer::sync=debug"])
            .args(&self.extra)
            .args(&dc.flags)
            .envs(dc.env.iter().map(|(k, v)| (k, v)));
        if matches!(dc.registry, DcRegistry::Eureka(_)) {
            cmd.args(["--sc-plugin", "eureka"]);
        }
        if let Some(join) = join {
            cmd.args(["--join-addr", &join]);
        }
        let mut daemon = Daemon::spawn(cmd);
        let ready = daemon.wait_ready();
        let field = |key: &str| ready[key].as_str().unwrap_or_default().to_owned();
        self.dcs[i].node = Some(Node {
            gossip: field("gossip_addr"),
            rpc: field("rpc_addr"),
            admin: field("admin_addr"),
            daemon,
        });
    }

    /// Sends `signal` (`KILL`, `TERM`) to the syncer of data centre `i` and waits for it to
    /// exit; its log is kept for failure reports.
    pub fn stop_daemon(&mut self, i: usize, signal: &str) -> std::process::ExitStatus {
        let dc = &mut self.dcs[i];
        let mut node = dc
            .node
            .take()
            .unwrap_or_else(|| panic!("{}'s syncer is not running", dc.name));
        node.daemon.signal(signal);
        let status = node.daemon.wait_exit();
        dc.old_logs.append(&mut node.daemon.seen);
        dc.old_logs
            .push(format!("---- exited ({status}) after SIG{signal} ----"));
        status
    }

    /// Polls `check` every 20 ms until it holds; after `deadline` fails with [`World::fail`].
    pub fn wait_until(
        &mut self,
        what: &str,
        deadline: Duration,
        mut check: impl FnMut(&World) -> bool,
    ) {
        let until = Instant::now() + deadline;
        while !check(self) {
            if Instant::now() > until {
                self.fail(&format!("timed out after {deadline:?} waiting for {what}"));
            }
            std::thread::sleep(POLL);
        }
    }

    /// Asserts `condition`, else fails with [`World::fail`].
    pub fn check(&mut self, condition: bool, what: impl FnOnce() -> String) {
        if !condition {
            let message = what();
            self.fail(&message);
        }
    }

    /// Panics with `message`, every registry's contents and the tail of every syncer's log.
    pub fn fail(&mut self, message: &str) -> ! {
        panic!("{message}\n{}", self.report());
    }

    /// Every registry's instances and the last lines of every syncer's log.
    pub fn report(&mut self) -> String {
        let mut out = String::new();
        for dc in &mut self.dcs {
            let _ = writeln!(out, "==== {} registry {}", dc.name, dc.registry.url());
            if dc.registry.is_running() {
                match dc.registry.lines() {
                    Ok(list) if list.is_empty() => out.push_str("  (no instances)\n"),
                    Ok(list) => {
                        for i in list {
                            let _ = writeln!(out, "  {i}");
                        }
                    }
                    Err(e) => {
                        let _ = writeln!(out, "  cannot list: {e}");
                    }
                }
            } else {
                out.push_str("  (stopped)\n");
            }
            let mut lines = dc.old_logs.clone();
            match dc.node.as_mut() {
                Some(node) => {
                    node.daemon.drain();
                    lines.extend(node.daemon.seen.iter().cloned());
                    let _ = writeln!(
                        out,
                        "==== {} syncer (gossip {}, rpc {}, admin {}), last {LOG_TAIL} log lines",
                        dc.name, node.gossip, node.rpc, node.admin
                    );
                }
                None => {
                    let _ = writeln!(
                        out,
                        "==== {} syncer (not running), last {LOG_TAIL} log lines",
                        dc.name
                    );
                }
            }
            for line in &lines[lines.len().saturating_sub(LOG_TAIL)..] {
                let _ = writeln!(out, "  {line}");
            }
        }
        out
    }

    /// The text of `/metrics` of data centre `i`'s syncer (empty when it does not answer).
    pub fn metrics(&self, i: usize) -> String {
        self.admin_get(i, "/metrics")
    }

    /// The body of `/health` of data centre `i`'s syncer (empty when it does not answer).
    pub fn health(&self, i: usize) -> String {
        self.admin_get(i, "/health")
    }

    fn admin_get(&self, i: usize, path: &str) -> String {
        let url = format!("http://{}{path}", self.node(i).admin);
        self.rt.block_on(async {
            let client = reqwest::Client::builder()
                .timeout(HTTP_TIMEOUT)
                .build()
                .expect("build an HTTP client");
            match client.get(&url).send().await {
                Ok(response) => response.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            }
        })
    }
}

/// The sum of the samples of `name` (e.g. `syncer_sync_rpc_rejected_total`) whose labels
/// contain every one of `labels` (e.g. `rpc="push"`).
pub fn metric_sum(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, label_text) = match series.split_once('{') {
                Some((metric, rest)) => (metric, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            if metric != name || !labels.iter().all(|l| label_text.contains(l)) {
                return None;
            }
            value.parse::<f64>().ok()
        })
        .sum()
}

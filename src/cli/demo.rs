//! `syncer demo`: several data centres in one process, for a first look.
//!
//! Each data centre is an in-memory dev registry ([`crate::devreg`]) and a syncer node
//! ([`crate::node`]) next to it, all on 127.0.0.1 and joined into one gossip pool. The demo
//! registers a sample instance in the first data centre, reports how long its copy took to
//! appear in every other one, then prints paste-ready `curl` lines and keeps running until
//! SIGINT/SIGTERM, when it stops every node and registry and removes its data directories.
//!
//! Ports are memorable when free: data centre `i` (0-based) uses `base + 100 i` for its
//! registry and `+ 90`, `+ 91`, `+ 93` for its syncer's gossip, rpc and admin listeners (the
//! original Syncer's 30100/30190/30191 layout). A port that is taken falls back to a free one.
//!
//! The demo speaks on stdout (one line per event); logs go to stderr, `warn` and above
//! unless `--log-level` says otherwise.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use futures::stream::{FuturesUnordered, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::settings::Id;
use crate::config::{Config, Layer, LogConfig, LogFormat};
use crate::devreg::{self, DevRegistryConfig, DevRegistryHandle};
use crate::node::{self, Listeners, NodeError};
use crate::sync::ids::ORIGIN_PROPERTY;

/// `println!` that ignores a closed stdout (`syncer demo | head`): the demo keeps running and
/// still cleans up on a signal.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// Exit status for bad flags (as clap's usage errors).
const EXIT_USAGE: u8 = 2;
/// Exit status for runtime failures.
const EXIT_RUNTIME: u8 = 1;

/// Ports of one data centre, relative to its base port.
const GOSSIP_OFFSET: u16 = 90;
const RPC_OFFSET: u16 = 91;
const ADMIN_OFFSET: u16 = 93;
/// Distance between the base ports of two data centres.
const DC_STRIDE: u16 = 100;
/// Most data centres one demo runs (their ports stay below the next hundred's).
const MAX_DCS: u16 = 9;

/// How long the syncers may take to see each other before the sample is registered anyway.
const POOL_DEADLINE: Duration = Duration::from_secs(15);
/// How often the copy of the sample is looked for, and for how long.
const VISIBLE_POLL: Duration = Duration::from_millis(10);
const VISIBLE_DEADLINE: Duration = Duration::from_secs(30);
/// The sample instance's lease is the registry default (120 s); renew it well within.
const SAMPLE_HEARTBEAT: Duration = Duration::from_secs(30);
/// Longest wait for the nodes, then the registries, to stop.
const STOP_DEADLINE: Duration = Duration::from_secs(10);
/// Timeout of every HTTP call to a registry and rpc call to a syncer.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// The sample service and instance.
const APP_ID: &str = "demo";
const SERVICE_NAME: &str = "hello";
const VERSION: &str = "1.0.0";
const SAMPLE_INSTANCE: &str = "hello-1";
/// The instance id the printed `curl` lines use.
const SECOND_INSTANCE: &str = "hello-2";
const PROJECT_PATH: &str = "/v4/default/registry";

/// Flags of `syncer demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Number of data centres, each a dev registry and a syncer.
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u16).range(2..=i64::from(MAX_DCS)))]
    pub dcs: u16,

    /// Registry port of the first data centre; data centre i uses base + 100*i for its
    /// registry and + 90/91/93 for its syncer's gossip, rpc and admin ports. A taken port
    /// falls back to a free one; 0 takes free ports everywhere.
    #[arg(long, value_name = "PORT", default_value_t = 30100)]
    pub base_port: u16,

    /// Log filter for the nodes and registries (a level such as `info`, or tracing directives
    /// such as `warn,syncer::sync=debug`); logs go to stderr.
    #[arg(long, value_name = "FILTER", default_value = "warn")]
    pub log_level: String,
}

/// Runs the demo until a signal.
pub fn run(args: &DemoArgs) -> ExitCode {
    if args.base_port != 0 {
        let top = u32::from(args.base_port)
            + u32::from(DC_STRIDE) * u32::from(args.dcs - 1)
            + u32::from(ADMIN_OFFSET);
        if top > u32::from(u16::MAX) {
            eprintln!(
                "syncer: --base-port {} with --dcs {} needs ports up to {top}, above 65535; choose a lower base port (or 0)",
                args.base_port, args.dcs
            );
            return ExitCode::from(EXIT_USAGE);
        }
    }
    let log = LogConfig {
        format: LogFormat::Text,
        filter: args.log_level.clone(),
    };
    if let Err(e) = crate::telemetry::init_logging(&log) {
        eprintln!("syncer: --log-level {:?}: {e}", args.log_level);
        return ExitCode::from(EXIT_USAGE);
    }
    let runtime = match super::runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let outcome = runtime.block_on(demo(args));
    // Do not wait for tasks that ignored cancellation (the stop already waited its deadline).
    runtime.shutdown_background();
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("syncer demo: {e}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

/// The whole demo: start, show, wait for a signal or a failure, stop, clean up.
async fn demo(args: &DemoArgs) -> Result<(), String> {
    let root = CancellationToken::new();
    crate::shutdown::spawn_signal_handler(root.clone());
    let temp = TempRoot::create()?;
    let mut world = World::default();
    let outcome = tokio::select! {
        biased;
        () = root.cancelled() => Ok(()),
        outcome = show(args, &temp, &mut world, &root) => outcome,
    };
    let stopped = world.stop().await;
    if temp.remove() && stopped.is_ok() {
        say!("stopped; removed {}", temp.path.display());
    }
    match (outcome, stopped) {
        (Ok(()), Ok(())) => Ok(()),
        (Err(e), Ok(())) | (Ok(()), Err(e)) => Err(e),
        (Err(first), Err(then)) => Err(format!("{first}; then {then}")),
    }
}

/// Starts the data centres, registers the sample, prints the guide, then waits until a node
/// fails (an error) or forever; the caller stops waiting at the signal.
async fn show(
    args: &DemoArgs,
    temp: &TempRoot,
    world: &mut World,
    root: &CancellationToken,
) -> Result<(), String> {
    say!(
        "syncer demo: {} data centres on 127.0.0.1, each a dev registry and a syncer, in one gossip pool",
        args.dcs
    );
    let http = reqwest::Client::builder()
        .timeout(CALL_TIMEOUT)
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
    let mut registries = Vec::new();
    for i in 0..args.dcs {
        registries.push(world.start_registry(i, args).await?);
    }
    // The service exists before the syncers start, so they find it in their first read of
    // the registry; what the demo times is then one new instance, the everyday event (a
    // service created later is found by the next service listing, up to a second after).
    let service_id = register_service(&http, &registries[0])
        .await
        .map_err(|e| format!("cannot register the sample service in dc1: {e}"))?;
    for (i, registry_url) in (0..args.dcs).zip(registries) {
        world.start_node(i, registry_url, args, temp).await?;
    }
    say!();
    for dc in &world.dcs {
        say!(
            "  {:<4} registry {:<24} syncer gossip {:<16} rpc {:<16} admin {}",
            dc.name,
            dc.registry_url,
            dc.gossip,
            dc.rpc,
            dc.admin_url
        );
    }
    if !world.fallbacks.is_empty() {
        say!(
            "  (in use, so free ports were taken instead: {})",
            world.fallbacks.join(", ")
        );
    }
    say!();

    let started = Instant::now();
    let rpcs: Vec<SocketAddr> = world.dcs.iter().map(|dc| dc.rpc).collect();
    if wait_for_pool(&rpcs).await {
        say!(
            "gossip pool formed: every syncer sees all {} (after {} ms)",
            rpcs.len(),
            started.elapsed().as_millis()
        );
    } else {
        say!(
            "the gossip pool did not form within {} s; going on anyway (see the log on stderr)",
            POOL_DEADLINE.as_secs()
        );
    }

    let first = &world.dcs[0];
    let registered = register_instance(&http, &first.registry_url, &service_id)
        .await
        .map_err(|e| format!("cannot register the sample instance in {}: {e}", first.name))?;
    say!(
        "{}: registered instance {SAMPLE_INSTANCE} of {APP_ID}/{SERVICE_NAME} {VERSION} (service {service_id})",
        first.name
    );
    spawn_heartbeat(
        http.clone(),
        first.registry_url.clone(),
        service_id.clone(),
        root.clone(),
    );

    let mut service_ids = vec![service_id.clone(); world.dcs.len()];
    let mut waits: FuturesUnordered<_> = world
        .dcs
        .iter()
        .enumerate()
        .skip(1)
        .map(|(i, dc)| {
            let http = http.clone();
            let origin = first.name.clone();
            async move {
                let found = wait_for_copy(&http, &dc.registry_url, &origin, registered).await;
                (i, found, registered.elapsed())
            }
        })
        .collect();
    while let Some((i, found, took)) = waits.next().await {
        let name = &world.dcs[i].name;
        match found {
            Some((sid, copy)) => {
                say!(
                    "{name}: instance visible after {} ms (copy {copy})",
                    took.as_millis()
                );
                service_ids[i] = sid;
            }
            None => say!(
                "{name}: the instance did not appear within {} s; the demo keeps running (see the log on stderr, or try --log-level info)",
                VISIBLE_DEADLINE.as_secs()
            ),
        }
    }
    drop(waits);

    print_guide(world, &service_ids, temp);

    // Nodes only stop on their own when they fail.
    match world.exits.recv().await {
        Some((i, result)) => {
            let name = &world.dcs[i].name;
            Err(match result {
                Ok(()) => format!("the {name} syncer stopped unexpectedly"),
                Err(e) => format!("the {name} syncer failed: {e}"),
            })
        }
        None => std::future::pending().await,
    }
}

/// One running data centre.
struct DataCentre {
    /// `dc1`, `dc2`, ...: the cluster name, and the node is `<name>-syncer`.
    name: String,
    registry_url: String,
    gossip: SocketAddr,
    rpc: SocketAddr,
    admin_url: String,
}

/// Everything the demo started, and how to stop it: nodes first, then registries.
struct World {
    dcs: Vec<DataCentre>,
    /// Ports that were taken, as `what preferred`.
    fallbacks: Vec<String>,
    registries: Vec<DevRegistryHandle>,
    registries_token: CancellationToken,
    nodes_token: CancellationToken,
    nodes: TaskTracker,
    /// A node's index and result when it stops.
    exits: mpsc::Receiver<(usize, Result<(), NodeError>)>,
    exits_tx: mpsc::Sender<(usize, Result<(), NodeError>)>,
}

impl Default for World {
    fn default() -> Self {
        // Each node reports its exit once, and a demo has at most MAX_DCS nodes: the queue
        // never fills.
        let (exits_tx, exits) = mpsc::channel(usize::from(MAX_DCS));
        World {
            dcs: Vec::new(),
            fallbacks: Vec::new(),
            registries: Vec::new(),
            registries_token: CancellationToken::new(),
            nodes_token: CancellationToken::new(),
            nodes: TaskTracker::new(),
            exits,
            exits_tx,
        }
    }
}

impl World {
    /// Starts the registry of data centre `i`; returns its URL.
    async fn start_registry(&mut self, i: u16, args: &DemoArgs) -> Result<String, String> {
        let port = port_of(args, i, 0);
        let listener = self
            .bind_tcp(&format!("dc{} registry", i + 1), port)
            .await?;
        let registry = devreg::spawn(
            listener,
            DevRegistryConfig::default(),
            self.registries_token.child_token(),
        )
        .await;
        let url = registry.url();
        self.registries.push(registry);
        Ok(url)
    }

    /// Starts the node of data centre `i` next to `registry_url`; every node but the first
    /// joins the first.
    ///
    /// They join through the first node's rpc address (the gossip layer asks it for its gossip
    /// address): a node announces its registry moments after it starts, and a join sent
    /// before that announcement is often lost (the answer goes to the identity it replaced)
    /// and retried only a second later. The rpc round trip lets the announcement go first.
    async fn start_node(
        &mut self,
        i: u16,
        registry_url: String,
        args: &DemoArgs,
        temp: &TempRoot,
    ) -> Result<(), String> {
        let name = format!("dc{}", i + 1);
        let join = self.dcs.first().map(|dc| dc.rpc);
        let data_dir = temp.path.join(&name);
        let mut ports = [GOSSIP_OFFSET, RPC_OFFSET, ADMIN_OFFSET].map(|o| port_of(args, i, o));
        let (config, listeners) = loop {
            let config = node_config(&name, &registry_url, ports, join, &data_dir, args)?;
            match Listeners::bind(&config).await {
                Ok(listeners) => break (config, listeners),
                // A preferred port is taken: that listener takes a free one instead.
                Err(NodeError::Bind { what, addr, .. })
                    if addr.port() != 0 && ports.contains(&addr.port()) =>
                {
                    self.fallbacks
                        .push(format!("{name} {what} {}", addr.port()));
                    ports = ports.map(|p| if p == addr.port() { 0 } else { p });
                }
                Err(e) => return Err(format!("cannot start the {name} syncer: {e}")),
            }
        };
        let local = |addr: std::io::Result<SocketAddr>| {
            addr.map_err(|e| format!("the {name} syncer's listener has no address: {e}"))
        };
        let gossip = local(listeners.gossip.local_addr())?;
        let rpc = local(listeners.rpc.local_addr())?;
        let admin_url = match &listeners.admin {
            Some(admin) => format!("http://{}", local(admin.local_addr())?),
            None => "(off)".to_owned(),
        };

        let index = self.dcs.len();
        let token = self.nodes_token.child_token();
        let exits = self.exits_tx.clone();
        self.nodes.spawn(async move {
            let result = node::run(config, listeners, token).await;
            let _ = exits.send((index, result)).await;
        });
        self.dcs.push(DataCentre {
            name,
            registry_url,
            gossip,
            rpc,
            admin_url,
        });
        Ok(())
    }

    /// A TCP listener on 127.0.0.1:`port`, or on a free port when that one is taken.
    async fn bind_tcp(&mut self, what: &str, port: u16) -> Result<TcpListener, String> {
        if port != 0 {
            match TcpListener::bind(("127.0.0.1", port)).await {
                Ok(listener) => return Ok(listener),
                Err(_) => self.fallbacks.push(format!("{what} {port}")),
            }
        }
        TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(|e| format!("cannot listen for the {what} on 127.0.0.1: {e}"))
    }

    /// Stops the nodes, then the registries, each within [`STOP_DEADLINE`].
    async fn stop(&mut self) -> Result<(), String> {
        say!("stopping ...");
        let deadline = tokio::time::Instant::now() + STOP_DEADLINE;
        self.nodes_token.cancel();
        self.nodes.close();
        let mut problems = Vec::new();
        if tokio::time::timeout_at(deadline, self.nodes.wait())
            .await
            .is_err()
        {
            problems.push(format!(
                "syncers still running after {} s",
                STOP_DEADLINE.as_secs()
            ));
        }
        while let Ok((i, result)) = self.exits.try_recv() {
            if let Err(e) = result {
                problems.push(format!("the {} syncer: {e}", self.dcs[i].name));
            }
        }
        self.registries_token.cancel();
        let registries = futures::future::join_all(self.registries.iter().map(|r| r.stopped()));
        if tokio::time::timeout_at(deadline, registries).await.is_err() {
            problems.push(format!(
                "registries still running after {} s",
                STOP_DEADLINE.as_secs()
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(format!("unclean stop: {}", problems.join("; ")))
        }
    }
}

/// The preferred port `offset` above data centre `i`'s base port; 0 (any) without one.
fn port_of(args: &DemoArgs, i: u16, offset: u16) -> u16 {
    match args.base_port {
        0 => 0,
        base => base + DC_STRIDE * i + offset,
    }
}

/// The configuration of data centre `name`'s node, built like the daemon's command line.
fn node_config(
    name: &str,
    registry_url: &str,
    [gossip, rpc, admin]: [u16; 3],
    join: Option<SocketAddr>,
    data_dir: &Path,
    args: &DemoArgs,
) -> Result<Config, String> {
    let mut layer = Layer::default();
    let mut set = |id: Id, value: String| layer.set_flag(id, value);
    set(Id::Node, format!("{name}-syncer"));
    set(Id::ClusterName, name.to_owned());
    set(Id::ScAddr, registry_url.to_owned());
    set(Id::BindAddr, format!("127.0.0.1:{gossip}"));
    set(Id::RpcAddr, format!("127.0.0.1:{rpc}"));
    set(Id::AdminAddr, format!("127.0.0.1:{admin}"));
    set(Id::DataDir, data_dir.display().to_string());
    set(Id::GossipProfile, "lan".to_owned());
    set(Id::LogLevel, args.log_level.clone());
    if let Some(join) = join {
        set(Id::JoinAddr, join.to_string());
    }
    Config::load(None, layer).map_err(|e| format!("the {name} syncer's configuration: {e}"))
}

/// Waits until every syncer sees all of them alive, active and serving a known registry.
async fn wait_for_pool(rpcs: &[SocketAddr]) -> bool {
    let deadline = Instant::now() + POOL_DEADLINE;
    loop {
        let mut complete = true;
        for rpc in rpcs {
            let ready = match crate::rpc::client::members(&rpc.to_string(), CALL_TIMEOUT).await {
                Ok(members) => {
                    members
                        .iter()
                        .filter(|m| {
                            m.status == "alive" && m.role == "active" && !m.registry.is_empty()
                        })
                        .count()
                        >= rpcs.len()
                }
                Err(_) => false,
            };
            if !ready {
                complete = false;
                break;
            }
        }
        if complete {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Registers the sample service; returns its id.
async fn register_service(http: &reqwest::Client, registry: &str) -> Result<String, String> {
    let service = post(
        http,
        &format!("{registry}{PROJECT_PATH}/microservices"),
        json!({"service": {"appId": APP_ID, "serviceName": SERVICE_NAME, "version": VERSION}}),
    )
    .await?;
    text_field(&service, "serviceId")
}

/// Registers the sample instance; returns when the registry acknowledged it.
async fn register_instance(
    http: &reqwest::Client,
    registry: &str,
    service_id: &str,
) -> Result<Instant, String> {
    post(
        http,
        &format!("{registry}{PROJECT_PATH}/microservices/{service_id}/instances"),
        json!({"instance": {
            "instanceId": SAMPLE_INSTANCE,
            "hostName": "demo-host",
            "endpoints": ["rest://127.0.0.1:8080"],
        }}),
    )
    .await?;
    Ok(Instant::now())
}

/// Keeps the sample instance's lease alive until `token` is cancelled.
fn spawn_heartbeat(
    http: reqwest::Client,
    registry: String,
    service_id: String,
    token: CancellationToken,
) {
    let url = format!(
        "{registry}{PROJECT_PATH}/microservices/{service_id}/instances/{SAMPLE_INSTANCE}/heartbeat"
    );
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = token.cancelled() => return,
                () = tokio::time::sleep(SAMPLE_HEARTBEAT) => {}
            }
            match http.put(&url).send().await {
                Ok(reply) if reply.status().is_success() => {}
                Ok(reply) => tracing::warn!(status = %reply.status(), "sample heartbeat refused"),
                Err(e) => tracing::warn!(error = %e, "sample heartbeat failed"),
            }
        }
    });
}

/// Polls `registry` until it holds a copy of the sample from `origin`; returns the service
/// id there and the copy's instance id, or `None` after [`VISIBLE_DEADLINE`].
async fn wait_for_copy(
    http: &reqwest::Client,
    registry: &str,
    origin: &str,
    since: Instant,
) -> Option<(String, String)> {
    loop {
        if let Ok(Some(found)) = find_copy(http, registry, origin).await {
            return Some(found);
        }
        if since.elapsed() >= VISIBLE_DEADLINE {
            return None;
        }
        tokio::time::sleep(VISIBLE_POLL).await;
    }
}

async fn find_copy(
    http: &reqwest::Client,
    registry: &str,
    origin: &str,
) -> Result<Option<(String, String)>, String> {
    let services = get(http, &format!("{registry}{PROJECT_PATH}/microservices")).await?;
    let service_id = services["services"].as_array().and_then(|services| {
        services.iter().find_map(|s| {
            (s["appId"] == APP_ID && s["serviceName"] == SERVICE_NAME && s["version"] == VERSION)
                .then(|| s["serviceId"].as_str().map(str::to_owned))
                .flatten()
        })
    });
    let Some(service_id) = service_id else {
        return Ok(None);
    };
    let instances = get(
        http,
        &format!("{registry}{PROJECT_PATH}/microservices/{service_id}/instances"),
    )
    .await?;
    let copy = instances["instances"].as_array().and_then(|instances| {
        instances.iter().find_map(|i| {
            (i["properties"][ORIGIN_PROPERTY] == origin)
                .then(|| i["instanceId"].as_str().map(str::to_owned))
                .flatten()
        })
    });
    Ok(copy.map(|copy| (service_id, copy)))
}

async fn post(http: &reqwest::Client, url: &str, body: Value) -> Result<Value, String> {
    answer(http.post(url).json(&body).send().await, url).await
}

async fn get(http: &reqwest::Client, url: &str) -> Result<Value, String> {
    answer(http.get(url).send().await, url).await
}

/// The JSON body of a successful reply.
async fn answer(
    reply: Result<reqwest::Response, reqwest::Error>,
    url: &str,
) -> Result<Value, String> {
    let reply = reply.map_err(|e| format!("{url}: {e}"))?;
    let status = reply.status();
    let body = reply.text().await.map_err(|e| format!("{url}: {e}"))?;
    if !status.is_success() {
        return Err(format!("{url}: {status} {}", body.trim()));
    }
    serde_json::from_str(&body).map_err(|e| format!("{url}: not JSON ({e}): {}", body.trim()))
}

fn text_field(body: &Value, key: &str) -> Result<String, String> {
    body[key]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("the answer lacks {key}: {body}"))
}

/// The addresses and paste-ready commands.
fn print_guide(world: &World, service_ids: &[String], temp: &TempRoot) {
    let dcs = &world.dcs;
    let instances = |i: usize| {
        format!(
            "{}{PROJECT_PATH}/microservices/{}/instances",
            dcs[i].registry_url, service_ids[i]
        )
    };
    let one = |i: usize| format!("{}/{SECOND_INSTANCE}", instances(i));
    let (first, second) = (&dcs[0].name, &dcs[1].name);

    say!();
    say!("Running. In another terminal, try:");
    say!();
    say!("  # register a second instance in {first} (use {second}'s address to register it there)");
    say!(
        "  curl -s -XPOST {} \\\n       -d '{{\"instance\":{{\"instanceId\":\"{SECOND_INSTANCE}\",\"hostName\":\"demo-host-2\",\"endpoints\":[\"rest://127.0.0.1:8081\"]}}}}'",
        instances(0)
    );
    say!("  # list the instances in every data centre: the others hold copies (syncer-...)");
    for i in 0..dcs.len() {
        say!("  curl -s {}; echo", instances(i));
    }
    say!("  # mark it DOWN, then delete it; the copies follow");
    say!("  curl -s -XPUT '{}/status?value=DOWN'", one(0));
    say!("  curl -s -XDELETE {}", one(0));
    say!(
        "  # an instance's lease is 120 s, as in Service Center: renew it (the demo renews its own)"
    );
    say!("  curl -s -XPUT {}/heartbeat", one(0));
    say!("  # the gossip pool, and each syncer's health and metrics");
    say!("  {} members --rpc-addr {}", self_command(), dcs[0].rpc);
    for dc in dcs {
        say!(
            "  curl -s {0}/health; curl -s {0}/metrics | grep '^syncer_'",
            dc.admin_url
        );
    }
    say!();
    say!(
        "Ctrl-C stops every data centre and removes {}.",
        temp.path.display()
    );
}

/// How to run this binary from the current directory, for the printed `members` line.
fn self_command() -> String {
    let Ok(exe) = std::env::current_exe() else {
        return "syncer".to_owned();
    };
    let relative = std::env::current_dir()
        .ok()
        .and_then(|cwd| exe.strip_prefix(cwd).ok().map(Path::to_path_buf));
    match relative {
        Some(path) if path.components().count() > 1 => path.display().to_string(),
        Some(path) => format!("./{}", path.display()),
        None => exe.display().to_string(),
    }
}

/// `<temp dir>/syncer-demo-<pid>`: the data directories of every node, removed at the end.
struct TempRoot {
    path: PathBuf,
}

impl TempRoot {
    fn create() -> Result<TempRoot, String> {
        let path = std::env::temp_dir().join(format!("syncer-demo-{}", std::process::id()));
        // A leftover of an earlier process with the same pid holds nothing of ours.
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path)
            .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        Ok(TempRoot { path })
    }

    /// Removes the directory; false (after saying why on stderr) when that failed.
    fn remove(&self) -> bool {
        match std::fs::remove_dir_all(&self.path) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
            Err(e) => {
                eprintln!("syncer demo: cannot remove {}: {e}", self.path.display());
                false
            }
        }
    }
}

//! `syncer demo`: several data centres in one process, for a first look.
//!
//! Each data centre is an in-memory dev registry ([`crate::devreg`]: a ServiceComb Service
//! Center, or a Eureka server with `--kinds`) and a syncer node ([`crate::node`]) next to it,
//! all on 127.0.0.1 and joined into one gossip pool. The demo registers a sample instance in
//! the first data centre, reports how long its copy took to appear in every other one, then
//! prints paste-ready `curl` lines and keeps running until SIGINT/SIGTERM, when it stops every
//! node and registry and removes its data directories.
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

use crate::cli::dev_certs;
use crate::config::settings::Id;
use crate::config::{Config, Layer, LogConfig, LogFormat};
use crate::devreg::eureka::{self, EurekaDevConfig, EurekaDevHandle};
use crate::devreg::{self, DevRegistryConfig, DevRegistryHandle};
use crate::gossip::GossipKey;
use crate::node::{self, Listeners, NodeError};
use crate::rpc::tls::ClientTls;
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
/// The sample's Eureka app (Eureka upper-cases app names) and its instance id there, as a
/// Spring Cloud client would name it (`host:app:port`).
const EUREKA_APP: &str = "HELLO";
const EUREKA_SAMPLE: &str = "127.0.0.1:hello:8080";
/// Number of data centres without `--dcs` or `--kinds`.
const DEFAULT_DCS: u16 = 2;

/// The kind of registry of one data centre.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A ServiceComb Service Center (v4 REST API).
    ServiceComb,
    /// A Eureka server (`/eureka/apps`); its syncer runs with `--sc-plugin eureka`.
    Eureka,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::ServiceComb => "servicecomb",
            Kind::Eureka => "eureka",
        }
    }
}

fn parse_kind(text: &str) -> Result<Kind, String> {
    match text.trim() {
        "servicecomb" | "servicecenter" | "sc" => Ok(Kind::ServiceComb),
        "eureka" => Ok(Kind::Eureka),
        other => Err(format!(
            "unknown registry kind {other:?}; use servicecomb or eureka"
        )),
    }
}

/// Flags of `syncer demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Number of data centres, each a dev registry and a syncer (default 2, or as many as
    /// `--kinds` names).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(2..=i64::from(MAX_DCS)))]
    pub dcs: Option<u16>,

    /// The registry kind of each data centre, in order: `servicecomb` or `eureka`, e.g.
    /// `--kinds servicecomb,eureka,servicecomb` (default: every one a ServiceComb).
    #[arg(long, value_name = "K1,K2,...", value_delimiter = ',', value_parser = parse_kind)]
    pub kinds: Vec<Kind>,

    /// Registry port of the first data centre; data centre i uses base + 100*i for its
    /// registry and + 90/91/93 for its syncer's gossip, rpc and admin ports. A taken port
    /// falls back to a free one; 0 takes free ports everywhere.
    #[arg(long, value_name = "PORT", default_value_t = 30100)]
    pub base_port: u16,

    /// Log filter for the nodes and registries (a level such as `info`, or tracing directives
    /// such as `warn,syncer::sync=debug`); logs go to stderr.
    #[arg(long, value_name = "FILTER", default_value = "warn")]
    pub log_level: String,

    /// Secure the links between the syncers as production would: mutual TLS on the rpc link
    /// with a CA and node certificate made for the demo (as `syncer dev-certs` makes them),
    /// and the gossip pool sealed with a new key (as `syncer keygen` makes it). The
    /// registries stay plain HTTP, next to their syncer.
    #[arg(long)]
    pub tls: bool,
}

impl DemoArgs {
    /// The kind of every data centre, from `--kinds` and `--dcs`.
    ///
    /// # Errors
    /// When the two disagree, or `--kinds` names fewer than 2 or more than [`MAX_DCS`].
    fn kinds(&self) -> Result<Vec<Kind>, String> {
        if self.kinds.is_empty() {
            let n = self.dcs.unwrap_or(DEFAULT_DCS);
            return Ok(vec![Kind::ServiceComb; usize::from(n)]);
        }
        let n = self.kinds.len();
        if let Some(dcs) = self.dcs
            && usize::from(dcs) != n
        {
            return Err(format!(
                "--dcs {dcs} but --kinds names {n} data centres; give one of them, or the same number"
            ));
        }
        if !(2..=usize::from(MAX_DCS)).contains(&n) {
            return Err(format!(
                "--kinds names {n} data centres; the demo runs 2 to {MAX_DCS}"
            ));
        }
        Ok(self.kinds.clone())
    }
}

/// Runs the demo until a signal.
pub fn run(args: &DemoArgs) -> ExitCode {
    let kinds = match args.kinds() {
        Ok(kinds) => kinds,
        Err(e) => {
            eprintln!("syncer: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let dcs = u16::try_from(kinds.len()).unwrap_or(MAX_DCS);
    if args.base_port != 0 {
        let top = u32::from(args.base_port)
            + u32::from(DC_STRIDE) * u32::from(dcs - 1)
            + u32::from(ADMIN_OFFSET);
        if top > u32::from(u16::MAX) {
            eprintln!(
                "syncer: --base-port {} with {dcs} data centres needs ports up to {top}, above 65535; choose a lower base port (or 0)",
                args.base_port
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
    let outcome = runtime.block_on(demo(args, &kinds));
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
async fn demo(args: &DemoArgs, kinds: &[Kind]) -> Result<(), String> {
    let root = CancellationToken::new();
    crate::shutdown::spawn_signal_handler(root.clone());
    let temp = TempRoot::create()?;
    let mut world = World::default();
    let outcome = tokio::select! {
        biased;
        () = root.cancelled() => Ok(()),
        outcome = show(args, kinds, &temp, &mut world, &root) => outcome,
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
    kinds: &[Kind],
    temp: &TempRoot,
    world: &mut World,
    root: &CancellationToken,
) -> Result<(), String> {
    let mixed = kinds.iter().any(|k| *k != kinds[0]);
    say!(
        "syncer demo: {} data centres on 127.0.0.1, each a dev registry and a syncer, in one gossip pool{}",
        kinds.len(),
        if mixed {
            format!(
                " ({})",
                kinds
                    .iter()
                    .map(|k| k.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        } else {
            String::new()
        }
    );
    let http = reqwest::Client::builder()
        .timeout(CALL_TIMEOUT)
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
    let security = if args.tls {
        let security = Security::create(temp)?;
        say!(
            "secured: mutual TLS on the rpc link (demo CA and certificate in {}), gossip sealed with a new key",
            security.pki.display()
        );
        Some(security)
    } else {
        None
    };
    let mut registries = Vec::new();
    for (i, kind) in (0..).zip(kinds) {
        registries.push(world.start_registry(i, *kind, args).await?);
    }
    // The service exists before the syncers start, so they find it in their first read of
    // the registry; what the demo times is then one new instance, the everyday event (a
    // service created later is found by the next service listing, up to a second after).
    // A Eureka has no services of their own: the app appears with its first instance.
    let first_kind = kinds[0];
    let service_id = match first_kind {
        Kind::ServiceComb => register_service(&http, &registries[0])
            .await
            .map_err(|e| format!("cannot register the sample service in dc1: {e}"))?,
        Kind::Eureka => String::new(),
    };
    for ((i, kind), registry_url) in (0..).zip(kinds).zip(registries) {
        world
            .start_node(i, *kind, registry_url, args, temp, security.as_ref())
            .await?;
    }
    say!();
    for dc in &world.dcs {
        say!(
            "  {:<4} {:<11} registry {:<31} syncer gossip {:<16} rpc {:<16} admin {}",
            dc.name,
            dc.kind.name(),
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
    if wait_for_pool(&rpcs, security.as_ref().map(|s| &s.client)).await {
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
    let registered = match first_kind {
        Kind::ServiceComb => {
            let at = register_instance(&http, &first.registry_url, &service_id)
                .await
                .map_err(|e| {
                    format!("cannot register the sample instance in {}: {e}", first.name)
                })?;
            say!(
                "{}: registered instance {SAMPLE_INSTANCE} of {APP_ID}/{SERVICE_NAME} {VERSION} (service {service_id})",
                first.name
            );
            at
        }
        Kind::Eureka => {
            let at = register_eureka_instance(&http, &first.registry_url)
                .await
                .map_err(|e| {
                    format!("cannot register the sample instance in {}: {e}", first.name)
                })?;
            say!(
                "{}: registered instance {EUREKA_SAMPLE} of the Eureka app {EUREKA_APP} (metadata sc.appId={APP_ID}, sc.version={VERSION})",
                first.name
            );
            at
        }
    };
    spawn_heartbeat(
        http.clone(),
        first_kind,
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
                let found =
                    wait_for_copy(&http, dc.kind, &dc.registry_url, &origin, registered).await;
                (i, found, registered.elapsed())
            }
        })
        .collect();
    while let Some((i, found, took)) = waits.next().await {
        let dc = &world.dcs[i];
        match found {
            Some((sid, copy)) => {
                let kind = if dc.kind == first_kind {
                    String::new()
                } else {
                    format!(", in {}", dc.kind.name())
                };
                say!(
                    "{}: instance visible after {} ms (copy {copy}{kind})",
                    dc.name,
                    took.as_millis()
                );
                service_ids[i] = sid;
            }
            None => say!(
                "{}: the instance did not appear within {} s; the demo keeps running (see the log on stderr, or try --log-level info)",
                dc.name,
                VISIBLE_DEADLINE.as_secs()
            ),
        }
    }
    drop(waits);

    print_guide(world, &service_ids, temp, security.as_ref());

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

/// What `--tls` gives every node: the files of a demo CA and node certificate, and a gossip
/// key.
struct Security {
    /// Directory of `ca.pem`, `node.pem` and `node-key.pem`.
    pki: PathBuf,
    gossip_key: String,
    /// The client side, for the demo's own calls (`members`).
    client: ClientTls,
}

impl Security {
    /// Makes the certificates into `temp`/pki and a new gossip key.
    fn create(temp: &TempRoot) -> Result<Security, String> {
        let pki = temp.path.join("pki");
        let certs = dev_certs::generate(&["127.0.0.1".to_owned(), "localhost".to_owned()])
            .map_err(|e| format!("cannot make the demo certificates: {e}"))?;
        dev_certs::write(&pki, &certs)
            .map_err(|e| format!("cannot write the demo certificates: {e}"))?;
        let client = ClientTls::load(
            Some(&pki.join(dev_certs::NODE_CERT)),
            Some(&pki.join(dev_certs::NODE_KEY)),
            Some(&pki.join(dev_certs::CA_CERT)),
            None,
        )
        .map_err(|e| format!("cannot read the demo certificates: {e}"))?
        .ok_or("the demo certificates give no client TLS")?;
        Ok(Security {
            pki,
            gossip_key: GossipKey::generate().to_base64(),
            client,
        })
    }

    fn file(&self, name: &str) -> String {
        self.pki.join(name).display().to_string()
    }

    /// The `--tls-*` flags of a client command.
    fn client_flags(&self) -> String {
        format!(
            "--tls-cert {} --tls-key {} --tls-ca {}",
            self.file(dev_certs::NODE_CERT),
            self.file(dev_certs::NODE_KEY),
            self.file(dev_certs::CA_CERT)
        )
    }
}

/// One running data centre.
struct DataCentre {
    /// `dc1`, `dc2`, ...: the cluster name, and the node is `<name>-syncer`.
    name: String,
    kind: Kind,
    /// `http://ip:port` (ServiceComb) or `http://ip:port/eureka` (Eureka).
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
    registries: Vec<RegistryHandle>,
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

/// A running development registry of either kind.
enum RegistryHandle {
    ServiceComb(DevRegistryHandle),
    Eureka(EurekaDevHandle),
}

impl RegistryHandle {
    fn url(&self) -> String {
        match self {
            RegistryHandle::ServiceComb(r) => r.url(),
            RegistryHandle::Eureka(r) => r.url(),
        }
    }

    async fn stopped(&self) {
        match self {
            RegistryHandle::ServiceComb(r) => r.stopped().await,
            RegistryHandle::Eureka(r) => r.stopped().await,
        }
    }
}

impl World {
    /// Starts the registry of data centre `i`; returns its URL.
    async fn start_registry(
        &mut self,
        i: u16,
        kind: Kind,
        args: &DemoArgs,
    ) -> Result<String, String> {
        let port = port_of(args, i, 0);
        let listener = self
            .bind_tcp(&format!("dc{} registry", i + 1), port)
            .await?;
        let token = self.registries_token.child_token();
        let registry = match kind {
            Kind::ServiceComb => RegistryHandle::ServiceComb(
                devreg::spawn(listener, DevRegistryConfig::default(), token).await,
            ),
            Kind::Eureka => RegistryHandle::Eureka(
                eureka::spawn(listener, EurekaDevConfig::default(), token).await,
            ),
        };
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
        kind: Kind,
        registry_url: String,
        args: &DemoArgs,
        temp: &TempRoot,
        security: Option<&Security>,
    ) -> Result<(), String> {
        let name = format!("dc{}", i + 1);
        let join = self.dcs.first().map(|dc| dc.rpc);
        let data_dir = temp.path.join(&name);
        let mut ports = [GOSSIP_OFFSET, RPC_OFFSET, ADMIN_OFFSET].map(|o| port_of(args, i, o));
        let (config, listeners) = loop {
            let at = Placement {
                name: &name,
                kind,
                registry_url: &registry_url,
                ports,
                join,
                data_dir: &data_dir,
            };
            let config = node_config(&at, args, security)?;
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
            kind,
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

/// Where a node of the demo runs and what it is next to.
struct Placement<'a> {
    name: &'a str,
    kind: Kind,
    registry_url: &'a str,
    /// Gossip, rpc and admin ports (0: any).
    ports: [u16; 3],
    join: Option<SocketAddr>,
    data_dir: &'a Path,
}

/// The configuration of a node, built like the daemon's command line.
fn node_config(
    at: &Placement<'_>,
    args: &DemoArgs,
    security: Option<&Security>,
) -> Result<Config, String> {
    let Placement {
        name,
        kind,
        registry_url,
        ports: [gossip, rpc, admin],
        join,
        data_dir,
    } = *at;
    let mut layer = Layer::default();
    let mut set = |id: Id, value: String| layer.set_flag(id, value);
    set(Id::Node, format!("{name}-syncer"));
    set(Id::ClusterName, name.to_owned());
    set(Id::ScAddr, registry_url.to_owned());
    if kind == Kind::Eureka {
        set(Id::ScPlugin, "eureka".to_owned());
    }
    set(Id::BindAddr, format!("127.0.0.1:{gossip}"));
    set(Id::RpcAddr, format!("127.0.0.1:{rpc}"));
    set(Id::AdminAddr, format!("127.0.0.1:{admin}"));
    set(Id::DataDir, data_dir.display().to_string());
    set(Id::GossipProfile, "lan".to_owned());
    set(Id::LogLevel, args.log_level.clone());
    if let Some(security) = security {
        set(Id::TlsCert, security.file(dev_certs::NODE_CERT));
        set(Id::TlsKey, security.file(dev_certs::NODE_KEY));
        set(Id::TlsCa, security.file(dev_certs::CA_CERT));
        set(Id::GossipKey, security.gossip_key.clone());
    }
    if let Some(join) = join {
        set(Id::JoinAddr, join.to_string());
    }
    Config::load(None, layer).map_err(|e| format!("the {name} syncer's configuration: {e}"))
}

/// Waits until every syncer sees all of them alive, active and serving a known registry.
async fn wait_for_pool(rpcs: &[SocketAddr], tls: Option<&ClientTls>) -> bool {
    let deadline = Instant::now() + POOL_DEADLINE;
    loop {
        let mut complete = true;
        for rpc in rpcs {
            let ready = match crate::rpc::client::members(&rpc.to_string(), CALL_TIMEOUT, tls).await
            {
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

/// Registers the sample instance in a Eureka, with metadata naming its ServiceComb app and
/// version (so its copies land in `demo/hello 1.0.0`); returns when Eureka acknowledged it.
async fn register_eureka_instance(
    http: &reqwest::Client,
    registry: &str,
) -> Result<Instant, String> {
    let url = format!("{registry}/apps/{EUREKA_APP}");
    let body = json!({"instance": {
        "instanceId": EUREKA_SAMPLE,
        "hostName": "127.0.0.1",
        "app": EUREKA_APP,
        "ipAddr": "127.0.0.1",
        "vipAddress": SERVICE_NAME,
        "status": "UP",
        "port": {"$": 8080, "@enabled": "true"},
        "securePort": {"$": 443, "@enabled": "false"},
        "dataCenterInfo": {
            "@class": "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo",
            "name": "MyOwn"
        },
        "metadata": {"sc.appId": APP_ID, "sc.version": VERSION},
    }});
    let reply = http
        .post(&url)
        .json(&body)
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    if reply.status() != reqwest::StatusCode::NO_CONTENT {
        let status = reply.status();
        let text = reply.text().await.unwrap_or_default();
        return Err(format!("{url}: {status} {}", text.trim()));
    }
    Ok(Instant::now())
}

/// Keeps the sample instance's lease alive until `token` is cancelled.
fn spawn_heartbeat(
    http: reqwest::Client,
    kind: Kind,
    registry: String,
    service_id: String,
    token: CancellationToken,
) {
    let url = match kind {
        Kind::ServiceComb => format!(
            "{registry}{PROJECT_PATH}/microservices/{service_id}/instances/{SAMPLE_INSTANCE}/heartbeat"
        ),
        Kind::Eureka => format!("{registry}/apps/{EUREKA_APP}/{EUREKA_SAMPLE}"),
    };
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
/// id there (ServiceComb; empty for a Eureka) and the copy's instance id, or `None` after
/// [`VISIBLE_DEADLINE`].
async fn wait_for_copy(
    http: &reqwest::Client,
    kind: Kind,
    registry: &str,
    origin: &str,
    since: Instant,
) -> Option<(String, String)> {
    loop {
        let found = match kind {
            Kind::ServiceComb => find_copy(http, registry, origin).await,
            Kind::Eureka => find_eureka_copy(http, registry, origin).await,
        };
        if let Ok(Some(found)) = found {
            return Some(found);
        }
        if since.elapsed() >= VISIBLE_DEADLINE {
            return None;
        }
        tokio::time::sleep(VISIBLE_POLL).await;
    }
}

/// The copy of the sample from `origin` in a Eureka's app [`EUREKA_APP`], if there.
async fn find_eureka_copy(
    http: &reqwest::Client,
    registry: &str,
    origin: &str,
) -> Result<Option<(String, String)>, String> {
    let url = format!("{registry}/apps/{EUREKA_APP}");
    let reply = http
        .get(&url)
        .header("Accept", "application/json")
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    if reply.status() == reqwest::StatusCode::NOT_FOUND {
        return Ok(None);
    }
    let app = answer(Ok(reply), &url).await?;
    let instances = match &app["application"]["instance"] {
        Value::Array(list) => list.clone(),
        one @ Value::Object(_) => vec![one.clone()],
        _ => Vec::new(),
    };
    Ok(instances.iter().find_map(|i| {
        (i["metadata"][ORIGIN_PROPERTY] == origin)
            .then(|| {
                i["instanceId"]
                    .as_str()
                    .map(|id| (String::new(), id.to_owned()))
            })
            .flatten()
    }))
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
fn print_guide(
    world: &World,
    service_ids: &[String],
    temp: &TempRoot,
    security: Option<&Security>,
) {
    let dcs = &world.dcs;
    let instances = |i: usize| {
        format!(
            "{}{PROJECT_PATH}/microservices/{}/instances",
            dcs[i].registry_url, service_ids[i]
        )
    };
    let list = |i: usize| match dcs[i].kind {
        Kind::ServiceComb if service_ids[i].is_empty() => format!(
            "curl -s {}{PROJECT_PATH}/microservices; echo",
            dcs[i].registry_url
        ),
        Kind::ServiceComb => format!("curl -s {}; echo", instances(i)),
        Kind::Eureka => format!(
            "curl -s -H 'Accept: application/json' {}/apps/{EUREKA_APP}; echo",
            dcs[i].registry_url
        ),
    };
    let (first, second) = (&dcs[0].name, &dcs[1].name);

    say!();
    say!("Running. In another terminal, try:");
    say!();
    say!("  # register a second instance in {first} (use {second}'s address to register it there)");
    match dcs[0].kind {
        Kind::ServiceComb => {
            let one = format!("{}/{SECOND_INSTANCE}", instances(0));
            say!(
                "  curl -s -XPOST {} \\\n       -d '{{\"instance\":{{\"instanceId\":\"{SECOND_INSTANCE}\",\"hostName\":\"demo-host-2\",\"endpoints\":[\"rest://127.0.0.1:8081\"]}}}}'",
                instances(0)
            );
            say!(
                "  # list the instances in every data centre: the others hold copies (syncer-...)"
            );
            for i in 0..dcs.len() {
                say!("  {}", list(i));
            }
            say!("  # mark it DOWN, then delete it; the copies follow");
            say!("  curl -s -XPUT '{one}/status?value=DOWN'");
            say!("  curl -s -XDELETE {one}");
            say!(
                "  # an instance's lease is 120 s, as in Service Center: renew it (the demo renews its own)"
            );
            say!("  curl -s -XPUT {one}/heartbeat");
        }
        Kind::Eureka => {
            let app = format!("{}/apps/{EUREKA_APP}", dcs[0].registry_url);
            let id = "127.0.0.1:hello:8081";
            say!(
                "  curl -s -XPOST {app} -H 'Content-Type: application/json' \\\n       -d '{{\"instance\":{{\"instanceId\":\"{id}\",\"hostName\":\"127.0.0.1\",\"app\":\"{EUREKA_APP}\",\"ipAddr\":\"127.0.0.1\",\"vipAddress\":\"{SERVICE_NAME}\",\"port\":{{\"$\":8081,\"@enabled\":\"true\"}},\"dataCenterInfo\":{{\"@class\":\"com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo\",\"name\":\"MyOwn\"}},\"metadata\":{{\"sc.appId\":\"{APP_ID}\",\"sc.version\":\"{VERSION}\"}}}}}}'"
            );
            say!(
                "  # list the instances in every data centre: the others hold copies (syncer-...)"
            );
            for i in 0..dcs.len() {
                say!("  {}", list(i));
            }
            say!("  # take it out of service, then cancel it; the copies follow");
            say!("  curl -s -XPUT '{app}/{id}/status?value=OUT_OF_SERVICE'");
            say!("  curl -s -XDELETE {app}/{id}");
            say!(
                "  # an instance's lease is 90 s, as in Eureka: renew it (the demo renews its own)"
            );
            say!("  curl -s -XPUT {app}/{id}");
        }
    }
    if let Some(eureka) = dcs.iter().find(|dc| dc.kind == Kind::Eureka) {
        say!("  # a Eureka answers XML unless asked for JSON, as a real one does; all its apps:");
        say!(
            "  curl -s -H 'Accept: application/json' {}/apps; echo",
            eureka.registry_url
        );
    }
    say!("  # the gossip pool, and each syncer's health and metrics");
    match security {
        Some(security) => {
            say!(
                "  {} members --rpc-addr {} \\\n       {}",
                self_command(),
                dcs[0].rpc,
                security.client_flags()
            );
            say!("  # the gossip keys of the whole pool (install, use and remove rotate them)");
            say!(
                "  {} keyring --rpc-addr {} \\\n       {} list",
                self_command(),
                dcs[0].rpc,
                security.client_flags()
            );
        }
        None => say!("  {} members --rpc-addr {}", self_command(), dcs[0].rpc),
    }
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

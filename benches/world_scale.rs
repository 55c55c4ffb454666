//! Many data centres and gossip at scale, simulated in one process under tokio's paused clock
//! (issue 19, items 5 and 6). Nothing touches a socket: the data centres are the test world's
//! (`tests/world`: a Service Center twin with leases per data centre, a memory mapping store,
//! one in-memory gossip network, the engines' in-memory peer transfer), included here as
//! modules.
//!
//! 1. **World** (`--dcs 3,10,30,100`, `--instances 100,100,100,10` per data centre, one entry
//!    per entry of `--dcs` or one for all, `--changes C`): each N
//!    runs in a child process of this binary (so its CPU and memory are its own). The engines
//!    run with the daemon's defaults (copy lease 30 s, anti-entropy 10 s), gossip on the `lan`
//!    profile, and every registry's change feed lags 100 ms behind a write (the adapters'
//!    poll interval). Printed: time for the pool to form and for the K × N instances to be
//!    mirrored everywhere (virtual), the idle traffic per second (pushes, pulls, gossip
//!    datagrams, registry calls), then C changes (one new instance each, the origin data
//!    centre rotating) with the virtual time until each other data centre holds the copy
//!    (p50/p99 over every change and data centre, and of the last one per change) and the
//!    messages per change above the idle traffic; the import actors and push loops per
//!    syncer; the process's CPU time and resident memory.
//! 2. **Gossip** (`--gossip 200,500`): M members on the in-memory network with the `lan`
//!    profile, each joining through the first: virtual time until every member sees all M
//!    alive; then one member is cut off (a crash, as its peers see it) and the time until
//!    every other member reports it down, over `--crashes R` rounds. Printed beside the bound
//!    the profile's parameters give (see `gossip_bound`).
//!
//! Run with `cargo bench --bench world_scale [-- --dcs 3,10 --instances 100 --changes 20
//! --gossip 200,500 --crashes 3 --only-world | --only-gossip]`; docs/PERFORMANCE.md records
//! the figures and docs/DESIGN.md ("Scaling to a hundred data centres") reads them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant as WallInstant};

use syncer::gossip::transport::MemoryNetwork;
use syncer::gossip::{
    self, GossipConfig, GossipHandle, GossipMetrics, MemberStatus, NodeId, NodeMeta, Profile,
    Timing,
};
use syncer::sync::EngineSettings;
use syncer::sync::copy::CopyLease;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

mod common;
#[allow(dead_code)]
#[path = "../tests/world/harness.rs"]
mod harness;
#[allow(dead_code)]
#[path = "../tests/world/link.rs"]
mod link;

use harness::{Kind, World};

/// How long every registry's change feed lags behind a write: the adapters poll every
/// 100 ms (`--poll-interval`), and a lag also batches the memory feed's full reads.
const FEED_LAG: Duration = Duration::from_millis(100);
/// Virtual time between two polls of the convergence check.
const CONVERGE_STEP: Duration = Duration::from_millis(100);
/// Virtual time between two polls while a change propagates.
const CHANGE_STEP: Duration = Duration::from_millis(1);
/// Virtual time a change may take to reach every data centre before the bench gives up.
const CHANGE_DEADLINE: Duration = Duration::from_secs(60);
/// Virtual time left after a change has arrived everywhere, before the next one, for the
/// announcements and the pulls they cause to happen (so they are counted with that change).
const CHANGE_GAP: Duration = Duration::from_secs(2);
/// The idle window whose traffic is the baseline.
const IDLE_WINDOW: Duration = Duration::from_secs(30);
/// Services per data centre (the instances are spread over them).
const SERVICES: usize = 10;

#[derive(Debug, Clone)]
struct Options {
    dcs: Vec<usize>,
    /// Instances per data centre, one entry per entry of `dcs` (or one for all).
    instances: Vec<usize>,
    changes: usize,
    gossip: Vec<usize>,
    crashes: usize,
    world: bool,
    gossip_run: bool,
    /// Set in a child: run one world of this many data centres and print its figures.
    child: Option<usize>,
}

fn list(args: &[String], flag: &str, default: &[usize]) -> Vec<usize> {
    match value(args, flag) {
        Some(text) => text
            .split(',')
            .map(|n| {
                n.trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("{flag}: `{n}` is not a number"))
            })
            .collect(),
        None => default.to_vec(),
    }
}

impl Options {
    fn instances_at(&self, i: usize) -> usize {
        self.instances
            .get(i)
            .or(self.instances.last())
            .copied()
            .unwrap_or(100)
    }
}

fn value<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

fn number(args: &[String], flag: &str, default: usize) -> usize {
    value(args, flag).map_or(default, |n| {
        n.parse()
            .unwrap_or_else(|_| panic!("{flag}: `{n}` is not a number"))
    })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        // A test runner (cargo-nextest) asking for tests: this binary has none.
        return;
    }
    let child = value(&args, "--child").map(|n| n.parse().expect("--child N"));
    if child.is_none() && !args.iter().any(|a| a == "--bench") {
        eprintln!("world_scale measures only under `cargo bench --bench world_scale`");
        return;
    }
    let options = Options {
        dcs: list(&args, "--dcs", &[3, 10, 30, 100]),
        instances: list(&args, "--instances", &[100, 100, 100, 10]),
        changes: number(&args, "--changes", 20),
        gossip: list(&args, "--gossip", &[200, 500]),
        crashes: number(&args, "--crashes", 3),
        world: !args.iter().any(|a| a == "--only-gossip"),
        gossip_run: !args.iter().any(|a| a == "--only-world"),
        child,
    };
    if let Some(n) = options.child {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("runtime");
        let figures = runtime.block_on(world_run(n, &options));
        println!("ROW {}", figures.row());
        return;
    }
    let started = WallInstant::now();
    common::print_machine("the bench runs on one thread; other sessions share the machine");
    if options.world {
        let mut rows = Vec::new();
        for (i, &n) in options.dcs.iter().enumerate() {
            rows.extend(world_child(n, options.instances_at(i), &options));
        }
        println!("\n{}", WorldFigures::header());
        for row in rows {
            println!("{row}");
        }
    }
    if options.gossip_run {
        for &m in &options.gossip {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .start_paused(true)
                .build()
                .expect("runtime");
            runtime.block_on(gossip_run(m, options.crashes));
        }
    }
    println!("\nbench took {:.0} s", started.elapsed().as_secs_f64());
}

/// Runs the world of `n` data centres in a child process; echoes its output and returns
/// its table row.
fn world_child(n: usize, k: usize, options: &Options) -> Option<String> {
    let exe = std::env::current_exe().expect("the bench's own path");
    println!(
        "\n== {n} data centres × {k} instances ({} changes) ==",
        options.changes
    );
    let output = Command::new(exe)
        .args([
            "--child",
            &n.to_string(),
            "--instances",
            &k.to_string(),
            "--changes",
            &options.changes.to_string(),
        ])
        .output()
        .expect("run the child");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let mut row = None;
    for line in stdout.lines() {
        match line.strip_prefix("ROW ") {
            Some(r) => row = Some(r.to_owned()),
            None => println!("{line}"),
        }
    }
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(20).collect();
        println!(
            "the run of {n} data centres failed ({}):\n{}",
            output.status,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    row
}

// --- process figures ---------------------------------------------------------------------

/// CPU time (user + system) this process used so far.
fn cpu_time() -> Duration {
    // SAFETY: getrusage writes into the struct it is given and nothing else.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above; RUSAGE_SELF is always valid.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &raw mut usage) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| {
        Duration::from_secs(u64::try_from(t.tv_sec).unwrap_or(0))
            + Duration::from_micros(u64::try_from(t.tv_usec).unwrap_or(0))
    };
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Resident and peak resident memory of this process, MiB.
fn memory_mib() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| -> f64 {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// The `q`-quantile of `samples` (sorted here), nearest rank.
fn quantile(samples: &mut [Duration], q: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    samples.sort();
    let rank = (q * samples.len() as f64).ceil() as usize;
    samples[rank.clamp(1, samples.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

// --- the world ---------------------------------------------------------------------------

/// The engine settings of a daemon started with no sync flags.
fn daemon_settings() -> EngineSettings {
    EngineSettings {
        export: true,
        lease: CopyLease::from_lease(Duration::from_secs(30)),
        origin_grace: Duration::from_secs(60),
        keep_stale: false,
        keep_stale_for: Duration::from_secs(24 * 3600),
        anti_entropy_interval: Duration::from_secs(10),
        removal_cap: 1000,
        removal_hold: syncer::sync::hold::MASS_REMOVAL_HOLD,
        removals_from: None,
        filter: Default::default(),
    }
}

/// What the world carried: peer calls, gossip datagrams and registry calls, all data centres.
#[derive(Debug, Clone, Copy, Default)]
struct Traffic {
    pushes: u64,
    pulls: u64,
    contracts: u64,
    failed: u64,
    datagrams: u64,
    registry_calls: u64,
}

impl Traffic {
    fn of(world: &World) -> Traffic {
        let link = world.link.stats();
        Traffic {
            pushes: link.pushes,
            pulls: link.pulls,
            contracts: link.contracts,
            failed: link.failed,
            datagrams: world.net.delivered(),
            registry_calls: (0..world.dcs.len())
                .map(|dc| world.registry(dc).calls().values().sum::<u64>())
                .sum(),
        }
    }

    fn minus(self, o: Traffic) -> Traffic {
        Traffic {
            pushes: self.pushes - o.pushes,
            pulls: self.pulls - o.pulls,
            contracts: self.contracts - o.contracts,
            failed: self.failed - o.failed,
            datagrams: self.datagrams - o.datagrams,
            registry_calls: self.registry_calls - o.registry_calls,
        }
    }

    /// Per second over `period`.
    fn rate(self, period: Duration) -> [f64; 5] {
        let s = period.as_secs_f64();
        [
            self.pushes as f64 / s,
            self.pulls as f64 / s,
            self.datagrams as f64 / s,
            self.registry_calls as f64 / s,
            self.failed as f64 / s,
        ]
    }
}

/// The figures of one world run.
#[derive(Debug, Default)]
struct WorldFigures {
    dcs: usize,
    instances: usize,
    pool: Duration,
    converge: Duration,
    converge_wall: Duration,
    idle: [f64; 5],
    idle_cpu_per_s: f64,
    delivery_p50: Duration,
    delivery_p99: Duration,
    all_p50: Duration,
    all_p99: Duration,
    /// Wall time of one change and its gap (the simulation's work for it), median.
    change_wall: Duration,
    per_change: [f64; 4],
    actors: usize,
    rss: f64,
    peak: f64,
    cpu: Duration,
    wall: Duration,
}

impl WorldFigures {
    fn header() -> String {
        "DCs | inst/DC | pool s | converge s (wall s) | idle push/s pull/s dgram/s reg/s | \
         idle CPU % | one DC p50/p99 ms | all DCs p50/p99 ms | per change push pull dgram reg | \
         wall ms/change | actors/syncer | RSS/peak MiB | CPU s / wall s"
            .into()
    }

    fn row(&self) -> String {
        format!(
            "{} | {} | {:.1} | {:.1} ({:.1}) | {:.1} {:.1} {:.0} {:.0} | {:.0} | {:.0}/{:.0} | \
             {:.0}/{:.0} | {:.1} {:.1} {:.0} {:.0} | {:.0} | {} | {:.0}/{:.0} | {:.1} / {:.1}",
            self.dcs,
            self.instances,
            self.pool.as_secs_f64(),
            self.converge.as_secs_f64(),
            self.converge_wall.as_secs_f64(),
            self.idle[0],
            self.idle[1],
            self.idle[2],
            self.idle[3],
            self.idle_cpu_per_s * 100.0,
            ms(self.delivery_p50),
            ms(self.delivery_p99),
            ms(self.all_p50),
            ms(self.all_p99),
            self.per_change[0],
            self.per_change[1],
            self.per_change[2],
            self.per_change[3],
            ms(self.change_wall),
            self.actors,
            self.rss,
            self.peak,
            self.cpu.as_secs_f64(),
            self.wall.as_secs_f64(),
        )
    }
}

/// Copies of `origin`'s instances that every data centre's importer of it holds now
/// (`None` for the origin itself), from the engines' status (no registry call).
fn present_of(world: &World, origin: &str) -> Vec<Option<u64>> {
    world
        .dcs
        .iter()
        .map(|dc| {
            if dc.name == origin {
                return None;
            }
            Some(
                dc.members[0]
                    .handle
                    .origins()
                    .iter()
                    .find(|o| o.origin == origin)
                    .map_or(0, |o| o.state.present),
            )
        })
        .collect()
}

/// Copies every data centre holds, summed over its importers.
fn copies_held(world: &World) -> Vec<u64> {
    world
        .dcs
        .iter()
        .map(|dc| {
            dc.members[0]
                .handle
                .origins()
                .iter()
                .map(|o| o.state.present)
                .sum()
        })
        .collect()
}

async fn world_run(n: usize, options: &Options) -> WorldFigures {
    let k = options.instances_at(0);
    let wall = WallInstant::now();
    let cpu0 = cpu_time();
    let mut figures = WorldFigures {
        dcs: n,
        instances: k,
        ..WorldFigures::default()
    };

    // The pool forms (every engine runs, nothing registered yet).
    let start = Instant::now();
    let mut world =
        World::of_kinds_on(&vec![Kind::ServiceComb; n], daemon_settings(), Profile::Lan).await;
    figures.pool = start.elapsed();
    for dc in 0..n {
        world.registry(dc).set_feed_lag(FEED_LAG);
    }
    println!(
        "pool of {n} formed after {:.1} s virtual ({:.1} s wall)",
        figures.pool.as_secs_f64(),
        wall.elapsed().as_secs_f64()
    );

    // K instances in every data centre, then until every one holds the (N-1) × K copies.
    for dc in 0..n {
        for i in 0..k {
            let service = format!("svc{}", i % SERVICES);
            world
                .register(dc, &service, &format!("i{}-{i}", dc + 1))
                .await;
        }
    }
    let want = u64::try_from((n - 1) * k).expect("fits");
    let start = Instant::now();
    let wall_start = WallInstant::now();
    loop {
        let held = copies_held(&world);
        if held.iter().all(|&h| h == want) {
            break;
        }
        if start.elapsed() > Duration::from_secs(600) {
            let short: usize = held.iter().filter(|&&h| h != want).count();
            panic!("{short} data centres still short of {want} copies after 600 s: {held:?}");
        }
        tokio::time::sleep(CONVERGE_STEP).await;
    }
    figures.converge = start.elapsed();
    figures.converge_wall = wall_start.elapsed();
    println!(
        "{} instances mirrored into every data centre ({} copies each) after {:.1} s virtual \
         ({:.1} s wall)",
        n * k,
        want,
        figures.converge.as_secs_f64(),
        figures.converge_wall.as_secs_f64()
    );

    // Let the initial import's pulls and announcements die down, then the idle baseline.
    world.pass(Duration::from_secs(15)).await;
    let before = Traffic::of(&world);
    let (cpu_before, wall_before) = (cpu_time(), WallInstant::now());
    world.pass(IDLE_WINDOW).await;
    let idle = Traffic::of(&world).minus(before);
    figures.idle = idle.rate(IDLE_WINDOW);
    figures.idle_cpu_per_s = (cpu_time() - cpu_before).as_secs_f64() / IDLE_WINDOW.as_secs_f64();
    println!(
        "idle, per second of virtual time: {:.1} pushes, {:.1} pulls, {:.0} gossip datagrams, \
         {:.0} registry calls, {:.1} failed calls; simulation CPU {:.2} s per virtual s \
         ({:.1} s wall for {} s)",
        figures.idle[0],
        figures.idle[1],
        figures.idle[2],
        figures.idle[3],
        figures.idle[4],
        figures.idle_cpu_per_s,
        wall_before.elapsed().as_secs_f64(),
        IDLE_WINDOW.as_secs()
    );

    // C changes, one at a time: a new instance in a rotating origin.
    let names: Vec<String> = (0..n).map(|dc| world.name(dc).to_owned()).collect();
    let mut expected: BTreeMap<usize, u64> = (0..n).map(|dc| (dc, k as u64)).collect();
    let mut delivery = Vec::new();
    let mut to_all = Vec::new();
    let before = Traffic::of(&world);
    let phase = Instant::now();
    let mut wall_per_change = Vec::new();
    for c in 0..options.changes {
        let origin = c % n;
        let count = expected.get_mut(&origin).expect("every dc");
        *count += 1;
        let want = *count;
        world
            .register(origin, "svc0", &format!("p{}-{c}", origin + 1))
            .await;
        let start = Instant::now();
        let wall_start = WallInstant::now();
        let mut arrived = vec![false; n];
        arrived[origin] = true;
        loop {
            for (dc, present) in present_of(&world, &names[origin]).into_iter().enumerate() {
                if !arrived[dc] && present.is_some_and(|p| p >= want) {
                    arrived[dc] = true;
                    delivery.push(start.elapsed());
                }
            }
            if arrived.iter().all(|&a| a) {
                break;
            }
            assert!(
                start.elapsed() < CHANGE_DEADLINE,
                "change {c} from {} did not reach every data centre within {CHANGE_DEADLINE:?}",
                names[origin]
            );
            tokio::time::sleep(CHANGE_STEP).await;
        }
        to_all.push(start.elapsed());
        world.pass(CHANGE_GAP).await;
        wall_per_change.push(wall_start.elapsed());
    }
    let period = phase.elapsed();
    let traffic = Traffic::of(&world).minus(before);
    let idle_share = |rate: f64| rate * period.as_secs_f64();
    let per_change = |total: u64, idle_rate: f64| {
        (total as f64 - idle_share(idle_rate)).max(0.0) / options.changes.max(1) as f64
    };
    figures.per_change = [
        per_change(traffic.pushes, figures.idle[0]),
        per_change(traffic.pulls, figures.idle[1]),
        per_change(traffic.datagrams, figures.idle[2]),
        per_change(traffic.registry_calls, figures.idle[3]),
    ];
    figures.delivery_p50 = quantile(&mut delivery, 0.5);
    figures.delivery_p99 = quantile(&mut delivery, 0.99);
    figures.all_p50 = quantile(&mut to_all, 0.5);
    figures.all_p99 = quantile(&mut to_all, 0.99);
    figures.change_wall = quantile(&mut wall_per_change, 0.5);
    println!(
        "{} changes: one data centre has the copy after p50 {:.0} ms / p99 {:.0} ms, all of \
         them after p50 {:.0} ms / p99 {:.0} ms (virtual); per change above idle: {:.1} \
         pushes, {:.1} pulls, {:.0} gossip datagrams, {:.0} registry calls ({} contract \
         calls, {} failed calls in the phase); {:.0} ms wall per change and gap (median)",
        options.changes,
        ms(figures.delivery_p50),
        ms(figures.delivery_p99),
        ms(figures.all_p50),
        ms(figures.all_p99),
        figures.per_change[0],
        figures.per_change[1],
        figures.per_change[2],
        figures.per_change[3],
        traffic.contracts,
        traffic.failed,
        ms(figures.change_wall),
    );

    // What each syncer runs: an import actor per origin, a push loop per peer.
    figures.actors = world.dcs[0].members[0].handle.origins().len();
    world
        .check_invariants()
        .unwrap_or_else(|e| panic!("invariant broken: {e}"));
    (figures.rss, figures.peak) = memory_mib();
    figures.cpu = cpu_time() - cpu0;
    figures.wall = wall.elapsed();
    println!(
        "each syncer runs {} import actors and {} push loops (one per other data centre); \
         process RSS {:.0} MiB (peak {:.0} MiB, {:.1} MiB per data centre with its registry \
         and store); CPU {:.1} s in {:.1} s wall",
        figures.actors,
        figures.actors,
        figures.rss,
        figures.peak,
        figures.rss / n as f64,
        figures.cpu.as_secs_f64(),
        figures.wall.as_secs_f64()
    );
    world.shutdown().await;
    figures
}

// --- gossip at scale ---------------------------------------------------------------------

fn gossip_addr(i: usize) -> SocketAddr {
    let i = u32::try_from(i).expect("few members");
    SocketAddr::from(([127, 1, (i / 250) as u8, (i % 250) as u8 + 1], 7946))
}

struct Node {
    handle: GossipHandle,
    token: CancellationToken,
    tracker: TaskTracker,
}

fn start_node(net: &MemoryNetwork, i: usize) -> Node {
    let addr = gossip_addr(i);
    let socket = net.bind(addr).expect("bind");
    let mut meta = NodeMeta::new(
        format!("dc{}", i + 1),
        SocketAddr::new(addr.ip(), 30191),
        "single",
    );
    meta.protocol = syncer::rpc::PROTOCOL_VERSION;
    let config = GossipConfig {
        identity: NodeId {
            name: format!("m{i:03}"),
            addr,
            generation: 1,
            bump: 0,
            meta,
        },
        label: String::new(),
        profile: Profile::Lan,
        join: if i == 0 {
            Vec::new()
        } else {
            vec![gossip_addr(0).to_string()]
        },
        state_file: None,
        remembered: Vec::new(),
        previous_generation: None,
        resolver: None,
        seed: Some(i as u64 + 1),
        keyring: None,
    };
    let token = CancellationToken::new();
    let tracker = TaskTracker::new();
    let handle = gossip::spawn(
        config,
        Arc::new(socket),
        GossipMetrics::default(),
        token.clone(),
        &tracker,
    );
    Node {
        handle,
        token,
        tracker,
    }
}

/// How many members `node` sees with `status`, and whether it sees `name` with it.
async fn seen(node: &Node, status: MemberStatus, name: Option<&str>) -> (usize, bool) {
    let members = node.handle.members().await.unwrap_or_default();
    let count = members.iter().filter(|m| m.status == status).count();
    let named = name.is_some_and(|name| {
        members
            .iter()
            .any(|m| m.id.name == name && m.status == status)
    });
    (count, named)
}

/// The detection bound of the `lan` profile for `m` members ([`Timing::detection_bound`]):
/// the crashed member is probed by someone within k periods with probability 1 - e^-k, the
/// probe and its indirect probes take one period, suspicion lasts its timeout, and the
/// verdict spreads in ⌈log4(m) + ln(m)/3⌉ periodic gossip rounds (fan-out 3 every 200 ms).
fn gossip_bound(m: usize) -> (Duration, Duration, String) {
    let lan = Profile::Lan.timing();
    let rounds = Timing::dissemination_rounds(m);
    let likely = lan.detection_bound(m, 3);
    let sure = lan.detection_bound(m, 7);
    (
        likely,
        sure,
        format!(
            "k × 0.5 s (probed within k periods: k = 3 for 95 %, 7 for 99.9 %) + 0.5 s (probe + \
             indirect probes) + 1.5 s (suspicion) + {rounds} rounds × 0.2 s (dissemination, \
             ⌈log4({m}) + ln({m})/3⌉) = {:.1} s (95 %) / {:.1} s (99.9 %)",
            likely.as_secs_f64(),
            sure.as_secs_f64()
        ),
    )
}

async fn gossip_run(m: usize, crashes: usize) {
    println!("\n== gossip: {m} members, lan profile, in memory ==");
    let net = MemoryNetwork::new();
    let wall = WallInstant::now();
    let cpu0 = cpu_time();
    let nodes: Vec<Node> = (0..m).map(|i| start_node(&net, i)).collect();
    let start = Instant::now();
    let step = Duration::from_millis(100);
    let mut last_full = vec![None; m];
    loop {
        for (i, node) in nodes.iter().enumerate() {
            if last_full[i].is_none() && seen(node, MemberStatus::Alive, None).await.0 == m {
                last_full[i] = Some(start.elapsed());
            }
        }
        if last_full.iter().all(Option::is_some) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "{m} members did not converge within 600 s: {} did",
            last_full.iter().filter(|t| t.is_some()).count()
        );
        tokio::time::sleep(step).await;
    }
    let mut times: Vec<Duration> = last_full.into_iter().flatten().collect();
    let converge = quantile(&mut times, 1.0);
    let converge_p50 = quantile(&mut times, 0.5);
    let datagrams = net.delivered();
    println!(
        "join through one seed: every member sees all {m} alive after {:.1} s virtual (half of \
         them after {:.1} s); {datagrams} datagrams ({:.0} per member); {:.1} s wall",
        converge.as_secs_f64(),
        converge_p50.as_secs_f64(),
        datagrams as f64 / m as f64,
        wall.elapsed().as_secs_f64()
    );

    // Idle traffic of the formed pool.
    let before = net.delivered();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let idle = (net.delivered() - before) as f64 / 10.0;
    println!(
        "idle: {idle:.0} datagrams/s in the pool ({:.1} per member)",
        idle / m as f64
    );

    let (likely, bound, formula) = gossip_bound(m);
    let mut detections = Vec::new();
    for round in 0..crashes {
        // A different member each round, away from the seed.
        let victim = m - 1 - round * (m / crashes.max(1)).max(1);
        let name = format!("m{victim:03}");
        net.isolate(gossip_addr(victim));
        let start = Instant::now();
        let mut down_at = vec![None; m];
        down_at[victim] = Some(Duration::ZERO);
        let mut first_suspect = None;
        loop {
            for (i, node) in nodes.iter().enumerate() {
                if down_at[i].is_some() {
                    continue;
                }
                if seen(node, MemberStatus::Down, Some(&name)).await.1 {
                    down_at[i] = Some(start.elapsed());
                } else if first_suspect.is_none()
                    && seen(node, MemberStatus::Suspect, Some(&name)).await.1
                {
                    first_suspect = Some(start.elapsed());
                }
            }
            if down_at.iter().all(Option::is_some) {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "{name} not seen down everywhere within 120 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut times: Vec<Duration> = down_at
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != victim)
            .filter_map(|(_, t)| *t)
            .collect();
        let all = quantile(&mut times, 1.0);
        let first = quantile(&mut times, 0.0);
        let half = quantile(&mut times, 0.5);
        println!(
            "crash {}: {name} first suspected after {:.2} s, first seen down after {:.2} s, by \
             half after {:.2} s, by all {} others after {:.2} s (virtual)",
            round + 1,
            first_suspect.unwrap_or_default().as_secs_f64(),
            first.as_secs_f64(),
            half.as_secs_f64(),
            m - 1,
            all.as_secs_f64()
        );
        detections.push(all);
        // Heal it and let it rejoin before the next round (it refutes and comes back).
        net.heal_all();
        let start = Instant::now();
        loop {
            let mut back = true;
            for node in &nodes {
                back &= seen(node, MemberStatus::Alive, None).await.0 == m;
                if !back {
                    break;
                }
            }
            if back || start.elapsed() > Duration::from_secs(120) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let worst = detections.iter().max().copied().unwrap_or_default();
    println!(
        "crash seen by all: worst {:.2} s over {crashes} rounds; bound of the profile: {formula} \
         ({}); {:.1} s CPU, {:.1} s wall",
        worst.as_secs_f64(),
        if worst <= likely {
            "within the 95 % bound"
        } else if worst <= bound {
            "within the 99.9 % bound"
        } else {
            "ABOVE the bound"
        },
        (cpu_time() - cpu0).as_secs_f64(),
        wall.elapsed().as_secs_f64()
    );
    for node in nodes {
        node.token.cancel();
        node.tracker.close();
        node.tracker.wait().await;
    }
}

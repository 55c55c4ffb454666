//! The admin dump at SC's default quota: 150 000 instances read by the ServiceComb adapter.
//!
//! A `syncer dev-registry` process is filled with 150 000 instances in 3 000 services of
//! realistic sizes (2 000 × 20, 900 × 100, 100 × 200) spread over three tenants, each
//! instance with two endpoints, a push health check, a data centre and three properties
//! (about 700 bytes of dump per instance). Then, per run, a child process (this binary with
//! `--child`, jemalloc configured as the `syncer` binary configures it) opens the adapter's
//! change feed and takes its first batch: the dump, read through the adapter's real code path
//! (`dump.rs`) into a [`Change::Resync`] and the feed's own state. The child reports:
//! - the time of the read and the bytes received;
//! - its resident memory (VmRSS) before, right after the read with the snapshot held, and
//!   steady after the snapshot is handed on (dropped, as the engine does once it has
//!   reconciled) with the feed's state kept; and its peak (VmHWM);
//! - a second dump (the periodic resync) and the peak after it.
//!
//! The emulator runs in its own process so that its memory is not counted. Goal (issue 15):
//! RSS under 64 MiB steady, peak stated.
//!
//! Run with `cargo bench --bench sc_dump [-- --runs N]`; docs/PERFORMANCE.md records the
//! figures. Filling the registry takes a minute or two.

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The `syncer` binary's jemalloc options (src/main.rs), so that the child's memory is the
/// daemon's.
#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: &[u8; 70] =
    b"narenas:1,background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use serde_json::json;
use syncer::registry::servicecomb::{ServiceComb, ServiceCombConfig};
use syncer::registry::{Change, Registry};
use url::Url;

/// Services by size: (how many, instances each). 150 000 instances in all.
const SIZES: [(usize, usize); 3] = [(2_000, 20), (900, 100), (100, 200)];
/// Tenants the services are spread over, round robin: (domain, project).
const TENANTS: [(&str, &str); 3] = [("default", "default"), ("shop", "prod"), ("pay", "prod")];
/// Registrations in flight while filling.
const FILL_CONCURRENCY: usize = 32;
/// The memory goal of the daemon.
const GOAL_MIB: f64 = 64.0;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        // A test runner (cargo-nextest) asking for tests: this binary has none.
        return;
    }
    if args.iter().any(|a| a == "--child-model") {
        model_costs();
        return;
    }
    if let Some(at) = args.iter().position(|a| a == "--child") {
        let url = args.get(at + 1).expect("--child <url>");
        child(url);
        return;
    }
    if !args.iter().any(|a| a == "--bench") {
        // `cargo test --all-targets` runs benches without `--bench`: nothing to check here.
        eprintln!("sc_dump measures only under `cargo bench --bench sc_dump`");
        return;
    }
    let runs = args
        .iter()
        .position(|a| a == "--runs")
        .and_then(|at| args.get(at + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(3);
    parent(runs);
}

fn parent(runs: usize) {
    let dir = tempfile::tempdir().expect("temp dir");
    let registry = common::start_registry("dev-registry", dir.path(), false);
    common::print_machine("the dev registry (a separate process) and this bench share them");
    let started = Instant::now();
    let total = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(fill(&registry.url));
    let (rss, _) = registry.proc.memory_kib();
    println!(
        "registry: {total} instances in {} services over {} tenants, filled in {:.0} s \
         (dev registry RSS {:.0} MiB, not counted)",
        SIZES.iter().map(|(n, _)| n).sum::<usize>(),
        TENANTS.len(),
        started.elapsed().as_secs_f64(),
        rss as f64 / 1024.0
    );
    for run in 1..=runs {
        let output = Command::new(std::env::current_exe().expect("own path"))
            .args(["--child", &registry.url])
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .expect("child");
        assert!(output.status.success(), "child failed: {:?}", output.status);
        print!("run {run}: {}", String::from_utf8_lossy(&output.stdout));
    }
    let output = Command::new(std::env::current_exe().expect("own path"))
        .arg("--child-model")
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .expect("child");
    print!("{}", String::from_utf8_lossy(&output.stdout));
    daemon(&registry.url, dir.path());
}

/// Where the snapshot's memory goes: 150 000 instances shaped like the bench's, built
/// directly in the model (no registry, no dump), and their property maps alone.
fn model_costs() {
    use std::collections::BTreeMap;
    use syncer::registry::model::DataCenterInfo;
    use syncer::registry::{HealthCheck, Instance, Tenant};
    let count: usize = SIZES.iter().map(|(n, size)| n * size).sum();
    let properties = |k: usize| {
        BTreeMap::from([
            ("engineID".to_owned(), "default".to_owned()),
            ("framework".to_owned(), "java-chassis".to_owned()),
            ("zone".to_owned(), format!("zone-{}", k % 3)),
        ])
    };
    let (before, _) = memory_mib();
    let maps: Vec<BTreeMap<String, String>> = (0..count).map(properties).collect();
    let (with_maps, _) = memory_mib();
    drop(maps);
    let settled = settled_rss();
    let instances: Vec<Instance> = (0..count)
        .map(|k| {
            let (n, ip) = (
                k / 50,
                format!("10.{}.{}.{}", k / 62_500, (k / 250) % 250, k % 250),
            );
            Instance {
                tenant: Tenant::new("shop", "prod"),
                service_id: format!("bench-svc-{n:04}"),
                instance_id: format!("{k:032x}"),
                endpoints: vec![
                    format!("rest://{ip}:8080?sslEnabled=false"),
                    format!("highway://{ip}:7070?sslEnabled=false"),
                ],
                host_name: format!("svc{n:04}-pod-{k:03}-7d9f8c6b5-x2x4z"),
                status: "UP".into(),
                properties: properties(k),
                health_check: Some(HealthCheck {
                    mode: "push".into(),
                    interval: 30,
                    times: 3,
                    port: 0,
                    url: String::new(),
                }),
                data_center: Some(DataCenterInfo {
                    name: "dc1".into(),
                    region: "eu-west".into(),
                    available_zone: "az1".into(),
                }),
                version: "1.0.0".into(),
                mod_timestamp: Some(1_700_000_000),
            }
        })
        .collect();
    let (with_instances, _) = memory_mib();
    let per = |mib: f64| mib * 1_048_576.0 / count as f64;
    println!(
        "model: {count} instances built directly take {:.1} MiB ({:.0} B each; the struct \
         itself {} B); their 3-entry property maps alone {:.1} MiB ({:.0} B each)",
        with_instances - settled,
        per(with_instances - settled),
        std::mem::size_of::<Instance>(),
        with_maps - before,
        per(with_maps - before),
    );
    drop(instances);
}

/// How long the daemon is watched after its first dump: past one periodic resync (30 s).
const DAEMON_WATCH: Duration = Duration::from_secs(40);

/// A whole `syncer daemon` (one data centre, no peers) started on the filled registry: its
/// RSS from the end of its first dump over [`DAEMON_WATCH`], and its peak. This is the
/// adapter plus what the sync engine keeps of 150 000 local instances.
fn daemon(registry: &str, dir: &std::path::Path) {
    let data = dir.join("daemon");
    std::fs::create_dir_all(&data).expect("data dir");
    let mut cmd = common::syncer(&data);
    cmd.arg("daemon")
        .args(["--sc-addr", registry])
        .args(["--bind-addr", "127.0.0.1:0", "--rpc-addr", "127.0.0.1:0"])
        .args(["--admin-addr", "127.0.0.1:0"])
        .args(["--node", "dc1-a", "--cluster-name", "dc1"])
        .arg("--data-dir")
        .arg(&data)
        .args(["--gossip-profile", "local", "--log-format", "json"]);
    let spawned = Instant::now();
    let (proc, _, fields) = common::spawn_daemon("daemon", cmd);
    let admin = common::ready_field(&fields, "admin_addr");
    let metrics = format!("http://{admin}/metrics");
    let dumped = |text: &str| {
        text.lines()
            .filter(|l| l.starts_with("syncer_registry_response_bytes_total"))
            .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
            .sum::<f64>()
            > 50e6
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let text = get_text(&metrics);
        if dumped(&text) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the daemon did not read its first dump; log:\n{}",
            proc.tail()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let first = spawned.elapsed();
    let mib = |kib: u64| kib as f64 / 1024.0;
    let watch = Instant::now();
    let (mut low, mut high, mut last) = (f64::MAX, 0.0f64, 0.0);
    while watch.elapsed() < DAEMON_WATCH {
        std::thread::sleep(Duration::from_millis(250));
        let (rss, _) = proc.memory_kib();
        last = mib(rss);
        low = low.min(last);
        high = high.max(last);
    }
    let (_, peak) = proc.memory_kib();
    println!(
        "syncer daemon (one DC, no peers): first dump read {:.1} s after start; RSS over the \
         next {} s: {low:.1}-{high:.1} MiB, at the end {last:.1} MiB; peak (VmHWM) {:.1} MiB",
        first.as_secs_f64(),
        DAEMON_WATCH.as_secs(),
        mib(peak)
    );
    for (message, count) in proc.problems().iter().take(8) {
        println!("  daemon logged {count}× {message}");
    }
}

/// The text at `url`, or nothing when it cannot be read (the parent runs no runtime of its
/// own while it watches the daemon).
fn get_text(url: &str) -> String {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        match reqwest::get(url).await {
            Ok(response) => response.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    })
}

/// Creates the services and registers the instances; returns the number registered.
async fn fill(url: &str) -> usize {
    let client = reqwest::Client::new();
    let mut services = Vec::new();
    for (count, size) in SIZES {
        for _ in 0..count {
            let n = services.len();
            services.push((n, size, TENANTS[n % TENANTS.len()]));
        }
    }
    stream::iter(&services)
        .map(|&(n, _, (domain, project))| {
            let client = client.clone();
            async move {
                let body = json!({"service": {
                    "serviceId": format!("bench-svc-{n:04}"),
                    "appId": format!("app-{}", n % 40),
                    "serviceName": format!("service-{n:04}"),
                    "version": "1.0.0",
                    "schemas": ["hello", "status"],
                    "properties": {"owner": "team-a", "allowCrossApp": "false"},
                }});
                let request = client
                    .post(format!("{url}/v4/{project}/registry/microservices"))
                    .header("x-domain-name", domain)
                    .json(&body);
                common::call(request)
                    .await
                    .unwrap_or_else(|e| panic!("create service {n}: {e}"));
            }
        })
        .buffer_unordered(FILL_CONCURRENCY)
        .collect::<Vec<()>>()
        .await;
    let instances = services
        .iter()
        .flat_map(|&(n, size, tenant)| (0..size).map(move |k| (n, k, tenant)));
    stream::iter(instances)
        .map(|(n, k, (domain, project))| {
            let client = client.clone();
            async move {
                let ip = format!("10.{}.{}.{}", n / 250, n % 250, k % 250);
                let body = json!({"instance": {
                    "hostName": format!("svc{n:04}-pod-{k:03}-7d9f8c6b5-x2x4z"),
                    "endpoints": [
                        format!("rest://{ip}:8080?sslEnabled=false"),
                        format!("highway://{ip}:7070?sslEnabled=false"),
                    ],
                    "status": "UP",
                    "healthCheck": {
                        "mode": "push",
                        "interval": common::LONG_LEASE.0,
                        "times": common::LONG_LEASE.1,
                    },
                    "dataCenterInfo": {"name": "dc1", "region": "eu-west", "availableZone": "az1"},
                    "properties": {
                        "engineID": "default",
                        "framework": "java-chassis",
                        "zone": format!("zone-{}", k % 3),
                    },
                }});
                let request = client
                    .post(format!(
                        "{url}/v4/{project}/registry/microservices/bench-svc-{n:04}/instances"
                    ))
                    .header("x-domain-name", domain)
                    .json(&body);
                common::call(request)
                    .await
                    .unwrap_or_else(|e| panic!("register {n}/{k}: {e}"));
            }
        })
        .buffer_unordered(FILL_CONCURRENCY)
        .count()
        .await
}

/// VmRSS and VmHWM of this process, in MiB.
fn memory_mib() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
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

/// RSS once it has stopped falling (jemalloc returns freed pages after about a second).
fn settled_rss() -> f64 {
    let mut last = memory_mib().0;
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(200));
        let now = memory_mib().0;
        if (last - now).abs() < 0.25 {
            return now;
        }
        last = now;
    }
    last
}

/// One measurement, in a process of its own.
#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn child(url: &str) {
    let url = Url::parse(url).expect("url");
    let sc = ServiceComb::new(ServiceCombConfig::new(vec![url])).expect("adapter");
    let mut feed = sc.change_feed();
    let (before, _) = memory_mib();

    let started = Instant::now();
    let batch = feed.next().await.expect("first dump");
    let took = started.elapsed();
    let [Change::Resync(snapshot)] = batch.as_slice() else {
        panic!("the first batch is one resync");
    };
    let (services, instances) = (snapshot.services.len(), snapshot.instances.len());
    let (held, peak) = memory_mib();
    let bytes = sc.metrics().received_bytes();
    drop(batch);
    let steady = settled_rss();

    // The periodic resync: a second dump while the feed keeps its state.
    let again = Instant::now();
    let snapshot = sc.snapshot().await.expect("second dump");
    let took_again = again.elapsed();
    assert_eq!(snapshot.instances.len(), instances);
    drop(snapshot);
    let steady_again = settled_rss();
    let (_, peak_again) = memory_mib();

    let verdict = if steady < GOAL_MIB { "met" } else { "MISSED" };
    println!(
        "dump of {instances} instances / {services} services, {:.1} MB, read in {:.2} s \
         ({:.0} MB/s); RSS before {before:.1} MiB, with the snapshot held {held:.1} MiB, \
         steady {steady:.1} MiB (goal < {GOAL_MIB} MiB: {verdict}), peak {peak:.1} MiB; \
         second dump {:.2} s, steady after it {steady_again:.1} MiB, peak {peak_again:.1} MiB",
        bytes as f64 / 1e6,
        took.as_secs_f64(),
        bytes as f64 / 1e6 / took.as_secs_f64(),
        took_again.as_secs_f64(),
    );
    // Keep the adapter and feed (the steady state) alive up to here.
    drop(feed);
    drop(sc);
}

//! The sync engine end to end, with real processes on loopback: per data centre one
//! `syncer dev-registry` and one `syncer daemon`, all daemons in one gossip pool. The bench
//! talks to the registries over their REST API (reqwest) and reads the daemons' /metrics.
//!
//! Figures (targets are printed, not asserted):
//! 1. register → visible in the other two data centres, p50 / p99 (target p50 ≤ 100 ms,
//!    p99 ≤ 500 ms), polling the other registries' instance lists every 2 ms;
//! 2. deregister → gone from the other two, p50 / p99 (target p99 ≤ 500 ms);
//! 3. beside both, the latency syncer itself reports, `syncer_sync_apply_latency_seconds`
//!    (origin syncer saw the change → this syncer wrote the copy), from the daemons' buckets;
//! 4. initial sync: 10 000 instances registered in dc1 while dc2's syncer is not running,
//!    then dc2's syncer is started; time until dc2's registry holds all 10 000 copies
//!    (target ≤ 10 s);
//! 5. keep-alive cost with 10 000 mirrored instances: registry calls per second made by dc2's
//!    syncer while idle (change feed and discovery apart; target ≤ 1 call/s), the
//!    daemon's resident memory (target ≤ 64 MiB) and both syncers' CPU over the 60 s idle
//!    window from `/proc/<pid>/stat` (target ≤ 2 % of one core for dc2's).
//!
//! Figures 1-3 run twice: dev registries in their default (fast) mode, then with
//! `--real-sc 2.x` (SC 2.x's 2 s delete check window, on both the origin's and the copies'
//! registries).
//!
//! Then the Eureka run (`sync_e2e/eureka.rs`): a ServiceComb and a Eureka data centre,
//! latency both ways, with Eureka's response cache on and off, and the keep-alive cost of
//! 10 000 copies in Eureka.
//!
//! With `-- --only-dcs 3,6,10 [--dcs-samples S] [--dcs-profile lan|local]`, only the
//! many-data-centre runs
//! (`sync_e2e/dcs.rs`): N data centres of 1 000 instances each, propagation to every other
//! one, calls and CPU per change, memory per daemon.
//!
//! Run with `cargo bench --bench sync_e2e [-- --quick] [-- --skip-10k | --only-10k |
//! --only-150k] [-- --skip-eureka | --only-eureka] [-- --only-tls]`; `--quick` takes fewer
//! samples and 1 000 instances instead of 10 000, `--only-10k` measures figures 4-5 alone,
//! `--only-150k` figures 4-5 alone with 149 900 instances (SC's default quota of 150 000 per
//! tenant, less room for the registry's own) in 1 499 services, `--only-eureka --only-10k`
//! the Eureka run's E4 alone, `--only-eureka`
//! the Eureka run alone, `--only-tls` figures 1-3 in plain text and then with every syncer on
//! mutual TLS and a sealed gossip pool, with the daemons' CPU. docs/PERFORMANCE.md records the
//! figures.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

mod common;
#[path = "sync_e2e/dcs.rs"]
mod dcs;
#[path = "sync_e2e/eureka.rs"]
mod eureka;

use common::{
    API, DevRegistry, Proc, call, create_service, instance_hosts, print_machine, ready_field,
    register, spawn_daemon, start_registry, syncer,
};
use futures::stream::{self, StreamExt};

/// Interval of the tight visibility polls.
const POLL_EVERY: Duration = Duration::from_millis(2);
/// Services per data centre in the latency runs (each with one anchor instance).
const LATENCY_SERVICES: usize = 4;
/// Instances per service in the initial-sync run.
const INSTANCES_PER_SERVICE: usize = 100;
/// Registrations in flight while filling dc1.
const FILL_CONCURRENCY: usize = 32;
/// Registry operations that belong to the change feed and discovery, not to keep-alive.
const FEED_OPS: [&str; 4] = ["feed_poll", "feed_statistics", "list_services", "dump"];
/// Domain prefix of the tenants figure 1c names in `--sc-tenants` (`<prefix>-<n>/default`).
const NAMED_TENANT: &str = "e2e-named";
/// Registry operations that keep copies alive.
const KEEPALIVE_OPS: [&str; 2] = ["heartbeat", "heartbeat_check"];

#[derive(Debug, Clone, Copy)]
struct Options {
    quick: bool,
    skip_10k: bool,
    /// Only the initial sync and keep-alive figures (for memory work).
    only_10k: bool,
    /// The same with 149 900 instances (SC's default quota, less the registry's own).
    only_150k: bool,
    /// Without the Eureka run.
    skip_eureka: bool,
    /// Only the Eureka run.
    only_eureka: bool,
    /// Only figures 1-3 in fast mode, in plain text and then over mutual TLS with a sealed
    /// gossip pool: what securing the links costs.
    only_tls: bool,
}

impl Options {
    /// Registrations (and deregistrations) timed per run of figures 1-2.
    fn samples(self) -> usize {
        if self.quick { 20 } else { 200 }
    }

    /// Deregistrations timed with `--real-sc 2.x` (each takes two 2 s check windows).
    fn new_services(self) -> usize {
        if self.quick { 12 } else { 60 }
    }

    /// First instances in a new tenant (each waits for a resync, up to 30 s).
    fn new_tenants(self) -> usize {
        if self.quick { 2 } else { 6 }
    }

    fn real_sc_deregistrations(self) -> usize {
        if self.quick { 10 } else { 50 }
    }

    /// Instances of the initial-sync run.
    fn instances(self) -> usize {
        if self.only_150k {
            // SC's default quota is 150 000 instances per tenant, the registry's own included.
            149_900
        } else if self.quick {
            1_000
        } else {
            10_000
        }
    }

    /// The idle window of figure 5 (and of the idle CPU figure, which issue 19 asks over a
    /// minute).
    fn idle(self) -> Duration {
        Duration::from_secs(if self.quick { 10 } else { 60 })
    }

    /// The idle window of the Eureka run's E4.
    fn eureka_idle(self) -> Duration {
        Duration::from_secs(if self.quick { 10 } else { 30 })
    }

    /// How long the fill, the export and the initial sync may take.
    fn bulk_deadline(self) -> Duration {
        Duration::from_secs(if self.only_150k {
            900
        } else if self.quick {
            60
        } else {
            180
        })
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        // A test runner (cargo-nextest) asking for tests: this binary has none.
        return;
    }
    if !args.iter().any(|a| a == "--bench") {
        // `cargo test --all-targets` runs benches without `--bench`: nothing to check here.
        eprintln!("sync_e2e measures only under `cargo bench --bench sync_e2e`");
        return;
    }
    let options = Options {
        quick: args.iter().any(|a| a == "--quick"),
        skip_10k: args.iter().any(|a| a == "--skip-10k"),
        only_10k: args.iter().any(|a| a == "--only-10k" || a == "--only-150k"),
        only_150k: args.iter().any(|a| a == "--only-150k"),
        skip_eureka: args.iter().any(|a| a == "--skip-eureka"),
        only_eureka: args.iter().any(|a| a == "--only-eureka"),
        only_tls: args.iter().any(|a| a == "--only-tls"),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    if let Some(list) = args
        .iter()
        .position(|a| a == "--only-dcs")
        .and_then(|i| args.get(i + 1))
    {
        let counts: Vec<usize> = list
            .split(',')
            .map(|n| match n.trim().parse() {
                Ok(n) if n >= 2 => n,
                _ => panic!("--only-dcs: `{n}` is not a number of data centres (2 or more)"),
            })
            .collect();
        let samples = args
            .iter()
            .position(|a| a == "--dcs-samples")
            .and_then(|i| args.get(i + 1))
            .map_or(30, |n| n.parse().expect("--dcs-samples: a number"));
        let profile = match args
            .iter()
            .position(|a| a == "--dcs-profile")
            .and_then(|i| args.get(i + 1))
            .map(String::as_str)
        {
            None | Some("lan") => "lan",
            Some("local") => "local",
            Some(other) => panic!("--dcs-profile: `{other}` is not lan or local"),
        };
        runtime.block_on(dcs_runs(&counts, samples, profile));
        return;
    }
    runtime.block_on(run(options));
}

/// `--only-dcs 3,6,10`: the many-data-centre runs (`sync_e2e/dcs.rs`), then their table.
async fn dcs_runs(counts: &[usize], samples: usize, profile: &str) {
    let started = Instant::now();
    print_machine("every registry, daemon and the bench share them");
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("http client");
    let dir = tempfile::tempdir().expect("temp dir");
    let mut rows = Vec::new();
    for &n in counts {
        rows.push(
            dcs::dcs_run(&client, n, samples, profile, dir.path())
                .await
                .row(),
        );
    }
    println!("\n{}", dcs::DcsRun::header());
    for row in rows {
        println!("{row}");
    }
    println!("\nbench took {:.0} s", started.elapsed().as_secs_f64());
}

async fn run(options: Options) {
    let started = Instant::now();
    print_machine("every registry, daemon and the bench share them");
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("http client");
    let mut report = Report::default();
    if options.only_tls {
        let plain = latency_run(&client, options, false, None).await;
        let pki = tempfile::tempdir().expect("temp dir");
        let secured = Secured::make(pki.path());
        let tls = latency_run(&client, options, false, Some(&secured)).await;
        print_tls_cost(&plain, &tls);
        println!("\nbench took {:.0} s", started.elapsed().as_secs_f64());
        return;
    }
    if options.only_eureka {
        let instances = if options.skip_10k {
            0
        } else {
            options.instances()
        };
        // With --only-10k too: E4 (memory and renewals of 10 000 copies) alone.
        let samples = if options.only_10k {
            0
        } else {
            options.samples() / 2
        };
        let run = eureka::eureka_run(&client, samples, instances, options.eureka_idle()).await;
        run.print();
        println!("\nbench took {:.0} s", started.elapsed().as_secs_f64());
        return;
    }

    if !options.only_10k {
        for real_sc in [false, true] {
            let result = latency_run(&client, options, real_sc, None).await;
            report.latency.push(result);
        }
    }
    if options.skip_10k {
        println!("\n(--skip-10k: initial sync and keep-alive not measured)");
    } else {
        report.bulk = Some(bulk_run(&client, options).await);
    }
    report.print(options);
    if !options.skip_eureka && !options.only_10k {
        let instances = if options.skip_10k {
            0
        } else {
            options.instances()
        };
        let run = eureka::eureka_run(
            &client,
            options.samples() / 2,
            instances,
            options.eureka_idle(),
        )
        .await;
        run.print();
    }
    println!("\nbench took {:.0} s", started.elapsed().as_secs_f64());
}

// ---------------------------------------------------------------------------------------
// Child processes.

struct Daemon {
    proc: Proc,
    /// When the process was spawned and when it logged that it is ready.
    spawned: Instant,
    ready: Instant,
    gossip_addr: String,
    admin: String,
}

/// Starts the syncer of data centre `dc` on 127.0.0.`ip` against `registry`.
fn start_daemon(dc: &str, ip: u8, registry: &str, join: Option<&str>, data_dir: &Path) -> Daemon {
    start_daemon_with(dc, ip, registry, join, data_dir, &[])
}

/// [`start_daemon`] with `extra` flags (e.g. `--sc-plugin eureka`).
fn start_daemon_with(
    dc: &str,
    ip: u8,
    registry: &str,
    join: Option<&str>,
    data_dir: &Path,
    extra: &[&str],
) -> Daemon {
    std::fs::create_dir_all(data_dir).expect("data dir");
    let addr = format!("127.0.0.{ip}:0");
    let node = format!("{dc}-a");
    let mut cmd = syncer(data_dir);
    cmd.arg("daemon")
        .args(["--sc-addr", registry])
        .args([
            "--bind-addr",
            &addr,
            "--rpc-addr",
            &addr,
            "--admin-addr",
            &addr,
        ])
        .args(["--node", &node, "--cluster-name", dc])
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--gossip-profile", "local", "--log-format", "json"])
        .args(extra);
    if let Some(join) = join {
        cmd.args(["--join-addr", join]);
    }
    let spawned = Instant::now();
    let (proc, ready, fields) = spawn_daemon(&format!("daemon {dc}"), cmd);
    Daemon {
        spawned,
        ready,
        gossip_addr: ready_field(&fields, "gossip_addr"),
        admin: ready_field(&fields, "admin_addr"),
        proc,
    }
}

/// Prints the warnings and errors a process logged, if any.
fn print_problems(proc: &Proc) {
    let problems = proc.problems();
    if problems.is_empty() {
        return;
    }
    println!("  {} logged:", proc.name);
    for (message, count) in problems.iter().take(8) {
        println!("    {count:>5} × {message}");
    }
    if problems.len() > 8 {
        println!("    … and {} other messages", problems.len() - 8);
    }
}

// ---------------------------------------------------------------------------------------
// Registry REST calls (reference: servicecomb-sc-v4-api.md).

async fn unregister(client: &reqwest::Client, url: &str, service_id: &str, instance_id: &str) {
    call(client.delete(format!(
        "{url}{API}/microservices/{service_id}/instances/{instance_id}"
    )))
    .await
    .unwrap_or_else(|e| panic!("unregister {instance_id} at {url}: {e}"));
}

/// Copies (instances whose id carries syncer's prefix) in the registry, from the admin dump.
async fn count_copies(client: &reqwest::Client, url: &str) -> Option<usize> {
    let response = client
        .get(format!("{url}/v4/default/admin/dump"))
        .send()
        .await
        .ok()?;
    let body = response.bytes().await.ok()?;
    let needle = b"\"instanceId\":\"syncer-";
    Some(body.windows(needle.len()).filter(|w| w == needle).count())
}

// ---------------------------------------------------------------------------------------
// Prometheus text.

#[derive(Debug, Clone)]
struct MetricSample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

#[derive(Debug, Clone, Default)]
struct Scrape(Vec<MetricSample>);

impl Scrape {
    fn parse(text: &str) -> Scrape {
        let mut samples = Vec::new();
        for line in text.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, parse_labels(rest.trim_end_matches('}'))),
                None => (series, BTreeMap::new()),
            };
            samples.push(MetricSample {
                name: name.to_owned(),
                labels,
                value,
            });
        }
        Scrape(samples)
    }

    fn value(&self, name: &str) -> f64 {
        self.0
            .iter()
            .filter(|s| s.name == name)
            .map(|s| s.value)
            .sum()
    }

    /// Sum of `name` by the value of `label`.
    fn by_label(&self, name: &str, label: &str) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        for s in self.0.iter().filter(|s| s.name == name) {
            let key = s.labels.get(label).cloned().unwrap_or_default();
            *out.entry(key).or_insert(0.0) += s.value;
        }
        out
    }

    /// The histogram `name` (cumulative buckets by upper bound, sum, count).
    fn histogram(&self, name: &str) -> Histogram {
        let mut buckets = BTreeMap::<u64, (f64, f64)>::new();
        let bucket_name = format!("{name}_bucket");
        for s in self.0.iter().filter(|s| s.name == bucket_name) {
            let le = match s.labels.get("le").map(String::as_str) {
                Some("+Inf") | None => f64::INFINITY,
                Some(v) => v.parse().unwrap_or(f64::INFINITY),
            };
            buckets.entry(le.to_bits()).or_insert((le, 0.0)).1 += s.value;
        }
        let mut buckets: Vec<(f64, f64)> = buckets.into_values().collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        Histogram {
            buckets,
            sum: self.value(&format!("{name}_sum")),
            count: self.value(&format!("{name}_count")),
        }
    }
}

fn parse_labels(text: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut rest = text;
    while let Some((key, after)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, escaped)) = chars.next() {
                        value.push(if escaped == 'n' { '\n' } else { escaped });
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        labels.insert(key.trim_start_matches(',').trim().to_owned(), value);
        rest = &after[end..];
    }
    labels
}

async fn scrape(client: &reqwest::Client, admin: &str) -> Scrape {
    let text = client
        .get(format!("http://{admin}/metrics"))
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics body");
    Scrape::parse(&text)
}

#[derive(Debug, Clone, Default)]
struct Histogram {
    /// (upper bound in seconds, cumulative count), ascending.
    buckets: Vec<(f64, f64)>,
    sum: f64,
    count: f64,
}

impl Histogram {
    /// `self - before`, bucket by bucket (same buckets).
    fn since(&self, before: &Histogram) -> Histogram {
        Histogram {
            buckets: self
                .buckets
                .iter()
                .map(|&(le, n)| {
                    let old = before
                        .buckets
                        .iter()
                        .find(|b| b.0 == le)
                        .map_or(0.0, |b| b.1);
                    (le, n - old)
                })
                .collect(),
            sum: self.sum - before.sum,
            count: self.count - before.count,
        }
    }

    fn add(&mut self, other: &Histogram) {
        if self.buckets.is_empty() {
            self.buckets.clone_from(&other.buckets);
        } else {
            for (mine, theirs) in self.buckets.iter_mut().zip(&other.buckets) {
                mine.1 += theirs.1;
            }
        }
        self.sum += other.sum;
        self.count += other.count;
    }

    fn mean(&self) -> Option<Duration> {
        (self.count > 0.0).then(|| Duration::from_secs_f64(self.sum / self.count))
    }

    /// The `q` quantile, interpolated linearly inside its bucket (as Prometheus'
    /// `histogram_quantile`); in the +Inf bucket, the highest finite bound.
    fn quantile(&self, q: f64) -> Option<Duration> {
        if self.count <= 0.0 {
            return None;
        }
        let rank = q * self.count;
        let mut lower = (0.0, 0.0);
        for &(le, n) in &self.buckets {
            if n >= rank {
                if le.is_infinite() {
                    return Some(Duration::from_secs_f64(lower.0));
                }
                let width = n - lower.1;
                let fraction = if width > 0.0 {
                    (rank - lower.1) / width
                } else {
                    1.0
                };
                return Some(Duration::from_secs_f64(lower.0 + (le - lower.0) * fraction));
            }
            lower = (le, n);
        }
        Some(Duration::from_secs_f64(lower.0))
    }

    fn describe(&self) -> String {
        match (self.mean(), self.quantile(0.5), self.quantile(0.99)) {
            (Some(mean), Some(p50), Some(p99)) => format!(
                "mean {}, p50 ≈ {}, p99 ≈ {} ({} observations)",
                fmt_ms(mean),
                fmt_ms(p50),
                fmt_ms(p99),
                self.count
            ),
            _ => "no observations".to_owned(),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Figures 1-3: latency across three data centres.

/// Latencies of one kind of change; `None` is a sample that timed out.
#[derive(Debug, Clone, Default)]
struct Latencies {
    /// Until the change was seen in both other data centres.
    both: Vec<Option<Duration>>,
    /// Until the first of them.
    first: Vec<Option<Duration>>,
    timeout: Duration,
    /// By (origin, destination) data centre index: until seen there.
    pairs: BTreeMap<(usize, usize), Vec<Option<Duration>>>,
    /// The daemons' own apply latency over the same period.
    apply: Histogram,
    /// Each daemon's push and pull counters over the same period, by `op/outcome`.
    transfers: Vec<BTreeMap<String, f64>>,
}

impl Latencies {
    fn percentile(values: &[Option<Duration>], p: usize) -> Option<Duration> {
        let mut sorted = values.to_vec();
        // Timeouts (None) sort last, as the slowest.
        sorted.sort_by(|a, b| match (a, b) {
            (Some(a), Some(b)) => a.cmp(b),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        });
        if sorted.is_empty() {
            return None;
        }
        let rank = (p * sorted.len()).div_ceil(100).clamp(1, sorted.len());
        sorted[rank - 1]
    }

    fn p(&self, p: usize) -> String {
        if self.both.is_empty() {
            return "-".into();
        }
        match Self::percentile(&self.both, p) {
            Some(d) => fmt_ms(d),
            None => format!("> {}", fmt_ms(self.timeout)),
        }
    }

    fn p_value(&self, p: usize) -> Option<Duration> {
        Self::percentile(&self.both, p)
    }

    /// Median by origin → destination, e.g. `dc1→dc2 81 ms`.
    fn by_pair(&self) -> String {
        self.pairs
            .iter()
            .map(|(&(o, d), values)| {
                let p50 = Self::percentile(values, 50).map_or("timeout".into(), fmt_ms);
                format!("dc{}→dc{} {p50}", o + 1, d + 1)
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn transfers(&self) -> String {
        self.transfers
            .iter()
            .enumerate()
            .map(|(k, counters)| {
                let counters: Vec<String> =
                    counters.iter().map(|(c, n)| format!("{c} {n}")).collect();
                format!("\n    dc{}: {}", k + 1, counters.join(", "))
            })
            .collect()
    }

    fn timeouts(&self) -> usize {
        self.both.iter().filter(|d| d.is_none()).count()
    }

    fn summary(&self) -> String {
        let first = |p| match Self::percentile(&self.first, p) {
            Some(d) => fmt_ms(d),
            None => "timeout".into(),
        };
        let max = self.p(100);
        format!(
            "{} samples: p50 {}, p99 {}, max {}; first of the two: p50 {}, p99 {}{}",
            self.both.len(),
            self.p(50),
            self.p(99),
            max,
            first(50),
            first(99),
            match self.timeouts() {
                0 => String::new(),
                n => format!("; {n} TIMED OUT after {}", fmt_ms(self.timeout)),
            }
        )
    }
}

struct LatencyRun {
    real_sc: bool,
    register: Latencies,
    /// The first instance of a brand-new service (created just before).
    new_service: Latencies,
    /// The first instance in a tenant syncer has not seen yet, named in `--sc-tenants` and
    /// not (fast mode only).
    new_tenant: Option<(Latencies, Latencies)>,
    deregister: Latencies,
    /// Anchor instances visible everywhere, from the last daemon ready.
    converged: Duration,
    /// CPU seconds of the three daemons over the registrations of figure 1.
    register_cpu: f64,
}

/// A data centre of a latency run: registry, syncer, and its services.
struct Dc {
    name: String,
    registry: DevRegistry,
    daemon: Option<Daemon>,
    services: Vec<String>,
}

struct Registered {
    origin: usize,
    service: String,
    instance: String,
    host: String,
}

/// A tiny xorshift generator for the pauses between samples.
struct Jitter(u64);

impl Jitter {
    fn next(&mut self, below: Duration) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        Duration::from_micros(self.0 % below.as_micros().max(1) as u64)
    }
}

async fn scrape_all(client: &reqwest::Client, dcs: &[Dc]) -> Vec<Scrape> {
    let mut out = Vec::new();
    for dc in dcs {
        let daemon = dc.daemon.as_ref().expect("daemon running");
        out.push(scrape(client, &daemon.admin).await);
    }
    out
}

/// Push and pull counters of each daemon between two scrapes, by `op/outcome`.
fn transfers_since(before: &[Scrape], after: &[Scrape]) -> Vec<BTreeMap<String, f64>> {
    let counters = |scrape: &Scrape| {
        let mut out = BTreeMap::new();
        for s in scrape
            .0
            .iter()
            .filter(|s| s.name == "syncer_sync_transfers_total")
        {
            let key = format!(
                "{}/{}",
                s.labels.get("op").map_or("?", String::as_str),
                s.labels.get("outcome").map_or("?", String::as_str)
            );
            *out.entry(key).or_insert(0.0) += s.value;
        }
        out
    };
    before
        .iter()
        .zip(after)
        .map(|(b, a)| {
            let old = counters(b);
            let mut new = counters(a);
            for (key, n) in &mut new {
                *n -= old.get(key).copied().unwrap_or(0.0);
            }
            new.retain(|_, n| *n > 0.0);
            new
        })
        .collect()
}

fn apply_since(before: &[Scrape], after: &[Scrape]) -> Histogram {
    let name = "syncer_sync_apply_latency_seconds";
    let mut total = Histogram::default();
    for (b, a) in before.iter().zip(after) {
        total.add(&a.histogram(name).since(&b.histogram(name)));
    }
    total
}

/// Polls the other registries until `host` is present (or absent) in `service` in each;
/// returns when each saw it, measured from `since`.
async fn watch(
    client: &reqwest::Client,
    urls: &[&str],
    (domain, service): (&str, &str),
    host: &str,
    present: bool,
    since: Instant,
    timeout: Duration,
) -> Vec<Option<Duration>> {
    let mut seen: Vec<Option<Duration>> = vec![None; urls.len()];
    while since.elapsed() < timeout {
        let pending: Vec<usize> = (0..urls.len()).filter(|&i| seen[i].is_none()).collect();
        if pending.is_empty() {
            break;
        }
        let answers = futures::future::join_all(
            pending
                .iter()
                .map(|&i| instance_hosts_in(client, urls[i], domain, service)),
        )
        .await;
        let now = since.elapsed();
        for (&i, hosts) in pending.iter().zip(answers) {
            if hosts.iter().any(|h| h == host) == present {
                seen[i] = Some(now);
            }
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
    seen
}

async fn latency_run(
    client: &reqwest::Client,
    options: Options,
    real_sc: bool,
    secured: Option<&Secured>,
) -> LatencyRun {
    let mode = match (real_sc, secured.is_some()) {
        (true, _) => "real-sc",
        (false, true) => "tls",
        (false, false) => "fast",
    };
    println!(
        "\n== figures 1-3: three data centres, dev registries in {} mode{}",
        if real_sc {
            "--real-sc 2.x (2 s delete check window)"
        } else {
            "default (fast)"
        },
        if secured.is_some() {
            ", syncers on mutual TLS with a sealed gossip pool"
        } else {
            ""
        }
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let base_ip = match mode {
        "real-sc" => 20,
        "tls" => 30,
        _ => 10,
    };
    let mut extra: Vec<String> = secured.map(Secured::flags).unwrap_or_default();
    // Figure 1c: the tenants of the named half are given to every syncer.
    let named_tenants: Vec<String> = (0..options.new_tenants())
        .map(|n| format!("{NAMED_TENANT}-{n}/default"))
        .collect();
    if mode == "fast" {
        extra.extend(["--sc-tenants".to_owned(), named_tenants.join(",")]);
    }
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let mut dcs: Vec<Dc> = (1..=3)
        .map(|k| {
            let name = format!("dc{k}");
            Dc {
                registry: start_registry(&format!("registry {name}"), dir.path(), real_sc),
                services: (0..LATENCY_SERVICES)
                    .map(|j| format!("e2e-{mode}-{name}-s{j}"))
                    .collect(),
                name,
                daemon: None,
            }
        })
        .collect();
    // Services (and one anchor instance in each) exist before the daemons start, so the
    // timed changes never wait for a service to be discovered or created.
    for dc in &dcs {
        for (j, service) in dc.services.iter().enumerate() {
            create_service(
                client,
                &dc.registry.url,
                service,
                &format!("{}-svc-{j}", dc.name),
            )
            .await;
            register(
                client,
                &dc.registry.url,
                service,
                &format!("anchor-{service}"),
                "rest://10.9.9.9:8080",
            )
            .await;
        }
    }
    let mut join: Option<String> = None;
    for (k, dc) in dcs.iter_mut().enumerate() {
        let daemon = start_daemon_with(
            &dc.name,
            base_ip + k as u8 + 1,
            &dc.registry.url,
            join.as_deref(),
            &dir.path().join(&dc.name),
            &extra,
        );
        join.get_or_insert_with(|| daemon.gossip_addr.clone());
        dc.daemon = Some(daemon);
    }
    let last_ready = dcs
        .iter()
        .filter_map(|dc| dc.daemon.as_ref().map(|d| d.ready))
        .max()
        .expect("daemons");

    // Every anchor visible in every other data centre.
    let deadline = Duration::from_secs(60);
    for (o, origin) in dcs.iter().enumerate() {
        let others: Vec<&str> = (0..3)
            .filter(|&k| k != o)
            .map(|k| dcs[k].registry.url.as_str())
            .collect();
        for service in &origin.services {
            let seen = watch(
                client,
                &others,
                ("default", service),
                &format!("anchor-{service}"),
                true,
                last_ready,
                deadline,
            )
            .await;
            if seen.iter().any(Option::is_none) {
                for dc in &dcs {
                    print_problems(&dc.daemon.as_ref().expect("daemon").proc);
                }
                panic!(
                    "anchor of {service} not mirrored within {deadline:?}; {} log:\n{}",
                    origin.name,
                    origin.daemon.as_ref().expect("daemon").proc.tail()
                );
            }
        }
    }
    let converged = last_ready.elapsed();
    println!(
        "daemons ready; anchors ({} services) mirrored everywhere {} after the last was ready",
        3 * LATENCY_SERVICES,
        fmt_ms(converged)
    );
    tokio::time::sleep(Duration::from_secs(1)).await;

    let samples = options.samples();
    let timeout = Duration::from_secs(if real_sc { 30 } else { 15 });
    let mut jitter = Jitter(0x9e37_79b9_7f4a_7c15 ^ u64::from(real_sc));

    // 1. register → visible in both other data centres.
    let cpu_before = daemons_cpu(&dcs);
    let before = scrape_all(client, &dcs).await;
    let startup = Latencies {
        transfers: transfers_since(&vec![Scrape::default(); dcs.len()], &before),
        ..Latencies::default()
    };
    println!(
        "push/pull calls by daemon from start to the first sample:{}",
        startup.transfers()
    );
    let mut register_latency = Latencies {
        timeout,
        ..Latencies::default()
    };
    let mut registered = Vec::with_capacity(samples);
    for n in 0..samples {
        let origin = n % 3;
        let service = dcs[origin].services[(n / 3) % LATENCY_SERVICES].clone();
        let host = format!("e2e-{mode}-{n}");
        let endpoint = format!("rest://10.{}.{}.{}:8080", origin, n / 250, n % 250);
        // A pseudo-random moment of the 100 ms poll cycle.
        tokio::time::sleep(jitter.next(Duration::from_millis(100))).await;
        let instance = register(
            client,
            &dcs[origin].registry.url,
            &service,
            &host,
            &endpoint,
        )
        .await;
        let since = Instant::now();
        let others: Vec<&str> = (0..3)
            .filter(|&k| k != origin)
            .map(|k| dcs[k].registry.url.as_str())
            .collect();
        let seen = watch(
            client,
            &others,
            ("default", &service),
            &host,
            true,
            since,
            timeout,
        )
        .await;
        push_sample(&mut register_latency, origin, &seen);
        registered.push(Registered {
            origin,
            service,
            instance,
            host,
        });
    }
    let after = scrape_all(client, &dcs).await;
    let register_cpu = daemons_cpu(&dcs) - cpu_before;
    register_latency.apply = apply_since(&before, &after);
    register_latency.transfers = transfers_since(&before, &after);
    println!(
        "register → visible in both other DCs: {}",
        register_latency.summary()
    );
    println!(
        "  syncer's own apply latency (all daemons, same period): {}",
        register_latency.apply.describe()
    );
    println!(
        "  median by origin → destination: {}",
        register_latency.by_pair()
    );
    println!(
        "  push/pull calls by daemon:{}",
        register_latency.transfers()
    );
    println!(
        "  CPU of the three daemons over the {samples} registrations: {:.2} s ({:.1} ms per change)",
        register_cpu,
        register_cpu * 1000.0 / samples as f64
    );

    // 1b. The first instance of a brand-new service, at pseudo-random moments of the
    // discovery cycle (a listing every 500 ms).
    let new_service = first_instances(
        client,
        &dcs,
        "default",
        &format!("e2e-{mode}-new"),
        options.new_services(),
        Duration::from_millis(500),
        timeout,
        &mut jitter,
    )
    .await;
    println!(
        "first instance of a new service → visible in both other DCs: {}",
        new_service.summary()
    );
    // 1c. The first instance in a tenant nobody has written into: named in --sc-tenants,
    // then not named (found by the dump).
    let new_tenant = if mode == "fast" {
        let named = first_instances(
            client,
            &dcs,
            NAMED_TENANT,
            "e2e-named",
            options.new_tenants(),
            Duration::from_millis(500),
            timeout,
            &mut jitter,
        )
        .await;
        println!(
            "first instance in a new tenant named in --sc-tenants → visible in both other DCs: {}",
            named.summary()
        );
        let latencies = first_instances(
            client,
            &dcs,
            &format!("e2e-tenant-{}", std::process::id()),
            "e2e-tenant",
            options.new_tenants(),
            Duration::from_secs(30),
            Duration::from_secs(45),
            &mut jitter,
        )
        .await;
        println!(
            "first instance in a new tenant not named → visible in both other DCs: {}",
            latencies.summary()
        );
        Some((named, latencies))
    } else {
        None
    };

    // 2. deregister → gone from both other data centres.
    let deregistrations = if real_sc {
        options.real_sc_deregistrations().min(samples)
    } else {
        samples
    };
    let before = scrape_all(client, &dcs).await;
    let mut deregister_latency = Latencies {
        timeout,
        ..Latencies::default()
    };
    for r in registered.iter().take(deregistrations) {
        tokio::time::sleep(jitter.next(Duration::from_millis(100))).await;
        unregister(client, &dcs[r.origin].registry.url, &r.service, &r.instance).await;
        let since = Instant::now();
        let others: Vec<&str> = (0..3)
            .filter(|&k| k != r.origin)
            .map(|k| dcs[k].registry.url.as_str())
            .collect();
        let seen = watch(
            client,
            &others,
            ("default", &r.service),
            &r.host,
            false,
            since,
            timeout,
        )
        .await;
        push_sample(&mut deregister_latency, r.origin, &seen);
    }
    let after = scrape_all(client, &dcs).await;
    deregister_latency.apply = apply_since(&before, &after);
    deregister_latency.transfers = transfers_since(&before, &after);
    println!(
        "deregister → gone from both other DCs: {}",
        deregister_latency.summary()
    );
    println!(
        "  syncer's own apply latency (all daemons, same period): {}",
        deregister_latency.apply.describe()
    );
    println!(
        "  median by origin → destination: {}",
        deregister_latency.by_pair()
    );
    println!(
        "  push/pull calls by daemon:{}",
        deregister_latency.transfers()
    );
    if real_sc {
        println!(
            "  (--real-sc 2.x: the origin's registry shows a deletion only after its 2 s check \
             window, and the copy's registry hides the removed copy only after its own, so \
             about 4 s is the floor here)"
        );
    }
    for dc in &dcs {
        print_problems(&dc.daemon.as_ref().expect("daemon").proc);
    }
    // Daemons first, then registries (fields drop in order: daemon after registry).
    for dc in &mut dcs {
        dc.daemon = None;
    }
    drop(dcs);
    LatencyRun {
        real_sc,
        register: register_latency,
        new_service,
        new_tenant,
        deregister: deregister_latency,
        converged,
        register_cpu,
    }
}

/// `count` first instances of new services (one per sample, origins in turn) in `domain`
/// (a new domain per sample unless it is `default`), each at a pseudo-random moment of
/// `phase`; times until each is visible in both other data centres.
#[allow(clippy::too_many_arguments)]
async fn first_instances(
    client: &reqwest::Client,
    dcs: &[Dc],
    domain: &str,
    prefix: &str,
    count: usize,
    phase: Duration,
    timeout: Duration,
    jitter: &mut Jitter,
) -> Latencies {
    let mut latencies = Latencies {
        timeout,
        ..Latencies::default()
    };
    for n in 0..count {
        let origin = n % 3;
        let domain = if domain == "default" {
            domain.to_owned()
        } else {
            format!("{domain}-{n}")
        };
        let service = format!("{prefix}-{n}");
        let host = format!("{prefix}-host-{n}");
        tokio::time::sleep(jitter.next(phase)).await;
        let url = &dcs[origin].registry.url;
        let body = serde_json::json!({"service": {
            "serviceId": service,
            "appId": "bench",
            "serviceName": service,
            "version": "1.0.0",
        }});
        call(in_domain(client.post(format!("{url}{API}/microservices")), &domain).json(&body))
            .await
            .unwrap_or_else(|e| panic!("create service {service} at {url}: {e}"));
        let body = serde_json::json!({"instance": {
            "hostName": host,
            "endpoints": [format!("rest://10.8.{origin}.{}:8080", n % 250)],
            "status": "UP",
            "healthCheck": {"mode": "push", "interval": 30, "times": 3},
        }});
        call(
            in_domain(
                client.post(format!("{url}{API}/microservices/{service}/instances")),
                &domain,
            )
            .json(&body),
        )
        .await
        .unwrap_or_else(|e| panic!("register {host} at {url}: {e}"));
        let since = Instant::now();
        let others: Vec<&str> = (0..3)
            .filter(|&k| k != origin)
            .map(|k| dcs[k].registry.url.as_str())
            .collect();
        let seen = watch(
            client,
            &others,
            (&domain, &service),
            &host,
            true,
            since,
            timeout,
        )
        .await;
        push_sample(&mut latencies, origin, &seen);
    }
    latencies
}

/// `request` in tenant `domain`/default.
fn in_domain(request: reqwest::RequestBuilder, domain: &str) -> reqwest::RequestBuilder {
    request.header("X-Domain-Name", domain)
}

/// Host names of the service's instances in `domain`; none when it is unknown there.
async fn instance_hosts_in(
    client: &reqwest::Client,
    url: &str,
    domain: &str,
    service_id: &str,
) -> Vec<String> {
    if domain == "default" {
        return instance_hosts(client, url, service_id).await;
    }
    let request = client.get(format!("{url}{API}/microservices/{service_id}/instances"));
    let Ok(reply) = call(in_domain(request, domain)).await else {
        return Vec::new();
    };
    reply
        .get("instances")
        .and_then(serde_json::Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(|i| i.get("hostName").and_then(serde_json::Value::as_str))
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// CPU seconds (user + system) the data centres' daemons have used so far.
fn daemons_cpu(dcs: &[Dc]) -> f64 {
    dcs.iter()
        .filter_map(|dc| dc.daemon.as_ref())
        .map(|d| cpu_seconds(&d.proc))
        .sum()
}

/// CPU seconds (user + system) `proc` has used so far, from `/proc/<pid>/stat` (fields 14
/// and 15, in clock ticks of 1/100 s on Linux).
fn cpu_seconds(proc: &Proc) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", proc.pid())).unwrap_or_default();
    // The command name (field 2) may hold spaces; count fields after its ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
    // After ')': state is field 3, so utime (14) and stime (15) are at 11 and 12.
    (ticks(11).unwrap_or(0.0) + ticks(12).unwrap_or(0.0)) / 100.0
}

/// Certificates and a gossip key for the TLS run, made by `syncer dev-certs` and
/// `syncer keygen`.
struct Secured {
    dir: std::path::PathBuf,
    gossip_key: String,
}

impl Secured {
    fn make(dir: &Path) -> Secured {
        let out = dir.join("pki");
        let made = syncer(dir)
            .args([
                "dev-certs",
                "--hosts",
                "127.0.0.1,127.0.0.31,127.0.0.32,127.0.0.33",
            ])
            .arg("--out")
            .arg(&out)
            .output()
            .expect("run dev-certs");
        assert!(made.status.success(), "dev-certs failed");
        let key = syncer(dir).arg("keygen").output().expect("run keygen");
        assert!(key.status.success(), "keygen failed");
        Secured {
            dir: out,
            gossip_key: String::from_utf8_lossy(&key.stdout).trim().to_owned(),
        }
    }

    fn flags(&self) -> Vec<String> {
        let file = |name: &str| self.dir.join(name).display().to_string();
        vec![
            "--tls-cert".into(),
            file("node.pem"),
            "--tls-key".into(),
            file("node-key.pem"),
            "--tls-ca".into(),
            file("ca.pem"),
            "--gossip-key".into(),
            self.gossip_key.clone(),
        ]
    }
}

/// The plain and the secured run side by side.
fn print_tls_cost(plain: &LatencyRun, tls: &LatencyRun) {
    println!("\n== what mutual TLS and a sealed gossip pool cost (fast mode, same samples)");
    println!("| | plain | mTLS + gossip key |");
    println!("|---|---|---|");
    println!(
        "| register → visible in both others, p50 / p99 | {} / {} | {} / {} |",
        plain.register.p(50),
        plain.register.p(99),
        tls.register.p(50),
        tls.register.p(99)
    );
    println!(
        "| deregister → gone from both others, p50 / p99 | {} / {} | {} / {} |",
        plain.deregister.p(50),
        plain.deregister.p(99),
        tls.deregister.p(50),
        tls.deregister.p(99)
    );
    println!(
        "| syncer's own apply latency | {} | {} |",
        plain.register.apply.describe(),
        tls.register.apply.describe()
    );
    let samples = plain.register.both.len().max(1) as f64;
    println!(
        "| CPU of the three daemons per registration | {:.1} ms | {:.1} ms |",
        plain.register_cpu * 1000.0 / samples,
        tls.register_cpu * 1000.0 / tls.register.both.len().max(1) as f64
    );
}

/// Records one sample: `seen` holds the other data centres in index order.
fn push_sample(latencies: &mut Latencies, origin: usize, seen: &[Option<Duration>]) {
    let others = (0..3).filter(|&k| k != origin);
    for (dest, at) in others.zip(seen) {
        latencies.pairs.entry((origin, dest)).or_default().push(*at);
    }
    let both = if seen.iter().all(Option::is_some) {
        seen.iter().flatten().max().copied()
    } else {
        None
    };
    latencies.both.push(both);
    latencies.first.push(seen.iter().flatten().min().copied());
}

// ---------------------------------------------------------------------------------------
// Figures 4-5: initial sync of many instances, then the idle cost.

struct BulkRun {
    instances: usize,
    fill: Duration,
    exported_after: Duration,
    /// From spawning dc2's syncer: ready, first copy, all copies.
    ready: Duration,
    first_copy: Option<Duration>,
    all_copies: Option<Duration>,
    copies_seen: usize,
    idle: Duration,
    /// Registry calls of dc2's syncer while idle, by operation: (calls, per second).
    dc2_ops: BTreeMap<String, f64>,
    dc1_ops: BTreeMap<String, f64>,
    dc2_memory: (u64, u64),
    dc1_memory: (u64, u64),
    /// CPU of dc2's and dc1's syncers over the idle window, % of one core.
    idle_cpu: (f64, f64),
}

impl BulkRun {
    fn rate(ops: &BTreeMap<String, f64>, idle: Duration, filter: impl Fn(&str) -> bool) -> f64 {
        ops.iter()
            .filter(|(op, _)| filter(op))
            .map(|(_, n)| n)
            .sum::<f64>()
            / idle.as_secs_f64()
    }

    fn keepalive_rate(&self) -> f64 {
        Self::rate(&self.dc2_ops, self.idle, |op| KEEPALIVE_OPS.contains(&op))
    }

    fn non_feed_rate(&self) -> f64 {
        Self::rate(&self.dc2_ops, self.idle, |op| !FEED_OPS.contains(&op))
    }
}

async fn registry_ops(client: &reqwest::Client, admin: &str) -> BTreeMap<String, f64> {
    scrape(client, admin)
        .await
        .by_label("syncer_registry_requests_total", "op")
}

fn ops_since(
    after: &BTreeMap<String, f64>,
    before: &BTreeMap<String, f64>,
) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(op, n)| (op.clone(), n - before.get(op).copied().unwrap_or(0.0)))
        .filter(|(_, n)| *n > 0.0)
        .collect()
}

fn print_ops(who: &str, ops: &BTreeMap<String, f64>, idle: Duration) {
    println!(
        "  {who}: registry calls by op over {} s idle:",
        idle.as_secs()
    );
    if ops.is_empty() {
        println!("    (none)");
    }
    for (op, n) in ops {
        let kind = if FEED_OPS.contains(&op.as_str()) {
            "change feed / discovery"
        } else if KEEPALIVE_OPS.contains(&op.as_str()) {
            "keep-alive"
        } else {
            "other"
        };
        println!(
            "    {op:<24} {n:>8.0} calls  {:>8.2}/s  ({kind})",
            n / idle.as_secs_f64()
        );
    }
}

async fn bulk_run(client: &reqwest::Client, options: Options) -> BulkRun {
    let instances = options.instances();
    let services = instances / INSTANCES_PER_SERVICE;
    println!(
        "\n== figures 4-5: initial sync of {instances} instances ({services} services × \
         {INSTANCES_PER_SERVICE}) into an empty data centre; two data centres, fast dev \
         registries"
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let r1 = start_registry("registry dc1", dir.path(), false);
    let r2 = start_registry("registry dc2", dir.path(), false);
    let d1 = start_daemon("dc1", 31, &r1.url, None, &dir.path().join("dc1"));

    // Fill dc1 while dc2's syncer is not running.
    let fill_started = Instant::now();
    stream::iter(0..services)
        .map(|j| {
            let url = r1.url.clone();
            async move {
                create_service(
                    client,
                    &url,
                    &format!("bulk-s{j:03}"),
                    &format!("bulk-svc-{j:03}"),
                )
                .await;
            }
        })
        .buffer_unordered(FILL_CONCURRENCY)
        .collect::<Vec<()>>()
        .await;
    stream::iter(0..instances)
        .map(|n| {
            let url = r1.url.clone();
            async move {
                let j = n / INSTANCES_PER_SERVICE;
                let host = format!("bulk-{n:05}");
                let endpoint = format!(
                    "rest://10.{}.{}.{}:8080",
                    n / 65_536,
                    (n / 256) % 256,
                    n % 256
                );
                register(client, &url, &format!("bulk-s{j:03}"), &host, &endpoint).await;
            }
        })
        .buffer_unordered(FILL_CONCURRENCY)
        .collect::<Vec<()>>()
        .await;
    let fill = fill_started.elapsed();
    println!(
        "registered {instances} instances in dc1 in {:.1} s ({FILL_CONCURRENCY} in flight)",
        fill.as_secs_f64()
    );

    // dc1's syncer exports them all before dc2's starts.
    let deadline = Instant::now() + options.bulk_deadline();
    loop {
        let exported = scrape(client, &d1.admin)
            .await
            .value("syncer_sync_exported_instances");
        if exported >= instances as f64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "dc1 exports {exported} of {instances} after {:?}; log:\n{}",
            options.bulk_deadline(),
            d1.proc.tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let exported_after = fill_started.elapsed();
    println!(
        "dc1's syncer exports all {instances} {:.1} s after the fill started",
        exported_after.as_secs_f64()
    );

    // 4. Start dc2's syncer; time until dc2's registry holds every copy.
    let d2 = start_daemon(
        "dc2",
        32,
        &r2.url,
        Some(&d1.gossip_addr),
        &dir.path().join("dc2"),
    );
    let ready = d2.ready - d2.spawned;
    let deadline = options.bulk_deadline();
    let (mut first_copy, mut all_copies, mut copies_seen) = (None, None, 0);
    // Up to 10 000 the registry's dump is counted every 100 ms. Beyond, a dump is ~100 MB
    // and counting it that often would load the registry more than the sync does: dc2's
    // syncer's own count of copies written (`syncer_sync_copies{state="mapped"}`) is read
    // every 100 ms instead, and the registry's dump once it says all are there.
    let large = instances > 10_000;
    while d2.spawned.elapsed() < deadline {
        let at = d2.spawned.elapsed();
        let mut count = if large {
            scrape(client, &d2.admin)
                .await
                .by_label("syncer_sync_copies", "state")
                .get("mapped")
                .map_or(0, |n| *n as usize)
        } else {
            count_copies(client, &r2.url).await.unwrap_or(0)
        };
        if large && count >= instances {
            count = count_copies(client, &r2.url).await.unwrap_or(0);
        }
        copies_seen = copies_seen.max(count);
        if count > 0 && first_copy.is_none() {
            first_copy = Some(at);
        }
        if count >= instances {
            all_copies = Some(at);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    match all_copies {
        Some(all) => println!(
            "dc2's registry holds all {instances} copies {} after dc2's syncer was spawned \
             (ready after {}, first copy after {})",
            fmt_ms(all),
            fmt_ms(ready),
            first_copy.map_or("-".into(), fmt_ms)
        ),
        None => println!(
            "dc2's registry holds only {copies_seen} of {instances} copies {} after dc2's \
             syncer was spawned (TIMED OUT)",
            fmt_ms(deadline)
        ),
    }
    let gauge = scrape(client, &d2.admin)
        .await
        .by_label("syncer_sync_copies", "state")
        .get("mapped")
        .copied()
        .unwrap_or(0.0);
    println!("  dc2's syncer_sync_copies gauge: {gauge}");
    print_problems(&d2.proc);

    // 5. Idle cost: let the import finish its tail work, then count calls.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle = options.idle();
    let (before2, before1) = (
        registry_ops(client, &d2.admin).await,
        registry_ops(client, &d1.admin).await,
    );
    let cpu_before = (cpu_seconds(&d2.proc), cpu_seconds(&d1.proc), Instant::now());
    tokio::time::sleep(idle).await;
    let (after2, after1) = (
        registry_ops(client, &d2.admin).await,
        registry_ops(client, &d1.admin).await,
    );
    let wall = cpu_before.2.elapsed().as_secs_f64();
    let idle_cpu = (
        100.0 * (cpu_seconds(&d2.proc) - cpu_before.0) / wall,
        100.0 * (cpu_seconds(&d1.proc) - cpu_before.1) / wall,
    );
    let run = BulkRun {
        instances,
        fill,
        exported_after,
        ready,
        first_copy,
        all_copies,
        copies_seen,
        idle,
        dc2_ops: ops_since(&after2, &before2),
        dc1_ops: ops_since(&after1, &before1),
        dc2_memory: d2.proc.memory_kib(),
        dc1_memory: d1.proc.memory_kib(),
        idle_cpu,
    };
    print_ops("dc2's syncer (imports the copies)", &run.dc2_ops, idle);
    print_ops("dc1's syncer (exports the originals)", &run.dc1_ops, idle);
    println!(
        "  keep-alive calls by dc2's syncer: {:.2}/s; all calls but feed and discovery: {:.2}/s",
        run.keepalive_rate(),
        run.non_feed_rate()
    );
    println!(
        "  idle CPU over {:.0} s (utime + stime from /proc/<pid>/stat): dc2 syncer {:.2} %, \
         dc1 syncer {:.2} % of one core",
        wall, idle_cpu.0, idle_cpu.1
    );
    let (r1_mem, r2_mem) = (r1.proc.memory_kib(), r2.proc.memory_kib());
    println!(
        "  memory (RSS / peak): dc2 syncer {} / {}, dc1 syncer {} / {}; registries dc1 {} / {}, dc2 {} / {}",
        fmt_kib(run.dc2_memory.0),
        fmt_kib(run.dc2_memory.1),
        fmt_kib(run.dc1_memory.0),
        fmt_kib(run.dc1_memory.1),
        fmt_kib(r1_mem.0),
        fmt_kib(r1_mem.1),
        fmt_kib(r2_mem.0),
        fmt_kib(r2_mem.1),
    );
    print_problems(&d1.proc);
    print_problems(&d2.proc);
    drop(d2);
    drop(d1);
    run
}

// ---------------------------------------------------------------------------------------
// The final table.

#[derive(Default)]
struct Report {
    latency: Vec<LatencyRun>,
    bulk: Option<BulkRun>,
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "MISSED" }
}

fn within(value: Option<Duration>, target: Duration) -> &'static str {
    verdict(value.is_some_and(|v| v <= target))
}

impl Report {
    fn print(&self, options: Options) {
        let mut table = String::new();
        let mut row = |figure: &str, value: &str, target: &str, outcome: &str| {
            let _ = writeln!(
                table,
                "| {figure:<46} | {value:<30} | {target:<10} | {outcome:<8} |"
            );
        };
        row("figure", "measured", "target", "");
        row(
            &"-".repeat(46),
            &"-".repeat(30),
            &"-".repeat(10),
            &"-".repeat(8),
        );
        let ms = Duration::from_millis;
        for run in &self.latency {
            let mode = if run.real_sc { "real-sc" } else { "fast" };
            let reg = &run.register;
            let dereg = &run.deregister;
            for (figure, latencies, p50, p99) in [
                ("1. register → visible", reg, 100, 500),
                ("1b. new service → visible", &run.new_service, 100, 300),
            ] {
                row(
                    &format!("{figure}, p50 ({mode})"),
                    &latencies.p(50),
                    &format!("≤ {p50} ms"),
                    within(latencies.p_value(50), ms(p50)),
                );
                row(
                    &format!("{figure}, p99 ({mode})"),
                    &format!("{} ({} samples)", latencies.p(99), latencies.both.len()),
                    &format!("≤ {p99} ms"),
                    within(latencies.p_value(99), ms(p99)),
                );
            }
            if let Some((named, tenant)) = &run.new_tenant {
                row(
                    &format!("1c. tenant named in --sc-tenants, p50 / p99 ({mode})"),
                    &format!(
                        "{} / {} ({} samples)",
                        named.p(50),
                        named.p(99),
                        named.both.len()
                    ),
                    "p99 ≤ 1 s",
                    within(named.p_value(99), ms(1000)),
                );
                row(
                    &format!("1c. tenant not named (the dump), p50 / max ({mode})"),
                    &format!(
                        "{} / {} ({} samples)",
                        tenant.p(50),
                        tenant.p(100),
                        tenant.both.len()
                    ),
                    "",
                    "",
                );
            }
            row(
                &format!("2. deregister → gone, p50 ({mode})"),
                &dereg.p(50),
                "",
                "",
            );
            let dereg_outcome = if run.real_sc {
                // Two 2 s check windows are the registries', not syncer's.
                "n/a (SC)"
            } else {
                within(dereg.p_value(99), ms(500))
            };
            row(
                &format!("2. deregister → gone, p99 ({mode})"),
                &format!("{} ({} samples)", dereg.p(99), dereg.both.len()),
                "≤ 500 ms",
                dereg_outcome,
            );
            let apply = |h: &Histogram| match (h.mean(), h.quantile(0.99)) {
                (Some(mean), Some(p99)) => format!("mean {}, p99 ≈ {}", fmt_ms(mean), fmt_ms(p99)),
                _ => "no observations".into(),
            };
            row(
                &format!("3. syncer apply latency, registers ({mode})"),
                &apply(&reg.apply),
                "",
                "",
            );
            row(
                &format!("3. syncer apply latency, removals ({mode})"),
                &apply(&dereg.apply),
                "",
                "",
            );
            row(
                &format!("   anchors mirrored after last ready ({mode})"),
                &fmt_ms(run.converged),
                "",
                "",
            );
        }
        if let Some(bulk) = &self.bulk {
            let n = bulk.instances;
            row(
                &format!("   fill dc1 with {n} / exported by dc1"),
                &format!(
                    "{:.1} s / {:.1} s",
                    bulk.fill.as_secs_f64(),
                    bulk.exported_after.as_secs_f64()
                ),
                "",
                "",
            );
            row(
                &format!("4. initial sync of {n} into empty dc2"),
                &match bulk.all_copies {
                    Some(d) => format!("{:.2} s", d.as_secs_f64()),
                    None => format!("{} of {n} copies: TIMEOUT", bulk.copies_seen),
                },
                if n <= 10_000 { "≤ 10 s" } else { "" },
                if n <= 10_000 {
                    within(bulk.all_copies, Duration::from_secs(10))
                } else {
                    ""
                },
            );
            row(
                "   (dc2 syncer ready / first copy)",
                &format!(
                    "{} / {}",
                    fmt_ms(bulk.ready),
                    bulk.first_copy.map_or("-".into(), fmt_ms)
                ),
                "",
                "",
            );
            row(
                &format!("5. keep-alive calls/s, {n} copies, idle"),
                &format!("{:.2}/s", bulk.keepalive_rate()),
                if n <= 10_000 { "≤ 1/s" } else { "" },
                if n <= 10_000 {
                    verdict(bulk.keepalive_rate() <= 1.0)
                } else {
                    ""
                },
            );
            row(
                "   all calls/s but change feed + discovery",
                &format!("{:.2}/s", bulk.non_feed_rate()),
                "",
                "",
            );
            row(
                "   change feed + discovery calls/s",
                &format!(
                    "{:.2}/s",
                    BulkRun::rate(&bulk.dc2_ops, bulk.idle, |op| FEED_OPS.contains(&op))
                ),
                "",
                "",
            );
            row(
                &format!("5. dc2 syncer RSS with {n} copies (peak)"),
                &format!(
                    "{} ({})",
                    fmt_kib(bulk.dc2_memory.0),
                    fmt_kib(bulk.dc2_memory.1)
                ),
                if n <= 10_000 { "≤ 64 MiB" } else { "" },
                if n <= 10_000 {
                    verdict(bulk.dc2_memory.0 <= 64 * 1024)
                } else {
                    ""
                },
            );
            row(
                &format!("   dc1 syncer RSS exporting {n} (peak)"),
                &format!(
                    "{} ({})",
                    fmt_kib(bulk.dc1_memory.0),
                    fmt_kib(bulk.dc1_memory.1)
                ),
                "",
                "",
            );
            row(
                &format!("5. dc2 syncer idle CPU, {n} copies"),
                &format!("{:.2} % of one core", bulk.idle_cpu.0),
                if n <= 10_000 { "≤ 2 %" } else { "" },
                if n <= 10_000 {
                    verdict(bulk.idle_cpu.0 <= 2.0)
                } else {
                    ""
                },
            );
            row(
                &format!("   dc1 syncer idle CPU, exporting {n}"),
                &format!("{:.2} % of one core", bulk.idle_cpu.1),
                "",
                "",
            );
        }
        println!(
            "\n== summary{}\n{table}",
            if options.quick {
                " (--quick: fewer samples, 1 000 instances; not the issue's full figures)"
            } else {
                ""
            }
        );
        println!(
            "original Syncer for comparison: changes propagate on its 30 s tick (up to ~30 s plus \
             gossip and pull), and it sends one heartbeat call per mirrored instance per tick \
             (10 000 copies: ~333 calls/s)."
        );
    }
}

fn fmt_ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms >= 10_000.0 {
        format!("{:.1} s", ms / 1000.0)
    } else if ms >= 100.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{ms:.1} ms")
    }
}

fn fmt_kib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

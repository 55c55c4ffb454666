//! Many data centres with real processes (issue 19, item 5): `-- --only-dcs 3,6,10`.
//!
//! For each N: N dev registries and N daemons (on 127.0.0.41, .42, ...; the daemons in one
//! gossip pool on the `lan` profile, as a deployment would run, or `--dcs-profile local` as
//! the other runs of this bench), 1 000 instances in each data
//! centre (10 services of 100) registered before the daemons start. Printed:
//! - time from the last daemon ready until every registry holds the (N - 1) × 1 000 copies;
//! - the idle cost over 20 s: push/pull calls per second (all daemons), CPU per daemon;
//! - `--dcs-samples` registrations (30 by default), the origin rotating: time until each
//!   other registry lists the new instance (p50/p99 over every (change, data centre)) and
//!   until all of them do; push and pull calls per change above the idle rate, from the
//!   daemons' `syncer_sync_transfers_total`; CPU per daemon per change;
//! - resident and peak memory per daemon at the end.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};

use super::common::{create_service, register, start_registry};
use super::{
    Dc, FILL_CONCURRENCY, count_copies, daemons_cpu, fmt_ms, print_problems, scrape_all,
    start_daemon_with, transfers_since, watch,
};

/// Instances per data centre.
const INSTANCES: usize = 1_000;
/// Services they are spread over.
const SERVICES: usize = 10;
/// The idle window.
const IDLE: Duration = Duration::from_secs(20);
/// First address byte of the daemons (127.0.0.41, ...), apart from the other runs'.
const BASE_IP: u8 = 40;

/// The figures of one run.
pub struct DcsRun {
    dcs: usize,
    converged: Duration,
    idle_calls_per_s: f64,
    idle_cpu_pct: f64,
    one_p50: Duration,
    one_p99: Duration,
    all_p50: Duration,
    all_p99: Duration,
    pushes_per_change: f64,
    pulls_per_change: f64,
    cpu_ms_per_change: f64,
    rss_mib: f64,
    peak_mib: f64,
    /// Times a daemon logged that the pool had declared it down (alive all along: a false
    /// verdict of failure detection under load), all daemons, whole run.
    false_downs: usize,
}

impl DcsRun {
    pub fn header() -> &'static str {
        "DCs | inst/DC | mirrored after | idle calls/s | idle CPU %/daemon | one DC p50/p99 | \
         all DCs p50/p99 | per change push pull | CPU ms/change/daemon | RSS/peak MiB/daemon | declared down while alive"
    }

    pub fn row(&self) -> String {
        format!(
            "{} | {INSTANCES} | {} | {:.1} | {:.2} | {}/{} | {}/{} | {:.1} {:.1} | {:.1} | {:.0}/{:.0} | {}",
            self.dcs,
            fmt_ms(self.converged),
            self.idle_calls_per_s,
            self.idle_cpu_pct,
            fmt_ms(self.one_p50),
            fmt_ms(self.one_p99),
            fmt_ms(self.all_p50),
            fmt_ms(self.all_p99),
            self.pushes_per_change,
            self.pulls_per_change,
            self.cpu_ms_per_change,
            self.rss_mib,
            self.peak_mib,
            self.false_downs,
        )
    }
}

fn quantile(samples: &mut [Duration], q: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    samples.sort();
    let rank = (q * samples.len() as f64).ceil() as usize;
    samples[rank.clamp(1, samples.len()) - 1]
}

/// Push and pull calls (any outcome) summed over the daemons, from `transfers_since`, as
/// their callers count them (`push_sent`, `pull`; not the `push_received` and `pull_served`
/// of the other end).
fn calls(transfers: &[BTreeMap<String, f64>]) -> (f64, f64) {
    let mut pushes = 0.0;
    let mut pulls = 0.0;
    for daemon in transfers {
        for (key, n) in daemon {
            if key.starts_with("push_sent/") {
                pushes += n;
            } else if key.starts_with("pull/") {
                pulls += n;
            }
        }
    }
    (pushes, pulls)
}

pub async fn dcs_run(
    client: &reqwest::Client,
    n: usize,
    samples: usize,
    profile: &str,
    dir: &Path,
) -> DcsRun {
    println!(
        "\n== {n} data centres × {INSTANCES} instances, real processes, gossip profile {profile} =="
    );
    let mut dcs: Vec<Dc> = (1..=n)
        .map(|k| {
            let name = format!("dc{k}");
            Dc {
                registry: start_registry(&format!("registry {name}"), dir, false),
                services: (0..SERVICES)
                    .map(|j| format!("dcs{n}-{profile}-{name}-s{j}"))
                    .collect(),
                name,
                daemon: None,
            }
        })
        .collect();
    let fill = Instant::now();
    for dc in &dcs {
        for (j, service) in dc.services.iter().enumerate() {
            create_service(
                client,
                &dc.registry.url,
                service,
                &format!("{}-m{j}", dc.name),
            )
            .await;
        }
        let url = dc.registry.url.clone();
        let services = dc.services.clone();
        let name = dc.name.clone();
        stream::iter(0..INSTANCES)
            .map(|i| {
                let (url, service, name) = (url.clone(), services[i % SERVICES].clone(), &name);
                async move {
                    register(
                        client,
                        &url,
                        &service,
                        &format!("{name}-h{i}"),
                        &format!("rest://10.{}.{}.{}:8080", n, i / 250, i % 250),
                    )
                    .await
                }
            })
            .buffer_unordered(FILL_CONCURRENCY)
            .collect::<Vec<_>>()
            .await;
    }
    println!(
        "{} instances registered in {:.1} s",
        n * INSTANCES,
        fill.elapsed().as_secs_f64()
    );
    let mut join: Option<String> = None;
    for (k, dc) in dcs.iter_mut().enumerate() {
        let ip = BASE_IP + u8::try_from(k + 1).expect("few data centres");
        // The last `--gossip-profile` given wins over `start_daemon_with`'s own `local`.
        let daemon = start_daemon_with(
            &dc.name,
            ip,
            &dc.registry.url,
            join.as_deref(),
            &dir.join(format!("dcs{n}-{profile}-{}", dc.name)),
            &["--gossip-profile", profile],
        );
        join.get_or_insert_with(|| daemon.gossip_addr.clone());
        dc.daemon = Some(daemon);
    }
    let last_ready = dcs
        .iter()
        .filter_map(|dc| dc.daemon.as_ref().map(|d| d.ready))
        .max()
        .expect("daemons");
    let want = (n - 1) * INSTANCES;
    let deadline = Duration::from_secs(300);
    loop {
        let mut done = true;
        for dc in &dcs {
            done &= count_copies(client, &dc.registry.url).await == Some(want);
            if !done {
                break;
            }
        }
        if done {
            break;
        }
        if last_ready.elapsed() > deadline {
            for dc in &dcs {
                print_problems(&dc.daemon.as_ref().expect("daemon").proc);
            }
            panic!("{n} data centres not mirrored within {deadline:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let converged = last_ready.elapsed();
    println!(
        "every registry holds its {want} copies {} after the last daemon was ready",
        fmt_ms(converged)
    );

    // Idle: let the initial import settle, then the baseline.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let before = scrape_all(client, &dcs).await;
    let cpu_before = daemons_cpu(&dcs);
    tokio::time::sleep(IDLE).await;
    let after = scrape_all(client, &dcs).await;
    let idle_cpu = daemons_cpu(&dcs) - cpu_before;
    let (idle_pushes, idle_pulls) = calls(&transfers_since(&before, &after));
    let idle_rate = |calls: f64| calls / IDLE.as_secs_f64();
    let idle_calls_per_s = idle_rate(idle_pushes + idle_pulls);
    let idle_cpu_pct = idle_cpu / IDLE.as_secs_f64() / n as f64 * 100.0;
    println!(
        "idle over {} s: {:.1} pushes/s and {:.1} pulls/s (all daemons); CPU {:.2} % of a core \
         per daemon",
        IDLE.as_secs(),
        idle_rate(idle_pushes),
        idle_rate(idle_pulls),
        idle_cpu_pct
    );

    // Changes: a new instance of an existing service, the origin rotating.
    let before = scrape_all(client, &dcs).await;
    let cpu_before = daemons_cpu(&dcs);
    let phase = Instant::now();
    let timeout = Duration::from_secs(15);
    let (mut one, mut all) = (Vec::new(), Vec::new());
    let mut missed = 0;
    for s in 0..samples {
        let origin = s % n;
        let service = dcs[origin].services[(s / n) % SERVICES].clone();
        let host = format!("dcs{n}-change-{s}");
        tokio::time::sleep(Duration::from_millis(37 * (s as u64 % 3))).await;
        register(
            client,
            &dcs[origin].registry.url,
            &service,
            &host,
            &format!("rest://10.200.{}.{}:8080", s / 250, s % 250),
        )
        .await;
        let since = Instant::now();
        let others: Vec<&str> = (0..n)
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
        missed += seen.iter().filter(|t| t.is_none()).count();
        one.extend(seen.iter().flatten().copied());
        if seen.iter().all(Option::is_some) {
            all.extend(seen.iter().flatten().max().copied());
        }
    }
    let period = phase.elapsed();
    let after = scrape_all(client, &dcs).await;
    let cpu = daemons_cpu(&dcs) - cpu_before;
    let (pushes, pulls) = calls(&transfers_since(&before, &after));
    let per_change = |total: f64, idle: f64| {
        (total - idle_rate(idle) * period.as_secs_f64()).max(0.0) / samples as f64
    };
    let idle_cpu_share = idle_cpu / IDLE.as_secs_f64() * period.as_secs_f64();
    let (rss, peak) = dcs
        .iter()
        .filter_map(|dc| dc.daemon.as_ref())
        .map(|d| d.proc.memory_kib())
        .fold((0u64, 0u64), |(r, p), (a, b)| (r.max(a), p.max(b)));
    let run = DcsRun {
        dcs: n,
        converged,
        idle_calls_per_s,
        idle_cpu_pct,
        one_p50: quantile(&mut one, 0.5),
        one_p99: quantile(&mut one, 0.99),
        all_p50: quantile(&mut all, 0.5),
        all_p99: quantile(&mut all, 0.99),
        pushes_per_change: per_change(pushes, idle_pushes),
        pulls_per_change: per_change(pulls, idle_pulls),
        cpu_ms_per_change: (cpu - idle_cpu_share).max(0.0) * 1000.0 / samples as f64 / n as f64,
        rss_mib: rss as f64 / 1024.0,
        peak_mib: peak as f64 / 1024.0,
        false_downs: dcs
            .iter()
            .filter_map(|dc| dc.daemon.as_ref())
            .flat_map(|d| d.proc.problems())
            .filter(|(message, _)| message.contains("declared this syncer down"))
            .map(|(_, count)| count)
            .sum(),
    };
    println!(
        "{samples} registrations: one other DC sees it after p50 {} / p99 {}, all {} others \
         after p50 {} / p99 {}{}; per change {:.1} pushes and {:.1} pulls above idle, {:.1} ms \
         CPU per daemon; largest daemon RSS {:.0} MiB (peak {:.0} MiB)",
        fmt_ms(run.one_p50),
        fmt_ms(run.one_p99),
        n - 1,
        fmt_ms(run.all_p50),
        fmt_ms(run.all_p99),
        if missed > 0 {
            format!(" ({missed} not seen within {timeout:?})")
        } else {
            String::new()
        },
        run.pushes_per_change,
        run.pulls_per_change,
        run.cpu_ms_per_change,
        run.rss_mib,
        run.peak_mib,
    );
    for dc in &dcs {
        print_problems(&dc.daemon.as_ref().expect("daemon").proc);
    }
    run
}

//! The run of `sync_e2e` with one Eureka data centre: dc1 a ServiceComb dev registry, dc2 a
//! Eureka dev registry (`syncer dev-registry --kind eureka`), each with its syncer (dc2's with
//! `--sc-plugin eureka`).
//!
//! Figures (printed, not asserted; the targets are those between two ServiceComb data
//! centres):
//! - E1. ServiceComb → Eureka: register → listed by `GET /eureka/apps/{APP}`, and deregister
//!   → gone, p50 / p99;
//! - E2. Eureka → ServiceComb: register → listed by the ServiceComb, and cancel → gone;
//! - E3. Eureka → ServiceComb with `--real-eureka` (Eureka's 30 s read-only response cache on
//!   the lists syncer reads), a few samples;
//! - E4. 10 000 copies in Eureka: time until all are listed, then keep-alive calls per second
//!   of dc2's syncer while idle (Eureka renews one instance per call) and its memory.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use serde_json::{Value, json};
use sha1::{Digest, Sha1};

use super::common::{
    API, DevRegistry, create_service, instance_hosts, register, start_registry, start_registry_with,
};
use super::{Daemon, Jitter, fmt_kib, fmt_ms, ops_since, registry_ops, start_daemon_with};

/// Interval of the visibility polls.
const POLL_EVERY: Duration = Duration::from_millis(2);
/// A sample that takes longer is a timeout.
const TIMEOUT: Duration = Duration::from_secs(20);
/// With Eureka's response cache a change may wait 30 s for the cache, then a poll.
const CACHED_TIMEOUT: Duration = Duration::from_secs(75);
/// Instances per service of the 10 000-copy run.
const PER_SERVICE: usize = 100;
/// Registrations in flight while filling dc1.
const FILL_CONCURRENCY: usize = 32;
/// Longest random pause before a sample, so that samples do not lock onto the feeds' poll
/// period (100 ms) or the response cache's refresh (30 s).
const PAUSE: Duration = Duration::from_millis(100);
const CACHED_PAUSE: Duration = Duration::from_secs(30);

/// What the Eureka run measured.
pub struct EurekaRun {
    sc_to_eureka: Vec<Option<Duration>>,
    sc_to_eureka_gone: Vec<Option<Duration>>,
    eureka_to_sc: Vec<Option<Duration>>,
    eureka_to_sc_gone: Vec<Option<Duration>>,
    cached_eureka_to_sc: Vec<Option<Duration>>,
    bulk: Option<Bulk>,
}

struct Bulk {
    copies: usize,
    all_listed: Option<Duration>,
    idle: Duration,
    ops: BTreeMap<String, f64>,
    memory: (u64, u64),
    eureka_memory: (u64, u64),
    /// dc2's syncer's CPU over the idle window, % of one core.
    cpu: f64,
}

fn percentile(values: &[Option<Duration>], p: usize) -> Option<Duration> {
    let mut sorted: Vec<Duration> = values.iter().flatten().copied().collect();
    let timeouts = values.len() - sorted.len();
    sorted.sort();
    sorted.extend(std::iter::repeat_n(Duration::MAX, timeouts));
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len()).div_ceil(100).clamp(1, sorted.len());
    Some(sorted[rank - 1]).filter(|d| *d != Duration::MAX)
}

fn summary(values: &[Option<Duration>]) -> String {
    let show = |p| percentile(values, p).map_or("timeout".into(), fmt_ms);
    format!(
        "p50 {}, p99 {} ({} samples{})",
        show(50),
        show(99),
        values.len(),
        match values.iter().filter(|v| v.is_none()).count() {
            0 => String::new(),
            n => format!(", {n} timed out"),
        }
    )
}

/// The local id the Eureka adapter gives a service, and so the id its copies' service gets in
/// a ServiceComb (created under the origin's id): `eureka-` + 32 hex of SHA-1 over the
/// length-prefixed tenant, app, name, version and environment.
fn eureka_service_id(app: &str, name: &str, version: &str) -> String {
    let mut hasher = Sha1::new();
    for part in ["default", "default", app, name, version, ""] {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    let digest = hex::encode(hasher.finalize());
    format!("eureka-{}", &digest[..32])
}

/// The host names Eureka lists for `app` (JSON; none when the app is unknown).
async fn eureka_hosts(client: &reqwest::Client, url: &str, app: &str) -> Vec<String> {
    let Ok(reply) = client
        .get(format!("{url}/apps/{app}"))
        .header("Accept", "application/json")
        .send()
        .await
    else {
        return Vec::new();
    };
    let Ok(v) = reply.json::<Value>().await else {
        return Vec::new();
    };
    let list = match &v["application"]["instance"] {
        Value::Array(list) => list.clone(),
        one @ Value::Object(_) => vec![one.clone()],
        _ => Vec::new(),
    };
    list.iter()
        .filter_map(|i| i["hostName"].as_str().map(str::to_owned))
        .collect()
}

/// Copies (instances with a syncer id) Eureka lists in all.
async fn eureka_copies(client: &reqwest::Client, url: &str) -> usize {
    let Ok(reply) = client
        .get(format!("{url}/apps"))
        .header("Accept", "application/json")
        .send()
        .await
    else {
        return 0;
    };
    let Ok(body) = reply.bytes().await else {
        return 0;
    };
    let needle = b"\"instanceId\":\"syncer-";
    body.windows(needle.len()).filter(|w| w == needle).count()
}

/// Registers a Eureka instance of app `app` with a long lease, as a Spring client would,
/// with metadata naming its ServiceComb app and version.
async fn eureka_register(
    client: &reqwest::Client,
    url: &str,
    app: &str,
    n: usize,
    host: &str,
) -> String {
    let ip = format!("10.8.{}.{}", n / 250, n % 250 + 1);
    let id = format!("{ip}:{}:8080", app.to_lowercase());
    let body = json!({"instance": {
        "instanceId": id,
        "hostName": host,
        "app": app,
        "ipAddr": ip,
        "vipAddress": app.to_lowercase(),
        "status": "UP",
        "port": {"$": 8080, "@enabled": "true"},
        "securePort": {"$": 443, "@enabled": "false"},
        "dataCenterInfo": {
            "@class": "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo",
            "name": "MyOwn"
        },
        "leaseInfo": {"renewalIntervalInSecs": 30, "durationInSecs": 600},
        "metadata": {"sc.appId": "bench", "sc.version": "1.0.0"},
    }});
    let reply = client
        .post(format!("{url}/apps/{app}"))
        .json(&body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("register {id} in Eureka: {e}"));
    assert_eq!(reply.status().as_u16(), 204, "register {id} in Eureka");
    id
}

async fn eureka_cancel(client: &reqwest::Client, url: &str, app: &str, id: &str) {
    let reply = client
        .delete(format!("{url}/apps/{app}/{id}"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("cancel {id} in Eureka: {e}"));
    assert_eq!(reply.status().as_u16(), 200, "cancel {id} in Eureka");
}

/// Polls `seen` every [`POLL_EVERY`] until it says `want`; the time since `since`.
async fn until<F, Fut>(
    since: Instant,
    timeout: Duration,
    want: bool,
    mut seen: F,
) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    loop {
        if seen().await == want {
            return Some(since.elapsed());
        }
        if since.elapsed() > timeout {
            return None;
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// The two data centres: a ServiceComb and a Eureka (`eureka_args` given to its registry).
struct Pair {
    sc: DevRegistry,
    eureka: DevRegistry,
    /// Kept running for as long as the pair is used (dropped: killed).
    _d1: Daemon,
    d2: Daemon,
}

fn start_pair(dir: &Path, eureka_args: &[&str]) -> Pair {
    let sc = start_registry("registry dc1 (servicecomb)", dir, false);
    let mut args = vec!["--kind", "eureka"];
    args.extend_from_slice(eureka_args);
    let eureka = start_registry_with("registry dc2 (eureka)", dir, &args);
    let d1 = start_daemon_with("dc1", 41, &sc.url, None, &dir.join("dc1"), &[]);
    let d2 = start_daemon_with(
        "dc2",
        42,
        &eureka.url,
        Some(&d1.gossip_addr),
        &dir.join("dc2"),
        &["--sc-plugin", "eureka"],
    );
    Pair {
        sc,
        eureka,
        _d1: d1,
        d2,
    }
}

/// Figures E1-E2 (`cached`: E3 only, with `--real-eureka`).
async fn latencies(client: &reqwest::Client, samples: usize, run: &mut EurekaRun, cached: bool) {
    let dir = tempfile::tempdir().expect("temp dir");
    let real: &[&str] = if cached { &["--real-eureka"] } else { &[] };
    let pair = start_pair(dir.path(), real);
    let timeout = if cached { CACHED_TIMEOUT } else { TIMEOUT };
    let pause = if cached { CACHED_PAUSE } else { PAUSE };
    let mut jitter = Jitter(0x2545_f491_4f6c_dd1d ^ u64::from(cached));
    // One anchor each way, so both syncers have seen each other before the samples.
    create_service(client, &pair.sc.url, "eu-anchor", "eu-anchor").await;
    register(
        client,
        &pair.sc.url,
        "eu-anchor",
        "anchor-sc",
        "rest://10.7.0.1:8080",
    )
    .await;
    eureka_register(client, &pair.eureka.url, "EU-ANCHOR-E", 0, "anchor-e").await;
    let anchor_sid = eureka_service_id("bench", "eu-anchor-e", "1.0.0");
    let converged = Instant::now();
    let both = until(converged, CACHED_TIMEOUT, true, || async {
        eureka_hosts(client, &pair.eureka.url, "EU-ANCHOR")
            .await
            .len()
            == 1
            && instance_hosts(client, &pair.sc.url, &anchor_sid)
                .await
                .len()
                == 1
    })
    .await;
    println!(
        "  anchors mirrored both ways after {}",
        both.map_or("a timeout".into(), fmt_ms)
    );

    if !cached {
        create_service(client, &pair.sc.url, "eu-s1", "eu-svc-one").await;
        for n in 0..samples {
            let host = format!("sc-host-{n}");
            tokio::time::sleep(jitter.next(pause)).await;
            let started = Instant::now();
            let iid = register(
                client,
                &pair.sc.url,
                "eu-s1",
                &host,
                &format!("rest://10.9.0.{}:8080", n % 250 + 1),
            )
            .await;
            let seen = until(started, timeout, true, || async {
                eureka_hosts(client, &pair.eureka.url, "EU-SVC-ONE")
                    .await
                    .contains(&host)
            })
            .await;
            run.sc_to_eureka.push(seen);
            tokio::time::sleep(jitter.next(pause)).await;
            let started = Instant::now();
            client
                .delete(format!(
                    "{}{API}/microservices/eu-s1/instances/{iid}",
                    pair.sc.url
                ))
                .send()
                .await
                .expect("unregister in ServiceComb");
            let gone = until(started, timeout, false, || async {
                eureka_hosts(client, &pair.eureka.url, "EU-SVC-ONE")
                    .await
                    .contains(&host)
            })
            .await;
            run.sc_to_eureka_gone.push(gone);
        }
    }

    let sid = eureka_service_id("bench", "eu-src", "1.0.0");
    let count = if cached { samples.min(8) } else { samples };
    for n in 0..count {
        let host = format!("eureka-host-{n}");
        tokio::time::sleep(jitter.next(pause)).await;
        let started = Instant::now();
        let id = eureka_register(client, &pair.eureka.url, "EU-SRC", n + 1, &host).await;
        let seen = until(started, timeout, true, || async {
            instance_hosts(client, &pair.sc.url, &sid)
                .await
                .contains(&host)
        })
        .await;
        if cached {
            run.cached_eureka_to_sc.push(seen);
            println!("  E3 sample {n}: {}", seen.map_or("timeout".into(), fmt_ms));
            eureka_cancel(client, &pair.eureka.url, "EU-SRC", &id).await;
            continue;
        }
        run.eureka_to_sc.push(seen);
        tokio::time::sleep(jitter.next(pause)).await;
        let started = Instant::now();
        eureka_cancel(client, &pair.eureka.url, "EU-SRC", &id).await;
        let gone = until(started, timeout, false, || async {
            instance_hosts(client, &pair.sc.url, &sid)
                .await
                .contains(&host)
        })
        .await;
        run.eureka_to_sc_gone.push(gone);
    }
    drop(pair);
}

/// Figure E4.
async fn bulk(client: &reqwest::Client, instances: usize, idle: Duration) -> Bulk {
    let dir = tempfile::tempdir().expect("temp dir");
    let pair = start_pair(dir.path(), &[]);
    let services = instances.div_ceil(PER_SERVICE);
    stream::iter(0..services)
        .map(|j| {
            let url = pair.sc.url.clone();
            async move {
                create_service(
                    client,
                    &url,
                    &format!("eb-s{j:03}"),
                    &format!("eb-svc-{j:03}"),
                )
                .await;
            }
        })
        .buffer_unordered(FILL_CONCURRENCY)
        .collect::<Vec<()>>()
        .await;
    let started = Instant::now();
    stream::iter(0..instances)
        .map(|n| {
            let url = pair.sc.url.clone();
            async move {
                let j = n / PER_SERVICE;
                register(
                    client,
                    &url,
                    &format!("eb-s{j:03}"),
                    &format!("eb-{n:05}"),
                    &format!(
                        "rest://10.{}.{}.{}:8080",
                        20 + n / 62_500,
                        (n / 250) % 250,
                        n % 250 + 1
                    ),
                )
                .await;
            }
        })
        .buffer_unordered(FILL_CONCURRENCY)
        .collect::<Vec<()>>()
        .await;
    println!(
        "  E4: {instances} instances registered in dc1 in {}",
        fmt_ms(started.elapsed())
    );
    let all_listed = until(started, Duration::from_secs(300), true, || async {
        eureka_copies(client, &pair.eureka.url).await >= instances
    })
    .await;
    let copies = eureka_copies(client, &pair.eureka.url).await;
    println!(
        "  E4: {copies} copies listed by Eureka after {}",
        all_listed.map_or("a timeout".into(), fmt_ms)
    );
    let before = registry_ops(client, &pair.d2.admin).await;
    let (cpu_before, at) = (super::cpu_seconds(&pair.d2.proc), Instant::now());
    tokio::time::sleep(idle).await;
    let after = registry_ops(client, &pair.d2.admin).await;
    let cpu = 100.0 * (super::cpu_seconds(&pair.d2.proc) - cpu_before) / at.elapsed().as_secs_f64();
    let ops = ops_since(&after, &before);
    let memory = pair.d2.proc.memory_kib();
    let eureka_memory = pair.eureka.proc.memory_kib();
    Bulk {
        copies,
        all_listed,
        idle,
        ops,
        memory,
        eureka_memory,
        cpu,
    }
}

/// The whole Eureka run: `samples` per direction (0: E4 alone), `instances` copies (0: no
/// E4).
pub async fn eureka_run(
    client: &reqwest::Client,
    samples: usize,
    instances: usize,
    idle: Duration,
) -> EurekaRun {
    println!(
        "\n== Eureka run: dc1 ServiceComb, dc2 Eureka (dev registries in their default fast mode)"
    );
    let mut run = EurekaRun {
        sc_to_eureka: Vec::new(),
        sc_to_eureka_gone: Vec::new(),
        eureka_to_sc: Vec::new(),
        eureka_to_sc_gone: Vec::new(),
        cached_eureka_to_sc: Vec::new(),
        bulk: None,
    };
    if samples > 0 {
        latencies(client, samples, &mut run, false).await;
        println!("\n== Eureka run, E3: dc2 with --real-eureka (30 s read-only response cache)");
        latencies(client, samples, &mut run, true).await;
    }
    if instances > 0 {
        println!("\n== Eureka run, E4: {instances} copies in Eureka");
        run.bulk = Some(bulk(client, instances, idle).await);
    }
    run
}

impl EurekaRun {
    pub fn print(&self) {
        println!("\n== Eureka summary");
        println!(
            "E1. ServiceComb → Eureka, register → listed:   {}",
            summary(&self.sc_to_eureka)
        );
        println!(
            "E1. ServiceComb → Eureka, deregister → gone:   {}",
            summary(&self.sc_to_eureka_gone)
        );
        println!(
            "E2. Eureka → ServiceComb, register → listed:   {}",
            summary(&self.eureka_to_sc)
        );
        println!(
            "E2. Eureka → ServiceComb, cancel → gone:       {}",
            summary(&self.eureka_to_sc_gone)
        );
        println!(
            "E3. Eureka → ServiceComb with --real-eureka:   {}",
            summary(&self.cached_eureka_to_sc)
        );
        if let Some(bulk) = &self.bulk {
            println!(
                "E4. {} copies listed by Eureka after {}",
                bulk.copies,
                bulk.all_listed.map_or("a timeout".into(), fmt_ms)
            );
            let secs = bulk.idle.as_secs_f64();
            let total: f64 = bulk.ops.values().sum();
            println!(
                "E4. dc2 syncer's Eureka calls over {} s idle: {:.1}/s in all",
                bulk.idle.as_secs(),
                total / secs
            );
            for (op, n) in &bulk.ops {
                println!("      {op:<20} {n:>8.0} calls {:>8.1}/s", n / secs);
            }
            println!(
                "E4. dc2 syncer RSS {} (peak {}); Eureka dev registry RSS {} (peak {})",
                fmt_kib(bulk.memory.0),
                fmt_kib(bulk.memory.1),
                fmt_kib(bulk.eureka_memory.0),
                fmt_kib(bulk.eureka_memory.1)
            );
            println!(
                "E4. dc2 syncer CPU while idle (renewals included): {:.1} % of one core",
                bulk.cpu
            );
        }
    }
}

//! Cost of the ServiceComb change feed's poll, against the dev registry on 127.0.0.1.
//!
//! Sets up 1 000 services with one instance each in `default/default`, then measures:
//! 1. the first batch (the dump, returned as a resync) and the first poll after it (no
//!    revisions known yet, so SC answers every service in full);
//! 2. 200 polls when nothing changed: time per poll, request and response body bytes;
//! 3. 50 cycles with a service listing each (the `discovery_interval` work);
//! 4. 1 and 2 again against a canned stub that answers instantly, to separate the adapter's
//!    own cost from the emulator's;
//! 5. with the default intervals (poll 100 ms), the time from a status change (the
//!    `set_status` call returning) to the feed reporting it, over 40 changes made at
//!    pseudo-random moments.
//!
//! Run with `cargo bench --bench sc_poll`; docs/PERFORMANCE.md records the figures.

mod common;

use std::time::Duration;

use syncer::devreg::{DevRegistry, DevRegistryConfig};
use syncer::registry::servicecomb::{ServiceComb, ServiceCombConfig};
use syncer::registry::{Change, ChangeFeed, Instance, InstanceRef, Registry, Service, Tenant};
use tokio::time::Instant;
use url::Url;

/// Services (one instance each) in the registry.
const SERVICES: usize = 1_000;
/// Idle polls measured.
const IDLE_POLLS: usize = 200;
/// The idle window of the load measurement.
const IDLE_WINDOW: Duration = Duration::from_secs(20);
/// Cycles with a listing measured.
const LISTING_CYCLES: usize = 50;
/// Changes whose latency is measured (an instance goes DOWN, then back UP).
const CHANGES: usize = 40;
/// Calls in flight while setting up.
const SETUP_CONCURRENCY: usize = 16;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        // A test runner (cargo-nextest) asking for tests: this binary has none.
        return;
    }
    if !args.iter().any(|a| a == "--bench") {
        // `cargo test --all-targets` runs benches without `--bench`: nothing to check here.
        eprintln!("sc_poll measures only under `cargo bench --bench sc_poll`");
        return;
    }
    run();
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn run() {
    let registry = DevRegistry::start(DevRegistryConfig::default())
        .await
        .expect("dev registry");
    let url = Url::parse(&registry.url()).expect("url");
    common::print_machine("adapter and dev registry share them (2 tokio workers)");
    let refs = populate(&url).await;
    println!(
        "registry: {SERVICES} services with one instance each, dev registry (SC 1.4.8 emulation)\n"
    );

    measure_polls("dev registry", &url).await;
    measure_listing(&url).await;
    measure_polls(
        "canned stub (adapter's own share)",
        &canned_sc(SERVICES).await,
    )
    .await;
    println!();
    measure_idle_load(&url, &format!("{SERVICES} services")).await;
    println!();
    measure_latency(&url, &refs).await;
    println!();
    populate_copies(&url, 2 * SERVICES).await;
    measure_idle_load(
        &url,
        &format!(
            "{SERVICES} services of its own and {} holding syncer's copies (a data centre of three)",
            2 * SERVICES
        ),
    )
    .await;
    registry.shutdown().await;
}

/// A stub SC that answers with precomputed bodies as fast as axum can: the dump of `count`
/// services with one instance each, and batch finds (full when no revision is sent, all "not
/// modified" otherwise). Polls against it measure the adapter's own work plus HTTP. Ids are
/// zero-padded so that the feed's request order (sorted ids) is the numeric order the
/// canned answers assume.
async fn canned_sc(count: usize) -> Url {
    let services: Vec<String> = (0..count)
        .map(|i| {
            format!(
                r#"{{"key":"/cse-sr/ms/files/default/default/s{i:04}","rev":1,"value":{{"serviceId":"s{i:04}","appId":"bench","serviceName":"service-{i:04}","version":"1.0.0"}}}}"#
            )
        })
        .collect();
    let instance = |i: usize| {
        format!(r#"{{"instanceId":"i{i:04}","serviceId":"s{i:04}","hostName":"h","status":"UP"}}"#)
    };
    let instances: Vec<String> = (0..count)
        .map(|i| format!(r#"{{"key":"/cse-sr/inst/files/default/default/s{i:04}/i{i:04}","rev":1,"value":{}}}"#, instance(i)))
        .collect();
    let dump = format!(
        r#"{{"cache":{{"services":[{}],"instances":[{}]}}}}"#,
        services.join(","),
        instances.join(",")
    );
    let updated: Vec<String> = (0..count)
        .map(|i| {
            format!(
                r#"{{"index":{i},"rev":"{:040}","instances":[{}]}}"#,
                i,
                instance(i)
            )
        })
        .collect();
    let full = format!(r#"{{"services":{{"updated":[{}]}}}}"#, updated.join(","));
    let indexes: Vec<String> = (0..count).map(|i| i.to_string()).collect();
    let idle = format!(
        r#"{{"services":{{"notModified":[{}]}}}}"#,
        indexes.join(",")
    );
    let answers = std::sync::Arc::new((dump, full, idle));
    let router = axum::Router::new().fallback(move |request: axum::extract::Request| {
        let answers = answers.clone();
        async move {
            let path = request.uri().path().to_owned();
            let body = axum::body::to_bytes(request.into_body(), 16 << 20)
                .await
                .unwrap_or_default();
            let (dump, full, idle) = &*answers;
            if path.ends_with("/dump") {
                dump.clone()
            } else if path.ends_with("/tags") || path.ends_with("/rules") {
                // No tags and no rules (the first dump reads both for every service).
                "{}".to_owned()
            } else if body.windows(6).any(|w| w == b"\"rev\":") {
                idle.clone()
            } else {
                full.clone()
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = Url::parse(&format!("http://{}", listener.local_addr().expect("addr"))).expect("url");
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    url
}

/// Creates the services and instances; returns the instances.
async fn populate(url: &Url) -> Vec<InstanceRef> {
    use futures::stream::{self, StreamExt};
    let sc = ServiceComb::new(ServiceCombConfig::new(vec![url.clone()])).expect("adapter");
    let tenant = Tenant::default_tenant();
    let refs: Vec<InstanceRef> = stream::iter(0..SERVICES)
        .map(|n| {
            let sc = sc.clone();
            let tenant = tenant.clone();
            async move {
                let service = Service {
                    tenant: tenant.clone(),
                    service_id: format!("bench-svc-{n:04}"),
                    app: "bench".into(),
                    name: format!("service-{n:04}"),
                    version: "1.0.0".into(),
                    ..Service::default()
                };
                let id = sc.ensure_service(&service).await.expect("ensure_service");
                let instance = Instance {
                    tenant,
                    service_id: id,
                    instance_id: format!("bench-inst-{n:04}"),
                    endpoints: vec![format!("rest://10.0.{}.{}:8080", n / 250, n % 250)],
                    host_name: format!("host-{n:04}"),
                    status: "UP".into(),
                    ..Instance::default()
                };
                sc.register(&instance).await.expect("register");
                instance.reference()
            }
        })
        .buffer_unordered(SETUP_CONCURRENCY)
        .collect()
        .await;
    refs
}

/// Adds `count` services with one copy each (an instance carrying syncer's marks), as a data
/// centre holds for the other data centres' services.
async fn populate_copies(url: &Url, count: usize) {
    use futures::stream::{self, StreamExt};
    let sc = ServiceComb::new(ServiceCombConfig::new(vec![url.clone()])).expect("adapter");
    let tenant = Tenant::default_tenant();
    stream::iter(0..count)
        .for_each_concurrent(SETUP_CONCURRENCY, |n| {
            let (sc, tenant) = (sc.clone(), tenant.clone());
            async move {
                let service = Service {
                    tenant: tenant.clone(),
                    service_id: format!("bench-copy-svc-{n:04}"),
                    app: "bench".into(),
                    name: format!("mirrored-{n:04}"),
                    version: "1.0.0".into(),
                    ..Service::default()
                };
                let id = sc.ensure_service(&service).await.expect("ensure_service");
                let copy = Instance {
                    tenant,
                    service_id: id,
                    instance_id: format!("syncer-{n:032x}"),
                    endpoints: vec![format!("rest://10.1.{}.{}:8080", n / 250, n % 250)],
                    host_name: format!("copy-{n:04}"),
                    status: "UP".into(),
                    properties: [("syncer.origin".to_owned(), "dc2".to_owned())].into(),
                    ..Instance::default()
                };
                sc.register(&copy).await.expect("register");
            }
        })
        .await;
}

/// Runs `next` once and returns its duration, the batch, and the body bytes sent and received.
async fn timed_next(
    sc: &ServiceComb,
    feed: &mut Box<dyn ChangeFeed>,
) -> (Duration, Vec<Change>, u64, u64) {
    let (sent, received) = (sc.metrics().sent_bytes(), sc.metrics().received_bytes());
    let started = Instant::now();
    let batch = feed.next().await.expect("feed");
    let took = started.elapsed();
    (
        took,
        batch,
        sc.metrics().sent_bytes() - sent,
        sc.metrics().received_bytes() - received,
    )
}

/// Intervals so short that `next` never waits, and no listing, statistics or dump in
/// between.
fn polling_only(url: &Url) -> ServiceCombConfig {
    ServiceCombConfig {
        poll_interval: Duration::from_micros(1),
        discovery_interval: Duration::from_secs(3600),
        listing_interval: Duration::from_secs(3600),
        statistics: false,
        resync_interval: Duration::from_secs(3600),
        ..ServiceCombConfig::new(vec![url.clone()])
    }
}

async fn measure_polls(label: &str, url: &Url) {
    println!("-- {label}");
    let sc = ServiceComb::new(polling_only(url)).expect("adapter");
    let mut feed = sc.change_feed();
    let (took, batch, sent, received) = timed_next(&sc, &mut feed).await;
    assert!(matches!(batch.as_slice(), [Change::Resync(s)] if s.instances.len() == SERVICES));
    println!(
        "first batch (dump → resync): {:.1} ms, request {sent} B, response {received} B",
        ms(took)
    );
    let (took, batch, sent, received) = timed_next(&sc, &mut feed).await;
    println!(
        "first poll (no revisions yet): {:.1} ms, request {sent} B, response {received} B, {} changes",
        ms(took),
        batch.len()
    );

    let requests_before = sc.metrics().requests();
    let mut times = Vec::with_capacity(IDLE_POLLS);
    let (mut sent_total, mut received_total) = (0, 0);
    for _ in 0..IDLE_POLLS {
        let (took, batch, sent, received) = timed_next(&sc, &mut feed).await;
        assert!(batch.is_empty(), "nothing changed: {batch:?}");
        times.push(took);
        sent_total += sent;
        received_total += received;
    }
    let calls = (sc.metrics().requests() - requests_before) as f64 / IDLE_POLLS as f64;
    let polls = IDLE_POLLS as u64;
    println!(
        "idle poll ({IDLE_POLLS} polls): median {:.2} ms, p99 {:.2} ms, max {:.2} ms; {calls} call(s), request {} B, response {} B per poll",
        ms(percentile(&mut times, 50)),
        ms(percentile(&mut times, 99)),
        ms(percentile(&mut times, 100)),
        sent_total / polls,
        received_total / polls,
    );
}

/// The whole idle load of a feed on the registry at the daemon's default intervals, over
/// `IDLE_WINDOW`: as before statistics (a listing every five polls) and as now (statistics
/// after every poll, a listing every ten).
async fn measure_idle_load(url: &Url, what: &str) {
    println!(
        "-- idle load on the registry, {what}, over {IDLE_WINDOW:?} at the daemon's defaults (poll 100 ms, dump 30 s)"
    );
    let daemon = |statistics: bool| ServiceCombConfig {
        poll_interval: Duration::from_millis(100),
        discovery_interval: Duration::from_millis(500),
        listing_interval: Duration::from_secs(1),
        resync_interval: Duration::from_secs(30),
        statistics,
        ..ServiceCombConfig::new(vec![url.clone()])
    };
    for (label, statistics) in [
        ("listing every 500 ms, no statistics (before)", false),
        ("statistics every poll, listing every 1 s (now)", true),
    ] {
        let sc = ServiceComb::new(daemon(statistics)).expect("adapter");
        let mut feed = sc.change_feed();
        feed.next().await.expect("resync");
        feed.next().await.expect("first poll");
        let metrics = sc.metrics();
        let (sent, received, calls) = (
            metrics.sent_bytes(),
            metrics.received_bytes(),
            metrics.requests(),
        );
        let started = Instant::now();
        while started.elapsed() < IDLE_WINDOW {
            let batch = feed.next().await.expect("feed");
            assert!(
                batch.iter().all(|c| matches!(c, Change::Resync(_))),
                "nothing changed: {batch:?}"
            );
        }
        let secs = started.elapsed().as_secs_f64();
        let up = (metrics.sent_bytes() - sent) as f64 / secs;
        let down = (metrics.received_bytes() - received) as f64 / secs;
        println!(
            "{label}: {:.1} calls/s, {:.0} KB/s up, {:.0} KB/s down, {:.0} KB/s in all (bodies)",
            (metrics.requests() - calls) as f64 / secs,
            up / 1000.0,
            down / 1000.0,
            (up + down) / 1000.0
        );
    }
}

/// Cycles with a service listing each (what happens once per `discovery_interval`).
async fn measure_listing(url: &Url) {
    let config = ServiceCombConfig {
        discovery_interval: Duration::from_micros(1),
        ..polling_only(url)
    };
    let sc = ServiceComb::new(config).expect("adapter");
    let mut feed = sc.change_feed();
    feed.next().await.expect("resync");
    feed.next().await.expect("first poll");
    let mut times = Vec::with_capacity(LISTING_CYCLES);
    let (mut sent_total, mut received_total) = (0, 0);
    for _ in 0..LISTING_CYCLES {
        let (took, batch, sent, received) = timed_next(&sc, &mut feed).await;
        assert!(batch.is_empty(), "nothing changed: {batch:?}");
        times.push(took);
        sent_total += sent;
        received_total += received;
    }
    let cycles = LISTING_CYCLES as u64;
    println!(
        "poll + listing ({LISTING_CYCLES} cycles): median {:.2} ms, p99 {:.2} ms; request {} B, response {} B per cycle",
        ms(percentile(&mut times, 50)),
        ms(percentile(&mut times, 99)),
        sent_total / cycles,
        received_total / cycles,
    );
}

async fn measure_latency(url: &Url, refs: &[InstanceRef]) {
    let sc = ServiceComb::new(ServiceCombConfig::new(vec![url.clone()])).expect("adapter");
    let config = ServiceCombConfig::new(vec![url.clone()]);
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::channel::<(String, String, Instant)>(1024);
    let mut feed = sc.change_feed();
    feed.next().await.expect("resync");
    let watcher = tokio::spawn(async move {
        loop {
            let Ok(batch) = feed.next().await else {
                continue;
            };
            let now = Instant::now();
            for change in batch {
                if let Change::Instance(i) = change
                    && seen_tx.send((i.instance_id, i.status, now)).await.is_err()
                {
                    return;
                }
            }
        }
    });

    let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
    let mut latencies = Vec::with_capacity(CHANGES);
    for n in 0..CHANGES {
        // Every other change puts the previous instance back UP.
        let target = &refs[(n / 2 * 7919) % refs.len()];
        let status = if n % 2 == 0 { "DOWN" } else { "UP" };
        // Change at a pseudo-random moment of the poll cycle.
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let offset = Duration::from_micros(rng % config.poll_interval.as_micros() as u64);
        tokio::time::sleep(offset).await;
        sc.set_status(target, status).await.expect("set_status");
        let changed = Instant::now();
        loop {
            let (id, seen_status, at) =
                tokio::time::timeout(Duration::from_secs(10), seen_rx.recv())
                    .await
                    .expect("the feed reports the change within 10 s")
                    .expect("watcher running");
            if id == target.instance_id && seen_status == status {
                latencies.push(at.saturating_duration_since(changed));
                break;
            }
        }
    }
    watcher.abort();
    println!(
        "change → feed, poll_interval {} ms ({CHANGES} status changes): median {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        config.poll_interval.as_millis(),
        ms(percentile(&mut latencies, 50)),
        ms(percentile(&mut latencies, 99)),
        ms(percentile(&mut latencies, 100)),
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The `p`th percentile (nearest rank) of `values`.
fn percentile(values: &mut [Duration], p: usize) -> Duration {
    values.sort_unstable();
    if values.is_empty() {
        return Duration::ZERO;
    }
    let rank = (p * values.len()).div_ceil(100).clamp(1, values.len());
    values[rank - 1]
}

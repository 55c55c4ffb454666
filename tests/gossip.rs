//! The gossip pool between real `syncer daemon` processes on 127.0.0.x: convergence, crash
//! detection, graceful leave, joining through an rpc address, pool labels and rejoining from
//! remembered members. Each daemon runs the `local` profile (fast timing for one machine).

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use support::{DEADLINE, Daemon, run, syncer};

struct Node {
    name: String,
    daemon: Daemon,
    gossip: String,
    rpc: String,
    admin: String,
    /// The data centre name it announced when ready.
    cluster: String,
}

fn start(dir: &Path, name: &str, ip: &str, extra: &[&str]) -> Node {
    let mut cmd = syncer(dir);
    cmd.args([
        "daemon",
        "--node",
        name,
        "--bind-addr",
        &format!("{ip}:0"),
        "--rpc-addr",
        &format!("{ip}:0"),
        "--admin-addr",
        &format!("{ip}:0"),
        "--gossip-profile",
        "local",
        "--log-format",
        "json",
        "--log-level",
        "info,syncer::gossip=debug",
        "--data-dir",
    ])
    .arg(dir.join(name))
    .args(extra);
    if !extra.contains(&"--sc-addr") {
        // Nothing listens there: the daemon keeps trying to identify its registry. It needs
        // a name then: without one, a first start waits for the registry to name the data
        // centre.
        cmd.args(["--sc-addr", "http://127.0.0.1:9"]);
        if !extra.contains(&"--cluster-name") {
            cmd.args(["--cluster-name", "gossip-test"]);
        }
    }
    let mut daemon = Daemon::spawn(cmd);
    let ready = daemon.wait_ready();
    let field = |key: &str| ready[key].as_str().unwrap_or_default().to_owned();
    Node {
        name: name.to_owned(),
        gossip: field("gossip_addr"),
        rpc: field("rpc_addr"),
        admin: field("admin_addr"),
        cluster: field("cluster"),
        daemon,
    }
}

/// `syncer members --rpc-addr <rpc> [extra]`.
fn members_cmd(rpc: &str, extra: &[&str]) -> support::Outcome {
    let mut cmd = syncer(Path::new("."));
    cmd.args(["members", "--rpc-addr", rpc]).args(extra);
    run(cmd)
}

/// The pool as the syncer at `rpc` sees it (`--format json`); empty when it does not answer.
fn members_json(rpc: &str) -> Vec<serde_json::Value> {
    let out = members_cmd(rpc, &["--format", "json"]);
    serde_json::from_str(&out.stdout).unwrap_or_default()
}

/// Member name -> status, as the syncer at `rpc` sees the pool.
fn statuses(rpc: &str) -> BTreeMap<String, String> {
    members_json(rpc)
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap_or_default().to_owned(),
                m["status"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_all_alive(nodes: &mut [Node], n: usize) {
    let deadline = Instant::now() + DEADLINE;
    for i in 0..nodes.len() {
        while statuses(&nodes[i].rpc)
            .values()
            .filter(|s| *s == "alive")
            .count()
            != n
        {
            if Instant::now() > deadline {
                let logs: Vec<String> = nodes
                    .iter_mut()
                    .map(|node| {
                        node.daemon.drain();
                        format!("--- {}\n{}", node.name, node.daemon.log())
                    })
                    .collect();
                panic!(
                    "{} does not see {n} alive members\n{}",
                    nodes[i].name,
                    logs.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// `/health` of the admin address `admin`, as JSON (null when it does not answer).
fn health(admin: &str) -> serde_json::Value {
    tokio::runtime::Runtime::new()
        .ok()
        .and_then(|rt| {
            rt.block_on(async {
                reqwest::get(format!("http://{admin}/health"))
                    .await
                    .ok()?
                    .json()
                    .await
                    .ok()
            })
        })
        .unwrap_or_default()
}

fn metric(admin: &str, name: &str) -> f64 {
    let body = tokio::runtime::Runtime::new()
        .ok()
        .and_then(|rt| {
            rt.block_on(async {
                reqwest::get(format!("http://{admin}/metrics"))
                    .await
                    .ok()?
                    .text()
                    .await
                    .ok()
            })
        })
        .unwrap_or_default();
    body.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn five_daemons_converge_detect_a_kill_and_see_a_leave() {
    let dir = tempfile::tempdir().unwrap();
    let first = start(dir.path(), "g0", "127.0.0.1", &[]);
    let join = first.gossip.clone();
    let mut nodes = vec![first];
    for i in 1..5 {
        let ip = format!("127.0.0.{}", i + 1);
        nodes.push(start(
            dir.path(),
            &format!("g{i}"),
            &ip,
            &["--join-addr", &join],
        ));
    }
    wait_all_alive(&mut nodes, 5);

    // The JSON output carries the keys scripts depend on.
    let out = members_cmd(&nodes[2].rpc, &["--format", "json"]);
    let members: Vec<serde_json::Value> = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(members.len(), 5);
    for key in [
        "name",
        "gossip_addr",
        "rpc_addr",
        "cluster",
        "role",
        "status",
    ] {
        assert!(members[0][key].is_string(), "missing {key}: {}", out.stdout);
    }
    assert_eq!(members[0]["name"], "g2");
    assert_eq!(members[0]["role"], "active");
    let g0 = members.iter().find(|m| m["name"] == "g0").unwrap();
    assert_eq!(g0["gossip_addr"], nodes[0].gossip.as_str());
    assert_eq!(g0["rpc_addr"], nodes[0].rpc.as_str());

    // kill -9: the others declare it down.
    let mut killed = nodes.pop().unwrap();
    killed.daemon.child.kill().unwrap();
    killed.daemon.child.wait().unwrap();
    for node in &nodes {
        wait_until("g4 down", || {
            statuses(&node.rpc).get("g4").map(String::as_str) == Some("down")
        });
    }

    // A graceful stop: the others show it as left, not down.
    let mut leaving = nodes.pop().unwrap();
    leaving.daemon.signal("TERM");
    assert!(
        leaving.daemon.wait_exit().success(),
        "{}",
        leaving.daemon.log()
    );
    for node in &nodes {
        wait_until("g3 left", || {
            statuses(&node.rpc).get("g3").map(String::as_str) == Some("left")
        });
    }
    assert_eq!(
        statuses(&nodes[0].rpc).get("g4").map(String::as_str),
        Some("down")
    );
}

#[test]
fn joins_through_an_rpc_address() {
    let dir = tempfile::tempdir().unwrap();
    let first = start(dir.path(), "r0", "127.0.0.1", &[]);
    // As in the original README's single-mode example: the peer's rpc port as --join-addr.
    let second = start(dir.path(), "r1", "127.0.0.2", &["--join-addr", &first.rpc]);
    wait_all_alive(&mut [first, second], 2);
}

#[test]
fn a_daemon_with_another_label_is_not_admitted() {
    let dir = tempfile::tempdir().unwrap();
    let first = start(dir.path(), "l0", "127.0.0.1", &[]);
    let outsider = start(
        dir.path(),
        "l1",
        "127.0.0.2",
        &["--join-addr", &first.gossip, "--gossip-label", "blue"],
    );
    wait_until("label drops counted", || {
        metric(
            &first.admin,
            "syncer_gossip_datagrams_dropped_total{reason=\"label\"}",
        ) >= 2.0
    });
    assert_eq!(statuses(&first.rpc).len(), 1);
    assert_eq!(statuses(&outsider.rpc).len(), 1);
}

#[test]
fn a_restarted_daemon_rejoins_from_remembered_members() {
    let dir = tempfile::tempdir().unwrap();
    let first = start(dir.path(), "m0", "127.0.0.1", &[]);
    let mut second = start(
        dir.path(),
        "m1",
        "127.0.0.2",
        &["--join-addr", &first.gossip],
    );
    wait_until("m1 seen", || {
        statuses(&first.rpc).get("m1").map(String::as_str) == Some("alive")
    });
    let generation = |rpc: &str| -> u64 { members_json(rpc)[0]["generation"].as_u64().unwrap() };
    let before = generation(&second.rpc);
    second.daemon.signal("TERM");
    assert!(second.daemon.wait_exit().success());

    // No --join-addr this time: the data directory remembers m0.
    let second = start(dir.path(), "m1", "127.0.0.2", &[]);
    assert!(generation(&second.rpc) > before);
    wait_all_alive(&mut [first, second], 2);
}

#[test]
fn one_cluster_name_for_two_registries_is_flagged() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (sc_a, sc_b) = rt.block_on(async {
        let config = syncer::devreg::DevRegistryConfig::default;
        (
            syncer::devreg::DevRegistry::start(config()).await.unwrap(),
            syncer::devreg::DevRegistry::start(config()).await.unwrap(),
        )
    });
    let dir = tempfile::tempdir().unwrap();
    let start_for = |name: &str, ip: &str, sc: &str, join: Option<&str>| {
        let mut args = vec!["--cluster-name", "same-dc", "--sc-addr", sc];
        if let Some(join) = join {
            args.extend(["--join-addr", join]);
        }
        start(dir.path(), name, ip, &args)
    };
    let first = start_for("c0", "127.0.0.1", &sc_a.url(), None);
    let second = start_for("c1", "127.0.0.2", &sc_b.url(), Some(&first.gossip));
    wait_until("both members flagged", || {
        let listed = members_json(&first.rpc);
        listed.len() == 2
            && listed.iter().all(|m| {
                m["conflict"] == true && m["registry"].as_str().is_some_and(|r| r.len() == 12)
            })
    });
    let mut first = first;
    first.daemon.wait_for_line("serve different registries");
    let table = members_cmd(&second.rpc, &[]);
    assert!(table.stdout.contains("CONFLICT"), "{}", table.stdout);
    assert!(
        table.stdout.contains("no data centre imports it"),
        "{}",
        table.stdout
    );
    // (issue 21 item 6) `/health` says so: degraded, naming the name and the reason.
    for node in [&first, &second] {
        wait_until("health degraded", || {
            let h = health(&node.admin);
            h["status"] == "degraded"
                && h["conflicts"] == serde_json::json!(["same-dc"])
                && h["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("different registries"))
        });
    }
    drop(rt);
}

/// (issue 21 item 6) Without `--cluster-name`, two data centres whose `--sc-addr` text is the
/// same (each reaches its own registry at `http://127.0.0.1:<port>`) get different names: the
/// name comes from the registry's identity on the first start, not from the address text.
/// It is saved: a restart keeps it even when the registry behind the address changed.
#[test]
fn default_names_differ_for_the_same_address_text_and_survive_restarts() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut sc = support::sync::Registry::start(&rt, "127.0.0.1:0".parse().unwrap());
    let url = sc.url();
    let dir = tempfile::tempdir().unwrap();
    let args = ["--sc-addr", url.as_str()];
    let mut first = start(dir.path(), "n0", "127.0.0.1", &args);
    let name = first.cluster.clone();
    assert_eq!(name.len(), 32, "{name}");
    first.daemon.signal("TERM");
    assert!(first.daemon.wait_exit().success());

    // Another data centre: another registry, the same address text.
    sc.stop();
    sc.start_again();
    assert_eq!(sc.url(), url);
    let mut other = start(dir.path(), "n1", "127.0.0.1", &args);
    assert_ne!(other.cluster, name, "same --sc-addr text, another registry");
    other.daemon.signal("TERM");
    assert!(other.daemon.wait_exit().success());

    // The first data centre restarts: its saved name, whatever the registry says now.
    let again = start(dir.path(), "n0", "127.0.0.1", &args);
    assert_eq!(again.cluster, name, "stable across restarts");
    drop(again);
    drop(rt);
}

// --- Encrypted gossip (--gossip-key, the keyring file) ---

/// A new key from `syncer keygen`.
fn keygen() -> String {
    let mut cmd = syncer(Path::new("."));
    cmd.arg("keygen");
    let out = run(cmd);
    assert_eq!(out.code, Some(0), "keygen failed: {}", out.stderr);
    let key = out.stdout.trim().to_owned();
    assert_eq!(key.len(), 44, "not the base64 of 32 bytes: {key:?}");
    key
}

fn drops(admin: &str, reason: &str) -> f64 {
    metric(
        admin,
        &format!("syncer_gossip_datagrams_dropped_total{{reason=\"{reason}\"}}"),
    )
}

#[test]
fn keygen_makes_a_different_key_each_time() {
    assert_ne!(keygen(), keygen());
}

#[test]
fn an_encrypted_pool_forms_and_syncs() {
    use support::sync::{NewInstance, SYNC_DEADLINE, World};

    let key = keygen();
    let mut w = World::start(2, &["--gossip-key", &key]);
    let sid = w.reg(0).create_service("shop", "orders", "1.0.0");
    w.reg(0).register(
        &sid,
        &NewInstance::new("orders-host", "rest://10.1.0.1:8080"),
    );
    w.wait_until("a copy in dc2 over encrypted gossip", SYNC_DEADLINE, |w| {
        w.reg(1).copies().len() == 1
    });
    for i in 0..2 {
        let ring = w.dcs[i].data_dir.join("gossip-keyring.json");
        let text = std::fs::read_to_string(&ring).unwrap_or_default();
        w.check(text.contains(&key), || {
            format!("{} was not seeded with the key", ring.display())
        });
        let metrics = w.metrics(i);
        w.check(
            !metrics.contains("reason=\"decrypt\"")
                || support::sync::metric_sum(
                    &metrics,
                    "syncer_gossip_datagrams_dropped_total",
                    &["reason=\"decrypt\""],
                ) == 0.0,
            || format!("dc{} dropped datagrams of its own pool", i + 1),
        );
    }
}

#[test]
fn members_with_another_key_or_none_are_not_admitted() {
    let dir = tempfile::tempdir().unwrap();
    let key = keygen();
    let first = start(dir.path(), "e0", "127.0.0.1", &["--gossip-key", &key]);
    let second = start(
        dir.path(),
        "e1",
        "127.0.0.2",
        &["--join-addr", &first.gossip, "--gossip-key", &key],
    );
    let mut pool = [first, second];
    wait_all_alive(&mut pool, 2);
    let [first, second] = pool;
    let wrong = start(
        dir.path(),
        "e2",
        "127.0.0.3",
        &["--join-addr", &first.gossip, "--gossip-key", &keygen()],
    );
    let plain = start(
        dir.path(),
        "e3",
        "127.0.0.4",
        &["--join-addr", &first.gossip],
    );
    // Both outsiders keep asking to join; each attempt is a datagram e0 cannot open.
    wait_until("decrypt drops from both outsiders", || {
        drops(&first.admin, "decrypt") >= 4.0
    });
    for (node, members) in [(&first, 2), (&second, 2), (&wrong, 1), (&plain, 1)] {
        let seen = statuses(&node.rpc);
        assert_eq!(seen.len(), members, "{} sees {seen:?}", node.name);
    }
    assert!(!statuses(&first.rpc).contains_key("e2"));
    assert!(!statuses(&first.rpc).contains_key("e3"));
}

#[test]
fn two_keys_installed_with_different_primaries_still_talk() {
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = (keygen(), keygen());
    for (name, primary) in [("k0", &old), ("k1", &new)] {
        let data = dir.path().join(name);
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(
            data.join("gossip-keyring.json"),
            format!(r#"{{"primary":"{primary}","keys":["{old}","{new}"]}}"#),
        )
        .unwrap();
    }
    // The flag is ignored once a keyring file exists: neither of these keys is in it.
    let stray = keygen();
    let first = start(dir.path(), "k0", "127.0.0.1", &["--gossip-key", &stray]);
    let second = start(
        dir.path(),
        "k1",
        "127.0.0.2",
        &["--join-addr", &first.gossip],
    );
    let mut pool = [first, second];
    wait_all_alive(&mut pool, 2);
    for node in &pool {
        assert_eq!(drops(&node.admin, "decrypt"), 0.0, "{}", node.name);
    }
}

#[test]
fn a_bad_gossip_key_stops_the_daemon_without_printing_it() {
    let dir = tempfile::tempdir().unwrap();
    let short = "c2hvcnQta2V5LXRleHQ="; // base64 of 14 bytes
    for (flag_or_env, value, needle) in [
        (true, short, "--gossip-key"),
        (true, "not base64 at all!", "--gossip-key"),
        (false, short, "SYNCER_GOSSIP_KEY"),
    ] {
        let mut cmd = syncer(dir.path());
        cmd.args([
            "daemon",
            "--bind-addr",
            "127.0.0.1:0",
            "--rpc-addr",
            "127.0.0.1:0",
        ]);
        if flag_or_env {
            cmd.args(["--gossip-key", value]);
        } else {
            cmd.env("SYNCER_GOSSIP_KEY", value);
        }
        let out = run(cmd);
        assert_eq!(out.code, Some(2), "{}", out.stderr);
        assert!(out.stderr.contains(needle), "{}", out.stderr);
        assert!(
            !out.stderr.contains(value),
            "the key was printed: {}",
            out.stderr
        );
    }
    // The YAML key `gossip.key` too.
    let yaml = dir.path().join("syncer.yaml");
    std::fs::write(&yaml, format!("gossip:\n  key: \"{short}\"\n")).unwrap();
    let mut cmd = syncer(dir.path());
    cmd.args([
        "daemon",
        "--bind-addr",
        "127.0.0.1:0",
        "--rpc-addr",
        "127.0.0.1:0",
        "--config",
    ])
    .arg(&yaml);
    let out = run(cmd);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("gossip.key in"), "{}", out.stderr);
    assert!(
        !out.stderr.contains(short),
        "the key was printed: {}",
        out.stderr
    );
    // `--check` shows that a key is set, never the key.
    let key = keygen();
    let mut cmd = syncer(dir.path());
    cmd.args([
        "daemon",
        "--check",
        "--bind-addr",
        "127.0.0.1:0",
        "--rpc-addr",
        "127.0.0.1:0",
        "--gossip-key",
        &key,
    ]);
    let out = run(cmd);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let line = out
        .stdout
        .lines()
        .find(|l| l.trim_start().starts_with("gossip_key"))
        .unwrap_or_default();
    assert!(line.contains("= set"), "{}", out.stdout);
    assert!(!out.stdout.contains(&key) && !out.stderr.contains(&key));
    // A corrupt keyring file stops the daemon too, naming the file.
    let mut cmd = syncer(dir.path());
    let data = dir.path().join("bad-ring");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("gossip-keyring.json"), "{").unwrap();
    cmd.args([
        "daemon",
        "--bind-addr",
        "127.0.0.1:0",
        "--rpc-addr",
        "127.0.0.1:0",
        "--cluster-name",
        "x",
        "--sc-addr",
        "http://127.0.0.1:9",
        "--data-dir",
    ])
    .arg(&data);
    let out = run(cmd);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("gossip-keyring.json"), "{}", out.stderr);
}

/// Regression (chaos suite, seed 20261205): two members of one data centre, a registry that
/// restarts (Service Center then registers itself under a new instance id, so the registry's
/// identity changes), and one member restarting after it. The restarted member announces the
/// new identity, the other one still the old one: before each member asked its registry
/// again, that looked like two data centres claiming one name, a conflict that froze every
/// import of the name for good. Now the other member re-identifies within a refresh period
/// and the dispute ends, without the conflict error.
#[test]
fn a_restarted_registry_is_not_taken_for_a_second_data_centre() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut registry = support::sync::Registry::start(&rt, "127.0.0.1:0".parse().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let sc = registry.url();
    let args = ["--cluster-name", "one-dc", "--sc-addr", sc.as_str()];
    let mut first = start(dir.path(), "r0", "127.0.0.1", &args);
    let mut join = args.to_vec();
    join.extend(["--join-addr", first.gossip.as_str()]);
    let second = start(dir.path(), "r1", "127.0.0.2", &join);
    let fingerprints = |rpc: &str| -> Vec<String> {
        members_json(rpc)
            .iter()
            .map(|m| m["registry"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    wait_until("both members announce one registry", || {
        let fps = fingerprints(&first.rpc);
        fps.len() == 2 && !fps[0].is_empty() && fps[0] == fps[1]
    });
    let before = fingerprints(&first.rpc)[0].clone();

    registry.stop();
    registry.start_again();
    let mut second = second;
    second.daemon.signal("TERM");
    assert!(second.daemon.wait_exit().success());
    let second = start(dir.path(), "r1", "127.0.0.2", &join);
    wait_until("both members announce the registry's new identity", || {
        let fps = fingerprints(&second.rpc);
        fps.len() == 2 && fps[0] == fps[1] && fps[0] != before && !fps[0].is_empty()
    });
    wait_until("no member flagged in conflict", || {
        members_json(&first.rpc)
            .iter()
            .all(|m| m["conflict"] == false)
    });
    first
        .daemon
        .wait_for_line("the registry's identity changed");
    first.daemon.drain();
    assert!(
        !first.daemon.log().contains("serve different registries"),
        "a restarted registry was taken for a second data centre:\n{}",
        first.daemon.log()
    );
}

/// Issue 20 item 4: the first member of a pool (no `--join-addr`) writes the members that
/// joined it to `gossip.json` within moments; killed then (SIGKILL) and restarted on a new
/// gossip address with no `--join-addr`, it finds them through that file, and it takes the
/// old address it still sees listed for its own previous incarnation, not for a second
/// process with its name.
#[test]
fn the_first_member_restarted_on_a_new_address_finds_the_others_from_its_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = start(dir.path(), "f0", "127.0.0.1", &[]);
    let others: Vec<Node> = ["f1", "f2"]
        .iter()
        .map(|name| {
            start(
                dir.path(),
                name,
                "127.0.0.2",
                &["--join-addr", &first.gossip],
            )
        })
        .collect();
    wait_until("f1 and f2 seen alive by f0", || {
        statuses(&first.rpc)
            .values()
            .filter(|s| *s == "alive")
            .count()
            == 3
    });
    let seen = Instant::now();
    let state = dir.path().join("f0").join("gossip.json");
    let listed = || -> Vec<String> {
        std::fs::read(&state)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v["members"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|m| m["name"].as_str().map(str::to_owned))
            .collect()
    };
    wait_until("gossip.json of f0 lists f1 and f2", || {
        listed() == ["f1", "f2"]
    });
    assert!(
        seen.elapsed() < Duration::from_secs(2),
        "gossip.json listed the members {:?} after they were seen",
        seen.elapsed()
    );
    first.daemon.signal("KILL");
    first.daemon.wait_exit();
    let old_gossip = first.gossip.clone();

    let mut restarted = start(dir.path(), "f0", "127.0.0.1", &[]);
    assert_ne!(restarted.gossip, old_gossip, "bound a new gossip port");
    let back = Instant::now();
    let mut all = vec![restarted];
    all.extend(others);
    wait_all_alive(&mut all, 3);
    assert!(
        back.elapsed() < Duration::from_secs(10),
        "rejoined after {:?}",
        back.elapsed()
    );
    restarted = all.remove(0);
    let seen_by_f1 = members_json(&all[0].rpc);
    assert!(
        seen_by_f1.iter().any(|m| m["name"] == "f0"
            && m["gossip_addr"] == restarted.gossip.as_str()
            && m["status"] == "alive"),
        "{seen_by_f1:?}"
    );
    restarted.daemon.drain();
    let log = restarted.daemon.log();
    assert!(
        !log.contains("another member uses this node's name"),
        "the restarted member took its previous incarnation for another process:\n{log}"
    );
}

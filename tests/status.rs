//! `syncer status` and `syncer mappings` against real daemons: three data centres syncing
//! show every origin with its copies, cursor up to date and a recent exchange, in both
//! formats; with one syncer killed, status through another names it as not answering
//! (exit 2) and shows its origin going stale; `mappings` lists exactly the copies the
//! registry holds, `--origin` filters. Harness: `tests/support/sync.rs`.

mod support;

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;
use support::sync::{NewInstance, SYNC_DEADLINE, World};
use support::{Outcome, run, syncer};

/// `syncer SUB --rpc-addr RPC ARGS...`.
fn cli(sub: &str, rpc: &str, args: &[&str]) -> Outcome {
    let mut cmd = syncer(Path::new("."));
    cmd.args([sub, "--rpc-addr", rpc, "--timeout", "3s"])
        .args(args);
    run(cmd)
}

fn json(out: &Outcome) -> Value {
    serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}\nstderr: {}", out.stdout, out.stderr))
}

/// The import of `origin` by `importer` in a status report.
fn import<'a>(report: &'a Value, origin: &str, importer: &str) -> Option<&'a Value> {
    report["members"]
        .as_array()?
        .iter()
        .flat_map(|m| m["origins"].as_array().into_iter().flatten())
        .find(|o| o["origin"] == origin && o["importer"] == importer)
}

/// Whether `importer`'s import of `origin` holds `copies` copies, with its cursor at the
/// revision the origin's own member reports exporting, nothing behind, and an exchange in
/// the last few seconds. (Not the announced revision: gossip announcements are best effort,
/// and a push or pull brings the cursor without one.)
fn caught_up(report: &Value, origin: &str, importer: &str, copies: u64) -> bool {
    let exported = report["members"]
        .as_array()
        .and_then(|ms| ms.iter().find(|m| m["cluster"] == origin))
        .map(|m| (m["export"]["epoch"].clone(), m["export"]["seq"].clone()));
    import(report, origin, importer).is_some_and(|o| {
        o["copies"] == copies
            && o["behind"] == 0
            && o["snapshot_pending"] == false
            && Some((o["cursor"]["epoch"].clone(), o["cursor"]["seq"].clone())) == exported
            && o["last_exchange_seconds_ago"]
                .as_u64()
                .is_some_and(|s| s <= 5)
            && o["active_member"] == format!("{origin}-a")
    })
}

fn copy_ids(w: &World, i: usize, origin: &str) -> BTreeSet<String> {
    w.reg(i)
        .copies()
        .into_iter()
        .filter(|c| c.origin() == Some(origin))
        .map(|c| c.instance_id)
        .collect()
}

fn mapped_ids(rows: &Value, origin: &str) -> BTreeSet<String> {
    rows.as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["origin"] == origin && r["state"] == "present")
        .filter_map(|r| r["copy_instance_id"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn status_and_mappings_of_a_syncing_pool_and_of_one_with_a_member_down() {
    let mut w = World::start(3, &[]);
    let orders = w.reg(0).create_service("shop", "orders", "1.0.0");
    for k in 1..=2 {
        w.reg(0).register(
            &orders,
            &NewInstance::new(&format!("orders-{k}"), &format!("rest://10.1.0.{k}:8080")),
        );
    }
    let pay = w.reg(2).create_service("shop", "pay", "1.0.0");
    w.reg(2)
        .register(&pay, &NewInstance::new("pay-1", "rest://10.3.0.1:8080"));
    w.wait_until("the copies everywhere", SYNC_DEADLINE, |w| {
        copy_ids(w, 1, "dc1").len() == 2
            && copy_ids(w, 2, "dc1").len() == 2
            && copy_ids(w, 0, "dc3").len() == 1
            && copy_ids(w, 1, "dc3").len() == 1
    });

    // JSON through dc1: every member, every origin per importer, caught up.
    let rpc1 = w.node(0).rpc.clone();
    let mut last = Value::Null;
    w.wait_until("status shows every import caught up", SYNC_DEADLINE, |_| {
        let out = cli("status", &rpc1, &["--format", "json"]);
        if out.code != Some(0) {
            return false;
        }
        last = json(&out);
        caught_up(&last, "dc1", "dc2", 2)
            && caught_up(&last, "dc1", "dc3", 2)
            && caught_up(&last, "dc3", "dc1", 1)
            && caught_up(&last, "dc3", "dc2", 1)
    });
    let members = last["members"].as_array().cloned().unwrap_or_default();
    let names: Vec<&str> = members.iter().filter_map(|m| m["name"].as_str()).collect();
    w.check(names == ["dc1-a", "dc2-a", "dc3-a"], || {
        format!("members: {last:#}")
    });
    for m in &members {
        let fine = m["role"] == "active"
            && m["engine"] == "running"
            && m["mode"] == "single"
            && m["registry"]["ok"] == true
            && m["store"]["kind"] == "redb"
            && m["store"]["ok"] == true
            && m["export"]["ready"] == true
            && m["uptime_seconds"].as_u64().is_some();
        w.check(fine, || format!("member status: {m:#}"));
    }
    let dc1 = &members[0];
    w.check(
        dc1["export"]["instances"] == 2 && dc1["export"]["services"] == 1,
        || format!("dc1 exports: {dc1:#}"),
    );
    w.check(last["unreachable"] == Value::Array(Vec::new()), || {
        format!("unreachable: {last:#}")
    });

    // The table, through dc2: both tables, aligned, one row per origin and importer.
    let rpc2 = w.node(1).rpc.clone();
    let out = cli("status", &rpc2, &[]);
    w.check(out.code == Some(0), || {
        format!("table: {}{}", out.stdout, out.stderr)
    });
    let lines: Vec<&str> = out.stdout.lines().collect();
    let imports = lines
        .iter()
        .position(|l| l.starts_with("ORIGIN"))
        .unwrap_or(0);
    let rows: Vec<Vec<&str>> = lines[imports + 1..]
        .iter()
        .map(|l| l.split_whitespace().collect())
        .collect();
    let keys: Vec<(&str, &str)> = rows.iter().map(|r| (r[0], r[1])).collect();
    w.check(
        lines[0].starts_with("MEMBER")
            && keys
                == [
                    ("dc1", "dc2"),
                    ("dc1", "dc3"),
                    ("dc2", "dc1"),
                    ("dc2", "dc3"),
                    ("dc3", "dc1"),
                    ("dc3", "dc2"),
                ],
        || format!("table:\n{}", out.stdout),
    );
    w.check(out.stdout.contains(" ago"), || {
        format!("table:\n{}", out.stdout)
    });

    // Mappings of dc2: exactly the copies its registry holds, all present.
    let out = cli("mappings", &rpc2, &["--format", "json"]);
    w.check(out.code == Some(0), || format!("mappings: {}", out.stderr));
    let rows = json(&out);
    let all = rows.as_array().map_or(0, Vec::len);
    let (from1, from3) = (copy_ids(&w, 1, "dc1"), copy_ids(&w, 1, "dc3"));
    w.check(
        mapped_ids(&rows, "dc1") == from1 && mapped_ids(&rows, "dc3") == from3 && all == 3,
        || format!("mappings {rows:#} against copies {from1:?} {from3:?}"),
    );
    let origin_ids: BTreeSet<String> = rows
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["origin"] == "dc1")
        .filter_map(|r| r["origin_instance_id"].as_str().map(str::to_owned))
        .collect();
    let dc1_ids: BTreeSet<String> = w
        .reg(0)
        .locals()
        .into_iter()
        .map(|i| i.instance_id)
        .collect();
    w.check(origin_ids == dc1_ids, || {
        format!("origin ids {origin_ids:?} against dc1's {dc1_ids:?}")
    });
    let out = cli("mappings", &rpc2, &["--origin", "dc3", "--format", "json"]);
    let only = json(&out);
    w.check(
        only.as_array().is_some_and(|r| r.len() == 1) && mapped_ids(&only, "dc3") == from3,
        || format!("--origin dc3: {only:#}"),
    );
    let out = cli("mappings", &rpc2, &["--origin", "nowhere"]);
    w.check(
        out.code == Some(1)
            && out
                .stderr
                .contains("does not import nowhere; it imports: dc1, dc3"),
        || {
            format!(
                "mappings of an unknown origin: {}{}",
                out.stdout, out.stderr
            )
        },
    );
    let out = cli("mappings", &rpc2, &["--origin", "dc1"]);
    w.check(
        out.code == Some(0)
            && out.stdout.starts_with("ORIGIN")
            && out.stdout.ends_with("2 entries\n"),
        || format!("mappings table:\n{}", out.stdout),
    );

    // dc3's syncer dies: status through dc1 names it (exit 2), and dc1's import of dc3
    // goes stale with its last error.
    w.stop_daemon(2, "KILL");
    let mut last = Value::Null;
    let mut stderr = String::new();
    w.wait_until("dc1 sees dc3 stale", SYNC_DEADLINE, |_| {
        let out = cli("status", &rpc1, &["--format", "json"]);
        if out.code != Some(2) {
            return false;
        }
        stderr = out.stderr.clone();
        last = json(&out);
        import(&last, "dc3", "dc1")
            .is_some_and(|o| o["stale"] == true && o["last_error"]["text"].is_string())
    });
    let named = last["unreachable"]
        .as_array()
        .is_some_and(|u| u.len() == 1 && u[0]["name"] == "dc3-a" && u[0]["cluster"] == "dc3");
    w.check(named && stderr.contains("dc3-a"), || {
        format!("unreachable: {last:#}\nstderr: {stderr}")
    });
    w.check(caught_up(&last, "dc1", "dc2", 2), || {
        format!("dc2 still fine: {last:#}")
    });
    let out = cli("status", &rpc1, &[]);
    let down = out
        .stdout
        .lines()
        .any(|l| l.starts_with("dc3-a") && l.contains("NOT ANSWERING"));
    let stale = out
        .stdout
        .lines()
        .any(|l| l.starts_with("dc3") && l.contains("STALE"));
    w.check(out.code == Some(2) && down && stale, || {
        format!("table with dc3 down:\n{}{}", out.stdout, out.stderr)
    });
}

#[test]
fn status_of_an_unreachable_address_fails_with_exit_1() {
    let out = cli("status", "127.0.0.1:1", &[]);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("127.0.0.1:1"), "{}", out.stderr);
    let out = cli("mappings", "127.0.0.1:1", &[]);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
}

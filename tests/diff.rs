//! `syncer diff` with real processes: a pool of three data centres mirroring each other is
//! consistent (exit 0); then drift is planted behind syncer's back in dc3, whose syncer polls
//! its registry only once a minute so that it does not repair it meanwhile: an edited copy,
//! a second copy of one origin instance, and a copy of an instance that never existed. The
//! audit names each precisely (exit 1), in JSON and as a table, and `--origin` narrows it.
//! A pool with a member that cannot be asked exits 2. Harness: `tests/support/sync.rs`.

mod support;

use std::path::Path;

use serde_json::Value;
use support::sync::{DcSetup, NewInstance, SYNC_DEADLINE, World};
use support::{Outcome, run, syncer};
use syncer::registry::Tenant;
use syncer::sync::ids::{ORIGIN_PROPERTY, OriginKey, copy_instance_id};

fn diff(dir: &Path, rpc: &str, extra: &[&str]) -> Outcome {
    let mut cmd = syncer(dir);
    cmd.args([
        "diff",
        "--rpc-addr",
        rpc,
        "--settle",
        "1s",
        "--timeout",
        "5s",
    ])
    .args(extra);
    run(cmd)
}

fn findings(out: &Outcome) -> Vec<Value> {
    let report: Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("diff JSON: {e}\n{}", out.stdout));
    report["findings"].as_array().cloned().unwrap_or_default()
}

#[test]
fn diff_finds_planted_drift_precisely_and_a_clean_pool_is_consistent() {
    let mut w = World::start_each(
        vec![
            DcSetup::default(),
            DcSetup::default(),
            DcSetup {
                flags: vec!["--poll-interval".into(), "1m".into()],
                ..DcSetup::default()
            },
        ],
        &[],
    );
    let sid = w.reg(0).create_service("shop", "orders", "1.0.0");
    let o1 = w
        .reg(0)
        .register(&sid, &NewInstance::new("o1-host", "rest://10.1.0.1:8080"));
    let o2 = w
        .reg(0)
        .register(&sid, &NewInstance::new("o2-host", "rest://10.1.0.2:8080"));
    w.wait_until("both instances in dc2 and dc3", SYNC_DEADLINE, |w| {
        w.reg(1).copies().len() == 2 && w.reg(2).copies().len() == 2
    });
    let dir = w.dir.path().to_owned();
    let rpc = w.node(0).rpc.clone();

    let clean = diff(&dir, &rpc, &["--format", "json"]);
    w.check(clean.code == Some(0), || {
        format!("a mirrored pool: {}\n{}", clean.stderr, clean.stdout)
    });
    let report: Value = serde_json::from_str(&clean.stdout).expect("JSON");
    w.check(
        report["consistent"] == true && report["data_centres"].as_array().map(Vec::len) == Some(3),
        || format!("clean report: {report}"),
    );

    // Drift behind syncer's back in dc3.
    let copies = w.reg(2).copies();
    let copy_service = copies[0].service_id.clone();
    let o2_copy = copies
        .iter()
        .find(|c| c.host_name == "o2-host")
        .expect("o2's copy")
        .instance_id
        .clone();
    w.reg(2).set_status(&copy_service, &o2_copy, "DOWN");
    let key = |instance: &str| OriginKey {
        origin: "dc1".into(),
        tenant: Tenant::default_tenant(),
        service_id: sid.clone(),
        instance_id: instance.into(),
    };
    let second_o1 = copy_instance_id(&key(&o1), 1);
    w.reg(2).register(
        &copy_service,
        &NewInstance::new("o1-host", "rest://10.1.0.1:8080")
            .id(&second_o1)
            .property(ORIGIN_PROPERTY, "dc1"),
    );
    let ghost = copy_instance_id(&key("never-registered"), 0);
    w.reg(2).register(
        &copy_service,
        &NewInstance::new("ghost-host", "rest://10.1.0.9:8080")
            .id(&ghost)
            .property(ORIGIN_PROPERTY, "dc1"),
    );

    let drifted = diff(&dir, &rpc, &["--format", "json"]);
    w.check(drifted.code == Some(1), || {
        format!(
            "planted drift: exit {:?}: {}\n{}",
            drifted.code, drifted.stderr, drifted.stdout
        )
    });
    let found = findings(&drifted);
    let has = |kind: &str, instance: Option<&str>, copy: &str| {
        found.iter().any(|f| {
            f["kind"] == kind
                && f["origin"] == "dc1"
                && f["dc"] == "dc3"
                && instance.is_none_or(|i| f["instance"].as_str().is_some_and(|s| s.ends_with(i)))
                && f["copies"]
                    .as_array()
                    .is_some_and(|c| c.iter().any(|id| id == copy))
        })
    };
    let expected = [
        ("drift", Some(o2.as_str()), o2_copy.as_str()),
        ("duplicate", Some(o1.as_str()), second_o1.as_str()),
        ("unmapped", Some(o1.as_str()), second_o1.as_str()),
        ("unmapped", None, ghost.as_str()),
        ("stale", None, ghost.as_str()),
    ];
    for (kind, instance, copy) in expected {
        w.check(has(kind, instance, copy), || {
            format!("no {kind} finding for {copy}: {}", drifted.stdout)
        });
    }
    w.check(found.len() == expected.len(), || {
        format!("more findings than planted: {}", drifted.stdout)
    });
    w.check(
        found.iter().any(|f| {
            f["kind"] == "drift"
                && f["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains("status: UP → DOWN"))
        }),
        || format!("the drift names the status: {}", drifted.stdout),
    );

    let table = diff(&dir, &rpc, &[]);
    w.check(
        table.code == Some(1)
            && table.stdout.contains("drift in 3 data centres")
            && table.stdout.contains(&ghost),
        || format!("table: {}", table.stdout),
    );
    let other_origin = diff(&dir, &rpc, &["--origin", "dc2", "--format", "json"]);
    w.check(other_origin.code == Some(0), || {
        format!("--origin dc2 has no drift: {}", other_origin.stdout)
    });

    // A data centre that cannot be asked: exit 2, named.
    w.stop_daemon(1, "KILL");
    let partial = diff(&dir, &rpc, &["--origin", "dc2"]);
    w.check(partial.code == Some(2), || {
        format!("with dc2 down: exit {:?}: {}", partial.code, partial.stderr)
    });
}

/// The periodic inspection: dc2's active syncer inspects every second and raises its alarm
/// after two inspections with the same drift (an edited copy it does not see, polling its
/// registry once a minute): `syncer_inspect_drift{kind="drift"}`, the alarm in the log and
/// `/health` degraded with the reason; once the copy is put right, all of it clears.
#[test]
fn the_periodic_inspection_raises_and_clears_its_alarm() {
    let mut w = World::start_each(
        vec![
            DcSetup::default(),
            DcSetup {
                flags: vec![
                    "--poll-interval".into(),
                    "1m".into(),
                    "--inspect-interval".into(),
                    "1s".into(),
                    "--inspect-alarm-count".into(),
                    "2".into(),
                ],
                ..DcSetup::default()
            },
        ],
        &[],
    );
    let sid = w.reg(0).create_service("shop", "orders", "1.0.0");
    w.reg(0)
        .register(&sid, &NewInstance::new("o1-host", "rest://10.1.0.1:8080"));
    w.wait_until("the copy in dc2", SYNC_DEADLINE, |w| {
        w.reg(1).copies().len() == 1
    });
    let copy = w.reg(1).copies()[0].clone();
    w.reg(1)
        .set_status(&copy.service_id, &copy.instance_id, "DOWN");
    w.wait_until("the inspection alarm", SYNC_DEADLINE, |w| {
        let health = w.health(1);
        support::sync::metric_sum(&w.metrics(1), "syncer_inspect_drift", &["kind=\"drift\""]) == 1.0
            && health.contains("degraded")
            && health.contains("inspection found the same drift")
    });
    let daemon = &mut w.dcs[1].node.as_mut().expect("dc2 runs").daemon;
    let alarm = daemon.wait_for_line("inspection alarm");
    assert!(alarm.contains("1 drift"), "{alarm}");

    w.reg(1)
        .set_status(&copy.service_id, &copy.instance_id, "UP");
    w.wait_until("the alarm cleared", SYNC_DEADLINE, |w| {
        support::sync::metric_sum(&w.metrics(1), "syncer_inspect_drift", &["kind=\"drift\""]) == 0.0
            && !w.health(1).contains("degraded")
    });
    let failures = support::sync::metric_sum(&w.metrics(1), "syncer_inspect_failures_total", &[]);
    w.check(failures == 0.0, || format!("{failures} inspections failed"));
}

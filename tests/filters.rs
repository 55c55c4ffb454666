//! Service filters with real processes: `--exclude` at export keeps a service home,
//! `--include` at import takes in only what it names, the ready line and `--check` say what
//! passes, a bad pattern stops the daemon at start, and a filter changed over a restart
//! removes the copies it no longer allows and brings in the ones it now does. Harness:
//! `tests/support/sync.rs`.

mod support;

use support::sync::{DcSetup, NewInstance, SYNC_DEADLINE, World};
use support::{run, syncer};

fn with_flags(flags: &[&str]) -> DcSetup {
    DcSetup {
        flags: flags.iter().map(|s| (*s).to_owned()).collect(),
        ..DcSetup::default()
    }
}

fn hosts(copies: &[support::sync::Inst]) -> Vec<String> {
    let mut hosts: Vec<String> = copies.iter().map(|c| c.host_name.clone()).collect();
    hosts.sort();
    hosts
}

#[test]
fn filters_at_export_and_import_and_a_changed_filter_over_a_restart() {
    let mut w = World::start_each(
        vec![
            with_flags(&["--exclude", "shop/secret"]),
            with_flags(&["--include", "shop/*", "--include", "hr/payroll"]),
            DcSetup::default(),
        ],
        &[],
    );
    // The ready line names what passes.
    let said = w.node(1).daemon.seen.iter().any(|l| {
        l.contains("syncer is ready") && l.contains(r#""services":"only shop/*, hr/payroll""#)
    });
    w.check(said, || "dc2's ready line does not name its filter".into());

    let orders = w.reg(0).create_service("shop", "orders", "1.0.0");
    w.reg(0).register(
        &orders,
        &NewInstance::new("orders-host", "rest://10.1.0.1:8080"),
    );
    let secret = w.reg(0).create_service("shop", "secret", "1.0.0");
    w.reg(0).register(
        &secret,
        &NewInstance::new("secret-host", "rest://10.1.0.2:8080"),
    );
    let audit = w.reg(0).create_service("ops", "audit", "1.0.0");
    w.reg(0).register(
        &audit,
        &NewInstance::new("audit-host", "rest://10.1.0.3:8080"),
    );

    // dc3 (no filter) takes what dc1 offers: everything but secret. dc2 takes shop/* only.
    w.wait_until("dc1's offer mirrored by dc2 and dc3", SYNC_DEADLINE, |w| {
        hosts(&w.reg(2).copies()) == ["audit-host", "orders-host"]
            && hosts(&w.reg(1).copies()) == ["orders-host"]
    });

    // Changed over a restart: dc2 now takes everything but shop/orders.
    w.stop_daemon(1, "TERM");
    w.dcs[1].flags = vec!["--exclude".into(), "shop/orders".into()];
    w.start_daemon(1);
    w.wait_until(
        "dc2 drops the orders copy and takes audit in",
        SYNC_DEADLINE,
        |w| hosts(&w.reg(1).copies()) == ["audit-host"],
    );
    let metrics = w.metrics(1);
    w.check(metrics.contains("syncer_"), || "no metrics".into());
}

#[test]
fn a_bad_pattern_stops_the_daemon_and_check_lists_the_filters() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = [
        "daemon",
        "--sc-addr",
        "http://127.0.0.1:30100",
        "--bind-addr",
        "127.0.0.1:0",
        "--rpc-addr",
        "127.0.0.1:0",
    ];
    let mut cmd = syncer(dir.path());
    cmd.args(base).args(["--include", "orders"]);
    let refused = run(cmd);
    assert_eq!(refused.code, Some(2), "{}", refused.stderr);
    assert!(
        refused.stderr.contains("--include") && refused.stderr.contains("appId/serviceName"),
        "{}",
        refused.stderr
    );

    let mut cmd = syncer(dir.path());
    cmd.args(base).args([
        "--check",
        "--exclude",
        "shop/secret",
        "--exclude",
        "*/*-internal",
    ]);
    let checked = run(cmd);
    assert_eq!(checked.code, Some(0), "{}", checked.stderr);
    let shown = format!("{}{}", checked.stdout, checked.stderr);
    assert!(
        shown.contains("shop/secret,*/*-internal"),
        "--check does not list the filter:\n{shown}"
    );
}

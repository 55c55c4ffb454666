//! Sync lag you can graph and logs for machines, with real processes: after changes from dc1, dc2's syncer exports
//! `syncer_sync_lag_seconds{origin="dc1"}` with one observation per change and plausible
//! values, `syncer_sync_origin_last_exchange_seconds{origin="dc1"}` near now, and
//! `syncer_sync_copies{origin,state}` agreeing with its registry. Harness:
//! `tests/support/sync.rs`.

mod support;

use std::time::{SystemTime, UNIX_EPOCH};

use support::sync::{NewInstance, SYNC_DEADLINE, World, metric_sum};

#[test]
fn lag_last_exchange_and_copies_by_state_are_exported() {
    let mut w = World::start(2, &[]);
    let sid = w.reg(0).create_service("shop", "orders", "1.0.0");
    // A first instance, which may reach dc2 in its first snapshot (a snapshot carries no
    // per-change timestamps); the three after it travel as changes.
    w.reg(0)
        .register(&sid, &NewInstance::new("warm-up", "rest://10.1.1.1:8080"));
    w.wait_until("the first copy in dc2", SYNC_DEADLINE, |w| {
        w.reg(1).copies().len() == 1
    });
    for n in 0..3 {
        w.reg(0).register(
            &sid,
            &NewInstance::new(&format!("orders-{n}"), &format!("rest://10.1.0.{n}:8080")),
        );
    }
    let origin = "origin=\"dc1\"";
    w.wait_until("four copies in dc2, counted by state", SYNC_DEADLINE, |w| {
        let m = w.metrics(1);
        w.reg(1).copies().len() == 4
            && ["desired", "mapped", "present"].iter().all(|state| {
                metric_sum(
                    &m,
                    "syncer_sync_copies",
                    &[origin, &format!("state=\"{state}\"")],
                ) == 4.0
            })
    });
    let m = w.metrics(1);
    let count = metric_sum(&m, "syncer_sync_lag_seconds_count", &[origin]);
    let sum = metric_sum(&m, "syncer_sync_lag_seconds_sum", &[origin]);
    w.check(count >= 3.0, || format!("lag observations: {count}\n{m}"));
    // On one machine the two clocks are one: every change took well under the deadline.
    w.check(
        sum >= 0.0 && sum / count < SYNC_DEADLINE.as_secs_f64(),
        || format!("implausible lag: sum {sum} over {count}"),
    );
    let within_inf = metric_sum(
        &m,
        "syncer_sync_lag_seconds_bucket",
        &[origin, "le=\"+Inf\""],
    );
    w.check(within_inf == count, || {
        format!("+Inf bucket {within_inf} != count {count}")
    });
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let last = metric_sum(&m, "syncer_sync_origin_last_exchange_seconds", &[origin]);
    w.check(last > now - 60.0 && last <= now + 1.0, || {
        format!("last exchange {last} is not near now {now}")
    });
}

/// Logs for machines: with `--log-format json`, every registry write of a copy is one JSON
/// line at debug with stable fields naming the origin, service, origin instance and copy.
#[test]
fn every_copy_write_is_one_json_line_naming_origin_service_instance_and_copy() {
    let mut w = World::start(2, &[]);
    let sid = w.reg(0).create_service("shop", "orders", "1.0.0");
    let id = w.reg(0).register(
        &sid,
        &NewInstance::new("orders-host", "rest://10.1.0.9:8080"),
    );
    w.wait_until("the copy in dc2", SYNC_DEADLINE, |w| {
        w.reg(1).copies().len() == 1
    });
    let copy = w.reg(1).copies()[0].instance_id.clone();
    w.reg(0).set_status(&sid, &id, "DOWN");
    w.wait_until("the copy DOWN", SYNC_DEADLINE, |w| {
        w.reg(1).copies().iter().any(|c| c.status == "DOWN")
    });
    w.reg(0).unregister(&sid, &id);
    w.wait_until("the copy gone", SYNC_DEADLINE, |w| {
        w.reg(1).copies().is_empty()
    });

    // The log is read as it comes: wait for the last of the three lines.
    let daemon = &mut w.dcs[1].node.as_mut().expect("dc2 runs").daemon;
    daemon.wait_for_line("\"copy removed\"");
    let lines: Vec<serde_json::Value> = w
        .node(1)
        .daemon
        .seen
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    for message in ["copy registered", "copy status set", "copy removed"] {
        let found = lines.iter().find(|l| l["message"] == message).cloned();
        let Some(line) = found else {
            w.fail(&format!("no '{message}' line"));
        };
        // The JSON log flattens each event's fields beside `message` and `level`.
        let fields = &line;
        let ok = line["level"] == "DEBUG"
            && fields["origin"] == "dc1"
            && fields["copy"] == copy.as_str()
            && fields["instance"].as_str().is_some_and(|i| i.contains(&id));
        w.check(ok, || format!("'{message}' lacks a field: {line}"));
        if message == "copy registered" {
            w.check(fields["service"] == "shop/orders", || {
                format!("'{message}' names no service: {line}")
            });
        }
    }
}

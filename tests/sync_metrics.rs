//! Sync lag you can graph, with real processes: after changes from dc1, dc2's syncer exports
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
    for n in 0..3 {
        w.reg(0).register(
            &sid,
            &NewInstance::new(&format!("orders-{n}"), &format!("rest://10.1.0.{n}:8080")),
        );
    }
    let origin = "origin=\"dc1\"";
    w.wait_until(
        "three copies in dc2, counted by state",
        SYNC_DEADLINE,
        |w| {
            let m = w.metrics(1);
            w.reg(1).copies().len() == 3
                && ["desired", "mapped", "present"].iter().all(|state| {
                    metric_sum(
                        &m,
                        "syncer_sync_copies",
                        &[origin, &format!("state=\"{state}\"")],
                    ) == 3.0
                })
        },
    );
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

//! The chaos suite's short profile, run in CI: three data centres of real processes (one in
//! cluster mode with managed etcd, one on an etcd server, one on the embedded store), in
//! network namespaces when the machine allows, two minutes of application churn with faults
//! injected at moments drawn from a seed, and every invariant checked about once a second
//! (`harness::check`). `scripts/chaos` runs longer profiles by hand.
//!
//! The seed is fixed so CI runs the same plan every time; `CHAOS_SEED` picks another.

mod harness;

use std::path::PathBuf;

/// `SYNCER_ETCD_BIN` (as the other tests), else `etcd` on `PATH`.
fn etcd() -> PathBuf {
    std::env::var_os("SYNCER_ETCD_BIN").map_or_else(
        || harness::find_program(std::path::Path::new("etcd")),
        PathBuf::from,
    )
}

#[test]
fn short_chaos_profile_keeps_every_invariant() {
    let seed = std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_261_205);
    let opts = harness::Options::short(PathBuf::from(env!("CARGO_BIN_EXE_syncer")), etcd(), seed);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let report = runtime
        .block_on(harness::run(opts))
        .unwrap_or_else(|e| panic!("the chaos world could not run: {e}"));
    eprintln!("{report}");
    assert!(report.passed(), "invariants broken:\n{report}");
    let injected: u64 = report.injected.values().sum();
    assert!(injected >= 10, "too few faults injected: {report}");
    assert_eq!(report.diff_consistent, Some(true), "{report}");
}

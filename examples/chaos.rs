//! `scripts/chaos`: the chaos suite by hand, with the duration, data centres, seed and fault
//! kinds as options. The harness is the one CI runs (`tests/chaos/harness`).

#[path = "../tests/chaos/harness/mod.rs"]
mod harness;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

/// Runs data centres of real syncers under churn and random faults, checking the invariants
/// all the time; exits 1 when one is broken (the report names the seed to replay).
#[derive(Debug, Parser)]
#[command(name = "chaos")]
struct Args {
    /// How long churn and faults go on, e.g. `10m`, `2h`.
    #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Data centres (at least 3): the first in cluster mode, the second on an etcd server.
    #[arg(long, default_value_t = 3)]
    dcs: usize,
    /// Seed of the fault plan and the churn; default: from the clock (printed).
    #[arg(long)]
    seed: Option<u64>,
    /// Fault kinds, comma-separated (default: all): kill, failover, cut, split, one-way,
    /// lossy, registry-restart, registry-wipe, etcd-outage, slow-registry, registry-errors,
    /// disk-full.
    #[arg(long, value_delimiter = ',')]
    faults: Vec<String>,
    /// Mean time between two faults.
    #[arg(long, default_value = "6s", value_parser = humantime::parse_duration)]
    every: Duration,
    /// Instances registered in the last data centre before the syncers start.
    #[arg(long, default_value_t = 2000)]
    preload: usize,
    /// Application changes per second, all data centres together.
    #[arg(long, default_value_t = 20.0)]
    churn: f64,
    /// Stay on loopback even when network namespaces are available.
    #[arg(long)]
    no_netns: bool,
    /// Keep the work directory with every process's log even when the run passes.
    #[arg(long)]
    keep: bool,
    /// The etcd executable.
    #[arg(long, default_value = "etcd")]
    etcd: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut kinds = Vec::new();
    for name in &args.faults {
        match harness::faults::Kind::parse(name) {
            Ok(kind) => kinds.push(kind),
            Err(e) => {
                eprintln!("chaos: --faults: {e}");
                return ExitCode::from(2);
            }
        }
    }
    if kinds.is_empty() {
        kinds = harness::faults::Kind::ALL.to_vec();
    }
    let Some(syncer) = std::env::current_exe()
        .ok()
        .and_then(|p| Some(p.parent()?.parent()?.join("syncer")))
        .filter(|p| p.is_file())
    else {
        eprintln!("chaos: the syncer binary is not next to this example (cargo build first)");
        return ExitCode::from(2);
    };
    let etcd = harness::find_program(&args.etcd);
    let seed = args.seed.unwrap_or_else(harness::random_seed);
    eprintln!("chaos: seed {seed}");
    let opts = harness::Options {
        duration: args.duration,
        dcs: args.dcs,
        seed,
        kinds,
        mean_gap: args.every,
        preload: args.preload,
        churn_rate: args.churn,
        netns: !args.no_netns,
        syncer,
        etcd,
        keep: args.keep,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("chaos: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(harness::run(opts)) {
        Ok(report) => {
            println!("{report}");
            if report.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("chaos: {e}");
            ExitCode::from(2)
        }
    }
}

//! `syncer dev-registry`: runs the in-memory ServiceComb Service Center emulator
//! ([`crate::devreg`]) until SIGINT/SIGTERM.
//!
//! Prints one line, `dev registry listening on http://ADDR`, on stdout once the port is bound,
//! so scripts can wait for it. Logs go to stderr.

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Args;
use tokio_util::sync::CancellationToken;

use crate::config::{LogConfig, LogFormat};
use crate::devreg::{DevRegistryConfig, HeartbeatStyle, spawn};

/// Exit status for bad flags (as clap's usage errors).
const EXIT_USAGE: u8 = 2;
/// Exit status for runtime failures (port in use, ...).
const EXIT_RUNTIME: u8 = 1;

/// Flags of `syncer dev-registry`.
#[derive(Debug, Args)]
pub struct DevRegistryArgs {
    /// Address to listen on (SC's default port is 30100; port 0 picks a free one).
    #[arg(long, value_name = "IP:PORT", default_value = "127.0.0.1:30100")]
    pub listen: SocketAddr,

    /// Turn on every real-SC behaviour: 2 s delete check window, self-preservation,
    /// asynchronous dependency rules.
    #[arg(long)]
    pub real_sc: bool,

    /// Batch heartbeat answer: `1.4` (SC 1.4.8: empty 200 or 400017) or `2.x` (always 200
    /// with a per-instance list).
    #[arg(long, value_name = "STYLE", default_value = "1.4", value_parser = parse_style)]
    pub heartbeat_style: HeartbeatStyle,

    /// Multiplies every instance lease (e.g. 0.05 turns 120 s into 6 s).
    #[arg(long, value_name = "F", default_value_t = 1.0, value_parser = parse_scale)]
    pub lease_scale: f64,

    /// Do not seed SC's own SERVICECENTER service and instance in default/default.
    #[arg(long)]
    pub no_self_register: bool,

    /// Log filter (a tracing directive such as `debug` or `syncer::devreg=debug`).
    #[arg(long, value_name = "L", default_value = "info")]
    pub log_level: String,
}

fn parse_style(s: &str) -> Result<HeartbeatStyle, String> {
    match s {
        "1.4" | "1.4.8" | "1.x" => Ok(HeartbeatStyle::V1_4),
        "2.x" | "2" => Ok(HeartbeatStyle::V2),
        other => Err(format!("unknown heartbeat style {other:?}; use 1.4 or 2.x")),
    }
}

fn parse_scale(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(f) if f.is_finite() && f > 0.0 => Ok(f),
        _ => Err(format!("{s:?} is not a positive number")),
    }
}

/// Runs the dev registry until a signal.
pub fn run(args: &DevRegistryArgs) -> ExitCode {
    let log = LogConfig {
        format: LogFormat::Text,
        filter: args.log_level.clone(),
    };
    if let Err(e) = crate::telemetry::init_logging(&log) {
        eprintln!("syncer: --log-level {:?}: {e}", args.log_level);
        return ExitCode::from(EXIT_USAGE);
    }
    let mut config = if args.real_sc {
        DevRegistryConfig::real_sc()
    } else {
        DevRegistryConfig::default()
    };
    config.heartbeat_style = args.heartbeat_style;
    config.lease_scale = args.lease_scale;
    config.self_register = !args.no_self_register;
    let runtime = match super::runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let listen = args.listen;
    let outcome = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
        let root = CancellationToken::new();
        crate::shutdown::spawn_signal_handler(root.clone());
        let handle = spawn(listener, config, root).await;
        println!("dev registry listening on {}", handle.url());
        let _ = std::io::stdout().flush();
        handle.stopped().await;
        Ok::<(), String>(())
    });
    runtime.shutdown_background();
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("syncer: {e}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

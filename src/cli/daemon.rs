//! The flags of `syncer daemon`.
//!
//! Every setting is an `Option<String>` here: whether a value was given, and whether it came
//! from the command line or the environment, decides its precedence over the YAML file
//! (`crate::config`), and the raw text lets error messages quote exactly what the operator
//! wrote. Defaults live in `crate::config`, not in clap, for the same reason.

use std::path::PathBuf;

use clap::{ArgMatches, Args, parser::ValueSource};

use crate::config::{Layer, Origin};

const PRECEDENCE: &str = "\
Settings come from four places; later ones win:
  defaults < --config FILE (YAML) < environment (SYNCER_*) < command-line flags.
Each flag names its environment variable below. `--check` prints every effective setting
with the place it came from.

Examples (the original Syncer's command lines work unchanged):
  syncer daemon --sc-addr http://10.0.0.10:30100 --bind-addr 10.0.0.10:30190 --rpc-addr 10.0.0.10:30191
  syncer daemon --sc-addr http://10.0.0.11:30100 --bind-addr 10.0.0.11:30190 --rpc-addr 10.0.0.11:30191 --join-addr 10.0.0.10:30190";

/// Flags of `syncer daemon`.
#[derive(Debug, Args)]
#[command(after_long_help = PRECEDENCE)]
pub struct DaemonArgs {
    /// YAML configuration file (keys of the original Syncer 1.4 and 1.3, see docs/CONFIG.md).
    #[arg(long, value_name = "FILE", env = "SYNCER_CONFIG")]
    pub config: Option<PathBuf>,

    /// Validate the configuration, print the effective settings and exit.
    #[arg(long, env = "SYNCER_CHECK", value_parser = clap::builder::BoolishValueParser::new(), num_args = 0..=1, default_missing_value = "true")]
    pub check: Option<bool>,

    /// Registry address(es), comma-separated; a missing scheme means http://.
    /// [default: http://127.0.0.1:30100]
    #[arg(
        long,
        visible_alias = "registry",
        value_name = "URLS",
        env = "SYNCER_SC_ADDR"
    )]
    pub sc_addr: Option<String>,

    /// Registry kind: servicecenter. [default: servicecenter]
    #[arg(
        long,
        visible_alias = "plugin",
        value_name = "NAME",
        env = "SYNCER_SC_PLUGIN"
    )]
    pub sc_plugin: Option<String>,

    /// Gossip (UDP) listen address; a missing port means 30190. [default: 0.0.0.0:30190]
    #[arg(long, alias = "bind", value_name = "IP:PORT", env = "SYNCER_BIND_ADDR")]
    pub bind_addr: Option<String>,

    /// gRPC listen address; a missing port means 30191. [default: 0.0.0.0:30191]
    #[arg(long, value_name = "IP:PORT", env = "SYNCER_RPC_ADDR")]
    pub rpc_addr: Option<String>,

    /// Address of any pool member to join, comma-separated (gossip or rpc address).
    #[arg(
        long,
        visible_alias = "join",
        value_name = "HOST:PORT,...",
        env = "SYNCER_JOIN_ADDR"
    )]
    pub join_addr: Option<String>,

    /// IP address peers use to reach this syncer's gossip and rpc ports. Default: the host of
    /// --bind-addr, or if that is a wildcard, the local address that routes to the first
    /// --join-addr.
    #[arg(long, value_name = "IP", env = "SYNCER_ADVERTISE_ADDR")]
    pub advertise_addr: Option<String>,

    /// Failure-detection timing of the gossip pool: lan (a dead member is seen down within
    /// about 6 s), wan (slow links between regions) or local (tests). [default: lan]
    #[arg(long, value_name = "PROFILE", env = "SYNCER_GOSSIP_PROFILE")]
    pub gossip_profile: Option<String>,

    /// Label of the gossip pool: syncers only admit members with the same label, so pools
    /// that share a network stay apart. [default: empty]
    #[arg(long, value_name = "LABEL", env = "SYNCER_GOSSIP_LABEL")]
    pub gossip_label: Option<String>,

    /// single: one syncer per data centre; cluster: several, exactly one active.
    /// [default: single]
    #[arg(long, value_name = "MODE", env = "SYNCER_MODE")]
    pub mode: Option<String>,

    /// Member name, unique in the pool; required in cluster mode. [default: host name]
    #[arg(long, value_name = "NAME", env = "SYNCER_NODE")]
    pub node: Option<String>,

    /// Data centre name shared by its syncers. [default: MD5 of the sorted registry
    /// addresses]
    #[arg(
        long,
        visible_alias = "cluster",
        value_name = "NAME",
        env = "SYNCER_CLUSTER_NAME"
    )]
    pub cluster_name: Option<String>,

    /// Port of the managed etcd member's peer listener (cluster mode). [default: 30192]
    #[arg(
        long,
        value_name = "PORT",
        env = "SYNCER_CLUSTER_PORT",
        conflicts_with = "peer_addr"
    )]
    pub cluster_port: Option<String>,

    /// Address of the managed etcd member's peer listener (the 1.4 form of --cluster-port).
    #[arg(long, value_name = "IP:PORT", env = "SYNCER_PEER_ADDR")]
    pub peer_addr: Option<String>,

    /// Directory for this syncer's state. [default: ./syncer-data/<node>]
    #[arg(long, value_name = "DIR", env = "SYNCER_DATA_DIR")]
    pub data_dir: Option<String>,

    /// etcd client URLs, comma-separated; without them state is kept in --data-dir.
    #[arg(long, value_name = "URLS", env = "SYNCER_ETCD_ENDPOINTS")]
    pub etcd_endpoints: Option<String>,

    /// Cluster mode: members of this data centre; without --etcd-endpoints the managed etcd
    /// cluster bootstraps once this many have met. At least 1. [default: 3]
    #[arg(long, value_name = "N", env = "SYNCER_CLUSTER_SIZE")]
    pub cluster_size: Option<String>,

    /// Cluster mode: lease of the active member's leadership in etcd, 2s to 1m; a standby
    /// takes over within about this long after the active member dies. [default: 2s]
    #[arg(long, value_name = "DURATION", env = "SYNCER_LEADER_LEASE")]
    pub leader_lease: Option<String>,

    /// Cluster mode without --etcd-endpoints: the etcd executable to run. [default: etcd,
    /// from PATH]
    #[arg(long, value_name = "PATH", env = "SYNCER_ETCD_BIN")]
    pub etcd_bin: Option<String>,

    /// Cluster mode without --etcd-endpoints: client port of the managed etcd member.
    /// [default: the cluster port - 10000, or + 10000 when that is below 1024]
    #[arg(long, value_name = "PORT", env = "SYNCER_ETCD_CLIENT_PORT")]
    pub etcd_client_port: Option<String>,

    /// HTTP address of /health and /metrics, or `none`. [default: host of --rpc-addr, its
    /// port + 2]
    #[arg(long, value_name = "IP:PORT", env = "SYNCER_ADMIN_ADDR")]
    pub admin_addr: Option<String>,

    /// Most copies of one origin data centre removed per sliding minute; further removals
    /// wait, are logged and counted. At least 1. [default: 1000]
    #[arg(
        long,
        value_name = "N",
        env = "SYNCER_REMOVAL_CAP",
        allow_negative_numbers = true
    )]
    pub removal_cap: Option<String>,

    /// How long an origin data centre may go without a successful exchange (push, pull,
    /// anti-entropy) before its copies are no longer kept alive. At least 1s. [default: 1m]
    #[arg(long, value_name = "DURATION", env = "SYNCER_ORIGIN_GRACE")]
    pub origin_grace: Option<String>,

    /// Keep heartbeating the copies of an unreachable origin after --origin-grace, so they
    /// are stale rather than missing during a partition. `--keep-stale-copies` alone means
    /// true. [default: false]
    #[arg(
        long,
        value_name = "BOOL",
        env = "SYNCER_KEEP_STALE_COPIES",
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    pub keep_stale_copies: Option<String>,

    /// Lease of every copy syncer registers, in whole seconds: a multiple of 3s from 3s to
    /// 1h (heartbeats go every third of it; the registry tolerates 2 missed ones).
    /// [default: 30s]
    #[arg(long, value_name = "DURATION", env = "SYNCER_COPY_LEASE")]
    pub copy_lease: Option<String>,

    /// Period of the anti-entropy check with every other data centre, 100ms to 1h.
    /// [default: 10s]
    #[arg(long, value_name = "DURATION", env = "SYNCER_ANTI_ENTROPY_INTERVAL")]
    pub anti_entropy_interval: Option<String>,

    /// Period of the registry change-feed poll (ServiceComb: one batch find per tenant),
    /// 10ms to 1m. [default: 100ms]
    #[arg(long, value_name = "DURATION", env = "SYNCER_POLL_INTERVAL")]
    pub poll_interval: Option<String>,

    /// Log format: text or json. [default: text]
    #[arg(long, value_name = "FORMAT", env = "SYNCER_LOG_FORMAT")]
    pub log_format: Option<String>,

    /// Log filter: a level (info, debug, ...) or tracing directives such as
    /// `info,syncer::gossip=debug`; RUST_LOG is read when neither this flag nor
    /// SYNCER_LOG_LEVEL is set. [default: info]
    #[arg(long, value_name = "FILTER", env = "SYNCER_LOG_LEVEL")]
    pub log_level: Option<String>,
}

impl DaemonArgs {
    /// The settings given on the command line or in the environment, each with its origin.
    ///
    /// `matches` are the matches of the `daemon` subcommand; they tell a flag from an
    /// environment variable.
    pub fn layer(&self, matches: &ArgMatches) -> Layer {
        let mut layer = Layer::default();
        let fields: [(&'static str, &Option<String>); 28] = [
            ("sc_addr", &self.sc_addr),
            ("sc_plugin", &self.sc_plugin),
            ("bind_addr", &self.bind_addr),
            ("rpc_addr", &self.rpc_addr),
            ("join_addr", &self.join_addr),
            ("advertise_addr", &self.advertise_addr),
            ("gossip_profile", &self.gossip_profile),
            ("gossip_label", &self.gossip_label),
            ("mode", &self.mode),
            ("node", &self.node),
            ("cluster_name", &self.cluster_name),
            ("cluster_port", &self.cluster_port),
            ("peer_addr", &self.peer_addr),
            ("data_dir", &self.data_dir),
            ("etcd_endpoints", &self.etcd_endpoints),
            ("cluster_size", &self.cluster_size),
            ("leader_lease", &self.leader_lease),
            ("etcd_bin", &self.etcd_bin),
            ("etcd_client_port", &self.etcd_client_port),
            ("admin_addr", &self.admin_addr),
            ("removal_cap", &self.removal_cap),
            ("origin_grace", &self.origin_grace),
            ("keep_stale_copies", &self.keep_stale_copies),
            ("copy_lease", &self.copy_lease),
            ("anti_entropy_interval", &self.anti_entropy_interval),
            ("poll_interval", &self.poll_interval),
            ("log_format", &self.log_format),
            ("log_level", &self.log_level),
        ];
        for (id, value) in fields {
            let Some(value) = value else { continue };
            let origin = match matches.value_source(id) {
                Some(ValueSource::EnvVariable) => {
                    Origin::Env(format!("SYNCER_{}", id.to_uppercase()))
                }
                _ => Origin::Flag(format!("--{}", id.replace('_', "-"))),
            };
            layer.set(id, value.clone(), origin);
        }
        layer
    }
}

/// Exit status when the configuration is refused (also clap's status for a usage error).
pub const EXIT_CONFIG: u8 = 2;
/// Exit status of a runtime failure.
pub const EXIT_RUNTIME: u8 = 1;

/// Runs `syncer daemon`: validate, then serve until a signal or a fatal error.
pub fn run(args: &DaemonArgs, matches: &ArgMatches) -> std::process::ExitCode {
    use std::process::ExitCode;

    let config = match crate::config::Config::load(args.config.as_deref(), args.layer(matches)) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("syncer: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if args.check == Some(true) {
        print_check(&config);
        return ExitCode::SUCCESS;
    }
    if let Err(e) = crate::telemetry::init_logging(&config.log) {
        eprintln!("syncer: cannot set up logging: {e}");
        return ExitCode::from(EXIT_RUNTIME);
    }
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    let runtime = match super::runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let outcome = runtime.block_on(async move {
        let root = tokio_util::sync::CancellationToken::new();
        crate::shutdown::spawn_signal_handler(root.clone());
        let listeners = crate::node::Listeners::bind(&config).await?;
        crate::node::run(config, listeners, root).await
    });
    // Do not wait for tasks that ignored cancellation (the node already waited its deadline).
    runtime.shutdown_background();
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "syncer failed");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

/// `--check`: the effective settings, one per line, with where each came from.
fn print_check(config: &crate::config::Config) {
    println!("configuration is valid");
    for (id, value, origin) in &config.effective {
        println!("  {id:<21} = {value:<40} ({origin})");
    }
    println!("  {:<21} = {}", "advertise_ip", config.gossip.advertise_ip);
    for warning in &config.warnings {
        println!("warning: {warning}");
    }
}

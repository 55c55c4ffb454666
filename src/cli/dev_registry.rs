//! `syncer dev-registry`: runs an in-memory registry until SIGINT/SIGTERM: the ServiceComb
//! Service Center emulator ([`crate::devreg`], `--kind servicecomb`, the default) or the Eureka
//! one ([`crate::devreg::eureka`], `--kind eureka`).
//!
//! Prints one line on stdout once the port is bound, so scripts can wait for it:
//! `dev registry listening on http://ADDR` (ServiceComb) or
//! `dev registry listening on http://ADDR/eureka` (Eureka). Logs go to stderr.
//!
//! Flags of one kind are refused with the other (a clear message, exit status 2): the SC
//! flags below with `--kind eureka`, `--real-eureka` with `--kind servicecomb`.
//!
//! `--real-sc 1.4.8` and `--real-sc 2.x` turn on every real-SC behaviour of that version; a
//! bare `--real-sc` means `1.4.8` (it used to add the 2 s delete check window and
//! self-preservation, which 1.4.8 does not have) and says so on stderr.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use tokio_util::sync::CancellationToken;

use crate::config::{LogConfig, LogFormat};
use crate::devreg::eureka::EurekaDevConfig;
use crate::devreg::{DevRegistryConfig, HeartbeatStyle, RbacConfig, spawn};

/// Exit status for bad flags (as clap's usage errors).
const EXIT_USAGE: u8 = 2;
/// Exit status for runtime failures (port in use, ...).
const EXIT_RUNTIME: u8 = 1;
/// SC's default port.
const SC_DEFAULT_LISTEN: &str = "127.0.0.1:30100";
/// Eureka's default port.
const EUREKA_DEFAULT_LISTEN: &str = "127.0.0.1:8761";
/// Default lifetime of an RBAC token without one asked (SC: 12 h).
const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(12 * 3600);
/// Default period of the 2.x retire job (SC: daily).
const DEFAULT_RETIRE_PERIOD: Duration = Duration::from_secs(24 * 3600);

/// Which registry `syncer dev-registry` emulates.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum RegistryKind {
    /// Apache ServiceComb Service Center (v4 API).
    #[default]
    Servicecomb,
    /// Netflix Eureka (served under `/eureka/`).
    Eureka,
}

/// Flags of `syncer dev-registry`.
#[derive(Debug, Args)]
pub struct DevRegistryArgs {
    /// Which registry to emulate: `servicecomb` or `eureka`.
    #[arg(long, value_name = "KIND", value_enum, default_value_t = RegistryKind::Servicecomb)]
    pub kind: RegistryKind,

    /// Address to listen on; port 0 picks a free one. Default `127.0.0.1:30100` (SC's port),
    /// `127.0.0.1:8761` with `--kind eureka`.
    #[arg(long, value_name = "IP:PORT")]
    pub listen: Option<SocketAddr>,

    /// Eureka only: real Eureka's timing — 30 s read-only response cache on list reads, the
    /// 2 × duration lease expiry, eviction every 60 s, self-preservation. Default: lists are
    /// live, a lease expires one duration after its last renewal, eviction every second.
    #[arg(long)]
    pub real_eureka: bool,

    /// Behave as a real Service Center: `1.4.8` (asynchronous dependency rules) or `2.x`
    /// (v2.2.0: find ignores `version`, push health checks at least 5 s / 3, inner
    /// properties, retire job, 2 s delete check window, self-preservation, 2.x batch
    /// heartbeat answer, RBAC when `--rbac-user` is given). Bare `--real-sc` means `1.4.8`.
    #[arg(long, value_name = "VERSION", num_args = 0..=1, value_parser = parse_real_sc)]
    pub real_sc: Option<Option<RealSc>>,

    /// Batch heartbeat answer: `1.4` (SC 1.4.8: empty 200 or 400017) or `2.x` (always 200
    /// with a per-instance list). Default: the `--real-sc` version's, else `1.4`.
    #[arg(long, value_name = "STYLE", value_parser = parse_style)]
    pub heartbeat_style: Option<HeartbeatStyle>,

    /// A property SC 2.x adds to every instance (`registry.instance.properties`); repeatable.
    /// Needs `--real-sc 2.x`.
    #[arg(long, value_name = "K=V", value_parser = parse_property)]
    pub inner_property: Vec<(String, String)>,

    /// Turn RBAC on with this account (SC 2.x: every call needs a token from
    /// `POST /v4/token`). Needs `--real-sc 2.x` and `--rbac-password`.
    #[arg(long, value_name = "NAME", requires = "rbac_password")]
    pub rbac_user: Option<String>,

    /// Password of the `--rbac-user` account.
    #[arg(long, value_name = "PW", requires = "rbac_user")]
    pub rbac_password: Option<String>,

    /// Lifetime of a token whose login does not ask for one. Default 12h (SC's).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub rbac_token_ttl: Option<Duration>,

    /// Period of the 2.x retire job deleting old versions without instances. Default 24h
    /// (SC: daily).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub retire_period: Option<Duration>,

    /// Serve find, list, get and the dump from a copy of the data that trails writes by this
    /// much (as SC's watch-fed cache does), e.g. `200ms`. Default: no lag.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub read_lag: Option<Duration>,

    /// Multiplies every instance lease (e.g. 0.05 turns 120 s into 6 s). Default 1.
    #[arg(long, value_name = "F", value_parser = parse_scale)]
    pub lease_scale: Option<f64>,

    /// Do not seed SC's own SERVICECENTER service and instance in default/default.
    #[arg(long)]
    pub no_self_register: bool,

    /// Serve HTTPS with this PEM certificate (chain); needs `--tls-key`. Both kinds. The
    /// address printed at start then starts with `https://`.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of `--tls-cert`.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Ask every client for a certificate signed by this PEM CA (a registry that demands
    /// client certificates). Needs `--tls-cert`.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_ca: Option<PathBuf>,

    /// Log filter (a tracing directive such as `debug` or `syncer::devreg=debug`).
    #[arg(long, value_name = "L", default_value = "info")]
    pub log_level: String,
}

/// The Service Center version `--real-sc` emulates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RealSc {
    /// SC 1.4.8.
    V1_4_8,
    /// SC 2.x (v2.2.0).
    V2,
}

fn parse_real_sc(s: &str) -> Result<RealSc, String> {
    match s {
        "1.4.8" | "1.4" => Ok(RealSc::V1_4_8),
        "2.x" | "2" | "2.2.0" => Ok(RealSc::V2),
        other => Err(format!(
            "unknown Service Center version {other:?}; use 1.4.8 or 2.x"
        )),
    }
}

fn parse_property(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e}"))
}

/// The registry settings the flags give.
///
/// # Errors
/// A message for flags that need `--real-sc 2.x`.
fn config_of(args: &DevRegistryArgs) -> Result<DevRegistryConfig, String> {
    let real_sc = args.real_sc.map(|v| {
        v.unwrap_or_else(|| {
            eprintln!(
                "syncer: --real-sc without a version means --real-sc 1.4.8 (no delete check \
                 window, no self-preservation); use --real-sc 2.x for those"
            );
            RealSc::V1_4_8
        })
    });
    let mut config = match real_sc {
        None => DevRegistryConfig::default(),
        Some(RealSc::V1_4_8) => DevRegistryConfig::real_sc_1_4_8(),
        Some(RealSc::V2) => DevRegistryConfig::real_sc_2(),
    };
    let v2 = real_sc == Some(RealSc::V2);
    if !v2 && (!args.inner_property.is_empty() || args.rbac_user.is_some()) {
        return Err(
            "--inner-property and --rbac-user are SC 2.x features: add --real-sc 2.x".into(),
        );
    }
    if let Some(style) = args.heartbeat_style {
        config.heartbeat_style = style;
    }
    config.lease_scale = args.lease_scale.unwrap_or(1.0);
    config.self_register = !args.no_self_register;
    config.inner_properties = args
        .inner_property
        .iter()
        .cloned()
        .collect::<BTreeMap<_, _>>();
    if let (Some(user), Some(password)) = (&args.rbac_user, &args.rbac_password) {
        config.rbac = Some(RbacConfig {
            user: user.clone(),
            password: password.clone(),
            token_ttl: args.rbac_token_ttl.unwrap_or(DEFAULT_TOKEN_TTL),
        });
    }
    let retire_period = args.retire_period.unwrap_or(DEFAULT_RETIRE_PERIOD);
    if retire_period.is_zero() {
        return Err("--retire-period must be positive".into());
    }
    config.retire_period = retire_period;
    config.read_lag = args.read_lag.unwrap_or(Duration::ZERO);
    Ok(config)
}

/// The flags given that only the ServiceComb kind knows.
fn servicecomb_flags_given(args: &DevRegistryArgs) -> Vec<&'static str> {
    let given = [
        (args.real_sc.is_some(), "--real-sc"),
        (args.heartbeat_style.is_some(), "--heartbeat-style"),
        (!args.inner_property.is_empty(), "--inner-property"),
        (args.rbac_user.is_some(), "--rbac-user"),
        (args.rbac_password.is_some(), "--rbac-password"),
        (args.rbac_token_ttl.is_some(), "--rbac-token-ttl"),
        (args.retire_period.is_some(), "--retire-period"),
        (args.read_lag.is_some(), "--read-lag"),
        (args.lease_scale.is_some(), "--lease-scale"),
        (args.no_self_register, "--no-self-register"),
    ];
    given
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect()
}

/// The registry to run, from the flags.
enum Setup {
    Servicecomb(DevRegistryConfig),
    Eureka(EurekaDevConfig),
}

/// Checks the flags against `--kind` and builds the settings.
///
/// # Errors
/// A message naming the flags the chosen kind does not take, or the SC flag problems of
/// [`config_of`].
fn setup_of(args: &DevRegistryArgs) -> Result<Setup, String> {
    let mut setup = kind_setup_of(args)?;
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        let tls = crate::devreg::tls::server_config(cert, key, args.tls_ca.as_deref())
            .map_err(|e| e.to_string())?;
        match &mut setup {
            Setup::Servicecomb(config) => config.tls = Some(tls),
            Setup::Eureka(config) => config.tls = Some(tls),
        }
    }
    Ok(setup)
}

/// The settings of the `--kind` asked for, without TLS.
fn kind_setup_of(args: &DevRegistryArgs) -> Result<Setup, String> {
    match args.kind {
        RegistryKind::Servicecomb => {
            if args.real_eureka {
                return Err("--real-eureka needs --kind eureka".into());
            }
            config_of(args).map(Setup::Servicecomb)
        }
        RegistryKind::Eureka => {
            let sc_only = servicecomb_flags_given(args);
            if !sc_only.is_empty() {
                return Err(format!(
                    "{} only apply to --kind servicecomb (the Eureka emulator takes --listen, \
                     --real-eureka, --tls-cert, --tls-key, --tls-ca and --log-level)",
                    sc_only.join(", ")
                ));
            }
            Ok(Setup::Eureka(if args.real_eureka {
                EurekaDevConfig::real()
            } else {
                EurekaDevConfig::default()
            }))
        }
    }
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
    let setup = match setup_of(args) {
        Ok(setup) => setup,
        Err(e) => {
            eprintln!("syncer: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let runtime = match super::runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let listen = args.listen.unwrap_or_else(|| {
        let default = match args.kind {
            RegistryKind::Servicecomb => SC_DEFAULT_LISTEN,
            RegistryKind::Eureka => EUREKA_DEFAULT_LISTEN,
        };
        default
            .parse()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    });
    let outcome = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
        let root = CancellationToken::new();
        crate::shutdown::spawn_signal_handler(root.clone());
        match setup {
            Setup::Servicecomb(config) => {
                let handle = spawn(listener, config, root).await;
                println!("dev registry listening on {}", handle.url());
                let _ = std::io::stdout().flush();
                handle.stopped().await;
            }
            Setup::Eureka(config) => {
                let handle = crate::devreg::eureka::spawn(listener, config, root).await;
                println!("dev registry listening on {}", handle.url());
                let _ = std::io::stdout().flush();
                handle.stopped().await;
            }
        }
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

//! The daemon's configuration: one typed tree, built once at start and validated before
//! anything binds.
//!
//! Settings arrive as text in layers: built-in defaults, the YAML file (`file.rs`), then the
//! environment and the command line (`crate::cli::daemon`). Each value keeps its [`Origin`],
//! so an error names the flag, variable or file key that holds the bad value. Which settings
//! exist, and their flags, variables, file keys, defaults and help, is one table
//! (`settings.rs`). [`Config`] is what the rest of the daemon sees; nothing downstream parses
//! text again.
//!
//! This module is the floor of the house: it imports nothing from the rest of the crate.
//! What it needs of other parts (the gossip profile names, the label limit, the executable
//! lookup) lives here, and those parts use it from here.

pub mod exec;
mod file;
mod file_tls;
#[cfg(test)]
mod fuzz;
mod parse;
mod scalar;
pub mod settings;

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use url::Url;

pub use parse::{DERIVED_CLUSTER_NAME, JoinAddr, check_cluster_name, default_cluster_name};
use settings::Id;

/// Default ports of the original Syncer.
pub const DEFAULT_GOSSIP_PORT: u16 = 30190;
pub const DEFAULT_RPC_PORT: u16 = 30191;
pub const DEFAULT_CLUSTER_PORT: u16 = 30192;
/// The admin listener defaults to the rpc port plus this offset (30193 by default), which
/// keeps the original's cluster-mode command lines (three syncers per host) collision-free.
pub const ADMIN_PORT_OFFSET: u16 = 2;
/// How often the full resync runs unless the file says otherwise (`task.params interval`).
pub const DEFAULT_RESYNC_INTERVAL: Duration = Duration::from_secs(30);

/// Where a setting came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Built in.
    Default,
    /// A key of the YAML file.
    File { path: PathBuf, key: String },
    /// An environment variable.
    Env(String),
    /// A command-line flag.
    Flag(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("default"),
            Origin::File { path, key } => write!(f, "{key} in {}", path.display()),
            Origin::Env(var) => write!(f, "environment variable {var}"),
            Origin::Flag(flag) => f.write_str(flag),
        }
    }
}

/// One setting as text, with its origin.
#[derive(Debug, Clone)]
pub struct Setting {
    pub value: String,
    pub origin: Origin,
}

/// The settings of one source, keyed by setting.
#[derive(Debug, Default, Clone)]
pub struct Layer(BTreeMap<Id, Setting>);

impl Layer {
    pub fn set(&mut self, id: Id, value: String, origin: Origin) {
        self.0.insert(id, Setting { value, origin });
    }

    pub fn get(&self, id: Id) -> Option<&Setting> {
        self.0.get(&id)
    }

    /// The settings held, in table order.
    #[cfg(test)]
    pub fn iter(&self) -> impl Iterator<Item = (Id, &Setting)> {
        self.0.iter().map(|(id, setting)| (*id, setting))
    }

    /// Sets `id` as if given by its flag (for callers that build a command line in code).
    pub fn set_flag(&mut self, id: Id, value: String) {
        let origin = id
            .spec()
            .flag_origin()
            .unwrap_or_else(|| Origin::Flag(id.name().to_owned()));
        self.set(id, value, origin);
    }

    /// `self` with `higher`'s settings on top.
    pub fn overlaid(mut self, higher: Layer) -> Layer {
        self.0.extend(higher.0);
        self
    }
}

/// Why the configuration was refused. Every variant is one line naming what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A setting has a value that cannot be used.
    #[error("invalid value '{value}' for {origin}: {reason}")]
    Invalid {
        origin: Origin,
        value: String,
        reason: String,
    },
    /// A secret setting has a value that cannot be used; the value is never shown.
    #[error("invalid value for {origin}: {reason}")]
    InvalidSecret { origin: Origin, reason: String },
    /// A required setting is missing.
    #[error("{0}")]
    Missing(String),
    /// The configuration file cannot be read or parsed.
    #[error("config file {}: {reason}", path.display())]
    File { path: PathBuf, reason: String },
    /// The TLS files of the rpc link cannot be used.
    #[error(transparent)]
    Tls(#[from] crate::rpc::tls::TlsError),
    /// The TLS files of the registry client cannot be used.
    #[error(transparent)]
    RegistryTls(#[from] crate::registry::tls::RegistryTlsError),
    /// The TLS files of the etcd client cannot be used.
    #[error(transparent)]
    EtcdTls(#[from] crate::store::etcd_tls::EtcdTlsError),
}

/// `single`: one syncer per data centre; `cluster`: several, one of them active.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Single,
    Cluster,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Single => "single",
            Mode::Cluster => "cluster",
        })
    }
}

/// The kind of registry syncer sits next to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plugin {
    /// Apache ServiceComb Service Center, REST API v4.
    ServiceCenter,
    /// Netflix Eureka (REST API v2, also behind Spring Cloud's `/eureka` prefix).
    Eureka,
}

impl fmt::Display for Plugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Plugin::ServiceCenter => "servicecenter",
            Plugin::Eureka => "eureka",
        })
    }
}

/// Longest accepted `--gossip-label`, in bytes; the gossip framing carries it
/// (the gossip module uses this constant).
pub const MAX_GOSSIP_LABEL_BYTES: usize = 64;

/// Failure-detection timing of the gossip pool (`--gossip-profile`). Only the names live here;
/// the timing of each profile is the gossip module's, which uses this type as `gossip::Profile`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GossipProfile {
    /// One data centre or regions on a fast network: a crash is detected within 6 s (measured
    /// about 3 s on a 50-member pool, docs/PERFORMANCE.md).
    Lan,
    /// Slow or lossy links between regions: slower probes, longer suspicion (a crash measured
    /// about 11 s on a 50-member pool).
    Wan,
    /// Tests on one machine: everything ten times faster than `lan`.
    Local,
}

impl GossipProfile {
    /// Parses `lan`, `wan` or `local` (any case).
    pub fn parse(text: &str) -> Option<GossipProfile> {
        match text.trim().to_ascii_lowercase().as_str() {
            "lan" => Some(GossipProfile::Lan),
            "wan" => Some(GossipProfile::Wan),
            "local" => Some(GossipProfile::Local),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            GossipProfile::Lan => "lan",
            GossipProfile::Wan => "wan",
            GossipProfile::Local => "local",
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Identity of this syncer.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Member name, unique in the gossip pool.
    pub name: String,
    pub mode: Mode,
    /// Data centre name; all syncers of one data centre share it. Empty when not configured:
    /// the node derives it at start (`crate::dc_name`).
    pub cluster_name: String,
    /// Directory of this syncer's own state; locked while the daemon runs.
    pub data_dir: PathBuf,
}

/// The gossip pool.
#[derive(Debug, Clone)]
pub struct GossipConfig {
    /// UDP listen address; port 0 picks a free port.
    pub bind_addr: SocketAddr,
    /// IP peers use to reach this syncer; never a wildcard.
    pub advertise_ip: IpAddr,
    /// Members to join through (gossip or rpc addresses); empty for the first member.
    pub join: Vec<JoinAddr>,
    /// Failure-detection timing.
    pub profile: GossipProfile,
    /// Pool label: pools with different labels ignore each other on a shared network.
    pub label: String,
    /// `--gossip-key`: seeds the keyring file of the data directory on the first start (the
    /// file, once there, is what the node uses). Its `Debug` never shows the key.
    pub key: Option<crate::gossip::GossipKey>,
}

/// The gRPC listener.
#[derive(Debug, Clone)]
pub struct RpcConfig {
    /// TCP listen address; port 0 picks a free port.
    pub listen_addr: SocketAddr,
    /// TLS of the listener and of every call to another syncer (`--tls-*`), files already
    /// read and checked; `None` is plain text.
    pub tls: Option<crate::rpc::tls::RpcTls>,
}

/// Cluster mode: the members of one data centre, their election and the managed etcd.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Peer port of the managed etcd member.
    pub port: u16,
    /// Peer host when given by `--peer-addr`; else the advertised IP is used.
    pub peer_ip: Option<IpAddr>,
    /// Members of this data centre (`--cluster-size`).
    pub size: usize,
    /// Lease of the active member's leadership (`--leader-lease`).
    pub leader_lease: Duration,
    /// The etcd executable of the managed member (`--etcd-bin`).
    pub etcd_bin: PathBuf,
    /// Client port of the managed etcd member (`--etcd-client-port`).
    pub etcd_client_port: u16,
    /// Start the managed etcd member once with `--force-new-cluster` (`--cluster-force-new`):
    /// recovery from a lost quorum.
    pub force_new: bool,
    /// TLS of the managed etcd member's client and peer URLs, and of syncer's client of it:
    /// syncer's own `--tls-cert`/`--tls-key` (and `--tls-ca` for client-cert-auth), files
    /// already read and checked; `None` is plain text, and always outside cluster mode or
    /// with `--etcd-endpoints`.
    pub etcd_tls: Option<crate::store::EtcdTls>,
}

impl ClusterConfig {
    pub const DEFAULT_SIZE: usize = 3;
    /// etcd drops an expired lease up to 500 ms late (its expiry check runs twice a second),
    /// so a lease of L hands over L to L + 0.5 s after a crash: 2 s keeps takeovers within
    /// 3 s (docs/PERFORMANCE.md, "Failover").
    pub const DEFAULT_LEADER_LEASE: Duration = Duration::from_secs(2);
    /// etcd's smallest lease is about 2 s with its default timing.
    pub const MIN_LEADER_LEASE: Duration = Duration::from_secs(2);
    pub const MAX_LEADER_LEASE: Duration = Duration::from_secs(60);
}

/// The local registry.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    pub plugin: Plugin,
    /// Addresses of the same registry, tried in turn.
    pub addresses: Vec<Url>,
    /// The account to log in with, for a registry with access control (SC 2.x RBAC).
    pub credentials: Option<Credentials>,
    /// How long a disappearance must last before it is reported; `None`: the adapter's
    /// default for its number of addresses.
    pub confirm_removal: Option<Duration>,
    /// Tenants watched from the start (`--sc-tenants`), besides those the registry shows.
    pub tenants: Vec<crate::registry::Tenant>,
    /// TLS of `https://` addresses (`--sc-tls-*`), files already read and checked.
    pub tls: crate::registry::tls::RegistryTls,
}

/// An account of a registry with access control.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub password: Secret,
}

/// A password or other secret: `Debug` and `Display` print `set`, never the text, so a
/// configuration logged or shown by `--check` does not leak it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(text: impl Into<String>) -> Secret {
        Secret(text.into())
    }

    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("set")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("set")
    }
}

/// What the sync engine does on its own schedule.
#[derive(Debug, Clone)]
pub struct SyncConfig {
    /// Export local instances to other data centres (`task.kind: idle` turns this off: the
    /// syncer then only imports, as the original's idle task did).
    pub export: bool,
    /// Period of the full resync that backs up the change feed.
    pub resync_interval: Duration,
    /// Most copies of one origin removed per sliding minute; more pause, log and count
    /// (`--removal-cap`).
    pub removal_cap: usize,
    /// How long removals are held when more than half of the exported instances vanish in
    /// one answer of the registry (`--removal-hold`; zero: no hold).
    pub removal_hold: Duration,
    /// How long an origin may go without a successful exchange (push, pull, anti-entropy)
    /// before its copies are no longer kept alive (`--origin-grace`).
    pub origin_grace: Duration,
    /// Keep heartbeating the copies of an unreachable origin: stale rather than missing
    /// during a partition (`--keep-stale-copies`).
    pub keep_stale: bool,
    /// With `keep_stale`: how long past `origin_grace` the copies are still kept alive
    /// (`--keep-stale-for`).
    pub keep_stale_for: Duration,
    /// Lease of every copy syncer registers; heartbeats go every third of it
    /// (`--copy-lease`, whole seconds).
    pub copy_lease: Duration,
    /// Period of the anti-entropy check with every other data centre
    /// (`--anti-entropy-interval`).
    pub anti_entropy_interval: Duration,
    /// Time between two polls of the registry's change feed (ServiceComb: one batch find per
    /// tenant per poll; `--poll-interval`).
    pub poll_interval: Duration,
    /// Which services are exported and imported (`--include`, `--exclude`).
    pub filter: crate::registry::filter::ServiceFilter,
    /// Period of the periodic inspection (`--inspect-interval`); `None`: off.
    pub inspect_interval: Option<Duration>,
    /// Inspections finding the same drift before the alarm (`--inspect-alarm-count`).
    pub inspect_alarm_count: usize,
}

impl SyncConfig {
    /// Defaults of the engine settings other than `export` and `resync_interval`.
    pub const DEFAULT_REMOVAL_CAP: usize = 1000;
    pub const DEFAULT_ORIGIN_GRACE: Duration = Duration::from_secs(60);
    pub const DEFAULT_KEEP_STALE: bool = false;
    /// A day: outlasts a partition repaired within a working day, and a decommissioned
    /// data centre's copies are gone the day after.
    pub const DEFAULT_KEEP_STALE_FOR: Duration = Duration::from_secs(24 * 3600);
    pub const DEFAULT_COPY_LEASE: Duration = Duration::from_secs(30);
    pub const DEFAULT_ANTI_ENTROPY_INTERVAL: Duration = Duration::from_secs(10);
    pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(100);
}

/// Logging.
#[derive(Debug, Clone)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A tracing `EnvFilter` directive string.
    pub filter: String,
}

/// The whole, validated configuration of `syncer daemon`.
#[derive(Debug, Clone)]
pub struct Config {
    pub node: NodeConfig,
    pub gossip: GossipConfig,
    pub rpc: RpcConfig,
    pub cluster: ClusterConfig,
    pub registry: RegistryConfig,
    /// etcd client URLs; empty means the embedded store in the data directory.
    pub etcd_endpoints: Vec<Url>,
    /// TLS of `https://` etcd endpoints (`--etcd-ca`, `--etcd-cert`, `--etcd-key`), files
    /// already read and checked; `None` exactly when the endpoints are `http://` (or none).
    pub etcd_tls: Option<crate::store::EtcdTls>,
    /// HTTP listener of `/health` and `/metrics`; `None` disables it.
    pub admin_addr: Option<SocketAddr>,
    pub sync: SyncConfig,
    pub log: LogConfig,
    /// How long a graceful shutdown may take before the daemon exits anyway.
    pub shutdown_timeout: Duration,
    /// Things worth telling the operator once logging is up (ignored keys, quirks).
    pub warnings: Vec<String>,
    /// Every effective setting with its origin, in table order, for `--check`: the settings
    /// the configuration was built from, given or derived.
    pub effective: Vec<(Id, String, Origin)>,
}

impl Config {
    /// Builds the configuration from the optional file and the command-line/environment
    /// layer, then validates it.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first bad setting.
    pub fn load(file: Option<&Path>, cli: Layer) -> Result<Config, ConfigError> {
        let (file_layer, warnings) = match file {
            Some(path) => file::load(path)?,
            None => (Layer::default(), Vec::new()),
        };
        let mut settings = settings::defaults().overlaid(file_layer).overlaid(cli);
        // RUST_LOG is honoured when the log filter was not set anywhere else.
        if settings
            .get(Id::LogLevel)
            .is_some_and(|s| s.origin == Origin::Default)
            && let Ok(filter) = std::env::var("RUST_LOG")
            && !filter.is_empty()
        {
            settings.set(Id::LogLevel, filter, Origin::Env("RUST_LOG".into()));
        }
        parse::resolve(&settings, warnings)
    }

    /// Configuration for in-process tests: loopback, port 0 everywhere, data in `data_dir`.
    pub fn for_test(name: &str, data_dir: &Path) -> Config {
        let mut cli = Layer::default();
        for (id, value) in [
            (Id::Node, name.to_owned()),
            (Id::BindAddr, "127.0.0.1:0".into()),
            (Id::RpcAddr, "127.0.0.1:0".into()),
            (Id::AdminAddr, "127.0.0.1:0".into()),
            (Id::DataDir, data_dir.display().to_string()),
        ] {
            cli.set_flag(id, value);
        }
        match Config::load(None, cli) {
            Ok(config) => config,
            Err(e) => panic!("test configuration is invalid: {e}"),
        }
    }
}

//! Turns the merged text settings into a typed [`Config`], checking every value.
//!
//! [`resolve`] reads the settings section by section (mode, registry, node, listeners with
//! the gossip pool's settings, cluster mode, sync, logs), each by its [`Id`]; a section may
//! depend on the ones before it (the node's default data directory on its name, the admin
//! port on the rpc port).
//! Every setting read is recorded with its origin for `--check`, and so is every value worked
//! out from others.

use std::fmt;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::path::PathBuf;
use std::time::Duration;

use md5::{Digest, Md5};
use url::Url;

use super::exec::resolve_executable;
use super::settings::Id;
use super::{
    ADMIN_PORT_OFFSET, ClusterConfig, Config, ConfigError, Credentials, DEFAULT_CLUSTER_PORT,
    DEFAULT_GOSSIP_PORT, DEFAULT_RPC_PORT, GossipConfig, GossipProfile, Layer, LogConfig,
    LogFormat, MAX_GOSSIP_LABEL_BYTES, Mode, NodeConfig, Origin, Plugin, RegistryConfig, RpcConfig,
    Secret, Setting, SyncConfig,
};
use crate::registry::tls::{KeyPair, RegistryTls};
use crate::rpc::tls::{RpcTls, RpcTlsFiles};
use crate::store::etcd_tls::{ETCD_FLAGS, EtcdTls, NODE_FLAGS};
use crate::tls::options as tls_options;
use crate::tls::{MinVersion, TlsOptions};

/// How long a graceful shutdown may take.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// Bounds of `--copy-lease`: heartbeats go every third of the lease, at least every second.
const MIN_COPY_LEASE: Duration = Duration::from_secs(3);
const MAX_COPY_LEASE: Duration = Duration::from_secs(3600);
/// Missed heartbeats the registry tolerates (SC's `healthCheck.times`): the lease is the
/// heartbeat interval × (times + 1).
const COPY_LEASE_PARTS: u64 = 3;
/// Bounds of `--anti-entropy-interval`.
const MIN_ANTI_ENTROPY_INTERVAL: Duration = Duration::from_millis(100);
const MAX_ANTI_ENTROPY_INTERVAL: Duration = Duration::from_secs(3600);
/// Bounds of `--poll-interval`.
const MIN_POLL_INTERVAL: Duration = Duration::from_millis(10);
const MAX_POLL_INTERVAL: Duration = Duration::from_secs(60);
/// Bounds of the full resync interval (`task.params interval`).
const MIN_RESYNC_INTERVAL: Duration = Duration::from_secs(1);

/// A member address to join through: a host name or IP, and a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinAddr {
    pub host: String,
    pub port: u16,
}

impl fmt::Display for JoinAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

fn invalid(setting: &Setting, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        origin: setting.origin.clone(),
        value: setting.value.clone(),
        reason: reason.into(),
    }
}

/// A setting's flag as messages name it (`--bind-addr`).
fn flag(id: Id) -> String {
    match id.spec().flag {
        Some(flag) => format!("--{}", flag.long),
        None => id.name().to_owned(),
    }
}

/// Reads settings and records what was read, for `--check`.
struct Reader<'a> {
    settings: &'a Layer,
    effective: Vec<(Id, String, Origin)>,
    warnings: Vec<String>,
}

impl<'a> Reader<'a> {
    /// A setting, if any layer has it.
    /// A file path setting, if any layer has it; an empty one is refused naming the setting
    /// (rather than failing later on a file called "").
    fn file(&mut self, id: Id) -> Result<Option<&'a Setting>, ConfigError> {
        match self.get(id) {
            Some(s) if s.value.trim().is_empty() => Err(invalid(s, "empty; a file path is needed")),
            other => Ok(other),
        }
    }

    fn get(&mut self, id: Id) -> Option<&'a Setting> {
        let setting = self.settings.get(id)?;
        self.effective
            .push((id, setting.value.clone(), setting.origin.clone()));
        Some(setting)
    }

    /// A secret setting, if any layer has it: recorded for `--check` as `set`, never as
    /// its text.
    fn secret(&mut self, id: Id) -> Option<&'a Setting> {
        let setting = self.settings.get(id)?;
        self.effective
            .push((id, "set".to_owned(), setting.origin.clone()));
        Some(setting)
    }

    /// A setting every layer stack has, because the table gives it a default.
    fn required(&mut self, id: Id) -> Result<&'a Setting, ConfigError> {
        self.get(id)
            .ok_or_else(|| ConfigError::Missing(format!("internal: no default for setting {id}")))
    }

    /// A setting parsed by `parse`, whose error names the setting and its origin.
    fn parsed<T>(
        &mut self,
        id: Id,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        let setting = self.required(id)?;
        parse(&setting.value).map_err(|e| invalid(setting, e))
    }

    /// A setting that was worked out from others.
    fn derived(&mut self, id: Id, value: String) {
        self.effective.push((id, value, Origin::Default));
    }
}

/// Checks every setting of `settings` and builds the configuration.
pub(super) fn resolve(settings: &Layer, warnings: Vec<String>) -> Result<Config, ConfigError> {
    let mut r = Reader {
        settings,
        effective: Vec::new(),
        warnings,
    };
    let mode = read_mode(&mut r)?;
    let registry = read_registry(&mut r)?;
    let node = read_node(&mut r, mode)?;
    let net = read_listeners(&mut r, mode)?;
    let cluster = read_cluster(&mut r, mode, &net)?;
    let sync = read_sync(&mut r)?;
    let log = read_log(&mut r)?;
    let tls = read_tls(&mut r)?;
    let etcd_tls = read_etcd_tls(&mut r, &net.etcd_endpoints)?;
    let managed_etcd_tls = managed_etcd_tls(&mut r, mode, &net.etcd_endpoints, tls.is_some())?;
    r.effective.sort_by_key(|(id, ..)| *id);
    Ok(Config {
        node,
        gossip: GossipConfig {
            bind_addr: net.bind_addr,
            advertise_ip: net.advertise_ip,
            join: net.join,
            profile: net.profile,
            label: net.label,
            key: net.key,
        },
        rpc: RpcConfig {
            listen_addr: net.rpc_addr,
            tls,
        },
        cluster: ClusterConfig {
            etcd_tls: managed_etcd_tls,
            ..cluster
        },
        registry,
        etcd_endpoints: net.etcd_endpoints,
        etcd_tls,
        admin_addr: net.admin_addr,
        sync,
        log,
        shutdown_timeout: SHUTDOWN_TIMEOUT,
        warnings: r.warnings,
        effective: r.effective,
    })
}

/// `--tls-cert`, `--tls-key`, `--tls-ca` and the settings of the rpc link's TLS: the files
/// are read and checked here, so that a missing file, a key of another certificate, a wrong
/// passphrase or a CA file without a certificate stops the daemon (and `--check`) before
/// anything binds.
fn read_tls(r: &mut Reader) -> Result<Option<RpcTls>, ConfigError> {
    let verify_peer = r.parsed(Id::TlsVerifyPeer, parse_bool)?;
    let passphrase = read_passphrase(r, Id::TlsKeyPassphrase)?;
    let options = read_tls_options(r, Id::TlsMinVersion, Id::TlsCiphers)?;
    let cert = r.file(Id::TlsCert)?;
    let key = r.file(Id::TlsKey)?;
    let ca = r.file(Id::TlsCa)?;
    let path = |s: &Setting| PathBuf::from(s.value.trim());
    match (cert, key) {
        (Some(cert), Some(key)) => {
            let files = RpcTlsFiles {
                cert: path(cert),
                key: path(key),
                ca: ca.map(path),
                passphrase,
                verify_peer,
                options,
            };
            if files.ca.is_some() && !verify_peer {
                r.warnings.push(format!(
                    "{} is false: callers of the rpc port are not asked for a certificate \
                     (the syncers this one calls are still verified against {})",
                    flag(Id::TlsVerifyPeer),
                    flag(Id::TlsCa)
                ));
            }
            Ok(Some(RpcTls::load(files)?))
        }
        (None, None) => match ca {
            Some(ca) => Err(invalid(
                ca,
                format!(
                    "{} needs {} and {}: a syncer verifies its peers only when it speaks TLS itself",
                    flag(Id::TlsCa),
                    flag(Id::TlsCert),
                    flag(Id::TlsKey)
                ),
            )),
            None => Ok(None),
        },
        (Some(given), None) => Err(invalid(
            given,
            format!("{} is needed too", flag(Id::TlsKey)),
        )),
        (None, Some(given)) => Err(invalid(
            given,
            format!("{} is needed too", flag(Id::TlsCert)),
        )),
    }
}

/// `--etcd-ca`, `--etcd-cert` and `--etcd-key`, for `--etcd-endpoints https://...`: the
/// files are read and checked here. `https` endpoints take TLS (verified against the web PKI
/// roots without `--etcd-ca`); endpoints that mix `http` and `https` are refused, and so are
/// these settings without `https` endpoints: the operator asked for TLS, and a plain-text
/// connection that quietly ignored them would be a silent downgrade.
fn read_etcd_tls(r: &mut Reader, endpoints: &[Url]) -> Result<Option<EtcdTls>, ConfigError> {
    let ca = r.file(Id::EtcdCa)?;
    let cert = r.file(Id::EtcdCert)?;
    let key = r.file(Id::EtcdKey)?;
    let path = |s: &Setting| PathBuf::from(s.value.trim());
    let pair = match (cert, key) {
        (Some(cert), Some(key)) => Some((path(cert), path(key))),
        (None, None) => None,
        (Some(given), None) => {
            return Err(invalid(
                given,
                format!("{} is needed too", flag(Id::EtcdKey)),
            ));
        }
        (None, Some(given)) => {
            return Err(invalid(
                given,
                format!("{} is needed too", flag(Id::EtcdCert)),
            ));
        }
    };
    let https = endpoints.iter().filter(|u| u.scheme() == "https").count();
    if https > 0 && https < endpoints.len() {
        let setting = r.settings.get(Id::EtcdEndpoints);
        let reason = "mixes http:// and https:// endpoints: one etcd cluster is reached either \
                      with TLS or without, so make them all https:// (or all http://)";
        return Err(match setting {
            Some(setting) => invalid(setting, reason),
            None => ConfigError::Missing(reason.to_owned()),
        });
    }
    let given = ca.or(cert).or(key);
    if https == 0 {
        return match given {
            None => Ok(None),
            Some(given) => Err(invalid(
                given,
                if endpoints.is_empty() {
                    format!(
                        "the etcd TLS settings apply to {} https://...; without them there is \
                         no etcd client to configure (the managed etcd member of cluster mode \
                         uses {}, {} and {})",
                        flag(Id::EtcdEndpoints),
                        flag(Id::TlsCert),
                        flag(Id::TlsKey),
                        flag(Id::TlsCa)
                    )
                } else {
                    format!(
                        "the etcd TLS settings need https:// {}; with http:// ones they would be \
                         ignored and etcd reached in plain text",
                        flag(Id::EtcdEndpoints)
                    )
                },
            )),
        };
    }
    let ca = ca.map(path);
    let pair = pair.as_ref().map(|(c, k)| (c.as_path(), k.as_path()));
    Ok(Some(EtcdTls::load(ca.as_deref(), pair, ETCD_FLAGS)?))
}

/// The managed etcd member's TLS (cluster mode without `--etcd-endpoints`): syncer's own
/// `--tls-cert`, `--tls-key` and `--tls-ca` when the rpc link has TLS (`rpc_tls`; the files
/// were checked by [`read_tls`] already and are read once more for etcd).
fn managed_etcd_tls(
    r: &mut Reader,
    mode: Mode,
    endpoints: &[Url],
    rpc_tls: bool,
) -> Result<Option<EtcdTls>, ConfigError> {
    if mode != Mode::Cluster || !endpoints.is_empty() || !rpc_tls {
        return Ok(None);
    }
    let path = |id: Id| r.settings.get(id).map(|s| PathBuf::from(s.value.trim()));
    let (Some(cert), Some(key)) = (path(Id::TlsCert), path(Id::TlsKey)) else {
        return Ok(None);
    };
    // etcd reads its key file itself and cannot decrypt one: refuse rather than start a
    // member that never becomes ready.
    if let Some(setting) = r.settings.get(Id::TlsKeyPassphrase) {
        return Err(ConfigError::InvalidSecret {
            origin: setting.origin.clone(),
            reason: format!(
                "the managed etcd member of cluster mode uses {} as it is and etcd cannot \
                 read an encrypted key: give an unencrypted key (readable by syncer only), or \
                 run an external etcd (--etcd-endpoints)",
                flag(Id::TlsKey)
            ),
        });
    }
    let ca = path(Id::TlsCa);
    if ca.is_none() {
        r.warnings.push(format!(
            "the managed etcd member serves TLS with {} but without {}: its members' \
             certificates must be trusted by the public web PKI roots, and it does not ask \
             clients or peers for certificates; give {} for a private CA and mutual TLS",
            flag(Id::TlsCert),
            flag(Id::TlsCa),
            flag(Id::TlsCa)
        ));
    }
    Ok(Some(EtcdTls::load(
        ca.as_deref(),
        Some((&cert, &key)),
        NODE_FLAGS,
    )?))
}

/// The passphrase of an encrypted key; never shown (`--check` says `set`).
fn read_passphrase(r: &mut Reader, id: Id) -> Result<Option<String>, ConfigError> {
    match r.secret(id) {
        None => Ok(None),
        Some(setting) if setting.value.is_empty() => Err(ConfigError::InvalidSecret {
            origin: setting.origin.clone(),
            reason: "the passphrase is empty".into(),
        }),
        Some(setting) => Ok(Some(setting.value.clone())),
    }
}

/// The minimum TLS version and the cipher suites of one TLS configuration; the suites that
/// are skipped become warnings.
fn read_tls_options(r: &mut Reader, version: Id, ciphers: Id) -> Result<TlsOptions, ConfigError> {
    let min_version = r.parsed(version, MinVersion::parse)?;
    let Some(setting) = r.get(ciphers) else {
        return Ok(TlsOptions {
            min_version,
            suites: Vec::new(),
        });
    };
    let names: Vec<String> = setting
        .value
        .split([',', ' ', ':'])
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
        .collect();
    if names.is_empty() {
        return Err(invalid(setting, "names no cipher suite"));
    }
    let resolved = tls_options::resolve(&flag(ciphers), min_version, &names)
        .map_err(|e| invalid(setting, e))?;
    r.warnings.extend(resolved.warnings);
    Ok(resolved.options)
}

/// The mode. The original's 1.4 sample file says `mode: signle`; 1.4 treated anything but
/// `cluster` as single, and so do we for that one spelling, with a warning.
fn read_mode(r: &mut Reader) -> Result<Mode, ConfigError> {
    let setting = r.required(Id::Mode)?;
    match setting.value.trim() {
        "single" => Ok(Mode::Single),
        "cluster" => Ok(Mode::Cluster),
        "signle" => {
            r.warnings.push(format!(
                "mode 'signle' (from {}) is read as 'single', as the original Syncer did",
                setting.origin
            ));
            Ok(Mode::Single)
        }
        _ => Err(invalid(setting, "expected 'single' or 'cluster'")),
    }
}

/// The local registry: its kind and addresses.
fn read_registry(r: &mut Reader) -> Result<RegistryConfig, ConfigError> {
    let plugin = r.parsed(Id::ScPlugin, |text| match text.trim() {
        "servicecenter" => Ok(Plugin::ServiceCenter),
        "eureka" => Ok(Plugin::Eureka),
        _ => Err("unknown registry plugin (available: servicecenter, eureka)".into()),
    })?;
    let addresses = r.parsed(Id::ScAddr, |text| {
        let addresses = parse_url_list(text)?;
        if addresses.is_empty() {
            return Err("at least one registry address is needed".into());
        }
        Ok(addresses)
    })?;
    let user = r.get(Id::ScUser);
    let password = r.secret(Id::ScPassword);
    let credentials = match (user, password) {
        (None, None) => None,
        (Some(user), _) if user.value.trim().is_empty() => {
            return Err(invalid(user, "the registry account name is empty"));
        }
        // The password's value never goes into an error: it would be printed.
        (_, Some(password)) if password.value.is_empty() => {
            return Err(ConfigError::Missing(format!(
                "{} ({}) is empty",
                Id::ScPassword,
                password.origin
            )));
        }
        (Some(user), Some(password)) => Some(Credentials {
            user: user.value.trim().to_owned(),
            password: Secret::new(password.value.clone()),
        }),
        (Some(_), None) => {
            return Err(ConfigError::Missing(format!(
                "{} is set but {} is not: the registry login needs both",
                Id::ScUser,
                Id::ScPassword
            )));
        }
        (None, Some(_)) => {
            return Err(ConfigError::Missing(format!(
                "{} is set but {} is not: the registry login needs both",
                Id::ScPassword,
                Id::ScUser
            )));
        }
    };
    let confirm_removal = match r.get(Id::ScConfirmRemoval) {
        Some(setting) => {
            let text = setting.value.trim();
            let parsed = if text == "0" {
                Ok(Duration::ZERO)
            } else {
                parse_duration_in(text, Duration::ZERO, Some(Duration::from_secs(60)))
            };
            Some(parsed.map_err(|e| invalid(setting, e))?)
        }
        None => {
            let default = if addresses.len() > 1 { "1s" } else { "0s" };
            r.derived(Id::ScConfirmRemoval, default.to_owned());
            None
        }
    };
    let tls = read_registry_tls(r)?;
    let tenants = read_tenants(r, plugin)?;
    Ok(RegistryConfig {
        plugin,
        addresses,
        credentials,
        confirm_removal,
        tenants,
        tls,
    })
}

/// `--sc-tenants`: `domain/project` pairs, each part non-empty and free of `/`, whitespace
/// and control characters; only for a Service Center.
fn read_tenants(
    r: &mut Reader,
    plugin: Plugin,
) -> Result<Vec<crate::registry::Tenant>, ConfigError> {
    let Some(setting) = r.get(Id::ScTenants) else {
        return Ok(Vec::new());
    };
    if plugin != Plugin::ServiceCenter {
        return Err(invalid(
            setting,
            "only a Service Center has tenants (--sc-plugin servicecenter)",
        ));
    }
    let mut tenants = Vec::new();
    for text in setting
        .value
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
    {
        let valid = |part: &str| {
            !part.is_empty()
                && !part
                    .chars()
                    .any(|c| c == '/' || c.is_whitespace() || c.is_control())
        };
        let tenant = text
            .split_once('/')
            .filter(|(domain, project)| valid(domain) && valid(project))
            .map(|(domain, project)| crate::registry::Tenant::new(domain, project))
            .ok_or_else(|| {
                invalid(
                    setting,
                    format!(
                        "'{text}' is not a tenant: expected DOMAIN/PROJECT, like default/default"
                    ),
                )
            })?;
        if !tenants.contains(&tenant) {
            tenants.push(tenant);
        }
    }
    Ok(tenants)
}

/// `--sc-tls-ca`, `--sc-tls-cert`, `--sc-tls-key` and `--sc-tls-insecure`: the files are read
/// and checked here, so that a bad one stops the daemon (and `--check`) before anything binds.
fn read_registry_tls(r: &mut Reader) -> Result<RegistryTls, ConfigError> {
    let passphrase = read_passphrase(r, Id::ScTlsKeyPassphrase)?;
    let options = read_tls_options(r, Id::ScTlsMinVersion, Id::ScTlsCiphers)?;
    let path = |s: &Setting| PathBuf::from(s.value.trim());
    let insecure = r.parsed(Id::ScTlsInsecure, parse_bool)?;
    if insecure {
        r.warnings.push(format!(
            "{} is on: the registry's TLS certificate is not verified, so anyone on the path \
             can read and change what syncer reads from and writes to it",
            flag(Id::ScTlsInsecure)
        ));
    }
    let ca = r.file(Id::ScTlsCa)?.map(path);
    let pair = match (r.file(Id::ScTlsCert)?, r.file(Id::ScTlsKey)?) {
        (Some(cert), Some(key)) => Some((path(cert), path(key))),
        (None, None) => None,
        (Some(given), None) => {
            return Err(invalid(
                given,
                format!("{} is needed too", flag(Id::ScTlsKey)),
            ));
        }
        (None, Some(given)) => {
            return Err(invalid(
                given,
                format!("{} is needed too", flag(Id::ScTlsCert)),
            ));
        }
    };
    let pair = pair.as_ref().map(|(cert, key)| KeyPair {
        cert,
        key,
        passphrase: passphrase.as_deref(),
    });
    Ok(RegistryTls::load(ca.as_deref(), pair, insecure, options)?)
}

/// This syncer's name, its data centre's name and its data directory.
fn read_node(r: &mut Reader, mode: Mode) -> Result<NodeConfig, ConfigError> {
    // Cluster mode needs an explicit name: three syncers on one host would otherwise all take
    // the host name.
    let name = match r.get(Id::Node) {
        Some(setting) => {
            check_name(&setting.value, 63).map_err(|e| invalid(setting, e))?;
            setting.value.clone()
        }
        None if mode == Mode::Cluster => {
            return Err(ConfigError::Missing(format!(
                "cluster mode needs {node}: a member name unique in the pool (for example {node} syncer011)",
                node = flag(Id::Node)
            )));
        }
        None => {
            let host = gethostname::gethostname().to_string_lossy().into_owned();
            let host = host.split('.').next().unwrap_or_default().to_owned();
            check_name(&host, 63).map_err(|e| {
                ConfigError::Missing(format!(
                    "the host name '{host}' cannot be the node name ({e}); set {}",
                    flag(Id::Node)
                ))
            })?;
            r.derived(Id::Node, host.clone());
            host
        }
    };

    let cluster_name = match r.get(Id::ClusterName) {
        Some(setting) => {
            check_name(&setting.value, 128).map_err(|e| invalid(setting, e))?;
            setting.value.clone()
        }
        // Derived when the node starts (`crate::dc_name`): from the registry's identity on
        // the first start, then saved in the data directory. Empty here says so.
        None => {
            r.derived(Id::ClusterName, DERIVED_CLUSTER_NAME.to_owned());
            String::new()
        }
    };

    let data_dir = match r.get(Id::DataDir) {
        Some(setting) if setting.value.trim().is_empty() => {
            return Err(invalid(setting, "must not be empty"));
        }
        // The original 1.4 sample says `dataDir: ./syncer-data/` and 1.4 shared that one
        // directory between every syncer of a host. A file value ending in `/` is therefore
        // read as the parent directory, and the node name is appended.
        Some(
            setting @ Setting {
                origin: Origin::File { .. },
                ..
            },
        ) if setting.value.ends_with('/') => PathBuf::from(&setting.value).join(&name),
        Some(setting) => PathBuf::from(&setting.value),
        None => {
            let dir = PathBuf::from("./syncer-data").join(&name);
            r.derived(Id::DataDir, dir.display().to_string());
            dir
        }
    };

    Ok(NodeConfig {
        name,
        mode,
        cluster_name,
        data_dir,
    })
}

/// Every address this syncer listens on or reaches out to, checked against each other.
struct Listeners {
    bind_addr: SocketAddr,
    rpc_addr: SocketAddr,
    join: Vec<JoinAddr>,
    advertise_ip: IpAddr,
    /// Peer port of the managed etcd member, and its host when `--peer-addr` gave one.
    cluster_port: u16,
    peer_ip: Option<IpAddr>,
    admin_addr: Option<SocketAddr>,
    etcd_endpoints: Vec<Url>,
    /// The gossip pool's timing and label, read among the listeners so that the first bad
    /// setting is named in the same order as before the table.
    profile: GossipProfile,
    label: String,
    key: Option<crate::gossip::GossipKey>,
    /// The listen addresses so far, by setting, for the clash check of later ones.
    ports: Vec<(Id, SocketAddr)>,
}

fn read_listeners(r: &mut Reader, mode: Mode) -> Result<Listeners, ConfigError> {
    let bind_addr = r.parsed(Id::BindAddr, |text| {
        parse_socket_addr(text, DEFAULT_GOSSIP_PORT)
    })?;
    let rpc_setting = r.required(Id::RpcAddr)?;
    let rpc_addr = parse_socket_addr(&rpc_setting.value, DEFAULT_RPC_PORT)
        .map_err(|e| invalid(rpc_setting, e))?;

    let join = match r.get(Id::JoinAddr) {
        Some(setting) => parse_join_list(&setting.value).map_err(|e| invalid(setting, e))?,
        None => Vec::new(),
    };
    let (profile, label, key) = read_gossip(r)?;

    let (cluster_port, peer_ip) = match r.get(Id::PeerAddr) {
        Some(setting) => {
            let addr = parse_socket_addr(&setting.value, DEFAULT_CLUSTER_PORT)
                .map_err(|e| invalid(setting, e))?;
            let ip = (!addr.ip().is_unspecified()).then_some(addr.ip());
            (addr.port(), ip)
        }
        None => (r.parsed(Id::ClusterPort, parse_port)?, None),
    };

    let admin_addr = match r.get(Id::AdminAddr) {
        Some(setting) if matches!(setting.value.trim(), "none" | "off" | "") => None,
        Some(setting) => Some(
            parse_socket_addr(&setting.value, DEFAULT_RPC_PORT + ADMIN_PORT_OFFSET)
                .map_err(|e| invalid(setting, e))?,
        ),
        None => {
            let port = match rpc_addr.port() {
                0 => 0,
                p => p.checked_add(ADMIN_PORT_OFFSET).ok_or_else(|| {
                    invalid(rpc_setting, format!("the admin port defaults to the rpc port + {ADMIN_PORT_OFFSET}, which is out of range; set {}", flag(Id::AdminAddr)))
                })?,
            };
            let addr = SocketAddr::new(rpc_addr.ip(), port);
            r.derived(Id::AdminAddr, addr.to_string());
            Some(addr)
        }
    };

    let etcd_endpoints = match r.get(Id::EtcdEndpoints) {
        Some(setting) => parse_url_list(&setting.value).map_err(|e| invalid(setting, e))?,
        None => Vec::new(),
    };

    // One daemon, one port per listener.
    let mut ports = vec![(Id::BindAddr, bind_addr), (Id::RpcAddr, rpc_addr)];
    if let Some(admin) = admin_addr {
        ports.push((Id::AdminAddr, admin));
    }
    if mode == Mode::Cluster && etcd_endpoints.is_empty() {
        let ip = peer_ip.unwrap_or(bind_addr.ip());
        ports.push((Id::ClusterPort, SocketAddr::new(ip, cluster_port)));
    }
    check_port_clashes(&ports)?;

    // The address peers use. A wildcard is never advertised.
    let advertise_ip = match r.get(Id::AdvertiseAddr) {
        Some(setting) => {
            let ip: IpAddr = setting
                .value
                .trim()
                .parse()
                .map_err(|_| invalid(setting, "expected an IP address"))?;
            if ip.is_unspecified() {
                return Err(invalid(
                    setting,
                    "a wildcard address cannot be advertised; give the IP peers should use",
                ));
            }
            ip
        }
        None if !bind_addr.ip().is_unspecified() => bind_addr.ip(),
        None => {
            let ip = route_to_first(&join).map_err(|reason| {
                ConfigError::Missing(format!(
                    "cannot choose an address to advertise: {} {bind_addr} is a wildcard and {reason}; set {}",
                    flag(Id::BindAddr),
                    flag(Id::AdvertiseAddr)
                ))
            })?;
            r.derived(Id::AdvertiseAddr, ip.to_string());
            ip
        }
    };

    Ok(Listeners {
        bind_addr,
        rpc_addr,
        join,
        advertise_ip,
        cluster_port,
        peer_ip,
        admin_addr,
        etcd_endpoints,
        profile,
        label,
        key,
        ports,
    })
}

/// The gossip pool's timing, label and key.
fn read_gossip(
    r: &mut Reader,
) -> Result<(GossipProfile, String, Option<crate::gossip::GossipKey>), ConfigError> {
    let profile = r.parsed(Id::GossipProfile, |text| {
        GossipProfile::parse(text).ok_or_else(|| "must be lan, wan or local".to_owned())
    })?;
    let label = r.parsed(Id::GossipLabel, |label| {
        if label.len() > MAX_GOSSIP_LABEL_BYTES {
            return Err(format!("longer than {MAX_GOSSIP_LABEL_BYTES} bytes"));
        }
        if label.chars().any(char::is_control) {
            return Err("control characters are not allowed".into());
        }
        Ok(label.to_owned())
    })?;
    // The key's text never goes into an error or `--check`.
    let key = match r.secret(Id::GossipKey) {
        Some(setting) => Some(
            crate::gossip::GossipKey::from_base64(&setting.value).map_err(|e| {
                ConfigError::InvalidSecret {
                    origin: setting.origin.clone(),
                    reason: e.to_string(),
                }
            })?,
        ),
        None => None,
    };
    Ok((profile, label, key))
}

/// Cluster mode: the election and the managed etcd member.
fn read_cluster(r: &mut Reader, mode: Mode, net: &Listeners) -> Result<ClusterConfig, ConfigError> {
    let size = r.parsed(Id::ClusterSize, |text| parse_count(text, 1))?;
    let leader_lease = r.parsed(Id::LeaderLease, |text| {
        let lease = parse_duration_in(
            text,
            ClusterConfig::MIN_LEADER_LEASE,
            Some(ClusterConfig::MAX_LEADER_LEASE),
        )?;
        // etcd grants leases in whole seconds: a fraction would be cut off there while the
        // write gate counted with it.
        if lease.subsec_nanos() != 0 {
            return Err(format!(
                "must be whole seconds (etcd grants leases in seconds), such as {}s",
                lease.as_secs() + 1
            ));
        }
        Ok(lease)
    })?;
    let managed_etcd = mode == Mode::Cluster && net.etcd_endpoints.is_empty();
    let etcd_bin = r.parsed(Id::EtcdBin, |text| {
        let bin = PathBuf::from(text.trim());
        if bin.as_os_str().is_empty() {
            return Err("the path is empty".into());
        }
        if managed_etcd {
            // The managed etcd member needs the executable: say so now, not after the start.
            resolve_executable(&bin).map_err(|e| {
                format!(
                    "{e} (cluster mode without {} runs an etcd member)",
                    flag(Id::EtcdEndpoints)
                )
            })?;
        }
        Ok(bin)
    })?;
    let etcd_client_port = match r.get(Id::EtcdClientPort) {
        Some(setting) => parse_port(&setting.value).map_err(|e| invalid(setting, e))?,
        None => {
            // Below Linux's ephemeral range (32768 and up) for the usual cluster ports, so no
            // outgoing connection can hold it when etcd starts.
            let port = net
                .cluster_port
                .checked_sub(10_000)
                .filter(|port| *port >= 1024)
                .or_else(|| net.cluster_port.checked_add(10_000))
                .unwrap_or(0);
            r.derived(Id::EtcdClientPort, port.to_string());
            port
        }
    };
    let force_new = r.parsed(Id::ClusterForceNew, parse_bool)?;
    if force_new
        && !managed_etcd
        && let Some(setting) = r.get(Id::ClusterForceNew)
    {
        return Err(invalid(
            setting,
            format!(
                "only a managed etcd member (cluster mode without {}) can be forced into a \
                 new cluster; an external etcd is recovered with its own tools",
                flag(Id::EtcdEndpoints)
            ),
        ));
    }
    if managed_etcd {
        let ip = net.peer_ip.unwrap_or(net.bind_addr.ip());
        let mut ports = net.ports.clone();
        ports.push((Id::EtcdClientPort, SocketAddr::new(ip, etcd_client_port)));
        check_port_clashes(&ports)?;
    }
    Ok(ClusterConfig {
        port: net.cluster_port,
        peer_ip: net.peer_ip,
        size,
        leader_lease,
        etcd_bin,
        etcd_client_port,
        force_new,
        etcd_tls: None,
    })
}

/// The sync engine: its schedule and its safety settings.
fn read_sync(r: &mut Reader) -> Result<SyncConfig, ConfigError> {
    let export = r.parsed(Id::TaskKind, |text| match text.trim() {
        "ticker" => Ok(true),
        "idle" => Ok(false),
        _ => Err("expected 'ticker' or 'idle'".into()),
    })?;
    let resync_interval = r.parsed(Id::ResyncInterval, |text| {
        let interval = humantime::parse_duration(text.trim())
            .map_err(|e| format!("not a duration such as 30s or 1m ({e})"))?;
        if interval < MIN_RESYNC_INTERVAL {
            return Err("must be at least 1s".into());
        }
        Ok(interval)
    })?;
    Ok(SyncConfig {
        export,
        resync_interval,
        removal_cap: r.parsed(Id::RemovalCap, |text| parse_count(text, 1))?,
        removal_hold: r.parsed(Id::RemovalHold, |text| {
            parse_duration_in(text, Duration::ZERO, Some(Duration::from_secs(600)))
        })?,
        origin_grace: r.parsed(Id::OriginGrace, |text| {
            parse_duration_in(text, Duration::from_secs(1), None)
        })?,
        keep_stale: r.parsed(Id::KeepStaleCopies, parse_bool)?,
        keep_stale_for: r.parsed(Id::KeepStaleFor, |text| {
            parse_duration_in(text, Duration::from_secs(1), None)
        })?,
        copy_lease: r.parsed(Id::CopyLease, parse_copy_lease)?,
        anti_entropy_interval: r.parsed(Id::AntiEntropyInterval, |text| {
            parse_duration_in(
                text,
                MIN_ANTI_ENTROPY_INTERVAL,
                Some(MAX_ANTI_ENTROPY_INTERVAL),
            )
        })?,
        poll_interval: r.parsed(Id::PollInterval, |text| {
            parse_duration_in(text, MIN_POLL_INTERVAL, Some(MAX_POLL_INTERVAL))
        })?,
        filter: read_filter(r)?,
        inspect_interval: r.parsed(Id::InspectInterval, |text| {
            let interval = parse_duration_in(text, Duration::ZERO, None)?;
            match interval {
                d if d.is_zero() => Ok(None),
                d if d < Duration::from_secs(1) => Err("at least 1s (or 0s: off)".to_owned()),
                d => Ok(Some(d)),
            }
        })?,
        inspect_alarm_count: r.parsed(Id::InspectAlarmCount, |text| parse_count(text, 1))?,
    })
}

/// `--include` and `--exclude`: every pattern is checked here, naming the setting and the
/// pattern.
fn read_filter(r: &mut Reader) -> Result<crate::registry::filter::ServiceFilter, ConfigError> {
    use crate::registry::filter::Pattern;
    let mut lists: [Vec<Pattern>; 2] = Default::default();
    for (at, id) in [Id::Include, Id::Exclude].into_iter().enumerate() {
        if let Some(setting) = r.get(id) {
            for text in setting.value.split(',').filter(|t| !t.trim().is_empty()) {
                lists[at].push(Pattern::parse(text).map_err(|e| invalid(setting, e.to_string()))?);
            }
        }
    }
    let [include, exclude] = lists;
    Ok(crate::registry::filter::ServiceFilter::from_patterns(
        include, exclude,
    ))
}

/// Logs: the format and the filter (checked here, so that a bad filter is a configuration
/// error rather than a failure after start).
fn read_log(r: &mut Reader) -> Result<LogConfig, ConfigError> {
    let format = r.parsed(Id::LogFormat, |text| match text.trim() {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        _ => Err("expected 'text' or 'json'".into()),
    })?;
    let filter = r.parsed(Id::LogLevel, |text| {
        let filter = text.trim();
        tracing_subscriber::EnvFilter::builder()
            .parse(filter)
            .map_err(|e| format!("not a log filter ({e})"))?;
        Ok(filter.to_owned())
    })?;
    Ok(LogConfig { format, filter })
}

/// What `--check` shows for a cluster name that is not given: it is derived at start.
pub const DERIVED_CLUSTER_NAME: &str =
    "(derived from the registry's identity on the first start, saved in <data-dir>/cluster-name)";

/// Whether `name` can be a cluster name: 1 to 128 letters, digits, `.`, `_`, `-`, starting
/// with a letter or digit.
///
/// # Errors
/// What is wrong with it.
pub fn check_cluster_name(name: &str) -> Result<(), String> {
    check_name(name, 128)
}

/// The original's default data-centre name: hex MD5 of the registry endpoints, sorted and
/// joined with `,` (Syncer 1.4). Kept for data directories of an earlier release
/// (`crate::dc_name`): a new data directory derives its name from the registry's identity,
/// because this one is the same for two data centres that write the same address text. Endpoints are normalised first, so `127.0.0.1:30100` and
/// `http://127.0.0.1:30100/` give the same name.
pub fn default_cluster_name(addresses: &[Url]) -> String {
    let mut endpoints: Vec<String> = addresses
        .iter()
        .map(|u| u.as_str().trim_end_matches('/').to_owned())
        .collect();
    endpoints.sort();
    hex::encode(Md5::digest(endpoints.join(",").as_bytes()))
}

fn check_name(name: &str, max: usize) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name.len() > max {
        return Err(format!("longer than {max} characters"));
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err("must start with a letter or digit".into());
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "character '{c}' is not allowed (letters, digits, '.', '_' and '-' are)"
        ));
    }
    Ok(())
}

/// Parses a whole number of at least `min`.
fn parse_count(text: &str, min: usize) -> Result<usize, String> {
    let text = text.trim();
    let digits = |t: &str| !t.is_empty() && t.chars().all(|c| c.is_ascii_digit());
    if text.strip_prefix('-').is_some_and(digits) {
        return Err(format!("must be at least {min}"));
    }
    if !digits(text) {
        return Err("not a whole number".into());
    }
    let count: usize = text
        .parse()
        .map_err(|_| format!("too large (at most {})", usize::MAX))?;
    if count < min {
        return Err(format!("must be at least {min}"));
    }
    Ok(count)
}

/// Parses `true` or `false` (any case).
fn parse_bool(text: &str) -> Result<bool, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err("expected true or false".into()),
    }
}

/// Parses a duration such as `30s`, `1m` or `100ms`, at least `min` and at most `max`.
fn parse_duration_in(text: &str, min: Duration, max: Option<Duration>) -> Result<Duration, String> {
    let text = text.trim();
    if text.contains('.') {
        return Err("fractions are not accepted; use a smaller unit (1500ms, not 1.5s)".into());
    }
    let duration = humantime::parse_duration(text)
        .map_err(|e| format!("not a duration such as 30s, 1m or 100ms ({e})"))?;
    if duration < min {
        return Err(format!(
            "must be at least {}",
            humantime::format_duration(min)
        ));
    }
    if let Some(max) = max
        && duration > max
    {
        return Err(format!(
            "must be at most {}",
            humantime::format_duration(max)
        ));
    }
    Ok(duration)
}

/// Parses `--copy-lease`: whole seconds from 3s to 1h, a multiple of 3s. Registries take a
/// lease as a heartbeat interval in whole seconds × (missed heartbeats tolerated + 1), and
/// syncer tolerates 2, so only multiples of 3s can be given to the registry exactly.
fn parse_copy_lease(text: &str) -> Result<Duration, String> {
    if text.contains('.') {
        return Err("must be whole seconds (registries take leases in seconds)".into());
    }
    let lease = parse_duration_in(text, MIN_COPY_LEASE, Some(MAX_COPY_LEASE))?;
    if lease.subsec_nanos() != 0 {
        return Err(format!(
            "must be whole seconds (registries take leases in seconds), not {}",
            humantime::format_duration(lease)
        ));
    }
    let secs = lease.as_secs();
    if secs % COPY_LEASE_PARTS != 0 {
        let below = secs - secs % COPY_LEASE_PARTS;
        let above = below + COPY_LEASE_PARTS;
        return Err(format!(
            "must be a multiple of 3s: heartbeats go every third of the lease, in whole seconds \
             (for example {below}s or {above}s)"
        ));
    }
    Ok(lease)
}

/// Parses a port, checking its range.
pub fn parse_port(text: &str) -> Result<u16, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("the port is empty".into());
    }
    if !text.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!("port '{text}' is not a number"));
    }
    match text.parse::<u64>() {
        Ok(port) if port <= u64::from(u16::MAX) => Ok(port as u16),
        _ => Err(format!("port {text} is out of range (0-65535)")),
    }
}

/// Splits `host[:port]`, `[v6][:port]` or a bare IPv6 address.
fn split_host_port(text: &str) -> Result<(&str, Option<&str>), String> {
    if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or("missing ']' after an IPv6 address")?;
        return match after {
            "" => Ok((host, None)),
            _ => match after.strip_prefix(':') {
                Some(port) => Ok((host, Some(port))),
                None => Err(format!("unexpected '{after}' after ']'")),
            },
        };
    }
    match text.matches(':').count() {
        0 => Ok((text, None)),
        1 => {
            let (host, port) = text.split_once(':').unwrap_or((text, ""));
            Ok((host, Some(port)))
        }
        // More than one colon without brackets: a bare IPv6 address.
        _ => Ok((text, None)),
    }
}

/// Parses a listen address `IP[:PORT]`; a missing port means `default_port`.
pub fn parse_socket_addr(text: &str, default_port: u16) -> Result<SocketAddr, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("the address is empty".into());
    }
    let (host, port) = split_host_port(text)?;
    let ip: IpAddr = host
        .parse()
        .map_err(|_| format!("host '{host}' is not an IP address (a listen address needs one)"))?;
    let port = match port {
        Some(port) => parse_port(port)?,
        None => default_port,
    };
    Ok(SocketAddr::new(ip, port))
}

/// Parses a comma-separated list of `HOST[:PORT]` (port 30190 when missing).
fn parse_join_list(text: &str) -> Result<Vec<JoinAddr>, String> {
    let mut out = Vec::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (host, port) = split_host_port(item).map_err(|e| format!("'{item}': {e}"))?;
        let valid_host = host.parse::<IpAddr>().is_ok()
            || (!host.is_empty()
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')));
        if !valid_host {
            return Err(format!(
                "'{item}': '{host}' is not a host name or IP address"
            ));
        }
        let port = match port {
            Some(port) => parse_port(port).map_err(|e| format!("'{item}': {e}"))?,
            None => DEFAULT_GOSSIP_PORT,
        };
        if port == 0 {
            return Err(format!("'{item}': port 0 cannot be joined"));
        }
        out.push(JoinAddr {
            host: host.to_owned(),
            port,
        });
    }
    Ok(out)
}

/// Parses a comma-separated list of http(s) URLs; a missing scheme means `http://`.
pub fn parse_url_list(text: &str) -> Result<Vec<Url>, String> {
    let mut out = Vec::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let with_scheme = if item.contains("://") {
            item.to_owned()
        } else {
            format!("http://{item}")
        };
        let url = Url::parse(&with_scheme).map_err(|e| format!("'{item}' is not a URL ({e})"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!(
                "'{item}': scheme '{}' is not http or https",
                url.scheme()
            ));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(format!("'{item}' has no host"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(format!("'{item}' must not have a query or fragment"));
        }
        out.push(url);
    }
    Ok(out)
}

/// Refuses two listeners of one daemon on one port of overlapping hosts (port 0 is exempt:
/// it picks a free port). The later listener is named, by its flag.
fn check_port_clashes(ports: &[(Id, SocketAddr)]) -> Result<(), ConfigError> {
    for (i, (id_a, a)) in ports.iter().enumerate() {
        for (id_b, b) in &ports[i + 1..] {
            let overlap = a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified();
            if a.port() != 0 && a.port() == b.port() && overlap {
                return Err(ConfigError::Invalid {
                    origin: Origin::Flag(flag(*id_b)),
                    value: b.to_string(),
                    reason: format!("port {} is already used by {} ({a})", b.port(), flag(*id_a)),
                });
            }
        }
    }
    Ok(())
}

/// The local IP the kernel would use to reach the first join address. Connecting a UDP
/// socket sends nothing; it only selects a route.
fn route_to_first(join: &[JoinAddr]) -> Result<IpAddr, String> {
    let join_flag = flag(Id::JoinAddr);
    let first = join
        .first()
        .ok_or_else(|| format!("there is no {join_flag} to route towards"))?;
    let target = (first.host.as_str(), first.port)
        .to_socket_addrs()
        .map_err(|e| format!("{join_flag} {first} cannot be resolved ({e})"))?
        .next()
        .ok_or_else(|| format!("{join_flag} {first} resolves to no address"))?;
    let local: SocketAddr = if target.is_ipv4() {
        "0.0.0.0:0".parse().map_err(|_| "bad wildcard")?
    } else {
        "[::]:0".parse().map_err(|_| "bad wildcard")?
    };
    let socket =
        UdpSocket::bind(local).map_err(|e| format!("no local socket to find a route ({e})"))?;
    socket
        .connect(target)
        .map_err(|e| format!("there is no route to {join_flag} {first} ({e})"))?;
    let ip = socket.local_addr().map_err(|e| e.to_string())?.ip();
    if ip.is_unspecified() {
        return Err(format!("no local address routes to {join_flag} {first}"));
    }
    Ok(ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A temporary directory holding `syncer dev-certs`' files (CA and node certificate).
    fn dev_cert_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let certs = crate::cli::dev_certs::generate(&["127.0.0.1".into()]).unwrap();
        crate::cli::dev_certs::write(dir.path(), &certs).unwrap();
        dir
    }

    #[test]
    fn socket_addr_forms() {
        assert_eq!(
            parse_socket_addr("10.0.0.1", 30190),
            Ok("10.0.0.1:30190".parse().unwrap())
        );
        assert_eq!(
            parse_socket_addr("10.0.0.1:1", 30190),
            Ok("10.0.0.1:1".parse().unwrap())
        );
        assert_eq!(
            parse_socket_addr("[::1]:5", 30190),
            Ok("[::1]:5".parse().unwrap())
        );
        assert_eq!(
            parse_socket_addr("::1", 30190),
            Ok("[::1]:30190".parse().unwrap())
        );
        assert!(
            parse_socket_addr("10.0.0.1:70000", 1)
                .unwrap_err()
                .contains("out of range")
        );
        assert!(
            parse_socket_addr("10.0.0.1:x", 1)
                .unwrap_err()
                .contains("not a number")
        );
        assert!(
            parse_socket_addr("host:1", 1)
                .unwrap_err()
                .contains("not an IP address")
        );
        assert!(parse_socket_addr("", 1).is_err());
    }

    #[test]
    fn urls_get_a_scheme() {
        let urls = parse_url_list("127.0.0.1:30100, https://sc.example:443/,").unwrap();
        assert_eq!(urls[0].as_str(), "http://127.0.0.1:30100/");
        assert_eq!(urls[1].scheme(), "https");
        assert!(parse_url_list("ftp://x").unwrap_err().contains("scheme"));
        assert!(parse_url_list("http://x:99999").is_err());
    }

    #[test]
    fn cluster_name_ignores_order_and_scheme_spelling() {
        let a = parse_url_list("127.0.0.1:30100,http://10.0.0.1:30100").unwrap();
        let b = parse_url_list("http://10.0.0.1:30100/,http://127.0.0.1:30100").unwrap();
        assert_eq!(default_cluster_name(&a), default_cluster_name(&b));
        assert_eq!(default_cluster_name(&a).len(), 32);
    }

    #[test]
    fn join_list() {
        let list = parse_join_list("10.0.0.10:30191, peer.example ,[::1]:7").unwrap();
        assert_eq!(
            list[0],
            JoinAddr {
                host: "10.0.0.10".into(),
                port: 30191
            }
        );
        assert_eq!(
            list[1],
            JoinAddr {
                host: "peer.example".into(),
                port: 30190
            }
        );
        assert_eq!(list[2].to_string(), "[::1]:7");
        assert!(parse_join_list("bad host:1").is_err());
    }

    /// `resolve` over the defaults plus `extra` (loopback listeners, so nothing is derived
    /// from routes).
    fn resolve_with(extra: &[(&'static str, &str, Origin)]) -> Result<Config, ConfigError> {
        let mut cli = Layer::default();
        cli.set(Id::BindAddr, "127.0.0.1:0".into(), Origin::Default);
        cli.set(Id::RpcAddr, "127.0.0.1:0".into(), Origin::Default);
        cli.set(Id::Node, "n1".into(), Origin::Default);
        for (name, value, origin) in extra {
            let id = Id::from_name(name).unwrap_or_else(|| panic!("no setting {name}"));
            cli.set(id, (*value).to_owned(), origin.clone());
        }
        resolve(
            &super::super::settings::defaults().overlaid(cli),
            Vec::new(),
        )
    }

    /// `--tls-*` are read and checked while the configuration is resolved: a usable set
    /// gives the rpc listener its TLS, and a half set or a missing file is refused, naming it.
    #[test]
    fn tls_files_are_checked_at_start() {
        let dir = dev_cert_dir();
        let file = |name: &str| dir.path().join(name).display().to_string();
        let (cert, key, ca) = (file("node.pem"), file("node-key.pem"), file("ca.pem"));
        let flag = |f: &str| Origin::Flag(f.into());
        let config = resolve_with(&[
            ("tls_cert", &cert, flag("--tls-cert")),
            ("tls_key", &key, flag("--tls-key")),
            ("tls_ca", &ca, flag("--tls-ca")),
        ])
        .unwrap();
        assert!(config.rpc.tls.as_ref().is_some_and(RpcTls::verifies_peers));
        assert!(resolve_with(&[]).unwrap().rpc.tls.is_none());

        let err = resolve_with(&[("tls_cert", &cert, flag("--tls-cert"))]).unwrap_err();
        assert!(err.to_string().contains("--tls-key is needed"), "{err}");
        let err = resolve_with(&[("tls_ca", &ca, flag("--tls-ca"))]).unwrap_err();
        assert!(
            err.to_string().contains("--tls-ca needs --tls-cert"),
            "{err}"
        );
        let missing = file("missing.pem");
        let err = resolve_with(&[
            ("tls_cert", &missing, flag("--tls-cert")),
            ("tls_key", &key, flag("--tls-key")),
        ])
        .unwrap_err();
        assert!(matches!(err, ConfigError::Tls(_)), "{err}");
        assert!(err.to_string().contains("missing.pem"), "{err}");
    }

    /// etcd cannot read an encrypted key: a cluster-mode syncer whose `--tls-key` needs a
    /// passphrase, and whose managed etcd member would take it, is refused at start.
    #[test]
    fn the_managed_etcd_member_refuses_an_encrypted_key() {
        let dir = dev_cert_dir();
        let file = |name: &str| dir.path().join(name).display().to_string();
        let plain = std::fs::read_to_string(file("node-key.pem")).unwrap();
        let sealed = crate::tls::pem::encrypt_private_key(&plain, "open sesame").unwrap();
        std::fs::write(dir.path().join("sealed.pem"), sealed).unwrap();
        let flag = |f: &str| Origin::Flag(f.into());
        let (cert, key) = (file("node.pem"), file("sealed.pem"));
        let base = [
            ("tls_cert", cert.as_str(), flag("--tls-cert")),
            ("tls_key", key.as_str(), flag("--tls-key")),
            (
                "tls_key_passphrase",
                "open sesame",
                Origin::Env("SYNCER_TLS_KEY_PASSPHRASE".into()),
            ),
        ];
        // Single mode: the encrypted key serves the rpc link.
        resolve_with(&base).expect("single mode");
        let mut cluster = base.to_vec();
        cluster.push(("mode", "cluster", flag("--mode")));
        let err = resolve_with(&cluster).expect_err("cluster mode");
        let text = err.to_string();
        assert!(
            text.contains("etcd cannot read an encrypted key") && !text.contains("open sesame"),
            "{text}"
        );
    }

    /// `--etcd-ca`, `--etcd-cert` and `--etcd-key` go with `https://` etcd endpoints: read and
    /// checked at start (errors name the file and the flag); refused with `http://` or no
    /// endpoints, and endpoints mixing the schemes are refused. In cluster mode without
    /// endpoints, `--tls-*` give the managed etcd member its TLS.
    #[test]
    fn etcd_tls_settings_are_checked_at_start() {
        let dir = dev_cert_dir();
        let file = |name: &str| dir.path().join(name).display().to_string();
        let (cert, key, ca) = (file("node.pem"), file("node-key.pem"), file("ca.pem"));
        let flag = |f: &str| Origin::Flag(f.into());
        let https = (
            "etcd_endpoints",
            "https://10.0.0.1:2379,https://10.0.0.2",
            flag("--etcd-endpoints"),
        );

        let config = resolve_with(&[
            https.clone(),
            ("etcd_ca", &ca, flag("--etcd-ca")),
            ("etcd_cert", &cert, flag("--etcd-cert")),
            ("etcd_key", &key, flag("--etcd-key")),
        ])
        .unwrap();
        let tls = config.etcd_tls.as_ref().expect("TLS for https endpoints");
        assert_eq!(tls.ca_path(), Some(dir.path().join("ca.pem").as_path()));
        assert_eq!(tls.cert_path(), Some(dir.path().join("node.pem").as_path()));
        // `--check` shows the paths, never key material.
        let shown = format!("{:?} {:?}", config.etcd_tls, config.effective);
        assert!(
            shown.contains("node-key.pem") && !shown.contains("PRIVATE KEY"),
            "{shown}"
        );
        assert!(config.cluster.etcd_tls.is_none());

        // https alone: the web PKI roots, no client certificate.
        let config = resolve_with(std::slice::from_ref(&https)).unwrap();
        let tls = config.etcd_tls.expect("TLS for https endpoints");
        assert_eq!((tls.ca_path(), tls.cert_path()), (None, None));
        assert!(resolve_with(&[]).unwrap().etcd_tls.is_none());
        let plain = (
            "etcd_endpoints",
            "http://10.0.0.1:2379",
            flag("--etcd-endpoints"),
        );
        assert!(
            resolve_with(std::slice::from_ref(&plain))
                .unwrap()
                .etcd_tls
                .is_none()
        );

        let err = resolve_with(&[(
            "etcd_endpoints",
            "https://10.0.0.1:2379,http://10.0.0.2:2379",
            flag("--etcd-endpoints"),
        )])
        .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("--etcd-endpoints") && text.contains("mixes"),
            "{text}"
        );

        let err = resolve_with(&[plain, ("etcd_ca", &ca, flag("--etcd-ca"))]).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("--etcd-ca") && text.contains("https://"),
            "{text}"
        );
        let err = resolve_with(&[("etcd_ca", &ca, flag("--etcd-ca"))]).unwrap_err();
        assert!(err.to_string().contains("--tls-cert"), "{err}");

        let err =
            resolve_with(&[https.clone(), ("etcd_cert", &cert, flag("--etcd-cert"))]).unwrap_err();
        assert!(err.to_string().contains("--etcd-key is needed"), "{err}");
        let err =
            resolve_with(&[https.clone(), ("etcd_key", &key, flag("--etcd-key"))]).unwrap_err();
        assert!(err.to_string().contains("--etcd-cert is needed"), "{err}");

        let missing = file("missing.pem");
        let err =
            resolve_with(&[https.clone(), ("etcd_ca", &missing, flag("--etcd-ca"))]).unwrap_err();
        assert!(matches!(err, ConfigError::EtcdTls(_)), "{err}");
        let text = err.to_string();
        assert!(
            text.contains("missing.pem") && text.contains("--etcd-ca"),
            "{text}"
        );
        // A key of another certificate.
        let other = dev_cert_dir();
        let other_key = other.path().join("node-key.pem").display().to_string();
        let err = resolve_with(&[
            https,
            ("etcd_cert", &cert, flag("--etcd-cert")),
            ("etcd_key", &other_key, flag("--etcd-key")),
        ])
        .unwrap_err();
        assert!(err.to_string().contains("--etcd-key"), "{err}");

        // Cluster mode, managed etcd: syncer's own certificate, https URLs.
        let node_tls = [
            ("tls_cert", cert.as_str(), flag("--tls-cert")),
            ("tls_key", key.as_str(), flag("--tls-key")),
            ("tls_ca", ca.as_str(), flag("--tls-ca")),
        ];
        let mut cluster = vec![("mode", "cluster", flag("--mode"))];
        cluster.extend(node_tls.iter().cloned());
        let config = resolve_with(&cluster).unwrap();
        let managed = config.cluster.etcd_tls.as_ref().expect("managed etcd TLS");
        assert!(config.warnings.iter().all(|w| !w.contains("managed etcd")));
        assert_eq!(
            managed.key_path(),
            Some(dir.path().join("node-key.pem").as_path())
        );
        assert!(config.etcd_tls.is_none());
        // Without a CA: TLS still, and a warning.
        let config = resolve_with(&cluster[..3]).unwrap();
        assert!(config.cluster.etcd_tls.is_some());
        assert!(
            config
                .warnings
                .iter()
                .any(|w| w.contains("managed etcd") && w.contains("--tls-ca")),
            "{:?}",
            config.warnings
        );
        // Without TLS, or with --etcd-endpoints, the managed member's TLS stays off.
        let config = resolve_with(&[("mode", "cluster", flag("--mode"))]).unwrap();
        assert!(config.cluster.etcd_tls.is_none());
        cluster.push((
            "etcd_endpoints",
            "http://10.0.0.1:2379",
            flag("--etcd-endpoints"),
        ));
        let config = resolve_with(&cluster).unwrap();
        assert!(config.cluster.etcd_tls.is_none() && config.etcd_tls.is_none());
    }

    /// The TLS knobs of issue 17: min version (both spellings), cipher suites by name
    /// (unknown refused, unsupported skipped with a warning), verify-peer, and the key's
    /// passphrase, never shown; the same for the registry client's `sc_` twins.
    #[test]
    fn tls_options_are_read_and_checked() {
        let dir = dev_cert_dir();
        let file = |name: &str| dir.path().join(name).display().to_string();
        let (cert, key, ca) = (file("node.pem"), file("node-key.pem"), file("ca.pem"));
        let encrypted = file("encrypted-key.pem");
        std::fs::write(
            &encrypted,
            crate::tls::pem::encrypt_private_key(&std::fs::read_to_string(&key).unwrap(), "s3same")
                .unwrap(),
        )
        .unwrap();
        let flag = |f: &str| Origin::Flag(f.into());
        let env = |v: &str| Origin::Env(v.into());
        let with = |extra: &[(&'static str, &'static str, Origin)]| {
            let mut all = vec![
                ("tls_cert", cert.as_str(), flag("--tls-cert")),
                ("tls_key", key.as_str(), flag("--tls-key")),
                ("tls_ca", ca.as_str(), flag("--tls-ca")),
            ];
            all.extend(extra.iter().cloned());
            resolve_with(&all)
        };

        let config = with(&[
            ("tls_min_version", "TLSv1.3", flag("--tls-min-version")),
            (
                "tls_ciphers",
                "TLS_AES_128_GCM_SHA256,TLS13_CHACHA20_POLY1305_SHA256",
                flag("--tls-ciphers"),
            ),
            ("tls_verify_peer", "false", flag("--tls-verify-peer")),
        ])
        .unwrap();
        let tls = config.rpc.tls.as_ref().unwrap();
        assert_eq!(tls.files().options.min_version, MinVersion::Tls13);
        assert_eq!(tls.files().options.suites.len(), 2);
        assert!(!tls.verifies_peers());
        assert!(
            config
                .warnings
                .iter()
                .any(|w| w.contains("--tls-verify-peer is false")),
            "{:?}",
            config.warnings
        );

        let config = with(&[(
            "tls_ciphers",
            "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 TLS_RSA_WITH_AES_256_GCM_SHA384",
            flag("--tls-ciphers"),
        )])
        .unwrap();
        assert!(
            config
                .warnings
                .iter()
                .any(|w| w.contains("--tls-ciphers: skipped")
                    && w.contains("TLS_RSA_WITH_AES_256_GCM_SHA384")),
            "{:?}",
            config.warnings
        );

        let err = with(&[("tls_min_version", "1.0", flag("--tls-min-version"))]).unwrap_err();
        assert!(err.to_string().contains("--tls-min-version"), "{err}");
        let err = with(&[("tls_ciphers", "TLS_NOPE", flag("--tls-ciphers"))]).unwrap_err();
        assert!(
            err.to_string()
                .contains("'TLS_NOPE' is not a TLS cipher suite"),
            "{err}"
        );

        // The passphrase: works for the encrypted key, refused for a plain one, never shown.
        let config = resolve_with(&[
            ("tls_cert", &cert, flag("--tls-cert")),
            ("tls_key", &encrypted, flag("--tls-key")),
            (
                "tls_key_passphrase",
                "s3same",
                env("SYNCER_TLS_KEY_PASSPHRASE"),
            ),
        ])
        .unwrap();
        let shown = format!("{:?} {:?}", config.rpc, config.effective);
        assert!(!shown.contains("s3same"), "{shown}");
        assert!(
            config
                .effective
                .iter()
                .any(|(id, value, _)| *id == "tls_key_passphrase" && value == "set")
        );
        let err = with(&[(
            "tls_key_passphrase",
            "s3same",
            env("SYNCER_TLS_KEY_PASSPHRASE"),
        )])
        .unwrap_err();
        assert!(err.to_string().contains("is not encrypted"), "{err}");
        assert!(!err.to_string().contains("s3same"), "{err}");

        // The registry client's twins.
        let config = resolve_with(&[
            ("sc_tls_cert", &cert, flag("--sc-tls-cert")),
            ("sc_tls_key", &encrypted, flag("--sc-tls-key")),
            (
                "sc_tls_key_passphrase",
                "s3same",
                env("SYNCER_SC_TLS_KEY_PASSPHRASE"),
            ),
            ("sc_tls_min_version", "1.3", flag("--sc-tls-min-version")),
        ])
        .unwrap();
        let shown = format!("{:?}", config.registry.tls);
        assert!(
            shown.contains("Tls13") && shown.contains("certificate: true"),
            "{shown}"
        );
        let err = resolve_with(&[
            ("sc_tls_cert", &cert, flag("--sc-tls-cert")),
            ("sc_tls_key", &encrypted, flag("--sc-tls-key")),
        ])
        .unwrap_err();
        assert!(
            err.to_string().contains("SYNCER_SC_TLS_KEY_PASSPHRASE"),
            "{err}"
        );
        let err =
            resolve_with(&[("sc_tls_ciphers", "TLS_NOPE", flag("--sc-tls-ciphers"))]).unwrap_err();
        assert!(err.to_string().contains("--sc-tls-ciphers"), "{err}");
    }

    /// `--sc-tls-*` are read and checked while the configuration is resolved: a CA and a
    /// client pair reach the registry settings, a half pair, a missing file or a key of
    /// another certificate is refused naming the file, and `--sc-tls-insecure` warns.
    #[test]
    fn registry_tls_files_are_checked_at_start() {
        let dir = dev_cert_dir();
        let file = |name: &str| dir.path().join(name).display().to_string();
        let (cert, key, ca) = (file("node.pem"), file("node-key.pem"), file("ca.pem"));
        let flag = |f: &str| Origin::Flag(f.into());
        let config = resolve_with(&[
            ("sc_tls_cert", &cert, flag("--sc-tls-cert")),
            ("sc_tls_key", &key, flag("--sc-tls-key")),
            ("sc_tls_ca", &ca, flag("--sc-tls-ca")),
        ])
        .unwrap();
        let shown = format!("{:?}", config.registry.tls);
        assert!(
            shown.contains("ca: true") && shown.contains("certificate: true"),
            "{shown}"
        );
        assert!(!config.registry.tls.insecure());
        assert!(config.warnings.iter().all(|w| !w.contains("sc-tls")));
        assert_eq!(
            resolve_with(&[]).unwrap().registry.tls,
            RegistryTls::default()
        );

        let err = resolve_with(&[("sc_tls_cert", &cert, flag("--sc-tls-cert"))]).unwrap_err();
        assert!(err.to_string().contains("--sc-tls-key is needed"), "{err}");
        let err = resolve_with(&[("sc_tls_key", &key, flag("--sc-tls-key"))]).unwrap_err();
        assert!(err.to_string().contains("--sc-tls-cert is needed"), "{err}");
        let missing = file("missing-ca.pem");
        let err = resolve_with(&[("sc_tls_ca", &missing, flag("--sc-tls-ca"))]).unwrap_err();
        assert!(matches!(err, ConfigError::RegistryTls(_)), "{err}");
        assert!(err.to_string().contains("missing-ca.pem"), "{err}");
        // A key file as the CA holds no certificate.
        let err = resolve_with(&[("sc_tls_ca", &key, flag("--sc-tls-ca"))]).unwrap_err();
        assert!(
            err.to_string().contains("holds no PEM certificate"),
            "{err}"
        );
        // The CA's certificate with the node's key: they do not belong together.
        let err = resolve_with(&[
            ("sc_tls_cert", &ca, flag("--sc-tls-cert")),
            ("sc_tls_key", &key, flag("--sc-tls-key")),
        ])
        .unwrap_err();
        assert!(
            err.to_string().contains("cannot be used with certificate"),
            "{err}"
        );

        let config =
            resolve_with(&[("sc_tls_insecure", "true", flag("--sc-tls-insecure"))]).unwrap();
        assert!(config.registry.tls.insecure());
        assert!(
            config
                .warnings
                .iter()
                .any(|w| w.contains("--sc-tls-insecure is on")),
            "{:?}",
            config.warnings
        );
        let err = resolve_with(&[("sc_tls_insecure", "yes", flag("--sc-tls-insecure"))]);
        assert!(err.is_err());
    }

    /// `eureka` is a registry kind (`--sc-plugin`, YAML `registry.plugin` and the 1.3
    /// `servicecenter.plugin`); an unknown one names both kinds.
    #[test]
    fn eureka_is_a_registry_kind() {
        for origin in [
            Origin::Flag("--sc-plugin".into()),
            Origin::File {
                path: "s.yaml".into(),
                key: "registry.plugin".into(),
            },
            Origin::File {
                path: "s.yaml".into(),
                key: "servicecenter.plugin".into(),
            },
        ] {
            let config = resolve_with(&[("sc_plugin", "eureka", origin)]).unwrap();
            assert_eq!(config.registry.plugin, Plugin::Eureka);
            assert_eq!(config.registry.plugin.to_string(), "eureka");
        }
        let error = resolve_with(&[("sc_plugin", "consul", Origin::Default)])
            .unwrap_err()
            .to_string();
        assert!(error.contains("servicecenter, eureka"), "{error}");
    }

    /// The registry login needs both halves; the password is never shown (`--check`, errors,
    /// `Debug` of the configuration).
    #[test]
    fn registry_credentials_come_in_pairs_and_the_password_stays_hidden() {
        let env = || Origin::Env("SYNCER_SC_PASSWORD".into());
        let config = resolve_with(&[
            ("sc_user", "syncer", Origin::Flag("--sc-user".into())),
            ("sc_password", "pa55-word", env()),
        ])
        .unwrap();
        let credentials = config.registry.credentials.clone().expect("credentials");
        assert_eq!(credentials.user, "syncer");
        assert_eq!(credentials.password.expose(), "pa55-word");
        assert!(
            config
                .effective
                .iter()
                .any(|(id, value, _)| *id == "sc_password" && value == "set")
        );
        let shown = format!("{:?} {:?}", config.registry, config.effective);
        assert!(!shown.contains("pa55-word"), "{shown}");
        assert!(resolve_with(&[]).unwrap().registry.credentials.is_none());

        for given in [
            vec![("sc_user", "syncer", Origin::Default)],
            vec![("sc_password", "pa55-word", env())],
            vec![
                ("sc_user", "syncer", Origin::Default),
                ("sc_password", "", env()),
            ],
            vec![
                ("sc_user", " ", Origin::Flag("--sc-user".into())),
                ("sc_password", "pa55-word", env()),
            ],
        ] {
            let error = resolve_with(&given).unwrap_err().to_string();
            assert!(
                error.contains("sc_") || error.contains("--sc-user"),
                "{error}"
            );
            assert!(!error.contains("pa55-word"), "{error}");
        }
    }

    /// `--sc-confirm-removal`: the adapter's default for the number of addresses unless
    /// given (shown by `--check` as derived); durations up to a minute, `0` allowed.
    #[test]
    fn removal_confirmation_is_derived_or_given() {
        let flag = || Origin::Flag("--sc-confirm-removal".into());
        let shown = |config: &Config| {
            config
                .effective
                .iter()
                .find(|(id, ..)| *id == "sc_confirm_removal")
                .map(|(_, value, _)| value.clone())
        };
        let config = resolve_with(&[]).unwrap();
        assert_eq!(config.registry.confirm_removal, None);
        assert_eq!(shown(&config).as_deref(), Some("0s"));
        let config = resolve_with(&[(
            "sc_addr",
            "http://10.0.0.1:30100,http://10.0.0.2:30100",
            flag(),
        )])
        .unwrap();
        assert_eq!(shown(&config).as_deref(), Some("1s"));
        for (text, expected) in [("1s", 1_000), ("0", 0), ("250ms", 250)] {
            let config = resolve_with(&[("sc_confirm_removal", text, flag())]).unwrap();
            assert_eq!(
                config.registry.confirm_removal,
                Some(Duration::from_millis(expected))
            );
        }
        for bad in ["2m", "soon", "1.5s"] {
            let error = resolve_with(&[("sc_confirm_removal", bad, flag())])
                .unwrap_err()
                .to_string();
            assert!(error.contains("--sc-confirm-removal"), "{error}");
        }
    }

    /// `--sc-tenants`: `domain/project` pairs, deduplicated; anything else names the entry;
    /// only for a Service Center.
    #[test]
    fn tenants_to_watch_are_checked() {
        use crate::registry::Tenant;
        let flag = || Origin::Flag("--sc-tenants".into());
        assert!(resolve_with(&[]).unwrap().registry.tenants.is_empty());
        let config = resolve_with(&[("sc_tenants", "a/b, c/d,a/b", flag())]).unwrap();
        assert_eq!(
            config.registry.tenants,
            vec![Tenant::new("a", "b"), Tenant::new("c", "d")]
        );
        for bad in ["a", "a/", "/b", "a/b/c", "a b/c"] {
            let error = resolve_with(&[("sc_tenants", bad, flag())])
                .unwrap_err()
                .to_string();
            assert!(
                error.contains("--sc-tenants") && error.contains(bad.trim()),
                "{bad}: {error}"
            );
        }
        let error = resolve_with(&[
            ("sc_tenants", "a/b", flag()),
            ("sc_plugin", "eureka", Origin::Flag("--sc-plugin".into())),
        ])
        .unwrap_err()
        .to_string();
        assert!(error.contains("Service Center"), "{error}");
    }

    #[test]
    fn sync_settings_default_to_the_constants() {
        let config = resolve_with(&[]).unwrap();
        let sync = &config.sync;
        assert_eq!(sync.removal_cap, SyncConfig::DEFAULT_REMOVAL_CAP);
        assert_eq!(sync.origin_grace, SyncConfig::DEFAULT_ORIGIN_GRACE);
        assert_eq!(sync.keep_stale, SyncConfig::DEFAULT_KEEP_STALE);
        assert_eq!(sync.keep_stale_for, SyncConfig::DEFAULT_KEEP_STALE_FOR);
        assert_eq!(sync.copy_lease, SyncConfig::DEFAULT_COPY_LEASE);
        assert_eq!(
            sync.anti_entropy_interval,
            SyncConfig::DEFAULT_ANTI_ENTROPY_INTERVAL
        );
        assert_eq!(sync.poll_interval, SyncConfig::DEFAULT_POLL_INTERVAL);
        for id in [
            "removal_cap",
            "origin_grace",
            "keep_stale_copies",
            "keep_stale_for",
            "copy_lease",
            "anti_entropy_interval",
            "poll_interval",
        ] {
            assert!(
                config
                    .effective
                    .iter()
                    .any(|(i, _, o)| *i == id && *o == Origin::Default),
                "{id} missing from the effective settings"
            );
        }
    }

    /// Every built-in default of the table passes the typed parsing, and is what the
    /// configuration reports as used.
    #[test]
    fn table_defaults_parse() {
        // Only what has no default, and an address to advertise (the default bind address
        // is a wildcard).
        let mut given = Layer::default();
        given.set(Id::Node, "n1".into(), Origin::Default);
        given.set(Id::AdvertiseAddr, "10.0.0.1".into(), Origin::Default);
        let config = resolve(
            &super::super::settings::defaults().overlaid(given),
            Vec::new(),
        )
        .unwrap();
        for spec in super::super::settings::SETTINGS {
            if let super::super::settings::Default::Text(text) = spec.default {
                assert!(
                    config
                        .effective
                        .iter()
                        .any(|(id, value, origin)| *id == spec.id
                            && value == text
                            && *origin == Origin::Default),
                    "default of {} not used",
                    spec.name
                );
            }
        }
        // The cluster-mode defaults agree with their typed constants.
        assert_eq!(config.cluster.size, ClusterConfig::DEFAULT_SIZE);
        assert_eq!(
            config.cluster.leader_lease,
            ClusterConfig::DEFAULT_LEADER_LEASE
        );
        assert_eq!(
            config.sync.resync_interval,
            super::super::DEFAULT_RESYNC_INTERVAL
        );
        assert_eq!(config.gossip.profile, GossipProfile::Lan);
        // `effective` is in table order, as `--check` prints it.
        assert!(config.effective.windows(2).all(|w| w[0].0 < w[1].0));
    }

    /// Settings are checked in the order they were before the table: a bad gossip profile is
    /// named before any listener problem (here the wildcard bind address with nothing to
    /// advertise).
    #[test]
    fn the_first_bad_setting_is_named_in_the_old_order() {
        let mut given = Layer::default();
        given.set(Id::Node, "n1".into(), Origin::Default);
        given.set(
            Id::GossipProfile,
            "bad".into(),
            Origin::Flag("--gossip-profile".into()),
        );
        let err = resolve(
            &super::super::settings::defaults().overlaid(given),
            Vec::new(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("--gossip-profile"), "{err}");
    }

    #[test]
    fn sync_settings_are_read_and_checked() {
        let flag = |f: &str| Origin::Flag(f.to_owned());
        let config = resolve_with(&[
            ("removal_cap", "5", flag("--removal-cap")),
            ("origin_grace", "2m", flag("--origin-grace")),
            ("keep_stale_copies", "TRUE", flag("--keep-stale-copies")),
            ("keep_stale_for", "2h", flag("--keep-stale-for")),
            ("copy_lease", "9s", flag("--copy-lease")),
            (
                "anti_entropy_interval",
                "100ms",
                flag("--anti-entropy-interval"),
            ),
            ("poll_interval", "1m", flag("--poll-interval")),
        ])
        .unwrap();
        assert_eq!(config.sync.removal_cap, 5);
        assert_eq!(config.sync.origin_grace, Duration::from_secs(120));
        assert!(config.sync.keep_stale);
        assert_eq!(config.sync.keep_stale_for, Duration::from_secs(7200));
        assert_eq!(config.sync.copy_lease, Duration::from_secs(9));
        assert_eq!(
            config.sync.anti_entropy_interval,
            Duration::from_millis(100)
        );
        assert_eq!(config.sync.poll_interval, Duration::from_secs(60));

        let err = resolve_with(&[("copy_lease", "10s", flag("--copy-lease"))])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--copy-lease") && err.contains("9s or 12s"),
            "{err}"
        );
    }

    #[test]
    fn counts() {
        assert_eq!(parse_count("1", 1), Ok(1));
        assert_eq!(parse_count(" 1000 ", 1), Ok(1000));
        assert!(parse_count("0", 1).unwrap_err().contains("at least 1"));
        assert!(parse_count("-3", 1).unwrap_err().contains("at least 1"));
        assert!(parse_count("+3", 1).unwrap_err().contains("whole number"));
        assert!(parse_count("1.5", 1).unwrap_err().contains("whole number"));
        assert!(parse_count("", 1).unwrap_err().contains("whole number"));
        assert!(parse_count("1e3", 1).unwrap_err().contains("whole number"));
        assert!(
            parse_count("99999999999999999999999", 1)
                .unwrap_err()
                .contains("too large")
        );
    }

    #[test]
    fn booleans() {
        assert_eq!(parse_bool("true"), Ok(true));
        assert_eq!(parse_bool(" False "), Ok(false));
        assert!(parse_bool("yes").unwrap_err().contains("true or false"));
        assert!(parse_bool("").is_err());
    }

    #[test]
    fn bounded_durations() {
        let (min, max) = (Duration::from_millis(10), Some(Duration::from_secs(60)));
        assert_eq!(
            parse_duration_in("10ms", min, max),
            Ok(Duration::from_millis(10))
        );
        assert_eq!(
            parse_duration_in("1m", min, max),
            Ok(Duration::from_secs(60))
        );
        assert_eq!(
            parse_duration_in("1m 500ms", min, None),
            Ok(Duration::from_millis(60_500))
        );
        assert!(
            parse_duration_in("9ms", min, max)
                .unwrap_err()
                .contains("at least 10ms")
        );
        assert!(
            parse_duration_in("61s", min, max)
                .unwrap_err()
                .contains("at most 1m")
        );
        assert!(
            parse_duration_in("100", min, max)
                .unwrap_err()
                .contains("not a duration")
        );
        assert!(
            parse_duration_in("0.5s", min, max)
                .unwrap_err()
                .contains("fractions")
        );
    }

    #[test]
    fn managed_etcd_client_port_is_derived_below_the_ephemeral_range() {
        let port = |cluster: &str| {
            resolve_with(&[("cluster_port", cluster, Origin::Default)])
                .unwrap()
                .cluster
                .etcd_client_port
        };
        assert_eq!(port("30201"), 20201);
        assert_eq!(port("30192"), 20192);
        // Too low to subtract: added instead.
        assert_eq!(port("2380"), 12380);
        assert_eq!(port("11023"), 21023);
        let given = resolve_with(&[
            ("cluster_port", "30201", Origin::Default),
            ("etcd_client_port", "2379", Origin::Default),
        ])
        .unwrap();
        assert_eq!(given.cluster.etcd_client_port, 2379);
    }

    #[test]
    fn copy_leases() {
        assert_eq!(parse_copy_lease("3s"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_copy_lease("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_copy_lease("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_copy_lease("3000ms"), Ok(Duration::from_secs(3)));
        assert!(parse_copy_lease("2s").unwrap_err().contains("at least 3s"));
        assert!(
            parse_copy_lease("3603s")
                .unwrap_err()
                .contains("at most 1h")
        );
        assert!(
            parse_copy_lease("4500ms")
                .unwrap_err()
                .contains("whole seconds")
        );
        assert!(
            parse_copy_lease("4.5s")
                .unwrap_err()
                .contains("whole seconds")
        );
        assert!(
            parse_copy_lease("31s")
                .unwrap_err()
                .contains("multiple of 3s")
        );
    }

    #[test]
    fn names() {
        assert!(check_name("syncer011", 63).is_ok());
        assert!(check_name("-x", 63).is_err());
        assert!(check_name("a/b", 63).unwrap_err().contains('/'));
    }
}

//! The list of every setting of `syncer daemon`: one entry per setting, with its flag,
//! environment variable, YAML keys, default and help.
//!
//! Everything that names a setting is driven from [`SETTINGS`]: the clap arguments
//! (`crate::cli::daemon`), the defaults layer ([`defaults`]), the YAML mapping (`file.rs`)
//! and the `--check` listing. Typed parsing and validation stay code (`parse.rs`), reading
//! settings by [`Id`], so a typo in a setting's name is a compile error rather than a setting
//! that is silently never read.
//!
//! Adding a setting: a variant of [`Id`], its entry in [`SETTINGS`] (at the same position),
//! a typed field in one of the `*Config` structs of `config/mod.rs`, and the lines of
//! `parse.rs` that read and check it. The unit tests below check that the table is
//! consistent and that docs/CONFIG.md names the new flag, variable and keys.

use std::fmt;

use super::{Layer, Origin};

/// One setting. The order is the order of [`SETTINGS`], of `syncer daemon --help` and of
/// `--check`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Id {
    ScAddr,
    ScPlugin,
    ScUser,
    ScPassword,
    ScConfirmRemoval,
    ScTenants,
    ScTlsCa,
    ScTlsCert,
    ScTlsKey,
    ScTlsInsecure,
    ScTlsKeyPassphrase,
    ScTlsMinVersion,
    ScTlsCiphers,
    BindAddr,
    RpcAddr,
    TlsCert,
    TlsKey,
    TlsCa,
    TlsVerifyPeer,
    TlsKeyPassphrase,
    TlsMinVersion,
    TlsCiphers,
    JoinAddr,
    AdvertiseAddr,
    GossipProfile,
    GossipLabel,
    GossipKey,
    Mode,
    Node,
    ClusterName,
    ClusterPort,
    PeerAddr,
    DataDir,
    EtcdEndpoints,
    EtcdCa,
    EtcdCert,
    EtcdKey,
    ClusterSize,
    LeaderLease,
    EtcdBin,
    EtcdClientPort,
    ClusterForceNew,
    AdminAddr,
    RemovalCap,
    RemovalHold,
    OriginGrace,
    KeepStaleCopies,
    KeepStaleFor,
    CopyLease,
    AntiEntropyInterval,
    PollInterval,
    Include,
    Exclude,
    InspectInterval,
    InspectAlarmCount,
    LogFormat,
    LogLevel,
    TaskKind,
    ResyncInterval,
}

impl Id {
    /// This setting's entry in the table.
    pub fn spec(self) -> &'static Spec {
        &SETTINGS[self as usize]
    }

    /// The setting's name, as `--check` prints it (`sc_addr`, `bind_addr`, ...).
    pub fn name(self) -> &'static str {
        self.spec().name
    }

    /// The setting called `name`, if there is one.
    #[cfg(test)]
    pub fn from_name(name: &str) -> Option<Id> {
        SETTINGS.iter().find(|s| s.name == name).map(|s| s.id)
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

/// Tests compare a setting with its name.
#[cfg(test)]
impl PartialEq<&str> for Id {
    fn eq(&self, name: &&str) -> bool {
        self.name() == *name
    }
}

/// One row of the table.
#[derive(Debug)]
pub struct Spec {
    pub id: Id,
    /// Name in `--check`, the clap argument id, and the word the flag and variable are
    /// spelled from (`cluster_port`: `--cluster-port`, `SYNCER_CLUSTER_PORT`).
    pub name: &'static str,
    /// The command-line flag; `None` for settings only the file sets.
    pub flag: Option<Flag>,
    /// The environment variable; given exactly when there is a flag.
    pub env: Option<&'static str>,
    /// YAML keys (dotted paths), highest precedence first: the 1.4 key or our own, then the
    /// 1.3 key. A key with `[...]` sits inside a list and is read by explicit code in
    /// `file.rs` (`task.params[interval]`); every other key is read by the generic walk.
    pub file_keys: &'static [&'static str],
    /// A list: comma-separated text, which a YAML file may also give as a sequence.
    pub list: bool,
    pub default: Default,
    /// The help line, without the default (appended from [`Spec::default`]).
    pub help: &'static str,
}

/// The built-in value of a setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Default {
    /// None: the setting is simply absent unless given.
    None,
    /// This text, in the defaults layer.
    Text(&'static str),
    /// Worked out from other settings by `parse.rs`; the text says how (for `--help`).
    Derived(&'static str),
}

/// A setting's command-line flag.
#[derive(Debug, Clone, Copy)]
pub struct Flag {
    /// Long name without the dashes.
    pub long: &'static str,
    pub value_name: &'static str,
    pub aliases: &'static [Alias],
    pub form: Form,
    /// A setting that may not be given together with this one on the command line.
    pub conflicts_with: Option<Id>,
}

/// Another spelling of a flag (the original Syncer 1.4's names).
#[derive(Debug, Clone, Copy)]
pub enum Alias {
    /// Listed in `--help`.
    Visible(&'static str),
    /// Accepted but not listed.
    Hidden(&'static str),
}

/// How a flag takes its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// `--flag VALUE`.
    Value,
    /// `--flag VALUE`, where VALUE may look like a negative number, so that `--removal-cap -5`
    /// reaches validation (and its message) instead of being a usage error.
    Number,
    /// `--flag` alone means `true`; `--flag=false` and `--flag false` are accepted too.
    Switch,
}

impl Flag {
    const fn value(long: &'static str, value_name: &'static str) -> Flag {
        Flag {
            long,
            value_name,
            aliases: &[],
            form: Form::Value,
            conflicts_with: None,
        }
    }

    const fn form(self, form: Form) -> Flag {
        Flag { form, ..self }
    }

    const fn aliases(self, aliases: &'static [Alias]) -> Flag {
        Flag { aliases, ..self }
    }

    const fn conflicts_with(self, id: Id) -> Flag {
        Flag {
            conflicts_with: Some(id),
            ..self
        }
    }
}

impl Spec {
    /// The help text as `--help` shows it: the help line and the default.
    pub fn help_text(&self) -> String {
        match self.default {
            Default::None => self.help.to_owned(),
            Default::Text("") => format!("{}. [default: empty]", self.help),
            Default::Text(text) | Default::Derived(text) => {
                format!("{}. [default: {text}]", self.help)
            }
        }
    }

    /// The origin of a value given by this setting's flag (named by its long name, whichever
    /// alias was typed).
    pub fn flag_origin(&self) -> Option<Origin> {
        self.flag.map(|f| Origin::Flag(format!("--{}", f.long)))
    }

    /// The origin of a value given by this setting's environment variable.
    pub fn env_origin(&self) -> Option<Origin> {
        self.env.map(|var| Origin::Env(var.to_owned()))
    }
}

/// The built-in defaults: every [`Default::Text`] of the table.
pub fn defaults() -> Layer {
    let mut layer = Layer::default();
    for spec in SETTINGS {
        if let Default::Text(text) = spec.default {
            layer.set(spec.id, text.to_owned(), Origin::Default);
        }
    }
    layer
}

/// Every setting, in the order of [`Id`].
///
/// The typed defaults of the sync engine and cluster mode (`SyncConfig::DEFAULT_*`,
/// `ClusterConfig::DEFAULT_*`) are the texts here; a unit test in `parse.rs` checks that
/// they agree.
pub static SETTINGS: &[Spec] = &[
    // --- The registry ---
    Spec {
        id: Id::ScAddr,
        name: "sc_addr",
        flag: Some(Flag::value("sc-addr", "URLS").aliases(&[Alias::Visible("registry")])),
        env: Some("SYNCER_SC_ADDR"),
        file_keys: &["registry.address", "servicecenter.addr"],
        list: true,
        default: Default::Text("http://127.0.0.1:30100"),
        help: "Registry address(es), comma-separated; a missing scheme means http://",
    },
    Spec {
        id: Id::ScPlugin,
        name: "sc_plugin",
        flag: Some(Flag::value("sc-plugin", "NAME").aliases(&[Alias::Visible("plugin")])),
        env: Some("SYNCER_SC_PLUGIN"),
        file_keys: &["registry.plugin", "servicecenter.plugin"],
        list: false,
        default: Default::Text("servicecenter"),
        help: "Registry kind: servicecenter or eureka",
    },
    Spec {
        id: Id::ScUser,
        name: "sc_user",
        flag: Some(Flag::value("sc-user", "NAME")),
        env: Some("SYNCER_SC_USER"),
        file_keys: &["registry.user"],
        list: false,
        default: Default::None,
        help: "Account for a registry with access control (SC 2.x RBAC); needs --sc-password",
    },
    Spec {
        id: Id::ScPassword,
        name: "sc_password",
        flag: Some(Flag::value("sc-password", "PASSWORD")),
        env: Some("SYNCER_SC_PASSWORD"),
        file_keys: &["registry.password"],
        list: false,
        default: Default::None,
        help: "Password of --sc-user; never logged, --check shows only 'set'",
    },
    Spec {
        id: Id::ScConfirmRemoval,
        name: "sc_confirm_removal",
        flag: Some(Flag::value("sc-confirm-removal", "DURATION")),
        env: Some("SYNCER_SC_CONFIRM_REMOVAL"),
        file_keys: &["registry.confirmRemoval"],
        list: false,
        default: Default::Derived("1s with several --sc-addr addresses, 0s with one"),
        help: "How long an instance or service must stay missing from the registry's answers \
               before it counts as removed, so that a registry node whose cache trails the \
               others is not read as a mass deletion; set 1s for a Service Center cluster \
               behind one load-balanced address. 0s reports removals at once. At most 1m",
    },
    Spec {
        id: Id::ScTenants,
        name: "sc_tenants",
        flag: Some(Flag::value("sc-tenants", "DOMAIN/PROJECT")),
        env: Some("SYNCER_SC_TENANTS"),
        file_keys: &["registry.tenants"],
        list: true,
        default: Default::None,
        help: "Service Center tenants to watch from the start, repeatable or comma-separated: \
               their first service is then seen within one poll. Other tenants are found by \
               the full dump of each resync (every 30 s by default)",
    },
    Spec {
        id: Id::ScTlsCa,
        name: "sc_tls_ca",
        flag: Some(Flag::value("sc-tls-ca", "FILE")),
        env: Some("SYNCER_SC_TLS_CA"),
        file_keys: &[],
        list: false,
        default: Default::None,
        help: "PEM CA certificate(s) that https registry addresses are verified against, for a \
               registry with a private CA. Without it, the public web PKI roots are used",
    },
    Spec {
        id: Id::ScTlsCert,
        name: "sc_tls_cert",
        flag: Some(Flag::value("sc-tls-cert", "FILE")),
        env: Some("SYNCER_SC_TLS_CERT"),
        file_keys: &[],
        list: false,
        default: Default::None,
        help: "PEM client certificate (chain) presented to an https registry that asks for one. \
               Needs --sc-tls-key",
    },
    Spec {
        id: Id::ScTlsKey,
        name: "sc_tls_key",
        flag: Some(Flag::value("sc-tls-key", "FILE")),
        env: Some("SYNCER_SC_TLS_KEY"),
        file_keys: &[],
        list: false,
        default: Default::None,
        help: "PEM private key of --sc-tls-cert",
    },
    Spec {
        id: Id::ScTlsInsecure,
        name: "sc_tls_insecure",
        flag: Some(Flag::value("sc-tls-insecure", "BOOL").form(Form::Switch)),
        env: Some("SYNCER_SC_TLS_INSECURE"),
        file_keys: &[],
        list: false,
        default: Default::Text("false"),
        help: "Accept any certificate from an https registry (no verification at all); for \
               trials only, logged as a warning at start",
    },
    Spec {
        id: Id::ScTlsKeyPassphrase,
        name: "sc_tls_key_passphrase",
        flag: Some(Flag::value("sc-tls-key-passphrase", "PASSPHRASE")),
        env: Some("SYNCER_SC_TLS_KEY_PASSPHRASE"),
        file_keys: &[],
        list: false,
        default: Default::None,
        help: "Passphrase of an encrypted --sc-tls-key (PKCS#8 \"ENCRYPTED PRIVATE KEY\"); \
               never logged. Prefer the variable or the YAML file: a flag shows in process lists",
    },
    Spec {
        id: Id::ScTlsMinVersion,
        name: "sc_tls_min_version",
        flag: Some(Flag::value("sc-tls-min-version", "VERSION")),
        env: Some("SYNCER_SC_TLS_MIN_VERSION"),
        file_keys: &[],
        list: false,
        default: Default::Text("1.2"),
        help: "Oldest TLS version spoken to an https registry: 1.2 or 1.3 (TLSv1.2, TLSv1.3)",
    },
    Spec {
        id: Id::ScTlsCiphers,
        name: "sc_tls_ciphers",
        flag: Some(Flag::value("sc-tls-ciphers", "SUITE,...")),
        env: Some("SYNCER_SC_TLS_CIPHERS"),
        file_keys: &[],
        list: true,
        default: Default::None,
        help: "Cipher suites offered to an https registry, by IANA name \
               (TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, ...). Without it, rustls' defaults",
    },
    // --- The gossip pool ---
    Spec {
        id: Id::BindAddr,
        name: "bind_addr",
        flag: Some(Flag::value("bind-addr", "IP:PORT").aliases(&[Alias::Hidden("bind")])),
        env: Some("SYNCER_BIND_ADDR"),
        file_keys: &["listener.bindAddr"],
        list: false,
        default: Default::Text("0.0.0.0:30190"),
        help: "Gossip (UDP) listen address; a missing port means 30190",
    },
    Spec {
        id: Id::RpcAddr,
        name: "rpc_addr",
        flag: Some(Flag::value("rpc-addr", "IP:PORT")),
        env: Some("SYNCER_RPC_ADDR"),
        file_keys: &["listener.rpcAddr"],
        list: false,
        default: Default::Text("0.0.0.0:30191"),
        help: "gRPC listen address; a missing port means 30191",
    },
    Spec {
        id: Id::TlsCert,
        name: "tls_cert",
        flag: Some(Flag::value("tls-cert", "FILE")),
        env: Some("SYNCER_TLS_CERT"),
        file_keys: &[],
        list: false,
        default: Default::None,
        help: "PEM certificate (chain) of this syncer: the rpc listener serves TLS only, and \
               calls to other syncers use TLS and present it; in cluster mode without \
               --etcd-endpoints the managed etcd member serves TLS with it too. Needs --tls-key",
    },
    Spec {
        id: Id::TlsKey,
        name: "tls_key",
        flag: Some(Flag::value("tls-key", "FILE")),
        env: Some("SYNCER_TLS_KEY"),
        file_keys: &[],
        list: false,
        default: Default::None,
        help: "PEM private key of --tls-cert",
    },
    Spec {
        id: Id::TlsCa,
        name: "tls_ca",
        flag: Some(Flag::value("tls-ca", "FILE")),
        env: Some("SYNCER_TLS_CA"),
        file_keys: &[],
        list: false,
        default: Default::None,
        help: "PEM CA certificate(s): callers must present a certificate signed by it (mutual \
               TLS) and the syncers this one calls are verified against it. Without it, servers \
               are verified against the public web PKI roots and callers are not asked for a \
               certificate",
    },
    Spec {
        id: Id::TlsVerifyPeer,
        name: "tls_verify_peer",
        flag: Some(Flag::value("tls-verify-peer", "BOOL").form(Form::Switch)),
        env: Some("SYNCER_TLS_VERIFY_PEER"),
        file_keys: &[],
        list: false,
        default: Default::Text("true"),
        help: "With --tls-ca: callers must present a certificate signed by it (mutual TLS). \
               false: callers are not asked for one; the servers this syncer calls are still \
               verified against --tls-ca",
    },
    Spec {
        id: Id::TlsKeyPassphrase,
        name: "tls_key_passphrase",
        flag: Some(Flag::value("tls-key-passphrase", "PASSPHRASE")),
        env: Some("SYNCER_TLS_KEY_PASSPHRASE"),
        file_keys: &[],
        list: false,
        default: Default::None,
        help: "Passphrase of an encrypted --tls-key (PKCS#8 \"ENCRYPTED PRIVATE KEY\"); never \
               logged. Prefer the variable or the YAML file: a flag shows in process lists",
    },
    Spec {
        id: Id::TlsMinVersion,
        name: "tls_min_version",
        flag: Some(Flag::value("tls-min-version", "VERSION")),
        env: Some("SYNCER_TLS_MIN_VERSION"),
        file_keys: &[],
        list: false,
        default: Default::Text("1.2"),
        help: "Oldest TLS version of the rpc link, both ways: 1.2 or 1.3 (TLSv1.2, TLSv1.3)",
    },
    Spec {
        id: Id::TlsCiphers,
        name: "tls_ciphers",
        flag: Some(Flag::value("tls-ciphers", "SUITE,...")),
        env: Some("SYNCER_TLS_CIPHERS"),
        file_keys: &[],
        list: true,
        default: Default::None,
        help: "Cipher suites of the rpc link, by IANA name \
               (TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, TLS13_AES_128_GCM_SHA256, ...). \
               Without it, rustls' defaults",
    },
    Spec {
        id: Id::JoinAddr,
        name: "join_addr",
        flag: Some(Flag::value("join-addr", "HOST:PORT,...").aliases(&[Alias::Visible("join")])),
        env: Some("SYNCER_JOIN_ADDR"),
        file_keys: &["join.address", "join_addr"],
        list: true,
        default: Default::None,
        help: "Address of any pool member to join, comma-separated (gossip or rpc address)",
    },
    Spec {
        id: Id::AdvertiseAddr,
        name: "advertise_addr",
        flag: Some(Flag::value("advertise-addr", "IP")),
        env: Some("SYNCER_ADVERTISE_ADDR"),
        file_keys: &["listener.advertiseAddr"],
        list: false,
        default: Default::None,
        help: "IP address peers use to reach this syncer's gossip and rpc ports. Default: the \
               host of --bind-addr, or if that is a wildcard, the local address that routes to \
               the first --join-addr",
    },
    Spec {
        id: Id::GossipProfile,
        name: "gossip_profile",
        flag: Some(Flag::value("gossip-profile", "PROFILE")),
        env: Some("SYNCER_GOSSIP_PROFILE"),
        file_keys: &["gossip.profile", "profile"],
        list: false,
        default: Default::Text("lan"),
        help: "Failure-detection timing of the gossip pool: lan (a crash is detected within \
               6 s, measured about 3 s on a 50-member pool), wan (slow links between regions; \
               measured about 11 s) or local (tests on one machine)",
    },
    Spec {
        id: Id::GossipLabel,
        name: "gossip_label",
        flag: Some(Flag::value("gossip-label", "LABEL")),
        env: Some("SYNCER_GOSSIP_LABEL"),
        file_keys: &["gossip.label"],
        list: false,
        default: Default::Text(""),
        help: "Label of the gossip pool: syncers only admit members with the same label, so \
               pools that share a network stay apart",
    },
    Spec {
        id: Id::GossipKey,
        name: "gossip_key",
        flag: Some(Flag::value("gossip-key", "BASE64")),
        env: Some("SYNCER_GOSSIP_KEY"),
        file_keys: &["gossip.key"],
        list: false,
        default: Default::None,
        help: "Encrypts the gossip pool: 32 random bytes in base64 (syncer keygen makes one). \
               Seeds <data-dir>/gossip-keyring.json on the first start; that file, once \
               there, is what the node uses. Never logged, --check shows only 'set'",
    },
    // --- This syncer ---
    Spec {
        id: Id::Mode,
        name: "mode",
        flag: Some(Flag::value("mode", "MODE")),
        env: Some("SYNCER_MODE"),
        file_keys: &["mode"],
        list: false,
        default: Default::Text("single"),
        help: "single: one syncer per data centre; cluster: several, exactly one active",
    },
    Spec {
        id: Id::Node,
        name: "node",
        flag: Some(Flag::value("node", "NAME")),
        env: Some("SYNCER_NODE"),
        file_keys: &["node"],
        list: false,
        default: Default::Derived("host name"),
        help: "Member name, unique in the pool; required in cluster mode",
    },
    Spec {
        id: Id::ClusterName,
        name: "cluster_name",
        flag: Some(Flag::value("cluster-name", "NAME").aliases(&[Alias::Visible("cluster")])),
        env: Some("SYNCER_CLUSTER_NAME"),
        file_keys: &["cluster", "cluster_name"],
        list: false,
        default: Default::Derived(
            "from the registry's identity on the first start, saved in <data-dir>/cluster-name",
        ),
        help: "Data centre name shared by its syncers",
    },
    Spec {
        id: Id::ClusterPort,
        name: "cluster_port",
        flag: Some(Flag::value("cluster-port", "PORT").conflicts_with(Id::PeerAddr)),
        env: Some("SYNCER_CLUSTER_PORT"),
        file_keys: &["cluster_port"],
        list: false,
        default: Default::Text("30192"),
        help: "Port of the managed etcd member's peer listener (cluster mode)",
    },
    Spec {
        id: Id::PeerAddr,
        name: "peer_addr",
        flag: Some(Flag::value("peer-addr", "IP:PORT")),
        env: Some("SYNCER_PEER_ADDR"),
        file_keys: &["listener.peerAddr"],
        list: false,
        default: Default::None,
        help: "Address of the managed etcd member's peer listener (the 1.4 form of \
               --cluster-port)",
    },
    Spec {
        id: Id::DataDir,
        name: "data_dir",
        flag: Some(Flag::value("data-dir", "DIR")),
        env: Some("SYNCER_DATA_DIR"),
        file_keys: &["dataDir"],
        list: false,
        default: Default::Derived("./syncer-data/<node>"),
        help: "Directory for this syncer's state",
    },
    Spec {
        id: Id::EtcdEndpoints,
        name: "etcd_endpoints",
        flag: Some(Flag::value("etcd-endpoints", "URLS")),
        env: Some("SYNCER_ETCD_ENDPOINTS"),
        file_keys: &["etcd.endpoints"],
        list: true,
        default: Default::None,
        help: "etcd client URLs, comma-separated; without them state is kept in --data-dir",
    },
    Spec {
        id: Id::EtcdCa,
        name: "etcd_ca",
        flag: Some(Flag::value("etcd-ca", "FILE")),
        env: Some("SYNCER_ETCD_CA"),
        file_keys: &[],
        list: false,
        default: Default::None,
        help: "PEM CA certificate(s) that https:// --etcd-endpoints are verified against. \
               Without it, the public web PKI roots are used. Only with https:// endpoints",
    },
    Spec {
        id: Id::EtcdCert,
        name: "etcd_cert",
        flag: Some(Flag::value("etcd-cert", "FILE")),
        env: Some("SYNCER_ETCD_CERT"),
        file_keys: &[],
        list: false,
        default: Default::None,
        help: "PEM client certificate (chain) presented to https:// --etcd-endpoints (etcd's \
               --client-cert-auth). Needs --etcd-key",
    },
    Spec {
        id: Id::EtcdKey,
        name: "etcd_key",
        flag: Some(Flag::value("etcd-key", "FILE")),
        env: Some("SYNCER_ETCD_KEY"),
        file_keys: &[],
        list: false,
        default: Default::None,
        help: "PEM private key of --etcd-cert",
    },
    // --- Cluster mode ---
    Spec {
        id: Id::ClusterSize,
        name: "cluster_size",
        flag: Some(Flag::value("cluster-size", "N")),
        env: Some("SYNCER_CLUSTER_SIZE"),
        file_keys: &["clusterMode.size"],
        list: false,
        default: Default::Text("3"),
        help: "Cluster mode: members of this data centre; without --etcd-endpoints the managed \
               etcd cluster bootstraps once this many have met. At least 1",
    },
    Spec {
        id: Id::LeaderLease,
        name: "leader_lease",
        flag: Some(Flag::value("leader-lease", "DURATION")),
        env: Some("SYNCER_LEADER_LEASE"),
        file_keys: &["clusterMode.leader_lease"],
        list: false,
        default: Default::Text("2s"),
        help: "Cluster mode: lease of the active member's leadership in etcd, 2s to 1m in \
               whole seconds; a standby takes over within about this long after the active \
               member dies",
    },
    Spec {
        id: Id::EtcdBin,
        name: "etcd_bin",
        flag: Some(Flag::value("etcd-bin", "PATH")),
        env: Some("SYNCER_ETCD_BIN"),
        file_keys: &["clusterMode.etcd_bin"],
        list: false,
        default: Default::Text("etcd"),
        help: "Cluster mode without --etcd-endpoints: the etcd executable to run, looked up on \
               PATH unless it is a path",
    },
    Spec {
        id: Id::EtcdClientPort,
        name: "etcd_client_port",
        flag: Some(Flag::value("etcd-client-port", "PORT")),
        env: Some("SYNCER_ETCD_CLIENT_PORT"),
        file_keys: &["clusterMode.etcd_client_port"],
        list: false,
        default: Default::Derived("the cluster port - 10000, or + 10000 when that is below 1024"),
        help: "Cluster mode without --etcd-endpoints: client port of the managed etcd member",
    },
    Spec {
        id: Id::ClusterForceNew,
        name: "cluster_force_new",
        flag: Some(Flag::value("cluster-force-new", "BOOL").form(Form::Switch)),
        env: Some("SYNCER_CLUSTER_FORCE_NEW"),
        file_keys: &[],
        list: false,
        default: Default::Text("false"),
        help: "Cluster mode without --etcd-endpoints, to recover from a lost quorum: start the \
               managed etcd member once with etcd's --force-new-cluster, as a one-member \
               cluster keeping its data; the other members then join it again by themselves. \
               Needs this member's etcd data. Remove it after the recovery \
               (docs/OPERATIONS.md)",
    },
    // --- Admin endpoint ---
    Spec {
        id: Id::AdminAddr,
        name: "admin_addr",
        flag: Some(Flag::value("admin-addr", "IP:PORT")),
        env: Some("SYNCER_ADMIN_ADDR"),
        file_keys: &["listener.adminAddr"],
        list: false,
        default: Default::Derived("host of --rpc-addr, its port + 2"),
        help: "HTTP address of /health and /metrics, or `none`",
    },
    // --- The sync engine ---
    Spec {
        id: Id::RemovalCap,
        name: "removal_cap",
        flag: Some(Flag::value("removal-cap", "N").form(Form::Number)),
        env: Some("SYNCER_REMOVAL_CAP"),
        file_keys: &["sync.removal_cap"],
        list: false,
        default: Default::Text("1000"),
        help: "Most copies of one origin data centre removed per sliding minute; further \
               removals wait, are logged and counted. At least 1",
    },
    Spec {
        id: Id::RemovalHold,
        name: "removal_hold",
        flag: Some(Flag::value("removal-hold", "DURATION")),
        env: Some("SYNCER_REMOVAL_HOLD"),
        file_keys: &["sync.removal_hold"],
        list: false,
        default: Default::Text("30s"),
        help: "When more than half of this data centre's instances vanish in one answer of \
               its registry (a restart answering from an empty view, a registry that lost its \
               data), how long their removal is held before other data centres are told; what \
               comes back meanwhile is never removed. 0s turns the hold off. At most 10m",
    },
    Spec {
        id: Id::OriginGrace,
        name: "origin_grace",
        flag: Some(Flag::value("origin-grace", "DURATION")),
        env: Some("SYNCER_ORIGIN_GRACE"),
        file_keys: &["sync.origin_grace"],
        list: false,
        default: Default::Text("1m"),
        help: "How long an origin data centre may go without a successful exchange (push, \
               pull, anti-entropy) before its copies are no longer kept alive. At least 1s",
    },
    Spec {
        id: Id::KeepStaleCopies,
        name: "keep_stale_copies",
        flag: Some(Flag::value("keep-stale-copies", "BOOL").form(Form::Switch)),
        env: Some("SYNCER_KEEP_STALE_COPIES"),
        file_keys: &["sync.keep_stale_copies"],
        list: false,
        default: Default::Text("false"),
        help: "Keep heartbeating the copies of an unreachable origin after --origin-grace, so \
               they are stale rather than missing during a partition. `--keep-stale-copies` \
               alone means true",
    },
    Spec {
        id: Id::KeepStaleFor,
        name: "keep_stale_for",
        flag: Some(Flag::value("keep-stale-for", "DURATION")),
        env: Some("SYNCER_KEEP_STALE_FOR"),
        file_keys: &["sync.keep_stale_for"],
        list: false,
        default: Default::Text("24h"),
        help: "With --keep-stale-copies: how long after --origin-grace the copies of an \
               unreachable origin are still kept alive; then they expire as without the \
               switch (a data centre gone for good does not keep its copies forever). At \
               least 1s",
    },
    Spec {
        id: Id::CopyLease,
        name: "copy_lease",
        flag: Some(Flag::value("copy-lease", "DURATION")),
        env: Some("SYNCER_COPY_LEASE"),
        file_keys: &["sync.copy_lease"],
        list: false,
        default: Default::Text("30s"),
        help: "Lease of every copy syncer registers, in whole seconds: a multiple of 3s from 3s \
               to 1h (heartbeats go every third of it; the registry tolerates 2 missed ones)",
    },
    Spec {
        id: Id::AntiEntropyInterval,
        name: "anti_entropy_interval",
        flag: Some(Flag::value("anti-entropy-interval", "DURATION")),
        env: Some("SYNCER_ANTI_ENTROPY_INTERVAL"),
        file_keys: &["sync.anti_entropy_interval"],
        list: false,
        default: Default::Text("10s"),
        help: "Period of the anti-entropy check with every other data centre, 100ms to 1h",
    },
    Spec {
        id: Id::PollInterval,
        name: "poll_interval",
        flag: Some(Flag::value("poll-interval", "DURATION")),
        env: Some("SYNCER_POLL_INTERVAL"),
        file_keys: &["sync.poll_interval"],
        list: false,
        default: Default::Text("100ms"),
        help: "Period of the registry change-feed poll (ServiceComb: one batch find per \
               tenant), 10ms to 1m",
    },
    Spec {
        id: Id::Include,
        name: "include",
        flag: Some(Flag::value("include", "PATTERN")),
        env: Some("SYNCER_INCLUDE"),
        file_keys: &["sync.include"],
        list: true,
        default: Default::None,
        help: "Only services matching one of these patterns are exported and imported: \
               [domain/project/]appId/serviceName with * as a wildcard, repeatable or \
               comma-separated. Without it, every service",
    },
    Spec {
        id: Id::Exclude,
        name: "exclude",
        flag: Some(Flag::value("exclude", "PATTERN")),
        env: Some("SYNCER_EXCLUDE"),
        file_keys: &["sync.exclude"],
        list: true,
        default: Default::None,
        help: "Services matching one of these patterns are neither exported nor imported \
               (wins over --include); same pattern form, repeatable or comma-separated",
    },
    Spec {
        id: Id::InspectInterval,
        name: "inspect_interval",
        flag: Some(Flag::value("inspect-interval", "DURATION")),
        env: Some("SYNCER_INSPECT_INTERVAL"),
        file_keys: &["sync.inspect_interval"],
        list: false,
        default: Default::Text("0s"),
        help: "Period of the inspection the active syncer makes of its data centre's copies \
               against the origins (a full read of the local registry and of every origin's): \
               drift exported as syncer_inspect_drift, an alarm after --inspect-alarm-count \
               inspections finding the same. 0s: off. At least 1s",
    },
    Spec {
        id: Id::InspectAlarmCount,
        name: "inspect_alarm_count",
        flag: Some(Flag::value("inspect-alarm-count", "N").form(Form::Number)),
        env: Some("SYNCER_INSPECT_ALARM_COUNT"),
        file_keys: &["sync.inspect_alarm_count"],
        list: false,
        default: Default::Text("3"),
        help: "Consecutive inspections finding the same drift before it is logged as an alarm \
               and /health says degraded",
    },
    // --- Logs ---
    Spec {
        id: Id::LogFormat,
        name: "log_format",
        flag: Some(Flag::value("log-format", "FORMAT")),
        env: Some("SYNCER_LOG_FORMAT"),
        file_keys: &["log.format"],
        list: false,
        default: Default::Text("text"),
        help: "Log format: text or json",
    },
    Spec {
        id: Id::LogLevel,
        name: "log_level",
        flag: Some(Flag::value("log-level", "FILTER")),
        env: Some("SYNCER_LOG_LEVEL"),
        file_keys: &["log.level"],
        list: false,
        default: Default::Text("info"),
        help: "Log filter: a level (info, debug, ...) or tracing directives such as \
               `info,syncer::gossip=debug`; RUST_LOG is read when neither this flag nor \
               SYNCER_LOG_LEVEL is set",
    },
    // --- File only: the original's task ---
    Spec {
        id: Id::TaskKind,
        name: "task_kind",
        flag: None,
        env: None,
        file_keys: &["task.kind"],
        list: false,
        default: Default::Text("ticker"),
        help: "ticker: export this data centre; idle: only import the others",
    },
    Spec {
        id: Id::ResyncInterval,
        name: "resync_interval",
        flag: None,
        env: None,
        file_keys: &["task.params[interval]", "ticker_interval"],
        list: false,
        default: Default::Text("30s"),
        help: "Period of the full resync that backs up the registry's change feed",
    },
];

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn entries_sit_at_their_id() {
        for (i, spec) in SETTINGS.iter().enumerate() {
            assert_eq!(spec.id as usize, i, "{} is out of place", spec.name);
            assert_eq!(Id::from_name(spec.name), Some(spec.id));
        }
        assert_eq!(SETTINGS.len(), Id::ResyncInterval as usize + 1);
    }

    #[test]
    fn names_flags_variables_and_keys_are_unique() {
        let mut names = HashSet::new();
        let mut flags = HashSet::new();
        let mut vars = HashSet::new();
        let mut keys = HashSet::new();
        for spec in SETTINGS {
            assert!(names.insert(spec.name), "name {} twice", spec.name);
            if let Some(flag) = spec.flag {
                assert!(flags.insert(flag.long), "--{} twice", flag.long);
                for alias in flag.aliases {
                    let (Alias::Visible(a) | Alias::Hidden(a)) = alias;
                    assert!(flags.insert(a), "--{a} twice");
                }
            }
            if let Some(var) = spec.env {
                assert!(vars.insert(var), "{var} twice");
            }
            for key in spec.file_keys {
                assert!(keys.insert(*key), "file key {key} twice");
            }
        }
        // The two flags that are not settings.
        assert!(!flags.contains("config") && !flags.contains("check"));
    }

    #[test]
    fn flags_and_variables_are_spelled_from_the_name() {
        for spec in SETTINGS {
            assert_eq!(
                spec.flag.is_some(),
                spec.env.is_some(),
                "{}: a flag without a variable or the reverse",
                spec.name
            );
            if let (Some(flag), Some(var)) = (spec.flag, spec.env) {
                assert_eq!(flag.long, spec.name.replace('_', "-"));
                assert_eq!(var, format!("SYNCER_{}", spec.name.to_uppercase()));
            }
            assert!(
                spec.flag.is_some() || !spec.file_keys.is_empty(),
                "{} cannot be set at all",
                spec.name
            );
            assert!(
                !spec.help.ends_with('.'),
                "{}: the help adds the period",
                spec.name
            );
        }
    }

    #[test]
    fn help_shows_the_default() {
        assert_eq!(
            Id::ScPlugin.spec().help_text(),
            "Registry kind: servicecenter or eureka. [default: servicecenter]"
        );
        assert_eq!(
            Id::GossipLabel.spec().help_text(),
            "Label of the gossip pool: syncers only admit members with the same label, so \
             pools that share a network stay apart. [default: empty]"
        );
        assert!(!Id::JoinAddr.spec().help_text().contains("default"));
    }

    /// docs/CONFIG.md is the operator's reference: it names every flag, alias, variable and
    /// file key of the table.
    #[test]
    fn the_reference_names_every_setting() {
        let doc = include_str!("../../docs/CONFIG.md");
        for spec in SETTINGS {
            if let Some(flag) = spec.flag {
                assert!(
                    doc.contains(&format!("`--{}`", flag.long)),
                    "--{}",
                    flag.long
                );
                for alias in flag.aliases {
                    let (Alias::Visible(a) | Alias::Hidden(a)) = alias;
                    assert!(doc.contains(&format!("`--{a}`")), "--{a}");
                }
            }
            if let Some(var) = spec.env {
                assert!(doc.contains(&format!("`{var}`")), "{var}");
            }
            for key in spec.file_keys {
                let key = key.split('[').next().unwrap_or(key);
                assert!(doc.contains(key), "file key {key}");
            }
        }
    }
}

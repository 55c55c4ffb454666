//! The YAML configuration file (`--config FILE`).
//!
//! Accepts the keys of the original Syncer 1.4 (`etc/conf/syncer.yaml`, camelCase) and of 1.3
//! (snake_case), plus a few of our own; any other key is rejected. Keys the original declared
//! but never used are accepted and produce a warning. docs/CONFIG.md lists every key.

use std::path::Path;

use serde::Deserialize;

use super::{ConfigError, Layer, Origin};

/// A YAML scalar read as text: `port: 30192` and `port: "30192"` mean the same.
#[derive(Debug, Clone)]
pub struct Scalar(pub String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Scalar;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string, number or boolean")
            }
            fn visit_str<E>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(v.to_owned()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_bool<E>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// A list given either as a YAML sequence or as one comma-separated string.
#[derive(Debug, Clone)]
pub struct List(pub String);

impl<'de> Deserialize<'de> for List {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            One(Scalar),
            Many(Vec<Scalar>),
        }
        Ok(match Either::deserialize(deserializer)? {
            Either::One(s) => List(s.0),
            Either::Many(items) => {
                List(items.into_iter().map(|s| s.0).collect::<Vec<_>>().join(","))
            }
        })
    }
}

/// The whole file. Both generations of the original's keys share one struct, so a file may
/// use either (mixing them is allowed; where both name one setting, the 1.4 key wins).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FileConfig {
    // --- 1.4 keys ---
    mode: Option<Scalar>,
    node: Option<Scalar>,
    cluster: Option<Scalar>,
    data_dir: Option<Scalar>,
    listener: Option<Listener>,
    join: Option<Join>,
    task: Option<Task>,
    registry: Option<Registry>,
    tls_configs: Option<Vec<TlsConfig>>,
    // --- our own keys ---
    etcd: Option<Etcd>,
    log: Option<Log>,
    gossip: Option<Gossip>,
    sync: Option<SyncSection>,
    cluster_mode: Option<ClusterSection>,
    // --- 1.3 keys ---
    #[serde(rename = "log_file")]
    log_file: Option<Scalar>,
    #[serde(rename = "join_addr")]
    join_addr: Option<List>,
    #[serde(rename = "ticker_interval")]
    ticker_interval: Option<Scalar>,
    profile: Option<Scalar>,
    #[serde(rename = "enable_compression")]
    enable_compression: Option<Scalar>,
    #[serde(rename = "auto_sync")]
    auto_sync: Option<Scalar>,
    #[serde(rename = "tls_config")]
    tls_config: Option<TlsConfig13>,
    servicecenter: Option<ServiceCenter13>,
    #[serde(rename = "cluster_name")]
    cluster_name: Option<Scalar>,
    #[serde(rename = "cluster_port")]
    cluster_port: Option<Scalar>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Listener {
    bind_addr: Option<Scalar>,
    advertise_addr: Option<Scalar>,
    rpc_addr: Option<Scalar>,
    peer_addr: Option<Scalar>,
    admin_addr: Option<Scalar>,
    tls_mount: Option<TlsMount>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Join {
    enabled: Option<bool>,
    address: Option<List>,
    retry_max: Option<Scalar>,
    retry_interval: Option<Scalar>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Task {
    kind: Option<Scalar>,
    params: Option<Vec<TaskParam>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TaskParam {
    key: String,
    value: Scalar,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Registry {
    address: Option<List>,
    plugin: Option<Scalar>,
    tls_mount: Option<TlsMount>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsMount {
    enabled: Option<bool>,
    name: Option<Scalar>,
}

// Parsed so that the original's keys are accepted; TLS itself is not implemented.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct TlsConfig {
    name: Option<Scalar>,
    verify_peer: Option<bool>,
    min_version: Option<Scalar>,
    passphrase: Option<Scalar>,
    ca_file: Option<Scalar>,
    cert_file: Option<Scalar>,
    key_file: Option<Scalar>,
    ciphers: Option<Vec<Scalar>>,
}

// Parsed so that the original's keys are accepted; TLS itself is not implemented.
#[allow(dead_code)]
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsConfig13 {
    enabled: Option<bool>,
    verify_peer: Option<bool>,
    min_version: Option<Scalar>,
    passphrase: Option<Scalar>,
    ca_file: Option<Scalar>,
    cert_file: Option<Scalar>,
    key_file: Option<Scalar>,
    ciphers: Option<Vec<Scalar>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceCenter13 {
    addr: Option<List>,
    plugin: Option<Scalar>,
    tls_config: Option<TlsConfig13>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Etcd {
    endpoints: Option<List>,
}

/// `clusterMode:`, cluster mode beyond the original's keys.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClusterSection {
    size: Option<Scalar>,
    leader_lease: Option<Scalar>,
    etcd_bin: Option<Scalar>,
    etcd_client_port: Option<Scalar>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Gossip {
    profile: Option<Scalar>,
    label: Option<Scalar>,
}

/// `sync:`, the sync engine (named so as not to shadow the `Sync` trait).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SyncSection {
    removal_cap: Option<Scalar>,
    origin_grace: Option<Scalar>,
    keep_stale_copies: Option<Scalar>,
    copy_lease: Option<Scalar>,
    anti_entropy_interval: Option<Scalar>,
    poll_interval: Option<Scalar>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Log {
    format: Option<Scalar>,
    level: Option<Scalar>,
}

/// Reads and parses `path` into a settings layer plus warnings about accepted-but-unused keys.
///
/// # Errors
/// [`ConfigError::File`] when the file cannot be read, is not YAML, has an unknown key or a
/// value of the wrong type; [`ConfigError::Invalid`] when it enables TLS, which this version
/// does not implement (running in plain text instead would be a silent downgrade).
pub fn load(path: &Path) -> Result<(Layer, Vec<String>), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
        path: path.to_owned(),
        reason: format!("cannot read: {e}"),
    })?;
    // An empty file (or one holding only comments) is a valid, empty configuration.
    let file: FileConfig = if text.trim().is_empty() {
        FileConfig::default()
    } else {
        serde_yaml_ng::from_str(&text).map_err(|e| ConfigError::File {
            path: path.to_owned(),
            reason: e.to_string(),
        })?
    };
    file.into_layer(path)
}

impl FileConfig {
    fn into_layer(self, path: &Path) -> Result<(Layer, Vec<String>), ConfigError> {
        let mut layer = Layer::default();
        let mut warnings = Vec::new();
        let origin = |key: &str| Origin::File {
            path: path.to_owned(),
            key: key.to_owned(),
        };
        let set = |layer: &mut Layer, id: &'static str, key: &str, value: Option<String>| {
            if let Some(value) = value {
                layer.set(id, value, origin(key));
            }
        };
        let warn_unused = |warnings: &mut Vec<String>, key: &str, why: &str| {
            warnings.push(format!(
                "{}: {key} is accepted for compatibility but {why}",
                path.display()
            ));
        };

        // 1.3 keys first, so that 1.4 keys given in the same file win.
        set(
            &mut layer,
            "join_addr",
            "join_addr",
            self.join_addr.map(|l| l.0),
        );
        set(
            &mut layer,
            "cluster_name",
            "cluster_name",
            self.cluster_name.map(|s| s.0),
        );
        set(
            &mut layer,
            "cluster_port",
            "cluster_port",
            self.cluster_port.map(|s| s.0),
        );
        if let Some(seconds) = self.ticker_interval {
            // 1.3 gave the interval in seconds.
            let text = if seconds.0.chars().all(|c| c.is_ascii_digit()) {
                format!("{}s", seconds.0)
            } else {
                seconds.0
            };
            layer.set("resync_interval", text, origin("ticker_interval"));
        }
        if let Some(sc) = self.servicecenter {
            set(
                &mut layer,
                "sc_addr",
                "servicecenter.addr",
                sc.addr.map(|l| l.0),
            );
            set(
                &mut layer,
                "sc_plugin",
                "servicecenter.plugin",
                sc.plugin.map(|s| s.0),
            );
            check_tls13(
                sc.tls_config,
                "servicecenter.tls_config",
                path,
                &mut warnings,
            )?;
        }
        check_tls13(self.tls_config, "tls_config", path, &mut warnings)?;
        for (key, value) in [
            ("log_file", self.log_file.is_some()),
            ("enable_compression", self.enable_compression.is_some()),
            ("auto_sync", self.auto_sync.is_some()),
        ] {
            if value {
                warn_unused(
                    &mut warnings,
                    key,
                    "has no effect (it had none in Syncer 1.3 either)",
                );
            }
        }

        // 1.4 keys.
        set(&mut layer, "mode", "mode", self.mode.map(|s| s.0));
        set(&mut layer, "node", "node", self.node.map(|s| s.0));
        set(
            &mut layer,
            "cluster_name",
            "cluster",
            self.cluster.map(|s| s.0),
        );
        set(
            &mut layer,
            "data_dir",
            "dataDir",
            self.data_dir.map(|s| s.0),
        );
        if let Some(listener) = self.listener {
            set(
                &mut layer,
                "bind_addr",
                "listener.bindAddr",
                listener.bind_addr.map(|s| s.0),
            );
            set(
                &mut layer,
                "rpc_addr",
                "listener.rpcAddr",
                listener.rpc_addr.map(|s| s.0),
            );
            set(
                &mut layer,
                "peer_addr",
                "listener.peerAddr",
                listener.peer_addr.map(|s| s.0),
            );
            set(
                &mut layer,
                "admin_addr",
                "listener.adminAddr",
                listener.admin_addr.map(|s| s.0),
            );
            // Declared but never used by the original; syncer uses it as --advertise-addr. The
            // original's sample leaves it empty, which means "not set".
            let advertise = listener
                .advertise_addr
                .map(|s| s.0)
                .filter(|s| !s.trim().is_empty());
            set(
                &mut layer,
                "advertise_addr",
                "listener.advertiseAddr",
                advertise,
            );
            check_mount(listener.tls_mount, "listener.tlsMount", path, &mut warnings)?;
        }
        if let Some(join) = self.join {
            let address = join.address.map(|l| l.0).filter(|s| !s.trim().is_empty());
            match (join.enabled, address) {
                (Some(false), Some(address)) => warnings.push(format!(
                    "{}: join.enabled is false, so join.address '{address}' is not used",
                    path.display()
                )),
                (_, address) => set(&mut layer, "join_addr", "join.address", address),
            }
            if join.retry_max.is_some() {
                warn_unused(
                    &mut warnings,
                    "join.retryMax",
                    "is not used: syncer retries joining with back-off until it succeeds",
                );
            }
            if join.retry_interval.is_some() {
                warn_unused(
                    &mut warnings,
                    "join.retryInterval",
                    "is not used: syncer retries joining with back-off until it succeeds",
                );
            }
        }
        if let Some(task) = self.task {
            set(&mut layer, "task_kind", "task.kind", task.kind.map(|s| s.0));
            for param in task.params.unwrap_or_default() {
                if param.key == "interval" {
                    layer.set(
                        "resync_interval",
                        param.value.0,
                        origin("task.params[interval]"),
                    );
                } else {
                    return Err(ConfigError::Invalid {
                        origin: origin("task.params"),
                        value: param.key,
                        reason: "unknown task parameter (the only one is 'interval')".into(),
                    });
                }
            }
        }
        if let Some(registry) = self.registry {
            set(
                &mut layer,
                "sc_addr",
                "registry.address",
                registry.address.map(|l| l.0),
            );
            set(
                &mut layer,
                "sc_plugin",
                "registry.plugin",
                registry.plugin.map(|s| s.0),
            );
            check_mount(registry.tls_mount, "registry.tlsMount", path, &mut warnings)?;
        }
        if let Some(configs) = self.tls_configs
            && !configs.is_empty()
        {
            let names: Vec<String> = configs
                .iter()
                .filter_map(|c| c.name.as_ref().map(|n| n.0.clone()))
                .collect();
            let used = configs.iter().any(|c| {
                c.verify_peer.is_some()
                    || c.min_version.is_some()
                    || c.passphrase.is_some()
                    || c.ca_file.is_some()
                    || c.cert_file.is_some()
                    || c.key_file.is_some()
                    || c.ciphers.is_some()
            });
            let what = if used { "TLS settings" } else { "entries" };
            warn_unused(
                &mut warnings,
                &format!("tlsConfigs ({what} {})", names.join(", ")),
                "is not used: TLS is not supported by this version",
            );
        }
        if let Some(etcd) = self.etcd {
            set(
                &mut layer,
                "etcd_endpoints",
                "etcd.endpoints",
                etcd.endpoints.map(|l| l.0),
            );
        }
        if let Some(log) = self.log {
            set(
                &mut layer,
                "log_format",
                "log.format",
                log.format.map(|s| s.0),
            );
            set(&mut layer, "log_level", "log.level", log.level.map(|s| s.0));
        }
        // 1.3 declared `profile` (memberlist's lan/wan/local) without using it; it now picks
        // the gossip timing, as `gossip.profile` does.
        set(
            &mut layer,
            "gossip_profile",
            "profile",
            self.profile.map(|s| s.0),
        );
        if let Some(gossip) = self.gossip {
            set(
                &mut layer,
                "gossip_profile",
                "gossip.profile",
                gossip.profile.map(|s| s.0),
            );
            set(
                &mut layer,
                "gossip_label",
                "gossip.label",
                gossip.label.map(|s| s.0),
            );
        }
        if let Some(c) = self.cluster_mode {
            for (id, key, value) in [
                ("cluster_size", "size", c.size),
                ("leader_lease", "leader_lease", c.leader_lease),
                ("etcd_bin", "etcd_bin", c.etcd_bin),
                ("etcd_client_port", "etcd_client_port", c.etcd_client_port),
            ] {
                set(
                    &mut layer,
                    id,
                    &format!("clusterMode.{key}"),
                    value.map(|s| s.0),
                );
            }
        }
        if let Some(sync) = self.sync {
            for (id, value) in [
                ("removal_cap", sync.removal_cap),
                ("origin_grace", sync.origin_grace),
                ("keep_stale_copies", sync.keep_stale_copies),
                ("copy_lease", sync.copy_lease),
                ("anti_entropy_interval", sync.anti_entropy_interval),
                ("poll_interval", sync.poll_interval),
            ] {
                set(&mut layer, id, &format!("sync.{id}"), value.map(|s| s.0));
            }
        }
        Ok((layer, warnings))
    }
}

/// A TLS mount that is enabled cannot be honoured: refuse rather than run in plain text.
fn check_mount(
    mount: Option<TlsMount>,
    key: &str,
    path: &Path,
    warnings: &mut Vec<String>,
) -> Result<(), ConfigError> {
    let Some(mount) = mount else { return Ok(()) };
    if mount.enabled == Some(true) {
        return Err(ConfigError::Invalid {
            origin: Origin::File {
                path: path.to_owned(),
                key: format!("{key}.enabled"),
            },
            value: "true".into(),
            reason: "TLS is not supported by this version of syncer".into(),
        });
    }
    if mount.name.is_some() {
        warnings.push(format!(
            "{}: {key}.name is not used while TLS is disabled",
            path.display()
        ));
    }
    Ok(())
}

fn check_tls13(
    tls: Option<TlsConfig13>,
    key: &str,
    path: &Path,
    warnings: &mut Vec<String>,
) -> Result<(), ConfigError> {
    let Some(tls) = tls else { return Ok(()) };
    if tls.enabled == Some(true) {
        return Err(ConfigError::Invalid {
            origin: Origin::File {
                path: path.to_owned(),
                key: format!("{key}.enabled"),
            },
            value: "true".into(),
            reason: "TLS is not supported by this version of syncer".into(),
        });
    }
    warnings.push(format!(
        "{}: {key} is not used: TLS is not supported by this version",
        path.display()
    ));
    Ok(())
}

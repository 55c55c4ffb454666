//! The TLS blocks of the YAML file, mapped onto the TLS settings of the table.
//!
//! - 1.4: `listener.tlsMount` (the rpc link) and `registry.tlsMount` (the registry client),
//!   each `{enabled, name}` naming an entry of `tlsConfigs[]` (`name`, `verifyPeer`,
//!   `minVersion`, `passphrase`, `caFile`, `certFile`, `keyFile`, `ciphers`).
//! - 1.3: `tls_config` (the rpc link, off unless `enabled: true`) and
//!   `servicecenter.tls_config` (the registry client, on unless `enabled: false`, as 1.3's
//!   defaults had it), with the same fields in snake_case.
//!
//! An enabled block sets the same settings as the flags (`tls_cert`, `sc_tls_ca`, ...), in
//! the file's layer, so flags and variables still win and every check of those settings
//! (files read at start, a key of another certificate, a wrong passphrase) applies unchanged.
//! A file that does not exist where it is named is looked for where the original looked:
//! `$SSL_ROOT/<name>/<file>`, then `./certs/<name>/<file>`, `<name>` being the entry's name
//! (1.3: `syncer` and `servicecenter`).
//!
//! Not carried over from the original: 1.4's mix-up that looked the registry's entry up by the
//! listener's name, and its merge that turned every `tlsMount.enabled` back to false (so TLS
//! from the 1.4 file never took effect there).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::scalar::Scalar;
use super::settings::Id;
use super::{ConfigError, Layer, Origin};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TlsMount {
    enabled: Option<bool>,
    name: Option<Scalar>,
}

/// An entry of `tlsConfigs[]` (1.4).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct TlsConfig {
    name: Option<Scalar>,
    verify_peer: Option<bool>,
    min_version: Option<Scalar>,
    passphrase: Option<Scalar>,
    ca_file: Option<Scalar>,
    cert_file: Option<Scalar>,
    key_file: Option<Scalar>,
    ciphers: Option<Vec<Scalar>>,
}

/// A 1.3 block (`tls_config`, `servicecenter.tls_config`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TlsConfig13 {
    enabled: Option<bool>,
    verify_peer: Option<bool>,
    min_version: Option<Scalar>,
    passphrase: Option<Scalar>,
    ca_file: Option<Scalar>,
    cert_file: Option<Scalar>,
    key_file: Option<Scalar>,
    ciphers: Option<Vec<Scalar>>,
}

/// Which link a block is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    /// The rpc link between syncers.
    Rpc,
    /// The registry client.
    Registry,
}

impl Link {
    /// The link of a block's key.
    fn of(key: &str) -> Link {
        if key.starts_with("listener") || key == "tls_config" {
            Link::Rpc
        } else {
            Link::Registry
        }
    }

    /// The entry a 1.4 mount names when it names none, as in the original's sample file; also
    /// the folder of the file fallback for 1.3.
    fn default_name(self) -> &'static str {
        match self {
            Link::Rpc => "syncer",
            Link::Registry => "servicecenter",
        }
    }

    /// The settings of this link's TLS block, in the order of [`fields`]' texts: CA,
    /// certificate, key, passphrase, minimum version; then the ciphers.
    fn ids(self) -> ([Id; 5], Id) {
        match self {
            Link::Rpc => (
                [
                    Id::TlsCa,
                    Id::TlsCert,
                    Id::TlsKey,
                    Id::TlsKeyPassphrase,
                    Id::TlsMinVersion,
                ],
                Id::TlsCiphers,
            ),
            Link::Registry => (
                [
                    Id::ScTlsCa,
                    Id::ScTlsCert,
                    Id::ScTlsKey,
                    Id::ScTlsKeyPassphrase,
                    Id::ScTlsMinVersion,
                ],
                Id::ScTlsCiphers,
            ),
        }
    }
}

/// The TLS keys a file holds, gathered while it is read (in any order), mapped at the end.
#[derive(Debug, Default)]
pub(super) struct TlsBlocks {
    mounts: Vec<(&'static str, TlsMount)>,
    configs: Option<(&'static str, Vec<TlsConfig>)>,
    blocks13: Vec<(&'static str, TlsConfig13)>,
}

/// One field of a block: the value, the key that named it (for messages) and its setting.
struct Field {
    id: Id,
    key: String,
    value: String,
}

impl TlsBlocks {
    pub(super) fn mount(&mut self, key: &'static str, mount: TlsMount) {
        self.mounts.push((key, mount));
    }

    pub(super) fn configs(&mut self, key: &'static str, configs: Vec<TlsConfig>) {
        self.configs = Some((key, configs));
    }

    pub(super) fn block13(&mut self, key: &'static str, block: TlsConfig13) {
        self.blocks13.push((key, block));
    }

    /// Sets the settings of every enabled block into `layer`, and says what is not used.
    ///
    /// `registry_addresses` is the file's `registry.address` / `servicecenter.addr`, if
    /// any, to warn when registry TLS is enabled for addresses that are all `http://`.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] for a mount naming no entry of `tlsConfigs`, or an entry
    /// without a name while several exist.
    pub(super) fn apply(
        self,
        path: &Path,
        registry_addresses: Option<&str>,
        layer: &mut Layer,
        warnings: &mut Vec<String>,
    ) -> Result<(), ConfigError> {
        let (configs_key, configs) = self.configs.unwrap_or(("tlsConfigs", Vec::new()));
        let names: Vec<String> = configs
            .iter()
            .map(|c| c.name.as_ref().map(|n| n.0.clone()).unwrap_or_default())
            .collect();
        let mut used = vec![false; configs.len()];
        let mut enabled = Vec::new();

        for (key, mount) in self.mounts {
            let link = Link::of(key);
            if mount.enabled != Some(true) {
                if mount.name.is_some() {
                    warnings.push(format!(
                        "{}: {key}.name is not used while {key}.enabled is not true",
                        path.display()
                    ));
                }
                continue;
            }
            let name = mount
                .name
                .map(|n| n.0)
                .filter(|n| !n.trim().is_empty())
                .unwrap_or_else(|| link.default_name().to_owned());
            let Some(at) = names.iter().position(|n| *n == name) else {
                return Err(ConfigError::Invalid {
                    origin: Origin::File {
                        path: path.to_owned(),
                        key: format!("{key}.name"),
                    },
                    value: name,
                    reason: if names.is_empty() {
                        format!("{configs_key} has no entry of that name (it has none)")
                    } else {
                        format!(
                            "{configs_key} has no entry of that name (it has: {})",
                            names.join(", ")
                        )
                    },
                });
            };
            used[at] = true;
            let f = &configs[at];
            let prefix = format!("{configs_key}[{name}]");
            let fields = fields(
                link,
                &prefix,
                &name,
                [
                    ("caFile", &f.ca_file),
                    ("certFile", &f.cert_file),
                    ("keyFile", &f.key_file),
                    ("passphrase", &f.passphrase),
                    ("minVersion", &f.min_version),
                ],
                ("ciphers", &f.ciphers),
                ("verifyPeer", f.verify_peer),
            );
            enabled.push((key, link, fields));
        }
        for (at, was_used) in used.iter().enumerate() {
            if !was_used {
                warnings.push(format!(
                    "{}: {configs_key} entry '{}' is not used: no enabled tlsMount names it",
                    path.display(),
                    names[at]
                ));
            }
        }

        for (key, block) in self.blocks13 {
            let link = Link::of(key);
            // 1.3's defaults had TLS on for the registry client (used only for https://
            // addresses) and off for the rpc link.
            let on = match link {
                Link::Rpc => block.enabled == Some(true),
                Link::Registry => block.enabled != Some(false),
            };
            if !on {
                warnings.push(format!(
                    "{}: {key} is not used while {key}.enabled is false",
                    path.display()
                ));
                continue;
            }
            let fields = fields(
                link,
                key,
                link.default_name(),
                [
                    ("ca_file", &block.ca_file),
                    ("cert_file", &block.cert_file),
                    ("key_file", &block.key_file),
                    ("passphrase", &block.passphrase),
                    ("min_version", &block.min_version),
                ],
                ("ciphers", &block.ciphers),
                ("verify_peer", block.verify_peer),
            );
            enabled.push((key, link, fields));
        }

        let mut seen: Vec<(Link, &str)> = Vec::new();
        for (key, link, fields) in enabled {
            if let Some((_, other)) = seen.iter().find(|(l, _)| *l == link) {
                return Err(ConfigError::Invalid {
                    origin: Origin::File {
                        path: path.to_owned(),
                        key: key.to_owned(),
                    },
                    value: "enabled".into(),
                    reason: format!(
                        "{other} already sets the TLS of this link: enable one of them"
                    ),
                });
            }
            seen.push((link, key));
            // TLS on the rpc link needs this syncer's own certificate: without one the block
            // would turn into plain text, a silent downgrade.
            if link == Link::Rpc
                && !(fields.iter().any(|f| f.id == Id::TlsCert)
                    && fields.iter().any(|f| f.id == Id::TlsKey))
            {
                let (cert, key_file) = if key == "tls_config" {
                    ("cert_file", "key_file")
                } else {
                    ("certFile", "keyFile")
                };
                return Err(ConfigError::Invalid {
                    origin: Origin::File {
                        path: path.to_owned(),
                        key: format!("{key}.enabled"),
                    },
                    value: "true".into(),
                    reason: format!(
                        "TLS of the rpc link needs this syncer's certificate and key: give \
                         both {cert} and {key_file} in its TLS block"
                    ),
                });
            }
            if link == Link::Registry
                && let Some(addresses) = registry_addresses
                && !addresses
                    .split(',')
                    .any(|a| a.trim().to_ascii_lowercase().starts_with("https://"))
            {
                warnings.push(format!(
                    "{}: {key} is enabled, but TLS is used only for https:// registry \
                     addresses and the file gives none ({addresses})",
                    path.display()
                ));
            }
            for field in fields {
                layer.set(
                    field.id,
                    field.value,
                    Origin::File {
                        path: path.to_owned(),
                        key: field.key,
                    },
                );
            }
        }
        Ok(())
    }
}

/// The settings one enabled block gives: files (found through the original's fallback
/// folders), passphrase, minimum version, ciphers, and peer verification.
fn fields(
    link: Link,
    prefix: &str,
    name: &str,
    texts: [(&str, &Option<Scalar>); 5],
    ciphers: (&str, &Option<Vec<Scalar>>),
    verify_peer: (&str, Option<bool>),
) -> Vec<Field> {
    let (ids, ciphers_id) = link.ids();
    let mut out = Vec::new();
    for (at, (field, value)) in texts.into_iter().enumerate() {
        let Some(Scalar(value)) = value else { continue };
        if value.trim().is_empty() {
            continue;
        }
        let value = if at < 3 {
            locate(value, name).display().to_string()
        } else {
            value.clone()
        };
        out.push(Field {
            id: ids[at],
            key: format!("{prefix}.{field}"),
            value,
        });
    }
    if let (field, Some(list)) = ciphers {
        let list: Vec<&str> = list
            .iter()
            .map(|s| s.0.trim())
            .filter(|s| !s.is_empty())
            .collect();
        if !list.is_empty() {
            out.push(Field {
                id: ciphers_id,
                key: format!("{prefix}.{field}"),
                value: list.join(","),
            });
        }
    }
    if let (field, Some(verify)) = verify_peer {
        let (id, value) = match link {
            Link::Rpc => (Id::TlsVerifyPeer, verify),
            // Not verifying the registry is the explicit insecure switch (and its warning).
            Link::Registry => (Id::ScTlsInsecure, !verify),
        };
        out.push(Field {
            id,
            key: format!("{prefix}.{field}"),
            value: value.to_string(),
        });
    }
    out
}

/// Where a file named in a TLS block is: as given when it exists there, else under
/// `$SSL_ROOT/<name>/` or `./certs/<name>/` (by its file name), as the original looked;
/// as given when it is in none of them, so that the error at start names what the file says.
fn locate(given: &str, name: &str) -> PathBuf {
    let roots: Vec<PathBuf> = std::env::var_os("SSL_ROOT")
        .map(PathBuf::from)
        .into_iter()
        .chain([PathBuf::from("./certs")])
        .collect();
    locate_in(given, name, &roots)
}

fn locate_in(given: &str, name: &str, roots: &[PathBuf]) -> PathBuf {
    let path = PathBuf::from(given.trim());
    if path.exists() {
        return path;
    }
    let Some(file) = path.file_name() else {
        return path;
    };
    roots
        .iter()
        .map(|root| root.join(name).join(file))
        .find(|candidate| candidate.exists())
        .unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use super::super::file;
    use super::*;

    fn read(text: &str) -> Result<(Layer, Vec<String>), ConfigError> {
        file::read_text(text, Path::new("t.yaml"))
    }

    fn value(layer: &Layer, id: Id) -> Option<(String, String)> {
        layer
            .get(id)
            .map(|s| (s.value.clone(), s.origin.to_string()))
    }

    const SAMPLE_14: &str = "\
listener:
  tlsMount:
    enabled: true
    name: syncer
registry:
  address: https://10.0.0.1:30100
  tlsMount:
    enabled: true
    name: servicecenter
tlsConfigs:
  - name: syncer
    verifyPeer: true
    minVersion: TLSv1.2
    passphrase: s3cret
    caFile: /pki/ca.pem
    certFile: /pki/node.pem
    keyFile: /pki/node-key.pem
    ciphers:
      - TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384
      - TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
  - name: servicecenter
    verifyPeer: false
    caFile: /pki/sc-ca.pem
  - name: spare
";

    #[test]
    fn the_1_4_mounts_set_the_settings_of_their_entries() {
        let (layer, warnings) = read(SAMPLE_14).expect("read");
        let entry = |field: &str| format!("tlsConfigs[syncer].{field} in t.yaml");
        assert_eq!(
            value(&layer, Id::TlsCert),
            Some(("/pki/node.pem".into(), entry("certFile")))
        );
        assert_eq!(
            value(&layer, Id::TlsKey),
            Some(("/pki/node-key.pem".into(), entry("keyFile")))
        );
        assert_eq!(
            value(&layer, Id::TlsCa),
            Some(("/pki/ca.pem".into(), entry("caFile")))
        );
        assert_eq!(
            value(&layer, Id::TlsKeyPassphrase),
            Some(("s3cret".into(), entry("passphrase")))
        );
        assert_eq!(
            value(&layer, Id::TlsMinVersion),
            Some(("TLSv1.2".into(), entry("minVersion")))
        );
        assert_eq!(
            value(&layer, Id::TlsCiphers).map(|v| v.0),
            Some(
                "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"
                    .into()
            )
        );
        assert_eq!(
            value(&layer, Id::TlsVerifyPeer).map(|v| v.0),
            Some("true".into())
        );
        // The registry's entry: its CA, and verifyPeer: false is the insecure switch.
        assert_eq!(
            value(&layer, Id::ScTlsCa).map(|v| v.0),
            Some("/pki/sc-ca.pem".into())
        );
        assert_eq!(
            value(&layer, Id::ScTlsInsecure),
            Some((
                "true".into(),
                "tlsConfigs[servicecenter].verifyPeer in t.yaml".into()
            ))
        );
        assert!(value(&layer, Id::ScTlsCert).is_none());
        let all = warnings.join("\n");
        assert!(
            all.contains("tlsConfigs entry 'spare' is not used"),
            "{all}"
        );
        assert!(!all.contains("https://"), "{all}");
    }

    #[test]
    fn a_mount_names_an_entry_that_exists() {
        let err = read("listener:\n  tlsMount:\n    enabled: true\n    name: grpc\ntlsConfigs:\n  - name: syncer\n    certFile: a\n    keyFile: b\n")
            .expect_err("no such entry")
            .to_string();
        assert!(
            err.contains("listener.tlsMount.name")
                && err.contains("grpc")
                && err.contains("it has: syncer"),
            "{err}"
        );
        // Without a name, the mount takes the entry the original's sample gives it.
        let (layer, _) = read("listener:\n  tlsMount:\n    enabled: true\ntlsConfigs:\n  - name: syncer\n    certFile: a\n    keyFile: b\n")
            .expect("default name");
        assert_eq!(value(&layer, Id::TlsCert).map(|v| v.0), Some("a".into()));
    }

    #[test]
    fn disabled_mounts_set_nothing_and_say_so() {
        let (layer, warnings) = read("listener:\n  tlsMount:\n    enabled: false\n    name: syncer\ntlsConfigs:\n  - name: syncer\n    certFile: a\n    keyFile: b\n")
            .expect("read");
        assert_eq!(layer.iter().count(), 0);
        let all = warnings.join("\n");
        assert!(all.contains("listener.tlsMount.name is not used"), "{all}");
        assert!(all.contains("'syncer' is not used"), "{all}");
    }

    /// Enabling TLS of the rpc link without this syncer's own certificate would be plain text:
    /// refused, naming the block.
    #[test]
    fn rpc_tls_without_a_certificate_is_refused() {
        let err = read("tls_config:\n  enabled: true\n  ca_file: /pki/ca.pem\n")
            .expect_err("no cert")
            .to_string();
        assert!(
            err.contains("tls_config.enabled") && err.contains("cert_file and key_file"),
            "{err}"
        );
        let err = read("listener:\n  tlsMount:\n    enabled: true\ntlsConfigs:\n  - name: syncer\n    certFile: a\n")
            .expect_err("no key")
            .to_string();
        assert!(err.contains("certFile and keyFile"), "{err}");
    }

    #[test]
    fn the_1_3_blocks_set_the_same_settings() {
        let (layer, warnings) = read(
            "tls_config:\n  enabled: true\n  verify_peer: false\n  min_version: TLSv1.3\n  \
             cert_file: /c/n.pem\n  key_file: /c/k.pem\n  ca_file: /c/ca.pem\n\
             servicecenter:\n  addr: http://10.0.0.1:30100\n  tls_config:\n    ca_file: /c/sc.pem\n",
        )
        .expect("read");
        assert_eq!(
            value(&layer, Id::TlsCert),
            Some(("/c/n.pem".into(), "tls_config.cert_file in t.yaml".into()))
        );
        assert_eq!(
            value(&layer, Id::TlsVerifyPeer).map(|v| v.0),
            Some("false".into())
        );
        assert_eq!(
            value(&layer, Id::TlsMinVersion).map(|v| v.0),
            Some("TLSv1.3".into())
        );
        // 1.3 had the registry block on unless it said otherwise.
        assert_eq!(
            value(&layer, Id::ScTlsCa),
            Some((
                "/c/sc.pem".into(),
                "servicecenter.tls_config.ca_file in t.yaml".into()
            ))
        );
        let all = warnings.join("\n");
        assert!(
            all.contains("servicecenter.tls_config is enabled, but TLS is used only for https://"),
            "{all}"
        );
        let (layer, warnings) =
            read("servicecenter:\n  tls_config:\n    enabled: false\n    ca_file: x\n")
                .expect("read");
        assert!(value(&layer, Id::ScTlsCa).is_none());
        assert!(warnings.join("\n").contains("is not used"), "{warnings:?}");
    }

    #[test]
    fn one_link_takes_one_block() {
        let err = read(
            "tls_config:\n  enabled: true\n  cert_file: a\n  key_file: b\n\
             listener:\n  tlsMount:\n    enabled: true\n\
             tlsConfigs:\n  - name: syncer\n    certFile: a\n    keyFile: b\n",
        )
        .expect_err("two blocks")
        .to_string();
        assert!(err.contains("already sets the TLS of this link"), "{err}");
    }

    #[test]
    fn files_are_found_where_the_original_looked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().to_owned();
        std::fs::create_dir_all(root.join("syncer")).expect("mkdir");
        std::fs::write(root.join("syncer").join("server.cer"), "x").expect("write");
        let roots = [root.join("nowhere"), root.clone()];
        // Named by a path that does not exist: found by its file name under <root>/<name>/.
        assert_eq!(
            locate_in("/etc/missing/server.cer", "syncer", &roots),
            root.join("syncer").join("server.cer")
        );
        // In none of them: as given, so that the error names it.
        assert_eq!(
            locate_in("/etc/missing/other.cer", "syncer", &roots),
            PathBuf::from("/etc/missing/other.cer")
        );
        // Existing as given: as given.
        let here = root.join("syncer").join("server.cer");
        assert_eq!(
            locate_in(&here.display().to_string(), "servicecenter", &roots),
            here
        );
    }
}

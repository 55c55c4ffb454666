//! TLS of the rpc link, on syncer's own rustls configurations (`crate::tls`): the
//! certificate files, checked when they are loaded so that bad input stops the daemon before
//! anything binds, the server and client configurations made from them, and their reload.
//!
//! With a certificate and key, the rpc listener serves TLS only: a plain-text call cannot
//! even start. With a CA as well, the listener asks every caller for a certificate signed by
//! that CA (mutual TLS; `--tls-verify-peer=false` stops asking) and this syncer verifies the
//! servers it calls against the same CA; without one, servers are verified against the
//! public web PKI roots. The node presents its own certificate when it calls others, so one
//! pair serves both directions.
//!
//! [`RpcTls::reload`] reads the files again: a good set replaces the configurations used
//! by every new handshake, both ways; connections already open keep theirs. A bad set keeps
//! the previous configurations.

use std::collections::hash_map::DefaultHasher;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustls::{ClientConfig, ServerConfig};

pub use crate::tls::TlsError;
use crate::tls::reload::Reloadable;
use crate::tls::{self, Current, Identity, TlsOptions, pem};

/// The variable the client commands (`syncer members`, `syncer keyring`) read the passphrase
/// of an encrypted `--tls-key` from, as the daemon does.
pub const TLS_KEY_PASSPHRASE_ENV: &str = "SYNCER_TLS_KEY_PASSPHRASE";

/// The files and settings of the rpc link's TLS (`--tls-*`).
#[derive(Clone)]
pub struct RpcTlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: Option<PathBuf>,
    /// Passphrase of an encrypted key.
    pub passphrase: Option<String>,
    /// With a CA: callers must present a certificate signed by it.
    pub verify_peer: bool,
    pub options: TlsOptions,
}

impl RpcTlsFiles {
    /// `cert`, `key` and `ca` with the defaults: no passphrase, callers verified, TLS 1.2
    /// and later with rustls' suites.
    pub fn new(cert: &Path, key: &Path, ca: Option<&Path>) -> RpcTlsFiles {
        RpcTlsFiles {
            cert: cert.to_owned(),
            key: key.to_owned(),
            ca: ca.map(Path::to_owned),
            passphrase: None,
            verify_peer: true,
            options: TlsOptions::default(),
        }
    }
}

/// The TLS settings of a syncer's rpc listener and of its calls to other syncers. Clones
/// share the configurations: a reload through one is seen by all.
#[derive(Clone)]
pub struct RpcTls {
    files: Arc<RpcTlsFiles>,
    server: Current<ServerConfig>,
    client: ClientTls,
    /// A digest of the files' contents as last read, to tell a change.
    seen: Arc<Mutex<u64>>,
}

/// The TLS side of calls to other syncers (the daemon's and the client commands'). Clones
/// share the configuration.
#[derive(Clone)]
pub struct ClientTls {
    config: Current<ClientConfig>,
    certificate: bool,
    ca: bool,
}

// Key material stays out of logs and `--check`.
impl fmt::Debug for RpcTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RpcTls")
            .field("cert", &self.files.cert)
            .field("verifies_peers", &self.verifies_peers())
            .field("options", &self.files.options)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("certificate", &self.certificate)
            .field("ca", &self.ca)
            .finish_non_exhaustive()
    }
}

/// The contents of the files of one load.
struct Contents {
    cert: Vec<u8>,
    key: Vec<u8>,
    ca: Option<Vec<u8>>,
}

impl Contents {
    fn read(files: &RpcTlsFiles) -> Result<Contents, TlsError> {
        Ok(Contents {
            cert: pem::read(pem::RPC.cert, &files.cert)?,
            key: pem::read(pem::RPC.key, &files.key)?,
            ca: files
                .ca
                .as_deref()
                .map(|path| pem::read(pem::RPC.ca, path))
                .transpose()?,
        })
    }

    fn digest(&self) -> u64 {
        let mut hasher = DefaultHasher::new();
        (&self.cert, &self.key, &self.ca).hash(&mut hasher);
        hasher.finish()
    }
}

/// The digest of `files`' contents, or of why they cannot be read.
fn digest_of(files: &RpcTlsFiles) -> u64 {
    crate::tls::reload::digest_of_read(Contents::read(files), Contents::digest)
}

/// Both configurations from `contents`.
fn build(
    files: &RpcTlsFiles,
    contents: &Contents,
) -> Result<(ServerConfig, ClientConfig), TlsError> {
    let names = &pem::RPC;
    let identity = Identity {
        certs: pem::certificates(names.cert, &files.cert, &contents.cert)?,
        key: Arc::new(pem::private_key(
            names,
            &files.key,
            &contents.key,
            files.passphrase.as_deref(),
        )?),
        cert_path: files.cert.clone(),
        key_path: files.key.clone(),
    };
    let roots = match (&files.ca, &contents.ca) {
        (Some(path), Some(pem)) => Some(tls::roots(names.ca, path, pem)?),
        _ => None,
    };
    let client_roots = if files.verify_peer {
        roots.clone()
    } else {
        None
    };
    let server = tls::server_config(names, &files.options, &identity, client_roots)?;
    let client = tls::client_config(
        names,
        &files.options,
        roots.unwrap_or_else(tls::webpki_roots),
        Some(&identity),
    )?;
    Ok((server, client))
}

impl RpcTls {
    /// Reads and checks the files.
    ///
    /// # Errors
    /// A [`TlsError`] naming the file: unreadable, without a certificate (the certificate
    /// and the CA), without a key, an encrypted key without its passphrase or with a wrong
    /// one, or a key that does not match the certificate.
    pub fn load(files: RpcTlsFiles) -> Result<RpcTls, TlsError> {
        let contents = Contents::read(&files)?;
        let (server, client) = build(&files, &contents)?;
        let ca = files.ca.is_some();
        Ok(RpcTls {
            seen: Arc::new(Mutex::new(contents.digest())),
            files: Arc::new(files),
            server: Current::new(server),
            client: ClientTls {
                config: Current::new(client),
                certificate: true,
                ca,
            },
        })
    }

    /// Whether callers must present a certificate signed by the CA (mutual TLS).
    pub fn verifies_peers(&self) -> bool {
        self.files.ca.is_some() && self.files.verify_peer
    }

    /// The files this configuration is made of (certificate, key, CA).
    pub fn files(&self) -> &RpcTlsFiles {
        &self.files
    }

    /// The listener's configuration in force: this node's certificate, and the CA every
    /// caller's certificate must be signed by when callers are verified.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.server.get()
    }

    /// The client side of this node's calls: its own certificate, and the CA. It follows
    /// the reloads of `self`.
    pub fn client(&self) -> ClientTls {
        self.client.clone()
    }

    /// Reads the files again and, when they make good configurations, puts those in force
    /// for every new handshake. On error the configurations in force stay.
    ///
    /// # Errors
    /// The [`TlsError`] of [`RpcTls::load`].
    pub fn reload(&self) -> Result<(), TlsError> {
        let contents = Contents::read(&self.files);
        let digest = match &contents {
            Ok(contents) => contents.digest(),
            Err(_) => digest_of(&self.files),
        };
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = digest;
        let (server, client) = build(&self.files, &contents?)?;
        self.server.set(server);
        self.client.config.set(client);
        Ok(())
    }

    /// Whether the files' contents differ from when they were last read (by [`load`] or
    /// [`reload`]). Reads the files, following symbolic links, so that a Kubernetes secret
    /// volume's swap of its link counts as a change.
    ///
    /// [`load`]: RpcTls::load
    /// [`reload`]: RpcTls::reload
    pub fn changed(&self) -> bool {
        digest_of(&self.files) != *self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Reloadable for RpcTls {
    fn name(&self) -> &'static str {
        "rpc"
    }

    fn changed(&self) -> bool {
        RpcTls::changed(self)
    }

    fn reload(&self) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        RpcTls::reload(self).map_err(Into::into)
    }
}

impl ClientTls {
    /// The TLS of a client command from its `--tls-cert`, `--tls-key` and `--tls-ca` and the
    /// key's passphrase: `None` (plain text) when no file is given.
    ///
    /// # Errors
    /// [`TlsError::Incomplete`] for a certificate without its key or the reverse, and the
    /// errors of [`RpcTls::load`].
    pub fn load(
        cert: Option<&Path>,
        key: Option<&Path>,
        ca: Option<&Path>,
        passphrase: Option<&str>,
    ) -> Result<Option<ClientTls>, TlsError> {
        let names = &pem::RPC;
        let identity = match (cert, key) {
            (Some(cert), Some(key)) => Some(Identity::load(names, cert, key, passphrase)?),
            (None, None) => None,
            _ => return Err(TlsError::Incomplete),
        };
        let roots = ca
            .map(|path| tls::roots(names.ca, path, &pem::read(names.ca, path)?))
            .transpose()?;
        if identity.is_none() && roots.is_none() {
            return Ok(None);
        }
        let config = tls::client_config(
            names,
            &TlsOptions::default(),
            roots.unwrap_or_else(tls::webpki_roots),
            identity.as_ref(),
        )?;
        Ok(Some(ClientTls {
            config: Current::new(config),
            certificate: identity.is_some(),
            ca: ca.is_some(),
        }))
    }

    /// A client of an existing configuration (tests' probes).
    pub fn from_config(config: ClientConfig) -> ClientTls {
        ClientTls {
            config: Current::new(config),
            certificate: false,
            ca: false,
        }
    }

    /// The configuration in force, for the next connection.
    pub fn config(&self) -> Arc<ClientConfig> {
        self.config.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::dev_certs;
    use crate::tls::PemError;

    fn files() -> (tempfile::TempDir, PathBuf, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let certs = dev_certs::generate(&["127.0.0.1".into()]).expect("generate");
        dev_certs::write(dir.path(), &certs).expect("write");
        let p = dir.path().to_owned();
        (
            dir,
            p.join(dev_certs::NODE_CERT),
            p.join(dev_certs::NODE_KEY),
            p.join(dev_certs::CA_CERT),
        )
    }

    fn load(cert: &Path, key: &Path, ca: Option<&Path>) -> Result<RpcTls, TlsError> {
        RpcTls::load(RpcTlsFiles::new(cert, key, ca))
    }

    #[test]
    fn loads_dev_certs() {
        let (_dir, cert, key, ca) = files();
        let tls = load(&cert, &key, Some(&ca)).expect("load");
        assert!(tls.verifies_peers());
        assert_eq!(tls.server_config().alpn_protocols, vec![b"h2".to_vec()]);
        assert!(!load(&cert, &key, None).expect("load").verifies_peers());
        let mut unverified = RpcTlsFiles::new(&cert, &key, Some(&ca));
        unverified.verify_peer = false;
        assert!(!RpcTls::load(unverified).expect("load").verifies_peers());
    }

    #[test]
    fn refuses_a_missing_file() {
        let (dir, cert, key, _) = files();
        let missing = dir.path().join("nope.pem");
        let err = load(&missing, &key, None).expect_err("missing cert");
        assert!(matches!(err, TlsError::Pem(PemError::Read { .. })), "{err}");
        assert!(err.to_string().contains("nope.pem"), "{err}");
        let err = load(&cert, &key, Some(&missing)).expect_err("missing ca");
        assert!(matches!(err, TlsError::Pem(PemError::Read { .. })), "{err}");
    }

    #[test]
    fn refuses_a_key_of_another_certificate() {
        let (_dir, cert, _, _) = files();
        let (_other_dir, _, other_key, _) = files();
        let err = load(&cert, &other_key, None).expect_err("mismatch");
        assert!(matches!(err, TlsError::Mismatch { .. }), "{err}");
    }

    #[test]
    fn refuses_a_ca_file_without_a_certificate() {
        let (_dir, cert, key, _) = files();
        // A key file is PEM but holds no certificate.
        let err = load(&cert, &key, Some(&key)).expect_err("no ca");
        assert!(
            matches!(
                err,
                TlsError::Pem(PemError::NoCertificate { what: "TLS CA", .. })
            ),
            "{err}"
        );
        let err = load(&key, &key, None).expect_err("no cert");
        assert!(
            matches!(err, TlsError::Pem(PemError::NoCertificate { .. })),
            "{err}"
        );
    }

    #[test]
    fn refuses_a_key_file_without_a_key() {
        let (_dir, cert, _, _) = files();
        let err = load(&cert, &cert, None).expect_err("no key");
        assert!(
            matches!(err, TlsError::Pem(PemError::NoKey { .. })),
            "{err}"
        );
    }

    #[test]
    fn loads_an_encrypted_key_with_its_passphrase_only() {
        let (dir, cert, key, ca) = files();
        let plain = std::fs::read_to_string(&key).expect("read key");
        let encrypted = dir.path().join("encrypted-key.pem");
        std::fs::write(
            &encrypted,
            pem::encrypt_private_key(&plain, "open sesame").expect("encrypt"),
        )
        .expect("write");
        let mut with = RpcTlsFiles::new(&cert, &encrypted, Some(&ca));
        with.passphrase = Some("open sesame".into());
        RpcTls::load(with.clone()).expect("right passphrase");
        with.passphrase = Some("open barley".into());
        let err = RpcTls::load(with).expect_err("wrong passphrase");
        assert!(
            matches!(err, TlsError::Pem(PemError::WrongPassphrase { .. })),
            "{err}"
        );
        let err = load(&cert, &encrypted, Some(&ca)).expect_err("no passphrase");
        assert!(
            matches!(err, TlsError::Pem(PemError::PassphraseMissing { .. })),
            "{err}"
        );
    }

    #[test]
    fn a_client_needs_both_halves_of_a_pair() {
        let (_dir, cert, key, ca) = files();
        assert!(matches!(
            ClientTls::load(Some(&cert), None, None, None),
            Err(TlsError::Incomplete)
        ));
        assert!(
            ClientTls::load(None, None, None, None)
                .expect("none")
                .is_none()
        );
        assert!(
            ClientTls::load(None, None, Some(&ca), None)
                .expect("ca")
                .is_some()
        );
        assert!(
            ClientTls::load(Some(&cert), Some(&key), Some(&ca), None)
                .expect("all")
                .is_some()
        );
    }

    #[test]
    fn a_reload_keeps_the_old_configuration_when_the_new_files_are_bad() {
        let (dir, cert, key, ca) = files();
        let tls = load(&cert, &key, Some(&ca)).expect("load");
        assert!(!tls.changed());
        let before = tls.server_config();
        // The key of another certificate.
        let (_other, _, other_key, _) = files();
        std::fs::copy(&other_key, &key).expect("copy");
        assert!(tls.changed());
        let err = tls.reload().expect_err("mismatch");
        assert!(matches!(err, TlsError::Mismatch { .. }), "{err}");
        assert!(!tls.changed(), "the bad set counts as seen");
        assert!(Arc::ptr_eq(&before, &tls.server_config()));
        // A good set replaces it, for clones too.
        let clone = tls.clone();
        let fresh = dev_certs::generate(&["127.0.0.1".into()]).expect("generate");
        let d = dir.path();
        std::fs::write(d.join(dev_certs::NODE_CERT), &fresh.node_cert).expect("cert");
        std::fs::write(d.join(dev_certs::NODE_KEY), &fresh.node_key).expect("key");
        std::fs::write(d.join(dev_certs::CA_CERT), &fresh.ca_cert).expect("ca");
        tls.reload().expect("reload");
        assert!(!Arc::ptr_eq(&before, &clone.server_config()));
    }
}

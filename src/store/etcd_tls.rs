//! TLS of the etcd client (rustls through tonic, as etcd-client's `tls` feature builds it):
//! the CA and client certificate files, read and checked when they are loaded so that bad
//! input stops the daemon before anything binds, and the client options made from them.
//!
//! Two sources use it: `--etcd-ca`, `--etcd-cert` and `--etcd-key` for `--etcd-endpoints
//! https://...`, and syncer's own `--tls-*` files for the managed etcd member of cluster
//! mode, which then serves TLS on its client and peer URLs (`crate::cluster::managed`). The
//! files keep their paths, so the managed member can hand them to etcd.
//!
//! Servers are verified against the CA when there is one, else against the public web PKI
//! roots; the client certificate is presented when there is one (etcd's
//! `--client-cert-auth` asks for it).

use std::fmt;
use std::path::{Path, PathBuf};

use etcd_client::{Certificate, Identity, TlsOptions};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The flags a set of files came from, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlsFlags {
    pub ca: &'static str,
    pub cert: &'static str,
    pub key: &'static str,
}

/// `--etcd-ca`, `--etcd-cert`, `--etcd-key`: the client of an external etcd.
pub const ETCD_FLAGS: TlsFlags = TlsFlags {
    ca: "--etcd-ca",
    cert: "--etcd-cert",
    key: "--etcd-key",
};

/// `--tls-ca`, `--tls-cert`, `--tls-key`: syncer's own files, which the managed etcd member
/// serves with and syncer's etcd client presents.
pub const NODE_FLAGS: TlsFlags = TlsFlags {
    ca: "--tls-ca",
    cert: "--tls-cert",
    key: "--tls-key",
};

/// Why the etcd TLS files cannot be used. Every message names the file and its flag.
#[derive(Debug, thiserror::Error)]
pub enum EtcdTlsError {
    #[error("cannot read the etcd TLS file {} ({flag}): {source}", path.display())]
    Read {
        flag: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the etcd TLS file {} ({flag}) holds no PEM certificate", path.display())]
    NoCertificate { flag: &'static str, path: PathBuf },
    #[error("the etcd TLS key {} ({flag}) holds no PEM private key: {reason}", path.display())]
    NoKey {
        flag: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error(
        "the etcd TLS key {} ({key_flag}) cannot be used with the certificate {} ({cert_flag}) \
         (does it belong to it?): {reason}",
        key.display(),
        cert.display()
    )]
    Mismatch {
        cert: PathBuf,
        cert_flag: &'static str,
        key: PathBuf,
        key_flag: &'static str,
        reason: String,
    },
}

/// One file: where it is and what it holds.
#[derive(Clone, PartialEq, Eq)]
struct File {
    path: PathBuf,
    pem: Vec<u8>,
}

/// The client certificate and its key.
#[derive(Clone, PartialEq, Eq)]
struct Pair {
    cert: File,
    key: File,
}

/// The TLS of an etcd client: a CA to verify servers against (else the web PKI roots) and a
/// client certificate to present, both optional.
#[derive(Clone, PartialEq, Eq)]
pub struct EtcdTls {
    /// Shared: settings and every client of a node hold copies.
    files: std::sync::Arc<Files>,
}

#[derive(PartialEq, Eq)]
struct Files {
    ca: Option<File>,
    pair: Option<Pair>,
    /// The flags the files came from, for errors when they are read again.
    flags: TlsFlags,
}

// Paths only: key material stays out of logs and `--check`.
impl fmt::Debug for EtcdTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdTls")
            .field("ca", &self.ca_path())
            .field("cert", &self.cert_path())
            .finish_non_exhaustive()
    }
}

impl EtcdTls {
    /// Reads and checks `ca` and the pair `(cert, key)`; `flags` name them in errors.
    ///
    /// # Errors
    /// An [`EtcdTlsError`] naming the file and its flag: unreadable, without a certificate
    /// (the certificate and the CA), without a key, or a key that does not match the
    /// certificate.
    pub fn load(
        ca: Option<&Path>,
        pair: Option<(&Path, &Path)>,
        flags: TlsFlags,
    ) -> Result<EtcdTls, EtcdTlsError> {
        let ca = ca
            .map(|path| read_certificates(flags.ca, path))
            .transpose()?;
        let pair = pair
            .map(|(cert, key)| read_pair(cert, key, flags))
            .transpose()?;
        Ok(EtcdTls {
            files: std::sync::Arc::new(Files { ca, pair, flags }),
        })
    }

    /// The same files read and checked again, as [`EtcdTls::load`] does (for a reload).
    ///
    /// # Errors
    /// Those of [`EtcdTls::load`].
    pub fn reread(&self) -> Result<EtcdTls, EtcdTlsError> {
        let pair = self
            .files
            .pair
            .as_ref()
            .map(|p| (p.cert.path.as_path(), p.key.path.as_path()));
        EtcdTls::load(self.ca_path(), pair, self.files.flags)
    }

    /// A digest of the files' contents, to tell a change.
    pub fn digest(&self) -> u64 {
        use std::hash::{DefaultHasher, Hash, Hasher};
        let mut hasher = DefaultHasher::new();
        self.files.ca.as_ref().map(|f| &f.pem).hash(&mut hasher);
        self.files
            .pair
            .as_ref()
            .map(|p| (&p.cert.pem, &p.key.pem))
            .hash(&mut hasher);
        hasher.finish()
    }

    /// The CA file, when servers are verified against one.
    pub fn ca_path(&self) -> Option<&Path> {
        self.files.ca.as_ref().map(|f| f.path.as_path())
    }

    /// The client certificate file, when one is presented.
    pub fn cert_path(&self) -> Option<&Path> {
        self.files.pair.as_ref().map(|p| p.cert.path.as_path())
    }

    /// The client key file, when a certificate is presented.
    pub fn key_path(&self) -> Option<&Path> {
        self.files.pair.as_ref().map(|p| p.key.path.as_path())
    }

    /// The etcd client's TLS options: servers verified against the CA, or the web PKI roots
    /// when there is none; the client certificate presented when there is one.
    pub fn options(&self) -> TlsOptions {
        let options = match &self.files.ca {
            Some(ca) => TlsOptions::new().ca_certificate(Certificate::from_pem(&ca.pem)),
            None => TlsOptions::new().with_webpki_roots(),
        };
        match &self.files.pair {
            Some(pair) => options.identity(identity(pair)),
            None => options,
        }
    }
}

fn identity(pair: &Pair) -> Identity {
    Identity::from_pem(&pair.cert.pem, &pair.key.pem)
}

fn read(flag: &'static str, path: &Path) -> Result<File, EtcdTlsError> {
    let pem = std::fs::read(path).map_err(|source| EtcdTlsError::Read {
        flag,
        path: path.to_owned(),
        source,
    })?;
    Ok(File {
        path: path.to_owned(),
        pem,
    })
}

/// Reads a PEM file that must hold at least one certificate.
fn read_certificates(flag: &'static str, path: &Path) -> Result<File, EtcdTlsError> {
    let file = read(flag, path)?;
    if !CertificateDer::pem_slice_iter(&file.pem).any(|c| c.is_ok()) {
        return Err(EtcdTlsError::NoCertificate {
            flag,
            path: path.to_owned(),
        });
    }
    Ok(file)
}

fn read_pair(cert: &Path, key: &Path, flags: TlsFlags) -> Result<Pair, EtcdTlsError> {
    let cert_file = read_certificates(flags.cert, cert)?;
    let key_file = read(flags.key, key)?;
    PrivateKeyDer::from_pem_slice(&key_file.pem).map_err(|e| EtcdTlsError::NoKey {
        flag: flags.key,
        path: key.to_owned(),
        reason: e.to_string(),
    })?;
    let pair = Pair {
        cert: cert_file,
        key: key_file,
    };
    // rustls checks that the key belongs to the certificate when it builds a server
    // configuration; doing it here turns a mismatch into an error at start rather than a
    // refused handshake later.
    tonic::transport::Server::builder()
        .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity(&pair)))
        .map_err(|e| EtcdTlsError::Mismatch {
            cert: cert.to_owned(),
            cert_flag: flags.cert,
            key: key.to_owned(),
            key_flag: flags.key,
            reason: chain(&e),
        })?;
    Ok(pair)
}

/// An error and its sources on one line.
pub(crate) fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    with_sources(error.to_string(), error.source())
}

/// `text` followed by `source` and its sources, each that does not repeat what the text
/// says already (transport errors tend to repeat their cause in their own message).
pub(crate) fn with_sources(
    mut text: String,
    mut source: Option<&(dyn std::error::Error + 'static)>,
) -> String {
    while let Some(e) = source {
        let part = e.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::dev_certs;

    struct Files {
        _dir: tempfile::TempDir,
        cert: PathBuf,
        key: PathBuf,
        ca: PathBuf,
    }

    fn files() -> Files {
        let dir = tempfile::tempdir().expect("tempdir");
        let certs = dev_certs::generate(&["127.0.0.1".into()]).expect("generate");
        dev_certs::write(dir.path(), &certs).expect("write");
        let p = dir.path().to_owned();
        Files {
            _dir: dir,
            cert: p.join(dev_certs::NODE_CERT),
            key: p.join(dev_certs::NODE_KEY),
            ca: p.join(dev_certs::CA_CERT),
        }
    }

    #[test]
    fn loads_dev_certs_and_keeps_the_paths_but_never_shows_keys() {
        let f = files();
        let tls = EtcdTls::load(Some(&f.ca), Some((&f.cert, &f.key)), ETCD_FLAGS).expect("load");
        assert_eq!(tls.ca_path(), Some(f.ca.as_path()));
        assert_eq!(tls.cert_path(), Some(f.cert.as_path()));
        assert_eq!(tls.key_path(), Some(f.key.as_path()));
        let shown = format!("{tls:?}");
        assert!(
            shown.contains("ca.pem") && shown.contains("node.pem"),
            "{shown}"
        );
        assert!(!shown.contains("PRIVATE"), "{shown}");
        let _ = tls.options();
        let bare = EtcdTls::load(None, None, ETCD_FLAGS).expect("nothing");
        assert_eq!(bare.ca_path(), None);
        assert_eq!(bare.cert_path(), None);
        let _ = bare.options();
    }

    #[test]
    fn errors_name_the_file_and_its_flag() {
        let f = files();
        let other = files();
        let missing = f.cert.with_file_name("nope.pem");

        let err = EtcdTls::load(Some(&missing), None, ETCD_FLAGS).expect_err("missing ca");
        assert!(matches!(err, EtcdTlsError::Read { .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.contains("nope.pem") && text.contains("--etcd-ca"),
            "{text}"
        );

        let err = EtcdTls::load(Some(&f.key), None, ETCD_FLAGS).expect_err("a key as the CA");
        assert!(matches!(err, EtcdTlsError::NoCertificate { .. }), "{err}");
        assert!(err.to_string().contains("--etcd-ca"), "{err}");

        let err = EtcdTls::load(None, Some((&f.key, &f.key)), ETCD_FLAGS).expect_err("no cert");
        assert!(err.to_string().contains("--etcd-cert"), "{err}");

        let err = EtcdTls::load(None, Some((&f.cert, &f.cert)), ETCD_FLAGS).expect_err("no key");
        assert!(matches!(err, EtcdTlsError::NoKey { .. }), "{err}");
        assert!(err.to_string().contains("--etcd-key"), "{err}");

        let err =
            EtcdTls::load(None, Some((&f.cert, &other.key)), NODE_FLAGS).expect_err("mismatch");
        assert!(matches!(err, EtcdTlsError::Mismatch { .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.contains("--tls-key") && text.contains("--tls-cert"),
            "{text}"
        );
    }
}

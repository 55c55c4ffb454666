//! TLS of the rpc link (rustls through tonic): the certificate files, checked when they are
//! loaded so that bad input stops the daemon before anything binds, and the server and client
//! configurations made from them.
//!
//! With a certificate and key, the rpc listener serves TLS only: a plain-text call cannot
//! even start. With a CA as well, the listener asks every caller for a certificate signed by
//! that CA (mutual TLS) and this syncer verifies the servers it calls against the same CA;
//! without one, servers are verified against the public web PKI roots. The node presents its
//! own certificate when it calls others, so one pair serves both directions.

use std::fmt;
use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// Why the TLS files cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} {path} holds no PEM certificate")]
    NoCertificate { what: &'static str, path: PathBuf },
    #[error("TLS key {path} holds no PEM private key: {reason}")]
    NoKey { path: PathBuf, reason: String },
    #[error(
        "TLS key {key} cannot be used with certificate {cert} (does it belong to it?): {reason}"
    )]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
    #[error(
        "a TLS certificate needs its key and a key its certificate: give both --tls-cert and --tls-key"
    )]
    Incomplete,
}

/// A certificate and key pair, both read and checked.
#[derive(Clone)]
struct Pair {
    cert: Vec<u8>,
    key: Vec<u8>,
}

impl Pair {
    fn identity(&self) -> Identity {
        Identity::from_pem(&self.cert, &self.key)
    }
}

/// The TLS settings of a syncer's rpc listener and of its calls to other syncers.
#[derive(Clone)]
pub struct RpcTls {
    pair: Pair,
    ca: Option<Vec<u8>>,
}

/// The TLS side of calls to other syncers (the daemon's and the client commands').
#[derive(Clone)]
pub struct ClientTls {
    pair: Option<Pair>,
    ca: Option<Vec<u8>>,
}

// Key material stays out of logs and `--check`.
impl fmt::Debug for RpcTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RpcTls")
            .field("verifies_peers", &self.ca.is_some())
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("certificate", &self.pair.is_some())
            .field("ca", &self.ca.is_some())
            .finish_non_exhaustive()
    }
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

/// Reads a PEM file that must hold at least one certificate.
fn read_certificates(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    let pem = read(what, path)?;
    let any = CertificateDer::pem_slice_iter(&pem).any(|c| c.is_ok());
    if !any {
        return Err(TlsError::NoCertificate {
            what,
            path: path.to_owned(),
        });
    }
    Ok(pem)
}

fn read_pair(cert: &Path, key: &Path) -> Result<Pair, TlsError> {
    let cert_pem = read_certificates("TLS certificate", cert)?;
    let key_pem = read("TLS key", key)?;
    PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::NoKey {
        path: key.to_owned(),
        reason: e.to_string(),
    })?;
    let pair = Pair {
        cert: cert_pem,
        key: key_pem,
    };
    // rustls checks that the key belongs to the certificate when it builds a server
    // configuration; doing it here turns a mismatch into an error at start.
    tonic::transport::Server::builder()
        .tls_config(ServerTlsConfig::new().identity(pair.identity()))
        .map_err(|e| TlsError::Mismatch {
            cert: cert.to_owned(),
            key: key.to_owned(),
            reason: chain(&e),
        })?;
    Ok(pair)
}

/// An error and its sources on one line.
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

impl RpcTls {
    /// Reads and checks `cert`, `key` and `ca`.
    ///
    /// # Errors
    /// A [`TlsError`] naming the file: unreadable, without a certificate (the certificate
    /// and the CA), without a key, or a key that does not match the certificate.
    pub fn load(cert: &Path, key: &Path, ca: Option<&Path>) -> Result<RpcTls, TlsError> {
        let pair = read_pair(cert, key)?;
        let ca = ca
            .map(|path| read_certificates("TLS CA", path))
            .transpose()?;
        Ok(RpcTls { pair, ca })
    }

    /// Whether callers must present a certificate signed by the CA (mutual TLS).
    pub fn verifies_peers(&self) -> bool {
        self.ca.is_some()
    }

    /// The listener's configuration: this node's certificate, and the CA every caller's
    /// certificate must be signed by when one is given.
    pub fn server_config(&self) -> ServerTlsConfig {
        let config = ServerTlsConfig::new().identity(self.pair.identity());
        match &self.ca {
            Some(ca) => config.client_ca_root(Certificate::from_pem(ca)),
            None => config,
        }
    }

    /// The client side of this node's calls: its own certificate, and the CA.
    pub fn client(&self) -> ClientTls {
        ClientTls {
            pair: Some(self.pair.clone()),
            ca: self.ca.clone(),
        }
    }
}

impl ClientTls {
    /// The TLS of a client command from its `--tls-cert`, `--tls-key` and `--tls-ca`:
    /// `None` (plain text) when none is given.
    ///
    /// # Errors
    /// [`TlsError::Incomplete`] for a certificate without its key or the reverse, and the
    /// errors of [`RpcTls::load`].
    pub fn load(
        cert: Option<&Path>,
        key: Option<&Path>,
        ca: Option<&Path>,
    ) -> Result<Option<ClientTls>, TlsError> {
        let pair = match (cert, key) {
            (Some(cert), Some(key)) => Some(read_pair(cert, key)?),
            (None, None) => None,
            _ => return Err(TlsError::Incomplete),
        };
        let ca = ca
            .map(|path| read_certificates("TLS CA", path))
            .transpose()?;
        if pair.is_none() && ca.is_none() {
            return Ok(None);
        }
        Ok(Some(ClientTls { pair, ca }))
    }

    /// The configuration of a channel: servers verified against the CA, or the web PKI roots
    /// when there is none; this node's certificate presented when it has one.
    pub fn config(&self) -> ClientTlsConfig {
        let config = match &self.ca {
            Some(ca) => ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)),
            None => ClientTlsConfig::new().with_webpki_roots(),
        };
        match &self.pair {
            Some(pair) => config.identity(pair.identity()),
            None => config,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::dev_certs;

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

    #[test]
    fn loads_dev_certs() {
        let (_dir, cert, key, ca) = files();
        let tls = RpcTls::load(&cert, &key, Some(&ca)).expect("load");
        assert!(tls.verifies_peers());
        assert!(
            !RpcTls::load(&cert, &key, None)
                .expect("load")
                .verifies_peers()
        );
    }

    #[test]
    fn refuses_a_missing_file() {
        let (dir, cert, key, _) = files();
        let missing = dir.path().join("nope.pem");
        let err = RpcTls::load(&missing, &key, None).expect_err("missing cert");
        assert!(matches!(err, TlsError::Read { .. }), "{err}");
        assert!(err.to_string().contains("nope.pem"), "{err}");
        let err = RpcTls::load(&cert, &key, Some(&missing)).expect_err("missing ca");
        assert!(matches!(err, TlsError::Read { .. }), "{err}");
    }

    #[test]
    fn refuses_a_key_of_another_certificate() {
        let (_dir, cert, _, _) = files();
        let (_other_dir, _, other_key, _) = files();
        let err = RpcTls::load(&cert, &other_key, None).expect_err("mismatch");
        assert!(matches!(err, TlsError::Mismatch { .. }), "{err}");
    }

    #[test]
    fn refuses_a_ca_file_without_a_certificate() {
        let (_dir, cert, key, _) = files();
        // A key file is PEM but holds no certificate.
        let err = RpcTls::load(&cert, &key, Some(&key)).expect_err("no ca");
        assert!(
            matches!(err, TlsError::NoCertificate { what: "TLS CA", .. }),
            "{err}"
        );
        let err = RpcTls::load(&key, &key, None).expect_err("no cert");
        assert!(matches!(err, TlsError::NoCertificate { .. }), "{err}");
    }

    #[test]
    fn refuses_a_key_file_without_a_key() {
        let (_dir, cert, _, _) = files();
        let err = RpcTls::load(&cert, &cert, None).expect_err("no key");
        assert!(matches!(err, TlsError::NoKey { .. }), "{err}");
    }

    #[test]
    fn a_client_needs_both_halves_of_a_pair() {
        let (_dir, cert, key, ca) = files();
        assert!(matches!(
            ClientTls::load(Some(&cert), None, None),
            Err(TlsError::Incomplete)
        ));
        assert!(ClientTls::load(None, None, None).expect("none").is_none());
        assert!(
            ClientTls::load(None, None, Some(&ca))
                .expect("ca")
                .is_some()
        );
        assert!(
            ClientTls::load(Some(&cert), Some(&key), Some(&ca))
                .expect("all")
                .is_some()
        );
    }
}

//! syncer's own rustls configurations, shared by the rpc link (`crate::rpc::tls`) and the
//! registry client (`crate::registry::tls`): PEM files read with errors naming the file
//! ([`pem`]), encrypted PKCS#8 keys, the minimum TLS version and the cipher suites
//! ([`options`]), the server and client configurations built from them (ALPN `h2`), and
//! [`Current`], the configuration every new handshake reads and a reload replaces.
//!
//! Everything runs on rustls with the ring provider; there is no OpenSSL anywhere.

pub mod options;
pub mod pem;
pub mod reload;

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

pub use options::{MinVersion, TlsOptions};
pub use pem::{Names, PemError};

use crate::telemetry::Metrics;

/// The protocol of the rpc link (gRPC over HTTP/2). The registry client offers `h2` and
/// `http/1.1` (`crate::registry::tls`).
const ALPN_H2: &[u8] = b"h2";

/// Why a TLS configuration cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(transparent)]
    Pem(#[from] PemError),
    #[error(
        "{what} {key} cannot be used with certificate {cert} (does it belong to it?): {reason}"
    )]
    Mismatch {
        what: &'static str,
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
    #[error("{what} {path} holds no usable CA certificate: {reason}")]
    BadCa {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error(
        "a TLS certificate needs its key and a key its certificate: give both --tls-cert and --tls-key"
    )]
    Incomplete,
    #[error("cannot make the TLS configuration: {0}")]
    Config(String),
}

/// A certificate chain and its private key, read from their files.
#[derive(Clone)]
pub struct Identity {
    pub certs: Vec<CertificateDer<'static>>,
    pub key: Arc<PrivateKeyDer<'static>>,
    /// The files, for messages.
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("cert", &self.cert_path)
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// Reads `cert` and `key` (decrypted with `passphrase` when encrypted).
    ///
    /// # Errors
    /// The [`PemError`] naming the file. Whether the key belongs to the certificate is
    /// checked when a configuration is built.
    pub fn load(
        names: &Names,
        cert: &Path,
        key: &Path,
        passphrase: Option<&str>,
    ) -> Result<Identity, TlsError> {
        Ok(Identity {
            certs: pem::read_certificates(names.cert, cert)?,
            key: Arc::new(pem::read_private_key(names, key, passphrase)?),
            cert_path: cert.to_owned(),
            key_path: key.to_owned(),
        })
    }

    fn mismatch(&self, names: &Names, e: &rustls::Error) -> TlsError {
        TlsError::Mismatch {
            what: names.key,
            cert: self.cert_path.clone(),
            key: self.key_path.clone(),
            reason: e.to_string(),
        }
    }
}

/// The trust anchors in `pem`, the contents of the CA file `path`.
///
/// # Errors
/// [`PemError::NoCertificate`] for a file without a certificate, [`TlsError::BadCa`] for
/// certificates that cannot be trust anchors.
pub fn roots(what: &'static str, path: &Path, pem: &[u8]) -> Result<RootCertStore, TlsError> {
    let certs = pem::certificates(what, path, pem)?;
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots.add(cert).map_err(|e| TlsError::BadCa {
            what,
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    }
    Ok(roots)
}

/// The public web PKI roots, for servers called without a private CA.
pub fn webpki_roots() -> RootCertStore {
    RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    }
}

/// A server configuration: `identity` presented, callers asked for a certificate signed by
/// `client_roots` when given (and refused without one), ALPN `h2`.
///
/// # Errors
/// [`TlsError::Mismatch`] when the key does not belong to the certificate,
/// [`TlsError::Config`] for what rustls refuses otherwise.
pub fn server_config(
    names: &Names,
    options: &TlsOptions,
    identity: &Identity,
    client_roots: Option<RootCertStore>,
) -> Result<ServerConfig, TlsError> {
    let provider = options.provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(options.min_version.versions())
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match client_roots {
        Some(roots) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| TlsError::Config(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(identity.certs.clone(), identity.key.clone_key())
        .map_err(|e| identity.mismatch(names, &e))?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(config)
}

/// A client configuration: servers verified against `roots`, `identity` presented when a
/// server asks for a certificate; ALPN `h2`.
///
/// # Errors
/// As [`server_config`].
pub fn client_config(
    names: &Names,
    options: &TlsOptions,
    roots: RootCertStore,
    identity: Option<&Identity>,
) -> Result<ClientConfig, TlsError> {
    let builder = ClientConfig::builder_with_provider(options.provider())
        .with_protocol_versions(options.min_version.versions())
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots);
    let mut config = match identity {
        Some(identity) => builder
            .with_client_auth_cert(identity.certs.clone(), identity.key.clone_key())
            .map_err(|e| identity.mismatch(names, &e))?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(config)
}

/// A configuration that new handshakes read and a reload replaces as a whole; connections
/// already open keep the one they started with.
#[derive(Debug)]
pub struct Current<T>(Arc<RwLock<Arc<T>>>);

impl<T> Clone for Current<T> {
    fn clone(&self) -> Self {
        Current(self.0.clone())
    }
}

impl<T> Current<T> {
    pub fn new(value: T) -> Current<T> {
        Current(Arc::new(RwLock::new(Arc::new(value))))
    }

    /// The configuration in force.
    pub fn get(&self) -> Arc<T> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replaces it for every handshake from now on.
    pub fn set(&self, value: T) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(value);
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

/// The TLS metrics of a node.
#[derive(Clone, Debug, Default)]
pub struct TlsMetrics {
    reloads: Family<ResultLabel, Counter>,
    handshake_failures: Counter,
}

impl TlsMetrics {
    /// Registers `syncer_tls_reloads_total{result}` and
    /// `syncer_rpc_tls_handshake_failures_total` with `metrics`.
    pub fn register(&self, metrics: &Metrics) {
        metrics.register(
            "syncer_tls_reloads",
            "Reloads of the TLS certificate, key and CA files, by result (ok: in use for new \
             connections; error: the files were refused and the previous ones kept)",
            self.reloads.clone(),
        );
        metrics.register(
            "syncer_rpc_tls_handshake_failures",
            "TLS handshakes of incoming rpc connections that failed or timed out",
            self.handshake_failures.clone(),
        );
    }

    /// Counts one reload.
    pub fn reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.reloads.get_or_create(&ResultLabel { result }).inc();
    }

    /// Counts one failed incoming handshake.
    pub fn handshake_failed(&self) {
        self.handshake_failures.inc();
    }
}

/// An error and its sources on one line.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

//! TLS of the registry client (`https://` addresses of `--sc-addr`): a private CA to verify
//! the registry against, a client certificate for a registry that asks for one, and the
//! explicit switch that turns verification off.
//!
//! The files are read and checked when the configuration is resolved, so that a missing
//! file, a file without a certificate or a key that does not belong to its certificate stops
//! the daemon (and `--check`) with the file's name before anything binds. Without any of
//! these settings an `https://` address is verified against the public web PKI roots built
//! into the binary.

use std::fmt;
use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Why the registry's TLS files cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RegistryTlsError {
    #[error("cannot read {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} {path} holds no PEM certificate")]
    NoCertificate { what: &'static str, path: PathBuf },
    #[error("registry TLS key {path} holds no PEM private key: {reason}")]
    NoKey { path: PathBuf, reason: String },
    #[error("registry TLS key {key} cannot be used with certificate {cert}: {reason}")]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
}

/// The TLS settings of the registry client, files already read and checked.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct RegistryTls {
    /// PEM CA certificate(s) trusted in place of the web PKI roots.
    ca: Option<Vec<u8>>,
    /// PEM certificate chain followed by its key, as reqwest takes an identity.
    identity: Option<Vec<u8>>,
    /// No verification of the registry's certificate at all.
    insecure: bool,
}

// Key material stays out of logs and `--check`.
impl fmt::Debug for RegistryTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryTls")
            .field("ca", &self.ca.is_some())
            .field("certificate", &self.identity.is_some())
            .field("insecure", &self.insecure)
            .finish()
    }
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, RegistryTlsError> {
    std::fs::read(path).map_err(|source| RegistryTlsError::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

fn read_certificates(what: &'static str, path: &Path) -> Result<Vec<u8>, RegistryTlsError> {
    let pem = read(what, path)?;
    if !CertificateDer::pem_slice_iter(&pem).any(|c| c.is_ok()) {
        return Err(RegistryTlsError::NoCertificate {
            what,
            path: path.to_owned(),
        });
    }
    Ok(pem)
}

/// An error and its sources on one line (reqwest keeps rustls' reason in a source).
pub(crate) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

impl RegistryTls {
    /// Reads and checks the files.
    ///
    /// # Errors
    /// A [`RegistryTlsError`] naming the file: unreadable, without a certificate, without a
    /// key, or a key that does not belong to the certificate.
    pub fn load(
        ca: Option<&Path>,
        pair: Option<(&Path, &Path)>,
        insecure: bool,
    ) -> Result<RegistryTls, RegistryTlsError> {
        let ca = ca
            .map(|path| read_certificates("registry TLS CA", path))
            .transpose()?;
        let identity = match pair {
            Some((cert, key)) => {
                let mut pem = read_certificates("registry TLS certificate", cert)?;
                let key_pem = read("registry TLS key", key)?;
                PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| RegistryTlsError::NoKey {
                    path: key.to_owned(),
                    reason: e.to_string(),
                })?;
                pem.push(b'\n');
                pem.extend_from_slice(&key_pem);
                // Building a client with the identity makes rustls check that the key
                // belongs to the certificate.
                let checked = reqwest::Identity::from_pem(&pem).and_then(|identity| {
                    reqwest::Client::builder()
                        .use_rustls_tls()
                        .identity(identity)
                        .build()
                });
                if let Err(e) = checked {
                    return Err(RegistryTlsError::Mismatch {
                        cert: cert.to_owned(),
                        key: key.to_owned(),
                        reason: error_chain(&e),
                    });
                }
                Some(pem)
            }
            None => None,
        };
        Ok(RegistryTls {
            ca,
            identity,
            insecure,
        })
    }

    /// Whether the registry's certificate goes unverified (`--sc-tls-insecure`).
    pub fn insecure(&self) -> bool {
        self.insecure
    }

    /// `builder` with these settings applied.
    ///
    /// # Errors
    /// The text of reqwest's error; not expected, since the files were checked by
    /// [`RegistryTls::load`].
    pub fn apply(&self, builder: reqwest::ClientBuilder) -> Result<reqwest::ClientBuilder, String> {
        let mut builder = builder.use_rustls_tls();
        if let Some(ca) = &self.ca {
            for cert in reqwest::Certificate::from_pem_bundle(ca).map_err(|e| error_chain(&e))? {
                builder = builder.add_root_certificate(cert);
            }
            // A private CA replaces the public roots: a registry is trusted for one reason.
            builder = builder.tls_built_in_root_certs(false);
        }
        if let Some(identity) = &self.identity {
            let identity = reqwest::Identity::from_pem(identity).map_err(|e| error_chain(&e))?;
            builder = builder.identity(identity);
        }
        if self.insecure {
            builder = builder.danger_accept_invalid_certs(true);
        }
        Ok(builder)
    }
}

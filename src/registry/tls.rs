//! TLS of the registry client (`https://` addresses of `--sc-addr`), on syncer's own rustls
//! configuration (`crate::tls`) handed to reqwest: a private CA to verify the registry
//! against, a client certificate (its key possibly encrypted) for a registry that asks for
//! one, the minimum TLS version and cipher suites, and the explicit switch that turns
//! verification off.
//!
//! The files are read and checked when the configuration is resolved, so that a missing
//! file, a file without a certificate or a key that does not belong to its certificate stops
//! the daemon (and `--check`) with the file's name before anything binds. Without any of
//! these settings an `https://` address is verified against the public web PKI roots built
//! into the binary.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::tls::{self, Identity, TlsError, TlsOptions, pem};

/// Why the registry's TLS files cannot be used.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct RegistryTlsError(#[from] pub TlsError);

impl From<pem::PemError> for RegistryTlsError {
    fn from(e: pem::PemError) -> Self {
        RegistryTlsError(e.into())
    }
}

/// The TLS settings of the registry client, files already read and checked.
#[derive(Clone, Default)]
pub struct RegistryTls {
    /// The CA file and its trust anchors, in place of the web PKI roots.
    ca: Option<(PathBuf, RootCertStore)>,
    /// The client certificate and its key.
    identity: Option<Identity>,
    /// No verification of the registry's certificate at all.
    insecure: bool,
    options: TlsOptions,
}

// Key material stays out of logs and `--check`.
impl fmt::Debug for RegistryTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryTls")
            .field("ca", &self.ca.is_some())
            .field("certificate", &self.identity.is_some())
            .field("insecure", &self.insecure)
            .field("options", &self.options)
            .finish()
    }
}

/// Settings compare by their files and options (what `--check` and tests look at).
impl PartialEq for RegistryTls {
    fn eq(&self, other: &Self) -> bool {
        self.ca.as_ref().map(|(p, _)| p) == other.ca.as_ref().map(|(p, _)| p)
            && self.identity.as_ref().map(|i| (&i.cert_path, &i.key_path))
                == other.identity.as_ref().map(|i| (&i.cert_path, &i.key_path))
            && self.insecure == other.insecure
            && self.options == other.options
    }
}

impl Eq for RegistryTls {}

/// The registry's certificate and key files.
#[derive(Debug, Clone, Copy)]
pub struct KeyPair<'a> {
    pub cert: &'a Path,
    pub key: &'a Path,
    pub passphrase: Option<&'a str>,
}

impl RegistryTls {
    /// Reads and checks the files.
    ///
    /// # Errors
    /// A [`RegistryTlsError`] naming the file: unreadable, without a certificate, without a
    /// key, an encrypted key without its passphrase or with a wrong one, or a key that does
    /// not belong to the certificate.
    pub fn load(
        ca: Option<&Path>,
        pair: Option<KeyPair<'_>>,
        insecure: bool,
        options: TlsOptions,
    ) -> Result<RegistryTls, RegistryTlsError> {
        let names = &pem::REGISTRY;
        let ca = ca
            .map(|path| {
                let roots = tls::roots(names.ca, path, &pem::read(names.ca, path)?)?;
                Ok::<_, TlsError>((path.to_owned(), roots))
            })
            .transpose()?;
        let identity = pair
            .map(|p| Identity::load(names, p.cert, p.key, p.passphrase))
            .transpose()?;
        let tls = RegistryTls {
            ca,
            identity,
            insecure,
            options,
        };
        // Building the configuration makes rustls check that the key belongs to the
        // certificate.
        tls.client_config()?;
        Ok(tls)
    }

    /// Whether the registry's certificate goes unverified (`--sc-tls-insecure`).
    pub fn insecure(&self) -> bool {
        self.insecure
    }

    /// The rustls configuration of the registry client: ALPN `h2` and `http/1.1`.
    ///
    /// # Errors
    /// [`TlsError`]; not expected once [`RegistryTls::load`] succeeded.
    pub fn client_config(&self) -> Result<ClientConfig, TlsError> {
        let roots = match &self.ca {
            Some((_, roots)) => roots.clone(),
            None => tls::webpki_roots(),
        };
        let mut config = tls::client_config(
            &pem::REGISTRY,
            &self.options,
            roots,
            self.identity.as_ref(),
            false,
        )?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        if self.insecure {
            let provider = self.options.provider();
            config
                .dangerous()
                .set_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)));
        }
        Ok(config)
    }

    /// `builder` with these settings applied.
    ///
    /// # Errors
    /// The text of the error; not expected, since the files were checked by
    /// [`RegistryTls::load`].
    pub fn apply(&self, builder: reqwest::ClientBuilder) -> Result<reqwest::ClientBuilder, String> {
        let config = self.client_config().map_err(|e| e.to_string())?;
        Ok(builder.use_preconfigured_tls(config))
    }
}

/// `--sc-tls-insecure`: any certificate is accepted; signatures are still checked, so the
/// handshake itself stays sound.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

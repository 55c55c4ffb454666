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

use std::collections::hash_map::DefaultHasher;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustls::client::ResolvesClientCert;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};

use crate::tls::reload::Reloadable;
use crate::tls::{self, Current, TlsError, TlsOptions, pem};

/// Why the registry's TLS files cannot be used.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct RegistryTlsError(#[from] pub TlsError);

impl From<pem::PemError> for RegistryTlsError {
    fn from(e: pem::PemError) -> Self {
        RegistryTlsError(e.into())
    }
}

/// The registry's certificate and key files.
#[derive(Debug, Clone, Copy)]
pub struct KeyPair<'a> {
    pub cert: &'a Path,
    pub key: &'a Path,
    pub passphrase: Option<&'a str>,
}

/// The settings of the registry client's TLS.
#[derive(Clone, Default, PartialEq, Eq)]
struct Files {
    ca: Option<PathBuf>,
    pair: Option<(PathBuf, PathBuf)>,
    passphrase: Option<String>,
    insecure: bool,
    options: TlsOptions,
}

/// What the files make: how the registry is verified, and the client certificate.
#[derive(Debug)]
struct Material {
    verifier: Arc<dyn ServerCertVerifier>,
    identity: Option<Arc<CertifiedKey>>,
}

/// The TLS settings of the registry client, files already read and checked. Clones share
/// the material in force: a reload through one (SIGHUP, changed files) reaches the HTTP
/// clients already built, for their next connection.
#[derive(Clone, Default)]
pub struct RegistryTls {
    files: Files,
    /// `None` for the defaults (web PKI roots, no client certificate), built on use.
    current: Option<Current<Material>>,
    seen: Arc<Mutex<u64>>,
}

// Key material stays out of logs and `--check`.
impl fmt::Debug for RegistryTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryTls")
            .field("ca", &self.files.ca.is_some())
            .field("certificate", &self.files.pair.is_some())
            .field("insecure", &self.files.insecure)
            .field("options", &self.files.options)
            .finish()
    }
}

/// Settings compare by their files and options (what `--check` and tests look at).
impl PartialEq for RegistryTls {
    fn eq(&self, other: &Self) -> bool {
        self.files == other.files
    }
}

impl Eq for RegistryTls {}

/// The contents of the files, read once per load.
struct Contents {
    ca: Option<Vec<u8>>,
    pair: Option<(Vec<u8>, Vec<u8>)>,
}

impl Contents {
    fn read(files: &Files) -> Result<Contents, TlsError> {
        let names = &pem::REGISTRY;
        Ok(Contents {
            ca: files
                .ca
                .as_deref()
                .map(|p| pem::read(names.ca, p))
                .transpose()?,
            pair: files
                .pair
                .as_ref()
                .map(|(c, k)| {
                    Ok::<_, TlsError>((pem::read(names.cert, c)?, pem::read(names.key, k)?))
                })
                .transpose()?,
        })
    }

    fn digest(&self) -> u64 {
        let mut hasher = DefaultHasher::new();
        (&self.ca, &self.pair).hash(&mut hasher);
        hasher.finish()
    }
}

/// The digest of `files`' contents, or of why they cannot be read.
fn digest_of(files: &Files) -> u64 {
    crate::tls::reload::digest_of_read(Contents::read(files), Contents::digest)
}

/// The verifier and client certificate of `contents`.
fn material(files: &Files, contents: &Contents) -> Result<Material, TlsError> {
    let names = &pem::REGISTRY;
    let provider = files.options.provider();
    let verifier: Arc<dyn ServerCertVerifier> = if files.insecure {
        Arc::new(AcceptAnyCertificate(provider.clone()))
    } else {
        let roots = match (&files.ca, &contents.ca) {
            (Some(path), Some(text)) => tls::roots(names.ca, path, text)?,
            _ => tls::webpki_roots(),
        };
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| TlsError::Config(e.to_string()))?
    };
    let identity = match (&files.pair, &contents.pair) {
        (Some((cert_path, key_path)), Some((cert, key))) => {
            let chain = pem::certificates(names.cert, cert_path, cert)?;
            let key = pem::private_key(names, key_path, key, files.passphrase.as_deref())?;
            let certified =
                CertifiedKey::from_der(chain, key, &provider).map_err(|e| TlsError::Mismatch {
                    what: names.key,
                    cert: cert_path.clone(),
                    key: key_path.clone(),
                    reason: e.to_string(),
                })?;
            Some(Arc::new(certified))
        }
        _ => None,
    };
    Ok(Material { verifier, identity })
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
        let files = Files {
            ca: ca.map(Path::to_owned),
            pair: pair.map(|p| (p.cert.to_owned(), p.key.to_owned())),
            passphrase: pair.and_then(|p| p.passphrase.map(str::to_owned)),
            insecure,
            options,
        };
        let contents = Contents::read(&files)?;
        let material = material(&files, &contents)?;
        let tls = RegistryTls {
            seen: Arc::new(Mutex::new(contents.digest())),
            current: Some(Current::new(material)),
            files,
        };
        // The configuration itself (versions, suites) is checked too.
        tls.client_config()?;
        Ok(tls)
    }

    /// Whether the registry's certificate goes unverified (`--sc-tls-insecure`).
    pub fn insecure(&self) -> bool {
        self.files.insecure
    }

    /// Whether any file is given (something to reload).
    pub fn has_files(&self) -> bool {
        self.files.ca.is_some() || self.files.pair.is_some()
    }

    /// The rustls configuration of the registry client: ALPN `h2` and `http/1.1`; the
    /// registry verified and the client certificate chosen by the material in force at
    /// each handshake.
    ///
    /// # Errors
    /// [`TlsError`]; not expected once [`RegistryTls::load`] succeeded.
    pub fn client_config(&self) -> Result<ClientConfig, TlsError> {
        let current = match &self.current {
            Some(current) => current.clone(),
            None => {
                let contents = Contents::read(&self.files)?;
                Current::new(material(&self.files, &contents)?)
            }
        };
        let in_force = Arc::new(InForce(current));
        let mut config = ClientConfig::builder_with_provider(self.files.options.provider())
            .with_protocol_versions(self.files.options.min_version.versions())
            .map_err(|e| TlsError::Config(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(in_force.clone())
            .with_client_cert_resolver(in_force);
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
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

impl Reloadable for RegistryTls {
    fn name(&self) -> &'static str {
        "registry client"
    }

    fn changed(&self) -> bool {
        digest_of(&self.files) != *self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn reload(&self) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let Some(current) = &self.current else {
            return Ok(());
        };
        let contents = Contents::read(&self.files);
        let digest = match &contents {
            Ok(contents) => contents.digest(),
            Err(_) => digest_of(&self.files),
        };
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = digest;
        current.set(material(&self.files, &contents?)?);
        Ok(())
    }
}

/// The verifier and client certificate resolver of every registry client configuration:
/// both ask the material in force.
struct InForce(Current<Material>);

impl fmt::Debug for InForce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("InForce")
    }
}

impl ServerCertVerifier for InForce {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.0.get().verifier.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0
            .get()
            .verifier
            .verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0
            .get()
            .verifier
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.get().verifier.supported_verify_schemes()
    }
}

impl ResolvesClientCert for InForce {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.0.get().identity.clone()
    }

    fn has_certs(&self) -> bool {
        self.0.get().identity.is_some()
    }
}

/// `--sc-tls-insecure`: any certificate is accepted; signatures are still checked, so the
/// handshake itself stays sound.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

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

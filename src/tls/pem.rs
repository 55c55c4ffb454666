//! Reading PEM files: certificates and private keys, encrypted PKCS#8 keys included. Every
//! error names the file and what it was read as ("TLS key", "registry TLS CA", ...).

use std::path::{Path, PathBuf};

use pkcs8::EncryptedPrivateKeyInfo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

const ENCRYPTED_BEGIN: &str = "-----BEGIN ENCRYPTED PRIVATE KEY-----";
const ENCRYPTED_END: &str = "-----END ENCRYPTED PRIVATE KEY-----";
/// The header of OpenSSL's legacy ("traditional") encrypted PEM keys.
const LEGACY_ENCRYPTED: &str = "Proc-Type: 4,ENCRYPTED";

/// Why a PEM file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PemError {
    #[error("cannot read {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} {path} holds no PEM certificate")]
    NoCertificate { what: &'static str, path: PathBuf },
    #[error("{what} {path} holds no PEM private key: {reason}")]
    NoKey {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error(
        "{what} {path} is encrypted (ENCRYPTED PRIVATE KEY) but no passphrase is given; set the key's passphrase ({passphrase})"
    )]
    PassphraseMissing {
        what: &'static str,
        path: PathBuf,
        passphrase: &'static str,
    },
    #[error(
        "{what} {path} cannot be decrypted with the passphrase given ({passphrase}): wrong passphrase, or a damaged key"
    )]
    WrongPassphrase {
        what: &'static str,
        path: PathBuf,
        passphrase: &'static str,
    },
    #[error(
        "a passphrase is given ({passphrase}) but {what} {path} is not encrypted; remove the passphrase"
    )]
    PassphraseForPlainKey {
        what: &'static str,
        path: PathBuf,
        passphrase: &'static str,
    },
    #[error(
        "{what} {path} is encrypted in OpenSSL's legacy format (Proc-Type: 4,ENCRYPTED), which syncer does not read; convert it to an encrypted PKCS#8 key with: openssl pkcs8 -topk8 -in {path} -out NEW.pem"
    )]
    LegacyEncrypted { what: &'static str, path: PathBuf },
}

/// What a file is read as, for the messages: the file's role and the setting that gives the
/// passphrase of a key.
#[derive(Debug, Clone, Copy)]
pub struct Names {
    pub cert: &'static str,
    pub key: &'static str,
    pub ca: &'static str,
    /// How the passphrase is set, e.g. "SYNCER_TLS_KEY_PASSPHRASE or --tls-key-passphrase".
    pub passphrase: &'static str,
}

/// The names of the rpc link's files.
pub const RPC: Names = Names {
    cert: "TLS certificate",
    key: "TLS key",
    ca: "TLS CA",
    passphrase: "SYNCER_TLS_KEY_PASSPHRASE or --tls-key-passphrase",
};

/// The names of the registry client's files.
pub const REGISTRY: Names = Names {
    cert: "registry TLS certificate",
    key: "registry TLS key",
    ca: "registry TLS CA",
    passphrase: "SYNCER_SC_TLS_KEY_PASSPHRASE or --sc-tls-key-passphrase",
};

/// The bytes of `path`.
///
/// # Errors
/// [`PemError::Read`].
pub fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, PemError> {
    std::fs::read(path).map_err(|source| PemError::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

/// The certificates of a PEM file that must hold at least one.
///
/// # Errors
/// [`PemError::Read`] or [`PemError::NoCertificate`].
pub fn read_certificates(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, PemError> {
    certificates(what, path, &read(what, path)?)
}

/// The certificates in `pem` (the contents of `path`).
///
/// # Errors
/// [`PemError::NoCertificate`].
pub fn certificates(
    what: &'static str,
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem)
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(PemError::NoCertificate {
            what,
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// The private key of the PEM file `path`, decrypted with `passphrase` when it is an
/// `ENCRYPTED PRIVATE KEY`.
///
/// # Errors
/// [`PemError::Read`], and the errors of [`private_key`].
pub fn read_private_key(
    names: &Names,
    path: &Path,
    passphrase: Option<&str>,
) -> Result<PrivateKeyDer<'static>, PemError> {
    private_key(names, path, &read(names.key, path)?, passphrase)
}

/// The private key in `pem` (the contents of `path`): PKCS#8, PKCS#1 or SEC1, or an
/// encrypted PKCS#8 key decrypted with `passphrase`.
///
/// # Errors
/// [`PemError::NoKey`]; for encrypted keys [`PemError::PassphraseMissing`] and
/// [`PemError::WrongPassphrase`]; [`PemError::PassphraseForPlainKey`] for a passphrase given
/// with a key that is not encrypted; [`PemError::LegacyEncrypted`] for OpenSSL's legacy
/// encrypted format.
pub fn private_key(
    names: &Names,
    path: &Path,
    pem: &[u8],
    passphrase: Option<&str>,
) -> Result<PrivateKeyDer<'static>, PemError> {
    let what = names.key;
    let text = String::from_utf8_lossy(pem);
    if text.contains(LEGACY_ENCRYPTED) {
        return Err(PemError::LegacyEncrypted {
            what,
            path: path.to_owned(),
        });
    }
    if let Some(section) = encrypted_section(&text) {
        let Some(passphrase) = passphrase else {
            return Err(PemError::PassphraseMissing {
                what,
                path: path.to_owned(),
                passphrase: names.passphrase,
            });
        };
        let no_key = |reason: String| PemError::NoKey {
            what,
            path: path.to_owned(),
            reason,
        };
        let (_, der) = pkcs8::der::pem::decode_vec(section.as_bytes())
            .map_err(|e| no_key(format!("the encrypted key is not valid PEM: {e}")))?;
        let info = EncryptedPrivateKeyInfo::try_from(der.as_slice())
            .map_err(|e| no_key(format!("the encrypted key is not PKCS#8: {e}")))?;
        let plain = info
            .decrypt(passphrase)
            .map_err(|_| PemError::WrongPassphrase {
                what,
                path: path.to_owned(),
                passphrase: names.passphrase,
            })?;
        return Ok(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            plain.as_bytes().to_vec(),
        )));
    }
    let key = PrivateKeyDer::from_pem_slice(pem).map_err(|e| PemError::NoKey {
        what,
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    if passphrase.is_some() {
        return Err(PemError::PassphraseForPlainKey {
            what,
            path: path.to_owned(),
            passphrase: names.passphrase,
        });
    }
    Ok(key)
}

/// The `ENCRYPTED PRIVATE KEY` section of `text`, markers included.
fn encrypted_section(text: &str) -> Option<&str> {
    let start = text.find(ENCRYPTED_BEGIN)?;
    let end = text[start..].find(ENCRYPTED_END)? + start + ENCRYPTED_END.len();
    Some(&text[start..end])
}

/// `key_pem` (an unencrypted PKCS#8 PEM key) encrypted with `passphrase` as an
/// `ENCRYPTED PRIVATE KEY` (PBES2: PBKDF2 and AES-256-CBC), for `syncer dev-certs` and tests.
///
/// # Errors
/// The reason as text when `key_pem` is not a PKCS#8 key.
pub fn encrypt_private_key(key_pem: &str, passphrase: &str) -> Result<String, String> {
    use pkcs8::der::pem::LineEnding;
    use pkcs8::der::{Decode, EncodePem};
    let (label, der) = pkcs8::der::pem::decode_vec(key_pem.trim().as_bytes())
        .map_err(|e| format!("not a PEM key: {e}"))?;
    if label != "PRIVATE KEY" {
        return Err(format!("a PKCS#8 PRIVATE KEY is needed, not {label}"));
    }
    let info = pkcs8::PrivateKeyInfo::from_der(&der).map_err(|e| e.to_string())?;
    // What `openssl pkcs8 -topk8` writes by default: PBKDF2-HMAC-SHA256, AES-256-CBC.
    let salt: [u8; 16] = rand::random();
    let iv: [u8; 16] = rand::random();
    let params = pkcs8::pkcs5::pbes2::Parameters::pbkdf2_sha256_aes256cbc(2048, &salt, &iv)
        .map_err(|e| e.to_string())?;
    let encrypted = info
        .encrypt_with_params(params, passphrase.as_bytes())
        .map_err(|e| e.to_string())?;
    let info =
        EncryptedPrivateKeyInfo::from_der(encrypted.as_bytes()).map_err(|e| e.to_string())?;
    info.to_pem(LineEnding::LF).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_pem() -> String {
        rcgen::KeyPair::generate().expect("key").serialize_pem()
    }

    fn path() -> PathBuf {
        PathBuf::from("/etc/syncer/node-key.pem")
    }

    #[test]
    fn reads_a_plain_key() {
        let pem = key_pem();
        let key = private_key(&RPC, &path(), pem.as_bytes(), None).expect("plain key");
        assert!(matches!(key, PrivateKeyDer::Pkcs8(_)));
    }

    #[test]
    fn decrypts_an_encrypted_key_with_its_passphrase() {
        let pem = key_pem();
        let encrypted = encrypt_private_key(&pem, "s3cret").expect("encrypt");
        assert!(encrypted.starts_with(ENCRYPTED_BEGIN), "{encrypted}");
        let key =
            private_key(&RPC, &path(), encrypted.as_bytes(), Some("s3cret")).expect("decrypt");
        let plain = private_key(&RPC, &path(), pem.as_bytes(), None).expect("plain");
        assert_eq!(key.secret_der(), plain.secret_der());
    }

    #[test]
    fn a_wrong_passphrase_names_the_file() {
        let encrypted = encrypt_private_key(&key_pem(), "s3cret").expect("encrypt");
        let err = private_key(&RPC, &path(), encrypted.as_bytes(), Some("nope"))
            .expect_err("wrong passphrase");
        assert!(matches!(err, PemError::WrongPassphrase { .. }), "{err}");
        let text = err.to_string();
        assert!(text.contains("node-key.pem"), "{text}");
        assert!(text.contains("wrong passphrase"), "{text}");
        assert!(!text.contains("nope"), "the passphrase is shown: {text}");
    }

    #[test]
    fn an_encrypted_key_without_passphrase_says_how_to_give_one() {
        let encrypted = encrypt_private_key(&key_pem(), "s3cret").expect("encrypt");
        let err =
            private_key(&REGISTRY, &path(), encrypted.as_bytes(), None).expect_err("no passphrase");
        assert!(matches!(err, PemError::PassphraseMissing { .. }), "{err}");
        let text = err.to_string();
        assert!(text.contains("node-key.pem"), "{text}");
        assert!(text.contains("SYNCER_SC_TLS_KEY_PASSPHRASE"), "{text}");
    }

    #[test]
    fn a_passphrase_for_a_plain_key_is_refused() {
        let err = private_key(&RPC, &path(), key_pem().as_bytes(), Some("s3cret"))
            .expect_err("plain key with passphrase");
        assert!(
            matches!(err, PemError::PassphraseForPlainKey { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("node-key.pem"), "{err}");
    }

    #[test]
    fn a_legacy_encrypted_key_says_how_to_convert_it() {
        let legacy = "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\n\
                      DEK-Info: AES-256-CBC,0123456789ABCDEF0123456789ABCDEF\n\nAAAA\n\
                      -----END RSA PRIVATE KEY-----\n";
        let err = private_key(&RPC, &path(), legacy.as_bytes(), Some("x")).expect_err("legacy key");
        assert!(matches!(err, PemError::LegacyEncrypted { .. }), "{err}");
        let text = err.to_string();
        assert!(text.contains("openssl pkcs8 -topk8"), "{text}");
        assert!(text.contains("node-key.pem"), "{text}");
    }

    #[test]
    fn a_file_without_a_key_or_certificate_is_named() {
        let err = private_key(&RPC, &path(), b"hello", None).expect_err("no key");
        assert!(
            matches!(
                err,
                PemError::NoKey {
                    what: "TLS key",
                    ..
                }
            ),
            "{err}"
        );
        let err = certificates("TLS CA", &path(), key_pem().as_bytes()).expect_err("no cert");
        assert!(
            err.to_string().contains("TLS CA /etc/syncer/node-key.pem"),
            "{err}"
        );
    }
}

//! Gossip encryption keys: the keyring a member seals and opens datagrams with, and the
//! keyring file in the data directory that keeps it across restarts.
//!
//! Every sealed datagram uses XChaCha20-Poly1305 with a fresh random 24-byte nonce (random
//! nonces of that size never need counters or bookkeeping across restarts). A datagram
//! carries no key id: the receiver tries its installed keys, the primary first, so a pool in
//! the middle of a rotation (some members sending with the new key, some with the old one)
//! keeps talking as long as every member has both installed, as serf's keyring does.
//!
//! The keyring file (`<data-dir>/gossip-keyring.json`) is what a node uses when it exists;
//! `--gossip-key` only seeds it on the first start, so a later rotation is not undone by a
//! restart with the old flag.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};

/// Bytes of a gossip key.
pub const KEY_BYTES: usize = 32;
/// Bytes of the random nonce at the front of a sealed body.
pub const NONCE_BYTES: usize = 24;
/// Bytes of the authentication tag at the end of a sealed body.
pub const TAG_BYTES: usize = 16;
/// What sealing adds to a datagram.
pub const SEAL_OVERHEAD_BYTES: usize = NONCE_BYTES + TAG_BYTES;
/// Name of the keyring file in the data directory.
pub const KEYRING_FILE: &str = "gossip-keyring.json";

/// Why a key text is not a gossip key. The messages never contain the text itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("not valid base64")]
    Base64,
    #[error(
        "decodes to {0} bytes; a gossip key is exactly {KEY_BYTES} bytes (syncer keygen makes one)"
    )]
    Length(usize),
}

/// Why the keyring file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    #[error("gossip keyring {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("gossip keyring {}: not a keyring file: {source}", path.display())]
    Format {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("gossip keyring {}: key {index}: {source}", path.display())]
    Key {
        path: PathBuf,
        index: usize,
        source: KeyError,
    },
    #[error("gossip keyring {}: the primary key is not among the installed keys", path.display())]
    PrimaryNotInstalled { path: PathBuf },
}

/// One 32-byte key. `Debug` never shows the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct GossipKey([u8; KEY_BYTES]);

impl GossipKey {
    /// A new random key (`syncer keygen`).
    pub fn generate() -> GossipKey {
        GossipKey(rand::random())
    }

    /// Decodes a key from its base64 text (standard alphabet, padded).
    ///
    /// # Errors
    /// Bad base64 or a length other than [`KEY_BYTES`].
    pub fn from_base64(text: &str) -> Result<GossipKey, KeyError> {
        let bytes = BASE64.decode(text.trim()).map_err(|_| KeyError::Base64)?;
        let key: [u8; KEY_BYTES] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| KeyError::Length(bytes.len()))?;
        Ok(GossipKey(key))
    }

    /// The key as base64 text, as `--gossip-key` takes it.
    pub fn to_base64(&self) -> String {
        BASE64.encode(self.0)
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(&self.0.into())
    }
}

impl fmt::Debug for GossipKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("GossipKey(..)")
    }
}

/// The keys of one member: the primary seals, every installed key (the primary among them)
/// opens.
#[derive(Clone)]
pub struct Keyring {
    primary: XChaCha20Poly1305,
    /// The other installed keys, tried after the primary.
    others: Vec<XChaCha20Poly1305>,
    /// Every installed key, the primary first (the same order as the ciphers).
    keys: Vec<GossipKey>,
    /// Where changes are saved: the keyring file it was loaded from or seeded to.
    file: Option<PathBuf>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("installed", &self.keys.len())
            .finish_non_exhaustive()
    }
}

/// One step of a key rotation (serf's `keys` operations).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyringOp {
    /// Changes nothing; answers the installed keys.
    List,
    /// Accept datagrams sealed with this key too.
    Install(GossipKey),
    /// Seal with this (installed) key from now on.
    Use(GossipKey),
    /// Stop accepting this key; never the primary.
    Remove(GossipKey),
}

/// The installed keys, as `syncer keyring list` shows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyList {
    pub primary: String,
    /// Every installed key, the primary first.
    pub installed: Vec<String>,
}

/// Why a rotation step was refused.
#[derive(Debug, thiserror::Error)]
pub enum KeyringOpError {
    #[error("the key is not installed")]
    NotInstalled,
    #[error("the primary key cannot be removed; make another key primary first")]
    RemovePrimary,
    #[error("the gossip pool is not encrypted (no --gossip-key, no keyring file)")]
    NotEncrypted,
    #[error(transparent)]
    Save(KeyringError),
}

/// The keyring file's contents: base64 keys.
#[derive(Clone, Serialize, Deserialize)]
struct KeyringFile {
    primary: String,
    keys: Vec<String>,
}

impl Keyring {
    /// A keyring with `primary` and the `others` also accepted.
    pub fn new(primary: &GossipKey, others: &[GossipKey]) -> Keyring {
        let mut rest: Vec<&GossipKey> = Vec::new();
        for key in others {
            if key != primary && !rest.contains(&key) {
                rest.push(key);
            }
        }
        let mut keys = vec![primary.clone()];
        keys.extend(rest.iter().map(|k| (*k).clone()));
        Keyring {
            primary: primary.cipher(),
            others: rest.iter().map(|k| k.cipher()).collect(),
            keys,
            file: None,
        }
    }

    /// The installed keys as base64, the primary first.
    pub fn list(&self) -> KeyList {
        KeyList {
            primary: self.keys[0].to_base64(),
            installed: self.keys.iter().map(GossipKey::to_base64).collect(),
        }
    }

    /// Applies one step of a rotation and saves the keyring file (when there is one).
    /// Installing an installed key, or making the primary primary, changes nothing.
    ///
    /// # Errors
    /// Using or removing a key that is not installed, removing the primary, or a failed save
    /// (the keyring is then left as it was).
    pub fn apply(&mut self, op: &KeyringOp) -> Result<(), KeyringOpError> {
        let primary = &self.keys[0];
        let next = match op {
            KeyringOp::List => return Ok(()),
            KeyringOp::Install(key) => {
                let mut all = self.keys.clone();
                all.push(key.clone());
                Keyring::new(primary, &all)
            }
            KeyringOp::Use(key) => {
                if !self.keys.contains(key) {
                    return Err(KeyringOpError::NotInstalled);
                }
                Keyring::new(key, &self.keys)
            }
            KeyringOp::Remove(key) => {
                if key == primary {
                    return Err(KeyringOpError::RemovePrimary);
                }
                if !self.keys.contains(key) {
                    return Err(KeyringOpError::NotInstalled);
                }
                let rest: Vec<GossipKey> =
                    self.keys.iter().filter(|k| *k != key).cloned().collect();
                Keyring::new(primary, &rest)
            }
        };
        let next = Keyring {
            file: self.file.clone(),
            ..next
        };
        if let Some(path) = &next.file {
            next.save(path).map_err(KeyringOpError::Save)?;
        }
        *self = next;
        Ok(())
    }

    /// Encrypts `out[start..]` in place: `aad` (the frame header with the pool label) is
    /// authenticated, the random nonce goes in front of the ciphertext and the tag after it.
    pub fn seal(&self, aad: &[u8], body: &[u8], out: &mut Vec<u8>) {
        let nonce: [u8; NONCE_BYTES] = rand::random();
        out.extend_from_slice(&nonce);
        let start = out.len();
        out.extend_from_slice(body);
        // Only a plaintext longer than 256 GiB fails; a datagram never is.
        if let Ok(tag) = self.primary.encrypt_in_place_detached(
            XNonce::from_slice(&nonce),
            aad,
            &mut out[start..],
        ) {
            out.extend_from_slice(&tag);
        }
    }

    /// Decrypts a sealed body (nonce, ciphertext, tag) into `plain` with the first installed
    /// key that authenticates it; `false` when none does.
    pub fn open(&self, aad: &[u8], sealed: &[u8], plain: &mut Vec<u8>) -> bool {
        let Some((nonce, rest)) = sealed.split_at_checked(NONCE_BYTES) else {
            return false;
        };
        let Some(split) = rest.len().checked_sub(TAG_BYTES) else {
            return false;
        };
        let (ciphertext, tag) = rest.split_at(split);
        std::iter::once(&self.primary)
            .chain(&self.others)
            .any(|cipher| {
                plain.clear();
                plain.extend_from_slice(ciphertext);
                cipher
                    .decrypt_in_place_detached(
                        XNonce::from_slice(nonce),
                        aad,
                        plain,
                        Tag::from_slice(tag),
                    )
                    .is_ok()
            })
    }

    /// The keyring file of `data_dir` when there is one; otherwise, with `seed` (the
    /// `--gossip-key` setting), a new keyring of that key, written to the file; `None` (plain
    /// gossip) when there is neither.
    ///
    /// # Errors
    /// The file exists but cannot be read or holds a bad key, or it cannot be written.
    pub fn load_or_seed(
        data_dir: &Path,
        seed: Option<&GossipKey>,
    ) -> Result<Option<Keyring>, KeyringError> {
        let path = data_dir.join(KEYRING_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => {
                let mut keyring = Keyring::decode(&path, &bytes)?;
                keyring.file = Some(path);
                Ok(Some(keyring))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => match seed {
                Some(key) => {
                    let mut keyring = Keyring::new(key, &[]);
                    keyring.save(&path)?;
                    keyring.file = Some(path);
                    Ok(Some(keyring))
                }
                None => Ok(None),
            },
            Err(source) => Err(KeyringError::Io { path, source }),
        }
    }

    fn decode(path: &Path, bytes: &[u8]) -> Result<Keyring, KeyringError> {
        let file: KeyringFile =
            serde_json::from_slice(bytes).map_err(|source| KeyringError::Format {
                path: path.to_owned(),
                source,
            })?;
        let key_error = |index, source| KeyringError::Key {
            path: path.to_owned(),
            index,
            source,
        };
        let primary = GossipKey::from_base64(&file.primary).map_err(|e| key_error(0, e))?;
        let mut others = Vec::new();
        for (i, text) in file.keys.iter().enumerate() {
            others.push(GossipKey::from_base64(text).map_err(|e| key_error(i + 1, e))?);
        }
        if !others.contains(&primary) {
            return Err(KeyringError::PrimaryNotInstalled {
                path: path.to_owned(),
            });
        }
        Ok(Keyring::new(&primary, &others))
    }

    /// Writes the keyring file atomically, readable by its owner only (it holds secrets).
    fn save(&self, path: &Path) -> Result<(), KeyringError> {
        let io_error = |source| KeyringError::Io {
            path: path.to_owned(),
            source,
        };
        let tmp = path.with_extension("json.tmp");
        let contents = KeyringFile {
            primary: self.keys[0].to_base64(),
            keys: self.keys.iter().map(GossipKey::to_base64).collect(),
        };
        let bytes =
            serde_json::to_vec_pretty(&contents).map_err(|e| io_error(io::Error::other(e)))?;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&tmp).map_err(io_error)?;
        io::Write::write_all(&mut file, &bytes).map_err(io_error)?;
        file.sync_all().map_err(io_error)?;
        std::fs::rename(&tmp, path).map_err(io_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealed(keyring: &Keyring, aad: &[u8], body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        keyring.seal(aad, body, &mut out);
        out
    }

    #[test]
    fn seals_and_opens_with_any_installed_key() {
        let (a, b) = (GossipKey::generate(), GossipKey::generate());
        let old = Keyring::new(&a, &[]);
        let both_new_primary = Keyring::new(&b, std::slice::from_ref(&a));
        let msg = sealed(&old, b"hdr", b"hello");
        assert_eq!(msg.len(), 5 + SEAL_OVERHEAD_BYTES);
        let mut plain = Vec::new();
        assert!(both_new_primary.open(b"hdr", &msg, &mut plain));
        assert_eq!(plain, b"hello");
        // The new primary seals; a member that has only the old key cannot open it.
        let msg = sealed(&both_new_primary, b"hdr", b"hi");
        assert!(!old.open(b"hdr", &msg, &mut plain));
        assert!(Keyring::new(&a, &[b]).open(b"hdr", &msg, &mut plain));
        assert_eq!(plain, b"hi");
    }

    #[test]
    fn tampering_wrong_header_and_wrong_key_do_not_open() {
        let key = GossipKey::generate();
        let keyring = Keyring::new(&key, &[]);
        let msg = sealed(&keyring, b"label", b"payload");
        let mut plain = Vec::new();
        for i in 0..msg.len() {
            let mut bad = msg.clone();
            bad[i] ^= 1;
            assert!(!keyring.open(b"label", &bad, &mut plain), "byte {i}");
        }
        assert!(!keyring.open(b"other", &msg, &mut plain));
        assert!(!keyring.open(b"label", &msg[..msg.len() - 1], &mut plain));
        assert!(!keyring.open(b"label", &msg[..10], &mut plain));
        assert!(!keyring.open(b"label", &[], &mut plain));
        let stranger = Keyring::new(&GossipKey::generate(), &[]);
        assert!(!stranger.open(b"label", &msg, &mut plain));
    }

    #[test]
    fn keys_parse_from_base64_of_exactly_32_bytes() {
        let key = GossipKey::generate();
        assert_eq!(GossipKey::from_base64(&key.to_base64()), Ok(key.clone()));
        assert_eq!(GossipKey::from_base64("%%%"), Err(KeyError::Base64));
        assert_eq!(
            GossipKey::from_base64(&BASE64.encode([1u8; 16])),
            Err(KeyError::Length(16))
        );
        assert_eq!(format!("{key:?}"), "GossipKey(..)");
    }

    #[test]
    fn rotation_steps_apply_and_persist() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (GossipKey::generate(), GossipKey::generate());
        let mut ring = Keyring::load_or_seed(dir.path(), Some(&a))
            .unwrap()
            .unwrap();
        let old_msg = sealed(&ring, b"", b"old");
        assert!(matches!(
            ring.apply(&KeyringOp::Use(b.clone())),
            Err(KeyringOpError::NotInstalled)
        ));
        ring.apply(&KeyringOp::Install(b.clone())).unwrap();
        ring.apply(&KeyringOp::Install(b.clone())).unwrap();
        assert_eq!(ring.list().installed, vec![a.to_base64(), b.to_base64()]);
        ring.apply(&KeyringOp::Use(b.clone())).unwrap();
        assert_eq!(ring.list().primary, b.to_base64());
        let new_msg = sealed(&ring, b"", b"new");
        let mut plain = Vec::new();
        assert!(Keyring::new(&b, &[]).open(b"", &new_msg, &mut plain));
        assert!(ring.open(b"", &old_msg, &mut plain));
        assert!(matches!(
            ring.apply(&KeyringOp::Remove(b.clone())),
            Err(KeyringOpError::RemovePrimary)
        ));
        ring.apply(&KeyringOp::Remove(a.clone())).unwrap();
        assert!(!ring.open(b"", &old_msg, &mut plain));
        assert!(matches!(
            ring.apply(&KeyringOp::Remove(a.clone())),
            Err(KeyringOpError::NotInstalled)
        ));
        // Every step was saved: a restart finds the rotated keyring.
        let again = Keyring::load_or_seed(dir.path(), Some(&a))
            .unwrap()
            .unwrap();
        assert_eq!(again.list(), ring.list());
        assert_eq!(again.list().installed, vec![b.to_base64()]);
    }

    #[test]
    fn keyring_file_is_seeded_once_then_wins() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Keyring::load_or_seed(dir.path(), None).unwrap().is_none());
        let (a, b) = (GossipKey::generate(), GossipKey::generate());
        let seeded = Keyring::load_or_seed(dir.path(), Some(&a))
            .unwrap()
            .unwrap();
        let path = dir.path().join(KEYRING_FILE);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "mode {mode:o}");
        }
        // A later start with another flag keeps the file's key.
        let again = Keyring::load_or_seed(dir.path(), Some(&b))
            .unwrap()
            .unwrap();
        let msg = sealed(&seeded, b"", b"x");
        let mut plain = Vec::new();
        assert!(again.open(b"", &msg, &mut plain));
        assert!(!Keyring::new(&b, &[]).open(b"", &msg, &mut plain));

        std::fs::write(&path, b"{oops").unwrap();
        let err = Keyring::load_or_seed(dir.path(), None).unwrap_err();
        assert!(matches!(err, KeyringError::Format { .. }), "{err}");
        let file = format!(r#"{{"primary":"{}","keys":["short"]}}"#, a.to_base64());
        std::fs::write(&path, file).unwrap();
        let err = Keyring::load_or_seed(dir.path(), None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("key 1"), "{err}");
        assert!(!err.contains(&a.to_base64()), "{err}");
        let file = format!(
            r#"{{"primary":"{}","keys":["{}"]}}"#,
            a.to_base64(),
            b.to_base64()
        );
        std::fs::write(&path, file).unwrap();
        let err = Keyring::load_or_seed(dir.path(), None).unwrap_err();
        assert!(
            matches!(err, KeyringError::PrimaryNotInstalled { .. }),
            "{err}"
        );
    }
}

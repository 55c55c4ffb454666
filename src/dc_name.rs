//! The data centre's default name, when `--cluster-name` is not given.
//!
//! Syncer 1.4 named a data centre after the MD5 of its `--sc-addr` text, so two data centres
//! that both reach their registry as `http://127.0.0.1:30100` claimed one name. The name now
//! comes from what tells registries apart, the registry's own identity
//! ([`RegistryIdentity`]: its kind and the id it gives itself), and is saved in the data
//! directory ([`NAME_FILE`]) on the first start:
//! - **unique across data centres**: two data centres serve two registries, whatever address
//!   text reaches them;
//! - **identical for the members of one cluster-mode data centre**: they serve the same
//!   registry, so each derives the same name on its first start;
//! - **stable across restarts**: the saved name is used from then on, even when the
//!   registry's id changes later (Service Center's is the id of its own instance, stable
//!   only while that process runs), and the registry need not answer for a restart.
//!
//! A data directory that an earlier release used ([`LEGACY_MARK`] present, no saved name)
//! keeps the earlier default, the MD5 name, so an upgrade never renames a running data centre
//! (its store prefix and its copies elsewhere are keyed by that name); it is saved and
//! logged with a warning to set `--cluster-name`. A name given with `--cluster-name` is used
//! as it is, and nothing is saved.

use std::path::{Path, PathBuf};

use sha1::{Digest, Sha1};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::backoff::Backoff;
use crate::config::check_cluster_name;
use crate::registry::{Registry, RegistryIdentity};

/// The file in the data directory that holds the derived name.
pub const NAME_FILE: &str = "cluster-name";
/// A file an earlier release left in every data directory it used (the gossip state).
pub const LEGACY_MARK: &str = "gossip.json";
/// Pauses between attempts to identify the registry on a first start.
const IDENTIFY_RETRY: Backoff = Backoff::new(
    std::time::Duration::from_secs(1),
    std::time::Duration::from_secs(30),
);

/// Why the name could not be read or saved.
#[derive(Debug, thiserror::Error)]
pub enum NameError {
    #[error("data centre name file {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("data centre name file {} does not hold a usable name ({content:?}); remove it or set --cluster-name", path.display())]
    Invalid { path: PathBuf, content: String },
}

/// The name a data centre serving the registry `identity` gets: 32 hex characters of SHA-1
/// over its kind and id.
pub fn name_of(identity: &RegistryIdentity) -> String {
    let mut hasher = Sha1::new();
    hasher.update(identity.kind.as_bytes());
    hasher.update([0]);
    hasher.update(identity.id.as_bytes());
    let digest = hasher.finalize();
    hex::encode(&digest[..16])
}

/// The name saved in `data_dir`, if any.
///
/// # Errors
/// [`NameError`] when the file cannot be read or holds no usable name.
pub fn saved(data_dir: &Path) -> Result<Option<String>, NameError> {
    let path = data_dir.join(NAME_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(NameError::Io { path, source }),
    };
    let name = text.trim();
    if check_cluster_name(name).is_err() {
        return Err(NameError::Invalid {
            path,
            content: text,
        });
    }
    Ok(Some(name.to_owned()))
}

/// Saves `name` in `data_dir` (written aside, then renamed: never half a name).
///
/// # Errors
/// [`NameError::Io`].
pub fn save(data_dir: &Path, name: &str) -> Result<(), NameError> {
    let path = data_dir.join(NAME_FILE);
    let temp = data_dir.join(format!("{NAME_FILE}.tmp"));
    let io = |source| NameError::Io {
        path: path.clone(),
        source,
    };
    std::fs::write(&temp, format!("{name}\n")).map_err(io)?;
    std::fs::rename(&temp, &path).map_err(io)
}

/// The default name of this data centre: the saved one; else, in a data directory of an
/// earlier release, `legacy` (saved); else the name of the registry's identity, asked until
/// the registry answers (saved). `None` when `token` is cancelled first.
///
/// # Errors
/// [`NameError`] when the name file cannot be read or written.
pub async fn resolve(
    data_dir: &Path,
    registry: &dyn Registry,
    legacy: String,
    token: &CancellationToken,
) -> Result<Option<String>, NameError> {
    if let Some(name) = saved(data_dir)? {
        return Ok(Some(name));
    }
    if data_dir.join(LEGACY_MARK).exists() {
        warn!(name = %legacy, "keeping the data centre name of the earlier release (MD5 of the registry addresses) for this data directory; two data centres with the same --sc-addr text share it: set --cluster-name");
        save(data_dir, &legacy)?;
        return Ok(Some(legacy));
    }
    let mut retry = IDENTIFY_RETRY;
    let identity = loop {
        let answer = tokio::select! {
            biased;
            () = token.cancelled() => return Ok(None),
            answer = registry.identity() => answer,
        };
        match answer {
            Ok(identity) => break identity,
            Err(e) => {
                warn!(error = %e, retry_in = ?retry.peek(), "the data centre name comes from the registry's identity on the first start: waiting for the registry (or set --cluster-name)");
                if !retry.wait(token).await {
                    return Ok(None);
                }
            }
        }
    };
    let name = name_of(&identity);
    save(data_dir, &name)?;
    info!(%name, kind = %identity.kind, id = %identity.id, "data centre name derived from the registry's identity and saved");
    Ok(Some(name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::memory::MemoryRegistry;

    fn identity(id: &str) -> RegistryIdentity {
        RegistryIdentity {
            kind: "servicecenter".into(),
            version: "1.4.8".into(),
            id: id.into(),
        }
    }

    #[test]
    fn registries_give_distinct_names_and_versions_do_not_matter() {
        let a = name_of(&identity("a1b2"));
        assert_eq!(a.len(), 32);
        assert_ne!(a, name_of(&identity("c3d4")));
        let mut upgraded = identity("a1b2");
        upgraded.version = "2.1.0".into();
        assert_eq!(a, name_of(&upgraded));
    }

    #[tokio::test]
    async fn the_first_start_derives_and_saves_later_starts_read() {
        let dir = tempfile::tempdir().expect("temp dir");
        let token = CancellationToken::new();
        let registry = MemoryRegistry::new("dc-a");
        let first = resolve(dir.path(), &registry, "legacy".into(), &token)
            .await
            .expect("resolved")
            .expect("not cancelled");
        assert_ne!(first, "legacy");
        // Another registry answering later does not rename the data centre.
        let other = MemoryRegistry::new("dc-b");
        let again = resolve(dir.path(), &other, "legacy".into(), &token)
            .await
            .expect("resolved");
        assert_eq!(again, Some(first.clone()));
        // A second data directory on the same registry (a cluster-mode member) agrees.
        let member = tempfile::tempdir().expect("temp dir");
        let same = resolve(member.path(), &registry, "legacy".into(), &token)
            .await
            .expect("resolved");
        assert_eq!(same, Some(first));
    }

    #[tokio::test]
    async fn a_data_directory_of_an_earlier_release_keeps_its_name() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join(LEGACY_MARK), "{}").expect("write");
        let token = CancellationToken::new();
        let registry = MemoryRegistry::new("dc-a");
        let name = resolve(dir.path(), &registry, "0123abcd".into(), &token)
            .await
            .expect("resolved");
        assert_eq!(name.as_deref(), Some("0123abcd"));
        assert_eq!(
            saved(dir.path()).expect("readable").as_deref(),
            Some("0123abcd")
        );
    }

    #[test]
    fn a_damaged_name_file_is_an_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join(NAME_FILE), "bad name\n").expect("write");
        assert!(matches!(saved(dir.path()), Err(NameError::Invalid { .. })));
    }
}

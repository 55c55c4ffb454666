//! Finding the etcd executable that `--etcd-bin` names.
//!
//! Validation checks it before anything binds (cluster mode without `--etcd-endpoints` runs an
//! etcd member, and a missing executable should stop the daemon at once, not after it joined
//! the pool), and the managed member (`cluster::managed`) resolves it again when it
//! starts etcd; both use this one lookup.

use std::path::{Path, PathBuf};

/// The etcd executable cannot be used; the message says why and what to do.
#[derive(Debug, Clone, thiserror::Error)]
#[error("etcd executable '{}' {reason}: install etcd-server or pass --etcd-bin", bin.display())]
pub struct ExecutableNotFound {
    /// The name or path as given.
    pub bin: PathBuf,
    /// `does not exist`, `is not an executable file` or `was not found on PATH (...)`.
    pub reason: String,
}

/// The executable `bin` names: itself when it is a path, else the first match on `PATH`.
///
/// # Errors
/// [`ExecutableNotFound`], saying why.
pub fn resolve_executable(bin: &Path) -> Result<PathBuf, ExecutableNotFound> {
    let not_found = |reason: String| ExecutableNotFound {
        bin: bin.to_owned(),
        reason,
    };
    if bin.components().count() > 1 || bin.is_absolute() {
        return if !bin.exists() {
            Err(not_found("does not exist".into()))
        } else if !is_executable(bin) {
            Err(not_found("is not an executable file".into()))
        } else {
            Ok(bin.to_owned())
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(bin))
        .find(|candidate| is_executable(candidate))
        .ok_or_else(|| {
            not_found(format!(
                "was not found on PATH ({})",
                path.to_string_lossy()
            ))
        })
}

fn is_executable(path: &Path) -> bool {
    let Ok(metadata) = std::fs::metadata(path) else {
        return false;
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        metadata.is_file() && metadata.permissions().mode() & 0o111 != 0
    }
    #[cfg(not(unix))]
    {
        metadata.is_file()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_executable_names_the_remedy() {
        let e = resolve_executable(Path::new("/nonexistent/etcd")).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("/nonexistent/etcd") && text.contains("does not exist"),
            "{text}"
        );
        assert!(
            text.contains("etcd-server") && text.contains("--etcd-bin"),
            "{text}"
        );
        let e = resolve_executable(Path::new("no-such-etcd-binary")).unwrap_err();
        assert!(e.to_string().contains("PATH"), "{e}");
    }

    #[test]
    fn a_path_must_be_an_executable_file() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("etcd");
        std::fs::write(&plain, "#!/bin/sh\n").unwrap();
        let e = resolve_executable(&plain).unwrap_err();
        assert!(e.reason.contains("not an executable"), "{e}");
        let e = resolve_executable(dir.path()).unwrap_err();
        assert!(e.reason.contains("not an executable"), "{e}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o755)).unwrap();
            assert_eq!(resolve_executable(&plain).unwrap(), plain);
        }
    }

    #[test]
    fn a_bare_name_is_looked_up_on_path() {
        // `sh` is on the PATH of every machine that runs these tests.
        let found = resolve_executable(Path::new("sh")).unwrap();
        assert!(
            found.is_absolute() || found.components().count() > 1,
            "{found:?}"
        );
        assert!(found.ends_with("sh"));
    }
}

//! The little state the pool keeps across restarts, in `--data-dir/gossip.json`: the last
//! generation used and the members known when it was written, so a restarted daemon rejoins
//! without `--join-addr` and always comes back as a newer incarnation.

use std::io;
use std::net::SocketAddr;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// Contents of the state file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedState {
    pub generation: u64,
    /// Gossip addresses of the live members (the local one excluded).
    pub members: Vec<SavedMember>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedMember {
    pub name: String,
    pub addr: SocketAddr,
}

/// Reads the state file; a missing file is an empty state.
///
/// # Errors
/// When the file exists but cannot be read or decoded (the message names the file).
pub fn load_state(path: &Path) -> Result<SavedState, String> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| format!("{}: not a gossip state file: {e}", path.display())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(SavedState::default()),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// Writes the state file atomically (a temporary file renamed over the old one).
///
/// # Errors
/// I/O errors of the write or the rename.
pub fn save_state(path: &Path, state: &SavedState) -> io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    let bytes = serde_json::to_vec_pretty(state).map_err(io::Error::other)?;
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_missing_and_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gossip.json");
        assert_eq!(load_state(&path).unwrap(), SavedState::default());
        let state = SavedState {
            generation: 42,
            members: vec![SavedMember {
                name: "b".into(),
                addr: "127.0.0.2:30190".parse().unwrap(),
            }],
        };
        save_state(&path, &state).unwrap();
        assert_eq!(load_state(&path).unwrap(), state);
        std::fs::write(&path, b"{not json").unwrap();
        let err = load_state(&path).unwrap_err();
        assert!(err.contains("gossip.json"), "{err}");
    }
}

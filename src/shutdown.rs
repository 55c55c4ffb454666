//! Signals and the root of the cancellation tree.
//!
//! SIGINT or SIGTERM cancels the root token, which starts a graceful shutdown (each subsystem
//! holds a child token). A second signal exits at once with status 130.

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Exit status after a second signal: 128 + SIGINT, as shells report an interrupted program.
pub const FORCED_EXIT_CODE: i32 = 130;

/// Waits for SIGINT or SIGTERM; returns the signal's name, or `None` when signals cannot be
/// received.
async fn next_signal() -> Option<&'static str> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            return None;
        };
        tokio::select! {
            _ = term.recv() => Some("SIGTERM"),
            _ = int.recv() => Some("SIGINT"),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await.ok().map(|()| "ctrl-c")
    }
}

/// Spawns the signal watcher: the first signal cancels `root`, the second exits the process.
pub fn spawn_signal_handler(root: CancellationToken) {
    tokio::spawn(async move {
        let Some(first) = next_signal().await else {
            warn!("cannot listen for signals; stop the daemon with SIGKILL");
            return;
        };
        info!(
            signal = first,
            "shutting down gracefully; send the signal again to exit at once"
        );
        root.cancel();
        if let Some(second) = next_signal().await {
            warn!(signal = second, "second signal, exiting now");
            std::process::exit(FORCED_EXIT_CODE);
        }
    });
}

//! Reload without restart: on SIGHUP, and when the files' contents change (polled every
//! [`POLL_INTERVAL`], which also catches a Kubernetes secret volume swapping its symbolic
//! links), every TLS configuration is read again. A good set is used by every new
//! handshake; a bad one is refused with an error naming the file and the previous set stays.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::TlsMetrics;

/// How often the files are read to tell a change.
pub const POLL_INTERVAL: Duration = Duration::from_secs(3);

/// A digest of files' contents as read (`Ok`: the contents' own digest), or of why they
/// could not be read: two reads differ when the files or the reason changed.
pub(crate) fn digest_of_read<T, E: std::fmt::Display>(
    read: Result<T, E>,
    digest: impl FnOnce(&T) -> u64,
) -> u64 {
    use std::hash::{DefaultHasher, Hash, Hasher};
    match read {
        Ok(contents) => digest(&contents),
        Err(e) => {
            let mut hasher = DefaultHasher::new();
            e.to_string().hash(&mut hasher);
            hasher.finish()
        }
    }
}

/// A TLS configuration that can be read again from its files.
pub trait Reloadable: Send + Sync {
    /// What it is, for the logs ("rpc", "registry client").
    fn name(&self) -> &'static str;
    /// Whether the files' contents differ from when they were last read.
    fn changed(&self) -> bool;
    /// Reads the files again; puts them in force when they are good.
    ///
    /// # Errors
    /// Why the files were refused (the configuration in force stays).
    fn reload(&self) -> Result<(), Box<dyn std::error::Error + Send + Sync>>;
}

/// What the watcher reloads. Parts opened after the watcher started (the etcd client, once
/// etcd is reached) join it then; one added under the name of another replaces it.
#[derive(Clone, Default)]
pub struct ReloadSet {
    items: Arc<Mutex<Vec<Arc<dyn Reloadable>>>>,
}

impl ReloadSet {
    /// Adds `item`, replacing one of the same name.
    pub fn add(&self, item: Arc<dyn Reloadable>) {
        let mut items = self.items.lock().unwrap_or_else(|p| p.into_inner());
        items.retain(|i| i.name() != item.name());
        items.push(item);
    }

    /// The items now.
    fn items(&self) -> Vec<Arc<dyn Reloadable>> {
        self.items.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Reloads the items of `set` on SIGHUP and when their files change, until `token` is
/// cancelled. Without anything to reload, SIGHUP is only logged (rather than ending the
/// process, as its default action would).
pub async fn watch(set: ReloadSet, metrics: TlsMetrics, token: CancellationToken) {
    let mut hangup = hangup();
    let mut poll = tokio::time::interval(POLL_INTERVAL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    poll.tick().await;
    loop {
        let signal = tokio::select! {
            () = token.cancelled() => return,
            () = next_hangup(&mut hangup) => true,
            _ = poll.tick() => false,
        };
        let items = set.items();
        if signal && items.is_empty() {
            info!("SIGHUP: no TLS configuration to reload");
        }
        for item in &items {
            let trigger = if signal {
                "SIGHUP"
            } else if item.changed() {
                "file change"
            } else {
                continue;
            };
            match item.reload() {
                Ok(()) => {
                    metrics.reload(true);
                    info!(
                        tls = item.name(),
                        trigger, "TLS certificate, key and CA reloaded; new connections use them"
                    );
                }
                Err(e) => {
                    metrics.reload(false);
                    error!(
                        tls = item.name(),
                        trigger,
                        error = %e,
                        "TLS files refused; the previous certificate, key and CA stay in use"
                    );
                }
            }
        }
    }
}

#[cfg(unix)]
type Hangup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangup = Option<()>;

#[cfg(unix)]
fn hangup() -> Hangup {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::hangup()) {
        Ok(signal) => Some(signal),
        Err(e) => {
            warn!(error = %e, "cannot listen for SIGHUP; TLS files are reloaded when they change");
            None
        }
    }
}

#[cfg(not(unix))]
fn hangup() -> Hangup {
    None
}

/// The next SIGHUP; never, when signals cannot be received.
async fn next_hangup(hangup: &mut Hangup) {
    #[cfg(unix)]
    if let Some(signal) = hangup {
        if signal.recv().await.is_some() {
            return;
        }
        *hangup = None;
    }
    #[cfg(not(unix))]
    let _ = hangup;
    std::future::pending::<()>().await;
}

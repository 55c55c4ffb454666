//! Running under a service manager: systemd's notification protocol (`Type=notify`) and its
//! watchdog. (`systemctl reload` sends SIGHUP, which reloads the TLS files and never ends
//! the process: `tls::reload`.)
//!
//! systemd passes `NOTIFY_SOCKET` (a datagram socket: an absolute path, or `@name` for an
//! abstract one) and, with `WatchdogSec=`, `WATCHDOG_USEC` (and `WATCHDOG_PID`, which must
//! be ours). The daemon sends newline-separated `KEY=value` datagrams:
//! - `READY=1` with a `STATUS=` line, once its listeners are bound and every part is spawned
//!   (the point of the `syncer is ready` log line; `node::run`);
//! - `STOPPING=1` when the graceful stop begins;
//! - `WATCHDOG=1` every half watchdog period, from [`spawn_keeper`], only after a probe of
//!   the node answered (`node::run` probes the gossip pool's actor, see there), with the
//!   `STATUS=` line refreshed when the node's role changes.
//!
//! The managed etcd member does not inherit these variables (`cluster::managed`): etcd speaks
//! the protocol too, and its `READY=1` is not the syncer's.
//!
//! Without `NOTIFY_SOCKET` nothing is sent. The protocol is a few lines over std's
//! `UnixDatagram` (no crate): a send that fails is logged once at debug level and never
//! stops the daemon. Imports nothing of the crate.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

/// The socket systemd listens on for notifications.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";
/// The watchdog period in microseconds (`WatchdogSec=`).
pub const WATCHDOG_USEC: &str = "WATCHDOG_USEC";
/// The process the watchdog period is meant for.
pub const WATCHDOG_PID: &str = "WATCHDOG_PID";

/// How often the status is refreshed when no watchdog is asked for.
const STATUS_EVERY: Duration = Duration::from_secs(10);
/// How long a liveness probe may take before the ping is skipped.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Where notifications go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A socket file.
    Path(PathBuf),
    /// An abstract socket (`@name` in the variable), its name without the `@`.
    Abstract(Vec<u8>),
}

/// Why a variable of the protocol is not used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    #[error("{NOTIFY_SOCKET}={0:?} is neither an absolute path nor an abstract name (@...)")]
    Socket(String),
    #[error("{WATCHDOG_USEC}={0:?} is not a positive number of microseconds")]
    Usec(String),
    #[error("{WATCHDOG_PID}={0:?} is not a process id")]
    Pid(String),
}

/// The target named by `NOTIFY_SOCKET`; `None` when it is empty.
///
/// # Errors
/// [`EnvError::Socket`] for a relative path or a bare `@`.
pub fn parse_socket(value: &OsStr) -> Result<Option<Target>, EnvError> {
    let bytes = value.as_bytes();
    match bytes {
        [] => Ok(None),
        [b'@', name @ ..] if !name.is_empty() => Ok(Some(Target::Abstract(name.to_vec()))),
        [b'/', ..] => Ok(Some(Target::Path(PathBuf::from(value)))),
        _ => Err(EnvError::Socket(value.to_string_lossy().into_owned())),
    }
}

/// The watchdog period given by `WATCHDOG_USEC` for the process `own_pid`: `None` without
/// it, or when `WATCHDOG_PID` names another process (a parent's watchdog, inherited).
///
/// # Errors
/// [`EnvError`] for a value that is not a number (or a period of 0).
pub fn watchdog_period(
    usec: Option<&str>,
    pid: Option<&str>,
    own_pid: u32,
) -> Result<Option<Duration>, EnvError> {
    let Some(usec) = usec else { return Ok(None) };
    if let Some(pid) = pid {
        let pid: u32 = pid
            .trim()
            .parse()
            .map_err(|_| EnvError::Pid(pid.to_owned()))?;
        if pid != own_pid {
            return Ok(None);
        }
    }
    match usec.trim().parse::<u64>() {
        Ok(0) | Err(_) => Err(EnvError::Usec(usec.to_owned())),
        Ok(usec) => Ok(Some(Duration::from_micros(usec))),
    }
}

/// The `STATUS=` text: which node, data centre and role.
pub fn status_text(node: &str, cluster: &str, mode: &str, role: &str) -> String {
    format!("node {node}, data centre {cluster}, {mode} mode, {role}")
}

/// One datagram of the protocol: `KEY=value` lines. A value cannot hold a newline (it would
/// start a new assignment), so newlines in it become spaces.
pub fn message(fields: &[(&str, &str)]) -> String {
    let mut text = String::new();
    for (key, value) in fields {
        text.push_str(key);
        text.push('=');
        text.extend(value.chars().map(|c| if c == '\n' { ' ' } else { c }));
        text.push('\n');
    }
    text
}

/// Sends notifications to the service manager, when there is one. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Notifier {
    inner: Option<Arc<Inner>>,
}

#[derive(Debug)]
struct Inner {
    target: Target,
    socket: UnixDatagram,
    /// The watchdog period systemd asked for.
    watchdog: Option<Duration>,
    /// Whether a failed send was logged already.
    failed: AtomicBool,
}

impl Notifier {
    /// A notifier that sends nothing.
    pub fn disabled() -> Notifier {
        Notifier::default()
    }

    /// The notifier the environment asks for. A variable it cannot use is logged (warning)
    /// and ignored: the daemon runs on.
    pub fn from_env() -> Notifier {
        let socket = std::env::var_os(NOTIFY_SOCKET);
        let usec = std::env::var(WATCHDOG_USEC).ok();
        let pid = std::env::var(WATCHDOG_PID).ok();
        Notifier::new(
            socket.as_deref(),
            usec.as_deref(),
            pid.as_deref(),
            std::process::id(),
        )
    }

    /// The notifier of these variable values (`None`: not set), for the process `own_pid`.
    pub fn new(
        socket: Option<&OsStr>,
        usec: Option<&str>,
        pid: Option<&str>,
        own_pid: u32,
    ) -> Notifier {
        let target = match socket.map(parse_socket) {
            None | Some(Ok(None)) => return Notifier::disabled(),
            Some(Ok(Some(target))) => target,
            Some(Err(e)) => {
                warn!("{e}; not notifying the service manager");
                return Notifier::disabled();
            }
        };
        let watchdog = watchdog_period(usec, pid, own_pid).unwrap_or_else(|e| {
            warn!("{e}; not feeding the watchdog");
            None
        });
        // Non-blocking: a manager that does not read its queue costs a notification, never
        // a stuck runtime thread.
        let socket = match UnixDatagram::unbound().and_then(|s| {
            s.set_nonblocking(true)?;
            Ok(s)
        }) {
            Ok(socket) => socket,
            Err(e) => {
                debug!(error = %e, "cannot open a socket for service manager notifications");
                return Notifier::disabled();
            }
        };
        debug!(target = ?target, ?watchdog, "notifying the service manager");
        Notifier {
            inner: Some(Arc::new(Inner {
                target,
                socket,
                watchdog,
                failed: AtomicBool::new(false),
            })),
        }
    }

    /// Whether notifications are sent at all.
    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// The watchdog period systemd asked for, if any.
    pub fn watchdog(&self) -> Option<Duration> {
        self.inner.as_ref().and_then(|i| i.watchdog)
    }

    /// `READY=1`: the daemon serves.
    pub fn ready(&self, status: &str) {
        self.send(&[("READY", "1"), ("STATUS", status)]);
    }

    /// `STOPPING=1`: the graceful stop begins.
    pub fn stopping(&self) {
        self.send(&[("STOPPING", "1"), ("STATUS", "stopping")]);
    }

    /// Sends one datagram of `fields`; a failure is logged once, at debug level.
    pub fn send(&self, fields: &[(&str, &str)]) {
        let Some(inner) = &self.inner else { return };
        let text = message(fields);
        if let Err(e) = inner.send(text.as_bytes())
            && !inner.failed.swap(true, Ordering::Relaxed)
        {
            debug!(target = ?inner.target, error = %e, "cannot notify the service manager (logged once)");
        }
    }
}

impl Inner {
    fn send(&self, datagram: &[u8]) -> std::io::Result<usize> {
        match &self.target {
            Target::Path(path) => self.socket.send_to(datagram, path),
            Target::Abstract(name) => {
                #[cfg(target_os = "linux")]
                {
                    use std::os::linux::net::SocketAddrExt;
                    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                    self.socket.send_to_addr(datagram, &addr)
                }
                #[cfg(not(target_os = "linux"))]
                {
                    let _ = name;
                    Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
                }
            }
        }
    }
}

/// Spawns the task that feeds the watchdog and keeps `STATUS=` current, on `tracker` until
/// `token` is cancelled; nothing when notifications are off.
///
/// Every half watchdog period (every [`STATUS_EVERY`] without a watchdog) it awaits
/// `probe`, which answers the current status text when the node is alive. `WATCHDOG=1` is
/// sent only when the probe answered within [`PROBE_TIMEOUT`]: a runtime that no longer
/// schedules this task, or a probed loop that no longer answers, lets systemd's watchdog
/// fire. The status is sent when it changed.
pub fn spawn_keeper<F, Fut>(
    notifier: &Notifier,
    initial_status: String,
    mut probe: F,
    token: CancellationToken,
    tracker: &TaskTracker,
) where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = Option<String>> + Send,
{
    if !notifier.is_enabled() {
        return;
    }
    let notifier = notifier.clone();
    let watchdog = notifier.watchdog();
    let every = watchdog.map_or(STATUS_EVERY, |period| period / 2);
    tracker.spawn(async move {
        let mut status = initial_status;
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                () = token.cancelled() => return,
                _ = ticks.tick() => {}
            }
            let answer = tokio::select! {
                biased;
                () = token.cancelled() => return,
                answer = tokio::time::timeout(PROBE_TIMEOUT, probe()) => answer,
            };
            let Ok(Some(now)) = answer else {
                warn!("the liveness probe did not answer; the watchdog is not fed");
                continue;
            };
            let changed = now != status;
            let mut fields = Vec::with_capacity(2);
            if watchdog.is_some() {
                fields.push(("WATCHDOG", "1"));
            }
            if changed {
                fields.push(("STATUS", now.as_str()));
            }
            if !fields.is_empty() {
                notifier.send(&fields);
            }
            if changed {
                status = now;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_targets() {
        assert_eq!(parse_socket(OsStr::new("")), Ok(None));
        assert_eq!(
            parse_socket(OsStr::new("/run/systemd/notify")),
            Ok(Some(Target::Path("/run/systemd/notify".into())))
        );
        assert_eq!(
            parse_socket(OsStr::new("@/org/freedesktop/systemd1/notify/123")),
            Ok(Some(Target::Abstract(
                b"/org/freedesktop/systemd1/notify/123".to_vec()
            )))
        );
        for bad in ["@", "relative/notify", "notify"] {
            let err = parse_socket(OsStr::new(bad)).unwrap_err();
            assert!(err.to_string().contains("NOTIFY_SOCKET"), "{err}");
            assert!(err.to_string().contains(bad), "{err}");
        }
    }

    #[test]
    fn watchdog_period_for_this_process_only() {
        assert_eq!(watchdog_period(None, None, 7), Ok(None));
        assert_eq!(
            watchdog_period(Some("30000000"), None, 7),
            Ok(Some(Duration::from_secs(30)))
        );
        assert_eq!(
            watchdog_period(Some("500000"), Some("7"), 7),
            Ok(Some(Duration::from_millis(500)))
        );
        // Another process's watchdog (inherited from a parent) is not ours.
        assert_eq!(watchdog_period(Some("500000"), Some("8"), 7), Ok(None));
        // Without WATCHDOG_USEC, WATCHDOG_PID alone means nothing.
        assert_eq!(watchdog_period(None, Some("x"), 7), Ok(None));
        assert_eq!(
            watchdog_period(Some("0"), None, 7),
            Err(EnvError::Usec("0".into()))
        );
        assert_eq!(
            watchdog_period(Some("30s"), None, 7),
            Err(EnvError::Usec("30s".into()))
        );
        assert_eq!(
            watchdog_period(Some("1"), Some("pid"), 7),
            Err(EnvError::Pid("pid".into()))
        );
    }

    #[test]
    fn messages_are_key_value_lines() {
        assert_eq!(
            message(&[("READY", "1"), ("STATUS", "node a\nb")]),
            "READY=1\nSTATUS=node a b\n"
        );
        assert_eq!(
            status_text("n1", "dc1", "cluster", "standby"),
            "node n1, data centre dc1, cluster mode, standby"
        );
    }

    #[test]
    fn without_a_socket_nothing_is_enabled() {
        assert!(!Notifier::new(None, Some("1000000"), None, 1).is_enabled());
        assert!(!Notifier::new(Some(OsStr::new("")), None, None, 1).is_enabled());
        assert!(!Notifier::new(Some(OsStr::new("relative")), None, None, 1).is_enabled());
        // Sending on a disabled notifier is a no-op.
        Notifier::disabled().ready("x");
    }

    fn recv(socket: &UnixDatagram) -> String {
        let mut buf = [0u8; 512];
        let n = socket.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn notifications_reach_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        listener
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let notifier = Notifier::new(Some(path.as_os_str()), Some("2000000"), None, 1);
        assert_eq!(notifier.watchdog(), Some(Duration::from_secs(2)));
        notifier.ready("node n1");
        assert_eq!(recv(&listener), "READY=1\nSTATUS=node n1\n");
        notifier.stopping();
        assert_eq!(recv(&listener), "STOPPING=1\nSTATUS=stopping\n");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn notifications_reach_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("syncer-notify-unit-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let listener = UnixDatagram::bind_addr(&addr).unwrap();
        listener
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let variable = format!("@{name}");
        let notifier = Notifier::new(Some(OsStr::new(&variable)), None, None, 1);
        notifier.ready("abstract");
        assert_eq!(recv(&listener), "READY=1\nSTATUS=abstract\n");
    }

    #[test]
    fn a_send_that_fails_is_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join("nobody-listens");
        let notifier = Notifier::new(Some(gone.as_os_str()), None, None, 1);
        assert!(notifier.is_enabled());
        notifier.ready("x");
        notifier.stopping();
    }

    #[tokio::test(start_paused = true)]
    async fn the_keeper_pings_only_while_the_probe_answers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        listener.set_nonblocking(true).unwrap();
        let notifier = Notifier::new(Some(path.as_os_str()), Some("1000000"), None, 1);
        let alive = Arc::new(AtomicBool::new(true));
        let role = Arc::new(std::sync::Mutex::new("standby".to_owned()));
        let (token, tracker) = (CancellationToken::new(), TaskTracker::new());
        let probe = {
            let (alive, role) = (alive.clone(), role.clone());
            move || {
                let (alive, role) = (alive.clone(), role.clone());
                async move {
                    if alive.load(Ordering::Relaxed) {
                        Some(role.lock().unwrap().clone())
                    } else {
                        std::future::pending::<()>().await;
                        None
                    }
                }
            }
        };
        spawn_keeper(&notifier, "standby".into(), probe, token.clone(), &tracker);
        let drain = || {
            let mut got = Vec::new();
            let mut buf = [0u8; 512];
            while let Ok(n) = listener.recv(&mut buf) {
                got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
            got
        };
        // Ticks at 0, 0.5 s, 1 s.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(drain(), ["WATCHDOG=1\n"; 3]);
        *role.lock().unwrap() = "active".into();
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(drain(), ["WATCHDOG=1\nSTATUS=active\n"]);
        // A probe that hangs: no ping until it times out, and none after.
        alive.store(false, Ordering::Relaxed);
        tokio::time::sleep(PROBE_TIMEOUT * 2).await;
        assert_eq!(drain(), Vec::<String>::new());
        token.cancel();
        tracker.close();
        tracker.wait().await;
    }
}

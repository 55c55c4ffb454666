//! A real single-member etcd for integration tests: a temporary data directory, client and
//! peer listeners on free 127.0.0.1 ports, readiness by polling `/health` with a deadline.
//! [`EtcdServer::start_tls`] serves TLS on the client URL and demands client certificates
//! (`--client-cert-auth`); it is ready once its log says it serves clients.
//! `stop` and `restart` keep the data directory and the ports; dropping the value kills the
//! process.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How long etcd may take to answer after a start.
const START_DEADLINE: Duration = Duration::from_secs(30);
/// How long one health probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// Pause between health probes.
const PROBE_INTERVAL: Duration = Duration::from_millis(20);
/// What etcd logs once it serves clients.
const SERVING: &str = "serving client requests on";

/// A running (or stopped) etcd member.
pub struct EtcdServer {
    /// The etcd process; `None` while stopped.
    child: Option<Child>,
    /// The etcd binary.
    binary: PathBuf,
    /// Holds the data directory and the log; removed on drop.
    dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
    /// `(cert, key, ca)` of a TLS server.
    tls: Option<(PathBuf, PathBuf, PathBuf)>,
}

impl EtcdServer {
    /// Starts etcd and waits until it answers.
    ///
    /// # Panics
    /// When no etcd binary is found, or it does not become healthy within the deadline.
    pub fn start() -> EtcdServer {
        let binary = find_etcd()
            .unwrap_or_else(|| panic!("etcd not found: run scripts/setup (installs etcd-server)"));
        let dir = tempfile::Builder::new()
            .prefix("syncer-etcd-")
            .tempdir()
            .expect("create a temporary directory for etcd");
        let mut server = EtcdServer {
            child: None,
            binary,
            dir,
            client_port: free_port(),
            peer_port: free_port(),
            tls: None,
        };
        server.spawn();
        server
    }

    /// Starts etcd serving TLS on its client URL with `cert` and `key`, demanding client
    /// certificates signed by `ca` (`--client-cert-auth`), and waits until it serves.
    ///
    /// # Panics
    /// As [`EtcdServer::start`].
    pub fn start_tls(cert: &Path, key: &Path, ca: &Path) -> EtcdServer {
        let binary = find_etcd()
            .unwrap_or_else(|| panic!("etcd not found: run scripts/setup (installs etcd-server)"));
        let dir = tempfile::Builder::new()
            .prefix("syncer-etcd-tls-")
            .tempdir()
            .expect("create a temporary directory for etcd");
        let mut server = EtcdServer {
            child: None,
            binary,
            dir,
            client_port: free_port(),
            peer_port: free_port(),
            tls: Some((cert.to_owned(), key.to_owned(), ca.to_owned())),
        };
        server.spawn();
        server
    }

    /// The client URL as text, `http://127.0.0.1:<port>` (`https://` for a TLS server).
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    /// The client URL.
    pub fn url(&self) -> url::Url {
        url::Url::parse(&self.endpoint()).expect("the endpoint is a URL")
    }

    /// Kills etcd and waits for it to exit. The data directory stays.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts etcd again on the same data directory and ports and waits until it answers.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Starts a TLS etcd again trusting only client certificates signed by `ca`.
    pub fn restart_trusting(&mut self, ca: &Path) {
        let tls = self.tls.as_mut().expect("a TLS etcd");
        tls.2 = ca.to_owned();
        self.restart();
    }

    /// Freezes etcd (SIGSTOP): its connections stay open and its answers do not come, as
    /// with an etcd that hangs. Dropping the value still kills it.
    pub fn pause(&self) {
        self.send("-STOP");
    }

    /// Lets a paused etcd run again (SIGCONT).
    pub fn resume(&self) {
        self.send("-CONT");
    }

    fn send(&self, signal: &str) {
        let child = self.child.as_ref().expect("etcd is running");
        let status = Command::new("kill")
            .arg(signal)
            .arg(child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} failed");
    }

    /// What etcd logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    fn spawn(&mut self) {
        let client = self.endpoint();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open the etcd log");
        let log_err = log.try_clone().expect("clone the etcd log handle");
        // Lines of earlier runs (a restart appends to the log) do not count as ready.
        let served_before = self.log().matches(SERVING).count();
        let mut command = Command::new(&self.binary);
        if let Some((cert, key, ca)) = &self.tls {
            command
                .arg(format!("--cert-file={}", cert.display()))
                .arg(format!("--key-file={}", key.display()))
                .arg(format!("--trusted-ca-file={}", ca.display()))
                .arg("--client-cert-auth");
        }
        let child = command
            .arg("--name=test")
            .arg(format!(
                "--data-dir={}",
                self.dir.path().join("data").display()
            ))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=test={peer}"))
            .arg("--initial-cluster-state=new")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", self.binary.display()));
        self.child = Some(child);
        self.wait_healthy(served_before);
    }

    fn wait_healthy(&mut self, served_before: usize) {
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("etcd exited with {status}; log:\n{}", self.log());
            }
            let ready = match self.tls {
                None => healthy(self.client_port),
                // `/health` needs a client certificate then; etcd says when it serves.
                Some(_) => self.log().matches(SERVING).count() > served_before,
            };
            if ready {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "etcd did not become healthy within {START_DEADLINE:?}; log:\n{}",
                self.log()
            );
            std::thread::sleep(PROBE_INTERVAL);
        }
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `etcd` on PATH, else /usr/bin/etcd.
pub fn find_etcd() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("etcd"))
            .find(|candidate| is_executable(candidate))
    });
    on_path.or_else(|| {
        let fallback = PathBuf::from("/usr/bin/etcd");
        is_executable(&fallback).then_some(fallback)
    })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A port that was free a moment ago (bound to port 0, then released), and never handed out
/// before in this test process: the kernel may give a released port out again at once, and
/// two listeners of one test must not meet on it.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let mut given = GIVEN.lock().unwrap_or_else(PoisonError::into_inner);
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("bind 127.0.0.1:0");
        if given.insert(port) {
            return port;
        }
    }
}

/// Whether etcd's `/health` on the client port reports healthy.
fn healthy(port: u16) -> bool {
    let probe = || -> std::io::Result<String> {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let mut stream = TcpStream::connect_timeout(&addr, PROBE_TIMEOUT)?;
        stream.set_read_timeout(Some(PROBE_TIMEOUT))?;
        stream.set_write_timeout(Some(PROBE_TIMEOUT))?;
        stream.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
        let mut reply = String::new();
        stream.read_to_string(&mut reply)?;
        Ok(reply)
    };
    probe().is_ok_and(|reply| reply.contains("\"health\":\"true\""))
}

//! Helpers shared by the integration tests: run the built `syncer` binary, wait for log lines
//! with a deadline (never a fixed sleep), stop it with a signal.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a test waits for a daemon to do something it should do at once.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// How often [`until`] looks.
pub const POLL_EVERY: Duration = Duration::from_millis(50);

/// Polls `check` every [`POLL_EVERY`] until it holds, failing after [`DEADLINE`]: the wait of
/// in-process tests on the real clock (a real etcd, an etcd child).
pub async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// A `syncer` command with a clean environment (no SYNCER_* or RUST_LOG from the caller),
/// running in `dir`.
pub fn syncer(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_syncer"));
    cmd.env_clear();
    if let Ok(path) = std::env::var("PATH") {
        cmd.env("PATH", path);
    }
    cmd.current_dir(dir);
    cmd
}

/// Output of a finished command.
pub struct Outcome {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

pub fn run(mut cmd: Command) -> Outcome {
    let out = cmd.output().expect("run syncer");
    Outcome {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A running daemon whose stderr (JSON log lines) is collected by a thread.
pub struct Daemon {
    pub child: Child,
    lines: mpsc::Receiver<String>,
    /// Every stderr line seen so far.
    pub seen: Vec<String>,
}

impl Daemon {
    /// Starts `cmd` (which should include `--log-format json`).
    pub fn spawn(mut cmd: Command) -> Daemon {
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn syncer");
        let stderr = child.stderr.take().expect("stderr is piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Daemon {
            child,
            lines: rx,
            seen: Vec::new(),
        }
    }

    /// Waits until a stderr line contains `needle`; returns it.
    pub fn wait_for_line(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no line containing {needle:?} within {DEADLINE:?}; seen:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Waits for the "syncer is ready" line and returns its JSON fields.
    pub fn wait_ready(&mut self) -> serde_json::Value {
        let line = self.wait_for_line("syncer is ready");
        serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("ready line is not JSON ({e}): {line}"))
    }

    /// Sends `signal` (e.g. "TERM") to the process.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Waits for the process to exit, draining its log; panics after the deadline.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + DEADLINE;
        loop {
            while let Ok(line) = self.lines.try_recv() {
                self.seen.push(line);
            }
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                // Collect what the reader thread still holds.
                while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
                    self.seen.push(line);
                }
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "daemon did not exit within {DEADLINE:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Collects the lines logged so far without waiting.
    pub fn drain(&mut self) {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
    }

    pub fn log(&self) -> String {
        self.seen.join("\n")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub mod certs;
pub mod etcd;
pub mod eureka;
pub mod proxy;
pub mod split;
pub mod sync;
pub mod tap;

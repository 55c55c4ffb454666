//! What the benchmarks share: child processes with their log tails, the `syncer` command, dev
//! registries, the machine line. (Cargo builds `benches/*.rs` as benchmarks; this directory
//! is a module each of them includes.)

#![allow(dead_code)]

use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The integration tests' real etcd (and port allocator), shared with the benches.
#[path = "../../tests/support/etcd.rs"]
pub mod etcd;

/// The registry API of the default domain and project.
pub const API: &str = "/v4/default/registry";
/// Lease of every instance the benches register: push, 600 s × (3 + 1), so nothing expires.
pub const LONG_LEASE: (u32, u32) = (600, 3);
/// How long a process may take to print its ready line.
pub const START_DEADLINE: Duration = Duration::from_secs(30);

/// Prints the machine's CPUs and load, and who shares them (`sharing`).
pub fn print_machine(sharing: &str) {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let load = std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    println!("machine: {cpus} CPUs ({model}), load average {load}; {sharing}");
}

/// The last lines a process wrote, and its warnings and errors.
#[derive(Default)]
pub struct LogTail {
    lines: VecDeque<String>,
    /// WARN/ERROR messages and how often each was logged.
    problems: BTreeMap<String, usize>,
}

impl LogTail {
    const KEEP: usize = 300;

    fn push(&mut self, line: String) {
        if let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(&line) {
            let level = fields.get("level").and_then(Value::as_str).unwrap_or("");
            if level == "WARN" || level == "ERROR" {
                let message = fields.get("message").and_then(Value::as_str).unwrap_or("?");
                *self
                    .problems
                    .entry(format!("{level} {message}"))
                    .or_default() += 1;
            }
        }
        if self.lines.len() == Self::KEEP {
            self.lines.pop_front();
        }
        self.lines.push_back(line);
    }
}

/// A child process, killed when dropped (also while unwinding from a panic).
pub struct Proc {
    pub name: String,
    pub child: Child,
    pub tail: Arc<Mutex<LogTail>>,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn tail(&self) -> String {
        let tail = self.tail.lock().expect("log tail");
        tail.lines.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    pub fn problems(&self) -> BTreeMap<String, usize> {
        self.tail.lock().expect("log tail").problems.clone()
    }

    /// Resident and peak resident memory in KiB, from /proc.
    pub fn memory_kib(&self) -> (u64, u64) {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `syncer` command with a clean environment (no SYNCER_* or RUST_LOG from the caller).
pub fn syncer(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_syncer"));
    cmd.env_clear();
    if let Ok(path) = std::env::var("PATH") {
        cmd.env("PATH", path);
    }
    cmd.current_dir(dir);
    cmd
}

/// Reads `stream` line by line into `tail` on a thread; each line containing `needle` is also
/// sent on `found`, with the moment it was read.
pub fn drain(
    stream: impl std::io::Read + Send + 'static,
    tail: Arc<Mutex<LogTail>>,
    needle: &'static str,
    found: mpsc::Sender<(Instant, String)>,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if line.contains(needle) {
                let _ = found.send((Instant::now(), line.clone()));
            }
            tail.lock().expect("log tail").push(line);
        }
    });
}

/// Starts `cmd` (a `syncer daemon` logging JSON to stderr) and waits for its ready line;
/// returns the process, when the line was read, and its fields.
pub fn spawn_daemon(name: &str, mut cmd: Command) -> (Proc, Instant, Value) {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn syncer daemon");
    let tail = Arc::new(Mutex::new(LogTail::default()));
    let (tx, rx) = mpsc::channel();
    let stderr = child.stderr.take().expect("piped");
    let proc = Proc {
        name: name.to_owned(),
        child,
        tail: tail.clone(),
    };
    drain(stderr, tail, "syncer is ready", tx);
    let Ok((ready, line)) = rx.recv_timeout(START_DEADLINE) else {
        panic!("{name}: not ready; log:\n{}", proc.tail());
    };
    let fields: Value = serde_json::from_str(&line).expect("ready line is JSON");
    (proc, ready, fields)
}

/// A text field of a daemon's ready line.
pub fn ready_field(fields: &Value, name: &str) -> String {
    fields
        .get(name)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("ready line without {name}: {fields}"))
        .to_owned()
}

pub struct DevRegistry {
    pub proc: Proc,
    pub url: String,
}

pub fn start_registry(name: &str, dir: &Path, real_sc: bool) -> DevRegistry {
    // SC 2.x: the mode with the 2 s delete check window (1.4.8 has none).
    let real: &[&str] = if real_sc { &["--real-sc", "2.x"] } else { &[] };
    start_registry_with(name, dir, real)
}

/// `syncer dev-registry --listen 127.0.0.1:0 <args>` (e.g. `--kind eureka`); its URL is the
/// one its listening line prints (`http://ip:port/eureka` for a Eureka).
pub fn start_registry_with(name: &str, dir: &Path, args: &[&str]) -> DevRegistry {
    let mut cmd = syncer(dir);
    cmd.args(["dev-registry", "--listen", "127.0.0.1:0"])
        .args(args);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn syncer dev-registry");
    let tail = Arc::new(Mutex::new(LogTail::default()));
    let (tx, rx) = mpsc::channel();
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    let proc = Proc {
        name: name.to_owned(),
        child,
        tail: tail.clone(),
    };
    drain(
        stdout.expect("piped"),
        tail.clone(),
        "dev registry listening on ",
        tx.clone(),
    );
    drain(
        stderr.expect("piped"),
        tail,
        "dev registry listening on ",
        tx,
    );
    let Ok((_, line)) = rx.recv_timeout(START_DEADLINE) else {
        panic!("{name}: no listening line; output:\n{}", proc.tail());
    };
    let url = line
        .split("dev registry listening on ")
        .nth(1)
        .expect("address")
        .trim()
        .to_owned();
    DevRegistry { proc, url }
}

// ---- registry REST calls ----

pub async fn call(request: reqwest::RequestBuilder) -> Result<Value, String> {
    let response = request.send().await.map_err(|e| e.to_string())?;
    let status = response.status();
    let body = response.bytes().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!("{status}: {}", String::from_utf8_lossy(&body)));
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&body).map_err(|e| e.to_string())
}

/// Creates a service under `service_id` (idempotent).
pub async fn create_service(client: &reqwest::Client, url: &str, service_id: &str, name: &str) {
    let body = json!({"service": {
        "serviceId": service_id,
        "appId": "bench",
        "serviceName": name,
        "version": "1.0.0",
    }});
    call(client.post(format!("{url}{API}/microservices")).json(&body))
        .await
        .unwrap_or_else(|e| panic!("create service {service_id} at {url}: {e}"));
}

/// Registers an instance with a long lease; returns its id.
pub async fn register(
    client: &reqwest::Client,
    url: &str,
    service_id: &str,
    host: &str,
    endpoint: &str,
) -> String {
    let body = json!({"instance": {
        "hostName": host,
        "endpoints": [endpoint],
        "status": "UP",
        "healthCheck": {"mode": "push", "interval": LONG_LEASE.0, "times": LONG_LEASE.1},
    }});
    let reply = call(
        client
            .post(format!("{url}{API}/microservices/{service_id}/instances"))
            .json(&body),
    )
    .await
    .unwrap_or_else(|e| panic!("register {host} at {url}: {e}"));
    reply
        .get("instanceId")
        .and_then(Value::as_str)
        .expect("instanceId")
        .to_owned()
}

/// Host names of the service's instances; an unknown service (not mirrored yet) has none.
pub async fn instance_hosts(client: &reqwest::Client, url: &str, service_id: &str) -> Vec<String> {
    let Ok(reply) =
        call(client.get(format!("{url}{API}/microservices/{service_id}/instances"))).await
    else {
        return Vec::new();
    };
    reply
        .get("instances")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(|i| i.get("hostName").and_then(Value::as_str))
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

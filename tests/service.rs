//! syncer as a systemd service: the notification protocol seen from a fake `NOTIFY_SOCKET`
//! (the real daemon, its READY after its listeners answer, watchdog pings, STOPPING on
//! SIGTERM), SIGHUP not ending the daemon, the unit checked by `systemd-analyze verify`
//! where it exists, and the sample configuration accepted by `--check`.

mod support;

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use support::{DEADLINE, Daemon, run, syncer};
use syncer::rpc::proto::InfoRequest;
use syncer::rpc::proto::peer_client::PeerClient;

/// The repository's own files (the unit, the sample configuration, Cargo.toml).
fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// A daemon on loopback and port 0, with no registry running (its name is given, so it
/// does not wait for one).
fn daemon_cmd(dir: &Path, node: &str) -> Command {
    let mut cmd = syncer(dir);
    cmd.args([
        "daemon",
        "--node",
        node,
        "--bind-addr",
        "127.0.0.1:0",
        "--rpc-addr",
        "127.0.0.1:0",
        "--admin-addr",
        "127.0.0.1:0",
        "--log-format",
        "json",
        "--log-level",
        "info,syncer=debug",
        "--cluster-name",
        "service-test",
        "--data-dir",
    ])
    .arg(dir.join("data"));
    cmd
}

/// The fake service manager's end: datagrams as text, read with a deadline.
struct Manager {
    socket: UnixDatagram,
    /// Every notification received so far, in order.
    seen: Vec<String>,
}

impl Manager {
    fn new(socket: UnixDatagram) -> Manager {
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("read timeout");
        Manager {
            socket,
            seen: Vec::new(),
        }
    }

    /// Receives until a notification holds `line` (a whole `KEY=value` line); returns it.
    fn wait_for(&mut self, line: &str) -> String {
        let deadline = Instant::now() + DEADLINE;
        let mut buf = [0u8; 4096];
        loop {
            assert!(
                Instant::now() < deadline,
                "no notification with {line:?} within {DEADLINE:?}; got {:?}",
                self.seen
            );
            let Ok(n) = self.socket.recv(&mut buf) else {
                continue;
            };
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            self.seen.push(text.clone());
            if text.lines().any(|l| l == line) {
                return text;
            }
        }
    }
}

fn field(ready: &serde_json::Value, key: &str) -> String {
    ready[key]
        .as_str()
        .unwrap_or_else(|| panic!("ready line lacks {key}: {ready}"))
        .to_owned()
}

// Multi-threaded: the test blocks its thread on the socket while the gRPC client's
// connection task must run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_watchdog_and_stopping_reach_the_notify_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let mut manager = Manager::new(UnixDatagram::bind(&path).unwrap());
    let mut cmd = daemon_cmd(dir.path(), "svc1");
    // A watchdog of 400 ms: a ping every 200 ms.
    cmd.env("NOTIFY_SOCKET", &path)
        .env("WATCHDOG_USEC", "400000");
    let mut daemon = Daemon::spawn(cmd);

    let ready = manager.wait_for("READY=1");
    assert_eq!(
        manager.seen.len(),
        1,
        "READY=1 is the first notification: {:?}",
        manager.seen
    );
    assert!(
        ready
            .lines()
            .any(|l| l == "STATUS=node svc1, data centre service-test, single mode, active"),
        "{ready:?}"
    );
    // By READY the ready line is logged, and both listeners answer at once.
    let line = daemon.wait_ready();
    let (admin, rpc) = (field(&line, "admin_addr"), field(&line, "rpc_addr"));
    let health = reqwest::get(format!("http://{admin}/health"))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let mut client = PeerClient::connect(format!("http://{rpc}")).await.unwrap();
    let info = client.info(InfoRequest {}).await.unwrap().into_inner();
    assert_eq!(info.name, "svc1");

    // Pings keep coming.
    for _ in 0..3 {
        manager.wait_for("WATCHDOG=1");
    }
    let pings = manager
        .seen
        .iter()
        .filter(|m| m.contains("WATCHDOG=1"))
        .count();
    assert!(pings >= 3, "{:?}", manager.seen);

    daemon.signal("TERM");
    let stopping = manager.wait_for("STOPPING=1");
    assert!(stopping.contains("STATUS=stopping"), "{stopping:?}");
    let status = daemon.wait_exit();
    assert!(status.success(), "exit {status:?}\n{}", daemon.log());
    drop(client);
}

/// Cluster mode with its managed etcd member: the status follows the election, and etcd
/// (which speaks the protocol too) does not inherit the socket: every READY=1 is syncer's.
#[test]
fn in_cluster_mode_the_status_follows_the_role_and_etcd_stays_quiet() {
    let Some(etcd) = support::etcd::find_etcd() else {
        eprintln!("skipped: no etcd executable on PATH or at /usr/bin/etcd");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let mut manager = Manager::new(UnixDatagram::bind(&path).unwrap());
    let (peer, client) = (support::etcd::free_port(), support::etcd::free_port());
    let mut cmd = daemon_cmd(dir.path(), "solo");
    cmd.args(["--mode", "cluster", "--cluster-size", "1"])
        .args(["--cluster-port", &peer.to_string()])
        .args(["--etcd-client-port", &client.to_string()])
        .arg("--etcd-bin")
        .arg(&etcd)
        .env("NOTIFY_SOCKET", &path)
        .env("WATCHDOG_USEC", "400000");
    let mut daemon = Daemon::spawn(cmd);
    let ready = manager.wait_for("READY=1");
    assert!(
        ready.contains("STATUS=node solo, data centre service-test, cluster mode, standby"),
        "{ready:?}"
    );
    manager.wait_for("STATUS=node solo, data centre service-test, cluster mode, active");
    // A few more pings: time for anything etcd would have sent since it served.
    for _ in 0..3 {
        manager.wait_for("WATCHDOG=1");
    }
    daemon.signal("TERM");
    manager.wait_for("STOPPING=1");
    assert!(daemon.wait_exit().success(), "{}", daemon.log());
    let readies: Vec<_> = manager
        .seen
        .iter()
        .filter(|m| m.lines().any(|l| l == "READY=1"))
        .collect();
    assert_eq!(
        readies.len(),
        1,
        "only syncer's READY=1: {:?}",
        manager.seen
    );
}

#[test]
fn an_abstract_notify_socket_gets_ready_and_stopping() {
    use std::os::linux::net::SocketAddrExt;
    let dir = tempfile::tempdir().unwrap();
    let name = format!(
        "syncer-service-test-{}-{}",
        std::process::id(),
        dir.path().file_name().unwrap().to_string_lossy()
    );
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let mut manager = Manager::new(UnixDatagram::bind_addr(&addr).unwrap());
    let mut cmd = daemon_cmd(dir.path(), "svc2");
    cmd.env("NOTIFY_SOCKET", format!("@{name}"));
    let mut daemon = Daemon::spawn(cmd);
    let ready = manager.wait_for("READY=1");
    assert!(ready.contains("node svc2"), "{ready:?}");
    daemon.wait_ready();
    daemon.signal("TERM");
    manager.wait_for("STOPPING=1");
    assert!(daemon.wait_exit().success(), "{}", daemon.log());
    // Without WATCHDOG_USEC, no pings.
    assert!(
        !manager.seen.iter().any(|m| m.contains("WATCHDOG=1")),
        "{:?}",
        manager.seen
    );
}

/// `systemctl reload` sends SIGHUP, whose default action would end the process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_does_not_stop_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::spawn(daemon_cmd(dir.path(), "svc3"));
    let ready = daemon.wait_ready();
    let admin = field(&ready, "admin_addr");
    daemon.signal("HUP");
    daemon.wait_for_line("SIGHUP");
    daemon.signal("HUP");
    daemon.drain();
    let health = reqwest::get(format!("http://{admin}/health"))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    assert!(
        daemon.child.try_wait().unwrap().is_none(),
        "{}",
        daemon.log()
    );
    daemon.signal("TERM");
    assert!(daemon.wait_exit().success(), "{}", daemon.log());
}

/// `systemd-analyze verify` of the unit, where the tool exists. The unit names
/// /usr/bin/syncer, which a development machine does not have and verify reports: the unit
/// is checked as written, with only that path pointed at the binary under test.
#[test]
fn the_unit_passes_systemd_analyze_verify() {
    let unit = std::fs::read_to_string(repo("contrib/systemd/syncer.service")).unwrap();
    for line in [
        "Type=notify",
        "ExecStart=/usr/bin/syncer daemon --config /etc/syncer/syncer.yaml",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
        "WatchdogSec=30s",
        "DynamicUser=yes",
        "StateDirectory=syncer",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "CapabilityBoundingSet=",
    ] {
        assert!(unit.lines().any(|l| l == line), "the unit lacks {line:?}");
    }
    let verify = |text: &str| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("syncer.service");
        std::fs::write(&path, text).unwrap();
        let mut cmd = Command::new("systemd-analyze");
        cmd.arg("verify").arg(&path);
        let out = run(cmd);
        (out.code, format!("{}{}", out.stdout, out.stderr))
    };
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: systemd-analyze is not installed here");
        return;
    }
    // As written: verify names the missing binary (this is what it says on a machine
    // without the package).
    let (code, said) = verify(&unit);
    if Path::new("/usr/bin/syncer").exists() {
        assert_eq!((code, said.as_str()), (Some(0), ""));
    } else {
        assert_ne!(code, Some(0), "{said}");
        assert!(said.contains("/usr/bin/syncer"), "{said}");
    }
    let built = unit.replace("/usr/bin/syncer", env!("CARGO_BIN_EXE_syncer"));
    let (code, said) = verify(&built);
    assert_eq!(code, Some(0), "{said}");
    // verify exits 0 on settings it ignores, but names them: nothing may be said.
    assert_eq!(said, "", "systemd-analyze verify complained");
    // The check sees a bad setting.
    let (_, said) = verify(&built.replace("Type=notify", "Type=notifyy"));
    assert!(said.contains("notifyy"), "{said}");
}

/// `--check` of the sample configuration, as the unit would load it: valid, no warnings,
/// every key from the file; and its commented-out examples are valid too.
#[test]
fn the_sample_configuration_passes_check() {
    let dir = tempfile::tempdir().unwrap();
    let sample = std::fs::read_to_string(repo("contrib/syncer.yaml")).unwrap();
    let check = |text: &str| {
        std::fs::write(dir.path().join("syncer.yaml"), text).unwrap();
        let mut cmd = syncer(dir.path());
        cmd.args(["daemon", "--check", "--config", "syncer.yaml"]);
        run(cmd)
    };
    let out = check(&sample);
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    assert!(!out.stdout.contains("warning"), "{}", out.stdout);
    for (id, value) in [
        ("data_dir", "/var/lib/syncer"),
        ("cluster_name", "dc1"),
        ("mode", "single"),
        ("etcd_bin", "/usr/bin/etcd"),
    ] {
        let line = out
            .stdout
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{id} ")))
            .unwrap_or_else(|| panic!("no {id} in\n{}", out.stdout));
        assert!(line.contains(value), "{line}");
        assert!(line.contains("in syncer.yaml"), "{line}");
    }

    // The examples left in comments, uncommented (placeholders filled in).
    let key = {
        let mut cmd = syncer(dir.path());
        cmd.arg("keygen");
        run(cmd).stdout.trim().to_owned()
    };
    let mut examples = sample.clone();
    for (from, to) in [
        ("# node: syncer-a1", "node: syncer-a1".to_owned()),
        ("  # peerAddr:", "  peerAddr:".to_owned()),
        ("# join:", "join:".to_owned()),
        ("#   enabled: true", "  enabled: true".to_owned()),
        ("#   address:", "  address:".to_owned()),
        ("  # user: syncer", "  user: syncer".to_owned()),
        ("  # password: ...", "  password: secret".to_owned()),
        ("# etcd:", "etcd:".to_owned()),
        ("#   endpoints:", "  endpoints:".to_owned()),
        ("  # key: ...", format!("  key: {key}")),
    ] {
        assert!(examples.contains(from), "the sample lacks {from:?}");
        examples = examples.replace(from, &to);
    }
    let out = check(&examples);
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    assert!(!out.stdout.contains("warning"), "{}", out.stdout);
    for id in [
        "node",
        "peer_addr",
        "join_addr",
        "sc_user",
        "sc_password",
        "etcd_endpoints",
        "gossip_key",
    ] {
        let line = out
            .stdout
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{id} ")))
            .unwrap_or_else(|| panic!("no {id} in\n{}", out.stdout));
        assert!(line.contains("in syncer.yaml"), "{line}");
    }
}

/// What `cargo deb` packages (Cargo.toml `[package.metadata.deb]`) exists in the tree, so
/// the package builds without cargo-deb being part of the tests.
#[test]
fn the_debian_package_assets_exist() {
    let manifest = std::fs::read_to_string(repo("Cargo.toml")).unwrap();
    let section = manifest
        .split("[package.metadata.deb]")
        .nth(1)
        .expect("Cargo.toml has [package.metadata.deb]");
    let section = section.split("\n[").next().unwrap_or(section);
    let mut sources = 0;
    for line in section.lines().map(str::trim) {
        let Some(rest) = line.strip_prefix("[\"") else {
            continue;
        };
        let Some((source, _)) = rest.split_once('"') else {
            continue;
        };
        sources += 1;
        if source.starts_with("target/") {
            continue;
        }
        // A glob (docs/*.md): its directory.
        let path = match source.split_once('*') {
            Some((dir, _)) => repo(dir),
            None => repo(source),
        };
        assert!(path.exists(), "asset {source} does not exist");
    }
    assert!(sources >= 4, "too few assets found in\n{section}");
    for needle in [
        "\"usr/bin/\"",
        "lib/systemd/system/",
        "etc/syncer/syncer.yaml",
        "usr/share/doc/syncer/",
        "conf-files",
    ] {
        assert!(section.contains(needle), "the package lacks {needle}");
    }
}

//! Smoke tests of the built binary as a running daemon: it binds, answers on its admin and
//! gRPC endpoints, shuts down gracefully on SIGTERM, and refuses a second daemon on its data
//! directory.

mod support;

use support::{Daemon, syncer};
use syncer::rpc::proto::InfoRequest;
use syncer::rpc::proto::peer_client::PeerClient;

fn daemon_cmd(
    dir: &std::path::Path,
    node: &str,
    data_dir: &std::path::Path,
) -> std::process::Command {
    daemon_cmd_on(dir, node, data_dir, "127.0.0.1:0")
}

fn daemon_cmd_on(
    dir: &std::path::Path,
    node: &str,
    data_dir: &std::path::Path,
    bind: &str,
) -> std::process::Command {
    let mut cmd = syncer(dir);
    cmd.args([
        "daemon",
        "--node",
        node,
        "--bind-addr",
        bind,
        "--rpc-addr",
        "127.0.0.1:0",
        "--admin-addr",
        "127.0.0.1:0",
        "--log-format",
        "json",
        "--log-level",
        "info,syncer=debug",
        // No registry runs: without a name, a first start would wait for the registry to
        // name the data centre.
        "--cluster-name",
        "daemon-test",
        "--data-dir",
    ])
    .arg(data_dir);
    cmd
}

fn field(ready: &serde_json::Value, key: &str) -> String {
    ready[key]
        .as_str()
        .unwrap_or_else(|| panic!("ready line lacks {key}: {ready}"))
        .to_owned()
}

// Multi-threaded: the test blocks its thread while waiting for the daemon to exit, and the
// gRPC client's connection task must still run to answer the server's GOAWAY.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_serves_and_stops_gracefully() {
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::spawn(daemon_cmd(dir.path(), "smoke1", &dir.path().join("data")));
    let ready = daemon.wait_ready();
    let admin = field(&ready, "admin_addr");
    let rpc = field(&ready, "rpc_addr");
    assert!(field(&ready, "gossip_addr").starts_with("127.0.0.1:"));

    let health = reqwest::get(format!("http://{admin}/health"))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let body: serde_json::Value = health.json().await.unwrap();
    assert_eq!(body["status"], "ok");
    assert_eq!(body["node"], "smoke1");

    let metrics = reqwest::get(format!("http://{admin}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("syncer_build_info{"), "{metrics}");
    assert!(metrics.contains("node=\"smoke1\""), "{metrics}");

    let mut client = PeerClient::connect(format!("http://{rpc}")).await.unwrap();
    let info = client.info(InfoRequest {}).await.unwrap().into_inner();
    assert_eq!(info.name, "smoke1");
    assert_eq!(info.rpc_addr, rpc);
    assert_eq!(info.mode, "single");
    assert_eq!(info.version, env!("CARGO_PKG_VERSION"));

    daemon.signal("TERM");
    let status = daemon.wait_exit();
    assert!(status.success(), "exit {status:?}\n{}", daemon.log());
    assert!(daemon.log().contains("syncer stopped"), "{}", daemon.log());
}

#[test]
fn second_daemon_on_the_same_data_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("shared");
    let mut first = Daemon::spawn(daemon_cmd(dir.path(), "lock1", &data));
    first.wait_ready();
    let mut second = Daemon::spawn(daemon_cmd(dir.path(), "lock2", &data));
    let status = second.wait_exit();
    assert_eq!(status.code(), Some(1), "{}", second.log());
    assert!(
        second.log().contains("is in use by another syncer"),
        "{}",
        second.log()
    );
    first.signal("INT");
    assert!(first.wait_exit().success(), "{}", first.log());
}

#[test]
fn busy_port_is_a_runtime_failure() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let cmd = daemon_cmd_on(
        dir.path(),
        "busy",
        &dir.path().join("data"),
        &format!("127.0.0.1:{port}"),
    );
    let mut daemon = Daemon::spawn(cmd);
    let status = daemon.wait_exit();
    assert_eq!(status.code(), Some(1), "{}", daemon.log());
    assert!(
        daemon.log().contains("cannot bind the gossip listener"),
        "{}",
        daemon.log()
    );
}

/// An admin client that never finishes its request (a stalled scraper or probe) must not
/// hold the stop until the shutdown deadline and turn it into a failure.
#[test]
fn an_unfinished_admin_request_does_not_hold_the_stop() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::spawn(daemon_cmd(dir.path(), "stall", &dir.path().join("data")));
    let ready = daemon.wait_ready();
    let admin = field(&ready, "admin_addr");
    let mut stalled = std::net::TcpStream::connect(&admin).unwrap();
    stalled
        .write_all(b"GET /health HTTP/1.1\r\nHost: syncer\r\n")
        .unwrap();
    // A whole request on a later connection: once it is answered, the server has accepted
    // the stalled one too (connections are accepted in order).
    let mut later = std::net::TcpStream::connect(&admin).unwrap();
    later
        .write_all(b"GET /health HTTP/1.1\r\nHost: syncer\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    later.read_to_end(&mut answer).unwrap();
    assert!(answer.starts_with(b"HTTP/1.1 200"));
    daemon.signal("TERM");
    let signalled = std::time::Instant::now();
    let status = daemon.wait_exit();
    let took = signalled.elapsed();
    assert!(status.success(), "exit {status:?}\n{}", daemon.log());
    assert!(
        took < std::time::Duration::from_secs(5),
        "the stop took {took:?}, waiting for the unfinished request\n{}",
        daemon.log()
    );
    drop(stalled);
}

//! `syncer demo`, run through the built binary: three data centres mirror the sample
//! instance, and SIGINT stops everything with status 0 and removes the data directories.

mod support;

use std::path::Path;
use std::process::Command;

use support::Daemon;

/// `syncer demo <args>` with a clean environment and `TMPDIR` = `tmp`. [`Daemon`] reads
/// stderr only and the demo speaks on stdout, so a shell sends both to stderr; it `exec`s, so
/// the signals go to syncer itself.
fn demo(tmp: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new("sh");
    cmd.env_clear();
    if let Ok(path) = std::env::var("PATH") {
        cmd.env("PATH", path);
    }
    cmd.env("TMPDIR", tmp)
        .current_dir(tmp)
        .arg("-c")
        .arg(r#"exec "$0" demo "$@" 1>&2"#)
        .arg(env!("CARGO_BIN_EXE_syncer"))
        .args(args);
    cmd
}

#[test]
fn three_data_centres_mirror_the_sample_and_stop_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let mut demo = Daemon::spawn(demo(tmp.path(), &["--dcs", "3", "--base-port", "0"]));
    let data = tmp.path().join(format!("syncer-demo-{}", demo.child.id()));

    // The copies appear in either order.
    let mut visible = Vec::new();
    for _ in 0..2 {
        let line = demo.wait_for_line(": instance visible after");
        assert!(line.contains("(copy syncer-"), "{line}");
        visible.push(line.split(':').next().unwrap_or_default().to_owned());
    }
    visible.sort();
    assert_eq!(visible, ["dc2", "dc3"], "{}", demo.log());
    demo.wait_for_line("Ctrl-C stops every data centre");
    for dc in ["dc1", "dc2", "dc3"] {
        assert!(data.join(dc).is_dir(), "no {}\n{}", dc, demo.log());
    }
    let log = demo.log();
    assert!(log.contains("gossip pool formed"), "{log}");
    assert!(log.contains("members --rpc-addr 127.0.0.1:"), "{log}");

    demo.signal("INT");
    let status = demo.wait_exit();
    assert_eq!(status.code(), Some(0), "{}", demo.log());
    assert!(demo.log().contains("stopped; removed"), "{}", demo.log());
    assert!(!data.exists(), "{} is left behind", data.display());
}

/// `--tls`: the syncers talk mutual TLS and seal gossip with a new key; the sample is
/// mirrored all the same, the printed `members` line carries the client certificate (and
/// works as printed), and the demo's certificates go with its data directories.
#[test]
fn a_secured_demo_mirrors_the_sample_over_mutual_tls() {
    let tmp = tempfile::tempdir().unwrap();
    let mut demo = Daemon::spawn(demo(tmp.path(), &["--tls", "--base-port", "0"]));
    let data = tmp.path().join(format!("syncer-demo-{}", demo.child.id()));
    let secured = demo.wait_for_line("secured: mutual TLS on the rpc link");
    assert!(
        secured.contains("gossip sealed with a new key"),
        "{secured}"
    );
    let line = demo.wait_for_line("dc2: instance visible after");
    assert!(line.contains("(copy syncer-"), "{line}");
    demo.wait_for_line("Ctrl-C stops every data centre");
    assert!(data.join("pki").join("ca.pem").is_file(), "{}", demo.log());

    // The printed command, run as printed, lists the pool; without the certificate it fails.
    let log = demo.log();
    let at = log.find(" members --rpc-addr ").expect("a members line");
    let start = log[..at].rfind('\n').map_or(0, |i| i + 1);
    let printed: String = log[start..]
        .lines()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
        .replace('\\', " ");
    let words: Vec<&str> = printed.split_whitespace().collect();
    let rpc_at = words
        .iter()
        .position(|w| *w == "--rpc-addr")
        .expect("--rpc-addr");
    let args: Vec<&str> = words[rpc_at - 1..].to_vec();
    assert!(args.contains(&"--tls-cert"), "{printed}");
    let asked = std::process::Command::new(env!("CARGO_BIN_EXE_syncer"))
        .args(&args)
        .args(["--timeout", "5s"])
        .output()
        .expect("run members");
    assert!(
        asked.status.success(),
        "{printed}: {}",
        String::from_utf8_lossy(&asked.stderr)
    );
    let plain = std::process::Command::new(env!("CARGO_BIN_EXE_syncer"))
        .args(&args[..3])
        .args(["--timeout", "2s"])
        .output()
        .expect("run members");
    assert!(!plain.status.success(), "plain text was answered");

    demo.signal("INT");
    let status = demo.wait_exit();
    assert_eq!(status.code(), Some(0), "{}", demo.log());
    assert!(!data.exists(), "{} is left behind", data.display());
}

#[test]
fn a_servicecomb_sample_is_mirrored_into_eureka_and_servicecomb() {
    let tmp = tempfile::tempdir().unwrap();
    let mut demo = Daemon::spawn(demo(
        tmp.path(),
        &[
            "--kinds",
            "servicecomb,eureka,servicecomb",
            "--base-port",
            "0",
        ],
    ));
    let mut visible = Vec::new();
    for _ in 0..2 {
        let line = demo.wait_for_line(": instance visible after");
        assert!(line.contains("(copy syncer-"), "{line}");
        visible.push(line.clone());
    }
    visible.sort();
    assert!(
        visible[0].starts_with("dc2") && visible[0].contains("in eureka"),
        "{}",
        demo.log()
    );
    assert!(visible[1].starts_with("dc3"), "{}", demo.log());
    demo.wait_for_line("Ctrl-C stops every data centre");
    let log = demo.log();
    assert!(
        log.contains("(servicecomb, eureka, servicecomb)")
            && log.contains("-H 'Accept: application/json' http://127.0.0.1:")
            && log.contains("/eureka/apps/HELLO"),
        "{log}"
    );
    demo.signal("INT");
    assert_eq!(demo.wait_exit().code(), Some(0), "{}", demo.log());
}

#[test]
fn a_eureka_sample_is_mirrored_into_servicecomb() {
    let tmp = tempfile::tempdir().unwrap();
    let mut demo = Daemon::spawn(demo(
        tmp.path(),
        &["--kinds", "eureka,servicecomb", "--base-port", "0"],
    ));
    let line = demo.wait_for_line(": instance visible after");
    assert!(
        line.starts_with("dc2")
            && line.contains("(copy syncer-")
            && line.contains("in servicecomb"),
        "{}",
        demo.log()
    );
    demo.wait_for_line("Ctrl-C stops every data centre");
    let log = demo.log();
    assert!(log.contains("status?value=OUT_OF_SERVICE"), "{log}");
    demo.signal("INT");
    assert_eq!(demo.wait_exit().code(), Some(0), "{}", demo.log());
}

#[test]
fn bad_flags_are_usage_errors() {
    let tmp = tempfile::tempdir().unwrap();
    for args in [
        &["--dcs", "1"][..],
        &["--dcs", "10"],
        &["--base-port", "65000", "--dcs", "9"],
        &["--log-level", "no=such=filter"],
        &["--kinds", "servicecomb,consul"],
        &["--kinds", "eureka"],
        &["--kinds", "eureka,servicecomb", "--dcs", "3"],
    ] {
        let out = support::run(demo(tmp.path(), args));
        assert_eq!(out.code, Some(2), "{args:?}: {}{}", out.stdout, out.stderr);
    }
}

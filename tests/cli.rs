//! The command line, run through the built binary: the original Syncer's command lines,
//! every kind of bad input, configuration precedence, and `version`.

mod support;

use std::path::Path;

use support::{Outcome, run, syncer};

/// Runs `syncer <args>` with `--check` given through the environment, so `args` stay exactly
/// as an operator would type them.
fn check(dir: &Path, args: &str) -> Outcome {
    let mut cmd = syncer(dir);
    cmd.args(args.split_whitespace()).env("SYNCER_CHECK", "1");
    run(cmd)
}

/// The effective value of setting `id` in `--check` output, and its origin.
fn setting(out: &Outcome, id: &str) -> (String, String) {
    let line = out
        .stdout
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("{id} ")))
        .unwrap_or_else(|| panic!("no setting {id} in:\n{}", out.stdout));
    let (_, rest) = line.split_once('=').expect("id = value");
    let rest = rest.trim();
    match rest.rsplit_once(" (") {
        Some((value, origin)) => (
            value.trim().to_owned(),
            origin.trim_end_matches(')').to_owned(),
        ),
        None => (rest.to_owned(), String::new()),
    }
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

// --- The original README's command lines (original-syncer.md §2.4), accepted verbatim ---

#[test]
fn original_single_mode_lines_are_accepted() {
    let dir = tempdir();
    let first = check(
        dir.path(),
        "daemon --sc-addr http://10.0.0.10:30100 --bind-addr 10.0.0.10:30190 --rpc-addr 10.0.0.10:30191",
    );
    assert_eq!(first.code, Some(0), "{}{}", first.stdout, first.stderr);
    assert_eq!(setting(&first, "bind_addr").0, "10.0.0.10:30190");
    assert_eq!(setting(&first, "rpc_addr").0, "10.0.0.10:30191");
    assert_eq!(
        setting(&first, "sc_addr"),
        ("http://10.0.0.10:30100".into(), "--sc-addr".into())
    );
    assert_eq!(setting(&first, "advertise_ip").0, "10.0.0.10");

    // The second line joins the first syncer's *rpc* port; it is accepted (the gossip layer
    // asks that address for the gossip address).
    let second = check(
        dir.path(),
        "daemon --sc-addr http://10.0.0.11:30100 --bind-addr 10.0.0.11:30190 --rpc-addr 10.0.0.11:30191 --join-addr 10.0.0.10:30191",
    );
    assert_eq!(second.code, Some(0), "{}{}", second.stdout, second.stderr);
    assert_eq!(setting(&second, "join_addr").0, "10.0.0.10:30191");
    // Without --cluster-name the name comes from the registry's identity when the daemon
    // first starts (issue 21 item 6: the MD5 of the address text collided), so `--check`
    // says where it will come from; `gossip.rs` tests that two registries give two names.
    for out in [&first, &second] {
        assert_eq!(
            setting(out, "cluster_name"),
            (
                syncer::config::DERIVED_CLUSTER_NAME.to_owned(),
                "default".to_owned()
            )
        );
    }
}

#[test]
fn original_cluster_mode_lines_are_accepted() {
    let dir = tempdir();
    let lines = [
        "daemon --sc-addr http://10.0.0.10:30100 --bind-addr 10.0.0.10:30190 --rpc-addr 10.0.0.10:30191 --mode cluster --node syncer011 --cluster-port 30201 --join-addr 10.0.0.10:30190",
        "daemon --sc-addr http://10.0.0.10:30100 --bind-addr 10.0.0.10:30290 --rpc-addr 10.0.0.10:30291 --mode cluster --node syncer012 --cluster-port 30202 --join-addr 10.0.0.10:30190",
        "daemon --sc-addr http://10.0.0.10:30100 --bind-addr 10.0.0.10:30390 --rpc-addr 10.0.0.10:30391 --mode cluster --node syncer013 --cluster-port 30203 --join-addr 10.0.0.10:30190",
        "daemon --sc-addr http://10.0.0.11:30100 --bind-addr 10.0.0.11:30190 --rpc-addr 10.0.0.11:30191 --mode cluster --node syncer021 --cluster-port 30201 --join-addr 10.0.0.10:30190",
        "daemon --sc-addr http://10.0.0.11:30100 --bind-addr 10.0.0.11:30290 --rpc-addr 10.0.0.11:30291 --mode cluster --node syncer022 --cluster-port 30202 --join-addr 10.0.0.10:30190",
        "daemon --sc-addr http://10.0.0.11:30100 --bind-addr 10.0.0.11:30390 --rpc-addr 10.0.0.11:30391 --mode cluster --node syncer023 --cluster-port 30203 --join-addr 10.0.0.10:30190",
    ];
    let outs: Vec<Outcome> = lines.iter().map(|l| check(dir.path(), l)).collect();
    for (line, out) in lines.iter().zip(&outs) {
        assert_eq!(out.code, Some(0), "{line}\n{}{}", out.stdout, out.stderr);
        assert_eq!(setting(out, "mode").0, "cluster");
    }
    assert_eq!(setting(&outs[0], "node").0, "syncer011");
    assert_eq!(setting(&outs[2], "cluster_port").0, "30203");
    assert_eq!(setting(&outs[0], "data_dir").0, "./syncer-data/syncer011");
    // Every member derives the name from its registry's identity on its first start: the
    // three syncers of one host share a registry, so they share the name (issue 21 item 6).
    let names: Vec<String> = outs.iter().map(|o| setting(o, "cluster_name").0).collect();
    assert!(
        names
            .iter()
            .all(|n| n == syncer::config::DERIVED_CLUSTER_NAME)
    );
    // Admin ports follow the rpc ports, so three syncers on one host never collide.
    let admins: Vec<String> = outs[..3]
        .iter()
        .map(|o| setting(o, "admin_addr").0)
        .collect();
    assert_eq!(
        admins,
        ["10.0.0.10:30193", "10.0.0.10:30293", "10.0.0.10:30393"]
    );
}

#[test]
fn syncer_1_4_spellings_are_aliases() {
    let dir = tempdir();
    let out = check(
        dir.path(),
        "daemon --registry 127.0.0.1:30100 --plugin servicecenter --join 127.0.0.1:30190 --cluster dc1 --peer-addr 127.0.0.1:30202 --bind-addr 127.0.0.1:30290 --rpc-addr 127.0.0.1:30291",
    );
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    // No scheme means http://, as in the 1.3 default.
    assert_eq!(setting(&out, "sc_addr").0, "127.0.0.1:30100");
    assert_eq!(setting(&out, "cluster_name").0, "dc1");
    assert_eq!(setting(&out, "peer_addr").0, "127.0.0.1:30202");
}

#[test]
fn version_subcommand_and_flag() {
    let dir = tempdir();
    let expected = format!("syncer {}", env!("CARGO_PKG_VERSION"));
    for args in [&["version"][..], &["--version"][..]] {
        let mut cmd = syncer(dir.path());
        cmd.args(args);
        let out = run(cmd);
        assert_eq!(out.code, Some(0));
        assert_eq!(out.stdout.trim(), expected);
    }
}

#[test]
fn daemon_help_documents_precedence_and_environment() {
    let dir = tempdir();
    let mut cmd = syncer(dir.path());
    cmd.args(["daemon", "--help"]);
    let out = run(cmd);
    assert_eq!(out.code, Some(0));
    assert!(
        out.stdout.contains(
            "defaults < --config FILE (YAML) < environment (SYNCER_*) < command-line flags"
        )
    );
    assert!(out.stdout.contains("SYNCER_SC_ADDR"));
    assert!(out.stdout.contains("--registry"));
}

// --- Bad input: one clear line naming the setting and the value, exit status 2 ---

/// Runs `args` (without --check: validation comes before anything binds) and expects a
/// configuration error whose message contains every `needles` item.
fn expect_config_error(dir: &Path, args: &[&str], env: &[(&str, &str)], needles: &[&str]) {
    let mut cmd = syncer(dir);
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = run(cmd);
    assert_eq!(
        out.code,
        Some(2),
        "{args:?}: expected exit 2, got {:?}\n{}{}",
        out.code,
        out.stdout,
        out.stderr
    );
    let message = out.stderr.trim();
    assert_eq!(
        message.lines().count(),
        1,
        "{args:?}: expected one line, got:\n{message}"
    );
    for needle in needles {
        assert!(
            message.contains(needle),
            "{args:?}: {message:?} lacks {needle:?}"
        );
    }
}

const LOCAL: [&str; 4] = ["--bind-addr", "127.0.0.1:0", "--rpc-addr", "127.0.0.1:0"];

fn with_local<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["daemon"];
    args.extend_from_slice(&LOCAL);
    args.extend_from_slice(extra);
    args
}

#[test]
fn malformed_address_is_refused() {
    let dir = tempdir();
    expect_config_error(
        dir.path(),
        &["daemon", "--bind-addr", "not-an-ip:30190"],
        &[],
        &["--bind-addr", "'not-an-ip:30190'", "not an IP address"],
    );
    expect_config_error(
        dir.path(),
        &with_local(&["--sc-addr", "ftp://10.0.0.1:30100"]),
        &[],
        &["--sc-addr", "ftp://10.0.0.1:30100", "not http or https"],
    );
    expect_config_error(
        dir.path(),
        &with_local(&["--join-addr", "bad host:1"]),
        &[],
        &["--join-addr", "not a host name or IP address"],
    );
}

#[test]
fn port_out_of_range_is_refused() {
    let dir = tempdir();
    expect_config_error(
        dir.path(),
        &[
            "daemon",
            "--bind-addr",
            "127.0.0.1:0",
            "--rpc-addr",
            "127.0.0.1:70000",
        ],
        &[],
        &[
            "--rpc-addr",
            "'127.0.0.1:70000'",
            "port 70000 is out of range",
        ],
    );
    expect_config_error(
        dir.path(),
        &with_local(&[
            "--mode",
            "cluster",
            "--node",
            "n1",
            "--cluster-port",
            "65536",
        ]),
        &[],
        &["--cluster-port", "65536", "out of range"],
    );
}

#[test]
fn unknown_mode_is_refused() {
    expect_config_error(
        tempdir().path(),
        &with_local(&["--mode", "triple"]),
        &[],
        &["--mode", "'triple'", "expected 'single' or 'cluster'"],
    );
}

#[test]
fn unknown_plugin_is_refused() {
    expect_config_error(
        tempdir().path(),
        &with_local(&["--sc-plugin", "consul"]),
        &[],
        &["--sc-plugin", "'consul'", "unknown registry plugin"],
    );
}

#[test]
fn bad_gossip_settings_are_refused() {
    expect_config_error(
        tempdir().path(),
        &with_local(&["--gossip-profile", "metro"]),
        &[],
        &["--gossip-profile", "'metro'", "must be lan, wan or local"],
    );
    let long = "x".repeat(65);
    expect_config_error(
        tempdir().path(),
        &with_local(&["--gossip-label", &long]),
        &[],
        &["--gossip-label", "longer than 64 bytes"],
    );
}

#[test]
fn bad_sync_settings_are_refused() {
    let dir = tempdir();
    let cases: [(&[&str], &[&str]); 18] = [
        (
            &["--removal-cap", "0"],
            &["--removal-cap", "'0'", "at least 1"],
        ),
        (
            &["--removal-cap", "-5"],
            &["--removal-cap", "'-5'", "at least 1"],
        ),
        (
            &["--removal-cap", "many"],
            &["--removal-cap", "not a whole number"],
        ),
        (
            &["--origin-grace", "500ms"],
            &["--origin-grace", "at least 1s"],
        ),
        (
            &["--origin-grace", "60"],
            &["--origin-grace", "not a duration"],
        ),
        (
            &["--keep-stale-copies", "maybe"],
            &["--keep-stale-copies", "'maybe'", "expected true or false"],
        ),
        (&["--copy-lease", "2s"], &["--copy-lease", "at least 3s"]),
        (&["--copy-lease", "3603s"], &["--copy-lease", "at most 1h"]),
        (
            &["--copy-lease", "4500ms"],
            &["--copy-lease", "whole seconds"],
        ),
        (
            &["--copy-lease", "4.5s"],
            &["--copy-lease", "whole seconds"],
        ),
        (
            &["--copy-lease", "10s"],
            &["--copy-lease", "multiple of 3s", "9s or 12s"],
        ),
        (
            &["--anti-entropy-interval", "99ms"],
            &["--anti-entropy-interval", "at least 100ms"],
        ),
        (
            &["--anti-entropy-interval", "61m"],
            &["--anti-entropy-interval", "at most 1h"],
        ),
        (
            &["--anti-entropy-interval", "soon"],
            &["--anti-entropy-interval", "not a duration"],
        ),
        (
            &["--poll-interval", "9ms"],
            &["--poll-interval", "at least 10ms"],
        ),
        (
            &["--poll-interval", "61s"],
            &["--poll-interval", "at most 1m"],
        ),
        (
            &["--poll-interval", "0.5s"],
            &["--poll-interval", "fractions"],
        ),
        (
            &["--poll-interval", ""],
            &["--poll-interval", "not a duration"],
        ),
    ];
    for (args, needles) in cases {
        expect_config_error(dir.path(), &with_local(args), &[], needles);
    }
    // The environment variable and the file key are named the same way.
    expect_config_error(
        dir.path(),
        &with_local(&[]),
        &[("SYNCER_KEEP_STALE_COPIES", "yes")],
        &[
            "environment variable SYNCER_KEEP_STALE_COPIES",
            "expected true or false",
        ],
    );
    std::fs::write(dir.path().join("s.yaml"), "sync:\n  copy_lease: 31s\n").unwrap();
    expect_config_error(
        dir.path(),
        &with_local(&["--config", "s.yaml"]),
        &[],
        &["sync.copy_lease in s.yaml", "multiple of 3s"],
    );
    std::fs::write(dir.path().join("t.yaml"), "sync:\n  removalCap: 5\n").unwrap();
    expect_config_error(
        dir.path(),
        &with_local(&["--config", "t.yaml"]),
        &[],
        &["config file t.yaml", "unknown field `removalCap`"],
    );
}

#[test]
fn cluster_mode_without_node_is_refused() {
    expect_config_error(
        tempdir().path(),
        &with_local(&["--mode", "cluster"]),
        &[],
        &["cluster mode needs --node"],
    );
}

#[test]
fn cluster_mode_without_an_etcd_executable_is_refused_at_start() {
    expect_config_error(
        tempdir().path(),
        &with_local(&[
            "--mode",
            "cluster",
            "--node",
            "syncer011",
            "--etcd-bin",
            "/nonexistent/etcd",
        ]),
        &[],
        &[
            "--etcd-bin",
            "/nonexistent/etcd",
            "does not exist",
            "install etcd-server",
        ],
    );
}

#[test]
fn same_port_twice_is_refused() {
    expect_config_error(
        tempdir().path(),
        &[
            "daemon",
            "--bind-addr",
            "127.0.0.1:4000",
            "--rpc-addr",
            "0.0.0.0:4000",
        ],
        &[],
        &["--rpc-addr", "port 4000 is already used by --bind-addr"],
    );
    // The derived admin port (rpc + 2) counts too.
    expect_config_error(
        tempdir().path(),
        &[
            "daemon",
            "--bind-addr",
            "127.0.0.1:4002",
            "--rpc-addr",
            "127.0.0.1:4000",
        ],
        &[],
        &["--admin-addr", "port 4002 is already used by --bind-addr"],
    );
}

#[test]
fn unreadable_config_file_is_refused() {
    let dir = tempdir();
    expect_config_error(
        dir.path(),
        &with_local(&["--config", "missing.yaml"]),
        &[],
        &["config file missing.yaml", "cannot read"],
    );
}

#[test]
fn malformed_config_file_is_refused() {
    let dir = tempdir();
    std::fs::write(dir.path().join("bad.yaml"), "listener: [unclosed\n").unwrap();
    expect_config_error(
        dir.path(),
        &with_local(&["--config", "bad.yaml"]),
        &[],
        &["config file bad.yaml"],
    );
    std::fs::write(
        dir.path().join("type.yaml"),
        "listener:\n  bindAddr: [1, 2]\n",
    )
    .unwrap();
    expect_config_error(
        dir.path(),
        &with_local(&["--config", "type.yaml"]),
        &[],
        &["config file type.yaml", "listener.bindAddr"],
    );
}

#[test]
fn unknown_yaml_key_is_refused() {
    let dir = tempdir();
    std::fs::write(
        dir.path().join("typo.yaml"),
        "listener:\n  bindAdr: 127.0.0.1:30190\n",
    )
    .unwrap();
    expect_config_error(
        dir.path(),
        &with_local(&["--config", "typo.yaml"]),
        &[],
        &["config file typo.yaml", "unknown field `bindAdr`"],
    );
}

#[test]
fn bad_values_name_their_environment_variable_or_file_key() {
    let dir = tempdir();
    expect_config_error(
        dir.path(),
        &["daemon", "--bind-addr", "127.0.0.1:0"],
        &[("SYNCER_RPC_ADDR", "127.0.0.1:99999")],
        &["environment variable SYNCER_RPC_ADDR", "'127.0.0.1:99999'"],
    );
    std::fs::write(
        dir.path().join("c.yaml"),
        "listener:\n  rpcAddr: 127.0.0.1:99999\n",
    )
    .unwrap();
    expect_config_error(
        dir.path(),
        &["daemon", "--bind-addr", "127.0.0.1:0", "--config", "c.yaml"],
        &[],
        &["listener.rpcAddr in c.yaml", "out of range"],
    );
}

/// An enabled TLS block that cannot be honoured stops the daemon rather than leaving the rpc
/// link in plain text: a mount naming no entry, and an entry without this syncer's certificate.
#[test]
fn enabled_tls_that_cannot_be_honoured_is_refused_rather_than_ignored() {
    let dir = tempdir();
    std::fs::write(
        dir.path().join("tls.yaml"),
        "listener:\n  tlsMount:\n    enabled: true\n    name: syncer\n",
    )
    .unwrap();
    expect_config_error(
        dir.path(),
        &with_local(&["--config", "tls.yaml"]),
        &[],
        &["listener.tlsMount.name", "tlsConfigs has no entry"],
    );
    std::fs::write(
        dir.path().join("tls.yaml"),
        "listener:\n  tlsMount:\n    enabled: true\n    name: syncer\ntlsConfigs:\n  - name: syncer\n    caFile: ca.pem\n",
    )
    .unwrap();
    expect_config_error(
        dir.path(),
        &with_local(&["--config", "tls.yaml"]),
        &[],
        &["listener.tlsMount.enabled", "certFile and keyFile"],
    );
}

#[test]
fn wildcard_bind_without_a_route_is_refused() {
    expect_config_error(
        tempdir().path(),
        &[
            "daemon",
            "--bind-addr",
            "0.0.0.0:0",
            "--rpc-addr",
            "127.0.0.1:0",
        ],
        &[],
        &["cannot choose an address to advertise", "--advertise-addr"],
    );
    expect_config_error(
        tempdir().path(),
        &with_local(&["--advertise-addr", "0.0.0.0"]),
        &[],
        &["--advertise-addr", "wildcard"],
    );
}

#[test]
fn wildcard_bind_advertises_the_route_to_the_first_join_address() {
    let out = check(
        tempdir().path(),
        "daemon --bind-addr 0.0.0.0:30190 --rpc-addr 0.0.0.0:30191 --join-addr 127.0.0.1:30290",
    );
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    assert_eq!(setting(&out, "advertise_ip").0, "127.0.0.1");
}

#[test]
fn unknown_flag_is_a_usage_error() {
    let dir = tempdir();
    let mut cmd = syncer(dir.path());
    cmd.args(["daemon", "--bogus"]);
    let out = run(cmd);
    assert_eq!(out.code, Some(2));
    assert!(out.stderr.contains("--bogus"));
}

// --- Configuration file and precedence ---

/// The original 1.4 sample file (`etc/conf/syncer.yaml`, original-syncer.md §2.3), quirks
/// included.
const SAMPLE_1_4: &str = r#"
mode: signle
node: syncer-node
cluster: syncer-cluster
dataDir: ./syncer-data/
listener:
  bindAddr: 0.0.0.0:30190
  advertiseAddr: ""
  rpcAddr: 0.0.0.0:30191
  peerAddr: 127.0.0.1:30192
  tlsMount:
    enabled: false
    name: syncer
join:
  enabled: false
  address: 127.0.0.1:30190
  retryMax: 3
  retryInterval: 30s
task:
  kind: ticker
  params:
    - key: interval
      value: 30s
registry:
  address: http://127.0.0.1:30100
  plugin: servicecenter
  tlsMount:
    enabled: false
    name: servicecenter
tlsConfigs:
  - name: syncer
    verifyPeer: true
    minVersion: TLSv1.2
    caFile: ./certs/trust.cer
    certFile: ./certs/server.cer
    keyFile: ./certs/server_key.pem
    passphrase: ""
    ciphers:
      - TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384
      - TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
  - name: servicecenter
    verifyPeer: false
"#;

#[test]
fn original_1_4_sample_file_is_accepted_with_warnings() {
    let dir = tempdir();
    std::fs::write(dir.path().join("syncer.yaml"), SAMPLE_1_4).unwrap();
    // The sample binds a wildcard and disables joining, so there is nothing to derive the
    // advertised address from: it must be given.
    let out = check(
        dir.path(),
        "daemon --config syncer.yaml --advertise-addr 127.0.0.1",
    );
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    assert_eq!(
        setting(&out, "mode"),
        ("signle".into(), "mode in syncer.yaml".into())
    );
    assert_eq!(setting(&out, "node").0, "syncer-node");
    assert_eq!(setting(&out, "cluster_name").0, "syncer-cluster");
    assert_eq!(setting(&out, "resync_interval").0, "30s");
    assert!(out.stdout.contains("mode 'signle'"), "{}", out.stdout);
    assert!(out.stdout.contains("join.enabled is false"));
    assert!(
        out.stdout
            .contains("join.retryMax is accepted for compatibility")
    );
    assert!(out.stdout.contains("tlsConfigs"));
    assert!(
        !out.stdout.contains("join_addr "),
        "disabled join must not be used"
    );
}

#[test]
fn original_1_3_keys_are_accepted() {
    let dir = tempdir();
    std::fs::write(
        dir.path().join("c13.yaml"),
        "log_file: ./syncer.log\nmode: single\njoin_addr: 127.0.0.1:30290\nticker_interval: 45\n\
         servicecenter:\n  addr: 127.0.0.1:30100\n  plugin: servicecenter\ncluster_name: dc13\ncluster_port: 30202\n",
    )
    .unwrap();
    let out = check(
        dir.path(),
        "daemon --config c13.yaml --bind-addr 127.0.0.1:0 --rpc-addr 127.0.0.1:0",
    );
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    assert_eq!(setting(&out, "cluster_name").0, "dc13");
    assert_eq!(setting(&out, "resync_interval").0, "45s");
    assert_eq!(setting(&out, "join_addr").0, "127.0.0.1:30290");
    assert!(
        out.stdout
            .contains("log_file is accepted for compatibility")
    );
}

#[test]
fn precedence_is_defaults_then_file_then_environment_then_flags() {
    let dir = tempdir();
    std::fs::write(
        dir.path().join("p.yaml"),
        "node: from-file\ncluster: file-dc\nlistener:\n  bindAddr: 127.0.0.1:41000\n  rpcAddr: 127.0.0.1:41001\n",
    )
    .unwrap();
    let mut cmd = syncer(dir.path());
    cmd.args(["daemon", "--config", "p.yaml", "--node", "from-flag"])
        .env("SYNCER_CHECK", "1")
        .env("SYNCER_NODE", "from-env")
        .env("SYNCER_RPC_ADDR", "127.0.0.1:42001");
    let out = run(cmd);
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    // Flag beats environment beats file.
    assert_eq!(setting(&out, "node"), ("from-flag".into(), "--node".into()));
    assert_eq!(
        setting(&out, "rpc_addr"),
        (
            "127.0.0.1:42001".into(),
            "environment variable SYNCER_RPC_ADDR".into()
        )
    );
    // File beats default.
    assert_eq!(
        setting(&out, "bind_addr"),
        (
            "127.0.0.1:41000".into(),
            "listener.bindAddr in p.yaml".into()
        )
    );
    assert_eq!(setting(&out, "cluster_name").0, "file-dc");
    // Untouched settings keep their defaults.
    assert_eq!(
        setting(&out, "sc_plugin"),
        ("servicecenter".into(), "default".into())
    );
    // The config file itself may come from the environment.
    let mut cmd = syncer(dir.path());
    cmd.args(["daemon"])
        .env("SYNCER_CHECK", "1")
        .env("SYNCER_CONFIG", "p.yaml");
    let out = run(cmd);
    assert_eq!(setting(&out, "node").0, "from-file");
}

#[test]
fn gossip_profile_and_label_come_from_the_file() {
    let dir = tempdir();
    // `profile` is the 1.3 key (declared, never used there); `gossip.*` are our own.
    std::fs::write(dir.path().join("13.yaml"), "profile: wan\n").unwrap();
    std::fs::write(
        dir.path().join("own.yaml"),
        "gossip:\n  profile: local\n  label: blue\n",
    )
    .unwrap();
    let out = check(
        dir.path(),
        "daemon --config 13.yaml --bind-addr 127.0.0.1:0",
    );
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    assert_eq!(
        setting(&out, "gossip_profile"),
        ("wan".into(), "profile in 13.yaml".into())
    );
    assert!(!out.stderr.contains("profile"), "{}", out.stderr);
    let out = check(
        dir.path(),
        "daemon --config own.yaml --bind-addr 127.0.0.1:0",
    );
    assert_eq!(setting(&out, "gossip_profile").0, "local");
    assert_eq!(
        setting(&out, "gossip_label"),
        ("blue".into(), "gossip.label in own.yaml".into())
    );
    let out = check(dir.path(), "daemon --bind-addr 127.0.0.1:0");
    assert_eq!(
        setting(&out, "gossip_profile"),
        ("lan".into(), "default".into())
    );
}

#[test]
fn sync_settings_have_defaults_and_come_from_every_layer() {
    let dir = tempdir();
    let out = check(
        dir.path(),
        "daemon --bind-addr 127.0.0.1:0 --rpc-addr 127.0.0.1:0",
    );
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    for (id, value) in [
        ("removal_cap", "1000"),
        ("origin_grace", "1m"),
        ("keep_stale_copies", "false"),
        ("copy_lease", "30s"),
        ("anti_entropy_interval", "10s"),
        ("poll_interval", "100ms"),
    ] {
        assert_eq!(
            setting(&out, id),
            (value.into(), "default".into()),
            "{}",
            out.stdout
        );
    }

    // Every setting in the file; some overridden by the environment, some by flags.
    std::fs::write(
        dir.path().join("sync.yaml"),
        "sync:\n  removal_cap: 50\n  origin_grace: 2m\n  keep_stale_copies: true\n  copy_lease: 60s\n  anti_entropy_interval: 5s\n  poll_interval: 250ms\n",
    )
    .unwrap();
    let out = check(
        dir.path(),
        "daemon --config sync.yaml --bind-addr 127.0.0.1:0 --rpc-addr 127.0.0.1:0",
    );
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    for (id, value) in [
        ("removal_cap", "50"),
        ("origin_grace", "2m"),
        ("keep_stale_copies", "true"),
        ("copy_lease", "60s"),
        ("anti_entropy_interval", "5s"),
        ("poll_interval", "250ms"),
    ] {
        assert_eq!(
            setting(&out, id),
            (value.into(), format!("sync.{id} in sync.yaml")),
            "{}",
            out.stdout
        );
    }

    let mut cmd = syncer(dir.path());
    cmd.args([
        "daemon",
        "--config",
        "sync.yaml",
        "--bind-addr",
        "127.0.0.1:0",
        "--rpc-addr",
        "127.0.0.1:0",
        "--removal-cap",
        "7",
        "--keep-stale-copies",
        "--copy-lease",
        "3s",
        "--poll-interval",
        "10ms",
    ])
    .env("SYNCER_CHECK", "1")
    .env("SYNCER_REMOVAL_CAP", "8")
    .env("SYNCER_ORIGIN_GRACE", "90s")
    .env("SYNCER_KEEP_STALE_COPIES", "false")
    .env("SYNCER_ANTI_ENTROPY_INTERVAL", "1h");
    let out = run(cmd);
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    assert_eq!(
        setting(&out, "removal_cap"),
        ("7".into(), "--removal-cap".into())
    );
    assert_eq!(
        setting(&out, "origin_grace"),
        (
            "90s".into(),
            "environment variable SYNCER_ORIGIN_GRACE".into()
        )
    );
    // The bare flag means true, and beats the environment's false.
    assert_eq!(
        setting(&out, "keep_stale_copies"),
        ("true".into(), "--keep-stale-copies".into())
    );
    assert_eq!(
        setting(&out, "copy_lease"),
        ("3s".into(), "--copy-lease".into())
    );
    assert_eq!(
        setting(&out, "anti_entropy_interval"),
        (
            "1h".into(),
            "environment variable SYNCER_ANTI_ENTROPY_INTERVAL".into()
        )
    );
    assert_eq!(
        setting(&out, "poll_interval"),
        ("10ms".into(), "--poll-interval".into())
    );

    // An explicit false on the command line.
    let out = check(
        dir.path(),
        "daemon --config sync.yaml --bind-addr 127.0.0.1:0 --rpc-addr 127.0.0.1:0 --keep-stale-copies=false",
    );
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    assert_eq!(
        setting(&out, "keep_stale_copies"),
        ("false".into(), "--keep-stale-copies".into())
    );
}

#[test]
fn members_names_an_unreachable_syncer() {
    let dir = tempdir();
    let mut cmd = syncer(dir.path());
    cmd.args(["members", "--rpc-addr", "127.0.0.1:1", "--timeout", "2s"]);
    let out = run(cmd);
    assert_eq!(out.code, Some(1), "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("cannot connect to 127.0.0.1:1"),
        "{}",
        out.stderr
    );
    let mut cmd = syncer(dir.path());
    cmd.args(["members", "--rpc-addr", "127.0.0.1:1", "--format", "xml"]);
    let out = run(cmd);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("xml"), "{}", out.stderr);
}

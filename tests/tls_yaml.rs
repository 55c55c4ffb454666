//! TLS configured the way operators of the original Syncer wrote it, with real processes: one
//! data centre's syncer reads a 1.4 file (`listener.tlsMount` naming a `tlsConfigs[]` entry),
//! the other a 1.3 file (`tls_config`), and the two sync over mutual TLS; `--check` names the
//! file's keys as the origin of the TLS settings; a file naming a missing key file stops the
//! daemon before anything binds. Harness: `tests/support/sync.rs`.

mod support;

use std::path::Path;

use support::certs::{Certs, check_ready_rpc_tls, sync_both_ways};
use support::sync::{DcSetup, World};
use support::{run, syncer};

fn file_14(dir: &Path, certs: &Certs) -> std::path::PathBuf {
    let path = dir.join("syncer-14.yaml");
    let text = format!(
        "listener:\n  tlsMount:\n    enabled: true\n    name: syncer\n\
         tlsConfigs:\n  - name: syncer\n    verifyPeer: true\n    caFile: {}\n    certFile: {}\n    keyFile: {}\n",
        certs.ca.display(),
        certs.cert.display(),
        certs.key.display()
    );
    std::fs::write(&path, text).expect("write the 1.4 file");
    path
}

fn file_13(dir: &Path, certs: &Certs) -> std::path::PathBuf {
    let path = dir.join("syncer-13.yaml");
    let text = format!(
        "tls_config:\n  enabled: true\n  verify_peer: true\n  ca_file: {}\n  cert_file: {}\n  key_file: {}\n",
        certs.ca.display(),
        certs.cert.display(),
        certs.key.display()
    );
    std::fs::write(&path, text).expect("write the 1.3 file");
    path
}

fn with_config(path: &Path) -> DcSetup {
    DcSetup {
        flags: vec!["--config".to_owned(), path.display().to_string()],
        ..DcSetup::default()
    }
}

#[test]
fn data_centres_configured_by_1_4_and_1_3_files_sync_over_mutual_tls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = Certs::make(dir.path(), "pki");
    let mut w = World::start_each(
        vec![
            with_config(&file_14(dir.path(), &certs)),
            with_config(&file_13(dir.path(), &certs)),
        ],
        &[],
    );
    sync_both_ways(&mut w);
    check_ready_rpc_tls(&mut w, 2, "mutual");
}

/// `--check` shows where each TLS setting came from; a missing file named by the YAML stops
/// the daemon with the file's name, before anything binds.
#[test]
fn check_names_the_yaml_keys_and_a_missing_file_stops_the_daemon() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = Certs::make(dir.path(), "pki");
    let path = file_14(dir.path(), &certs);
    let mut cmd = syncer(dir.path());
    cmd.args([
        "daemon",
        "--check",
        "--sc-addr",
        "http://127.0.0.1:30100",
        "--bind-addr",
        "127.0.0.1:30190",
    ])
    .arg("--config")
    .arg(&path);
    let checked = run(cmd);
    assert_eq!(checked.code, Some(0), "--check failed: {}", checked.stderr);
    let shown = format!("{}{}", checked.stdout, checked.stderr);
    for needle in [
        "tlsConfigs[syncer].certFile in",
        "tlsConfigs[syncer].keyFile in",
        "tlsConfigs[syncer].caFile in",
    ] {
        assert!(shown.contains(needle), "{needle} not in:\n{shown}");
    }

    let broken = dir.path().join("broken.yaml");
    let text = std::fs::read_to_string(&path).expect("read").replace(
        &certs.key.display().to_string(),
        "/nonexistent/node-key.pem",
    );
    std::fs::write(&broken, text).expect("write");
    let mut cmd = syncer(dir.path());
    cmd.args([
        "daemon",
        "--sc-addr",
        "http://127.0.0.1:30100",
        "--bind-addr",
        "127.0.0.1:0",
        "--rpc-addr",
        "127.0.0.1:0",
    ])
    .arg("--config")
    .arg(&broken);
    let refused = run(cmd);
    assert_eq!(refused.code, Some(2), "{}", refused.stderr);
    assert!(
        refused.stderr.contains("/nonexistent/node-key.pem"),
        "{}",
        refused.stderr
    );
    assert!(
        !refused.stderr.contains("listening"),
        "bound before refusing: {}",
        refused.stderr
    );
}

/// The original's own sample `tlsConfigs` entry, as operators copied it: `minVersion:
/// TLSv1.2`, its four Go cipher names (two of them RSA key exchange, which rustls does not
/// have: skipped with a warning), and a `passphrase` for an encrypted key. `--check` accepts
/// it, names the file's keys as origins and never shows the passphrase.
#[test]
fn the_original_sample_entry_with_ciphers_and_a_passphrase_is_accepted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = Certs::make(dir.path(), "pki");
    let plain = std::fs::read_to_string(&certs.key).expect("read the key");
    let sealed = dir.path().join("node-key.enc.pem");
    std::fs::write(
        &sealed,
        syncer::tls::pem::encrypt_private_key(&plain, "yaml secret").expect("encrypt"),
    )
    .expect("write");
    let path = dir.path().join("sample.yaml");
    let text = format!(
        "listener:\n  tlsMount:\n    enabled: true\n    name: syncer\n\
         tlsConfigs:\n  - name: syncer\n    verifyPeer: true\n    minVersion: TLSv1.2\n    passphrase: yaml secret\n    caFile: {}\n    certFile: {}\n    keyFile: {}\n    ciphers:\n      - TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384\n      - TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256\n      - TLS_RSA_WITH_AES_256_GCM_SHA384\n      - TLS_RSA_WITH_AES_128_GCM_SHA256\n",
        certs.ca.display(),
        certs.cert.display(),
        sealed.display()
    );
    std::fs::write(&path, text).expect("write the file");
    let mut cmd = syncer(dir.path());
    cmd.args([
        "daemon",
        "--check",
        "--sc-addr",
        "http://127.0.0.1:30100",
        "--bind-addr",
        "127.0.0.1:30190",
    ])
    .arg("--config")
    .arg(&path);
    let checked = run(cmd);
    assert_eq!(checked.code, Some(0), "--check failed: {}", checked.stderr);
    let shown = format!("{}{}", checked.stdout, checked.stderr);
    for needle in [
        "tlsConfigs[syncer].ciphers in",
        "tlsConfigs[syncer].minVersion in",
        "tlsConfigs[syncer].passphrase in",
        "TLS_RSA_WITH_AES_256_GCM_SHA384 (not supported by syncer's TLS library)",
    ] {
        assert!(shown.contains(needle), "{needle} not in:\n{shown}");
    }
    assert!(
        !shown.contains("yaml secret"),
        "the passphrase is shown:\n{shown}"
    );
}

//! The registry client over TLS, with real processes: `syncer dev-registry --tls-cert/--tls-key`
//! serves HTTPS (both kinds), a daemon reads it when it trusts the registry's CA
//! (`--sc-tls-ca`), refuses it when the certificate comes from another CA (the log names the
//! address and the TLS reason, and nothing is saved), and reads it with `--sc-tls-insecure`,
//! which warns at start. An encrypted client key, the minimum version and cipher suites, and
//! the reload of the CA file without restart.

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;

use support::certs::Certs;
use support::{DEADLINE, Daemon, run, syncer};

/// A `syncer dev-registry` process serving HTTPS, killed when dropped.
struct HttpsRegistry {
    child: Child,
    url: String,
}

impl HttpsRegistry {
    fn start(dir: &Path, kind: &str, certs: &Certs) -> HttpsRegistry {
        HttpsRegistry::start_with(dir, kind, certs, &[])
    }

    /// [`HttpsRegistry::start`] with more flags (`--tls-ca`: client certificates required).
    fn start_with(dir: &Path, kind: &str, certs: &Certs, flags: &[String]) -> HttpsRegistry {
        let mut cmd = syncer(dir);
        cmd.args(["dev-registry", "--kind", kind, "--listen", "127.0.0.1:0"])
            .arg("--tls-cert")
            .arg(&certs.cert)
            .arg("--tls-key")
            .arg(&certs.key)
            .args(flags)
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = cmd.spawn().expect("spawn dev-registry");
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let line = rx
            .recv_timeout(DEADLINE)
            .expect("dev-registry printed its address");
        let url = line
            .strip_prefix("dev registry listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {line}"))
            .to_owned();
        assert!(url.starts_with("https://"), "{url}");
        HttpsRegistry { child, url }
    }
}

impl Drop for HttpsRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A single-mode daemon against `sc_addr` that names its data centre from the registry.
fn daemon(dir: &Path, data: &Path, sc_addr: &str, flags: &[String]) -> Daemon {
    Daemon::spawn(daemon_command(dir, data, sc_addr, flags))
}

/// The command of [`daemon`], for a test that adds to it.
fn daemon_command(dir: &Path, data: &Path, sc_addr: &str, flags: &[String]) -> Command {
    let mut cmd = syncer(dir);
    cmd.args([
        "daemon",
        "--node",
        "tls-node",
        "--bind-addr",
        "127.0.0.1:0",
        "--rpc-addr",
        "127.0.0.1:0",
        "--admin-addr",
        "127.0.0.1:0",
        "--log-format",
        "json",
        "--log-level",
        "info",
        "--sc-addr",
        sc_addr,
    ])
    .arg("--data-dir")
    .arg(data)
    .args(flags);
    cmd
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// Trusting the registry's CA: the daemon reads the registry's identity over HTTPS and names
/// its data centre from it, for both registry kinds.
#[test]
fn a_daemon_reads_an_https_registry_of_a_private_ca() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = Certs::make(dir.path(), "pki");
    for (kind, extra) in [
        ("servicecomb", vec![]),
        ("eureka", vec!["--sc-plugin", "eureka"]),
    ] {
        let registry = HttpsRegistry::start(dir.path(), kind, &certs);
        let data = dir.path().join(format!("data-{kind}"));
        let mut flags = vec!["--sc-tls-ca".to_owned(), path(&certs.ca)];
        flags.extend(extra.iter().map(|s| (*s).to_owned()));
        let mut d = daemon(dir.path(), &data, &registry.url, &flags);
        d.wait_for_line("data centre name derived from the registry's identity");
        d.wait_ready();
        d.drain();
        assert!(
            !d.log().contains("--sc-tls-insecure"),
            "no insecure warning expected:\n{}",
            d.log()
        );
    }
}

/// The registry's certificate comes from another CA: every read is refused, the log names the
/// address and the TLS reason, and no data centre name is derived or saved.
#[test]
fn a_registry_certificate_of_another_ca_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let served = Certs::make(dir.path(), "served");
    let trusted = Certs::make(dir.path(), "trusted");
    let registry = HttpsRegistry::start(dir.path(), "servicecomb", &served);
    let data = dir.path().join("data");
    let flags = vec!["--sc-tls-ca".to_owned(), path(&trusted.ca)];
    let mut d = daemon(dir.path(), &data, &registry.url, &flags);
    let line = d.wait_for_line("waiting for the registry");
    let address = registry.url.trim_start_matches("https://");
    assert!(line.contains(address), "address not named: {line}");
    assert!(
        line.contains("invalid peer certificate"),
        "TLS reason not named: {line}"
    );
    // Another attempt, still refused; nothing was derived meanwhile.
    d.wait_for_line("waiting for the registry");
    d.drain();
    assert!(
        !d.log().contains("data centre name derived"),
        "the registry was read:\n{}",
        d.log()
    );
    assert!(
        !data.join("cluster_name").exists()
            && std::fs::read_dir(&data).map_or(true, |entries| {
                entries
                    .filter_map(Result::ok)
                    .all(|e| !e.file_name().to_string_lossy().contains("name"))
            }),
        "a data centre name was saved"
    );
}

/// A registry that demands client certificates (`dev-registry --tls-ca`) refuses a daemon
/// that trusts it but presents none: the log names the address, and nothing is read.
#[test]
fn a_registry_demanding_a_client_certificate_refuses_a_daemon_without_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = Certs::make(dir.path(), "pki");
    let registry = HttpsRegistry::start_with(
        dir.path(),
        "servicecomb",
        &certs,
        &["--tls-ca".to_owned(), path(&certs.ca)],
    );
    let data = dir.path().join("data");
    let flags = vec!["--sc-tls-ca".to_owned(), path(&certs.ca)];
    let mut d = daemon(dir.path(), &data, &registry.url, &flags);
    let line = d.wait_for_line("waiting for the registry");
    let address = registry.url.trim_start_matches("https://");
    assert!(line.contains(address), "address not named: {line}");
    d.wait_for_line("waiting for the registry");
    d.drain();
    assert!(
        !d.log().contains("data centre name derived"),
        "the registry was read without a client certificate:\n{}",
        d.log()
    );
}

/// `--sc-tls-insecure` accepts the certificate of an unknown CA, and says so at start.
#[test]
fn insecure_mode_reads_any_certificate_and_warns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = Certs::make(dir.path(), "pki");
    let registry = HttpsRegistry::start(dir.path(), "servicecomb", &certs);
    let data = dir.path().join("data");
    let flags = vec!["--sc-tls-insecure".to_owned()];
    let mut d = daemon(dir.path(), &data, &registry.url, &flags);
    let warning = d.wait_for_line("--sc-tls-insecure is on");
    assert!(warning.contains("WARN"), "{warning}");
    d.wait_for_line("data centre name derived from the registry's identity");
}

/// Bad TLS files of the dev registry stop it before it binds, naming the file.
#[test]
fn dev_registry_refuses_bad_tls_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = Certs::make(dir.path(), "pki");
    let missing = dir.path().join("missing.pem");
    let mut cmd = syncer(dir.path());
    cmd.args(["dev-registry", "--listen", "127.0.0.1:0"])
        .arg("--tls-cert")
        .arg(&missing)
        .arg("--tls-key")
        .arg(&certs.key);
    let out = run(cmd);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("missing.pem"), "{}", out.stderr);
    assert!(out.stdout.is_empty(), "{}", out.stdout);
}

/// A registry that asks for client certificates: the daemon presents one whose key is
/// encrypted (passphrase in SYNCER_SC_TLS_KEY_PASSPHRASE) and speaks TLS 1.3 with the one
/// suite it is given; it reads the registry. A wrong passphrase stops it at start.
#[test]
fn an_encrypted_client_key_min_version_and_ciphers_reach_the_registry() {
    const PASSPHRASE: &str = "registry passphrase";
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = Certs::make(dir.path(), "pki");
    let registry = HttpsRegistry::start_with(
        dir.path(),
        "servicecomb",
        &certs,
        &["--tls-ca".to_owned(), path(&certs.ca)],
    );
    let plain = std::fs::read_to_string(&certs.key).expect("read the key");
    let encrypted = dir.path().join("client-key.enc.pem");
    std::fs::write(
        &encrypted,
        syncer::tls::pem::encrypt_private_key(&plain, PASSPHRASE).expect("encrypt"),
    )
    .expect("write the encrypted key");
    let flags = vec![
        "--sc-tls-ca".to_owned(),
        path(&certs.ca),
        "--sc-tls-cert".to_owned(),
        path(&certs.cert),
        "--sc-tls-key".to_owned(),
        path(&encrypted),
        "--sc-tls-min-version".to_owned(),
        "TLSv1.3".to_owned(),
        "--sc-tls-ciphers".to_owned(),
        "TLS_AES_128_GCM_SHA256".to_owned(),
    ];
    let data = dir.path().join("data");
    let mut cmd = daemon_command(dir.path(), &data, &registry.url, &flags);
    cmd.env("SYNCER_SC_TLS_KEY_PASSPHRASE", PASSPHRASE);
    let mut d = Daemon::spawn(cmd);
    d.wait_for_line("data centre name derived from the registry's identity");
    d.wait_ready();

    let mut cmd = daemon_command(dir.path(), &dir.path().join("data2"), &registry.url, &flags);
    cmd.arg("--check")
        .env("SYNCER_SC_TLS_KEY_PASSPHRASE", "not it");
    let out = run(cmd);
    assert_ne!(out.code, Some(0), "{}", out.stdout);
    assert!(
        out.stderr.contains("wrong passphrase") && out.stderr.contains("client-key.enc.pem"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("not it"), "{}", out.stderr);
}

/// A registry that speaks TLS 1.2 only (a rustls server in the test): with
/// `--sc-tls-min-version 1.3` every read fails its handshake, and the log says why.
#[test]
fn min_version_1_3_refuses_a_tls_1_2_registry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = Certs::make(dir.path(), "pki");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let server = {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let chain: Vec<_> = CertificateDer::pem_file_iter(&certs.cert)
            .expect("read the certificate")
            .map(|c| c.expect("a certificate"))
            .collect();
        let key = PrivateKeyDer::from_pem_file(&certs.key).expect("read the key");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS12])
            .expect("TLS 1.2")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("server config")
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let (handshakes_tx, handshakes) = mpsc::channel();
    rt.spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let outcome = acceptor
                .accept(tcp)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string());
            if handshakes_tx.send(outcome).is_err() {
                break;
            }
        }
    });
    let flags = vec![
        "--sc-tls-ca".to_owned(),
        path(&certs.ca),
        "--sc-tls-min-version".to_owned(),
        "1.3".to_owned(),
    ];
    let mut d = daemon(
        dir.path(),
        &dir.path().join("data"),
        &format!("https://{addr}"),
        &flags,
    );
    let line = d.wait_for_line("waiting for the registry");
    assert!(
        line.contains("ProtocolVersion"),
        "TLS reason not named: {line}"
    );
    let refused = handshakes.recv_timeout(DEADLINE).expect("a handshake");
    assert!(refused.is_err(), "the TLS 1.2 server finished a handshake");
}

/// The registry client's CA is reloaded when its file changes: a daemon that does not trust
/// the registry's CA waits for it; once the file holds the right CA, the next read succeeds
/// without a restart.
#[test]
fn the_registry_ca_is_reloaded_when_its_file_changes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let served = Certs::make(dir.path(), "served");
    let other = Certs::make(dir.path(), "other");
    let registry = HttpsRegistry::start(dir.path(), "servicecomb", &served);
    let ca = dir.path().join("registry-ca.pem");
    std::fs::copy(&other.ca, &ca).expect("copy the CA");
    let flags = vec!["--sc-tls-ca".to_owned(), path(&ca)];
    let mut d = daemon(dir.path(), &dir.path().join("data"), &registry.url, &flags);
    let line = d.wait_for_line("waiting for the registry");
    assert!(line.contains("invalid peer certificate"), "{line}");
    let next = dir.path().join("registry-ca.pem.new");
    std::fs::copy(&served.ca, &next).expect("copy the CA");
    std::fs::rename(&next, &ca).expect("replace the CA");
    let reloaded = d.wait_for_line("TLS certificate, key and CA reloaded");
    assert!(
        reloaded.contains("registry client") && reloaded.contains("file change"),
        "{reloaded}"
    );
    d.wait_for_line("data centre name derived from the registry's identity");
    d.wait_ready();
}

//! etcd over TLS with the real `etcd` executable: the mapping store against an etcd that
//! serves TLS and demands client certificates (`--client-cert-auth`), from `syncer dev-certs`
//! files; refused without a client certificate and with a CA that did not sign the server,
//! with errors naming the endpoint; a cluster-mode `syncer daemon` electing itself through
//! such an etcd (`--etcd-endpoints https://... --etcd-ca/--etcd-cert/--etcd-key`); bad etcd
//! TLS settings stopping `syncer daemon` at start.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use support::etcd::EtcdServer;
use syncer::cli::dev_certs;
use syncer::store::contract::store_contract;
use syncer::store::etcd_tls::ETCD_FLAGS;
use syncer::store::{EtcdStore, EtcdTimeouts, EtcdTls, MappingStore, StoreError};

/// The prefix the daemon would use for cluster `dc1`.
const PREFIX: &str = "/syncer/v2/dc1/";
/// Short timeouts, so that a refused connection shows quickly.
const TIMEOUTS: EtcdTimeouts = EtcdTimeouts {
    connect: Duration::from_secs(2),
    request: Duration::from_secs(3),
};

/// A CA and a node certificate for 127.0.0.1, as `syncer dev-certs` writes them.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().expect("temporary directory");
        let certs = dev_certs::generate(&["127.0.0.1".into(), "localhost".into()])
            .expect("generate certificates");
        dev_certs::write(dir.path(), &certs).expect("write certificates");
        Pki { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn cert(&self) -> PathBuf {
        self.path(dev_certs::NODE_CERT)
    }

    fn key(&self) -> PathBuf {
        self.path(dev_certs::NODE_KEY)
    }

    fn ca(&self) -> PathBuf {
        self.path(dev_certs::CA_CERT)
    }

    fn server(&self) -> EtcdServer {
        EtcdServer::start_tls(&self.cert(), &self.key(), &self.ca())
    }

    /// The client TLS of `--etcd-ca` and, when `with_cert`, `--etcd-cert`/`--etcd-key`.
    fn client(&self, ca: &Path, with_cert: bool) -> EtcdTls {
        let (cert, key) = (self.cert(), self.key());
        let pair = with_cert.then_some((cert.as_path(), key.as_path()));
        EtcdTls::load(Some(ca), pair, ETCD_FLAGS).expect("load the client's TLS files")
    }
}

async fn store(server: &EtcdServer, tls: Option<&EtcdTls>) -> Result<EtcdStore, StoreError> {
    EtcdStore::connect_with(&[server.url()], tls, PREFIX.to_owned(), TIMEOUTS).await
}

/// The error of the first call of a store that cannot reach etcd through TLS (the
/// connection opens lazily, so connecting may succeed or fail).
async fn first_error(server: &EtcdServer, tls: Option<&EtcdTls>) -> StoreError {
    match store(server, tls).await {
        Err(e) => e,
        Ok(store) => store
            .load()
            .await
            .expect_err("the store must not read through this connection"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_passes_the_contract_over_tls_with_a_client_certificate() {
    let pki = Pki::new();
    let server = pki.server();
    assert!(server.endpoint().starts_with("https://"));
    let tls = pki.client(&pki.ca(), true);
    let store = store(&server, Some(&tls)).await.expect("connect over TLS");
    store_contract(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_etcd_with_client_cert_auth_refuses_a_client_without_a_certificate() {
    let pki = Pki::new();
    let server = pki.server();
    let tls = pki.client(&pki.ca(), false);
    let error = first_error(&server, Some(&tls)).await;
    let text = error.to_string();
    eprintln!("without a client certificate: {text}");
    assert!(matches!(error, StoreError::Unavailable(_)), "{text}");
    assert!(
        text.contains(&server.endpoint()),
        "names the endpoint: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_certificate_from_another_ca_is_refused() {
    let pki = Pki::new();
    let other = Pki::new();
    let server = pki.server();
    // Our certificate is fine; the server's is not signed by the CA we trust.
    let tls = pki.client(&other.ca(), true);
    let error = first_error(&server, Some(&tls)).await;
    let text = error.to_string();
    eprintln!("with another CA: {text}");
    assert!(
        text.contains(&server.endpoint()),
        "names the endpoint: {text}"
    );
    assert!(
        text.contains("certificate") || text.contains("Certificate"),
        "says why: {text}"
    );
}

/// The files of a renewal: the client starts with `old`'s certificate and a CA file that
/// trusts the server; the etcd trusts client certificates of both CAs until it restarts.
struct Renewal {
    old: Pki,
    new: Pki,
    client: tempfile::TempDir,
}

impl Renewal {
    fn new() -> Renewal {
        let (old, new) = (Pki::new(), Pki::new());
        let client = tempfile::tempdir().expect("temporary directory");
        let both = [old.ca(), new.ca()]
            .iter()
            .map(|p| std::fs::read_to_string(p).expect("read a CA"))
            .collect::<String>();
        std::fs::write(client.path().join("both-cas.pem"), both).expect("write the CA bundle");
        std::fs::copy(old.ca(), client.path().join("ca.pem")).expect("copy the CA");
        let renewal = Renewal { old, new, client };
        renewal.install(&renewal.old);
        renewal
    }

    fn path(&self, name: &str) -> PathBuf {
        self.client.path().join(name)
    }

    /// `pki`'s node certificate and key as the client's files, replaced the way a renewal
    /// tool does it (a new file moved over the old one).
    fn install(&self, pki: &Pki) {
        for (from, to) in [(pki.cert(), "cert.pem"), (pki.key(), "key.pem")] {
            let staged = self.path(&format!("{to}.new"));
            std::fs::copy(from, &staged).expect("stage a file");
            std::fs::rename(&staged, self.path(to)).expect("move a file into place");
        }
    }

    /// An etcd with the old node certificate, trusting client certificates of both CAs.
    fn server(&self) -> EtcdServer {
        EtcdServer::start_tls(
            &self.old.cert(),
            &self.old.key(),
            &self.path("both-cas.pem"),
        )
    }

    fn tls(&self) -> EtcdTls {
        let (cert, key) = (self.path("cert.pem"), self.path("key.pem"));
        EtcdTls::load(Some(&self.path("ca.pem")), Some((&cert, &key)), ETCD_FLAGS)
            .expect("load the client's TLS files")
    }
}

/// A client certificate renewed under a running store: once its files are replaced and
/// reloaded, the store keeps working against an etcd that now trusts only the new CA (which
/// refuses the old certificate).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reloaded_client_certificate_is_used_once_etcd_trusts_only_the_new_ca() {
    use syncer::tls::reload::Reloadable;

    let renewal = Renewal::new();
    let mut server = renewal.server();
    let store = store(&server, Some(&renewal.tls()))
        .await
        .expect("connect over TLS");
    store.load().await.expect("read with the old certificate");
    let connection = store.connection();
    assert!(!connection.changed(), "nothing changed yet");

    renewal.install(&renewal.new);
    assert!(connection.changed(), "the renewed files count as a change");
    connection.reload().expect("the renewed files are good");
    assert!(!connection.changed(), "the reload read the files in place");

    server.restart_trusting(&renewal.new.ca());
    let old = first_error(&server, Some(&renewal.old.client(&renewal.old.ca(), true))).await;
    assert!(matches!(old, StoreError::Unavailable(_)), "{old}");
    support::until("the store to read with the renewed certificate", || async {
        store.load().await.is_ok()
    })
    .await;
}

/// Files that cannot be used are refused by a reload, and the client in force stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_of_broken_files_keeps_the_client_in_force() {
    use syncer::tls::reload::Reloadable;

    let renewal = Renewal::new();
    let server = renewal.server();
    let store = store(&server, Some(&renewal.tls()))
        .await
        .expect("connect over TLS");
    std::fs::write(renewal.path("key.pem"), "not a key").expect("break the key");
    let error = store
        .connection()
        .reload()
        .expect_err("a broken key is refused")
        .to_string();
    assert!(
        error.contains("key.pem") && error.contains("--etcd-key"),
        "{error}"
    );
    store.load().await.expect("the client in force still reads");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_client_cannot_use_an_https_endpoint() {
    let pki = Pki::new();
    let server = pki.server();
    let error = store(&server, None)
        .await
        .expect_err("https without TLS settings is refused");
    assert!(matches!(error, StoreError::Invalid(_)), "{error}");
    assert!(error.to_string().contains(&server.endpoint()), "{error}");
}

/// `syncer daemon` with `etcd_flags` (and an https endpoint nobody serves), `--check` when
/// `check`: the outcome.
fn daemon_with(dir: &Path, etcd_flags: &[&str], check: bool) -> support::Outcome {
    let mut cmd = support::syncer(dir);
    cmd.args([
        "daemon",
        "--bind-addr",
        "127.0.0.1:0",
        "--rpc-addr",
        "127.0.0.1:0",
        "--admin-addr",
        "none",
    ])
    .args(etcd_flags);
    if check {
        cmd.arg("--check");
    }
    support::run(cmd)
}

/// Bad etcd TLS settings stop the daemon at start, naming the file and its flag (or the
/// endpoints), before anything binds; `--check` shows good ones as paths only.
#[test]
fn bad_etcd_tls_settings_stop_the_daemon_at_start() {
    let pki = Pki::new();
    let other = Pki::new();
    let dir = pki.dir.path();
    let text = |p: PathBuf| p.display().to_string();
    let (cert, key, ca) = (text(pki.cert()), text(pki.key()), text(pki.ca()));
    let other_key = text(other.key());
    let missing = text(pki.path("missing.pem"));
    let https = "https://127.0.0.1:1";

    let good = daemon_with(
        dir,
        &[
            "--etcd-endpoints",
            https,
            "--etcd-ca",
            &ca,
            "--etcd-cert",
            &cert,
            "--etcd-key",
            &key,
        ],
        true,
    );
    assert_eq!(good.code, Some(0), "{}{}", good.stdout, good.stderr);
    for setting in ["etcd_ca", "etcd_cert", "etcd_key", "node-key.pem"] {
        assert!(good.stdout.contains(setting), "{setting}: {}", good.stdout);
    }
    assert!(!good.stdout.contains("PRIVATE KEY"), "{}", good.stdout);

    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (
            vec!["--etcd-endpoints", https, "--etcd-ca", &missing],
            vec!["missing.pem", "--etcd-ca"],
        ),
        (
            vec!["--etcd-endpoints", https, "--etcd-ca", &key],
            vec!["no PEM certificate", "--etcd-ca"],
        ),
        (
            vec![
                "--etcd-endpoints",
                https,
                "--etcd-cert",
                &cert,
                "--etcd-key",
                &other_key,
            ],
            vec!["--etcd-key", "cannot be used with the certificate"],
        ),
        (
            vec!["--etcd-endpoints", https, "--etcd-cert", &cert],
            vec!["--etcd-key is needed"],
        ),
        (
            vec!["--etcd-endpoints", "https://127.0.0.1:1,http://127.0.0.1:2"],
            vec!["--etcd-endpoints", "mixes http:// and https://"],
        ),
        (
            vec!["--etcd-endpoints", "http://127.0.0.1:1", "--etcd-ca", &ca],
            vec!["--etcd-ca", "https://"],
        ),
    ];
    for (flags, expected) in cases {
        for check in [true, false] {
            let out = daemon_with(dir, &flags, check);
            assert_eq!(
                out.code,
                Some(2),
                "accepted {flags:?}: {}{}",
                out.stdout,
                out.stderr
            );
            for needle in &expected {
                assert!(out.stderr.contains(needle), "{flags:?}: {}", out.stderr);
            }
            assert!(!out.stderr.contains("syncer is ready"), "{}", out.stderr);
        }
    }
}

/// A client of `endpoint` over TLS with `tls`, with short timeouts.
async fn tls_client(endpoint: &str, tls: &EtcdTls) -> Option<etcd_client::Client> {
    let options = etcd_client::ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(Duration::from_secs(2))
        .with_tls(tls.options());
    etcd_client::Client::connect([endpoint], Some(options))
        .await
        .ok()
}

/// The value of `key` read over TLS with `tls`; `None` when it is missing or unreadable.
async fn read_key(endpoint: &str, tls: &EtcdTls, key: &str) -> Option<String> {
    let mut client = tls_client(endpoint, tls).await?;
    let reply = client.get(key, None).await.ok()?;
    let value = reply.kvs().first()?.value().to_vec();
    String::from_utf8(value).ok()
}

/// A solo cluster-mode daemon on the TLS etcd at `endpoint`, with the client files `ca`,
/// `cert` and `key`; the data directory in `dir`.
fn cluster_daemon(
    dir: &Path,
    registry: &str,
    endpoint: &str,
    [ca, cert, key]: [&Path; 3],
) -> support::Daemon {
    let text = |p: &Path| p.display().to_string();
    let mut cmd = support::syncer(dir);
    cmd.args([
        "daemon",
        "--mode",
        "cluster",
        "--node",
        "solo",
        "--cluster-name",
        "dc1",
        "--cluster-size",
        "1",
        "--bind-addr",
        "127.0.0.1:0",
        "--rpc-addr",
        "127.0.0.1:0",
        "--admin-addr",
        "none",
        "--leader-lease",
        "3s",
        "--log-format",
        "json",
    ])
    .args(["--sc-addr", registry])
    .args(["--data-dir", &text(&dir.join("data"))])
    .args(["--etcd-endpoints", endpoint])
    .args(["--etcd-ca", &text(ca)])
    .args(["--etcd-cert", &text(cert)])
    .args(["--etcd-key", &text(key)]);
    support::Daemon::spawn(cmd)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// A cluster-mode daemon with `--etcd-endpoints https://...` and a client certificate opens
/// its store and campaigns through the TLS etcd: it holds the leader key.
#[test]
fn a_cluster_member_elects_itself_through_an_etcd_over_tls() {
    let pki = Pki::new();
    let server = pki.server();
    let rt = runtime();
    let registry =
        support::sync::Registry::start(&rt, std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    let files = [pki.ca(), pki.cert(), pki.key()];
    let files = [files[0].as_path(), files[1].as_path(), files[2].as_path()];
    let mut daemon = cluster_daemon(pki.dir.path(), &registry.url(), &server.endpoint(), files);
    daemon.wait_ready();
    let tls = pki.client(&pki.ca(), true);
    let endpoint = server.endpoint();
    rt.block_on(support::until("the daemon to hold the leader key", || {
        let (endpoint, tls) = (endpoint.clone(), tls.clone());
        async move {
            read_key(&endpoint, &tls, "/syncer/v2/dc1/leader")
                .await
                .as_deref()
                == Some("solo")
        }
    }));
    daemon.signal("TERM");
    let status = daemon.wait_exit();
    assert!(status.success(), "{status}");
}

/// The lease of the leader key as `(id, seconds left)`, read over TLS with `tls`.
async fn leader_lease(endpoint: &str, tls: &EtcdTls) -> Option<(i64, i64)> {
    let mut client = tls_client(endpoint, tls).await?;
    let reply = client.get("/syncer/v2/dc1/leader", None).await.ok()?;
    let lease = reply.kvs().first()?.lease();
    let ttl = client.lease_time_to_live(lease, None).await.ok()?.ttl();
    Some((lease, ttl))
}

/// The etcd client certificate of a running cluster member renewed and SIGHUP sent: the
/// member rebuilds its etcd client, and once etcd trusts only the new CA (refusing the old
/// certificate) it still renews its leader lease through the new one, without losing its
/// term.
#[test]
fn a_renewed_etcd_client_certificate_is_reloaded_on_sighup() {
    let renewal = Renewal::new();
    let mut server = renewal.server();
    let rt = runtime();
    let registry =
        support::sync::Registry::start(&rt, std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    let files = [
        renewal.path("ca.pem"),
        renewal.path("cert.pem"),
        renewal.path("key.pem"),
    ];
    let files = [files[0].as_path(), files[1].as_path(), files[2].as_path()];
    let mut daemon = cluster_daemon(
        renewal.client.path(),
        &registry.url(),
        &server.endpoint(),
        files,
    );
    daemon.wait_ready();
    daemon.wait_for_line("elected: this member is now active");

    renewal.install(&renewal.new);
    daemon.signal("HUP");
    daemon.wait_for_line("etcd client rebuilt with the reloaded TLS files");
    server.restart_trusting(&renewal.new.ca());

    // The leader lease (3 s) still held two leases after the restart was renewed through the
    // new certificate, since etcd now refuses the old one; a new lease was granted through
    // it, should the term have ended while etcd was down on a loaded machine.
    let restarted = std::time::Instant::now();
    let (endpoint, tls) = (
        server.endpoint(),
        renewal.new.client(&renewal.old.ca(), true),
    );
    let (lease, _) = rt
        .block_on(leader_lease(&endpoint, &tls))
        .expect("the leader key and its lease");
    rt.block_on(support::until(
        "the leader lease to outlive two leases",
        || {
            let (endpoint, tls) = (endpoint.clone(), tls.clone());
            async move {
                match leader_lease(&endpoint, &tls).await {
                    Some((id, _)) if id != lease => true,
                    Some((_, ttl)) => ttl > 0 && restarted.elapsed() > Duration::from_secs(6),
                    None => false,
                }
            }
        },
    ));
    daemon.signal("TERM");
    let status = daemon.wait_exit();
    assert!(status.success(), "{status}");
}

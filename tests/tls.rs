//! TLS and mutual TLS between syncers, with real processes: certificates from `syncer
//! dev-certs`, data centres syncing over mTLS, peers whose certificate this syncer does not
//! trust (or that speak plain text) refused so that nothing of theirs reaches the registry,
//! `syncer members` with and without a client certificate, and bad TLS files refused at start;
//! the minimum version and cipher suites (rustls probes), encrypted keys, verify-peer, and
//! the reload of certificates without restart (SIGHUP, a Kubernetes-style secret volume).
//! Harness: `tests/support/sync.rs`.

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use support::certs::{Certs, HOSTS, check_ready_rpc_tls, sync_both_ways};
use support::sync::{DcSetup, NewInstance, SYNC_DEADLINE, World, metric_sum};
use support::{run, syncer};

fn setup(flags: Vec<String>) -> DcSetup {
    DcSetup {
        flags,
        ..DcSetup::default()
    }
}

/// `syncer members` against `rpc` with `flags`: its exit code, stdout and stderr.
fn members(dir: &Path, rpc: &str, flags: &[String]) -> support::Outcome {
    let mut cmd = syncer(dir);
    cmd.args([
        "members",
        "--format",
        "json",
        "--timeout",
        "3s",
        "--rpc-addr",
        rpc,
    ])
    .args(flags);
    run(cmd)
}

#[test]
fn two_data_centres_sync_over_mutual_tls() {
    let certs_dir = tempfile::tempdir().expect("tempdir");
    let certs = Certs::make(certs_dir.path(), "pki");
    let mut w = World::start_each(
        vec![setup(certs.flags(true)), setup(certs.flags(true))],
        &[],
    );
    sync_both_ways(&mut w);
    // The ready line says how the rpc link is protected.
    check_ready_rpc_tls(&mut w, 2, "mutual");

    // `syncer members` with the client certificate lists the pool.
    let rpc = w.node(0).rpc.clone();
    let dir = w.dir.path().to_owned();
    let with_cert = [
        "--tls-cert".to_owned(),
        certs.cert.display().to_string(),
        "--tls-key".to_owned(),
        certs.key.display().to_string(),
        "--tls-ca".to_owned(),
        certs.ca.display().to_string(),
    ];
    let asked = members(&dir, &rpc, &with_cert);
    w.check(asked.code == Some(0), || {
        format!("members with the certificate: {}", asked.stderr)
    });
    let listed: serde_json::Value = serde_json::from_str(&asked.stdout).expect("members JSON");
    w.check(listed.as_array().is_some_and(|m| m.len() == 2), || {
        format!("members should list both syncers: {}", asked.stdout)
    });
    // Each announces in its gossip metadata that it speaks TLS.
    w.check(
        listed
            .as_array()
            .is_some_and(|m| m.iter().all(|m| m["tls"] == serde_json::json!(true))),
        || format!("every member should announce TLS: {}", asked.stdout),
    );

    // Without a client certificate (TLS, server verified), in plain text, and with a
    // certificate of another CA: refused.
    let ca_only = ["--tls-ca".to_owned(), certs.ca.display().to_string()];
    let refused = members(&dir, &rpc, &ca_only);
    w.check(refused.code == Some(1), || {
        format!(
            "members without a client certificate was answered: {}",
            refused.stdout
        )
    });
    let plain = members(&dir, &rpc, &[]);
    w.check(plain.code == Some(1), || {
        format!("members in plain text was answered: {}", plain.stdout)
    });
    let other = Certs::make(certs_dir.path(), "other");
    let foreign = [
        "--tls-cert".to_owned(),
        other.cert.display().to_string(),
        "--tls-key".to_owned(),
        other.key.display().to_string(),
        "--tls-ca".to_owned(),
        certs.ca.display().to_string(),
    ];
    let refused = members(&dir, &rpc, &foreign);
    w.check(refused.code == Some(1), || {
        format!(
            "members with another CA's certificate was answered: {}",
            refused.stdout
        )
    });

    // `syncer status` with the certificate asks both members over TLS; without, refused.
    let status = |flags: &[String]| {
        let mut cmd = syncer(&dir);
        cmd.args([
            "status",
            "--format",
            "json",
            "--timeout",
            "3s",
            "--rpc-addr",
            &rpc,
        ])
        .args(flags);
        run(cmd)
    };
    let asked = status(&with_cert);
    let report: serde_json::Value = serde_json::from_str(&asked.stdout).unwrap_or_default();
    w.check(
        asked.code == Some(0) && report["members"].as_array().is_some_and(|m| m.len() == 2),
        || format!("status over TLS: {}{}", asked.stdout, asked.stderr),
    );
    let plain = status(&[]);
    w.check(plain.code == Some(1), || {
        format!("status in plain text was answered: {}", plain.stdout)
    });
}

/// dc1 runs mutual TLS with CA A. dc2's certificate comes from CA B, dc3 speaks plain text,
/// dc4 is a trusted peer (CA A). dc4's instance reaches dc1 (the pool works); dc2's and
/// dc3's never do, and dc1 holds no copy of theirs by then or after dc4's has crossed twice
/// more.
#[test]
fn untrusted_and_plain_text_peers_reach_nothing() {
    let certs_dir = tempfile::tempdir().expect("tempdir");
    let a = Certs::make(certs_dir.path(), "a");
    let b = Certs::make(certs_dir.path(), "b");
    let mut w = World::start_each(
        vec![
            setup(a.flags(true)),
            setup(b.flags(true)),
            setup(Vec::new()),
            setup(a.flags(true)),
        ],
        &[],
    );
    for (i, host) in [(1, "from-dc2"), (2, "from-dc3"), (3, "from-dc4")] {
        let sid = w.reg(i).create_service("shop", host, "1.0.0");
        w.reg(i)
            .register(&sid, &NewInstance::new(host, "rest://10.9.0.1:8080"));
    }
    let hosts_in_dc1 =
        |w: &World| -> Vec<String> { w.reg(0).copies().into_iter().map(|c| c.host_name).collect() };
    w.wait_until("dc4's instance in dc1", SYNC_DEADLINE, |w| {
        hosts_in_dc1(w).contains(&"from-dc4".to_owned())
    });
    // Further changes of the trusted peer cross after any earlier attempt of the others.
    let sid = w.reg(3).create_service("shop", "later", "1.0.0");
    for n in 0..2 {
        let host = format!("later-{n}");
        w.reg(3)
            .register(&sid, &NewInstance::new(&host, "rest://10.9.0.2:8080"));
        w.wait_until("a later instance of dc4 in dc1", SYNC_DEADLINE, |w| {
            hosts_in_dc1(w).contains(&host)
        });
    }
    let hosts = hosts_in_dc1(&w);
    w.check(
        !hosts.iter().any(|h| h == "from-dc2" || h == "from-dc3"),
        || format!("dc1 holds copies from an untrusted or plain-text peer: {hosts:?}"),
    );
    // dc1's instances never reach dc2 (which does not trust dc1) or dc3 (plain text) either.
    let sid = w.reg(0).create_service("shop", "from-dc1", "1.0.0");
    w.reg(0)
        .register(&sid, &NewInstance::new("from-dc1", "rest://10.9.0.3:8080"));
    w.wait_until("dc1's instance in dc4", SYNC_DEADLINE, |w| {
        w.reg(3).copies().iter().any(|c| c.host_name == "from-dc1")
    });
    for i in [1, 2] {
        let copies = w.reg(i).copies();
        w.check(
            !copies
                .iter()
                .any(|c| c.host_name == "from-dc1" || c.host_name.starts_with("later")),
            || format!("dc{} got copies over an untrusted link: {copies:?}", i + 1),
        );
    }
}

/// A CA kept in memory, to sign node certificates for [`HOSTS`] with chosen dates and
/// serial numbers.
struct TestCa {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
    dir: PathBuf,
}

impl TestCa {
    /// A new CA whose certificate is written to `dir/ca.pem`.
    fn new(dir: &Path) -> TestCa {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let issuer =
            CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key")).expect("CA");
        std::fs::write(dir.join("ca.pem"), issuer.pem()).expect("write CA");
        TestCa {
            issuer,
            dir: dir.to_owned(),
        }
    }

    /// A node certificate and key with serial number `serial`: PEM texts.
    fn sign(&self, serial: u64, expired: bool) -> (String, String) {
        use rcgen::{CertificateParams, ExtendedKeyUsagePurpose, KeyPair, SerialNumber};
        let hosts: Vec<String> = HOSTS.split(',').map(str::to_owned).collect();
        let mut params = CertificateParams::new(hosts).expect("node params");
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.serial_number = Some(SerialNumber::from(serial));
        if expired {
            params.not_before = rcgen::date_time_ymd(2019, 1, 1);
            params.not_after = rcgen::date_time_ymd(2020, 1, 1);
        }
        let key = KeyPair::generate().expect("node key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        (cert.pem(), key.serialize_pem())
    }

    /// [`TestCa::sign`] written to `dir/name.pem` and `dir/name-key.pem`.
    fn issue(&self, name: &str, serial: u64, expired: bool) -> Certs {
        let (cert, key) = self.sign(serial, expired);
        let (cert_path, key_path) = (
            self.dir.join(format!("{name}.pem")),
            self.dir.join(format!("{name}-key.pem")),
        );
        std::fs::write(&cert_path, cert).expect("write cert");
        std::fs::write(&key_path, key).expect("write key");
        Certs {
            cert: cert_path,
            key: key_path,
            ca: self.dir.join("ca.pem"),
        }
    }
}

/// A CA and two node certificates it signed for [`HOSTS`], written into `dir`: one valid,
/// one that expired in 2020.
fn valid_and_expired(dir: &Path) -> (Certs, Certs) {
    let ca = TestCa::new(dir);
    (ca.issue("valid", 1, false), ca.issue("expired", 2, true))
}

/// dc2's certificate is signed by the right CA but expired: nothing of dc2 reaches dc1, while
/// dc3 (valid) syncs with dc1 both before and after.
#[test]
fn a_peer_with_an_expired_certificate_reaches_nothing() {
    let certs_dir = tempfile::tempdir().expect("tempdir");
    let (valid, expired) = valid_and_expired(certs_dir.path());
    let mut w = World::start_each(
        vec![
            setup(valid.flags(true)),
            setup(expired.flags(true)),
            setup(valid.flags(true)),
        ],
        &[],
    );
    for (i, host) in [(1, "from-dc2"), (2, "from-dc3")] {
        let sid = w.reg(i).create_service("shop", host, "1.0.0");
        w.reg(i)
            .register(&sid, &NewInstance::new(host, "rest://10.9.0.1:8080"));
    }
    let hosts_in = |w: &World, i: usize| -> Vec<String> {
        w.reg(i).copies().into_iter().map(|c| c.host_name).collect()
    };
    w.wait_until("dc3's instance in dc1", SYNC_DEADLINE, |w| {
        hosts_in(w, 0).contains(&"from-dc3".to_owned())
    });
    let sid = w.reg(0).create_service("shop", "from-dc1", "1.0.0");
    w.reg(0)
        .register(&sid, &NewInstance::new("from-dc1", "rest://10.9.0.3:8080"));
    w.wait_until("dc1's instance in dc3", SYNC_DEADLINE, |w| {
        hosts_in(w, 2).contains(&"from-dc1".to_owned())
    });
    let in_dc1 = hosts_in(&w, 0);
    w.check(!in_dc1.iter().any(|h| h == "from-dc2"), || {
        format!("dc1 holds a copy from the peer with an expired certificate: {in_dc1:?}")
    });
    let in_dc2 = hosts_in(&w, 1);
    w.check(!in_dc2.iter().any(|h| h == "from-dc1"), || {
        format!("the peer with an expired certificate got dc1's instance: {in_dc2:?}")
    });
}

/// Bad TLS files stop the daemon at start, naming the file, before anything binds.
#[test]
fn bad_tls_files_stop_the_daemon_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = Certs::make(dir.path(), "a");
    let b = Certs::make(dir.path(), "b");
    let missing = dir.path().join("missing.pem");
    let cases: Vec<(Vec<&Path>, &str)> = vec![
        (vec![&missing, &a.key, &a.ca], "missing.pem"),
        (
            vec![&a.cert, &b.key, &a.ca],
            "cannot be used with certificate",
        ),
        (vec![&a.cert, &a.key, &a.key], "holds no PEM certificate"),
    ];
    for (files, expected) in cases {
        let mut cmd = syncer(dir.path());
        cmd.args([
            "daemon",
            "--check",
            "--bind-addr",
            "127.0.0.1:0",
            "--rpc-addr",
            "127.0.0.1:0",
        ])
        .arg("--tls-cert")
        .arg(files[0])
        .arg("--tls-key")
        .arg(files[1])
        .arg("--tls-ca")
        .arg(files[2]);
        let out = run(cmd);
        assert_ne!(out.code, Some(0), "accepted {files:?}: {}", out.stdout);
        assert!(out.stderr.contains(expected), "{files:?}: {}", out.stderr);
    }
}

/// What one TLS handshake with a syncer's rpc port showed.
struct Probed {
    version: rustls::ProtocolVersion,
    suite: rustls::CipherSuite,
    /// The certificate the syncer served.
    cert: CertificateDer<'static>,
}

/// A rustls client of `versions` that trusts `trust`'s CA and presents `certs`' pair.
fn client_config(
    trust: &Certs,
    certs: &Certs,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> rustls::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&trust.ca).expect("read the CA") {
        roots.add(cert.expect("a CA certificate")).expect("a root");
    }
    let chain: Vec<_> = CertificateDer::pem_file_iter(&certs.cert)
        .expect("read the certificate")
        .map(|c| c.expect("a certificate"))
        .collect();
    let key = PrivateKeyDer::from_pem_file(&certs.key).expect("read the key");
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .expect("versions")
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .expect("client certificate");
    config.alpn_protocols = vec![b"h2".to_vec()];
    config
}

/// A TLS handshake with the rpc port `rpc` (`ip:port`) as `config`'s client.
fn probe(w: &World, rpc: &str, config: rustls::ClientConfig) -> Result<Probed, String> {
    w.rt.block_on(async {
        let tcp = tokio::net::TcpStream::connect(rpc)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let host = rpc.rsplit_once(':').map_or(rpc, |(host, _)| host);
        let name = ServerName::try_from(host.to_owned()).map_err(|e| e.to_string())?;
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tls = tokio::time::timeout(Duration::from_secs(5), connector.connect(name, tcp))
            .await
            .map_err(|_| "the handshake timed out".to_owned())?
            .map_err(|e| format!("handshake: {e}"))?;
        let (_, conn) = tls.get_ref();
        Ok(Probed {
            version: conn.protocol_version().ok_or("no version")?,
            suite: conn.negotiated_cipher_suite().ok_or("no suite")?.suite(),
            cert: conn
                .peer_certificates()
                .and_then(|c| c.first())
                .ok_or("no certificate")?
                .clone()
                .into_owned(),
        })
    })
}

/// One DER element of `data`: its tag, its contents and what follows it.
fn der(data: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = data.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        let (bytes, rest) = (rest.get(..n)?, rest.get(n..)?);
        (
            bytes.iter().fold(0, |acc, b| (acc << 8) | usize::from(*b)),
            rest,
        )
    };
    Some((tag, rest.get(..len)?, rest.get(len..)?))
}

/// The serial number of an X.509 certificate (Certificate → tbsCertificate → [0] version,
/// then the serial INTEGER).
fn serial(cert: &CertificateDer<'_>) -> Option<u64> {
    let (_, certificate, _) = der(cert.as_ref())?;
    let (_, tbs, _) = der(certificate)?;
    let (tag, contents, rest) = der(tbs)?;
    let (tag, contents) = if tag == 0xa0 {
        let (tag, contents, _) = der(rest)?;
        (tag, contents)
    } else {
        (tag, contents)
    };
    (tag == 0x02 && contents.len() <= 9).then(|| {
        contents
            .iter()
            .fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
    })
}

fn first_cert(path: &Path) -> CertificateDer<'static> {
    CertificateDer::from_pem_file(path).expect("read a certificate")
}

const BOTH: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];
const ONLY_12: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS12];

/// Registers `host` in data centre `from` and waits for its copy in data centre `to` within
/// the usual bound.
fn crosses(w: &mut World, sid: &str, from: usize, to: usize, host: &str) {
    w.reg(from)
        .register(sid, &NewInstance::new(host, "rest://10.7.0.1:8080"));
    w.wait_until(
        &format!("{host} from dc{} in dc{}", from + 1, to + 1),
        SYNC_DEADLINE,
        |w| w.reg(to).copies().iter().any(|c| c.host_name == host),
    );
}

/// Failed transfers (pushes and pulls that failed, timed out or came back malformed).
fn failed_transfers(w: &World, i: usize) -> f64 {
    let text = w.metrics(i);
    ["error", "timeout", "malformed", "incomplete"]
        .iter()
        .map(|outcome| {
            metric_sum(
                &text,
                "syncer_sync_transfers_total",
                &[&format!("outcome=\"{outcome}\"")],
            )
        })
        .sum()
}

/// `--tls-min-version 1.3` refuses a client limited to TLS 1.2 (counted as a failed
/// handshake), and `--tls-ciphers` with one suite is the suite negotiated; two data centres
/// with these settings sync, and silent connections do not hold the handshakes up.
#[test]
fn min_version_and_cipher_suites_are_what_the_rpc_port_speaks() {
    let certs_dir = tempfile::tempdir().expect("tempdir");
    let certs = Certs::make(certs_dir.path(), "pki");
    let mut dc1 = certs.flags(true);
    dc1.extend(
        [
            "--tls-min-version",
            "1.3",
            "--tls-ciphers",
            "TLS_CHACHA20_POLY1305_SHA256",
        ]
        .map(str::to_owned),
    );
    let mut dc2 = certs.flags(true);
    dc2.extend(["--tls-min-version", "TLSv1.3"].map(str::to_owned));
    let mut w = World::start_each(vec![setup(dc1), setup(dc2)], &[]);
    let sid = w.reg(0).create_service("shop", "orders", "1.0.0");
    crosses(&mut w, &sid, 0, 1, "orders-1");
    let sid = w.reg(1).create_service("shop", "billing", "1.0.0");
    crosses(&mut w, &sid, 1, 0, "billing-1");

    let rpc = w.node(0).rpc.clone();
    // Callers that connect and say nothing hold no one up: handshakes run side by side.
    let silent: Vec<_> = (0..3)
        .map(|_| std::net::TcpStream::connect(&rpc).expect("connect"))
        .collect();
    let refused = probe(&w, &rpc, client_config(&certs, &certs, ONLY_12));
    w.check(refused.is_err(), || {
        "a TLS 1.2-only client finished a handshake with --tls-min-version 1.3".to_owned()
    });
    w.wait_until("the failed handshake counted", SYNC_DEADLINE, |w| {
        metric_sum(
            &w.metrics(0),
            "syncer_rpc_tls_handshake_failures_total",
            &[],
        ) >= 1.0
    });
    let probed = probe(&w, &rpc, client_config(&certs, &certs, BOTH));
    match probed {
        Ok(p) => {
            w.check(p.version == rustls::ProtocolVersion::TLSv1_3, || {
                format!("negotiated {:?}", p.version)
            });
            w.check(
                p.suite == rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
                || format!("negotiated {:?}", p.suite),
            );
        }
        Err(e) => w.fail(&format!("a TLS 1.3 client was refused: {e}")),
    }
    drop(silent);
}

/// A bad TLS setting stops `--check` with a message naming it: an unknown cipher suite, a
/// list leaving nothing for the minimum version, an unknown version.
#[test]
fn bad_tls_settings_stop_the_daemon_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = Certs::make(dir.path(), "a");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--tls-ciphers", "TLS_FAST_AND_SAFE"],
            "'TLS_FAST_AND_SAFE' is not a TLS cipher suite name",
        ),
        (
            vec![
                "--tls-min-version",
                "1.3",
                "--tls-ciphers",
                "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
            ],
            "no usable cipher suite is left for TLS 1.3",
        ),
        (vec!["--tls-min-version", "1.1"], "--tls-min-version"),
        (
            vec!["--sc-tls-ciphers", "TLS_RSA_WITH_AES_128_CBC_SHA"],
            "--sc-tls-ciphers",
        ),
    ];
    for (flags, expected) in cases {
        let mut cmd = syncer(dir.path());
        cmd.args([
            "daemon",
            "--check",
            "--bind-addr",
            "127.0.0.1:0",
            "--rpc-addr",
            "127.0.0.1:0",
        ])
        .args(a.flags(true))
        .args(&flags);
        let out = run(cmd);
        assert_ne!(out.code, Some(0), "accepted {flags:?}: {}", out.stdout);
        assert!(out.stderr.contains(expected), "{flags:?}: {}", out.stderr);
    }
    // The original's sample list: its RSA-key-exchange suite is skipped with a warning.
    let mut cmd = syncer(dir.path());
    cmd.args(["daemon", "--check", "--bind-addr", "127.0.0.1:0"])
        .args(["--rpc-addr", "127.0.0.1:0"])
        .args(a.flags(true))
        .args([
            "--tls-ciphers",
            "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,TLS_RSA_WITH_AES_256_GCM_SHA384",
        ]);
    let out = run(cmd);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(
        all.contains("skipped cipher suites TLS_RSA_WITH_AES_256_GCM_SHA384"),
        "{all}"
    );
}

/// An encrypted key with its passphrase in SYNCER_TLS_KEY_PASSPHRASE: two data centres sync
/// and `syncer members` works with it. A wrong passphrase stops the daemon (and `--check`)
/// at start, naming the file and never showing the passphrase.
#[test]
fn an_encrypted_key_works_with_its_passphrase_only() {
    const PASSPHRASE: &str = "correct horse battery staple";
    let certs_dir = tempfile::tempdir().expect("tempdir");
    let mut certs = Certs::make(certs_dir.path(), "pki");
    let plain = std::fs::read_to_string(&certs.key).expect("read the key");
    let encrypted = certs_dir.path().join("pki/node-key.enc.pem");
    std::fs::write(
        &encrypted,
        syncer::tls::pem::encrypt_private_key(&plain, PASSPHRASE).expect("encrypt"),
    )
    .expect("write the encrypted key");
    certs.key = encrypted.clone();
    let env = vec![(
        "SYNCER_TLS_KEY_PASSPHRASE".to_owned(),
        PASSPHRASE.to_owned(),
    )];
    let with_env = |flags| DcSetup {
        flags,
        env: env.clone(),
        ..DcSetup::default()
    };
    let mut w = World::start_each(
        vec![with_env(certs.flags(true)), with_env(certs.flags(true))],
        &[],
    );
    let sid = w.reg(0).create_service("shop", "orders", "1.0.0");
    crosses(&mut w, &sid, 0, 1, "orders-1");

    let dir = w.dir.path().to_owned();
    let rpc = w.node(0).rpc.clone();
    let mut cmd = syncer(&dir);
    cmd.args([
        "members",
        "--format",
        "json",
        "--timeout",
        "3s",
        "--rpc-addr",
        &rpc,
    ])
    .args(certs.flags(true))
    .env("SYNCER_TLS_KEY_PASSPHRASE", PASSPHRASE);
    let asked = run(cmd);
    w.check(asked.code == Some(0), || {
        format!("members with the encrypted key: {}", asked.stderr)
    });

    for check in [true, false] {
        let mut cmd = syncer(&dir);
        cmd.arg("daemon");
        if check {
            cmd.arg("--check");
        }
        cmd.args(["--bind-addr", "127.0.0.1:0", "--rpc-addr", "127.0.0.1:0"])
            .args(["--admin-addr", "127.0.0.1:0"])
            .args(["--sc-addr", &w.reg(0).url()])
            .arg("--data-dir")
            .arg(dir.join("wrong"))
            .args(certs.flags(true))
            .env("SYNCER_TLS_KEY_PASSPHRASE", "incorrect horse");
        let out = run(cmd);
        w.check(out.code != Some(0), || {
            format!(
                "started with a wrong passphrase (check {check}): {}",
                out.stdout
            )
        });
        w.check(
            out.stderr.contains("wrong passphrase") && out.stderr.contains("node-key.enc.pem"),
            || format!("check {check}: {}", out.stderr),
        );
        w.check(
            !out.stderr.contains("incorrect horse") && !out.stdout.contains("incorrect horse"),
            || format!("the passphrase is shown: {}", out.stderr),
        );
    }
}

/// `--tls-verify-peer=false` with `--tls-ca`: a caller without a certificate is served, and
/// the servers this syncer calls are still verified: dc2, whose certificate comes from
/// another CA, neither reaches dc1 nor gets anything from it, while dc3 syncs with dc1.
#[test]
fn without_verify_peer_callers_need_no_certificate_but_servers_are_verified() {
    let certs_dir = tempfile::tempdir().expect("tempdir");
    let a = Certs::make(certs_dir.path(), "a");
    let b = Certs::make(certs_dir.path(), "b");
    let unverified = |certs: &Certs| {
        let mut flags = certs.flags(true);
        flags.push("--tls-verify-peer=false".to_owned());
        setup(flags)
    };
    let mut w = World::start_each(vec![unverified(&a), unverified(&b), unverified(&a)], &[]);
    let sid2 = w.reg(1).create_service("shop", "from-dc2", "1.0.0");
    w.reg(1)
        .register(&sid2, &NewInstance::new("from-dc2", "rest://10.9.0.1:8080"));
    let sid3 = w.reg(2).create_service("shop", "from-dc3", "1.0.0");
    crosses(&mut w, &sid3, 2, 0, "from-dc3");
    crosses(&mut w, &sid3, 2, 0, "from-dc3-later");
    let sid1 = w.reg(0).create_service("shop", "from-dc1", "1.0.0");
    crosses(&mut w, &sid1, 0, 2, "from-dc1");
    let in_dc1 = w.reg(0).copies();
    w.check(!in_dc1.iter().any(|c| c.host_name == "from-dc2"), || {
        format!("dc1 holds a copy from a server of another CA: {in_dc1:?}")
    });
    let in_dc2 = w.reg(1).copies();
    w.check(in_dc2.is_empty(), || {
        format!("dc2 (another CA) got copies: {in_dc2:?}")
    });

    let dir = w.dir.path().to_owned();
    let rpc = w.node(0).rpc.clone();
    let ca_only = ["--tls-ca".to_owned(), a.ca.display().to_string()];
    let asked = members(&dir, &rpc, &ca_only);
    w.check(asked.code == Some(0), || {
        format!("members without a client certificate: {}", asked.stderr)
    });
    // The server is still verified by the caller: another CA's client refuses dc1.
    let other_ca = ["--tls-ca".to_owned(), b.ca.display().to_string()];
    let refused = members(&dir, &rpc, &other_ca);
    w.check(refused.code == Some(1), || {
        format!(
            "members trusting another CA was answered: {}",
            refused.stdout
        )
    });
}

/// Kubernetes' layout of a secret volume: the files are symbolic links into `..data`, itself
/// a link to the current version's directory, swapped in one rename.
struct SecretVolume {
    dir: PathBuf,
    version: u32,
}

impl SecretVolume {
    fn new(dir: &Path, cert: &str, key: &str) -> SecretVolume {
        std::fs::create_dir_all(dir).expect("volume dir");
        let mut volume = SecretVolume {
            dir: dir.to_owned(),
            version: 0,
        };
        volume.swap(cert, key);
        for name in ["tls.crt", "tls.key"] {
            std::os::unix::fs::symlink(format!("..data/{name}"), dir.join(name))
                .expect("file link");
        }
        volume
    }

    /// Puts a new version in place atomically.
    fn swap(&mut self, cert: &str, key: &str) {
        self.version += 1;
        let version = format!("..v{}", self.version);
        let data = self.dir.join(&version);
        std::fs::create_dir_all(&data).expect("version dir");
        std::fs::write(data.join("tls.crt"), cert).expect("cert");
        std::fs::write(data.join("tls.key"), key).expect("key");
        let next = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&version, &next).expect("data link");
        std::fs::rename(&next, self.dir.join("..data")).expect("swap");
    }

    fn certs(&self, ca: &Path) -> Certs {
        Certs {
            cert: self.dir.join("tls.crt"),
            key: self.dir.join("tls.key"),
            ca: ca.to_owned(),
        }
    }
}

/// Two data centres over mutual TLS under continuous registrations. dc1's certificate and
/// key are replaced (same CA, another serial) and SIGHUP sent; dc2's secret volume swaps its
/// version without a signal. Each new connection sees the new certificate (its serial read
/// from a rustls probe's handshake), no registration
/// is lost or late, and no transfer fails. Then dc1 gets a key of another certificate and
/// SIGHUP: refused, counted, and the previous certificate stays in use.
#[test]
fn certificates_reload_without_restart() {
    let certs_dir = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new(certs_dir.path());
    let dc1 = ca.issue("dc1", 1, false);
    let (cert2, key2) = ca.sign(2, false);
    let mut volume = SecretVolume::new(&certs_dir.path().join("dc2-secret"), &cert2, &key2);
    let dc2 = volume.certs(&dc1.ca);
    let mut w = World::start_each(vec![setup(dc1.flags(true)), setup(dc2.flags(true))], &[]);
    let sid1 = w.reg(0).create_service("shop", "orders", "1.0.0");
    let sid2 = w.reg(1).create_service("shop", "billing", "1.0.0");
    let mut n = 0;
    let mut traffic = |w: &mut World, rounds: usize| {
        for _ in 0..rounds {
            n += 1;
            crosses(w, &sid1, 0, 1, &format!("orders-{n}"));
            crosses(w, &sid2, 1, 0, &format!("billing-{n}"));
        }
    };
    traffic(&mut w, 2);
    // Failures before the reloads (a pull while the other engine was still starting) are
    // not theirs.
    let failed_before = [failed_transfers(&w, 0), failed_transfers(&w, 1)];
    let (rpc1, rpc2) = (w.node(0).rpc.clone(), w.node(1).rpc.clone());
    // The probe's own client certificate, from the same CA.
    let prober = ca.issue("probe", 99, false);
    let served =
        |w: &World, rpc: &str| probe(w, rpc, client_config(&prober, &prober, BOTH)).map(|p| p.cert);
    let reloads = |w: &World, i: usize, result: &str| {
        metric_sum(
            &w.metrics(i),
            "syncer_tls_reloads_total",
            &[&format!("result=\"{result}\"")],
        )
    };
    let before = served(&w, &rpc1).expect("a probe of dc1");
    assert_eq!(before, first_cert(&dc1.cert));
    assert_eq!(serial(&before), Some(1));

    // dc1: new files, then SIGHUP.
    let (cert, key) = ca.sign(11, false);
    let replace = |path: &Path, text: &str| {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text).expect("write");
        std::fs::rename(&tmp, path).expect("rename");
    };
    // Registrations in flight while the files change and the signal arrives.
    let in_flight = ["around-1", "around-2", "around-3"];
    w.reg(0).register(
        &sid1,
        &NewInstance::new(in_flight[0], "rest://10.7.0.2:8080"),
    );
    replace(&dc1.key, &key);
    replace(&dc1.cert, &cert);
    w.reg(0).register(
        &sid1,
        &NewInstance::new(in_flight[1], "rest://10.7.0.2:8080"),
    );
    w.node(0).daemon.signal("HUP");
    w.reg(0).register(
        &sid1,
        &NewInstance::new(in_flight[2], "rest://10.7.0.2:8080"),
    );
    w.wait_until("dc1's reload", SYNC_DEADLINE, |w| {
        reloads(w, 0, "ok") >= 1.0
    });
    w.wait_until(
        "the registrations around the reload in dc2",
        SYNC_DEADLINE,
        |w| {
            let copies = w.reg(1).copies();
            in_flight
                .iter()
                .all(|host| copies.iter().any(|c| c.host_name == *host))
        },
    );
    traffic(&mut w, 2);
    let new1 = first_cert(&dc1.cert);
    let now = served(&w, &rpc1);
    w.check(
        now.as_ref().ok() == Some(&new1) && now.as_ref().ok().and_then(serial) == Some(11),
        || {
            format!(
                "dc1 serves the old certificate after SIGHUP: {:?}",
                now.as_ref().map(serial)
            )
        },
    );

    // dc2: its secret volume swaps to a new version; no signal.
    let (cert, key) = ca.sign(12, false);
    volume.swap(&cert, &key);
    let new2 = first_cert(&dc2.cert);
    traffic(&mut w, 1);
    w.wait_until("dc2's reload on the file change", SYNC_DEADLINE, |w| {
        reloads(w, 1, "ok") >= 1.0
    });
    let now = served(&w, &rpc2);
    w.check(
        now.as_ref().ok() == Some(&new2) && now.as_ref().ok().and_then(serial) == Some(12),
        || {
            format!(
                "dc2 serves the old certificate after the swap: {:?}",
                now.as_ref().map(serial)
            )
        },
    );
    traffic(&mut w, 2);

    // dc1: a key of another certificate. Refused; the certificate in force stays.
    let (_, other_key) = ca.sign(13, false);
    replace(&dc1.key, &other_key);
    w.node(0).daemon.signal("HUP");
    w.wait_until("dc1's refused reload", SYNC_DEADLINE, |w| {
        reloads(w, 0, "error") >= 1.0
    });
    let now = served(&w, &rpc1);
    w.check(
        now.as_ref().ok() == Some(&new1) && now.as_ref().ok().and_then(serial) == Some(11),
        || {
            format!(
                "dc1 lost its certificate after a bad reload: {:?}",
                now.as_ref().map(serial)
            )
        },
    );
    if let Some(node) = w.dcs[0].node.as_mut() {
        node.daemon.drain();
    }
    let logged =
        w.node(0).daemon.seen.iter().any(|l| {
            l.contains("TLS files refused") && l.contains("cannot be used with certificate")
        });
    w.check(logged, || "dc1 did not log the refused files".to_owned());
    traffic(&mut w, 2);

    for (i, before) in failed_before.into_iter().enumerate() {
        let failed = failed_transfers(&w, i) - before;
        w.check(failed == 0.0, || {
            format!(
                "dc{} counted {failed} failed transfers across the reloads",
                i + 1
            )
        });
    }
    w.check(
        reloads(&w, 0, "ok") == 1.0 && reloads(&w, 1, "error") == 0.0,
        || "unexpected reload counts".to_owned(),
    );
}

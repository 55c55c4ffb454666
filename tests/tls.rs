//! TLS and mutual TLS between syncers, with real processes: certificates from `syncer
//! dev-certs`, data centres syncing over mTLS, peers whose certificate this syncer does not
//! trust (or that speak plain text) refused so that nothing of theirs reaches the registry,
//! `syncer members` with and without a client certificate, and bad TLS files refused at start.
//! Harness: `tests/support/sync.rs`.

mod support;

use std::path::{Path, PathBuf};

use support::sync::{DcSetup, NewInstance, SYNC_DEADLINE, World};
use support::{run, syncer};

/// The hosts every test certificate is valid for: the data centres' loopback addresses.
const HOSTS: &str = "127.0.0.1,127.0.0.2,127.0.0.3,127.0.0.4,localhost";

/// The files of one `syncer dev-certs` run.
struct Certs {
    cert: PathBuf,
    key: PathBuf,
    ca: PathBuf,
}

impl Certs {
    /// Runs `syncer dev-certs --out dir/name`.
    fn make(dir: &Path, name: &str) -> Certs {
        let out = dir.join(name);
        let mut cmd = syncer(dir);
        cmd.arg("dev-certs")
            .arg("--out")
            .arg(&out)
            .args(["--hosts", HOSTS]);
        let made = run(cmd);
        assert_eq!(made.code, Some(0), "dev-certs failed: {}", made.stderr);
        Certs {
            cert: out.join("node.pem"),
            key: out.join("node-key.pem"),
            ca: out.join("ca.pem"),
        }
    }

    /// The daemon flags serving and calling with these files; the CA only if `mutual`.
    fn flags(&self, mutual: bool) -> Vec<String> {
        let mut flags = vec![
            "--tls-cert".to_owned(),
            self.cert.display().to_string(),
            "--tls-key".to_owned(),
            self.key.display().to_string(),
        ];
        if mutual {
            flags.push("--tls-ca".to_owned());
            flags.push(self.ca.display().to_string());
        }
        flags
    }
}

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
    // Both ways.
    let sid1 = w.reg(0).create_service("shop", "orders", "1.0.0");
    w.reg(0).register(
        &sid1,
        &NewInstance::new("orders-host", "rest://10.1.0.1:8080"),
    );
    let sid2 = w.reg(1).create_service("shop", "billing", "1.0.0");
    w.reg(1).register(
        &sid2,
        &NewInstance::new("billing-host", "rest://10.2.0.1:8080"),
    );
    w.wait_until(
        "each instance copied to the other data centre",
        SYNC_DEADLINE,
        |w| {
            let in_dc2 = w.reg(1).copies();
            let in_dc1 = w.reg(0).copies();
            in_dc2.len() == 1
                && in_dc2[0].host_name == "orders-host"
                && in_dc1.len() == 1
                && in_dc1[0].host_name == "billing-host"
        },
    );

    // The ready line says how the rpc link is protected.
    for i in 0..2 {
        let said = w
            .node(i)
            .daemon
            .seen
            .iter()
            .any(|l| l.contains("syncer is ready") && l.contains(r#""rpc_tls":"mutual""#));
        w.check(said, || {
            format!("dc{}'s ready line does not say rpc_tls mutual", i + 1)
        });
    }

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

/// A CA and two node certificates it signed for [`HOSTS`], written into `dir`: one valid,
/// one that expired in 2020.
fn valid_and_expired(dir: &Path) -> (Certs, Certs) {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa,
        KeyPair,
    };
    let hosts: Vec<String> = HOSTS.split(',').map(str::to_owned).collect();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca =
        CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("CA key")).expect("CA");
    std::fs::write(dir.join("ca.pem"), ca.pem()).expect("write CA");
    let node = |name: &str, expired: bool| {
        let mut params = CertificateParams::new(hosts.clone()).expect("node params");
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        if expired {
            params.not_before = rcgen::date_time_ymd(2019, 1, 1);
            params.not_after = rcgen::date_time_ymd(2020, 1, 1);
        }
        let key = KeyPair::generate().expect("node key");
        let cert = params.signed_by(&key, &ca).expect("sign");
        let (cert_path, key_path) = (
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}-key.pem")),
        );
        std::fs::write(&cert_path, cert.pem()).expect("write cert");
        std::fs::write(&key_path, key.serialize_pem()).expect("write key");
        Certs {
            cert: cert_path,
            key: key_path,
            ca: dir.join("ca.pem"),
        }
    };
    (node("valid", false), node("expired", true))
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

//! Certificates for TLS tests, made by `syncer dev-certs`.

use std::path::{Path, PathBuf};

use super::sync::{NewInstance, SYNC_DEADLINE, World};
use super::{run, syncer};

/// The hosts every test certificate is valid for: the data centres' loopback addresses.
pub const HOSTS: &str = "127.0.0.1,127.0.0.2,127.0.0.3,127.0.0.4,localhost";

/// The files of one `syncer dev-certs` run.
pub struct Certs {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

impl Certs {
    /// Runs `syncer dev-certs --out dir/name --hosts HOSTS`.
    pub fn make(dir: &Path, name: &str) -> Certs {
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
    pub fn flags(&self, mutual: bool) -> Vec<String> {
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

/// Registers an instance in dc1 and one in dc2 and waits until each is copied to the other
/// data centre: the two data centres sync both ways.
pub fn sync_both_ways(w: &mut World) {
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
}

/// Checks that the ready line of the first `n` data centres' syncers says `"rpc_tls":"mode"`.
pub fn check_ready_rpc_tls(w: &mut World, n: usize, mode: &str) {
    let needle = format!(r#""rpc_tls":"{mode}""#);
    for i in 0..n {
        let said = w
            .node(i)
            .daemon
            .seen
            .iter()
            .any(|l| l.contains("syncer is ready") && l.contains(&needle));
        w.check(said, || {
            format!("dc{}'s ready line does not say rpc_tls {mode}", i + 1)
        });
    }
}

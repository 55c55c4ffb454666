//! Certificates for TLS tests, made by `syncer dev-certs`.

use std::path::{Path, PathBuf};

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

//! `syncer dev-certs`: a throw-away certificate authority and one node certificate signed by
//! it, as PEM files, for local trials and tests of TLS between syncers.
//!
//! The node certificate carries both the server and the client usage, so the same pair
//! serves the rpc listener and authenticates this syncer when it calls others (mutual TLS).
//! These are development certificates: the CA key is written next to them and nothing here
//! is meant for production.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// Exit status when the files cannot be made.
const EXIT_FAILED: u8 = 1;

/// The CA certificate (give it to `--tls-ca`).
pub const CA_CERT: &str = "ca.pem";
/// The CA's private key (keep it to sign more certificates by other means).
pub const CA_KEY: &str = "ca-key.pem";
/// The node certificate (give it to `--tls-cert`).
pub const NODE_CERT: &str = "node.pem";
/// The node's private key (give it to `--tls-key`).
pub const NODE_KEY: &str = "node-key.pem";

/// Flags of `syncer dev-certs`.
#[derive(Debug, Args)]
pub struct DevCertsArgs {
    /// Directory to write ca.pem, ca-key.pem, node.pem and node-key.pem into (created if
    /// missing; existing files are not overwritten).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,

    /// Host names and IP addresses the node certificate is valid for, comma-separated.
    #[arg(
        long,
        value_name = "HOST,...",
        value_delimiter = ',',
        default_value = "127.0.0.1,localhost"
    )]
    pub hosts: Vec<String>,
}

/// Why the certificates could not be made.
#[derive(Debug, thiserror::Error)]
pub enum DevCertsError {
    #[error("--hosts names no host")]
    NoHosts,
    #[error("cannot make the certificates: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{path}: already exists; choose another --out or remove it")]
    Exists { path: PathBuf },
    #[error("{path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The four PEM texts `syncer dev-certs` writes.
#[derive(Debug, Clone)]
pub struct DevCerts {
    pub ca_cert: String,
    pub ca_key: String,
    pub node_cert: String,
    pub node_key: String,
}

/// A new CA and a node certificate for `hosts` (IP addresses become IP subject names, the
/// rest DNS names) signed by it.
///
/// # Errors
/// [`DevCertsError::NoHosts`], or [`DevCertsError::Generate`] when a host name is not valid.
pub fn generate(hosts: &[String]) -> Result<DevCerts, DevCertsError> {
    let hosts: Vec<String> = hosts
        .iter()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .collect();
    if hosts.is_empty() {
        return Err(DevCertsError::NoHosts);
    }
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "syncer development CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate()?;
    let ca_key_pem = ca_key.serialize_pem();
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key)?;

    let mut node_params = CertificateParams::new(hosts)?;
    node_params
        .distinguished_name
        .push(DnType::CommonName, "syncer node");
    node_params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    node_params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let node_key = KeyPair::generate()?;
    let node_cert = node_params.signed_by(&node_key, &ca)?;
    Ok(DevCerts {
        ca_cert: ca.pem(),
        ca_key: ca_key_pem,
        node_cert: node_cert.pem(),
        node_key: node_key.serialize_pem(),
    })
}

/// Writes `certs` into `dir`, keys readable by the owner only; refuses to overwrite.
///
/// # Errors
/// [`DevCertsError::Exists`] or [`DevCertsError::Write`].
pub fn write(dir: &Path, certs: &DevCerts) -> Result<(), DevCertsError> {
    fs::create_dir_all(dir).map_err(|source| DevCertsError::Write {
        path: dir.to_owned(),
        source,
    })?;
    let files = [
        (CA_CERT, &certs.ca_cert, 0o644),
        (CA_KEY, &certs.ca_key, 0o600),
        (NODE_CERT, &certs.node_cert, 0o644),
        (NODE_KEY, &certs.node_key, 0o600),
    ];
    for (name, _, _) in &files {
        let path = dir.join(name);
        if path.exists() {
            return Err(DevCertsError::Exists { path });
        }
    }
    for (name, text, mode) in files {
        let path = dir.join(name);
        let written = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&path)
            .and_then(|mut file| file.write_all(text.as_bytes()));
        written.map_err(|source| DevCertsError::Write { path, source })?;
    }
    Ok(())
}

/// Runs `syncer dev-certs`.
pub fn run(args: &DevCertsArgs) -> ExitCode {
    let made = generate(&args.hosts).and_then(|certs| write(&args.out, &certs));
    match made {
        Ok(()) => {
            let dir = args.out.display();
            println!(
                "wrote {dir}/{CA_CERT}, {dir}/{CA_KEY}, {dir}/{NODE_CERT}, {dir}/{NODE_KEY}\n\
                 serve and call with: --tls-cert {dir}/{NODE_CERT} --tls-key {dir}/{NODE_KEY} \
                 --tls-ca {dir}/{CA_CERT}"
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("syncer: {e}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_four_pem_files_and_never_overwrites() {
        let dir = tempfile::tempdir().expect("tempdir");
        let certs = generate(&["127.0.0.1".into(), "localhost".into()]).expect("generate");
        write(dir.path(), &certs).expect("write");
        for name in [CA_CERT, NODE_CERT] {
            let text = fs::read_to_string(dir.path().join(name)).expect("read");
            assert!(text.starts_with("-----BEGIN CERTIFICATE-----"), "{name}");
        }
        for name in [CA_KEY, NODE_KEY] {
            let text = fs::read_to_string(dir.path().join(name)).expect("read");
            assert!(text.contains("PRIVATE KEY-----"), "{name}");
        }
        let again = write(dir.path(), &certs);
        assert!(
            matches!(again, Err(DevCertsError::Exists { .. })),
            "{again:?}"
        );
    }

    #[test]
    fn refuses_an_empty_host_list() {
        assert!(matches!(
            generate(&[" ".into()]),
            Err(DevCertsError::NoHosts)
        ));
    }
}

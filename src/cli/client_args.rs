//! Flags shared by the operator's commands that call a syncer over its rpc address
//! (`members`, `status`, `mappings`, `diff`, `keyring`): the client side of TLS, the
//! output format, and the runtime and TLS a call needs.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use serde::Serialize;

use crate::rpc::tls::{ClientTls, TLS_KEY_PASSPHRASE_ENV};

/// Exit status when the call cannot even be prepared (or the member asked cannot be asked).
pub const EXIT_UNREACHABLE: u8 = 1;

/// Output format of the operator's commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
}

/// `--tls-cert`, `--tls-key`, `--tls-ca`: how a command reaches a syncer that speaks TLS.
#[derive(Debug, Args)]
pub struct TlsArgs {
    /// Client certificate (PEM) for a syncer that verifies its callers (mutual TLS).
    #[arg(
        long,
        value_name = "FILE",
        env = "SYNCER_TLS_CERT",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,

    /// Private key (PEM) of --tls-cert; an encrypted one is opened with the passphrase in
    /// SYNCER_TLS_KEY_PASSPHRASE.
    #[arg(
        long,
        value_name = "FILE",
        env = "SYNCER_TLS_KEY",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,

    /// CA certificate (PEM) the syncer's certificate is verified against. Any --tls-* flag
    /// makes the call over TLS; without --tls-ca the public web PKI roots verify it.
    #[arg(long, value_name = "FILE", env = "SYNCER_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
}

impl TlsArgs {
    /// The client TLS of the call (`None`: plain text); an error is printed already.
    pub fn load(&self) -> Result<Option<ClientTls>, ExitCode> {
        ClientTls::load(
            self.tls_cert.as_deref(),
            self.tls_key.as_deref(),
            self.tls_ca.as_deref(),
            std::env::var(TLS_KEY_PASSPHRASE_ENV).ok().as_deref(),
        )
        .map_err(|e| {
            eprintln!("syncer: {e}");
            ExitCode::from(EXIT_UNREACHABLE)
        })
    }
}

/// A current-thread runtime for one command; an error is printed already.
pub fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("syncer: cannot start the async runtime: {e}");
            ExitCode::from(EXIT_UNREACHABLE)
        })
}

/// Prints `value` as pretty JSON or as the text `table` makes of it; false (the error
/// printed) when it cannot be serialised.
pub fn show<T: Serialize>(format: Format, value: &T, table: impl FnOnce() -> String) -> bool {
    match format {
        Format::Json => match serde_json::to_string_pretty(value) {
            Ok(text) => println!("{text}"),
            Err(e) => {
                eprintln!("syncer: {e}");
                return false;
            }
        },
        Format::Table => print!("{}", table()),
    }
    true
}

//! The command line: `syncer daemon`, `syncer members`, `syncer demo`, `syncer dev-registry`,
//! `syncer dev-certs`, `syncer keygen`, `syncer keyring`, `syncer status`, `syncer mappings`,
//! `syncer diff`, `syncer version`. The flags the commands that call a syncer share are in
//! `client_args.rs`.
//!
//! Parsing only; each subcommand's work lives in its own module. The daemon's flags are
//! compatible with the original ServiceComb Syncer 1.3 (`--sc-addr`, `--bind-addr`, ...), and
//! the 1.4 spellings (`--registry`, `--join`, `--plugin`, `--cluster`, `--peer-addr`) are
//! accepted as aliases.

pub mod client_args;
pub mod daemon;
pub mod demo;
pub mod dev_certs;
pub mod dev_registry;
pub mod diff;
pub mod keygen;
pub mod keyring;
pub mod mappings;
pub mod members;
pub mod status;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub use daemon::DaemonArgs;
pub use demo::DemoArgs;
pub use dev_certs::DevCertsArgs;
pub use dev_registry::DevRegistryArgs;
pub use diff::DiffArgs;
pub use keyring::KeyringArgs;
pub use mappings::MappingsArgs;
pub use members::MembersArgs;
pub use status::StatusArgs;

/// syncer keeps microservice instances in sync between service registries in several data
/// centres.
#[derive(Debug, Parser)]
#[command(name = "syncer", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the syncer daemon next to one registry.
    Daemon(Box<DaemonArgs>),
    /// Run several data centres in one process and watch an instance being mirrored.
    ///
    /// Each data centre is an in-memory dev registry and a syncer on 127.0.0.1, all in one
    /// gossip pool. The demo registers an instance in dc1, reports when it appears in the
    /// others, prints curl lines to try, and runs until Ctrl-C.
    Demo(DemoArgs),
    /// Write a development CA and node certificate (PEM) for trying TLS between syncers.
    DevCerts(DevCertsArgs),
    /// Run an in-memory registry for development and tests: ServiceComb Service Center (the
    /// default) or Netflix Eureka (`--kind eureka`).
    DevRegistry(DevRegistryArgs),
    /// List the members of the gossip pool as one syncer sees them.
    Members(MembersArgs),
    /// Show each data centre's sync at a glance: per origin data centre, a row per importing
    /// data centre (cursor, changes behind, copies, last exchange, last error, held
    /// removals), and each member's role, registry, store and uptime. Exit status 2 when
    /// some member could not be asked (named on stderr).
    Status(StatusArgs),
    /// List the mapping entries of one data centre: origin instance, copy, and whether the
    /// copy is in the registry.
    Mappings(MappingsArgs),
    /// Audit the whole pool: missing, stale, duplicate and unmapped copies, copies of
    /// copies, and copies whose body drifted from their origin, found twice a settle time
    /// apart. Exit status 0 when consistent, 1 on drift, 2 when some data centre could not be
    /// asked.
    Diff(DiffArgs),
    /// Print a new random gossip key (base64 of 32 bytes) for `--gossip-key`.
    Keygen,
    /// Rotate the gossip key on the whole pool, one step per run: list, install KEY, use KEY,
    /// remove KEY. Names the members that did not confirm (exit status 2).
    Keyring(KeyringArgs),
    /// Print the version.
    Version,
}

/// Exit status of runtime failures (port in use, no runtime, ...).
const EXIT_RUNTIME: u8 = 1;

/// The multi-threaded tokio runtime every long-running subcommand uses; when it cannot be
/// built the error is printed and the exit status to return is given back.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("syncer: cannot start the async runtime: {e}");
            ExitCode::from(EXIT_RUNTIME)
        })
}

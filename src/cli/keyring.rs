//! `syncer keyring`: one step of a gossip key rotation on the whole pool, through one syncer's
//! rpc address.
//!
//! A rotation without downtime is three runs: `install NEW` (every member accepts both keys),
//! `use NEW` (every member seals with the new key), `remove OLD`. Each run must be confirmed
//! by every member before the next; a member that did not confirm is named and the exit status
//! is non-zero, so the operator repeats the step once it is back.
//!
//! Keys are shown as fingerprints (see [`crate::rpc::client::fingerprint`]), never as their
//! text: the terminal output ends up in tickets and shell histories.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};

use super::client_args::{EXIT_UNREACHABLE, TlsArgs, runtime};

use crate::rpc::client::{self, fingerprint};
use crate::rpc::proto::{KeyringMemberResult, KeyringRequest};

/// Exit status when some members did not confirm the step.
const EXIT_NOT_CONFIRMED: u8 = 2;

/// Flags of `syncer keyring`.
#[derive(Debug, Args)]
pub struct KeyringArgs {
    /// rpc address of any syncer of the pool (its --rpc-addr).
    #[arg(
        long,
        value_name = "HOST:PORT",
        env = "SYNCER_RPC_ADDR",
        default_value = "127.0.0.1:30191"
    )]
    pub rpc_addr: String,

    /// How long to wait for the answer of the whole pool.
    #[arg(long, value_name = "DURATION", default_value = "15s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,

    #[command(flatten)]
    pub tls: TlsArgs,

    #[command(subcommand)]
    pub op: KeyringCommand,
}

/// The rotation steps.
#[derive(Debug, Clone, Subcommand)]
pub enum KeyringCommand {
    /// Show each member's keys (fingerprints, the primary marked).
    List,
    /// Make every member accept KEY too.
    Install {
        /// The key (base64, from `syncer keygen`).
        key: String,
    },
    /// Make every member seal with KEY (installed everywhere first).
    Use {
        /// The key (base64).
        key: String,
    },
    /// Make every member stop accepting KEY (never the primary).
    Remove {
        /// The key (base64).
        key: String,
    },
}

impl KeyringCommand {
    fn request(&self) -> KeyringRequest {
        let (op, key) = match self {
            KeyringCommand::List => ("list", ""),
            KeyringCommand::Install { key } => ("install", key.as_str()),
            KeyringCommand::Use { key } => ("use", key.as_str()),
            KeyringCommand::Remove { key } => ("remove", key.as_str()),
        };
        KeyringRequest {
            op: op.to_owned(),
            key: key.trim().to_owned(),
            fan_out: true,
        }
    }
}

/// Runs `syncer keyring`.
pub fn run(args: &KeyringArgs) -> ExitCode {
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let tls = match args.tls.load() {
        Ok(tls) => tls,
        Err(code) => return code,
    };
    let request = args.op.request();
    let op = request.op.clone();
    let asked = client::keyring(&args.rpc_addr, args.timeout, tls.as_ref(), request);
    let reply = match runtime.block_on(asked) {
        Ok(reply) => reply,
        Err(e) => {
            eprintln!("syncer: keyring {op}: {e}");
            return ExitCode::from(EXIT_UNREACHABLE);
        }
    };
    print!("{}", report(&reply.members));
    let failed: Vec<&str> = reply
        .members
        .iter()
        .filter(|m| !m.ok)
        .map(|m| m.name.as_str())
        .collect();
    if failed.is_empty() {
        if let KeyringCommand::Install { key } | KeyringCommand::Use { key } = &args.op {
            println!(
                "keyring {op} {} confirmed by all {} members",
                fingerprint(key),
                reply.members.len()
            );
        }
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "syncer: keyring {op} not confirmed by {} of {} members: {}; repeat the step when they are back",
            failed.len(),
            reply.members.len(),
            failed.join(", ")
        );
        ExitCode::from(EXIT_NOT_CONFIRMED)
    }
}

/// One line per member: `name rpc_addr ok primary=.. keys=..` or `name rpc_addr FAILED: why`.
fn report(members: &[KeyringMemberResult]) -> String {
    let width = members.iter().map(|m| m.name.len()).max().unwrap_or(0);
    let addr_width = members.iter().map(|m| m.rpc_addr.len()).max().unwrap_or(0);
    let mut out = String::new();
    for m in members {
        let outcome = if m.ok {
            format!("ok primary={} keys={}", m.primary, m.installed.join(","))
        } else {
            format!("FAILED: {}", m.error)
        };
        out.push_str(&format!(
            "{:<width$}  {:<addr_width$}  {outcome}\n",
            m.name, m.rpc_addr
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_shows_fingerprints_and_failures() {
        let rows = [
            KeyringMemberResult {
                name: "a".into(),
                rpc_addr: "127.0.0.1:1".into(),
                ok: true,
                error: String::new(),
                primary: "p1".into(),
                installed: vec!["p1".into(), "k2".into()],
            },
            KeyringMemberResult {
                name: "bb".into(),
                rpc_addr: "127.0.0.1:2".into(),
                ok: false,
                error: "the key is not installed".into(),
                primary: String::new(),
                installed: vec![],
            },
        ];
        let text = report(&rows);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "a   127.0.0.1:1  ok primary=p1 keys=p1,k2");
        assert_eq!(
            lines[1],
            "bb  127.0.0.1:2  FAILED: the key is not installed"
        );
    }

    #[test]
    fn the_request_carries_the_trimmed_key_and_fans_out() {
        let request = KeyringCommand::Use {
            key: " abc \n".into(),
        }
        .request();
        assert_eq!(request.op, "use");
        assert_eq!(request.key, "abc");
        assert!(request.fan_out);
        assert_eq!(KeyringCommand::List.request().key, "");
    }
}

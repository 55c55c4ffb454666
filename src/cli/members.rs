//! `syncer members`: prints the gossip pool as one syncer sees it, over its rpc address.
//!
//! The JSON form is an array of objects with at least the keys `name`, `gossip_addr`,
//! `rpc_addr`, `cluster`, `role` and `status`; scripts depend on them.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use serde::Serialize;

pub use super::client_args::Format;
use super::client_args::{EXIT_UNREACHABLE, TlsArgs, runtime, show};

use crate::rpc::client;
use crate::rpc::proto::Member;

/// Flags of `syncer members`.
#[derive(Debug, Args)]
pub struct MembersArgs {
    /// rpc address of any syncer (its --rpc-addr).
    #[arg(
        long,
        value_name = "HOST:PORT",
        env = "SYNCER_RPC_ADDR",
        default_value = "127.0.0.1:30191"
    )]
    pub rpc_addr: String,

    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,

    /// How long to wait for the answer.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,

    #[command(flatten)]
    pub tls: TlsArgs,
}

#[derive(Debug, Serialize)]
struct Row<'a> {
    name: &'a str,
    gossip_addr: &'a str,
    rpc_addr: &'a str,
    cluster: &'a str,
    role: &'a str,
    status: &'a str,
    mode: &'a str,
    registry: &'a str,
    generation: u64,
    local: bool,
    conflict: bool,
    tls: bool,
}

impl<'a> From<&'a Member> for Row<'a> {
    fn from(m: &'a Member) -> Row<'a> {
        Row {
            name: &m.name,
            gossip_addr: &m.gossip_addr,
            rpc_addr: &m.rpc_addr,
            cluster: &m.cluster,
            role: &m.role,
            status: &m.status,
            mode: &m.mode,
            registry: &m.registry,
            generation: m.generation,
            local: m.local,
            conflict: m.conflict,
            tls: m.tls,
        }
    }
}

/// Runs `syncer members`.
pub fn run(args: &MembersArgs) -> ExitCode {
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let tls = match args.tls.load() {
        Ok(tls) => tls,
        Err(code) => return code,
    };
    let asked = client::members(&args.rpc_addr, args.timeout, tls.as_ref());
    let members = match runtime.block_on(asked) {
        Ok(members) => members,
        Err(e) => {
            eprintln!("syncer: {e}");
            return ExitCode::from(EXIT_UNREACHABLE);
        }
    };
    let rows: Vec<Row<'_>> = members.iter().map(Row::from).collect();
    if !show(args.format, &rows, || table(&rows)) {
        return ExitCode::from(EXIT_UNREACHABLE);
    }
    ExitCode::SUCCESS
}

fn table(rows: &[Row<'_>]) -> String {
    let header = [
        "NAME", "GOSSIP", "RPC", "CLUSTER", "ROLE", "STATUS", "REGISTRY",
    ];
    let cells: Vec<[String; 7]> = rows
        .iter()
        .map(|r| {
            let mut name = r.name.to_owned();
            if r.local {
                name.push('*');
            }
            let mut registry = if r.registry.is_empty() {
                "-".to_owned()
            } else {
                r.registry.to_owned()
            };
            if r.conflict {
                registry.push_str(" CONFLICT");
            }
            [
                name,
                r.gossip_addr.to_owned(),
                r.rpc_addr.to_owned(),
                r.cluster.to_owned(),
                r.role.to_owned(),
                r.status.to_owned(),
                registry,
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &cells {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    let mut line = |cols: &[&str]| {
        let parts: Vec<String> = cols
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(parts.join("  ").trim_end());
        out.push('\n');
    };
    line(&header);
    for row in &cells {
        line(&row.each_ref().map(String::as_str));
    }
    let conflicted: std::collections::BTreeSet<&str> = rows
        .iter()
        .filter(|r| r.conflict)
        .map(|r| r.cluster)
        .collect();
    if !conflicted.is_empty() {
        let names: Vec<&str> = conflicted.into_iter().collect();
        out.push_str(&format!(
            "CONFLICT: members claim one cluster name ({}) but serve different registries; no data centre imports it until the conflict ends. Give each data centre its own --cluster-name\n",
            names.join(", ")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_marks_local_and_conflicts() {
        let member = |name: &str, local: bool, conflict: bool| Member {
            name: name.into(),
            gossip_addr: "127.0.0.1:30190".into(),
            rpc_addr: "127.0.0.1:30191".into(),
            cluster: "dc1".into(),
            role: "active".into(),
            status: "alive".into(),
            mode: "single".into(),
            registry: "abcdefabcdef".into(),
            generation: 1,
            protocol_version: 1,
            local,
            conflict,
            tls: false,
        };
        let members = [member("a", true, false), member("bb", false, true)];
        let rows: Vec<Row<'_>> = members.iter().map(Row::from).collect();
        let text = table(&rows);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("NAME"));
        assert!(lines[1].starts_with("a*  "));
        assert!(lines[2].contains("abcdefabcdef CONFLICT"));
        assert!(lines[3].starts_with("CONFLICT:"));
    }
}

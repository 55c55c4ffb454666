//! `syncer mappings`: the mapping entries of one data centre (which copy stands for which
//! origin instance, and whether the copy is in the registry), from its active member.
//!
//! The member at `--rpc-addr` answers for its data centre; a standby has no importers, so
//! the command then asks its data centre's active member (from the member list). The JSON
//! form is an array of objects with the keys `origin`, `domain_project`,
//! `origin_service_id`, `origin_instance_id`, `copy_service_id`, `copy_instance_id`,
//! `state`, `generation` and `updated_ms`; scripts depend on them.

use std::process::ExitCode;

use clap::Args;
use serde::Serialize;

use super::client_args::show;
use super::status::{Connection, Format, align};
use crate::rpc::client::{self, ClientError};
use crate::rpc::ops;
use crate::rpc::proto::MappingRow;

/// Exit status when no member of the data centre can be asked.
const EXIT_UNREACHABLE: u8 = 1;

/// Flags of `syncer mappings`.
#[derive(Debug, Args)]
pub struct MappingsArgs {
    #[command(flatten)]
    pub connection: Connection,

    /// Only the copies of this origin data centre.
    #[arg(long, value_name = "DC")]
    pub origin: Option<String>,

    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
}

#[derive(Debug, Serialize)]
struct Row<'a> {
    origin: &'a str,
    domain_project: &'a str,
    origin_service_id: &'a str,
    origin_instance_id: &'a str,
    copy_service_id: &'a str,
    copy_instance_id: &'a str,
    state: &'a str,
    generation: u32,
    updated_ms: u64,
}

impl<'a> From<&'a MappingRow> for Row<'a> {
    fn from(r: &'a MappingRow) -> Row<'a> {
        Row {
            origin: &r.origin,
            domain_project: &r.domain_project,
            origin_service_id: &r.origin_service_id,
            origin_instance_id: &r.origin_instance_id,
            copy_service_id: &r.copy_service_id,
            copy_instance_id: &r.copy_instance_id,
            state: &r.state,
            generation: r.generation,
            updated_ms: r.updated_ms,
        }
    }
}

/// Runs `syncer mappings`.
pub fn run(args: &MappingsArgs) -> ExitCode {
    let (runtime, tls) = match args.connection.prepare() {
        Ok(prepared) => prepared,
        Err(code) => return code,
    };
    let conn = &args.connection;
    let origin = args.origin.as_deref().unwrap_or("").trim();
    let rows = runtime.block_on(async {
        let asked = ops::mappings(&conn.rpc_addr, conn.timeout, tls.as_ref(), origin).await;
        match asked {
            // A standby (or a member still starting) has no importers: its data centre's
            // active member answers.
            Err(ClientError::Call { status, .. }) if status.code() == tonic::Code::Unavailable => {
                let members = client::members(&conn.rpc_addr, conn.timeout, tls.as_ref()).await?;
                let local = members.iter().find(|m| m.local).map(|m| m.cluster.clone());
                let active = members.iter().find(|m| {
                    !m.local
                        && Some(&m.cluster) == local.as_ref()
                        && m.role == "active"
                        && m.status == "alive"
                });
                match active {
                    Some(active) => {
                        ops::mappings(&active.rpc_addr, conn.timeout, tls.as_ref(), origin).await
                    }
                    None => Err(ClientError::Call {
                        addr: conn.rpc_addr.clone(),
                        status,
                    }),
                }
            }
            other => other,
        }
    });
    let rows = match rows {
        Ok(rows) => rows,
        Err(e) => {
            eprintln!("syncer: {e}");
            return ExitCode::from(EXIT_UNREACHABLE);
        }
    };
    let rows: Vec<Row<'_>> = rows.iter().map(Row::from).collect();
    if !show(args.format, &rows, || table(&rows)) {
        return ExitCode::from(EXIT_UNREACHABLE);
    }
    ExitCode::SUCCESS
}

fn table(rows: &[Row<'_>]) -> String {
    let dash = |s: &str| {
        if s.is_empty() {
            "-".to_owned()
        } else {
            s.to_owned()
        }
    };
    let mut cells = vec![
        [
            "ORIGIN",
            "TENANT",
            "ORIGIN SERVICE",
            "ORIGIN INSTANCE",
            "COPY SERVICE",
            "COPY INSTANCE",
            "STATE",
        ]
        .map(str::to_owned),
    ];
    for r in rows {
        cells.push([
            r.origin.to_owned(),
            r.domain_project.to_owned(),
            dash(r.origin_service_id),
            dash(r.origin_instance_id),
            r.copy_service_id.to_owned(),
            r.copy_instance_id.to_owned(),
            r.state.to_owned(),
        ]);
    }
    let mut out = align(&cells);
    out.push_str(&format!("{} entries\n", rows.len()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_lists_every_entry_and_counts_them() {
        let row = |state: &str, origin_instance: &str| MappingRow {
            origin: "dc1".into(),
            domain_project: "default/default".into(),
            origin_service_id: if origin_instance.is_empty() {
                String::new()
            } else {
                "svc".into()
            },
            origin_instance_id: origin_instance.into(),
            copy_service_id: "svc-copy".into(),
            copy_instance_id: "syncer-abc".into(),
            state: state.into(),
            generation: 0,
            updated_ms: 1,
        };
        let rows = [row("present", "i1"), row("unmapped", "")];
        let rows: Vec<Row<'_>> = rows.iter().map(Row::from).collect();
        let text = table(&rows);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("ORIGIN  TENANT"), "{text}");
        assert!(lines[1].ends_with("syncer-abc     present"), "{text}");
        assert!(
            lines[2].contains("default/default  -               -"),
            "{text}"
        );
        assert_eq!(lines[3], "2 entries");
    }
}

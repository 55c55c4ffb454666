//! `syncer diff`: the consistency audit across the whole pool.
//!
//! It asks the member given by `--rpc-addr` for the pool, then the active member of every
//! data centre for its inventory (`Inventory`: the registry read in full, and the service
//! filter) and its mapping table (`Mappings`), audits them (`crate::audit`), waits
//! `--settle`, asks and audits again, and reports what both rounds found: a change in flight
//! is not drift. Exit status 0 when the pool is consistent, 1 when drift is found, 2 when some
//! data centre could not be asked (named on stderr; what was asked is still audited and
//! reported).

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use serde::Serialize;

use super::client_args::show;
use super::status::{Connection, Format, Unreachable, first_answer, name_unreachable, targets};
use crate::audit::{self, Finding, Inventory, Kind};
use crate::registry::Tenant;
use crate::rpc::ops;
use crate::rpc::proto::Member;
use crate::rpc::tls::ClientTls;
use crate::store::Mapping;

/// Exit status when drift is found.
const EXIT_DRIFT: u8 = 1;
/// Exit status when some data centre could not be asked (or the member given cannot be).
const EXIT_INCOMPLETE: u8 = 2;

/// Flags of `syncer diff`.
#[derive(Debug, Args)]
pub struct DiffArgs {
    #[command(flatten)]
    pub connection: Connection,

    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,

    /// Only findings about copies of this origin data centre.
    #[arg(long, value_name = "DC")]
    pub origin: Option<String>,

    /// Only findings about this service (`app/name` of the origin service).
    #[arg(long, value_name = "APP/NAME")]
    pub service: Option<String>,

    /// Time between the two rounds of the audit: only what both find is reported, so
    /// changes still in flight are not drift.
    #[arg(long, value_name = "DURATION", default_value = "3s", value_parser = humantime::parse_duration)]
    pub settle: Duration,
}

/// What `syncer diff` prints as JSON.
#[derive(Debug, Serialize)]
pub struct DiffReport {
    pub consistent: bool,
    /// The data centres audited.
    pub data_centres: Vec<String>,
    /// Findings by kind.
    pub counts: BTreeMap<&'static str, usize>,
    pub findings: Vec<Finding>,
    pub unreachable: Vec<Unreachable>,
}

/// Runs `syncer diff`.
pub fn run(args: &DiffArgs) -> ExitCode {
    let (runtime, tls) = match args.connection.prepare() {
        Ok(prepared) => prepared,
        Err(code) => return code,
    };
    let conn = &args.connection;
    let Some((asked, members)) = first_answer(&runtime, conn, tls.as_ref()) else {
        return ExitCode::from(EXIT_INCOMPLETE);
    };
    let (mut ask, mut unreachable) = targets(&members, &asked);
    // The member asked serves its own data centre when it is the active one.
    if asked.role == "active" && asked.idle.is_empty() {
        ask.push(Member {
            name: asked.name.clone(),
            cluster: asked.cluster.clone(),
            rpc_addr: conn.rpc_addr.clone(),
            ..Member::default()
        });
    }
    let round = |ask: &[Member]| runtime.block_on(gather(ask, conn.timeout, tls.as_ref()));
    let (pool, failed) = round(&ask);
    let earlier = audit::audit(&pool);
    let findings = if earlier.is_empty() {
        earlier
    } else {
        std::thread::sleep(args.settle);
        let (pool, _) = round(&ask);
        audit::persisting(&earlier, audit::audit(&pool))
    };
    unreachable.extend(failed);
    let findings: Vec<Finding> = findings
        .into_iter()
        .filter(|f| args.origin.as_ref().is_none_or(|o| &f.origin == o))
        .filter(|f| args.service.as_ref().is_none_or(|s| &f.service == s))
        .collect();
    let mut counts = BTreeMap::new();
    for kind in Kind::ALL {
        counts.insert(
            kind.name(),
            findings.iter().filter(|f| f.kind == kind).count(),
        );
    }
    let mut data_centres: Vec<String> = pool.iter().map(|i| i.name.clone()).collect();
    data_centres.sort();
    let report = DiffReport {
        consistent: findings.is_empty(),
        data_centres,
        counts,
        findings,
        unreachable,
    };
    if !show(args.format, &report, || table(&report)) {
        return ExitCode::from(EXIT_INCOMPLETE);
    }
    if !report.unreachable.is_empty() {
        let named = name_unreachable(&report.unreachable);
        eprintln!(
            "syncer: diff incomplete: {} not asked: {}",
            named.len(),
            named.join("; ")
        );
        return ExitCode::from(EXIT_INCOMPLETE);
    }
    if report.consistent {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_DRIFT)
    }
}

/// The inventory and mappings of every member in `ask`, at once; those that fail apart.
async fn gather(
    ask: &[Member],
    timeout: Duration,
    tls: Option<&ClientTls>,
) -> (Vec<Inventory>, Vec<Unreachable>) {
    let calls = ask.iter().map(|m| async move {
        let (inventory, mappings) = tokio::join!(
            ops::inventory(&m.rpc_addr, timeout, tls),
            ops::mappings(&m.rpc_addr, timeout, tls, "")
        );
        (m, inventory, mappings)
    });
    let mut pool = Vec::new();
    let mut failed = Vec::new();
    for (m, inventory, mappings) in futures::future::join_all(calls).await {
        match (inventory, mappings) {
            (Ok(inventory), Ok(rows)) => pool.push(to_inventory(inventory, rows)),
            (Err(e), _) | (_, Err(e)) => failed.push(Unreachable {
                name: m.name.clone(),
                cluster: m.cluster.clone(),
                rpc_addr: m.rpc_addr.clone(),
                error: e.to_string(),
            }),
        }
    }
    (pool, failed)
}

/// The audit's view of one data centre.
fn to_inventory(
    answer: ops::InventoryAnswer,
    rows: Vec<crate::rpc::proto::MappingRow>,
) -> Inventory {
    let mappings = rows
        .into_iter()
        .filter(|r| r.state != "unmapped")
        .map(|r| {
            let tenant = r
                .domain_project
                .split_once('/')
                .map_or_else(Tenant::default_tenant, |(d, p)| Tenant::new(d, p));
            Mapping {
                origin: r.origin,
                domain: tenant.domain,
                project: tenant.project,
                origin_service_id: r.origin_service_id,
                origin_instance_id: r.origin_instance_id,
                service_id: r.copy_service_id,
                instance_id: r.copy_instance_id,
                fingerprint: String::new(),
                generation: r.generation,
                updated_ms: r.updated_ms,
            }
        })
        .collect();
    let filter = answer.filter();
    Inventory::new(
        answer.cluster,
        answer.services,
        answer.instances,
        mappings,
        filter,
    )
}

/// The report as a table, findings grouped by data centre.
fn table(report: &DiffReport) -> String {
    let mut out = String::new();
    if report.findings.is_empty() {
        out.push_str(&format!(
            "consistent: {} data centres are exact mirrors of each other\n",
            report.data_centres.len()
        ));
    } else {
        let header = [
            "KIND",
            "ORIGIN",
            "DC",
            "SERVICE",
            "ORIGIN INSTANCE",
            "COPIES",
            "DETAIL",
        ];
        let rows: Vec<[String; 7]> = report
            .findings
            .iter()
            .map(|f| {
                [
                    f.kind.name().to_owned(),
                    f.origin.clone(),
                    f.dc.clone(),
                    f.service.clone(),
                    f.instance.clone().unwrap_or_else(|| "-".into()),
                    if f.copies.is_empty() {
                        "-".into()
                    } else {
                        f.copies.join(",")
                    },
                    if f.detail.is_empty() {
                        "-".into()
                    } else {
                        f.detail.clone()
                    },
                ]
            })
            .collect();
        let mut widths = header.map(str::len);
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |cells: Vec<&str>| {
            let mut text = String::new();
            for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
                if i + 1 == cells.len() {
                    text.push_str(cell);
                } else {
                    text.push_str(&format!("{cell:<w$}  "));
                }
            }
            text.trim_end().to_owned() + "\n"
        };
        out.push_str(&line(header.to_vec()));
        for row in &rows {
            out.push_str(&line(row.iter().map(String::as_str).collect()));
        }
        let counts: Vec<String> = report
            .counts
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(k, n)| format!("{n} {k}"))
            .collect();
        out.push_str(&format!(
            "\ndrift in {} data centres: {}\n",
            report.data_centres.len(),
            counts.join(", ")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_names_each_finding_and_counts_them() {
        let finding = Finding {
            kind: Kind::Drift,
            origin: "dc1".into(),
            dc: "dc2".into(),
            service: "shop/orders".into(),
            instance: Some("default/default/s1/i1".into()),
            copies: vec!["syncer-abc".into()],
            detail: "status: UP → DOWN".into(),
        };
        let mut counts = BTreeMap::new();
        counts.insert("drift", 1);
        counts.insert("missing", 0);
        let report = DiffReport {
            consistent: false,
            data_centres: vec!["dc1".into(), "dc2".into()],
            counts,
            findings: vec![finding],
            unreachable: Vec::new(),
        };
        let text = table(&report);
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].starts_with("KIND   ORIGIN  DC   SERVICE"),
            "{text}"
        );
        assert!(
            lines[1].contains("drift")
                && lines[1].contains("syncer-abc")
                && lines[1].ends_with("status: UP → DOWN"),
            "{text}"
        );
        assert!(text.contains("drift in 2 data centres: 1 drift"), "{text}");
        assert!(!text.contains("0 missing"), "{text}");
        let clean = DiffReport {
            consistent: true,
            data_centres: vec!["dc1".into(), "dc2".into()],
            counts: BTreeMap::new(),
            findings: Vec::new(),
            unreachable: Vec::new(),
        };
        assert_eq!(
            table(&clean),
            "consistent: 2 data centres are exact mirrors of each other\n"
        );
    }
}

//! `syncer status`: how every data centre's sync looks, from any member.
//!
//! Asks the member at `--rpc-addr` for its status and its member list, then the active
//! member of every other data centre (and of its own, when it is a standby), and prints one
//! table of the members and one of the imports: per origin data centre, a row per importing
//! data centre. A member that cannot be asked is named on stderr and in the output, and the
//! exit status is 2.
//!
//! The JSON form (`--format json`) is documented in docs/OPERATIONS.md; its field names
//! are stable: scripts depend on them.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use serde::Serialize;

pub use super::client_args::Format;
use super::client_args::{EXIT_UNREACHABLE, TlsArgs, runtime, show};

use crate::rpc::client;
use crate::rpc::ops;
use crate::rpc::proto::{ImportStatus, Member, Probe, StatusReply};
use crate::rpc::tls::ClientTls;

/// Exit status when some other member could not be asked.
const EXIT_PARTIAL: u8 = 2;

/// How the operator's commands reach a syncer: `--rpc-addr`, `--timeout`, `--tls-*`.
#[derive(Debug, Args)]
pub struct Connection {
    /// rpc address of any syncer of the pool (its --rpc-addr).
    #[arg(
        long,
        value_name = "HOST:PORT",
        env = "SYNCER_RPC_ADDR",
        default_value = "127.0.0.1:30191"
    )]
    pub rpc_addr: String,

    /// How long to wait for each member's answer.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,

    #[command(flatten)]
    pub tls: TlsArgs,
}

impl Connection {
    /// The runtime and TLS settings of a call; the error is printed already.
    pub(crate) fn prepare(&self) -> Result<(tokio::runtime::Runtime, Option<ClientTls>), ExitCode> {
        Ok((runtime()?, self.tls.load()?))
    }
}

/// Flags of `syncer status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub connection: Connection,

    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
}

/// A member that could not be asked.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Unreachable {
    pub name: String,
    pub cluster: String,
    pub rpc_addr: String,
    pub error: String,
}

/// The members to ask besides the first: the active member of every data centre (the
/// freshest claim when several members claim it; an alive one before one seen down or
/// gone). Data centres without an active member are returned apart.
pub(crate) fn targets(members: &[Member], asked: &StatusReply) -> (Vec<Member>, Vec<Unreachable>) {
    let mut by_cluster: BTreeMap<&str, Vec<&Member>> = BTreeMap::new();
    for m in members {
        by_cluster.entry(m.cluster.as_str()).or_default().push(m);
    }
    let mut ask = Vec::new();
    let mut missing = Vec::new();
    for (cluster, list) in by_cluster {
        let best = list.iter().filter(|m| m.role == "active").max_by_key(|m| {
            (
                matches!(m.status.as_str(), "alive" | "suspect"),
                m.generation,
            )
        });
        match best {
            Some(m) if m.name == asked.name || m.rpc_addr == asked.rpc_addr => {}
            Some(m) => ask.push((*m).clone()),
            None => missing.push(Unreachable {
                name: String::new(),
                cluster: cluster.to_owned(),
                rpc_addr: String::new(),
                error: "no active member in the pool".to_owned(),
            }),
        }
    }
    (ask, missing)
}

/// The status and the member list of the member `conn` names; `None` (the error printed)
/// when it cannot be asked.
pub(crate) fn first_answer(
    runtime: &tokio::runtime::Runtime,
    conn: &Connection,
    tls: Option<&ClientTls>,
) -> Option<(StatusReply, Vec<Member>)> {
    let first = runtime.block_on(async {
        tokio::join!(
            ops::status(&conn.rpc_addr, conn.timeout, tls),
            client::members(&conn.rpc_addr, conn.timeout, tls)
        )
    });
    match first {
        (Ok(asked), Ok(members)) => Some((asked, members)),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("syncer: {e}");
            None
        }
    }
}

/// The members that could not be asked, one phrase each, for stderr.
pub(crate) fn name_unreachable(list: &[Unreachable]) -> Vec<String> {
    list.iter()
        .map(|u| {
            if u.name.is_empty() {
                format!("{} ({})", u.cluster, u.error)
            } else {
                format!(
                    "{} of {} at {} ({})",
                    u.name, u.cluster, u.rpc_addr, u.error
                )
            }
        })
        .collect()
}

/// Runs `syncer status`.
pub fn run(args: &StatusArgs) -> ExitCode {
    let (runtime, tls) = match args.connection.prepare() {
        Ok(prepared) => prepared,
        Err(code) => return code,
    };
    let conn = &args.connection;
    let Some((asked, members)) = first_answer(&runtime, conn, tls.as_ref()) else {
        return ExitCode::from(EXIT_UNREACHABLE);
    };
    let (others, mut unreachable) = targets(&members, &asked);
    let calls = others
        .iter()
        .map(|m| ops::status(&m.rpc_addr, conn.timeout, tls.as_ref()));
    let answers = runtime.block_on(futures::future::join_all(calls));
    let mut replies = vec![asked];
    for (member, answer) in others.into_iter().zip(answers) {
        match answer {
            Ok(reply) => replies.push(reply),
            Err(e) => unreachable.push(Unreachable {
                name: member.name,
                cluster: member.cluster,
                rpc_addr: member.rpc_addr,
                error: e.to_string(),
            }),
        }
    }
    let report = Report::new(&conn.rpc_addr, &replies, unreachable);
    if !show(args.format, &report, || report.table()) {
        return ExitCode::from(EXIT_UNREACHABLE);
    }
    if report.unreachable.is_empty() {
        ExitCode::SUCCESS
    } else {
        let named = name_unreachable(&report.unreachable);
        eprintln!(
            "syncer: status incomplete: {} not answering: {}",
            named.len(),
            named.join("; ")
        );
        ExitCode::from(EXIT_PARTIAL)
    }
}

/// The JSON form of `syncer status` (documented in docs/OPERATIONS.md).
#[derive(Debug, Serialize)]
pub struct Report {
    /// The rpc address given.
    pub asked: String,
    pub members: Vec<MemberReport>,
    pub unreachable: Vec<Unreachable>,
}

#[derive(Debug, Serialize)]
pub struct MemberReport {
    pub name: String,
    pub cluster: String,
    pub rpc_addr: String,
    pub mode: String,
    pub version: String,
    pub role: String,
    /// `running`, or why the engine does not run.
    pub engine: String,
    pub uptime_seconds: u64,
    pub registry: RegistryReport,
    pub store: StoreReport,
    pub export: Option<ExportReport>,
    pub origins: Vec<OriginReport>,
}

/// The local registry: whether it answered the member's probe (`ok` is `null` when it
/// could not be asked).
#[derive(Debug, Serialize)]
pub struct RegistryReport {
    pub addresses: Vec<String>,
    pub ok: Option<bool>,
    pub error: Option<String>,
    pub checked_seconds_ago: Option<u64>,
}

/// The mapping store: its kind (`null` when not open on this member) and its last commit
/// (`ok` is `null` before the first).
#[derive(Debug, Serialize)]
pub struct StoreReport {
    pub kind: Option<String>,
    pub ok: Option<bool>,
    pub error: Option<String>,
    pub last_commit_seconds_ago: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct ExportReport {
    pub ready: bool,
    pub epoch: u64,
    pub seq: u64,
    pub instances: u64,
    pub services: u64,
}

#[derive(Debug, Serialize, Clone, Copy)]
pub struct RevisionReport {
    pub epoch: u64,
    pub seq: u64,
}

#[derive(Debug, Serialize)]
pub struct OriginReport {
    pub origin: String,
    /// The data centre importing it (the member's `cluster`).
    pub importer: String,
    pub active_member: Option<String>,
    pub active_rpc_addr: Option<String>,
    pub announced: Option<RevisionReport>,
    pub cursor: Option<RevisionReport>,
    pub complete: bool,
    /// Changes behind the announced revision; `null` while a snapshot is pending.
    pub behind: Option<u64>,
    pub snapshot_pending: bool,
    pub copies: u64,
    pub present: u64,
    pub desired: u64,
    pub last_exchange_seconds_ago: Option<u64>,
    pub last_error: Option<ErrorReport>,
    pub stale: bool,
    pub keeping_stale: bool,
    pub conflict: bool,
    pub held: HeldReport,
    pub failing_services: u64,
}

#[derive(Debug, Serialize)]
pub struct ErrorReport {
    pub text: String,
    pub seconds_ago: u64,
}

#[derive(Debug, Serialize, Default)]
pub struct HeldReport {
    pub cap: u64,
    pub awaiting_snapshot: u64,
    pub leader: u64,
    pub leader_seconds_left: u64,
}

fn ago(now_ms: u64, at_ms: u64) -> Option<u64> {
    (at_ms > 0).then(|| now_ms.saturating_sub(at_ms) / 1000)
}

/// A probe as `(ok, error, seconds ago)`; all `None` when it was not checked.
fn outcome(probe: Option<&Probe>, now_ms: u64) -> (Option<bool>, Option<String>, Option<u64>) {
    match probe.filter(|p| p.checked) {
        Some(p) => (
            Some(p.ok),
            (!p.ok).then(|| p.error.clone()),
            ago(now_ms, p.at_ms),
        ),
        None => (None, None, None),
    }
}

fn origin_report(importer: &str, o: &ImportStatus, now_ms: u64) -> OriginReport {
    let some = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    OriginReport {
        origin: o.origin.clone(),
        importer: importer.to_owned(),
        active_member: some(&o.active_member),
        active_rpc_addr: some(&o.active_rpc_addr),
        announced: o.announced.then_some(RevisionReport {
            epoch: o.announced_epoch,
            seq: o.announced_seq,
        }),
        cursor: o.has_cursor.then_some(RevisionReport {
            epoch: o.cursor_epoch,
            seq: o.cursor_seq,
        }),
        complete: o.complete,
        behind: (!o.snapshot_pending).then_some(o.behind),
        snapshot_pending: o.snapshot_pending,
        copies: o.copies,
        present: o.present,
        desired: o.desired,
        last_exchange_seconds_ago: ago(now_ms, o.last_exchange_ms),
        last_error: some(&o.last_error).map(|text| ErrorReport {
            text,
            seconds_ago: ago(now_ms, o.last_error_ms).unwrap_or(0),
        }),
        stale: o.stale,
        keeping_stale: o.keeping_stale,
        conflict: o.conflict,
        held: HeldReport {
            cap: o.held_cap,
            awaiting_snapshot: o.held_awaiting_snapshot,
            leader: o.held_leader,
            leader_seconds_left: o.held_leader_until_ms.saturating_sub(now_ms) / 1000,
        },
        failing_services: o.failing_services,
    }
}

impl MemberReport {
    fn new(r: &StatusReply) -> MemberReport {
        let now = r.now_ms;
        MemberReport {
            name: r.name.clone(),
            cluster: r.cluster.clone(),
            rpc_addr: r.rpc_addr.clone(),
            mode: r.mode.clone(),
            version: r.version.clone(),
            role: r.role.clone(),
            engine: if r.idle.is_empty() {
                "running".to_owned()
            } else {
                r.idle.clone()
            },
            uptime_seconds: now.saturating_sub(r.started_ms) / 1000,
            registry: {
                let (ok, error, checked_seconds_ago) = outcome(r.registry.as_ref(), now);
                RegistryReport {
                    addresses: r.registry_addresses.clone(),
                    ok,
                    error,
                    checked_seconds_ago,
                }
            },
            store: {
                let (ok, error, last_commit_seconds_ago) = outcome(r.store.as_ref(), now);
                StoreReport {
                    kind: (!r.store_kind.is_empty()).then(|| r.store_kind.clone()),
                    ok,
                    error,
                    last_commit_seconds_ago,
                }
            },
            export: r.export.as_ref().map(|e| ExportReport {
                ready: e.ready,
                epoch: e.epoch,
                seq: e.seq,
                instances: e.instances,
                services: e.services,
            }),
            origins: r
                .origins
                .iter()
                .map(|o| origin_report(&r.cluster, o, now))
                .collect(),
        }
    }
}

impl Report {
    pub fn new(asked: &str, replies: &[StatusReply], unreachable: Vec<Unreachable>) -> Report {
        let mut members: Vec<MemberReport> = replies.iter().map(MemberReport::new).collect();
        members.sort_by(|a, b| (&a.cluster, &a.name).cmp(&(&b.cluster, &b.name)));
        Report {
            asked: asked.to_owned(),
            members,
            unreachable,
        }
    }

    /// The two tables (members, then imports) and the members not answering.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let mut rows = vec![
            [
                "MEMBER",
                "DC",
                "ROLE",
                "ENGINE",
                "UPTIME",
                "REGISTRY",
                "STORE",
                "EXPORTED",
                "INSTANCES",
                "SERVICES",
            ]
            .map(str::to_owned),
        ];
        for m in &self.members {
            let (seq, instances, services) = match &m.export {
                Some(e) if e.ready => (
                    format!("seq {}", e.seq),
                    e.instances.to_string(),
                    e.services.to_string(),
                ),
                Some(_) => ("not ready".into(), "-".into(), "-".into()),
                None => ("-".into(), "-".into(), "-".into()),
            };
            let store = match &m.store.kind {
                Some(kind) => format!("{kind} {}", answers(m.store.ok)),
                None => "-".to_owned(),
            };
            rows.push([
                m.name.clone(),
                m.cluster.clone(),
                m.role.clone(),
                short(&m.engine),
                human(m.uptime_seconds),
                answers(m.registry.ok),
                store,
                seq,
                instances,
                services,
            ]);
        }
        for u in &self.unreachable {
            let mut row: [String; 10] = Default::default();
            row[0] = if u.name.is_empty() {
                "-".into()
            } else {
                u.name.clone()
            };
            row[1] = u.cluster.clone();
            row[2] = "-".into();
            row[3] = "NOT ANSWERING".into();
            rows.push(row);
        }
        out.push_str(&align(&rows));

        let mut imports: Vec<&OriginReport> =
            self.members.iter().flat_map(|m| &m.origins).collect();
        imports.sort_by(|a, b| (&a.origin, &a.importer).cmp(&(&b.origin, &b.importer)));
        out.push('\n');
        let mut rows = vec![
            [
                "ORIGIN",
                "IMPORTER",
                "ORIGIN ACTIVE",
                "ANNOUNCED",
                "CURSOR",
                "BEHIND",
                "COPIES",
                "LAST EXCHANGE",
                "HELD",
                "LAST ERROR",
            ]
            .map(str::to_owned),
        ];
        for o in imports {
            let active = match (&o.active_member, &o.active_rpc_addr) {
                (Some(name), Some(addr)) => format!("{name} {addr}"),
                (None, Some(addr)) => addr.clone(),
                _ => "none known".to_owned(),
            };
            let rev = |r: Option<RevisionReport>| r.map_or("-".to_owned(), |r| r.seq.to_string());
            let mut behind = match o.behind {
                Some(n) => n.to_string(),
                None => "snapshot pending".to_owned(),
            };
            if o.stale {
                behind.push_str(if o.keeping_stale {
                    " STALE (kept)"
                } else {
                    " STALE"
                });
            }
            if o.conflict {
                behind.push_str(" CONFLICT");
            }
            let last_exchange = o
                .last_exchange_seconds_ago
                .map_or("never".to_owned(), |s| format!("{} ago", human(s)));
            // An error older than the last exchange is history: its time only (the JSON
            // form keeps the text).
            let last_error = o.last_error.as_ref().map_or("-".to_owned(), |e| {
                let recovered = o
                    .last_exchange_seconds_ago
                    .is_some_and(|exchange| exchange < e.seconds_ago);
                if recovered {
                    format!("{} ago, recovered", human(e.seconds_ago))
                } else {
                    format!("{} ago: {}", human(e.seconds_ago), one_line(&e.text))
                }
            });
            rows.push([
                o.origin.clone(),
                o.importer.clone(),
                active,
                rev(o.announced),
                rev(o.cursor),
                behind,
                o.copies.to_string(),
                last_exchange,
                held(&o.held),
                last_error,
            ]);
        }
        out.push_str(&align(&rows));
        for u in &self.unreachable {
            if u.name.is_empty() {
                out.push_str(&format!("{}: {}\n", u.cluster, u.error));
            } else {
                out.push_str(&format!(
                    "{} of {} at {} is not answering: {}\n",
                    u.name, u.cluster, u.rpc_addr, u.error
                ));
            }
        }
        out
    }
}

fn answers(ok: Option<bool>) -> String {
    match ok {
        Some(true) => "ok".to_owned(),
        Some(false) => "FAILING".to_owned(),
        None => "-".to_owned(),
    }
}

fn held(h: &HeldReport) -> String {
    let mut parts = Vec::new();
    if h.cap > 0 {
        parts.push(format!("{} cap", h.cap));
    }
    if h.awaiting_snapshot > 0 {
        parts.push(format!("{} await snapshot", h.awaiting_snapshot));
    }
    if h.leader > 0 {
        parts.push(format!(
            "{} leader hold {}",
            h.leader,
            human(h.leader_seconds_left)
        ));
    }
    if parts.is_empty() {
        "-".to_owned()
    } else {
        parts.join(", ")
    }
}

/// The engine's state for the table: `running`, `standby`, `stopping`, or the reason's text
/// up to its first colon.
fn short(engine: &str) -> String {
    engine.split(':').next().unwrap_or(engine).trim().to_owned()
}

/// An error text on one line, at most 120 characters.
fn one_line(text: &str) -> String {
    let line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() > 120 {
        let cut: String = line.chars().take(117).collect();
        format!("{cut}...")
    } else {
        line
    }
}

/// A duration for people: `42s`, `3m12s`, `5h3m`, `2d4h`.
pub fn human(seconds: u64) -> String {
    let (d, h, m, s) = (
        seconds / 86_400,
        seconds / 3600 % 24,
        seconds / 60 % 60,
        seconds % 60,
    );
    if seconds < 60 {
        format!("{s}s")
    } else if seconds < 3600 {
        format!("{m}m{s}s")
    } else if seconds < 86_400 {
        format!("{h}h{m}m")
    } else {
        format!("{d}d{h}h")
    }
}

/// Rows of cells in columns two spaces apart, each as wide as its widest cell; trailing
/// blanks trimmed.
pub(crate) fn align<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let parts: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(parts.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpc::proto::ExportState;

    #[test]
    fn durations_read_like_people_write_them() {
        assert_eq!(human(0), "0s");
        assert_eq!(human(59), "59s");
        assert_eq!(human(60), "1m0s");
        assert_eq!(human(192), "3m12s");
        assert_eq!(human(3600 * 5 + 180 + 7), "5h3m");
        assert_eq!(human(86_400 * 2 + 3600 * 4 + 1), "2d4h");
    }

    #[test]
    fn the_table_names_the_engine_state_without_its_explanation() {
        assert_eq!(short("running"), "running");
        assert_eq!(
            short("standby: this member is not the active syncer of its data centre"),
            "standby"
        );
        assert_eq!(
            short("the sync engine is starting"),
            "the sync engine is starting"
        );
    }

    #[test]
    fn columns_align_on_the_widest_cell() {
        let rows = [
            ["A".to_owned(), "BB".to_owned(), String::new()],
            ["long".to_owned(), "x".to_owned(), String::new()],
        ];
        assert_eq!(align(&rows), "A     BB\nlong  x\n");
    }

    fn reply(cluster: &str, origins: Vec<ImportStatus>) -> StatusReply {
        StatusReply {
            name: format!("{cluster}-a"),
            cluster: cluster.into(),
            mode: "single".into(),
            version: "1.0.0".into(),
            role: "active".into(),
            idle: String::new(),
            now_ms: 1_000_000,
            started_ms: 1_000_000 - 125_000,
            registry_addresses: vec!["http://127.0.0.1:30100".into()],
            registry: Some(Probe {
                checked: true,
                ok: true,
                error: String::new(),
                at_ms: 1_000_000,
            }),
            store_kind: "redb".into(),
            store: Some(Probe {
                checked: true,
                ok: false,
                error: "disk full".into(),
                at_ms: 990_000,
            }),
            export: Some(ExportState {
                ready: true,
                epoch: 7,
                seq: 12,
                instances: 3,
                services: 2,
            }),
            origins,
            rpc_addr: "127.0.0.1:30191".into(),
        }
    }

    #[test]
    fn the_table_shows_each_origin_per_importer_with_lag_and_errors() {
        let import = |origin: &str, behind: u64, pending: bool, error: &str| ImportStatus {
            origin: origin.into(),
            active_member: format!("{origin}-a"),
            active_rpc_addr: "127.0.0.9:1".into(),
            announced: true,
            announced_epoch: 7,
            announced_seq: 12,
            has_cursor: !pending,
            cursor_epoch: 7,
            cursor_seq: 12 - behind,
            complete: !pending,
            behind,
            snapshot_pending: pending,
            copies: 3,
            last_error: error.into(),
            last_error_ms: if error.is_empty() { 0 } else { 940_000 },
            last_exchange_ms: if pending { 900_000 } else { 997_000 },
            held_awaiting_snapshot: u64::from(pending) * 2,
            ..ImportStatus::default()
        };
        let replies = [
            reply("dc2", vec![import("dc1", 0, false, "")]),
            reply(
                "dc3",
                vec![import(
                    "dc1",
                    0,
                    true,
                    "pull from 127.0.0.9:1: refused\nconnection",
                )],
            ),
            reply("dc5", vec![import("dc1", 0, false, "an old failure")]),
        ];
        let unreachable = vec![Unreachable {
            name: "dc4-a".into(),
            cluster: "dc4".into(),
            rpc_addr: "127.0.0.4:1".into(),
            error: "cannot connect".into(),
        }];
        let report = Report::new("127.0.0.2:1", &replies, unreachable);
        let text = report.table();
        let lines: Vec<&str> = text.lines().collect();
        let words = |line: &str| line.split_whitespace().collect::<Vec<_>>().join(" ");
        assert_eq!(
            words(lines[1]),
            "dc2-a dc2 active running 2m5s ok redb FAILING seq 12 3 2",
            "{text}"
        );
        assert_eq!(words(lines[4]), "dc4-a dc4 - NOT ANSWERING", "{text}");
        // Aligned: every cell of a column starts where its header does.
        let column = |line: &str, cell: &str| line.find(cell);
        assert_eq!(column(lines[0], "ENGINE"), column(lines[1], "running"));
        assert_eq!(
            column(lines[0], "ENGINE"),
            column(lines[4], "NOT ANSWERING")
        );
        let dc2 = lines
            .iter()
            .find(|l| l.starts_with("dc1     dc2"))
            .expect("dc2 row");
        assert!(
            words(dc2).starts_with("dc1 dc2 dc1-a 127.0.0.9:1 12 12 0 3 3s ago - -"),
            "{text}"
        );
        assert!(dc2.contains("3s ago"), "{text}");
        let dc5 = lines
            .iter()
            .find(|l| l.starts_with("dc1     dc5"))
            .expect("dc5 row");
        assert!(dc5.ends_with("1m0s ago, recovered"), "{text}");
        let dc3 = lines
            .iter()
            .find(|l| l.starts_with("dc1     dc3"))
            .expect("dc3 row");
        assert!(dc3.contains("snapshot pending"), "{text}");
        assert!(dc3.contains("2 await snapshot"), "{text}");
        assert!(
            dc3.ends_with("1m0s ago: pull from 127.0.0.9:1: refused connection"),
            "{text}"
        );
        assert!(text.ends_with("dc4-a of dc4 at 127.0.0.4:1 is not answering: cannot connect\n"));

        let json = serde_json::to_value(&report).expect("serialize");
        assert_eq!(json["members"][0]["uptime_seconds"], 125);
        assert_eq!(json["members"][0]["store"]["ok"], false);
        assert_eq!(
            json["members"][1]["origins"][0]["behind"],
            serde_json::Value::Null
        );
        assert_eq!(
            json["members"][0]["origins"][0]["last_exchange_seconds_ago"],
            3
        );
        assert_eq!(json["unreachable"][0]["name"], "dc4-a");
    }

    #[test]
    fn the_active_member_of_every_data_centre_is_asked_once() {
        let member = |name: &str, cluster: &str, role: &str, status: &str, generation| Member {
            name: name.into(),
            rpc_addr: format!("{name}:1"),
            cluster: cluster.into(),
            role: role.into(),
            status: status.into(),
            generation,
            ..Member::default()
        };
        let members = [
            member("a1", "dc1", "active", "alive", 1),
            member("b1", "dc2", "active", "left", 2),
            member("b2", "dc2", "active", "alive", 1),
            member("b3", "dc2", "standby", "alive", 5),
            member("c1", "dc3", "active", "left", 1),
            member("d1", "dc4", "standby", "alive", 1),
        ];
        let mut asked = reply("dc1", Vec::new());
        asked.name = "a1".into();
        let (ask, missing) = targets(&members, &asked);
        let names: Vec<&str> = ask.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["b2", "c1"], "alive first, the gone one still asked");
        assert_eq!(missing.len(), 1);
        assert_eq!(missing[0].cluster, "dc4");
    }
}

//! The chaos harness: data centres of real processes (dev registries, syncers, etcd), the
//! applications' churn, faults injected at random moments drawn from a seed, and the
//! invariants checked about once a second the whole time (see `check`). Used by
//! `tests/chaos/main.rs` (the short profile in CI) and `examples/chaos.rs` (`scripts/chaos`).
//!
//! - `net`: network namespaces and the cuts between data centres;
//! - `proxy`: the fault proxies in front of gossip, rpc and registry HTTP;
//! - `world`: the processes;
//! - `churn`: the applications and the ledger of what they did;
//! - `faults`: the plan drawn from the seed and the book of faults in force;
//! - `check`: the invariants.

pub mod check;
pub mod churn;
pub mod faults;
pub mod net;
pub mod proxy;
pub mod world;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::future::join_all;
use tokio::time::Instant;

use syncer::sync::hold::MASS_REMOVAL_HOLD;

use check::{CONVERGE_BOUND, Checker, FaultView, Holding, Violation};
use churn::Apps;
use faults::{Book, Kind, PlanSpec, Planned, Record};
use proxy::Faults;
use world::{Layout, World};

/// How a run is shaped.
#[derive(Debug, Clone)]
pub struct Options {
    /// How long churn and faults go on (after the start-up).
    pub duration: Duration,
    /// Data centres, at least 3.
    pub dcs: usize,
    pub seed: u64,
    /// The kinds of fault injected.
    pub kinds: Vec<Kind>,
    /// Mean time between two faults.
    pub mean_gap: Duration,
    /// Instances registered in the last data centre before the syncers start.
    pub preload: usize,
    /// Application changes per second, all data centres together.
    pub churn_rate: f64,
    /// Run in network namespaces when the machine allows.
    pub netns: bool,
    pub syncer: PathBuf,
    pub etcd: PathBuf,
    /// Keep the work directory (logs) even when the run passes.
    pub keep: bool,
}

impl Options {
    /// The profile CI runs: three data centres, two minutes of churn and faults.
    #[allow(dead_code)] // tests/chaos/main.rs only
    pub fn short(syncer: PathBuf, etcd: PathBuf, seed: u64) -> Options {
        Options {
            duration: Duration::from_secs(120),
            dcs: 3,
            seed,
            kinds: Kind::ALL.to_vec(),
            mean_gap: Duration::from_secs(6),
            preload: 2000,
            churn_rate: 20.0,
            netns: true,
            syncer,
            etcd,
            keep: false,
        }
    }
}

/// What a run found.
#[derive(Debug)]
pub struct Report {
    pub seed: u64,
    pub dcs: usize,
    pub net_mode: &'static str,
    pub ran: Duration,
    pub plan: Vec<Planned>,
    pub injected: BTreeMap<Kind, u64>,
    pub skipped: u64,
    pub ops: BTreeMap<&'static str, u64>,
    pub churn_errors: u64,
    pub churn_error_kinds: BTreeMap<String, u64>,
    pub checks: u64,
    pub violations: Vec<Violation>,
    /// Per fault that ended and was not overtaken by another: how long until every pair it
    /// touched was an exact mirror.
    pub convergence: Vec<(String, Duration)>,
    /// Time from the end of all faults and churn to exact mirrors everywhere.
    pub final_convergence: Option<Duration>,
    pub diff_consistent: Option<bool>,
    pub removed_after_wipe: u64,
    pub lost_with_registry: u64,
    pub timeline: Vec<String>,
    pub work_dir: PathBuf,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }

    pub fn worst_convergence(&self) -> Option<&(String, Duration)> {
        self.convergence.iter().max_by_key(|(_, d)| *d)
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "chaos run: seed {}, {} data centres, {}",
            self.seed, self.dcs, self.net_mode
        )?;
        writeln!(
            f,
            "  ran {:.0} s, {} invariant checks",
            self.ran.as_secs_f64(),
            self.checks
        )?;
        let ops: u64 = self.ops.values().sum();
        writeln!(
            f,
            "  churn: {ops} application changes {:?} ({} refused or failed calls: {:?})",
            self.ops, self.churn_errors, self.churn_error_kinds
        )?;
        let injected: u64 = self.injected.values().sum();
        let kinds: Vec<String> = self
            .injected
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        writeln!(
            f,
            "  faults injected: {injected} ({}); {} skipped (resource busy)",
            kinds.join(", "),
            self.skipped
        )?;
        if let Some((what, d)) = self.worst_convergence() {
            writeln!(
                f,
                "  convergence after a fault: {} measured, worst {:.1} s ({what})",
                self.convergence.len(),
                d.as_secs_f64()
            )?;
        }
        match self.final_convergence {
            Some(d) => writeln!(
                f,
                "  final convergence: {:.1} s after faults and churn stopped",
                d.as_secs_f64()
            )?,
            None => writeln!(f, "  final convergence: NOT REACHED")?,
        }
        writeln!(
            f,
            "  syncer diff: {}",
            match self.diff_consistent {
                Some(true) => "consistent",
                Some(false) => "DRIFT",
                None => "not run",
            }
        )?;
        writeln!(
            f,
            "  after a registry lost its data: copies of its instances removed elsewhere {} (allowed, the hold keeps this near 0); copies it lost and syncer put back {}",
            self.removed_after_wipe, self.lost_with_registry
        )?;
        writeln!(f, "  violations: {}", self.violations.len())?;
        for v in &self.violations {
            writeln!(
                f,
                "    +{:.1}s {}: {}",
                v.at.as_secs_f64(),
                v.kind,
                v.detail
            )?;
        }
        if !self.passed() {
            writeln!(
                f,
                "  replay: scripts/chaos --seed {} --dcs {} --duration {}s",
                self.seed,
                self.dcs,
                self.ran.as_secs()
            )?;
            writeln!(f, "  fault plan:")?;
            for p in &self.plan {
                writeln!(f, "    {p}")?;
            }
            writeln!(f, "  timeline:")?;
            for line in &self.timeline {
                writeln!(f, "    {line}")?;
            }
            writeln!(f, "  logs: {}", self.work_dir.display())?;
        }
        Ok(())
    }
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Action {
    Start(usize),
    /// The second kill of a failover.
    SecondKill(usize),
    /// A restarting registry answers from an empty view.
    PartialView(usize),
    Heal(usize),
}

/// What happened when, for the report.
#[derive(Clone)]
struct Timeline {
    started: Instant,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Timeline {
    fn log(&self, what: impl std::fmt::Display) {
        let line = format!("+{:.2}s {what}", self.started.elapsed().as_secs_f64());
        if std::env::var_os("CHAOS_VERBOSE").is_some() {
            eprintln!("{line}");
        }
        self.lines
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(line);
    }

    fn lines(&self) -> Vec<String> {
        self.lines
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// A fault that ended, waiting for the pairs it touched to converge: its label, when it
/// ended, the pairs.
type Pending = (String, Instant, BTreeSet<(usize, usize)>, Duration);

struct Run {
    opts: Options,
    world: World,
    apps: Apps,
    checker: Checker,
    book: Book,
    timeline: Timeline,
    client: reqwest::Client,
    /// Fault index -> record index in the book.
    records: BTreeMap<usize, usize>,
    plan: Vec<Planned>,
    /// Faults that ended and wait for their pairs to converge: (label, ended, pairs).
    pending: Vec<Pending>,
    convergence: Vec<(String, Duration)>,
    /// Syncers killed by a fault (world index -> fault index).
    killed: BTreeMap<usize, usize>,
}

/// Runs the chaos world with `opts` and reports.
pub async fn run(opts: Options) -> Result<Report, String> {
    if opts.dcs < 3 {
        return Err(format!(
            "--dcs {}: the chaos world needs at least 3 data centres",
            opts.dcs
        ));
    }
    let dir = tempfile::Builder::new()
        .prefix("syncer-chaos-")
        .tempdir()
        .map_err(|e| format!("create a work directory: {e}"))?;
    let layout = Layout::new(opts.dcs);
    let want_netns = opts.netns && net::Net::netns_available();
    let world = World::build(layout, want_netns, dir.path(), &opts.syncer, &opts.etcd).await?;
    let registries: Vec<String> = (1..=opts.dcs).map(|d| world.registry_url(d)).collect();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .map_err(|e| format!("http client: {e}"))?;
    let started = Instant::now();
    let timeline = Timeline {
        started,
        lines: Arc::default(),
    };
    timeline.log(format_args!("network: {}", world.net.mode()));
    let syncer_dcs: Vec<usize> = world.syncers.iter().map(|s| s.dc).collect();
    let plan = faults::plan(&PlanSpec {
        seed: opts.seed,
        duration: opts.duration,
        mean_gap: opts.mean_gap,
        kinds: &opts.kinds,
        dcs: opts.dcs,
        syncer_dcs: &syncer_dcs,
        cluster_dc: world.layout.cluster_dc,
        etcd_dc: world.layout.etcd_dc,
        disk_dc: world.tmpfs.as_ref().and(world.layout.tmpfs_dc),
    });
    let mut run = Run {
        apps: Apps::new(registries, opts.seed, 8),
        checker: Checker::new(opts.dcs, started),
        book: Book::new(started),
        timeline,
        client,
        records: BTreeMap::new(),
        plan,
        pending: Vec::new(),
        convergence: Vec::new(),
        killed: BTreeMap::new(),
        world,
        opts,
    };
    let outcome = run.go().await;
    let report = run.report(outcome, dir.path().to_owned());
    if !report.passed() || run.opts.keep {
        // Keep the logs for whoever reads the report.
        let kept = dir.keep();
        return Ok(Report {
            work_dir: kept,
            ..report
        });
    }
    Ok(report)
}

impl Run {
    async fn go(&mut self) -> Result<(Option<Duration>, Option<bool>), String> {
        self.wait_registries().await?;
        let heartbeats = self.apps.heartbeats();
        let outcome = self.phases().await;
        heartbeats.abort();
        outcome
    }

    async fn phases(&mut self) -> Result<(Option<Duration>, Option<bool>), String> {
        let last = self.opts.dcs;
        self.apps.preload(last, self.opts.preload).await?;
        self.timeline.log(format_args!(
            "dc{last}: {} instances registered before the syncers start",
            self.opts.preload
        ));
        self.world.start_syncers()?;
        self.timeline.log("syncers started");
        // Kill an importer in the middle of its initial sync, and the cluster's first active
        // member as soon as it is active (its own initial sync).
        let initial_kill = Instant::now() + Duration::from_millis(300 + self.opts.seed % 1200);
        let mut first_active_killed = self.world.layout.cluster_dc.is_none();
        let mut initial_done = false;
        let deadline = Instant::now() + Duration::from_secs(60);
        // Start-up: every data centre mirrors the preload.
        let mut check = tokio::time::interval(Duration::from_secs(1));
        loop {
            check.tick().await;
            self.reap();
            if !initial_done && Instant::now() >= initial_kill {
                initial_done = true;
                if let Some(i) = self.world.syncers_of(2).first().copied() {
                    self.world.syncers[i].proc.kill();
                    self.timeline.log(format_args!(
                        "kill -9 {} during its initial sync",
                        self.world.syncers[i].proc.name
                    ));
                    tokio::time::sleep(Duration::from_millis(1500)).await;
                    self.world.syncers[i].proc.start(&self.world.net)?;
                    self.timeline.log(format_args!(
                        "{} started again",
                        self.world.syncers[i].proc.name
                    ));
                }
            }
            if !first_active_killed
                && let Some(i) = self
                    .active_of(self.world.layout.cluster_dc.unwrap_or(1))
                    .await
            {
                first_active_killed = true;
                self.world.syncers[i].proc.kill();
                self.timeline.log(format_args!(
                    "kill -9 {}, the cluster's first active member, during its initial sync",
                    self.world.syncers[i].proc.name
                ));
                tokio::time::sleep(Duration::from_millis(2000)).await;
                self.world.syncers[i].proc.start(&self.world.net)?;
                self.timeline.log(format_args!(
                    "{} started again",
                    self.world.syncers[i].proc.name
                ));
            }
            let holdings = self.read_all().await;
            self.checker.check(&holdings, &self.apps.ledger, &self.book);
            if initial_done
                && first_active_killed
                && self
                    .checker
                    .converged(&holdings, &self.apps.ledger, &self.checker.all_pairs())
                    .is_ok()
            {
                break;
            }
            if Instant::now() > deadline {
                let why = self
                    .checker
                    .converged(&holdings, &self.apps.ledger, &self.checker.all_pairs())
                    .err()
                    .unwrap_or_default();
                self.violation(
                    "no initial sync",
                    format!(
                        "the data centres did not mirror each other within 60 s of the start: {why}"
                    ),
                );
                return Ok((None, None));
            }
        }
        self.timeline
            .log("initial sync done: every data centre mirrors the others");

        // Churn and faults.
        let churn_start = Instant::now();
        let mut queue: BinaryHeap<Reverse<(Instant, Action)>> = self
            .plan
            .iter()
            .enumerate()
            .map(|(i, p)| Reverse((churn_start + p.at, Action::Start(i))))
            .collect();
        let churn_gap = Duration::from_secs_f64(1.0 / self.opts.churn_rate.max(0.1));
        let mut churn = tokio::time::interval(churn_gap);
        churn.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut check = tokio::time::interval(Duration::from_secs(1));
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let end = churn_start + self.opts.duration;
        while Instant::now() < end {
            let next = queue
                .peek()
                .map(|Reverse((at, _))| *at)
                .unwrap_or(end)
                .min(end);
            tokio::select! {
                _ = churn.tick() => self.apps.step().await,
                _ = check.tick() => self.check_once().await,
                () = tokio::time::sleep_until(next) => {
                    if let Some(Reverse((_, action))) = queue.pop()
                        && let Some(later) = self.act(action).await?
                    {
                        queue.push(Reverse(later));
                    }
                }
            }
        }
        // Heal everything in force, stop the churn (heartbeats go on), converge.
        self.timeline
            .log("faults and churn stop; healing what is in force");
        let open: Vec<usize> = self
            .records
            .iter()
            .filter(|(_, r)| self.book.records[**r].ended.is_none())
            .map(|(f, _)| *f)
            .collect();
        for fault in open {
            self.heal(fault).await?;
        }
        for i in 0..self.world.syncers.len() {
            if !self.world.syncers[i].proc.is_running() {
                self.world.syncers[i].proc.start(&self.world.net)?;
            }
        }
        let quiet = Instant::now();
        let final_deadline = quiet + Duration::from_secs(60);
        let all = self.checker.all_pairs();
        let mut final_convergence = None;
        let mut last_why = String::new();
        let mut last_logged = Instant::now();
        while Instant::now() < final_deadline {
            check.tick().await;
            self.reap();
            let holdings = self.read_all().await;
            self.checker.check(&holdings, &self.apps.ledger, &self.book);
            match self.checker.converged(&holdings, &self.apps.ledger, &all) {
                Ok(()) => {
                    final_convergence = Some(quiet.elapsed());
                    break;
                }
                Err(why) => {
                    if last_logged.elapsed() >= Duration::from_secs(5) {
                        self.timeline.log(format_args!("not converged yet: {why}"));
                        last_logged = Instant::now();
                    }
                    last_why = why;
                }
            }
        }
        let Some(final_convergence) = final_convergence else {
            self.violation(
                "no final convergence",
                format!("not exact mirrors 60 s after faults and churn stopped: {last_why}"),
            );
            return Ok((None, None));
        };
        self.timeline.log(format_args!(
            "exact mirrors everywhere after {:.1} s",
            final_convergence.as_secs_f64()
        ));
        let consistent = self.diff().await;
        Ok((Some(final_convergence), Some(consistent)))
    }

    fn violation(&mut self, kind: &'static str, detail: String) {
        self.timeline
            .log(format_args!("VIOLATION {kind}: {detail}"));
        self.checker.violations.push(Violation {
            at: self.book.started.elapsed(),
            kind,
            detail,
        });
    }

    async fn wait_registries(&self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let reads = self.read_all().await;
            if reads.iter().all(Option::is_some) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err("the dev registries did not answer within 20 s".into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn read_all(&self) -> Vec<Option<Holding>> {
        let urls: Vec<String> = (1..=self.opts.dcs)
            .map(|d| self.world.registry_url(d))
            .collect();
        join_all(urls.iter().map(|u| check::read_registry(&self.client, u)))
            .await
            .into_iter()
            .map(Result::ok)
            .collect()
    }

    /// Processes that ended on their own are a violation; they are started again.
    fn reap(&mut self) {
        let mut exits = Vec::new();
        for s in &mut self.world.syncers {
            if let Some(why) = s.proc.unexpected_exit() {
                exits.push((why, s.proc.log_tail(15)));
                let _ = s.proc.start(&self.world.net);
            }
        }
        for (why, tail) in exits {
            self.violation(
                "process exited",
                format!("{why}; last lines of its log:\n{tail}"),
            );
        }
    }

    async fn check_once(&mut self) {
        self.reap();
        let holdings = self.read_all().await;
        let before = self.checker.violations.len();
        self.checker.check(&holdings, &self.apps.ledger, &self.book);
        for v in &self.checker.violations[before..] {
            self.timeline
                .log(format_args!("VIOLATION {}: {}", v.kind, v.detail));
        }
        // Convergence of the pairs touched by faults that ended.
        let now = Instant::now();
        let pending = std::mem::take(&mut self.pending);
        for (label, ended, pairs, bound) in pending {
            if pairs
                .iter()
                .any(|(a, b)| self.book.quiet_since(*a, *b).is_none_or(|q| q > ended))
            {
                self.timeline.log(format_args!(
                    "{label}: overtaken by another fault before converging"
                ));
                continue;
            }
            match self.checker.converged(&holdings, &self.apps.ledger, &pairs) {
                Ok(()) => {
                    let took = now - ended;
                    self.timeline.log(format_args!(
                        "{label}: converged {:.1} s after it ended",
                        took.as_secs_f64()
                    ));
                    self.convergence.push((label, took));
                }
                Err(why) if now - ended > bound => {
                    self.violation(
                        "no convergence after a fault",
                        format!("{label}: not an exact mirror {bound:?} after it ended: {why}"),
                    );
                }
                Err(_) => self.pending.push((label, ended, pairs, bound)),
            }
        }
    }

    /// The active syncer of data centre `dc` (its metric `syncer_sync_active`).
    async fn active_of(&self, dc: usize) -> Option<usize> {
        for i in self.world.syncers_of(dc) {
            if !self.world.syncers[i].proc.is_running() {
                continue;
            }
            let url = format!("http://{}/metrics", self.world.syncers[i].admin);
            let Ok(response) = self.client.get(&url).send().await else {
                continue;
            };
            let Ok(text) = response.text().await else {
                continue;
            };
            if text.lines().any(|l| l == "syncer_sync_active 1") {
                return Some(i);
            }
        }
        None
    }

    fn holds(&self, p: &Planned) -> BTreeSet<String> {
        let mut holds = BTreeSet::new();
        match p.kind {
            Kind::Kill => {
                holds.insert(format!("proc:{}", p.syncer));
            }
            Kind::Failover => {
                for i in self.world.syncers_of(p.dcs[0]) {
                    holds.insert(format!("proc:{i}"));
                }
            }
            Kind::Cut | Kind::Split | Kind::OneWay => {
                holds.insert("net".into());
            }
            Kind::Lossy => {
                holds.insert(format!("proxy:{}", p.syncer));
            }
            Kind::RegistryRestart
            | Kind::RegistryWipe
            | Kind::SlowRegistry
            | Kind::RegistryErrors => {
                holds.insert(format!("registry:{}", p.dcs[0]));
            }
            Kind::EtcdOutage => {
                holds.insert("etcd".into());
                // The cluster's members are not killed while their etcd is frozen.
                for i in self.world.syncers_of(p.dcs[0]) {
                    holds.insert(format!("proc:{i}"));
                }
            }
            Kind::DiskFull => {
                holds.insert("disk".into());
            }
        }
        holds
    }

    /// Carries out one action; may ask for another later.
    async fn act(&mut self, action: Action) -> Result<Option<(Instant, Action)>, String> {
        match action {
            Action::Start(f) => {
                let p = self.plan[f].clone();
                let holds = self.holds(&p);
                if self.book.busy(&holds) || self.book.active().count() >= 2 {
                    self.book.skipped += 1;
                    return Ok(None);
                }
                self.records.insert(f, self.book.records.len());
                self.book.records.push(Record {
                    planned: p.clone(),
                    pairs: p.pairs(self.opts.dcs),
                    ended: None,
                    holds,
                });
                self.start(f, &p).await?;
                if p.kind == Kind::Failover {
                    return Ok(Some((Instant::now() + p.extra, Action::SecondKill(f))));
                }
                if p.kind == Kind::RegistryRestart {
                    return Ok(Some((Instant::now() + p.lasts, Action::PartialView(f))));
                }
                Ok(Some((Instant::now() + p.lasts, Action::Heal(f))))
            }
            Action::SecondKill(f) => {
                let p = self.plan[f].clone();
                // The member taking over, or if none yet, any other running member.
                let target = match self.active_of(p.dcs[0]).await {
                    Some(i) => Some(i),
                    None => self
                        .world
                        .syncers_of(p.dcs[0])
                        .into_iter()
                        .find(|i| self.world.syncers[*i].proc.is_running()),
                };
                if let Some(i) = target {
                    self.world.syncers[i].proc.kill();
                    self.killed.insert(i, f);
                    self.timeline.log(format_args!(
                        "fault {f} failover: kill -9 {} during the takeover",
                        self.world.syncers[i].proc.name
                    ));
                }
                Ok(Some((Instant::now() + p.lasts, Action::Heal(f))))
            }
            Action::PartialView(f) => {
                let p = self.plan[f].clone();
                self.world.registry_knobs[p.dcs[0] - 1].set(Faults {
                    alternate: true,
                    ..Faults::default()
                });
                self.book.vanishes.insert(p.dcs[0], Instant::now());
                self.timeline.log(format_args!(
                    "fault {f} {p}: the registry answers again, from an empty view (loading its data)"
                ));
                Ok(Some((Instant::now() + p.extra, Action::Heal(f))))
            }
            Action::Heal(f) => {
                self.heal(f).await?;
                Ok(None)
            }
        }
    }

    async fn start(&mut self, f: usize, p: &Planned) -> Result<(), String> {
        let label = format!("fault {f} {p}");
        match p.kind {
            Kind::Kill => {
                let i = p.syncer;
                if self.world.syncers[i].proc.is_running() {
                    self.world.syncers[i].proc.kill();
                    self.killed.insert(i, f);
                }
                let active = self.world.layout.cluster_dc == Some(p.dcs[0]);
                self.timeline.log(format_args!(
                    "{label}: kill -9 {}{}",
                    self.world.syncers[i].proc.name,
                    if active { " (cluster member)" } else { "" }
                ));
            }
            Kind::Failover => match self.active_of(p.dcs[0]).await {
                Some(i) => {
                    self.world.syncers[i].proc.kill();
                    self.killed.insert(i, f);
                    self.timeline.log(format_args!(
                        "{label}: kill -9 the active {}",
                        self.world.syncers[i].proc.name
                    ));
                }
                None => self
                    .timeline
                    .log(format_args!("{label}: no active member to kill")),
            },
            Kind::Cut => {
                let dc = p.dcs[0];
                for other in (1..=self.opts.dcs).filter(|o| *o != dc) {
                    self.world.net.set_cut(dc, other, true)?;
                    self.world.net.set_cut(other, dc, true)?;
                }
                self.timeline.log(format_args!("{label}: cut off"));
            }
            Kind::Split => {
                let (a, b) = (p.dcs[0], p.dcs[1]);
                self.world.net.set_cut(a, b, true)?;
                self.world.net.set_cut(b, a, true)?;
                self.timeline.log(format_args!("{label}: split"));
            }
            Kind::OneWay => {
                self.world.net.set_cut(p.dcs[0], p.dcs[1], true)?;
                self.timeline.log(format_args!(
                    "{label}: what dc{} sends to dc{} is lost",
                    p.dcs[0], p.dcs[1]
                ));
            }
            Kind::Lossy => {
                self.world.syncers[p.syncer].knob.set(Faults {
                    loss: 0.3,
                    delay: Duration::from_millis(200),
                    ..Faults::default()
                });
                self.timeline.log(format_args!(
                    "{label}: 30 % gossip loss, rpc answers 200 ms late at {}",
                    self.world.syncers[p.syncer].proc.name
                ));
            }
            Kind::RegistryRestart => {
                self.world.registry_knobs[p.dcs[0] - 1].set(Faults {
                    refuse: true,
                    ..Faults::default()
                });
                self.timeline
                    .log(format_args!("{label}: registry unreachable (restarting)"));
            }
            Kind::RegistryWipe => {
                let dc = p.dcs[0];
                self.world.registries[dc - 1].kill();
                self.world.registries[dc - 1].start(&self.world.net)?;
                self.book.wipes.insert(dc, Instant::now());
                self.book.vanishes.insert(dc, Instant::now());
                self.timeline
                    .log(format_args!("{label}: registry restarted empty"));
                // The applications notice and register again (the registry needs a moment).
                let deadline = Instant::now() + Duration::from_secs(10);
                loop {
                    match self.apps.register_again(dc).await {
                        Ok(n) => {
                            self.timeline.log(format_args!(
                                "dc{dc}: applications registered {n} instances again"
                            ));
                            break;
                        }
                        Err(e) if Instant::now() > deadline => {
                            return Err(format!("register again in dc{dc}: {e}"));
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                }
            }
            Kind::EtcdOutage if self.world.layout.cluster_dc != Some(p.dcs[0]) => {
                // The etcd server of a standalone data centre: killed, and started again on
                // its data when the fault ends.
                if let Some(etcd) = self.world.etcd.as_mut() {
                    etcd.kill();
                }
                self.timeline
                    .log(format_args!("{label}: etcd killed (kill -9)"));
            }
            Kind::EtcdOutage => {
                let dc = p.dcs[0];
                let pids = self.etcd_pids(dc);
                for pid in &pids {
                    // SAFETY: kill has no memory preconditions; the pids are our children's.
                    unsafe {
                        libc::kill(*pid, libc::SIGSTOP);
                    }
                }
                self.timeline.log(format_args!(
                    "{label}: etcd stopped (SIGSTOP, {} processes)",
                    pids.len()
                ));
            }
            Kind::SlowRegistry => {
                self.world.registry_knobs[p.dcs[0] - 1].set(Faults {
                    delay: p.extra,
                    ..Faults::default()
                });
                self.timeline.log(format_args!(
                    "{label}: registry answers {:.1} s late",
                    p.extra.as_secs_f64()
                ));
            }
            Kind::RegistryErrors => {
                self.world.registry_knobs[p.dcs[0] - 1].set(Faults {
                    http_error: true,
                    ..Faults::default()
                });
                self.timeline
                    .log(format_args!("{label}: registry answers 503"));
            }
            Kind::DiskFull => {
                if let Some(dir) = self.world.tmpfs.clone() {
                    let n = world::fill_disk(&dir)?;
                    self.timeline.log(format_args!(
                        "{label}: data directory full ({n} bytes written to fill it)"
                    ));
                }
            }
        }
        Ok(())
    }

    fn etcd_pids(&self, dc: usize) -> Vec<i32> {
        if self.world.layout.cluster_dc == Some(dc) {
            self.world.managed_etcd_pids()
        } else {
            self.world
                .etcd
                .as_ref()
                .and_then(world::Proc::pid)
                .into_iter()
                .collect()
        }
    }

    async fn heal(&mut self, f: usize) -> Result<(), String> {
        let Some(&r) = self.records.get(&f) else {
            return Ok(());
        };
        if self.book.records[r].ended.is_some() {
            return Ok(());
        }
        let p = self.plan[f].clone();
        let label = format!("fault {f} {p}");
        match p.kind {
            Kind::Kill | Kind::Failover => {
                let victims: Vec<usize> = self
                    .killed
                    .iter()
                    .filter(|(_, g)| **g == f)
                    .map(|(i, _)| *i)
                    .collect();
                for i in victims {
                    self.killed.remove(&i);
                    self.world.syncers[i].proc.start(&self.world.net)?;
                    self.timeline.log(format_args!(
                        "{label}: {} started again",
                        self.world.syncers[i].proc.name
                    ));
                }
            }
            Kind::Cut => {
                let dc = p.dcs[0];
                for other in (1..=self.opts.dcs).filter(|o| *o != dc) {
                    self.world.net.set_cut(dc, other, false)?;
                    self.world.net.set_cut(other, dc, false)?;
                }
                self.timeline.log(format_args!("{label}: healed"));
            }
            Kind::Split => {
                let (a, b) = (p.dcs[0], p.dcs[1]);
                self.world.net.set_cut(a, b, false)?;
                self.world.net.set_cut(b, a, false)?;
                self.timeline.log(format_args!("{label}: healed"));
            }
            Kind::OneWay => {
                self.world.net.set_cut(p.dcs[0], p.dcs[1], false)?;
                self.timeline.log(format_args!("{label}: healed"));
            }
            Kind::Lossy => {
                self.world.syncers[p.syncer].knob.set(Faults::default());
                self.timeline.log(format_args!("{label}: healed"));
            }
            Kind::RegistryRestart | Kind::SlowRegistry | Kind::RegistryErrors => {
                self.world.registry_knobs[p.dcs[0] - 1].set(Faults::default());
                self.timeline
                    .log(format_args!("{label}: registry back to normal"));
            }
            Kind::RegistryWipe => {}
            Kind::EtcdOutage if self.world.layout.cluster_dc != Some(p.dcs[0]) => {
                if let Some(etcd) = self.world.etcd.as_mut() {
                    etcd.start(&self.world.net)?;
                }
                self.timeline
                    .log(format_args!("{label}: etcd started again on its data"));
            }
            Kind::EtcdOutage => {
                for pid in self.etcd_pids(p.dcs[0]) {
                    // SAFETY: as above.
                    unsafe {
                        libc::kill(pid, libc::SIGCONT);
                    }
                }
                self.timeline.log(format_args!("{label}: etcd resumed"));
            }
            Kind::DiskFull => {
                if let Some(dir) = self.world.tmpfs.clone() {
                    world::free_disk(&dir);
                    let i = self
                        .world
                        .syncers_of(p.dcs[0])
                        .first()
                        .copied()
                        .unwrap_or(0);
                    let alive = self.world.syncers[i].proc.is_running();
                    // What the syncer told its operator meanwhile.
                    let said = self.world.syncers[i]
                        .proc
                        .log_tail(400)
                        .lines()
                        .rev()
                        .find(|l| l.contains("os error 28") || l.contains("No space left"))
                        .map(|l| l.chars().take(300).collect::<String>())
                        .unwrap_or_else(|| "nothing about it (no write was due)".into());
                    self.timeline.log(format_args!(
                        "{label}: data directory writable again; {} {}; it said: {said}",
                        self.world.syncers[i].proc.name,
                        if alive { "stayed up" } else { "is down" }
                    ));
                }
            }
        }
        let now = Instant::now();
        self.book.records[r].ended = Some(now);
        // After a registry answered from an empty view, removals of its instances are held
        // (syncer::sync::hold): the pairs converge only once the hold is over.
        let bound = match p.kind {
            Kind::RegistryWipe | Kind::RegistryRestart => CONVERGE_BOUND + MASS_REMOVAL_HOLD,
            _ => CONVERGE_BOUND,
        };
        let pairs = self.book.records[r].pairs.clone();
        self.pending.push((label, now, pairs, bound));
        Ok(())
    }

    /// `syncer diff` over the whole pool: the mapping tables agree with the registries.
    async fn diff(&mut self) -> bool {
        let Some(first) = self.world.syncers.last() else {
            return false;
        };
        let out = tokio::process::Command::new(&self.opts.syncer)
            .args([
                "diff",
                "--rpc-addr",
                &first.rpc_front.to_string(),
                "--format",
                "json",
                "--settle",
                "2s",
            ])
            .output()
            .await;
        match out {
            Ok(out) if out.status.success() => {
                self.timeline.log("syncer diff: consistent");
                true
            }
            Ok(out) => {
                let text = format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
                self.violation(
                    "syncer diff",
                    format!(
                        "exit {}: {}",
                        out.status,
                        text.chars().take(3000).collect::<String>()
                    ),
                );
                false
            }
            Err(e) => {
                self.violation("syncer diff", format!("cannot run syncer diff: {e}"));
                false
            }
        }
    }

    fn report(
        &mut self,
        outcome: Result<(Option<Duration>, Option<bool>), String>,
        work_dir: PathBuf,
    ) -> Report {
        let (final_convergence, diff_consistent) = match outcome {
            Ok(pair) => pair,
            Err(e) => {
                self.violation("harness error", e);
                (None, None)
            }
        };
        let ledger = churn::lock(&self.apps.ledger);
        let mut timeline = self.timeline.lines();
        if let Some(e) = &ledger.last_error {
            timeline.push(format!("last refused application call: {e}"));
        }
        Report {
            seed: self.opts.seed,
            dcs: self.opts.dcs,
            net_mode: self.world.net.mode(),
            ran: self.book.started.elapsed(),
            plan: self.plan.clone(),
            injected: self.book.counts(),
            skipped: self.book.skipped,
            ops: ledger.ops.clone(),
            churn_errors: ledger.errors,
            churn_error_kinds: ledger.error_kinds.clone(),
            checks: self.checker.checks,
            violations: self.checker.violations.clone(),
            convergence: self.convergence.clone(),
            final_convergence,
            diff_consistent,
            removed_after_wipe: self.checker.removed_after_wipe,
            lost_with_registry: self.checker.lost_with_registry,
            timeline,
            work_dir,
        }
    }
}

/// `program` as given when it is a path, else the first of that name on `PATH` (else the
/// name itself, for the error to name).
pub fn find_program(program: &std::path::Path) -> PathBuf {
    if program.components().count() != 1 {
        return program.to_owned();
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join(program))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| program.to_owned())
}

/// A seed from the clock, for runs that do not name one.
#[allow(dead_code)] // examples/chaos.rs only
pub fn random_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
}

//! The faults: a plan drawn from the seed, and the book of what is in force.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

use super::check::FaultView;

/// Every kind of fault the harness injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// kill -9 of a random syncer (active or standby), started again a little later.
    Kill,
    /// kill -9 of the cluster's active syncer, then of a second member during the takeover.
    Failover,
    /// A data centre cut from all others (both ways).
    Cut,
    /// Two data centres cut from each other (both ways); the others still see both.
    Split,
    /// What one data centre sends to another is lost; the other way works.
    OneWay,
    /// One syncer's gossip loses 30 % of datagrams both ways, its rpc answers come late.
    Lossy,
    /// A registry restarting with its data kept: unreachable for a while, then answering
    /// from an empty view (its cache still loading) for a few seconds, then all back.
    RegistryRestart,
    /// A registry restarted empty: it lost every instance and service.
    RegistryWipe,
    /// The etcd of a data centre stopped (SIGSTOP) for longer than a leader lease.
    EtcdOutage,
    /// A registry answering after seconds.
    SlowRegistry,
    /// A registry answering every call with 503.
    RegistryErrors,
    /// The data directory of a syncer is on a full disk.
    DiskFull,
}

impl Kind {
    pub const ALL: [Kind; 12] = [
        Kind::Kill,
        Kind::Failover,
        Kind::Cut,
        Kind::Split,
        Kind::OneWay,
        Kind::Lossy,
        Kind::RegistryRestart,
        Kind::RegistryWipe,
        Kind::EtcdOutage,
        Kind::SlowRegistry,
        Kind::RegistryErrors,
        Kind::DiskFull,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Kill => "kill",
            Kind::Failover => "failover",
            Kind::Cut => "cut",
            Kind::Split => "split",
            Kind::OneWay => "one-way",
            Kind::Lossy => "lossy",
            Kind::RegistryRestart => "registry-restart",
            Kind::RegistryWipe => "registry-wipe",
            Kind::EtcdOutage => "etcd-outage",
            Kind::SlowRegistry => "slow-registry",
            Kind::RegistryErrors => "registry-errors",
            Kind::DiskFull => "disk-full",
        }
    }

    #[allow(dead_code)] // examples/chaos.rs only
    pub fn parse(name: &str) -> Result<Kind, String> {
        Kind::ALL
            .into_iter()
            .find(|k| k.name() == name)
            .ok_or_else(|| {
                let names: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
                format!("unknown fault {name:?}; known: {}", names.join(", "))
            })
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One planned fault.
#[derive(Debug, Clone)]
pub struct Planned {
    /// From the start of the churn.
    pub at: Duration,
    pub kind: Kind,
    /// Data centres it acts on (for a cut, the one cut off; for a split or one-way, the two:
    /// the sender first).
    pub dcs: Vec<usize>,
    /// Which syncer (an index into the world's list), for kills and lossy links.
    pub syncer: usize,
    pub lasts: Duration,
    /// A second duration: for a failover the time between the two kills, for a registry
    /// restart how long it answers from an empty view, for a slow registry its delay.
    pub extra: Duration,
}

impl Planned {
    /// The pairs of data centres (lower first) whose mirroring the fault can disturb: for a
    /// split or a one-way loss that pair, else every pair with the data centre it acts on.
    pub fn pairs(&self, dcs: usize) -> BTreeSet<(usize, usize)> {
        let pair = |a: usize, b: usize| (a.min(b), a.max(b));
        match self.kind {
            Kind::Split | Kind::OneWay => BTreeSet::from([pair(self.dcs[0], self.dcs[1])]),
            _ => (1..=dcs)
                .filter(|o| *o != self.dcs[0])
                .map(|o| pair(self.dcs[0], o))
                .collect(),
        }
    }
}

impl fmt::Display for Planned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dcs: Vec<String> = self.dcs.iter().map(|d| format!("dc{d}")).collect();
        write!(
            f,
            "+{:.1}s {} {} for {:.1}s",
            self.at.as_secs_f64(),
            self.kind,
            dcs.join("/"),
            self.lasts.as_secs_f64()
        )?;
        if matches!(self.kind, Kind::Kill | Kind::Lossy) {
            write!(f, " (syncer #{})", self.syncer)?;
        }
        Ok(())
    }
}

/// What the plan draws from.
pub struct PlanSpec<'a> {
    pub seed: u64,
    pub duration: Duration,
    pub mean_gap: Duration,
    pub kinds: &'a [Kind],
    pub dcs: usize,
    /// Data centre of each syncer.
    pub syncer_dcs: &'a [usize],
    pub cluster_dc: Option<usize>,
    pub etcd_dc: Option<usize>,
    pub disk_dc: Option<usize>,
}

/// The faults of a run, drawn from the seed: the same seed gives the same plan.
pub fn plan(spec: &PlanSpec<'_>) -> Vec<Planned> {
    let mut rng = StdRng::seed_from_u64(spec.seed);
    let kinds: Vec<Kind> = spec
        .kinds
        .iter()
        .copied()
        .filter(|k| match k {
            Kind::Failover => spec.cluster_dc.is_some(),
            Kind::EtcdOutage => spec.cluster_dc.is_some() || spec.etcd_dc.is_some(),
            Kind::DiskFull => spec.disk_dc.is_some(),
            _ => true,
        })
        .collect();
    let mut out = Vec::new();
    if kinds.is_empty() {
        return out;
    }
    let mut at = Duration::from_secs(2);
    let secs =
        |rng: &mut StdRng, lo: f64, hi: f64| Duration::from_secs_f64(rng.random_range(lo..hi));
    loop {
        // Exponential gaps: faults come at random moments, now and then close together.
        let u: f64 = rng.random_range(0.0001..1.0);
        at += Duration::from_secs_f64(-u.ln() * spec.mean_gap.as_secs_f64())
            .max(Duration::from_millis(200));
        if at >= spec.duration {
            break;
        }
        let kind = kinds[rng.random_range(0..kinds.len())];
        let dc = rng.random_range(1..=spec.dcs);
        let mut other = rng.random_range(1..spec.dcs);
        if other >= dc {
            other += 1;
        }
        let syncer = rng.random_range(0..spec.syncer_dcs.len());
        let (dcs, lasts, extra) = match kind {
            Kind::Kill => (
                vec![spec.syncer_dcs[syncer]],
                secs(&mut rng, 0.5, 5.0),
                Duration::ZERO,
            ),
            Kind::Failover => (
                vec![spec.cluster_dc.unwrap_or(1)],
                secs(&mut rng, 2.0, 6.0),
                secs(&mut rng, 0.2, 1.5),
            ),
            Kind::Cut => (vec![dc], secs(&mut rng, 3.0, 20.0), Duration::ZERO),
            Kind::Split | Kind::OneWay => {
                (vec![dc, other], secs(&mut rng, 3.0, 20.0), Duration::ZERO)
            }
            Kind::Lossy => (
                vec![spec.syncer_dcs[syncer]],
                secs(&mut rng, 5.0, 15.0),
                Duration::ZERO,
            ),
            Kind::RegistryRestart => (vec![dc], secs(&mut rng, 2.0, 6.0), secs(&mut rng, 1.0, 4.0)),
            Kind::RegistryWipe => (vec![dc], Duration::from_millis(300), Duration::ZERO),
            Kind::EtcdOutage => {
                let choices: Vec<usize> = [spec.cluster_dc, spec.etcd_dc]
                    .into_iter()
                    .flatten()
                    .collect();
                (
                    vec![choices[rng.random_range(0..choices.len())]],
                    secs(&mut rng, 4.0, 10.0),
                    Duration::ZERO,
                )
            }
            Kind::SlowRegistry => (
                vec![dc],
                secs(&mut rng, 5.0, 15.0),
                secs(&mut rng, 1.0, 3.0),
            ),
            Kind::RegistryErrors => (vec![dc], secs(&mut rng, 3.0, 10.0), Duration::ZERO),
            Kind::DiskFull => (
                vec![spec.disk_dc.unwrap_or(dc)],
                secs(&mut rng, 5.0, 15.0),
                Duration::ZERO,
            ),
        };
        out.push(Planned {
            at,
            kind,
            dcs,
            syncer,
            lasts,
            extra,
        });
    }
    out
}

/// A fault as it happened.
#[derive(Debug, Clone)]
pub struct Record {
    pub planned: Planned,
    pub pairs: BTreeSet<(usize, usize)>,
    pub ended: Option<Instant>,
    /// Resources it holds (no two faults hold one at once).
    pub holds: BTreeSet<String>,
}

/// The faults in force and those that ended.
pub struct Book {
    pub started: Instant,
    pub records: Vec<Record>,
    pub wipes: BTreeMap<usize, Instant>,
    pub vanishes: BTreeMap<usize, Instant>,
    pub skipped: u64,
}

impl Book {
    pub fn new(started: Instant) -> Book {
        Book {
            started,
            records: Vec::new(),
            wipes: BTreeMap::new(),
            vanishes: BTreeMap::new(),
            skipped: 0,
        }
    }

    pub fn active(&self) -> impl Iterator<Item = &Record> {
        self.records.iter().filter(|r| r.ended.is_none())
    }

    pub fn busy(&self, holds: &BTreeSet<String>) -> bool {
        self.active().any(|r| !r.holds.is_disjoint(holds))
    }

    /// How many faults of each kind were injected.
    pub fn counts(&self) -> BTreeMap<Kind, u64> {
        let mut counts = BTreeMap::new();
        for r in &self.records {
            *counts.entry(r.planned.kind).or_default() += 1;
        }
        counts
    }
}

impl FaultView for Book {
    fn quiet_since(&self, a: usize, b: usize) -> Option<Instant> {
        let mut since = self.started;
        let pair = (a.min(b), a.max(b));
        for r in self.records.iter().filter(|r| r.pairs.contains(&pair)) {
            match r.ended {
                None => return None,
                Some(end) => since = since.max(end),
            }
        }
        Some(since)
    }

    fn last_wipe(&self, dc: usize) -> Option<Instant> {
        self.wipes.get(&dc).copied()
    }

    fn last_vanish(&self, dc: usize) -> Option<Instant> {
        self.vanishes.get(&dc).copied()
    }
}

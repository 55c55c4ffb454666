//! The invariants, checked about once a second against what every registry holds and what
//! the applications did (the ledger), not only at the end.
//!
//! Always:
//! - **no duplicate**: never two copies of one origin instance in one registry;
//! - **no copy of a copy**: a copy's `syncer.origin` is the data centre its instance was
//!   registered in, never the registry's own;
//! - **no copy removed while its origin is alive**: a copy that was there and is missing at
//!   two checks in a row, while its origin instance is registered, unchanged for the settle
//!   time, and neither registry lost its data lately.
//!
//! When both data centres of a pair are quiet (no fault touches either):
//! - **no stale copy**: a copy whose origin instance has been gone for longer than
//!   `STALE_BOUND` (counted from when it went, from when the pair became quiet, or from the
//!   end of the removal hold after the origin's registry answered from an empty view);
//! - **convergence**: after a fault ends, every pair it touched is an exact mirror (ignoring
//!   changes younger than the settle time) within `CONVERGE_BOUND`; the time it took is
//!   recorded.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Duration;

use futures::future::join_all;
use serde_json::Value;
use tokio::time::Instant;

use syncer::sync::hold::MASS_REMOVAL_HOLD;

use super::churn::{self, Entry, Life, SharedLedger, origin_of_host};

/// Changes younger than this are in flight, not drift.
pub const SETTLE: Duration = Duration::from_secs(2);
/// A copy of a gone instance may stay this long after the pair is quiet (anti-entropy
/// period, 10 s by default, plus slack).
pub const STALE_BOUND: Duration = Duration::from_secs(15);
/// Every pair a fault touched is an exact mirror this long after it ended.
pub const CONVERGE_BOUND: Duration = Duration::from_secs(30);
/// The mark syncer puts on every copy.
const ORIGIN: &str = "syncer.origin";

/// One instance as a registry lists it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub instance_id: String,
    pub status: String,
    pub properties: BTreeMap<String, String>,
}

/// What one registry holds, by host name.
#[derive(Debug, Default)]
pub struct Holding {
    pub locals: HashMap<String, Seen>,
    pub copies: HashMap<String, Vec<Seen>>,
}

/// Reads every instance of registry `base` (services of app `chaos`).
pub async fn read_registry(client: &reqwest::Client, base: &str) -> Result<Holding, String> {
    let url = format!("{base}/v4/default/registry/microservices");
    let text = get(client, &url).await?;
    let services: Value = serde_json::from_str(&text).map_err(|e| format!("{url}: {e}"))?;
    let ids: Vec<String> = services["services"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["appId"] == churn::APP)
        .filter_map(|s| s["serviceId"].as_str().map(str::to_owned))
        .collect();
    let reads = join_all(ids.iter().map(|id| {
        let url = format!("{base}/v4/default/registry/microservices/{id}/instances");
        async move { (get(client, &url).await, url) }
    }))
    .await;
    let mut holding = Holding::default();
    for (read, url) in reads {
        let text = match read {
            Ok(text) => text,
            // A service deleted between the two calls.
            Err(e) if e.contains(" 400 ") => continue,
            Err(e) => return Err(e),
        };
        let v: Value = serde_json::from_str(&text).map_err(|e| format!("{url}: {e}"))?;
        for i in v["instances"].as_array().into_iter().flatten() {
            let text_of = |key: &str| i[key].as_str().unwrap_or_default().to_owned();
            let host = text_of("hostName");
            let seen = Seen {
                instance_id: text_of("instanceId"),
                status: text_of("status"),
                properties: i["properties"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                    .collect(),
            };
            if seen.properties.contains_key(ORIGIN) || seen.instance_id.starts_with("syncer-") {
                holding.copies.entry(host).or_default().push(seen);
            } else {
                holding.locals.insert(host, seen);
            }
        }
    }
    Ok(holding)
}

async fn get(client: &reqwest::Client, url: &str) -> Result<String, String> {
    let response = client
        .get(url)
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    if status == 200 {
        Ok(text)
    } else {
        Err(format!("GET {url}: {status} {text}"))
    }
}

/// A broken promise.
#[derive(Debug, Clone)]
pub struct Violation {
    pub at: Duration,
    pub kind: &'static str,
    pub detail: String,
}

/// What the checker knows about faults: per pair of data centres, whether one is in force and
/// when the last one ended; when a registry lost its data.
pub trait FaultView {
    /// `None` while a fault touches the pair `a`-`b`; else since when it has been quiet.
    fn quiet_since(&self, a: usize, b: usize) -> Option<Instant>;
    /// When the registry of `dc` last lost its data.
    fn last_wipe(&self, dc: usize) -> Option<Instant>;
    /// When the registry of `dc` last answered from an empty view (lost its data, or
    /// restarting): syncer then holds removals of its instances for
    /// `syncer::sync::hold::MASS_REMOVAL_HOLD`.
    fn last_vanish(&self, dc: usize) -> Option<Instant>;
}

/// How a pair (origin -> importer) differs from an exact mirror.
#[derive(Debug, Default)]
pub struct PairDiff {
    pub missing: Vec<String>,
    pub drifted: Vec<String>,
    pub stale: Vec<String>,
}

impl PairDiff {
    pub fn is_exact(&self) -> bool {
        self.missing.is_empty() && self.drifted.is_empty() && self.stale.is_empty()
    }
}

pub struct Checker {
    pub dcs: usize,
    started: Instant,
    /// Copies present at the last check: (importer, host).
    present: HashSet<(usize, String)>,
    /// Copies found missing once (reported if missing again).
    missing_once: HashSet<(usize, String)>,
    /// Already reported (kind, importer, host), so one problem is one violation.
    reported: HashSet<(&'static str, usize, String)>,
    pub violations: Vec<Violation>,
    pub checks: u64,
    /// Copies of a wiped registry's instances removed elsewhere (allowed, counted).
    pub removed_after_wipe: u64,
    /// Copies a wiped registry lost with its data (allowed, counted; they come back).
    pub lost_with_registry: u64,
}

impl Checker {
    pub fn new(dcs: usize, started: Instant) -> Checker {
        Checker {
            dcs,
            started,
            present: HashSet::new(),
            missing_once: HashSet::new(),
            reported: HashSet::new(),
            violations: Vec::new(),
            checks: 0,
            removed_after_wipe: 0,
            lost_with_registry: 0,
        }
    }

    fn violate(&mut self, kind: &'static str, importer: usize, host: &str, detail: String) {
        if self.reported.insert((kind, importer, host.to_owned())) {
            self.violations.push(Violation {
                at: self.started.elapsed(),
                kind,
                detail,
            });
        }
    }

    /// One check of every invariant; `holdings[dc - 1]` is `None` when a registry could not
    /// be read (it is skipped this time).
    pub fn check(
        &mut self,
        holdings: &[Option<Holding>],
        ledger: &SharedLedger,
        faults: &dyn FaultView,
    ) {
        self.checks += 1;
        let now = Instant::now();
        let entries: BTreeMap<String, Entry> = churn::lock(ledger).entries.clone();
        let mut present = HashSet::new();
        for importer in 1..=self.dcs {
            let Some(holding) = &holdings[importer - 1] else {
                // Unknown this time: keep what was known.
                present.extend(self.present.iter().filter(|(i, _)| *i == importer).cloned());
                continue;
            };
            for (host, copies) in &holding.copies {
                let origin = origin_of_host(host);
                if copies.len() > 1 {
                    let ids: Vec<&str> = copies.iter().map(|c| c.instance_id.as_str()).collect();
                    self.violate(
                        "duplicate copies",
                        importer,
                        host,
                        format!(
                            "dc{importer} holds {} copies of {host}: {ids:?}",
                            copies.len()
                        ),
                    );
                }
                for copy in copies {
                    let marked = copy.properties.get(ORIGIN).map(String::as_str);
                    let true_origin = origin.map(|o| format!("dc{o}"));
                    if origin == Some(importer) || marked != true_origin.as_deref() {
                        self.violate(
                            "copy of a copy",
                            importer,
                            host,
                            format!(
                                "dc{importer} holds copy {} of {host} marked origin {marked:?}; registered in {true_origin:?}",
                                copy.instance_id
                            ),
                        );
                    }
                }
                present.insert((importer, host.clone()));
                self.missing_once.remove(&(importer, host.clone()));
                // Stale: the origin instance is gone and the pair has been quiet long enough.
                let (Some(origin), Some(entry)) = (origin, entries.get(host)) else {
                    continue;
                };
                let (Some(gone), Some(quiet)) =
                    (entry.gone_since(), faults.quiet_since(origin, importer))
                else {
                    continue;
                };
                let mut from = gone.max(quiet);
                if let Some(vanished) = faults.last_vanish(origin) {
                    from = from.max(vanished + MASS_REMOVAL_HOLD);
                }
                if now > from + STALE_BOUND
                    && holdings[origin - 1]
                        .as_ref()
                        .is_some_and(|h| !h.locals.contains_key(host))
                {
                    self.violate(
                        "stale copy",
                        importer,
                        host,
                        format!(
                            "dc{importer} still holds a copy of {host} {:?} after its origin instance went and the pair was quiet",
                            now - from
                        ),
                    );
                }
            }
        }
        // Copies that disappeared while their origin instance is alive.
        for (importer, host) in self.present.clone() {
            if present.contains(&(importer, host.clone())) {
                continue;
            }
            let Some(origin) = origin_of_host(&host) else {
                continue;
            };
            let Some(entry) = entries.get(&host) else {
                continue;
            };
            let alive = entry.life == Life::Alive && now.duration_since(entry.changed) > SETTLE;
            let origin_holds = holdings[origin - 1]
                .as_ref()
                .is_some_and(|h| h.locals.contains_key(&host));
            if !alive || !origin_holds {
                continue;
            }
            let wiped_lately = |dc: usize| {
                faults
                    .last_wipe(dc)
                    .is_some_and(|at| now.duration_since(at) < CONVERGE_BOUND)
            };
            if wiped_lately(importer) {
                // The registry lost them with its data; syncer puts them back.
                self.lost_with_registry += 1;
                continue;
            }
            if wiped_lately(origin) {
                self.removed_after_wipe += 1;
                continue;
            }
            if self.missing_once.insert((importer, host.clone())) {
                // Missing once; keep it in view for the next check.
                present.insert((importer, host));
                continue;
            }
            self.missing_once.remove(&(importer, host.clone()));
            self.violate(
                "copy removed while its origin is alive",
                importer,
                &host,
                format!("dc{importer} lost its copy of {host} (origin dc{origin}) at two checks in a row while the origin instance is registered"),
            );
        }
        self.present = present;
    }

    /// How importer `to` differs from an exact mirror of origin `from` (changes younger than
    /// the settle time left out).
    pub fn pair_diff(
        holdings: &[Option<Holding>],
        entries: &BTreeMap<String, Entry>,
        from: usize,
        to: usize,
    ) -> Option<PairDiff> {
        let (Some(origin), Some(importer)) = (&holdings[from - 1], &holdings[to - 1]) else {
            return None;
        };
        let now = Instant::now();
        let settled = |host: &str| {
            entries
                .get(host)
                .is_some_and(|e| now.duration_since(e.changed) > SETTLE)
        };
        let mut diff = PairDiff::default();
        for (host, local) in &origin.locals {
            let Some(entry) = entries.get(host) else {
                continue;
            };
            if entry.life != Life::Alive || !settled(host) {
                continue;
            }
            match importer.copies.get(host).and_then(|c| c.first()) {
                None => diff.missing.push(host.clone()),
                Some(copy) => {
                    let mut props = copy.properties.clone();
                    props.remove(ORIGIN);
                    if copy.status != local.status || props != local.properties {
                        diff.drifted.push(host.clone());
                    }
                }
            }
        }
        let hosts: BTreeSet<&String> = importer
            .copies
            .keys()
            .filter(|h| origin_of_host(h) == Some(from))
            .collect();
        for host in hosts {
            let gone = entries
                .get(host)
                .and_then(Entry::gone_since)
                .is_some_and(|at| now > at + SETTLE);
            if gone && !origin.locals.contains_key(host) {
                diff.stale.push(host.clone());
            }
        }
        Some(diff)
    }

    /// Every pair of data centres.
    pub fn all_pairs(&self) -> BTreeSet<(usize, usize)> {
        let mut pairs = BTreeSet::new();
        for a in 1..=self.dcs {
            for b in a + 1..=self.dcs {
                pairs.insert((a, b));
            }
        }
        pairs
    }

    /// Whether the `pairs` of data centres mirror each other exactly now (both ways).
    pub fn converged(
        &self,
        holdings: &[Option<Holding>],
        ledger: &SharedLedger,
        pairs: &BTreeSet<(usize, usize)>,
    ) -> Result<(), String> {
        let entries = churn::lock(ledger).entries.clone();
        for &(a, b) in pairs {
            for (from, to) in [(a, b), (b, a)] {
                match Checker::pair_diff(holdings, &entries, from, to) {
                    None => return Err(format!("dc{from} -> dc{to}: a registry was not read")),
                    Some(diff) if !diff.is_exact() => {
                        return Err(format!(
                            "dc{from} -> dc{to}: missing {:?}, drifted {:?}, stale {:?}",
                            first(&diff.missing),
                            first(&diff.drifted),
                            first(&diff.stale)
                        ));
                    }
                    Some(_) => {}
                }
            }
        }
        Ok(())
    }
}

fn first(list: &[String]) -> String {
    let shown: Vec<&str> = list.iter().take(3).map(String::as_str).collect();
    if list.len() > 3 {
        format!("{} of {}: {shown:?}", 3, list.len())
    } else {
        format!("{shown:?}")
    }
}

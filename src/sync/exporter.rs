//! The export side at run time: one task reads the local registry's change feed into the
//! export view ([`ExportView`], held in a [`SharedExportView`] that pulls and the pushers
//! read) and announces the new revision in the gossip pool. Its feed comes through
//! `sync::local`, which took syncer's own copies out for the importers before. What the
//! service filter (`--include`, `--exclude`) does not offer is kept back here.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::export::{ExportView, ExportViewSnapshot, Increment, Revision, Since};
use super::hold::RemovalHold;
use super::metrics::SyncMetrics;
use super::unix_ms;
use crate::backoff::sleep_or_cancel;
use crate::gossip::GossipHandle;
use crate::registry::bounds;
use crate::registry::filter::ServiceFilter;
use crate::registry::{Change, ChangeFeed, Instance, Service, Tenant};

/// Increments kept for peers that are a little behind; older peers get a snapshot.
pub(crate) const OUTBOX: usize = 20_000;
/// Revision announcements in the gossip pool are at most this frequent.
pub(crate) const ANNOUNCE_EVERY: Duration = Duration::from_millis(200);
/// Pause after a failed feed read (constant: the feed is the local registry, which the
/// adapter already retries; one read a second notices its return quickly).
const FEED_RETRY: Duration = Duration::from_secs(1);
/// Tag of a revision announcement in a gossip user event.
const ANNOUNCE_TAG: u8 = b'R';

/// The export view shared by the exporter (its one writer), the pushers and pulls
/// (readers), with a watch of its revision and whether it is complete yet.
#[derive(Debug)]
pub(crate) struct SharedExportView {
    /// This data centre's name: the origin of everything exported.
    pub cluster: String,
    view: Mutex<ExportView>,
    revision: watch::Sender<Revision>,
    /// Set once the local registry was read in full: before that the view is not a
    /// snapshot, and serving it would make peers remove copies.
    ready: AtomicBool,
}

impl SharedExportView {
    pub(crate) fn new(cluster: String, epoch: u64) -> SharedExportView {
        let view = ExportView::new(epoch, OUTBOX);
        let (revision, _) = watch::channel(view.revision());
        SharedExportView {
            cluster,
            view: Mutex::new(view),
            revision,
            ready: AtomicBool::new(false),
        }
    }

    fn view(&self) -> std::sync::MutexGuard<'_, ExportView> {
        self.view.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the view holds the whole local registry.
    /// Whether service `service_id` of `tenant` is exported now.
    pub(crate) fn exports_service(&self, tenant: &Tenant, service_id: &str) -> bool {
        self.view().exports_service(tenant, service_id)
    }

    pub(crate) fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    pub(crate) fn revision(&self) -> Revision {
        *self.revision.borrow()
    }

    pub(crate) fn watch(&self) -> watch::Receiver<Revision> {
        self.revision.subscribe()
    }

    /// What a peer that applied everything up to `after` needs: the increments (none when it
    /// is up to date), or `None` when it needs a snapshot.
    pub(crate) fn since(&self, after: Revision) -> Option<Vec<Increment>> {
        match self.view().since(after) {
            Since::UpToDate => Some(Vec::new()),
            Since::Snapshot => None,
            Since::Increments(changes) => Some(changes),
        }
    }

    /// Exported instances and services.
    pub(crate) fn counts(&self) -> (usize, usize) {
        self.view().counts()
    }

    pub(crate) fn snapshot(&self) -> ExportViewSnapshot {
        self.view().snapshot()
    }

    /// Applies a batch of feed changes, less the removals `hold` keeps back (and plus those
    /// it releases); returns how many exported changes it made.
    fn apply(&self, changes: Vec<Change>, hold: &mut RemovalHold, metrics: &SyncMetrics) -> usize {
        let now = unix_ms();
        let mut view = self.view();
        let mut changes = hold.filter(changes, &view, Instant::now());
        changes.extend(hold.release(&view, Instant::now()));
        metrics
            .removals_held
            .set(saturating_i64(hold.held() as u64));
        let made: usize = changes
            .into_iter()
            .map(|change| view.apply_seen(change, now).len())
            .sum();
        let revision = view.revision();
        metrics.exported_seq.set(saturating_i64(revision.seq));
        if made > 0 {
            metrics
                .exported_instances
                .set(saturating_i64(view.len() as u64));
        }
        drop(view);
        self.revision.send_if_modified(|r| {
            let changed = *r != revision;
            *r = revision;
            changed
        });
        made
    }
}

pub(crate) fn saturating_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// "Data centre `cluster` is at revision `(epoch, seq)`", gossiped after changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Announce {
    pub cluster: String,
    pub epoch: u64,
    pub seq: u64,
}

impl Announce {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = vec![ANNOUNCE_TAG];
        // Encoding a struct of strings and integers into a Vec cannot fail.
        out.extend(postcard::to_allocvec(self).unwrap_or_default());
        out
    }

    /// `None` for payloads that are not announcements (other event kinds, garbage).
    pub(crate) fn decode(payload: &[u8]) -> Option<Announce> {
        match payload.split_first() {
            Some((&ANNOUNCE_TAG, body)) => postcard::from_bytes(body).ok(),
            _ => None,
        }
    }
}

/// What the export side is told to do.
pub(crate) struct ExportSettings {
    /// Export at all (`task.kind: idle` turns it off).
    pub enabled: bool,
    /// The mass removal hold (`--removal-hold`; zero: none).
    pub removal_hold: Duration,
    /// What is offered (`--include`, `--exclude`).
    pub filter: Arc<ServiceFilter>,
}

/// Runs the export side until `token` is cancelled.
pub(crate) async fn run(
    mut feed: Box<dyn ChangeFeed>,
    exported: Arc<SharedExportView>,
    settings: ExportSettings,
    gossip: GossipHandle,
    metrics: SyncMetrics,
    token: CancellationToken,
) {
    let mut announced = Revision::default();
    let mut next_announce: Option<Instant> = None;
    let mut last_announce = Instant::now() - ANNOUNCE_EVERY;
    let mut failures = 0u32;
    let mut first = true;
    let export_enabled = settings.enabled;
    let mut hold = RemovalHold::new(settings.removal_hold);
    let mut bounds_filter = BoundsFilter {
        refused: HashSet::new(),
        metrics: metrics.clone(),
        filter: settings.filter,
        filtered: HashSet::new(),
    };
    loop {
        let batch = tokio::select! {
            biased;
            () = token.cancelled() => return,
            () = sleep_until_opt(next_announce) => {
                next_announce = None;
                let revision = exported.revision();
                if revision != announced {
                    announce(&gossip, &exported.cluster, revision).await;
                    announced = revision;
                    last_announce = Instant::now();
                }
                continue;
            }
            () = sleep_until_opt(hold.deadline()) => {
                // The mass removal hold ran out: what did not come back goes now.
                if exported.apply(Vec::new(), &mut hold, &metrics) > 0 && next_announce.is_none() {
                    next_announce = Some((last_announce + ANNOUNCE_EVERY).max(Instant::now()));
                }
                continue;
            }
            batch = feed.next() => batch,
        };
        let changes = match batch {
            Ok(changes) => {
                if failures > 0 {
                    info!(failures, "the local registry answers again");
                }
                failures = 0;
                changes
            }
            Err(e) => {
                failures += 1;
                if failures == 1 || failures.is_multiple_of(30) {
                    warn!(error = %e, failures, "cannot read the local registry's changes");
                }
                if !sleep_or_cancel(FEED_RETRY, &token).await {
                    return;
                }
                continue;
            }
        };
        if changes.is_empty() {
            continue;
        }
        let full = changes.iter().any(|c| matches!(c, Change::Resync(_)));
        if !export_enabled {
            if full {
                exported
                    .ready
                    .store(true, std::sync::atomic::Ordering::SeqCst);
            }
            continue;
        }
        let changes = bounds_filter.filter(changes);
        let made = exported.apply(changes, &mut hold, &metrics);
        if full {
            exported
                .ready
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
        if first && full {
            first = false;
            let instances = exported.view().len();
            info!(instances, revision = ?exported.revision(), "local registry read; exporting");
        }
        if made > 0 {
            debug!(made, revision = ?exported.revision(), "exported changes");
            if next_announce.is_none() {
                next_announce = Some((last_announce + ANNOUNCE_EVERY).max(Instant::now()));
            }
        }
    }
}

/// Most refused local objects remembered, so each is logged once.
const REFUSED_MEMORY: usize = 10_000;

/// Drops local services and instances that other data centres would refuse (outside the
/// wire-safety bounds every registry shares: oversized, control characters, a required field
/// empty): one odd object must not make every snapshot of this data centre unusable. Each is
/// logged once and counted.
///
/// It also keeps back the services the service filter (`--include`, `--exclude`) does not
/// offer, and their instances: those are not errors, logged once at info.
struct BoundsFilter {
    refused: HashSet<String>,
    metrics: SyncMetrics,
    filter: Arc<ServiceFilter>,
    /// Local services the filter keeps back, whose instances are kept back with them.
    filtered: HashSet<(Tenant, String)>,
}

impl BoundsFilter {
    fn refuse(&mut self, what: String, e: &bounds::BoundsError) {
        self.metrics.reject("export", e.reason());
        if self.refused.len() < REFUSED_MEMORY && self.refused.insert(what.clone()) {
            warn!(object = %what, error = %e, "not exported: other data centres would refuse it");
        }
    }

    fn service(&mut self, s: &Service) -> bool {
        let key = (s.tenant.clone(), s.service_id.clone());
        if !self.filter.allows(s) {
            let what = format!("{}/{}/{}", s.tenant, s.app, s.name);
            if self.refused.len() < REFUSED_MEMORY && self.refused.insert(format!("filter {what}"))
            {
                info!(service = %what, filter = %self.filter, "not exported: the service filter keeps it back");
            }
            self.filtered.insert(key);
            return false;
        }
        self.filtered.remove(&key);
        let checked = bounds::check_service(s);
        if let Err(e) = &checked {
            self.refuse(format!("service {}/{}", s.tenant, s.service_id), e);
        }
        checked.is_ok()
    }

    fn instance(&mut self, i: &Instance) -> bool {
        if !self.filtered.is_empty()
            && self
                .filtered
                .contains(&(i.tenant.clone(), i.service_id.clone()))
        {
            return false;
        }
        let checked = bounds::check_instance(i);
        if let Err(e) = &checked {
            self.refuse(format!("instance {}", i.reference()), e);
        }
        checked.is_ok()
    }

    fn filter(&mut self, changes: Vec<Change>) -> Vec<Change> {
        changes
            .into_iter()
            .filter_map(|change| match change {
                Change::Service(s) => self.service(&s).then_some(Change::Service(s)),
                Change::Instance(i) => self.instance(&i).then_some(Change::Instance(i)),
                Change::Resync(mut snapshot) => {
                    self.filtered.clear();
                    snapshot.services.retain(|s| self.service(s));
                    snapshot.instances.retain(|i| self.instance(i));
                    Some(Change::Resync(snapshot))
                }
                other => Some(other),
            })
            .collect()
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn announce(gossip: &GossipHandle, cluster: &str, revision: Revision) {
    let payload = Announce {
        cluster: cluster.to_owned(),
        epoch: revision.epoch,
        seq: revision.seq,
    }
    .encode();
    if let Err(e) = gossip.broadcast(payload).await {
        debug!(error = %e, "revision not announced");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcements_round_trip_and_garbage_is_ignored() {
        let a = Announce {
            cluster: "dc1".into(),
            epoch: 9,
            seq: 42,
        };
        assert_eq!(Announce::decode(&a.encode()), Some(a));
        assert_eq!(Announce::decode(b""), None);
        assert_eq!(Announce::decode(b"Rxx"), None);
        assert_eq!(Announce::decode(b"X\x03dc1"), None);
    }
}

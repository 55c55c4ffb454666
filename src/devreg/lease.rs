//! Instance leases and deletion (reference §4).
//!
//! A lease lasts `interval × (times + 1)` seconds times `lease_scale`; heartbeats (and
//! re-registering the same id) renew it, and on expiry the instance is deleted and watchers
//! get `DELETE`. One task ([`lease_loop`]) sleeps until the earliest deadline.
//!
//! In real-SC mode deletions go through SC's `InstanceEventDeferHandler`
//! (`server/core/backend/defer_instance.go`): the instance is gone for store-level operations at
//! once (heartbeat answers `400017`), but find/list/get, the dump and the `DELETE` event only
//! see the deletion at the next check tick, 2 s after the first pending deletion. With
//! self-preservation, when ≥ 80 % of more than 5 cached instances are pending deletion, SC keeps
//! serving them, each for up to its own TTL (max 600 s), until every pending one has run out.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, sleep_until};
use tracing::{debug, warn};

use super::state::{Action, Registry, Store};

/// `deferCheckWindow`: time from the first pending deletion to the check tick.
pub const DELETE_CHECK_WINDOW: Duration = Duration::from_secs(2);
/// `selfPreservationInitCount`: self-preservation needs more cached instances than this.
const SELF_PRESERVATION_MIN_INSTANCES: usize = 5;
/// `selfPreservationPercentage`.
const SELF_PRESERVATION_RATIO: f64 = 0.8;
/// `selfPreservationMaxTTL` in seconds.
const SELF_PRESERVATION_MAX_TTL_SECS: i64 = 600;

/// State of the delete check window.
#[derive(Debug, Default)]
pub struct Deferral {
    /// When the next check tick runs; `None` while nothing is pending.
    pub next_tick: Option<Instant>,
    /// A pending deletion already scheduled the tick (SC's timer reset flag).
    pub armed: bool,
    /// Self-preservation is on.
    pub preserving: bool,
}

impl Registry {
    /// Whether deletions go through the check window.
    pub fn defers_deletes(&self) -> bool {
        self.config.delete_check_window || self.config.self_preservation
    }

    /// Deletes a live instance (unregister or lease expiry): at once, or through the check
    /// window in real-SC mode. Returns `false` when there is no live instance.
    pub fn delete_instance(&self, store: &mut Store, tenant: &str, sid: &str, iid: &str) -> bool {
        let now = Instant::now();
        let deferring = self.defers_deletes();
        let t = store.tenant_mut(tenant);
        let Some(entry) = t.live_instance_mut(sid, iid) else {
            return false;
        };
        if deferring {
            let hc = entry.instance.health_check.clone().unwrap_or_default();
            let mut secs = i64::from(hc.interval.wrapping_mul(hc.times.wrapping_add(1)));
            if secs <= 0 || secs > SELF_PRESERVATION_MAX_TTL_SECS {
                secs = SELF_PRESERVATION_MAX_TTL_SECS;
            }
            entry.deferred = Some(self.scaled_ttl(secs));
            self.after_deferral(store, now);
            return true;
        }
        if let Some(entry) = t.instances.remove(&(sid.to_owned(), iid.to_owned())) {
            store.notify(tenant, sid, Action::Delete, &entry.instance);
        }
        true
    }

    fn after_deferral(&self, store: &mut Store, now: Instant) {
        if !store.deferral.preserving && self.config.self_preservation {
            let total = store.instance_count();
            let pending = pending_count(store);
            if total > SELF_PRESERVATION_MIN_INSTANCES
                && pending as f64 >= total as f64 * SELF_PRESERVATION_RATIO
            {
                store.deferral.preserving = true;
                warn!(
                    pending,
                    total, "self preservation is enabled, deletions are deferred"
                );
            }
        }
        if !store.deferral.armed {
            store.deferral.armed = true;
            store.deferral.next_tick = Some(now + DELETE_CHECK_WINDOW);
            self.lease_wakeup.notify_one();
        }
    }

    /// Expires leases and runs the check tick, as of `now`.
    fn expire(&self, store: &mut Store, now: Instant) {
        let expired: Vec<(String, String, String)> = store
            .tenants
            .iter()
            .flat_map(|(name, t)| {
                t.instances
                    .iter()
                    .filter(|(_, e)| e.is_live() && !e.pinned && e.expires_at <= now)
                    .map(move |((sid, iid), _)| (name.clone(), sid.clone(), iid.clone()))
            })
            .collect();
        for (tenant, sid, iid) in expired {
            debug!(%tenant, service = %sid, instance = %iid, "lease expired");
            self.delete_instance(store, &tenant, &sid, &iid);
        }
        if store.deferral.next_tick.is_some_and(|t| t <= now) {
            check_tick(store);
            store.deferral.next_tick =
                (pending_count(store) > 0).then(|| now + DELETE_CHECK_WINDOW);
        }
    }

    /// The earliest moment [`Registry::expire`] has something to do.
    fn next_deadline(store: &Store) -> Option<Instant> {
        let leases = store
            .tenants
            .values()
            .flat_map(|t| t.instances.values())
            .filter(|e| e.is_live() && !e.pinned)
            .map(|e| e.expires_at)
            .min();
        match (leases, store.deferral.next_tick) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

fn pending_count(store: &Store) -> usize {
    store
        .tenants
        .values()
        .flat_map(|t| t.instances.values())
        .filter(|e| !e.is_live())
        .count()
}

/// SC's check tick: without self-preservation every pending deletion becomes visible; with
/// it, each one's budget shrinks by the window and only exhausted ones are released.
fn check_tick(store: &mut Store) {
    store.deferral.armed = false;
    let preserving = store.deferral.preserving;
    let mut released = Vec::new();
    for (name, t) in &mut store.tenants {
        for ((sid, iid), e) in &mut t.instances {
            let Some(left) = e.deferred.as_mut() else {
                continue;
            };
            if preserving {
                *left = left.saturating_sub(DELETE_CHECK_WINDOW);
                if !left.is_zero() {
                    continue;
                }
            }
            released.push((name.clone(), sid.clone(), iid.clone()));
        }
    }
    for (tenant, sid, iid) in released {
        let removed = store
            .tenant_mut(&tenant)
            .instances
            .remove(&(sid.clone(), iid));
        if let Some(entry) = removed {
            store.notify(&tenant, &sid, Action::Delete, &entry.instance);
        }
    }
    if preserving && pending_count(store) == 0 {
        store.deferral.preserving = false;
        warn!("self preservation is stopped");
    }
}

/// Sleeps until the next lease deadline or check tick, then applies it; stops with the
/// registry.
pub async fn lease_loop(reg: Arc<Registry>) {
    loop {
        let next = Registry::next_deadline(&reg.lock());
        let far = Instant::now() + Duration::from_secs(3600);
        tokio::select! {
            biased;
            () = reg.shutdown.cancelled() => break,
            () = reg.lease_wakeup.notified() => continue,
            () = sleep_until(next.unwrap_or(far)) => {}
        }
        let mut store = reg.lock();
        reg.expire(&mut store, Instant::now());
    }
}

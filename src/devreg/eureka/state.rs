//! The registry of one Eureka emulator: leases by app and id, status overrides, the
//! recently-changed queue behind `/apps/delta`, and the renewal bookkeeping of
//! self-preservation (reference §2–§6, `AbstractInstanceRegistry` and
//! `PeerAwareInstanceRegistryImpl`).
//!
//! Everything sits in one [`Store`] behind a `std::sync::Mutex`: every operation is a short
//! critical section that never awaits. Time is Unix milliseconds from [`Clock`], which reads the
//! wall clock once and then follows tokio's clock, so a paused test clock drives leases,
//! eviction, the delta queue and the timestamps shown.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use rand::seq::SliceRandom;
use tokio::time::Instant;
use tracing::debug;

use super::EurekaDevConfig;
use super::model::{ActionType, AppView, Instance, LeaseTimes, Record, Status, hash_of};

/// Unix milliseconds: a wall-clock base read once, plus tokio's elapsed time.
#[derive(Debug)]
pub struct Clock {
    base_ms: i64,
    start: Instant,
}

impl Clock {
    pub fn new() -> Self {
        let base_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 2))
            .unwrap_or(0);
        Clock {
            base_ms,
            start: Instant::now(),
        }
    }

    /// Current Unix time in ms.
    pub fn now_ms(&self) -> i64 {
        let elapsed = i64::try_from(self.start.elapsed().as_millis()).unwrap_or(i64::MAX / 4);
        self.base_ms.saturating_add(elapsed)
    }
}

/// One instance's lease (`Lease<InstanceInfo>`).
#[derive(Clone, Debug)]
pub struct Lease {
    /// The record with its lease timestamps; `record.lease.last_renewal` is the lease's
    /// `lastUpdateTimestamp`.
    pub record: Record,
    /// Lease duration in ms.
    pub duration_ms: i64,
    /// Which lease this is: a new one for every registration, so the delta can tell an entry
    /// of the current lease (shown live) from one of an earlier lease (shown as it was).
    pub generation: u64,
}

impl Lease {
    /// `Lease.isExpired`: cancelled, or past `lastUpdate + duration`.
    fn is_expired(&self, now: i64) -> bool {
        self.record.lease.eviction > 0
            || now
                > self
                    .record
                    .lease
                    .last_renewal
                    .saturating_add(self.duration_ms)
    }
}

/// An entry of the recently-changed queue.
#[derive(Clone, Debug)]
pub struct Change {
    /// When it was queued (Unix ms).
    pub at: i64,
    pub app: String,
    pub id: String,
    pub generation: u64,
    /// The record as it was then (used once the lease is gone or replaced).
    pub snapshot: Record,
}

/// The data of one emulator.
#[derive(Debug, Default)]
pub struct Store {
    /// App name (upper case) → id → lease. Apps without leases are removed.
    pub apps: BTreeMap<String, BTreeMap<String, Lease>>,
    /// Status overrides by instance id (`overriddenInstanceStatusMap`).
    pub overrides: HashMap<String, Status>,
    /// The recently-changed queue, oldest first.
    pub recent: VecDeque<Change>,
    /// `versions__delta`: bumped whenever a delta payload is built.
    pub delta_version: i64,
    /// `expectedNumberOfClientsSendingRenews`.
    pub expected_renewals: i64,
    /// `numberOfRenewsPerMinThreshold`.
    pub renewal_threshold: i64,
    /// Renewals counted in the running minute and the previous full one.
    pub renews_this_minute: u64,
    pub renews_last_minute: u64,
    next_generation: u64,
}

impl Store {
    fn lease(&self, app: &str, id: &str) -> Option<&Lease> {
        self.apps.get(app).and_then(|m| m.get(id))
    }

    fn lease_mut(&mut self, app: &str, id: &str) -> Option<&mut Lease> {
        self.apps.get_mut(app).and_then(|m| m.get_mut(id))
    }

    /// Number of leases.
    pub fn size(&self) -> usize {
        self.apps.values().map(BTreeMap::len).sum()
    }

    fn all_records(&self) -> impl Iterator<Item = &Record> {
        self.apps
            .values()
            .flat_map(|m| m.values().map(|l| &l.record))
    }

    fn push_change(&mut self, now: i64, app: &str, id: &str) {
        if let Some(l) = self.lease(app, id) {
            let change = Change {
                at: now,
                app: app.to_owned(),
                id: id.to_owned(),
                generation: l.generation,
                snapshot: l.record.clone(),
            };
            self.recent.push_back(change);
        }
    }
}

/// The overridden-status rules (§4.3), first match wins: the record's own DOWN/STARTING/
/// UNKNOWN; an override; (not replicated) an existing lease's UP/OUT_OF_SERVICE; the
/// record's status.
fn rule_status(
    own: Status,
    override_status: Option<Status>,
    existing: Option<Status>,
    replication: bool,
) -> Status {
    if !matches!(own, Status::Up | Status::OutOfService) {
        return own;
    }
    if let Some(o) = override_status {
        return o;
    }
    if !replication
        && let Some(e) = existing
        && matches!(e, Status::Up | Status::OutOfService)
    {
        return e;
    }
    own
}

/// Outcome of a renewal's dirty-timestamp check (§3.4).
#[derive(Debug)]
pub enum RenewOutcome {
    /// 200.
    Ok,
    /// 404: no lease, the rules give UNKNOWN, or the client's stamp is newer.
    NotFound,
    /// 409 with the stored record (replication only).
    Conflict(Box<Record>),
}

/// The registry state and the operations of every endpoint.
#[derive(Debug)]
pub struct Registry {
    pub config: EurekaDevConfig,
    pub clock: Clock,
    store: Mutex<Store>,
}

impl Registry {
    pub fn new(config: EurekaDevConfig) -> Self {
        let mut store = Store {
            expected_renewals: config.initial_expected_renewals,
            delta_version: 0,
            ..Store::default()
        };
        store.renewal_threshold = threshold(&config, store.expected_renewals);
        Registry {
            config,
            clock: Clock::new(),
            store: Mutex::new(store),
        }
    }

    /// Locks the store; a poisoned lock still gives the data (every critical section leaves it
    /// consistent before anything could panic).
    pub fn lock(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `isLeaseExpirationEnabled`: always without self-preservation; with it, only while the
    /// renewals of the last full minute exceed the threshold.
    pub fn expiry_enabled(&self, store: &Store) -> bool {
        !self.config.self_preservation
            || (store.renewal_threshold > 0
                && store.renews_last_minute > u64::try_from(store.renewal_threshold).unwrap_or(0))
    }

    fn renew_time(&self, now: i64, duration_ms: i64) -> i64 {
        if self.config.lease_bug {
            now.saturating_add(duration_ms)
        } else {
            now
        }
    }

    /// Registers (`AbstractInstanceRegistry.register`, §2.3). The body was validated.
    pub fn register(&self, incoming: Instance, replication: bool) {
        let now = self.clock.now_ms();
        let mut store = self.lock();
        self.register_locked(&mut store, incoming, replication, now);
    }

    fn register_locked(&self, store: &mut Store, incoming: Instance, replication: bool, now: i64) {
        let app = incoming.app.clone();
        let id = incoming.id().to_owned();
        let existing = store
            .lease(&app, &id)
            .map(|l| (l.record.instance.clone(), l.record.lease.service_up));
        let mut inst = incoming;
        match &existing {
            Some((old, _)) if old.last_dirty > inst.last_dirty => {
                debug!(
                    app,
                    id, "register with an older lastDirtyTimestamp: record kept"
                );
                inst = old.clone();
            }
            Some(_) => {}
            None => {
                if store.expected_renewals > 0 {
                    store.expected_renewals += 1;
                    store.renewal_threshold = threshold(&self.config, store.expected_renewals);
                }
            }
        }
        if inst.overridden_status != Status::Unknown && !store.overrides.contains_key(&id) {
            store.overrides.insert(id.clone(), inst.overridden_status);
        }
        let override_status = store.overrides.get(&id).copied();
        if let Some(o) = override_status {
            inst.overridden_status = o;
        }
        let existing_status = existing.as_ref().map(|(old, _)| old.status);
        inst.status = rule_status(inst.status, override_status, existing_status, replication);
        let mut lease = LeaseTimes {
            registration: now,
            last_renewal: now,
            eviction: 0,
            service_up: existing.map_or(0, |(_, up)| up),
        };
        if inst.status == Status::Up && lease.service_up == 0 {
            lease.service_up = now;
        }
        inst.action_type = Some(ActionType::Added);
        inst.last_updated = now;
        let duration_ms = inst.duration_secs.saturating_mul(1000);
        store.next_generation += 1;
        let generation = store.next_generation;
        store.apps.entry(app.clone()).or_default().insert(
            id.clone(),
            Lease {
                record: Record {
                    instance: inst,
                    lease,
                },
                duration_ms,
                generation,
            },
        );
        store.push_change(now, &app, &id);
    }

    /// Renews a lease (`renew` + `InstanceResource.renewLease`, §3). `status` is ignored as
    /// Eureka ignores it; `last_dirty` is the client's stamp.
    pub fn renew(
        &self,
        app: &str,
        id: &str,
        last_dirty: Option<i64>,
        replication: bool,
    ) -> RenewOutcome {
        let now = self.clock.now_ms();
        let mut store = self.lock();
        let override_status = store.overrides.get(id).copied();
        let bug = self.config.lease_bug;
        let Some(lease) = store.lease_mut(app, id) else {
            return RenewOutcome::NotFound;
        };
        let own = lease.record.instance.status;
        let status = rule_status(own, override_status, Some(own), replication);
        if status == Status::Unknown {
            return RenewOutcome::NotFound;
        }
        lease.record.instance.status = status;
        lease.record.lease.last_renewal = if bug {
            now.saturating_add(lease.duration_ms)
        } else {
            now
        };
        let stored = lease.record.instance.last_dirty;
        let record = lease.record.clone();
        store.renews_this_minute += 1;
        match last_dirty {
            Some(t) if t > stored => RenewOutcome::NotFound,
            Some(t) if t < stored && replication => RenewOutcome::Conflict(Box::new(record)),
            _ => RenewOutcome::Ok,
        }
    }

    /// Cancels (`internalCancel`): `true` when a lease was removed. `by_client` also lowers the
    /// expected renewals (REST cancel; eviction does not).
    pub fn cancel(&self, app: &str, id: &str, by_client: bool) -> bool {
        let now = self.clock.now_ms();
        let mut store = self.lock();
        let removed = self.cancel_locked(&mut store, app, id, now);
        if removed && by_client && store.expected_renewals > 0 {
            store.expected_renewals -= 1;
            store.renewal_threshold = threshold(&self.config, store.expected_renewals);
        }
        removed
    }

    fn cancel_locked(&self, store: &mut Store, app: &str, id: &str, now: i64) -> bool {
        store.overrides.remove(id);
        let Some(map) = store.apps.get_mut(app) else {
            return false;
        };
        let Some(mut lease) = map.remove(id) else {
            return false;
        };
        if map.is_empty() {
            store.apps.remove(app);
        }
        lease.record.lease.eviction = now;
        lease.record.instance.action_type = Some(ActionType::Deleted);
        lease.record.instance.last_updated = now;
        store.recent.push_back(Change {
            at: now,
            app: app.to_owned(),
            id: id.to_owned(),
            generation: lease.generation,
            snapshot: lease.record,
        });
        true
    }

    /// The record as single-instance reads see it (`getInstanceByAppAndId`): `None` when
    /// missing, or expired while expiry is enabled.
    pub fn instance(&self, app: &str, id: &str) -> Option<Record> {
        let now = self.clock.now_ms();
        let store = self.lock();
        let lease = store.lease(app, id)?;
        if self.expiry_enabled(&store) && lease.is_expired(now) {
            return None;
        }
        Some(lease.record.clone())
    }

    /// `GET /instances/{id}`: the first app holding the id.
    pub fn instance_by_id(&self, id: &str) -> Option<Record> {
        let now = self.clock.now_ms();
        let store = self.lock();
        let expiry = self.expiry_enabled(&store);
        store
            .apps
            .values()
            .filter_map(|m| m.get(id))
            .find(|l| !(expiry && l.is_expired(now)))
            .map(|l| l.record.clone())
    }

    /// Status override (`statusUpdate`, §4.2). `false` when the lease is gone.
    pub fn set_status(&self, app: &str, id: &str, value: Status, last_dirty: Option<i64>) -> bool {
        let now = self.clock.now_ms();
        let mut store = self.lock();
        let renew_at = |d| self.renew_time(now, d);
        let Some(lease) = store.lease_mut(app, id) else {
            return false;
        };
        lease.record.lease.last_renewal = renew_at(lease.duration_ms);
        if lease.record.instance.status == value {
            return true;
        }
        if value == Status::Up && lease.record.lease.service_up == 0 {
            lease.record.lease.service_up = now;
        }
        let inst = &mut lease.record.instance;
        inst.overridden_status = value;
        inst.status = value;
        if let Some(t) = last_dirty
            && t > inst.last_dirty
        {
            inst.last_dirty = t;
        }
        inst.action_type = Some(ActionType::Modified);
        inst.last_updated = now;
        store.overrides.insert(id.to_owned(), value);
        store.push_change(now, app, id);
        true
    }

    /// Removes a status override (`deleteStatusOverride`, §4.4): the status becomes `value`
    /// (UNKNOWN when the request gave none). `false` when the lease is gone.
    pub fn delete_status_override(
        &self,
        app: &str,
        id: &str,
        value: Status,
        last_dirty: Option<i64>,
    ) -> bool {
        let now = self.clock.now_ms();
        let mut store = self.lock();
        let renew_at = |d| self.renew_time(now, d);
        let had_override = store.overrides.contains_key(id) && store.lease(app, id).is_some();
        let Some(lease) = store.lease_mut(app, id) else {
            return false;
        };
        lease.record.lease.last_renewal = renew_at(lease.duration_ms);
        if !had_override {
            return true;
        }
        let inst = &mut lease.record.instance;
        inst.overridden_status = Status::Unknown;
        inst.status = value;
        if let Some(t) = last_dirty
            && t > inst.last_dirty
        {
            inst.last_dirty = t;
        }
        inst.action_type = Some(ActionType::Modified);
        inst.last_updated = now;
        store.overrides.remove(id);
        store.push_change(now, app, id);
        true
    }

    /// Metadata merge (`updateMetadata`, §4.5): every pair is added or overwritten, then the
    /// record is registered again. `false` when not found.
    pub fn merge_metadata(&self, app: &str, id: &str, pairs: &[(String, String)]) -> bool {
        let now = self.clock.now_ms();
        let mut store = self.lock();
        let expiry = self.expiry_enabled(&store);
        let Some(lease) = store.lease(app, id) else {
            return false;
        };
        if expiry && lease.is_expired(now) {
            return false;
        }
        let mut inst = lease.record.instance.clone();
        let mut seen = std::collections::HashSet::new();
        for (k, v) in pairs {
            if seen.insert(k.as_str()) {
                inst.metadata.insert(k.clone(), v.clone());
            }
        }
        self.register_locked(&mut store, inst, false, now);
        true
    }

    /// Every app with its records, for `/apps` and the VIP reads; `filter` keeps records.
    pub fn with_apps<R>(
        &self,
        filter: impl Fn(&Record) -> bool,
        f: impl FnOnce(&[AppView<'_>], &str) -> R,
    ) -> R {
        let store = self.lock();
        let views: Vec<AppView<'_>> = store
            .apps
            .iter()
            .map(|(name, m)| AppView {
                name,
                instances: m
                    .values()
                    .map(|l| &l.record)
                    .filter(|r| filter(r))
                    .collect(),
            })
            .filter(|v| !v.instances.is_empty())
            .collect();
        let hash = hash_of(views.iter().flat_map(|v| v.instances.iter().copied()));
        f(&views, &hash)
    }

    /// The delta (§5.1): every queued instance once, in its current state when its lease is
    /// the queued one, else as queued; with the full-registry hash and a new version.
    pub fn with_delta<R>(&self, f: impl FnOnce(i64, &[AppView<'_>], &str) -> R) -> R {
        let mut store = self.lock();
        store.delta_version += 1;
        let version = store.delta_version;
        let store = &*store;
        let mut latest: BTreeMap<(&str, &str), &Change> = BTreeMap::new();
        for c in &store.recent {
            latest.insert((c.app.as_str(), c.id.as_str()), c);
        }
        let mut by_app: BTreeMap<&str, Vec<&Record>> = BTreeMap::new();
        for ((app, id), c) in latest {
            let record = match store.lease(app, id) {
                Some(l) if l.generation == c.generation => &l.record,
                _ => &c.snapshot,
            };
            by_app.entry(app).or_default().push(record);
        }
        let views: Vec<AppView<'_>> = by_app
            .into_iter()
            .map(|(name, instances)| AppView { name, instances })
            .collect();
        let hash = hash_of(store.all_records());
        f(version, &views, &hash)
    }

    /// One app (`GET /apps/{APP}`); `None` when unknown or empty.
    pub fn with_app<R>(&self, app: &str, f: impl FnOnce(&AppView<'_>) -> R) -> Option<R> {
        let store = self.lock();
        let (name, m) = store.apps.get_key_value(app)?;
        let view = AppView {
            name,
            instances: m.values().map(|l| &l.record).collect(),
        };
        (!view.instances.is_empty()).then(|| f(&view))
    }

    /// One eviction pass (`evict`): when expiry is enabled, cancels expired leases, at most
    /// `size − ⌊size × 0.85⌋` (chosen at random) when the cap is on. Returns how many.
    pub fn evict(&self) -> usize {
        let now = self.clock.now_ms();
        let mut store = self.lock();
        if !self.expiry_enabled(&store) {
            return 0;
        }
        let mut expired: Vec<(String, String)> = store
            .apps
            .iter()
            .flat_map(|(app, m)| {
                m.iter()
                    .filter(|(_, l)| l.is_expired(now))
                    .map(|(id, _)| (app.clone(), id.clone()))
            })
            .collect();
        if expired.is_empty() {
            return 0;
        }
        let size = store.size();
        let limit = if self.config.eviction_cap {
            size - (size as f64 * self.config.renewal_percent_threshold) as usize
        } else {
            size
        };
        let count = expired.len().min(limit);
        if count < expired.len() {
            expired.shuffle(&mut rand::rng());
            expired.truncate(count);
        }
        for (app, id) in &expired {
            debug!(app, id, "lease expired: evicted");
            self.cancel_locked(&mut store, app, id, now);
        }
        expired.len()
    }

    /// Drops delta entries older than the retention (`deltaRetentionTimer`).
    pub fn prune_delta(&self) {
        let now = self.clock.now_ms();
        let retention = i64::try_from(self.config.delta_retention.as_millis()).unwrap_or(i64::MAX);
        let mut store = self.lock();
        while store
            .recent
            .front()
            .is_some_and(|c| c.at < now.saturating_sub(retention))
        {
            store.recent.pop_front();
        }
    }

    /// The minute tick of the renewal rate (`MeasuredRate`).
    pub fn roll_renewal_minute(&self) {
        let mut store = self.lock();
        store.renews_last_minute = std::mem::take(&mut store.renews_this_minute);
    }

    /// The periodic threshold update (`updateRenewalThreshold`): the expected renewals follow
    /// the instance count when it exceeds 85 % of them, or always without self-preservation.
    pub fn update_renewal_threshold(&self) {
        let mut store = self.lock();
        let count = i64::try_from(store.size()).unwrap_or(i64::MAX);
        if count as f64 > self.config.renewal_percent_threshold * store.expected_renewals as f64
            || !self.config.self_preservation
        {
            store.expected_renewals = count;
            store.renewal_threshold = threshold(&self.config, count);
        }
    }
}

/// `numberOfRenewsPerMinThreshold` = ⌊expected × 60 / interval × percent⌋.
fn threshold(config: &EurekaDevConfig, expected: i64) -> i64 {
    let interval = config.expected_renewal_interval.as_secs_f64().max(1.0);
    (expected as f64 * (60.0 / interval) * config.renewal_percent_threshold) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_first_match_wins() {
        use Status::*;
        assert_eq!(rule_status(Down, Some(OutOfService), Some(Up), false), Down);
        assert_eq!(
            rule_status(Up, Some(OutOfService), None, false),
            OutOfService
        );
        assert_eq!(
            rule_status(Up, None, Some(OutOfService), false),
            OutOfService
        );
        assert_eq!(rule_status(Up, None, Some(OutOfService), true), Up);
        assert_eq!(rule_status(Unknown, None, Some(Up), false), Unknown);
        assert_eq!(
            rule_status(OutOfService, None, Some(Down), false),
            OutOfService
        );
    }
}

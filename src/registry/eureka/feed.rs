//! The change feed of the Eureka adapter: a full `GET /apps` first and every resync
//! interval (each a [`Change::Resync`]), and in between `GET /apps/delta` every poll
//! interval, applied to the feed's own copy of the registry the way Eureka's own client
//! does (reference §5.3): ADDED and MODIFIED replace a record, DELETED removes it, and the
//! full-registry hash recomputed over the copy (§5.2) must equal the delta's
//! `apps__hashcode`. A mismatch, or any answer but 200, costs a full read instead, and the
//! changes reported are then the difference between the model before and after
//! ([`crate::registry::model::diff`]). A delta that reconciles reports, for the records it
//! names, what [`crate::registry::model::diff`] would: a record whose model did not change
//! (the delta repeats every change for three minutes) reports nothing, so a poll costs
//! what its delta holds, not the size of the registry.
//!
//! Polls are at least the poll interval apart, and at least as far apart as the last one
//! took (so a feed never spends more than half its time reading).
//!
//! A delta whose `versions__delta` did not move since the last one applied, while the copy
//! still has the delta's hash, is the same payload again (the server regenerates it, and
//! bumps the counter, whenever it changes) and is skipped.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use reqwest::{Method, StatusCode};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::client::Request;
use super::convert::Decoded;
use super::{Inner, snapshot_of, wire};
use crate::registry::model::diff;
use crate::registry::{Change, ChangeFeed, RegistryError, Service, Snapshot, Tenant};

/// One record of the feed's copy.
#[derive(Clone)]
struct Record {
    /// Eureka's status name, for the hash (every record counts, `UNKNOWN` too).
    status: String,
    /// [`wire::WireInstance::digest`] of the record read.
    digest: u64,
    /// The model, `None` for a status the model lacks. Boxed, so the table's slots stay
    /// small (a hash map keeps about as many empty slots as full ones, and doubles at once).
    decoded: Option<Box<Decoded>>,
}

/// One record of a delta, as read.
enum Reading {
    /// `actionType` `DELETED`.
    Deleted,
    /// The copy has the record as read (same digest).
    Unchanged,
    /// New or changed: its digest and the record (decoded once it is known to be the
    /// last reading of its instance).
    Changed(u64, Box<wire::WireInstance>),
}

/// The feed's copy of the registry.
struct State {
    /// Records by (application, instance id).
    records: HashMap<(String, String), Record>,
    /// Instances per service (services exist while they have instances).
    services: HashMap<(Tenant, String), usize>,
    /// `versions__delta` of the last delta applied (`""` after a full read).
    versions_delta: String,
}

impl State {
    fn new(records: HashMap<(String, String), Record>) -> State {
        let mut services: HashMap<(Tenant, String), usize> = HashMap::new();
        for decoded in records.values().filter_map(|r| r.decoded.as_ref()) {
            *services.entry(service_key(decoded)).or_default() += 1;
        }
        State {
            records,
            services,
            versions_delta: String::new(),
        }
    }

    fn hash(&self) -> String {
        wire::hashcode(self.records.values().map(|r| r.status.as_str()))
    }

    fn model(&self) -> Snapshot {
        snapshot_of(
            self.records
                .values()
                .filter_map(|r| r.decoded.as_deref().cloned()),
        )
    }

    /// Puts `record` (or, with `None`, removes what is) under `key`, and adds the model
    /// changes that makes to `removed` (instances and services gone) and `added` (services
    /// new, instances new or changed).
    fn apply(
        &mut self,
        key: (String, String),
        record: Option<Record>,
        removed: &mut Vec<Change>,
        added: &mut Vec<Change>,
    ) {
        let old = match &record {
            Some(new) => self.records.get(&key).filter(|old| {
                !(old.status == new.status
                    && same_model(old.decoded.as_deref(), new.decoded.as_deref()))
            }),
            None => self.records.get(&key),
        };
        let (old, unchanged) = match old {
            Some(old) => (old.decoded.as_deref().cloned(), false),
            None => (None, self.records.contains_key(&key)),
        };
        if unchanged {
            return;
        }
        let new = record.as_ref().and_then(|r| r.decoded.as_deref().cloned());
        let moved = match (&old, &new) {
            (Some(o), Some(n)) => o.instance.reference() != n.instance.reference(),
            _ => true,
        };
        if let Some(old) = old.as_ref().filter(|_| moved) {
            removed.push(Change::InstanceRemoved(old.instance.reference()));
            let skey = service_key(old);
            if let Some(count) = self.services.get_mut(&skey) {
                *count -= 1;
                if *count == 0 {
                    self.services.remove(&skey);
                    removed.push(Change::ServiceRemoved {
                        tenant: skey.0,
                        service_id: skey.1,
                    });
                }
            }
        }
        if let Some(new) = &new {
            if moved {
                let count = self.services.entry(service_key(new)).or_default();
                *count += 1;
                if *count == 1 {
                    added.push(Change::Service(Service::clone(&new.service)));
                }
            }
            added.push(Change::Instance(new.instance.clone()));
        }
        match record {
            Some(record) => {
                self.records.insert(key, record);
            }
            None => {
                self.records.remove(&key);
            }
        }
    }
}

impl State {
    /// Applies a batch of records (each key once) and returns the model changes, as
    /// [`crate::registry::model::diff`] orders them: removals, then services, then instances.
    /// A service that lost its last instance and gained a new one in the batch did not
    /// change.
    fn apply_all(
        &mut self,
        batch: impl IntoIterator<Item = ((String, String), Option<Record>)>,
    ) -> Vec<Change> {
        let (mut removed, mut added) = (Vec::new(), Vec::new());
        for (key, record) in batch {
            self.apply(key, record, &mut removed, &mut added);
        }
        let gone: Vec<(Tenant, String)> = removed
            .iter()
            .filter_map(|c| match c {
                Change::ServiceRemoved { tenant, service_id } => {
                    Some((tenant.clone(), service_id.clone()))
                }
                _ => None,
            })
            .collect();
        let back: Vec<(Tenant, String)> = added
            .iter()
            .filter_map(|c| match c {
                Change::Service(s) => Some((s.tenant.clone(), s.service_id.clone())),
                _ => None,
            })
            .filter(|k| gone.contains(k))
            .collect();
        if !back.is_empty() {
            removed.retain(|c| !matches!(c, Change::ServiceRemoved { tenant, service_id } if back.iter().any(|(t, id)| t == tenant && id == service_id)));
            added.retain(|c| !matches!(c, Change::Service(s) if back.iter().any(|(t, id)| *t == s.tenant && *id == s.service_id)));
        }
        added.sort_by_key(|c| !matches!(c, Change::Service(_)));
        removed.append(&mut added);
        removed
    }
}

fn service_key(decoded: &Decoded) -> (Tenant, String) {
    (
        decoded.service.tenant.clone(),
        decoded.service.service_id.clone(),
    )
}

/// Whether two readings of a record are the same in the model (the modification time
/// aside, as in [`crate::registry::model::diff`]).
fn same_model(a: Option<&Decoded>, b: Option<&Decoded>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => a.service == b.service && a.instance.same_body(&b.instance),
        _ => false,
    }
}

/// A change feed of one Eureka.
pub(super) struct EurekaFeed {
    inner: Arc<Inner>,
    state: Option<State>,
    next_poll: Instant,
    next_resync: Instant,
    failing: bool,
}

impl EurekaFeed {
    pub(super) fn new(inner: Arc<Inner>) -> EurekaFeed {
        let now = Instant::now();
        EurekaFeed {
            inner,
            state: None,
            next_poll: now,
            next_resync: now,
            failing: false,
        }
    }

    /// A full read, as the feed's new copy.
    async fn full(&self) -> Result<State, RegistryError> {
        self.inner.metrics.count_full_fetch();
        let mut records: HashMap<(String, String), Record> = HashMap::new();
        let inner = &self.inner;
        inner
            .fetch_each("feed_full", &mut |r| {
                let record = Record {
                    status: r.status.clone(),
                    digest: r.digest(),
                    decoded: inner.decode_one(&r).map(Box::new),
                };
                records.insert((r.app, r.instance_id), record);
            })
            .await?;
        Ok(State::new(records))
    }

    /// Replaces the copy with a full read and reports the difference.
    /// When the read fails the copy is dropped, so the next call starts over with a
    /// [`Change::Resync`].
    async fn refetch(&mut self, old: Snapshot) -> Result<Vec<Change>, RegistryError> {
        let state = match self.full().await {
            Ok(state) => state,
            Err(e) => {
                self.state = None;
                return Err(e);
            }
        };
        let changes = diff(&old, &state.model());
        self.state = Some(state);
        Ok(changes)
    }

    async fn cycle(&mut self) -> Result<Vec<Change>, RegistryError> {
        let now = Instant::now();
        let Some(state) = self.state.as_mut().filter(|_| now < self.next_resync) else {
            let state = self.full().await?;
            self.next_resync = now + self.inner.config.resync_interval;
            let snapshot = state.model();
            self.state = Some(state);
            return Ok(vec![Change::Resync(snapshot)]);
        };
        self.inner.metrics.count_delta();
        let answer = self
            .inner
            .client
            .send(&Request::new("feed_delta", Method::GET, &["apps", "delta"]))
            .await?;
        if answer.status != StatusCode::OK {
            debug!(status = %answer.status, "Eureka's delta is not available: full read");
            let old = state.model();
            return self.refetch(old).await;
        }
        // Each record is looked at as it is read: one the copy has as it is now (the delta
        // repeats every change for minutes) keeps only its key, the answer is never held
        // as a whole document.
        let mut read: Vec<((String, String), Reading)> = Vec::new();
        let records = &state.records;
        let header = wire::apps_each(&answer.body, &mut |record| {
            let key = (record.app.clone(), record.instance_id.clone());
            let reading = if record.action_type == "DELETED" {
                Reading::Deleted
            } else {
                let digest = record.digest();
                if records.get(&key).is_some_and(|r| r.digest == digest) {
                    Reading::Unchanged
                } else {
                    Reading::Changed(digest, Box::new(record))
                }
            };
            read.push((key, reading));
        });
        drop(answer);
        let delta = match header {
            Ok(delta) => delta,
            Err(e) => {
                debug!(error = %e, "Eureka's delta is unreadable: full read");
                let old = state.model();
                return self.refetch(old).await;
            }
        };
        if !delta.versions_delta.is_empty()
            && delta.versions_delta == state.versions_delta
            && delta.hashcode == state.hash()
        {
            return Ok(Vec::new());
        }
        // Each instance once (the server's rule, §5.1), the last reading if repeated.
        let mut named = std::collections::HashSet::new();
        let mut batch: Vec<((String, String), Option<Record>)> = Vec::new();
        for (key, reading) in read.into_iter().rev() {
            if !named.insert(key.clone()) {
                continue;
            }
            match reading {
                Reading::Deleted => batch.push((key, None)),
                Reading::Unchanged => {}
                Reading::Changed(digest, record) => {
                    let new = Record {
                        status: record.status.clone(),
                        digest,
                        decoded: self.inner.decode_one(&record).map(Box::new),
                    };
                    batch.push((key, Some(new)));
                }
            }
        }
        batch.reverse();
        // What the records the delta names were, in case it does not reconcile.
        let undo: Vec<((String, String), Option<Record>)> = batch
            .iter()
            .map(|(key, _)| (key.clone(), state.records.get(key).cloned()))
            .collect();
        let changes = state.apply_all(batch);
        let hash = state.hash();
        if hash != delta.hashcode {
            self.inner.metrics.count_hash_mismatch();
            debug!(ours = %hash, theirs = %delta.hashcode, "the delta does not reconcile with Eureka's hash: full read");
            for (key, record) in undo.into_iter().rev() {
                match record {
                    Some(record) => state.records.insert(key, record),
                    None => state.records.remove(&key),
                };
            }
            let old = state.model();
            return self.refetch(old).await;
        }
        state.versions_delta = delta.versions_delta;
        Ok(changes)
    }

    fn note_error(&mut self, error: &RegistryError) {
        self.inner.metrics.count_error(error.kind());
        if self.failing {
            debug!(%error, "registry change feed still failing");
        } else {
            warn!(%error, "registry change feed failed");
            self.failing = true;
        }
    }
}

#[async_trait]
impl ChangeFeed for EurekaFeed {
    async fn next(&mut self) -> Result<Vec<Change>, RegistryError> {
        tokio::time::sleep_until(self.next_poll).await;
        let started = Instant::now();
        let result = self.cycle().await;
        // At least as long as the poll took: for three minutes after a mass change every
        // delta holds every changed record, and a poll of 10 000 of them is no longer cheap
        // for Eureka or for syncer.
        let took = started.elapsed();
        self.next_poll = Instant::now() + self.inner.config.poll_interval.max(took);
        match &result {
            Err(error) => self.note_error(error),
            Ok(_) if self.failing => {
                info!("registry change feed recovered");
                self.failing = false;
            }
            Ok(_) => {}
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::eureka::convert;

    /// A record of application `app` (service `name` of app id `sc_app`), instance `id`.
    fn record(app: &str, sc_app: &str, id: &str, status: &str, zone: &str) -> wire::WireInstance {
        wire::instance(&serde_json::json!({
            "instanceId": id, "hostName": "h", "app": app, "ipAddr": "10.0.0.1",
            "status": status, "vipAddress": app.to_lowercase(),
            "metadata": {"zone": zone, "sc.appId": sc_app},
        }))
        .expect("record")
    }

    fn sorted(changes: &[Change]) -> Vec<String> {
        let mut out: Vec<String> = changes.iter().map(|c| format!("{c:?}")).collect();
        out.sort();
        out
    }

    /// Applying deltas record by record reports what `model::diff` of the whole model
    /// before and after would, and nothing for a record repeated unchanged.
    #[test]
    fn incremental_changes_equal_the_diff_of_the_models() {
        let mut seed: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut state = State::new(HashMap::new());
        for step in 0..3000 {
            let before = state.model();
            let mut named = std::collections::HashSet::new();
            let mut batch = Vec::new();
            for _ in 0..(next() % 4) {
                let app = ["ORDERS", "PAY"][(next() % 2) as usize];
                let sc_app = ["shop", "other"][(next() % 2) as usize];
                let id = format!("i{}", next() % 5);
                if !named.insert((app, id.clone())) {
                    continue; // a delta names each instance once
                }
                let status = ["UP", "DOWN", "OUT_OF_SERVICE", "UNKNOWN"][(next() % 4) as usize];
                let zone = ["a", "b"][(next() % 2) as usize];
                let wire = record(app, sc_app, &id, status, zone);
                let key = (wire.app.clone(), wire.instance_id.clone());
                let new = (next() % 4 != 0).then(|| Record {
                    status: wire.status.clone(),
                    digest: wire.digest(),
                    decoded: convert::decode(&wire).map(Box::new),
                });
                batch.push((key, new));
            }
            let changes = state.apply_all(batch);
            let after = state.model();
            assert_eq!(
                sorted(&changes),
                sorted(&diff(&before, &after)),
                "step {step}"
            );
            assert_eq!(
                state.hash(),
                wire::hashcode(state.records.values().map(|r| r.status.as_str()))
            );
        }
        // The same record again changes nothing.
        let wire = record("ORDERS", "shop", "i9", "UP", "a");
        let mut last = Vec::new();
        for _ in 0..2 {
            let new = Record {
                status: wire.status.clone(),
                digest: wire.digest(),
                decoded: convert::decode(&wire).map(Box::new),
            };
            last = state.apply_all([((wire.app.clone(), wire.instance_id.clone()), Some(new))]);
        }
        assert!(last.is_empty(), "{last:?}");
    }
}

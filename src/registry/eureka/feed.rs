//! The change feed of the Eureka adapter: a full `GET /apps` first and every resync
//! interval (each a [`Change::Resync`]), and in between `GET /apps/delta` every poll
//! interval, applied to the feed's own copy of the registry the way Eureka's own client
//! does (reference §5.3): ADDED and MODIFIED replace a record, DELETED removes it, and the
//! full-registry hash recomputed over the copy (§5.2) must equal the delta's
//! `apps__hashcode`. A mismatch, or any answer but 200, costs a full read instead. The
//! changes reported are the difference between the model before and after
//! ([`crate::registry::model::diff`]).
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
use crate::registry::{Change, ChangeFeed, RegistryError, Snapshot};

/// One record of the feed's copy.
struct Record {
    /// Eureka's status name, for the hash (every record counts, `UNKNOWN` too).
    status: String,
    /// The model, `None` for a status the model lacks.
    decoded: Option<Decoded>,
}

/// The feed's copy of the registry.
struct State {
    /// Records by (application, instance id).
    records: HashMap<(String, String), Record>,
    /// The model of `records`.
    snapshot: Snapshot,
    /// `versions__delta` of the last delta applied (`""` after a full read).
    versions_delta: String,
}

impl State {
    fn hash(&self) -> String {
        wire::hashcode(self.records.values().map(|r| r.status.as_str()))
    }

    fn model(&self) -> Snapshot {
        snapshot_of(self.records.values().filter_map(|r| r.decoded.clone()))
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
        let apps = self.inner.fetch_all("feed_full").await?;
        let records: HashMap<(String, String), Record> = apps
            .instances
            .iter()
            .map(|r| {
                let record = Record {
                    status: r.status.clone(),
                    decoded: self.inner.decode_one(r),
                };
                ((r.app.clone(), r.instance_id.clone()), record)
            })
            .collect();
        let mut state = State {
            records,
            snapshot: Snapshot::default(),
            versions_delta: String::new(),
        };
        state.snapshot = state.model();
        Ok(state)
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
        let changes = diff(&old, &state.snapshot);
        self.state = Some(state);
        Ok(changes)
    }

    async fn cycle(&mut self) -> Result<Vec<Change>, RegistryError> {
        let now = Instant::now();
        let Some(state) = self.state.as_mut().filter(|_| now < self.next_resync) else {
            let state = self.full().await?;
            self.next_resync = now + self.inner.config.resync_interval;
            let snapshot = state.snapshot.clone();
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
            let old = std::mem::take(&mut state.snapshot);
            return self.refetch(old).await;
        }
        let delta = match wire::apps(&answer.body) {
            Ok(delta) => delta,
            Err(e) => {
                debug!(error = %e, "Eureka's delta is unreadable: full read");
                let old = std::mem::take(&mut state.snapshot);
                return self.refetch(old).await;
            }
        };
        if !delta.versions_delta.is_empty()
            && delta.versions_delta == state.versions_delta
            && delta.hashcode == state.hash()
        {
            return Ok(Vec::new());
        }
        for record in &delta.instances {
            let key = (record.app.clone(), record.instance_id.clone());
            if record.action_type == "DELETED" {
                state.records.remove(&key);
            } else {
                let decoded = self.inner.decode_one(record);
                state.records.insert(
                    key,
                    Record {
                        status: record.status.clone(),
                        decoded,
                    },
                );
            }
        }
        let hash = state.hash();
        if hash != delta.hashcode {
            self.inner.metrics.count_hash_mismatch();
            debug!(ours = %hash, theirs = %delta.hashcode, "the delta does not reconcile with Eureka's hash: full read");
            let old = std::mem::take(&mut state.snapshot);
            return self.refetch(old).await;
        }
        state.versions_delta = delta.versions_delta;
        if delta.instances.is_empty() {
            return Ok(Vec::new());
        }
        let new = state.model();
        let changes = diff(&state.snapshot, &new);
        state.snapshot = new;
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
        let result = self.cycle().await;
        self.next_poll = Instant::now() + self.inner.config.poll_interval;
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

//! The change feed of the ServiceComb adapter: SC's changes without watchers.
//!
//! SC's own change stream (watch websockets, reference §5.3) only reaches a consumer with
//! dependency rules, and a `*` rule changes how SC treats service deletes for everybody.
//! The feed therefore polls, in layers of decreasing frequency:
//!
//! 1. every `poll_interval`: one batch find (§3.6) per tenant (per `find_batch` services)
//!    naming known services by exact key with the revision of their last answer. SC
//!    answers `notModified` for unchanged services (a few bytes each); `updated` entries
//!    carry the service's instances, which are diffed against what the feed last reported;
//!    a `failed` entry with `400012` means the service is gone. Services whose instances
//!    are all syncer's own copies (or which have none) are left to the listing cycles and
//!    to layer 2: nothing of theirs but syncer's writes can change without moving SC's
//!    counts ([`Scope`]).
//! 2. right after each poll, SC's statistics of every known tenant
//!    (`GET /v4/<project>/govern/microservices?options=statistics`, one small answer from
//!    SC's cache; not in the reference, read from SC's source): service names and instances
//!    counted. Counts other than the feed's own make it list that tenant at once and ask its
//!    new and quiet services in the same cycle, so a new service is seen within one poll.
//!    The same counts never trigger twice (a count the feed can never match costs one
//!    listing). An SC that refuses the statistics turns them off for ten minutes.
//! 3. every `listing_interval` (`discovery_interval` without statistics): `GET
//!    …/microservices` per known tenant, for new, changed and deleted services, and a poll
//!    of every service. Known tenants are those of the last dump, `default/default`, those
//!    configured (`--sc-tenants`) and those the adapter itself wrote into.
//! 4. every `resync_interval`: the admin dump (§5.2), returned as [`Change::Resync`]; it is
//!    how other new tenants are found (SC has no call that lists tenants), and the safety
//!    net for anything else.
//!
//! SC serves all of them from a cache fed by an etcd watch, so an answer from a node whose
//! cache trails (after a failover) may miss what an earlier answer showed. No disappearance
//! is reported on one answer: a poll or listing reports it only when an answer read
//! `confirm_removal` later still misses it, and a dump that misses known services or
//! instances has them asked again `confirm_removal` later (one batch find, full lists)
//! before it is returned; what that answer still shows is put back into the snapshot.
//!
//! The feed owns its state (no locks) and uses `tokio::time` only. Each `next` runs one cycle
//! after waiting for `poll_interval` since the end of the previous one, so an idle registry
//! costs one small call per tenant per interval and a failing one is not hammered.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::{self, StreamExt};
use reqwest::Method;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::client::{self, Request};
use super::convert::instance_from_wire;
use super::wire::{
    BatchFindReply, BatchFindRequest, FindServiceEntry, FindServiceKey, FindUpdated, WireError,
};
use super::{Inner, TenantCounts, parse, to_json};
use crate::registry::{Change, ChangeFeed, InstanceRef, RegistryError, Service, Snapshot, Tenant};

/// How long the feed lists instead of asking statistics after SC refused them.
const STATISTICS_RETRY: Duration = Duration::from_secs(600);

/// One service as the feed last reported it.
#[derive(Debug)]
struct Watched {
    service: Service,
    /// Revision of the last batch-find answer for the service; empty when unknown, which
    /// makes SC answer with the full instance list.
    rev: String,
    /// Digests of the instances as last reported, by instance id (see
    /// [`crate::registry::Instance::body_digest`]).
    instances: BTreeMap<String, u64>,
    /// Those of `instances` that carry a copy's mark (syncer's own writes).
    copies: BTreeSet<String>,
    /// Instances missing from an answer but not yet reported gone, with when they were
    /// first missed: they stay in `instances` until an answer read `confirm_removal` later
    /// still misses them.
    missing: BTreeMap<String, Instant>,
    /// When the service was first found gone (`400012`, or missing from a listing); it is
    /// reported gone once it still is `confirm_removal` later.
    gone_since: Option<Instant>,
}

impl Watched {
    fn new(service: Service) -> Watched {
        Watched {
            service,
            rev: String::new(),
            instances: BTreeMap::new(),
            copies: BTreeSet::new(),
            missing: BTreeMap::new(),
            gone_since: None,
        }
    }

    /// Whether every instance is a copy syncer wrote (or there is none) and no
    /// disappearance waits for its confirmation: nothing of the service's own can change
    /// without changing SC's counts, so it is polled with the listings only, and at once
    /// when the counts move (see [`Scope`]).
    fn quiet(&self) -> bool {
        self.copies.len() == self.instances.len()
            && self.missing.is_empty()
            && self.gone_since.is_none()
    }

    /// Notes that the service was found gone at `now`; true once that is confirmed.
    fn gone(&mut self, now: Instant, confirm: Duration) -> bool {
        let since = *self.gone_since.get_or_insert(now);
        now.duration_since(since) >= confirm
    }
}

/// A known service the last dump left out, or left some of its known instances out of:
/// asked again before the dump is believed.
#[derive(Debug)]
struct Suspect {
    /// The service as last reported.
    service: Service,
    /// Whether the dump lacks the service itself.
    unlisted: bool,
    /// Ids of its known instances the dump lacks.
    instances: BTreeSet<String>,
}

/// Which services a poll asks.
enum Scope {
    /// Every service.
    All,
    /// Those with an instance of their own (not a copy), and those never answered yet.
    Active,
    /// Those never answered yet (just listed), and every service of these tenants that
    /// [`Scope::Active`] leaves out.
    Catch(Vec<Tenant>),
}

impl Scope {
    fn covers(&self, tenant: &Tenant, watched: &Watched) -> bool {
        let new = watched.rev.is_empty();
        match self {
            Scope::All => true,
            Scope::Active => new || !watched.quiet(),
            Scope::Catch(tenants) => new || (watched.quiet() && tenants.contains(tenant)),
        }
    }
}

/// One batch-find call planned by a poll: the tenant and the service ids in request order.
struct PollCall {
    tenant: Tenant,
    ids: Vec<String>,
    body: Vec<u8>,
}

/// A change feed over one SC. See the module documentation.
pub(super) struct ScFeed {
    inner: Arc<Inner>,
    /// What the feed last reported: tenant → service id → service and instances.
    tenants: BTreeMap<Tenant, BTreeMap<String, Watched>>,
    /// Whether the first [`Change::Resync`] was returned.
    started: bool,
    /// When the next cycle may start.
    next_poll: Instant,
    /// When the next service listing is due.
    next_discovery: Instant,
    /// When the next dump is due.
    next_resync: Instant,
    /// Whether the last cycle failed: a feed that keeps failing warns once, then logs at
    /// debug level (every error is counted either way).
    failing: bool,
    /// The last error that did not fail a cycle (one tenant or entry among several), so
    /// that the same one repeated every poll warns only once.
    last_partial: Option<String>,
    /// Changes applied to the state but not yet returned (see [`ScFeed::cycle`]).
    pending: Vec<Change>,
    /// Until when SC's statistics are not asked (SC refused them); `None` while they are.
    statistics_off_until: Option<Instant>,
    /// The statistics of each tenant that last made the feed list it; the same counts do
    /// not make it list again (a count SC keeps and the feed can never match).
    listed_for: BTreeMap<Tenant, TenantCounts>,
    /// A dump waiting for its confirmation ([`ScFeed::confirm_dump`]) and when that is due:
    /// kept across a call dropped half-way, so the dump is not read again.
    held_dump: Option<(Snapshot, Instant)>,
}

#[async_trait]
impl ChangeFeed for ScFeed {
    async fn next(&mut self) -> Result<Vec<Change>, RegistryError> {
        if !self.pending.is_empty() {
            // Left by a call that was dropped before it could return them.
            return Ok(std::mem::take(&mut self.pending));
        }
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

impl ScFeed {
    pub(super) fn new(inner: Arc<Inner>) -> ScFeed {
        let now = Instant::now();
        ScFeed {
            inner,
            tenants: BTreeMap::new(),
            started: false,
            next_poll: now,
            next_discovery: now,
            next_resync: now,
            failing: false,
            last_partial: None,
            pending: Vec::new(),
            held_dump: None,
            statistics_off_until: None,
            listed_for: BTreeMap::new(),
        }
    }

    /// Counts and logs an error of the feed; only the first of a run is a warning.
    fn note_error(&mut self, error: &RegistryError) {
        self.inner.metrics.count_error(error.kind());
        if self.failing {
            debug!(kind = error.kind(), %error, "registry change feed still failing");
        } else {
            warn!(kind = error.kind(), %error, "registry change feed failed");
            self.failing = true;
        }
    }

    /// Counts and logs an error that did not fail the cycle; a repeat is logged at debug level.
    fn note_partial(&mut self, error: &RegistryError) {
        self.inner.metrics.count_error(error.kind());
        let text = error.to_string();
        if self.last_partial.as_deref() == Some(text.as_str()) {
            debug!(kind = error.kind(), %error, "registry change feed: part of a poll failed again");
        } else {
            warn!(kind = error.kind(), %error, "registry change feed: part of a poll failed");
            self.last_partial = Some(text);
        }
    }

    /// One cycle: a dump when due (or before anything else), else a listing when due and a
    /// poll. Errors of one tenant do not hide another tenant's changes: a cycle that found
    /// changes returns them and only logs its errors.
    ///
    /// Cancel-safe: changes are moved into `pending` as soon as they are applied to the
    /// feed's state (with no await in between), so a `next` dropped half-way loses nothing;
    /// the following call returns them.
    async fn cycle(&mut self) -> Result<Vec<Change>, RegistryError> {
        let now = Instant::now();
        if !self.started || now >= self.next_resync {
            let resync = self.resync(now).await;
            if resync.is_ok() {
                // The snapshot supersedes any increment not yet returned.
                self.pending.clear();
            }
            return resync;
        }
        let mut errors = Vec::new();
        let statistics = self.statistics_on(now);
        let listed = now >= self.next_discovery;
        if listed {
            let config = &self.inner.config;
            let interval = if statistics {
                config.listing_interval
            } else {
                config.discovery_interval
            };
            self.next_discovery = now + interval;
            let mut changes = Vec::new();
            let tenants = self.known_tenants();
            self.discover(tenants, &mut changes, &mut errors).await;
            self.pending.append(&mut changes);
        }
        let mut changes = Vec::new();
        // Services holding only syncer's copies wait for the listings while the statistics
        // watch their counts.
        let scope = if statistics && !listed {
            Scope::Active
        } else {
            Scope::All
        };
        self.poll(&scope, &mut changes, &mut errors).await;
        self.forget_triggers(&changes);
        self.pending.append(&mut changes);
        if statistics && !listed {
            // After the poll, so that what it found is counted: a tenant whose counts still
            // differ holds a service the feed has not seen, or an instance of a quiet
            // service: it is listed now, and its new and quiet services are asked at once.
            let stale = self.stale_tenants(&mut errors).await;
            if !stale.is_empty() {
                let mut changes = Vec::new();
                self.discover(stale.clone(), &mut changes, &mut errors)
                    .await;
                self.poll(&Scope::Catch(stale), &mut changes, &mut errors)
                    .await;
                self.forget_triggers(&changes);
                self.pending.append(&mut changes);
            }
        }
        let mut errors = errors.into_iter();
        match errors.next() {
            Some(first) if self.pending.is_empty() => {
                for other in errors {
                    self.note_partial(&other);
                }
                Err(first)
            }
            first => {
                for error in first.into_iter().chain(errors) {
                    self.note_partial(&error);
                }
                Ok(std::mem::take(&mut self.pending))
            }
        }
    }

    /// Takes a dump and reports it as a resync.
    async fn resync(&mut self, now: Instant) -> Result<Vec<Change>, RegistryError> {
        let inner = Arc::clone(&self.inner);
        let config = &inner.config;
        let dumped = match self.held_dump.take() {
            Some((snapshot, due)) => Ok((snapshot, due)),
            None => inner
                .dump()
                .await
                .map(|snapshot| (snapshot, Instant::now() + config.confirm_removal)),
        };
        let dumped = match dumped {
            Ok((snapshot, due)) if self.started => self.confirm_dump(snapshot, due).await,
            dumped => dumped.map(|(snapshot, _)| snapshot),
        };
        let snapshot = match dumped {
            Ok(snapshot) => snapshot,
            Err(error) => {
                if self.started {
                    // Keep polling in the meantime; try the dump again soon.
                    self.next_resync = now + config.discovery_interval;
                }
                return Err(error);
            }
        };
        self.adopt(&snapshot);
        self.started = true;
        let now = Instant::now();
        self.next_resync = now + config.resync_interval;
        self.next_discovery = now + config.discovery_interval;
        debug!(
            services = snapshot.services.len(),
            instances = snapshot.instances.len(),
            "feed resync"
        );
        Ok(vec![Change::Resync(snapshot)])
    }

    /// The known services the dump `snapshot` lacks, or lacks known instances of, by tenant.
    /// Services SC redirects to `default/default` cannot be asked in their own tenant: for
    /// them the dump is believed.
    fn dump_suspects(&self, snapshot: &Snapshot) -> BTreeMap<Tenant, Vec<Suspect>> {
        let services: HashSet<(&Tenant, &str)> = snapshot
            .services
            .iter()
            .map(|s| (&s.tenant, s.service_id.as_str()))
            .collect();
        let instances: HashSet<(&Tenant, &str, &str)> = snapshot
            .instances
            .iter()
            .map(|i| (&i.tenant, i.service_id.as_str(), i.instance_id.as_str()))
            .collect();
        let mut suspects: BTreeMap<Tenant, Vec<Suspect>> = BTreeMap::new();
        for (tenant, known) in &self.tenants {
            for (id, watched) in known {
                let service = &watched.service;
                if self
                    .inner
                    .internal
                    .is_shared_name(&service.app, &service.name)
                {
                    continue;
                }
                let listed = services.contains(&(tenant, id.as_str()));
                let lacking: BTreeSet<String> = watched
                    .instances
                    .keys()
                    .filter(|i| !instances.contains(&(tenant, id.as_str(), i.as_str())))
                    .cloned()
                    .collect();
                if listed && lacking.is_empty() {
                    continue;
                }
                suspects.entry(tenant.clone()).or_default().push(Suspect {
                    service: service.clone(),
                    unlisted: !listed,
                    instances: lacking,
                });
            }
        }
        suspects
    }

    /// Confirms what the dump `snapshot` lacks of the feed's state: at `due`
    /// (`confirm_removal` after the dump), the services concerned are found again with full
    /// instance lists, and every known service and instance that answer still shows is put
    /// back into the snapshot (a node whose cache trailed served the dump). A service
    /// answered `400012` is confirmed gone. Meanwhile the dump is held in the feed, so a call
    /// dropped during the wait resumes it.
    ///
    /// # Errors
    /// A failed call or entry fails the resync (it is tried again soon; polls go on).
    async fn confirm_dump(
        &mut self,
        snapshot: Snapshot,
        due: Instant,
    ) -> Result<Snapshot, RegistryError> {
        let config = &Arc::clone(&self.inner).config;
        let suspects = self.dump_suspects(&snapshot);
        if suspects.is_empty() || config.confirm_removal.is_zero() {
            return Ok(snapshot);
        }
        self.held_dump = Some((snapshot, due));
        tokio::time::sleep_until(due).await;
        let (mut services, mut instances) = (Vec::new(), Vec::new());
        for (tenant, suspects) in &suspects {
            for chunk in suspects.chunks(config.find_batch) {
                let found = match self.find_again(tenant, chunk).await {
                    Ok(reply) => {
                        self.keep_found(tenant, chunk, reply, &mut services, &mut instances)
                    }
                    Err(error) => Err(error),
                };
                if let Err(error) = found {
                    self.held_dump = None;
                    return Err(error);
                }
            }
        }
        let Some((mut snapshot, _)) = self.held_dump.take() else {
            return Err(RegistryError::Protocol(
                "feed_confirm: the dump held for confirmation is gone".into(),
            ));
        };
        let lacked: usize = suspects.values().flatten().map(|s| s.instances.len()).sum();
        if !services.is_empty() || !instances.is_empty() {
            info!(
                services = services.len(),
                instances = instances.len(),
                lacked,
                "the registry dump missed what the registry still holds (a node whose cache trails); kept"
            );
        }
        snapshot.services.append(&mut services);
        snapshot.instances.append(&mut instances);
        Ok(snapshot)
    }

    /// One batch find of `suspects` of `tenant` with empty revisions (full lists).
    async fn find_again(
        &self,
        tenant: &Tenant,
        suspects: &[Suspect],
    ) -> Result<BatchFindReply, RegistryError> {
        let entries = suspects
            .iter()
            .map(|s| FindServiceEntry {
                service: FindServiceKey {
                    app_id: &s.service.app,
                    service_name: &s.service.name,
                    version: &s.service.version,
                    environment: &s.service.environment,
                },
                rev: "",
            })
            .collect();
        let body = to_json(
            "feed_confirm",
            &BatchFindRequest {
                services: entries,
                instances: Vec::new(),
            },
        )?;
        let query = [("type", "query")];
        let request = Request::new(
            "feed_confirm",
            Method::POST,
            tenant,
            &["instances", "action"],
        )
        .query(&query)
        .json(body);
        let body = self
            .inner
            .call(request)
            .await
            .map_err(RegistryError::from)?;
        parse::<BatchFindReply>("feed_confirm", &body)
    }

    /// Collects from `reply` (to [`ScFeed::find_again`] for `suspects`) the services and
    /// instances the dump lacked that SC still shows.
    fn keep_found(
        &self,
        tenant: &Tenant,
        suspects: &[Suspect],
        reply: BatchFindReply,
        services: &mut Vec<Service>,
        instances: &mut Vec<crate::registry::Instance>,
    ) -> Result<(), RegistryError> {
        let section = reply.services;
        let suspect = |i: i64| {
            usize::try_from(i)
                .ok()
                .and_then(|i| suspects.get(i))
                .ok_or_else(|| {
                    RegistryError::Protocol(format!(
                        "feed_confirm: index {i} outside the {} services asked",
                        suspects.len()
                    ))
                })
        };
        if let Some(i) = section.not_modified.first() {
            suspect(*i)?;
            return Err(RegistryError::Protocol(
                "feed_confirm: notModified for a find without revision".into(),
            ));
        }
        for group in &section.failed {
            for i in &group.indexes {
                suspect(*i)?;
            }
            if group.error.error_code != Some(client::SERVICE_NOT_EXIST) {
                return Err(entry_failure(tenant, &group.error, group.indexes.len()));
            }
        }
        for updated in section.updated {
            let suspect = suspect(updated.index)?;
            if suspect.unlisted {
                services.push(suspect.service.clone());
            }
            let id = &suspect.service.service_id;
            for wire in updated.instances {
                // SC 2.x finds every version of a name: this service's lacking ones only.
                let ours = wire.service_id.is_empty() || wire.service_id == *id;
                if !ours || !suspect.instances.contains(&wire.instance_id) {
                    continue;
                }
                let mut instance = instance_from_wire(tenant.clone(), id, wire);
                self.inner.added.strip(&mut instance);
                instances.push(instance);
            }
        }
        Ok(())
    }

    /// Makes `snapshot` the feed's state. Revisions are kept for services whose instances are
    /// unchanged, so that the next poll after a dump stays cheap.
    fn adopt(&mut self, snapshot: &Snapshot) {
        let mut fresh: BTreeMap<Tenant, BTreeMap<String, Watched>> = BTreeMap::new();
        for service in &snapshot.services {
            fresh
                .entry(service.tenant.clone())
                .or_default()
                .insert(service.service_id.clone(), Watched::new(service.clone()));
        }
        for instance in &snapshot.instances {
            if let Some(watched) = fresh
                .get_mut(&instance.tenant)
                .and_then(|t| t.get_mut(&instance.service_id))
            {
                watched
                    .instances
                    .insert(instance.instance_id.clone(), instance.body_digest());
                if instance.carries_copy_mark() {
                    watched.copies.insert(instance.instance_id.clone());
                }
            }
        }
        for (tenant, services) in &mut fresh {
            for (id, watched) in services.iter_mut() {
                let old = self.tenants.get(tenant).and_then(|t| t.get(id));
                if let Some(old) = old.filter(|old| old.instances == watched.instances) {
                    watched.rev.clone_from(&old.rev);
                }
            }
        }
        self.tenants = fresh;
    }

    /// The tenants the feed lists and counts: those it knows, `default/default`, those
    /// configured and those the adapter wrote into.
    fn known_tenants(&self) -> Vec<Tenant> {
        let mut tenants: Vec<Tenant> = self.tenants.keys().cloned().collect();
        tenants.push(Tenant::default_tenant());
        tenants.extend(self.inner.config.tenants.iter().cloned());
        tenants.extend(self.inner.written_tenants());
        tenants.sort_unstable();
        tenants.dedup();
        tenants
    }

    /// Forgets the counts that last triggered a listing of every tenant `changes` touch: the
    /// feed's own view moved since, so the same counts may mean something new again (an
    /// instance that left and another that came).
    fn forget_triggers(&mut self, changes: &[Change]) {
        if self.listed_for.is_empty() {
            return;
        }
        for change in changes {
            let tenant = match change {
                Change::Instance(i) => &i.tenant,
                Change::InstanceRemoved(r) => &r.tenant,
                Change::Service(s) => &s.tenant,
                Change::ServiceRemoved { tenant, .. } => tenant,
                _ => continue,
            };
            self.listed_for.remove(tenant);
        }
    }

    /// Whether SC's statistics are asked this cycle.
    fn statistics_on(&mut self, now: Instant) -> bool {
        if !self.inner.config.statistics {
            return false;
        }
        match self.statistics_off_until {
            Some(until) if now < until => false,
            Some(_) => {
                self.statistics_off_until = None;
                true
            }
            None => true,
        }
    }

    /// What SC's statistics of `tenant` should count if the feed has seen everything: its
    /// service names (versions folded, shared ones left out) and their present instances.
    fn expected_counts(&self, tenant: &Tenant) -> TenantCounts {
        let Some(services) = self.tenants.get(tenant) else {
            return TenantCounts::default();
        };
        let mut names = HashSet::new();
        let mut instances = 0;
        for watched in services.values() {
            let s = &watched.service;
            if self.inner.internal.is_shared_name(&s.app, &s.name) {
                continue;
            }
            names.insert((&s.environment, &s.app, &s.name));
            instances += watched
                .instances
                .len()
                .saturating_sub(watched.missing.len());
        }
        TenantCounts {
            services: names.len() as u64,
            instances: instances as u64,
        }
    }

    /// Asks the statistics of every known tenant; returns those that count something other
    /// than the feed has seen, each once per distinct count. An SC that refuses them turns
    /// them off for [`STATISTICS_RETRY`] (listings every `discovery_interval` instead).
    async fn stale_tenants(&mut self, errors: &mut Vec<RegistryError>) -> Vec<Tenant> {
        let inner = &*self.inner;
        let answers: Vec<_> = stream::iter(self.known_tenants())
            .map(|tenant| async move {
                let counts = inner.statistics(&tenant).await;
                (tenant, counts)
            })
            .buffer_unordered(inner.config.max_concurrent_calls)
            .collect()
            .await;
        let mut stale = Vec::new();
        for (tenant, counts) in answers {
            match counts {
                Ok(counts) if counts == self.expected_counts(&tenant) => {
                    self.listed_for.remove(&tenant);
                }
                Ok(counts) => {
                    if self.listed_for.get(&tenant) != Some(&counts) {
                        debug!(%tenant, ?counts, "statistics count what the feed has not seen: listing");
                        self.listed_for.insert(tenant.clone(), counts);
                        stale.push(tenant);
                    }
                }
                Err(error @ (RegistryError::Unavailable(_) | RegistryError::NotFound(_))) => {
                    errors.push(error);
                }
                Err(error) => {
                    info!(
                        %error,
                        retry_in = ?STATISTICS_RETRY,
                        listing_every = ?self.inner.config.discovery_interval,
                        "the registry does not answer statistics: new services are found by listing"
                    );
                    self.statistics_off_until = Some(Instant::now() + STATISTICS_RETRY);
                    self.next_discovery = Instant::now();
                    return Vec::new();
                }
            }
        }
        stale.sort_unstable();
        stale
    }

    /// Lists the services of `tenants` and reports new, changed and deleted ones.
    async fn discover(
        &mut self,
        tenants: Vec<Tenant>,
        changes: &mut Vec<Change>,
        errors: &mut Vec<RegistryError>,
    ) {
        let inner = &*self.inner;
        let listings: Vec<_> = stream::iter(tenants)
            .map(|tenant| async move {
                let listed = inner.list_services(&tenant).await;
                (tenant, listed)
            })
            .buffer_unordered(inner.config.max_concurrent_calls)
            .collect()
            .await;
        for (tenant, listed) in listings {
            match listed {
                Ok(listed) => self.apply_listing(tenant, listed, changes),
                Err(error) => errors.push(error),
            }
        }
    }

    fn apply_listing(
        &mut self,
        tenant: Tenant,
        listed: BTreeMap<String, Service>,
        changes: &mut Vec<Change>,
    ) {
        let (now, confirm) = (Instant::now(), self.inner.config.confirm_removal);
        let watched = self.tenants.entry(tenant.clone()).or_default();
        let gone: Vec<String> = watched
            .iter_mut()
            .filter(|(id, _)| !listed.contains_key(*id))
            .filter_map(|(id, w)| w.gone(now, confirm).then(|| id.clone()))
            .collect();
        for id in gone {
            if let Some(service) = watched.remove(&id) {
                report_service_removed(&tenant, id, service, changes);
            }
        }
        for (id, service) in listed {
            match watched.get_mut(&id) {
                Some(known) if known.service == service => known.gone_since = None,
                Some(known) => {
                    known.gone_since = None;
                    known.service = service.clone();
                    changes.push(Change::Service(service));
                }
                None => {
                    changes.push(Change::Service(service.clone()));
                    watched.insert(id, Watched::new(service));
                }
            }
        }
        if watched.is_empty() {
            self.tenants.remove(&tenant);
        }
    }

    /// One batch find per tenant (and per `find_batch` services) of the services in
    /// `scope`, at most `max_concurrent_calls` at a time.
    async fn poll(
        &mut self,
        scope: &Scope,
        changes: &mut Vec<Change>,
        errors: &mut Vec<RegistryError>,
    ) {
        let calls = match self.plan_poll(scope) {
            Ok(calls) => calls,
            Err(error) => return errors.push(error),
        };
        let inner = &*self.inner;
        let replies: Vec<_> = stream::iter(calls)
            .map(|call| async move {
                let query = [("type", "query")];
                let path = ["instances", "action"];
                let request = Request::new("feed_poll", Method::POST, &call.tenant, &path)
                    .query(&query)
                    .json(call.body);
                let reply = match inner.call(request).await {
                    Ok(body) => parse::<BatchFindReply>("feed_poll", &body),
                    Err(fault) => Err(fault.into()),
                };
                (call.tenant, call.ids, reply)
            })
            .buffer_unordered(inner.config.max_concurrent_calls)
            .collect()
            .await;
        for (tenant, ids, reply) in replies {
            match reply.and_then(|reply| self.apply_poll(&tenant, &ids, reply, changes)) {
                Ok(failures) => failures.iter().for_each(|f| self.note_partial(f)),
                Err(error) => errors.push(error),
            }
        }
    }

    /// The batch-find calls of one poll. Services SC redirects to `default/default` (shared
    /// names) cannot be found in their own tenant and are left to listings and dumps.
    fn plan_poll(&self, scope: &Scope) -> Result<Vec<PollCall>, RegistryError> {
        let config = &self.inner.config;
        let now = Instant::now();
        let mut calls = Vec::new();
        for (tenant, services) in &self.tenants {
            let pollable: Vec<(&String, &Watched)> = services
                .iter()
                .filter(|(_, w)| {
                    !self
                        .inner
                        .internal
                        .is_shared_name(&w.service.app, &w.service.name)
                        && scope.covers(tenant, w)
                })
                .collect();
            for chunk in pollable.chunks(config.find_batch) {
                let entries = chunk
                    .iter()
                    .map(|(_, w)| FindServiceEntry {
                        service: FindServiceKey {
                            app_id: &w.service.app,
                            service_name: &w.service.name,
                            version: &w.service.version,
                            environment: &w.service.environment,
                        },
                        // A disappearance due for confirmation: ask for the full list.
                        rev: if w.missing.values().min().is_some_and(|first| {
                            now.duration_since(*first) >= config.confirm_removal
                        }) {
                            ""
                        } else {
                            &w.rev
                        },
                    })
                    .collect();
                let body = to_json(
                    "feed_poll",
                    &BatchFindRequest {
                        services: entries,
                        instances: Vec::new(),
                    },
                )?;
                let ids = chunk.iter().map(|(id, _)| (*id).clone()).collect();
                calls.push(PollCall {
                    tenant: tenant.clone(),
                    ids,
                    body,
                });
            }
        }
        Ok(calls)
    }

    /// Applies one batch-find answer for `ids` of `tenant`. Returns the failures of single
    /// entries other than "service gone": they are only logged, as the entry is asked again
    /// at the next poll and must not hide the other entries' changes.
    ///
    /// # Errors
    /// [`RegistryError::Protocol`] when the answer names an index outside the request; then
    /// nothing of it is applied.
    fn apply_poll(
        &mut self,
        tenant: &Tenant,
        ids: &[String],
        reply: BatchFindReply,
        changes: &mut Vec<Change>,
    ) -> Result<Vec<RegistryError>, RegistryError> {
        let section = reply.services;
        let index = |i: i64| {
            usize::try_from(i)
                .ok()
                .filter(|i| *i < ids.len())
                .ok_or_else(|| {
                    RegistryError::Protocol(format!(
                        "feed_poll: index {i} outside the {} services asked",
                        ids.len()
                    ))
                })
        };
        let answered = section
            .updated
            .iter()
            .map(|u| u.index)
            .chain(section.not_modified.iter().copied());
        for i in answered {
            index(i)?;
        }
        for group in &section.failed {
            for i in &group.indexes {
                index(*i)?;
            }
        }
        let mut failures = Vec::new();
        let (now, confirm) = (Instant::now(), self.inner.config.confirm_removal);
        for i in &section.not_modified {
            let id = &ids[index(*i)?];
            if let Some(watched) = self.tenants.get_mut(tenant).and_then(|t| t.get_mut(id)) {
                watched.gone_since = None;
            }
        }
        for updated in section.updated {
            let id = &ids[index(updated.index)?];
            self.apply_updated(tenant, id, updated, changes);
        }
        for group in section.failed {
            if group.error.error_code == Some(client::SERVICE_NOT_EXIST) {
                for i in group.indexes {
                    let id = &ids[index(i)?];
                    let Some(services) = self.tenants.get_mut(tenant) else {
                        continue;
                    };
                    let confirmed = services
                        .get_mut(id)
                        .is_some_and(|watched| watched.gone(now, confirm));
                    if let Some(service) = confirmed.then(|| services.remove(id)).flatten() {
                        report_service_removed(tenant, id.clone(), service, changes);
                    }
                }
            } else {
                failures.push(entry_failure(tenant, &group.error, group.indexes.len()));
            }
        }
        Ok(failures)
    }

    /// One service whose instances changed since its last revision.
    fn apply_updated(
        &mut self,
        tenant: &Tenant,
        id: &str,
        updated: FindUpdated,
        changes: &mut Vec<Change>,
    ) {
        let (now, confirm) = (Instant::now(), self.inner.config.confirm_removal);
        let Some(watched) = self.tenants.get_mut(tenant).and_then(|t| t.get_mut(id)) else {
            return;
        };
        watched.gone_since = None;
        // SC 2.x finds every version of a name: keep this service's instances only.
        let mut fresh = BTreeMap::new();
        let mut copies = BTreeSet::new();
        let mut changed = Vec::new();
        for wire in updated.instances {
            if wire.instance_id.is_empty() || !(wire.service_id.is_empty() || wire.service_id == id)
            {
                continue;
            }
            let mut instance = instance_from_wire(tenant.clone(), id, wire);
            self.inner.added.strip(&mut instance);
            let digest = instance.body_digest();
            if instance.carries_copy_mark() {
                copies.insert(instance.instance_id.clone());
            }
            if watched.instances.get(&instance.instance_id) != Some(&digest) {
                fresh.insert(instance.instance_id.clone(), digest);
                changed.push(instance);
            } else {
                fresh.insert(instance.instance_id, digest);
            }
        }
        // Seen again: no longer missing.
        watched
            .missing
            .retain(|instance_id, _| !fresh.contains_key(instance_id));
        for (instance_id, digest) in &watched.instances {
            if fresh.contains_key(instance_id) {
                continue;
            }
            let first = *watched.missing.entry(instance_id.clone()).or_insert(now);
            if now.duration_since(first) >= confirm {
                watched.missing.remove(instance_id);
                changes.push(Change::InstanceRemoved(InstanceRef {
                    tenant: tenant.clone(),
                    service_id: id.to_owned(),
                    instance_id: instance_id.clone(),
                }));
            } else {
                // Kept as present until confirmed (an SC node whose cache trails).
                fresh.insert(instance_id.clone(), *digest);
                if watched.copies.contains(instance_id) {
                    copies.insert(instance_id.clone());
                }
            }
        }
        changes.extend(changed.into_iter().map(Change::Instance));
        watched.instances = fresh;
        watched.copies = copies;
        watched.rev = updated.rev;
    }
}

/// Reports a service as gone: its instances first, then the service.
fn report_service_removed(
    tenant: &Tenant,
    service_id: String,
    service: Watched,
    changes: &mut Vec<Change>,
) {
    for instance_id in service.instances.into_keys() {
        changes.push(Change::InstanceRemoved(InstanceRef {
            tenant: tenant.clone(),
            service_id: service_id.clone(),
            instance_id,
        }));
    }
    changes.push(Change::ServiceRemoved {
        tenant: tenant.clone(),
        service_id,
    });
}

/// The error of failed batch-find entries other than "service gone".
fn entry_failure(tenant: &Tenant, error: &WireError, count: usize) -> RegistryError {
    let code = error.error_code.unwrap_or_default();
    let message = format!(
        "feed_poll: {count} service(s) of {tenant} failed: {code} {} ({})",
        error.error_message, error.detail
    );
    if code >= 500_000 {
        RegistryError::Unavailable(message)
    } else {
        RegistryError::Invalid(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Instance;
    use crate::registry::servicecomb::wire::{FindFailed, FindSection, WireInstance};
    use crate::registry::servicecomb::{ServiceComb, ServiceCombConfig};

    /// A feed that reports disappearances at once (see [`confirming_feed`]).
    fn feed() -> ScFeed {
        let config = ServiceCombConfig {
            confirm_removal: Duration::ZERO,
            ..ServiceCombConfig::default()
        };
        let sc = ServiceComb::new(config).expect("adapter");
        ScFeed::new(sc.inner)
    }

    fn service(id: &str) -> Service {
        Service {
            tenant: Tenant::default_tenant(),
            service_id: id.into(),
            app: "a".into(),
            name: format!("n-{id}"),
            version: "1.0.0".into(),
            ..Service::default()
        }
    }

    fn instance(service: &str, id: &str, status: &str) -> Instance {
        Instance {
            tenant: Tenant::default_tenant(),
            service_id: service.into(),
            instance_id: id.into(),
            status: status.into(),
            ..Instance::default()
        }
    }

    fn wire(service: &str, id: &str, status: &str) -> WireInstance {
        WireInstance {
            instance_id: id.into(),
            service_id: service.into(),
            status: status.into(),
            ..WireInstance::default()
        }
    }

    /// Services s1 (instances a, b, both UP) and s2 (instance c with status `c_status`).
    fn two_services(c_status: &str) -> Snapshot {
        Snapshot {
            services: vec![service("s1"), service("s2")],
            instances: vec![
                instance("s1", "a", "UP"),
                instance("s1", "b", "UP"),
                instance("s2", "c", c_status),
            ],
        }
    }

    /// A feed that knows [`two_services`] (c UP), revision "r1".
    fn started_feed() -> ScFeed {
        let mut feed = feed();
        feed.adopt(&two_services("UP"));
        for watched in feed.tenants.values_mut().flat_map(|t| t.values_mut()) {
            watched.rev = "r1".into();
        }
        feed
    }

    fn ids() -> Vec<String> {
        vec!["s1".into(), "s2".into()]
    }

    /// What the feed reports when s2 of [`started_feed`] is gone: instance c, then s2.
    fn s2_removed() -> Vec<Change> {
        vec![
            Change::InstanceRemoved(instance("s2", "c", "UP").reference()),
            Change::ServiceRemoved {
                tenant: Tenant::default_tenant(),
                service_id: "s2".into(),
            },
        ]
    }

    #[test]
    fn updated_entries_become_instance_changes() {
        let mut feed = started_feed();
        let reply = BatchFindReply {
            services: FindSection {
                updated: vec![FindUpdated {
                    index: 0,
                    rev: "r2".into(),
                    // b changed, a gone, d new; x belongs to another version (2.x finds).
                    instances: vec![
                        wire("s1", "b", "DOWN"),
                        wire("s1", "d", "UP"),
                        wire("s9", "x", "UP"),
                    ],
                }],
                not_modified: vec![1],
                failed: Vec::new(),
            },
            ..BatchFindReply::default()
        };
        let mut changes = Vec::new();
        let failures = feed
            .apply_poll(&Tenant::default_tenant(), &ids(), reply, &mut changes)
            .expect("apply");
        assert!(failures.is_empty());
        let home = Tenant::default_tenant();
        assert_eq!(
            changes,
            vec![
                Change::InstanceRemoved(instance("s1", "a", "UP").reference()),
                Change::Instance(instance("s1", "b", "DOWN")),
                Change::Instance(instance("s1", "d", "UP")),
            ]
        );
        let s1 = &feed.tenants[&home]["s1"];
        assert_eq!(s1.rev, "r2");
        assert_eq!(s1.instances.keys().collect::<Vec<_>>(), ["b", "d"]);
    }

    #[test]
    fn service_not_found_removes_service_and_instances() {
        let mut feed = started_feed();
        let reply = BatchFindReply {
            services: FindSection {
                failed: vec![
                    FindFailed {
                        indexes: vec![1],
                        error: WireError {
                            error_code: Some(client::SERVICE_NOT_EXIST),
                            ..WireError::default()
                        },
                    },
                    FindFailed {
                        indexes: vec![0],
                        error: WireError {
                            error_code: Some(500_011),
                            ..WireError::default()
                        },
                    },
                ],
                ..FindSection::default()
            },
            ..BatchFindReply::default()
        };
        let mut changes = Vec::new();
        let home = Tenant::default_tenant();
        let failures = feed
            .apply_poll(&home, &ids(), reply, &mut changes)
            .expect("apply");
        assert_eq!(changes, s2_removed());
        assert!(
            matches!(failures.as_slice(), [RegistryError::Unavailable(_)]),
            "{failures:?}"
        );
        assert!(
            feed.tenants[&home].contains_key("s1"),
            "a failed entry is kept and asked again"
        );
    }

    #[test]
    fn an_index_outside_the_request_applies_nothing() {
        let mut feed = started_feed();
        let reply = BatchFindReply {
            services: FindSection {
                updated: vec![
                    FindUpdated {
                        index: 0,
                        rev: "r2".into(),
                        instances: Vec::new(),
                    },
                    FindUpdated {
                        index: 7,
                        rev: "r2".into(),
                        instances: Vec::new(),
                    },
                ],
                ..FindSection::default()
            },
            ..BatchFindReply::default()
        };
        let mut changes = Vec::new();
        let err = feed
            .apply_poll(&Tenant::default_tenant(), &ids(), reply, &mut changes)
            .expect_err("bad index");
        assert!(matches!(err, RegistryError::Protocol(_)));
        assert!(changes.is_empty());
        assert_eq!(
            feed.tenants[&Tenant::default_tenant()]["s1"]
                .instances
                .len(),
            2
        );
    }

    #[test]
    fn resync_keeps_revisions_of_unchanged_services() {
        let mut feed = started_feed();
        feed.adopt(&two_services("DOWN"));
        let home = Tenant::default_tenant();
        assert_eq!(feed.tenants[&home]["s1"].rev, "r1");
        assert_eq!(
            feed.tenants[&home]["s2"].rev, "",
            "changed instances: ask again in full"
        );
    }

    #[test]
    fn listings_report_new_changed_and_deleted_services() {
        let mut feed = started_feed();
        let home = Tenant::default_tenant();
        let mut changed = service("s1");
        changed.properties.insert("k".into(), "v".into());
        let listed = BTreeMap::from([
            ("s1".to_owned(), changed.clone()),
            ("s3".to_owned(), service("s3")),
        ]);
        let mut changes = Vec::new();
        feed.apply_listing(home.clone(), listed, &mut changes);
        let mut expected = s2_removed();
        expected.extend([Change::Service(changed), Change::Service(service("s3"))]);
        assert_eq!(changes, expected);
        assert_eq!(
            feed.tenants[&home]["s3"].rev, "",
            "a new service is asked in full"
        );
    }

    /// A feed over [`two_services`] that confirms disappearances after 1 s (the default
    /// with several addresses).
    fn confirming_feed() -> ScFeed {
        let config = ServiceCombConfig {
            confirm_removal: Duration::from_secs(1),
            ..ServiceCombConfig::default()
        };
        let sc = ServiceComb::new(config).expect("adapter");
        let mut feed = ScFeed::new(sc.inner);
        feed.adopt(&two_services("UP"));
        feed
    }

    /// s1 answered with instance b only (a missing), s2 with `400012` or not modified.
    fn lagging_answer(s2_gone: bool) -> BatchFindReply {
        let s2 = FindFailed {
            indexes: vec![1],
            error: WireError {
                error_code: Some(client::SERVICE_NOT_EXIST),
                ..WireError::default()
            },
        };
        BatchFindReply {
            services: FindSection {
                updated: vec![FindUpdated {
                    index: 0,
                    rev: "lagging".into(),
                    instances: vec![wire("s1", "b", "UP")],
                }],
                not_modified: if s2_gone { Vec::new() } else { vec![1] },
                failed: if s2_gone { vec![s2] } else { Vec::new() },
            },
            ..BatchFindReply::default()
        }
    }

    /// A failover to an SC node whose cache trails: one answer missing an instance and a
    /// service is not reported as removals. The next answer showing them again ends it.
    #[tokio::test(start_paused = true)]
    async fn one_answer_missing_things_is_not_a_removal() {
        let mut feed = confirming_feed();
        let home = Tenant::default_tenant();
        let mut changes = Vec::new();
        feed.apply_poll(&home, &ids(), lagging_answer(true), &mut changes)
            .expect("apply");
        assert_eq!(changes, Vec::new(), "nothing reported on one answer");
        // Half a second later the node has caught up: everything is back.
        tokio::time::advance(Duration::from_millis(500)).await;
        let caught_up = BatchFindReply {
            services: FindSection {
                updated: vec![FindUpdated {
                    index: 0,
                    rev: "r2".into(),
                    instances: vec![wire("s1", "a", "UP"), wire("s1", "b", "UP")],
                }],
                not_modified: vec![1],
                failed: Vec::new(),
            },
            ..BatchFindReply::default()
        };
        feed.apply_poll(&home, &ids(), caught_up, &mut changes)
            .expect("apply");
        tokio::time::advance(Duration::from_secs(2)).await;
        feed.apply_poll(&home, &ids(), lagging_answer(false), &mut changes)
            .expect("apply");
        assert_eq!(changes, Vec::new(), "the clock restarts after a sighting");
        assert!(feed.tenants[&home]["s2"].gone_since.is_none());
    }

    /// A disappearance still there a confirmation period later is reported; while it waits
    /// the service is asked with an empty revision once due, so SC answers the full list.
    #[tokio::test(start_paused = true)]
    async fn a_disappearance_that_lasts_is_reported() {
        let mut feed = confirming_feed();
        let home = Tenant::default_tenant();
        let mut changes = Vec::new();
        feed.apply_poll(&home, &ids(), lagging_answer(true), &mut changes)
            .expect("apply");
        let rev_of_s1 = |feed: &ScFeed| {
            let calls = feed.plan_poll(&Scope::All).expect("plan");
            let body: serde_json::Value = serde_json::from_slice(&calls[0].body).expect("json");
            body["services"][0]["rev"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        };
        assert_eq!(rev_of_s1(&feed), "lagging");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(rev_of_s1(&feed), "", "confirmation due: full list");
        feed.apply_poll(&home, &ids(), lagging_answer(true), &mut changes)
            .expect("apply");
        let mut expected = vec![Change::InstanceRemoved(
            instance("s1", "a", "UP").reference(),
        )];
        expected.extend(s2_removed());
        assert_eq!(changes, expected);
        assert_eq!(rev_of_s1(&feed), "lagging");
    }

    /// A dump that lacks a known instance and a known service names both for confirmation;
    /// a complete dump names nothing.
    #[test]
    fn a_dump_lacking_known_things_is_asked_again() {
        let feed = started_feed();
        assert!(feed.dump_suspects(&two_services("UP")).is_empty());
        let lacking = Snapshot {
            services: vec![service("s1")],
            instances: vec![instance("s1", "b", "UP")],
        };
        let suspects = feed.dump_suspects(&lacking);
        let home = &suspects[&Tenant::default_tenant()];
        let summary: Vec<(&str, bool, Vec<&str>)> = home
            .iter()
            .map(|s| {
                (
                    s.service.service_id.as_str(),
                    s.unlisted,
                    s.instances.iter().map(String::as_str).collect(),
                )
            })
            .collect();
        assert_eq!(summary, [("s1", false, vec!["a"]), ("s2", true, vec!["c"])]);
    }
}

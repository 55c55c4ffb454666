//! The origin services whose local service is in trouble, per origin actor: one refused
//! service never holds back the others.
//!
//! A service the local registry does not create (a quota, an alias taken, a registry that is
//! down) holds back the registration of its own copies only: they are parked here and tried
//! again when the service's back-off ends, while the copies of every other service, and every
//! removal and update, go on in the same round. A service whose changed properties the
//! registry refused (Service Center caps the properties PUT at 3 KiB, its create at 2 MiB) is
//! ready for copies all the same: the refused content is not sent again until it changes
//! (`ImportCtx::properties_refused`), and the copies keep syncing.
//!
//! Each trouble is logged once per service and reason, counted in
//! `syncer_sync_service_failures_total{origin,reason}` on every refused attempt, and listed in
//! [`ServiceFailures`] (so `/health` says degraded) until the service is ensured, or its
//! origin no longer exports it.
//!
//! Copies the registry refuses one by one are kept here too. Service Center caps an instance
//! registration body at 5 KiB and the instance properties PUT at 3 KiB, so an origin instance
//! close to a cap can be legal at the origin and too large as a copy (syncer's mark added).
//! Such a refusal (`Refused`/`Invalid`, not an unanswered call) is logged once, counted with
//! the reason prefixed `instance_` (`instance_too_large`, `instance_properties_too_large`),
//! listed in `/health` under the origin instance, and the same write is not tried again
//! before its back-off ends (5 s doubling to 5 min): a changed origin instance is tried at
//! once. The trouble ends when a write of the copy succeeds or the origin no longer exports
//! the instance.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::time::Duration;

use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::super::metrics::{ServiceFailures, SyncMetrics};
use super::plan::Action;
use crate::backoff::Backoff;
use crate::registry::{Instance, InstanceRef, RegistryError, Service, Tenant};

/// First pause before a failed service is tried again.
const RETRY_FIRST: Duration = Duration::from_secs(1);
/// Longest pause between tries of a service the registry refused (a quota, a conflict):
/// only an operator's change helps, so it is not asked every second.
const REFUSED_RETRY_MAX: Duration = Duration::from_secs(60);
/// Longest pause between tries of a service when the registry did not answer: the 1 s pace
/// of every other retry of the importer, so copies follow soon after it is back.
const UNAVAILABLE_RETRY_MAX: Duration = RETRY_FIRST;

/// First pause before a refused copy is written again: the same body is refused again
/// unless the registry's settings change, so not every second.
const INSTANCE_RETRY_FIRST: Duration = Duration::from_secs(5);
/// Longest pause between writes of a refused copy.
const INSTANCE_RETRY_MAX: Duration = Duration::from_secs(5 * 60);

/// `(tenant, origin service id)`.
type OriginService = (Tenant, String);

/// How ensuring one origin service's local service ended.
#[derive(Debug)]
pub(crate) enum Ensured {
    /// Ready for copies: created or found, its properties mirrored or left alone.
    Ready,
    /// Ready for copies, but the registry refused the origin's changed properties; they are
    /// not sent again until they change.
    PropertiesRefused {
        reason: &'static str,
        error: RegistryError,
    },
    /// Ready for copies; the origin's properties are the ones the registry refused before,
    /// not sent again (already reported).
    RefusedBefore { reason: &'static str },
    /// Not ready: its copies wait for the next try.
    Failed {
        reason: &'static str,
        error: RegistryError,
    },
}

/// The reason label of a failed call: the registry's own for a refusal it names, `refused`
/// for any other refusal, `unavailable` when it did not answer usefully. `stage` tells the
/// properties PUT apart, whose body cap is the one a legal origin service can exceed.
pub(crate) fn reason_of(error: &RegistryError, properties: bool) -> &'static str {
    match error {
        RegistryError::Refused(r) if properties && r.reason == "too_large" => {
            "properties_too_large"
        }
        RegistryError::Refused(r) => r.reason,
        RegistryError::Invalid(_) | RegistryError::NotFound(_) => "refused",
        RegistryError::Unavailable(_) | RegistryError::Protocol(_) => "unavailable",
    }
}

/// The reason label of a copy the registry refused (see the module documentation).
pub(crate) fn instance_reason(error: &RegistryError, properties: bool) -> &'static str {
    match reason_of(error, properties) {
        "properties_too_large" => "instance_properties_too_large",
        "too_large" => "instance_too_large",
        "quota" => "instance_quota",
        _ => "instance_refused",
    }
}

/// Whether a failed write of a copy is a refusal of its content (tried again only after a
/// back-off, or when the content changes) rather than a registry that did not answer.
pub(crate) fn is_refusal(error: &RegistryError) -> bool {
    !error.is_retryable() && !error.is_not_found()
}

/// What a registration writes, for telling a changed origin instance from the refused one.
pub(crate) fn register_digest(instance: &Instance) -> u64 {
    instance.body_digest()
}

/// What an update writes (see [`register_digest`]).
pub(crate) fn update_digest(
    status: Option<&String>,
    properties: Option<&BTreeMap<String, String>>,
) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    status.hash(&mut h);
    properties.hash(&mut h);
    h.finish()
}

/// The origin instance and the digest of what `action` writes into the copy, for the
/// actions that write one (register, update).
fn written(action: &Action) -> Option<(&InstanceRef, u64)> {
    match action {
        Action::Register { key, instance, .. } => Some((key, register_digest(instance))),
        Action::Update {
            key,
            status,
            properties,
            ..
        } => Some((key, update_digest(status.as_ref(), properties.as_ref()))),
        Action::Adopt { .. } | Action::Remove { .. } => None,
    }
}

/// A copy the registry refused.
#[derive(Debug)]
struct RefusedCopy {
    /// The origin instance, for logs and `/health`.
    label: String,
    reason: &'static str,
    /// What the refused write carried.
    digest: u64,
    backoff: Backoff,
    /// When the same write may be tried again (`None`: due, planned again).
    retry_at: Option<Instant>,
}

#[derive(Debug)]
enum State {
    /// Not created: its copies wait until `retry_at` (`None`: due, planned again and not
    /// tried yet).
    Waiting {
        backoff: Backoff,
        retry_at: Option<Instant>,
        /// Origin instances whose registration waits for the service.
        parked: HashSet<InstanceRef>,
    },
    /// Ready, with the origin's current properties refused.
    PropertiesRefused,
}

#[derive(Debug)]
struct Trouble {
    /// `app/name/version`, for logs and `/health`.
    label: String,
    reason: &'static str,
    state: State,
}

/// One origin's services in trouble (see the module documentation).
#[derive(Debug)]
pub(crate) struct FailingServices {
    origin: String,
    troubles: HashMap<OriginService, Trouble>,
    /// Copies the registry refused, by origin instance.
    copies: HashMap<InstanceRef, RefusedCopy>,
    metrics: SyncMetrics,
    health: ServiceFailures,
}

fn label_of(service: &Service) -> String {
    format!("{}/{}/{}", service.app, service.name, service.version)
}

impl FailingServices {
    pub(crate) fn new(origin: String, metrics: SyncMetrics) -> FailingServices {
        let health = metrics.service_failures();
        FailingServices {
            origin,
            troubles: HashMap::new(),
            copies: HashMap::new(),
            metrics,
            health,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.troubles.is_empty() && self.copies.is_empty()
    }

    /// Services in trouble now (`syncer status`).
    pub(crate) fn services(&self) -> usize {
        self.troubles.len()
    }

    /// Whether `action` writes what the registry refused for its copy and the back-off of
    /// that refusal has not ended at `now`.
    pub(crate) fn copy_waits(&self, action: &Action, now: Instant) -> bool {
        written(action).is_some_and(|(key, digest)| {
            self.copies.get(key).is_some_and(|refused| {
                refused.digest == digest && refused.retry_at.is_some_and(|at| at > now)
            })
        })
    }

    /// The registry refused the copy of `key`, written with `digest`, at `now`.
    pub(crate) fn copy_refused(
        &mut self,
        key: InstanceRef,
        digest: u64,
        reason: &'static str,
        error: &RegistryError,
        now: Instant,
    ) {
        self.count(reason);
        let label = format!("instance {key}");
        let again = self
            .copies
            .remove(&key)
            .filter(|before| before.reason == reason && before.digest == digest);
        let logged = again.is_some();
        let mut backoff = again.map_or_else(
            || Backoff::new(INSTANCE_RETRY_FIRST, INSTANCE_RETRY_MAX),
            |before| before.backoff,
        );
        let pause = backoff.pause();
        if logged {
            debug!(origin = %self.origin, instance = %key, reason, error = %error, retry_in = ?pause, "the local registry still refuses this copy");
        } else {
            warn!(origin = %self.origin, instance = %key, reason, error = %error, retry_in = ?pause, "the local registry refused this copy; the same content is tried again after a back-off (at once when the origin changes it), the other copies go on");
        }
        self.health.set(&self.origin, &label, reason);
        self.copies.insert(
            key,
            RefusedCopy {
                label,
                reason,
                digest,
                backoff,
                retry_at: Some(now + pause),
            },
        );
    }

    /// A write of the copy of `key` succeeded: its refusal, if any, is over.
    pub(crate) fn copy_written(&mut self, key: &InstanceRef) {
        if let Some(refused) = self.copies.remove(key) {
            self.health.clear(&self.origin, &refused.label);
            info!(origin = %self.origin, instance = %key, reason = refused.reason, "the local registry took this copy");
        }
    }

    /// Forgets the refused copies of origin instances `exported` no longer holds.
    pub(crate) fn sweep_copies(&mut self, exported: impl Fn(&InstanceRef) -> bool) {
        let health = &self.health;
        let origin = &self.origin;
        self.copies.retain(|key, refused| {
            let keep = exported(key);
            if !keep {
                health.clear(origin, &refused.label);
            }
            keep
        });
    }

    /// Whether `service` waits for its back-off at `now`: not asked for again before then.
    pub(crate) fn waits(&self, service: &Service, now: Instant) -> bool {
        let key = (service.tenant.clone(), service.service_id.clone());
        matches!(
            self.troubles.get(&key),
            Some(Trouble { state: State::Waiting { retry_at: Some(at), .. }, .. }) if *at > now
        )
    }

    /// Whether the copies of origin service `service_id` of `tenant` cannot be registered
    /// now (the service is not created).
    pub(crate) fn blocks(&self, tenant: &Tenant, service_id: &str) -> bool {
        matches!(
            self.troubles.get(&(tenant.clone(), service_id.to_owned())),
            Some(Trouble {
                state: State::Waiting { .. },
                ..
            })
        )
    }

    /// Keeps `key`'s registration for its service's next try.
    pub(crate) fn park(&mut self, key: InstanceRef) {
        let service = (key.tenant.clone(), key.service_id.clone());
        if let Some(Trouble {
            state: State::Waiting { parked, .. },
            ..
        }) = self.troubles.get_mut(&service)
        {
            parked.insert(key);
        }
    }

    /// The earliest end of a back-off, if a service waits.
    pub(crate) fn next_retry(&self) -> Option<Instant> {
        self.troubles
            .values()
            .filter_map(|t| match &t.state {
                State::Waiting { retry_at, .. } => *retry_at,
                State::PropertiesRefused => None,
            })
            .chain(self.copies.values().filter_map(|c| c.retry_at))
            .min()
    }

    /// What to plan again now that the back-off of some services ended by `now`: the keys
    /// parked for them, and the services without parked keys (a failed properties update of
    /// a service whose copies are all there), whose every instance is to be planned again.
    pub(crate) fn due(&mut self, now: Instant) -> (Vec<InstanceRef>, Vec<(Tenant, String)>) {
        let (mut keys, mut services) = (Vec::new(), Vec::new());
        for (service, trouble) in &mut self.troubles {
            if let State::Waiting {
                retry_at, parked, ..
            } = &mut trouble.state
                && retry_at.is_some_and(|at| at <= now)
            {
                *retry_at = None;
                if parked.is_empty() {
                    services.push(service.clone());
                } else {
                    keys.extend(parked.drain());
                }
            }
        }
        for (key, refused) in &mut self.copies {
            if refused.retry_at.is_some_and(|at| at <= now) {
                refused.retry_at = None;
                keys.push(key.clone());
            }
        }
        (keys, services)
    }

    /// Records how ensuring `service` ended at `now`; returns the keys parked for it that
    /// can go on now (it is ready).
    pub(crate) fn record(
        &mut self,
        service: &Service,
        outcome: Ensured,
        now: Instant,
    ) -> Vec<InstanceRef> {
        let key = (service.tenant.clone(), service.service_id.clone());
        match outcome {
            Ensured::Ready => self.clear(&key),
            Ensured::PropertiesRefused { reason, error } => {
                let back = self.clear(&key);
                self.count(reason);
                // Sent once per content: this is the one report of it.
                warn!(origin = %self.origin, service = %label_of(service), reason, error = %error, "the local registry refused this service's changed properties or contracts (see reason); its copies go on with what it has, and the same content is not sent again (until the origin changes it)");
                self.insert(key, service, reason, State::PropertiesRefused);
                back
            }
            Ensured::RefusedBefore { reason } => {
                let back = match self.troubles.remove(&key) {
                    Some(Trouble {
                        state: State::Waiting { parked, .. },
                        ..
                    }) => parked.into_iter().collect(),
                    _ => Vec::new(),
                };
                self.insert(key, service, reason, State::PropertiesRefused);
                back
            }
            Ensured::Failed { reason, error } => {
                self.count(reason);
                let retryable = error.is_retryable();
                let (backoff, parked, logged) = match self.troubles.remove(&key) {
                    Some(Trouble {
                        reason: before,
                        state:
                            State::Waiting {
                                backoff, parked, ..
                            },
                        ..
                    }) if before == reason => (backoff, parked, true),
                    Some(Trouble {
                        state: State::Waiting { parked, .. },
                        ..
                    }) => (new_backoff(retryable), parked, false),
                    _ => (new_backoff(retryable), HashSet::new(), false),
                };
                let mut backoff = backoff;
                let pause = backoff.pause();
                if logged {
                    debug!(origin = %self.origin, service = %label_of(service), reason, error = %error, retry_in = ?pause, "the local service of a copy still cannot be created");
                } else {
                    warn!(origin = %self.origin, service = %label_of(service), reason, error = %error, retry_in = ?pause, "cannot create the local service of this service's copies; they wait for it (tried again with back-off), the other services go on");
                }
                self.insert(
                    key,
                    service,
                    reason,
                    State::Waiting {
                        backoff,
                        retry_at: Some(now + pause),
                        parked,
                    },
                );
                Vec::new()
            }
        }
    }

    /// Forgets the troubles of services the origin no longer exports (`exported` says which
    /// it does); returns what was parked for them.
    pub(crate) fn sweep(&mut self, exported: impl Fn(&Tenant, &str) -> bool) -> Vec<InstanceRef> {
        let gone: Vec<OriginService> = self
            .troubles
            .keys()
            .filter(|(tenant, id)| !exported(tenant, id))
            .cloned()
            .collect();
        gone.iter().flat_map(|key| self.clear(key)).collect()
    }

    /// Forgets every trouble (the actor stops).
    pub(crate) fn clear_all(&mut self) {
        self.troubles.clear();
        self.copies.clear();
        self.health.clear_origin(&self.origin);
    }

    fn insert(
        &mut self,
        key: OriginService,
        service: &Service,
        reason: &'static str,
        state: State,
    ) {
        let label = label_of(service);
        self.health.set(&self.origin, &label, reason);
        self.troubles.insert(
            key,
            Trouble {
                label,
                reason,
                state,
            },
        );
    }

    fn clear(&mut self, key: &OriginService) -> Vec<InstanceRef> {
        let Some(trouble) = self.troubles.remove(key) else {
            return Vec::new();
        };
        self.health.clear(&self.origin, &trouble.label);
        info!(origin = %self.origin, service = %trouble.label, reason = trouble.reason, "the local service of this service's copies is fine again");
        match trouble.state {
            State::Waiting { parked, .. } => parked.into_iter().collect(),
            State::PropertiesRefused => Vec::new(),
        }
    }

    fn count(&self, reason: &'static str) {
        self.metrics.service_failure(&self.origin, reason);
    }
}

fn new_backoff(retryable: bool) -> Backoff {
    let max = if retryable {
        UNAVAILABLE_RETRY_MAX
    } else {
        REFUSED_RETRY_MAX
    };
    Backoff::new(RETRY_FIRST, max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Refusal;

    fn service(id: &str) -> Service {
        Service {
            service_id: id.into(),
            app: "a".into(),
            name: id.into(),
            version: "1.0.0".into(),
            ..Service::default()
        }
    }

    fn key(service: &str, id: &str) -> InstanceRef {
        InstanceRef {
            tenant: Tenant::default(),
            service_id: service.into(),
            instance_id: id.into(),
        }
    }

    fn quota() -> Ensured {
        Ensured::Failed {
            reason: "quota",
            error: RegistryError::Refused(Refusal {
                field: "create_service".into(),
                reason: "quota",
                detail: "400100".into(),
            }),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_service_backs_off_alone_and_its_parked_copies_go_on_once_ready() {
        let metrics = SyncMetrics::default();
        let mut table = FailingServices::new("dc1".into(), metrics.clone());
        let (big, ok) = (service("big"), service("ok"));
        let start = Instant::now();
        assert!(table.record(&big, quota(), start).is_empty());
        table.park(key("big", "i1"));
        table.park(key("ok", "i2"));
        assert!(table.blocks(&Tenant::default(), "big"));
        assert!(
            !table.blocks(&Tenant::default(), "ok"),
            "only the failed one"
        );
        assert!(table.waits(&big, start) && !table.waits(&ok, start));
        assert_eq!(
            metrics.service_failures().list(),
            vec![("dc1".into(), "a/big/1.0.0".into(), "quota")]
        );

        // Back-off: 1 s, then 2 s, then 4 s.
        let mut at = start;
        for pause in [1, 2, 4] {
            assert_eq!(table.next_retry(), Some(at + Duration::from_secs(pause)));
            at += Duration::from_secs(pause);
            assert!(!table.waits(&big, at));
            table.record(&big, quota(), at);
        }
        assert_eq!(table.due(at), (Vec::new(), Vec::new()), "not due yet");
        let later = at + Duration::from_secs(8);
        assert_eq!(table.due(later), (vec![key("big", "i1")], Vec::new()));
        assert!(!table.waits(&big, later) && table.next_retry().is_none());
        assert_eq!(table.due(later), (Vec::new(), Vec::new()), "once");
        table.park(key("big", "i1"));
        assert_eq!(
            table.record(&big, Ensured::Ready, at),
            vec![key("big", "i1")]
        );
        assert!(table.is_empty() && metrics.service_failures().list().is_empty());
    }

    #[test]
    fn refused_properties_do_not_block_and_are_swept_with_their_service() {
        let metrics = SyncMetrics::default();
        let mut table = FailingServices::new("dc1".into(), metrics.clone());
        let big = service("big");
        let refused = Ensured::PropertiesRefused {
            reason: "properties_too_large",
            error: RegistryError::Invalid("too large".into()),
        };
        table.record(&big, refused, Instant::now());
        assert!(!table.blocks(&Tenant::default(), "big"));
        assert_eq!(table.next_retry(), None);
        assert_eq!(metrics.service_failures().list().len(), 1);
        table.sweep(|_, id| id != "big");
        assert!(table.is_empty() && metrics.service_failures().list().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_copy_waits_for_its_back_off_unless_its_content_changes() {
        let metrics = SyncMetrics::default();
        let mut table = FailingServices::new("dc1".into(), metrics.clone());
        let update = |props: &[(&str, &str)]| Action::Update {
            key: key("s", "i1"),
            copy: key("local", "c1"),
            status: None,
            properties: Some(
                props
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            ),
        };
        let (big, small) = (update(&[("blob", "big")]), update(&[("blob", "small")]));
        let Some((_, digest)) = written(&big) else {
            panic!("an update writes");
        };
        let error = RegistryError::Refused(Refusal {
            field: "set_instance_properties".into(),
            reason: "too_large",
            detail: "400001".into(),
        });
        let reason = instance_reason(&error, true);
        assert_eq!(reason, "instance_properties_too_large");
        let start = Instant::now();
        table.copy_refused(key("s", "i1"), digest, reason, &error, start);
        assert!(table.copy_waits(&big, start) && !table.copy_waits(&small, start));
        assert!(!table.is_empty());
        assert_eq!(table.next_retry(), Some(start + INSTANCE_RETRY_FIRST));
        assert_eq!(
            metrics.service_failures().list(),
            vec![("dc1".into(), "instance default/default/s/i1".into(), reason)]
        );
        let due = start + INSTANCE_RETRY_FIRST;
        assert_eq!(table.due(due), (vec![key("s", "i1")], Vec::new()));
        assert!(!table.copy_waits(&big, due), "due: tried again");
        // Refused again: the pause doubles.
        table.copy_refused(key("s", "i1"), digest, reason, &error, due);
        assert_eq!(table.next_retry(), Some(due + INSTANCE_RETRY_FIRST * 2));
        table.copy_written(&key("s", "i1"));
        assert!(table.is_empty() && metrics.service_failures().list().is_empty());
    }
}

//! The planner: what to do about a set of origin instances, from the three views and the
//! safety state. Pure: no I/O, no clock (the time is an input), no registry.
//!
//! For each origin instance (docs/DESIGN.md, "Import"):
//!
//! | desired | mapping | present copy | action |
//! |---|---|---|---|
//! | yes | no | a copy with a derived id of generation 0-7 | adopt it |
//! | yes | no | no | register generation 0 |
//! | yes | yes | no | register again (next generation if the fingerprint changed) |
//! | yes | yes | yes | [`plan_update`]: nothing, in place, or replace |
//! | no | yes | – | remove the copy, then the mapping (guarded) |
//! | – | – | a marked copy nobody maps | remove (guarded) |
//!
//! While the origin is stale (no exchange within the grace period) nothing is registered or
//! updated: its copies expire with their lease. Removals go through the [`RemovalGuard`]:
//! none before a complete snapshot or before a new leader's hold ends, and at most the cap
//! per sliding minute; the rest wait in [`Plan::waiting`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::super::copy::{CopyUpdate, PresentCopy, fingerprint, plan_update};
use super::super::ids::{copy_instance_id, is_copy_id};
use super::super::safety::{RemovalGuard, Removals};
use super::views::{Desired, Views, copy_ref, origin_ref};
use crate::registry::{Instance, InstanceRef, Service};
use crate::store::Mapping;

/// Replacement generations searched when adopting a copy that has no mapping.
pub(crate) const ADOPT_GENERATIONS: u32 = 8;

/// One unit of work on the local registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    /// Record a copy found in the registry without a mapping (left by a crash).
    Adopt { key: InstanceRef, mapping: Mapping },
    /// Register a copy of `instance` (new, missing or replacing `replace`).
    Register {
        key: InstanceRef,
        service: Arc<Service>,
        instance: Arc<Instance>,
        generation: u32,
        replace: Option<Mapping>,
    },
    /// Change status and/or properties of the present copy.
    Update {
        key: InstanceRef,
        copy: InstanceRef,
        status: Option<String>,
        properties: Option<BTreeMap<String, String>>,
    },
    /// Remove a copy and its mapping (either may be missing).
    Remove {
        key: Option<InstanceRef>,
        copy: InstanceRef,
        mapping: Option<Mapping>,
    },
}

impl Action {
    /// The origin instance this action is about (`None`: an orphan copy or extra mapping).
    pub(crate) fn key(&self) -> Option<&InstanceRef> {
        match self {
            Action::Adopt { key, .. }
            | Action::Register { key, .. }
            | Action::Update { key, .. } => Some(key),
            Action::Remove { key, .. } => key.as_ref(),
        }
    }
}

/// What the planner looks at.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Input<'a> {
    pub views: &'a Views,
    /// The origin instances to plan (dirty ones).
    pub keys: &'a [InstanceRef],
    /// Whether to look at orphans too: present copies nobody maps, extra mappings.
    pub orphans: bool,
    /// Whether the origin is past its grace period.
    pub stale: bool,
    /// Now, for the removal guard.
    pub now: Instant,
    /// Now in Unix milliseconds, stamped on adopted mappings.
    pub now_ms: u64,
}

/// What to do.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Plan {
    /// Services to ensure first (those of the desired instances looked at; none while
    /// stale).
    pub services: Vec<Arc<Service>>,
    /// Work to execute now.
    pub actions: Vec<Action>,
    /// Removals the guard holds back, to plan again later.
    pub waiting: Vec<Action>,
    /// The guard's answer, when removals were asked for.
    pub removals: Option<Removals>,
}

/// Plans `input.keys` (and the orphans when asked); removals admitted by `guard` are counted
/// there as done.
pub(crate) fn plan(input: &Input<'_>, guard: &mut RemovalGuard) -> Plan {
    let views = input.views;
    let services = if input.stale {
        Vec::new()
    } else {
        input
            .keys
            .iter()
            .filter_map(|k| views.desired.get(k).map(|d| d.service.clone()))
            .collect()
    };
    let mut actions = Vec::new();
    let mut removals = Vec::new();
    for key in input.keys {
        match plan_key(views, key, input.stale, input.now_ms) {
            Some(action @ Action::Remove { .. }) => removals.push(action),
            Some(action) => actions.push(action),
            None => {}
        }
    }
    let mut waiting = Vec::new();
    if input.orphans {
        let orphans = plan_orphans(views, &actions, input.stale, input.now_ms);
        actions.extend(orphans.adoptions);
        removals.extend(orphans.removals);
        waiting.extend(orphans.held);
    }
    let mut answer = None;
    if !removals.is_empty() {
        let (admitted, held, removals_answer) =
            admit_removals(guard, &views.origin, removals, input.now);
        actions.extend(admitted);
        waiting.extend(held);
        answer = Some(removals_answer);
    }
    Plan {
        services,
        actions,
        waiting,
        removals: answer,
    }
}

/// One row of the table for origin instance `key`.
pub(crate) fn plan_key(
    views: &Views,
    key: &InstanceRef,
    stale: bool,
    now_ms: u64,
) -> Option<Action> {
    let desired = views.desired.get(key);
    let mapping = views.mappings().get(key);
    match (desired, mapping) {
        (Some(d), None) => {
            if stale {
                return None;
            }
            adoption(views, key, now_ms).or_else(|| Some(register(key, d, 0, None)))
        }
        (Some(d), Some(m)) => {
            if stale {
                return None;
            }
            match views.present.get(&m.instance_id) {
                None => {
                    let same = fingerprint(&d.instance) == m.fingerprint;
                    let generation = if same {
                        m.generation
                    } else {
                        free_generation(views, key, d, m.generation.wrapping_add(1))
                    };
                    Some(register(key, d, generation, (!same).then(|| m.clone())))
                }
                Some(copy) => match plan_update(
                    &views.origin,
                    &d.instance,
                    copy,
                    &m.fingerprint,
                    m.generation,
                ) {
                    CopyUpdate::Unchanged => None,
                    CopyUpdate::InPlace { status, properties } => Some(Action::Update {
                        key: key.clone(),
                        copy: copy.reference(&m.instance_id),
                        status,
                        properties,
                    }),
                    CopyUpdate::Replace { generation } => {
                        let generation = free_generation(views, key, d, generation);
                        Some(register(key, d, generation, Some(m.clone())))
                    }
                },
            }
        }
        (None, Some(m)) => Some(Action::Remove {
            key: Some(key.clone()),
            copy: copy_ref(m),
            mapping: Some(m.clone()),
        }),
        (None, None) => None,
    }
}

/// The orphans: copies of desired instances that a lost mapping left behind are adopted
/// (unless `planned` already covers the instance); every other present copy nobody maps, and
/// every extra mapping, is removed, except the older copies of a desired instance whose
/// current copy is not present yet (held: the old copy goes only after its replacement is
/// registered).
pub(crate) fn plan_orphans(views: &Views, planned: &[Action], stale: bool, now_ms: u64) -> Orphans {
    // An extra mapping's copy is removed with that mapping, not a second time as an orphan.
    let mapped: HashSet<&str> = views
        .mappings()
        .values()
        .chain(&views.extra_mappings)
        .map(|m| m.instance_id.as_str())
        .collect();
    let planned_keys: HashSet<&InstanceRef> = planned.iter().filter_map(Action::key).collect();
    let mut adoptions = Vec::new();
    if !stale {
        for key in views.desired.keys() {
            if !views.mappings().contains_key(key)
                && !planned_keys.contains(key)
                && let Some(action) = adoption(views, key, now_ms)
            {
                adoptions.push(action);
            }
        }
    }
    let adopted: HashSet<&str> = planned
        .iter()
        .chain(&adoptions)
        .filter_map(|a| match a {
            Action::Adopt { mapping, .. } => Some(mapping.instance_id.as_str()),
            _ => None,
        })
        .collect();
    let mut removals = Vec::new();
    let mut held = Vec::new();
    let unsettled = Unsettled::new(views, &adopted, stale);
    for (id, present) in &views.present {
        if mapped.contains(id.as_str()) || adopted.contains(id.as_str()) {
            continue;
        }
        if !is_copy_id(id) {
            // Only a mapping names it (its property is gone): not an orphan to guess about.
            continue;
        }
        let removal = Action::Remove {
            key: None,
            copy: present.reference(id),
            mapping: None,
        };
        if unsettled.holds_copy(id) {
            held.push(removal);
        } else {
            removals.push(removal);
        }
    }
    for mapping in &views.extra_mappings {
        let removal = Action::Remove {
            key: None,
            copy: copy_ref(mapping),
            mapping: Some(mapping.clone()),
        };
        if unsettled.keys.contains_key(&origin_ref(mapping)) {
            held.push(removal);
        } else {
            removals.push(removal);
        }
    }
    Orphans {
        adoptions,
        removals,
        held,
    }
}

/// What [`plan_orphans`] found.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Orphans {
    /// Copies of desired instances that lost their mapping, to adopt.
    pub adoptions: Vec<Action>,
    /// Removals to ask the guard for.
    pub removals: Vec<Action>,
    /// Removals of an older copy of a desired instance whose current copy is not present
    /// (yet): they wait until it is, so the old copy is never gone before its replacement.
    pub held: Vec<Action>,
}

/// The desired origin instances whose current copy is not present: neither the copy their
/// mapping names nor an adopted one. Their older copies are their last live ones.
struct Unsettled<'a> {
    /// Each with the generation its replacement is registered under.
    keys: HashMap<InstanceRef, u32>,
    views: &'a Views,
    /// The derived ids of their older generations, computed on first need.
    ids: std::cell::OnceCell<HashSet<String>>,
}

impl<'a> Unsettled<'a> {
    /// None while the origin is `stale`: nothing registers a replacement then, and its
    /// copies are let expire anyway.
    fn new(views: &'a Views, adopted: &HashSet<&str>, stale: bool) -> Unsettled<'a> {
        let keys = if stale {
            HashMap::new()
        } else {
            Self::find(views, adopted)
        };
        Unsettled {
            keys,
            views,
            ids: std::cell::OnceCell::new(),
        }
    }

    fn find(views: &Views, adopted: &HashSet<&str>) -> HashMap<InstanceRef, u32> {
        views
            .desired
            .keys()
            .filter_map(|key| match views.mappings().get(key) {
                Some(m) if views.present.contains_key(&m.instance_id) => None,
                Some(m) => Some((key.clone(), m.generation)),
                None => {
                    let adopting = (0..ADOPT_GENERATIONS).any(|g| {
                        adopted.contains(copy_instance_id(&views.origin_key(key), g).as_str())
                    });
                    (!adopting).then(|| (key.clone(), 0))
                }
            })
            .collect()
    }

    /// Whether present copy `id` is an older copy of an unsettled instance (a generation
    /// within [`ADOPT_GENERATIONS`] of its current one, or of the first ones).
    fn holds_copy(&self, id: &str) -> bool {
        if self.keys.is_empty() {
            return false;
        }
        let ids = self.ids.get_or_init(|| {
            let mut ids = HashSet::new();
            for (key, &current) in &self.keys {
                let origin_key = self.views.origin_key(key);
                let older = current.saturating_sub(ADOPT_GENERATIONS)..current;
                for generation in (0..ADOPT_GENERATIONS).chain(older) {
                    ids.insert(copy_instance_id(&origin_key, generation));
                }
            }
            ids
        });
        ids.contains(id)
    }
}

/// The first generation from `start` whose id is not held by a present copy with another
/// body: registering an id the registry holds keeps the body it has (SC ignores the new
/// one), so a copy left there by a registration that timed out but landed is skipped, not
/// reused out of step (it goes as an orphan once the new copy is present).
fn free_generation(views: &Views, key: &InstanceRef, d: &Desired, start: u32) -> u32 {
    let wanted = fingerprint(&d.instance);
    let origin_key = views.origin_key(key);
    let mut generation = start;
    for _ in 0..ADOPT_GENERATIONS {
        match views
            .present
            .get(&copy_instance_id(&origin_key, generation))
        {
            Some(copy) if copy.fingerprint != wanted => generation = generation.wrapping_add(1),
            _ => break,
        }
    }
    generation
}

/// Adopting the present copy of `key` that carries one of its derived ids (generations
/// `0..ADOPT_GENERATIONS`), if any: the lowest whose body matches the desired instance
/// (a crash mid-replacement leaves the old and the new copy; the new one is kept), else the
/// lowest.
pub(crate) fn adoption(views: &Views, key: &InstanceRef, now_ms: u64) -> Option<Action> {
    let origin_key = views.origin_key(key);
    let wanted = views.desired.get(key).map(|d| fingerprint(&d.instance));
    let found: Vec<(u32, String, &PresentCopy)> = (0..ADOPT_GENERATIONS)
        .filter_map(|generation| {
            let id = copy_instance_id(&origin_key, generation);
            let present = views.present.get(&id)?;
            Some((generation, id, present))
        })
        .collect();
    let (generation, id, present) = found
        .iter()
        .find(|(_, _, p)| Some(&p.fingerprint) == wanted.as_ref())
        .or_else(|| found.first())?;
    Some(Action::Adopt {
        key: key.clone(),
        mapping: adopted_mapping(views, key, id, present, *generation, now_ms),
    })
}

fn adopted_mapping(
    views: &Views,
    key: &InstanceRef,
    copy_id: &str,
    copy: &PresentCopy,
    generation: u32,
    now_ms: u64,
) -> Mapping {
    Mapping {
        origin: views.origin.clone(),
        domain: key.tenant.domain.clone(),
        project: key.tenant.project.clone(),
        origin_service_id: key.service_id.clone(),
        origin_instance_id: key.instance_id.clone(),
        service_id: copy.service_id.clone(),
        instance_id: copy_id.to_owned(),
        fingerprint: copy.fingerprint.clone(),
        generation,
        updated_ms: now_ms,
    }
}

fn register(key: &InstanceRef, d: &Desired, generation: u32, replace: Option<Mapping>) -> Action {
    Action::Register {
        key: key.clone(),
        service: d.service.clone(),
        instance: d.instance.clone(),
        generation,
        replace,
    }
}

/// Splits `removals` into those the guard lets through now (in order) and those that wait,
/// with the guard's answer.
pub(crate) fn admit_removals(
    guard: &mut RemovalGuard,
    origin: &str,
    mut removals: Vec<Action>,
    now: Instant,
) -> (Vec<Action>, Vec<Action>, Removals) {
    let answer = guard.request(origin, removals.len(), now);
    match answer {
        Removals::Incomplete | Removals::Held(_) => (Vec::new(), removals, answer),
        Removals::Allowed { now: allowed, .. } => {
            let waiting = removals.split_off(allowed);
            (removals, waiting, answer)
        }
    }
}

/// The copies to renew with a heartbeat: all mapped ones (the extra mappings' too: an old
/// copy waiting for its replacement stays alive until it is removed), unless the origin is
/// stale and stale copies are not kept (then they expire with their lease).
pub(crate) fn heartbeat_targets(views: &Views, stale: bool, keep_stale: bool) -> Vec<InstanceRef> {
    if stale && !keep_stale {
        return Vec::new();
    }
    views
        .mappings()
        .values()
        .chain(&views.extra_mappings)
        .map(copy_ref)
        .collect()
}

/// Whether an origin is reachable, judged by the last successful exchange with it (push
/// received, pull answered), not by gossip liveness.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OriginHealth {
    last_ok: Instant,
    stale: bool,
    /// Stale for longer than `--keep-stale-for`: its copies are no longer kept alive even
    /// with `--keep-stale-copies`.
    keep_ended: bool,
}

/// A change of [`OriginHealth`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HealthChange {
    /// No exchange within the grace period.
    BecameStale,
    /// An exchange after the origin was stale: re-register and heartbeat at once.
    Recovered,
}

impl OriginHealth {
    /// Healthy, as if an exchange happened at `now` (the grace period starts at start-up).
    pub(crate) fn new(now: Instant) -> OriginHealth {
        OriginHealth {
            last_ok: now,
            stale: false,
            keep_ended: false,
        }
    }

    /// Whether this origin's copies are still heartbeated while it is stale: with
    /// `keep_stale` (`--keep-stale-copies`), until [`OriginHealth::check_keep`] said the
    /// bound passed.
    pub(crate) fn keeps_stale_copies(&self, keep_stale: bool) -> bool {
        keep_stale && !self.keep_ended
    }

    /// Looks at the time while stale copies are kept: true once, when more than `grace` +
    /// `keep_for` passed without an exchange (a data centre gone for good must not keep its
    /// copies forever). An exchange starts over.
    pub(crate) fn check_keep(&mut self, now: Instant, grace: Duration, keep_for: Duration) -> bool {
        if self.stale
            && !self.keep_ended
            && now.duration_since(self.last_ok) > grace.saturating_add(keep_for)
        {
            self.keep_ended = true;
            return true;
        }
        false
    }

    /// Whether the grace period passed without an exchange.
    pub(crate) fn is_stale(&self) -> bool {
        self.stale
    }

    /// A successful exchange at `now`.
    pub(crate) fn exchanged(&mut self, now: Instant) -> Option<HealthChange> {
        self.last_ok = now;
        self.keep_ended = false;
        std::mem::replace(&mut self.stale, false).then_some(HealthChange::Recovered)
    }

    /// Looks at the time: stale once more than `grace` passed without an exchange.
    pub(crate) fn check(&mut self, now: Instant, grace: Duration) -> Option<HealthChange> {
        if !self.stale && now.duration_since(self.last_ok) > grace {
            self.stale = true;
            return Some(HealthChange::BecameStale);
        }
        None
    }
}

#[cfg(test)]
mod tests;

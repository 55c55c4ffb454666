//! List payloads and Eureka's two-layer response cache (reference §6.4, `ResponseCacheImpl`).
//!
//! Every list read (`/apps`, `/apps/delta`, `/apps/{APP}`, `/vips/…`, `/svips/…`) is a
//! [`Key`]: the entity and the format. Without the cache a key is rendered on each read. With
//! it (`EurekaDevConfig::response_cache`, real mode), reads are served from a read-only layer,
//! filled on a key's first read from the read-write layer and refreshed from it by a timer at
//! multiples of the period on the clock; the read-write layer renders on demand, keeps a payload
//! for `response_cache_expiry` and is emptied by every change of the registry (register,
//! cancel, status change — not renewals). So a list read before stays stale until the next
//! refresh, while single-instance reads (not cached) are live.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior, interval_at};
use tokio_util::sync::CancellationToken;

use super::model::{AppView, Record, application_json, applications_json};
use super::state::Registry;
use super::xml::{application_xml, applications_xml};

/// `versions__delta` of a full `/apps` read (always 1).
const FULL_VERSION: i64 = 1;
/// `versions__delta` of VIP reads (a fresh `Applications`).
const VIP_VERSION: i64 = -1;

/// The answer format, from `Accept`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    Json,
    Xml,
}

/// What a list read asks for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Entity {
    Apps,
    Delta,
    /// One app (upper-case name).
    App(String),
    Vip(String),
    Svip(String),
}

/// A cache key.
pub type Key = (Entity, Format);

/// Renders a list payload from the registry; `None` for an unknown or empty app.
pub fn render(reg: &Registry, key: &Key) -> Option<String> {
    let (entity, format) = key;
    let format = *format;
    let apps_doc = |version, hash: &str, apps: &[AppView<'_>]| match format {
        Format::Json => applications_json(version, hash, apps),
        Format::Xml => applications_xml(version, hash, apps),
    };
    match entity {
        Entity::Apps => {
            Some(reg.with_apps(|_| true, |apps, hash| apps_doc(FULL_VERSION, hash, apps)))
        }
        Entity::Delta => Some(reg.with_delta(|version, apps, hash| apps_doc(version, hash, apps))),
        Entity::App(name) => reg.with_app(name, |app| match format {
            Format::Json => application_json(app),
            Format::Xml => application_xml(app),
        }),
        Entity::Vip(vip) | Entity::Svip(vip) => {
            let secure = matches!(entity, Entity::Svip(_));
            let matches = |r: &Record| {
                let addr = if secure {
                    r.instance.secure_vip_address.as_deref()
                } else {
                    r.instance.vip_address.as_deref()
                };
                addr.is_some_and(|a| a.split(',').any(|v| v == vip))
            };
            Some(reg.with_apps(matches, |apps, hash| apps_doc(VIP_VERSION, hash, apps)))
        }
    }
}

/// A rendered payload and when it was rendered (Unix ms).
#[derive(Clone, Debug)]
struct Built {
    payload: Option<String>,
    at: i64,
}

#[derive(Debug, Default)]
struct Layers {
    read_write: HashMap<Key, Built>,
    read_only: HashMap<Key, Option<String>>,
    /// The registry's change count the read-write layer was built against.
    changes_seen: u64,
}

/// The response cache of one emulator.
#[derive(Debug, Default)]
pub struct ResponseCache {
    layers: Mutex<Layers>,
}

impl ResponseCache {
    /// The read-write layer's payload for `key`, rendered when missing, expired or invalidated.
    /// Lock order: cache, then registry (the registry never takes the cache lock).
    fn read_write(reg: &Registry, layers: &mut Layers, key: &Key) -> Option<String> {
        let now = reg.clock.now_ms();
        let changes = reg.changes();
        if changes != layers.changes_seen {
            layers.read_write.clear();
            layers.changes_seen = changes;
        }
        let expiry =
            i64::try_from(reg.config.response_cache_expiry.as_millis()).unwrap_or(i64::MAX);
        match layers.read_write.get(key) {
            Some(b) if now.saturating_sub(b.at) < expiry => b.payload.clone(),
            _ => {
                let payload = render(reg, key);
                layers.read_write.insert(
                    key.clone(),
                    Built {
                        payload: payload.clone(),
                        at: now,
                    },
                );
                payload
            }
        }
    }

    /// A read: the read-only layer, filled from the read-write layer on a key's first read.
    pub fn get(&self, reg: &Registry, key: &Key) -> Option<String> {
        let mut layers = self.layers.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(p) = layers.read_only.get(key) {
            return p.clone();
        }
        let payload = Self::read_write(reg, &mut layers, key);
        layers.read_only.insert(key.clone(), payload.clone());
        payload
    }

    /// The timer's copy of every read-only key from the read-write layer.
    pub fn refresh(&self, reg: &Registry) {
        let mut layers = self.layers.lock().unwrap_or_else(PoisonError::into_inner);
        let keys: Vec<Key> = layers.read_only.keys().cloned().collect();
        for key in keys {
            let payload = Self::read_write(reg, &mut layers, &key);
            layers.read_only.insert(key, payload);
        }
    }
}

/// Refreshes the read-only layer every `period`, at multiples of it on the registry's clock
/// (as Eureka aligns its timer to wall-clock multiples of 30 s).
pub async fn refresh_loop(
    cache: std::sync::Arc<super::Server>,
    period: Duration,
    shutdown: CancellationToken,
) {
    let period = period.max(Duration::from_millis(1));
    let period_ms = i64::try_from(period.as_millis()).unwrap_or(i64::MAX);
    let now = cache.registry.clock.now_ms();
    let wait = u64::try_from(period_ms - now.rem_euclid(period_ms)).unwrap_or(0);
    let mut timer = interval_at(Instant::now() + Duration::from_millis(wait), period);
    timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = timer.tick() => cache.cache.refresh(&cache.registry),
        }
    }
}

//! The body of a copy: what syncer registers in this data centre for an instance of another,
//! and how a change of the origin instance is carried over.
//!
//! SC ignores the body when an existing id is registered again (reference §3.1), and only
//! status and properties can be changed in place (§3.9, §3.10). So a change of what can only
//! be set at registration (endpoints, host name, health check, data centre) goes
//! make-before-break: the copy is registered again under the next generation's id, then the
//! old one is removed. The fingerprint stored in the mapping covers exactly those fields.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::time::Duration;

use super::ids::{ORIGIN_PROPERTY, OriginKey, PartsHasher, copy_instance_id};
use crate::registry::{HealthCheck, Instance, InstanceRef, Tenant};

/// Missed heartbeats a registry tolerates before a copy expires: the lease is
/// interval × (2 + 1), three times the heartbeat period.
pub const COPY_HEARTBEAT_TIMES: u32 = 2;

/// The lease syncer gives its copies: a push health check with `interval_secs` between
/// heartbeats and [`COPY_HEARTBEAT_TIMES`] missed ones tolerated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyLease {
    pub interval_secs: u32,
}

impl CopyLease {
    /// The lease closest to `lease` (at least 3 s): heartbeats every third of it.
    pub fn from_lease(lease: Duration) -> CopyLease {
        let secs = u32::try_from(lease.as_secs()).unwrap_or(u32::MAX);
        CopyLease {
            interval_secs: (secs / (COPY_HEARTBEAT_TIMES + 1)).max(1),
        }
    }

    /// Time between two heartbeats of the copies.
    pub fn heartbeat_period(self) -> Duration {
        Duration::from_secs(u64::from(self.interval_secs))
    }
}

impl Default for CopyLease {
    /// 10 s × (2 + 1) = 30 s.
    fn default() -> CopyLease {
        CopyLease { interval_secs: 10 }
    }
}

/// The copy of `origin_instance` (from data centre `key.origin`) to register under local
/// service `service_id` at replacement `generation`.
pub fn copy_body(
    key: &OriginKey,
    origin_instance: &Instance,
    service_id: &str,
    generation: u32,
    lease: CopyLease,
) -> Instance {
    Instance {
        tenant: key.tenant.clone(),
        service_id: service_id.to_owned(),
        instance_id: copy_instance_id(key, generation),
        endpoints: origin_instance.endpoints.clone(),
        host_name: origin_instance.host_name.clone(),
        status: origin_instance.status.clone(),
        properties: copy_properties(&key.origin, &origin_instance.properties),
        // The lease is syncer's: the origin's own check says nothing about the copy's
        // keep-alive, which syncer drives with batch heartbeats.
        health_check: Some(HealthCheck {
            mode: "push".to_owned(),
            interval: lease.interval_secs,
            times: COPY_HEARTBEAT_TIMES,
            port: 0,
            url: String::new(),
        }),
        data_center: origin_instance.data_center.clone(),
        version: origin_instance.version.clone(),
        mod_timestamp: None,
    }
}

/// The origin's properties plus the origin mark. A property update replaces the whole map,
/// so every update carries the mark again.
pub fn copy_properties(
    origin: &str,
    properties: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut out = properties.clone();
    out.insert(ORIGIN_PROPERTY.to_owned(), origin.to_owned());
    out
}

/// A hash of what can only be set when registering: endpoints, host name, data centre.
pub fn fingerprint(instance: &Instance) -> String {
    let mut h = PartsHasher::default();
    h.part(&instance.host_name);
    h.parts(instance.endpoints.iter().map(String::as_str));
    if let Some(dc) = &instance.data_center {
        h.parts([
            dc.name.as_str(),
            dc.region.as_str(),
            dc.available_zone.as_str(),
        ]);
    }
    hex::encode(&h.finish()[..10])
}

/// What the importer keeps of a copy the local registry holds: enough to compare it with
/// its origin instance, not its whole body (10 000 copies would cost megabytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresentCopy {
    pub tenant: Tenant,
    pub service_id: String,
    pub status: String,
    /// [`properties_digest`] of the copy's properties (mark included).
    pub properties: u64,
    /// [`fingerprint`] of the copy.
    pub fingerprint: String,
}

impl PresentCopy {
    pub fn of(copy: &Instance) -> PresentCopy {
        PresentCopy {
            tenant: copy.tenant.clone(),
            service_id: copy.service_id.clone(),
            status: copy.status.clone(),
            properties: properties_digest(&copy.properties),
            fingerprint: fingerprint(copy),
        }
    }

    /// The reference of this copy, whose instance id is `instance_id`.
    pub fn reference(&self, instance_id: &str) -> InstanceRef {
        InstanceRef {
            tenant: self.tenant.clone(),
            service_id: self.service_id.clone(),
            instance_id: instance_id.to_owned(),
        }
    }
}

/// A digest of a property map: equal maps have equal digests.
pub fn properties_digest(properties: &BTreeMap<String, String>) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    properties.hash(&mut h);
    h.finish()
}

/// How to carry a change of the origin instance over to its existing copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopyUpdate {
    /// Register the next generation, then remove the current copy.
    Replace {
        generation: u32,
    },
    /// Change status and/or properties of the current copy in place.
    InPlace {
        status: Option<String>,
        properties: Option<BTreeMap<String, String>>,
    },
    Unchanged,
}

/// Compares the origin instance now with its copy: as its mapping recorded it
/// (`copy_fingerprint`, at `generation`) and as the registry holds it (`copy`). Either
/// fingerprint out of step forces a replacement: the registry keeps the body of an id it
/// already holds, so a registration that timed out but landed, followed by another change,
/// leaves a copy whose body is not what its mapping says.
pub fn plan_update(
    origin: &str,
    origin_instance: &Instance,
    copy: &PresentCopy,
    copy_fingerprint: &str,
    generation: u32,
) -> CopyUpdate {
    let wanted = fingerprint(origin_instance);
    if wanted != copy_fingerprint || wanted != copy.fingerprint {
        return CopyUpdate::Replace {
            generation: generation.wrapping_add(1),
        };
    }
    let status = (origin_instance.status != copy.status).then(|| origin_instance.status.clone());
    let wanted = copy_properties(origin, &origin_instance.properties);
    let properties = (properties_digest(&wanted) != copy.properties).then_some(wanted);
    if status.is_none() && properties.is_none() {
        CopyUpdate::Unchanged
    } else {
        CopyUpdate::InPlace { status, properties }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::ids::is_copy;

    fn key() -> OriginKey {
        OriginKey {
            origin: "dc1".into(),
            tenant: Tenant::default(),
            service_id: "origin-svc".into(),
            instance_id: "i1".into(),
        }
    }

    fn origin_instance() -> Instance {
        Instance {
            service_id: "origin-svc".into(),
            instance_id: "i1".into(),
            host_name: "h1".into(),
            endpoints: vec!["rest://10.0.0.1:8080".into()],
            status: "UP".into(),
            properties: BTreeMap::from([("zone".into(), "a".into())]),
            ..Instance::default()
        }
    }

    /// The importer asks the local registry kind about the copy body, not the origin
    /// instance (`import::actor::KindRules`). What syncer puts there itself (its id, the
    /// origin mark, its lease) must never be what a ServiceComb refuses: a refusal keeps the
    /// instance out of desired, and would remove a copy SC holds fine. Here the origin
    /// instance breaks SC's rules only in fields the copy replaces (a Eureka-style id, a
    /// `tcp` health check of interval 0) and has a full properties map; its copy passes.
    #[test]
    fn syncer_s_own_fields_never_make_servicecomb_refuse_a_copy() {
        use crate::registry::servicecomb::rules::check_instance;
        let origin = Instance {
            instance_id: "host:app:8080".into(),
            health_check: Some(HealthCheck {
                mode: "tcp".into(),
                interval: 0,
                times: 0,
                port: 8080,
                url: "/health check".into(),
            }),
            properties: (0..crate::registry::bounds::MAX_PROPERTIES)
                .map(|n| (format!("k{n}"), "v".into()))
                .collect(),
            ..origin_instance()
        };
        assert!(
            check_instance(&origin).is_err(),
            "SC would refuse the origin"
        );
        let key = OriginKey {
            instance_id: origin.instance_id.clone(),
            ..key()
        };
        for (generation, lease) in [
            (0, CopyLease::default()),
            (7, CopyLease::from_lease(Duration::ZERO)),
            (u32::MAX, CopyLease::from_lease(Duration::MAX)),
        ] {
            let copy = copy_body(&key, &origin, "local-svc", generation, lease);
            assert_eq!(check_instance(&copy), Ok(()), "generation {generation}");
        }
    }

    #[test]
    fn a_copy_is_marked_and_leased_by_syncer() {
        let copy = copy_body(
            &key(),
            &origin_instance(),
            "local-svc",
            0,
            CopyLease::default(),
        );
        assert!(is_copy(&copy));
        assert_eq!(copy.service_id, "local-svc");
        assert_eq!(copy.instance_id, copy_instance_id(&key(), 0));
        assert_eq!(
            copy.properties.get(ORIGIN_PROPERTY).map(String::as_str),
            Some("dc1")
        );
        assert_eq!(copy.properties.get("zone").map(String::as_str), Some("a"));
        assert_eq!(
            copy.health_check.as_ref().map(HealthCheck::ttl_seconds),
            Some(30)
        );
        assert_eq!(fingerprint(&copy), fingerprint(&origin_instance()));
    }

    #[test]
    fn updates_go_in_place_or_make_before_break() {
        let origin = origin_instance();
        let body = copy_body(&key(), &origin, "local-svc", 3, CopyLease::default());
        let fp = fingerprint(&body);
        let copy = PresentCopy::of(&body);
        assert_eq!(copy.fingerprint, fp);
        assert_eq!(copy.reference(&body.instance_id), body.reference());
        assert_eq!(
            plan_update("dc1", &origin, &copy, &fp, 3),
            CopyUpdate::Unchanged
        );

        let mut down = origin.clone();
        down.status = "DOWN".into();
        assert_eq!(
            plan_update("dc1", &down, &copy, &fp, 3),
            CopyUpdate::InPlace {
                status: Some("DOWN".into()),
                properties: None
            }
        );

        let mut relabelled = origin.clone();
        relabelled.properties.insert("zone".into(), "b".into());
        let CopyUpdate::InPlace {
            status: None,
            properties: Some(props),
        } = plan_update("dc1", &relabelled, &copy, &fp, 3)
        else {
            panic!("expected a property update");
        };
        assert_eq!(
            props.get(ORIGIN_PROPERTY).map(String::as_str),
            Some("dc1"),
            "mark kept"
        );

        let mut moved = origin.clone();
        moved.endpoints = vec!["rest://10.0.0.2:8080".into()];
        assert_eq!(
            plan_update("dc1", &moved, &copy, &fp, 3),
            CopyUpdate::Replace { generation: 4 }
        );
        let mut renamed = origin.clone();
        renamed.host_name = "h2".into();
        assert!(matches!(
            plan_update("dc1", &renamed, &copy, &fp, 3),
            CopyUpdate::Replace { .. }
        ));

        // The mapping says the copy was registered like the origin, the registry holds an
        // older body under its id: replaced.
        let mut landed_late = body.clone();
        landed_late.endpoints = vec!["rest://10.0.0.9:8080".into()];
        assert_eq!(
            plan_update("dc1", &origin, &PresentCopy::of(&landed_late), &fp, 3),
            CopyUpdate::Replace { generation: 4 }
        );
    }
}

//! Conversions between SC's wire types and the registry-neutral model, the tenant carried by
//! the dump's etcd keys (reference §5.2), and which services belong to SC itself.

use std::collections::{BTreeMap, BTreeSet};

use super::wire::{WireDataCenter, WireFramework, WireHealthCheck, WireInstance, WireService};
use crate::registry::model::DataCenterInfo;
use crate::registry::{HealthCheck, Instance, Service, Tenant};

/// Key prefix of stored services: `/cse-sr/ms/files/<domain>/<project>/<serviceId>`.
const SERVICE_KEY_PREFIX: &str = "/cse-sr/ms/files/";
/// Key prefix of instances: `/cse-sr/inst/files/<domain>/<project>/<serviceId>/<instanceId>`.
const INSTANCE_KEY_PREFIX: &str = "/cse-sr/inst/files/";

/// The name of SC's own service (reference §1.5).
pub(super) const SERVICECENTER: &str = "SERVICECENTER";

/// Services that belong to the registry itself: `SERVICECENTER` and the shared services
/// (reference §3.5.4), all in `default/default` with appId `default`. They and their
/// instances are never part of a snapshot or a feed.
#[derive(Debug, Clone)]
pub(super) struct InternalServices {
    names: BTreeSet<String>,
}

impl InternalServices {
    /// `SERVICECENTER` is always internal, whatever `shared` says.
    pub fn new(shared: &[String]) -> InternalServices {
        let mut names: BTreeSet<String> = shared.iter().cloned().collect();
        names.insert(SERVICECENTER.to_owned());
        InternalServices { names }
    }

    /// Whether a find for `(app, name)` is redirected to `default/default` by SC, whatever
    /// the caller's tenant (reference §3.5.4): such a service cannot be polled by find.
    pub fn is_shared_name(&self, app: &str, name: &str) -> bool {
        app == "default" && self.names.contains(name)
    }

    /// Whether `(tenant, app, name)` is one of the registry's own services.
    pub fn is_internal(&self, tenant: &Tenant, app: &str, name: &str) -> bool {
        tenant.domain == "default" && tenant.project == "default" && self.is_shared_name(app, name)
    }
}

/// `/cse-sr/ms/files/<domain>/<project>/<serviceId>` → tenant and service id.
pub(super) fn parse_service_key(key: &str) -> Option<(Tenant, &str)> {
    let rest = key.strip_prefix(SERVICE_KEY_PREFIX)?;
    let mut parts = rest.split('/');
    let (domain, project, service) = (parts.next()?, parts.next()?, parts.next()?);
    let complete =
        parts.next().is_none() && !domain.is_empty() && !project.is_empty() && !service.is_empty();
    complete.then(|| (Tenant::new(domain, project), service))
}

/// `/cse-sr/inst/files/<domain>/<project>/<serviceId>/<instanceId>` → tenant, service id
/// and instance id.
pub(super) fn parse_instance_key(key: &str) -> Option<(Tenant, &str, &str)> {
    let rest = key.strip_prefix(INSTANCE_KEY_PREFIX)?;
    let mut parts = rest.split('/');
    let (domain, project, service, instance) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let complete = parts.next().is_none()
        && [domain, project, service, instance]
            .iter()
            .all(|p| !p.is_empty());
    complete.then(|| (Tenant::new(domain, project), service, instance))
}

/// A stored service of `tenant` in the model.
pub(super) fn service_from_wire(tenant: Tenant, wire: WireService) -> Service {
    Service {
        tenant,
        service_id: wire.service_id,
        app: wire.app_id,
        name: wire.service_name,
        version: wire.version,
        environment: wire.environment,
        alias: wire.alias,
        description: wire.description,
        level: wire.level,
        status: wire.status,
        properties: wire.properties,
        schemas: wire.schemas,
        schema_summaries: BTreeMap::new(),
        tags: BTreeMap::new(),
        rules: Vec::new(),
        framework: wire.framework.map(|f| (f.name, f.version)),
        register_by: wire.register_by,
    }
}

/// The body of a create call for `service` (reference §2.1): the id is sent when chosen.
pub(super) fn service_to_wire(service: &Service) -> WireService {
    WireService {
        service_id: service.service_id.clone(),
        app_id: service.app.clone(),
        service_name: service.name.clone(),
        version: service.version.clone(),
        description: service.description.clone(),
        level: service.level.clone(),
        schemas: service.schemas.clone(),
        status: service.status.clone(),
        properties: service.properties.clone(),
        alias: service.alias.clone(),
        environment: service.environment.clone(),
        register_by: service.register_by.clone(),
        framework: service
            .framework
            .as_ref()
            .map(|(name, version)| WireFramework {
                name: name.clone(),
                version: version.clone(),
            }),
    }
}

/// An instance of `service_id` in `tenant`, in the model. The service id of the caller's
/// context wins over the one in the body (SC fills it, but older dumps may not).
pub(super) fn instance_from_wire(tenant: Tenant, service_id: &str, wire: WireInstance) -> Instance {
    Instance {
        tenant,
        service_id: service_id.to_owned(),
        instance_id: wire.instance_id,
        endpoints: wire.endpoints,
        host_name: wire.host_name,
        status: wire.status,
        properties: wire.properties,
        health_check: wire.health_check.map(|h| HealthCheck {
            mode: h.mode,
            interval: h.interval,
            times: h.times,
            port: h.port,
            url: h.url,
        }),
        data_center: wire.data_center_info.map(|d| DataCenterInfo {
            name: d.name,
            region: d.region,
            available_zone: d.available_zone,
        }),
        version: wire.version,
        mod_timestamp: wire.mod_timestamp,
    }
}

/// The body of a register call for `instance` (reference §3.1). The service id travels in
/// the path; output-only fields are not sent.
pub(super) fn instance_to_wire(instance: &Instance) -> WireInstance {
    WireInstance {
        instance_id: instance.instance_id.clone(),
        service_id: String::new(),
        endpoints: instance.endpoints.clone(),
        host_name: instance.host_name.clone(),
        status: instance.status.clone(),
        properties: instance.properties.clone(),
        health_check: instance.health_check.as_ref().map(|h| {
            let (interval, times) = if h.mode == "push" {
                push_lease(h.interval, h.times)
            } else {
                (h.interval, h.times)
            };
            WireHealthCheck {
                mode: h.mode.clone(),
                interval,
                times,
                port: h.port,
                url: h.url.clone(),
            }
        }),
        data_center_info: instance.data_center.as_ref().map(|d| WireDataCenter {
            name: d.name.clone(),
            region: d.region.clone(),
            available_zone: d.available_zone.clone(),
        }),
        version: String::new(),
        mod_timestamp: None,
    }
}

/// The services of a `GET …/microservices` answer of `tenant`, without internal ones.
pub(super) fn services_of_tenant(
    tenant: &Tenant,
    wire: Vec<WireService>,
    internal: &InternalServices,
) -> BTreeMap<String, Service> {
    wire.into_iter()
        .filter(|s| {
            !s.service_id.is_empty() && !internal.is_internal(tenant, &s.app_id, &s.service_name)
        })
        .map(|s| (s.service_id.clone(), service_from_wire(tenant.clone(), s)))
        .collect()
}

/// SC 2.x raises a push check to at least `interval` 5 s and `times` 3 at registration,
/// which would stretch a copy's lease `interval × (times + 1)` (10 s × 2 = 30 s would
/// become 10 s × 3 = 40 s). A lease of 20 s or more is sent in the form that keeps it:
/// `times` of at least 3 and `interval` of at least 5 s, rounded up (never shorter), which
/// SC 1.4.8 and 2.x both store unchanged. A shorter lease is sent as it is: 1.4.8 keeps it,
/// and 2.x's shortest lease is 20 s anyway. Either way the lease SC grants is at least the
/// one asked for, so the caller's heartbeats stay in time.
pub(super) fn push_lease(interval: u32, times: u32) -> (u32, u32) {
    const MIN_INTERVAL: u32 = 5;
    const MIN_TIMES: u32 = 3;
    let lease = u64::from(interval) * (u64::from(times) + 1);
    if lease < u64::from(MIN_INTERVAL * (MIN_TIMES + 1)) {
        return (interval, times);
    }
    let times = times.max(MIN_TIMES);
    let interval = lease
        .div_ceil(u64::from(times) + 1)
        .max(u64::from(MIN_INTERVAL));
    (u32::try_from(interval).unwrap_or(u32::MAX), times)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What SC 2.x does to a push check at registration (`populateInstanceDefaultValue`).
    fn sc2_raises(interval: u32, times: u32) -> (u32, u32) {
        (interval.max(5), times.max(3))
    }

    /// A copy's lease as sent survives SC 2.x's minimums: SC stores it unchanged, and it is
    /// never shorter than the lease asked for (the importer heartbeats for that one).
    #[test]
    fn a_push_lease_is_sent_in_a_form_sc_2_keeps() {
        for (interval, times) in [(10, 2), (1, 2), (3, 2), (30, 3), (7, 0), (100, 2)] {
            let asked = interval * (times + 1);
            let (i, t) = push_lease(interval, times);
            if asked >= 20 {
                assert_eq!(
                    sc2_raises(i, t),
                    (i, t),
                    "{interval}/{times} kept by SC 2.x"
                );
            } else {
                assert_eq!((i, t), (interval, times), "kept for SC 1.4.8");
            }
            let (gi, gt) = sc2_raises(i, t);
            let granted = gi * (gt + 1);
            assert!(
                granted >= asked,
                "{interval}/{times}: {granted} s < {asked} s"
            );
            if asked >= 20 {
                assert!(granted < asked + gt + 1, "{interval}/{times}: {granted} s");
            }
        }
        let copy = Instance {
            health_check: Some(crate::registry::HealthCheck {
                mode: "push".into(),
                interval: 10,
                times: 2,
                port: 0,
                url: String::new(),
            }),
            ..Instance::default()
        };
        let wire = instance_to_wire(&copy).health_check.unwrap();
        assert_eq!((wire.interval, wire.times), (8, 3));
    }

    #[test]
    fn keys_carry_the_tenant() {
        assert_eq!(
            parse_service_key("/cse-sr/ms/files/d1/p1/sid"),
            Some((Tenant::new("d1", "p1"), "sid"))
        );
        assert_eq!(parse_service_key("/cse-sr/ms/files/d1/p1"), None);
        assert_eq!(parse_service_key("/cse-sr/ms/files/d1/p1/sid/x"), None);
        assert_eq!(
            parse_instance_key("/cse-sr/inst/files/default/default/s/i"),
            Some((Tenant::default_tenant(), "s", "i"))
        );
        assert_eq!(parse_instance_key("/cse-sr/inst/files/default//s/i"), None);
    }

    #[test]
    fn internal_services_are_default_tenant_default_app() {
        let internal = InternalServices::new(&["SHARED".to_owned()]);
        let home = Tenant::default_tenant();
        assert!(internal.is_internal(&home, "default", "SERVICECENTER"));
        assert!(internal.is_internal(&home, "default", "SHARED"));
        assert!(!internal.is_internal(&home, "app", "SERVICECENTER"));
        assert!(!internal.is_internal(&Tenant::new("d", "p"), "default", "SERVICECENTER"));
        assert!(internal.is_shared_name("default", "SERVICECENTER"));
    }
}

//! The registry-neutral data model the sync engine works with.
//!
//! Field names follow ServiceComb's vocabulary (the first registry), but nothing here is a
//! wire type: each adapter converts its own JSON into these structs. Strings stay strings
//! (statuses, environments) because registries know values other registries lack.

use std::collections::BTreeMap;
use std::fmt;

/// A tenant: ServiceComb's `domain/project` (`default/default` unless multi-tenant).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tenant {
    pub domain: String,
    pub project: String,
}

impl Tenant {
    pub fn new(domain: impl Into<String>, project: impl Into<String>) -> Tenant {
        Tenant {
            domain: domain.into(),
            project: project.into(),
        }
    }

    /// `default/default`.
    pub fn default_tenant() -> Tenant {
        Tenant::new("default", "default")
    }

    /// Parses `domain/project`.
    pub fn parse(text: &str) -> Option<Tenant> {
        let (domain, project) = text.split_once('/')?;
        (!domain.is_empty() && !project.is_empty() && !project.contains('/'))
            .then(|| Tenant::new(domain, project))
    }
}

impl Default for Tenant {
    fn default() -> Tenant {
        Tenant::default_tenant()
    }
}

impl fmt::Display for Tenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.domain, self.project)
    }
}

/// A microservice.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Service {
    pub tenant: Tenant,
    pub service_id: String,
    pub app: String,
    pub name: String,
    pub version: String,
    /// `""` (the default), `development`, `testing`, `acceptance` or `production`.
    pub environment: String,
    pub alias: String,
    pub description: String,
    /// `FRONT`, `MIDDLE` or `BACK`; empty means the registry's default.
    pub level: String,
    /// `UP` or `DOWN`; empty means the registry's default.
    pub status: String,
    pub properties: BTreeMap<String, String>,
    pub schemas: Vec<String>,
    /// The summary (the SDK's content hash; may be empty) of each schema that has content,
    /// by schema id: what says *which* contracts exist and whether one changed, without the
    /// contents, which are read from the registry only when a peer asks for them
    /// ([`super::Registry::schemas`]). Empty where the registry or adapter does not know.
    pub schema_summaries: BTreeMap<String, String>,
    /// The service's tags (ServiceComb's `…/tags`): what consumers' access rules test.
    pub tags: BTreeMap<String, String>,
    /// The service's black/white access rules (ServiceComb's `…/rules`), in a stable order.
    pub rules: Vec<AccessRule>,
    /// Framework name and version, when the registry knows them.
    pub framework: Option<(String, String)>,
    /// `SDK`, `SIDECAR` or `PLATFORM`, when known.
    pub register_by: String,
}

/// One black/white-list access rule of a provider: which consumers may find it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct AccessRule {
    /// `BLACK` or `WHITE` (all rules of a service are of one type).
    pub rule_type: String,
    /// The consumer attribute tested: `tag_<key>` or a service field (`ServiceName`, ...).
    pub attribute: String,
    /// A regular expression searched in the attribute's value.
    pub pattern: String,
    pub description: String,
}

/// One contract (schema) of a service, with its content.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Schema {
    /// The schema id (a Java-chassis schema id is the name of the contract).
    pub id: String,
    /// The registry's summary of the content (the SDK's hash of it); may be empty.
    pub summary: String,
    /// The contract itself (OpenAPI YAML for Java-chassis).
    pub content: String,
}

/// How the registry decides an instance is alive.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HealthCheck {
    /// `push` (the instance sends heartbeats) or `pull`.
    pub mode: String,
    /// Seconds between heartbeats.
    pub interval: u32,
    /// Missed heartbeats tolerated.
    pub times: u32,
    pub port: u32,
    pub url: String,
}

impl HealthCheck {
    /// The lease a registry derives from this check: interval × (times + 1) seconds.
    pub fn ttl_seconds(&self) -> u64 {
        u64::from(self.interval) * (u64::from(self.times) + 1)
    }
}

/// Where an instance runs, when the registry records it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DataCenterInfo {
    pub name: String,
    pub region: String,
    pub available_zone: String,
}

/// A microservice instance.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Instance {
    pub tenant: Tenant,
    pub service_id: String,
    pub instance_id: String,
    pub endpoints: Vec<String>,
    pub host_name: String,
    /// `UP`, `DOWN`, `STARTING`, `TESTING` or `OUTOFSERVICE`.
    pub status: String,
    pub properties: BTreeMap<String, String>,
    pub health_check: Option<HealthCheck>,
    pub data_center: Option<DataCenterInfo>,
    /// The service version, as the registry reports it with the instance.
    pub version: String,
    /// Last modification time reported by the registry (Unix seconds), if any. Heartbeats
    /// do not change it.
    pub mod_timestamp: Option<u64>,
}

/// Prefix of the instance id of every copy syncer registers (see `sync::ids`, which owns
/// the convention).
pub const COPY_ID_PREFIX: &str = "syncer-";
/// Property naming the origin data centre of a copy.
pub const ORIGIN_PROPERTY: &str = "syncer.origin";

impl Instance {
    /// Whether the instance carries either mark of a copy syncer registered. Adapters use it
    /// only to poll what syncer wrote itself less often.
    pub fn carries_copy_mark(&self) -> bool {
        self.instance_id.starts_with(COPY_ID_PREFIX)
            || self.properties.contains_key(ORIGIN_PROPERTY)
    }

    /// Equal in everything a copy carries: the modification time does not count.
    pub fn same_body(&self, other: &Instance) -> bool {
        // Destructured, so that a new field has to be considered here.
        let Instance {
            tenant,
            service_id,
            instance_id,
            endpoints,
            host_name,
            status,
            properties,
            health_check,
            data_center,
            version,
            mod_timestamp: _,
        } = self;
        *tenant == other.tenant
            && *service_id == other.service_id
            && *instance_id == other.instance_id
            && *endpoints == other.endpoints
            && *host_name == other.host_name
            && *status == other.status
            && *properties == other.properties
            && *health_check == other.health_check
            && *data_center == other.data_center
            && *version == other.version
    }

    /// A digest of what [`Instance::same_body`] compares: two instances with the same body
    /// have the same digest. Change feeds keep digests rather than bodies.
    pub fn body_digest(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        // Destructured like `same_body`, so that a new field has to be considered here too.
        let Instance {
            tenant,
            service_id,
            instance_id,
            endpoints,
            host_name,
            status,
            properties,
            health_check,
            data_center,
            version,
            mod_timestamp: _,
        } = self;
        let mut h = std::hash::DefaultHasher::new();
        instance_id.hash(&mut h);
        service_id.hash(&mut h);
        tenant.hash(&mut h);
        status.hash(&mut h);
        endpoints.hash(&mut h);
        properties.hash(&mut h);
        host_name.hash(&mut h);
        health_check.hash(&mut h);
        data_center.hash(&mut h);
        version.hash(&mut h);
        h.finish()
    }

    /// The reference naming this instance.
    pub fn reference(&self) -> InstanceRef {
        InstanceRef {
            tenant: self.tenant.clone(),
            service_id: self.service_id.clone(),
            instance_id: self.instance_id.clone(),
        }
    }
}

/// Names one instance: tenant, service id and instance id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InstanceRef {
    pub tenant: Tenant,
    pub service_id: String,
    pub instance_id: String,
}

impl fmt::Display for InstanceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{}",
            self.tenant, self.service_id, self.instance_id
        )
    }
}

/// Every service and instance of a registry at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub services: Vec<Service>,
    pub instances: Vec<Instance>,
}

impl Snapshot {
    /// The instance named by `r`, if present.
    pub fn instance(&self, r: &InstanceRef) -> Option<&Instance> {
        self.instances.iter().find(|i| {
            i.tenant == r.tenant && i.service_id == r.service_id && i.instance_id == r.instance_id
        })
    }

    /// The service `service_id` of `tenant`, if present.
    pub fn service(&self, tenant: &Tenant, service_id: &str) -> Option<&Service> {
        self.services
            .iter()
            .find(|s| &s.tenant == tenant && s.service_id == service_id)
    }
}

/// One change reported by a [`super::ChangeFeed`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A service appeared or changed.
    Service(Service),
    /// A service is gone, with all its instances.
    ServiceRemoved { tenant: Tenant, service_id: String },
    /// An instance appeared or changed (status, properties, endpoints).
    Instance(Instance),
    /// An instance is gone.
    InstanceRemoved(InstanceRef),
    /// The full state: anything not in it is gone.
    Resync(Snapshot),
}

/// Which registry an adapter talks to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryIdentity {
    /// Adapter kind (`servicecenter`).
    pub kind: String,
    /// The registry's own version string.
    pub version: String,
    /// A stable identifier of the registry (not of the address used to reach it).
    pub id: String,
}

/// The changes that turn `old` into `new`: removed instances and services, then new or
/// changed services and instances. Adapters whose registry offers no change stream build
/// their feed on this.
pub fn diff(old: &Snapshot, new: &Snapshot) -> Vec<Change> {
    use std::collections::HashMap;
    let old_services: HashMap<(&Tenant, &str), &Service> = old
        .services
        .iter()
        .map(|s| ((&s.tenant, s.service_id.as_str()), s))
        .collect();
    let new_services: HashMap<(&Tenant, &str), &Service> = new
        .services
        .iter()
        .map(|s| ((&s.tenant, s.service_id.as_str()), s))
        .collect();
    let key = |i: &Instance| {
        (
            i.tenant.clone(),
            i.service_id.clone(),
            i.instance_id.clone(),
        )
    };
    let old_instances: HashMap<_, &Instance> = old.instances.iter().map(|i| (key(i), i)).collect();
    let new_instances: HashMap<_, &Instance> = new.instances.iter().map(|i| (key(i), i)).collect();

    let mut changes = Vec::new();
    for instance in &old.instances {
        if !new_instances.contains_key(&key(instance)) {
            changes.push(Change::InstanceRemoved(instance.reference()));
        }
    }
    for service in &old.services {
        if !new_services.contains_key(&(&service.tenant, service.service_id.as_str())) {
            changes.push(Change::ServiceRemoved {
                tenant: service.tenant.clone(),
                service_id: service.service_id.clone(),
            });
        }
    }
    for service in &new.services {
        if old_services.get(&(&service.tenant, service.service_id.as_str())) != Some(&service) {
            changes.push(Change::Service(service.clone()));
        }
    }
    for instance in &new.instances {
        let changed = old_instances
            .get(&key(instance))
            .is_none_or(|old| !old.same_body(instance));
        if changed {
            changes.push(Change::Instance(instance.clone()));
        }
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(id: &str, status: &str) -> Instance {
        Instance {
            tenant: Tenant::default_tenant(),
            service_id: "s".into(),
            instance_id: id.into(),
            status: status.into(),
            ..Instance::default()
        }
    }

    #[test]
    fn diff_reports_adds_changes_and_removals() {
        let service = Service {
            tenant: Tenant::default_tenant(),
            service_id: "s".into(),
            ..Service::default()
        };
        let old = Snapshot {
            services: vec![service.clone()],
            instances: vec![instance("a", "UP"), instance("b", "UP")],
        };
        let mut touched = instance("a", "UP");
        touched.mod_timestamp = Some(5);
        let new = Snapshot {
            services: vec![service],
            instances: vec![touched, instance("b", "DOWN"), instance("c", "UP")],
        };
        let changes = diff(&old, &new);
        assert_eq!(
            changes,
            vec![
                Change::Instance(instance("b", "DOWN")),
                Change::Instance(instance("c", "UP"))
            ]
        );
        let back = diff(&new, &Snapshot::default());
        assert_eq!(
            back.len(),
            4,
            "three instances and one service removed: {back:?}"
        );
    }

    #[test]
    fn tenant_parse() {
        assert_eq!(Tenant::parse("a/b"), Some(Tenant::new("a", "b")));
        assert_eq!(Tenant::parse("a"), None);
        assert_eq!(Tenant::parse("a/b/c"), None);
    }
}

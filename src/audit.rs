//! The consistency audit: given what every data centre's registry holds (its own instances,
//! the copies it holds of the others', its mapping table and its service filter), find where
//! the pool is not an exact mirror. Pure: no I/O, no clock. `syncer diff` and the daemon's
//! periodic inspection feed it and report what it finds.
//!
//! For every origin data centre O and every other data centre D, what D should hold is a copy
//! of each instance O offers (O's own instances of the services O's filter exports and D's
//! filter imports). Against that, each of D's copies naming O is matched to the origin
//! instance it mirrors, by D's mapping table, else by its derived id (a copy id is a hash of
//! the origin instance and a generation, `sync::ids`), and the audit reports:
//! - **missing**: an offered instance of O without a copy in D;
//! - **stale**: a copy of an O instance that O no longer holds (or no longer offers to D);
//! - **duplicate**: two or more copies in D of one O instance;
//! - **unmapped**: a copy in D that D's mapping table does not know;
//! - **copy of a copy**: a copy in D of an instance that is itself a copy in O, or a copy in
//!   D naming D as its origin;
//! - **drift**: a copy whose status, endpoints, host name or properties (syncer's mark
//!   aside) differ from its origin instance.
//!
//! Changes in flight look like drift for a moment; callers audit twice, a settle time apart,
//! and keep only what both rounds found ([`Finding::key`], [`persisting`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;

use crate::registry::filter::ServiceFilter;
use crate::registry::{Instance, Service, Tenant};
use crate::store::Mapping;
use crate::sync::ids::{ORIGIN_PROPERTY, OriginKey, copy_instance_id, copy_origin};

/// Replacement generations tried when matching an unmapped copy by its derived id.
const GENERATIONS: u32 = 8;

/// What one data centre holds, as its active syncer reads it.
#[derive(Debug, Clone, Default)]
pub struct Inventory {
    /// The data centre's name (cluster name).
    pub name: String,
    /// Its services (to name an instance's service, and to apply the filters).
    pub services: Vec<Service>,
    /// Its own instances (without syncer's marks).
    pub own: Vec<Instance>,
    /// The copies it holds of other data centres' instances (with syncer's mark).
    pub copies: Vec<Instance>,
    /// Its mapping table.
    pub mappings: Vec<Mapping>,
    /// Its service filter (`--include`, `--exclude`).
    pub filter: ServiceFilter,
}

impl Inventory {
    /// What data centre `name` holds, its instances split into its own and the copies (those
    /// with syncer's marks).
    pub fn new(
        name: String,
        services: Vec<Service>,
        instances: Vec<Instance>,
        mappings: Vec<Mapping>,
        filter: ServiceFilter,
    ) -> Inventory {
        let (copies, own) = instances.into_iter().partition(crate::sync::ids::is_copy);
        Inventory {
            name,
            services,
            own,
            copies,
            mappings,
            filter,
        }
    }
}

/// What kind of inconsistency a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Missing,
    Stale,
    Duplicate,
    Unmapped,
    CopyOfCopy,
    Drift,
}

impl Kind {
    /// Every kind, in report order.
    pub const ALL: [Kind; 6] = [
        Kind::Missing,
        Kind::Stale,
        Kind::Duplicate,
        Kind::Unmapped,
        Kind::CopyOfCopy,
        Kind::Drift,
    ];

    /// The name reports and metrics use.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Missing => "missing",
            Kind::Stale => "stale",
            Kind::Duplicate => "duplicate",
            Kind::Unmapped => "unmapped",
            Kind::CopyOfCopy => "copy_of_copy",
            Kind::Drift => "drift",
        }
    }
}

/// One inconsistency.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Finding {
    pub kind: Kind,
    /// The origin data centre.
    pub origin: String,
    /// The data centre holding (or lacking) the copy.
    pub dc: String,
    /// `app/name` of the origin service when known, else its service id.
    pub service: String,
    /// The origin instance (`domain/project/service id/instance id`), when known.
    pub instance: Option<String>,
    /// The copies involved (instance ids in `dc`), sorted.
    pub copies: Vec<String>,
    /// What differs, for drift; empty otherwise.
    pub detail: String,
}

impl Finding {
    /// What identifies a finding across two rounds of the audit (the detail may move).
    pub fn key(&self) -> (Kind, &str, &str, Option<&str>, &[String]) {
        (
            self.kind,
            &self.origin,
            &self.dc,
            self.instance.as_deref(),
            &self.copies,
        )
    }
}

/// The findings of `later` that `earlier` found too: what persisted over the settle time.
pub fn persisting(earlier: &[Finding], later: Vec<Finding>) -> Vec<Finding> {
    let before: BTreeSet<_> = earlier.iter().map(Finding::key).collect();
    later
        .into_iter()
        .filter(|f| before.contains(&f.key()))
        .collect()
}

/// An origin instance, by its full reference.
type Ref = (Tenant, String, String);

fn reference(tenant: &Tenant, service_id: &str, instance_id: &str) -> String {
    format!("{tenant}/{service_id}/{instance_id}")
}

/// Audits the pool.
pub fn audit(pool: &[Inventory]) -> Vec<Finding> {
    let mut findings = Vec::new();
    for origin in pool {
        for dc in pool.iter().filter(|d| d.name != origin.name) {
            audit_pair(origin, dc, &mut findings);
        }
    }
    // A copy naming its own data centre mirrors nothing.
    for dc in pool {
        for copy in &dc.copies {
            if copy_origin(copy) == Some(dc.name.as_str()) {
                findings.push(Finding {
                    kind: Kind::CopyOfCopy,
                    origin: dc.name.clone(),
                    dc: dc.name.clone(),
                    service: copy.service_id.clone(),
                    instance: None,
                    copies: vec![copy.instance_id.clone()],
                    detail: "the copy names its own data centre as its origin".into(),
                });
            }
        }
    }
    findings.sort();
    findings
}

fn service_label(services: &HashMap<(Tenant, String), &Service>, t: &Tenant, id: &str) -> String {
    services
        .get(&(t.clone(), id.to_owned()))
        .map_or_else(|| id.to_owned(), |s| format!("{}/{}", s.app, s.name))
}

/// The copies `dc` holds of `origin`'s instances, against what `origin` offers `dc`.
fn audit_pair(origin: &Inventory, dc: &Inventory, findings: &mut Vec<Finding>) {
    let services: HashMap<(Tenant, String), &Service> = origin
        .services
        .iter()
        .map(|s| ((s.tenant.clone(), s.service_id.clone()), s))
        .collect();
    let offered_service = |t: &Tenant, id: &str| {
        services
            .get(&(t.clone(), id.to_owned()))
            .is_some_and(|s| origin.filter.allows(s) && dc.filter.allows(s))
    };
    // Every instance O holds, own or copy, by reference; the own ones O offers to D.
    let own: HashMap<Ref, &Instance> = origin
        .own
        .iter()
        .map(|i| {
            (
                (
                    i.tenant.clone(),
                    i.service_id.clone(),
                    i.instance_id.clone(),
                ),
                i,
            )
        })
        .collect();
    let origin_copies: BTreeSet<Ref> = origin
        .copies
        .iter()
        .map(|i| {
            (
                i.tenant.clone(),
                i.service_id.clone(),
                i.instance_id.clone(),
            )
        })
        .collect();

    // D's mappings of O, by copy id.
    let mapped: HashMap<&str, Ref> = dc
        .mappings
        .iter()
        .filter(|m| m.origin == origin.name)
        .map(|m| {
            (
                m.instance_id.as_str(),
                (
                    Tenant::new(&m.domain, &m.project),
                    m.origin_service_id.clone(),
                    m.origin_instance_id.clone(),
                ),
            )
        })
        .collect();
    // Derived ids of O's instances (own and copies), for copies D has no mapping of.
    let mut derived: HashMap<String, Ref> = HashMap::new();
    let mut derive = |r: &Ref| {
        let key = OriginKey {
            origin: origin.name.clone(),
            tenant: r.0.clone(),
            service_id: r.1.clone(),
            instance_id: r.2.clone(),
        };
        for generation in 0..GENERATIONS {
            derived.insert(copy_instance_id(&key, generation), r.clone());
        }
    };
    own.keys().for_each(&mut derive);
    origin_copies.iter().for_each(&mut derive);

    // D's copies of O, grouped by the origin instance they mirror.
    let mut by_origin: BTreeMap<Ref, Vec<&Instance>> = BTreeMap::new();
    for copy in dc
        .copies
        .iter()
        .filter(|c| copy_origin(c) == Some(origin.name.as_str()))
    {
        let id = copy.instance_id.as_str();
        let mirrors = match mapped.get(id) {
            Some(r) => Some(r.clone()),
            None => {
                findings.push(Finding {
                    kind: Kind::Unmapped,
                    origin: origin.name.clone(),
                    dc: dc.name.clone(),
                    service: copy.service_id.clone(),
                    instance: derived.get(id).map(|r| reference(&r.0, &r.1, &r.2)),
                    copies: vec![id.to_owned()],
                    detail: String::new(),
                });
                derived.get(id).cloned()
            }
        };
        match mirrors {
            Some(r) => by_origin.entry(r).or_default().push(copy),
            None => findings.push(Finding {
                kind: Kind::Stale,
                origin: origin.name.clone(),
                dc: dc.name.clone(),
                service: copy.service_id.clone(),
                instance: None,
                copies: vec![id.to_owned()],
                detail: "mirrors no instance the origin holds".into(),
            }),
        }
    }

    for (r, copies) in &by_origin {
        let service = service_label(&services, &r.0, &r.1);
        let mut ids: Vec<String> = copies.iter().map(|c| c.instance_id.clone()).collect();
        ids.sort();
        let finding = |kind: Kind, detail: String| Finding {
            kind,
            origin: origin.name.clone(),
            dc: dc.name.clone(),
            service: service.clone(),
            instance: Some(reference(&r.0, &r.1, &r.2)),
            copies: ids.clone(),
            detail,
        };
        if origin_copies.contains(r) {
            findings.push(finding(
                Kind::CopyOfCopy,
                "the origin instance is itself a copy".into(),
            ));
            continue;
        }
        let Some(source) = own.get(r) else {
            findings.push(finding(Kind::Stale, "the origin instance is gone".into()));
            continue;
        };
        if !offered_service(&r.0, &r.1) {
            findings.push(finding(
                Kind::Stale,
                "the service filters no longer let it through".into(),
            ));
            continue;
        }
        if copies.len() > 1 {
            findings.push(finding(Kind::Duplicate, String::new()));
        }
        for copy in copies {
            let detail = drift(source, copy);
            if !detail.is_empty() {
                findings.push(Finding {
                    copies: vec![copy.instance_id.clone()],
                    ..finding(Kind::Drift, detail)
                });
            }
        }
    }

    for (r, _) in own
        .iter()
        .filter(|(r, _)| !by_origin.contains_key(*r) && offered_service(&r.0, &r.1))
    {
        findings.push(Finding {
            kind: Kind::Missing,
            origin: origin.name.clone(),
            dc: dc.name.clone(),
            service: service_label(&services, &r.0, &r.1),
            instance: Some(reference(&r.0, &r.1, &r.2)),
            copies: Vec::new(),
            detail: String::new(),
        });
    }
}

/// What differs between an origin instance and its copy, as `field: origin → copy` parts;
/// empty when the copy mirrors it.
fn drift(origin: &Instance, copy: &Instance) -> String {
    let mut parts = Vec::new();
    if origin.status != copy.status {
        parts.push(format!("status: {} → {}", origin.status, copy.status));
    }
    let endpoints = |i: &Instance| i.endpoints.iter().cloned().collect::<BTreeSet<_>>();
    if endpoints(origin) != endpoints(copy) {
        parts.push(format!(
            "endpoints: {:?} → {:?}",
            origin.endpoints, copy.endpoints
        ));
    }
    if origin.host_name != copy.host_name {
        parts.push(format!(
            "host name: {} → {}",
            origin.host_name, copy.host_name
        ));
    }
    let mut properties = copy.properties.clone();
    properties.remove(ORIGIN_PROPERTY);
    if origin.properties != properties {
        let keys: BTreeSet<&String> = origin
            .properties
            .keys()
            .chain(properties.keys())
            .filter(|k| origin.properties.get(*k) != properties.get(*k))
            .collect();
        parts.push(format!(
            "properties differ: {}",
            keys.into_iter().cloned().collect::<Vec<_>>().join(", ")
        ));
    }
    parts.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(id: &str, app: &str, name: &str) -> Service {
        Service {
            tenant: Tenant::default_tenant(),
            service_id: id.into(),
            app: app.into(),
            name: name.into(),
            ..Service::default()
        }
    }

    fn instance(service: &str, id: &str) -> Instance {
        Instance {
            tenant: Tenant::default_tenant(),
            service_id: service.into(),
            instance_id: id.into(),
            endpoints: vec![format!("rest://{id}:8080")],
            host_name: format!("{id}-host"),
            status: "UP".into(),
            properties: BTreeMap::from([("zone".to_owned(), "z1".to_owned())]),
            ..Instance::default()
        }
    }

    /// The copy `dc`'s syncer would write of `source` of `origin`, generation `g`, with
    /// its mapping.
    fn copy_of(
        origin: &str,
        source: &Instance,
        local_service: &str,
        g: u32,
    ) -> (Instance, Mapping) {
        let key = OriginKey {
            origin: origin.into(),
            tenant: source.tenant.clone(),
            service_id: source.service_id.clone(),
            instance_id: source.instance_id.clone(),
        };
        let id = copy_instance_id(&key, g);
        let mut copy = source.clone();
        copy.instance_id = id.clone();
        copy.service_id = local_service.into();
        copy.properties
            .insert(ORIGIN_PROPERTY.into(), origin.into());
        let mapping = Mapping {
            origin: origin.into(),
            domain: source.tenant.domain.clone(),
            project: source.tenant.project.clone(),
            origin_service_id: source.service_id.clone(),
            origin_instance_id: source.instance_id.clone(),
            service_id: local_service.into(),
            instance_id: id,
            fingerprint: String::new(),
            generation: g,
            updated_ms: 0,
        };
        (copy, mapping)
    }

    /// dc1 offers orders/o1 and orders/o2; dc2 mirrors both.
    fn mirrored() -> Vec<Inventory> {
        let o1 = instance("s-orders", "o1");
        let o2 = instance("s-orders", "o2");
        let (c1, m1) = copy_of("dc1", &o1, "l-orders", 0);
        let (c2, m2) = copy_of("dc1", &o2, "l-orders", 0);
        vec![
            Inventory {
                name: "dc1".into(),
                services: vec![service("s-orders", "shop", "orders")],
                own: vec![o1, o2],
                ..Inventory::default()
            },
            Inventory {
                name: "dc2".into(),
                services: vec![service("l-orders", "shop", "orders")],
                copies: vec![c1, c2],
                mappings: vec![m1, m2],
                ..Inventory::default()
            },
        ]
    }

    fn kinds(findings: &[Finding]) -> Vec<(Kind, String)> {
        findings
            .iter()
            .map(|f| (f.kind, f.instance.clone().unwrap_or_default()))
            .collect()
    }

    #[test]
    fn an_exact_mirror_has_no_findings() {
        assert_eq!(audit(&mirrored()), Vec::new());
    }

    #[test]
    fn a_missing_copy_and_a_stale_one_are_named() {
        let mut pool = mirrored();
        pool[1].copies.remove(0);
        pool[1].mappings.remove(0);
        pool[0].own.remove(1);
        let found = audit(&pool);
        assert_eq!(
            kinds(&found),
            [
                (Kind::Missing, "default/default/s-orders/o1".to_owned()),
                (Kind::Stale, "default/default/s-orders/o2".to_owned()),
            ],
            "{found:#?}"
        );
        assert_eq!(found[0].service, "shop/orders");
        assert_eq!(found[0].dc, "dc2");
    }

    #[test]
    fn duplicates_unmapped_copies_and_drift_are_named() {
        let mut pool = mirrored();
        let o1 = pool[0].own[0].clone();
        // A second generation of o1's copy, unmapped: a duplicate and an unmapped copy.
        let (extra, _) = copy_of("dc1", &o1, "l-orders", 1);
        pool[1].copies.push(extra.clone());
        // o2's copy edited behind syncer's back.
        pool[1].copies[1].status = "DOWN".into();
        pool[1].copies[1]
            .properties
            .insert("weight".into(), "9".into());
        let found = audit(&pool);
        let got: Vec<Kind> = found.iter().map(|f| f.kind).collect();
        assert_eq!(
            got,
            [Kind::Duplicate, Kind::Unmapped, Kind::Drift],
            "{found:#?}"
        );
        assert_eq!(found[0].copies.len(), 2);
        assert_eq!(found[1].copies, std::slice::from_ref(&extra.instance_id));
        assert_eq!(
            found[1].instance.as_deref(),
            Some("default/default/s-orders/o1"),
            "the unmapped copy is matched by its derived id"
        );
        assert!(
            found[2].detail.contains("status: UP → DOWN")
                && found[2].detail.contains("properties differ: weight"),
            "{}",
            found[2].detail
        );
    }

    #[test]
    fn copies_of_copies_are_named() {
        let mut pool = mirrored();
        // dc2 holds a copy of o1; a dc3 that mirrors dc2's copy of o1 holds a copy of a copy.
        let copy_in_dc2 = pool[1].copies[0].clone();
        let (copy_of_copy, mapping) = copy_of("dc2", &copy_in_dc2, "l3", 0);
        let (own_copy, own_mapping) = copy_of("dc1", &pool[0].own[0].clone(), "l3", 0);
        let (own_copy2, own_mapping2) = copy_of("dc1", &pool[0].own[1].clone(), "l3", 0);
        let mut self_copy = instance("l3", "x");
        self_copy.instance_id = "syncer-0123456789abcdef0123456789abcdef".into();
        self_copy
            .properties
            .insert(ORIGIN_PROPERTY.into(), "dc3".into());
        pool.push(Inventory {
            name: "dc3".into(),
            copies: vec![copy_of_copy, own_copy, own_copy2, self_copy],
            mappings: vec![mapping, own_mapping, own_mapping2],
            ..Inventory::default()
        });
        let found = audit(&pool);
        let got: Vec<(Kind, &str, &str)> = found
            .iter()
            .map(|f| (f.kind, f.origin.as_str(), f.dc.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (Kind::CopyOfCopy, "dc2", "dc3"),
                (Kind::CopyOfCopy, "dc3", "dc3"),
            ],
            "{found:#?}"
        );
    }

    #[test]
    fn filters_decide_what_is_missing_and_what_is_stale() {
        let mut pool = mirrored();
        pool[0].services.push(service("s-secret", "shop", "secret"));
        pool[0].own.push(instance("s-secret", "x1"));
        // dc1 keeps secret home: nothing is missing.
        pool[0].filter = ServiceFilter::new(Vec::<&str>::new(), ["shop/secret"]).expect("filter");
        assert_eq!(audit(&pool), Vec::new());
        // dc2 stops taking orders: its copies are stale.
        pool[1].filter = ServiceFilter::new(Vec::<&str>::new(), ["shop/orders"]).expect("filter");
        let found = audit(&pool);
        assert_eq!(
            found.iter().map(|f| f.kind).collect::<Vec<_>>(),
            [Kind::Stale, Kind::Stale]
        );
        assert!(found[0].detail.contains("filters"), "{}", found[0].detail);
    }

    #[test]
    fn only_what_persists_over_the_settle_time_counts() {
        let mut pool = mirrored();
        pool[1].copies.remove(0);
        pool[1].mappings.remove(0);
        let first = audit(&pool);
        let mut later_pool = mirrored();
        later_pool[1].copies.remove(1);
        later_pool[1].mappings.remove(1);
        let later = audit(&later_pool);
        // o1's copy was missing, then came; o2's went missing after: nothing persisted.
        assert!(persisting(&first, later.clone()).is_empty());
        assert_eq!(persisting(&later, later.clone()), later);
    }
}

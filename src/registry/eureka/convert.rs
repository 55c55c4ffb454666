//! The mapping between the model and Eureka's instance records (reference §7.3, with the
//! decisions of the issue): lossless for what syncer writes, sensible for native Eureka
//! instances.
//!
//! Eureka knows applications and instances only. What a ServiceComb instance has beyond
//! that travels in the record's metadata under `sc.` keys, each written only when needed:
//!
//! | key | carries |
//! |---|---|
//! | `sc.appId`, `sc.serviceName`, `sc.version` | the service (always written) |
//! | `sc.env`, `sc.tenant` | environment (when set), tenant (when not `default/default`) |
//! | `sc.status` | a status Eureka lacks (`TESTING`): the record says `OUT_OF_SERVICE` |
//! | `sc.hostName` | the host name, when Eureka's `hostName` had to differ (empty) |
//! | `sc.endpoints` | the endpoint list (JSON), when port/securePort do not rebuild it |
//! | `sc.healthCheck` | the health check (JSON), when `leaseInfo` cannot carry it |
//! | `sc.dc` | the data centre `[name, region, zone]` (JSON) |
//! | `sc.p.<hex>` | a property whose key is outside `[A-Za-z0-9._-]` or starts with `sc.` |
//!
//! So metadata keys stay XML element names (Eureka's XML codec makes them elements), and a
//! property can never be mistaken for one of the keys above.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Value, json};
use sha1::{Digest, Sha1};

use super::wire::{Port, WireInstance};
use crate::registry::model::DataCenterInfo;
use crate::registry::{HealthCheck, Instance, Service, Tenant};

pub(super) const APP_ID: &str = "sc.appId";
pub(super) const SERVICE_NAME: &str = "sc.serviceName";
pub(super) const VERSION: &str = "sc.version";
pub(super) const ENV: &str = "sc.env";
pub(super) const TENANT: &str = "sc.tenant";
pub(super) const STATUS: &str = "sc.status";
pub(super) const HOST_NAME: &str = "sc.hostName";
pub(super) const ENDPOINTS: &str = "sc.endpoints";
pub(super) const HEALTH_CHECK: &str = "sc.healthCheck";
pub(super) const DATA_CENTER: &str = "sc.dc";
/// Prefix of an encoded property key: `sc.p.` + lower-case hex of the key's UTF-8 bytes.
pub(super) const ENCODED_PROPERTY: &str = "sc.p.";
/// Prefix of every key the mapping owns.
const RESERVED_PREFIX: &str = "sc.";

/// The application id of a native Eureka instance.
pub(super) const DEFAULT_APP_ID: &str = "default";
/// The version of a native Eureka instance's service (ServiceComb's default).
pub(super) const DEFAULT_VERSION: &str = "0.0.1";

/// Eureka's status names (§7.1).
pub(super) const EUREKA_OUT_OF_SERVICE: &str = "OUT_OF_SERVICE";
/// ServiceComb's statuses the adapter accepts in `set_status`.
pub(super) const MODEL_STATUSES: [&str; 5] = ["UP", "DOWN", "STARTING", "TESTING", "OUTOFSERVICE"];

/// The `dataCenterInfo` every record syncer writes carries (§1.3.4: `@class` is required).
const MY_OWN_CLASS: &str = "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo";

/// The local id of a Eureka service: `eureka-` and 32 lower-case hex digits of SHA-1 over the
/// length-prefixed (u64 big-endian) tenant domain, tenant project, app id, name, version and
/// environment. Eureka has no service ids, so the id is derived from what names a service.
pub fn service_id(service: &Service) -> String {
    let mut hasher = Sha1::new();
    for part in [
        service.tenant.domain.as_str(),
        service.tenant.project.as_str(),
        service.app.as_str(),
        service.name.as_str(),
        service.version.as_str(),
        service.environment.as_str(),
    ] {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    let digest = hex::encode(hasher.finalize());
    format!("eureka-{}", &digest[..32])
}

/// What a Eureka service keeps of `service`: the naming fields, with the id derived from
/// them. Everything else cannot be carried.
pub fn service_entry(service: &Service) -> Service {
    let mut entry = Service {
        tenant: service.tenant.clone(),
        app: service.app.clone(),
        name: service.name.clone(),
        version: service.version.clone(),
        environment: service.environment.clone(),
        ..Service::default()
    };
    entry.service_id = service_id(&entry);
    entry
}

/// The Eureka application of a service: its name upper-cased (§1.1.4).
pub(super) fn app_name(service: &Service) -> String {
    service.name.to_uppercase()
}

/// The Eureka status for a model status: `OUTOFSERVICE`, `TESTING` and anything Eureka does
/// not know become `OUT_OF_SERVICE` (the model status then travels in `sc.status`).
pub(super) fn eureka_status(status: &str) -> &'static str {
    match status {
        "UP" => "UP",
        "DOWN" => "DOWN",
        "STARTING" => "STARTING",
        _ => EUREKA_OUT_OF_SERVICE,
    }
}

/// Whether a property key can be a metadata key as it is.
fn plain_key(key: &str) -> bool {
    !key.is_empty()
        && !key.starts_with(RESERVED_PREFIX)
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The host of an endpoint URL (`rest://10.0.0.1:8080?x`), brackets of IPv6 removed.
fn endpoint_host(endpoint: &str) -> Option<String> {
    let url = url::Url::parse(endpoint).ok()?;
    let host = url.host_str()?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    (!host.is_empty()).then(|| host.to_owned())
}

/// `host:port`, with brackets around an IPv6 host.
fn authority(host: &str, port: u32) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The endpoints Eureka's port and secure port stand for: `rest://ip:port` and
/// `rest://ip:securePort?sslEnabled=true`, for the enabled ones.
fn rebuilt_endpoints(ip: &str, port: Port, secure: Port) -> Vec<String> {
    let mut out = Vec::new();
    if port.enabled {
        out.push(format!("rest://{}", authority(ip, port.number)));
    }
    if secure.enabled {
        out.push(format!(
            "rest://{}?sslEnabled=true",
            authority(ip, secure.number)
        ));
    }
    out
}

/// Port and secure port for `endpoints` served on `ip`: the first plain (`rest`, `http`)
/// and the first TLS (`rest` with `sslEnabled=true`, `https`) endpoint on that host.
fn ports_of(ip: &str, endpoints: &[String]) -> (Port, Port) {
    let off = Port {
        number: 0,
        enabled: false,
    };
    let (mut port, mut secure) = (off, off);
    for endpoint in endpoints {
        let Ok(url) = url::Url::parse(endpoint) else {
            continue;
        };
        let (Some(host), Some(number)) = (endpoint_host(endpoint), url.port_or_known_default())
        else {
            continue;
        };
        if host != ip {
            continue;
        }
        let ssl = url
            .query_pairs()
            .any(|(k, v)| k == "sslEnabled" && v.eq_ignore_ascii_case("true"));
        let found = Port {
            number: u32::from(number),
            enabled: true,
        };
        let tls = match url.scheme() {
            "rest" => ssl,
            "https" => true,
            "http" => false,
            _ => continue,
        };
        let slot = if tls { &mut secure } else { &mut port };
        if !slot.enabled {
            *slot = found;
        }
    }
    (port, secure)
}

/// Whether `leaseInfo` alone carries `check`: a push check on the renewal interval, whose
/// duration (interval × (times + 1)) fits Java's `int`.
fn lease_carries(check: &HealthCheck) -> bool {
    check.mode == "push"
        && check.port == 0
        && check.url.is_empty()
        && check.interval > 0
        && u64::from(check.interval) * (u64::from(check.times) + 1) <= i32::MAX as u64
}

fn port_json(port: Port) -> Value {
    json!({"$": port.number, "@enabled": if port.enabled { "true" } else { "false" }})
}

fn health_check_json(check: Option<&HealthCheck>) -> Value {
    match check {
        None => Value::Null,
        Some(c) => json!({
            "mode": c.mode, "interval": c.interval, "times": c.times, "port": c.port, "url": c.url,
        }),
    }
}

fn health_check_from_json(text: &str) -> Option<Option<HealthCheck>> {
    let value: Value = serde_json::from_str(text).ok()?;
    if value.is_null() {
        return Some(None);
    }
    let number = |key: &str| {
        value
            .get(key)
            .and_then(Value::as_u64)
            .and_then(|n| u32::try_from(n).ok())
    };
    let text = |key: &str| value.get(key).and_then(Value::as_str).map(str::to_owned);
    Some(Some(HealthCheck {
        mode: text("mode")?,
        interval: number("interval")?,
        times: number("times")?,
        port: number("port")?,
        url: text("url")?,
    }))
}

/// The instance record (`{"instance": …}`) of `instance` of `service`, sent with Eureka
/// status `status` and `lastDirtyTimestamp` `stamp`.
pub(super) fn encode(service: &Service, instance: &Instance, status: &str, stamp: u64) -> Value {
    let mut metadata: BTreeMap<String, String> = BTreeMap::new();
    for (key, value) in &instance.properties {
        let key = if plain_key(key) {
            key.clone()
        } else {
            format!("{ENCODED_PROPERTY}{}", hex::encode(key.as_bytes()))
        };
        metadata.insert(key, value.clone());
    }
    metadata.insert(APP_ID.into(), service.app.clone());
    metadata.insert(SERVICE_NAME.into(), service.name.clone());
    metadata.insert(VERSION.into(), service.version.clone());
    if !service.environment.is_empty() {
        metadata.insert(ENV.into(), service.environment.clone());
    }
    if service.tenant != Tenant::default_tenant() {
        metadata.insert(TENANT.into(), service.tenant.to_string());
    }
    if !matches!(
        instance.status.as_str(),
        "UP" | "DOWN" | "STARTING" | "OUTOFSERVICE"
    ) {
        metadata.insert(STATUS.into(), instance.status.clone());
    }
    let ip = instance
        .endpoints
        .iter()
        .find_map(|e| endpoint_host(e))
        .unwrap_or_else(|| instance.host_name.clone());
    let host_name = if instance.host_name.is_empty() {
        metadata.insert(HOST_NAME.into(), String::new());
        ip.clone()
    } else {
        instance.host_name.clone()
    };
    let (port, secure) = ports_of(&ip, &instance.endpoints);
    if rebuilt_endpoints(&ip, port, secure) != instance.endpoints {
        metadata.insert(ENDPOINTS.into(), json!(instance.endpoints).to_string());
    }
    let (renewal, duration) = match &instance.health_check {
        Some(check) if lease_carries(check) => (
            check.interval,
            check.interval * (check.times.saturating_add(1)),
        ),
        other => {
            metadata.insert(
                HEALTH_CHECK.into(),
                health_check_json(other.as_ref()).to_string(),
            );
            (30, 90)
        }
    };
    if let Some(dc) = &instance.data_center {
        metadata.insert(
            DATA_CENTER.into(),
            json!([dc.name, dc.region, dc.available_zone]).to_string(),
        );
    }
    let mut record = json!({
        "instanceId": instance.instance_id,
        "hostName": host_name,
        "app": app_name(service),
        "ipAddr": ip,
        "status": status,
        "port": port_json(port),
        "securePort": port_json(secure),
        "vipAddress": service.name,
        "dataCenterInfo": {"@class": MY_OWN_CLASS, "name": "MyOwn"},
        "leaseInfo": {"renewalIntervalInSecs": renewal, "durationInSecs": duration},
        "metadata": metadata,
        "countryId": 1,
        "lastDirtyTimestamp": stamp.to_string(),
    });
    if secure.enabled {
        record["secureVipAddress"] = json!(service.name);
    }
    json!({ "instance": record })
}

/// A record read from Eureka, in the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Decoded {
    /// Shared: records of one service share its body (see `Inner::decode_one`).
    pub service: Arc<Service>,
    pub instance: Instance,
}

/// The service a record belongs to: from its `sc.` metadata, or for a native Eureka
/// instance, tenant `default/default`, app id `default`, the name from the VIP address when
/// it is the application's name in another case, else the lower-cased application name,
/// version `0.0.1`.
fn service_of(wire: &WireInstance) -> Service {
    let meta = &wire.metadata;
    let tenant = meta
        .get(TENANT)
        .and_then(|t| Tenant::parse(t))
        .unwrap_or_default();
    let name = meta.get(SERVICE_NAME).cloned().unwrap_or_else(|| {
        if !wire.vip_address.is_empty() && wire.vip_address.eq_ignore_ascii_case(&wire.app) {
            wire.vip_address.clone()
        } else {
            wire.app.to_lowercase()
        }
    });
    let mut service = Service {
        tenant,
        app: meta
            .get(APP_ID)
            .cloned()
            .unwrap_or_else(|| DEFAULT_APP_ID.to_owned()),
        name,
        version: meta
            .get(VERSION)
            .cloned()
            .unwrap_or_else(|| DEFAULT_VERSION.to_owned()),
        environment: meta.get(ENV).cloned().unwrap_or_default(),
        ..Service::default()
    };
    service.service_id = service_id(&service);
    service
}

/// The model of a record, or `None` for a status the model has no value for (`UNKNOWN`).
pub(super) fn decode(wire: &WireInstance) -> Option<Decoded> {
    let meta = &wire.metadata;
    let status = match wire.status.as_str() {
        "UP" | "DOWN" | "STARTING" => wire.status.clone(),
        EUREKA_OUT_OF_SERVICE => meta
            .get(STATUS)
            .cloned()
            .unwrap_or_else(|| "OUTOFSERVICE".to_owned()),
        _ => return None,
    };
    let service = service_of(wire);
    let mut properties = BTreeMap::new();
    for (key, value) in meta {
        if let Some(encoded) = key.strip_prefix(ENCODED_PROPERTY) {
            let decoded = hex::decode(encoded)
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok());
            if let Some(original) = decoded {
                properties.insert(original, value.clone());
                continue;
            }
        }
        let owned = matches!(
            key.as_str(),
            APP_ID
                | SERVICE_NAME
                | VERSION
                | ENV
                | TENANT
                | STATUS
                | HOST_NAME
                | ENDPOINTS
                | HEALTH_CHECK
                | DATA_CENTER
        );
        if !owned {
            properties.insert(key.clone(), value.clone());
        }
    }
    let endpoints = meta
        .get(ENDPOINTS)
        .and_then(|text| serde_json::from_str::<Vec<String>>(text).ok())
        .unwrap_or_else(|| rebuilt_endpoints(&wire.ip_addr, wire.port, wire.secure_port));
    let health_check = meta
        .get(HEALTH_CHECK)
        .and_then(|text| health_check_from_json(text))
        .unwrap_or_else(|| {
            let (interval, duration) = wire
                .lease
                .map_or((30, 90), |l| (l.renewal_interval_secs, l.duration_secs));
            let interval = u32::try_from(interval).unwrap_or(u32::MAX).max(1);
            let times = u32::try_from(duration / u64::from(interval))
                .unwrap_or(u32::MAX)
                .saturating_sub(1);
            Some(HealthCheck {
                mode: "push".into(),
                interval,
                times,
                port: 0,
                url: String::new(),
            })
        });
    let data_center = meta.get(DATA_CENTER).and_then(|text| {
        let [name, region, available_zone]: [String; 3] = serde_json::from_str(text).ok()?;
        Some(DataCenterInfo {
            name,
            region,
            available_zone,
        })
    });
    let instance = Instance {
        tenant: service.tenant.clone(),
        service_id: service.service_id.clone(),
        instance_id: wire.instance_id.clone(),
        endpoints,
        host_name: meta
            .get(HOST_NAME)
            .cloned()
            .unwrap_or_else(|| wire.host_name.clone()),
        status,
        properties,
        health_check,
        data_center,
        version: service.version.clone(),
        mod_timestamp: wire.last_updated_ms.map(|ms| ms / 1000),
    };
    Some(Decoded {
        service: Arc::new(service),
        instance,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::eureka::wire;

    fn service() -> Service {
        service_entry(&Service {
            tenant: Tenant::default_tenant(),
            app: "shop".into(),
            name: "orders".into(),
            version: "1.0.0".into(),
            ..Service::default()
        })
    }

    fn instance(service: &Service) -> Instance {
        Instance {
            tenant: service.tenant.clone(),
            service_id: service.service_id.clone(),
            instance_id: "syncer-0123456789abcdef0123456789abcdef".into(),
            endpoints: vec!["rest://10.0.0.5:8080".into()],
            host_name: "node-5".into(),
            status: "UP".into(),
            properties: BTreeMap::from([("syncer.origin".into(), "dc1".into())]),
            health_check: Some(HealthCheck {
                mode: "push".into(),
                interval: 10,
                times: 2,
                port: 0,
                url: String::new(),
            }),
            data_center: None,
            version: service.version.clone(),
            mod_timestamp: None,
        }
    }

    /// Encodes, reads back as the server would answer, decodes.
    fn round_trip(service: &Service, instance: &Instance) -> Instance {
        let status = eureka_status(&instance.status);
        let body = encode(service, instance, status, 1);
        let wire = wire::instance(&body["instance"]).expect("readable");
        decode(&wire).expect("decodable").instance
    }

    #[test]
    fn a_plain_copy_is_a_plain_eureka_record() {
        let s = service();
        let i = instance(&s);
        let body = encode(&s, &i, "UP", 1_700_000_000_000);
        let record = &body["instance"];
        assert_eq!(record["app"], "ORDERS");
        assert_eq!(record["vipAddress"], "orders");
        assert!(record.get("secureVipAddress").is_none());
        assert_eq!(record["ipAddr"], "10.0.0.5");
        assert_eq!(record["hostName"], "node-5");
        assert_eq!(record["port"], json!({"$": 8080, "@enabled": "true"}));
        assert_eq!(record["securePort"]["@enabled"], "false");
        assert_eq!(
            record["leaseInfo"],
            json!({"renewalIntervalInSecs": 10, "durationInSecs": 30})
        );
        assert_eq!(record["dataCenterInfo"]["@class"], MY_OWN_CLASS);
        assert_eq!(record["dataCenterInfo"]["name"], "MyOwn");
        assert_eq!(record["lastDirtyTimestamp"], "1700000000000");
        assert_eq!(
            record["metadata"],
            json!({"sc.appId": "shop", "sc.serviceName": "orders", "sc.version": "1.0.0",
                   "syncer.origin": "dc1"}),
            "only what is needed travels in metadata"
        );
        assert!(round_trip(&s, &i).same_body(&i));
    }

    #[test]
    fn secure_ports_testing_and_odd_keys_are_carried() {
        let s = service_entry(&Service {
            tenant: Tenant::new("acme", "shop"),
            environment: "production".into(),
            ..service()
        });
        let mut i = instance(&s);
        i.endpoints = vec![
            "rest://10.0.0.5:8080".into(),
            "rest://10.0.0.5:8443?sslEnabled=true".into(),
        ];
        i.status = "TESTING".into();
        i.properties.insert("a key/with:odd".into(), "v".into());
        i.properties.insert("sc.appId".into(), "not the app".into());
        let body = encode(&s, &i, eureka_status(&i.status), 1);
        let record = &body["instance"];
        assert_eq!(record["status"], "OUT_OF_SERVICE");
        assert_eq!(record["secureVipAddress"], "orders");
        assert_eq!(record["securePort"], json!({"$": 8443, "@enabled": "true"}));
        let meta = record["metadata"].as_object().expect("metadata");
        assert_eq!(meta["sc.status"], "TESTING");
        assert_eq!(meta["sc.tenant"], "acme/shop");
        assert_eq!(meta["sc.env"], "production");
        assert!(!meta.contains_key("sc.endpoints"), "rebuilt from the ports");
        assert!(
            meta.keys().all(|k| k
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-_".contains(&b))),
            "XML-safe keys: {meta:?}"
        );
        assert_eq!(
            meta["sc.appId"], "shop",
            "a property cannot take a mapping key"
        );
        let back = round_trip(&s, &i);
        assert!(back.same_body(&i), "{back:?}\n{i:?}");
    }

    #[test]
    fn what_ports_cannot_say_travels_in_metadata() {
        let s = service();
        let mut i = instance(&s);
        i.endpoints = vec![
            "highway://10.0.0.5:7070".into(),
            "rest://10.0.0.5:8080?sslEnabled=false".into(),
        ];
        i.host_name = String::new();
        i.health_check = None;
        i.data_center = Some(DataCenterInfo {
            name: "dc/1".into(),
            region: "r".into(),
            available_zone: "z".into(),
        });
        let body = encode(&s, &i, "UP", 1);
        let meta = &body["instance"]["metadata"];
        assert!(meta.get("sc.endpoints").is_some());
        assert_eq!(meta["sc.hostName"], "");
        assert_eq!(meta["sc.healthCheck"], "null");
        assert_eq!(
            body["instance"]["hostName"], "10.0.0.5",
            "Eureka needs a host name"
        );
        let back = round_trip(&s, &i);
        assert!(back.same_body(&i), "{back:?}\n{i:?}");
    }

    #[test]
    fn native_eureka_instances_get_a_service() {
        let wire = wire::instance(&json!({
            "instanceId": "host:orders:8080", "hostName": "host", "app": "ORDERS",
            "ipAddr": "10.0.0.9", "status": "OUT_OF_SERVICE", "vipAddress": "orders",
            "port": {"$": 8080, "@enabled": "true"},
            "leaseInfo": {"renewalIntervalInSecs": 30, "durationInSecs": 90},
            "metadata": {"zone": "a", "management.port": "8081"}
        }))
        .expect("wire");
        let d = decode(&wire).expect("decoded");
        assert_eq!(
            (
                d.service.app.as_str(),
                d.service.name.as_str(),
                d.service.version.as_str()
            ),
            ("default", "orders", "0.0.1")
        );
        assert_eq!(d.service.tenant, Tenant::default_tenant());
        assert!(d.service.service_id.starts_with("eureka-") && d.service.service_id.len() == 39);
        assert_eq!(d.instance.service_id, d.service.service_id);
        assert_eq!(d.instance.instance_id, "host:orders:8080");
        assert_eq!(d.instance.status, "OUTOFSERVICE");
        assert_eq!(
            d.instance.endpoints,
            vec!["rest://10.0.0.9:8080".to_owned()]
        );
        assert_eq!(d.instance.health_check.as_ref().map(|h| h.times), Some(2));
        assert_eq!(d.instance.properties.len(), 2);

        let vip_differs = wire::instance(&json!({
            "hostName": "h", "app": "ORDERS", "ipAddr": "1.1.1.1", "status": "UP",
            "vipAddress": "orders-vip"
        }))
        .expect("wire");
        assert_eq!(
            decode(&vip_differs).expect("decoded").service.name,
            "orders"
        );
        let unknown = wire::instance(&json!({"hostName": "h", "app": "A", "status": "UNKNOWN"}))
            .expect("wire");
        assert_eq!(decode(&unknown), None, "UNKNOWN has no model status");
    }

    /// Same name, different apps: one Eureka application, two services.
    #[test]
    fn same_named_services_of_two_apps_stay_apart() {
        let a = service();
        let b = service_entry(&Service {
            app: "other".into(),
            ..a.clone()
        });
        assert_ne!(a.service_id, b.service_id);
        assert_eq!(app_name(&a), app_name(&b));
        let back = round_trip(&b, &instance(&b));
        assert_eq!(back.service_id, b.service_id);
    }

    /// A tiny deterministic generator (xorshift), so the round trip covers many shapes
    /// without a new dependency.
    struct Gen(u64);

    impl Gen {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
            items[(self.next() % items.len() as u64) as usize]
        }
        fn text(&mut self) -> String {
            let alphabet = [
                "a", "Z", "0", ".", "_", "-", " ", ":", "/", "é", "sc.", "@", "<",
            ];
            (0..self.next() % 6).map(|_| self.pick(&alphabet)).collect()
        }
    }

    /// `decode(encode(i))` gives back every field `Instance::same_body` compares.
    #[test]
    fn many_generated_instances_survive_the_round_trip() {
        let mut g = Gen(0x9E37_79B9_7F4A_7C15);
        for round in 0..2000 {
            let s = service_entry(&Service {
                tenant: if g.next().is_multiple_of(3) {
                    Tenant::new("d", "p")
                } else {
                    Tenant::default_tenant()
                },
                app: g.pick(&["default", "shop", "a b"]).into(),
                name: g.pick(&["orders", "Orders", "pay-ment"]).into(),
                version: g.pick(&["0.0.1", "1.2.3"]).into(),
                environment: g.pick(&["", "production", "testing"]).into(),
                ..Service::default()
            });
            let hosts = ["10.0.0.1", "10.0.0.2", "::1", "node"];
            let mut endpoints = Vec::new();
            for _ in 0..g.next() % 4 {
                let host = g.pick(&hosts);
                let host = if host.contains(':') {
                    format!("[{host}]")
                } else {
                    host.to_owned()
                };
                let scheme = g.pick(&["rest", "http", "https", "highway"]);
                let query = g.pick(&["", "?sslEnabled=true", "?sslEnabled=false", "?x=1"]);
                endpoints.push(format!("{scheme}://{host}:{}{query}", 8000 + g.next() % 3));
            }
            let mut properties = BTreeMap::new();
            for _ in 0..g.next() % 5 {
                properties.insert(g.text(), g.text());
            }
            let i = Instance {
                tenant: s.tenant.clone(),
                service_id: s.service_id.clone(),
                instance_id: format!("{}:{}:{round}", g.pick(&hosts), s.name),
                endpoints,
                host_name: g.pick(&["", "node-1", "10.0.0.1"]).into(),
                status: g
                    .pick(&["UP", "DOWN", "STARTING", "TESTING", "OUTOFSERVICE"])
                    .into(),
                properties,
                health_check: match g.next() % 4 {
                    0 => None,
                    1 => Some(HealthCheck {
                        mode: "pull".into(),
                        interval: 5,
                        times: 1,
                        port: 8080,
                        url: "/health".into(),
                    }),
                    _ => Some(HealthCheck {
                        mode: "push".into(),
                        interval: 1 + (g.next() % 60) as u32,
                        times: (g.next() % 5) as u32,
                        port: 0,
                        url: String::new(),
                    }),
                },
                data_center: g.next().is_multiple_of(2).then(|| DataCenterInfo {
                    name: g.text(),
                    region: g.text(),
                    available_zone: g.text(),
                }),
                version: s.version.clone(),
                mod_timestamp: None,
            };
            if i.host_name.is_empty() && i.endpoints.is_empty() {
                continue; // refused by the rules: Eureka needs an address
            }
            let back = round_trip(&s, &i);
            assert!(back.same_body(&i), "round {round}:\n{back:?}\n{i:?}");
        }
    }
}

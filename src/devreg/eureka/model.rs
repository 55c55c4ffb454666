//! Eureka's instance record: how a register body is read (reference §1.3, §2.2) and how a
//! stored record is written back as JSON (§1.3).
//!
//! Input is read from a `serde_json::Value` by hand rather than with derived types, because
//! Eureka's Jackson codec is lenient in ways derive is not (numbers or numeric strings for
//! ports and timestamps, strings or booleans for flags, any key order, `@class` keys to skip)
//! and strict in a few others (a bare-number port or a `dataCenterInfo` without `@class` are
//! parse errors). Output goes through small `Serialize` structs so the key order is Eureka's.

use std::collections::BTreeMap;

use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};
use serde_json::{Map, Value};

/// Eureka's instance status (`InstanceInfo.InstanceStatus`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Status {
    Up,
    Down,
    Starting,
    OutOfService,
    Unknown,
}

impl Status {
    /// Every status, in the alphabetical order of their names (the hash order, §5.2).
    pub const ALPHABETICAL: [Status; 5] = [
        Status::Down,
        Status::OutOfService,
        Status::Starting,
        Status::Unknown,
        Status::Up,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Up => "UP",
            Status::Down => "DOWN",
            Status::Starting => "STARTING",
            Status::OutOfService => "OUT_OF_SERVICE",
            Status::Unknown => "UNKNOWN",
        }
    }

    /// Exact upper-case name, as `InstanceStatus.valueOf` (status PUT/DELETE: anything else
    /// is a 500).
    pub fn exact(s: &str) -> Option<Status> {
        Status::ALPHABETICAL.into_iter().find(|st| st.as_str() == s)
    }

    /// Lenient reading of a body's status (`InstanceStatus.toEnum`): any case, unknown text
    /// is `UNKNOWN`.
    pub fn lenient(s: &str) -> Status {
        Status::exact(&s.to_ascii_uppercase()).unwrap_or(Status::Unknown)
    }
}

/// `actionType` of a record: what the last change was (delta, §5.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActionType {
    Added,
    Modified,
    Deleted,
}

impl ActionType {
    pub fn as_str(self) -> &'static str {
        match self {
            ActionType::Added => "ADDED",
            ActionType::Modified => "MODIFIED",
            ActionType::Deleted => "DELETED",
        }
    }
}

/// A port and whether it is enabled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Port {
    pub number: i64,
    pub enabled: bool,
}

/// `port` when absent: 7001, enabled.
pub const DEFAULT_PORT: Port = Port {
    number: 7001,
    enabled: true,
};
/// `securePort` when absent: 7002, disabled.
pub const DEFAULT_SECURE_PORT: Port = Port {
    number: 7002,
    enabled: false,
};
/// Lease duration when the body gives none or a non-positive one.
pub const DEFAULT_DURATION_SECS: i64 = 90;
/// Renewal interval when the body gives none.
pub const DEFAULT_RENEWAL_INTERVAL_SECS: i64 = 30;
/// The `@class` Jackson writes for an empty metadata map.
pub const EMPTY_MAP_CLASS: &str = "java.util.Collections$EmptyMap";

/// `dataCenterInfo`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataCenter {
    /// The Jackson type id (`@class`).
    pub class: String,
    /// `MyOwn`, `Amazon`, `Netflix`; `None` when the body had no `name`.
    pub name: Option<String>,
    /// Amazon's metadata (`instance-id`, ...), when given.
    pub metadata: Option<BTreeMap<String, String>>,
}

/// One instance as Eureka stores it (`InstanceInfo`), minus the lease timestamps.
#[derive(Clone, Debug)]
pub struct Instance {
    /// `instanceId` as sent; `None` when absent or empty (the record is then keyed by
    /// [`Instance::id`]).
    pub instance_id: Option<String>,
    pub host_name: String,
    /// Upper-cased.
    pub app: String,
    pub ip_addr: String,
    /// `sid`, `na` unless given.
    pub sid: String,
    pub app_group_name: Option<String>,
    pub asg_name: Option<String>,
    pub status: Status,
    pub overridden_status: Status,
    pub port: Port,
    pub secure_port: Port,
    pub country_id: i64,
    /// `None` when the body had none (a validation error, §2.1).
    pub data_center: Option<DataCenter>,
    pub renewal_interval_secs: i64,
    pub duration_secs: i64,
    pub metadata: BTreeMap<String, String>,
    pub home_page_url: Option<String>,
    pub status_page_url: Option<String>,
    pub health_check_url: Option<String>,
    pub secure_health_check_url: Option<String>,
    pub vip_address: Option<String>,
    pub secure_vip_address: Option<String>,
    pub last_updated: i64,
    pub last_dirty: i64,
    pub action_type: Option<ActionType>,
}

impl Instance {
    /// The key of the record within its app (`InstanceInfo.getId`): `instanceId`, else
    /// Amazon's `instance-id`, else `hostName`.
    pub fn id(&self) -> &str {
        if let Some(id) = self.instance_id.as_deref().filter(|s| !s.is_empty()) {
            return id;
        }
        if let Some(dc) = &self.data_center
            && dc.name.as_deref() == Some("Amazon")
            && let Some(id) = dc
                .metadata
                .as_ref()
                .and_then(|m| m.get("instance-id"))
                .filter(|s| !s.is_empty())
        {
            return id;
        }
        &self.host_name
    }
}

/// A body Eureka's codec cannot read: answered `400 {"error":"cannot parse request body"}`.
#[derive(Debug, thiserror::Error)]
#[error("cannot parse request body: {0}")]
pub struct ParseError(pub String);

fn bad(what: impl Into<String>) -> ParseError {
    ParseError(what.into())
}

/// A scalar as text: strings as they are, numbers and booleans printed; `null` is `None`.
fn text(v: &Value, key: &str) -> Result<Option<String>, ParseError> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        Value::Number(n) => Ok(Some(n.to_string())),
        Value::Bool(b) => Ok(Some(b.to_string())),
        _ => Err(bad(format!("{key} is not a scalar"))),
    }
}

/// A number, or a string holding one.
fn number(v: &Value, key: &str) -> Result<Option<i64>, ParseError> {
    match v {
        Value::Null => Ok(None),
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().map(|f| f as i64))
            .map(Some)
            .ok_or_else(|| bad(format!("{key} is not a number"))),
        Value::String(s) => s
            .trim()
            .parse::<i64>()
            .map(Some)
            .map_err(|_| bad(format!("{key} is not a number"))),
        _ => Err(bad(format!("{key} is not a number"))),
    }
}

/// A flag: a boolean, or a string (`Boolean.valueOf`: only `true`, any case, is true).
fn flag(v: &Value, key: &str) -> Result<Option<bool>, ParseError> {
    match v {
        Value::Null => Ok(None),
        Value::Bool(b) => Ok(Some(*b)),
        Value::String(s) => Ok(Some(s.eq_ignore_ascii_case("true"))),
        _ => Err(bad(format!("{key} is not a flag"))),
    }
}

/// A port object (`{"$": 8080, "@enabled": "true"}`); a bare number is a parse error.
fn port(v: &Value, key: &str, default: Port) -> Result<Port, ParseError> {
    match v {
        Value::Null => Ok(default),
        Value::Object(m) => {
            let mut p = default;
            if let Some(n) = m.get("$") {
                p.number = number(n, key)?.unwrap_or(default.number);
            }
            if let Some(e) = m.get("@enabled") {
                p.enabled = flag(e, key)?.unwrap_or(default.enabled);
            }
            Ok(p)
        }
        _ => Err(bad(format!("{key} is not a port object"))),
    }
}

/// A string map; `@class` keys are skipped, scalar values printed.
fn string_map(v: &Value, key: &str) -> Result<BTreeMap<String, String>, ParseError> {
    match v {
        Value::Null => Ok(BTreeMap::new()),
        Value::Object(m) => {
            let mut out = BTreeMap::new();
            for (k, v) in m {
                if k == "@class" {
                    continue;
                }
                if let Some(s) = text(v, key)? {
                    out.insert(k.clone(), s);
                }
            }
            Ok(out)
        }
        _ => Err(bad(format!("{key} is not an object"))),
    }
}

fn data_center(v: &Value) -> Result<Option<DataCenter>, ParseError> {
    let m = match v {
        Value::Null => return Ok(None),
        Value::Object(m) => m,
        _ => return Err(bad("dataCenterInfo is not an object")),
    };
    let class = match m.get("@class") {
        Some(Value::String(c)) if !c.is_empty() => c.clone(),
        _ => return Err(bad("dataCenterInfo has no @class")),
    };
    let name = match m.get("name") {
        Some(v) => text(v, "dataCenterInfo.name")?,
        None => None,
    };
    let metadata = match m.get("metadata") {
        Some(Value::Null) | None => None,
        Some(v) => Some(string_map(v, "dataCenterInfo.metadata")?),
    };
    Ok(Some(DataCenter {
        class,
        name,
        metadata,
    }))
}

/// Reads a register body (`{"instance":{…}}`) as Eureka's codec does. `now_ms` fills the
/// timestamps the body lacks.
///
/// # Errors
/// [`ParseError`] for what Jackson refuses: not JSON, no `instance` object, a bare-number
/// port, a `dataCenterInfo` without `@class`, objects where scalars belong.
pub fn parse_register_body(body: &[u8], now_ms: i64) -> Result<Instance, ParseError> {
    let root: Value = serde_json::from_slice(body).map_err(|e| bad(e.to_string()))?;
    let inst = match root.get("instance") {
        Some(Value::Object(m)) => m,
        _ => return Err(bad("no instance object")),
    };
    instance_from_map(inst, now_ms)
}

fn instance_from_map(m: &Map<String, Value>, now_ms: i64) -> Result<Instance, ParseError> {
    let get = |k: &str| m.get(k).unwrap_or(&Value::Null);
    let s = |k: &str| text(get(k), k);
    let status = match s("status")? {
        Some(st) => Status::lenient(&st),
        None => Status::Up,
    };
    let overridden = match s("overriddenStatus")?.or(s("overriddenstatus")?) {
        Some(st) => Status::lenient(&st),
        None => Status::Unknown,
    };
    let (renewal_interval_secs, duration_secs) = match get("leaseInfo") {
        Value::Null => (DEFAULT_RENEWAL_INTERVAL_SECS, DEFAULT_DURATION_SECS),
        Value::Object(l) => {
            let n = |k: &str| number(l.get(k).unwrap_or(&Value::Null), k);
            let interval = n("renewalIntervalInSecs")?.unwrap_or(DEFAULT_RENEWAL_INTERVAL_SECS);
            let duration = n("durationInSecs")?
                .filter(|d| *d > 0)
                .unwrap_or(DEFAULT_DURATION_SECS);
            (interval, duration)
        }
        _ => return Err(bad("leaseInfo is not an object")),
    };
    Ok(Instance {
        instance_id: s("instanceId")?.filter(|id| !id.is_empty()),
        host_name: s("hostName")?.unwrap_or_default(),
        app: s("app")?.unwrap_or_default().to_uppercase(),
        ip_addr: s("ipAddr")?.unwrap_or_default(),
        sid: s("sid")?.unwrap_or_else(|| "na".to_owned()),
        app_group_name: s("appGroupName")?.map(|g| g.to_uppercase()),
        asg_name: s("asgName")?,
        status,
        overridden_status: overridden,
        port: port(get("port"), "port", DEFAULT_PORT)?,
        secure_port: port(get("securePort"), "securePort", DEFAULT_SECURE_PORT)?,
        country_id: number(get("countryId"), "countryId")?.unwrap_or(1),
        data_center: data_center(get("dataCenterInfo"))?,
        renewal_interval_secs,
        duration_secs,
        metadata: string_map(get("metadata"), "metadata")?,
        home_page_url: s("homePageUrl")?,
        status_page_url: s("statusPageUrl")?,
        health_check_url: s("healthCheckUrl")?,
        secure_health_check_url: s("secureHealthCheckUrl")?,
        vip_address: s("vipAddress")?,
        secure_vip_address: s("secureVipAddress")?,
        last_updated: number(get("lastUpdatedTimestamp"), "lastUpdatedTimestamp")?
            .unwrap_or(now_ms),
        last_dirty: number(get("lastDirtyTimestamp"), "lastDirtyTimestamp")?.unwrap_or(now_ms),
        action_type: None,
    })
}

/// The lease timestamps shown in `leaseInfo` (`decorateInstanceInfo`), in Unix ms.
#[derive(Clone, Copy, Debug, Default)]
pub struct LeaseTimes {
    pub registration: i64,
    /// `lastRenewalTimestamp`: the lease's `lastUpdateTimestamp` (in the future after a renewal
    /// when the 2 × duration bug is on).
    pub last_renewal: i64,
    pub eviction: i64,
    pub service_up: i64,
}

/// A record as read back: the instance and its lease.
#[derive(Clone, Debug)]
pub struct Record {
    pub instance: Instance,
    pub lease: LeaseTimes,
}

// ---- JSON output -------------------------------------------------------------------------

/// `{"$": 8080, "@enabled": "true"}`.
#[derive(Serialize)]
struct PortJson {
    #[serde(rename = "$")]
    number: i64,
    #[serde(rename = "@enabled")]
    enabled: &'static str,
}

impl From<Port> for PortJson {
    fn from(p: Port) -> Self {
        PortJson {
            number: p.number,
            enabled: if p.enabled { "true" } else { "false" },
        }
    }
}

/// A string map; empty is written as Jackson writes `Collections.emptyMap()`.
struct MetaJson<'a>(&'a BTreeMap<String, String>);

impl Serialize for MetaJson<'_> {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        if self.0.is_empty() {
            let mut m = ser.serialize_map(Some(1))?;
            m.serialize_entry("@class", EMPTY_MAP_CLASS)?;
            return m.end();
        }
        let mut m = ser.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

#[derive(Serialize)]
struct DataCenterJson<'a> {
    #[serde(rename = "@class")]
    class: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<&'a BTreeMap<String, String>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LeaseJson {
    renewal_interval_in_secs: i64,
    duration_in_secs: i64,
    registration_timestamp: i64,
    last_renewal_timestamp: i64,
    eviction_timestamp: i64,
    service_up_timestamp: i64,
}

/// An instance in Eureka's JSON key order (`EurekaJacksonCodec`).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceJson<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    instance_id: Option<&'a str>,
    host_name: &'a str,
    app: &'a str,
    ip_addr: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    sid: Option<&'a str>,
    status: &'static str,
    overridden_status: &'static str,
    port: PortJson,
    secure_port: PortJson,
    country_id: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    data_center_info: Option<DataCenterJson<'a>>,
    lease_info: LeaseJson,
    metadata: MetaJson<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    app_group_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    home_page_url: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status_page_url: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    health_check_url: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    secure_health_check_url: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    vip_address: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    secure_vip_address: Option<&'a str>,
    is_coordinating_discovery_server: &'static str,
    last_updated_timestamp: String,
    last_dirty_timestamp: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    action_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    asg_name: Option<&'a str>,
}

impl<'a> InstanceJson<'a> {
    pub fn of(r: &'a Record) -> Self {
        let i = &r.instance;
        InstanceJson {
            instance_id: i.instance_id.as_deref(),
            host_name: &i.host_name,
            app: &i.app,
            ip_addr: &i.ip_addr,
            sid: Some(i.sid.as_str()).filter(|s| *s != "na"),
            status: i.status.as_str(),
            overridden_status: i.overridden_status.as_str(),
            port: i.port.into(),
            secure_port: i.secure_port.into(),
            country_id: i.country_id,
            data_center_info: i.data_center.as_ref().map(|dc| DataCenterJson {
                class: &dc.class,
                name: dc.name.as_deref(),
                metadata: dc.metadata.as_ref(),
            }),
            lease_info: LeaseJson {
                renewal_interval_in_secs: i.renewal_interval_secs,
                duration_in_secs: i.duration_secs,
                registration_timestamp: r.lease.registration,
                last_renewal_timestamp: r.lease.last_renewal,
                eviction_timestamp: r.lease.eviction,
                service_up_timestamp: r.lease.service_up,
            },
            metadata: MetaJson(&i.metadata),
            app_group_name: i.app_group_name.as_deref(),
            home_page_url: i.home_page_url.as_deref(),
            status_page_url: i.status_page_url.as_deref(),
            health_check_url: i.health_check_url.as_deref(),
            secure_health_check_url: i.secure_health_check_url.as_deref(),
            vip_address: i.vip_address.as_deref(),
            secure_vip_address: i.secure_vip_address.as_deref(),
            is_coordinating_discovery_server: "false",
            last_updated_timestamp: i.last_updated.to_string(),
            last_dirty_timestamp: i.last_dirty.to_string(),
            action_type: i.action_type.map(ActionType::as_str),
            asg_name: i.asg_name.as_deref(),
        }
    }
}

/// One application of a list: its name and instances (output order of the list).
pub struct AppView<'a> {
    pub name: &'a str,
    pub instances: Vec<&'a Record>,
}

#[derive(Serialize)]
struct ApplicationJson<'a> {
    name: &'a str,
    instance: Vec<InstanceJson<'a>>,
}

impl<'a> ApplicationJson<'a> {
    fn of(app: &'a AppView<'a>) -> Self {
        ApplicationJson {
            name: app.name,
            instance: app.instances.iter().map(|r| InstanceJson::of(r)).collect(),
        }
    }
}

#[derive(Serialize)]
struct ApplicationsJson<'a> {
    #[serde(rename = "versions__delta")]
    versions_delta: String,
    #[serde(rename = "apps__hashcode")]
    apps_hashcode: &'a str,
    application: Vec<ApplicationJson<'a>>,
}

/// `{"applications":{…}}`.
pub fn applications_json(version: i64, hash: &str, apps: &[AppView<'_>]) -> String {
    #[derive(Serialize)]
    struct Root<'a> {
        applications: ApplicationsJson<'a>,
    }
    let root = Root {
        applications: ApplicationsJson {
            versions_delta: version.to_string(),
            apps_hashcode: hash,
            application: apps.iter().map(ApplicationJson::of).collect(),
        },
    };
    serde_json::to_string(&root).unwrap_or_else(|_| "{}".to_owned())
}

/// `{"application":{…}}`.
pub fn application_json(app: &AppView<'_>) -> String {
    #[derive(Serialize)]
    struct Root<'a> {
        application: ApplicationJson<'a>,
    }
    serde_json::to_string(&Root {
        application: ApplicationJson::of(app),
    })
    .unwrap_or_else(|_| "{}".to_owned())
}

/// `{"instance":{…}}`.
pub fn instance_json(r: &Record) -> String {
    #[derive(Serialize)]
    struct Root<'a> {
        instance: InstanceJson<'a>,
    }
    serde_json::to_string(&Root {
        instance: InstanceJson::of(r),
    })
    .unwrap_or_else(|_| "{}".to_owned())
}

/// The reconcile hash (§5.2): `NAME_count_` per status with instances, alphabetically.
pub fn hash_of<'a>(records: impl IntoIterator<Item = &'a Record>) -> String {
    let mut counts = BTreeMap::<&'static str, usize>::new();
    for r in records {
        *counts.entry(r.instance.status.as_str()).or_default() += 1;
    }
    counts
        .iter()
        .map(|(name, n)| format!("{name}_{n}_"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(v: Value) -> Vec<u8> {
        serde_json::to_vec(&v).unwrap()
    }

    #[test]
    fn lenient_ports_and_flags() {
        let b = body(serde_json::json!({"instance": {
            "hostName": "h", "app": "a", "ipAddr": "1.2.3.4",
            "port": {"@enabled": true, "$": "8080"},
            "securePort": {"$": 443, "@enabled": "TRUE"},
            "dataCenterInfo": {"@class": "x", "name": "MyOwn"},
            "lastDirtyTimestamp": "12", "metadata": {"@class": "java.util.Collections$EmptyMap"}
        }}));
        let i = parse_register_body(&b, 99).unwrap();
        assert_eq!(
            i.port,
            Port {
                number: 8080,
                enabled: true
            }
        );
        assert_eq!(
            i.secure_port,
            Port {
                number: 443,
                enabled: true
            }
        );
        assert_eq!((i.last_dirty, i.last_updated), (12, 99));
        assert!(i.metadata.is_empty());
        assert_eq!(i.id(), "h");
        assert_eq!(i.app, "A");
    }

    #[test]
    fn strict_parse_errors() {
        for v in [
            serde_json::json!({"instance": {"port": 8080}}),
            serde_json::json!({"instance": {"dataCenterInfo": {"name": "MyOwn"}}}),
            serde_json::json!({"hostName": "h"}),
            serde_json::json!({"instance": {"lastDirtyTimestamp": "soon"}}),
        ] {
            assert!(parse_register_body(&body(v), 0).is_err());
        }
        assert!(parse_register_body(b"{", 0).is_err());
    }

    #[test]
    fn hash_format() {
        let rec = |s| Record {
            instance: {
                let mut i = parse_register_body(
                    br#"{"instance":{"hostName":"h","app":"a","ipAddr":"i","dataCenterInfo":{"@class":"c","name":"MyOwn"}}}"#,
                    0,
                )
                .unwrap();
                i.status = s;
                i
            },
            lease: LeaseTimes::default(),
        };
        let rs = [
            rec(Status::Up),
            rec(Status::OutOfService),
            rec(Status::Down),
            rec(Status::Up),
            rec(Status::OutOfService),
            rec(Status::Up),
        ];
        assert_eq!(hash_of(&rs), "DOWN_1_OUT_OF_SERVICE_2_UP_3_");
        assert_eq!(hash_of(&[]), "");
    }
}

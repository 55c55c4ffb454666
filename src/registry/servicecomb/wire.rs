//! The JSON shapes of Service Center's REST API v4, written from the reference
//! (`servicecomb-sc-v4-api.md`; section numbers below refer to it). Private to the adapter.
//!
//! Readers are lenient where SC versions differ or Go's encoder omits things: every field
//! has a default (Go `omitempty` drops empty strings, lists, maps and zeros), `null` reads
//! as empty, and numbers SC sometimes sends as strings (`errorCode`, `modTimestamp`) are
//! accepted either way. Writers omit empty fields, as SC's own clients do. Unknown fields are
//! skipped without being kept, so the instances of a dump cost only their typed fields.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};

/// A microservice (§2.1), as stored, listed and created.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct WireService {
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub service_id: String,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub app_id: String,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub service_name: String,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub version: String,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub description: String,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub level: String,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub schemas: Vec<String>,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub status: String,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub properties: BTreeMap<String, String>,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub alias: String,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub environment: String,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub register_by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub framework: Option<WireFramework>,
}

/// `service.framework`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct WireFramework {
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub name: String,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub version: String,
}

/// A microservice instance (§3.1). `version` and `modTimestamp` are output-only.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct WireInstance {
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub instance_id: String,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub service_id: String,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub endpoints: Vec<String>,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub host_name: String,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub status: String,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub properties: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<WireHealthCheck>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_center_info: Option<WireDataCenter>,
    #[serde(default, deserialize_with = "nullable", skip_serializing)]
    pub version: String,
    /// Unix seconds, sent by SC as a string.
    #[serde(default, deserialize_with = "lenient_timestamp", skip_serializing)]
    pub mod_timestamp: Option<u64>,
}

/// `instance.healthCheck` (§3.1, §4).
#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct WireHealthCheck {
    #[serde(default, deserialize_with = "nullable")]
    pub mode: String,
    #[serde(default, deserialize_with = "lenient_u32")]
    pub interval: u32,
    #[serde(default, deserialize_with = "lenient_u32")]
    pub times: u32,
    #[serde(
        default,
        deserialize_with = "lenient_u32",
        skip_serializing_if = "is_zero"
    )]
    pub port: u32,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub url: String,
}

/// `instance.dataCenterInfo` (§3.1).
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct WireDataCenter {
    #[serde(default, deserialize_with = "nullable")]
    pub name: String,
    #[serde(default, deserialize_with = "nullable")]
    pub region: String,
    #[serde(default, deserialize_with = "nullable")]
    pub available_zone: String,
}

/// SC's error body (§1.3). `errorCode` is a string holding a number in every SC version,
/// but a number is accepted too.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct WireError {
    #[serde(default, deserialize_with = "lenient_code")]
    pub error_code: Option<u32>,
    #[serde(default, deserialize_with = "nullable")]
    pub error_message: String,
    #[serde(default, deserialize_with = "nullable")]
    pub detail: String,
}

// ---- requests ----

/// `POST …/microservices` (§2.1).
#[derive(Debug, Serialize)]
pub(super) struct CreateServiceRequest {
    pub service: WireService,
}

/// `POST …/microservices/{id}/instances` (§3.1).
#[derive(Debug, Serialize)]
pub(super) struct RegisterInstanceRequest {
    pub instance: WireInstance,
}

/// `PUT …/properties` of a service (§2.6) or an instance (§3.10): replaces the map.
#[derive(Debug, Serialize)]
pub(super) struct PropertiesRequest<'a> {
    pub properties: &'a BTreeMap<String, String>,
}

/// One `(serviceId, instanceId)` pair, as batch heartbeat and batch find take it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct InstanceKey<'a> {
    pub service_id: &'a str,
    pub instance_id: &'a str,
}

/// `PUT …/heartbeats` (§3.8).
#[derive(Debug, Serialize)]
pub(super) struct HeartbeatSetRequest<'a> {
    pub instances: Vec<InstanceKey<'a>>,
}

/// `POST …/instances/action?type=query` (§3.6). Empty sections are left out.
#[derive(Debug, Default, Serialize)]
pub(super) struct BatchFindRequest<'a> {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<FindServiceEntry<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub instances: Vec<FindInstanceEntry<'a>>,
}

/// One `services` entry of a batch find: a find (§3.5) by exact key, with the last revision.
#[derive(Debug, Serialize)]
pub(super) struct FindServiceEntry<'a> {
    pub service: FindServiceKey<'a>,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub rev: &'a str,
}

/// The key a find looks a service up by.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct FindServiceKey<'a> {
    pub app_id: &'a str,
    pub service_name: &'a str,
    pub version: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub environment: &'a str,
}

/// One `instances` entry of a batch find (§3.2 semantics).
#[derive(Debug, Serialize)]
pub(super) struct FindInstanceEntry<'a> {
    pub instance: InstanceKey<'a>,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub rev: &'a str,
}

// ---- replies ----

/// `{"serviceId": …}`: create (§2.1) and existence (§2.5).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ServiceIdReply {
    #[serde(default, deserialize_with = "nullable")]
    pub service_id: String,
}

/// `{"instanceId": …}`: register (§3.1).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct InstanceIdReply {
    #[serde(default, deserialize_with = "nullable")]
    pub instance_id: String,
}

/// `GET …/microservices/{id}` (§2.2).
#[derive(Debug, Deserialize)]
pub(super) struct ServiceReply {
    #[serde(default)]
    pub service: Option<WireService>,
}

/// `GET …/microservices` (§2.3); `{}` when there are none.
#[derive(Debug, Default, Deserialize)]
pub(super) struct ServicesReply {
    #[serde(default, deserialize_with = "nullable")]
    pub services: Vec<WireService>,
}

/// `GET /v4/<project>/govern/microservices?options=statistics`: SC's counts of one tenant
/// (not in the reference; SC 1.4.8 `server/rest/govern`, 2.x `server/resource/govern`).
/// Zero counts are left out (`omitempty`).
#[derive(Debug, Default, Deserialize)]
pub(super) struct GovernReply {
    #[serde(default)]
    pub statistics: Option<WireStatistics>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct WireStatistics {
    pub services: WireCount,
    pub instances: WireCount,
}

/// One `{"count": N, …}` of the statistics; other counts are ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct WireCount {
    pub count: u64,
}

/// `{"instances": […]}`: health (§1.5).
#[derive(Debug, Default, Deserialize)]
pub(super) struct InstancesReply {
    #[serde(default, deserialize_with = "nullable")]
    pub instances: Vec<WireInstance>,
}

/// `GET …/registry/version` (§1.5); only the version is read.
#[derive(Debug, Deserialize)]
pub(super) struct VersionReply {
    #[serde(default, deserialize_with = "nullable")]
    pub version: String,
}

/// The 2.x batch heartbeat answer (§3.8): one element per instance, `errMessage` on failure.
#[derive(Debug, Default, Deserialize)]
pub(super) struct HeartbeatSetReply {
    #[serde(default, deserialize_with = "nullable")]
    pub instances: Vec<HeartbeatResult>,
}

/// One element of [`HeartbeatSetReply`].
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct HeartbeatResult {
    #[serde(default, deserialize_with = "nullable")]
    pub service_id: String,
    #[serde(default, deserialize_with = "nullable")]
    pub instance_id: String,
    #[serde(default, deserialize_with = "nullable")]
    pub err_message: String,
}

/// The batch find answer (§3.6); a section is absent when it had no request items.
#[derive(Debug, Default, Deserialize)]
pub(super) struct BatchFindReply {
    #[serde(default, deserialize_with = "nullable")]
    pub services: FindSection,
    #[serde(default, deserialize_with = "nullable")]
    pub instances: FindSection,
}

/// `updated` / `notModified` / `failed` of one batch find section. Indexes point into the
/// request list.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct FindSection {
    #[serde(default, deserialize_with = "nullable")]
    pub updated: Vec<FindUpdated>,
    #[serde(default, deserialize_with = "nullable")]
    pub not_modified: Vec<i64>,
    #[serde(default, deserialize_with = "nullable")]
    pub failed: Vec<FindFailed>,
}

/// An entry whose result changed since the revision sent: its new revision and instances.
#[derive(Debug, Default, Deserialize)]
pub(super) struct FindUpdated {
    #[serde(default)]
    pub index: i64,
    #[serde(default, deserialize_with = "nullable")]
    pub rev: String,
    #[serde(default, deserialize_with = "nullable")]
    pub instances: Vec<WireInstance>,
}

/// Entries that failed with one error (grouped by error code).
#[derive(Debug, Default, Deserialize)]
pub(super) struct FindFailed {
    #[serde(default, deserialize_with = "nullable")]
    pub indexes: Vec<i64>,
    #[serde(default, deserialize_with = "nullable")]
    pub error: WireError,
}

/// One entry of the admin dump's cache (§5.2, read by `dump.rs`): the etcd key (which carries
/// the tenant) and the stored value.
#[derive(Debug, Deserialize)]
pub(super) struct KeyValue<T> {
    #[serde(default, deserialize_with = "nullable")]
    pub key: String,
    #[serde(default = "Option::default")]
    pub value: Option<T>,
}

// ---- lenient readers ----

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Reads `null` as the type's default.
fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A JSON number, or a string holding one, or `null`/`""` (none).
struct LenientNumber;

impl<'de> Visitor<'de> for LenientNumber {
    type Value = Option<i128>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a number or a string holding a number")
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Some(i128::from(v)))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Some(i128::from(v)))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        // Saturating conversion; fractions are dropped.
        Ok(v.is_finite().then_some(v as i128))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        let v = v.trim();
        if v.is_empty() {
            return Ok(None);
        }
        v.parse::<i128>()
            .map(Some)
            .map_err(|_| E::invalid_value(de::Unexpected::Str(v), &self))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(LenientNumber)
    }
}

/// An error code (`"400012"` or `400012`); out-of-range values read as none.
fn lenient_code<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    Ok(d.deserialize_any(LenientNumber)?
        .and_then(|n| u32::try_from(n).ok()))
}

/// Unix seconds (`"1700000000"` or a number); a timestamp that is not one reads as none
/// rather than failing the whole reply, since nothing depends on it.
fn lenient_timestamp<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let parsed = d.deserialize_any(LenientNumber);
    Ok(parsed.ok().flatten().and_then(|n| u64::try_from(n).ok()))
}

/// A count or port, clamped into `u32` (SC stores Go `int32`, which may be negative).
fn lenient_u32<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let n = d.deserialize_any(LenientNumber)?.unwrap_or_default();
    Ok(u32::try_from(n.max(0)).unwrap_or(u32::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_code_as_string_or_number() {
        let s: WireError =
            serde_json::from_str(r#"{"errorCode":"400012","errorMessage":"m"}"#).unwrap();
        assert_eq!(s.error_code, Some(400012));
        let n: WireError = serde_json::from_str(r#"{"errorCode":400017,"detail":"d"}"#).unwrap();
        assert_eq!((n.error_code, n.detail.as_str()), (Some(400017), "d"));
        let none: WireError = serde_json::from_str(r#"{"errorMessage":"x"}"#).unwrap();
        assert_eq!(none.error_code, None);
        assert!(serde_json::from_str::<WireError>(r#"{"errorCode":"abc"}"#).is_err());
    }

    #[test]
    fn instance_reads_go_shapes_and_nulls() {
        let text = r#"{"instanceId":"i","serviceId":"s","endpoints":null,"hostName":"h",
            "healthCheck":{"mode":"push","interval":"30","times":-1},"modTimestamp":"1700000000",
            "unknownField":{"deep":[1,2,3]}}"#;
        let i: WireInstance = serde_json::from_str(text).unwrap();
        assert!(i.endpoints.is_empty());
        let hc = i.health_check.unwrap();
        assert_eq!((hc.interval, hc.times), (30, 0));
        assert_eq!(i.mod_timestamp, Some(1_700_000_000));
        let bad: WireInstance = serde_json::from_str(r#"{"modTimestamp":"soon"}"#).unwrap();
        assert_eq!(bad.mod_timestamp, None);
    }

    #[test]
    fn requests_omit_empty_fields() {
        let body = BatchFindRequest {
            services: vec![FindServiceEntry {
                service: FindServiceKey {
                    app_id: "a",
                    service_name: "s",
                    version: "1.0.0",
                    environment: "",
                },
                rev: "",
            }],
            instances: Vec::new(),
        };
        assert_eq!(
            serde_json::to_string(&body).unwrap(),
            r#"{"services":[{"service":{"appId":"a","serviceName":"s","version":"1.0.0"}}]}"#
        );
        let create = CreateServiceRequest {
            service: WireService {
                service_name: "s".into(),
                ..WireService::default()
            },
        };
        assert_eq!(
            serde_json::to_string(&create).unwrap(),
            r#"{"service":{"serviceName":"s"}}"#
        );
    }

    #[test]
    fn batch_find_reply_sections() {
        let text = r#"{"services":{"updated":[{"index":2,"rev":"r","instances":[{"instanceId":"x"}]}],
            "notModified":[0],"failed":[{"indexes":[1],"error":{"errorCode":"400012","errorMessage":"m"}}]}}"#;
        let r: BatchFindReply = serde_json::from_str(text).unwrap();
        assert_eq!(r.services.updated[0].index, 2);
        assert_eq!(r.services.not_modified, vec![0]);
        assert_eq!(r.services.failed[0].error.error_code, Some(400012));
        assert!(r.instances.updated.is_empty());
    }
}

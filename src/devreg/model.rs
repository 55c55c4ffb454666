//! The JSON shapes of SC's v4 API (`pkg/registry/*.go` of SC 1.4.8), used both to read request
//! bodies and to write responses, as SC itself does.
//!
//! Go's `omitempty` is reproduced with `skip_serializing_if`: empty strings, lists and maps and
//! zero numbers are left out, `None` pointers too (an empty struct behind a pointer is still
//! written as `{}`). Field order follows the Go structs, and maps are `BTreeMap`s because Go
//! writes map keys sorted. Reading is lenient like Go's `encoding/json`: unknown keys are
//! ignored and `null` means "not given" (see [`parse_body`]).

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// A string map (`properties`, `LBStrategy`, `tags`).
pub type StrMap = BTreeMap<String, String>;

fn is_zero(n: &i32) -> bool {
    *n == 0
}

/// `pb.MicroService`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct MicroService {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub service_id: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub app_id: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub service_name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub version: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub level: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub schemas: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<ServicePath>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub status: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub properties: StrMap,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub timestamp: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub providers: Vec<MicroServiceKey>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub alias: String,
    #[serde(rename = "LBStrategy", skip_serializing_if = "BTreeMap::is_empty")]
    pub lb_strategy: StrMap,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub mod_timestamp: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub environment: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub register_by: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub framework: Option<FrameWork>,
}

/// `pb.ServicePath`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ServicePath {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub path: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub property: StrMap,
}

/// `pb.FrameWorkProperty`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FrameWork {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub version: String,
}

/// `pb.MicroServiceKey`: identifies a service (or a dependency rule's provider, where
/// `version` may be a rule and `serviceName` may be `*`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct MicroServiceKey {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub tenant: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub project: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub app_id: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub service_name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub version: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub environment: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub alias: String,
}

impl MicroServiceKey {
    /// `proto.MicroServiceToKey`: the key of a stored service.
    pub fn of_service(tenant: &str, service: &MicroService) -> Self {
        MicroServiceKey {
            tenant: tenant.to_owned(),
            project: String::new(),
            app_id: service.app_id.clone(),
            service_name: service.service_name.clone(),
            version: service.version.clone(),
            environment: service.environment.clone(),
            alias: service.alias.clone(),
        }
    }
}

/// `pb.MicroServiceInstance`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct MicroServiceInstance {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub instance_id: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub service_id: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub host_name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub status: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub properties: StrMap,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub timestamp: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_center_info: Option<DataCenterInfo>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub mod_timestamp: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub version: String,
}

/// `pb.HealthCheck`. Numbers are Go `int32`s.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HealthCheck {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub mode: String,
    #[serde(skip_serializing_if = "is_zero")]
    pub port: i32,
    #[serde(skip_serializing_if = "is_zero")]
    pub interval: i32,
    #[serde(skip_serializing_if = "is_zero")]
    pub times: i32,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub url: String,
}

/// `pb.DataCenterInfo`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct DataCenterInfo {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub region: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub available_zone: String,
}

/// `POST …/microservices` body.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct CreateServiceRequest {
    pub service: Option<MicroService>,
    /// Black/white-list rules created with the service (`CreateServiceEx`).
    pub rules: Vec<AddOrUpdateServiceRule>,
    pub tags: StrMap,
    pub instances: Vec<MicroServiceInstance>,
}

/// `POST …/instances` body.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RegisterInstanceRequest {
    pub instance: Option<MicroServiceInstance>,
}

/// Body of both properties PUTs.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct PropertiesRequest {
    pub properties: StrMap,
}

/// `DELETE …/microservices` body.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct DelServicesRequest {
    pub service_ids: Vec<String>,
    pub force: bool,
}

/// One entry of a batch service delete answer.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DelServicesRspInfo {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub err_message: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub service_id: String,
}

/// `PUT|POST …/dependencies` body.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct DependenciesRequest {
    pub dependencies: Vec<ConsumerDependency>,
}

/// One consumer and the providers it depends on.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct ConsumerDependency {
    pub consumer: Option<MicroServiceKey>,
    pub providers: Vec<MicroServiceKey>,
}

/// `(serviceId, instanceId)`: batch heartbeat and batch find elements.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct HeartbeatSetElement {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub service_id: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub instance_id: String,
}

/// `PUT …/heartbeats` body.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct HeartbeatSetRequest {
    pub instances: Vec<HeartbeatSetElement>,
}

/// One entry of a 2.x batch heartbeat answer.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceHbRst {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub service_id: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub instance_id: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub err_message: String,
}

/// `POST …/instances/action?type=query` body.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct BatchFindRequest {
    pub services: Vec<FindService>,
    pub instances: Vec<FindInstance>,
}

/// One service query of a batch find.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct FindService {
    pub service: Option<MicroServiceKey>,
    pub rev: String,
}

/// One instance query of a batch find.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct FindInstance {
    pub instance: Option<HeartbeatSetElement>,
    pub rev: String,
}

/// `{"instances":[…]}` answers (find, list, health); `{}` when empty.
#[derive(Debug, Serialize)]
pub struct InstancesResponse {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub instances: Vec<MicroServiceInstance>,
}

/// `{"service":{…}}`.
#[derive(Debug, Serialize)]
pub struct ServiceResponse<'a> {
    pub service: &'a MicroService,
}

/// `{"services":[…]}` (list), `{}` when empty.
#[derive(Debug, Serialize)]
pub struct ServicesResponse<'a> {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<&'a MicroService>,
}

/// `{"providers":[…]}`, `{}` when empty.
#[derive(Debug, Serialize)]
pub struct ProvidersResponse {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub providers: Vec<MicroService>,
}

/// `{"consumers":[…]}`, `{}` when empty.
#[derive(Debug, Serialize)]
pub struct ConsumersResponse {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub consumers: Vec<MicroService>,
}

/// `{"instance":{…}}`.
#[derive(Debug, Serialize)]
pub struct InstanceResponse {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<MicroServiceInstance>,
}

/// `{"instances":[{serviceId, instanceId, errMessage?}]}` (2.x batch heartbeat).
#[derive(Debug, Serialize)]
pub struct HeartbeatSetResponse {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub instances: Vec<InstanceHbRst>,
}

/// `{"services":[{"serviceId":…}]}` (batch delete).
#[derive(Debug, Serialize)]
pub struct DelServicesResponse {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<DelServicesRspInfo>,
}

/// A websocket message (`pb.WatchInstanceResponse` without its `response`).
#[derive(Debug, Serialize)]
pub struct WatchEvent<'a> {
    pub action: &'a str,
    pub key: &'a MicroServiceKey,
    pub instance: &'a MicroServiceInstance,
}

/// `{"Dependency":[…]}`: the value of a dependency rule in the admin dump.
#[derive(Debug, Serialize)]
pub struct DependencyValue<'a> {
    #[serde(rename = "Dependency", skip_serializing_if = "<[_]>::is_empty")]
    pub dependency: &'a [MicroServiceKey],
}

/// `pb.Schema`: one contract of a service (batch upload element and list answer entry).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Schema {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub schema_id: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub summary: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub schema: String,
}

/// `PUT …/schemas/{schemaId}` body (`pb.ModifySchemaRequest`; ids come from the path).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ModifySchemaRequest {
    pub schema: String,
    pub summary: String,
}

/// `POST …/schemas` body (`pb.ModifySchemasRequest`).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ModifySchemasRequest {
    pub schemas: Vec<Schema>,
}

/// `{"schemas":[…]}` (list), `{}` when empty.
#[derive(Debug, Serialize)]
pub struct SchemasResponse {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub schemas: Vec<Schema>,
}

/// `pb.AddOrUpdateServiceRule`: a rule as clients send it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct AddOrUpdateServiceRule {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub rule_type: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub attribute: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub pattern: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub description: String,
}

/// `pb.ServiceRule`: a stored black/white-list rule.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ServiceRule {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub rule_id: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub rule_type: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub attribute: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub pattern: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub timestamp: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub mod_timestamp: String,
}

/// JSON member names of every request type above, as written in the Go `json` tags. Go's
/// `encoding/json` matches an object key to a field exactly or else case-insensitively, so
/// `{"Service":{"ServiceName":…}}` fills `service.serviceName`; [`parse_body`] renames such
/// keys to these spellings first.
const FIELD_NAMES: &[&str] = &[
    "serviceId",
    "appId",
    "serviceName",
    "version",
    "description",
    "level",
    "schemas",
    "paths",
    "status",
    "properties",
    "timestamp",
    "providers",
    "alias",
    "LBStrategy",
    "modTimestamp",
    "environment",
    "registerBy",
    "framework",
    "path",
    "property",
    "name",
    "tenant",
    "project",
    "instanceId",
    "endpoints",
    "hostName",
    "healthCheck",
    "dataCenterInfo",
    "mode",
    "port",
    "interval",
    "times",
    "url",
    "region",
    "availableZone",
    "service",
    "rules",
    "tags",
    "instances",
    "instance",
    "serviceIds",
    "force",
    "dependencies",
    "consumer",
    "services",
    "rev",
    "schemaId",
    "summary",
    "schema",
    "ruleType",
    "attribute",
    "pattern",
];

/// Members whose value is a free string map: their keys are data, never renamed.
const MAP_FIELDS: &[&str] = &["properties", "LBStrategy", "property", "tags"];

/// Renames object keys that match a known member case-insensitively (Go's `EqualFold`,
/// ASCII here) to that member's spelling, except inside free maps.
fn fold_keys(value: serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(map) => serde_json::Value::Object(
            map.into_iter()
                .map(|(k, v)| {
                    let name = FIELD_NAMES
                        .iter()
                        .find(|f| **f == k)
                        .or_else(|| FIELD_NAMES.iter().find(|f| f.eq_ignore_ascii_case(&k)))
                        .map(|f| (*f).to_owned())
                        .unwrap_or(k);
                    let v = if MAP_FIELDS.contains(&name.as_str()) {
                        v
                    } else {
                        fold_keys(v)
                    };
                    (name, v)
                })
                .collect(),
        ),
        serde_json::Value::Array(items) => {
            serde_json::Value::Array(items.into_iter().map(fold_keys).collect())
        }
        other => other,
    }
}

/// Reads a request body the way Go's `json.Unmarshal` into a fresh struct does: unknown keys
/// are ignored, `null` (the whole body or any object member) leaves the field unset, and keys
/// match member names case-insensitively.
///
/// # Errors
/// The JSON error text; an empty body gives Go's `unexpected end of JSON input`.
pub fn parse_body<T: DeserializeOwned + Default>(bytes: &[u8]) -> Result<T, String> {
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
        if e.is_eof() {
            "unexpected end of JSON input".to_owned()
        } else {
            e.to_string()
        }
    })?;
    let value = fold_keys(strip_nulls(value));
    if value.is_null() {
        return Ok(T::default());
    }
    serde_json::from_value(value).map_err(|e| e.to_string())
}

/// Removes `null` object members recursively (Go leaves such fields at their zero value).
fn strip_nulls(value: serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(map) => serde_json::Value::Object(
            map.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, strip_nulls(v)))
                .collect(),
        ),
        serde_json::Value::Array(items) => {
            serde_json::Value::Array(items.into_iter().map(strip_nulls).collect())
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn omitempty_and_field_names() {
        let service = MicroService {
            service_id: "s1".into(),
            lb_strategy: [("a".to_owned(), "b".to_owned())].into(),
            ..Default::default()
        };
        let text = serde_json::to_string(&service).unwrap();
        assert_eq!(text, r#"{"serviceId":"s1","LBStrategy":{"a":"b"}}"#);
        let hc = HealthCheck {
            mode: "push".into(),
            interval: 30,
            times: 0,
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_string(&hc).unwrap(),
            r#"{"mode":"push","interval":30}"#
        );
    }

    #[test]
    fn parse_is_lenient_like_go() {
        let req: RegisterInstanceRequest =
            parse_body(br#"{"instance":{"hostName":null,"x":1,"endpoints":["a"]}}"#).unwrap();
        let inst = req.instance.unwrap();
        assert_eq!(inst.host_name, "");
        assert_eq!(inst.endpoints, vec!["a"]);
        let empty: RegisterInstanceRequest = parse_body(b"null").unwrap();
        assert!(empty.instance.is_none());
        assert_eq!(
            parse_body::<RegisterInstanceRequest>(b"").unwrap_err(),
            "unexpected end of JSON input"
        );
        assert!(parse_body::<RegisterInstanceRequest>(b"{\"instance\":").is_err());
    }
}

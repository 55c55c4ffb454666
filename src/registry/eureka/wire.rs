//! Eureka's JSON as the server writes it (reference §1.3), read leniently and kept private to
//! the adapter.
//!
//! Eureka's Jackson codec writes numbers as strings in some places and numbers in others,
//! older servers write a lone `application` or `instance` as a bare object instead of a
//! one-element array, and an empty metadata map carries a Java `@class` key. Rather than a
//! serde derive per variant, each instance object is parsed into a `serde_json::Value` and
//! read field by field with helpers that take either spelling: ports as number or numeric
//! string, `@enabled` as bool or string, timestamps as number or string. The document around
//! the instances is walked with serde's streaming visitors ([`apps_each`]), so a registry of
//! 10 000 records is never one `Value` tree.

use std::collections::BTreeMap;

use serde_json::Value;

/// Eureka's default port when `port` is absent (§1.3.1).
const DEFAULT_PORT: u32 = 7001;
/// Eureka's default secure port when `securePort` is absent; disabled then.
const DEFAULT_SECURE_PORT: u32 = 7002;

/// A port object: `{"$": 8080, "@enabled": "true"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct Port {
    pub number: u32,
    pub enabled: bool,
}

/// `leaseInfo`: only what the mapping reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct Lease {
    pub renewal_interval_secs: u64,
    pub duration_secs: u64,
}

/// One instance record as read from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct WireInstance {
    /// `instanceId`, or `hostName` when the record has none (the server's own key, §2.1).
    pub instance_id: String,
    pub host_name: String,
    /// Upper-case application name.
    pub app: String,
    pub ip_addr: String,
    /// Eureka's status name (`UP`, `OUT_OF_SERVICE`, ...); `UNKNOWN` when absent.
    pub status: String,
    /// `overriddenStatus` (legacy `overriddenstatus`); `UNKNOWN` when absent.
    pub overridden_status: String,
    pub port: Port,
    pub secure_port: Port,
    pub vip_address: String,
    pub lease: Option<Lease>,
    /// String metadata; `@class` keys and nulls are left out.
    pub metadata: BTreeMap<String, String>,
    /// `ADDED`, `MODIFIED` or `DELETED` in a delta.
    pub action_type: String,
    pub last_updated_ms: Option<u64>,
    pub last_dirty_ms: Option<u64>,
}

impl WireInstance {
    /// A digest of everything read from the record but its `actionType`: equal digests, same
    /// record (renewals change nothing read here), so a delta that repeats a record need not
    /// be decoded again.
    pub fn digest(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        // Destructured, so that a new field has to be considered here.
        let WireInstance {
            instance_id,
            host_name,
            app,
            ip_addr,
            status,
            overridden_status,
            port,
            secure_port,
            vip_address,
            lease,
            metadata,
            action_type: _,
            last_updated_ms,
            last_dirty_ms,
        } = self;
        let mut h = std::hash::DefaultHasher::new();
        (
            instance_id,
            host_name,
            app,
            ip_addr,
            status,
            overridden_status,
        )
            .hash(&mut h);
        (port, secure_port, vip_address, lease, metadata).hash(&mut h);
        (last_updated_ms, last_dirty_ms).hash(&mut h);
        h.finish()
    }
}

/// `{"applications": …}`: a full registry or a delta, read whole (tests).
#[cfg(test)]
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct WireApps {
    /// `versions__delta`, as text.
    pub versions_delta: String,
    /// `apps__hashcode`, as text (`""` for an empty registry).
    pub hashcode: String,
    pub instances: Vec<WireInstance>,
}

/// A string, number or bool as text; `None` for null, arrays and objects.
fn text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A non-negative integer written as a number or as a numeric string.
fn number(value: &Value) -> Option<u64> {
    match value {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A flag written as a bool or as `"true"`/`"false"`.
fn flag(value: &Value) -> Option<bool> {
    match value {
        Value::Bool(b) => Some(*b),
        Value::String(s) => match s.trim() {
            t if t.eq_ignore_ascii_case("true") => Some(true),
            t if t.eq_ignore_ascii_case("false") => Some(false),
            _ => None,
        },
        _ => None,
    }
}

fn field_text(object: &serde_json::Map<String, Value>, key: &str) -> String {
    object.get(key).and_then(text).unwrap_or_default()
}

/// A port object, or the server's default when absent or unreadable.
fn port(value: Option<&Value>, default: Port) -> Port {
    let Some(Value::Object(object)) = value else {
        return default;
    };
    let number = object
        .get("$")
        .and_then(number)
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(default.number);
    let enabled = object.get("@enabled").and_then(flag).unwrap_or(true);
    Port { number, enabled }
}

/// One instance object.
///
/// # Errors
/// A description when `value` is not an object.
pub(super) fn instance(value: &Value) -> Result<WireInstance, String> {
    let Value::Object(object) = value else {
        return Err("an instance is not a JSON object".into());
    };
    let host_name = field_text(object, "hostName");
    let mut instance_id = field_text(object, "instanceId");
    if instance_id.is_empty() {
        instance_id = host_name.clone();
    }
    let status = match field_text(object, "status") {
        s if s.is_empty() => "UNKNOWN".to_owned(),
        s => s,
    };
    let lease = match object.get("leaseInfo") {
        Some(Value::Object(lease)) => Some(Lease {
            renewal_interval_secs: lease
                .get("renewalIntervalInSecs")
                .and_then(number)
                .unwrap_or(30),
            duration_secs: lease.get("durationInSecs").and_then(number).unwrap_or(90),
        }),
        _ => None,
    };
    let metadata = match object.get("metadata") {
        Some(Value::Object(map)) => map
            .iter()
            .filter(|(k, _)| k.as_str() != "@class")
            .filter_map(|(k, v)| text(v).map(|v| (k.clone(), v)))
            .collect(),
        _ => BTreeMap::new(),
    };
    let overridden_status = ["overriddenStatus", "overriddenstatus"]
        .iter()
        .map(|key| field_text(object, key))
        .find(|s| !s.is_empty())
        .unwrap_or_else(|| "UNKNOWN".to_owned());
    Ok(WireInstance {
        instance_id,
        host_name,
        overridden_status,
        app: field_text(object, "app").to_uppercase(),
        ip_addr: field_text(object, "ipAddr"),
        status,
        port: port(
            object.get("port"),
            Port {
                number: DEFAULT_PORT,
                enabled: true,
            },
        ),
        secure_port: port(
            object.get("securePort"),
            Port {
                number: DEFAULT_SECURE_PORT,
                enabled: false,
            },
        ),
        vip_address: field_text(object, "vipAddress"),
        lease,
        metadata,
        action_type: field_text(object, "actionType"),
        last_updated_ms: object.get("lastUpdatedTimestamp").and_then(number),
        last_dirty_ms: object.get("lastDirtyTimestamp").and_then(number),
    })
}

/// `versions__delta` and `apps__hashcode` of a `{"applications": …}` answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct AppsHeader {
    /// `versions__delta`, as text.
    pub versions_delta: String,
    /// `apps__hashcode`, as text (`""` for an empty registry).
    pub hashcode: String,
}

/// A `{"applications": …}` answer (`GET /apps`, `GET /apps/delta`), every instance in one
/// vector (tests; the adapter reads with [`apps_each`]).
///
/// # Errors
/// As [`apps_each`].
#[cfg(test)]
pub(super) fn apps(body: &[u8]) -> Result<WireApps, String> {
    let mut instances = Vec::new();
    let header = apps_each(body, &mut |i| instances.push(i))?;
    Ok(WireApps {
        versions_delta: header.versions_delta,
        hashcode: header.hashcode,
        instances,
    })
}

/// Reads a `{"applications": …}` answer (`GET /apps`, `GET /apps/delta`), handing each
/// instance to `each` in document order as soon as it is read: only one instance is ever
/// held as a `serde_json::Value`, never the whole document (10 000 records are ~15 MB of
/// text and several times that as a `Value` tree). When this fails, `each` may already have
/// been given some instances: the caller drops what it built from them.
///
/// # Errors
/// A description when the body is not JSON, has no `applications` object, or an instance
/// is not an object.
pub(super) fn apps_each(
    body: &[u8],
    each: &mut dyn FnMut(WireInstance),
) -> Result<AppsHeader, String> {
    use serde::de::DeserializeSeed;
    let mut sink = stream::Sink { each, bad: None };
    let mut de = serde_json::Deserializer::from_slice(body);
    let read = stream::Root(&mut sink)
        .deserialize(&mut de)
        .and_then(|header| de.end().map(|()| header));
    if let Some(bad) = sink.bad {
        return Err(bad);
    }
    match read {
        Err(e) => Err(format!("not JSON ({e}): {}", preview(body))),
        Ok(None) => Err(format!(
            "no \"applications\" object in the answer: {}",
            preview(body)
        )),
        Ok(Some(header)) => Ok(header),
    }
}

/// The visitors of [`apps_each`]: the document is walked with serde's streaming API;
/// each instance object alone becomes a `Value` for [`instance`]. Anything else is skipped
/// without being built (`IgnoredAny`), as [`apps`] used to leave it unread in the tree.
mod stream {
    use std::fmt;

    use serde::Deserialize as _;
    use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
    use serde_json::Value;

    use super::{AppsHeader, WireInstance, instance, text};

    pub(super) struct Sink<'a> {
        pub each: &'a mut dyn FnMut(WireInstance),
        /// Why an instance was refused (the read stops there).
        pub bad: Option<String>,
    }

    /// Values other than the expected kind are skipped (as `Value::get` on another kind
    /// finds nothing). `$visit_map` handles an object.
    macro_rules! skip_others {
        ($value:ty, $none:expr) => {
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<$value, E> {
                Ok($none)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<$value, E> {
                Ok($none)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<$value, E> {
                Ok($none)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<$value, E> {
                Ok($none)
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<$value, E> {
                Ok($none)
            }
            fn visit_unit<E: de::Error>(self) -> Result<$value, E> {
                Ok($none)
            }
            fn visit_none<E: de::Error>(self) -> Result<$value, E> {
                Ok($none)
            }
        };
    }

    /// Skips the rest of a sequence.
    fn drain<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(())
    }

    /// The document: `None` unless it is an object with an `applications` object.
    pub(super) struct Root<'s, 'a>(pub &'s mut Sink<'a>);

    impl<'de> DeserializeSeed<'de> for Root<'_, '_> {
        type Value = Option<AppsHeader>;
        fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for Root<'_, '_> {
        type Value = Option<AppsHeader>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a JSON document")
        }
        skip_others!(Option<AppsHeader>, None);
        fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
            drain(seq).map(|()| None)
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut header = None;
            while let Some(key) = map.next_key::<String>()? {
                if key != "applications" {
                    map.next_value::<IgnoredAny>()?;
                } else if header.is_some() {
                    return Err(de::Error::custom("two \"applications\" objects"));
                } else {
                    header = map.next_value_seed(Applications(&mut *self.0))?;
                }
            }
            Ok(header)
        }
    }

    /// `{"versions__delta": …, "apps__hashcode": …, "application": …}`.
    struct Applications<'s, 'a>(&'s mut Sink<'a>);

    impl<'de> DeserializeSeed<'de> for Applications<'_, '_> {
        type Value = Option<AppsHeader>;
        fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for Applications<'_, '_> {
        type Value = Option<AppsHeader>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an applications object")
        }
        skip_others!(Option<AppsHeader>, None);
        fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
            drain(seq).map(|()| None)
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut header = AppsHeader::default();
            while let Some(key) = map.next_key::<String>()? {
                match key.as_str() {
                    "versions__delta" => {
                        header.versions_delta =
                            text(&map.next_value::<Value>()?).unwrap_or_default();
                    }
                    "apps__hashcode" => {
                        header.hashcode = text(&map.next_value::<Value>()?).unwrap_or_default();
                    }
                    "application" => map.next_value_seed(Elements(Application(&mut *self.0)))?,
                    _ => {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
            }
            Ok(Some(header))
        }
    }

    /// What an array element or a bare object is read with.
    trait Element<'de> {
        fn element<A: SeqAccess<'de>>(&mut self, seq: &mut A) -> Result<bool, A::Error>;
        fn object<A: MapAccess<'de>>(&mut self, map: A) -> Result<(), A::Error>;
    }

    /// A field that is an array of elements, or a bare object standing for one element;
    /// anything else holds none.
    struct Elements<T>(T);

    impl<'de, T: Element<'de>> DeserializeSeed<'de> for Elements<T> {
        type Value = ();
        fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(self)
        }
    }

    impl<'de, T: Element<'de>> Visitor<'de> for Elements<T> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an array or an object")
        }
        skip_others!((), ());
        fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
            while self.0.element(&mut seq)? {}
            Ok(())
        }
        fn visit_map<A: MapAccess<'de>>(mut self, map: A) -> Result<(), A::Error> {
            self.0.object(map)
        }
    }

    /// One application: its `instance` field.
    struct Application<'s, 'a>(&'s mut Sink<'a>);

    impl<'de> Element<'de> for Application<'_, '_> {
        fn element<A: SeqAccess<'de>>(&mut self, seq: &mut A) -> Result<bool, A::Error> {
            seq.next_element_seed(Elements(ApplicationSeed(&mut *self.0)))
                .map(|read| read.is_some())
        }
        fn object<A: MapAccess<'de>>(&mut self, mut map: A) -> Result<(), A::Error> {
            while let Some(key) = map.next_key::<String>()? {
                if key == "instance" {
                    map.next_value_seed(Elements(Instance(&mut *self.0)))?;
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(())
        }
    }

    /// An application as an array element: an object is read, anything else skipped (an
    /// array element that is itself an array holds no application).
    struct ApplicationSeed<'s, 'a>(&'s mut Sink<'a>);

    impl<'de> Element<'de> for ApplicationSeed<'_, '_> {
        fn element<A: SeqAccess<'de>>(&mut self, seq: &mut A) -> Result<bool, A::Error> {
            // Only reached for an array nested in the application array: skipped whole.
            seq.next_element::<IgnoredAny>().map(|read| read.is_some())
        }
        fn object<A: MapAccess<'de>>(&mut self, map: A) -> Result<(), A::Error> {
            Application(&mut *self.0).object(map)
        }
    }

    /// One instance object, read as a `Value` alone and handed to the sink.
    struct Instance<'s, 'a>(&'s mut Sink<'a>);

    impl Instance<'_, '_> {
        fn take<E: de::Error>(&mut self, value: &Value) -> Result<(), E> {
            match instance(value) {
                Ok(read) => {
                    (self.0.each)(read);
                    Ok(())
                }
                Err(e) => {
                    let message = e.clone();
                    self.0.bad = Some(e);
                    Err(E::custom(message))
                }
            }
        }
    }

    impl<'de> Element<'de> for Instance<'_, '_> {
        fn element<A: SeqAccess<'de>>(&mut self, seq: &mut A) -> Result<bool, A::Error> {
            match seq.next_element::<Value>()? {
                Some(value) => self.take::<A::Error>(&value).map(|()| true),
                None => Ok(false),
            }
        }
        fn object<A: MapAccess<'de>>(&mut self, map: A) -> Result<(), A::Error> {
            let value = Value::deserialize(de::value::MapAccessDeserializer::new(map))?;
            self.take::<A::Error>(&value)
        }
    }
}

/// A `{"instance": …}` answer (`GET /apps/{APP}/{ID}`).
///
/// # Errors
/// A description when the body is not such an answer.
pub(super) fn instance_reply(body: &[u8]) -> Result<WireInstance, String> {
    let root: Value =
        serde_json::from_slice(body).map_err(|e| format!("not JSON ({e}): {}", preview(body)))?;
    let item = root
        .get("instance")
        .ok_or_else(|| format!("no \"instance\" in the answer: {}", preview(body)))?;
    instance(item)
}

/// The first 200 bytes of a body, for error messages.
pub(super) fn preview(body: &[u8]) -> String {
    String::from_utf8_lossy(&body[..body.len().min(200)])
        .trim()
        .to_owned()
}

/// The full-registry hash of §5.2: instances counted per status, zero counts left out,
/// statuses in alphabetical order, `NAME_count_` each.
pub(super) fn hashcode<'a>(statuses: impl IntoIterator<Item = &'a str>) -> String {
    let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
    for status in statuses {
        *counts.entry(status).or_default() += 1;
    }
    counts
        .iter()
        .map(|(status, count)| format!("{status}_{count}_"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of reference §1.3, as the current server writes it.
    const FULL: &str = r#"{"applications":{"versions__delta":"1","apps__hashcode":"UP_1_","application":[
 {"name":"ORDERS","instance":[
  {"instanceId":"10.0.0.5:orders:8080","hostName":"10.0.0.5","app":"ORDERS","ipAddr":"10.0.0.5",
   "status":"UP","overriddenStatus":"UNKNOWN",
   "port":{"$":8080,"@enabled":"true"},"securePort":{"$":443,"@enabled":"false"},"countryId":1,
   "dataCenterInfo":{"@class":"com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo","name":"MyOwn"},
   "leaseInfo":{"renewalIntervalInSecs":30,"durationInSecs":90,"registrationTimestamp":1700000000000,
     "lastRenewalTimestamp":1700000090000,"evictionTimestamp":0,"serviceUpTimestamp":1700000000000},
   "metadata":{"zone":"a"},"homePageUrl":"http://10.0.0.5:8080/",
   "healthCheckUrl":"http://10.0.0.5:8080/actuator/health","vipAddress":"orders","secureVipAddress":"orders",
   "isCoordinatingDiscoveryServer":"false","lastUpdatedTimestamp":"1700000000000",
   "lastDirtyTimestamp":"1699999999000","actionType":"ADDED"}]}]}}"#;

    #[test]
    fn the_reference_example_is_read() {
        let apps = apps(FULL.as_bytes()).expect("parsed");
        assert_eq!(apps.versions_delta, "1");
        assert_eq!(apps.hashcode, "UP_1_");
        let [i] = apps.instances.as_slice() else {
            panic!("one instance: {apps:?}");
        };
        assert_eq!(i.instance_id, "10.0.0.5:orders:8080");
        assert_eq!(i.app, "ORDERS");
        assert_eq!(
            i.port,
            Port {
                number: 8080,
                enabled: true
            }
        );
        assert!(!i.secure_port.enabled);
        assert_eq!(
            i.lease,
            Some(Lease {
                renewal_interval_secs: 30,
                duration_secs: 90
            })
        );
        assert_eq!(i.metadata, BTreeMap::from([("zone".into(), "a".into())]));
        assert_eq!(i.last_dirty_ms, Some(1_699_999_999_000));
        assert_eq!(i.last_updated_ms, Some(1_700_000_000_000));
        assert_eq!(i.action_type, "ADDED");
        assert_eq!(i.overridden_status, "UNKNOWN");
    }

    /// Old servers (1.1.x) write a lone application or instance as a bare object; ports and
    /// flags may come in either spelling; `@class` is not metadata.
    #[test]
    fn bare_objects_and_either_spelling_are_read() {
        let body = r#"{"applications":{"versions__delta":7,"apps__hashcode":"",
          "application":{"name":"A","instance":{"hostName":"h1","app":"a","ipAddr":"1.2.3.4",
            "status":"DOWN","port":{"@enabled":true,"$":"8081"},
            "securePort":{"$":"8443","@enabled":"true"},
            "metadata":{"@class":"java.util.Collections$EmptyMap"}}}}}"#;
        let apps = apps(body.as_bytes()).expect("parsed");
        assert_eq!(apps.versions_delta, "7");
        let [i] = apps.instances.as_slice() else {
            panic!("one instance: {apps:?}");
        };
        assert_eq!(i.instance_id, "h1", "no instanceId: the host name keys it");
        assert_eq!(i.app, "A");
        assert_eq!(
            (i.port.number, i.port.enabled, i.secure_port.number),
            (8081, true, 8443)
        );
        assert!(i.secure_port.enabled);
        assert!(i.metadata.is_empty());
        assert_eq!(i.lease, None);
    }

    #[test]
    fn absent_ports_take_the_server_defaults() {
        let i = instance(&serde_json::json!({"hostName": "h", "app": "A"})).expect("instance");
        assert_eq!(
            (i.port, i.secure_port),
            (
                Port {
                    number: 7001,
                    enabled: true
                },
                Port {
                    number: 7002,
                    enabled: false
                }
            )
        );
        assert_eq!(i.status, "UNKNOWN");
    }

    #[test]
    fn empty_registries_and_non_eureka_answers() {
        let empty = apps(
            br#"{"applications":{"versions__delta":"1","apps__hashcode":"","application":[]}}"#,
        )
        .expect("empty");
        assert!(empty.instances.is_empty());
        assert!(apps(br#"{"errorCode":"404"}"#).is_err());
        assert!(apps(b"404 page not found").is_err());
    }

    /// The whole-document reading [`apps_each`] replaced: the answer as one `Value` tree.
    fn apps_by_tree(body: &[u8]) -> Result<WireApps, String> {
        let root: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON ({e})"))?;
        let Some(Value::Object(applications)) = root.get("applications") else {
            return Err("no \"applications\" object".into());
        };
        let elements = |value: Option<&Value>| -> Vec<Value> {
            match value {
                Some(Value::Array(items)) => items.clone(),
                Some(object @ Value::Object(_)) => vec![object.clone()],
                _ => Vec::new(),
            }
        };
        let mut instances = Vec::new();
        for application in elements(applications.get("application")) {
            for item in elements(application.get("instance")) {
                instances.push(instance(&item)?);
            }
        }
        Ok(WireApps {
            versions_delta: applications
                .get("versions__delta")
                .and_then(text)
                .unwrap_or_default(),
            hashcode: applications
                .get("apps__hashcode")
                .and_then(text)
                .unwrap_or_default(),
            instances,
        })
    }

    /// The streaming reader reads what the whole-document reading read, in the same order,
    /// for every shape Eureka servers write and for odd ones; and refuses what it refused.
    #[test]
    fn streaming_reads_as_the_whole_document_did() {
        let i =
            |id: &str| format!(r#"{{"instanceId":"{id}","hostName":"h","app":"a","status":"UP"}}"#);
        let bodies = [
            FULL.to_owned(),
            format!(
                r#"{{"x":[1,{{"y":2}}],"applications":{{"apps__hashcode":"UP_3_","application":[
                  {{"name":"A","instance":[{},{}],"extra":{{"instance":[{}]}}}},
                  {{"name":"B","instance":{}}},
                  "not an application", 7, null, [{{"instance":[{}]}}],
                  {{"name":"C","instance":"none"}}, {{"name":"D"}}],
                  "versions__delta":12}},"tail":true}}"#,
                i("a1"),
                i("a2"),
                i("ignored"),
                i("b1"),
                i("nested"),
            ),
            format!(
                r#"{{"applications":{{"application":{{"instance":[{},{}]}},"versions__delta":null}}}}"#,
                i("x1"),
                i("x2"),
            ),
            r#"{"applications":{}}"#.to_owned(),
        ];
        for body in &bodies {
            let by_tree = apps_by_tree(body.as_bytes()).expect("tree");
            let streamed = apps(body.as_bytes()).expect("streamed");
            assert_eq!(streamed, by_tree, "{body}");
        }
        let ids: Vec<String> = apps(bodies[1].as_bytes())
            .expect("read")
            .instances
            .into_iter()
            .map(|i| i.instance_id)
            .collect();
        assert_eq!(ids, ["a1", "a2", "b1"]);

        // Refused alike, with the reason.
        for (body, reason) in [
            (r#"[{"applications":{}}]"#, "no \"applications\" object"),
            (r#"{"applications":[]}"#, "no \"applications\" object"),
            (
                r#"{"applications":{"application":[{"instance":[1]}]}}"#,
                "an instance is not a JSON object",
            ),
            (r#"{"applications":{}} trailing"#, "not JSON"),
            (
                r#"{"applications":{"application":[{"instance":[{"a":1}"#,
                "not JSON",
            ),
        ] {
            let error = apps(body.as_bytes()).expect_err(body);
            assert!(error.contains(reason), "{body}: {error}");
            assert!(apps_by_tree(body.as_bytes()).is_err(), "{body}");
        }
        // A second `applications` object is refused rather than read twice.
        assert!(apps(br#"{"applications":{},"applications":{}}"#).is_err());
    }

    /// The digest tells records apart by everything read but `actionType`.
    #[test]
    fn digests_ignore_only_the_action_type() {
        let base = serde_json::json!({
            "instanceId": "i", "hostName": "h", "app": "A", "ipAddr": "1.2.3.4", "status": "UP",
            "port": {"$": 80, "@enabled": "true"}, "metadata": {"k": "v"},
            "leaseInfo": {"renewalIntervalInSecs": 10, "durationInSecs": 30,
                          "lastRenewalTimestamp": 1},
            "lastUpdatedTimestamp": "5", "lastDirtyTimestamp": "4", "actionType": "ADDED"
        });
        let digest = |edit: &dyn Fn(&mut Value)| {
            let mut value = base.clone();
            edit(&mut value);
            instance(&value).expect("record").digest()
        };
        let same = digest(&|_| {});
        assert_eq!(digest(&|v| v["actionType"] = "MODIFIED".into()), same);
        assert_eq!(
            digest(&|v| v["leaseInfo"]["lastRenewalTimestamp"] = 2.into()),
            same,
            "renewals change nothing read"
        );
        for edit in [
            &(|v: &mut Value| v["status"] = "DOWN".into()) as &dyn Fn(&mut Value),
            &|v| v["metadata"]["k"] = "w".into(),
            &|v| v["port"]["$"] = 81.into(),
            &|v| v["ipAddr"] = "1.2.3.5".into(),
            &|v| v["lastUpdatedTimestamp"] = "6".into(),
            &|v| v["leaseInfo"]["durationInSecs"] = 90.into(),
            &|v| v["overriddenStatus"] = "OUT_OF_SERVICE".into(),
        ] {
            assert_ne!(digest(edit), same);
        }
    }

    #[test]
    fn hashcode_follows_the_reference() {
        assert_eq!(hashcode(["UP", "DOWN", "UP", "UP"]), "DOWN_1_UP_3_");
        assert_eq!(hashcode(["UP"]), "UP_1_");
        assert_eq!(hashcode([]), "");
        assert_eq!(
            hashcode(["UP", "OUT_OF_SERVICE", "UNKNOWN", "STARTING", "DOWN"]),
            "DOWN_1_OUT_OF_SERVICE_1_STARTING_1_UNKNOWN_1_UP_1_"
        );
    }

    /// Property tests (issue 20): hostile or broken Eureka answers. The streaming reader
    /// agrees with the whole-tree reading wherever it accepts, every instance it hands out
    /// decodes to a model or is left out (never a panic), and a refusal is a description.
    /// A fixed number of cases in CI, more with `PROPTEST_CASES` (docs/RELIABILITY.md, "Fuzzed inputs").
    mod props {
        use proptest::prelude::*;

        use super::super::super::convert::decode;
        use super::super::{apps, instance_reply};
        use super::{FULL, apps_by_tree};
        use crate::registry::fuzz_json::hostile_body;

        const ONE: &str = r#"{"instance":{"instanceId":"i1","hostName":"h","app":"ORDERS","ipAddr":"10.0.0.5","status":"UP","overriddenStatus":"UNKNOWN","port":{"$":8080,"@enabled":"true"},"securePort":{"$":"443","@enabled":false},"vipAddress":"orders","leaseInfo":{"renewalIntervalInSecs":30,"durationInSecs":90},"metadata":{"@class":"java.util.Collections$EmptyMap","sc.tenant":"acme/shop","sc.app":"mall","sc.name":"orders","sc.version":"1.0.0"},"lastUpdatedTimestamp":"1700000000000","lastDirtyTimestamp":1699999999000,"actionType":"ADDED"}}"#;

        fn samples() -> &'static [&'static str] {
            static SAMPLES: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
            SAMPLES.get_or_init(|| {
                let bare: &'static str = Box::leak(
                    format!(
                        r#"{{"applications":{{"versions__delta":7,"apps__hashcode":"UP_2_","application":{{"name":"ORDERS","instance":[{inner},{inner}]}}}}}}"#,
                        inner = &ONE[12..ONE.len() - 1]
                    )
                    .into_boxed_str(),
                );
                vec![FULL, ONE, bare]
            })
        }

        fn config() -> ProptestConfig {
            ProptestConfig {
                failure_persistence: None,
                ..ProptestConfig::with_cases(crate::fuzz_cases(512))
            }
        }

        proptest! {
            #![proptest_config(config())]

            #[test]
            fn apps_answers_are_read_like_the_tree_or_refused(body in hostile_body(samples())) {
                match apps(&body) {
                    Ok(read) => {
                        // The tree counts the nesting of the whole document against
                        // serde_json's limit (128) and checks the text of every string; the
                        // streamed reading skips what it does not read (unknown keys) without
                        // either, so such a document may pass only the latter.
                        const SKIPPED: [&str; 4] = [
                            "recursion limit",
                            "invalid unicode code point",
                            "control character",
                            "invalid escape",
                        ];
                        match apps_by_tree(&body) {
                            Err(e) if SKIPPED.iter().any(|why| e.contains(why)) => {}
                            by_tree => prop_assert_eq!(by_tree.as_ref(), Ok(&read)),
                        }
                        for wire in &read.instances {
                            if let Some(decoded) = decode(wire) {
                                prop_assert!(!decoded.instance.instance_id.is_empty() || wire.instance_id.is_empty());
                                prop_assert_eq!(&decoded.instance.service_id, &decoded.service.service_id);
                            }
                        }
                    }
                    Err(why) => prop_assert!(!why.is_empty()),
                }
            }

            #[test]
            fn instance_answers_are_read_or_refused(body in hostile_body(samples())) {
                match instance_reply(&body) {
                    Ok(wire) => {
                        if let Some(decoded) = decode(&wire) {
                            prop_assert_eq!(&decoded.instance.service_id, &decoded.service.service_id);
                        }
                    }
                    Err(why) => prop_assert!(!why.is_empty()),
                }
            }
        }
    }
}

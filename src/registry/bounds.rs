//! Wire-safety bounds: what every service and instance must satisfy to travel between data
//! centres, whatever registry it comes from or goes to.
//!
//! Two kinds of rules decide whether a value can be mirrored, and they live apart:
//!
//! - **These bounds**, shared by every registry kind. They keep a receiver safe from a broken
//!   or hostile peer (sizes, counts, no control characters in anything that ends up in logs,
//!   store keys or another registry's API) and hold what the model itself needs (a tenant
//!   `domain/project`, a service id and name, an instance id, host name and status, an
//!   instance that belongs to the service carried with it, numbers the wire carries and a port
//!   can be). `rpc::convert` refuses a whole message that breaks them, and the exporter leaves
//!   out a local object that breaks them, so that one odd object cannot make every snapshot
//!   of its data centre unusable.
//! - **The rules of the registry kind that receives the data** (ServiceComb's id characters,
//!   version format, environments, its shorter lengths): [`crate::registry::Registry::accepts_service`]
//!   and [`crate::registry::Registry::accepts_instance`], checked by the importer before it
//!   writes. A Eureka instance id such as `host:app:8080` passes these bounds and is refused
//!   only by a registry whose kind cannot hold it.
//!
//! The limits are generous: a value no registry would store is still bounded here, so that
//! the receiver never allocates without limit. One service and one instance together stay
//! far below 200 KiB. Descriptions, property keys and property values are carried as they
//! are (registries store them unchecked), within their sizes.
//!
//! The text-rule machinery (`TextRule`, `check_text`) is shared with the registry kinds'
//! rules, so both report a broken rule the same way: the field as a path
//! (`chunk.instances[7].host_name`) and a short metric label ([`BoundsError::reason`]).

use std::collections::BTreeMap;

use super::Refusal;
use super::model::{HealthCheck, Instance, InstanceRef, Schema, Service, Tenant};

/// Service and instance ids, in characters. Registries allow less (ServiceComb: 64); a
/// Eureka id `host:app:port` with a fully qualified host name fits.
pub const MAX_ID_CHARS: usize = 256;
/// A tenant, `domain/project`, in bytes.
pub const MAX_DOMAIN_PROJECT_BYTES: usize = 256;
/// Names and short texts (application, service name, alias, versions, environment, host
/// name, data-centre name, region and zone), in characters.
pub const MAX_NAME_CHARS: usize = 256;
/// Service description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 1024;
/// Statuses and levels, in characters (ServiceComb's longest is `OUTOFSERVICE`, Eureka's
/// `OUT_OF_SERVICE`).
pub const MAX_WORD_CHARS: usize = 32;
/// Endpoints of one instance (ServiceComb has no limit but a 5 KiB register body).
pub const MAX_ENDPOINTS: usize = 64;
/// One endpoint, in bytes.
pub const MAX_ENDPOINT_BYTES: usize = 1024;
/// Entries of one properties map.
pub const MAX_PROPERTIES: usize = 256;
/// One property key, in bytes.
pub const MAX_PROPERTY_KEY_BYTES: usize = 1024;
/// One property value, in bytes (ServiceComb's properties update takes at most 3 KiB in all).
pub const MAX_PROPERTY_VALUE_BYTES: usize = 4096;
/// All keys and values of one properties map together, in bytes.
pub const MAX_PROPERTIES_BYTES: usize = 64 * 1024;
/// Health-check URL, in bytes.
pub const MAX_URL_BYTES: usize = 1024;
/// Largest port number.
pub const MAX_PORT: u32 = 65_535;
/// Largest health-check interval and count: the wire carries them as `int32`.
pub const MAX_HEALTH_CHECK_NUMBER: u32 = i32::MAX.unsigned_abs();

/// A value outside the bounds. `reason()` is a short metric label; the message names the
/// field and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BoundsError {
    /// A required field is empty or blank.
    #[error("{field}: {detail}")]
    MissingField { field: String, detail: String },
    /// A service or instance id breaks the id rules.
    #[error("{field}: {detail}")]
    BadId { field: String, detail: String },
    /// A tenant that is not `domain/project`.
    #[error("{field}: {detail}")]
    BadTenant { field: String, detail: String },
    /// A value the field does not admit: format, enumeration, range, characters.
    #[error("{field}: {detail}")]
    BadValue { field: String, detail: String },
    /// Too long a text or too many entries.
    #[error("{field}: {detail}")]
    TooLarge { field: String, detail: String },
    /// An instance that does not belong to the service carried with it.
    #[error("{field}: {detail}")]
    UnknownService { field: String, detail: String },
}

impl BoundsError {
    /// A short label for metrics (`missing_field`, `bad_id`, ...), the same as the
    /// `rpc::convert::ConvertError` a peer's refusal of the value would give.
    pub fn reason(&self) -> &'static str {
        match self {
            BoundsError::MissingField { .. } => "missing_field",
            BoundsError::BadId { .. } => "bad_id",
            BoundsError::BadTenant { .. } => "bad_tenant",
            BoundsError::BadValue { .. } => "bad_value",
            BoundsError::TooLarge { .. } => "too_large",
            BoundsError::UnknownService { .. } => "unknown_service",
        }
    }

    /// The offending field, as a path (`instance.host_name`).
    pub fn field(&self) -> &str {
        match self {
            BoundsError::MissingField { field, .. }
            | BoundsError::BadId { field, .. }
            | BoundsError::BadTenant { field, .. }
            | BoundsError::BadValue { field, .. }
            | BoundsError::TooLarge { field, .. }
            | BoundsError::UnknownService { field, .. } => field,
        }
    }
}

impl From<BoundsError> for Refusal {
    fn from(e: BoundsError) -> Refusal {
        let reason = e.reason();
        let (field, detail) = match e {
            BoundsError::MissingField { field, detail }
            | BoundsError::BadId { field, detail }
            | BoundsError::BadTenant { field, detail }
            | BoundsError::BadValue { field, detail }
            | BoundsError::TooLarge { field, detail }
            | BoundsError::UnknownService { field, detail } => (field, detail),
        };
        Refusal {
            field,
            reason,
            detail,
        }
    }
}

/// Where a value sits in what is checked (`push.changes[3].upsert.instance`); field names
/// are appended to it.
#[derive(Clone, Copy)]
pub(crate) struct At<'a>(pub(crate) &'a str);

impl At<'_> {
    pub(crate) fn field(self, name: &str) -> String {
        format!("{}.{name}", self.0)
    }

    pub(crate) fn missing(self, name: &str, detail: &str) -> BoundsError {
        BoundsError::MissingField {
            field: self.field(name),
            detail: detail.to_owned(),
        }
    }

    pub(crate) fn bad_value(self, name: &str, detail: String) -> BoundsError {
        BoundsError::BadValue {
            field: self.field(name),
            detail,
        }
    }

    pub(crate) fn too_large(self, name: &str, detail: String) -> BoundsError {
        BoundsError::TooLarge {
            field: self.field(name),
            detail,
        }
    }
}

/// Most schemas (contracts) of one service (Service Center's default schema quota).
pub const MAX_SCHEMAS: usize = 100;
/// Longest schema id, in characters (Service Center's).
pub const MAX_SCHEMA_ID_CHARS: usize = 160;
/// Longest schema summary, in characters (Service Center's).
pub const MAX_SCHEMA_SUMMARY_CHARS: usize = 128;
/// Most tags of one service (Service Center's default tag quota).
pub const MAX_TAGS: usize = 100;
/// Most access rules of one service (Service Center's default rule quota).
pub const MAX_RULES: usize = 100;

/// Largest content of one schema, in bytes: a Java-chassis contract is tens of KiB.
pub const MAX_SCHEMA_BYTES: usize = 1024 * 1024;

/// A checked value for an error message: quoted, escaped, cut after 40 characters.
pub(crate) fn shown(value: &str) -> String {
    const KEEP: usize = 40;
    match value.char_indices().nth(KEEP) {
        Some((end, _)) => format!("{:?}...", &value[..end]),
        None => format!("{value:?}"),
    }
}

/// What a broken text rule is reported as: ids have their own reason (`bad_id`), other
/// fields `missing_field`, `too_large` or `bad_value`.
#[derive(Clone, Copy)]
pub(crate) enum TextKind {
    Id,
    Value,
}

/// The shape of one text field.
pub(crate) struct TextRule {
    pub(crate) required: bool,
    pub(crate) max_chars: usize,
    pub(crate) allowed: fn(char) -> bool,
    /// The allowed characters, in words, for error messages.
    pub(crate) allowed_text: &'static str,
    pub(crate) kind: TextKind,
}

fn no_control(c: char) -> bool {
    !c.is_control()
}

fn any_char(_: char) -> bool {
    true
}

/// Text of at most `max_chars` characters without control characters.
pub(crate) const fn plain(required: bool, max_chars: usize) -> TextRule {
    TextRule {
        required,
        max_chars,
        allowed: no_control,
        allowed_text: "no control characters",
        kind: TextKind::Value,
    }
}

/// A service or instance id: required, bounded, no control characters.
const ID: TextRule = TextRule {
    required: true,
    max_chars: MAX_ID_CHARS,
    allowed: no_control,
    allowed_text: "no control characters",
    kind: TextKind::Id,
};

/// Checks `value` (field `name` under `at`) against `rule`: empty, then characters, then
/// length.
///
/// # Errors
/// `missing_field` for an empty required value; `bad_id` (ids) or `bad_value` for a
/// character the rule does not allow; `bad_id` (ids) or `too_large` for too long a value.
pub(crate) fn check_text(
    at: At,
    name: &str,
    value: &str,
    rule: &TextRule,
) -> Result<(), BoundsError> {
    if value.is_empty() {
        return if rule.required {
            Err(at.missing(name, "empty"))
        } else {
            Ok(())
        };
    }
    let detail = if let Some(c) = value.chars().find(|&c| !(rule.allowed)(c)) {
        format!(
            "{} has the character {c:?}; allowed: {}",
            shown(value),
            rule.allowed_text
        )
    } else {
        let chars = value.chars().count();
        if chars <= rule.max_chars {
            return Ok(());
        }
        if let TextKind::Value = rule.kind {
            return Err(at.too_large(
                name,
                format!("{chars} characters, at most {}", rule.max_chars),
            ));
        }
        format!(
            "{} has {chars} characters, at most {}",
            shown(value),
            rule.max_chars
        )
    };
    Err(match rule.kind {
        TextKind::Id => BoundsError::BadId {
            field: at.field(name),
            detail,
        },
        TextKind::Value => at.bad_value(name, detail),
    })
}

/// Refuses a value longer than `max` bytes as `too_large`.
pub(crate) fn check_max_bytes(
    at: At,
    name: &str,
    value: &str,
    max: usize,
) -> Result<(), BoundsError> {
    if value.len() > max {
        return Err(at.too_large(name, format!("{} bytes, at most {max}", value.len())));
    }
    Ok(())
}

/// Refuses a blank value (only whitespace) as `missing_field`.
fn check_not_blank(at: At, name: &str, value: &str) -> Result<(), BoundsError> {
    if value.chars().all(char::is_whitespace) {
        return Err(at.missing(name, "blank"));
    }
    Ok(())
}

/// A tenant: two non-empty parts without `/` or control characters, at most
/// [`MAX_DOMAIN_PROJECT_BYTES`] as `domain/project`.
pub(crate) fn check_tenant(at: At, name: &str, tenant: &Tenant) -> Result<(), BoundsError> {
    let bad = |detail: String| BoundsError::BadTenant {
        field: at.field(name),
        detail,
    };
    let text = tenant.to_string();
    let ok_part = |p: &str| !p.is_empty() && !p.contains('/') && !p.chars().any(char::is_control);
    if !ok_part(&tenant.domain) || !ok_part(&tenant.project) {
        return Err(bad(format!(
            "{} is not domain/project (two non-empty parts, no control characters)",
            shown(&text)
        )));
    }
    if text.len() > MAX_DOMAIN_PROJECT_BYTES {
        return Err(bad(format!(
            "{} bytes, at most {MAX_DOMAIN_PROJECT_BYTES}",
            text.len()
        )));
    }
    Ok(())
}

/// A properties map: at most [`MAX_PROPERTIES`] entries, each key and value and all of them
/// together within their sizes. Any characters.
fn check_properties(at: At, properties: &BTreeMap<String, String>) -> Result<(), BoundsError> {
    if properties.len() > MAX_PROPERTIES {
        return Err(at.too_large(
            "properties",
            format!("{} entries, at most {MAX_PROPERTIES}", properties.len()),
        ));
    }
    let mut total = 0usize;
    for (key, value) in properties {
        if key.len() > MAX_PROPERTY_KEY_BYTES {
            return Err(at.too_large(
                "properties",
                format!(
                    "key {} has {} bytes, at most {MAX_PROPERTY_KEY_BYTES}",
                    shown(key),
                    key.len()
                ),
            ));
        }
        if value.len() > MAX_PROPERTY_VALUE_BYTES {
            return Err(at.too_large(
                "properties",
                format!(
                    "value of {} has {} bytes, at most {MAX_PROPERTY_VALUE_BYTES}",
                    shown(key),
                    value.len()
                ),
            ));
        }
        total = total.saturating_add(key.len()).saturating_add(value.len());
    }
    if total > MAX_PROPERTIES_BYTES {
        return Err(at.too_large(
            "properties",
            format!("{total} bytes in all, at most {MAX_PROPERTIES_BYTES}"),
        ));
    }
    Ok(())
}

/// A status or level: a short word.
const fn word(required: bool) -> TextRule {
    plain(required, MAX_WORD_CHARS)
}

/// [`check_service`] for a service at `path` of a message.
///
/// # Errors
/// The first bound `service` breaks.
pub(crate) fn service_at(path: &str, s: &Service) -> Result<(), BoundsError> {
    let at = At(path);
    check_tenant(at, "domain_project", &s.tenant)?;
    check_text(at, "service_id", &s.service_id, &ID)?;
    check_text(at, "app", &s.app, &plain(false, MAX_NAME_CHARS))?;
    check_text(at, "name", &s.name, &plain(true, MAX_NAME_CHARS))?;
    check_text(at, "version", &s.version, &plain(false, MAX_NAME_CHARS))?;
    check_text(
        at,
        "environment",
        &s.environment,
        &plain(false, MAX_NAME_CHARS),
    )?;
    check_text(at, "status", &s.status, &word(false))?;
    check_text(at, "level", &s.level, &word(false))?;
    check_text(at, "alias", &s.alias, &plain(false, MAX_NAME_CHARS))?;
    let description = TextRule {
        allowed: any_char,
        allowed_text: "any",
        ..plain(false, MAX_DESCRIPTION_CHARS)
    };
    check_text(at, "description", &s.description, &description)?;
    check_properties(at, &s.properties)?;
    if s.schema_summaries.len() > MAX_SCHEMAS {
        return Err(at.too_large(
            "schema_summaries",
            format!(
                "{} entries, at most {MAX_SCHEMAS}",
                s.schema_summaries.len()
            ),
        ));
    }
    for (id, summary) in &s.schema_summaries {
        check_schema_head(at, id, summary)?;
    }
    if s.tags.len() > MAX_TAGS {
        return Err(at.too_large(
            "tags",
            format!("{} entries, at most {MAX_TAGS}", s.tags.len()),
        ));
    }
    for (key, value) in &s.tags {
        check_text(at, "tags.key", key, &plain(true, MAX_NAME_CHARS))?;
        check_text(at, "tags.value", value, &plain(false, MAX_NAME_CHARS))?;
    }
    if s.rules.len() > MAX_RULES {
        return Err(at.too_large(
            "rules",
            format!("{} entries, at most {MAX_RULES}", s.rules.len()),
        ));
    }
    for rule in &s.rules {
        check_text(at, "rules.rule_type", &rule.rule_type, &word(true))?;
        check_text(
            at,
            "rules.attribute",
            &rule.attribute,
            &plain(true, MAX_NAME_CHARS),
        )?;
        check_text(
            at,
            "rules.pattern",
            &rule.pattern,
            &plain(true, MAX_NAME_CHARS),
        )?;
        check_text(
            at,
            "rules.description",
            &rule.description,
            &plain(false, MAX_DESCRIPTION_CHARS),
        )?;
    }
    Ok(())
}

/// A schema id and summary.
fn check_schema_head(at: At, id: &str, summary: &str) -> Result<(), BoundsError> {
    let id_rule = TextRule {
        kind: TextKind::Id,
        ..plain(true, MAX_SCHEMA_ID_CHARS)
    };
    check_text(at, "schema_id", id, &id_rule)?;
    check_text(
        at,
        "schema_summary",
        summary,
        &plain(false, MAX_SCHEMA_SUMMARY_CHARS),
    )
}

/// Checks one schema at `path` of a message: its id, summary and content size (the content
/// itself is carried as it is).
///
/// # Errors
/// The first bound `schema` breaks.
pub(crate) fn schema_at(path: &str, schema: &Schema) -> Result<(), BoundsError> {
    let at = At(path);
    check_schema_head(at, &schema.id, &schema.summary)?;
    check_max_bytes(at, "content", &schema.content, MAX_SCHEMA_BYTES)
}

fn check_health_check(at: At, h: &HealthCheck) -> Result<(), BoundsError> {
    let path = at.field("health_check");
    let at = At(&path);
    check_text(at, "mode", &h.mode, &word(false))?;
    for (name, value) in [("interval", h.interval), ("times", h.times)] {
        if value > MAX_HEALTH_CHECK_NUMBER {
            return Err(at.bad_value(name, format!("{value}, at most {MAX_HEALTH_CHECK_NUMBER}")));
        }
    }
    if h.port > MAX_PORT {
        return Err(at.bad_value("port", format!("{}, at most {MAX_PORT}", h.port)));
    }
    check_max_bytes(at, "url", &h.url, MAX_URL_BYTES)?;
    check_text(at, "url", &h.url, &plain(false, MAX_URL_BYTES))
}

/// [`check_instance`] for an instance at `path` of a message.
///
/// # Errors
/// The first bound `instance` breaks.
pub(crate) fn instance_at(path: &str, i: &Instance) -> Result<(), BoundsError> {
    let at = At(path);
    check_tenant(at, "domain_project", &i.tenant)?;
    check_text(at, "service_id", &i.service_id, &ID)?;
    check_text(at, "instance_id", &i.instance_id, &ID)?;
    if i.endpoints.len() > MAX_ENDPOINTS {
        return Err(at.too_large(
            "endpoints",
            format!("{} entries, at most {MAX_ENDPOINTS}", i.endpoints.len()),
        ));
    }
    for (n, endpoint) in i.endpoints.iter().enumerate() {
        let name = format!("endpoints[{n}]");
        check_max_bytes(at, &name, endpoint, MAX_ENDPOINT_BYTES)?;
        check_text(at, &name, endpoint, &plain(true, MAX_ENDPOINT_BYTES))?;
        check_not_blank(at, &name, endpoint)?;
    }
    check_text(at, "host_name", &i.host_name, &plain(true, MAX_NAME_CHARS))?;
    check_not_blank(at, "host_name", &i.host_name)?;
    check_text(at, "status", &i.status, &word(true))?;
    check_text(at, "version", &i.version, &plain(false, MAX_NAME_CHARS))?;
    check_properties(at, &i.properties)?;
    if let Some(h) = &i.health_check {
        check_health_check(at, h)?;
    }
    if let Some(dc) = &i.data_center {
        let rule = plain(false, MAX_NAME_CHARS);
        check_text(at, "data_center_name", &dc.name, &rule)?;
        check_text(at, "data_center_region", &dc.region, &rule)?;
        check_text(at, "data_center_zone", &dc.available_zone, &rule)?;
    }
    Ok(())
}

/// Whether the key of a removed instance, at `path` of a message, is within the bounds.
///
/// # Errors
/// The first bound the key breaks.
pub(crate) fn reference_at(path: &str, r: &InstanceRef) -> Result<(), BoundsError> {
    let at = At(path);
    check_tenant(at, "domain_project", &r.tenant)?;
    check_text(at, "service_id", &r.service_id, &ID)?;
    check_text(at, "instance_id", &r.instance_id, &ID)
}

/// [`check_item`]'s test that the instance at `path` belongs to `service`.
///
/// # Errors
/// `unknown_service` when tenant or service id differ.
pub(crate) fn belongs_at(
    path: &str,
    service: &Service,
    instance: &Instance,
) -> Result<(), BoundsError> {
    if instance.tenant == service.tenant && instance.service_id == service.service_id {
        return Ok(());
    }
    Err(BoundsError::UnknownService {
        field: At(path).field("service_id"),
        detail: format!(
            "service {}/{} is not the service carried with it ({}/{})",
            instance.tenant, instance.service_id, service.tenant, service.service_id
        ),
    })
}

/// Whether `service` is within the bounds every data centre applies to what it receives.
/// Fields are named `service.<field>`.
///
/// # Errors
/// The first bound broken.
pub fn check_service(service: &Service) -> Result<(), BoundsError> {
    service_at("service", service)
}

/// Whether `instance` is within the bounds every data centre applies to what it receives.
/// Fields are named `instance.<field>`.
///
/// # Errors
/// The first bound broken.
pub fn check_instance(instance: &Instance) -> Result<(), BoundsError> {
    instance_at("instance", instance)
}

/// Whether the pair is fit to travel together (an upsert or a snapshot item): both within
/// the bounds, and the instance belongs to the service.
///
/// # Errors
/// The first bound broken; `unknown_service` for an instance of another service.
pub fn check_item(service: &Service, instance: &Instance) -> Result<(), BoundsError> {
    check_service(service)?;
    check_instance(instance)?;
    belongs_at("instance", service, instance)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::fixtures::{instance, service};
    use crate::registry::model::DataCenterInfo;

    fn refused<T>(r: Result<T, BoundsError>) -> (&'static str, String) {
        match r {
            Ok(_) => ("accepted", String::new()),
            Err(e) => (e.reason(), e.field().to_owned()),
        }
    }

    type Edit = fn(&mut Instance);

    /// Each case edits the sample instance and names the reason and field of its refusal.
    fn assert_instance_cases(cases: &[(&str, &str, Edit)]) {
        for (reason, field, edit) in cases {
            let mut i = instance();
            edit(&mut i);
            assert_eq!(refused(check_instance(&i)), (*reason, field.to_string()));
        }
    }

    #[test]
    fn values_of_other_registry_kinds_pass() {
        // Eureka's ids, statuses and versionless services; long ids and host names; spaces.
        let s = Service {
            service_id: "ORDERS".into(),
            app: String::new(),
            version: String::new(),
            environment: "prod".into(),
            status: "Up".into(),
            ..service()
        };
        assert_eq!(check_service(&s), Ok(()));
        let i = Instance {
            service_id: "ORDERS".into(),
            instance_id: "ip-10-0-0-1.eu-west-1.compute.internal:orders:8080".into(),
            status: "OUT_OF_SERVICE".into(),
            host_name: format!("{}.example.com", "h".repeat(100)),
            health_check: Some(HealthCheck {
                mode: "ttl".into(),
                interval: 0,
                times: 0,
                port: 8080,
                url: "/a b".into(),
            }),
            data_center: Some(DataCenterInfo {
                name: "MyOwn".into(),
                region: String::new(),
                available_zone: "zone 1".into(),
            }),
            ..instance()
        };
        assert_eq!(check_item(&s, &i), Ok(()));
        assert_eq!(
            check_instance(&Instance {
                instance_id: "host:app:8080".into(),
                ..instance()
            }),
            Ok(())
        );
    }

    #[test]
    fn sizes_are_bounded() {
        let cases: &[(&str, &str, Edit)] = &[
            ("bad_id", "instance.instance_id", |i| {
                i.instance_id = "x".repeat(MAX_ID_CHARS + 1)
            }),
            ("too_large", "instance.host_name", |i| {
                i.host_name = "h".repeat(MAX_NAME_CHARS + 1)
            }),
            ("too_large", "instance.status", |i| {
                i.status = "U".repeat(MAX_WORD_CHARS + 1)
            }),
            ("too_large", "instance.endpoints", |i| {
                i.endpoints = vec!["rest://a:1".into(); MAX_ENDPOINTS + 1]
            }),
            ("too_large", "instance.endpoints[0]", |i| {
                i.endpoints[0] = "e".repeat(MAX_ENDPOINT_BYTES + 1)
            }),
            ("too_large", "instance.properties", |i| {
                i.properties = (0..=MAX_PROPERTIES)
                    .map(|n| (n.to_string(), String::new()))
                    .collect()
            }),
            ("too_large", "instance.properties", |i| {
                i.properties = (0..20).map(|n| (n.to_string(), "v".repeat(4000))).collect()
            }),
            ("too_large", "instance.health_check.url", |i| {
                i.health_check.as_mut().unwrap().url = "/".repeat(MAX_URL_BYTES + 1)
            }),
            ("too_large", "instance.data_center_zone", |i| {
                i.data_center.as_mut().unwrap().available_zone = "z".repeat(MAX_NAME_CHARS + 1)
            }),
            ("bad_value", "instance.health_check.port", |i| {
                i.health_check.as_mut().unwrap().port = MAX_PORT + 1
            }),
            ("bad_value", "instance.health_check.interval", |i| {
                i.health_check.as_mut().unwrap().interval = u32::MAX
            }),
            ("bad_tenant", "instance.domain_project", |i| {
                i.tenant = Tenant::new("a", "b".repeat(MAX_DOMAIN_PROJECT_BYTES))
            }),
        ];
        assert_instance_cases(cases);
        let mut s = service();
        s.description = "d".repeat(MAX_DESCRIPTION_CHARS + 1);
        assert_eq!(
            refused(check_service(&s)),
            ("too_large", "service.description".into())
        );
    }

    #[test]
    fn control_characters_are_refused_where_they_reach_logs_and_keys() {
        let cases: &[(&str, &str, Edit)] = &[
            ("bad_id", "instance.instance_id", |i| {
                i.instance_id = "i\u{0}".into()
            }),
            ("bad_id", "instance.service_id", |i| {
                i.service_id = "s\n".into()
            }),
            ("bad_value", "instance.host_name", |i| {
                i.host_name = "a\nb".into()
            }),
            ("bad_value", "instance.endpoints[0]", |i| {
                i.endpoints[0] = "rest://a\u{1b}[31m".into()
            }),
            ("bad_value", "instance.status", |i| i.status = "UP\r".into()),
            ("bad_value", "instance.health_check.url", |i| {
                i.health_check.as_mut().unwrap().url = "/h\tx".into()
            }),
            ("bad_value", "instance.data_center_name", |i| {
                i.data_center.as_mut().unwrap().name = "dc\u{7f}".into()
            }),
            ("bad_tenant", "instance.domain_project", |i| {
                i.tenant = Tenant::new("a\u{1}", "b")
            }),
        ];
        assert_instance_cases(cases);
        let s = Service {
            name: "a\tb".into(),
            ..service()
        };
        assert_eq!(
            refused(check_service(&s)),
            ("bad_value", "service.name".into())
        );
        // Descriptions and properties are carried as they are.
        let s = Service {
            description: "line\none\u{0}".into(),
            properties: BTreeMap::from([("k\n".into(), "v\u{1}".into())]),
            ..service()
        };
        assert_eq!(check_service(&s), Ok(()));
    }

    #[test]
    fn what_the_model_needs_is_required() {
        let cases: &[(&str, &str, Edit)] = &[
            ("missing_field", "instance.instance_id", |i| {
                i.instance_id.clear()
            }),
            ("missing_field", "instance.service_id", |i| {
                i.service_id.clear()
            }),
            ("missing_field", "instance.host_name", |i| {
                i.host_name = "  ".into()
            }),
            ("missing_field", "instance.status", |i| i.status.clear()),
            ("missing_field", "instance.endpoints[0]", |i| {
                i.endpoints[0] = " ".into()
            }),
            ("bad_tenant", "instance.domain_project", |i| {
                i.tenant = Tenant::new("", "b")
            }),
        ];
        assert_instance_cases(cases);
        let s = Service {
            name: String::new(),
            ..service()
        };
        assert_eq!(
            refused(check_service(&s)),
            ("missing_field", "service.name".into())
        );
        let other = Instance {
            service_id: "s2".into(),
            ..instance()
        };
        assert_eq!(
            refused(check_item(&service(), &other)),
            ("unknown_service", "instance.service_id".into())
        );
        let mut r = instance().reference();
        r.instance_id.clear();
        assert_eq!(
            refused(reference_at("removed", &r)),
            ("missing_field", "removed.instance_id".into())
        );
    }

    #[test]
    fn refusals_keep_field_reason_and_detail() {
        let e = check_instance(&Instance {
            host_name: String::new(),
            ..instance()
        })
        .unwrap_err();
        assert_eq!(e.to_string(), "instance.host_name: empty");
        let r = Refusal::from(e);
        assert_eq!(
            (r.field.as_str(), r.reason, r.detail.as_str()),
            ("instance.host_name", "missing_field", "empty")
        );
    }
}

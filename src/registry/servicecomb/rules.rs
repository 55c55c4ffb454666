//! What ServiceComb Service Center requires of the data it stores, beyond the wire-safety
//! bounds every registry shares ([`crate::registry::bounds`]): [`ServiceComb`] answers
//! [`Registry::accepts_service`] and [`Registry::accepts_instance`] with these, so the
//! importer refuses a copy SC would refuse before it makes a call (and an object another
//! kind of registry allows, such as a Eureka instance id `host:app:8080`, is refused here and
//! only here).
//!
//! From the reference (`servicecomb-sc-v4-api.md` §6.2): instance ids
//! `[A-Za-z0-9_.-]{1,64}`; service ids of 1 to 64 characters without whitespace (as lenient
//! as SC, since clients choose them); an application id of at most 160 characters, a name of
//! at most 128, an alias of at most 128, a description of at most 256; a service version of
//! one to four dot-separated numbers; one of SC's five environments; statuses and levels as
//! upper-case words (a status this version does not know still syncs); a host name of at most
//! 64 characters; a health check with mode `push` or `pull`, an interval of at least 1 s and
//! a URL without spaces; data-centre name, region and zone all set or all absent, each
//! `[A-Za-z0-9_.-]{1,128}`.
//!
//! A refusal names the field (`instance.instance_id`) and gives the same metric label a peer
//! used to give when these rules were checked on the wire (`bad_id`, `bad_value`,
//! `missing_field`, `too_large`).
//!
//! [`ServiceComb`]: super::ServiceComb
//! [`Registry::accepts_service`]: crate::registry::Registry::accepts_service
//! [`Registry::accepts_instance`]: crate::registry::Registry::accepts_instance

use crate::registry::bounds::{At, BoundsError, TextKind, TextRule, check_text, plain, shown};
use crate::registry::{HealthCheck, Instance, Refusal, Service};

/// Service and instance ids, in characters.
pub const MAX_ID_CHARS: usize = 64;
/// Application id.
pub const MAX_APP_CHARS: usize = 160;
/// Service name.
pub const MAX_SERVICE_NAME_CHARS: usize = 128;
/// Service alias.
pub const MAX_ALIAS_CHARS: usize = 128;
/// Service description.
pub const MAX_DESCRIPTION_CHARS: usize = 256;
/// Service and instance version.
pub const MAX_VERSION_CHARS: usize = 64;
/// Instance host name.
pub const MAX_HOST_NAME_CHARS: usize = 64;
/// Data-centre name, region and zone.
pub const MAX_DATA_CENTER_CHARS: usize = 128;
/// SC's environments; the empty string is the default one.
pub const ENVIRONMENTS: [&str; 5] = ["", "development", "testing", "acceptance", "production"];

fn id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')
}

fn upper_char(c: char) -> bool {
    c.is_ascii_uppercase()
}

fn no_space(c: char) -> bool {
    c != ' ' && !c.is_control()
}

/// SC: `^\S*$`, at most 64.
const SERVICE_ID: TextRule = TextRule {
    required: true,
    max_chars: MAX_ID_CHARS,
    allowed: no_space,
    allowed_text: "no whitespace or control characters",
    kind: TextKind::Id,
};

/// SC: `^[A-Za-z0-9_.-]*$`, at most 64.
const INSTANCE_ID: TextRule = TextRule {
    required: true,
    max_chars: MAX_ID_CHARS,
    allowed: id_char,
    allowed_text: "[A-Za-z0-9_.-]",
    kind: TextKind::Id,
};

/// Statuses and levels: upper-case words (the length is a shared bound).
const fn words(required: bool) -> TextRule {
    TextRule {
        required,
        max_chars: usize::MAX,
        allowed: upper_char,
        allowed_text: "upper-case letters A-Z",
        kind: TextKind::Value,
    }
}

const DATA_CENTER: TextRule = TextRule {
    required: true,
    max_chars: MAX_DATA_CENTER_CHARS,
    allowed: id_char,
    allowed_text: "[A-Za-z0-9_.-]",
    kind: TextKind::Value,
};

/// SC's version format: one to four dot-separated decimal numbers.
fn check_service_version(at: At, version: &str) -> Result<(), BoundsError> {
    check_text(at, "version", version, &plain(true, MAX_VERSION_CHARS))?;
    let parts: Vec<&str> = version.split('.').collect();
    let numeric = |p: &&str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    if parts.len() > 4 || !parts.iter().all(numeric) {
        return Err(at.bad_value(
            "version",
            format!("{} is not 1 to 4 dot-separated numbers", shown(version)),
        ));
    }
    Ok(())
}

fn service_at(at: At, s: &Service) -> Result<(), BoundsError> {
    check_text(at, "service_id", &s.service_id, &SERVICE_ID)?;
    check_text(at, "app", &s.app, &plain(true, MAX_APP_CHARS))?;
    check_text(at, "name", &s.name, &plain(true, MAX_SERVICE_NAME_CHARS))?;
    check_service_version(at, &s.version)?;
    if !ENVIRONMENTS.contains(&s.environment.as_str()) {
        return Err(at.bad_value(
            "environment",
            format!(
                "{} is none of \"\", development, testing, acceptance, production",
                shown(&s.environment)
            ),
        ));
    }
    check_text(at, "status", &s.status, &words(false))?;
    check_text(at, "level", &s.level, &words(false))?;
    check_text(at, "alias", &s.alias, &plain(false, MAX_ALIAS_CHARS))?;
    let description = TextRule {
        allowed: |_| true,
        allowed_text: "any",
        ..plain(false, MAX_DESCRIPTION_CHARS)
    };
    check_text(at, "description", &s.description, &description)
}

fn check_health_check(at: At, h: &HealthCheck) -> Result<(), BoundsError> {
    let path = at.field("health_check");
    let at = At(&path);
    if h.mode != "push" && h.mode != "pull" {
        return Err(at.bad_value(
            "mode",
            format!("{} is neither push nor pull", shown(&h.mode)),
        ));
    }
    if h.interval == 0 {
        return Err(at.bad_value("interval", "0, at least 1 second".to_owned()));
    }
    let url = TextRule {
        allowed: no_space,
        allowed_text: "no whitespace or control characters",
        ..plain(false, usize::MAX)
    };
    check_text(at, "url", &h.url, &url)
}

fn instance_at(at: At, i: &Instance) -> Result<(), BoundsError> {
    check_text(at, "service_id", &i.service_id, &SERVICE_ID)?;
    check_text(at, "instance_id", &i.instance_id, &INSTANCE_ID)?;
    check_text(
        at,
        "host_name",
        &i.host_name,
        &plain(true, MAX_HOST_NAME_CHARS),
    )?;
    check_text(at, "status", &i.status, &words(true))?;
    check_text(at, "version", &i.version, &plain(false, MAX_VERSION_CHARS))?;
    if let Some(h) = &i.health_check {
        check_health_check(at, h)?;
    }
    if let Some(dc) = &i.data_center {
        check_text(at, "data_center_name", &dc.name, &DATA_CENTER)?;
        check_text(at, "data_center_region", &dc.region, &DATA_CENTER)?;
        check_text(at, "data_center_zone", &dc.available_zone, &DATA_CENTER)?;
    }
    Ok(())
}

/// Whether SC can hold `service`; fields are named `service.<field>`. Only SC's own rules
/// are checked: the caller has the value within the shared bounds already.
///
/// # Errors
/// A [`Refusal`] naming the first rule broken.
pub fn check_service(service: &Service) -> Result<(), Refusal> {
    service_at(At("service"), service).map_err(Refusal::from)
}

/// Whether SC can hold `instance`; fields are named `instance.<field>`. Only SC's own rules
/// are checked: the caller has the value within the shared bounds already.
///
/// # Errors
/// A [`Refusal`] naming the first rule broken.
pub fn check_instance(instance: &Instance) -> Result<(), Refusal> {
    instance_at(At("instance"), instance).map_err(Refusal::from)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::registry::bounds;
    use crate::registry::fixtures::{instance, service};

    fn refused<T>(r: Result<T, Refusal>) -> (&'static str, String) {
        match r {
            Ok(_) => ("accepted", String::new()),
            Err(e) => (e.reason, e.field),
        }
    }

    /// SC's instance rules, by the reason they give. These cases were refused on the wire
    /// before the split (`rpc::convert` `bad_instances_are_refused`): each now passes the
    /// shared bounds and is refused by SC's rules.
    #[test]
    fn bad_instances_are_refused() {
        type Edit = fn(&mut Instance);
        let cases: &[(&str, &str, Edit)] = &[
            ("missing_field", "instance.data_center_region", |i| {
                i.data_center.as_mut().unwrap().region.clear()
            }),
            ("bad_id", "instance.instance_id", |i| {
                i.instance_id = "a b".into()
            }),
            ("bad_id", "instance.instance_id", |i| {
                i.instance_id = "x".repeat(65)
            }),
            ("bad_id", "instance.instance_id", |i| {
                i.instance_id = "ü".into()
            }),
            ("bad_id", "instance.instance_id", |i| {
                i.instance_id = "a/b".into()
            }),
            ("bad_id", "instance.instance_id", |i| {
                i.instance_id = "host:app:8080".into()
            }),
            ("bad_id", "instance.service_id", |i| {
                i.service_id = "a b".into()
            }),
            ("bad_value", "instance.status", |i| i.status = "up".into()),
            ("bad_value", "instance.status", |i| {
                i.status = "OUT_OF_SERVICE".into()
            }),
            ("bad_value", "instance.health_check.mode", |i| {
                i.health_check.as_mut().unwrap().mode = "tcp".into()
            }),
            ("bad_value", "instance.health_check.interval", |i| {
                i.health_check.as_mut().unwrap().interval = 0
            }),
            ("bad_value", "instance.health_check.url", |i| {
                i.health_check.as_mut().unwrap().url = "/a b".into()
            }),
            ("bad_value", "instance.data_center_name", |i| {
                i.data_center.as_mut().unwrap().name = "dc 1".into()
            }),
            ("too_large", "instance.host_name", |i| {
                i.host_name = "h".repeat(65)
            }),
            ("too_large", "instance.data_center_zone", |i| {
                i.data_center.as_mut().unwrap().available_zone = "z".repeat(129)
            }),
        ];
        for (expected, field, edit) in cases {
            let mut i = instance();
            edit(&mut i);
            assert_eq!(bounds::check_instance(&i), Ok(()), "{i:?} within bounds");
            assert_eq!(
                refused(check_instance(&i)),
                (*expected, field.to_string()),
                "{i:?}"
            );
        }
    }

    /// SC's service rules; as for instances, moved from the wire.
    #[test]
    fn bad_services_are_refused() {
        type Edit = fn(&mut Service);
        let cases: &[(&str, &str, Edit)] = &[
            ("missing_field", "service.app", |s| s.app.clear()),
            ("missing_field", "service.version", |s| s.version.clear()),
            ("bad_id", "service.service_id", |s| {
                s.service_id = "s".repeat(65)
            }),
            ("bad_value", "service.version", |s| {
                s.version = "1.0.0.0.0".into()
            }),
            ("bad_value", "service.version", |s| s.version = "1.x".into()),
            ("bad_value", "service.version", |s| {
                s.version = "1..0".into()
            }),
            ("bad_value", "service.version", |s| {
                s.version = "latest".into()
            }),
            ("bad_value", "service.environment", |s| {
                s.environment = "prod".into()
            }),
            ("bad_value", "service.status", |s| s.status = "Up".into()),
            ("bad_value", "service.level", |s| {
                s.level = "back end".into()
            }),
            ("too_large", "service.app", |s| s.app = "a".repeat(161)),
            ("too_large", "service.description", |s| {
                s.description = "d".repeat(257)
            }),
        ];
        for (expected, field, edit) in cases {
            let mut s = service();
            edit(&mut s);
            assert_eq!(bounds::check_service(&s), Ok(()), "{s:?} within bounds");
            assert_eq!(
                refused(check_service(&s)),
                (*expected, field.to_string()),
                "{s:?}"
            );
        }
    }

    #[test]
    fn sc_leniency_is_kept() {
        // Client-chosen service ids may hold anything but whitespace; versions up to four
        // parts; any upper-case status; unusual but valid texts.
        let s = Service {
            service_id: "my-svc:v1/ü".into(),
            version: "1.2.3.4".into(),
            status: "DOWN".into(),
            description: "d\u{0}".repeat(128),
            ..service()
        };
        assert_eq!(check_service(&s), Ok(()));
        let i = Instance {
            service_id: s.service_id.clone(),
            instance_id: "A.b_c-9".into(),
            status: "TESTING".into(),
            host_name: " host with spaces ".into(),
            health_check: Some(HealthCheck {
                mode: "pull".into(),
                interval: 1,
                times: 0,
                port: 65_535,
                url: "/health".into(),
            }),
            properties: BTreeMap::from([("".into(), "line\nbreak".into())]),
            data_center: None,
            ..instance()
        };
        assert_eq!(check_instance(&i), Ok(()));
        assert_eq!(check_instance(&instance()), Ok(()));
        assert_eq!(check_service(&service()), Ok(()));
    }

    #[test]
    fn refusals_name_the_field_and_the_value() {
        let i = Instance {
            instance_id: "host:app:8080".into(),
            ..instance()
        };
        let r = check_instance(&i).unwrap_err();
        assert_eq!(
            r.to_string(),
            "instance.instance_id: \"host:app:8080\" has the character ':'; allowed: [A-Za-z0-9_.-]"
        );
    }
}

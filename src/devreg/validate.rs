//! Request validation as SC 1.4.8 does it (`pkg/validate`, `*_validator.go`; reference §6.2).
//!
//! SC checks the fields of a request struct in declaration order and stops at the first
//! failure, answering `400001` with the detail
//! `field '<GoStruct>.<GoField>' invalid value '<v>' does not match rule: {Min: n, Max: n, Regexp: <re>}`.
//! Min lengths count bytes, max lengths count characters. The regular expressions are matched
//! by hand here; [`Pat::source`] gives the Go source text that SC prints.

use super::model::{HealthCheck, MicroService, MicroServiceInstance, MicroServiceKey, StrMap};
use super::version;

/// The patterns SC's validators use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pat {
    /// `nameRegex`: service names and appIds on create.
    Name,
    /// `serviceNameForFindRegex`: names or aliases in find and existence (`:` allowed inside).
    NameForFind,
    /// `nameFuzzyRegex`: dependency provider names (`*` allowed).
    NameFuzzy,
    /// Stored versions (`x[.y[.z[.w]]]`).
    Version,
    /// Version rules of find/existence.
    VersionRule,
    /// Version rules of dependency providers (≤3 parts, may be empty).
    DependencyVersion,
    /// `^\S*$`: service ids, health check url.
    NoSpace,
    Level,
    ServiceStatus,
    Alias,
    RegisterBy,
    Environment,
    SchemaId,
    /// `schemaIDUnlimitedRegex` of the schema API (the length bound is the rule's).
    SchemaIdUnlimited,
    /// `^[a-zA-Z0-9]*$`: schema summaries.
    SchemaSummary,
    /// `^(WHITE|BLACK)$`: rule types.
    RuleType,
    /// `tag_<tag>` or one of the service fields a rule may test.
    RuleAttribute,
    /// Instance status on register (may be empty).
    InstanceStatus,
    /// Instance status on the status PUT (required).
    InstanceStatusRequired,
    HealthCheckMode,
    /// `\S+`: endpoints and host names must contain a non-space.
    NonBlank,
    /// `^[A-Za-z0-9_.-]*$`: instance ids.
    SimpleNameAllowEmpty,
    /// `^[A-Za-z0-9_.-]+$`: data centre names, regions and zones.
    SimpleName,
    Tag,
    Path,
}

fn is_alnum(c: char) -> bool {
    c.is_ascii_alphanumeric()
}

/// RE2's `\s` is `[\t\n\f\r ]`.
fn is_space(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\x0c' | '\r' | ' ')
}

/// `^[a-zA-Z0-9]*$|^[a-zA-Z0-9][a-zA-Z0-9_\-.<extra>]*[a-zA-Z0-9]$`.
fn name_like(s: &str, extra: &[char]) -> bool {
    if s.chars().all(is_alnum) {
        return true;
    }
    let chars: Vec<char> = s.chars().collect();
    chars.len() >= 2
        && is_alnum(chars[0])
        && is_alnum(chars[chars.len() - 1])
        && chars[1..chars.len() - 1]
            .iter()
            .all(|&c| is_alnum(c) || matches!(c, '_' | '-' | '.') || extra.contains(&c))
}

/// `^(w1|w2|…)*$`: the text is a concatenation of the words (so SC also accepts
/// `developmenttesting`; none of the words is a prefix of another, so greedy works).
fn words_repeated(s: &str, words: &[&str]) -> bool {
    let mut rest = s;
    while !rest.is_empty() {
        match words.iter().find(|w| rest.starts_with(*w)) {
            Some(w) => rest = &rest[w.len()..],
            None => return false,
        }
    }
    true
}

fn dependency_version(s: &str) -> bool {
    let short = |v: &str| version::is_valid(v) && v.split('.').count() <= 3;
    if s.is_empty() || s == "latest" {
        return true;
    }
    if let Some(start) = s.strip_suffix('+') {
        return short(start);
    }
    match s.split_once('-') {
        Some((a, b)) => short(a) && short(b),
        None => short(s),
    }
}

impl Pat {
    pub fn is_match(self, s: &str) -> bool {
        match self {
            Pat::Name => name_like(s, &[]),
            Pat::NameForFind => name_like(s, &[':']),
            Pat::NameFuzzy => s == "*" || name_like(s, &[]),
            Pat::Version => version::is_valid(s),
            Pat::VersionRule => version::is_valid_rule(s),
            Pat::DependencyVersion => dependency_version(s),
            Pat::NoSpace => !s.chars().any(is_space),
            Pat::Level => matches!(s, "FRONT" | "MIDDLE" | "BACK"),
            Pat::ServiceStatus => matches!(s, "" | "UP" | "DOWN"),
            Pat::Alias => s
                .chars()
                .all(|c| is_alnum(c) || matches!(c, '_' | '-' | '.' | ':')),
            Pat::RegisterBy => words_repeated(s, &["SDK", "SIDECAR", "PLATFORM"]),
            Pat::Environment => {
                words_repeated(s, &["development", "testing", "acceptance", "production"])
            }
            Pat::SchemaId => {
                // Both alternatives allow 1..=160 characters of the name alphabet.
                (1..=160).contains(&s.chars().count()) && name_like(s, &[])
            }
            Pat::SchemaIdUnlimited => !s.is_empty() && name_like(s, &[]),
            Pat::SchemaSummary => s.chars().all(is_alnum),
            Pat::RuleType => matches!(s, "WHITE" | "BLACK"),
            Pat::RuleAttribute => {
                s.strip_prefix("tag_").is_some_and(|t| Pat::Tag.is_match(t))
                    || matches!(
                        s,
                        "ServiceId"
                            | "AppId"
                            | "ServiceName"
                            | "Version"
                            | "Description"
                            | "Level"
                            | "Status"
                    )
            }
            Pat::InstanceStatus => s.is_empty() || Pat::InstanceStatusRequired.is_match(s),
            Pat::InstanceStatusRequired => {
                matches!(s, "UP" | "DOWN" | "STARTING" | "TESTING" | "OUTOFSERVICE")
            }
            Pat::HealthCheckMode => matches!(s, "push" | "pull"),
            Pat::NonBlank => s.chars().any(|c| !is_space(c)),
            Pat::SimpleNameAllowEmpty => s
                .chars()
                .all(|c| is_alnum(c) || matches!(c, '_' | '.' | '-')),
            Pat::SimpleName => !s.is_empty() && Pat::SimpleNameAllowEmpty.is_match(s),
            Pat::Tag => {
                let mut chars = s.chars();
                chars.next().is_some_and(|c| c.is_ascii_alphabetic())
                    && s.chars().count() <= 64
                    && chars.all(|c| is_alnum(c) || matches!(c, '_' | '-' | '.'))
            }
            Pat::Path => s.chars().all(|c| {
                is_alnum(c)
                    || matches!(
                        c,
                        '.' | ','
                            | '?'
                            | '\''
                            | '\\'
                            | '/'
                            | '+'
                            | '&'
                            | ';'
                            | '%'
                            | '$'
                            | '#'
                            | '='
                            | '~'
                            | '_'
                            | '-'
                            | '@'
                            | '{'
                            | '}'
                    )
            }),
        }
    }

    /// The text SC prints for the pattern.
    pub fn source(self) -> &'static str {
        const FUZZY: &str = "the form x[.y[.z]] or x[.y[.z]]+ or x[.y[.z]]-x[.y[.z]] or 'latest' where x y and z are 0-32767 range";
        match self {
            Pat::Name => r"^[a-zA-Z0-9]*$|^[a-zA-Z0-9][a-zA-Z0-9_\-.]*[a-zA-Z0-9]$",
            Pat::NameForFind => r"^[a-zA-Z0-9]*$|^[a-zA-Z0-9][a-zA-Z0-9_\-.:]*[a-zA-Z0-9]$",
            Pat::NameFuzzy => r"^[a-zA-Z0-9]*$|^[a-zA-Z0-9][a-zA-Z0-9_\-.]*[a-zA-Z0-9]$|^\*$",
            Pat::Version => "the form x[.y[.z]] where x y and z are 0-32767 range",
            Pat::VersionRule | Pat::DependencyVersion => FUZZY,
            Pat::NoSpace => r"^\S*$",
            Pat::Level => "^(FRONT|MIDDLE|BACK)$",
            Pat::ServiceStatus => "^(UP|DOWN)?$",
            Pat::Alias => r"^[a-zA-Z0-9_\-.:]*$",
            Pat::RegisterBy => "^(SDK|SIDECAR|PLATFORM)*$",
            Pat::Environment => "^(development|testing|acceptance|production)*$",
            Pat::SchemaId => r"^[a-zA-Z0-9]{1,160}$|^[a-zA-Z0-9][a-zA-Z0-9_\-.]{0,158}[a-zA-Z0-9]$",
            Pat::SchemaIdUnlimited => r"^[a-zA-Z0-9]+$|^[a-zA-Z0-9][a-zA-Z0-9_\-.]*[a-zA-Z0-9]$",
            Pat::SchemaSummary => "^[a-zA-Z0-9]*$",
            Pat::RuleType => "^(WHITE|BLACK)$",
            Pat::RuleAttribute => {
                r"((^tag_[a-zA-Z][a-zA-Z0-9_\-.]{0,63}$)|(^ServiceId$)|(^AppId$)|(^ServiceName$)|(^Version$)|(^Description$)|(^Level$)|(^Status$))"
            }
            Pat::InstanceStatus => "^(UP|DOWN|STARTING|TESTING|OUTOFSERVICE)?$",
            Pat::InstanceStatusRequired => "^(UP|DOWN|STARTING|TESTING|OUTOFSERVICE)$",
            Pat::HealthCheckMode => "^(push|pull)$",
            Pat::NonBlank => r"\S+",
            Pat::SimpleNameAllowEmpty => "^[A-Za-z0-9_.-]*$",
            Pat::SimpleName => "^[A-Za-z0-9_.-]+$",
            Pat::Tag => r"^[a-zA-Z][a-zA-Z0-9_\-.]{0,63}$",
            Pat::Path => r"^[A-Za-z0-9.,?'\\/+&amp;%$#=~_\-@{}]*$",
        }
    }
}

/// One field rule: a minimum (bytes or items), a maximum (characters, items or value) and
/// a pattern; zero means "no bound", as in Go.
#[derive(Clone, Copy, Debug)]
pub struct Rule {
    pub min: i64,
    pub max: i64,
    pub pat: Option<Pat>,
}

impl Rule {
    pub const fn new(min: i64, max: i64, pat: Option<Pat>) -> Rule {
        Rule { min, max, pat }
    }

    fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.min != 0 {
            parts.push(format!("Min: {}", self.min));
        }
        if self.max != 0 {
            parts.push(format!("Max: {}", self.max));
        }
        if let Some(p) = self.pat {
            parts.push(format!("Regexp: {}", p.source()));
        }
        format!("{{{}}}", parts.join(", "))
    }
}

fn fail(owner: &str, field: &str, value: &str, rule: &Rule) -> String {
    format!(
        "field '{owner}.{field}' invalid value '{value}' does not match rule: {}",
        rule.describe()
    )
}

/// Checks a string field.
///
/// # Errors
/// SC's validation detail.
pub fn check_str(owner: &str, field: &str, value: &str, rule: Rule) -> Result<(), String> {
    let too_short = rule.min > 0 && (value.len() as i64) < rule.min;
    let too_long = rule.max > 0 && value.chars().count() as i64 > rule.max;
    let mismatch = rule.pat.is_some_and(|p| !p.is_match(value));
    if too_short || too_long || mismatch {
        return Err(fail(owner, field, value, &rule));
    }
    Ok(())
}

/// Checks a list field: bounds on the item count, the pattern on every item.
///
/// # Errors
/// SC's validation detail.
pub fn check_list(owner: &str, field: &str, values: &[String], rule: Rule) -> Result<(), String> {
    let n = values.len() as i64;
    if (rule.min > 0 && n < rule.min) || (rule.max > 0 && n > rule.max) {
        return Err(fail(
            owner,
            field,
            &format!("[{}]", values.join(" ")),
            &rule,
        ));
    }
    if let Some(p) = rule.pat
        && let Some(bad) = values.iter().find(|v| !p.is_match(v))
    {
        return Err(fail(owner, field, bad, &rule));
    }
    Ok(())
}

/// Checks a map field: bounds on the entry count, the pattern on every key and value.
///
/// # Errors
/// SC's validation detail.
pub fn check_map(owner: &str, field: &str, map: &StrMap, rule: Rule) -> Result<(), String> {
    let n = map.len() as i64;
    if (rule.min > 0 && n < rule.min) || (rule.max > 0 && n > rule.max) {
        let shown: Vec<String> = map.iter().map(|(k, v)| format!("{k}:{v}")).collect();
        return Err(fail(
            owner,
            field,
            &format!("map[{}]", shown.join(" ")),
            &rule,
        ));
    }
    if let Some(p) = rule.pat {
        for (k, v) in map {
            for s in [k, v] {
                if !p.is_match(s) {
                    return Err(fail(owner, field, s, &rule));
                }
            }
        }
    }
    Ok(())
}

/// Checks an integer field against the bounds.
///
/// # Errors
/// SC's validation detail.
pub fn check_int(owner: &str, field: &str, value: i64, rule: Rule) -> Result<(), String> {
    if (rule.min > 0 && value < rule.min) || (rule.max > 0 && value > rule.max) {
        return Err(fail(owner, field, &value.to_string(), &rule));
    }
    Ok(())
}

/// `{Min: 1, Max: 64, Regexp: ^\S*$}`: service ids on get/delete/update.
pub const SERVICE_ID: Rule = Rule::new(1, 64, Some(Pat::NoSpace));
/// `{Min: 1, Max: 64, Regexp: ^[A-Za-z0-9_.-]*$}`: instance ids outside register.
pub const INSTANCE_ID: Rule = Rule::new(1, 64, Some(Pat::SimpleNameAllowEmpty));
/// `{Max: 64, Regexp: ^\S*$}`: the optional `X-ConsumerId`.
pub const CONSUMER_ID: Rule = Rule::new(0, 64, Some(Pat::NoSpace));
/// Environment of keys and queries.
pub const ENVIRONMENT: Rule = Rule::new(0, 0, Some(Pat::Environment));
/// appId in find/existence.
pub const APP_ID: Rule = Rule::new(1, 160, Some(Pat::Name));
/// serviceName (or alias) in find/existence.
pub const NAME_FOR_FIND: Rule = Rule::new(1, 160 + 1 + 128, Some(Pat::NameForFind));
/// Version rule in find/existence.
pub const VERSION_RULE: Rule = Rule::new(1, 129, Some(Pat::VersionRule));
/// Tags (keys) in find, get and list.
pub const TAG: Rule = Rule::new(0, 0, Some(Pat::Tag));

/// `CreateServiceReqValidator`, after defaults were applied.
///
/// # Errors
/// SC's validation detail.
pub fn create_service(s: &MicroService) -> Result<(), String> {
    const O: &str = "MicroService";
    check_str(
        O,
        "ServiceId",
        &s.service_id,
        Rule::new(0, 64, Some(Pat::NoSpace)),
    )?;
    check_str(O, "AppId", &s.app_id, Rule::new(0, 160, Some(Pat::Name)))?;
    check_str(
        O,
        "ServiceName",
        &s.service_name,
        Rule::new(1, 128, Some(Pat::Name)),
    )?;
    check_str(
        O,
        "Version",
        &s.version,
        Rule::new(0, 64, Some(Pat::Version)),
    )?;
    check_str(O, "Description", &s.description, Rule::new(0, 256, None))?;
    check_str(O, "Level", &s.level, Rule::new(0, 0, Some(Pat::Level)))?;
    check_list(
        O,
        "Schemas",
        &s.schemas,
        Rule::new(0, 100, Some(Pat::SchemaId)),
    )?;
    for path in &s.paths {
        check_str(
            "ServicePath",
            "Path",
            &path.path,
            Rule::new(0, 0, Some(Pat::Path)),
        )?;
    }
    check_str(
        O,
        "Status",
        &s.status,
        Rule::new(0, 0, Some(Pat::ServiceStatus)),
    )?;
    check_str(O, "Alias", &s.alias, Rule::new(0, 128, Some(Pat::Alias)))?;
    check_str(O, "Environment", &s.environment, ENVIRONMENT)?;
    check_str(
        O,
        "RegisterBy",
        &s.register_by,
        Rule::new(0, 64, Some(Pat::RegisterBy)),
    )?;
    if let Some(f) = &s.framework {
        const F: &str = "FrameWorkProperty";
        check_str(F, "Name", &f.name, Rule::new(0, 64, Some(Pat::Name)))?;
        check_str(F, "Version", &f.version, Rule::new(0, 64, None))?;
    }
    Ok(())
}

/// `RegisterInstanceReqValidator` (the instance's `serviceId` comes from the path).
///
/// # Errors
/// SC's validation detail.
pub fn register_instance(i: &MicroServiceInstance) -> Result<(), String> {
    const O: &str = "MicroServiceInstance";
    check_str(
        O,
        "InstanceId",
        &i.instance_id,
        Rule::new(0, 64, Some(Pat::SimpleNameAllowEmpty)),
    )?;
    check_str(O, "ServiceId", &i.service_id, SERVICE_ID)?;
    check_list(
        O,
        "Endpoints",
        &i.endpoints,
        Rule::new(0, 0, Some(Pat::NonBlank)),
    )?;
    check_str(
        O,
        "HostName",
        &i.host_name,
        Rule::new(1, 64, Some(Pat::NonBlank)),
    )?;
    check_str(
        O,
        "Status",
        &i.status,
        Rule::new(0, 0, Some(Pat::InstanceStatus)),
    )?;
    if let Some(hc) = &i.health_check {
        health_check(hc)?;
    }
    if let Some(dc) = &i.data_center_info {
        const D: &str = "DataCenterInfo";
        let rule = Rule::new(1, 128, Some(Pat::SimpleName));
        check_str(D, "Name", &dc.name, rule)?;
        check_str(D, "Region", &dc.region, rule)?;
        check_str(D, "AvailableZone", &dc.available_zone, rule)?;
    }
    Ok(())
}

fn health_check(hc: &HealthCheck) -> Result<(), String> {
    const H: &str = "HealthCheck";
    let max_i32 = i64::from(i32::MAX);
    check_str(
        H,
        "Mode",
        &hc.mode,
        Rule::new(0, 0, Some(Pat::HealthCheckMode)),
    )?;
    check_int(H, "Port", i64::from(hc.port), Rule::new(0, 65535, None))?;
    check_int(
        H,
        "Interval",
        i64::from(hc.interval),
        Rule::new(1, max_i32, None),
    )?;
    check_int(H, "Times", i64::from(hc.times), Rule::new(0, max_i32, None))?;
    check_str(H, "Url", &hc.url, Rule::new(0, 0, Some(Pat::NoSpace)))?;
    Ok(())
}

/// `(serviceId, instanceId)` of heartbeat, unregister, status and properties requests.
///
/// # Errors
/// SC's validation detail.
pub fn instance_key(owner: &str, service_id: &str, instance_id: &str) -> Result<(), String> {
    check_str(owner, "ServiceId", service_id, SERVICE_ID)?;
    check_str(owner, "InstanceId", instance_id, INSTANCE_ID)
}

/// A service key given to find/existence/batch find (`ExistenceReqValidator` fields).
///
/// # Errors
/// SC's validation detail.
pub fn find_key(owner: &str, app: &str, name: &str, rule: &str, env: &str) -> Result<(), String> {
    check_str(owner, "AppId", app, APP_ID)?;
    check_str(owner, "ServiceName", name, NAME_FOR_FIND)?;
    check_str(owner, "Version", rule, VERSION_RULE)?;
    check_str(owner, "Environment", env, ENVIRONMENT)
}

/// A consumer key of a dependency request.
///
/// # Errors
/// SC's validation detail.
pub fn dependency_consumer(k: &MicroServiceKey) -> Result<(), String> {
    const O: &str = "MicroServiceKey";
    check_str(O, "AppId", &k.app_id, Rule::new(1, 160, Some(Pat::Name)))?;
    check_str(
        O,
        "ServiceName",
        &k.service_name,
        Rule::new(1, 128, Some(Pat::Name)),
    )?;
    check_str(
        O,
        "Version",
        &k.version,
        Rule::new(1, 64, Some(Pat::Version)),
    )?;
    check_str(O, "Environment", &k.environment, ENVIRONMENT)
}

/// A provider key of a dependency request (`*` and version rules allowed).
///
/// # Errors
/// SC's validation detail.
pub fn dependency_provider(k: &MicroServiceKey) -> Result<(), String> {
    const O: &str = "MicroServiceKey";
    check_str(O, "AppId", &k.app_id, Rule::new(0, 160, Some(Pat::Name)))?;
    check_str(
        O,
        "ServiceName",
        &k.service_name,
        Rule::new(1, 128, Some(Pat::NameFuzzy)),
    )?;
    check_str(
        O,
        "Version",
        &k.version,
        Rule::new(0, 128, Some(Pat::DependencyVersion)),
    )?;
    check_str(O, "Environment", &k.environment, ENVIRONMENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(Pat::Name.is_match(""));
        assert!(Pat::Name.is_match("a"));
        assert!(Pat::Name.is_match("a-b.c_d"));
        assert!(!Pat::Name.is_match("-bad"));
        assert!(!Pat::Name.is_match("bad-"));
        assert!(!Pat::Name.is_match("a:b"));
        assert!(Pat::NameForFind.is_match("a:b"));
        assert!(Pat::NameFuzzy.is_match("*"));
        assert!(Pat::Environment.is_match(""));
        assert!(Pat::Environment.is_match("production"));
        assert!(!Pat::Environment.is_match("prod"));
        assert!(Pat::SchemaId.is_match("a"));
        assert!(!Pat::SchemaId.is_match("-a"));
        assert!(Pat::Tag.is_match("k1"));
        assert!(!Pat::Tag.is_match("1k"));
    }

    #[test]
    fn message_format() {
        let s = MicroService {
            service_name: "-bad".into(),
            version: "1.0.0".into(),
            ..Default::default()
        };
        assert_eq!(
            create_service(&s).unwrap_err(),
            r"field 'MicroService.ServiceName' invalid value '-bad' does not match rule: {Min: 1, Max: 128, Regexp: ^[a-zA-Z0-9]*$|^[a-zA-Z0-9][a-zA-Z0-9_\-.]*[a-zA-Z0-9]$}"
        );
        let hc = HealthCheck {
            mode: "pull".into(),
            ..Default::default()
        };
        assert_eq!(
            health_check(&hc).unwrap_err(),
            "field 'HealthCheck.Interval' invalid value '0' does not match rule: {Min: 1, Max: 2147483647}"
        );
    }
}

//! Black/white-list access rules of SC 1.4.8 (`query_rule_controller.go`, `service/rule.go`,
//! `service/util/rule_util.go`): the rule API and the check every consumer find applies.
//!
//! A provider's rules are all `BLACK` or all `WHITE`. A rule tests one attribute of the
//! consumer, `tag_<key>` (the consumer's tag) or a service field (`ServiceId`, `AppId`,
//! `ServiceName`, `Version`, `Description`, `Level`, `Status`), against `pattern`, a regular
//! expression searched anywhere in the value (Go's `regexp.MatchString`; an invalid pattern
//! never matches). An empty value skips the rule. A consumer matching a BLACK rule, or
//! matching no WHITE rule, does not see the provider: finds answer `200` without its
//! instances, list and get answer as if the provider had none.

use axum::body::Body;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::errors::{self, ScError};
use super::http::{Ctx, MAX_BODY_BYTES, Reply, empty_ok, json_ok, read_body};
use super::model::{AddOrUpdateServiceRule, MicroService, ServiceRule, StrMap, parse_body};
use super::state::{ServiceEntry, random_instance_id};
use super::validate::{self, Pat, Rule, check_str};

/// Rules per service (SC's default `QUOTA_RULE`).
pub const RULE_QUOTA: usize = 100;

fn not_exists() -> ScError {
    ScError::new(errors::SERVICE_NOT_EXISTS, "Service does not exist.")
}

/// `AddOrUpdateServiceRule`'s rules, in field order.
pub fn validate_rule(r: &AddOrUpdateServiceRule) -> Result<(), String> {
    const O: &str = "AddOrUpdateServiceRule";
    check_str(
        O,
        "RuleType",
        &r.rule_type,
        Rule::new(0, 0, Some(Pat::RuleType)),
    )?;
    check_str(
        O,
        "Attribute",
        &r.attribute,
        Rule::new(0, 0, Some(Pat::RuleAttribute)),
    )?;
    check_str(O, "Pattern", &r.pattern, Rule::new(1, 64, None))?;
    check_str(O, "Description", &r.description, Rule::new(0, 256, None))
}

fn validate_count(owner: &str, field: &str, n: usize) -> Result<(), ScError> {
    if n == 0 || n > RULE_QUOTA {
        return Err(ScError::invalid(format!(
            "field '{owner}.{field}' invalid value '{n} items' does not match rule: {{Min: 1, Max: {RULE_QUOTA}}}"
        )));
    }
    Ok(())
}

/// Adds rules to a stored service (`AddRule` after the existence check; also the `rules` of
/// a service create). Returns the new ids; rules whose attribute and pattern already exist
/// are skipped.
pub fn add_locked(
    entry: &mut ServiceEntry,
    rules: &[AddOrUpdateServiceRule],
    now: &str,
) -> Result<Vec<String>, ScError> {
    if entry.rules.len() + rules.len() > RULE_QUOTA {
        return Err(ScError::new(
            errors::NOT_ENOUGH_QUOTA,
            format!(
                "no quota to create RULE, max num is {RULE_QUOTA}, curNum is {}, apply num is {}",
                entry.rules.len(),
                rules.len()
            ),
        ));
    }
    let mut rule_type = entry
        .rules
        .values()
        .next()
        .map(|r| r.rule_type.clone())
        .unwrap_or_default();
    let mut added = Vec::new();
    for r in rules {
        if rule_type.is_empty() {
            rule_type = r.rule_type.clone();
        } else if rule_type != r.rule_type {
            return Err(ScError::new(
                errors::BLACK_AND_WHITE_RULE,
                "Service can only contain one rule type, BLACK or WHITE.",
            ));
        }
        let exists = entry
            .rules
            .values()
            .any(|old| old.attribute == r.attribute && old.pattern == r.pattern);
        if !exists {
            added.push(ServiceRule {
                rule_id: random_instance_id(),
                rule_type: r.rule_type.clone(),
                attribute: r.attribute.clone(),
                pattern: r.pattern.clone(),
                description: r.description.clone(),
                timestamp: now.to_owned(),
                mod_timestamp: now.to_owned(),
            });
        }
    }
    let ids = added.iter().map(|r| r.rule_id.clone()).collect();
    for r in added {
        entry.rules.insert(r.rule_id.clone(), r);
    }
    Ok(ids)
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct RulesBody {
    rules: Option<Vec<AddOrUpdateServiceRule>>,
}

#[derive(Serialize)]
struct AddRulesResponse {
    #[serde(rename = "RuleIds", skip_serializing_if = "Vec::is_empty")]
    rule_ids: Vec<String>,
}

/// `POST …/microservices/{serviceId}/rules` with `{"rules":[…]}`.
pub async fn add(ctx: &Ctx, service_id: &str, body: Body) -> Reply {
    let bytes = read_body(body, MAX_BODY_BYTES).await?;
    // Go reads `map[string][]*AddOrUpdateServiceRule`: the key `rules` is exact, the
    // members of each rule are matched case-insensitively.
    let raw: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes).map_err(|e| ScError::invalid(e.to_string()))?;
    let rules_value = raw.get("rules").cloned().unwrap_or(serde_json::Value::Null);
    let wrapped = serde_json::to_vec(&json!({ "rules": rules_value }))
        .map_err(|e| ScError::invalid(e.to_string()))?;
    let body: RulesBody = parse_body(&wrapped).map_err(ScError::invalid)?;
    let rules = body.rules.unwrap_or_default();
    check_str(
        "AddServiceRulesRequest",
        "ServiceId",
        service_id,
        validate::SERVICE_ID,
    )
    .map_err(ScError::invalid)?;
    validate_count("AddServiceRulesRequest", "Rules", rules.len())?;
    for r in &rules {
        validate_rule(r).map_err(ScError::invalid)?;
    }
    let now = ctx.reg.clock.unix_secs();
    let mut store = ctx.reg.lock();
    store.next_rev();
    let entry = store
        .tenant_mut(&ctx.tenant)
        .services
        .get_mut(service_id)
        // SC answers an unknown service here with 400001, not 400012.
        .ok_or_else(|| ScError::invalid("Service does not exist."))?;
    let rule_ids = add_locked(entry, &rules, &now)?;
    Ok(json_ok(&AddRulesResponse { rule_ids }))
}

/// `GET …/microservices/{serviceId}/rules`: `{"rules":[…]}`, `{}` without rules.
pub fn get(ctx: &Ctx, service_id: &str) -> Reply {
    check_str(
        "GetServiceRulesRequest",
        "ServiceId",
        service_id,
        validate::SERVICE_ID,
    )
    .map_err(ScError::invalid)?;
    let store = ctx.reg.lock();
    let entry = store
        .tenant(&ctx.tenant)
        .and_then(|t| t.services.get(service_id))
        .ok_or_else(not_exists)?;
    if entry.rules.is_empty() {
        return Ok(json_ok(&json!({})));
    }
    let rules: Vec<&ServiceRule> = entry.rules.values().collect();
    Ok(json_ok(&json!({ "rules": rules })))
}

/// `PUT …/microservices/{serviceId}/rules/{ruleId}` with one rule.
pub async fn update(ctx: &Ctx, service_id: &str, rule_id: &str, body: Body) -> Reply {
    const O: &str = "UpdateServiceRuleRequest";
    let bytes = read_body(body, MAX_BODY_BYTES).await?;
    let rule: AddOrUpdateServiceRule = parse_body(&bytes).map_err(ScError::invalid)?;
    check_str(O, "ServiceId", service_id, validate::SERVICE_ID)
        .and_then(|()| check_str(O, "RuleId", rule_id, validate::SERVICE_ID))
        .and_then(|()| validate_rule(&rule))
        .map_err(ScError::invalid)?;
    let now = ctx.reg.clock.unix_secs();
    let mut store = ctx.reg.lock();
    store.next_rev();
    let entry = store
        .tenant_mut(&ctx.tenant)
        .services
        .get_mut(service_id)
        .ok_or_else(not_exists)?;
    if let Some(first) = entry.rules.values().next()
        && first.rule_type != rule.rule_type
    {
        return Err(ScError::new(
            errors::MODIFY_RULE_NOT_ALLOW,
            format!(
                "Exist multiple rules,can not change rule type. Rule type is {}",
                first.rule_type
            ),
        ));
    }
    let Some(stored) = entry.rules.get_mut(rule_id) else {
        return Err(ScError::new(
            errors::RULE_NOT_EXISTS,
            "This rule does not exist.",
        ));
    };
    stored.rule_type = rule.rule_type;
    stored.attribute = rule.attribute;
    stored.pattern = rule.pattern;
    stored.description = rule.description;
    stored.mod_timestamp = now;
    Ok(empty_ok())
}

/// `DELETE …/microservices/{serviceId}/rules/{id1,id2}`: all or nothing.
pub fn delete(ctx: &Ctx, service_id: &str, rule_ids: &str) -> Reply {
    const O: &str = "DeleteServiceRulesRequest";
    let ids: Vec<&str> = rule_ids.split(',').collect();
    check_str(O, "ServiceId", service_id, validate::SERVICE_ID).map_err(ScError::invalid)?;
    validate_count(O, "RuleIds", ids.len())?;
    let mut store = ctx.reg.lock();
    store.next_rev();
    let entry = store
        .tenant_mut(&ctx.tenant)
        .services
        .get_mut(service_id)
        .ok_or_else(not_exists)?;
    if ids.iter().any(|id| !entry.rules.contains_key(*id)) {
        return Err(ScError::new(
            errors::RULE_NOT_EXISTS,
            "This rule does not exist.",
        ));
    }
    for id in ids {
        entry.rules.remove(id);
    }
    Ok(empty_ok())
}

/// The consumer attribute a rule tests (`parsePattern`); `None` for an unknown field.
fn attribute<'a>(consumer: &'a MicroService, tags: &'a StrMap, attr: &str) -> Option<&'a str> {
    if let Some(key) = attr.strip_prefix("tag_") {
        return Some(tags.get(key).map(String::as_str).unwrap_or(""));
    }
    Some(match attr {
        "ServiceId" => &consumer.service_id,
        "AppId" => &consumer.app_id,
        "ServiceName" => &consumer.service_name,
        "Version" => &consumer.version,
        "Description" => &consumer.description,
        "Level" => &consumer.level,
        "Status" => &consumer.status,
        _ => return None,
    })
}

/// Go's `regexp.MatchString`: a search; an invalid pattern is no match.
fn search(pattern: &str, value: &str) -> bool {
    regex::Regex::new(pattern).is_ok_and(|re| re.is_match(value))
}

/// `MatchRules`: whether a consumer (with its tags) passes a provider's rules.
pub fn allows(rules: &[&ServiceRule], consumer: &MicroService, tags: &StrMap) -> bool {
    let Some(first) = rules.first() else {
        return true;
    };
    let white = first.rule_type == "WHITE";
    for rule in rules {
        let Some(value) = attribute(consumer, tags, &rule.attribute) else {
            // SC fails the whole check (an internal error), which hides the provider.
            return false;
        };
        if value.is_empty() {
            continue;
        }
        if search(&rule.pattern, value) {
            // Found in the white list: allowed; found in the black list: denied.
            return white;
        }
    }
    !white
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(kind: &str, attr: &str, pattern: &str) -> ServiceRule {
        ServiceRule {
            rule_type: kind.into(),
            attribute: attr.into(),
            pattern: pattern.into(),
            ..Default::default()
        }
    }

    #[test]
    fn black_and_white_lists_match_like_sc() {
        let consumer = MicroService {
            service_name: "order-svc".into(),
            ..Default::default()
        };
        let tags: StrMap = [("team".to_owned(), "blue".to_owned())].into();
        let black = rule("BLACK", "ServiceName", "order");
        assert!(!allows(&[&black], &consumer, &tags));
        let white = rule("WHITE", "tag_team", "^blue$");
        assert!(allows(&[&white], &consumer, &tags));
        let white_other = rule("WHITE", "tag_team", "red");
        assert!(!allows(&[&white_other], &consumer, &tags));
        // An empty attribute skips the rule: a BLACK list lets the consumer through.
        let black_version = rule("BLACK", "Version", ".*");
        assert!(allows(&[&black_version], &consumer, &tags));
        assert!(allows(&[], &consumer, &tags));
        assert!(!search("(", "x"));
    }
}

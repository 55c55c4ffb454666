//! Service versions and version rules (`server/service/util/versionrule.go` of SC 1.4.8).
//!
//! A version is 1–4 dot-separated integers 0…32767, compared numerically part by part (missing
//! parts count as 0, so `1.0` and `1.0.0` compare equal). A rule is `latest`, `x+` (≥ x),
//! `x-y` (x ≤ v < y, bounds swapped when x > y) or anything else, which matches the stored
//! version string exactly.

use std::cmp::Ordering;

/// Parses a version like Go's `VersionToInt64`: up to four parts, each an `int16`.
/// Returns `None` where Go returns an error.
pub fn parse(version: &str) -> Option<[i16; 4]> {
    let mut parts = [0i16; 4];
    let mut rest = version;
    for part in &mut parts {
        if rest.is_empty() {
            break;
        }
        let (head, tail) = match rest.find('.') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, ""),
        };
        *part = head.parse::<i16>().ok()?;
        rest = tail;
    }
    Some(parts)
}

/// Numeric order of two versions; an unparsable version counts as `0` (as in Go).
pub fn compare(a: &str, b: &str) -> Ordering {
    let a = parse(a).unwrap_or_default();
    let b = parse(b).unwrap_or_default();
    a.cmp(&b)
}

/// `^\d+(\.\d+){0,3}$` plus every part ≤ 32767: a valid stored version.
pub fn is_valid(version: &str) -> bool {
    let parts: Vec<&str> = version.split('.').collect();
    parts.len() <= 4
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        && parse(version).is_some()
}

/// A valid version rule for find and existence: `latest`, `x+`, `x-y` or an exact version,
/// each bound a valid version (the `versionFuzzyRegex` plus `validateVersionRule`).
pub fn is_valid_rule(rule: &str) -> bool {
    if rule == "latest" {
        return true;
    }
    if let Some(start) = rule.strip_suffix('+') {
        return is_valid(start);
    }
    match rule.split_once('-') {
        Some((start, end)) => is_valid(start) && is_valid(end),
        None => is_valid(rule),
    }
}

/// SC's `Range` over versions sorted highest first, quirk included: it skips versions
/// `≥ end`, then takes the first version below `end` *without* checking `start`, then stops
/// at the first version below `start`. So `2.0.0-2.5.0` over 1.0.0 and 3.0.0 selects 1.0.0.
/// Nothing is selected when `start` is above every version or `end` at or below every one.
fn range_like_sc<'a>(sorted: &[(&'a str, &'a str)], start: &str, end: &str) -> Vec<&'a str> {
    let (Some(highest), Some(lowest)) = (sorted.first(), sorted.last()) else {
        return Vec::new();
    };
    if compare(start, highest.0) == Ordering::Greater || compare(end, lowest.0) != Ordering::Greater
    {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut inside = false;
    for (version, id) in sorted {
        if !inside {
            if compare(end, version) != Ordering::Greater {
                continue;
            }
            inside = true;
        } else if compare(start, version) == Ordering::Greater {
            break;
        }
        out.push(*id);
    }
    out
}

/// A parsed version rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rule {
    /// The single highest version.
    Latest,
    /// Every version ≥ the bound.
    AtLeast(String),
    /// start ≤ v < end.
    Range(String, String),
    /// String equality with the stored version.
    Exact(String),
}

impl Rule {
    /// `ParseVersionRule`: how SC reads a rule.
    pub fn parse(rule: &str) -> Rule {
        if rule == "latest" {
            return Rule::Latest;
        }
        if let Some(start) = rule.strip_suffix('+') {
            return Rule::AtLeast(start.to_owned());
        }
        match rule.find('-') {
            Some(i) if i > 0 => Rule::Range(rule[..i].to_owned(), rule[i + 1..].to_owned()),
            _ => Rule::Exact(rule.to_owned()),
        }
    }

    /// Picks from `candidates` (`(version, id)`) the ids the rule selects, highest version
    /// first. Exact rules are resolved by the caller (they go through the service index).
    pub fn select<'a>(&self, candidates: &[(&'a str, &'a str)]) -> Vec<&'a str> {
        let mut sorted: Vec<(&str, &str)> = candidates.to_vec();
        // Descending; ties (`1.0` vs `1.0.0`) by string so the order is stable.
        sorted.sort_by(|a, b| compare(b.0, a.0).then_with(|| b.0.cmp(a.0)));
        match self {
            Rule::Latest => sorted.first().map(|c| vec![c.1]).unwrap_or_default(),
            Rule::AtLeast(start) => sorted
                .iter()
                .filter(|c| compare(c.0, start) != Ordering::Less)
                .map(|c| c.1)
                .collect(),
            Rule::Range(start, end) => {
                let (start, end) = if compare(start, end) == Ordering::Greater {
                    (end, start)
                } else {
                    (start, end)
                };
                range_like_sc(&sorted, start, end)
            }
            Rule::Exact(v) => sorted.iter().filter(|c| c.0 == v).map(|c| c.1).collect(),
        }
    }

    /// `VersionMatchRule`: whether one version satisfies the rule (`latest` matches any
    /// single version; callers that need "is the highest" check that themselves).
    pub fn matches(&self, version: &str) -> bool {
        !self.select(&[(version, "")]).is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_validate() {
        assert_eq!(parse("1.2.3"), Some([1, 2, 3, 0]));
        assert_eq!(parse("32768"), None);
        assert!(is_valid("1.0.0.0"));
        assert!(!is_valid("1.0.0.0.0"));
        assert!(!is_valid("1.99999"));
        assert!(!is_valid(""));
        assert!(is_valid_rule("latest"));
        assert!(is_valid_rule("1.0+"));
        assert!(is_valid_rule("1.0-2.0"));
        assert!(!is_valid_rule("1.0-"));
        assert!(!is_valid_rule("x"));
    }

    #[test]
    fn rules_select_like_sc() {
        let c = [("1.0.0", "a"), ("2.0.0", "b"), ("1.5", "c")];
        assert_eq!(Rule::parse("latest").select(&c), vec!["b"]);
        assert_eq!(Rule::parse("1.0.0+").select(&c), vec!["b", "c", "a"]);
        assert_eq!(Rule::parse("1.0.0-2.0.0").select(&c), vec!["c", "a"]);
        assert_eq!(Rule::parse("2.0.0-1.0.0").select(&c), vec!["c", "a"]);
        assert_eq!(Rule::parse("1.5").select(&c), vec!["c"]);
        assert!(Rule::parse("1.5.0").select(&c).is_empty());
        assert!(Rule::parse("3.0+").select(&c).is_empty());
        assert!(Rule::parse("1.0.0+").matches("1.0.0"));
        assert!(!Rule::parse("1.0.0-2.0.0").matches("2.0.0"));
    }

    #[test]
    fn range_takes_the_first_version_below_the_end_unchecked() {
        let c = [("1.0.0", "a"), ("3.0.0", "b")];
        assert_eq!(Rule::parse("2.0.0-2.5.0").select(&c), vec!["a"]);
        assert!(Rule::parse("3.5.0-4.0.0").select(&c).is_empty());
        assert!(Rule::parse("0.1.0-1.0.0").select(&c).is_empty());
        assert!(!Rule::parse("2.0.0-2.5.0").matches("1.0.0"));
    }
}

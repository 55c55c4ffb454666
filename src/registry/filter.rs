//! Service filters (`--include`, `--exclude`): which services a data centre offers to the
//! others (applied by the exporter) and which of theirs it accepts (applied where an origin's
//! instances enter the importer, beside the registry kind's own rules).
//!
//! A pattern is `appId/serviceName` (any domain and project) or
//! `domain/project/appId/serviceName`, each part matched on its own, where `*` stands for any
//! run of characters (none included). A service passes when no include is given or one
//! matches it, and no exclude matches it. Filters are read at start: a service that stops
//! passing after a restart is simply no longer offered or accepted, and its copies go
//! through the same safe removal as any removed instance (the removal cap, no removal before
//! a complete snapshot).

use std::fmt;

use crate::registry::Service;

/// Why a pattern is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error(
        "'{0}' is not a service pattern: expected appId/serviceName or \
         domain/project/appId/serviceName (with * as a wildcard)"
    )]
    Shape(String),
    #[error("'{0}' has an empty part; use * to match anything")]
    EmptyPart(String),
}

/// One `[domain/project/]appId/serviceName` pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    text: String,
    /// `None`: any domain and project.
    tenant: Option<(String, String)>,
    app: String,
    name: String,
}

impl Pattern {
    /// Parses one pattern.
    ///
    /// # Errors
    /// [`FilterError`] for another number of parts than 2 or 4, or an empty part.
    pub fn parse(text: &str) -> Result<Pattern, FilterError> {
        let text = text.trim();
        let parts: Vec<&str> = text.split('/').collect();
        if parts.iter().any(|p| p.is_empty()) && parts.len() > 1 {
            return Err(FilterError::EmptyPart(text.to_owned()));
        }
        let owned = |s: &str| s.to_owned();
        match parts.as_slice() {
            [app, name] => Ok(Pattern {
                text: text.to_owned(),
                tenant: None,
                app: owned(app),
                name: owned(name),
            }),
            [domain, project, app, name] => Ok(Pattern {
                text: text.to_owned(),
                tenant: Some((owned(domain), owned(project))),
                app: owned(app),
                name: owned(name),
            }),
            _ => Err(FilterError::Shape(text.to_owned())),
        }
    }

    /// Whether `service` matches.
    pub fn matches(&self, service: &Service) -> bool {
        let tenant = match &self.tenant {
            Some((domain, project)) => {
                glob(domain, &service.tenant.domain) && glob(project, &service.tenant.project)
            }
            None => true,
        };
        tenant && glob(&self.app, &service.app) && glob(&self.name, &service.name)
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Whether `text` matches `pattern`, where `*` matches any run of characters.
///
/// Greedy matching with one backtrack point (the last `*`), linear in practice; written out
/// because the patterns are a single wildcard over one name part, which a glob crate's path
/// semantics (separators, classes, escapes) would only get in the way of. It compares bytes,
/// allocating nothing (it runs for every instance an origin offers): in UTF-8 a literal run
/// can only match at a character boundary, so bytes give the answer characters would.
fn glob(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// The include and exclude patterns of one syncer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceFilter {
    include: Vec<Pattern>,
    exclude: Vec<Pattern>,
}

impl ServiceFilter {
    /// A filter from the texts of `--include` and `--exclude`.
    ///
    /// # Errors
    /// The [`FilterError`] of the first pattern that does not parse.
    pub fn new<I, E>(include: I, exclude: E) -> Result<ServiceFilter, FilterError>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
        E: IntoIterator,
        E::Item: AsRef<str>,
    {
        let parse = |texts: Vec<String>| -> Result<Vec<Pattern>, FilterError> {
            texts
                .iter()
                .filter(|t| !t.trim().is_empty())
                .map(|t| Pattern::parse(t))
                .collect()
        };
        Ok(ServiceFilter {
            include: parse(include.into_iter().map(|s| s.as_ref().to_owned()).collect())?,
            exclude: parse(exclude.into_iter().map(|s| s.as_ref().to_owned()).collect())?,
        })
    }

    /// A filter from patterns already parsed.
    pub fn from_patterns(include: Vec<Pattern>, exclude: Vec<Pattern>) -> ServiceFilter {
        ServiceFilter { include, exclude }
    }

    /// The include patterns, as given.
    pub fn includes(&self) -> Vec<String> {
        self.include.iter().map(ToString::to_string).collect()
    }

    /// The exclude patterns, as given.
    pub fn excludes(&self) -> Vec<String> {
        self.exclude.iter().map(ToString::to_string).collect()
    }

    /// Whether every service passes.
    pub fn is_open(&self) -> bool {
        self.include.is_empty() && self.exclude.is_empty()
    }

    /// Whether `service` passes.
    pub fn allows(&self, service: &Service) -> bool {
        (self.include.is_empty() || self.include.iter().any(|p| p.matches(service)))
            && !self.exclude.iter().any(|p| p.matches(service))
    }
}

impl fmt::Display for ServiceFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |patterns: &[Pattern]| {
            patterns
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        match (self.include.is_empty(), self.exclude.is_empty()) {
            (true, true) => f.write_str("every service"),
            (false, true) => write!(f, "only {}", list(&self.include)),
            (true, false) => write!(f, "every service but {}", list(&self.exclude)),
            (false, false) => write!(
                f,
                "only {}, but not {}",
                list(&self.include),
                list(&self.exclude)
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Tenant;

    fn service(domain: &str, project: &str, app: &str, name: &str) -> Service {
        Service {
            tenant: Tenant::new(domain, project),
            app: app.into(),
            name: name.into(),
            ..Service::default()
        }
    }

    #[test]
    fn globs_match_any_run_of_characters() {
        for (pattern, text, expected) in [
            ("*", "", true),
            ("*", "orders", true),
            ("orders", "orders", true),
            ("orders", "order", false),
            ("ord*", "orders", true),
            ("*ers", "orders", true),
            ("o*r*s", "orders", true),
            ("o*x*s", "orders", false),
            ("*-internal", "billing-internal", true),
            ("*-internal", "billing-internals", false),
            ("a*a", "a", false),
            ("a**", "a", true),
            ("zo*e", "zoë-zone", true),
            ("*ë", "noë", true),
        ] {
            assert_eq!(glob(pattern, text), expected, "{pattern} ~ {text}");
        }
    }

    #[test]
    fn patterns_name_a_service_with_or_without_its_tenant() {
        let p = Pattern::parse("shop/orders").expect("parse");
        assert!(p.matches(&service("default", "default", "shop", "orders")));
        assert!(p.matches(&service("acme", "prod", "shop", "orders")));
        assert!(!p.matches(&service("default", "default", "shop", "billing")));
        let p = Pattern::parse("acme/*/shop/*").expect("parse");
        assert!(p.matches(&service("acme", "prod", "shop", "orders")));
        assert!(!p.matches(&service("other", "prod", "shop", "orders")));
        for bad in ["orders", "a/b/c", "a/b/c/d/e", "shop/", "/orders", ""] {
            assert!(Pattern::parse(bad).is_err(), "{bad}");
        }
        let err = Pattern::parse("a/b/c")
            .expect_err("three parts")
            .to_string();
        assert!(
            err.contains("'a/b/c'") && err.contains("appId/serviceName"),
            "{err}"
        );
    }

    #[test]
    fn excludes_win_over_includes() {
        let filter = ServiceFilter::new(["shop/*"], ["shop/*-internal"]).expect("filter");
        assert!(filter.allows(&service("d", "p", "shop", "orders")));
        assert!(!filter.allows(&service("d", "p", "shop", "audit-internal")));
        assert!(!filter.allows(&service("d", "p", "hr", "payroll")));
        assert_eq!(filter.to_string(), "only shop/*, but not shop/*-internal");
        let open = ServiceFilter::new(Vec::<String>::new(), Vec::<String>::new()).expect("open");
        assert!(open.is_open());
        assert!(open.allows(&service("d", "p", "hr", "payroll")));
        assert_eq!(open.to_string(), "every service");
        let only_out = ServiceFilter::new(Vec::<String>::new(), ["hr/*"]).expect("filter");
        assert!(!only_out.allows(&service("d", "p", "hr", "payroll")));
        assert!(only_out.allows(&service("d", "p", "shop", "payroll")));
    }
}

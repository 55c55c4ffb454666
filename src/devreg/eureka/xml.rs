//! Eureka's XML format (reference §1.3 item 8, Eureka's XStream `Converters`): what the
//! emulator answers when `Accept` does not contain `json` (real clients such as
//! `py-eureka-client` read it), and a small reader for XML register bodies.
//!
//! Output follows XStream's element names: `<applications>` with `versions__delta`,
//! `apps__hashcode` and `<application>`s; an instance's `port`/`securePort` carry the number as
//! text and `enabled="true|false"` as attribute; `dataCenterInfo` has a `class` attribute;
//! `overriddenstatus` keeps its legacy spelling; metadata keys become element names (keys
//! that are not XML names are left out, logged once per write, so the document stays readable).
//!
//! The reader turns an XML document into the `serde_json::Value` shape the JSON reader takes
//! (`<port enabled="true">80</port>` → `{"@enabled":"true","$":"80"}`), so both body formats
//! go through the same lenient parsing. It handles elements, attributes, text, the five
//! predefined entities and numeric references, comments and the XML declaration; no DTDs.

use std::fmt::Write as _;

use serde_json::{Map, Value};
use tracing::debug;

use super::model::{AppView, EMPTY_MAP_CLASS, Record};

/// Escapes text and attribute values.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// A name XML accepts as an element name (ASCII subset: letter or `_` first, then letters,
/// digits, `_`, `-`, `.`).
fn is_xml_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && !s.to_ascii_lowercase().starts_with("xml")
}

fn leaf(out: &mut String, name: &str, text: impl std::fmt::Display) {
    let text = escape(&text.to_string());
    let _ = write!(out, "<{name}>{text}</{name}>");
}

fn opt_leaf(out: &mut String, name: &str, text: Option<&str>) {
    if let Some(t) = text {
        leaf(out, name, t);
    }
}

fn map(out: &mut String, name: &str, m: &std::collections::BTreeMap<String, String>) {
    if m.is_empty() {
        let _ = write!(out, "<{name} class=\"{EMPTY_MAP_CLASS}\"/>");
        return;
    }
    let _ = write!(out, "<{name}>");
    for (k, v) in m {
        if is_xml_name(k) {
            leaf(out, k, v);
        } else {
            debug!(key = %k, "metadata key is not an XML name: left out of the XML answer");
        }
    }
    let _ = write!(out, "</{name}>");
}

fn instance(out: &mut String, r: &Record) {
    let i = &r.instance;
    out.push_str("<instance>");
    opt_leaf(out, "instanceId", i.instance_id.as_deref());
    leaf(out, "hostName", &i.host_name);
    leaf(out, "app", &i.app);
    leaf(out, "ipAddr", &i.ip_addr);
    if i.sid != "na" {
        leaf(out, "sid", &i.sid);
    }
    leaf(out, "status", i.status.as_str());
    leaf(out, "overriddenstatus", i.overridden_status.as_str());
    for (name, p) in [("port", i.port), ("securePort", i.secure_port)] {
        let _ = write!(
            out,
            "<{name} enabled=\"{}\">{}</{name}>",
            p.enabled, p.number
        );
    }
    leaf(out, "countryId", i.country_id);
    if let Some(dc) = &i.data_center {
        let _ = write!(out, "<dataCenterInfo class=\"{}\">", escape(&dc.class));
        opt_leaf(out, "name", dc.name.as_deref());
        if let Some(m) = &dc.metadata {
            map(out, "metadata", m);
        }
        out.push_str("</dataCenterInfo>");
    }
    out.push_str("<leaseInfo>");
    leaf(out, "renewalIntervalInSecs", i.renewal_interval_secs);
    leaf(out, "durationInSecs", i.duration_secs);
    leaf(out, "registrationTimestamp", r.lease.registration);
    leaf(out, "lastRenewalTimestamp", r.lease.last_renewal);
    leaf(out, "evictionTimestamp", r.lease.eviction);
    leaf(out, "serviceUpTimestamp", r.lease.service_up);
    out.push_str("</leaseInfo>");
    map(out, "metadata", &i.metadata);
    opt_leaf(out, "appGroupName", i.app_group_name.as_deref());
    opt_leaf(out, "homePageUrl", i.home_page_url.as_deref());
    opt_leaf(out, "statusPageUrl", i.status_page_url.as_deref());
    opt_leaf(out, "healthCheckUrl", i.health_check_url.as_deref());
    opt_leaf(
        out,
        "secureHealthCheckUrl",
        i.secure_health_check_url.as_deref(),
    );
    opt_leaf(out, "vipAddress", i.vip_address.as_deref());
    opt_leaf(out, "secureVipAddress", i.secure_vip_address.as_deref());
    leaf(out, "isCoordinatingDiscoveryServer", "false");
    leaf(out, "lastUpdatedTimestamp", i.last_updated);
    leaf(out, "lastDirtyTimestamp", i.last_dirty);
    if let Some(a) = i.action_type {
        leaf(out, "actionType", a.as_str());
    }
    opt_leaf(out, "asgName", i.asg_name.as_deref());
    out.push_str("</instance>");
}

fn application(out: &mut String, app: &AppView<'_>) {
    out.push_str("<application>");
    leaf(out, "name", app.name);
    for r in &app.instances {
        instance(out, r);
    }
    out.push_str("</application>");
}

/// `<applications>…</applications>`.
pub fn applications_xml(version: i64, hash: &str, apps: &[AppView<'_>]) -> String {
    let mut out = String::from("<applications>");
    leaf(&mut out, "versions__delta", version);
    leaf(&mut out, "apps__hashcode", hash);
    for app in apps {
        application(&mut out, app);
    }
    out.push_str("</applications>");
    out
}

/// `<application>…</application>`.
pub fn application_xml(app: &AppView<'_>) -> String {
    let mut out = String::new();
    application(&mut out, app);
    out
}

/// `<instance>…</instance>`.
pub fn instance_xml(r: &Record) -> String {
    let mut out = String::new();
    instance(&mut out, r);
    out
}

// ---- reading ----------------------------------------------------------------------------

/// A document the reader cannot take.
#[derive(Debug, thiserror::Error)]
#[error("bad XML at byte {at}: {what}")]
pub struct XmlError {
    pub at: usize,
    pub what: &'static str,
}

struct Reader<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Reader<'a> {
    fn err(&self, what: &'static str) -> XmlError {
        XmlError { at: self.pos, what }
    }

    fn rest(&self) -> &'a str {
        &self.s[self.pos..]
    }

    fn skip_ws(&mut self) {
        let trimmed = self.rest().trim_start();
        self.pos = self.s.len() - trimmed.len();
    }

    /// Skips the declaration, comments and processing instructions.
    fn skip_misc(&mut self) -> Result<(), XmlError> {
        loop {
            self.skip_ws();
            let (open, close) = if self.rest().starts_with("<?") {
                ("<?", "?>")
            } else if self.rest().starts_with("<!--") {
                ("<!--", "-->")
            } else {
                return Ok(());
            };
            let end = self.rest()[open.len()..]
                .find(close)
                .ok_or_else(|| self.err("unterminated declaration or comment"))?;
            self.pos += open.len() + end + close.len();
        }
    }

    fn name(&mut self) -> Result<&'a str, XmlError> {
        let rest = self.rest();
        let len = rest
            .find(|c: char| c.is_whitespace() || matches!(c, '>' | '/' | '='))
            .unwrap_or(rest.len());
        if len == 0 {
            return Err(self.err("expected a name"));
        }
        self.pos += len;
        Ok(&rest[..len])
    }

    /// One element, as a JSON value: text only → string; otherwise an object of children
    /// (repeated names become arrays), attributes as `@name`, text beside attributes as `$`.
    fn element(&mut self, depth: usize) -> Result<(String, Value), XmlError> {
        if depth > 32 {
            return Err(self.err("too deep"));
        }
        if !self.rest().starts_with('<') {
            return Err(self.err("expected an element"));
        }
        self.pos += 1;
        let name = self.name()?.to_owned();
        let mut obj = Map::new();
        loop {
            self.skip_ws();
            if self.rest().starts_with("/>") {
                self.pos += 2;
                return Ok((name, finish(obj, String::new())));
            }
            if self.rest().starts_with('>') {
                self.pos += 1;
                break;
            }
            let attr = self.name()?.to_owned();
            self.skip_ws();
            if !self.rest().starts_with('=') {
                return Err(self.err("expected ="));
            }
            self.pos += 1;
            self.skip_ws();
            let quote = self
                .rest()
                .chars()
                .next()
                .filter(|c| matches!(c, '"' | '\''))
                .ok_or_else(|| self.err("expected a quoted value"))?;
            self.pos += 1;
            let end = self
                .rest()
                .find(quote)
                .ok_or_else(|| self.err("unterminated attribute"))?;
            let value = unescape(&self.rest()[..end]).ok_or_else(|| self.err("bad entity"))?;
            self.pos += end + 1;
            obj.insert(format!("@{attr}"), Value::String(value));
        }
        let mut text = String::new();
        loop {
            let rest = self.rest();
            if rest.is_empty() {
                return Err(self.err("unterminated element"));
            }
            if rest.starts_with("<!--") {
                self.skip_misc()?;
                continue;
            }
            if rest.starts_with("</") {
                self.pos += 2;
                let close = self.name()?;
                if close != name {
                    return Err(self.err("mismatched closing tag"));
                }
                self.skip_ws();
                if !self.rest().starts_with('>') {
                    return Err(self.err("expected >"));
                }
                self.pos += 1;
                return Ok((name, finish(obj, text)));
            }
            if rest.starts_with('<') {
                let (child, value) = self.element(depth + 1)?;
                match obj.get_mut(&child) {
                    Some(Value::Array(items)) => items.push(value),
                    Some(existing) => {
                        let first = existing.take();
                        *existing = Value::Array(vec![first, value]);
                    }
                    None => {
                        obj.insert(child, value);
                    }
                }
                continue;
            }
            let end = rest.find('<').unwrap_or(rest.len());
            text.push_str(&unescape(&rest[..end]).ok_or_else(|| self.err("bad entity"))?);
            self.pos += end;
        }
    }
}

fn finish(mut obj: Map<String, Value>, text: String) -> Value {
    let text = text.trim();
    if obj.is_empty() {
        return Value::String(text.to_owned());
    }
    if !text.is_empty() {
        obj.insert("$".to_owned(), Value::String(text.to_owned()));
    }
    Value::Object(obj)
}

fn unescape(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let end = rest[i..].find(';')? + i;
        let entity = &rest[i + 1..end];
        let c = match entity {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            _ => {
                let code = if let Some(hex) = entity.strip_prefix("#x") {
                    u32::from_str_radix(hex, 16).ok()?
                } else {
                    entity.strip_prefix('#')?.parse().ok()?
                };
                char::from_u32(code)?
            }
        };
        out.push(c);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    Some(out)
}

/// Reads an XML document into `{"root-name": value}`.
///
/// # Errors
/// [`XmlError`] for what is not well-formed (as far as this reader checks).
pub fn parse(body: &[u8]) -> Result<Value, XmlError> {
    let s = std::str::from_utf8(body).map_err(|_| XmlError {
        at: 0,
        what: "not UTF-8",
    })?;
    let mut r = Reader { s, pos: 0 };
    r.skip_misc()?;
    let (name, value) = r.element(0)?;
    r.skip_misc()?;
    if !r.rest().is_empty() {
        return Err(r.err("content after the root element"));
    }
    let mut root = Map::new();
    root.insert(name, value);
    Ok(Value::Object(root))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_register_body() {
        let doc = br#"<?xml version="1.0"?><!-- c --><instance>
            <hostName>h &amp; co</hostName><port enabled="true">8080</port>
            <dataCenterInfo class="com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo"><name>MyOwn</name></dataCenterInfo>
            <metadata class="java.util.Collections$EmptyMap"/><a>1</a><a>2</a></instance>"#;
        let v = parse(doc).unwrap();
        let i = &v["instance"];
        assert_eq!(i["hostName"], "h & co");
        assert_eq!(
            i["port"],
            serde_json::json!({"@enabled": "true", "$": "8080"})
        );
        assert_eq!(i["dataCenterInfo"]["name"], "MyOwn");
        assert_eq!(i["metadata"]["@class"], EMPTY_MAP_CLASS);
        assert_eq!(i["a"], serde_json::json!(["1", "2"]));
    }

    #[test]
    fn refuses_broken_documents() {
        for doc in [&b"<a><b></a>"[..], b"<a>", b"<a x=1/>", b"<a/><b/>", b"&"] {
            assert!(parse(doc).is_err(), "{}", String::from_utf8_lossy(doc));
        }
    }

    #[test]
    fn xml_names() {
        assert!(is_xml_name("zone") && is_xml_name("sc.appId") && is_xml_name("_a-1"));
        assert!(!is_xml_name("1a") && !is_xml_name("a b") && !is_xml_name("a:b"));
        assert!(!is_xml_name(""));
    }
}

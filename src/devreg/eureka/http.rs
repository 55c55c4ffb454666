//! HTTP plumbing of the Eureka emulator: routes under `/eureka/` and `/eureka/v2/`, content
//! negotiation (§1.2), status codes and bodies of every endpoint (§2–§5), the request log.
//!
//! One axum fallback handler ([`dispatch`]) reads the whole body, records the request, routes
//! it, and logs the exchange at `debug!`. Handlers are synchronous: each takes the registry
//! lock once and never awaits under it.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tracing::debug;

use super::cache::{self, Entity, Format};
use super::model::{Record, Status, instance_json, parse_register_body, register_from_value};
use super::state::RenewOutcome;
use super::xml;
use super::{RecordedRequest, Server};

/// Largest request body read (Eureka bodies are a few KiB).
const MAX_BODY_BYTES: usize = 1024 * 1024;
/// The header peers set on replicated calls (`PeerEurekaNode.HEADER_REPLICATION`).
const REPLICATION_HEADER: &str = "x-netflix-discovery-replication";
const CONTENT_TYPE_JSON: &str = "application/json";
const CONTENT_TYPE_XML: &str = "application/xml";
const CONTENT_TYPE_TEXT: &str = "text/plain";

/// The request as handlers see it.
struct Ctx<'a> {
    server: &'a Server,
    headers: &'a HeaderMap,
    /// Decoded query pairs in order.
    query: Vec<(String, String)>,
    body: &'a [u8],
}

impl Ctx<'_> {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// First value of a query parameter.
    fn q(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// JSON when `Accept` contains `json` (§1.2.2); otherwise Eureka answers XML.
    fn format(&self) -> Format {
        if self.header("accept").to_ascii_lowercase().contains("json") {
            Format::Json
        } else {
            Format::Xml
        }
    }

    /// The format of single-instance reads and the 409 body: JAX-RS negotiation over
    /// `@Produces({XML, JSON})`, so XML unless `Accept` names JSON and not XML (q-values are
    /// not weighed).
    fn instance_format(&self) -> Format {
        let accept = self.header("accept").to_ascii_lowercase();
        if accept.contains("json") && !accept.contains("xml") {
            Format::Json
        } else {
            Format::Xml
        }
    }

    fn replication(&self) -> bool {
        self.header(REPLICATION_HEADER) == "true"
    }
}

/// An empty answer with this status.
fn empty(status: StatusCode) -> Response {
    status.into_response()
}

fn text(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, CONTENT_TYPE_TEXT)], body).into_response()
}

/// `400 {"error":"cannot parse request body"}` (`DiscoveryJerseyProvider`).
fn parse_error() -> Response {
    (
        StatusCode::BAD_REQUEST,
        [(header::CONTENT_TYPE, CONTENT_TYPE_JSON)],
        r#"{"error":"cannot parse request body"}"#,
    )
        .into_response()
}

/// A rendered body with its content type.
fn payload(status: StatusCode, format: Format, body: impl Into<Body>) -> Response {
    let content_type = match format {
        Format::Json => CONTENT_TYPE_JSON,
        Format::Xml => CONTENT_TYPE_XML,
    };
    (status, [(header::CONTENT_TYPE, content_type)], body.into()).into_response()
}

/// One instance in the negotiated format.
fn instance_payload(status: StatusCode, format: Format, r: &Record) -> Response {
    let body = match format {
        Format::Json => instance_json(r),
        Format::Xml => xml::instance_xml(r),
    };
    payload(status, format, body)
}

/// Percent-decodes one path segment (invalid escapes are kept as they are).
fn decode_segment(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push(h * 16 + l);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The path segments after `/eureka/` or `/eureka/v2/`, decoded; `None` for other paths.
fn segments(path: &str) -> Option<Vec<String>> {
    let rest = path
        .strip_prefix("/eureka/v2/")
        .or_else(|| path.strip_prefix("/eureka/"))?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() {
        return None;
    }
    Some(rest.split('/').map(decode_segment).collect())
}

/// The single axum handler: read, record, route, log.
pub(crate) async fn dispatch(State(server): State<Arc<Server>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let method = parts.method.clone();
    let path = parts.uri.path().to_owned();
    let raw_query = parts.uri.query().unwrap_or("").to_owned();
    let body: Bytes = match axum::body::to_bytes(Body::new(body), MAX_BODY_BYTES).await {
        Ok(b) => b,
        Err(_) => {
            debug!(method = %method, path = %path, "eureka dev registry: body too large");
            return empty(StatusCode::PAYLOAD_TOO_LARGE);
        }
    };
    server.log.push(RecordedRequest {
        method: method.to_string(),
        path: path.clone(),
        query: raw_query.clone(),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_ascii_lowercase(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: String::from_utf8_lossy(&body).into_owned(),
    });
    let ctx = Ctx {
        server: &server,
        headers: &parts.headers,
        query: url::form_urlencoded::parse(raw_query.as_bytes())
            .into_owned()
            .collect(),
        body: &body,
    };
    let resp = route(&ctx, &method, &path);
    debug!(
        method = %method,
        path = %path,
        query = %raw_query,
        status = resp.status().as_u16(),
        "eureka dev registry request"
    );
    resp
}

fn route(ctx: &Ctx<'_>, method: &Method, path: &str) -> Response {
    let Some(segs) = segments(path) else {
        return empty(StatusCode::NOT_FOUND);
    };
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    let m = method.as_str();
    match (m, s.as_slice()) {
        ("GET", ["apps"]) => list(ctx, Entity::Apps),
        ("GET", ["apps", "delta"]) => list(ctx, Entity::Delta),
        ("GET", ["apps", app]) => list(ctx, Entity::App(app.to_uppercase())),
        ("POST", ["apps", app]) => register(ctx, &app.to_uppercase()),
        ("GET", ["apps", app, id]) => get_instance(ctx, &app.to_uppercase(), id),
        ("PUT", ["apps", app, id]) => renew(ctx, &app.to_uppercase(), id),
        ("DELETE", ["apps", app, id]) => cancel(ctx, &app.to_uppercase(), id),
        ("PUT", ["apps", app, id, "status"]) => set_status(ctx, &app.to_uppercase(), id),
        ("DELETE", ["apps", app, id, "status"]) => delete_status(ctx, &app.to_uppercase(), id),
        ("PUT", ["apps", app, id, "metadata"]) => metadata(ctx, &app.to_uppercase(), id),
        ("GET", ["instances", id]) => by_id(ctx, id),
        ("GET", ["vips", vip]) => list(ctx, Entity::Vip((*vip).to_owned())),
        ("GET", ["svips", vip]) => list(ctx, Entity::Svip((*vip).to_owned())),
        (_, ["apps"] | ["apps", _] | ["apps", _, _] | ["instances", _])
        | (_, ["apps", _, _, "status" | "metadata"])
        | (_, ["vips" | "svips", _]) => empty(StatusCode::METHOD_NOT_ALLOWED),
        _ => empty(StatusCode::NOT_FOUND),
    }
}

/// A query parameter that should be a number and is not (Java's `Long.valueOf` throws: 500).
struct NotANumber;

/// A timestamp query parameter.
fn stamp(ctx: &Ctx<'_>, key: &str) -> Result<Option<i64>, NotANumber> {
    match ctx.q(key) {
        None => Ok(None),
        Some(v) => v.trim().parse::<i64>().map(Some).map_err(|_| NotANumber),
    }
}

/// `POST /apps/{APP}` (§2): parse, validate in Eureka's order, register, 204.
fn register(ctx: &Ctx<'_>, app: &str) -> Response {
    let reg = &ctx.server.registry;
    let now = reg.clock.now_ms();
    let is_xml = ctx
        .header("content-type")
        .to_ascii_lowercase()
        .contains("xml");
    let parsed = if is_xml {
        xml::parse(ctx.body)
            .map_err(|e| super::model::ParseError(e.to_string()))
            .and_then(|v| register_from_value(&v, now))
    } else {
        parse_register_body(ctx.body, now)
    };
    let inst = match parsed {
        Ok(i) => i,
        Err(e) => {
            debug!(error = %e, "eureka register body refused");
            return parse_error();
        }
    };
    let blank = |s: &str| s.trim().is_empty();
    let problem = if blank(inst.id()) {
        Some("Missing instanceId".to_owned())
    } else if blank(&inst.host_name) {
        Some("Missing hostname".to_owned())
    } else if blank(&inst.ip_addr) {
        Some("Missing ip address".to_owned())
    } else if blank(&inst.app) {
        Some("Missing appName".to_owned())
    } else if inst.app != app {
        Some(format!(
            "Mismatched appName, expecting {app} but was {}",
            inst.app
        ))
    } else if inst.data_center.is_none() {
        Some("Missing dataCenterInfo".to_owned())
    } else if inst.data_center.as_ref().is_some_and(|d| d.name.is_none()) {
        Some("Missing dataCenterInfo Name".to_owned())
    } else {
        None
    };
    if let Some(p) = problem {
        return text(StatusCode::BAD_REQUEST, p);
    }
    reg.register(inst, ctx.replication());
    empty(StatusCode::NO_CONTENT)
}

/// `PUT /apps/{APP}/{ID}` (§3).
fn renew(ctx: &Ctx<'_>, app: &str, id: &str) -> Response {
    let last_dirty = match stamp(ctx, "lastDirtyTimestamp") {
        Ok(t) => t,
        Err(NotANumber) => return empty(StatusCode::INTERNAL_SERVER_ERROR),
    };
    match ctx
        .server
        .registry
        .renew(app, id, last_dirty, ctx.replication())
    {
        RenewOutcome::Ok => empty(StatusCode::OK),
        RenewOutcome::NotFound => empty(StatusCode::NOT_FOUND),
        RenewOutcome::Conflict(record) => {
            instance_payload(StatusCode::CONFLICT, ctx.instance_format(), &record)
        }
    }
}

/// `DELETE /apps/{APP}/{ID}` (§4.1).
fn cancel(ctx: &Ctx<'_>, app: &str, id: &str) -> Response {
    if ctx.server.registry.cancel(app, id, true) {
        empty(StatusCode::OK)
    } else {
        empty(StatusCode::NOT_FOUND)
    }
}

/// `PUT …/status?value=S` (§4.2).
fn set_status(ctx: &Ctx<'_>, app: &str, id: &str) -> Response {
    let reg = &ctx.server.registry;
    if reg.instance(app, id).is_none() {
        return empty(StatusCode::NOT_FOUND);
    }
    let Some(value) = ctx.q("value").and_then(Status::exact) else {
        return empty(StatusCode::INTERNAL_SERVER_ERROR);
    };
    let last_dirty = match stamp(ctx, "lastDirtyTimestamp") {
        Ok(t) => t,
        Err(NotANumber) => return empty(StatusCode::INTERNAL_SERVER_ERROR),
    };
    if reg.set_status(app, id, value, last_dirty) {
        empty(StatusCode::OK)
    } else {
        empty(StatusCode::NOT_FOUND)
    }
}

/// `DELETE …/status[?value=S]` (§4.4).
fn delete_status(ctx: &Ctx<'_>, app: &str, id: &str) -> Response {
    let reg = &ctx.server.registry;
    if reg.instance(app, id).is_none() {
        return empty(StatusCode::NOT_FOUND);
    }
    let value = match ctx.q("value") {
        None => Status::Unknown,
        Some(v) => match Status::exact(v) {
            Some(s) => s,
            None => return empty(StatusCode::INTERNAL_SERVER_ERROR),
        },
    };
    let last_dirty = match stamp(ctx, "lastDirtyTimestamp") {
        Ok(t) => t,
        Err(NotANumber) => return empty(StatusCode::INTERNAL_SERVER_ERROR),
    };
    if reg.delete_status_override(app, id, value, last_dirty) {
        empty(StatusCode::OK)
    } else {
        empty(StatusCode::NOT_FOUND)
    }
}

/// `PUT …/metadata?k=v…` (§4.5).
fn metadata(ctx: &Ctx<'_>, app: &str, id: &str) -> Response {
    if ctx.server.registry.merge_metadata(app, id, &ctx.query) {
        empty(StatusCode::OK)
    } else {
        empty(StatusCode::NOT_FOUND)
    }
}

/// `GET /apps/{APP}/{ID}`.
fn get_instance(ctx: &Ctx<'_>, app: &str, id: &str) -> Response {
    match ctx.server.registry.instance(app, id) {
        Some(r) => instance_reply(ctx, &r),
        None => empty(StatusCode::NOT_FOUND),
    }
}

/// `GET /instances/{ID}`.
fn by_id(ctx: &Ctx<'_>, id: &str) -> Response {
    match ctx.server.registry.instance_by_id(id) {
        Some(r) => instance_reply(ctx, &r),
        None => empty(StatusCode::NOT_FOUND),
    }
}

fn instance_reply(ctx: &Ctx<'_>, r: &Record) -> Response {
    instance_payload(StatusCode::OK, ctx.instance_format(), r)
}

/// `GET /apps`, `/apps/delta`, `/apps/{APP}`, `/vips/…`, `/svips/…`: the (possibly cached)
/// payload in the negotiated format; gzip for the first two when the client accepts it; 403
/// while a lone Netflix server would refuse reads; 404 for an unknown or empty app.
fn list(ctx: &Ctx<'_>, entity: Entity) -> Response {
    let server = ctx.server;
    let reg = &server.registry;
    if let Some(d) = reg.config.refuse_reads_for
        && reg.clock.elapsed() < d
    {
        return empty(StatusCode::FORBIDDEN);
    }
    let gzip_ok = matches!(entity, Entity::Apps | Entity::Delta)
        && ctx
            .header("accept-encoding")
            .to_ascii_lowercase()
            .contains("gzip");
    let format = ctx.format();
    let key = (entity, format);
    let body = if reg.config.response_cache.is_some() {
        server.cache.get(reg, &key)
    } else {
        cache::render(reg, &key)
    };
    let Some(body) = body else {
        return empty(StatusCode::NOT_FOUND);
    };
    if gzip_ok {
        match gzip(body.as_bytes()) {
            Ok(z) => {
                let mut resp = payload(StatusCode::OK, format, z);
                resp.headers_mut()
                    .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
                return resp;
            }
            Err(e) => debug!(error = %e, "gzip failed: answering uncompressed"),
        }
    }
    payload(StatusCode::OK, format, body)
}

/// Gzips a payload.
fn gzip(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    use std::io::Write as _;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes)?;
    enc.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(
            segments("/eureka/v2/apps/A/h%3Aa%3A80").unwrap(),
            ["apps", "A", "h:a:80"]
        );
        assert_eq!(segments("/eureka/apps/").unwrap(), ["apps"]);
        assert!(segments("/other/apps").is_none());
        assert!(segments("/eureka/").is_none());
        assert_eq!(decode_segment("%zz%4"), "%zz%4");
    }
}

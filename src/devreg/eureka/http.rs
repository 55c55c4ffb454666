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

use super::model::{
    self, AppView, Record, Status, application_json, applications_json, instance_json,
    parse_register_body,
};
use super::state::RenewOutcome;
use super::{RecordedRequest, Server};

/// Largest request body read (Eureka bodies are a few KiB).
const MAX_BODY_BYTES: usize = 1024 * 1024;
/// The header peers set on replicated calls (`PeerEurekaNode.HEADER_REPLICATION`).
const REPLICATION_HEADER: &str = "x-netflix-discovery-replication";
const CONTENT_TYPE_JSON: &str = "application/json";
const CONTENT_TYPE_TEXT: &str = "text/plain";

/// `versions__delta` of a full `/apps` read (always 1).
const FULL_VERSION: i64 = 1;
/// `versions__delta` of VIP reads (a fresh `Applications`).
const VIP_VERSION: i64 = -1;

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

    /// `Accept` contains `json` (§1.2.2); otherwise Eureka answers XML.
    fn wants_json(&self) -> bool {
        self.header("accept").to_ascii_lowercase().contains("json")
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

/// A body in the negotiated format.
fn payload(status: StatusCode, json: bool, json_body: String) -> Response {
    // Phase 1 answers JSON whatever the Accept header (XML comes with the XML writer).
    let _ = json;
    let mut resp = (status, json_body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(CONTENT_TYPE_JSON),
    );
    resp
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
        ("GET", ["apps"]) => full_apps(ctx),
        ("GET", ["apps", "delta"]) => delta(ctx),
        ("GET", ["apps", app]) => get_app(ctx, &app.to_uppercase()),
        ("POST", ["apps", app]) => register(ctx, &app.to_uppercase()),
        ("GET", ["apps", app, id]) => get_instance(ctx, &app.to_uppercase(), id),
        ("PUT", ["apps", app, id]) => renew(ctx, &app.to_uppercase(), id),
        ("DELETE", ["apps", app, id]) => cancel(ctx, &app.to_uppercase(), id),
        ("PUT", ["apps", app, id, "status"]) => set_status(ctx, &app.to_uppercase(), id),
        ("DELETE", ["apps", app, id, "status"]) => delete_status(ctx, &app.to_uppercase(), id),
        ("PUT", ["apps", app, id, "metadata"]) => metadata(ctx, &app.to_uppercase(), id),
        ("GET", ["instances", id]) => by_id(ctx, id),
        ("GET", ["vips", vip]) => vips(ctx, vip, false),
        ("GET", ["svips", vip]) => vips(ctx, vip, true),
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
    let inst = match parse_register_body(ctx.body, reg.clock.now_ms()) {
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
        RenewOutcome::Conflict(record) => payload(
            StatusCode::CONFLICT,
            ctx.wants_json(),
            instance_json(&record),
        ),
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
    payload(StatusCode::OK, ctx.wants_json(), instance_json(r))
}

/// `GET /apps`: every app with an instance, every status.
fn full_apps(ctx: &Ctx<'_>) -> Response {
    let body = ctx.server.registry.with_apps(
        |_| true,
        |apps, hash| applications_json(FULL_VERSION, hash, apps),
    );
    payload(StatusCode::OK, ctx.wants_json(), body)
}

/// `GET /apps/delta`.
fn delta(ctx: &Ctx<'_>) -> Response {
    let body = ctx
        .server
        .registry
        .with_delta(|version, apps, hash| applications_json(version, hash, apps));
    payload(StatusCode::OK, ctx.wants_json(), body)
}

/// `GET /apps/{APP}`: 404 when unknown or empty.
fn get_app(ctx: &Ctx<'_>, app: &str) -> Response {
    match ctx
        .server
        .registry
        .with_app(app, |view: &AppView<'_>| application_json(view))
    {
        Some(body) => payload(StatusCode::OK, ctx.wants_json(), body),
        None => empty(StatusCode::NOT_FOUND),
    }
}

/// `GET /vips/{vip}` and `/svips/{svip}`: instances whose comma-separated (secure) VIP
/// address contains the name exactly; 200 with an empty list when none.
fn vips(ctx: &Ctx<'_>, vip: &str, secure: bool) -> Response {
    let matches = |r: &Record| {
        let addr = if secure {
            r.instance.secure_vip_address.as_deref()
        } else {
            r.instance.vip_address.as_deref()
        };
        addr.is_some_and(|a| a.split(',').any(|v| v == vip))
    };
    let body = ctx.server.registry.with_apps(matches, |apps, hash| {
        model::applications_json(VIP_VERSION, hash, apps)
    });
    payload(StatusCode::OK, ctx.wants_json(), body)
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

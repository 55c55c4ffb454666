//! HTTP plumbing: SC's route table, tenant resolution, body limits and response framing.
//!
//! One axum fallback handler ([`dispatch`]) matches every request against [`ROUTES`] the way
//! SC's router does (first match per method; an unknown path answers Go's `404 page not found`,
//! a known path with another method `405 Method Not Allowed` with an `Allow` header), resolves
//! the tenant (`X-Domain-Name` header + `{project}` path segment, both defaulting to
//! `default`), calls the handler and logs the exchange at `debug!`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::Serialize;
use tracing::debug;

use super::errors::ScError;
use super::state::Registry;
use super::{
    access, admin, auth, dependencies, discovery, govern, instances, schemas, services, tags, watch,
};

/// Default body limit (`max_body_bytes` of SC's `app.conf`).
pub const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;
/// Body limit of instance registration.
pub const INSTANCE_BODY_BYTES: usize = 5 * 1024;
/// Body limit of both properties PUTs.
pub const PROPERTIES_BODY_BYTES: usize = 3 * 1024;

const CONTENT_TYPE_JSON: &str = "application/json; charset=UTF-8";
const CONTENT_TYPE_TEXT: &str = "text/plain; charset=UTF-8";
/// Header carrying the HTTP status again (SC's `X-Response-Status`).
const RESPONSE_STATUS: &str = "x-response-status";
/// Revision header of find/list/get.
pub const RESOURCE_REVISION: &str = "x-resource-revision";

/// What a handler returns: a response, or an SC error written as SC does.
pub type Reply = Result<Response, ScError>;

/// The HTTP status of an SC code (`code / 1000`).
pub fn json_status(status: u16) -> StatusCode {
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

fn with_status_header(mut resp: Response) -> Response {
    let status = resp.status().as_u16().to_string();
    if let Ok(v) = HeaderValue::from_str(&status) {
        resp.headers_mut().insert(RESPONSE_STATUS, v);
    }
    resp
}

/// Compact JSON followed by a newline (SC writes bodies with `fmt.Fprintln`).
pub fn json_response(status: StatusCode, body: &impl Serialize) -> Response {
    let mut text = serde_json::to_string(body).unwrap_or_else(|_| "{}".to_owned());
    text.push('\n');
    with_status_header((status, [(header::CONTENT_TYPE, CONTENT_TYPE_JSON)], text).into_response())
}

/// `200` with a JSON object.
pub fn json_ok(body: &impl Serialize) -> Response {
    json_response(StatusCode::OK, body)
}

/// `200` with JSON and no trailing newline (`/version` uses `WriteJSON`).
pub fn json_ok_raw(body: &impl Serialize) -> Response {
    let text = serde_json::to_string(body).unwrap_or_else(|_| "{}".to_owned());
    with_status_header(
        (
            StatusCode::OK,
            [(header::CONTENT_TYPE, CONTENT_TYPE_JSON)],
            text,
        )
            .into_response(),
    )
}

/// `200` with an empty `text/plain` body: SC's answer to a successful write.
pub fn empty_ok() -> Response {
    with_status_header(
        (StatusCode::OK, [(header::CONTENT_TYPE, CONTENT_TYPE_TEXT)]).into_response(),
    )
}

/// Adds `X-Resource-Revision` to a response.
pub fn with_revision(mut resp: Response, rev: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(rev) {
        resp.headers_mut().insert(RESOURCE_REVISION, v);
    }
    resp
}

/// `304` with an empty body and the (unchanged) revision.
pub fn not_modified(rev: &str) -> Response {
    with_revision(
        with_status_header(StatusCode::NOT_MODIFIED.into_response()),
        rev,
    )
}

/// Reads a request body of at most `limit` bytes.
///
/// # Errors
/// `400001` with Go's `http: request body too large` past the limit.
pub async fn read_body(body: Body, limit: usize) -> Result<Vec<u8>, ScError> {
    let mut stream = body.into_data_stream();
    let mut buf = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ScError::invalid(e.to_string()))?;
        if buf.len() + chunk.len() > limit {
            return Err(ScError::invalid("http: request body too large"));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf)
}

/// The request as handlers see it.
pub struct Ctx {
    pub reg: Arc<Registry>,
    /// `domain/project`: `X-Domain-Name` (or `default`) and the `{project}` segment (or
    /// `default`).
    pub tenant: String,
    /// Query parameters in order (Go's `Query().Get` takes the first).
    pub query: Vec<(String, String)>,
    pub headers: HeaderMap,
}

impl Ctx {
    /// First value of a query parameter, or `""`.
    pub fn q(&self, key: &str) -> &str {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    }

    /// A header as text, or `""`.
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The optional `X-ConsumerId` header.
    pub fn consumer_id(&self) -> &str {
        self.header("x-consumerid")
    }
}

/// Every route of the emulated API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RouteId {
    Version,
    Health,
    Existence,
    ListServices,
    CreateService,
    DeleteServices,
    GetService,
    DeleteService,
    ServiceProperties,
    AddDependencies,
    CreateDependencies,
    Providers,
    Consumers,
    Find,
    InstancesAction,
    ListInstances,
    GetInstance,
    RegisterInstance,
    Unregister,
    InstanceProperties,
    InstanceStatus,
    Heartbeat,
    Heartbeats,
    Watch,
    ListWatch,
    Dump,
    GovernServices,
    Alarms,
    ClearAlarms,
    Clusters,
    GetSchema,
    DeleteSchema,
    PutSchemas,
    ListSchemas,
    PutSchema,
    AddTags,
    UpdateTag,
    GetTags,
    DeleteTags,
    AddRules,
    GetRules,
    UpdateRule,
    DeleteRules,
}

/// SC 1.4.8's v4 routes (`server/rest/controller/v4/*.go`, `server/rest/admin`), in
/// registration order.
const ROUTES: &[(&str, &str, RouteId)] = &[
    ("GET", "/v4/:project/registry/version", RouteId::Version),
    ("GET", "/v4/:project/registry/health", RouteId::Health),
    ("GET", "/v4/:project/registry/existence", RouteId::Existence),
    (
        "GET",
        "/v4/:project/registry/microservices",
        RouteId::ListServices,
    ),
    (
        "GET",
        "/v4/:project/registry/microservices/:serviceId",
        RouteId::GetService,
    ),
    (
        "POST",
        "/v4/:project/registry/microservices",
        RouteId::CreateService,
    ),
    (
        "PUT",
        "/v4/:project/registry/microservices/:serviceId/properties",
        RouteId::ServiceProperties,
    ),
    (
        "DELETE",
        "/v4/:project/registry/microservices/:serviceId",
        RouteId::DeleteService,
    ),
    (
        "DELETE",
        "/v4/:project/registry/microservices",
        RouteId::DeleteServices,
    ),
    (
        "POST",
        "/v4/:project/registry/dependencies",
        RouteId::AddDependencies,
    ),
    (
        "PUT",
        "/v4/:project/registry/dependencies",
        RouteId::CreateDependencies,
    ),
    (
        "GET",
        "/v4/:project/registry/microservices/:consumerId/providers",
        RouteId::Providers,
    ),
    (
        "GET",
        "/v4/:project/registry/microservices/:providerId/consumers",
        RouteId::Consumers,
    ),
    ("GET", "/v4/:project/registry/instances", RouteId::Find),
    (
        "POST",
        "/v4/:project/registry/instances/action",
        RouteId::InstancesAction,
    ),
    (
        "GET",
        "/v4/:project/registry/microservices/:serviceId/instances",
        RouteId::ListInstances,
    ),
    (
        "GET",
        "/v4/:project/registry/microservices/:serviceId/instances/:instanceId",
        RouteId::GetInstance,
    ),
    (
        "POST",
        "/v4/:project/registry/microservices/:serviceId/instances",
        RouteId::RegisterInstance,
    ),
    (
        "DELETE",
        "/v4/:project/registry/microservices/:serviceId/instances/:instanceId",
        RouteId::Unregister,
    ),
    (
        "PUT",
        "/v4/:project/registry/microservices/:serviceId/instances/:instanceId/properties",
        RouteId::InstanceProperties,
    ),
    (
        "PUT",
        "/v4/:project/registry/microservices/:serviceId/instances/:instanceId/status",
        RouteId::InstanceStatus,
    ),
    (
        "PUT",
        "/v4/:project/registry/microservices/:serviceId/instances/:instanceId/heartbeat",
        RouteId::Heartbeat,
    ),
    (
        "PUT",
        "/v4/:project/registry/heartbeats",
        RouteId::Heartbeats,
    ),
    (
        "GET",
        "/v4/:project/registry/microservices/:serviceId/watcher",
        RouteId::Watch,
    ),
    (
        "GET",
        "/v4/:project/registry/microservices/:serviceId/listwatcher",
        RouteId::ListWatch,
    ),
    (
        "GET",
        "/v4/:project/registry/microservices/:serviceId/schemas/:schemaId",
        RouteId::GetSchema,
    ),
    (
        "DELETE",
        "/v4/:project/registry/microservices/:serviceId/schemas/:schemaId",
        RouteId::DeleteSchema,
    ),
    (
        "POST",
        "/v4/:project/registry/microservices/:serviceId/schemas",
        RouteId::PutSchemas,
    ),
    (
        "GET",
        "/v4/:project/registry/microservices/:serviceId/schemas",
        RouteId::ListSchemas,
    ),
    (
        "PUT",
        "/v4/:project/registry/microservices/:serviceId/schemas/:schemaId",
        RouteId::PutSchema,
    ),
    (
        "POST",
        "/v4/:project/registry/microservices/:serviceId/tags",
        RouteId::AddTags,
    ),
    (
        "PUT",
        "/v4/:project/registry/microservices/:serviceId/tags/:key",
        RouteId::UpdateTag,
    ),
    (
        "GET",
        "/v4/:project/registry/microservices/:serviceId/tags",
        RouteId::GetTags,
    ),
    (
        "DELETE",
        "/v4/:project/registry/microservices/:serviceId/tags/:key",
        RouteId::DeleteTags,
    ),
    (
        "POST",
        "/v4/:project/registry/microservices/:serviceId/rules",
        RouteId::AddRules,
    ),
    (
        "GET",
        "/v4/:project/registry/microservices/:serviceId/rules",
        RouteId::GetRules,
    ),
    (
        "PUT",
        "/v4/:project/registry/microservices/:serviceId/rules/:rule_id",
        RouteId::UpdateRule,
    ),
    (
        "DELETE",
        "/v4/:project/registry/microservices/:serviceId/rules/:rule_id",
        RouteId::DeleteRules,
    ),
    (
        "GET",
        "/v4/:project/govern/microservices",
        RouteId::GovernServices,
    ),
    ("GET", "/v4/:project/admin/alarms", RouteId::Alarms),
    ("DELETE", "/v4/:project/admin/alarms", RouteId::ClearAlarms),
    ("GET", "/v4/:project/admin/dump", RouteId::Dump),
    ("GET", "/v4/:project/admin/clusters", RouteId::Clusters),
];

/// Matches `path` (already split) against a pattern; returns the captured segments.
fn match_pattern(pattern: &str, segments: &[&str]) -> Option<Vec<String>> {
    let parts: Vec<&str> = pattern.split('/').collect();
    if parts.len() != segments.len() {
        return None;
    }
    let mut captures = Vec::new();
    for (p, s) in parts.iter().zip(segments) {
        if p.starts_with(':') {
            captures.push((*s).to_owned());
        } else if p != s {
            return None;
        }
    }
    Some(captures)
}

/// Percent-decodes a path as Go's `URL.Path` is (invalid escapes are kept as they are).
fn decode_path(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (
                (bytes[i + 1] as char).to_digit(16),
                (bytes[i + 2] as char).to_digit(16),
            )
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn plain(status: StatusCode, text: &'static str) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        text,
    )
        .into_response()
}

/// The single axum handler: route, call, log.
pub async fn dispatch(State(reg): State<Arc<Registry>>, req: Request) -> Response {
    let method = req.method().clone();
    let path = decode_path(req.uri().path());
    let raw_query = req.uri().query().unwrap_or("").to_owned();
    let resp = route(reg, req, &method, &path, &raw_query).await;
    debug!(
        method = %method,
        path = %path,
        query = %raw_query,
        status = resp.status().as_u16(),
        "dev registry request"
    );
    resp
}

async fn route(
    reg: Arc<Registry>,
    req: Request,
    method: &Method,
    path: &str,
    raw_query: &str,
) -> Response {
    // SC 2.x registers its login route only with RBAC on.
    if reg.config.rbac.is_some() && method == Method::POST && path == auth::TOKEN_PATH {
        let reply = auth::login(&reg, req.into_body()).await;
        return reply.unwrap_or_else(IntoResponse::into_response);
    }
    let segments: Vec<&str> = path.split('/').collect();
    let found = ROUTES.iter().find_map(|(m, pattern, id)| {
        (*m == method.as_str())
            .then(|| match_pattern(pattern, &segments).map(|c| (*id, c)))
            .flatten()
    });
    let Some((id, captures)) = found else {
        let mut allowed: Vec<&str> = ROUTES
            .iter()
            .filter(|(m, pattern, _)| {
                *m != method.as_str() && match_pattern(pattern, &segments).is_some()
            })
            .map(|(m, _, _)| *m)
            .collect();
        allowed.dedup();
        if allowed.is_empty() {
            return plain(StatusCode::NOT_FOUND, "404 page not found\n");
        }
        let mut resp = plain(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed\n");
        if let Ok(v) = HeaderValue::from_str(&allowed.join(", ")) {
            resp.headers_mut().insert(header::ALLOW, v);
        }
        return resp;
    };
    // RBAC runs after routing (an unknown path is still a plain 404); version and health
    // are SC's white list.
    if reg.config.rbac.is_some()
        && !matches!(id, RouteId::Version | RouteId::Health)
        && let Err(e) = auth::check(&reg, req.headers())
    {
        return e.into_response();
    }
    let (mut parts, body) = req.into_parts();
    let domain = parts
        .headers
        .get("x-domain-name")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .unwrap_or("default")
        .to_owned();
    let project = captures
        .first()
        .filter(|p| !p.is_empty())
        .cloned()
        .unwrap_or_else(|| "default".to_owned());
    let ctx = Ctx {
        reg,
        tenant: format!("{domain}/{project}"),
        query: url::form_urlencoded::parse(raw_query.as_bytes())
            .into_owned()
            .collect(),
        headers: parts.headers.clone(),
    };
    let arg = |i: usize| captures.get(i).cloned().unwrap_or_default();
    let reply: Reply = match id {
        RouteId::Version => Ok(admin::version(&ctx)),
        RouteId::Health => admin::health(&ctx),
        RouteId::Dump => admin::dump(&ctx),
        RouteId::GovernServices => govern::list(&ctx),
        RouteId::Alarms => Ok(json_ok(&serde_json::json!({}))),
        RouteId::ClearAlarms => Ok(empty_ok()),
        RouteId::Clusters => Ok(admin::clusters(&ctx)),
        RouteId::Existence => services::existence(&ctx),
        RouteId::ListServices => services::list(&ctx),
        RouteId::GetService => services::get(&ctx, &arg(1)),
        RouteId::CreateService => services::create(&ctx, body).await,
        RouteId::ServiceProperties => services::update_properties(&ctx, &arg(1), body).await,
        RouteId::DeleteService => services::delete(&ctx, &arg(1)).await,
        RouteId::DeleteServices => services::delete_batch(&ctx, body).await,
        RouteId::AddDependencies => dependencies::put_or_post(&ctx, body, false).await,
        RouteId::CreateDependencies => dependencies::put_or_post(&ctx, body, true).await,
        RouteId::Providers => dependencies::providers(&ctx, &arg(1)),
        RouteId::Consumers => dependencies::consumers(&ctx, &arg(1)),
        RouteId::Find => discovery::find(&ctx).await,
        RouteId::InstancesAction => discovery::action(&ctx, body).await,
        RouteId::ListInstances => discovery::list(&ctx, &arg(1)),
        RouteId::GetInstance => discovery::get_one(&ctx, &arg(1), &arg(2)),
        RouteId::RegisterInstance => instances::register(&ctx, &arg(1), body).await,
        RouteId::Unregister => instances::unregister(&ctx, &arg(1), &arg(2)),
        RouteId::InstanceProperties => {
            instances::update_properties(&ctx, &arg(1), &arg(2), body).await
        }
        RouteId::InstanceStatus => instances::update_status(&ctx, &arg(1), &arg(2)),
        RouteId::Heartbeat => instances::heartbeat(&ctx, &arg(1), &arg(2)),
        RouteId::Heartbeats => instances::heartbeats(&ctx, body).await,
        RouteId::GetSchema => schemas::get(&ctx, &arg(1), &arg(2)),
        RouteId::DeleteSchema => schemas::delete(&ctx, &arg(1), &arg(2)),
        RouteId::PutSchemas => schemas::put_all(&ctx, &arg(1), body).await,
        RouteId::ListSchemas => schemas::list(&ctx, &arg(1)),
        RouteId::PutSchema => schemas::put_one(&ctx, &arg(1), &arg(2), body).await,
        RouteId::AddTags => tags::add(&ctx, &arg(1), body).await,
        RouteId::UpdateTag => tags::update(&ctx, &arg(1), &arg(2)),
        RouteId::GetTags => tags::get(&ctx, &arg(1)),
        RouteId::DeleteTags => tags::delete(&ctx, &arg(1), &arg(2)),
        RouteId::AddRules => access::add(&ctx, &arg(1), body).await,
        RouteId::GetRules => access::get(&ctx, &arg(1)),
        RouteId::UpdateRule => access::update(&ctx, &arg(1), &arg(2), body).await,
        RouteId::DeleteRules => access::delete(&ctx, &arg(1), &arg(2)),
        RouteId::Watch | RouteId::ListWatch => {
            let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
                Ok(u) => u,
                Err(rejection) => return rejection.into_response(),
            };
            Ok(watch::upgrade(
                ctx,
                arg(1),
                id == RouteId::ListWatch,
                upgrade,
            ))
        }
    };
    reply.unwrap_or_else(IntoResponse::into_response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_and_paths() {
        let segs: Vec<&str> = "/v4/p/registry/microservices/s1".split('/').collect();
        assert_eq!(
            match_pattern("/v4/:project/registry/microservices/:serviceId", &segs),
            Some(vec!["p".to_owned(), "s1".to_owned()])
        );
        assert_eq!(
            match_pattern("/v4/:project/registry/microservices", &segs),
            None
        );
        assert_eq!(decode_path("/a%2Fb%zz"), "/a/b%zz");
    }
}

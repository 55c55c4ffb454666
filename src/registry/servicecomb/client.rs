//! The HTTP client of the ServiceComb adapter: one SC reached through one or more addresses.
//!
//! Owns the reqwest client, the choice of address (fail over on connection failures and
//! timeouts, fail back to the preferred first address after a back-off), the tenant headers
//! and paths (`X-Domain-Name`, `/v4/<project>/…`), the response size bound and the mapping
//! of SC's answers to [`RegistryError`] (reference §1.3/§1.4). Talks to SC only; it never
//! sends `X-ConsumerId` (reference §3.5.3: it would make SC record dependency rules).

use std::time::Duration;

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use reqwest::{Method, StatusCode};
use tokio::time::Instant;
use tracing::{debug, warn};
use url::Url;

use super::auth::{Auth, Token};
use super::metrics::ServiceCombMetrics;
use super::wire::WireError;
use crate::registry::route::AddressRoute;
use crate::registry::tls::RegistryTls;
use crate::registry::{Refusal, RegistryError, Tenant};

/// SC: the service does not exist.
pub(super) const SERVICE_NOT_EXIST: u32 = 400012;
/// SC: the instance does not exist.
pub(super) const INSTANCE_NOT_EXIST: u32 = 400017;
/// SC: a service with this id or key already exists.
pub(super) const SERVICE_ALREADY_EXISTS: u32 = 400010;
/// SC: a parameter is invalid; also a body over a route's cap (`maxbody`: 3 KiB for the
/// properties PUTs), with Go's `http: request body too large` as the detail.
const INVALID_PARAMS: u32 = 400001;
/// SC: the tenant's quota of services, instances, schemas or tags is used up.
const NOT_ENOUGH_QUOTA: u32 = 400100;
/// SC: the server is unhealthy (`/health`).
pub(super) const UNHEALTHY: u32 = 400002;

/// The header SC reads the domain (first half of the tenant) from.
const DOMAIN_HEADER: &str = "x-domain-name";

/// Which family of routes a call goes to: `/v4/<project>/registry/…`, `…/admin/…` or
/// `…/govern/…`.
#[derive(Debug, Clone, Copy)]
pub(super) enum Api {
    Registry,
    Admin,
    /// `/v4/<project>/govern/…`: SC's governance (UI) routes.
    Govern,
    /// `POST /v4/token` (SC 2.x RBAC login): no project, no token.
    Login,
}

impl Api {
    fn segment(self) -> &'static str {
        match self {
            Api::Registry => "registry",
            Api::Admin => "admin",
            Api::Govern => "govern",
            Api::Login => "token",
        }
    }
}

/// One call to SC, independent of the address it goes to.
pub(super) struct Request<'a> {
    /// Operation label for logs and metrics (`register`, `feed_poll`, …).
    pub op: &'static str,
    pub method: Method,
    pub tenant: &'a Tenant,
    pub api: Api,
    /// Path segments after `/v4/<project>/<api>/`; each is percent-encoded.
    pub path: &'a [&'a str],
    pub query: &'a [(&'a str, &'a str)],
    /// A JSON body, if any.
    pub body: Option<Vec<u8>>,
}

impl<'a> Request<'a> {
    /// A request without query or body.
    pub fn new(
        op: &'static str,
        method: Method,
        tenant: &'a Tenant,
        path: &'a [&'a str],
    ) -> Request<'a> {
        Request {
            op,
            method,
            tenant,
            api: Api::Registry,
            path,
            query: &[],
            body: None,
        }
    }

    pub fn query(mut self, query: &'a [(&'a str, &'a str)]) -> Request<'a> {
        self.query = query;
        self
    }

    pub fn json(mut self, body: Vec<u8>) -> Request<'a> {
        self.body = Some(body);
        self
    }

    pub fn admin(mut self) -> Request<'a> {
        self.api = Api::Admin;
        self
    }

    pub fn govern(mut self) -> Request<'a> {
        self.api = Api::Govern;
        self
    }
}

/// A failed call: the error for the caller and, when SC sent an error body, its code, so
/// that operations can act on codes (`400010`, `400017`) before mapping.
#[derive(Debug)]
pub(super) struct Fault {
    pub code: Option<u32>,
    pub error: RegistryError,
    /// SC answered `401`: the token is missing, expired or revoked (SC 2.x RBAC).
    pub unauthorized: bool,
}

impl Fault {
    pub(super) fn new(error: RegistryError) -> Fault {
        Fault {
            code: None,
            error,
            unauthorized: false,
        }
    }

    pub fn is(&self, code: u32) -> bool {
        self.code == Some(code)
    }
}

impl From<Fault> for RegistryError {
    fn from(fault: Fault) -> RegistryError {
        fault.error
    }
}

/// What went wrong with one attempt on one address.
enum AttemptError {
    /// The address could not be reached or did not answer in time: try the next one.
    Unreachable(String),
    /// The address answered; no other address would answer differently.
    Answered(Fault),
}

/// The client. One per adapter; cheap to share behind an `Arc`.
pub(super) struct ScClient {
    http: reqwest::Client,
    /// Addresses of the same SC, preferred first.
    addresses: Vec<Url>,
    /// Bound of one attempt: connect, send, and read the whole answer.
    timeout: Duration,
    /// Answers larger than this are refused as [`RegistryError::Protocol`].
    max_response_bytes: usize,
    /// Which address calls start with.
    route: AddressRoute,
    metrics: ServiceCombMetrics,
    /// The login and token, when SC's access control is on.
    auth: Option<Auth>,
}

impl ScClient {
    /// # Errors
    /// [`RegistryError::Invalid`] when an address is not an absolute `http(s)` URL or the
    /// HTTP client cannot be built.
    pub fn new(
        addresses: Vec<Url>,
        timeout: Duration,
        failback_after: Duration,
        max_response_bytes: usize,
        metrics: ServiceCombMetrics,
        auth: Option<Auth>,
        tls: &RegistryTls,
    ) -> Result<ScClient, RegistryError> {
        if addresses.is_empty() {
            return Err(RegistryError::Invalid(
                "registry.servicecomb.addresses is empty".into(),
            ));
        }
        for address in &addresses {
            let usable = matches!(address.scheme(), "http" | "https")
                && address.has_host()
                && !address.cannot_be_a_base();
            if !usable {
                return Err(RegistryError::Invalid(format!(
                    "registry.servicecomb.addresses: {address} is not an http(s) URL"
                )));
            }
        }
        let builder = reqwest::Client::builder()
            .connect_timeout(timeout)
            .pool_max_idle_per_host(8);
        let http = tls
            .apply(builder)
            .map_err(|e| RegistryError::Invalid(format!("cannot set up the registry's TLS: {e}")))?
            .build()
            .map_err(|e| RegistryError::Invalid(format!("cannot build the HTTP client: {e}")))?;
        let route = AddressRoute::new(addresses.len(), failback_after);
        Ok(ScClient {
            http,
            addresses,
            timeout,
            max_response_bytes,
            route,
            metrics,
            auth,
        })
    }

    /// The address the next call will start with.
    pub fn active_address(&self) -> Url {
        let index = self.start_index(Instant::now());
        self.addresses[index].clone()
    }

    /// Every configured address, preferred first.
    pub fn addresses(&self) -> &[Url] {
        &self.addresses
    }

    /// Sends `request`, moving through the addresses on connection failures and timeouts,
    /// and returns the body of a 2xx answer. With access control on, the call carries the
    /// current token; a `401` is answered by exactly one new login and one retry.
    ///
    /// # Errors
    /// A [`Fault`] carrying SC's error code when SC answered with an error body.
    pub async fn send(&self, request: Request<'_>) -> Result<Vec<u8>, Fault> {
        let request = &request;
        self.authorized(request, |token| async move {
            self.send_with(request, token.as_ref()).await
        })
        .await
    }

    /// Runs `call` with the current token (none without access control); a `401` is
    /// answered by exactly one new login and one more `call`, then by an error naming the
    /// account.
    async fn authorized<T, F, Fut>(&self, request: &Request<'_>, call: F) -> Result<T, Fault>
    where
        F: Fn(Option<Token>) -> Fut,
        Fut: Future<Output = Result<T, Fault>>,
    {
        let Some(auth) = &self.auth else {
            return call(None).await;
        };
        let token = auth.token(self, Instant::now()).await?;
        match call(Some(token.clone())).await {
            Err(fault) if fault.unauthorized => {
                let fresh = auth.renew(self, &token, Instant::now()).await?;
                match call(Some(fresh)).await {
                    Err(fault) if fault.unauthorized => Err(Fault {
                        error: RegistryError::Unavailable(format!(
                            "{}: the registry refused a fresh token of account {:?} ({}); \
                             check the account's roles",
                            request.op,
                            auth.user(),
                            fault.error
                        )),
                        ..fault
                    }),
                    other => other,
                }
            }
            other => other,
        }
    }

    /// [`ScClient::send`] with one token (or none), across the addresses.
    pub(super) async fn send_with(
        &self,
        request: &Request<'_>,
        token: Option<&Token>,
    ) -> Result<Vec<u8>, Fault> {
        self.across_addresses(request, |url, domain| {
            self.attempt(request, url, domain, token)
        })
        .await
    }

    /// Runs `attempt` on the addresses, preferred first, until one answers: a 2xx answer or
    /// SC's error body ends the round, an unreachable address is noted and left for the
    /// next. Counts the outcome once.
    async fn across_addresses<T, F, Fut>(
        &self,
        request: &Request<'_>,
        attempt: F,
    ) -> Result<T, Fault>
    where
        F: Fn(Url, HeaderValue) -> Fut,
        Fut: Future<Output = Result<T, AttemptError>>,
    {
        let domain = HeaderValue::from_str(&request.tenant.domain).map_err(|_| {
            Fault::new(RegistryError::Invalid(format!(
                "domain {:?} is not a valid header value",
                request.tenant.domain
            )))
        })?;
        let count = self.addresses.len();
        let start = self.start_index(Instant::now());
        let mut last = String::new();
        for step in 0..count {
            let index = (start + step) % count;
            let url = self.url(index, request).map_err(Fault::new)?;
            match attempt(url, domain.clone()).await {
                Ok(answer) => {
                    self.note_success(index);
                    self.metrics.count_request(request.op, "ok");
                    return Ok(answer);
                }
                Err(AttemptError::Answered(fault)) => {
                    self.note_success(index);
                    self.metrics.count_request(request.op, fault.error.kind());
                    return Err(fault);
                }
                Err(AttemptError::Unreachable(reason)) => {
                    let address = &self.addresses[index];
                    // Leaving the preferred address is news; the rest of a failing round is not.
                    if index == 0 {
                        warn!(op = request.op, %address, %reason, "registry address failed");
                    } else {
                        debug!(op = request.op, %address, %reason, "registry address failed");
                    }
                    self.note_failure(index, Instant::now());
                    last = format!("{address}: {reason}");
                }
            }
        }
        let error = RegistryError::Unavailable(format!(
            "{}: no registry address answered (last {last})",
            request.op
        ));
        self.metrics.count_request(request.op, error.kind());
        Err(Fault::new(error))
    }

    fn url(&self, index: usize, request: &Request<'_>) -> Result<Url, RegistryError> {
        let mut url = self.addresses[index].clone();
        {
            let mut segments = url.path_segments_mut().map_err(|_| {
                RegistryError::Invalid(format!("{} cannot take a path", self.addresses[index]))
            })?;
            segments.pop_if_empty();
            segments.push("v4");
            if !matches!(request.api, Api::Login) {
                segments.push(&request.tenant.project);
            }
            segments.push(request.api.segment());
            segments.extend(request.path);
        }
        url.set_query(None);
        if !request.query.is_empty() {
            url.query_pairs_mut().extend_pairs(request.query);
        }
        Ok(url)
    }

    /// One attempt on one address, bounded by `timeout` as a whole.
    async fn attempt(
        &self,
        request: &Request<'_>,
        url: Url,
        domain: HeaderValue,
        token: Option<&Token>,
    ) -> Result<Vec<u8>, AttemptError> {
        let builder = self.prepare(request, url, domain, token);
        let exchange = async {
            let response = builder
                .send()
                .await
                .map_err(|e| AttemptError::Unreachable(describe(&e)))?;
            let status = response.status();
            let body = self.read_body(request.op, response).await?;
            Ok((status, body))
        };
        let (status, body) = match tokio::time::timeout(self.timeout, exchange).await {
            Ok(result) => result?,
            Err(_) => {
                return Err(AttemptError::Unreachable(format!(
                    "no answer within {:?}",
                    self.timeout
                )));
            }
        };
        self.metrics.add_received(body.len());
        if status.is_success() {
            debug!(op = request.op, %status, bytes = body.len(), "registry call");
            return Ok(body);
        }
        Err(AttemptError::Answered(classify(request.op, status, &body)))
    }

    /// The HTTP request of one attempt: method, URL, tenant header and body.
    fn prepare(
        &self,
        request: &Request<'_>,
        url: Url,
        domain: HeaderValue,
        token: Option<&Token>,
    ) -> reqwest::RequestBuilder {
        let mut builder = self
            .http
            .request(request.method.clone(), url)
            .header(DOMAIN_HEADER, domain);
        if let Some(token) = token {
            builder = builder.header(AUTHORIZATION, token.header());
        }
        if let Some(body) = &request.body {
            self.metrics.add_sent(body.len());
            builder = builder
                .header(CONTENT_TYPE, "application/json")
                .body(body.clone());
        }
        builder
    }

    /// Sends `request` like [`ScClient::send`], but returns a 2xx answer as soon as its
    /// headers arrive, waiting up to `first_byte` for them instead of the per-call `timeout`:
    /// the caller reads the body as a stream under deadlines of its own (the dump,
    /// `dump.rs`), and counts its bytes with [`ScClient::note_received`]. An address that
    /// does not answer within `first_byte` is left for the next one; error answers are read
    /// and mapped as [`ScClient::send`] does.
    ///
    /// # Errors
    /// As [`ScClient::send`].
    pub async fn open(
        &self,
        request: Request<'_>,
        first_byte: Duration,
    ) -> Result<reqwest::Response, Fault> {
        let request = &request;
        self.authorized(request, |token| async move {
            self.across_addresses(request, |url, domain| {
                self.open_attempt(request, url, domain, token.as_ref(), first_byte)
            })
            .await
        })
        .await
    }

    /// One attempt of [`ScClient::open`] on one address: the response once its headers
    /// arrive (within `first_byte`) for a 2xx, SC's error body read and mapped otherwise.
    async fn open_attempt(
        &self,
        request: &Request<'_>,
        url: Url,
        domain: HeaderValue,
        token: Option<&Token>,
        first_byte: Duration,
    ) -> Result<reqwest::Response, AttemptError> {
        let sent = self.prepare(request, url, domain, token).send();
        let response = match tokio::time::timeout(first_byte, sent).await {
            Ok(Ok(response)) => response,
            Ok(Err(e)) => return Err(AttemptError::Unreachable(describe(&e))),
            Err(_) => {
                return Err(AttemptError::Unreachable(format!(
                    "no answer within {first_byte:?}"
                )));
            }
        };
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        match tokio::time::timeout(self.timeout, self.read_body(request.op, response)).await {
            Ok(Ok(body)) => {
                self.metrics.add_received(body.len());
                Err(AttemptError::Answered(classify(request.op, status, &body)))
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(AttemptError::Unreachable(format!(
                "no error body within {:?}",
                self.timeout
            ))),
        }
    }

    /// Counts the bytes of a body read by the caller of [`ScClient::open`].
    pub fn note_received(&self, bytes: usize) {
        self.metrics.add_received(bytes);
    }

    /// Reads the body up to `max_response_bytes`.
    async fn read_body(
        &self,
        op: &str,
        mut response: reqwest::Response,
    ) -> Result<Vec<u8>, AttemptError> {
        let too_large = || {
            AttemptError::Answered(Fault::new(RegistryError::Protocol(format!(
                "{op}: answer larger than {} bytes",
                self.max_response_bytes
            ))))
        };
        let announced = response.content_length().unwrap_or(0);
        if announced > self.max_response_bytes as u64 {
            return Err(too_large());
        }
        let mut body = Vec::with_capacity(usize::try_from(announced).unwrap_or(0));
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| AttemptError::Unreachable(describe(&e)))?
        {
            if body.len() + chunk.len() > self.max_response_bytes {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    fn start_index(&self, now: Instant) -> usize {
        self.route.start(now)
    }

    fn note_success(&self, index: usize) {
        self.route.succeeded(index);
    }

    fn note_failure(&self, index: usize, now: Instant) {
        if self.route.failed(index, now) {
            self.metrics.count_failover();
        }
    }
}

/// A reqwest error with its causes (the top level alone says little: "error sending request").
fn describe(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Maps a non-2xx answer: SC's error code when the body has one (reference §1.3, §1.4),
/// else the status class.
fn classify(op: &str, status: StatusCode, body: &[u8]) -> Fault {
    let parsed = serde_json::from_slice::<WireError>(body)
        .ok()
        .filter(|e| e.error_code.is_some());
    let unauthorized = status == StatusCode::UNAUTHORIZED;
    let Some(sc) = parsed else {
        let text = String::from_utf8_lossy(&body[..body.len().min(200)])
            .trim()
            .to_owned();
        let error = if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
            RegistryError::Unavailable(format!("{op}: status {status}: {text}"))
        } else {
            RegistryError::Protocol(format!(
                "{op}: unexpected status {status} without an SC error body: {text}"
            ))
        };
        return Fault {
            unauthorized,
            ..Fault::new(error)
        };
    };
    let code = sc.error_code.unwrap_or_default();
    let message = format!("{op}: {code} {} ({})", sc.error_message, sc.detail);
    let error = match code {
        SERVICE_NOT_EXIST | INSTANCE_NOT_EXIST => RegistryError::NotFound(message),
        _ if status.is_server_error() || code >= 500_000 => RegistryError::Unavailable(message),
        NOT_ENOUGH_QUOTA => refused(op, "quota", message),
        INVALID_PARAMS if sc.detail.contains("request body too large") => {
            refused(op, "too_large", message)
        }
        _ => RegistryError::Invalid(message),
    };
    Fault {
        code: Some(code),
        error,
        unauthorized,
    }
}

/// A refusal the importer reports by its reason.
fn refused(op: &str, reason: &'static str, detail: String) -> RegistryError {
    RegistryError::Refused(Refusal {
        field: op.to_owned(),
        reason,
        detail,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_follows_the_reference() {
        let body = br#"{"errorCode":"400012","errorMessage":"Micro-service does not exist"}"#;
        let fault = classify("t", StatusCode::BAD_REQUEST, body);
        assert!(fault.is(SERVICE_NOT_EXIST) && fault.error.is_not_found());
        let fault = classify(
            "t",
            StatusCode::BAD_REQUEST,
            br#"{"errorCode":400001,"errorMessage":"bad"}"#,
        );
        assert!(matches!(fault.error, RegistryError::Invalid(_)));
        let too_large = br#"{"errorCode":400001,"errorMessage":"Invalid parameter(s)","detail":"http: request body too large"}"#;
        let fault = classify("t", StatusCode::BAD_REQUEST, too_large);
        assert!(matches!(fault.error, RegistryError::Refused(r) if r.reason == "too_large"));
        let fault = classify("t", StatusCode::BAD_REQUEST, br#"{"errorCode":400100}"#);
        assert!(matches!(fault.error, RegistryError::Refused(r) if r.reason == "quota"));
        let fault = classify(
            "t",
            StatusCode::INTERNAL_SERVER_ERROR,
            br#"{"errorCode":"500011"}"#,
        );
        assert!(matches!(fault.error, RegistryError::Unavailable(_)));
        let fault = classify("t", StatusCode::BAD_GATEWAY, b"<html>");
        assert!(matches!(fault.error, RegistryError::Unavailable(_)));
        let fault = classify("t", StatusCode::NOT_FOUND, b"404 page not found");
        assert!(matches!(fault.error, RegistryError::Protocol(_)));
        let fault = classify("t", StatusCode::NOT_MODIFIED, b"");
        assert!(matches!(fault.error, RegistryError::Protocol(_)));
    }

    fn client(addresses: &[&str]) -> ScClient {
        let addresses = addresses.iter().map(|a| Url::parse(a).unwrap()).collect();
        ScClient::new(
            addresses,
            Duration::from_secs(1),
            Duration::from_secs(5),
            1024,
            ServiceCombMetrics::default(),
            None,
            &RegistryTls::default(),
        )
        .unwrap()
    }

    #[test]
    fn urls_carry_project_and_encoded_segments() {
        let c = client(&["http://sc:30100", "http://sc2:30100/prefix/"]);
        let tenant = Tenant::new("d", "my proj");
        let query = [("type", "query")];
        let request =
            Request::new("t", Method::GET, &tenant, &["microservices", "a/b?c"]).query(&query);
        assert_eq!(
            c.url(0, &request).unwrap().as_str(),
            "http://sc:30100/v4/my%20proj/registry/microservices/a%2Fb%3Fc?type=query"
        );
        assert_eq!(
            c.url(1, &request.admin()).unwrap().as_str(),
            "http://sc2:30100/prefix/v4/my%20proj/admin/microservices/a%2Fb%3Fc?type=query"
        );
    }

    #[test]
    fn addresses_are_validated() {
        let bad = ScClient::new(
            vec![Url::parse("mailto:x@y").unwrap()],
            Duration::from_secs(1),
            Duration::from_secs(1),
            1,
            ServiceCombMetrics::default(),
            None,
            &RegistryTls::default(),
        );
        assert!(matches!(bad, Err(RegistryError::Invalid(_))));
        let none = ScClient::new(
            Vec::new(),
            Duration::from_secs(1),
            Duration::from_secs(1),
            1,
            ServiceCombMetrics::default(),
            None,
            &RegistryTls::default(),
        );
        assert!(matches!(none, Err(RegistryError::Invalid(_))));
    }
}

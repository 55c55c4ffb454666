//! The HTTP client of the Eureka adapter: one Eureka cluster reached through one or more
//! base URLs (`http://host:8761/eureka`).
//!
//! JSON only (`Accept: application/json`: without it Eureka answers XML, reference §1.2),
//! one timeout per attempt, path segments percent-encoded (instance ids contain `:`), and a
//! move to the next address on a connection failure, a timeout or a 5xx answer, with a
//! return to the preferred first address after `failback_after`, as the ServiceComb
//! client does. Every other answer goes back to the operation, which reads its status: in
//! Eureka the status code *is* the answer (204 registered, 404 unknown, …).
//!
//! The client never sends `x-netflix-discovery-replication` (reference §3: with it, beats
//! are not forwarded to peer servers and stale stamps are answered with 409). It sends no
//! `Accept-Encoding` either, so Eureka never compresses (reqwest is built without gzip, and
//! a full read is a few MB at the sizes syncer targets; deltas are small).

use std::time::Duration;

use reqwest::header::{ACCEPT, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use tokio::time::Instant;
use tracing::{debug, warn};

use super::metrics::EurekaMetrics;
use crate::config::Credentials;
use crate::registry::RegistryError;
use crate::registry::route::AddressRoute;
use crate::registry::tls::RegistryTls;

/// One call, independent of the address it goes to.
pub(super) struct Request<'a> {
    /// Operation label for logs and metrics.
    pub op: &'static str,
    pub method: Method,
    /// Path segments after the base URL; each is percent-encoded.
    pub path: &'a [&'a str],
    pub query: &'a [(&'a str, &'a str)],
    pub body: Option<Vec<u8>>,
}

impl<'a> Request<'a> {
    pub fn new(op: &'static str, method: Method, path: &'a [&'a str]) -> Request<'a> {
        Request {
            op,
            method,
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
}

/// An answer from one address: its status and body, and which base URL gave it.
#[derive(Debug)]
pub(super) struct Answer {
    pub status: StatusCode,
    pub body: Vec<u8>,
    pub base: String,
}

/// The client. One per adapter.
pub(super) struct EurekaClient {
    http: reqwest::Client,
    /// Normalised base URLs (no trailing `/`), preferred first.
    bases: Vec<String>,
    timeout: Duration,
    max_response_bytes: usize,
    credentials: Option<Credentials>,
    /// Which address calls start with.
    route: AddressRoute,
    metrics: EurekaMetrics,
}

/// Percent-encodes one path segment: everything but RFC 3986's unreserved characters.
pub(super) fn encode_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// A reqwest error with its causes.
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

impl EurekaClient {
    /// # Errors
    /// [`RegistryError::Invalid`] when there is no address, an address is not an `http(s)`
    /// URL, or the HTTP client cannot be built.
    pub fn new(
        bases: Vec<String>,
        timeout: Duration,
        failback_after: Duration,
        max_response_bytes: usize,
        credentials: Option<Credentials>,
        metrics: EurekaMetrics,
        tls: &RegistryTls,
    ) -> Result<EurekaClient, RegistryError> {
        if bases.is_empty() {
            return Err(RegistryError::Invalid(
                "registry.eureka.addresses is empty".into(),
            ));
        }
        for base in &bases {
            let usable = url::Url::parse(base).is_ok_and(|u| {
                matches!(u.scheme(), "http" | "https") && u.has_host() && !u.cannot_be_a_base()
            });
            if !usable {
                return Err(RegistryError::Invalid(format!(
                    "registry.eureka.addresses: {base} is not an http(s) URL"
                )));
            }
        }
        let builder = reqwest::Client::builder()
            .connect_timeout(timeout)
            .pool_max_idle_per_host(32);
        let http = tls
            .apply(builder)
            .map_err(|e| RegistryError::Invalid(format!("cannot set up the registry's TLS: {e}")))?
            .build()
            .map_err(|e| RegistryError::Invalid(format!("cannot build the HTTP client: {e}")))?;
        let route = AddressRoute::new(bases.len(), failback_after);
        Ok(EurekaClient {
            http,
            bases,
            timeout,
            max_response_bytes,
            credentials,
            route,
            metrics,
        })
    }

    /// Every base URL, preferred first.
    pub fn bases(&self) -> &[String] {
        &self.bases
    }

    /// The base URL the next call starts with.
    pub fn active_base(&self) -> &str {
        &self.bases[self.start_index(Instant::now())]
    }

    /// The URL of `request` on base `base`.
    pub(super) fn url(base: &str, request: &Request<'_>) -> Result<url::Url, RegistryError> {
        let mut text = base.to_owned();
        for segment in request.path {
            text.push('/');
            text.push_str(&encode_segment(segment));
        }
        let mut url = url::Url::parse(&text)
            .map_err(|e| RegistryError::Invalid(format!("{text} is not a URL: {e}")))?;
        if !request.query.is_empty() {
            url.query_pairs_mut().extend_pairs(request.query);
        }
        Ok(url)
    }

    /// Sends `request`, moving through the addresses on connection failures, timeouts and
    /// 5xx answers, and returns the first other answer, whatever its status. Counts the
    /// call under `request.op` with `outcome` as given by `classify` of the answer.
    ///
    /// # Errors
    /// [`RegistryError::Unavailable`] when no address gave such an answer.
    pub async fn send(&self, request: &Request<'_>) -> Result<Answer, RegistryError> {
        let count = self.bases.len();
        let start = self.start_index(Instant::now());
        let mut last = String::new();
        for step in 0..count {
            let index = (start + step) % count;
            let base = &self.bases[index];
            match self.attempt(base, request).await {
                Ok(answer) => {
                    self.note_success(index);
                    let outcome = if answer.status.is_success() {
                        "ok"
                    } else if answer.status == StatusCode::NOT_FOUND {
                        "not_found"
                    } else {
                        "status"
                    };
                    self.metrics.count_request(request.op, outcome);
                    return Ok(answer);
                }
                Err(reason) => {
                    if index == 0 {
                        warn!(op = request.op, address = %base, %reason, "registry address failed");
                    } else {
                        debug!(op = request.op, address = %base, %reason, "registry address failed");
                    }
                    self.note_failure(index, Instant::now());
                    last = format!("{base}: {reason}");
                }
            }
        }
        self.metrics.count_request(request.op, "unavailable");
        Err(RegistryError::Unavailable(format!(
            "{}: no Eureka address answered (last {last})",
            request.op
        )))
    }

    /// One attempt on one address, bounded by `timeout` as a whole. `Err` means: try the
    /// next address.
    async fn attempt(&self, base: &str, request: &Request<'_>) -> Result<Answer, String> {
        let url = Self::url(base, request).map_err(|e| e.to_string())?;
        let mut builder = self
            .http
            .request(request.method.clone(), url)
            .header(ACCEPT, "application/json");
        if let Some(credentials) = &self.credentials {
            builder = builder.basic_auth(&credentials.user, Some(credentials.password.expose()));
        }
        if let Some(body) = &request.body {
            builder = builder
                .header(CONTENT_TYPE, "application/json")
                .body(body.clone());
        }
        let exchange = async {
            let mut response = builder.send().await.map_err(|e| describe(&e))?;
            let status = response.status();
            // Sized once from Content-Length when the server sends it (capped by the limit):
            // growing by doubling held up to twice a large answer (a 10 000-record delta,
            // ~8 MB) while it arrived.
            let expected = response
                .content_length()
                .and_then(|n| usize::try_from(n).ok())
                .unwrap_or(0)
                .min(self.max_response_bytes);
            let mut body = Vec::with_capacity(expected);
            while let Some(chunk) = response.chunk().await.map_err(|e| describe(&e))? {
                if body.len() + chunk.len() > self.max_response_bytes {
                    return Err(format!(
                        "answer larger than {} bytes",
                        self.max_response_bytes
                    ));
                }
                body.extend_from_slice(&chunk);
            }
            Ok((status, body))
        };
        let (status, body) = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| format!("no answer within {:?}", self.timeout))??;
        if status.is_server_error() {
            return Err(format!("status {status}: {}", super::wire::preview(&body)));
        }
        debug!(op = request.op, %status, bytes = body.len(), "registry call");
        Ok(Answer {
            status,
            body,
            base: base.to_owned(),
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_encoded_and_queries_appended() {
        let path = ["apps", "ORDERS", "host:orders:8080", "status"];
        let query = [("value", "OUT_OF_SERVICE")];
        let request = Request::new("t", Method::PUT, &path).query(&query);
        assert_eq!(
            EurekaClient::url("http://e:8761/eureka", &request)
                .expect("url")
                .as_str(),
            "http://e:8761/eureka/apps/ORDERS/host%3Aorders%3A8080/status?value=OUT_OF_SERVICE"
        );
        assert_eq!(encode_segment("a/b c?é"), "a%2Fb%20c%3F%C3%A9");
    }

    #[test]
    fn addresses_are_validated() {
        let build = |bases: Vec<String>| {
            EurekaClient::new(
                bases,
                Duration::from_secs(1),
                Duration::from_secs(1),
                1,
                None,
                EurekaMetrics::default(),
                &RegistryTls::default(),
            )
        };
        assert!(matches!(build(Vec::new()), Err(RegistryError::Invalid(_))));
        assert!(matches!(
            build(vec!["mailto:x@y".into()]),
            Err(RegistryError::Invalid(_))
        ));
        assert!(build(vec!["http://e:8761/eureka".into()]).is_ok());
    }
}

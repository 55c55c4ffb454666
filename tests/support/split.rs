//! An HTTP forwarder in front of a registry that can send the admin dump
//! (`GET /v4/{project}/admin/dump`) to another registry while every other call goes to the
//! main one: a Service Center cluster in which the node that answers the dump has a cache
//! that trails (it misses what the others already show), deterministically.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tokio::runtime::Runtime;
use tokio_util::sync::CancellationToken;

/// Largest request body forwarded.
const MAX_BODY: usize = 16 << 20;

struct Shared {
    client: reqwest::Client,
    main: SocketAddr,
    dump_from: SocketAddr,
    /// Whether dumps go to `dump_from`.
    lagging: AtomicBool,
    /// Dumps answered by `dump_from` so far.
    lagged_dumps: AtomicUsize,
}

/// A running forwarder; stops when dropped.
pub struct DumpSplit {
    addr: SocketAddr,
    shared: Arc<Shared>,
    token: CancellationToken,
}

impl DumpSplit {
    /// Listens on a free port of 127.0.0.1, forwarding to `main`; dumps go to `dump_from`
    /// while [`DumpSplit::set_lagging`] is on.
    pub fn start(rt: &Runtime, main: SocketAddr, dump_from: SocketAddr) -> DumpSplit {
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind the forwarder");
        let addr = listener.local_addr().expect("the forwarder's address");
        let shared = Arc::new(Shared {
            client: reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .expect("build an HTTP client"),
            main,
            dump_from,
            lagging: AtomicBool::new(false),
            lagged_dumps: AtomicUsize::new(0),
        });
        let token = CancellationToken::new();
        let app = Router::new().fallback(forward).with_state(shared.clone());
        let stop = token.clone();
        rt.spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
        });
        DumpSplit {
            addr,
            shared,
            token,
        }
    }

    /// `http://127.0.0.1:<port>`, the registry address to give the syncer.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Sends dumps to the other registry (`true`) or to the main one.
    pub fn set_lagging(&self, lagging: bool) {
        self.shared.lagging.store(lagging, Ordering::SeqCst);
    }

    /// Dumps the other registry answered so far.
    pub fn lagged_dumps(&self) -> usize {
        self.shared.lagged_dumps.load(Ordering::SeqCst)
    }
}

impl Drop for DumpSplit {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

async fn forward(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, MAX_BODY).await else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let is_dump =
        parts.method == axum::http::Method::GET && parts.uri.path().ends_with("/admin/dump");
    let lagging = is_dump && shared.lagging.load(Ordering::SeqCst);
    let upstream = if lagging {
        shared.dump_from
    } else {
        shared.main
    };
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let Ok(method) = reqwest::Method::from_bytes(parts.method.as_str().as_bytes()) else {
        return StatusCode::METHOD_NOT_ALLOWED.into_response();
    };
    let mut outgoing = shared
        .client
        .request(method, format!("http://{upstream}{path}"))
        .body(body.to_vec());
    for (name, value) in &parts.headers {
        if name != axum::http::header::HOST {
            outgoing = outgoing.header(name.as_str(), value.as_bytes());
        }
    }
    let Ok(answer) = outgoing.send().await else {
        return StatusCode::BAD_GATEWAY.into_response();
    };
    let status = answer.status().as_u16();
    let headers: Vec<(String, Vec<u8>)> = answer
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.as_bytes().to_vec()))
        .collect();
    let Ok(bytes) = answer.bytes().await else {
        return StatusCode::BAD_GATEWAY.into_response();
    };
    if lagging {
        shared.lagged_dumps.fetch_add(1, Ordering::SeqCst);
    }
    let mut response = Response::builder().status(status);
    for (name, value) in headers {
        if name != "content-length" && name != "transfer-encoding" {
            response = response.header(name, value);
        }
    }
    response
        .body(Body::from(bytes))
        .unwrap_or_else(|_| StatusCode::BAD_GATEWAY.into_response())
}

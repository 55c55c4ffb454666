//! A TCP forwarder in front of a registry that notes the request line of every HTTP/1.1
//! request it passes, with the moment it arrived. Giving each syncer process its own tap tells
//! which process wrote what, and when, without any change to the registry or the syncer.
//!
//! A request is noted when its request line has arrived and before it is forwarded, so the
//! note happens before the registry answers and before anything the caller does after the
//! answer.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use tokio_util::sync::CancellationToken;

/// Methods whose request lines are looked for.
const METHODS: [&[u8]; 4] = [b"GET /", b"POST /", b"PUT /", b"DELETE /"];
/// What ends a request line.
const LINE_END: &[u8] = b" HTTP/1.1\r\n";
/// A request line longer than this is not one.
const MAX_LINE: usize = 8192;

/// One request seen by a tap.
#[derive(Debug, Clone)]
pub struct Seen {
    pub at: Instant,
    pub method: String,
    pub path: String,
}

impl Seen {
    /// Whether the request changes the registry: anything but `GET` and the batch queries
    /// (`POST …/instances/action?type=query`), which only read.
    pub fn is_write(&self) -> bool {
        self.method != "GET" && !self.path.contains("/instances/action")
    }
}

/// A running tap; stops accepting when dropped.
pub struct HttpTap {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    token: CancellationToken,
}

impl HttpTap {
    /// Listens on a free port of 127.0.0.1 and forwards every connection to `upstream`.
    pub fn start(rt: &Runtime, upstream: SocketAddr) -> HttpTap {
        let listener = rt
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("bind the tap");
        let addr = listener.local_addr().expect("the tap's address");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let token = CancellationToken::new();
        let (log, stop) = (seen.clone(), token.clone());
        rt.spawn(async move {
            loop {
                let client = tokio::select! {
                    () = stop.cancelled() => return,
                    accepted = listener.accept() => match accepted {
                        Ok((client, _)) => client,
                        Err(_) => continue,
                    },
                };
                tokio::spawn(forward(client, upstream, log.clone(), stop.clone()));
            }
        });
        HttpTap { addr, seen, token }
    }

    /// `http://127.0.0.1:<port>`, the registry address to give the syncer.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request seen so far, in arrival order.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Drop for HttpTap {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

async fn forward(
    client: TcpStream,
    upstream: SocketAddr,
    log: Arc<Mutex<Vec<Seen>>>,
    stop: CancellationToken,
) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let (mut client_rx, mut client_tx) = client.into_split();
    let (mut server_rx, mut server_tx) = server.into_split();
    let up = async {
        let mut buf = vec![0u8; 16 * 1024];
        let mut pending = Vec::new();
        loop {
            let n = match client_rx.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let at = Instant::now();
            pending.extend_from_slice(&buf[..n]);
            let found = scan(&mut pending, at);
            if !found.is_empty() {
                log.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .extend(found);
            }
            if server_tx.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = server_tx.shutdown().await;
    };
    let down = async {
        let _ = tokio::io::copy(&mut server_rx, &mut client_tx).await;
        let _ = client_tx.shutdown().await;
    };
    tokio::select! {
        () = stop.cancelled() => {}
        _ = futures::future::join(up, down) => {}
    }
}

/// The complete request lines in `pending`; keeps what may still become one.
fn scan(pending: &mut Vec<u8>, at: Instant) -> Vec<Seen> {
    let mut found = Vec::new();
    loop {
        let start = METHODS.iter().filter_map(|m| find(pending, m)).min();
        let Some(start) = start else {
            // A method may be cut at the end of this read.
            let keep = pending.len().min(8);
            pending.drain(..pending.len() - keep);
            return found;
        };
        let Some(len) = find(&pending[start..], LINE_END) else {
            pending.drain(..start);
            if pending.len() > MAX_LINE {
                pending.clear();
            }
            return found;
        };
        let line = String::from_utf8_lossy(&pending[start..start + len]).into_owned();
        if let Some((method, path)) = line.split_once(' ') {
            found.push(Seen {
                at,
                method: method.to_owned(),
                path: path.to_owned(),
            });
        }
        pending.drain(..start + len + LINE_END.len());
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

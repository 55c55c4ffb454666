//! A TCP forwarder with faults switched on and off by the test: it can hold back what the
//! client sends (`up_stalled`: the bytes wait in the proxy, as on a blackholed link whose
//! connections stay open) and delay what the server answers (`down_delay`, order kept).
//! Put in front of etcd, it makes one member's lease renewals late or lost while etcd itself
//! and the other members see nothing wrong.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How often a stalled direction looks whether it may go on.
const STALL_POLL: Duration = Duration::from_millis(2);

/// The faults in force; read by every connection for every chunk.
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    /// Bytes from the client are held in the proxy (not dropped) while set.
    pub up_stalled: bool,
    /// Bytes from the server reach the client this much later.
    pub down_delay: Duration,
}

/// A running proxy; stops accepting and forwarding when dropped.
pub struct TcpProxy {
    addr: SocketAddr,
    faults: Arc<Mutex<Faults>>,
    token: CancellationToken,
}

impl TcpProxy {
    /// Listens on a free port of 127.0.0.1 and forwards every connection to `upstream`.
    /// Runs on the current tokio runtime.
    pub async fn start(upstream: SocketAddr) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let addr = listener.local_addr().expect("the proxy's address");
        let faults = Arc::new(Mutex::new(Faults::default()));
        let token = CancellationToken::new();
        let (shared, stop) = (faults.clone(), token.clone());
        tokio::spawn(async move {
            loop {
                let client = tokio::select! {
                    () = stop.cancelled() => return,
                    accepted = listener.accept() => match accepted {
                        Ok((client, _)) => client,
                        Err(_) => continue,
                    },
                };
                tokio::spawn(forward(client, upstream, shared.clone(), stop.clone()));
            }
        });
        TcpProxy {
            addr,
            faults,
            token,
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> url::Url {
        url::Url::parse(&format!("http://{}", self.addr)).expect("the proxy's URL")
    }

    /// Puts `faults` in force for every connection, open or future.
    pub fn set(&self, faults: Faults) {
        *self.faults.lock().unwrap_or_else(PoisonError::into_inner) = faults;
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

fn faults(shared: &Mutex<Faults>) -> Faults {
    *shared.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn forward(
    client: TcpStream,
    upstream: SocketAddr,
    shared: Arc<Mutex<Faults>>,
    stop: CancellationToken,
) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut client_rx, mut client_tx) = client.into_split();
    let (mut server_rx, mut server_tx) = server.into_split();
    let up = async {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match client_rx.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            while faults(&shared).up_stalled {
                tokio::time::sleep(STALL_POLL).await;
            }
            if server_tx.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = server_tx.shutdown().await;
    };
    // Reading and delivering apart, so a delay does not slow reading (order is kept).
    let queue: Mutex<VecDeque<(Instant, Vec<u8>)>> = Mutex::new(VecDeque::new());
    let queued = Notify::new();
    let read_down = async {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match server_rx.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let at = Instant::now() + faults(&shared).down_delay;
            queue
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push_back((at, buf[..n].to_vec()));
            queued.notify_one();
        }
    };
    let deliver_down = async {
        loop {
            let next = queue
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop_front();
            let Some((at, bytes)) = next else {
                queued.notified().await;
                continue;
            };
            tokio::time::sleep_until(at).await;
            if client_tx.write_all(&bytes).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        () = stop.cancelled() => {}
        _ = futures::future::join(up, read_down) => {}
        () = deliver_down => {}
    }
}

//! The fault proxies: every connection and datagram between data centres, and every call of
//! a syncer to its registry, passes through one, so the harness can make a link lossy, slow,
//! stalled or refusing, in one direction, where the kernel has no netem.
//!
//! - TCP (gRPC between syncers, registry HTTP): forwards both ways; `stall` holds the bytes
//!   (a link that blackholes but keeps connections open), `delay` delays what the server
//!   answers, `refuse` closes every connection at once (a registry restarting), `http_error`
//!   answers every request with `503` (a registry answering errors), `alternate` forwards to
//!   a second upstream (the registry's empty twin: a restart answering from an empty view).
//!   Switching to `refuse` or `http_error`, or between upstreams, closes the connections
//!   already open.
//! - UDP (gossip): a small NAT: each sender gets its own upstream socket, so a reply to the
//!   datagram's source (a gossip welcome) comes back through the proxy to the right sender.
//!   `loss` drops that share of datagrams (both ways), `delay` delays them.
//!
//! In loopback mode the proxies also enforce the cuts between data centres, by the sender's
//! address.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio_util::sync::CancellationToken;

use super::net::{Cuts, Net};

const STALL_POLL: Duration = Duration::from_millis(5);

/// The faults in force on one proxy.
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    pub stall: bool,
    pub delay: Duration,
    pub loss: f64,
    pub refuse: bool,
    pub http_error: bool,
    /// Forward to the alternate upstream (a registry restarting that serves an empty view
    /// while it loads its data).
    pub alternate: bool,
}

/// The switch of one proxy, shared with its connections.
pub struct Knob {
    faults: Mutex<Faults>,
    /// Bumped when open connections must close.
    epoch: AtomicU64,
    /// The data centre behind the proxy.
    dc: usize,
    /// Cuts to enforce (loopback mode), else `None`.
    cuts: Option<Arc<Cuts>>,
}

impl Knob {
    pub fn new(dc: usize, cuts: Option<Arc<Cuts>>) -> Arc<Knob> {
        Arc::new(Knob {
            faults: Mutex::new(Faults::default()),
            epoch: AtomicU64::new(0),
            dc,
            cuts,
        })
    }

    pub fn set(&self, faults: Faults) {
        let mut current = self.faults.lock().unwrap_or_else(PoisonError::into_inner);
        let closing = faults.refuse || faults.http_error || faults.alternate != current.alternate;
        *current = faults;
        drop(current);
        if closing {
            self.epoch.fetch_add(1, Ordering::SeqCst);
        }
    }

    pub fn get(&self) -> Faults {
        *self.faults.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether traffic between `peer` and the data centre behind the proxy is cut, in the
    /// direction `to_dc` (true: peer -> dc).
    fn cut(&self, peer: IpAddr, to_dc: bool) -> bool {
        let (Some(cuts), Some(other)) = (&self.cuts, Net::dc_of(peer)) else {
            return false;
        };
        if other == self.dc {
            return false;
        }
        if to_dc {
            cuts.is_cut(other, self.dc)
        } else {
            cuts.is_cut(self.dc, other)
        }
    }
}

/// Starts a TCP proxy on `listen` forwarding to `upstream`.
pub async fn tcp(
    listen: SocketAddr,
    upstream: SocketAddr,
    alternate: Option<SocketAddr>,
    knob: Arc<Knob>,
    stop: CancellationToken,
) -> Result<(), String> {
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| format!("bind the proxy on {listen}: {e}"))?;
    tokio::spawn(async move {
        loop {
            let (client, peer) = tokio::select! {
                () = stop.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(_) => continue,
                },
            };
            let knob = knob.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                tokio::select! {
                    () = stop.cancelled() => {}
                    () = connection(client, peer.ip(), upstream, alternate, knob) => {}
                }
            });
        }
    });
    Ok(())
}

async fn connection(
    client: TcpStream,
    peer: IpAddr,
    upstream: SocketAddr,
    alternate: Option<SocketAddr>,
    knob: Arc<Knob>,
) {
    let faults = knob.get();
    if faults.refuse {
        return;
    }
    if faults.http_error {
        answer_503(client).await;
        return;
    }
    let epoch = knob.epoch.load(Ordering::SeqCst);
    let upstream = match alternate {
        Some(alternate) if faults.alternate => alternate,
        _ => upstream,
    };
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let up = pump(client_read, server_write, knob.clone(), peer, true, epoch);
    let down = pump(server_read, client_write, knob, peer, false, epoch);
    tokio::select! {
        () = up => {}
        () = down => {}
    }
}

/// Reads requests and answers each with `503 Service Unavailable`, closing after the first.
async fn answer_503(mut client: TcpStream) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut seen = Vec::new();
    loop {
        match client.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
        if seen.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    let body = "{\"errorCode\":\"500003\",\"errorMessage\":\"Internal server error\",\"detail\":\"chaos: the registry answers errors\"}";
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = client.write_all(answer.as_bytes()).await;
    let _ = client.shutdown().await;
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    knob: Arc<Knob>,
    peer: IpAddr,
    upward: bool,
    epoch: u64,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        loop {
            if knob.epoch.load(Ordering::SeqCst) != epoch {
                return;
            }
            let faults = knob.get();
            if !(faults.stall || knob.cut(peer, true) || knob.cut(peer, false)) {
                if !upward && !faults.delay.is_zero() {
                    tokio::time::sleep(faults.delay).await;
                }
                break;
            }
            tokio::time::sleep(STALL_POLL).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// Starts a UDP proxy on `listen` forwarding to `upstream`.
pub async fn udp(
    listen: SocketAddr,
    upstream: SocketAddr,
    knob: Arc<Knob>,
    stop: CancellationToken,
) -> Result<(), String> {
    let front = Arc::new(
        UdpSocket::bind(listen)
            .await
            .map_err(|e| format!("bind the proxy on {listen}: {e}"))?,
    );
    let senders: Arc<Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>> = Arc::default();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        loop {
            let (n, from) = tokio::select! {
                () = stop.cancelled() => return,
                got = front.recv_from(&mut buf) => match got {
                    Ok(pair) => pair,
                    Err(_) => continue,
                },
            };
            if knob.cut(from.ip(), true) || lost(&knob) {
                continue;
            }
            let existing = senders
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&from)
                .cloned();
            let back = match existing {
                Some(socket) => socket,
                None => {
                    let Ok(socket) = UdpSocket::bind(SocketAddr::new(listen.ip(), 0)).await else {
                        continue;
                    };
                    let socket = Arc::new(socket);
                    senders
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .insert(from, socket.clone());
                    tokio::spawn(relay_back(
                        socket.clone(),
                        front.clone(),
                        from,
                        knob.clone(),
                        stop.clone(),
                    ));
                    socket
                }
            };
            send_later(back, buf[..n].to_vec(), upstream, knob.get().delay);
        }
    });
    Ok(())
}

/// Datagrams the upstream answers to a sender's own socket go back to that sender.
async fn relay_back(
    socket: Arc<UdpSocket>,
    front: Arc<UdpSocket>,
    sender: SocketAddr,
    knob: Arc<Knob>,
    stop: CancellationToken,
) {
    let mut buf = vec![0u8; 65_536];
    loop {
        let n = tokio::select! {
            () = stop.cancelled() => return,
            got = socket.recv_from(&mut buf) => match got {
                Ok((n, _)) => n,
                Err(_) => continue,
            },
        };
        if knob.cut(sender.ip(), false) || lost(&knob) {
            continue;
        }
        send_later(front.clone(), buf[..n].to_vec(), sender, knob.get().delay);
    }
}

fn lost(knob: &Knob) -> bool {
    let loss = knob.get().loss;
    loss > 0.0 && rand::rng().random_bool(loss.min(1.0))
}

fn send_later(socket: Arc<UdpSocket>, data: Vec<u8>, to: SocketAddr, delay: Duration) {
    if delay.is_zero() {
        let _ = socket.try_send_to(&data, to);
        return;
    }
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        let _ = socket.send_to(&data, to).await;
    });
}

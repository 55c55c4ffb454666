//! Watch websockets (reference §5.3): `…/microservices/{serviceId}/watcher` and
//! `…/listwatcher`, where `{serviceId}` is the watching consumer.
//!
//! The upgrade always succeeds; an empty or unknown consumer gets one text frame
//! (`request format invalid` / `service does not exist`) and the connection is dropped without
//! a close frame, as gorilla's `conn.Close()` does. Otherwise the socket is registered in the
//! store (in the same critical section that computes the listwatcher's `INIT` snapshot, so no
//! event is lost or repeated) and receives the provider events [`super::state::Store::notify`]
//! sends through a bounded queue. Keep-alive follows SC: a server Ping every 30 s until the
//! client pings itself, a 120 s read deadline renewed by Ping/Pong, data frames over 64 bytes
//! break the connection.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior, interval_at, sleep_until};
use tracing::debug;

use super::http::Ctx;
use super::model::{MicroServiceKey, WatchEvent};
use super::state::{Registry, WatcherSlot};

/// `HeartbeatInterval`: server Ping period.
const PING_INTERVAL: Duration = Duration::from_secs(30);
/// `ReadTimeout`: the client must ping or pong within this.
const READ_TIMEOUT: Duration = Duration::from_secs(120);
/// `ReadMaxBody`: larger client data frames break the connection.
const READ_LIMIT_BYTES: usize = 64;
/// `InstanceEventQueueSize`: events queued per watcher before they are dropped.
const QUEUE_CAPACITY: usize = 5000;

/// Answers the upgrade; the socket then runs as a task of the registry.
pub fn upgrade(ctx: Ctx, consumer_id: String, list: bool, upgrade: WebSocketUpgrade) -> Response {
    let reg = ctx.reg.clone();
    let tenant = ctx.tenant;
    upgrade
        .max_message_size(READ_LIMIT_BYTES)
        .on_upgrade(move |socket| {
            let tracker = reg.tracker.clone();
            tracker.track_future(run_socket(reg, tenant, consumer_id, list, socket))
        })
}

/// Removes the watcher from the store when the socket ends, however it ends.
struct WatcherGuard {
    reg: Arc<Registry>,
    id: u64,
}

impl Drop for WatcherGuard {
    fn drop(&mut self) {
        self.reg.lock().watchers.remove(&self.id);
    }
}

/// Registers the watcher and computes the `INIT` frames, or the error text to send.
fn subscribe(
    reg: &Arc<Registry>,
    tenant: &str,
    consumer_id: &str,
    list: bool,
) -> Result<(WatcherGuard, mpsc::Receiver<String>, Vec<String>), &'static str> {
    if consumer_id.is_empty() {
        return Err("request format invalid");
    }
    let mut store = reg.lock();
    let consumer = store
        .tenant(tenant)
        .and_then(|t| t.services.get(consumer_id))
        .map(|e| e.service.clone())
        .ok_or("service does not exist")?;
    let mut init = Vec::new();
    if list && let Some(t) = store.tenant(tenant) {
        // `QueryAllProvidersInstances`: read from the store, so deferred deletions are gone.
        for provider_id in t.providers_of(&consumer) {
            let Some(provider) = t.services.get(&provider_id) else {
                continue;
            };
            let p = &provider.service;
            let key = MicroServiceKey {
                environment: p.environment.clone(),
                app_id: p.app_id.clone(),
                service_name: p.service_name.clone(),
                version: p.version.clone(),
                ..Default::default()
            };
            for e in t.cached_instances(&provider_id).filter(|e| e.is_live()) {
                let event = WatchEvent {
                    action: "INIT",
                    key: &key,
                    instance: &e.instance,
                };
                if let Ok(text) = serde_json::to_string(&event) {
                    init.push(text);
                }
            }
        }
    }
    let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
    let id = store.next_watcher_id;
    store.next_watcher_id += 1;
    store.watchers.insert(
        id,
        WatcherSlot {
            tenant: tenant.to_owned(),
            consumer_id: consumer_id.to_owned(),
            tx,
        },
    );
    drop(store);
    Ok((
        WatcherGuard {
            reg: reg.clone(),
            id,
        },
        rx,
        init,
    ))
}

async fn run_socket(
    reg: Arc<Registry>,
    tenant: String,
    consumer_id: String,
    list: bool,
    mut socket: WebSocket,
) {
    let (guard, mut rx, init) = match subscribe(&reg, &tenant, &consumer_id, list) {
        Ok(subscribed) => subscribed,
        Err(text) => {
            let _ = socket.send(Message::Text(text.into())).await;
            return;
        }
    };
    debug!(watcher = guard.id, %tenant, consumer = %consumer_id, list, "watcher connected");
    for text in init {
        if socket.send(Message::Text(text.into())).await.is_err() {
            return;
        }
    }
    let mut ticker = interval_at(Instant::now() + PING_INTERVAL, PING_INTERVAL);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut client_pings = false;
    let mut read_deadline = Instant::now() + READ_TIMEOUT;
    loop {
        tokio::select! {
            biased;
            () = reg.shutdown.cancelled() => {
                let _ = socket.send(Message::Close(None)).await;
                break;
            }
            Some(text) = rx.recv() => {
                if socket.send(Message::Text(text.into())).await.is_err() {
                    break;
                }
            }
            _ = ticker.tick() => {
                let exists = reg
                    .lock()
                    .tenant(&tenant)
                    .is_some_and(|t| t.services.contains_key(&consumer_id));
                let frame = if !exists {
                    // Sic: SC's text.
                    Message::Text("Service does not exit.".into())
                } else if !client_pings {
                    Message::Ping(Default::default())
                } else {
                    continue;
                };
                if socket.send(frame).await.is_err() {
                    break;
                }
            }
            () = sleep_until(read_deadline) => break,
            incoming = socket.recv() => match incoming {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break,
                Some(Ok(Message::Ping(_))) => {
                    client_pings = true;
                    read_deadline = Instant::now() + READ_TIMEOUT;
                }
                Some(Ok(Message::Pong(_))) => read_deadline = Instant::now() + READ_TIMEOUT,
                // Data frames are read and ignored; they do not extend the deadline.
                Some(Ok(_)) => {}
            },
        }
    }
    debug!(watcher = guard.id, "watcher disconnected");
}

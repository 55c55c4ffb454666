//! The one etcd client of a node, shared by the mapping store, the leader election and the
//! follower of the managed cluster's endpoints, and replaceable while they run.
//!
//! etcd-client fixes its TLS when it connects, so a renewed client certificate (or CA) needs a
//! new client. [`EtcdConnection`] holds the current one behind a lock: every user takes a
//! clone per call (cheap: a handle on the same balanced channel), and a reload builds a new
//! client on every endpoint known so far and swaps it in. Calls in flight finish on the old
//! connection; streams opened on it (a watch, a lease keep-alive) carry on until they end,
//! and are opened again on the new one. As a [`Reloadable`], the connection re-reads its TLS
//! files on SIGHUP and when they change, as the rpc and registry configurations do.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use etcd_client::{Client, ConnectOptions};
use tracing::{error, info};

use super::etcd_tls::{EtcdTls, EtcdTlsError};
use crate::tls::reload::{ReloadSet, Reloadable, digest_of_read};

/// How long the etcd client (and the store on it) waits for etcd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EtcdTimeouts {
    /// Opening a connection to an endpoint.
    pub connect: Duration,
    /// One request (a range page or a transaction), from sending to the reply.
    pub request: Duration,
}

impl Default for EtcdTimeouts {
    fn default() -> EtcdTimeouts {
        EtcdTimeouts {
            connect: Duration::from_secs(5),
            request: Duration::from_secs(5),
        }
    }
}

/// A shared, replaceable etcd client. Clones share it.
#[derive(Clone)]
pub struct EtcdConnection {
    inner: Arc<Inner>,
}

struct Inner {
    client: RwLock<Client>,
    /// Every endpoint the client was given, in order (`scheme://host:port`).
    endpoints: Mutex<Vec<String>>,
    /// The TLS in force; `None` for a plain-text client.
    tls: Mutex<Option<EtcdTls>>,
    timeouts: EtcdTimeouts,
    /// The digest of the TLS files as last read, to tell a change.
    seen: AtomicU64,
    /// Bumped by every reload; a rebuild that finishes after a newer one started is dropped.
    generation: AtomicU64,
}

impl std::fmt::Debug for EtcdConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdConnection")
            .field("endpoints", &self.endpoints())
            .field("tls", &*lock(&self.inner.tls))
            .finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl EtcdConnection {
    /// A client of `endpoints` (already checked: `scheme://host:port`, one scheme) with `tls`.
    /// The channel connects lazily: an unreachable etcd shows on the first call.
    ///
    /// # Errors
    /// The client's, for endpoints or TLS options it cannot use.
    pub async fn connect(
        endpoints: Vec<String>,
        tls: Option<EtcdTls>,
        timeouts: EtcdTimeouts,
    ) -> Result<EtcdConnection, etcd_client::Error> {
        let client = build(&endpoints, tls.as_ref(), timeouts).await?;
        let seen = tls.as_ref().map_or(0, files_digest);
        Ok(EtcdConnection {
            inner: Arc::new(Inner {
                client: RwLock::new(client),
                endpoints: Mutex::new(endpoints),
                tls: Mutex::new(tls),
                timeouts,
                seen: AtomicU64::new(seen),
                generation: AtomicU64::new(0),
            }),
        })
    }

    /// The current client: take one per call or stream, not for keeps.
    pub fn client(&self) -> Client {
        self.inner
            .client
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Every endpoint given so far.
    pub fn endpoints(&self) -> Vec<String> {
        lock(&self.inner.endpoints).clone()
    }

    /// Whether the client speaks TLS (and so can be reloaded).
    pub fn has_tls(&self) -> bool {
        lock(&self.inner.tls).is_some()
    }

    /// Joins `set` (what SIGHUP and file changes reload) when the client speaks TLS.
    pub fn join(&self, set: &ReloadSet) {
        if self.has_tls() {
            set.add(Arc::new(self.clone()));
        }
    }

    /// Adds `endpoint` (`scheme://host:port`) to the current client and to the ones built
    /// later.
    ///
    /// # Errors
    /// The client's, for an endpoint it cannot use.
    pub async fn add_endpoint(&self, endpoint: &str) -> Result<(), etcd_client::Error> {
        self.client().add_endpoint(endpoint).await?;
        let mut endpoints = lock(&self.inner.endpoints);
        if !endpoints.iter().any(|e| e == endpoint) {
            endpoints.push(endpoint.to_owned());
        }
        Ok(())
    }

    /// Builds a client with `tls` on every endpoint known and puts it in force. A rebuild
    /// overtaken by a later reload is dropped.
    ///
    /// # Errors
    /// The client's, for TLS options it cannot use; the client in force stays.
    pub async fn replace(&self, tls: EtcdTls) -> Result<(), etcd_client::Error> {
        let generation = self.inner.generation.fetch_add(1, Ordering::SeqCst) + 1;
        let endpoints = self.endpoints();
        let client = build(&endpoints, Some(&tls), self.inner.timeouts).await?;
        if self.inner.generation.load(Ordering::SeqCst) != generation {
            return Ok(());
        }
        *self.inner.client.write().unwrap_or_else(|p| p.into_inner()) = client;
        *lock(&self.inner.tls) = Some(tls);
        // An endpoint added while the new client was being built.
        for endpoint in self.endpoints() {
            if !endpoints.contains(&endpoint) {
                self.client().add_endpoint(&endpoint).await?;
            }
        }
        Ok(())
    }
}

/// A client of `endpoints` with the request timeouts and, when given, `tls`.
async fn build(
    endpoints: &[String],
    tls: Option<&EtcdTls>,
    timeouts: EtcdTimeouts,
) -> Result<Client, etcd_client::Error> {
    let mut options = ConnectOptions::new()
        .with_connect_timeout(timeouts.connect)
        .with_timeout(timeouts.request);
    if let Some(tls) = tls {
        options = options.with_tls(tls.options());
    }
    Client::connect(endpoints, Some(options)).await
}

/// The digest of `tls`'s files as they are on disk now.
fn files_digest(tls: &EtcdTls) -> u64 {
    digest_of_read(tls.reread(), EtcdTls::digest)
}

impl Reloadable for EtcdConnection {
    fn name(&self) -> &'static str {
        "etcd client"
    }

    fn changed(&self) -> bool {
        let tls = lock(&self.inner.tls).clone();
        tls.is_some_and(|tls| files_digest(&tls) != self.inner.seen.load(Ordering::SeqCst))
    }

    /// Reads the files again now; the new client is built and swapped in on the runtime
    /// right after (building it opens no connection, so it is immediate).
    fn reload(&self) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let Some(current) = lock(&self.inner.tls).clone() else {
            return Ok(());
        };
        let read = current.reread();
        self.inner.seen.store(
            digest_of_read(read.as_ref(), |t| t.digest()),
            Ordering::SeqCst,
        );
        let fresh = read.map_err(|e: EtcdTlsError| Box::new(e) as Box<_>)?;
        let connection = self.clone();
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| format!("no runtime to rebuild the etcd client on: {e}"))?;
        runtime.spawn(async move {
            match connection.replace(fresh).await {
                Ok(()) => info!("etcd client rebuilt with the reloaded TLS files"),
                Err(e) => error!(
                    error = %e,
                    "the etcd client cannot be rebuilt with the reloaded TLS files; the previous one stays"
                ),
            }
        });
        Ok(())
    }
}

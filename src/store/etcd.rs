//! The etcd mapping store for cluster mode: every key under one prefix (by default
//! `/syncer/v2/<cluster-name>/`), values JSON, optionally fenced by the leader's lease.
//!
//! Layout (docs/DESIGN.md "Mapping store"):
//! - `<prefix>mappings/<origin>/<instance_id>` → a [`Mapping`](super::Mapping) as JSON
//! - `<prefix>cursors/<origin>` → a [`Cursor`](super::Cursor) as JSON
//! - `<prefix>meta/<key>` → the value, verbatim
//!
//! Names are percent-encoded (every byte but `A-Z a-z 0-9 - . _ ~`), so a `/` in a cluster
//! name or an instance id cannot break the layout and every name round-trips.
//!
//! `load` reads each section in pages of [`PAGE_KEYS`] keys, all at the revision of the first
//! page. `commit` packs consecutive groups into transactions of at most [`MAX_TXN_OPS`] keys
//! (etcd's default `--max-txn-ops`), never splitting a group; within a transaction the last
//! op on a key wins, because etcd refuses a transaction that names a key twice. With a
//! [`Fence`] set, every transaction first compares that the leader key exists and belongs to
//! our lease; a failed compare writes nothing and returns [`StoreError::Fenced`].
//!
//! `https://` endpoints speak TLS ([`EtcdTls`]: servers verified against a CA or the web PKI
//! roots, a client certificate when given); all endpoints of one store share one scheme.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{Compare, CompareOp, GetOptions, KvClient, Txn, TxnOp};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::etcd_conn::EtcdConnection;
pub use super::etcd_conn::EtcdTimeouts;
use super::etcd_tls::EtcdTls;
use super::{
    Group, MappingStore, Op, StoreError, Stored, decode_cursor, decode_mapping, validate_batch,
};
use crate::backoff::Backoff;

/// Keys per range request in `load`.
pub const PAGE_KEYS: i64 = 1000;
/// Keys per transaction in `commit`: etcd's default `--max-txn-ops`.
pub const MAX_TXN_OPS: usize = 128;
/// The client port used when an endpoint URL names none.
pub const DEFAULT_CLIENT_PORT: u16 = 2379;

/// Attempts of one call that could not connect (see `EtcdStore::call`).
const CONNECT_ATTEMPTS: u32 = 3;

/// Pauses between connection attempts while etcd cannot be reached.
const CONNECT_RETRY: Backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));

const MAPPINGS: &str = "mappings/";
const CURSORS: &str = "cursors/";
const META: &str = "meta/";

/// A compare every transaction carries in cluster mode: the leader key `key` (a full etcd
/// key, not relative to the prefix) exists and is attached to lease `lease_id`. Once another
/// node holds the key, or our lease expired, commits fail with [`StoreError::Fenced`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    /// The leader key.
    pub key: String,
    /// Our lease, which the leader key must carry.
    pub lease_id: i64,
}

/// A key-value pair to write (`Some`) or delete (`None`) in one transaction.
type TxnOps = BTreeMap<String, Option<Vec<u8>>>;

/// A mapping store in etcd.
pub struct EtcdStore {
    /// The node's shared connection, rebuilt when its TLS files change.
    connection: EtcdConnection,
    /// Ends with `/`.
    prefix: String,
    /// The endpoints, comma-separated, for error messages.
    endpoints: String,
    timeouts: EtcdTimeouts,
    /// The compare added to every transaction; read once per `commit`.
    fence: Mutex<Option<Fence>>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("prefix", &self.prefix)
            .field("endpoints", &self.endpoints)
            .field("timeouts", &self.timeouts)
            .field("fence", &self.fence())
            .finish()
    }
}

impl EtcdStore {
    /// A store under `prefix` (a `/` is appended when missing) on the plain-text etcd
    /// cluster at `endpoints`: [`EtcdStore::connect_with`] without TLS.
    ///
    /// # Errors
    /// Those of [`EtcdStore::connect_with`].
    pub async fn connect(
        endpoints: &[url::Url],
        prefix: String,
        timeouts: EtcdTimeouts,
    ) -> Result<EtcdStore, StoreError> {
        EtcdStore::connect_with(endpoints, None, prefix, timeouts).await
    }

    /// A store under `prefix` (a `/` is appended when missing) on the etcd cluster at
    /// `endpoints` (`http://host:port`, or `https://` with `tls`; the port defaults to 2379).
    /// The connection is opened lazily: an unreachable etcd shows as `Unavailable` on the
    /// first call, not here.
    ///
    /// # Errors
    /// `Invalid` for an empty prefix, no endpoints, an endpoint that is not
    /// `http(s)://host[:port]`, `http` and `https` endpoints mixed, `https` endpoints without
    /// `tls` or `http` ones with it; `Unavailable` when the client cannot be set up in time.
    pub async fn connect_with(
        endpoints: &[url::Url],
        tls: Option<&EtcdTls>,
        prefix: String,
        timeouts: EtcdTimeouts,
    ) -> Result<EtcdStore, StoreError> {
        if prefix.is_empty() {
            return Err(StoreError::Invalid("the etcd key prefix is empty".into()));
        }
        let prefix = if prefix.ends_with('/') {
            prefix
        } else {
            format!("{prefix}/")
        };
        let endpoints = endpoint_list(endpoints, tls.is_some())?;
        let joined = endpoints.join(",");
        let connection = match tokio::time::timeout(
            timeouts.connect,
            EtcdConnection::connect(endpoints, tls.cloned(), timeouts),
        )
        .await
        {
            Ok(Ok(connection)) => connection,
            Ok(Err(e)) => return Err(etcd_error(&format!("connect to {joined}"), e)),
            Err(_) => {
                return Err(StoreError::Unavailable(format!(
                    "etcd connect to {joined} timed out after {:?}",
                    timeouts.connect
                )));
            }
        };
        Ok(EtcdStore {
            connection,
            prefix,
            endpoints: joined,
            timeouts,
            fence: Mutex::new(None),
        })
    }

    /// [`EtcdStore::connect_with`], retried with back-off while etcd is `Unavailable` (a daemon
    /// may start before its etcd); `None` when `token` is cancelled first.
    ///
    /// # Errors
    /// Every error of [`EtcdStore::connect_with`] but `Unavailable`.
    pub async fn connect_patiently(
        endpoints: &[url::Url],
        tls: Option<&EtcdTls>,
        prefix: String,
        timeouts: EtcdTimeouts,
        token: &CancellationToken,
    ) -> Result<Option<EtcdStore>, StoreError> {
        let mut backoff = CONNECT_RETRY;
        loop {
            match EtcdStore::connect_with(endpoints, tls, prefix.clone(), timeouts).await {
                Ok(store) => return Ok(Some(store)),
                Err(StoreError::Unavailable(reason)) => {
                    warn!(%reason, retry_in = ?backoff.peek(), "etcd not reachable yet");
                }
                Err(e) => return Err(e),
            }
            if !backoff.wait(token).await {
                return Ok(None);
            }
        }
    }

    /// The shared connection (the leader election and the endpoint follower use it too; it
    /// is what a TLS reload rebuilds).
    pub fn connection(&self) -> &EtcdConnection {
        &self.connection
    }

    /// The key prefix, ending with `/`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Sets or clears the fence for every later transaction (a commit in flight keeps the
    /// fence it started with).
    pub fn set_fence(&self, fence: Option<Fence>) {
        *self.fence.lock().unwrap_or_else(|p| p.into_inner()) = fence;
    }

    /// The current fence.
    pub fn fence(&self) -> Option<Fence> {
        self.fence.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The etcd key of the mapping `(origin, instance_id)`.
    pub fn mapping_key(&self, origin: &str, instance_id: &str) -> String {
        format!(
            "{}{MAPPINGS}{}/{}",
            self.prefix,
            encode_segment(origin),
            encode_segment(instance_id)
        )
    }

    /// The etcd key of `origin`'s cursor.
    pub fn cursor_key(&self, origin: &str) -> String {
        format!("{}{CURSORS}{}", self.prefix, encode_segment(origin))
    }

    /// The etcd key of the setting `key`.
    pub fn meta_key(&self, key: &str) -> String {
        format!("{}{META}{}", self.prefix, encode_segment(key))
    }

    /// Runs one etcd call under the request timeout. A call that could not connect (it
    /// never reached etcd) is made again at once, up to [`CONNECT_ATTEMPTS`] times: the
    /// client balances over every endpoint, and one of a dead member keeps being picked
    /// until the cluster's endpoints are updated.
    async fn call<T, Fut>(&self, what: &str, op: impl Fn() -> Fut) -> Result<T, StoreError>
    where
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let deadline = tokio::time::Instant::now() + self.timeouts.request;
        let mut attempt = 1;
        loop {
            match tokio::time::timeout_at(deadline, op()).await {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(e)) if attempt < CONNECT_ATTEMPTS && not_connected(&e) => attempt += 1,
                Ok(Err(e)) => return Err(etcd_error(&format!("{what} at {}", self.endpoints), e)),
                Err(_) => {
                    return Err(StoreError::Unavailable(format!(
                        "etcd {what} at {} timed out after {:?}",
                        self.endpoints, self.timeouts.request
                    )));
                }
            }
        }
    }

    /// Reads every key of one section, page by page, at `revision` (0: the latest, which the
    /// first page then fixes). Calls `each` with the key after the section prefix.
    async fn read_section(
        &self,
        kv: &mut KvClient,
        section: &str,
        revision: &mut i64,
        mut each: impl FnMut(&str, &str, &[u8]) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let start = format!("{}{section}", self.prefix);
        let end = range_end(start.as_bytes());
        let mut from = start.clone().into_bytes();
        loop {
            let mut options = GetOptions::new()
                .with_range(end.clone())
                .with_limit(PAGE_KEYS);
            if *revision > 0 {
                options = options.with_revision(*revision);
            }
            let reply = self
                .call("range", || {
                    let (mut kv, from, options) = (kv.clone(), from.clone(), options.clone());
                    async move { kv.get(from, Some(options)).await }
                })
                .await?;
            if *revision == 0 {
                *revision = reply.header().map(|h| h.revision()).ok_or_else(|| {
                    StoreError::Unavailable("etcd range reply without a header".into())
                })?;
            }
            for pair in reply.kvs() {
                let key = std::str::from_utf8(pair.key()).map_err(|e| StoreError::Corrupt {
                    key: String::from_utf8_lossy(pair.key()).into_owned(),
                    reason: format!("key is not UTF-8: {e}"),
                })?;
                let Some(rest) = key.strip_prefix(&start) else {
                    return Err(StoreError::Corrupt {
                        key: key.to_owned(),
                        reason: format!("etcd returned a key outside {start}"),
                    });
                };
                each(key, rest, pair.value())?;
            }
            match reply.kvs().last() {
                Some(last) if reply.more() => {
                    // The next page starts right after the last key.
                    from = last.key().to_vec();
                    from.push(0);
                }
                _ => return Ok(()),
            }
        }
    }

    /// Writes one transaction, fenced if `fence` is set.
    async fn apply(
        &self,
        kv: &mut KvClient,
        ops: TxnOps,
        fence: Option<&Fence>,
    ) -> Result<(), StoreError> {
        let compares = match fence {
            Some(f) => vec![
                // A missing key would compare as lease 0; check existence explicitly anyway.
                Compare::create_revision(f.key.as_str(), CompareOp::Greater, 0),
                Compare::lease(f.key.as_str(), CompareOp::Equal, f.lease_id),
            ],
            None => Vec::new(),
        };
        let ops: Vec<TxnOp> = ops
            .into_iter()
            .map(|(key, value)| match value {
                Some(value) => TxnOp::put(key, value, None),
                None => TxnOp::delete(key, None),
            })
            .collect();
        let txn = Txn::new().when(compares).and_then(ops);
        let reply = self
            .call("txn", || {
                let (mut kv, txn) = (kv.clone(), txn.clone());
                async move { kv.txn(txn).await }
            })
            .await?;
        if !reply.succeeded() {
            // The fence is the only compare, so it failed.
            let fence = fence.map_or(String::new(), |f| {
                format!("{} is not held by lease {:x}", f.key, f.lease_id)
            });
            return Err(StoreError::Fenced(format!("leader key {fence}")));
        }
        Ok(())
    }

    /// Turns a batch into transactions: consecutive groups share one while their distinct
    /// keys fit into [`MAX_TXN_OPS`].
    fn pack(&self, batch: &[Group]) -> Result<Vec<TxnOps>, StoreError> {
        let mut txns = Vec::new();
        let mut current = TxnOps::new();
        for group in batch {
            let mut ops = TxnOps::new();
            for op in &group.ops {
                let (key, value) = self.encode(op)?;
                ops.insert(key, value);
            }
            let new_keys = ops.keys().filter(|k| !current.contains_key(*k)).count();
            if current.len() + new_keys > MAX_TXN_OPS {
                txns.push(std::mem::take(&mut current));
            }
            // Later ops win, as if the groups were applied one after the other.
            current.extend(ops);
        }
        if !current.is_empty() {
            txns.push(current);
        }
        Ok(txns)
    }

    fn encode(&self, op: &Op) -> Result<(String, Option<Vec<u8>>), StoreError> {
        Ok(match op {
            Op::PutMapping(m) => (
                self.mapping_key(&m.origin, &m.instance_id),
                Some(to_json(m)?),
            ),
            Op::DeleteMapping {
                origin,
                instance_id,
            } => (self.mapping_key(origin, instance_id), None),
            Op::PutCursor { origin, cursor } => (self.cursor_key(origin), Some(to_json(cursor)?)),
            Op::DeleteCursor { origin } => (self.cursor_key(origin), None),
            Op::PutMeta { key, value } => (self.meta_key(key), Some(value.as_bytes().to_vec())),
            Op::DeleteMeta { key } => (self.meta_key(key), None),
        })
    }
}

#[async_trait]
impl MappingStore for EtcdStore {
    fn kind(&self) -> &'static str {
        "etcd"
    }

    async fn load(&self) -> Result<Stored, StoreError> {
        let mut kv = self.connection.client().kv_client();
        let mut revision = 0;
        let mut stored = Stored::default();

        self.read_section(&mut kv, MAPPINGS, &mut revision, |key, rest, value| {
            let corrupt = |reason: String| StoreError::Corrupt {
                key: key.to_owned(),
                reason,
            };
            let Some((origin, instance_id)) = rest.split_once('/') else {
                return Err(corrupt("key has no instance id".into()));
            };
            let origin = decode_segment(origin).map_err(corrupt)?;
            let instance_id = decode_segment(instance_id).map_err(corrupt)?;
            stored
                .mappings
                .push(decode_mapping(key, &origin, &instance_id, value)?);
            Ok(())
        })
        .await?;

        self.read_section(&mut kv, CURSORS, &mut revision, |key, rest, value| {
            let corrupt = |reason: String| StoreError::Corrupt {
                key: key.to_owned(),
                reason,
            };
            let origin = decode_segment(rest).map_err(corrupt)?;
            stored.cursors.insert(origin, decode_cursor(key, value)?);
            Ok(())
        })
        .await?;

        self.read_section(&mut kv, META, &mut revision, |key, rest, value| {
            let corrupt = |reason: String| StoreError::Corrupt {
                key: key.to_owned(),
                reason,
            };
            let name = decode_segment(rest).map_err(corrupt)?;
            let value = String::from_utf8(value.to_vec())
                .map_err(|e| corrupt(format!("value is not UTF-8: {e}")))?;
            stored.meta.insert(name, value);
            Ok(())
        })
        .await?;

        // Encoded keys sort differently from the names they encode.
        stored
            .mappings
            .sort_by(|a, b| (&a.origin, &a.instance_id).cmp(&(&b.origin, &b.instance_id)));
        Ok(stored)
    }

    async fn commit(&self, batch: &[Group]) -> Result<(), StoreError> {
        validate_batch(batch)?;
        let txns = self.pack(batch)?;
        if txns.is_empty() {
            return Ok(());
        }
        let fence = self.fence();
        let mut kv = self.connection.client().kv_client();
        for ops in txns {
            self.apply(&mut kv, ops, fence.as_ref()).await?;
        }
        Ok(())
    }
}

/// The endpoints as the client takes them (`scheme://host:port`), all `https` when `tls`
/// is set and all `http` when not: the client cannot mix them, and an `https` endpoint
/// without TLS settings (or the reverse) is a configuration mistake, not something to
/// quietly work around.
pub fn endpoint_list(endpoints: &[url::Url], tls: bool) -> Result<Vec<String>, StoreError> {
    if endpoints.is_empty() {
        return Err(StoreError::Invalid("no etcd endpoints given".into()));
    }
    let wanted = if tls { "https" } else { "http" };
    endpoints
        .iter()
        .map(|url| {
            let text = endpoint(url)?;
            if url.scheme() != wanted {
                return Err(StoreError::Invalid(format!(
                    "etcd endpoint {text}: expected {wanted}:// like {} ({})",
                    endpoints
                        .iter()
                        .find(|u| u.scheme() == wanted)
                        .map_or_else(|| "the others".to_owned(), |u| u.to_string()),
                    if tls {
                        "this client speaks TLS; every endpoint must be https://"
                    } else {
                        "this client has no TLS settings; an https:// endpoint needs them"
                    }
                )));
            }
            Ok(text)
        })
        .collect()
}

/// `scheme://host:port` for the client, from a URL that may carry a path or lack a port.
fn endpoint(url: &url::Url) -> Result<String, StoreError> {
    let invalid = |why: &str| StoreError::Invalid(format!("etcd endpoint {url}: {why}"));
    let scheme = match url.scheme() {
        scheme @ ("http" | "https") => scheme,
        _ => return Err(invalid("the scheme must be http or https")),
    };
    let host = url.host_str().ok_or_else(|| invalid("no host"))?;
    let port = url.port().unwrap_or(DEFAULT_CLIENT_PORT);
    Ok(format!("{scheme}://{host}:{port}"))
}

/// The end of the range of keys starting with `prefix` (prefix ends with `/`, so the last
/// byte never overflows).
fn range_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return end;
        }
    }
    // Only reachable for a prefix of 0xff bytes: range to the end of the key space.
    vec![0]
}

/// Percent-encodes every byte but the URL-unreserved ones.
pub fn encode_segment(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The inverse of [`encode_segment`].
///
/// # Errors
/// A message for a `/`, a bad escape, or bytes that are not UTF-8.
pub fn decode_segment(segment: &str) -> Result<String, String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("bad escape in {segment:?}"))?;
                out.push(hex);
                i += 3;
            }
            b'/' => return Err(format!("unexpected / in {segment:?}")),
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|e| format!("{segment:?} decodes to non-UTF-8: {e}"))
}

fn to_json(value: &impl serde::Serialize) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|e| StoreError::Invalid(format!("cannot encode: {e}")))
}

/// Whether `e` is a failure to connect to the endpoint picked: the request was not sent.
fn not_connected(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::GRpcStatus(status) => {
            status.code() == tonic::Code::Unavailable && status.message().contains("connect")
        }
        _ => false,
    }
}

/// Sorts the client's errors: anything about reaching etcd or its cluster state is
/// `Unavailable`; a request etcd refuses as such is `Invalid`.
fn etcd_error(what: &str, e: etcd_client::Error) -> StoreError {
    use etcd_client::Error as E;
    use tonic::Code;
    match e {
        E::GRpcStatus(status) => {
            // A failed connection (a refused certificate, say) keeps its reason in the sources.
            let reason = super::etcd_tls::with_sources(
                status.message().to_owned(),
                std::error::Error::source(&status),
            );
            let message = format!("etcd {what}: {reason} ({:?})", status.code());
            match status.code() {
                Code::InvalidArgument
                | Code::FailedPrecondition
                | Code::PermissionDenied
                | Code::Unauthenticated
                | Code::Unimplemented
                | Code::NotFound
                | Code::AlreadyExists => StoreError::Invalid(message),
                _ => StoreError::Unavailable(message),
            }
        }
        E::InvalidArgs(_) | E::InvalidUri(_) => StoreError::Invalid(format!("etcd {what}: {e}")),
        // Transport errors keep the reason (a refused certificate, say) in their sources.
        other => {
            StoreError::Unavailable(format!("etcd {what}: {}", super::etcd_tls::chain(&other)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Mapping;

    #[test]
    fn segments_round_trip_and_never_hold_a_slash() {
        for name in ["dc2", "a/b", "a%2Fb", "dc ü", "../x", "~._-", "%", "%%41"] {
            let encoded = encode_segment(name);
            assert!(!encoded.contains('/'), "{encoded}");
            assert_eq!(decode_segment(&encoded).as_deref(), Ok(name));
        }
        assert_eq!(encode_segment("a/b"), "a%2Fb");
        assert_eq!(encode_segment("a%2Fb"), "a%252Fb");
        assert_eq!(encode_segment("0123abcXYZ-._~"), "0123abcXYZ-._~");
        for bad in ["%", "%4", "%zz", "a/b", "%FF"] {
            assert!(decode_segment(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn range_end_is_the_next_prefix() {
        assert_eq!(range_end(b"/p/mappings/"), b"/p/mappings0".to_vec());
        assert_eq!(range_end(b"a\xff"), b"b".to_vec());
    }

    #[test]
    fn endpoints_are_normalised() {
        let url = |s: &str| url::Url::parse(s).unwrap();
        assert_eq!(
            endpoint(&url("http://127.0.0.1:2379/")).unwrap(),
            "http://127.0.0.1:2379"
        );
        assert_eq!(
            endpoint(&url("http://etcd.local")).unwrap(),
            "http://etcd.local:2379"
        );
        assert_eq!(
            endpoint(&url("http://[::1]:23790")).unwrap(),
            "http://[::1]:23790"
        );
        assert_eq!(
            endpoint(&url("https://etcd.local")).unwrap(),
            "https://etcd.local:2379"
        );
        assert!(endpoint(&url("unix:///run/etcd.sock")).is_err());
    }

    #[test]
    fn endpoint_schemes_are_never_mixed() {
        let url = |s: &str| url::Url::parse(s).unwrap();
        let plain = [url("http://a:1"), url("http://b:2")];
        let tls = [url("https://a:1"), url("https://b:2")];
        let mixed = [url("https://a:1"), url("http://b:2")];
        assert_eq!(
            endpoint_list(&plain, false).unwrap(),
            vec!["http://a:1", "http://b:2"]
        );
        assert_eq!(
            endpoint_list(&tls, true).unwrap(),
            vec!["https://a:1", "https://b:2"]
        );
        for (list, tls) in [
            (&mixed, true),
            (&mixed, false),
            (&tls, false),
            (&plain, true),
        ] {
            let err = endpoint_list(list, tls).unwrap_err();
            assert!(matches!(err, StoreError::Invalid(_)), "{err}");
        }
        let err = endpoint_list(&mixed, true).unwrap_err().to_string();
        assert!(err.contains("http://b:2"), "{err}");
        assert!(endpoint_list(&[], false).is_err());
    }

    fn store_for_packing() -> EtcdStore {
        // `pack` needs no connection; a lazily connecting client to nowhere is enough.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(EtcdStore::connect(
            &[url::Url::parse("http://127.0.0.1:1").unwrap()],
            "/t".into(),
            EtcdTimeouts::default(),
        ))
        .unwrap()
    }

    fn put(instance_id: &str, fingerprint: &str) -> Op {
        Op::PutMapping(Mapping {
            origin: "dc2".into(),
            instance_id: instance_id.into(),
            fingerprint: fingerprint.into(),
            ..Mapping::default()
        })
    }

    #[test]
    fn packing_never_splits_a_group_and_respects_the_txn_limit() {
        let store = store_for_packing();
        assert_eq!(store.prefix(), "/t/");
        let group = |from: usize, n: usize| {
            Group::new(
                (from..from + n)
                    .map(|i| put(&format!("i{i}"), "x"))
                    .collect(),
            )
        };
        // 64 + 64 fit; the third group starts a new transaction; 40 + 64 fit again.
        let batch = [group(0, 64), group(64, 64), group(128, 40), group(168, 64)];
        let sizes: Vec<usize> = store
            .pack(&batch)
            .unwrap()
            .iter()
            .map(|t| t.len())
            .collect();
        assert_eq!(sizes, vec![128, 104]);
        assert!(store.pack(&[]).unwrap().is_empty());
        assert!(store.pack(&[Group::default()]).unwrap().is_empty());
    }

    #[test]
    fn packing_lets_the_last_op_on_a_key_win() {
        let store = store_for_packing();
        let key = store.mapping_key("dc2", "i1");
        let txns = store
            .pack(&[
                Group::new(vec![put("i1", "a"), put("i1", "b")]),
                Group::from(Op::DeleteMapping {
                    origin: "dc2".into(),
                    instance_id: "i1".into(),
                }),
            ])
            .unwrap();
        assert_eq!(txns, vec![TxnOps::from([(key.clone(), None)])]);
        let txns = store
            .pack(&[
                Group::from(Op::DeleteMapping {
                    origin: "dc2".into(),
                    instance_id: "i1".into(),
                }),
                Group::from(put("i1", "c")),
            ])
            .unwrap();
        let value = txns[0][&key].as_deref().unwrap();
        let mapping: Mapping = serde_json::from_slice(value).unwrap();
        assert_eq!(mapping.fingerprint, "c");
    }

    #[test]
    fn keys_follow_the_documented_layout() {
        let store = store_for_packing();
        assert_eq!(store.mapping_key("dc/2", "i 1"), "/t/mappings/dc%2F2/i%201");
        assert_eq!(store.cursor_key("dc2"), "/t/cursors/dc2");
        assert_eq!(store.meta_key("leader"), "/t/meta/leader");
    }
}

//! The admin dump (reference §5.2), read as a stream: the one answer that grows with the
//! whole registry.
//!
//! At SC's default quota (150 000 instances) the dump is about 90 MB of JSON. Two things
//! follow. It cannot be read under the 5 s bound of an ordinary call, so it has deadlines of
//! its own ([`DumpDeadlines`]). And it must not be held whole: neither the body nor SC's wire
//! structure (`{"cache":{"services":[…],"instances":[…]}}`) is ever built. The body's chunks go
//! through a small bounded channel to a blocking task where `serde_json` parses them with a
//! [`DeserializeSeed`] that turns each service and instance into the model as soon as its
//! element ends; everything outside `cache.services` and `cache.instances` is skipped
//! unparsed. Memory is therefore the snapshot itself plus a few chunks.
//!
//! Validation is that of the buffered reader it replaces: a key without the documented
//! layout, or JSON that is not a dump, fails the whole read with [`RegistryError::Protocol`]
//! naming the element and the position (a snapshot is never partial); SC's own services and
//! their instances are left out; entries listed twice (several clusters) are kept once.

use std::collections::HashSet;
use std::fmt;
use std::io::{self, BufReader, Read};
use std::time::Duration;

use bytes::{Buf, Bytes};
use reqwest::Method;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::debug;

use super::client::{Request, ScClient};
use super::convert::{
    InternalServices, instance_from_wire, parse_instance_key, parse_service_key, service_from_wire,
};
use super::wire::{KeyValue, WireInstance, WireService};
use crate::registry::{Instance, RegistryError, Service, Snapshot, Tenant};

/// How long the dump may take, apart from the per-call `timeout` of every other call.
///
/// The defaults are sized for SC's default quota of 150 000 instances, a dump of about
/// 90 MB:
/// - `first_byte` 30 s: SC builds the whole answer from its cache before it writes the first
///   byte (Go marshals the complete body, about a second for 90 MB on an idle SC, several on
///   a busy one); six times the ordinary call bound leaves room for a loaded SC.
/// - `idle` 10 s: once the body flows, a healthy SC never pauses between chunks; a pause this
///   long (twice the ordinary call bound) is a stalled peer or path, and waiting longer only
///   delays the retry.
/// - `total` 180 s: 90 MB over a congested 8 Mbit/s (1 MB/s) path between data centres takes
///   90 s; twice that. The adapter itself parses a 150 000-instance dump in well under
///   that (docs/PERFORMANCE.md, `sc_dump`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DumpDeadlines {
    /// From sending the request to the answer's headers.
    pub first_byte: Duration,
    /// Longest pause between two chunks of the body.
    pub idle: Duration,
    /// Bound of the whole read, request to the last element parsed.
    pub total: Duration,
}

impl Default for DumpDeadlines {
    fn default() -> DumpDeadlines {
        DumpDeadlines {
            first_byte: Duration::from_secs(30),
            idle: Duration::from_secs(10),
            total: Duration::from_secs(180),
        }
    }
}

impl DumpDeadlines {
    /// # Errors
    /// [`RegistryError::Invalid`] when a deadline is zero.
    pub(super) fn validate(&self) -> Result<(), RegistryError> {
        let named = [
            ("first_byte", self.first_byte),
            ("idle", self.idle),
            ("total", self.total),
        ];
        for (name, value) in named {
            if value.is_zero() {
                return Err(RegistryError::Invalid(format!(
                    "registry.servicecomb.dump_deadlines.{name} must be above zero"
                )));
            }
        }
        Ok(())
    }
}

/// Chunks in flight between the network and the parser: bounds the body held at once.
const CHANNEL_CHUNKS: usize = 8;
/// Buffer of the parser's reader (serde_json reads byte by byte from it).
const READ_BUFFER: usize = 64 << 10;

/// Takes the dump of every tenant (`GET /v4/default/admin/dump?options=cache`) and returns it
/// as a snapshot without SC's own services.
///
/// # Errors
/// What [`ScClient::open`] returns; [`RegistryError::Unavailable`] when a deadline passes or
/// the body breaks off; [`RegistryError::Protocol`] for a malformed or oversized answer.
pub(super) async fn read(
    client: &ScClient,
    deadlines: DumpDeadlines,
    max_bytes: usize,
    internal: &InternalServices,
) -> Result<Snapshot, RegistryError> {
    let started = Instant::now();
    let deadline = started + deadlines.total;
    let home = Tenant::default_tenant();
    let query = [("options", "cache")];
    let request = Request::new("dump", Method::GET, &home, &["dump"])
        .admin()
        .query(&query);
    let opened = tokio::time::timeout_at(deadline, client.open(request, deadlines.first_byte));
    let response = match opened.await {
        Ok(response) => response?,
        Err(_) => return Err(over_total(deadlines, 0)),
    };
    let (sender, receiver) = mpsc::channel(CHANNEL_CHUNKS);
    let internal = internal.clone();
    let parser = tokio::task::spawn_blocking(move || {
        parse(
            BufReader::with_capacity(READ_BUFFER, ChunkReader::new(receiver)),
            &internal,
        )
    });
    let pumped = pump(response, sender, deadlines, deadline, max_bytes).await;
    let parsed = parser
        .await
        .map_err(|e| RegistryError::Protocol(format!("dump: the parser stopped: {e}")));
    match pumped {
        // The body's own failure explains the parser's (it saw the body break off).
        Err(error) => Err(error),
        Ok(bytes) => {
            client.note_received(bytes);
            let snapshot = parsed??;
            debug!(
                bytes,
                services = snapshot.services.len(),
                instances = snapshot.instances.len(),
                took_ms = started.elapsed().as_millis() as u64,
                "dump read"
            );
            Ok(snapshot)
        }
    }
}

fn over_total(deadlines: DumpDeadlines, bytes: usize) -> RegistryError {
    RegistryError::Unavailable(format!(
        "dump: not read within {:?} ({bytes} bytes received)",
        deadlines.total
    ))
}

/// Moves the body's chunks to the parser under the idle and total deadlines. Returns the
/// bytes read; stops early without error when the parser has stopped (it failed, and its
/// error is the one to report).
async fn pump(
    mut response: reqwest::Response,
    sender: mpsc::Sender<io::Result<Bytes>>,
    deadlines: DumpDeadlines,
    deadline: Instant,
    max_bytes: usize,
) -> Result<usize, RegistryError> {
    let mut bytes = 0usize;
    loop {
        let wake = deadline.min(Instant::now() + deadlines.idle);
        let failure = match tokio::time::timeout_at(wake, response.chunk()).await {
            Ok(Ok(Some(chunk))) => {
                bytes += chunk.len();
                if bytes > max_bytes {
                    RegistryError::Protocol(format!("dump: answer larger than {max_bytes} bytes"))
                } else {
                    match tokio::time::timeout_at(deadline, sender.send(Ok(chunk))).await {
                        Ok(Ok(())) => continue,
                        // The parser is gone: it stopped on an error of its own.
                        Ok(Err(_)) => return Ok(bytes),
                        Err(_) => over_total(deadlines, bytes),
                    }
                }
            }
            // End of the body: dropping the sender tells the parser.
            Ok(Ok(None)) => return Ok(bytes),
            Ok(Err(e)) => RegistryError::Unavailable(format!(
                "dump: the answer broke off after {bytes} bytes: {e}"
            )),
            Err(_) if wake == deadline => over_total(deadlines, bytes),
            Err(_) => RegistryError::Unavailable(format!(
                "dump: no data for {:?} after {bytes} bytes",
                deadlines.idle
            )),
        };
        // The parser must not take a truncated body for a complete one.
        let _ = sender.try_send(Err(io::Error::other(failure.to_string())));
        return Err(failure);
    }
}

/// The parser's end of the channel as a blocking [`Read`]; end of file once the pump is done.
struct ChunkReader {
    receiver: mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
}

impl ChunkReader {
    fn new(receiver: mpsc::Receiver<io::Result<Bytes>>) -> ChunkReader {
        ChunkReader {
            receiver,
            current: Bytes::new(),
        }
    }
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.receiver.blocking_recv() {
                Some(chunk) => self.current = chunk?,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current.advance(n);
        Ok(n)
    }
}

/// Parses a dump from `reader` into a snapshot, element by element.
///
/// # Errors
/// [`RegistryError::Protocol`] naming what is wrong and where.
pub(super) fn parse<R: Read>(
    reader: R,
    internal: &InternalServices,
) -> Result<Snapshot, RegistryError> {
    let malformed =
        |e: serde_json::Error| RegistryError::Protocol(format!("dump: malformed answer: {e}"));
    let mut builder = SnapshotBuilder::new(internal);
    let mut json = serde_json::Deserializer::from_reader(reader);
    Top(&mut builder)
        .deserialize(&mut json)
        .map_err(malformed)?;
    json.end().map_err(malformed)?;
    Ok(builder.finish())
}

/// Collects the model as elements are parsed.
struct SnapshotBuilder<'a> {
    internal: &'a InternalServices,
    services: Vec<Service>,
    seen_services: HashSet<(Tenant, String)>,
    /// SC's own services: their instances are left out.
    hidden: HashSet<(Tenant, String)>,
    instances: Vec<Instance>,
}

impl<'a> SnapshotBuilder<'a> {
    fn new(internal: &'a InternalServices) -> SnapshotBuilder<'a> {
        SnapshotBuilder {
            internal,
            services: Vec::new(),
            seen_services: HashSet::new(),
            hidden: HashSet::new(),
            instances: Vec::new(),
        }
    }

    fn add_service(&mut self, entry: KeyValue<WireService>) -> Result<(), String> {
        let (tenant, id) = parse_service_key(&entry.key)
            .ok_or_else(|| format!("unexpected service key {:?}", entry.key))?;
        let id = id.to_owned();
        let Some(mut wire) = entry.value else {
            return Ok(());
        };
        if self
            .internal
            .is_internal(&tenant, &wire.app_id, &wire.service_name)
        {
            self.hidden.insert((tenant, id));
            return Ok(());
        }
        if self.seen_services.insert((tenant.clone(), id.clone())) {
            wire.service_id = id;
            self.services.push(service_from_wire(tenant, wire));
        }
        Ok(())
    }

    fn add_instance(&mut self, entry: KeyValue<WireInstance>) -> Result<(), String> {
        let (tenant, service_id, instance_id) = parse_instance_key(&entry.key)
            .ok_or_else(|| format!("unexpected instance key {:?}", entry.key))?;
        let Some(mut wire) = entry.value else {
            return Ok(());
        };
        wire.instance_id = instance_id.to_owned();
        self.instances
            .push(instance_from_wire(tenant, service_id, wire));
        Ok(())
    }

    /// Drops the instances of SC's own services (which may come before their service in
    /// the body) and duplicates. Duplicates are found by sorting in place, which costs no
    /// memory, where a set of 150 000 keys would cost tens of megabytes; the snapshot comes
    /// out ordered by tenant, service and instance.
    fn finish(self) -> Snapshot {
        let SnapshotBuilder {
            hidden,
            mut instances,
            services,
            ..
        } = self;
        // A handful of entries (SC itself, the shared services): a scan beats a lookup key
        // built per instance.
        if !hidden.is_empty() {
            instances.retain(|i| {
                !hidden
                    .iter()
                    .any(|(tenant, id)| *tenant == i.tenant && *id == i.service_id)
            });
        }
        instances.sort_unstable_by(|a, b| key(a).cmp(&key(b)));
        instances.dedup_by(|a, b| key(a) == key(b));
        instances.shrink_to_fit();
        Snapshot {
            services,
            instances,
        }
    }
}

/// What tells two instances apart in a snapshot.
fn key(i: &Instance) -> (&Tenant, &str, &str) {
    (&i.tenant, &i.service_id, &i.instance_id)
}

/// The dump object: only `cache` is read.
struct Top<'b, 'a>(&'b mut SnapshotBuilder<'a>);

impl<'de> DeserializeSeed<'de> for Top<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Top<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the dump object")
    }

    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<(), M::Error> {
        while let Some(key) = map.next_key::<Key>()? {
            if key.0 == "cache" {
                map.next_value_seed(Nullable(Cache(&mut *self.0)))?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

/// `cache`: `services` and `instances` are read, the other sections skipped.
struct Cache<'b, 'a>(&'b mut SnapshotBuilder<'a>);

impl<'de> DeserializeSeed<'de> for Cache<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Cache<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the dump's cache object")
    }

    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<(), M::Error> {
        while let Some(key) = map.next_key::<Key>()? {
            match key.0.as_str() {
                "services" => map.next_value_seed(Nullable(Section {
                    builder: &mut *self.0,
                    kind: Kind::Services,
                }))?,
                "instances" => map.next_value_seed(Nullable(Section {
                    builder: &mut *self.0,
                    kind: Kind::Instances,
                }))?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Services,
    Instances,
}

/// One section: each element is converted as soon as it is parsed.
struct Section<'b, 'a> {
    builder: &'b mut SnapshotBuilder<'a>,
    kind: Kind,
}

impl<'de> DeserializeSeed<'de> for Section<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Section<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of cache entries")
    }

    fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<(), S::Error> {
        match self.kind {
            Kind::Services => {
                while let Some(entry) = seq.next_element::<KeyValue<WireService>>()? {
                    self.builder.add_service(entry).map_err(de::Error::custom)?;
                }
            }
            Kind::Instances => {
                while let Some(entry) = seq.next_element::<KeyValue<WireInstance>>()? {
                    self.builder
                        .add_instance(entry)
                        .map_err(de::Error::custom)?;
                }
            }
        }
        Ok(())
    }
}

/// `null` in place of an object or list reads as empty (Go encodes nil slices so).
struct Nullable<S>(S);

impl<'de, S: DeserializeSeed<'de, Value = ()>> DeserializeSeed<'de> for Nullable<S> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de, S: DeserializeSeed<'de, Value = ()>> Visitor<'de> for Nullable<S> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a value or null")
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        self.0.deserialize(d)
    }
}

/// An object key, owned (keys read from a stream cannot be borrowed).
struct Key(String);

impl<'de> serde::Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Key, D::Error> {
        String::deserialize(d).map(Key)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use url::Url;

    use super::*;
    use crate::registry::Registry;
    use crate::registry::servicecomb::{ServiceComb, ServiceCombConfig};

    fn parse_text(text: &str) -> Result<Snapshot, RegistryError> {
        parse(text.as_bytes(), &InternalServices::new(&[]))
    }

    #[test]
    fn dump_becomes_a_snapshot_without_internal_services() {
        let text = r#"{"info":{"version":"1.4.8"},"cache":{
          "services":[
            {"key":"/cse-sr/ms/files/default/default/sc","rev":1,"value":{"serviceId":"sc","appId":"default","serviceName":"SERVICECENTER","version":"1.4.8"},"cluster":"default"},
            {"key":"/cse-sr/ms/files/d2/p2/s1","rev":2,"value":{"serviceId":"s1","appId":"a","serviceName":"n","version":"1.0.0","properties":{"k":"v"}},"cluster":"default"}],
          "serviceIndexes":[{"key":"/cse-sr/ms/indexes/x","rev":1,"value":"s1"}],
          "instances":[
            {"key":"/cse-sr/inst/files/default/default/sc/i0","rev":3,"value":{"instanceId":"i0","serviceId":"sc","hostName":"h"}},
            {"key":"/cse-sr/inst/files/d2/p2/s1/i1","rev":4,"value":{"instanceId":"i1","serviceId":"s1","hostName":"h","status":"UP","version":"1.0.0","modTimestamp":"17"}}]}}"#;
        let snapshot = parse_text(text).unwrap();
        assert_eq!(snapshot.services.len(), 1);
        assert_eq!(snapshot.services[0].tenant, Tenant::new("d2", "p2"));
        assert_eq!(
            snapshot.services[0].properties.get("k").map(String::as_str),
            Some("v")
        );
        assert_eq!(snapshot.instances.len(), 1);
        let i = &snapshot.instances[0];
        assert_eq!(
            (
                i.service_id.as_str(),
                i.instance_id.as_str(),
                i.mod_timestamp
            ),
            ("s1", "i1", Some(17))
        );
    }

    #[test]
    fn dump_with_a_foreign_key_is_a_protocol_error() {
        let text = r#"{"cache":{"services":[{"key":"/other/x","value":{}}]}}"#;
        assert!(matches!(parse_text(text), Err(RegistryError::Protocol(_))));
    }

    #[test]
    fn instances_before_their_internal_service_and_duplicates_are_dropped() {
        let text = r#"{"cache":{
          "instances":[
            {"key":"/cse-sr/inst/files/default/default/sc/i0","value":{"hostName":"h"}},
            {"key":"/cse-sr/inst/files/d/p/s1/i2","value":{"hostName":"second"}},
            {"key":"/cse-sr/inst/files/d/p/s1/i1","value":{"hostName":"h"}},
            {"key":"/cse-sr/inst/files/d/p/s1/i2","value":{"hostName":"second"}},
            {"key":"/cse-sr/inst/files/d/p/s1/i3","value":null}],
          "services":null,
          "serviceTags":[{"key":"k","value":{"a":"b"}}]}}"#;
        let with_sc = format!(
            r#"{{"cache":{{"services":[{{"key":"/cse-sr/ms/files/default/default/sc","value":{{"appId":"default","serviceName":"SERVICECENTER"}}}}]}},{}"#,
            &text[1..]
        );
        // Two `cache` keys: both are read, as a streaming reader sees them.
        let snapshot = parse_text(&with_sc).unwrap();
        let ids: Vec<&str> = snapshot
            .instances
            .iter()
            .map(|i| i.instance_id.as_str())
            .collect();
        assert_eq!(ids, ["i1", "i2"]);
        assert!(
            parse_text(r#"{"cache":null}"#)
                .unwrap()
                .instances
                .is_empty()
        );
    }

    #[test]
    fn malformed_elements_and_truncated_bodies_are_rejected() {
        let bad_field = r#"{"cache":{"instances":[
            {"key":"/cse-sr/inst/files/d/p/s/i1","value":{"hostName":"h"}},
            {"key":"/cse-sr/inst/files/d/p/s/i2","value":{"hostName":5}}]}}"#;
        let error = parse_text(bad_field).expect_err("hostName is a number");
        let text = error.to_string();
        assert!(
            matches!(error, RegistryError::Protocol(_)) && text.contains("line 3"),
            "{text}"
        );
        let bad_key = r#"{"cache":{"instances":[{"key":"/cse-sr/inst/files/d/p/s","value":{}}]}}"#;
        let text = parse_text(bad_key).expect_err("key").to_string();
        assert!(text.contains("unexpected instance key"), "{text}");
        let truncated = r#"{"cache":{"instances":[{"key":"/cse-sr/inst/files/d/p/s/i","value":{}}"#;
        assert!(matches!(
            parse_text(truncated),
            Err(RegistryError::Protocol(_))
        ));
        assert!(matches!(
            parse_text(r#"[1,2]"#),
            Err(RegistryError::Protocol(_))
        ));
        assert!(matches!(
            parse_text(r#"{"cache":{}} trailing"#),
            Err(RegistryError::Protocol(_))
        ));
    }

    /// How the stub writes its answer: pieces of the body with a pause before each, and
    /// whether the body ends (else the connection stays open, silent).
    struct Script {
        pieces: Vec<(Duration, Vec<u8>)>,
        ends: bool,
    }

    /// An HTTP/1.1 server that answers every request with `script`, in chunked encoding.
    async fn stub(script: Script) -> Url {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url =
            Url::parse(&format!("http://{}", listener.local_addr().expect("addr"))).expect("url");
        let script = std::sync::Arc::new(script);
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let script = script.clone();
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                                transfer-encoding: chunked\r\n\r\n";
                    if socket.write_all(head.as_bytes()).await.is_err() {
                        return;
                    }
                    for (pause, piece) in &script.pieces {
                        tokio::time::sleep(*pause).await;
                        let mut chunk = format!("{:x}\r\n", piece.len()).into_bytes();
                        chunk.extend_from_slice(piece);
                        chunk.extend_from_slice(b"\r\n");
                        if socket.write_all(&chunk).await.is_err() {
                            return;
                        }
                    }
                    if script.ends {
                        let _ = socket.write_all(b"0\r\n\r\n").await;
                    } else {
                        // Silent but open until the client gives up.
                        let _ = socket.read(&mut buf).await;
                    }
                });
            }
        });
        url
    }

    /// A dump of `count` instances of one service, as text.
    fn dump_text(count: usize) -> Vec<u8> {
        let instances: Vec<String> = (0..count)
            .map(|i| {
                format!(
                    r#"{{"key":"/cse-sr/inst/files/d/p/s/i{i}","value":{{"hostName":"h{i}","status":"UP"}}}}"#
                )
            })
            .collect();
        format!(
            r#"{{"cache":{{"services":[{{"key":"/cse-sr/ms/files/d/p/s","value":{{"appId":"a","serviceName":"n"}}}}],"instances":[{}]}}}}"#,
            instances.join(",")
        )
        .into_bytes()
    }

    /// `body` in `pieces` equal parts, `pause` before each.
    fn trickle(body: &[u8], pieces: usize, pause: Duration) -> Vec<(Duration, Vec<u8>)> {
        body.chunks(body.len().div_ceil(pieces))
            .map(|c| (pause, c.to_vec()))
            .collect()
    }

    /// An adapter whose ordinary calls time out after 200 ms and whose dump may pause
    /// `idle` between chunks.
    fn adapter(url: Url, idle: Duration) -> ServiceComb {
        ServiceComb::new(ServiceCombConfig {
            timeout: Duration::from_millis(200),
            dump_deadlines: DumpDeadlines {
                first_byte: Duration::from_secs(2),
                idle,
                total: Duration::from_secs(20),
            },
            ..ServiceCombConfig::new(vec![url])
        })
        .expect("adapter")
    }

    #[tokio::test]
    async fn a_dump_slower_than_the_call_timeout_is_read() {
        // Ten pieces 100 ms apart: about a second, five times the 200 ms call timeout.
        let body = dump_text(500);
        let url = stub(Script {
            pieces: trickle(&body, 10, Duration::from_millis(100)),
            ends: true,
        })
        .await;
        let sc = adapter(url, Duration::from_millis(1500));
        let started = Instant::now();
        let snapshot = sc.snapshot().await.expect("the dump is read");
        assert!(started.elapsed() > Duration::from_millis(200));
        assert_eq!(
            (snapshot.services.len(), snapshot.instances.len()),
            (1, 500)
        );
        assert_eq!(sc.metrics().received_bytes(), body.len() as u64);
    }

    #[tokio::test]
    async fn an_address_silent_past_the_first_byte_deadline_is_left_for_the_next() {
        // Accepts connections and never answers.
        let silent = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let silent_url =
            Url::parse(&format!("http://{}", silent.local_addr().expect("addr"))).expect("url");
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = silent.accept().await {
                held.push(socket);
            }
        });
        let good = stub(Script {
            pieces: vec![(Duration::ZERO, dump_text(3))],
            ends: true,
        })
        .await;
        let sc = ServiceComb::new(ServiceCombConfig {
            timeout: Duration::from_secs(5),
            dump_deadlines: DumpDeadlines {
                first_byte: Duration::from_millis(300),
                idle: Duration::from_secs(5),
                total: Duration::from_secs(20),
            },
            ..ServiceCombConfig::new(vec![silent_url, good.clone()])
        })
        .expect("adapter");
        let started = Instant::now();
        let snapshot = sc.snapshot().await.expect("read from the second address");
        assert_eq!(snapshot.instances.len(), 3);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "not the call timeout"
        );
        assert_eq!(sc.active_address(), good);
    }

    #[tokio::test]
    async fn a_dump_that_stalls_fails_at_the_idle_deadline() {
        let body = dump_text(100);
        let half = body.len() / 2;
        let url = stub(Script {
            pieces: vec![(Duration::ZERO, body[..half].to_vec())],
            ends: false,
        })
        .await;
        let sc = adapter(url, Duration::from_millis(400));
        let started = Instant::now();
        let error = sc.snapshot().await.expect_err("stalled");
        let took = started.elapsed();
        let text = error.to_string();
        assert!(
            matches!(error, RegistryError::Unavailable(_)) && text.contains("no data for 400ms"),
            "{text}"
        );
        assert!(
            took >= Duration::from_millis(400) && took < Duration::from_secs(10),
            "{took:?}"
        );
    }

    #[tokio::test]
    async fn a_malformed_element_in_a_streamed_dump_is_rejected() {
        // The bad element comes early; the body goes on long after it.
        let mut body = br#"{"cache":{"instances":[{"key":"/cse-sr/inst/files/d/p/s/i","value":{"status":["UP"]}},"#.to_vec();
        let rest = dump_text(20_000);
        body.extend_from_slice(&rest[rest.len() / 2..]);
        let url = stub(Script {
            pieces: trickle(&body, 100, Duration::ZERO),
            ends: true,
        })
        .await;
        let sc = adapter(url, Duration::from_secs(2));
        let error = sc.snapshot().await.expect_err("malformed");
        let text = error.to_string();
        assert!(
            matches!(error, RegistryError::Protocol(_))
                && text.contains("dump: malformed answer")
                && text.contains("line 1"),
            "{text}"
        );
    }
}

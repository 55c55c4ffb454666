//! The metadata a member announces about itself, and its wire form: a tagged encoding that
//! every release from protocol 4 on reads, so that a release may add fields without
//! splitting the pool (a rolling upgrade keeps old and new members in one pool).
//!
//! The metadata travels inside the member's identity, which rides in the header of every
//! gossip packet and is compared and re-gossiped by every other member. Hence two rules beyond
//! "unknown fields are ignored":
//!
//! - **Unknown entries are kept verbatim** and written back unchanged: an older member that
//!   passes on a newer member's identity must not strip the fields it does not know, or a third
//!   member would receive a different identity (same address, same generation) and membership
//!   would break.
//! - **One encoding per value** (canonical form): decoding then encoding gives back the same
//!   bytes, whichever release does it. A field equal to its default is omitted (so a newer
//!   release, which reads a missing field as its default, writes an older member's metadata back
//!   exactly as that member wrote it), tags are strictly ascending, integers are minimal
//!   varints. Input that is not canonical is refused.
//!
//! Layout, carried by foca's postcard codec as one byte string (length varint, then):
//!
//! ```text
//! [0xFF format marker] { [tag: varint] [length: varint] [value: length bytes] }*
//! ```
//!
//! The marker is never valid UTF-8: a member of protocol 3 or older, which expects the
//! cluster name (a string) there, refuses the identity outright instead of misreading it.
//!
//! | tag | field             | value                                        |
//! |-----|-------------------|----------------------------------------------|
//! | 1   | `cluster`         | UTF-8                                        |
//! | 2   | `rpc_addr`        | IPv4 (4 bytes) or IPv6 (16), then port (2, big-endian) |
//! | 3   | `mode`            | UTF-8                                        |
//! | 4   | `role`            | varint: 0 active, 1 standby                  |
//! | 5   | `registry`        | UTF-8                                        |
//! | 6   | `protocol`        | varint                                       |
//! | 7   | `etcd_peer_url`   | UTF-8                                        |
//! | 8   | `etcd_client_url` | UTF-8                                        |
//! | 9   | `etcd_ready`      | 1 (present only when true)                   |
//! | 10  | `etcd_data`       | 1 (present only when true)                   |
//! | 11  | `term`            | varint                                       |
//! | 12  | `tls`             | 1 (present only when true)                   |
//!
//! Adding a field: give it the next unused tag (a tag is never reused or retyped, and an enum
//! never gains a value under an existing tag, since older members would refuse it), one line in
//! [`NodeMeta::encode`], one in [`NodeMeta::decode`], and its default in [`NodeMeta::new`].

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// First byte of the encoded metadata; never valid UTF-8 (see the module documentation).
const FORMAT: u8 = 0xFF;

/// The default `rpc_addr` (a member that has none to advertise).
const UNSPECIFIED: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);

/// The tags of the fields this release knows. Tag 0 is never used.
mod tag {
    pub const CLUSTER: u32 = 1;
    pub const RPC_ADDR: u32 = 2;
    pub const MODE: u32 = 3;
    pub const ROLE: u32 = 4;
    pub const REGISTRY: u32 = 5;
    pub const PROTOCOL: u32 = 6;
    pub const ETCD_PEER_URL: u32 = 7;
    pub const ETCD_CLIENT_URL: u32 = 8;
    pub const ETCD_READY: u32 = 9;
    pub const ETCD_DATA: u32 = 10;
    pub const TERM: u32 = 11;
    pub const TLS: u32 = 12;
    /// The largest tag this release knows; larger tags come from newer releases.
    #[cfg(test)]
    pub const LAST: u32 = TLS;
}

/// What a member does in its data centre. Cluster mode elects one active member per data
/// centre; a single-mode member is always active.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Role {
    #[default]
    Active,
    Standby,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Active => "active",
            Role::Standby => "standby",
        }
    }
}

/// The metadata every member announces about itself.
///
/// Built with [`NodeMeta::new`] and changed field by field, so that a new field is one line
/// here and nowhere else. Its serde form is the tagged encoding of the module documentation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NodeMeta {
    /// Data-centre (cluster) name.
    pub cluster: String,
    /// Advertised gRPC address.
    pub rpc_addr: SocketAddr,
    /// `single` or `cluster`.
    pub mode: String,
    pub role: Role,
    /// Fingerprint of the registry this member serves
    /// ([`registry_fingerprint`](super::registry_fingerprint)); empty until the registry has
    /// answered once.
    pub registry: String,
    /// Version of syncer's peer protocol.
    pub protocol: u32,
    /// Peer URL of the managed etcd member (cluster mode without `--etcd-endpoints`);
    /// empty when this syncer runs none.
    pub etcd_peer_url: String,
    /// Client URL of the managed etcd member; empty when this syncer runs none.
    pub etcd_client_url: String,
    /// The managed etcd member serves clients and is a voting member of its data centre's
    /// etcd cluster: others may join that cluster through it.
    pub etcd_ready: bool,
    /// The managed etcd member has data of an existing cluster (it restarts on it, and may
    /// wait for a quorum before it serves): nobody of its data centre bootstraps a new one.
    pub etcd_data: bool,
    /// Cluster mode: the number of the term this member is active in (the etcd revision of
    /// its leader key), 0 while standing by. When a data centre briefly shows two active
    /// members (a dead leader not yet seen down), peers choose the larger term.
    pub term: u64,
    /// The member's rpc listener speaks TLS only (`--tls-cert`), as the original's
    /// `syncer-tls-enabled` tag said: peers call it over TLS or not at all.
    pub tls: bool,
    /// Entries of a newer release, by tag, kept to be written back unchanged.
    unknown: BTreeMap<u32, Vec<u8>>,
}

impl NodeMeta {
    /// The metadata of a member of data centre `cluster`, reached at `rpc_addr`, in `mode`;
    /// every other field has its default (active, no registry yet, protocol 0, no managed
    /// etcd member, term 0).
    pub fn new(cluster: impl Into<String>, rpc_addr: SocketAddr, mode: impl Into<String>) -> Self {
        NodeMeta {
            cluster: cluster.into(),
            rpc_addr,
            mode: mode.into(),
            role: Role::Active,
            registry: String::new(),
            protocol: 0,
            etcd_peer_url: String::new(),
            etcd_client_url: String::new(),
            etcd_ready: false,
            etcd_data: false,
            term: 0,
            tls: false,
            unknown: BTreeMap::new(),
        }
    }

    /// The wire form (see the module documentation).
    pub fn encode(&self) -> Vec<u8> {
        // Every packet header carries identities, so this runs for each datagram sent and
        // (as the canonical check) received: one buffer for the output, one reused for the
        // value of each field.
        let mut out = Vec::with_capacity(ENCODED_CAPACITY);
        out.push(FORMAT);
        let mut e = Encoder {
            out,
            value: Vec::new(),
            unknown: self.unknown.iter().peekable(),
        };
        e.field(tag::CLUSTER, &self.cluster);
        e.field(tag::RPC_ADDR, &self.rpc_addr);
        e.field(tag::MODE, &self.mode);
        e.field(tag::ROLE, &self.role);
        e.field(tag::REGISTRY, &self.registry);
        e.field(tag::PROTOCOL, &self.protocol);
        e.field(tag::ETCD_PEER_URL, &self.etcd_peer_url);
        e.field(tag::ETCD_CLIENT_URL, &self.etcd_client_url);
        e.field(tag::ETCD_READY, &self.etcd_ready);
        e.field(tag::ETCD_DATA, &self.etcd_data);
        e.field(tag::TERM, &self.term);
        e.field(tag::TLS, &self.tls);
        e.finish()
    }

    /// Reads the wire form. Missing fields take their default, unknown tags are kept.
    ///
    /// # Errors
    /// [`MetaError`] when `bytes` is not the canonical encoding of some metadata.
    pub fn decode(bytes: &[u8]) -> Result<NodeMeta, MetaError> {
        let Some((&FORMAT, mut rest)) = bytes.split_first() else {
            return Err(MetaError::Format);
        };
        let mut meta = NodeMeta::default();
        let mut last = 0;
        while !rest.is_empty() {
            let (tag, value, after) = entry(rest)?;
            rest = after;
            if tag <= last {
                return Err(MetaError::TagOrder { tag, after: last });
            }
            last = tag;
            match tag {
                tag::CLUSTER => meta.cluster = read(tag, value)?,
                tag::RPC_ADDR => meta.rpc_addr = read(tag, value)?,
                tag::MODE => meta.mode = read(tag, value)?,
                tag::ROLE => meta.role = read(tag, value)?,
                tag::REGISTRY => meta.registry = read(tag, value)?,
                tag::PROTOCOL => meta.protocol = read(tag, value)?,
                tag::ETCD_PEER_URL => meta.etcd_peer_url = read(tag, value)?,
                tag::ETCD_CLIENT_URL => meta.etcd_client_url = read(tag, value)?,
                tag::ETCD_READY => meta.etcd_ready = read(tag, value)?,
                tag::ETCD_DATA => meta.etcd_data = read(tag, value)?,
                tag::TERM => meta.term = read(tag, value)?,
                tag::TLS => meta.tls = read(tag, value)?,
                _ => {
                    meta.unknown.insert(tag, value.to_vec());
                }
            }
        }
        // Defaults written out, non-minimal varints and the like: refused, so that every
        // accepted encoding is written back byte for byte.
        if meta.encode() != bytes {
            return Err(MetaError::NonCanonical);
        }
        Ok(meta)
    }

    /// The entries of a newer release this metadata carries, by tag.
    #[cfg(test)]
    pub(crate) fn unknown(&self) -> &BTreeMap<u32, Vec<u8>> {
        &self.unknown
    }

    /// Adds an entry this release does not know, as a newer release would write it.
    #[cfg(test)]
    pub(crate) fn insert_unknown(&mut self, tag: u32, value: Vec<u8>) {
        assert!(tag > tag::LAST, "tag {tag} is a known field");
        self.unknown.insert(tag, value);
    }
}

impl Default for NodeMeta {
    fn default() -> Self {
        NodeMeta::new(String::new(), UNSPECIFIED, String::new())
    }
}

/// Why encoded metadata was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetaError {
    #[error("not tagged node metadata (format marker missing)")]
    Format,
    #[error("node metadata is truncated")]
    Truncated,
    #[error("node metadata tag {tag} follows tag {after}; tags must be ascending and non-zero")]
    TagOrder { tag: u32, after: u32 },
    #[error("node metadata tag above 2^32")]
    TagRange,
    #[error("node metadata field {tag} has an invalid value")]
    Value { tag: u32 },
    #[error("node metadata is not in its canonical form")]
    NonCanonical,
}

impl Serialize for NodeMeta {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.encode())
    }
}

impl<'de> Deserialize<'de> for NodeMeta {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_bytes(MetaVisitor)
    }
}

struct MetaVisitor;

impl<'de> Visitor<'de> for MetaVisitor {
    type Value = NodeMeta;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("tagged node metadata bytes")
    }

    fn visit_bytes<E: de::Error>(self, bytes: &[u8]) -> Result<NodeMeta, E> {
        NodeMeta::decode(bytes).map_err(E::custom)
    }

    /// Formats that write bytes as a list of numbers (JSON).
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<NodeMeta, A::Error> {
        let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(byte) = seq.next_element::<u8>()? {
            bytes.push(byte);
        }
        NodeMeta::decode(&bytes).map_err(de::Error::custom)
    }
}

/// Room for the usual encoding (under 128 bytes unless the names are long), so the output
/// buffer is allocated once.
const ENCODED_CAPACITY: usize = 128;

/// Writes known fields in tag order, with the unknown entries merged in at their place.
struct Encoder<'a> {
    out: Vec<u8>,
    /// The value of the field being written (its length goes first).
    value: Vec<u8>,
    unknown: std::iter::Peekable<std::collections::btree_map::Iter<'a, u32, Vec<u8>>>,
}

impl Encoder<'_> {
    fn field<V: Value>(&mut self, tag: u32, value: &V) {
        self.unknown_before(tag);
        if value.is_default() {
            return;
        }
        self.value.clear();
        value.write(&mut self.value);
        put_entry(&mut self.out, tag, &self.value);
    }

    fn unknown_before(&mut self, tag: u32) {
        while let Some((&t, value)) = self.unknown.next_if(|(t, _)| **t < tag) {
            put_entry(&mut self.out, t, value);
        }
    }

    fn finish(mut self) -> Vec<u8> {
        for (&t, value) in self.unknown.by_ref() {
            put_entry(&mut self.out, t, value);
        }
        self.out
    }
}

/// Appends one entry: tag, length, value.
fn put_entry(out: &mut Vec<u8>, tag: u32, value: &[u8]) {
    put_varint(out, u64::from(tag));
    put_varint(out, value.len() as u64);
    out.extend_from_slice(value);
}

/// Splits one entry off `bytes`: its tag, its value and what follows.
fn entry(bytes: &[u8]) -> Result<(u32, &[u8], &[u8]), MetaError> {
    let (tag, rest) = take_varint(bytes).ok_or(MetaError::Truncated)?;
    let tag = u32::try_from(tag).map_err(|_| MetaError::TagRange)?;
    let (len, rest) = take_varint(rest).ok_or(MetaError::Truncated)?;
    let len = usize::try_from(len).map_err(|_| MetaError::Truncated)?;
    let (value, rest) = rest.split_at_checked(len).ok_or(MetaError::Truncated)?;
    Ok((tag, value, rest))
}

fn read<V: Value>(tag: u32, bytes: &[u8]) -> Result<V, MetaError> {
    V::read(bytes).ok_or(MetaError::Value { tag })
}

/// A field's value type: how it is written, read, and which value is left out.
trait Value: Sized {
    fn is_default(&self) -> bool;
    fn write(&self, out: &mut Vec<u8>);
    /// `None` when `bytes` is not a whole value of this type.
    fn read(bytes: &[u8]) -> Option<Self>;
}

impl Value for String {
    fn is_default(&self) -> bool {
        self.is_empty()
    }
    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.as_bytes());
    }
    fn read(bytes: &[u8]) -> Option<Self> {
        String::from_utf8(bytes.to_vec()).ok()
    }
}

impl Value for u64 {
    fn is_default(&self) -> bool {
        *self == 0
    }
    fn write(&self, out: &mut Vec<u8>) {
        put_varint(out, *self);
    }
    fn read(bytes: &[u8]) -> Option<Self> {
        match take_varint(bytes)? {
            (value, []) => Some(value),
            _ => None,
        }
    }
}

impl Value for u32 {
    fn is_default(&self) -> bool {
        *self == 0
    }
    fn write(&self, out: &mut Vec<u8>) {
        put_varint(out, u64::from(*self));
    }
    fn read(bytes: &[u8]) -> Option<Self> {
        u32::try_from(u64::read(bytes)?).ok()
    }
}

impl Value for bool {
    fn is_default(&self) -> bool {
        !*self
    }
    fn write(&self, out: &mut Vec<u8>) {
        out.push(u8::from(*self));
    }
    fn read(bytes: &[u8]) -> Option<Self> {
        match bytes {
            [0] => Some(false),
            [1] => Some(true),
            _ => None,
        }
    }
}

impl Value for Role {
    fn is_default(&self) -> bool {
        *self == Role::Active
    }
    fn write(&self, out: &mut Vec<u8>) {
        put_varint(
            out,
            match self {
                Role::Active => 0,
                Role::Standby => 1,
            },
        );
    }
    fn read(bytes: &[u8]) -> Option<Self> {
        match u64::read(bytes)? {
            0 => Some(Role::Active),
            1 => Some(Role::Standby),
            _ => None,
        }
    }
}

impl Value for SocketAddr {
    fn is_default(&self) -> bool {
        *self == UNSPECIFIED
    }
    fn write(&self, out: &mut Vec<u8>) {
        match self.ip() {
            IpAddr::V4(ip) => out.extend_from_slice(&ip.octets()),
            IpAddr::V6(ip) => out.extend_from_slice(&ip.octets()),
        }
        out.extend_from_slice(&self.port().to_be_bytes());
    }
    fn read(bytes: &[u8]) -> Option<Self> {
        let (ip, port) = bytes.split_last_chunk::<2>()?;
        let port = u16::from_be_bytes(*port);
        let ip = match ip.len() {
            4 => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(ip).ok()?)),
            16 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(ip).ok()?)),
            _ => return None,
        };
        Some(SocketAddr::new(ip, port))
    }
}

/// Appends `value` as an LEB128 varint (7 bits a byte, low bits first).
fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Reads an LEB128 varint off the front of `bytes`; `None` when truncated or above `u64`.
fn take_varint(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let mut value: u64 = 0;
    for (i, &byte) in bytes.iter().enumerate().take(10) {
        let bits = u64::from(byte & 0x7F);
        let shift = 7 * i as u32;
        if shift == 63 && bits > 1 {
            return None;
        }
        value |= bits << shift;
        if byte & 0x80 == 0 {
            return Some((value, &bytes[i + 1..]));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 11], port))
    }

    /// Every field set to something other than its default.
    fn full() -> NodeMeta {
        let mut meta = NodeMeta::new("dc1", addr(30191), "cluster");
        meta.role = Role::Standby;
        meta.registry = "0123456789ab".into();
        meta.protocol = 4;
        meta.etcd_peer_url = "http://10.0.0.11:30194".into();
        meta.etcd_client_url = "http://10.0.0.11:30195".into();
        meta.etcd_ready = true;
        meta.etcd_data = true;
        meta.term = 1 << 40;
        meta
    }

    /// The "speaks TLS" flag travels as tag 12 with the value 1, and only when set.
    #[test]
    fn the_tls_flag_round_trips_and_is_omitted_when_off() {
        let mut meta = full();
        let off = meta.encode();
        meta.tls = true;
        let on = meta.encode();
        assert_eq!(&on[..off.len()], &off[..]);
        assert_eq!(&on[off.len()..], &[12, 1, 1]);
        assert_eq!(NodeMeta::decode(&on), Ok(meta));
    }

    #[test]
    fn round_trip() {
        for meta in [
            full(),
            NodeMeta::default(),
            NodeMeta::new("dc2", "[::1]:30191".parse().unwrap(), "single"),
        ] {
            let bytes = meta.encode();
            assert_eq!(NodeMeta::decode(&bytes), Ok(meta.clone()));
            let wire = postcard::to_allocvec(&meta).unwrap();
            assert_eq!(postcard::from_bytes::<NodeMeta>(&wire).unwrap(), meta);
            let json = serde_json::to_string(&meta).unwrap();
            assert_eq!(serde_json::from_str::<NodeMeta>(&json).unwrap(), meta);
        }
    }

    #[test]
    fn layout_is_as_documented() {
        let mut meta = NodeMeta::new("dc1", SocketAddr::from(([10, 0, 0, 1], 258)), "single");
        meta.protocol = 4;
        meta.term = 300;
        assert_eq!(
            meta.encode(),
            [
                &[FORMAT][..],
                &[1, 3],
                b"dc1",
                &[2, 6, 10, 0, 0, 1, 1, 2],
                &[3, 6],
                b"single",
                &[6, 1, 4],
                &[11, 2, 0xAC, 0x02],
            ]
            .concat()
        );
    }

    /// A newer release added tag 30 (and 40): this release reads the rest, keeps those entries
    /// and writes them back byte for byte, so the identity it passes on is the one it received.
    #[test]
    fn unknown_entries_survive_decoding_and_re_encoding() {
        let mut newer = full().encode();
        newer.extend_from_slice(&[30, 3, 7, 8, 9, 40, 0]);
        let meta = NodeMeta::decode(&newer).unwrap();
        let mut known = meta.clone();
        known.unknown.clear();
        assert_eq!(known, full(), "the known fields read as usual");
        assert_eq!(
            meta.unknown().iter().collect::<Vec<_>>(),
            [(&30, &vec![7, 8, 9]), (&40, &vec![])]
        );
        assert_eq!(meta.encode(), newer);
        // Through foca's codec, as part of an identity, too.
        let wire = postcard::to_allocvec(&meta).unwrap();
        assert_eq!(
            postcard::to_allocvec(&postcard::from_bytes::<NodeMeta>(&wire).unwrap()).unwrap(),
            wire
        );
        // Changing a known field keeps them.
        let mut changed = meta.clone();
        changed.term += 1;
        assert_eq!(
            NodeMeta::decode(&changed.encode()).unwrap().unknown(),
            meta.unknown()
        );
        assert_ne!(changed.encode(), newer);
    }

    /// An older release (or a newer one that retired a field) leaves fields out: they read as
    /// their defaults.
    #[test]
    fn missing_fields_take_their_default() {
        let older = [&[FORMAT][..], &[1, 3], b"dc9", &[3, 6], b"single"].concat();
        let meta = NodeMeta::decode(&older).unwrap();
        assert_eq!(meta, NodeMeta::new("dc9", UNSPECIFIED, "single"));
        assert_eq!(meta.role, Role::Active);
        assert_eq!((meta.protocol, meta.term, meta.etcd_ready), (0, 0, false));
        assert_eq!(meta.encode(), older);
        assert_eq!(NodeMeta::decode(&[FORMAT]), Ok(NodeMeta::default()));
    }

    #[test]
    fn garbage_is_refused() {
        let good = full().encode();
        let cases: Vec<(Vec<u8>, MetaError)> = vec![
            (vec![], MetaError::Format),
            // A protocol-3 identity's metadata starts with the cluster name.
            (b"dc1".to_vec(), MetaError::Format),
            (good[..good.len() - 1].to_vec(), MetaError::Truncated),
            (vec![FORMAT, 1], MetaError::Truncated),
            (vec![FORMAT, 0x80], MetaError::Truncated),
            (vec![FORMAT, 0, 0], MetaError::TagOrder { tag: 0, after: 0 }),
            (
                vec![FORMAT, 0x80, 0x80, 0x80, 0x80, 0x10, 0],
                MetaError::TagRange,
            ),
            (
                [&[FORMAT][..], &[3, 1, b'x'], &[1, 1, b'y']].concat(),
                MetaError::TagOrder { tag: 1, after: 3 },
            ),
            (
                [&[FORMAT][..], &[30, 0], &[30, 0]].concat(),
                MetaError::TagOrder { tag: 30, after: 30 },
            ),
            (vec![FORMAT, 1, 1, 0xFF], MetaError::Value { tag: 1 }),
            (
                vec![FORMAT, 2, 5, 1, 2, 3, 4, 5],
                MetaError::Value { tag: 2 },
            ),
            (vec![FORMAT, 4, 1, 2], MetaError::Value { tag: 4 }),
            (vec![FORMAT, 9, 1, 2], MetaError::Value { tag: 9 }),
            (vec![FORMAT, 11, 2, 1, 2], MetaError::Value { tag: 11 }),
            (
                vec![FORMAT, 6, 5, 0xFF, 0xFF, 0xFF, 0xFF, 0x1F],
                MetaError::Value { tag: 6 },
            ),
            // Defaults written out, a non-minimal varint.
            (vec![FORMAT, 9, 1, 0], MetaError::NonCanonical),
            (vec![FORMAT, 1, 0], MetaError::NonCanonical),
            (vec![FORMAT, 11, 2, 0x81, 0x00], MetaError::NonCanonical),
        ];
        for (bytes, expected) in cases {
            assert_eq!(NodeMeta::decode(&bytes), Err(expected), "{bytes:?}");
        }
        // Through serde, the refusal is a decode error.
        let wire = postcard::to_allocvec(&serde_bytes_of(&[FORMAT, 1, 0])).unwrap();
        assert!(postcard::from_bytes::<NodeMeta>(&wire).is_err());
    }

    /// Whatever arrives, decoding never panics, and whatever it accepts it writes back byte for
    /// byte (seeded, so a failure repeats): random bytes behind the marker, random bytes, and
    /// valid encodings with bytes changed, inserted or cut.
    #[test]
    fn arbitrary_bytes_never_panic_and_accepted_ones_round_trip() {
        use rand::{Rng, SeedableRng};

        let mut rng = rand::rngs::StdRng::seed_from_u64(14);
        let mut newer = full().encode();
        newer.extend_from_slice(&[30, 3, 7, 8, 9, 40, 0]);
        let valid = [
            newer,
            full().encode(),
            NodeMeta::new("dc2", "[::1]:30191".parse().unwrap(), "single").encode(),
        ];
        let (mut accepted, mut refused) = (0, 0);
        for round in 0..30_000 {
            let bytes: Vec<u8> = match round % 3 {
                0 => {
                    let len = rng.random_range(0..48);
                    std::iter::once(FORMAT)
                        .chain((0..len).map(|_| rng.random::<u8>()))
                        .collect()
                }
                1 => (0..rng.random_range(0..24))
                    .map(|_| rng.random::<u8>())
                    .collect(),
                _ => {
                    let mut bytes = valid[rng.random_range(0..valid.len())].clone();
                    for _ in 0..rng.random_range(1..4) {
                        let at = rng.random_range(1..bytes.len());
                        match rng.random_range(0..4) {
                            0 => bytes[at] = rng.random(),
                            1 => bytes[at] ^= 1 << rng.random_range(0..8),
                            2 => bytes.insert(at, rng.random()),
                            _ => bytes.truncate(at.max(1)),
                        }
                        if bytes.len() < 2 {
                            break;
                        }
                    }
                    bytes
                }
            };
            match NodeMeta::decode(&bytes) {
                Ok(meta) => {
                    accepted += 1;
                    assert_eq!(meta.encode(), bytes, "{bytes:?}");
                }
                Err(_) => refused += 1,
            }
            // As foca's codec carries it: a byte string inside the identity.
            let wire = postcard::to_allocvec(&serde_bytes_of(&bytes)).unwrap();
            if let Ok(meta) = postcard::from_bytes::<NodeMeta>(&wire) {
                assert_eq!(postcard::to_allocvec(&meta).unwrap(), wire);
            }
        }
        assert!(
            accepted > 1000 && refused > 1000,
            "{accepted} accepted, {refused} refused"
        );
    }

    /// A byte string as postcard writes one (length, then bytes).
    fn serde_bytes_of(bytes: &[u8]) -> impl Serialize + '_ {
        struct Bytes<'a>(&'a [u8]);
        impl Serialize for Bytes<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_bytes(self.0)
            }
        }
        Bytes(bytes)
    }

    #[test]
    fn varints_round_trip_at_their_edges() {
        for value in [
            0,
            1,
            127,
            128,
            300,
            u64::from(u32::MAX),
            u64::MAX - 1,
            u64::MAX,
        ] {
            let mut out = Vec::new();
            put_varint(&mut out, value);
            assert_eq!(take_varint(&out), Some((value, &[][..])), "{value}");
        }
        assert_eq!(take_varint(&[0xFF; 10]), None);
        assert_eq!(
            take_varint(&[0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x02]),
            None
        );
    }
}

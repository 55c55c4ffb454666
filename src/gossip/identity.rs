//! A member's identity in the pool: who it is, where it listens, which incarnation of the
//! process it is, and the little metadata peers need to talk to it.
//!
//! The identity rides in the header of every gossip packet (sender and receiver), so it is
//! kept small: names are capped by the configuration, the registry is a 12-character
//! fingerprint and enums travel as one byte.
//!
//! Its fixed core (name, address, generation, bump) is positional and never changes; the
//! metadata after it is a tagged encoding (`gossip/meta.rs`) to which releases add fields
//! without breaking older members.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

pub use super::meta::{NodeMeta, Role};

/// A member identity as foca sees it.
///
/// Two identities with the same address are two incarnations of one member; the one with the
/// higher `(generation, bump)` wins. `generation` grows across restarts, so a restarted member
/// replaces its old self at once instead of waiting for the old one to be declared down;
/// `bump` grows within one run, on every metadata change and on every automatic rejoin.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NodeId {
    pub name: String,
    /// Advertised gossip address (never a wildcard address).
    pub addr: SocketAddr,
    pub generation: u64,
    pub bump: u32,
    pub meta: NodeMeta,
}

impl NodeId {
    /// The same member with new metadata, announced as a newer incarnation.
    pub fn with_meta(&self, meta: NodeMeta) -> NodeId {
        NodeId {
            meta,
            bump: self.bump.wrapping_add(1),
            ..self.clone()
        }
    }

    fn version(&self) -> (u64, u32) {
        (self.generation, self.bump)
    }
}

impl foca::Identity for NodeId {
    type Addr = SocketAddr;

    /// A member that the pool declared down (wrongly, since it is still running) rejoins by
    /// itself as a newer incarnation.
    fn renew(&self) -> Option<Self> {
        Some(NodeId {
            bump: self.bump.wrapping_add(1),
            ..self.clone()
        })
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.version() > adversary.version()
    }
}

/// A short, stable fingerprint of a registry (its kind and its own identifier), announced in
/// gossip so that two data centres that chose the same cluster name by accident are noticed.
pub fn registry_fingerprint(kind: &str, id: &str) -> String {
    use sha1::{Digest, Sha1};
    let digest = Sha1::digest(format!("{kind}\0{id}").as_bytes());
    hex::encode(&digest[..6])
}

/// A generation that is larger than `previous` and, when the clock allows, the current time
/// in milliseconds, so it grows across restarts even when the data directory was lost.
pub fn next_generation(previous: Option<u64>) -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    match previous {
        Some(previous) => now.max(previous.saturating_add(1)),
        None => now.max(1),
    }
}

#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;

    pub(crate) fn id(name: &str, port: u16, generation: u64) -> NodeId {
        let mut meta = NodeMeta::new(
            "dc1",
            SocketAddr::from(([127, 0, 0, 1], port + 1)),
            "single",
        );
        meta.protocol = 1;
        NodeId {
            name: name.to_owned(),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            generation,
            bump: 0,
            meta,
        }
    }
}

#[cfg(test)]
mod tests {
    use foca::Identity;

    use super::tests_support::id;
    use super::*;

    #[test]
    fn newer_generation_and_bump_win() {
        let old = id("a", 7000, 5);
        let restarted = id("a", 7000, 6);
        assert!(restarted.win_addr_conflict(&old));
        assert!(!old.win_addr_conflict(&restarted));
        let renewed = old.renew().unwrap();
        assert!(renewed.win_addr_conflict(&old));
        assert!(
            restarted.win_addr_conflict(&renewed),
            "generation beats bump"
        );
        let mut meta = old.meta.clone();
        meta.role = Role::Standby;
        assert!(old.with_meta(meta).win_addr_conflict(&old));
    }

    #[test]
    fn generation_grows() {
        let first = next_generation(None);
        assert!(next_generation(Some(first)) > first);
        assert_eq!(next_generation(Some(u64::MAX - 1)), u64::MAX);
    }

    /// The identity of a cluster-mode member with every field set, names at their longest.
    fn largest() -> NodeId {
        let mut id = id(&"n".repeat(64), 7000, next_generation(None));
        let meta = &mut id.meta;
        meta.cluster = "c".repeat(64);
        meta.rpc_addr = "[fd00:1234:5678::11]:30191".parse().unwrap();
        meta.mode = "cluster".into();
        meta.role = Role::Standby;
        meta.registry = registry_fingerprint("servicecenter", "abc");
        meta.protocol = 4;
        // `https://`: the longer scheme of a managed etcd member with TLS.
        meta.etcd_peer_url = "https://[fd00:1234:5678::11]:30194".into();
        meta.etcd_client_url = "https://[fd00:1234:5678::11]:30195".into();
        meta.etcd_ready = true;
        meta.etcd_data = true;
        meta.term = 1 << 40;
        id
    }

    #[test]
    fn identity_is_small() {
        let mut long = id(&"n".repeat(64), 7000, next_generation(None));
        long.meta.cluster = "c".repeat(64);
        long.meta.registry = registry_fingerprint("servicecenter", "abc");
        let size = postcard::to_allocvec(&long).unwrap().len();
        assert!(size < 200, "identity takes {size} bytes");
        assert_eq!(long.meta.registry.len(), 12);
        // Every field set: still far below a datagram, which carries two identities (sender
        // and receiver) plus the updates piggybacked on it.
        let size = postcard::to_allocvec(&largest()).unwrap().len();
        assert!(size < 300, "identity takes {size} bytes");
    }

    /// The largest identity the configuration allows: a 63-character node name and a
    /// 128-character cluster name (the limits `config` checks), full-width IPv6 addresses
    /// everywhere, every number at its largest. About 420 bytes (protocol 3's positional form
    /// took about 400), well above the 300 of `largest()`, which still leaves room for foca's
    /// largest header (three identities) and for a two-identity header plus one update.
    #[test]
    fn worst_case_identities_fit_a_datagram() {
        use crate::gossip::packet::{
            FRAME_OVERHEAD_BYTES, MAX_DATAGRAM_BYTES, MAX_LABEL_BYTES, SEALED_OVERHEAD_BYTES,
        };

        let v6: SocketAddr = "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535"
            .parse()
            .unwrap();
        let mut worst = id(&"n".repeat(63), 7000, u64::MAX);
        worst.addr = v6;
        worst.bump = u32::MAX;
        let meta = &mut worst.meta;
        meta.cluster = "c".repeat(128);
        meta.rpc_addr = v6;
        meta.mode = "cluster".into();
        meta.role = Role::Standby;
        meta.registry = registry_fingerprint("servicecenter", "abc");
        meta.protocol = u32::MAX;
        meta.etcd_peer_url = format!("https://{v6}");
        meta.etcd_client_url = format!("https://{v6}");
        meta.etcd_ready = true;
        meta.etcd_data = true;
        meta.term = u64::MAX;
        let size = postcard::to_allocvec(&worst).unwrap().len();
        assert!(size < 450, "identity takes {size} bytes");

        // A sealed datagram (gossip key set) has the least room.
        let budget =
            MAX_DATAGRAM_BYTES - FRAME_OVERHEAD_BYTES - SEALED_OVERHEAD_BYTES - MAX_LABEL_BYTES;
        let header = |message| foca::Header {
            src: worst.clone(),
            src_incarnation: u16::MAX,
            dst: worst.clone(),
            message,
        };
        let indirect = postcard::to_allocvec(&header(foca::Message::IndirectPing {
            origin: worst.clone(),
            probe_number: u8::MAX,
        }))
        .unwrap()
        .len();
        assert!(indirect <= budget, "{indirect} > {budget}");
        let gossip = postcard::to_allocvec(&header(foca::Message::Gossip))
            .unwrap()
            .len();
        let update = postcard::to_allocvec(&foca::Member::new(
            worst.clone(),
            u16::MAX,
            foca::State::Suspect,
        ))
        .unwrap()
        .len();
        assert!(
            gossip + 2 + update <= budget,
            "{gossip} + {update} > {budget}"
        );
    }

    /// A whole identity with entries of a newer release goes through foca's codec and comes
    /// out equal, byte for byte when encoded again: what an older member passes on is what the
    /// newer one announced.
    #[test]
    fn identity_with_newer_fields_passes_through_unchanged() {
        let mut newer = largest();
        newer.meta.insert_unknown(30, b"zone-a".to_vec());
        let wire = postcard::to_allocvec(&newer).unwrap();
        let relayed: NodeId = postcard::from_bytes(&wire).unwrap();
        assert_eq!(relayed, newer);
        assert_eq!(postcard::to_allocvec(&relayed).unwrap(), wire);
        assert_eq!(relayed.meta.unknown().get(&30), Some(&b"zone-a".to_vec()));
        let mut plain = newer.clone();
        plain.meta = largest().meta;
        assert_ne!(newer, plain, "the newer fields are part of the identity");
    }

    /// Protocol 3's identity, as that release declared it (positional postcard).
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct V3Id {
        name: String,
        addr: SocketAddr,
        generation: u64,
        bump: u32,
        cluster: String,
        rpc_addr: SocketAddr,
        mode: String,
        role: u8,
        registry: String,
        protocol: u32,
        etcd_peer_url: String,
        etcd_client_url: String,
        etcd_ready: bool,
        etcd_data: bool,
        term: u64,
    }

    /// Protocol 4 is the last break: neither side misreads the other's identity, each refuses
    /// it (and counts the packet as undecodable).
    #[test]
    fn protocol_3_and_4_identities_are_refused_not_misread() {
        let new = postcard::to_allocvec(&largest()).unwrap();
        assert!(postcard::from_bytes::<V3Id>(&new).is_err());
        let mut single = id("a", 7000, 5);
        single.meta.registry = registry_fingerprint("servicecenter", "abc");
        assert!(postcard::from_bytes::<V3Id>(&postcard::to_allocvec(&single).unwrap()).is_err());
        let old = V3Id {
            name: "a".into(),
            addr: "127.0.0.1:7000".parse().unwrap(),
            generation: 5,
            bump: 0,
            cluster: "dc1".into(),
            rpc_addr: "127.0.0.1:7001".parse().unwrap(),
            mode: "single".into(),
            role: 0,
            registry: String::new(),
            protocol: 3,
            etcd_peer_url: String::new(),
            etcd_client_url: String::new(),
            etcd_ready: false,
            etcd_data: false,
            term: 0,
        };
        assert!(postcard::from_bytes::<NodeId>(&postcard::to_allocvec(&old).unwrap()).is_err());
    }
}

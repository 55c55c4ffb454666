//! The gRPC edge: the generated protocol types (`proto/syncer/v1/syncer.proto`) and the
//! `Peer` service other syncers and operators call.
//!
//! Status mapping of errors lives in one place (`status.rs`, with the RPCs that need it).

pub mod client;
pub mod convert;
pub mod server;

/// Generated code of `proto/syncer/v1/syncer.proto`.
pub mod proto {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("syncer.v1");
}

/// Version of the wire protocol; bumped when a change needs peers to know about it.
/// 2: gossip metadata carries the managed etcd member's URLs and readiness.
/// 3: ... whether that member has data of an existing cluster, and the active member's term.
/// 4: gossip metadata is tagged (`gossip/meta.rs`): from 4 on, metadata fields can be added
///    without breaking older members. Members of 3 or older cannot read it (the last break).
pub const PROTOCOL_VERSION: u32 = 4;

pub use server::{PeerService, serve};

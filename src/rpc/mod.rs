//! The gRPC edge: the generated protocol types (`proto/syncer/v1/syncer.proto`) and the
//! `Peer` service other syncers and operators call. The sync engine knows none of it: it
//! speaks model types through `crate::sync::link::PeerLink`, which [`transfer::GrpcLink`]
//! implements here.
//!
//! - [`channel`]: the one builder of client channels (TLS included).
//! - [`client`]: `Info` and `Members` calls (`syncer members`, the join probe).
//! - [`convert`]: model ⇄ wire conversions and the validation of everything received.
//! - [`transfer`]: both halves of `Pull` and `Push`.
//! - [`ops`]: both halves of the operator's `Status` and `Mappings`.
//! - `status`: the one mapping of refusals to gRPC statuses and back.
//! - [`server`]: the `Peer` service.
//! - [`tls`]: the certificate files and the TLS configurations made from them.

pub mod channel;
pub mod client;
pub mod convert;
#[cfg(test)]
mod fuzz;
pub mod ops;
pub mod server;
mod status;
pub mod tls;
pub mod transfer;

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

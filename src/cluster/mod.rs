//! Cluster mode: several syncers per data centre, exactly one of them active.
//!
//! - [`leader`]: the lease-based election in etcd, the fence on mapping writes and the gate
//!   that stops registry writes of a member whose leadership is no longer confirmed.
//! - [`managed`]: the etcd member each syncer runs when no `--etcd-endpoints` are given.

pub mod gated;
pub mod leader;
pub mod managed;

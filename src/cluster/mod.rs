//! Cluster mode: several syncers per data centre, exactly one of them active.
//!
//! - [`member`]: one syncer of a data centre: opens the etcd store, campaigns, runs the sync
//!   engine for each term it wins and stops each term in order (engine, lease, role).
//! - [`leader`]: the lease-based election in etcd, the fence on mapping writes and the gate
//!   that stops registry writes of a member whose leadership is no longer confirmed.
//! - [`gated`]: the registry whose writes pass that gate.
//! - [`managed`]: the etcd member each syncer runs when no `--etcd-endpoints` are given; it
//!   publishes the data centre's client URLs as they change.

pub mod gated;
pub mod leader;
pub mod managed;
pub mod member;

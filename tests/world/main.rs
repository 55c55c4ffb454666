//! The test world: several data centres in one test process, each with an in-memory
//! registry (a Service Center twin with its leases, or a Eureka-like one, see
//! `harness::Kind`), an in-memory mapping store, a member of one
//! in-memory gossip pool and a sync engine, all under tokio's paused clock. Seconds of
//! leases, grace periods and anti-entropy rounds pass in milliseconds of real time, and
//! nothing touches a socket.
//!
//! - `harness`: [`harness::World`], the data centres and the knobs the scenarios turn
//!   (partitions, stopped syncers, a slow registry, a second engine on a shared store).
//! - `link`: the one place where the engines' peer transfer is built and partitioned.
//! - `mirroring`, `faults`, `failover`, `gaps`, `stalls`, `shared`, `services`, `contracts`, `eureka`, `status`: the scenarios, each
//!   asserting the engine's behaviour with deadlines in virtual time and the world's invariants at the end.
//!
//! Built on the crate's public API only, as a user of the engine would be.

mod contracts;
mod eureka;
mod failover;
mod faults;
mod filters;
mod gaps;
mod harness;
mod link;
mod mirroring;
mod services;
mod shared;
mod stalls;
mod status;

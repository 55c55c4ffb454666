//! syncer keeps microservice instances in sync between service registries in several data
//! centres. It succeeds Apache ServiceComb's Go Syncer 1.3: same command line and topology.
//!
//! # Layout
//! - [`cli`]: the command line (`syncer daemon`, `syncer version`) and each subcommand's entry.
//! - [`config`]: the one configuration tree, from defaults, YAML file, environment and flags.
//! - [`node`]: one running syncer; binds listeners, owns tasks, shuts down in order.
//! - [`shutdown`]: signals and the root cancellation token.
//! - [`telemetry`]: logging set-up and the metrics registry.
//! - [`admin`]: `/health` and `/metrics` over HTTP.
//! - [`backoff`]: the one retry policy of every loop that waits for something to come back.
//! - [`rpc`]: the gRPC protocol between syncers (`proto/syncer/v1`).
//! - [`gossip`]: the SWIM gossip pool of all syncers (foca).
//! - [`registry`]: one adapter per registry kind behind one trait.
//! - [`devreg`]: an in-memory ServiceComb Service Center emulator for development and tests.
//! - [`store`]: where the mapping table lives (embedded or etcd).
//! - [`sync`]: the engine that mirrors instances between data centres.
//!
//! docs/DESIGN.md describes the architecture and protocols.

#![deny(clippy::await_holding_lock)]

pub mod admin;
pub mod backoff;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod devreg;
pub mod gossip;
pub mod node;
pub mod registry;
pub mod rpc;
pub mod shutdown;
pub mod store;
pub mod sync;
pub mod telemetry;

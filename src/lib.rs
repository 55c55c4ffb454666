//! syncer keeps microservice instances in sync between service registries in several data
//! centres. It succeeds Apache ServiceComb's Go Syncer 1.3: same command line and topology.
//!
//! # Layout
//! - [`cli`]: the command line: `syncer daemon`, `members`, `demo`, `dev-registry`, `version`.
//! - [`config`]: the table of settings and the typed configuration; imports nothing of the crate.
//! - [`node`]: one running syncer: build, spawn, wait, stop.
//! - [`dc_name`]: the data centre's default name (from the registry's identity, saved).
//! - [`service`]: systemd's readiness and watchdog notifications.
//! - [`shutdown`]: signals and the ordered stop, step by step, each with its deadline.
//! - [`backoff`]: the one retry policy of every loop that waits for something to come back.
//! - [`telemetry`]: logging set-up and the metrics registry.
//! - [`admin`]: `/health` and `/metrics` over HTTP.
//! - [`rpc`]: the gRPC edge between syncers (`proto/syncer/v1`), both halves of `Pull`/`Push`.
//! - [`registry`]: one trait, its model, a factory, the shared bounds, one adapter per kind.
//! - [`devreg`]: an in-memory ServiceComb Service Center emulator for development and tests.
//! - [`gossip`]: the SWIM gossip pool of all syncers (foca), with tagged member metadata.
//! - [`store`]: where the mapping table lives (in memory, embedded redb, or etcd).
//! - [`sync`]: the engine that mirrors instances between data centres, in model terms only.
//! - [`cluster`]: cluster mode: election and fencing in etcd, terms, the managed etcd member.
//!
//! docs/DESIGN.md describes the architecture and protocols; its module table follows this
//! order and says what each module may import.

#![deny(clippy::await_holding_lock)]

pub mod admin;
pub mod audit;
pub mod backoff;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod dc_name;
pub mod devreg;
pub mod gossip;
pub mod inspect;
pub mod node;
pub mod registry;
pub mod rpc;
pub mod service;
pub mod shutdown;
pub mod store;
pub mod sync;
pub mod telemetry;
pub mod tls;

/// Cases of each property test (the hostile-input suites, docs/RELIABILITY.md, "Fuzzed inputs"):
/// `default` in CI, or `PROPTEST_CASES` when set, for longer runs by hand.
#[cfg(test)]
pub(crate) fn fuzz_cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

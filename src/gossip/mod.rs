//! The gossip pool: every syncer of every data centre is a member of one SWIM pool (foca)
//! over UDP on `--bind-addr`. Membership, failure detection and small broadcast events.
//!
//! Planned shape (STYLE.md §2.4-2.6): one task owns `Foca`; `runtime.rs` only queues sends,
//! timers and notifications; `transport/` has a UDP socket and an in-memory twin that can
//! partition links; the identity carries a generation that grows across restarts.

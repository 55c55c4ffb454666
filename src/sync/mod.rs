//! The sync engine: exports local changes, pushes them to the other data centres, imports
//! theirs into the local registry, and keeps mirrored copies alive.

pub mod copy;
pub mod export;
pub mod ids;
pub mod safety;

//! `syncer keygen`: prints a new random gossip key, in the base64 form `--gossip-key` takes.
//!
//! The key comes from the operating system's random source (through `rand`'s thread
//! generator, seeded from it), so operators need no other tool to make one.

use std::process::ExitCode;

use crate::gossip::GossipKey;

/// Prints one new key and a newline.
pub fn run() -> ExitCode {
    println!("{}", GossipKey::generate().to_base64());
    ExitCode::SUCCESS
}

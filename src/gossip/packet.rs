//! The framing around every gossip datagram: a magic byte, the pool label and a kind.
//!
//! ```text
//! [0xC5][label length: u8][label bytes][kind: u8][body]
//! ```
//!
//! The label keeps pools that share a network apart (memberlist's label does the same): a
//! datagram with another label is dropped before foca sees it. Kinds: foca's own packets,
//! `Hello` (a member asking to be let in, by address only), `Welcome` (the answer, carrying
//! the receiver's identity, to which the newcomer then announces itself) and `Notice` (a
//! broadcast item sent straight to a member rather than piggybacked, used to announce a
//! graceful leave at once).

/// First byte of every syncer gossip datagram.
const MAGIC: u8 = 0xC5;
/// Longest accepted `--gossip-label` (the configuration checks it).
pub const MAX_LABEL_BYTES: usize = crate::config::MAX_GOSSIP_LABEL_BYTES;
/// Largest datagram syncer sends or accepts; fits an Ethernet MTU with room for IP/UDP.
pub const MAX_DATAGRAM_BYTES: usize = 1400;
/// The framing's own bytes besides the label.
pub const FRAME_OVERHEAD_BYTES: usize = 3;

/// What a datagram carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Foca,
    Hello,
    Welcome,
    Notice,
}

impl Kind {
    fn byte(self) -> u8 {
        match self {
            Kind::Foca => 0,
            Kind::Hello => 1,
            Kind::Welcome => 3,
            Kind::Notice => 2,
        }
    }
}

/// Why a datagram was dropped; also the `reason` label of the drop counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    Oversized,
    Malformed,
    Label,
}

impl Reject {
    pub fn as_str(self) -> &'static str {
        match self {
            Reject::Oversized => "oversized",
            Reject::Malformed => "malformed",
            Reject::Label => "label",
        }
    }
}

/// Writes the frame header for `kind` into an empty `out`.
pub fn frame(label: &[u8], kind: Kind, out: &mut Vec<u8>) {
    debug_assert!(label.len() <= MAX_LABEL_BYTES);
    out.clear();
    out.push(MAGIC);
    out.push(u8::try_from(label.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(label);
    out.push(kind.byte());
}

/// Checks a received datagram and returns its kind and body.
pub fn unframe<'a>(label: &[u8], datagram: &'a [u8]) -> Result<(Kind, &'a [u8]), Reject> {
    if datagram.len() > MAX_DATAGRAM_BYTES {
        return Err(Reject::Oversized);
    }
    let [magic, len, rest @ ..] = datagram else {
        return Err(Reject::Malformed);
    };
    if *magic != MAGIC {
        return Err(Reject::Malformed);
    }
    let len = usize::from(*len);
    let (their_label, rest) = rest.split_at_checked(len).ok_or(Reject::Malformed)?;
    if their_label != label {
        return Err(Reject::Label);
    }
    let (kind, body) = rest.split_first().ok_or(Reject::Malformed)?;
    let kind = match kind {
        0 => Kind::Foca,
        1 => Kind::Hello,
        2 => Kind::Notice,
        3 => Kind::Welcome,
        _ => return Err(Reject::Malformed),
    };
    Ok((kind, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejects() {
        let mut out = Vec::new();
        frame(b"blue", Kind::Notice, &mut out);
        out.extend_from_slice(b"body");
        assert_eq!(unframe(b"blue", &out), Ok((Kind::Notice, &b"body"[..])));
        assert_eq!(unframe(b"", &out), Err(Reject::Label));
        assert_eq!(unframe(b"blue", &out[..3]), Err(Reject::Malformed));
        assert_eq!(unframe(b"", &[]), Err(Reject::Malformed));
        assert_eq!(unframe(b"", &[MAGIC, 0, 9]), Err(Reject::Malformed));
        assert_eq!(unframe(b"", &[1, 0, 0]), Err(Reject::Malformed));
        assert_eq!(
            unframe(b"", &[MAGIC; MAX_DATAGRAM_BYTES + 1]),
            Err(Reject::Oversized)
        );
        frame(b"", Kind::Foca, &mut out);
        assert_eq!(unframe(b"", &out), Ok((Kind::Foca, &b""[..])));
    }
}

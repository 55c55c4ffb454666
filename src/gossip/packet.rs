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
//!
//! With a gossip key, the kind and body are sealed (`keyring.rs`) and the magic byte is
//! `0xC6`; the header before them (magic, label) is the associated data, so a datagram cannot
//! be moved to another pool. The label is still checked first, in clear, so pools that share
//! a network still tell each other apart without trying keys:
//!
//! ```text
//! [0xC6][label length: u8][label bytes][nonce: 24][sealed: kind + body][tag: 16]
//! ```
//!
//! A member without a key drops sealed datagrams and a member with one drops plain ones:
//! both count as `decrypt`, like a datagram no installed key opens.

use super::keyring::{Keyring, SEAL_OVERHEAD_BYTES};

/// First byte of every syncer gossip datagram.
const MAGIC: u8 = 0xC5;
/// First byte of a sealed datagram.
const MAGIC_SEALED: u8 = 0xC6;
/// Longest accepted `--gossip-label` (the configuration checks it).
pub const MAX_LABEL_BYTES: usize = crate::config::MAX_GOSSIP_LABEL_BYTES;
/// Largest datagram syncer sends or accepts; fits an Ethernet MTU with room for IP/UDP.
pub const MAX_DATAGRAM_BYTES: usize = 1400;
/// The framing's own bytes besides the label.
pub const FRAME_OVERHEAD_BYTES: usize = 3;
/// What sealing adds to a datagram (nonce and tag).
pub const SEALED_OVERHEAD_BYTES: usize = SEAL_OVERHEAD_BYTES;

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
    /// Sealed but no installed key opens it, sealed without a key here, or plain while this
    /// member seals.
    Decrypt,
}

impl Reject {
    pub fn as_str(self) -> &'static str {
        match self {
            Reject::Oversized => "oversized",
            Reject::Malformed => "malformed",
            Reject::Label => "label",
            Reject::Decrypt => "decrypt",
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

/// Writes the sealed datagram for `kind` and `body` into `out` (cleared first).
pub fn seal(label: &[u8], keyring: &Keyring, kind: Kind, body: &[u8], out: &mut Vec<u8>) {
    debug_assert!(label.len() <= MAX_LABEL_BYTES);
    out.clear();
    out.push(MAGIC_SEALED);
    out.push(u8::try_from(label.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(label);
    let header = out.clone();
    let mut plain = Vec::with_capacity(body.len() + 1);
    plain.push(kind.byte());
    plain.extend_from_slice(body);
    keyring.seal(&header, &plain, out);
}

/// Checks a received plain datagram and returns its kind and body.
pub fn unframe<'a>(label: &[u8], datagram: &'a [u8]) -> Result<(Kind, &'a [u8]), Reject> {
    match split(label, datagram)? {
        (false, _, rest) => kind_and_body(rest),
        (true, _, _) => Err(Reject::Decrypt),
    }
}

/// Checks and opens a received sealed datagram; the kind and body are decrypted into `plain`.
pub fn open<'a>(
    label: &[u8],
    keyring: &Keyring,
    datagram: &[u8],
    plain: &'a mut Vec<u8>,
) -> Result<(Kind, &'a [u8]), Reject> {
    match split(label, datagram)? {
        (true, header, sealed) if keyring.open(&datagram[..header], sealed, plain) => {
            kind_and_body(plain)
        }
        _ => Err(Reject::Decrypt),
    }
}

/// Checks size, magic and label; returns whether the datagram is sealed, the header's length
/// and what follows the header.
fn split<'a>(label: &[u8], datagram: &'a [u8]) -> Result<(bool, usize, &'a [u8]), Reject> {
    if datagram.len() > MAX_DATAGRAM_BYTES {
        return Err(Reject::Oversized);
    }
    let [magic, len, rest @ ..] = datagram else {
        return Err(Reject::Malformed);
    };
    let sealed = match *magic {
        MAGIC => false,
        MAGIC_SEALED => true,
        _ => return Err(Reject::Malformed),
    };
    let len = usize::from(*len);
    let (their_label, rest) = rest.split_at_checked(len).ok_or(Reject::Malformed)?;
    if their_label != label {
        return Err(Reject::Label);
    }
    Ok((sealed, 2 + len, rest))
}

fn kind_and_body(rest: &[u8]) -> Result<(Kind, &[u8]), Reject> {
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

    #[test]
    fn sealed_round_trip_label_binding_and_mixing() {
        use crate::gossip::keyring::GossipKey;

        let keyring = Keyring::new(&GossipKey::generate(), &[]);
        let mut out = Vec::new();
        let mut plain = Vec::new();
        seal(b"blue", &keyring, Kind::Notice, b"body", &mut out);
        assert_eq!(
            out.len(),
            FRAME_OVERHEAD_BYTES + 4 + 4 + SEALED_OVERHEAD_BYTES
        );
        assert_eq!(
            open(b"blue", &keyring, &out, &mut plain),
            Ok((Kind::Notice, &b"body"[..]))
        );
        // The label is checked in clear first, then bound: a datagram relabelled to another
        // pool does not open there.
        assert_eq!(open(b"red", &keyring, &out, &mut plain), Err(Reject::Label));
        let mut relabelled = out.clone();
        relabelled[2..6].copy_from_slice(b"bluf");
        assert_eq!(
            open(b"bluf", &keyring, &relabelled, &mut plain),
            Err(Reject::Decrypt)
        );
        let mut tampered = out.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 0x80;
        assert_eq!(
            open(b"blue", &keyring, &tampered, &mut plain),
            Err(Reject::Decrypt)
        );
        let stranger = Keyring::new(&GossipKey::generate(), &[]);
        assert_eq!(
            open(b"blue", &stranger, &out, &mut plain),
            Err(Reject::Decrypt)
        );
        // Sealed to a keyless member, plain to a keyed one: both dropped as `decrypt`.
        assert_eq!(unframe(b"blue", &out), Err(Reject::Decrypt));
        frame(b"blue", Kind::Notice, &mut out);
        out.extend_from_slice(b"body");
        assert_eq!(
            open(b"blue", &keyring, &out, &mut plain),
            Err(Reject::Decrypt)
        );
    }
}

/// Property tests over hostile datagrams (issue 20): a fixed number of cases in CI, more with
/// `PROPTEST_CASES` (docs/RELIABILITY.md, "Fuzzed inputs").
#[cfg(test)]
mod props {
    use proptest::prelude::*;

    use super::*;
    use crate::gossip::keyring::GossipKey;

    fn config() -> ProptestConfig {
        ProptestConfig {
            failure_persistence: None,
            ..ProptestConfig::with_cases(crate::fuzz_cases(512))
        }
    }

    fn kind() -> impl Strategy<Value = Kind> {
        prop_oneof![
            Just(Kind::Foca),
            Just(Kind::Hello),
            Just(Kind::Welcome),
            Just(Kind::Notice)
        ]
    }

    fn label() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(any::<u8>(), 0..=MAX_LABEL_BYTES)
    }

    /// Room left for the body of a sealed datagram with `label`.
    fn sealed_room(label: &[u8]) -> usize {
        MAX_DATAGRAM_BYTES - FRAME_OVERHEAD_BYTES - label.len() - SEALED_OVERHEAD_BYTES
    }

    proptest! {
        #![proptest_config(config())]

        /// Arbitrary bytes never panic; what is accepted really is a frame of this label,
        /// and it is never mistaken for a sealed one.
        #[test]
        fn arbitrary_datagrams_are_refused_or_exact(
            label in label(),
            datagram in proptest::collection::vec(any::<u8>(), 0..MAX_DATAGRAM_BYTES + 64),
        ) {
            let keyring = Keyring::new(&GossipKey::generate(), &[]);
            let mut plain = Vec::new();
            match unframe(&label, &datagram) {
                Ok((kind, body)) => {
                    prop_assert!(datagram.len() <= MAX_DATAGRAM_BYTES);
                    let mut again = Vec::new();
                    frame(&label, kind, &mut again);
                    again.extend_from_slice(body);
                    prop_assert_eq!(again, datagram.clone());
                }
                Err(reject) if datagram.len() > MAX_DATAGRAM_BYTES => {
                    prop_assert_eq!(reject, Reject::Oversized);
                }
                Err(_) => {}
            }
            // Random bytes never open under a key (a forgery would need the key).
            prop_assert!(open(&label, &keyring, &datagram, &mut plain).is_err());
        }

        /// Every frame this member writes is read back as written, and every shorter prefix
        /// that cuts into the header is refused as malformed.
        #[test]
        fn plain_frames_round_trip_and_truncations_are_refused(
            label in label(),
            kind in kind(),
            body in proptest::collection::vec(any::<u8>(), 0..512),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut out = Vec::new();
            frame(&label, kind, &mut out);
            out.extend_from_slice(&body);
            prop_assert_eq!(unframe(&label, &out), Ok((kind, &body[..])));
            let header = FRAME_OVERHEAD_BYTES + label.len();
            let cut = cut.index(header);
            prop_assert_eq!(unframe(&label, &out[..cut]), Err(Reject::Malformed));
        }

        /// A sealed datagram opens to what was sealed; with any single bit flipped, cut short
        /// anywhere or grown by a byte it is refused, and never decodes to something else.
        #[test]
        fn sealed_datagrams_refuse_any_bit_flip_or_truncation(
            label in label(),
            kind in kind(),
            body_len in 0usize..=512,
            seed in any::<u8>(),
            bit in any::<prop::sample::Index>(),
            cut in any::<prop::sample::Index>(),
        ) {
            let keyring = Keyring::new(&GossipKey::generate(), &[]);
            let body: Vec<u8> = (0..body_len.min(sealed_room(&label)))
                .map(|n| seed.wrapping_add(n as u8))
                .collect();
            let mut out = Vec::new();
            let mut plain = Vec::new();
            seal(&label, &keyring, kind, &body, &mut out);
            prop_assert!(out.len() <= MAX_DATAGRAM_BYTES);
            prop_assert_eq!(open(&label, &keyring, &out, &mut plain), Ok((kind, &body[..])));

            let bit = bit.index(out.len() * 8);
            let mut flipped = out.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            let refused = open(&label, &keyring, &flipped, &mut plain);
            prop_assert!(refused.is_err(), "bit {} flipped was accepted: {:?}", bit, refused);
            // The label bytes are checked in clear (label), the magic byte tells plain from
            // sealed (malformed or decrypt); anything after the header is the AEAD's (decrypt).
            if bit / 8 >= 2 + label.len() {
                prop_assert_eq!(refused, Err(Reject::Decrypt));
            }

            let cut = cut.index(out.len());
            prop_assert!(open(&label, &keyring, &out[..cut], &mut plain).is_err());
            let mut grown = out.clone();
            grown.push(seed);
            prop_assert!(open(&label, &keyring, &grown, &mut plain).is_err());
        }
    }
}

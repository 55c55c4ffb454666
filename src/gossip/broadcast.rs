//! Broadcast items that ride on foca's messages: user events and leave notices.
//!
//! foca disseminates an item as long as the handler says it was news; the handler therefore
//! remembers what it has seen. That memory is bounded: per origin member a generation, the
//! highest sequence number and a 128-wide window below it (an anti-replay window), for at
//! most [`MAX_ORIGINS`] origins.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};

use super::NodeId;

/// Origins whose dedupe window is kept; the stalest is forgotten beyond this.
pub const MAX_ORIGINS: usize = 4096;
/// Sequence numbers remembered below the highest one seen, per origin.
const WINDOW: u64 = 128;

/// One broadcast item, as encoded on the wire (postcard).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Item {
    /// A user event from member `origin`, numbered per generation of that member.
    Event {
        origin: String,
        generation: u64,
        seq: u64,
        payload: Vec<u8>,
    },
    /// Member `name` at `addr` is leaving gracefully.
    Leave {
        name: String,
        addr: SocketAddr,
        generation: u64,
    },
}

impl Item {
    pub fn encode(&self) -> Vec<u8> {
        // Encoding plain data into a Vec cannot fail.
        postcard::to_allocvec(self).unwrap_or_default()
    }

    fn key(&self) -> Key {
        match self {
            Item::Event {
                origin,
                generation,
                seq,
                ..
            } => Key {
                origin: origin.clone(),
                generation: *generation,
                seq: *seq,
            },
            Item::Leave {
                name, generation, ..
            } => Key {
                origin: name.clone(),
                generation: *generation,
                seq: u64::MAX,
            },
        }
    }
}

/// Identifies an item; two items invalidate each other only when they are the same item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    origin: String,
    generation: u64,
    seq: u64,
}

impl foca::Invalidates for Key {
    fn invalidates(&self, other: &Self) -> bool {
        self == other
    }
}

#[derive(Debug, Clone, Copy)]
struct Window {
    generation: u64,
    highest: u64,
    /// Bit `i` set: `highest - i` was seen.
    seen: u128,
    touched: u64,
}

/// Remembers which items were seen, within bounded memory.
#[derive(Debug, Default)]
pub struct Dedupe {
    windows: HashMap<String, Window>,
    clock: u64,
}

impl Dedupe {
    /// Records `(origin, generation, seq)`; true when it was not seen before.
    pub fn first_time(&mut self, origin: &str, generation: u64, seq: u64) -> bool {
        self.clock += 1;
        let clock = self.clock;
        if let Some(window) = self.windows.get_mut(origin) {
            window.touched = clock;
            if generation < window.generation {
                return false;
            }
            if generation > window.generation {
                *window = Window {
                    generation,
                    highest: seq,
                    seen: 1,
                    touched: clock,
                };
                return true;
            }
            if seq > window.highest {
                let shift = seq - window.highest;
                window.seen = if shift >= WINDOW {
                    0
                } else {
                    window.seen << shift
                };
                window.seen |= 1;
                window.highest = seq;
                return true;
            }
            let age = window.highest - seq;
            if age >= WINDOW {
                return false;
            }
            let bit = 1u128 << age;
            let new = window.seen & bit == 0;
            window.seen |= bit;
            return new;
        }
        if self.windows.len() >= MAX_ORIGINS
            && let Some(stalest) = self
                .windows
                .iter()
                .min_by_key(|(_, w)| w.touched)
                .map(|(k, _)| k.clone())
        {
            self.windows.remove(&stalest);
        }
        self.windows.insert(
            origin.to_owned(),
            Window {
                generation,
                highest: seq,
                seen: 1,
                touched: clock,
            },
        );
        true
    }

    #[cfg(test)]
    pub fn origins(&self) -> usize {
        self.windows.len()
    }
}

/// Why a broadcast item was refused (it is dropped and counted, never fatal).
#[derive(Debug, thiserror::Error)]
#[error("undecodable broadcast item: {0}")]
pub struct BadItem(String);

/// foca's broadcast handler: decodes items, drops repeats, queues news for the actor.
pub struct Handler {
    dedupe: Dedupe,
    deliveries: Arc<Mutex<VecDeque<Item>>>,
}

impl Handler {
    /// A handler that queues the items that were news (from other members) in `deliveries`.
    pub fn new(deliveries: Arc<Mutex<VecDeque<Item>>>) -> Handler {
        Handler {
            dedupe: Dedupe::default(),
            deliveries,
        }
    }

    fn push(&self, delivery: Item) {
        self.deliveries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push_back(delivery);
    }
}

impl foca::BroadcastHandler<NodeId> for Handler {
    type Key = Key;
    type Error = BadItem;

    fn receive_item(
        &mut self,
        data: &[u8],
        sender: Option<&NodeId>,
    ) -> Result<Option<Key>, BadItem> {
        let item: Item = postcard::from_bytes(data).map_err(|e| BadItem(e.to_string()))?;
        let key = item.key();
        if !self.dedupe.first_time(&key.origin, key.generation, key.seq) {
            return Ok(None);
        }
        // Our own items (no sender) are disseminated but not delivered back to us.
        if sender.is_some() {
            self.push(item);
        }
        Ok(Some(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedupe_window() {
        let mut d = Dedupe::default();
        assert!(d.first_time("a", 1, 5));
        assert!(!d.first_time("a", 1, 5));
        assert!(d.first_time("a", 1, 3), "older but unseen");
        assert!(!d.first_time("a", 1, 3));
        assert!(d.first_time("a", 1, 300));
        assert!(!d.first_time("a", 1, 5), "fell out of the window");
        assert!(d.first_time("a", 1, 299));
        assert!(!d.first_time("a", 0, 1000), "older generation");
        assert!(d.first_time("a", 2, 0), "new generation starts over");
        assert!(d.first_time("b", 1, 0));
        assert_eq!(d.origins(), 2);
    }

    #[test]
    fn dedupe_memory_is_bounded() {
        let mut d = Dedupe::default();
        for i in 0..MAX_ORIGINS + 10 {
            assert!(d.first_time(&format!("n{i}"), 1, 0));
        }
        assert_eq!(d.origins(), MAX_ORIGINS);
    }

    #[test]
    fn handler_delivers_news_once_and_rejects_garbage() {
        use foca::BroadcastHandler;
        let queue = Arc::new(Mutex::new(VecDeque::new()));
        let mut h = Handler::new(queue.clone());
        let item = Item::Event {
            origin: "a".into(),
            generation: 1,
            seq: 0,
            payload: b"x".to_vec(),
        };
        let sender = crate::gossip::identity::tests_support::id("a", 9000, 1);
        assert!(
            h.receive_item(&item.encode(), Some(&sender))
                .unwrap()
                .is_some()
        );
        assert!(
            h.receive_item(&item.encode(), Some(&sender))
                .unwrap()
                .is_none()
        );
        assert_eq!(queue.lock().unwrap().len(), 1);
        assert!(h.receive_item(&[0xff, 0xff, 0xff], Some(&sender)).is_err());
        let own = Item::Event {
            origin: "me".into(),
            generation: 1,
            seq: 0,
            payload: vec![],
        };
        assert!(h.receive_item(&own.encode(), None).unwrap().is_some());
        assert_eq!(
            queue.lock().unwrap().len(),
            1,
            "own items are not delivered"
        );
    }

    /// Property tests (issue 20): broadcast items as a hostile member may piggyback them.
    /// A fixed number of cases in CI, more with `PROPTEST_CASES` (docs/RELIABILITY.md, "Fuzzed inputs").
    mod props {
        use foca::BroadcastHandler as _;
        use proptest::prelude::*;

        use super::*;

        fn config() -> ProptestConfig {
            ProptestConfig {
                failure_persistence: None,
                ..ProptestConfig::with_cases(crate::fuzz_cases(512))
            }
        }

        fn item() -> impl Strategy<Value = Item> {
            prop_oneof![
                (
                    any::<String>(),
                    any::<u64>(),
                    any::<u64>(),
                    proptest::collection::vec(any::<u8>(), 0..64)
                )
                    .prop_map(|(origin, generation, seq, payload)| Item::Event {
                        origin,
                        generation,
                        seq,
                        payload
                    }),
                (any::<String>(), any::<std::net::SocketAddr>(), any::<u64>()).prop_map(
                    |(name, addr, generation)| Item::Leave {
                        name,
                        addr,
                        generation
                    }
                ),
            ]
        }

        proptest! {
            #![proptest_config(config())]

            /// Any bytes (a valid item, mangled, or noise): refused as a bad item, or taken
            /// once as news, delivered as decoded, and not again.
            #[test]
            fn items_are_news_once_or_refused(
                bytes in prop_oneof![
                    item().prop_map(|i| i.encode()),
                    (item(), any::<prop::sample::Index>(), any::<u8>()).prop_map(|(i, at, b)| {
                        let mut bytes = i.encode();
                        let at = at.index(bytes.len());
                        bytes[at] ^= b | 1;
                        bytes
                    }),
                    proptest::collection::vec(any::<u8>(), 0..128),
                ],
            ) {
                let deliveries = Arc::new(Mutex::new(VecDeque::new()));
                let mut handler = Handler::new(deliveries.clone());
                let sender = crate::gossip::identity::tests_support::id("peer", 1, 1);
                match postcard::from_bytes::<Item>(&bytes) {
                    Ok(decoded) => {
                        let first = handler.receive_item(&bytes, Some(&sender));
                        prop_assert!(matches!(first, Ok(Some(_))), "{:?}", first);
                        let again = handler.receive_item(&bytes, Some(&sender));
                        prop_assert!(matches!(again, Ok(None)), "{:?}", again);
                        let delivered: Vec<Item> = deliveries.lock().unwrap_or_else(PoisonError::into_inner).drain(..).collect();
                        prop_assert_eq!(delivered, vec![decoded]);
                    }
                    Err(_) => {
                        prop_assert!(handler.receive_item(&bytes, Some(&sender)).is_err());
                        prop_assert!(deliveries.lock().unwrap_or_else(PoisonError::into_inner).is_empty());
                    }
                }
            }
        }
    }
}

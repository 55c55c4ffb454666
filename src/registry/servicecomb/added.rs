//! Properties Service Center adds to every instance on its own (SC 2.x "inner properties",
//! `registry.instance.properties` of its configuration): written over the caller's at
//! registration and at every properties update.
//!
//! Left in what the adapter reports, they would make every copy differ from the body syncer
//! wants, and each property update would be answered by SC adding them again: an endless
//! update loop. So the adapter learns them and reports instances without them:
//!
//! - learnt from SC's own instances (`GET …/registry/health`): SC registers itself through
//!   the same code and has no properties of its own, so what its instances carry is exactly
//!   what SC adds (the pairs every one of them has);
//! - a pair equal to a learnt one is left out of every instance reported, origins included:
//!   it is the registry's annotation, not the application's, and the other data centre's
//!   registry adds its own;
//! - when syncer itself writes a key SC overwrites (an origin property with the same key),
//!   the value syncer wrote is reported for that instance, so the copy compares equal to
//!   its origin instead of being rewritten forever. These few entries are kept in memory
//!   (bounded); after a restart such a copy costs one property update.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use crate::registry::Instance;

/// Most instances whose overwritten keys are remembered.
const MAX_KEPT: usize = 100_000;

type Properties = BTreeMap<String, String>;

/// See the module documentation.
#[derive(Default)]
pub(super) struct AddedProperties {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The pairs SC adds, as last learnt.
    added: Properties,
    /// (service id, instance id) → what syncer wrote for keys SC overwrites.
    kept: HashMap<(String, String), Properties>,
}

impl AddedProperties {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Learns from the properties of SC's own instances: the pairs all of them carry. No
    /// instance (SC not registered, or not answering) changes nothing.
    pub fn learn<'a>(&self, own: impl IntoIterator<Item = &'a Properties>) {
        let mut own = own.into_iter();
        let Some(first) = own.next() else {
            return;
        };
        let mut common = first.clone();
        for properties in own {
            common.retain(|k, v| properties.get(k) == Some(v));
        }
        self.state().added = common;
    }

    /// The pairs learnt so far.
    #[cfg(test)]
    pub fn added(&self) -> Properties {
        self.state().added.clone()
    }

    /// Syncer wrote `sent` as the properties of an instance: remembers the keys SC will
    /// overwrite.
    pub fn note_written(&self, service_id: &str, instance_id: &str, sent: &Properties) {
        let mut state = self.state();
        let overwritten: Properties = sent
            .iter()
            .filter(|(k, _)| state.added.contains_key(*k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let key = (service_id.to_owned(), instance_id.to_owned());
        if overwritten.is_empty() {
            state.kept.remove(&key);
        } else if state.kept.len() < MAX_KEPT || state.kept.contains_key(&key) {
            state.kept.insert(key, overwritten);
        }
    }

    /// The instance is gone.
    pub fn forget(&self, service_id: &str, instance_id: &str) {
        self.state()
            .kept
            .remove(&(service_id.to_owned(), instance_id.to_owned()));
    }

    /// `instance` as reported: without the pairs SC added, with what syncer wrote for the
    /// keys SC overwrote.
    pub fn strip(&self, instance: &mut Instance) {
        let state = self.state();
        if state.added.is_empty() {
            return;
        }
        instance
            .properties
            .retain(|k, v| state.added.get(k) != Some(v));
        let key = (instance.service_id.clone(), instance.instance_id.clone());
        if let Some(kept) = state.kept.get(&key) {
            instance
                .properties
                .extend(kept.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(pairs: &[(&str, &str)]) -> Properties {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    /// What SC 2.x stores when `sent` is written: its inner properties over the caller's.
    fn stored(sent: &Properties, inner: &Properties) -> Instance {
        let mut properties = sent.clone();
        properties.extend(inner.clone());
        Instance {
            service_id: "s".into(),
            instance_id: "i".into(),
            properties,
            ..Instance::default()
        }
    }

    #[test]
    fn reports_what_was_written_whatever_sc_adds() {
        let inner = props(&[("engine", "dc2"), ("zone", "z2")]);
        let added = AddedProperties::default();
        added.learn([
            &inner,
            &props(&[("engine", "dc2"), ("zone", "z2"), ("x", "1")]),
        ]);
        assert_eq!(added.added(), inner);
        for sent in [
            props(&[("syncer.origin", "dc1"), ("app", "a")]),
            // The origin has keys SC overwrites, with its own value or SC's.
            props(&[("syncer.origin", "dc1"), ("engine", "dc1")]),
            props(&[("syncer.origin", "dc1"), ("zone", "z2")]),
        ] {
            added.note_written("s", "i", &sent);
            let mut copy = stored(&sent, &inner);
            added.strip(&mut copy);
            assert_eq!(copy.properties, sent);
        }
        // An instance syncer did not write loses SC's pairs only.
        let mut other = stored(&props(&[("app", "b"), ("zone", "own")]), &props(&[]));
        other.instance_id = "j".into();
        added.strip(&mut other);
        assert_eq!(other.properties, props(&[("app", "b"), ("zone", "own")]));
        added.forget("s", "i");
        let mut copy = stored(&props(&[("engine", "dc1")]), &inner);
        added.strip(&mut copy);
        assert!(copy.properties.is_empty());
    }
}

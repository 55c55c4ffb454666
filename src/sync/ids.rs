//! How syncer recognises its own copies, and the ids it gives them.
//!
//! A copy (an instance syncer registered to mirror an instance of another data centre) is
//! marked twice, so that a lost mapping can never start an echo loop:
//! - its instance id starts with [`COPY_ID_PREFIX`] (ids never change after registration);
//! - its properties carry [`ORIGIN_PROPERTY`], naming the origin data centre.
//!
//! The id is derived from the origin (data centre, tenant, origin service id, origin instance
//! id) and a replacement generation, so a retry or a restart registers the same id again
//! (SC ignores a re-registration of an existing id, reference §3.1) instead of a duplicate.
//! The generation grows when the copy must be replaced (endpoints or host name changed, which
//! SC cannot update in place).

use sha1::{Digest, Sha1};

use crate::registry::{Instance, Tenant};

/// Prefix of every copy's instance id (SC instance ids allow `[A-Za-z0-9_.-]`, at most 64),
/// and the property naming the origin data centre of a copy; defined with the registry
/// model, whose adapters recognise copies too.
pub use crate::registry::model::{COPY_ID_PREFIX, ORIGIN_PROPERTY};
/// Hex characters of the digest kept in an id (128 bits).
const DIGEST_HEX: usize = 32;

/// Identifies one origin instance across data centres.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OriginKey {
    /// Origin data centre (cluster name).
    pub origin: String,
    pub tenant: Tenant,
    pub service_id: String,
    pub instance_id: String,
}

/// SHA-1 over length-prefixed text parts, so no two different sequences of parts hash the
/// same input. Used for copy ids, body fingerprints and export digests.
#[derive(Default)]
pub(crate) struct PartsHasher(Sha1);

impl PartsHasher {
    pub(crate) fn part(&mut self, text: &str) {
        self.0.update((text.len() as u64).to_be_bytes());
        self.0.update(text.as_bytes());
    }

    pub(crate) fn parts<'a>(&mut self, texts: impl IntoIterator<Item = &'a str>) {
        for text in texts {
            self.part(text);
        }
    }

    /// Raw bytes, not length-prefixed (fixed-size values).
    pub(crate) fn raw(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    pub(crate) fn finish(self) -> [u8; 20] {
        self.0.finalize().into()
    }
}

/// The instance id of the copy of `key` at replacement `generation`:
/// `syncer-` + 32 hex digits, 39 characters.
pub fn copy_instance_id(key: &OriginKey, generation: u32) -> String {
    let mut hasher = PartsHasher::default();
    hasher.parts([
        key.origin.as_str(),
        key.tenant.domain.as_str(),
        key.tenant.project.as_str(),
        key.service_id.as_str(),
        key.instance_id.as_str(),
    ]);
    hasher.raw(&generation.to_be_bytes());
    let digest = hex::encode(hasher.finish());
    format!("{COPY_ID_PREFIX}{}", &digest[..DIGEST_HEX])
}

/// Whether `id` has the shape of a copy's id: [`COPY_ID_PREFIX`] and 32 lowercase hex
/// digits, as [`copy_instance_id`] makes them.
pub fn is_copy_id(id: &str) -> bool {
    id.strip_prefix(COPY_ID_PREFIX).is_some_and(|digest| {
        digest.len() == DIGEST_HEX
            && digest
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// Whether `instance` carries both marks of a copy of `origin`'s: a copy id and the origin
/// property naming `origin`. Only such an instance may be removed as a copy nobody maps; one
/// with a single mark is an application's instance that looks like a copy, never syncer's
/// to delete.
pub fn is_marked_copy_of(instance: &Instance, origin: &str) -> bool {
    is_copy_id(&instance.instance_id) && copy_origin(instance) == Some(origin)
}

/// Whether `instance` carries either mark of a copy, so it is never exported: an instance
/// that claims to mirror another data centre is not offered as this one's own (exporting a
/// copy that lost one mark would echo it back to its origin). Whether syncer may *delete*
/// it is a stricter question: see [`is_marked_copy_of`].
pub fn is_copy(instance: &Instance) -> bool {
    instance.carries_copy_mark()
}

/// The origin data centre a copy names, if it carries the property.
pub fn copy_origin(instance: &Instance) -> Option<&str> {
    instance.properties.get(ORIGIN_PROPERTY).map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(origin: &str, instance: &str) -> OriginKey {
        OriginKey {
            origin: origin.into(),
            tenant: Tenant::default(),
            service_id: "svc".into(),
            instance_id: instance.into(),
        }
    }

    #[test]
    fn ids_are_stable_distinct_and_valid_for_sc() {
        let a = copy_instance_id(&key("dc1", "i1"), 0);
        assert_eq!(a, copy_instance_id(&key("dc1", "i1"), 0), "deterministic");
        assert_ne!(a, copy_instance_id(&key("dc1", "i1"), 1), "generation");
        assert_ne!(a, copy_instance_id(&key("dc2", "i1"), 0), "origin");
        assert_ne!(a, copy_instance_id(&key("dc1", "i2"), 0), "instance");
        // Length prefixes keep ("ab", "c") and ("a", "bc") apart.
        let mut shifted = key("dc1a", "i1");
        shifted.tenant.domain = "efault".into();
        assert_ne!(
            copy_instance_id(&key("dc1", "i1"), 0),
            copy_instance_id(&shifted, 0)
        );
        assert_eq!(a.len(), 39);
        assert!(a.len() <= 64);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        );
    }

    #[test]
    fn copies_are_recognised_by_either_mark() {
        let mut instance = Instance {
            instance_id: "abc".into(),
            ..Instance::default()
        };
        assert!(!is_copy(&instance));
        instance.instance_id = copy_instance_id(&key("dc1", "i1"), 0);
        assert!(is_copy(&instance), "by id");
        instance.instance_id = "abc".into();
        instance
            .properties
            .insert(ORIGIN_PROPERTY.into(), "dc1".into());
        assert!(is_copy(&instance), "by property");
        assert_eq!(copy_origin(&instance), Some("dc1"));
    }

    #[test]
    fn removal_needs_both_marks() {
        let id = copy_instance_id(&key("dc1", "i1"), 3);
        assert!(is_copy_id(&id));
        for not_ours in [
            "abc",
            "syncer-",
            "syncer-dashboard-1",
            &id[..id.len() - 1],
            &format!("{id}0"),
            &id.to_uppercase(),
        ] {
            assert!(!is_copy_id(not_ours), "{not_ours}");
        }
        let mut instance = Instance {
            instance_id: "app-1".into(),
            ..Instance::default()
        };
        instance
            .properties
            .insert(ORIGIN_PROPERTY.into(), "dc1".into());
        assert!(is_copy(&instance), "never exported");
        assert!(!is_marked_copy_of(&instance, "dc1"), "property alone");
        instance.instance_id = id.clone();
        assert!(is_marked_copy_of(&instance, "dc1"));
        assert!(!is_marked_copy_of(&instance, "dc2"), "another origin's");
        instance.properties.clear();
        assert!(!is_marked_copy_of(&instance, "dc1"), "id alone");
    }
}

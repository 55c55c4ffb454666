//! The local feed, split in two before either side sees it.
//!
//! The local registry's change feed reports everything it holds, syncer's own copies
//! included. The export side must never see a copy (exporting one would echo it back to its
//! origin); the import side needs exactly the copies (to notice one deleted behind syncer's
//! back within one poll). [`split`] separates the two, and [`SplitFeed`] does it between the
//! registry's feed and the exporter, so the exporter reads only this data centre's own
//! instances and the import router receives the copy observations through a [`CopySink`].
//! Neither side knows the other.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;

use super::copy::PresentCopy;
use super::ids::{COPY_ID_PREFIX, copy_origin, is_copy};
use crate::registry::{Change, ChangeFeed, Instance, InstanceRef, RegistryError, Tenant};

/// What the local feed said about syncer's copies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CopySeen {
    /// Every copy present now (a full resync), by the origin its mark names, each as
    /// `(copy instance id, copy)`. Copies without an origin mark are left out: no origin's
    /// complete set can include them.
    Present(BTreeMap<String, Vec<(String, PresentCopy)>>),
    /// A copy appeared or changed; `origin` is the origin its mark names (`None`: it lost the
    /// mark and only a mapping can tell whose it is).
    Seen {
        origin: Option<String>,
        id: String,
        copy: Box<PresentCopy>,
    },
    /// An instance whose id looks like a copy's is gone.
    Gone(InstanceRef),
    /// A service is gone with all its instances (maybe copies).
    ServiceGone(Tenant, String),
}

/// Where copy observations go: the import router.
pub(crate) trait CopySink: Send + Sync {
    /// Takes the observations of one feed batch, in feed order. Must not block: the feed
    /// waits for it.
    fn observe(&self, seen: Vec<CopySeen>);

    /// Looks at the same batch's own changes (services, own instances) before
    /// [`CopySink::observe`] gets its copies: the import side learns which local services hold
    /// instances of their own, so it never writes an origin's service properties into them.
    /// Must not block.
    fn own(&self, _changes: &[Change]) {}
}

/// Splits a batch of feed changes into this data centre's own changes (everything the
/// exporter needs, in order) and the observations of syncer's copies.
///
/// A resync keeps its own instances and gives its copies as [`CopySeen::Present`]; a copy's
/// upsert goes only to the import side; removals of instances with a copy id and of services
/// go to both (the exporter ignores what it does not export).
pub(crate) fn split(changes: Vec<Change>) -> (Vec<Change>, Vec<CopySeen>) {
    let mut own = Vec::with_capacity(changes.len());
    let mut seen = Vec::new();
    for change in changes {
        match change {
            Change::Resync(mut snapshot) => {
                let (copies, instances): (Vec<Instance>, Vec<Instance>) =
                    snapshot.instances.into_iter().partition(is_copy);
                snapshot.instances = instances;
                seen.push(CopySeen::Present(by_origin(copies)));
                own.push(Change::Resync(snapshot));
            }
            Change::Instance(instance) if is_copy(&instance) => {
                let copy = Box::new(PresentCopy::of(&instance));
                let origin = copy_origin(&instance).map(str::to_owned);
                seen.push(CopySeen::Seen {
                    origin,
                    id: instance.instance_id,
                    copy,
                });
            }
            Change::InstanceRemoved(r) => {
                if r.instance_id.starts_with(COPY_ID_PREFIX) {
                    seen.push(CopySeen::Gone(r.clone()));
                }
                own.push(Change::InstanceRemoved(r));
            }
            Change::ServiceRemoved { tenant, service_id } => {
                seen.push(CopySeen::ServiceGone(tenant.clone(), service_id.clone()));
                own.push(Change::ServiceRemoved { tenant, service_id });
            }
            other => own.push(other),
        }
    }
    (own, seen)
}

fn by_origin(copies: Vec<Instance>) -> BTreeMap<String, Vec<(String, PresentCopy)>> {
    let mut out: BTreeMap<String, Vec<(String, PresentCopy)>> = BTreeMap::new();
    for instance in copies {
        if let Some(origin) = copy_origin(&instance) {
            let copy = PresentCopy::of(&instance);
            out.entry(origin.to_owned())
                .or_default()
                .push((instance.instance_id, copy));
        }
    }
    out
}

/// The registry's feed with the copies taken out and handed to `sink`: what the exporter
/// reads.
pub(crate) struct SplitFeed {
    inner: Box<dyn ChangeFeed>,
    sink: Arc<dyn CopySink>,
}

impl SplitFeed {
    /// `inner` with its copies handed to `sink`.
    pub(crate) fn new(inner: Box<dyn ChangeFeed>, sink: Arc<dyn CopySink>) -> SplitFeed {
        SplitFeed { inner, sink }
    }
}

#[async_trait]
impl ChangeFeed for SplitFeed {
    async fn next(&mut self) -> Result<Vec<Change>, RegistryError> {
        let (own, seen) = split(self.inner.next().await?);
        self.sink.own(&own);
        if !seen.is_empty() {
            self.sink.observe(seen);
        }
        Ok(own)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{Service, Snapshot};
    use crate::sync::ids::ORIGIN_PROPERTY;

    fn own(id: &str) -> Instance {
        Instance {
            service_id: "svc".into(),
            instance_id: id.into(),
            status: "UP".into(),
            ..Instance::default()
        }
    }

    fn copy(id: &str, origin: Option<&str>) -> Instance {
        let mut i = own(id);
        if let Some(origin) = origin {
            i.properties.insert(ORIGIN_PROPERTY.into(), origin.into());
        }
        i
    }

    #[test]
    fn a_resync_keeps_own_instances_and_groups_marked_copies_by_origin() {
        let snapshot = Snapshot {
            services: vec![Service::default()],
            instances: vec![
                own("a"),
                copy("syncer-1", Some("dc1")),
                copy("x", Some("dc2")),
                copy("syncer-2", None),
                copy("syncer-3", Some("dc1")),
            ],
        };
        let (rest, seen) = split(vec![Change::Resync(snapshot)]);
        let [Change::Resync(kept)] = rest.as_slice() else {
            panic!("expected the resync, got {rest:?}");
        };
        assert_eq!(kept.services.len(), 1);
        assert_eq!(kept.instances, vec![own("a")]);
        let [CopySeen::Present(present)] = seen.as_slice() else {
            panic!("expected one present set, got {seen:?}");
        };
        let ids = |origin: &str| -> Vec<&str> {
            present[origin].iter().map(|(id, _)| id.as_str()).collect()
        };
        assert_eq!(present.len(), 2, "the unmarked copy belongs to no origin");
        assert_eq!(ids("dc1"), ["syncer-1", "syncer-3"]);
        assert_eq!(ids("dc2"), ["x"]);
    }

    #[test]
    fn an_empty_resync_still_says_that_no_copy_is_present() {
        let (_, seen) = split(vec![Change::Resync(Snapshot::default())]);
        assert_eq!(seen, vec![CopySeen::Present(BTreeMap::new())]);
    }

    #[test]
    fn copies_go_to_import_only_and_removals_to_both() {
        let gone_copy = InstanceRef {
            tenant: Tenant::default(),
            service_id: "svc".into(),
            instance_id: "syncer-9".into(),
        };
        let gone_own = InstanceRef {
            instance_id: "b".into(),
            ..gone_copy.clone()
        };
        let service_gone = Change::ServiceRemoved {
            tenant: Tenant::default(),
            service_id: "svc".into(),
        };
        let (rest, seen) = split(vec![
            Change::Instance(own("a")),
            Change::Instance(copy("syncer-1", Some("dc1"))),
            Change::Instance(copy("syncer-2", None)),
            Change::InstanceRemoved(gone_copy.clone()),
            Change::InstanceRemoved(gone_own.clone()),
            service_gone.clone(),
        ]);
        assert_eq!(
            rest,
            vec![
                Change::Instance(own("a")),
                Change::InstanceRemoved(gone_copy.clone()),
                Change::InstanceRemoved(gone_own),
                service_gone,
            ]
        );
        assert_eq!(
            seen,
            vec![
                CopySeen::Seen {
                    origin: Some("dc1".into()),
                    id: "syncer-1".into(),
                    copy: Box::new(PresentCopy::of(&copy("syncer-1", Some("dc1")))),
                },
                CopySeen::Seen {
                    origin: None,
                    id: "syncer-2".into(),
                    copy: Box::new(PresentCopy::of(&copy("syncer-2", None))),
                },
                CopySeen::Gone(gone_copy),
                CopySeen::ServiceGone(Tenant::default(), "svc".into()),
            ]
        );
    }

    #[test]
    fn a_batch_without_copies_passes_through_unchanged() {
        let changes = vec![
            Change::Instance(own("a")),
            Change::Service(Service::default()),
        ];
        let (rest, seen) = split(changes.clone());
        assert_eq!(rest, changes);
        assert!(seen.is_empty());
    }
}

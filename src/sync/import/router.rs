//! The router: one actor per origin data centre, created when the origin first appears (in
//! gossip, in the mapping store, or among the local copies), and the way messages reach it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::super::export::Revision;
use super::super::local::{CopySeen, CopySink};
use super::super::peers::PeerMap;
use super::ImportCtx;
use super::actor::Actor;
use super::mailbox::{LocalEvent, Mailbox, NotQueued, mailbox};
use crate::registry::Change;
use crate::store::Mapping;
use crate::sync::EngineError;
use crate::sync::link::{Push, PushReply};
use crate::sync::status::{MappingEntry, OriginStatus};

/// Every origin's actor, created on first need.
pub(crate) struct Importers {
    ctx: Arc<ImportCtx>,
    actors: Mutex<HashMap<String, Mailbox>>,
    /// Mappings loaded from the store, handed to each origin's actor when it starts.
    loaded: Mutex<HashMap<String, Vec<Mapping>>>,
    /// Set once the first full resync of the local registry was routed: an actor created
    /// later knows that its origin had no copies then (any copy would have created it).
    local_seen: AtomicBool,
    token: CancellationToken,
    tracker: TaskTracker,
}

impl Importers {
    /// The router, with an actor started at once for every origin that has mappings.
    pub(crate) fn new(
        ctx: Arc<ImportCtx>,
        mappings: Vec<Mapping>,
        token: CancellationToken,
        tracker: TaskTracker,
    ) -> Arc<Importers> {
        let mut loaded: HashMap<String, Vec<Mapping>> = HashMap::new();
        for mapping in mappings {
            loaded
                .entry(mapping.origin.clone())
                .or_default()
                .push(mapping);
        }
        let origins: Vec<String> = loaded.keys().cloned().collect();
        let importers = Arc::new(Importers {
            ctx,
            actors: Mutex::new(HashMap::new()),
            loaded: Mutex::new(loaded),
            local_seen: AtomicBool::new(false),
            token,
            tracker,
        });
        // Origins with copies start at once: their copies are kept alive while the origin
        // is reached again (within the grace period).
        for origin in origins {
            importers.actor(&origin);
        }
        importers
    }

    /// The mailbox of `origin`'s actor, started if needed.
    fn actor(&self, origin: &str) -> Mailbox {
        let mut actors = self.actors.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(mailbox) = actors.get(origin) {
            return mailbox.clone();
        }
        let (tx, inbox) = mailbox();
        let mappings = self
            .loaded
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(origin)
            .unwrap_or_default();
        let local_ready = self.local_seen.load(Ordering::SeqCst);
        let actor = Actor::new(origin.to_owned(), self.ctx.clone(), mappings, local_ready);
        self.tracker.spawn(actor.run(inbox, self.token.clone()));
        actors.insert(origin.to_owned(), tx.clone());
        tx
    }

    /// Every origin's state as its actor published it, by origin name.
    pub(crate) fn status(&self) -> Vec<OriginStatus> {
        let actors: Vec<(String, Mailbox)> = self
            .actors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(origin, mailbox)| (origin.clone(), mailbox.clone()))
            .collect();
        let mut out: Vec<OriginStatus> = actors
            .into_iter()
            .filter(|(origin, _)| *origin != self.ctx.cluster)
            .map(|(origin, mailbox)| OriginStatus {
                conflict: self.ctx.in_conflict(&origin),
                announced: mailbox.announced(),
                state: mailbox.state(),
                origin,
            })
            .collect();
        out.sort_by(|a, b| a.origin.cmp(&b.origin));
        out
    }

    /// The mapping entries of `origin` (every origin: `None`), asked of the actors; an
    /// actor that does not answer within `wait` (busy with a long reconcile) is named in
    /// the error.
    ///
    /// # Errors
    /// [`EngineError::UnknownOrigin`] for an origin without an importer here,
    /// [`EngineError::Importing`] naming the origins whose actor did not answer.
    pub(crate) async fn mappings(
        &self,
        origin: Option<&str>,
        wait: std::time::Duration,
    ) -> Result<Vec<MappingEntry>, EngineError> {
        let mut asked: Vec<(String, Mailbox)> = self
            .actors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|(name, _)| origin.is_none_or(|o| o == name.as_str()))
            .map(|(name, mailbox)| (name.clone(), mailbox.clone()))
            .collect();
        asked.sort_by(|a, b| a.0.cmp(&b.0));
        if let Some(origin) = origin
            && asked.is_empty()
        {
            let mut known: Vec<String> = self
                .actors
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .keys()
                .filter(|name| **name != self.ctx.cluster)
                .cloned()
                .collect();
            known.sort();
            let known = if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            };
            return Err(EngineError::UnknownOrigin(origin.to_owned(), known));
        }
        let deadline = tokio::time::Instant::now() + wait;
        let mut out = Vec::new();
        let mut silent = Vec::new();
        for (name, mailbox) in asked {
            let answer = match mailbox.query() {
                Some(rx) => tokio::time::timeout_at(deadline, rx)
                    .await
                    .ok()
                    .and_then(Result::ok),
                None => None,
            };
            match answer {
                Some(mut entries) => {
                    entries.sort_by(|a, b| {
                        (
                            a.state,
                            &a.tenant,
                            &a.origin_service_id,
                            &a.origin_instance_id,
                            &a.copy_instance_id,
                        )
                            .cmp(&(
                                b.state,
                                &b.tenant,
                                &b.origin_service_id,
                                &b.origin_instance_id,
                                &b.copy_instance_id,
                            ))
                    });
                    out.extend(entries);
                }
                None => silent.push(name),
            }
        }
        if silent.is_empty() {
            Ok(out)
        } else {
            Err(EngineError::Importing(silent.join(", ")))
        }
    }

    /// Makes sure every data centre in `peers` has an actor.
    pub(crate) fn peers_seen(&self, peers: &PeerMap) {
        for origin in peers.keys() {
            self.actor(origin);
        }
    }

    /// A push from `push.origin`; resolves when it is applied (or refused).
    ///
    /// # Errors
    /// [`EngineError::OriginConflict`] while the origin's name is claimed by members serving
    /// different registries (nothing tells which one's instances this push carries),
    /// [`EngineError::Busy`] when the actor had no room for the push's whole wait,
    /// [`EngineError::Stopping`] when it stopped.
    pub(crate) async fn push(&self, push: Push) -> Result<PushReply, EngineError> {
        if self.ctx.in_conflict(&push.origin) {
            return Err(EngineError::OriginConflict(push.origin));
        }
        let mailbox = self.actor(&push.origin);
        let reply = mailbox.push(push).await.map_err(|e| match e {
            NotQueued::Busy => EngineError::Busy,
            NotQueued::Stopped => EngineError::Stopping,
        })?;
        reply.await.map_err(|_| EngineError::Stopping)
    }

    /// A gossip announcement: `origin` is at `revision`. Dropped while the origin's name is
    /// in conflict (the actor could not pull anyway: the directory has no address for it).
    pub(crate) fn announce(&self, origin: &str, revision: Revision) {
        if self.ctx.in_conflict(origin) {
            return;
        }
        self.actor(origin).announce(revision);
    }

    /// A full resync's copies: every actor learns the complete set of its origin's (an
    /// empty one when none is left).
    fn route_present(
        &self,
        mut by_origin: std::collections::BTreeMap<
            String,
            Vec<(String, super::super::copy::PresentCopy)>,
        >,
    ) {
        self.local_seen.store(true, Ordering::SeqCst);
        let known: Vec<String> = self
            .actors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .cloned()
            .collect();
        for origin in known {
            by_origin.entry(origin).or_default();
        }
        for (origin, present) in by_origin {
            if origin == self.ctx.cluster {
                continue;
            }
            self.actor(&origin).present(present);
        }
    }

    fn to_all(&self, event: &LocalEvent) {
        for mailbox in self
            .actors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
        {
            mailbox.local(event.clone());
        }
    }
}

impl CopySink for Importers {
    fn own(&self, changes: &[Change]) {
        self.ctx.local_changes(changes);
    }

    fn observe(&self, seen: Vec<CopySeen>) {
        for seen in seen {
            match seen {
                CopySeen::Present(by_origin) => self.route_present(by_origin),
                CopySeen::Seen { origin, id, copy } => match origin {
                    Some(origin) if origin != self.ctx.cluster => {
                        self.actor(&origin).local(LocalEvent::Seen {
                            id,
                            copy,
                            marked: true,
                        });
                    }
                    // A copy that lost its origin mark: every actor checks its mappings.
                    _ => self.to_all(&LocalEvent::Seen {
                        id,
                        copy,
                        marked: false,
                    }),
                },
                CopySeen::Gone(r) => self.to_all(&LocalEvent::Gone(r)),
                CopySeen::ServiceGone(tenant, service_id) => {
                    self.ctx.forget_services(&tenant, &service_id);
                    self.to_all(&LocalEvent::ServiceGone(tenant, service_id));
                }
            }
        }
    }
}

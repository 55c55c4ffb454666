//! The mailbox between the router and one origin's actor: bounded, so a slow local registry
//! cannot make messages pile up without limit, and coalescing where only the latest matters.
//!
//! Three kinds of message, three shapes:
//! - **Pushes** wait for room in a queue of [`PUSH_QUEUE`]: the caller (a peer's pusher,
//!   through the `Push` RPC) feels the back-pressure, and after [`PUSH_WAIT`] gets
//!   "unavailable" ([`NotQueued::Busy`], told apart from an importer that stopped, so the
//!   sender's log says which). An origin's pusher has one push in flight, so the queue only
//!   fills when an actor is stuck.
//! - **Announcements** ("the origin is at revision R") are a `watch` of the latest revision:
//!   an older one is worth nothing once a newer one is known.
//! - **Local observations** (copies seen in the local registry) are never waited for: the
//!   feed must keep going for the exporter. A full set of present copies replaces whatever
//!   was queued before it (it is newer than all of it); single events queue up to
//!   [`LOCAL_QUEUE`], and on overflow the queue is dropped and replaced by a request to
//!   re-read the registry, so the actor reconciles from a fresh view instead of losing
//!   events.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{Notify, mpsc, oneshot, watch};

use super::super::copy::PresentCopy;
use super::super::export::Revision;
use super::super::status::{ImportState, MappingEntry};
use crate::registry::{InstanceRef, Tenant};
use crate::sync::link::{Push, PushReply};

/// Pushes queued for one actor. An origin has one active syncer with one push in flight
/// (two for a moment during a failover); more would only queue pushes that no longer
/// continue the cursor.
pub(crate) const PUSH_QUEUE: usize = 4;
/// How long a push waits for room before it is answered "unavailable": well under the
/// pusher's 30 s call timeout, so the sender gets an answer rather than a deadline.
pub(crate) const PUSH_WAIT: Duration = Duration::from_secs(10);
/// Single copy observations queued for one actor. A feed batch holds the changes of one
/// poll (100 ms); 4 096 events of about 200 bytes is under 1 MiB per origin, and a registry
/// changing faster than the actor can follow is better served by one re-read.
pub(crate) const LOCAL_QUEUE: usize = 4096;

/// One observation of a copy of this actor's origin in the local registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LocalEvent {
    /// A copy appeared or changed; `marked` when it carries this origin's mark.
    Seen {
        id: String,
        copy: Box<PresentCopy>,
        marked: bool,
    },
    /// An instance is gone (maybe a copy).
    Gone(InstanceRef),
    /// A service is gone with all its instances.
    ServiceGone(Tenant, String),
}

/// What the actor takes from its local queue at once, applied in this order.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct LocalBatch {
    /// Events were dropped on overflow: re-read the registry's copies.
    pub reread: bool,
    /// Every copy of this origin present at the last full resync, by instance id.
    pub present: Option<Vec<(String, PresentCopy)>>,
    /// Events after that, in order.
    pub events: Vec<LocalEvent>,
}

#[derive(Debug, Default)]
struct LocalQueue {
    batch: Mutex<LocalBatch>,
    ready: Notify,
}

impl LocalQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, LocalBatch> {
        self.batch.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn present(&self, present: Vec<(String, PresentCopy)>) {
        let mut batch = self.lock();
        // Newer than everything queued, a re-read included.
        batch.reread = false;
        batch.present = Some(present);
        batch.events.clear();
        drop(batch);
        self.ready.notify_one();
    }

    fn event(&self, event: LocalEvent) {
        let mut batch = self.lock();
        if batch.events.len() >= LOCAL_QUEUE {
            batch.reread = true;
            batch.present = None;
            batch.events.clear();
        }
        batch.events.push(event);
        drop(batch);
        self.ready.notify_one();
    }

    fn take(&self) -> LocalBatch {
        std::mem::take(&mut *self.lock())
    }
}

/// Why a push was not handed to its actor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NotQueued {
    /// No room within [`PUSH_WAIT`]: the actor is busy (a slow registry); retry later.
    Busy,
    /// The actor has stopped.
    Stopped,
}

/// A push waiting for its actor, with where to send the answer.
pub(crate) type PushMsg = (Push, oneshot::Sender<PushReply>);

/// Asks the actor for its mapping entries (`syncer mappings`).
pub(crate) type QueryMsg = oneshot::Sender<Vec<MappingEntry>>;

/// Mapping queries waiting for one actor: an operator's command, rarely more than one.
const QUERY_QUEUE: usize = 4;

/// The router's half of one actor's mailbox.
#[derive(Debug, Clone)]
pub(crate) struct Mailbox {
    push: mpsc::Sender<PushMsg>,
    announce: Arc<watch::Sender<Option<Revision>>>,
    local: Arc<LocalQueue>,
    query: mpsc::Sender<QueryMsg>,
    /// What the actor published last (`syncer status`).
    state: Arc<Mutex<ImportState>>,
}

/// The actor's half.
#[derive(Debug)]
pub(crate) struct Inbox {
    pub push: mpsc::Receiver<PushMsg>,
    pub announce: watch::Receiver<Option<Revision>>,
    pub local: LocalInbox,
    pub query: mpsc::Receiver<QueryMsg>,
    /// Where the actor publishes its state.
    pub state: Arc<Mutex<ImportState>>,
}

/// The actor's half of the local queue.
#[derive(Debug)]
pub(crate) struct LocalInbox(Arc<LocalQueue>);

/// A new, empty mailbox.
pub(crate) fn mailbox() -> (Mailbox, Inbox) {
    let (push_tx, push_rx) = mpsc::channel(PUSH_QUEUE);
    let (announce_tx, announce_rx) = watch::channel(None);
    let local = Arc::new(LocalQueue::default());
    let (query_tx, query_rx) = mpsc::channel(QUERY_QUEUE);
    let state = Arc::new(Mutex::new(ImportState::default()));
    (
        Mailbox {
            push: push_tx,
            announce: Arc::new(announce_tx),
            local: local.clone(),
            query: query_tx,
            state: state.clone(),
        },
        Inbox {
            push: push_rx,
            announce: announce_rx,
            local: LocalInbox(local),
            query: query_rx,
            state,
        },
    )
}

impl Mailbox {
    /// Hands over a push, waiting up to [`PUSH_WAIT`] for room; the caller answers
    /// "unavailable" when it is not queued.
    ///
    /// # Errors
    /// [`NotQueued::Busy`] after the wait, [`NotQueued::Stopped`] when the actor is gone.
    pub(crate) async fn push(&self, push: Push) -> Result<oneshot::Receiver<PushReply>, NotQueued> {
        let (tx, rx) = oneshot::channel();
        match tokio::time::timeout(PUSH_WAIT, self.push.send((push, tx))).await {
            Ok(Ok(())) => Ok(rx),
            Ok(Err(_)) => Err(NotQueued::Stopped),
            Err(_) => Err(NotQueued::Busy),
        }
    }

    /// The origin is at `revision` (replaces any announcement not yet seen).
    pub(crate) fn announce(&self, revision: Revision) {
        self.announce.send_replace(Some(revision));
    }

    /// Every copy of the origin present now (replaces everything queued).
    pub(crate) fn present(&self, present: Vec<(String, PresentCopy)>) {
        self.local.present(present);
    }

    /// The revision the origin announced last, if any.
    pub(crate) fn announced(&self) -> Option<Revision> {
        *self.announce.borrow()
    }

    /// What the actor published last.
    pub(crate) fn state(&self) -> ImportState {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Asks the actor for its mapping entries; `None` when it stopped or its queue is full.
    pub(crate) fn query(&self) -> Option<oneshot::Receiver<Vec<MappingEntry>>> {
        let (tx, rx) = oneshot::channel();
        self.query.try_send(tx).ok().map(|()| rx)
    }

    /// One observation after the last full set.
    pub(crate) fn local(&self, event: LocalEvent) {
        self.local.event(event);
    }
}

impl LocalInbox {
    /// Waits until local observations are queued.
    pub(crate) async fn ready(&self) {
        self.0.ready.notified().await;
    }

    /// Takes every queued local observation.
    pub(crate) fn take(&self) -> LocalBatch {
        self.0.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gone(id: &str) -> LocalEvent {
        LocalEvent::Gone(InstanceRef {
            tenant: Tenant::default(),
            service_id: "svc".into(),
            instance_id: id.into(),
        })
    }

    fn copy() -> PresentCopy {
        PresentCopy {
            tenant: Tenant::default(),
            service_id: "svc".into(),
            status: "UP".into(),
            properties: 0,
            fingerprint: String::new(),
        }
    }

    #[test]
    fn a_newer_present_set_replaces_what_was_queued() {
        let (tx, rx) = mailbox();
        tx.present(vec![("a".into(), copy())]);
        tx.local(gone("a"));
        tx.present(vec![("b".into(), copy())]);
        tx.local(gone("b"));
        assert_eq!(
            rx.local.take(),
            LocalBatch {
                reread: false,
                present: Some(vec![("b".into(), copy())]),
                events: vec![gone("b")],
            }
        );
        assert_eq!(rx.local.take(), LocalBatch::default(), "taken once");
    }

    #[test]
    fn overflow_asks_for_a_reread_instead_of_growing() {
        let (tx, rx) = mailbox();
        tx.present(vec![("a".into(), copy())]);
        for i in 0..=LOCAL_QUEUE {
            tx.local(gone(&i.to_string()));
        }
        let batch = rx.local.take();
        assert!(batch.reread);
        assert_eq!(batch.present, None, "older than the re-read");
        assert_eq!(
            batch.events,
            vec![gone(&LOCAL_QUEUE.to_string())],
            "only what came after the overflow"
        );
        tx.local(gone("x"));
        tx.present(Vec::new());
        let batch = rx.local.take();
        assert!(!batch.reread, "a full set is as good as a re-read");
        assert_eq!(batch.present, Some(Vec::new()));
        assert!(batch.events.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn announcements_keep_only_the_latest_revision() {
        let (tx, mut rx) = mailbox();
        tx.announce(Revision { epoch: 1, seq: 1 });
        tx.announce(Revision { epoch: 1, seq: 5 });
        assert!(rx.announce.has_changed().unwrap_or(false));
        assert_eq!(
            *rx.announce.borrow_and_update(),
            Some(Revision { epoch: 1, seq: 5 })
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_push_queue_answers_unavailable_after_the_wait() {
        let (tx, mut rx) = mailbox();
        let push = || Push {
            origin: "dc1".into(),
            epoch: 1,
            from_seq: 0,
            to_seq: 1,
            changes: Vec::new(),
        };
        for _ in 0..PUSH_QUEUE {
            assert!(tx.push(push()).await.is_ok());
        }
        let started = tokio::time::Instant::now();
        assert_eq!(
            tx.push(push()).await.err(),
            Some(NotQueued::Busy),
            "no room"
        );
        assert_eq!(started.elapsed(), PUSH_WAIT);
        assert!(rx.push.recv().await.is_some());
        assert!(tx.push(push()).await.is_ok(), "room again");
        drop(rx);
        assert_eq!(
            tx.push(push()).await.err(),
            Some(NotQueued::Stopped),
            "actor gone"
        );
    }
}

//! Group commit: one task owns all writes to the mapping store. Callers hand it [`Group`]s
//! through a [`StoreHandle`] and wait until their group is durable. While a commit is in
//! flight, new groups wait in a bounded queue (a full queue makes writers wait: the sync
//! engine must not outrun the store) and all of them go into the next commit, so thousands
//! of concurrent writes cost a handful of durable commits.
//!
//! The writer does not retry: a failed commit fails every group in it, and each caller
//! decides (an `Unavailable` store is retried by the engine's next round). If a merged batch
//! is refused as `Invalid`, its groups are committed one by one so that one bad group fails
//! alone. On cancellation the writer stops taking new groups, commits what is queued once,
//! and exits.

use std::future::Future;
use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use super::{Group, MappingStore, StoreError, validate_group};
use crate::telemetry::Metrics;

/// A store that is down fails every commit: one line every 10 s.
static COMMIT_FAILURES: crate::telemetry::LogThrottle = crate::telemetry::LogThrottle::new(10_000);

/// The most ops the writer puts into one `commit` call; more queued groups wait for the
/// next one. Bounds the size of one redb transaction and the time of one etcd batch.
pub const MAX_COMMIT_OPS: usize = 4096;

/// One queued group and where its outcome goes.
struct WriteRequest {
    group: Group,
    done_tx: oneshot::Sender<Result<(), StoreError>>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: &'static str,
}

/// The writer's counters. Clones share the same counters.
#[derive(Clone, Debug, Default)]
pub struct StoreMetrics {
    /// `commit` calls by outcome (`ok` or an error kind).
    commits: Family<Outcome, Counter>,
    /// `commit` calls, all outcomes (not exported: the sum of `commits`).
    commit_calls: Counter,
    /// Groups committed successfully.
    groups: Counter,
    /// Ops committed successfully.
    ops: Counter,
    /// The outcome of the last `commit` call (`syncer status`).
    last: Arc<std::sync::Mutex<Option<LastCommit>>>,
}

/// The outcome of the writer's last `commit` call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LastCommit {
    /// When it ended, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// Why it failed; `None` when it succeeded.
    pub error: Option<String>,
}

impl StoreMetrics {
    /// Adds the writer's metrics to `metrics`: `syncer_store_commits_total{outcome}`,
    /// `syncer_store_groups_total` and `syncer_store_ops_total`. Call once per store.
    pub fn register(&self, metrics: &Metrics) {
        metrics.register(
            "syncer_store_commits",
            "Mapping store commits by outcome",
            self.commits.clone(),
        );
        metrics.register(
            "syncer_store_groups",
            "Atomic groups written to the mapping store",
            self.groups.clone(),
        );
        metrics.register(
            "syncer_store_ops",
            "Operations written to the mapping store",
            self.ops.clone(),
        );
    }

    /// `commit` calls so far, all outcomes.
    pub fn commits(&self) -> u64 {
        self.commit_calls.get()
    }

    /// Groups committed so far.
    pub fn groups(&self) -> u64 {
        self.groups.get()
    }

    /// Ops committed so far.
    pub fn ops(&self) -> u64 {
        self.ops.get()
    }

    /// The outcome of the last `commit` call; `None` before the first.
    pub fn last_commit(&self) -> Option<LastCommit> {
        self.last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn count(&self, groups: &[Group], result: &Result<(), StoreError>) {
        *self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(LastCommit {
            at_ms: crate::sync::unix_ms(),
            error: result.as_ref().err().map(ToString::to_string),
        });
        let outcome = match result {
            Ok(()) => {
                self.groups.inc_by(groups.len() as u64);
                self.ops.inc_by(groups.iter().map(|g| g.len() as u64).sum());
                "ok"
            }
            Err(e) => e.kind(),
        };
        self.commits.get_or_create(&Outcome { outcome }).inc();
        self.commit_calls.inc();
    }
}

/// The way to write to the store. Cheap to clone; all clones feed the same writer.
#[derive(Clone, Debug)]
pub struct StoreHandle {
    tx: mpsc::Sender<WriteRequest>,
    metrics: StoreMetrics,
}

impl std::fmt::Debug for WriteRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteRequest")
            .field("ops", &self.group.len())
            .finish()
    }
}

impl StoreHandle {
    /// Queues `group` and resolves once it is durable. The returned future owns what it
    /// needs and can be spawned.
    ///
    /// # Errors
    /// `Invalid` at once for a group the store would refuse (nothing is queued); the store's
    /// error if the commit holding the group failed; `Unavailable` when the writer has
    /// stopped.
    pub fn write(
        &self,
        group: Group,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'static {
        let tx = self.tx.clone();
        let checked = validate_group(&group);
        async move {
            checked?;
            if group.is_empty() {
                return Ok(());
            }
            let (done_tx, done_rx) = oneshot::channel();
            tx.send(WriteRequest { group, done_tx })
                .await
                .map_err(|_| stopped())?;
            done_rx.await.map_err(|_| stopped())?
        }
    }

    /// Groups waiting for the next commit.
    pub fn queued(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// The writer's counters.
    pub fn metrics(&self) -> &StoreMetrics {
        &self.metrics
    }
}

fn stopped() -> StoreError {
    StoreError::Unavailable("the store writer has stopped".into())
}

/// Starts the writer on `tracker`; it runs until `token` is cancelled (then flushes the
/// queue) or every handle is dropped. `capacity` is the queue length in groups (at least 1).
pub fn spawn_writer(
    store: Arc<dyn MappingStore>,
    capacity: usize,
    token: CancellationToken,
    tracker: &TaskTracker,
) -> StoreHandle {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let metrics = StoreMetrics::default();
    tracker.spawn(run(store, rx, token, metrics.clone()));
    StoreHandle { tx, metrics }
}

/// The writer loop.
async fn run(
    store: Arc<dyn MappingStore>,
    mut rx: mpsc::Receiver<WriteRequest>,
    token: CancellationToken,
    metrics: StoreMetrics,
) {
    loop {
        let first = tokio::select! {
            biased;
            _ = token.cancelled() => break,
            request = rx.recv() => match request {
                Some(request) => request,
                // Every handle is gone: nothing more can arrive.
                None => return,
            },
        };
        // A commit in flight is finished even if cancellation arrives meanwhile: callers
        // wait for its outcome, and every store call is bounded by a timeout.
        let batch = take_queued(first, &mut rx);
        commit(&*store, batch, &metrics).await;
    }
    // Shutting down: refuse new groups, commit what is queued once.
    rx.close();
    while let Some(first) = rx.recv().await {
        let batch = take_queued(first, &mut rx);
        commit(&*store, batch, &metrics).await;
    }
    debug!(store = store.kind(), "store writer stopped");
}

/// `first` and whatever else is queued, up to [`MAX_COMMIT_OPS`] ops.
fn take_queued(first: WriteRequest, rx: &mut mpsc::Receiver<WriteRequest>) -> Vec<WriteRequest> {
    let mut ops = first.group.len();
    let mut batch = vec![first];
    while ops < MAX_COMMIT_OPS {
        match rx.try_recv() {
            Ok(request) => {
                ops += request.group.len();
                batch.push(request);
            }
            Err(_) => break,
        }
    }
    batch
}

/// Commits `batch` and tells every caller the outcome.
async fn commit(store: &dyn MappingStore, batch: Vec<WriteRequest>, metrics: &StoreMetrics) {
    let (groups, done): (Vec<Group>, Vec<_>) =
        batch.into_iter().map(|r| (r.group, r.done_tx)).unzip();
    let result = store.commit(&groups).await;
    metrics.count(&groups, &result);
    match result {
        Ok(()) => {
            debug!(store = store.kind(), groups = groups.len(), "store commit");
            for done_tx in done {
                // A caller that stopped waiting does not care.
                let _ = done_tx.send(Ok(()));
            }
        }
        Err(StoreError::Invalid(reason)) if groups.len() > 1 => {
            // One group spoiled the batch; find it by committing each group alone.
            warn!(store = store.kind(), groups = groups.len(), %reason,
                "store refused a merged batch; committing its groups one by one");
            for (group, done_tx) in groups.into_iter().zip(done) {
                let group = [group];
                let result = store.commit(&group).await;
                metrics.count(&group, &result);
                let _ = done_tx.send(result);
            }
        }
        Err(e) => {
            if let Some(not_logged) = COMMIT_FAILURES.allow() {
                warn!(store = store.kind(), groups = groups.len(), error = %e, not_logged, "store commit failed (more failures in the next 10 s are not logged)");
            }
            for done_tx in done {
                let _ = done_tx.send(Err(e.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use async_trait::async_trait;
    use futures::future::join_all;
    use tokio::sync::Semaphore;

    use super::*;
    use crate::store::{Mapping, MemoryStore, Op, Stored};

    /// How long a test waits for something that should happen at once.
    const DEADLINE: Duration = Duration::from_secs(10);

    /// A memory store whose commits can be held at a gate, that records batch sizes and
    /// refuses any batch holding the meta key `poison`.
    #[derive(Default)]
    struct TestStore {
        inner: MemoryStore,
        gate: Option<Semaphore>,
        entered: AtomicUsize,
        batches: Mutex<Vec<usize>>,
    }

    impl TestStore {
        fn gated() -> TestStore {
            TestStore {
                gate: Some(Semaphore::new(0)),
                ..TestStore::default()
            }
        }

        fn open_gate(&self) {
            if let Some(gate) = &self.gate {
                gate.add_permits(Semaphore::MAX_PERMITS / 2);
            }
        }

        fn batches(&self) -> Vec<usize> {
            self.batches.lock().unwrap().clone()
        }
    }

    #[async_trait]
    impl MappingStore for TestStore {
        fn kind(&self) -> &'static str {
            "test"
        }

        async fn load(&self) -> Result<Stored, StoreError> {
            self.inner.load().await
        }

        async fn commit(&self, batch: &[Group]) -> Result<(), StoreError> {
            self.entered.fetch_add(1, Ordering::SeqCst);
            if let Some(gate) = &self.gate {
                let _permit = gate.acquire().await.map_err(|_| stopped())?;
            }
            self.batches.lock().unwrap().push(batch.len());
            let poisoned = batch
                .iter()
                .flat_map(|g| &g.ops)
                .any(|op| matches!(op, Op::PutMeta { key, .. } if key == "poison"));
            if poisoned {
                return Err(StoreError::Invalid("poison".into()));
            }
            self.inner.commit(batch).await
        }
    }

    /// Polls `pred` until it holds, or panics after [`DEADLINE`].
    async fn wait_until(what: &str, pred: impl Fn() -> bool) {
        let poll = async {
            while !pred() {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        };
        if tokio::time::timeout(DEADLINE, poll).await.is_err() {
            panic!("{what} did not happen within {DEADLINE:?}");
        }
    }

    fn put(i: usize) -> Group {
        Group::from(Op::PutMapping(Mapping {
            origin: "dc2".into(),
            instance_id: format!("i{i:05}"),
            ..Mapping::default()
        }))
    }

    fn meta(key: &str) -> Group {
        Group::from(Op::PutMeta {
            key: key.into(),
            value: "v".into(),
        })
    }

    async fn stop(token: CancellationToken, tracker: TaskTracker) {
        token.cancel();
        tracker.close();
        tokio::time::timeout(DEADLINE, tracker.wait())
            .await
            .expect("the writer stops");
        assert!(tracker.is_empty());
    }

    #[tokio::test]
    async fn ten_thousand_concurrent_writes_cost_a_handful_of_commits() {
        let store = Arc::new(MemoryStore::new());
        let (token, tracker) = (CancellationToken::new(), TaskTracker::new());
        let handle = spawn_writer(store.clone(), 1024, token.clone(), &tracker);

        // Each write is its own task, as the sync engine's workers would be.
        let writes: Vec<_> = (0..10_000)
            .map(|i| tokio::spawn(handle.write(put(i))))
            .collect();
        for write in writes {
            write.await.unwrap().unwrap();
        }
        assert_eq!(store.load().await.unwrap().mappings.len(), 10_000);
        let commits = store.commits();
        assert!(commits <= 20, "{commits} commits for 10 000 writes");
        assert_eq!(handle.metrics().commits(), commits);
        assert_eq!(handle.metrics().groups(), 10_000);
        assert_eq!(handle.metrics().ops(), 10_000);
        stop(token, tracker).await;
    }

    #[tokio::test]
    async fn groups_queue_while_a_commit_is_in_flight() {
        let store = Arc::new(TestStore::gated());
        let (token, tracker) = (CancellationToken::new(), TaskTracker::new());
        let handle = spawn_writer(store.clone(), 256, token.clone(), &tracker);

        let first = tokio::spawn(handle.write(put(0)));
        wait_until("the first commit", || {
            store.entered.load(Ordering::SeqCst) == 1
        })
        .await;
        let rest: Vec<_> = (1..=100)
            .map(|i| tokio::spawn(handle.write(put(i))))
            .collect();
        wait_until("100 queued groups", || handle.queued() == 100).await;
        store.open_gate();

        first.await.unwrap().unwrap();
        for write in rest {
            write.await.unwrap().unwrap();
        }
        assert_eq!(store.batches(), vec![1, 100]);
        assert_eq!(store.inner.load().await.unwrap().mappings.len(), 101);
        stop(token, tracker).await;
    }

    #[tokio::test]
    async fn a_failed_commit_fails_every_group_in_it() {
        let store = Arc::new(MemoryStore::new());
        let (token, tracker) = (CancellationToken::new(), TaskTracker::new());
        let handle = spawn_writer(store.clone(), 64, token.clone(), &tracker);

        store.set_unavailable(true);
        let results = join_all((0..50).map(|i| handle.write(put(i)))).await;
        for result in results {
            assert!(result.unwrap_err().is_retryable());
        }
        store.set_unavailable(false);
        handle.write(put(0)).await.unwrap();
        assert_eq!(store.load().await.unwrap().mappings.len(), 1);
        assert_eq!(handle.metrics().groups(), 1);
        stop(token, tracker).await;
    }

    #[tokio::test]
    async fn an_invalid_group_fails_alone() {
        let store = Arc::new(TestStore::gated());
        let (token, tracker) = (CancellationToken::new(), TaskTracker::new());
        let handle = spawn_writer(store.clone(), 64, token.clone(), &tracker);

        // Too large: refused before it reaches the queue.
        let big = Group::new(
            (0..=super::super::MAX_GROUP_OPS)
                .map(|i| put(i).ops[0].clone())
                .collect(),
        );
        assert!(matches!(
            handle.write(big).await,
            Err(StoreError::Invalid(_))
        ));
        assert_eq!(store.entered.load(Ordering::SeqCst), 0);

        // Refused by the store inside a merged batch: only its own writer sees the error.
        let first = tokio::spawn(handle.write(meta("first")));
        wait_until("the first commit", || {
            store.entered.load(Ordering::SeqCst) == 1
        })
        .await;
        let good = tokio::spawn(handle.write(meta("good")));
        let poison = tokio::spawn(handle.write(meta("poison")));
        let good2 = tokio::spawn(handle.write(meta("good2")));
        wait_until("3 queued groups", || handle.queued() == 3).await;
        store.open_gate();
        first.await.unwrap().unwrap();
        good.await.unwrap().unwrap();
        good2.await.unwrap().unwrap();
        assert!(matches!(poison.await.unwrap(), Err(StoreError::Invalid(_))));
        let meta = store.inner.load().await.unwrap().meta;
        assert_eq!(
            meta.keys().collect::<Vec<_>>(),
            vec!["first", "good", "good2"]
        );
        stop(token, tracker).await;
    }

    #[tokio::test]
    async fn cancellation_flushes_the_queue_then_refuses_writes() {
        let store = Arc::new(TestStore::gated());
        let (token, tracker) = (CancellationToken::new(), TaskTracker::new());
        let handle = spawn_writer(store.clone(), 64, token.clone(), &tracker);

        let first = tokio::spawn(handle.write(put(0)));
        wait_until("the first commit", || {
            store.entered.load(Ordering::SeqCst) == 1
        })
        .await;
        let queued: Vec<_> = (1..=10)
            .map(|i| tokio::spawn(handle.write(put(i))))
            .collect();
        wait_until("10 queued groups", || handle.queued() == 10).await;
        token.cancel();
        store.open_gate();
        first.await.unwrap().unwrap();
        for write in queued {
            write.await.unwrap().unwrap();
        }
        stop(token, tracker).await;
        assert_eq!(store.inner.load().await.unwrap().mappings.len(), 11);
        let err = handle.write(put(99)).await.unwrap_err();
        assert!(err.to_string().contains("stopped"), "{err}");
    }

    #[tokio::test]
    async fn metrics_are_registered() {
        let store = Arc::new(MemoryStore::new());
        let (token, tracker) = (CancellationToken::new(), TaskTracker::new());
        let handle = spawn_writer(store, 8, token.clone(), &tracker);
        let metrics = Metrics::default();
        handle.metrics().register(&metrics);
        handle.write(put(1)).await.unwrap();
        handle.write(Group::default()).await.unwrap();
        let text = metrics.encode();
        assert!(
            text.contains("syncer_store_commits_total{outcome=\"ok\"} 1"),
            "{text}"
        );
        assert!(text.contains("syncer_store_ops_total 1"), "{text}");
        assert!(text.contains("syncer_store_groups_total 1"), "{text}");
        stop(token, tracker).await;
    }
}

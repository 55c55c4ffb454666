//! The in-memory twin of the gRPC link: engines of several data centres in one process call
//! each other's [`SyncHandle`] directly, addressed by the rpc address each is registered at.
//! The network can lose calls, slow them down and cut addresses apart, on tokio's clock, so
//! it runs under a paused clock (`#[tokio::test(start_paused = true)]`).
//!
//! Failures look as they do over gRPC: a cut, a lost call or an address where nothing
//! listens is [`LinkError::Unavailable`] at once (a refused connection), a delay longer than
//! the caller's timeout is [`LinkError::Timeout`] after the timeout, a call to or from a
//! frozen address (a stopped process, a hung server: the connection is accepted and nothing
//! ever answers) is [`LinkError::Timeout`] when the caller's deadline passes, and an engine's
//! refusal maps as `crate::rpc::status` maps it (unavailable, or refused for a request it
//! will never accept).
//!
//! An in-memory answer is one message: a pull waits at most its first-message deadline.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;

use super::{LinkError, PeerLink, PullBody, PullDeadlines, Pulled, Push, PushOutcome};
use crate::registry::{Schema, Tenant};
use crate::sync::export::{Increment, Revision};
use crate::sync::{EngineError, SyncHandle};

/// Most changes one in-memory push carries, as the gRPC link's message limit does.
const MEMORY_PUSH_BATCH: usize = 1000;

/// Counters of what the network carried, for tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryStats {
    /// Pulls delivered to an engine.
    pub pulls: u64,
    /// Pushes delivered to an engine.
    pub pushes: u64,
    /// Contract requests delivered to an engine.
    pub contracts: u64,
    /// Calls refused by the network (cut, lost, or nothing registered there).
    pub failed: u64,
    /// Calls held by a freeze: accepted, never answered.
    pub hung: u64,
}

#[derive(Default)]
struct NetState {
    engines: HashMap<SocketAddr, SyncHandle>,
    /// Cut address pairs, the smaller address first.
    cut: HashSet<(SocketAddr, SocketAddr)>,
    /// Addresses cut off from everyone.
    isolated: HashSet<SocketAddr>,
    /// Calls to an address still to be lost.
    lose: HashMap<SocketAddr, usize>,
    /// Extra time every call to an address takes.
    delays: HashMap<SocketAddr, Duration>,
    /// Frozen addresses: calls to and from them are never answered.
    frozen: HashSet<SocketAddr>,
    /// Calls held by a freeze, per address called.
    hung_to: HashMap<SocketAddr, u64>,
    stats: MemoryStats,
}

fn ordered(a: SocketAddr, b: SocketAddr) -> (SocketAddr, SocketAddr) {
    if a <= b { (a, b) } else { (b, a) }
}

/// Which call is routed (for the counters).
#[derive(Clone, Copy)]
enum Call {
    Pull,
    Push,
    Contracts,
}

/// Where a routed call goes.
enum Route {
    /// To this engine, after this delay.
    Serve(Box<SyncHandle>, Duration),
    /// Nowhere: accepted and never answered (a freeze).
    Hang,
}

impl Route {
    /// The engine's answer to `serve`, or nothing ever (the caller's deadline ends it).
    async fn answer<T, F>(self, serve: impl FnOnce(SyncHandle) -> F) -> T
    where
        F: std::future::Future<Output = T>,
    {
        match self {
            Route::Serve(handle, delay) => {
                tokio::time::sleep(delay).await;
                serve(*handle).await
            }
            Route::Hang => std::future::pending().await,
        }
    }
}

/// A network of in-memory engines. Clones share the same network.
#[derive(Clone, Default)]
pub struct MemoryNetwork {
    state: Arc<Mutex<NetState>>,
}

impl std::fmt::Debug for MemoryNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.with(|s| {
            f.debug_struct("MemoryNetwork")
                .field("engines", &s.engines.keys().collect::<Vec<_>>())
                .field("stats", &s.stats)
                .finish_non_exhaustive()
        })
    }
}

impl MemoryNetwork {
    /// An empty network: no engine, no fault.
    pub fn new() -> MemoryNetwork {
        MemoryNetwork::default()
    }

    fn with<R>(&self, f: impl FnOnce(&mut NetState) -> R) -> R {
        f(&mut self.state.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Serves calls to `addr` with `handle` (replacing whatever was there: a new leader
    /// taking over an address).
    pub fn register(&self, addr: SocketAddr, handle: SyncHandle) {
        self.with(|s| s.engines.insert(addr, handle));
    }

    /// Nothing serves `addr` any more (a stopped process): calls to it are unavailable.
    pub fn unregister(&self, addr: SocketAddr) {
        self.with(|s| s.engines.remove(&addr));
    }

    /// The link the engine at `from` calls its peers through (`from` is what partitions
    /// apply to; it need not be registered).
    pub fn link(&self, from: SocketAddr) -> MemoryLink {
        MemoryLink {
            network: self.clone(),
            from,
        }
    }

    /// Cuts `a` and `b` apart, both ways.
    pub fn partition(&self, a: SocketAddr, b: SocketAddr) {
        self.with(|s| s.cut.insert(ordered(a, b)));
    }

    /// Undoes [`MemoryNetwork::partition`] of `a` and `b`.
    pub fn heal(&self, a: SocketAddr, b: SocketAddr) {
        self.with(|s| s.cut.remove(&ordered(a, b)));
    }

    /// Cuts `addr` off from every other address, both ways.
    pub fn isolate(&self, addr: SocketAddr) {
        self.with(|s| s.isolated.insert(addr));
    }

    /// Undoes every partition and isolation (lost calls and delays stay as set).
    pub fn heal_all(&self) {
        self.with(|s| {
            s.cut.clear();
            s.isolated.clear();
        });
    }

    /// Loses the next `calls` calls to `to` (they fail as unavailable); 0 stops losing.
    pub fn lose_next(&self, to: SocketAddr, calls: usize) {
        self.with(|s| {
            if calls == 0 {
                s.lose.remove(&to);
            } else {
                s.lose.insert(to, calls);
            }
        });
    }

    /// Makes every call to `to` take `delay` longer (on tokio's clock) before the engine
    /// serves it; `Duration::ZERO` removes the delay.
    pub fn set_delay(&self, to: SocketAddr, delay: Duration) {
        self.with(|s| {
            if delay.is_zero() {
                s.delays.remove(&to);
            } else {
                s.delays.insert(to, delay);
            }
        });
    }

    /// Freezes `addr`, as a process stopped with SIGSTOP or a hung rpc server: calls to it
    /// and from it are accepted and never answered; each ends when its caller's deadline
    /// passes. Calls already held stay held after [`MemoryNetwork::thaw`].
    pub fn freeze(&self, addr: SocketAddr) {
        self.with(|s| s.frozen.insert(addr));
    }

    /// Undoes [`MemoryNetwork::freeze`] of `addr` for the calls made from now on.
    pub fn thaw(&self, addr: SocketAddr) {
        self.with(|s| s.frozen.remove(&addr));
    }

    /// Calls to `to` held by a freeze so far (a frozen `to`, or a call from a frozen address).
    pub fn hung_to(&self, to: SocketAddr) -> u64 {
        self.with(|s| s.hung_to.get(&to).copied().unwrap_or_default())
    }

    /// What the network carried so far.
    pub fn stats(&self) -> MemoryStats {
        self.with(|s| s.stats)
    }

    /// The engine serving a call from `from` to `to` and the delay before it, or that the
    /// call hangs, or why it fails.
    fn route(&self, from: SocketAddr, to: SocketAddr, call: Call) -> Result<Route, LinkError> {
        self.with(|s| {
            // A frozen caller's call goes nowhere; a frozen callee accepts it (below).
            if s.frozen.contains(&from) {
                s.stats.hung += 1;
                *s.hung_to.entry(to).or_default() += 1;
                return Ok(Route::Hang);
            }
            let failure = if s.cut.contains(&ordered(from, to))
                || (from != to && (s.isolated.contains(&from) || s.isolated.contains(&to)))
            {
                Some(format!("{from} and {to} are partitioned"))
            } else if let Some(left) = s.lose.get_mut(&to) {
                *left -= 1;
                if *left == 0 {
                    s.lose.remove(&to);
                }
                Some(format!("the call to {to} was lost"))
            } else if !s.engines.contains_key(&to) {
                Some(format!("nothing listens at {to}"))
            } else {
                None
            };
            if let Some(failure) = failure {
                s.stats.failed += 1;
                return Err(LinkError::Unavailable(failure));
            }
            if s.frozen.contains(&to) {
                s.stats.hung += 1;
                *s.hung_to.entry(to).or_default() += 1;
                return Ok(Route::Hang);
            }
            match call {
                Call::Pull => s.stats.pulls += 1,
                Call::Push => s.stats.pushes += 1,
                Call::Contracts => s.stats.contracts += 1,
            }
            let handle = s.engines.get(&to).cloned().unwrap_or_default();
            let delay = s.delays.get(&to).copied().unwrap_or_default();
            Ok(Route::Serve(Box::new(handle), delay))
        })
    }
}

/// What an engine's refusal looks like to the caller (as over gRPC).
fn refused(e: EngineError) -> LinkError {
    if e.is_unavailable() {
        LinkError::Unavailable(e.to_string())
    } else {
        LinkError::Refused(e.to_string())
    }
}

/// One engine's [`PeerLink`] on a [`MemoryNetwork`].
#[derive(Debug, Clone)]
pub struct MemoryLink {
    network: MemoryNetwork,
    from: SocketAddr,
}

#[async_trait]
impl PeerLink for MemoryLink {
    async fn pull(
        &self,
        addr: SocketAddr,
        _asker: &str,
        origin: &str,
        since: Option<Revision>,
        deadlines: PullDeadlines,
    ) -> Result<Pulled, LinkError> {
        let route = self.network.route(self.from, addr, Call::Pull)?;
        let work = route.answer(|handle| async move { handle.serve_pull(since).map_err(refused) });
        let limit = deadlines.first.min(deadlines.whole);
        let answer = tokio::time::timeout(limit, work)
            .await
            .map_err(|_| LinkError::Timeout(limit))??;
        if answer.origin != origin {
            return Err(LinkError::Incomplete(format!(
                "asked {origin}, answered for {:?}",
                answer.origin
            )));
        }
        Ok(match answer.body {
            PullBody::UpToDate(revision) => Pulled::UpToDate(revision),
            PullBody::Increments { to, changes } => Pulled::Increments { to, changes },
            PullBody::Snapshot(snapshot) => Pulled::Snapshot {
                revision: snapshot.revision,
                items: snapshot
                    .items
                    .into_iter()
                    .map(|(service, instance)| (service, Arc::unwrap_or_clone(instance)))
                    .collect(),
            },
        })
    }

    async fn contracts(
        &self,
        addr: SocketAddr,
        tenant: &Tenant,
        service_id: &str,
        ids: &[String],
        timeout: Duration,
    ) -> Result<Vec<Schema>, LinkError> {
        let route = self.network.route(self.from, addr, Call::Contracts)?;
        let work = route.answer(|handle| async move {
            handle
                .serve_contracts(tenant, service_id, ids)
                .await
                .map_err(refused)
        });
        tokio::time::timeout(timeout, work)
            .await
            .map_err(|_| LinkError::Timeout(timeout))?
    }

    async fn push(
        &self,
        addr: SocketAddr,
        origin: &str,
        from: Revision,
        changes: &[Increment],
        timeout: Duration,
    ) -> Result<PushOutcome, LinkError> {
        let batch = &changes[..changes.len().min(MEMORY_PUSH_BATCH)];
        let Some((last, _, _)) = batch.last() else {
            return Err(LinkError::Refused("a push without changes".into()));
        };
        let route = self.network.route(self.from, addr, Call::Push)?;
        let push = Push {
            origin: origin.to_owned(),
            epoch: from.epoch,
            from_seq: from.seq,
            to_seq: *last,
            changes: batch.to_vec(),
        };
        let work =
            route.answer(|handle| async move { handle.serve_push(push).await.map_err(refused) });
        let reply = tokio::time::timeout(timeout, work)
            .await
            .map_err(|_| LinkError::Timeout(timeout))??;
        Ok(PushOutcome {
            reply,
            sent: batch.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use tokio::time::Instant;
    use tokio_util::sync::CancellationToken;
    use tokio_util::task::TaskTracker;

    use super::*;
    use crate::gossip::transport::MemoryNetwork as GossipNetwork;
    use crate::gossip::{
        GossipConfig, GossipMetrics, NodeId, NodeMeta, Profile, spawn as spawn_gossip,
    };
    use crate::registry::memory::MemoryRegistry;
    use crate::registry::{Instance, Registry, Service, Tenant};
    use crate::store::memory::MemoryStore;
    use crate::sync::export::Export;
    use crate::sync::{EngineDeps, EngineSettings, SyncMetrics, start};

    const DEADLINES: PullDeadlines = PullDeadlines {
        first: Duration::from_secs(10),
        idle: Duration::from_secs(10),
        whole: Duration::from_secs(10),
    };
    const PUSH_TIMEOUT: Duration = Duration::from_secs(10);

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    /// One data centre's engine, started on `net` at rpc address `rpc`.
    struct Engine {
        handle: SyncHandle,
        token: CancellationToken,
        tracker: TaskTracker,
    }

    impl Drop for Engine {
        fn drop(&mut self) {
            self.token.cancel();
            self.tracker.close();
        }
    }

    async fn engine(net: &MemoryNetwork, cluster: &str, port: u16) -> Engine {
        let gossip_net = GossipNetwork::new();
        let socket = gossip_net.bind(addr(port + 1)).expect("bind gossip");
        let identity = NodeId {
            name: format!("{cluster}-a"),
            addr: addr(port + 1),
            generation: 1,
            bump: 0,
            meta: NodeMeta::new(cluster, addr(port), "single"),
        };
        let config = GossipConfig {
            identity,
            label: String::new(),
            profile: Profile::Local,
            join: Vec::new(),
            state_file: None,
            remembered: Vec::new(),
            previous_generation: None,
            resolver: None,
            seed: Some(u64::from(port)),
            keyring: None,
        };
        let token = CancellationToken::new();
        let tracker = TaskTracker::new();
        let gossip = spawn_gossip(
            config,
            Arc::new(socket),
            GossipMetrics::default(),
            token.clone(),
            &tracker,
        );
        let registry = MemoryRegistry::new(cluster);
        let service = Service {
            service_id: "svc-1".into(),
            app: "shop".into(),
            name: "cart".into(),
            version: "1.0.0".into(),
            status: "UP".into(),
            tenant: Tenant::default_tenant(),
            ..Service::default()
        };
        registry.ensure_service(&service).await.expect("service");
        let instance = Instance {
            service_id: "svc-1".into(),
            instance_id: "i-1".into(),
            host_name: "cart-host".into(),
            endpoints: vec!["rest://10.0.0.1:8080".into()],
            status: "UP".into(),
            tenant: Tenant::default_tenant(),
            ..Instance::default()
        };
        registry.register(&instance).await.expect("instance");
        let handle = SyncHandle::new(SyncMetrics::default());
        let deps = EngineDeps {
            cluster: cluster.into(),
            registry: Arc::new(registry),
            store: Arc::new(MemoryStore::new()),
            gossip,
            settings: EngineSettings {
                export: true,
                lease: crate::sync::copy::CopyLease::from_lease(Duration::from_secs(30)),
                origin_grace: Duration::from_secs(60),
                keep_stale: false,
                keep_stale_for: Duration::from_secs(3600),
                anti_entropy_interval: Duration::from_secs(10),
                removal_cap: 1000,
                removal_hold: crate::sync::hold::MASS_REMOVAL_HOLD,
                removals_from: None,
                filter: Default::default(),
            },
            link: Arc::new(net.link(addr(port))),
        };
        start(deps, &handle, token.clone(), &tracker)
            .await
            .expect("engine starts");
        net.register(addr(port), handle.clone());
        Engine {
            handle,
            token,
            tracker,
        }
    }

    /// Pulls until the engine has read its registry (it answers unavailable before).
    async fn first_pull(link: &MemoryLink, to: SocketAddr, origin: &str) -> Pulled {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match link.pull(to, "dc9", origin, None, DEADLINES).await {
                Ok(pulled) => return pulled,
                Err(LinkError::Unavailable(_)) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("pull failed: {e}"),
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn calls_reach_registered_engines_only() {
        let net = MemoryNetwork::new();
        let link = net.link(addr(9000));
        let err = link.pull(addr(1000), "dc9", "dc1", None, DEADLINES).await;
        assert!(matches!(err, Err(LinkError::Unavailable(ref m)) if m.contains("nothing listens")));

        let idle = SyncHandle::new(SyncMetrics::default());
        net.register(addr(1000), idle.clone());
        let err = link.pull(addr(1000), "dc9", "dc1", None, DEADLINES).await;
        assert!(
            matches!(err, Err(LinkError::Unavailable(ref m)) if m == "the sync engine is starting")
        );
        idle.stop("standby: not the active syncer");
        let err = link.pull(addr(1000), "dc9", "dc1", None, DEADLINES).await;
        assert!(
            matches!(err, Err(LinkError::Unavailable(ref m)) if m == "standby: not the active syncer")
        );
        net.unregister(addr(1000));
        assert!(
            link.pull(addr(1000), "dc9", "dc1", None, DEADLINES)
                .await
                .is_err()
        );
        assert_eq!(
            net.stats(),
            MemoryStats {
                pulls: 2,
                pushes: 0,
                contracts: 0,
                failed: 2,
                hung: 0,
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn pulls_bring_a_snapshot_then_nothing_new() {
        let net = MemoryNetwork::new();
        let _dc1 = engine(&net, "dc1", 1000).await;
        let link = net.link(addr(9000));
        let Pulled::Snapshot { revision, items } = first_pull(&link, addr(1000), "dc1").await
        else {
            panic!("a first pull is a snapshot");
        };
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].1.instance_id, "i-1");
        let again = link
            .pull(addr(1000), "dc9", "dc1", Some(revision), DEADLINES)
            .await;
        assert!(matches!(again, Ok(Pulled::UpToDate(r)) if r == revision));
        // An answer for another origin than asked is not used.
        let wrong = link.pull(addr(1000), "dc9", "dc2", None, DEADLINES).await;
        assert!(matches!(wrong, Err(LinkError::Incomplete(_))));
    }

    #[tokio::test(start_paused = true)]
    async fn partitions_lost_calls_and_delays() {
        let net = MemoryNetwork::new();
        let _dc1 = engine(&net, "dc1", 1000).await;
        let link = net.link(addr(9000));
        first_pull(&link, addr(1000), "dc1").await;
        let pull = || link.pull(addr(1000), "dc9", "dc1", None, DEADLINES);

        net.partition(addr(9000), addr(1000));
        assert!(matches!(pull().await, Err(LinkError::Unavailable(_))));
        net.heal(addr(1000), addr(9000));
        assert!(pull().await.is_ok());
        net.isolate(addr(1000));
        assert!(matches!(pull().await, Err(LinkError::Unavailable(_))));
        net.heal_all();
        assert!(pull().await.is_ok());

        net.lose_next(addr(1000), 2);
        assert!(matches!(pull().await, Err(LinkError::Unavailable(ref m)) if m.contains("lost")));
        assert!(pull().await.is_err());
        assert!(pull().await.is_ok(), "only two calls are lost");

        net.set_delay(addr(1000), Duration::from_secs(3));
        let started = Instant::now();
        assert!(pull().await.is_ok());
        assert_eq!(started.elapsed(), Duration::from_secs(3));
        let started = Instant::now();
        let short = PullDeadlines {
            first: Duration::from_secs(1),
            ..DEADLINES
        };
        let late = link.pull(addr(1000), "dc9", "dc1", None, short).await;
        assert!(matches!(late, Err(LinkError::Timeout(_))));
        assert_eq!(started.elapsed(), Duration::from_secs(1));
        net.set_delay(addr(1000), Duration::ZERO);
        let started = Instant::now();
        assert!(pull().await.is_ok());
        assert_eq!(started.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_frozen_address_answers_nothing_until_the_deadline() {
        let net = MemoryNetwork::new();
        let _dc1 = engine(&net, "dc1", 1000).await;
        let link = net.link(addr(9000));
        first_pull(&link, addr(1000), "dc1").await;
        let short = PullDeadlines {
            first: Duration::from_secs(2),
            ..DEADLINES
        };

        net.freeze(addr(1000));
        let started = Instant::now();
        let hung = link.pull(addr(1000), "dc9", "dc1", None, short).await;
        assert!(matches!(hung, Err(LinkError::Timeout(d)) if d == short.first));
        assert_eq!(started.elapsed(), short.first, "held until the deadline");
        let change = (
            1,
            0,
            Export::Removed(crate::registry::InstanceRef {
                tenant: Tenant::default_tenant(),
                service_id: "svc-9".into(),
                instance_id: "i-1".into(),
            }),
        );
        let from = Revision { epoch: 7, seq: 0 };
        let push = link
            .push(addr(1000), "dc2", from, &[change], Duration::from_secs(3))
            .await;
        assert!(
            matches!(push, Err(LinkError::Timeout(_))),
            "pushes hang too"
        );
        // A frozen process calls nobody either.
        let outgoing = net
            .link(addr(1000))
            .pull(addr(9000), "dc1", "dc9", None, short)
            .await;
        assert!(matches!(outgoing, Err(LinkError::Timeout(_))));
        assert_eq!(net.stats().hung, 3);
        assert_eq!(net.hung_to(addr(1000)), 2);
        assert_eq!(net.hung_to(addr(9000)), 1);

        net.thaw(addr(1000));
        assert!(
            link.pull(addr(1000), "dc9", "dc1", None, short)
                .await
                .is_ok()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn pushes_tell_the_receivers_cursor() {
        let net = MemoryNetwork::new();
        let dc1 = engine(&net, "dc1", 1000).await;
        let link = net.link(addr(2000));
        first_pull(&net.link(addr(9000)), addr(1000), "dc1").await;
        let removed = |seq| {
            (
                seq,
                0,
                Export::Removed(crate::registry::InstanceRef {
                    tenant: Tenant::default_tenant(),
                    service_id: "svc-9".into(),
                    instance_id: format!("i-{seq}"),
                }),
            )
        };
        let changes: Vec<Increment> = (1..=3).map(removed).collect();
        // dc1 never heard of dc2: the push does not continue its cursor, which it tells.
        let from = Revision { epoch: 7, seq: 0 };
        let outcome = link
            .push(addr(1000), "dc2", from, &changes, PUSH_TIMEOUT)
            .await
            .expect("push answered");
        assert!(!outcome.reply.applied);
        assert_eq!(outcome.reply.cursor(), Revision::default());
        assert_eq!(outcome.sent, 3);
        // A push claiming to come from the receiver itself is refused outright.
        let own = link
            .push(addr(1000), "dc1", from, &changes, PUSH_TIMEOUT)
            .await;
        assert!(matches!(own, Err(LinkError::Refused(ref m)) if m.contains("dc1")));
        let empty = link.push(addr(1000), "dc2", from, &[], PUSH_TIMEOUT).await;
        assert!(matches!(empty, Err(LinkError::Refused(_))));
        dc1.handle.stop("stopped for the test");
        let stopped = link
            .push(addr(1000), "dc2", from, &changes, PUSH_TIMEOUT)
            .await;
        assert!(matches!(stopped, Err(LinkError::Unavailable(_))));
        assert_eq!(net.stats().pushes, 3);
    }
}

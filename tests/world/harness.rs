//! [`World`]: N data centres in one process under tokio's paused clock.
//!
//! Each data centre (`dc1`, `dc2`, ... at indices 0, 1, ...) has a [`MemoryRegistry`] with
//! leases (Service Center's, or a Eureka-like twin's: [`Kind`], [`World::of_kinds`]), one [`MemoryStore`] (its tables shared by every member, as etcd is) and one or
//! more syncer members. A member is a gossip node on the world's [`MemoryNetwork`] (local
//! profile, metadata naming its cluster, rpc address and role) and, while it runs, a sync
//! engine started with `sync::start` on its own [`SyncHandle`], attached to the world's
//! [`Link`] at its rpc address. Member 0 of a data centre is its active syncer unless a
//! scenario adds another.
//!
//! Waiting is polling: [`World::wait_until`] checks a condition every [`STEP`] of virtual
//! time, so a test never sleeps in real time and a deadline is a statement about the engine
//! ("within two anti-entropy rounds"), not about the machine.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use syncer::gossip::transport::MemoryNetwork;
use syncer::gossip::{
    self, GossipConfig, GossipHandle, GossipMetrics, MemberStatus, NodeId, NodeMeta, Profile, Role,
};
use syncer::registry::memory::MemoryRegistry;
use syncer::registry::{Instance, InstanceRef, Registry, Service, Tenant};
use syncer::store::{Mapping, MappingStore, MemoryStore};
use syncer::sync::copy::CopyLease;
use syncer::sync::ids::{ORIGIN_PROPERTY, OriginKey, copy_instance_id, copy_origin, is_copy};
use syncer::sync::{self, EngineDeps, EngineSettings, SyncHandle, SyncMetrics};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::link::Link;

/// How often [`World::wait_until`] looks.
pub const STEP: Duration = Duration::from_millis(50);
/// Long enough for any change to cross: a push takes milliseconds, a pull after an
/// announcement well under a second, an anti-entropy round 5 s.
pub const SETTLE: Duration = Duration::from_secs(12);
/// Replacement generations searched when telling which origin instance a copy mirrors.
const GENERATIONS: u32 = 16;
/// App and version of every service the world registers.
const APP: &str = "world";
const VERSION: &str = "1.0.0";

/// The settings every engine of a world starts with unless a scenario says otherwise: short
/// enough that leases, grace periods and anti-entropy rounds all happen within seconds of
/// virtual time.
pub fn fast_settings() -> EngineSettings {
    EngineSettings {
        export: true,
        // Heartbeats every second, a lease of 3 s.
        lease: CopyLease::from_lease(Duration::from_secs(3)),
        origin_grace: Duration::from_secs(10),
        keep_stale: false,
        keep_stale_for: Duration::from_secs(3600),
        anti_entropy_interval: Duration::from_secs(5),
        removal_cap: 1000,
        removal_hold: syncer::sync::hold::MASS_REMOVAL_HOLD,
        removals_from: None,
        filter: Default::default(),
    }
}

/// Which registry a data centre of the world runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// [`MemoryRegistry::with_leases`]: a Service Center twin.
    ServiceComb,
    /// [`MemoryRegistry::eureka_like`]: a Eureka data centre as its adapter shows it.
    Eureka,
}

/// Something that runs until cancelled: its token and the tracker of its tasks.
struct Running {
    token: CancellationToken,
    tracker: TaskTracker,
}

impl Running {
    fn new() -> Running {
        Running {
            token: CancellationToken::new(),
            tracker: TaskTracker::new(),
        }
    }

    async fn stop(self) {
        self.token.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

/// One syncer of a data centre.
pub struct Member {
    pub name: String,
    pub gossip_addr: SocketAddr,
    pub rpc_addr: SocketAddr,
    /// Grows on every restart, as a real member's saved generation.
    generation: u64,
    /// `Active` members serve the data centre; peers take the largest `term`.
    role: Role,
    term: u64,
    /// This member's handle on the data centre's store (fenced in a failover scenario).
    pub store: Arc<MemoryStore>,
    pub settings: EngineSettings,
    /// Serves `pull` and `push` for the engine while it runs; kept across restarts.
    pub handle: SyncHandle,
    /// The engine's metrics (shared with `handle`).
    pub metrics: SyncMetrics,
    gossip: Option<(GossipHandle, Running)>,
    engine: Option<Running>,
}

/// One data centre.
pub struct Dc {
    pub name: String,
    pub registry: MemoryRegistry,
    /// An unfenced handle on the data centre's store, for the test to look at.
    pub store: Arc<MemoryStore>,
    pub members: Vec<Member>,
}

/// Several data centres, one gossip network, one peer link.
pub struct World {
    pub net: MemoryNetwork,
    pub link: Link,
    pub dcs: Vec<Dc>,
    /// Every instance ever registered through the world, per data centre: what a copy may
    /// legitimately mirror.
    origins: BTreeMap<String, BTreeSet<InstanceRef>>,
    /// The gossip profile of every member (`local` unless [`World::of_kinds_on`] says).
    profile: Profile,
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Logs of the engine with `RUST_LOG=syncer=debug`, once per test process.
fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

impl World {
    /// `n` data centres with [`fast_settings`], each with one active syncer, the gossip pool
    /// formed and every engine started.
    pub async fn new(n: usize) -> World {
        World::with_settings(n, fast_settings()).await
    }

    /// `n` data centres whose engines use `settings`.
    pub async fn with_settings(n: usize, settings: EngineSettings) -> World {
        World::of_kinds(&vec![Kind::ServiceComb; n], settings).await
    }

    /// One data centre per entry of `kinds`, running that kind of registry, whose engines
    /// use `settings`.
    pub async fn of_kinds(kinds: &[Kind], settings: EngineSettings) -> World {
        World::of_kinds_on(kinds, settings, Profile::Local).await
    }

    /// [`World::of_kinds`] with every gossip member on `profile` (the scale bench runs the
    /// world on `lan`, as a deployment would).
    pub async fn of_kinds_on(kinds: &[Kind], settings: EngineSettings, profile: Profile) -> World {
        init_logs();
        let mut world = World {
            net: MemoryNetwork::new(),
            link: Link::default(),
            dcs: Vec::new(),
            origins: BTreeMap::new(),
            profile,
        };
        for &kind in kinds {
            world.push_dc_of(settings.clone(), kind);
        }
        for dc in 0..kinds.len() {
            world.start_member(dc, 0).await;
        }
        world.wait_for_pool().await;
        world
    }

    /// Adds a data centre with an empty registry and store and starts its syncer with the
    /// settings of `dc1`'s; returns its index once the pool includes it.
    pub async fn add_dc(&mut self) -> usize {
        let dc = self.dcs.len();
        let settings = self.dcs[0].members[0].settings.clone();
        self.push_dc(settings);
        self.start_member(dc, 0).await;
        self.wait_for_pool().await;
        dc
    }

    /// Adds a data centre that claims the name `name` (maybe another one's: a misconfigured
    /// data centre), with its own empty registry and store, and starts its syncer with the
    /// settings of `dc1`'s; returns its index once the pool includes it.
    pub async fn add_dc_named(&mut self, name: &str) -> usize {
        let dc = self.dcs.len();
        let settings = self.dcs[0].members[0].settings.clone();
        self.push_dc(settings);
        self.dcs[dc].name = name.to_owned();
        self.origins.entry(name.to_owned()).or_default();
        self.start_member(dc, 0).await;
        self.wait_for_pool().await;
        dc
    }

    fn push_dc(&mut self, settings: EngineSettings) {
        self.push_dc_of(settings, Kind::ServiceComb);
    }

    fn push_dc_of(&mut self, settings: EngineSettings, kind: Kind) {
        let i = self.dcs.len();
        let name = format!("dc{}", i + 1);
        let store = Arc::new(MemoryStore::new());
        let port = 10 * u16::try_from(i).expect("few dcs");
        let metrics = SyncMetrics::default();
        let member = Member {
            name: format!("{name}-a"),
            gossip_addr: addr(20_000 + port),
            rpc_addr: addr(30_000 + port),
            generation: 1,
            role: Role::Active,
            term: 0,
            store: Arc::new(store.handle()),
            settings,
            handle: SyncHandle::new(metrics.clone()),
            metrics,
            gossip: None,
            engine: None,
        };
        let registry_id = format!("{name}-registry");
        self.dcs.push(Dc {
            registry: match kind {
                Kind::ServiceComb => MemoryRegistry::with_leases(&registry_id),
                Kind::Eureka => MemoryRegistry::eureka_like(&registry_id),
            },
            name: name.clone(),
            store,
            members: vec![member],
        });
        self.origins.insert(name, BTreeSet::new());
    }

    /// The name of data centre `dc`.
    pub fn name(&self, dc: usize) -> &str {
        &self.dcs[dc].name
    }

    /// The registry of data centre `dc`.
    pub fn registry(&self, dc: usize) -> &MemoryRegistry {
        &self.dcs[dc].registry
    }

    /// The cluster names member 0 of `dc` sees in conflict (claimed by members serving
    /// different registries), as `/health` reports them.
    pub async fn conflicts(&self, dc: usize) -> BTreeSet<String> {
        let (gossip, _) = self.dcs[dc].members[0]
            .gossip
            .as_ref()
            .expect("the member runs");
        let members = gossip.members().await.expect("gossip runs");
        syncer::sync::peers::conflicts(&members)
    }

    /// The (unfenced) store of data centre `dc`.
    pub fn store(&self, dc: usize) -> &MemoryStore {
        &self.dcs[dc].store
    }

    /// The first gossip address of the world, which every member joins through.
    fn seed(&self) -> SocketAddr {
        self.dcs[0].members[0].gossip_addr
    }

    /// Starts member `m` of `dc`: its gossip node, then its engine.
    async fn start_member(&mut self, dc: usize, m: usize) {
        self.start_gossip(dc, m);
        self.start_engine(dc, m).await;
    }

    fn start_gossip(&mut self, dc: usize, m: usize) {
        let seed = self.seed();
        let cluster = self.dcs[dc].name.clone();
        // As a daemon announces once its registry answers (the memory registry's id is
        // `<dc>-registry`, so members of one data centre share it).
        let registry = gossip::registry_fingerprint("memory", &format!("dc{}-registry", dc + 1));
        let member = &mut self.dcs[dc].members[m];
        let socket = self
            .net
            .bind(member.gossip_addr)
            .expect("bind a gossip address");
        let identity = NodeId {
            name: member.name.clone(),
            addr: member.gossip_addr,
            generation: member.generation,
            bump: 0,
            meta: {
                let mut meta = NodeMeta::new(cluster, member.rpc_addr, "single");
                meta.role = member.role;
                meta.protocol = syncer::rpc::PROTOCOL_VERSION;
                meta.term = member.term;
                meta.registry = registry;
                meta
            },
        };
        let join = if member.gossip_addr == seed {
            Vec::new()
        } else {
            vec![seed.to_string()]
        };
        let config = GossipConfig {
            identity,
            label: String::new(),
            profile: self.profile,
            join,
            state_file: None,
            remembered: Vec::new(),
            previous_generation: None,
            resolver: None,
            seed: Some(u64::from(member.gossip_addr.port()) + member.generation),
            keyring: None,
        };
        let running = Running::new();
        let handle = gossip::spawn(
            config,
            Arc::new(socket),
            GossipMetrics::default(),
            running.token.clone(),
            &running.tracker,
        );
        member.gossip = Some((handle, running));
    }

    /// Starts the engine of member `m` of `dc` on the kept registry and store, and attaches
    /// it to the link.
    async fn start_engine(&mut self, dc: usize, m: usize) {
        let cluster = self.dcs[dc].name.clone();
        let registry: Arc<dyn Registry> = Arc::new(self.dcs[dc].registry.clone());
        let member = &mut self.dcs[dc].members[m];
        let gossip = member
            .gossip
            .as_ref()
            .map(|(handle, _)| handle.clone())
            .expect("the gossip node runs before the engine");
        let store: Arc<dyn MappingStore> = member.store.clone();
        let deps = EngineDeps {
            cluster,
            registry,
            store,
            gossip,
            settings: member.settings.clone(),
            link: self.link.peer_link(member.rpc_addr),
        };
        let running = Running::new();
        sync::start(
            deps,
            &member.handle,
            running.token.clone(),
            &running.tracker,
        )
        .await
        .expect("the engine starts");
        self.link.attach(member.rpc_addr, &member.handle);
        member.engine = Some(running);
    }

    /// Stops member `m` of `dc` as a process exit: engine first (it stops serving), then its
    /// gossip node (it leaves the pool). Its registry and store are kept.
    pub async fn stop_member(&mut self, dc: usize, m: usize) {
        let member = &mut self.dcs[dc].members[m];
        self.link.detach(member.rpc_addr);
        if let Some(engine) = member.engine.take() {
            engine.stop().await;
        }
        member.handle.stop("stopped by the test");
        if let Some((_, gossip)) = member.gossip.take() {
            gossip.stop().await;
        }
    }

    /// Stops the active syncer of `dc` (member 0), keeping its registry and store.
    pub async fn stop_engine(&mut self, dc: usize) {
        self.stop_member(dc, 0).await;
    }

    /// Starts the syncer of `dc` (member 0) again, as a restarted process: a new gossip
    /// generation, a new engine on the kept registry and store.
    pub async fn restart_engine(&mut self, dc: usize) {
        self.stop_member(dc, 0).await;
        self.dcs[dc].members[0].generation += 1;
        self.start_member(dc, 0).await;
    }

    /// Adds member `name` to `dc` that becomes its active syncer in leader term `term`:
    /// the store's leader term moves to `term` (every member fenced by an older term is
    /// refused from now on), the new member writes through a handle fenced by `term`, and
    /// it removes no copy during `hold` (its predecessor's lease). Returns its index.
    pub async fn add_leader(&mut self, dc: usize, name: &str, term: u64, hold: Duration) -> usize {
        let index = self.dcs[dc].members.len();
        let store = self.dcs[dc].store.clone();
        store.set_leader_term(Some(term));
        let mut settings = self.dcs[dc].members[0].settings.clone();
        settings.removals_from = Some(Instant::now() + hold);
        let port = 25_000
            + 10 * u16::try_from(dc).expect("few dcs")
            + u16::try_from(index).expect("few members");
        let metrics = SyncMetrics::default();
        self.dcs[dc].members.push(Member {
            name: name.to_owned(),
            gossip_addr: addr(port),
            rpc_addr: addr(port + 10_000),
            generation: 1,
            role: Role::Active,
            term,
            store: Arc::new(store.fenced(term)),
            settings,
            handle: SyncHandle::new(metrics.clone()),
            metrics,
            gossip: None,
            engine: None,
        });
        self.start_member(dc, index).await;
        index
    }

    /// Fences member `m` of `dc` by leader term `term` and announces it as active in that
    /// term; the store's leader term becomes `term`.
    pub async fn lead(&mut self, dc: usize, m: usize, term: u64) {
        self.dcs[dc].store.set_leader_term(Some(term));
        let member = &mut self.dcs[dc].members[m];
        member.store.set_fence(Some(term));
        member.term = term;
        member.role = Role::Active;
        if let Some((gossip, _)) = &member.gossip {
            gossip
                .update_meta(move |meta| {
                    meta.role = Role::Active;
                    meta.term = term;
                })
                .await
                .expect("gossip runs");
        }
    }

    /// Member `m` of `dc` announces that it stands by; its engine keeps running (an old
    /// leader that has not noticed yet).
    pub async fn demote(&mut self, dc: usize, m: usize) {
        let member = &mut self.dcs[dc].members[m];
        member.role = Role::Standby;
        member.term = 0;
        if let Some((gossip, _)) = &member.gossip {
            gossip
                .update_meta(|meta| {
                    meta.role = Role::Standby;
                    meta.term = 0;
                })
                .await
                .expect("gossip runs");
        }
    }

    /// Freezes the rpc side of member `m` of `dc`, as a syncer stopped with SIGSTOP looks to
    /// its peers' calls: pulls and pushes to it (and from it) are accepted and never
    /// answered. Its gossip node goes on, so the peer directory still names it.
    pub fn freeze(&self, dc: usize, m: usize) {
        self.link.freeze(self.dcs[dc].members[m].rpc_addr);
    }

    /// Undoes [`World::freeze`] for the calls made from now on.
    pub fn thaw(&self, dc: usize, m: usize) {
        self.link.thaw(self.dcs[dc].members[m].rpc_addr);
    }

    /// Cuts `a` and `b` apart: gossip between every member of each, and the peer link.
    pub fn partition(&self, a: usize, b: usize) {
        for (x, y) in self.member_pairs(a, b) {
            self.net.partition(x.0, y.0);
            self.link.partition(x.1, y.1);
        }
    }

    /// Restores what [`World::partition`] cut.
    pub fn heal(&self, a: usize, b: usize) {
        for (x, y) in self.member_pairs(a, b) {
            self.net.heal(x.0, y.0);
            self.link.heal(x.1, y.1);
        }
    }

    /// `(gossip, rpc)` address pairs of every member of `a` with every member of `b`.
    #[allow(clippy::type_complexity)]
    fn member_pairs(
        &self,
        a: usize,
        b: usize,
    ) -> Vec<((SocketAddr, SocketAddr), (SocketAddr, SocketAddr))> {
        let addrs = |dc: usize| -> Vec<(SocketAddr, SocketAddr)> {
            self.dcs[dc]
                .members
                .iter()
                .map(|m| (m.gossip_addr, m.rpc_addr))
                .collect()
        };
        let mut pairs = Vec::new();
        for x in addrs(a) {
            for y in addrs(b) {
                pairs.push((x, y));
            }
        }
        pairs
    }

    /// Waits until every running gossip node sees every other running one alive.
    pub async fn wait_for_pool(&self) {
        let handles: Vec<GossipHandle> = self
            .dcs
            .iter()
            .flat_map(|dc| &dc.members)
            .filter_map(|m| m.gossip.as_ref().map(|(h, _)| h.clone()))
            .collect();
        let start = Instant::now();
        loop {
            let mut formed = true;
            for handle in &handles {
                let alive = handle
                    .members()
                    .await
                    .map(|ms| {
                        ms.iter()
                            .filter(|m| m.status == MemberStatus::Alive)
                            .count()
                    })
                    .unwrap_or(0);
                formed &= alive == handles.len();
            }
            if formed {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the gossip pool did not form within 30 s"
            );
            tokio::time::sleep(STEP).await;
        }
    }

    /// Polls `cond` every [`STEP`] of virtual time until it holds.
    ///
    /// # Panics
    /// When it does not hold within `deadline`, naming `what`.
    pub async fn wait_until(
        &self,
        what: &str,
        deadline: Duration,
        mut cond: impl FnMut(&World) -> bool,
    ) -> Duration {
        let start = Instant::now();
        while !cond(self) {
            assert!(
                start.elapsed() < deadline,
                "timed out after {deadline:?} waiting for {what}\n{}",
                self.describe()
            );
            tokio::time::sleep(STEP).await;
        }
        start.elapsed()
    }

    /// Waits until every data centre mirrors the others ([`World::mirrored`]), polling as
    /// [`World::wait_until`].
    ///
    /// # Panics
    /// When they do not within [`SETTLE`], naming `what`.
    pub async fn wait_mirrored(&self, what: &str) -> Duration {
        self.wait_until(what, SETTLE, |w| w.mirrored().is_ok())
            .await
    }

    /// Checks `cond` every [`STEP`] for `period` of virtual time.
    ///
    /// # Panics
    /// The first time it does not hold, naming `what`.
    pub async fn holds_for(
        &self,
        what: &str,
        period: Duration,
        mut cond: impl FnMut(&World) -> bool,
    ) {
        let start = Instant::now();
        while start.elapsed() < period {
            assert!(
                cond(self),
                "{what} broke after {:?}\n{}",
                start.elapsed(),
                self.describe()
            );
            tokio::time::sleep(STEP).await;
        }
    }

    /// Lets `period` of virtual time pass.
    pub async fn pass(&self, period: Duration) {
        tokio::time::sleep(period).await;
    }

    // --- the data centres' registries ---------------------------------------------------

    /// Registers instance `instance` of service `service` in `dc` (the service is created
    /// with id `service` when missing), without a health check (it never expires), with one
    /// endpoint naming it. Returns its reference.
    pub async fn register(&mut self, dc: usize, service: &str, instance: &str) -> InstanceRef {
        let body = Instance {
            tenant: Tenant::default(),
            service_id: service.to_owned(),
            instance_id: instance.to_owned(),
            endpoints: vec![format!("rest://{instance}.{}:8080", self.dcs[dc].name)],
            host_name: format!("{instance}-host"),
            status: "UP".into(),
            properties: BTreeMap::from([("zone".to_owned(), "z1".to_owned())]),
            ..Instance::default()
        };
        self.register_body(dc, &body).await;
        body.reference()
    }

    /// Registers `body` in `dc`, creating its service (id `body.service_id`) when missing.
    pub async fn register_body(&mut self, dc: usize, body: &Instance) {
        let service = Service {
            tenant: body.tenant.clone(),
            service_id: body.service_id.clone(),
            app: APP.into(),
            name: body.service_id.clone(),
            version: VERSION.into(),
            ..Service::default()
        };
        self.register_in(dc, &service, body).await;
    }

    /// Registers `body` in `dc` under `service` (created when missing). The registry takes
    /// whatever it is given: the kind rules are for the engine to ask.
    pub async fn register_in(&mut self, dc: usize, service: &Service, body: &Instance) {
        let registry = &self.dcs[dc].registry;
        registry
            .ensure_service(service)
            .await
            .expect("ensure_service");
        registry.register(body).await.expect("register");
        self.origins
            .get_mut(&self.dcs[dc].name)
            .expect("known dc")
            .insert(body.reference());
    }

    /// Notes `instance` as registered in `dc` by an application (not through
    /// [`World::register_in`]): a copy may mirror it.
    pub fn record_origin(&mut self, dc: usize, instance: InstanceRef) {
        self.origins
            .get_mut(&self.dcs[dc].name)
            .expect("known dc")
            .insert(instance);
    }

    /// Sets the status of `instance` in `dc`.
    pub async fn set_status(&self, dc: usize, instance: &InstanceRef, status: &str) {
        self.dcs[dc]
            .registry
            .set_status(instance, status)
            .await
            .expect("set_status");
    }

    /// Replaces the properties of `instance` in `dc`.
    pub async fn set_properties(&self, dc: usize, instance: &InstanceRef, props: &[(&str, &str)]) {
        let props = props
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.dcs[dc]
            .registry
            .set_instance_properties(instance, &props)
            .await
            .expect("set_instance_properties");
    }

    /// Replaces `instance` in `dc` by one with the same id and new endpoints (unregister,
    /// register: SC cannot change endpoints in place).
    pub async fn set_endpoints(&mut self, dc: usize, instance: &InstanceRef, endpoints: &[&str]) {
        let mut body = self
            .instance(dc, instance)
            .expect("the instance to change exists");
        self.unregister(dc, instance).await;
        body.endpoints = endpoints.iter().map(|e| (*e).to_owned()).collect();
        body.mod_timestamp = None;
        self.register_body(dc, &body).await;
    }

    /// Removes `instance` from `dc`.
    pub async fn unregister(&self, dc: usize, instance: &InstanceRef) {
        self.dcs[dc]
            .registry
            .unregister(instance)
            .await
            .expect("unregister");
    }

    /// Every instance of `dc`'s registry, copies included.
    pub fn instances(&self, dc: usize) -> Vec<Instance> {
        self.dcs[dc].registry.contents().instances
    }

    /// The instance `r` of `dc`, if present.
    pub fn instance(&self, dc: usize, r: &InstanceRef) -> Option<Instance> {
        self.instances(dc).into_iter().find(|i| i.reference() == *r)
    }

    /// The instances of `dc` that are its own (not copies).
    pub fn own(&self, dc: usize) -> Vec<Instance> {
        self.instances(dc)
            .into_iter()
            .filter(|i| !is_copy(i))
            .collect()
    }

    /// The copies `dc`'s registry holds.
    pub fn copies(&self, dc: usize) -> Vec<Instance> {
        self.instances(dc).into_iter().filter(is_copy).collect()
    }

    /// The instance ids of the copies `dc`'s registry holds, sorted.
    pub fn copy_ids(&self, dc: usize) -> Vec<String> {
        let mut ids: Vec<String> = self.copies(dc).into_iter().map(|c| c.instance_id).collect();
        ids.sort();
        ids
    }

    /// The copies in `dc` of instances of `origin`.
    pub fn copies_from(&self, dc: usize, origin: usize) -> Vec<Instance> {
        let origin = self.name(origin);
        self.copies(dc)
            .into_iter()
            .filter(|c| copy_origin(c) == Some(origin))
            .collect()
    }

    /// Every copy in `dc` of instance `r` of `origin`, whatever their generation (two
    /// while a replacement is under way, else at most one).
    pub fn copies_of(&self, dc: usize, origin: usize, r: &InstanceRef) -> Vec<Instance> {
        let ids = copy_ids(self.name(origin), r);
        self.copies(dc)
            .into_iter()
            .filter(|c| ids.contains_key(&c.instance_id))
            .collect()
    }

    /// The copy in `dc` of instance `r` of `origin`, whatever its generation.
    ///
    /// # Panics
    /// When `dc` holds more than one copy of it.
    pub fn copy_of(&self, dc: usize, origin: usize, r: &InstanceRef) -> Option<Instance> {
        let mut found = self.copies_of(dc, origin, r);
        assert!(
            found.len() <= 1,
            "{} holds {} copies of {}/{r}: {found:?}",
            self.name(dc),
            found.len(),
            self.name(origin)
        );
        found.pop()
    }

    /// The generation of the copy `copy` of instance `r` of `origin`, if it is one.
    pub fn generation_of(&self, origin: usize, r: &InstanceRef, copy: &Instance) -> Option<u32> {
        copy_ids(self.name(origin), r)
            .get(&copy.instance_id)
            .copied()
    }

    /// The mappings in `dc`'s store.
    pub fn mappings(&self, dc: usize) -> Vec<Mapping> {
        self.dcs[dc]
            .store
            .load()
            .now_or_never()
            .expect("the memory store answers at once")
            .expect("the store is readable")
            .mappings
    }

    // --- what every scenario ends with ----------------------------------------------------

    /// Whether every data centre holds exactly one faithful copy of every own instance of
    /// every other data centre in `among`, and no other copy of theirs.
    pub fn mirrored_among(&self, among: &[usize]) -> Result<(), String> {
        let contents: BTreeMap<usize, Vec<Instance>> =
            among.iter().map(|&dc| (dc, self.instances(dc))).collect();
        for &dc in among {
            let by_id: BTreeMap<&str, &Instance> = contents[&dc]
                .iter()
                .filter(|i| is_copy(i))
                .map(|c| (c.instance_id.as_str(), c))
                .collect();
            for &origin in among {
                if dc == origin {
                    continue;
                }
                let (dc_name, origin_name) = (self.name(dc), self.name(origin));
                let own: Vec<&Instance> =
                    contents[&origin].iter().filter(|i| !is_copy(i)).collect();
                let copies = by_id
                    .values()
                    .filter(|c| copy_origin(c) == Some(origin_name))
                    .count();
                if copies != own.len() {
                    return Err(format!(
                        "{dc_name} holds {copies} copies of {origin_name}'s {} instances",
                        own.len()
                    ));
                }
                for instance in own {
                    let r = instance.reference();
                    let found: Vec<&Instance> = copy_ids(origin_name, &r)
                        .keys()
                        .filter_map(|id| by_id.get(id.as_str()).copied())
                        .collect();
                    let [copy] = found[..] else {
                        return Err(format!(
                            "{dc_name} holds {} copies of {origin_name}/{r}",
                            found.len()
                        ));
                    };
                    faithful(origin_name, instance, copy)
                        .map_err(|e| format!("{dc_name}'s copy of {origin_name}/{r}: {e}"))?;
                }
            }
        }
        Ok(())
    }

    /// [`World::mirrored_among`] every data centre.
    pub fn mirrored(&self) -> Result<(), String> {
        let all: Vec<usize> = (0..self.dcs.len()).collect();
        self.mirrored_among(&all)
    }

    /// The invariants that hold whenever the engines are at rest, whatever happened:
    /// - every copy mirrors an instance the world registered in the data centre its mark
    ///   names, which is another one: no copy of a copy, no copy of itself;
    /// - at most one copy per origin instance per data centre: no duplicates;
    /// - every copy has a mapping in its data centre's store, naming it.
    pub fn check_invariants(&self) -> Result<(), String> {
        for (dc, d) in self.dcs.iter().enumerate() {
            let mappings: BTreeSet<(String, String)> = self
                .mappings(dc)
                .into_iter()
                .map(|m| (m.origin, m.instance_id))
                .collect();
            let mut mirrored: BTreeMap<(String, InstanceRef), Vec<String>> = BTreeMap::new();
            for copy in self.copies(dc) {
                let origin = copy_origin(&copy)
                    .ok_or_else(|| {
                        format!("{}: copy {} has no origin mark", d.name, copy.instance_id)
                    })?
                    .to_owned();
                if origin == d.name {
                    return Err(format!(
                        "{}: copy {} names its own data centre",
                        d.name, copy.instance_id
                    ));
                }
                let known = self.origins.get(&origin).ok_or_else(|| {
                    format!(
                        "{}: copy {} names unknown origin {origin}",
                        d.name, copy.instance_id
                    )
                })?;
                let source = known
                    .iter()
                    .find(|r| copy_ids(&origin, r).contains_key(&copy.instance_id))
                    .ok_or_else(|| {
                        format!(
                            "{}: copy {} mirrors no instance registered in {origin} (a copy of a copy?)",
                            d.name, copy.instance_id
                        )
                    })?;
                if !mappings.contains(&(origin.clone(), copy.instance_id.clone())) {
                    return Err(format!(
                        "{}: copy {} of {origin}/{source} has no mapping",
                        d.name, copy.instance_id
                    ));
                }
                mirrored
                    .entry((origin, source.clone()))
                    .or_default()
                    .push(copy.instance_id.clone());
            }
            if let Some(((origin, r), ids)) = mirrored.iter().find(|(_, ids)| ids.len() > 1) {
                return Err(format!(
                    "{}: {} copies of {origin}/{r}: {ids:?}",
                    d.name,
                    ids.len()
                ));
            }
        }
        Ok(())
    }

    /// Panics with the broken invariant, if any.
    pub fn assert_invariants(&self) {
        if let Err(e) = self.check_invariants() {
            panic!("invariant broken: {e}\n{}", self.describe());
        }
    }

    /// What every registry holds, for failure messages.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        for (dc, d) in self.dcs.iter().enumerate() {
            out.push_str(&format!("{}:\n", d.name));
            for i in self.instances(dc) {
                out.push_str(&format!(
                    "  {} {} {} {:?} {}\n",
                    i.service_id,
                    i.instance_id,
                    i.status,
                    i.endpoints,
                    i.properties.get(ORIGIN_PROPERTY).map_or("", String::as_str)
                ));
            }
        }
        out
    }

    /// Stops every member and waits for every task.
    pub async fn shutdown(mut self) {
        for dc in 0..self.dcs.len() {
            for m in 0..self.dcs[dc].members.len() {
                self.stop_member(dc, m).await;
            }
        }
    }
}

/// Copy instance id → generation, for instance `r` of `origin`.
fn copy_ids(origin: &str, r: &InstanceRef) -> BTreeMap<String, u32> {
    let key = OriginKey {
        origin: origin.to_owned(),
        tenant: r.tenant.clone(),
        service_id: r.service_id.clone(),
        instance_id: r.instance_id.clone(),
    };
    (0..GENERATIONS)
        .map(|g| (copy_instance_id(&key, g), g))
        .collect()
}

/// Whether `copy` carries what `origin_instance` (of data centre `origin`) says.
fn faithful(origin: &str, origin_instance: &Instance, copy: &Instance) -> Result<(), String> {
    let mut expected = origin_instance.properties.clone();
    expected.insert(ORIGIN_PROPERTY.to_owned(), origin.to_owned());
    let checks = [
        ("status", origin_instance.status == copy.status),
        ("endpoints", origin_instance.endpoints == copy.endpoints),
        ("host name", origin_instance.host_name == copy.host_name),
        ("properties", expected == copy.properties),
    ];
    match checks.iter().find(|(_, ok)| !ok) {
        Some((what, _)) => Err(format!(
            "{what} differs: origin {origin_instance:?}, copy {copy:?}"
        )),
        None => Ok(()),
    }
}

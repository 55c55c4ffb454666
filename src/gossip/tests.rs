//! Protocol tests on the in-memory transport under tokio's paused clock: virtual time makes
//! seconds of failure detection run in milliseconds, and nothing here touches a real socket.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::transport::MemoryNetwork;
use super::*;

const DEADLINE: Duration = Duration::from_secs(30);

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

struct TestNode {
    handle: GossipHandle,
    token: CancellationToken,
    tracker: TaskTracker,
    metrics: GossipMetrics,
    addr: SocketAddr,
}

impl TestNode {
    async fn stop(self) {
        self.token.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

struct Spec {
    name: String,
    port: u16,
    generation: u64,
    join: Vec<u16>,
    label: &'static str,
    cluster: &'static str,
    registry: &'static str,
    state_file: Option<std::path::PathBuf>,
    /// Metadata entries of a newer release (tag, value), which no member of this build knows.
    newer_fields: Vec<(u32, Vec<u8>)>,
    keyring: Option<crate::gossip::Keyring>,
    profile: Profile,
}

fn spec(name: &str, port: u16, join: &[u16]) -> Spec {
    Spec {
        name: name.into(),
        port,
        generation: 1,
        join: join.to_vec(),
        label: "",
        cluster: "dc1",
        registry: "",
        state_file: None,
        newer_fields: Vec::new(),
        keyring: None,
        profile: Profile::Local,
    }
}

fn start(net: &MemoryNetwork, spec: Spec) -> TestNode {
    let socket = net.bind(addr(spec.port)).expect("bind");
    let mut meta = NodeMeta::new(spec.cluster, addr(spec.port + 1000), "single");
    meta.registry = spec.registry.into();
    meta.protocol = 1;
    for (tag, value) in spec.newer_fields {
        meta.insert_unknown(tag, value);
    }
    let identity = NodeId {
        name: spec.name,
        addr: addr(spec.port),
        generation: spec.generation,
        bump: 0,
        meta,
    };
    let saved = spec
        .state_file
        .as_deref()
        .and_then(|path| load_state(path).ok())
        .unwrap_or_default();
    let config = GossipConfig {
        identity,
        label: spec.label.into(),
        profile: spec.profile,
        join: spec.join.iter().map(|p| addr(*p).to_string()).collect(),
        remembered: saved.members.iter().map(|m| m.addr).collect(),
        previous_generation: (saved.generation > 0).then_some(saved.generation),
        state_file: spec.state_file,
        resolver: None,
        seed: Some(u64::from(spec.port)),
        keyring: spec.keyring,
    };
    let token = CancellationToken::new();
    let tracker = TaskTracker::new();
    let metrics = GossipMetrics::default();
    let handle = spawn(
        config,
        Arc::new(socket),
        metrics.clone(),
        token.clone(),
        &tracker,
    );
    TestNode {
        handle,
        token,
        tracker,
        metrics,
        addr: addr(spec.port),
    }
}

/// Polls `check` on the virtual clock until it holds.
async fn until<F, Fut>(what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    start.elapsed()
}

async fn status_of(node: &TestNode, name: &str) -> Option<MemberStatus> {
    node.handle
        .members()
        .await
        .ok()?
        .into_iter()
        .find(|m| m.id.name == name)
        .map(|m| m.status)
}

async fn alive_count(node: &TestNode) -> usize {
    node.handle
        .members()
        .await
        .map(|ms| {
            ms.iter()
                .filter(|m| m.status == MemberStatus::Alive)
                .count()
        })
        .unwrap_or(0)
}

async fn pool(net: &MemoryNetwork, n: u16) -> Vec<TestNode> {
    let mut nodes = vec![start(net, spec("n0", 7000, &[]))];
    for i in 1..n {
        nodes.push(start(net, spec(&format!("n{i}"), 7000 + i * 10, &[7000])));
    }
    for node in &nodes {
        until("convergence", || async {
            alive_count(node).await == usize::from(n)
        })
        .await;
    }
    nodes
}

#[tokio::test(start_paused = true)]
async fn five_members_converge_through_one() {
    let net = MemoryNetwork::new();
    let nodes = pool(&net, 5).await;
    let members = nodes[3].handle.members().await.unwrap();
    assert!(members[0].local);
    assert_eq!(members[0].id.name, "n3");
    assert_eq!(members[1].id.meta.rpc_addr, addr(8000));
    for node in nodes {
        node.stop().await;
    }
}

#[tokio::test(start_paused = true)]
async fn crash_is_detected_and_partition_heals() {
    let net = MemoryNetwork::new();
    let nodes = pool(&net, 4).await;
    let mut membership = nodes[0].handle.subscribe();
    // n3 is cut off: everyone else declares it down, and it declares them down.
    net.isolate(nodes[3].addr);
    let mut saw_suspect = false;
    let start = Instant::now();
    loop {
        let mut down = 0;
        for node in &nodes[..3] {
            match status_of(node, "n3").await {
                Some(MemberStatus::Down) => down += 1,
                Some(MemberStatus::Suspect) => saw_suspect = true,
                _ => {}
            }
        }
        if down == 3 {
            break;
        }
        assert!(start.elapsed() < DEADLINE, "n3 never seen down everywhere");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(saw_suspect, "suspect was never shown before down");
    let event = membership.recv().await.unwrap();
    assert!(
        matches!(event, MembershipEvent::Down(ref m) if m.id.name == "n3"),
        "{event:?}"
    );
    // The link comes back: n3 rejoins by itself (announces to down members, renews itself).
    net.heal_all();
    for node in &nodes {
        until("healed pool", || async { alive_count(node).await == 4 }).await;
    }
    for node in nodes {
        node.stop().await;
    }
}

#[tokio::test(start_paused = true)]
async fn restarted_member_replaces_its_old_self_at_once() {
    let net = MemoryNetwork::new();
    let mut nodes = pool(&net, 3).await;
    let crashed = nodes.pop().unwrap();
    // A crash: nothing it says on the way out reaches anyone.
    net.isolate(crashed.addr);
    crashed.stop().await;
    net.heal_all();
    let mut restarted_spec = spec("n2", 7020, &[7000]);
    restarted_spec.generation = 2;
    let restarted = start(&net, restarted_spec);
    let took =
        until("new generation seen", || async {
            nodes[0].handle.members().await.unwrap().iter().any(|m| {
                m.id.name == "n2" && m.id.generation == 2 && m.status == MemberStatus::Alive
            })
        })
        .await;
    // Far less than the suspicion time plus a probe round: it replaced the old identity.
    assert!(took < Duration::from_millis(500), "took {took:?}");
    assert_eq!(alive_count(&nodes[1]).await, 3);
    nodes.push(restarted);
    for node in nodes {
        node.stop().await;
    }
}

#[tokio::test(start_paused = true)]
async fn events_reach_every_member_exactly_once() {
    let net = MemoryNetwork::new();
    let nodes = pool(&net, 5).await;
    let mut receivers: Vec<_> = nodes[1..].iter().map(|n| n.handle.events()).collect();
    for i in 0..20u8 {
        nodes[0].handle.broadcast(vec![i; 40]).await.unwrap();
    }
    let too_big = nodes[0]
        .handle
        .broadcast(vec![0; MAX_EVENT_BYTES + 1])
        .await;
    assert!(matches!(
        too_big,
        Err(GossipError::EventTooLarge {
            size: 513,
            max: 512
        })
    ));
    for rx in &mut receivers {
        let mut got = Vec::new();
        while got.len() < 20 {
            let event = tokio::time::timeout(DEADLINE, rx.recv())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(event.origin, "n0");
            got.push(event.payload[0]);
        }
        got.sort_unstable();
        assert_eq!(got, (0..20).collect::<Vec<u8>>());
    }
    // Let gossip run on: nothing is delivered a second time.
    tokio::time::sleep(Duration::from_secs(5)).await;
    for rx in &mut receivers {
        assert!(rx.try_recv().is_err(), "an event was delivered twice");
    }
    assert!(nodes[0].handle.events().try_recv().is_err());
    for node in nodes {
        node.stop().await;
    }
}

#[tokio::test(start_paused = true)]
async fn graceful_leave_is_seen_as_left() {
    let net = MemoryNetwork::new();
    let mut nodes = pool(&net, 3).await;
    let mut membership = nodes[0].handle.subscribe();
    let leaving = nodes.pop().unwrap();
    leaving.token.cancel();
    let took = until("left", || async {
        status_of(&nodes[0], "n2").await == Some(MemberStatus::Left)
            && status_of(&nodes[1], "n2").await == Some(MemberStatus::Left)
    })
    .await;
    assert!(took < Duration::from_millis(100), "took {took:?}");
    let event = membership.recv().await.unwrap();
    assert!(
        matches!(event, MembershipEvent::Left(ref m) if m.id.name == "n2"),
        "{event:?}"
    );
    leaving.stop().await;
    // It stays left (not down) once foca has processed the departure.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(status_of(&nodes[0], "n2").await, Some(MemberStatus::Left));
    for node in nodes {
        node.stop().await;
    }
}

#[tokio::test(start_paused = true)]
async fn metadata_changes_propagate_and_conflicts_are_flagged() {
    let net = MemoryNetwork::new();
    let nodes = pool(&net, 3).await;
    let mut membership = nodes[0].handle.subscribe();
    nodes[1]
        .handle
        .update_meta(|m| {
            m.role = Role::Standby;
            m.registry = "aaaaaaaaaaaa".into();
        })
        .await
        .unwrap();
    until("role seen", || async {
        nodes[2].handle.members().await.unwrap().iter().any(|m| {
            m.id.name == "n1" && m.id.meta.role == Role::Standby && m.status == MemberStatus::Alive
        })
    })
    .await;
    let event = membership.recv().await.unwrap();
    assert!(
        matches!(event, MembershipEvent::Updated { ref after, .. } if after.id.meta.role == Role::Standby),
        "{event:?}"
    );
    // n2 claims the same cluster name for another registry: everyone flags both.
    nodes[2]
        .handle
        .update_meta(|m| m.registry = "bbbbbbbbbbbb".into())
        .await
        .unwrap();
    until("conflict flagged", || async {
        let members = nodes[0].handle.members().await.unwrap();
        members.iter().filter(|m| m.conflict).count() == 2
    })
    .await;
    // Disputed at once (imports frozen), a conflict once it lasted the settle time.
    let disputed = Instant::now();
    until("the dispute becomes a conflict", || async {
        nodes[0].metrics.conflicts.get() == 1
    })
    .await;
    assert!(disputed.elapsed() >= Profile::Local.conflict_settle() - Duration::from_secs(1));
    for node in nodes {
        node.stop().await;
    }
}

/// Two parts of the daemon change different fields at once (the registry fingerprint and the
/// managed etcd URLs): both changes land, locally and at the other members.
#[tokio::test(start_paused = true)]
async fn concurrent_changes_of_different_fields_both_land() {
    let net = MemoryNetwork::new();
    let nodes = pool(&net, 2).await;
    let handle = &nodes[0].handle;
    let (first, second) = tokio::join!(
        handle.update_meta(|m| m.registry = "aaaaaaaaaaaa".into()),
        handle.update_meta(|m| m.etcd_peer_url = "http://n0".into()),
    );
    first.unwrap();
    second.unwrap();
    let meta = handle.local().meta;
    assert_eq!(meta.registry, "aaaaaaaaaaaa");
    assert_eq!(meta.etcd_peer_url, "http://n0");
    until("both changes seen by the other member", || async {
        nodes[1].handle.members().await.unwrap().iter().any(|m| {
            m.id.name == "n0"
                && m.id.meta.registry == "aaaaaaaaaaaa"
                && m.id.meta.etcd_peer_url == "http://n0"
        })
    })
    .await;
    for node in nodes {
        node.stop().await;
    }
}

/// Every member changes its metadata at the same moment (cluster mode: the members of a data
/// centre publish their etcd URLs together). Each one's gossip is addressed to identities the
/// others just gave up, so the change alone must not leave the pool silent.
#[tokio::test(start_paused = true)]
async fn simultaneous_metadata_changes_all_propagate() {
    let net = MemoryNetwork::new();
    let nodes = pool(&net, 3).await;
    let (a, b, c) = (&nodes[0].handle, &nodes[1].handle, &nodes[2].handle);
    let (ra, rb, rc) = tokio::join!(
        a.update_meta(|m| m.etcd_peer_url = "http://n0".into()),
        b.update_meta(|m| m.etcd_peer_url = "http://n1".into()),
        c.update_meta(|m| m.etcd_peer_url = "http://n2".into()),
    );
    ra.unwrap();
    rb.unwrap();
    rc.unwrap();
    for node in &nodes {
        until("every new metadata seen by every member", || async {
            let members = node.handle.members().await.unwrap();
            members.len() == 3
                && members.iter().all(|m| {
                    m.status == MemberStatus::Alive
                        && m.id.meta.etcd_peer_url == format!("http://{}", m.id.name)
                })
        })
        .await;
    }
    // And the pool keeps working afterwards: a later change still travels.
    nodes[1]
        .handle
        .update_meta(|m| m.role = Role::Standby)
        .await
        .unwrap();
    until("later change seen", || async {
        nodes[2]
            .handle
            .members()
            .await
            .unwrap()
            .iter()
            .any(|m| m.id.name == "n1" && m.id.meta.role == Role::Standby)
    })
    .await;
    for node in nodes {
        node.stop().await;
    }
}

#[tokio::test(start_paused = true)]
async fn other_labels_and_garbage_are_dropped() {
    let net = MemoryNetwork::new();
    let nodes = pool(&net, 2).await;
    let mut outsider = spec("x", 7100, &[7000]);
    outsider.label = "other-pool";
    let outsider = start(&net, outsider);
    let noise = net.bind(addr(7200)).unwrap();
    for datagram in [
        &b""[..],
        &[0xC5],
        &[0xC5, 0, 0, 1, 2, 3],
        &[0xC5, 0, 1, 0xff],
        &[7; 1500],
    ] {
        noise.try_send_to(datagram, nodes[0].addr).unwrap();
    }
    until("label drops", || async {
        nodes[0].metrics.dropped_total("label") > 0
    })
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(alive_count(&nodes[0]).await, 2, "the outsider was admitted");
    assert_eq!(alive_count(&outsider).await, 1);
    assert!(nodes[0].metrics.dropped_total("malformed") >= 3);
    assert!(nodes[0].metrics.dropped_total("oversized") >= 1);
    assert!(nodes[0].metrics.dropped_total("undecodable") >= 1);
    outsider.stop().await;
    for node in nodes {
        node.stop().await;
    }
}

#[tokio::test(start_paused = true)]
async fn remembered_members_survive_a_start_that_joins_nobody() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gossip.json");
    let saved = SavedState {
        generation: 5,
        members: vec![persist::SavedMember {
            name: "gone".into(),
            addr: addr(7999),
        }],
    };
    save_state(&path, &saved).unwrap();
    let net = MemoryNetwork::new();
    let mut lonely = spec("n0", 7000, &[]);
    lonely.state_file = Some(path.clone());
    let node = start(&net, lonely);
    // Several persist intervals pass without any member answering.
    tokio::time::sleep(Duration::from_secs(20)).await;
    node.stop().await;
    assert_eq!(load_state(&path).unwrap().members, saved.members);
}

/// The first member of a pool (started without a join address) lists the members that joined
/// it in its state file within a fraction of a second, not only at some later interval; killed
/// then and restarted on a new address with no join address, it finds them through the file.
/// The log lines of the current thread (every task of a current-thread runtime), for tests
/// that check what a member says.
#[derive(Clone, Default)]
struct CapturedLog(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for CapturedLog {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl CapturedLog {
    /// Captures the current thread's events at info and above until the guard is dropped.
    fn start() -> (CapturedLog, tracing::subscriber::DefaultGuard) {
        let log = CapturedLog::default();
        let writer = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        (log, tracing::subscriber::set_default(subscriber))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(
            &self
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
        .into_owned()
    }
}

#[tokio::test(start_paused = true)]
async fn the_first_member_persists_joins_at_once_and_rejoins_from_its_file() {
    let (log, _guard) = CapturedLog::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gossip.json");
    let net = MemoryNetwork::new();
    let mut first = spec("n0", 7000, &[]);
    first.state_file = Some(path.clone());
    let first = start(&net, first);
    let others = vec![
        start(&net, spec("n1", 7010, &[7000])),
        start(&net, spec("n2", 7020, &[7000])),
    ];
    until("the others joined", || async {
        alive_count(&first).await == 3
    })
    .await;
    let took = until("the state file lists the others", || async {
        let names: Vec<String> = load_state(&path)
            .map(|s| s.members.into_iter().map(|m| m.name).collect())
            .unwrap_or_default();
        names == ["n1", "n2"]
    })
    .await;
    assert!(took <= Duration::from_millis(500), "written after {took:?}");
    // A crash: nothing it says on the way out reaches anyone.
    net.isolate(first.addr);
    first.stop().await;
    net.heal_all();
    let mut restarted = spec("n0", 7030, &[]);
    restarted.generation = 2;
    restarted.state_file = Some(path.clone());
    let restarted = start(&net, restarted);
    until("the restarted first member rejoined", || async {
        alive_count(&restarted).await == 3
    })
    .await;
    until("the others see the new incarnation", || async {
        others[0]
            .handle
            .members()
            .await
            .unwrap()
            .iter()
            .any(|m| m.id.name == "n0" && m.id.generation == 2 && m.status == MemberStatus::Alive)
    })
    .await;
    // The restarted member took the old address listed under its name for its own previous
    // incarnation (a generation its state file had), not for a second process.
    let said = log.text();
    assert!(
        said.contains("my previous incarnation is still listed in the pool"),
        "{said}"
    );
    assert!(
        !said.contains("another member uses this node's name"),
        "{said}"
    );

    // A second process with the same name and a generation this member never used (no state
    // file of its own, a newer generation): both sides call it the duplicate it is.
    let mut namesake = spec("n0", 7040, &[7010]);
    namesake.generation = 3;
    let namesake = start(&net, namesake);
    let flagged = |by_generation: u64, other_generation: u64| {
        let said = log.text();
        let needle = format!("other_generation={other_generation} generation={by_generation}");
        said.lines().any(|l| {
            l.contains("ERROR")
                && l.contains("another member uses this node's name")
                && l.contains(&needle)
        })
    };
    until("the namesake flagged by both", || async {
        flagged(2, 3) && flagged(3, 2)
    })
    .await;
    namesake.stop().await;
    restarted.stop().await;
    for node in others {
        node.stop().await;
    }
}

/// A member alone (no join address, nothing remembered) joins the addresses it is told were
/// found elsewhere (cluster mode: etcd) at once; its own address among them is ignored.
#[tokio::test(start_paused = true)]
async fn a_lone_member_joins_addresses_found_elsewhere() {
    let net = MemoryNetwork::new();
    let pair = vec![
        start(&net, spec("n1", 7010, &[])),
        start(&net, spec("n2", 7020, &[7010])),
    ];
    let lone = start(&net, spec("n0", 7000, &[]));
    until("the pair", || async { alive_count(&pair[0]).await == 2 }).await;
    // Nothing to join: it stays alone and quiet.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(alive_count(&lone).await, 1);
    assert_eq!(lone.metrics.join_attempts.get(), 0);
    lone.handle
        .discovered(vec![addr(7000), addr(7020)])
        .await
        .unwrap();
    let took = until("the lone member joined", || async {
        alive_count(&lone).await == 3
    })
    .await;
    assert!(took < Duration::from_secs(1), "took {took:?}");
    lone.stop().await;
    for node in pair {
        node.stop().await;
    }
}

/// Rolling upgrade: a member of a newer release announces a metadata field nobody else knows.
/// It joins through a member of this release and never talks to the third one directly, so
/// everything the third member learns about it was decoded and re-encoded by a member that
/// does not know the field. The pool converges, the known fields read as usual everywhere, the
/// newer field arrives intact, and metadata changes still travel both ways.
#[tokio::test(start_paused = true)]
async fn newer_metadata_fields_pass_through_members_that_do_not_know_them() {
    const NEWER: [(u32, &[u8]); 2] = [(30, b"zone-a"), (40, &[1, 2, 3])];
    let net = MemoryNetwork::new();
    let mut first = spec("n0", 7000, &[]);
    first.cluster = "dc0";
    let mut second = spec("n1", 7010, &[7000]);
    second.cluster = "dc1";
    let mut newer = spec("n2", 7020, &[7000]);
    newer.cluster = "dc2";
    newer.newer_fields = NEWER.iter().map(|(t, v)| (*t, v.to_vec())).collect();
    // n1 and n2 only hear of each other through n0 (probes included: indirect, through n0).
    net.partition(addr(7010), addr(7020));
    let nodes = vec![start(&net, first), start(&net, second), start(&net, newer)];
    for node in &nodes {
        until("convergence", || async { alive_count(node).await == 3 }).await;
    }
    // Each member's view of each other member is that member's own identity, known fields
    // and newer entries alike.
    let same_views = || async {
        let mut locals = Vec::new();
        for node in &nodes {
            locals.push(node.handle.local());
        }
        for node in &nodes {
            let Ok(members) = node.handle.members().await else {
                return false;
            };
            for local in &locals {
                let seen = members.iter().find(|m| m.id.addr == local.addr);
                if seen.is_none_or(|m| m.id != *local || !m.status.is_live()) {
                    return false;
                }
            }
        }
        true
    };
    until("every member sees every identity as announced", same_views).await;
    let seen_by_n1 = nodes[1].handle.members().await.unwrap();
    let n2 = seen_by_n1.iter().find(|m| m.id.name == "n2").unwrap();
    assert_eq!(n2.id.meta.cluster, "dc2");
    assert_eq!(n2.id.meta.rpc_addr, addr(8020));
    let newer_entries: Vec<(u32, &[u8])> = n2
        .id
        .meta
        .unknown()
        .iter()
        .map(|(t, v)| (*t, v.as_slice()))
        .collect();
    assert_eq!(newer_entries, NEWER);
    let seen_by_n2 = nodes[2].handle.members().await.unwrap();
    for (name, cluster, rpc) in [("n0", "dc0", 8000), ("n1", "dc1", 8010)] {
        let m = seen_by_n2.iter().find(|m| m.id.name == name).unwrap();
        assert_eq!(
            (m.id.meta.cluster.as_str(), m.id.meta.rpc_addr),
            (cluster, addr(rpc))
        );
        assert!(m.id.meta.unknown().is_empty());
    }

    // The newer member changes a known field: the change arrives, the newer entries stay.
    let mut membership = nodes[1].handle.subscribe();
    nodes[2]
        .handle
        .update_meta(|m| m.role = Role::Standby)
        .await
        .unwrap();
    until("n2's change seen through n0", || async {
        nodes[1].handle.members().await.unwrap().iter().any(|m| {
            m.id == nodes[2].handle.local()
                && m.id.meta.role == Role::Standby
                && m.status == MemberStatus::Alive
        })
    })
    .await;
    let event = tokio::time::timeout(DEADLINE, async {
        loop {
            match membership.recv().await {
                Ok(MembershipEvent::Updated { after, .. }) if after.id.name == "n2" => {
                    return after;
                }
                _ => {}
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(event.id.meta.unknown().len(), NEWER.len());
    // And a member of this release changes one: the newer member sees it.
    nodes[1]
        .handle
        .update_meta(|m| m.registry = "aaaaaaaaaaaa".into())
        .await
        .unwrap();
    until("n1's change seen through n0", || async {
        nodes[2]
            .handle
            .members()
            .await
            .unwrap()
            .iter()
            .any(|m| m.id.name == "n1" && m.id.meta.registry == "aaaaaaaaaaaa")
    })
    .await;
    until("every member sees every identity as announced", same_views).await;
    for node in &nodes {
        assert_eq!(node.metrics.dropped_total("undecodable"), 0);
        assert_eq!(node.metrics.dropped_total("malformed"), 0);
    }
    for node in nodes {
        node.stop().await;
    }
}

/// Join attempts back off from the profile's floor to its ceiling (`local`: 200 ms to 2 s) and
/// start again from the floor once the member was in the pool and lost it.
#[tokio::test(start_paused = true)]
async fn join_attempts_back_off_and_start_over_after_a_join() {
    let net = MemoryNetwork::new();
    let node = start(&net, spec("n0", 7000, &[7010]));
    let attempts = || node.metrics.join_attempts.get();
    // Attempts at 0, 0.2, 0.6, 1.4, 3.0, 5.0, 7.0 s: nobody answers.
    tokio::time::sleep(Duration::from_millis(5100)).await;
    assert_eq!(attempts(), 6);
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(attempts(), 7);
    // The member it was looking for appears; the pool forms.
    let other = start(&net, spec("n1", 7010, &[]));
    until("joined", || async { alive_count(&node).await == 2 }).await;
    let before = attempts();
    // It crashes: alone again, n0 starts over from the floor.
    net.isolate(other.addr);
    other.stop().await;
    net.heal_all();
    until("a new attempt", || async { attempts() > before }).await;
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(
        attempts(),
        before + 3,
        "attempts 0, 0.2 and 0.6 s after the loss"
    );
    node.stop().await;
}

fn keyed(
    mut spec: Spec,
    primary: &crate::gossip::GossipKey,
    others: &[crate::gossip::GossipKey],
) -> Spec {
    spec.keyring = Some(crate::gossip::Keyring::new(primary, others));
    spec
}

/// An encrypted pool forms; a member with another key, and one with none, are never admitted
/// and their datagrams are counted as `decrypt` drops.
#[tokio::test(start_paused = true)]
async fn encrypted_pool_admits_only_members_with_the_key() {
    use crate::gossip::GossipKey;

    let net = MemoryNetwork::new();
    let key = GossipKey::generate();
    let a = start(&net, keyed(spec("a", 7000, &[]), &key, &[]));
    let b = start(&net, keyed(spec("b", 7010, &[7000]), &key, &[]));
    for node in [&a, &b] {
        until("encrypted convergence", || async {
            alive_count(node).await == 2
        })
        .await;
    }
    let wrong = start(
        &net,
        keyed(spec("w", 7020, &[7000]), &GossipKey::generate(), &[]),
    );
    let plain = start(&net, spec("p", 7030, &[7000]));
    until("decrypt drops", || async {
        a.metrics.dropped_total("decrypt") >= 2
    })
    .await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(
        alive_count(&a).await,
        2,
        "a member without the key was admitted"
    );
    assert_eq!(alive_count(&b).await, 2);
    assert_eq!(alive_count(&wrong).await, 1);
    assert_eq!(alive_count(&plain).await, 1);
    for node in [a, b, wrong, plain] {
        node.stop().await;
    }
}

/// The middle of a rotation: every member has both keys installed, some send with the old
/// one and some with the new one, and the pool stays whole.
#[tokio::test(start_paused = true)]
async fn members_with_both_keys_and_different_primaries_talk() {
    use crate::gossip::GossipKey;

    let net = MemoryNetwork::new();
    let (old, new) = (GossipKey::generate(), GossipKey::generate());
    let a = start(
        &net,
        keyed(spec("a", 7000, &[]), &old, std::slice::from_ref(&new)),
    );
    let b = start(
        &net,
        keyed(spec("b", 7010, &[7000]), &new, std::slice::from_ref(&old)),
    );
    let c = start(
        &net,
        keyed(spec("c", 7020, &[7010]), &old, std::slice::from_ref(&new)),
    );
    for node in [&a, &b, &c] {
        until("mixed-primary convergence", || async {
            alive_count(node).await == 3
        })
        .await;
    }
    tokio::time::sleep(Duration::from_secs(10)).await;
    for node in [&a, &b, &c] {
        assert_eq!(alive_count(node).await, 3);
        assert_eq!(node.metrics.dropped_total("decrypt"), 0);
    }
    for node in [a, b, c] {
        node.stop().await;
    }
}

/// A whole-pool rotation in serf's three steps, each applied on every member before the
/// next: the pool stays whole throughout (no member suspected or declared down), the old key
/// is refused at the end, and a plain pool refuses keyring changes.
#[tokio::test(start_paused = true)]
async fn a_key_rotation_step_by_step_keeps_the_pool_whole() {
    use crate::gossip::{GossipError, GossipKey, KeyringOp, KeyringOpError};

    let net = MemoryNetwork::new();
    let (old, new) = (GossipKey::generate(), GossipKey::generate());
    let nodes = vec![
        start(&net, keyed(spec("a", 7000, &[]), &old, &[])),
        start(&net, keyed(spec("b", 7010, &[7000]), &old, &[])),
        start(&net, keyed(spec("c", 7020, &[7000]), &old, &[])),
    ];
    for node in &nodes {
        until("convergence", || async { alive_count(node).await == 3 }).await;
    }
    let mut watch = nodes[0].handle.subscribe();
    let refused = nodes[0].handle.keyring(KeyringOp::Use(new.clone())).await;
    assert!(matches!(
        refused,
        Err(GossipError::Keyring(KeyringOpError::NotInstalled))
    ));
    for step in [
        KeyringOp::Install(new.clone()),
        KeyringOp::Use(new.clone()),
        KeyringOp::Remove(old.clone()),
    ] {
        // Members apply a step one after the other, with gossip going on in between.
        for node in &nodes {
            node.handle.keyring(step.clone()).await.unwrap();
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        for node in &nodes {
            assert_eq!(alive_count(node).await, 3, "after {step:?}");
        }
    }
    let list = nodes[2].handle.keyring(KeyringOp::List).await.unwrap();
    assert_eq!(list.primary, new.to_base64());
    assert_eq!(list.installed, vec![new.to_base64()]);
    loop {
        match watch.try_recv() {
            Ok(event) => assert!(
                !matches!(event, MembershipEvent::Down(_) | MembershipEvent::Left(_)),
                "{event:?} during the rotation"
            ),
            Err(channel::error::TryRecvError::Empty) => break,
            Err(e) => panic!("membership events lost: {e}"),
        }
    }
    for node in &nodes {
        assert_eq!(node.metrics.dropped_total("decrypt"), 0);
    }
    // A member that kept only the old key is no longer admitted.
    let late = start(&net, keyed(spec("late", 7030, &[7000]), &old, &[]));
    until("the old key's datagrams dropped", || async {
        nodes[0].metrics.dropped_total("decrypt") > 0
    })
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(alive_count(&nodes[0]).await, 3);
    assert_eq!(alive_count(&late).await, 1);

    let plain = start(&net, spec("plain", 7040, &[]));
    let refused = plain.handle.keyring(KeyringOp::Install(new.clone())).await;
    assert!(matches!(
        refused,
        Err(GossipError::Keyring(KeyringOpError::NotEncrypted))
    ));
    for node in nodes.into_iter().chain([late, plain]) {
        node.stop().await;
    }
}

/// Fifty members on the `lan` profile, each joining through the first: the pool forms, and
/// a member cut off (a crash, as its peers see it) is seen down by all 49 others within the
/// profile's bound when someone probes it within seven periods (99.9 %), 6.5 s. The scale
/// bench (`benches/world_scale.rs`) measures 200 and 500 members the same way.
#[tokio::test(start_paused = true)]
async fn fifty_lan_members_see_a_crash_within_the_profile_bound() {
    const MEMBERS: u16 = 50;
    let net = MemoryNetwork::new();
    let lan = |name: &str, port: u16, join: &[u16]| Spec {
        profile: Profile::Lan,
        ..spec(name, port, join)
    };
    let mut nodes = vec![start(&net, lan("n0", 7000, &[]))];
    for i in 1..MEMBERS {
        nodes.push(start(&net, lan(&format!("n{i}"), 7000 + i * 10, &[7000])));
    }
    for node in &nodes {
        until("fifty members alive everywhere", || async {
            alive_count(node).await == usize::from(MEMBERS)
        })
        .await;
    }

    let bound = Profile::Lan
        .timing()
        .detection_bound(usize::from(MEMBERS), 7);
    assert_eq!(bound, Duration::from_millis(6500));
    let crashed = nodes.pop().expect("fifty nodes");
    net.isolate(crashed.addr);
    let name = format!("n{}", MEMBERS - 1);
    let took = until("the crash seen by every other member", || async {
        for node in &nodes {
            if status_of(node, &name).await != Some(MemberStatus::Down) {
                return false;
            }
        }
        true
    })
    .await;
    assert!(
        took <= bound,
        "the crash took {took:?} to be seen everywhere, over the lan bound {bound:?}"
    );
    // Not faster than the suspicion timeout allows: the bound is not vacuous.
    assert!(took >= Profile::Lan.timing().suspicion, "{took:?}");
    crashed.stop().await;
    for node in nodes {
        node.stop().await;
    }
}

#[test]
fn the_lan_bound_grows_with_the_log_of_the_pool() {
    let lan = Profile::Lan.timing();
    assert_eq!(Timing::dissemination_rounds(50), 5);
    assert_eq!(Timing::dissemination_rounds(200), 6);
    assert_eq!(Timing::dissemination_rounds(500), 7);
    // 3 periods to be probed (95 %) + 1 period of probes + 1.5 s suspicion + 7 × 200 ms.
    assert_eq!(lan.detection_bound(500, 3), Duration::from_millis(4900));
    assert_eq!(lan.detection_bound(200, 3), Duration::from_millis(4700));
}

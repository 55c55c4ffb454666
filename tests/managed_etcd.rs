//! The managed etcd member of cluster mode with the real `etcd` executable: real gossip pools
//! (UDP on 127.0.0.1, `local` profile) in this process, one etcd child per member. Three members
//! starting together form one cluster of three voters; one member alone starts; a member
//! whose etcd is killed gets it back; a member restarts on its data. With syncer's
//! certificate the members speak TLS on client and peer URLs, and a member of the other
//! scheme is refused rather than joined.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

mod support;

use etcd_client::{Client, ConnectOptions};
use support::etcd::{find_etcd, free_port};
use support::until;
use syncer::cli::dev_certs;
use syncer::cluster::managed::{ManagedEtcd, ManagedEtcdConfig, ManagedEtcdError};
use syncer::gossip::{
    self, GossipConfig, GossipHandle, GossipMetrics, NodeId, NodeMeta, Profile, Role,
};
use syncer::store::EtcdTls;
use syncer::store::etcd_tls::NODE_FLAGS;
use tokio::net::UdpSocket;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use url::Url;

/// Longest wait for anything in these tests.
const DEADLINE: Duration = Duration::from_secs(20);

/// The etcd executable: on PATH, else Debian's `/usr/bin/etcd`.
fn etcd_bin() -> PathBuf {
    find_etcd().unwrap_or_else(|| {
        panic!("no etcd executable on PATH or at /usr/bin/etcd: run scripts/setup or `apt-get install etcd-server`")
    })
}

fn url(port: u16) -> Url {
    Url::parse(&format!("http://127.0.0.1:{port}")).expect("a URL")
}

fn tls_url(port: u16) -> Url {
    Url::parse(&format!("https://127.0.0.1:{port}")).expect("a URL")
}

/// `syncer dev-certs --hosts 127.0.0.1` in `dir`, loaded as syncer loads `--tls-*` for its
/// managed etcd member.
fn dev_tls(dir: &Path) -> EtcdTls {
    let certs = dev_certs::generate(&["127.0.0.1".into()]).expect("generate certificates");
    dev_certs::write(dir, &certs).expect("write certificates");
    let (cert, key) = (
        dir.join(dev_certs::NODE_CERT),
        dir.join(dev_certs::NODE_KEY),
    );
    EtcdTls::load(
        Some(&dir.join(dev_certs::CA_CERT)),
        Some((&cert, &key)),
        NODE_FLAGS,
    )
    .expect("load the TLS files")
}

/// One syncer's share of the test: a gossip member and, once started, its etcd member.
struct Node {
    gossip: GossipHandle,
    gossip_addr: SocketAddr,
    config: ManagedEtcdConfig,
    token: CancellationToken,
    tracker: TaskTracker,
}

impl Node {
    /// Starts the gossip member `name` of data centre `cluster`, joining through `join`; its
    /// etcd member gets free ports and `<data_dir>/<name>/etcd`.
    async fn new(
        name: &str,
        cluster: &str,
        join: Option<SocketAddr>,
        data_dir: &Path,
        expected_members: usize,
    ) -> Node {
        Node::with_tls(name, cluster, join, data_dir, expected_members, None).await
    }

    /// [`Node::new`] with TLS on the etcd member's URLs (`https://`) when `tls` is given.
    async fn with_tls(
        name: &str,
        cluster: &str,
        join: Option<SocketAddr>,
        data_dir: &Path,
        expected_members: usize,
        tls: Option<EtcdTls>,
    ) -> Node {
        let make_url = if tls.is_some() { tls_url } else { url };
        let config = ManagedEtcdConfig {
            etcd_bin: etcd_bin(),
            name: name.to_owned(),
            cluster_name: cluster.to_owned(),
            peer_url: make_url(free_port()),
            client_url: make_url(free_port()),
            data_dir: data_dir.join(name).join("etcd"),
            expected_members,
            tls,
            force_new: false,
        };
        Node::with_config(config, join).await
    }

    /// A new run of a node: a new gossip member for the etcd member of `config`.
    async fn with_config(config: ManagedEtcdConfig, join: Option<SocketAddr>) -> Node {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind UDP");
        let gossip_addr = socket.local_addr().expect("local address");
        let mut meta = NodeMeta::new(
            config.cluster_name.clone(),
            SocketAddr::from(([127, 0, 0, 1], 1)),
            "cluster",
        );
        meta.role = Role::Standby;
        meta.protocol = syncer::rpc::PROTOCOL_VERSION;
        let identity = NodeId {
            name: config.name.clone(),
            addr: gossip_addr,
            generation: gossip::next_generation(None),
            bump: 0,
            meta,
        };
        let gossip_config = GossipConfig {
            identity,
            label: String::new(),
            profile: Profile::Local,
            join: join.iter().map(ToString::to_string).collect(),
            state_file: None,
            remembered: Vec::new(),
            previous_generation: None,
            resolver: None,
            seed: None,
            keyring: None,
        };
        let token = CancellationToken::new();
        let tracker = TaskTracker::new();
        let gossip = gossip::spawn(
            gossip_config,
            Arc::new(socket),
            GossipMetrics::default(),
            token.clone(),
            &tracker,
        );
        Node {
            gossip,
            gossip_addr,
            config,
            token,
            tracker,
        }
    }

    async fn start_etcd(&self) -> ManagedEtcd {
        let started = Instant::now();
        let etcd = tokio::time::timeout(
            DEADLINE,
            ManagedEtcd::start(
                self.config.clone(),
                self.gossip.clone(),
                self.token.clone(),
                &self.tracker,
            ),
        )
        .await
        .unwrap_or_else(|_| panic!("{} did not start within {DEADLINE:?}", self.config.name))
        .unwrap_or_else(|e| panic!("{} did not start: {e}", self.config.name));
        eprintln!("{} started in {:?}", self.config.name, started.elapsed());
        etcd
    }

    /// Cancels everything and waits for the tasks (the etcd child is stopped by then).
    async fn stop(self) {
        self.token.cancel();
        self.tracker.close();
        tokio::time::timeout(DEADLINE, self.tracker.wait())
            .await
            .expect("the node's tasks end after cancellation");
    }
}

/// A client on exactly `endpoint`.
async fn client(endpoint: &Url) -> Client {
    tls_client(endpoint, None).await
}

/// A client on exactly `endpoint`, over TLS with `tls`.
async fn tls_client(endpoint: &Url, tls: Option<&EtcdTls>) -> Client {
    let mut options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(Duration::from_secs(2));
    if let Some(tls) = tls {
        options = options.with_tls(tls.options());
    }
    Client::connect([endpoint.as_str().trim_end_matches('/')], Some(options))
        .await
        .unwrap_or_else(|e| panic!("connect to {endpoint}: {e}"))
}

/// Whether the member at `endpoint` answers a linearizable read.
async fn serves(endpoint: &Url) -> bool {
    let read = async { client(endpoint).await.get("probe", None).await };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), read).await,
        Ok(Ok(_))
    )
}

/// Whether process `pid` is gone (or a zombie nobody waited for yet).
fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.contains(") Z "),
        Err(_) => true,
    }
}

/// Logs of the code under test on the test's output (`RUST_LOG`, default info).
fn logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_starting_together_form_one_cluster() {
    logs();
    let dir = tempfile::tempdir().expect("temporary directory");
    let a = Node::new("etcd-a", "dc1", None, dir.path(), 3).await;
    let b = Node::new("etcd-b", "dc1", Some(a.gossip_addr), dir.path(), 3).await;
    let c = Node::new("etcd-c", "dc1", Some(a.gossip_addr), dir.path(), 3).await;
    // A member of another data centre in the same pool that announces an etcd member. Its
    // name is the lowest: were it counted, nobody of dc1 would bootstrap.
    let other = Node::new("etcd-0", "dc2", Some(a.gossip_addr), dir.path(), 3).await;
    other
        .gossip
        .update_meta(|meta| {
            meta.etcd_peer_url = "http://127.0.0.1:1".into();
            meta.etcd_client_url = "http://127.0.0.1:2".into();
        })
        .await
        .expect("announce dc2's etcd");

    // The last one starts first, so the lowest name does not simply come first.
    let (ec, ea, eb) = tokio::join!(c.start_etcd(), a.start_etcd(), b.start_etcd());

    for (node, etcd) in [(&a, &ea), (&b, &eb), (&c, &ec)] {
        // Those that started first learn of the later ones from gossip.
        until("every member's endpoints", || {
            let count = etcd.endpoints().len();
            async move { count == 3 }
        })
        .await;
        let endpoints = etcd.endpoints();
        assert_eq!(endpoints[0], node.config.client_url, "local member first");
        let mut all: Vec<&Url> = endpoints.iter().collect();
        all.sort();
        let mut expected = vec![
            &a.config.client_url,
            &b.config.client_url,
            &c.config.client_url,
        ];
        expected.sort();
        assert_eq!(all, expected);
        assert!(etcd.child_pid().is_some());
        let meta = node.gossip.local().meta;
        assert!(meta.etcd_ready);
        assert_eq!(
            meta.etcd_client_url,
            node.config.client_url.as_str().trim_end_matches('/')
        );
    }

    // One cluster of three voters, the same seen through every member.
    assert_one_cluster(&[&ea, &eb, &ec], &["etcd-a", "etcd-b", "etcd-c"]).await;

    // Written through a, read through c.
    client(&ea.endpoints()[0])
        .await
        .put("/test/key", "from a", None)
        .await
        .expect("put through a");
    let got = client(&ec.endpoints()[0])
        .await
        .get("/test/key", None)
        .await
        .expect("get through c");
    let value = got.kvs().first().map(|kv| kv.value().to_vec());
    assert_eq!(value.as_deref(), Some(&b"from a"[..]));

    // Stopping ends the children.
    let pids: Vec<u32> = [&ea, &eb, &ec]
        .iter()
        .filter_map(|e| e.child_pid())
        .collect();
    for node in [a, b, c, other] {
        node.stop().await;
    }
    for etcd in [&ea, &eb, &ec] {
        assert_eq!(etcd.child_pid(), None);
    }
    for pid in pids {
        assert!(gone(pid), "etcd {pid} still runs after the stop");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_member_alone_starts() {
    logs();
    let dir = tempfile::tempdir().expect("temporary directory");
    let node = Node::new("solo", "dc1", None, dir.path(), 1).await;
    let etcd = node.start_etcd().await;
    assert_eq!(etcd.endpoints(), vec![node.config.client_url.clone()]);
    assert!(serves(&etcd.endpoints()[0]).await);
    assert!(node.gossip.local().meta.etcd_ready);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_already_in_use_is_refused_at_start() {
    logs();
    let dir = tempfile::tempdir().expect("temporary directory");
    let node = Node::new("taken", "dc1", None, dir.path(), 1).await;
    let port = node.config.client_url.port().expect("a port");
    let _squatter = std::net::TcpListener::bind(("127.0.0.1", port)).expect("bind the client port");
    let error = ManagedEtcd::start(
        node.config.clone(),
        node.gossip.clone(),
        node.token.clone(),
        &node.tracker,
    )
    .await
    .expect_err("a member whose client port is taken must not start");
    let text = error.to_string();
    assert!(
        text.contains(&format!("127.0.0.1:{port}")) && text.contains("already listens"),
        "{text}"
    );
    assert!(!node.config.data_dir.exists(), "no etcd data was created");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_member_is_restarted() {
    logs();
    let dir = tempfile::tempdir().expect("temporary directory");
    let node = Node::new("solo", "dc1", None, dir.path(), 1).await;
    let etcd = node.start_etcd().await;
    let endpoint = etcd.endpoints()[0].clone();
    client(&endpoint)
        .await
        .put("kept", "yes", None)
        .await
        .expect("put");
    let pid = etcd.child_pid().expect("a child runs");
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(killed.success());

    until("a new etcd child", || {
        let now = etcd.child_pid();
        async move { now.is_some_and(|now| now != pid) }
    })
    .await;
    until("the restarted member to serve", || serves(&endpoint)).await;
    until("the restarted member to be announced ready", || {
        let ready = node.gossip.local().meta.etcd_ready;
        async move { ready }
    })
    .await;
    let got = client(&endpoint)
        .await
        .get("kept", None)
        .await
        .expect("get");
    assert_eq!(got.kvs().len(), 1, "the data survived the restart");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_restarts_on_its_data() {
    logs();
    let dir = tempfile::tempdir().expect("temporary directory");
    let node = Node::new("solo", "dc1", None, dir.path(), 1).await;
    let config = node.config.clone();
    let etcd = node.start_etcd().await;
    client(&etcd.endpoints()[0])
        .await
        .put("kept", "yes", None)
        .await
        .expect("put");
    node.stop().await;

    // Same data directory and URLs, a new gossip pool (another run of the daemon).
    let again = Node::with_config(config, None).await;
    let etcd = again.start_etcd().await;
    let got = client(&etcd.endpoints()[0])
        .await
        .get("kept", None)
        .await
        .expect("get");
    assert_eq!(got.kvs().len(), 1, "the data survived the restart");
    again.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_member_joins_again() {
    logs();
    let dir = tempfile::tempdir().expect("temporary directory");
    let a = Node::new("etcd-a", "dc1", None, dir.path(), 2).await;
    let b = Node::new("etcd-b", "dc1", Some(a.gossip_addr), dir.path(), 2).await;
    let (ea, eb) = tokio::join!(a.start_etcd(), b.start_etcd());
    let mut through_a = client(&ea.endpoints()[0]).await;
    let list = through_a.member_list().await.expect("member list");
    let old_id = list
        .members()
        .iter()
        .find(|m| m.name() == "etcd-b")
        .map(|m| m.id())
        .expect("b is a member");
    // etcd refuses reconfigurations until the newest voter has been connected for 5 s.
    until("a to remove b", || {
        let mut through_a = through_a.clone();
        async move { through_a.member_remove(old_id).await.is_ok() }
    })
    .await;

    // b notices, moves its data aside and joins again as a new voting member.
    until("b to join again", || {
        let endpoint = ea.endpoints()[0].clone();
        async move {
            let Ok(Ok(list)) = tokio::time::timeout(Duration::from_secs(2), async {
                client(&endpoint).await.member_list().await
            })
            .await
            else {
                return false;
            };
            list.members()
                .iter()
                .any(|m| m.name() == "etcd-b" && m.id() != old_id && !m.is_learner())
        }
    })
    .await;
    let endpoint = eb.endpoints()[0].clone();
    until("b to serve again", || serves(&endpoint)).await;
    let aside = std::fs::read_dir(dir.path().join("etcd-b"))
        .expect("b's directory")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("etcd.removed-"))
        .count();
    assert_eq!(aside, 1, "the removed member's data is kept aside");
    for node in [a, b] {
        node.stop().await;
    }
}

/// Assertions shared by the cluster tests: every member lists the same `names`, all voters,
/// and one cluster id.
async fn assert_one_cluster(members: &[&ManagedEtcd], names: &[&str]) {
    let mut cluster_ids = Vec::new();
    for etcd in members {
        let mut client = client(&etcd.endpoints()[0]).await;
        let list = client.member_list().await.expect("member list");
        let listed = list.members();
        assert!(listed.iter().all(|m| !m.is_learner()), "{listed:?}");
        let mut listed_names: Vec<&str> = listed.iter().map(|m| m.name()).collect();
        listed_names.sort_unstable();
        assert_eq!(listed_names, names, "{listed:?}");
        let status = client.status().await.expect("status");
        cluster_ids.push(status.header().map(|h| h.cluster_id()).expect("header"));
    }
    cluster_ids.dedup();
    assert_eq!(
        cluster_ids.len(),
        1,
        "split into several clusters: {cluster_ids:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_lost_its_data_rejoins_instead_of_bootstrapping() {
    logs();
    let dir = tempfile::tempdir().expect("temporary directory");
    let a = Node::new("etcd-a", "dc1", None, dir.path(), 3).await;
    let join = Some(a.gossip_addr);
    let b = Node::new("etcd-b", "dc1", join, dir.path(), 3).await;
    let c = Node::new("etcd-c", "dc1", join, dir.path(), 3).await;
    let (ea, eb, ec) = tokio::join!(a.start_etcd(), b.start_etcd(), c.start_etcd());
    drop((ea, eb, ec));
    let configs = [a.config.clone(), b.config.clone(), c.config.clone()];
    for node in [a, b, c] {
        node.stop().await;
    }

    // The whole data centre restarts; a, the lowest name, lost its data. b and c run etcd on
    // theirs (not serving until they have a quorum): a must not bootstrap a second cluster.
    std::fs::remove_dir_all(&configs[0].data_dir).expect("wipe a's data");
    let b = Node::with_config(configs[1].clone(), None).await;
    let join = Some(b.gossip_addr);
    let c = Node::with_config(configs[2].clone(), join).await;
    let a = Node::with_config(configs[0].clone(), join).await;
    until("the gossip members to see each other", || {
        let gossip = a.gossip.clone();
        async move { gossip.members().await.map(|m| m.len()).unwrap_or(0) == 3 }
    })
    .await;
    let (ea, eb, ec) = tokio::join!(a.start_etcd(), b.start_etcd(), c.start_etcd());
    assert_one_cluster(&[&ea, &eb, &ec], &["etcd-a", "etcd-b", "etcd-c"]).await;
    for node in [a, b, c] {
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_certificate_the_members_speak_tls_on_client_and_peer_urls() {
    logs();
    let dir = tempfile::tempdir().expect("temporary directory");
    let tls = dev_tls(&dir.path().join("pki"));
    let a = Node::with_tls("etcd-a", "dc1", None, dir.path(), 2, Some(tls.clone())).await;
    let join = Some(a.gossip_addr);
    let b = Node::with_tls("etcd-b", "dc1", join, dir.path(), 2, Some(tls.clone())).await;
    // b joins a's cluster as a learner over the TLS peer URLs and is promoted.
    let (ea, eb) = tokio::join!(a.start_etcd(), b.start_etcd());
    assert!(a.gossip.local().meta.etcd_peer_url.starts_with("https://"));
    assert!(
        a.gossip
            .local()
            .meta
            .etcd_client_url
            .starts_with("https://")
    );

    let endpoint = ea.endpoints()[0].clone();
    assert_eq!(endpoint.scheme(), "https");
    let mut through_a = tls_client(&endpoint, Some(&tls)).await;
    let list = through_a.member_list().await.expect("member list over TLS");
    assert_eq!(list.members().len(), 2, "{:?}", list.members());
    for member in list.members() {
        assert!(!member.is_learner(), "{member:?}");
        let urls = member.peer_urls().iter().chain(member.client_urls());
        for url in urls {
            assert!(url.starts_with("https://"), "{member:?}");
        }
    }
    through_a
        .put("/test/secret", "from a", None)
        .await
        .expect("put over TLS");
    let got = tls_client(&eb.endpoints()[0], Some(&tls))
        .await
        .get("/test/secret", None)
        .await
        .expect("get through b over TLS");
    assert_eq!(got.kvs().len(), 1, "replicated over the TLS peer link");

    // Plain text does not get in: the same port over http, nor TLS without a certificate
    // (client-cert-auth).
    let port = endpoint.port().expect("a port");
    let plain = async {
        let mut client = client(&url(port)).await;
        client.get("/test/secret", None).await
    };
    let plain = tokio::time::timeout(Duration::from_secs(5), plain).await;
    assert!(
        !matches!(plain, Ok(Ok(ref reply)) if !reply.kvs().is_empty()),
        "a plain-text client read the key: {plain:?}"
    );
    let ca = tls.ca_path().expect("a CA").to_owned();
    let no_cert = EtcdTls::load(Some(&ca), None, NODE_FLAGS).expect("CA only");
    let anonymous = async {
        let mut client = tls_client(&endpoint, Some(&no_cert)).await;
        client.get("/test/secret", None).await
    };
    let anonymous = tokio::time::timeout(Duration::from_secs(5), anonymous).await;
    assert!(
        !matches!(anonymous, Ok(Ok(_))),
        "a client without a certificate was served: {anonymous:?}"
    );
    for node in [a, b] {
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_member_never_joins_a_plain_cluster() {
    logs();
    let dir = tempfile::tempdir().expect("temporary directory");
    let tls = dev_tls(&dir.path().join("pki"));
    let plain = Node::new("etcd-a", "dc1", None, dir.path(), 1).await;
    let eplain = plain.start_etcd().await;
    let secure = Node::with_tls(
        "etcd-b",
        "dc1",
        Some(plain.gossip_addr),
        dir.path(),
        1,
        Some(tls),
    )
    .await;
    until("the members to see each other", || {
        let gossip = secure.gossip.clone();
        async move { gossip.members().await.map(|m| m.len()).unwrap_or(0) == 2 }
    })
    .await;
    let error = tokio::time::timeout(
        DEADLINE,
        ManagedEtcd::start(
            secure.config.clone(),
            secure.gossip.clone(),
            secure.token.clone(),
            &secure.tracker,
        ),
    )
    .await
    .expect("refused at once")
    .expect_err("a TLS member must not join a plain-text cluster");
    let text = error.to_string();
    assert!(
        matches!(error, ManagedEtcdError::SchemeMismatch { .. }),
        "{text}"
    );
    assert!(
        text.contains("etcd-a") && text.contains("plain text"),
        "{text}"
    );
    assert!(!secure.config.data_dir.exists(), "no etcd data was created");
    // The plain cluster still has its one member.
    let list = client(&eplain.endpoints()[0])
        .await
        .member_list()
        .await
        .expect("member list");
    assert_eq!(list.members().len(), 1);
    for node in [plain, secure] {
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_does_not_switch_to_tls_on_the_data_of_a_plain_cluster() {
    logs();
    let dir = tempfile::tempdir().expect("temporary directory");
    let tls = dev_tls(&dir.path().join("pki"));
    let node = Node::new("solo", "dc1", None, dir.path(), 1).await;
    let mut config = node.config.clone();
    let etcd = node.start_etcd().await;
    drop(etcd);
    node.stop().await;

    // The same data directory and ports, now with a certificate.
    for url in [&mut config.peer_url, &mut config.client_url] {
        url.set_scheme("https").expect("https");
    }
    config.tls = Some(tls);
    let again = Node::with_config(config, None).await;
    let error = tokio::time::timeout(
        DEADLINE,
        ManagedEtcd::start(
            again.config.clone(),
            again.gossip.clone(),
            again.token.clone(),
            &again.tracker,
        ),
    )
    .await
    .expect("refused in time")
    .expect_err("a plain cluster's data must not run with TLS");
    let text = error.to_string();
    assert!(
        matches!(error, ManagedEtcdError::SchemeMismatch { .. }),
        "{text}"
    );
    assert!(text.contains("plain text"), "{text}");
    again.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_member_never_joins_a_tls_cluster() {
    logs();
    let dir = tempfile::tempdir().expect("temporary directory");
    let tls = dev_tls(&dir.path().join("pki"));
    let secure = Node::with_tls("etcd-a", "dc1", None, dir.path(), 1, Some(tls)).await;
    let _esecure = secure.start_etcd().await;
    let plain = Node::new("etcd-b", "dc1", Some(secure.gossip_addr), dir.path(), 1).await;
    until("the members to see each other", || {
        let gossip = plain.gossip.clone();
        async move { gossip.members().await.map(|m| m.len()).unwrap_or(0) == 2 }
    })
    .await;
    let error = tokio::time::timeout(
        DEADLINE,
        ManagedEtcd::start(
            plain.config.clone(),
            plain.gossip.clone(),
            plain.token.clone(),
            &plain.tracker,
        ),
    )
    .await
    .expect("refused at once")
    .expect_err("a plain member must not join a TLS cluster");
    let text = error.to_string();
    assert!(
        matches!(error, ManagedEtcdError::SchemeMismatch { .. }),
        "{text}"
    );
    assert!(
        text.contains("etcd-a") && text.contains("TLS (https://)"),
        "{text}"
    );
    assert!(!plain.config.data_dir.exists(), "no etcd data was created");
    for node in [secure, plain] {
        node.stop().await;
    }
}

/// Issue 20 item 4, quorum loss: of three members two are gone for good (stopped here; their
/// data kept), so the last one cannot serve. Restarted with `--cluster-force-new`, it serves
/// alone on its data (what was written before is there, writes work again); the two others,
/// started again on their old data, find that the cluster removed them, move their data
/// aside and join again, until the data centre is one cluster of three voters again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_quorum_is_recovered_with_force_new_and_the_others_join_again() {
    logs();
    let dir = tempfile::tempdir().expect("temporary directory");
    let a = Node::new("etcd-a", "dc1", None, dir.path(), 3).await;
    let join = Some(a.gossip_addr);
    let b = Node::new("etcd-b", "dc1", join, dir.path(), 3).await;
    let c = Node::new("etcd-c", "dc1", join, dir.path(), 3).await;
    let (ea, eb, ec) = tokio::join!(a.start_etcd(), b.start_etcd(), c.start_etcd());
    client(&ea.endpoints()[0])
        .await
        .put("before", "1", None)
        .await
        .expect("put before the loss");
    drop((eb, ec));
    let configs = [a.config.clone(), b.config.clone(), c.config.clone()];
    for node in [b, c] {
        node.stop().await;
    }
    // Two of three gone: no quorum, no linearizable read.
    let endpoint = ea.endpoints()[0].clone();
    until("a to stop serving without a quorum", || {
        let endpoint = endpoint.clone();
        async move { !serves(&endpoint).await }
    })
    .await;
    drop(ea);
    a.stop().await;

    // The documented recovery: the survivor restarted with --cluster-force-new.
    let mut forced = configs[0].clone();
    forced.force_new = true;
    let a = Node::with_config(forced, None).await;
    let ea = a.start_etcd().await;
    let mut through_a = client(&ea.endpoints()[0]).await;
    let got = through_a.get("before", None).await.expect("get");
    assert_eq!(got.kvs().first().map(|kv| kv.value()), Some(&b"1"[..]));
    through_a
        .put("after", "2", None)
        .await
        .expect("the store takes writes again");
    let list = through_a.member_list().await.expect("member list");
    let names: Vec<&str> = list.members().iter().map(|m| m.name()).collect();
    assert_eq!(names, ["etcd-a"], "a one-member cluster");

    // The others come back on their old data and join again by themselves.
    let join = Some(a.gossip_addr);
    let b = Node::with_config(configs[1].clone(), join).await;
    let c = Node::with_config(configs[2].clone(), join).await;
    let (eb, ec) = tokio::join!(b.start_etcd(), c.start_etcd());
    assert_one_cluster(&[&ea, &eb, &ec], &["etcd-a", "etcd-b", "etcd-c"]).await;
    let got = client(&ec.endpoints()[0])
        .await
        .get("after", None)
        .await
        .expect("get through c");
    assert_eq!(got.kvs().first().map(|kv| kv.value()), Some(&b"2"[..]));
    for node in [&b, &c] {
        let aside = std::fs::read_dir(node.config.data_dir.parent().expect("parent"))
            .expect("the node's directory")
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with("etcd.removed-"))
            .count();
        assert_eq!(aside, 1, "{}: the old data is kept aside", node.config.name);
    }
    // The flag acted once: the supervisor's restarts go without it (a killed etcd comes back
    // into the three-member cluster, not as a new one-member cluster).
    let pid = ea.child_pid().expect("a's etcd runs");
    assert!(
        std::process::Command::new("kill")
            .arg("-9")
            .arg(pid.to_string())
            .status()
            .expect("kill")
            .success()
    );
    until("a's etcd restarted", || {
        let ea = ea.clone();
        async move { ea.child_pid().is_some_and(|p| p != pid) }
    })
    .await;
    let endpoint = ea.endpoints()[0].clone();
    until("a to serve again", || serves(&endpoint)).await;
    assert_one_cluster(&[&ea, &eb, &ec], &["etcd-a", "etcd-b", "etcd-c"]).await;
    for node in [a, b, c] {
        node.stop().await;
    }
}

/// `--cluster-force-new` on a member without etcd data is refused with a message naming the
/// directory, before any etcd starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_new_without_data_is_refused() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut node = Node::new("etcd-a", "dc1", None, dir.path(), 1).await;
    node.config.force_new = true;
    let err = ManagedEtcd::start(
        node.config.clone(),
        node.gossip.clone(),
        node.token.clone(),
        &node.tracker,
    )
    .await
    .expect_err("no data to force a new cluster from");
    assert!(
        matches!(err, ManagedEtcdError::ForceNewWithoutData { .. }),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains(&node.config.data_dir.display().to_string()),
        "{err}"
    );
    node.stop().await;
}

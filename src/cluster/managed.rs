//! The managed etcd member of cluster mode: without `--etcd-endpoints`, every syncer of a data
//! centre runs one member of the data centre's etcd cluster as a supervised child process, as
//! the original ServiceComb Syncer embedded one.
//!
//! **Discovery** goes through gossip metadata ([`NodeMeta`](crate::gossip::NodeMeta)): each
//! member announces its etcd peer and client URLs and, once its etcd member serves clients as a
//! voting member, `etcd_ready`.
//!
//! **Bootstrap without split brain.** A data directory that already holds a member
//! (`<dir>/member`) is simply started again. Otherwise the node waits until either
//! - some member of its data centre reports `etcd_ready`: it joins that cluster, or
//! - `expected_members` members (itself included) are visible and its node name is the lowest
//!   among them: it bootstraps a one-member cluster (`--initial-cluster-state new`, the data
//!   centre's name as cluster token). Everyone else waits for the first case.
//!
//! So exactly one node creates the cluster and every other one joins it, one at a time. One
//! more guard: a node about to bootstrap first tries the etcd peer port of every other visible
//! member; if one accepts a connection, that member runs etcd already (typically restarting on
//! its data and waiting for a quorum before it serves), so this node waits to join instead of
//! creating a second cluster (the whole data centre restarting while this node lost its data).
//! This relies on `expected_members` being the real number of members: with more syncers than
//! that starting at once and seeing different subsets, two could still bootstrap.
//!
//! **Joining** goes through a ready member: `member_add` as a learner (etcd allows one learner
//! at a time, and refuses reconfigurations until its newest voter has been connected for 5 s,
//! so concurrent joiners queue by retrying), start etcd with the returned member list
//! (`--initial-cluster-state existing`), wait until it serves, then `member_promote` until the
//! learner has caught up and the local member has applied its promotion. A member that an
//! earlier attempt added but never started (no name yet) is reused; one that had started but
//! whose data is gone is removed and added again. A restarted learner (data present,
//! `is_learner` in its status) is promoted again.
//!
//! **Supervision**: a member that exits is logged with its status and last output lines and
//! restarted on its data directory after a back-off (1 s doubling to 30 s; reset after a
//! minute of running). When etcd says the member was removed from the cluster, or it keeps
//! exiting within seconds and the cluster no longer lists it, the data directory is moved
//! aside (`etcd.removed-<unix time>`) and the node joins again as a learner. On cancellation
//! the child gets SIGTERM, then SIGKILL after [`STOP_GRACE`].
//!
//! **TLS.** With syncer's own certificate (`--tls-cert`/`--tls-key`), the member serves TLS
//! on both its client and peer URLs (`https://`, etcd's `--cert-file`/`--key-file` and
//! `--peer-cert-file`/`--peer-key-file`); with `--tls-ca` too, it verifies clients and peers
//! against that CA and demands their certificates (`--trusted-ca-file`, `--client-cert-auth`
//! and the `--peer-` twins). Syncer's etcd clients present the same certificate. The scheme
//! travels in the URLs that gossip announces and the member list holds, so a member whose
//! scheme differs from the data centre's (TLS joining a plain cluster, or the reverse) stops
//! with [`ManagedEtcdError::SchemeMismatch`] before it starts etcd: never a silent downgrade.
//! etcd verifies a peer's certificate against the address it connects from, so the
//! certificate must name every member's peer IP (`syncer dev-certs --hosts`).

use std::collections::VecDeque;
use std::ffi::OsString;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use etcd_client::{Client, ConnectOptions, Member, MemberAddOptions, StatusResponse};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};
use url::Url;

use crate::backoff::{Backoff, sleep_or_cancel};
use crate::config::Config;
use crate::config::exec::{ExecutableNotFound, resolve_executable};
use crate::gossip::{GossipError, GossipHandle};
use crate::store::EtcdTls;

/// How long a started member may take to serve clients.
pub const READY_DEADLINE: Duration = Duration::from_secs(30);
/// How long a learner may take to catch up and be promoted.
pub const PROMOTE_DEADLINE: Duration = Duration::from_secs(60);
/// How long adding this member as a learner may take (other joiners go first).
pub const ADD_DEADLINE: Duration = Duration::from_secs(60);
/// How long the child may take to exit after SIGTERM before it is killed.
pub const STOP_GRACE: Duration = Duration::from_secs(5);
/// First delay before restarting a member that exited; it doubles up to [`BACKOFF_MAX`].
pub const BACKOFF_MIN: Duration = Duration::from_secs(1);
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Lines of the child's output kept for error messages.
pub const TAIL_LINES: usize = 50;

/// Pause between readiness probes and discovery rounds.
const POLL: Duration = Duration::from_millis(250);
/// Pause between `member_add` or `member_promote` attempts.
const RETRY: Duration = Duration::from_millis(300);
/// One probe of the local member (connect and `status`).
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// One connection attempt to another member's peer port before bootstrapping.
const CONNECT_CHECK_TIMEOUT: Duration = Duration::from_millis(500);
/// One cluster request (`member_list`, `member_add`, ...).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// How often a waiting step says what it waits for.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// How often the other members' client URLs are refreshed.
const ENDPOINTS_EVERY: Duration = Duration::from_secs(10);
/// How soon after a membership change in gossip they are refreshed.
const EVENT_REFRESH_DELAY: Duration = Duration::from_millis(200);
/// A member that ran this long before exiting restarts after [`BACKOFF_MIN`] again.
const STABLE_RUN: Duration = Duration::from_secs(60);
/// An exit this soon after the start counts as a quick exit.
const QUICK_EXIT: Duration = Duration::from_secs(10);
/// After this many quick exits in a row, ask the cluster whether it still lists the member.
const QUICK_EXITS_BEFORE_CHECK: u32 = 3;
/// Longest output line kept in the tail.
const MAX_LINE: usize = 2048;
/// How long the output readers may take to finish after the child exited.
const DRAIN_WAIT: Duration = Duration::from_secs(1);

/// What etcd prints when it finds that the cluster removed its member.
const REMOVED_MARKERS: [&str; 3] = [
    "has already been removed",
    "permanently removed from the cluster",
    "member has been removed",
];

/// Settings of the managed member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedEtcdConfig {
    /// The etcd executable: a path, or a name looked up on `PATH`.
    pub etcd_bin: PathBuf,
    /// Member name: the syncer's node name.
    pub name: String,
    /// Data-centre name: the initial cluster token, and which gossip members belong together.
    pub cluster_name: String,
    /// Where the member listens for and is reached by its peers.
    pub peer_url: Url,
    /// Where the member listens for and is reached by clients.
    pub client_url: Url,
    /// The member's data directory (`<data-dir>/etcd`).
    pub data_dir: PathBuf,
    /// How many members the data centre has (`--cluster-size`); the lowest-named of that many
    /// visible members bootstraps the cluster.
    pub expected_members: usize,
    /// TLS of the client and peer URLs (then `https://`) and of syncer's clients of the
    /// member: syncer's own certificate, key and CA. `None`: plain text.
    pub tls: Option<EtcdTls>,
    /// Start the member on its data with `--force-new-cluster`, once (`--cluster-force-new`):
    /// recovery from a lost quorum. Later restarts by the supervisor go without it.
    pub force_new: bool,
}

impl ManagedEtcdConfig {
    /// The managed member's settings from the daemon's configuration; URLs on `--peer-addr`
    /// when given, else on `advertise_ip`; `https://` ones when syncer has a certificate.
    pub fn from_config(config: &Config, advertise_ip: IpAddr) -> ManagedEtcdConfig {
        let ip = config.cluster.peer_ip.unwrap_or(advertise_ip);
        let tls = config.cluster.etcd_tls.clone();
        let secure = tls.is_some();
        ManagedEtcdConfig {
            etcd_bin: config.cluster.etcd_bin.clone(),
            name: config.node.name.clone(),
            cluster_name: config.node.cluster_name.clone(),
            peer_url: node_url(secure, ip, config.cluster.port),
            client_url: node_url(secure, ip, config.cluster.etcd_client_port),
            data_dir: config.node.data_dir.join("etcd"),
            expected_members: config.cluster.size,
            tls,
            force_new: config.cluster.force_new,
        }
    }

    /// The scheme of this member's URLs: `https` with TLS, else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }
}

/// Why the managed member could not be started.
#[derive(Debug, thiserror::Error)]
pub enum ManagedEtcdError {
    #[error(transparent)]
    ExecutableNotFound(#[from] ExecutableNotFound),
    #[error("cannot {what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot run etcd executable {}: {source}", bin.display())]
    Spawn {
        bin: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "etcd member exited with {status} before it served clients; last output lines:\n{output}"
    )]
    Exited { status: String, output: String },
    #[error(
        "etcd member did not serve clients at {url} within {waited:?} (last probe: {last_error}); last output lines:\n{output}"
    )]
    NotReady {
        url: String,
        waited: Duration,
        last_error: String,
        output: String,
    },
    #[error(
        "cannot add this etcd member ({peer_url}) to its cluster as a learner within {waited:?}: {last_error}"
    )]
    Join {
        peer_url: String,
        waited: Duration,
        last_error: String,
    },
    #[error(
        "etcd learner {id:x} was not promoted to a voting member within {waited:?}: {last_error}"
    )]
    Promote {
        id: u64,
        waited: Duration,
        last_error: String,
    },
    #[error(
        "--cluster-force-new: there is no etcd data in {} to start a new cluster from; run it \
         on the surviving member that still has its data (docs/OPERATIONS.md, \"Quorum loss \
         of the managed etcd\")",
        path.display()
    )]
    ForceNewWithoutData { path: PathBuf },
    #[error("gossip pool: {0}")]
    Gossip(#[from] GossipError),
    #[error("shutdown requested before the etcd member was ready")]
    Cancelled,
    #[error(
        "another process already listens on {url}, where this syncer's etcd member must \
         listen (an etcd left over from an earlier run? stop it, or change --cluster-port or \
         --etcd-client-port)"
    )]
    PortInUse { url: String },
    #[error(
        "the etcd member of {member} is reached at {url}, but this syncer's member would speak \
         {ours}: the data centre's etcd cluster runs {theirs}. Give every syncer of the data \
         centre the same TLS settings (--tls-cert/--tls-key/--tls-ca); a member never joins \
         with another scheme (that would mix TLS and plain text)"
    )]
    SchemeMismatch {
        member: String,
        url: String,
        ours: String,
        theirs: String,
    },
}

impl ManagedEtcdError {
    /// etcd exited because the cluster removed this member.
    fn is_removal(&self) -> bool {
        matches!(self, ManagedEtcdError::Exited { output, .. } if mentions_removal(output))
    }
}

/// A running managed etcd member. Its supervisor runs on the tracker given to
/// [`ManagedEtcd::start`] until the token is cancelled.
#[derive(Debug, Clone)]
pub struct ManagedEtcd {
    inner: Arc<Inner>,
}

impl ManagedEtcd {
    /// Bootstraps or joins the data centre's etcd cluster, starts the local member and returns
    /// once it serves clients as a voting member. Supervises it on `tracker` until `token` is
    /// cancelled (then stops the child: SIGTERM, then kill after [`STOP_GRACE`]).
    ///
    /// # Errors
    /// A missing executable, a data directory that cannot be created, a member that exits or
    /// does not serve in time, a join or promotion that does not succeed in time, a stopped
    /// gossip pool, or cancellation.
    pub async fn start(
        config: ManagedEtcdConfig,
        gossip: GossipHandle,
        token: CancellationToken,
        tracker: &TaskTracker,
    ) -> Result<ManagedEtcd, ManagedEtcdError> {
        let bin = resolve_executable(&config.etcd_bin)?;
        ensure_free(&config.peer_url).await?;
        ensure_free(&config.client_url).await?;
        if let Some(parent) = config.data_dir.parent() {
            std::fs::create_dir_all(parent).map_err(|source| ManagedEtcdError::Io {
                what: "create the directory",
                path: parent.to_owned(),
                source,
            })?;
        }
        if config.force_new && !config.data_dir.join("member").exists() {
            return Err(ManagedEtcdError::ForceNewWithoutData {
                path: config.data_dir.clone(),
            });
        }
        let (endpoints, _) = watch::channel(vec![config.client_url.clone()]);
        let inner = Arc::new(Inner {
            bin,
            gossip,
            pid: AtomicU32::new(0),
            force_new: AtomicBool::new(config.force_new),
            endpoints,
            config,
        });
        info!(
            name = %inner.config.name,
            peer_url = %etcd_text(&inner.config.peer_url),
            client_url = %etcd_text(&inner.config.client_url),
            data_dir = %inner.config.data_dir.display(),
            expected_members = inner.config.expected_members,
            "starting the managed etcd member"
        );
        inner.publish(false).await?;
        let running = inner.bring_up(true, &token, tracker).await?;
        inner.refresh_endpoints().await;
        inner.publish(true).await?;
        info!(endpoints = ?inner.endpoints_text(), "managed etcd member ready");
        tracker.spawn(supervise(
            Arc::clone(&inner),
            running,
            token,
            tracker.clone(),
        ));
        Ok(ManagedEtcd { inner })
    }

    /// Client URLs to use: the local member's first, then the other voting members'.
    pub fn endpoints(&self) -> Vec<Url> {
        self.inner.endpoints()
    }

    /// The client URLs as they change: the supervisor refreshes the member list every
    /// `ENDPOINTS_EVERY` (10 s) and soon after a membership change in gossip, and publishes the
    /// list here when it differs. Closed once the member and its supervisor are gone.
    pub fn subscribe_endpoints(&self) -> watch::Receiver<Vec<Url>> {
        self.inner.endpoints.subscribe()
    }

    /// The pid of the etcd child while one runs (tests kill it).
    #[doc(hidden)]
    pub fn child_pid(&self) -> Option<u32> {
        match self.inner.pid.load(Ordering::SeqCst) {
            0 => None,
            pid => Some(pid),
        }
    }
}

/// State shared by the handle and the supervisor.
#[derive(Debug)]
struct Inner {
    config: ManagedEtcdConfig,
    /// The etcd executable, resolved on `PATH`.
    bin: PathBuf,
    gossip: GossipHandle,
    /// Pid of the running child; 0 when none runs.
    pid: AtomicU32,
    /// `--force-new-cluster` is still to be given to the next start on existing data.
    force_new: AtomicBool,
    /// Client URLs to use, the local member's first, then the other voting members' from the
    /// last member list.
    endpoints: watch::Sender<Vec<Url>>,
}

/// Another syncer of this data centre that runs a managed member, as gossip sees it.
#[derive(Debug)]
struct Peer {
    name: String,
    local: bool,
    ready: bool,
    /// Its etcd member has data of an existing cluster.
    has_data: bool,
    peer_url: String,
    client_url: String,
}

/// How the child is started.
enum Launch {
    /// A new one-member cluster.
    Bootstrap,
    /// Join an existing cluster with this `--initial-cluster`.
    Join { initial_cluster: String },
    /// Again on the data directory it already has.
    Restart,
}

impl Launch {
    fn as_str(&self) -> &'static str {
        match self {
            Launch::Bootstrap => "bootstrap",
            Launch::Join { .. } => "join",
            Launch::Restart => "restart",
        }
    }
}

/// What to do when no member data exists yet.
enum Plan {
    Bootstrap,
    Join,
}

impl Inner {
    fn endpoints(&self) -> Vec<Url> {
        self.endpoints.borrow().clone()
    }

    fn endpoints_text(&self) -> Vec<String> {
        self.endpoints().iter().map(etcd_text).collect()
    }

    fn has_data(&self) -> bool {
        self.config.data_dir.join("member").exists()
    }

    /// Announces this member's URLs, readiness and whether it has data in gossip.
    async fn publish(&self, ready: bool) -> Result<(), GossipError> {
        let peer = etcd_text(&self.config.peer_url);
        let client = etcd_text(&self.config.client_url);
        let data = self.has_data();
        self.gossip
            .update_meta(move |meta| {
                meta.etcd_peer_url = peer;
                meta.etcd_client_url = client;
                meta.etcd_ready = ready;
                meta.etcd_data = data;
            })
            .await
    }

    /// Live gossip members of this data centre that run a managed member, the local one
    /// included.
    async fn peers(&self) -> Result<Vec<Peer>, GossipError> {
        let members = self.gossip.members().await?;
        Ok(members
            .into_iter()
            .filter(|m| {
                m.status.is_live()
                    && m.id.meta.cluster == self.config.cluster_name
                    && !m.id.meta.etcd_peer_url.is_empty()
            })
            .map(|m| Peer {
                ready: m.id.meta.etcd_ready && !m.local,
                has_data: m.id.meta.etcd_data,
                name: m.id.name,
                local: m.local,
                peer_url: m.id.meta.etcd_peer_url,
                client_url: m.id.meta.etcd_client_url,
            })
            .collect())
    }

    /// Client URLs of the other members that report a ready (voting) etcd member.
    async fn ready_urls(&self) -> Result<Vec<String>, GossipError> {
        Ok(self
            .peers()
            .await?
            .into_iter()
            .filter(|p| p.ready && !p.client_url.is_empty())
            .map(|p| p.client_url)
            .collect())
    }

    /// Starts the member: on its data directory when there is one, else by bootstrapping or
    /// joining the data centre's cluster. Returns once it serves clients as a voting member.
    async fn bring_up(
        &self,
        allow_bootstrap: bool,
        token: &CancellationToken,
        tracker: &TaskTracker,
    ) -> Result<Running, ManagedEtcdError> {
        if self.has_data() {
            match self.restart_existing(token, tracker).await {
                Err(e) if e.is_removal() => {
                    warn!(error = %e, "the etcd cluster removed this member; joining again as a new one");
                    self.move_data_aside()?;
                }
                other => return other,
            }
            // No data any more: others may count on this member no longer.
            self.publish(false).await?;
        }
        match self.discover(allow_bootstrap, token).await? {
            Plan::Bootstrap => {
                info!(
                    name = %self.config.name,
                    "bootstrapping a new etcd cluster (lowest name of the data centre's members)"
                );
                let mut running = self.spawn(&Launch::Bootstrap, tracker)?;
                let outcome = self.wait_serving(&mut running, token).await.map(|_| ());
                keep_or_stop(running, outcome).await
            }
            Plan::Join => self.join(token, tracker).await,
        }
    }

    /// Starts etcd on its existing data; promotes it when it is still a learner.
    async fn restart_existing(
        &self,
        token: &CancellationToken,
        tracker: &TaskTracker,
    ) -> Result<Running, ManagedEtcdError> {
        info!(data_dir = %self.config.data_dir.display(), "starting the etcd member on its existing data");
        let mut running = self.spawn(&Launch::Restart, tracker)?;
        let outcome = async {
            let status = self.wait_serving(&mut running, token).await?;
            self.check_member_list_schemes().await?;
            if status.is_learner() {
                // 0 (no header) makes the promotion look the member up by its peer URL.
                let id = status.header().map_or(0, |h| h.member_id());
                info!(id = %format!("{id:x}"), "this etcd member is still a learner; promoting it");
                self.promote(id, token).await?;
            }
            Ok(())
        }
        .await;
        keep_or_stop(running, outcome).await
    }

    /// [`ManagedEtcdError::SchemeMismatch`] when `url` (a URL of `member`'s etcd member) does
    /// not have this member's scheme.
    fn check_scheme(&self, member: &str, url: &str) -> Result<(), ManagedEtcdError> {
        let ours = self.config.scheme();
        match Url::parse(url) {
            Ok(theirs) if theirs.scheme() != ours => Err(ManagedEtcdError::SchemeMismatch {
                member: member.to_owned(),
                url: url.to_owned(),
                ours: tls_word(ours),
                theirs: tls_word(theirs.scheme()),
            }),
            _ => Ok(()),
        }
    }

    /// After a restart on existing data: every URL of the member list has this member's
    /// scheme (a data directory of a plain cluster restarted with TLS, or the reverse, would
    /// otherwise run cut off from its peers). Skipped when the list cannot be read.
    async fn check_member_list_schemes(&self) -> Result<(), ManagedEtcdError> {
        let url = etcd_text(&self.config.client_url);
        let list = match connect(&[url], REQUEST_TIMEOUT, self.config.tls.as_ref()).await {
            Ok(mut client) => client.member_list().await.map_err(|e| describe(&e)),
            Err(e) => Err(e),
        };
        let list = match list {
            Ok(list) => list,
            Err(e) => {
                debug!(error = %e, "cannot read the etcd member list to check its URLs");
                return Ok(());
            }
        };
        for member in list.members() {
            let name = if member.name().is_empty() {
                format!("member {:x}", member.id())
            } else {
                member.name().to_owned()
            };
            for url in member.peer_urls().iter().chain(member.client_urls()) {
                self.check_scheme(&name, url)?;
            }
        }
        Ok(())
    }

    /// Waits until this node may bootstrap the cluster or some member can let it join.
    async fn discover(
        &self,
        allow_bootstrap: bool,
        token: &CancellationToken,
    ) -> Result<Plan, ManagedEtcdError> {
        let expected = self.config.expected_members.max(1);
        let mut progress = Progress::start();
        loop {
            let peers = self.peers().await?;
            for peer in peers.iter().filter(|p| !p.local) {
                for url in [&peer.peer_url, &peer.client_url] {
                    self.check_scheme(&peer.name, url)?;
                }
            }
            if let Some(ready) = peers.iter().find(|p| p.ready) {
                info!(through = %ready.name, url = %ready.client_url, "joining the data centre's etcd cluster");
                return Ok(Plan::Join);
            }
            let mut names: Vec<&str> = peers
                .iter()
                .filter(|p| !p.local)
                .map(|p| p.name.as_str())
                .collect();
            names.push(&self.config.name);
            names.sort_unstable();
            names.dedup();
            let lowest = names.first().copied() == Some(self.config.name.as_str());
            let mut running_at = None;
            if allow_bootstrap && names.len() >= expected && lowest {
                // A member restarting on its data (perhaps not listening yet, or waiting for
                // a quorum) belongs to the existing cluster: wait to join it.
                running_at = match peers.iter().find(|p| !p.local && p.has_data) {
                    Some(peer) => Some(peer.name.clone()),
                    None => etcd_running_at(&peers).await,
                };
                match &running_at {
                    None => return Ok(Plan::Bootstrap),
                    Some(name) => debug!(member = %name, "etcd runs elsewhere; not bootstrapping"),
                }
            }
            if progress.report_due() {
                if let Some(name) = running_at {
                    info!(
                        waited = ?progress.waited(),
                        "not bootstrapping a new etcd cluster: the etcd member of {name} runs \
                         already or has data of the existing cluster; waiting until it is ready to join it"
                    );
                } else {
                    info!(
                        waited = ?progress.waited(),
                        seen = ?names,
                        expected,
                        "waiting for the data centre's etcd cluster: no member is ready yet{}",
                        if allow_bootstrap && !lowest {
                            " (a member with a lower name bootstraps it)"
                        } else if allow_bootstrap {
                            " (this member bootstraps it once all expected members are seen)"
                        } else {
                            ""
                        }
                    );
                }
            }
            if !sleep_or_cancel(POLL, token).await {
                return Err(ManagedEtcdError::Cancelled);
            }
        }
    }

    /// Adds this member as a learner, starts it, waits until it serves and promotes it.
    async fn join(
        &self,
        token: &CancellationToken,
        tracker: &TaskTracker,
    ) -> Result<Running, ManagedEtcdError> {
        let (id, initial_cluster) = self.add_learner(token).await?;
        info!(id = %format!("{id:x}"), %initial_cluster, "starting the etcd member as a learner");
        let mut running = self.spawn(&Launch::Join { initial_cluster }, tracker)?;
        let outcome = async {
            self.wait_serving(&mut running, token).await?;
            self.promote(id, token).await
        }
        .await;
        keep_or_stop(running, outcome).await
    }

    /// `member_add` as a learner through a ready member, retried while etcd refuses (one
    /// learner at a time) or no member is ready. Returns the member id and the
    /// `--initial-cluster` to start with.
    async fn add_learner(
        &self,
        token: &CancellationToken,
    ) -> Result<(u64, String), ManagedEtcdError> {
        let mut progress = Progress::start();
        let mut last_error =
            String::from("no member of the data centre reports a ready etcd member");
        loop {
            let urls = self.ready_urls().await?;
            if !urls.is_empty() {
                match self.try_add_learner(&urls).await {
                    Ok((id, members)) => return Ok((id, self.initial_cluster(id, &members))),
                    Err(e) => {
                        debug!(error = %e, "cannot add this etcd member as a learner yet");
                        last_error = e;
                    }
                }
            }
            let waited = progress.waited();
            if waited >= ADD_DEADLINE {
                return Err(ManagedEtcdError::Join {
                    peer_url: etcd_text(&self.config.peer_url),
                    waited,
                    last_error,
                });
            }
            if progress.report_due() {
                info!(?waited, error = %last_error, "cannot add this etcd member as a learner yet; retrying");
            }
            if !sleep_or_cancel(RETRY, token).await {
                return Err(ManagedEtcdError::Cancelled);
            }
        }
    }

    /// One attempt of [`Inner::add_learner`]: reuses the member an earlier attempt added and
    /// never started; removes one that started but whose data is gone.
    async fn try_add_learner(&self, urls: &[String]) -> Result<(u64, Vec<Member>), String> {
        let mut client = connect(urls, REQUEST_TIMEOUT, self.config.tls.as_ref()).await?;
        let list = client.member_list().await.map_err(|e| describe(&e))?;
        let ours = list
            .members()
            .iter()
            .find(|m| holds_url(m.peer_urls(), &self.config.peer_url));
        if let Some(member) = ours {
            if member.name().is_empty() {
                info!(
                    id = %format!("{:x}", member.id()),
                    learner = member.is_learner(),
                    "reusing the etcd member an earlier attempt added for this peer URL"
                );
                return Ok((member.id(), list.members().to_vec()));
            }
            warn!(
                id = %format!("{:x}", member.id()),
                name = %member.name(),
                learner = member.is_learner(),
                "the etcd cluster lists a started member with this peer URL but its data is gone; removing it to add it again"
            );
            client
                .member_remove(member.id())
                .await
                .map_err(|e| format!("removing the stale member: {}", describe(&e)))?;
            return Err("removed a stale member with this peer URL; adding it again".into());
        }
        let response = client
            .member_add(
                [etcd_text(&self.config.peer_url)],
                Some(MemberAddOptions::new().with_is_learner()),
            )
            .await
            .map_err(|e| describe(&e))?;
        let id = response
            .member()
            .map(Member::id)
            .ok_or("member_add answered without the new member")?;
        info!(id = %format!("{id:x}"), "added this etcd member as a learner");
        Ok((id, response.member_list().to_vec()))
    }

    /// `--initial-cluster` for a joining member: every member's name=peer URL, ours named.
    fn initial_cluster(&self, id: u64, members: &[Member]) -> String {
        let mut entries = Vec::new();
        for member in members {
            let name = if member.id() == id {
                self.config.name.as_str()
            } else {
                member.name()
            };
            for url in member.peer_urls() {
                entries.push(format!("{name}={url}"));
            }
        }
        entries.join(",")
    }

    /// Promotes learner `id` through a ready member, retried until it has caught up.
    async fn promote(&self, id: u64, token: &CancellationToken) -> Result<(), ManagedEtcdError> {
        let mut progress = Progress::start();
        let mut last_error =
            String::from("no member of the data centre reports a ready etcd member");
        let local = etcd_text(&self.config.client_url);
        let mut promoted = false;
        loop {
            if promoted {
                // Done once the local member has applied its promotion too (until then it
                // still refuses what learners may not serve).
                match probe(&local, self.config.tls.as_ref()).await {
                    Ok(status) if !status.is_learner() => {
                        info!(id = %format!("{id:x}"), waited = ?progress.waited(), "this etcd member is a voting member");
                        return Ok(());
                    }
                    Ok(_) => {
                        last_error = "promoted, but the local member still runs as a learner".into()
                    }
                    Err(e) => {
                        last_error = format!("promoted, but the local member does not answer: {e}")
                    }
                }
            } else {
                let urls = self.ready_urls().await?;
                if !urls.is_empty() {
                    match try_promote(&urls, id, &self.config.peer_url, self.config.tls.as_ref())
                        .await
                    {
                        Ok(()) => {
                            promoted = true;
                            continue;
                        }
                        Err(e) => {
                            debug!(error = %e, "cannot promote the etcd learner yet");
                            last_error = e;
                        }
                    }
                }
            }
            let waited = progress.waited();
            if waited >= PROMOTE_DEADLINE {
                return Err(ManagedEtcdError::Promote {
                    id,
                    waited,
                    last_error,
                });
            }
            if progress.report_due() {
                info!(?waited, error = %last_error, "waiting for the etcd learner to catch up before its promotion");
            }
            if !sleep_or_cancel(RETRY, token).await {
                return Err(ManagedEtcdError::Cancelled);
            }
        }
    }

    /// Starts the etcd child.
    fn spawn(&self, launch: &Launch, tracker: &TaskTracker) -> Result<Running, ManagedEtcdError> {
        let config = &self.config;
        let peer = etcd_text(&config.peer_url);
        let client = etcd_text(&config.client_url);
        let mut data_dir = OsString::from("--data-dir=");
        data_dir.push(&config.data_dir);
        let mut command = Command::new(&self.bin);
        command
            .arg(format!("--name={}", config.name))
            .arg(data_dir)
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"));
        if let Some(tls) = &config.tls {
            command.args(tls_args(tls));
        }
        match launch {
            Launch::Bootstrap => {
                command
                    .arg(format!("--initial-cluster={}={peer}", config.name))
                    .arg("--initial-cluster-state=new")
                    .arg(format!("--initial-cluster-token={}", config.cluster_name));
            }
            Launch::Join { initial_cluster } => {
                command
                    .arg(format!("--initial-cluster={initial_cluster}"))
                    .arg("--initial-cluster-state=existing")
                    .arg(format!("--initial-cluster-token={}", config.cluster_name));
            }
            // The data directory says which cluster it belongs to; etcd ignores the
            // initial-cluster flags then.
            Launch::Restart => {
                if self.force_new.swap(false, Ordering::SeqCst) {
                    warn!(
                        data_dir = %config.data_dir.display(),
                        "--cluster-force-new: starting the etcd member with --force-new-cluster: \
                         a one-member cluster on this member's data; the other members join it \
                         again as new members. Remove the flag now: every start with it drops \
                         the members that joined since"
                    );
                    command.arg("--force-new-cluster");
                }
            }
        }
        // etcd speaks systemd's notification protocol too: its READY=1 is not the syncer's.
        for var in ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"] {
            command.env_remove(var);
        }
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // A dropped supervisor (runtime shut down) does not leave etcd behind.
            .kill_on_drop(true);
        // Its own process group: a Ctrl-C at the terminal reaches syncer, which stops etcd in
        // order, rather than both at once.
        #[cfg(unix)]
        command.process_group(0);
        // A syncer killed with SIGKILL cannot stop its child: the kernel sends it SIGTERM.
        #[cfg(target_os = "linux")]
        stop_with_parent(&mut command);
        let mut child = command.spawn().map_err(|source| ManagedEtcdError::Spawn {
            bin: self.bin.clone(),
            source,
        })?;
        let pid = child.id().unwrap_or(0);
        self.pid.store(pid, Ordering::SeqCst);
        debug!(pid, launch = launch.as_str(), "etcd child started");
        let tail = Tail::default();
        let mut drains = Vec::new();
        if let Some(stdout) = child.stdout.take() {
            drains.push(tracker.spawn(drain(stdout, "stdout", tail.clone())));
        }
        if let Some(stderr) = child.stderr.take() {
            drains.push(tracker.spawn(drain(stderr, "stderr", tail.clone())));
        }
        Ok(Running {
            child,
            tail,
            drains,
            started: Instant::now(),
        })
    }

    /// Polls the local member until it answers `status`, or fails when the child exits or
    /// the deadline passes.
    async fn wait_serving(
        &self,
        running: &mut Running,
        token: &CancellationToken,
    ) -> Result<StatusResponse, ManagedEtcdError> {
        let url = etcd_text(&self.config.client_url);
        let started = Instant::now();
        loop {
            let last_error = match probe(&url, self.config.tls.as_ref()).await {
                Ok(status) => {
                    debug!(waited = ?started.elapsed(), learner = status.is_learner(), "etcd member serves clients");
                    return Ok(status);
                }
                Err(e) => e,
            };
            let waited = started.elapsed();
            if waited >= READY_DEADLINE {
                return Err(ManagedEtcdError::NotReady {
                    url,
                    waited,
                    last_error,
                    output: running.tail.text(),
                });
            }
            tokio::select! {
                () = token.cancelled() => return Err(ManagedEtcdError::Cancelled),
                status = running.child.wait() => {
                    self.pid.store(0, Ordering::SeqCst);
                    let output = running.finish().await;
                    return Err(ManagedEtcdError::Exited { status: describe_exit(&status), output });
                }
                () = tokio::time::sleep(POLL) => {}
            }
        }
    }

    /// Moves the data directory aside (`etcd.removed-<unix time>`), keeping it for a human.
    fn move_data_aside(&self) -> Result<(), ManagedEtcdError> {
        let dir = &self.config.data_dir;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let base = dir
            .file_name()
            .map_or_else(|| "etcd".into(), |n| n.to_string_lossy().into_owned());
        let mut aside = dir.with_file_name(format!("{base}.removed-{now}"));
        let mut n = 1;
        while aside.exists() {
            aside = dir.with_file_name(format!("{base}.removed-{now}-{n}"));
            n += 1;
        }
        std::fs::rename(dir, &aside).map_err(|source| ManagedEtcdError::Io {
            what: "move aside the data directory",
            path: dir.clone(),
            source,
        })?;
        warn!(from = %dir.display(), to = %aside.display(), "moved the removed etcd member's data aside");
        Ok(())
    }

    /// Refreshes the other voting members' client URLs from the local member and publishes
    /// the endpoints when they changed.
    async fn refresh_endpoints(&self) {
        let url = etcd_text(&self.config.client_url);
        let list = match connect(&[url], REQUEST_TIMEOUT, self.config.tls.as_ref()).await {
            Ok(mut client) => client.member_list().await.map_err(|e| describe(&e)),
            Err(e) => Err(e),
        };
        match list {
            Ok(list) => {
                let others = list
                    .members()
                    .iter()
                    .filter(|m| !m.is_learner() && !holds_url(m.peer_urls(), &self.config.peer_url))
                    .flat_map(|m| m.client_urls().iter())
                    .filter_map(|u| Url::parse(u).ok());
                let mut endpoints = vec![self.config.client_url.clone()];
                for url in others {
                    if !endpoints.contains(&url) {
                        endpoints.push(url);
                    }
                }
                self.endpoints.send_if_modified(|current| {
                    let changed = *current != endpoints;
                    *current = endpoints;
                    changed
                });
            }
            Err(e) => debug!(error = %e, "cannot refresh the etcd member list"),
        }
    }

    /// Whether the cluster still lists this member; `None` when no ready member answers.
    async fn still_listed(&self) -> Option<bool> {
        let urls = self.ready_urls().await.ok()?;
        if urls.is_empty() {
            return None;
        }
        let mut client = connect(&urls, REQUEST_TIMEOUT, self.config.tls.as_ref())
            .await
            .ok()?;
        let list = client.member_list().await.ok()?;
        Some(
            list.members()
                .iter()
                .any(|m| holds_url(m.peer_urls(), &self.config.peer_url)),
        )
    }
}

/// The first other member whose etcd peer port accepts connections: it runs etcd, most
/// likely restarting on existing data (it serves clients only once its cluster has a quorum).
/// Bootstrapping a new cluster then would split the data centre in two.
async fn etcd_running_at(peers: &[Peer]) -> Option<String> {
    for peer in peers.iter().filter(|p| !p.local) {
        let Ok(url) = Url::parse(&peer.peer_url) else {
            continue;
        };
        let Ok(addrs) = url.socket_addrs(|| None) else {
            continue;
        };
        for addr in addrs {
            let connect = tokio::net::TcpStream::connect(addr);
            if matches!(
                tokio::time::timeout(CONNECT_CHECK_TIMEOUT, connect).await,
                Ok(Ok(_))
            ) {
                return Some(peer.name.clone());
            }
        }
    }
    None
}

/// One promotion attempt of this member (by id, or by peer URL when the id is unknown);
/// success too when an earlier attempt went through without us seeing the answer.
async fn try_promote(
    urls: &[String],
    id: u64,
    peer_url: &Url,
    tls: Option<&EtcdTls>,
) -> Result<(), String> {
    let mut client = connect(urls, REQUEST_TIMEOUT, tls).await?;
    let list = client.member_list().await.map_err(|e| describe(&e))?;
    let Some(member) = list
        .members()
        .iter()
        .find(|m| m.id() == id || holds_url(m.peer_urls(), peer_url))
    else {
        return Err(format!(
            "the cluster does not list this member ({id:x}, {})",
            etcd_text(peer_url)
        ));
    };
    if !member.is_learner() {
        return Ok(());
    }
    client
        .member_promote(member.id())
        .await
        .map(|_| ())
        .map_err(|e| describe(&e))
}

/// The supervisor: restarts the member when it exits, joins again when it was removed, stops
/// it on cancellation.
async fn supervise(
    inner: Arc<Inner>,
    mut running: Running,
    token: CancellationToken,
    tracker: TaskTracker,
) {
    let mut backoff = Backoff::new(BACKOFF_MIN, BACKOFF_MAX);
    let mut quick_exits = 0u32;
    let mut ready = true;
    loop {
        let Some(status) = watch(&inner, &mut running, &mut ready, &token).await else {
            stop(&mut running).await;
            inner.pid.store(0, Ordering::SeqCst);
            // The pool may be leaving already; then nobody needs to hear this.
            let _ = tokio::time::timeout(PROBE_TIMEOUT, inner.publish(false)).await;
            return;
        };
        inner.pid.store(0, Ordering::SeqCst);
        let ran = running.started.elapsed();
        let output = running.finish().await;
        ready = false;
        if let Err(e) = inner.publish(false).await {
            warn!(error = %e, "cannot announce that the etcd member is down");
        }
        if ran >= STABLE_RUN {
            backoff.reset();
        }
        quick_exits = if ran < QUICK_EXIT { quick_exits + 1 } else { 0 };
        error!(
            "the managed etcd member exited with {} after {ran:?}; restarting it in {:?}; last output lines:\n{output}",
            describe_exit(&status),
            backoff.peek()
        );
        let mut removed = if mentions_removal(&output) {
            Some("etcd reports that the cluster removed this member".to_owned())
        } else if quick_exits >= QUICK_EXITS_BEFORE_CHECK
            && inner.still_listed().await == Some(false)
        {
            Some(format!(
                "the member exited {quick_exits} times within seconds and the cluster no longer lists it"
            ))
        } else {
            None
        };
        // Until a child runs again.
        let mut rejoining = false;
        running = loop {
            if !backoff.wait(&token).await {
                return;
            }
            if let Some(reason) = removed.take() {
                warn!(%reason, "moving the etcd data aside to join the cluster again as a learner");
                if let Err(e) = inner.move_data_aside() {
                    error!(error = %e, "cannot move the removed etcd member's data aside");
                    removed = Some(reason);
                    continue;
                }
                quick_exits = 0;
                rejoining = true;
            }
            if rejoining {
                match inner.bring_up(false, &token, &tracker).await {
                    Ok(new) => {
                        inner.refresh_endpoints().await;
                        if let Err(e) = inner.publish(true).await {
                            warn!(error = %e, "cannot announce the etcd member as ready");
                        }
                        info!(endpoints = ?inner.endpoints_text(), "the etcd member joined the cluster again");
                        ready = true;
                        backoff.reset();
                        break new;
                    }
                    Err(ManagedEtcdError::Cancelled) => return,
                    Err(e) => {
                        error!(error = %e, retry_in = ?backoff.peek(), "cannot join the etcd cluster again");
                        continue;
                    }
                }
            }
            match inner.spawn(&Launch::Restart, &tracker) {
                Ok(new) => {
                    info!("restarted the managed etcd member on its data");
                    break new;
                }
                Err(e) => {
                    error!(error = %e, retry_in = ?backoff.peek(), "cannot restart the managed etcd member");
                }
            }
        };
    }
}

/// Waits until the child exits (its status) or the token is cancelled (`None`). Meanwhile a
/// restarted member is probed until it serves as a voting member, then announced ready, and
/// the other members' endpoints are refreshed.
async fn watch(
    inner: &Inner,
    running: &mut Running,
    ready: &mut bool,
    token: &CancellationToken,
) -> Option<std::io::Result<ExitStatus>> {
    let mut events = inner.gossip.subscribe();
    let mut gossip_open = true;
    let mut next_refresh = Instant::now() + ENDPOINTS_EVERY;
    loop {
        let wake = if *ready {
            next_refresh
        } else {
            Instant::now() + POLL
        };
        tokio::select! {
            () = token.cancelled() => return None,
            status = running.child.wait() => return Some(status),
            event = events.recv(), if gossip_open => {
                match event {
                    Err(broadcast::error::RecvError::Closed) => gossip_open = false,
                    // A member came, went or announced its etcd member ready: the member list
                    // may have changed.
                    _ => next_refresh = next_refresh.min(Instant::now() + EVENT_REFRESH_DELAY),
                }
                continue;
            }
            () = tokio::time::sleep_until(wake) => {}
        }
        if *ready {
            next_refresh = Instant::now() + ENDPOINTS_EVERY;
            inner.refresh_endpoints().await;
        } else if let Ok(status) = probe(
            &etcd_text(&inner.config.client_url),
            inner.config.tls.as_ref(),
        )
        .await
            && !status.is_learner()
        {
            *ready = true;
            info!(
                after = ?running.started.elapsed(),
                "the restarted etcd member serves clients again"
            );
            inner.refresh_endpoints().await;
            if let Err(e) = inner.publish(true).await {
                warn!(error = %e, "cannot announce the etcd member as ready");
            }
        }
    }
}

/// Asks the kernel to send the child SIGTERM when the thread that started it ends: the
/// syncer's runtime thread, which lives as long as the process. Without it, an etcd child
/// outlives a syncer killed with SIGKILL and holds the ports its successor needs.
#[cfg(target_os = "linux")]
fn stop_with_parent(command: &mut Command) {
    let parent = std::process::id();
    // SAFETY: the closure runs in the forked child before exec and only makes two
    // async-signal-safe system calls (prctl, getppid); it allocates nothing.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before prctl took effect.
            if u32::try_from(libc::getppid()).ok() != Some(parent) {
                return Err(std::io::Error::other(
                    "the syncer exited while starting etcd",
                ));
            }
            Ok(())
        });
    }
}

/// Fails when something already listens on `url` (a TCP connection is accepted).
async fn ensure_free(url: &Url) -> Result<(), ManagedEtcdError> {
    let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else {
        return Ok(());
    };
    let connect = tokio::net::TcpStream::connect((host, port));
    match tokio::time::timeout(CONNECT_CHECK_TIMEOUT, connect).await {
        Ok(Ok(_)) => Err(ManagedEtcdError::PortInUse {
            url: etcd_text(url),
        }),
        _ => Ok(()),
    }
}

/// The started child when the steps after its start (`outcome`) succeeded; otherwise stops it
/// and returns their error.
async fn keep_or_stop(
    mut running: Running,
    outcome: Result<(), ManagedEtcdError>,
) -> Result<Running, ManagedEtcdError> {
    match outcome {
        Ok(()) => Ok(running),
        Err(e) => {
            stop(&mut running).await;
            Err(e)
        }
    }
}

/// When a retried step began, and when it last said what it waits for.
struct Progress {
    started: Instant,
    next_report: Instant,
}

impl Progress {
    fn start() -> Progress {
        let started = Instant::now();
        Progress {
            started,
            next_report: started + PROGRESS_EVERY,
        }
    }

    fn waited(&self) -> Duration {
        self.started.elapsed()
    }

    /// True once every [`PROGRESS_EVERY`]: time to log what the step waits for.
    fn report_due(&mut self) -> bool {
        if Instant::now() < self.next_report {
            return false;
        }
        self.next_report += PROGRESS_EVERY;
        true
    }
}

/// A started etcd child and the tail of its output.
struct Running {
    child: Child,
    tail: Tail,
    /// The tasks reading its stdout and stderr.
    drains: Vec<JoinHandle<()>>,
    started: Instant,
}

impl Running {
    /// After the exit: lets the readers take in the last lines, then the tail as text.
    async fn finish(&mut self) -> String {
        for drain in self.drains.drain(..) {
            let _ = tokio::time::timeout(DRAIN_WAIT, drain).await;
        }
        self.tail.text()
    }
}

/// Stops the child: SIGTERM, then SIGKILL after [`STOP_GRACE`].
async fn stop(running: &mut Running) {
    if matches!(running.child.try_wait(), Ok(Some(_))) {
        running.finish().await;
        return;
    }
    let terminated = match running.child.id() {
        Some(pid) => terminate(pid),
        None => false,
    };
    if terminated {
        match tokio::time::timeout(STOP_GRACE, running.child.wait()).await {
            Ok(status) => {
                info!(status = %describe_exit(&status), "managed etcd member stopped");
                running.finish().await;
                return;
            }
            Err(_) => {
                warn!(grace = ?STOP_GRACE, "the etcd member did not stop after SIGTERM; killing it")
            }
        }
    }
    if let Err(e) = running.child.kill().await {
        warn!(error = %e, "cannot kill the etcd member");
    }
    running.finish().await;
}

/// Sends SIGTERM to `pid`.
fn terminate(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: kill(2) takes plain integers and touches no memory of this process.
    unsafe { libc::kill(pid, libc::SIGTERM) == 0 }
}

/// The last [`TAIL_LINES`] lines the child printed.
#[derive(Debug, Clone, Default)]
struct Tail(Arc<Mutex<VecDeque<String>>>);

impl Tail {
    fn push(&self, line: String) {
        let mut lines = lock(&self.0);
        if lines.len() >= TAIL_LINES {
            lines.pop_front();
        }
        lines.push_back(line);
    }

    fn text(&self) -> String {
        let lines = lock(&self.0);
        if lines.is_empty() {
            return "(none)".into();
        }
        lines
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Reads one output stream of the child line by line into `tail`, and logs it at debug level.
async fn drain(reader: impl AsyncRead + Unpin, stream: &'static str, tail: Tail) {
    let mut reader = BufReader::new(reader);
    let mut buffer = Vec::new();
    loop {
        buffer.clear();
        match reader.read_until(b'\n', &mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let mut line = String::from_utf8_lossy(&buffer).trim_end().to_owned();
        if line.is_empty() {
            continue;
        }
        if line.len() > MAX_LINE {
            let mut end = MAX_LINE;
            while !line.is_char_boundary(end) {
                end -= 1;
            }
            line.truncate(end);
        }
        debug!(target: "syncer::cluster::etcd", stream, "{line}");
        tail.push(line);
    }
}

/// Connects to the local member and asks its status.
async fn probe(url: &str, tls: Option<&EtcdTls>) -> Result<StatusResponse, String> {
    let mut client = connect(&[url.to_owned()], PROBE_TIMEOUT, tls).await?;
    client.status().await.map_err(|e| describe(&e))
}

/// An etcd client on `urls` whose connection and requests time out after `timeout`, over
/// TLS with `tls` (the URLs are `https://` then).
async fn connect(
    urls: &[String],
    timeout: Duration,
    tls: Option<&EtcdTls>,
) -> Result<Client, String> {
    let mut options = ConnectOptions::new()
        .with_connect_timeout(timeout)
        .with_timeout(timeout);
    if let Some(tls) = tls {
        options = options.with_tls(tls.options());
    }
    match tokio::time::timeout(timeout, Client::connect(urls, Some(options))).await {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(e)) => Err(format!(
            "cannot connect to {}: {}",
            urls.join(","),
            describe(&e)
        )),
        Err(_) => Err(format!(
            "no connection to {} within {timeout:?}",
            urls.join(",")
        )),
    }
}

/// An etcd client error as one line: the server's message for a gRPC status, with the
/// reasons a failed connection keeps in its sources (a refused certificate, say).
fn describe(error: &etcd_client::Error) -> String {
    match error {
        etcd_client::Error::GRpcStatus(status) => {
            let text = crate::store::etcd_tls::with_sources(
                status.message().to_owned(),
                std::error::Error::source(status),
            );
            format!("{text} ({:?})", status.code())
        }
        other => crate::store::etcd_tls::chain(other),
    }
}

/// etcd's flags for TLS on the client and peer URLs: the node's certificate and key on both,
/// and with a CA, client and peer certificates demanded and verified against it.
fn tls_args(tls: &EtcdTls) -> Vec<OsString> {
    let flag = |name: &str, path: &std::path::Path| {
        let mut arg = OsString::from(format!("--{name}="));
        arg.push(path);
        arg
    };
    let mut args = Vec::new();
    if let (Some(cert), Some(key)) = (tls.cert_path(), tls.key_path()) {
        args.extend([
            flag("cert-file", cert),
            flag("key-file", key),
            flag("peer-cert-file", cert),
            flag("peer-key-file", key),
        ]);
    }
    if let Some(ca) = tls.ca_path() {
        args.extend([
            flag("trusted-ca-file", ca),
            OsString::from("--client-cert-auth"),
            flag("peer-trusted-ca-file", ca),
            OsString::from("--peer-client-cert-auth"),
        ]);
    }
    args
}

fn describe_exit(status: &std::io::Result<ExitStatus>) -> String {
    match status {
        Ok(status) => status.to_string(),
        Err(e) => format!("an unknown status ({e})"),
    }
}

/// How an error message names a scheme.
fn tls_word(scheme: &str) -> String {
    match scheme {
        "https" => "TLS (https://)".to_owned(),
        "http" => "plain text (http://)".to_owned(),
        other => format!("{other}://"),
    }
}

/// Whether etcd's output says the cluster removed this member.
fn mentions_removal(output: &str) -> bool {
    REMOVED_MARKERS.iter().any(|marker| output.contains(marker))
}

/// `https://<ip>:<port>` when `secure`, else `http://<ip>:<port>`.
fn node_url(secure: bool, ip: IpAddr, port: u16) -> Url {
    let scheme = if secure { "https" } else { "http" };
    let text = format!("{scheme}://{}", SocketAddr::new(ip, port));
    Url::parse(&text).unwrap_or_else(|e| panic!("{text} is not a URL: {e}"))
}

/// A URL as etcd takes it: `scheme://host:port`, without the path `Url` always has.
fn etcd_text(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port_or_known_default() {
        Some(port) => format!("{}://{host}:{port}", url.scheme()),
        None => format!("{}://{host}", url.scheme()),
    }
}

/// Whether one of `urls` (as etcd reports them) is `url`.
fn holds_url(urls: &[String], url: &Url) -> bool {
    let wanted = etcd_text(url);
    urls.iter()
        .any(|u| Url::parse(u).is_ok_and(|u| etcd_text(&u) == wanted))
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_written_as_etcd_wants_them() {
        let url = node_url(false, IpAddr::from([10, 0, 0, 5]), 30192);
        assert_eq!(etcd_text(&url), "http://10.0.0.5:30192");
        let v6 = node_url(false, "::1".parse().unwrap(), 2380);
        assert_eq!(etcd_text(&v6), "http://[::1]:2380");
        assert!(holds_url(&["http://10.0.0.5:30192".into()], &url));
        assert!(holds_url(&["http://10.0.0.5:30192/".into()], &url));
        assert!(!holds_url(&["http://10.0.0.5:30193".into()], &url));
    }

    #[test]
    fn config_from_the_daemon_settings() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::for_test("n1", dir.path());
        config.cluster.port = 30192;
        config.cluster.etcd_client_port = 30194;
        config.cluster.peer_ip = None;
        let managed = ManagedEtcdConfig::from_config(&config, IpAddr::from([10, 0, 0, 7]));
        assert_eq!(etcd_text(&managed.peer_url), "http://10.0.0.7:30192");
        assert_eq!(etcd_text(&managed.client_url), "http://10.0.0.7:30194");
        assert_eq!(managed.data_dir, dir.path().join("etcd"));
        assert_eq!(managed.name, "n1");
        config.cluster.peer_ip = Some(IpAddr::from([192, 168, 1, 2]));
        let managed = ManagedEtcdConfig::from_config(&config, IpAddr::from([10, 0, 0, 7]));
        assert_eq!(etcd_text(&managed.peer_url), "http://192.168.1.2:30192");
    }

    #[test]
    fn with_a_certificate_the_urls_are_https_and_etcd_gets_the_tls_flags() {
        let dir = tempfile::tempdir().unwrap();
        let certs = crate::cli::dev_certs::generate(&["10.0.0.7".into()]).unwrap();
        crate::cli::dev_certs::write(dir.path(), &certs).unwrap();
        let (cert, key, ca) = (
            dir.path().join("node.pem"),
            dir.path().join("node-key.pem"),
            dir.path().join("ca.pem"),
        );
        let flags = crate::store::etcd_tls::NODE_FLAGS;
        let mut config = Config::for_test("n1", dir.path());
        config.cluster.port = 30192;
        config.cluster.etcd_client_port = 30194;
        config.cluster.etcd_tls =
            Some(EtcdTls::load(Some(&ca), Some((&cert, &key)), flags).unwrap());
        let managed = ManagedEtcdConfig::from_config(&config, IpAddr::from([10, 0, 0, 7]));
        assert_eq!(managed.scheme(), "https");
        assert_eq!(etcd_text(&managed.peer_url), "https://10.0.0.7:30192");
        assert_eq!(etcd_text(&managed.client_url), "https://10.0.0.7:30194");
        let args: Vec<String> = tls_args(managed.tls.as_ref().unwrap())
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let path = |p: &std::path::Path| p.display().to_string();
        for expected in [
            format!("--cert-file={}", path(&cert)),
            format!("--key-file={}", path(&key)),
            format!("--peer-cert-file={}", path(&cert)),
            format!("--peer-key-file={}", path(&key)),
            format!("--trusted-ca-file={}", path(&ca)),
            format!("--peer-trusted-ca-file={}", path(&ca)),
            "--client-cert-auth".to_owned(),
            "--peer-client-cert-auth".to_owned(),
        ] {
            assert!(args.contains(&expected), "{expected} missing from {args:?}");
        }
        // Without a CA: TLS, but no client-cert-auth (nothing to check certificates against).
        let no_ca = EtcdTls::load(None, Some((&cert, &key)), flags).unwrap();
        let args = tls_args(&no_ca);
        assert_eq!(args.len(), 4);
        assert!(
            !args
                .iter()
                .any(|a| a.to_string_lossy().contains("client-cert-auth"))
        );
        config.cluster.etcd_tls = None;
        let plain = ManagedEtcdConfig::from_config(&config, IpAddr::from([10, 0, 0, 7]));
        assert_eq!(plain.scheme(), "http");
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        let tail = Tail::default();
        assert_eq!(tail.text(), "(none)");
        for i in 0..TAIL_LINES + 10 {
            tail.push(format!("line {i}"));
        }
        let text = tail.text();
        assert_eq!(text.lines().count(), TAIL_LINES);
        assert!(text.starts_with("line 10\n"));
        assert!(text.ends_with(&format!("line {}", TAIL_LINES + 9)));
    }

    #[test]
    fn removal_is_recognised() {
        assert!(mentions_removal(
            "etcdserver: the member has been permanently removed from the cluster"
        ));
        assert!(!mentions_removal(
            "listening for peers on http://127.0.0.1:2380"
        ));
    }
}

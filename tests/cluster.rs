//! Cluster mode end to end: two data centres of three `syncer daemon --mode cluster`
//! processes each, sharing one real etcd (`--etcd-endpoints`, each data centre under its own
//! prefix), next to in-process dev registries. Exactly one member per data centre is active
//! (`syncer_sync_active`); killing it with SIGKILL under register/unregister churn hands over
//! to a standby, and every registry ends consistent: nothing missing, nothing stale, no
//! duplicate, and the copies made before the failover keep their ids (no mapping lost).
//! With `--tls-*`, a data centre's managed etcd cluster speaks TLS on its client and peer
//! URLs and plain-text clients cannot read it.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use support::etcd::EtcdServer;
use support::sync::{FAST, NewInstance, POLL, Registry};
use support::tap::HttpTap;
use support::{Daemon, syncer};

/// Lease of the leader key in these tests (etcd's minimum is about 2 s).
const LEADER_LEASE: &str = "2s";
/// Generous bound for a takeover in a test (the benchmark measures it).
const TAKEOVER_DEADLINE: Duration = Duration::from_secs(15);
const DEADLINE: Duration = Duration::from_secs(30);

struct Member {
    name: String,
    daemon: Option<Daemon>,
    gossip: String,
    admin: String,
    /// Its gRPC address (`syncer members` asks it).
    rpc: String,
    ip: String,
    /// The member's own flags, to start it again.
    placement: Vec<String>,
}

/// Fields drop in order: the daemons first, the working directory they use last.
struct Cluster {
    /// Members of dc1 then dc2.
    members: Vec<Vec<Member>>,
    registries: Vec<Registry>,
    /// The shared etcd; `None` when every member runs its managed etcd member.
    etcd: Option<EtcdServer>,
    rt: tokio::runtime::Runtime,
    /// The members' working directory; holds their data directories until the test ends.
    dir: tempfile::TempDir,
}

/// Starts `syncer daemon` with `placement` (where it listens, its registry, store and peers)
/// plus what every member of these tests gets: an admin listener for the metrics, a short
/// leader lease, fast sync timing, JSON logs.
fn spawn_member(dir: &Path, node: &str, ip: &str, placement: &[String]) -> Member {
    let mut cmd = syncer(dir);
    cmd.arg("daemon")
        .args(placement)
        .args(["--admin-addr", &format!("{ip}:0")])
        .args(["--leader-lease", LEADER_LEASE])
        .args(FAST)
        .args(["--log-format", "json", "--log-level", "info"]);
    let mut daemon = Daemon::spawn(cmd);
    let ready = daemon.wait_ready();
    let field = |key: &str| ready[key].as_str().unwrap_or_default().to_owned();
    Member {
        name: node.to_owned(),
        gossip: field("gossip_addr"),
        admin: field("admin_addr"),
        rpc: field("rpc_addr"),
        daemon: Some(daemon),
        ip: ip.to_owned(),
        placement: placement.to_vec(),
    }
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn work_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("syncer-cluster-")
        .tempdir()
        .expect("temp dir")
}

impl Cluster {
    /// Two data centres (127.0.0.1 and 127.0.0.2) of `per_dc` members on free ports, sharing
    /// one etcd (`--etcd-endpoints`), each data centre under its own cluster name.
    fn start(per_dc: usize) -> Cluster {
        Cluster::start_with(per_dc, false).0
    }

    /// As [`Cluster::start`]; with `tapped`, every member reaches its registry through its
    /// own [`HttpTap`], which tells that member's registry requests apart (`taps[d][k]`).
    fn start_with(per_dc: usize, tapped: bool) -> (Cluster, Vec<Vec<HttpTap>>) {
        let rt = runtime();
        let dir = work_dir();
        let etcd = EtcdServer::start();
        let registries: Vec<Registry> = (0..2)
            .map(|_| Registry::start(&rt, SocketAddr::from(([127, 0, 0, 1], 0))))
            .collect();
        let mut members: Vec<Vec<Member>> = Vec::new();
        let mut taps: Vec<Vec<HttpTap>> = Vec::new();
        let mut first_gossip: Option<String> = None;
        for (d, registry) in registries.iter().enumerate() {
            let dc = format!("dc{}", d + 1);
            let ip = format!("127.0.0.{}", d + 1);
            let mut list = Vec::new();
            let mut dc_taps = Vec::new();
            for k in 0..per_dc {
                let node = format!("{dc}-{}", char::from(b'a' + k as u8));
                let data = dir.path().join(&node);
                let sc_addr = if tapped {
                    let tap = HttpTap::start(&rt, registry.addr());
                    let url = tap.url();
                    dc_taps.push(tap);
                    url
                } else {
                    registry.url()
                };
                let mut placement = args(&["--mode", "cluster", "--node", &node]);
                placement.extend(args(&["--cluster-name", &dc, "--sc-addr", &sc_addr]));
                placement.extend(args(&["--bind-addr", &format!("{ip}:0")]));
                placement.extend(args(&["--rpc-addr", &format!("{ip}:0")]));
                placement.extend(args(&["--etcd-endpoints", &etcd.endpoint()]));
                placement.extend(args(&["--data-dir", &data.display().to_string()]));
                if let Some(join) = &first_gossip {
                    placement.extend(args(&["--join-addr", join]));
                }
                let member = spawn_member(dir.path(), &node, &ip, &placement);
                first_gossip.get_or_insert_with(|| member.gossip.clone());
                list.push(member);
            }
            members.push(list);
            taps.push(dc_taps);
        }
        let cluster = Cluster {
            rt,
            dir,
            etcd: Some(etcd),
            registries,
            members,
        };
        (cluster, taps)
    }

    /// The original README's cluster-mode command lines, one data centre on 127.0.0.1 and
    /// the other on 127.0.0.2 (the ports repeat): three syncers per data centre, each running
    /// its managed etcd member on `--cluster-port`, no `--cluster-name` (each data centre is
    /// named after its registry's identity), data in `./syncer-data/<node>`.
    fn start_readme() -> Cluster {
        let rt = runtime();
        let dir = work_dir();
        let registries: Vec<Registry> = (0..2u8)
            .map(|d| Registry::start(&rt, SocketAddr::from(([127, 0, 0, d + 1], 30100))))
            .collect();
        let mut members = Vec::new();
        for d in 0..2u8 {
            let ip = format!("127.0.0.{}", d + 1);
            let mut list = Vec::new();
            for k in 1..=3u16 {
                let node = format!("syncer0{}{k}", d + 1);
                let placement = args(&[
                    "--sc-addr",
                    &format!("http://{ip}:30100"),
                    "--bind-addr",
                    &format!("{ip}:30{k}90"),
                    "--rpc-addr",
                    &format!("{ip}:30{k}91"),
                    "--mode",
                    "cluster",
                    "--node",
                    &node,
                    "--cluster-port",
                    &format!("{}", 30200 + k),
                    "--join-addr",
                    "127.0.0.1:30190",
                ]);
                list.push(spawn_member(dir.path(), &node, &ip, &placement));
            }
            members.push(list);
        }
        Cluster {
            rt,
            dir,
            etcd: None,
            registries,
            members,
        }
    }

    /// Starts member `k` of data centre `d` again with its flags (after a kill).
    fn restart(&mut self, d: usize, k: usize) {
        let old = &self.members[d][k];
        let member = spawn_member(self.dir.path(), &old.name, &old.ip, &old.placement);
        self.members[d][k] = member;
    }

    /// Kills the active member of data centre `d` with SIGKILL and returns its index once a
    /// standby is active, with the time that took.
    fn kill_active(&mut self, d: usize) -> (usize, Duration) {
        let active = self.active(d);
        assert_eq!(
            active.len(),
            1,
            "one active member in dc{} before the kill",
            d + 1
        );
        let victim = active[0];
        if let Some(mut daemon) = self.members[d][victim].daemon.take() {
            daemon.signal("KILL");
            daemon.wait_exit();
        }
        let killed_at = Instant::now();
        self.wait_until("a standby to take over", TAKEOVER_DEADLINE, |c| {
            let now_active = c.active(d);
            now_active.len() == 1 && now_active[0] != victim
        });
        (victim, killed_at.elapsed())
    }

    /// `syncer_sync_active` of a running member (`None` when it does not answer).
    fn is_active(&self, member: &Member) -> Option<bool> {
        member.daemon.as_ref()?;
        let url = format!("http://{}/metrics", member.admin);
        let text = self.rt.block_on(async {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .build()
                .ok()?;
            client.get(&url).send().await.ok()?.text().await.ok()
        })?;
        let line = text
            .lines()
            .find(|l| l.starts_with("syncer_sync_active "))?;
        Some(line.ends_with(" 1"))
    }

    /// Indexes of the active members of data centre `d`.
    fn active(&self, d: usize) -> Vec<usize> {
        self.members[d]
            .iter()
            .enumerate()
            .filter(|(_, m)| self.is_active(m) == Some(true))
            .map(|(k, _)| k)
            .collect()
    }

    fn wait_until(
        &mut self,
        what: &str,
        deadline: Duration,
        mut check: impl FnMut(&Cluster) -> bool,
    ) {
        let until = Instant::now() + deadline;
        while !check(self) {
            if Instant::now() > until {
                self.fail(&format!("timed out after {deadline:?} waiting for {what}"));
            }
            std::thread::sleep(POLL);
        }
    }

    fn fail(&mut self, message: &str) -> ! {
        let mut out = String::new();
        for (d, registry) in self.registries.iter().enumerate() {
            out.push_str(&format!("==== dc{} registry\n", d + 1));
            for i in registry.list() {
                out.push_str(&format!("  {i}\n"));
            }
        }
        for list in &mut self.members {
            for m in list.iter_mut() {
                out.push_str(&format!("==== {} (admin {})\n", m.name, m.admin));
                if let Some(daemon) = m.daemon.as_mut() {
                    daemon.drain();
                    let seen = &daemon.seen;
                    for line in &seen[seen.len().saturating_sub(60)..] {
                        out.push_str(&format!("  {line}\n"));
                    }
                }
            }
        }
        if let Some(etcd) = &self.etcd {
            out.push_str(&format!("==== etcd\n{}\n", etcd.log()));
        }
        panic!("{message}\n{out}");
    }
}

/// Host name → number of copies of `origin` in `registry`.
fn copies_by_host(registry: &Registry, origin: &str) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for i in registry.copies() {
        if i.origin() == Some(origin) {
            *out.entry(i.host_name).or_default() += 1;
        }
    }
    out
}

/// Host names of the instances registered in `registry` itself.
fn local_hosts(registry: &Registry) -> BTreeSet<String> {
    registry.locals().into_iter().map(|i| i.host_name).collect()
}

/// Whether `to` holds exactly one copy of each local instance of `from` (`origin`) and
/// nothing else of it.
fn mirrored(from: &Registry, to: &Registry, origin: &str) -> bool {
    let want = local_hosts(from);
    let have = copies_by_host(to, origin);
    have.values().all(|n| *n == 1) && have.keys().cloned().collect::<BTreeSet<_>>() == want
}

#[test]
fn one_member_per_data_centre_is_active_and_a_standby_takes_over_without_loss() {
    let mut c = Cluster::start(3);
    c.wait_until("one active member per data centre", DEADLINE, |c| {
        c.active(0).len() == 1 && c.active(1).len() == 1
    });

    let s1 = c.registries[0].create_service("app", "svc-one", "1.0.0");
    let s2 = c.registries[1].create_service("app", "svc-two", "1.0.0");
    for n in 0..5 {
        c.registries[0].register(
            &s1,
            &NewInstance::new(&format!("one-{n}"), &format!("rest://10.1.0.{n}:80")),
        );
        c.registries[1].register(
            &s2,
            &NewInstance::new(&format!("two-{n}"), &format!("rest://10.2.0.{n}:80")),
        );
    }
    c.wait_until("both data centres mirrored", DEADLINE, |c| {
        mirrored(&c.registries[0], &c.registries[1], "dc1")
            && mirrored(&c.registries[1], &c.registries[0], "dc2")
    });
    let copy_ids = |r: &Registry| -> BTreeSet<String> {
        r.copies().into_iter().map(|i| i.instance_id).collect()
    };
    let before = (copy_ids(&c.registries[1]), copy_ids(&c.registries[0]));

    // Churn in dc1 while its active member dies.
    let stop = AtomicBool::new(false);
    let (killed_at, takeover) = std::thread::scope(|scope| {
        let registry = &c.registries[0];
        let stop = &stop;
        let s1 = &s1;
        let churn = scope.spawn(move || {
            let mut live: Vec<String> = Vec::new();
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                let id = registry.register(
                    s1,
                    &NewInstance::new(
                        &format!("churn-{n}"),
                        &format!("rest://10.9.{}.{}:80", n / 250, n % 250),
                    ),
                );
                live.push(id);
                if live.len() > 3 {
                    let old = live.remove(0);
                    registry.unregister(s1, &old);
                }
                n += 1;
                std::thread::sleep(Duration::from_millis(30));
            }
            n
        });
        std::thread::sleep(Duration::from_millis(500));
        let active = c.active(0);
        assert_eq!(active.len(), 1, "one active member in dc1 before the kill");
        let victim = active[0];
        if let Some(mut daemon) = c.members[0][victim].daemon.take() {
            daemon.signal("KILL");
            daemon.wait_exit();
        }
        let killed_at = Instant::now();
        let until = killed_at + TAKEOVER_DEADLINE;
        let takeover = loop {
            let now_active = c.active(0);
            if now_active.len() == 1 && now_active[0] != victim {
                break Some(killed_at.elapsed());
            }
            if Instant::now() > until {
                break None;
            }
            std::thread::sleep(POLL);
        };
        // Keep churning a little under the new leader.
        std::thread::sleep(Duration::from_millis(1000));
        stop.store(true, Ordering::SeqCst);
        let registered = churn.join().expect("churn thread");
        assert!(
            registered > 10,
            "the churn ran ({registered} registrations)"
        );
        (killed_at, takeover)
    });
    let Some(takeover) = takeover else {
        c.fail(&format!(
            "no standby of dc1 became active within {TAKEOVER_DEADLINE:?} after the kill"
        ));
    };
    eprintln!("takeover {takeover:?} after the kill at {killed_at:?}");

    c.wait_until(
        "every registry consistent after the failover (no duplicate, stale or missing copy)",
        DEADLINE,
        |c| {
            mirrored(&c.registries[0], &c.registries[1], "dc1")
                && mirrored(&c.registries[1], &c.registries[0], "dc2")
        },
    );
    // Copies made before the failover keep their ids: the new leader used the mappings.
    let after = (copy_ids(&c.registries[1]), copy_ids(&c.registries[0]));
    let lost: Vec<&String> = before.0.difference(&after.0).collect();
    if !lost.is_empty() {
        c.fail(&format!(
            "dc2 copies of dc1 replaced after the failover: {lost:?}"
        ));
    }
    if before.1 != after.1 {
        c.fail("dc1's copies of dc2 changed ids after the failover");
    }
    assert_eq!(c.active(1).len(), 1, "dc2 kept one active member");
}

#[test]
fn a_graceful_stop_hands_over_at_once_and_etcd_outages_pause_the_active_member() {
    let mut c = Cluster::start(2);
    c.wait_until("one active member per data centre", DEADLINE, |c| {
        c.active(0).len() == 1 && c.active(1).len() == 1
    });
    // SIGTERM resigns: the other member takes over well within a lease.
    let victim = c.active(0)[0];
    let started = Instant::now();
    if let Some(mut daemon) = c.members[0][victim].daemon.take() {
        daemon.signal("TERM");
        daemon.wait_exit();
    }
    c.wait_until("the other dc1 member active", TAKEOVER_DEADLINE, |c| {
        c.active(0) == vec![1 - victim]
    });
    eprintln!("graceful handover after {:?}", started.elapsed());

    // etcd down: nobody stays active; etcd back: exactly one member resumes.
    let etcd = c.etcd.as_mut().expect("a shared etcd");
    etcd.stop();
    c.wait_until("no active member while etcd is down", DEADLINE, |c| {
        c.active(0).is_empty() && c.active(1).is_empty()
    });
    c.etcd.as_mut().expect("a shared etcd").restart();
    c.wait_until("one active member per data centre again", DEADLINE, |c| {
        c.active(0).len() == 1 && c.active(1).len() == 1
    });
    let s = c.registries[0].create_service("app", "after-outage", "1.0.0");
    c.registries[0].register(&s, &NewInstance::new("late-0", "rest://10.3.0.1:80"));
    c.wait_until("syncing resumed", DEADLINE, |c| {
        mirrored(&c.registries[0], &c.registries[1], "dc1")
    });
}

/// The etcd cluster a managed member at `endpoint` belongs to: its id and its members as
/// (name, is learner), sorted.
fn etcd_cluster(
    rt: &tokio::runtime::Runtime,
    endpoint: &str,
) -> Option<(u64, Vec<(String, bool)>)> {
    rt.block_on(async {
        let options = etcd_client::ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_timeout(Duration::from_secs(2));
        let mut client = etcd_client::Client::connect([endpoint], Some(options))
            .await
            .ok()?;
        let list = client.member_list().await.ok()?;
        let id = list.header()?.cluster_id();
        let mut members: Vec<(String, bool)> = list
            .members()
            .iter()
            .map(|m| (m.name().to_owned(), m.is_learner()))
            .collect();
        members.sort();
        Some((id, members))
    })
}

#[test]
fn the_readme_cluster_command_lines_give_two_managed_clusters_that_survive_a_kill() {
    let mut c = Cluster::start_readme();
    // Bootstrap by the lowest name once three members meet, then two learners joined one at a
    // time (etcd wants 5 s between reconfigurations), then an election.
    c.wait_until(
        "one active member per data centre",
        Duration::from_secs(60),
        |c| c.active(0).len() == 1 && c.active(1).len() == 1,
    );
    // Each data centre has its own etcd cluster of its three syncers, all voters in the end,
    // on the client port derived from --cluster-port (30201 - 10000).
    let voters = |names: [&str; 3]| -> Vec<(String, bool)> {
        names.iter().map(|n| ((*n).to_owned(), false)).collect()
    };
    let mut ids = Vec::new();
    for (d, names) in [
        ["syncer011", "syncer012", "syncer013"],
        ["syncer021", "syncer022", "syncer023"],
    ]
    .into_iter()
    .enumerate()
    {
        for k in 1..=3 {
            let endpoint = format!("http://127.0.0.{}:2020{k}", d + 1);
            let mut id = 0;
            c.wait_until(
                &format!("etcd at {endpoint} to list {names:?} as voters"),
                Duration::from_secs(60),
                |c| match etcd_cluster(&c.rt, &endpoint) {
                    Some((cluster, members)) if members == voters(names) => {
                        id = cluster;
                        true
                    }
                    _ => false,
                },
            );
            ids.push((d, id));
        }
    }
    let cluster_of = |d: usize| -> Vec<u64> {
        let mut of_dc: Vec<u64> = ids
            .iter()
            .filter(|(i, _)| *i == d)
            .map(|(_, id)| *id)
            .collect();
        of_dc.dedup();
        of_dc
    };
    let (one, two) = (cluster_of(0), cluster_of(1));
    assert!(
        one.len() == 1 && two.len() == 1 && one != two,
        "one etcd cluster per data centre, each its own: {ids:?}"
    );

    let s1 = c.registries[0].create_service("app", "svc-one", "1.0.0");
    let s2 = c.registries[1].create_service("app", "svc-two", "1.0.0");
    c.registries[0].register(&s1, &NewInstance::new("one-0", "rest://10.1.0.1:80"));
    c.registries[1].register(&s2, &NewInstance::new("two-0", "rest://10.2.0.1:80"));
    let dc1 = derived_cluster_name(&c, 0);
    let dc2 = derived_cluster_name(&c, 1);
    assert_ne!(dc1, dc2, "two registries, two names");
    c.wait_until("both data centres mirrored", DEADLINE, |c| {
        mirrored(&c.registries[0], &c.registries[1], &dc1)
            && mirrored(&c.registries[1], &c.registries[0], &dc2)
    });

    // kill -9 of dc1's active syncer (its etcd member gets SIGTERM from the kernel): the two
    // others keep the quorum, a standby takes over and syncing goes on.
    let (victim, takeover) = c.kill_active(0);
    eprintln!("takeover {takeover:?} after the kill");
    let victim_name = c.members[0][victim].name.clone();
    c.wait_until("the killed syncer's etcd member to stop", DEADLINE, |_| {
        !etcd_member_runs(&victim_name)
    });
    c.registries[0].register(&s1, &NewInstance::new("one-1", "rest://10.1.0.2:80"));
    c.registries[1].register(&s2, &NewInstance::new("two-1", "rest://10.2.0.2:80"));
    c.wait_until("both data centres mirrored after the kill", DEADLINE, |c| {
        mirrored(&c.registries[0], &c.registries[1], &dc1)
            && mirrored(&c.registries[1], &c.registries[0], &dc2)
    });

    // The killed syncer comes back with the same command line: its etcd member restarts on
    // its data (a leftover etcd on its ports would stop it at start), it stands by, and the
    // cluster is three voters again.
    c.restart(0, victim);
    let endpoint = format!("http://127.0.0.1:2020{}", victim + 1);
    c.wait_until("the restarted member's etcd serves", DEADLINE, |c| {
        etcd_cluster(&c.rt, &endpoint)
            .is_some_and(|(_, members)| members == voters(["syncer011", "syncer012", "syncer013"]))
    });
    c.wait_until("the restarted member stands by", DEADLINE, |c| {
        c.is_active(&c.members[0][victim]) == Some(false) && c.active(0).len() == 1
    });
}

/// Whether an etcd process with member name `name` runs (from /proc).
fn etcd_member_runs(name: &str) -> bool {
    let needle = format!("--name={name}\0");
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries.filter_map(Result::ok).any(|entry| {
        std::fs::read(entry.path().join("cmdline")).is_ok_and(|cmdline| {
            let text = String::from_utf8_lossy(&cmdline);
            text.contains("etcd") && text.contains(&needle)
        })
    })
}

/// The name the members of data centre `d` derived from their registry's identity on their
/// first start (issue 21 item 6), saved in each data directory (`./syncer-data/<node>`): the
/// members of one data centre share a registry, so they agree.
fn derived_cluster_name(c: &Cluster, d: usize) -> String {
    let names: Vec<String> = c.members[d]
        .iter()
        .map(|m| {
            let path = c
                .dir
                .path()
                .join("syncer-data")
                .join(&m.name)
                .join("cluster-name");
            std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
                .trim()
                .to_owned()
        })
        .collect();
    assert!(
        names.iter().all(|n| *n == names[0]),
        "the members of one data centre derive one name: {names:?}"
    );
    names[0].clone()
}

#[test]
fn a_data_centre_of_one_cluster_member_runs_its_own_etcd_and_syncs() {
    let rt = runtime();
    let dir = work_dir();
    let registries: Vec<Registry> = (0..2)
        .map(|_| Registry::start(&rt, SocketAddr::from(([127, 0, 0, 1], 0))))
        .collect();
    let (peer, client) = (support::etcd::free_port(), support::etcd::free_port());
    let placement = args(&[
        "--mode",
        "cluster",
        "--cluster-size",
        "1",
        "--node",
        "solo",
        "--cluster-name",
        "dc1",
        "--sc-addr",
        &registries[0].url(),
        "--bind-addr",
        "127.0.0.1:0",
        "--rpc-addr",
        "127.0.0.1:0",
        "--cluster-port",
        &peer.to_string(),
        "--etcd-client-port",
        &client.to_string(),
    ]);
    let solo = spawn_member(dir.path(), "solo", "127.0.0.1", &placement);
    let single = args(&[
        "--node",
        "dc2-a",
        "--cluster-name",
        "dc2",
        "--sc-addr",
        &registries[1].url(),
        "--bind-addr",
        "127.0.0.2:0",
        "--rpc-addr",
        "127.0.0.2:0",
        "--join-addr",
        &solo.gossip,
    ]);
    let dc2 = spawn_member(dir.path(), "dc2-a", "127.0.0.2", &single);
    let mut c = Cluster {
        rt,
        dir,
        etcd: None,
        registries,
        members: vec![vec![solo], vec![dc2]],
    };
    c.wait_until("the only member active", DEADLINE, |c| {
        c.active(0) == vec![0]
    });
    let s1 = c.registries[0].create_service("app", "svc-solo", "1.0.0");
    c.registries[0].register(&s1, &NewInstance::new("solo-0", "rest://10.4.0.1:80"));
    c.wait_until("dc1 mirrored into dc2", DEADLINE, |c| {
        mirrored(&c.registries[0], &c.registries[1], "dc1")
    });
    let endpoint = format!("http://127.0.0.1:{client}");
    let Some((_, members)) = etcd_cluster(&c.rt, &endpoint) else {
        c.fail(&format!("no etcd member answers at {endpoint}"));
    };
    assert_eq!(members, vec![("solo".to_owned(), false)]);
}

/// The leader key of data centre `dc` in the shared etcd, as (value, lease, mod revision),
/// linearizably read; `None` when it does not exist.
fn leader_key(
    rt: &tokio::runtime::Runtime,
    endpoint: &str,
    dc: &str,
) -> Result<Option<(String, i64, i64)>, String> {
    rt.block_on(async {
        let mut client = etcd_client::Client::connect([endpoint], None)
            .await
            .map_err(|e| e.to_string())?;
        let reply = client
            .get(format!("/syncer/v2/{dc}/leader"), None)
            .await
            .map_err(|e| e.to_string())?;
        Ok(reply.kvs().first().map(|kv| {
            (
                String::from_utf8_lossy(kv.value()).into_owned(),
                kv.lease(),
                kv.mod_revision(),
            )
        }))
    })
}

/// The gossip status of member `name` as the syncer at `rpc` sees it (`syncer members`).
fn status_seen_by(rt: &tokio::runtime::Runtime, rpc: &str, name: &str) -> Option<String> {
    let members = rt
        .block_on(syncer::rpc::client::members(
            rpc,
            Duration::from_secs(2),
            None,
        ))
        .ok()?;
    members
        .into_iter()
        .find(|m| m.name == name)
        .map(|m| m.status)
}

/// The shutdown order, seen from outside: on SIGTERM the active member stops its engine, then
/// revokes its lease, then leaves the gossip pool. So a peer in the other data centre sees it
/// `left` only once the leader key is no longer its own, and its registry gets no write from
/// it after etcd reported the key deleted.
#[test]
fn a_graceful_stop_gives_up_the_lease_before_leaving_the_pool_and_writes_nothing_after() {
    let (mut c, taps) = Cluster::start_with(2, true);
    c.wait_until("one active member per data centre", DEADLINE, |c| {
        c.active(0).len() == 1 && c.active(1).len() == 1
    });
    // dc2's instances give dc1's active member registry writes to make (copies, heartbeats).
    let s2 = c.registries[1].create_service("app", "svc-two", "1.0.0");
    for n in 0..3 {
        c.registries[1].register(
            &s2,
            &NewInstance::new(&format!("two-{n}"), &format!("rest://10.2.0.{n}:80")),
        );
    }
    c.wait_until("dc2 mirrored into dc1", DEADLINE, |c| {
        mirrored(&c.registries[1], &c.registries[0], "dc2")
    });
    let victim = c.active(0)[0];
    let name = c.members[0][victim].name.clone();
    let tap = &taps[0][victim];
    c.wait_until(
        "the active dc1 member writes to its registry",
        DEADLINE,
        |_| tap.seen().iter().any(|s| s.is_write()),
    );
    let endpoint = c.etcd.as_ref().expect("a shared etcd").endpoint();
    let held = match leader_key(&c.rt, &endpoint, "dc1") {
        Ok(Some((holder, lease, revision))) if holder == name => (lease, revision),
        other => c.fail(&format!("dc1's leader key is not {name}'s: {other:?}")),
    };

    // Note when etcd reports the key deleted; the watch is set up before the signal.
    let revoked: std::sync::Arc<std::sync::Mutex<Option<Instant>>> = Default::default();
    let watch = {
        let (endpoint, revoked) = (endpoint.clone(), revoked.clone());
        let mut client =
            c.rt.block_on(etcd_client::Client::connect([endpoint.as_str()], None))
                .expect("connect to etcd");
        let options = etcd_client::WatchOptions::new().with_start_revision(held.1 + 1);
        let mut stream =
            c.rt.block_on(client.watch("/syncer/v2/dc1/leader", Some(options)))
                .expect("watch the leader key");
        c.rt.spawn(async move {
            let _client = client;
            while let Ok(Some(reply)) = stream.message().await {
                let gone = reply.events().iter().any(|e| {
                    e.event_type() == etcd_client::EventType::Delete
                        || e.kv().is_some_and(|kv| kv.lease() != held.0)
                });
                if gone {
                    *revoked.lock().unwrap() = Some(Instant::now());
                    return;
                }
            }
        })
    };

    let peer = c.members[1][c.active(1)[0]].rpc.clone();
    assert_eq!(
        status_seen_by(&c.rt, &peer, &name).as_deref(),
        Some("alive"),
        "the peer sees {name} alive before the signal"
    );
    let mut daemon = c.members[0][victim].daemon.take().expect("running");
    daemon.signal("TERM");
    // Poll the peer: the first moment it shows `left`, the leader key is not the victim's
    // any more (a linearizable read after the leave, which followed the revocation).
    let until = Instant::now() + DEADLINE;
    let left_at = loop {
        if status_seen_by(&c.rt, &peer, &name).as_deref() == Some("left") {
            let left_at = Instant::now();
            match leader_key(&c.rt, &endpoint, "dc1") {
                Ok(Some((_, lease, _))) if lease == held.0 => c.fail(&format!(
                    "the peer sees {name} left while its lease still holds the leader key"
                )),
                Ok(_) => break left_at,
                Err(e) => c.fail(&format!("cannot read the leader key: {e}")),
            }
        }
        if Instant::now() > until {
            c.fail(&format!(
                "the peer did not see {name} leave within {DEADLINE:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let status = daemon.wait_exit();
    assert!(status.success(), "exit {status:?}\n{}", daemon.log());
    c.wait_until("etcd to report the leader key deleted", DEADLINE, |_| {
        revoked.lock().unwrap().is_some()
    });
    let revoked_at = revoked.lock().unwrap().expect("noted");
    watch.abort();
    eprintln!(
        "lease revoked, then left after {:?}",
        left_at.saturating_duration_since(revoked_at)
    );

    // Nothing written after the revocation; the victim did write before it.
    let writes: Vec<_> = tap.seen().into_iter().filter(|s| s.is_write()).collect();
    let late: Vec<_> = writes.iter().filter(|s| s.at >= revoked_at).collect();
    assert!(
        late.is_empty(),
        "registry writes of {name} after its lease was revoked: {late:?}\n{}",
        daemon.log()
    );
    assert!(writes.iter().any(|s| s.at < revoked_at));
    // The victim's own log tells the same order.
    let log = daemon.log();
    let position = |needle: &str| {
        log.find(needle)
            .unwrap_or_else(|| panic!("no {needle:?} in the log:\n{log}"))
    };
    assert!(
        position("resigned: leadership released") < position("left the gossip pool"),
        "{log}"
    );
    c.wait_until("the other dc1 member active", TAKEOVER_DEADLINE, |c| {
        c.active(0) == vec![1 - victim]
    });
}

/// Giving the lease up is bounded even while etcd does not answer, a renewal being under way
/// when the member resigns: the shutdown step that waits for it ends after
/// `TERM_STOP_BOUND`, and a keeper still trying to revoke then would let the member leave the
/// pool with its lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resigning_while_etcd_hangs_gives_the_lease_up_within_its_bound() {
    use syncer::cluster::leader::{Election, RELEASE_TIMEOUT};
    use tokio_util::sync::CancellationToken;
    use tokio_util::task::TaskTracker;

    let etcd = EtcdServer::start();
    let connection = syncer::store::EtcdConnection::connect(
        vec![etcd.endpoint()],
        None,
        syncer::store::EtcdTimeouts::default(),
    )
    .await
    .expect("connect to etcd");
    let lease = Duration::from_secs(6);
    let election = Election::new(connection, "/syncer/v2/resign/", "n1".into(), lease);
    let tracker = TaskTracker::new();
    let term = election
        .acquire(&CancellationToken::new(), &tracker)
        .await
        .expect("elected");
    etcd.pause();
    // The keeper renews every third of the lease: past that, a renewal waits for the frozen
    // etcd (the gate still open: it closes a sixth of the lease before expiry).
    tokio::time::sleep(lease / 3 + Duration::from_millis(500)).await;
    assert!(term.gate.is_open());
    let resigned = Instant::now();
    term.resign();
    let released = tokio::time::timeout(DEADLINE, term.released.cancelled()).await;
    let took = resigned.elapsed();
    etcd.resume();
    assert!(released.is_ok(), "the lease was not given up");
    assert!(!term.gate.is_open(), "the gate closes on resignation");
    assert!(
        took < RELEASE_TIMEOUT + Duration::from_millis(700),
        "giving the lease up took {took:?}, more than its bound {RELEASE_TIMEOUT:?}"
    );
    tracker.close();
    tracker.wait().await;
}

/// Issue 21, item 2: etcd grants leases in whole seconds, so a `--leader-lease` with a
/// fraction is refused at start with a message that says why and what to give instead
/// (with `--check`, which would otherwise print the settings and exit 0).
#[test]
fn a_leader_lease_that_is_not_whole_seconds_is_refused_at_start() {
    let dir = work_dir();
    let mut cmd = syncer(dir.path());
    cmd.args([
        "daemon",
        "--mode",
        "cluster",
        "--node",
        "a",
        "--etcd-endpoints",
        "http://127.0.0.1:1",
        "--bind-addr",
        "127.0.0.1:0",
        "--rpc-addr",
        "127.0.0.1:0",
        "--leader-lease",
        "2999ms",
    ])
    .env("SYNCER_CHECK", "1");
    let out = support::run(cmd);
    assert_eq!(out.code, Some(2), "{}{}", out.stdout, out.stderr);
    for needle in ["--leader-lease", "2999ms", "whole seconds", "3s"] {
        assert!(
            out.stderr.contains(needle),
            "{:?} lacks {needle:?}",
            out.stderr
        );
    }
}

/// The members of the etcd cluster at `endpoint` as (name, is learner, peer URLs, client
/// URLs), sorted, read over TLS with `tls`; `None` when it cannot be read.
#[allow(clippy::type_complexity)]
fn etcd_members_tls(
    rt: &tokio::runtime::Runtime,
    endpoint: &str,
    tls: Option<&syncer::store::EtcdTls>,
) -> Option<Vec<(String, bool, Vec<String>, Vec<String>)>> {
    rt.block_on(async {
        let mut options = etcd_client::ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_timeout(Duration::from_secs(2));
        if let Some(tls) = tls {
            options = options.with_tls(tls.options());
        }
        let read = async {
            let mut client = etcd_client::Client::connect([endpoint], Some(options))
                .await
                .ok()?;
            let list = client.member_list().await.ok()?;
            let mut members: Vec<_> = list
                .members()
                .iter()
                .map(|m| {
                    (
                        m.name().to_owned(),
                        m.is_learner(),
                        m.peer_urls().to_vec(),
                        m.client_urls().to_vec(),
                    )
                })
                .collect();
            members.sort();
            Some(members)
        };
        tokio::time::timeout(Duration::from_secs(5), read)
            .await
            .ok()
            .flatten()
    })
}

/// The keys under `prefix` at `endpoint`, read over TLS with `tls`; `None` when they
/// cannot be read.
fn etcd_keys(
    rt: &tokio::runtime::Runtime,
    endpoint: &str,
    tls: Option<&syncer::store::EtcdTls>,
    prefix: &str,
) -> Option<Vec<String>> {
    rt.block_on(async {
        let mut options = etcd_client::ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_timeout(Duration::from_secs(2));
        if let Some(tls) = tls {
            options = options.with_tls(tls.options());
        }
        let read = async {
            let mut client = etcd_client::Client::connect([endpoint], Some(options))
                .await
                .ok()?;
            let reply = client
                .get(prefix, Some(etcd_client::GetOptions::new().with_prefix()))
                .await
                .ok()?;
            Some(
                reply
                    .kvs()
                    .iter()
                    .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
                    .collect(),
            )
        };
        tokio::time::timeout(Duration::from_secs(5), read)
            .await
            .ok()
            .flatten()
    })
}

/// Issue 17 item 3: a data centre of three cluster members with `--tls-*` runs its managed
/// etcd cluster over TLS (client and peer URLs `https://`, client certificates demanded),
/// elects one active member and syncs with a TLS syncer of another data centre. A
/// plain-text client, or a TLS client without a certificate, cannot read its keys.
#[test]
fn a_tls_data_centre_runs_its_managed_etcd_over_tls_and_syncs() {
    use syncer::cli::dev_certs;
    use syncer::store::EtcdTls;
    use syncer::store::etcd_tls::NODE_FLAGS;

    let rt = runtime();
    let dir = work_dir();
    // One certificate for every syncer: it names both data centres' IPs, which the rpc link
    // dials and etcd checks its peers' addresses against.
    let pki = dir.path().join("pki");
    let certs = dev_certs::generate(&["127.0.0.1".into(), "127.0.0.2".into()])
        .expect("generate certificates");
    dev_certs::write(&pki, &certs).expect("write certificates");
    let file = |name: &str| pki.join(name).display().to_string();
    let tls_flags = args(&[
        "--tls-cert",
        &file(dev_certs::NODE_CERT),
        "--tls-key",
        &file(dev_certs::NODE_KEY),
        "--tls-ca",
        &file(dev_certs::CA_CERT),
    ]);
    let registries: Vec<Registry> = (0..2)
        .map(|_| Registry::start(&rt, SocketAddr::from(([127, 0, 0, 1], 0))))
        .collect();

    let mut dc1 = Vec::new();
    let mut client_ports = Vec::new();
    let mut first_gossip: Option<String> = None;
    for k in 0..3 {
        let node = format!("dc1-{}", char::from(b'a' + k));
        let (peer, client) = (support::etcd::free_port(), support::etcd::free_port());
        client_ports.push(client);
        let mut placement = args(&["--mode", "cluster", "--node", &node]);
        placement.extend(args(&[
            "--cluster-name",
            "dc1",
            "--sc-addr",
            &registries[0].url(),
        ]));
        placement.extend(args(&[
            "--bind-addr",
            "127.0.0.1:0",
            "--rpc-addr",
            "127.0.0.1:0",
        ]));
        placement.extend(args(&["--cluster-port", &peer.to_string()]));
        placement.extend(args(&["--etcd-client-port", &client.to_string()]));
        placement.extend(args(&[
            "--data-dir",
            &dir.path().join(&node).display().to_string(),
        ]));
        placement.extend(tls_flags.iter().cloned());
        if let Some(join) = &first_gossip {
            placement.extend(args(&["--join-addr", join]));
        }
        let member = spawn_member(dir.path(), &node, "127.0.0.1", &placement);
        first_gossip.get_or_insert_with(|| member.gossip.clone());
        dc1.push(member);
    }
    let mut single = args(&["--node", "dc2-a", "--cluster-name", "dc2"]);
    single.extend(args(&["--sc-addr", &registries[1].url()]));
    single.extend(args(&[
        "--bind-addr",
        "127.0.0.2:0",
        "--rpc-addr",
        "127.0.0.2:0",
    ]));
    single.extend(args(&[
        "--join-addr",
        first_gossip.as_deref().unwrap_or_default(),
    ]));
    single.extend(args(&[
        "--data-dir",
        &dir.path().join("dc2-a").display().to_string(),
    ]));
    single.extend(tls_flags.iter().cloned());
    let dc2 = spawn_member(dir.path(), "dc2-a", "127.0.0.2", &single);
    let mut c = Cluster {
        rt,
        dir,
        etcd: None,
        registries,
        members: vec![dc1, vec![dc2]],
    };

    // Bootstrap, two learners joined one at a time (etcd wants 5 s between
    // reconfigurations), then an election: all over TLS.
    c.wait_until("one active member in dc1", Duration::from_secs(60), |c| {
        c.active(0).len() == 1
    });
    let tls = EtcdTls::load(
        Some(&pki.join(dev_certs::CA_CERT)),
        Some((
            &pki.join(dev_certs::NODE_CERT),
            &pki.join(dev_certs::NODE_KEY),
        )),
        NODE_FLAGS,
    )
    .expect("load the TLS files");
    let endpoint = format!("https://127.0.0.1:{}", client_ports[0]);
    let mut members = Vec::new();
    c.wait_until("three voters in dc1's etcd", DEADLINE, |c| {
        members = etcd_members_tls(&c.rt, &endpoint, Some(&tls)).unwrap_or_default();
        members.len() == 3 && members.iter().all(|m| !m.1)
    });
    let names: Vec<&str> = members.iter().map(|m| m.0.as_str()).collect();
    assert_eq!(names, ["dc1-a", "dc1-b", "dc1-c"]);
    for (name, _, peer_urls, client_urls) in &members {
        assert!(!peer_urls.is_empty() && !client_urls.is_empty(), "{name}");
        for url in peer_urls.iter().chain(client_urls) {
            assert!(url.starts_with("https://"), "{name} has {url}");
        }
    }

    let s1 = c.registries[0].create_service("app", "svc-one", "1.0.0");
    let s2 = c.registries[1].create_service("app", "svc-two", "1.0.0");
    c.registries[0].register(&s1, &NewInstance::new("one-0", "rest://10.1.0.1:80"));
    c.registries[1].register(&s2, &NewInstance::new("two-0", "rest://10.2.0.1:80"));
    c.wait_until("both data centres mirrored over TLS", DEADLINE, |c| {
        mirrored(&c.registries[0], &c.registries[1], "dc1")
            && mirrored(&c.registries[1], &c.registries[0], "dc2")
    });

    // The mapping store is in dc1's etcd: readable with the certificate ...
    let prefix = "/syncer/v2/dc1/";
    let keys = etcd_keys(&c.rt, &endpoint, Some(&tls), prefix).unwrap_or_default();
    assert!(
        keys.iter()
            .any(|k| k.starts_with("/syncer/v2/dc1/mappings/")),
        "the mapping of dc2's instance is stored: {keys:?}"
    );
    // ... but not in plain text on the same port, nor over TLS without a certificate.
    let plain = format!("http://127.0.0.1:{}", client_ports[0]);
    assert_eq!(etcd_keys(&c.rt, &plain, None, prefix), None);
    assert_eq!(etcd_members_tls(&c.rt, &plain, None), None);
    let ca_only =
        EtcdTls::load(Some(&pki.join(dev_certs::CA_CERT)), None, NODE_FLAGS).expect("load the CA");
    assert_eq!(etcd_keys(&c.rt, &endpoint, Some(&ca_only), prefix), None);
}

/// `syncer status` and `syncer mappings` asked through a standby: the standby answers with
/// its role and what it knows (its registry answers; no store, export or imports of its
/// own), and the active member of each data centre is asked too; `mappings` through the
/// standby is answered by its data centre's active member.
#[test]
fn status_and_mappings_through_a_standby() {
    let mut c = Cluster::start(2);
    c.wait_until("one active member per data centre", DEADLINE, |c| {
        c.active(0).len() == 1 && c.active(1).len() == 1
    });
    let service = c.registries[0].create_service("app", "svc-one", "1.0.0");
    c.registries[0].register(&service, &NewInstance::new("one-0", "rest://10.1.0.1:80"));
    c.wait_until("dc1 mirrored into dc2", DEADLINE, |c| {
        mirrored(&c.registries[0], &c.registries[1], "dc1")
    });
    let active = c.active(1)[0];
    let standby = &c.members[1][1 - active];
    let (standby_name, active_name) = (standby.name.clone(), c.members[1][active].name.clone());
    let rpc = standby.rpc.clone();
    let status = |rpc: &str| {
        let mut cmd = syncer(Path::new("."));
        cmd.args(["status", "--rpc-addr", rpc, "--format", "json"]);
        support::run(cmd)
    };
    let mut report = serde_json::Value::Null;
    c.wait_until("status through the standby", DEADLINE, |_| {
        let out = status(&rpc);
        report = serde_json::from_str(&out.stdout).unwrap_or_default();
        let member = |name: &str| {
            report["members"]
                .as_array()
                .and_then(|ms| ms.iter().find(|m| m["name"] == name))
                .cloned()
                .unwrap_or_default()
        };
        let (s, a) = (member(&standby_name), member(&active_name));
        out.code == Some(0)
            && s["role"] == "standby"
            && s["engine"]
                .as_str()
                .is_some_and(|e| e.starts_with("standby"))
            && s["registry"]["ok"] == true
            && s["export"].is_null()
            && s["origins"] == serde_json::json!([])
            && a["role"] == "active"
            && a["origins"].as_array().is_some_and(|os| {
                os.iter()
                    .any(|o| o["origin"] == "dc1" && o["copies"] == 1 && o["behind"] == 0)
            })
            && report["members"].as_array().map(Vec::len) == Some(3)
    });
    let mut cmd = syncer(Path::new("."));
    cmd.args(["mappings", "--rpc-addr", &rpc, "--format", "json"]);
    let out = support::run(cmd);
    let rows: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_default();
    let copies: Vec<String> = c.registries[1]
        .copies()
        .into_iter()
        .map(|i| i.instance_id)
        .collect();
    let listed: Vec<String> = rows
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["state"] == "present" && r["origin"] == "dc1")
        .filter_map(|r| r["copy_instance_id"].as_str().map(str::to_owned))
        .collect();
    if out.code != Some(0) || listed != copies {
        c.fail(&format!(
            "mappings through the standby: {}{} against {copies:?}\nstatus: {report:#}",
            out.stdout, out.stderr
        ));
    }
}

//! Cluster mode end to end: two data centres of three `syncer daemon --mode cluster`
//! processes each, sharing one real etcd (`--etcd-endpoints`, each data centre under its own
//! prefix), next to in-process dev registries. Exactly one member per data centre is active
//! (`syncer_sync_active`); killing it with SIGKILL under register/unregister churn hands over
//! to a standby, and every registry ends consistent: nothing missing, nothing stale, no
//! duplicate, and the copies made before the failover keep their ids (no mapping lost).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use support::etcd::EtcdServer;
use support::sync::{FAST, NewInstance, POLL, Registry};
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
}

struct Cluster {
    rt: tokio::runtime::Runtime,
    /// Holds the members' data directories until the test ends.
    _dir: tempfile::TempDir,
    etcd: EtcdServer,
    registries: Vec<Registry>,
    /// Members of dc1 then dc2.
    members: Vec<Vec<Member>>,
}

fn spawn_member(
    dir: &Path,
    dc: &str,
    node: &str,
    ip: &str,
    registry: &str,
    etcd: &str,
    join: Option<&str>,
) -> Member {
    let data = dir.join(node);
    let mut cmd = syncer(dir);
    cmd.arg("daemon")
        .args(["--mode", "cluster", "--node", node, "--cluster-name", dc])
        .args(["--sc-addr", registry])
        .args(["--bind-addr", &format!("{ip}:0")])
        .args(["--rpc-addr", &format!("{ip}:0")])
        .args(["--admin-addr", &format!("{ip}:0")])
        .args(["--etcd-endpoints", etcd, "--leader-lease", LEADER_LEASE])
        .arg("--data-dir")
        .arg(&data)
        .args(FAST)
        .args(["--log-format", "json", "--log-level", "info"]);
    if let Some(join) = join {
        cmd.args(["--join-addr", join]);
    }
    let mut daemon = Daemon::spawn(cmd);
    let ready = daemon.wait_ready();
    let field = |key: &str| ready[key].as_str().unwrap_or_default().to_owned();
    Member {
        name: node.to_owned(),
        gossip: field("gossip_addr"),
        admin: field("admin_addr"),
        daemon: Some(daemon),
    }
}

impl Cluster {
    fn start(per_dc: usize) -> Cluster {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let dir = tempfile::Builder::new()
            .prefix("syncer-cluster-")
            .tempdir()
            .expect("temp dir");
        let etcd = EtcdServer::start();
        let registries: Vec<Registry> = (0..2)
            .map(|_| Registry::start(&rt, SocketAddr::from(([127, 0, 0, 1], 0))))
            .collect();
        let mut members: Vec<Vec<Member>> = Vec::new();
        let mut first_gossip: Option<String> = None;
        for (d, registry) in registries.iter().enumerate() {
            let dc = format!("dc{}", d + 1);
            let ip = format!("127.0.0.{}", d + 1);
            let mut list = Vec::new();
            for k in 0..per_dc {
                let node = format!("{dc}-{}", char::from(b'a' + k as u8));
                let member = spawn_member(
                    dir.path(),
                    &dc,
                    &node,
                    &ip,
                    &registry.url(),
                    &etcd.endpoint(),
                    first_gossip.as_deref(),
                );
                first_gossip.get_or_insert_with(|| member.gossip.clone());
                list.push(member);
            }
            members.push(list);
        }
        Cluster {
            rt,
            _dir: dir,
            etcd,
            registries,
            members,
        }
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
        out.push_str(&format!("==== etcd\n{}\n", self.etcd.log()));
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
    c.etcd.stop();
    c.wait_until("no active member while etcd is down", DEADLINE, |c| {
        c.active(0).is_empty() && c.active(1).is_empty()
    });
    c.etcd.restart();
    c.wait_until("one active member per data centre again", DEADLINE, |c| {
        c.active(0).len() == 1 && c.active(1).len() == 1
    });
    let s = c.registries[0].create_service("app", "after-outage", "1.0.0");
    c.registries[0].register(&s, &NewInstance::new("late-0", "rest://10.3.0.1:80"));
    c.wait_until("syncing resumed", DEADLINE, |c| {
        mirrored(&c.registries[0], &c.registries[1], "dc1")
    });
}

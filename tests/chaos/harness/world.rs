//! The processes of the chaos world and their proxies.
//!
//! - Data centre 1 runs in cluster mode: three syncers, each with its managed etcd member;
//!   exactly one of them is active.
//! - Data centre 2 is one syncer keeping its mapping table in an etcd server of its own.
//! - Every further data centre is one syncer with the embedded store; the last one keeps its
//!   data directory on a small tmpfs when the machine allows (the full-disk fault).
//!
//! Each data centre has a dev registry (Service Center's API), and an empty twin of it that
//! the registry proxy serves while the registry "restarts". A syncer reaches its registry
//! through a proxy, and is reached by the other syncers through a proxy (gossip UDP and rpc
//! TCP) whose address it advertises.

use std::fs::{File, OpenOptions};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::net::{BLANK_HOST, ETCD_HOST, Net, REGISTRY_HOST};
use super::proxy::{self, Knob};

pub const REGISTRY_PORT: u16 = 30100;
pub const GOSSIP_PORT: u16 = 30190;
pub const RPC_PORT: u16 = 30191;
pub const ADMIN_PORT: u16 = 30193;
const PEER_PORT: u16 = 30201;
const ETCD_PORT: u16 = 2379;
const ETCD_PEER_PORT: u16 = 2380;
/// Size of the tmpfs that holds the last data centre's data directory.
const TMPFS_SIZE: &str = "16m";

/// One process the harness starts, kills and starts again.
pub struct Proc {
    pub name: String,
    pub dc: usize,
    program: PathBuf,
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
    /// Exits the harness caused (kills) are not reported.
    pub stopped_on_purpose: bool,
}

impl Proc {
    fn new(name: &str, dc: usize, program: &Path, args: Vec<String>, dir: &Path) -> Proc {
        Proc {
            name: name.to_owned(),
            dc,
            program: program.to_owned(),
            args,
            log: dir.join(format!("{name}.log")),
            child: None,
            stopped_on_purpose: false,
        }
    }

    pub fn start(&mut self, net: &Net) -> Result<(), String> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| format!("open {}: {e}", self.log.display()))?;
        let err = log
            .try_clone()
            .map_err(|e| format!("open {}: {e}", self.log.display()))?;
        let mut cmd = net.command(self.dc, &self.program);
        cmd.args(&self.args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err));
        let child = cmd
            .spawn()
            .map_err(|e| format!("start {}: {e}", self.name))?;
        self.child = Some(child);
        self.stopped_on_purpose = false;
        Ok(())
    }

    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().and_then(|c| i32::try_from(c.id()).ok())
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        self.stopped_on_purpose = true;
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// `Some(status)` when the process ended without the harness asking.
    pub fn unexpected_exit(&mut self) -> Option<String> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => {
                self.child = None;
                if self.stopped_on_purpose {
                    None
                } else {
                    Some(format!("{} exited on its own: {status}", self.name))
                }
            }
            _ => None,
        }
    }

    /// The last `lines` lines of the process's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One syncer, its proxies and its addresses.
pub struct Syncer {
    pub dc: usize,
    pub proc: Proc,
    pub admin: SocketAddr,
    /// The address other syncers use for rpc (its proxy).
    pub rpc_front: SocketAddr,
    /// The proxy in front of its gossip and rpc ports.
    pub knob: Arc<Knob>,
}

pub struct Layout {
    pub dcs: usize,
    pub cluster_dc: Option<usize>,
    pub etcd_dc: Option<usize>,
    pub tmpfs_dc: Option<usize>,
}

impl Layout {
    pub fn new(dcs: usize) -> Layout {
        Layout {
            dcs,
            cluster_dc: Some(1),
            etcd_dc: (dcs >= 2).then_some(2),
            tmpfs_dc: (dcs >= 3).then_some(dcs),
        }
    }

    pub fn members(&self, dc: usize) -> u8 {
        if self.cluster_dc == Some(dc) { 3 } else { 1 }
    }
}

pub struct World {
    pub net: Net,
    pub layout: Layout,
    pub registries: Vec<Proc>,
    /// Per data centre: an empty registry the proxy serves while the real one "restarts".
    pub blanks: Vec<Proc>,
    /// Per data centre (index dc - 1): the proxy between its syncers and its registry.
    pub registry_knobs: Vec<Arc<Knob>>,
    pub syncers: Vec<Syncer>,
    pub etcd: Option<Proc>,
    pub tmpfs: Option<PathBuf>,
    stop: CancellationToken,
}

impl World {
    pub fn registry_url(&self, dc: usize) -> String {
        format!("http://{}:{REGISTRY_PORT}", self.net.ip(dc, REGISTRY_HOST))
    }

    pub fn dc_name(dc: usize) -> String {
        format!("dc{dc}")
    }

    /// Builds the network, starts the registries, etcd and the proxies; the syncers are
    /// prepared but not started.
    pub async fn build(
        layout: Layout,
        want_netns: bool,
        dir: &Path,
        syncer_bin: &Path,
        etcd_bin: &Path,
    ) -> Result<World, String> {
        let net = Net::setup(layout.dcs, want_netns)?;
        let stop = CancellationToken::new();
        let cuts = (!net.is_netns()).then(|| net.cuts.clone());
        let mut registries = Vec::new();
        let mut blanks = Vec::new();
        let mut registry_knobs = Vec::new();
        for dc in 1..=layout.dcs {
            let listen = SocketAddr::new(net.ip(dc, REGISTRY_HOST), REGISTRY_PORT);
            let mut registry = Proc::new(
                &format!("registry-dc{dc}"),
                dc,
                syncer_bin,
                vec!["dev-registry".into(), "--listen".into(), listen.to_string()],
                dir,
            );
            registry.start(&net)?;
            registries.push(registry);
            // The same registry's empty twin, served while it "restarts" (see the fault).
            let blank_addr = SocketAddr::new(net.ip(dc, BLANK_HOST), REGISTRY_PORT);
            let mut blank = Proc::new(
                &format!("registry-dc{dc}-restarting"),
                dc,
                syncer_bin,
                vec![
                    "dev-registry".into(),
                    "--listen".into(),
                    blank_addr.to_string(),
                ],
                dir,
            );
            blank.start(&net)?;
            blanks.push(blank);
            let knob = Knob::new(dc, None);
            let front = SocketAddr::new(net.proxy_ip(dc, REGISTRY_HOST), REGISTRY_PORT);
            proxy::tcp(front, listen, Some(blank_addr), knob.clone(), stop.clone()).await?;
            registry_knobs.push(knob);
        }
        let etcd = match layout.etcd_dc {
            Some(dc) => {
                let ip = net.ip(dc, ETCD_HOST);
                let client = format!("http://{ip}:{ETCD_PORT}");
                let peer = format!("http://{ip}:{ETCD_PEER_PORT}");
                let mut etcd = Proc::new(
                    &format!("etcd-dc{dc}"),
                    dc,
                    etcd_bin,
                    vec![
                        "--name".into(),
                        format!("dc{dc}"),
                        "--data-dir".into(),
                        dir.join(format!("etcd-dc{dc}")).display().to_string(),
                        "--listen-client-urls".into(),
                        client.clone(),
                        "--advertise-client-urls".into(),
                        client,
                        "--listen-peer-urls".into(),
                        peer.clone(),
                        "--initial-advertise-peer-urls".into(),
                        peer.clone(),
                        "--initial-cluster".into(),
                        format!("dc{dc}={peer}"),
                    ],
                    dir,
                );
                etcd.start(&net)?;
                Some(etcd)
            }
            None => None,
        };
        let mut tmpfs = None;
        let mut syncers = Vec::new();
        for dc in 1..=layout.dcs {
            for k in 1..=layout.members(dc) {
                let node = format!("dc{dc}-s{k}");
                let data_dir = dir.join(&node);
                std::fs::create_dir_all(&data_dir)
                    .map_err(|e| format!("create {}: {e}", data_dir.display()))?;
                if layout.tmpfs_dc == Some(dc) && net.is_netns() && mount_tmpfs(&data_dir) {
                    tmpfs = Some(data_dir.clone());
                }
                let ip = net.ip(dc, k);
                let front_ip = net.proxy_ip(dc, k);
                let joins: Vec<String> = [(1, 1), (2.min(layout.dcs), 1)]
                    .iter()
                    .map(|&(d, h)| format!("{}:{GOSSIP_PORT}", net.proxy_ip(d, h)))
                    .collect();
                let mut args: Vec<String> = vec![
                    "daemon".into(),
                    "--sc-addr".into(),
                    format!("http://{}:{REGISTRY_PORT}", net.proxy_ip(dc, REGISTRY_HOST)),
                    "--bind-addr".into(),
                    format!("{ip}:{GOSSIP_PORT}"),
                    "--rpc-addr".into(),
                    format!("{ip}:{RPC_PORT}"),
                    "--advertise-addr".into(),
                    front_ip.to_string(),
                    "--admin-addr".into(),
                    format!("{ip}:{ADMIN_PORT}"),
                    "--data-dir".into(),
                    data_dir.display().to_string(),
                    "--cluster-name".into(),
                    World::dc_name(dc),
                    "--join-addr".into(),
                    joins.join(","),
                    "--log-format".into(),
                    "json".into(),
                    "--log-level".into(),
                    "info".into(),
                ];
                if layout.cluster_dc == Some(dc) {
                    args.extend([
                        "--mode".into(),
                        "cluster".into(),
                        "--node".into(),
                        node.clone(),
                        "--peer-addr".into(),
                        format!("{ip}:{PEER_PORT}"),
                        "--etcd-bin".into(),
                        etcd_bin.display().to_string(),
                    ]);
                } else {
                    args.extend(["--node".into(), node.clone()]);
                }
                if layout.etcd_dc == Some(dc) {
                    args.extend([
                        "--etcd-endpoints".into(),
                        format!("http://{}:{ETCD_PORT}", net.ip(dc, ETCD_HOST)),
                    ]);
                }
                let knob = Knob::new(dc, (!net.is_netns()).then(|| net.cuts.clone()));
                proxy::udp(
                    SocketAddr::new(front_ip, GOSSIP_PORT),
                    SocketAddr::new(ip, GOSSIP_PORT),
                    knob.clone(),
                    stop.clone(),
                )
                .await?;
                let rpc_front = SocketAddr::new(front_ip, RPC_PORT);
                proxy::tcp(
                    rpc_front,
                    SocketAddr::new(ip, RPC_PORT),
                    None,
                    knob.clone(),
                    stop.clone(),
                )
                .await?;
                syncers.push(Syncer {
                    dc,
                    proc: Proc::new(&node, dc, syncer_bin, args, dir),
                    admin: SocketAddr::new(ip, ADMIN_PORT),
                    rpc_front,
                    knob,
                });
            }
        }
        let _ = cuts;
        Ok(World {
            net,
            layout,
            registries,
            blanks,
            registry_knobs,
            syncers,
            etcd,
            tmpfs,
            stop,
        })
    }

    pub fn start_syncers(&mut self) -> Result<(), String> {
        for s in &mut self.syncers {
            s.proc.start(&self.net)?;
        }
        Ok(())
    }

    /// The syncers of data centre `dc` (indexes into `syncers`).
    pub fn syncers_of(&self, dc: usize) -> Vec<usize> {
        (0..self.syncers.len())
            .filter(|&i| self.syncers[i].dc == dc)
            .collect()
    }

    /// The managed etcd members of the cluster data centre: the `etcd` children of its
    /// running syncers.
    pub fn managed_etcd_pids(&self) -> Vec<i32> {
        let Some(dc) = self.layout.cluster_dc else {
            return Vec::new();
        };
        self.syncers_of(dc)
            .into_iter()
            .filter_map(|i| self.syncers[i].proc.pid())
            .flat_map(children)
            .collect()
    }
}

impl Drop for World {
    fn drop(&mut self) {
        self.stop.cancel();
        self.syncers.clear();
        self.etcd = None;
        self.registries.clear();
        self.blanks.clear();
        if let Some(dir) = &self.tmpfs {
            let _ = std::process::Command::new("umount").arg(dir).status();
        }
    }
}

/// Mounts a small tmpfs on `dir` (root only); whether it worked.
fn mount_tmpfs(dir: &Path) -> bool {
    std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={TMPFS_SIZE}"), "tmpfs"])
        .arg(dir)
        .status()
        .is_ok_and(|s| s.success())
}

/// Fills the file system of `dir` with a file `fill` until it is full.
pub fn fill_disk(dir: &Path) -> Result<u64, String> {
    use std::io::Write;
    let path = dir.join("chaos-fill");
    let mut file = File::create(&path).map_err(|e| format!("create {}: {e}", path.display()))?;
    let block = vec![0u8; 64 * 1024];
    let mut written = 0u64;
    loop {
        match file.write(&block) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(_) => break,
        }
    }
    let _ = file.sync_all();
    Ok(written)
}

pub fn free_disk(dir: &Path) {
    let _ = std::fs::remove_file(dir.join("chaos-fill"));
}

/// Direct children of `pid` (from /proc): those of every thread, since the runtime's worker
/// threads start them.
fn children(pid: i32) -> Vec<i32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .flat_map(|task| {
            std::fs::read_to_string(task.path().join("children"))
                .unwrap_or_default()
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<i32>>()
        })
        .collect()
}

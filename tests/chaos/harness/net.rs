//! Where each process of the chaos world lives on the network, and how links between data
//! centres are cut.
//!
//! Two modes:
//! - **Network namespaces** (root and `ip netns` available): data centre `d` is the namespace
//!   `chaos<run>d<d>`, joined to a bridge in the root namespace by a veth pair. Its processes
//!   listen on `172.30.<d>.<k>`; the fault proxies (in the harness, in the root namespace)
//!   listen on `172.31.<d>.<k>`, addresses of the bridge. A cut between two data centres is
//!   made in the kernel: blackhole routes in the sender's namespace for the other's two
//!   subnets, so their packets are dropped whatever the program does. The harness's own path
//!   (registry reads, churn, `syncer diff`) and each data centre's path to its own registry
//!   stay up.
//! - **Loopback** (fallback): everything on `127.30.<d>.<k>` and `127.31.<d>.<k>`; cuts are
//!   made by the proxies, which drop what comes from the cut side.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::sync::{Arc, Mutex, PoisonError};

/// Host part of a data centre's registry address.
pub const REGISTRY_HOST: u8 = 10;
/// Host part of the empty registry served while a data centre's registry restarts.
pub const BLANK_HOST: u8 = 11;
/// Host part of a data centre's etcd server address (the standalone data centre with etcd).
pub const ETCD_HOST: u8 = 20;

/// The directed links that are cut: `(from, to)` drops what `from` sends to `to`.
#[derive(Default)]
pub struct Cuts(Mutex<HashSet<(usize, usize)>>);

impl Cuts {
    pub fn is_cut(&self, from: usize, to: usize) -> bool {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&(from, to))
    }

    fn set(&self, from: usize, to: usize, cut: bool) {
        let mut cuts = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if cut {
            cuts.insert((from, to));
        } else {
            cuts.remove(&(from, to));
        }
    }
}

pub struct Net {
    /// `Some(run)` in namespace mode: the suffix of every namespace and link name.
    netns: Option<String>,
    dcs: usize,
    /// Cuts the proxies enforce (loopback mode only; namespace mode cuts in the kernel).
    pub cuts: Arc<Cuts>,
}

impl Net {
    /// Namespaces when `want_netns` and the machine allows them (root, `ip netns`), else
    /// loopback. Leftovers of an earlier run with the same id are removed first.
    pub fn setup(dcs: usize, want_netns: bool) -> Result<Net, String> {
        let cuts = Arc::new(Cuts::default());
        if !want_netns {
            return Ok(Net {
                netns: None,
                dcs,
                cuts,
            });
        }
        let run = format!("{}", std::process::id() % 100_000);
        let net = Net {
            netns: Some(run),
            dcs,
            cuts,
        };
        if let Some(other) = remove_leftovers() {
            return Err(format!(
                "another chaos run (process {other}) is using the chaos network (172.30.0.0/15); one run at a time"
            ));
        }
        net.teardown();
        net.build()?;
        Ok(net)
    }

    /// Whether the machine can run the namespace mode: root and a working `ip netns`.
    pub fn netns_available() -> bool {
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        root && Command::new("ip")
            .args(["netns", "list"])
            .output()
            .is_ok_and(|o| o.status.success())
    }

    pub fn is_netns(&self) -> bool {
        self.netns.is_some()
    }

    pub fn mode(&self) -> &'static str {
        if self.is_netns() {
            "network namespaces (cuts in the kernel)"
        } else {
            "loopback (cuts in the proxies)"
        }
    }

    fn run(&self) -> &str {
        self.netns.as_deref().unwrap_or("")
    }

    pub fn namespace(&self, dc: usize) -> Option<String> {
        self.netns.as_ref().map(|run| format!("chaos{run}d{dc}"))
    }

    fn bridge(&self) -> String {
        format!("chbr{}", self.run())
    }

    fn veth(&self, dc: usize) -> (String, String) {
        (
            format!("chv{}d{dc}", self.run()),
            format!("chp{}d{dc}", self.run()),
        )
    }

    /// Where process `host` of data centre `dc` listens.
    pub fn ip(&self, dc: usize, host: u8) -> IpAddr {
        let first = if self.is_netns() { 172 } else { 127 };
        IpAddr::V4(Ipv4Addr::new(first, 30, dc_octet(dc), host))
    }

    /// Where the proxy in front of process `host` of data centre `dc` listens.
    pub fn proxy_ip(&self, dc: usize, host: u8) -> IpAddr {
        let first = if self.is_netns() { 172 } else { 127 };
        IpAddr::V4(Ipv4Addr::new(first, 31, dc_octet(dc), host))
    }

    /// The data centre an address belongs to (a process or a proxy of it).
    pub fn dc_of(ip: IpAddr) -> Option<usize> {
        match ip {
            IpAddr::V4(v4) => {
                let [first, second, third, _] = v4.octets();
                ((first == 172 || first == 127) && (second == 30 || second == 31) && third > 0)
                    .then_some(usize::from(third))
            }
            IpAddr::V6(_) => None,
        }
    }

    /// A command run inside data centre `dc` (in its namespace in that mode).
    pub fn command(&self, dc: usize, program: &std::path::Path) -> Command {
        match self.namespace(dc) {
            Some(ns) => {
                let mut cmd = Command::new("ip");
                cmd.args(["netns", "exec", &ns]).arg(program);
                cmd
            }
            None => Command::new(program),
        }
    }

    fn build(&self) -> Result<(), String> {
        let bridge = self.bridge();
        ip(&["link", "add", &bridge, "type", "bridge"])?;
        ip(&["link", "set", &bridge, "up"])?;
        ip(&["addr", "add", "172.31.255.254/15", "dev", &bridge])?;
        for dc in 1..=self.dcs {
            let ns = self.namespace(dc).unwrap_or_default();
            let (outside, inside) = self.veth(dc);
            ip(&["netns", "add", &ns])?;
            ip(&[
                "link", "add", &outside, "type", "veth", "peer", "name", &inside,
            ])?;
            ip(&["link", "set", &inside, "netns", &ns])?;
            ip(&["link", "set", &outside, "master", &bridge])?;
            ip(&["link", "set", &outside, "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            ip(&["-n", &ns, "link", "set", &inside, "up"])?;
            for host in [1, 2, 3, REGISTRY_HOST, BLANK_HOST, ETCD_HOST] {
                let addr = format!("{}/15", self.ip(dc, host));
                ip(&["-n", &ns, "addr", "add", &addr, "dev", &inside])?;
                let proxy = format!("{}/15", self.proxy_ip(dc, host));
                ip(&["addr", "add", &proxy, "dev", &bridge])?;
            }
        }
        Ok(())
    }

    /// Removes the namespaces and the bridge (deleting a namespace deletes its veth pair).
    pub fn teardown(&self) {
        if !self.is_netns() {
            return;
        }
        for dc in 1..=self.dcs {
            if let Some(ns) = self.namespace(dc) {
                let _ = ip(&["netns", "del", &ns]);
            }
            let _ = ip(&["link", "del", &self.veth(dc).0]);
        }
        let _ = ip(&["link", "del", &self.bridge()]);
    }

    /// Cuts (or heals) what `from` sends to `to`.
    pub fn set_cut(&self, from: usize, to: usize, cut: bool) -> Result<(), String> {
        self.cuts.set(from, to, cut);
        let Some(ns) = self.namespace(from) else {
            return Ok(());
        };
        let verb = if cut { "add" } else { "del" };
        for second in [30, 31] {
            let subnet = format!("172.{second}.{}.0/24", dc_octet(to));
            ip(&["-n", &ns, "route", verb, "blackhole", &subnet])?;
        }
        Ok(())
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.teardown();
    }
}

fn dc_octet(dc: usize) -> u8 {
    u8::try_from(dc).unwrap_or(u8::MAX)
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Removes namespaces and bridges of earlier runs whose process is gone (a run killed before
/// it could clean up), so their addresses do not clash with this run's. Returns the process
/// of a run that is still going, if any.
fn remove_leftovers() -> Option<String> {
    let mut running = None;
    let alive = |run: &str| std::path::Path::new(&format!("/proc/{run}")).exists();
    let listed = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    for name in listed.split_whitespace() {
        if let Some(run) = name.strip_prefix("chaos").and_then(|r| r.split('d').next()) {
            if alive(run) {
                running = Some(run.to_owned());
            } else {
                let _ = ip(&["netns", "del", name]);
            }
        }
    }
    let links = Command::new("ip")
        .args(["-o", "link", "show", "type", "bridge"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    for line in links.lines() {
        let Some(name) = line
            .split(": ")
            .nth(1)
            .map(|n| n.split('@').next().unwrap_or(n))
        else {
            continue;
        };
        if let Some(run) = name.strip_prefix("chbr")
            && !alive(run)
        {
            let _ = ip(&["link", "del", name]);
        }
    }
    running
}

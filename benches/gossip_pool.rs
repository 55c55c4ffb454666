//! The gossip pool at 50 members on loopback UDP (127.0.0.1), one process, real sockets:
//! 1. convergence: 50 members started together, each joining through the first one, until
//!    every member lists all 50 as alive;
//! 2. failure detection: a member crashes (its runtime is dropped, so it says nothing and its
//!    socket closes), until every other member has reported it down; several rounds;
//! 3. graceful leave: a member stops normally, until every other member reports it left.
//!
//! Run with `cargo bench --bench gossip_pool [-- --profile lan|wan|local --members N
//! --rounds R]`; docs/PERFORMANCE.md records the figures. Figures are wall-clock times.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use syncer::gossip::{
    self, GossipConfig, GossipHandle, GossipMetrics, MemberStatus, MembershipEvent, NodeId,
    NodeMeta, Profile,
};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A member running on its own single-threaded runtime and thread, so that dropping the
/// runtime is a crash.
struct Member {
    name: String,
    addr: SocketAddr,
    handle: GossipHandle,
    /// Ends the member: `true` leaves gracefully, `false` crashes it.
    stop: Option<tokio::sync::oneshot::Sender<bool>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Member {
    fn stop(&mut self, graceful: bool) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(graceful);
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn start_member(i: usize, profile: Profile, join: Option<SocketAddr>) -> Member {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let socket = runtime
        .block_on(UdpSocket::bind("127.0.0.1:0"))
        .expect("bind");
    let addr = socket.local_addr().expect("local addr");
    let name = format!("bench{i:02}");
    let mut meta = NodeMeta::new(format!("dc{}", i % 3), addr, "single");
    meta.protocol = 1;
    let config = GossipConfig {
        identity: NodeId {
            name: name.clone(),
            addr,
            generation: 1,
            bump: 0,
            meta,
        },
        label: String::new(),
        profile,
        join: join.map(|a| vec![a.to_string()]).unwrap_or_default(),
        state_file: None,
        remembered: Vec::new(),
        previous_generation: None,
        resolver: None,
        seed: None,
        keyring: None,
    };
    let token = CancellationToken::new();
    let tracker = TaskTracker::new();
    let handle = {
        let _guard = runtime.enter();
        gossip::spawn(
            config,
            Arc::new(socket),
            GossipMetrics::default(),
            token.clone(),
            &tracker,
        )
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<bool>();
    let thread = std::thread::spawn(move || {
        runtime.block_on(async {
            if stopped.await.unwrap_or(false) {
                token.cancel();
                tracker.close();
                tracker.wait().await;
            }
        });
        // Dropping the runtime aborts whatever still runs: after a crash, the actor.
        drop(runtime);
    });
    Member {
        name,
        addr,
        handle,
        stop: Some(stop),
        thread: Some(thread),
    }
}

fn alive(member: &Member, rt: &tokio::runtime::Runtime) -> usize {
    rt.block_on(member.handle.members())
        .map(|ms| {
            ms.iter()
                .filter(|m| m.status == MemberStatus::Alive)
                .count()
        })
        .unwrap_or(0)
}

/// Waits until every member in `watchers` has sent a membership event about `name` that
/// `wanted` accepts; returns the time until the last one did.
fn wait_events(
    rt: &tokio::runtime::Runtime,
    watchers: Vec<tokio::sync::broadcast::Receiver<MembershipEvent>>,
    name: &str,
    wanted: fn(&MembershipEvent) -> Option<&str>,
    started: Instant,
    limit: Duration,
) -> Option<(Duration, Duration)> {
    let mut first: Option<Duration> = None;
    let mut last = Duration::ZERO;
    for mut rx in watchers {
        let outcome = rt.block_on(async {
            tokio::time::timeout(limit, async {
                loop {
                    match rx.recv().await {
                        Ok(event) if wanted(&event) == Some(name) => return true,
                        Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                        Err(_) => return false,
                    }
                }
            })
            .await
        });
        if outcome != Ok(true) {
            return None;
        }
        let t = started.elapsed();
        first = Some(first.map_or(t, |f| f.min(t)));
        last = last.max(t);
    }
    Some((first.unwrap_or_default(), last))
}

fn down(event: &MembershipEvent) -> Option<&str> {
    match event {
        MembershipEvent::Down(m) => Some(m.id.name.as_str()),
        _ => None,
    }
}

fn left(event: &MembershipEvent) -> Option<&str> {
    match event {
        MembershipEvent::Left(m) => Some(m.id.name.as_str()),
        _ => None,
    }
}

fn stats(label: &str, samples: &mut [Duration]) {
    samples.sort();
    if samples.is_empty() {
        println!("{label}: no samples");
        return;
    }
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{label}: n={} min {:.0} ms, median {:.0} ms, max {:.0} ms",
        samples.len(),
        ms(samples[0]),
        ms(samples[samples.len() / 2]),
        ms(samples[samples.len() - 1])
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let profile = arg("--profile")
        .and_then(|p| Profile::parse(&p))
        .unwrap_or(Profile::Lan);
    let members: usize = arg("--members").and_then(|n| n.parse().ok()).unwrap_or(50);
    let rounds: usize = arg("--rounds").and_then(|n| n.parse().ok()).unwrap_or(5);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "gossip pool: {members} members, profile {}, loopback UDP",
        profile.as_str()
    );

    // 1. Convergence.
    let started = Instant::now();
    let mut pool = vec![start_member(0, profile, None)];
    let seed = pool[0].addr;
    for i in 1..members {
        pool.push(start_member(i, profile, Some(seed)));
    }
    let deadline = Duration::from_secs(120);
    for member in &pool {
        while alive(member, &rt) < members {
            assert!(started.elapsed() < deadline, "no convergence");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    println!(
        "convergence: all {members} members see {members} alive after {:.0} ms",
        started.elapsed().as_secs_f64() * 1000.0
    );

    // 2. Failure detection: crash the last member, `rounds` times.
    let mut seen_by_first = Vec::new();
    let mut seen_by_all = Vec::new();
    for _ in 0..rounds {
        let mut victim = pool.pop().expect("a member");
        let watchers: Vec<_> = pool.iter().map(|m| m.handle.subscribe()).collect();
        let crashed = Instant::now();
        // The runtime is dropped: no leave is sent, the socket closes.
        victim.stop(false);
        match wait_events(
            &rt,
            watchers,
            &victim.name,
            down,
            crashed,
            Duration::from_secs(60),
        ) {
            Some((first, all)) => {
                seen_by_first.push(first);
                seen_by_all.push(all);
            }
            None => println!("round: {} was not reported down by everyone", victim.name),
        }
    }
    stats("crash seen down by the first member", &mut seen_by_first);
    stats(
        &format!(
            "crash seen down by all other members ({} down to {})",
            members - 1,
            pool.len()
        ),
        &mut seen_by_all,
    );

    // 3. Graceful leave, `rounds` times.
    let mut left_by_all = Vec::new();
    for _ in 0..rounds {
        let mut leaver = pool.pop().expect("a member");
        let name = leaver.name.clone();
        let watchers: Vec<_> = pool.iter().map(|m| m.handle.subscribe()).collect();
        let stopped = Instant::now();
        let stopper = std::thread::spawn(move || leaver.stop(true));
        if let Some((_, all)) =
            wait_events(&rt, watchers, &name, left, stopped, Duration::from_secs(30))
        {
            left_by_all.push(all);
        }
        let _ = stopper.join();
    }
    stats(
        "graceful leave seen as left by all others",
        &mut left_by_all,
    );
    for member in &mut pool {
        member.stop(false);
    }
}

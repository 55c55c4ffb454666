//! Signals and the ordered stop.
//!
//! SIGINT or SIGTERM cancels the root token, which starts a graceful shutdown; a second signal
//! exits at once with status 130. The node does not hang its subsystems under that token: each
//! step of the stop has its own [`Stage`] (token, tracker, deadline), and [`stop_in_order`]
//! cancels them one after the other, so that peers see calls refused before the engine stops,
//! the lease given up before the member leaves the pool, and etcd stopped last.

use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

/// Exit status after a second signal: 128 + SIGINT, as shells report an interrupted program.
pub const FORCED_EXIT_CODE: i32 = 130;

/// Waits for SIGINT or SIGTERM; returns the signal's name, or `None` when signals cannot be
/// received.
async fn next_signal() -> Option<&'static str> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            return None;
        };
        tokio::select! {
            _ = term.recv() => Some("SIGTERM"),
            _ = int.recv() => Some("SIGINT"),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await.ok().map(|()| "ctrl-c")
    }
}

/// Spawns the signal watcher: the first signal cancels `root`, the second exits the process.
pub fn spawn_signal_handler(root: CancellationToken) {
    tokio::spawn(async move {
        let Some(first) = next_signal().await else {
            warn!("cannot listen for signals; stop the daemon with SIGKILL");
            return;
        };
        info!(
            signal = first,
            "shutting down gracefully; send the signal again to exit at once"
        );
        root.cancel();
        if let Some(second) = next_signal().await {
            warn!(signal = second, "second signal, exiting now");
            std::process::exit(FORCED_EXIT_CODE);
        }
    });
}

/// One step of the ordered stop: a token that tells its tasks to stop, the tracker they run
/// on, and how long they may take.
#[derive(Debug)]
pub struct Stage {
    /// For the logs: what this step stops.
    pub name: &'static str,
    /// Cancelled when the step begins; nothing else cancels it.
    pub token: CancellationToken,
    /// The step's tasks; the step ends when every one of them has ended.
    pub tasks: TaskTracker,
    /// How long the step may take before the next one begins anyway.
    pub deadline: Duration,
}

impl Stage {
    /// A step with a fresh token and tracker.
    pub fn new(name: &'static str, deadline: Duration) -> Stage {
        Stage {
            name,
            token: CancellationToken::new(),
            tasks: TaskTracker::new(),
            deadline,
        }
    }
}

/// Runs `stages` one after the other: cancel the step's token, wait for its tasks, at most
/// its own deadline and at most what is left of `budget`. A step that overruns is logged and
/// the next one begins anyway, so that a stuck engine cannot keep the node in the pool.
///
/// Returns `false` when tasks were still running at the end of the budget.
pub async fn stop_in_order(stages: &[Stage], budget: Duration) -> bool {
    let until = Instant::now() + budget;
    let mut all_ended = true;
    for stage in stages {
        let started = Instant::now();
        stage.token.cancel();
        stage.tasks.close();
        let deadline = (started + stage.deadline).min(until);
        if tokio::time::timeout_at(deadline, stage.tasks.wait())
            .await
            .is_err()
        {
            all_ended = false;
            warn!(
                stage = stage.name,
                deadline = ?stage.deadline,
                tasks = stage.tasks.len(),
                "shutdown step overran its deadline; going on with the next one"
            );
        } else {
            debug!(stage = stage.name, took = ?started.elapsed(), "shutdown step done");
        }
    }
    // A step that overran may still end within the budget.
    if !all_ended {
        let late = stages.iter().map(|s| s.tasks.wait());
        all_ended = tokio::time::timeout_at(until, futures::future::join_all(late))
            .await
            .is_ok();
    }
    all_ended
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A task of `stage` that notes when it saw its token and ends after `takes`.
    fn task(stage: &Stage, log: &Arc<Mutex<Vec<String>>>, takes: Duration) {
        let (token, log, name) = (stage.token.clone(), log.clone(), stage.name);
        stage.tasks.spawn(async move {
            token.cancelled().await;
            log.lock().unwrap().push(format!("{name} begins"));
            tokio::time::sleep(takes).await;
            log.lock().unwrap().push(format!("{name} ends"));
        });
    }

    #[tokio::test(start_paused = true)]
    async fn steps_run_one_after_the_other() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let stages = [
            Stage::new("rpc", Duration::from_secs(4)),
            Stage::new("engine", Duration::from_secs(5)),
            Stage::new("gossip", Duration::from_secs(2)),
        ];
        task(&stages[0], &log, Duration::from_secs(1));
        task(&stages[1], &log, Duration::from_secs(3));
        task(&stages[2], &log, Duration::from_millis(50));
        let started = Instant::now();
        assert!(stop_in_order(&stages, Duration::from_secs(10)).await);
        assert_eq!(
            *log.lock().unwrap(),
            [
                "rpc begins",
                "rpc ends",
                "engine begins",
                "engine ends",
                "gossip begins",
                "gossip ends"
            ]
        );
        assert_eq!(started.elapsed(), Duration::from_millis(4050));
    }

    #[tokio::test(start_paused = true)]
    async fn an_overrunning_step_does_not_hold_the_next_ones() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let stages = [
            Stage::new("engine", Duration::from_secs(2)),
            Stage::new("gossip", Duration::from_secs(2)),
        ];
        task(&stages[0], &log, Duration::from_secs(60));
        task(&stages[1], &log, Duration::from_millis(50));
        let started = Instant::now();
        assert!(!stop_in_order(&stages, Duration::from_secs(10)).await);
        assert_eq!(
            *log.lock().unwrap(),
            ["engine begins", "gossip begins", "gossip ends"]
        );
        assert_eq!(
            started.elapsed(),
            Duration::from_secs(10),
            "the whole budget"
        );
    }
}

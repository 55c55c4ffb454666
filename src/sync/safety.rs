//! Guards against deleting on partial knowledge.
//!
//! - After a start, copies of an origin are not removed until a complete snapshot from that
//!   origin has been applied (the snapshot's completion marker arrived and its digest matched).
//! - Removals per origin are capped per minute: one bad snapshot or a half-started peer can
//!   never wipe a data centre. Removals over the cap wait (they are retried as the window
//!   moves), and the pause is reported so the engine can log it loudly and count it.
//!
//! Pure bookkeeping: the caller passes the time, so tests need no clock.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

/// Length of the removal window.
pub const REMOVAL_WINDOW: Duration = Duration::from_secs(60);

/// The answer to a request to remove `n` copies of one origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removals {
    /// No complete snapshot from this origin yet: remove nothing.
    Incomplete,
    /// A new leader waits out the previous one's lease before removing anything: retry
    /// after this moment.
    Held(Instant),
    /// Remove this many now; `paused` more must wait for the window to move.
    Allowed { now: usize, paused: usize },
}

#[derive(Debug, Default)]
struct OriginGuard {
    complete: bool,
    /// When the removals of the last window happened.
    recent: VecDeque<Instant>,
}

/// Removal bookkeeping for every origin.
#[derive(Debug)]
pub struct RemovalGuard {
    per_minute: usize,
    origins: HashMap<String, OriginGuard>,
    /// No removal before this moment.
    not_before: Option<Instant>,
}

impl RemovalGuard {
    /// At most `per_minute` removals per origin in any 60 s window.
    pub fn new(per_minute: usize) -> RemovalGuard {
        RemovalGuard {
            per_minute,
            origins: HashMap::new(),
            not_before: None,
        }
    }

    /// Holds every removal until `t` (a new leader waiting out its predecessor's lease).
    pub fn hold_until(&mut self, t: Instant) {
        self.not_before = Some(t);
    }

    /// `n` removals of `origin` that were allowed did not happen (they failed and will be
    /// asked for again): they no longer count against the cap.
    pub fn refund(&mut self, origin: &str, n: usize) {
        if let Some(guard) = self.origins.get_mut(origin) {
            for _ in 0..n {
                guard.recent.pop_back();
            }
        }
    }

    /// A complete snapshot from `origin` was applied: its removals may start.
    pub fn mark_complete(&mut self, origin: &str) {
        self.origins.entry(origin.to_owned()).or_default().complete = true;
    }

    /// Forget the completeness of `origin` (its epoch changed: a new snapshot is needed).
    pub fn mark_incomplete(&mut self, origin: &str) {
        if let Some(guard) = self.origins.get_mut(origin) {
            guard.complete = false;
        }
    }

    pub fn is_complete(&self, origin: &str) -> bool {
        self.origins.get(origin).is_some_and(|g| g.complete)
    }

    /// Asks to remove `n` copies of `origin` at `now`; what is allowed is counted as done.
    pub fn request(&mut self, origin: &str, n: usize, now: Instant) -> Removals {
        let per_minute = self.per_minute;
        let guard = self.origins.entry(origin.to_owned()).or_default();
        if !guard.complete {
            return Removals::Incomplete;
        }
        if let Some(t) = self.not_before
            && now < t
        {
            return Removals::Held(t);
        }
        while guard
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= REMOVAL_WINDOW)
        {
            guard.recent.pop_front();
        }
        let room = per_minute.saturating_sub(guard.recent.len());
        let allowed = n.min(room);
        guard.recent.extend(std::iter::repeat_n(now, allowed));
        Removals::Allowed {
            now: allowed,
            paused: n - allowed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_removed_before_a_complete_snapshot() {
        let mut guard = RemovalGuard::new(10);
        let now = Instant::now();
        assert_eq!(guard.request("dc1", 3, now), Removals::Incomplete);
        guard.mark_complete("dc1");
        assert_eq!(
            guard.request("dc1", 3, now),
            Removals::Allowed { now: 3, paused: 0 }
        );
        guard.mark_incomplete("dc1");
        assert!(!guard.is_complete("dc1"));
        assert_eq!(guard.request("dc1", 1, now), Removals::Incomplete);
        assert_eq!(guard.request("dc2", 1, now), Removals::Incomplete);
    }

    #[test]
    fn a_new_leader_removes_nothing_before_the_hold_ends() {
        let mut guard = RemovalGuard::new(10);
        let now = Instant::now();
        let until = now + Duration::from_secs(3);
        guard.hold_until(until);
        guard.mark_complete("dc1");
        assert_eq!(guard.request("dc1", 2, now), Removals::Held(until));
        assert_eq!(
            guard.request("dc1", 2, until),
            Removals::Allowed { now: 2, paused: 0 }
        );
    }

    #[test]
    fn removals_are_capped_per_origin_per_minute() {
        let mut guard = RemovalGuard::new(100);
        let start = Instant::now();
        guard.mark_complete("dc1");
        guard.mark_complete("dc2");
        assert_eq!(
            guard.request("dc1", 150, start),
            Removals::Allowed {
                now: 100,
                paused: 50
            }
        );
        assert_eq!(
            guard.request("dc2", 5, start),
            Removals::Allowed { now: 5, paused: 0 },
            "origins have their own budget"
        );
        let later = start + Duration::from_secs(30);
        assert_eq!(
            guard.request("dc1", 50, later),
            Removals::Allowed { now: 0, paused: 50 }
        );
        let next_window = start + REMOVAL_WINDOW;
        assert_eq!(
            guard.request("dc1", 50, next_window),
            Removals::Allowed { now: 50, paused: 0 }
        );
    }
}

//! Which of a registry's addresses calls go to: the nodes of one registry cluster, preferred
//! first. Every adapter with several addresses routes the same way: calls start with the
//! current address; a failure there moves the route on to the next one; after
//! `failback_after` away, calls start with the preferred address again (and a failure there
//! moves on anew). Read and written without awaiting, behind a std mutex.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// The route over `len` addresses.
#[derive(Debug)]
pub(crate) struct AddressRoute {
    len: usize,
    failback_after: Duration,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// Index of the address calls start with.
    current: usize,
    /// When the route last moved away from an address because of a failure.
    moved_at: Option<Instant>,
}

impl AddressRoute {
    /// A route over `len` addresses that returns to the first `failback_after` after it
    /// moved away.
    pub(crate) fn new(len: usize, failback_after: Duration) -> AddressRoute {
        AddressRoute {
            len,
            failback_after,
            state: Mutex::new(State {
                current: 0,
                moved_at: None,
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The index calls start with at `now`.
    pub(crate) fn start(&self, now: Instant) -> usize {
        let mut state = self.state();
        if state.current != 0
            && state
                .moved_at
                .is_some_and(|at| now.duration_since(at) >= self.failback_after)
        {
            // Time to try the preferred address again; a failure there moves on anew.
            state.current = 0;
        }
        state.current
    }

    /// A call to address `index` was answered: calls start there.
    pub(crate) fn succeeded(&self, index: usize) {
        let mut state = self.state();
        state.current = index;
        if index == 0 {
            state.moved_at = None;
        }
    }

    /// A call to address `index` failed at `now`. Returns whether the route moved on to the
    /// next address (a failover, for the adapter's metrics): it does when calls started at
    /// `index` and there is another address.
    pub(crate) fn failed(&self, index: usize, now: Instant) -> bool {
        let mut state = self.state();
        if state.current == index && self.len > 1 {
            state.current = (index + 1) % self.len;
            state.moved_at = Some(now);
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fails_over_and_back() {
        let route = AddressRoute::new(3, Duration::from_secs(5));
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(route.start(t0), 0);
        assert!(route.failed(0, t0));
        assert!(route.failed(1, t0));
        assert!(!route.failed(0, t0), "not where calls start: no move");
        assert_eq!(route.start(t0), 2);
        route.succeeded(2);
        assert_eq!(route.start(at(4)), 2);
        assert_eq!(route.start(at(6)), 0, "back to the preferred address");
        assert!(route.failed(0, at(6)));
        assert_eq!(route.start(at(7)), 1, "a failed return moves on again");
        route.succeeded(1);
        assert_eq!(
            route.start(at(10)),
            1,
            "the back-off counts from the last move"
        );
        assert_eq!(route.start(at(11)), 0);
        route.succeeded(0);
        assert_eq!(route.start(at(100)), 0);
    }

    #[test]
    fn one_address_never_moves() {
        let route = AddressRoute::new(1, Duration::from_secs(5));
        let t0 = Instant::now();
        assert!(!route.failed(0, t0));
        assert_eq!(route.start(t0), 0);
    }
}

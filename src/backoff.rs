//! One retry policy for every loop that waits for something to come back (a registry, etcd,
//! a peer, a child process): exponential back-off between a floor and a ceiling, reset after
//! a success, and a sleep that ends early when the task is cancelled.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Exponential back-off: the first pause is `min`, each next one doubles up to `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// A back-off starting at `min` and never longer than `max` (`max` below `min` is `min`).
    pub const fn new(min: Duration, max: Duration) -> Backoff {
        let max = if max.as_nanos() < min.as_nanos() {
            min
        } else {
            max
        };
        Backoff {
            min,
            max,
            next: min,
        }
    }

    /// The pause the next [`Backoff::pause`] or [`Backoff::wait`] will take (for logs:
    /// "retry in ...").
    pub fn peek(&self) -> Duration {
        self.next
    }

    /// Takes the next pause and doubles the one after it.
    pub fn pause(&mut self) -> Duration {
        let pause = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        pause
    }

    /// Back to the first pause (after a success).
    pub fn reset(&mut self) {
        self.next = self.min;
    }

    /// Sleeps the next pause; `false` when `token` was cancelled first.
    pub async fn wait(&mut self, token: &CancellationToken) -> bool {
        let pause = self.pause();
        sleep_or_cancel(pause, token).await
    }
}

/// Sleeps `pause`; `false` when `token` was cancelled first.
pub async fn sleep_or_cancel(pause: Duration, token: &CancellationToken) -> bool {
    tokio::select! {
        () = token.cancelled() => false,
        () = tokio::time::sleep(pause) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_ceiling_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let pauses: Vec<_> = (0..4).map(|_| b.pause().as_millis()).collect();
        assert_eq!(pauses, [100, 200, 350, 350]);
        b.reset();
        assert_eq!(b.peek(), Duration::from_millis(100));
    }

    #[test]
    fn a_ceiling_below_the_floor_is_the_floor() {
        let mut b = Backoff::new(Duration::from_secs(2), Duration::from_secs(1));
        assert_eq!(b.pause(), Duration::from_secs(2));
        assert_eq!(b.pause(), Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn wait_ends_early_on_cancellation() {
        let token = CancellationToken::new();
        let mut b = Backoff::new(Duration::from_secs(60), Duration::from_secs(60));
        assert!(b.wait(&token).await);
        token.cancel();
        let started = tokio::time::Instant::now();
        assert!(!b.wait(&token).await);
        assert_eq!(started.elapsed(), Duration::ZERO);
    }
}

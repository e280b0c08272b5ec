//! Reconnect pacing: after a failed connect, wait (doubling, capped) before dialing again,
//! so a dead service is not hammered by every call. Calls made while waiting fail fast.

use std::time::{Duration, Instant};

/// Default first delay after a failed connect.
pub const DEFAULT_BACKOFF_BASE: Duration = Duration::from_millis(100);
/// Default longest delay between connect attempts.
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub(crate) struct Backoff {
    base: Duration,
    max: Duration,
    failures: u32,
    retry_at: Option<Instant>,
    last_error: String,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max,
            failures: 0,
            retry_at: None,
            last_error: String::new(),
        }
    }

    /// `Some((wait, last error))` while dialing must not be attempted yet.
    pub fn blocked(&self, now: Instant) -> Option<(Duration, &str)> {
        let at = self.retry_at?;
        (at > now).then(|| (at - now, self.last_error.as_str()))
    }

    pub fn failed(&mut self, now: Instant, error: String) {
        if self.base.is_zero() {
            return;
        }
        let shift = self.failures.min(16);
        let delay = self.base.saturating_mul(1 << shift).min(self.max);
        self.failures = self.failures.saturating_add(1);
        self.retry_at = Some(now + delay);
        self.last_error = error;
    }

    pub fn succeeded(&mut self) {
        self.failures = 0;
        self.retry_at = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_resets() {
        let t0 = Instant::now();
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        assert!(b.blocked(t0).is_none());
        let delays: Vec<_> = (0..4)
            .map(|_| {
                b.failed(t0, "refused".into());
                b.blocked(t0).unwrap().0
            })
            .collect();
        assert_eq!(delays, [100, 200, 350, 350].map(Duration::from_millis));
        assert_eq!(b.blocked(t0).unwrap().1, "refused");
        assert!(b.blocked(t0 + Duration::from_millis(351)).is_none());
        b.succeeded();
        assert!(b.blocked(t0).is_none());
    }

    #[test]
    fn zero_base_disables() {
        let mut b = Backoff::new(Duration::ZERO, Duration::from_secs(1));
        b.failed(Instant::now(), "x".into());
        assert!(b.blocked(Instant::now()).is_none());
    }
}

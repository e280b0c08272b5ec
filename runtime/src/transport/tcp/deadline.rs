//! A connection's read deadline (incomplete frame, idle), kept in tokio's timer lazily.
//!
//! Under load most reads end in the middle of a frame, so the deadline moves with almost
//! every read. A fresh `sleep_until` per read registers a timer each time, and tokio
//! wakes its driver (an `eventfd` write, and an extra turn of the event loop) whenever a
//! timer is registered while no earlier one is pending: thousands of system calls a
//! second for a timer that never fires. So here the timer is moved only when it would fire
//! too late: a later deadline leaves it armed where it is (when it then fires before the
//! deadline now wanted, it is re-armed to that), while an earlier one re-arms it at once
//! (e.g. a shorter incomplete-frame limit starting on an idle connection). Under load the
//! deadline almost always moves later, which costs one timer registration per deadline
//! period (30 s by default) instead of one per read.

use std::pin::Pin;
use std::time::Instant;

use tokio::time::Sleep;

/// tokio's clock, which tests can pause and advance.
type Clock = tokio::time::Instant;

pub(crate) struct Deadline {
    /// Made at the first deadline: a connection that never has one (no idle timeout, whole
    /// frames only) holds no timer.
    sleep: Option<Pin<Box<Sleep>>>,
    /// When the timer fires, if it is armed.
    armed: Option<Clock>,
}

impl Deadline {
    pub fn new() -> Self {
        Deadline {
            sleep: None,
            armed: None,
        }
    }

    /// Resolves once `at` has passed. Dropping it early leaves the timer armed for the next
    /// call, whose deadline is usually later.
    pub async fn until(&mut self, at: Instant) {
        let at = Clock::from_std(at);
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
        loop {
            match self.armed {
                // Fires early at worst: checked below.
                Some(armed) if armed <= at => {}
                _ => {
                    sleep.as_mut().reset(at);
                    self.armed = Some(at);
                }
            }
            sleep.as_mut().await;
            self.armed = None;
            if Clock::now() >= at {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn a_later_deadline_keeps_the_armed_timer_and_still_waits_for_its_own_time() {
        let mut deadline = Deadline::new();
        let t0 = Clock::now().into_std();
        // Asked for t0+10 s, abandoned (the read won), then asked for t0+15 s.
        let first = tokio::time::timeout(
            Duration::from_secs(1),
            deadline.until(t0 + Duration::from_secs(10)),
        );
        assert!(first.await.is_err());
        assert_eq!(
            deadline.armed,
            Some(Clock::from_std(t0 + Duration::from_secs(10)))
        );
        deadline.until(t0 + Duration::from_secs(15)).await;
        assert!(
            Clock::now().into_std() >= t0 + Duration::from_secs(15),
            "not before its own deadline"
        );
        assert_eq!(deadline.armed, None);
    }

    #[tokio::test(start_paused = true)]
    async fn an_earlier_deadline_re_arms_the_timer() {
        let mut deadline = Deadline::new();
        let t0 = Clock::now().into_std();
        let first = tokio::time::timeout(
            Duration::from_secs(1),
            deadline.until(t0 + Duration::from_secs(30)),
        );
        assert!(first.await.is_err());
        deadline.until(t0 + Duration::from_secs(5)).await;
        let waited = Clock::now().into_std() - t0;
        assert!(
            waited >= Duration::from_secs(5) && waited < Duration::from_secs(30),
            "{waited:?}"
        );
    }
}

//! The server's memory budget: the bytes every connection holds for the peer — its read
//! buffer (a frame still arriving) and its replies not yet written — counted against one
//! limit ([`ServerConfig::memory_budget`](crate::ServerConfig::memory_budget)).
//!
//! Counting is cheap: a connection's [`Meter`] changes by whole batches (a batch of replies
//! queued or written, a read buffer that grew), one atomic add on the connection's count
//! and one on the server's. When the server's count is over the limit, connections that
//! hold more than [`SMALL_HOLDING`] stop reading until it drops back; if it stays over for
//! the budget's grace period, the connection holding the most is closed, with a log line,
//! and so on, one per grace period.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// A connection holding at most this many bytes keeps reading when the budget is
/// exceeded: it is not what fills memory, and a well-behaved peer keeps being served.
pub(crate) const SMALL_HOLDING: usize = 64 * 1024;

/// The bytes all connections of one server hold, against its limit.
pub(crate) struct Budget {
    limit: usize,
    grace: Duration,
    used: AtomicUsize,
    /// Woken when `used` drops back to the limit.
    room: Notify,
    meters: Mutex<Registry>,
}

#[derive(Default)]
struct Registry {
    next: u64,
    live: HashMap<u64, Weak<Meter>>,
    /// When a connection was last closed for the budget: at most one per grace period, so
    /// that its memory is seen freed before another is chosen.
    last_eviction: Option<Instant>,
}

impl Budget {
    pub fn new(limit: usize, grace: Duration) -> Arc<Self> {
        Arc::new(Budget {
            limit,
            grace,
            used: AtomicUsize::new(0),
            room: Notify::new(),
            meters: Mutex::default(),
        })
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        // Every update is a plain map or field write: a poisoned lock leaves it consistent.
        self.meters.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A meter for a new connection from `peer`.
    pub fn meter(self: &Arc<Self>, peer: SocketAddr) -> Arc<Meter> {
        let mut registry = self.registry();
        let key = registry.next;
        registry.next += 1;
        let meter = Arc::new(Meter {
            held: AtomicUsize::new(0),
            budget: self.clone(),
            peer,
            key,
            evicted: CancellationToken::new(),
        });
        registry.live.insert(key, Arc::downgrade(&meter));
        meter
    }

    /// Bytes held by all connections now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    fn add(&self, n: usize) {
        self.used.fetch_add(n, Ordering::Relaxed);
    }

    fn sub(&self, n: usize) {
        let before = self.used.fetch_sub(n, Ordering::Relaxed);
        if before > self.limit && before - n <= self.limit {
            self.room.notify_waiters();
        }
    }

    fn exceeded(&self) -> bool {
        self.used.load(Ordering::Relaxed) > self.limit
    }

    /// Closes the connection holding the most, unless one was closed less than a grace
    /// period ago (its memory may not be freed yet).
    fn evict_largest(&self) {
        let mut registry = self.registry();
        let now = Instant::now();
        if registry
            .last_eviction
            .is_some_and(|at| now.duration_since(at) < self.grace)
        {
            return;
        }
        let largest = registry
            .live
            .values()
            .filter_map(Weak::upgrade)
            .filter(|m| !m.evicted.is_cancelled())
            .max_by_key(|m| m.held());
        let Some(meter) = largest else { return };
        registry.last_eviction = Some(now);
        drop(registry);
        tracing::warn!(
            peer = %meter.peer,
            held = meter.held(),
            used = self.used(),
            budget = self.limit,
            "closing connection: the server's memory budget stayed exceeded for {:?} and this connection held the most",
            self.grace
        );
        meter.evicted.cancel();
    }
}

/// What one connection holds, counted into its server's [`Budget`].
pub(crate) struct Meter {
    held: AtomicUsize,
    budget: Arc<Budget>,
    peer: SocketAddr,
    key: u64,
    /// Cancelled when the budget closes this connection.
    evicted: CancellationToken,
}

impl Meter {
    /// Bytes this connection holds now.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    pub fn add(&self, n: usize) {
        if n > 0 {
            self.held.fetch_add(n, Ordering::Relaxed);
            self.budget.add(n);
        }
    }

    pub fn sub(&self, n: usize) {
        if n > 0 {
            self.held.fetch_sub(n, Ordering::Relaxed);
            self.budget.sub(n);
        }
    }

    /// Whether this connection must wait before reading more: the server is over its
    /// budget and this connection holds more than a little. One atomic load when not.
    #[inline]
    pub fn must_wait(&self) -> bool {
        self.budget.exceeded() && self.held() > SMALL_HOLDING
    }

    /// Waits until this connection may read again (see [`must_wait`](Self::must_wait)).
    /// Each grace period the budget stays exceeded, the connection holding the most is
    /// closed, possibly this one: then this returns and the connection sees
    /// [`evicted`](Self::evicted).
    pub async fn wait_for_budget(&self) {
        loop {
            let room = self.budget.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            if !self.must_wait() || self.evicted.is_cancelled() {
                return;
            }
            tokio::select! {
                () = room => {}
                () = self.evicted.cancelled() => return,
                () = tokio::time::sleep(self.budget.grace) => self.budget.evict_largest(),
            }
        }
    }

    /// Resolves once the budget closes this connection.
    pub async fn evicted(&self) {
        self.evicted.cancelled().await;
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        // Whatever is still counted leaves with the connection.
        self.budget.sub(*self.held.get_mut());
        self.budget.registry().live.remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn meters_count_into_the_budget_and_leave_with_their_connection() {
        let budget = Budget::new(1000, Duration::from_secs(1));
        let a = budget.meter(peer(1));
        let b = budget.meter(peer(2));
        a.add(300);
        b.add(200);
        b.sub(50);
        assert_eq!((a.held(), b.held(), budget.used()), (300, 150, 450));
        drop(a);
        assert_eq!(budget.used(), 150);
        assert_eq!(budget.registry().live.len(), 1);
    }

    #[test]
    fn only_connections_holding_more_than_a_little_wait_when_over_budget() {
        let budget = Budget::new(SMALL_HOLDING, Duration::from_secs(1));
        let big = budget.meter(peer(1));
        let small = budget.meter(peer(2));
        big.add(SMALL_HOLDING + 1);
        small.add(100);
        assert!(big.must_wait());
        assert!(!small.must_wait(), "a small holder keeps reading");
        big.sub(200);
        assert!(!big.must_wait(), "back under the budget");
    }

    #[tokio::test(start_paused = true)]
    async fn a_budget_exceeded_for_its_grace_period_closes_the_largest_holder() {
        let budget = Budget::new(100_000, Duration::from_millis(500));
        let largest = budget.meter(peer(1));
        let other = budget.meter(peer(2));
        largest.add(90_000);
        other.add(70_000);
        // `other` waits; after the grace period the largest holder is closed, not it.
        let waited = tokio::time::timeout(Duration::from_secs(1), other.wait_for_budget()).await;
        assert!(waited.is_err(), "still over budget: keeps waiting");
        assert!(largest.evicted.is_cancelled());
        assert!(!other.evicted.is_cancelled());
        drop(largest);
        tokio::time::timeout(Duration::from_millis(10), other.wait_for_budget())
            .await
            .expect("room again once the largest holder is gone");
    }

    #[tokio::test]
    async fn waiters_wake_when_the_budget_drops_back() {
        let budget = Budget::new(SMALL_HOLDING, Duration::from_secs(60));
        let a = budget.meter(peer(1));
        a.add(2 * SMALL_HOLDING);
        let waiting = tokio::spawn({
            let a = a.clone();
            async move { a.wait_for_budget().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        a.sub(2 * SMALL_HOLDING);
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("woken")
            .unwrap();
    }
}

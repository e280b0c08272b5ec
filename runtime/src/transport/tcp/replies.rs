//! Where a TCP connection's replies wait for its writer: the connection's reader puts
//! each batch's replies there, and requests that finish later (async handlers, streams)
//! put theirs.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::budget::Meter;
use super::release::{release_freed_memory, RELEASE_AFTER};
use crate::outbox::{Batch, Outbox};
use crate::packet::Wire;
use crate::transport::ReplySink;

struct Shared {
    outbox: Outbox,
    /// Live [`Replies`] handles. The writer ends once it is zero and all is written.
    producers: AtomicUsize,
    /// The connection was closed with a large reply queue: once the last handle and the
    /// writer are gone, its memory is handed back to the OS (see `release.rs`).
    release: AtomicBool,
}

impl Shared {
    /// Drops what is queued: the connection is over.
    fn discard(&self) {
        if self.outbox.held() >= RELEASE_AFTER {
            self.release.store(true, Ordering::Relaxed);
        }
        self.outbox.discard();
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        if *self.release.get_mut() {
            release_freed_memory();
        }
    }
}

/// A handle to put replies on one connection. The reader holds one; every request that
/// answers later holds its own clone.
pub(crate) struct Replies(Arc<Shared>);

/// How much a connection's replies may hold, and for how long the peer may read nothing.
pub(crate) struct ReplyLimits {
    /// Batches waiting (the in-flight limit).
    pub max_batches: usize,
    /// Bytes queued or being written before producers (the reader included) wait.
    pub high_water: usize,
    /// How long a write may make no progress before the connection is closed.
    pub write_stall: Option<Duration>,
}

impl Replies {
    /// A connection's replies, within `limits`, counted on `meter`, and the writer that
    /// sends them to `wr` (run it next to the reader; it ends once every handle is
    /// dropped, or early when the peer stops reading).
    pub fn new<W: AsyncWrite + Unpin>(
        limits: &ReplyLimits,
        meter: Arc<Meter>,
        wr: W,
        peer: std::net::SocketAddr,
    ) -> (Self, impl std::future::Future<Output = ()>) {
        let shared = Arc::new(Shared {
            outbox: Outbox::with_byte_limit(limits.max_batches, limits.high_water, meter),
            producers: AtomicUsize::new(1),
            release: AtomicBool::new(false),
        });
        let writer = write_loop(wr, shared.clone(), peer, limits.write_stall);
        (Replies(shared), writer)
    }

    /// The connection is over: what is queued is dropped, and later replies fail at once.
    pub fn discard(&self) {
        self.0.discard();
    }

    /// Queues the replies collected while processing one batch of packets, as one frame
    /// of the outbox; `ready` is left empty with its capacity kept for the next batch.
    /// Waits while the writer is that far behind.
    pub async fn put_batch(&self, ready: &mut BytesMut) {
        // An error means the writer is gone; the replies have nowhere to go.
        let _ = self
            .0
            .outbox
            .push(|dst| dst.extend_from_slice(ready), None)
            .await;
        ready.clear();
    }
}

impl Clone for Replies {
    fn clone(&self) -> Self {
        self.0.producers.fetch_add(1, Ordering::Relaxed);
        Replies(self.0.clone())
    }
}

impl Drop for Replies {
    fn drop(&mut self) {
        // Counted down before the writer is woken: it then sees the count it must end on.
        if self.0.producers.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.outbox.wake_writer();
        }
    }
}

impl ReplySink for Replies {
    const WIRE: Wire = Wire::Tcp;

    async fn send(&self, packet: Bytes) -> bool {
        self.0
            .outbox
            .push(|dst| dst.extend_from_slice(&packet), None)
            .await
            .is_ok()
    }
}

/// Writes whatever is queued, in one `write` per turn, until every [`Replies`] handle is
/// gone and the outbox is empty; then shuts the write half down. Ends early, dropping what
/// is queued, when a write fails or makes no progress for `stall`.
async fn write_loop<W: AsyncWrite + Unpin>(
    mut wr: W,
    shared: Arc<Shared>,
    peer: std::net::SocketAddr,
    stall: Option<Duration>,
) {
    let mut batch = Batch::new();
    loop {
        if !shared.outbox.take(&mut batch) {
            if shared.producers.load(Ordering::Acquire) == 0 {
                break;
            }
            shared.outbox.sleep().await;
            continue;
        }
        if let Err(e) = write_within(&mut wr, &batch.buf, stall).await {
            match e {
                WriteEnd::Stalled(after) => tracing::warn!(
                    %peer,
                    queued = shared.outbox.held(),
                    "closing connection: the peer read none of its replies for {after:?} (write-stall timeout)"
                ),
                WriteEnd::Failed(e) => tracing::debug!(
                    %peer,
                    "write failed, dropping replies for this connection: {e}"
                ),
            }
            // Later replies fail at once instead of waiting for room.
            shared.discard();
            return;
        }
        shared.outbox.written(&mut batch);
    }
    let _ = wr.shutdown().await;
}

enum WriteEnd {
    Stalled(Duration),
    Failed(std::io::Error),
}

/// `write_all`, failing when one write makes no progress for `stall`. The timer is armed
/// only once the socket is full: a write that goes through at once costs no timer.
async fn write_within<W: AsyncWrite + Unpin>(
    wr: &mut W,
    mut buf: &[u8],
    stall: Option<Duration>,
) -> Result<(), WriteEnd> {
    while !buf.is_empty() {
        let written = match wr.write(buf).now_or_never() {
            Some(done) => done,
            None => match stall {
                None => wr.write(buf).await,
                Some(limit) => tokio::time::timeout(limit, wr.write(buf))
                    .await
                    .map_err(|_| WriteEnd::Stalled(limit))?,
            },
        };
        match written {
            Ok(0) => return Err(WriteEnd::Failed(std::io::ErrorKind::WriteZero.into())),
            Ok(n) => buf = &buf[n..],
            Err(e) => return Err(WriteEnd::Failed(e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::tcp::budget::Budget;

    #[tokio::test]
    async fn only_a_connection_closed_with_a_large_queue_asks_for_a_trim() {
        let budget = Budget::new(usize::MAX, Duration::from_secs(60));
        let peer = std::net::SocketAddr::from(([127, 0, 0, 1], 1));
        let limits = ReplyLimits {
            max_batches: 8,
            high_water: 4 * RELEASE_AFTER,
            write_stall: None,
        };
        for (queued, asks) in [(1024, false), (RELEASE_AFTER, true)] {
            // The writer is never run: the replies stay queued, as for a peer not reading.
            let (replies, _writer) =
                Replies::new(&limits, budget.meter(peer), tokio::io::sink(), peer);
            let mut ready = BytesMut::from(&vec![b'x'; queued][..]);
            replies.put_batch(&mut ready).await;
            assert_eq!(budget.used(), queued);
            replies.discard();
            assert_eq!(budget.used(), 0, "a discarded queue is counted out");
            assert_eq!(
                replies.0.release.load(Ordering::Relaxed),
                asks,
                "{queued} bytes"
            );
        }
    }
}

//! Where a TCP connection's replies wait for its writer: the connection's reader puts
//! each batch's replies there, and requests that finish later (async handlers, streams)
//! put theirs.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::outbox::{Batch, Outbox};
use crate::packet::Wire;
use crate::transport::ReplySink;

struct Shared {
    outbox: Outbox,
    /// Live [`Replies`] handles. The writer ends once it is zero and all is written.
    producers: AtomicUsize,
}

/// A handle to put replies on one connection. The reader holds one; every request that
/// answers later holds its own clone.
pub(crate) struct Replies(Arc<Shared>);

impl Replies {
    /// A connection's replies, at most `max_batches` waiting, and the writer that sends
    /// them to `wr` (run it next to the reader; it ends once every handle is dropped).
    pub fn new<W: AsyncWrite + Unpin>(
        max_batches: usize,
        wr: W,
        peer: std::net::SocketAddr,
    ) -> (Self, impl std::future::Future<Output = ()>) {
        let shared = Arc::new(Shared {
            outbox: Outbox::new(max_batches),
            producers: AtomicUsize::new(1),
        });
        let writer = write_loop(wr, shared.clone(), peer);
        (Replies(shared), writer)
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
/// gone and the outbox is empty; then shuts the write half down.
async fn write_loop<W: AsyncWrite + Unpin>(
    mut wr: W,
    shared: Arc<Shared>,
    peer: std::net::SocketAddr,
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
        if let Err(e) = wr.write_all(&batch.buf).await {
            tracing::debug!(%peer, "write failed, dropping replies for this connection: {e}");
            // Later replies fail at once instead of waiting for room.
            shared.outbox.discard();
            return;
        }
        batch.written();
    }
    let _ = wr.shutdown().await;
}

//! One client connection: callers queue frames in a shared [`Outbox`], a writer task
//! hands them to the socket, a reader task routes replies to pending calls by id. When
//! either side ends, every pending call fails at once.

use std::sync::Arc;

use bytes::BytesMut;
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;

use super::pending::PendingCalls;
use crate::codec::{FrameError, FrameText, NestCodec};
use crate::outbox::{Batch, Outbox};
use crate::packet::parse_reply_frame;

pub(crate) struct Connection {
    outbox: Outbox,
    pub calls: Arc<PendingCalls>,
    stop: CancellationToken,
}

impl Connection {
    /// Starts the reader and writer tasks over the two halves of a connection (plain
    /// TCP halves, or the halves of a TLS stream).
    pub fn start<R, W>(rd: R, wr: W, max_frame_len: usize, queue: usize) -> Arc<Self>
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let conn = Arc::new(Connection {
            outbox: Outbox::new(queue),
            calls: Arc::default(),
            stop: CancellationToken::new(),
        });
        tokio::spawn(write_loop(wr, conn.clone()));
        tokio::spawn(read_loop(rd, max_frame_len, conn.clone()));
        conn
    }

    pub fn is_closed(&self) -> bool {
        self.stop.is_cancelled()
    }

    /// Queues the frame `put` writes. `Err` if the connection is over.
    pub async fn write(&self, put: impl Fn(&mut BytesMut)) -> Result<(), String> {
        self.outbox
            .push(put, None)
            .await
            .map_err(|_| self.calls.closed_reason())
    }

    /// Queues a frame and returns a notice that resolves once the frame has been handed to
    /// the socket (Nest's `emit` completes at that point), so an event is not lost if the
    /// client is dropped or the process exits right after.
    pub async fn write_noticed(
        &self,
        put: impl Fn(&mut BytesMut),
    ) -> Result<oneshot::Receiver<()>, String> {
        let (tx, rx) = oneshot::channel();
        self.outbox
            .push(put, Some(tx))
            .await
            .map_err(|_| self.calls.closed_reason())?;
        Ok(rx)
    }

    /// Ends the connection, failing every pending call with `reason`.
    pub fn close(&self, reason: String) {
        // Marked closed first: a caller whose call fails below may retry at once, and must
        // then dial a new connection rather than pick this one again.
        self.stop.cancel();
        self.outbox.close();
        self.calls.close(&reason);
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(mut wr: W, conn: Arc<Connection>) {
    let mut batch = Batch::new();
    loop {
        if !conn.outbox.take(&mut batch) {
            // Closing (by the client or because the server went away) once what was
            // queued is written, best effort; then FIN.
            if conn.stop.is_cancelled() {
                break;
            }
            tokio::select! {
                _ = conn.stop.cancelled() => {}
                _ = conn.outbox.sleep() => {}
            }
            continue;
        }
        if let Err(e) = wr.write_all(&batch.buf).await {
            conn.close(format!("write failed: {e}"));
            conn.outbox.discard();
            return;
        }
        batch.written();
    }
    conn.outbox.discard();
    let _ = wr.shutdown().await;
}

async fn read_loop<R: AsyncRead + Unpin>(rd: R, max_frame_len: usize, conn: Arc<Connection>) {
    let mut frames = FramedRead::new(rd, TextFrames(NestCodec::with_max_frame_len(max_frame_len)));
    // Made once, not per frame; frames first, so a buffered reply costs no look at it.
    let mut stopped = std::pin::pin!(conn.stop.cancelled());
    let reason = loop {
        let item = tokio::select! {
            biased;
            item = frames.next() => item,
            _ = &mut stopped => return,
        };
        match item {
            None => break "closed by the server".to_string(),
            Some(Err(e)) => {
                tracing::warn!("closing client connection: {e}");
                break e.to_string();
            }
            Some(Ok(frame)) => match parse_reply_frame(&frame) {
                Ok(reply) => conn.calls.on_reply(reply),
                Err(e) => {
                    tracing::warn!("closing client connection: {e}");
                    break e.to_string();
                }
            },
        }
    };
    conn.close(reason);
}

/// The codec yielding frames as validated text, so replies are parsed without checking
/// their UTF-8 a second time (as the server does).
struct TextFrames(NestCodec);

impl tokio_util::codec::Decoder for TextFrames {
    type Item = FrameText;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<FrameText>, FrameError> {
        self.0.decode_text(src)
    }
}

//! One client connection: a writer task sending frames in order, a reader task routing
//! replies to pending calls by id. When either side ends, every pending call fails at once.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;

use super::pending::PendingCalls;
use crate::codec::{FrameError, FrameText, NestCodec};
use crate::packet::parse_reply_frame;

/// A frame queued for the writer, with an optional "handed to the socket" notice.
struct Outbound {
    frame: Bytes,
    written: Option<oneshot::Sender<()>>,
}

pub(crate) struct Connection {
    outbound: mpsc::Sender<Outbound>,
    pub calls: Arc<PendingCalls>,
    stop: CancellationToken,
}

const MAX_BATCH: usize = 256 * 1024;

impl Connection {
    /// Starts the reader and writer tasks over the two halves of a connection (plain
    /// TCP halves, or the halves of a TLS stream).
    pub fn start<R, W>(rd: R, wr: W, max_frame_len: usize, queue: usize) -> Arc<Self>
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let (tx, rx) = mpsc::channel(queue.max(1));
        let conn = Arc::new(Connection {
            outbound: tx,
            calls: Arc::default(),
            stop: CancellationToken::new(),
        });
        tokio::spawn(write_loop(wr, rx, conn.clone()));
        tokio::spawn(read_loop(rd, max_frame_len, conn.clone()));
        conn
    }

    pub fn is_closed(&self) -> bool {
        self.stop.is_cancelled()
    }

    /// Queues a frame for writing. `Err` if the connection is over.
    pub async fn write(&self, frame: Bytes) -> Result<(), String> {
        let item = Outbound {
            frame,
            written: None,
        };
        self.outbound
            .send(item)
            .await
            .map_err(|_| self.calls.closed_reason())
    }

    /// Writes a frame and waits until it has been handed to the socket (Nest's `emit`
    /// completes at the same point), so an event is not lost if the client is dropped or
    /// the process exits right after.
    pub async fn write_and_wait(&self, frame: Bytes) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        let item = Outbound {
            frame,
            written: Some(tx),
        };
        self.outbound
            .send(item)
            .await
            .map_err(|_| self.calls.closed_reason())?;
        rx.await.map_err(|_| self.calls.closed_reason())
    }

    /// Ends the connection, failing every pending call with `reason`.
    pub fn close(&self, reason: String) {
        self.calls.close(&reason);
        self.stop.cancel();
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(
    mut wr: W,
    mut rx: mpsc::Receiver<Outbound>,
    conn: Arc<Connection>,
) {
    let mut batch = BytesMut::new();
    let mut acks = Vec::new();
    loop {
        let first = tokio::select! {
            // Closing (by the client or because the server went away): write what is
            // already queued, best effort, then send FIN.
            _ = conn.stop.cancelled() => match rx.try_recv() {
                Ok(f) => f,
                Err(_) => break,
            },
            f = rx.recv() => match f { Some(f) => f, None => break },
        };
        acks.extend(first.written);
        let result = match rx.try_recv() {
            Err(_) => wr.write_all(&first.frame).await,
            Ok(second) => {
                batch.extend_from_slice(&first.frame);
                batch.extend_from_slice(&second.frame);
                acks.extend(second.written);
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(more) => {
                            batch.extend_from_slice(&more.frame);
                            acks.extend(more.written);
                        }
                        Err(_) => break,
                    }
                }
                let r = wr.write_all(&batch).await;
                batch.clear();
                r
            }
        };
        if let Err(e) = result {
            conn.close(format!("write failed: {e}"));
            return;
        }
        for ack in acks.drain(..) {
            let _ = ack.send(());
        }
    }
    let _ = wr.shutdown().await;
}

async fn read_loop<R: AsyncRead + Unpin>(rd: R, max_frame_len: usize, conn: Arc<Connection>) {
    let mut frames = FramedRead::new(rd, TextFrames(NestCodec::with_max_frame_len(max_frame_len)));
    let reason = loop {
        let item = tokio::select! {
            _ = conn.stop.cancelled() => return,
            item = frames.next() => item,
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

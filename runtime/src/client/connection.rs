//! One client connection: a writer task sending frames in order, a reader task routing
//! replies to pending calls by id. When either side ends, every pending call fails at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;

use crate::codec::NestCodec;
use crate::packet::{parse_reply, Reply};

/// How a call ended, as seen by the connection.
#[derive(Debug)]
pub(crate) enum Completion {
    /// Completed, with the last value received (`None`: completed empty).
    Value(Option<Bytes>),
    /// `err` received (raw JSON).
    Error(Bytes),
    /// The connection ended first.
    Closed(String),
}

/// One event of a streamed reply, in arrival order.
#[derive(Debug)]
pub(crate) enum StreamEvent {
    /// A `response` value (raw JSON).
    Item(Bytes),
    /// `err` received (raw JSON); the stream is over.
    Error(Bytes),
    /// The connection ended before the stream completed.
    Closed(String),
    /// `isDisposed`: the stream completed.
    End,
}

/// Where a pending call's replies go.
enum PendingCall {
    /// `send`: only the outcome matters; keeps the last non-final value, like
    /// `lastValueFrom` on a streamed reply.
    Once {
        done: oneshot::Sender<Completion>,
        last: Option<Bytes>,
    },
    /// `send_stream`: every value is delivered. Unbounded like Nest's Observable: a slow
    /// consumer must not stall other calls multiplexed on the connection.
    Stream(mpsc::UnboundedSender<StreamEvent>),
}

impl PendingCall {
    fn fail(self, reason: &str) {
        match self {
            PendingCall::Once { done, .. } => {
                let _ = done.send(Completion::Closed(reason.to_owned()));
            }
            PendingCall::Stream(tx) => {
                let _ = tx.send(StreamEvent::Closed(reason.to_owned()));
            }
        }
    }
}

#[derive(Default)]
struct Pending {
    /// Set once the connection is over: later registrations fail immediately.
    closed: Option<String>,
    calls: HashMap<u64, PendingCall>,
}

/// A frame queued for the writer, with an optional "handed to the socket" notice.
struct Outbound {
    frame: Bytes,
    written: Option<oneshot::Sender<()>>,
}

pub(crate) struct Connection {
    outbound: mpsc::Sender<Outbound>,
    pending: Mutex<Pending>,
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
            pending: Mutex::new(Pending::default()),
            stop: CancellationToken::new(),
        });
        tokio::spawn(write_loop(wr, rx, conn.clone()));
        tokio::spawn(read_loop(rd, max_frame_len, conn.clone()));
        conn
    }

    pub fn is_closed(&self) -> bool {
        self.stop.is_cancelled()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        // A poisoned lock only means another thread panicked mid-update of a map whose
        // entries are independent; the data is still usable.
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn insert(&self, id: u64, call: PendingCall) -> Result<(), String> {
        let mut pending = self.lock();
        if let Some(reason) = &pending.closed {
            return Err(reason.clone());
        }
        pending.calls.insert(id, call);
        Ok(())
    }

    /// Registers a call awaiting one outcome; `Err(reason)` if the connection is over.
    pub fn register(&self, id: u64) -> Result<oneshot::Receiver<Completion>, String> {
        let (done, rx) = oneshot::channel();
        self.insert(id, PendingCall::Once { done, last: None })?;
        Ok(rx)
    }

    /// Registers a call whose every value is wanted.
    pub fn register_stream(&self, id: u64) -> Result<mpsc::UnboundedReceiver<StreamEvent>, String> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.insert(id, PendingCall::Stream(tx))?;
        Ok(rx)
    }

    /// Forgets a call (its caller gave up, e.g. timed out); a late reply is ignored.
    pub fn forget(&self, id: u64) {
        self.lock().calls.remove(&id);
    }

    fn closed_reason(&self) -> String {
        self.lock()
            .closed
            .clone()
            .unwrap_or_else(|| "connection closed".into())
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
            .map_err(|_| self.closed_reason())
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
            .map_err(|_| self.closed_reason())?;
        rx.await.map_err(|_| self.closed_reason())
    }

    /// Ends the connection, failing every pending call with `reason`.
    pub fn close(&self, reason: String) {
        let calls = {
            let mut pending = self.lock();
            if pending.closed.is_none() {
                pending.closed = Some(reason.clone());
            }
            std::mem::take(&mut pending.calls)
        };
        self.stop.cancel();
        for (_, call) in calls {
            call.fail(&reason);
        }
    }

    fn on_reply(&self, reply: Reply) {
        let Some(id) = reply.id().and_then(|raw| parse_id(raw)) else {
            tracing::debug!("ignoring a reply without a known id");
            return;
        };
        let mut pending = self.lock();
        let Some(call) = pending.calls.get_mut(&id) else {
            return; // unknown, forgotten or already finished: ignored, as Nest does
        };
        let finished = match (call, reply) {
            (PendingCall::Once { .. }, Reply::Error { err, .. }) => Some(Completion::Error(err)),
            (
                PendingCall::Once { last, .. },
                Reply::Value {
                    response, disposed, ..
                },
            ) => {
                if disposed {
                    Some(Completion::Value(response.or_else(|| last.take())))
                } else {
                    *last = response;
                    None
                }
            }
            (PendingCall::Stream(tx), Reply::Error { err, .. }) => {
                let _ = tx.send(StreamEvent::Error(err));
                Some(Completion::Value(None))
            }
            (
                PendingCall::Stream(tx),
                Reply::Value {
                    response, disposed, ..
                },
            ) => {
                if let Some(r) = response {
                    let _ = tx.send(StreamEvent::Item(r));
                }
                if disposed {
                    let _ = tx.send(StreamEvent::End);
                    Some(Completion::Value(None))
                } else {
                    None
                }
            }
        };
        if let Some(outcome) = finished {
            if let Some(PendingCall::Once { done, .. }) = pending.calls.remove(&id) {
                let _ = done.send(outcome);
            }
        }
    }
}

/// Our ids are decimal strings; anything else is not ours.
fn parse_id(raw: &[u8]) -> Option<u64> {
    let inner = raw.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
    std::str::from_utf8(inner).ok()?.parse().ok()
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
    let mut frames = FramedRead::new(rd, NestCodec::with_max_frame_len(max_frame_len));
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
            Some(Ok(frame)) => match parse_reply(&frame) {
                Ok(reply) => conn.on_reply(reply),
                Err(e) => {
                    tracing::warn!("closing client connection: {e}");
                    break e.to_string();
                }
            },
        }
    };
    conn.close(reason);
}

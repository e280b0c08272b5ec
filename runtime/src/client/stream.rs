//! Streamed replies on the client: Nest's Observable replies as a Rust `Stream`.

use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use serde::de::DeserializeOwned;
use tokio::sync::OwnedSemaphorePermit;

use super::decode;
use super::pending::{PendingCalls, StreamEvent};
use super::stream_queue::StreamReceiver;
use crate::error::ClientError;

/// Removes a call's pending entry if the caller stops waiting (timeout or drop), so a
/// late reply is discarded.
pub(crate) struct CallGuard {
    pub calls: Arc<PendingCalls>,
    pub id: u64,
    pub armed: bool,
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        if self.armed {
            self.calls.forget(self.id);
        }
    }
}

/// The items of a streamed reply, from [`Client::send_stream`](crate::Client::send_stream).
///
/// Yields each `response` value decoded into `R`; ends when the service completes the
/// stream. A service error or a dropped connection is yielded as the last item. Dropping
/// the stream early stops listening (like unsubscribing in Nest: the service is not told).
///
/// ```no_run
/// use futures_util::StreamExt;
/// # async fn run(client: nestling::Client) -> Result<(), nestling::ClientError> {
/// let mut items = client.send_stream::<_, _, u32>("count", &3).await?;
/// while let Some(item) = items.next().await {
///     println!("{}", item?);
/// }
/// # Ok(()) }
/// ```
pub struct ReplyStream<R> {
    events: StreamReceiver,
    guard: CallGuard,
    pattern: String,
    addr: String,
    done: bool,
    _slot: OwnedSemaphorePermit,
    _reply: PhantomData<fn() -> R>,
}

impl<R> std::fmt::Debug for ReplyStream<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplyStream")
            .field("pattern", &self.pattern)
            .field("done", &self.done)
            .finish()
    }
}

impl<R> ReplyStream<R> {
    pub(crate) fn new(
        events: StreamReceiver,
        guard: CallGuard,
        pattern: String,
        addr: String,
        slot: OwnedSemaphorePermit,
    ) -> Self {
        Self {
            events,
            guard,
            pattern,
            addr,
            done: false,
            _slot: slot,
            _reply: PhantomData,
        }
    }

    fn finish(&mut self) {
        self.done = true;
        self.guard.armed = false;
        self.events.close();
    }
}

impl<R: DeserializeOwned> futures_core::Stream for ReplyStream<R> {
    type Item = Result<R, ClientError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        let event = match this.events.poll_recv(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(e) => e,
        };
        Poll::Ready(match event {
            Some(StreamEvent::Item(raw)) => Some(decode::value(&this.pattern, &raw)),
            Some(StreamEvent::Error(raw)) => {
                this.finish();
                Some(Err(decode::remote_error(&this.pattern, &raw)))
            }
            Some(StreamEvent::Closed(reason)) => {
                this.finish();
                Some(Err(ClientError::ConnectionClosed {
                    addr: this.addr.clone(),
                    reason,
                }))
            }
            Some(StreamEvent::NoResponders) => {
                this.finish();
                Some(Err(ClientError::NoResponders {
                    pattern: this.pattern.clone(),
                }))
            }
            Some(StreamEvent::End) | None => {
                this.finish();
                None
            }
        })
    }
}

//! The items of one streamed reply waiting for their caller: a queue bounded in bytes.
//! When it is full the link stops reading (the items are pulled by the caller, not
//! buffered without limit), which in turn makes the server stop sending.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use tokio::sync::Notify;

use super::pending::StreamEvent;

/// What an item costs beyond its JSON: its place in the queue and the rest of its frame
/// (the item is a slice of the received frame, which it keeps alive).
const ITEM_OVERHEAD: usize = 64;

/// The bytes an item counts for.
fn cost(event: &StreamEvent) -> usize {
    match event {
        StreamEvent::Item(item) => item.len() + ITEM_OVERHEAD,
        _ => 0,
    }
}

/// Shared by the link (which pushes) and the caller's [`ReplyStream`](crate::ReplyStream).
pub(crate) struct StreamQueue {
    state: Mutex<State>,
    /// Wakes a link waiting for the caller to take items.
    room: Notify,
    /// Bytes of items queued past which the link waits.
    limit: usize,
}

#[derive(Default)]
struct State {
    events: VecDeque<StreamEvent>,
    /// Bytes the `Item`s in `events` count for (see [`cost`]).
    bytes: usize,
    consumer: Option<Waker>,
    /// The caller dropped its stream: nothing is kept any more.
    abandoned: bool,
    /// The link dropped its end without a last event: the stream is over.
    sender_gone: bool,
}

impl StreamQueue {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Plain field writes under the lock: a poisoned lock leaves a usable state.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A queue and its two ends.
    pub fn channel(limit: usize) -> (StreamSender, StreamReceiver) {
        let queue = Arc::new(StreamQueue {
            state: Mutex::default(),
            room: Notify::new(),
            limit: limit.max(1),
        });
        (StreamSender(queue.clone()), StreamReceiver(queue))
    }

    fn over_limit(state: &State, limit: usize) -> bool {
        !state.abandoned && state.bytes > limit
    }
}

/// The link's end.
pub(crate) struct StreamSender(Arc<StreamQueue>);

/// A full queue: the link waits on it before reading more.
pub(crate) struct Full(Arc<StreamQueue>);

impl Full {
    /// Resolves once the caller took enough items (or dropped its stream).
    pub async fn room(self) {
        let queue = self.0;
        loop {
            let room = queue.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            if !StreamQueue::over_limit(&queue.lock(), queue.limit) {
                return;
            }
            room.await;
        }
    }
}

impl StreamSender {
    /// Queues one event for the caller; `Some` when the queue is now over its limit (the
    /// event is queued anyway: the bound is the limit plus one item).
    pub fn send(&self, event: StreamEvent) -> Option<Full> {
        let queue = &self.0;
        let mut state = queue.lock();
        if state.abandoned {
            return None;
        }
        state.bytes += cost(&event);
        state.events.push_back(event);
        let consumer = state.consumer.take();
        let full = StreamQueue::over_limit(&state, queue.limit).then(|| Full(queue.clone()));
        drop(state);
        if let Some(consumer) = consumer {
            consumer.wake();
        }
        full
    }
}

impl Drop for StreamSender {
    fn drop(&mut self) {
        let consumer = {
            let mut state = self.0.lock();
            state.sender_gone = true;
            state.consumer.take()
        };
        if let Some(consumer) = consumer {
            consumer.wake();
        }
    }
}

/// The caller's end.
pub(crate) struct StreamReceiver(Arc<StreamQueue>);

impl StreamReceiver {
    /// The next event; `None` once the link dropped its end and all was taken.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<StreamEvent>> {
        let queue = &self.0;
        let mut state = queue.lock();
        let Some(event) = state.events.pop_front() else {
            if state.sender_gone {
                return Poll::Ready(None);
            }
            match &state.consumer {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => state.consumer = Some(cx.waker().clone()),
            }
            return Poll::Pending;
        };
        let was_over = StreamQueue::over_limit(&state, queue.limit);
        state.bytes -= cost(&event);
        if was_over && !StreamQueue::over_limit(&state, queue.limit) {
            queue.room.notify_waiters();
        }
        Poll::Ready(Some(event))
    }

    /// The caller is done: queued items are dropped and a waiting link goes on.
    pub fn close(&mut self) {
        let mut state = self.0.lock();
        state.abandoned = true;
        state.events.clear();
        state.bytes = 0;
        drop(state);
        self.0.room.notify_waiters();
    }
}

impl Drop for StreamReceiver {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::time::Duration;

    fn item(n: usize) -> StreamEvent {
        StreamEvent::Item(Bytes::from(vec![b'1'; n]))
    }

    fn next(rx: &mut StreamReceiver) -> Option<StreamEvent> {
        let waker = futures_util::task::noop_waker();
        match rx.poll_recv(&mut Context::from_waker(&waker)) {
            Poll::Ready(e) => e,
            Poll::Pending => panic!("nothing queued"),
        }
    }

    #[tokio::test]
    async fn a_full_queue_holds_the_link_until_the_caller_takes_items() {
        let (tx, mut rx) = StreamQueue::channel(100 + 2 * ITEM_OVERHEAD);
        assert!(tx.send(item(60)).is_none());
        let full = tx
            .send(item(60))
            .expect("120 bytes and overhead: over the limit");
        let waiting = tokio::spawn(full.room());
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "the link waits");
        assert!(matches!(next(&mut rx), Some(StreamEvent::Item(b)) if b.len() == 60));
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("room after one item taken")
            .unwrap();
    }

    #[tokio::test]
    async fn dropping_the_stream_releases_the_link_and_drops_the_items() {
        let (tx, rx) = StreamQueue::channel(10);
        let full = tx.send(item(50)).expect("over");
        drop(rx);
        tokio::time::timeout(Duration::from_secs(5), full.room())
            .await
            .expect("released");
        assert!(tx.send(item(50)).is_none(), "later items are dropped");
        assert_eq!(tx.0.lock().events.len(), 0);
    }

    #[test]
    fn the_stream_ends_when_the_link_drops_its_end() {
        let (tx, mut rx) = StreamQueue::channel(10);
        assert!(tx.send(StreamEvent::End).is_none());
        drop(tx);
        assert!(matches!(next(&mut rx), Some(StreamEvent::End)));
        assert!(next(&mut rx).is_none());
    }
}

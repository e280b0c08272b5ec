//! The frames a connection has yet to write: producers append to one shared buffer and
//! the writer takes the whole buffer at once. A client's callers produce requests; a
//! server connection's reader produces each batch's replies, and its spawned handlers
//! their later replies.
//!
//! Why not a channel of frames: with a channel every frame is an allocation and a trip
//! through the channel's own bookkeeping (a semaphore for its bound, a block list), and
//! the writer copies the frames into a batch anyway. Here a producer frames its packet
//! straight into the buffer under a short lock, and wakes the writer only when the writer
//! is asleep: under load most frames wake nobody, and the writer hands everything queued
//! since its last write to the socket in one `write`.

use std::future::poll_fn;
use std::pin::pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Poll, Waker};

use bytes::BytesMut;
use tokio::sync::{oneshot, Notify};

use crate::transport::tcp::budget::Meter;

/// A writer's buffer larger than this after a write is dropped rather than kept (a burst
/// of large frames should not pin its memory for the connection's life).
const KEEP_CAPACITY: usize = 256 * 1024;

/// Shared between the producers and the writer of one connection.
pub(crate) struct Outbox {
    state: Mutex<State>,
    /// Wakes callers waiting for the writer to take a full buffer.
    room: Notify,
    /// Frames queued before producers wait (`ClientBuilder::max_queued_frames`; a server
    /// connection's in-flight limit). At least 1: a lone frame always fits.
    max_frames: usize,
    /// Bytes queued or being written past which producers wait (a server connection's
    /// reply high-water mark; 0: no byte limit). A producer that had to wait goes on once
    /// at most `low_water` bytes remain, so a slow peer's reader resumes in bursts rather
    /// than frame by frame. A lone frame always fits, whatever its size.
    high_water: usize,
    low_water: usize,
    /// Where the bytes held are counted against the server's memory budget.
    meter: Option<Arc<Meter>>,
}

#[derive(Default)]
struct State {
    /// Framed packets, in call order.
    buf: BytesMut,
    /// Frames in `buf`.
    frames: usize,
    /// Bytes of the batch the writer is writing (counted only with a byte limit or a meter).
    writing: usize,
    /// "Handed to the socket" notices owed once `buf` is written (`emit`).
    acks: Vec<oneshot::Sender<()>>,
    /// The writer sleeps on an empty buffer: the first frame queued wakes it. (A waker
    /// kept here, under the lock producers take anyway, costs less than a `Notify`.)
    writer: Option<Waker>,
    /// [`Outbox::wake_writer`] was called since the writer last slept.
    wake_pending: bool,
    /// A caller waits for room.
    room_wanted: bool,
    /// The connection is closing: no frame is taken any more (see [`Outbox::close`]).
    closed: bool,
}

/// What the writer takes in one go.
pub(crate) struct Batch {
    pub buf: BytesMut,
    pub acks: Vec<oneshot::Sender<()>>,
}

impl Batch {
    pub fn new() -> Self {
        Batch {
            buf: BytesMut::new(),
            acks: Vec::new(),
        }
    }

    /// After a successful write: tell the `emit`s waiting on it, keep the buffer for reuse.
    pub fn written(&mut self) {
        self.buf.clear();
        if self.buf.capacity() > KEEP_CAPACITY {
            self.buf = BytesMut::new();
        }
        for ack in self.acks.drain(..) {
            let _ = ack.send(());
        }
    }
}

/// The outbox is closed: the connection's writer has stopped.
pub(crate) struct Closed;

impl Outbox {
    pub fn new(max_frames: usize) -> Self {
        Outbox {
            state: Mutex::default(),
            room: Notify::new(),
            max_frames: max_frames.max(1),
            high_water: 0,
            low_water: 0,
            meter: None,
        }
    }

    /// An outbox whose producers also wait while `high_water` bytes are queued or being
    /// written (until half of that remains), counting what it holds on `meter`.
    pub fn with_byte_limit(max_frames: usize, high_water: usize, meter: Arc<Meter>) -> Self {
        Outbox {
            high_water: high_water.max(1),
            low_water: high_water / 2,
            meter: Some(meter),
            ..Outbox::new(max_frames)
        }
    }

    /// Whether a frame fits now: the frame limit, and the byte limit (`low_water` for a
    /// producer that already waited).
    fn fits(&self, state: &State, waited: bool) -> bool {
        if state.frames >= self.max_frames {
            return false;
        }
        if self.high_water == 0 {
            return true;
        }
        let held = state.buf.len() + state.writing;
        held == 0
            || held
                < if waited {
                    self.low_water
                } else {
                    self.high_water
                }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Poisoned only if a thread panicked while holding the lock; every update below is
        // a plain field write that leaves the state consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends one frame, written by `put` into the shared buffer, and wakes the writer if
    /// it sleeps. Waits while `max_frames` frames are queued. `ack` is told once the frame
    /// has been handed to the socket.
    pub async fn push(
        &self,
        put: impl Fn(&mut BytesMut),
        ack: Option<oneshot::Sender<()>>,
    ) -> Result<(), Closed> {
        self.push_frames(put, 1, ack).await
    }

    /// [`push`](Self::push) for `put` writing `frames` frames at once (a batch of calls):
    /// they count as that many against `max_frames`.
    pub async fn push_frames(
        &self,
        put: impl Fn(&mut BytesMut),
        frames: usize,
        mut ack: Option<oneshot::Sender<()>>,
    ) -> Result<(), Closed> {
        let mut waited = false;
        loop {
            let mut room = pin!(self.room.notified());
            {
                let mut state = self.lock();
                if state.closed {
                    return Err(Closed);
                }
                if self.fits(&state, waited) {
                    let before = state.buf.len();
                    put(&mut state.buf);
                    if let Some(meter) = &self.meter {
                        meter.add(state.buf.len() - before);
                    }
                    state.frames += frames;
                    state.acks.extend(ack.take());
                    let writer = state.writer.take();
                    drop(state);
                    if let Some(writer) = writer {
                        writer.wake();
                    }
                    return Ok(());
                }
                // Registered before the lock is released: the writer's `notify_waiters`
                // (under the same lock) cannot slip between the check and the wait.
                room.as_mut().enable();
                state.room_wanted = true;
            }
            room.await;
            waited = true;
        }
    }

    /// The writer's side: swaps everything queued into `batch` (which must be empty).
    /// `false` when nothing is queued; the writer then waits in [`Outbox::sleep`].
    pub fn take(&self, batch: &mut Batch) -> bool {
        let mut state = self.lock();
        if state.buf.is_empty() {
            return false;
        }
        std::mem::swap(&mut state.buf, &mut batch.buf);
        std::mem::swap(&mut state.acks, &mut batch.acks);
        state.frames = 0;
        state.writing = batch.buf.len();
        if std::mem::take(&mut state.room_wanted) {
            self.room.notify_waiters();
        }
        true
    }

    /// The writer's side, after `batch` was written: with a byte limit, producers waiting
    /// for room are told; the meter is counted down; then [`Batch::written`].
    pub fn written(&self, batch: &mut Batch) {
        if self.high_water != 0 || self.meter.is_some() {
            let mut state = self.lock();
            state.writing = 0;
            if std::mem::take(&mut state.room_wanted) {
                self.room.notify_waiters();
            }
            drop(state);
            if let Some(meter) = &self.meter {
                meter.sub(batch.buf.len());
            }
        }
        batch.written();
    }

    /// Bytes queued or being written.
    pub fn held(&self) -> usize {
        let state = self.lock();
        state.buf.len() + state.writing
    }

    /// Waits until a caller queues a frame after [`Outbox::take`] found none (or
    /// [`Outbox::wake_writer`] is called).
    pub async fn sleep(&self) {
        poll_fn(|cx| {
            let mut state = self.lock();
            if !state.buf.is_empty() || std::mem::take(&mut state.wake_pending) {
                state.writer = None;
                return Poll::Ready(());
            }
            match &state.writer {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => state.writer = Some(cx.waker().clone()),
            }
            Poll::Pending
        })
        .await
    }

    /// Wakes the writer even though nothing was queued (a producer went away, and the
    /// writer may be waiting for the last one to).
    pub fn wake_writer(&self) {
        let writer = {
            let mut state = self.lock();
            // Seen by the writer's next look, whether it sleeps now or is about to.
            state.wake_pending = true;
            state.writer.take()
        };
        if let Some(writer) = writer {
            writer.wake();
        }
    }

    /// The connection is closing: later pushes fail and callers waiting for room are
    /// released. What is queued stays for the writer's last, best-effort write.
    pub fn close(&self) {
        self.lock().closed = true;
        self.room.notify_waiters();
    }

    /// The writer has stopped for good: [`Outbox::close`], and what is queued is dropped
    /// (an `emit` waiting for its notice reads the dropped notice as "connection closed").
    pub fn discard(&self) {
        self.close();
        let mut state = self.lock();
        let held = state.buf.len() + std::mem::take(&mut state.writing);
        state.buf = BytesMut::new();
        state.frames = 0;
        state.acks.clear();
        drop(state);
        if let Some(meter) = &self.meter {
            meter.sub(held);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(text: &'static str) -> impl Fn(&mut BytesMut) {
        move |dst: &mut BytesMut| dst.extend_from_slice(text.as_bytes())
    }

    #[tokio::test]
    async fn frames_queue_in_order_and_the_writer_takes_them_at_once() {
        let outbox = Outbox::new(8);
        let mut batch = Batch::new();
        assert!(!outbox.take(&mut batch), "nothing queued yet");
        assert!(outbox.push(frame("a"), None).await.is_ok());
        assert!(outbox.push(frame("b"), None).await.is_ok());
        // The first push woke the sleeping writer: its wait ends at once.
        outbox.sleep().await;
        assert!(outbox.take(&mut batch));
        assert_eq!(&batch.buf[..], b"ab");
        batch.written();
        assert!(batch.buf.is_empty());
    }

    #[tokio::test]
    async fn acks_are_sent_after_the_write_and_dropped_when_discarded() {
        let outbox = Outbox::new(8);
        let (tx, rx) = oneshot::channel();
        assert!(outbox.push(frame("e"), Some(tx)).await.is_ok());
        let mut batch = Batch::new();
        assert!(outbox.take(&mut batch));
        batch.written();
        assert!(rx.await.is_ok(), "told once written");

        let (tx, rx) = oneshot::channel();
        assert!(outbox.push(frame("lost"), Some(tx)).await.is_ok());
        outbox.discard();
        assert!(
            rx.await.is_err(),
            "an unsent emit learns the connection closed"
        );
        assert!(outbox.push(frame("late"), None).await.is_err());
    }

    #[tokio::test]
    async fn a_full_outbox_holds_callers_until_the_writer_takes_it() {
        let outbox = std::sync::Arc::new(Outbox::new(2));
        assert!(outbox.push(frame("1"), None).await.is_ok());
        assert!(outbox.push(frame("2"), None).await.is_ok());
        let waiting = tokio::spawn({
            let outbox = outbox.clone();
            async move { outbox.push(frame("3"), None).await.is_ok() }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "a third frame waits for room");
        let mut batch = Batch::new();
        assert!(outbox.take(&mut batch));
        assert_eq!(&batch.buf[..], b"12");
        assert!(waiting.await.unwrap_or(false));
        batch.written();
        assert!(outbox.take(&mut batch));
        assert_eq!(&batch.buf[..], b"3");
    }

    #[tokio::test]
    async fn closing_releases_callers_waiting_for_room() {
        let outbox = std::sync::Arc::new(Outbox::new(1));
        assert!(outbox.push(frame("1"), None).await.is_ok());
        let waiting = tokio::spawn({
            let outbox = outbox.clone();
            async move { outbox.push(frame("2"), None).await.is_err() }
        });
        tokio::task::yield_now().await;
        outbox.close();
        assert!(waiting.await.unwrap_or(false), "the waiting push fails");
        let mut batch = Batch::new();
        assert!(
            outbox.take(&mut batch),
            "what was queued stays for the last write"
        );
        assert_eq!(&batch.buf[..], b"1");
    }

    #[tokio::test]
    async fn a_writer_woken_with_nothing_queued_wakes_up() {
        let outbox = std::sync::Arc::new(Outbox::new(8));
        let mut batch = Batch::new();
        assert!(!outbox.take(&mut batch));
        let sleeping = tokio::spawn({
            let outbox = outbox.clone();
            async move { outbox.sleep().await }
        });
        tokio::task::yield_now().await;
        assert!(!sleeping.is_finished(), "nothing queued: the writer sleeps");
        outbox.wake_writer();
        tokio::time::timeout(std::time::Duration::from_secs(5), sleeping)
            .await
            .expect("woken")
            .unwrap();
        // A wake-up while the writer is busy is kept for its next sleep.
        outbox.wake_writer();
        outbox.sleep().await;
    }
}

//! Read buffers lent to a connection only while it has bytes to read, so that a quiet
//! connection holds none.
//!
//! Most of a server's connections are quiet most of the time (a pool of Nest clients, a
//! gateway's idle keep-alives), and a read buffer is the largest thing each would hold. So a
//! connection gives its buffer back to a small per-thread free list once it has taken every
//! whole frame out of it, and waits for its next bytes without one: its read takes a buffer
//! from the list and, finding nothing, puts it straight back. A burst over many connections
//! thus goes through a few buffers, one per connection being read at a time, instead of
//! leaving one per connection behind in the allocator; under load the same few buffers go
//! round between the connections a worker serves, each hand-over a thread-local push or pop.
//!
//! A buffer some frame still points into (an `async` handler holding its payload) cannot
//! be reused whole: it is dropped instead of kept, and its memory goes when the frame does.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use tokio::io::AsyncRead;

/// Capacity of a buffer lent out fresh (bytes).
const INITIAL_BUFFER: usize = 8 * 1024;
/// Largest buffer kept on the free list: one a large frame grew goes back to the allocator.
const LARGEST_KEPT: usize = 64 * 1024;
/// Buffers kept per thread: enough for the connections one worker reads in one turn of its
/// event loop; beyond that they are freed.
const KEPT_PER_THREAD: usize = 32;

thread_local! {
    static FREE: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
}

/// A buffer to read into: one from this thread's free list, or a new one.
fn take() -> BytesMut {
    FREE.with(|free| free.borrow_mut().pop())
        .unwrap_or_else(|| BytesMut::with_capacity(INITIAL_BUFFER))
}

/// Gives back a buffer that came off the free list and read nothing.
fn keep(buf: BytesMut) {
    FREE.with(|free| {
        let mut free = free.borrow_mut();
        if free.len() < KEPT_PER_THREAD {
            free.push(buf);
        }
    });
}

/// Gives back an empty buffer that has read frames. Kept, with its whole storage again,
/// only when no frame points into that storage any more and it is of a reasonable size.
fn give(mut buf: BytesMut) {
    debug_assert!(buf.is_empty());
    // One byte more than the buffer holds, without allocating: granted only when its
    // storage has room before it (frames were split off) and nothing else points into it;
    // the buffer then spans all of it.
    if buf.try_reclaim(buf.capacity() + 1) && buf.capacity() <= LARGEST_KEPT {
        keep(buf);
    }
}

/// Gives `buf` (empty) back before its connection steps aside for others: always when it
/// grew past its first size (a large frame; it goes back to the allocator unless small
/// enough to keep), otherwise if this thread has no free buffer left, so that the next
/// connection read reuses it instead of allocating one and a burst over many connections
/// goes through a few buffers. While the free list has some, the connection keeps an
/// ordinary buffer until its read finds nothing (one hand-over per wait, not two).
pub(super) fn give_back(buf: &mut BytesMut) {
    let capacity = buf.capacity();
    if capacity > INITIAL_BUFFER || (capacity > 0 && FREE.with(|free| free.borrow().is_empty())) {
        give(std::mem::take(buf));
    }
}

/// Reads into `buf`, taking a buffer first if it has none. With `between_frames` (nothing
/// of a frame is buffered or awaited) an empty `buf` is given back while the read waits.
/// Returns the bytes read, 0 at the end of the stream.
pub(super) fn poll_read_lent<R: AsyncRead + Unpin>(
    rd: &mut R,
    buf: &mut BytesMut,
    between_frames: bool,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    // A buffer is taken before the socket is known to be readable: asking first would
    // cost a second readiness check per read, and a read that finds nothing puts it
    // straight back.
    let lent_now = buf.capacity() == 0;
    if lent_now {
        // What is replaced may still share the storage of the frames it was split from (a
        // frame that ended exactly at the end of its buffer): dropping it lets that go.
        *buf = take();
    }
    let read = tokio_util::io::poll_read_buf(Pin::new(rd), cx, buf);
    if read.is_pending() && between_frames && buf.is_empty() {
        let buf = std::mem::take(buf);
        if lent_now {
            keep(buf);
        } else {
            give(buf);
        }
    }
    read
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    fn free_len() -> usize {
        FREE.with(|free| free.borrow().len())
    }

    /// A connection holds a buffer only from its read to the read that finds nothing.
    #[tokio::test(flavor = "current_thread")]
    async fn a_quiet_connection_holds_no_buffer() {
        let (mut client, accepted) = super::super::connected_pair().await;
        let (mut rd, _wr) = accepted.into_split();
        let mut buf = BytesMut::new();
        let before = free_len();

        // Nothing to read: the buffer taken for the read goes straight back.
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(poll_read_lent(&mut rd, &mut buf, true, &mut cx).is_pending());
        assert_eq!(buf.capacity(), 0);

        client.write_all(b"hello").await.unwrap();
        let n = std::future::poll_fn(|cx| poll_read_lent(&mut rd, &mut buf, true, cx))
            .await
            .unwrap();
        assert_eq!((n, &buf[..]), (5, &b"hello"[..]));

        // The bytes are taken (as the codec does), the next read finds nothing: the buffer
        // goes back to the free list, whole again.
        drop(buf.split());
        assert!(poll_read_lent(&mut rd, &mut buf, true, &mut cx).is_pending());
        assert_eq!(buf.capacity(), 0);
        assert_eq!(free_len(), before + 1);
        FREE.with(|free| assert!(free.borrow().last().unwrap().capacity() >= INITIAL_BUFFER));

        // In the middle of a frame the buffer stays.
        client.write_all(b"x").await.unwrap();
        std::future::poll_fn(|cx| poll_read_lent(&mut rd, &mut buf, false, cx))
            .await
            .unwrap();
        drop(buf.split());
        assert!(poll_read_lent(&mut rd, &mut buf, false, &mut cx).is_pending());
        assert!(buf.capacity() > 0);
    }

    /// A frame that ended exactly at the end of its buffer leaves a view with no room but
    /// a share of the storage; taking a new buffer must let that share go.
    #[tokio::test(flavor = "current_thread")]
    async fn a_used_up_buffer_lets_its_storage_go() {
        let (_client, accepted) = super::super::connected_pair().await;
        let (mut rd, _wr) = accepted.into_split();
        let mut buf = BytesMut::with_capacity(64);
        buf.extend_from_slice(&[b'x'; 64]);
        let frame = buf.split().freeze();
        assert_eq!(buf.capacity(), 0);
        assert!(!frame.is_unique());
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(poll_read_lent(&mut rd, &mut buf, true, &mut cx).is_pending());
        assert!(
            frame.is_unique(),
            "the used-up view still holds the frame's storage"
        );
    }

    #[test]
    fn a_buffer_a_frame_still_points_into_is_not_kept() {
        let before = free_len();
        let mut buf = BytesMut::with_capacity(INITIAL_BUFFER);
        buf.extend_from_slice(b"frame");
        let frame = buf.split().freeze();
        give(buf);
        assert_eq!(free_len(), before);
        drop(frame);

        let mut large = BytesMut::with_capacity(LARGEST_KEPT * 2);
        large.extend_from_slice(b"x");
        drop(large.split());
        give(large);
        assert_eq!(
            free_len(),
            before,
            "a large buffer goes back to the allocator"
        );

        let mut small = BytesMut::with_capacity(INITIAL_BUFFER);
        small.extend_from_slice(b"frame");
        drop(small.split());
        give(small);
        assert_eq!(free_len(), before + 1);
        FREE.with(|free| assert_eq!(free.borrow_mut().pop().unwrap().capacity(), INITIAL_BUFFER));
    }
}

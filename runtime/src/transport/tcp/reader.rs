//! A connection's incoming bytes as frames: the codec over a read buffer, with the read
//! deadlines (a frame that takes too long to arrive, an idle connection).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::AsyncRead;

use super::budget::Meter;
use super::deadline::Deadline;
use super::lent_buffer::{give_back, poll_read_lent};
use crate::codec::{FrameError, FrameText, NestCodec};
use crate::server::ServerConfig;

/// The read buffer counts against the memory budget in steps of this many bytes (rounded
/// down: a connection between small frames counts nothing, and costs no atomic per read).
const CHARGE_STEP: usize = 16 * 1024;

/// Why a connection stops being read.
#[derive(Debug, thiserror::Error)]
pub(super) enum ReadEnd {
    /// The server is shutting down.
    #[error("the server is shutting down")]
    Shutdown,
    /// The peer closed its side between frames.
    #[error("the peer closed the connection")]
    Closed,
    #[error("peer closed the connection in the middle of a frame ({buffered} bytes buffered)")]
    ClosedMidFrame { buffered: usize },
    #[error("a frame stayed incomplete for {0:?}")]
    Incomplete(Duration),
    #[error("no packet for {0:?} (idle timeout)")]
    Idle(Duration),
    #[error("read failed: {0}")]
    Failed(std::io::Error),
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error(transparent)]
    Packet(#[from] crate::packet::InvalidJson),
}

impl ReadEnd {
    /// Logs why the connection closes, at the level the reason deserves.
    pub fn log(&self, peer: std::net::SocketAddr) {
        match self {
            ReadEnd::Shutdown | ReadEnd::Closed => {}
            ReadEnd::Failed(_) => tracing::debug!(%peer, "{self}"),
            ReadEnd::ClosedMidFrame { buffered } => tracing::warn!(
                %peer,
                buffered,
                "peer closed the connection in the middle of a frame"
            ),
            _ => tracing::warn!(%peer, "closing connection: {self}"),
        }
    }
}

/// Frames read from `R`, in batches: every frame a read completed is taken with
/// [`next`](Self::next) before the next [`read`](Self::read).
pub(super) struct FrameReader<R> {
    rd: R,
    codec: NestCodec,
    /// Empty, without storage, while the connection waits between frames ([`super::lent_buffer`]).
    buf: BytesMut,
    /// When the last read returned: every frame it completed arrived then.
    read_at: Instant,
    /// Whether a frame was taken since the last read.
    completed: bool,
    /// What stopped [`next`](Self::next) when the buffer held something that is not a frame.
    bad_frame: Option<FrameError>,
    /// When the frame now being received started; bounds slow senders (slowloris).
    frame_started: Option<Instant>,
    timer: Deadline,
    incomplete_frame_timeout: Option<Duration>,
    idle_timeout: Option<Duration>,
    /// The read buffer's capacity is counted here (a frame still arriving).
    meter: Arc<Meter>,
    /// The capacity counted on `meter` now.
    charged: usize,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(rd: R, config: &ServerConfig, meter: Arc<Meter>) -> Self {
        FrameReader {
            rd,
            codec: NestCodec::with_max_frame_len(config.max_frame_len),
            buf: BytesMut::new(),
            read_at: Instant::now(),
            completed: false,
            bad_frame: None,
            frame_started: None,
            timer: Deadline::new(),
            incomplete_frame_timeout: config.incomplete_frame_timeout,
            idle_timeout: config.idle_timeout,
            meter,
            charged: 0,
        }
    }

    /// Counts the read buffer's capacity on the meter, in steps of [`CHARGE_STEP`]: the
    /// capacity left moves with almost every read, the step only when a large frame
    /// arrives or its buffer is given back.
    fn charge(&mut self) {
        let now = self.buf.capacity() & !(CHARGE_STEP - 1);
        if now == self.charged {
            return;
        }
        if now > self.charged {
            self.meter.add(now - self.charged);
        } else {
            self.meter.sub(self.charged - now);
        }
        self.charged = now;
    }

    /// The next frame already read, if a whole one is buffered. `None` too when what is
    /// buffered is not a frame: [`check`](Self::check), after the frames, says so. (The
    /// frame loop then tests a pointer, not a `Result` of an `Option`.)
    pub fn next(&mut self) -> Option<FrameText> {
        match self.codec.decode_text(&mut self.buf) {
            Ok(frame) => {
                self.completed |= frame.is_some();
                frame
            }
            Err(e) => {
                self.bad_frame = Some(e);
                None
            }
        }
    }

    /// Whether the bytes after the last frame taken were a frame's start (or nothing):
    /// the error that stopped [`next`](Self::next) otherwise.
    pub fn check(&mut self) -> Result<(), ReadEnd> {
        self.bad_frame.take().map_or(Ok(()), |e| Err(e.into()))
    }

    /// Once every frame read is taken, gives the read buffer back if it grew or other
    /// connections may need it ([`super::lent_buffer::give_back`]). A frame whose header
    /// was read and whose body was not is the codec's state, not the buffer's.
    pub fn lend_back(&mut self) {
        if self.buf.is_empty() {
            give_back(&mut self.buf);
        }
    }

    /// Acknowledges what was read at once (see [`quickack`](super::quickack)).
    pub fn ack_now(&self)
    where
        R: super::quickack::AckNow,
    {
        self.rd.ack_now();
    }

    /// Reads more bytes, waiting at most until the read deadline or `stopping`; returns
    /// when they arrived.
    pub async fn read(
        &mut self,
        stopping: &mut (impl Future<Output = ()> + Unpin),
    ) -> Result<Instant, ReadEnd> {
        let partial = !self.buf.is_empty() || self.codec.in_frame();
        let now = self.read_at;
        self.frame_started = match (partial, std::mem::take(&mut self.completed)) {
            (false, _) => None,
            (true, true) => Some(now),
            (true, false) => self.frame_started.or(Some(now)),
        };
        let deadline = match (self.frame_started, self.incomplete_frame_timeout) {
            (Some(start), Some(limit)) => Some((start + limit, ReadEnd::Incomplete(limit))),
            (None, _) => self
                .idle_timeout
                .map(|idle| (now + idle, ReadEnd::Idle(idle))),
            _ => None,
        };
        if partial {
            self.charge();
        } else {
            // Between frames the buffer holds nothing of the peer's, and is given back
            // while the read waits.
            self.meter.sub(std::mem::take(&mut self.charged));
        }
        if self.meter.must_wait() {
            // Over the server's memory budget: no more bytes from a connection holding
            // much until it is back under (or this or another connection is closed).
            tokio::select! {
                () = &mut *stopping => return Err(ReadEnd::Shutdown),
                () = self.meter.wait_for_budget() => {}
            }
        }
        let timer = &mut self.timer;
        let expired = async move {
            let (at, why) = deadline?;
            timer.until(at).await;
            Some(why)
        };
        let read = tokio::select! {
            () = stopping => return Err(ReadEnd::Shutdown),
            // No deadline: `None` at once, which disables this branch.
            Some(why) = expired => return Err(why),
            read = std::future::poll_fn(|cx| poll_read_lent(&mut self.rd, &mut self.buf, !partial, cx)) => read,
        };
        self.read_at = Instant::now();
        self.charge();
        match read {
            // Whitespace after the last frame (a trailing newline) is harmless at EOF.
            Ok(0) if !self.codec.in_frame() && self.buf.iter().all(u8::is_ascii_whitespace) => {
                Err(ReadEnd::Closed)
            }
            Ok(0) => Err(ReadEnd::ClosedMidFrame {
                buffered: self.buf.len(),
            }),
            Ok(_) => Ok(self.read_at),
            Err(e) => Err(ReadEnd::Failed(e)),
        }
    }
}

impl<R> Drop for FrameReader<R> {
    fn drop(&mut self) {
        self.meter.sub(self.charged);
    }
}

//! One accepted connection: socket → codec → packet → dispatch, and a writer that sends
//! replies as they become ready, coalescing those that are ready together into one write.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::deadline::Deadline;
use super::dispatch::{dispatch, ConnCtx, Origin, Slot};
use super::replies::Replies;
use super::{ServerConfig, TlsSettings};
use crate::codec::NestCodec;
use crate::packet::{parse_frame_general, parse_inbound_frame, Parsed};
use crate::router::Router;

/// Read buffer of a new connection (bytes).
const INITIAL_BUFFER: usize = 8 * 1024;
/// Largest read buffer kept while a connection is between frames (bytes).
const RETAINED_BUFFER: usize = 64 * 1024;

/// How long a TLS client may take to complete its handshake.
#[cfg(feature = "tls")]
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Arc<Router>,
    config: Arc<ServerConfig>,
    shutdown: CancellationToken,
    tls: Option<TlsSettings>,
) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(%peer, "could not set TCP_NODELAY: {e}");
    }
    #[cfg(feature = "tls")]
    if let Some(tls) = tls {
        let handshake = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, tls.acceptor.accept(stream));
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = handshake => accepted,
        };
        match accepted {
            Ok(Ok(tls_stream)) => {
                let (rd, wr) = tokio::io::split(tls_stream);
                serve_halves(rd, wr, peer, router, config, shutdown).await;
            }
            Ok(Err(e)) => tracing::warn!(%peer, "closing connection: TLS handshake failed: {e}"),
            Err(_) => {
                tracing::warn!(%peer, "closing connection: TLS handshake took longer than {TLS_HANDSHAKE_TIMEOUT:?}")
            }
        }
        return;
    }
    #[cfg(not(feature = "tls"))]
    let _: Option<TlsSettings> = tls;
    let (rd, wr) = stream.into_split();
    serve_halves(rd, wr, peer, router, config, shutdown).await;
}

async fn serve_halves<R, W>(
    rd: R,
    wr: W,
    peer: SocketAddr,
    router: Arc<Router>,
    config: Arc<ServerConfig>,
    shutdown: CancellationToken,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (replies, writer) = Replies::new(config.max_in_flight_per_connection.max(1), wr, peer);
    let mut conn = ConnCtx {
        router,
        origin: Origin::tcp(peer),
        replies,
    };
    let reader = read_loop(rd, &mut conn, &config, &shutdown);
    tokio::pin!(writer);
    // The reader finishes first (EOF, bad frame or shutdown); the writer then drains the
    // replies of requests still running, and ends once their senders are dropped.
    tokio::select! {
        _ = reader => {}
        _ = &mut writer => { return; }
    }
    drop(conn);
    writer.await;
}

async fn read_loop<R: AsyncRead + Unpin>(
    rd: R,
    conn: &mut ConnCtx,
    config: &ServerConfig,
    shutdown: &CancellationToken,
) {
    let mut outbox = BytesMut::new();
    read_packets(rd, conn, config, shutdown, &mut outbox).await;
    // Replies of the last batch still go out, whatever ended the reading.
    flush(conn, &mut outbox).await;
}

/// Hands the replies collected while processing a batch of packets to the writer, as one
/// buffer: one queue operation and, usually, one write for the whole batch.
async fn flush(conn: &ConnCtx, outbox: &mut BytesMut) {
    if !outbox.is_empty() {
        conn.replies.put_batch(outbox).await;
        // The writer is polled by the same task as this reader, and the reader would go
        // on reading while input keeps coming: step back once so the replies go out now,
        // before the next batch (the latency of a pipelining client is its replies').
        // Not `tokio::task::yield_now`, which waits for a turn of the I/O driver (one more
        // `epoll_wait` per batch): the task is simply queued again.
        YieldOnce(false).await;
    }
}

/// Returns `Pending` once, waking its task at once.
struct YieldOnce(bool);

impl std::future::Future for YieldOnce {
    type Output = ();

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        if self.0 {
            return std::task::Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    }
}

async fn read_packets<R: AsyncRead + Unpin>(
    mut rd: R,
    conn: &mut ConnCtx,
    config: &ServerConfig,
    shutdown: &CancellationToken,
    outbox: &mut BytesMut,
) {
    let peer = conn.origin.peer;
    let mut codec = NestCodec::with_max_frame_len(config.max_frame_len);
    let mut buf = BytesMut::with_capacity(INITIAL_BUFFER);
    let in_flight = Arc::new(Semaphore::new(config.max_in_flight_per_connection.max(1)));
    let mut slot: Slot = None;
    // When the frame now being received started; bounds slow senders (slowloris).
    let mut frame_started: Option<Instant> = None;
    let mut timer = Deadline::new();
    let mut stopping = std::pin::pin!(shutdown.cancelled());
    loop {
        // socket bytes → codec → packets, for every complete frame buffered.
        let mut completed = false;
        loop {
            let frame = match codec.decode_text(&mut buf) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(%peer, "closing connection: {e}");
                    return;
                }
            };
            completed = true;
            // Backpressure: no further packet is read until a slot is free (and what is
            // ready meanwhile is written rather than held). Inline work leaves the slot
            // filled, so this is usually a no-op.
            if slot.is_none() {
                slot = match in_flight.clone().try_acquire_owned() {
                    Ok(p) => Some(p),
                    Err(_) => {
                        flush(conn, outbox).await;
                        tokio::select! {
                            _ = &mut stopping => return,
                            p = in_flight.clone().acquire_owned() => match p {
                                Ok(p) => Some(p),
                                Err(_) => return,
                            },
                        }
                    }
                };
            }
            let parsed = match parse_inbound_frame(&frame) {
                Ok(parsed) => parsed,
                Err(e) => {
                    tracing::warn!(%peer, "closing connection: {e}");
                    return;
                }
            };
            if dispatch(conn, &frame, parsed, &mut slot, outbox).is_err() {
                // A Nest-shaped packet whose `data` is not one JSON value: the general
                // parse decides (invalid JSON closes; a valid packet of another shape,
                // e.g. with a repeated key, is dispatched as that).
                let packet = match parse_frame_general(&frame) {
                    Ok(packet) => packet,
                    Err(e) => {
                        tracing::warn!(%peer, "closing connection: {e}");
                        return;
                    }
                };
                let parsed = Parsed {
                    packet,
                    data_unchecked: false,
                };
                // Checked data cannot fail the check again.
                let _ = dispatch(conn, &frame, parsed, &mut slot, outbox);
            }
        }
        flush(conn, outbox).await;
        let partial = !buf.is_empty() || codec.in_frame();
        if buf.is_empty() && buf.capacity() > RETAINED_BUFFER {
            // A large frame grew the buffer; do not keep that memory on an idle connection.
            buf = BytesMut::with_capacity(INITIAL_BUFFER);
        }
        // When the bytes just processed were read.
        let now = conn.origin.received;
        frame_started = match (partial, completed) {
            (false, _) => None,
            (true, true) => Some(now),
            (true, false) => frame_started.or(Some(now)),
        };
        let deadline = match (frame_started, config.incomplete_frame_timeout) {
            (Some(start), Some(limit)) => Some((start + limit, Expiry::Incomplete(limit))),
            (None, _) => config
                .idle_timeout
                .map(|idle| (now + idle, Expiry::Idle(idle))),
            _ => None,
        };
        let expired = async {
            let (at, why) = deadline?;
            timer.until(at).await;
            Some(why)
        };
        let read = tokio::select! {
            _ = &mut stopping => return,
            // No deadline: `None` at once, which disables this branch.
            Some(why) = expired => {
                tracing::warn!(%peer, "closing connection: {why}");
                return;
            }
            read = rd.read_buf(&mut buf) => read,
        };
        // The arrival time of every packet in what was just read (see `Origin::received`).
        conn.origin.received = Instant::now();
        match read {
            Ok(0) => {
                // Whitespace after the last frame (a trailing newline) is harmless at EOF.
                if codec.in_frame() || !buf.iter().all(u8::is_ascii_whitespace) {
                    tracing::warn!(%peer, buffered = buf.len(), "peer closed the connection in the middle of a frame");
                }
                return;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(%peer, "read failed: {e}");
                return;
            }
        }
    }
}

/// Why a connection timed out.
#[derive(Clone, Copy)]
enum Expiry {
    Incomplete(Duration),
    Idle(Duration),
}

impl std::fmt::Display for Expiry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Expiry::Incomplete(d) => write!(f, "a frame stayed incomplete for {d:?}"),
            Expiry::Idle(d) => write!(f, "no packet for {d:?} (idle timeout)"),
        }
    }
}

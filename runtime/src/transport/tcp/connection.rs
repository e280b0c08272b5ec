//! One accepted connection: frames → inbox → replies ready at once, written per batch;
//! replies that come later go through the same writer.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::budget::Budget;
use super::quickack::AckNow;
use super::reader::{FrameReader, ReadEnd};
use super::replies::{Replies, ReplyLimits};
use crate::server::TlsSettings;
use crate::transport::{Dispatcher, Inbox, Origin, Shutdown};

/// How long a TLS client may take to complete its handshake.
#[cfg(feature = "tls")]
const TLS_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

pub(super) async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    dispatcher: Dispatcher,
    shutdown: Shutdown,
    tls: Option<TlsSettings>,
    budget: Arc<Budget>,
) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(%peer, "could not set TCP_NODELAY: {e}");
    }
    #[cfg(feature = "tls")]
    if let Some(tls) = tls {
        // Boxed: the handshake and the TLS stream are large, and a plain connection's task
        // should not carry room for them.
        return Box::pin(serve_tls(stream, tls, peer, dispatcher, shutdown, budget)).await;
    }
    #[cfg(not(feature = "tls"))]
    let _: Option<TlsSettings> = tls;
    let (rd, wr) = stream.into_split();
    serve_halves(rd, wr, peer, dispatcher, shutdown, budget).await;
}

#[cfg(feature = "tls")]
async fn serve_tls(
    stream: TcpStream,
    tls: TlsSettings,
    peer: SocketAddr,
    dispatcher: Dispatcher,
    shutdown: Shutdown,
    budget: Arc<Budget>,
) {
    let handshake = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, tls.acceptor.accept(stream));
    let accepted = tokio::select! {
        () = shutdown.requested() => return,
        accepted = handshake => accepted,
    };
    match accepted {
        Ok(Ok(tls_stream)) => {
            let (rd, wr) = tokio::io::split(tls_stream);
            serve_halves(rd, wr, peer, dispatcher, shutdown, budget).await;
        }
        Ok(Err(e)) => tracing::warn!(%peer, "closing connection: TLS handshake failed: {e}"),
        Err(_) => {
            tracing::warn!(%peer, "closing connection: TLS handshake took longer than {TLS_HANDSHAKE_TIMEOUT:?}")
        }
    }
}

async fn serve_halves<R, W>(
    rd: R,
    wr: W,
    peer: SocketAddr,
    dispatcher: Dispatcher,
    shutdown: Shutdown,
    budget: Arc<Budget>,
) where
    R: AsyncRead + AckNow + Unpin,
    W: AsyncWrite + Unpin,
{
    let config = dispatcher.config();
    let quickack = config.quickack;
    let meter = budget.meter(peer);
    let limits = ReplyLimits {
        max_batches: config.max_in_flight_per_connection.max(1),
        high_water: config.reply_high_water,
        write_stall: config.write_stall_timeout,
    };
    let (replies, writer) = Replies::new(&limits, meter.clone(), wr, peer);
    let frames = FrameReader::new(rd, config, meter.clone());
    let reader = read_loop(
        frames,
        dispatcher.inbox(),
        Origin::new(peer),
        &replies,
        &shutdown,
        quickack,
    );
    tokio::pin!(writer);
    // The reader finishes first (EOF, bad frame or shutdown); the writer then drains the
    // replies of requests still running, and ends once their senders are dropped. The
    // writer ends first when the peer stops reading; the budget can end both.
    tokio::select! {
        _ = reader => {}
        _ = &mut writer => return,
        () = meter.evicted() => return replies.discard(),
    }
    drop(replies);
    tokio::select! {
        () = &mut writer => {}
        () = meter.evicted() => {}
    }
}

/// Reads packets until the connection ends, and logs why it did. Replies ready at once
/// are collected in `ready` and handed to the writer once per batch of frames read. With
/// `quickack`, a read that produced no reply is acknowledged at once ([`super::quickack`]).
async fn read_loop<R: AsyncRead + AckNow + Unpin>(
    mut frames: FrameReader<R>,
    mut inbox: Inbox,
    mut origin: Origin,
    replies: &Replies,
    shutdown: &Shutdown,
    quickack: bool,
) {
    let mut ready = BytesMut::new();
    let mut stopping = std::pin::pin!(shutdown.requested());
    // Nothing is read before the first pass: nothing to acknowledge.
    let mut read_some = false;
    let ended = async {
        loop {
            while let Some(frame) = frames.next() {
                if !inbox.try_reserve() {
                    // Backpressure: nothing more is read until a request finishes; what
                    // is ready meanwhile is written rather than held.
                    flush(replies, &mut ready).await;
                    tokio::select! {
                        () = &mut stopping => return Err(ReadEnd::Shutdown),
                        () = inbox.reserve() => {}
                    }
                }
                inbox.handle_frame(&origin, &frame, &mut ready, || replies.clone())?;
            }
            frames.check()?;
            // No reply will carry the ACK of these bytes: send it now, or a Nagle peer
            // (every Nest client) holds its next packet until the delayed ACK (~40 ms).
            if ready.is_empty() && quickack && read_some {
                frames.ack_now();
            }
            frames.lend_back();
            flush(replies, &mut ready).await;
            origin.set_received(frames.read(&mut stopping).await?);
            read_some = true;
        }
    };
    let ended: Result<(), ReadEnd> = ended.await;
    if let Err(why) = ended {
        why.log(origin.peer());
    }
    // Replies of the last batch still go out, whatever ended the reading.
    flush(replies, &mut ready).await;
}

/// Hands the replies collected while processing a batch of packets to the writer, as one
/// buffer: one queue operation and, usually, one write for the whole batch.
async fn flush(replies: &Replies, ready: &mut BytesMut) {
    if !ready.is_empty() {
        replies.put_batch(ready).await;
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

impl Future for YieldOnce {
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

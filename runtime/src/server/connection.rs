//! One accepted connection: socket → codec → packet → dispatch, and a writer that sends
//! replies as they become ready, coalescing those that are ready together into one write.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;

use super::dispatch::{dispatch, ConnCtx};
use super::ServerConfig;
use crate::codec::NestCodec;
use crate::packet::parse_inbound;
use crate::router::Router;

/// Replies coalesced into one write at most (bytes).
const MAX_BATCH: usize = 256 * 1024;

pub(crate) async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Arc<Router>,
    config: Arc<ServerConfig>,
    shutdown: CancellationToken,
) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(%peer, "could not set TCP_NODELAY: {e}");
    }
    let (rd, wr) = stream.into_split();
    let (tx, rx) = mpsc::channel::<Bytes>(config.max_in_flight_per_connection.max(1));
    let conn = ConnCtx {
        router,
        peer,
        replies: tx,
    };
    let reader = read_loop(rd, &conn, &config, &shutdown);
    let writer = write_loop(wr, rx, peer);
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

async fn read_loop(
    rd: tokio::net::tcp::OwnedReadHalf,
    conn: &ConnCtx,
    config: &ServerConfig,
    shutdown: &CancellationToken,
) {
    let peer = conn.peer;
    let mut frames = FramedRead::new(rd, NestCodec::with_max_frame_len(config.max_frame_len));
    let in_flight = Arc::new(Semaphore::new(config.max_in_flight_per_connection.max(1)));
    loop {
        // Backpressure: do not read another packet until a slot is free.
        let permit = tokio::select! {
            _ = shutdown.cancelled() => return,
            p = in_flight.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let partial = !frames.read_buffer().is_empty() || frames.decoder().in_frame();
        let next = async {
            match config.incomplete_frame_timeout {
                Some(limit) if partial => tokio::time::timeout(limit, frames.next()).await.ok(),
                _ => Some(frames.next().await),
            }
        };
        let item = tokio::select! {
            _ = shutdown.cancelled() => return,
            item = next => item,
        };
        let frame = match item {
            None => {
                tracing::warn!(%peer, "closing connection: a partial frame stayed incomplete for {:?}", config.incomplete_frame_timeout.unwrap_or_default());
                return;
            }
            Some(None) => return, // clean EOF
            Some(Some(Err(e))) => {
                tracing::warn!(%peer, "closing connection: {e}");
                return;
            }
            Some(Some(Ok(frame))) => frame,
        };
        match parse_inbound(&frame) {
            Ok(packet) => dispatch(conn, packet, permit).await,
            Err(e) => {
                tracing::warn!(%peer, "closing connection: {e}");
                return;
            }
        }
    }
}

async fn write_loop(mut wr: OwnedWriteHalf, mut rx: mpsc::Receiver<Bytes>, peer: SocketAddr) {
    let mut batch = BytesMut::new();
    while let Some(first) = rx.recv().await {
        let result = match rx.try_recv() {
            // Common case: one reply ready, write it as is.
            Err(_) => wr.write_all(&first).await,
            Ok(second) => {
                batch.extend_from_slice(&first);
                batch.extend_from_slice(&second);
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(more) => batch.extend_from_slice(&more),
                        Err(_) => break,
                    }
                }
                let r = wr.write_all(&batch).await;
                batch.clear();
                r
            }
        };
        if let Err(e) = result {
            tracing::debug!(%peer, "write failed, dropping replies for this connection: {e}");
            return;
        }
    }
    let _ = wr.shutdown().await;
}

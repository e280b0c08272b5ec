//! The client's TCP link (Nest's `ClientTCP`): callers queue frames in a shared
//! [`Outbox`], a writer task hands them to the socket, a reader task routes replies to
//! pending calls by id. When either side ends, every pending call fails at once.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;

use crate::codec::{FrameError, FrameText, NestCodec};
use crate::error::ClientError;
use crate::outbox::{Batch, Outbox};
use crate::packet::{parse_reply_frame, Wire};
use crate::pattern::Pattern;
use crate::transport::{ClientTransport, ReplyRouter, TransportFuture};

/// How a client dials and runs its TCP links.
#[derive(Clone)]
pub(crate) struct TcpDial {
    pub connect_timeout: Duration,
    pub max_frame_len: usize,
    pub max_queued_frames: usize,
    #[cfg(feature = "tls")]
    pub tls: Option<crate::tls::ClientTls>,
}

impl TcpDial {
    /// Connects to `addr` (and completes a TLS handshake if configured).
    pub async fn dial(&self, addr: &str) -> Result<Arc<TcpLink>, ClientError> {
        let dialed = tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| ClientError::ConnectTimeout {
                addr: addr.to_owned(),
                timeout: self.connect_timeout,
            })?
            .map_err(|source| ClientError::Connect {
                addr: addr.to_owned(),
                source,
            })?;
        self.open(addr, dialed).await
    }

    /// Starts a link over a freshly dialled socket, after a TLS handshake if configured.
    async fn open(&self, addr: &str, stream: TcpStream) -> Result<Arc<TcpLink>, ClientError> {
        let _ = stream.set_nodelay(true);
        let (max_frame_len, queue) = (self.max_frame_len, self.max_queued_frames);
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.tls {
            let tls_error = |e: std::io::Error| ClientError::Tls {
                addr: addr.to_owned(),
                source: e,
            };
            let name = tls
                .name_for(addr)
                .map_err(|e| tls_error(std::io::Error::new(std::io::ErrorKind::InvalidInput, e)))?;
            let handshake = tls.connector.connect(name, stream);
            let tls_stream = tokio::time::timeout(self.connect_timeout, handshake)
                .await
                .map_err(|_| ClientError::ConnectTimeout {
                    addr: addr.to_owned(),
                    timeout: self.connect_timeout,
                })?
                .map_err(tls_error)?;
            let (rd, wr) = tokio::io::split(tls_stream);
            return Ok(TcpLink::start(addr, rd, wr, max_frame_len, queue));
        }
        let (rd, wr) = stream.into_split();
        Ok(TcpLink::start(addr, rd, wr, max_frame_len, queue))
    }
}

/// One client connection over TCP (or TLS).
pub(crate) struct TcpLink {
    outbox: Outbox,
    pub replies: ReplyRouter,
    stop: CancellationToken,
    /// The address dialled, for errors reported through [`ClientTransport`].
    addr: String,
}

impl TcpLink {
    /// Starts the reader and writer tasks over the two halves of a connection (plain
    /// TCP halves, or the halves of a TLS stream).
    pub fn start<R, W>(addr: &str, rd: R, wr: W, max_frame_len: usize, queue: usize) -> Arc<Self>
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let conn = Arc::new(TcpLink {
            outbox: Outbox::new(queue),
            replies: ReplyRouter::default(),
            stop: CancellationToken::new(),
            addr: addr.to_owned(),
        });
        tokio::spawn(write_loop(wr, conn.clone()));
        tokio::spawn(read_loop(rd, max_frame_len, conn.clone()));
        conn
    }

    pub fn is_closed(&self) -> bool {
        self.stop.is_cancelled()
    }

    /// Queues the frame `put` writes. `Err(reason)` if the connection is over.
    pub async fn write(&self, put: impl Fn(&mut BytesMut)) -> Result<(), String> {
        self.outbox
            .push(put, None)
            .await
            .map_err(|_| self.replies.calls.closed_reason())
    }

    /// Queues `frames` frames written by `put` at once (a batch of calls).
    pub async fn write_frames(
        &self,
        put: impl Fn(&mut BytesMut),
        frames: usize,
    ) -> Result<(), String> {
        self.outbox
            .push_frames(put, frames, None)
            .await
            .map_err(|_| self.replies.calls.closed_reason())
    }

    /// Queues a frame and returns a notice that resolves once the frame has been handed to
    /// the socket (Nest's `emit` completes at that point), so an event is not lost if the
    /// client is dropped or the process exits right after.
    pub async fn write_noticed(
        &self,
        put: impl Fn(&mut BytesMut),
    ) -> Result<oneshot::Receiver<()>, String> {
        let (tx, rx) = oneshot::channel();
        self.outbox
            .push(put, Some(tx))
            .await
            .map_err(|_| self.replies.calls.closed_reason())?;
        Ok(rx)
    }

    /// Queues a frame and resolves once it has been handed to the socket.
    pub async fn write_flushed(&self, put: impl Fn(&mut BytesMut)) -> Result<(), String> {
        let written = self.write_noticed(put).await?;
        written
            .await
            .map_err(|_| self.replies.calls.closed_reason())
    }

    /// Ends the connection, failing every pending call with `reason`.
    pub fn close(&self, reason: &str) {
        // Marked closed first: a caller whose call fails below may retry at once, and must
        // then dial a new connection rather than pick this one again.
        self.stop.cancel();
        self.outbox.close();
        self.replies.calls.close(reason);
    }

    /// The error of a call this link could not send: it is over, for `reason`.
    #[cold]
    pub fn closed_error(&self, reason: String) -> ClientError {
        ClientError::ConnectionClosed {
            addr: self.addr.clone(),
            reason,
        }
    }
}

/// The TCP link through the public interface (the client itself calls it directly).
impl ClientTransport for TcpLink {
    fn wire(&self) -> Wire {
        Wire::Tcp
    }

    fn replies(&self) -> &ReplyRouter {
        &self.replies
    }

    fn request<'a>(
        &'a self,
        _pattern: &'a Pattern,
        _id: u64,
        packet: Bytes,
    ) -> TransportFuture<'a, Result<(), ClientError>> {
        Box::pin(async move {
            self.write(|dst| dst.extend_from_slice(&packet))
                .await
                .map_err(|reason| self.closed_error(reason))
        })
    }

    fn event<'a>(
        &'a self,
        _pattern: &'a Pattern,
        packet: Bytes,
    ) -> TransportFuture<'a, Result<(), ClientError>> {
        Box::pin(async move {
            self.write_flushed(|dst| dst.extend_from_slice(&packet))
                .await
                .map_err(|reason| self.closed_error(reason))
        })
    }

    fn is_closed(&self) -> bool {
        TcpLink::is_closed(self)
    }

    fn close(&self, reason: &str) {
        TcpLink::close(self, reason);
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(mut wr: W, conn: Arc<TcpLink>) {
    let mut batch = Batch::new();
    loop {
        if !conn.outbox.take(&mut batch) {
            // Closing (by the client or because the server went away) once what was
            // queued is written, best effort; then FIN.
            if conn.stop.is_cancelled() {
                break;
            }
            tokio::select! {
                _ = conn.stop.cancelled() => {}
                _ = conn.outbox.sleep() => {}
            }
            continue;
        }
        if let Err(e) = wr.write_all(&batch.buf).await {
            conn.close(&format!("write failed: {e}"));
            conn.outbox.discard();
            return;
        }
        batch.written();
    }
    conn.outbox.discard();
    let _ = wr.shutdown().await;
}

async fn read_loop<R: AsyncRead + Unpin>(rd: R, max_frame_len: usize, conn: Arc<TcpLink>) {
    let mut frames = FramedRead::new(rd, TextFrames(NestCodec::with_max_frame_len(max_frame_len)));
    // Made once, not per frame; frames first, so a buffered reply costs no look at it.
    let mut stopped = std::pin::pin!(conn.stop.cancelled());
    let reason = loop {
        let item = tokio::select! {
            biased;
            item = frames.next() => item,
            _ = &mut stopped => return,
        };
        match item {
            None => break "closed by the server".to_string(),
            Some(Err(e)) => {
                tracing::warn!("closing client connection: {e}");
                break e.to_string();
            }
            Some(Ok(frame)) => match parse_reply_frame(&frame) {
                Ok(reply) => {
                    if let Some(full) = conn.replies.calls.on_reply(reply) {
                        // A streamed reply's caller is that far behind: read nothing more
                        // (the server then stops sending) until it catches up.
                        tokio::select! {
                            () = full.room() => {}
                            _ = &mut stopped => return,
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!("closing client connection: {e}");
                    break e.to_string();
                }
            },
        }
    };
    conn.close(&reason);
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures_util::StreamExt;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;
    use tokio_util::codec::FramedRead;

    use super::TcpDial;
    use crate::codec::NestCodec;
    use crate::{Client, ClientError};

    /// A server answering every request with its `data` (`err` for pattern "fail"),
    /// streaming `data` items for "count".
    async fn responder() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (socket, _) = listener.accept().await.unwrap();
            let (rd, mut wr) = socket.into_split();
            let mut frames = FramedRead::new(rd, NestCodec::new());
            while let Some(Ok(frame)) = frames.next().await {
                let packet: serde_json::Value = serde_json::from_slice(&frame).unwrap();
                let Some(id) = packet["id"].as_str() else {
                    continue; // an event
                };
                let mut out = bytes::BytesMut::new();
                let data = packet["data"].to_string();
                let wire = crate::packet::Wire::Tcp;
                match packet["pattern"].as_str() {
                    Some("fail") => {
                        wire.error(&mut out, br#"{"message":"no"}"#, id_json(id).as_bytes())
                    }
                    Some("count") => {
                        for i in 0..packet["data"].as_u64().unwrap() {
                            wire.stream_item(
                                &mut out,
                                i.to_string().as_bytes(),
                                id_json(id).as_bytes(),
                            );
                        }
                        wire.response(&mut out, None, id_json(id).as_bytes());
                    }
                    _ => wire.response(&mut out, Some(data.as_bytes()), id_json(id).as_bytes()),
                }
                wr.write_all(&out).await.unwrap();
            }
        });
        addr
    }

    fn id_json(id: &str) -> String {
        format!("\"{id}\"")
    }

    /// The TCP link works through the public interface alone, as a custom transport.
    #[tokio::test]
    async fn the_tcp_link_serves_as_a_custom_transport() {
        let addr = responder().await;
        let dial = TcpDial {
            connect_timeout: Duration::from_secs(5),
            max_frame_len: 1 << 20,
            max_queued_frames: 16,
            #[cfg(feature = "tls")]
            tls: None,
        };
        let client = Client::builder(addr)
            .transport(move |addr: String| {
                let dial = dial.clone();
                async move { dial.dial(&addr).await }
            })
            .build();
        let echoed: Vec<i64> = client.send("echo", &[1, 2]).await.unwrap();
        assert_eq!(echoed, [1, 2]);
        client.emit("log", "x").await.unwrap();
        let items: Vec<u64> = client
            .send_stream::<_, _, u64>("count", &3)
            .await
            .unwrap()
            .map(Result::unwrap)
            .collect()
            .await;
        assert_eq!(items, [0, 1, 2]);
        match client.send::<_, _, i64>("fail", &0).await {
            Err(ClientError::Remote { error, .. }) => assert_eq!(error.message(), Some("no")),
            other => panic!("unexpected {other:?}"),
        }
    }
}

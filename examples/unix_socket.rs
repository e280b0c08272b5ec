//! A transport of your own, written with nestling's public API alone: Nest's TCP framing
//! (`<len>#<json>`) over a Unix domain socket, both ends.
//!
//! * server side: [`Transport`] — accept connections, read frames with [`NestCodec`], hand
//!   each to an [`Inbox`], write the replies it makes ready (a batch per read) and those
//!   that come later (a [`ReplySink`]);
//! * client side: [`ClientTransport`] + a connector — frame each packet onto the socket,
//!   read reply frames and give them to the [`ReplyRouter`], which resolves calls by id.
//!
//! The same controllers, the same typed clients; only the transport changes.
//!
//! Run: `cargo run --example unix_socket` (serves on a socket in the temp directory, calls
//! it once per kind of call, prints the results, stops). `tests/unix_socket.rs` runs it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use nestling::codec::NestCodec;
use nestling::packet::Wire;
use nestling::transport::{
    ClientTransport, Dispatcher, Inbox, Origin, ReplyRouter, ReplySink, Shutdown, Transport,
    TransportFuture,
};
use nestling::{Client, ClientError, Pattern, RpcException, Server, ServerError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;

#[derive(Default)]
struct UserController;

#[nestling::controller]
impl UserController {
    #[message_pattern("sum")]
    fn sum(&self, nums: Vec<i64>) -> i64 {
        nums.iter().sum()
    }

    #[message_pattern("countdown")]
    fn countdown(&self, from: u32) -> impl futures_util::Stream<Item = u32> + Send + 'static {
        futures_util::stream::iter((0..=from).rev())
    }

    #[message_pattern("fail")]
    async fn fail(&self) -> Result<(), RpcException> {
        Err(RpcException::new("failed on purpose"))
    }

    #[event_pattern("log")]
    fn log(&self, text: String) {
        println!("log: {text}");
    }
}

// ---- server side ------------------------------------------------------------------------

/// Serves on a Unix socket: Nest's TCP transport, minus TCP.
struct UnixTransport {
    listener: UnixListener,
}

impl Transport for UnixTransport {
    async fn serve(self, dispatcher: Dispatcher, shutdown: Shutdown) -> Result<(), ServerError> {
        let mut connections = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                () = shutdown.requested() => break,
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        let (dispatcher, shutdown) = (dispatcher.clone(), shutdown.clone());
                        connections.spawn(serve_connection(stream, dispatcher, shutdown));
                    }
                    Err(e) => eprintln!("accept failed: {e}"),
                },
            }
        }
        // Graceful: connections see the shutdown, finish what they started, and end.
        let grace = dispatcher.config().shutdown_grace;
        let _ = tokio::time::timeout(grace, async {
            while connections.join_next().await.is_some() {}
        })
        .await;
        Ok(())
    }
}

/// Replies that come later (async handlers, streams) go to the connection's writer.
#[derive(Clone)]
struct Writer(mpsc::Sender<Bytes>);

impl ReplySink for Writer {
    const WIRE: Wire = Wire::Tcp; // `<len>#<json>` frames
    async fn send(&self, packet: Bytes) -> bool {
        self.0.send(packet).await.is_ok()
    }
}

async fn serve_connection(stream: UnixStream, dispatcher: Dispatcher, shutdown: Shutdown) {
    let (mut rd, wr) = stream.into_split();
    let (tx, rx) = mpsc::channel(64);
    let writer = tokio::spawn(write_frames(wr, rx));
    let writer_handle = Writer(tx);
    let mut inbox: Inbox = dispatcher.inbox();
    // A Unix socket has no peer address to report: handlers see this one.
    let mut origin = Origin::new(([127, 0, 0, 1], 0).into());
    let mut codec = NestCodec::with_max_frame_len(dispatcher.config().max_frame_len);
    let (mut buf, mut ready) = (BytesMut::new(), BytesMut::new());
    'read: loop {
        // Every whole frame buffered: into the inbox; replies ready at once collect in `ready`.
        loop {
            let frame = match codec.decode_text(&mut buf) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => {
                    eprintln!("closing connection: {e}");
                    break 'read;
                }
            };
            inbox.reserve().await;
            let handled = inbox.handle_frame(&origin, &frame, &mut ready, || writer_handle.clone());
            if let Err(e) = handled {
                eprintln!("closing connection: {e}");
                break 'read;
            }
        }
        if !ready.is_empty() && !writer_handle.send(ready.split().freeze()).await {
            break;
        }
        let read = tokio::select! {
            () = shutdown.requested() => break,
            read = rd.read_buf(&mut buf) => read,
        };
        match read {
            Ok(0) | Err(_) => break,
            Ok(_) => origin.mark_received(),
        }
    }
    if !ready.is_empty() {
        writer_handle.send(ready.split().freeze()).await;
    }
    // The writer ends once every sender is gone: this one, and those of requests still
    // running (their replies still go out).
    drop(writer_handle);
    let _ = writer.await;
}

async fn write_frames(mut wr: OwnedWriteHalf, mut rx: mpsc::Receiver<Bytes>) {
    while let Some(frames) = rx.recv().await {
        if wr.write_all(&frames).await.is_err() {
            return;
        }
    }
    let _ = wr.shutdown().await;
}

// ---- client side ------------------------------------------------------------------------

/// One client connection over a Unix socket.
struct UnixLink {
    writer: tokio::sync::Mutex<OwnedWriteHalf>,
    replies: ReplyRouter,
}

impl UnixLink {
    async fn connect(path: &Path) -> Result<Arc<Self>, ClientError> {
        let stream = UnixStream::connect(path)
            .await
            .map_err(|source| ClientError::Connect {
                addr: path.display().to_string(),
                source,
            })?;
        let (rd, wr) = stream.into_split();
        let link = Arc::new(UnixLink {
            writer: tokio::sync::Mutex::new(wr),
            replies: ReplyRouter::new(),
        });
        tokio::spawn(read_replies(rd, link.replies.clone()));
        Ok(link)
    }

    async fn write(&self, packet: Bytes) -> Result<(), ClientError> {
        self.writer
            .lock()
            .await
            .write_all(&packet)
            .await
            .map_err(|e| {
                let reason = format!("write failed: {e}");
                self.replies.close_all(&reason);
                ClientError::ConnectionClosed {
                    addr: "unix socket".into(),
                    reason,
                }
            })
    }
}

/// Reads reply frames until the socket ends, then fails whatever still waits.
async fn read_replies(mut rd: OwnedReadHalf, replies: ReplyRouter) {
    let (mut codec, mut buf) = (NestCodec::new(), BytesMut::new());
    let reason = loop {
        loop {
            match codec.decode_text(&mut buf) {
                Ok(Some(frame)) => {
                    if let Err(e) = replies.deliver_packet(frame.bytes()) {
                        replies.close_all(&format!("unreadable reply: {e}"));
                        return;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    replies.close_all(&format!("bad frame: {e}"));
                    return;
                }
            }
        }
        match rd.read_buf(&mut buf).await {
            Ok(0) => break "the server closed the connection".to_owned(),
            Ok(_) => {}
            Err(e) => break format!("read failed: {e}"),
        }
    };
    replies.close_all(&reason);
}

impl ClientTransport for UnixLink {
    fn wire(&self) -> Wire {
        Wire::Tcp // the client frames every packet as `<len>#<json>`
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
        Box::pin(self.write(packet))
    }

    fn event<'a>(
        &'a self,
        _pattern: &'a Pattern,
        packet: Bytes,
    ) -> TransportFuture<'a, Result<(), ClientError>> {
        Box::pin(self.write(packet))
    }
}

/// A client whose address is a socket path.
fn unix_client(path: &Path) -> Client {
    Client::builder(path.display().to_string())
        .transport(|addr: String| async move { UnixLink::connect(Path::new(&addr)).await })
        .build()
}

// ---- both, end to end ---------------------------------------------------------------------

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::var_os("SOCKET").map_or_else(
        || std::env::temp_dir().join(format!("nestling-{}.sock", std::process::id())),
        PathBuf::from,
    );
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)?;
    let server = Server::builder().build()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.serve_on(UnixTransport { listener }, async {
        let _ = stopped.await;
    }));

    let users = UserControllerClient::new(unix_client(&path));
    let six = users.sum(vec![1, 2, 3]).await?;
    println!("sum: {six}");
    users.log("求和1111".into()).await?;
    let items: Vec<u32> = users
        .countdown(3)
        .await?
        .map(|item| item.expect("an item"))
        .collect()
        .await;
    println!("countdown: {items:?}");
    let failure = users.fail().await.expect_err("an error reply");
    let message = failure.remote().and_then(|r| r.message()).unwrap_or("?");
    println!("fail: {message}");

    let _ = stop.send(());
    serving.await??;
    let _ = std::fs::remove_file(&path);
    Ok(())
}

//! Calling a server's controllers in-process, for unit tests: what `Test.createTestingModule`
//! and a `ClientProxy` give Nest users.
//!
//! [`client`] connects a real [`Client`] to a [`Server`] through an in-process transport:
//! every call goes through the whole pipeline — routing by pattern, payload decoding,
//! guards and other layers, handler errors in Nest's shapes, streamed replies, events —
//! and only the socket is left out. Typed clients (`{Name}Client`) work on it as on any
//! client.
//!
//! ```
//! use nestling::{testing, RpcException, Server};
//!
//! #[derive(Default)]
//! struct Math;
//!
//! #[nestling::controller]
//! impl Math {
//!     #[message_pattern("sum")]
//!     fn sum(&self, nums: Vec<i64>) -> i64 { nums.iter().sum() }
//!
//!     #[message_pattern("div")]
//!     fn div(&self, (a, b): (i64, i64)) -> Result<i64, RpcException> {
//!         a.checked_div(b).ok_or_else(|| RpcException::new("division by zero"))
//!     }
//! }
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let math = MathClient::new(testing::client(&Server::builder().build()?));
//! assert_eq!(math.sum(vec![1, 2, 3]).await?, 6);
//! let err = math.div((1, 0)).await.unwrap_err();
//! assert_eq!(err.remote().unwrap().message(), Some("division by zero"));
//! # Ok::<_, Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```

use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};

use crate::codec::FrameText;
use crate::error::ClientError;
use crate::packet::Wire;
use crate::pattern::Pattern;
use crate::transport::{
    ClientTransport, Dispatcher, Inbox, Origin, ReplyRouter, ReplySink, TransportFuture,
};
use crate::{Client, Server};

/// The address an in-process client reports, and the peer address its requests' handlers
/// see in [`Context::peer_addr`](crate::Context::peer_addr).
pub const PEER: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

/// A [`Client`] of `server` that calls its handlers in-process: no socket, the whole
/// pipeline otherwise (see the [module docs](self)). Each client is one "connection":
/// the server's per-connection limits apply to it. Needs a tokio runtime, as any client.
///
/// ```
/// # #[derive(Default)] struct Greeter;
/// # #[nestling::controller]
/// # impl Greeter {
/// #     #[message_pattern("greet")]
/// #     fn greet(&self, name: String) -> String { format!("hello, {name}") }
/// # }
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let client = nestling::testing::client(&nestling::Server::builder().build().unwrap());
/// let hello: String = client.send("greet", "nest").await.unwrap();
/// assert_eq!(hello, "hello, nest");
/// # });
/// ```
///
/// Controllers' [`Lifecycle::on_start`](crate::Lifecycle::on_start) hooks run before the
/// first call is handled (a failure fails the calls with
/// [`ClientError::Connect`] naming the controller); [`close`] runs their `on_shutdown`.
pub fn client(server: &Server) -> Client {
    let server = server.clone();
    Client::builder("in-process")
        .transport(move |_addr: String| {
            let server = server.clone();
            async move {
                server
                    .lifecycle
                    .start()
                    .await
                    .map_err(|e| ClientError::Connect {
                        addr: "in-process".into(),
                        source: std::io::Error::other(e),
                    })?;
                Ok::<_, ClientError>(InProcess::new(&server.dispatcher()))
            }
        })
        .build()
}

/// Runs the [`Lifecycle::on_shutdown`](crate::Lifecycle::on_shutdown) hooks of `server`'s
/// controllers, as a graceful shutdown does (Nest's `app.close()` at the end of a test):
/// once, only if they started, and only when no transport is serving the server.
///
/// ```
/// use std::sync::atomic::{AtomicU32, Ordering};
/// use nestling::{BoxError, Lifecycle};
///
/// #[derive(Default)]
/// struct Pool { open: AtomicU32 }
/// #[nestling::controller]
/// impl Pool {
///     #[message_pattern("open")]
///     fn open(&self) -> u32 { self.open.load(Ordering::SeqCst) }
/// }
/// impl Lifecycle for Pool {
///     async fn on_start(&self) -> Result<(), BoxError> { self.open.fetch_add(1, Ordering::SeqCst); Ok(()) }
///     async fn on_shutdown(&self) { self.open.fetch_sub(1, Ordering::SeqCst); }
/// }
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let server = nestling::Server::builder().build().unwrap();
/// let client = nestling::testing::client(&server);
/// assert_eq!(client.send::<_, _, u32>("open", &()).await.unwrap(), 1);
/// nestling::testing::close(&server).await;
/// assert_eq!(client.send::<_, _, u32>("open", &()).await.unwrap(), 0);
/// # });
/// ```
pub async fn close(server: &Server) {
    server.lifecycle.stop().await;
}

/// One in-process "connection": packets go straight to the server's inbox; replies come
/// back to the client's reply router.
struct InProcess {
    inbox: tokio::sync::Mutex<Inbox>,
    origin: Origin,
    replies: ReplyRouter,
}

impl InProcess {
    fn new(dispatcher: &Dispatcher) -> Self {
        InProcess {
            inbox: tokio::sync::Mutex::new(dispatcher.inbox()),
            origin: Origin::new(PEER),
            replies: ReplyRouter::new(),
        }
    }

    /// Hands one packet to the server, as a connection's reader would; returns the reply
    /// that was ready at once, if any.
    async fn handle(&self, packet: Bytes) -> Result<Option<Bytes>, ClientError> {
        let frame = FrameText::try_from(packet).map_err(|e| self.refused(e))?;
        let mut inbox = self.inbox.lock().await;
        inbox.reserve().await;
        let mut ready = BytesMut::new();
        let sink = || Replies(self.replies.clone());
        let mut origin = self.origin.clone();
        origin.mark_received();
        inbox
            .handle_frame(&origin, &frame, &mut ready, sink)
            .map_err(|e| self.refused(e))?;
        Ok((!ready.is_empty()).then(|| ready.freeze()))
    }

    /// A packet the server would have closed the connection for (never one the client
    /// encodes).
    fn refused(&self, e: impl std::fmt::Display) -> ClientError {
        let reason = format!("the server refused the packet: {e}");
        self.replies.close_all(&reason);
        ClientError::ConnectionClosed {
            addr: "in-process".into(),
            reason,
        }
    }
}

impl ClientTransport for InProcess {
    fn wire(&self) -> Wire {
        Wire::Bare
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
            if let Some(reply) = self.handle(packet).await? {
                // The server's own encoding: always JSON.
                let _ = self.replies.deliver_packet(&reply);
            }
            Ok(())
        })
    }

    fn event<'a>(
        &'a self,
        _pattern: &'a Pattern,
        packet: Bytes,
    ) -> TransportFuture<'a, Result<(), ClientError>> {
        Box::pin(async move { self.handle(packet).await.map(drop) })
    }
}

/// Replies that come later (async handlers, streams), delivered to the waiting call.
struct Replies(ReplyRouter);

impl ReplySink for Replies {
    const WIRE: Wire = Wire::Bare;

    async fn send(&self, packet: Bytes) -> bool {
        let _ = self.0.deliver_packet(&packet);
        !self.0.is_closed()
    }
}

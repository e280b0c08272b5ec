//! The client side of a transport, in the spirit of Nest's `ClientProxy`: a
//! [`ClientTransport`] carries a [`Client`](crate::Client)'s requests and events to a
//! service, and hands the replies it receives to a [`ReplyRouter`], which resolves the
//! waiting calls by id. A [`ClientConnector`] opens such a transport; the client calls it
//! on its first call and again after the transport closes, with the same reconnect
//! pacing as the built-in transports ([`ClientBuilder::reconnect_backoff`]).
//!
//! The built-in TCP, NATS and RabbitMQ transports implement this interface too.
//!
//! [`ClientBuilder::reconnect_backoff`]: crate::ClientBuilder::reconnect_backoff

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;

use crate::client::pending::PendingCalls;
use crate::error::ClientError;
use crate::packet::{parse_reply, InvalidJson, Reply, Wire};
use crate::pattern::Pattern;

/// The future a [`ClientTransport`] or [`ClientConnector`] method returns: boxed, so the
/// traits can be used as trait objects.
///
/// ```
/// use nestling_runtime::transport::TransportFuture;
/// use nestling_runtime::ClientError;
///
/// fn sent<'a>() -> TransportFuture<'a, Result<(), ClientError>> {
///     Box::pin(async { Ok(()) })
/// }
/// # tokio::runtime::Runtime::new().unwrap().block_on(sent()).unwrap();
/// ```
pub type TransportFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Carries one client's packets to a service and its replies back (Nest's `ClientProxy`:
/// `publish` is [`request`](Self::request), `dispatchEvent` is [`event`](Self::event)).
///
/// The client encodes every packet in the transport's [`wire`](Self::wire) form before
/// handing it over: `{"pattern":…,"data":…,"id":"7"}` for a request,
/// `{"pattern":…,"data":…}` for an event (with `metadata` when a trace id is set). The
/// transport only moves bytes: it sends them and, for every reply it receives, calls
/// [`ReplyRouter::deliver`] (or [`ReplyRouter::deliver_packet`]) on its
/// [`replies`](Self::replies), which wakes the call the reply's `id` names.
///
/// When the transport ends (its peer went away, a read failed), it must call
/// [`ReplyRouter::close_all`]: every waiting call then fails with
/// [`ClientError::ConnectionClosed`], [`is_closed`](Self::is_closed) turns true, and the
/// client's next call opens a new transport through its [`ClientConnector`].
///
/// An in-process transport answering every request with its own `data`, plugged into a
/// client with [`ClientBuilder::transport`](crate::ClientBuilder::transport):
///
/// ```
/// use bytes::Bytes;
/// use nestling_runtime::packet::Wire;
/// use nestling_runtime::transport::{ClientTransport, ReplyRouter, TransportFuture};
/// use nestling_runtime::{Client, ClientError, Pattern};
///
/// /// Answers every request at once, in-process, with the request's own `data`.
/// struct Echo {
///     replies: ReplyRouter,
/// }
///
/// impl ClientTransport for Echo {
///     fn wire(&self) -> Wire {
///         Wire::Bare // packets are JSON alone, no `<len>#` frame
///     }
///     fn replies(&self) -> &ReplyRouter {
///         &self.replies
///     }
///     fn request<'a>(
///         &'a self,
///         _pattern: &'a Pattern,
///         id: u64,
///         packet: Bytes,
///     ) -> TransportFuture<'a, Result<(), ClientError>> {
///         let request: serde_json::Value = serde_json::from_slice(&packet).unwrap();
///         let reply = serde_json::json!({
///             "response": request["data"],
///             "isDisposed": true,
///             "id": id.to_string(),
///         });
///         let reply = Bytes::from(reply.to_string());
///         Box::pin(async move {
///             self.replies.deliver_packet(&reply).expect("a JSON reply");
///             Ok(())
///         })
///     }
///     fn event<'a>(
///         &'a self,
///         _pattern: &'a Pattern,
///         _packet: Bytes,
///     ) -> TransportFuture<'a, Result<(), ClientError>> {
///         Box::pin(async { Ok(()) })
///     }
/// }
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let client = Client::builder("echo://local")
///     .transport(|_addr: String| async {
///         Ok::<_, ClientError>(Echo { replies: ReplyRouter::new() })
///     })
///     .build();
/// let echoed: Vec<i64> = client.send("anything", &[1, 2, 3]).await?;
/// assert_eq!(echoed, [1, 2, 3]);
/// client.emit("log", "ignored").await?;
/// # Ok::<_, ClientError>(())
/// # }).unwrap();
/// ```
pub trait ClientTransport: Send + Sync + 'static {
    /// How the client encodes packets for this transport: [`Wire::Tcp`] for Nest's
    /// `<len>#<json>` frames (a byte stream), [`Wire::Bare`] for the JSON alone (a
    /// message-based transport such as NATS).
    fn wire(&self) -> Wire;

    /// The table of this transport's waiting calls; the transport delivers replies to it.
    /// One router per transport instance: a new connection starts with a new router.
    fn replies(&self) -> &ReplyRouter;

    /// Sends request `id`, already encoded as `packet`. The call is registered in
    /// [`replies`](Self::replies) before this is called, so a reply may arrive at once.
    ///
    /// Resolves once the packet is on its way (queued or written); the reply is awaited
    /// separately. An `Err` fails this call with that error, unchanged: return
    /// [`ClientError::ConnectionClosed`] when the transport is over (and make
    /// [`is_closed`](Self::is_closed) true, so the next call reconnects).
    fn request<'a>(
        &'a self,
        pattern: &'a Pattern,
        id: u64,
        packet: Bytes,
    ) -> TransportFuture<'a, Result<(), ClientError>>;

    /// Sends an event (no `id`, no reply): resolves once the packet has been handed to the
    /// underlying connection, as Nest's `emit` completes. Errors as for
    /// [`request`](Self::request).
    fn event<'a>(
        &'a self,
        pattern: &'a Pattern,
        packet: Bytes,
    ) -> TransportFuture<'a, Result<(), ClientError>>;

    /// Whether this transport is over; the client then connects anew on its next call.
    /// By default: whether [`replies`](Self::replies) was closed.
    fn is_closed(&self) -> bool {
        self.replies().is_closed()
    }

    /// Ends the transport (the client was closed or dropped), failing every waiting call
    /// with `reason`. By default closes [`replies`](Self::replies) only; a transport with
    /// a connection or tasks of its own should end them here too.
    fn close(&self, reason: &str) {
        self.replies().close_all(reason);
    }
}

/// A shared transport is a transport: a connector may return the `Arc` its own reader
/// task also holds.
impl<T: ClientTransport + ?Sized> ClientTransport for Arc<T> {
    fn wire(&self) -> Wire {
        (**self).wire()
    }

    fn replies(&self) -> &ReplyRouter {
        (**self).replies()
    }

    fn request<'a>(
        &'a self,
        pattern: &'a Pattern,
        id: u64,
        packet: Bytes,
    ) -> TransportFuture<'a, Result<(), ClientError>> {
        (**self).request(pattern, id, packet)
    }

    fn event<'a>(
        &'a self,
        pattern: &'a Pattern,
        packet: Bytes,
    ) -> TransportFuture<'a, Result<(), ClientError>> {
        (**self).event(pattern, packet)
    }

    fn is_closed(&self) -> bool {
        (**self).is_closed()
    }

    fn close(&self, reason: &str) {
        (**self).close(reason);
    }
}

/// Opens a [`ClientTransport`] for a [`Client`](crate::Client) (Nest's `connect()`),
/// plugged in with [`ClientBuilder::transport`](crate::ClientBuilder::transport).
///
/// The client calls it on its first call (or [`Client::connect`](crate::Client::connect))
/// and whenever its transport has closed, one connect at a time. A connect taking longer
/// than [`ClientBuilder::connect_timeout`](crate::ClientBuilder::connect_timeout) fails
/// with [`ClientError::ConnectTimeout`]; a failed connect is paced by
/// [`ClientBuilder::reconnect_backoff`](crate::ClientBuilder::reconnect_backoff).
///
/// Any `Fn(String) -> impl Future<Output = Result<T, ClientError>>` with `T:
/// ClientTransport` is a connector (it gets the client's address):
///
/// ```
/// use nestling_runtime::transport::ClientConnector;
/// use nestling_runtime::ClientError;
/// # use nestling_runtime::transport::{ClientTransport, ReplyRouter, TransportFuture};
/// # struct Link(ReplyRouter);
/// # impl ClientTransport for Link {
/// #     fn wire(&self) -> nestling_runtime::packet::Wire { nestling_runtime::packet::Wire::Bare }
/// #     fn replies(&self) -> &ReplyRouter { &self.0 }
/// #     fn request<'a>(&'a self, _: &'a nestling_runtime::Pattern, _: u64, _: bytes::Bytes)
/// #         -> TransportFuture<'a, Result<(), ClientError>> { Box::pin(async { Ok(()) }) }
/// #     fn event<'a>(&'a self, _: &'a nestling_runtime::Pattern, _: bytes::Bytes)
/// #         -> TransportFuture<'a, Result<(), ClientError>> { Box::pin(async { Ok(()) }) }
/// # }
///
/// fn is_connector(_: &impl ClientConnector) {}
/// let connector = |addr: String| async move {
///     if addr.is_empty() {
///         return Err(ClientError::Connect {
///             addr,
///             source: std::io::Error::other("no address"),
///         });
///     }
///     Ok(Link(ReplyRouter::new()))
/// };
/// is_connector(&connector);
/// let client = nestling_runtime::Client::builder("mem://a").transport(connector).build();
/// ```
pub trait ClientConnector: Send + Sync + 'static {
    /// Opens a transport to `addr` (the client's address, as given to
    /// [`Client::builder`](crate::Client::builder)). A failure is returned to the caller
    /// as is: [`ClientError::Connect`] is the usual one.
    fn connect<'a>(
        &'a self,
        addr: &'a str,
    ) -> TransportFuture<'a, Result<Arc<dyn ClientTransport>, ClientError>>;
}

impl<F, Fut, T> ClientConnector for F
where
    F: Fn(String) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<T, ClientError>> + Send + 'static,
    T: ClientTransport,
{
    fn connect<'a>(
        &'a self,
        addr: &'a str,
    ) -> TransportFuture<'a, Result<Arc<dyn ClientTransport>, ClientError>> {
        let opening = self(addr.to_owned());
        Box::pin(async move {
            let transport: Arc<dyn ClientTransport> = Arc::new(opening.await?);
            Ok(transport)
        })
    }
}

/// The calls waiting for replies on one transport: a transport hands every reply it
/// receives to [`deliver`](Self::deliver), which resolves the call the reply's `id` names
/// (Nest's `routingMap`). Cloning is cheap; clones share the table.
///
/// A reply for an unknown id (a call that timed out, or none of ours) is ignored, as Nest
/// does. A `send` resolves with the last value once the reply says `isDisposed`; a
/// `send_stream` receives every value.
///
/// ```
/// use bytes::Bytes;
/// use nestling_runtime::transport::ReplyRouter;
///
/// let replies = ReplyRouter::new();
/// // Nobody waits for call 7: the reply is dropped.
/// replies.deliver_packet(&Bytes::from_static(br#"{"response":6,"isDisposed":true,"id":"7"}"#))?;
/// assert!(!replies.is_closed());
/// replies.close_all("the peer went away");
/// assert!(replies.is_closed());
/// assert_eq!(replies.closed_reason().as_deref(), Some("the peer went away"));
/// # Ok::<_, nestling_runtime::packet::InvalidJson>(())
/// ```
#[derive(Clone, Default)]
pub struct ReplyRouter {
    pub(crate) calls: Arc<PendingCalls>,
}

impl std::fmt::Debug for ReplyRouter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplyRouter")
            .field("closed", &self.closed_reason())
            .finish_non_exhaustive()
    }
}

impl ReplyRouter {
    /// An empty, open table.
    ///
    /// ```
    /// assert!(!nestling_runtime::transport::ReplyRouter::new().is_closed());
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Routes a reply to the call its `id` names (a stream transport such as TCP, where
    /// many calls share one connection). A reply without an id, or with one that is not a
    /// waiting call's, is ignored.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use nestling_runtime::packet::Reply;
    /// use nestling_runtime::transport::ReplyRouter;
    ///
    /// ReplyRouter::new().deliver(Reply::Value {
    ///     id: Some(Bytes::from_static(br#""1""#)),
    ///     response: Some(Bytes::from_static(b"6")),
    ///     disposed: true,
    /// });
    /// ```
    #[inline]
    pub fn deliver(&self, reply: Reply) {
        // Not paced: a transport of one's own bounds what it takes in itself.
        let _ = self.calls.on_reply(reply);
    }

    /// Parses a reply packet (the JSON alone, without a `<len>#` frame) with
    /// [`parse_reply`] and routes it as [`deliver`](Self::deliver) does. `Err` if the
    /// packet is not JSON: the transport should then close, as Nest's client does on an
    /// unreadable frame.
    ///
    /// ```
    /// use bytes::Bytes;
    /// let replies = nestling_runtime::transport::ReplyRouter::new();
    /// assert!(replies.deliver_packet(&Bytes::from_static(b"{not json")).is_err());
    /// ```
    pub fn deliver_packet(&self, packet: &Bytes) -> Result<(), InvalidJson> {
        self.deliver(parse_reply(packet)?);
        Ok(())
    }

    /// Routes a reply that arrived for call `id` (a message transport with a reply address
    /// per call, as NATS's reply subjects). A reply naming another id is ignored, as Nest's
    /// `ClientNats` does.
    ///
    /// ```
    /// use nestling_runtime::packet::Reply;
    /// let replies = nestling_runtime::transport::ReplyRouter::new();
    /// replies.deliver_to(3, Reply::Value { id: None, response: None, disposed: true });
    /// ```
    pub fn deliver_to(&self, id: u64, reply: Reply) {
        self.calls.on_reply_for(id, reply);
    }

    /// Ends call `id` with [`ClientError::NoResponders`]: nobody serves its pattern (for
    /// transports that can tell, as NATS does).
    ///
    /// ```
    /// nestling_runtime::transport::ReplyRouter::new().no_responders(3); // nobody waits: a no-op
    /// ```
    pub fn no_responders(&self, id: u64) {
        self.calls.no_responders(id);
    }

    /// Ends call `id` alone with [`ClientError::ConnectionClosed`] carrying `reason` (its
    /// reply was unusable); the transport and the other calls go on.
    ///
    /// ```
    /// nestling_runtime::transport::ReplyRouter::new().fail(3, "the reply was not JSON");
    /// ```
    pub fn fail(&self, id: u64, reason: &str) {
        self.calls.fail(id, reason);
    }

    /// Marks the transport over: every waiting call fails at once with
    /// [`ClientError::ConnectionClosed`] carrying `reason`, and so does any call started
    /// later on this router. The first reason is kept.
    ///
    /// ```
    /// let replies = nestling_runtime::transport::ReplyRouter::new();
    /// replies.close_all("closed by the server");
    /// replies.close_all("again");
    /// assert_eq!(replies.closed_reason().as_deref(), Some("closed by the server"));
    /// ```
    pub fn close_all(&self, reason: &str) {
        self.calls.close(reason);
    }

    /// Whether [`close_all`](Self::close_all) was called.
    ///
    /// ```
    /// assert!(!nestling_runtime::transport::ReplyRouter::new().is_closed());
    /// ```
    pub fn is_closed(&self) -> bool {
        self.calls.is_closed()
    }

    /// The reason given to [`close_all`](Self::close_all), once closed.
    ///
    /// ```
    /// assert_eq!(nestling_runtime::transport::ReplyRouter::new().closed_reason(), None);
    /// ```
    pub fn closed_reason(&self) -> Option<String> {
        self.calls.closed()
    }
}

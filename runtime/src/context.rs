//! Per-request context handed to handlers that ask for it (Nest's `TcpContext`).

use std::net::SocketAddr;

use bytes::Bytes;
use serde::de::DeserializeOwned;

use crate::codec::FrameText;
use crate::packet::Span;

/// A received packet's frame: text the codec already validated (TCP), or bytes nobody has
/// checked (NATS payloads, contexts built by hand). Keeping the difference lets payloads
/// of TCP packets be read as text, without checking their UTF-8 again.
#[derive(Clone)]
pub(crate) enum Frame {
    Text(FrameText),
    Bytes(Bytes),
}

impl Frame {
    pub fn bytes(&self) -> &Bytes {
        match self {
            Frame::Text(text) => text.bytes(),
            Frame::Bytes(bytes) => bytes,
        }
    }

    /// The frame as text, when it is known to be UTF-8.
    pub fn text(&self) -> Option<&str> {
        match self {
            Frame::Text(text) => Some(text.as_str()),
            Frame::Bytes(_) => None,
        }
    }
}

/// Where a received packet's fields lie in its frame.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PacketFields {
    pub pattern: Span,
    pub id: Option<Span>,
    pub metadata: Option<Span>,
}

/// What a handler can know about the packet it is serving, besides its payload (Nest's
/// `TcpContext` and `NatsContext` in one).
///
/// Add a parameter of type `&Context` (or `Context`) to a handler to receive it:
///
/// ```
/// use nestling::Context;
///
/// #[derive(Default)]
/// struct Audit;
///
/// #[nestling::controller]
/// impl Audit {
///     #[message_pattern("whoami")]
///     fn whoami(&self, ctx: &Context) -> String {
///         format!("{} via {}", ctx.peer_addr(), ctx.pattern())
///     }
/// }
/// # fn main() {}
/// ```
#[derive(Clone)]
pub struct Context {
    /// The packet's frame; the fields below are spans of it. One reference to the frame
    /// (not one per field) is what a request costs in reference counting.
    frame: Frame,
    pattern: Span,
    peer: SocketAddr,
    id: Option<Span>,
    metadata: Option<Span>,
    /// What the transport knows of the message beyond the packet (a broker message's
    /// subject, headers, properties), set by transports through
    /// [`Origin::with_extension`](crate::transport::Origin::with_extension).
    extension: Option<Extension>,
}

/// A transport's own value about a message: one pointer, whatever the transport.
pub(crate) type Extension = std::sync::Arc<dyn std::any::Any + Send + Sync>;

/// Where a NATS message came from: its subject and headers (Nest's `NatsContext`).
#[cfg(feature = "nats")]
#[derive(Debug)]
pub(crate) struct NatsOrigin {
    pub subject: async_nats::Subject,
    pub headers: Option<async_nats::HeaderMap>,
}

/// The fields as text (not the spans they are stored as).
impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("Context");
        d.field("pattern", &String::from_utf8_lossy(self.pattern_json()))
            .field("peer", &self.peer)
            .field("id", &self.id_json().map(String::from_utf8_lossy))
            .field(
                "metadata",
                &self.metadata_json().map(String::from_utf8_lossy),
            );
        #[cfg(feature = "nats")]
        d.field("nats", &self.extension::<NatsOrigin>());
        #[cfg(feature = "rmq")]
        d.field("rmq", &self.rmq());
        d.finish()
    }
}

impl Context {
    /// Builds a context. Servers do this for every packet; tests may build their own.
    ///
    /// ```
    /// let ctx = nestling::Context::new(r#""sum""#, "127.0.0.1:5000".parse().unwrap());
    /// assert_eq!(ctx.pattern(), "sum");
    /// ```
    pub fn new(pattern_json: impl Into<Bytes>, peer: SocketAddr) -> Self {
        let frame: Bytes = pattern_json.into();
        Self {
            pattern: Span::all(frame.len()),
            frame: Frame::Bytes(frame),
            peer,
            id: None,
            metadata: None,
            extension: None,
        }
    }

    /// A received packet's context: its fields are spans of `frame`.
    pub(crate) fn in_frame(frame: Frame, fields: PacketFields, peer: SocketAddr) -> Self {
        Self {
            frame,
            pattern: fields.pattern,
            peer,
            id: fields.id,
            metadata: fields.metadata,
            extension: None,
        }
    }

    /// The frame the context's fields are spans of.
    pub(crate) fn frame(&self) -> &Bytes {
        self.frame.bytes()
    }

    /// The frame as text, when the codec validated it.
    pub(crate) fn frame_text(&self) -> Option<&str> {
        self.frame.text()
    }

    /// The context with `more` copied after its frame, and where `more` now lies.
    pub(crate) fn appended(mut self, more: &[u8]) -> (Self, Span) {
        let old = self.frame.bytes();
        let mut frame = bytes::BytesMut::with_capacity(old.len() + more.len());
        frame.extend_from_slice(old);
        frame.extend_from_slice(more);
        let at = Span::new(old.len(), frame.len());
        self.frame = Frame::Bytes(frame.freeze());
        (self, at)
    }

    pub(crate) fn with_extension(mut self, extension: Option<Extension>) -> Self {
        self.extension = extension;
        self
    }

    /// The value of type `T` the transport attached to the message, if any (see
    /// [`Origin::with_extension`](crate::transport::Origin::with_extension)): how a
    /// transport of your own hands its handlers what it knows beyond the packet.
    ///
    /// ```
    /// let ctx = nestling::Context::new(r#""sum""#, "127.0.0.1:5000".parse().unwrap());
    /// assert!(ctx.extension::<String>().is_none()); // nothing attached
    /// ```
    pub fn extension<T: std::any::Any>(&self) -> Option<&T> {
        self.extension.as_deref()?.downcast_ref()
    }

    /// The pattern in the sender's form, as Nest's `TcpContext.getPattern()` returns it:
    /// a string pattern as is, any other pattern as its JSON text.
    pub fn pattern(&self) -> String {
        let text = String::from_utf8_lossy(self.pattern_json());
        if text.starts_with('"') {
            if let Ok(s) = serde_json::from_str::<String>(&text) {
                return s;
            }
        }
        text.into_owned()
    }

    /// The raw JSON of the `pattern` field as received.
    pub fn pattern_json(&self) -> &[u8] {
        self.pattern.get(self.frame.bytes())
    }

    /// Address of the peer that sent the packet. Over NATS the sender is behind the
    /// broker and unknown: this is then the unspecified address `0.0.0.0:0` (so a
    /// loopback-only guard rejects it); see [`subject`](Self::subject).
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// The NATS subject the message arrived on (Nest's `NatsContext.getSubject()`), or
    /// `None` over TCP.
    ///
    /// ```
    /// let ctx = nestling::Context::new(r#""sum""#, "127.0.0.1:5000".parse().unwrap());
    /// assert_eq!(ctx.subject(), None); // a TCP packet
    /// ```
    pub fn subject(&self) -> Option<&str> {
        #[cfg(feature = "nats")]
        if let Some(origin) = self.extension::<NatsOrigin>() {
            return Some(origin.subject.as_str());
        }
        None
    }

    /// The NATS message's headers (Nest's `NatsContext.getHeaders()`), if it had any.
    ///
    /// ```
    /// use nestling::Context;
    ///
    /// #[derive(Default)]
    /// struct Tenants;
    ///
    /// #[nestling::controller]
    /// impl Tenants {
    ///     #[message_pattern("tenant")]
    ///     fn tenant(&self, ctx: &Context) -> Option<String> {
    ///         let value = ctx.nats_headers()?.get("x-tenant")?;
    ///         Some(value.as_str().to_owned())
    ///     }
    /// }
    /// # fn main() {}
    /// ```
    #[cfg(feature = "nats")]
    pub fn nats_headers(&self) -> Option<&async_nats::HeaderMap> {
        self.extension::<NatsOrigin>()?.headers.as_ref()
    }

    /// The RabbitMQ message the packet arrived in (Nest's `RmqContext.getMessage()`): its
    /// properties and routing; `None` over other transports.
    ///
    /// ```
    /// let ctx = nestling::Context::new(r#""sum""#, "127.0.0.1:5000".parse().unwrap());
    /// assert!(ctx.rmq().is_none()); // a TCP packet
    /// ```
    #[cfg(feature = "rmq")]
    pub fn rmq(&self) -> Option<&crate::rmq::RmqMessage> {
        self.extension()
    }

    /// The raw JSON of the request `id`, or `None` for an event.
    pub fn id_json(&self) -> Option<&[u8]> {
        self.id.map(|s| s.get(self.frame.bytes()))
    }

    /// True when the packet is an event (no `id`, no reply expected).
    pub fn is_event(&self) -> bool {
        self.id.is_none()
    }

    /// The raw JSON of the packet's `metadata` field (sent by Nest 12 clients with a
    /// dispatch hook), if any.
    pub fn metadata_json(&self) -> Option<&[u8]> {
        self.metadata.map(|s| s.get(self.frame.bytes()))
    }

    /// The packet's `metadata` deserialised into `T`; `Ok(None)` when absent.
    pub fn metadata<T: DeserializeOwned>(&self) -> Result<Option<T>, serde_json::Error> {
        self.metadata_json().map(serde_json::from_slice).transpose()
    }
}

//! Per-request context handed to handlers that ask for it (Nest's `TcpContext`).

use std::net::SocketAddr;

use bytes::Bytes;
use serde::de::DeserializeOwned;

/// What a handler can know about the packet it is serving, besides its payload.
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
#[derive(Debug, Clone)]
pub struct Context {
    pattern: Bytes,
    peer: SocketAddr,
    id: Option<Bytes>,
    metadata: Option<Bytes>,
}

impl Context {
    /// Builds a context. Servers do this for every packet; tests may build their own.
    ///
    /// ```
    /// let ctx = nestling::Context::new(r#""sum""#, "127.0.0.1:5000".parse().unwrap());
    /// assert_eq!(ctx.pattern(), "sum");
    /// ```
    pub fn new(pattern_json: impl Into<Bytes>, peer: SocketAddr) -> Self {
        Self {
            pattern: pattern_json.into(),
            peer,
            id: None,
            metadata: None,
        }
    }

    pub(crate) fn with_packet(mut self, id: Option<Bytes>, metadata: Option<Bytes>) -> Self {
        self.id = id;
        self.metadata = metadata;
        self
    }

    /// The pattern in the sender's form, as Nest's `TcpContext.getPattern()` returns it:
    /// a string pattern as is, any other pattern as its JSON text.
    pub fn pattern(&self) -> String {
        let text = String::from_utf8_lossy(&self.pattern);
        if text.starts_with('"') {
            if let Ok(s) = serde_json::from_str::<String>(&text) {
                return s;
            }
        }
        text.into_owned()
    }

    /// The raw JSON of the `pattern` field as received.
    pub fn pattern_json(&self) -> &[u8] {
        &self.pattern
    }

    /// Address of the peer that sent the packet.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// The raw JSON of the request `id`, or `None` for an event.
    pub fn id_json(&self) -> Option<&[u8]> {
        self.id.as_deref()
    }

    /// True when the packet is an event (no `id`, no reply expected).
    pub fn is_event(&self) -> bool {
        self.id.is_none()
    }

    /// The raw JSON of the packet's `metadata` field (sent by Nest 12 clients with a
    /// dispatch hook), if any.
    pub fn metadata_json(&self) -> Option<&[u8]> {
        self.metadata.as_deref()
    }

    /// The packet's `metadata` deserialised into `T`; `Ok(None)` when absent.
    pub fn metadata<T: DeserializeOwned>(&self) -> Result<Option<T>, serde_json::Error> {
        self.metadata
            .as_deref()
            .map(serde_json::from_slice)
            .transpose()
    }
}

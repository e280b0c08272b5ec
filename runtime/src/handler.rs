//! The type-erased handler interface the macros generate code against.
//!
//! A controller method becomes a plain `fn(&Instance, Request) -> HandlerFuture`; the
//! controller instance travels as `Arc<dyn Any>` and is downcast inside the generated
//! function, where its concrete type is known.

use std::any::Any;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::context::Context;
use crate::error::RpcException;
use crate::packet::Span;

/// A controller instance, shared by all requests it serves.
pub type Instance = Arc<dyn Any + Send + Sync>;

/// What a handler produced, ready for the wire.
pub enum Reply {
    /// One serialised value (`None` for Nest's `undefined`, i.e. a handler returning `()`).
    Value(Option<Vec<u8>>),
    /// Serialised items, each sent as its own packet (Nest's Observable replies).
    Stream(ReplyStream),
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reply::Value(v) => f
                .debug_tuple("Value")
                .field(&v.as_deref().map(String::from_utf8_lossy))
                .finish(),
            Reply::Stream(_) => f.write_str("Stream(..)"),
        }
    }
}

/// A streamed reply: serialised items, or a failure that ends the stream.
pub type ReplyStream =
    Pin<Box<dyn futures_core::Stream<Item = Result<Vec<u8>, HandlerFailure>> + Send>>;

/// What a handler produces: a [`Reply`], or a failure.
pub type HandlerOutcome = Result<Reply, HandlerFailure>;

/// The future a generated handler function returns.
pub type HandlerFuture = Pin<Box<dyn Future<Output = HandlerOutcome> + Send>>;

/// The signature of a generated handler function.
pub type HandlerFn = fn(&Instance, Request) -> HandlerFuture;

/// The signature of a generated function running a plain (non-`async`) handler to
/// completion at once: the server calls it directly, without boxing a future, and keeps
/// the request (it answers with the request's `id`).
pub type HandlerNowFn = fn(&Instance, &Request) -> HandlerOutcome;

/// How a handler is entered: the generated function of a plain `fn` handler runs it to
/// completion, that of an `async fn` handler returns its future. One field, so a handler
/// cannot be described as both or neither; the server adapts one form to the other where
/// it needs to (middleware takes a future).
#[derive(Debug, Clone, Copy)]
pub enum HandlerEntry {
    /// A plain `fn` handler: runs at once, borrowing the request.
    Now {
        /// The generated function.
        call: HandlerNowFn,
        /// Whether the handler takes a payload: its first act is then to decode `data` with
        /// serde_json, a strict parse that fails on invalid JSON, so the server may leave
        /// the checking of `data` to it.
        decodes_data: bool,
    },
    /// An `async fn` handler: returns the future that runs it.
    Async(HandlerFn),
}

impl HandlerEntry {
    /// Starts the handler on `request`: an `async` handler's future, or a plain one's
    /// outcome, already computed, in a ready future.
    pub fn start(self, instance: &Instance, request: Request) -> HandlerFuture {
        match self {
            HandlerEntry::Async(call) => call(instance, request),
            HandlerEntry::Now { call, .. } => {
                Box::pin(std::future::ready(call(instance, &request)))
            }
        }
    }
}

/// Whether a handler answers requests or consumes events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandlerKind {
    /// `#[message_pattern]`: Nest's `@MessagePattern`, answers `send`.
    Message,
    /// `#[event_pattern]`: Nest's `@EventPattern`, receives `emit`.
    Event,
}

/// One incoming packet as a handler sees it: raw payload plus context.
#[derive(Clone)]
pub struct Request {
    /// `data`'s place in the frame that the context holds.
    data: Option<Span>,
    ctx: Context,
}

/// `data` as text (not the span it is stored as).
impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("data", &self.data().map(String::from_utf8_lossy))
            .field("ctx", &self.ctx)
            .finish()
    }
}

impl Request {
    /// Builds a request from raw `data` JSON (`None` when the packet had no `data`).
    ///
    /// ```
    /// use nestling_runtime::{Context, Request};
    /// let req = Request::new(Some("[1,2,3]".into()), Context::new("\"sum\"", "127.0.0.1:1".parse().unwrap()));
    /// let nums: Vec<i64> = req.payload().unwrap();
    /// assert_eq!(nums, [1, 2, 3]);
    /// ```
    ///
    /// (`data` is copied next to the context's fields: a received request keeps all of
    /// its packet in one buffer.)
    pub fn new(data: Option<Bytes>, ctx: Context) -> Self {
        match data {
            Some(data) => {
                let (ctx, data) = ctx.appended(&data);
                Self::in_frame(Some(data), ctx)
            }
            None => Self::in_frame(None, ctx),
        }
    }

    /// A received packet's request: `data` is a span of the context's frame.
    pub(crate) fn in_frame(data: Option<Span>, ctx: Context) -> Self {
        Self { data, ctx }
    }

    /// Deserialises the payload into the handler's type. A missing `data` field is
    /// treated as `null`, so `Option<T>` and `()` payloads accept it.
    pub fn payload<T: DeserializeOwned>(&self) -> Result<T, HandlerFailure> {
        // A TCP frame is text the codec validated: read as `&str`, serde_json does not
        // check the UTF-8 of every string again.
        let text = self.data.and_then(|data| data.text(self.ctx.frame_text()?));
        let parsed = match text {
            Some(text) => serde_json::from_str(text),
            None => serde_json::from_slice(self.data().unwrap_or(b"null")),
        }
        .or_else(|e| crate::lone_surrogates::retry(self.data().unwrap_or(b"null"), e));
        parsed.map_err(|e| {
            HandlerFailure::BadPayload(format!(
                "invalid payload for pattern {}: {e}",
                self.ctx.pattern()
            ))
        })
    }

    /// The request's context.
    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// Splits the request into its raw data and context.
    pub fn into_parts(self) -> (Option<Bytes>, Context) {
        let data = self.data.map(|data| data.slice(self.ctx.frame()));
        (data, self.ctx)
    }

    /// The raw `data` JSON as text, when the frame is known to be UTF-8 (TCP).
    pub(crate) fn data_text(&self) -> Option<&str> {
        self.data.and_then(|data| data.text(self.ctx.frame_text()?))
    }

    /// The raw `data` JSON, if the packet had `data`.
    pub(crate) fn data(&self) -> Option<&[u8]> {
        self.data.map(|data| data.get(self.ctx.frame()))
    }

    /// The request's context, kept as the request ends (its reply needs the `id`).
    pub(crate) fn into_context(self) -> Context {
        self.ctx
    }
}

/// Why a handler produced no value. Turned into a wire `err` by the server.
#[derive(Debug, Clone)]
pub enum HandlerFailure {
    /// An [`RpcException`]: its wire form is sent to the caller unchanged.
    Rpc(serde_json::Value),
    /// A panic or a failure of the server's own (a reply that does not serialise, …): the
    /// caller gets Nest's "Internal server error"; this cause is only logged.
    Internal(String),
    /// Any other error the handler returned: the caller gets Nest's "Internal server error"
    /// unless an exception filter catches it (see [`filter`](crate::filter)); it is logged.
    Error(crate::filter::HandlerError),
    /// The payload did not deserialise into the handler's parameter type. The caller gets
    /// `{"status":"error","message":<this text>}` so the mistake is visible on its side.
    BadPayload(String),
}

impl std::fmt::Display for HandlerFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HandlerFailure::Rpc(v) => write!(f, "rpc exception {v}"),
            HandlerFailure::Internal(cause) => write!(f, "internal error: {cause}"),
            HandlerFailure::Error(e) => write!(f, "handler error: {e}"),
            HandlerFailure::BadPayload(m) => f.write_str(m),
        }
    }
}

/// Lets middleware return a failure through tower's boxed errors; the server recovers
/// it and sends its wire form.
impl std::error::Error for HandlerFailure {}

impl From<RpcException> for HandlerFailure {
    fn from(e: RpcException) -> Self {
        HandlerFailure::Rpc(e.to_wire())
    }
}

impl HandlerFailure {
    /// The `err` JSON sent on the wire.
    pub fn wire_json(&self) -> Vec<u8> {
        let value = match self {
            HandlerFailure::Rpc(v) => v.clone(),
            HandlerFailure::Internal(_) | HandlerFailure::Error(_) => {
                serde_json::json!({"status": "error", "message": "Internal server error"})
            }
            HandlerFailure::BadPayload(m) => serde_json::json!({"status": "error", "message": m}),
        };
        serde_json::to_vec(&value).unwrap_or_else(|_| b"null".to_vec())
    }
}

/// Error types a handler may return in `Result<T, E>`.
///
/// [`RpcException`] reaches the caller as given (Nest's `throw new RpcException(…)`);
/// every other error (anything convertible into `Box<dyn Error + Send + Sync>`, which
/// covers all `std::error::Error` types, `anyhow::Error`, `String` and `&str`) becomes
/// Nest's `{"status":"error","message":"Internal server error"}`, with the error logged
/// server-side, unless an exception [filter](crate::filter) maps it to an exception.
///
/// ```
/// use nestling::{IntoRpcError, RpcException};
/// fn check<E: IntoRpcError>() {}
/// check::<RpcException>();
/// check::<std::io::Error>();
/// check::<String>();
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be returned as a handler error",
    label = "this error type cannot be sent to a Nest caller",
    note = "return `nestling::RpcException` to send a payload to the caller, or any type implementing `std::error::Error` (sent as Nest's \"Internal server error\")"
)]
pub trait IntoRpcError {
    /// Converts the error into what the server sends.
    fn into_failure(self) -> HandlerFailure;
}

impl IntoRpcError for RpcException {
    fn into_failure(self) -> HandlerFailure {
        HandlerFailure::Rpc(self.to_wire())
    }
}

impl<E: Into<Box<dyn std::error::Error + Send + Sync>>> IntoRpcError for E {
    fn into_failure(self) -> HandlerFailure {
        HandlerFailure::Error(crate::filter::HandlerError::new(self.into()))
    }
}

/// Serialises a handler's return value.
pub fn serialize_reply<T: Serialize + ?Sized>(value: &T) -> HandlerOutcome {
    serde_json::to_vec(value)
        .map(|v| Reply::Value(Some(v)))
        .map_err(|e| HandlerFailure::Internal(format!("could not serialise the reply: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request built by hand keeps its `data` in the same buffer as its context's fields
    /// (what a received request does), and reads back the same.
    #[test]
    fn built_request_reads_back_its_parts() {
        let ctx = Context::new(r#""sum""#, "127.0.0.1:1".parse().unwrap());
        let request = Request::new(Some(Bytes::from_static(b"[1,2]")), ctx);
        assert_eq!(request.data(), Some(&b"[1,2]"[..]));
        assert_eq!(request.context().pattern_json(), br#""sum""#);
        let shown = format!("{request:?}");
        assert!(shown.contains(r#"data: Some("[1,2]")"#), "{shown}");
        assert!(shown.contains(r#"pattern: "\"sum\"""#), "{shown}");
        let nums: Vec<i64> = request.payload().unwrap();
        assert_eq!(nums, [1, 2]);
        let (data, ctx) = request.into_parts();
        assert_eq!(data.as_deref(), Some(&b"[1,2]"[..]));
        assert_eq!(ctx.pattern(), "sum");
        assert!(ctx.is_event());
    }

    #[test]
    fn request_without_data_decodes_null() {
        let ctx = Context::new(r#""ping""#, "127.0.0.1:1".parse().unwrap());
        let request = Request::new(None, ctx);
        assert_eq!(request.data(), None);
        let unit: Option<u8> = request.payload().unwrap();
        assert_eq!(unit, None);
    }
}

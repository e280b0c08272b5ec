//! Error types: what handlers return, what servers and clients report.

use std::fmt;

use serde::de::DeserializeOwned;
use serde_json::Value;

/// Nest's `RpcException`: an error whose payload goes to the caller as the wire `err`.
///
/// Like Nest, an object or array payload is sent unchanged and any other payload is wrapped
/// as `{"status":"error","message":<payload>}`. Every other error a handler returns becomes
/// `{"status":"error","message":"Internal server error"}` with the real cause only logged.
///
/// `RpcException` deliberately does not implement `std::error::Error` (as `anyhow::Error`
/// does not): that is what lets a handler return `Result<T, E>` for *any* error type `E`.
///
/// ```
/// use nestling_runtime::RpcException;
/// use serde_json::json;
///
/// assert_eq!(RpcException::new("bad thing").to_wire(), json!({"status":"error","message":"bad thing"}));
/// assert_eq!(RpcException::new(json!({"code":42})).to_wire(), json!({"code":42}));
/// ```
#[derive(Clone, PartialEq)]
pub struct RpcException {
    error: Value,
}

impl RpcException {
    /// Creates an exception from any serialisable payload (a message, an object, …).
    ///
    /// A payload that cannot be serialised becomes the `null` message.
    pub fn new(payload: impl serde::Serialize) -> Self {
        Self {
            error: serde_json::to_value(payload).unwrap_or(Value::Null),
        }
    }

    /// The payload as given to [`RpcException::new`].
    pub fn error(&self) -> &Value {
        &self.error
    }

    /// The exact `err` value that goes on the wire.
    pub fn to_wire(&self) -> Value {
        match &self.error {
            Value::Object(_) | Value::Array(_) => self.error.clone(),
            other => serde_json::json!({"status": "error", "message": other}),
        }
    }
}

impl fmt::Debug for RpcException {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RpcException").field(&self.error).finish()
    }
}

impl fmt::Display for RpcException {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.error {
            Value::String(s) => f.write_str(s),
            other => write!(f, "{other}"),
        }
    }
}

/// The message of Nest's "no handler" reply, sent as a plain string `err`.
pub const NO_HANDLER_MESSAGE: &str =
    "There is no matching message handler defined in the remote service.";

/// The error a remote service answered with: the raw wire `err` value, kept intact.
///
/// ```
/// use nestling_runtime::RemoteError;
/// use serde_json::json;
///
/// let e = RemoteError::new(json!({"status":"error","message":"bad thing"}));
/// assert_eq!(e.message(), Some("bad thing"));
/// #[derive(serde::Deserialize)]
/// struct Shape { status: String }
/// assert_eq!(e.deserialize::<Shape>().unwrap().status, "error");
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteError {
    err: Value,
}

impl RemoteError {
    /// Wraps a raw `err` value.
    pub fn new(err: Value) -> Self {
        Self { err }
    }

    /// The raw `err` value exactly as received.
    pub fn value(&self) -> &Value {
        &self.err
    }

    /// Consumes the error, returning the raw value.
    pub fn into_value(self) -> Value {
        self.err
    }

    /// The human message: `err.message` when it is a string, or `err` itself if a string.
    pub fn message(&self) -> Option<&str> {
        match &self.err {
            Value::String(s) => Some(s),
            Value::Object(map) => map.get("message").and_then(Value::as_str),
            _ => None,
        }
    }

    /// True for Nest's "no matching message handler" reply: the pattern is not served.
    pub fn is_no_handler(&self) -> bool {
        self.err.as_str() == Some(NO_HANDLER_MESSAGE)
    }

    /// Deserialises the raw `err` into the caller's own error type.
    pub fn deserialize<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        T::deserialize(&self.err)
    }
}

impl fmt::Display for RemoteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.message() {
            Some(m) => f.write_str(m),
            None => write!(f, "{}", self.err),
        }
    }
}

/// Why a client call failed.
///
/// ```
/// # async fn demo() {
/// use nestling_runtime::{Client, ClientError};
/// let client = Client::new("127.0.0.1:1"); // nothing listens there
/// match client.send::<_, _, i64>("sum", &[1, 2]).await {
///     Err(ClientError::Connect { .. }) => {}
///     other => panic!("unexpected {other:?}"),
/// }
/// # }
/// # tokio::runtime::Runtime::new().unwrap().block_on(demo());
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The TCP connection could not be established.
    #[error("could not connect to {addr}: {source}; check that the service is running and the address is right")]
    Connect {
        /// Address dialled.
        addr: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A recent connect attempt failed and the client is waiting before dialing again
    /// (see `ClientBuilder::reconnect_backoff`); the call was not sent.
    #[error(
        "{addr} is unavailable (last connect failed: {last_error}); next attempt in {retry_in:?}"
    )]
    Unavailable {
        /// Address of the service.
        addr: String,
        /// Time until the client dials again.
        retry_in: std::time::Duration,
        /// Why the last attempt failed.
        last_error: String,
    },
    /// The TLS handshake failed (untrusted certificate, name mismatch, not a TLS server…).
    #[error(
        "TLS handshake with {addr} failed: {source}; check the trusted CA and the server name"
    )]
    Tls {
        /// Address dialled.
        addr: String,
        /// The handshake error.
        #[source]
        source: std::io::Error,
    },
    /// Connecting took longer than the client's connect timeout.
    #[error(
        "connecting to {addr} timed out after {timeout:?}; check that the service is reachable"
    )]
    ConnectTimeout {
        /// Address dialled.
        addr: String,
        /// The configured connect timeout.
        timeout: std::time::Duration,
    },
    /// The connection closed before the reply arrived. The remote handler may or may not
    /// have run; the next call opens a new connection.
    #[error(
        "connection to {addr} closed before the reply arrived ({reason}); the next call reconnects"
    )]
    ConnectionClosed {
        /// Address of the service.
        addr: String,
        /// What closed it.
        reason: String,
    },
    /// No reply within the call's timeout. A late reply is discarded.
    #[error("no reply for pattern {pattern} within {timeout:?}")]
    Timeout {
        /// The pattern called.
        pattern: String,
        /// The timeout that expired.
        timeout: std::time::Duration,
    },
    /// The service answered with an error (`err` on the wire), kept as received.
    #[error("the service answered pattern {pattern} with an error: {error}")]
    Remote {
        /// The pattern called.
        pattern: String,
        /// The raw error.
        error: RemoteError,
    },
    /// Over NATS: no service is subscribed to the pattern's subject (the NATS server's
    /// "no responders" status; Nest's client reports it as an `EmptyResponseException`).
    #[error("no service is subscribed to pattern {pattern} on NATS; start one, or check the pattern and that the service uses the same NATS server")]
    NoResponders {
        /// The pattern called.
        pattern: String,
    },
    /// The service completed the call without any value (Nest: `EmptyError`).
    #[error("the service completed pattern {pattern} without a value; use a unit reply type only for handlers that return nothing")]
    EmptyReply {
        /// The pattern called.
        pattern: String,
    },
    /// The pattern or payload could not be serialised.
    #[error("could not serialise the request for pattern {pattern}: {source}")]
    Encode {
        /// The pattern called.
        pattern: String,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },
    /// The reply did not deserialise into the expected type.
    #[error("the reply to pattern {pattern} does not fit the expected type: {source}; reply was {reply}")]
    Decode {
        /// The pattern called.
        pattern: String,
        /// The raw reply JSON (truncated to 200 characters).
        reply: String,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },
}

impl ClientError {
    /// The remote error, if the service answered with one.
    ///
    /// ```
    /// # use nestling_runtime::{ClientError, RemoteError};
    /// let e = ClientError::Remote { pattern: "\"sum\"".into(), error: RemoteError::new("x".into()) };
    /// assert_eq!(e.remote().unwrap().message(), Some("x"));
    /// ```
    pub fn remote(&self) -> Option<&RemoteError> {
        match self {
            ClientError::Remote { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// Binding the listening socket failed.
    #[error("could not listen on {addr}: {source}; is another process using the port?")]
    Bind {
        /// Address requested.
        addr: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Two message handlers claim the same pattern.
    #[error("two message handlers for pattern {pattern}: {first} and {second}; give one of them another pattern (a Nest server would silently keep only the last)")]
    DuplicateHandler {
        /// The pattern, as declared.
        pattern: String,
        /// `Type::method (file:line)` of the first handler.
        first: String,
        /// `Type::method (file:line)` of the second handler.
        second: String,
    },
    /// A declared pattern is not valid JSON (only possible with hand-written metadata).
    #[error("handler {handler} declares an invalid pattern {pattern}: {source}")]
    InvalidPattern {
        /// `Type::method (file:line)`.
        handler: String,
        /// The pattern text.
        pattern: String,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// A pattern cannot be a NATS subject (Nest's NATS server would subscribe it as is,
    /// and the NATS server would refuse it).
    #[error("handler {handler}: pattern {pattern} cannot be served over NATS: {reason}")]
    InvalidSubject {
        /// `Type::method (file:line)`.
        handler: String,
        /// The pattern text.
        pattern: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Connecting to NATS or subscribing failed.
    #[error("NATS at {url}: {message}; check that nats-server is running and reachable")]
    Nats {
        /// The server URL given.
        url: String,
        /// What failed.
        message: String,
    },
    /// Connecting to RabbitMQ or declaring the queue, exchange or consumer failed.
    #[error("RabbitMQ at {url}: {message}; check that rabbitmq-server is running and reachable and that the queue's options match its existing declaration")]
    Rmq {
        /// The broker URL given (credentials removed).
        url: String,
        /// What failed.
        message: String,
    },
    /// Accepting connections failed fatally.
    #[error("listener failed: {0}")]
    Io(#[from] std::io::Error),
    /// A controller's [`Lifecycle::on_start`](crate::Lifecycle::on_start) failed: the
    /// server serves nothing (Nest: an `onModuleInit` that throws stops the app).
    #[error("controller {controller} failed to start (Lifecycle::on_start): {source}; nothing is served: fix the cause, or handle it inside on_start to start anyway")]
    Start {
        /// The controller's type name.
        controller: &'static str,
        /// What on_start returned.
        #[source]
        source: std::sync::Arc<dyn std::error::Error + Send + Sync>,
    },
}

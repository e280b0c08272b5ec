//! Trace context carried between nestling services in the packet's `metadata` field.
//!
//! A request whose `metadata` holds `{"traceId": "…"}` runs its handler inside that trace:
//! the request span records it, and calls the handler makes through any nestling
//! [`Client`](crate::Client) carry the same `traceId` onward. Start a trace at the edge
//! (an HTTP gateway, say) with [`scope`]. Nest ignores the field, so this is harmless
//! when the peer is NestJS.
//!
//! ```no_run
//! # async fn run(client: nestling::Client) -> Result<(), nestling::ClientError> {
//! let sum: i64 = nestling::trace::scope("req-42", client.send("sum", &[1, 2])).await?;
//! # Ok(()) }
//! ```

use std::future::Future;
use std::sync::Arc;

tokio::task_local! {
    static TRACE_ID: Arc<str>;
}

/// The metadata key holding the trace id.
pub const TRACE_ID_KEY: &str = "traceId";

/// Runs `f` inside trace `trace_id`: nestling clients called from it send the id along.
pub async fn scope<F: Future>(trace_id: impl Into<Arc<str>>, f: F) -> F::Output {
    TRACE_ID.scope(trace_id.into(), f).await
}

/// The trace the current task runs in, if any.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// assert_eq!(nestling::trace::current(), None);
/// let inside = nestling::trace::scope("t1", async { nestling::trace::current() }).await;
/// assert_eq!(inside.as_deref(), Some("t1"));
/// # });
/// ```
pub fn current() -> Option<Arc<str>> {
    TRACE_ID.try_with(Arc::clone).ok()
}

/// `{"traceId":"…"}` for the current trace, to send as a packet's `metadata`.
pub(crate) fn outgoing_metadata() -> Option<Vec<u8>> {
    let id = current()?;
    serde_json::to_vec(&serde_json::json!({ TRACE_ID_KEY: &*id })).ok()
}

/// Runs `f` in trace `trace_id` when there is one.
///
/// A plain function returning `Either`, not an `async fn`: an `async fn` would hold `f`
/// twice (as its argument and in the branch awaiting it), doubling the size of every
/// request's future, which is copied when it is boxed.
pub(crate) fn maybe_scope<F: Future>(
    trace_id: Option<Arc<str>>,
    f: F,
) -> futures_util::future::Either<tokio::task::futures::TaskLocalFuture<Arc<str>, F>, F> {
    use futures_util::future::Either;
    match trace_id {
        Some(id) => Either::Left(TRACE_ID.scope(id, f)),
        None => Either::Right(f),
    }
}

/// Runs `f` at once in trace `trace_id` when there is one.
pub(crate) fn maybe_sync_scope<R>(trace_id: Option<Arc<str>>, f: impl FnOnce() -> R) -> R {
    match trace_id {
        Some(id) => TRACE_ID.sync_scope(id, f),
        None => f(),
    }
}

/// The trace id in a packet's raw `metadata` JSON, if any.
pub(crate) fn from_metadata(metadata: Option<&[u8]>) -> Option<Arc<str>> {
    #[derive(serde::Deserialize)]
    struct Meta {
        #[serde(rename = "traceId")]
        trace_id: Option<String>,
    }
    let meta: Meta = serde_json::from_slice(metadata?).ok()?;
    meta.trace_id.map(Arc::from)
}

//! Running one handler: entered at once (a plain `fn`) or as a future polled once and
//! spawned only if it waits, with panics turned into Nest's internal error for that packet.

use std::future::Future;
use std::panic::AssertUnwindSafe;

use bytes::BytesMut;
use futures_util::FutureExt;
use tokio::sync::OwnedSemaphorePermit;

use super::answer::{Answer, DataNotJson};
use super::sink::ReplySink;
use crate::filter::filter_failure;
use crate::handler::{
    HandlerEntry, HandlerFailure, HandlerFuture, HandlerNowFn, HandlerOutcome, Reply, Request,
};
use crate::middleware::call_layered;
use crate::observe::Observed;
use crate::packet::data_is_json;
use crate::router::{Bound, Who};

/// The in-flight slot (backpressure permit) of the packet being dispatched. Work that
/// finishes during dispatch (plain `fn` handlers, unknown patterns) leaves it in place for
/// the next packet, so a connection served inline does no semaphore traffic per packet;
/// work that outlives dispatch (a spawned handler, a stream) takes it and frees it when
/// done. The transport refills an empty slot, waiting while all slots are busy.
pub(super) type Slot = Option<OwnedSemaphorePermit>;

/// A handler started on a request; panics are caught when it is polled.
pub(super) type Running = futures_util::future::CatchUnwind<AssertUnwindSafe<HandlerFuture>>;

/// Starts a handler (through its middleware, if any) on `request`. The request moves into
/// the handler's future, which is boxed: whoever awaits it holds only a pointer.
pub(super) fn start(bound: &Bound, request: Request) -> Running {
    let future: HandlerFuture = match &bound.service {
        Some(service) => {
            let service = service.clone();
            Box::pin(async move { call_layered(&service, request).await })
        }
        // A plain `fn` handler runs inside `call` itself: catch its panic here too.
        None => std::panic::catch_unwind(AssertUnwindSafe(|| {
            bound.entry.start(&bound.instance, request)
        }))
        .unwrap_or_else(|panic| Box::pin(std::future::ready(Err(panicked(&*panic))))),
    };
    AssertUnwindSafe(future).catch_unwind()
}

/// Awaits a started handler, turning a panic into Nest's internal error for this request
/// only.
pub(super) async fn finish(running: Running) -> HandlerOutcome {
    running.await.unwrap_or_else(|panic| Err(panicked(&*panic)))
}

/// Nest's internal error for a handler that panicked; the panic's message is only logged.
#[cold]
pub(super) fn panicked(panic: &(dyn std::any::Any + Send)) -> HandlerFailure {
    HandlerFailure::Internal(format!("handler panicked: {}", panic_message(panic)))
}

/// Runs a handler to completion.
pub(super) async fn run(bound: &Bound, request: Request) -> HandlerOutcome {
    finish(start(bound, request)).await
}

/// A plain `fn` handler without middleware that decodes `data`: its strict payload
/// decoding can stand in for the check of unchecked `data` (see `Inbox::handle_frame`).
pub(super) fn decodes_at_once(bound: &Bound) -> bool {
    matches!(
        (&bound.service, bound.entry),
        (
            None,
            HandlerEntry::Now {
                decodes_data: true,
                ..
            }
        )
    )
}

/// The synchronous entry point of a plain `fn` handler without middleware.
pub(super) fn runs_now(bound: &Bound) -> Option<(HandlerNowFn, &Bound)> {
    match (&bound.service, bound.entry) {
        (None, HandlerEntry::Now { call, .. }) => Some((call, bound)),
        _ => None,
    }
}

/// Runs a plain `fn` handler at once, inside the packet's span and trace, turning a panic
/// into Nest's internal error for this packet only; failures are logged as `what`.
/// [`DataNotJson`]: the handler rejected `unchecked` data that is not JSON at all — not
/// the handler's failure to report; the packet is parsed again in full instead.
pub(super) fn call_now(
    now: HandlerNowFn,
    bound: &Bound,
    request: &Request,
    trace: Option<std::sync::Arc<str>>,
    observed: &Observed,
    what: &str,
    unchecked: bool,
) -> Result<HandlerOutcome, DataNotJson> {
    observed.in_span(|| {
        let call = || now(&bound.instance, request);
        let mut outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
            crate::trace::maybe_sync_scope(trace, call)
        }))
        .unwrap_or_else(|panic| Err(panicked(&*panic)));
        if let Err(failure) = &mut outcome {
            filter_failure(bound.filters.as_deref(), failure);
            if matches!(failure, HandlerFailure::BadPayload(_))
                && unchecked
                && request.data().is_some_and(|d| !data_is_json(d))
            {
                return Err(DataNotJson);
            }
            log_failure(bound.who(), failure, what);
        }
        Ok(outcome)
    })
}

/// Polls `task` once right here and spawns it only if it is not done: a handler that
/// completes without waiting (every plain `fn` handler) is answered without the cost of a
/// task spawn and a context switch, and its reply is returned for the caller to send. A
/// pending task registered its interest with a no-op waker; the runtime polls it again at
/// once after the spawn, with a real one, and then sends its reply to the sink it returns.
pub(super) fn run_or_spawn<S: ReplySink>(
    task: impl Future<Output = Option<(Answer, S)>> + Send + 'static,
) -> Option<Answer> {
    let mut task = Box::pin(task);
    let mut cx = std::task::Context::from_waker(futures_util::task::noop_waker_ref());
    match task.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(reply) => reply.map(|(answer, _sink)| answer),
        std::task::Poll::Pending => {
            tokio::spawn(async move {
                if let Some((answer, sink)) = task.await {
                    let mut packet = BytesMut::new();
                    answer.encode(S::WIRE, &mut packet);
                    // `false` means the peer is gone; the reply has nowhere to go.
                    sink.send(packet.freeze()).await;
                }
            });
            None
        }
    }
}

/// The `outcome` recorded on spans and metrics.
pub(super) fn outcome_label(outcome: &HandlerOutcome) -> &'static str {
    match outcome {
        Ok(Reply::Value(_)) => "ok",
        Ok(Reply::Stream(_)) => "stream",
        Err(HandlerFailure::Rpc(_) | HandlerFailure::BadPayload(_)) => "error",
        Err(HandlerFailure::Internal(_) | HandlerFailure::Error(_)) => "internal",
    }
}

pub(super) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".into())
}

#[cold]
pub(super) fn log_failure(who: Who, failure: &HandlerFailure, what: &str) {
    match failure {
        HandlerFailure::Internal(cause) => {
            tracing::error!(handler = %who.describe(), "{what} handler failed: {cause}")
        }
        HandlerFailure::Error(cause) => {
            tracing::error!(handler = %who.describe(), "{what} handler failed: {cause}")
        }
        HandlerFailure::BadPayload(msg) => {
            tracing::warn!(handler = %who.describe(), "{what} rejected: {msg}")
        }
        HandlerFailure::Rpc(_) => {
            tracing::debug!(handler = %who.describe(), "{what} handler returned an RpcException")
        }
    }
}

//! packet → router → handler → reply: everything that happens to one decoded frame.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::{FutureExt, StreamExt};
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tracing::Instrument;

use crate::context::Context;
use crate::handler::{HandlerFailure, HandlerOutcome, Reply, ReplyStream, Request};
use crate::middleware::call_layered;
use crate::observe::Observed;
use crate::packet::{
    encode_error, encode_no_handler, encode_response, encode_stream_item, Inbound,
};
use crate::router::{Bound, Router};

/// Shared by every packet of one connection.
pub(crate) struct ConnCtx {
    pub router: Arc<Router>,
    pub peer: std::net::SocketAddr,
    pub replies: mpsc::Sender<Bytes>,
}

fn as_str(b: &Bytes) -> &str {
    // Frames are valid UTF-8 (the codec guarantees it); fall back to an unmatched route.
    std::str::from_utf8(b).unwrap_or("\u{0}invalid")
}

/// Routes one packet. Each handler runs inline until it first waits, then on its own task
/// (see [`run_or_spawn`]), holding `permit` until done. Replies ready at once (plain `fn`
/// handlers, unknown patterns) are appended to `outbox`, which the connection writes once
/// per batch of packets read; later replies go through the connection's reply channel.
pub(crate) fn dispatch(
    conn: &ConnCtx,
    packet: Inbound,
    permit: OwnedSemaphorePermit,
    outbox: &mut BytesMut,
) {
    match packet {
        Inbound::Undefined => no_event_handler(conn, "undefined"),
        Inbound::Event {
            pattern,
            data,
            metadata,
        } => {
            let Some(pattern) = pattern else {
                return no_event_handler(conn, "undefined");
            };
            let Some(route) = conn.router.lookup(as_str(&pattern)) else {
                return no_event_handler(conn, as_str(&pattern));
            };
            let trace = crate::trace::from_metadata(metadata.as_deref());
            let ctx = Context::new(pattern.clone(), conn.peer).with_packet(None, metadata);
            let request = Request::new(data, ctx);
            // Nest runs every event handler; an event that hits a message handler runs it
            // and discards the result.
            let handlers: Vec<Bound> = if route.events.is_empty() {
                route.message.iter().cloned().collect()
            } else {
                route.events.clone()
            };
            let permit = Arc::new(permit);
            for bound in handlers {
                let request = request.clone();
                let permit = permit.clone();
                let observed =
                    Observed::request("event", &pattern, None, conn.peer, trace.as_deref());
                let span = observed.span.clone();
                run_or_spawn(
                    crate::trace::maybe_scope(
                        trace.clone(),
                        async move {
                            let outcome = run(&bound, request).await;
                            if let Err(failure) = &outcome {
                                log_failure(&bound, failure, "event");
                            }
                            observed.finish(outcome_label(&outcome));
                            drop(permit);
                            None
                        }
                        .instrument(span),
                    ),
                    &conn.replies,
                );
            }
        }
        Inbound::Request {
            pattern,
            data,
            id,
            metadata,
        } => {
            let route = pattern.as_ref().and_then(|p| conn.router.lookup(as_str(p)));
            let Some(route) = route.filter(|r| r.message.is_some() || !r.events.is_empty()) else {
                encode_no_handler(outbox, &id);
                return;
            };
            let trace = crate::trace::from_metadata(metadata.as_deref());
            let pattern = pattern.unwrap_or_default();
            let observed =
                Observed::request("request", &pattern, Some(&id), conn.peer, trace.as_deref());
            let span = observed.span.clone();
            let ctx = Context::new(pattern, conn.peer).with_packet(Some(id.clone()), metadata);
            let request = Request::new(data, ctx);
            let replies = conn.replies.clone();
            let message = route.message.clone();
            let events = route.events.clone();
            let task = async move {
                let outcome = match message {
                    Some(bound) => {
                        let outcome = run(&bound, request).await;
                        if let Err(f) = &outcome {
                            log_failure(&bound, f, "request");
                        }
                        outcome
                    }
                    None => run_events_as_request(events, request).await,
                };
                let label = outcome_label(&outcome);
                let mut out = BytesMut::new();
                match outcome {
                    Ok(Reply::Stream(stream)) => pump_stream(stream, &id, &replies).await,
                    Ok(Reply::Value(value)) => encode_response(&mut out, value.as_deref(), &id),
                    Err(failure) => encode_error(&mut out, &failure.wire_json(), &id),
                }
                observed.finish(label);
                drop(permit);
                (!out.is_empty()).then_some(out)
            };
            let task = crate::trace::maybe_scope(trace, task.instrument(span));
            if let Some(reply) = run_or_spawn(task, &conn.replies) {
                outbox.unsplit(reply);
            }
        }
    }
}

/// Sends a streamed reply with Nest's completion rules: completion is merged into the last
/// item when the stream ends right after it (Nest: in the same tick), and sent as its own
/// `{"isDisposed":true}` packet when the stream ends later; an error ends the stream with
/// `{"err":…,"isDisposed":true}`; an empty stream sends only the completion.
async fn pump_stream(mut stream: ReplyStream, id: &Bytes, replies: &mpsc::Sender<Bytes>) {
    let send = |frame: BytesMut| replies.send(frame.freeze());
    let item = |value: &[u8]| {
        let mut out = BytesMut::new();
        encode_stream_item(&mut out, value, id);
        out
    };
    // An item received but not yet written: it may turn out to be the last.
    let mut held: Option<Vec<u8>> = None;
    loop {
        let next = if held.is_some() {
            match AssertUnwindSafe(stream.next())
                .catch_unwind()
                .now_or_never()
            {
                Some(polled) => polled,
                None => {
                    // More is not ready now: the held item is not the last one.
                    if let Some(v) = held.take() {
                        if send(item(&v)).await.is_err() {
                            return;
                        }
                    }
                    continue;
                }
            }
        } else {
            AssertUnwindSafe(stream.next()).catch_unwind().await
        };
        let next = next.unwrap_or_else(|panic| {
            Some(Err(HandlerFailure::Internal(format!(
                "stream panicked: {}",
                panic_message(&*panic)
            ))))
        });
        let mut out = BytesMut::new();
        match next {
            Some(Ok(v)) => {
                let Some(prev) = held.replace(v) else {
                    continue;
                };
                out = item(&prev);
            }
            Some(Err(failure)) => {
                if let HandlerFailure::Internal(cause) = &failure {
                    tracing::error!("stream reply failed: {cause}");
                }
                if let Some(prev) = held.take() {
                    if send(item(&prev)).await.is_err() {
                        return;
                    }
                }
                encode_error(&mut out, &failure.wire_json(), id);
                let _ = send(out).await;
                return;
            }
            None => {
                encode_response(&mut out, held.take().as_deref(), id);
                let _ = send(out).await;
                return;
            }
        }
        if send(out).await.is_err() {
            return;
        }
    }
}

/// A request that reaches only event handlers: Nest replies with the single handler's
/// result, or `{}` when several ran.
async fn run_events_as_request(events: Vec<Bound>, request: Request) -> HandlerOutcome {
    if let [only] = events.as_slice() {
        return run(only, request).await;
    }
    for bound in &events {
        if let Err(f) = run(bound, request.clone()).await {
            log_failure(bound, &f, "event");
        }
    }
    Ok(Reply::Value(Some(b"{}".to_vec())))
}

/// Runs a handler (through its middleware, if any), turning a panic into Nest's internal
/// error for this request only.
async fn run(bound: &Bound, request: Request) -> HandlerOutcome {
    let outcome = match &bound.service {
        Some(service) => {
            AssertUnwindSafe(call_layered(service, request))
                .catch_unwind()
                .await
        }
        None => {
            AssertUnwindSafe((bound.meta.call)(&bound.instance, request))
                .catch_unwind()
                .await
        }
    };
    outcome.unwrap_or_else(|panic| {
        Err(HandlerFailure::Internal(format!(
            "handler panicked: {}",
            panic_message(&*panic)
        )))
    })
}

/// Nest's log line for an event nobody handles (the event is dropped).
fn no_event_handler(conn: &ConnCtx, pattern: &str) {
    tracing::error!(peer = %conn.peer, %pattern, "There is no matching event handler defined in the remote service. Event pattern: {pattern}");
}

/// Polls `task` once right here and spawns it only if it is not done: a handler that
/// completes without waiting (every plain `fn` handler) is answered without the cost of a
/// task spawn and a context switch, and its reply is returned for the caller's outbox. A
/// pending task registered its interest with a no-op waker; the runtime polls it again at
/// once after the spawn, with a real one, and its reply then goes through `replies`.
fn run_or_spawn(
    task: impl Future<Output = Option<BytesMut>> + Send + 'static,
    replies: &mpsc::Sender<Bytes>,
) -> Option<BytesMut> {
    let mut task = Box::pin(task);
    let mut cx = std::task::Context::from_waker(futures_util::task::noop_waker_ref());
    match task.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(reply) => reply,
        std::task::Poll::Pending => {
            let replies = replies.clone();
            tokio::spawn(async move {
                if let Some(reply) = task.await {
                    // A send error means the connection is gone; the reply has nowhere to go.
                    let _ = replies.send(reply.freeze()).await;
                }
            });
            None
        }
    }
}

/// The `outcome` recorded on spans and metrics.
fn outcome_label(outcome: &HandlerOutcome) -> &'static str {
    match outcome {
        Ok(Reply::Value(_)) => "ok",
        Ok(Reply::Stream(_)) => "stream",
        Err(HandlerFailure::Rpc(_) | HandlerFailure::BadPayload(_)) => "error",
        Err(HandlerFailure::Internal(_)) => "internal",
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".into())
}

fn log_failure(bound: &Bound, failure: &HandlerFailure, what: &str) {
    match failure {
        HandlerFailure::Internal(cause) => {
            tracing::error!(handler = %bound.describe(), "{what} handler failed: {cause}")
        }
        HandlerFailure::BadPayload(msg) => {
            tracing::warn!(handler = %bound.describe(), "{what} rejected: {msg}")
        }
        HandlerFailure::Rpc(_) => {
            tracing::debug!(handler = %bound.describe(), "{what} handler returned an RpcException")
        }
    }
}

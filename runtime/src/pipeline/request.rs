//! A request: answered by its message handler (or, Nest-style, by event handlers alone),
//! at once or by a task, as one reply or a stream.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures_util::FutureExt;
use tracing::Instrument;

use bytes::BytesMut;

use super::answer::{request_id, Answer, AnswerBody, DataNotJson};
use super::call::Slot;
use super::call::{
    call_now, finish, log_failure, outcome_label, run, run_or_spawn, runs_now, start,
};
use super::origin::Origin;
use super::sink::ReplySink;
use super::stream::pump_stream;
use crate::context::Context;
use crate::filter::{filter_failure, FilterChain};
use crate::handler::{HandlerFuture, HandlerOutcome, Reply, ReplyStream, Request};
use crate::observe::{Kind, Observed};
use crate::router::{Bound, Route};

/// Answers a request with the handlers of `route` (no route: Nest's no-handler error). A
/// reply ready at once is appended to `ready` in `S`'s wire form; otherwise the reply goes
/// to the sink made by `sink` (only made when needed: replies ready at once need none).
/// [`DataNotJson`]: see [`call_now`]; nothing was answered.
pub(super) fn handle_request<S: ReplySink>(
    route: Option<&Route>,
    request: Request,
    origin: &Origin,
    slot: &mut Slot,
    sink: impl FnOnce() -> S,
    unchecked: bool,
    ready: &mut BytesMut,
) -> Result<(), DataNotJson> {
    let Some(route) = route.filter(|r| r.message.is_some() || !r.events.is_empty()) else {
        S::WIRE.no_handler(ready, request_id(request.context()));
        return Ok(());
    };
    let ctx = request.context();
    let trace = crate::trace::from_metadata(ctx.metadata_json());
    let observed = Observed::request(
        Kind::Request,
        ctx.pattern_json(),
        ctx.id_json(),
        (origin.peer, origin.received),
        trace.as_deref(),
    );
    if let Some((now, bound)) = route.message.as_ref().and_then(runs_now) {
        // A plain `fn` handler: answered right here, no future, no task. It borrows the
        // request, whose `id` the reply echoes.
        let outcome = call_now(
            now,
            bound,
            &request,
            trace.clone(),
            &observed,
            "request",
            unchecked,
        )?;
        let label = outcome_label(&outcome);
        let id = request_id(request.context());
        match outcome {
            Ok(Reply::Value(value)) => S::WIRE.response(ready, value.as_deref(), id),
            Err(failure) => S::WIRE.error(ready, &failure.wire_json(), id),
            Ok(Reply::Stream(stream)) => {
                let to = request.into_context();
                let filters = bound.filters.clone();
                let answer = pump_later(stream, to, filters, observed, trace, slot.take(), sink());
                answer.inspect(|a| a.encode(S::WIRE, ready));
                return Ok(());
            }
        }
        observed.finish(label);
        return Ok(());
    }
    if let Some(answer) = run_later(route, request, observed, trace, slot.take(), sink()) {
        answer.encode(S::WIRE, ready);
    }
    Ok(())
}

/// A plain `fn` handler returned a stream: items may take time to come, so the stream is
/// pumped by a task of its own. Out of line (like [`run_later`]): the inline path above
/// stays compact in the instruction cache.
#[inline(never)]
fn pump_later<S: ReplySink>(
    stream: ReplyStream,
    to: Context,
    filters: Option<Arc<FilterChain>>,
    observed: Observed,
    trace: Option<Arc<str>>,
    permit: Slot,
    sink: S,
) -> Option<Answer> {
    let span = observed.span.clone();
    let task = async move {
        Box::pin(pump_stream(
            stream,
            request_id(&to),
            &sink,
            filters.as_deref(),
        ))
        .await;
        observed.finish("stream");
        drop(permit);
        None::<(Answer, S)>
    };
    run_or_spawn(crate::trace::maybe_scope(trace, task.instrument(span)))
}

/// A request for an `async` handler, a handler with middleware, or event handlers only:
/// started here, finished by a task when it does not complete at once.
#[inline(never)]
fn run_later<S: ReplySink>(
    route: &Route,
    request: Request,
    observed: Observed,
    trace: Option<Arc<str>>,
    permit: Slot,
    sink: S,
) -> Option<Answer> {
    let span = observed.span.clone();
    // The reply's address (one more reference to the frame: this path outlives dispatch).
    let to = request.context().clone();
    // The handler starts here: the request moves into the handler's own (boxed) future, so
    // this task holds a pointer, not the request. The task is copied when it is boxed or
    // spawned: keep it small (rare paths are boxed too).
    let (running, who, filters) = match &route.message {
        Some(bound) => (
            start(bound, request),
            Some(bound.who()),
            bound.filters.clone(),
        ),
        None => {
            let events: HandlerFuture =
                Box::pin(run_events_as_request(route.events.clone(), request));
            (AssertUnwindSafe(events).catch_unwind(), None, None)
        }
    };
    let task = async move {
        let mut outcome = finish(running).await;
        if let (Err(failure), Some(who)) = (&mut outcome, who) {
            filter_failure(filters.as_deref(), failure);
            log_failure(who, failure, "request");
        }
        let label = outcome_label(&outcome);
        let body = match outcome {
            Ok(Reply::Stream(stream)) => {
                Box::pin(pump_stream(
                    stream,
                    request_id(&to),
                    &sink,
                    filters.as_deref(),
                ))
                .await;
                None
            }
            Ok(Reply::Value(value)) => Some(AnswerBody::Value(value)),
            Err(failure) => Some(AnswerBody::Error(failure.wire_json())),
        };
        observed.finish(label);
        drop(permit);
        // The sink goes back with the reply: whoever sends it (see `run_or_spawn`) needs
        // it, and handing it over costs nothing where a shared copy would cost a clone.
        body.map(|body| (Answer { to, body }, sink))
    };
    let task = crate::trace::maybe_scope(trace, task.instrument(span));
    run_or_spawn(task)
}

/// A request that reaches only event handlers: Nest replies with the single handler's
/// result, or `{}` when several ran.
async fn run_events_as_request(events: Vec<Bound>, request: Request) -> HandlerOutcome {
    if let [only] = events.as_slice() {
        let mut outcome = run(only, request).await;
        if let Err(failure) = &mut outcome {
            filter_failure(only.filters.as_deref(), failure);
        }
        return outcome;
    }
    for bound in &events {
        if let Err(f) = run(bound, request.clone()).await {
            log_failure(bound.who(), &f, "event");
        }
    }
    Ok(Reply::Value(Some(b"{}".to_vec())))
}

//! packet → router → handler → reply: everything that happens to one decoded packet,
//! whichever transport brought it (TCP frames or NATS messages).

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use futures_util::{FutureExt, StreamExt};
use tokio::sync::OwnedSemaphorePermit;
use tracing::Instrument;

use crate::codec::FrameText;
use crate::context::{Context, Frame, PacketFields};
use crate::handler::{
    HandlerFailure, HandlerFuture, HandlerNowFn, HandlerOutcome, Reply, ReplyStream, Request,
};
use crate::middleware::call_layered;
use crate::observe::{Kind, Observed};
use crate::packet::{data_is_json, Inbound, Parsed, Span, Wire};
use crate::router::{Bound, Route, Router, Who};

/// Where the replies of one request go when they are not ready at once (those that are
/// ready at once are returned to the transport, which batches them): the connection's
/// writer on TCP, the request's reply subject on NATS.
pub(crate) trait ReplySink: Send + Sync + 'static {
    /// How packets are encoded for this sink.
    const WIRE: Wire;
    /// Sends one encoded packet; `false` when nobody can receive it any more.
    fn send(&self, packet: Bytes) -> impl Future<Output = bool> + Send;
}

/// Who sent a packet, as far as the transport knows (becomes the handler's [`Context`]),
/// and when it arrived.
#[derive(Clone)]
pub(crate) struct Origin {
    pub peer: std::net::SocketAddr,
    #[cfg(feature = "nats")]
    pub nats: Option<Arc<crate::context::NatsOrigin>>,
    /// When the transport received the packet: a request's duration is measured from
    /// here. On TCP, the read that brought it (one clock read per batch of packets, not
    /// one per packet).
    pub received: Instant,
}

impl Origin {
    pub fn tcp(peer: std::net::SocketAddr) -> Self {
        Origin {
            peer,
            #[cfg(feature = "nats")]
            nats: None,
            received: Instant::now(),
        }
    }

    /// The request a handler gets for a packet received in `frame`.
    pub fn request(&self, frame: Frame, fields: PacketFields, data: Option<Span>) -> Request {
        let ctx = Context::in_frame(frame, fields, self.peer);
        #[cfg(feature = "nats")]
        let ctx = match &self.nats {
            Some(nats) => ctx.with_nats(nats.clone()),
            None => ctx,
        };
        Request::in_frame(data, ctx)
    }
}

/// The in-flight slot (backpressure permit) of the packet being dispatched. Work that
/// finishes during dispatch (plain `fn` handlers, unknown patterns) leaves it in place for
/// the next packet, so a connection served inline does no semaphore traffic per packet;
/// work that outlives dispatch (a spawned handler, a stream) takes it and frees it when
/// done. The transport refills an empty slot, waiting while all slots are busy.
pub(crate) type Slot = Option<OwnedSemaphorePermit>;

/// Shared by every packet of one TCP connection.
pub(crate) struct ConnCtx {
    pub router: Arc<Router>,
    pub origin: Origin,
    pub replies: super::replies::Replies,
}

/// The `data` of a Nest-shaped packet turned out not to be one JSON value (see
/// [`Parsed::data_unchecked`]): nothing was answered, logged or counted, and the
/// connection's reader hands the frame to the general parse.
pub(crate) struct DataNotJson;

/// Routes one packet received on a TCP connection by its `pattern`. Replies ready at once
/// (plain `fn` handlers, unknown patterns) are appended to `outbox`, which the connection
/// writes once per batch of packets read; later replies go through the connection's reply
/// channel.
///
/// Unchecked `data` is checked here before anything happens, except for a plain `fn`
/// handler that decodes it: its strict serde parse is the check (success proves `data` is
/// one JSON value), and `data` is checked on its own only if the handler rejects it.
pub(crate) fn dispatch(
    conn: &ConnCtx,
    text: &FrameText,
    Parsed {
        packet,
        data_unchecked,
    }: Parsed,
    slot: &mut Slot,
    outbox: &mut BytesMut,
) -> Result<(), DataNotJson> {
    let frame = text.bytes();
    let check = |data: &Option<Span>| match data {
        Some(d) if data_unchecked && !data_is_json(d.get(frame)) => Err(DataNotJson),
        _ => Ok(()),
    };
    let lookup = |pattern: &Option<Span>| pattern.and_then(|p| conn.router.lookup(p.get(frame)));
    // Every field stays a span of the frame: the request holds one reference to it.
    let request = |pattern: Option<Span>, data, id, metadata| {
        let pattern = pattern.unwrap_or(Span::all(0));
        let fields = PacketFields {
            pattern,
            id,
            metadata,
        };
        conn.origin.request(Frame::Text(text.clone()), fields, data)
    };
    match packet {
        Inbound::Undefined => no_event_handler(&conn.origin, "undefined"),
        Inbound::Event {
            pattern,
            data,
            metadata,
        } => {
            let Some(route) = lookup(&pattern) else {
                check(&data)?;
                let name = pattern.map(|p| String::from_utf8_lossy(p.get(frame)));
                no_event_handler(&conn.origin, name.as_deref().unwrap_or("undefined"));
                return Ok(());
            };
            let handlers = route.event_handlers();
            let unchecked = data_unchecked && matches!(handlers, [only] if decodes_at_once(only));
            if !unchecked {
                check(&data)?;
            }
            let event = request(pattern, data, None, metadata);
            return handle_event(handlers, event, &conn.origin, slot, unchecked);
        }
        Inbound::Request {
            pattern,
            data,
            id,
            metadata,
        } => {
            let route = lookup(&pattern);
            let handler = route.and_then(|r| r.message.as_ref());
            let unchecked = data_unchecked && handler.is_some_and(decodes_at_once);
            if !unchecked {
                check(&data)?;
            }
            let replies = || conn.replies.clone();
            let request = request(pattern, data, Some(id), metadata);
            let answer = handle_request(route, request, &conn.origin, slot, replies, unchecked);
            if let Some(answer) = answer {
                if let AnswerBody::NotJson = answer.body {
                    return Err(DataNotJson);
                }
                answer.encode(Wire::Tcp, outbox);
            }
        }
    }
    Ok(())
}

/// Runs an event's `handlers` (see [`Route::event_handlers`]): Nest runs every one.
///
/// `unchecked` data (see [`dispatch`]) is only passed to a sole plain `fn` handler that
/// decodes it; if it rejects data that is not JSON, nothing ran and nothing was counted,
/// and the transport hands the frame to the general parse.
pub(crate) fn handle_event(
    handlers: &[Bound],
    request: Request,
    origin: &Origin,
    slot: &mut Slot,
    unchecked: bool,
) -> Result<(), DataNotJson> {
    let trace = crate::trace::from_metadata(request.context().metadata_json());
    // Handlers that run at once need no slot. One that becomes a task (the common async
    // case) owns it; several share it.
    let (mut own, shared) = match handlers.iter().filter(|b| runs_now(b).is_none()).count() {
        0 => (None, None),
        1 => (slot.take(), None),
        _ => (None, slot.take().map(Arc::new)),
    };
    // Handlers that run at once borrow the request. A task needs its own: the last
    // handler takes the request itself, earlier ones get copies.
    let mut request = Some(request);
    let last = handlers.len().saturating_sub(1);
    for (i, bound) in handlers.iter().enumerate() {
        // (Always there: only the last handler takes it.)
        let Some(borrowed) = request.as_ref() else {
            break;
        };
        let pattern = borrowed.context().pattern_json();
        let from = (origin.peer, origin.received);
        let observed = Observed::request(Kind::Event, pattern, None, from, trace.as_deref());
        if let Some((now, bound)) = runs_now(bound) {
            let call = call_now(
                now,
                bound,
                borrowed,
                trace.clone(),
                &observed,
                "event",
                unchecked,
            );
            let Some(outcome) = call else {
                observed.abandon();
                return Err(DataNotJson);
            };
            observed.finish(outcome_label(&outcome));
            continue;
        }
        let owned = if i == last {
            request.take()
        } else {
            request.clone()
        };
        let Some(owned) = owned else { break };
        spawn_event(
            bound,
            owned,
            observed,
            trace.clone(),
            (own.take(), shared.clone()),
        );
    }
    Ok(())
}

/// One `async` (or layered) event handler: started here, finished by a task when it does
/// not complete at once. Out of line: the inline event path stays compact.
#[inline(never)]
fn spawn_event(
    bound: &Bound,
    request: Request,
    observed: Observed,
    trace: Option<Arc<str>>,
    held: (Slot, Option<Arc<OwnedSemaphorePermit>>),
) {
    let span = observed.span.clone();
    let (running, who) = (start(bound, request), bound.who());
    let task = async move {
        let outcome = finish(running).await;
        if let Err(failure) = &outcome {
            log_failure(who, failure, "event");
        }
        observed.finish(outcome_label(&outcome));
        drop(held);
        // Nothing to send (the sink type is only named, never used).
        None::<(Answer, super::replies::Replies)>
    };
    let task = crate::trace::maybe_scope(trace, task.instrument(span));
    run_or_spawn(task);
}

/// A request's reply, not yet encoded: the transport writes it where it goes (straight
/// into a TCP connection's outbox, for replies ready at once).
pub(crate) struct Answer {
    /// The request's context: the reply echoes its `id`.
    to: Context,
    body: AnswerBody,
}

enum AnswerBody {
    Value(Option<Vec<u8>>),
    Error(Vec<u8>),
    NoHandler,
    /// Not an answer: unchecked `data` was not JSON (see [`DataNotJson`]).
    NotJson,
}

impl Answer {
    /// Appends the reply packet to `dst` in `wire`'s form.
    pub fn encode(&self, wire: Wire, dst: &mut BytesMut) {
        let id = request_id(&self.to);
        match &self.body {
            AnswerBody::Value(value) => wire.response(dst, value.as_deref(), id),
            AnswerBody::Error(err) => wire.error(dst, err, id),
            AnswerBody::NoHandler => wire.no_handler(dst, id),
            // Never encoded: `dispatch` turns it into `DataNotJson` first.
            AnswerBody::NotJson => {}
        }
    }
}

/// The `id` a request's reply echoes. (Every request's context has one; `null` only
/// keeps this total.)
fn request_id(ctx: &Context) -> &[u8] {
    ctx.id_json().unwrap_or(b"null")
}

/// Answers a request with the handlers of `route` (no route: Nest's no-handler error).
/// Returns the reply if it is ready at once; otherwise the reply goes to the sink made by
/// `sink` (only made when needed: replies ready at once need none).
pub(crate) fn handle_request<S: ReplySink>(
    route: Option<&Route>,
    request: Request,
    origin: &Origin,
    slot: &mut Slot,
    sink: impl FnOnce() -> S,
    unchecked: bool,
) -> Option<Answer> {
    let Some(route) = route.filter(|r| r.message.is_some() || !r.events.is_empty()) else {
        let body = AnswerBody::NoHandler;
        let to = request.into_context();
        return Some(Answer { to, body });
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
        // request; the reply keeps its context (for the `id`).
        let outcome = call_now(
            now,
            bound,
            &request,
            trace.clone(),
            &observed,
            "request",
            unchecked,
        );
        let to = request.into_context();
        let Some(outcome) = outcome else {
            observed.abandon();
            let body = AnswerBody::NotJson;
            return Some(Answer { to, body });
        };
        let label = outcome_label(&outcome);
        let body = match outcome {
            Ok(Reply::Value(value)) => AnswerBody::Value(value),
            Err(failure) => AnswerBody::Error(failure.wire_json()),
            Ok(Reply::Stream(stream)) => {
                return pump_later(stream, to, observed, trace, slot.take(), sink());
            }
        };
        observed.finish(label);
        return Some(Answer { to, body });
    }
    run_later(route, request, observed, trace, slot.take(), sink())
}

/// A plain `fn` handler returned a stream: items may take time to come, so the stream is
/// pumped by a task of its own. Out of line (like [`run_later`]): the inline path above
/// stays compact in the instruction cache.
#[inline(never)]
fn pump_later<S: ReplySink>(
    stream: ReplyStream,
    to: Context,
    observed: Observed,
    trace: Option<Arc<str>>,
    permit: Slot,
    sink: S,
) -> Option<Answer> {
    let span = observed.span.clone();
    let task = async move {
        Box::pin(pump_stream(stream, request_id(&to), &sink)).await;
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
    let (running, who) = match &route.message {
        Some(bound) => (start(bound, request), Some(bound.who())),
        None => {
            let events: HandlerFuture =
                Box::pin(run_events_as_request(route.events.clone(), request));
            (AssertUnwindSafe(events).catch_unwind(), None)
        }
    };
    let task = async move {
        let outcome = finish(running).await;
        if let (Err(failure), Some(who)) = (&outcome, who) {
            log_failure(who, failure, "request");
        }
        let label = outcome_label(&outcome);
        let body = match outcome {
            Ok(Reply::Stream(stream)) => {
                Box::pin(pump_stream(stream, request_id(&to), &sink)).await;
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

/// Sends a streamed reply with Nest's completion rules: completion is merged into the last
/// item when the stream ends right after it (Nest: in the same tick), and sent as its own
/// `{"isDisposed":true}` packet when the stream ends later; an error ends the stream with
/// `{"err":…,"isDisposed":true}`; an empty stream sends only the completion.
async fn pump_stream<S: ReplySink>(mut stream: ReplyStream, id: &[u8], sink: &S) {
    let send = |frame: BytesMut| sink.send(frame.freeze());
    let item = |value: &[u8]| {
        let mut out = BytesMut::new();
        S::WIRE.stream_item(&mut out, value, id);
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
                        if !send(item(&v)).await {
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
                    if !send(item(&prev)).await {
                        return;
                    }
                }
                S::WIRE.error(&mut out, &failure.wire_json(), id);
                send(out).await;
                return;
            }
            None => {
                S::WIRE.response(&mut out, held.take().as_deref(), id);
                send(out).await;
                return;
            }
        }
        if !send(out).await {
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
            log_failure(bound.who(), &f, "event");
        }
    }
    Ok(Reply::Value(Some(b"{}".to_vec())))
}

/// A handler started on a request; panics are caught when it is polled.
type Running = futures_util::future::CatchUnwind<AssertUnwindSafe<HandlerFuture>>;

/// Starts a handler (through its middleware, if any) on `request`. The request moves into
/// the handler's future, which is boxed: whoever awaits it holds only a pointer.
fn start(bound: &Bound, request: Request) -> Running {
    let future: HandlerFuture = match &bound.service {
        Some(service) => {
            let service = service.clone();
            Box::pin(async move { call_layered(&service, request).await })
        }
        // A plain `fn` handler runs inside `call` itself: catch its panic here too.
        None => std::panic::catch_unwind(AssertUnwindSafe(|| {
            (bound.meta.call)(&bound.instance, request)
        }))
        .unwrap_or_else(|panic| Box::pin(std::future::ready(Err(panicked(&*panic))))),
    };
    AssertUnwindSafe(future).catch_unwind()
}

/// Awaits a started handler, turning a panic into Nest's internal error for this request
/// only.
async fn finish(running: Running) -> HandlerOutcome {
    running.await.unwrap_or_else(|panic| Err(panicked(&*panic)))
}

/// Nest's internal error for a handler that panicked; the panic's message is only logged.
#[cold]
fn panicked(panic: &(dyn std::any::Any + Send)) -> HandlerFailure {
    HandlerFailure::Internal(format!("handler panicked: {}", panic_message(panic)))
}

/// Runs a handler to completion.
async fn run(bound: &Bound, request: Request) -> HandlerOutcome {
    finish(start(bound, request)).await
}

/// A plain `fn` handler without middleware that decodes `data`: its strict payload
/// decoding can stand in for the check of unchecked `data` (see [`dispatch`]).
fn decodes_at_once(bound: &Bound) -> bool {
    bound.meta.decodes_data && runs_now(bound).is_some()
}

/// The synchronous entry point of a plain `fn` handler without middleware.
fn runs_now(bound: &Bound) -> Option<(HandlerNowFn, &Bound)> {
    match (&bound.service, bound.meta.call_now) {
        (None, Some(now)) => Some((now, bound)),
        _ => None,
    }
}

/// Runs a plain `fn` handler at once, inside the packet's span and trace, turning a panic
/// into Nest's internal error for this packet only; failures are logged as `what`.
/// `None`: the handler rejected `unchecked` data that is not JSON at all — not the
/// handler's failure to report; the frame goes to the general parse instead.
fn call_now(
    now: HandlerNowFn,
    bound: &Bound,
    request: &Request,
    trace: Option<std::sync::Arc<str>>,
    observed: &Observed,
    what: &str,
    unchecked: bool,
) -> Option<HandlerOutcome> {
    observed.in_span(|| {
        let call = || now(&bound.instance, request);
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
            crate::trace::maybe_sync_scope(trace, call)
        }))
        .unwrap_or_else(|panic| Err(panicked(&*panic)));
        if let Err(failure) = &outcome {
            if matches!(failure, HandlerFailure::BadPayload(_))
                && unchecked
                && request.data().is_some_and(|d| !data_is_json(d))
            {
                return None;
            }
            log_failure(bound.who(), failure, what);
        }
        Some(outcome)
    })
}

/// Nest's log line for an event nobody handles (the event is dropped).
#[cold]
pub(crate) fn no_event_handler(origin: &Origin, pattern: &str) {
    tracing::error!(peer = %origin.peer, %pattern, "There is no matching event handler defined in the remote service. Event pattern: {pattern}");
}

/// Polls `task` once right here and spawns it only if it is not done: a handler that
/// completes without waiting (every plain `fn` handler) is answered without the cost of a
/// task spawn and a context switch, and its reply is returned for the caller to send. A
/// pending task registered its interest with a no-op waker; the runtime polls it again at
/// once after the spawn, with a real one, and then sends its reply to the sink it returns.
fn run_or_spawn<S: ReplySink>(
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

#[cold]
fn log_failure(who: Who, failure: &HandlerFailure, what: &str) {
    match failure {
        HandlerFailure::Internal(cause) => {
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

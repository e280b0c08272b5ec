//! An event: every handler of its pattern runs (as in Nest); nothing is answered.

use std::sync::Arc;

use tokio::sync::OwnedSemaphorePermit;
use tracing::Instrument;

use super::answer::{Answer, DataNotJson};
use super::call::Slot;
use super::call::{call_now, finish, log_failure, outcome_label, run_or_spawn, runs_now, start};
use super::origin::Origin;
use super::sink::NoReplies;
use crate::filter::filter_failure;
use crate::handler::Request;
use crate::observe::{Kind, Observed};
use crate::router::Bound;

/// Runs an event's `handlers` (see [`Route::event_handlers`]): Nest runs every one.
///
/// `unchecked` data (see [`Parsed::data_unchecked`](crate::packet::Parsed)) is only passed
/// to a sole plain `fn` handler that decodes it; if it rejects data that is not JSON,
/// nothing ran and nothing was counted, and the packet is parsed again in full.
pub(super) fn handle_event(
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
            let outcome = call?;
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
    let filters = bound.filters.clone();
    let task = async move {
        let mut outcome = finish(running).await;
        if let Err(failure) = &mut outcome {
            filter_failure(filters.as_deref(), failure);
            log_failure(who, failure, "event");
        }
        observed.finish(outcome_label(&outcome));
        drop(held);
        // Nothing to send (the sink type is only named, never used).
        None::<(Answer, NoReplies)>
    };
    let task = crate::trace::maybe_scope(trace, task.instrument(span));
    run_or_spawn(task);
}

/// Nest's log line for an event nobody handles (the event is dropped).
#[cold]
pub(super) fn no_event_handler(origin: &Origin, pattern: &str) {
    tracing::error!(peer = %origin.peer, %pattern, "There is no matching event handler defined in the remote service. Event pattern: {pattern}");
}

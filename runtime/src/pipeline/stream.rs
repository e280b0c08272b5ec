//! A streamed reply (Nest's Observable), item by item, with Nest's completion rules.

use std::panic::AssertUnwindSafe;

use bytes::BytesMut;
use futures_util::{FutureExt, StreamExt};

use super::call::panic_message;
use super::sink::ReplySink;
use crate::filter::{filter_failure, FilterChain};
use crate::handler::{HandlerFailure, ReplyStream};

/// Sends a streamed reply with Nest's completion rules: completion is merged into the last
/// item when the stream ends right after it (Nest: in the same tick), and sent as its own
/// `{"isDisposed":true}` packet when the stream ends later; an error ends the stream with
/// `{"err":…,"isDisposed":true}`; an empty stream sends only the completion.
///
/// `filters` are the handler's exception filters, tried on an `Err` item.
pub(super) async fn pump_stream<S: ReplySink>(
    mut stream: ReplyStream,
    id: &[u8],
    sink: &S,
    filters: Option<&FilterChain>,
) {
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
            Some(Err(mut failure)) => {
                filter_failure(filters, &mut failure);
                match &failure {
                    HandlerFailure::Internal(cause) => {
                        tracing::error!("stream reply failed: {cause}")
                    }
                    HandlerFailure::Error(cause) => {
                        tracing::error!("stream reply failed: {cause}")
                    }
                    HandlerFailure::Rpc(_) | HandlerFailure::BadPayload(_) => {}
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

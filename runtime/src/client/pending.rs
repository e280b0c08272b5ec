//! The table of calls awaiting replies, shared by every transport: replies are matched to
//! calls by id, and when the link ends every pending call fails at once.

use std::collections::HashMap;
use std::sync::Mutex;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use crate::packet::Reply;

/// How a call ended, as seen by the link.
#[derive(Debug)]
pub(crate) enum Completion {
    /// Completed, with the last value received (`None`: completed empty).
    Value(Option<Bytes>),
    /// `err` received (raw JSON).
    Error(Bytes),
    /// The link ended first.
    Closed(String),
    /// Nobody is subscribed to the pattern (NATS "no responders").
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    NoResponders,
}

/// One event of a streamed reply, in arrival order.
#[derive(Debug)]
pub(crate) enum StreamEvent {
    /// A `response` value (raw JSON).
    Item(Bytes),
    /// `err` received (raw JSON); the stream is over.
    Error(Bytes),
    /// The link ended before the stream completed.
    Closed(String),
    /// Nobody is subscribed to the pattern (NATS "no responders").
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    NoResponders,
    /// `isDisposed`: the stream completed.
    End,
}

/// Where a pending call's replies go.
enum PendingCall {
    /// `send`: only the outcome matters; keeps the last non-final value, like
    /// `lastValueFrom` on a streamed reply.
    Once {
        done: oneshot::Sender<Completion>,
        last: Option<Bytes>,
    },
    /// `send_stream`: every value is delivered. Unbounded like Nest's Observable: a slow
    /// consumer must not stall other calls multiplexed on the link.
    Stream(mpsc::UnboundedSender<StreamEvent>),
}

impl PendingCall {
    fn end(self, once: Completion, stream: StreamEvent) {
        match self {
            PendingCall::Once { done, .. } => {
                let _ = done.send(once);
            }
            PendingCall::Stream(tx) => {
                let _ = tx.send(stream);
            }
        }
    }
}

#[derive(Default)]
struct Table {
    /// Set once the link is over: later registrations fail immediately.
    closed: Option<String>,
    /// FxHash: the ids are this client's own counter; a reply's id is only looked up.
    calls: HashMap<u64, PendingCall, rustc_hash::FxBuildHasher>,
}

/// Calls awaiting replies on one link (a TCP connection or a NATS connection).
#[derive(Default)]
pub(crate) struct PendingCalls {
    table: Mutex<Table>,
}

impl PendingCalls {
    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        // A poisoned lock only means another thread panicked mid-update of a map whose
        // entries are independent; the data is still usable.
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn insert(&self, id: u64, call: PendingCall) -> Result<(), String> {
        let mut table = self.lock();
        if let Some(reason) = &table.closed {
            return Err(reason.clone());
        }
        table.calls.insert(id, call);
        Ok(())
    }

    /// Registers a call awaiting one outcome; `Err(reason)` if the link is over.
    pub fn register(&self, id: u64) -> Result<oneshot::Receiver<Completion>, String> {
        let (done, rx) = oneshot::channel();
        self.insert(id, PendingCall::Once { done, last: None })?;
        Ok(rx)
    }

    /// Registers a call whose every value is wanted.
    pub fn register_stream(&self, id: u64) -> Result<mpsc::UnboundedReceiver<StreamEvent>, String> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.insert(id, PendingCall::Stream(tx))?;
        Ok(rx)
    }

    /// Forgets a call (its caller gave up, e.g. timed out); a late reply is ignored.
    pub fn forget(&self, id: u64) {
        self.lock().calls.remove(&id);
    }

    /// Why the link is over (or a generic reason if it is not known).
    pub fn closed_reason(&self) -> String {
        self.lock()
            .closed
            .clone()
            .unwrap_or_else(|| "connection closed".into())
    }

    /// Marks the link over, failing every pending call with `reason`.
    pub fn close(&self, reason: &str) {
        let calls = {
            let mut table = self.lock();
            if table.closed.is_none() {
                table.closed = Some(reason.to_owned());
            }
            std::mem::take(&mut table.calls)
        };
        for (_, call) in calls {
            call.end(
                Completion::Closed(reason.to_owned()),
                StreamEvent::Closed(reason.to_owned()),
            );
        }
    }

    /// Ends call `id`: nobody was subscribed to receive it.
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    pub fn no_responders(&self, id: u64) {
        let call = self.lock().calls.remove(&id);
        if let Some(call) = call {
            call.end(Completion::NoResponders, StreamEvent::NoResponders);
        }
    }

    /// Ends call `id` alone with `reason` (its reply was unusable).
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    pub fn fail(&self, id: u64, reason: &str) {
        let call = self.lock().calls.remove(&id);
        if let Some(call) = call {
            call.end(
                Completion::Closed(reason.to_owned()),
                StreamEvent::Closed(reason.to_owned()),
            );
        }
    }

    /// Routes a reply that carries its call's id (TCP: many calls share one stream).
    pub fn on_reply(&self, reply: Reply) {
        match reply.id().and_then(|raw| parse_id(raw)) {
            Some(id) => self.deliver(id, reply),
            None => tracing::debug!("ignoring a reply without a known id"),
        }
    }

    /// Routes a reply that arrived on call `id`'s own reply subject (NATS). A reply naming
    /// another id is ignored, as Nest's `ClientNats` does.
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    pub fn on_reply_for(&self, id: u64, reply: Reply) {
        if reply.id().is_some_and(|raw| parse_id(raw) != Some(id)) {
            tracing::debug!(id, "ignoring a reply naming another call's id");
            return;
        }
        self.deliver(id, reply);
    }

    fn deliver(&self, id: u64, reply: Reply) {
        let mut table = self.lock();
        let Some(call) = table.calls.get_mut(&id) else {
            return; // unknown, forgotten or already finished: ignored, as Nest does
        };
        let finished = match (call, reply) {
            (PendingCall::Once { .. }, Reply::Error { err, .. }) => Some(Completion::Error(err)),
            (
                PendingCall::Once { last, .. },
                Reply::Value {
                    response, disposed, ..
                },
            ) => {
                if disposed {
                    Some(Completion::Value(response.or_else(|| last.take())))
                } else {
                    *last = response;
                    None
                }
            }
            (PendingCall::Stream(tx), Reply::Error { err, .. }) => {
                let _ = tx.send(StreamEvent::Error(err));
                Some(Completion::Value(None))
            }
            (
                PendingCall::Stream(tx),
                Reply::Value {
                    response, disposed, ..
                },
            ) => {
                if let Some(r) = response {
                    let _ = tx.send(StreamEvent::Item(r));
                }
                if disposed {
                    let _ = tx.send(StreamEvent::End);
                    Some(Completion::Value(None))
                } else {
                    None
                }
            }
        };
        if let Some(outcome) = finished {
            if let Some(PendingCall::Once { done, .. }) = table.calls.remove(&id) {
                let _ = done.send(outcome);
            }
        }
    }
}

/// Our ids are decimal strings; anything else is not ours. Read from the bytes (no UTF-8
/// check: a non-digit byte ends it either way).
fn parse_id(raw: &[u8]) -> Option<u64> {
    let digits = raw.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| {
        let digit = d.checked_sub(b'0').filter(|d| *d <= 9)?;
        n.checked_mul(10)?.checked_add(u64::from(digit))
    })
}

#[cfg(test)]
mod tests {
    use super::parse_id;

    #[test]
    fn ids_are_quoted_decimal_u64s() {
        assert_eq!(parse_id(br#""1""#), Some(1));
        assert_eq!(parse_id(br#""007""#), Some(7));
        assert_eq!(parse_id(br#""18446744073709551615""#), Some(u64::MAX));
        for not_ours in [
            &br#""18446744073709551616""#[..], // overflows
            br#""""#,
            br#""-1""#,
            br#""+1""#,
            br#""1a""#,
            b"1",
            br#""1"#,
            "\"١\"".as_bytes(), // a non-ASCII digit
        ] {
            assert_eq!(
                parse_id(not_ours),
                None,
                "{:?}",
                String::from_utf8_lossy(not_ours)
            );
        }
    }
}

//! The table of calls awaiting replies, shared by every transport (public as
//! [`ReplyRouter`](crate::transport::ReplyRouter)): replies are matched to calls by id,
//! and when the link ends every pending call fails at once.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use futures_util::task::AtomicWaker;

use super::stream_queue::{Full, StreamQueue, StreamReceiver, StreamSender};
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
    NoResponders,
    /// `isDisposed`: the stream completed.
    End,
}

/// Where a pending call's replies go.
enum PendingCall {
    /// `send`: only the outcome matters; keeps the last non-final value, like
    /// `lastValueFrom` on a streamed reply. The outcome is left in the entry for the
    /// caller's [`Outcome`] future to take: no channel to allocate per call.
    Once {
        waker: Option<Waker>,
        done: Option<Completion>,
        last: Option<Bytes>,
    },
    /// `send_stream`: every value is delivered, through a queue bounded in bytes: when the
    /// caller falls that far behind, the link stops reading until it catches up.
    Stream(StreamSender),
    /// One call of a `send_batch`: like `Once`, but the batch's caller is woken once, when
    /// the last of its calls is done, and takes every outcome under one lock.
    Member {
        group: Arc<Group>,
        done: Option<Completion>,
        last: Option<Bytes>,
    },
}

/// The calls of one batch still awaiting their outcome, and who waits for them.
#[derive(Default)]
pub(crate) struct Group {
    remaining: AtomicUsize,
    waker: AtomicWaker,
}

impl Group {
    /// One more call of the group is done; the caller is woken after the last one.
    fn done_one(&self, wake: &mut Vec<Waker>) {
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            wake.extend(self.waker.take());
        }
    }

    /// Resolves once every call of the group is done.
    pub fn all_done(&self) -> AllDone<'_> {
        AllDone { group: self }
    }
}

/// From [`Group::all_done`].
pub(crate) struct AllDone<'a> {
    group: &'a Group,
}

impl Future for AllDone<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // Registered before the check: a last call finishing in between still wakes us.
        self.group.waker.register(cx.waker());
        if self.group.remaining.load(Ordering::Acquire) == 0 {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

impl PendingCall {
    /// Ends the call. `true` if the entry must leave the table now (a stream's channel
    /// carries the end); a `send`'s entry stays until its caller takes the outcome. A
    /// waker to wake once the table is unlocked goes to `wake`.
    fn end(&mut self, once: Completion, stream: StreamEvent, wake: &mut Vec<Waker>) -> bool {
        match self {
            PendingCall::Once { waker, done, .. } => {
                if done.is_none() {
                    *done = Some(once);
                    wake.extend(waker.take());
                }
                false
            }
            PendingCall::Stream(tx) => {
                // The last event: nothing more will come for this stream to wait on.
                let _ = tx.send(stream);
                true
            }
            PendingCall::Member { group, done, .. } => {
                if done.is_none() {
                    *done = Some(once);
                    group.done_one(wake);
                }
                false
            }
        }
    }
}

/// What a value or error reply makes of a call kept until its outcome: `Some` once it is
/// over (an error, or a value marked disposed), else the value is kept in `last`.
fn settle(last: &mut Option<Bytes>, reply: Reply) -> Option<Completion> {
    match reply {
        Reply::Error { err, .. } => Some(Completion::Error(err)),
        Reply::Value {
            response,
            disposed: true,
            ..
        } => Some(Completion::Value(response.or_else(|| last.take()))),
        Reply::Value { response, .. } => {
            *last = response;
            None
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
    /// Told once, when the link closes (the client's status follows it).
    on_close: Mutex<Option<OnClose>>,
}

/// What [`PendingCalls::on_close`] runs, with the reason the link closed.
pub(crate) type OnClose = Box<dyn FnOnce(&str) + Send>;

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

    /// Registers a call awaiting one outcome; `Err(reason)` if the link is over. The
    /// outcome is awaited with [`PendingCalls::outcome`].
    pub fn register(&self, id: u64) -> Result<(), String> {
        self.insert(
            id,
            PendingCall::Once {
                waker: None,
                done: None,
                last: None,
            },
        )
    }

    /// Registers calls `first..first + n` of one batch, under one lock; `group` learns when
    /// they are all done. Their outcomes are taken with [`PendingCalls::take_group`].
    pub fn register_group(&self, first: u64, n: usize, group: &Arc<Group>) -> Result<(), String> {
        group.remaining.store(n, Ordering::Release);
        let mut table = self.lock();
        if let Some(reason) = &table.closed {
            return Err(reason.clone());
        }
        table.calls.reserve(n);
        for id in (first..).take(n) {
            let member = PendingCall::Member {
                group: group.clone(),
                done: None,
                last: None,
            };
            table.calls.insert(id, member);
        }
        Ok(())
    }

    /// Takes the outcomes of calls `first..first + n` (`None`: not done yet) and forgets
    /// them, under one lock.
    pub fn take_group(&self, first: u64, n: usize) -> Vec<Option<Completion>> {
        let mut table = self.lock();
        let closed = table.closed.clone();
        (first..)
            .take(n)
            .map(|id| match table.calls.remove(&id) {
                Some(PendingCall::Member { done, .. }) => done,
                // Gone from the table: only a closed link's calls can be (never the case
                // while the caller waits).
                _ => Some(Completion::Closed(
                    closed.clone().unwrap_or_else(|| "connection closed".into()),
                )),
            })
            .collect()
    }

    /// Forgets calls `first..first + n` (their batch's caller gave up).
    pub fn forget_group(&self, first: u64, n: usize) {
        let mut table = self.lock();
        for id in (first..).take(n) {
            table.calls.remove(&id);
        }
    }

    /// Resolves with call `id`'s outcome (registered with [`PendingCalls::register`]).
    pub fn outcome(&self, id: u64) -> Outcome<'_> {
        Outcome { calls: self, id }
    }

    /// Registers a call whose every value is wanted, queuing up to `limit` bytes of them
    /// for the caller (see [`on_reply`](Self::on_reply)).
    pub fn register_stream(&self, id: u64, limit: usize) -> Result<StreamReceiver, String> {
        let (tx, rx) = StreamQueue::channel(limit);
        self.insert(id, PendingCall::Stream(tx))?;
        Ok(rx)
    }

    /// Forgets a call (its caller gave up, e.g. timed out); a late reply is ignored.
    pub fn forget(&self, id: u64) {
        self.lock().calls.remove(&id);
    }

    /// Whether the link is over (no call can be registered any more).
    pub fn is_closed(&self) -> bool {
        self.lock().closed.is_some()
    }

    /// Why the link is over, once it is.
    pub fn closed(&self) -> Option<String> {
        self.lock().closed.clone()
    }

    /// Why the link is over (or a generic reason if it is not known).
    pub fn closed_reason(&self) -> String {
        self.closed().unwrap_or_else(|| "connection closed".into())
    }

    /// Marks the link over, failing every pending call with `reason`.
    pub fn close(&self, reason: &str) {
        let mut wake = Vec::new();
        {
            let mut table = self.lock();
            if table.closed.is_none() {
                table.closed = Some(reason.to_owned());
            }
            table.calls.retain(|_, call| {
                !call.end(
                    Completion::Closed(reason.to_owned()),
                    StreamEvent::Closed(reason.to_owned()),
                    &mut wake,
                )
            });
        }
        wake.into_iter().for_each(Waker::wake);
        let told = self
            .on_close
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(tell) = told {
            tell(reason);
        }
    }

    /// Runs `tell` with the reason once the link closes (at once if it has).
    pub fn on_close(&self, tell: OnClose) {
        // Stored under the table's lock: a `close` either saw it or left the reason for us.
        let table = self.lock();
        match &table.closed {
            Some(reason) => {
                let reason = reason.clone();
                drop(table);
                tell(&reason);
            }
            None => *self.on_close.lock().unwrap_or_else(|p| p.into_inner()) = Some(tell),
        }
    }

    /// Ends call `id`: nobody was subscribed to receive it.
    pub fn no_responders(&self, id: u64) {
        self.end(id, Completion::NoResponders, StreamEvent::NoResponders);
    }

    /// Ends call `id` alone with `reason` (its reply was unusable).
    pub fn fail(&self, id: u64, reason: &str) {
        self.end(
            id,
            Completion::Closed(reason.to_owned()),
            StreamEvent::Closed(reason.to_owned()),
        );
    }

    fn end(&self, id: u64, once: Completion, stream: StreamEvent) {
        let mut wake = Vec::new();
        {
            let mut table = self.lock();
            if let Some(call) = table.calls.get_mut(&id) {
                if call.end(once, stream, &mut wake) {
                    table.calls.remove(&id);
                }
            }
        }
        wake.into_iter().for_each(Waker::wake);
    }

    /// Routes a reply that carries its call's id (TCP: many calls share one stream).
    /// `Some` when it filled a streamed reply's queue: a link that can stop reading waits
    /// for [`Full::room`] before it reads more.
    #[must_use]
    pub fn on_reply(&self, reply: Reply) -> Option<Full> {
        match reply.id().and_then(|raw| parse_id(raw)) {
            Some(id) => self.deliver(id, reply),
            None => {
                tracing::debug!("ignoring a reply without a known id");
                None
            }
        }
    }

    /// Routes a reply that arrived on call `id`'s own reply subject (NATS). A reply naming
    /// another id is ignored, as Nest's `ClientNats` does.
    pub fn on_reply_for(&self, id: u64, reply: Reply) {
        if reply.id().is_some_and(|raw| parse_id(raw) != Some(id)) {
            tracing::debug!(id, "ignoring a reply naming another call's id");
            return;
        }
        // A message transport's streams are not paced here: its own subscription buffer
        // bounds what it takes in.
        let _ = self.deliver(id, reply);
    }

    fn deliver(&self, id: u64, reply: Reply) -> Option<Full> {
        let mut table = self.lock();
        let Some(call) = table.calls.get_mut(&id) else {
            return None; // unknown, forgotten or already finished: ignored, as Nest does
        };
        match (call, reply) {
            (PendingCall::Once { waker, done, last }, reply) => {
                if done.is_some() {
                    return None; // finished already; the caller has yet to take the outcome
                }
                *done = settle(last, reply);
                let wake = done.is_some().then(|| waker.take()).flatten();
                drop(table);
                if let Some(waker) = wake {
                    waker.wake();
                }
                None
            }
            (PendingCall::Member { group, done, last }, reply) => {
                if done.is_some() {
                    return None;
                }
                *done = settle(last, reply);
                if done.is_some() {
                    let mut wake = Vec::new();
                    group.done_one(&mut wake);
                    drop(table);
                    wake.into_iter().for_each(Waker::wake);
                }
                None
            }
            (PendingCall::Stream(tx), Reply::Error { err, .. }) => {
                let _ = tx.send(StreamEvent::Error(err));
                table.calls.remove(&id);
                None
            }
            (
                PendingCall::Stream(tx),
                Reply::Value {
                    response, disposed, ..
                },
            ) => {
                let full = response.and_then(|r| tx.send(StreamEvent::Item(r)));
                if disposed {
                    // Over: no more items will come for the caller to fall behind on.
                    let _ = tx.send(StreamEvent::End);
                    table.calls.remove(&id);
                    return None;
                }
                full
            }
        }
    }
}

/// The outcome of one `send`, from [`PendingCalls::outcome`]. Dropping it early leaves the
/// entry in the table: the caller's `CallGuard` removes it.
pub(crate) struct Outcome<'a> {
    calls: &'a PendingCalls,
    id: u64,
}

impl Future for Outcome<'_> {
    type Output = Completion;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Completion> {
        let mut table = self.calls.lock();
        let Some(PendingCall::Once { waker, done, .. }) = table.calls.get_mut(&self.id) else {
            // Forgotten (never the case while the caller waits) or replaced: the call is over.
            let reason = table.closed.clone();
            return Poll::Ready(Completion::Closed(
                reason.unwrap_or_else(|| "connection closed".into()),
            ));
        };
        if let Some(outcome) = done.take() {
            table.calls.remove(&self.id);
            return Poll::Ready(outcome);
        }
        match waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => *waker = Some(cx.waker().clone()),
        }
        Poll::Pending
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
    use super::*;

    fn value(id: u64, response: &'static str, disposed: bool) -> Reply {
        Reply::Value {
            id: Some(Bytes::from(format!("\"{id}\""))),
            response: Some(Bytes::from_static(response.as_bytes())),
            disposed,
        }
    }

    #[tokio::test]
    async fn a_send_resolves_with_its_last_value_once_disposed() {
        let calls = PendingCalls::default();
        calls.register(1).unwrap();
        calls.register(2).unwrap();
        let (one, two) = (calls.outcome(1), calls.outcome(2));
        let _ = calls.on_reply(value(2, "20", true));
        let _ = calls.on_reply(value(1, "10", false)); // streamed: kept until disposed
        let _ = calls.on_reply(value(1, "11", false));
        let _ = calls.on_reply(Reply::Value {
            id: Some(Bytes::from_static(b"\"1\"")),
            response: None,
            disposed: true,
        });
        let _ = calls.on_reply(value(1, "99", true)); // late: the call is over, ignored
        assert!(matches!(two.await, Completion::Value(Some(v)) if v == "20"));
        assert!(matches!(one.await, Completion::Value(Some(v)) if v == "11"));
        assert!(
            calls.lock().calls.is_empty(),
            "taken outcomes leave the table"
        );
    }

    #[tokio::test]
    async fn closing_fails_waiting_and_later_calls() {
        let calls = std::sync::Arc::new(PendingCalls::default());
        calls.register(1).unwrap();
        let waiting = tokio::spawn({
            let calls = calls.clone();
            async move { calls.outcome(1).await }
        });
        tokio::task::yield_now().await;
        calls.close("closed by the server");
        assert!(
            matches!(waiting.await.unwrap(), Completion::Closed(r) if r == "closed by the server")
        );
        assert_eq!(calls.register(2).unwrap_err(), "closed by the server");
    }

    #[test]
    fn the_close_is_told_once_even_when_asked_after_it() {
        let told = std::sync::Arc::new(Mutex::new(Vec::new()));
        let calls = PendingCalls::default();
        let t = told.clone();
        calls.on_close(Box::new(move |r| t.lock().unwrap().push(r.to_owned())));
        calls.close("gone");
        calls.close("again");
        let t = told.clone();
        calls.on_close(Box::new(move |r| {
            t.lock().unwrap().push(format!("late {r}"))
        }));
        assert_eq!(*told.lock().unwrap(), ["gone", "late gone"]);
    }

    #[tokio::test]
    async fn a_forgotten_call_ignores_its_reply() {
        let calls = PendingCalls::default();
        calls.register(1).unwrap();
        calls.forget(1);
        let _ = calls.on_reply(value(1, "1", true));
        assert!(calls.lock().calls.is_empty());
    }

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

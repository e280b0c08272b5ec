//! [`Client::send_batch`]: many requests to one pattern, queued to the connection together
//! and awaited together. The wire is Nest's as ever (one frame per request, matched by id),
//! so any Nest or nestling service answers them; what a batch saves is the caller's side:
//! one registration, one write into the outbox and one wake-up per batch instead of per call.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::time::Instant;
use tracing::Instrument;

use super::link::{Batch, Payloads};
use super::pending::{Group, PendingCalls};
use super::{to_pattern, Client};
use crate::error::ClientError;
use crate::observe::Observed;
use crate::pattern::{IntoPattern, Pattern};

/// Forgets a batch's calls if its caller stops waiting.
struct GroupGuard {
    calls: Arc<PendingCalls>,
    first: u64,
    n: usize,
    armed: bool,
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if self.armed {
            self.calls.forget_group(self.first, self.n);
        }
    }
}

impl Client {
    /// Sends one request to `pattern` per item of `data` and returns their replies in the
    /// order of `data`, each as [`send`](Self::send) would have returned it.
    ///
    /// On the wire these are ordinary requests (one frame each, matched by id): any Nest
    /// or nestling service answers them, and the service handles them concurrently as it
    /// would separate calls. What a batch saves is the caller's work: the calls are
    /// registered, queued to the connection and awaited together, so a batch of 32 costs
    /// the caller far less than 32 `send`s (see the README's client figures). Use it when
    /// you have many calls to one pattern at hand; `send` stays the simple way.
    ///
    /// The outer `Err` is a failure of the whole batch before anything was sent: a
    /// payload that does not serialise, no connection. The client's
    /// [`request_timeout`](super::ClientBuilder::request_timeout) covers the whole batch:
    /// calls not answered by then end with [`ClientError::Timeout`], answered ones keep
    /// their replies. A batch larger than the client's
    /// [`max_in_flight`](super::ClientBuilder::max_in_flight) or
    /// [`max_queued_frames`](super::ClientBuilder::max_queued_frames) is sent in parts of
    /// that size, one after the other.
    ///
    /// ```no_run
    /// # async fn run(client: nestling::Client) -> Result<(), nestling::ClientError> {
    /// let sums = client
    ///     .send_batch::<_, _, i64>("sum", [[1, 2], [3, 4], [5, 6]])
    ///     .await?;
    /// let sums: Vec<i64> = sums.into_iter().collect::<Result<_, _>>()?;
    /// assert_eq!(sums, [3, 7, 11]);
    /// # Ok(()) }
    /// ```
    pub async fn send_batch<P, T, R>(
        &self,
        pattern: P,
        data: impl IntoIterator<Item = T>,
    ) -> Result<Vec<Result<R, ClientError>>, ClientError>
    where
        P: IntoPattern,
        T: Serialize,
        R: DeserializeOwned,
    {
        let pattern = to_pattern(pattern)?;
        let mut payloads = Payloads::default();
        for item in data {
            payloads.push(&item).map_err(|source| ClientError::Encode {
                pattern: pattern.to_string(),
                source,
            })?;
        }
        let timeout = self.inner.request_timeout;
        let deadline = timeout.map(|t| Instant::now() + t);
        let part = self
            .inner
            .max_in_flight
            .min(self.inner.tcp.max_queued_frames)
            .max(1);
        let mut results = Vec::with_capacity(payloads.len());
        let mut start = 0;
        while start < payloads.len() {
            let range = start..(start + part).min(payloads.len());
            start = range.end;
            let sent = self.batch_part(&pattern, &payloads, range, deadline);
            let part_results = match deadline {
                Some(at) => tokio::time::timeout_at(at, sent)
                    .await
                    .unwrap_or_else(|_| Err(timed_out(&pattern, timeout))),
                None => sent.await,
            }?;
            results.extend(part_results);
        }
        Ok(results)
    }

    /// Sends `range` of `payloads` as one batch and waits (until `deadline`) for its replies.
    async fn batch_part<R: DeserializeOwned>(
        &self,
        pattern: &Pattern,
        payloads: &Payloads,
        range: std::ops::Range<usize>,
        deadline: Option<Instant>,
    ) -> Result<Vec<Result<R, ClientError>>, ClientError> {
        let n = range.len();
        let first = self.inner.next_id.fetch_add(n as u64, Ordering::Relaxed);
        let trace = crate::trace::current();
        let observed = Observed::batch(pattern, first, n, trace.as_deref());
        let span = observed.span.clone();
        let run = async {
            let _slots = self
                .inner
                .in_flight
                .clone()
                .acquire_many_owned(n as u32)
                .await
                .map_err(|_| self.closed("client closed".into()))?;
            let link = self.connection().await?;
            let calls = &link.replies().calls;
            let group = Arc::new(Group::default());
            calls
                .register_group(first, n, &group)
                .map_err(|r| self.closed(r))?;
            let mut guard = GroupGuard {
                calls: calls.clone(),
                first,
                n,
                armed: true,
            };
            let batch = Batch {
                wire_pattern: pattern.json_bytes(),
                payloads,
                range,
                metadata: crate::trace::outgoing_metadata(),
            };
            link.request_batch(pattern, first, &batch).await?;
            match deadline {
                Some(at) => {
                    let _ = tokio::time::timeout_at(at, group.all_done()).await;
                }
                None => group.all_done().await,
            }
            let outcomes = calls.take_group(first, n);
            guard.armed = false;
            Ok(outcomes)
        };
        let outcomes = match run.instrument(span).await {
            Ok(outcomes) => outcomes,
            Err(e) => {
                observed.finish_each(std::iter::repeat_n("failed", n));
                return Err(e);
            }
        };
        let timeout = self.inner.request_timeout;
        let results: Vec<Result<R, ClientError>> = outcomes
            .into_iter()
            .map(|outcome| match outcome {
                Some(completion) => self.result_of(pattern, completion),
                None => Err(timed_out(pattern, timeout)),
            })
            .collect();
        observed.finish_each(results.iter().map(|r| match r {
            Ok(_) => "ok",
            Err(ClientError::Remote { .. }) => "error",
            Err(ClientError::Timeout { .. }) => "timeout",
            Err(_) => "failed",
        }));
        Ok(results)
    }
}

/// The error of calls the request timeout ended.
fn timed_out(pattern: &Pattern, timeout: Option<Duration>) -> ClientError {
    ClientError::Timeout {
        pattern: pattern.to_string(),
        timeout: timeout.unwrap_or_default(),
    }
}

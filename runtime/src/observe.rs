//! Per-request tracing spans and (with the `metrics` feature) metrics, in one place so
//! the server's and client's hot paths stay readable.
//!
//! Spans, at DEBUG level so that an INFO subscriber pays nothing per request:
//! `nestling.request` (server; fields `kind`, `pattern`, `id`, `peer`, `trace_id`,
//! `outcome`, `duration_us`) and `nestling.call` (client; `pattern`, `id`, `trace_id`,
//! `outcome`, `duration_us`). Metrics: `nestling_server_requests_total{kind,outcome}`,
//! `nestling_server_request_duration_seconds{kind}`, `nestling_server_connections`,
//! `nestling_server_in_flight`, `nestling_client_calls_total{outcome}`,
//! `nestling_client_call_duration_seconds`.
//!
//! Metric handles are registered with the recorder once per process, when the first
//! connection, request or call is observed (the `metrics` crate's advice for hot paths):
//! a request then costs a few atomic adds instead of a recorder lookup and a key hash per
//! metric. A recorder must therefore be installed before the first one — at the top of
//! `main`, as every exporter's documentation shows.

use std::time::Instant;

use tracing::field::Empty;
use tracing::Span;

/// What is being observed: a server packet, or a client call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A request (message pattern) served.
    Request,
    /// An event served.
    Event,
    /// A call made by the client.
    Call,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Request => "request",
            Kind::Event => "event",
            Kind::Call => "call",
        }
    }
}

/// A request (or call) being observed.
pub(crate) struct Observed {
    pub span: Span,
    start: Instant,
    kind: Kind,
}

fn text(raw: &[u8]) -> &str {
    std::str::from_utf8(raw).unwrap_or("<invalid utf-8>")
}

impl Observed {
    /// Server side: one packet from `peer` handled, timed from `received` (when the
    /// transport received it).
    pub fn request(
        kind: Kind,
        pattern: &[u8],
        id: Option<&[u8]>,
        (peer, received): (std::net::SocketAddr, Instant),
        trace_id: Option<&str>,
    ) -> Self {
        let span = tracing::debug_span!(
            "nestling.request",
            kind = kind.as_str(),
            pattern = text(pattern),
            id = id.map(text),
            %peer,
            trace_id,
            outcome = Empty,
            duration_us = Empty,
        );
        #[cfg(feature = "metrics")]
        handles::get().in_flight.increment(1.0);
        Self {
            span,
            start: received,
            kind,
        }
    }

    /// Client side: one call made.
    pub fn call(pattern: &crate::Pattern, id: u64, trace_id: Option<&str>) -> Self {
        // Field values are only evaluated for an enabled span.
        let span = tracing::debug_span!(
            "nestling.call",
            pattern = pattern.as_json(),
            id,
            trace_id,
            outcome = Empty,
            duration_us = Empty,
        );
        Self {
            span,
            start: Instant::now(),
            kind: Kind::Call,
        }
    }

    /// Client side: one batch of `calls` calls made, ids `first..` (one span for them all;
    /// each call is still counted in the metrics, see [`finish_each`](Self::finish_each)).
    pub fn batch(
        pattern: &crate::Pattern,
        first: u64,
        calls: usize,
        trace_id: Option<&str>,
    ) -> Self {
        let span = tracing::debug_span!(
            "nestling.batch",
            pattern = pattern.as_json(),
            first_id = first,
            calls,
            trace_id,
            outcome = Empty,
            duration_us = Empty,
        );
        Self {
            span,
            start: Instant::now(),
            kind: Kind::Call,
        }
    }

    /// Records how each call of a batch ended (all with the batch's duration); the span's
    /// outcome is the first call's that is not `ok`, or `ok`.
    pub fn finish_each(self, outcomes: impl Iterator<Item = &'static str>) {
        let elapsed = self.start.elapsed();
        let mut worst = "ok";
        for outcome in outcomes {
            if worst == "ok" {
                worst = outcome;
            }
            #[cfg(feature = "metrics")]
            handles::get().record(self.kind, outcome, elapsed.as_secs_f64());
        }
        if !self.span.is_disabled() {
            self.span.record("outcome", worst);
            self.span.record(
                "duration_us",
                elapsed.as_micros().min(u64::MAX as u128) as u64,
            );
        }
    }

    /// Runs `f` inside the span (a handler's log lines belong to its request).
    pub fn in_span<R>(&self, f: impl FnOnce() -> R) -> R {
        self.span.in_scope(f)
    }

    /// Records how it ended: `ok`, `error` (an `err` reply), `rejected`, …
    ///
    /// One that is dropped unfinished (a packet handled again from the general parse, a
    /// task aborted at shutdown) is not counted, but leaves the in-flight gauge all the
    /// same: see the `Drop` impl.
    pub fn finish(self, outcome: &'static str) {
        // Without metrics, only an enabled span wants the duration: no clock read.
        #[cfg(not(feature = "metrics"))]
        if self.span.is_disabled() {
            return;
        }
        let elapsed = self.start.elapsed();
        // Nothing listens to a disabled span (the usual case: spans are DEBUG).
        if !self.span.is_disabled() {
            self.span.record("outcome", outcome);
            self.span.record(
                "duration_us",
                elapsed.as_micros().min(u64::MAX as u128) as u64,
            );
        }
        #[cfg(feature = "metrics")]
        handles::get().record(self.kind, outcome, elapsed.as_secs_f64());
        #[cfg(not(feature = "metrics"))]
        let _ = self.kind;
    }
}

/// The in-flight gauge goes down however a packet's handling ends, finished or not.
#[cfg(feature = "metrics")]
impl Drop for Observed {
    fn drop(&mut self) {
        if self.kind != Kind::Call {
            handles::get().in_flight.decrement(1.0);
        }
    }
}

/// One open server connection, counted in `nestling_server_connections` while it lives:
/// the count goes down when the connection's task ends, or is aborted.
pub(crate) struct OpenConnection(());

impl OpenConnection {
    pub fn counted() -> Self {
        #[cfg(feature = "metrics")]
        handles::get().connections.increment(1.0);
        OpenConnection(())
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        #[cfg(feature = "metrics")]
        handles::get().connections.decrement(1.0);
    }
}

/// Every metric nestling records, registered once (see the module docs).
#[cfg(feature = "metrics")]
mod handles {
    use std::sync::OnceLock;

    use metrics::{counter, gauge, histogram, Counter, Gauge, Histogram};

    use super::Kind;

    /// One server kind's duration histogram and outcome counters.
    pub struct Served {
        duration: Histogram,
        /// `ok`, `stream`, `error`, `internal`, in this order.
        outcomes: [Counter; 4],
    }

    pub struct Handles {
        pub in_flight: Gauge,
        pub connections: Gauge,
        request: Served,
        event: Served,
        call_duration: Histogram,
        /// `ok`, `error`, `timeout`, `failed`, in this order.
        calls: [Counter; 4],
    }

    static HANDLES: OnceLock<Handles> = OnceLock::new();

    /// The handles, registered with the current recorder on first use.
    pub fn get() -> &'static Handles {
        HANDLES.get_or_init(register)
    }

    /// Labels are literals so the keys are built statically.
    fn register() -> Handles {
        macro_rules! served {
            ($kind:literal) => {
                Served {
                    duration: histogram!("nestling_server_request_duration_seconds", "kind" => $kind),
                    outcomes: [
                        counter!("nestling_server_requests_total", "kind" => $kind, "outcome" => "ok"),
                        counter!("nestling_server_requests_total", "kind" => $kind, "outcome" => "stream"),
                        counter!("nestling_server_requests_total", "kind" => $kind, "outcome" => "error"),
                        counter!("nestling_server_requests_total", "kind" => $kind, "outcome" => "internal"),
                    ],
                }
            };
        }
        Handles {
            in_flight: gauge!("nestling_server_in_flight"),
            connections: gauge!("nestling_server_connections"),
            request: served!("request"),
            event: served!("event"),
            call_duration: histogram!("nestling_client_call_duration_seconds"),
            calls: [
                counter!("nestling_client_calls_total", "outcome" => "ok"),
                counter!("nestling_client_calls_total", "outcome" => "error"),
                counter!("nestling_client_calls_total", "outcome" => "timeout"),
                counter!("nestling_client_calls_total", "outcome" => "failed"),
            ],
        }
    }

    impl Handles {
        /// Records one finished request, event or call.
        pub fn record(&self, kind: Kind, outcome: &str, seconds: f64) {
            let served = match kind {
                Kind::Call => {
                    self.call_duration.record(seconds);
                    let i = match outcome {
                        "ok" => 0,
                        "error" => 1,
                        "timeout" => 2,
                        _ => 3,
                    };
                    self.calls[i].increment(1);
                    return;
                }
                Kind::Request => &self.request,
                Kind::Event => &self.event,
            };
            served.duration.record(seconds);
            let i = match outcome {
                "ok" => 0,
                "stream" => 1,
                "error" => 2,
                "internal" => 3,
                _ => return,
            };
            served.outcomes[i].increment(1);
        }
    }
}

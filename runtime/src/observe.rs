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

use std::time::Instant;

use tracing::field::Empty;
use tracing::Span;

/// A request (or call) being observed.
pub(crate) struct Observed {
    pub span: Span,
    start: Instant,
    kind: &'static str,
}

fn text(raw: &[u8]) -> &str {
    std::str::from_utf8(raw).unwrap_or("<invalid utf-8>")
}

impl Observed {
    /// Server side: one packet handled.
    pub fn request(
        kind: &'static str,
        pattern: &[u8],
        id: Option<&[u8]>,
        peer: std::net::SocketAddr,
        trace_id: Option<&str>,
    ) -> Self {
        let span = tracing::debug_span!(
            "nestling.request",
            kind,
            pattern = text(pattern),
            id = id.map(text),
            %peer,
            trace_id,
            outcome = Empty,
            duration_us = Empty,
        );
        #[cfg(feature = "metrics")]
        metrics::gauge!("nestling_server_in_flight").increment(1.0);
        Self {
            span,
            start: Instant::now(),
            kind,
        }
    }

    /// Client side: one call made.
    pub fn call(pattern: &str, id: u64, trace_id: Option<&str>) -> Self {
        let span = tracing::debug_span!(
            "nestling.call",
            pattern,
            id,
            trace_id,
            outcome = Empty,
            duration_us = Empty,
        );
        Self {
            span,
            start: Instant::now(),
            kind: "call",
        }
    }

    /// Runs `f` inside the span (a handler's log lines belong to its request).
    pub fn in_span<R>(&self, f: impl FnOnce() -> R) -> R {
        self.span.in_scope(f)
    }

    /// Records how it ended: `ok`, `error` (an `err` reply), `rejected`, …
    pub fn finish(self, outcome: &'static str) {
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
        record(self.kind, outcome, elapsed.as_secs_f64());
        #[cfg(not(feature = "metrics"))]
        let _ = self.kind;
    }
}

/// Records one finished request or call. Labels are literals in every arm so the
/// `metrics` macros build their keys statically: no allocation per request.
#[cfg(feature = "metrics")]
fn record(kind: &'static str, outcome: &'static str, seconds: f64) {
    macro_rules! server {
        ($kind:literal, $($outcome:literal)|*) => {{
            metrics::gauge!("nestling_server_in_flight").decrement(1.0);
            metrics::histogram!("nestling_server_request_duration_seconds", "kind" => $kind)
                .record(seconds);
            match outcome {
                $($outcome => metrics::counter!(
                    "nestling_server_requests_total", "kind" => $kind, "outcome" => $outcome
                ).increment(1),)*
                _ => {}
            }
        }};
    }
    match kind {
        "call" => {
            metrics::histogram!("nestling_client_call_duration_seconds").record(seconds);
            match outcome {
                "ok" => {
                    metrics::counter!("nestling_client_calls_total", "outcome" => "ok").increment(1)
                }
                "error" => metrics::counter!("nestling_client_calls_total", "outcome" => "error")
                    .increment(1),
                "timeout" => {
                    metrics::counter!("nestling_client_calls_total", "outcome" => "timeout")
                        .increment(1)
                }
                _ => metrics::counter!("nestling_client_calls_total", "outcome" => "failed")
                    .increment(1),
            }
        }
        "request" => server!("request", "ok" | "stream" | "error" | "internal"),
        _ => server!("event", "ok" | "stream" | "error" | "internal"),
    }
}

/// Counts an accepted (`+1`) or closed (`-1`) server connection.
pub(crate) fn connection(delta: f64) {
    #[cfg(feature = "metrics")]
    metrics::gauge!("nestling_server_connections").increment(delta);
    #[cfg(not(feature = "metrics"))]
    let _ = delta;
}

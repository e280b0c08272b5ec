//! `nestling call`: one request, a streamed request, or a `--repeat` load run.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use hdrhistogram::Histogram;
use nestling::{Client, ClientError, Pattern};
use serde_json::{json, Value};

use crate::address::Address;
use crate::output::{self, Failure, CONNECTION, REMOTE};
use crate::tls::Tls;
use crate::{input, CallArgs};

/// Connect timeout used when `--timeout 0` lifts the reply limit.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

pub async fn run(args: CallArgs) -> Result<(), Failure> {
    let address = Address::parse(&args.target.addr)?;
    let pattern = input::pattern(&args.target.pattern)?;
    let data = input::payload(&args.target)?;
    let tls = match &address {
        Address::Tcp(addr) => Tls::from_args(&args.target, addr)?,
        broker => {
            broker.reject_tls(args.target.tls)?;
            None
        }
    };
    let limit = (args.target.timeout > 0).then(|| Duration::from_millis(args.target.timeout));
    // `nestling::Client` dials `nats://` and `amqp://` addresses itself.
    let mut builder = Client::builder(address.client_addr())
        .connect_timeout(limit.unwrap_or(DEFAULT_CONNECT_TIMEOUT))
        .request_timeout(limit);
    if let Some(tls) = &tls {
        builder = builder.tls(tls.client_tls()?);
    }
    let client = builder.build();
    if let Some(n) = args.repeat {
        let concurrency = args.concurrency.unwrap_or(1);
        return repeat(&client, pattern, data, n, concurrency, args.json).await;
    }
    if args.stream {
        return stream(&client, &pattern, &data, limit, args.raw).await;
    }
    match client.send::<_, _, Value>(&pattern, &data).await {
        Ok(reply) => {
            let _ = output::print_line(&output::render(&reply, args.json, args.raw));
            Ok(())
        }
        Err(e) => Err(Failure::client(&e, args.json)),
    }
}

/// `--stream`: every item on its own line as it arrives; `limit` bounds each wait.
async fn stream(
    client: &Client,
    pattern: &Pattern,
    data: &Value,
    limit: Option<Duration>,
    raw: bool,
) -> Result<(), Failure> {
    let timed_out = || {
        Failure::connection(format!(
            "no reply item for pattern {pattern} within {} ms",
            limit.map_or(0, |l| l.as_millis())
        ))
    };
    let start = client.send_stream::<_, _, Value>(pattern, data);
    let mut items = within(limit, start)
        .await
        .ok_or_else(timed_out)?
        .map_err(|e| Failure::client(&e, true))?;
    loop {
        match within(limit, items.next()).await.ok_or_else(timed_out)? {
            None => return Ok(()),
            Some(Ok(item)) => {
                if output::print_line(&output::render(&item, true, raw)).is_err() {
                    return Ok(()); // stdout closed (`| head`): stop listening
                }
            }
            Some(Err(e)) => return Err(Failure::client(&e, true)),
        }
    }
}

async fn within<F: std::future::Future>(limit: Option<Duration>, f: F) -> Option<F::Output> {
    match limit {
        Some(limit) => tokio::time::timeout(limit, f).await.ok(),
        None => Some(f.await),
    }
}

/// What one worker of a `--repeat` run saw.
struct Tally {
    latencies: Histogram<u64>,
    errors: u64,
    worst_code: u8,
    first_error: Option<(Instant, ClientError)>,
}

impl Tally {
    fn new() -> Self {
        Self {
            // 1 µs to 1 hour at 3 significant digits.
            latencies: Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .expect("valid histogram bounds"),
            errors: 0,
            worst_code: 0,
            first_error: None,
        }
    }

    fn merge(&mut self, other: Tally) {
        let _ = self.latencies.add(&other.latencies);
        self.errors += other.errors;
        self.worst_code = worst(self.worst_code, other.worst_code);
        match (&self.first_error, other.first_error) {
            (Some((mine, _)), Some((theirs, e))) if theirs < *mine => {
                self.first_error = Some((theirs, e));
            }
            (None, Some(first)) => self.first_error = Some(first),
            _ => {}
        }
    }
}

/// Connection trouble (2) outranks service errors (1).
fn worst(a: u8, b: u8) -> u8 {
    let rank = |c: u8| match c {
        0 => 0,
        REMOTE => 1,
        CONNECTION => 3,
        _ => 2,
    };
    if rank(b) > rank(a) {
        b
    } else {
        a
    }
}

/// `--repeat N --concurrency C`: N calls, C in flight at once, all over the client's one
/// connection (to the service, or to the broker; opened before timing starts). Latencies are of successful calls.
async fn repeat(
    client: &Client,
    pattern: Pattern,
    data: Value,
    n: u64,
    concurrency: u64,
    json: bool,
) -> Result<(), Failure> {
    client
        .connect()
        .await
        .map_err(|e| Failure::client(&e, json))?;
    let pattern = Arc::new(pattern);
    let data = Arc::new(data);
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency.min(n))
        .map(|_| {
            let (client, pattern, data, next) =
                (client.clone(), pattern.clone(), data.clone(), next.clone());
            tokio::spawn(async move {
                let mut tally = Tally::new();
                while next.fetch_add(1, Ordering::Relaxed) < n {
                    let sent = Instant::now();
                    match client.send::<_, _, Value>(&*pattern, &*data).await {
                        Ok(_) => {
                            let micros = sent.elapsed().as_micros();
                            tally
                                .latencies
                                .saturating_record(u64::try_from(micros).unwrap_or(u64::MAX));
                        }
                        Err(e) => {
                            tally.errors += 1;
                            tally.worst_code = worst(tally.worst_code, output::exit_code(&e));
                            if tally.first_error.is_none() {
                                tally.first_error = Some((sent, e));
                            }
                        }
                    }
                }
                tally
            })
        })
        .collect();
    let mut total = Tally::new();
    for worker in workers {
        match worker.await {
            Ok(tally) => total.merge(tally),
            Err(e) => return Err(Failure::connection(format!("a worker task failed: {e}"))),
        }
    }
    let elapsed = started.elapsed();
    let summary = Summary {
        count: n,
        errors: total.errors,
        concurrency: concurrency.min(n),
        elapsed,
        latencies: &total.latencies,
    };
    let _ = output::print_line(&if json {
        summary.json().to_string()
    } else {
        summary.text()
    });
    match total.first_error {
        None => Ok(()),
        Some((_, first)) => {
            let what = match first.remote() {
                Some(remote) => format!("the service answered {}", remote.value()),
                None => first.to_string(),
            };
            Err(Failure {
                code: total.worst_code,
                message: format!("{} of {n} calls failed; first error: {what}", total.errors),
            })
        }
    }
}

struct Summary<'a> {
    count: u64,
    errors: u64,
    concurrency: u64,
    elapsed: Duration,
    latencies: &'a Histogram<u64>,
}

impl Summary<'_> {
    fn rate(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.count as f64 / secs
        } else {
            0.0
        }
    }

    /// Latency percentiles in µs; `None` when no call succeeded.
    fn quantiles(&self) -> Option<[(&'static str, u64); 6]> {
        let h = self.latencies;
        (!h.is_empty()).then(|| {
            [
                ("min", h.min()),
                ("p50", h.value_at_quantile(0.50)),
                ("p90", h.value_at_quantile(0.90)),
                ("p99", h.value_at_quantile(0.99)),
                ("max", h.max()),
                ("mean", h.mean().round() as u64),
            ]
        })
    }

    fn text(&self) -> String {
        let mut out = format!(
            "count:       {}\nerrors:      {}\nconcurrency: {}\nelapsed:     {:.3} s\nreq/s:       {:.1}",
            self.count,
            self.errors,
            self.concurrency,
            self.elapsed.as_secs_f64(),
            self.rate()
        );
        match self.quantiles() {
            Some(q) => {
                for (name, micros) in q {
                    if name != "mean" {
                        out.push_str(&format!("\n{:<13}{micros} µs", format!("{name}:")));
                    }
                }
            }
            None => out.push_str("\nlatency:     - (no call succeeded)"),
        }
        out
    }

    fn json(&self) -> Value {
        let latency = match self.quantiles() {
            Some(q) => Value::Object(q.iter().map(|(k, v)| (k.to_string(), json!(v))).collect()),
            None => Value::Null,
        };
        json!({
            "count": self.count,
            "ok": self.count - self.errors,
            "errors": self.errors,
            "concurrency": self.concurrency,
            "elapsed_ms": (self.elapsed.as_secs_f64() * 1e6).round() / 1e3,
            "req_per_s": (self.rate() * 10.0).round() / 10.0,
            "latency_us": latency,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_errors_outrank_remote_errors() {
        assert_eq!(worst(0, REMOTE), REMOTE);
        assert_eq!(worst(REMOTE, CONNECTION), CONNECTION);
        assert_eq!(worst(CONNECTION, REMOTE), CONNECTION);
        assert_eq!(worst(REMOTE, 0), REMOTE);
    }

    #[test]
    fn summary_formats() {
        let mut h = Histogram::new_with_bounds(1, 3_600_000_000, 3).unwrap();
        for v in 1..=100 {
            h.record(v * 10).unwrap();
        }
        let s = Summary {
            count: 100,
            errors: 0,
            concurrency: 4,
            elapsed: Duration::from_millis(500),
            latencies: &h,
        };
        let text = s.text();
        assert!(text.contains("count:       100\n"), "{text}");
        assert!(text.contains("req/s:       200.0\n"), "{text}");
        assert!(text.contains("p50:         500 µs"), "{text}");
        assert!(text.contains("max:         1000 µs"), "{text}");
        let j = s.json();
        assert_eq!(j["latency_us"]["p90"], 900);
        assert_eq!(j["req_per_s"], 200.0);
        assert_eq!(j["elapsed_ms"], 500.0);

        let empty = Histogram::new_with_bounds(1, 3_600_000_000, 3).unwrap();
        let s = Summary {
            count: 3,
            errors: 3,
            concurrency: 1,
            elapsed: Duration::from_millis(1),
            latencies: &empty,
        };
        assert!(s.text().contains("no call succeeded"));
        assert_eq!(s.json()["latency_us"], Value::Null);
        assert_eq!(s.json()["ok"], 0);
    }
}

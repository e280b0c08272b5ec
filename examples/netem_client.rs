//! Client driver for loss/latency runs (`scripts/netem.sh`): calls `sum` on a user service
//! (`examples/user_service.rs` or the NestJS original) sequentially and concurrently, each
//! call with a request timeout, and checks every answer.
//!
//! ```text
//! cargo run --release --example netem_client -- --addr 127.0.0.1:8888
//! ```
//!
//! Options: `--addr HOST:PORT` (default 127.0.0.1:8888), `--sequential N` (calls one after
//! another on one client, default 100), `--concurrent N` (calls on one shared, multiplexed
//! client, default 400), `--concurrency N` (of those, how many in flight at once, default
//! 50), `--clients N` (separate clients calling at the same time, default 10, each making
//! `--per-client` calls, default 20), `--timeout-ms N` (request timeout, default 2000),
//! `--connect-timeout-ms N` (default 3000).
//!
//! Prints, per phase, counts of ok / timeout / connection-closed / other failures and the
//! latency percentiles of successful calls. Exits 1 if any answer was wrong, if any call
//! *hung* — did not return within connect timeout + request timeout + 1 s, the longest a
//! call may take when it has to (re)connect first — or if no call succeeded at all.
//! Timeouts and closed connections are expected under loss and do not fail the run.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nestling::{Client, ClientError};
use tokio::sync::Mutex;

struct Args {
    addr: String,
    sequential: usize,
    concurrent: usize,
    concurrency: usize,
    clients: usize,
    per_client: usize,
    timeout: Duration,
    connect_timeout: Duration,
}

const USAGE: &str = "usage: netem_client [--addr HOST:PORT] [--sequential N] [--concurrent N] \
[--concurrency N] [--clients N] [--per-client N] [--timeout-ms N] [--connect-timeout-ms N]";

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        addr: "127.0.0.1:8888".into(),
        sequential: 100,
        concurrent: 400,
        concurrency: 50,
        clients: 10,
        per_client: 20,
        timeout: Duration::from_millis(2000),
        connect_timeout: Duration::from_millis(3000),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (arg.clone(), None),
        };
        if name == "-h" || name == "--help" {
            return Err(USAGE.into());
        }
        let value = inline
            .or_else(|| it.next())
            .ok_or_else(|| format!("{name} needs a value\n{USAGE}"))?;
        let num = |v: &str| -> Result<u64, String> {
            v.parse::<u64>()
                .map_err(|_| format!("{name}: expected a whole number, got {v:?}\n{USAGE}"))
        };
        match name.as_str() {
            "--addr" => a.addr = value,
            "--sequential" => a.sequential = num(&value)? as usize,
            "--concurrent" => a.concurrent = num(&value)? as usize,
            "--concurrency" => a.concurrency = (num(&value)? as usize).max(1),
            "--clients" => a.clients = num(&value)? as usize,
            "--per-client" => a.per_client = num(&value)? as usize,
            "--timeout-ms" => a.timeout = Duration::from_millis(num(&value)?.max(1)),
            "--connect-timeout-ms" => {
                a.connect_timeout = Duration::from_millis(num(&value)?.max(1))
            }
            _ => return Err(format!("unknown option {name}\n{USAGE}")),
        }
    }
    Ok(a)
}

#[derive(Default)]
struct Phase {
    ok: Vec<Duration>,
    failures: BTreeMap<&'static str, u64>,
    /// Longest time a failed call took to fail.
    slowest_failure: Duration,
    wrong: Vec<String>,
    hung: u64,
    examples: Vec<String>,
}

impl Phase {
    fn fail(&mut self, kind: &'static str, took: Duration, detail: String) {
        *self.failures.entry(kind).or_default() += 1;
        self.slowest_failure = self.slowest_failure.max(took);
        if self.examples.len() < 5 {
            self.examples
                .push(format!("{kind} after {took:.2?}: {detail}"));
        }
    }
}

fn kind(e: &ClientError) -> &'static str {
    match e {
        ClientError::Timeout { .. } => "timeout",
        ClientError::ConnectionClosed { .. } => "connection_closed",
        ClientError::Connect { .. } => "connect",
        ClientError::ConnectTimeout { .. } => "connect_timeout",
        ClientError::Unavailable { .. } => "unavailable",
        ClientError::Remote { .. } => "remote",
        ClientError::EmptyReply { .. } => "empty_reply",
        ClientError::Encode { .. } => "encode",
        ClientError::Decode { .. } => "decode",
        _ => "other",
    }
}

/// One `sum` call, checked, with a hang guard around the client's own timeout.
async fn call(client: &Client, seq: u64, hang_after: Duration, phase: &Mutex<Phase>) {
    let len = (seq % 7) as i64 + 1;
    let nums: Vec<i64> = (0..len).map(|i| (seq as i64) * 10 + i).collect();
    let expected: i64 = nums.iter().sum();
    let started = Instant::now();
    let result = tokio::time::timeout(hang_after, client.send::<_, _, i64>("sum", &nums)).await;
    let took = started.elapsed();
    let mut p = phase.lock().await;
    match result {
        Err(_) => {
            p.hung += 1;
            p.fail(
                "hung",
                took,
                format!("sum #{seq} did not return within {hang_after:?}"),
            );
        }
        Ok(Ok(got)) if got == expected => p.ok.push(took),
        Ok(Ok(got)) => {
            let msg = format!("sum #{seq} of {nums:?}: expected {expected}, got {got}");
            p.wrong.push(msg.clone());
            p.fail("wrong_answer", took, msg);
        }
        Ok(Err(e)) => p.fail(kind(&e), took, e.to_string()),
    }
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64) * q).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

fn report(name: &str, calls: usize, wall: Duration, phase: &mut Phase) {
    phase.ok.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let failed: u64 = phase.failures.values().sum();
    println!("== {name}: {calls} calls in {:.1} s", wall.as_secs_f64());
    println!(
        "   ok {}  timeout {}  connection_closed {}  other {}  wrong {}  hung {}",
        phase.ok.len(),
        phase.failures.get("timeout").copied().unwrap_or(0),
        phase
            .failures
            .get("connection_closed")
            .copied()
            .unwrap_or(0),
        failed
            - phase.failures.get("timeout").copied().unwrap_or(0)
            - phase
                .failures
                .get("connection_closed")
                .copied()
                .unwrap_or(0)
            - phase.failures.get("wrong_answer").copied().unwrap_or(0)
            - phase.hung,
        phase.wrong.len(),
        phase.hung
    );
    if !phase.failures.is_empty() {
        let kinds: Vec<String> = phase
            .failures
            .iter()
            .map(|(k, n)| format!("{k}={n}"))
            .collect();
        println!(
            "   failures by kind: {} (slowest failure took {:.0} ms)",
            kinds.join(", "),
            ms(phase.slowest_failure)
        );
        for e in &phase.examples {
            println!("   e.g. {e}");
        }
    }
    if !phase.ok.is_empty() {
        println!(
            "   latency of ok calls (ms): min {:.1}  p50 {:.1}  p90 {:.1}  p99 {:.1}  max {:.1}",
            ms(phase.ok[0]),
            ms(percentile(&phase.ok, 0.50)),
            ms(percentile(&phase.ok, 0.90)),
            ms(percentile(&phase.ok, 0.99)),
            ms(*phase.ok.last().unwrap())
        );
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::from(2);
        }
    };
    let hang_after = args.connect_timeout + args.timeout + Duration::from_secs(1);
    let build = || {
        Client::builder(args.addr.clone())
            .request_timeout(Some(args.timeout))
            .connect_timeout(args.connect_timeout)
            .reconnect_backoff(Duration::from_millis(50), Duration::from_millis(500))
            .build()
    };
    println!(
        "netem_client: {} — request timeout {:?}, connect timeout {:?}, a call hangs if it takes over {:?}",
        args.addr, args.timeout, args.connect_timeout, hang_after
    );

    let mut totals = (0usize, 0usize, 0u64); // ok, wrong, hung
    let mut add = |p: &Phase| {
        totals.0 += p.ok.len();
        totals.1 += p.wrong.len();
        totals.2 += p.hung;
    };

    // 1. Sequential: one client, one call at a time.
    {
        let client = build();
        let phase = Mutex::new(Phase::default());
        let started = Instant::now();
        for seq in 0..args.sequential as u64 {
            call(&client, seq, hang_after, &phase).await;
        }
        let mut phase = phase.into_inner();
        report(
            "sequential (1 client)",
            args.sequential,
            started.elapsed(),
            &mut phase,
        );
        add(&phase);
    }

    // 2. Concurrent on one multiplexed connection.
    {
        let client = build();
        let phase = Arc::new(Mutex::new(Phase::default()));
        let gate = Arc::new(tokio::sync::Semaphore::new(args.concurrency));
        let started = Instant::now();
        let mut set = tokio::task::JoinSet::new();
        for seq in 0..args.concurrent as u64 {
            let permit = gate.clone().acquire_owned().await.expect("semaphore open");
            let (client, phase) = (client.clone(), phase.clone());
            set.spawn(async move {
                call(&client, 1_000_000 + seq, hang_after, &phase).await;
                drop(permit);
            });
        }
        while set.join_next().await.is_some() {}
        let mut phase = Arc::try_unwrap(phase)
            .ok()
            .expect("all tasks done")
            .into_inner();
        report(
            &format!(
                "concurrent (1 client, {} in flight)",
                args.concurrency.min(args.concurrent.max(1))
            ),
            args.concurrent,
            started.elapsed(),
            &mut phase,
        );
        add(&phase);
    }

    // 3. Several clients (connections) at once, each calling sequentially.
    {
        let phase = Arc::new(Mutex::new(Phase::default()));
        let started = Instant::now();
        let mut set = tokio::task::JoinSet::new();
        for c in 0..args.clients as u64 {
            let client = build();
            let phase = phase.clone();
            let per = args.per_client as u64;
            set.spawn(async move {
                for i in 0..per {
                    call(&client, 2_000_000 + c * 10_000 + i, hang_after, &phase).await;
                }
            });
        }
        while set.join_next().await.is_some() {}
        let mut phase = Arc::try_unwrap(phase)
            .ok()
            .expect("all tasks done")
            .into_inner();
        report(
            &format!(
                "{} clients x {} sequential calls",
                args.clients, args.per_client
            ),
            args.clients * args.per_client,
            started.elapsed(),
            &mut phase,
        );
        add(&phase);
    }

    let (ok, wrong, hung) = totals;
    println!("== total: ok {ok}, wrong answers {wrong}, hung calls {hung}");
    if wrong > 0 || hung > 0 {
        println!("NETEM CLIENT FAILED: wrong answers or calls hanging past their timeout");
        ExitCode::FAILURE
    } else if ok == 0 {
        println!("NETEM CLIENT FAILED: no call succeeded (is the service reachable?)");
        ExitCode::FAILURE
    } else {
        println!("NETEM CLIENT OK");
        ExitCode::SUCCESS
    }
}

//! The bench's tarpc peer (see `bench/src/client.rs`): tarpc's generated server and client
//! doing the tutorial's `sum`, JSON codec as on Nest's wire, single-threaded runtimes.
//!
//! ```text
//! nestling-bench-tarpc server                                   # prints READY <port>
//! nestling-bench-tarpc drive <addr> <in flight> <seconds> <warmup seconds>
//! ```
//!
//! `drive` runs `<in flight>` callers on one tarpc client (one connection) for the warm-up
//! and the measured window, then prints one line:
//! `RESULT <calls> <p50 µs> <p99 µs> <errors> <cpu ticks in the window> <window s>`.

use std::io::Write;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tarpc::server::{BaseChannel, Channel};
use tarpc::tokio_serde::formats::Json;

#[tarpc::service]
trait Calc {
    async fn sum(nums: Vec<i64>) -> i64;
}

#[derive(Clone)]
struct CalcServer;

impl Calc for CalcServer {
    async fn sum(self, _: tarpc::context::Context, nums: Vec<i64>) -> i64 {
        nums.iter().sum()
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let outcome = match args.first().map(String::as_str) {
        Some("server") => rt.block_on(server()),
        Some("drive") if args.len() == 5 => {
            let num = |i: usize| {
                args[i]
                    .parse::<f64>()
                    .map_err(|e| format!("{}: {e}", args[i]))
            };
            match (num(2), num(3), num(4)) {
                (Ok(n), Ok(secs), Ok(warm)) => rt.block_on(drive(&args[1], n as usize, secs, warm)),
                (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => Err(e),
            }
        }
        _ => Err(
            "usage: nestling-bench-tarpc server | drive <addr> <in flight> <seconds> <warmup>"
                .into(),
        ),
    };
    if let Err(e) = outcome {
        eprintln!("nestling-bench-tarpc: {e}");
        std::process::exit(1);
    }
}

/// Serves until killed: one task per connection, each call's future spawned, as tarpc's
/// examples do. HOST/PORT as the bench's other servers.
async fn server() -> Result<(), String> {
    let host = std::env::var("HOST").unwrap_or_else(|_| "127.0.0.1".into());
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    let mut incoming = tarpc::serde_transport::tcp::listen((host.as_str(), port), Json::default)
        .await
        .map_err(|e| format!("listen: {e}"))?;
    println!("READY {}", incoming.local_addr().port());
    let _ = std::io::stdout().flush();
    while let Some(transport) = incoming.next().await {
        let Ok(transport) = transport else { continue };
        tokio::spawn(
            BaseChannel::with_defaults(transport)
                .execute(CalcServer.serve())
                .for_each(|call| async {
                    tokio::spawn(call);
                }),
        );
    }
    Ok(())
}

#[derive(Default)]
struct Tally {
    calls: u64,
    errors: u64,
    first_error: Option<String>,
}

async fn drive(addr: &str, inflight: usize, secs: f64, warm: f64) -> Result<(), String> {
    let transport = tarpc::serde_transport::tcp::connect(addr, Json::default)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let client = CalcClient::new(tarpc::client::Config::default(), transport).spawn();
    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(warm);
    let end = measure_from + Duration::from_secs_f64(secs);
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..inflight {
        let client = client.clone();
        workers.spawn(async move {
            let mut tally = Tally::default();
            let mut hist = hdrhistogram::Histogram::<u64>::new(3).expect("histogram");
            loop {
                let t0 = Instant::now();
                if t0 >= end {
                    return (tally, hist);
                }
                let mut ctx = tarpc::context::current();
                ctx.deadline = t0 + Duration::from_secs(30);
                match client.sum(ctx, vec![1, 2, 3]).await {
                    Ok(6) => {
                        let now = Instant::now();
                        if now >= measure_from && now < end {
                            tally.calls += 1;
                            hist.saturating_record(now.duration_since(t0).as_micros() as u64);
                        }
                    }
                    other => {
                        tally.errors += 1;
                        tally
                            .first_error
                            .get_or_insert_with(|| format!("{other:?}"));
                    }
                }
            }
        });
    }
    tokio::time::sleep_until(measure_from.into()).await;
    let cpu0 = cpu_ticks();
    let wall0 = Instant::now();
    tokio::time::sleep_until(end.into()).await;
    let cpu1 = cpu_ticks();
    let window = wall0.elapsed().as_secs_f64();
    let mut total = Tally::default();
    let mut hist = hdrhistogram::Histogram::<u64>::new(3).expect("histogram");
    while let Some(done) = workers.join_next().await {
        let (tally, h) = done.map_err(|e| format!("worker: {e}"))?;
        total.calls += tally.calls;
        total.errors += tally.errors;
        total.first_error = total.first_error.or(tally.first_error);
        hist.add(h).map_err(|e| format!("histogram: {e}"))?;
    }
    if let Some(e) = &total.first_error {
        eprintln!("first error: {e}");
    }
    println!(
        "RESULT {} {} {} {} {} {window:.4}",
        total.calls,
        hist.value_at_quantile(0.5),
        hist.value_at_quantile(0.99),
        total.errors,
        cpu1.saturating_sub(cpu0),
    );
    Ok(())
}

/// This process's user + system CPU time, in clock ticks (`/proc/self/stat`).
fn cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces) end with ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(11) + field(12) // utime, stime (fields 14 and 15 of the whole line)
}

//! The tutorial's "user" microservice, in Rust.
//!
//! NestJS original (microservice-test-user):
//!
//! ```ts
//! @MessagePattern('sum')
//! sum(numArr: Array<number>): number { return numArr.reduce((total, item) => total + item, 0); }
//!
//! @EventPattern('log')
//! log(str: string) { console.log(str); }
//! ```
//!
//! Run: `cargo run --example user_service` (HOST/PORT override 127.0.0.1:8888).
//!
//! Over RabbitMQ (the `rmq` feature), as one of N competing consumers of the queue
//! `RMQ_QUEUE` (default `user_service`): `RMQ_URL=amqp://127.0.0.1:5672 INSTANCE=a cargo run
//! --example user_service` (`RMQ_PREFETCH` sets the prefetch count,
//! `RMQ_NOACK=true` turns acknowledgements off as Nest's default `noAck: true`).
//!
//! Over NATS instead (the `nats` feature), as one of N instances sharing the load:
//! `NATS_URL=nats://127.0.0.1:4222 INSTANCE=a cargo run --example user_service`. Instances
//! join the queue group `NATS_QUEUE` (default `user-service`), so each request reaches one
//! of them. The controller does not change; only the last lines of `main` do.
//!
//! `QUICKACK=false` turns [`ServerBuilder::quickack`](nestling::ServerBuilder::quickack)
//! off (the load benchmark compares both against a Nest gateway).

use std::sync::atomic::{AtomicU64, Ordering};

use nestling::nats::NatsServe;
use nestling::rmq::RmqServe;
use nestling::Server;

#[derive(Default)]
struct UserController;

// `contracts`: the Nest side gets TypeScript for these patterns (see the test at the end).
#[nestling::controller(contracts)]
impl UserController {
    /// Adds up the numbers (`client.send('sum', [1, 2, 3])` answers 6).
    #[message_pattern("sum")]
    fn sum(&self, nums: Vec<i64>) -> i64 {
        nums.iter().sum()
    }

    /// Prints the text it receives (`client.emit('log', '求和1111')`).
    #[event_pattern("log")]
    fn log(&self, text: String) {
        println!("{text}");
    }

    /// Counts an event and does nothing else: the load benchmark's events scenario without
    /// output (`log` prints, so its cost is mostly the write to stdout).
    #[event_pattern("tally")]
    fn tally(&self) {
        TALLY.fetch_add(1, Ordering::Relaxed);
    }

    /// How many `tally` events this process has handled.
    #[message_pattern("tallied")]
    fn tallied(&self) -> u64 {
        TALLY.load(Ordering::Relaxed)
    }

    /// Counts from 1 to `n` (at most 10,000), one reply packet per number: a streamed reply,
    /// as Nest's `return from([1, 2, 3])`.
    #[message_pattern("count")]
    fn count(&self, n: u32) -> impl futures_util::Stream<Item = u32> {
        futures_util::stream::iter(1..=n.min(10_000))
    }

    /// Names the instance that answered (`INSTANCE`, default `user-service`): shows how a
    /// queue group spreads requests.
    #[message_pattern("whoami")]
    fn whoami(&self) -> String {
        instance()
    }

    /// Works for `ms` milliseconds, then names the instance: a request that takes time,
    /// for the scale-out demo and the fault tests (an instance killed mid-request).
    #[message_pattern("work")]
    async fn work(&self, ms: u64) -> String {
        tokio::time::sleep(std::time::Duration::from_millis(ms.min(60_000))).await;
        instance()
    }
}

static TALLY: AtomicU64 = AtomicU64::new(0);

fn instance() -> String {
    std::env::var("INSTANCE").unwrap_or_else(|_| "user-service".into())
}

async fn shutdown_signal() {
    let _ = tokio::signal::ctrl_c().await;
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // One core (a process pinned with `taskset`, a container limited to one CPU): a
    // current-thread runtime does the same work without the cross-thread machinery of the
    // multi-thread scheduler, which has no other core to use (≈ 15 % more requests per
    // second in the load benchmark). More cores: `#[tokio::main]`'s default, one worker
    // per core.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut runtime = match cores {
        1 => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    runtime.enable_all().build()?.block_on(serve())
}

async fn serve() -> Result<(), Box<dyn std::error::Error>> {
    // `RUST_LOG` as `target=level` lists (`info`, `nestling=debug,warn`): `Targets` reads
    // them without `EnvFilter`'s regex engine, which alone costs ~0.5 MiB of resident
    // memory at start (idle RSS 3.8 MiB instead of 4.3 MiB).
    use tracing_subscriber::{filter::Targets, prelude::*};
    let filter = match std::env::var("RUST_LOG") {
        Ok(spec) => spec.parse().unwrap_or_else(|e| {
            eprintln!("ignoring RUST_LOG={spec:?} ({e}); logging at info");
            Targets::new().with_default(tracing::Level::INFO)
        }),
        Err(_) => Targets::new().with_default(tracing::Level::INFO),
    };
    tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .with(filter)
        .init();
    let quickack = std::env::var("QUICKACK").map_or(true, |v| v != "false");
    // `health()`: answers the gateway's health pings (`nestling::health`).
    let server = Server::builder().quickack(quickack).health().build()?;
    if let Ok(url) = std::env::var("RMQ_URL") {
        let queue = std::env::var("RMQ_QUEUE").unwrap_or_else(|_| "user_service".into());
        let mut rmq = RmqServe::new(url, queue);
        if let Ok(prefetch) = std::env::var("RMQ_PREFETCH") {
            rmq = rmq.prefetch_count(prefetch.parse()?);
        }
        // Nest's default (`noAck: true`): the broker forgets a message once delivered.
        if std::env::var("RMQ_NOACK").is_ok_and(|v| v == "true") {
            rmq = rmq.no_ack(true);
        }
        let listening = server.listen_rmq(rmq).await?;
        // Consuming: requests published from now on reach this instance (or its peers).
        println!("READY rmq");
        listening.serve_with_shutdown(shutdown_signal()).await?;
        return Ok(());
    }
    if let Ok(url) = std::env::var("NATS_URL") {
        let queue = std::env::var("NATS_QUEUE").unwrap_or_else(|_| "user-service".into());
        let listening = server.listen_nats(NatsServe::new(url).queue(queue)).await?;
        // Subscribed: requests published from now on reach this instance.
        println!("READY nats");
        listening.serve_with_shutdown(shutdown_signal()).await?;
        return Ok(());
    }
    let host = std::env::var("HOST").unwrap_or_else(|_| "127.0.0.1".into());
    let port = std::env::var("PORT").unwrap_or_else(|_| "8888".into());
    let listening = server.listen(format!("{host}:{port}")).await?;
    // Tests and scripts wait for this line (the bound port, so PORT=0 works).
    println!("READY {}", listening.local_addr().port());
    listening.serve_with_shutdown(shutdown_signal()).await?;
    Ok(())
}

/// The Nest side's TypeScript for this service: `cargo test --example user_service` writes
/// `tests/nest/contracts/user-service.ts` (unchanged when nothing changed), which the
/// TypeScript gateway `tests/nest/contracts/gateway.ts` compiles against.
#[cfg(test)]
mod contracts {
    #[test]
    fn typescript_contracts() {
        let ts = nestling::contracts::Contracts::all().render().unwrap();
        insta::assert_snapshot!("user_service_ts", ts);
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/nest/contracts/user-service.ts"
        );
        nestling::contracts::write(path).unwrap();
    }
}

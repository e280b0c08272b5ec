//! `nestling-bench`: drives nestling's `user_service` example, the real NestJS
//! `tests/nest/user-service.mjs` and a hand-written "ceiling" server with one Rust load
//! generator speaking Nest's TCP wire (and, through a RabbitMQ broker it starts, Nest's RMQ
//! wire), and reports throughput, latency, errors, CPU and RSS.
//!
//! See `bench/README.md`. `--ceiling-server` and `--rmq-ceiling-server` run the ceiling
//! servers themselves (the bench starts them that way as child processes).

#![deny(unsafe_code)]

mod ceiling;
mod client;
mod cost;
mod http;
mod loadgen;
mod memory;
mod nats;
mod procs;
mod report;
mod rmq;
mod wire;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use tokio::task::JoinSet;
use tokio::time::Instant;

use loadgen::{Stats, SumRequest, Times};
use procs::{Pinning, ServerProc};
use report::RunResult;

/// Load benchmark: nestling vs NestJS vs a framework-less tokio ceiling, on Nest's TCP wire.
#[derive(Parser, Debug)]
#[command(name = "nestling-bench")]
struct Args {
    /// Measured seconds per scenario and server (after the warm-up).
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Warm-up seconds before each measurement (same load, not counted).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Runs per scenario and server, interleaved (nestling, nest, ceiling, nestling, …) so
    /// that a disturbance hits all servers alike; the table shows each server's run with
    /// the median rate, and lists every run's rate. On a shared machine, 3 or more.
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Scenarios to run, by letter or name (comma-separated): a/1x1, b/4x32, c/64x1,
    /// d/events,events-quiet, e/sum-1KiB,sum-64KiB, f/client-1,client-32, over RabbitMQ
    /// g/rmq-1x1,rmq-4x32, h/rmq-client-1,rmq-client-32, over NATS i/nats-1x1,nats-4x32.
    /// Default: all.
    #[arg(long, value_delimiter = ',')]
    scenario: Vec<String>,
    /// Servers to drive (comma-separated): nestling, nest, ceiling. Default: all.
    #[arg(long, value_delimiter = ',')]
    servers: Vec<String>,
    /// Do not pin servers and load generator to separate cores.
    #[arg(long)]
    no_pin: bool,
    /// Cores the servers get: 1 (their own core; the default) or 2 (their core and the
    /// load generator's, shared with it). nestling's example runs one runtime worker per
    /// core it is given.
    #[arg(long, default_value_t = 1)]
    server_cores: usize,
    /// HTTP mode: the seed's whole system (gateway + user service, Nest and nestling in
    /// four pairings, and an in-process axum ceiling) driven by `wrk`. See bench/README.md.
    #[arg(long)]
    http: bool,
    /// HTTP mode: wrk's connections.
    #[arg(long, default_value_t = 32)]
    http_connections: usize,
    /// Do not run `cargo build --release --example user_service` (the binary must exist).
    #[arg(long)]
    no_build: bool,
    /// Cost mode: instead of the timed runs, count the instructions each server executes
    /// per request / per event under valgrind's callgrind (default scenarios b,d). See
    /// bench/README.md.
    #[arg(long)]
    cost: bool,
    /// Cost mode: requests per measured phase (rounded up to a multiple of the
    /// connections).
    #[arg(long, default_value_t = 20_000)]
    cost_requests: u64,
    /// Cost mode: events per measured phase (rounded up to whole batches).
    #[arg(long, default_value_t = 20_000)]
    cost_events: u64,
    /// Cost mode: requests or events driven before the counters are zeroed.
    #[arg(long, default_value_t = 4_000)]
    cost_warmup: u64,
    /// Cost mode: directory for the callgrind profiles (default
    /// `<target>/bench-cost`).
    #[arg(long)]
    cost_dir: Option<PathBuf>,
    /// Memory mode: instead of the timed runs, the server's resident memory per
    /// connection, fresh, idle after work and busy (see bench/README.md).
    #[arg(long)]
    memory: bool,
    /// Memory mode: connection counts, each against a freshly started server.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    memory_conns: Vec<usize>,
    /// Client mode: the client side at its ceiling — the raw generator, nestling::Client
    /// (`send` and `send_batch`) and tarpc's client, one connection each to a server on
    /// its own core (see bench/README.md).
    #[arg(long)]
    client: bool,
    /// Client mode: calls in flight, one row group per count.
    #[arg(long, value_delimiter = ',', default_value = "32,128")]
    client_inflight: Vec<usize>,
    /// Run the ceiling server (internal: the bench starts itself this way).
    #[arg(long, hide = true)]
    ceiling_server: bool,
    /// Run the RabbitMQ ceiling consumer (internal: the bench starts itself this way).
    #[arg(long, hide = true)]
    rmq_ceiling_server: bool,
    /// Run the NATS ceiling responder (internal).
    #[arg(long, hide = true)]
    nats_ceiling_server: bool,
    /// Run the HTTP ceiling (axum, in-process sum; internal).
    #[arg(long, hide = true)]
    http_ceiling_server: bool,
}

/// What a scenario does on each connection.
#[derive(Clone, Copy, Debug)]
enum Load {
    /// `sum` requests: `conns` connections × `inflight` pipelined, payload of `bytes` (0 =
    /// `[1,2,3]`).
    Requests {
        conns: usize,
        inflight: usize,
        bytes: usize,
    },
    /// `log` events on `conns` connections, acknowledged in batches by a `sum` barrier;
    /// `quiet`: `tally` events instead, whose handlers only count (no output).
    Events {
        conns: usize,
        batch: usize,
        outstanding: usize,
        quiet: bool,
    },
    /// Client side, against the ceiling only: `nestling::Client` with `inflight`
    /// concurrent `send`s on its one connection, vs the raw generator on one connection
    /// with the same number in flight.
    Client { inflight: usize },
    /// `sum [1,2,3]` through the RabbitMQ broker: `conns` connections of the raw lapin
    /// generator × `inflight` outstanding, to each RabbitMQ server.
    RmqRequests { conns: usize, inflight: usize },
    /// Client side over RabbitMQ, against the raw lapin consumer (no acks):
    /// `nestling::Client` with `inflight` concurrent `send`s vs the raw generator on one
    /// connection with the same number outstanding.
    RmqClient { inflight: usize },
    /// `sum [1,2,3]` through a nats-server: `conns` connections of the raw async-nats
    /// generator × `inflight` outstanding, to each NATS server.
    NatsRequests { conns: usize, inflight: usize },
}

impl Load {
    fn is_rmq(self) -> bool {
        matches!(self, Load::RmqRequests { .. } | Load::RmqClient { .. })
    }

    fn is_nats(self) -> bool {
        matches!(self, Load::NatsRequests { .. })
    }
}

struct Scenario {
    letter: char,
    name: &'static str,
    what: &'static str,
    load: Load,
}

fn scenarios() -> Vec<Scenario> {
    let small = |conns, inflight| Load::Requests {
        conns,
        inflight,
        bytes: 0,
    };
    vec![
        Scenario {
            letter: 'a',
            name: "1x1",
            what: "sum [1,2,3], 1 connection x 1 in flight (pure round-trip latency)",
            load: small(1, 1),
        },
        Scenario {
            letter: 'b',
            name: "4x32",
            what: "sum [1,2,3], 4 connections x 32 pipelined in flight",
            load: small(4, 32),
        },
        Scenario {
            letter: 'c',
            name: "64x1",
            what: "sum [1,2,3], 64 connections x 1 in flight",
            load: small(64, 1),
        },
        Scenario {
            letter: 'd',
            name: "events",
            what: "log events, 4 connections, 512 events then a sum barrier, 2 batches outstanding",
            load: Load::Events {
                conns: 4,
                batch: 512,
                outstanding: 2,
                quiet: false,
            },
        },
        Scenario {
            letter: 'd',
            name: "events-quiet",
            what: "tally events (handlers only count, no output), 4 connections, 512 events then a sum barrier, 2 batches outstanding",
            load: Load::Events {
                conns: 4,
                batch: 512,
                outstanding: 2,
                quiet: true,
            },
        },
        Scenario {
            letter: 'e',
            name: "sum-1KiB",
            what: "sum of a ~1 KiB number array, 4 connections x 8 in flight",
            load: Load::Requests {
                conns: 4,
                inflight: 8,
                bytes: 1024,
            },
        },
        Scenario {
            letter: 'e',
            name: "sum-64KiB",
            what: "sum of a ~64 KiB number array, 4 connections x 8 in flight",
            load: Load::Requests {
                conns: 4,
                inflight: 8,
                bytes: 64 * 1024,
            },
        },
        Scenario {
            letter: 'f',
            name: "client-1",
            what: "client side vs ceiling: nestling::Client, 1 call at a time, vs raw 1x1",
            load: Load::Client { inflight: 1 },
        },
        Scenario {
            letter: 'f',
            name: "client-32",
            what: "client side vs ceiling: nestling::Client, 32 concurrent sends on its one connection, vs raw 1x32",
            load: Load::Client { inflight: 32 },
        },
        Scenario {
            letter: 'g',
            name: "rmq-1x1",
            what: "RabbitMQ: sum [1,2,3], 1 connection x 1 in flight through the broker",
            load: Load::RmqRequests {
                conns: 1,
                inflight: 1,
            },
        },
        Scenario {
            letter: 'g',
            name: "rmq-4x32",
            what: "RabbitMQ: sum [1,2,3], 4 connections x 32 in flight through the broker",
            load: Load::RmqRequests {
                conns: 4,
                inflight: 32,
            },
        },
        Scenario {
            letter: 'h',
            name: "rmq-client-1",
            what: "RabbitMQ client side vs the raw consumer: nestling::Client, 1 call at a time, vs raw 1x1",
            load: Load::RmqClient { inflight: 1 },
        },
        Scenario {
            letter: 'h',
            name: "rmq-client-32",
            what: "RabbitMQ client side vs the raw consumer: nestling::Client, 32 concurrent sends, vs raw 1x32",
            load: Load::RmqClient { inflight: 32 },
        },
        Scenario {
            letter: 'i',
            name: "nats-1x1",
            what: "NATS: sum [1,2,3], 1 connection x 1 in flight through nats-server",
            load: Load::NatsRequests {
                conns: 1,
                inflight: 1,
            },
        },
        Scenario {
            letter: 'i',
            name: "nats-4x32",
            what: "NATS: sum [1,2,3], 4 connections x 32 in flight through nats-server",
            load: Load::NatsRequests {
                conns: 4,
                inflight: 32,
            },
        },
    ]
}

fn selected(list: &[String], letter: char, name: &str) -> bool {
    list.is_empty()
        || list.iter().any(|s| {
            let s = s.trim();
            s.eq_ignore_ascii_case(name) || s.eq_ignore_ascii_case(&letter.to_string())
        })
}

fn main() {
    let args = Args::parse();
    if args.ceiling_server {
        if let Err(e) = ceiling::run() {
            eprintln!("ceiling server: {e}");
            std::process::exit(1);
        }
        return;
    }
    if args.rmq_ceiling_server {
        if let Err(e) = rmq::ceiling::run() {
            eprintln!("RabbitMQ ceiling server: {e}");
            std::process::exit(1);
        }
        return;
    }
    if args.nats_ceiling_server {
        if let Err(e) = nats::ceiling::run() {
            eprintln!("NATS ceiling server: {e}");
            std::process::exit(1);
        }
        return;
    }
    if args.http_ceiling_server {
        if let Err(e) = http::run_ceiling() {
            eprintln!("HTTP ceiling server: {e}");
            std::process::exit(1);
        }
        return;
    }
    if !(1..=2).contains(&args.server_cores) {
        eprintln!("--server-cores must be 1 or 2 (the generator keeps one core)");
        std::process::exit(2);
    }
    if !(args.seconds > 0.0 && args.seconds <= 600.0 && (0.0..=60.0).contains(&args.warmup)) {
        eprintln!("--seconds must be in (0, 600] and --warmup in [0, 60]");
        std::process::exit(2);
    }
    let machine = report::Machine::detect();
    // Pin before any thread exists, so every thread of the generator inherits core 0.
    let pinning = if args.no_pin {
        println!("pinning: off (--no-pin)");
        None
    } else if machine.nproc < 2 {
        println!("pinning: not applied (fewer than 2 CPUs)");
        None
    } else {
        let want = Pinning {
            server_core: 1,
            gen_core: 0,
            server_cpus: if args.server_cores == 2 { "0,1" } else { "1" },
        };
        match procs::pin_self(want.gen_core) {
            Ok(()) if procs::can_pin_child(want.server_core) => {
                println!(
                    "pinning: applied (taskset): servers on core(s) {}, load generator on core {}",
                    want.server_cpus, want.gen_core
                );
                Some(want)
            }
            Ok(()) => {
                println!(
                    "pinning: not applied (taskset -c {} failed); everything unpinned",
                    want.server_core
                );
                let all = format!("0-{}", machine.nproc - 1);
                let _ = std::process::Command::new("taskset")
                    .args(["-pc", &all, &std::process::id().to_string()])
                    .output();
                None
            }
            Err(e) => {
                println!("pinning: not applied ({e})");
                None
            }
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let code = rt.block_on(async {
        tokio::select! {
            r = run(&args, machine, pinning) => match r {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("error: {e}");
                    1
                }
            },
            sig = shutdown_signal() => {
                eprintln!("\n{sig}: stopping the servers");
                130
            }
        }
    });
    // Every ServerProc was dropped (killed and reaped) when `run` ended or was cancelled.
    drop(rt);
    std::process::exit(code);
}

async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "interrupted",
        _ = term.recv() => "terminated",
    }
}

/// A server under test, or the reason it is not.
struct Target {
    label: &'static str,
    proc: Option<ServerProc>,
    skipped: Option<String>,
    /// Resident set size once started, before any load (the idle-RSS target).
    idle_rss_kib: Option<u64>,
}

async fn run(
    args: &Args,
    machine: report::Machine,
    pinning: Option<Pinning>,
) -> Result<(), String> {
    if args.cost {
        return run_cost(args, machine, pinning).await;
    }
    if args.memory {
        let pin = pinning.map(|p| p.server_cpus);
        return memory::run(launches(args, false)?, &args.memory_conns, pin).await;
    }
    if args.client {
        let nestling = launches(args, false)?
            .into_iter()
            .find(|(label, _)| *label == "nestling")
            .map(|(_, launch)| launch)
            .ok_or("--client drives the nestling server: do not leave it out with --servers")?;
        let (window, warmup) = (
            Duration::from_secs_f64(args.seconds),
            Duration::from_secs_f64(args.warmup),
        );
        let pin = pinning.map(|p| p.server_cpus);
        let counts = &args.client_inflight;
        let build = !args.no_build;
        return client::run(nestling, pin, counts, window, warmup, args.repeat, build).await;
    }
    if args.http {
        return http::run(args, machine, pinning).await;
    }
    let want = |name: &str| args.servers.is_empty() || args.servers.iter().any(|s| s == name);
    let server_pin = pinning.map(|p| p.server_cpus);
    let ready = Duration::from_secs(30);
    let all = scenarios();
    let (rmq_chosen, chosen): (Vec<&Scenario>, Vec<&Scenario>) = all
        .iter()
        .filter(|s| selected(&args.scenario, s.letter, s.name))
        .partition(|s| s.load.is_rmq());
    let (nats_chosen, chosen): (Vec<&Scenario>, Vec<&Scenario>) =
        chosen.into_iter().partition(|s| s.load.is_nats());
    if chosen.is_empty() && rmq_chosen.is_empty() && nats_chosen.is_empty() {
        return Err(format!("no scenario matches {:?}", args.scenario));
    }
    let needs_ceiling = chosen.iter().any(|s| matches!(s.load, Load::Client { .. }));

    let mut targets = Vec::new();
    let tcp_launches = if chosen.is_empty() {
        Vec::new()
    } else {
        launches(args, needs_ceiling)?
    };
    for (label, launch) in tcp_launches {
        let t = launch.and_then(|l| {
            ServerProc::start(
                label,
                &l.program,
                &l.args,
                l.cwd.as_deref(),
                server_pin,
                ready,
            )
        });
        targets.push(target(label, t));
    }
    // Idle RSS: once every server is up and has settled, before the first load.
    settle().await;
    for t in targets.iter_mut() {
        t.idle_rss_kib = t.proc.as_ref().and_then(ServerProc::rss_kib);
    }
    for t in &targets {
        match (&t.proc, &t.skipped) {
            (Some(p), _) => println!("server {:<9} pid {:<7} port {}", t.label, p.pid, p.port),
            (None, Some(why)) => println!("server {:<9} SKIPPED: {why}", t.label),
            _ => {}
        }
    }

    let ticks = procs::clock_ticks_per_sec();
    let window = Duration::from_secs_f64(args.seconds);
    let warmup = Duration::from_secs_f64(args.warmup);
    let mut results: Vec<RunResult> = Vec::new();
    let started = std::time::Instant::now();
    for sc in &chosen {
        println!("-- {} ({}): {}", sc.name, sc.letter, sc.what);
        let mut runs: Vec<RunResult> = Vec::new();
        for _ in 0..args.repeat.max(1) {
            match sc.load {
                Load::Client { inflight } => {
                    let Some(ceiling) = targets
                        .iter_mut()
                        .find(|t| t.label == "ceiling")
                        .and_then(|t| t.proc.as_mut())
                    else {
                        println!("   skipped: the ceiling server is not running");
                        continue;
                    };
                    for driver in [Driver::NestlingClient, Driver::Raw] {
                        let r = run_one(
                            sc, sc.load, driver, ceiling, inflight, window, warmup, ticks,
                        )
                        .await;
                        report::print_progress(&r);
                        runs.push(r);
                        settle().await;
                    }
                }
                load => {
                    for t in targets.iter_mut() {
                        let Some(p) = t.proc.as_mut() else { continue };
                        if !want(t.label) {
                            continue; // started only for the client scenarios
                        }
                        if let Some(status) = p.exited() {
                            println!("   {} has exited ({status}); skipping", t.label);
                            continue;
                        }
                        let r = run_one(sc, load, Driver::Raw, p, 0, window, warmup, ticks).await;
                        report::print_progress(&r);
                        runs.push(r);
                        settle().await;
                    }
                }
            }
        }
        results.extend(report::medians(runs));
    }
    let mut skipped: Vec<(String, String)> = targets
        .iter()
        .filter_map(|t| t.skipped.clone().map(|w| (t.label.to_string(), w)))
        .collect();
    let mut peak: Vec<(String, Option<u64>)> = targets
        .iter()
        .filter_map(|t| {
            t.proc
                .as_ref()
                .map(|p| (t.label.to_string(), p.peak_rss_kib()))
        })
        .collect();
    let mut idle: Vec<(String, Option<u64>)> = targets
        .iter()
        .filter(|t| t.proc.is_some())
        .map(|t| (t.label.to_string(), t.idle_rss_kib))
        .collect();
    // The TCP servers are no longer needed: they would only idle beside the broker.
    drop(targets);
    if !rmq_chosen.is_empty() {
        let runner = rmq::Runner {
            args,
            pinning,
            window,
            warmup,
            ticks,
        };
        let out = runner.run(&rmq_chosen).await?;
        results.extend(out.results);
        skipped.extend(out.skipped);
        peak.extend(out.peak_rss_kib);
        idle.extend(out.idle_rss_kib);
    }
    if !nats_chosen.is_empty() {
        let runner = nats::Runner {
            args,
            pinning,
            window,
            warmup,
            ticks,
        };
        let out = runner.run(&nats_chosen).await?;
        results.extend(out.results);
        skipped.extend(out.skipped);
        peak.extend(out.peak_rss_kib);
    }
    let elapsed = started.elapsed();
    let summary = report::Summary {
        machine,
        pinning: pinning.is_some(),
        server_cpus: pinning.map_or("-", |p| p.server_cpus),
        seconds: args.seconds,
        warmup: args.warmup,
        repeat: args.repeat.max(1),
        elapsed_s: elapsed.as_secs_f64(),
        load_end: report::load_average(),
        results,
        skipped,
        peak_rss_kib: peak,
        idle_rss_kib: idle,
    };
    println!();
    print!("{}", summary.table());
    if let Some(path) = &args.json {
        std::fs::write(path, summary.json_text())
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        println!("JSON written to {}", path.display());
    }
    Ok(())
}

/// How to start each wanted server (in the order nestling, nest, ceiling), or why it
/// cannot be. The ceiling is included when wanted or when `need_ceiling`.
fn launches(args: &Args, need_ceiling: bool) -> Result<cost::Launches, String> {
    let want = |name: &str| args.servers.is_empty() || args.servers.iter().any(|s| s == name);
    let root = procs::workspace_root();
    let mut out = Vec::new();
    // (1) nestling's user_service example, release build.
    if want("nestling") {
        let l = procs::user_service_binary(!args.no_build).map(|bin| cost::Launch {
            program: bin,
            args: vec![],
            cwd: None,
        });
        out.push(("nestling", l));
    }
    // (2) the real NestJS service.
    if want("nest") {
        let dir = root.join("tests/nest");
        let l = if !dir.join("node_modules/@nestjs/microservices").exists() {
            Err("tests/nest/node_modules missing (run `npm ci` in tests/nest)".to_string())
        } else if std::process::Command::new("node")
            .arg("--version")
            .output()
            .is_err()
        {
            Err("node not found".to_string())
        } else {
            Ok(cost::Launch {
                program: PathBuf::from("node"),
                args: vec!["user-service.mjs"],
                cwd: Some(dir),
            })
        };
        out.push(("nest", l));
    }
    // (3) the ceiling, this binary in --ceiling-server mode.
    if want("ceiling") || need_ceiling {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        out.push((
            "ceiling",
            Ok(cost::Launch {
                program: exe,
                args: vec!["--ceiling-server"],
                cwd: None,
            }),
        ));
    }
    Ok(out)
}

/// `--cost`: callgrind instruction counts per request / event (see `cost.rs`).
async fn run_cost(
    args: &Args,
    machine: report::Machine,
    pinning: Option<Pinning>,
) -> Result<(), String> {
    let valgrind = cost::valgrind_version()?;
    let all = scenarios();
    let default_cost = ["b".to_string(), "d".to_string()];
    let filter: &[String] = if args.scenario.is_empty() {
        &default_cost
    } else {
        &args.scenario
    };
    let mut chosen: Vec<&Scenario> = Vec::new();
    for sc in all.iter().filter(|s| selected(filter, s.letter, s.name)) {
        if matches!(sc.load, Load::Client { .. }) || sc.load.is_rmq() || sc.load.is_nats() {
            println!(
                "-- {} ({}): not available in cost mode (client side, RabbitMQ or NATS)",
                sc.name, sc.letter
            );
        } else {
            chosen.push(sc);
        }
    }
    if chosen.is_empty() {
        return Err(format!("no cost scenario matches {filter:?}"));
    }
    if args.cost_requests == 0 || args.cost_events == 0 {
        return Err("--cost-requests and --cost-events must be > 0".into());
    }
    let cfg = cost::CostConfig {
        requests: args.cost_requests,
        events: args.cost_events,
        warmup: args.cost_warmup,
        dir: args
            .cost_dir
            .clone()
            .unwrap_or_else(|| procs::target_dir().join("bench-cost")),
        pin: pinning.map(|p| p.server_cpus),
    };
    for sc in &chosen {
        println!("-- {} ({}): {}", sc.name, sc.letter, sc.what);
    }
    let started = std::time::Instant::now();
    let mut skipped = Vec::new();
    let results = cost::run(launches(args, false)?, &chosen, &cfg, &mut skipped).await?;
    let summary = cost::CostSummary {
        machine,
        valgrind,
        pinning: pinning.is_some(),
        requests: args.cost_requests,
        events: args.cost_events,
        warmup: args.cost_warmup,
        dir: cfg.dir.clone(),
        elapsed_s: started.elapsed().as_secs_f64(),
        results,
        skipped,
    };
    println!();
    print!("{}", summary.table());
    if let Some(path) = &args.json {
        std::fs::write(path, summary.json_text())
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        println!("JSON written to {}", path.display());
    }
    Ok(())
}

fn target(label: &'static str, started: Result<ServerProc, String>) -> Target {
    match started {
        Ok(p) => Target {
            label,
            proc: Some(p),
            skipped: None,
            idle_rss_kib: None,
        },
        Err(e) => Target {
            label,
            proc: None,
            skipped: Some(e),
            idle_rss_kib: None,
        },
    }
}

/// Lets the server finish with closed connections before the next run.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(250)).await;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Driver {
    Raw,
    NestlingClient,
}

#[allow(clippy::too_many_arguments)]
async fn run_one(
    sc: &Scenario,
    load: Load,
    driver: Driver,
    server: &mut ServerProc,
    client_inflight: usize,
    window: Duration,
    warmup: Duration,
    ticks: f64,
) -> RunResult {
    let addr = server.addr();
    let label = match (load, driver) {
        (Load::Client { .. }, Driver::NestlingClient) => "ceiling/nestling::Client".to_string(),
        (Load::Client { .. }, Driver::Raw) => "ceiling/raw".to_string(),
        _ => server.name.clone(),
    };
    let (conns, inflight, payload) = match load {
        Load::Requests {
            conns,
            inflight,
            bytes,
        } => (conns, inflight, bytes),
        Load::Events { conns, batch, .. } => (conns, batch, 0),
        Load::Client { .. } => (1, client_inflight, 0),
        Load::RmqRequests { .. } | Load::RmqClient { .. } | Load::NatsRequests { .. } => {
            unreachable!("RabbitMQ and NATS scenarios run in rmq/ and nats/")
        }
    };
    let mut result = RunResult::new(sc.name, sc.letter, &label, conns, inflight);
    let req = Arc::new(match load {
        Load::Requests { bytes: 0, .. }
        | Load::Client { .. }
        | Load::Events { .. }
        | Load::RmqRequests { .. }
        | Load::RmqClient { .. }
        | Load::NatsRequests { .. } => SumRequest::small(),
        Load::Requests { bytes, .. } => SumRequest::of_size(bytes),
    });
    result.payload_bytes = if payload == 0 { 0 } else { req.data_bytes };

    // Connect everything before the clock starts.
    let mut streams = Vec::new();
    let mut client = None;
    if driver == Driver::NestlingClient {
        let c = nestling::Client::new(addr.clone());
        if let Err(e) = c.connect().await {
            result.fail(format!("connect: {e}"));
            return result;
        }
        client = Some(c);
    } else {
        let n = if let Load::Client { .. } = load {
            1
        } else {
            conns
        };
        for _ in 0..n {
            match loadgen::connect(&addr).await {
                Ok(s) => streams.push(s),
                Err(e) => {
                    result.fail(format!("connect: {e}"));
                    return result;
                }
            }
        }
    }
    let start = Instant::now();
    let t = Times {
        measure_start: start + warmup,
        end: start + warmup + window,
        drain_deadline: start + warmup + window + Duration::from_secs(5),
        limit: u64::MAX,
    };
    let quiet = matches!(load, Load::Events { quiet: true, .. });
    let events_before = match handled_events(server, quiet).await {
        Ok(n) => n,
        Err(e) => {
            result.fail(e);
            return result;
        }
    };
    let mut set: JoinSet<Stats> = JoinSet::new();
    match (load, client) {
        (_, Some(c)) => {
            for _ in 0..client_inflight {
                set.spawn(loadgen::client_worker(c.clone(), t));
            }
        }
        (
            Load::Events {
                batch,
                outstanding,
                quiet,
                ..
            },
            None,
        ) => {
            for s in streams {
                set.spawn(loadgen::events_worker(s, batch, outstanding, quiet, t));
            }
        }
        (_, None) => {
            for s in streams {
                set.spawn(loadgen::request_worker(s, req.clone(), inflight, t));
            }
        }
    }
    let (stats, sleeps) = measure(server, &mut set, t, ticks, &mut result).await;
    if let Load::Events { .. } = load {
        // Every event the generator wrote must eventually be handled (printed, or counted)
        // by the server.
        let sent = stats.events_sent;
        let wait_until = Instant::now() + Duration::from_secs(10);
        let count = |n: Result<u64, String>| n.unwrap_or(events_before) - events_before;
        let mut counted = count(handled_events(server, quiet).await);
        while counted < sent && Instant::now() < wait_until {
            tokio::time::sleep(Duration::from_millis(20)).await;
            counted = count(handled_events(server, quiet).await);
        }
        result.events = Some(report::EventCheck {
            sent,
            printed: counted,
        });
    }
    finish(&mut result, stats, sleeps, server, window);
    result
}

/// Events the server has handled so far: lines it printed (`log`), or its `tallied` count
/// (`quiet`: `tally` events).
async fn handled_events(server: &ServerProc, quiet: bool) -> Result<u64, String> {
    if quiet {
        loadgen::tallied(&server.addr()).await
    } else {
        Ok(server.event_lines())
    }
}

/// The measured window of one run: waits for it to start, reads the server's, the
/// generator's and the machine's CPU time and the server's sleeps at both ends (into
/// `result`), then joins the workers (aborting them after the drain deadline). Returns
/// their merged stats and the server's sleeps during the window.
async fn measure(
    server: &ServerProc,
    set: &mut JoinSet<Stats>,
    t: Times,
    ticks: f64,
    result: &mut RunResult,
) -> (Stats, Option<u64>) {
    tokio::time::sleep_until(t.measure_start).await;
    let srv0 = server.cpu_ticks();
    let sleeps0 = server.sleeps();
    let gen0 = procs::cpu_ticks("/proc/self/stat");
    let all0 = procs::machine_busy_ticks();
    let wall0 = Instant::now();
    tokio::time::sleep_until(t.end).await;
    let srv1 = server.cpu_ticks();
    let sleeps1 = server.sleeps();
    let gen1 = procs::cpu_ticks("/proc/self/stat");
    let all1 = procs::machine_busy_ticks();
    let wall = wall0.elapsed().as_secs_f64();
    let pct = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (Some(a), Some(b)) => Some((b.saturating_sub(a)) as f64 / ticks / wall * 100.0),
        _ => None,
    };
    result.server_cpu_pct = pct(srv0, srv1);
    result.gen_cpu_pct = pct(gen0, gen1);
    // Whatever else ran meanwhile (other processes, unattributed softirq time).
    result.other_cpu_pct = match (pct(all0, all1), result.server_cpu_pct, result.gen_cpu_pct) {
        (Some(all), Some(srv), Some(gen)) => Some((all - srv - gen).max(0.0)),
        _ => None,
    };

    let mut stats = Stats::new();
    let join_deadline = t.drain_deadline + Duration::from_secs(2);
    loop {
        match tokio::time::timeout_at(join_deadline, set.join_next()).await {
            Ok(Some(Ok(s))) => stats.merge(s),
            Ok(Some(Err(e))) => {
                stats.errors += 1;
                stats
                    .first_error
                    .get_or_insert_with(|| format!("worker failed: {e}"));
            }
            Ok(None) => break,
            Err(_) => {
                set.abort_all();
                stats.errors += 1;
                stats
                    .first_error
                    .get_or_insert_with(|| "workers did not stop in time".into());
                break;
            }
        }
    }
    let sleeps = match (sleeps0, sleeps1) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };
    (stats, sleeps)
}

/// Completes `result` from the workers' stats: rate, latency, errors, the server's sleeps
/// per 100 requests, its peak RSS, and a failure if it has exited.
fn finish(
    result: &mut RunResult,
    stats: Stats,
    sleeps: Option<u64>,
    server: &mut ServerProc,
    window: Duration,
) {
    result.finish(stats, window.as_secs_f64());
    result.sleeps_per_100 = match sleeps {
        Some(n) if result.completed > 0 => Some(n as f64 * 100.0 / result.completed as f64),
        _ => None,
    };
    result.peak_rss_kib = server.peak_rss_kib();
    if let Some(status) = server.exited() {
        result.fail(format!(
            "server exited ({status}); last output:\n{}",
            server.tail_text()
        ));
    }
}

//! The RabbitMQ scenarios (g, h): one throw-away broker started by the bench, the user
//! service's `sum` served through it by nestling (acknowledgements on, its default; and
//! off, Nest's default), by NestJS (`noAck: true`, its default) and by a raw lapin consumer
//! (the ceiling for this transport, with and without acks), all driven by one raw lapin
//! load generator; and the client side, `nestling::Client` against the raw generator.

pub mod broker;
pub mod ceiling;
mod loadgen;

use std::path::PathBuf;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::loadgen::{Stats, Times};
use crate::procs::{self, Pinning, ServerProc};
use crate::report::{self, RunResult};
use crate::{Args, Driver, Load, Scenario};

/// The server the client-side scenarios (h) talk to.
const CLIENT_TARGET: &str = "ceiling noAck";

/// What the RabbitMQ part of a run produced, merged into the bench's summary.
#[derive(Default)]
pub struct Outcome {
    pub results: Vec<RunResult>,
    pub skipped: Vec<(String, String)>,
    pub peak_rss_kib: Vec<(String, Option<u64>)>,
    pub idle_rss_kib: Vec<(String, Option<u64>)>,
}

pub struct Runner<'a> {
    pub args: &'a Args,
    pub pinning: Option<Pinning>,
    pub window: Duration,
    pub warmup: Duration,
    pub ticks: f64,
}

/// A RabbitMQ server under test: how to start it, and the queue it consumes.
struct Launch {
    label: &'static str,
    program: PathBuf,
    args: Vec<&'static str>,
    cwd: Option<PathBuf>,
    env: Vec<(&'static str, String)>,
    queue: String,
}

struct Target {
    label: &'static str,
    queue: String,
    proc: ServerProc,
}

impl Runner<'_> {
    pub async fn run(&self, chosen: &[&Scenario]) -> Result<Outcome, String> {
        let mut out = Outcome::default();
        let cores = self
            .pinning
            .map(|p| format!("{},{}", p.gen_core, p.server_core));
        println!("-- RabbitMQ: starting a throw-away broker");
        let t0 = std::time::Instant::now();
        let started = tokio::task::spawn_blocking(move || broker::Broker::start(cores.as_deref()))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r);
        let broker = match started {
            Ok(b) => b,
            Err(why) => {
                println!("   SKIPPED the RabbitMQ scenarios: {why}");
                out.skipped.push(("rabbitmq broker".into(), why));
                return Ok(out);
            }
        };
        let url = broker.url();
        println!(
            "   broker {url} up in {:.1} s (on every core; its CPU shows as \"other CPU %\")",
            t0.elapsed().as_secs_f64()
        );
        let needs_client_target = chosen
            .iter()
            .any(|s| matches!(s.load, Load::RmqClient { .. }));
        let mut targets = Vec::new();
        for l in self.launches(&url, needs_client_target) {
            let launch = match l {
                Ok(l) => l,
                Err((label, why)) => {
                    println!("server {label:<13} SKIPPED: {why}");
                    out.skipped.push((format!("{label} (rmq)"), why));
                    continue;
                }
            };
            match ServerProc::start_env(
                launch.label,
                &launch.program,
                &launch.args,
                launch.cwd.as_deref(),
                &launch.env,
                self.pinning.map(|p| p.server_cpus),
                Duration::from_secs(30),
            ) {
                Ok(proc) => {
                    println!(
                        "server {:<13} pid {:<7} queue {}",
                        launch.label, proc.pid, launch.queue
                    );
                    targets.push(Target {
                        label: launch.label,
                        queue: launch.queue,
                        proc,
                    });
                }
                Err(why) => {
                    println!("server {:<13} SKIPPED: {why}", launch.label);
                    out.skipped.push((format!("{} (rmq)", launch.label), why));
                }
            }
        }
        crate::settle().await;
        for t in &targets {
            out.idle_rss_kib
                .push((format!("{} (rmq)", t.label), t.proc.rss_kib()));
        }
        let want = |label: &str| {
            let family = label.split(' ').next().unwrap_or(label);
            self.args.servers.is_empty() || self.args.servers.iter().any(|s| s == family)
        };
        for sc in chosen {
            println!("-- {} ({}): {}", sc.name, sc.letter, sc.what);
            let mut runs = Vec::new();
            for _ in 0..self.args.repeat.max(1) {
                match sc.load {
                    Load::RmqRequests { conns, inflight } => {
                        for t in targets.iter_mut().filter(|t| want(t.label)) {
                            if let Some(status) = t.proc.exited() {
                                println!("   {} has exited ({status}); skipping", t.label);
                                continue;
                            }
                            let r = self.requests(sc, &url, t, conns, inflight).await;
                            report::print_progress(&r);
                            runs.push(r);
                            crate::settle().await;
                        }
                    }
                    Load::RmqClient { inflight } => {
                        let Some(t) = targets.iter_mut().find(|t| t.label == CLIENT_TARGET) else {
                            println!("   skipped: the {CLIENT_TARGET} server is not running");
                            continue;
                        };
                        for driver in [Driver::NestlingClient, Driver::Raw] {
                            let r = self.client(sc, &url, t, driver, inflight).await;
                            report::print_progress(&r);
                            runs.push(r);
                            crate::settle().await;
                        }
                    }
                    _ => unreachable!("only RabbitMQ scenarios come here"),
                }
            }
            out.results.extend(report::medians(runs));
        }
        for t in &targets {
            out.peak_rss_kib
                .push((format!("{} (rmq)", t.label), t.proc.peak_rss_kib()));
        }
        // Servers first (they would log reconnection attempts), then the broker.
        drop(targets);
        println!("-- RabbitMQ: stopping the broker");
        tokio::task::spawn_blocking(move || drop(broker))
            .await
            .map_err(|e| format!("stopping the broker: {e}"))?;
        Ok(out)
    }

    /// The servers to start, in report order, or why one cannot be.
    fn launches(
        &self,
        url: &str,
        needs_client_target: bool,
    ) -> Vec<Result<Launch, (&'static str, String)>> {
        let args = self.args;
        let want = |name: &str| args.servers.is_empty() || args.servers.iter().any(|s| s == name);
        let env = |queue: &str, no_ack: bool| {
            let mut env = vec![
                ("RMQ_URL", url.to_string()),
                ("RMQ_QUEUE", queue.to_string()),
            ];
            if no_ack {
                env.push(("RMQ_NOACK", "true".to_string()));
            }
            env
        };
        let mut out = Vec::new();
        if want("nestling") {
            let bin = procs::user_service_binary(!args.no_build);
            for (label, queue, no_ack) in [
                ("nestling", "bench_nestling", false),
                ("nestling noAck", "bench_nestling_noack", true),
            ] {
                out.push(match &bin {
                    Ok(bin) => Ok(Launch {
                        label,
                        program: bin.clone(),
                        args: vec![],
                        cwd: None,
                        env: env(queue, no_ack),
                        queue: queue.into(),
                    }),
                    Err(why) => Err((label, why.clone())),
                });
            }
        }
        if want("nest") {
            let dir = procs::workspace_root().join("tests/nest");
            let modules = dir.join("node_modules");
            let missing = [
                "@nestjs/microservices",
                "amqplib",
                "amqp-connection-manager",
            ]
            .into_iter()
            .find(|m| !modules.join(m).exists());
            out.push(if let Some(m) = missing {
                Err((
                    "nest",
                    format!("tests/nest/node_modules/{m} missing (run `npm ci` in tests/nest)"),
                ))
            } else {
                let mut env = env("bench_nest", false);
                env.push(("TRANSPORT", "rmq".into()));
                env.push(("NO_COLOR", "1".into()));
                Ok(Launch {
                    label: "nest",
                    program: PathBuf::from("node"),
                    args: vec!["user-service.mjs"],
                    cwd: Some(dir),
                    env,
                    queue: "bench_nest".into(),
                })
            });
        }
        match std::env::current_exe() {
            Ok(exe) => {
                for (label, queue, no_ack) in [
                    ("ceiling", "bench_ceiling", false),
                    (CLIENT_TARGET, "bench_ceiling_noack", true),
                ] {
                    if want("ceiling") || (label == CLIENT_TARGET && needs_client_target) {
                        out.push(Ok(Launch {
                            label,
                            program: exe.clone(),
                            args: vec!["--rmq-ceiling-server"],
                            cwd: None,
                            env: env(queue, no_ack),
                            queue: queue.into(),
                        }));
                    }
                }
            }
            Err(e) => out.push(Err(("ceiling", e.to_string()))),
        }
        out
    }

    fn times(&self) -> Times {
        let start = Instant::now();
        let end = start + self.warmup + self.window;
        Times {
            measure_start: start + self.warmup,
            end,
            drain_deadline: end + Duration::from_secs(5),
            limit: u64::MAX,
        }
    }

    /// One server, `conns` generator connections × `inflight` outstanding.
    async fn requests(
        &self,
        sc: &Scenario,
        url: &str,
        target: &mut Target,
        conns: usize,
        inflight: usize,
    ) -> RunResult {
        let mut result = RunResult::new(sc.name, sc.letter, target.label, conns, inflight);
        let mut links = Vec::new();
        for _ in 0..conns {
            match loadgen::connect(url, &target.queue).await {
                Ok(link) => links.push(link),
                Err(e) => {
                    result.fail(e);
                    return result;
                }
            }
        }
        let t = self.times();
        let mut set: JoinSet<Stats> = JoinSet::new();
        for link in links {
            set.spawn(loadgen::request_worker(link, inflight, t));
        }
        let (stats, sleeps) =
            crate::measure(&target.proc, &mut set, t, self.ticks, &mut result).await;
        crate::finish(&mut result, stats, sleeps, &mut target.proc, self.window);
        result
    }

    /// Client side against `target`: `nestling::Client` with `inflight` concurrent calls,
    /// or the raw generator on one connection with as many outstanding.
    async fn client(
        &self,
        sc: &Scenario,
        url: &str,
        target: &mut Target,
        driver: Driver,
        inflight: usize,
    ) -> RunResult {
        let label = match driver {
            Driver::NestlingClient => "ceiling/nestling::Client",
            Driver::Raw => "ceiling/raw",
        };
        let mut result = RunResult::new(sc.name, sc.letter, label, 1, inflight);
        let mut set: JoinSet<Stats> = JoinSet::new();
        let t;
        match driver {
            Driver::NestlingClient => {
                let client = nestling::Client::new(format!("{url}?queue={}", target.queue));
                if let Err(e) = client.connect().await {
                    result.fail(format!("connect: {e}"));
                    return result;
                }
                t = self.times();
                for _ in 0..inflight {
                    set.spawn(crate::loadgen::client_worker(client.clone(), t));
                }
            }
            Driver::Raw => {
                let link = match loadgen::connect(url, &target.queue).await {
                    Ok(link) => link,
                    Err(e) => {
                        result.fail(e);
                        return result;
                    }
                };
                t = self.times();
                set.spawn(loadgen::request_worker(link, inflight, t));
            }
        }
        let (stats, sleeps) =
            crate::measure(&target.proc, &mut set, t, self.ticks, &mut result).await;
        crate::finish(&mut result, stats, sleeps, &mut target.proc, self.window);
        result
    }
}

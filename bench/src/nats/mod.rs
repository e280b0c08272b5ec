//! The NATS scenarios (i): one throw-away `nats-server` started by the bench, the user
//! service's `sum` served through it by nestling, by NestJS (`Transport.NATS`) and by a raw
//! async-nats responder (the ceiling for this transport), all driven by one raw async-nats
//! load generator. Only one server is subscribed at a time (each is started for its run and
//! stopped after it), so every request reaches the server under test.

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
use crate::{Args, Load, Scenario};

/// What the NATS part of a run produced, merged into the bench's summary.
#[derive(Default)]
pub struct Outcome {
    pub results: Vec<RunResult>,
    pub skipped: Vec<(String, String)>,
    pub peak_rss_kib: Vec<(String, Option<u64>)>,
}

pub struct Runner<'a> {
    pub args: &'a Args,
    pub pinning: Option<Pinning>,
    pub window: Duration,
    pub warmup: Duration,
    pub ticks: f64,
}

/// A NATS server under test: how to start it.
struct Launch {
    label: &'static str,
    program: PathBuf,
    args: Vec<&'static str>,
    cwd: Option<PathBuf>,
    env: Vec<(&'static str, String)>,
}

impl Runner<'_> {
    pub async fn run(&self, chosen: &[&Scenario]) -> Result<Outcome, String> {
        let mut out = Outcome::default();
        let cores = self
            .pinning
            .map(|p| format!("{},{}", p.gen_core, p.server_core));
        let broker = match broker::Broker::start(cores.as_deref()) {
            Ok(b) => b,
            Err(why) => {
                println!("   SKIPPED the NATS scenarios: {why}");
                out.skipped.push(("nats-server".into(), why));
                return Ok(out);
            }
        };
        let url = broker.url();
        println!("-- NATS: nats-server {url} (on every core; its CPU shows as \"other CPU %\")");
        let launches: Vec<Launch> = self
            .launches(&url)
            .into_iter()
            .filter_map(|l| match l {
                Ok(l) => Some(l),
                Err((label, why)) => {
                    println!("server {label:<13} SKIPPED: {why}");
                    out.skipped.push((format!("{label} (nats)"), why));
                    None
                }
            })
            .collect();
        let mut peak: Vec<(&'static str, Option<u64>)> = Vec::new();
        for sc in chosen {
            println!("-- {} ({}): {}", sc.name, sc.letter, sc.what);
            let Load::NatsRequests { conns, inflight } = sc.load else {
                unreachable!("only NATS scenarios come here");
            };
            let mut runs = Vec::new();
            for _ in 0..self.args.repeat.max(1) {
                for launch in &launches {
                    let mut proc = match ServerProc::start_env(
                        launch.label,
                        &launch.program,
                        &launch.args,
                        launch.cwd.as_deref(),
                        &launch.env,
                        self.pinning.map(|p| p.server_cpus),
                        Duration::from_secs(30),
                    ) {
                        Ok(p) => p,
                        Err(why) => {
                            println!("   {} did not start: {why}", launch.label);
                            let mut r =
                                RunResult::new(sc.name, sc.letter, launch.label, conns, inflight);
                            r.fail(why);
                            runs.push(r);
                            continue;
                        }
                    };
                    crate::settle().await;
                    let r = self
                        .requests(sc, &url, launch.label, &mut proc, conns, inflight)
                        .await;
                    report::print_progress(&r);
                    runs.push(r);
                    let rss = proc.peak_rss_kib();
                    match peak.iter_mut().find(|(l, _)| *l == launch.label) {
                        Some((_, p)) => *p = (*p).max(rss),
                        None => peak.push((launch.label, rss)),
                    }
                    proc.terminate(Duration::from_secs(3));
                    drop(proc);
                    crate::settle().await;
                }
            }
            out.results.extend(report::medians(runs));
        }
        out.peak_rss_kib = peak
            .into_iter()
            .map(|(l, k)| (format!("{l} (nats)"), k))
            .collect();
        drop(broker);
        Ok(out)
    }

    /// The servers to start, in report order, or why one cannot be.
    fn launches(&self, url: &str) -> Vec<Result<Launch, (&'static str, String)>> {
        let args = self.args;
        let want = |name: &str| args.servers.is_empty() || args.servers.iter().any(|s| s == name);
        let env = vec![
            ("NATS_URL", url.to_string()),
            ("NATS_QUEUE", ceiling::QUEUE.to_string()),
        ];
        let mut out = Vec::new();
        if want("nestling") {
            out.push(
                procs::user_service_binary(!args.no_build)
                    .map(|bin| Launch {
                        label: "nestling",
                        program: bin,
                        args: vec![],
                        cwd: None,
                        env: env.clone(),
                    })
                    .map_err(|why| ("nestling", why)),
            );
        }
        if want("nest") {
            let dir = procs::workspace_root().join("tests/nest");
            out.push(
                if !dir.join("node_modules/@nestjs/microservices").exists() {
                    Err((
                        "nest",
                        "tests/nest/node_modules missing (run `npm ci` in tests/nest)".into(),
                    ))
                } else {
                    let mut env = env.clone();
                    env.push(("TRANSPORT", "nats".into()));
                    env.push(("NO_COLOR", "1".into()));
                    Ok(Launch {
                        label: "nest",
                        program: PathBuf::from("node"),
                        args: vec!["user-service.mjs"],
                        cwd: Some(dir),
                        env,
                    })
                },
            );
        }
        if want("ceiling") {
            out.push(
                std::env::current_exe()
                    .map(|exe| Launch {
                        label: "ceiling",
                        program: exe,
                        args: vec!["--nats-ceiling-server"],
                        cwd: None,
                        env: env.clone(),
                    })
                    .map_err(|e| ("ceiling", e.to_string())),
            );
        }
        out
    }

    /// One server, `conns` generator connections × `inflight` outstanding.
    async fn requests(
        &self,
        sc: &Scenario,
        url: &str,
        label: &'static str,
        proc: &mut ServerProc,
        conns: usize,
        inflight: usize,
    ) -> RunResult {
        let mut result = RunResult::new(sc.name, sc.letter, label, conns, inflight);
        let mut links = Vec::new();
        for _ in 0..conns {
            match loadgen::connect(url).await {
                Ok(link) => links.push(link),
                Err(e) => {
                    result.fail(e);
                    return result;
                }
            }
        }
        let start = Instant::now();
        let end = start + self.warmup + self.window;
        let t = Times {
            measure_start: start + self.warmup,
            end,
            drain_deadline: end + Duration::from_secs(5),
            limit: u64::MAX,
        };
        let mut set: JoinSet<Stats> = JoinSet::new();
        for link in links {
            set.spawn(loadgen::request_worker(link, inflight, t));
        }
        let (stats, sleeps) = crate::measure(proc, &mut set, t, self.ticks, &mut result).await;
        crate::finish(&mut result, stats, sleeps, proc, self.window);
        result
    }
}

//! `--http`: the seed's whole system under HTTP load. The tutorial's gateway (`GET
//! /sum?num=…`, which emits `log` and sends `sum` to the user service) and its user service,
//! in four pairings of NestJS and nestling, plus the Nest gateway against a nestling service
//! with `TCP_QUICKACK` off, plus an axum handler that sums in-process (no service hop) as
//! the ceiling. Every pairing is driven by `wrk` with the same connections and pinning:
//! gateway and service share the server core, `wrk` runs on the generator's core.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

use crate::procs::{self, Pinning, ServerProc};
use crate::report::{self, Machine};
use crate::Args;

/// The query every request sends, and the body it must get back.
const PATH: &str = "/sum?num=1,2,3";
const EXPECTED: &str = "6";

/// `--http-ceiling-server`: an axum app with the gateway's route, summing in-process.
/// The runtime is the gateway's (`#[tokio::main]`: multi-thread, one worker per core).
pub fn run_ceiling() -> std::io::Result<()> {
    use axum::extract::Query;
    use axum::http::StatusCode;
    use axum::routing::get;

    #[derive(serde::Deserialize)]
    struct SumQuery {
        num: Option<String>,
    }

    async fn sum(Query(q): Query<SumQuery>) -> Result<String, (StatusCode, String)> {
        let raw = q
            .num
            .ok_or((StatusCode::BAD_REQUEST, "missing num".to_string()))?;
        let mut total = 0i64;
        for item in raw.split(',') {
            total += item.trim().parse::<i64>().map_err(|_| {
                (
                    StatusCode::BAD_REQUEST,
                    format!("{item:?} is not an integer"),
                )
            })?;
        }
        Ok(total.to_string())
    }

    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async {
            let host = std::env::var("HOST").unwrap_or_else(|_| "127.0.0.1".into());
            let port = std::env::var("PORT").unwrap_or_else(|_| "0".into());
            let listener = tokio::net::TcpListener::bind(format!("{host}:{port}")).await?;
            println!("READY {}", listener.local_addr()?.port());
            let _ = std::io::stdout().flush();
            axum::serve(listener, axum::Router::new().route("/sum", get(sum))).await
        })
}

/// One pairing: which gateway in front of which service (or the in-process ceiling).
struct Pairing {
    label: &'static str,
    gateway: &'static str,
    service: Option<&'static str>,
}

const PAIRINGS: [Pairing; 6] = [
    Pairing {
        label: "Nest gateway → Nest service",
        gateway: "nest gw",
        service: Some("nest svc"),
    },
    Pairing {
        label: "nestling gateway → nestling service",
        gateway: "nestling gw",
        service: Some("nestling svc"),
    },
    Pairing {
        label: "nestling gateway → Nest service",
        gateway: "nestling gw→nest",
        service: Some("nest svc"),
    },
    Pairing {
        label: "Nest gateway → nestling service",
        gateway: "nest gw→nestling",
        service: Some("nestling svc"),
    },
    Pairing {
        label: "Nest gateway → nestling service, quickack off",
        gateway: "nest gw→nestling noqa",
        service: Some("nestling svc noqa"),
    },
    Pairing {
        label: "axum in-process sum (ceiling, no hop)",
        gateway: "axum ceiling",
        service: None,
    },
];

/// One measured run of one pairing.
#[derive(Clone)]
struct HttpRun {
    label: &'static str,
    rate: f64,
    p50_us: Option<f64>,
    p99_us: Option<f64>,
    requests: u64,
    bad: u64,
    gateway_cpu: Option<f64>,
    service_cpu: Option<f64>,
    other_cpu: Option<f64>,
    error: Option<String>,
    rates: Vec<f64>,
}

/// What `wrk --latency` printed.
#[derive(Debug, Default, PartialEq)]
struct WrkOut {
    rate: f64,
    p50_us: Option<f64>,
    p99_us: Option<f64>,
    requests: u64,
    non_2xx: u64,
    socket_errors: u64,
}

/// `1.23ms` → 1230.0 (µs).
fn duration_us(text: &str) -> Option<f64> {
    let (num, unit) = text
        .find(|c: char| c.is_ascii_alphabetic())
        .map(|i| text.split_at(i))?;
    let v: f64 = num.parse().ok()?;
    Some(match unit {
        "us" => v,
        "ms" => v * 1e3,
        "s" => v * 1e6,
        "m" => v * 60e6,
        _ => return None,
    })
}

fn parse_wrk(text: &str) -> Option<WrkOut> {
    let mut out = WrkOut::default();
    let mut rate = None;
    for line in text.lines().map(str::trim) {
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("Requests/sec:"), Some(v)) => rate = v.parse().ok(),
            (Some("50%"), Some(v)) => out.p50_us = duration_us(v),
            (Some("99%"), Some(v)) => out.p99_us = duration_us(v),
            (Some(n), Some("requests")) => out.requests = n.parse().unwrap_or(0),
            _ => {}
        }
        if let Some(n) = line.strip_prefix("Non-2xx or 3xx responses:") {
            out.non_2xx = n.trim().parse().unwrap_or(0);
        }
        if let Some(rest) = line.strip_prefix("Socket errors:") {
            out.socket_errors = rest
                .split(',')
                .filter_map(|part| part.split_whitespace().last()?.parse::<u64>().ok())
                .sum();
        }
    }
    out.rate = rate?;
    Some(out)
}

/// One `GET /sum?num=1,2,3` on a fresh connection: the body, or why there is none.
fn get_once(port: u16) -> Result<String, String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "GET {PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut text = String::new();
    s.read_to_string(&mut text).map_err(|e| e.to_string())?;
    let (head, body) = text.split_once("\r\n\r\n").ok_or("no HTTP response")?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!("{}: {body}", head.lines().next().unwrap_or("")));
    }
    Ok(body.trim().to_string())
}

fn example_binary(name: &str, build: bool) -> Result<PathBuf, String> {
    let bin = procs::target_dir().join("release/examples").join(name);
    if build {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        eprintln!("building: cargo build --release --example {name}");
        let status = Command::new(cargo)
            .args(["build", "--release", "--quiet", "--example", name])
            .current_dir(procs::workspace_root())
            .status()
            .map_err(|e| format!("cannot run cargo: {e}"))?;
        if !status.success() && bin.exists() {
            eprintln!("WARNING: building the {name} example failed; using the existing binary");
        }
    }
    bin.exists()
        .then_some(bin.clone())
        .ok_or_else(|| format!("{} is missing", bin.display()))
}

fn wrk_available() -> Result<(), String> {
    match Command::new("wrk").arg("--version").output() {
        Ok(_) => Ok(()),
        Err(e) => Err(format!("wrk not found ({e}); apt-get install wrk")),
    }
}

struct Proc {
    label: &'static str,
    proc: ServerProc,
}

fn find<'a>(procs: &'a mut [Proc], label: &str) -> Option<&'a mut Proc> {
    procs.iter_mut().find(|p| p.label == label)
}

/// Runs `wrk` for `seconds` against `port`; returns its output.
async fn wrk(port: u16, conns: usize, seconds: f64) -> Result<String, String> {
    let secs = format!("{}s", seconds.ceil().max(1.0) as u64);
    let url = format!("http://127.0.0.1:{port}{PATH}");
    let out = tokio::process::Command::new("wrk")
        .args([
            "-t1",
            &format!("-c{conns}"),
            &format!("-d{secs}"),
            "--latency",
        ])
        .arg(&url)
        .output()
        .await
        .map_err(|e| format!("wrk: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(format!(
            "wrk failed: {}{}",
            text,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(text)
}

pub async fn run(args: &Args, machine: Machine, pinning: Option<Pinning>) -> Result<(), String> {
    wrk_available()?;
    let started = std::time::Instant::now();
    let pin = pinning.map(|p| p.server_cpus);
    let build = !args.no_build;
    let svc_bin = example_binary("user_service", build)?;
    let gw_bin = example_binary("gateway", build)?;
    let nest_dir = procs::workspace_root().join("tests/nest");
    let nest_ok = nest_dir.join("node_modules/@nestjs/microservices").exists()
        && Command::new("node").arg("--version").output().is_ok();
    let ready = Duration::from_secs(30);
    let mut procs: Vec<Proc> = Vec::new();
    let mut skipped: Vec<(String, String)> = Vec::new();
    let mut start = |label: &'static str,
                     program: &Path,
                     args: &[&str],
                     cwd: Option<&Path>,
                     env: &[(&str, String)]|
     -> Option<u16> {
        match ServerProc::start_env(label, program, args, cwd, env, pin, ready) {
            Ok(p) => {
                let port = p.port;
                println!("{label:<24} pid {:<7} port {port}", p.pid);
                procs.push(Proc { label, proc: p });
                Some(port)
            }
            Err(e) => {
                println!("{label:<24} SKIPPED: {e}");
                skipped.push((label.to_string(), e));
                None
            }
        }
    };
    // The services first: the gateways are told their ports.
    let svc = start("nestling svc", &svc_bin, &[], None, &[]);
    let svc_noqa = start(
        "nestling svc noqa",
        &svc_bin,
        &[],
        None,
        &[("QUICKACK", "false".into())],
    );
    let node = PathBuf::from("node");
    let nest_svc = if nest_ok {
        start(
            "nest svc",
            &node,
            &["user-service.mjs"],
            Some(&nest_dir),
            &[("NO_COLOR", "1".into())],
        )
    } else {
        println!("nest                     SKIPPED: node or tests/nest/node_modules missing");
        None
    };
    let to = |port: u16| vec![("USER_SERVICE_PORT", port.to_string())];
    let nest_env = |port: u16| {
        let mut env = to(port);
        env.push(("NO_COLOR", "1".into()));
        env
    };
    if let Some(p) = nest_svc {
        if nest_ok {
            start(
                "nest gw",
                &node,
                &["gateway.mjs"],
                Some(&nest_dir),
                &nest_env(p),
            );
        }
        start("nestling gw→nest", &gw_bin, &[], None, &to(p));
    }
    if let Some(p) = svc {
        start("nestling gw", &gw_bin, &[], None, &to(p));
        if nest_ok {
            start(
                "nest gw→nestling",
                &node,
                &["gateway.mjs"],
                Some(&nest_dir),
                &nest_env(p),
            );
        }
    }
    if let (Some(p), true) = (svc_noqa, nest_ok) {
        start(
            "nest gw→nestling noqa",
            &node,
            &["gateway.mjs"],
            Some(&nest_dir),
            &nest_env(p),
        );
    }
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    start("axum ceiling", &exe, &["--http-ceiling-server"], None, &[]);
    crate::settle().await;

    let ticks = procs::clock_ticks_per_sec();
    let conns = args.http_connections;
    let mut runs: Vec<HttpRun> = Vec::new();
    let pairings: Vec<&Pairing> = PAIRINGS
        .iter()
        .filter(|p| procs.iter().any(|q| q.label == p.gateway))
        .collect();
    // Correctness first: every pairing must answer 6.
    for p in &pairings {
        let port = find(&mut procs, p.gateway).expect("filtered").proc.port;
        let body = tokio::task::spawn_blocking(move || get_once(port))
            .await
            .map_err(|e| e.to_string())?;
        match body {
            Ok(b) if b == EXPECTED => {}
            Ok(b) => return Err(format!("{}: GET {PATH} answered {b:?}", p.label)),
            Err(e) => return Err(format!("{}: GET {PATH} failed: {e}", p.label)),
        }
    }
    println!(
        "-- http: wrk -t1 -c{conns} {PATH}, {} s after {} s warm-up, {} run(s) per pairing, interleaved",
        args.seconds,
        args.warmup,
        args.repeat.max(1)
    );
    for _ in 0..args.repeat.max(1) {
        for p in &pairings {
            let gw_port = find(&mut procs, p.gateway).expect("filtered").proc.port;
            if args.warmup > 0.0 {
                wrk(gw_port, conns, args.warmup).await?;
            }
            let cpu = |procs: &mut [Proc], label: Option<&str>| {
                label
                    .and_then(|l| find(procs, l))
                    .and_then(|p| p.proc.cpu_ticks())
            };
            let (g0, s0) = (cpu(&mut procs, Some(p.gateway)), cpu(&mut procs, p.service));
            let gen0 = procs::cpu_ticks("/proc/self/stat");
            let all0 = procs::machine_busy_ticks();
            let t0 = std::time::Instant::now();
            let out = wrk(gw_port, conns, args.seconds).await;
            let wall = t0.elapsed().as_secs_f64();
            let (g1, s1) = (cpu(&mut procs, Some(p.gateway)), cpu(&mut procs, p.service));
            let all1 = procs::machine_busy_ticks();
            let gen1 = procs::cpu_ticks("/proc/self/stat");
            let pct = |a: Option<u64>, b: Option<u64>| match (a, b) {
                (Some(a), Some(b)) => Some(b.saturating_sub(a) as f64 / ticks / wall * 100.0),
                _ => None,
            };
            let (gateway_cpu, service_cpu) = (pct(g0, g1), pct(s0, s1));
            // wrk is not this process: "other" includes it, so it is reported apart.
            let other_cpu = match (pct(all0, all1), gateway_cpu) {
                (Some(all), Some(g)) => Some(
                    (all - g - service_cpu.unwrap_or(0.0) - pct(gen0, gen1).unwrap_or(0.0))
                        .max(0.0),
                ),
                _ => None,
            };
            let run = match out.as_deref().map(parse_wrk) {
                Ok(Some(w)) => HttpRun {
                    label: p.label,
                    rate: w.rate,
                    p50_us: w.p50_us,
                    p99_us: w.p99_us,
                    requests: w.requests,
                    bad: w.non_2xx + w.socket_errors,
                    gateway_cpu,
                    service_cpu,
                    other_cpu,
                    error: None,
                    rates: vec![w.rate],
                },
                Ok(None) => return Err(format!("{}: cannot read wrk's output", p.label)),
                Err(e) => HttpRun {
                    label: p.label,
                    rate: 0.0,
                    p50_us: None,
                    p99_us: None,
                    requests: 0,
                    bad: 1,
                    gateway_cpu,
                    service_cpu,
                    other_cpu,
                    error: Some(e.clone()),
                    rates: vec![0.0],
                },
            };
            println!(
                "   {:<48} {:>9.0} req/s  p50 {:>9} µs  p99 {:>9} µs  bad {}",
                run.label,
                run.rate,
                opt(run.p50_us, 0),
                opt(run.p99_us, 0),
                run.bad
            );
            runs.push(run);
            crate::settle().await;
        }
    }
    for p in procs.iter_mut() {
        if let Some(status) = p.proc.exited() {
            return Err(format!(
                "{} exited during the run ({status}):\n{}",
                p.label,
                p.proc.tail_text()
            ));
        }
    }
    let results = medians(runs);
    let summary = HttpSummary {
        machine,
        pinning: pinning.is_some(),
        conns,
        seconds: args.seconds,
        warmup: args.warmup,
        repeat: args.repeat.max(1),
        elapsed_s: started.elapsed().as_secs_f64(),
        load_end: report::load_average(),
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

/// Per pairing, the run with the median rate (carrying every run's rate, and the bad
/// responses of all runs).
fn medians(runs: Vec<HttpRun>) -> Vec<HttpRun> {
    let mut order: Vec<&'static str> = Vec::new();
    for r in &runs {
        if !order.contains(&r.label) {
            order.push(r.label);
        }
    }
    order
        .into_iter()
        .filter_map(|label| {
            let mine: Vec<&HttpRun> = runs.iter().filter(|r| r.label == label).collect();
            let mut by_rate = mine.clone();
            by_rate.sort_by(|a, b| a.rate.total_cmp(&b.rate));
            let mut chosen = (*by_rate.get(by_rate.len() / 2)?).clone();
            chosen.rates = mine.iter().map(|r| r.rate).collect();
            chosen.bad = mine.iter().map(|r| r.bad).sum();
            chosen.error = mine.iter().find_map(|r| r.error.clone());
            Some(chosen)
        })
        .collect()
}

fn opt(v: Option<f64>, prec: usize) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.prec$}"))
}

struct HttpSummary {
    machine: Machine,
    pinning: bool,
    conns: usize,
    seconds: f64,
    warmup: f64,
    repeat: usize,
    elapsed_s: f64,
    load_end: String,
    results: Vec<HttpRun>,
    skipped: Vec<(String, String)>,
}

impl HttpSummary {
    fn rate(&self, label: &str) -> Option<f64> {
        self.results
            .iter()
            .find(|r| r.label == label)
            .map(|r| r.rate)
            .filter(|&r| r > 0.0)
    }

    fn ratios(&self) -> Vec<(&'static str, Option<f64>)> {
        let [nest, ours, ours_nest, nest_ours, nest_ours_noqa, ceiling] =
            PAIRINGS.each_ref().map(|p| self.rate(p.label));
        let r = |a: Option<f64>, b: Option<f64>| Some(a? / b?);
        vec![
            (
                "nestling → nestling / axum ceiling (aim ≥ 0.5)",
                r(ours, ceiling),
            ),
            (
                "Nest gateway → nestling service / Nest → Nest (aim ≥ 5)",
                r(nest_ours, nest),
            ),
            (
                "Nest gateway → nestling service: quickack on / off",
                r(nest_ours, nest_ours_noqa),
            ),
            ("nestling → nestling / Nest → Nest", r(ours, nest)),
            (
                "nestling gateway → Nest service / Nest → Nest",
                r(ours_nest, nest),
            ),
        ]
    }

    fn table(&self) -> String {
        let mut s = String::new();
        let m = &self.machine;
        let _ = writeln!(
            s,
            "nestling {}; machine: {} CPUs, {}, Linux {}, node {}",
            m.nestling_rev,
            m.nproc,
            m.cpu,
            m.kernel,
            m.node.as_deref().unwrap_or("-")
        );
        let _ = writeln!(
            s,
            "http run: wrk -t1 -c{} GET {PATH}; pinning {}; {} s after {} s warm-up; {} run(s) \
             per pairing, interleaved (median shown); total {:.0} s; load average {} at start, {} at end",
            self.conns,
            if self.pinning {
                "on (gateway and service share core 1, wrk on core 0)"
            } else {
                "off"
            },
            self.seconds,
            self.warmup,
            self.repeat,
            self.elapsed_s,
            m.load_start,
            self.load_end
        );
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "| pairing | req/s | p50 µs | p99 µs | bad responses | gateway CPU % | service CPU % | other CPU % (incl. wrk) | each run's req/s |"
        );
        let _ = writeln!(s, "|---|--:|--:|--:|--:|--:|--:|--:|---|");
        for r in &self.results {
            let rates: Vec<String> = r.rates.iter().map(|v| format!("{v:.0}")).collect();
            let _ = writeln!(
                s,
                "| {} | {:.0} | {} | {} | {} | {} | {} | {} | {} |",
                r.label,
                r.rate,
                opt(r.p50_us, 0),
                opt(r.p99_us, 0),
                r.bad,
                opt(r.gateway_cpu, 0),
                opt(r.service_cpu, 0),
                opt(r.other_cpu, 0),
                rates.join(" / ")
            );
        }
        let _ = writeln!(s);
        let _ = writeln!(s, "| comparison | rate ratio |");
        let _ = writeln!(s, "|---|--:|");
        for (label, v) in self.ratios() {
            let _ = writeln!(s, "| {label} | {} |", opt(v, 2));
        }
        for (label, why) in &self.skipped {
            let _ = writeln!(s, "- skipped {label}: {why}");
        }
        for r in &self.results {
            if let Some(e) = &r.error {
                let _ = writeln!(s, "- error, {}: {e}", r.label);
            }
        }
        s
    }

    fn json_text(&self) -> String {
        let m = &self.machine;
        let doc = json!({
            "mode": "http",
            "machine": {
                "nproc": m.nproc, "cpu": m.cpu, "kernel": m.kernel, "node": m.node,
                "load_average_start": m.load_start,
            },
            "nestling_rev": m.nestling_rev,
            "load_average_end": self.load_end,
            "pinning": self.pinning,
            "connections": self.conns,
            "seconds": self.seconds,
            "warmup_seconds": self.warmup,
            "runs_per_pairing": self.repeat,
            "elapsed_seconds": self.elapsed_s,
            "results": self.results.iter().map(|r| json!({
                "pairing": r.label, "rate_per_s": r.rate,
                "latency_us": {"p50": r.p50_us, "p99": r.p99_us},
                "requests": r.requests, "bad_responses": r.bad,
                "gateway_cpu_pct": r.gateway_cpu, "service_cpu_pct": r.service_cpu,
                "other_cpu_pct": r.other_cpu, "rate_of_each_run": r.rates, "error": r.error,
            })).collect::<Vec<Value>>(),
            "ratios": self.ratios().into_iter().map(|(l, v)| json!({"comparison": l, "rate_ratio": v})).collect::<Vec<Value>>(),
            "skipped": self.skipped.iter().map(|(l, w)| json!({"what": l, "reason": w})).collect::<Vec<Value>>(),
        });
        serde_json::to_string_pretty(&doc).expect("JSON") + "\n"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_wrk_output() {
        let text = "Running 5s test @ http://127.0.0.1:1/sum?num=1,2,3
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.31ms  200.00us   8.00ms   90.00%
    Req/Sec    24.40k     1.00k   26.00k    80.00%
  Latency Distribution
     50%    1.20ms
     75%    1.30ms
     90%    1.50ms
     99%   51.00ms
  121000 requests in 5.00s, 12.34MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 5
Requests/sec:  24202.50
Transfer/sec:      2.47MB
";
        assert_eq!(
            parse_wrk(text),
            Some(WrkOut {
                rate: 24202.5,
                p50_us: Some(1200.0),
                p99_us: Some(51000.0),
                requests: 121000,
                non_2xx: 5,
                socket_errors: 3,
            })
        );
        assert_eq!(duration_us("830.00us"), Some(830.0));
        assert_eq!(duration_us("1.50s"), Some(1.5e6));
        assert_eq!(parse_wrk("nothing"), None);
    }
}

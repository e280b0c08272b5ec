//! `--client`: the client side at its ceiling. One connection to a server with room to
//! spare (nestling's `user_service` on its own core, or a tarpc server there), driven from
//! the other core by: the raw load generator (pipelined frames, no client library),
//! `nestling::Client::send` (one task per call in flight), `nestling::Client::send_batch`
//! (two batches of half the calls in flight, alternating), and tarpc's generated client
//! (JSON codec, as Nest's wire; one task per call in flight) against a tarpc server doing
//! the same sum. tarpc's client and server are the `nestling-bench-tarpc` binary
//! (`bench/tarpc`): tarpc turns on tracing's `log` feature, which in this binary would
//! slow every nestling call measured here; its client runs on the same core as ours.
//!
//! What is compared is the generator's CPU per call: every driver runs in this process,
//! on one core, and the client library is what differs. When a driver saturates that
//! core, its rate is the client's ceiling; when it does not (the server is the limit),
//! CPU per call still says what one call costs the caller. The table gives both, and
//! the ratios the issue asks for: calls per generator CPU-second against the raw
//! generator's, and nestling's rate against tarpc's.

use std::sync::Arc;
use std::time::Duration;

use std::path::PathBuf;
use std::process::Command;

use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::loadgen::{self, Stats, SumRequest, Times};
use crate::procs::{self, ServerProc};
use crate::report::RunResult;

#[derive(Clone, Copy, PartialEq, Debug)]
enum Driver {
    Raw,
    Send,
    Batch,
    Tarpc,
}

impl Driver {
    fn label(self) -> &'static str {
        match self {
            Driver::Raw => "raw generator",
            Driver::Send => "nestling::Client send",
            Driver::Batch => "nestling::Client send_batch",
            Driver::Tarpc => "tarpc client (json)",
        }
    }
}

/// One measured run and what the table needs of it.
struct Row {
    driver: Driver,
    inflight: usize,
    result: RunResult,
}

impl Row {
    /// Generator CPU per call (µs).
    fn gen_us(&self) -> Option<f64> {
        let r = &self.result;
        let pct = r.gen_cpu_pct?;
        (r.rate > 0.0).then(|| pct / 100.0 / r.rate * 1e6)
    }
}

/// Runs every driver at each of `inflight`, `repeat` times interleaved, and prints the
/// table (medians by rate).
pub async fn run(
    nestling: Result<crate::cost::Launch, String>,
    pin: Option<&str>,
    inflight: &[usize],
    window: Duration,
    warmup: Duration,
    repeat: usize,
    build: bool,
) -> Result<(), String> {
    let nestling = nestling?;
    let ready = Duration::from_secs(30);
    let mut server = ServerProc::start(
        "nestling",
        &nestling.program,
        &nestling.args,
        nestling.cwd.as_deref(),
        pin,
        ready,
    )?;
    let peer = tarpc_binary(build)?;
    let mut tarpc = ServerProc::start("tarpc", &peer, &["server"], None, pin, ready)?;
    crate::settle().await;
    let ticks = procs::clock_ticks_per_sec();
    let mut rows: Vec<Row> = Vec::new();
    for &n in inflight {
        let mut runs: Vec<Vec<Row>> = Vec::new();
        for _ in 0..repeat.max(1) {
            let mut this = Vec::new();
            for driver in [Driver::Raw, Driver::Send, Driver::Batch, Driver::Tarpc] {
                let target = if driver == Driver::Tarpc {
                    &mut tarpc
                } else {
                    &mut server
                };
                let result = if driver == Driver::Tarpc {
                    run_tarpc(&peer, n, target, window, warmup, ticks).await
                } else {
                    run_one(driver, n, target, window, warmup, ticks).await
                };
                crate::report::print_progress(&result);
                this.push(Row {
                    driver,
                    inflight: n,
                    result,
                });
                crate::settle().await;
            }
            runs.push(this);
        }
        // Per driver, the run with the median rate.
        for i in 0..4 {
            let mut of_driver: Vec<Row> = runs.iter_mut().map(|r| r.remove(0)).collect();
            of_driver.sort_by(|a, b| a.result.rate.total_cmp(&b.result.rate));
            let rates: Vec<f64> = of_driver.iter().map(|r| r.result.rate).collect();
            let mut median = of_driver.swap_remove(of_driver.len() / 2);
            median.result.repeat_rates = rates;
            let _ = i;
            rows.push(median);
        }
    }
    print!("{}", table(&rows));
    Ok(())
}

async fn run_one(
    driver: Driver,
    inflight: usize,
    server: &mut ServerProc,
    window: Duration,
    warmup: Duration,
    ticks: f64,
) -> RunResult {
    let addr = server.addr();
    let mut result = RunResult::new("client", 'k', driver.label(), 1, inflight);
    let start = Instant::now();
    let t = Times {
        measure_start: start + warmup,
        end: start + warmup + window,
        drain_deadline: start + warmup + window + Duration::from_secs(5),
        limit: u64::MAX,
    };
    let mut set: JoinSet<Stats> = JoinSet::new();
    match driver {
        Driver::Raw => match loadgen::connect(&addr).await {
            Ok(stream) => {
                let req = Arc::new(SumRequest::small());
                set.spawn(loadgen::request_worker(stream, req, inflight, t));
            }
            Err(e) => {
                result.fail(format!("connect: {e}"));
                return result;
            }
        },
        Driver::Send | Driver::Batch => {
            let client = nestling::Client::new(addr);
            if let Err(e) = client.connect().await {
                result.fail(format!("connect: {e}"));
                return result;
            }
            if driver == Driver::Send {
                for _ in 0..inflight {
                    set.spawn(loadgen::client_worker(client.clone(), t));
                }
            } else {
                let per_batch = (inflight / 2).max(1);
                for _ in 0..inflight.div_ceil(per_batch) {
                    set.spawn(batch_worker(client.clone(), per_batch, t));
                }
            }
        }
        Driver::Tarpc => unreachable!("tarpc's client runs in its own process"),
    }
    let (stats, _) = crate::measure(server, &mut set, t, ticks, &mut result).await;
    result.finish(stats, window.as_secs_f64());
    if let Some(status) = server.exited() {
        result.fail(format!("server exited ({status})"));
    }
    result
}

/// One caller looping `client.send_batch("sum", [[1,2,3]; batch])`; each call of a batch
/// is counted with the batch's latency.
async fn batch_worker(client: nestling::Client, batch: usize, t: Times) -> Stats {
    let mut st = Stats::new();
    let data = vec![[1i64, 2, 3]; batch];
    loop {
        let t0 = Instant::now();
        if t0 >= t.end {
            return st;
        }
        let sent = client.send_batch::<_, _, i64>("sum", &data);
        match tokio::time::timeout_at(t.drain_deadline, sent).await {
            Ok(Ok(replies)) => {
                let now = Instant::now();
                let ok = replies.iter().filter(|r| matches!(r, Ok(6))).count() as u64;
                if ok < batch as u64 {
                    st.error(batch as u64 - ok, || {
                        format!(
                            "wrong or failed reply in a batch: {:?}",
                            replies.iter().find(|r| !matches!(r, Ok(6)))
                        )
                    });
                }
                if t.in_window(now) {
                    st.completed += ok;
                    let us = now.duration_since(t0).as_nanos() as u64;
                    st.hist.saturating_record_n(us, ok);
                }
            }
            Ok(Err(e)) => st.error(batch as u64, || format!("batch failed: {e}")),
            Err(_) => {
                st.error(batch as u64, || "no reply before the drain deadline".into());
                return st;
            }
        }
    }
}

/// tarpc's client in `nestling-bench-tarpc drive`, on this core (the child inherits the
/// pinning); its own CPU and rate are what it reports, the server's CPU is read here over
/// the child's whole run.
async fn run_tarpc(
    peer: &std::path::Path,
    inflight: usize,
    server: &mut ServerProc,
    window: Duration,
    warmup: Duration,
    ticks: f64,
) -> RunResult {
    let mut result = RunResult::new("client", 'k', Driver::Tarpc.label(), 1, inflight);
    let srv0 = server.cpu_ticks();
    let wall0 = Instant::now();
    let out = tokio::process::Command::new(peer)
        .args([
            "drive".to_string(),
            server.addr(),
            inflight.to_string(),
            window.as_secs_f64().to_string(),
            warmup.as_secs_f64().to_string(),
        ])
        .output()
        .await;
    let srv1 = server.cpu_ticks();
    let wall = wall0.elapsed().as_secs_f64();
    let out = match out {
        Ok(out) if out.status.success() => out,
        Ok(out) => {
            result.fail(format!(
                "tarpc driver: {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
            return result;
        }
        Err(e) => {
            result.fail(format!("tarpc driver: {e}"));
            return result;
        }
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(fields) = text.lines().find_map(|l| l.strip_prefix("RESULT ")) else {
        result.fail(format!("tarpc driver printed no result: {text}"));
        return result;
    };
    let v: Vec<f64> = fields
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    let [calls, p50, p99, errors, cpu, secs] = v[..] else {
        result.fail(format!("tarpc driver: unreadable result {fields}"));
        return result;
    };
    result.completed = calls as u64;
    result.rate = calls / secs;
    result.p50_us = Some(p50);
    result.p99_us = Some(p99);
    result.errors = errors as u64;
    if errors > 0.0 {
        result.first_error = Some(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    result.gen_cpu_pct = Some(cpu / ticks / secs * 100.0);
    result.server_cpu_pct = match (srv0, srv1) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a) as f64 / ticks / wall * 100.0),
        _ => None,
    };
    result
}

/// The `nestling-bench-tarpc` binary, built first unless `--no-build`.
fn tarpc_binary(build: bool) -> Result<PathBuf, String> {
    let bin = procs::target_dir().join("release/nestling-bench-tarpc");
    if build || !bin.exists() {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        eprintln!("building: cargo build --release -p nestling-bench-tarpc");
        let status = Command::new(cargo)
            .args([
                "build",
                "--release",
                "--quiet",
                "-p",
                "nestling-bench-tarpc",
            ])
            .current_dir(procs::workspace_root())
            .status()
            .map_err(|e| format!("cannot run cargo: {e}"))?;
        if !status.success() {
            return Err(format!(
                "cargo build of nestling-bench-tarpc failed: {status}"
            ));
        }
    }
    Ok(bin)
}

/// The table: per in-flight count and driver, rate, latency, CPU, and the ratios.
fn table(rows: &[Row]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n| in flight | driver | req/s | p50 µs | p99 µs | generator CPU % | generator µs/call | server CPU % | calls per gen CPU-s vs raw | rate vs tarpc | runs (req/s) |"
    );
    let _ = writeln!(
        out,
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    );
    for row in rows {
        let r = &row.result;
        let same = |d: Driver| {
            rows.iter()
                .find(|o| o.inflight == row.inflight && o.driver == d)
        };
        let vs_raw = match (row.gen_us(), same(Driver::Raw).and_then(Row::gen_us)) {
            (Some(me), Some(raw)) if me > 0.0 => format!("{:.2}×", raw / me),
            _ => "-".into(),
        };
        let vs_tarpc = match same(Driver::Tarpc) {
            Some(t) if t.result.rate > 0.0 && row.driver != Driver::Tarpc => {
                format!("{:.2}×", r.rate / t.result.rate)
            }
            _ => "-".into(),
        };
        let f = |v: Option<f64>, digits: usize| v.map_or("-".into(), |v| format!("{v:.digits$}"));
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} |",
            row.inflight,
            row.driver.label(),
            r.rate,
            f(r.p50_us, 0),
            f(r.p99_us, 0),
            f(r.gen_cpu_pct, 0),
            f(row.gen_us(), 2),
            f(r.server_cpu_pct, 0),
            vs_raw,
            vs_tarpc,
            r.repeat_rates
                .iter()
                .map(|v| format!("{v:.0}"))
                .collect::<Vec<_>>()
                .join(" / "),
        );
        if let Some(e) = &r.first_error {
            let _ = writeln!(
                out,
                "|   | ↳ {} errors, first: {e} | | | | | | | | | |",
                r.errors
            );
        }
    }
    out
}

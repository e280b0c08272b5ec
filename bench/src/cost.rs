//! The cost mode (`--cost`): user-space CPU instructions per request / per event, counted
//! by valgrind's callgrind on a fixed number of requests, so that runs can be compared
//! without wall-clock noise.
//!
//! For every server: start it under `valgrind --tool=callgrind` (pinned like the timed
//! runs), and per scenario open the connections, drive `warmup` requests (or events) with
//! the ordinary load generator, zero callgrind's counters (`vgdb … zero`), then drive two
//! measured phases of `n` each, dumping the counters after each (`vgdb … dump`). A dump
//! holds the instructions (`Ir`) every thread of the server executed since the previous
//! zero/dump, so start-up, connection set-up and warm-up are excluded without any
//! instrumentation toggles in the servers. The figure is the mean of the two phases
//! divided by `n`; the difference between the phases is reported as the spread (a check
//! of repeatability). The dumps are kept as callgrind profiles for `callgrind_annotate`.
//!
//! Callgrind counts instructions executed in user space only: time in the kernel
//! (syscalls, TCP, wake-ups) is not in the figure.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::loadgen::{self, Stats, SumRequest, Times};
use crate::procs::ServerProc;
use crate::report::{write_notes, Machine};
use crate::{Load, Scenario};

/// How a server is started (shared with the timed mode).
pub struct Launch {
    pub program: PathBuf,
    pub args: Vec<&'static str>,
    pub cwd: Option<PathBuf>,
}

/// Each wanted server's label and how to start it, or why it cannot be.
pub type Launches = Vec<(&'static str, Result<Launch, String>)>;

/// What the cost mode drives.
pub struct CostConfig {
    /// Requests per measured phase (request scenarios).
    pub requests: u64,
    /// Events per measured phase (events scenario).
    pub events: u64,
    /// Requests or events before the counters are zeroed.
    pub warmup: u64,
    /// Where the callgrind profiles go.
    pub dir: PathBuf,
    /// CPUs for the servers, if pinning is on.
    pub pin: Option<&'static str>,
}

/// Number of measured phases per scenario and server.
const PHASES: usize = 2;

/// One scenario against one server.
pub struct CostResult {
    pub scenario: &'static str,
    pub letter: char,
    pub server: String,
    /// `request` or `event`.
    pub unit: &'static str,
    pub conns: usize,
    pub inflight: usize,
    /// Requests or events per measured phase.
    pub per_phase: u64,
    pub warmup: u64,
    /// Instructions (Ir) of each measured phase, whole server process.
    pub phase_ir: Vec<u64>,
    /// The callgrind profile of each measured phase.
    pub profiles: Vec<PathBuf>,
    /// Wall time of the measured phases (under valgrind: only a sanity figure).
    pub wall_s: f64,
    pub errors: u64,
    pub first_error: Option<String>,
}

impl CostResult {
    fn fail(&mut self, why: String) {
        self.errors += 1;
        self.first_error.get_or_insert(why);
    }

    fn phase_per_unit(&self) -> Vec<f64> {
        self.phase_ir
            .iter()
            .map(|&ir| ir as f64 / self.per_phase as f64)
            .collect()
    }

    /// Mean instructions per request / event over the measured phases.
    pub fn per_unit(&self) -> Option<f64> {
        if self.phase_ir.len() != PHASES || self.errors > 0 || self.per_phase == 0 {
            return None;
        }
        let v = self.phase_per_unit();
        Some(v.iter().sum::<f64>() / v.len() as f64)
    }

    /// (max - min) / mean of the phases, in %.
    pub fn spread_pct(&self) -> Option<f64> {
        let mean = self.per_unit()?;
        let v = self.phase_per_unit();
        let max = v.iter().cloned().fold(f64::MIN, f64::max);
        let min = v.iter().cloned().fold(f64::MAX, f64::min);
        Some((max - min) / mean * 100.0)
    }

    fn shape(&self) -> String {
        if self.unit == "event" {
            format!("{}c ev/{}", self.conns, self.inflight)
        } else {
            format!("{}x{}", self.conns, self.inflight)
        }
    }
}

/// `valgrind --version`, or why valgrind cannot be used.
pub fn valgrind_version() -> Result<String, String> {
    let out = Command::new("valgrind")
        .arg("--version")
        .output()
        .map_err(|e| format!("valgrind not found ({e}); install it (apt-get install valgrind)"))?;
    let vgdb = Command::new("vgdb").arg("--help").output();
    if vgdb.is_err() {
        return Err("vgdb (part of valgrind) not found".into());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Removes what earlier runs (or a killed valgrind) left in `dir` for the servers
/// `labels`: vgdb FIFOs, raw dumps and (unless `only_raw`) the kept profiles.
fn clean_dir(dir: &Path, labels: &[&str], only_raw: bool) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let ours = name.starts_with("vgdb-pipe")
            || labels.iter().any(|l| {
                name.starts_with(&format!("callgrind.{l}."))
                    || (!only_raw
                        && name.starts_with(&format!("{l}-"))
                        && name.ends_with(".callgrind"))
            });
        if ours {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// A server running under callgrind, and the dumps taken from it so far.
struct Profiled {
    proc: ServerProc,
    label: &'static str,
    dir: PathBuf,
    dumps: u32,
    /// `instrumentation on` was sent.
    instrumented: bool,
}

impl Profiled {
    fn vgdb_prefix(&self) -> PathBuf {
        self.dir.join("vgdb-pipe")
    }

    /// Sends a callgrind monitor command (`zero`, `dump`) through vgdb and waits for it.
    fn command(&self, what: &str) -> Result<(), String> {
        let out = Command::new("vgdb")
            .arg(format!("--vgdb-prefix={}", self.vgdb_prefix().display()))
            .arg(format!("--pid={}", self.proc.pid))
            .args(what.split_whitespace())
            // The FIFO names contain $HOST; the server got HOST=127.0.0.1.
            .env("HOST", "127.0.0.1")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run vgdb: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "vgdb {what} failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout).trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// Dumps the counters, waits for the file, moves it to `<label>-<scenario>-<k>.callgrind`
    /// and returns its path and total Ir.
    async fn dump(&mut self, scenario: &str, phase: usize) -> Result<(PathBuf, u64), String> {
        self.command("dump")?;
        self.dumps += 1;
        let file = self.dir.join(format!(
            "callgrind.{}.{}.{}",
            self.label, self.proc.pid, self.dumps
        ));
        let until = Instant::now() + Duration::from_secs(30);
        let total = loop {
            if let Some(t) = std::fs::read_to_string(&file)
                .ok()
                .and_then(|text| totals(&text))
            {
                break t;
            }
            if Instant::now() > until {
                return Err(format!("{}: no complete dump", file.display()));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let dest = self
            .dir
            .join(format!("{}-{scenario}-phase{phase}.callgrind", self.label));
        std::fs::rename(&file, &dest)
            .map_err(|e| format!("cannot move {}: {e}", file.display()))?;
        Ok((dest, total))
    }
}

/// The `totals:` line of a callgrind profile (its last line, so the file is complete):
/// total Ir.
fn totals(text: &str) -> Option<u64> {
    text.lines()
        .rev()
        .find_map(|l| l.strip_prefix("totals:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Runs the cost measurement of `scenarios` on every launchable server, one server at a
/// time. `skipped` collects servers that could not be measured.
pub async fn run(
    launches: Launches,
    scenarios: &[&Scenario],
    cfg: &CostConfig,
    skipped: &mut Vec<(String, String)>,
) -> Result<Vec<CostResult>, String> {
    std::fs::create_dir_all(&cfg.dir)
        .map_err(|e| format!("cannot create {}: {e}", cfg.dir.display()))?;
    let labels: Vec<&str> = launches.iter().map(|(l, _)| *l).collect();
    clean_dir(&cfg.dir, &labels, false);
    let mut results = Vec::new();
    for (label, launch) in launches {
        let launch = match launch {
            Ok(l) => l,
            Err(why) => {
                println!("server {label:<9} SKIPPED: {why}");
                skipped.push((label.to_string(), why));
                continue;
            }
        };
        let mut wrapper = vec![
            "valgrind".to_string(),
            "--tool=callgrind".to_string(),
            "--quiet".to_string(),
            format!(
                "--callgrind-out-file={}",
                cfg.dir.join(format!("callgrind.{label}.%p")).display()
            ),
            // Start-up runs without instrumentation (node starts in ~10 s instead of
            // ~35 s); it is switched on once the connections are open.
            "--instr-atstart=no".to_string(),
            "--vgdb=yes".to_string(),
            format!("--vgdb-prefix={}", cfg.dir.join("vgdb-pipe").display()),
        ];
        // Extra callgrind options, e.g. `--cache-sim=yes` for instruction-cache misses
        // (the profiles' `summary:` line then has I1mr; see PROFILE.md).
        if let Ok(extra) = std::env::var("NESTLING_BENCH_CALLGRIND_ARGS") {
            wrapper.extend(extra.split_whitespace().map(str::to_string));
        }
        let t0 = std::time::Instant::now();
        // node needs ~30 s to start under valgrind.
        let started = ServerProc::start_wrapped(
            label,
            &wrapper,
            &launch.program,
            &launch.args,
            launch.cwd.as_deref(),
            &[],
            cfg.pin,
            Duration::from_secs(240),
        );
        let proc = match started {
            Ok(p) => p,
            Err(why) => {
                println!("server {label:<9} SKIPPED: {why}");
                skipped.push((label.to_string(), why));
                continue;
            }
        };
        println!(
            "server {label:<9} pid {:<7} port {} (under callgrind, ready after {:.1} s)",
            proc.pid,
            proc.port,
            t0.elapsed().as_secs_f64()
        );
        let mut server = Profiled {
            proc,
            label,
            dir: cfg.dir.clone(),
            dumps: 0,
            instrumented: false,
        };
        for sc in scenarios {
            let r = measure(&mut server, sc, cfg).await;
            print_progress(&r);
            results.push(r);
            if let Some(status) = server.proc.exited() {
                println!("   {label} has exited ({status}); skipping its other scenarios");
                break;
            }
        }
        server.proc.terminate(Duration::from_secs(20));
        drop(server.proc);
        // FIFOs, and the final dump valgrind writes at exit (not needed).
        clean_dir(&cfg.dir, &[label], true);
    }
    Ok(results)
}

fn print_progress(r: &CostResult) {
    let phases: Vec<String> = r
        .phase_per_unit()
        .iter()
        .map(|v| format!("{v:.0}"))
        .collect();
    println!(
        "   {:<9} {:>10} Ir/{}  (phases: {}; spread {} %; {} {}s per phase; {:.1} s)  errors {}",
        r.server,
        opt(r.per_unit(), 0),
        r.unit,
        phases.join(", "),
        opt(r.spread_pct(), 2),
        r.per_phase,
        r.unit,
        r.wall_s,
        r.errors
    );
    if let Some(e) = &r.first_error {
        println!("      first error: {e}");
    }
}

/// Rounds `total` up to whole units of `per_conn_unit × conns`; returns (per connection
/// count of units, total items).
fn split(total: u64, conns: usize, unit: u64) -> (u64, u64) {
    let per = unit * conns as u64;
    let n = total.div_ceil(per).max(1);
    (n, n * per)
}

/// Warm-up, zero, and [`PHASES`] measured phases of one scenario on one server.
async fn measure(server: &mut Profiled, sc: &Scenario, cfg: &CostConfig) -> CostResult {
    let (conns, inflight, batch, unit, total, req) = match sc.load {
        Load::Requests {
            conns,
            inflight,
            bytes,
        } => {
            let req = if bytes == 0 {
                SumRequest::small()
            } else {
                SumRequest::of_size(bytes)
            };
            (conns, inflight, 1, "request", cfg.requests, req)
        }
        Load::Events { conns, batch, .. } => (
            conns,
            batch,
            batch,
            "event",
            cfg.events,
            SumRequest::small(),
        ),
        Load::Client { .. }
        | Load::RmqRequests { .. }
        | Load::RmqClient { .. }
        | Load::NatsRequests { .. } => {
            unreachable!("client, RabbitMQ and NATS scenarios are filtered out")
        }
    };
    let (per_conn, per_phase) = split(total, conns, batch as u64);
    let (warm_per_conn, warmup) = split(cfg.warmup, conns, batch as u64);
    let mut r = CostResult {
        scenario: sc.name,
        letter: sc.letter,
        server: server.label.to_string(),
        unit,
        conns,
        inflight,
        per_phase,
        warmup,
        phase_ir: Vec::new(),
        profiles: Vec::new(),
        wall_s: 0.0,
        errors: 0,
        first_error: None,
    };
    let req = Arc::new(req);
    let addr = server.proc.addr();
    let mut streams = Vec::new();
    for _ in 0..conns {
        match loadgen::connect(&addr).await {
            Ok(s) => streams.push(s),
            Err(e) => {
                r.fail(format!("connect: {e}"));
                return r;
            }
        }
    }
    if !server.instrumented {
        if let Err(e) = server.command("instrumentation on") {
            r.fail(e);
            return r;
        }
        server.instrumented = true;
    }
    // Quiet events are counted by the server, not printed: read its count before and after
    // all phases (outside the measured phases: the query is a connection of its own).
    let quiet = matches!(sc.load, Load::Events { quiet: true, .. });
    let tally_before = if quiet {
        match loadgen::tallied(&addr).await {
            Ok(n) => Some(n),
            Err(e) => {
                r.fail(e);
                return r;
            }
        }
    } else {
        None
    };
    let mut tally_sent = 0;
    // Phase 0 is the warm-up; the counters are zeroed after it.
    for phase in 0..=PHASES {
        let count = if phase == 0 { warm_per_conn } else { per_conn };
        let lines_before = server.proc.event_lines();
        let t0 = std::time::Instant::now();
        let (back, stats) = drive(streams, sc.load, req.clone(), count).await;
        streams = back;
        if stats.errors > 0 || streams.len() != conns {
            r.fail(
                stats
                    .first_error
                    .unwrap_or_else(|| "a connection was lost".into()),
            );
            return r;
        }
        tally_sent += stats.events_sent;
        if let Load::Events { quiet: false, .. } = sc.load {
            // The barrier proves the events were read, not that their handlers have run:
            // wait until the server has printed every one of them.
            let want = lines_before + stats.events_sent;
            let until = Instant::now() + Duration::from_secs(120);
            while server.proc.event_lines() < want && Instant::now() < until {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let got = server.proc.event_lines() - lines_before;
            if got != stats.events_sent {
                r.fail(format!("events: sent {}, printed {got}", stats.events_sent));
                return r;
            }
        }
        // Let the server go idle (it may still be finishing the last read).
        tokio::time::sleep(Duration::from_millis(100)).await;
        if phase > 0 {
            r.wall_s += t0.elapsed().as_secs_f64();
        }
        let done = if phase == 0 {
            server.command("zero").map(|()| None)
        } else {
            server.dump(sc.name, phase).await.map(Some)
        };
        match done {
            Ok(None) => {}
            Ok(Some((path, ir))) => {
                r.phase_ir.push(ir);
                r.profiles.push(path);
            }
            Err(e) => {
                r.fail(e);
                return r;
            }
        }
    }
    if let Some(before) = tally_before {
        match loadgen::tallied(&addr).await {
            Ok(n) if n - before == tally_sent => {}
            Ok(n) => r.fail(format!("events: sent {tally_sent}, counted {}", n - before)),
            Err(e) => r.fail(e),
        }
    }
    r
}

/// Drives `count` requests (events: batches) on every stream, each stream on its own
/// task, and hands the streams back for the next phase.
async fn drive(
    streams: Vec<TcpStream>,
    load: Load,
    req: Arc<SumRequest>,
    count: u64,
) -> (Vec<TcpStream>, Stats) {
    let start = Instant::now();
    // Under valgrind the servers are ~50x slower: the deadline is only a hang guard.
    let far = start + Duration::from_secs(600);
    let t = Times {
        measure_start: start,
        end: far,
        drain_deadline: far,
        limit: count,
    };
    let mut set: JoinSet<(TcpStream, Stats)> = JoinSet::new();
    for mut s in streams {
        let req = req.clone();
        set.spawn(async move {
            let st = match load {
                Load::Requests { inflight, .. } => {
                    loadgen::request_loop(&mut s, &req, inflight, t).await
                }
                Load::Events {
                    batch,
                    outstanding,
                    quiet,
                    ..
                } => loadgen::events_loop(&mut s, batch, outstanding, quiet, t).await,
                Load::Client { .. }
                | Load::RmqRequests { .. }
                | Load::RmqClient { .. }
                | Load::NatsRequests { .. } => Stats::new(),
            };
            (s, st)
        });
    }
    let mut back = Vec::new();
    let mut stats = Stats::new();
    while let Some(j) = set.join_next().await {
        match j {
            Ok((s, st)) => {
                back.push(s);
                stats.merge(st);
            }
            Err(e) => {
                stats.errors += 1;
                stats
                    .first_error
                    .get_or_insert_with(|| format!("worker failed: {e}"));
            }
        }
    }
    (back, stats)
}

fn opt(v: Option<f64>, prec: usize) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.prec$}"))
}

/// `a / b` of the per-unit figures, for every scenario where both exist.
fn ratios(results: &[CostResult]) -> Vec<(&'static str, &'static str, f64)> {
    let find = |sc: &str, server: &str| {
        results
            .iter()
            .find(|r| r.scenario == sc && r.server == server)
            .and_then(CostResult::per_unit)
    };
    let mut out = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    for r in results {
        if seen.contains(&r.scenario) {
            continue;
        }
        seen.push(r.scenario);
        let Some(n) = find(r.scenario, "nestling") else {
            continue;
        };
        for (other, label) in [
            ("ceiling", "nestling / ceiling"),
            ("nest", "nestling / Nest"),
        ] {
            if let Some(o) = find(r.scenario, other).filter(|&o| o > 0.0) {
                out.push((r.scenario, label, n / o));
            }
        }
    }
    out
}

/// Everything one cost run produced.
pub struct CostSummary {
    pub machine: Machine,
    pub valgrind: String,
    pub pinning: bool,
    pub requests: u64,
    pub events: u64,
    pub warmup: u64,
    pub dir: PathBuf,
    pub elapsed_s: f64,
    pub results: Vec<CostResult>,
    pub skipped: Vec<(String, String)>,
}

impl CostSummary {
    pub fn table(&self) -> String {
        let mut s = String::new();
        let m = &self.machine;
        let _ = writeln!(
            s,
            "nestling {}; {}; machine: {} CPUs, {}, Linux {}, node {}",
            m.nestling_rev,
            self.valgrind,
            m.nproc,
            m.cpu,
            m.kernel,
            m.node.as_deref().unwrap_or("-"),
        );
        let _ = writeln!(
            s,
            "cost run: callgrind Ir (user-space instructions, all threads of the server) per \
             request / event; {} phases of {} requests or {} events after {} warm-up; \
             pinning {}; total {:.0} s",
            PHASES,
            self.requests,
            self.events,
            self.warmup,
            if self.pinning { "on" } else { "off" },
            self.elapsed_s
        );
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "| scenario | server | shape | per phase | Ir per unit, each phase | Ir per unit | spread % | errors |"
        );
        let _ = writeln!(s, "|---|---|---|--:|--:|--:|--:|--:|");
        for r in &self.results {
            let phases: Vec<String> = r
                .phase_per_unit()
                .iter()
                .map(|v| format!("{v:.0}"))
                .collect();
            let _ = writeln!(
                s,
                "| {} {} | {} | {} | {} {}s | {} | {} /{} | {} | {} |",
                r.letter,
                r.scenario,
                r.server,
                r.shape(),
                r.per_phase,
                r.unit,
                phases.join(", "),
                opt(r.per_unit(), 0),
                r.unit,
                opt(r.spread_pct(), 2),
                r.errors
            );
        }
        let ratios = ratios(&self.results);
        if !ratios.is_empty() {
            let _ = writeln!(s);
            let _ = writeln!(s, "| scenario | comparison | Ir ratio |");
            let _ = writeln!(s, "|---|---|--:|");
            for (sc, label, v) in ratios {
                let _ = writeln!(s, "| {sc} | {label} | {v:.2} |");
            }
        }
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "- profiles (one per measured phase) in {}; e.g. `callgrind_annotate --inclusive=yes <file>`",
            self.dir.display()
        );
        write_notes(
            &mut s,
            &self.skipped,
            self.results
                .iter()
                .map(|r| (r.scenario, r.server.as_str(), r.first_error.as_deref())),
        );
        s
    }

    pub fn json_text(&self) -> String {
        let m = &self.machine;
        let results: Vec<Value> = self
            .results
            .iter()
            .map(|r| {
                let phases: Vec<Value> = r
                    .phase_ir
                    .iter()
                    .zip(&r.profiles)
                    .map(|(ir, p)| {
                        json!({
                            "ir": ir,
                            "ir_per_unit": *ir as f64 / r.per_phase as f64,
                            "profile": p.display().to_string(),
                        })
                    })
                    .collect();
                json!({
                    "scenario": r.scenario,
                    "letter": r.letter.to_string(),
                    "server": r.server,
                    "unit": r.unit,
                    "connections": r.conns,
                    "in_flight": if r.unit == "event" { Value::Null } else { json!(r.inflight) },
                    "event_batch": if r.unit == "event" { json!(r.inflight) } else { Value::Null },
                    "per_phase": r.per_phase,
                    "warmup": r.warmup,
                    "phases": phases,
                    "ir_per_unit": r.per_unit(),
                    "spread_pct": r.spread_pct(),
                    "wall_seconds": r.wall_s,
                    "errors": r.errors,
                    "first_error": r.first_error,
                })
            })
            .collect();
        let ratios: Vec<Value> = ratios(&self.results)
            .into_iter()
            .map(|(sc, label, v)| json!({"scenario": sc, "comparison": label, "ir_ratio": v}))
            .collect();
        let doc = json!({
            "mode": "cost",
            "machine": {
                "nproc": m.nproc, "cpu": m.cpu, "kernel": m.kernel, "node": m.node,
                "load_average_start": m.load_start,
            },
            "nestling_rev": m.nestling_rev,
            "valgrind": self.valgrind,
            "pinning": self.pinning,
            "requests_per_phase": self.requests,
            "events_per_phase": self.events,
            "warmup": self.warmup,
            "phases": PHASES,
            "profile_dir": self.dir.display().to_string(),
            "elapsed_seconds": self.elapsed_s,
            "results": results,
            "ratios": ratios,
            "skipped": self.skipped.iter().map(|(l, w)| json!({"server": l, "reason": w})).collect::<Vec<_>>(),
        });
        serde_json::to_string_pretty(&doc).expect("JSON") + "\n"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_line() {
        let text = "version: 1\nevents: Ir\nsummary: 1234\n\nfn=(1) main\n5 10\ntotals: 1234\n";
        assert_eq!(totals(text), Some(1234));
        assert_eq!(totals("events: Ir\nsummary: 5\nfn=(1)\n"), None);
    }

    #[test]
    fn counts_round_up_to_whole_batches() {
        assert_eq!(split(20_000, 4, 1), (5_000, 20_000));
        assert_eq!(split(20_001, 4, 1), (5_001, 20_004));
        assert_eq!(split(20_000, 4, 512), (10, 20_480));
        assert_eq!(split(0, 4, 512), (1, 2_048));
    }
}

//! Results: one [`RunResult`] per scenario × server, the stdout table and the JSON file.

use std::fmt::Write as _;

use serde_json::{json, Value};

use crate::loadgen::Stats;

/// The machine the run happened on.
#[derive(Debug, Clone)]
pub struct Machine {
    pub nproc: usize,
    pub cpu: String,
    pub kernel: String,
    pub node: Option<String>,
    /// `/proc/loadavg` (1, 5, 15 min) when the bench started: other load skews results.
    pub load_start: String,
    /// The nestling revision measured: `git` HEAD, `+dirty` if the library sources differ.
    pub nestling_rev: String,
}

/// `git rev-parse --short HEAD` of the workspace, `+dirty` when `src/`, `runtime/`,
/// `macros/` or `examples/` have uncommitted changes.
fn nestling_rev() -> String {
    let root = crate::procs::workspace_root();
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(&root)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let Some(head) = git(&["rev-parse", "--short", "HEAD"]) else {
        return "unknown".into();
    };
    let dirty = git(&[
        "status",
        "--porcelain",
        "--",
        "src",
        "runtime",
        "macros",
        "examples",
    ])
    .is_some_and(|s| !s.is_empty());
    if dirty {
        format!("{head}+dirty")
    } else {
        head
    }
}

/// The 1/5/15-minute load averages.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|t| t.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

impl Machine {
    /// Call before pinning (pinning changes what `available_parallelism` reports).
    pub fn detect() -> Machine {
        let nproc = std::thread::available_parallelism().map_or(1, |n| n.get());
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|t| {
                t.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split(':').nth(1))
                    .map(|s| s.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".into());
        let node = std::process::Command::new("node")
            .arg("--version")
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
        Machine {
            nproc,
            cpu,
            kernel,
            node,
            load_start: load_average(),
            nestling_rev: nestling_rev(),
        }
    }
}

/// `sent` events vs lines the server printed for them.
#[derive(Debug, Clone, Copy)]
pub struct EventCheck {
    pub sent: u64,
    pub printed: u64,
}

/// One scenario against one server (or one client driver).
#[derive(Debug, Clone)]
pub struct RunResult {
    pub scenario: &'static str,
    pub letter: char,
    pub server: String,
    pub conns: usize,
    pub inflight: usize,
    pub payload_bytes: usize,
    pub completed: u64,
    pub rate: f64,
    pub p50_us: Option<f64>,
    pub p99_us: Option<f64>,
    pub p999_us: Option<f64>,
    pub max_us: Option<f64>,
    pub errors: u64,
    pub first_error: Option<String>,
    pub server_cpu_pct: Option<f64>,
    pub gen_cpu_pct: Option<f64>,
    /// CPU used by everything else during the window (% of one core, all cores summed).
    pub other_cpu_pct: Option<f64>,
    pub peak_rss_kib: Option<u64>,
    /// The server's sleeps (voluntary context switches) per 100 requests or events,
    /// during the window.
    pub sleeps_per_100: Option<f64>,
    pub events: Option<EventCheck>,
    /// With `--repeat`: the rate of every run of this scenario and server, in run order
    /// (this result is the median one; its errors and events are summed over all runs).
    pub repeat_rates: Vec<f64>,
}

impl RunResult {
    pub fn new(
        scenario: &'static str,
        letter: char,
        server: &str,
        conns: usize,
        inflight: usize,
    ) -> Self {
        RunResult {
            scenario,
            letter,
            server: server.to_string(),
            conns,
            inflight,
            payload_bytes: 0,
            completed: 0,
            rate: 0.0,
            p50_us: None,
            p99_us: None,
            p999_us: None,
            max_us: None,
            errors: 0,
            first_error: None,
            server_cpu_pct: None,
            gen_cpu_pct: None,
            other_cpu_pct: None,
            peak_rss_kib: None,
            sleeps_per_100: None,
            events: None,
            repeat_rates: Vec::new(),
        }
    }

    pub fn fail(&mut self, why: String) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(why);
        }
    }

    pub fn finish(&mut self, stats: Stats, window_s: f64) {
        self.completed = stats.completed;
        self.rate = stats.completed as f64 / window_s;
        self.errors += stats.errors;
        if self.first_error.is_none() {
            self.first_error = stats.first_error;
        }
        if !stats.hist.is_empty() {
            let us = |ns: u64| ns as f64 / 1000.0;
            self.p50_us = Some(us(stats.hist.value_at_quantile(0.50)));
            self.p99_us = Some(us(stats.hist.value_at_quantile(0.99)));
            self.p999_us = Some(us(stats.hist.value_at_quantile(0.999)));
            self.max_us = Some(us(stats.hist.max()));
        }
        if let Some(ev) = self.events {
            let lost = ev.sent.saturating_sub(ev.printed);
            if lost > 0 {
                self.fail(format!(
                    "{lost} of {} events never handled by the server",
                    ev.sent
                ));
                self.errors += lost - 1;
            }
        }
    }

    /// The server's CPU time per request (or event) in the window, in µs: its cost, which
    /// stays readable when something else (over RabbitMQ, the broker) limits the rate.
    pub fn server_cpu_us_per_unit(&self) -> Option<f64> {
        let cpu = self.server_cpu_pct?;
        (self.rate > 0.0).then(|| cpu / 100.0 / self.rate * 1e6)
    }

    fn shape(&self) -> String {
        match self.events {
            Some(_) => format!("{}c ev/512", self.conns),
            None => format!("{}x{}", self.conns, self.inflight),
        }
    }
}

/// `a / b` for one scenario: throughput and median latency.
struct Ratio {
    scenario: &'static str,
    label: &'static str,
    rate_a: f64,
    rate_b: f64,
    rate: Option<f64>,
    p50: Option<f64>,
}

/// Everything one run of the bench produced.
pub struct Summary {
    pub machine: Machine,
    pub pinning: bool,
    /// The servers' CPU list when pinned (`1`, or `0,1` with `--server-cores 2`).
    pub server_cpus: &'static str,
    pub seconds: f64,
    pub warmup: f64,
    /// Runs per scenario and server (`--repeat`).
    pub repeat: usize,
    pub elapsed_s: f64,
    pub load_end: String,
    pub results: Vec<RunResult>,
    pub skipped: Vec<(String, String)>,
    pub peak_rss_kib: Vec<(String, Option<u64>)>,
    /// RSS of each server once started, before any load.
    pub idle_rss_kib: Vec<(String, Option<u64>)>,
}

fn opt(v: Option<f64>, prec: usize) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.prec$}"))
}

fn rss(kib: Option<u64>) -> String {
    kib.map_or_else(|| "-".into(), |k| format!("{:.1}", k as f64 / 1024.0))
}

/// `a / b`, if both exist and `b > 0`.
fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

/// One progress line while the bench runs.
/// One result per server (or client driver) from repeated runs of one scenario: the run
/// with the median rate, carrying every run's rate, and the errors and event counts of all
/// runs (a loss in any run must show).
pub fn medians(runs: Vec<RunResult>) -> Vec<RunResult> {
    let mut order: Vec<String> = Vec::new();
    for r in &runs {
        if !order.contains(&r.server) {
            order.push(r.server.clone());
        }
    }
    if runs.len() == order.len() {
        return runs; // one run each
    }
    order
        .iter()
        .filter_map(|server| {
            let mine: Vec<&RunResult> = runs.iter().filter(|r| &r.server == server).collect();
            let mut by_rate = mine.clone();
            by_rate.sort_by(|a, b| a.rate.total_cmp(&b.rate));
            let mut chosen = (*by_rate.get(by_rate.len() / 2)?).clone();
            chosen.repeat_rates = mine.iter().map(|r| r.rate).collect();
            chosen.errors = mine.iter().map(|r| r.errors).sum();
            chosen.first_error = mine.iter().find_map(|r| r.first_error.clone());
            chosen.events = chosen.events.map(|_| EventCheck {
                sent: mine.iter().filter_map(|r| r.events).map(|e| e.sent).sum(),
                printed: mine
                    .iter()
                    .filter_map(|r| r.events)
                    .map(|e| e.printed)
                    .sum(),
            });
            Some(chosen)
        })
        .collect()
}

pub fn print_progress(r: &RunResult) {
    let mut line = format!(
        "   {:<25} {:>11.0} {}/s  p50 {:>8} µs  p99 {:>8} µs  errors {}",
        r.server,
        r.rate,
        if r.events.is_some() { "ev" } else { "req" },
        opt(r.p50_us, 1),
        opt(r.p99_us, 1),
        r.errors
    );
    if let Some(ev) = r.events {
        let _ = write!(line, "  (events sent {}, printed {})", ev.sent, ev.printed);
    }
    println!("{line}");
    if let Some(e) = &r.first_error {
        println!("      first error: {e}");
    }
}

impl Summary {
    fn find(&self, scenario: &str, server: &str) -> Option<&RunResult> {
        self.results
            .iter()
            .find(|r| r.scenario == scenario && r.server == server)
    }

    fn scenario_names(&self) -> Vec<&'static str> {
        let mut names: Vec<&'static str> = Vec::new();
        for r in &self.results {
            if !names.contains(&r.scenario) {
                names.push(r.scenario);
            }
        }
        names
    }

    fn ratios(&self) -> Vec<Ratio> {
        let mut out = Vec::new();
        let mut add =
            |scenario: &'static str, label: &'static str, a: &RunResult, b: &RunResult| {
                out.push(Ratio {
                    scenario,
                    label,
                    rate_a: a.rate,
                    rate_b: b.rate,
                    rate: (b.rate > 0.0).then(|| a.rate / b.rate),
                    p50: ratio(a.p50_us, b.p50_us),
                });
            };
        for sc in self.scenario_names() {
            if let (Some(a), Some(b)) = (
                self.find(sc, "ceiling/nestling::Client"),
                self.find(sc, "ceiling/raw"),
            ) {
                add(sc, "nestling::Client / raw generator", a, b);
            }
            // RabbitMQ: nestling with acknowledgements off, as Nest's default `noAck: true`.
            if let Some(n) = self.find(sc, "nestling noAck") {
                if let Some(nest) = self.find(sc, "nest") {
                    add(sc, "nestling noAck / Nest (noAck)", n, nest);
                }
                if let Some(c) = self.find(sc, "ceiling noAck") {
                    add(sc, "nestling noAck / ceiling noAck", n, c);
                }
            }
            let Some(n) = self.find(sc, "nestling") else {
                continue;
            };
            if let Some(nest) = self.find(sc, "nest") {
                add(sc, "nestling / Nest", n, nest);
            }
            if let Some(c) = self.find(sc, "ceiling") {
                add(sc, "nestling / ceiling", n, c);
            }
        }
        out
    }

    /// The readable report.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let m = &self.machine;
        let _ = writeln!(
            s,
            "nestling {}; machine: {} CPUs, {}, Linux {}, node {}",
            m.nestling_rev,
            m.nproc,
            m.cpu,
            m.kernel,
            m.node.as_deref().unwrap_or("-"),
        );
        let _ = writeln!(
            s,
            "run: pinning {}; {} s measured after {} s warm-up per run; {} run(s) per scenario \
             and server, interleaved (median shown); total {:.0} s; load average {} at start, \
             {} at end",
            if !self.pinning {
                "off".to_string()
            } else if self.server_cpus == "1" {
                "on (servers core 1, generator core 0)".to_string()
            } else {
                format!(
                    "on (servers on cores {}, SHARED with the generator on core 0)",
                    self.server_cpus
                )
            },
            self.seconds,
            self.warmup,
            self.repeat,
            self.elapsed_s,
            m.load_start,
            self.load_end,
        );
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "| scenario | server | conns×in-flight | payload B | rate /s | p50 µs | p99 µs | p99.9 µs | errors | server CPU % | gen CPU % | other CPU % | server peak RSS MiB | server sleeps per 100 | server CPU µs per unit |"
        );
        let _ = writeln!(
            s,
            "|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
        );
        for r in &self.results {
            let _ = writeln!(
                s,
                "| {} {} | {} | {} | {} | {:.0}{} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                r.letter,
                r.scenario,
                r.server,
                r.shape(),
                if r.payload_bytes == 0 {
                    "-".to_string()
                } else {
                    r.payload_bytes.to_string()
                },
                r.rate,
                if r.events.is_some() { " ev" } else { "" },
                opt(r.p50_us, 1),
                opt(r.p99_us, 1),
                opt(r.p999_us, 1),
                r.errors,
                opt(r.server_cpu_pct, 0),
                opt(r.gen_cpu_pct, 0),
                opt(r.other_cpu_pct, 0),
                rss(r.peak_rss_kib),
                opt(r.sleeps_per_100, 2),
                opt(r.server_cpu_us_per_unit(), 2),
            );
        }
        let events: Vec<&RunResult> = self.results.iter().filter(|r| r.events.is_some()).collect();
        if !events.is_empty() {
            let _ = writeln!(s);
            for r in events {
                let ev = r.events.expect("filtered");
                let _ = writeln!(
                    s,
                    "- events check, {} {}: sent {}, handled by the server {}, lost {}",
                    r.scenario,
                    r.server,
                    ev.sent,
                    ev.printed,
                    ev.sent.saturating_sub(ev.printed)
                );
            }
        }
        let repeated: Vec<&RunResult> = self
            .results
            .iter()
            .filter(|r| r.repeat_rates.len() > 1)
            .collect();
        if !repeated.is_empty() {
            let _ = writeln!(s);
            for r in repeated {
                let rates: Vec<String> = r.repeat_rates.iter().map(|v| format!("{v:.0}")).collect();
                let _ = writeln!(
                    s,
                    "- {} {}: rate of each run {} (the table shows the median)",
                    r.scenario,
                    r.server,
                    rates.join(", ")
                );
            }
        }
        let ratios = self.ratios();
        if !ratios.is_empty() {
            let _ = writeln!(s);
            let _ = writeln!(
                s,
                "| scenario | comparison | rate ratio | p50 latency ratio |"
            );
            let _ = writeln!(s, "|---|---|--:|--:|");
            for r in ratios {
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} |",
                    r.scenario,
                    r.label,
                    opt(r.rate, 2),
                    opt(r.p50, 2)
                );
            }
        }
        let _ = writeln!(s);
        for (label, kib) in &self.idle_rss_kib {
            let _ = writeln!(
                s,
                "- idle RSS after start (before any load), {label}: {} MiB",
                rss(*kib)
            );
        }
        for (label, kib) in &self.peak_rss_kib {
            let _ = writeln!(
                s,
                "- peak RSS over the whole run, {label}: {} MiB",
                rss(*kib)
            );
        }
        write_notes(
            &mut s,
            &self.skipped,
            self.results
                .iter()
                .map(|r| (r.scenario, r.server.as_str(), r.first_error.as_deref())),
        );
        s
    }

    /// The JSON report.
    pub fn json_text(&self) -> String {
        let m = &self.machine;
        let results: Vec<Value> = self
            .results
            .iter()
            .map(|r| {
                json!({
                    "scenario": r.scenario,
                    "letter": r.letter.to_string(),
                    "server": r.server,
                    "connections": r.conns,
                    "in_flight": if r.events.is_some() { Value::Null } else { json!(r.inflight) },
                    "payload_bytes": r.payload_bytes,
                    "unit": if r.events.is_some() { "events" } else { "requests" },
                    "completed": r.completed,
                    "rate_per_s": r.rate,
                    "latency_us": {
                        "p50": r.p50_us, "p99": r.p99_us, "p999": r.p999_us, "max": r.max_us,
                    },
                    "errors": r.errors,
                    "first_error": r.first_error,
                    "server_cpu_pct": r.server_cpu_pct,
                    "generator_cpu_pct": r.gen_cpu_pct,
                    "other_cpu_pct": r.other_cpu_pct,
                    "server_peak_rss_kib": r.peak_rss_kib,
                    "server_sleeps_per_100": r.sleeps_per_100,
                    "server_cpu_us_per_unit": r.server_cpu_us_per_unit(),
                    "rate_of_each_run": r.repeat_rates,
                    "events": r.events.map(|e| json!({
                        "sent": e.sent, "printed": e.printed,
                        "lost": e.sent.saturating_sub(e.printed),
                    })),
                })
            })
            .collect();
        let ratios: Vec<Value> = self
            .ratios()
            .into_iter()
            .map(|r| {
                json!({
                    "scenario": r.scenario, "comparison": r.label,
                    "rate_a": r.rate_a, "rate_b": r.rate_b,
                    "rate_ratio": r.rate, "p50_ratio": r.p50,
                })
            })
            .collect();
        let doc = json!({
            "machine": {
                "nproc": m.nproc, "cpu": m.cpu, "kernel": m.kernel, "node": m.node,
                "load_average_start": m.load_start,
            },
            "nestling_rev": m.nestling_rev,
            "load_average_end": self.load_end,
            "pinning": self.pinning,
            "server_cpus": self.server_cpus,
            "seconds": self.seconds,
            "warmup_seconds": self.warmup,
            "runs_per_scenario_and_server": self.repeat,
            "elapsed_seconds": self.elapsed_s,
            "results": results,
            "ratios": ratios,
            "skipped": self.skipped.iter().map(|(l, w)| json!({"server": l, "reason": w})).collect::<Vec<_>>(),
            "peak_rss_kib": self.peak_rss_kib.iter().map(|(l, k)| json!({"server": l, "kib": k})).collect::<Vec<_>>(),
            "idle_rss_kib": self.idle_rss_kib.iter().map(|(l, k)| json!({"server": l, "kib": k})).collect::<Vec<_>>(),
        });
        serde_json::to_string_pretty(&doc).expect("JSON") + "\n"
    }
}

/// The notes under a table: servers skipped (and why), and each run's first error.
pub fn write_notes<'a>(
    s: &mut String,
    skipped: &[(String, String)],
    results: impl Iterator<Item = (&'a str, &'a str, Option<&'a str>)>,
) {
    for (label, why) in skipped {
        let _ = writeln!(s, "- skipped server {label}: {why}");
    }
    for (scenario, server, first_error) in results {
        if let Some(e) = first_error {
            let _ = writeln!(s, "- first error, {scenario} / {server}: {e}");
        }
    }
}

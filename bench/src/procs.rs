//! Server processes: start (optionally pinned with `taskset`), wait for `READY <port>`,
//! drain and count their output, read their CPU time and peak RSS from `/proc`, and kill
//! them on drop (so an error, a panic or Ctrl-C never leaves one behind).

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The text the events scenario sends; servers print it once per `log` event.
pub const EVENT_TEXT: &str = "bench-event";

/// CPU pinning: servers on one core, the load generator on another.
#[derive(Debug, Clone, Copy)]
pub struct Pinning {
    pub server_core: usize,
    pub gen_core: usize,
    /// The CPU list (`taskset -c`) servers run on: `server_core` alone, or with
    /// `--server-cores 2` also the generator's core.
    pub server_cpus: &'static str,
}

/// Pins this process (and every thread it starts later) to `core` with `taskset -p`.
/// Call it before any thread is started.
pub fn pin_self(core: usize) -> Result<(), String> {
    let out = Command::new("taskset")
        .args(["-pc", &core.to_string(), &std::process::id().to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("taskset not runnable: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// `true` if `taskset -c core true` works (the core exists and affinity may be set).
pub fn can_pin_child(core: usize) -> bool {
    Command::new("taskset")
        .args(["-c", &core.to_string(), "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A running server process. Killed (SIGKILL) and reaped on drop.
pub struct ServerProc {
    pub name: String,
    pub pid: u32,
    pub port: u16,
    child: Child,
    /// Lines equal to [`EVENT_TEXT`] printed on stdout so far.
    event_lines: Arc<AtomicU64>,
    /// The last lines of stderr and non-event stdout, for error messages.
    tail: Arc<Mutex<VecDeque<String>>>,
}

impl ServerProc {
    /// Starts `program args…` with `PORT=0`, pinned to `pin` if given, and waits (up to
    /// `ready_timeout`) for its `READY <port>` line.
    pub fn start(
        name: &str,
        program: &Path,
        args: &[&str],
        cwd: Option<&Path>,
        pin: Option<&str>,
        ready_timeout: Duration,
    ) -> Result<ServerProc, String> {
        Self::start_wrapped(name, &[], program, args, cwd, &[], pin, ready_timeout)
    }

    /// [`ServerProc::start`] with extra environment variables (the RabbitMQ servers get
    /// their broker and queue this way). A server that prints `READY rmq` instead of a
    /// port gets port 0.
    #[allow(clippy::too_many_arguments)]
    pub fn start_env(
        name: &str,
        program: &Path,
        args: &[&str],
        cwd: Option<&Path>,
        env: &[(&str, String)],
        pin: Option<&str>,
        ready_timeout: Duration,
    ) -> Result<ServerProc, String> {
        Self::start_wrapped(name, &[], program, args, cwd, env, pin, ready_timeout)
    }

    /// [`ServerProc::start`] with `wrapper` (e.g. `valgrind --tool=callgrind …`) put in
    /// front of the program: `taskset -c <pin> <wrapper…> <program> <args…>`. The wrapper
    /// must `exec` the program in the same process (valgrind does), so that `pid` is the
    /// server's.
    #[allow(clippy::too_many_arguments)]
    pub fn start_wrapped(
        name: &str,
        wrapper: &[String],
        program: &Path,
        args: &[&str],
        cwd: Option<&Path>,
        env: &[(&str, String)],
        pin: Option<&str>,
        ready_timeout: Duration,
    ) -> Result<ServerProc, String> {
        let mut cmd = match (pin, wrapper.split_first()) {
            (Some(core), _) => {
                let mut c = Command::new("taskset");
                c.arg("-c").arg(core).args(wrapper);
                c
            }
            (None, Some((first, rest))) => {
                let mut c = Command::new(first);
                c.args(rest);
                c
            }
            (None, None) => Command::new(program),
        };
        if pin.is_some() || !wrapper.is_empty() {
            cmd.arg(program);
        }
        cmd.args(args)
            .env("HOST", "127.0.0.1")
            .env("PORT", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (key, value) in env {
            cmd.env(key, value);
        }
        if let Some(dir) = cwd {
            cmd.current_dir(dir);
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("{name}: cannot start {}: {e}", program.display()))?;
        let pid = child.id();
        let event_lines = Arc::new(AtomicU64::new(0));
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let (ready_tx, ready_rx) = mpsc::channel();
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        {
            let (lines, tail) = (event_lines.clone(), tail.clone());
            std::thread::Builder::new()
                .name(format!("{name}-stdout"))
                .spawn(move || drain_stdout(stdout, ready_tx, &lines, &tail))
                .map_err(|e| e.to_string())?;
        }
        {
            let tail = tail.clone();
            std::thread::Builder::new()
                .name(format!("{name}-stderr"))
                .spawn(move || {
                    for line in BufReader::new(stderr).lines() {
                        let Ok(line) = line else { break };
                        push_tail(&tail, line);
                    }
                })
                .map_err(|e| e.to_string())?;
        }
        let mut proc = ServerProc {
            name: name.to_string(),
            pid,
            port: 0,
            child,
            event_lines,
            tail,
        };
        match ready_rx.recv_timeout(ready_timeout) {
            Ok(port) => {
                proc.port = port;
                Ok(proc)
            }
            Err(_) => {
                let status = proc.child.try_wait().ok().flatten();
                Err(format!(
                    "{name}: no READY line within {ready_timeout:?} (exit status: {status:?}); last output:\n{}",
                    proc.tail_text()
                ))
            }
        }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Event lines printed so far.
    pub fn event_lines(&self) -> u64 {
        self.event_lines.load(Ordering::Relaxed)
    }

    /// `Some(status)` if the process has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    pub fn tail_text(&self) -> String {
        let tail = self.tail.lock().unwrap_or_else(|p| p.into_inner());
        tail.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    /// CPU time (user + system, all threads) in clock ticks.
    pub fn cpu_ticks(&self) -> Option<u64> {
        cpu_ticks(&format!("/proc/{}/stat", self.pid))
    }

    /// Voluntary context switches of the process so far: see [`sleeps`].
    pub fn sleeps(&self) -> Option<u64> {
        sleeps(self.pid)
    }

    /// Peak resident set size (VmHWM) in KiB.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        status_kib(&format!("/proc/{}/status", self.pid), "VmHWM:")
    }

    /// Resident set size now (VmRSS) in KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        status_kib(&format!("/proc/{}/status", self.pid), "VmRSS:")
    }

    /// Sends SIGTERM and waits up to `grace` for the process to exit (valgrind then
    /// removes its vgdb FIFOs). Drop still kills it if it does not.
    pub fn terminate(&mut self, grace: Duration) {
        if self.exited().is_some() {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let until = std::time::Instant::now() + grace;
        while std::time::Instant::now() < until {
            if self.exited().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn push_tail(tail: &Mutex<VecDeque<String>>, line: String) {
    let mut tail = tail.lock().unwrap_or_else(|p| p.into_inner());
    if tail.len() == 20 {
        tail.pop_front();
    }
    tail.push_back(line);
}

/// Reads stdout in large chunks: reports the `READY <port>` line, then counts lines equal
/// to [`EVENT_TEXT`] (cheaply: this thread shares the load generator's core).
fn drain_stdout(
    mut out: impl Read,
    ready: mpsc::Sender<u16>,
    lines: &AtomicU64,
    tail: &Mutex<VecDeque<String>>,
) {
    let mut buf = vec![0u8; 256 * 1024];
    let mut partial: Vec<u8> = Vec::new();
    let mut ready = Some(ready);
    loop {
        let n = match out.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let mut chunk = &buf[..n];
        let mut count = 0;
        while let Some(nl) = chunk.iter().position(|&b| b == b'\n') {
            let line: &[u8] = if partial.is_empty() {
                &chunk[..nl]
            } else {
                partial.extend_from_slice(&chunk[..nl]);
                &partial
            };
            if line == EVENT_TEXT.as_bytes() {
                count += 1;
            } else {
                let text = String::from_utf8_lossy(line).into_owned();
                // `READY rmq` / `READY nats`: consuming a queue or subscribed, no port.
                if let Some(port) = text.strip_prefix("READY ").and_then(|p| match p.trim() {
                    "rmq" | "nats" => Some(0),
                    p => p.parse().ok(),
                }) {
                    if let Some(tx) = ready.take() {
                        let _ = tx.send(port);
                    }
                } else if !text.starts_with("EVENT log ") {
                    push_tail(tail, text);
                }
            }
            partial.clear();
            chunk = &chunk[nl + 1..];
        }
        partial.extend_from_slice(chunk);
        if count > 0 {
            lines.fetch_add(count, Ordering::Relaxed);
        }
    }
}

/// utime + stime (clock ticks) from a `/proc/<pid>/stat` file.
pub fn cpu_ticks(stat_path: &str) -> Option<u64> {
    let text = std::fs::read_to_string(stat_path).ok()?;
    // Fields after the command name (which may contain spaces) start at field 3 (state).
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Voluntary context switches of all threads of `pid`: how often the process blocked
/// (e.g. in `epoll_wait` with nothing ready). A server that parks and wakes more often
/// per request pays kernel time that callgrind does not see. (Socket reads and writes are
/// not countable this way: `/proc/<pid>/io` skips `recv`/`send`.)
pub fn sleeps(pid: u32) -> Option<u64> {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
    {
        let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        total += status
            .lines()
            .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
    }
    Some(total)
}

/// Busy time of the whole machine (all CPUs, clock ticks): the first line of `/proc/stat`
/// minus idle and iowait.
pub fn machine_busy_ticks() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let line = text.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    let busy = v.first()? + v.get(1)? + v.get(2)? + v.get(5)? + v.get(6)? + v.get(7)?;
    Some(busy)
}

/// A KiB figure (`VmHWM:`, `VmRSS:`, …) from a `/proc/<pid>/status` file.
fn status_kib(status_path: &str, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(status_path).ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Clock ticks per second (`getconf CLK_TCK`, 100 if unknown).
pub fn clock_ticks_per_sec() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// The workspace root (the bench crate's parent directory).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("bench/ has a parent")
        .to_path_buf()
}

/// The cargo target directory (`CARGO_TARGET_DIR` or `<root>/target`).
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                workspace_root().join(dir)
            }
        }
        None => workspace_root().join("target"),
    }
}

/// Runs `cargo build --release --example user_service` in the workspace and returns the
/// binary's path. With `build == false` it only checks that the binary exists.
pub fn user_service_binary(build: bool) -> Result<PathBuf, String> {
    let bin = target_dir().join("release/examples/user_service");
    if build || !bin.exists() {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        eprintln!("building: cargo build --release --example user_service");
        let status = Command::new(cargo)
            .args(["build", "--release", "--quiet", "--example", "user_service"])
            .current_dir(workspace_root())
            .status()
            .map_err(|e| format!("cannot run cargo: {e}"))?;
        if !status.success() {
            if !bin.exists() {
                return Err(format!(
                    "cargo build of the user_service example failed: {status}"
                ));
            }
            eprintln!(
                "WARNING: cargo build of the user_service example failed ({status}); \
                 benchmarking the existing, possibly stale, {}",
                bin.display()
            );
        }
    }
    if bin.exists() {
        Ok(bin)
    } else {
        Err(format!("{} is missing", bin.display()))
    }
}

//! Helpers for the CLI tests: run the built `nestling` binary (bounded), collect the output
//! of long-running processes line by line, and find Node for the NestJS tests.
//!
//! Every process started here is killed when its handle is dropped, also when a test panics.

#![allow(dead_code)]

pub mod brokers;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::time::Instant;

/// Upper bound for one short CLI invocation.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(30);
/// Upper bound for waiting on an output line.
pub const WAIT_TIMEOUT: Duration = Duration::from_secs(15);

/// The `nestling` binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_nestling")
}

/// What a finished invocation printed.
#[derive(Debug)]
pub struct Output {
    /// Exit code (`None`: killed by a signal).
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// Panics with everything printed unless the exit code is `code`.
    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(self.code, Some(code), "unexpected exit code: {self:#?}");
        self
    }

    /// Standard output parsed as one JSON value.
    #[track_caller]
    pub fn stdout_json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:#?}"))
    }

    /// Standard error parsed as one JSON value.
    #[track_caller]
    pub fn stderr_json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stderr)
            .unwrap_or_else(|e| panic!("stderr is not JSON ({e}): {self:#?}"))
    }
}

/// Runs `nestling <args>` to completion (at most [`RUN_TIMEOUT`]), stdin closed.
pub async fn nestling(args: &[&str]) -> Output {
    nestling_with_stdin(args, None).await
}

/// Runs `nestling <args>` with `stdin` as its standard input.
pub async fn nestling_with_stdin(args: &[&str], stdin: Option<&str>) -> Output {
    use tokio::io::AsyncWriteExt;
    let mut cmd = Command::new(bin());
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().expect("start the nestling binary");
    if let Some(text) = stdin {
        let mut pipe = child.stdin.take().expect("piped stdin");
        pipe.write_all(text.as_bytes()).await.expect("write stdin");
        drop(pipe);
    }
    let out = tokio::time::timeout(RUN_TIMEOUT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "`nestling {}` did not finish within {RUN_TIMEOUT:?}",
                args.join(" ")
            )
        })
        .expect("wait for nestling");
    Output {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// An address on 127.0.0.1 where nothing listens (bound, then released).
pub async fn refused_addr() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    addr.to_string()
}

// ---------------------------------------------------------------------------------------
// Long-running processes
// ---------------------------------------------------------------------------------------

/// Lines of one output stream, collected in the background.
#[derive(Clone)]
pub struct Lines {
    lines: Arc<Mutex<Vec<String>>>,
    changed: watch::Receiver<usize>,
}

impl Lines {
    fn collect(reader: impl AsyncRead + Unpin + Send + 'static) -> Self {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = watch::channel(0usize);
        let sink = lines.clone();
        tokio::spawn(async move {
            let mut reader = BufReader::new(reader);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match reader.read_until(b'\n', &mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&buf)
                            .trim_end_matches(['\n', '\r'])
                            .to_string();
                        let n = {
                            let mut all = sink.lock().unwrap();
                            all.push(line);
                            all.len()
                        };
                        let _ = tx.send(n);
                    }
                }
            }
        });
        Self { lines, changed: rx }
    }

    /// Every line so far.
    pub fn snapshot(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Waits until at least `count` lines satisfy `pred`; returns the matching lines, or a
    /// description of what was missing.
    pub async fn wait_for(
        &self,
        pred: impl Fn(&str) -> bool,
        count: usize,
        timeout: Duration,
    ) -> Result<Vec<String>, String> {
        let deadline = Instant::now() + timeout;
        let mut rx = self.changed.clone();
        loop {
            rx.borrow_and_update();
            let found: Vec<String> = self.snapshot().into_iter().filter(|l| pred(l)).collect();
            if found.len() >= count {
                return Ok(found);
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => {
                    let found: Vec<String> =
                        self.snapshot().into_iter().filter(|l| pred(l)).collect();
                    if found.len() >= count {
                        return Ok(found);
                    }
                    return Err(format!(
                        "the stream ended with {} of {count} expected lines",
                        found.len()
                    ));
                }
                Err(_) => {
                    return Err(format!(
                        "timed out after {timeout:?} with {} of {count} expected lines",
                        found.len()
                    ))
                }
            }
        }
    }
}

/// A running child process whose output is collected. Killed on drop.
pub struct Proc {
    name: String,
    pub child: Child,
    pub stdout: Lines,
    pub stderr: Lines,
}

impl Proc {
    /// Spawns `cmd` with piped stdout/stderr and closed stdin.
    pub fn spawn(name: impl Into<String>, mut cmd: Command) -> Self {
        let name = name.into();
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("could not start {name}: {e}"));
        let stdout = Lines::collect(child.stdout.take().expect("piped stdout"));
        let stderr = Lines::collect(child.stderr.take().expect("piped stderr"));
        Self {
            name,
            child,
            stdout,
            stderr,
        }
    }

    /// Starts `nestling <args>` in the background.
    pub fn nestling(args: &[&str]) -> Self {
        let mut cmd = Command::new(bin());
        cmd.args(args);
        Self::spawn(format!("nestling {}", args.join(" ")), cmd)
    }

    /// Waits for a stdout line satisfying `pred`, panicking with the output otherwise.
    pub async fn wait_stdout(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        match self.stdout.wait_for(pred, 1, WAIT_TIMEOUT).await {
            Ok(lines) => lines[0].clone(),
            Err(why) => self.fail(&format!("expected a stdout line {what}: {why}")),
        }
    }

    /// Waits for a stderr line satisfying `pred`, panicking with the output otherwise.
    pub async fn wait_stderr(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        match self.stderr.wait_for(pred, 1, WAIT_TIMEOUT).await {
            Ok(lines) => lines[0].clone(),
            Err(why) => self.fail(&format!("expected a stderr line {what}: {why}")),
        }
    }

    /// Panics with `msg` and everything the process printed.
    pub fn fail(&self, msg: &str) -> ! {
        panic!("{}: {msg}\n{}", self.name, self.dump());
    }

    /// The captured output.
    pub fn dump(&self) -> String {
        let mut out = format!("----- {} stdout -----\n", self.name);
        for l in self.stdout.snapshot() {
            out.push_str(&l);
            out.push('\n');
        }
        out.push_str(&format!("----- {} stderr -----\n", self.name));
        for l in self.stderr.snapshot() {
            out.push_str(&l);
            out.push('\n');
        }
        out
    }
}

/// Starts `nestling listen 127.0.0.1:0 <extra>` and returns it with the address it bound
/// (read from its `nestling: listening on <addr> …` line on stderr).
pub async fn listen(extra: &[&str]) -> (Proc, String) {
    let mut args = vec!["listen", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let proc = Proc::nestling(&args);
    let line = proc
        .wait_stderr("`listening on …`", |l| {
            l.starts_with("nestling: listening on ")
        })
        .await;
    let addr = line["nestling: listening on ".len()..]
        .split_whitespace()
        .next()
        .expect("an address after `listening on`")
        .to_string();
    (proc, addr)
}

// ---------------------------------------------------------------------------------------
// TLS
// ---------------------------------------------------------------------------------------

/// A self-signed certificate for 127.0.0.1 / localhost in a temp dir (removed on drop).
pub struct Certs {
    dir: PathBuf,
}

impl Certs {
    pub fn new(tag: &str) -> Self {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
            .unwrap();
        let dir =
            std::env::temp_dir().join(format!("nestling-cli-tls-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("cert.pem"), ck.cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), ck.signing_key.serialize_pem()).unwrap();
        Self { dir }
    }
    pub fn cert(&self) -> String {
        self.dir.join("cert.pem").display().to_string()
    }
    pub fn key(&self) -> String {
        self.dir.join("key.pem").display().to_string()
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------------------------------
// Node (same rule as the workspace's tests/support/mod.rs)
// ---------------------------------------------------------------------------------------

const NODE_REQUIRED: &str =
    "node/npm are required for the NestJS interop tests; install Node >= 20 and run `npm ci` in tests/nest";

/// The workspace's `tests/nest`: the pinned NestJS peer project.
pub fn nest_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("tests")
        .join("nest")
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

fn probe_node() -> Result<PathBuf, String> {
    let node = find_on_path("node").ok_or_else(|| "`node` is not on PATH".to_string())?;
    let out = std::process::Command::new(&node)
        .arg("--version")
        .output()
        .map_err(|e| format!("running `{} --version` failed: {e}", node.display()))?;
    let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let major: u32 = version
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .ok_or_else(|| {
            format!(
                "cannot read the version of {} ({version:?})",
                node.display()
            )
        })?;
    if major < 20 {
        return Err(format!(
            "{} is {version}; Node >= 20 is needed",
            node.display()
        ));
    }
    let modules = nest_dir().join("node_modules");
    for package in [
        "@nestjs/microservices",
        "@nestjs/core",
        "@nestjs/platform-express",
    ] {
        if !modules.join(package).is_dir() {
            return Err(format!(
                "{} is missing (run `npm ci` in tests/nest)",
                modules.join(package).display()
            ));
        }
    }
    Ok(node)
}

/// The `node` executable, if Node and `tests/nest/node_modules` are available.
///
/// Otherwise: with `CI` set this panics (the interop tests must run in CI); without it, it
/// prints a loud `SKIPPED` line and returns `None`, and the test returns.
pub fn require_node(test: &str) -> Option<PathBuf> {
    static PROBE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match PROBE.get_or_init(probe_node) {
        Ok(node) => Some(node.clone()),
        Err(why) => {
            if std::env::var_os("CI").is_some() {
                panic!("{NODE_REQUIRED} ({why})");
            }
            // Straight to the stderr handle: libtest captures `eprintln!` of passing tests.
            let banner = "=".repeat(78);
            let _ = writeln!(
                std::io::stderr().lock(),
                "\n{banner}\nSKIPPED: {test}: {why}.\n         {NODE_REQUIRED}.\n{banner}"
            );
            None
        }
    }
}

/// Starts `node user-service.mjs` in tests/nest on an ephemeral port, with `env` added
/// (e.g. `TLS_CERT`/`TLS_KEY`); returns it with its address once it printed `READY <port>`.
pub async fn start_nest_user_service(node: &Path, env: &[(&str, &str)]) -> (Proc, String) {
    let mut cmd = Command::new(node);
    cmd.arg("user-service.mjs")
        .current_dir(nest_dir())
        .env("HOST", "127.0.0.1")
        .env("PORT", "0")
        .env("NO_COLOR", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let proc = Proc::spawn("node user-service.mjs", cmd);
    let ready = match proc
        .stdout
        .wait_for(|l| l.starts_with("READY "), 1, Duration::from_secs(30))
        .await
    {
        Ok(lines) => lines[0].clone(),
        Err(why) => proc.fail(&format!("no `READY <port>` line: {why}")),
    };
    let port: u16 = ready["READY ".len()..]
        .trim()
        .parse()
        .unwrap_or_else(|_| proc.fail(&format!("bad READY line {ready:?}")));
    (proc, format!("127.0.0.1:{port}"))
}

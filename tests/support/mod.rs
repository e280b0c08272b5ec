//! Shared helpers for the integration tests: real processes (NestJS peers from `tests/nest`,
//! the crate's example binaries), an in-process nestling server, and a tiny HTTP/1.1 client.
//!
//! Everything started here is killed when its handle is dropped, also when a test panics; a
//! panicking test additionally gets the process's captured stdout/stderr printed.

#![allow(dead_code)]

use std::collections::HashSet;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::time::Instant;

pub mod nats;

/// How long a process may take to print `READY <port>`.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Default deadline for waiting on an output line or an HTTP reply.
pub const WAIT_TIMEOUT: Duration = Duration::from_secs(15);

const NODE_REQUIRED: &str =
    "node/npm are required for the NestJS interop tests; install Node >= 20 and run `npm ci` in tests/nest";

// ---------------------------------------------------------------------------------------
// Node availability
// ---------------------------------------------------------------------------------------

/// `tests/nest`: the NestJS peer project.
pub fn nest_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("nest")
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// Why Node cannot be used, or the `node` executable.
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
/// Otherwise: with `CI` set this panics (the interop tests must run in CI); without it,
/// it prints a loud `SKIPPED` line for `test` and returns `None`, and the test returns.
///
/// ```ignore
/// let Some(node) = support::require_node("my_test") else { return };
/// ```
pub fn require_node(test: &str) -> Option<PathBuf> {
    static PROBE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match PROBE.get_or_init(probe_node) {
        Ok(node) => Some(node.clone()),
        Err(why) => {
            if std::env::var_os("CI").is_some() {
                panic!("{NODE_REQUIRED} ({why})");
            }
            // Straight to the stderr handle, not `eprintln!`: libtest captures the macros'
            // output of passing tests, and a skip must be visible.
            let banner = "=".repeat(78);
            let _ = writeln!(
                std::io::stderr().lock(),
                "\n{banner}\nSKIPPED: {test}: {why}.\n         {NODE_REQUIRED}.\n{banner}"
            );
            None
        }
    }
}

// ---------------------------------------------------------------------------------------
// Captured output
// ---------------------------------------------------------------------------------------

/// Lines of one output stream, collected in the background.
#[derive(Clone)]
pub struct Lines {
    lines: Arc<Mutex<Vec<String>>>,
    /// Bumped on every new line; closed (sender dropped) at end of stream.
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
                        let line = String::from_utf8_lossy(&buf);
                        let line = line.trim_end_matches(['\n', '\r']).to_string();
                        let n = {
                            let mut all = sink.lock().unwrap();
                            all.push(line);
                            all.len()
                        };
                        let _ = tx.send(n);
                    }
                }
            }
            // Dropping `tx` tells waiters the stream ended.
        });
        Self { lines, changed: rx }
    }

    /// Every line so far.
    pub fn snapshot(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Lines so far that satisfy `pred`.
    pub fn matching(&self, pred: impl Fn(&str) -> bool) -> Vec<String> {
        self.snapshot().into_iter().filter(|l| pred(l)).collect()
    }

    /// Waits until at least `count` lines satisfy `pred` and returns all matching lines.
    /// Errors (with a description) on timeout or when the stream ends first.
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
            let found = self.matching(&pred);
            if found.len() >= count {
                return Ok(found);
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => continue,
                Ok(Err(_)) => {
                    let found = self.matching(&pred);
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
                        self.matching(&pred).len()
                    ))
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------

/// A running child process whose output is collected. Killed on drop.
pub struct Proc {
    name: String,
    child: Child,
    /// Its stdout, line by line.
    pub stdout: Lines,
    /// Its stderr, line by line.
    pub stderr: Lines,
    /// The port from its `READY <port>` line (0 before that).
    pub port: u16,
    /// Whether a failure message already carried the output.
    dumped: AtomicBool,
}

impl Proc {
    /// Spawns `cmd` with piped stdout/stderr (stdin closed) and starts collecting output.
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
            port: 0,
            dumped: AtomicBool::new(false),
        }
    }

    /// Waits for the `READY <port>` line (at most [`READY_TIMEOUT`]) and records the port.
    pub async fn wait_ready(&mut self) -> u16 {
        let found = self
            .stdout
            .wait_for(|l| l.starts_with("READY "), 1, READY_TIMEOUT)
            .await;
        let line = match found {
            Ok(lines) => lines[0].clone(),
            Err(why) => self.fail(&format!("no `READY <port>` line: {why}")),
        };
        let port = line["READY ".len()..]
            .trim()
            .parse()
            .unwrap_or_else(|_| self.fail(&format!("bad READY line {line:?}")));
        self.port = port;
        port
    }

    /// `127.0.0.1:<port>` of the READY line.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Waits until stdout has a line equal to `line`; panics with the output otherwise.
    pub async fn wait_line(&self, line: &str) {
        self.wait_lines(line, 1).await;
    }

    /// Waits until stdout has at least `count` lines equal to `line`.
    pub async fn wait_lines(&self, line: &str, count: usize) {
        if let Err(why) = self
            .stdout
            .wait_for(|l| l == line, count, WAIT_TIMEOUT)
            .await
        {
            self.fail(&format!("expected {count} stdout line(s) {line:?}: {why}"));
        }
    }

    /// Number of stdout lines equal to `line` so far.
    pub fn count_lines(&self, line: &str) -> usize {
        self.stdout.matching(|l| l == line).len()
    }

    /// Panics with `msg` and everything the process printed.
    pub fn fail(&self, msg: &str) -> ! {
        self.dumped.store(true, Ordering::Relaxed);
        panic!("{}: {msg}\n{}", self.name, self.dump());
    }

    /// The captured output, for failure messages.
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
        out.push_str("-----\n");
        out
    }

    /// Sends SIGINT (Ctrl-C: the examples shut down gracefully) and waits until it exits.
    pub async fn interrupt(&mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-INT", &pid.to_string()])
                .status();
        }
        if tokio::time::timeout(WAIT_TIMEOUT, self.child.wait())
            .await
            .is_err()
        {
            self.fail("did not exit within the wait timeout after SIGINT");
        }
    }

    /// Kills the process (SIGKILL) and waits until it is gone.
    pub async fn kill(&mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(WAIT_TIMEOUT, self.child.wait()).await;
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        if std::thread::panicking() && !self.dumped.load(Ordering::Relaxed) {
            eprintln!("{}", self.dump());
        }
    }
}

/// Starts `tests/nest/<script>` with `HOST=127.0.0.1 PORT=0 NO_COLOR=1` plus `env`, and
/// waits for its `READY <port>` line.
pub async fn spawn_node(node: &Path, script: &str, env: &[(&str, &str)]) -> Proc {
    let mut cmd = Command::new(node);
    cmd.arg(script)
        .current_dir(nest_dir())
        .env("HOST", "127.0.0.1")
        .env("PORT", "0")
        .env("NO_COLOR", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut proc = Proc::spawn(script, cmd);
    proc.wait_ready().await;
    proc
}

/// Runs `tests/nest/client.mjs` against `addr` (`host:port`) with `ops` (a JSON array of
/// ops, as text) on stdin and returns its one JSON output line, verbatim.
pub async fn run_nest_client(node: &Path, addr: &str, ops: &str) -> String {
    run_nest_client_env(node, addr, ops, &[]).await
}

/// [`run_nest_client`] with extra environment variables (e.g. `TLS_CA`).
pub async fn run_nest_client_env(
    node: &Path,
    addr: &str,
    ops: &str,
    env: &[(&str, &str)],
) -> String {
    let (host, port) = addr.rsplit_once(':').expect("host:port");
    let mut cmd = Command::new(node);
    cmd.arg("client.mjs")
        .arg(host)
        .arg(port)
        .current_dir(nest_dir())
        .env("NO_COLOR", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("could not start node client.mjs");
    let mut stdin = child.stdin.take().expect("piped stdin");
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let ops = ops.to_string();
    let io = async move {
        let write = async move {
            stdin.write_all(ops.as_bytes()).await?;
            stdin.shutdown().await?;
            drop(stdin);
            Ok::<_, std::io::Error>(())
        };
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let (w, o, e) = tokio::join!(
            write,
            stdout.read_to_end(&mut out),
            stderr.read_to_end(&mut err)
        );
        w?;
        o?;
        e?;
        let status = child.wait().await?;
        Ok::<_, std::io::Error>((status, out, err))
    };
    let (status, out, err) = match tokio::time::timeout(Duration::from_secs(60), io).await {
        Ok(Ok(done)) => done,
        Ok(Err(e)) => panic!("client.mjs: i/o error {e}"),
        Err(_) => panic!("client.mjs did not finish within 60 s"),
    };
    let out = String::from_utf8_lossy(&out);
    let err = String::from_utf8_lossy(&err);
    assert!(
        status.success(),
        "client.mjs exited with {status}\nstdout:\n{out}\nstderr:\n{err}"
    );
    let line = out.lines().find(|l| l.starts_with('[')).unwrap_or_else(|| {
        panic!("client.mjs printed no JSON array line\nstdout:\n{out}\nstderr:\n{err}")
    });
    line.to_string()
}

// ---------------------------------------------------------------------------------------
// Example binaries
// ---------------------------------------------------------------------------------------

/// The directory the examples of this build are in: `<target>/<profile>/examples`, found
/// from the test executable (`<target>/<profile>/deps/<test>-<hash>`).
fn examples_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let deps = exe.parent().expect("test executable has a directory");
    let profile = deps.parent().expect("deps has a parent");
    profile.join("examples")
}

/// Builds example `name` with cargo (once per test process; a no-op when fresh) and
/// returns the binary's path.
pub async fn example_binary(name: &str) -> PathBuf {
    static BUILT: tokio::sync::Mutex<Option<HashSet<String>>> = tokio::sync::Mutex::const_new(None);
    let dir = examples_dir();
    let bin = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    let mut built = BUILT.lock().await;
    let built = built.get_or_insert_with(HashSet::new);
    if !built.contains(name) {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.arg("build")
            .arg("--manifest-path")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
            .arg("--example")
            .arg(name)
            .kill_on_drop(true);
        let profile = dir
            .parent()
            .and_then(|p| p.file_name())
            .and_then(|p| p.to_str())
            .unwrap_or("debug");
        match profile {
            "debug" => {}
            "release" => {
                cmd.arg("--release");
            }
            other => {
                cmd.arg("--profile").arg(other);
            }
        }
        let out = tokio::time::timeout(Duration::from_secs(600), cmd.output())
            .await
            .unwrap_or_else(|_| panic!("`cargo build --example {name}` took more than 10 minutes"))
            .unwrap_or_else(|e| panic!("could not run `cargo build --example {name}`: {e}"));
        assert!(
            out.status.success(),
            "`cargo build --example {name}` failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        built.insert(name.to_string());
    }
    assert!(
        bin.is_file(),
        "example binary {} does not exist after building it",
        bin.display()
    );
    bin
}

/// Builds and starts example `name` with `PORT=0` plus `env` and waits for `READY <port>`.
pub async fn spawn_example(name: &str, env: &[(&str, &str)]) -> Proc {
    let mut proc = start_example(name, env).await;
    proc.wait_ready().await;
    proc
}

/// Builds and starts example `name` with `PORT=0` plus `env`, without waiting for it.
pub async fn start_example(name: &str, env: &[(&str, &str)]) -> Proc {
    let bin = example_binary(name).await;
    let mut cmd = Command::new(bin);
    cmd.env("HOST", "127.0.0.1")
        .env("PORT", "0")
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    Proc::spawn(format!("example {name}"), cmd)
}

// ---------------------------------------------------------------------------------------
// In-process nestling server
// ---------------------------------------------------------------------------------------

/// A nestling server serving on a background task. Shut down on drop.
pub struct RunningServer {
    /// Where it listens.
    pub addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), nestling::ServerError>>>,
}

impl RunningServer {
    /// Binds `server` to an ephemeral port on 127.0.0.1 and serves it until dropped or
    /// [`stop`](Self::stop)ped.
    pub async fn start(server: nestling::Server) -> Self {
        let listening = server
            .listen("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listening.local_addr();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(listening.serve_with_shutdown(async move {
            let _ = rx.await;
        }));
        Self {
            addr,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Shuts down gracefully and checks that serving ended without an error.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            match tokio::time::timeout(Duration::from_secs(30), task).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => panic!("server ended with an error: {e}"),
                Ok(Err(e)) => panic!("server task failed: {e}"),
                Err(_) => panic!("server did not shut down within 30 s"),
            }
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

// ---------------------------------------------------------------------------------------
// Waiting on shared state
// ---------------------------------------------------------------------------------------

/// Polls `probe` until it returns `Some`, for at most `timeout`; `None` on timeout.
pub async fn eventually<T>(timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ---------------------------------------------------------------------------------------
// HTTP/1.1 GET
// ---------------------------------------------------------------------------------------

/// A parsed HTTP response.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Header names (lower-cased) and values.
    pub headers: Vec<(String, String)>,
    /// The body, decoded as UTF-8 (lossy), de-chunked.
    pub body: String,
}

impl HttpResponse {
    /// First header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `GET path` on `127.0.0.1:port` with `Connection: close`, bounded by [`WAIT_TIMEOUT`].
pub async fn http_get(port: u16, path: &str) -> Result<HttpResponse, String> {
    http_get_within(port, path, WAIT_TIMEOUT).await
}

/// `GET path` on `127.0.0.1:port`, failing after `timeout` (connect + reply).
pub async fn http_get_within(
    port: u16,
    path: &str,
    timeout: Duration,
) -> Result<HttpResponse, String> {
    match tokio::time::timeout(timeout, http_get_raw(port, path)).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "GET {path} on port {port}: no complete response within {timeout:?}"
        )),
    }
}

async fn http_get_raw(port: u16, path: &str) -> Result<HttpResponse, String> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| format!("connect to 127.0.0.1:{port}: {e}"))?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("write request: {e}"))?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .await
        .map_err(|e| format!("read response: {e}"))?;
    parse_http_response(&raw)
}

fn parse_http_response(raw: &[u8]) -> Result<HttpResponse, String> {
    let shown = || String::from_utf8_lossy(raw).into_owned();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("no end of headers in response {:?}", shown()))?;
    let head = std::str::from_utf8(&raw[..split])
        .map_err(|_| format!("non-UTF-8 headers {:?}", shown()))?;
    let mut body = raw[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(format!("not an HTTP/1.x response: {status_line:?}"));
    }
    let status = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        body = dechunk(&body).ok_or_else(|| format!("bad chunked body in {:?}", shown()))?;
    } else if let Some(len) = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok())
    {
        if body.len() < len {
            return Err(format!(
                "body shorter than content-length {len}: {:?}",
                shown()
            ));
        }
        body.truncate(len);
    }
    Ok(HttpResponse {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..eol]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        if data.len() < size + 2 {
            return None;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

// ---------------------------------------------------------------------------------------
// Logging
// ---------------------------------------------------------------------------------------

/// Routes nestling's `tracing` output to the test's captured output (`RUST_LOG`, default
/// `warn`). Safe to call from every test.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

// ---------------------------------------------------------------------------------------
// Capturing `tracing` output
// ---------------------------------------------------------------------------------------

/// The `tracing` output of this test process, captured as text so a test can assert that a
/// reason was logged. Install it with [`capture_tracing`]; do not combine it with
/// [`init_tracing`] in the same test binary (only one global subscriber can exist).
#[derive(Clone)]
pub struct LogCapture {
    buf: Arc<Mutex<Vec<u8>>>,
}

/// One `io::Write` handle into a [`LogCapture`] (the fmt layer writes each event at once).
pub struct LogCaptureWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogCaptureWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs (once per test process) a global subscriber that writes every event of the
/// `nestling*` crates at DEBUG and above, and WARN and above of everything else, without
/// colours, into a shared buffer; returns a handle to that buffer. Panics if another global
/// subscriber was installed first.
pub fn capture_tracing() -> LogCapture {
    static CAPTURE: OnceLock<LogCapture> = OnceLock::new();
    CAPTURE
        .get_or_init(|| {
            let buf = Arc::new(Mutex::new(Vec::new()));
            let sink = buf.clone();
            tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(
                    "warn,nestling=debug,nestling_runtime=debug",
                ))
                .with_ansi(false)
                .with_writer(move || LogCaptureWriter(sink.clone()))
                .try_init()
                .expect("capture_tracing: another global tracing subscriber is already set");
            LogCapture { buf }
        })
        .clone()
}

impl LogCapture {
    /// Every line logged so far (by every test of this process).
    pub fn lines(&self) -> Vec<String> {
        let text = String::from_utf8_lossy(&self.buf.lock().unwrap()).into_owned();
        text.lines().map(str::to_owned).collect()
    }

    /// Lines logged so far that satisfy `pred`.
    pub fn matching(&self, pred: impl Fn(&str) -> bool) -> Vec<String> {
        self.lines().into_iter().filter(|l| pred(l)).collect()
    }

    /// Lines carrying the field `peer=<addr>` (nestling's server logs name the peer that way),
    /// i.e. what the server logged about one client connection.
    pub fn for_peer(&self, addr: SocketAddr) -> Vec<String> {
        let field = format!("peer={addr}");
        self.matching(|l| {
            l.match_indices(&field)
                .any(|(at, _)| !l[at + field.len()..].starts_with(|c: char| c.is_ascii_digit()))
        })
    }

    /// Waits until some line satisfies `pred` and returns it; `None` after `timeout`.
    pub async fn wait_for(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        eventually(timeout, || self.lines().into_iter().find(|l| pred(l))).await
    }
}

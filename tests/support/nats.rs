//! NATS test infrastructure: a real `nats-server` per test (on a free loopback port, killed on
//! drop) and the NestJS peers of `tests/nest` in NATS mode (`TRANSPORT=nats`).
//!
//! The wire these peers speak is documented in `docs/nats-wire.md`.
//!
//! ```ignore
//! let Some(nats) = support::nats::require_nats("my_test") else { return };
//! let Some(node) = support::nats::require_nest_nats("my_test") else { return };
//! let server = NatsServer::start(&nats).await;
//! let nest = spawn_nest_nats_service(&node, &server.url(), None, None).await;
//! let out = run_nest_nats_client(&node, &server.url(), r#"[{"op":"send","pattern":"sum","data":[1,2,3]}]"#).await;
//! assert_eq!(out, r#"[{"ok":6}]"#);
//! ```
//!
//! Set `NESTLING_NATS_TRACE=1` to start `nats-server` with `-DV` (protocol trace): its output
//! is printed when a test panics while the server is alive (see [`NatsServer::output`]).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::process::Command;

use super::node::{nest_dir, require_node, run_nest_client_env, spawn_node};
use super::process::{find_on_path, Proc};
use super::wait::READY_TIMEOUT;

const NATS_REQUIRED: &str =
    "nats-server is required for the NATS tests: apt-get install -y nats-server";

const NATS_NODE_REQUIRED: &str =
    "@nats-io/transport-node is required for the NestJS NATS tests: run `npm ci` in tests/nest";

/// The line `user-service.mjs` prints once it serves over NATS.
pub const NEST_NATS_READY: &str = "READY nats";

// ---------------------------------------------------------------------------------------
// Availability
// ---------------------------------------------------------------------------------------

/// With `CI` set: panics with `required` and `why`. Otherwise prints a loud `SKIPPED` banner
/// for `test` to stderr (straight to the handle: libtest captures `eprintln!` of passing
/// tests, and a skip must be visible).
pub(super) fn skip_or_panic(test: &str, why: &str, required: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("{required} ({why})");
    }
    let banner = "=".repeat(78);
    let _ = writeln!(
        std::io::stderr().lock(),
        "\n{banner}\nSKIPPED: {test}: {why}.\n         {required}.\n{banner}"
    );
}

/// Why `nats-server` cannot be used, or its path: `PATH` first, then `/usr/sbin` (Debian's
/// package) and `/usr/local/bin`.
fn probe_nats() -> Result<PathBuf, String> {
    let bin = find_on_path("nats-server")
        .or_else(|| {
            ["/usr/sbin/nats-server", "/usr/local/bin/nats-server"]
                .iter()
                .map(PathBuf::from)
                .find(|p| p.is_file())
        })
        .ok_or_else(|| {
            "`nats-server` is not on PATH, in /usr/sbin or in /usr/local/bin".to_string()
        })?;
    let out = std::process::Command::new(&bin)
        .arg("--version")
        .output()
        .map_err(|e| format!("running `{} --version` failed: {e}", bin.display()))?;
    if !out.status.success() {
        return Err(format!(
            "`{} --version` exited with {}",
            bin.display(),
            out.status
        ));
    }
    Ok(bin)
}

/// The `nats-server` executable, if there is one.
///
/// Otherwise: with `CI` set this panics (the NATS tests must run in CI); without it, it prints
/// a loud `SKIPPED` line for `test` and returns `None`, and the test returns.
///
/// ```ignore
/// let Some(nats) = support::nats::require_nats("my_test") else { return };
/// ```
pub fn require_nats(test: &str) -> Option<PathBuf> {
    static PROBE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match PROBE.get_or_init(probe_nats) {
        Ok(bin) => Some(bin.clone()),
        Err(why) => {
            skip_or_panic(test, why, NATS_REQUIRED);
            None
        }
    }
}

/// The `node` executable, if Node, `tests/nest/node_modules` ([`require_node`]) and the NATS
/// client package `@nats-io/transport-node` are there. Same skip/panic rules.
pub fn require_nest_nats(test: &str) -> Option<PathBuf> {
    let node = require_node(test)?;
    let package = nest_dir()
        .join("node_modules")
        .join("@nats-io")
        .join("transport-node");
    if package.is_dir() {
        Some(node)
    } else {
        skip_or_panic(
            test,
            &format!("{} is missing", package.display()),
            NATS_NODE_REQUIRED,
        );
        None
    }
}

// ---------------------------------------------------------------------------------------
// nats-server
// ---------------------------------------------------------------------------------------

/// A `nats-server` on `127.0.0.1:<port>` (no monitoring port, no cluster, no JetStream).
/// Killed on drop.
pub struct NatsServer {
    bin: PathBuf,
    port: u16,
    proc: Option<Proc>,
}

impl NatsServer {
    /// Starts `nats-server` on a free loopback port and waits until it accepts clients.
    pub async fn start(bin: &Path) -> NatsServer {
        // The port is free when picked, but another process may take it before nats-server
        // binds it: then try another one.
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port();
            match spawn_server(bin, port).await {
                Ok(proc) => {
                    return NatsServer {
                        bin: bin.to_path_buf(),
                        port,
                        proc: Some(proc),
                    }
                }
                Err(why) => last = why,
            }
        }
        panic!("nats-server did not start: {last}");
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:<port>`, for raw TCP connections.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Whether the server process is running (not [`stop`](Self::stop)ped).
    pub fn is_running(&self) -> bool {
        self.proc.is_some()
    }

    /// Kills the server (SIGKILL: clients see the connection drop) and waits until it is gone.
    pub async fn stop(&mut self) {
        if let Some(mut proc) = self.proc.take() {
            proc.kill().await;
        }
    }

    /// Stops the server if it runs, then starts a new one on the **same** port (clients can
    /// reconnect to the same URL). Retries for a few seconds while the port is still taken.
    pub async fn restart(&mut self) {
        self.stop().await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match spawn_server(&self.bin, self.port).await {
                Ok(proc) => {
                    self.proc = Some(proc);
                    return;
                }
                Err(why) if tokio::time::Instant::now() >= deadline => {
                    panic!("nats-server did not restart on port {}: {why}", self.port)
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// What the server printed so far (its log goes to stderr), for failure messages.
    pub fn output(&self) -> String {
        match &self.proc {
            Some(proc) => proc.dump(),
            None => "(nats-server is stopped)\n".to_string(),
        }
    }
}

/// A port that was free on 127.0.0.1 a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// Spawns `nats-server -a 127.0.0.1 -p <port>` and waits until it is ready: its
/// `Server is ready` log line, then a TCP connection that receives the `INFO` line.
async fn spawn_server(bin: &Path, port: u16) -> Result<Proc, String> {
    let mut cmd = Command::new(bin);
    // No config file, so: no monitoring port (-m), no cluster (so nothing to advertise),
    // no JetStream. Logs go to stderr.
    cmd.arg("-a")
        .arg("127.0.0.1")
        .arg("-p")
        .arg(port.to_string());
    if std::env::var_os("NESTLING_NATS_TRACE").is_some_and(|v| v != "0") {
        cmd.arg("-DV");
    }
    let mut proc = Proc::spawn(format!("nats-server :{port}"), cmd);
    proc.port = port;
    let ready = proc
        .stderr
        .wait_for(|l| l.contains("Server is ready"), 1, READY_TIMEOUT)
        .await;
    if let Err(why) = ready {
        let out = proc.dump();
        proc.kill().await;
        return Err(format!("no `Server is ready` line: {why}\n{out}"));
    }
    match read_info(port).await {
        Ok(()) => Ok(proc),
        Err(why) => {
            let out = proc.dump();
            proc.kill().await;
            Err(format!("connecting to 127.0.0.1:{port}: {why}\n{out}"))
        }
    }
}

/// Connects to `127.0.0.1:<port>` and reads until the first line, which must be `INFO {…}`.
async fn read_info(port: u16) -> Result<(), String> {
    let io = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        while !buf.contains(&b'\n') {
            let n = stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("closed before INFO".to_string());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        if buf.starts_with(b"INFO ") {
            Ok(())
        } else {
            Err(format!(
                "first line is not INFO: {:?}",
                String::from_utf8_lossy(&buf)
            ))
        }
    };
    tokio::time::timeout(Duration::from_secs(5), io)
        .await
        .map_err(|_| "no INFO line within 5 s".to_string())?
}

// ---------------------------------------------------------------------------------------
// NestJS peers over NATS
// ---------------------------------------------------------------------------------------

/// Starts `tests/nest/user-service.mjs` with `TRANSPORT=nats` on `nats_url`, optionally in
/// queue group `queue` (`NATS_QUEUE`) and with `INSTANCE` (what its `whoami` handler
/// returns; default `nest`), and waits for its `READY nats` line (printed after a flush, so
/// every subscription is registered with the NATS server by then).
pub async fn spawn_nest_nats_service(
    node: &Path,
    nats_url: &str,
    queue: Option<&str>,
    instance: Option<&str>,
) -> Proc {
    let mut cmd = Command::new(node);
    cmd.arg("user-service.mjs")
        .current_dir(nest_dir())
        .env("TRANSPORT", "nats")
        .env("NATS_URL", nats_url)
        .env("NO_COLOR", "1")
        .env_remove("NATS_QUEUE")
        .env_remove("INSTANCE");
    if let Some(queue) = queue {
        cmd.env("NATS_QUEUE", queue);
    }
    if let Some(instance) = instance {
        cmd.env("INSTANCE", instance);
    }
    let name = match instance {
        Some(instance) => format!("user-service.mjs (nats, {instance})"),
        None => "user-service.mjs (nats)".to_string(),
    };
    let proc = Proc::spawn(name, cmd);
    if let Err(why) = proc
        .stdout
        .wait_for(|l| l == NEST_NATS_READY, 1, READY_TIMEOUT)
        .await
    {
        proc.fail(&format!("no `{NEST_NATS_READY}` line: {why}"));
    }
    proc
}

/// Starts `tests/nest/gateway.mjs` (HTTP on an ephemeral port, `READY <port>`) calling the
/// user service over NATS at `nats_url`.
pub async fn spawn_nest_nats_gateway(node: &Path, nats_url: &str) -> Proc {
    spawn_node(
        node,
        "gateway.mjs",
        &[("TRANSPORT", "nats"), ("NATS_URL", nats_url)],
    )
    .await
}

/// Runs `tests/nest/client.mjs` with `TRANSPORT=nats` against `nats_url` with `ops` (a JSON
/// array of ops, as text) and returns its one JSON output line, verbatim. All ops share one
/// `ClientNats` (one NATS connection).
pub async fn run_nest_nats_client(node: &Path, nats_url: &str, ops: &str) -> String {
    // The host/port arguments are ignored in NATS mode.
    run_nest_client_env(
        node,
        "127.0.0.1:0",
        ops,
        &[("TRANSPORT", "nats"), ("NATS_URL", nats_url)],
    )
    .await
}

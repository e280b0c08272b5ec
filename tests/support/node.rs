//! The NestJS peers of `tests/nest`: whether Node and the pinned Nest project can be used,
//! starting its scripts, and running its `client.mjs`.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

use super::process::{find_on_path, Proc};

const NODE_REQUIRED: &str =
    "node/npm are required for the NestJS interop tests; install Node >= 20 and run `npm ci` in tests/nest";

/// `tests/nest`: the NestJS peer project.
pub fn nest_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("nest")
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

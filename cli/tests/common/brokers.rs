//! Brokers and broker peers for the CLI tests: a real `nats-server` per test, one real
//! RabbitMQ node per test binary (it takes seconds to boot), the NestJS user service and
//! client of `tests/nest` in NATS/RMQ mode, and the workspace's `user_service` example.
//!
//! Missing software: a loud `SKIPPED` line and the test returns, or a panic with `CI` set
//! (the rule of the workspace's tests/support).

use std::io::Write as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

use super::{nest_dir, require_node, Proc};

/// How long a peer may take to print its `READY` line (Node + Nest start slowly on a
/// loaded machine; the example may be built first).
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// With `CI` set: panics. Otherwise a loud `SKIPPED` banner on stderr (straight to the
/// handle: libtest captures `eprintln!` of passing tests).
pub fn skip_or_panic(test: &str, why: &str, required: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("{required} ({why})");
    }
    let banner = "=".repeat(78);
    let _ = writeln!(
        std::io::stderr().lock(),
        "\n{banner}\nSKIPPED: {test}: {why}.\n         {required}.\n{banner}"
    );
}

/// A port that was free on 127.0.0.1 a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// A queue name no other test uses.
pub fn unique_queue(test: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "cli_{test}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

// ---------------------------------------------------------------------------------------
// nats-server
// ---------------------------------------------------------------------------------------

/// The `nats-server` executable (PATH, /usr/sbin, /usr/local/bin), if there is one.
pub fn require_nats(test: &str) -> Option<PathBuf> {
    let found = super::find_on_path("nats-server").or_else(|| {
        ["/usr/sbin/nats-server", "/usr/local/bin/nats-server"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
    });
    if found.is_none() {
        skip_or_panic(
            test,
            "`nats-server` is not on PATH, in /usr/sbin or in /usr/local/bin",
            "nats-server is required for the NATS tests: apt-get install -y nats-server",
        );
    }
    found
}

/// A `nats-server` on a free loopback port, killed on drop.
pub struct NatsServer {
    pub proc: Proc,
    pub port: u16,
}

impl NatsServer {
    pub async fn start(bin: &Path) -> NatsServer {
        let mut last = String::new();
        // The port may be taken between picking and binding it: try another.
        for _ in 0..5 {
            let port = free_port();
            let mut cmd = Command::new(bin);
            cmd.args(["-a", "127.0.0.1", "-p", &port.to_string()]);
            let proc = Proc::spawn(format!("nats-server :{port}"), cmd);
            match proc
                .stderr
                .wait_for(|l| l.contains("Server is ready"), 1, READY_TIMEOUT)
                .await
            {
                Ok(_) => return NatsServer { proc, port },
                Err(why) => last = format!("{why}\n{}", proc.dump()),
            }
        }
        panic!("nats-server did not start: {last}");
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

/// `node`, if Node, tests/nest/node_modules and `@nats-io/transport-node` are there.
pub fn require_nest_nats(test: &str) -> Option<PathBuf> {
    require_nest_packages(test, &["@nats-io/transport-node"])
}

/// `node`, if Node, tests/nest/node_modules and Nest's AMQP packages are there.
pub fn require_nest_rmq(test: &str) -> Option<PathBuf> {
    require_nest_packages(test, &["amqplib", "amqp-connection-manager"])
}

fn require_nest_packages(test: &str, packages: &[&str]) -> Option<PathBuf> {
    let node = require_node(test)?;
    let modules = nest_dir().join("node_modules");
    for package in packages {
        if !modules.join(package).is_dir() {
            skip_or_panic(
                test,
                &format!("{} is missing", modules.join(package).display()),
                "the NestJS broker tests need `npm ci` in tests/nest",
            );
            return None;
        }
    }
    Some(node)
}

// ---------------------------------------------------------------------------------------
// RabbitMQ
// ---------------------------------------------------------------------------------------

const RMQ_SCRIPT: &str = "/usr/lib/rabbitmq/bin/rabbitmq-server";
const RMQ_BOOT_TIMEOUT: Duration = Duration::from_secs(90);

/// A RabbitMQ node on a free loopback port with a throw-away data directory, shared by
/// the tests of one binary and stopped (its process group) once that process exits.
pub struct RmqBroker {
    port: u16,
}

impl RmqBroker {
    /// The shared node (booted on first use), or `None` after SKIPPED without
    /// rabbitmq-server.
    pub fn shared(test: &str) -> Option<&'static RmqBroker> {
        if !Path::new(RMQ_SCRIPT).is_file() {
            skip_or_panic(
                test,
                &format!("{RMQ_SCRIPT} is missing"),
                "rabbitmq-server is required for the RabbitMQ tests: apt-get install -y rabbitmq-server",
            );
            return None;
        }
        static SHARED: OnceLock<RmqBroker> = OnceLock::new();
        Some(SHARED.get_or_init(RmqBroker::boot))
    }

    // The node outlives every test of the binary: the watchdog shell stops it, and init
    // reaps it, once this process has exited.
    #[allow(clippy::zombie_processes)]
    fn boot() -> RmqBroker {
        let port = free_port();
        let dist_port = free_port();
        let dir =
            std::env::temp_dir().join(format!("nestling-cli-rmq-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for sub in ["mnesia", "log", "home"] {
            std::fs::create_dir_all(dir.join(sub)).expect("create the broker's data directory");
        }
        std::fs::write(dir.join("enabled_plugins"), "[].\n").expect("write enabled_plugins");
        std::fs::write(
            dir.join("rabbitmq.conf"),
            format!("listeners.tcp.default = 127.0.0.1:{port}\nloopback_users = none\n"),
        )
        .expect("write rabbitmq.conf");
        let mut child = std::process::Command::new(RMQ_SCRIPT)
            .env("HOME", dir.join("home"))
            .env("RABBITMQ_NODENAME", format!("nestlingcli{port}@localhost"))
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", port.to_string())
            .env("RABBITMQ_DIST_PORT", dist_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", dir.join("log"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir.join("enabled_plugins"))
            .env("RABBITMQ_CONFIG_FILE", dir.join("rabbitmq"))
            .env("RABBITMQ_PID_FILE", dir.join("pid"))
            .env("RABBITMQ_LOGS", dir.join("log").join("node.log"))
            // Erlang writes crash dumps and Mnesia files to its working directory.
            .current_dir(dir.join("home"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group: stopping it stops Erlang and its helpers together.
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("could not start {RMQ_SCRIPT}: {e}"));
        // Stop the node (and remove its data) once this test binary is gone.
        let watchdog = format!(
            "while kill -0 {me} 2>/dev/null; do sleep 1; done; kill -TERM -{node} 2>/dev/null; \
             sleep 10; kill -KILL -{node} 2>/dev/null; rm -rf '{dir}'",
            me = std::process::id(),
            node = child.id(),
            dir = dir.display(),
        );
        let _ = std::process::Command::new("sh")
            .args(["-c", &watchdog])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn();
        let log = || std::fs::read_to_string(dir.join("log").join("node.log")).unwrap_or_default();
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "rabbitmq-server exited with {status} while booting\n{}",
                    log()
                );
            }
            if started.elapsed() > RMQ_BOOT_TIMEOUT {
                panic!(
                    "rabbitmq-server did not listen on {port} within {RMQ_BOOT_TIMEOUT:?}\n{}",
                    log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        RmqBroker { port }
    }

    /// `amqp://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("amqp://127.0.0.1:{}", self.port)
    }

    /// `amqp://127.0.0.1:<port>?queue=<queue>`.
    pub fn queue_url(&self, queue: &str) -> String {
        format!("{}?queue={queue}", self.url())
    }
}

// ---------------------------------------------------------------------------------------
// Peers
// ---------------------------------------------------------------------------------------

/// Starts `tests/nest/user-service.mjs` with `env` (`TRANSPORT`, …) and waits for `ready`.
pub async fn spawn_nest_service(node: &Path, env: &[(&str, &str)], ready: &str) -> Proc {
    let mut cmd = Command::new(node);
    cmd.arg("user-service.mjs")
        .current_dir(nest_dir())
        .env("NO_COLOR", "1")
        .env_remove("INSTANCE")
        .env_remove("NATS_QUEUE");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let proc = Proc::spawn(format!("user-service.mjs {env:?}"), cmd);
    if let Err(why) = proc.stdout.wait_for(|l| l == ready, 1, READY_TIMEOUT).await {
        proc.fail(&format!("no `{ready}` line: {why}"));
    }
    proc
}

/// Runs `tests/nest/client.mjs` with `env` and `ops` on stdin; returns its one JSON line.
pub async fn run_nest_client(node: &Path, env: &[(&str, &str)], ops: &str) -> String {
    let mut cmd = Command::new(node);
    cmd.arg("client.mjs")
        .current_dir(nest_dir())
        .env("NO_COLOR", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("start node client.mjs");
    let mut stdin = child.stdin.take().expect("piped stdin");
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let ops = ops.to_owned();
    let io = async move {
        let write = async move {
            stdin.write_all(ops.as_bytes()).await?;
            stdin.shutdown().await
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
    let (status, out, err) = tokio::time::timeout(READY_TIMEOUT, io)
        .await
        .expect("client.mjs finishes within a minute")
        .expect("client.mjs i/o");
    let (out, err) = (String::from_utf8_lossy(&out), String::from_utf8_lossy(&err));
    assert!(
        status.success(),
        "client.mjs failed with {status}\nstdout: {out}\nstderr: {err}"
    );
    out.trim_end().to_owned()
}

/// Builds the workspace's `user_service` example (once per test binary) and starts it with
/// `env` (`RMQ_URL`, `RMQ_QUEUE`, …), waiting for `ready`.
pub async fn spawn_user_service_example(env: &[(&str, &str)], ready: &str) -> Proc {
    let bin = user_service_example().await;
    let mut cmd = Command::new(bin);
    cmd.env("RUST_LOG", "warn").env("NO_COLOR", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let proc = Proc::spawn(format!("example user_service {env:?}"), cmd);
    if let Err(why) = proc.stdout.wait_for(|l| l == ready, 1, READY_TIMEOUT).await {
        proc.fail(&format!("no `{ready}` line: {why}"));
    }
    proc
}

async fn user_service_example() -> PathBuf {
    static BUILT: tokio::sync::OnceCell<PathBuf> = tokio::sync::OnceCell::const_new();
    BUILT
        .get_or_init(|| async {
            // `<target>/debug/deps/<test>-<hash>` → `<target>/debug/examples/user_service`.
            let exe = std::env::current_exe().expect("current_exe");
            let profile_dir = exe
                .parent()
                .and_then(Path::parent)
                .expect("the test executable is in <target>/<profile>/deps");
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let manifest = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join("Cargo.toml");
            let mut cmd = Command::new(cargo);
            cmd.arg("build")
                .arg("--manifest-path")
                .arg(manifest)
                .args(["--example", "user_service"])
                .kill_on_drop(true);
            if profile_dir.file_name().is_some_and(|p| p == "release") {
                cmd.arg("--release");
            }
            let out = tokio::time::timeout(Duration::from_secs(900), cmd.output())
                .await
                .expect("`cargo build --example user_service` within 15 minutes")
                .expect("run cargo");
            assert!(
                out.status.success(),
                "`cargo build --example user_service` failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let bin = profile_dir.join("examples").join("user_service");
            assert!(bin.is_file(), "{} was not built", bin.display());
            bin
        })
        .await
        .clone()
}

/// Starts `nestling listen <addr> <extra>` and waits for its `listening on` line.
pub async fn listen_on(addr: &str, extra: &[&str]) -> Proc {
    let mut args = vec!["listen", addr];
    args.extend_from_slice(extra);
    let proc = Proc::nestling(&args);
    proc.wait_stderr("`listening on …`", |l| {
        l.starts_with("nestling: listening on ")
    })
    .await;
    proc
}

/// Sends SIGTERM to `proc` and returns its exit code once it stopped.
pub async fn terminate(proc: &mut Proc) -> Option<i32> {
    let pid = proc.child.id().expect("a running process").to_string();
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status();
    tokio::time::timeout(Duration::from_secs(15), proc.child.wait())
        .await
        .unwrap_or_else(|_| proc.fail("did not stop within 15 s of SIGTERM"))
        .expect("wait")
        .code()
}

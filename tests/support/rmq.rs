//! RabbitMQ test infrastructure: a real `rabbitmq-server` node (Debian's package) on free
//! loopback ports with a throw-away data directory, and the NestJS peers of `tests/nest` in
//! RMQ mode (`TRANSPORT=rmq`).
//!
//! A node takes seconds to boot, so the tests of one binary share one
//! ([`RmqBroker::shared`]), each on queues of its own; a test that restarts the broker
//! starts its own ([`RmqBroker::start`]). Every node is stopped when its handle drops or,
//! for the shared one, when the test binary exits (a watchdog shell waits for it).
//!
//! ```ignore
//! let Some(broker) = support::rmq::RmqBroker::shared("my_test") else { return };
//! let queue = support::rmq::unique_queue("my_test");
//! let nest = spawn_nest_rmq_service(&node, &broker.url(), &queue, &[]).await;
//! ```

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::nats::skip_or_panic;
use super::node::{nest_dir, require_node, run_nest_client_env};
use super::process::Proc;
use super::wait::READY_TIMEOUT;

const RMQ_REQUIRED: &str =
    "rabbitmq-server is required for the RabbitMQ tests: apt-get install -y rabbitmq-server";
const RMQ_NODE_REQUIRED: &str =
    "amqplib and amqp-connection-manager are required for the NestJS RMQ tests: run `npm ci` in tests/nest";

/// The line `user-service.mjs` prints once it consumes over RMQ.
pub const NEST_RMQ_READY: &str = "READY rmq";

/// How long a node may take to boot (Erlang, Mnesia, the listener).
const BOOT_TIMEOUT: Duration = Duration::from_secs(90);

/// The node's start script, from Debian's `rabbitmq-server` package.
fn probe() -> Result<PathBuf, String> {
    let script = PathBuf::from("/usr/lib/rabbitmq/bin/rabbitmq-server");
    if script.is_file() {
        Ok(script)
    } else {
        Err(format!("{} is missing", script.display()))
    }
}

fn require_rmq(test: &str) -> Option<PathBuf> {
    static PROBE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match PROBE.get_or_init(probe) {
        Ok(script) => Some(script.clone()),
        Err(why) => {
            skip_or_panic(test, why, RMQ_REQUIRED);
            None
        }
    }
}

/// The `node` executable, if Node, `tests/nest/node_modules` and the AMQP packages Nest's
/// RMQ transport loads are there. Same skip/panic rules as the broker.
pub fn require_nest_rmq(test: &str) -> Option<PathBuf> {
    let node = require_node(test)?;
    let modules = nest_dir().join("node_modules");
    for package in ["amqplib", "amqp-connection-manager"] {
        if !modules.join(package).is_dir() {
            let why = format!("{} is missing", modules.join(package).display());
            skip_or_panic(test, &why, RMQ_NODE_REQUIRED);
            return None;
        }
    }
    Some(node)
}

/// A queue name no other test uses.
pub fn unique_queue(test: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{test}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A RabbitMQ node on `127.0.0.1:<port>`, its data under a temporary directory.
pub struct RmqBroker {
    script: PathBuf,
    port: u16,
    dist_port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl RmqBroker {
    /// The node the tests of this binary share (started on first use). Without
    /// rabbitmq-server: `None` after a loud SKIPPED (or a panic with `CI` set).
    pub fn shared(test: &str) -> Option<&'static RmqBroker> {
        let script = require_rmq(test)?;
        static SHARED: OnceLock<RmqBroker> = OnceLock::new();
        Some(SHARED.get_or_init(|| {
            let broker = RmqBroker::boot(&script);
            broker.stop_when_this_process_exits();
            broker
        }))
    }

    /// A node of the test's own (for tests that stop or restart it). Stopped on drop.
    pub fn start(test: &str) -> Option<RmqBroker> {
        let script = require_rmq(test)?;
        Some(RmqBroker::boot(&script))
    }

    fn boot(script: &Path) -> RmqBroker {
        let port = free_port();
        let dist_port = free_port();
        let dir = std::env::temp_dir().join(format!("nestling-rmq-{}-{port}", std::process::id()));
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
        let mut broker = RmqBroker {
            script: script.to_path_buf(),
            port,
            dist_port,
            dir,
            child: None,
        };
        broker.run();
        broker
    }

    /// Starts the node process and waits until it accepts AMQP connections.
    fn run(&mut self) {
        let dir = &self.dir;
        let mut cmd = Command::new(&self.script);
        // Its working directory is its data directory: Erlang and Mnesia write crash dumps
        // there, never into the repository.
        cmd.current_dir(dir)
            .env("HOME", dir.join("home"))
            .env(
                "RABBITMQ_NODENAME",
                format!("nestling{}@localhost", self.port),
            )
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", dir.join("log"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir.join("enabled_plugins"))
            .env("RABBITMQ_CONFIG_FILE", dir.join("rabbitmq"))
            .env("RABBITMQ_PID_FILE", dir.join("pid"))
            .env("RABBITMQ_LOGS", dir.join("log").join("node.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group: stopping it stops Erlang and its helpers together.
            .process_group(0);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("could not start {}: {e}", self.script.display()));
        self.child = Some(child);
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!(
                    "rabbitmq-server exited with {status} while booting\n{}",
                    self.log()
                );
            }
            if started.elapsed() > BOOT_TIMEOUT {
                panic!(
                    "rabbitmq-server did not listen on {} within {BOOT_TIMEOUT:?}\n{}",
                    self.port,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `amqp://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("amqp://127.0.0.1:{}", self.port)
    }

    /// A client address for `queue`: `amqp://127.0.0.1:<port>?queue=<queue>`.
    pub fn client_url(&self, queue: &str) -> String {
        format!("{}?queue={queue}", self.url())
    }

    /// Runs `rabbitmqctl <args>` against this node (e.g. `set_vm_memory_high_watermark 0`
    /// raises the memory alarm: the broker blocks connections that publish) and returns its
    /// output; panics if it fails.
    pub fn ctl(&self, args: &[&str]) -> String {
        let ctl = self.script.with_file_name("rabbitmqctl");
        let out = Command::new(&ctl)
            .arg("-n")
            .arg(format!("nestling{}@localhost", self.port))
            .args(args)
            .current_dir(&self.dir)
            // The node's Erlang cookie is in its HOME.
            .env("HOME", self.dir.join("home"))
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("could not run {}: {e}", ctl.display()));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "rabbitmqctl {args:?} failed: {text}");
        text
    }

    /// The node's log so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log").join("node.log")).unwrap_or_default()
    }

    /// Stops the node (SIGTERM to its process group: a clean stop; SIGKILL after 30 s).
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let group = format!("-{}", child.id());
        let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = child.wait();
    }

    /// Stops the node and starts it again on the same ports with the same data (durable
    /// queues survive), as a broker restart in production.
    pub fn restart(&mut self) {
        self.stop();
        self.run();
    }

    /// Starts a shell that stops the node (and removes its data) once this process is gone.
    /// (`kill -SIG -PGID` without `--`: dash's `kill` refuses `--`.)
    fn stop_when_this_process_exits(&self) {
        let Some(child) = &self.child else { return };
        let script = format!(
            "while kill -0 {me} 2>/dev/null; do sleep 1; done; kill -TERM -{node} 2>/dev/null; sleep 10; kill -KILL -{node} 2>/dev/null; rm -rf '{dir}'",
            me = std::process::id(),
            node = child.id(),
            dir = self.dir.display(),
        );
        let _ = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn();
    }
}

impl Drop for RmqBroker {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A port that was free on 127.0.0.1 a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

// ---------------------------------------------------------------------------------------
// NestJS peers over RMQ
// ---------------------------------------------------------------------------------------

/// Starts `tests/nest/user-service.mjs` with `TRANSPORT=rmq` consuming `queue` on `url`,
/// plus `env` (`INSTANCE`, `RMQ_NOACK`, `RMQ_PREFETCH`), and waits for `READY rmq`.
pub async fn spawn_nest_rmq_service(
    node: &Path,
    url: &str,
    queue: &str,
    env: &[(&str, &str)],
) -> Proc {
    let mut cmd = tokio::process::Command::new(node);
    cmd.arg("user-service.mjs")
        .current_dir(nest_dir())
        .env("TRANSPORT", "rmq")
        .env("RMQ_URL", url)
        .env("RMQ_QUEUE", queue)
        .env("NO_COLOR", "1")
        .env_remove("INSTANCE");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let proc = Proc::spawn(format!("user-service.mjs (rmq {queue})"), cmd);
    if let Err(why) = proc
        .stdout
        .wait_for(|l| l == NEST_RMQ_READY, 1, READY_TIMEOUT)
        .await
    {
        proc.fail(&format!("no `{NEST_RMQ_READY}` line: {why}"));
    }
    proc
}

/// Runs `tests/nest/client.mjs` with `TRANSPORT=rmq` against `queue` on `url` with `ops`
/// and returns its one JSON output line (all ops share one `ClientRMQ`).
pub async fn run_nest_rmq_client(node: &Path, url: &str, queue: &str, ops: &str) -> String {
    run_nest_client_env(
        node,
        "127.0.0.1:0",
        ops,
        &[("TRANSPORT", "rmq"), ("RMQ_URL", url), ("RMQ_QUEUE", queue)],
    )
    .await
}

/// Starts the `user_service` example consuming `queue` on `url` as `INSTANCE=instance`
/// (plus `env`), and waits for its `READY rmq` line.
pub async fn spawn_rmq_user_service(
    url: &str,
    queue: &str,
    instance: &str,
    env: &[(&str, &str)],
) -> Proc {
    let mut all = vec![
        ("RMQ_URL", url),
        ("RMQ_QUEUE", queue),
        ("INSTANCE", instance),
    ];
    all.extend_from_slice(env);
    let proc = super::examples::start_example("user_service", &all).await;
    if let Err(why) = proc
        .stdout
        .wait_for(|l| l == NEST_RMQ_READY, 1, READY_TIMEOUT)
        .await
    {
        proc.fail(&format!("no `{NEST_RMQ_READY}` line: {why}"));
    }
    proc
}

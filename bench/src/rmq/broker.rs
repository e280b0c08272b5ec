//! A throw-away RabbitMQ node for the RabbitMQ scenarios: Debian's `rabbitmq-server` on a
//! free loopback port, its data in a temporary directory, stopped (and the directory
//! removed) when the handle drops — or, if the bench is SIGKILLed, by a watchdog shell once
//! the bench is gone.

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The node's start script, from Debian's `rabbitmq-server` package.
const SCRIPT: &str = "/usr/lib/rabbitmq/bin/rabbitmq-server";

/// How long a node may take to boot (Erlang, Mnesia, the listener); ~10 s is usual.
const BOOT_TIMEOUT: Duration = Duration::from_secs(90);

pub struct Broker {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl Broker {
    /// Boots a node on `127.0.0.1:<free port>`. `cores` (e.g. `0-1`) undoes the bench's
    /// own pinning for the node: it runs on every core, beside both the server under test
    /// and the load generator, as nothing else is free on a 2-core machine.
    pub fn start(cores: Option<&str>) -> Result<Broker, String> {
        if !Path::new(SCRIPT).is_file() {
            return Err(format!(
                "{SCRIPT} is missing (apt-get install rabbitmq-server)"
            ));
        }
        let port = free_port()?;
        let dist_port = free_port()?;
        let dir =
            std::env::temp_dir().join(format!("nestling-bench-rmq-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let io = |e: std::io::Error| format!("broker data directory {}: {e}", dir.display());
        for sub in ["mnesia", "log", "home"] {
            std::fs::create_dir_all(dir.join(sub)).map_err(io)?;
        }
        std::fs::write(dir.join("enabled_plugins"), "[].\n").map_err(io)?;
        std::fs::write(
            dir.join("rabbitmq.conf"),
            format!("listeners.tcp.default = 127.0.0.1:{port}\nloopback_users = none\n"),
        )
        .map_err(io)?;
        let mut cmd = match cores {
            Some(cores) => {
                let mut c = Command::new("taskset");
                c.args(["-c", cores, SCRIPT]);
                c
            }
            None => Command::new(SCRIPT),
        };
        cmd.env("HOME", dir.join("home"))
            .env(
                "RABBITMQ_NODENAME",
                format!("nestlingbench{port}@localhost"),
            )
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", port.to_string())
            .env("RABBITMQ_DIST_PORT", dist_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", dir.join("log"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir.join("enabled_plugins"))
            .env("RABBITMQ_CONFIG_FILE", dir.join("rabbitmq"))
            .env("RABBITMQ_PID_FILE", dir.join("pid"))
            .env("RABBITMQ_LOGS", dir.join("log").join("node.log"))
            // Erlang's schedulers spin while idle by default; on 2 shared cores that spinning
            // would take time from the server under test and the generator.
            .env(
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS",
                "+sbwt none +sbwtdcpu none +sbwtdio none",
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group: stopping it stops Erlang and its helpers together.
            .process_group(0);
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {SCRIPT}: {e}"))?;
        let mut broker = Broker {
            port,
            dir,
            child: Some(child),
        };
        broker.stop_when_bench_exits();
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(Ok(Some(status))) = broker.child.as_mut().map(Child::try_wait) {
                return Err(format!(
                    "rabbitmq-server exited with {status} while booting\n{}",
                    broker.log_tail()
                ));
            }
            if started.elapsed() > BOOT_TIMEOUT {
                return Err(format!(
                    "rabbitmq-server did not listen on {port} within {BOOT_TIMEOUT:?}\n{}",
                    broker.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(broker)
    }

    pub fn url(&self) -> String {
        format!("amqp://127.0.0.1:{}", self.port)
    }

    fn log_tail(&self) -> String {
        let log =
            std::fs::read_to_string(self.dir.join("log").join("node.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// A shell that stops the node and removes its data once the bench is gone, so a
    /// SIGKILLed bench leaves nothing running. `kill -SIG -PGID` without `--`: `sh` may be
    /// dash, whose `kill` rejects `--`.
    fn stop_when_bench_exits(&self) {
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

impl Drop for Broker {
    /// SIGTERM to the node's process group (a clean stop), SIGKILL after 15 s.
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let group = format!("-{}", child.id());
            let signal = |sig: &str| {
                let _ = Command::new("kill")
                    .args([sig, "--", &group])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            };
            signal("-TERM");
            let deadline = Instant::now() + Duration::from_secs(15);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            signal("-KILL");
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port on 127.0.0.1: {e}"))
}

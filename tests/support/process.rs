//! Child processes whose output is collected and which die with their handle, and finding
//! executables on `PATH`.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::process::{Child, Command};

use super::output::Lines;
use super::wait::{READY_TIMEOUT, WAIT_TIMEOUT};

/// The first file named `name` in a directory of `PATH`.
pub(super) fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

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

    /// Its process id (0 once it has been reaped).
    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
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

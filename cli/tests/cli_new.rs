//! `nestling new`: the generated crate builds, passes its own tests, serves over real TCP
//! (answered by `nestling call` and `nestling emit`) and stops gracefully on Ctrl-C — against
//! this checkout of nestling (`--path`).
//!
//! The generated crate is built in `target/nestling-new` (its own target directory: the
//! workspace's is locked by the `cargo test` running this), with the workspace's
//! `Cargo.lock` copied in, so it resolves the versions already downloaded and the second run
//! rebuilds nothing but the generated crate.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::{nestling, Proc};
use tokio::process::Command;

/// Upper bound for one `cargo test` / `cargo build` of the generated crate (a cold build
/// compiles nestling and its dependencies on a busy machine).
const CARGO_TIMEOUT: Duration = Duration::from_secs(30 * 60);

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("workspace directory")
}

/// `target/nestling-new`, beside the directory holding the `nestling` binary under test.
fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_nestling"))
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/nestling")
        .join("nestling-new")
}

/// A fresh directory for generated crates, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("nestling-cli-new-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the scratch directory");
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `cargo <args>` in `dir` with the shared target directory; panics with its output
/// unless it succeeds. Returns what it printed (stdout, stderr).
async fn cargo(dir: &Path, args: &[&str]) -> (String, String) {
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args(args)
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", target_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = cmd.spawn().expect("start cargo");
    let out = tokio::time::timeout(CARGO_TIMEOUT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("cargo {args:?} did not finish within {CARGO_TIMEOUT:?}"))
        .expect("cargo output");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "cargo {args:?} in {} failed with {}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        dir.display(),
        out.status
    );
    (stdout, stderr)
}

#[tokio::test]
async fn generated_service_tests_builds_serves_and_stops_gracefully() {
    let scratch = Scratch::new("serve");
    let dir = scratch.0.join("hello-nest");
    let root = workspace();
    let made = nestling(&[
        "new",
        dir.to_str().unwrap(),
        "--path",
        root.to_str().unwrap(),
    ])
    .await;
    made.expect_code(0);
    assert!(made.stdout.contains("`hello-nest`"), "{made:#?}");
    for file in [
        "Cargo.toml",
        "src/main.rs",
        "src/controller.rs",
        "README.md",
        ".gitignore",
    ] {
        assert!(dir.join(file).is_file(), "{file} not generated");
    }
    std::fs::copy(root.join("Cargo.lock"), dir.join("Cargo.lock")).expect("copy Cargo.lock");

    // Its own tests, on the in-process transport.
    let (stdout, _) = cargo(&dir, &["test"]).await;
    for test in [
        "sum_adds_up_the_numbers",
        "log_is_an_event",
        "a_payload_of_the_wrong_type_is_refused",
    ] {
        assert!(
            stdout.contains(&format!("{test} ... ok")),
            "{test} did not pass:\n{stdout}"
        );
    }
    assert!(stdout.contains("3 passed; 0 failed"), "{stdout}");

    // The server, over real TCP, from the CLI.
    cargo(&dir, &["build"]).await;
    let bin = target_dir().join("debug").join("hello-nest");
    let mut cmd = Command::new(&bin);
    cmd.env("ADDR", "127.0.0.1:0");
    let server = Proc::spawn("hello-nest", cmd);
    let line = server
        .wait_stdout("`hello-nest listening on …`", |l| {
            l.starts_with("hello-nest listening on ")
        })
        .await;
    let addr = line.rsplit(' ').next().unwrap().to_string();

    let sum = nestling(&["call", &addr, "sum", "[1,2,3]"]).await;
    sum.expect_code(0);
    assert_eq!(sum.stdout.trim(), "6", "{sum:#?}");
    let wrong = nestling(&["call", &addr, "sum", "not numbers", "--json"]).await;
    wrong.expect_code(1);
    assert_eq!(wrong.stderr_json()["status"], "error", "{wrong:#?}");
    nestling(&["emit", &addr, "log", "求和1111"])
        .await
        .expect_code(0);
    server
        .wait_stdout("`log: 求和1111` (the event handler ran)", |l| {
            l == "log: 求和1111"
        })
        .await;

    // Ctrl-C: a graceful stop, exit status 0.
    let pid = server.child.id().expect("server pid").to_string();
    let kill = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("run kill");
    assert!(kill.success());
    server
        .wait_stdout("`hello-nest stopped`", |l| l == "hello-nest stopped")
        .await;
    let mut server = server;
    let status = tokio::time::timeout(Duration::from_secs(15), server.child.wait())
        .await
        .unwrap_or_else(|_| server.fail("still running 15 s after SIGINT"))
        .expect("wait for the server");
    assert!(status.success(), "exit status {status}\n{}", server.dump());
}

#[tokio::test]
async fn refuses_non_empty_directories_and_bad_names() {
    let scratch = Scratch::new("refuse");
    let taken = scratch.0.join("taken");
    std::fs::create_dir_all(&taken).unwrap();
    std::fs::write(taken.join("notes.txt"), "mine").unwrap();
    let out = nestling(&["new", taken.to_str().unwrap()]).await;
    out.expect_code(3);
    assert!(
        out.stderr.contains("already exists and is not empty"),
        "{out:#?}"
    );
    assert_eq!(
        std::fs::read_dir(&taken).unwrap().count(),
        1,
        "nothing written"
    );

    for bad in ["1st-service", "my service", "fn", "nestling"] {
        let path = scratch.0.join(bad);
        let out = nestling(&["new", path.to_str().unwrap()]).await;
        out.expect_code(3);
        assert!(out.stderr.contains("cannot be a crate name"), "{out:#?}");
        assert!(!path.exists(), "{bad}: nothing written");
    }

    let out = nestling(&[
        "new",
        scratch.0.join("svc").to_str().unwrap(),
        "--path",
        scratch.0.to_str().unwrap(),
    ])
    .await;
    out.expect_code(3);
    assert!(
        out.stderr.contains("is not a nestling checkout"),
        "{out:#?}"
    );
}

#[tokio::test]
async fn help_shows_an_example() {
    let out = nestling(&["new", "--help"]).await;
    out.expect_code(0);
    assert!(out.stdout.contains("nestling new user-service"), "{out:#?}");
    assert!(out.stdout.contains("--path"), "{out:#?}");
}

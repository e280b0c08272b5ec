//! The crate's example binaries: built with cargo on first use and started as processes.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::process::Command;

use super::process::Proc;

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

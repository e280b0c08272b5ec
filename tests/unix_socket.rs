//! The transport interface is enough for a transport written outside the crate:
//! `examples/unix_socket.rs` serves and calls over a Unix domain socket with nestling's
//! public API alone (Nest's framing, its own connection loop, its own client link).

mod support;

#[tokio::test]
async fn a_transport_built_on_the_public_interface_serves_and_calls() {
    let bin = support::example_binary("unix_socket").await;
    let socket = std::env::temp_dir().join(format!("nestling-test-{}.sock", std::process::id()));
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        tokio::process::Command::new(bin)
            .env("SOCKET", &socket)
            .output(),
    )
    .await
    .expect("the example finishes within a minute")
    .expect("the example runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "example failed: {stdout}\n{stderr}");
    for line in [
        "sum: 6",
        "log: 求和1111",
        "countdown: [3, 2, 1, 0]",
        "fail: failed on purpose",
    ] {
        assert!(
            stdout.lines().any(|l| l == line),
            "missing {line:?} in:\n{stdout}\n{stderr}"
        );
    }
    assert!(!socket.exists(), "the example removes its socket");
}

//! TLS (Nest's `tlsOptions`): nestling ↔ nestling, Nest client → nestling server, and
//! nestling client → Nest server, with a self-signed certificate made by the test.

#![allow(dead_code)] // support/ serves several test files

mod support;

use std::path::PathBuf;

use nestling::tls::{ClientTls, ServerTls};
use nestling::{Client, ClientError, Server};
use serde_json::{json, Value};
use support::{require_node, spawn_node, RunningServer};

#[derive(Default)]
struct Users;

#[nestling::controller]
impl Users {
    #[message_pattern("sum")]
    fn sum(&self, nums: Vec<i64>) -> i64 {
        nums.iter().sum()
    }

    #[message_pattern("echo")]
    fn echo(&self, v: Value) -> Value {
        v
    }
}

/// A self-signed certificate for localhost / 127.0.0.1, written to a temp dir.
struct Certs {
    dir: PathBuf,
    cert_pem: String,
    key_pem: String,
}

impl Certs {
    fn new(tag: &str) -> Self {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
            .unwrap();
        let dir = std::env::temp_dir().join(format!("nestling-tls-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let certs = Self {
            dir,
            cert_pem: ck.cert.pem(),
            key_pem: ck.signing_key.serialize_pem(),
        };
        std::fs::write(certs.cert(), &certs.cert_pem).unwrap();
        std::fs::write(certs.key(), &certs.key_pem).unwrap();
        certs
    }
    fn cert(&self) -> PathBuf {
        self.dir.join("cert.pem")
    }
    fn key(&self) -> PathBuf {
        self.dir.join("key.pem")
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn tls_server(certs: &Certs) -> RunningServer {
    RunningServer::start(
        Server::builder()
            .discover(false)
            .controller(Users)
            .tls(ServerTls::from_pem_files(certs.cert(), certs.key()).unwrap())
            .build()
            .unwrap(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn nestling_client_and_server_over_tls() {
    let certs = Certs::new("rr");
    let server = tls_server(&certs).await;
    let tls = ClientTls::with_root_pem(certs.cert_pem.as_bytes()).unwrap();
    let client = Client::builder(server.addr.to_string()).tls(tls).build();
    let n: i64 = client.send("sum", &[1, 2, 3]).await.unwrap();
    assert_eq!(n, 6);
    let s: String = client.send("echo", "求和1111 😀").await.unwrap();
    assert_eq!(s, "求和1111 😀");

    // A plain-TCP client gets a clear failure, and TLS clients carry on.
    let plain = Client::builder(server.addr.to_string())
        .request_timeout(Some(std::time::Duration::from_secs(5)))
        .build();
    let e = plain.send::<_, _, i64>("sum", &[1]).await.unwrap_err();
    assert!(
        matches!(
            e,
            ClientError::ConnectionClosed { .. } | ClientError::Timeout { .. }
        ),
        "{e:?}"
    );
    let n: i64 = client.send("sum", &[4]).await.unwrap();
    assert_eq!(n, 4);

    // A client that does not trust the certificate refuses the handshake.
    let other = Certs::new("other");
    let untrusting = Client::builder(server.addr.to_string())
        .tls(ClientTls::with_root_pem(other.cert_pem.as_bytes()).unwrap())
        .build();
    let e = untrusting.send::<_, _, i64>("sum", &[1]).await.unwrap_err();
    assert!(matches!(e, ClientError::Tls { .. }), "{e:?}");
    assert!(e.to_string().contains("TLS handshake"), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn nest_client_with_tls_options_calls_nestling() {
    let Some(node) = require_node("nest_client_with_tls_options_calls_nestling") else {
        return;
    };
    let certs = Certs::new("nr");
    let server = tls_server(&certs).await;
    let ops = json!([
        {"op": "send", "pattern": "sum", "data": [1, 2, 3]},
        {"op": "send", "pattern": "echo", "data": "求和1111"}
    ])
    .to_string();
    let out = support::run_nest_client_env(
        &node,
        &server.addr.to_string(),
        &ops,
        &[("TLS_CA", certs.cert().to_str().unwrap())],
    )
    .await;
    assert_eq!(out, r#"[{"ok":6},{"ok":"求和1111"}]"#);
}

#[tokio::test(flavor = "multi_thread")]
async fn nestling_client_calls_nest_server_with_tls_options() {
    let Some(node) = require_node("nestling_client_calls_nest_server_with_tls_options") else {
        return;
    };
    let certs = Certs::new("rn");
    let nest = spawn_node(
        &node,
        "user-service.mjs",
        &[
            ("TLS_CERT", certs.cert().to_str().unwrap()),
            ("TLS_KEY", certs.key().to_str().unwrap()),
        ],
    )
    .await;
    let client = Client::builder(nest.addr())
        .tls(ClientTls::with_root_pem(certs.cert_pem.as_bytes()).unwrap())
        .build();
    let n: i64 = client.send("sum", &[1, 2, 3]).await.unwrap();
    assert_eq!(n, 6);
    client.emit("log", "求和1111").await.unwrap();
    nest.wait_line("EVENT log \"求和1111\"").await;
    // Nest's own TLS client agrees (the oracle for the same setup).
    let out = support::run_nest_client_env(
        &node,
        &nest.addr(),
        r#"[{"op":"send","pattern":"sum","data":[2,2]}]"#,
        &[("TLS_CA", certs.cert().to_str().unwrap())],
    )
    .await;
    assert_eq!(out, r#"[{"ok":4}]"#);
}

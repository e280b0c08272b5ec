//! Limits and timeouts: slow or silent peers are cut off, others carry on.

use std::time::Duration;

use nestling::{Client, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Default)]
struct Echo;

#[nestling::controller]
impl Echo {
    #[message_pattern("echo")]
    fn echo(&self, v: serde_json::Value) -> serde_json::Value {
        v
    }
}

async fn start(
    builder: nestling::ServerBuilder,
) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listening = builder
        .discover(false)
        .controller(Echo)
        .build()
        .unwrap()
        .listen("127.0.0.1:0")
        .await
        .unwrap();
    let addr = listening.local_addr();
    (
        addr,
        tokio::spawn(async move { listening.serve().await.unwrap() }),
    )
}

/// Waits for the server to close `sock` (EOF or reset), failing after `within`.
async fn closed_within(sock: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 256];
    loop {
        match tokio::time::timeout(within, sock.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

async fn healthy(addr: std::net::SocketAddr) {
    let client = Client::builder(addr.to_string())
        .request_timeout(Some(Duration::from_secs(5)))
        .build();
    let v: String = client.send("echo", "still here").await.unwrap();
    assert_eq!(v, "still here");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_frame_that_never_completes_is_cut_off() {
    let (addr, task) =
        start(Server::builder().incomplete_frame_timeout(Some(Duration::from_millis(200)))).await;
    let mut stalled = TcpStream::connect(addr).await.unwrap();
    stalled.write_all(b"40#{\"pattern\":").await.unwrap();
    healthy(addr).await;
    assert!(closed_within(&mut stalled, Duration::from_secs(5)).await);

    // A header byte alone starts the clock too.
    let mut header_only = TcpStream::connect(addr).await.unwrap();
    header_only.write_all(b"4").await.unwrap();
    assert!(closed_within(&mut header_only, Duration::from_secs(5)).await);

    // Trickling bytes does not reset it: the whole frame must arrive in time.
    let mut trickle = TcpStream::connect(addr).await.unwrap();
    let frame = b"40#{\"pattern\":\"echo\",\"data\":1,\"id\":\"t\"}  ";
    let mut cut = false;
    for b in frame {
        if trickle.write_all(&[*b]).await.is_err() {
            cut = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    assert!(cut || closed_within(&mut trickle, Duration::from_secs(5)).await);
    healthy(addr).await;
    task.abort();
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_connections_are_closed_only_when_configured() {
    let (addr, task) =
        start(Server::builder().idle_timeout(Some(Duration::from_millis(200)))).await;
    let mut idle = TcpStream::connect(addr).await.unwrap();
    assert!(closed_within(&mut idle, Duration::from_secs(5)).await);
    healthy(addr).await;
    task.abort();

    // Default: no idle timeout, like Nest.
    let (addr, task) = start(Server::builder()).await;
    let mut idle = TcpStream::connect(addr).await.unwrap();
    assert!(!closed_within(&mut idle, Duration::from_millis(400)).await);
    task.abort();
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_frames_are_refused_before_buffering() {
    let (addr, task) = start(Server::builder().max_frame_len(1024)).await;
    let mut big = TcpStream::connect(addr).await.unwrap();
    big.write_all(b"1025#").await.unwrap();
    assert!(closed_within(&mut big, Duration::from_secs(5)).await);
    // Exactly at the limit is fine.
    let client = Client::new(addr.to_string());
    let s = "x".repeat(1024 - r#"{"pattern":"echo","data":"","id":"1"}"#.len());
    let back: String = client.send("echo", &s).await.unwrap();
    assert_eq!(back, s);
    task.abort();
}

#[tokio::test(flavor = "multi_thread")]
async fn connection_limit_closes_extra_connections() {
    let (addr, task) = start(Server::builder().max_connections(2)).await;
    let a = Client::new(addr.to_string());
    let b = Client::new(addr.to_string());
    a.connect().await.unwrap();
    b.connect().await.unwrap();
    let _: serde_json::Value = a.send("echo", &1).await.unwrap();
    let _: serde_json::Value = b.send("echo", &1).await.unwrap();
    let mut third = TcpStream::connect(addr).await.unwrap();
    assert!(closed_within(&mut third, Duration::from_secs(5)).await);
    drop(a);
    // Once a slot frees up, new connections are served again.
    let mut served = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let c = Client::builder(addr.to_string())
            .request_timeout(Some(Duration::from_millis(500)))
            .build();
        if c.send::<_, _, serde_json::Value>("echo", &2).await.is_ok() {
            served = true;
            break;
        }
    }
    assert!(served);
    task.abort();
}

#[tokio::test(flavor = "multi_thread")]
async fn half_closed_peer_still_gets_its_replies() {
    let (addr, task) = start(Server::builder()).await;
    let mut sock = TcpStream::connect(addr).await.unwrap();
    let json = r#"{"pattern":"echo","data":"bye","id":"h"}"#;
    sock.write_all(format!("{}#{}", json.len(), json).as_bytes())
        .await
        .unwrap();
    sock.shutdown().await.unwrap(); // FIN with the request in flight
    let mut reply = String::new();
    tokio::time::timeout(Duration::from_secs(5), sock.read_to_string(&mut reply))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reply, r#"45#{"response":"bye","isDisposed":true,"id":"h"}"#);
    task.abort();
}

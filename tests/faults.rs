//! Fault tests: the server dies and comes back under client load. Every call either
//! succeeds with its own answer or fails with an error; none hangs, none is answered twice.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nestling::{Client, ClientError, Server};
use tokio::net::TcpListener;

#[derive(Default)]
struct Calc;

#[nestling::controller]
impl Calc {
    #[message_pattern("add")]
    async fn add(&self, (a, b): (u64, u64)) -> u64 {
        // Some calls are in flight when the server is killed.
        tokio::time::sleep(Duration::from_millis(a % 5)).await;
        a + b
    }
}

async fn serve_on(addr: std::net::SocketAddr) -> tokio::task::JoinHandle<()> {
    // The port was just freed by the previous server; retry briefly if the OS lags.
    for _ in 0..100 {
        if let Ok(listening) = Server::builder()
            .discover(false)
            .controller(Calc)
            .build()
            .unwrap()
            .listen(addr)
            .await
        {
            return tokio::spawn(async move {
                let _ = listening.serve().await;
            });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("could not rebind {addr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_restarts_under_load_nothing_hangs_or_repeats() {
    let addr = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let mut server = serve_on(addr).await;
    let client = Client::builder(addr.to_string())
        .reconnect_backoff(Duration::from_millis(10), Duration::from_millis(50))
        .request_timeout(Some(Duration::from_secs(5)))
        .build();

    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let load = {
        let (client, ok, failed) = (client.clone(), ok.clone(), failed.clone());
        tokio::spawn(async move {
            let calls = (0..3_000u64).map(|i| {
                let (client, ok, failed) = (client.clone(), ok.clone(), failed.clone());
                async move {
                    // Stagger the calls over the restarts.
                    tokio::time::sleep(Duration::from_millis(i / 10)).await;
                    match client.send::<_, _, u64>("add", &(i, 1_000_000)).await {
                        Ok(v) => {
                            assert_eq!(v, i + 1_000_000, "call {i} got another call's answer");
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(
                            ClientError::ConnectionClosed { .. }
                            | ClientError::Connect { .. }
                            | ClientError::Unavailable { .. },
                        ) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(other) => panic!("call {i}: unexpected error {other:?}"),
                    }
                }
            });
            futures_util::future::join_all(calls).await;
        })
    };
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(60)).await;
        server.abort(); // the server dies: its connections drop with requests in flight
        let _ = server.await;
        tokio::time::sleep(Duration::from_millis(30)).await;
        server = serve_on(addr).await;
    }
    tokio::time::timeout(Duration::from_secs(60), load)
        .await
        .expect("no call may hang")
        .unwrap();
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert_eq!(ok + failed, 3_000);
    assert!(
        ok > 0 && failed > 0,
        "ok {ok}, failed {failed}: the restarts must have hit in-flight calls"
    );
    // After the storm, the client works again (once its reconnect backoff, at most 50 ms
    // here, has passed).
    let mut recovered = None;
    for _ in 0..100 {
        match client.send::<_, _, u64>("add", &(1, 2)).await {
            Ok(v) => {
                recovered = Some(v);
                break;
            }
            Err(ClientError::Unavailable { .. } | ClientError::Connect { .. }) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(other) => panic!("unexpected error after the restarts: {other:?}"),
        }
    }
    assert_eq!(recovered, Some(3), "the client did not recover within 2 s");
    server.abort();
}

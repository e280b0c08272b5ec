//! Scale-out over NATS: three processes of the `user_service` example in one queue group
//! behind one `gateway` example process, all on a real `nats-server`. Requests spread over
//! the three; killing one (SIGKILL) loses only requests already delivered to it (they time
//! out at the gateway) and the gateway keeps answering; stopping one with Ctrl-C (graceful:
//! unsubscribe, finish what was delivered) loses nothing.
//!
//! Without `nats-server` this test prints `SKIPPED`; with `CI` set it fails.

#![allow(dead_code)] // support/ serves several test files

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::nats::{require_nats, NatsServer, NEST_NATS_READY};
use support::{http_get_within, spawn_example, start_example, Proc, READY_TIMEOUT};
use tokio::time::Instant;

/// The gateway's timeout for a call: a request lost with a killed instance ends as a 504
/// after this long.
const GATEWAY_TIMEOUT_MS: u64 = 1_500;
/// Concurrent HTTP callers during the kill: at most this many requests can be in flight
/// (and so lost) when an instance dies.
const CALLERS: usize = 8;

async fn instance(nats: &NatsServer, name: &str) -> Proc {
    let proc = start_example(
        "user_service",
        &[
            ("NATS_URL", &nats.url()),
            ("NATS_QUEUE", "user-service"),
            ("INSTANCE", name),
        ],
    )
    .await;
    if let Err(why) = proc
        .stdout
        .wait_for(|l| l == NEST_NATS_READY, 1, READY_TIMEOUT)
        .await
    {
        proc.fail(&format!("no `READY nats` line: {why}"));
    }
    proc
}

/// One HTTP call's outcome.
#[derive(Debug, Clone)]
struct Outcome {
    sent: Instant,
    status: u16,
    ok: bool,
}

/// `CALLERS` loops calling `GET /sum?num=i,1` until `stop`; every answer is checked.
fn load(port: u16, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<Vec<Outcome>> {
    tokio::spawn(async move {
        let outcomes = Arc::new(Mutex::new(Vec::new()));
        let callers = (0..CALLERS).map(|caller| {
            let (stop, outcomes) = (stop.clone(), outcomes.clone());
            tokio::spawn(async move {
                let mut i = caller as i64 * 1_000_000;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let sent = Instant::now();
                    let path = format!("/sum?num={i},1");
                    let within = Duration::from_millis(GATEWAY_TIMEOUT_MS * 4);
                    let (status, ok) = match http_get_within(port, &path, within).await {
                        Ok(r) => (r.status, r.status == 200 && r.body == (i + 1).to_string()),
                        Err(_) => (0, false),
                    };
                    assert!(
                        status != 200 || ok,
                        "a wrong answer for {path}: status 200 but not {}",
                        i + 1
                    );
                    outcomes.lock().unwrap().push(Outcome { sent, status, ok });
                }
            })
        });
        for caller in futures_util::future::join_all(callers).await {
            caller.expect("caller task");
        }
        let outcomes = outcomes.lock().unwrap().clone();
        outcomes
    })
}

async fn whoami_spread(port: u16, calls: usize) -> BTreeMap<String, usize> {
    let mut spread = BTreeMap::new();
    for _ in 0..calls {
        let r = http_get_within(port, "/whoami", Duration::from_secs(5))
            .await
            .expect("gateway answers");
        assert_eq!(r.status, 200, "whoami: {r:?}");
        *spread.entry(r.body).or_insert(0) += 1;
    }
    spread
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_group_spreads_requests_and_survives_losing_an_instance() {
    let test = "queue_group_spreads_requests_and_survives_losing_an_instance";
    let Some(bin) = require_nats(test) else {
        return;
    };
    let nats = NatsServer::start(&bin).await;
    let mut a = instance(&nats, "a").await;
    let mut b = instance(&nats, "b").await;
    let mut c = instance(&nats, "c").await;
    let timeout = GATEWAY_TIMEOUT_MS.to_string();
    let gateway = spawn_example(
        "gateway",
        &[("NATS_URL", &nats.url()), ("REQUEST_TIMEOUT_MS", &timeout)],
    )
    .await;
    let port = gateway.port;

    // 1. Spread: every instance answers a fair share.
    let spread = whoami_spread(port, 300).await;
    eprintln!("spread of 300 requests over the queue group: {spread:?}");
    assert_eq!(spread.len(), 3, "all three instances answer: {spread:?}");
    for (name, n) in &spread {
        assert!(*n >= 30, "instance {name} got only {n} of 300: {spread:?}");
    }

    // 2. SIGKILL one instance under load.
    let stop = Arc::new(AtomicBool::new(false));
    let running = load(port, stop.clone());
    tokio::time::sleep(Duration::from_millis(700)).await;
    let killed_at = Instant::now();
    b.kill().await;
    tokio::time::sleep(Duration::from_millis(GATEWAY_TIMEOUT_MS + 1_000)).await;
    stop.store(true, Ordering::Relaxed);
    let outcomes = running.await.expect("load");
    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| !o.ok).collect();
    let before = outcomes.iter().filter(|o| o.sent < killed_at).count();
    eprintln!(
        "SIGKILL under load: {} requests ({before} sent before the kill), {} failed: {:?}",
        outcomes.len(),
        failed.len(),
        failed
            .iter()
            .map(|o| (o.status, o.sent.saturating_duration_since(killed_at)))
            .collect::<Vec<_>>()
    );
    assert!(
        failed.len() <= CALLERS,
        "only requests in flight at the kill may be lost: {} failed",
        failed.len()
    );
    for o in &failed {
        assert_eq!(
            o.status, 504,
            "a lost request ends as the gateway's timeout"
        );
        assert!(
            o.sent <= killed_at + Duration::from_millis(50),
            "a request sent {:?} after the kill failed",
            o.sent - killed_at
        );
    }
    let after = outcomes.iter().filter(|o| o.sent > killed_at).count();
    assert!(after > 0, "the load went on after the kill");
    let spread = whoami_spread(port, 60).await;
    assert!(
        !spread.contains_key("b"),
        "the killed instance answered: {spread:?}"
    );
    assert_eq!(spread.len(), 2, "both survivors answer: {spread:?}");

    // 3. Ctrl-C one more under load: graceful, nothing lost.
    let stop = Arc::new(AtomicBool::new(false));
    let running = load(port, stop.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    c.interrupt().await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    stop.store(true, Ordering::Relaxed);
    let outcomes = running.await.expect("load");
    let failed = outcomes.iter().filter(|o| !o.ok).count();
    let statuses: Vec<u16> = outcomes
        .iter()
        .filter(|o| !o.ok)
        .map(|o| o.status)
        .collect();
    eprintln!(
        "Ctrl-C under load: {} requests, {failed} failed (HTTP statuses, 0 = no answer: {statuses:?})",
        outcomes.len()
    );
    assert_eq!(failed, 0, "a graceful stop loses nothing");
    let spread = whoami_spread(port, 20).await;
    assert_eq!(spread.keys().collect::<Vec<_>>(), ["a"], "{spread:?}");
    a.kill().await;
}

//! Status and events of clients and servers (Nest 11's `status`, `on('error')`, `unwrap()`)
//! over real sockets and brokers: a TCP client follows its server (nestling and real Nest)
//! going down and coming back; NATS and RabbitMQ clients and servers report
//! `reconnecting` and `connected` across a broker restart; errors arrive as events; the
//! underlying broker connections are usable.
//!
//! Without Node, `nats-server` or `rabbitmq-server` the tests needing them print `SKIPPED`;
//! with `CI` set they fail.

#![allow(dead_code)] // support/ serves several test files

mod support;

use std::time::Duration;

use nestling::nats::NatsServe;
use nestling::rmq::RmqServe;
use nestling::status::{Event, Status, TransportError};
use nestling::{Client, Server};
use serde_json::{json, Value};
use tokio::sync::{broadcast, watch};

#[derive(Default)]
struct Echo;

#[nestling::controller]
impl Echo {
    #[message_pattern("echo")]
    fn echo(&self, data: Value) -> Value {
        data
    }
}

const WITHIN: Duration = Duration::from_secs(30);

fn server() -> Server {
    Server::builder()
        .discover(false)
        .controller(Echo)
        .build()
        .unwrap()
}

async fn reach(status: &mut watch::Receiver<Status>, want: Status, what: &str) {
    let reached = tokio::time::timeout(WITHIN, status.wait_for(|s| *s == want))
        .await
        .map(|r| r.is_ok());
    match reached {
        Ok(true) => {}
        Ok(false) => panic!("{what}: the status channel closed before {want}"),
        Err(_) => panic!(
            "{what}: still {} after {WITHIN:?}, not {want}",
            *status.borrow()
        ),
    }
}

/// Every event received so far.
fn drain(events: &mut broadcast::Receiver<Event>) -> Vec<Event> {
    let mut seen = Vec::new();
    loop {
        match events.try_recv() {
            Ok(event) => seen.push(event),
            Err(broadcast::error::TryRecvError::Lagged(_)) => continue,
            Err(_) => return seen,
        }
    }
}

/// Waits until the events received (kept in `seen`) satisfy `done`.
async fn events_until(
    events: &mut broadcast::Receiver<Event>,
    seen: &mut Vec<Event>,
    what: &str,
    done: impl Fn(&[Event]) -> bool,
) {
    let deadline = tokio::time::Instant::now() + WITHIN;
    while !done(seen) {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Ok(event)) => seen.push(event),
            Ok(Err(broadcast::error::RecvError::Lagged(_))) => {}
            Ok(Err(e)) => panic!("{what}: {e}; events {seen:?}"),
            Err(_) => panic!("{what}: not within {WITHIN:?}; events {seen:?}"),
        }
    }
}

/// Whether `seen` holds the statuses `order` in that order (others may lie between).
fn in_order(seen: &[Event], order: &[Status]) -> bool {
    let mut want = order.iter().peekable();
    for event in seen {
        if let (Event::Status(s), Some(next)) = (event, want.peek()) {
            if s == *next {
                want.next();
            }
        }
    }
    want.peek().is_none()
}

fn lost(seen: &[Event]) -> Option<&TransportError> {
    seen.iter().find_map(|e| match e {
        Event::Error(error @ TransportError::Lost { .. }) => Some(error),
        _ => None,
    })
}

fn failed_connects(seen: &[Event]) -> usize {
    seen.iter()
        .filter(|e| matches!(e, Event::Error(TransportError::Connect { .. })))
        .count()
}

#[tokio::test]
async fn a_tcp_client_follows_its_server_going_down_and_coming_back() {
    let listening = server().listen("127.0.0.1:0").await.unwrap();
    let addr = listening.local_addr();
    let mut server_status = listening.status();
    let mut server_events = listening.events();
    assert_eq!(*server_status.borrow(), Status::Connected, "listening");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(listening.serve_with_shutdown(async {
        let _ = stopped.await;
    }));

    let client = Client::builder(addr.to_string())
        .reconnect_backoff(Duration::ZERO, Duration::ZERO)
        .build();
    let mut status = client.status();
    let mut events = client.events();
    assert_eq!(
        *status.borrow(),
        Status::Disconnected,
        "nothing dialled yet"
    );
    let one: Value = client.send("echo", &1).await.unwrap();
    assert_eq!(one, json!(1));
    assert_eq!(*status.borrow(), Status::Connected);

    // The server stops: its status and the client's follow, and the loss is an event.
    stop.send(()).unwrap();
    serving.await.unwrap().unwrap();
    reach(&mut server_status, Status::Disconnected, "server stopped").await;
    assert_eq!(
        drain(&mut server_events),
        [Event::Status(Status::Disconnected)]
    );
    reach(&mut status, Status::Disconnected, "client after the stop").await;
    let mut seen = Vec::new();
    events_until(&mut events, &mut seen, "loss reported", |s| {
        lost(s).is_some()
    })
    .await;
    assert_eq!(
        lost(&seen),
        Some(&TransportError::Lost {
            addr: addr.to_string(),
            reason: "closed by the server".into()
        })
    );

    // While it is down, calls fail and each failed connect is an event.
    assert!(client.send::<_, _, Value>("echo", &2).await.is_err());
    events_until(&mut events, &mut seen, "failed connect", |s| {
        failed_connects(s) > 0
    })
    .await;
    assert_eq!(*status.borrow(), Status::Disconnected);

    // Back on the same port: the next call reconnects.
    let again = server().listen(addr).await.unwrap();
    let serving = tokio::spawn(again.serve());
    let two: Value = client.send("echo", &2).await.unwrap();
    assert_eq!(two, json!(2));
    reach(&mut status, Status::Connected, "client after the restart").await;
    seen.extend(drain(&mut events));
    assert!(
        in_order(
            &seen,
            &[Status::Connected, Status::Disconnected, Status::Connected]
        ) || in_order(&seen, &[Status::Disconnected, Status::Connected]),
        "{seen:?}"
    );

    // Closing by hand is a transition, not an error.
    client.close();
    reach(&mut status, Status::Disconnected, "closed by hand").await;
    let after_close = drain(&mut events);
    assert_eq!(after_close, [Event::Status(Status::Disconnected)]);
    serving.abort();
}

#[tokio::test]
async fn a_tcp_client_follows_a_nest_service_going_down_and_coming_back() {
    let test = "a_tcp_client_follows_a_nest_service_going_down_and_coming_back";
    let Some(node) = support::require_node(test) else {
        return;
    };
    let mut nest = support::spawn_node(&node, "user-service.mjs", &[]).await;
    let port = nest.port.to_string();
    let client = Client::builder(nest.addr())
        .reconnect_backoff(Duration::ZERO, Duration::ZERO)
        .build();
    let mut status = client.status();
    let mut events = client.events();
    let six: i64 = client.send("sum", &[1, 2, 3]).await.unwrap();
    assert_eq!(six, 6);
    assert_eq!(*status.borrow(), Status::Connected);

    nest.kill().await;
    reach(&mut status, Status::Disconnected, "Nest killed").await;
    let mut seen = Vec::new();
    events_until(&mut events, &mut seen, "loss reported", |s| {
        lost(s).is_some()
    })
    .await;

    let _nest = support::spawn_node(&node, "user-service.mjs", &[("PORT", &port)]).await;
    let six: i64 = client.send("sum", &[1, 2, 3]).await.unwrap();
    assert_eq!(six, 6);
    assert_eq!(*status.borrow(), Status::Connected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_clients_and_servers_report_reconnecting_across_a_restart() {
    let test = "nats_clients_and_servers_report_reconnecting_across_a_restart";
    let Some(bin) = support::nats::require_nats(test) else {
        return;
    };
    let mut nats = support::nats::NatsServer::start(&bin).await;
    let listening = server()
        .listen_nats(NatsServe::new(nats.url()))
        .await
        .unwrap();
    let mut server_status = listening.status();
    let mut server_events = listening.events();
    assert_eq!(*server_status.borrow(), Status::Connected);
    // unwrap(): the server's own NATS connection is usable.
    let raw = listening.nats_client().clone();
    let serving = tokio::spawn(listening.serve());

    let client = Client::new(nats.url());
    let mut status = client.status();
    let mut events = client.events();
    assert!(client.nats_client().is_none(), "not connected yet");
    let one: Value = client.send("echo", &1).await.unwrap();
    assert_eq!(one, json!(1));
    assert_eq!(*status.borrow(), Status::Connected);
    // unwrap(): the client's NATS connection reaches the same service, raw.
    let reply = client
        .nats_client()
        .expect("connected over NATS")
        .request("echo", r#"{"pattern":"echo","data":7,"id":"1"}"#.into())
        .await
        .unwrap();
    let reply: Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(reply["response"], json!(7));
    raw.flush().await.unwrap();

    nats.restart().await;
    let (mut seen, mut server_seen) = (Vec::new(), Vec::new());
    let order = [
        Status::Disconnected,
        Status::Reconnecting,
        Status::Connected,
    ];
    events_until(&mut events, &mut seen, "client across the restart", |s| {
        in_order(s, &order)
    })
    .await;
    events_until(
        &mut server_events,
        &mut server_seen,
        "server across the restart",
        |s| in_order(s, &order),
    )
    .await;
    assert!(lost(&seen).is_some(), "{seen:?}");
    assert!(lost(&server_seen).is_some(), "{server_seen:?}");
    reach(&mut status, Status::Connected, "client").await;
    reach(&mut server_status, Status::Connected, "server").await;

    // Served again once the subscriptions are back.
    let mut answered = None;
    for _ in 0..50 {
        match client.send::<_, _, Value>("echo", &2).await {
            Ok(v) => {
                answered = Some(v);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    assert_eq!(answered, Some(json!(2)));
    serving.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_server_on_a_connection_of_your_own_reports_its_state_too() {
    let test = "a_nats_server_on_a_connection_of_your_own_reports_its_state_too";
    let Some(bin) = support::nats::require_nats(test) else {
        return;
    };
    let mut nats = support::nats::NatsServer::start(&bin).await;
    let own = nestling::nats::async_nats::connect(nats.url())
        .await
        .unwrap();
    let listening = server()
        .listen_nats(NatsServe::with_client(own))
        .await
        .unwrap();
    let mut status = listening.status();
    let serving = tokio::spawn(listening.serve());
    reach(&mut status, Status::Connected, "serving").await;
    nats.stop().await;
    reach(&mut status, Status::Reconnecting, "NATS server stopped").await;
    nats.restart().await;
    reach(&mut status, Status::Connected, "NATS server back").await;
    serving.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rmq_clients_and_servers_report_reconnecting_across_a_broker_restart() {
    let test = "rmq_clients_and_servers_report_reconnecting_across_a_broker_restart";
    let Some(mut broker) = support::rmq::RmqBroker::start(test) else {
        return;
    };
    let queue = support::rmq::unique_queue("status");
    let listening = server()
        .listen_rmq(RmqServe::new(broker.url(), &queue))
        .await
        .unwrap();
    let mut server_status = listening.status();
    let mut server_events = listening.events();
    assert_eq!(*server_status.borrow(), Status::Connected);
    // unwrap(): the server's channel is usable.
    let (_, channel) = listening.connection();
    let declared = channel
        .queue_declare(
            queue.as_str().into(),
            nestling::rmq::lapin::options::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await
        .unwrap();
    assert_eq!(
        declared.consumer_count(),
        1,
        "the server consumes its queue"
    );
    let serving = tokio::spawn(listening.serve());

    let client = Client::builder(broker.client_url(&queue))
        .reconnect_backoff(Duration::from_millis(100), Duration::from_secs(1))
        .request_timeout(Some(Duration::from_secs(5)))
        .build();
    let mut status = client.status();
    let mut events = client.events();
    assert!(client.rmq_connection().is_none(), "not connected yet");
    let one: Value = client.send("echo", &1).await.unwrap();
    assert_eq!(one, json!(1));
    assert_eq!(*status.borrow(), Status::Connected);
    let (connection, _) = client.rmq_connection().expect("connected over RabbitMQ");
    assert!(connection.status().connected());

    let broker = tokio::task::spawn_blocking(move || {
        broker.restart();
        broker
    })
    .await
    .unwrap();
    let (mut seen, mut server_seen) = (Vec::new(), Vec::new());
    let order = [
        Status::Disconnected,
        Status::Reconnecting,
        Status::Connected,
    ];
    // The client reconnects by itself, without a call.
    events_until(&mut events, &mut seen, "client across the restart", |s| {
        in_order(s, &order)
    })
    .await;
    events_until(
        &mut server_events,
        &mut server_seen,
        "server across the restart",
        |s| in_order(s, &order),
    )
    .await;
    assert!(lost(&seen).is_some(), "{seen:?}");
    assert!(lost(&server_seen).is_some(), "{server_seen:?}");
    eprintln!(
        "client events: {}\nserver events: {}",
        seen.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; "),
        server_seen
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    );
    reach(&mut status, Status::Connected, "client").await;
    reach(&mut server_status, Status::Connected, "server").await;
    let (connection, _) = client.rmq_connection().expect("a new connection");
    assert!(connection.status().connected());
    let two: Value = client.send("echo", &2).await.unwrap();
    assert_eq!(two, json!(2));
    serving.abort();
    drop(broker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rmq_clients_and_servers_report_the_broker_blocking_them() {
    let test = "rmq_clients_and_servers_report_the_broker_blocking_them";
    let Some(broker) = support::rmq::RmqBroker::start(test) else {
        return;
    };
    let queue = support::rmq::unique_queue("blocked");
    let listening = server()
        .listen_rmq(RmqServe::new(broker.url(), &queue))
        .await
        .unwrap();
    let mut server_status = listening.status();
    let serving = tokio::spawn(listening.serve());
    let client = Client::new(broker.client_url(&queue));
    let mut status = client.status();
    let mut events = client.events();
    let one: Value = client.send("echo", &1).await.unwrap();
    assert_eq!(one, json!(1));

    // The memory alarm: the broker blocks connections as they publish.
    broker.ctl(&["set_vm_memory_high_watermark", "0"]);
    let call = {
        let client = client.clone();
        tokio::spawn(async move { client.send::<_, _, Value>("echo", &2).await })
    };
    reach(
        &mut status,
        Status::Blocked,
        "client under the memory alarm",
    )
    .await;
    let mut seen = Vec::new();
    events_until(&mut events, &mut seen, "blocked reported", |s| {
        s.iter().any(|e| {
            matches!(e, Event::Error(TransportError::Broker { reason, .. })
                if reason.starts_with("the broker blocked the connection"))
        })
    })
    .await;
    assert_eq!(Status::Blocked.to_string(), "blocked");

    // Cleared: unblocked, and the waiting call goes through (the server publishes its reply
    // once it is unblocked too).
    broker.ctl(&["set_vm_memory_high_watermark", "0.4"]);
    reach(&mut status, Status::Connected, "client after the alarm").await;
    let two = tokio::time::timeout(WITHIN, call)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(two, json!(2));
    reach(
        &mut server_status,
        Status::Connected,
        "server after the alarm",
    )
    .await;
    serving.abort();
}

//! RabbitMQ scale-out and faults with real processes: three `user_service` instances
//! competing for one queue behind one client, an instance SIGKILLed under load, and the
//! broker restarted under load.
//!
//! Without rabbitmq-server these tests print `SKIPPED`; with `CI` set they fail.

#![allow(dead_code)] // support/ serves several test files

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use nestling::rmq::lapin::{self, options::QueueDeclareOptions, types::FieldTable};
use nestling::Client;
use support::rmq::{spawn_rmq_user_service, unique_queue, RmqBroker};

/// How long a test waits for one call: past every redelivery and reconnect here.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

fn client(broker: &RmqBroker, queue: &str) -> Client {
    Client::builder(broker.client_url(queue))
        .request_timeout(Some(CALL_TIMEOUT))
        .reconnect_backoff(Duration::from_millis(100), Duration::from_secs(1))
        .build()
}

/// Which instance answered each of `n` `whoami` calls.
async fn spread(client: &Client, n: usize) -> BTreeMap<String, usize> {
    let calls = (0..n).map(|_| client.send::<_, _, String>("whoami", &()));
    let mut by = BTreeMap::new();
    for who in futures_util::future::join_all(calls).await {
        *by.entry(who.unwrap()).or_insert(0) += 1;
    }
    by
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_share_the_queue_and_a_killed_one_loses_nothing() {
    let test = "three_instances_share_the_queue_and_a_killed_one_loses_nothing";
    let Some(broker) = RmqBroker::shared(test) else {
        return;
    };
    let queue = unique_queue("scale");
    let url = broker.url();
    // A small prefetch: each instance holds a few requests, the rest wait in the queue.
    let prefetch = [("RMQ_PREFETCH", "8")];
    let mut instances = Vec::new();
    for name in ["user-1", "user-2", "user-3"] {
        instances.push(spawn_rmq_user_service(&url, &queue, name, &prefetch).await);
    }
    let client = client(broker, &queue);

    // Requests spread over the three (RabbitMQ hands them out round-robin).
    let by = spread(&client, 60).await;
    eprintln!("whoami x60 over three instances: {by:?}");
    assert_eq!(by.len(), 3, "every instance answers: {by:?}");
    assert!(by.values().all(|&n| n >= 10), "a fair spread: {by:?}");

    // Under load (200 requests of 100 ms each, all in flight), SIGKILL one instance: what it
    // held unacknowledged goes back to the queue and is answered by the other two.
    let calls: Vec<_> = (0..200)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.send::<_, _, String>("work", &100u64).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(400)).await;
    instances[0].kill().await;
    let mut answered = BTreeMap::new();
    let mut failed = Vec::new();
    for call in calls {
        match tokio::time::timeout(CALL_TIMEOUT * 2, call).await {
            Ok(Ok(Ok(who))) => *answered.entry(who).or_insert(0) += 1,
            Ok(Ok(Err(e))) => failed.push(e.to_string()),
            Ok(Err(join)) => panic!("a call panicked: {join}"),
            Err(_) => panic!("a call hung past {:?}", CALL_TIMEOUT * 2),
        }
    }
    eprintln!("200 x work(100 ms), user-1 killed after 400 ms: answered by {answered:?}, failed {failed:?}");
    assert!(
        failed.is_empty(),
        "nothing lost with acknowledgements on: {failed:?}"
    );
    assert_eq!(answered.values().sum::<usize>(), 200);
    assert!(
        answered.contains_key("user-2") && answered.contains_key("user-3"),
        "{answered:?}"
    );

    // The survivors go on serving.
    let by = spread(&client, 20).await;
    assert_eq!(
        by.keys().map(String::as_str).collect::<Vec<_>>(),
        ["user-2", "user-3"],
        "{by:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_and_clients_recover_from_a_broker_restart() {
    let test = "services_and_clients_recover_from_a_broker_restart";
    let Some(mut broker) = RmqBroker::start(test) else {
        return;
    };
    let queue = unique_queue("restart");
    let url = broker.url();
    let _a = spawn_rmq_user_service(&url, &queue, "user-a", &[]).await;
    let _b = spawn_rmq_user_service(&url, &queue, "user-b", &[]).await;
    let client = Client::builder(broker.client_url(&queue))
        .request_timeout(Some(Duration::from_secs(2)))
        .reconnect_backoff(Duration::from_millis(100), Duration::from_secs(1))
        .build();
    assert_eq!(
        client.send::<_, _, i64>("sum", &[1, 2, 3]).await.unwrap(),
        6
    );

    // Load while the broker goes down and comes back: calls fail at the caller with an
    // error (none hangs past its timeout), then succeed again by themselves.
    let load = {
        let client = client.clone();
        tokio::spawn(async move {
            let mut log: Vec<Result<(), String>> = Vec::new();
            let started = tokio::time::Instant::now();
            while started.elapsed() < Duration::from_secs(120) {
                let call = client.send::<_, _, i64>("sum", &[1, 2]);
                match tokio::time::timeout(Duration::from_secs(5), call).await {
                    Ok(Ok(3)) => log.push(Ok(())),
                    Ok(Ok(other)) => panic!("sum answered {other}"),
                    Ok(Err(e)) => {
                        log.push(Err(e.to_string()));
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(_) => panic!("a call hung past its 2 s request timeout"),
                }
                let tail = log.iter().rev().take(50).filter(|r| r.is_ok()).count();
                if log.iter().any(Result::is_err) && tail == 50 {
                    break;
                }
            }
            log
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The broker's handle moves to a blocking thread for the restart (it waits on the node).
    let broker = tokio::task::spawn_blocking(move || {
        broker.restart();
        broker
    })
    .await
    .unwrap();
    let log = load.await.unwrap();
    let failures: Vec<&String> = log.iter().filter_map(|r| r.as_ref().err()).collect();
    let first_failure = log.iter().position(Result::is_err);
    eprintln!(
        "broker restart under load: {} calls, {} failed (first at #{first_failure:?}), e.g. {:?}",
        log.len(),
        failures.len(),
        failures.first()
    );
    assert!(!failures.is_empty(), "the restart was seen by the caller");
    let recovered = log.iter().rev().take(50).all(Result::is_ok);
    assert!(
        recovered,
        "50 calls in a row succeed after the restart: {:?}",
        &log[log.len().saturating_sub(60)..]
    );

    // Both services consume again.
    let by = spread(&client, 40).await;
    eprintln!("whoami x40 after the restart: {by:?}");
    assert_eq!(by.len(), 2, "both instances reconnected: {by:?}");
    drop(broker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_prefetch_count_bounds_what_an_instance_holds() {
    let test = "the_prefetch_count_bounds_what_an_instance_holds";
    let Some(broker) = RmqBroker::shared(test) else {
        return;
    };
    let queue = unique_queue("prefetch");
    let _one =
        spawn_rmq_user_service(&broker.url(), &queue, "user-1", &[("RMQ_PREFETCH", "2")]).await;
    let client = client(broker, &queue);
    // Ten requests of 1 s each: the instance takes two, the broker keeps eight.
    let calls: Vec<_> = (0..10)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.send::<_, _, String>("work", &1000u64).await })
        })
        .collect();
    let connection = lapin::Connection::connect(&broker.url(), Default::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let waiting = || async {
        channel
            .queue_declare(queue.as_str().into(), passive, FieldTable::default())
            .await
            .unwrap()
            .message_count()
    };
    // Once all ten are published, eight wait in the queue while the instance works on two.
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_millis(900);
    while tokio::time::Instant::now() < deadline {
        seen.push(waiting().await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("messages waiting in the queue during the first second: {seen:?}");
    assert_eq!(seen.iter().max(), Some(&8), "prefetch 2 of 10: {seen:?}");
    for call in calls {
        assert_eq!(call.await.unwrap().unwrap(), "user-1");
    }
    assert_eq!(waiting().await, 0);
    let _ = connection.close(200, "done".into()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_under_load_finishes_what_it_took() {
    let test = "a_graceful_stop_under_load_finishes_what_it_took";
    let Some(broker) = RmqBroker::shared(test) else {
        return;
    };
    let queue = unique_queue("graceful");
    let url = broker.url();
    let prefetch = [("RMQ_PREFETCH", "8")];
    let mut first = spawn_rmq_user_service(&url, &queue, "user-1", &prefetch).await;
    let _second = spawn_rmq_user_service(&url, &queue, "user-2", &prefetch).await;
    let client = client(broker, &queue);
    let calls: Vec<_> = (0..100)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.send::<_, _, String>("work", &100u64).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Ctrl-C: the instance cancels its consumer, finishes and acknowledges what it took.
    first.interrupt().await;
    let mut answered = BTreeMap::new();
    for call in calls {
        let who = tokio::time::timeout(CALL_TIMEOUT * 2, call)
            .await
            .expect("no call hangs")
            .unwrap()
            .expect("every call is answered");
        *answered.entry(who).or_insert(0) += 1;
    }
    eprintln!("100 x work(100 ms), user-1 stopped with Ctrl-C after 300 ms: {answered:?}");
    assert_eq!(answered.values().sum::<usize>(), 100);
    assert!(
        answered.contains_key("user-1"),
        "user-1 answered before it stopped: {answered:?}"
    );
    let log = first.stderr.snapshot().join("\n");
    assert!(
        log.contains("nestling microservice stopped (RabbitMQ)"),
        "a clean stop:\n{log}"
    );
}

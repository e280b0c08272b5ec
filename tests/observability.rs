//! Tracing spans per request on both sides, trace ids carried in `metadata` across a
//! chain of nestling services, and metrics through the `metrics` facade.
//!
//! One test function: the tracing subscriber and the metrics recorder are process-global.

use std::io::Write;
use std::sync::{Arc, Mutex};

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use nestling::{Client, Context, RpcException, Server};
use tracing_subscriber::fmt::format::FmtSpan;

/// A recorded metric: name, labels, value.
type Metric = (String, Vec<(String, String)>, DebugValue);

#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);

impl Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Buf {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// The back-end service: records the trace id it sees in `metadata`.
#[derive(Clone, Default)]
struct Backend {
    seen: Arc<Mutex<Vec<Option<String>>>>,
}

#[nestling::controller(client = false)]
impl Backend {
    #[message_pattern("sum")]
    fn sum(&self, nums: Vec<i64>, ctx: &Context) -> i64 {
        let meta: Option<serde_json::Value> = ctx.metadata().unwrap();
        let trace = meta.and_then(|m| m["traceId"].as_str().map(String::from));
        self.seen.lock().unwrap().push(trace);
        nums.iter().sum()
    }

    #[message_pattern("fail")]
    fn fail(&self) -> Result<i64, RpcException> {
        Err(RpcException::new("nope"))
    }
}

/// The front service: calls the back end from inside its handler.
struct Front {
    backend: Client,
}

#[nestling::controller(client = false)]
impl Front {
    #[message_pattern("total")]
    async fn total(&self, nums: Vec<i64>) -> i64 {
        self.backend.send("sum", &nums).await.unwrap()
    }
}

async fn serve(server: Server) -> std::net::SocketAddr {
    let listening = server.listen("127.0.0.1:0").await.unwrap();
    let addr = listening.local_addr();
    tokio::spawn(listening.serve());
    addr
}

#[tokio::test(flavor = "multi_thread")]
async fn spans_trace_ids_and_metrics() {
    let logs = Buf::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_span_events(FmtSpan::CLOSE)
        .with_ansi(false)
        .with_max_level(tracing::Level::DEBUG)
        .init();
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().unwrap();

    let backend = Backend::default();
    let back_addr = serve(
        Server::builder()
            .discover(false)
            .controller(backend.clone())
            .build()
            .unwrap(),
    )
    .await;
    let front_addr = serve(
        Server::builder()
            .discover(false)
            .controller(Front {
                backend: Client::new(back_addr.to_string()),
            })
            .build()
            .unwrap(),
    )
    .await;
    let client = Client::new(front_addr.to_string());

    // Without a trace: nothing is added to metadata.
    let n: i64 = client.send("total", &[1, 2]).await.unwrap();
    assert_eq!(n, 3);
    // Inside a trace: the id travels client → front → back.
    let n: i64 = nestling::trace::scope("trace-42", client.send("total", &[4, 5]))
        .await
        .unwrap();
    assert_eq!(n, 9);
    assert_eq!(
        *backend.seen.lock().unwrap(),
        [None, Some("trace-42".to_string())]
    );
    let direct = Client::new(back_addr.to_string());
    let _ = direct.send::<_, _, i64>("fail", &()).await.unwrap_err();

    let text = logs.text();
    let closes: Vec<&str> = text.lines().filter(|l| l.contains("close")).collect();
    let find = |needles: &[&str]| closes.iter().any(|l| needles.iter().all(|n| l.contains(n)));
    // Server spans: pattern, id, peer, outcome, duration.
    assert!(
        find(&[
            "nestling.request",
            "kind=\"request\"",
            "pattern=\"\\\"total\\\"\"",
            "peer=127.0.0.1",
            "outcome=\"ok\"",
            "duration_us="
        ]),
        "{text}"
    );
    assert!(
        find(&[
            "nestling.request",
            "trace_id=\"trace-42\"",
            "pattern=\"\\\"sum\\\"\""
        ]),
        "{text}"
    );
    assert!(
        find(&[
            "nestling.request",
            "pattern=\"\\\"fail\\\"\"",
            "outcome=\"error\""
        ]),
        "{text}"
    );
    // Client spans, nested in the server span of the handler that made the call.
    assert!(
        find(&["nestling.call", "outcome=\"ok\"", "trace_id=\"trace-42\""]),
        "{text}"
    );
    assert!(
        find(&[
            "nestling.request",
            "nestling.call",
            "pattern=\"\\\"sum\\\"\""
        ]),
        "{text}"
    );

    let metrics: Vec<Metric> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let key = key.key();
            let labels = key
                .labels()
                .map(|l| (l.key().to_string(), l.value().to_string()))
                .collect();
            (key.name().to_string(), labels, value)
        })
        .collect();
    let counter = |name: &str, labels: &[(&str, &str)]| {
        metrics
            .iter()
            .filter(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|(_, _, v)| match v {
                DebugValue::Counter(c) => *c,
                _ => 0,
            })
            .sum::<u64>()
    };
    assert_eq!(
        counter(
            "nestling_server_requests_total",
            &[("kind", "request"), ("outcome", "ok")]
        ),
        4
    );
    assert_eq!(
        counter("nestling_server_requests_total", &[("outcome", "error")]),
        1
    );
    assert_eq!(
        counter("nestling_client_calls_total", &[("outcome", "ok")]),
        4
    );
    assert!(metrics
        .iter()
        .any(|(n, _, v)| n == "nestling_server_request_duration_seconds"
            && matches!(v, DebugValue::Histogram(h) if h.len() == 5)));
    assert!(metrics
        .iter()
        .any(|(n, _, _)| n == "nestling_server_connections"));
}

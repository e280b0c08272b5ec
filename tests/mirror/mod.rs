//! The handlers of `tests/nest/user-service.mjs` that the broker interop tests use, in
//! Rust: the same patterns, the same answers. A module of the test binaries that include it
//! (`mod mirror;`), not of `support/`: its controller registers itself in every binary
//! that compiles it.

pub mod calls;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::stream::{self, BoxStream};
use futures_util::{Stream, StreamExt};
use nestling::{Context, RpcException};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// The handlers of tests/nest/user-service.mjs that these tests use, in Rust.
#[derive(Default)]
pub struct Mirror {
    store: Arc<Mutex<HashMap<String, Vec<Value>>>>,
}

#[derive(Serialize, Deserialize)]
pub struct Record {
    key: String,
    value: Value,
}

#[derive(Serialize, Deserialize)]
pub struct Recorded {
    key: String,
    n: usize,
}

impl Mirror {
    fn remember(&self, key: String, value: Value) {
        let mut store = self.store.lock().unwrap();
        store.entry(key).or_default().push(value);
    }
}

#[nestling::controller]
impl Mirror {
    #[message_pattern("sum")]
    fn sum(&self, nums: Vec<i64>) -> i64 {
        nums.iter().sum()
    }

    #[message_pattern({"cmd": "sum"})]
    fn sum_cmd(&self, nums: Vec<i64>) -> i64 {
        nums.iter().sum()
    }

    #[message_pattern("echo")]
    fn echo(&self, data: Value) -> Value {
        data
    }

    #[message_pattern("fail")]
    fn fail(&self) -> Result<i64, RpcException> {
        Err(RpcException::new("bad thing"))
    }

    #[message_pattern("fail_obj")]
    fn fail_obj(&self) -> Result<i64, RpcException> {
        Err(RpcException::new(json!({"code": 42, "message": "m"})))
    }

    #[message_pattern("boom")]
    fn boom(&self) -> Result<i64, String> {
        Err("boom".into())
    }

    #[message_pattern("count")]
    fn count(&self, n: u32) -> impl Stream<Item = u32> {
        stream::iter(1..=n)
    }

    /// `interval(5).pipe(take(n))`, completing 20 ms after the last item.
    #[message_pattern("ticks")]
    async fn ticks(&self, n: u32) -> BoxStream<'static, u32> {
        stream::unfold(0u32, move |i| async move {
            if i < n {
                tokio::time::sleep(Duration::from_millis(5)).await;
                Some((i, i + 1))
            } else {
                tokio::time::sleep(Duration::from_millis(20)).await;
                None
            }
        })
        .boxed()
    }

    #[message_pattern("empty")]
    fn empty(&self) -> impl Stream<Item = u32> {
        stream::empty()
    }

    #[message_pattern("fails_after")]
    fn fails_after(&self, n: u32) -> impl Stream<Item = Result<u32, RpcException>> {
        stream::iter(
            (1..=n)
                .map(Ok)
                .chain([Err(RpcException::new("stream broke"))]),
        )
    }

    #[event_pattern("record")]
    fn record(&self, r: Record) {
        self.remember(r.key, r.value);
    }

    #[event_pattern("record")]
    fn record_also(&self, r: Record) {
        self.remember(format!("{}:also", r.key), r.value);
    }

    #[event_pattern({"ev": "record", "v": 2})]
    fn record_obj(&self, r: Record) {
        self.remember(format!("{}:obj", r.key), r.value);
    }

    #[message_pattern("whoami")]
    fn whoami(&self) -> String {
        std::env::var("INSTANCE").unwrap_or_else(|_| "nestling".into())
    }

    /// What `RmqContext` exposes of the message (tests/nest's `rmq_message`).
    #[message_pattern("rmq_message")]
    fn rmq_message(&self, ctx: &Context) -> Value {
        rmq_message(ctx)
    }

    /// Waits (up to 3 s) until `n` values were recorded under `key`; returns them sorted.
    #[message_pattern("recorded")]
    async fn recorded(&self, q: Recorded) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        loop {
            let values = self.store.lock().unwrap().get(&q.key).cloned();
            let mut values = values.unwrap_or_default();
            if values.len() >= q.n || tokio::time::Instant::now() > deadline {
                values.sort_by_key(|v| v.to_string());
                return values;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

fn rmq_message(ctx: &Context) -> Value {
    let Some(m) = ctx.rmq() else {
        return Value::Null;
    };
    let p = m.properties();
    json!({
        "pattern": ctx.pattern(),
        "headers": m.headers_json(),
        "priority": p.priority(),
        "directReplyTo": p.reply_to().as_ref().is_some_and(|s| s.as_str().starts_with("amq.rabbitmq.reply-to")),
        "hasCorrelationId": p.correlation_id().is_some(),
        "exchange": m.exchange(),
        "redelivered": m.redelivered(),
    })
}

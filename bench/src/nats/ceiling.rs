//! The NATS "ceiling": a raw async-nats responder doing the user service's `sum` work and
//! nothing else — subscribe to `sum` (in the same queue group as the services), parse
//! `{"pattern":"sum","data":[…],"id":…}` in one serde pass (as the TCP ceiling), publish
//! Nest's reply `{"response":N,"isDisposed":true,"id":…}` to the message's reply subject.
//! No framework, no routing table, no handler tasks.
//!
//! Started by the bench as `nestling-bench --nats-ceiling-server` with `NATS_URL`; prints
//! `READY nats` once subscribed.

use std::io::Write as _;

use futures_util::StreamExt;

/// The queue group every NATS server of the bench joins.
pub const QUEUE: &str = "bench";

pub fn run() -> Result<(), String> {
    let url = std::env::var("NATS_URL").map_err(|_| "NATS_URL is not set".to_string())?;
    // One thread, as the TCP ceiling (and nestling's example on one core).
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?
        .block_on(serve(&url))
}

async fn serve(url: &str) -> Result<(), String> {
    let client = async_nats::connect(url)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let mut requests = client
        .queue_subscribe("sum", QUEUE.to_string())
        .await
        .map_err(|e| format!("subscribe: {e}"))?;
    client.flush().await.map_err(|e| format!("flush: {e}"))?;
    println!("READY nats");
    let _ = std::io::stdout().flush();
    while let Some(msg) = requests.next().await {
        let (Some(reply), Some((n, id))) = (msg.reply, crate::ceiling::sum_and_id(&msg.payload))
        else {
            continue;
        };
        let body = format!("{{\"response\":{n},\"isDisposed\":true,\"id\":{id}}}");
        client
            .publish(reply, body.into())
            .await
            .map_err(|e| format!("reply: {e}"))?;
    }
    Ok(())
}

//! The RabbitMQ "ceiling": a raw lapin consumer doing the user service's `sum` work and
//! nothing else — consume the queue, parse `{"pattern":"sum","data":[…],"id":…}`, publish
//! `{"response":N,"isDisposed":true}` to `replyTo` with the `correlationId`, acknowledge.
//! No framework, no routing table, no handler tasks.
//!
//! Started by the bench as `nestling-bench --rmq-ceiling-server` with `RMQ_URL`,
//! `RMQ_QUEUE` and `RMQ_NOACK` (`true`: consume without acknowledgements, as Nest's
//! default); prints `READY rmq` once consuming.

use std::io::Write as _;

use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

/// The prefetch count with acknowledgements on: nestling's default, so the two compare.
const PREFETCH: u16 = 64;

pub fn run() -> Result<(), String> {
    let var = |k: &str| std::env::var(k).map_err(|_| format!("{k} is not set"));
    let url = var("RMQ_URL")?;
    let queue = var("RMQ_QUEUE")?;
    let no_ack = std::env::var("RMQ_NOACK").is_ok_and(|v| v == "true");
    // One thread, as the TCP ceiling (lapin adds its own I/O thread per connection).
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?
        .block_on(serve(&url, &queue, no_ack))
}

async fn serve(url: &str, queue: &str, no_ack: bool) -> Result<(), String> {
    let err = |what: &'static str| move |e: lapin::Error| format!("{what}: {e}");
    let connection = Connection::connect(url, ConnectionProperties::default())
        .await
        .map_err(err("connect"))?;
    let channel = connection
        .create_channel()
        .await
        .map_err(err("open a channel"))?;
    // As Nest and nestling declare a service queue by default.
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(queue.into(), durable, FieldTable::default())
        .await
        .map_err(err("declare the queue"))?;
    if !no_ack {
        channel
            .basic_qos(PREFETCH, BasicQosOptions::default())
            .await
            .map_err(err("set the prefetch count"))?;
    }
    let options = BasicConsumeOptions {
        no_ack,
        ..BasicConsumeOptions::default()
    };
    let mut deliveries = channel
        .basic_consume(queue.into(), "".into(), options, FieldTable::default())
        .await
        .map_err(err("consume"))?;
    println!("READY rmq");
    let _ = std::io::stdout().flush();
    // Replies and acks in flight: the loop takes the next delivery while lapin's I/O
    // thread writes the previous ones' frames.
    let mut answering = FuturesUnordered::new();
    loop {
        tokio::select! {
            Some(done) = answering.next(), if !answering.is_empty() => {
                let done: Result<(), lapin::Error> = done;
                done.map_err(err("reply"))?;
            }
            next = deliveries.next() => match next {
                Some(Ok(delivery)) => answering.push(answer(&channel, delivery, no_ack)),
                Some(Err(e)) => return Err(format!("consuming: {e}")),
                None => return Ok(()),
            },
        }
    }
}

/// Publishes the reply (if the message is a `sum` request with a `replyTo`), then
/// acknowledges the delivery.
async fn answer(channel: &Channel, delivery: Delivery, no_ack: bool) -> Result<(), lapin::Error> {
    let sum = crate::ceiling::sum_of(&delivery.data);
    if let (Some(n), Some(reply_to)) = (sum, delivery.properties.reply_to()) {
        let body = format!("{{\"response\":{n},\"isDisposed\":true}}");
        let mut properties = BasicProperties::default();
        if let Some(id) = delivery.properties.correlation_id() {
            properties = properties.with_correlation_id(id.clone());
        }
        channel
            .basic_publish(
                "".into(),
                reply_to.clone(),
                BasicPublishOptions::default(),
                body.as_bytes(),
                properties,
            )
            .await?;
    }
    if !no_ack {
        delivery.acker.ack(BasicAckOptions::default()).await?;
    }
    Ok(())
}

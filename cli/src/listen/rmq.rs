//! `listen amqp://host:port/vhost?queue=NAME`: consumes the queue and prints every message
//! as a Nest packet, with the AMQP properties Nest's RMQ transport uses: `correlationId`,
//! `replyTo` and `headers`.
//!
//! The queue is declared as Nest declares it (durable unless `durable=false`; not at all
//! with `no_assert=true`). A message is acknowledged once printed (and answered), so one
//! still buffered when the listener stops goes back to the queue. With `--echo`, a request
//! (a packet with an `id`) is answered as Nest's ServerRMQ answers: published to its
//! `replyTo` queue with its `correlationId`, body `{"response":data,"isDisposed":true}`.

use std::time::Duration;

use futures_util::StreamExt;
use nestling::packet::{parse_inbound, Inbound};
use nestling::rmq::lapin;

use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use serde_json::Value;

use super::format::{echo_json, json_string};
use super::{log, preview, Origin, Sink, Stopping};
use crate::address::{redact, RmqAddress};
use crate::output::Failure;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Messages the broker hands over before the first is acknowledged.
const PREFETCH: u16 = 64;

pub async fn run(
    target: &RmqAddress,
    sink: &Sink,
    stopping: impl Stopping,
) -> Result<&'static str, Failure> {
    let shown = redact(&target.broker);
    let properties = ConnectionProperties::default().with_connection_name("nestling listen".into());
    let connection = tokio::time::timeout(
        CONNECT_TIMEOUT,
        Connection::connect(&target.broker, properties),
    )
    .await
    .map_err(|_| {
        Failure::connection(format!(
            "could not connect to {shown} within {CONNECT_TIMEOUT:?}; check that RabbitMQ is \
             running and the address is right"
        ))
    })?
    .map_err(|e| {
        Failure::connection(format!(
            "could not connect to {shown}: {e}; check that RabbitMQ is running and the \
             address is right"
        ))
    })?;
    let result = consume(&connection, target, &shown, sink, stopping).await;
    let _ = tokio::time::timeout(
        Duration::from_secs(2),
        connection.close(200, "nestling listen stopped".into()),
    )
    .await;
    result
}

async fn consume(
    connection: &Connection,
    target: &RmqAddress,
    shown: &str,
    sink: &Sink,
    stopping: impl Stopping,
) -> Result<&'static str, Failure> {
    let queue = target.queue.as_str();
    let failed =
        |what: &str, e: lapin::Error| Failure::connection(format!("{what} on {shown} failed: {e}"));
    let channel = connection
        .create_channel()
        .await
        .map_err(|e| failed("opening a channel", e))?;
    if target.declare {
        let options = QueueDeclareOptions {
            durable: target.durable,
            ..QueueDeclareOptions::default()
        };
        channel
            .queue_declare(queue.into(), options, FieldTable::default())
            .await
            .map_err(|e| {
                Failure::connection(format!(
                    "declaring queue {queue:?} (durable: {}) on {shown} failed: {e}; if the \
                     queue exists with other settings, match them (durable=…) or add \
                     no_assert=true",
                    target.durable
                ))
            })?;
    }
    channel
        .basic_qos(PREFETCH, BasicQosOptions::default())
        .await
        .map_err(|e| failed("setting the prefetch count", e))?;
    let mut deliveries = channel
        .basic_consume(
            queue.into(),
            "nestling-listen".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| failed(&format!("consuming queue {queue:?}"), e))?;
    sink.announce(&format!("{shown} queue {}", json_string(queue)));
    tokio::pin!(stopping);
    loop {
        let delivery = tokio::select! {
            why = &mut stopping => return Ok(why),
            delivery = deliveries.next() => delivery,
        };
        let delivery = match delivery {
            Some(Ok(delivery)) => delivery,
            Some(Err(e)) => return Err(failed(&format!("consuming queue {queue:?}"), e)),
            None => {
                return Err(Failure::connection(format!(
                    "the broker {shown} ended the consumer of queue {queue:?}"
                )))
            }
        };
        if !handle(&channel, queue, sink, &delivery).await {
            return Ok("standard output closed");
        }
        if let Err(e) = delivery.acker.ack(BasicAckOptions::default()).await {
            return Err(failed("acknowledging a message", e));
        }
    }
}

/// Prints (and with `--echo` answers) one message; `false` when standard output is gone.
async fn handle(channel: &Channel, queue: &str, sink: &Sink, delivery: &Delivery) -> bool {
    let body = bytes::Bytes::copy_from_slice(&delivery.data);
    let packet = match parse_inbound(&body) {
        Ok(packet) => packet,
        Err(e) => {
            log(&format!(
                "{queue}: not a Nest packet ({e}): {}",
                preview(&body)
            ));
            return true;
        }
    };
    let props = &delivery.properties;
    let correlation_id = props.correlation_id().as_ref().map(|c| c.as_str());
    let reply_to = props.reply_to().as_ref().map(|r| r.as_str());
    let origin = Origin::new("queue", queue)
        .with_str("correlationId", correlation_id)
        .with_str("replyTo", reply_to)
        .with_json("headers", props.headers().as_ref().map(table_json));
    if !sink.print(&origin, &packet, &body) {
        return false;
    }
    if let (true, Inbound::Request { data, .. }) = (sink.echo(), &packet) {
        match reply_to {
            Some(reply_to) => {
                let mut properties = BasicProperties::default();
                if let Some(id) = correlation_id {
                    properties = properties.with_correlation_id(id.into());
                }
                let reply = echo_json(data.as_ref(), None);
                let published = channel
                    .basic_publish(
                        "".into(),
                        reply_to.into(),
                        BasicPublishOptions::default(),
                        reply.as_bytes(),
                        properties,
                    )
                    .await;
                if let Err(e) = published {
                    log(&format!(
                        "{queue}: could not send the echo to {reply_to}: {e}"
                    ));
                }
            }
            None => log(&format!("{queue}: a request without replyTo; not answered")),
        }
    }
    true
}

/// An AMQP field table as compact JSON (byte strings as text when UTF-8, else as arrays
/// of bytes; decimals as numbers; timestamps as seconds).
fn table_json(table: &FieldTable) -> String {
    Value::Object(table_value(table)).to_string()
}

fn table_value(table: &FieldTable) -> serde_json::Map<String, Value> {
    table
        .inner()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), amqp_value(v)))
        .collect()
}

fn amqp_value(value: &AMQPValue) -> Value {
    let bytes = |b: &[u8]| match std::str::from_utf8(b) {
        Ok(text) => Value::from(text),
        Err(_) => Value::from(b.to_vec()),
    };
    match value {
        AMQPValue::Boolean(b) => Value::from(*b),
        AMQPValue::ShortShortInt(n) => Value::from(*n),
        AMQPValue::ShortShortUInt(n) => Value::from(*n),
        AMQPValue::ShortInt(n) => Value::from(*n),
        AMQPValue::ShortUInt(n) => Value::from(*n),
        AMQPValue::LongInt(n) => Value::from(*n),
        AMQPValue::LongUInt(n) => Value::from(*n),
        AMQPValue::LongLongInt(n) => Value::from(*n),
        AMQPValue::Float(n) => Value::from(*n),
        AMQPValue::Double(n) => Value::from(*n),
        AMQPValue::DecimalValue(d) => {
            Value::from(f64::from(d.value) / 10f64.powi(i32::from(d.scale)))
        }
        AMQPValue::ShortString(s) => Value::from(s.as_str()),
        AMQPValue::LongString(s) => bytes(s.as_bytes()),
        AMQPValue::FieldArray(a) => Value::Array(a.as_slice().iter().map(amqp_value).collect()),
        AMQPValue::Timestamp(t) => Value::from(*t),
        AMQPValue::FieldTable(t) => Value::Object(table_value(t)),
        AMQPValue::ByteArray(b) => bytes(b.as_slice()),
        AMQPValue::Void => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::{FieldArray, LongString};

    #[test]
    fn headers_print_as_json() {
        let mut inner = FieldTable::default();
        inner.insert("n".into(), AMQPValue::LongLongInt(-3));
        let mut table = FieldTable::default();
        table.insert("x-retry".into(), AMQPValue::LongInt(2));
        table.insert(
            "trace".into(),
            AMQPValue::LongString(LongString::from("abc")),
        );
        table.insert(
            "bin".into(),
            AMQPValue::LongString(LongString::from(vec![0xff, 1])),
        );
        table.insert(
            "list".into(),
            AMQPValue::FieldArray(FieldArray::from(vec![
                AMQPValue::Boolean(true),
                AMQPValue::Void,
            ])),
        );
        table.insert("nested".into(), AMQPValue::FieldTable(inner));
        assert_eq!(
            table_json(&table),
            r#"{"bin":[255,1],"list":[true,null],"nested":{"n":-3},"trace":"abc","x-retry":2}"#
        );
    }
}

//! What a handler knows of the RabbitMQ message it serves: Nest's `RmqContext`.

use lapin::types::{AMQPValue, FieldTable};
use lapin::BasicProperties;

/// The RabbitMQ message a packet arrived in — what Nest's `RmqContext.getMessage()` gives:
/// its properties (headers, priority, correlation id, reply queue …) and how it was
/// routed. Handlers reach it through [`Context::rmq`](crate::Context::rmq).
///
/// ```
/// use nestling::Context;
///
/// #[derive(Default)]
/// struct Tenants;
///
/// #[nestling::controller]
/// impl Tenants {
///     #[message_pattern("tenant")]
///     fn tenant(&self, ctx: &Context) -> Option<String> {
///         let headers = ctx.rmq()?.headers_json();
///         headers.get("x-tenant")?.as_str().map(str::to_owned)
///     }
/// }
/// # fn main() {}
/// ```
#[derive(Debug)]
pub struct RmqMessage {
    pub(crate) exchange: String,
    pub(crate) routing_key: String,
    pub(crate) redelivered: bool,
    pub(crate) properties: BasicProperties,
}

impl RmqMessage {
    /// The exchange it was published to (`""`: the default exchange, straight to a queue).
    pub fn exchange(&self) -> &str {
        &self.exchange
    }

    /// Its routing key: the queue's name when published to a queue, the pattern when
    /// published to an exchange (Nest's `wildcards`).
    pub fn routing_key(&self) -> &str {
        &self.routing_key
    }

    /// Whether the broker delivered it before (to an instance that did not acknowledge
    /// it, for example because it was killed).
    pub fn redelivered(&self) -> bool {
        self.redelivered
    }

    /// Its AMQP properties, as lapin gives them.
    pub fn properties(&self) -> &BasicProperties {
        &self.properties
    }

    /// Its headers as JSON, as amqplib presents them to a Nest handler: strings, numbers,
    /// booleans, arrays and nested tables (`{}` when it had none).
    pub fn headers_json(&self) -> serde_json::Value {
        self.properties
            .headers()
            .as_ref()
            .map_or_else(|| serde_json::json!({}), table_json)
    }
}

fn table_json(table: &FieldTable) -> serde_json::Value {
    serde_json::Value::Object(
        table
            .inner()
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), value_json(v)))
            .collect(),
    )
}

fn value_json(value: &AMQPValue) -> serde_json::Value {
    use serde_json::Value;
    match value {
        AMQPValue::Boolean(b) => Value::Bool(*b),
        AMQPValue::ShortShortInt(n) => (*n).into(),
        AMQPValue::ShortShortUInt(n) => (*n).into(),
        AMQPValue::ShortInt(n) => (*n).into(),
        AMQPValue::ShortUInt(n) => (*n).into(),
        AMQPValue::LongInt(n) => (*n).into(),
        AMQPValue::LongUInt(n) => (*n).into(),
        AMQPValue::LongLongInt(n) => (*n).into(),
        AMQPValue::Timestamp(n) => (*n).into(),
        AMQPValue::Float(f) => serde_json::json!(f),
        AMQPValue::Double(f) => serde_json::json!(f),
        AMQPValue::ShortString(s) => Value::String(s.as_str().to_owned()),
        AMQPValue::LongString(s) => {
            Value::String(String::from_utf8_lossy(s.as_bytes()).into_owned())
        }
        AMQPValue::FieldArray(a) => Value::Array(a.as_slice().iter().map(value_json).collect()),
        AMQPValue::FieldTable(t) => table_json(t),
        AMQPValue::ByteArray(b) => Value::Array(b.as_slice().iter().map(|&x| x.into()).collect()),
        AMQPValue::DecimalValue(d) => serde_json::json!({ "scale": d.scale, "value": d.value }),
        AMQPValue::Void => Value::Null,
    }
}

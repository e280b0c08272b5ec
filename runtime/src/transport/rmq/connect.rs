//! Opening a lapin connection within a time limit, with errors that name the broker.

use std::time::Duration;

use lapin::{Connection, ConnectionProperties};

use super::address::redact;

/// Connects to `uri` as `name` (shown in RabbitMQ's management UI), giving up after
/// `timeout`; the error says what failed, without the password.
pub(super) async fn connect(
    uri: &str,
    name: &str,
    timeout: Duration,
) -> Result<Connection, String> {
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    match tokio::time::timeout(timeout, Connection::connect(uri, properties)).await {
        Ok(Ok(connection)) => Ok(connection),
        Ok(Err(e)) => Err(format!("could not connect to {}: {e}", redact(uri))),
        Err(_) => Err(format!(
            "could not connect to {} within {timeout:?}",
            redact(uri)
        )),
    }
}

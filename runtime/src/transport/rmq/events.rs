//! A RabbitMQ connection's flow-control notifications as status: the broker blocks a
//! connection that publishes while it is low on memory or disk (Nest's `RmqStatus.BLOCKED`),
//! and unblocks it once the alarm clears.

use std::sync::Arc;

use futures_util::StreamExt;
use lapin::Connection;

use crate::status::{Hub, Status, TransportError};

/// Follows `connection`'s blocked and unblocked notifications into `hub` until the
/// returned guard is dropped (with the connection it follows).
pub(crate) fn follow(connection: &Connection, hub: Arc<Hub>, addr: String) -> Following {
    let mut events = Box::pin(connection.events_listener());
    Following(tokio::spawn(async move {
        while let Some(event) = events.next().await {
            match event {
                lapin::Event::ConnectionBlocked(reason) => {
                    hub.set(Status::Blocked);
                    hub.error(TransportError::Broker {
                        addr: addr.clone(),
                        reason: format!("the broker blocked the connection: {reason}"),
                    });
                }
                lapin::Event::ConnectionUnblocked => hub.set(Status::Connected),
                _ => {}
            }
        }
    }))
}

/// Stops following when dropped.
pub(crate) struct Following(tokio::task::JoinHandle<()>);

impl Drop for Following {
    fn drop(&mut self) {
        self.0.abort();
    }
}

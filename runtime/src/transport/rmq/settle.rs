//! Settling a delivery (acknowledging it, or rejecting it) once everything it started has
//! finished: the last holder of its [`Settle`] does it, whether that is the reply sink
//! after the last reply or the task waiting for the handlers.

use std::sync::Arc;

use lapin::options::{BasicAckOptions, BasicRejectOptions};
use lapin::Acker;

/// How a delivery ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Handled: acknowledged.
    Ack,
    /// Nothing can handle it (no handler, not a packet): rejected without requeueing, as
    /// Nest's `nack(message, false, false)`, so a dead-letter exchange receives it and it
    /// is never redelivered forever.
    Reject,
}

/// Settles its delivery when dropped; shared by everything the delivery started.
pub(super) struct Settle {
    acker: Acker,
    verdict: Verdict,
}

impl Settle {
    /// `None` in `noAck` mode: the broker considered the message settled on delivery.
    pub fn new(acker: Acker, no_ack: bool, verdict: Verdict) -> Option<Arc<Self>> {
        (!no_ack).then(|| Arc::new(Settle { acker, verdict }))
    }
}

impl Drop for Settle {
    fn drop(&mut self) {
        let (acker, verdict) = (self.acker.clone(), self.verdict);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // No runtime left (process exit): the channel closes unacknowledged, and the
            // broker redelivers the message elsewhere.
            return;
        };
        runtime.spawn(async move {
            let settled = match verdict {
                Verdict::Ack => acker.ack(BasicAckOptions::default()).await,
                Verdict::Reject => acker.reject(BasicRejectOptions { requeue: false }).await,
            };
            if let Err(e) = settled {
                // The channel is gone: the broker redelivers the message to another consumer.
                tracing::warn!("could not settle a RabbitMQ delivery ({verdict:?}): {e}");
            }
        });
    }
}

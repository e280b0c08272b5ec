//! Settling a delivery (acknowledging it, or rejecting it) once everything it started has
//! finished: the last holder of its [`Settle`] does it, whether that is the reply sink
//! after the last reply or the task waiting for the handlers.

use std::sync::Arc;

use lapin::options::{BasicAckOptions, BasicRejectOptions};
use lapin::Acker;
use tokio_util::task::task_tracker::TaskTrackerToken;
use tokio_util::task::TaskTracker;

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
    /// Where the acknowledgement runs: a graceful stop waits for these before it closes
    /// the connection (an acknowledgement lost there would make the broker deliver the
    /// message again).
    settling: TaskTracker,
    /// Counts as running on `settling` while the delivery is unsettled, so that the wait
    /// covers deliveries whose acknowledgement is not even spawned yet.
    _unsettled: TaskTrackerToken,
}

impl Settle {
    /// `None` in `noAck` mode: the broker considered the message settled on delivery.
    pub fn new(
        acker: Acker,
        no_ack: bool,
        verdict: Verdict,
        settling: &TaskTracker,
    ) -> Option<Arc<Self>> {
        (!no_ack).then(|| {
            Arc::new(Settle {
                acker,
                verdict,
                settling: settling.clone(),
                _unsettled: settling.token(),
            })
        })
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
        self.settling.spawn_on(
            async move {
                let settled = match verdict {
                    Verdict::Ack => acker.ack(BasicAckOptions::default()).await,
                    Verdict::Reject => acker.reject(BasicRejectOptions { requeue: false }).await,
                };
                if let Err(e) = settled {
                    // The channel is gone: the broker redelivers the message to another consumer.
                    tracing::warn!("could not settle a RabbitMQ delivery ({verdict:?}): {e}");
                }
            },
            &runtime,
        );
    }
}

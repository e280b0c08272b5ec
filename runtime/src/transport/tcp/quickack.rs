//! Acknowledging at once the bytes of a read that produced no reply.
//!
//! A Nest client (`ClientTCP`) leaves Nagle's algorithm on and writes each packet as its own
//! small segment. When it writes two packets back to back — the tutorial gateway's
//! `emit('log')` then `send('sum')` — the kernel holds the second until the first is
//! acknowledged. Linux delays the ACK of data that looks interactive (up to 40 ms), hoping to
//! carry it on the answer; an event has no answer, so every such pair stalls ~40 ms.
//!
//! `TCP_QUICKACK` sends the pending ACK now. It is not sticky (the kernel goes back to
//! delaying once the connection looks interactive again), so it is set after each read
//! whose frames produced no immediate reply: events only, a frame still arriving, or a
//! request answered later by an `async` handler. When a read does produce a reply — the
//! request/reply fast path — nothing is done: the reply carries the ACK, and no system call
//! is added. Elsewhere than Linux (and over TLS, whose stream does not expose the socket
//! once split) this is a no-op.

use tokio::io::ReadHalf;
use tokio::net::tcp::OwnedReadHalf;

/// The read side of a connection, able to acknowledge what it has read at once.
pub(super) trait AckNow {
    /// Sends the ACK of everything received so far now, if one is pending. Errors are
    /// ignored: at worst the peer waits for the delayed ACK, as without this.
    fn ack_now(&self);
}

impl AckNow for OwnedReadHalf {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn ack_now(&self) {
        let _ = self.as_ref().set_quickack(true);
    }

    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    fn ack_now(&self) {}
}

/// TLS: the socket is out of reach behind the split TLS stream.
impl<T> AckNow for ReadHalf<T> {
    fn ack_now(&self) {}
}

#[cfg(all(test, any(target_os = "linux", target_os = "android")))]
mod tests {
    use super::*;

    /// The option reaches the socket: the kernel reports quick-ACK mode right after.
    #[tokio::test]
    async fn sets_quickack_on_the_socket() {
        let (_client, accepted) = super::super::connected_pair().await;
        accepted.set_quickack(false).unwrap();
        assert!(!accepted.quickack().unwrap());
        let (rd, _wr) = accepted.into_split();
        rd.ack_now();
        assert!(rd.as_ref().quickack().unwrap());
    }
}

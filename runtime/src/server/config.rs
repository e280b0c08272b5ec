//! Server limits and timeouts, with their documented defaults.

use std::time::Duration;

use crate::codec::DEFAULT_MAX_FRAME_LEN;

/// Default [`ServerConfig::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Default [`ServerConfig::max_in_flight_per_connection`].
pub const DEFAULT_MAX_IN_FLIGHT: usize = 4_096;
/// Default [`ServerConfig::incomplete_frame_timeout`] (Nest's `incompleteMessageTimeout`).
pub const DEFAULT_INCOMPLETE_FRAME_TIMEOUT: Duration = Duration::from_secs(30);
/// Default [`ServerConfig::shutdown_grace`].
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Default [`ServerConfig::reply_high_water`]: 1 MiB.
pub const DEFAULT_REPLY_HIGH_WATER: usize = 1 << 20;
/// Default [`ServerConfig::write_stall_timeout`].
pub const DEFAULT_WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Default [`ServerConfig::memory_budget`]: 512 MiB.
pub const DEFAULT_MEMORY_BUDGET: usize = 512 << 20;
/// Default [`ServerConfig::memory_budget_grace`].
pub const DEFAULT_MEMORY_BUDGET_GRACE: Duration = Duration::from_secs(5);

/// Limits and timeouts of a server. Set them through [`ServerBuilder`](crate::ServerBuilder).
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Largest frame accepted, in UTF-16 units (default: Nest's 134,217,728; at most
    /// [`MAX_FRAME_LEN_LIMIT`](crate::codec::MAX_FRAME_LEN_LIMIT)). A larger declared
    /// length closes the connection before anything is buffered.
    pub max_frame_len: usize,
    /// Connections served at once (default 10,000); further connections are closed on
    /// accept with a logged warning.
    pub max_connections: usize,
    /// Requests and events running at once per connection (default 4,096). When reached,
    /// the server stops reading from that connection until one finishes (backpressure).
    pub max_in_flight_per_connection: usize,
    /// How long one frame may take to arrive, from its first byte to its last, before the
    /// connection is closed (default 30 s, Nest's `incompleteMessageTimeout`; `None`
    /// disables). Nest restarts its timer on every read, so a sender trickling a byte every
    /// few seconds holds a Nest connection forever; nestling bounds the whole frame.
    pub incomplete_frame_timeout: Option<Duration>,
    /// How long a connection may stay silent between packets before it is closed
    /// (default `None`: never, like Nest).
    pub idle_timeout: Option<Duration>,
    /// How long graceful shutdown waits for in-flight requests (default 10 s).
    pub shutdown_grace: Duration,
    /// Bytes of replies a TCP connection may hold unwritten (queued, or handed to a write
    /// the peer has not taken yet) before the server stops reading that connection
    /// (default 1 MiB). Reading resumes once half of that remains. A peer that sends
    /// requests and never reads the replies makes the server hold at most this plus one
    /// batch of replies, then is closed after
    /// [`write_stall_timeout`](Self::write_stall_timeout).
    pub reply_high_water: usize,
    /// How long a TCP connection's socket may accept no reply bytes at all, while replies
    /// wait, before the connection is closed with a warning naming the peer (default 30 s;
    /// `None`: never).
    pub write_stall_timeout: Option<Duration>,
    /// Bytes all TCP connections of a server may hold together for their peers: read
    /// buffers (frames still arriving) and replies not yet written (default 512 MiB).
    /// When exceeded, connections holding more than 64 KiB stop reading until it is back
    /// under; well-behaved connections holding less keep being served. A frame counts
    /// with its read buffer, so a frame larger than the budget cannot be received: keep
    /// [`max_frame_len`](Self::max_frame_len) (up to 3 bytes per UTF-16 unit) well below it.
    pub memory_budget: usize,
    /// How long the [`memory_budget`](Self::memory_budget) may stay exceeded before the
    /// connection holding the most is closed, with a warning naming its peer; then one
    /// more per period while it stays exceeded (default 5 s).
    pub memory_budget_grace: Duration,
    /// Whether a TCP connection acknowledges at once the bytes of a read that produced no
    /// immediate reply (`TCP_QUICKACK` on Linux; default `true`). Nest clients leave Nagle's
    /// algorithm on, so a packet written right after another (`emit` then `send`) waits
    /// until the first is acknowledged, and Linux delays that ACK up to 40 ms when no reply
    /// carries it. Costs one system call per such read (events, frames still arriving,
    /// requests answered later); reads answered at once cost nothing extra. No effect
    /// elsewhere than Linux, or over TLS.
    pub quickack: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_in_flight_per_connection: DEFAULT_MAX_IN_FLIGHT,
            incomplete_frame_timeout: Some(DEFAULT_INCOMPLETE_FRAME_TIMEOUT),
            idle_timeout: None,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            reply_high_water: DEFAULT_REPLY_HIGH_WATER,
            write_stall_timeout: Some(DEFAULT_WRITE_STALL_TIMEOUT),
            memory_budget: DEFAULT_MEMORY_BUDGET,
            memory_budget_grace: DEFAULT_MEMORY_BUDGET_GRACE,
            quickack: true,
        }
    }
}

//! `nestling listen`: a debugging sink for Nest packets, over any transport.
//!
//! - `host:port`: accepts Nest TCP connections ([`tcp`]);
//! - `nats://host:port`: subscribes to `--subject` (default `>`, every subject) ([`nats`]);
//! - `amqp://host:port/vhost?queue=NAME`: consumes that queue ([`rmq`]).
//!
//! Every packet is classified with [`parse_inbound`](nestling::packet::parse_inbound) as
//! Nest's servers classify them and printed ([`format`]). With `--echo`, a request is
//! answered with its own data, in the reply form of its transport. Stops on Ctrl-C (or
//! SIGTERM), or when standard output goes away.

mod format;
mod nats;
mod rmq;
mod tcp;

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use nestling::packet::Inbound;
use tokio::sync::watch;

use crate::address::Address;
use crate::output::{self, Failure};
use crate::ListenArgs;

pub use format::Origin;

/// What every transport's loop shares: the output options and the packet count.
pub struct Sink {
    json: bool,
    echo: bool,
    packets: AtomicU64,
    /// Set to `true` to stop everything (stdout went away).
    stop: watch::Sender<bool>,
}

impl Sink {
    /// Prints one packet. `false` when standard output is gone: the listener stops.
    pub fn print(&self, origin: &Origin, packet: &Inbound, frame: &Bytes) -> bool {
        self.packets.fetch_add(1, Ordering::Relaxed);
        let line = if self.json {
            format::json_line(origin, packet, frame)
        } else {
            format::text_line(origin, packet, frame)
        };
        if output::print_line(&line).is_err() {
            let _ = self.stop.send(true);
            return false;
        }
        true
    }

    pub fn echo(&self) -> bool {
        self.echo
    }

    /// The `listening on …` line every transport prints once it receives.
    fn announce(&self, what: &str) {
        log(&format!(
            "listening on {what} ({}; Ctrl-C stops)",
            if self.echo {
                "echoing requests"
            } else {
                "answering nothing"
            }
        ));
    }
}

pub async fn run(args: ListenArgs) -> Result<(), Failure> {
    let address = Address::parse(&args.addr)?;
    if args.subject.is_some() && !matches!(address, Address::Nats(_)) {
        return Err(Failure::usage(format!(
            "--subject is for nats:// addresses, not {}",
            address.shown()
        )));
    }
    // Installed before anything connects, so an early Ctrl-C is already handled.
    let shutdown = shutdown_signal();
    let (stop, mut stopped) = watch::channel(false);
    let stopping = async move {
        tokio::select! {
            why = shutdown => why,
            _ = stopped.wait_for(|s| *s) => "standard output closed",
        }
    };
    let sink = std::sync::Arc::new(Sink {
        json: args.json,
        echo: args.echo,
        packets: AtomicU64::new(0),
        stop,
    });
    let why = match &address {
        Address::Tcp(addr) => tcp::run(addr, sink.clone(), stopping).await?,
        Address::Nats(url) => {
            let subject = args.subject.as_deref().unwrap_or(">");
            nats::run(url, subject, &sink, stopping).await?
        }
        Address::Rmq(target) => rmq::run(target, &sink, stopping).await?,
    };
    log(&format!(
        "stopped ({why}); {} packet(s) received",
        sink.packets.load(Ordering::Relaxed)
    ));
    Ok(())
}

/// What a transport's loop waits on to stop: the reason it stopped.
pub trait Stopping: Future<Output = &'static str> + Send {}
impl<F: Future<Output = &'static str> + Send> Stopping for F {}

/// Resolves on Ctrl-C (SIGINT) or, on Unix, SIGTERM.
///
/// On Unix the handlers are installed when this is called, not when first polled, so a
/// signal arriving right after the `listening on` line is already handled.
fn shutdown_signal() -> impl Future<Output = &'static str> + Send {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let int = signal(SignalKind::interrupt());
        let term = signal(SignalKind::terminate());
        async move {
            match (int, term) {
                (Ok(mut int), Ok(mut term)) => tokio::select! {
                    _ = int.recv() => "interrupted",
                    _ = term.recv() => "terminated",
                },
                _ => ctrl_c().await,
            }
        }
    }
    #[cfg(not(unix))]
    {
        ctrl_c()
    }
}

async fn ctrl_c() -> &'static str {
    match tokio::signal::ctrl_c().await {
        Ok(()) => "interrupted",
        // No signal handling available: run until killed.
        Err(_) => std::future::pending().await,
    }
}

/// One `nestling: …` line on stderr.
pub fn log(line: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr().lock(), "nestling: {line}");
}

/// A message body that is not JSON, for the log: its start, lossily decoded.
pub fn preview(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    match text.char_indices().nth(80) {
        Some((cut, _)) => format!("{:?}…", &text[..cut]),
        None => format!("{text:?}"),
    }
}

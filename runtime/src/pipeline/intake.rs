//! The way into the core: a transport hands each received packet to its [`Inbox`], which
//! parses it, routes it by pattern (or by the subscription it came on) and runs it.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::sync::Semaphore;

use super::answer::DataNotJson;
use super::call::{decodes_at_once, Slot};
use super::event::{handle_event, no_event_handler};
use super::origin::Origin;
use super::request::handle_request;
use super::sink::ReplySink;
use super::subscription::Subscription;
use crate::codec::FrameText;
use crate::context::{Frame, PacketFields};
use crate::packet::{
    data_is_json, parse_frame_general, parse_inbound_frame, parse_inbound_spans, Inbound,
    InvalidJson, Parsed, Span,
};
use crate::router::Router;

/// One connection's way into the dispatch core (or one subscriber's, on a broker): it
/// bounds the packets handled at once, and routes each packet handed to it by its pattern
/// — or by the [`Subscription`] it arrived on — to the handlers, replies included. Make one
/// with [`Dispatcher::inbox`](crate::transport::Dispatcher::inbox).
///
/// The loop of a transport reads like the protocol: wait for room, read a frame, hand it
/// over, write what is ready.
///
/// ```no_run
/// # use nestling::transport::{Dispatcher, Origin, ReplySink};
/// # async fn serve<S: ReplySink + Clone>(dispatcher: Dispatcher, frames: Vec<nestling::codec::FrameText>, sink: S) {
/// let mut inbox = dispatcher.inbox();
/// let origin = Origin::new("127.0.0.1:5000".parse().unwrap());
/// let mut ready = bytes::BytesMut::new();
/// for frame in frames {
///     inbox.reserve().await; // backpressure: waits while too much is in flight
///     if let Err(e) = inbox.handle_frame(&origin, &frame, &mut ready, || sink.clone()) {
///         eprintln!("closing the connection: {e}");
///         break;
///     }
///     // `ready` now holds the replies that were ready at once: write them.
/// }
/// # }
/// ```
pub struct Inbox {
    router: Arc<Router>,
    in_flight: Arc<Semaphore>,
    limit: usize,
    slot: Slot,
}

impl std::fmt::Debug for Inbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbox")
            .field("limit", &self.limit)
            .field("free", &self.in_flight.available_permits())
            .finish()
    }
}

impl Inbox {
    pub(super) fn new(router: Arc<Router>, limit: usize) -> Self {
        let limit = limit.max(1);
        Inbox {
            router,
            in_flight: Arc::new(Semaphore::new(limit)),
            limit,
            slot: None,
        }
    }

    /// Whether the next packet can be handled without waiting (see [`reserve`](Self::reserve)).
    /// A transport that batches its replies writes what is ready before it waits.
    pub fn try_reserve(&mut self) -> bool {
        if self.slot.is_none() {
            self.slot = self.in_flight.clone().try_acquire_owned().ok();
        }
        self.slot.is_some()
    }

    /// Waits until the next packet can be handled: at most
    /// [`max_in_flight_per_connection`](crate::ServerBuilder::max_in_flight_per_connection)
    /// requests and events run at once per inbox, and a transport stops reading while they
    /// do (backpressure). Work that finishes at once keeps its room for the next packet, so
    /// this is usually free.
    pub async fn reserve(&mut self) {
        if self.slot.is_none() {
            self.slot = self.in_flight.clone().acquire_owned().await.ok();
        }
    }

    /// Waits up to `grace` for every request and event handled through this inbox to
    /// finish (their replies sent); `false` when some still ran at the end.
    pub async fn drain(mut self, grace: Duration) -> bool {
        self.slot = None;
        let all = u32::try_from(self.limit).unwrap_or(u32::MAX);
        tokio::time::timeout(grace, self.in_flight.acquire_many(all))
            .await
            .is_ok()
    }

    /// Handles one Nest packet (a frame's JSON text): routes it by its `pattern` and runs
    /// it. Replies ready at once are appended to `ready`, in `S`'s [`Wire`](crate::packet::Wire)
    /// form, for the transport to write (a batch of them in one write); replies that take
    /// longer go to a sink made by `sink`.
    ///
    /// An error means the frame is not JSON: Nest closes such a connection.
    pub fn handle_frame<S: ReplySink>(
        &mut self,
        origin: &Origin,
        frame: &FrameText,
        ready: &mut BytesMut,
        sink: impl Fn() -> S,
    ) -> Result<(), InvalidJson> {
        let parsed = parse_inbound_frame(frame)?;
        let (router, slot) = (&*self.router, &mut self.slot);
        if route_packet(router, origin, frame, parsed, slot, ready, &sink).is_err() {
            // A Nest-shaped packet whose `data` is not one JSON value: the general parse
            // decides (invalid JSON fails; a valid packet of another shape, e.g. with a
            // repeated key, is handled as that).
            let packet = parse_frame_general(frame)?;
            let parsed = Parsed {
                packet,
                data_unchecked: false,
            };
            // Checked data cannot fail the check again.
            let _ = route_packet(router, origin, frame, parsed, slot, ready, &sink);
        }
        Ok(())
    }

    /// Handles one message received on a broker `subscription`, whose `channel` (subject,
    /// topic) is where it was published, as Nest's broker servers do: the subscription
    /// names the handlers; a packet without a `pattern` takes the channel's name; a message
    /// that is not a Nest packet at all is handed whole to the channel's event handlers.
    /// Replies as in [`handle_frame`](Self::handle_frame).
    ///
    /// An error means the message is not JSON: Nest drops it.
    pub fn handle_message<S: ReplySink>(
        &mut self,
        origin: &Origin,
        subscription: &Subscription,
        channel: &str,
        message: Bytes,
        ready: &mut BytesMut,
        sink: impl Fn() -> S,
    ) -> Result<(), InvalidJson> {
        let route = &*subscription.route;
        let packet = parse_inbound_spans(&message)?;
        // A packet without a pattern is named by the channel: its JSON is put in front of
        // the message, so that one frame holds every field of the request.
        let pattern_of = |packet: &Inbound<Span>| match packet {
            Inbound::Request { pattern, .. } | Inbound::Event { pattern, .. } => *pattern,
            Inbound::Undefined => None,
        };
        let (frame, shift, channel_pattern) = match pattern_of(&packet) {
            Some(_) => (message, 0, Span::all(0)),
            None => {
                let channel_json = serde_json::to_vec(channel).unwrap_or_default();
                let mut frame = BytesMut::with_capacity(channel_json.len() + message.len());
                frame.extend_from_slice(&channel_json);
                frame.extend_from_slice(&message);
                let shift = channel_json.len();
                (frame.freeze(), shift, Span::all(shift))
            }
        };
        let at = |s: Span| s.shifted(shift);
        type Field = Option<Span>;
        let request = |pattern: Field, data: Field, id: Field, metadata: Field| {
            let fields = PacketFields {
                pattern: pattern.map_or(channel_pattern, at),
                id: id.map(at),
                metadata: metadata.map(at),
            };
            origin.request(Frame::Bytes(frame.clone()), fields, data.map(at))
        };
        let slot = &mut self.slot;
        // Fully parsed: `data` needs no check, and handlers cannot find it not JSON.
        match packet {
            Inbound::Undefined => {
                let whole = Span::all(frame.len() - shift);
                let event = request(None, Some(whole), None, None);
                let _ = handle_event(route.event_handlers(), event, origin, slot, false);
            }
            Inbound::Event {
                pattern,
                data,
                metadata,
            } => {
                let event = request(pattern, data, None, metadata);
                let _ = handle_event(route.event_handlers(), event, origin, slot, false);
            }
            Inbound::Request {
                pattern,
                data,
                id,
                metadata,
            } => {
                let request = request(pattern, data, Some(id), metadata);
                // Checked data: the handler cannot find it not JSON.
                let _ = handle_request(Some(route), request, origin, slot, &sink, false, ready);
            }
        }
        Ok(())
    }
}

/// When the work one packet started has finished: from
/// [`Inbox::handle_frame_tracked`] and [`Inbox::handle_message_tracked`], for transports
/// that acknowledge a message only once it has been handled (a broker's manual ack).
///
/// While it is held (awaited or not), the packet counts against the inbox's in-flight
/// limit; dropping it early releases that room.
///
/// ```no_run
/// # use nestling::transport::{Dispatcher, Origin, ReplySink};
/// # async fn serve<S: ReplySink + Clone>(dispatcher: Dispatcher, frame: nestling::codec::FrameText, sink: S) {
/// let mut inbox = dispatcher.inbox();
/// let origin = Origin::new("0.0.0.0:0".parse().unwrap());
/// let mut ready = bytes::BytesMut::new();
/// inbox.reserve().await;
/// let done = inbox.handle_frame_tracked(&origin, &frame, &mut ready, || sink.clone()).unwrap();
/// // ... send what is in `ready` ...
/// tokio::spawn(async move {
///     done.finished().await;
///     // every handler of the packet has returned and its stream ended: acknowledge it
/// });
/// # }
/// ```
#[must_use = "the packet holds its in-flight room until this is dropped"]
pub struct Completion {
    /// The packet's own one-permit semaphore and the inbox's in-flight permit, held until
    /// the work that took the packet's permit drops it; `None`: finished at once.
    running: Option<(Arc<Semaphore>, Slot)>,
}

impl std::fmt::Debug for Completion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Completion")
            .field("done", &self.is_done())
            .finish()
    }
}

impl Completion {
    /// Whether everything finished during the call that returned this (plain `fn`
    /// handlers, unknown patterns): then [`finished`](Self::finished) is ready at once.
    pub fn is_done(&self) -> bool {
        self.running
            .as_ref()
            .is_none_or(|(own, _)| own.available_permits() > 0)
    }

    /// Resolves once every handler the packet started has returned (a stream: once it
    /// ended), then releases the packet's in-flight room.
    pub async fn finished(self) {
        if let Some((own, room)) = self.running {
            // Closed or acquired: either way the work let go of the packet's permit.
            let _ = own.acquire().await;
            drop(room);
        }
    }
}

impl Inbox {
    /// [`handle_frame`](Self::handle_frame), telling when the packet's work has finished.
    pub fn handle_frame_tracked<S: ReplySink>(
        &mut self,
        origin: &Origin,
        frame: &FrameText,
        ready: &mut BytesMut,
        sink: impl Fn() -> S,
    ) -> Result<Completion, InvalidJson> {
        self.tracked(|inbox| inbox.handle_frame(origin, frame, ready, sink))
    }

    /// [`handle_message`](Self::handle_message), telling when the message's work has
    /// finished.
    pub fn handle_message_tracked<S: ReplySink>(
        &mut self,
        origin: &Origin,
        subscription: &Subscription,
        channel: &str,
        message: Bytes,
        ready: &mut BytesMut,
        sink: impl Fn() -> S,
    ) -> Result<Completion, InvalidJson> {
        self.tracked(|inbox| {
            inbox.handle_message(origin, subscription, channel, message, ready, sink)
        })
    }

    /// Runs `handle` with the packet's own permit in the slot: work that outlives
    /// dispatch takes it (and drops it when done), work that finishes at once leaves it.
    fn tracked(
        &mut self,
        handle: impl FnOnce(&mut Self) -> Result<(), InvalidJson>,
    ) -> Result<Completion, InvalidJson> {
        let room = self.slot.take();
        let own = Arc::new(Semaphore::new(1));
        self.slot = own.clone().try_acquire_owned().ok();
        let handled = handle(self);
        let running = match self.slot.take() {
            // Nothing took the packet's permit: the inbox keeps its room for the next one.
            Some(_finished) => {
                self.slot = room;
                None
            }
            None => Some((own, room)),
        };
        handled.map(|()| Completion { running })
    }
}

/// Routes one packet by its `pattern`. Replies ready at once (plain `fn` handlers, unknown
/// patterns) are appended to `ready` in `S`'s wire form; later ones go to `sink`'s sink.
///
/// Unchecked `data` is checked here before anything happens, except for a plain `fn`
/// handler that decodes it: its strict serde parse is the check (success proves `data` is
/// one JSON value), and `data` is checked on its own only if the handler rejects it.
fn route_packet<S: ReplySink>(
    router: &Router,
    origin: &Origin,
    text: &FrameText,
    Parsed {
        packet,
        data_unchecked,
    }: Parsed,
    slot: &mut Slot,
    ready: &mut BytesMut,
    sink: &impl Fn() -> S,
) -> Result<(), DataNotJson> {
    let frame = text.bytes();
    let check = |data: &Option<Span>| match data {
        Some(d) if data_unchecked && !data_is_json(d.get(frame)) => Err(DataNotJson),
        _ => Ok(()),
    };
    let lookup = |pattern: &Option<Span>| pattern.and_then(|p| router.lookup(p.get(frame)));
    // Every field stays a span of the frame: the request holds one reference to it.
    let request = |pattern: Option<Span>, data, id, metadata| {
        let pattern = pattern.unwrap_or(Span::all(0));
        let fields = PacketFields {
            pattern,
            id,
            metadata,
        };
        origin.request(Frame::Text(text.clone()), fields, data)
    };
    match packet {
        Inbound::Undefined => no_event_handler(origin, "undefined"),
        Inbound::Event {
            pattern,
            data,
            metadata,
        } => {
            let Some(route) = lookup(&pattern) else {
                check(&data)?;
                let name = pattern.map(|p| String::from_utf8_lossy(p.get(frame)));
                no_event_handler(origin, name.as_deref().unwrap_or("undefined"));
                return Ok(());
            };
            let handlers = route.event_handlers();
            let unchecked = data_unchecked && matches!(handlers, [only] if decodes_at_once(only));
            if !unchecked {
                check(&data)?;
            }
            let event = request(pattern, data, None, metadata);
            return handle_event(handlers, event, origin, slot, unchecked);
        }
        Inbound::Request {
            pattern,
            data,
            id,
            metadata,
        } => {
            let route = lookup(&pattern);
            let handler = route.and_then(|r| r.message.as_ref());
            let unchecked = data_unchecked && handler.is_some_and(decodes_at_once);
            if !unchecked {
                check(&data)?;
            }
            let request = request(pattern, data, Some(id), metadata);
            handle_request(route, request, origin, slot, sink, unchecked, ready)?;
        }
    }
    Ok(())
}

//! Route table: normalised pattern → handlers, built once at startup.

use std::collections::HashMap;
use std::sync::Arc;

use rustc_hash::FxBuildHasher;

use crate::error::ServerError;
use crate::filter::FilterChain;
use crate::handler::{HandlerEntry, HandlerKind, Instance};
use crate::middleware::HandlerService;
use crate::pattern::{declared_route, incoming_route, RouteKey};
use crate::registry::{ControllerMeta, HandlerMeta};

/// A handler bound to the controller instance it runs on.
#[derive(Clone)]
pub(crate) struct Bound {
    pub instance: Instance,
    pub controller: &'static ControllerMeta,
    pub meta: &'static HandlerMeta,
    /// How the handler is entered: `meta.entry`, or its validating entry when the server
    /// validates every payload.
    pub entry: HandlerEntry,
    /// The handler wrapped in its middleware, when it has any (otherwise `meta.entry` is
    /// invoked directly).
    pub service: Option<HandlerService>,
    /// Its exception filters (handler, controller, server), when it has any.
    pub filters: Option<Arc<FilterChain>>,
}

impl Bound {
    pub fn describe(&self) -> String {
        self.who().describe()
    }

    /// Which handler this is, for log lines (two pointers: cheap to keep around).
    pub fn who(&self) -> Who {
        Who(self.controller, self.meta)
    }
}

/// A handler's identity: `Type::method (file:line)` when displayed.
#[derive(Clone, Copy)]
pub(crate) struct Who(&'static ControllerMeta, &'static HandlerMeta);

impl Who {
    pub fn describe(self) -> String {
        self.0.describe(self.1)
    }
}

/// Handlers for one route key.
#[derive(Default, Clone)]
pub(crate) struct Route {
    pub message: Option<Bound>,
    /// Every event handler for the pattern runs, as in Nest.
    pub events: Vec<Bound>,
}

impl Route {
    /// The handlers an event runs: its event handlers, or (Nest) the message handler when
    /// there are none, whose result is then discarded.
    pub fn event_handlers(&self) -> &[Bound] {
        if self.events.is_empty() {
            self.message.as_slice()
        } else {
            &self.events
        }
    }
}

#[derive(Default, Clone)]
pub(crate) struct Router {
    /// The handlers of each route; the maps below index into it.
    table: Vec<Route>,
    /// Normalised pattern → route. FxHash: the table is built once from the handlers,
    /// never from peer input, so hash flooding cannot grow it; lookups only probe.
    by_key: HashMap<RouteKey, usize, FxBuildHasher>,
    /// The pattern's JSON text as a sender usually writes it (`"sum"`, quotes included) →
    /// route: the common case is found straight from the packet's bytes, without
    /// normalising. Only texts that normalise to their route's key are entered, so a hit
    /// is always the route the slow path would find; anything else (escapes, object
    /// patterns written with other spacing) falls back to it.
    by_wire: WireIndex,
}

/// Wire text → route index. A service has a handful of patterns: up to [`WireIndex::SCAN`]
/// of them are found by comparing lengths and bytes in a list, cheaper than hashing the
/// text and probing; more go to a hash map.
#[derive(Default, Clone)]
struct WireIndex {
    list: Vec<(Box<[u8]>, usize)>,
    map: HashMap<Box<[u8]>, usize, FxBuildHasher>,
}

impl WireIndex {
    const SCAN: usize = 8;

    fn insert(&mut self, wire: Box<[u8]>, route: usize) {
        self.map.insert(wire.clone(), route);
        self.list = match self.map.len() <= Self::SCAN {
            true => self.map.iter().map(|(w, &i)| (w.clone(), i)).collect(),
            false => Vec::new(),
        };
    }

    fn get(&self, wire: &[u8]) -> Option<usize> {
        if self.map.len() > Self::SCAN {
            return self.map.get(wire).copied();
        }
        self.list
            .iter()
            .find(|(w, _)| w.len() == wire.len() && **w == *wire)
            .map(|&(_, i)| i)
    }

    #[cfg(test)]
    fn contains(&self, wire: &[u8]) -> bool {
        self.get(wire).is_some()
    }
}

impl Router {
    pub fn add(&mut self, bound: Bound) -> Result<(), ServerError> {
        let key =
            declared_route(bound.meta.pattern).map_err(|source| ServerError::InvalidPattern {
                handler: bound.describe(),
                pattern: bound.meta.pattern.to_owned(),
                source,
            })?;
        let index = match self.by_key.get(&key) {
            Some(&i) => i,
            None => {
                let i = self.table.len();
                self.table.push(Route::default());
                if let Ok(wire) = serde_json::to_string(&key) {
                    if incoming_route(&wire) == key.as_str() {
                        self.by_wire.insert(wire.into_bytes().into(), i);
                    }
                }
                self.by_key.insert(key, i);
                i
            }
        };
        let route = &mut self.table[index];
        match bound.meta.kind {
            HandlerKind::Message => {
                if let Some(existing) = &route.message {
                    return Err(ServerError::DuplicateHandler {
                        pattern: bound.meta.pattern.to_owned(),
                        first: existing.describe(),
                        second: bound.describe(),
                    });
                }
                route.message = Some(bound);
            }
            HandlerKind::Event => route.events.push(bound),
        }
        Ok(())
    }

    /// Finds the handlers for a pattern received on the wire (its raw JSON text).
    pub fn lookup(&self, pattern_json: &[u8]) -> Option<&Route> {
        if let Some(i) = self.by_wire.get(pattern_json) {
            return self.table.get(i);
        }
        // Frames are valid UTF-8 (the codec guarantees it); anything else matches nothing.
        let text = std::str::from_utf8(pattern_json).ok()?;
        let key = incoming_route(text);
        self.table.get(*self.by_key.get(key.as_ref())?)
    }

    /// Every route, with its key (Nest's normalised pattern).
    pub fn routes(&self) -> impl Iterator<Item = (&RouteKey, &Route)> {
        self.by_key.iter().map(|(key, &i)| (key, &self.table[i]))
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handler::{HandlerEntry, HandlerFuture, Request};
    use crate::registry::{ControllerMeta, HandlerMeta};

    fn never(_: &Instance, _: Request) -> HandlerFuture {
        Box::pin(std::future::pending())
    }

    const fn meta(pattern: &'static str, method: &'static str) -> HandlerMeta {
        HandlerMeta {
            kind: HandlerKind::Message,
            pattern,
            method,
            line: 1,
            entry: HandlerEntry::Async(never),
            layers: &[],
            filters: &[],
            validated: None,
        }
    }

    static HANDLERS: [HandlerMeta; 3] = [
        meta("\"sum\"", "sum"),
        meta(r#"{"cmd":"sum"}"#, "cmd"),
        meta("42", "number"),
    ];

    static CONTROLLER: ControllerMeta = ControllerMeta {
        name: "Test",
        file: file!(),
        type_id: std::any::TypeId::of::<()>,
        auto: || None,
        handlers: &HANDLERS,
        layers: &[],
        filters: &[],
        lifecycle: || None,
    };

    fn router() -> Router {
        let mut router = Router::default();
        let instance: Instance = Arc::new(());
        for handler in &HANDLERS {
            router
                .add(Bound {
                    instance: instance.clone(),
                    controller: &CONTROLLER,
                    meta: handler,
                    entry: handler.entry,
                    service: None,
                    filters: None,
                })
                .unwrap();
        }
        router
    }

    fn found(router: &Router, wire: &[u8]) -> Option<&'static str> {
        router
            .lookup(wire)
            .and_then(|r| r.message.as_ref())
            .map(|b| b.meta.method)
    }

    /// The wire-text index answers the common form; every other spelling that Nest
    /// routes to the same handler still finds it by normalising.
    #[test]
    fn lookup_by_wire_text_and_by_normalising_agree() {
        let router = router();
        assert_eq!(router.len(), 3);
        assert!(router.by_wire.contains(&b"\"sum\""[..]));
        assert_eq!(found(&router, b"\"sum\""), Some("sum"));
        assert_eq!(found(&router, br#""\u0073um""#), Some("sum"));
        assert_eq!(found(&router, br#"{"cmd":"sum"}"#), Some("cmd"));
        assert_eq!(found(&router, br#"{ "cmd" : "sum" }"#), Some("cmd"));
        assert_eq!(found(&router, br#""{\"cmd\":\"sum\"}""#), Some("cmd"));
        assert_eq!(found(&router, b"42"), Some("number"));
        assert_eq!(found(&router, b"\"42\""), Some("number"));
        assert_eq!(found(&router, b"\"nope\""), None);
        assert_eq!(found(&router, b"\"sum"), None);
        assert_eq!(found(&router, &[b'"', 0xff, b'"']), None);
    }

    /// The wire index answers the same whether it scans its list (few patterns) or
    /// hashes (many).
    #[test]
    fn wire_index_scans_few_and_hashes_many() {
        let mut index = WireIndex::default();
        let wire = |i: usize| format!("\"p{i}\"").into_bytes();
        for i in 0..=WireIndex::SCAN * 2 {
            index.insert(wire(i).into(), i);
            let scanning = i < WireIndex::SCAN;
            assert_eq!(index.list.is_empty(), !scanning, "after {} patterns", i + 1);
            for j in 0..=i {
                assert_eq!(
                    index.get(&wire(j)),
                    Some(j),
                    "p{j} among {} patterns",
                    i + 1
                );
            }
            assert_eq!(index.get(b"\"p\""), None);
            assert_eq!(index.get(&wire(i + 1)), None);
        }
    }
}

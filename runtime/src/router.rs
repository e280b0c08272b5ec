//! Route table: normalised pattern → handlers, built once at startup.

use std::collections::HashMap;

use rustc_hash::FxBuildHasher;

use crate::error::ServerError;
use crate::handler::{HandlerKind, Instance};
use crate::middleware::HandlerService;
use crate::pattern::{declared_route, incoming_route, RouteKey};
use crate::registry::{ControllerMeta, HandlerMeta};

/// A handler bound to the controller instance it runs on.
#[derive(Clone)]
pub(crate) struct Bound {
    pub instance: Instance,
    pub controller: &'static ControllerMeta,
    pub meta: &'static HandlerMeta,
    /// The handler wrapped in its middleware, when it has any (otherwise `meta.call` is
    /// invoked directly).
    pub service: Option<HandlerService>,
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

#[derive(Default, Clone)]
pub(crate) struct Router {
    /// FxHash: the table is built once from the handlers, never from peer input, so
    /// hash flooding cannot grow it; lookups only probe.
    routes: HashMap<RouteKey, Route, FxBuildHasher>,
}

impl Router {
    pub fn add(&mut self, bound: Bound) -> Result<(), ServerError> {
        let key =
            declared_route(bound.meta.pattern).map_err(|source| ServerError::InvalidPattern {
                handler: bound.describe(),
                pattern: bound.meta.pattern.to_owned(),
                source,
            })?;
        let route = self.routes.entry(key).or_default();
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

    /// Finds the handlers for a pattern received on the wire.
    pub fn lookup(&self, pattern_json: &str) -> Option<&Route> {
        let key = incoming_route(pattern_json);
        self.routes.get(key.as_ref())
    }

    /// Every route, with its key (Nest's normalised pattern).
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    pub fn routes(&self) -> impl Iterator<Item = (&RouteKey, &Route)> {
        self.routes.iter()
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }
}

//! Static descriptions of controllers and handlers, collected with `inventory`.
//!
//! `#[nestling::controller]` emits one [`ControllerMeta`] per annotated impl block and
//! submits it; servers gather every submitted controller at startup, so nothing is listed
//! by hand.

use std::any::TypeId;

use crate::filter::Filter;
use crate::handler::{HandlerEntry, HandlerKind, Instance};
use crate::middleware::DynLayer;

/// One handler method, as declared by a pattern attribute.
#[derive(Debug)]
pub struct HandlerMeta {
    /// Message or event.
    pub kind: HandlerKind,
    /// The declared pattern as JSON text (e.g. `"\"sum\""` or `{"cmd":"sum"}`).
    pub pattern: &'static str,
    /// The method name.
    pub method: &'static str,
    /// Source line of the method.
    pub line: u32,
    /// The generated dispatch function.
    pub entry: HandlerEntry,
    /// Layers from `#[message_pattern(.., layer = f)]`, outermost first.
    pub layers: &'static [fn() -> DynLayer],
    /// The entry that validates the payload first, for
    /// [`ServerBuilder::validate_payloads`](crate::ServerBuilder::validate_payloads): `None`
    /// when the handler takes no payload or validates anyway; the function returns `None`
    /// when the payload's type has no validation rules.
    pub validated: Option<fn() -> Option<HandlerEntry>>,
    /// Exception filters from `#[message_pattern(.., filter = f)]`, tried in this order.
    pub filters: &'static [fn() -> Filter],
}

/// One `#[nestling::controller]` impl block.
#[derive(Debug)]
pub struct ControllerMeta {
    /// The controller type's name as written.
    pub name: &'static str,
    /// The source file of the impl block.
    pub file: &'static str,
    /// `TypeId` of the controller type.
    pub type_id: fn() -> TypeId,
    /// Builds an instance with `Default`, or `None` when the type has no `Default` impl
    /// (such controllers are served only when added explicitly).
    pub auto: fn() -> Option<Instance>,
    /// The handlers of the impl block.
    pub handlers: &'static [HandlerMeta],
    /// Layers from `#[nestling::controller(layer = f)]`, outermost first.
    pub layers: &'static [fn() -> DynLayer],
    /// Exception filters from `#[nestling::controller(filter = f)]`, tried in this order
    /// after the handler's own.
    pub filters: &'static [fn() -> Filter],
    /// The controller's [`Lifecycle`](crate::Lifecycle) hooks, if it implements it.
    pub lifecycle: fn() -> Option<crate::lifecycle::LifecycleHooks>,
}

impl ControllerMeta {
    /// `Type::method (file:line)` for messages about a handler.
    pub fn describe(&self, h: &HandlerMeta) -> String {
        format!("{}::{} ({}:{})", self.name, h.method, self.file, h.line)
    }
}

/// The item submitted to `inventory` for each controller.
#[derive(Debug)]
pub struct ControllerEntry(pub &'static ControllerMeta);

inventory::collect!(ControllerEntry);

/// Every controller linked into the binary.
pub fn all_controllers() -> impl Iterator<Item = &'static ControllerMeta> {
    inventory::iter::<ControllerEntry>.into_iter().map(|e| e.0)
}

/// Implemented by `#[nestling::controller]` for the controller type.
///
/// ```
/// #[derive(Default)]
/// struct Users;
/// #[nestling::controller]
/// impl Users {
///     #[message_pattern("count")]
///     fn count(&self) -> u32 { 0 }
/// }
/// use nestling::Controller;
/// assert_eq!(Users::meta().handlers.len(), 1);
/// ```
pub trait Controller: Send + Sync + 'static {
    /// The static description of the controller's handlers.
    fn meta() -> &'static ControllerMeta;
}

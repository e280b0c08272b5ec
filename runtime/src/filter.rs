//! Exception filters: Nest's `@Catch(MyError)` + `@UseFilters(F)` / `useGlobalFilters(F)`.
//!
//! A handler may fail with any error type (`Result<T, E>`); without a filter every error
//! other than [`RpcException`] reaches the caller as Nest's
//! `{"status":"error","message":"Internal server error"}`, its cause only logged. A
//! [`Filter`] maps chosen error types to the [`RpcException`] the caller receives instead,
//! once, rather than in every handler.
//!
//! Filters attach at three levels and are tried in Nest's order — the handler's, then the
//! controller's, then the server's — the first that returns an exception wins; when none
//! does, the caller gets Nest's default reply:
//!
//! 1. per handler: `#[message_pattern("sum", filter = f)]` (or `#[event_pattern]`);
//! 2. per controller: `#[nestling::controller(filter = f)]`;
//! 3. for the server: [`ServerBuilder::filter`](crate::ServerBuilder::filter);
//!
//! where `f` is a function returning the [`Filter`]. They run only when a handler returned
//! an error (success costs nothing), for replies and for the `Err` items of streamed
//! replies, on every transport. Panics, [`RpcException`]s and payloads that do not decode
//! are not filtered: a panic stays "Internal server error".
//!
//! ```
//! use nestling::filter::{catch, Filter};
//! use nestling::RpcException;
//! use serde_json::json;
//!
//! #[derive(Debug, thiserror::Error)]
//! #[error("user {0} not found")]
//! struct NotFound(u32);
//!
//! /// @Catch(NotFound): the caller gets {"status":404,"message":"user 7 not found"}.
//! fn not_found() -> Filter {
//!     catch(|e: &NotFound| RpcException::new(json!({"status": 404, "message": e.to_string()})))
//! }
//!
//! #[derive(Default)]
//! struct Users;
//!
//! #[nestling::controller(filter = not_found)]
//! impl Users {
//!     #[message_pattern("user")]
//!     fn user(&self, id: u32) -> Result<String, NotFound> {
//!         if id == 1 { Ok("ada".into()) } else { Err(NotFound(id)) }
//!     }
//! }
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let client = nestling::testing::client(&nestling::Server::builder().build().unwrap());
//! let err = client.send::<_, _, String>("user", &7).await.unwrap_err();
//! assert_eq!(err.remote().unwrap().value(), &json!({"status": 404, "message": "user 7 not found"}));
//! # });
//! ```

use std::error::Error;
use std::sync::Arc;

use crate::error::RpcException;
use crate::handler::HandlerFailure;

/// The error a filter inspects: what the handler returned, type-erased.
pub type FilterError = dyn Error + Send + Sync + 'static;

/// One exception filter: looks at a handler's error and returns the [`RpcException`] the
/// caller gets, or `None` to leave the error to the next filter (and finally to Nest's
/// "Internal server error"). Cheap to clone.
///
/// [`catch`] builds the common kind, for one error type; [`Filter::new`] takes any
/// function (Nest's `@Catch()` without arguments catches everything).
///
/// ```
/// use nestling::filter::Filter;
/// use nestling::RpcException;
///
/// /// @Catch(): every error's message goes to the caller (do not do this with secrets).
/// fn expose_all() -> Filter {
///     Filter::new(|e| Some(RpcException::new(e.to_string())))
/// }
/// let server = nestling::Server::builder().filter(expose_all()).build().unwrap();
/// ```
#[derive(Clone)]
pub struct Filter(Arc<FilterFn>);

/// What a [`Filter`] runs.
type FilterFn = dyn Fn(&FilterError) -> Option<RpcException> + Send + Sync;

impl std::fmt::Debug for Filter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Filter")
    }
}

impl Filter {
    /// A filter from a function of the handler's error.
    ///
    /// ```
    /// use nestling::filter::Filter;
    /// use nestling::RpcException;
    ///
    /// let timeouts = Filter::new(|e| {
    ///     e.downcast_ref::<std::io::Error>()
    ///         .filter(|io| io.kind() == std::io::ErrorKind::TimedOut)
    ///         .map(|_| RpcException::new(serde_json::json!({"status": 504, "message": "timed out"})))
    /// });
    /// let err = std::io::Error::from(std::io::ErrorKind::TimedOut);
    /// assert!(timeouts.apply(&err).is_some());
    /// ```
    pub fn new(f: impl Fn(&FilterError) -> Option<RpcException> + Send + Sync + 'static) -> Self {
        Filter(Arc::new(f))
    }

    /// What this filter makes of `error`.
    ///
    /// ```
    /// let any = nestling::filter::Filter::new(|_| Some(nestling::RpcException::new("no")));
    /// assert_eq!(any.apply(&std::fmt::Error).unwrap().error(), "no");
    /// ```
    pub fn apply(&self, error: &FilterError) -> Option<RpcException> {
        (self.0)(error)
    }
}

/// Nest's `@Catch(E)`: a filter for errors of type `E`, found as the handler's error itself
/// or anywhere in its [`source`](Error::source) chain (so an `E` wrapped by another error
/// is caught too); any other error passes through.
///
/// ```
/// use nestling::filter::catch;
/// use nestling::RpcException;
///
/// #[derive(Debug, thiserror::Error)]
/// #[error("out of stock")]
/// struct OutOfStock;
///
/// let filter = catch(|e: &OutOfStock| RpcException::new(serde_json::json!({"status": 409, "message": e.to_string()})));
/// assert!(filter.apply(&OutOfStock).is_some());
/// assert!(filter.apply(&std::fmt::Error).is_none());
/// ```
pub fn catch<E: Error + 'static>(f: impl Fn(&E) -> RpcException + Send + Sync + 'static) -> Filter {
    Filter::new(move |error| {
        let mut next: Option<&(dyn Error + 'static)> = Some(error);
        while let Some(e) = next {
            if let Some(found) = e.downcast_ref::<E>() {
                return Some(f(found));
            }
            next = e.source();
        }
        None
    })
}

/// An error a handler returned (anything but an [`RpcException`]), kept whole so that
/// filters can look at its type; shared, so a [`HandlerFailure`] stays cheap to clone.
///
/// ```
/// use nestling::{HandlerFailure, IntoRpcError};
/// let HandlerFailure::Error(e) = std::fmt::Error.into_failure() else { unreachable!() };
/// assert!(e.get().downcast_ref::<std::fmt::Error>().is_some());
/// assert_eq!(e.to_string(), "an error occurred when formatting an argument");
/// ```
#[derive(Clone)]
pub struct HandlerError(Arc<FilterError>);

impl HandlerError {
    /// Wraps a handler's error.
    pub fn new(error: Box<FilterError>) -> Self {
        HandlerError(Arc::from(error))
    }

    /// The error as the handler returned it.
    pub fn get(&self) -> &FilterError {
        &*self.0
    }
}

impl std::fmt::Debug for HandlerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&*self.0, f)
    }
}

impl std::fmt::Display for HandlerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&*self.0, f)
    }
}

/// A handler's filters in the order they are tried: handler, controller, server. Built
/// once per handler when the server is built; absent (no cost) when there are none.
#[derive(Debug, Default)]
pub(crate) struct FilterChain(Vec<Filter>);

impl FilterChain {
    /// The chain of `filters`, or `None` when there are none.
    pub(crate) fn of(filters: Vec<Filter>) -> Option<Arc<FilterChain>> {
        (!filters.is_empty()).then(|| Arc::new(FilterChain(filters)))
    }
}

/// Runs `chain` over a failure: an error the handler returned becomes the exception of
/// the first filter that catches it; anything else is left as it is. Only called when a
/// handler failed.
#[cold]
pub(crate) fn filter_failure(chain: Option<&FilterChain>, failure: &mut HandlerFailure) {
    let (Some(chain), HandlerFailure::Error(error)) = (chain, &*failure) else {
        return;
    };
    if let Some(exception) = chain.0.iter().find_map(|f| f.apply(error.get())) {
        *failure = HandlerFailure::Rpc(exception.to_wire());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handler::IntoRpcError;

    #[derive(Debug, thiserror::Error)]
    #[error("missing {0}")]
    struct Missing(u32);

    #[derive(Debug, thiserror::Error)]
    #[error("lookup failed")]
    struct Wrapped(#[source] Missing);

    fn wire(failure: &HandlerFailure) -> serde_json::Value {
        serde_json::from_slice(&failure.wire_json()).unwrap()
    }

    fn missing() -> Filter {
        catch(|e: &Missing| {
            RpcException::new(serde_json::json!({"status": 404, "message": e.to_string()}))
        })
    }

    #[test]
    fn first_matching_filter_wins_and_others_pass() {
        let never = Filter::new(|_| None);
        let all = Filter::new(|_| Some(RpcException::new("all")));
        let chain = FilterChain::of(vec![never, missing(), all]).unwrap();

        let mut failure = Missing(7).into_failure();
        filter_failure(Some(&chain), &mut failure);
        assert_eq!(
            wire(&failure),
            serde_json::json!({"status": 404, "message": "missing 7"})
        );

        let mut other = std::fmt::Error.into_failure();
        filter_failure(Some(&chain), &mut other);
        assert_eq!(
            wire(&other),
            serde_json::json!({"status": "error", "message": "all"})
        );
    }

    #[test]
    fn catch_looks_through_the_source_chain() {
        let chain = FilterChain::of(vec![missing()]).unwrap();
        let mut failure = Wrapped(Missing(3)).into_failure();
        filter_failure(Some(&chain), &mut failure);
        assert!(matches!(failure, HandlerFailure::Rpc(_)));
    }

    #[test]
    fn unfiltered_and_other_failures_keep_nests_default() {
        let mut failure = std::fmt::Error.into_failure();
        filter_failure(None, &mut failure);
        assert_eq!(
            wire(&failure),
            serde_json::json!({"status": "error", "message": "Internal server error"})
        );
        let chain = FilterChain::of(vec![Filter::new(|_| Some(RpcException::new("x")))]).unwrap();
        let mut panicked = HandlerFailure::Internal("handler panicked: boom".into());
        filter_failure(Some(&chain), &mut panicked);
        assert!(matches!(panicked, HandlerFailure::Internal(_)));
        assert!(FilterChain::of(Vec::new()).is_none());
    }
}

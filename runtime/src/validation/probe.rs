//! What generated code calls to validate a value of a type it knows only by name.
//!
//! Autoref specialisation picks, for the concrete type, `validator`'s rules, else
//! garde's, else none: `(&&&ValidateProbe::<T>::new()).check(..)` resolves to the first
//! trait whose impl applies. A type with no rules costs nothing — its `check` is an empty
//! function, and no validating entry exists for its handler.

use std::marker::PhantomData;

use serde::de::DeserializeOwned;

use crate::handler::{HandlerEntry, HandlerFailure, Request};

/// The probe: a type to pick validation for.
pub struct ValidateProbe<T>(PhantomData<T>);

impl<T> ValidateProbe<T> {
    /// A probe for `T`.
    pub const fn new() -> Self {
        Self(PhantomData)
    }
}

impl<T> Default for ValidateProbe<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// Chosen when `T` derives `validator::Validate` (feature `validator`).
pub trait ViaValidator<T> {
    /// Runs `T`'s rules; `json` is the value's JSON text (to order the messages).
    fn check(&self, value: &T, json: Option<&[u8]>) -> Result<(), HandlerFailure>;
    /// The handler's validating entry: `T` has rules.
    fn validated(&self, entry: HandlerEntry) -> Option<HandlerEntry> {
        Some(entry)
    }
    /// Compiles: `T` has rules.
    fn required(&self) {}
}

#[cfg(feature = "validator")]
impl<T: validator::Validate> ViaValidator<T> for &&ValidateProbe<T> {
    fn check(&self, value: &T, json: Option<&[u8]>) -> Result<(), HandlerFailure> {
        match value.validate() {
            Ok(()) => Ok(()),
            Err(errors) => Err(rejected_by_validator(&errors, json)),
        }
    }
}

#[cfg(feature = "validator")]
#[cold]
fn rejected_by_validator(
    errors: &validator::ValidationErrors,
    json: Option<&[u8]>,
) -> HandlerFailure {
    let mut violations = super::from_validator(errors);
    super::order_by_payload(&mut violations, json);
    super::failure(&violations)
}

/// Chosen when `T` derives `garde::Validate` with a `Default` context, e.g. `()`
/// (feature `garde`).
pub trait ViaGarde<T> {
    /// Runs `T`'s rules.
    fn check(&self, value: &T, json: Option<&[u8]>) -> Result<(), HandlerFailure>;
    /// The handler's validating entry: `T` has rules.
    fn validated(&self, entry: HandlerEntry) -> Option<HandlerEntry> {
        Some(entry)
    }
    /// Compiles: `T` has rules.
    fn required(&self) {}
}

#[cfg(feature = "garde")]
impl<T> ViaGarde<T> for &ValidateProbe<T>
where
    T: garde::Validate,
    T::Context: Default,
{
    fn check(&self, value: &T, json: Option<&[u8]>) -> Result<(), HandlerFailure> {
        let mut violations = super::garde_violations(value);
        if violations.is_empty() {
            Ok(())
        } else {
            super::order_by_payload(&mut violations, json);
            Err(super::failure(&violations))
        }
    }
}

/// Chosen for every other type: nothing to check.
pub trait ViaNothing<T> {
    /// Accepts every value.
    #[inline(always)]
    fn check(&self, _value: &T, _json: Option<&[u8]>) -> Result<(), HandlerFailure> {
        Ok(())
    }
    /// No validating entry: the handler's own serves.
    fn validated(&self, _entry: HandlerEntry) -> Option<HandlerEntry> {
        None
    }
    /// Does not compile: `validate` was asked for a type without rules.
    fn required(&self)
    where
        T: DerivesValidate,
    {
    }
}

impl<T> ViaNothing<T> for ValidateProbe<T> {}

/// Implemented by no type: the bound a handler's `validate` option puts on a payload type
/// that has no validation rules, to say so at compile time.
#[diagnostic::on_unimplemented(
    message = "`{Self}` has no validation rules, so `validate` cannot check it",
    label = "this payload type derives neither `validator::Validate` nor `garde::Validate`",
    note = "derive `validator::Validate` (nestling feature `validator`) or `garde::Validate` with `Context = ()` (feature `garde`) on the type, or remove `validate`"
)]
pub trait DerivesValidate {}

/// Decodes the payload; a validating handler answers a payload that does not fit its
/// type (a missing field, a string for a number) with the 400 of a failed validation
/// instead of the plain `invalid payload` error. Text that is not JSON stays a bad
/// payload either way.
#[inline]
pub fn decode<T: DeserializeOwned>(
    request: &Request,
    validating: bool,
) -> Result<T, HandlerFailure> {
    let decoded = request.payload::<T>();
    if validating {
        decoded.or_else(|e| undecodable(request, e))
    } else {
        decoded
    }
}

#[cold]
fn undecodable<T: DeserializeOwned>(
    request: &Request,
    e: HandlerFailure,
) -> Result<T, HandlerFailure> {
    if !matches!(e, HandlerFailure::BadPayload(_)) {
        return Err(e);
    }
    match super::undecodable::<T>(None, request.data().unwrap_or(b"null")) {
        Some(violation) => Err(super::failure(&[violation])),
        None => Err(e),
    }
}

/// The payload's JSON text.
#[inline]
pub fn payload_json(request: &Request) -> Option<&[u8]> {
    request.data()
}

/// A property's JSON text.
#[inline]
pub fn raw_json(raw: Option<&serde_json::value::RawValue>) -> Option<&[u8]> {
    raw.map(|r| r.get().as_bytes())
}

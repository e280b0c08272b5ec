//! Error accumulation (after serde_derive's `Ctxt`): report every mistake at once, each on
//! its own narrowest span.

use std::cell::RefCell;
use std::thread;

/// Collects the mistakes found in one macro invocation.
///
/// It must be consumed by [`Ctxt::check`]: dropping it unchecked panics, because a mistake
/// recorded but never emitted would let a broken item expand as if it were fine.
pub struct Ctxt {
    /// `None` once checked.
    errors: RefCell<Option<Vec<syn::Error>>>,
}

impl Ctxt {
    pub fn new() -> Self {
        Ctxt {
            errors: RefCell::new(Some(Vec::new())),
        }
    }

    pub fn error(&self, e: syn::Error) {
        self.errors
            .borrow_mut()
            .as_mut()
            .expect("Ctxt used after check")
            .push(e);
    }

    pub fn error_at(&self, span: impl quote::ToTokens, msg: impl std::fmt::Display) {
        self.error(syn::Error::new_spanned(span, msg));
    }

    /// Every recorded mistake, combined into one error in the order recorded (its
    /// `to_compile_error` is one `compile_error!` per mistake).
    pub fn check(self) -> syn::Result<()> {
        let errors = self.errors.borrow_mut().take().expect("Ctxt checked twice");
        let mut errors = errors.into_iter();
        let Some(mut combined) = errors.next() else {
            return Ok(());
        };
        for e in errors {
            combined.combine(e);
        }
        Err(combined)
    }
}

impl Drop for Ctxt {
    fn drop(&mut self) {
        // While unwinding from another panic, a second one would abort and hide the first.
        if !thread::panicking() && self.errors.borrow().is_some() {
            panic!("forgot to check for errors");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Ctxt;
    use proc_macro2::Span;

    #[test]
    fn check_keeps_every_error_in_order() {
        let cx = Ctxt::new();
        cx.error(syn::Error::new(Span::call_site(), "first"));
        cx.error(syn::Error::new(Span::call_site(), "second"));
        let messages: Vec<String> = cx
            .check()
            .unwrap_err()
            .into_iter()
            .map(|e| e.to_string())
            .collect();
        assert_eq!(messages, ["first", "second"]);
    }

    #[test]
    fn check_without_errors_is_ok() {
        assert!(Ctxt::new().check().is_ok());
    }

    #[test]
    #[should_panic(expected = "forgot to check for errors")]
    fn dropping_unchecked_panics() {
        let cx = Ctxt::new();
        cx.error(syn::Error::new(Span::call_site(), "lost"));
    }
}

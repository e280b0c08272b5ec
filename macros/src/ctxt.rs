//! Error accumulation (after serde_derive's `Ctxt`): report every mistake at once, each on
//! its own narrowest span.

use std::cell::RefCell;

use proc_macro2::TokenStream;

#[derive(Default)]
pub struct Ctxt {
    errors: RefCell<Vec<syn::Error>>,
}

impl Ctxt {
    pub fn error(&self, e: syn::Error) {
        self.errors.borrow_mut().push(e);
    }

    pub fn error_at(&self, span: impl quote::ToTokens, msg: impl std::fmt::Display) {
        self.error(syn::Error::new_spanned(span, msg));
    }

    pub fn has_errors(&self) -> bool {
        !self.errors.borrow().is_empty()
    }

    /// The accumulated errors as `compile_error!` invocations.
    pub fn into_compile_errors(self) -> TokenStream {
        self.errors
            .into_inner()
            .into_iter()
            .map(|e| e.to_compile_error())
            .collect()
    }
}

//! Procedural macros of [nestling](https://docs.rs/nestling). Use them through the
//! `nestling` crate: `#[nestling::controller]`, `#[nestling::client]`.
//!
//! The crate is laid out like thiserror's: `attr` and `ast` parse, `valid` checks,
//! `expand` generates. On a mistake the user's item is still emitted (without the
//! pattern attributes) next to one `compile_error!` per mistake, so each mistake gives one
//! message on its own span.

#![deny(missing_docs)]
#![deny(unsafe_code)]

use proc_macro::TokenStream;

mod ast;
mod attr;
mod ctxt;
mod expand;
mod valid;

#[cfg(test)]
mod tests;

/// Turns the methods of an impl block marked `#[message_pattern(..)]` or
/// `#[event_pattern(..)]` into Nest TCP handlers, registers the controller with the
/// server, and generates a typed `{Name}Client`. See the `nestling` crate docs.
#[proc_macro_attribute]
pub fn controller(args: TokenStream, input: TokenStream) -> TokenStream {
    expand::controller(args.into(), input.into()).into()
}

/// Generates a typed `{Trait}Client` for a remote service (for example a NestJS app)
/// from a trait that declares its patterns. See the `nestling` crate docs.
#[proc_macro_attribute]
pub fn client(args: TokenStream, input: TokenStream) -> TokenStream {
    expand::remote_client(args.into(), input.into()).into()
}

/// Marks a request handler (Nest's `@MessagePattern`). Only meaningful inside an impl
/// block annotated with `#[nestling::controller]`, which consumes it.
#[proc_macro_attribute]
pub fn message_pattern(_args: TokenStream, input: TokenStream) -> TokenStream {
    outside_controller("message_pattern", input)
}

/// Marks an event handler (Nest's `@EventPattern`). Only meaningful inside an impl block
/// annotated with `#[nestling::controller]`, which consumes it.
#[proc_macro_attribute]
pub fn event_pattern(_args: TokenStream, input: TokenStream) -> TokenStream {
    outside_controller("event_pattern", input)
}

fn outside_controller(name: &str, input: TokenStream) -> TokenStream {
    let input = proc_macro2::TokenStream::from(input);
    let msg = format!(
        "#[{name}] only works on a method inside an impl block annotated with #[nestling::controller] (or a trait annotated with #[nestling::client]); add #[nestling::controller] to the impl block"
    );
    let err = syn::Error::new(proc_macro2::Span::call_site(), msg).to_compile_error();
    quote::quote!(#err #input).into()
}

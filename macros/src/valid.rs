//! Checks that a parsed controller and its handlers have a shape nestling can serve. Each
//! mistake is reported on the narrowest span with what to do instead.

use std::collections::HashMap;

use syn::{FnArg, ItemImpl, Signature};

use crate::ast::{Controller, Handler, Kind, MemberKind, Param};
use crate::ctxt::Ctxt;

/// Reports every mistake in the controller, item by item in the order written.
pub fn check_controller(cx: &Ctxt, controller: &Controller) {
    check_impl(cx, &controller.item);
    for member in &controller.members {
        for e in &member.malformed {
            cx.error(e.clone());
        }
        match &member.kind {
            MemberKind::Method { handler, extra } => {
                if let Some(h) = handler {
                    check_signature(cx, h.kind, &h.sig);
                    check_params(cx, h);
                }
                for (kind, _, tokens) in extra {
                    cx.error_at(
                        tokens,
                        format!("a handler takes one pattern attribute; this #[{}] is one too many: give it its own method", kind.attr_name()),
                    );
                }
            }
            MemberKind::Other { misplaced } => {
                for (kind, _, tokens) in misplaced {
                    cx.error_at(
                        tokens,
                        format!(
                            "#[{}] belongs on a method of the controller",
                            kind.attr_name()
                        ),
                    );
                }
            }
        }
    }
    if controller.name.is_none() {
        // Such a controller is never registered, so its patterns cannot collide.
        cx.error_at(
            &controller.item.self_ty,
            "#[nestling::controller] needs a named type, e.g. `impl UserController { .. }`",
        );
        return;
    }
    check_duplicates(cx, controller);
}

/// Checks the impl block itself.
fn check_impl(cx: &Ctxt, item: &ItemImpl) {
    if let Some((path, _)) = &item.trait_ {
        cx.error_at(
            path,
            "#[nestling::controller] goes on an inherent impl block (`impl UserController { .. }`), not on a trait impl",
        );
    }
    if !item.generics.params.is_empty() {
        cx.error_at(
            &item.generics,
            "a controller cannot be generic: the server must know its concrete type; write the impl for a concrete type",
        );
    }
}

/// Checks one handler's signature.
fn check_signature(cx: &Ctxt, kind: Kind, sig: &Signature) {
    let attr = kind.attr_name();
    if !sig.generics.params.is_empty() {
        cx.error_at(
            &sig.generics,
            format!("a #[{attr}] handler cannot be generic: nestling must know the concrete payload type to decode it"),
        );
    }
    match sig.inputs.first() {
        Some(FnArg::Receiver(r)) => {
            let by_ref_mut = match &r.kind {
                syn::ReceiverKind::Reference(_, _, m) => Some(m.is_some()),
                _ => None,
            };
            if by_ref_mut.is_none() {
                cx.error_at(
                    r,
                    "handlers take `&self`, not `self`: one controller instance serves every request; write `&self`",
                );
            } else if by_ref_mut == Some(true) {
                cx.error_at(
                    r,
                    "handlers take `&self`, not `&mut self`: requests run concurrently on a shared controller; use interior mutability (a Mutex or atomics) for state",
                );
            }
        }
        _ => cx.error_at(
            &sig.ident,
            format!("a #[{attr}] handler must take `&self` as its first parameter, e.g. `fn {}(&self, payload: T)`", sig.ident),
        ),
    }
    if sig.ident == "new" || sig.ident == "client" {
        cx.error_at(
            &sig.ident,
            format!(
                "`{}` is taken by the generated client (`{{Controller}}Client::{}`); rename the method, the pattern stays the same",
                sig.ident, sig.ident
            ),
        );
    }
    if sig.variadic.is_some() || sig.abi.is_some() {
        cx.error_at(&sig.ident, "handlers must be plain Rust methods");
    }
}

/// Checks a handler's parameters: at most one whole payload and one context, owned
/// decoded types, and a payload for `validate` to check.
fn check_params(cx: &Ctxt, h: &Handler) {
    let mut payloads = 0;
    let mut contexts = 0;
    let typed = h.sig.inputs.iter().filter_map(|arg| match arg {
        FnArg::Typed(pt) => Some(pt),
        FnArg::Receiver(_) => None,
    });
    for (pt, param) in typed.zip(&h.params) {
        if let (Some(_), syn::Type::Reference(r)) = (param.decoded_ty(), &*pt.ty) {
            cx.error_at(
                r,
                "a payload is decoded into an owned value: take `String` instead of `&str`, `Vec<T>` instead of `&[T]`, `T` instead of `&T`",
            );
        }
        match param {
            Param::Payload { .. } => {
                payloads += 1;
                if payloads == 2 {
                    cx.error_at(
                        &pt.ty,
                        "a handler takes at most one whole-payload parameter (Nest sends one `data` value); combine them into one struct or tuple, e.g. `(a, b): (A, B)`, or take single properties with #[payload(\"name\")]",
                    );
                }
            }
            Param::Field { .. } => {}
            Param::Context { .. } => {
                contexts += 1;
                if contexts == 2 {
                    cx.error_at(&pt.ty, "a handler takes at most one `&Context` parameter");
                }
            }
        }
    }
    if let Some(token) = &h.pattern.validate {
        if h.params.iter().all(|p| p.decoded_ty().is_none()) {
            cx.error_at(
                token,
                "`validate` checks the payload, but this handler takes none: add a payload parameter or remove `validate`",
            );
        }
    }
}

/// Two handlers in one impl block with the same pattern (in any key order), and pattern
/// lists that register nothing.
fn check_duplicates(cx: &Ctxt, controller: &Controller) {
    for h in controller.handlers() {
        if h.pattern.value.routes().is_empty() {
            cx.error(syn::Error::new_spanned(
                &h.pattern.tokens,
                "an empty pattern list registers nothing (Nest: `[].concat([])`); give at least one pattern",
            ));
        }
    }
    let mut seen: HashMap<String, &syn::Ident> = HashMap::new();
    for h in controller.handlers() {
        if h.kind != Kind::Message {
            continue; // several event handlers for one pattern all run, as in Nest
        }
        for route in h.pattern.value.routes() {
            let key = route.canonical();
            if let Some(first) = seen.get(&key) {
                cx.error(syn::Error::new_spanned(
                    &h.pattern.tokens,
                    format!(
                        "pattern {} is already handled by `{first}` in this controller; a request can only be answered once, so give one of them another pattern",
                        route.to_json()
                    ),
                ));
            } else {
                seen.insert(key, &h.method);
            }
        }
    }
}

//! Generation of the server side: one dispatch function per handler and the controller's
//! `inventory` registration.

use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::Type;

use crate::ast::{Controller, Handler, Kind, Output, Param};

fn is_unit(ty: &Type) -> bool {
    matches!(ty, Type::Tuple(t) if t.elems.is_empty())
}

/// `fn __nestling_call_<method>(&Instance, Request) -> HandlerFuture`.
fn handler_fn(n: &TokenStream, self_ty: &Type, h: &Handler) -> TokenStream {
    let fn_name = format_ident!("__nestling_call_{}", h.method);
    let method = &h.method;
    let mut decode = TokenStream::new();
    let args = h.params.iter().map(|p| match p {
        Param::Payload { ty, span } => {
            // Spanned on the user's type: a payload type that cannot be deserialised is
            // reported there, not in generated code.
            decode = quote_spanned! {*span=>
                let __payload = __request.payload::<#ty>()?;
            };
            quote!(__payload)
        }
        Param::Context { by_ref: true } => quote!(__request.context()),
        Param::Context { by_ref: false } => {
            quote!(::core::clone::Clone::clone(__request.context()))
        }
    });
    let args: Vec<_> = args.collect();
    let call = if h.is_async {
        quote!(__this.#method(#(#args),*).await)
    } else {
        quote!(__this.#method(#(#args),*))
    };
    let reply = match &h.output {
        Output::Unit => quote! {
            let () = __out;
            #n::reply_unit()
        },
        Output::Opaque => quote!(#n::serialize_reply(&__out)),
        Output::Stream { item } => match crate::ast::result_parts(item) {
            Some((ok, err)) => {
                let err_ty = match err {
                    Some(e) => quote_spanned!(e.span()=> #e),
                    None => quote!(_),
                };
                quote_spanned! {ok.span()=> #n::reply_try_stream::<#ok, #err_ty, _>(__out)}
            }
            None => quote_spanned! {item.span()=> #n::reply_stream::<#item, _>(__out)},
        },
        Output::Value(ty) => quote_spanned! {ty.span()=> #n::serialize_reply::<#ty>(&__out)},
        Output::Result { ok, err } => {
            let err_ty = match err {
                Some(e) => quote_spanned!(e.span()=> #e),
                None => quote!(_),
            };
            if is_unit(ok) {
                quote!(#n::reply_unit_result::<#err_ty>(__out))
            } else {
                quote_spanned! {ok.span()=> #n::reply_result::<#ok, #err_ty>(__out)}
            }
        }
    };
    if !h.is_async {
        // A plain `fn` handler runs to completion at once: the server calls `now` directly
        // (no future, no box) and keeps the request, whose `id` and `data` it still needs
        // (no reference-count traffic to share them); `call` wraps the same function for
        // the generic path.
        let now_name = format_ident!("__nestling_now_{}", h.method);
        return quote! {
            fn #now_name(__instance: &#n::Instance, __request: &#n::Request) -> #n::HandlerOutcome {
                let __this = #n::downcast::<#self_ty>(__instance)?;
                #decode
                let __out = #call;
                #reply
            }

            fn #fn_name(__instance: &#n::Instance, __request: #n::Request) -> #n::HandlerFuture {
                let __outcome = #now_name(__instance, &__request);
                #n::Box::pin(async move { __outcome })
            }
        };
    }
    // The returned future must be `Send`; a handler holding a non-`Send` value across an
    // `.await` is reported on the method's name rather than on the attribute.
    let ret = quote_spanned!(h.method.span()=> __future);
    quote! {
        fn #fn_name(__instance: &#n::Instance, __request: #n::Request) -> #n::HandlerFuture {
            let __instance = #n::clone_instance(__instance);
            let __future = #n::Box::pin(async move {
                let __this = #n::downcast::<#self_ty>(&__instance)?;
                #decode
                let __out = #call;
                #reply
            });
            #ret
        }
    }
}

pub fn expand_registration(n: &TokenStream, c: &Controller) -> TokenStream {
    let self_ty = &*c.item.self_ty;
    let name = c.name.to_string();
    let fns = c.handlers.iter().map(|h| handler_fn(n, self_ty, h));
    let count: usize = c
        .handlers
        .iter()
        .map(|h| h.pattern.value.routes().len())
        .sum();
    // One `fn() -> DynLayer` per `layer = f` argument (function pointers fit in statics).
    let layer_fn = |name: &syn::Ident, path: &syn::Path| {
        quote! {
            fn #name() -> #n::DynLayer {
                #n::IntoDynLayer::into_dyn_layer(#path())
            }
        }
    };
    let mut layer_fns = Vec::new();
    let controller_layers: Vec<_> = c
        .layers
        .iter()
        .enumerate()
        .map(|(i, path)| {
            let name = format_ident!("__nestling_layer_{}", i);
            layer_fns.push(layer_fn(&name, path));
            name
        })
        .collect();
    let handler_layers: Vec<Vec<syn::Ident>> = c
        .handlers
        .iter()
        .map(|h| {
            h.pattern
                .layers
                .iter()
                .enumerate()
                .map(|(i, path)| {
                    let name = format_ident!("__nestling_layer_{}_{}", h.method, i);
                    layer_fns.push(layer_fn(&name, path));
                    name
                })
                .collect()
        })
        .collect();
    // One entry per registered pattern: `#[message_pattern(["a", "b"])]` registers two.
    let metas: Vec<_> = c
        .handlers
        .iter()
        .zip(&handler_layers)
        .flat_map(|(h, layers)| {
            let kind = match h.kind {
                Kind::Message => quote!(#n::HandlerKind::Message),
                Kind::Event => quote!(#n::HandlerKind::Event),
            };
            let method = h.method.to_string();
            let line = h.line as u32;
            let fn_name = format_ident!("__nestling_call_{}", h.method);
            let call_now = if h.is_async {
                quote!(#n::None)
            } else {
                let now_name = format_ident!("__nestling_now_{}", h.method);
                quote!(#n::Some(#now_name))
            };
            let decodes_data = h.params.iter().any(|p| matches!(p, Param::Payload { .. }));
            h.pattern
                .value
                .routes()
                .into_iter()
                .map(move |route| {
                    let json = route.to_json();
                    quote! {
                        #n::HandlerMeta {
                            kind: #kind,
                            pattern: #json,
                            method: #method,
                            line: #line,
                            call: #fn_name,
                            call_now: #call_now,
                            decodes_data: #decodes_data,
                            layers: &[#(#layers),*],
                        }
                    }
                })
                .collect::<Vec<_>>()
        })
        .collect();
    let controller_impl = quote_spanned! {self_ty.span()=>
        impl #n::Controller for #self_ty {
            fn meta() -> &'static #n::ControllerMeta {
                &__NESTLING_META
            }
        }
    };
    quote! {
        #[doc(hidden)]
        const _: () = {
            #(#fns)*
            #(#layer_fns)*

            static __NESTLING_HANDLERS: [#n::HandlerMeta; #count] = [#(#metas),*];

            fn __nestling_type_id() -> #n::TypeId {
                #n::TypeId::of::<#self_ty>()
            }

            fn __nestling_auto() -> #n::Option<#n::Instance> {
                #[allow(unused_imports)]
                use #n::{AutoFallback as _, AutoViaDefault as _};
                (&&#n::AutoProbe::<#self_ty>::new()).auto()
            }

            static __NESTLING_META: #n::ControllerMeta = #n::ControllerMeta {
                name: #name,
                file: ::core::file!(),
                type_id: __nestling_type_id,
                auto: __nestling_auto,
                handlers: &__NESTLING_HANDLERS,
                layers: &[#(#controller_layers),*],
            };

            #controller_impl

            #n::inventory::submit! {
                #n::ControllerEntry(&__NESTLING_META)
            }
        };
    }
}

//! Generation of the server side: one dispatch function per handler and the controller's
//! `inventory` registration.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Ident, Type};

use crate::ast::{Handler, Kind, Output, Param};

fn is_unit(ty: &Type) -> bool {
    matches!(ty, Type::Tuple(t) if t.elems.is_empty())
}

/// Whether the handler decodes `data`: its entry is then generic over validating.
fn decodes(h: &Handler) -> bool {
    h.params.iter().any(|p| p.decoded_ty().is_some())
}

/// The payload properties the handler's `#[payload("name")]` parameters read, each once.
fn field_names(h: &Handler) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for p in &h.params {
        if let Param::Field { name, .. } = p {
            if !names.contains(&name.value()) {
                names.push(name.value());
            }
        }
    }
    names
}

/// The `HandlerEntry` of a handler's entry function, validating or not.
fn entry_of(n: &TokenStream, h: &Handler, fn_name: &Ident, validating: bool) -> TokenStream {
    let call = if decodes(h) {
        quote!(#fn_name::<#validating>)
    } else {
        quote!(#fn_name)
    };
    if h.is_async {
        quote!(#n::HandlerEntry::Async(#call))
    } else {
        let decodes_data = decodes(h);
        quote!(#n::HandlerEntry::Now { call: #call, decodes_data: #decodes_data })
    }
}

/// The server side of one controller. Every name the expansion defines is computed here,
/// once, so a definition and its uses cannot drift apart.
pub struct Registration<'a> {
    /// `::nestling::__private`, or under the path given with `crate = ".."`.
    n: &'a TokenStream,
    self_ty: &'a Type,
    name: &'a Ident,
    handlers: Vec<HandlerGen<'a>>,
    /// One per `layer = f` argument of `#[nestling::controller]`.
    layers: Vec<LayerFn<'a>>,
    /// One per `filter = f` argument of `#[nestling::controller]`.
    filters: Vec<LayerFn<'a>>,
    /// `__NESTLING_HANDLERS`: the controller's `HandlerMeta`s, one per registered pattern.
    handlers_static: Ident,
    /// `__NESTLING_META`: the controller's `ControllerMeta`.
    meta_static: Ident,
    /// `__nestling_type_id`: the controller type's `TypeId`.
    type_id_fn: Ident,
    /// `__nestling_auto`: builds the controller with `Default` if it has it.
    auto_fn: Ident,
    /// `__nestling_lifecycle`: the controller's `Lifecycle` hooks if it implements it.
    lifecycle_fn: Ident,
}

struct HandlerGen<'a> {
    h: &'a Handler,
    /// What the runtime calls: `__nestling_now_<method>` for a plain `fn` handler,
    /// `__nestling_call_<method>` for an `async fn` one. Spanned on the method's name.
    entry_fn: Ident,
    /// `__nestling_validated_<method>`: the validating entry for the server's
    /// `validate_payloads`, for a handler that decodes `data` and does not validate anyway.
    validated_fn: Option<Ident>,
    /// One per `layer = f` argument of the handler's pattern attribute.
    layers: Vec<LayerFn<'a>>,
    /// One per `filter = f` argument of the handler's pattern attribute.
    filters: Vec<LayerFn<'a>>,
}

/// `fn <name>() -> DynLayer` for one `layer = f` (or `-> Filter` for one `filter = f`):
/// function pointers fit in statics, the layers and filters they build do not.
struct LayerFn<'a> {
    name: Ident,
    path: &'a syn::Path,
}

impl<'a> Registration<'a> {
    pub fn new(
        n: &'a TokenStream,
        self_ty: &'a Type,
        name: &'a Ident,
        handlers: impl IntoIterator<Item = &'a Handler>,
        layers: &'a [syn::Path],
    ) -> Self {
        let handlers = handlers
            .into_iter()
            .map(|h| HandlerGen {
                h,
                entry_fn: if h.is_async {
                    format_ident!("__nestling_call_{}", h.method)
                } else {
                    format_ident!("__nestling_now_{}", h.method)
                },
                validated_fn: (decodes(h) && h.pattern.validate.is_none())
                    .then(|| format_ident!("__nestling_validated_{}", h.method)),
                layers: h
                    .pattern
                    .layers
                    .iter()
                    .enumerate()
                    .map(|(i, path)| LayerFn {
                        name: format_ident!("__nestling_layer_{}_{}", h.method, i),
                        path,
                    })
                    .collect(),
                filters: h
                    .pattern
                    .filters
                    .iter()
                    .enumerate()
                    .map(|(i, path)| LayerFn {
                        name: format_ident!("__nestling_filter_{}_{}", h.method, i),
                        path,
                    })
                    .collect(),
            })
            .collect();
        let layers = layers
            .iter()
            .enumerate()
            .map(|(i, path)| LayerFn {
                name: format_ident!("__nestling_layer_{}", i),
                path,
            })
            .collect();
        let call_site = |name: &str| Ident::new(name, Span::call_site());
        Registration {
            n,
            self_ty,
            name,
            handlers,
            layers,
            filters: Vec::new(),
            handlers_static: call_site("__NESTLING_HANDLERS"),
            meta_static: call_site("__NESTLING_META"),
            type_id_fn: call_site("__nestling_type_id"),
            auto_fn: call_site("__nestling_auto"),
            lifecycle_fn: call_site("__nestling_lifecycle"),
        }
    }

    /// The controller's `filter = f` arguments.
    pub fn filters(mut self, filters: &'a [syn::Path]) -> Self {
        self.filters = filters
            .iter()
            .enumerate()
            .map(|(i, path)| LayerFn {
                name: format_ident!("__nestling_filter_{}", i),
                path,
            })
            .collect();
        self
    }

    /// `fn() -> Option<HandlerEntry>`: the handler's validating entry when one of the types
    /// it decodes has validation rules.
    fn validated_fn(&self, g: &HandlerGen) -> Option<TokenStream> {
        let n = self.n;
        let name = g.validated_fn.as_ref()?;
        let entry = entry_of(n, g.h, &g.entry_fn, true);
        let tys = g.h.params.iter().filter_map(|p| p.decoded_ty());
        Some(quote! {
            fn #name() -> #n::Option<#n::HandlerEntry> {
                #[allow(unused_imports)]
                use #n::{ViaGarde as _, ViaNothing as _, ViaValidator as _};
                let __entry = #entry;
                #n::Option::<#n::HandlerEntry>::None
                    #(.or_else(|| (&&&#n::ValidateProbe::<#tys>::new()).validated(__entry)))*
            }
        })
    }

    /// The handler's entry function: for a plain `fn`,
    /// `fn(&Instance, &Request) -> HandlerOutcome`; for an `async fn`,
    /// `fn(&Instance, Request) -> HandlerFuture`.
    fn handler_fn(&self, g: &HandlerGen) -> TokenStream {
        let n = self.n;
        let self_ty = self.self_ty;
        let h = g.h;
        let fn_name = &g.entry_fn;
        let method = &h.method;
        let mut decode = TokenStream::new();
        let names = field_names(h);
        if !names.is_empty() {
            decode.extend(quote! {
                let __fields = #n::fields(&__request, &[#(#names),*])?;
            });
        }
        // `__V`: whether this instance of the entry validates (the handler's `validate`, or
        // the server's `validate_payloads`). `check` is compiled away when it does not, and
        // is an empty call for a type without rules.
        let explicit = h.pattern.validate.is_some();
        // `validate` requires rules of the whole payload's type; properties are validated
        // when their types have rules (as Nest's pipe skips primitives).
        let check = |ty: &Type, value: TokenStream, json: TokenStream, whole: bool| {
            // Spanned on the user's type: `validate` on a type without rules is reported there.
            let required = (explicit && whole).then(|| {
                quote_spanned! {ty.span()=> (&&&#n::ValidateProbe::<#ty>::new()).required();}
            });
            quote! {
                if __V {
                    #[allow(unused_imports)]
                    use #n::{ViaGarde as _, ViaNothing as _, ViaValidator as _};
                    #required
                    (&&&#n::ValidateProbe::<#ty>::new()).check(#value, #json)?;
                }
            }
        };
        let args = h.params.iter().enumerate().map(|(i, p)| match p {
            Param::Payload { ty, span } => {
                // Spanned on the user's type: a payload type that cannot be deserialised is
                // reported there, not in generated code.
                decode.extend(quote_spanned! {*span=>
                    let __payload = #n::decode::<#ty>(&__request, __V)?;
                });
                decode.extend(check(
                    ty,
                    quote!(&__payload),
                    quote!(#n::payload_json(&__request)),
                    true,
                ));
                quote!(__payload)
            }
            Param::Field { name, ty, span } => {
                let var = format_ident!("__field_{}", i);
                let at = names
                    .iter()
                    .position(|n| *n == name.value())
                    .unwrap_or_default();
                decode.extend(quote_spanned! {*span=>
                    let #var = <#ty as #n::FromField>::from_field(__fields[#at], #name)?;
                });
                decode.extend(check(
                    ty,
                    quote!(&#var),
                    quote!(#n::raw_json(__fields[#at])),
                    false,
                ));
                quote!(#var)
            }
            Param::Context { by_ref: true } => quote!(__request.context()),
            Param::Context { by_ref: false } => {
                quote!(::core::clone::Clone::clone(__request.context()))
            }
        });
        let args: Vec<_> = args.collect();
        let generics = decodes(h).then(|| quote!(<const __V: bool>));
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
            // A plain `fn` handler runs to completion at once: the server calls it directly
            // (no future, no box) and keeps the request, whose `id` and `data` it still needs
            // (no reference-count traffic to share them). Where a future is needed the runtime
            // wraps the outcome itself, so one function serves both paths.
            return quote! {
                fn #fn_name #generics(__instance: &#n::Instance, __request: &#n::Request) -> #n::HandlerOutcome {
                    let __this = #n::downcast::<#self_ty>(__instance)?;
                    #decode
                    let __out = #call;
                    #reply
                }
            };
        }
        // The returned future must be `Send`; a handler holding a non-`Send` value across an
        // `.await` is reported on the method's name rather than on the attribute.
        let ret = quote_spanned!(h.method.span()=> __future);
        quote! {
            fn #fn_name #generics(__instance: &#n::Instance, __request: #n::Request) -> #n::HandlerFuture {
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

    pub fn expand(&self) -> TokenStream {
        let n = self.n;
        let self_ty = self.self_ty;
        let name = self.name.to_string();
        let fns = self.handlers.iter().map(|g| self.handler_fn(g));
        let validated_fns = self.handlers.iter().filter_map(|g| self.validated_fn(g));
        let count: usize = self
            .handlers
            .iter()
            .map(|g| g.h.pattern.value.routes().len())
            .sum();
        let layer_fns = self
            .layers
            .iter()
            .chain(self.handlers.iter().flat_map(|g| &g.layers))
            .map(|LayerFn { name, path }| {
                quote! {
                    fn #name() -> #n::DynLayer {
                        #n::IntoDynLayer::into_dyn_layer(#path())
                    }
                }
            });
        // Spanned on the user's path: a function that returns no `Filter` is reported there.
        let filter_fns = self
            .filters
            .iter()
            .chain(self.handlers.iter().flat_map(|g| &g.filters))
            .map(|LayerFn { name, path }| {
                let call = quote_spanned!(path.span()=> #path());
                quote! {
                    fn #name() -> #n::Filter {
                        #call
                    }
                }
            });
        let controller_layers = self.layers.iter().map(|l| &l.name);
        let controller_filters = self.filters.iter().map(|l| &l.name);
        // One entry per registered pattern: `#[message_pattern(["a", "b"])]` registers two.
        let metas: Vec<_> = self
            .handlers
            .iter()
            .flat_map(|g| {
                let h = g.h;
                let kind = match h.kind {
                    Kind::Message => quote!(#n::HandlerKind::Message),
                    Kind::Event => quote!(#n::HandlerKind::Event),
                };
                let method = h.method.to_string();
                let line = h.line as u32;
                let fn_name = &g.entry_fn;
                let entry = entry_of(n, h, fn_name, h.pattern.validate.is_some());
                let validated = match &g.validated_fn {
                    Some(f) => quote!(#n::Some(#f)),
                    None => quote!(#n::None),
                };
                let layers: Vec<_> = g.layers.iter().map(|l| &l.name).collect();
                let filters: Vec<_> = g.filters.iter().map(|l| &l.name).collect();
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
                                entry: #entry,
                                layers: &[#(#layers),*],
                                filters: &[#(#filters),*],
                                validated: #validated,
                            }
                        }
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        let handlers_static = &self.handlers_static;
        let meta_static = &self.meta_static;
        let type_id_fn = &self.type_id_fn;
        let auto_fn = &self.auto_fn;
        let lifecycle_fn = &self.lifecycle_fn;
        // Every token of the impl carries the self type's span, the static's name included,
        // so a type that cannot be a controller (not `Send + Sync`, …) is reported there.
        let mut meta_in_impl = meta_static.clone();
        meta_in_impl.set_span(self_ty.span());
        let controller_impl = quote_spanned! {self_ty.span()=>
            impl #n::Controller for #self_ty {
                fn meta() -> &'static #n::ControllerMeta {
                    &#meta_in_impl
                }
            }
        };
        quote! {
            #[doc(hidden)]
            const _: () = {
                #(#fns)*
                #(#validated_fns)*
                #(#layer_fns)*
                #(#filter_fns)*

                static #handlers_static: [#n::HandlerMeta; #count] = [#(#metas),*];

                fn #type_id_fn() -> #n::TypeId {
                    #n::TypeId::of::<#self_ty>()
                }

                fn #auto_fn() -> #n::Option<#n::Instance> {
                    #[allow(unused_imports)]
                    use #n::{AutoFallback as _, AutoViaDefault as _};
                    (&&#n::AutoProbe::<#self_ty>::new()).auto()
                }

                fn #lifecycle_fn() -> #n::Option<#n::LifecycleHooks> {
                    #[allow(unused_imports)]
                    use #n::{LifecycleFallback as _, LifecycleViaImpl as _};
                    (&&#n::LifecycleProbe::<#self_ty>::new()).hooks()
                }

                static #meta_static: #n::ControllerMeta = #n::ControllerMeta {
                    name: #name,
                    file: ::core::file!(),
                    type_id: #type_id_fn,
                    auto: #auto_fn,
                    handlers: &#handlers_static,
                    layers: &[#(#controller_layers),*],
                    filters: &[#(#controller_filters),*],
                    lifecycle: #lifecycle_fn,
                };

                #controller_impl

                #n::inventory::submit! {
                    #n::ControllerEntry(&#meta_static)
                }
            };
        }
    }
}

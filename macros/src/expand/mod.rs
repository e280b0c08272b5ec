//! Code generation. Entry points take and return `proc_macro2` tokens so they can be
//! snapshot-tested outside a compiler session.

mod client;
mod contracts;
mod dispatch;

use proc_macro2::TokenStream;
use quote::{quote, ToTokens};
use syn::parse::{Parse, ParseStream};
use syn::{Attribute, FnArg, ItemImpl, ItemTrait, Token, TraitItem};

use crate::ast::{self, split_malformed, take_pattern_attrs, Controller, Param};
use crate::ctxt::Ctxt;
use client::{ClientGen, ClientMethod};
use contracts::{ContractGen, ContractMethod};
use dispatch::Registration;

/// Arguments of `#[nestling::controller(..)]` and `#[nestling::client(..)]`.
pub struct Args {
    /// Path of the `nestling` crate (`crate = "my::reexport::nestling"`).
    krate: TokenStream,
    /// Whether to generate `{Name}Client` (`client = false` turns it off).
    client: bool,
    /// `layer = f`: middleware for every handler of the controller.
    layers: Vec<syn::Path>,
    /// `filter = f`: exception filters for every handler of the controller.
    filters: Vec<syn::Path>,
    /// `contracts`: register TypeScript contracts (its span reports a missing feature).
    contracts: Option<proc_macro2::Span>,
}

impl Parse for Args {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let mut args = Args {
            krate: quote!(::nestling),
            client: true,
            layers: Vec::new(),
            filters: Vec::new(),
            contracts: None,
        };
        while !input.is_empty() {
            let key: syn::Ident = syn::ext::IdentExt::parse_any(input)?;
            if key == "lifecycle" {
                return Err(syn::Error::new(
                    key.span(),
                    "lifecycle hooks need no argument: implement `nestling::Lifecycle` for the controller and its `on_start`/`on_shutdown` run on their own",
                ));
            }
            if key == "contracts" {
                args.contracts = Some(key.span());
                if !input.is_empty() {
                    input.parse::<Token![,]>()?;
                }
                continue;
            }
            input.parse::<Token![=]>()?;
            if key == "crate" {
                let path: syn::LitStr = input.parse()?;
                args.krate = path.parse::<syn::Path>()?.into_token_stream();
            } else if key == "client" {
                args.client = input.parse::<syn::LitBool>()?.value;
            } else if key == "layer" {
                args.layers.push(input.parse::<syn::Path>()?);
            } else if key == "filter" {
                args.filters.push(input.parse::<syn::Path>().map_err(|e| {
                    syn::Error::new(
                        e.span(),
                        "expected the path of a function returning a `nestling::filter::Filter`, e.g. `filter = not_found`",
                    )
                })?);
            } else {
                return Err(syn::Error::new(
                    key.span(),
                    "unknown argument: expected `layer = path::to::fn`, `filter = path::to::fn`, `client = false` or `crate = \"path::to::nestling\"`",
                ));
            }
            if !input.is_empty() {
                input.parse::<Token![,]>()?;
            }
        }
        Ok(args)
    }
}

fn private(args: &Args) -> TokenStream {
    let krate = &args.krate;
    quote!(#krate::__private)
}

fn docs(attrs: &[Attribute]) -> Vec<Attribute> {
    attrs
        .iter()
        .filter(|a| a.path().is_ident("doc"))
        .cloned()
        .collect()
}

/// `#[nestling::controller]` on an impl block.
pub fn controller(args: TokenStream, input: TokenStream) -> TokenStream {
    let item: ItemImpl = match syn::parse2(input.clone()) {
        Ok(item) => item,
        Err(_) => {
            let e = syn::Error::new_spanned(
                &input,
                "#[nestling::controller] goes on an impl block: `impl UserController { .. }`",
            );
            let e = e.to_compile_error();
            return quote!(#e #input);
        }
    };
    let cx = Ctxt::new();
    let args = match syn::parse2::<Args>(args) {
        Ok(a) => a,
        Err(e) => {
            cx.error(e);
            Args {
                krate: quote!(::nestling),
                client: false,
                layers: Vec::new(),
                filters: Vec::new(),
                contracts: None,
            }
        }
    };
    let controller = Controller::from_syn(item.clone());
    crate::valid::check_controller(&cx, &controller);
    let n = private(&args);
    let user_item = &controller.item;
    let name = match (cx.check(), &controller.name) {
        (Ok(()), Some(name)) => name,
        (Err(errors), Some(name)) => {
            // The impl (without pattern attributes) still compiles, and so does an empty
            // registration (as long as the impl itself is usable), so the mistakes are the
            // only messages the user sees: `Server::builder().controller(..)` still
            // type-checks.
            let errors = errors.to_compile_error();
            let fallback = if item.generics.params.is_empty() && item.trait_.is_none() {
                Registration::new(&n, &controller.item.self_ty, name, [], &[]).expand()
            } else {
                TokenStream::new()
            };
            return quote!(#user_item #fallback #errors);
        }
        // `valid` reports a controller without a name, so this is never `Ok`.
        (result, None) => {
            let errors = result.err().map(|e| e.to_compile_error());
            return quote!(#item #errors);
        }
    };
    let registration = Registration::new(
        &n,
        &controller.item.self_ty,
        name,
        controller.handlers(),
        &args.layers,
    )
    .filters(&args.filters)
    .expand();
    let client = if args.client {
        let methods: Vec<ClientMethod> = controller
            .handlers()
            .map(|h| {
                let method_docs = controller.item.items.iter().find_map(|i| match i {
                    syn::ImplItem::Fn(f) if f.sig.ident == h.method => Some(docs(&f.attrs)),
                    _ => None,
                });
                ClientMethod {
                    kind: h.kind,
                    // A handler with several patterns is called through its first.
                    pattern_json: h
                        .pattern
                        .value
                        .routes()
                        .first()
                        .map_or_else(|| h.pattern.value.to_json(), |p| p.to_json()),
                    name: h.method.clone(),
                    // Properties taken one by one (`#[payload("id")]`) are sent as one object.
                    payload: h
                        .params
                        .iter()
                        .find_map(|p| match p {
                            Param::Payload { ty, .. } => Some(ty.clone()),
                            _ => None,
                        })
                        .or_else(|| {
                            h.params
                                .iter()
                                .any(|p| matches!(p, Param::Field { .. }))
                                .then(|| syn::parse_quote!(#n::serde_json::Value))
                        }),
                    output: h.output.clone(),
                    docs: method_docs.unwrap_or_default(),
                }
            })
            .collect();
        let about = format!("the patterns of [`{name}`]");
        ClientGen::new(&n, &syn::parse_quote!(pub), name, about, &methods).expand()
    } else {
        TokenStream::new()
    };
    let contracts = args.contracts.map(|span| {
        let methods = contracts::controller_methods(&controller);
        ContractGen::new(&n, name, &controller.item.attrs, &methods, span).expand()
    });
    quote! {
        #user_item
        #registration
        #client
        #contracts
    }
}

/// `#[nestling::client]` on a trait declaring a remote service's patterns.
pub fn remote_client(args: TokenStream, input: TokenStream) -> TokenStream {
    let args = match syn::parse2::<Args>(args) {
        Ok(a) => a,
        Err(e) => return e.to_compile_error(),
    };
    let mut item: ItemTrait = match syn::parse2(input.clone()) {
        Ok(item) => item,
        Err(_) => {
            let e = syn::Error::new_spanned(
                &input,
                "#[nestling::client] goes on a trait that declares the remote service's patterns: `trait UserService { #[message_pattern(\"sum\")] async fn sum(nums: Vec<i64>) -> i64; }`",
            )
            .to_compile_error();
            return quote!(#e #input);
        }
    };
    let cx = Ctxt::new();
    let mut methods = Vec::new();
    let mut contract_methods = Vec::new();
    for trait_item in &mut item.items {
        let TraitItem::Fn(f) = trait_item else {
            cx.error_at(
                &*trait_item,
                "a #[nestling::client] trait holds only pattern methods",
            );
            continue;
        };
        let found = take_pattern_attrs(&mut f.attrs);
        let had_pattern = !found.is_empty();
        let (malformed, well_formed) = split_malformed(found);
        for e in malformed {
            cx.error(e);
        }
        let Some((kind, pattern, _)) = well_formed.into_iter().next() else {
            if had_pattern {
                continue; // its parse error is already reported
            }
            cx.error_at(
                &f.sig.ident,
                "each method of a #[nestling::client] trait needs #[message_pattern(..)] or #[event_pattern(..)]",
            );
            continue;
        };
        if !f.sig.generics.params.is_empty() {
            cx.error_at(
                &f.sig.generics,
                "client methods cannot be generic: declare the concrete payload type",
            );
        }
        let mut payloads = f.sig.inputs.iter().filter_map(|a| match a {
            FnArg::Typed(pt) => Some(pt),
            FnArg::Receiver(_) => None,
        });
        let payload = payloads.next().map(|pt| (*pt.ty).clone());
        if let Some(extra) = payloads.next() {
            cx.error_at(
                &extra.ty,
                "a pattern takes at most one payload (Nest sends one `data` value); combine them into one struct or tuple",
            );
        }
        if let Some(p) = &payload {
            if matches!(ast::parse_handler_param(p), Param::Context { .. }) {
                cx.error_at(p, "a client sends no context: remove this parameter");
            }
        }
        contract_methods.push(ContractMethod::from_trait_fn(
            kind, &pattern, &f.sig, &f.attrs,
        ));
        methods.push(ClientMethod {
            kind,
            // Like the controller: a pattern list is called through its first pattern.
            pattern_json: pattern
                .value
                .routes()
                .first()
                .map_or_else(|| pattern.value.to_json(), |p| p.to_json()),
            name: f.sig.ident.clone(),
            payload,
            output: ast::classify_output(&f.sig.output),
            docs: docs(&f.attrs),
        });
    }
    if let Err(errors) = cx.check() {
        return errors.to_compile_error();
    }
    let n = private(&args);
    let about = format!("the remote service `{}`", item.ident);
    let docs = docs(&item.attrs);
    let client = ClientGen::new(&n, &item.vis, &item.ident, about, &methods).expand();
    let contracts = args.contracts.map(|span| {
        ContractGen::new(&n, &item.ident, &item.attrs, &contract_methods, span).expand()
    });
    quote! {
        #(#docs)*
        #client
        #contracts
    }
}

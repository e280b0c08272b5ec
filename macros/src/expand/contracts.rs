//! Generation of TypeScript contracts (`#[nestling::controller(contracts)]`,
//! `#[nestling::client(contracts)]`): one `ContractMeta` per service, submitted to
//! `inventory` like the dispatch table, whose type functions name every payload and reply
//! type through `ts_rs::TS`. `nestling::contracts` renders them as one TypeScript module.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Attribute, FnArg, Ident, Pat, PatType, Signature, Type};

use crate::ast::{self, Controller, Handler, Kind, Output, Param};
use crate::attr::PatternArg;

/// What the caller sends, as the signature declares it.
// Compile-time only values: boxing the syn types would buy nothing.
#[allow(clippy::large_enum_variant)]
enum PayloadShape {
    None,
    /// One parameter is the whole `data`.
    Whole {
        param: String,
        ty: Type,
    },
    /// `#[payload("field")]` parameters: `data` is an object with one key per parameter.
    Fields(Vec<(String, String, Type)>),
}

/// One pattern of a service with contracts.
pub struct ContractMethod {
    kind: Kind,
    name: Ident,
    pattern_json: String,
    payload: PayloadShape,
    output: Output,
    docs: String,
}

impl ContractMethod {
    /// A method with its payload shape: its signature and its attributes (for the docs).
    fn new(
        kind: Kind,
        pattern: &PatternArg,
        sig: &Signature,
        attrs: &[Attribute],
        payload: PayloadShape,
    ) -> Self {
        ContractMethod {
            kind,
            name: sig.ident.clone(),
            // Like the Rust clients: a pattern list is called through its first pattern.
            pattern_json: pattern
                .value
                .routes()
                .first()
                .map_or_else(|| pattern.value.to_json(), |p| p.to_json()),
            payload,
            output: ast::classify_output(&sig.output),
            docs: doc_text(attrs),
        }
    }

    /// A method of a `#[nestling::client]` trait: its first parameter is the payload.
    pub fn from_trait_fn(
        kind: Kind,
        pattern: &PatternArg,
        sig: &Signature,
        attrs: &[Attribute],
    ) -> Self {
        Self::new(kind, pattern, sig, attrs, payload_shape(sig))
    }
}

/// The contracts of a controller's handlers.
pub fn controller_methods(controller: &Controller) -> Vec<ContractMethod> {
    controller
        .handlers()
        .map(|h| {
            let attrs = controller.item.items.iter().find_map(|i| match i {
                syn::ImplItem::Fn(f) if f.sig.ident == h.method => Some(&f.attrs[..]),
                _ => None,
            });
            ContractMethod::new(
                h.kind,
                &h.pattern,
                &h.sig,
                attrs.unwrap_or_default(),
                handler_payload(h),
            )
        })
        .collect()
}

/// A handler's payload from its parsed parameters (one per typed parameter, in order):
/// `#[payload("field")]` parameters make `data` an object.
fn handler_payload(h: &Handler) -> PayloadShape {
    let typed = h.sig.inputs.iter().filter_map(|a| match a {
        FnArg::Typed(pt) => Some(pt),
        FnArg::Receiver(_) => None,
    });
    let mut whole = None;
    let mut fields = Vec::new();
    for (param, pt) in h.params.iter().zip(typed) {
        match param {
            Param::Payload { ty, .. } if whole.is_none() => {
                whole = Some(PayloadShape::Whole {
                    param: param_name(pt),
                    ty: ty.clone(),
                })
            }
            Param::Field { name, ty, .. } => {
                fields.push((name.value(), param_name(pt), ty.clone()))
            }
            _ => {}
        }
    }
    if !fields.is_empty() {
        return PayloadShape::Fields(fields);
    }
    whole.unwrap_or(PayloadShape::None)
}

/// `#[payload("field")]` on a parameter of a client trait: the key of `data` it is sent as.
fn payload_field(pt: &PatType) -> Option<String> {
    pt.attrs.iter().find_map(|a| {
        if !a.path().is_ident("payload") {
            return None;
        }
        a.parse_args::<syn::LitStr>().ok().map(|s| s.value())
    })
}

fn param_name(pt: &PatType) -> String {
    match &*pt.pat {
        Pat::Ident(p) => {
            let name = p.ident.to_string();
            let name = name.trim_start_matches("r#").trim_start_matches('_');
            if name.is_empty() {
                "payload".to_owned()
            } else {
                name.to_owned()
            }
        }
        _ => "payload".to_owned(),
    }
}

fn payload_shape(sig: &Signature) -> PayloadShape {
    let payloads: Vec<&PatType> = sig
        .inputs
        .iter()
        .filter_map(|a| match a {
            FnArg::Typed(pt) => Some(pt),
            FnArg::Receiver(_) => None,
        })
        .filter(|pt| matches!(ast::parse_handler_param(&pt.ty), Param::Payload { .. }))
        .collect();
    if payloads.iter().any(|pt| payload_field(pt).is_some()) {
        return PayloadShape::Fields(
            payloads
                .iter()
                .filter_map(|pt| Some((payload_field(pt)?, param_name(pt), (*pt.ty).clone())))
                .collect(),
        );
    }
    match payloads.first() {
        Some(pt) => PayloadShape::Whole {
            param: param_name(pt),
            ty: (*pt.ty).clone(),
        },
        None => PayloadShape::None,
    }
}

/// The text of `///` comments, one line each, without the space rustdoc strips.
fn doc_text(attrs: &[Attribute]) -> String {
    let lines: Vec<String> = attrs
        .iter()
        .filter(|a| a.path().is_ident("doc"))
        .filter_map(|a| match &a.meta {
            syn::Meta::NameValue(nv) => match &nv.value {
                syn::Expr::Lit(syn::ExprLit {
                    lit: syn::Lit::Str(s),
                    ..
                }) => Some(s.value()),
                _ => None,
            },
            _ => None,
        })
        .flat_map(|s| {
            s.lines()
                .map(|l| l.strip_prefix(' ').unwrap_or(l).to_owned())
                .collect::<Vec<_>>()
        })
        .collect();
    lines.join("\n")
}

/// Replies are values the caller receives, so a borrowed reply type is named by what it
/// points to.
fn owned(ty: &Type) -> &Type {
    match ty {
        Type::Reference(r) => owned(&r.elem),
        other => other,
    }
}

fn is_unit(ty: &Type) -> bool {
    matches!(ty, Type::Tuple(t) if t.elems.is_empty())
}

/// The contracts of one service.
pub struct ContractGen<'a> {
    /// `::nestling::__private`, or under the path given with `crate = ".."`.
    n: &'a TokenStream,
    name: &'a Ident,
    docs: String,
    methods: &'a [ContractMethod],
    /// The `contracts` argument: where a missing feature is reported.
    span: Span,
}

impl<'a> ContractGen<'a> {
    pub fn new(
        n: &'a TokenStream,
        name: &'a Ident,
        docs: &[Attribute],
        methods: &'a [ContractMethod],
        span: Span,
    ) -> Self {
        ContractGen {
            n,
            name,
            docs: doc_text(docs),
            methods,
            span,
        }
    }

    /// `fn <name>(types) -> String` naming `ty`; spanned on the user's type, so a type
    /// without `ts_rs::TS` is reported there.
    fn type_fn(&self, name: &Ident, ty: &Type) -> TokenStream {
        let n = self.n;
        let ty = owned(ty);
        let call = quote_spanned! {ty.span()=> __types.ty::<#ty>()};
        quote! {
            fn #name(__types: &mut #n::contracts::TypeSet) -> #n::String {
                #call
            }
        }
    }

    pub fn expand(&self) -> TokenStream {
        let n = self.n;
        let mut fns = Vec::new();
        let mut statics = Vec::new();
        let mut metas = Vec::new();
        for m in self.methods {
            let method = &m.name;
            let payload = match &m.payload {
                PayloadShape::None => quote!(#n::contracts::PayloadContract::None),
                PayloadShape::Whole { param, ty } => {
                    let f = format_ident!("__nestling_ts_{}_payload", method);
                    fns.push(self.type_fn(&f, ty));
                    quote!(#n::contracts::PayloadContract::Whole { param: #param, ty: #f })
                }
                PayloadShape::Fields(fields) => {
                    let list = format_ident!("__NESTLING_TS_{}_FIELDS", method);
                    let count = fields.len();
                    let entries: Vec<_> = fields
                        .iter()
                        .enumerate()
                        .map(|(i, (field, param, ty))| {
                            let f = format_ident!("__nestling_ts_{}_field_{}", method, i);
                            fns.push(self.type_fn(&f, ty));
                            quote!(#n::contracts::FieldContract { field: #field, param: #param, ty: #f })
                        })
                        .collect();
                    statics.push(quote! {
                        #[allow(non_upper_case_globals)]
                        static #list: [#n::contracts::FieldContract; #count] = [#(#entries),*];
                    });
                    quote!(#n::contracts::PayloadContract::Fields(&#list))
                }
            };
            let reply_fn = format_ident!("__nestling_ts_{}_reply", method);
            let reply = match (&m.kind, &m.output) {
                (Kind::Event, _) | (_, Output::Unit) => quote!(#n::contracts::ReplyContract::Unit),
                (_, Output::Opaque) => quote!(#n::contracts::ReplyContract::Unknown),
                (_, Output::Result { ok, .. }) if is_unit(ok) => {
                    quote!(#n::contracts::ReplyContract::Unit)
                }
                (_, Output::Value(ty) | Output::Result { ok: ty, .. }) => {
                    fns.push(self.type_fn(&reply_fn, ty));
                    quote!(#n::contracts::ReplyContract::Value(#reply_fn))
                }
                (_, Output::Stream { item }) => {
                    let item = ast::result_parts(item).map_or_else(|| item.clone(), |(ok, _)| ok);
                    fns.push(self.type_fn(&reply_fn, &item));
                    quote!(#n::contracts::ReplyContract::Stream(#reply_fn))
                }
            };
            let kind = match m.kind {
                Kind::Message => quote!(#n::HandlerKind::Message),
                Kind::Event => quote!(#n::HandlerKind::Event),
            };
            let method_name = method.to_string();
            let pattern = &m.pattern_json;
            let docs = &m.docs;
            metas.push(quote! {
                #n::contracts::MethodContract {
                    kind: #kind,
                    method: #method_name,
                    pattern: #pattern,
                    docs: #docs,
                    payload: #payload,
                    reply: #reply,
                }
            });
        }
        let name = self.name.to_string();
        let docs = &self.docs;
        let count = metas.len();
        let wrap = quote_spanned!(self.span=> #n::with_contracts!);
        quote! {
            #wrap {
                #[doc(hidden)]
                const _: () = {
                    #(#fns)*
                    #(#statics)*

                    static __NESTLING_CONTRACT_METHODS: [#n::contracts::MethodContract; #count] =
                        [#(#metas),*];

                    static __NESTLING_CONTRACT: #n::contracts::ContractMeta =
                        #n::contracts::ContractMeta {
                            name: #name,
                            module_path: ::core::module_path!(),
                            docs: #docs,
                            methods: &__NESTLING_CONTRACT_METHODS,
                        };

                    #n::inventory::submit! {
                        #n::contracts::ContractEntry(&__NESTLING_CONTRACT)
                    }
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::{quote, ToTokens};

    /// The contracts of an impl block, pretty-printed.
    fn expand(item: TokenStream) -> String {
        let item: syn::ItemImpl = syn::parse2(item).unwrap();
        let controller = Controller::from_syn(item);
        let methods = controller_methods(&controller);
        let n = quote!(::nestling::__private);
        let name = controller.name.clone().unwrap();
        let attrs = &controller.item.attrs;
        let tokens = ContractGen::new(&n, &name, attrs, &methods, Span::call_site()).expand();
        // `with_contracts! { … }` around one `const _` item: print the macro's path, then
        // the item it keeps, formatted.
        let mac: syn::ItemMacro = syn::parse2(tokens.clone()).expect("one macro invocation");
        let path = mac.mac.path.to_token_stream().to_string();
        match syn::parse2::<syn::File>(mac.mac.tokens.clone()) {
            Ok(file) => format!("{path}! {{\n{}}}\n", prettyplease::unparse(&file)),
            Err(e) => panic!("expansion is not a valid file: {e}\n{tokens}"),
        }
    }

    /// Payload, reply and stream types each get a function naming them through ts-rs; the
    /// service is submitted to `inventory`, all inside `with_contracts!` (one clear error
    /// without the feature).
    #[test]
    fn contracts_of_a_controller() {
        let out = expand(quote! {
            /// Users.
            impl Users {
                /// Adds up the numbers.
                #[message_pattern({ cmd: "sum" })]
                fn sum(&self, nums: Vec<i64>) -> i64 { nums.iter().sum() }

                #[event_pattern("log")]
                fn log(&self, ctx: &Context, text: String) {}

                #[message_pattern("add")]
                fn add(&self, #[payload("a")] a: i64, #[payload("b")] r#b: i64) -> Result<i64, RpcException> { Ok(a + b) }

                #[message_pattern("count")]
                fn count(&self) -> impl Stream<Item = Result<u32, RpcException>> { todo!() }

                #[message_pattern("any")]
                fn any(&self) -> impl Serialize { 1 }
            }
        });
        insta::assert_snapshot!(out);
    }
}

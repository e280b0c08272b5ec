//! The controller as the macros see it: an impl block and its pattern-annotated methods.
//!
//! Parsing never reports: an attribute whose arguments do not parse is kept in the AST as
//! its error, and `valid` reports it with the other mistakes of the same item, so mistakes
//! come out in the order they were written.

use proc_macro2::{Span, TokenStream};
use quote::ToTokens;
use syn::spanned::Spanned;
use syn::{Attribute, FnArg, Ident, ImplItem, ItemImpl, ReturnType, Signature, Type};

use crate::attr::PatternArg;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Message,
    Event,
}

impl Kind {
    pub fn attr_name(self) -> &'static str {
        match self {
            Kind::Message => "message_pattern",
            Kind::Event => "event_pattern",
        }
    }
}

/// One parameter after the receiver.
// Compile-time only values: boxing the syn types would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum Param {
    /// The payload, deserialised from `data` (Nest's `@Payload()`; `#[payload]` or no
    /// attribute).
    Payload { ty: Type, span: Span },
    /// One property of the payload object (Nest's `@Payload('name')`;
    /// `#[payload("name")]`).
    Field {
        name: syn::LitStr,
        ty: Type,
        span: Span,
    },
    /// `&Context` or `Context` (Nest's `@Ctx()`; `#[ctx]` or no attribute).
    Context { by_ref: bool },
}

impl Param {
    /// The type decoded from `data`, for the payload and its properties.
    pub fn decoded_ty(&self) -> Option<&Type> {
        match self {
            Param::Payload { ty, .. } | Param::Field { ty, .. } => Some(ty),
            Param::Context { .. } => None,
        }
    }
}

/// A parameter attribute: `#[payload]`, `#[payload("field")]` or `#[ctx]`.
pub enum ParamAttr {
    Whole,
    Field(syn::LitStr),
    Ctx,
}

/// Removes `#[payload(..)]` and `#[ctx]` from a method's parameters; returns, for each
/// typed parameter in order, its attribute (`None` without one), and the mistakes found.
fn take_param_attrs(
    sig: &mut Signature,
) -> (Vec<Option<(ParamAttr, TokenStream)>>, Vec<syn::Error>) {
    let mut found = Vec::new();
    let mut errors = Vec::new();
    for arg in &mut sig.inputs {
        let FnArg::Typed(pt) = arg else { continue };
        let mut mine: Option<(ParamAttr, TokenStream)> = None;
        pt.attrs.retain(|attr| {
            let is_payload = attr.path().is_ident("payload");
            if !is_payload && !attr.path().is_ident("ctx") {
                return true;
            }
            let parsed = if is_payload {
                match &attr.meta {
                    syn::Meta::Path(_) => Ok(ParamAttr::Whole),
                    syn::Meta::List(list) => syn::parse2::<syn::LitStr>(list.tokens.clone())
                        .map(ParamAttr::Field)
                        .map_err(|_| {
                            syn::Error::new_spanned(
                                &list.tokens,
                                "#[payload(..)] takes the name of a payload property as a string literal, e.g. #[payload(\"id\")] (Nest's @Payload('id')); write #[payload] for the whole payload",
                            )
                        }),
                    syn::Meta::NameValue(_) => Err(syn::Error::new_spanned(
                        attr,
                        "write #[payload(\"id\")] for one property of the payload, or #[payload] for all of it",
                    )),
                }
            } else {
                match &attr.meta {
                    syn::Meta::Path(_) => Ok(ParamAttr::Ctx),
                    _ => Err(syn::Error::new_spanned(
                        attr,
                        "#[ctx] takes no arguments (Nest's @Ctx()): put it on the `&Context` parameter",
                    )),
                }
            };
            match parsed {
                Ok(_) if mine.is_some() => {
                    errors.push(syn::Error::new_spanned(
                        attr,
                        "a parameter takes one of #[payload], #[payload(\"field\")] or #[ctx]; remove this one",
                    ));
                }
                Ok(p) => mine = Some((p, attr.to_token_stream())),
                Err(e) => errors.push(e),
            }
            false
        });
        found.push(mine);
    }
    (found, errors)
}

/// Classifies a typed parameter from its type and attribute; a mistake is reported and the
/// parameter classified by its type alone.
fn classify_param(
    ty: &Type,
    attr: Option<&(ParamAttr, TokenStream)>,
    errors: &mut Vec<syn::Error>,
) -> Param {
    let by_type = parse_handler_param(ty);
    let is_context = matches!(by_type, Param::Context { .. });
    match attr {
        None => by_type,
        Some((ParamAttr::Ctx, _)) if is_context => by_type,
        Some((ParamAttr::Ctx, _)) => {
            errors.push(syn::Error::new_spanned(
                ty,
                "#[ctx] marks the context parameter (Nest's @Ctx()): its type must be `&Context` or `Context`",
            ));
            by_type
        }
        Some((_, tokens)) if is_context => {
            errors.push(syn::Error::new_spanned(
                tokens,
                "#[payload] cannot take the context: the `&Context` parameter is filled on its own (or mark it #[ctx])",
            ));
            by_type
        }
        Some((ParamAttr::Whole, _)) => by_type,
        Some((ParamAttr::Field(name), _)) => Param::Field {
            name: name.clone(),
            ty: ty.clone(),
            span: ty.span(),
        },
    }
}

/// What the method returns, as far as dispatch cares.
#[allow(clippy::large_enum_variant)]
#[derive(Clone)]
pub enum Output {
    /// No return type or `()`: Nest's `undefined` reply.
    Unit,
    /// Any serialisable value.
    Value(Type),
    /// `-> impl Trait`: serialised without naming the type.
    Opaque,
    /// `Result<T, E>` (or an alias `Result<T>`): `Ok` is the reply, `Err` the error.
    Result { ok: Type, err: Option<Type> },
    /// `impl Stream<Item = T>` or `BoxStream<'_, T>`: each item is its own reply packet.
    /// With `T = Result<V, E>`, an `Err` item ends the stream with Nest's error packet.
    Stream { item: Type },
}

/// The `Item` of `impl Stream<Item = T>` or the `T` of `BoxStream<'a, T>`.
fn stream_item(ty: &Type) -> Option<Type> {
    match ty {
        Type::ImplTrait(it) => it.bounds.iter().find_map(|b| {
            let syn::TypeParamBound::Trait(t) = b else {
                return None;
            };
            let last = t.path.segments.last()?;
            if last.ident != "Stream" {
                return None;
            }
            let syn::PathArguments::AngleBracketed(args) = &last.arguments else {
                return None;
            };
            args.args.iter().find_map(|a| match a {
                syn::GenericArgument::AssocType(at) if at.ident == "Item" => Some(at.ty.clone()),
                _ => None,
            })
        }),
        Type::Path(p) => {
            let last = p.path.segments.last()?;
            if last.ident != "BoxStream" {
                return None;
            }
            let syn::PathArguments::AngleBracketed(args) = &last.arguments else {
                return None;
            };
            args.args.iter().find_map(|a| match a {
                syn::GenericArgument::Type(t) => Some(t.clone()),
                _ => None,
            })
        }
        _ => None,
    }
}

/// `Some((ok, err))` when `ty` is written `Result<ok, err>` (or `Result<ok>`).
pub fn result_parts(ty: &Type) -> Option<(Type, Option<Type>)> {
    let Type::Path(p) = ty else { return None };
    let last = p.path.segments.last()?;
    if last.ident != "Result" {
        return None;
    }
    let syn::PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    let mut types = args.args.iter().filter_map(|a| match a {
        syn::GenericArgument::Type(t) => Some(t.clone()),
        _ => None,
    });
    let ok = types.next()?;
    Some((ok, types.next()))
}

pub struct Handler {
    pub kind: Kind,
    pub pattern: PatternArg,
    pub method: Ident,
    pub is_async: bool,
    pub params: Vec<Param>,
    pub output: Output,
    pub line: usize,
    /// The method's signature as written, for `valid` to blame the exact tokens.
    pub sig: Signature,
}

/// An item of the impl block that carried pattern attributes.
pub struct Member {
    /// Its pattern attributes whose arguments did not parse, in written order.
    pub malformed: Vec<syn::Error>,
    pub kind: MemberKind,
}

// Compile-time only values: boxing the syn types would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum MemberKind {
    /// A method: the handler its first well-formed pattern attribute declares (`None` when
    /// it has none), and the well-formed pattern attributes after that one.
    Method {
        handler: Option<Handler>,
        extra: Vec<PatternAttr>,
    },
    /// An associated const or type, which cannot be a handler.
    Other { misplaced: Vec<PatternAttr> },
}

pub struct Controller {
    /// The impl block, without its pattern attributes.
    pub item: ItemImpl,
    /// Last path segment of the self type, e.g. `UserController`; `None` when the self type
    /// is not a path.
    pub name: Option<Ident>,
    /// The items that carried pattern attributes, in written order.
    pub members: Vec<Member>,
}

impl Controller {
    /// Parses the impl block, stripping pattern attributes from its items.
    pub fn from_syn(mut item: ItemImpl) -> Controller {
        let name = match &*item.self_ty {
            Type::Path(p) => p.path.segments.last().map(|s| s.ident.clone()),
            _ => None,
        };
        let mut members = Vec::new();
        for impl_item in &mut item.items {
            let mut param_attrs = (Vec::new(), Vec::new());
            let (attrs, method) = match impl_item {
                ImplItem::Fn(method) => {
                    param_attrs = take_param_attrs(&mut method.sig);
                    (take_pattern_attrs(&mut method.attrs), Some(&method.sig))
                }
                ImplItem::Const(c) => (take_pattern_attrs(&mut c.attrs), None),
                ImplItem::Type(t) => (take_pattern_attrs(&mut t.attrs), None),
                _ => continue,
            };
            let (param_attrs, mut param_errors) = param_attrs;
            if attrs.is_empty() {
                if param_attrs.iter().any(Option::is_some) {
                    if let Some(sig) = method {
                        param_errors.push(syn::Error::new_spanned(
                            &sig.ident,
                            "#[payload] and #[ctx] mark parameters of a handler: add #[message_pattern(..)] or #[event_pattern(..)] to this method",
                        ));
                    }
                }
                if !param_errors.is_empty() {
                    members.push(Member {
                        malformed: param_errors,
                        kind: MemberKind::Method {
                            handler: None,
                            extra: Vec::new(),
                        },
                    });
                }
                continue;
            }
            let (mut malformed, mut attrs) = split_malformed(attrs);
            let kind = match method {
                Some(sig) => {
                    let handler = (!attrs.is_empty()).then(|| {
                        let (kind, pattern, _) = attrs.remove(0);
                        parse_handler(kind, pattern, sig, &param_attrs, &mut param_errors)
                    });
                    malformed.append(&mut param_errors);
                    MemberKind::Method {
                        handler,
                        extra: attrs,
                    }
                }
                None => MemberKind::Other { misplaced: attrs },
            };
            members.push(Member { malformed, kind });
        }
        Controller {
            item,
            name,
            members,
        }
    }

    /// The handlers, in written order.
    pub fn handlers(&self) -> impl Iterator<Item = &Handler> {
        self.members.iter().filter_map(|m| match &m.kind {
            MemberKind::Method { handler, .. } => handler.as_ref(),
            MemberKind::Other { .. } => None,
        })
    }
}

/// A pattern attribute found on an item: its kind, its argument, and its tokens for
/// error spans.
pub type PatternAttr = (Kind, PatternArg, proc_macro2::TokenStream);

/// Removes `#[message_pattern(..)]` / `#[event_pattern(..)]` (bare or with a path ending in
/// those names) from an item and returns them in written order; an `Err` is an attribute
/// whose arguments did not parse.
pub fn take_pattern_attrs(attrs: &mut Vec<Attribute>) -> Vec<syn::Result<PatternAttr>> {
    let mut found = Vec::new();
    attrs.retain(|attr| {
        let Some(last) = attr.path().segments.last() else {
            return true;
        };
        let kind = if last.ident == "message_pattern" {
            Kind::Message
        } else if last.ident == "event_pattern" {
            Kind::Event
        } else {
            return true;
        };
        found.push(match attr.parse_args::<PatternArg>() {
            Ok(p) => Ok((kind, p, attr.to_token_stream())),
            Err(e) => match &attr.meta {
                syn::Meta::List(_) => Err(e),
                _ => Err(syn::Error::new_spanned(
                    attr,
                    format!(
                        "#[{}] needs a pattern, e.g. #[{}(\"sum\")]",
                        kind.attr_name(),
                        kind.attr_name()
                    ),
                )),
            },
        });
        false
    });
    found
}

/// The errors and the well-formed attributes of `take_pattern_attrs`, each in written order.
pub fn split_malformed(
    attrs: Vec<syn::Result<PatternAttr>>,
) -> (Vec<syn::Error>, Vec<PatternAttr>) {
    let mut malformed = Vec::new();
    let mut well_formed = Vec::new();
    for attr in attrs {
        match attr {
            Ok(a) => well_formed.push(a),
            Err(e) => malformed.push(e),
        }
    }
    (malformed, well_formed)
}

fn last_ident_is(ty: &Type, name: &str) -> bool {
    match ty {
        Type::Path(p) => p.path.segments.last().is_some_and(|s| s.ident == name),
        _ => false,
    }
}

/// Classifies a parameter type: `&Context` / `Context` is the context, anything else the
/// payload.
pub fn parse_handler_param(ty: &Type) -> Param {
    match ty {
        Type::Reference(r) if last_ident_is(&r.elem, "Context") => Param::Context { by_ref: true },
        t if last_ident_is(t, "Context") => Param::Context { by_ref: false },
        t => Param::Payload {
            ty: t.clone(),
            span: t.span(),
        },
    }
}

pub fn classify_output(ret: &ReturnType) -> Output {
    let ty = match ret {
        ReturnType::Default => return Output::Unit,
        ReturnType::Type(_, ty) => &**ty,
    };
    if let Some(item) = stream_item(ty) {
        return Output::Stream { item };
    }
    match ty {
        Type::Tuple(t) if t.elems.is_empty() => Output::Unit,
        Type::ImplTrait(_) => Output::Opaque,
        _ => match result_parts(ty) {
            Some((ok, err)) => Output::Result { ok, err },
            None => Output::Value(ty.clone()),
        },
    }
}

/// Line of a span in the user's file (1-based), for startup error messages.
pub fn line_of(span: Span) -> usize {
    span.start().line
}

/// Parses the method's signature (its parameter attributes already taken off, in
/// `attrs`); shape checks live in `valid`.
fn parse_handler(
    kind: Kind,
    pattern: PatternArg,
    sig: &Signature,
    attrs: &[Option<(ParamAttr, TokenStream)>],
    errors: &mut Vec<syn::Error>,
) -> Handler {
    let params = sig
        .inputs
        .iter()
        .filter_map(|arg| match arg {
            FnArg::Receiver(_) => None,
            FnArg::Typed(pt) => Some(pt),
        })
        .enumerate()
        .map(|(i, pt)| classify_param(&pt.ty, attrs.get(i).and_then(Option::as_ref), errors))
        .collect();
    Handler {
        kind,
        pattern,
        method: sig.ident.clone(),
        is_async: sig.asyncness.is_some(),
        params,
        output: classify_output(&sig.output),
        line: line_of(sig.ident.span()),
        sig: sig.clone(),
    }
}

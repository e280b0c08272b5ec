//! The controller as the macros see it: an impl block and its pattern-annotated methods.
//!
//! Parsing never reports: an attribute whose arguments do not parse is kept in the AST as
//! its error, and `valid` reports it with the other mistakes of the same item, so mistakes
//! come out in the order they were written.

use proc_macro2::Span;
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
    /// The payload, deserialised from `data`.
    Payload { ty: Type, span: Span },
    /// `&Context` or `Context`.
    Context { by_ref: bool },
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
            let (attrs, method) = match impl_item {
                ImplItem::Fn(method) => (take_pattern_attrs(&mut method.attrs), Some(&method.sig)),
                ImplItem::Const(c) => (take_pattern_attrs(&mut c.attrs), None),
                ImplItem::Type(t) => (take_pattern_attrs(&mut t.attrs), None),
                _ => continue,
            };
            if attrs.is_empty() {
                continue;
            }
            let (malformed, mut attrs) = split_malformed(attrs);
            let kind = match method {
                Some(sig) => {
                    let handler = (!attrs.is_empty()).then(|| {
                        let (kind, pattern, _) = attrs.remove(0);
                        parse_handler(kind, pattern, sig)
                    });
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

/// Parses the method's signature; shape checks live in `valid`.
fn parse_handler(kind: Kind, pattern: PatternArg, sig: &Signature) -> Handler {
    let params = sig
        .inputs
        .iter()
        .filter_map(|arg| match arg {
            FnArg::Receiver(_) => None,
            FnArg::Typed(pt) => Some(parse_handler_param(&pt.ty)),
        })
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

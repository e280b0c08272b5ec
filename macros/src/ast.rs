//! The controller as the macros see it: an impl block and its pattern-annotated methods.

use proc_macro2::Span;
use quote::ToTokens;
use syn::spanned::Spanned;
use syn::{Attribute, FnArg, Ident, ImplItem, ImplItemFn, ItemImpl, ReturnType, Type};

use crate::attr::PatternArg;
use crate::ctxt::Ctxt;

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
}

pub struct Controller {
    /// `layer = f` arguments of `#[nestling::controller]`.
    pub layers: Vec<syn::Path>,
    pub item: ItemImpl,
    /// Last path segment of the self type, e.g. `UserController`.
    pub name: Ident,
    pub handlers: Vec<Handler>,
}

/// Finds `#[message_pattern(..)]` / `#[event_pattern(..)]` (bare or with a path ending in
/// those names) and removes them from the method.
/// Whether any attribute is a pattern attribute (valid or not).
pub fn has_pattern_attr(attrs: &[Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path()
            .segments
            .last()
            .is_some_and(|s| s.ident == "message_pattern" || s.ident == "event_pattern")
    })
}

/// A pattern attribute found on an item: its kind, its argument, and its tokens for
/// error spans.
pub type PatternAttr = (Kind, PatternArg, proc_macro2::TokenStream);

pub fn take_pattern_attrs(cx: &Ctxt, attrs: &mut Vec<Attribute>) -> Vec<PatternAttr> {
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
        match attr.parse_args::<PatternArg>() {
            Ok(p) => found.push((kind, p, attr.to_token_stream())),
            Err(e) => match &attr.meta {
                syn::Meta::List(_) => cx.error(e),
                _ => cx.error_at(
                    attr,
                    format!(
                        "#[{}] needs a pattern, e.g. #[{}(\"sum\")]",
                        kind.attr_name(),
                        kind.attr_name()
                    ),
                ),
            },
        }
        false
    });
    found
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
pub fn parse_handler(kind: Kind, pattern: PatternArg, method: &ImplItemFn) -> Handler {
    let sig = &method.sig;
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
    }
}

/// Parses the impl block, stripping pattern attributes from its methods.
pub fn parse_controller(cx: &Ctxt, mut item: ItemImpl) -> Option<Controller> {
    let name = match &*item.self_ty {
        Type::Path(p) => p.path.segments.last().map(|s| s.ident.clone()),
        _ => None,
    };
    let mut handlers = Vec::new();
    for impl_item in &mut item.items {
        match impl_item {
            ImplItem::Fn(method) => {
                let attrs = take_pattern_attrs(cx, &mut method.attrs);
                let mut attrs = attrs.into_iter();
                if let Some((kind, pattern, _)) = attrs.next() {
                    crate::valid::check_signature(cx, kind, method);
                    handlers.push(parse_handler(kind, pattern, method));
                }
                for (kind, _, tokens) in attrs {
                    cx.error(syn::Error::new_spanned(
                        tokens,
                        format!("a handler takes one pattern attribute; this #[{}] is one too many: give it its own method", kind.attr_name()),
                    ));
                }
            }
            ImplItem::Const(c) => reject_stray(cx, &mut c.attrs),
            ImplItem::Type(t) => reject_stray(cx, &mut t.attrs),
            _ => {}
        }
    }
    let Some(name) = name else {
        cx.error_at(
            &item.self_ty,
            "#[nestling::controller] needs a named type, e.g. `impl UserController { .. }`",
        );
        return None;
    };
    Some(Controller {
        layers: Vec::new(),
        item,
        name,
        handlers,
    })
}

fn reject_stray(cx: &Ctxt, attrs: &mut Vec<Attribute>) {
    for (kind, _, tokens) in take_pattern_attrs(cx, attrs) {
        cx.error(syn::Error::new_spanned(
            tokens,
            format!(
                "#[{}] belongs on a method of the controller",
                kind.attr_name()
            ),
        ));
    }
}

//! Parsing of pattern attribute arguments into JSON.
//!
//! `#[message_pattern("sum")]`, `#[message_pattern(42)]` and
//! `#[message_pattern({ cmd: "sum", version: 2 })]` all become JSON text that the runtime
//! normalises exactly as Nest does.

use proc_macro2::TokenStream;
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream};
use syn::{braced, bracketed, Ident, Lit, LitStr, Token};

/// A JSON value written in Rust token syntax.
#[derive(Debug, Clone)]
pub enum JsonLit {
    Str(String),
    /// Number as its canonical decimal text.
    Num(String),
    Bool(bool),
    Null,
    Array(Vec<JsonLit>),
    /// Keys keep the order written: `send` puts the pattern on the wire as given.
    Object(Vec<(String, JsonLit)>),
}

/// What a pattern attribute holds: the value and its tokens (to blame the whole
/// pattern, not just its first token, on stable Rust).
#[derive(Debug, Clone)]
pub struct PatternArg {
    pub value: JsonLit,
    pub tokens: TokenStream,
    /// `layer = path` arguments after the pattern: functions returning middleware.
    pub layers: Vec<syn::Path>,
    /// `filter = path` arguments after the pattern: functions returning exception filters.
    pub filters: Vec<syn::Path>,
    /// `validate` after the pattern: the payload is validated before the handler runs.
    pub validate: Option<Ident>,
}

const EXPECTED: &str =
    "expected a pattern: a string such as \"sum\", a number, or an object such as { cmd: \"sum\" }";

impl Parse for PatternArg {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        if input.is_empty() {
            return Err(syn::Error::new(input.span(), EXPECTED));
        }
        // The pattern's own tokens: everything up to a top-level `,`.
        let tokens: TokenStream = input.step(|cursor| {
            let mut rest = *cursor;
            let mut taken = TokenStream::new();
            while let Some((tt, next)) = rest.token_tree() {
                if matches!(&tt, proc_macro2::TokenTree::Punct(p) if p.as_char() == ',') {
                    break;
                }
                taken.extend([tt]);
                rest = next;
            }
            Ok((taken, rest))
        })?;
        let value = syn::parse::Parser::parse2(
            |stream: ParseStream| {
                let v = parse_value(stream)?;
                if !stream.is_empty() {
                    return Err(stream
                        .error("unexpected tokens after the pattern; give exactly one pattern"));
                }
                Ok(v)
            },
            tokens.clone(),
        )?;
        let mut layers = Vec::new();
        let mut filters = Vec::new();
        let mut validate = None;
        while !input.is_empty() {
            input.parse::<Token![,]>()?;
            if input.is_empty() {
                break;
            }
            let key: Ident = input.parse()?;
            if key == "validate" {
                validate = Some(key);
                continue;
            }
            let list = match () {
                () if key == "layer" => &mut layers,
                () if key == "filter" => &mut filters,
                () => {
                    return Err(syn::Error::new(
                        key.span(),
                        "expected `layer = path::to::fn` or `filter = path::to::fn` after the pattern (one pattern per handler)",
                    ))
                }
            };
            input.parse::<Token![=]>()?;
            list.push(input.parse::<syn::Path>().map_err(|e| {
                syn::Error::new(
                    e.span(),
                    format!(
                        "expected the path of a function after `{key} =`, e.g. `{key} = my_{key}`"
                    ),
                )
            })?);
        }
        Ok(PatternArg {
            value,
            tokens,
            layers,
            filters,
            validate,
        })
    }
}

fn parse_value(input: ParseStream) -> syn::Result<JsonLit> {
    if input.peek(syn::token::Brace) {
        let content;
        braced!(content in input);
        let mut entries: Vec<(String, JsonLit)> = Vec::new();
        while !content.is_empty() {
            let key = if content.peek(LitStr) {
                content.parse::<LitStr>()?.value()
            } else if content.peek(Ident::peek_any) {
                let ident = Ident::parse_any(&content)?;
                ident.to_string().trim_start_matches("r#").to_owned()
            } else {
                return Err(content.error("expected an object key: an identifier or a string"));
            };
            content.parse::<Token![:]>()?;
            let value = parse_value(&content)?;
            // JSON.parse keeps the last of duplicate keys; so does this.
            entries.retain(|(k, _)| *k != key);
            entries.push((key, value));
            if content.is_empty() {
                break;
            }
            content.parse::<Token![,]>()?;
        }
        return Ok(JsonLit::Object(entries));
    }
    if input.peek(syn::token::Bracket) {
        let content;
        bracketed!(content in input);
        let items = content.parse_terminated(parse_value, Token![,])?;
        return Ok(JsonLit::Array(items.into_iter().collect()));
    }
    if input.peek(Token![-]) {
        input.parse::<Token![-]>()?;
        return match parse_value(input)? {
            JsonLit::Num(n) => Ok(JsonLit::Num(format!("-{n}"))),
            _ => Err(input.error("`-` must be followed by a number")),
        };
    }
    if input.peek(Ident) {
        let ident: Ident = input.parse()?;
        return if ident == "null" {
            Ok(JsonLit::Null)
        } else {
            Err(syn::Error::new(ident.span(), EXPECTED))
        };
    }
    match input.parse::<Lit>() {
        Ok(Lit::Str(s)) => Ok(JsonLit::Str(s.value())),
        Ok(Lit::Bool(b)) => Ok(JsonLit::Bool(b.value)),
        Ok(Lit::Int(i)) => {
            if !i.suffix().is_empty() {
                return Err(syn::Error::new(
                    i.span(),
                    "write pattern numbers without a type suffix",
                ));
            }
            Ok(JsonLit::Num(i.base10_digits().to_owned()))
        }
        Ok(Lit::Float(f)) => {
            if !f.suffix().is_empty() {
                return Err(syn::Error::new(
                    f.span(),
                    "write pattern numbers without a type suffix",
                ));
            }
            Ok(JsonLit::Num(f.base10_digits().to_owned()))
        }
        Ok(other) => Err(syn::Error::new(other.span(), EXPECTED)),
        Err(e) => Err(syn::Error::new(e.span(), EXPECTED)),
    }
}

impl JsonLit {
    /// The patterns a handler is registered under. Like Nest's `@MessagePattern([a, b])`
    /// (`[].concat(metadata)`), a top-level array means one registration per element.
    pub fn routes(&self) -> Vec<&JsonLit> {
        match self {
            JsonLit::Array(items) => items.iter().collect(),
            other => vec![other],
        }
    }

    /// JSON text, keys in written order.
    pub fn to_json(&self) -> String {
        let mut out = String::new();
        self.write(&mut out, false);
        out
    }

    /// A canonical form (object keys sorted) to detect duplicate patterns in one impl.
    pub fn canonical(&self) -> String {
        let mut out = String::new();
        self.write(&mut out, true);
        out
    }

    fn write(&self, out: &mut String, sorted: bool) {
        match self {
            JsonLit::Str(s) => write_json_string(s, out),
            JsonLit::Num(n) => out.push_str(n),
            JsonLit::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            JsonLit::Null => out.push_str("null"),
            JsonLit::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.write(out, sorted);
                }
                out.push(']');
            }
            JsonLit::Object(entries) => {
                let mut entries: Vec<&(String, JsonLit)> = entries.iter().collect();
                if sorted {
                    entries.sort_by(|a, b| a.0.cmp(&b.0));
                }
                out.push('{');
                for (i, (k, v)) in entries.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write_json_string(k, out);
                    out.push(':');
                    v.write(out, sorted);
                }
                out.push('}');
            }
        }
    }
}

fn write_json_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(src: &str) -> String {
        syn::parse_str::<PatternArg>(src).unwrap().value.to_json()
    }

    #[test]
    fn parses_every_pattern_form() {
        assert_eq!(json(r#""sum""#), r#""sum""#);
        assert_eq!(json("42"), "42");
        assert_eq!(json("-1.5"), "-1.5");
        assert_eq!(json(r#"{ cmd: "sum", b: 1 }"#), r#"{"cmd":"sum","b":1}"#);
        assert_eq!(
            json(r#"{ "a-b": [1, "x", null, true], n: { z: false } }"#),
            r#"{"a-b":[1,"x",null,true],"n":{"z":false}}"#
        );
        assert_eq!(
            json(r#""quote\" and \\ and \n""#),
            r#""quote\" and \\ and \n""#
        );
    }

    #[test]
    fn canonical_form_ignores_key_order() {
        let a = syn::parse_str::<PatternArg>(r#"{ cmd: "sum", b: 1 }"#).unwrap();
        let b = syn::parse_str::<PatternArg>(r#"{ b: 1, cmd: "sum" }"#).unwrap();
        assert_eq!(a.value.canonical(), b.value.canonical());
    }

    #[test]
    fn rejects_other_tokens() {
        assert!(syn::parse_str::<PatternArg>("").is_err());
        assert!(syn::parse_str::<PatternArg>("sum").is_err());
        assert!(syn::parse_str::<PatternArg>(r#""a" "b""#).is_err());
        assert!(syn::parse_str::<PatternArg>("1u8").is_err());
    }
}

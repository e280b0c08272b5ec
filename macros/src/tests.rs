//! Expansion snapshots: what `#[nestling::controller]` and `#[nestling::client]` generate,
//! pretty-printed. Review a changed snapshot as carefully as the code change behind it:
//! every path must be absolute (`::nestling::__private::…`, `::core::…`) and the server
//! side must stay inside one `const _: () = { … };`.
//!
//! Regenerate with `INSTA_UPDATE=always cargo test -p nestling-macros` (or `cargo insta
//! review`), then read the `.snap` diffs.

use proc_macro2::TokenStream;
use quote::quote;

/// Parses generated tokens as a file and pretty-prints them; panics (with the tokens)
/// when the expansion is not valid Rust syntax.
fn pretty(tokens: TokenStream) -> String {
    match syn::parse2::<syn::File>(tokens.clone()) {
        Ok(file) => prettyplease::unparse(&file),
        Err(e) => panic!("expansion is not a valid file: {e}\n{tokens}"),
    }
}

fn controller(args: TokenStream, item: TokenStream) -> String {
    pretty(crate::expand::controller(args, item))
}

fn client(args: TokenStream, item: TokenStream) -> String {
    pretty(crate::expand::remote_client(args, item))
}

/// The tutorial's user service: a message and an event handler.
#[test]
fn tutorial_user_controller() {
    let out = controller(
        quote!(),
        quote! {
            impl UserController {
                /// Adds up the numbers.
                #[message_pattern("sum")]
                fn sum(&self, nums: Vec<i64>) -> i64 {
                    nums.iter().sum()
                }

                #[event_pattern("log")]
                fn log(&self, text: String) {
                    println!("{text}");
                }
            }
        },
    );
    assert!(out.contains("const _: () = {"), "{out}");
    assert!(
        !out.contains("message_pattern"),
        "pattern attributes must be consumed:\n{out}"
    );
    insta::assert_snapshot!("tutorial_user_controller", out);
}

/// Parameter decorators and validation: `#[payload("field")]` properties (one scan of the
/// payload, a property read twice scanned once), `#[ctx]`, a whole payload beside them, and
/// `validate` (the entry always validates; no entry for the server's `validate_payloads`).
#[test]
fn payload_fields_and_validate() {
    let out = controller(
        quote!(),
        quote! {
            impl Users {
                #[message_pattern("get_user")]
                fn get_user(&self, #[payload("id")] Parse(id): Parse<u64>, #[payload("name")] name: Option<String>, #[ctx] ctx: &Context) -> String {
                    format!("{id} {name:?} {}", ctx.pattern())
                }

                #[message_pattern("create_user", validate)]
                async fn create_user(&self, #[payload] user: NewUser, #[payload("name")] name: String, #[payload("name")] again: String) -> bool {
                    true
                }
            }
        },
    );
    assert!(
        !out.contains("#[payload"),
        "parameter attributes must be consumed:\n{out}"
    );
    assert!(
        !out.contains("#[ctx"),
        "parameter attributes must be consumed:\n{out}"
    );
    insta::assert_snapshot!("payload_fields_and_validate", out);
}

/// Exception filters on the controller and on a handler: one `fn() -> Filter` each, named
/// in the metadata in the order written; spanned on the user's paths.
#[test]
fn controller_with_filters() {
    let out = controller(
        quote!(filter = not_found, filter = errors::everything),
        quote! {
            impl Users {
                #[message_pattern("find_user", filter = only_here)]
                fn find_user(&self, id: u32) -> Result<u32, NotFound> {
                    Err(NotFound(id))
                }
            }
        },
    );
    assert!(
        out.contains("fn __nestling_filter_0() -> ::nestling::__private::Filter"),
        "{out}"
    );
    assert!(
        out.contains("filters: &[__nestling_filter_find_user_0]"),
        "{out}"
    );
    assert!(
        out.contains("filters: &[__nestling_filter_0, __nestling_filter_1]"),
        "{out}"
    );
    insta::assert_snapshot!("controller_with_filters", out);
}

/// `async`, `&Context`, `Result<T, RpcException>`, `Context` by value and a
/// payload-less handler.
#[test]
fn async_context_result_handler() {
    let out = controller(
        quote!(),
        quote! {
            impl Accounts {
                #[message_pattern("balance")]
                async fn balance(&self, ctx: &Context, id: u64) -> Result<Balance, RpcException> {
                    let _ = ctx.peer_addr();
                    self.lookup(id).await.ok_or_else(|| RpcException::new("no such account"))
                }

                #[message_pattern("ping")]
                async fn ping(&self, ctx: nestling::Context) -> Result<(), std::io::Error> {
                    let _ = ctx;
                    Ok(())
                }

                #[event_pattern("audit")]
                async fn audit(&self) -> impl serde::Serialize {
                    1
                }

                fn helper(&self) {}
            }
        },
    );
    insta::assert_snapshot!("async_context_result_handler", out);
}

/// Object patterns become JSON text with the keys in written order.
#[test]
fn object_pattern() {
    let out = controller(
        quote!(),
        quote! {
            impl MathController {
                #[message_pattern({ cmd: "sum", v: 2 })]
                fn sum(&self, nums: Vec<i64>) -> i64 {
                    nums.iter().sum()
                }

                #[message_pattern({ "cmd": "neg", nested: { ok: true, n: -1.5, xs: [1, null] } })]
                fn neg(&self, n: i64) -> i64 {
                    -n
                }
            }
        },
    );
    assert!(out.contains(r#"{\"cmd\":\"sum\",\"v\":2}"#), "{out}");
    insta::assert_snapshot!("object_pattern", out);
}

/// Streamed replies: `impl Stream<Item = T>`, `BoxStream<'_, T>` and `Result` items;
/// the client gets `ReplyStream<T>` methods.
#[test]
fn stream_handlers() {
    let out = controller(
        quote!(),
        quote! {
            impl Ticker {
                #[message_pattern("count")]
                fn count(&self, n: u32) -> impl Stream<Item = u32> {
                    stream::iter(1..=n)
                }

                #[message_pattern("ticks")]
                async fn ticks(&self, n: u32) -> BoxStream<'static, Tick> {
                    self.ticks_until(n).boxed()
                }

                #[message_pattern({ cmd: "fallible" })]
                fn fallible(&self) -> impl futures::Stream<Item = Result<u32, RpcException>> + Send {
                    stream::empty()
                }
            }
        },
    );
    assert!(out.contains("reply_stream::<u32, _>"), "{out}");
    assert!(
        out.contains("reply_try_stream::<u32, RpcException, _>"),
        "{out}"
    );
    assert!(out.contains("send_stream::<"), "{out}");
    insta::assert_snapshot!("stream_handlers", out);
}

/// `client = false`: no `{Name}Client`.
#[test]
fn controller_without_client() {
    let out = controller(
        quote!(client = false),
        quote! {
            impl UserController {
                #[message_pattern("sum")]
                fn sum(&self, nums: Vec<i64>) -> i64 {
                    nums.iter().sum()
                }
            }
        },
    );
    assert!(!out.contains("UserControllerClient"), "{out}");
    insta::assert_snapshot!("controller_without_client", out);
}

/// `crate = "…"` replaces `::nestling` in every generated path.
#[test]
fn controller_with_crate_path() {
    let out = controller(
        quote!(crate = "::my_app::deps::nestling", client = false),
        quote! {
            impl UserController {
                #[event_pattern("log")]
                fn log(&self, text: String) {}
            }
        },
    );
    assert!(out.contains("::my_app::deps::nestling::__private"), "{out}");
    let rest = out.replace("::my_app::deps::nestling::", "");
    assert!(!rest.contains("nestling::"), "{out}");
    insta::assert_snapshot!("controller_with_crate_path", out);
}

/// A trait declaring a remote (NestJS) service's patterns.
#[test]
fn remote_client_trait() {
    let out = client(
        quote!(),
        quote! {
            /// The NestJS user service.
            pub trait UserService {
                /// Adds up the numbers.
                #[message_pattern("sum")]
                async fn sum(nums: Vec<i64>) -> i64;

                #[message_pattern({ cmd: "whoami" })]
                async fn whoami(&self) -> Result<&str, RpcException>;

                #[message_pattern("ping")]
                async fn ping(&self);

                #[event_pattern("log")]
                async fn log(text: String);
            }
        },
    );
    assert!(out.contains("pub struct UserServiceClient"), "{out}");
    assert!(!out.contains("trait UserService"), "{out}");
    insta::assert_snapshot!("remote_client_trait", out);
}

/// On a mistake the user's impl is still emitted (so it type-checks and nothing else
/// errors) next to one `compile_error!` per mistake, with an empty registration (so
/// `Server::builder().controller(..)` still type-checks) and no client.
#[test]
fn errors_keep_the_users_impl() {
    let out = crate::expand::controller(
        quote!(),
        quote! {
            impl UserController {
                #[message_pattern("sum")]
                fn sum(&self, a: Vec<i64>, b: Vec<i64>) -> i64 {
                    0
                }

                #[message_pattern("sum")]
                fn sum_again(self) -> i64 {
                    0
                }

                fn helper(&self) -> u8 {
                    1
                }
            }
        },
    );
    let text = out.to_string();
    assert!(text.contains("impl UserController"), "{text}");
    assert!(text.contains("fn helper"), "{text}");
    assert!(!text.contains("message_pattern"), "{text}");
    assert!(text.contains("HandlerMeta ; 0usize] = []"), "{text}");
    assert!(!text.contains("__nestling_call_"), "{text}");
    assert!(!text.contains("__nestling_now_"), "{text}");
    assert!(!text.contains("UserControllerClient"), "{text}");
    // Two payloads, `self` by value, duplicate pattern.
    assert_eq!(text.matches("compile_error").count(), 3, "{text}");
    insta::assert_snapshot!("errors_keep_the_users_impl", pretty(out));
}

/// Mistakes come out item by item in the order written, whichever step finds them: an
/// attribute that does not parse, a signature, an attribute too many, a misplaced
/// attribute, then what only the whole impl block shows (duplicate patterns).
#[test]
fn mistakes_are_reported_in_the_order_written() {
    let out = crate::expand::controller(
        quote!(),
        quote! {
            impl UserController {
                #[message_pattern("a")]
                fn a(self) {}

                #[message_pattern(nope)]
                fn b(&self) {}

                #[message_pattern(oops oops)]
                #[message_pattern("c")]
                #[event_pattern("d")]
                fn c(&self, x: &str) {}

                #[event_pattern("e")]
                const E: u8 = 1;

                #[message_pattern("a")]
                fn a_again(&self) {}
            }
        },
    );
    let file = syn::parse2::<syn::File>(out).expect("valid expansion");
    let messages: Vec<String> = file
        .items
        .iter()
        .filter_map(|item| match item {
            syn::Item::Macro(m) if m.mac.path.segments.last().unwrap().ident == "compile_error" => {
                Some(m.mac.parse_body::<syn::LitStr>().unwrap().value())
            }
            _ => None,
        })
        .map(|m| m.split([':', ',']).next().unwrap().to_owned())
        .collect();
    assert_eq!(
        messages,
        [
            "handlers take `&self`",
            "expected a pattern",
            "expected a pattern",
            "a payload is decoded into an owned value",
            "a handler takes one pattern attribute; this #[event_pattern] is one too many",
            "#[event_pattern] belongs on a method of the controller",
            "pattern \"a\" is already handled by `a` in this controller; a request can only be answered once",
        ]
    );
}

/// A bad argument list still emits the impl.
#[test]
fn bad_controller_args_keep_the_users_impl() {
    let out = crate::expand::controller(
        quote!(clients = false),
        quote! {
            impl UserController {
                #[message_pattern("sum")]
                fn sum(&self, nums: Vec<i64>) -> i64 {
                    nums.iter().sum()
                }
            }
        },
    )
    .to_string();
    assert!(out.contains("compile_error"), "{out}");
    assert!(out.contains("unknown argument"), "{out}");
    assert!(out.contains("impl UserController"), "{out}");
}

/// Not an impl block: the item is emitted unchanged with the error.
#[test]
fn controller_on_non_impl_keeps_the_item() {
    let out = crate::expand::controller(
        quote!(),
        quote!(
            struct UserController;
        ),
    )
    .to_string();
    assert!(out.contains("compile_error"), "{out}");
    assert!(out.contains("struct UserController"), "{out}");
}

/// A client trait method without a pattern attribute.
#[test]
fn client_method_without_pattern_is_an_error() {
    let out = crate::expand::remote_client(
        quote!(),
        quote! {
            trait UserService {
                async fn sum(nums: Vec<i64>) -> i64;
            }
        },
    )
    .to_string();
    assert!(out.contains("compile_error"), "{out}");
    assert!(out.contains("needs #[message_pattern"), "{out}");
}

/// Input built from a string, as rustc hands it over (no `quote!` spans).
#[test]
fn string_input_round_trips() {
    let item: TokenStream = r#"
        impl Echo {
            #[message_pattern(7)]
            fn echo(&self, v: Option<String>) -> Option<String> { v }
        }
    "#
    .parse()
    .unwrap();
    let out = controller(TokenStream::new(), item);
    assert!(out.contains(r#"pattern: "7""#), "{out}");
}

/// Names the std prelude provides; `#![no_implicit_prelude]` users do not have them.
const PRELUDE: &[&str] = &[
    "Copy",
    "Send",
    "Sized",
    "Sync",
    "Unpin",
    "Drop",
    "Fn",
    "FnMut",
    "FnOnce",
    "drop",
    "Box",
    "ToOwned",
    "Clone",
    "PartialEq",
    "PartialOrd",
    "Eq",
    "Ord",
    "AsRef",
    "AsMut",
    "Into",
    "From",
    "Default",
    "Iterator",
    "Extend",
    "IntoIterator",
    "DoubleEndedIterator",
    "ExactSizeIterator",
    "Option",
    "Some",
    "None",
    "Result",
    "Ok",
    "Err",
    "String",
    "ToString",
    "Vec",
    "TryFrom",
    "TryInto",
    "FromIterator",
    "vec",
    "format",
    "panic",
    "assert",
    "unreachable",
    "file",
    "line",
    "concat",
    "stringify",
    "compile_error",
];

/// Trait methods that only resolve with the prelude's traits in scope.
const PRELUDE_METHODS: &[&str] = &[
    "clone",
    "into",
    "try_into",
    "to_string",
    "to_owned",
    "as_ref",
    "as_mut",
    "default",
    "from",
    "next",
    "into_iter",
    "collect",
    "eq",
    "cmp",
    "partial_cmp",
];

/// Prelude traits: `Clone::clone(..)` written through one of these is fine once the
/// trait's own path is absolute.
const PRELUDE_TRAITS: &[&str] = &[
    "Clone",
    "Default",
    "From",
    "Into",
    "ToString",
    "ToOwned",
    "AsRef",
    "AsMut",
    "Iterator",
    "IntoIterator",
    "PartialEq",
    "PartialOrd",
    "Ord",
    "TryFrom",
    "TryInto",
    "FromIterator",
];

/// Every prelude name in `tokens` not reached through a `::` path, every prelude trait
/// method called with method syntax (`x.clone()`), and every prelude trait method called
/// through a type (`Arc::clone(..)`): all three fail to resolve without the prelude.
fn prelude_uses(tokens: TokenStream, found: &mut Vec<String>) {
    use proc_macro2::{Spacing, TokenTree};
    let trees: Vec<TokenTree> = tokens.into_iter().collect();
    let is_punct =
        |i: usize, c: char| matches!(trees.get(i), Some(TokenTree::Punct(p)) if p.as_char() == c);
    for (i, tree) in trees.iter().enumerate() {
        match tree {
            TokenTree::Group(g) => prelude_uses(g.stream(), found),
            TokenTree::Ident(ident) => {
                let name = ident.to_string();
                let after_path_sep = i >= 2 && is_punct(i - 1, ':') && is_punct(i - 2, ':');
                let after_dot = i >= 1 && is_punct(i - 1, '.');
                // `file: ..` in a struct expression is a field name, not a path.
                let field_name = matches!(
                    trees.get(i + 1),
                    Some(TokenTree::Punct(p)) if p.as_char() == ':' && p.spacing() == Spacing::Alone
                );
                // Called: `name(..)` or `name::<..>(..)`, not a module like `::core::clone::`.
                let called = matches!(
                    trees.get(i + 1),
                    Some(TokenTree::Group(g)) if g.delimiter() == proc_macro2::Delimiter::Parenthesis
                ) || (is_punct(i + 1, ':')
                    && is_punct(i + 2, ':')
                    && is_punct(i + 3, '<'));
                let is_method = called && PRELUDE_METHODS.contains(&name.as_str());
                if after_dot {
                    if is_method {
                        found.push(format!(".{name}(..)"));
                    }
                } else if after_path_sep {
                    let owner = match i.checked_sub(3).and_then(|j| trees.get(j)) {
                        Some(TokenTree::Ident(owner)) => Some(owner.to_string()),
                        _ => None,
                    };
                    if let Some(owner) = owner {
                        if is_method && !PRELUDE_TRAITS.contains(&owner.as_str()) {
                            found.push(format!("{owner}::{name}(..)"));
                        }
                    }
                } else if PRELUDE.contains(&name.as_str()) && !field_name {
                    found.push(name);
                }
            }
            _ => {}
        }
    }
}

/// The generated items (everything after the user's own impl, which comes first).
fn generated_part(out: TokenStream, skip_user_item: bool) -> TokenStream {
    let file = syn::parse2::<syn::File>(out).expect("valid expansion");
    let skip = usize::from(skip_user_item);
    let items = &file.items[skip..];
    quote!(#(#items)*)
}

/// Generated code must not lean on the prelude (tests/hygiene.rs compiles it for real
/// under `#![no_implicit_prelude]`; this pinpoints the offending token). Inputs use no
/// prelude names themselves, so anything found comes from the macro.
#[test]
fn generated_code_does_not_rely_on_the_prelude() {
    let controller_out = crate::expand::controller(
        quote!(),
        quote! {
            impl Hygienic {
                #[message_pattern("sum")]
                fn sum(&self, nums: Nums) -> Total { todo() }
                #[message_pattern({ cmd: "ctx" })]
                async fn ctx(&self, ctx: &nestling::Context, n: Nums) -> Outcome<Total, Failure> { todo() }
                #[message_pattern("owned")]
                async fn owned(&self, ctx: nestling::Context) -> Outcome<(), Failure> { todo() }
                #[message_pattern("opaque")]
                fn opaque(&self) -> impl Serialize { todo() }
                #[message_pattern("unit")]
                fn unit(&self) {}
                #[message_pattern("stream")]
                fn stream(&self) -> impl Stream<Item = Outcome<Total, Failure>> { todo() }
                #[message_pattern("boxed")]
                fn boxed(&self) -> BoxStream<'static, Total> { todo() }
                #[event_pattern("log")]
                async fn log(&self, text: Text) {}
            }
        },
    );
    let client_out = crate::expand::remote_client(
        quote!(),
        quote! {
            pub trait Remote {
                #[message_pattern("sum")]
                async fn sum(nums: Nums) -> Total;
                #[message_pattern("name")]
                async fn name(&self) -> &str;
                #[message_pattern("stream")]
                async fn stream(&self) -> impl Stream<Item = Total>;
                #[event_pattern("log")]
                async fn log(text: Text);
            }
        },
    );
    let mut found = Vec::new();
    prelude_uses(generated_part(controller_out, true), &mut found);
    prelude_uses(generated_part(client_out, false), &mut found);
    found.sort();
    found.dedup();
    assert!(
        found.is_empty(),
        "generated code uses prelude names without an absolute path: {found:?}"
    );
}

/// The checker itself catches what it is meant to catch.
#[test]
fn prelude_checker_finds_relative_paths() {
    let mut found = Vec::new();
    prelude_uses(
        quote! {
            fn f() -> ::core::option::Option<u8> {
                let a = Arc::clone(&x);
                let b = y.clone();
                Some(1)
            }
        },
        &mut found,
    );
    assert_eq!(found, ["Arc::clone(..)", ".clone(..)", "Some"]);
}

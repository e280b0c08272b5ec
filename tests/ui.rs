//! Compile-time behaviour of the macros: every mistake in `tests/ui/` must fail with the
//! macro's own message on the user's span (the expected `.stderr` sits next to each
//! file), and every supported shape in `tests/ui-pass/` must compile and run.
//!
//! Regenerate the `.stderr` files with `TRYBUILD=overwrite cargo test --test ui`, then
//! read every diff: a message must point at the user's code, not at generated code.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
    t.pass("tests/ui-pass/*.rs");
}

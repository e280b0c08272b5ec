//! Two message handlers for one pattern across controllers fail at startup, naming both.
//! (Event handlers sharing a pattern is fine: `e2e::send_and_emit_round_trip` runs two.)

use nestling::{Server, ServerError};

#[derive(Default)]
struct First;

#[nestling::controller]
impl First {
    #[message_pattern({ cmd: "dup", v: 1 })]
    fn dup(&self) -> i64 {
        1
    }

    #[event_pattern("shared")]
    fn shared(&self) {}
}

#[derive(Default)]
struct Second;

#[nestling::controller]
impl Second {
    // Same pattern, other key order: Nest normalises both to one route.
    #[message_pattern({ v: 1, cmd: "dup" })]
    fn dup_again(&self) -> i64 {
        2
    }

    #[event_pattern("shared")]
    fn shared_too(&self) {}
}

#[test]
fn duplicate_message_patterns_fail_at_startup_naming_both() {
    let err = Server::builder().build().unwrap_err();
    let ServerError::DuplicateHandler { first, second, .. } = &err else {
        panic!("expected DuplicateHandler, got {err}");
    };
    let both = format!("{first} | {second}");
    assert!(
        both.contains("First::dup (tests/duplicate_handlers.rs:12)"),
        "{both}"
    );
    assert!(
        both.contains("Second::dup_again (tests/duplicate_handlers.rs:27)"),
        "{both}"
    );
    assert!(err.to_string().contains("give one of them another pattern"));
}

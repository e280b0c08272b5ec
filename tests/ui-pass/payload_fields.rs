//! Every form of parameter decorator compiles: properties of any `Deserialize` type,
//! `Parse<T>` (destructured or not), `#[ctx]`, a whole payload beside properties, and
//! `validate` on a type with rules.
use nestling::{Context, Parse};

#[derive(serde::Serialize, serde::Deserialize, validator::Validate)]
struct NewUser {
    #[validate(length(min = 2))]
    name: String,
}

#[derive(serde::Serialize, serde::Deserialize, garde::Validate)]
struct NewOrder {
    #[garde(range(min = 1))]
    qty: u32,
}

#[derive(Default)]
struct Users;

#[nestling::controller]
impl Users {
    #[message_pattern("get")]
    fn get(
        &self,
        #[payload("id")] Parse(id): Parse<u64>,
        #[payload("tags")] tags: Option<Vec<String>>,
    ) -> String {
        format!("{id} {tags:?}")
    }

    #[message_pattern("whole")]
    async fn whole(
        &self,
        #[payload] all: serde_json::Value,
        #[payload("id")] id: Parse<i32>,
        #[ctx] ctx: &Context,
    ) -> String {
        format!("{all} {} {}", *id, ctx.pattern())
    }

    #[message_pattern("create", validate)]
    fn create(&self, user: NewUser) -> String {
        user.name
    }

    #[event_pattern("ordered", validate)]
    async fn ordered(&self, #[payload("order")] order: NewOrder) {
        let _ = order.qty;
    }
}

fn main() {}

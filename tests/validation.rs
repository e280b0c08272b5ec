//! Payload validation (Nest's `ValidationPipe` + class-validator DTOs) and parameter
//! decorators (`@Payload('field')`, `ParseIntPipe`), against the real Nest user service.
//!
//! `tests/nest/user-service.mjs` has `create_user` (a `CreateUserDto` with a nested object
//! and an array, `ValidationPipe` throwing its errors as an `RpcException`) and `get_user`
//! (`@Payload('id', ParseIntPipe)` with the same kind of factory, `@Payload('name')`). The
//! controllers here are their Rust twins, with `validator` and with `garde`; a Nest client
//! (`client.mjs`) sends the same payloads to Nest and to nestling over real sockets and the
//! replies are compared: byte for byte where the rules map one to one, the envelope
//! (`message` array, `error`, `statusCode`, the field path) where they do not.
//!
//! Needs Node and `npm ci` in `tests/nest` (skipped loudly without, failing when `CI` is set).

mod support;

use nestling::{ClientError, Context, Parse, Server};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use support::{init_tracing, require_node, run_nest_client, spawn_node, RunningServer};
// validator's derive calls `.validate()` on nested fields: the trait must be in scope.
use validator::Validate;

// ---------------------------------------------------------------------------------------
// The DTOs, as `validator` rules (class-validator's decorators in the comments)
// ---------------------------------------------------------------------------------------

#[derive(Debug, Serialize, Deserialize, validator::Validate)]
struct Address {
    /// @IsString() @MinLength(2)
    #[validate(length(min = 2))]
    city: String,
    /// @IsString() @Length(5, 5)
    #[validate(length(equal = 5))]
    zip: String,
}

#[derive(Debug, Serialize, Deserialize, validator::Validate)]
struct Item {
    /// @IsString() @MinLength(1)
    #[validate(length(min = 1))]
    sku: String,
    /// @IsInt() @Min(1) @Max(99)
    #[validate(range(min = 1, max = 99))]
    qty: i64,
}

#[derive(Debug, Serialize, Deserialize, validator::Validate)]
struct CreateUser {
    /// @IsString() @Length(2, 20)
    #[validate(length(min = 2, max = 20))]
    name: String,
    /// @IsEmail()
    #[validate(email)]
    email: String,
    /// @IsInt() @Min(0) @Max(150)
    #[validate(range(min = 0, max = 150))]
    age: i64,
    /// @ValidateNested() @Type(() => AddressDto)
    #[validate(nested)]
    address: Address,
    /// @IsArray() @ValidateNested({ each: true }) @Type(() => ItemDto)
    #[validate(nested)]
    items: Vec<Item>,
}

/// The same DTO with garde's rules.
mod with_garde {
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Serialize, Deserialize, garde::Validate)]
    pub struct Address {
        #[garde(length(min = 2))]
        pub city: String,
        #[garde(length(min = 5, max = 5))]
        pub zip: String,
    }

    #[derive(Debug, Serialize, Deserialize, garde::Validate)]
    pub struct Item {
        #[garde(length(min = 1))]
        pub sku: String,
        #[garde(range(min = 1, max = 99))]
        pub qty: i64,
    }

    #[derive(Debug, Serialize, Deserialize, garde::Validate)]
    pub struct CreateUser {
        #[garde(length(min = 2, max = 20))]
        pub name: String,
        #[garde(email)]
        pub email: String,
        #[garde(range(min = 0, max = 150))]
        pub age: i64,
        #[garde(dive)]
        pub address: Address,
        #[garde(dive)]
        pub items: Vec<Item>,
    }
}

// ---------------------------------------------------------------------------------------
// The Rust twins of create_user and get_user
// ---------------------------------------------------------------------------------------

#[derive(Default)]
struct Users;

#[nestling::controller]
impl Users {
    /// @MessagePattern('create_user') @UsePipes(ValidationPipe) createUser(@Payload() dto)
    #[message_pattern("create_user", validate)]
    fn create_user(&self, dto: CreateUser) -> Value {
        json!({"created": dto.name, "city": dto.address.city, "items": dto.items.len()})
    }

    /// getUser(@Payload('id', ParseIntPipe) id, @Payload('name') name)
    #[message_pattern("get_user")]
    fn get_user(
        &self,
        #[payload("id")] Parse(id): Parse<i64>,
        #[payload("name")] name: Option<String>,
    ) -> Value {
        json!({"id": id, "name": name, "idType": "number"})
    }
}

#[derive(Default)]
struct GardeUsers;

#[nestling::controller]
impl GardeUsers {
    #[message_pattern("create_user", validate)]
    async fn create_user(&self, dto: with_garde::CreateUser) -> Value {
        json!({"created": dto.name, "city": dto.address.city, "items": dto.items.len()})
    }
}

/// No `validate` on any handler: the server's `validate_payloads` decides.
#[derive(Default)]
struct Unmarked;

#[nestling::controller]
impl Unmarked {
    #[message_pattern("create_user")]
    fn create_user(&self, dto: CreateUser) -> String {
        dto.name
    }

    /// A type without rules: never validated, whatever the server says.
    #[message_pattern("sum")]
    fn sum(&self, nums: Vec<i64>) -> i64 {
        nums.iter().sum()
    }

    /// Properties, the context and a whole payload together: Nest's
    /// `(@Payload() all, @Payload('item') item, @Ctx() ctx)`.
    #[message_pattern("mixed")]
    async fn mixed(
        &self,
        all: Value,
        #[payload("item")] item: Item,
        #[ctx] ctx: &Context,
        #[payload("item")] again: Option<Value>,
    ) -> Value {
        json!({"keys": all.as_object().map_or(0, |o| o.len()), "qty": item.qty, "pattern": ctx.pattern(), "again": again})
    }
}

fn server_of<C: nestling::Controller>(controller: C, validate_all: bool) -> Server {
    Server::builder()
        .discover(false)
        .controller(controller)
        .validate_payloads(validate_all)
        .build()
        .expect("build server")
}

// ---------------------------------------------------------------------------------------
// The payloads both sides get
// ---------------------------------------------------------------------------------------

fn valid_user() -> Value {
    json!({
        "name": "Ann",
        "email": "ann@example.com",
        "age": 30,
        "address": {"city": "Oslo", "zip": "12345"},
        "items": [{"sku": "a", "qty": 1}]
    })
}

/// Payloads whose replies must be identical: the rules map one to one (length, range,
/// email, nested objects and arrays) and every field has the right JSON type.
fn same_reply_cases() -> Vec<(&'static str, Value)> {
    let mut cases = vec![("create_user", valid_user())];
    cases.push((
        "create_user",
        json!({
            "name": "A",
            "email": "nope",
            "age": -1,
            "address": {"city": "O", "zip": "1"},
            "items": [{"sku": "", "qty": 0}, {"sku": "b", "qty": 100}]
        }),
    ));
    let mut long = valid_user();
    long["name"] = json!("A name far longer than twenty");
    long["age"] = json!(151);
    long["address"]["zip"] = json!("123456");
    cases.push(("create_user", long));
    let mut no_items = valid_user();
    no_items["items"] = json!([]);
    cases.push(("create_user", no_items));
    let mut third_item = valid_user();
    third_item["items"] =
        json!([{"sku": "a", "qty": 1}, {"sku": "b", "qty": 2}, {"sku": "", "qty": 3}]);
    cases.push(("create_user", third_item));
    for data in [
        json!({"id": "42", "name": "x"}),
        json!({"id": 42}),
        json!({"id": "-7"}),
        json!({"id": "4x2"}),
        json!({"id": "1.5"}),
        json!({"id": 1.5}),
        json!({"name": "x"}),
        json!({"id": null}),
        json!([1]),
        json!("42"),
    ] {
        cases.push(("get_user", data));
    }
    cases
}

/// Payloads of the wrong JSON shape: Nest's class-validator reports every rule of the
/// DTO; nestling reports what serde found (the first mismatch) — the envelope is the same.
fn same_envelope_cases() -> Vec<Value> {
    let mut missing = valid_user();
    missing.as_object_mut().unwrap().remove("name");
    let mut wrong_types = valid_user();
    wrong_types["name"] = json!(5);
    vec![missing, wrong_types, json!([1, 2]), json!("x")]
}

fn send_ops(cases: &[(&str, Value)]) -> String {
    let ops: Vec<Value> = cases
        .iter()
        .map(|(p, d)| json!({"op": "send", "pattern": p, "data": d}))
        .collect();
    serde_json::to_string(&ops).unwrap()
}

fn parse_lines(text: &str) -> Vec<Value> {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("client.mjs printed {text:?}: {e}"))
}

/// A 400 reply as a Nest client sees it: `{"err": {"message": [..], "error", "statusCode"}}`.
fn assert_envelope(reply: &Value, what: &str) -> Vec<String> {
    let err = &reply["err"];
    let keys: Vec<&str> = err
        .as_object()
        .unwrap_or_else(|| panic!("{what}: no error object in {reply}"))
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["message", "error", "statusCode"], "{what}: {reply}");
    assert_eq!(err["error"], "Bad Request", "{what}");
    assert_eq!(err["statusCode"], 400, "{what}");
    err["message"]
        .as_array()
        .unwrap_or_else(|| panic!("{what}: message is not an array: {reply}"))
        .iter()
        .map(|m| m.as_str().expect("string message").to_string())
        .collect()
}

// ---------------------------------------------------------------------------------------
// Against real Nest
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn nest_client_gets_nests_validation_replies_from_nestling() {
    let Some(node) = require_node("nest_client_gets_nests_validation_replies_from_nestling") else {
        return;
    };
    init_tracing();
    let nest = spawn_node(&node, "user-service.mjs", &[]).await;
    let rust = RunningServer::start(server_of(Users, false)).await;
    let garde = RunningServer::start(server_of(GardeUsers, false)).await;

    let cases = same_reply_cases();
    let ops = send_ops(&cases);
    let from_nest = parse_lines(&run_nest_client(&node, &nest.addr(), &ops).await);
    let from_rust = parse_lines(&run_nest_client(&node, &rust.addr.to_string(), &ops).await);

    // The oracle first: what real Nest answers (captured, not assumed).
    assert_eq!(
        from_nest[0],
        json!({"ok": {"created": "Ann", "city": "Oslo", "items": 1}})
    );
    assert_eq!(
        from_nest[1]["err"]["message"],
        json!([
            "name must be longer than or equal to 2 characters",
            "email must be an email",
            "age must not be less than 0",
            "address.city must be longer than or equal to 2 characters",
            "address.zip must be longer than or equal to 5 characters",
            "items.0.sku must be longer than or equal to 1 characters",
            "items.0.qty must not be less than 1",
            "items.1.qty must not be greater than 99"
        ])
    );
    assert_envelope(&from_nest[1], "nest create_user");
    let parse_int = json!({"err": {"message": "Validation failed (numeric string is expected)", "error": "Bad Request", "statusCode": 400}});
    assert_eq!(
        from_nest[8], parse_int,
        "Nest's ParseIntPipe with the RpcException factory"
    );
    // Without the factory Nest's RPC caller learns nothing (nestjs/nest#8999): nestling's
    // `Parse<T>` answers as the factory does instead.
    let plain = send_ops(&[("get_user_plain", json!({"id": "x"}))]);
    let plain = parse_lines(&run_nest_client(&node, &nest.addr(), &plain).await);
    assert_eq!(
        plain[0],
        json!({"err": {"status": "error", "message": "Internal server error"}}),
        "Nest's plain ParseIntPipe over RPC"
    );

    for (i, (pattern, data)) in cases.iter().enumerate() {
        assert_eq!(
            from_rust[i], from_nest[i],
            "{pattern} {data}: nestling (validator) differs from Nest"
        );
    }

    // garde's twin, on the create_user payloads.
    let garde_cases: Vec<_> = cases
        .iter()
        .filter(|(p, _)| *p == "create_user")
        .cloned()
        .collect();
    let garde_ops = send_ops(&garde_cases);
    let from_garde =
        parse_lines(&run_nest_client(&node, &garde.addr.to_string(), &garde_ops).await);
    for (i, (_, data)) in garde_cases.iter().enumerate() {
        assert_eq!(
            from_garde[i], from_nest[i],
            "{data}: nestling (garde) differs from Nest"
        );
    }

    // Wrong shapes: the same envelope and field path, nestling's own message.
    let shaped: Vec<_> = same_envelope_cases()
        .into_iter()
        .map(|d| ("create_user", d))
        .collect();
    let ops = send_ops(&shaped);
    let from_nest = parse_lines(&run_nest_client(&node, &nest.addr(), &ops).await);
    let from_rust = parse_lines(&run_nest_client(&node, &rust.addr.to_string(), &ops).await);
    let from_garde = parse_lines(&run_nest_client(&node, &garde.addr.to_string(), &ops).await);
    let nest_missing = assert_envelope(&from_nest[0], "nest, missing name");
    assert_eq!(nest_missing[0], "name must be a string");
    for (side, replies) in [("validator", &from_rust), ("garde", &from_garde)] {
        let missing = assert_envelope(&replies[0], side);
        assert_eq!(missing, ["name should not be null or undefined"], "{side}");
        let wrong = assert_envelope(&replies[1], side);
        let nest_wrong = assert_envelope(&from_nest[1], "nest, name: 5");
        assert_eq!(
            wrong[0], nest_wrong[0],
            "{side}: the first message matches Nest's"
        );
        assert_eq!(wrong, ["name must be a string"], "{side}");
        for i in [2, 3] {
            assert_envelope(&from_nest[i], "nest, not an object");
            let messages = assert_envelope(&replies[i], side);
            assert_eq!(messages, ["payload must be an object"], "{side}");
        }
    }
    rust.stop().await;
    garde.stop().await;
}

// ---------------------------------------------------------------------------------------
// nestling alone, over a real socket
// ---------------------------------------------------------------------------------------

/// The error value of a failed call.
fn remote(r: Result<Value, ClientError>) -> Value {
    match r {
        Err(ClientError::Remote { error, .. }) => error.value().clone(),
        other => panic!("expected a remote error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn validate_payloads_covers_every_handler_whose_type_has_rules() {
    init_tracing();
    let mut bad = valid_user();
    bad["address"]["city"] = json!("O");
    let city = json!({"message": ["address.city must be longer than or equal to 2 characters"], "error": "Bad Request", "statusCode": 400});

    let off = RunningServer::start(server_of(Unmarked, false)).await;
    let on = RunningServer::start(server_of(Unmarked, true)).await;
    let client_off = nestling::Client::new(off.addr.to_string());
    let client_on = nestling::Client::new(on.addr.to_string());

    // Off: the handler runs on an invalid payload, as Nest without a pipe.
    let name: Value = client_off.send("create_user", &bad).await.unwrap();
    assert_eq!(name, "Ann");
    // On: validated first (Nest's useGlobalPipes(new ValidationPipe())).
    assert_eq!(remote(client_on.send("create_user", &bad).await), city);
    let name: Value = client_on.send("create_user", &valid_user()).await.unwrap();
    assert_eq!(name, "Ann");
    // A type without rules is untouched either way, and a malformed payload keeps the
    // usual error.
    for client in [&client_off, &client_on] {
        let six: Value = client.send("sum", &[1, 2, 3]).await.unwrap();
        assert_eq!(six, 6);
        let e = remote(client.send("sum", &"x").await);
        assert_eq!(e["status"], "error", "{e}");
        assert!(
            e["message"]
                .as_str()
                .unwrap()
                .starts_with("invalid payload for pattern sum"),
            "{e}"
        );
    }
    // With validation on, a property decoded into a type with rules is validated too (its
    // messages relative to the property, as Nest's pipe on `@Payload('item') item: ItemDto`).
    let payload = json!({"a": 1, "item": {"sku": "", "qty": 2}});
    let got: Value = client_off.send("mixed", &payload).await.unwrap();
    assert_eq!(
        got,
        json!({"keys": 2, "qty": 2, "pattern": "mixed", "again": {"sku": "", "qty": 2}})
    );
    assert_eq!(
        remote(client_on.send("mixed", &payload).await),
        json!({"message": ["sku must be longer than or equal to 1 characters"], "error": "Bad Request", "statusCode": 400})
    );
    // A property that does not decode names itself, with the path inside it.
    assert_eq!(
        remote(
            client_off
                .send("mixed", &json!({"item": {"sku": "a", "qty": "2"}}))
                .await
        ),
        json!({"message": ["item.qty must be an integer number"], "error": "Bad Request", "statusCode": 400})
    );
    assert_eq!(
        remote(client_off.send("mixed", &json!({"a": 1})).await),
        json!({"message": ["item should not be null or undefined"], "error": "Bad Request", "statusCode": 400})
    );
    off.stop().await;
    on.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn validation_messages_are_bounded() {
    init_tracing();
    let server = RunningServer::start(server_of(Users, false)).await;
    let client = nestling::Client::new(server.addr.to_string());
    // 60,000 broken items: ~3.5 MB of messages unbounded; Nest's limit cuts them at 1e6
    // characters and says so.
    let mut many = valid_user();
    many["items"] = Value::Array(vec![json!({"sku": "", "qty": 0}); 60_000]);
    let e = remote(client.send("create_user", &many).await);
    let messages = e["message"].as_array().unwrap();
    let total: usize = messages.iter().map(|m| m.as_str().unwrap().len()).sum();
    assert!(
        total <= nestling::validation::MAX_MESSAGES_LEN + 100,
        "{total}"
    );
    assert_eq!(
        messages.last().unwrap(),
        nestling::validation::OMITTED_MESSAGE
    );
    assert_eq!(
        messages[0],
        "items.0.sku must be longer than or equal to 1 characters"
    );
    // The connection and the server go on.
    let ok: Value = client.send("create_user", &valid_user()).await.unwrap();
    assert_eq!(ok["created"], "Ann");
    server.stop().await;
}

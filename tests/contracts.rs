//! TypeScript contracts for the Nest side (`#[nestling::controller(contracts)]`,
//! `nestling::contracts`): what they render for a controller covering serde's shapes, that
//! `tsc --strict` accepts them (and the JSON serde really sends), that a Nest caller written
//! in TypeScript against the user service's contracts calls the Rust service over TCP, and
//! that changing a Rust payload type breaks that caller's build.
//!
//! The tsc tests need Node >= 20 and `npm ci` in `tests/nest` (typescript 7 is pinned there).
//! Without them they print `SKIPPED` and pass, except when `CI` is set: then they fail.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::stream::BoxStream;
use futures_util::Stream;
use nestling::contracts::{Contracts, ContractsError, Written};
use nestling::{Context, RpcException};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use support::{nest_dir, require_node, spawn_example};
use ts_rs::TS;

// ---------------------------------------------------------------------------------------
// A controller and a client trait covering what serde can shape
// ---------------------------------------------------------------------------------------

/// A user to create.
#[derive(Debug, Clone, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
pub struct NewUser {
    display_name: String,
    #[serde(rename = "e-mail")]
    email: String,
    age: Option<u8>,
    tags: Vec<String>,
    prefs: HashMap<String, bool>,
    role: Role,
    /// Latitude and longitude.
    home: (f64, f64),
    invited_by: Option<u64>,
}

/// A stored user: its id and, flattened, what it was created with.
#[derive(Debug, Clone, Serialize, Deserialize, TS)]
pub struct User {
    id: u64,
    #[serde(flatten)]
    profile: NewUser,
}

#[derive(Debug, Clone, Serialize, Deserialize, TS)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Member,
    #[serde(rename = "guest-user")]
    Guest,
}

/// Internally tagged.
#[derive(Debug, Clone, Serialize, Deserialize, TS)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AccountEvent {
    Created { id: u64 },
    Renamed { id: u64, name: String },
    Deleted,
}

/// Adjacently tagged.
#[derive(Debug, Clone, Serialize, Deserialize, TS)]
#[serde(tag = "kind", content = "data")]
pub enum Shape {
    Circle(f64),
    Rect { w: f64, h: f64 },
    Empty,
}

/// Untagged.
#[derive(Debug, Clone, Serialize, Deserialize, TS)]
#[serde(untagged)]
pub enum IdOrName {
    Id(u64),
    Name(String),
}

/// Externally tagged (serde's default).
#[derive(Debug, Clone, Serialize, Deserialize, TS)]
pub enum Change {
    Set(String),
    Clear,
    Move { from: u32, to: u32 },
}

/// Generic: one declaration serves every `Page<T>`.
#[derive(Debug, Clone, Serialize, Deserialize, TS)]
pub struct Page<T> {
    items: Vec<T>,
    next: Option<String>,
}

#[derive(Default)]
struct Accounts;

/// Accounts, served in Rust.
#[nestling::controller(contracts)]
impl Accounts {
    /// Creates a user and returns it with its id.
    #[message_pattern({ cmd: "create", v: 2 })]
    fn create_user(&self, user: NewUser) -> Result<User, RpcException> {
        Ok(User {
            id: 1,
            profile: user,
        })
    }

    #[message_pattern("find")]
    async fn find(&self, query: IdOrName) -> Option<User> {
        let _ = query;
        None
    }

    /// Registered under two patterns; callers use the first.
    #[message_pattern(["list", "list_users"])]
    fn list(&self, ctx: &Context, page: u32) -> Page<User> {
        let _ = (ctx, page);
        Page {
            items: Vec::new(),
            next: None,
        }
    }

    /// The account's events, streamed.
    #[message_pattern("account_events")]
    fn account_events(&self, id: u64) -> impl Stream<Item = AccountEvent> {
        futures_util::stream::iter([AccountEvent::Created { id }])
    }

    #[message_pattern("shapes")]
    fn shapes(&self) -> BoxStream<'static, Result<Shape, RpcException>> {
        Box::pin(futures_util::stream::iter([Ok(Shape::Empty)]))
    }

    #[event_pattern("changed")]
    fn changed(&self, change: Change) {
        let _ = change;
    }

    #[message_pattern("stats")]
    fn stats(&self, range: (String, i32)) -> BTreeMap<String, Vec<i64>> {
        let _ = range;
        BTreeMap::new()
    }

    #[message_pattern("raw")]
    fn raw(&self, v: Value) -> impl Serialize {
        v
    }

    #[message_pattern("reset")]
    fn reset(&self) -> Result<(), RpcException> {
        Ok(())
    }

    /// Two properties of the payload object (Nest's `@Payload('id')`, `@Payload('displayName')`):
    /// the TypeScript method takes both and sends `{ id, displayName }`.
    #[message_pattern("rename")]
    fn rename(&self, #[payload("id")] id: u64, #[payload("displayName")] name: String) -> bool {
        let _ = (id, name);
        true
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
pub struct Invoice {
    invoice_id: u64,
    amount_cents: i64,
    currency: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, TS)]
pub struct Receipt {
    paid: bool,
    reference: Option<String>,
}

/// The Nest billing service, which Rust calls: the Nest team implements these patterns.
#[nestling::client(contracts)]
pub trait Billing {
    #[message_pattern({ cmd: "charge" })]
    async fn charge(invoice: Invoice) -> Receipt;

    #[event_pattern("refund")]
    async fn refund(invoice_id: u64);
}

/// The user service after a Rust change: `sum` now takes an object instead of an array.
mod v2 {
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Serialize, Deserialize, ts_rs::TS)]
    pub struct SumRequest {
        pub values: Vec<i64>,
    }

    #[derive(Default)]
    pub struct UserController;

    #[nestling::controller(contracts, client = false)]
    impl UserController {
        #[message_pattern("sum")]
        fn sum(&self, req: SumRequest) -> i64 {
            req.values.iter().sum()
        }

        #[event_pattern("log")]
        fn log(&self, text: String) {
            let _ = text;
        }

        #[message_pattern("count")]
        fn count(&self, n: u32) -> impl futures_util::Stream<Item = u32> {
            futures_util::stream::iter(1..=n)
        }

        #[message_pattern("whoami")]
        fn whoami(&self) -> String {
            "v2".into()
        }
    }
}

/// Another `UserController`, to show that a bare name is then ambiguous.
mod legacy {
    #[derive(Default)]
    pub struct UserController;

    #[nestling::controller(contracts, client = false)]
    impl UserController {
        #[message_pattern("ping")]
        fn ping(&self) -> bool {
            true
        }
    }
}

fn rich() -> String {
    Contracts::select(["Accounts", "Billing"])
        .expect("select")
        .render()
        .expect("render")
}

// ---------------------------------------------------------------------------------------
// Rendering
// ---------------------------------------------------------------------------------------

#[test]
fn rich_contracts_snapshot() {
    insta::assert_snapshot!("rich_contracts_ts", rich());
}

#[test]
fn writing_twice_is_byte_identical() {
    let dir = std::env::temp_dir().join(format!("nestling-contracts-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let path = dir.join("nested").join("accounts.ts");
    let contracts = Contracts::select(["Accounts", "Billing"]).unwrap();
    assert_eq!(contracts.write(&path).unwrap(), Written::Created);
    let first = std::fs::read(&path).unwrap();
    assert_eq!(contracts.write(&path).unwrap(), Written::Unchanged);
    assert_eq!(std::fs::read(&path).unwrap(), first);
    assert_eq!(first, rich().as_bytes());
    // Selection order does not matter; a stale file is rewritten.
    std::fs::write(&path, "stale").unwrap();
    let reversed = Contracts::select(["Billing", "Accounts"]).unwrap();
    assert_eq!(reversed.write(&path).unwrap(), Written::Updated);
    assert_eq!(std::fs::read(&path).unwrap(), first);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn selection_names_what_exists() {
    match Contracts::select(["Nope"]) {
        Err(ContractsError::UnknownService { name, known }) => {
            assert_eq!(name, "Nope");
            assert!(known.contains("contracts::Accounts"), "{known}");
        }
        other => panic!("expected UnknownService, got {other:?}"),
    }
    let err = Contracts::select(["UserController"]).unwrap_err();
    assert!(
        matches!(err, ContractsError::AmbiguousService { .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("contracts::legacy::UserController")
            && msg.contains("contracts::v2::UserController"),
        "{msg}"
    );
    // The end of the module path, or all of it, picks one.
    let v2 = Contracts::select(["v2::UserController"]).unwrap();
    assert_eq!(
        v2.services().map(|s| s.path()).collect::<Vec<_>>(),
        ["contracts::v2::UserController"]
    );
    assert_eq!(
        Contracts::select(["contracts::Accounts"])
            .unwrap()
            .services()
            .count(),
        1
    );
    // Two same-named services cannot share a module: their classes would clash.
    let err = Contracts::select(["legacy::UserController", "v2::UserController"])
        .unwrap()
        .render()
        .unwrap_err();
    assert!(
        err.to_string().contains("class `UserControllerClient`"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------
// tsc
// ---------------------------------------------------------------------------------------

/// Node and the pinned TypeScript compiler, or `None` (skipped) outside CI.
fn require_tsc(test: &str) -> Option<PathBuf> {
    let node = require_node(test)?;
    let tsc = nest_dir().join("node_modules/typescript/bin/tsc");
    if !tsc.is_file() {
        let why = format!("{} is missing (run `npm ci` in tests/nest)", tsc.display());
        if std::env::var_os("CI").is_some() {
            panic!("{why}");
        }
        eprintln!("SKIPPED: {test}: {why}");
        return None;
    }
    Some(node)
}

/// A directory inside `tests/nest` (so tsc and Node find its `node_modules`), removed
/// afterwards unless the test failed.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = nest_dir()
            .join(".contracts-tmp")
            .join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn write(&self, file: &str, text: &str) {
        std::fs::write(self.0.join(file), text).unwrap();
    }

    /// A tsconfig extending `tests/nest/tsconfig.json` (strict) over this directory's
    /// files; `emit` compiles them to `out/`.
    fn tsconfig(&self, emit: bool) {
        let extra = if emit {
            r#", "noEmit": false, "rootDir": ".", "outDir": "out""#
        } else {
            ""
        };
        self.write(
            "tsconfig.json",
            &format!(
                r#"{{ "extends": "../../tsconfig.json", "compilerOptions": {{ "strict": true{extra} }}, "include": ["*.ts"] }}"#
            ),
        );
    }

    /// Runs `tsc -p` on this directory: (success, everything it printed).
    fn tsc(&self, node: &Path) -> (bool, String) {
        let out = std::process::Command::new(node)
            .arg(nest_dir().join("node_modules/typescript/bin/tsc"))
            .arg("-p")
            .arg(&self.0)
            .current_dir(&self.0)
            .output()
            .expect("run tsc");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A value serde really sends, as a TypeScript literal of the generated type: tsc checks
/// that the contracts accept it (excess and missing properties included).
fn typed_literal(name: &str, ty: &str, value: &impl Serialize) -> String {
    let json = serde_json::to_string_pretty(value).unwrap();
    format!("export const {name}: {ty} = {json};\n")
}

#[test]
fn rich_contracts_compile_strict_and_accept_what_serde_sends() {
    let Some(node) = require_tsc("rich_contracts_compile_strict_and_accept_what_serde_sends")
    else {
        return;
    };
    let dir = Scratch::new("rich");
    dir.write("contracts.ts", &rich());
    let user = NewUser {
        display_name: "Ada".into(),
        email: "ada@example.com".into(),
        age: None,
        tags: vec!["a".into()],
        prefs: HashMap::from([("dark".into(), true)]),
        role: Role::Guest,
        home: (51.5, -0.1),
        invited_by: Some(7),
    };
    let mut wire = String::from(
        "import type { AccountEvent, Change, IdOrName, NewUser, Page, Receipt, Shape, User } from './contracts.js';\n",
    );
    wire += &typed_literal("newUser", "NewUser", &user);
    let stored = User {
        id: 1,
        profile: user,
    };
    wire += &typed_literal(
        "page",
        "Page<User>",
        &Page {
            items: vec![stored],
            next: Some("2".into()),
        },
    );
    for (i, e) in [
        AccountEvent::Created { id: 1 },
        AccountEvent::Renamed {
            id: 1,
            name: "b".into(),
        },
        AccountEvent::Deleted,
    ]
    .iter()
    .enumerate()
    {
        wire += &typed_literal(&format!("event{i}"), "AccountEvent", e);
    }
    for (i, s) in [
        Shape::Circle(1.0),
        Shape::Rect { w: 1.0, h: 2.0 },
        Shape::Empty,
    ]
    .iter()
    .enumerate()
    {
        wire += &typed_literal(&format!("shape{i}"), "Shape", s);
    }
    wire += &typed_literal("byId", "IdOrName", &IdOrName::Id(3));
    wire += &typed_literal("byName", "IdOrName", &IdOrName::Name("x".into()));
    for (i, c) in [
        Change::Set("v".into()),
        Change::Clear,
        Change::Move { from: 1, to: 2 },
    ]
    .iter()
    .enumerate()
    {
        wire += &typed_literal(&format!("change{i}"), "Change", c);
    }
    wire += &typed_literal(
        "receipt",
        "Receipt",
        &Receipt {
            paid: true,
            reference: None,
        },
    );
    // Tagged unions narrow on their tag, as a Nest handler would use them.
    wire += "export function describe(e: AccountEvent): string {\n  switch (e.type) {\n    case 'created': return `created ${e.id}`;\n    case 'renamed': return `${e.id} is ${e.name}`;\n    case 'deleted': return 'deleted';\n  }\n}\n";
    wire += "export function area(s: Shape): number {\n  return s.kind === 'Circle' ? Math.PI * s.data * s.data : s.kind === 'Rect' ? s.data.w * s.data.h : 0;\n}\n";
    dir.write("wire.ts", &wire);
    // And the clients type-check against a ClientProxy.
    dir.write(
        "calls.ts",
        r#"import type { ClientProxy } from '@nestjs/microservices';
import type { Observable } from 'rxjs';
import { AccountsClient, AccountsPatterns, BillingClient, BillingPatterns } from './contracts.js';
import type { AccountEvent, Receipt, User } from './contracts.js';
import { newUser } from './wire.js';

export function calls(proxy: ClientProxy): Observable<unknown>[] {
  const accounts = new AccountsClient(proxy);
  const billing = new BillingClient(proxy);
  const created: Observable<User> = accounts.createUser(newUser);
  const found: Observable<User | null> = accounts.find('ada');
  const events: Observable<AccountEvent> = accounts.accountEvents(1);
  const charged: Observable<Receipt> = billing.charge({ invoiceId: 1, amountCents: 250, currency: 'EUR' });
  const pattern: { readonly cmd: 'create'; readonly v: 2 } = AccountsPatterns.createUser;
  const list: 'list' = AccountsPatterns.list;
  const charge: { readonly cmd: 'charge' } = BillingPatterns.charge;
  void pattern; void list; void charge;
  return [created, found, events, charged, accounts.changed({ Move: { from: 1, to: 2 } }), accounts.reset(),
    accounts.stats(['a', 1]), accounts.raw({ any: ['thing'] }), billing.refund(9), accounts.list(2), accounts.shapes(),
    accounts.rename(1, 'Ada')];
}
"#,
    );
    dir.tsconfig(false);
    let (ok, out) = dir.tsc(&node);
    assert!(ok, "tsc --strict rejected the generated contracts:\n{out}");
}

/// Compiles `tests/nest/contracts/gateway.ts` (and the contracts it imports) to JS in a
/// scratch directory.
fn compile_gateway(node: &Path, name: &str, contracts: &str) -> (Scratch, bool, String) {
    let dir = Scratch::new(name);
    let gateway = std::fs::read_to_string(nest_dir().join("contracts/gateway.ts")).unwrap();
    dir.write("gateway.ts", &gateway);
    dir.write("user-service.ts", contracts);
    dir.tsconfig(true);
    let (ok, out) = dir.tsc(node);
    (dir, ok, out)
}

#[tokio::test]
async fn typescript_gateway_calls_the_rust_user_service() {
    let Some(node) = require_tsc("typescript_gateway_calls_the_rust_user_service") else {
        return;
    };
    // The contracts `cargo test --example user_service` writes from examples/user_service.rs.
    let contracts = std::fs::read_to_string(nest_dir().join("contracts/user-service.ts")).unwrap();
    let (dir, ok, out) = compile_gateway(&node, "gateway", &contracts);
    assert!(ok, "tsc rejected gateway.ts:\n{out}");
    let service = spawn_example("user_service", &[]).await;
    let run = tokio::process::Command::new(&node)
        .arg(dir.0.join("out/gateway.js"))
        .arg("127.0.0.1")
        .arg(service.port.to_string())
        .current_dir(&dir.0)
        .kill_on_drop(true)
        .output();
    let run = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("gateway.js did not finish within 30 s")
        .expect("run node gateway.js");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "gateway.js failed: {}\n{stdout}\n{}",
        run.status,
        String::from_utf8_lossy(&run.stderr)
    );
    let line = stdout
        .lines()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("gateway.js printed no JSON line:\n{stdout}"));
    let got: Value = serde_json::from_str(line).unwrap();
    assert_eq!(
        got,
        json!({"sum": 6, "counted": [1, 2, 3], "who": "user-service", "sumPattern": "sum"})
    );
    // The event reached the Rust handler, which prints it.
    service.wait_line("求和1111").await;
}

#[test]
fn changing_a_rust_payload_type_breaks_the_typescript_build() {
    let Some(node) = require_tsc("changing_a_rust_payload_type_breaks_the_typescript_build") else {
        return;
    };
    // v2's `sum` takes `SumRequest { values }` where the shipped service takes an array;
    // gateway.ts still calls `users.sum([1, 2, 3])`.
    let v2 = Contracts::select(["v2::UserController"])
        .unwrap()
        .render()
        .unwrap();
    assert!(
        v2.contains("sum(req: SumRequest): Observable<number>"),
        "{v2}"
    );
    let (_dir, ok, out) = compile_gateway(&node, "drift", &v2);
    assert!(
        !ok,
        "tsc accepted gateway.ts against a changed payload type:\n{out}"
    );
    assert!(
        out.contains("gateway.ts(")
            && out.contains("error TS2345")
            && out.contains("not assignable to parameter of type 'SumRequest'"),
        "tsc failed, but not on the changed call:\n{out}"
    );
    assert_eq!(
        out.matches("error TS").count(),
        1,
        "only the changed call should fail:\n{out}"
    );
}

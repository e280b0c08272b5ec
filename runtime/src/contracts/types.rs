//! The TypeScript declarations a set of payload and reply types needs, through ts-rs.

use std::any::{type_name, TypeId};
use std::collections::{BTreeMap, HashSet};

use ts_rs::{Config, TypeVisitor, TS};

use super::ContractsError;

/// A type that can appear in a contract: it has a TypeScript form (`ts_rs::TS`).
///
/// Implemented for every `T: ts_rs::TS + 'static`; `#[nestling::controller(contracts)]`
/// asks it of every payload and reply type, and reports a missing one on that type.
#[diagnostic::on_unimplemented(
    message = "`{Self}` has no TypeScript form, which #[nestling::controller(contracts)] needs for every payload and reply type",
    label = "this type does not implement `ts_rs::TS`",
    note = "derive it: `#[derive(serde::Serialize, serde::Deserialize, ts_rs::TS)]` (ts-rs 12), or remove `contracts` from the attribute"
)]
pub trait ContractType: TS + 'static {}

impl<T: TS + 'static + ?Sized> ContractType for T {}

/// One declaration: its text and the Rust type it comes from.
struct Decl {
    text: String,
    rust: &'static str,
}

/// The declarations collected while naming the types of a module's contracts.
///
/// ```
/// #[derive(ts_rs::TS)]
/// struct Point { x: f64, y: f64 }
///
/// let mut types = nestling::contracts::TypeSet::new();
/// assert_eq!(types.ty::<Vec<Point>>(), "Array<Point>");
/// assert_eq!(types.ty::<i64>(), "number"); // JSON numbers, not bigint
/// ```
pub struct TypeSet {
    cfg: Config,
    seen: HashSet<TypeId>,
    /// By TypeScript name: the module lists them in this order.
    decls: BTreeMap<String, Decl>,
    clash: Option<ContractsError>,
}

impl Default for TypeSet {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for TypeSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TypeSet")
            .field("declarations", &self.decls.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl TypeSet {
    /// An empty set. 64-bit integers map to `number`: Nest's JSON carries them as JSON
    /// numbers (exact up to 2^53 − 1).
    pub fn new() -> Self {
        TypeSet {
            cfg: Config::new().with_large_int("number"),
            seen: HashSet::new(),
            decls: BTreeMap::new(),
            clash: None,
        }
    }

    /// The TypeScript type of `T`, recording the declarations of `T` and of every type it
    /// refers to.
    pub fn ty<T: ContractType + ?Sized>(&mut self) -> String {
        self.visit::<T>();
        T::name(&self.cfg)
    }

    /// The declarations, sorted by name, each ending in a newline; or the first clash of two
    /// Rust types declaring one TypeScript name.
    pub(super) fn into_declarations(self) -> Result<Vec<String>, ContractsError> {
        if let Some(e) = self.clash {
            return Err(e);
        }
        Ok(self.decls.into_values().map(|d| d.text).collect())
    }
}

impl TypeVisitor for TypeSet {
    fn visit<T: TS + 'static + ?Sized>(&mut self) {
        if !self.seen.insert(TypeId::of::<T>()) {
            return;
        }
        // Only declared types (derived ones) have an output path; primitives, `Vec`,
        // `Option`, maps and tuples are written inline.
        if T::output_path().is_some() {
            let name = T::ident(&self.cfg);
            let mut text = T::docs().unwrap_or_default();
            text.push_str("export ");
            // ts-rs leaves a space before a field's doc comment at the end of a line.
            for line in T::decl(&self.cfg).lines() {
                text.push_str(line.trim_end());
                text.push('\n');
            }
            // `Page<User>` and `Page<Order>` share the one generic declaration.
            let rust = type_name::<T::WithoutGenerics>();
            match self.decls.get(&name) {
                Some(old) if old.text != text && self.clash.is_none() => {
                    self.clash = Some(ContractsError::TypeNameClash {
                        name,
                        first: old.rust.to_owned(),
                        second: rust.to_owned(),
                    });
                }
                Some(_) => {}
                None => {
                    self.decls.insert(name, Decl { text, rust });
                }
            }
        }
        T::visit_dependencies(self);
        T::visit_generics(self);
    }
}

//! `nestling new <path>`: a service crate that builds, runs and passes its tests as generated
//! (what `nest new` is to Nest users).
//!
//! The files are the templates under `cli/templates`, with `{{name}}` replaced by the crate
//! name and `{{nestling_dependency}}` by the `nestling` dependency line: the crates.io
//! release matching this CLI, or `--path <nestling checkout>`.

use std::io;
use std::path::{Path, PathBuf};

use crate::output::{Failure, USAGE};
use crate::NewArgs;

/// The generated files: path inside the new crate, template.
const FILES: &[(&str, &str)] = &[
    ("Cargo.toml", include_str!("../templates/Cargo.toml.tmpl")),
    ("src/main.rs", include_str!("../templates/main.rs.tmpl")),
    (
        "src/controller.rs",
        include_str!("../templates/controller.rs.tmpl"),
    ),
    ("README.md", include_str!("../templates/README.md.tmpl")),
    (".gitignore", include_str!("../templates/gitignore.tmpl")),
];

/// Names a service crate cannot have: Rust keywords (the crate name is also an identifier),
/// crates the compiler provides, and the crates the generated one depends on.
#[rustfmt::skip]
const RESERVED: &[&str] = &[
    "abstract", "as", "async", "await", "become", "box", "break", "const", "continue", "crate",
    "do", "dyn", "else", "enum", "extern", "false", "final", "fn", "for", "gen", "if", "impl",
    "in", "let", "loop", "macro", "match", "mod", "move", "mut", "override", "priv", "pub",
    "ref", "return", "self", "static", "struct", "super", "trait", "true", "try", "type",
    "typeof", "unsafe", "unsized", "use", "virtual", "where", "while", "yield", "alloc", "core",
    "proc_macro", "std", "test", "nestling", "tokio", "tracing_subscriber",
];

/// Cargo's limit on crates.io.
const MAX_NAME_LEN: usize = 64;

/// Why `nestling new` wrote nothing (or stopped).
#[derive(Debug, thiserror::Error)]
pub enum NewError {
    /// The last component of the path is not usable as a crate name.
    #[error(
        "`{name}` cannot be a crate name: {why}; use ASCII letters, digits, `-` and `_`, \
         starting with a letter (e.g. `user-service`)"
    )]
    InvalidName { name: String, why: String },
    /// The path has no last component to name the crate after (`.`, `/`, `..`).
    #[error("`{}` does not end in a name: give the new service's directory, e.g. `nestling new user-service`", .0.display())]
    NoName(PathBuf),
    /// Something is already there.
    #[error("`{}` already exists and is not empty: nestling new never overwrites; choose another name or remove it", .0.display())]
    NotEmpty(PathBuf),
    /// A file is where the directory would go.
    #[error("`{}` exists and is not a directory: choose another name", .0.display())]
    NotADirectory(PathBuf),
    /// `--path` does not point at a nestling checkout.
    #[error("--path `{}` is not a nestling checkout (no Cargo.toml with `name = \"nestling\"` there): give the directory holding nestling's workspace Cargo.toml", .0.display())]
    NotACheckout(PathBuf),
    /// Reading or writing failed.
    #[error("could not {action} `{}`: {source}", .path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

impl From<NewError> for Failure {
    fn from(e: NewError) -> Self {
        let code = match e {
            NewError::Io { .. } => 1,
            _ => USAGE,
        };
        Failure {
            code,
            message: e.to_string(),
        }
    }
}

pub fn run(args: NewArgs) -> Result<(), Failure> {
    let written = generate(&args.dir, args.path.as_deref())?;
    let shown = args.dir.display();
    println!(
        "Created the nestling service `{}` in {shown}:",
        written.name
    );
    for file in &written.files {
        println!("  {file}");
    }
    println!();
    println!("  cd {shown}");
    println!("  cargo run     # serves on 127.0.0.1:8888 (ADDR=… to change), Ctrl-C stops it");
    println!("  cargo test    # the controller's tests, in-process");
    println!("  nestling call 127.0.0.1:8888 sum '[1,2,3]'");
    Ok(())
}

/// What [`generate`] wrote.
#[derive(Debug)]
pub struct Generated {
    /// The crate name.
    pub name: String,
    /// The files, relative to the crate directory.
    pub files: Vec<&'static str>,
}

/// Writes a new service crate into `dir` (created if missing; it must be empty if it
/// exists), named after `dir`'s last component, depending on nestling from crates.io or,
/// with `nestling_path`, on that checkout.
pub fn generate(dir: &Path, nestling_path: Option<&Path>) -> Result<Generated, NewError> {
    let name = dir
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| *n != "..")
        .ok_or_else(|| match dir.file_name() {
            Some(n) => NewError::InvalidName {
                name: n.to_string_lossy().into_owned(),
                why: "it is not UTF-8".into(),
            },
            None => NewError::NoName(dir.to_path_buf()),
        })?;
    validate_name(name)?;
    let dependency = match nestling_path {
        None => format!("nestling = \"{}\"", env!("CARGO_PKG_VERSION")),
        Some(path) => format!("nestling = {{ path = {} }}", toml_string(&checkout(path)?)),
    };
    ensure_empty(dir)?;
    let mut files = Vec::with_capacity(FILES.len());
    for (file, template) in FILES {
        let path = dir.join(file);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|source| NewError::Io {
                action: "create",
                path: parent.to_path_buf(),
                source,
            })?;
        }
        std::fs::write(&path, render(template, name, &dependency)).map_err(|source| {
            NewError::Io {
                action: "write",
                path: path.clone(),
                source,
            }
        })?;
        files.push(*file);
    }
    Ok(Generated {
        name: name.to_string(),
        files,
    })
}

/// Cargo's rules for a package that can be published, plus "not a keyword": the crate's
/// name is also the identifier of its binary.
fn validate_name(name: &str) -> Result<(), NewError> {
    let invalid = |why: String| {
        Err(NewError::InvalidName {
            name: name.to_string(),
            why,
        })
    };
    let Some(first) = name.chars().next() else {
        return invalid("it is empty".into());
    };
    if !first.is_ascii_alphabetic() {
        return invalid(format!("it starts with `{first}`"));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        return invalid(format!("`{bad}` is not allowed in crate names"));
    }
    if name.len() > MAX_NAME_LEN {
        return invalid(format!("it is longer than {MAX_NAME_LEN} characters"));
    }
    if RESERVED.contains(&name.replace('-', "_").as_str()) {
        return invalid("it is a Rust keyword or the name of a crate it depends on".into());
    }
    Ok(())
}

/// The absolute path of a nestling checkout, checked to be one.
fn checkout(path: &Path) -> Result<PathBuf, NewError> {
    let not_a_checkout = || NewError::NotACheckout(path.to_path_buf());
    let dir = path.canonicalize().map_err(|_| not_a_checkout())?;
    let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).map_err(|_| not_a_checkout())?;
    if package_name(&manifest) == Some("nestling") {
        Ok(dir)
    } else {
        Err(not_a_checkout())
    }
}

/// The `name` of a manifest's `[package]` section (other sections, such as `[[bin]]`, have
/// names too).
fn package_name(manifest: &str) -> Option<&str> {
    let mut in_package = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_package = line == "[package]";
        } else if let Some(value) = line.strip_prefix("name").map(str::trim_start) {
            if in_package {
                return value
                    .strip_prefix('=')?
                    .trim()
                    .strip_prefix('"')?
                    .split('"')
                    .next();
            }
        }
    }
    None
}

/// Refuses an existing file or non-empty directory.
fn ensure_empty(dir: &Path) -> Result<(), NewError> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => match entries.next() {
            None => Ok(()),
            Some(_) => Err(NewError::NotEmpty(dir.to_path_buf())),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(_) if dir.exists() && !dir.is_dir() => Err(NewError::NotADirectory(dir.to_path_buf())),
        Err(source) => Err(NewError::Io {
            action: "read",
            path: dir.to_path_buf(),
            source,
        }),
    }
}

fn render(template: &str, name: &str, dependency: &str) -> String {
    template
        .replace("{{name}}", name)
        .replace("{{nestling_dependency}}", dependency)
}

/// `path` as a TOML basic string.
fn toml_string(path: &Path) -> String {
    let mut out = String::from("\"");
    for c in path.to_string_lossy().chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("nestling-new-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn names_follow_cargo_rules() {
        for ok in ["user-service", "users", "a1_b-2", "Users"] {
            validate_name(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for (bad, why) in [
            ("", "empty"),
            ("1users", "starts with `1`"),
            ("-users", "starts with `-`"),
            ("user service", "` ` is not allowed"),
            ("usé", "`é` is not allowed"),
            ("fn", "keyword"),
            ("self", "keyword"),
            ("test", "keyword"),
            ("nestling", "depends on"),
            ("tracing-subscriber", "depends on"),
        ] {
            let e = validate_name(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad:?}: {e}");
            assert!(e.contains("e.g. `user-service`"), "{e}");
        }
        assert!(validate_name(&"a".repeat(64)).is_ok());
        assert!(validate_name(&"a".repeat(65)).is_err());
    }

    #[test]
    fn templates_are_fully_rendered() {
        for (file, template) in FILES {
            let out = render(template, "user-service", "nestling = \"0.1.0\"");
            assert!(!out.contains("{{"), "{file}: {out}");
        }
        let cargo = render(FILES[0].1, "user-service", "nestling = \"0.1.0\"");
        assert!(cargo.contains("name = \"user-service\""), "{cargo}");
        assert!(cargo.contains("\nnestling = \"0.1.0\"\n"), "{cargo}");
    }

    #[test]
    fn generates_every_file_and_depends_on_the_crates_io_release() {
        let dir = temp("files");
        let out = generate(&dir, None).unwrap();
        assert_eq!(out.name, dir.file_name().unwrap().to_str().unwrap());
        for (file, _) in FILES {
            assert!(dir.join(file).is_file(), "{file} missing");
        }
        let cargo = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
        let expected = format!("nestling = \"{}\"", env!("CARGO_PKG_VERSION"));
        assert!(cargo.contains(&expected), "{cargo}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn path_dependency_is_absolute_and_checked() {
        let dir = temp("path");
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        generate(&dir, Some(&workspace)).unwrap();
        let cargo = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
        let expected = format!(
            "nestling = {{ path = {} }}",
            toml_string(&workspace.canonicalize().unwrap())
        );
        assert!(cargo.contains(&expected), "{cargo}");
        std::fs::remove_dir_all(&dir).unwrap();

        // The CLI's own directory is a crate, but not nestling.
        let cli = Path::new(env!("CARGO_MANIFEST_DIR"));
        let e = generate(&temp("notnestling"), Some(cli)).unwrap_err();
        assert!(matches!(e, NewError::NotACheckout(_)), "{e}");
        assert!(!temp("notnestling").exists(), "nothing written on error");
    }

    #[test]
    fn refuses_to_overwrite() {
        let dir = temp("full");
        std::fs::create_dir_all(&dir).unwrap();
        // An empty directory is fine (`mkdir x && nestling new x`).
        generate(&dir, None).unwrap();
        let before = std::fs::read_to_string(dir.join("src/main.rs")).unwrap();
        std::fs::write(dir.join("src/main.rs"), "// mine").unwrap();
        let e = generate(&dir, None).unwrap_err();
        assert!(matches!(e, NewError::NotEmpty(_)), "{e}");
        assert!(e.to_string().contains("never overwrites"), "{e}");
        assert_eq!(
            std::fs::read_to_string(dir.join("src/main.rs")).unwrap(),
            "// mine",
            "left alone (was {before:?})"
        );
        std::fs::remove_dir_all(&dir).unwrap();

        let file = temp("file");
        std::fs::write(&file, "x").unwrap();
        let e = generate(&file, None).unwrap_err();
        assert!(matches!(e, NewError::NotADirectory(_)), "{e}");
        std::fs::remove_file(&file).unwrap();
    }

    #[test]
    fn reads_the_package_name() {
        let cli = "[package]\nname = \"nestling-cli\"\n[[bin]]\nname = \"nestling\"\n";
        assert_eq!(package_name(cli), Some("nestling-cli"));
        assert_eq!(
            package_name("[package]\nname=\"nestling\"\n"),
            Some("nestling")
        );
        assert_eq!(package_name("[workspace]\nmembers = []\n"), None);
    }

    #[test]
    fn toml_strings_escape() {
        assert_eq!(toml_string(Path::new(r#"/a "b"\c"#)), r#""/a \"b\"\\c""#);
    }
}

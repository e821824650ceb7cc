//! The docs say what is: every file path, Rust item and test name that
//! README.md, ARCHITECTURE.md and docs/*.md cite between backticks exists
//! in the tree. A file moved or a function renamed without its docs fails
//! here, naming the document, the line and the citation.
//!
//! What counts as a citation:
//! - a path: a backticked word with a `/` or ending in a source or
//!   document extension (`src/op.rs`, `closure/payload.rs`, `jobs/`),
//!   looked up from the repository's root, from the crates' `src/`
//!   folders and from the integration tests' folder;
//! - a Rust path whose first segment is a module of the library (or of
//!   the integration tests): `render::zip::write_zip_resumable` names a
//!   module file or folder, and its last segment must be defined there
//!   (`fn`, `struct`, `enum`, `trait`, `type`, `const`, `static`, `mod`,
//!   `macro_rules!`) or, for a test module, be a test function.
//!
//! Paths of the store, the export or a URL (`downloads/…`, `scans/…`,
//! `/api/…`) and placeholders (`<job id>`, `*.toml`) are not files of the
//! tree and are left alone.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("the repository's root")
}

/// The documents whose citations are checked.
fn documents(root: &Path) -> Vec<PathBuf> {
    let mut docs = vec![root.join("README.md"), root.join("ARCHITECTURE.md")];
    let mut more: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("read docs/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    more.sort();
    docs.extend(more);
    docs
}

/// The backticked spans of `text` outside fenced code blocks, with their
/// line numbers (1-based).
fn citations(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut fenced = false;
    for (n, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        let mut parts = line.split('`');
        parts.next();
        while let (Some(inside), Some(_)) = (parts.next(), parts.next()) {
            out.push((n + 1, inside.to_owned()));
        }
    }
    out
}

const FILE_EXTENSIONS: &[&str] = &[
    ".rs", ".md", ".toml", ".sql", ".mjs", ".yaml", ".yml", ".html", ".css", ".js", ".lock",
];

/// Prefixes of paths that live in the store, the export, the ledger or
/// on the wire, not in the tree.
const NOT_IN_THE_TREE: &[&str] = &[
    "downloads/",
    "scans/",
    "pieces/",
    "exports/",
    "objects/",
    "renders/",
    "http",
    "/",
    "~",
    "$",
    ".staging",
    "COPISTE_",
    "./data",
    "application/",
    "text/",
];

fn looks_like_path(c: &str) -> bool {
    !c.is_empty()
        && !c.contains(char::is_whitespace)
        && !c.contains([
            '<', '>', '*', '{', '}', '=', '(', ')', ':', ',', '?', '&', '"',
        ])
        && (c.contains('/') && c.contains(|ch: char| ch.is_ascii_alphabetic())
            || FILE_EXTENSIONS.iter().any(|e| c.ends_with(e)))
        // A fraction such as `lease/3` is not a path.
        && c.split('/').next_back().is_none_or(|last| last.parse::<f64>().is_err())
        && !NOT_IN_THE_TREE.iter().any(|p| c.starts_with(p))
}

/// Where a cited path may be found: the root, the crates' sources, the
/// integration tests, and the folder of the citing document.
fn path_exists(root: &Path, doc: &Path, cited: &str) -> bool {
    let bases = [
        root.to_path_buf(),
        root.join("src"),
        root.join("cli/src"),
        root.join("tools/src"),
        root.join("cli/tests/integration"),
        doc.parent().unwrap_or(root).to_path_buf(),
    ];
    if bases.iter().any(|b| b.join(cited).exists()) {
        return true;
    }
    // A bare file name, as a code map lists the files of a folder named
    // just before it: somewhere in the tree.
    !cited.contains('/') && found_anywhere(root, cited)
}

/// Whether a file named `name` is in the crates' sources or tests.
fn found_anywhere(root: &Path, name: &str) -> bool {
    fn walk(dir: &Path, name: &str) -> bool {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return false;
        };
        entries.flatten().any(|e| {
            let p = e.path();
            if p.is_dir() {
                !p.ends_with("node_modules") && walk(&p, name)
            } else {
                p.file_name().is_some_and(|f| f == name)
            }
        })
    }
    [
        "src",
        "cli",
        "tools",
        "e2e",
        "scripts",
        "migrations",
        "templates",
    ]
    .iter()
    .any(|d| walk(&root.join(d), name))
}

/// The file or folder of a module path (`render::zip`) under `base`.
fn module_location(base: &Path, segments: &[&str]) -> Option<PathBuf> {
    let mut dir = base.to_path_buf();
    let mut found = None;
    for (i, seg) in segments.iter().enumerate() {
        let file = dir.join(format!("{seg}.rs"));
        let folder = dir.join(seg);
        if folder.is_dir() {
            found = Some(folder.clone());
            dir = folder;
        } else if file.is_file() {
            // A file ends the module path: the rest are items inside.
            return (i + 1 == segments.len()).then_some(file);
        } else {
            return None;
        }
    }
    found
}

fn rust_sources(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_file() {
        out.push(path.to_path_buf());
        return;
    }
    if let Ok(entries) = std::fs::read_dir(path) {
        for entry in entries.flatten() {
            let p = entry.path();
            if p.is_dir() {
                rust_sources(&p, out);
            } else if p.extension().is_some_and(|e| e == "rs") {
                out.push(p);
            }
        }
    }
    // A module `foo` may be `foo.rs` beside the folder `foo/`.
    if let (Some(parent), Some(name)) = (path.parent(), path.file_name()) {
        let file = parent.join(format!("{}.rs", name.to_string_lossy()));
        if path.is_dir() && file.is_file() {
            out.push(file);
        }
    }
}

/// Whether `name` is defined in the sources under `location`.
fn defines(location: &Path, name: &str) -> bool {
    let mut files = Vec::new();
    rust_sources(location, &mut files);
    let kinds = [
        "fn ", "struct ", "enum ", "trait ", "type ", "const ", "static ", "mod ",
    ];
    files.iter().any(|f| {
        let text = std::fs::read_to_string(f).unwrap_or_default();
        kinds.iter().any(|k| {
            text.match_indices(&format!("{k}{name}")).any(|(i, m)| {
                let after = text[i + m.len()..].chars().next();
                !after.is_some_and(|c| c.is_alphanumeric() || c == '_')
            })
        }) || text.contains(&format!("macro_rules! {name}"))
            // A variant or method of a type: `Type::name`.
            || text.contains(&format!("    {name}("))
            || text.contains(&format!("    {name} {{"))
            || text.contains(&format!("    {name},"))
    })
}

/// A Rust path rooted at a module of the library or of the integration
/// tests, checked; `None` when the citation is not such a path.
fn check_rust_path(root: &Path, cited: &str) -> Option<Result<(), String>> {
    let cited = cited.trim_end_matches("()").trim_end_matches('!');
    if cited.contains(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
        || !cited.contains("::")
    {
        return None;
    }
    let segments: Vec<&str> = cited.split("::").collect();
    let segments = match segments.first() {
        Some(&"crate") | Some(&"copiste") => &segments[1..],
        _ => &segments[..],
    };
    if segments.len() < 2 || segments.iter().any(|s| s.is_empty()) {
        return None;
    }
    let bases = [
        root.join("src"),
        root.join("cli/tests/integration"),
        root.join("cli/src"),
        root.join("tools/src"),
    ];
    // Only citations whose first segment is one of our modules.
    let ours = bases
        .iter()
        .any(|b| b.join(segments[0]).is_dir() || b.join(format!("{}.rs", segments[0])).is_file());
    if !ours {
        return None;
    }
    for base in &bases {
        // Everything but the last segment is modules (or a type); try the
        // longest module prefix that exists.
        for split in (1..segments.len()).rev() {
            if let Some(location) = module_location(base, &segments[..split])
                && defines(&location, segments[segments.len() - 1])
            {
                return Some(Ok(()));
            }
        }
        // The whole path a module.
        if module_location(base, segments).is_some() {
            return Some(Ok(()));
        }
    }
    Some(Err(format!("no definition of `{cited}`")))
}

#[test]
fn every_path_and_item_the_docs_cite_exists() {
    let root = root();
    let mut missing = Vec::new();
    let mut checked = 0;
    for doc in documents(&root) {
        let text = std::fs::read_to_string(&doc).expect("read a document");
        let name = doc
            .strip_prefix(&root)
            .unwrap_or(&doc)
            .display()
            .to_string();
        for (line, cited) in citations(&text) {
            let cited = cited.trim();
            if looks_like_path(cited) {
                checked += 1;
                if !path_exists(&root, &doc, cited) {
                    missing.push(format!("{name}:{line}: no file or folder `{cited}`"));
                }
            } else if let Some(outcome) = check_rust_path(&root, cited) {
                checked += 1;
                if let Err(why) = outcome {
                    missing.push(format!("{name}:{line}: {why}"));
                }
            }
        }
    }
    assert!(
        checked > 100,
        "only {checked} citations found: the parser lost them"
    );
    assert!(
        missing.is_empty(),
        "{} citations of the docs name nothing in the tree:\n{}",
        missing.len(),
        missing.join("\n")
    );
}

#[test]
fn the_check_finds_a_missing_path_and_a_missing_item() {
    let root = root();
    let doc = root.join("ARCHITECTURE.md");
    assert!(looks_like_path("src/op.rs"));
    assert!(path_exists(&root, &doc, "src/op.rs"));
    assert!(!path_exists(&root, &doc, "src/no_such_file.rs"));
    assert!(!looks_like_path("downloads/.staging/"));
    assert!(!looks_like_path("lease/3"));
    assert!(path_exists(&root, &doc, "engine.rs"));
    assert!(!path_exists(&root, &doc, "no_such_file.rs"));
    assert_eq!(
        check_rust_path(&root, "op::no_such_function"),
        Some(Err("no definition of `op::no_such_function`".into()))
    );
    assert_eq!(check_rust_path(&root, "std::fs::read"), None);
    assert_eq!(
        check_rust_path(&root, "docs::every_path_and_item_the_docs_cite_exists"),
        Some(Ok(()))
    );
}

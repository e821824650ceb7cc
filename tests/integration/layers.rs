//! The adapters' boundaries (ARCHITECTURE.md, "Invariants"): sqlx is named
//! only in `src/db/`, apalis and redis only in `src/queue.rs`, object_store
//! only in `src/storage.rs`; and every job kind is registered.

use std::path::{Path, PathBuf};

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Lines of code (not comments) that use `crate_name` as a path.
fn uses(text: &str, crate_name: &str) -> Vec<String> {
    text.lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .filter(|line| {
            line.match_indices(crate_name).any(|(i, _)| {
                let before = line[..i].chars().next_back();
                let after = &line[i + crate_name.len()..];
                !before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '"' || c == '-')
                    && after.starts_with("::")
            })
        })
        .map(str::to_owned)
        .collect()
}

#[test]
fn adapters_are_the_only_modules_naming_their_crates() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&root, &mut files);
    assert!(files.len() > 20, "found the sources");
    let rules: [(&str, &[&str]); 5] = [
        ("sqlx", &["db/"]),
        ("apalis", &["queue.rs"]),
        ("apalis_core", &["queue.rs"]),
        ("apalis_redis", &["queue.rs"]),
        ("redis", &["queue.rs"]),
    ];
    let rules = rules
        .into_iter()
        .chain(std::iter::once(("object_store", &["storage.rs"][..])));
    let mut wrong = Vec::new();
    for (krate, allowed) in rules {
        for file in &files {
            let rel = file.strip_prefix(&root).expect("under src");
            let rel = rel.to_string_lossy().replace('\\', "/");
            if allowed.iter().any(|a| rel.starts_with(a)) {
                continue;
            }
            let text = std::fs::read_to_string(file).expect("read");
            for line in uses(&text, krate) {
                wrong.push(format!("src/{rel} names {krate}: {}", line.trim()));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn the_boundary_check_sees_a_use() {
    assert_eq!(uses("    let x = sqlx::query(\"\");", "sqlx").len(), 1);
    assert!(uses("// sqlx::query", "sqlx").is_empty());
    assert!(uses("\"info,sqlx=warn\"", "sqlx").is_empty());
    assert_eq!(uses("use redis::Client;", "redis").len(), 1);
    assert!(uses("apalis_redis::connect", "redis").is_empty());
}

#[test]
fn every_job_kind_has_a_registered_handler() {
    let registered = copiste::jobs::registry::by_name();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/jobs");
    let mut files = Vec::new();
    sources(&root, &mut files);
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read");
        for line in text.lines() {
            let line = line.trim();
            if let Some(rest) = line
                .strip_prefix("const NAME: &'static str = \"")
                .or_else(|| line.strip_prefix("const NAME: &str = \""))
            {
                let name = rest.trim_end_matches("\";");
                assert!(
                    registered.contains_key(name),
                    "{} declares kind {name:?}, which jobs/registry.rs does not list",
                    file.display()
                );
            }
        }
    }
}

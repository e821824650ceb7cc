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
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../src");
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

/// The tools crate (benchmarks, rehearsal, demo data) names sqlx only in
/// its own adapter, `tools/src/queries.rs`; the command line never.
#[test]
fn the_tools_and_the_command_line_name_sqlx_only_in_the_tools_queries() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut wrong = Vec::new();
    for dir in ["tools/src", "cli/src"] {
        let mut files = Vec::new();
        sources(&repo.join(dir), &mut files);
        assert!(!files.is_empty(), "found the sources of {dir}");
        for file in files {
            if file.ends_with("tools/src/queries.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&file).expect("read");
            for krate in ["sqlx", "apalis", "redis", "object_store"] {
                for line in uses(&text, krate) {
                    wrong.push(format!("{} names {krate}: {}", file.display(), line.trim()));
                }
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
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../src/jobs");
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

/// The layers of ARCHITECTURE.md, lowest first: a module may name modules
/// of its own layer or below, never above.
const LAYERS: [&[&str]; 6] = [
    &["domain", "config", "memory", "rendered"],
    &["db", "storage", "queue", "export", "tls"],
    &["app", "op", "ledger"],
    &["closure", "render", "download", "import", "access"],
    &["jobs", "worker", "schedule", "telemetry"],
    &["local_services", "web"],
];

/// The top-level modules each top-level module names (`crate::x`, or `x`
/// inside a `use crate::{…}` group), outside comments and test modules.
fn module_graph() -> std::collections::BTreeMap<String, std::collections::BTreeSet<String>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../src");
    let mut files = Vec::new();
    sources(&root, &mut files);
    let modules: Vec<&str> = LAYERS.iter().flat_map(|l| l.iter().copied()).collect();
    let mut graph = std::collections::BTreeMap::new();
    for file in files {
        let rel = file.strip_prefix(&root).expect("under src");
        let top = rel
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .map(|s| s.trim_end_matches(".rs").to_owned())
            .expect("a name");
        if top == "lib" || top == "main" {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("read");
        // Unit tests sit at the end of a file, after `#[cfg(test)]`.
        let code = text.split("#[cfg(test)]").next().unwrap_or("");
        let code: String = code
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        let deps: &mut std::collections::BTreeSet<String> = graph.entry(top.clone()).or_default();
        for (i, _) in code.match_indices("crate::") {
            let rest = &code[i + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                // `use crate::{a, b::{c, d}, e::f}`: the names at depth 0.
                let mut depth = 0;
                let mut name = String::new();
                let mut at_start = true;
                for c in group.chars() {
                    match c {
                        '{' => depth += 1,
                        '}' if depth == 0 => break,
                        '}' => depth -= 1,
                        ',' if depth == 0 => at_start = true,
                        c if depth == 0 && at_start && (c.is_alphanumeric() || c == '_') => {
                            name.push(c)
                        }
                        _ if depth == 0 && at_start && !name.is_empty() => {
                            deps.insert(std::mem::take(&mut name));
                            at_start = false;
                        }
                        _ => {}
                    }
                }
                if !name.is_empty() {
                    deps.insert(name);
                }
            } else {
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                deps.insert(name);
            }
        }
        deps.retain(|d| d != &top && modules.contains(&d.as_str()));
    }
    graph
}

fn layer_of(module: &str) -> usize {
    LAYERS
        .iter()
        .position(|l| l.contains(&module))
        .unwrap_or_else(|| panic!("module {module} is in no layer of LAYERS"))
}

#[test]
fn modules_name_only_their_layer_or_below_and_none_import_each_other() {
    let graph = module_graph();
    assert!(graph.len() >= 20, "found the modules: {graph:?}");
    let mut wrong = Vec::new();
    for (module, deps) in &graph {
        for dep in deps {
            if layer_of(dep) > layer_of(module) {
                wrong.push(format!(
                    "{module} (layer {}) names {dep} (layer {})",
                    layer_of(module),
                    layer_of(dep)
                ));
            }
            if graph.get(dep).is_some_and(|d| d.contains(module)) && module < dep {
                wrong.push(format!("{module} and {dep} name each other"));
            }
        }
    }
    // Longer cycles within a layer: depth-first search.
    fn visit<'a>(
        m: &'a str,
        graph: &'a std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
        path: &mut Vec<&'a str>,
        done: &mut std::collections::BTreeSet<&'a str>,
        cycles: &mut Vec<String>,
    ) {
        if let Some(i) = path.iter().position(|p| *p == m) {
            cycles.push(format!("cycle: {} -> {m}", path[i..].join(" -> ")));
            return;
        }
        if !done.insert(m) {
            return;
        }
        path.push(m);
        for d in graph.get(m).into_iter().flatten() {
            visit(d, graph, path, done, cycles);
        }
        path.pop();
    }
    let mut done = std::collections::BTreeSet::new();
    for m in graph.keys() {
        visit(m, &graph, &mut Vec::new(), &mut done, &mut wrong);
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn the_module_graph_sees_grouped_and_plain_paths() {
    let graph = module_graph();
    let closure = &graph["closure"];
    assert!(
        closure.contains("db") && closure.contains("ledger"),
        "{closure:?}"
    );
    assert!(graph["web"].contains("op"), "{:?}", graph["web"]);
}

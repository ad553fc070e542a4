//! ARCHITECTURE.md's layering rules, written once as data and checked against `src/`: each
//! module of the crate may name only the modules its floor allows. A `crate::` path in code
//! (not in a comment, not in a `#[cfg(test)]` module) counts as an import.
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Each top-level module (a folder of `src/` or a file beside them) and what it may import.
/// The floors of ARCHITECTURE.md, from the bottom up.
const RULES: &[(&str, &[&str])] = &[
    ("transport", &[]),
    ("protocol", &[]),
    ("metrics", &["transport"]),
    ("topic", &["metrics"]),
    ("broker", &["topic"]),
    ("gate", &["metrics", "topic"]),
    ("webhook", &["metrics", "topic"]),
    ("presence", &["topic", "webhook"]),
    (
        "cluster",
        &["broker", "metrics", "presence", "topic", "webhook"],
    ),
    ("config", &["gate", "topic", "webhook"]),
    (
        "node",
        &[
            "broker",
            "config",
            "gate",
            "metrics",
            "presence",
            "topic",
            "transport",
            "webhook",
        ],
    ),
    (
        "session",
        &[
            "broker",
            "config",
            "gate",
            "metrics",
            "node",
            "presence",
            "protocol",
            "topic",
            "transport",
        ],
    ),
    (
        "error",
        &["gate", "protocol", "session", "topic", "transport"],
    ),
    (
        "atmosphere",
        &[
            "broker",
            "config",
            "error",
            "gate",
            "metrics",
            "node",
            "protocol",
            "session",
            "topic",
            "transport",
        ],
    ),
    (
        "cettia",
        &[
            "broker",
            "config",
            "error",
            "gate",
            "metrics",
            "node",
            "protocol",
            "session",
            "topic",
            "transport",
        ],
    ),
];

/// The edge, the crate root and the binary may import anything.
const ANYTHING: &[&str] = &["server", "lib", "main"];

/// The top-level modules each module of `src/` names in its code.
fn imports() -> BTreeMap<String, BTreeSet<(String, String)>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut found: BTreeMap<String, BTreeSet<(String, String)>> = BTreeMap::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let relative = path
                .strip_prefix(&src)
                .unwrap()
                .to_string_lossy()
                .to_string();
            let module = relative
                .split('/')
                .next()
                .unwrap()
                .trim_end_matches(".rs")
                .to_string();
            let text = std::fs::read_to_string(&path).unwrap();
            // Unit tests may reach anywhere.
            let code = text.split("#[cfg(test)]\nmod tests").next().unwrap();
            for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
                for named in crate_paths(line) {
                    if named != module {
                        let entry = found.entry(module.clone()).or_default();
                        entry.insert((named, relative.clone()));
                    }
                }
            }
        }
    }
    found
}

/// The first segment of each `crate::` path on `line`, `use crate::{a, b}` included.
fn crate_paths(line: &str) -> Vec<String> {
    let mut named = Vec::new();
    for (i, _) in line.match_indices("crate::") {
        let rest = &line[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = group.split('}').next().unwrap_or_default();
            named.extend(
                group
                    .split(',')
                    .filter_map(|part| first_segment(part.trim())),
            );
        } else {
            named.extend(first_segment(rest));
        }
    }
    named
}

fn first_segment(path: &str) -> Option<String> {
    let segment: String = path
        .chars()
        .take_while(|c| c.is_ascii_lowercase() || *c == '_')
        .collect();
    (!segment.is_empty()).then_some(segment)
}

#[test]
fn every_module_imports_only_what_its_floor_allows() {
    let rules: BTreeMap<&str, &[&str]> = RULES.iter().copied().collect();
    let mut broken = Vec::new();
    for (module, named) in imports() {
        if ANYTHING.contains(&module.as_str()) {
            continue;
        }
        let Some(allowed) = rules.get(module.as_str()) else {
            broken.push(format!(
                "{module}: no rule says what it may import; add one"
            ));
            continue;
        };
        for (target, file) in named {
            if !allowed.contains(&target.as_str()) {
                broken.push(format!("src/{file} imports crate::{target}"));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "imports against ARCHITECTURE.md's layering rules:\n{}",
        broken.join("\n")
    );
}

#[test]
fn the_checker_sees_grouped_and_plain_imports() {
    assert_eq!(
        crate_paths("use crate::{node::Node, session::Gate};"),
        ["node", "session"]
    );
    assert_eq!(crate_paths("    crate::server::run(x);"), ["server"]);
    assert!(crate_paths("no path here").is_empty());
}

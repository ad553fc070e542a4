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

/// Every source file of `src/`: its path under `src/` and its code without its unit tests
/// (which may reach anywhere) and without comment lines.
fn sources() -> Vec<(String, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut found = Vec::new();
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
            let text = std::fs::read_to_string(&path).unwrap();
            let code = text.split("#[cfg(test)]\nmod tests").next().unwrap();
            let code: Vec<&str> = code
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .collect();
            found.push((relative, code.join("\n")));
        }
    }
    found
}

/// The top-level modules each module of `src/` names in its code.
fn imports() -> BTreeMap<String, BTreeSet<(String, String)>> {
    let mut found: BTreeMap<String, BTreeSet<(String, String)>> = BTreeMap::new();
    for (relative, code) in sources() {
        let module = relative
            .split('/')
            .next()
            .unwrap()
            .trim_end_matches(".rs")
            .to_string();
        for line in code.lines() {
            for named in crate_paths(line) {
                if named != module {
                    let entry = found.entry(module.clone()).or_default();
                    entry.insert((named, relative.clone()));
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

/// Names in code that hold `socket` without being a Cettia socket: a WebSocket, the standard
/// library's and socket2's.
const NOT_A_CETTIA_SOCKET: &[&str] = &["websocket", "socketaddr", "socket2", "sockref"];

/// ARCHITECTURE.md's words: a *socket* is a Cettia socket, and only the Cettia modules (and the
/// names that say `Cettia`) name one; a WebSocket is a `WebSocket`, the TCP connection under it
/// a stream. Each identifier of code elsewhere that holds `socket` is listed.
#[test]
fn socket_means_a_cettia_socket_in_code() {
    let mut found = BTreeSet::new();
    for (relative, code) in sources() {
        if relative.starts_with("cettia/") || relative.starts_with("protocol/cettia/") {
            continue;
        }
        let code = without_strings(&code);
        let identifiers = code.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'));
        for identifier in identifiers {
            let lower = identifier.to_ascii_lowercase();
            let mut rest = lower.clone();
            for allowed in NOT_A_CETTIA_SOCKET {
                rest = rest.replace(allowed, "");
            }
            if rest.contains("socket") && !lower.contains("cettia") {
                found.insert(format!("src/{relative}: {identifier}"));
            }
        }
    }
    assert!(
        found.is_empty(),
        "`socket` outside the Cettia modules names something else (say WebSocket or stream):\n{}",
        found.into_iter().collect::<Vec<_>>().join("\n")
    );
}

/// `code` with the text of its string literals left out (they are prose, not names).
fn without_strings(code: &str) -> String {
    let mut out = String::with_capacity(code.len());
    let (mut in_string, mut escaped, mut previous) = (false, false, ' ');
    for c in code.chars() {
        match (in_string, escaped, c) {
            (true, true, _) => escaped = false,
            (true, false, '\\') => escaped = true,
            (true, false, '"') => in_string = false,
            (true, false, _) => {}
            // A quote in a character literal opens nothing.
            (false, _, '"') if previous == '\'' => {}
            (false, _, '"') => in_string = true,
            (false, _, c) => out.push(c),
        }
        previous = c;
    }
    out
}

#[test]
fn string_literals_are_not_names() {
    assert_eq!(
        without_strings(r#"f("a socket \" quoted", x_socket, '"')"#),
        "f(, x_socket, '')"
    );
}

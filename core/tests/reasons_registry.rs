//! docs/REASONS.md is the registry of reason tokens. These tests hold it, the
//! code's own list (`mqseal_core::formats::reasons`) and the sources together:
//!
//! - every token the registry lists is one the code can produce, and every
//!   token the code can produce is listed, once;
//! - the code's list is what the sources really return: every string a
//!   `reason()` function returns and every `DenyReason("...")` constant, in
//!   core, the plugin and the CLI;
//! - the audit vector log (docs/AUDIT.md §12) uses only registered tokens.
//!
//! When a branch adds a token, the failure names it and says where to add it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use mqseal_core::formats::reasons;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The tokens of the registry tables: the first cell of every table row
/// between the `registry:begin` and `registry:end` markers, in order.
fn registry_rows() -> Vec<String> {
    let doc = std::fs::read_to_string(repo().join("docs/REASONS.md")).expect("docs/REASONS.md");
    let begin = doc.find("<!-- registry:begin -->").expect("registry:begin marker in docs/REASONS.md");
    let end = doc.find("<!-- registry:end -->").expect("registry:end marker in docs/REASONS.md");
    doc[begin..end]
        .lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .map(|rest| rest.split('`').next().unwrap_or_default().to_string())
        .collect()
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// A source file without its unit tests (they come last, after `#[cfg(test)]`).
fn code_of(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    match text.find("\n#[cfg(test)]") {
        Some(at) => text[..at].to_string(),
        None => text,
    }
}

/// The string literals in `text` that look like tokens.
fn token_literals(text: &str) -> Vec<String> {
    text.split('"').skip(1).step_by(2).filter(|s| reasons::is_token(s)).map(str::to_string).collect()
}

/// The bodies of the `fn reason(` functions in `code`.
fn reason_fn_bodies(code: &str) -> Vec<&str> {
    let mut bodies = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("fn reason(") {
        let from = &rest[at..];
        let Some(open) = from.find('{') else { break };
        let mut depth = 0usize;
        let mut end = from.len();
        for (i, c) in from[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = open + i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        bodies.push(&from[open..end]);
        rest = &from[end..];
    }
    bodies
}

/// (token, file) for every token the sources can return.
fn tokens_in_sources() -> Vec<(String, String)> {
    let mut files = Vec::new();
    for dir in ["core/src", "plugin/src", "cli/src"] {
        rust_files(&repo().join(dir), &mut files);
    }
    let mut found = Vec::new();
    for path in files {
        let code = code_of(&path);
        let name = path.strip_prefix(repo()).unwrap_or(&path).display().to_string();
        for body in reason_fn_bodies(&code) {
            found.extend(token_literals(body).into_iter().map(|t| (t, name.clone())));
        }
        for piece in code.split("DenyReason(\"").skip(1) {
            let token = piece.split('"').next().unwrap_or_default();
            found.push((token.to_string(), name.clone()));
        }
        if name.ends_with("core/src/formats/reasons.rs") {
            for piece in code.split(": &str = \"").skip(1) {
                found.push((piece.split('"').next().unwrap_or_default().to_string(), name.clone()));
            }
        }
    }
    found
}

#[test]
fn the_registry_lists_every_token_of_the_code_once_and_nothing_else() {
    let rows = registry_rows();
    let mut seen = BTreeSet::new();
    let twice: Vec<_> = rows.iter().filter(|t| !seen.insert(t.as_str())).collect();
    assert!(twice.is_empty(), "docs/REASONS.md lists these tokens more than once: {twice:?}");
    let listed: BTreeSet<&str> = rows.iter().map(String::as_str).collect();
    let code = reasons::all();
    let unlisted: Vec<_> = code.difference(&listed).collect();
    assert!(
        unlisted.is_empty(),
        "the code can produce these tokens, but docs/REASONS.md does not list them: {unlisted:?}\n\
         add a row for each to its family's table (or to §2.12 Pending)"
    );
    let unknown: Vec<_> = listed.difference(&code).collect();
    assert!(
        unknown.is_empty(),
        "docs/REASONS.md lists tokens no code produces: {unknown:?}\n\
         remove them, or add them to their type's list in core/src/formats/reasons.rs if the code does produce them"
    );
}

/// The binding-only tokens: the first cell of each row between `bindings:begin` and `bindings:end`.
fn binding_rows() -> Vec<String> {
    let doc = std::fs::read_to_string(repo().join("docs/REASONS.md")).expect("docs/REASONS.md");
    let begin = doc.find("<!-- bindings:begin -->").expect("bindings:begin marker in docs/REASONS.md");
    let end = doc.find("<!-- bindings:end -->").expect("bindings:end marker in docs/REASONS.md");
    doc[begin..end]
        .lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .map(|rest| rest.split('`').next().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn binding_tokens_are_well_formed_and_not_produced_by_core() {
    let rows = binding_rows();
    assert!(!rows.is_empty());
    let all = reasons::all();
    let registry: BTreeSet<String> = registry_rows().into_iter().collect();
    let mut seen = BTreeSet::new();
    for token in &rows {
        assert!(reasons::is_token(token), "{token:?}");
        assert!(seen.insert(token), "{token} listed twice");
        assert!(!all.contains(token.as_str()) && !registry.contains(token), "{token} is a core token: list it in §2 only");
    }
}

#[test]
fn the_code_list_is_what_the_sources_return() {
    let code = reasons::all();
    let found = tokens_in_sources();
    let missing: Vec<_> = found.iter().filter(|(t, _)| !code.contains(t.as_str())).collect();
    assert!(
        missing.is_empty(),
        "these tokens are returned by the code but not in core/src/formats/reasons.rs FAMILIES (add them there and to docs/REASONS.md): {missing:?}"
    );
    let returned: BTreeSet<&str> = found.iter().map(|(t, _)| t.as_str()).collect();
    let dead: Vec<_> = code.iter().filter(|t| !returned.contains(*t)).collect();
    assert!(dead.is_empty(), "core/src/formats/reasons.rs lists tokens no reason() function or DenyReason constant returns: {dead:?}");
}

#[test]
fn the_scanner_sees_the_known_shapes() {
    // Guards the scan above: if the sources changed shape, it must not go blind.
    let found: BTreeSet<String> = tokens_in_sources().into_iter().map(|(t, _)| t).collect();
    for token in ["replay", "wrong-group", "login-reused", "malformed-cbor", "epoch-future", "seq-locked", "flood", "file-io"] {
        assert!(found.contains(token), "{token} not found by the source scan");
    }
}

#[test]
fn kicks_and_stops_name_their_token_through_the_registry_constants() {
    // A literal here would escape the scan; the engine uses reasons::FLOOD etc.
    let mut files = Vec::new();
    rust_files(&repo().join("core/src/broker/engine"), &mut files);
    for path in files {
        let code = code_of(&path);
        for line in code.lines().filter(|l| l.contains(".kick(") || l.contains("PluginStop {")) {
            assert!(
                token_literals(line).is_empty(),
                "{}: `{}` passes a literal reason; use a constant of core/src/formats/reasons.rs",
                path.display(),
                line.trim()
            );
        }
    }
}

#[test]
fn the_audit_vector_log_uses_only_registered_tokens() {
    let log = std::fs::read_to_string(repo().join("docs/vectors/audit.jsonl")).unwrap();
    let all = reasons::all();
    let mut checked = 0;
    for line in log.lines() {
        let record: serde_json::Value = serde_json::from_str(line).unwrap();
        if let Some(reason) = record["facts"]["reason"].as_str() {
            // policy.rejected from a push carries "TOKEN: detail".
            let token = reason.split(':').next().unwrap_or_default();
            assert!(all.contains(token), "audit.jsonl record {}: reason {reason:?} is not a registered token", record["index"]);
            checked += 1;
        }
    }
    assert!(checked >= 3, "the vector log should show refusals ({checked} reasons found)");
}

#[test]
fn the_renamed_device_tokens_are_gone() {
    // Issue 15: one name per condition on both sides.
    let all = reasons::all();
    for old in ["replayed-seq", "group-mismatch", "not-a-member"] {
        assert!(!all.contains(old), "{old}");
    }
}

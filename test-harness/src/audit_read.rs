//! Reading what a test's broker wrote: its audit log (through `mqseal audit
//! tail --json`, the tool's own reader, or as raw JSON lines) and the text of a
//! client's run. One copy here for every test file.

use std::path::Path;
use std::process::Output;

use serde_json::Value;

use crate::broker::Broker;
use crate::fleet::mqseal;

/// A finished command's stdout and stderr, as one text (for messages and matching).
pub fn output_text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// The broker's audit records of `kind` (its `audit.jsonl`), as `mqseal audit tail --json` prints them.
pub fn audit_records(broker: &Broker, kind: &str) -> Vec<Value> {
    let log = broker.path("audit.jsonl");
    let out = mqseal(&["audit", "tail", log.to_str().unwrap(), "-n", "100000", "--json", "--kind", kind], None);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("audit line {l:?}: {e}")))
        .collect()
}

/// Every record of an audit log file, parsed as written (JSON Lines).
pub fn log_records(path: &Path) -> Vec<Value> {
    let body = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    body.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("record is not JSON ({e}): {l}"))).collect()
}

/// The records of `kind` among `records`.
pub fn of_kind<'a>(records: &'a [Value], kind: &str) -> Vec<&'a Value> {
    records.iter().filter(|r| r["kind"] == kind).collect()
}

/// A fact of a record (under `facts` in the file, at the top level in `tail --json`); Null if absent.
pub fn fact<'a>(record: &'a Value, name: &str) -> &'a Value {
    record.get("facts").and_then(|f| f.get(name)).or_else(|| record.get(name)).unwrap_or(&Value::Null)
}

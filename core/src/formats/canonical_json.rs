//! Canonical JSON (RFC 8785 / JCS, restricted to integers): the bytes that
//! mqseal hashes and signs for the policy file, key bundles and audit records.
//!
//! serde_json already writes what JCS requires for our subset: object keys sorted
//! by code point (its Map is a BTreeMap), no insignificant whitespace, strings
//! escaped with the short forms \b \f \n \r \t \" \\ and \u00XX (lowercase hex)
//! for other control characters, everything else as raw UTF-8. Floats are
//! refused, since JCS's number formatting is the one place they would differ.

use serde::Serialize;
use serde_json::Value;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CanonicalJsonError {
    #[error("non-integer number at {0}: canonical JSON here carries integers only")]
    Float(String),
    #[error("cannot serialize: {0}")]
    Serialize(String),
}

/// Serializes any value to canonical JSON bytes.
pub fn to_vec<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CanonicalJsonError> {
    let value = serde_json::to_value(value).map_err(|e| CanonicalJsonError::Serialize(e.to_string()))?;
    value_to_vec(&value)
}

/// Serializes a JSON value to canonical bytes.
pub fn value_to_vec(value: &Value) -> Result<Vec<u8>, CanonicalJsonError> {
    reject_floats(value, &mut String::from("$"))?;
    serde_json::to_vec(value).map_err(|e| CanonicalJsonError::Serialize(e.to_string()))
}

/// True when `bytes` are exactly the canonical form of the JSON they hold.
pub fn is_canonical(bytes: &[u8]) -> bool {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(value) => value_to_vec(&value).map(|c| c == bytes).unwrap_or(false),
        Err(_) => false,
    }
}

fn reject_floats(value: &Value, path: &mut String) -> Result<(), CanonicalJsonError> {
    match value {
        Value::Number(n) if !(n.is_i64() || n.is_u64()) => Err(CanonicalJsonError::Float(path.clone())),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                reject_floats(item, path)?;
                path.truncate(len);
            }
            Ok(())
        }
        Value::Object(map) => {
            for (key, item) in map {
                let len = path.len();
                path.push('.');
                path.push_str(key);
                reject_floats(item, path)?;
                path.truncate(len);
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sorts_keys_and_drops_whitespace() {
        let v = json!({"b": 1, "a": [true, null, "x"], "\u{e9}": {"z": -2, "y": "\n\u{1}"}});
        assert_eq!(
            String::from_utf8(value_to_vec(&v).unwrap()).unwrap(),
            "{\"a\":[true,null,\"x\"],\"b\":1,\"\u{e9}\":{\"y\":\"\\n\\u0001\",\"z\":-2}}"
        );
    }

    #[test]
    fn refuses_floats_with_their_path() {
        let err = value_to_vec(&json!({"a": [1, {"b": 1.5}]})).unwrap_err();
        assert_eq!(err, CanonicalJsonError::Float("$.a[1].b".into()));
    }

    #[test]
    fn recognises_non_canonical_bytes() {
        assert!(is_canonical(br#"{"a":1,"b":2}"#));
        assert!(!is_canonical(br#"{"b":2,"a":1}"#));
        assert!(!is_canonical(br#"{"a": 1}"#));
    }
}

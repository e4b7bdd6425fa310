//! Identifier syntax shared by devices, groups and brokers.
//!
//! An id is `[A-Za-z0-9][A-Za-z0-9._-]{0,63}`: it can never contain an MQTT
//! wildcard (`+`, `#`), a topic level separator (`/`), `$` (reserved by brokers
//! for system topics), whitespace or non-ASCII, so an id can be substituted into
//! a topic filter or a file name without escaping, and it can never be `.` or `..`.

/// Longest id accepted, in bytes.
pub const MAX_ID_LEN: usize = 64;

/// Why an id was refused. `kind` is what the caller was validating ("device", "group", ...).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{kind} id is empty")]
    Empty { kind: String },
    #[error("{kind} id is {len} bytes long; the limit is {MAX_ID_LEN}")]
    TooLong { kind: String, len: usize },
    #[error("{kind} id {id:?} must start with a letter or digit, not {ch:?}")]
    BadFirst { kind: String, id: String, ch: char },
    #[error("{kind} id {id:?} contains {ch:?} at byte {at}; only A-Z a-z 0-9 . _ - are allowed")]
    BadChar { kind: String, id: String, ch: char, at: usize },
}

/// Checks `s` against the id syntax; `kind` names the id in the error ("device", "group", "broker").
pub fn validate_id(kind: &str, s: &str) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty { kind: kind.to_owned() });
    }
    if s.len() > MAX_ID_LEN {
        return Err(IdError::TooLong { kind: kind.to_owned(), len: s.len() });
    }
    for (at, ch) in s.char_indices() {
        let allowed = ch.is_ascii_alphanumeric() || (at > 0 && matches!(ch, '.' | '_' | '-'));
        if !allowed {
            // Keep the echoed id short and printable: it may come from the network.
            let id: String = s.chars().take(MAX_ID_LEN).collect();
            return Err(if at == 0 {
                IdError::BadFirst { kind: kind.to_owned(), id, ch }
            } else {
                IdError::BadChar { kind: kind.to_owned(), id, ch, at }
            });
        }
    }
    Ok(())
}

/// True when `s` is a valid id (no allocation; for hot paths).
pub fn is_valid_id(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_ID_LEN
        && b[0].is_ascii_alphanumeric()
        && b[1..].iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_valid_ids() {
        for id in ["1111", "a", "sensor-01", "Temp_Sensor.3", &"x".repeat(64)] {
            assert_eq!(validate_id("device", id), Ok(()), "{id}");
            assert!(is_valid_id(id));
        }
    }

    #[test]
    fn refuses_invalid_ids_with_kind_and_reason() {
        let cases = [
            ("", "device id is empty"),
            ("a/b", "'/'"),
            ("a+b", "'+'"),
            ("a#", "'#'"),
            ("$SYS", "must start"),
            ("-a", "must start"),
            (".", "must start"),
            ("..", "must start"),
            ("a b", "' '"),
            ("a\nb", "'\\n'"),
            ("é", "must start"),
            ("aé", "'é'"),
        ];
        for (id, needle) in cases {
            let err = validate_id("device", id).unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains("device id"), "{msg}");
            assert!(msg.contains(needle), "{id:?}: {msg}");
            assert!(!is_valid_id(id));
        }
        let long = "x".repeat(65);
        assert!(validate_id("group", &long).unwrap_err().to_string().starts_with("group id is 65 bytes"));
        assert!(!is_valid_id(&long));
    }
}

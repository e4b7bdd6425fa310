//! The C result codes are the device core's reason tokens: every token the
//! core can give has its own code, each code's name in `include/mqseal.h` is
//! its token spelled `MQSEAL_UPPER_CASE`, and no number is used twice. A token
//! renamed or added in core fails here, in the one table to update
//! (device-ffi/src/result.rs), instead of quietly becoming another code.

use std::collections::BTreeSet;
use std::ffi::CStr;

use mqseal_core::device::device_reasons;
use mqseal_device::result::{mqseal_result, mqseal_result_token};

/// The binding's own codes: misuse of the interface and a caught panic, not
/// refusals (docs/REASONS.md §3).
const LIBRARY_OWN: [&str; 2] = ["invalid-argument", "internal-error"];

fn c_name(token: &str) -> String {
    format!("MQSEAL_{}", token.to_ascii_uppercase().replace('-', "_"))
}

#[test]
fn every_reason_the_device_core_gives_has_its_own_code() {
    let reasons = device_reasons();
    for token in &reasons {
        let code = mqseal_result::from_token(token);
        assert_eq!(code.token(), *token, "core reason {token:?} has no C code: add it to device-ffi/src/result.rs");
    }
    for code in mqseal_result::ALL_ERRORS {
        let token = code.token();
        assert!(
            reasons.contains(token) || LIBRARY_OWN.contains(&token),
            "code {code:?} has token {token:?}, which the device core no longer gives (renamed?)"
        );
    }
}

#[test]
fn the_header_names_each_code_after_its_token_and_numbers_are_unique() {
    let header = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../include/mqseal.h")).expect("read header");
    let mut numbers = BTreeSet::new();
    for code in std::iter::once(mqseal_result::MQSEAL_OK).chain(mqseal_result::ALL_ERRORS.iter().copied()) {
        let number = code as i32;
        assert!(numbers.insert(number), "number {number} used twice");
        let name = if code == mqseal_result::MQSEAL_OK { "MQSEAL_OK".to_string() } else { c_name(code.token()) };
        assert!(header.contains(&format!("  {name} = {number},")), "include/mqseal.h lacks `{name} = {number}`");
        // SAFETY: mqseal_result_token returns a static NUL-terminated string.
        let from_c = unsafe { CStr::from_ptr(mqseal_result_token(number)) }.to_str().unwrap();
        assert_eq!(from_c, code.token());
    }
    // SAFETY: as above.
    assert_eq!(unsafe { CStr::from_ptr(mqseal_result_token(-1)) }.to_str().unwrap(), "unknown");
    assert_eq!(unsafe { CStr::from_ptr(mqseal_result_token(99_999)) }.to_str().unwrap(), "unknown");
}

/// Every code's token is in the registry (`docs/REASONS.md`): refusals in §2,
/// the binding's own `invalid-argument` in §3.
#[test]
fn every_code_is_in_the_reason_registry() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/REASONS.md");
    let registry = std::fs::read_to_string(path).expect("read docs/REASONS.md");
    for code in mqseal_result::ALL_ERRORS {
        let token = code.token();
        assert!(registry.contains(&format!("`{token}`")), "docs/REASONS.md does not list `{token}` (C code {code:?})");
    }
}

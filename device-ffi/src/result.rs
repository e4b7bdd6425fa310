//! Result codes: one per reason token, so a C program can switch on the
//! reason a message was refused, and the thread's last error message.
//!
//! This file is the one place where core's reason tokens become C codes:
//! [`mqseal_result::token`] and [`mqseal_result::from_token`] below. Each
//! variant is the token in upper case with `_` for `-`, prefixed `MQSEAL_`
//! (`wrong-group` is `MQSEAL_WRONG_GROUP`); `tests/result_codes.rs` checks
//! that against every token the device core can give (`device_reasons()`), so a
//! token renamed in core fails that test here rather than silently becoming
//! another code. The numbers are stable: a code keeps its number when its
//! token is renamed, new ones take new numbers, none is reused.

use std::cell::RefCell;
use std::os::raw::{c_char, c_int};

use crate::boundary::guard_value;

/// What a call did: MQSEAL_OK, or the reason it failed (see `docs/REASONS.md`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum mqseal_result {
    /// Success.
    MQSEAL_OK = 0,
    // the library itself
    /// `invalid-argument`
    MQSEAL_INVALID_ARGUMENT = 1,
    /// `internal-error`
    MQSEAL_INTERNAL_ERROR = 2,
    // the device directory, its files and locks
    /// `file-io`
    MQSEAL_FILE_IO = 100,
    /// `other-authority`
    MQSEAL_OTHER_AUTHORITY = 101,
    /// `not-joined`
    MQSEAL_NOT_JOINED = 102,
    /// `not-in-policy`
    MQSEAL_NOT_IN_POLICY = 103,
    /// `device-state-corrupt`
    MQSEAL_DEVICE_STATE_CORRUPT = 104,
    /// `replay-locked`
    MQSEAL_REPLAY_LOCKED = 105,
    /// `seq-missing`
    MQSEAL_SEQ_MISSING = 106,
    /// `seq-corrupt`
    MQSEAL_SEQ_CORRUPT = 107,
    /// `seq-locked`
    MQSEAL_SEQ_LOCKED = 108,
    /// `seq-exhausted`
    MQSEAL_SEQ_EXHAUSTED = 109,
    /// `identity-malformed`
    MQSEAL_IDENTITY_MALFORMED = 110,
    /// `no-identity`
    MQSEAL_NO_IDENTITY = 111,
    /// `several-identities`
    MQSEAL_SEVERAL_IDENTITIES = 112,
    /// `identity-id-mismatch`
    MQSEAL_IDENTITY_ID_MISMATCH = 113,
    /// `identity-key-mismatch`
    MQSEAL_IDENTITY_KEY_MISMATCH = 114,
    /// `file-exists`
    MQSEAL_FILE_EXISTS = 115,
    /// `identity-reserved-id`
    MQSEAL_IDENTITY_RESERVED_ID = 116,
    /// `key-permissions`
    MQSEAL_KEY_PERMISSIONS = 117,
    /// `key-not-a-file`
    MQSEAL_KEY_NOT_A_FILE = 118,
    /// `key-malformed`
    MQSEAL_KEY_MALFORMED = 119,
    // 120 was `key-unsupported-alg` (now `key-wrong-kind`: the message names the
    // algorithm found and the one expected); never reused.
    /// `key-wrong-kind`
    MQSEAL_KEY_WRONG_KIND = 121,
    /// `key-bad-public`
    MQSEAL_KEY_BAD_PUBLIC = 122,
    /// `key-non-contributory`
    MQSEAL_KEY_NON_CONTRIBUTORY = 123,
    // control documents (policy and bundle updates)
    /// `doc-io`
    MQSEAL_DOC_IO = 200,
    /// `doc-too-large`
    MQSEAL_DOC_TOO_LARGE = 201,
    /// `doc-malformed`
    MQSEAL_DOC_MALFORMED = 202,
    /// `doc-wrong-format`
    MQSEAL_DOC_WRONG_FORMAT = 203,
    /// `doc-unsupported-alg`
    MQSEAL_DOC_UNSUPPORTED_ALG = 204,
    /// `doc-wrong-authority`
    MQSEAL_DOC_WRONG_AUTHORITY = 205,
    /// `doc-bad-signature`
    MQSEAL_DOC_BAD_SIGNATURE = 206,
    /// `doc-bad-authority-key`
    MQSEAL_DOC_BAD_AUTHORITY_KEY = 207,
    /// `doc-key`
    MQSEAL_DOC_KEY = 208,
    /// `doc-serialize`
    MQSEAL_DOC_SERIALIZE = 209,
    /// `policy-syntax`
    MQSEAL_POLICY_SYNTAX = 210,
    /// `policy-invalid`
    MQSEAL_POLICY_INVALID = 211,
    /// `policy-not-newer`
    MQSEAL_POLICY_NOT_NEWER = 212,
    // 213 was `policy-io` (removed from core: it could not occur); never reused.
    /// `bundle-syntax`
    MQSEAL_BUNDLE_SYNTAX = 214,
    /// `bundle-invalid`
    MQSEAL_BUNDLE_INVALID = 215,
    /// `bundle-wrong-device`
    MQSEAL_BUNDLE_WRONG_DEVICE = 216,
    /// `bundle-wrong-kx-key`
    MQSEAL_BUNDLE_WRONG_KX_KEY = 217,
    /// `bundle-key-malformed`
    MQSEAL_BUNDLE_KEY_MALFORMED = 218,
    /// `bundle-key-unwrap`
    MQSEAL_BUNDLE_KEY_UNWRAP = 219,
    /// `bundle-wrap`
    MQSEAL_BUNDLE_WRAP = 220,
    /// `policy-key-mismatch`
    MQSEAL_POLICY_KEY_MISMATCH = 221,
    /// `bundle-not-newer`
    MQSEAL_BUNDLE_NOT_NEWER = 222,
    /// `bundle-behind-policy`
    MQSEAL_BUNDLE_BEHIND_POLICY = 223,
    // topics
    /// `topic-empty`
    MQSEAL_TOPIC_EMPTY = 300,
    /// `topic-too-long`
    MQSEAL_TOPIC_TOO_LONG = 301,
    /// `topic-nul`
    MQSEAL_TOPIC_NUL = 302,
    /// `topic-control-char`
    MQSEAL_TOPIC_CONTROL_CHAR = 303,
    /// `topic-noncharacter`
    MQSEAL_TOPIC_NONCHARACTER = 304,
    /// `topic-wildcard-in-name`
    MQSEAL_TOPIC_WILDCARD_IN_NAME = 305,
    /// `filter-plus-not-whole-level`
    MQSEAL_FILTER_PLUS_NOT_WHOLE_LEVEL = 306,
    /// `filter-hash-not-whole-level`
    MQSEAL_FILTER_HASH_NOT_WHOLE_LEVEL = 307,
    /// `filter-hash-not-last`
    MQSEAL_FILTER_HASH_NOT_LAST = 308,
    /// `filter-too-deep`
    MQSEAL_FILTER_TOO_DEEP = 309,
    /// `share-without-filter`
    MQSEAL_SHARE_WITHOUT_FILTER = 310,
    /// `share-bad-name`
    MQSEAL_SHARE_BAD_NAME = 311,
    // sealing and opening
    /// `not-protected`
    MQSEAL_NOT_PROTECTED = 400,
    /// `wrong-group`
    MQSEAL_WRONG_GROUP = 401,
    /// `unknown-sender`
    MQSEAL_UNKNOWN_SENDER = 402,
    /// `not-a-publisher`
    MQSEAL_NOT_A_PUBLISHER = 403,
    /// `no-key`
    MQSEAL_NO_KEY = 404,
    /// `replay`
    MQSEAL_REPLAY = 405,
    /// `replay-state`
    MQSEAL_REPLAY_STATE = 406,
    /// `epoch-previous-expired`
    MQSEAL_EPOCH_PREVIOUS_EXPIRED = 407,
    /// `epoch-too-old`
    MQSEAL_EPOCH_TOO_OLD = 408,
    /// `epoch-future`
    MQSEAL_EPOCH_FUTURE = 409,
    // the envelope
    /// `too-large`
    MQSEAL_TOO_LARGE = 500,
    /// `malformed-cbor`
    MQSEAL_MALFORMED_CBOR = 501,
    /// `non-deterministic-cbor`
    MQSEAL_NON_DETERMINISTIC_CBOR = 502,
    /// `indefinite-length`
    MQSEAL_INDEFINITE_LENGTH = 503,
    /// `trailing-bytes`
    MQSEAL_TRAILING_BYTES = 504,
    /// `not-sign1`
    MQSEAL_NOT_SIGN1 = 505,
    /// `not-encrypt0`
    MQSEAL_NOT_ENCRYPT0 = 506,
    /// `unprotected-not-empty`
    MQSEAL_UNPROTECTED_NOT_EMPTY = 507,
    /// `unsupported-alg`
    MQSEAL_UNSUPPORTED_ALG = 508,
    /// `unknown-critical-header`
    MQSEAL_UNKNOWN_CRITICAL_HEADER = 509,
    /// `unknown-header`
    MQSEAL_UNKNOWN_HEADER = 510,
    /// `duplicate-header`
    MQSEAL_DUPLICATE_HEADER = 511,
    /// `missing-header`
    MQSEAL_MISSING_HEADER = 512,
    /// `bad-header`
    MQSEAL_BAD_HEADER = 513,
    /// `key-alg-mismatch`
    MQSEAL_KEY_ALG_MISMATCH = 514,
    /// `bad-signature`
    MQSEAL_BAD_SIGNATURE = 515,
    /// `decrypt-failed`
    MQSEAL_DECRYPT_FAILED = 516,
    /// `bad-seal-input`
    MQSEAL_BAD_SEAL_INPUT = 517,
    /// `unexpected-float`
    MQSEAL_UNEXPECTED_FLOAT = 518,
    /// `unexpected-simple-value`
    MQSEAL_UNEXPECTED_SIMPLE_VALUE = 519,
    /// `unexpected-tag`
    MQSEAL_UNEXPECTED_TAG = 520,
    /// `invalid-utf8`
    MQSEAL_INVALID_UTF8 = 521,
}

impl mqseal_result {
    /// Every code but MQSEAL_OK, for tests and documentation.
    pub const ALL_ERRORS: &'static [mqseal_result] = &[
        mqseal_result::MQSEAL_INVALID_ARGUMENT,
        mqseal_result::MQSEAL_INTERNAL_ERROR,
        mqseal_result::MQSEAL_FILE_IO,
        mqseal_result::MQSEAL_OTHER_AUTHORITY,
        mqseal_result::MQSEAL_NOT_JOINED,
        mqseal_result::MQSEAL_NOT_IN_POLICY,
        mqseal_result::MQSEAL_DEVICE_STATE_CORRUPT,
        mqseal_result::MQSEAL_REPLAY_LOCKED,
        mqseal_result::MQSEAL_SEQ_MISSING,
        mqseal_result::MQSEAL_SEQ_CORRUPT,
        mqseal_result::MQSEAL_SEQ_LOCKED,
        mqseal_result::MQSEAL_SEQ_EXHAUSTED,
        mqseal_result::MQSEAL_IDENTITY_MALFORMED,
        mqseal_result::MQSEAL_NO_IDENTITY,
        mqseal_result::MQSEAL_SEVERAL_IDENTITIES,
        mqseal_result::MQSEAL_IDENTITY_ID_MISMATCH,
        mqseal_result::MQSEAL_IDENTITY_KEY_MISMATCH,
        mqseal_result::MQSEAL_FILE_EXISTS,
        mqseal_result::MQSEAL_IDENTITY_RESERVED_ID,
        mqseal_result::MQSEAL_KEY_PERMISSIONS,
        mqseal_result::MQSEAL_KEY_NOT_A_FILE,
        mqseal_result::MQSEAL_KEY_MALFORMED,
        mqseal_result::MQSEAL_KEY_WRONG_KIND,
        mqseal_result::MQSEAL_KEY_BAD_PUBLIC,
        mqseal_result::MQSEAL_KEY_NON_CONTRIBUTORY,
        mqseal_result::MQSEAL_DOC_IO,
        mqseal_result::MQSEAL_DOC_TOO_LARGE,
        mqseal_result::MQSEAL_DOC_MALFORMED,
        mqseal_result::MQSEAL_DOC_WRONG_FORMAT,
        mqseal_result::MQSEAL_DOC_UNSUPPORTED_ALG,
        mqseal_result::MQSEAL_DOC_WRONG_AUTHORITY,
        mqseal_result::MQSEAL_DOC_BAD_SIGNATURE,
        mqseal_result::MQSEAL_DOC_BAD_AUTHORITY_KEY,
        mqseal_result::MQSEAL_DOC_KEY,
        mqseal_result::MQSEAL_DOC_SERIALIZE,
        mqseal_result::MQSEAL_POLICY_SYNTAX,
        mqseal_result::MQSEAL_POLICY_INVALID,
        mqseal_result::MQSEAL_POLICY_NOT_NEWER,
        mqseal_result::MQSEAL_BUNDLE_SYNTAX,
        mqseal_result::MQSEAL_BUNDLE_INVALID,
        mqseal_result::MQSEAL_BUNDLE_WRONG_DEVICE,
        mqseal_result::MQSEAL_BUNDLE_WRONG_KX_KEY,
        mqseal_result::MQSEAL_BUNDLE_KEY_MALFORMED,
        mqseal_result::MQSEAL_BUNDLE_KEY_UNWRAP,
        mqseal_result::MQSEAL_BUNDLE_WRAP,
        mqseal_result::MQSEAL_POLICY_KEY_MISMATCH,
        mqseal_result::MQSEAL_BUNDLE_NOT_NEWER,
        mqseal_result::MQSEAL_BUNDLE_BEHIND_POLICY,
        mqseal_result::MQSEAL_TOPIC_EMPTY,
        mqseal_result::MQSEAL_TOPIC_TOO_LONG,
        mqseal_result::MQSEAL_TOPIC_NUL,
        mqseal_result::MQSEAL_TOPIC_CONTROL_CHAR,
        mqseal_result::MQSEAL_TOPIC_NONCHARACTER,
        mqseal_result::MQSEAL_TOPIC_WILDCARD_IN_NAME,
        mqseal_result::MQSEAL_FILTER_PLUS_NOT_WHOLE_LEVEL,
        mqseal_result::MQSEAL_FILTER_HASH_NOT_WHOLE_LEVEL,
        mqseal_result::MQSEAL_FILTER_HASH_NOT_LAST,
        mqseal_result::MQSEAL_FILTER_TOO_DEEP,
        mqseal_result::MQSEAL_SHARE_WITHOUT_FILTER,
        mqseal_result::MQSEAL_SHARE_BAD_NAME,
        mqseal_result::MQSEAL_NOT_PROTECTED,
        mqseal_result::MQSEAL_WRONG_GROUP,
        mqseal_result::MQSEAL_UNKNOWN_SENDER,
        mqseal_result::MQSEAL_NOT_A_PUBLISHER,
        mqseal_result::MQSEAL_NO_KEY,
        mqseal_result::MQSEAL_REPLAY,
        mqseal_result::MQSEAL_REPLAY_STATE,
        mqseal_result::MQSEAL_EPOCH_PREVIOUS_EXPIRED,
        mqseal_result::MQSEAL_EPOCH_TOO_OLD,
        mqseal_result::MQSEAL_EPOCH_FUTURE,
        mqseal_result::MQSEAL_TOO_LARGE,
        mqseal_result::MQSEAL_MALFORMED_CBOR,
        mqseal_result::MQSEAL_NON_DETERMINISTIC_CBOR,
        mqseal_result::MQSEAL_INDEFINITE_LENGTH,
        mqseal_result::MQSEAL_TRAILING_BYTES,
        mqseal_result::MQSEAL_NOT_SIGN1,
        mqseal_result::MQSEAL_NOT_ENCRYPT0,
        mqseal_result::MQSEAL_UNPROTECTED_NOT_EMPTY,
        mqseal_result::MQSEAL_UNSUPPORTED_ALG,
        mqseal_result::MQSEAL_UNKNOWN_CRITICAL_HEADER,
        mqseal_result::MQSEAL_UNKNOWN_HEADER,
        mqseal_result::MQSEAL_DUPLICATE_HEADER,
        mqseal_result::MQSEAL_MISSING_HEADER,
        mqseal_result::MQSEAL_BAD_HEADER,
        mqseal_result::MQSEAL_KEY_ALG_MISMATCH,
        mqseal_result::MQSEAL_BAD_SIGNATURE,
        mqseal_result::MQSEAL_DECRYPT_FAILED,
        mqseal_result::MQSEAL_BAD_SEAL_INPUT,
        mqseal_result::MQSEAL_UNEXPECTED_FLOAT,
        mqseal_result::MQSEAL_UNEXPECTED_SIMPLE_VALUE,
        mqseal_result::MQSEAL_UNEXPECTED_TAG,
        mqseal_result::MQSEAL_INVALID_UTF8,
    ];

    /// The reason token of a code ("ok" for MQSEAL_OK).
    pub fn token(self) -> &'static str {
        match self {
            mqseal_result::MQSEAL_OK => "ok",
            mqseal_result::MQSEAL_INVALID_ARGUMENT => "invalid-argument",
            mqseal_result::MQSEAL_INTERNAL_ERROR => "internal-error",
            mqseal_result::MQSEAL_FILE_IO => "file-io",
            mqseal_result::MQSEAL_OTHER_AUTHORITY => "other-authority",
            mqseal_result::MQSEAL_NOT_JOINED => "not-joined",
            mqseal_result::MQSEAL_NOT_IN_POLICY => "not-in-policy",
            mqseal_result::MQSEAL_DEVICE_STATE_CORRUPT => "device-state-corrupt",
            mqseal_result::MQSEAL_REPLAY_LOCKED => "replay-locked",
            mqseal_result::MQSEAL_SEQ_MISSING => "seq-missing",
            mqseal_result::MQSEAL_SEQ_CORRUPT => "seq-corrupt",
            mqseal_result::MQSEAL_SEQ_LOCKED => "seq-locked",
            mqseal_result::MQSEAL_SEQ_EXHAUSTED => "seq-exhausted",
            mqseal_result::MQSEAL_IDENTITY_MALFORMED => "identity-malformed",
            mqseal_result::MQSEAL_NO_IDENTITY => "no-identity",
            mqseal_result::MQSEAL_SEVERAL_IDENTITIES => "several-identities",
            mqseal_result::MQSEAL_IDENTITY_ID_MISMATCH => "identity-id-mismatch",
            mqseal_result::MQSEAL_IDENTITY_KEY_MISMATCH => "identity-key-mismatch",
            mqseal_result::MQSEAL_FILE_EXISTS => "file-exists",
            mqseal_result::MQSEAL_IDENTITY_RESERVED_ID => "identity-reserved-id",
            mqseal_result::MQSEAL_KEY_PERMISSIONS => "key-permissions",
            mqseal_result::MQSEAL_KEY_NOT_A_FILE => "key-not-a-file",
            mqseal_result::MQSEAL_KEY_MALFORMED => "key-malformed",
            mqseal_result::MQSEAL_KEY_WRONG_KIND => "key-wrong-kind",
            mqseal_result::MQSEAL_KEY_BAD_PUBLIC => "key-bad-public",
            mqseal_result::MQSEAL_KEY_NON_CONTRIBUTORY => "key-non-contributory",
            mqseal_result::MQSEAL_DOC_IO => "doc-io",
            mqseal_result::MQSEAL_DOC_TOO_LARGE => "doc-too-large",
            mqseal_result::MQSEAL_DOC_MALFORMED => "doc-malformed",
            mqseal_result::MQSEAL_DOC_WRONG_FORMAT => "doc-wrong-format",
            mqseal_result::MQSEAL_DOC_UNSUPPORTED_ALG => "doc-unsupported-alg",
            mqseal_result::MQSEAL_DOC_WRONG_AUTHORITY => "doc-wrong-authority",
            mqseal_result::MQSEAL_DOC_BAD_SIGNATURE => "doc-bad-signature",
            mqseal_result::MQSEAL_DOC_BAD_AUTHORITY_KEY => "doc-bad-authority-key",
            mqseal_result::MQSEAL_DOC_KEY => "doc-key",
            mqseal_result::MQSEAL_DOC_SERIALIZE => "doc-serialize",
            mqseal_result::MQSEAL_POLICY_SYNTAX => "policy-syntax",
            mqseal_result::MQSEAL_POLICY_INVALID => "policy-invalid",
            mqseal_result::MQSEAL_POLICY_NOT_NEWER => "policy-not-newer",
            mqseal_result::MQSEAL_BUNDLE_SYNTAX => "bundle-syntax",
            mqseal_result::MQSEAL_BUNDLE_INVALID => "bundle-invalid",
            mqseal_result::MQSEAL_BUNDLE_WRONG_DEVICE => "bundle-wrong-device",
            mqseal_result::MQSEAL_BUNDLE_WRONG_KX_KEY => "bundle-wrong-kx-key",
            mqseal_result::MQSEAL_BUNDLE_KEY_MALFORMED => "bundle-key-malformed",
            mqseal_result::MQSEAL_BUNDLE_KEY_UNWRAP => "bundle-key-unwrap",
            mqseal_result::MQSEAL_BUNDLE_WRAP => "bundle-wrap",
            mqseal_result::MQSEAL_POLICY_KEY_MISMATCH => "policy-key-mismatch",
            mqseal_result::MQSEAL_BUNDLE_NOT_NEWER => "bundle-not-newer",
            mqseal_result::MQSEAL_BUNDLE_BEHIND_POLICY => "bundle-behind-policy",
            mqseal_result::MQSEAL_TOPIC_EMPTY => "topic-empty",
            mqseal_result::MQSEAL_TOPIC_TOO_LONG => "topic-too-long",
            mqseal_result::MQSEAL_TOPIC_NUL => "topic-nul",
            mqseal_result::MQSEAL_TOPIC_CONTROL_CHAR => "topic-control-char",
            mqseal_result::MQSEAL_TOPIC_NONCHARACTER => "topic-noncharacter",
            mqseal_result::MQSEAL_TOPIC_WILDCARD_IN_NAME => "topic-wildcard-in-name",
            mqseal_result::MQSEAL_FILTER_PLUS_NOT_WHOLE_LEVEL => "filter-plus-not-whole-level",
            mqseal_result::MQSEAL_FILTER_HASH_NOT_WHOLE_LEVEL => "filter-hash-not-whole-level",
            mqseal_result::MQSEAL_FILTER_HASH_NOT_LAST => "filter-hash-not-last",
            mqseal_result::MQSEAL_FILTER_TOO_DEEP => "filter-too-deep",
            mqseal_result::MQSEAL_SHARE_WITHOUT_FILTER => "share-without-filter",
            mqseal_result::MQSEAL_SHARE_BAD_NAME => "share-bad-name",
            mqseal_result::MQSEAL_NOT_PROTECTED => "not-protected",
            mqseal_result::MQSEAL_WRONG_GROUP => "wrong-group",
            mqseal_result::MQSEAL_UNKNOWN_SENDER => "unknown-sender",
            mqseal_result::MQSEAL_NOT_A_PUBLISHER => "not-a-publisher",
            mqseal_result::MQSEAL_NO_KEY => "no-key",
            mqseal_result::MQSEAL_REPLAY => "replay",
            mqseal_result::MQSEAL_REPLAY_STATE => "replay-state",
            mqseal_result::MQSEAL_EPOCH_PREVIOUS_EXPIRED => "epoch-previous-expired",
            mqseal_result::MQSEAL_EPOCH_TOO_OLD => "epoch-too-old",
            mqseal_result::MQSEAL_EPOCH_FUTURE => "epoch-future",
            mqseal_result::MQSEAL_TOO_LARGE => "too-large",
            mqseal_result::MQSEAL_MALFORMED_CBOR => "malformed-cbor",
            mqseal_result::MQSEAL_NON_DETERMINISTIC_CBOR => "non-deterministic-cbor",
            mqseal_result::MQSEAL_INDEFINITE_LENGTH => "indefinite-length",
            mqseal_result::MQSEAL_TRAILING_BYTES => "trailing-bytes",
            mqseal_result::MQSEAL_NOT_SIGN1 => "not-sign1",
            mqseal_result::MQSEAL_NOT_ENCRYPT0 => "not-encrypt0",
            mqseal_result::MQSEAL_UNPROTECTED_NOT_EMPTY => "unprotected-not-empty",
            mqseal_result::MQSEAL_UNSUPPORTED_ALG => "unsupported-alg",
            mqseal_result::MQSEAL_UNKNOWN_CRITICAL_HEADER => "unknown-critical-header",
            mqseal_result::MQSEAL_UNKNOWN_HEADER => "unknown-header",
            mqseal_result::MQSEAL_DUPLICATE_HEADER => "duplicate-header",
            mqseal_result::MQSEAL_MISSING_HEADER => "missing-header",
            mqseal_result::MQSEAL_BAD_HEADER => "bad-header",
            mqseal_result::MQSEAL_KEY_ALG_MISMATCH => "key-alg-mismatch",
            mqseal_result::MQSEAL_BAD_SIGNATURE => "bad-signature",
            mqseal_result::MQSEAL_DECRYPT_FAILED => "decrypt-failed",
            mqseal_result::MQSEAL_BAD_SEAL_INPUT => "bad-seal-input",
            mqseal_result::MQSEAL_UNEXPECTED_FLOAT => "unexpected-float",
            mqseal_result::MQSEAL_UNEXPECTED_SIMPLE_VALUE => "unexpected-simple-value",
            mqseal_result::MQSEAL_UNEXPECTED_TAG => "unexpected-tag",
            mqseal_result::MQSEAL_INVALID_UTF8 => "invalid-utf8",
        }
    }

    /// The code of a core reason token. A token this table lacks (a new one
    /// in core, not yet given a code) is reported as MQSEAL_INTERNAL_ERROR,
    /// never as another reason; the message still carries the token.
    pub fn from_token(token: &str) -> mqseal_result {
        Self::ALL_ERRORS.iter().copied().find(|code| code.token() == token).unwrap_or(mqseal_result::MQSEAL_INTERNAL_ERROR)
    }

    /// A code from its number, if it is one.
    pub fn from_number(number: u32) -> Option<mqseal_result> {
        std::iter::once(mqseal_result::MQSEAL_OK).chain(Self::ALL_ERRORS.iter().copied()).find(|c| *c as u32 == number)
    }
}

/// The reason token of a result code, as a static NUL-terminated string (never
/// freed): "ok" for MQSEAL_OK, "unknown" for a number that is no code. It takes
/// an int, not the enum, so any number a caller has is safe to pass. Any thread.
#[no_mangle]
pub extern "C" fn mqseal_result_token(result: c_int) -> *const c_char {
    guard_value(c"unknown".as_ptr(), || {
        let code = u32::try_from(result).ok().and_then(mqseal_result::from_number);
        code.map_or(c"unknown", token_cstr).as_ptr()
    })
}

fn token_cstr(code: mqseal_result) -> &'static std::ffi::CStr {
    use std::collections::HashMap;
    use std::ffi::CString;
    use std::sync::OnceLock;
    static TOKENS: OnceLock<HashMap<u32, CString>> = OnceLock::new();
    let tokens = TOKENS.get_or_init(|| {
        std::iter::once(mqseal_result::MQSEAL_OK)
            .chain(mqseal_result::ALL_ERRORS.iter().copied())
            .map(|c| (c as u32, CString::new(c.token()).unwrap_or_default()))
            .collect()
    });
    tokens.get(&(code as u32)).map(CString::as_c_str).unwrap_or(c"unknown")
}

thread_local! {
    static LAST_ERROR: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Records the message of the calling thread's last failure.
pub fn set_last_error(message: String) {
    LAST_ERROR.with(|last| *last.borrow_mut() = message);
}

/// Copies the message of the calling thread's last failed call (what failed,
/// where, and the reason token in brackets) into `buf` (at most `len` bytes,
/// always NUL-terminated when `len` > 0, cut at a UTF-8 boundary) and returns
/// the message's full length without the NUL, so a caller can see it was cut.
/// "" when no call failed yet on this thread. A successful call leaves the
/// previous message in place. Any thread (each has its own).
///
/// # Safety
/// `buf` must be NULL (then `len` must be 0) or valid for writes of `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn mqseal_last_error_message(buf: *mut c_char, len: usize) -> usize {
    guard_value(0, || {
        LAST_ERROR.with(|last| {
            let message = last.borrow();
            if !buf.is_null() && len > 0 {
                let mut n = message.len().min(len - 1);
                while !message.is_char_boundary(n) {
                    n -= 1;
                }
                // SAFETY: buf is valid for len bytes (the caller's contract) and n < len.
                unsafe {
                    std::ptr::copy_nonoverlapping(message.as_ptr(), buf.cast::<u8>(), n);
                    *buf.add(n) = 0;
                }
            }
            message.len()
        })
    })
}

//! Reading the broker's C strings and buffers into Rust values.

use std::ffi::{c_char, c_int, CStr};

use crate::sys;

/// Borrows a NUL-terminated C string as UTF-8. `None` for a null pointer,
/// `Err` for bytes that are not UTF-8 (callers fail closed on that).
///
/// # Safety
/// `ptr` is null or points to a NUL-terminated string valid for `'a`.
pub unsafe fn utf8<'a>(ptr: *const c_char) -> Result<Option<&'a str>, std::str::Utf8Error> {
    if ptr.is_null() {
        return Ok(None);
    }
    // SAFETY: guaranteed by the caller.
    unsafe { CStr::from_ptr(ptr) }.to_str().map(Some)
}

/// Borrows a payload buffer.
///
/// # Safety
/// `ptr` is null or points to `len` readable bytes valid for `'a`.
pub unsafe fn bytes<'a>(ptr: *const std::ffi::c_void, len: u32) -> &'a [u8] {
    if ptr.is_null() || len == 0 {
        return &[];
    }
    // SAFETY: guaranteed by the caller.
    unsafe { std::slice::from_raw_parts(ptr.cast::<u8>(), len as usize) }
}

/// Copies the plugin options out of the broker's array.
///
/// # Safety
/// `options` is null or points to `count` valid entries.
pub unsafe fn options(options: *const sys::mosquitto_opt, count: c_int) -> Result<Vec<(String, String)>, String> {
    if options.is_null() || count <= 0 {
        return Ok(Vec::new());
    }
    // SAFETY: the broker passes exactly `count` entries.
    let entries = unsafe { std::slice::from_raw_parts(options, count as usize) };
    entries
        .iter()
        .map(|opt| {
            // SAFETY: key and value are NUL-terminated strings owned by the broker's config.
            let key = unsafe { utf8(opt.key) }.map_err(|_| "an option name is not UTF-8".to_string())?;
            let key = key.unwrap_or_default().to_string();
            let value = unsafe { utf8(opt.value) }
                .map_err(|_| format!("plugin_opt_{key}: value is not UTF-8"))?
                .unwrap_or_default()
                .to_string();
            Ok((key, value))
        })
        .collect()
}

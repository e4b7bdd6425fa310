//! The one buffer type the library hands out.
//!
//! Ownership, once for all: an `mqseal_bytes` filled in by the library belongs
//! to the caller, who frees it with [`mqseal_bytes_free`] (once; freeing a
//! zeroed one is a no-op). Text (tokens, topics, ids) is UTF-8 followed by a
//! NUL that `len` does not count, so `data` can be used as a C string.

use std::ptr;

use crate::boundary::guard_value;

/// A buffer the library allocated: `len` bytes at `data` (and, for text, a NUL after them).
#[repr(C)]
pub struct mqseal_bytes {
    pub data: *mut u8,
    pub len: usize,
}

impl mqseal_bytes {
    pub const EMPTY: mqseal_bytes = mqseal_bytes { data: ptr::null_mut(), len: 0 };

    /// Hands `bytes` to C (always with a NUL after them: harmless for binary data).
    pub fn from_vec(mut bytes: Vec<u8>) -> mqseal_bytes {
        let len = bytes.len();
        bytes.push(0);
        let boxed = bytes.into_boxed_slice();
        mqseal_bytes { data: Box::into_raw(boxed).cast::<u8>(), len }
    }

    pub fn from_string(text: String) -> mqseal_bytes {
        Self::from_vec(text.into_bytes())
    }

    /// Takes back a buffer made by [`mqseal_bytes::from_vec`] and frees it.
    ///
    /// # Safety
    /// `self` must come from `from_vec` and not have been freed.
    unsafe fn release(&mut self) {
        if !self.data.is_null() {
            let slice = ptr::slice_from_raw_parts_mut(self.data, self.len + 1);
            // SAFETY: data/len+1 are exactly the boxed slice from_vec leaked
            // (the caller's contract), so rebuilding the Box frees it once.
            drop(unsafe { Box::from_raw(slice) });
        }
        *self = mqseal_bytes::EMPTY;
    }
}

/// Writes `value` to the caller's out-pointer.
///
/// # Safety
/// `out` must be null or valid for a write of `T`.
pub unsafe fn write_out<T>(out: *mut T, value: T) -> bool {
    if out.is_null() {
        return false;
    }
    // SAFETY: non-null, and the caller vouches it is writable.
    unsafe { out.write(value) };
    true
}

/// Frees a buffer the library filled in, and zeroes it (data NULL, len 0), so a
/// second call is harmless. NULL is ignored. Any thread.
///
/// # Safety
/// `bytes` must be NULL or point to an `mqseal_bytes` that the library filled
/// in (or that is zeroed).
#[no_mangle]
pub unsafe extern "C" fn mqseal_bytes_free(bytes: *mut mqseal_bytes) {
    guard_value((), || {
        if bytes.is_null() {
            return;
        }
        // SAFETY: non-null; the caller vouches it is one of ours (or zeroed).
        unsafe { (*bytes).release() };
    })
}

/// Frees the buffers of a message ([`crate::device::mqseal_message`]).
///
/// # Safety
/// As for `mqseal_bytes_free`, for each buffer.
pub(crate) unsafe fn release_all(buffers: &mut [&mut mqseal_bytes]) {
    for b in buffers.iter_mut() {
        // SAFETY: forwarded from the caller.
        unsafe { b.release() };
    }
}

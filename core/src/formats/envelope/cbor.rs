//! The small, strict CBOR subset the envelope uses (RFC 8949 §4.2.1 core
//! deterministic encoding): a reader that refuses anything else and a writer
//! that only produces it.
//!
//! The reader never recurses and never allocates; each call consumes at least
//! one byte or fails, so work is bounded by the input length. Lengths are
//! checked against the remaining input before slicing.

use super::EnvelopeError;

/// Major types.
pub const UINT: u8 = 0;
pub const NINT: u8 = 1;
pub const BSTR: u8 = 2;
pub const TSTR: u8 = 3;
pub const ARRAY: u8 = 4;
pub const MAP: u8 = 5;
pub const TAG: u8 = 6;
pub const SIMPLE: u8 = 7;

/// A cursor over a slice that is itself at `base` within the whole envelope
/// (so error offsets are absolute).
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    base: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8], base: usize) -> Reader<'a> {
        Reader { buf, pos: 0, base }
    }

    /// Absolute offset of the next byte.
    pub(crate) fn offset(&self) -> usize {
        self.base + self.pos
    }

    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    pub(crate) fn at_end(&self) -> bool {
        self.pos == self.buf.len()
    }

    /// The bytes between `from` (a value of [`Reader::pos`]) and the cursor.
    pub(crate) fn since(&self, from: usize) -> &'a [u8] {
        &self.buf[from..self.pos]
    }

    fn take(&mut self, n: u64, what: &'static str) -> Result<&'a [u8], EnvelopeError> {
        let remaining = (self.buf.len() - self.pos) as u64;
        if n > remaining {
            return Err(EnvelopeError::MalformedCbor { at: self.offset(), what });
        }
        let start = self.pos;
        self.pos += n as usize;
        Ok(&self.buf[start..self.pos])
    }

    /// Reads one initial byte and its argument: `(major type, argument)`.
    /// Refuses, in this order and by the initial byte alone: reserved values,
    /// indefinite lengths, floats and simple values (major type 7: nowhere in an
    /// envelope) and tags (allowed only where [`Reader::head_or_tag`] reads);
    /// then a truncated or non-shortest argument.
    pub(crate) fn head(&mut self) -> Result<(u8, u64), EnvelopeError> {
        self.read_head(false)
    }

    /// Like [`Reader::head`], but returns a tag instead of refusing it: for the
    /// two places where the caller gives a tag its own meaning (the envelope's
    /// first item, tag 18, and the Sign1 payload's, which must be untagged).
    pub(crate) fn head_or_tag(&mut self) -> Result<(u8, u64), EnvelopeError> {
        self.read_head(true)
    }

    fn read_head(&mut self, tag_allowed: bool) -> Result<(u8, u64), EnvelopeError> {
        let at = self.offset();
        let initial = self.take(1, "unexpected end of input")?[0];
        let major = initial >> 5;
        let info = initial & 0x1f;
        match (major, info) {
            (_, 28..=30) => return Err(EnvelopeError::MalformedCbor { at, what: "reserved or invalid additional information" }),
            (BSTR | TSTR | ARRAY | MAP, 31) => return Err(EnvelopeError::IndefiniteLength { at }),
            (_, 31) => return Err(EnvelopeError::MalformedCbor { at, what: "reserved or invalid additional information" }),
            (SIMPLE, 25..=27) => return Err(EnvelopeError::UnexpectedFloat { at }),
            (SIMPLE, _) => return Err(EnvelopeError::UnexpectedSimpleValue { at }),
            (TAG, _) if !tag_allowed => return Err(EnvelopeError::UnexpectedTag { at }),
            _ => {}
        }
        let (arg, min) = match info {
            0..=23 => return Ok((major, u64::from(info))),
            24 => (u64::from(self.take(1, "truncated argument")?[0]), 24),
            25 => (u64::from(u16::from_be_bytes(self.fixed::<2>()?)), 0x100),
            26 => (u64::from(u32::from_be_bytes(self.fixed::<4>()?)), 0x1_0000),
            27 => (u64::from_be_bytes(self.fixed::<8>()?), 0x1_0000_0000),
            _ => unreachable!("additional information 28..=31 refused above"),
        };
        if arg < min {
            return Err(EnvelopeError::NonDeterministicCbor { at, what: "integer or length not in its shortest form" });
        }
        Ok((major, arg))
    }

    fn fixed<const N: usize>(&mut self) -> Result<[u8; N], EnvelopeError> {
        let bytes = self.take(N as u64, "truncated argument")?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    /// The content of a byte or text string whose head `(major, len)` was just read.
    pub(crate) fn content(&mut self, len: u64) -> Result<&'a [u8], EnvelopeError> {
        self.take(len, "string runs past the end of its container")
    }

    /// The content of a text string whose head (at `head_at`) was just read:
    /// it must be valid UTF-8 (RFC 8949 §3.1, major type 3).
    pub(crate) fn text(&mut self, len: u64, head_at: usize) -> Result<&'a str, EnvelopeError> {
        let bytes = self.content(len)?;
        std::str::from_utf8(bytes).map_err(|_| EnvelopeError::InvalidUtf8 { at: head_at })
    }
}

/// A decoded integer or text label (`None` for integers outside i64).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Label<'a> {
    Int(i64),
    BigInt,
    Text(&'a [u8]),
}

/// Converts a head of major type 0 or 1 into an i64, if it fits.
pub(crate) fn int_value(major: u8, arg: u64) -> Option<i64> {
    match major {
        UINT => i64::try_from(arg).ok(),
        NINT => i64::try_from(arg).ok().map(|a| -1 - a),
        _ => None,
    }
}

// ---------------------------------------------------------------------------
// Writer

/// Appends a head in its shortest form.
pub fn write_head(out: &mut Vec<u8>, major: u8, arg: u64) {
    let m = major << 5;
    if arg < 24 {
        out.push(m | arg as u8);
    } else if arg <= 0xff {
        out.extend_from_slice(&[m | 24, arg as u8]);
    } else if arg <= 0xffff {
        out.push(m | 25);
        out.extend_from_slice(&(arg as u16).to_be_bytes());
    } else if arg <= 0xffff_ffff {
        out.push(m | 26);
        out.extend_from_slice(&(arg as u32).to_be_bytes());
    } else {
        out.push(m | 27);
        out.extend_from_slice(&arg.to_be_bytes());
    }
}

/// Appends a signed integer.
pub fn write_int(out: &mut Vec<u8>, value: i64) {
    if value >= 0 {
        write_head(out, UINT, value as u64);
    } else {
        write_head(out, NINT, (-1 - value) as u64);
    }
}

/// Appends a byte string.
pub fn write_bstr(out: &mut Vec<u8>, bytes: &[u8]) {
    write_head(out, BSTR, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// Appends a text string.
pub fn write_tstr(out: &mut Vec<u8>, text: &str) {
    write_head(out, TSTR, text.len() as u64);
    out.extend_from_slice(text.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(bytes: &[u8]) -> Result<(u8, u64), EnvelopeError> {
        Reader::new(bytes, 0).head()
    }

    #[test]
    fn writer_uses_shortest_forms_and_reader_round_trips() {
        let cases: [(u64, &[u8]); 8] = [
            (0, &[0x00]),
            (23, &[0x17]),
            (24, &[0x18, 24]),
            (255, &[0x18, 0xff]),
            (256, &[0x19, 1, 0]),
            (65535, &[0x19, 0xff, 0xff]),
            (65536, &[0x1a, 0, 1, 0, 0]),
            (1 << 32, &[0x1b, 0, 0, 0, 1, 0, 0, 0, 0]),
        ];
        for (v, enc) in cases {
            let mut out = Vec::new();
            write_head(&mut out, UINT, v);
            assert_eq!(out, enc);
            assert_eq!(read_all(enc).unwrap(), (UINT, v));
        }
        let mut out = Vec::new();
        write_int(&mut out, -65537);
        assert_eq!(out, [0x3a, 0, 1, 0, 0]);
        write_int(&mut out, -19);
        assert_eq!(out[5..], [0x32]);
    }

    #[test]
    fn reader_refuses_non_shortest_indefinite_reserved_and_truncated() {
        for enc in [&[0x18u8, 23][..], &[0x19, 0, 0xff], &[0x1a, 0, 0, 0xff, 0xff], &[0x1b, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff], &[0x58, 3]] {
            assert_eq!(read_all(enc).unwrap_err().reason(), "non-deterministic-cbor", "{enc:x?}");
        }
        for enc in [[0x5f], [0x7f], [0x9f], [0xbf]] {
            assert_eq!(read_all(&enc).unwrap_err().reason(), "indefinite-length");
        }
        for enc in [&[0x1cu8][..], &[0x1f], &[0xff], &[0x3f], &[], &[0x19, 1], &[0x1b, 0, 0]] {
            assert_eq!(read_all(enc).unwrap_err().reason(), "malformed-cbor", "{enc:x?}");
        }
        // Major type 7 and tags are decided by the initial byte, before any argument.
        for enc in [&[0xf9u8][..], &[0xfa, 0, 0, 0, 0], &[0xfb, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0]] {
            assert_eq!(read_all(enc).unwrap_err().reason(), "unexpected-float", "{enc:x?}");
        }
        for enc in [&[0xf4u8][..], &[0xf5], &[0xf6], &[0xf7], &[0xe0], &[0xf8, 0x20], &[0xf8]] {
            assert_eq!(read_all(enc).unwrap_err().reason(), "unexpected-simple-value", "{enc:x?}");
        }
        for (enc, tag) in [(&[0xc0u8][..], 0), (&[0xd2], 18), (&[0xd8, 0x62], 98)] {
            assert_eq!(read_all(enc).unwrap_err().reason(), "unexpected-tag", "{enc:x?}");
            assert_eq!(Reader::new(enc, 0).head_or_tag().unwrap(), (TAG, tag));
        }
        // Decided before the (here truncated) argument is read.
        assert_eq!(read_all(&[0xdb]).unwrap_err().reason(), "unexpected-tag");
        assert_eq!(read_all(&[0xfb, 0x3f]).unwrap_err().reason(), "unexpected-float");
        for enc in [[0xfcu8], [0xfd], [0xfe], [0xdc], [0xdf]] {
            assert_eq!(read_all(&enc).unwrap_err().reason(), "malformed-cbor", "{enc:x?}");
        }
        let mut r = Reader::new(&[0x62, 0xc3, 0x28], 0);
        let (_, len) = r.head().unwrap();
        assert_eq!(r.text(len, 0).unwrap_err().reason(), "invalid-utf8");
        let mut r = Reader::new(&[0x62, 0xc3, 0xa9], 0);
        let (_, len) = r.head().unwrap();
        assert_eq!(r.text(len, 0).unwrap(), "é");

        let mut r = Reader::new(&[0x45, 1, 2], 10);
        let (_, len) = r.head().unwrap();
        let err = r.content(len).unwrap_err();
        assert_eq!(err.reason(), "malformed-cbor");
        assert!(err.to_string().contains("byte 11"), "{err}");
    }
}

//! Record timestamps: RFC 3339 in UTC with exactly three fraction digits and `Z`,
//! e.g. `2024-05-01T12:34:56.789Z` (always 24 bytes).
//!
//! Written by hand instead of pulling in a date crate: converting days since the
//! epoch to a civil date is a few lines of integer arithmetic (H. Hinnant's
//! `civil_from_days`), and the writer formats one timestamp per record, so it
//! caches the part that changes once a second.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since 1970-01-01T00:00:00Z.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct UnixMillis(pub u64);

impl UnixMillis {
    pub fn now() -> UnixMillis {
        UnixMillis::from_system_time(SystemTime::now())
    }

    /// Times before 1970 (a badly set clock) are written as the epoch itself.
    pub fn from_system_time(t: SystemTime) -> UnixMillis {
        UnixMillis(t.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0))
    }
}

/// Length of every timestamp this module writes.
pub const TIMESTAMP_LEN: usize = 24;

/// Formats timestamps, remembering the last whole second so most calls only
/// rewrite the milliseconds.
#[derive(Default)]
pub struct TimestampFormatter {
    second: Option<u64>,
    text: [u8; TIMESTAMP_LEN],
}

impl TimestampFormatter {
    pub fn new() -> Self {
        TimestampFormatter { second: None, text: [0; TIMESTAMP_LEN] }
    }

    /// The 24 ASCII bytes of `t`.
    pub fn format(&mut self, t: UnixMillis) -> &[u8; TIMESTAMP_LEN] {
        let secs = t.0 / 1000;
        if self.second != Some(secs) {
            self.text = format_full(t);
            self.second = Some(secs);
        }
        let ms = (t.0 % 1000) as u32;
        self.text[20] = b'0' + (ms / 100) as u8;
        self.text[21] = b'0' + (ms / 10 % 10) as u8;
        self.text[22] = b'0' + (ms % 10) as u8;
        &self.text
    }
}

/// Formats one timestamp.
pub fn format_timestamp(t: UnixMillis) -> String {
    // Only ASCII digits and separators are written.
    String::from_utf8(format_full(t).to_vec()).unwrap_or_default()
}

fn format_full(t: UnixMillis) -> [u8; TIMESTAMP_LEN] {
    let secs = t.0 / 1000;
    let ms = (t.0 % 1000) as u32;
    let days = (secs / 86_400) as i64;
    let rem = (secs % 86_400) as u32;
    let (y, m, d) = civil_from_days(days);
    let mut out = *b"0000-00-00T00:00:00.000Z";
    // A u64 of milliseconds reaches year 584 million; clamp the year to four digits.
    let y = y.clamp(0, 9999) as u32;
    put(&mut out[0..4], y);
    put(&mut out[5..7], m);
    put(&mut out[8..10], d);
    put(&mut out[11..13], rem / 3600);
    put(&mut out[14..16], rem / 60 % 60);
    put(&mut out[17..19], rem % 60);
    put(&mut out[20..23], ms);
    out
}

fn put(slot: &mut [u8], mut value: u32) {
    for b in slot.iter_mut().rev() {
        *b = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// (year, month 1..=12, day 1..=31) of a day count since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097; // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11]
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_in_month(y: u32, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        // February: leap years are divisible by 4, except centuries not divisible by 400.
        _ => match (y % 4, y % 100, y % 400) {
            (_, _, 0) => 29,
            (_, 0, _) => 28,
            (0, _, _) => 29,
            _ => 28,
        },
    }
}

/// True when `text` is exactly a timestamp this module could have written.
pub fn is_valid_timestamp(text: &str) -> bool {
    let b = text.as_bytes();
    if b.len() != TIMESTAMP_LEN {
        return false;
    }
    let shape = b"dddd-dd-ddTdd:dd:dd.dddZ";
    for (c, s) in b.iter().zip(shape.iter()) {
        let ok = if *s == b'd' { c.is_ascii_digit() } else { c == s };
        if !ok {
            return false;
        }
    }
    let num = |r: std::ops::Range<usize>| b[r].iter().fold(0u32, |acc, c| acc * 10 + (c - b'0') as u32);
    let (y, m, d) = (num(0..4), num(5..7), num(8..10));
    (1..=12).contains(&m)
        && d >= 1
        && d <= days_in_month(y, m)
        && num(11..13) < 24
        && num(14..16) < 60
        && num(17..19) < 60
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(format_timestamp(UnixMillis(0)), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_timestamp(UnixMillis(951_782_400_000)), "2000-02-29T00:00:00.000Z");
        assert_eq!(format_timestamp(UnixMillis(1_714_566_896_789)), "2024-05-01T12:34:56.789Z");
        assert_eq!(format_timestamp(UnixMillis(4_102_444_799_999)), "2099-12-31T23:59:59.999Z");
    }

    #[test]
    fn cached_formatter_agrees_with_full_formatting() {
        let mut f = TimestampFormatter::new();
        for t in [0u64, 1, 999, 1000, 1_714_566_896_789, 1_714_566_896_790, 1_714_566_897_001, 5] {
            assert_eq!(&f.format(UnixMillis(t))[..], format_timestamp(UnixMillis(t)).as_bytes(), "{t}");
        }
    }

    #[test]
    fn every_day_of_four_centuries_round_trips_through_validation() {
        let mut t = 0u64;
        while t < 400 * 366 * 86_400_000 {
            let text = format_timestamp(UnixMillis(t));
            assert!(is_valid_timestamp(&text), "{text}");
            t += 86_400_000 + 3_661_001;
        }
    }

    #[test]
    fn refuses_other_spellings() {
        for bad in [
            "2024-05-01T12:34:56Z",
            "2024-05-01T12:34:56.789+00:00",
            "2024-05-01 12:34:56.789Z",
            "2024-02-30T00:00:00.000Z",
            "2023-02-29T00:00:00.000Z",
            "2024-13-01T00:00:00.000Z",
            "2024-05-01T24:00:00.000Z",
            "2024-05-01T12:60:00.000Z",
            "2024-05-01T12:34:56.789z",
        ] {
            assert!(!is_valid_timestamp(bad), "{bad}");
        }
        assert!(is_valid_timestamp("2024-02-29T23:59:59.999Z"));
    }
}

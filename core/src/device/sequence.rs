//! The per-device sequence counter (`DIR/seq`).
//!
//! Every envelope a device seals carries a sequence number; together with the
//! per-sender content key it forms the AEAD nonce (see docs/ENVELOPE.md), so a
//! number must NEVER be used twice. The counter therefore persists a number
//! before handing it out: the file holds the lowest number not yet reserved, as
//! ASCII decimal plus `\n`. Opening the counter resumes at that number; when the
//! in-memory numbers run out, the next block is reserved by atomically replacing
//! the file (temp file + fsync + rename + directory fsync) before any number from
//! it is returned. A crash therefore skips at most one block, never reuses a number.
//!
//! Two processes on the same counter would reserve the same block, so the
//! counter holds an exclusive lock on `DIR/seq.lock` while open.
//!
//! If `seq` is lost or restored from an old backup while the group key epoch is
//! unchanged, numbers (and so nonces) would repeat: `open` refuses a missing
//! file rather than restarting at 1. Recovery is a new epoch (new group key).

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::formats::keys::{write_atomic, KeyError, Overwrite};

#[derive(Debug, thiserror::Error)]
pub enum SequenceError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path} is missing: refusing to restart the sequence at 1, which could reuse nonces; if this device's counter is lost, rotate the group key epoch and create a new counter")]
    Missing { path: PathBuf },
    #[error("{path}: corrupt sequence file (expected a decimal number >= 1 and a newline)")]
    Corrupt { path: PathBuf },
    #[error("{path} is in use by another process (lock {lock} is held)")]
    Locked { path: PathBuf, lock: PathBuf },
    #[error("{path}: sequence numbers exhausted")]
    Exhausted { path: PathBuf },
    #[error(transparent)]
    Write(#[from] KeyError),
}

impl SequenceError {
    /// A stable short token (docs/REASONS.md).
    pub fn reason(&self) -> &'static str {
        match self {
            SequenceError::Io { .. } => "file-io",
            SequenceError::Missing { .. } => "seq-missing",
            SequenceError::Corrupt { .. } => "seq-corrupt",
            SequenceError::Locked { .. } => "seq-locked",
            SequenceError::Exhausted { .. } => "seq-exhausted",
            SequenceError::Write(e) => e.reason(),
        }
    }

}

/// A locked, persistent, strictly increasing u64 counter starting at 1.
#[derive(Debug)]
pub struct SequenceCounter {
    path: PathBuf,
    _lock: File,
    next: u64,
    /// Numbers below `limit` are reserved on disk; `next..limit` are ours to hand out.
    limit: u64,
    block: u64,
}

impl SequenceCounter {
    /// Name of the counter file in a device directory.
    pub const FILE_NAME: &'static str = "seq";
    /// Numbers reserved per disk write.
    pub const DEFAULT_BLOCK: u64 = 64;

    /// Creates a new counter file starting at 1; refuses to overwrite one.
    pub fn create(path: &Path) -> Result<(), SequenceError> {
        write_atomic(path, b"1\n", 0o600, Overwrite::Refuse)?;
        Ok(())
    }

    /// Opens and locks an existing counter.
    pub fn open(path: &Path) -> Result<SequenceCounter, SequenceError> {
        let lock_path = lock_path(path);
        let io = |p: &Path| {
            let p = p.to_owned();
            move |source| SequenceError::Io { path: p, source }
        };
        let lock = OpenOptions::new().read(true).write(true).create(true).truncate(false).mode(0o600).open(&lock_path).map_err(io(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Err(SequenceError::Locked { path: path.to_owned(), lock: lock_path }),
            Err(fs::TryLockError::Error(source)) => return Err(SequenceError::Io { path: lock_path, source }),
        }
        let text = match fs::read(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(SequenceError::Missing { path: path.to_owned() }),
            Err(e) => return Err(SequenceError::Io { path: path.to_owned(), source: e }),
        };
        let limit = parse_limit(&text).ok_or_else(|| SequenceError::Corrupt { path: path.to_owned() })?;
        Ok(SequenceCounter { path: path.to_owned(), _lock: lock, next: limit, limit, block: Self::DEFAULT_BLOCK })
    }

    /// Changes how many numbers one disk write reserves (at least 1).
    pub fn with_block(mut self, block: u64) -> SequenceCounter {
        self.block = block.max(1);
        self
    }

    /// The next number; reserves (durably) a new block first when needed.
    #[allow(clippy::should_implement_trait)] // fallible, so not an Iterator
    pub fn next(&mut self) -> Result<u64, SequenceError> {
        if self.next >= self.limit {
            if self.next == u64::MAX {
                return Err(SequenceError::Exhausted { path: self.path.clone() });
            }
            let new_limit = self.next.saturating_add(self.block);
            write_atomic(&self.path, format!("{new_limit}\n").as_bytes(), 0o600, Overwrite::Allow)?;
            self.limit = new_limit;
        }
        let n = self.next;
        self.next += 1;
        Ok(n)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn lock_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".lock");
    path.with_file_name(name)
}

/// Strict: digits without leading zeros, value >= 1, then exactly one `\n`.
fn parse_limit(text: &[u8]) -> Option<u64> {
    let digits = text.strip_suffix(b"\n")?;
    if digits.is_empty() || digits[0] == b'0' || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse::<u64>().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on_disk(path: &Path) -> String {
        fs::read_to_string(path).unwrap()
    }

    #[test]
    fn starts_at_one_and_increases_strictly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seq");
        SequenceCounter::create(&path).unwrap();
        let mut c = SequenceCounter::open(&path).unwrap().with_block(3);
        let got: Vec<u64> = (0..7).map(|_| c.next().unwrap()).collect();
        assert_eq!(got, [1, 2, 3, 4, 5, 6, 7]);
        assert!(matches!(SequenceCounter::create(&path), Err(SequenceError::Write(KeyError::Exists { .. }))));
    }

    #[test]
    fn reservation_is_on_disk_before_a_number_is_used_and_a_crash_skips_never_reuses() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seq");
        SequenceCounter::create(&path).unwrap();
        let mut c = SequenceCounter::open(&path).unwrap().with_block(10);
        assert_eq!(c.next().unwrap(), 1);
        // Before 1 was returned, 1..=10 were reserved durably.
        assert_eq!(on_disk(&path), "11\n");
        assert_eq!(c.next().unwrap(), 2);
        assert_eq!(c.next().unwrap(), 3);
        // "Crash": dropping writes nothing back (only the lock is released, as the
        // kernel does for a dead process), so this is exactly what a crash leaves.
        drop(c);
        let mut c = SequenceCounter::open(&path).unwrap().with_block(10);
        let n = c.next().unwrap();
        assert_eq!(n, 11, "numbers 4..=10 are skipped, none reused");
        assert_eq!(on_disk(&path), "21\n");
    }

    #[test]
    fn a_second_opener_is_refused_while_the_counter_is_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seq");
        SequenceCounter::create(&path).unwrap();
        let c = SequenceCounter::open(&path).unwrap();
        assert!(matches!(SequenceCounter::open(&path), Err(SequenceError::Locked { .. })));
        drop(c);
        SequenceCounter::open(&path).unwrap();
    }

    #[test]
    fn missing_or_corrupt_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seq");
        let err = SequenceCounter::open(&path).unwrap_err();
        assert!(matches!(err, SequenceError::Missing { .. }));
        assert!(err.to_string().contains("reuse nonces"));
        for bad in ["", "0\n", "01\n", "12", "1 \n", "x\n", "-1\n", "18446744073709551616\n", "5\n\n"] {
            fs::write(&path, bad).unwrap();
            assert!(matches!(SequenceCounter::open(&path), Err(SequenceError::Corrupt { .. })), "{bad:?}");
        }
    }

    #[test]
    fn exhaustion_is_an_error_not_a_wrap() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seq");
        fs::write(&path, format!("{}\n", u64::MAX - 1)).unwrap();
        let mut c = SequenceCounter::open(&path).unwrap();
        assert_eq!(c.next().unwrap(), u64::MAX - 1);
        assert!(matches!(c.next(), Err(SequenceError::Exhausted { .. })));
        assert!(matches!(c.next(), Err(SequenceError::Exhausted { .. })));
    }
}

//! Where a log's files live.
//!
//! For a log at `audit.jsonl`:
//! - `audit.jsonl` is the file being written (the newest);
//! - `audit.jsonl.1`, `audit.jsonl.2`, … are earlier files, **higher numbers newer**
//!   (unlike logrotate: no file is ever renamed twice, so a crash mid-rotation
//!   cannot shuffle the order); the log reads `.1`, `.2`, …, then `audit.jsonl`;
//! - `audit.jsonl.checkpoint` is the latest signed checkpoint (replaced atomically);
//! - `audit.jsonl.checkpoints` is every checkpoint ever signed, oldest first.

use std::ffi::OsString;
use std::fs::OpenOptions;
use std::io::Write;
use std::io;
use std::path::{Path, PathBuf};

/// The paths of one log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogPaths {
    base: PathBuf,
}

/// One file of a log, in reading order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFile {
    pub path: PathBuf,
    /// The rotation number, `None` for the current file.
    pub seq: Option<u64>,
}

impl LogPaths {
    pub fn new(base: impl Into<PathBuf>) -> Self {
        LogPaths { base: base.into() }
    }

    /// The current file.
    pub fn base(&self) -> &Path {
        &self.base
    }

    fn with_suffix(&self, suffix: &str) -> PathBuf {
        let mut name: OsString = self.base.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    }

    pub fn rotated(&self, seq: u64) -> PathBuf {
        self.with_suffix(&format!(".{seq}"))
    }

    pub fn checkpoint(&self) -> PathBuf {
        self.with_suffix(".checkpoint")
    }

    pub fn checkpoint_history(&self) -> PathBuf {
        self.with_suffix(".checkpoints")
    }

    pub(crate) fn checkpoint_tmp(&self) -> PathBuf {
        self.with_suffix(".checkpoint.tmp")
    }

    /// The directory holding the log (for fsync after renames).
    pub fn dir(&self) -> PathBuf {
        match self.base.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        }
    }

    /// The file name of the current file, as records name files.
    pub fn file_name_of(path: &Path) -> String {
        path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| path.display().to_string())
    }

    /// The log's files in reading order: rotated files by number, then the
    /// current file if it exists.
    pub fn discover(&self) -> io::Result<Vec<LogFile>> {
        let dir = self.dir();
        let Some(stem) = self.base.file_name().and_then(|n| n.to_str()).map(|s| format!("{s}.")) else {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "log path has no UTF-8 file name"));
        };
        let mut files = Vec::new();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let Some(number) = name.strip_prefix(&stem) else { continue };
            // Only plain decimal numbers without leading zeros: `.checkpoint`,
            // `.1.tmp` or `.01` are not log files.
            if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) || number.starts_with('0') {
                continue;
            }
            if let Ok(seq) = number.parse::<u64>() {
                files.push(LogFile { path: self.rotated(seq), seq: Some(seq) });
            }
        }
        files.sort_by_key(|f| f.seq);
        if self.base.exists() {
            files.push(LogFile { path: self.base.clone(), seq: None });
        }
        Ok(files)
    }
}

/// fsyncs a directory so that renames and new files in it survive a power cut.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovers_rotated_files_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let paths = LogPaths::new(dir.path().join("audit.jsonl"));
        for name in ["audit.jsonl", "audit.jsonl.10", "audit.jsonl.2", "audit.jsonl.1", "audit.jsonl.checkpoint", "audit.jsonl.01", "audit.jsonl.3.tmp", "other.jsonl.4"] {
            std::fs::write(dir.path().join(name), "").unwrap();
        }
        let found: Vec<String> = paths.discover().unwrap().iter().map(|f| LogPaths::file_name_of(&f.path)).collect();
        assert_eq!(found, ["audit.jsonl.1", "audit.jsonl.2", "audit.jsonl.10", "audit.jsonl"]);
        assert_eq!(LogPaths::file_name_of(&paths.checkpoint()), "audit.jsonl.checkpoint");
        assert_eq!(LogPaths::file_name_of(&paths.checkpoint_history()), "audit.jsonl.checkpoints");
    }
}

/// Appends one note to the checkpoint history (each note followed by a blank line).
pub(crate) fn append_history(paths: &LogPaths, note: &str) -> io::Result<()> {
    let mut f = OpenOptions::new().create(true).append(true).open(paths.checkpoint_history())?;
    let mut entry = Vec::with_capacity(note.len() + 1);
    entry.extend_from_slice(note.as_bytes());
    entry.push(b'\n');
    f.write_all(&entry)?;
    f.sync_data()
}

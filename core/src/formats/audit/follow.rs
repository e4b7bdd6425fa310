//! Reading a log as it grows (`mqseal audit tail`): the last records, then new
//! ones as they are written, across rotations, checking the chain all along.
//!
//! A follower does not check checkpoints (that is `verify`'s job) but it does
//! check that every record it shows follows the one before it: the same index
//! plus one and `prev` equal to that record's hash. If the file changes under it
//! in any other way (truncated, rewritten, a rotated file that does not continue
//! the chain) it stops with an error instead of showing a record out of context.

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::chain::{ChainState, Line, LineReader};
use super::files::{LogFile, LogPaths};
use super::record::{parse_record, Record};

/// A record as the follower found it.
#[derive(Debug, Clone, PartialEq)]
pub struct FoundRecord {
    pub path: PathBuf,
    pub line: u64,
    /// The line exactly as stored.
    pub text: String,
    pub record: Record,
}

/// Why following stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FollowError {
    #[error("{path}: {problem}")]
    Io { path: String, problem: String },
    #[error("{path}:{line}: {reason}")]
    Broken { path: String, line: u64, reason: String },
    #[error("{0}: no such log")]
    NoLog(String),
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> FollowError + '_ {
    move |e| FollowError::Io { path: path.display().to_string(), problem: e.to_string() }
}

fn broken(path: &Path, line: u64, reason: impl Into<String>) -> FollowError {
    FollowError::Broken { path: path.display().to_string(), line, reason: reason.into() }
}

/// Follows one log.
pub struct Follower {
    paths: LogPaths,
    path: PathBuf,
    file: File,
    ino: u64,
    offset: u64,
    lines: u64,
    chain: ChainState,
}

impl Follower {
    /// Opens the log and returns the last `n` records that pass `filter` (the
    /// files they are in are read in full and their chain checked), positioned
    /// after the last complete line for [`Follower::poll`].
    pub fn open(log: &Path, n: usize, filter: &dyn Fn(&Record) -> bool) -> Result<(Follower, Vec<FoundRecord>), FollowError> {
        let paths = LogPaths::new(log);
        let files = paths.discover().map_err(io(log))?;
        if files.is_empty() {
            return Err(FollowError::NoLog(log.display().to_string()));
        }
        // Go back file by file until the files read hold n matching records.
        let mut start = files.len() - 1;
        let mut matching = count_matching(&files[start].path, filter)?;
        while matching < n && start > 0 {
            start -= 1;
            matching += count_matching(&files[start].path, filter)?;
        }
        let mut chain = ChainState { next_index: 0, prev: None, tree: None };
        let mut shown: std::collections::VecDeque<FoundRecord> = std::collections::VecDeque::new();
        let mut current = None;
        for (i, f) in files.iter().enumerate().skip(start) {
            let mut file = File::open(&f.path).map_err(io(&f.path))?;
            let ino = file.metadata().map_err(io(&f.path))?.ino();
            let mut lines = 0;
            let mut offset = 0;
            let mut first = i == start;
            read_new(&f.path, &mut file, &mut offset, &mut lines, &mut chain, &mut first, i + 1 == files.len(), &mut |found| {
                if filter(&found.record) {
                    if shown.len() == n {
                        shown.pop_front();
                    }
                    if n > 0 {
                        shown.push_back(found);
                    }
                }
            })?;
            current = Some((f.path.clone(), file, ino, offset, lines));
        }
        let Some((path, file, ino, offset, lines)) = current else { return Err(FollowError::NoLog(log.display().to_string())) };
        Ok((Follower { paths, path, file, ino, offset, lines, chain }, shown.into()))
    }

    /// The file being read.
    pub fn current_file(&self) -> &Path {
        &self.path
    }

    /// New records since the last call (all of them; the caller filters).
    pub fn poll(&mut self) -> Result<Vec<FoundRecord>, FollowError> {
        let mut out = Vec::new();
        loop {
            let len = self.file.metadata().map_err(io(&self.path))?.len();
            if len < self.offset {
                return Err(broken(&self.path, self.lines, format!("the file shrank from {} to {len} bytes under tail: truncated", self.offset)));
            }
            let mut first = false;
            read_new(&self.path, &mut self.file, &mut self.offset, &mut self.lines, &mut self.chain, &mut first, true, &mut |f| out.push(f))?;
            // Has the file we read been rotated away (or are we reading a rotated file)?
            let Some(next) = self.next_file()? else { break };
            // Whatever was appended before the rotation is in our handle: read it all.
            let mut first = false;
            read_new(&self.path, &mut self.file, &mut self.offset, &mut self.lines, &mut self.chain, &mut first, false, &mut |f| out.push(f))?;
            let file = File::open(&next.path).map_err(io(&next.path))?;
            self.ino = file.metadata().map_err(io(&next.path))?.ino();
            self.file = file;
            self.path = next.path;
            self.offset = 0;
            self.lines = 0;
        }
        Ok(out)
    }

    /// The file after the one being read, once the one being read is no longer the current file.
    fn next_file(&self) -> Result<Option<LogFile>, FollowError> {
        let base_ino = std::fs::metadata(self.paths.base()).ok().map(|m| m.ino());
        if base_ino == Some(self.ino) {
            return Ok(None);
        }
        let files = self.paths.discover().map_err(io(self.paths.base()))?;
        let position = files.iter().position(|f| std::fs::metadata(&f.path).map(|m| m.ino() == self.ino).unwrap_or(false));
        match position {
            Some(p) => Ok(files.get(p + 1).cloned()),
            // Ours is gone (deleted after rotation): nothing after it can be trusted to follow it.
            None if base_ino.is_some() => Err(broken(&self.path, self.lines, "the file being read was removed or replaced")),
            None => Ok(None),
        }
    }
}

fn count_matching(path: &Path, filter: &dyn Fn(&Record) -> bool) -> Result<usize, FollowError> {
    let file = File::open(path).map_err(io(path))?;
    let mut reader = LineReader::new(file);
    let mut n = 0;
    loop {
        match reader.next_line().map_err(io(path))? {
            Line::Complete { bytes, .. } => {
                if parse_record(bytes).map(|r| filter(&r)).unwrap_or(false) {
                    n += 1;
                }
            }
            Line::TooLong { .. } => {}
            Line::Torn { .. } | Line::End => return Ok(n),
        }
    }
}

/// Reads complete lines after `offset`, checking each against the chain. A
/// trailing partial line is left for later when `at_end` (the writer may be
/// writing it); elsewhere it is an error.
#[allow(clippy::too_many_arguments)]
fn read_new(
    path: &Path,
    file: &mut File,
    offset: &mut u64,
    lines: &mut u64,
    chain: &mut ChainState,
    first_of_walk: &mut bool,
    at_end: bool,
    emit: &mut dyn FnMut(FoundRecord),
) -> Result<(), FollowError> {
    file.seek(SeekFrom::Start(*offset)).map_err(io(path))?;
    let mut reader = LineReader::starting_at(&*file, *offset, *lines);
    loop {
        match reader.next_line().map_err(io(path))? {
            Line::Complete { bytes, number, .. } => {
                let record = parse_record(bytes).map_err(|e| broken(path, number, e.to_string()))?;
                if *first_of_walk {
                    // Reading starts here: take the record as the chain's starting point.
                    chain.next_index = record.index;
                    *first_of_walk = false;
                }
                chain.check(&record, None).map_err(|e| broken(path, number, format!("chain broken: {e}")))?;
                chain.advance(&record);
                let text = String::from_utf8_lossy(bytes).into_owned();
                emit(FoundRecord { path: path.to_path_buf(), line: number, text, record });
            }
            Line::TooLong { number, .. } => return Err(broken(path, number, "line longer than any record")),
            Line::Torn { number, .. } => {
                if !at_end {
                    return Err(broken(path, number, "the file ends with an incomplete line but the log continues in another file"));
                }
                break;
            }
            Line::End => break,
        }
    }
    *offset = reader.offset();
    *lines = reader.lines_read();
    Ok(())
}

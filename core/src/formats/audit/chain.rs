//! Reading records back: lines out of a file, and the chain rules that link each
//! record to the one before it (the index counts up by one, `prev` is the hash of
//! the record before, record 0 links to the origin hash).

use std::io::{self, BufRead, BufReader, Read};

use super::hashing::{origin_hash, Hash};
use super::merkle::{leaf_hash, CompactRange};
use super::record::{Record, MAX_LINE_BYTES};

/// One piece of a file.
#[derive(Debug, PartialEq, Eq)]
pub enum Line<'a> {
    /// A newline-terminated line (the bytes exclude the newline).
    Complete { bytes: &'a [u8], number: u64, offset: u64 },
    /// A complete line longer than [`MAX_LINE_BYTES`] (its bytes are not kept).
    TooLong { number: u64, offset: u64, len: u64 },
    /// Bytes after the last newline: a line still being written, or torn by a crash.
    Torn { number: u64, offset: u64, len: u64 },
    End,
}

/// Splits a file into lines, counting line numbers and byte offsets, without
/// ever holding more than [`MAX_LINE_BYTES`] of one line.
pub struct LineReader<R: Read> {
    inner: BufReader<R>,
    offset: u64,
    number: u64,
    buf: Vec<u8>,
}

impl<R: Read> LineReader<R> {
    pub fn new(inner: R) -> Self {
        Self::starting_at(inner, 0, 0)
    }

    /// A reader positioned at `offset`, after `lines_before` lines.
    pub fn starting_at(inner: R, offset: u64, lines_before: u64) -> Self {
        LineReader { inner: BufReader::with_capacity(1 << 16, inner), offset, number: lines_before, buf: Vec::new() }
    }

    /// Byte offset of the next unread line.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Lines read so far.
    pub fn lines_read(&self) -> u64 {
        self.number
    }

    pub fn next_line(&mut self) -> io::Result<Line<'_>> {
        self.buf.clear();
        let start = self.offset;
        let mut len: u64 = 0;
        loop {
            let chunk = self.inner.fill_buf()?;
            if chunk.is_empty() {
                if len == 0 {
                    return Ok(Line::End);
                }
                // Not consumed into `offset`: a follower re-reads it once it completes.
                return Ok(Line::Torn { number: self.number + 1, offset: start, len });
            }
            let (take, found) = match memchr_newline(chunk) {
                Some(i) => (i + 1, true),
                None => (chunk.len(), false),
            };
            let content = if found { &chunk[..take - 1] } else { chunk };
            if self.buf.len() + content.len() <= MAX_LINE_BYTES {
                self.buf.extend_from_slice(content);
            }
            len += content.len() as u64;
            self.inner.consume(take);
            if found {
                self.number += 1;
                self.offset = start + len + 1;
                if len > MAX_LINE_BYTES as u64 {
                    return Ok(Line::TooLong { number: self.number, offset: start, len });
                }
                return Ok(Line::Complete { bytes: &self.buf, number: self.number, offset: start });
            }
        }
    }
}

/// Why a record whose hash is not the next record's `prev` is blamed. Both the
/// plugin (opening a log) and `verify` name the changed record by **its own
/// line** (1-based, as editors count), and the next line in the text.
pub fn altered_record(next_file: &std::path::Path, next_line: u64) -> String {
    format!(
        "this record does not hash to the prev of the next one ({}:{next_line}): this line was altered, or \
         the next line does not belong after it",
        next_file.display()
    )
}

/// Why records a checkpoint covers are blamed: they were rewritten after
/// `checkpoint` (a `file:line`) sealed `size` records. Named at the first line
/// after the last checkpoint that still matched (`from`, the index of that line).
pub fn rewritten_records(from: u64, size: u64, checkpoint: &str, earlier_matched: bool) -> String {
    format!(
        "records {from}..{} (from this line on) do not match the checkpoint at {checkpoint} (tree size {size}): \
         rewritten after they were sealed{}",
        size - 1,
        if earlier_matched { format!("; records before {from} match an earlier checkpoint") } else { String::new() }
    )
}

fn memchr_newline(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&b| b == b'\n')
}

/// Where the chain stands after the records read so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainState {
    /// The index the next record must have.
    pub next_index: u64,
    /// The hash the next record's `prev` must hold; `None` when reading starts in
    /// the middle of a log and the record before is unknown.
    pub prev: Option<Hash>,
    /// The Merkle tree over all records so far; `None` when reading started in
    /// the middle without a `merkle_prefix`.
    pub tree: Option<CompactRange>,
}

/// How a record fails to follow the one before it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("index {found} where {expected} was due: a record was duplicated, moved back or inserted")]
    IndexBack { expected: u64, found: u64 },
    #[error("index {found} where {expected} was due: records {expected}..{last} are missing (deleted or moved)", last = found - 1)]
    IndexGap { expected: u64, found: u64 },
    #[error("prev is not the hash of the record before it: that record was altered, or this one does not belong after it")]
    Prev,
    #[error("prev of record 0 is not the hash of the origin {0:?}")]
    Origin(String),
}

impl ChainState {
    /// The state before record 0 of a log with this origin.
    pub fn genesis(origin: &str) -> Self {
        ChainState { next_index: 0, prev: Some(origin_hash(origin)), tree: Some(CompactRange::new()) }
    }

    /// Checks that `record` may come next.
    pub fn check(&self, record: &Record, origin: Option<&str>) -> Result<(), LinkError> {
        if record.index < self.next_index {
            return Err(LinkError::IndexBack { expected: self.next_index, found: record.index });
        }
        if record.index > self.next_index {
            return Err(LinkError::IndexGap { expected: self.next_index, found: record.index });
        }
        if let Some(prev) = self.prev {
            if record.prev != prev {
                return Err(match (record.index, origin) {
                    (0, Some(o)) => LinkError::Origin(o.to_string()),
                    _ => LinkError::Prev,
                });
            }
        }
        Ok(())
    }

    /// Moves past `record` (which [`ChainState::check`] accepted).
    pub fn advance(&mut self, record: &Record) {
        self.next_index = record.index + 1;
        self.prev = Some(record.hash);
        if let Some(tree) = &mut self.tree {
            tree.push(leaf_hash(&record.hash));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(data: &[u8]) -> Vec<String> {
        let mut r = LineReader::new(data);
        let mut out = Vec::new();
        loop {
            match r.next_line().unwrap() {
                Line::Complete { bytes, number, offset } => out.push(format!("{number}@{offset}:{}", String::from_utf8_lossy(bytes))),
                Line::TooLong { number, offset, len } => out.push(format!("{number}@{offset}:long {len}")),
                Line::Torn { number, offset, len } => {
                    out.push(format!("{number}@{offset}:torn {len}"));
                    break;
                }
                Line::End => break,
            }
        }
        out
    }

    #[test]
    fn splits_lines_and_reports_a_torn_tail() {
        assert_eq!(lines(b"a\nbc\n"), ["1@0:a", "2@2:bc"]);
        assert_eq!(lines(b"a\n\nbc"), ["1@0:a", "2@2:", "3@3:torn 2"]);
        assert_eq!(lines(b""), Vec::<String>::new());
        let mut big = vec![b'x'; MAX_LINE_BYTES + 1];
        big.push(b'\n');
        big.extend_from_slice(b"ok\n");
        assert_eq!(lines(&big), [format!("1@0:long {}", MAX_LINE_BYTES + 1), format!("2@{}:ok", MAX_LINE_BYTES + 2)]);
    }
}

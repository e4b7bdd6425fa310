//! Proofs over a log: that one record is in the tree a checkpoint signed
//! (inclusion), and that a later checkpoint's tree extends an earlier one's
//! (consistency). Both follow RFC 9162 and verify against the checkpoints' roots.

use std::fs::File;
use std::path::{Path, PathBuf};

use super::chain::{Line, LineReader};
use super::checkpoint::Checkpoint;
use super::files::LogPaths;
use super::hashing::Hash;
use super::merkle::{consistency_proof, inclusion_proof, leaf_hash, verify_consistency, verify_inclusion, ProofError};
use super::record::parse_record;

/// An inclusion proof for one record, checked against the checkpoint's root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InclusionProof {
    pub index: u64,
    pub tree_size: u64,
    pub file: PathBuf,
    pub line: u64,
    /// The record's line as stored.
    pub record: String,
    pub leaf_hash: Hash,
    pub proof: Vec<Hash>,
    pub root: Hash,
}

#[derive(Debug, thiserror::Error)]
pub enum ProveError {
    #[error("{0}")]
    Read(String),
    #[error("{file}:{line}: {reason}")]
    Bad { file: String, line: u64, reason: String },
    #[error("the log holds {records} records; the checkpoint covers {size}")]
    TooShort { records: u64, size: u64 },
    #[error("record {index} is not in a tree of {size} records")]
    OutOfRange { index: u64, size: u64 },
    #[error("the log's records do not produce the checkpoint's root at size {0}: the log is not the one the checkpoint signed")]
    RootMismatch(u64),
    #[error(transparent)]
    Proof(#[from] ProofError),
}

/// One leaf of the log, with where it is.
struct Leaf {
    hash: Hash,
    file: PathBuf,
    line: u64,
}

/// The leaf hashes of records `0..size`, read from the log's files.
fn leaves(log: &Path, size: u64) -> Result<Vec<Leaf>, ProveError> {
    let files = LogPaths::new(log).discover().map_err(|e| ProveError::Read(format!("{}: {e}", log.display())))?;
    let mut out: Vec<Leaf> = Vec::new();
    'files: for f in files {
        let file = File::open(&f.path).map_err(|e| ProveError::Read(format!("{}: {e}", f.path.display())))?;
        let mut reader = LineReader::new(file);
        while (out.len() as u64) < size {
            let bad = |line: u64, reason: String| ProveError::Bad { file: f.path.display().to_string(), line, reason };
            match reader.next_line().map_err(|e| ProveError::Read(format!("{}: {e}", f.path.display())))? {
                Line::Complete { bytes, number, .. } => {
                    let record = parse_record(bytes).map_err(|e| bad(number, e.to_string()))?;
                    if record.index != out.len() as u64 {
                        return Err(bad(number, format!("index {} where {} was due (proofs need the log from record 0)", record.index, out.len())));
                    }
                    out.push(Leaf { hash: leaf_hash(&record.hash), file: f.path.clone(), line: number });
                }
                Line::TooLong { number, .. } => return Err(bad(number, "line longer than any record".into())),
                Line::Torn { .. } | Line::End => continue 'files,
            }
        }
        break;
    }
    if (out.len() as u64) < size {
        return Err(ProveError::TooShort { records: out.len() as u64, size });
    }
    Ok(out)
}

/// Proves that record `index` is in the tree `checkpoint` signed. The caller
/// checks the checkpoint's signature.
pub fn prove_inclusion(log: &Path, index: u64, checkpoint: &Checkpoint) -> Result<InclusionProof, ProveError> {
    if index >= checkpoint.size {
        return Err(ProveError::OutOfRange { index, size: checkpoint.size });
    }
    let leaves = leaves(log, checkpoint.size)?;
    let hashes: Vec<Hash> = leaves.iter().map(|l| l.hash).collect();
    if super::merkle::root_of(&hashes) != checkpoint.root {
        return Err(ProveError::RootMismatch(checkpoint.size));
    }
    let proof = inclusion_proof(&hashes, index, checkpoint.size)?;
    let leaf = &leaves[index as usize];
    verify_inclusion(&leaf.hash, index, checkpoint.size, &proof, &checkpoint.root)?;
    let record = record_text(&leaf.file, leaf.line)?;
    Ok(InclusionProof {
        index,
        tree_size: checkpoint.size,
        file: leaf.file.clone(),
        line: leaf.line,
        record,
        leaf_hash: leaf.hash,
        proof,
        root: checkpoint.root,
    })
}

/// Proves that `new`'s tree extends `old`'s, from the log, and checks the proof.
pub fn prove_consistency(log: &Path, old: &Checkpoint, new: &Checkpoint) -> Result<Vec<Hash>, ProveError> {
    let leaves = leaves(log, new.size)?;
    let hashes: Vec<Hash> = leaves.iter().map(|l| l.hash).collect();
    if super::merkle::root_of(&hashes) != new.root {
        return Err(ProveError::RootMismatch(new.size));
    }
    let proof = consistency_proof(&hashes, old.size, new.size)?;
    verify_consistency(old.size, new.size, &old.root, &new.root, &proof)?;
    Ok(proof)
}

fn record_text(file: &Path, line: u64) -> Result<String, ProveError> {
    let f = File::open(file).map_err(|e| ProveError::Read(format!("{}: {e}", file.display())))?;
    let mut reader = LineReader::new(f);
    loop {
        match reader.next_line().map_err(|e| ProveError::Read(format!("{}: {e}", file.display())))? {
            Line::Complete { bytes, number, .. } if number == line => return Ok(String::from_utf8_lossy(bytes).into_owned()),
            Line::Complete { .. } | Line::TooLong { .. } => {}
            Line::Torn { .. } | Line::End => return Err(ProveError::Read(format!("{}: line {line} disappeared", file.display()))),
        }
    }
}

//! Every kind of tampering with a written log is detected by `verify`, and the
//! failure names the line at fault.

mod audit_support;

use std::path::{Path, PathBuf};

use audit_support::*;
use mqseal_core::formats::audit::AuditLog;
use mqseal_core::formats::audit::verify::{verify_path, VerifyOptions};

/// A log of 20 events: line 1 is log.opened, lines 2..=21 the events, line 22 log.closed.
fn small_log() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let c = config(dir.path());
    let path = c.path.clone();
    write_log(c, 20);
    (dir, path)
}

/// A log sealed every 4 records (one event per batch), so that checkpoints
/// narrow down where a rewrite happened.
fn finely_sealed_log(events: u64) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.checkpoint_every = 4;
    let path = c.path.clone();
    let (log, _) = AuditLog::open(c, key()).unwrap();
    for i in 0..events {
        log.append(publish(i)).unwrap();
        log.sync().unwrap();
    }
    assert!(log.shutdown().problems.is_empty());
    (dir, path)
}

#[test]
fn an_untouched_log_verifies() {
    let (_d, path) = small_log();
    let report = verify_with_key(&path).unwrap();
    assert_eq!((report.first_index, report.records, report.sealed, report.unsealed()), (0, 22, 22, 0));
    assert_eq!(report.signers, vec![report.origin.clone()]);
    assert!(report.checkpoints_checked >= 3, "{report:?}");
    assert_eq!(kinds(&path)[0], "log.opened");
    assert_eq!(kinds(&path)[21], "log.closed");
}

#[test]
fn one_changed_field_is_located() {
    let (_d, path) = small_log();
    let mut l = lines(&path);
    assert!(l[6].contains("fleet/dev-2/telemetry"), "{}", l[6]);
    l[6] = l[6].replace("fleet/dev-2/telemetry", "fleet/dev-1/telemetry");
    write_lines(&path, &l);
    assert_fails_at(verify_with_key(&path), "audit.jsonl", Some(7), "altered");
}

#[test]
fn a_changed_last_line_is_caught_by_the_checkpoint() {
    let (_d, path) = small_log();
    let mut l = lines(&path);
    l[21] = l[21].replace("\"refused\":0", "\"refused\":1");
    write_lines(&path, &l);
    assert_fails_at(verify_with_key(&path), "audit.jsonl", None, "rewritten");
}

#[test]
fn a_deleted_line_is_located() {
    let (_d, path) = small_log();
    let mut l = lines(&path);
    l.remove(5);
    write_lines(&path, &l);
    assert_fails_at(verify_with_key(&path), "audit.jsonl", Some(6), "records 5..5 are missing");
}

#[test]
fn two_swapped_lines_are_located() {
    let (_d, path) = small_log();
    let mut l = lines(&path);
    l.swap(5, 6);
    write_lines(&path, &l);
    assert_fails_at(verify_with_key(&path), "audit.jsonl", Some(6), "index 6 where 5 was due");
}

#[test]
fn an_inserted_line_is_located() {
    let (_d, path) = small_log();
    let mut l = lines(&path);
    // A well-formed forged record that links to line 5, as an attacker would write it.
    let mut forged: serde_json::Value = serde_json::from_str(&l[5]).unwrap();
    forged["facts"]["topic"] = serde_json::json!("fleet/forged");
    let forged = String::from_utf8(mqseal_core::formats::canonical_json::value_to_vec(&forged).unwrap()).unwrap();
    l.insert(5, forged);
    write_lines(&path, &l);
    // Line 7 (the original record 5) repeats the index of the forged line 6.
    assert_fails_at(verify_with_key(&path), "audit.jsonl", Some(7), "audit.jsonl:6 has index 5 too");
}

#[test]
fn a_duplicated_line_is_located() {
    let (_d, path) = small_log();
    let mut l = lines(&path);
    let dup = l[5].clone();
    l.insert(6, dup);
    write_lines(&path, &l);
    assert_fails_at(verify_with_key(&path), "audit.jsonl", Some(7), "inserted or duplicated");
}

#[test]
fn a_truncated_log_is_caught_by_its_own_checkpoint() {
    let (_d, path) = small_log();
    let l = lines(&path);
    write_lines(&path, &l[..15]);
    assert_fails_at(verify_with_key(&path), "audit.jsonl", Some(16), "truncated");
}

#[test]
fn a_truncated_log_is_caught_by_an_earlier_checkpoint_kept_elsewhere() {
    let (dir, path) = finely_sealed_log(10);
    let kept = dir.path().join("kept.checkpoint");
    std::fs::copy(checkpoint_path(&path), &kept).unwrap();
    let sealed_then = verify_with_key(&path).unwrap().records;
    write_log(config(dir.path()), 10);

    // The attacker cuts the log back to an old checkpoint of their choosing and
    // makes the files beside the log consistent with it.
    let history = std::fs::read_to_string(history_path(&path)).unwrap();
    let notes = mqseal_core::formats::audit::checkpoint::parse_checkpoints(&history).unwrap();
    // Which sizes got sealed depends on batching (and on the interval timer under
    // load), so take the largest earlier checkpoint there is.
    let old = notes
        .iter()
        .filter(|n| n.note.checkpoint.size > 0 && n.note.checkpoint.size < sealed_then)
        .max_by_key(|n| n.note.checkpoint.size)
        .expect("an earlier checkpoint");
    let cut = old.note.checkpoint.size;
    let mut rolled_back = String::new();
    for n in notes.iter().take_while(|n| n.note.checkpoint.size <= cut) {
        rolled_back.push_str(&n.note.to_text());
        rolled_back.push('\n');
    }
    std::fs::write(history_path(&path), rolled_back).unwrap();
    std::fs::write(checkpoint_path(&path), old.note.to_text()).unwrap();
    let l = lines(&path);
    write_lines(&path, &l[..cut as usize]);

    // On its own the log now looks sound...
    verify_with_key(&path).unwrap();
    // ...but not against the checkpoint kept elsewhere.
    let f = assert_fails_at(verify_against(&path, &kept), "audit.jsonl", Some(cut + 1), "truncated");
    assert!(f.reason.contains(&format!("covers {sealed_then}")), "{f}");
}

#[test]
fn hashes_recomputed_after_an_edit_are_caught_by_the_signed_checkpoints() {
    let (_d, path) = finely_sealed_log(20);
    let origin = verify_with_key(&path).unwrap().origin;
    let mut l = lines(&path);
    l[10] = l[10].replace("\"seq\":9", "\"seq\":99");
    write_lines(&path, &l);
    rechain(&path, &origin);
    // The chain is whole again, but the roots differ from the signed ones. Sealed
    // sizes are 1, 5, 9, 13, ...: record 10 lies in the range 9..12, from line 10.
    assert_fails_at(verify_with_key(&path), "audit.jsonl", Some(10), "records 9..12 (from this line on) do not match the checkpoint");
}

#[test]
fn an_old_checkpoint_put_back_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path()).path;
    write_log(config(dir.path()), 5);
    let old = std::fs::read(checkpoint_path(&path)).unwrap();
    write_log(config(dir.path()), 5);
    std::fs::write(checkpoint_path(&path), &old).unwrap();
    assert_fails_at(verify_with_key(&path), "audit.jsonl.checkpoint", Some(1), "old checkpoint replayed");
}

#[test]
fn an_old_checkpoint_put_back_with_a_rolled_back_history_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path()).path;
    write_log(config(dir.path()), 5);
    let old = std::fs::read(checkpoint_path(&path)).unwrap();
    let old_history = std::fs::read(history_path(&path)).unwrap();
    write_log(config(dir.path()), 5);
    std::fs::write(checkpoint_path(&path), &old).unwrap();
    std::fs::write(history_path(&path), &old_history).unwrap();
    // The log ends with a clean shutdown that the final checkpoint must cover.
    let n = lines(&path).len() as u64;
    assert_fails_at(verify_with_key(&path), "audit.jsonl", Some(n), "clean shutdown");
}

#[test]
fn more_unsealed_records_than_the_writer_leaves_are_detected() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.checkpoint_every = 4;
    c.batch_max_records = 2;
    let path = c.path.clone();
    write_log(c.clone(), 2);
    let old = std::fs::read(checkpoint_path(&path)).unwrap();
    let old_history = std::fs::read(history_path(&path)).unwrap();
    let sealed = lines(&path).len();
    write_log(c, 30);
    std::fs::write(checkpoint_path(&path), &old).unwrap();
    std::fs::write(history_path(&path), &old_history).unwrap();
    // Without the final log.closed, the clean-shutdown rule does not apply; the
    // bound each log.opened states (4 + 2) does.
    let mut l = lines(&path);
    l.pop();
    write_lines(&path, &l);
    assert_fails_at(verify_with_key(&path), "audit.jsonl", Some(sealed as u64 + 1), "never leaves more than 6 unsealed");
}

#[test]
fn a_flipped_signature_bit_is_detected() {
    let (_d, path) = small_log();
    let text = std::fs::read_to_string(checkpoint_path(&path)).unwrap();
    let sig_start = text.rfind(' ').unwrap() + 1;
    // A character in the signature proper (after the 4-byte key ID = 6 base64 chars).
    let at = sig_start + 30;
    let mut bytes = text.into_bytes();
    bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
    std::fs::write(checkpoint_path(&path), bytes).unwrap();
    assert_fails_at(verify_with_key(&path), "audit.jsonl.checkpoint", Some(1), "does not verify");
}

#[test]
fn a_checkpoint_by_another_key_is_refused() {
    let (_d, path) = small_log();
    let r = verify_path(&path, &VerifyOptions { keys: vec![other_key().verifying_key()], ..Default::default() });
    assert_fails_at(r, "audit.jsonl.checkpoint", Some(1), "not signed by any of the given keys");
    // Without keys everything else is still checked, and the report says no signer was checked.
    let report = verify_path(&path, &VerifyOptions::default()).unwrap();
    assert!(report.signers.is_empty());
}

#[test]
fn missing_checkpoint_files_fail() {
    let (_d, path) = small_log();
    std::fs::remove_file(history_path(&path)).unwrap();
    assert_fails_at(verify_with_key(&path), "audit.jsonl.checkpoints", None, "missing");
    std::fs::remove_file(checkpoint_path(&path)).unwrap();
    assert_fails_at(verify_with_key(&path), "audit.jsonl.checkpoint", None, "missing");
}

#[test]
fn a_torn_last_line_fails_until_the_writer_recovers_it() {
    let (dir, path) = small_log();
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.extend_from_slice(b"{\"facts\":{\"cli");
    std::fs::write(&path, bytes).unwrap();
    assert_fails_at(verify_with_key(&path), "audit.jsonl", Some(23), "incomplete");
    write_log(config(dir.path()), 1);
    verify_with_key(&path).unwrap();
}

/// Flips every bit of a small log file, one at a time, and every flip is caught.
/// Signatures are checked once up front (flips in the log file cannot change
/// them); the flip loop then needs only the roots they vouch for.
#[test]
fn every_single_bit_flip_in_a_log_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let c = config(dir.path());
    let path = c.path.clone();
    write_log(c, 2);
    verify_with_key(&path).unwrap();
    let original = std::fs::read(&path).unwrap();
    let mut missed = Vec::new();
    for i in 0..original.len() {
        for bit in 0..8 {
            let mut b = original.clone();
            b[i] ^= 1 << bit;
            std::fs::write(&path, &b).unwrap();
            if verify_path(&path, &VerifyOptions::default()).is_ok() {
                missed.push((i, bit));
            }
        }
    }
    assert!(missed.is_empty(), "{} flips went unnoticed, e.g. {:?}", missed.len(), &missed[..missed.len().min(5)]);
    std::fs::write(&path, &original).unwrap();
    verify_with_key(&path).unwrap();
}

/// The same for the latest checkpoint, with signatures checked; for the history
/// (several notes, each flip costing several signature checks in a debug build)
/// one bit of every byte, a different bit from byte to byte.
#[test]
fn every_single_bit_flip_in_the_checkpoints_is_caught() {
    let (_d, path) = small_log();
    flip_bits_of(&checkpoint_path(&path), &path, false);
    flip_bits_of(&history_path(&path), &path, true);
}

fn flip_bits_of(file: &Path, log: &Path, one_per_byte: bool) {
    let original = std::fs::read(file).unwrap();
    let mut missed = Vec::new();
    for i in 0..original.len() {
        let bits = if one_per_byte { i % 8..i % 8 + 1 } else { 0..8 };
        for bit in bits {
            let mut b = original.clone();
            b[i] ^= 1 << bit;
            std::fs::write(file, &b).unwrap();
            if verify_with_key(log).is_ok() {
                missed.push((i, bit));
            }
        }
    }
    std::fs::write(file, &original).unwrap();
    assert!(missed.is_empty(), "{} flips went unnoticed, e.g. {:?}", missed.len(), &missed[..missed.len().min(5)]);
}

#[test]
fn a_partial_log_verifies_only_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.rotate_bytes = 2000;
    let path = c.path.clone();
    write_log(c, 40);
    let first = dir.path().join("audit.jsonl.1");
    verify_with_key(&path).unwrap();
    std::fs::remove_file(&first).unwrap();
    assert_fails_at(verify_with_key(&path), "audit.jsonl.2", Some(1), "verify what remains with --partial");
    let report = verify_path(&path, &VerifyOptions { keys: vec![key().verifying_key()], allow_partial: true, ..Default::default() }).unwrap();
    assert!(report.first_index > 0, "{report:?}");
    assert_eq!(report.records, report.sealed);
}

/// `file:line` where opening the log (what the plugin does at start) refuses it.
fn where_opening_refuses(path: &Path) -> String {
    match AuditLog::open(config(path.parent().unwrap()), key()) {
        Ok(_) => panic!("opening {} should refuse the edited log", path.display()),
        Err(mqseal_core::formats::audit::AuditError::Broken { location, reason }) => {
            let file_line = location.rsplit('/').next().unwrap_or(&location).to_string();
            eprintln!("open: {file_line}: {reason}");
            file_line
        }
        Err(other) => panic!("expected a broken chain, got: {other}"),
    }
}

/// `file:line` where `verify` fails.
fn where_verify_fails(path: &Path) -> String {
    let failure = verify_with_key(path).err().expect("verify should fail");
    eprintln!("verify: {failure}");
    let file = failure.file.as_ref().and_then(|f| f.file_name()).unwrap().to_string_lossy().into_owned();
    format!("{file}:{}", failure.line.expect("a line"))
}

/// One line-number convention everywhere: the plugin's refusal at start and
/// `verify` name the same 1-based line of the file for the same edit (a changed
/// record by its own line).
#[test]
fn opening_and_verify_name_the_same_line_for_the_same_edit() {
    type Edit = fn(&mut Vec<String>);
    let edits: [(&str, Edit, &str); 5] = [
        ("a changed field in line 7", |l| *l = { let mut v = l.clone(); v[6] = v[6].replace("dev-2", "dev-1"); v }, "audit.jsonl:7"),
        ("a changed last line", |l| { let n = l.len() - 1; l[n] = l[n].replace("\"refused\":0", "\"refused\":1") }, "audit.jsonl:2"),
        ("line 6 deleted", |l| { l.remove(5); }, "audit.jsonl:6"),
        ("lines 6 and 7 swapped", |l| l.swap(5, 6), "audit.jsonl:6"),
        ("line 9 duplicated", |l| { let d = l[8].clone(); l.insert(9, d) }, "audit.jsonl:10"),
    ];
    for (what, edit, expected) in edits {
        let (_d, path) = small_log();
        let mut l = lines(&path);
        edit(&mut l);
        write_lines(&path, &l);
        let verify_at = where_verify_fails(&path);
        let open_at = where_opening_refuses(&path);
        assert_eq!(open_at, verify_at, "{what}: the plugin and verify disagree");
        assert_eq!(open_at, expected, "{what}");
    }
}

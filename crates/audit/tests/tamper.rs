//! A 10k-record log across many segments verifies; every kind of tampering on it is caught
//! and the first bad record is named.

mod common;

use std::fs;

use common::*;
use safehouse_audit::{verify, verify_with, Problem, Report};

const N: u64 = 10_000;

/// A fresh log of N records plus its segment files.
fn fixture(tag: &str) -> (TempDir, Vec<std::path::PathBuf>) {
    let t = TempDir::new(tag);
    make_log(&t.audit(), N, small_opts());
    let segs = segments(&t.audit());
    (t, segs)
}

fn problem(r: &Report) -> &Problem {
    assert!(!r.ok, "tampering not detected: {r:#?}");
    r.problem.as_ref().unwrap()
}

#[test]
fn intact_log_across_rotations_verifies() {
    let (t, segs) = fixture("intact");
    assert!(segs.len() >= 5, "expected several segments, got {}", segs.len());
    let r = verify(t.audit()).unwrap();
    assert!(r.ok, "{r:#?}");
    assert_eq!(r.problem, None);
    // N records, the `log` record written on open, and the checkpoints.
    assert_eq!(r.records, r.last_seq);
    assert!(r.last_seq > N + 1 && r.checkpoints >= N / 500, "{r:#?}");
    assert_eq!(r.files, segs.len() as u64);
    assert_eq!(r.unsigned_tail, 0, "close signs the tail");
    assert_eq!(r.torn_tail, None);
    // Every segment but the first starts where the previous one ended.
    for pair in segs.windows(2) {
        let last = read_lines(&pair[0]).pop().unwrap();
        let first = read_lines(&pair[1]).remove(0);
        assert_eq!(seq_of(&first), seq_of(&last) + 1);
        assert!(first.contains(&format!("\"prev\":\"{}\"", hash_of(&last))));
    }
}

#[test]
fn one_edited_byte_is_caught() {
    let (t, segs) = fixture("edit");
    let path = &segs[segs.len() / 2];
    let mut lines = read_lines(path);
    let seq = seq_of(&lines[10]);
    lines[10] =
        lines[10].replacen("\"status\":200", "\"status\":201", 1).replacen("\"status\":403", "\"status\":200", 1);
    write_lines(path, &lines);
    let r = verify(t.audit()).unwrap();
    let p = problem(&r);
    assert_eq!((p.file.as_str(), p.line, p.seq), (path.file_name().unwrap().to_str().unwrap(), 11, Some(seq)));
    assert!(p.what.contains("record modified"), "{p}");
    assert_eq!(r.last_seq, seq - 1, "the report ends at the last good record");
}

#[test]
fn an_edited_hash_or_prev_is_caught() {
    for field in ["hash", "prev"] {
        let (t, segs) = fixture("edit-hash");
        let path = &segs[1];
        let mut lines = read_lines(path);
        let seq = seq_of(&lines[3]);
        let at = lines[3].find(&format!("\"{field}\":\"")).unwrap() + field.len() + 4;
        let flipped = if &lines[3][at..=at] == "0" { "1" } else { "0" };
        lines[3].replace_range(at..=at, flipped);
        write_lines(path, &lines);
        let r = verify(t.audit()).unwrap();
        let p = problem(&r);
        assert_eq!((p.line, p.seq), (4, Some(seq)), "{field}: {p}");
    }
}

#[test]
fn a_deleted_record_is_caught() {
    let (t, segs) = fixture("delete");
    let path = &segs[2];
    let mut lines = read_lines(path);
    let gone = seq_of(&lines.remove(20));
    write_lines(path, &lines);
    let p = problem(&verify(t.audit()).unwrap()).clone();
    assert_eq!((p.line, p.seq), (21, Some(gone + 1)), "{p}");
    assert!(p.what.contains("missing"), "{p}");
}

#[test]
fn swapped_records_are_caught() {
    let (t, segs) = fixture("swap");
    let path = &segs[3];
    let mut lines = read_lines(path);
    let first = seq_of(&lines[5]);
    lines.swap(5, 6);
    write_lines(path, &lines);
    let p = problem(&verify(t.audit()).unwrap()).clone();
    assert_eq!((p.line, p.seq), (6, Some(first + 1)), "{p}");
}

#[test]
fn a_forged_record_with_a_valid_hash_is_caught_by_seq() {
    // Insert a forged copy, correctly chained to the record before it, with the next seq.
    let (t, segs) = fixture("forge-seq");
    let path = &segs[2];
    let mut lines = read_lines(path);
    let forged = reseal(&lines[7].replace("403", "200"), seq_of(&lines[7]) + 1, &hash_of(&lines[7]));
    lines.insert(8, forged);
    write_lines(path, &lines);
    let p = problem(&verify(t.audit()).unwrap()).clone();
    // The forgery itself is consistent; the record after it is where the chain breaks.
    assert_eq!(p.line, 10, "{p}");
    assert!(p.what.contains("reordered, duplicated or inserted"), "{p}");
}

#[test]
fn a_forged_record_with_the_whole_chain_recomputed_is_caught_by_the_next_checkpoint() {
    let (t, segs) = fixture("forge-chain");
    let path = &segs[2];
    let mut lines = read_lines(path);
    let at = 8;
    let forged = lines[at - 1].replace("\"tenant\":\"tenant-", "\"tenant\":\"evil-");
    lines.insert(at, forged);
    // Renumber and rechain everything after, in this segment and the later ones.
    let mut prev = hash_of(&lines[at - 1]);
    let mut seq = seq_of(&lines[at - 1]);
    let mut files: Vec<(std::path::PathBuf, Vec<String>)> = vec![(path.clone(), lines)];
    files.extend(segs[3..].iter().map(|p| (p.clone(), read_lines(p))));
    let mut first_checkpoint = None;
    for (fi, (_, lines)) in files.iter_mut().enumerate() {
        let start = if fi == 0 { at } else { 0 };
        for (li, line) in lines.iter_mut().enumerate().skip(start) {
            seq += 1;
            if first_checkpoint.is_none() && line.contains("\"kind\":\"checkpoint\"") {
                first_checkpoint = Some((fi, li + 1, seq));
            }
            *line = reseal(line, seq, &prev);
            prev = hash_of(line);
        }
    }
    for (p, lines) in &files {
        write_lines(p, lines);
    }
    let (fi, line, seq) = first_checkpoint.unwrap();
    let p = problem(&verify(t.audit()).unwrap()).clone();
    assert_eq!(p.file, files[fi].0.file_name().unwrap().to_str().unwrap());
    assert_eq!((p.line, p.seq), (line as u64, Some(seq)), "{p}");
    assert!(p.what.contains("checkpoint"), "{p}");
}

#[test]
fn a_deleted_middle_segment_is_caught() {
    let (t, segs) = fixture("delete-file");
    fs::remove_file(&segs[2]).unwrap();
    let p = problem(&verify(t.audit()).unwrap()).clone();
    assert_eq!(p.file, segs[3].file_name().unwrap().to_str().unwrap());
    assert!(p.what.contains("audit-000003.jsonl is missing"), "{p}");

    // Renaming the later files to close the gap does not help: the seq jumps.
    for (i, s) in segs.iter().enumerate().skip(3) {
        fs::rename(s, &segs[i - 1]).unwrap();
    }
    let p = problem(&verify(t.audit()).unwrap()).clone();
    assert_eq!((p.file.as_str(), p.line), ("audit-000003.jsonl", 1));
    assert!(p.what.contains("missing"), "{p}");
}

#[test]
fn a_deleted_first_segment_is_caught() {
    let (t, segs) = fixture("delete-first");
    fs::remove_file(&segs[0]).unwrap();
    let p = problem(&verify(t.audit()).unwrap()).clone();
    assert!(p.what.contains("audit-000001.jsonl is missing"), "{p}");
}

#[test]
fn a_changed_checkpoint_signature_is_caught() {
    let (t, segs) = fixture("sig");
    let path = &segs[1];
    let mut lines = read_lines(path);
    let i = lines.iter().position(|l| l.contains("\"kind\":\"checkpoint\"")).unwrap();
    let at = lines[i].find("\"sig\":\"").unwrap() + 7;
    let c = if &lines[i][at..=at] == "a" { "b" } else { "a" };
    lines[i].replace_range(at..=at, c);
    // Reseal it so that only the signature is wrong.
    let (seq, prev) = (seq_of(&lines[i]), hash_of(&lines[i - 1]));
    lines[i] = reseal(&lines[i], seq, &prev);
    // ... and rechain the rest of the segment so the chain itself is intact.
    let mut prev = hash_of(&lines[i]);
    for line in lines.iter_mut().skip(i + 1) {
        *line = reseal(line, seq_of(line), &prev);
        prev = hash_of(line);
    }
    write_lines(path, &lines);
    let p = problem(&verify(t.audit()).unwrap()).clone();
    assert_eq!((p.line, p.seq), (i as u64 + 1, Some(seq)), "{p}");
    assert!(p.what.contains("signature is invalid"), "{p}");
}

#[test]
fn a_replaced_key_is_caught_when_the_key_is_pinned() {
    let (t, _) = fixture("key");
    let pinned = safehouse_audit::read_public_key(&t.audit().join("signing.pub")).unwrap();
    // An attacker who can write the directory can make a new key and re-sign everything;
    // only a key kept elsewhere tells.
    let other = TempDir::new("key-other");
    make_log(&other.audit(), 10, small_opts());
    let foreign = safehouse_audit::read_public_key(&other.audit().join("signing.pub")).unwrap();
    assert!(verify_with(t.audit(), Some(pinned)).unwrap().ok);
    let r = verify_with(t.audit(), Some(foreign)).unwrap();
    assert!(problem(&r).what.contains("another key"), "{r:#?}");
}

#[test]
fn garbage_line_and_torn_middle_segment_are_tampering() {
    let (t, segs) = fixture("garbage");
    let mut text = fs::read(&segs[1]).unwrap();
    text.extend_from_slice(b"{\"seq\":1,\"ti");
    fs::write(&segs[1], text).unwrap();
    let p = problem(&verify(t.audit()).unwrap()).clone();
    assert_eq!(p.file, "audit-000002.jsonl");
    assert!(p.what.contains("not the last"), "{p}");

    let (t, segs) = fixture("garbage2");
    let mut lines = read_lines(&segs[1]);
    lines.insert(4, "hello".into());
    write_lines(&segs[1], &lines);
    let p = problem(&verify(t.audit()).unwrap()).clone();
    assert_eq!((p.line, p.seq), (5, None), "{p}");
}

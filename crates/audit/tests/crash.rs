//! Crash safety: a process appending as fast as it can is SIGKILLed; after a restart the
//! log verifies, every record reported durable is there, and the sequence continues.

mod common;

use std::fs;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::*;
use safehouse_audit::{verify, AuditLog, Kind, Options, Record};

const CHILD_ENV: &str = "SAFEHOUSE_AUDIT_CRASH_CHILD";

/// Not a test by itself: the body of the child process of `kill_9_loses_only_the_unacknowledged_tail`.
#[test]
fn crash_child() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else { return };
    let log = AuditLog::open_with(&dir, Options { rotate_bytes: 4 << 20, ..Options::default() }).unwrap();
    for i in 0.. {
        log.append(sample(i)).unwrap();
        if i % 5000 == 4999 {
            let durable = log.flush().unwrap();
            println!("durable {durable}");
        }
    }
}

#[test]
fn kill_9_loses_only_the_unacknowledged_tail() {
    let t = TempDir::new("crash");
    let mut acked = 0;
    for round in 0..3 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, t.audit())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        let mut reported = 0u64;
        // Kill it in the middle of heavy logging, at a different point each round.
        while reported < acked + 30_000 + round * 7_000 {
            line.clear();
            assert!(out.read_line(&mut line).unwrap() > 0, "the child stopped early");
            if let Some(n) = line.trim().strip_prefix("durable ") {
                reported = n.parse().unwrap();
            }
        }
        child.kill().unwrap();
        // Whatever it reported before dying was durable too.
        for l in out.lines() {
            if let Some(n) = l.unwrap().trim().strip_prefix("durable ") {
                reported = reported.max(n.parse().unwrap());
            }
        }
        child.wait().unwrap();

        // Before reopening: intact, maybe with a torn last line.
        let r = verify(t.audit()).unwrap();
        assert!(r.ok, "round {round}: {r:#?}");
        assert!(r.last_seq >= reported, "round {round}: acknowledged {reported}, found {}", r.last_seq);
        let torn_before = r.torn_tail.clone();

        // Reopen: a torn tail is cut off and said so; the sequence continues.
        let log = AuditLog::open(t.audit()).unwrap();
        let seq = log.append(Record::new(Kind::Api, serde_json::json!({"after": round}))).unwrap();
        assert_eq!(seq, r.last_seq + 2, "the `log` record written on open, then this one");
        log.close().unwrap();
        let r2 = verify(t.audit()).unwrap();
        assert!(r2.ok && r2.torn_tail.is_none(), "{r2:#?}");
        if let Some(torn) = torn_before {
            assert!(r2.recovered.contains(&torn), "{torn} not recorded in {r2:#?}");
            assert!(torn.to_string().contains("tail truncated by a crash at offset"));
        }
        acked = r2.last_seq;
    }
}

#[test]
fn a_torn_last_line_is_a_crash_not_tampering() {
    let t = TempDir::new("torn");
    let last = make_log(&t.audit(), 1000, small_opts());
    let seg = segments(&t.audit()).pop().unwrap();
    let len = fs::metadata(&seg).unwrap().len();
    // Half a record, as a write cut short by SIGKILL or power loss leaves it.
    let mut bytes = fs::read(&seg).unwrap();
    let half = br#"{"seq":99999,"time":"2026-01-01T00:00:00.000Z","kind":"api","sand"#;
    bytes.extend_from_slice(half);
    fs::write(&seg, &bytes).unwrap();
    let r = verify(t.audit()).unwrap();
    assert!(r.ok, "{r:#?}");
    let torn = r.torn_tail.clone().unwrap();
    assert_eq!((torn.offset, torn.bytes), (len, half.len() as u64));
    assert_eq!(
        torn.to_string(),
        format!(
            "{}: tail truncated by a crash at offset {len} ({} bytes)",
            seg.file_name().unwrap().to_str().unwrap(),
            half.len()
        )
    );

    let log = AuditLog::open(t.audit()).unwrap();
    assert_eq!(log.stats().durable_seq, last + 1);
    drop(log);
    let r = verify(t.audit()).unwrap();
    assert!(r.ok && r.torn_tail.is_none() && r.recovered == vec![torn], "{r:#?}");

    // Zeros, as some filesystems leave after a power loss, are a torn tail too.
    let seg = segments(&t.audit()).pop().unwrap();
    let mut bytes = fs::read(&seg).unwrap();
    bytes.extend_from_slice(&[0; 4096]);
    fs::write(&seg, &bytes).unwrap();
    assert!(verify(t.audit()).unwrap().ok);
    AuditLog::open(t.audit()).unwrap().close().unwrap();
    let r = verify(t.audit()).unwrap();
    assert!(r.ok && r.recovered.len() == 2, "{r:#?}");
}

#[test]
fn a_corrupt_complete_last_line_refuses_to_open() {
    let t = TempDir::new("corrupt-tail");
    make_log(&t.audit(), 100, small_opts());
    let seg = segments(&t.audit()).pop().unwrap();
    let mut lines = read_lines(&seg);
    let last = lines.pop().unwrap().replace("checkpoint", "checkpoinx");
    lines.push(last);
    write_lines(&seg, &lines);
    let err = AuditLog::open(t.audit()).err().unwrap().to_string();
    assert!(err.contains("is corrupt") && err.contains("safehouse audit verify"), "{err}");
}

//! AG-05 and AG-04: an event flood against a slow disk cannot grow memory without bound
//! (drops are counted and recorded); hostile strings stay one escaped, capped line.

mod common;

use std::fs;

use common::*;
use safehouse_audit::{export, verify, AuditLog, Filter, Kind, Options, Record};
use serde_json::json;

fn rss_kib() -> u64 {
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn an_event_flood_on_a_slow_disk_is_bounded_and_counted() {
    let t = TempDir::new("flood");
    let opts = Options {
        queue_records: 2_000,
        queue_bytes: 1 << 20,
        event_rate: 0,
        slow_disk: std::time::Duration::from_millis(20),
        ..Options::default()
    };
    let log = AuditLog::open_with(t.audit(), opts).unwrap();
    let before = rss_kib();
    let (mut accepted, mut dropped, mut max_queued) = (0u64, 0u64, 0usize);
    for i in 0..1_000_000u64 {
        let rec = Record::event("sb_flood", json!({"denied": "connect", "addr": "10.0.0.1:443", "n": i}));
        match log.append(rec) {
            Ok(_) => accepted += 1,
            Err(safehouse_audit::AppendError::Dropped) => dropped += 1,
            Err(e) => panic!("{e}"),
        }
        if i % 1000 == 0 {
            max_queued = max_queued.max(log.stats().queued);
        }
    }
    let grown = rss_kib().saturating_sub(before);
    assert!(dropped > 0 && accepted > 0, "accepted {accepted}, dropped {dropped}");
    assert!(max_queued <= 2_001, "queue grew to {max_queued}");
    assert!(grown < 64 << 10, "memory grew by {grown} KiB");
    // API calls are never dropped: they wait for room.
    let seq = log.append_durable(Record::api("admin", "GET", "/v1/sandboxes", 200)).unwrap();
    assert_eq!(log.stats().dropped, dropped);
    log.close().unwrap();

    let r = verify(t.audit()).unwrap();
    assert!(r.ok, "{r:#?}");
    assert_eq!(r.dropped, dropped, "every drop is written in a later record");
    assert!(r.last_seq >= seq);
}

#[test]
fn events_over_the_rate_are_dropped_and_counted() {
    let t = TempDir::new("rate");
    let log =
        AuditLog::open_with(t.audit(), Options { event_rate: 1000, event_burst: 500, ..Options::default() }).unwrap();
    let accepted = (0..20_000).filter(|_| log.append(Record::event("sb_x", json!({"denied": "open"}))).is_ok()).count();
    assert!((500..2_000).contains(&accepted), "accepted {accepted}");
    log.append(Record::api("t", "GET", "/", 200)).unwrap();
    log.close().unwrap();
    let r = verify(t.audit()).unwrap();
    assert_eq!(r.dropped, 20_000 - accepted as u64, "{r:#?}");
}

#[test]
fn hostile_strings_stay_one_escaped_capped_line() {
    let t = TempDir::new("hostile");
    let log = AuditLog::open(t.audit()).unwrap();
    let evil = "rm -rf /\n{\"seq\":1,\"kind\":\"api\"}\r\n\u{1b}[2J\u{1b}]0;owned\u{7}\u{0}";
    let big = "A".repeat(1 << 20);
    log.append(Record::event("sb_\n\u{1b}[31m", json!({"cmd": evil, "file": big, evil: 1}))).unwrap();
    log.append(Record::policy("sb_x", &format!("# {}\n", "p".repeat(1 << 20)))).unwrap();
    log.close().unwrap();

    let text = fs::read_to_string(segments(&t.audit())[0].clone()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    // open, the event, the policy, the final checkpoint.
    assert_eq!(lines.len(), 4, "{text:.2000}");
    let event = lines[1];
    assert!(!event.contains('\u{1b}') && !event.contains('\r') && !event.contains('\u{0}'));
    assert!(event.len() < 16 << 10, "{} bytes", event.len());
    let v: serde_json::Value = serde_json::from_str(event).unwrap();
    assert_eq!(v["data"]["cmd"], json!(evil));
    assert_eq!(v["sandbox"], json!("sb_\n\u{1b}[31m"));
    assert!(v["data"]["file"].as_str().unwrap().ends_with("…[truncated, 1048576 bytes]"));
    let policy: serde_json::Value = serde_json::from_str(lines[2]).unwrap();
    assert!(lines[2].len() < 80 << 10);
    assert_eq!(policy["data"]["sha256"].as_str().unwrap().len(), 64, "the digest is of the full text");
    assert!(verify(t.audit()).unwrap().ok);
}

#[test]
fn export_filters_by_sandbox_kind_and_time() {
    let t = TempDir::new("export");
    let log = AuditLog::open(t.audit()).unwrap();
    for i in 0..30 {
        let sb = format!("sb_{}", i % 3);
        log.append(Record::event(&sb, json!({"i": i}))).unwrap();
        if i % 10 == 0 {
            log.append(Record::policy(&sb, "[filesystem]\n")).unwrap();
        }
    }
    log.close().unwrap();
    let run = |f: Filter| {
        let mut out = Vec::new();
        let n = export(t.audit(), &f, &mut out).unwrap();
        let lines: Vec<serde_json::Value> =
            String::from_utf8(out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(n as usize, lines.len());
        lines
    };
    let all = run(Filter::default());
    assert_eq!(all.len() as u64, verify(t.audit()).unwrap().records);
    let sb1 = run(Filter { sandbox: Some("sb_1".into()), ..Filter::default() });
    assert_eq!(sb1.len(), 11, "10 events and the policy at i = 10");
    assert!(sb1.iter().all(|v| v["sandbox"] == json!("sb_1")));
    let policies = run(Filter { kinds: vec![Kind::Policy.to_string()], ..Filter::default() });
    assert_eq!(policies.len(), 3);
    let two = run(Filter { kinds: vec!["policy".into(), "checkpoint".into()], ..Filter::default() });
    assert!(two.len() >= 4);
    assert_eq!(run(Filter::default().since("2999-01-01T00:00:00Z").unwrap()).len(), 0);
    assert_eq!(run(Filter::default().until("2999-01-01T00:00:00+02:00").unwrap()).len(), all.len());
    assert_eq!(run(Filter::default().until("2000-01-01T00:00:00Z").unwrap()).len(), 0);
    assert!(Filter::default().since("last week").is_err());
}

#[test]
fn the_directory_and_key_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let t = TempDir::new("perms");
    AuditLog::open(t.audit()).unwrap().close().unwrap();
    let mode = |p: std::path::PathBuf| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(t.audit()), 0o700);
    assert_eq!(mode(t.audit().join("signing.key")), 0o600);
    assert_eq!(mode(segments(&t.audit())[0].clone()), 0o600);
    fs::set_permissions(t.audit().join("signing.key"), fs::Permissions::from_mode(0o644)).unwrap();
    let err = AuditLog::open(t.audit()).err().unwrap().to_string();
    assert!(err.contains("mode 644"), "{err}");
}

//! Group commit (`Options::sync_interval`): trickling records are held back for one
//! interval and then written on their own; a caller waiting for durability is never held.

mod common;

use std::time::{Duration, Instant};

use common::{sample, TempDir};
use safehouse_audit::{AuditLog, Options};

#[test]
fn trickling_records_wait_one_interval_then_reach_the_disk_unasked() {
    let t = TempDir::new("group");
    let opts = Options { sync_interval: Duration::from_secs(2), ..Options::default() };
    let log = AuditLog::open_with(t.audit(), opts).unwrap();
    // Opening wrote (and synced) the `log` record just now: the next batch is held back.
    let seq = log.append(sample(1)).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    assert!(log.stats().durable_seq < seq, "written before the interval ended");
    let start = Instant::now();
    while log.stats().durable_seq < seq {
        assert!(start.elapsed() < Duration::from_secs(5), "never written without a flush");
        std::thread::sleep(Duration::from_millis(5));
    }
    log.close().unwrap();
}

#[test]
fn a_flush_is_not_held_for_the_interval() {
    let t = TempDir::new("group-flush");
    let opts = Options { sync_interval: Duration::from_secs(30), ..Options::default() };
    let log = AuditLog::open_with(t.audit(), opts).unwrap();
    for i in 0..3 {
        let seq = log.append(sample(i)).unwrap();
        let start = Instant::now();
        assert!(log.flush().unwrap() >= seq);
        assert!(start.elapsed() < Duration::from_secs(5), "flush waited for the group commit");
    }
    let start = Instant::now();
    log.append(sample(9)).unwrap();
    log.close().unwrap();
    assert!(start.elapsed() < Duration::from_secs(5), "close waited for the group commit");
}

use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::json;

use super::*;

fn bus(rate: f64, burst: f64) -> EventBus {
    EventBus::new(BusConfig { rate, burst, ring_events: 8, global_events: 16, ..BusConfig::default() })
}

#[test]
fn seq_counts_per_sandbox_from_one() {
    let b = bus(0.0, 0.0);
    let seqs: Vec<u64> = ["a", "b", "a", "a", "b"].iter().map(|s| b.emit(s, "x", json!({})).unwrap().seq).collect();
    assert_eq!(seqs, [1, 1, 2, 3, 2]);
}

#[test]
fn time_has_milliseconds() {
    let t = bus(0.0, 0.0).emit("a", "x", json!(null)).unwrap().time.clone();
    assert_eq!(t.len(), "2026-01-31T12:00:00.123Z".len(), "{t}");
    assert!(t.ends_with('Z') && t.as_bytes()[19] == b'.', "{t}");
}

#[test]
fn ring_replays_from_since_seq_and_stays_bounded() {
    let b = bus(0.0, 0.0);
    for i in 0..20 {
        b.emit("a", "x", json!({ "i": i }));
    }
    let all: Vec<u64> = b.subscribe_sandbox("a", 0).replay.iter().map(|e| e.seq).collect();
    assert_eq!(all, (13..=20).collect::<Vec<_>>(), "the last 8 are kept");
    let since: Vec<u64> = b.subscribe_sandbox("a", 17).replay.iter().map(|e| e.seq).collect();
    assert_eq!(since, [18, 19, 20]);
    assert!(b.subscribe_sandbox("nobody", 0).replay.is_empty());
}

#[test]
fn ring_bytes_are_bounded() {
    let b = EventBus::new(BusConfig { rate: 0.0, ring_bytes: 64 << 10, ..BusConfig::default() });
    for _ in 0..100 {
        b.emit("a", "x", json!({ "s": "y".repeat(4000) }));
    }
    let kept = b.subscribe_sandbox("a", 0).replay.len();
    assert!((10..=20).contains(&kept), "{kept}");
}

#[test]
fn global_replay_filters_by_visibility() {
    let b = bus(0.0, 0.0);
    b.register("a", "t1");
    b.register("b", "t2");
    b.emit("a", "x", json!(1));
    b.emit("b", "x", json!(2));
    b.emit("a", "x", json!(3));
    let sub = b.subscribe_all(true, |e| e.tenant.as_deref() == Some("t1"));
    let data: Vec<Value> = sub.replay.iter().map(|e| e.data.clone()).collect();
    assert_eq!(data, [json!(1), json!(3)]);
    assert!(b.subscribe_all(false, |_| true).replay.is_empty());
}

#[tokio::test]
async fn live_events_follow_the_replay_exactly_once() {
    let b = bus(0.0, 0.0);
    b.emit("a", "x", json!(1));
    let mut sub = b.subscribe_sandbox("a", 0);
    b.emit("a", "y", json!(2));
    b.emit("b", "y", json!(3));
    assert_eq!(sub.replay.len(), 1);
    let e = sub.live.recv().await.unwrap();
    assert_eq!((e.sandbox.as_str(), e.seq, e.kind.as_str()), ("a", 2, "y"));
    assert_eq!(sub.live.recv().await.unwrap().sandbox, "b");
}

#[test]
fn rate_limit_drops_and_counts_then_reports_in_the_next_event() {
    let b = bus(1.0, 5.0);
    let got: Vec<_> = (0..100).filter_map(|i| b.emit("a", "net.denied", json!({ "i": i }))).collect();
    assert_eq!(got.len(), 5, "the burst gets through, the rest is dropped");
    assert!(got.iter().all(|e| e.dropped == 0));
    assert_eq!(b.dropped("a"), 95);
    // Another sandbox has its own bucket.
    assert!(b.emit("b", "x", json!(null)).is_some());
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let next = b.emit("a", "x", json!(null)).expect("a token came back");
    assert_eq!((next.seq, next.dropped), (6, 95));
    let ser = serde_json::to_value(&*next).unwrap();
    assert_eq!(ser["dropped"], 95);
    assert!(ser.get("tenant").is_none());
}

#[test]
fn sink_sees_what_gets_through() {
    let b = bus(1.0, 3.0);
    let n = Arc::new(AtomicUsize::new(0));
    let n2 = n.clone();
    b.set_sink(Arc::new(move |_| {
        n2.fetch_add(1, Ordering::Relaxed);
    }));
    for _ in 0..10 {
        b.emit("a", "x", json!(null));
    }
    assert_eq!(n.load(Ordering::Relaxed), 3);
}

#[test]
fn strings_are_capped_and_escaped_into_one_line() {
    let b = bus(0.0, 0.0);
    let evil = format!("a\nb\r\u{1b}[31mred\u{1b}[0m{}", "x".repeat(1 << 20));
    let e = b.emit("a", "exec.started", json!({ "argv": [evil.clone(), "ok"], "cwd": "/tmp\n" })).unwrap();
    let argv0 = e.data["argv"][0].as_str().unwrap();
    assert!(argv0.len() < 4096 + 64, "{}", argv0.len());
    assert!(argv0.ends_with(&format!("…[truncated, {} bytes]", evil.len())), "{}", &argv0[argv0.len() - 40..]);
    assert_eq!(e.data["argv"][1], "ok");
    let line = serde_json::to_string(&*e).unwrap();
    assert!(!line.contains('\n') && !line.contains('\r') && !line.contains('\u{1b}'));
    assert!(line.contains("\\u001b[31mred"));
}

#[test]
fn data_is_capped_as_a_whole() {
    let b = bus(0.0, 0.0);
    let argv: Vec<String> = (0..100_000).map(|i| format!("arg{i}")).collect();
    let e = b.emit("a", "exec.started", json!({ "argv": argv })).unwrap();
    let ser = serde_json::to_string(&e.data).unwrap();
    assert!(ser.len() < 20 << 10, "{}", ser.len());
    let last = e.data["argv"].as_array().unwrap().last().unwrap().as_str().unwrap().to_string();
    assert!(last.starts_with("…[") && last.ends_with(" more]"), "{last}");
    // Multi-byte characters are cut on a boundary.
    assert_eq!(cap_string("ééé", 3), "é…[truncated, 6 bytes]");
    // Deep nesting is cut.
    let mut deep = json!(1);
    for _ in 0..100 {
        deep = json!([deep]);
    }
    let capped = cap_data(&deep, 4096, 16 << 10);
    assert!(serde_json::to_string(&capped).unwrap().contains("nested too deep"));
}

#[test]
fn retired_sandboxes_are_forgotten_oldest_first() {
    let b = EventBus::new(BusConfig { retired: 2, ..BusConfig::default() });
    for s in ["a", "b", "c"] {
        b.emit(s, "sandbox.killed", json!({}));
        b.retire(s);
    }
    assert!(b.subscribe_sandbox("a", 0).replay.is_empty());
    assert_eq!(b.subscribe_sandbox("c", 0).replay.len(), 1);
    assert!(b.subscribe_sandbox("c", 0).replay[0].is_terminal());
}

#[test]
fn kinds_are_plain_names() {
    let b = bus(0.0, 0.0);
    assert_eq!(b.emit("a", "exec\nevent: x", json!(null)).unwrap().kind, "exec_event__x");
    assert_eq!(b.emit("a", "", json!(null)).unwrap().kind, "_");
}

#[test]
fn the_daemons_own_events_pass_a_flood_and_report_it() {
    let b = bus(1.0, 2.0);
    for _ in 0..10 {
        b.emit("a", "net.denied", json!(null));
    }
    let e = b.emit_unlimited("a", "sandbox.killed", json!(null)).expect("never dropped");
    assert_eq!((e.seq, e.dropped), (3, 8));
}

#[test]
fn the_audit_sink_gets_a_sandbox_s_limited_events_up_to_its_budget_only() {
    let b = EventBus::new(BusConfig { rate: 0.0, audit_budget: 10_000, ..BusConfig::default() });
    let sunk = Arc::new(Mutex::new(Vec::<String>::new()));
    let s2 = sunk.clone();
    b.set_sink(Arc::new(move |e: &Event| s2.lock().unwrap().push(format!("{}:{}", e.sandbox, e.kind))));
    for _ in 0..1000 {
        b.emit("a", "fs.created", json!({ "path": "/tmp/some/file/name" }));
    }
    b.emit("b", "fs.created", json!({}));
    b.emit_unlimited("a", "sandbox.killed", json!({}));
    let sunk = sunk.lock().unwrap();
    let of_a = sunk.iter().filter(|k| k.as_str() == "a:fs.created").count();
    assert!(of_a > 10 && of_a < 100, "about budget / weight of them: {of_a}");
    assert_eq!(sunk.iter().filter(|k| k.as_str() == "a:audit.budget_exceeded").count(), 1, "said once");
    assert!(sunk.contains(&"b:fs.created".to_string()), "per sandbox: b has its own budget");
    assert!(sunk.contains(&"a:sandbox.killed".to_string()), "the daemon's own events are always audited");
    assert_eq!(b.unaudited("a") as usize, 1000 - of_a);
    assert_eq!(b.subscribe_sandbox("a", 0).replay.last().unwrap().kind, "sandbox.killed", "still streamed");
}

#[test]
fn the_tenant_gate_drops_rate_limited_events_of_its_sandboxes_only() {
    let b = bus(0.0, 0.0);
    let left = Arc::new(AtomicUsize::new(3));
    let l = left.clone();
    // t1 gets three events through; t2 is never refused.
    b.set_tenant_gate(Arc::new(move |tenant| {
        tenant != "t1" || l.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1)).is_ok()
    }));
    b.register("a", "t1");
    b.register("b", "t1");
    b.register("c", "t2");
    let through = (0..4).filter(|_| b.emit("a", "exec", json!({})).is_some()).count()
        + (0..4).filter(|_| b.emit("b", "exec", json!({})).is_some()).count();
    assert_eq!(through, 3, "the tenant's sandboxes share its budget");
    assert_eq!(b.dropped("a") + b.dropped("b"), 5);
    assert_eq!((0..10).filter(|_| b.emit("c", "exec", json!({})).is_some()).count(), 10);
    // What the daemon itself says is never refused, and reports the drops.
    let note = b.emit_unlimited("b", "sandbox.killed", json!({})).unwrap();
    assert_eq!(note.dropped, 4);
    assert_eq!(left.load(Ordering::Relaxed), 0);
}

//! The observer against a temporary directory opened as a sandbox root (`RESOLVE_IN_ROOT`
//! treats it as `/`, as it treats `/proc/<agent>/root`), with a real inotify instance.

use std::fs;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

use super::*;
use crate::events::{BusConfig, Event};

struct Tree {
    base: PathBuf,
}

impl Tree {
    fn new() -> Tree {
        static N: AtomicU64 = AtomicU64::new(0);
        let base = std::env::temp_dir().join(format!(
            "safehouse-fswatch-{}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed),
            safehouse_sys::monotonic_ns()
        ));
        fs::create_dir_all(base.join("root/workspace/old")).unwrap();
        fs::create_dir_all(base.join("root/tmp")).unwrap();
        fs::create_dir_all(base.join("root/etc")).unwrap();
        fs::create_dir_all(base.join("host")).unwrap();
        Tree { base }
    }

    fn inside(&self, rel: &str) -> PathBuf {
        self.base.join("root").join(rel.trim_start_matches('/'))
    }

    fn root(&self) -> OwnedFd {
        File::open(self.base.join("root")).unwrap().into()
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.base);
    }
}

fn unlimited_bus() -> EventBus {
    EventBus::new(BusConfig { rate: 0.0, ring_events: 100_000, ring_bytes: 64 << 20, ..BusConfig::default() })
}

/// The sandbox's events once `done` accepts them (or what there is after 5 s).
fn wait_events(bus: &EventBus, sandbox: &str, done: impl Fn(&[Arc<Event>]) -> bool) -> Vec<Arc<Event>> {
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let got = bus.subscribe_sandbox(sandbox, 0).replay;
        if done(&got) || Instant::now() > until {
            return got;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn has(events: &[Arc<Event>], kind: &str, data: serde_json::Value) -> bool {
    events.iter().any(|e| e.kind == kind && data.as_object().unwrap().iter().all(|(k, v)| e.data.get(k) == Some(v)))
}

fn zones() -> Vec<String> {
    vec!["/workspace".into(), "/tmp".into(), "/missing".into()]
}

#[test]
fn create_write_append_rename_delete_are_reported_with_sandbox_paths() {
    let t = Tree::new();
    let bus = unlimited_bus();
    let w = FsWatch::start(bus.clone()).unwrap();
    w.add("sb_a", t.root(), &zones());
    assert_eq!(w.stats("sb_a").unwrap().dirs, 3, "workspace, workspace/old, tmp");

    fs::write(t.inside("/workspace/a.txt"), b"one").unwrap();
    // Read before the append: the kernel merges an event identical to the last unread one.
    wait_events(&bus, "sb_a", |e| has(e, "fs.modified", json!({ "path": "/workspace/a.txt" })));
    {
        use std::io::Write;
        let mut f = fs::OpenOptions::new().append(true).open(t.inside("/workspace/a.txt")).unwrap();
        for _ in 0..100 {
            f.write_all(b"more").unwrap();
        }
    }
    fs::rename(t.inside("/workspace/a.txt"), t.inside("/tmp/b.txt")).unwrap();
    fs::remove_file(t.inside("/tmp/b.txt")).unwrap();
    fs::write(t.inside("/etc/unwatched"), b"x").unwrap();

    let ev = wait_events(&bus, "sb_a", |e| has(e, "fs.deleted", json!({ "path": "/tmp/b.txt" })));
    let kinds: Vec<(&str, String)> = ev
        .iter()
        .map(|e| (e.kind.as_str(), e.data.get("path").or(e.data.get("to")).unwrap().as_str().unwrap().to_string()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("fs.created", "/workspace/a.txt".to_string()),
            ("fs.modified", "/workspace/a.txt".into()),
            ("fs.modified", "/workspace/a.txt".into()), // one for 100 appends: at the close
            ("fs.moved", "/tmp/b.txt".into()),
            ("fs.deleted", "/tmp/b.txt".into()),
        ],
        "{ev:?}"
    );
    assert_eq!(ev[3].data["from"], "/workspace/a.txt");
    assert!(!ev.iter().any(|e| e.data.to_string().contains("etc")), "outside the zones: not watched");
}

#[test]
fn new_directories_are_watched_and_what_they_hold_is_announced() {
    let t = Tree::new();
    let bus = unlimited_bus();
    let w = FsWatch::start(bus.clone()).unwrap();
    w.add("sb_b", t.root(), &zones());
    fs::create_dir_all(t.inside("/workspace/x/y/z")).unwrap();
    fs::write(t.inside("/workspace/x/y/z/deep.txt"), b"d").unwrap();
    // Written before its directory's watch existed (or after): created either way.
    let ev = wait_events(&bus, "sb_b", |e| has(e, "fs.created", json!({ "path": "/workspace/x/y/z/deep.txt" })));
    assert!(has(&ev, "fs.created", json!({ "path": "/workspace/x", "dir": true })), "{ev:?}");
    assert!(has(&ev, "fs.created", json!({ "path": "/workspace/x/y/z", "dir": true })), "{ev:?}");
    assert!(has(&ev, "fs.created", json!({ "path": "/workspace/x/y/z/deep.txt", "dir": false })), "{ev:?}");

    // A directory renamed keeps being watched under its new name; the old name is forgotten.
    fs::rename(t.inside("/workspace/x"), t.inside("/workspace/renamed")).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    fs::write(t.inside("/workspace/renamed/y/after.txt"), b"a").unwrap();
    let ev = wait_events(&bus, "sb_b", |e| has(e, "fs.modified", json!({ "path": "/workspace/renamed/y/after.txt" })));
    assert!(has(&ev, "fs.moved", json!({ "from": "/workspace/x", "to": "/workspace/renamed", "dir": true })), "{ev:?}");
    assert!(has(&ev, "fs.created", json!({ "path": "/workspace/renamed/y/after.txt" })), "{ev:?}");
    assert!(!ev.iter().any(|e| e.data.to_string().contains("/workspace/x/y/after")), "{ev:?}");
}

#[test]
fn the_watch_cap_is_said_once_and_nothing_more_is_watched() {
    let t = Tree::new();
    let bus = unlimited_bus();
    let w = FsWatch::with_limit(bus.clone(), 5).unwrap();
    w.add("sb_c", t.root(), &zones());
    for i in 0..10 {
        fs::create_dir(t.inside(&format!("/workspace/d{i}"))).unwrap();
    }
    let ev = wait_events(&bus, "sb_c", |e| {
        e.iter().filter(|e| e.kind == "fs.created").count() >= 10 && has(e, "fs.watch_limit", json!({}))
    });
    assert_eq!(ev.iter().filter(|e| e.kind == "fs.watch_limit").count(), 1, "{ev:?}");
    let limit = ev.iter().find(|e| e.kind == "fs.watch_limit").unwrap();
    assert!(limit.data["limit"].as_str().unwrap().contains("5 directories"), "{limit:?}");
    let s = w.stats("sb_c").unwrap();
    assert_eq!((s.dirs, s.limit_hit), (5, true));
}

#[test]
fn a_flood_is_rate_limited_at_the_source_and_counted() {
    let t = Tree::new();
    let bus = EventBus::new(BusConfig { rate: 100.0, burst: 200.0, ..BusConfig::default() });
    let w = FsWatch::start(bus.clone()).unwrap();
    w.add("sb_d", t.root(), &zones());
    let start = Instant::now();
    for i in 0..5000 {
        fs::write(t.inside(&format!("/tmp/f{i}")), b"").unwrap();
    }
    // 10 000 raw events (create + close each); about the burst gets through.
    let until = Instant::now() + Duration::from_secs(5);
    let seen = || bus.subscribe_sandbox("sb_d", 0).replay.len() as u64 + bus.dropped("sb_d");
    while seen() < 10_000 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
    let got = bus.subscribe_sandbox("sb_d", 0).replay.len() as u64;
    let dropped = bus.dropped("sb_d");
    let allowed = 200 + (100.0 * start.elapsed().as_secs_f64()) as u64 + 10;
    assert!(got <= allowed, "at most burst + rate × time got through: {got} > {allowed}");
    assert!(dropped >= 5_000, "most were dropped and counted: {dropped}");
    assert!(got + dropped >= 9_000, "every raw event was either emitted or counted: {got} + {dropped}");
}

#[test]
fn a_removed_sandbox_is_no_longer_watched() {
    let t = Tree::new();
    let bus = unlimited_bus();
    let w = FsWatch::start(bus.clone()).unwrap();
    w.add("sb_e", t.root(), &zones());
    w.remove("sb_e");
    assert!(w.stats("sb_e").is_none());
    fs::write(t.inside("/workspace/late.txt"), b"x").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(bus.subscribe_sandbox("sb_e", 0).replay.is_empty());
}

#[test]
fn a_symlinked_zone_is_not_followed_to_the_host() {
    let t = Tree::new();
    let bus = unlimited_bus();
    let w = FsWatch::start(bus.clone()).unwrap();
    std::os::unix::fs::symlink(t.base.join("host"), t.inside("/linked")).unwrap();
    w.add("sb_f", t.root(), &["/linked".to_string()]);
    assert_eq!(w.stats("sb_f").unwrap().dirs, 0);
    fs::write(t.base.join("host/secret"), b"x").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert!(bus.subscribe_sandbox("sb_f", 0).replay.is_empty());
}

#[test]
fn zones_come_from_the_plan() {
    use safehouse_policy::plan::MountOp;
    let ops = vec![
        MountOp::WritableDir { path: "/workspace".into() },
        MountOp::WritableDir { path: "/tmp".into() },
        MountOp::Dev { path: "/dev".into(), devices: vec![], shm_size: 1, shm_inodes: 1 },
        MountOp::Bind { host: "/srv/x".into(), path: "/data".into(), writable: true, dir: true },
        MountOp::Bind { host: "/srv/y".into(), path: "/ro".into(), writable: false, dir: true },
        MountOp::Bind { host: "/srv/f".into(), path: "/file".into(), writable: true, dir: false },
    ];
    assert_eq!(super::super::lifecycle::writable_zones(&ops), ["/workspace", "/tmp", "/dev/shm", "/data"]);
}

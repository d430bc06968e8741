//! Change notifications.

use std::fs;
use std::io::Write;
use std::time::{Duration, Instant};

use super::super::*;
use super::Tree;

/// Collects events until every one of `want` was seen or 5 s passed.
fn collect_until(w: &mut Watcher, want: &[(FsEventType, &str)]) -> Vec<FsEvent> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        seen.extend(w.next_events(Duration::from_millis(100)).unwrap());
        if want.iter().all(|(k, p)| seen.iter().any(|e| e.kind == *k && e.path == *p)) {
            return seen;
        }
    }
    panic!("missing some of {want:?} in {seen:?}");
}

#[test]
fn watch_reports_create_modify_rename_delete() {
    let t = Tree::new();
    let mut w = watch(&t.root(), "/workspace", false).unwrap();
    let (mut f, new_file) = create_write(&t.root(), "/workspace/a.txt", false).unwrap();
    f.write_all(b"data").unwrap();
    drop(f);
    new_file.keep();
    rename(&t.root(), "a.txt", "b.txt").unwrap();
    remove(&t.root(), "b.txt", false).unwrap();
    collect_until(
        &mut w,
        &[
            (FsEventType::Create, "/workspace/a.txt"),
            (FsEventType::Modify, "/workspace/a.txt"),
            (FsEventType::Rename, "/workspace/a.txt"),
            (FsEventType::Rename, "/workspace/b.txt"),
            (FsEventType::Delete, "/workspace/b.txt"),
        ],
    );
    assert_eq!(w.watch_count(), 1);
}

#[test]
fn recursive_watch_follows_new_subdirectories() {
    let t = Tree::new();
    fs::create_dir_all(t.inside("workspace/old/deeper")).unwrap();
    std::os::unix::fs::symlink(t.host(), t.inside("workspace/host-link")).unwrap();
    let mut w = watch(&t.root(), "/workspace", true).unwrap();
    assert_eq!(w.watch_count(), 3, "the symlinked host directory must not be watched");
    fs::write(t.inside("workspace/old/deeper/f"), b"x").unwrap();
    fs::create_dir(t.inside("workspace/new")).unwrap();
    collect_until(&mut w, &[(FsEventType::Create, "/workspace/new")]);
    fs::write(t.inside("workspace/new/g"), b"y").unwrap();
    let seen = collect_until(&mut w, &[(FsEventType::Create, "/workspace/new/g")]);
    assert!(seen.iter().all(|e| e.path.starts_with("/workspace/")), "{seen:?}");
    // The host directory behind the link is not watched.
    fs::write(t.host().join("noise"), b"z").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let later = w.next_events(Duration::from_millis(100)).unwrap();
    assert!(later.iter().all(|e| !e.path.contains("noise")), "{later:?}");
    assert!(matches!(watch(&t.root(), "/workspace/host-link", false), Err(FileError::NotFound { .. })));
}

#[test]
fn deleting_the_watched_directory_ends_the_watch() {
    let t = Tree::new();
    fs::create_dir(t.inside("workspace/gone")).unwrap();
    let mut w = watch(&t.root(), "gone", true).unwrap();
    remove(&t.root(), "gone", true).unwrap();
    collect_until(&mut w, &[(FsEventType::Delete, "/workspace/gone")]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !w.is_closed() && Instant::now() < deadline {
        w.next_events(Duration::from_millis(50)).unwrap();
    }
    assert!(w.is_closed());
}

#[test]
fn fs_events_serialize_as_the_api_says() {
    let e = FsEvent { kind: FsEventType::Rename, path: "/workspace/x".into() };
    assert_eq!(serde_json::to_value(&e).unwrap(), serde_json::json!({"type": "rename", "path": "/workspace/x"}));
}

//! FS-11: the sandbox swaps a directory and a symlink to a host directory with
//! `renameat2(RENAME_EXCHANGE)` in a tight loop while the daemon works under that path.

use std::fs;
use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::fs::symlink;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use safehouse_sys::files as sys;

use super::super::*;
use super::{read_all, Tree, HOST_SECRET};

const ROUNDS: usize = 2000;

#[test]
fn exchange_race_never_touches_the_host() {
    let t = Tree::new();
    let root = t.root();
    fs::write(t.host().join("victim"), b"host victim").unwrap();
    let work = t.inside("work");
    fs::create_dir_all(work.join("d/sub")).unwrap();
    fs::write(work.join("d/f"), b"inside").unwrap();
    symlink(t.host(), work.join("s")).unwrap();
    // Outside the sandbox the symlink reaches the host directory.
    assert_eq!(fs::read(work.join("s/secret")).unwrap(), HOST_SECRET);
    let before = t.host_snapshot();

    let stop = Arc::new(AtomicBool::new(false));
    let swaps = Arc::new(AtomicU64::new(0));
    let swapper = {
        let (stop, swaps) = (stop.clone(), swaps.clone());
        let dir = fs::File::open(&work).unwrap();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                sys::renameat2(dir.as_fd(), c"d", dir.as_fd(), c"s", sys::RENAME_EXCHANGE).unwrap();
                swaps.fetch_add(1, Ordering::Relaxed);
            }
        })
    };

    let (mut reads, mut writes) = (0, 0);
    for i in 0..ROUNDS {
        match open_read(&root, "/work/d/f") {
            Ok((f, _)) => {
                assert_eq!(read_all(f), b"inside");
                reads += 1;
            }
            Err(e) => assert!(matches!(e, FileError::NotFound { .. } | FileError::NotADirectory { .. }), "{e}"),
        }
        for host_name in ["/work/d/secret", "/work/s/secret", "/work/d/victim"] {
            if let Ok((f, _)) = open_read(&root, host_name) {
                panic!("read host content through {host_name}: {:?}", read_all(f));
            }
        }
        if let Ok((mut f, new_file)) = create_write(&root, &format!("/work/d/up{}", i % 8), false) {
            f.write_all(b"uploaded").unwrap();
            new_file.keep();
            writes += 1;
        }
        let _ = create_write(&root, "/work/s/planted", true);
        let _ = create_write(&root, "/work/d/sub/deep", true);
        let _ = remove(&root, "/work/d/victim", false);
        let _ = remove(&root, "/work/s/victim", false);
        let _ = remove(&root, "/work/d/sub", true);
        let _ = mkdir(&root, "/work/d/sub/x", true);
        let _ = mkdir(&root, "/work/d/newdir", true);
        let _ = rename(&root, &format!("/work/d/up{}", i % 8), &format!("/work/d/moved{}", i % 8));
        let _ = rename(&root, "/work/s/secret", "/work/d/stolen");
        if let Ok(entries) = list(&root, "/work/d", 3) {
            for e in entries {
                assert!(!e.name.contains("secret") && !e.name.contains("victim"), "listed host entry {}", e.path);
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    swapper.join().unwrap();

    assert_eq!(t.host_snapshot(), before, "the host directory changed");
    eprintln!("{} swaps; {reads} reads and {writes} uploads succeeded", swaps.load(Ordering::Relaxed));
    assert!(swaps.load(Ordering::Relaxed) > ROUNDS as u64, "the swapper barely ran");
    assert!(reads > 0 && writes > 0, "the race never let an operation through: {reads} reads, {writes} writes");
}

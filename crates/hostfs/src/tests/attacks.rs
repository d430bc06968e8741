//! FS-10 and FS-17: planted symlinks, FIFOs and sockets. Each attack is also run once
//! with plain host paths, where it must work, so a refusal here means something.

use std::fs;
use std::io::Write;
use std::os::unix::fs::symlink;
use std::sync::mpsc;
use std::time::Duration;

use super::super::*;
use super::{open_root, read_all, Tree, HOST_SECRET};

#[test]
fn symlinks_to_etc_passwd_resolve_inside_the_root() {
    let t = Tree::new();
    let root = t.root();
    symlink("/etc/passwd", t.inside("workspace/abs")).unwrap();
    symlink("../../../../../../../../etc/passwd", t.inside("workspace/rel")).unwrap();
    // Outside the sandbox the links do reach the host's file.
    let host = fs::read(t.inside("workspace/abs")).unwrap();
    assert_eq!(fs::read(t.inside("workspace/rel")).unwrap(), host);
    for link in ["abs", "rel"] {
        let err = open_read(&root, link).unwrap_err();
        assert!(matches!(err, FileError::NotFound { .. }), "{link}: {err}");
    }
    fs::create_dir(t.inside("etc")).unwrap();
    fs::write(t.inside("etc/passwd"), b"sandbox:x:1000:1000::/:/bin/sh\n").unwrap();
    for link in ["abs", "rel", "../../../etc/passwd", "/../../etc/passwd"] {
        let (f, _) = open_read(&root, link).unwrap();
        assert_eq!(read_all(f), b"sandbox:x:1000:1000::/:/bin/sh\n", "{link}");
    }
}

#[test]
fn absolute_symlinks_to_host_paths_do_not_leave_the_root() {
    let t = Tree::new();
    let root = t.root();
    symlink(t.host().join("secret"), t.inside("workspace/file-link")).unwrap();
    symlink(t.host(), t.inside("workspace/dir-link")).unwrap();
    assert_eq!(fs::read(t.inside("workspace/dir-link/secret")).unwrap(), HOST_SECRET);
    for path in ["file-link", "dir-link/secret"] {
        assert!(matches!(open_read(&root, path), Err(FileError::NotFound { .. })), "{path}");
    }
    assert!(matches!(list(&root, "dir-link", 1), Err(FileError::NotFound { .. })));
    assert!(matches!(create_write(&root, "dir-link/planted", true), Err(FileError::NotFound { .. })));
    assert!(matches!(mkdir(&root, "dir-link/planted", false), Err(FileError::NotFound { .. })));
    assert!(matches!(remove(&root, "dir-link/secret", false), Err(FileError::NotFound { .. })));
    assert_eq!(t.host_snapshot(), [("secret".to_string(), HOST_SECRET.to_vec())]);
}

#[test]
fn a_symlink_at_the_upload_target_is_refused_not_followed() {
    let t = Tree::new();
    let root = t.root();
    symlink(t.host().join("secret"), t.inside("workspace/out")).unwrap();
    symlink(t.host().join("created"), t.inside("workspace/dangling")).unwrap();
    symlink("/workspace/real", t.inside("workspace/inside")).unwrap();
    for path in ["out", "dangling", "inside"] {
        let err = create_write(&root, path, false).unwrap_err();
        assert!(matches!(err, FileError::NotRegular { kind: "symbolic link", .. }), "{path}: {err}");
    }
    assert!(!t.inside("workspace/real").exists());
    assert_eq!(t.host_snapshot(), [("secret".to_string(), HOST_SECRET.to_vec())]);
    // Outside the sandbox, writing through the link reaches the host.
    fs::OpenOptions::new().create(true).append(true).open(t.inside("workspace/dangling")).unwrap();
    assert!(t.host().join("created").exists());
}

#[test]
fn dotdot_in_requests_clamps_at_the_root() {
    let t = Tree::new();
    let root = t.root();
    let escape = format!("../../../..{}", t.host().join("secret").display());
    assert!(matches!(open_read(&root, &escape), Err(FileError::NotFound { .. })));
    let (mut f, new_file) = create_write(&root, "../../../../../x", false).unwrap();
    f.write_all(b"x").unwrap();
    new_file.keep();
    assert_eq!(fs::read(t.inside("x")).unwrap(), b"x");
    assert_eq!(stat(&root, "../../..").unwrap().path, "/");
}

/// Runs `f` on another thread and fails the test if it has not returned within 5 s.
fn within_5s<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(5)).expect("the operation blocked")
}

#[test]
fn fifos_sockets_and_devices_are_refused_without_blocking() {
    let t = Tree::new();
    let ws = fs::File::open(t.inside("workspace")).unwrap();
    safehouse_sys::files::mkfifoat(std::os::fd::AsFd::as_fd(&ws), c"pipe", 0o666).unwrap();
    let _listener = std::os::unix::net::UnixListener::bind(t.inside("workspace/sock")).unwrap();
    symlink("/workspace/pipe", t.inside("workspace/to-pipe")).unwrap();
    for (path, kind) in [("pipe", "FIFO"), ("sock", "socket"), ("to-pipe", "FIFO")] {
        let root = t.root();
        let err = within_5s(move || open_read(&root, path).map(|_| ())).unwrap_err();
        assert!(matches!(err, FileError::NotRegular { kind: k, .. } if k == kind), "{path}: {err}");
        let root = t.root();
        let err = within_5s(move || create_write(&root, path, false).map(|_| ())).unwrap_err();
        assert!(matches!(err, FileError::NotRegular { .. }), "{path}: {err}");
    }
    let listed: Vec<_> = list(&t.root(), "/workspace", 1).unwrap().into_iter().map(|i| (i.name, i.kind)).collect();
    assert!(listed.contains(&("pipe".into(), FileType::Other)));
    // The host's own /dev/null, through a root of "/": a device, refused before opening.
    let host_root = open_root(std::path::Path::new("/"), 0, 0);
    let err = within_5s(move || open_read(&host_root, "/dev/null").map(|_| ())).unwrap_err();
    assert!(matches!(err, FileError::NotRegular { kind: "character device", .. }), "{err}");
}

#[test]
fn magic_links_and_kernel_filesystems_are_refused() {
    // A root of "/" has a real procfs under it, as a sandbox does.
    let root = open_root(std::path::Path::new("/"), 0, 0);
    for path in ["/proc/self/root/etc/hostname", "/proc/self/cwd", "/proc/thread-self/root/etc"] {
        let err = open_read(&root, path).unwrap_err();
        assert!(matches!(err, FileError::InvalidPath { .. }), "{path}: {err}");
    }
    let err = open_read(&root, "/proc/self/status").unwrap_err();
    assert!(matches!(err, FileError::PermissionDenied { .. }), "{err}");
    assert!(err.to_string().contains("proc"), "{err}");
    // Harmless targets, in case the check ever regresses.
    assert!(matches!(create_write(&root, "/proc/self/comm", false), Err(FileError::PermissionDenied { .. })));
    assert!(matches!(mkdir(&root, "/proc/self/x", false), Err(FileError::PermissionDenied { .. })));
    // Metadata stays available.
    assert_eq!(stat(&root, "/proc/self/status").unwrap().kind, FileType::File);
    // Outside the module, the magic link works.
    assert!(fs::read("/proc/self/root/proc/self/status").is_ok());
}

#[test]
fn recursive_remove_never_follows_links_out() {
    let t = Tree::new();
    let root = t.root();
    fs::create_dir_all(t.inside("workspace/tree/sub")).unwrap();
    fs::write(t.inside("workspace/tree/sub/f"), b"").unwrap();
    symlink(t.host(), t.inside("workspace/tree/abs")).unwrap();
    symlink("../../../../../../../../../..", t.inside("workspace/tree/sub/up")).unwrap();
    symlink(t.host(), t.inside("workspace/top-link")).unwrap();
    // Outside, the links lead to the host directory.
    assert_eq!(fs::read_dir(t.inside("workspace/tree/abs")).unwrap().count(), 1);
    remove(&root, "tree", true).unwrap();
    remove(&root, "top-link", true).unwrap();
    assert_eq!(fs::read_dir(t.inside("workspace")).unwrap().count(), 0);
    assert_eq!(t.host_snapshot(), [("secret".to_string(), HOST_SECRET.to_vec())]);
}

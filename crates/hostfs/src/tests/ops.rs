//! The operations doing what they say on ordinary trees.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use super::super::*;
use super::{is_root, read_all, Tree};

fn upload(root: &SandboxRoot, path: &str, data: &[u8]) {
    let (mut f, new_file) = create_write(root, path, true).unwrap();
    f.write_all(data).unwrap();
    new_file.keep();
}

#[test]
fn a_failed_upload_leaves_no_file_it_created() {
    let t = Tree::new();
    let root = t.root();
    // Created, then the upload failed (the guard dropped without keep): gone.
    let (mut f, new_file) = create_write(&root, "/workspace/new.bin", true).unwrap();
    f.write_all(b"partial").unwrap();
    drop((f, new_file));
    assert!(!t.inside("workspace/new.bin").exists());
    // An existing file is not removed (it was truncated in place).
    upload(&root, "/workspace/old.txt", b"old");
    let (_f, new_file) = create_write(&root, "/workspace/old.txt", false).unwrap();
    drop(new_file);
    assert!(t.inside("workspace/old.txt").exists());
    // A file the sandbox put at the name meanwhile stays: only ours is removed.
    let (_f, new_file) = create_write(&root, "/workspace/swapped", false).unwrap();
    fs::remove_file(t.inside("workspace/swapped")).unwrap();
    fs::write(t.inside("workspace/swapped"), b"theirs").unwrap();
    drop(new_file);
    assert_eq!(fs::read(t.inside("workspace/swapped")).unwrap(), b"theirs");
}

#[test]
fn upload_then_download_round_trips() {
    let t = Tree::new();
    let root = t.root();
    upload(&root, "/workspace/a/b/hello.txt", b"hello");
    let (f, info) = open_read(&root, "a/b/hello.txt").unwrap();
    assert_eq!(read_all(f), b"hello");
    assert_eq!(
        (info.path.as_str(), info.name.as_str(), info.kind, info.size),
        ("/workspace/a/b/hello.txt", "hello.txt", FileType::File, 5)
    );
    assert_eq!(fs::read(t.inside("workspace/a/b/hello.txt")).unwrap(), b"hello");
    assert_eq!(fs::metadata(t.inside("workspace/a/b/hello.txt")).unwrap().mode() & 0o777, 0o644);
}

#[test]
fn upload_without_parents_needs_the_directory() {
    let t = Tree::new();
    let err = create_write(&t.root(), "/workspace/missing/x", false).unwrap_err();
    assert!(matches!(err, FileError::NotFound { .. }), "{err}");
    assert_eq!(err.status(), 404);
}

#[test]
fn upload_truncates_and_keeps_mode_but_drops_setuid() {
    let t = Tree::new();
    let root = t.root();
    let p = t.inside("workspace/tool");
    fs::write(&p, b"a much longer original content").unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o4755)).unwrap();
    upload(&root, "tool", b"new");
    assert_eq!(fs::read(&p).unwrap(), b"new");
    assert_eq!(fs::metadata(&p).unwrap().mode() & 0o7777, 0o755);
}

#[test]
fn upload_over_a_hard_link_replaces_instead_of_writing_through() {
    let t = Tree::new();
    let root = t.root();
    fs::write(t.inside("workspace/original"), b"keep me").unwrap();
    fs::hard_link(t.inside("workspace/original"), t.inside("workspace/alias")).unwrap();
    upload(&root, "alias", b"replaced");
    assert_eq!(fs::read(t.inside("workspace/original")).unwrap(), b"keep me");
    assert_eq!(fs::read(t.inside("workspace/alias")).unwrap(), b"replaced");
}

#[test]
fn upload_onto_a_directory_is_refused() {
    let t = Tree::new();
    let err = create_write(&t.root(), "/workspace", false).unwrap_err();
    assert!(matches!(err, FileError::IsADirectory { .. }), "{err}");
    let err = open_read(&t.root(), "/workspace").unwrap_err();
    assert!(matches!(err, FileError::IsADirectory { .. }), "{err}");
}

#[test]
fn uploads_and_new_directories_belong_to_the_sandbox_user() {
    if !is_root() {
        safehouse_jail::testkit::skip_privileged(
            "uploads_and_new_directories_belong_to_the_sandbox_user",
            "chown to another user needs root",
        );
        return;
    }
    let t = Tree::new();
    let root = t.root_as(4242, 4343);
    upload(&root, "/workspace/new/dir/file", b"x");
    mkdir(&root, "/workspace/made", false).unwrap();
    for p in ["workspace/new", "workspace/new/dir", "workspace/new/dir/file", "workspace/made"] {
        let m = fs::metadata(t.inside(p)).unwrap();
        assert_eq!((m.uid(), m.gid()), (4242, 4343), "{p}");
    }
    assert_eq!(fs::metadata(t.inside("workspace/made")).unwrap().mode() & 0o7777, 0o755);
    // The existing parent keeps its owner.
    assert_eq!(fs::metadata(t.inside("workspace")).unwrap().uid(), 4242);
}

#[test]
fn stat_describes_files_dirs_and_links_without_following() {
    let t = Tree::new();
    let root = t.root();
    fs::write(t.inside("workspace/f"), b"12345").unwrap();
    fs::set_permissions(t.inside("workspace/f"), fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", t.inside("workspace/l")).unwrap();
    let f = stat(&root, "f").unwrap();
    assert_eq!((f.kind, f.size, f.mode), (FileType::File, 5, 0o640));
    assert!(f.mtime.ends_with('Z') && f.mtime.len() >= 20, "{}", f.mtime);
    let l = stat(&root, "/workspace/l").unwrap();
    assert_eq!((l.kind, l.symlink_target.as_deref()), (FileType::Symlink, Some("/etc/passwd")));
    let r = stat(&root, "/").unwrap();
    assert_eq!((r.path.as_str(), r.name.as_str(), r.kind), ("/", "/", FileType::Dir));
    assert!(matches!(stat(&root, "nope"), Err(FileError::NotFound { .. })));
}

#[test]
fn list_is_sorted_bounded_by_depth_and_does_not_descend_links() {
    let t = Tree::new();
    let root = t.root();
    for p in ["workspace/b/inner/deep", "workspace/a"] {
        fs::create_dir_all(t.inside(p)).unwrap();
    }
    fs::write(t.inside("workspace/b/inner/file"), b"").unwrap();
    fs::write(t.inside("workspace/c.txt"), b"abc").unwrap();
    std::os::unix::fs::symlink("/workspace/b", t.inside("workspace/link")).unwrap();
    let names =
        |depth| -> Vec<String> { list(&root, "/workspace", depth).unwrap().into_iter().map(|i| i.path).collect() };
    assert_eq!(names(1), ["/workspace/a", "/workspace/b", "/workspace/c.txt", "/workspace/link"]);
    assert_eq!(
        names(16),
        [
            "/workspace/a",
            "/workspace/b",
            "/workspace/b/inner",
            "/workspace/b/inner/deep",
            "/workspace/b/inner/file",
            "/workspace/c.txt",
            "/workspace/link",
        ]
    );
    let link = list(&root, "/workspace", 1).unwrap().pop().unwrap();
    assert_eq!((link.kind, link.symlink_target.as_deref()), (FileType::Symlink, Some("/workspace/b")));
    // Listing through the link lists its target, inside the root.
    let via: Vec<_> = list(&root, "/workspace/link", 1).unwrap().into_iter().map(|i| i.name).collect();
    assert_eq!(via, ["inner"]);
    for bad in [0, 17] {
        assert!(matches!(list(&root, "/workspace", bad), Err(FileError::InvalidArgument(_))));
    }
    assert!(matches!(list(&root, "/workspace/c.txt", 1), Err(FileError::NotADirectory { .. })));
}

#[test]
fn list_refuses_more_entries_than_the_limit() {
    let t = Tree::new();
    let dir = t.inside("workspace/huge");
    fs::create_dir(&dir).unwrap();
    fs::create_dir(dir.join("sub")).unwrap();
    for i in 0..50 {
        fs::File::create(dir.join(format!("{i}"))).unwrap();
        fs::File::create(dir.join(format!("sub/{i}"))).unwrap();
    }
    assert_eq!(super::super::list::list_bounded(&t.root(), "huge", 2, 101).unwrap().len(), 101);
    let err = super::super::list::list_bounded(&t.root(), "huge", 2, 100).unwrap_err();
    assert!(matches!(err, FileError::TooMany { limit: 100, .. }), "{err}");
    assert_eq!(err.status(), 400);
}

#[test]
fn mkdir_with_and_without_parents() {
    let t = Tree::new();
    let root = t.root();
    let info = mkdir(&root, "d", false).unwrap();
    assert_eq!((info.path.as_str(), info.kind), ("/workspace/d", FileType::Dir));
    assert!(matches!(mkdir(&root, "d", false), Err(FileError::Exists { .. })));
    assert!(matches!(mkdir(&root, "x/y", false), Err(FileError::NotFound { .. })));
    assert_eq!(mkdir(&root, "x/y/z", true).unwrap().path, "/workspace/x/y/z");
    mkdir(&root, "x/y/z", true).unwrap();
    assert!(t.inside("workspace/x/y/z").is_dir());
    fs::write(t.inside("workspace/file"), b"").unwrap();
    assert!(matches!(mkdir(&root, "file/sub", true), Err(FileError::NotADirectory { .. })));
    assert!(matches!(mkdir(&root, "/", false), Err(FileError::InvalidPath { .. })));
}

#[test]
fn rename_moves_entries_and_refuses_to_clobber() {
    let t = Tree::new();
    let root = t.root();
    fs::write(t.inside("workspace/a"), b"A").unwrap();
    fs::write(t.inside("workspace/b"), b"B").unwrap();
    fs::create_dir(t.inside("workspace/dir")).unwrap();
    let info = rename(&root, "a", "/workspace/dir/a2").unwrap();
    assert_eq!((info.path.as_str(), info.size), ("/workspace/dir/a2", 1));
    assert_eq!(fs::read(t.inside("workspace/dir/a2")).unwrap(), b"A");
    assert!(matches!(rename(&root, "b", "dir/a2"), Err(FileError::Exists { .. })));
    assert!(matches!(rename(&root, "dir", "dir/inside"), Err(FileError::InvalidArgument(_))));
    assert!(matches!(rename(&root, "nope", "x"), Err(FileError::NotFound { .. })));
    // A symlink is moved as a link, its target untouched.
    std::os::unix::fs::symlink(t.host().join("secret"), t.inside("workspace/l")).unwrap();
    assert_eq!(rename(&root, "l", "l2").unwrap().kind, FileType::Symlink);
    assert_eq!(fs::read(t.host().join("secret")).unwrap(), super::HOST_SECRET);
}

#[test]
fn remove_files_dirs_and_trees() {
    let t = Tree::new();
    let root = t.root();
    fs::create_dir_all(t.inside("workspace/tree/a/b/c")).unwrap();
    fs::write(t.inside("workspace/tree/a/f"), b"").unwrap();
    fs::write(t.inside("workspace/tree/a/b/c/g"), b"").unwrap();
    fs::write(t.inside("workspace/file"), b"").unwrap();
    fs::create_dir(t.inside("workspace/empty")).unwrap();
    remove(&root, "file", false).unwrap();
    remove(&root, "empty", false).unwrap();
    let err = remove(&root, "tree", false).unwrap_err();
    assert!(matches!(err, FileError::NotEmpty { .. }), "{err}");
    assert_eq!(err.status(), 409);
    remove(&root, "tree", true).unwrap();
    assert_eq!(fs::read_dir(t.inside("workspace")).unwrap().count(), 0);
    assert!(matches!(remove(&root, "tree", true), Err(FileError::NotFound { .. })));
    assert!(matches!(remove(&root, "/", true), Err(FileError::InvalidPath { .. })));
    assert!(matches!(remove(&root, "/..", true), Err(FileError::InvalidPath { .. })));
}

#[test]
fn errors_map_to_the_documented_statuses() {
    let q = FileError::from_io("/x", std::io::Error::from_raw_os_error(libc::ENOSPC));
    assert_eq!((q.status(), q.code()), (413, "quota_exceeded"));
    assert_eq!(FileError::from_io("/x", std::io::Error::from_raw_os_error(libc::EDQUOT)).status(), 413);
    assert_eq!(FileError::from_io("/x", std::io::Error::from_raw_os_error(libc::EFBIG)).status(), 413);
    assert_eq!(FileError::from_io("/x", std::io::Error::from_raw_os_error(libc::EACCES)).status(), 403);
    assert_eq!(FileError::from_io("/x", std::io::Error::from_raw_os_error(libc::EIO)).status(), 500);
}

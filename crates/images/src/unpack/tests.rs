//! The unpacker against well-formed and hostile layers, built here byte by byte (the
//! `tar` crate's builder refuses `..`, so hostile names are written into raw headers).

use std::fs;
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::*;

/// A scratch directory holding `layer/` (the destination) and `outside/` (a sentinel
/// nothing may touch).
struct Scratch {
    root: PathBuf,
}

impl Scratch {
    fn new(name: &str) -> Scratch {
        let root = std::env::temp_dir().join(format!("safehouse-unpack-{name}-{}", std::process::id()));
        let _ = tree::remove_tree(&root);
        fs::create_dir_all(root.join("layer")).unwrap();
        fs::create_dir_all(root.join("outside")).unwrap();
        fs::write(root.join("outside/keep"), b"host").unwrap();
        Scratch { root }
    }
    fn layer(&self) -> PathBuf {
        self.root.join("layer")
    }
    fn unpack(&self, tar: Vec<u8>) -> Result<Report, String> {
        self.unpack_with(tar, Limits::default())
    }
    fn unpack_with(&self, tar: Vec<u8>, limits: Limits) -> Result<Report, String> {
        let dir = fs::File::open(self.layer()).unwrap();
        let r = unpack(&tar[..], dir.as_fd(), IdShift::Caller, limits);
        self.assert_outside_untouched();
        r
    }
    fn assert_outside_untouched(&self) {
        let names: Vec<_> = fs::read_dir(self.root.join("outside")).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("keep")], "something was written outside the layer");
        assert_eq!(fs::read(self.root.join("outside/keep")).unwrap(), b"host");
        let top: Vec<_> = fs::read_dir(&self.root).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(top.len(), 2, "something was written next to the layer: {top:?}");
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = tree::remove_tree(&self.root);
    }
}

/// Builds archives with raw header names.
struct Tar {
    b: tar::Builder<Vec<u8>>,
}

impl Tar {
    fn new() -> Tar {
        Tar { b: tar::Builder::new(Vec::new()) }
    }
    fn header(kind: tar::EntryType, name: &[u8], mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_600_000_000);
        let field = &mut h.as_old_mut().name;
        field.fill(0);
        field[..name.len()].copy_from_slice(name);
        h.set_cksum();
        h
    }
    fn file(mut self, name: &str, mode: u32, data: &[u8]) -> Tar {
        let h = Tar::header(tar::EntryType::Regular, name.as_bytes(), mode, data.len() as u64);
        self.b.append(&h, data).unwrap();
        self
    }
    fn dir(mut self, name: &str, mode: u32) -> Tar {
        let h = Tar::header(tar::EntryType::Directory, name.as_bytes(), mode, 0);
        self.b.append(&h, &[][..]).unwrap();
        self
    }
    fn link(mut self, kind: tar::EntryType, name: &str, target: &str) -> Tar {
        let mut h = Tar::header(kind, name.as_bytes(), 0o777, 0);
        let field = &mut h.as_old_mut().linkname;
        field.fill(0);
        field[..target.len()].copy_from_slice(target.as_bytes());
        h.set_cksum();
        self.b.append(&h, &[][..]).unwrap();
        self
    }
    fn device(mut self, name: &str) -> Tar {
        let mut h = Tar::header(tar::EntryType::Char, name.as_bytes(), 0o666, 0);
        h.set_device_major(1).unwrap();
        h.set_device_minor(1).unwrap();
        h.set_cksum();
        self.b.append(&h, &[][..]).unwrap();
        self
    }
    fn pax(mut self, records: &[(&str, &[u8])]) -> Tar {
        let mut body = Vec::new();
        for (k, v) in records {
            let mut rec = Vec::new();
            rec.extend_from_slice(format!(" {k}=").as_bytes());
            rec.extend_from_slice(v);
            rec.push(b'\n');
            let mut len = rec.len() + 1;
            while format!("{len}").len() + rec.len() != len {
                len = format!("{len}").len() + rec.len();
            }
            body.extend_from_slice(format!("{len}").as_bytes());
            body.extend_from_slice(&rec);
        }
        let h = Tar::header(tar::EntryType::XHeader, b"PaxHeaders/x", 0o644, body.len() as u64);
        self.b.append(&h, &body[..]).unwrap();
        self
    }
    fn done(self) -> Vec<u8> {
        self.b.into_inner().unwrap()
    }
}

fn mode_of(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn ordinary_layer_keeps_files_modes_links_and_times() {
    let s = Scratch::new("ordinary");
    let tar = Tar::new()
        .dir("usr/", 0o755)
        .dir("usr/bin/", 0o555)
        .file("usr/bin/tool", 0o755, b"#!/bin/sh\necho hi\n")
        .link(tar::EntryType::Symlink, "usr/bin/alias", "tool")
        .link(tar::EntryType::Link, "usr/bin/hard", "usr/bin/tool")
        .file("etc/conf", 0o640, b"x=1\n")
        .done();
    let r = s.unpack(tar).unwrap();
    let l = s.layer();
    assert_eq!(fs::read(l.join("usr/bin/tool")).unwrap(), b"#!/bin/sh\necho hi\n");
    assert_eq!(fs::read_link(l.join("usr/bin/alias")).unwrap(), Path::new("tool"));
    assert_eq!(
        fs::metadata(l.join("usr/bin/hard")).unwrap().ino(),
        fs::metadata(l.join("usr/bin/tool")).unwrap().ino()
    );
    assert_eq!(mode_of(&l.join("usr/bin")), 0o555);
    assert_eq!(mode_of(&l.join("usr/bin/tool")), 0o755);
    assert_eq!(mode_of(&l.join("etc/conf")), 0o640);
    assert_eq!(mode_of(&l.join("etc")), 0o755, "implicit parents are 0755");
    assert_eq!(fs::metadata(l.join("usr/bin/tool")).unwrap().mtime(), 1_600_000_000);
    assert_eq!(fs::metadata(l.join("usr/bin")).unwrap().mtime(), 1_600_000_000, "directory times are set last");
    assert_eq!((r.files, r.dirs, r.symlinks, r.hardlinks), (2, 2, 1, 1));
    assert_eq!(r.neutralised(), None);
}

#[test]
fn dotdot_refuses_the_layer_and_writes_nothing_outside() {
    for name in ["../outside/pwned", "a/../../outside/pwned", "./../outside/pwned"] {
        let s = Scratch::new("dotdot");
        let e = s.unpack(Tar::new().file(name, 0o644, b"x").done()).unwrap_err();
        assert!(e.contains("climbs out of the layer"), "{name}: {e}");
    }
}

#[test]
fn absolute_names_land_inside() {
    let s = Scratch::new("absolute");
    let r = s.unpack(Tar::new().file("/outside/pwned", 0o644, b"x").done()).unwrap();
    assert_eq!(fs::read(s.layer().join("outside/pwned")).unwrap(), b"x");
    assert_eq!(r.absolute_paths, 1);
    assert!(r.neutralised().unwrap().contains("absolute paths"));
}

#[test]
fn entries_through_symlinks_pointing_out_stay_inside() {
    let s = Scratch::new("symlink-out");
    let out = s.root.join("outside");
    let out_in_layer = out.to_str().unwrap().trim_start_matches('/').to_string() + "/";
    let tar = Tar::new()
        .dir(&out_in_layer, 0o755)
        .link(tar::EntryType::Symlink, "abs", out.to_str().unwrap())
        .link(tar::EntryType::Symlink, "rel", "../../../../../../..")
        .file("abs/pwned", 0o644, b"x")
        .file("rel/tmp/pwned2", 0o644, b"y")
        .done();
    s.unpack(tar).unwrap();
    // Resolved with the layer as `/`: both land beneath the layer.
    let inside = s.layer().join(out.strip_prefix("/").unwrap()).join("pwned");
    assert_eq!(fs::read(inside).unwrap(), b"x");
    assert_eq!(fs::read(s.layer().join("tmp/pwned2")).unwrap(), b"y");
    // The symlinks themselves are kept: they are resolved in the sandbox's root later.
    assert_eq!(fs::read_link(s.layer().join("abs")).unwrap(), out);

    // A symlink whose in-layer target does not exist cannot be used as a directory.
    let s = Scratch::new("symlink-dangling");
    let tar = Tar::new()
        .link(tar::EntryType::Symlink, "abs", s.root.join("outside").to_str().unwrap())
        .file("abs/pwned", 0o644, b"x")
        .done();
    let e = s.unpack(tar).unwrap_err();
    assert!(e.contains("needed as a directory"), "{e}");
}

#[test]
fn a_file_entry_never_follows_a_symlink_at_its_own_name() {
    let s = Scratch::new("symlink-final");
    let target = s.root.join("outside/keep");
    let tar = Tar::new().link(tar::EntryType::Symlink, "f", target.to_str().unwrap()).file("f", 0o644, b"over").done();
    s.unpack(tar).unwrap();
    assert_eq!(fs::read(s.layer().join("f")).unwrap(), b"over");
    assert!(!fs::symlink_metadata(s.layer().join("f")).unwrap().file_type().is_symlink());
}

#[test]
fn hard_links_cannot_reach_outside() {
    let out = |s: &Scratch| s.root.join("outside/keep").to_str().unwrap().to_string();
    let s = Scratch::new("hardlink-abs");
    let e = s.unpack(Tar::new().link(tar::EntryType::Link, "h", &out(&s)).done()).unwrap_err();
    assert!(e.contains("not in this layer"), "{e}");

    let s = Scratch::new("hardlink-dotdot");
    let e = s.unpack(Tar::new().link(tar::EntryType::Link, "h", "../outside/keep").done()).unwrap_err();
    assert!(e.contains("climbs out"), "{e}");

    let s = Scratch::new("hardlink-via-symlink");
    let dir = s.root.join("outside");
    let tar = Tar::new()
        .link(tar::EntryType::Symlink, "s", dir.to_str().unwrap())
        .link(tar::EntryType::Link, "h", "s/keep")
        .done();
    let e = s.unpack(tar).unwrap_err();
    assert!(e.contains("not in this layer"), "{e}");
    assert_eq!(fs::metadata(s.root.join("outside/keep")).unwrap().nlink(), 1);
}

#[test]
fn devices_skipped_setuid_cleared() {
    let s = Scratch::new("devices");
    let tar = Tar::new()
        .device("dev/mem")
        .file("usr/bin/su", 0o4755, b"elf")
        .file("usr/bin/wall", 0o2755, b"elf")
        .dir("shared", 0o2775)
        .done();
    let r = s.unpack(tar).unwrap();
    assert!(!s.layer().join("dev/mem").exists());
    assert_eq!(mode_of(&s.layer().join("usr/bin/su")), 0o755);
    assert_eq!(mode_of(&s.layer().join("usr/bin/wall")), 0o755);
    assert_eq!(mode_of(&s.layer().join("shared")), 0o2775, "setgid on a directory stays (group inheritance)");
    assert_eq!((r.devices_skipped, r.setid_cleared), (1, 2));
    let n = r.neutralised().unwrap();
    assert!(n.contains("1 device nodes skipped") && n.contains("2 setuid/setgid bits cleared"), "{n}");
}

#[test]
fn whiteouts_and_opaque_dirs_become_overlay_markers() {
    let s = Scratch::new("whiteouts");
    let tar = Tar::new()
        .file("etc/.wh.motd", 0o644, b"")
        .dir("var/cache/", 0o755)
        .file("var/cache/.wh..wh..opq", 0o644, b"")
        .file("var/.wh..wh.plnk", 0o644, b"")
        .done();
    let r = s.unpack(tar).unwrap();
    let wh = fs::symlink_metadata(s.layer().join("etc/motd")).unwrap();
    assert!(wh.file_type().is_char_device());
    assert_eq!(wh.rdev(), 0);
    let dir = fs::File::open(s.layer().join("var/cache")).unwrap();
    let mut buf = [0u8; 8];
    let n = rfs::fgetxattr(&dir, "user.overlay.opaque", &mut buf[..]).unwrap();
    assert_eq!(&buf[..n], b"y");
    assert!(!s.layer().join("var/.wh..wh.plnk").exists());
    assert_eq!((r.whiteouts, r.opaque_dirs), (1, 1));
}

#[test]
fn later_entries_replace_earlier_ones() {
    let s = Scratch::new("replace");
    let tar = Tar::new()
        .file("a/b/c", 0o644, b"1")
        .file("a", 0o644, b"now a file")
        .link(tar::EntryType::Symlink, "x", "a")
        .dir("x", 0o755)
        .file("x/y", 0o644, b"2")
        .done();
    s.unpack(tar).unwrap();
    assert_eq!(fs::read(s.layer().join("a")).unwrap(), b"now a file");
    assert!(fs::symlink_metadata(s.layer().join("x")).unwrap().is_dir());
    assert_eq!(fs::read(s.layer().join("x/y")).unwrap(), b"2");
}

#[test]
fn xattrs_only_plain_user_ones_stay() {
    let s = Scratch::new("xattrs");
    let tar = Tar::new()
        .pax(&[
            ("SCHILY.xattr.security.capability", b"\x01\x00\x00\x02"),
            ("SCHILY.xattr.user.overlay.redirect", b"/etc"),
            ("SCHILY.xattr.trusted.overlay.opaque", b"y"),
            ("SCHILY.xattr.user.note", b"kept"),
        ])
        .file("bin/ping", 0o755, b"elf")
        .done();
    let r = s.unpack(tar).unwrap();
    assert_eq!(r.xattrs_dropped, 3);
    let f = fs::File::open(s.layer().join("bin/ping")).unwrap();
    let mut buf = [0u8; 16];
    match rfs::fgetxattr(&f, "user.note", &mut buf[..]) {
        Ok(n) => assert_eq!(&buf[..n], b"kept"),
        Err(Errno::OPNOTSUPP) => {} // a temp dir without user xattrs
        Err(e) => panic!("{e}"),
    }
    assert_eq!(rfs::fgetxattr(&f, "user.overlay.redirect", &mut buf[..]), Err(Errno::NODATA));
}

#[test]
fn bombs_are_capped() {
    let limits = Limits { max_bytes: 1000, max_entries: 10, max_metadata: 4096 };
    let s = Scratch::new("bomb-bytes");
    let e = s.unpack_with(Tar::new().file("big", 0o644, &[0u8; 1001]).done(), limits).unwrap_err();
    assert!(e.contains("more than 1000 bytes"), "{e}");

    let s = Scratch::new("bomb-entries");
    let mut t = Tar::new();
    for i in 0..11 {
        t = t.file(&format!("f{i}"), 0o644, b"");
    }
    let e = s.unpack_with(t.done(), limits).unwrap_err();
    assert!(e.contains("more than 10 entries"), "{e}");

    let s = Scratch::new("bomb-longname");
    let mut b = tar::Builder::new(Vec::new());
    let long = vec![b'a'; 8192];
    let h = Tar::header(tar::EntryType::GNULongName, b"././@LongLink", 0o644, long.len() as u64);
    b.append(&h, &long[..]).unwrap();
    b.append(&Tar::header(tar::EntryType::Regular, b"x", 0o644, 0), &[][..]).unwrap();
    let e = s.unpack_with(b.into_inner().unwrap(), limits).unwrap_err();
    assert!(e.contains("metadata record"), "{e}");
}

#[test]
fn garbage_is_refused_cleanly() {
    let s = Scratch::new("garbage");
    let e = s.unpack(vec![0x42; 4096]).unwrap_err();
    assert!(e.contains("malformed archive") || e.contains("not a tar"), "{e}");
}

#[test]
fn root_shifts_owners_into_the_sandbox_range() {
    if rustix::process::geteuid().as_raw() != 0 {
        eprintln!("skipped: needs root to chown");
        return;
    }
    let s = Scratch::new("shift");
    let mut t = Tar::new().file("root-owned", 0o644, b"");
    let mut h = Tar::header(tar::EntryType::Regular, b"user-owned", 0o644, 0);
    h.set_uid(1000);
    h.set_gid(100);
    h.set_cksum();
    t.b.append(&h, &[][..]).unwrap();
    let mut h = Tar::header(tar::EntryType::Regular, b"far", 0o644, 0);
    h.set_uid(70000);
    h.set_cksum();
    t.b.append(&h, &[][..]).unwrap();
    let dir = fs::File::open(s.layer()).unwrap();
    let base = 999_999_000;
    let r = unpack(&t.done()[..], dir.as_fd(), IdShift::Base(base), Limits::default()).unwrap();
    let owner = |n: &str| {
        let m = fs::metadata(s.layer().join(n)).unwrap();
        (m.uid(), m.gid())
    };
    assert_eq!(owner("root-owned"), (base, base));
    assert_eq!(owner("user-owned"), (base + 1000, base + 100));
    assert_eq!(owner("far"), (base + OVERFLOW_ID, base));
    assert_eq!(owner(""), (base, base), "the layer root belongs to the image's root");
    assert_eq!(r.ids_clamped, 1);
}

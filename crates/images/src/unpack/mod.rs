//! Unpacks one layer archive into an empty directory, safely.
//!
//! What a layer can do, and what it gets:
//! - paths: `..` refuses the layer; a leading `/` is dropped; every parent directory is
//!   resolved with the layer directory as `/` (a symlink can point anywhere and still
//!   leads nowhere outside); final components are never followed;
//! - hard links: the target is looked up the same way and must already be in this layer;
//! - whiteouts (`.wh.NAME`) become overlayfs whiteouts (a 0/0 character device), opaque
//!   markers (`.wh..wh..opq`) the `user.overlay.opaque` xattr (overlayfs in a user
//!   namespace reads `user.overlay.*`);
//! - device nodes are skipped; setuid and setgid bits of files are cleared; xattrs other
//!   than plain `user.*` ones (file capabilities, `trusted.*`, `user.overlay.*`, which
//!   would steer overlayfs) are dropped; owners are shifted into the sandboxes' id range
//!   (ids past it become 65534);
//! - bombs: entries, bytes and metadata records are capped, and the decompressed stream
//!   itself stops at the cap.
//!
//! Each neutralised item is counted in the [`Report`] so the caller can say what happened.

mod path;
pub(crate) mod tree;

use std::cell::Cell;
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::rc::Rc;

use rustix::fs::{self as rfs, AtFlags, Dev, FileType, Mode, OFlags, Timespec, Timestamps, XattrFlags};
use rustix::io::Errno;
use serde::{Deserialize, Serialize};

pub use path::{components, MAX_NAME, MAX_PATH};
pub use tree::remove_tree;

/// How many ids the sandboxes' user namespace maps for an image root (0..65535 inside).
pub const ID_RANGE: u32 = 65536;
/// The id that files owned by an id past the range get (nobody/nogroup).
pub const OVERFLOW_ID: u32 = 65534;

/// How file owners of the image are written to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum IdShift {
    /// Root: an image id `n` is host id `base + n` (the sandboxes map the same range).
    Base(u32),
    /// Without privileges: every file belongs to the unpacking user (a rootless sandbox
    /// maps that one user).
    Caller,
}

impl IdShift {
    fn host(self, id: u32, report: &mut Report) -> Option<u32> {
        match self {
            IdShift::Caller => None,
            IdShift::Base(base) => {
                let id = if id >= ID_RANGE {
                    report.ids_clamped += 1;
                    OVERFLOW_ID
                } else {
                    id
                };
                Some(base + id)
            }
        }
    }
}

/// Caps against archives built to exhaust the host.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// File content, summed over every entry.
    pub max_bytes: u64,
    pub max_entries: u64,
    /// A metadata record (long name, pax header) larger than this refuses the layer.
    pub max_metadata: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_bytes: 32 << 30, max_entries: 2_000_000, max_metadata: 1 << 20 }
    }
}

/// What the unpacker did, and what it neutralised.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub entries: u64,
    pub bytes: u64,
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub hardlinks: u64,
    pub whiteouts: u64,
    pub opaque_dirs: u64,
    pub devices_skipped: u64,
    pub setid_cleared: u64,
    pub xattrs_dropped: u64,
    pub ids_clamped: u64,
    pub absolute_paths: u64,
    pub other_skipped: u64,
}

impl Report {
    /// One line naming each kind of neutralised item, or None if nothing was.
    pub fn neutralised(&self) -> Option<String> {
        let mut parts = Vec::new();
        for (n, what) in [
            (self.devices_skipped, "device nodes skipped"),
            (self.setid_cleared, "setuid/setgid bits cleared"),
            (self.xattrs_dropped, "xattrs dropped (file capabilities, trusted.*, user.overlay.*)"),
            (self.ids_clamped, "owners past id 65535 set to 65534"),
            (self.absolute_paths, "absolute paths taken relative to the layer"),
            (self.other_skipped, "entries of unsupported types skipped"),
        ] {
            if n > 0 {
                parts.push(format!("{n} {what}"));
            }
        }
        (!parts.is_empty()).then(|| parts.join(", "))
    }
}

/// Unpacks the (uncompressed) tar stream `input` into the empty directory `dest`.
/// Returns a reason on refusal; `dest` then holds a partial tree the caller removes.
pub fn unpack<R: Read>(input: R, dest: BorrowedFd<'_>, shift: IdShift, limits: Limits) -> Result<Report, String> {
    let budget = Rc::new(Cell::new(None));
    let guarded = MetadataGuard { inner: input, budget: budget.clone(), limit: limits.max_metadata };
    let mut archive = tar::Archive::new(guarded);
    let mut u = Unpacker {
        root: dest,
        shift,
        limits,
        report: Report::default(),
        dirs: HashMap::new(),
        cache: None,
        buf: vec![0; 256 << 10],
    };
    let mut entries = archive.entries().map_err(|e| format!("not a tar archive: {e}"))?;
    loop {
        budget.set(Some(0));
        let next = entries.next();
        budget.set(None);
        let Some(entry) = next else { break };
        let mut entry = entry.map_err(|e| format!("malformed archive: {e}"))?;
        u.report.entries += 1;
        if u.report.entries > limits.max_entries {
            return Err(format!("more than {} entries (an archive bomb?)", limits.max_entries));
        }
        u.entry(&mut entry)?;
        // Whatever an entry's data held that was not used (a device's, a link's) is read
        // here, so the next header read consumes only metadata.
        let rest = io::copy(&mut entry, &mut io::sink()).map_err(|e| format!("malformed archive: {e}"))?;
        u.count_bytes(rest)?;
    }
    u.finish_dirs()?;
    Ok(u.report)
}

/// Bounds what the tar reader consumes between two entries (long names and pax records
/// are read into memory whole): past the budget, reads fail.
struct MetadataGuard<R> {
    inner: R,
    budget: Rc<Cell<Option<u64>>>,
    limit: u64,
}

impl<R: Read> Read for MetadataGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(used) = self.budget.get() {
            let used = used + n as u64;
            if used > self.limit {
                return Err(io::Error::other(format!(
                    "a metadata record (long name or pax header) is larger than {} bytes",
                    self.limit
                )));
            }
            self.budget.set(Some(used));
        }
        Ok(n)
    }
}

/// Owner, mode and time of a directory, applied once its content is complete.
#[derive(Clone, Copy)]
struct DirMeta {
    uid: u32,
    gid: u32,
    mode: u32,
    mtime: i64,
}

struct Unpacker<'a> {
    root: BorrowedFd<'a>,
    shift: IdShift,
    limits: Limits,
    report: Report,
    /// Directories to finish (path -> metadata); the root is the empty path.
    dirs: HashMap<Vec<u8>, DirMeta>,
    /// The last parent directory opened, kept while entries land in the same one.
    cache: Option<(Vec<u8>, OwnedFd)>,
    /// The copy buffer, reused for every file.
    buf: Vec<u8>,
}

fn errno(what: &str, name: &[u8], e: Errno) -> String {
    format!("{what} {}: {}", path::show(name), io::Error::from(e))
}

struct Meta {
    uid: u32,
    gid: u32,
    mode: u32,
    mtime: i64,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Unpacker<'_> {
    fn count_bytes(&mut self, n: u64) -> Result<(), String> {
        self.report.bytes += n;
        if self.report.bytes > self.limits.max_bytes {
            return Err(format!("unpacks to more than {} bytes (an archive bomb?)", self.limits.max_bytes));
        }
        Ok(())
    }

    fn meta<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<Meta, String> {
        let h = entry.header();
        let mut m = Meta {
            uid: h.uid().ok().and_then(|u| u32::try_from(u).ok()).unwrap_or(OVERFLOW_ID),
            gid: h.gid().ok().and_then(|g| u32::try_from(g).ok()).unwrap_or(OVERFLOW_ID),
            mode: h.mode().unwrap_or(0o644) & 0o7777,
            mtime: h.mtime().ok().and_then(|t| i64::try_from(t).ok()).unwrap_or(0),
            xattrs: Vec::new(),
        };
        if let Some(exts) = entry.pax_extensions().map_err(|e| format!("malformed pax header: {e}"))? {
            for ext in exts {
                let ext = ext.map_err(|e| format!("malformed pax header: {e}"))?;
                let key = ext.key_bytes();
                let value = ext.value_bytes();
                let num = || std::str::from_utf8(value).ok().and_then(|s| s.split('.').next()?.parse::<i64>().ok());
                match key {
                    b"uid" => m.uid = num().and_then(|n| u32::try_from(n).ok()).unwrap_or(OVERFLOW_ID),
                    b"gid" => m.gid = num().and_then(|n| u32::try_from(n).ok()).unwrap_or(OVERFLOW_ID),
                    b"mtime" => m.mtime = num().unwrap_or(0),
                    _ => {
                        if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                            if name.starts_with(b"user.") && !name.starts_with(b"user.overlay.") && m.xattrs.len() < 64
                            {
                                m.xattrs.push((name.to_vec(), value.to_vec()));
                            } else {
                                self.report.xattrs_dropped += 1;
                            }
                        }
                    }
                }
            }
        }
        Ok(m)
    }

    /// The directory `comps` (created, with missing parents, if absent), resolved inside
    /// the layer.
    fn dir(&mut self, comps: &[&[u8]]) -> Result<OwnedFd, String> {
        let p = path::join(comps);
        if let Some((cached, fd)) = &self.cache {
            if *cached == p {
                return fd.try_clone().map_err(|e| format!("dup: {e}"));
            }
        }
        let fd = self.open_or_create(comps)?;
        self.cache = Some((p, fd.try_clone().map_err(|e| format!("dup: {e}"))?));
        Ok(fd)
    }

    fn open_or_create(&mut self, comps: &[&[u8]]) -> Result<OwnedFd, String> {
        let p = path::join(comps);
        match tree::open_dir_in(self.root, &p) {
            Ok(fd) => Ok(fd),
            Err(Errno::NOENT) if !comps.is_empty() => {
                let (last, parent_comps) = comps.split_last().expect("not empty");
                let parent = self.open_or_create(parent_comps)?;
                match rfs::mkdirat(&parent, *last, Mode::from_raw_mode(0o700)) {
                    Ok(()) => {}
                    Err(Errno::EXIST) => {
                        return Err(format!(
                            "{} is needed as a directory but is something else (a dangling symlink?)",
                            path::show(&p)
                        ))
                    }
                    Err(e) => return Err(errno("create directory", &p, e)),
                }
                self.dirs.entry(p.clone()).or_insert(DirMeta { uid: 0, gid: 0, mode: 0o755, mtime: 0 });
                tree::open_child_dir(parent.as_fd(), last).map_err(|e| errno("open directory", &p, e))
            }
            Err(Errno::NOTDIR) | Err(Errno::LOOP) => {
                Err(format!("{} is used as a directory but is not one", path::show(&p)))
            }
            Err(e) => Err(errno("open directory", &p, e)),
        }
    }

    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), String> {
        let raw = entry.path_bytes().into_owned();
        if raw.first() == Some(&b'/') {
            self.report.absolute_paths += 1;
        }
        let comps = path::components(&raw)?;
        let kind = entry.header().entry_type();
        let meta = self.meta(entry)?;
        let Some((name, parent)) = comps.split_last() else {
            // The layer's root itself ("./").
            if kind.is_dir() {
                self.dirs
                    .insert(Vec::new(), DirMeta { uid: meta.uid, gid: meta.gid, mode: meta.mode, mtime: meta.mtime });
            }
            return Ok(());
        };
        let name: &[u8] = name;

        if let Some(target) = name.strip_prefix(b".wh.") {
            return self.whiteout(parent, target, &raw);
        }

        use tar::EntryType as T;
        match kind {
            T::Regular | T::Continuous | T::GNUSparse => {
                let size = entry.size();
                self.count_bytes(size)?;
                let dir = self.dir(parent)?;
                self.replace(dir.as_fd(), name, &raw)?;
                let fd = rfs::openat(
                    &dir,
                    name,
                    OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(|e| errno("create", &raw, e))?;
                let mut file = std::fs::File::from(fd);
                copy_data(entry, &mut file, &mut self.buf).map_err(|e| format!("write {}: {e}", path::show(&raw)))?;
                self.finish_node(file.as_fd(), &raw, &meta, true)?;
                self.report.files += 1;
            }
            T::Directory => {
                let dir = self.dir(parent)?;
                match tree::kind_at(dir.as_fd(), name).map_err(|e| errno("inspect", &raw, e))? {
                    Some(FileType::Directory) => {}
                    other => {
                        if other.is_some() {
                            self.replace(dir.as_fd(), name, &raw)?;
                        }
                        rfs::mkdirat(&dir, name, Mode::from_raw_mode(0o700))
                            .map_err(|e| errno("create directory", &raw, e))?;
                        self.report.dirs += 1;
                    }
                }
                if !meta.xattrs.is_empty() {
                    let sub = tree::open_child_dir(dir.as_fd(), name).map_err(|e| errno("open", &raw, e))?;
                    set_xattrs(sub.as_fd(), &meta.xattrs, &raw)?;
                }
                let key = path::join(&comps);
                self.dirs.insert(key, DirMeta { uid: meta.uid, gid: meta.gid, mode: meta.mode, mtime: meta.mtime });
            }
            T::Symlink => {
                let target = entry.link_name_bytes().map(|t| t.into_owned()).unwrap_or_default();
                if target.is_empty() || target.len() > MAX_PATH || target.contains(&0) {
                    return Err(format!("symlink {} has an empty, oversized or NUL-holding target", path::show(&raw)));
                }
                let dir = self.dir(parent)?;
                self.replace(dir.as_fd(), name, &raw)?;
                rfs::symlinkat(&target[..], &dir, name).map_err(|e| errno("create symlink", &raw, e))?;
                let uid = self.shift.host(meta.uid, &mut self.report);
                let gid = self.shift.host(meta.gid, &mut self.report);
                if uid.is_some() {
                    rfs::chownat(
                        &dir,
                        name,
                        uid.map(rfs::Uid::from_raw),
                        gid.map(rfs::Gid::from_raw),
                        AtFlags::SYMLINK_NOFOLLOW,
                    )
                    .map_err(|e| errno("chown", &raw, e))?;
                }
                let t = Timestamps { last_access: ts(meta.mtime), last_modification: ts(meta.mtime) };
                rfs::utimensat(&dir, name, &t, AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|e| errno("set times of", &raw, e))?;
                self.report.symlinks += 1;
            }
            T::Link => {
                let target_raw = entry.link_name_bytes().map(|t| t.into_owned()).unwrap_or_default();
                let tcomps = path::components(&target_raw)?;
                let Some((tname, tparent)) = tcomps.split_last() else {
                    return Err(format!("hard link {} has no target", path::show(&raw)));
                };
                let tdir = tree::open_dir_in(self.root, &path::join(tparent)).map_err(|_| {
                    format!(
                        "hard link {} points at {}, which is not in this layer",
                        path::show(&raw),
                        path::show(&target_raw)
                    )
                })?;
                match tree::kind_at(tdir.as_fd(), tname).map_err(|e| errno("inspect", &target_raw, e))? {
                    None => {
                        return Err(format!(
                            "hard link {} points at {}, which is not in this layer",
                            path::show(&raw),
                            path::show(&target_raw)
                        ))
                    }
                    Some(FileType::Directory) => {
                        return Err(format!("hard link {} points at a directory", path::show(&raw)))
                    }
                    Some(_) => {}
                }
                let dir = self.dir(parent)?;
                if tcomps != comps {
                    self.replace(dir.as_fd(), name, &raw)?;
                    rfs::linkat(&tdir, *tname, &dir, name, AtFlags::empty())
                        .map_err(|e| errno("create hard link", &raw, e))?;
                }
                self.report.hardlinks += 1;
            }
            T::Fifo => {
                let dir = self.dir(parent)?;
                self.replace(dir.as_fd(), name, &raw)?;
                rfs::mknodat(&dir, name, FileType::Fifo, Mode::from_raw_mode(meta.mode & 0o777), 0)
                    .map_err(|e| errno("create fifo", &raw, e))?;
                let fd = rfs::openat(&dir, name, OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())
                    .map_err(|e| errno("open", &raw, e))?;
                let uid = self.shift.host(meta.uid, &mut self.report);
                let gid = self.shift.host(meta.gid, &mut self.report);
                if uid.is_some() {
                    rfs::chownat(
                        &fd,
                        "",
                        uid.map(rfs::Uid::from_raw),
                        gid.map(rfs::Gid::from_raw),
                        AtFlags::EMPTY_PATH,
                    )
                    .map_err(|e| errno("chown", &raw, e))?;
                }
            }
            T::Char | T::Block => self.report.devices_skipped += 1,
            T::XGlobalHeader => {}
            _ => self.report.other_skipped += 1,
        }
        Ok(())
    }

    /// Makes room for a new entry at `name`: whatever an earlier entry put there goes
    /// (tar's last-entry-wins rule).
    fn replace(&mut self, dir: BorrowedFd<'_>, name: &[u8], raw: &[u8]) -> Result<(), String> {
        if tree::kind_at(dir, name).map_err(|e| errno("inspect", raw, e))?.is_some() {
            // A cached path may have led through what goes now: look it up again.
            self.cache = None;
            tree::remove_at(dir, name).map_err(|e| errno("replace", raw, e))?;
        }
        Ok(())
    }

    fn whiteout(&mut self, parent: &[&[u8]], target: &[u8], raw: &[u8]) -> Result<(), String> {
        let dir = self.dir(parent)?;
        if target == b".wh..opq" {
            rfs::fsetxattr(&dir, "user.overlay.opaque", b"y", XattrFlags::empty())
                .map_err(|e| errno("mark opaque", raw, e))?;
            self.report.opaque_dirs += 1;
            return Ok(());
        }
        if target.starts_with(b".wh.") {
            self.report.other_skipped += 1; // aufs bookkeeping (.wh..wh.plnk, ...)
            return Ok(());
        }
        if target.is_empty() || target == b"." || target == b".." {
            return Err(format!("whiteout {} names nothing", path::show(raw)));
        }
        self.replace(dir.as_fd(), target, raw)?;
        rfs::mknodat(&dir, target, FileType::CharacterDevice, Mode::empty(), 0 as Dev)
            .map_err(|e| errno("create whiteout", raw, e))?;
        self.report.whiteouts += 1;
        Ok(())
    }

    /// Owner, mode (setuid/setgid cleared), xattrs and mtime of a file just written.
    fn finish_node(&mut self, fd: BorrowedFd<'_>, raw: &[u8], meta: &Meta, file: bool) -> Result<(), String> {
        let uid = self.shift.host(meta.uid, &mut self.report);
        let gid = self.shift.host(meta.gid, &mut self.report);
        if uid.is_some() {
            rfs::fchown(fd, uid.map(rfs::Uid::from_raw), gid.map(rfs::Gid::from_raw))
                .map_err(|e| errno("chown", raw, e))?;
        }
        let mut mode = meta.mode;
        if file && mode & 0o6000 != 0 {
            self.report.setid_cleared += 1;
            mode &= !0o6000;
        }
        rfs::fchmod(fd, Mode::from_raw_mode(mode)).map_err(|e| errno("chmod", raw, e))?;
        set_xattrs(fd, &meta.xattrs, raw)?;
        let t = Timestamps { last_access: ts(meta.mtime), last_modification: ts(meta.mtime) };
        rfs::futimens(fd, &t).map_err(|e| errno("set times of", raw, e))?;
        Ok(())
    }

    /// Directories last, deepest first: their final mode may forbid writing into them,
    /// and writing into them changes their mtime.
    fn finish_dirs(&mut self) -> Result<(), String> {
        self.cache = None;
        self.dirs.entry(Vec::new()).or_insert(DirMeta { uid: 0, gid: 0, mode: 0o755, mtime: 0 });
        let mut dirs: Vec<(Vec<u8>, DirMeta)> = self.dirs.drain().collect();
        dirs.sort_by_key(|(p, _)| {
            std::cmp::Reverse(p.iter().filter(|b| **b == b'/').count() + usize::from(!p.is_empty()))
        });
        for (p, m) in dirs {
            let fd = if p.is_empty() {
                rfs::openat(self.root, ".", OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
            } else {
                // A directory replaced by a later entry (or now reached through a symlink)
                // is not finished: it is gone or not ours.
                let comps = path::components(&p)?;
                let (last, parent) = comps.split_last().expect("not empty");
                match tree::open_dir_beneath(self.root, &path::join(parent)) {
                    Ok(d) => tree::open_child_dir(d.as_fd(), last),
                    Err(e) => Err(e),
                }
            };
            let fd = match fd {
                Ok(fd) => fd,
                Err(Errno::NOENT) | Err(Errno::NOTDIR) | Err(Errno::LOOP) => continue,
                Err(e) => return Err(errno("open directory", &p, e)),
            };
            let uid = self.shift.host(m.uid, &mut self.report);
            let gid = self.shift.host(m.gid, &mut self.report);
            if uid.is_some() {
                rfs::fchown(&fd, uid.map(rfs::Uid::from_raw), gid.map(rfs::Gid::from_raw))
                    .map_err(|e| errno("chown", &p, e))?;
            }
            // setuid on a directory means nothing; setgid (group inheritance) and sticky stay.
            let mode = m.mode & !0o4000;
            rfs::fchmod(&fd, Mode::from_raw_mode(mode)).map_err(|e| errno("chmod", &p, e))?;
            let t = Timestamps { last_access: ts(m.mtime), last_modification: ts(m.mtime) };
            rfs::futimens(&fd, &t).map_err(|e| errno("set times of", &p, e))?;
        }
        Ok(())
    }
}

fn ts(secs: i64) -> Timespec {
    Timespec { tv_sec: secs, tv_nsec: 0 }
}

fn set_xattrs(fd: BorrowedFd<'_>, xattrs: &[(Vec<u8>, Vec<u8>)], raw: &[u8]) -> Result<(), String> {
    for (name, value) in xattrs {
        match rfs::fsetxattr(fd, &name[..], value, XattrFlags::empty()) {
            // A store on a filesystem without user xattrs loses them, like `tar` does.
            Ok(()) | Err(Errno::OPNOTSUPP) => {}
            Err(e) => return Err(errno("set xattr on", raw, e)),
        }
    }
    Ok(())
}

/// Copies an entry's data with a large buffer (the default 8 KiB one costs measurable
/// time on big layers).
fn copy_data<R: Read>(from: &mut R, to: &mut std::fs::File, buf: &mut [u8]) -> io::Result<()> {
    loop {
        let n = match from.read(buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        to.write_all(&buf[..n])?;
    }
}

#[cfg(test)]
mod tests;

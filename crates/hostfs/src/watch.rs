//! Change notifications with inotify. Watches are placed through `/proc/self/fd/N` of
//! directories opened inside the root, so they land on the sandbox's inodes whatever the
//! sandbox's paths point at; a watch follows the inode, not the name.

use std::collections::HashMap;
use std::fs::File;
use std::io::{ErrorKind, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::time::Duration;

use safehouse_sys::files as sys;
use serde::Serialize;

use super::error::{errno, FileError, Result};
use super::path::{join_display, SandboxPath};
use super::resolve::{open_in_root, read_names};
use super::{SandboxRoot, MAX_WATCHES};

/// Deepest subdirectory a recursive watch reaches below its root.
const MAX_WATCH_DEPTH: usize = 32;
/// Most events one call returns; the rest stay queued in the kernel.
const MAX_EVENTS_PER_CALL: usize = 4096;
/// Most names read while adding the watches of one tree (all levels together).
const MAX_SCAN_NAMES: usize = 100_000;

const MASK: u32 = libc::IN_CREATE
    | libc::IN_MODIFY
    | libc::IN_CLOSE_WRITE
    | libc::IN_DELETE
    | libc::IN_MOVED_FROM
    | libc::IN_MOVED_TO
    | libc::IN_DELETE_SELF
    | libc::IN_MOVE_SELF
    | libc::IN_ONLYDIR
    | libc::IN_EXCL_UNLINK;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FsEventType {
    Create,
    Modify,
    Delete,
    Rename,
}

/// One change; the SSE layer adds `ts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FsEvent {
    #[serde(rename = "type")]
    pub kind: FsEventType,
    /// Absolute inside the sandbox; the old or the new name for renames (one event each).
    pub path: String,
}

/// An inotify instance watching a directory (and, if recursive, its subdirectories, up
/// to [`MAX_WATCHES`]). Poll [`AsRawFd::as_raw_fd`] for readability (tokio's `AsyncFd`)
/// and call [`Watcher::read_events`], or block with [`Watcher::next_events`]. Kernel
/// queue overflows (`IN_Q_OVERFLOW`) drop events silently.
#[derive(Debug)]
pub struct Watcher {
    inotify: File,
    root: SandboxRoot,
    recursive: bool,
    /// Watch descriptor → the watched directory's path inside the sandbox.
    dirs: HashMap<i32, String>,
    top: String,
    buf: Vec<u8>,
}

/// Watches the directory `path` (a symlink there is followed inside the root).
pub fn watch(root: &SandboxRoot, path: &str, recursive: bool) -> Result<Watcher> {
    let _as = super::as_sandbox_user(root);
    let p = SandboxPath::parse(path)?;
    let top = p.display();
    let dir = open_in_root(root, &p, libc::O_RDONLY | libc::O_DIRECTORY)?;
    let inotify = sys::inotify_init().map_err(|e| FileError::from_io(&top, e))?;
    let mut w = Watcher {
        inotify: File::from(inotify),
        root: root.clone(),
        recursive,
        dirs: HashMap::new(),
        top: top.clone(),
        buf: vec![0; 64 * 1024],
    };
    let mut budget = MAX_SCAN_NAMES;
    w.add_tree(dir.as_fd(), &top, 0, true, &mut budget, None)?;
    Ok(w)
}

impl Watcher {
    /// Waits up to `timeout` for changes and returns them (empty on timeout).
    pub fn next_events(&mut self, timeout: Duration) -> Result<Vec<FsEvent>> {
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        let ready = safehouse_sys::process::poll_readable(&[self.inotify.as_raw_fd()], ms)
            .map_err(|e| FileError::from_io(&self.top, e))?;
        if !ready[0] {
            return Ok(Vec::new());
        }
        self.read_events()
    }

    /// The changes queued now, without blocking. An empty result means the queue was
    /// drained: with `AsyncFd`, call this until it returns nothing, then clear readiness.
    pub fn read_events(&mut self) -> Result<Vec<FsEvent>> {
        let mut events: Vec<FsEvent> = Vec::new();
        let mut created_dirs = Vec::new();
        while events.len() < MAX_EVENTS_PER_CALL {
            let n = match self.inotify.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(FileError::from_io(&self.top, e)),
            };
            let buf = std::mem::take(&mut self.buf);
            for ev in sys::inotify_events(&buf[..n]) {
                self.translate(ev, &mut events, &mut created_dirs);
            }
            self.buf = buf;
        }
        for (path, announce) in created_dirs {
            self.add_new_dir(&path, if announce { Some(&mut events) } else { None });
        }
        Ok(events)
    }

    /// How many directories are watched.
    pub fn watch_count(&self) -> usize {
        self.dirs.len()
    }

    /// True once nothing is watched any more (the directory was deleted or unmounted):
    /// no further events will come.
    pub fn is_closed(&self) -> bool {
        self.dirs.is_empty()
    }

    fn translate(&mut self, ev: sys::InotifyEvent<'_>, out: &mut Vec<FsEvent>, new_dirs: &mut Vec<(String, bool)>) {
        if ev.mask & libc::IN_IGNORED != 0 {
            self.dirs.remove(&ev.wd);
            return;
        }
        let Some(dir) = self.dirs.get(&ev.wd) else { return };
        let is_top = *dir == self.top;
        let path = if ev.name.is_empty() { dir.clone() } else { join_display(dir, ev.name) };
        let m = ev.mask;
        let is_dir = m & libc::IN_ISDIR != 0;
        let kind = if m & libc::IN_CREATE != 0 {
            FsEventType::Create
        } else if m & (libc::IN_MODIFY | libc::IN_CLOSE_WRITE) != 0 {
            FsEventType::Modify
        } else if m & libc::IN_DELETE != 0 || (m & libc::IN_DELETE_SELF != 0 && is_top) {
            FsEventType::Delete
        } else if m & (libc::IN_MOVED_FROM | libc::IN_MOVED_TO) != 0 || (m & libc::IN_MOVE_SELF != 0 && is_top) {
            FsEventType::Rename
        } else {
            // A subdirectory's own delete/move is reported by its parent's watch.
            return;
        };
        if self.recursive && is_dir {
            if m & (libc::IN_CREATE | libc::IN_MOVED_TO) != 0 {
                new_dirs.push((path.clone(), m & libc::IN_CREATE != 0));
            } else if m & libc::IN_MOVED_FROM != 0 {
                self.forget_subtree(&path);
            }
        }
        let event = FsEvent { kind, path };
        if out.last() != Some(&event) {
            out.push(event);
        }
    }

    /// Stops watching `path` and everything below it (it moved away; if it moved within
    /// the watched tree, IN_MOVED_TO adds it again under its new name).
    fn forget_subtree(&mut self, path: &str) {
        let prefix = format!("{path}/");
        let gone: Vec<i32> =
            self.dirs.iter().filter(|(_, d)| *d == path || d.starts_with(&prefix)).map(|(wd, _)| *wd).collect();
        for wd in gone {
            self.dirs.remove(&wd);
            let _ = sys::inotify_rm_watch(self.inotify.as_fd(), wd);
        }
    }

    /// Watches a directory that appeared, best effort: it may be gone or swapped already,
    /// or the watch budget spent. With `announce`, entries already inside are reported as
    /// created (they appeared before the watch could see them).
    fn add_new_dir(&mut self, path: &str, announce: Option<&mut Vec<FsEvent>>) {
        let Ok(p) = SandboxPath::parse(path) else { return };
        // O_NOFOLLOW: if the new directory was swapped for a symlink, it is not watched.
        if let Ok(dir) = open_in_root(&self.root, &p, libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW) {
            let depth = components(path).saturating_sub(components(&self.top));
            let mut budget = MAX_SCAN_NAMES;
            let _ = self.add_tree(dir.as_fd(), path, depth, false, &mut budget, announce);
        }
    }

    /// Watches `dir` and, if recursive, its subdirectories. `strict` turns hitting a
    /// limit into an error (at setup) rather than a silent stop (later).
    fn add_tree(
        &mut self,
        dir: BorrowedFd<'_>,
        shown: &str,
        depth: usize,
        strict: bool,
        budget: &mut usize,
        mut announce: Option<&mut Vec<FsEvent>>,
    ) -> Result<()> {
        if self.dirs.len() >= MAX_WATCHES {
            return if strict { Err(too_many_watches()) } else { Ok(()) };
        }
        let wd = match sys::inotify_add_watch_fd(self.inotify.as_fd(), dir, MASK) {
            Ok(wd) => wd,
            Err(e) if errno(&e) == libc::ENOSPC => {
                return if strict {
                    Err(FileError::TooMany {
                        what: "inotify watches of the daemon (fs.inotify.max_user_watches)".into(),
                        limit: self.dirs.len(),
                    })
                } else {
                    Ok(())
                }
            }
            Err(e) => return Err(FileError::from_io(shown, e)),
        };
        self.dirs.insert(wd, shown.to_string());
        if !self.recursive || depth >= MAX_WATCH_DEPTH {
            return Ok(());
        }
        let (names, more) = read_names(dir, *budget, shown)?;
        if more && strict {
            return Err(FileError::TooMany { what: format!("{shown}: entries to scan"), limit: MAX_SCAN_NAMES });
        }
        *budget -= names.len();
        for (raw, kind) in names {
            let child = join_display(shown, &raw);
            if let Some(events) = announce.as_deref_mut() {
                events.push(FsEvent { kind: FsEventType::Create, path: child.clone() });
            }
            if kind != libc::DT_DIR && kind != libc::DT_UNKNOWN {
                continue;
            }
            let Ok(name) = std::ffi::CString::new(raw) else { continue };
            // O_NOFOLLOW: a symlinked directory is an entry, not part of the tree.
            let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW;
            if let Ok(sub) = sys::openat(dir, &name, flags, 0) {
                self.add_tree(sub.as_fd(), &child, depth + 1, strict, budget, announce.as_deref_mut())?;
            }
        }
        Ok(())
    }
}

fn components(path: &str) -> usize {
    path.split('/').filter(|c| !c.is_empty()).count()
}

fn too_many_watches() -> FileError {
    FileError::TooMany { what: "directories to watch".into(), limit: MAX_WATCHES }
}

impl AsRawFd for Watcher {
    fn as_raw_fd(&self) -> RawFd {
        self.inotify.as_raw_fd()
    }
}

impl AsFd for Watcher {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.inotify.as_fd()
    }
}

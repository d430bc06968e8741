//! File observation: what code inside a sandbox creates, changes, renames and deletes in
//! its writable zones, as `fs.*` events (docs/adr/0006-file-observation.md).
//!
//! One inotify instance and one thread for the whole daemon. Each sandbox's writable zones
//! (the plan's writable directories, writable binds and `/dev/shm`) are watched
//! recursively from the host, through directories opened beneath `/proc/<agent>/root`
//! with `openat2(RESOLVE_IN_ROOT)`; a watch follows the inode, so whatever the sandbox
//! does to its names later cannot point a watch at a host path. New directories are
//! watched as they appear (what they already hold is reported as created).
//!
//! Bounded at every step:
//! - **Watches**: at most [`MAX_DIRS`] directories per sandbox, [`MAX_DEPTH`] levels deep;
//!   the first directory over the cap gets one `fs.watch_limit` event (unlimited, so a
//!   flood cannot hide it) and nothing below it is watched. The kernel's own limit
//!   (`fs.inotify.max_user_watches`) is reported the same way.
//! - **Rate**: events go through the bus's per-sandbox token bucket like `proc.exec`
//!   (dropped and counted beyond it).
//! - **Memory**: the kernel queue (`fs.inotify.max_queued_events`) bounds what waits; when
//!   it overflows every watched sandbox gets an `fs.overflow` event (events were lost and
//!   the kernel does not say whose).
//!
//! `fs.modified` is the close of a file that was open for writing (`IN_CLOSE_WRITE`): one
//! per writer and close, never one per `write(2)`.

use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::fs::File;
use std::io::{ErrorKind, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use safehouse_sys::files as sys;

use crate::events::EventBus;

/// Most directories watched per sandbox.
pub const MAX_DIRS: usize = 4096;
/// Deepest directory watched below a zone.
pub const MAX_DEPTH: usize = 32;
/// Most names read while adding one tree (all levels together).
const MAX_SCAN_NAMES: usize = 100_000;
/// Renames whose second half is awaited at once (cookie → first half).
const MAX_PENDING_MOVES: usize = 1024;

const MASK: u32 = libc::IN_CREATE
    | libc::IN_CLOSE_WRITE
    | libc::IN_DELETE
    | libc::IN_MOVED_FROM
    | libc::IN_MOVED_TO
    | libc::IN_ONLYDIR
    | libc::IN_EXCL_UNLINK;

/// Whether daemon sandboxes get file events: on unless `SAFEHOUSE_FSWATCH=0` (for
/// measuring their cost only).
pub fn enabled() -> bool {
    std::env::var_os("SAFEHOUSE_FSWATCH").is_none_or(|v| v != "0")
}

/// The daemon's file observer. Cheap to clone.
#[derive(Clone)]
pub struct FsWatch {
    shared: Arc<Shared>,
}

struct Shared {
    inotify: File,
    bus: EventBus,
    max_dirs: usize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Watch descriptor → who watches it (one sandbox, unless a host directory is bound
    /// writable into several).
    wds: HashMap<i32, Vec<Owner>>,
    sandboxes: HashMap<Arc<str>, Watched>,
}

struct Owner {
    sandbox: Arc<str>,
    /// The directory's path inside the sandbox.
    path: String,
}

struct Watched {
    root: OwnedFd,
    wds: HashSet<i32>,
    limit_said: bool,
}

/// Counters of one sandbox's observation (for tests and `GET .../metrics` later).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WatchStats {
    pub dirs: usize,
    pub limit_hit: bool,
}

/// One event found while reading, emitted once the state lock is released.
struct Pending {
    sandbox: Arc<str>,
    kind: &'static str,
    data: Value,
    /// Not rate-limited (the daemon's own notices: limits, overflows).
    notice: bool,
}

impl FsWatch {
    /// Starts the reader thread with its own inotify instance.
    pub fn start(bus: EventBus) -> std::io::Result<FsWatch> {
        FsWatch::with_limit(bus, MAX_DIRS)
    }

    /// Like [`FsWatch::start`] with another per-sandbox directory cap (tests).
    pub fn with_limit(bus: EventBus, max_dirs: usize) -> std::io::Result<FsWatch> {
        let inotify = File::from(sys::inotify_init()?);
        let shared = Arc::new(Shared { inotify, bus, max_dirs, state: Mutex::default() });
        let reader = Arc::downgrade(&shared);
        std::thread::Builder::new().name("fswatch".into()).stack_size(256 << 10).spawn(move || read_loop(reader))?;
        Ok(FsWatch { shared })
    }

    /// Starts watching `zones` (paths inside the sandbox) beneath `root` (the sandbox's
    /// `/proc/<agent>/root`, opened while the agent was verified alive). Zones that do not
    /// exist are skipped. Blocking (a directory scan): call it off the async threads.
    pub fn add(&self, sandbox: &str, root: OwnedFd, zones: &[String]) {
        let sandbox: Arc<str> = Arc::from(sandbox);
        let mut out = Vec::new();
        {
            let mut st = self.shared.lock();
            st.sandboxes.insert(sandbox.clone(), Watched { root, wds: HashSet::new(), limit_said: false });
            for zone in zones {
                let path = normalize(zone);
                self.shared.add_dir(&mut st, &sandbox, &path, None, &mut out);
            }
        }
        self.shared.emit_all(out);
    }

    /// Stops watching a sandbox (it ended).
    pub fn remove(&self, sandbox: &str) {
        let mut st = self.shared.lock();
        let Some(w) = st.sandboxes.remove(sandbox) else { return };
        for wd in w.wds {
            let Some(owners) = st.wds.get_mut(&wd) else { continue };
            owners.retain(|o| &*o.sandbox != sandbox);
            if owners.is_empty() {
                st.wds.remove(&wd);
                let _ = sys::inotify_rm_watch(self.shared.inotify.as_fd(), wd);
            }
        }
    }

    /// What is watched for a sandbox now.
    pub fn stats(&self, sandbox: &str) -> Option<WatchStats> {
        let st = self.shared.lock();
        st.sandboxes.get(sandbox).map(|w| WatchStats { dirs: w.wds.len(), limit_hit: w.limit_said })
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn emit_all(&self, events: Vec<Pending>) {
        for p in events {
            if p.notice {
                self.bus.emit_unlimited(&p.sandbox, p.kind, p.data);
            } else {
                self.bus.emit(&p.sandbox, p.kind, p.data);
            }
        }
    }

    /// Watches the directory at `path` (inside the sandbox) and what is below it. With
    /// `announce`, what it already holds is reported as created (it appeared before its
    /// watch could see it).
    fn add_dir(
        &self,
        st: &mut State,
        sandbox: &Arc<str>,
        path: &str,
        announce: Option<&mut Vec<Pending>>,
        out: &mut Vec<Pending>,
    ) {
        let Some(w) = st.sandboxes.get(sandbox) else { return };
        let Ok(rel) = CString::new(path.trim_start_matches('/')) else { return };
        let rel = if rel.as_bytes().is_empty() { CString::from(c".") } else { rel };
        // Resolved in the sandbox's view and never through a symlink: a name the sandbox
        // swapped for a link is not followed.
        let resolve = sys::RESOLVE_IN_ROOT | sys::RESOLVE_NO_SYMLINKS | sys::RESOLVE_NO_MAGICLINKS;
        let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW;
        let Ok(dir) = sys::openat2(w.root.as_fd(), &rel, flags, 0, resolve) else { return };
        let depth = path.split('/').filter(|c| !c.is_empty()).count();
        let mut budget = MAX_SCAN_NAMES;
        let mut ctx = Scan { sandbox, budget: &mut budget, announce, out };
        self.add_tree(st, &mut ctx, dir.as_fd(), path, depth);
    }

    fn add_tree(&self, st: &mut State, ctx: &mut Scan<'_, '_>, dir: BorrowedFd<'_>, path: &str, depth: usize) {
        let Some(w) = st.sandboxes.get_mut(ctx.sandbox) else { return };
        if w.wds.len() >= self.max_dirs {
            self.limit(w, ctx, path, format!("{} directories watched in this sandbox", self.max_dirs));
            return;
        }
        let wd = match sys::inotify_add_watch_fd(self.inotify.as_fd(), dir, MASK) {
            Ok(wd) => wd,
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => {
                self.limit(w, ctx, path, "the daemon's inotify watches (fs.inotify.max_user_watches)".into());
                return;
            }
            Err(_) => return,
        };
        if !w.wds.insert(wd) {
            return; // already watched (a bind seen twice, or a zone inside another)
        }
        st.wds.entry(wd).or_default().push(Owner { sandbox: ctx.sandbox.clone(), path: path.to_string() });
        if depth >= MAX_DEPTH {
            return;
        }
        for (raw, kind) in scan(dir, ctx.budget) {
            let child = join(path, &String::from_utf8_lossy(&raw));
            if let Some(a) = ctx.announce.as_deref_mut() {
                a.push(fs_event(ctx.sandbox, "fs.created", json!({ "path": child, "dir": kind == libc::DT_DIR })));
            }
            if kind != libc::DT_DIR && kind != libc::DT_UNKNOWN {
                continue;
            }
            let Ok(cname) = CString::new(raw) else { continue };
            if let Ok(sub) = sys::openat(dir, &cname, libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW, 0) {
                self.add_tree(st, ctx, sub.as_fd(), &child, depth + 1);
            }
        }
    }

    fn limit(&self, w: &mut Watched, ctx: &mut Scan<'_, '_>, path: &str, limit: String) {
        if !w.limit_said {
            w.limit_said = true;
            ctx.out.push(Pending {
                sandbox: ctx.sandbox.clone(),
                kind: "fs.watch_limit",
                data: json!({ "path": path, "limit": limit,
                    "message": "changes below this directory (and any further new directory) are not observed" }),
                notice: true,
            });
        }
    }

    /// Turns one read's raw events into `fs.*` events; collects directories to watch.
    fn translate(&self, buf: &[u8], moves: &mut Moves, out: &mut Vec<Pending>, new_dirs: &mut Vec<NewDir>) {
        let mut st = self.lock();
        for ev in sys::inotify_events(buf) {
            if ev.mask & libc::IN_Q_OVERFLOW != 0 {
                for sandbox in st.sandboxes.keys() {
                    out.push(Pending {
                        sandbox: sandbox.clone(),
                        kind: "fs.overflow",
                        data: json!({ "message": "the kernel's file event queue overflowed: some file events of the sandboxes were lost" }),
                        notice: true,
                    });
                }
                continue;
            }
            if ev.mask & libc::IN_IGNORED != 0 {
                if let Some(owners) = st.wds.remove(&ev.wd) {
                    for o in owners {
                        if let Some(w) = st.sandboxes.get_mut(&o.sandbox) {
                            w.wds.remove(&ev.wd);
                        }
                    }
                }
                continue;
            }
            let Some(owners) = st.wds.get(&ev.wd) else { continue };
            let name = String::from_utf8_lossy(ev.name);
            let is_dir = ev.mask & libc::IN_ISDIR != 0;
            let mut forget = Vec::new();
            for o in owners {
                let path = join(&o.path, &name);
                let m = ev.mask;
                if m & libc::IN_CREATE != 0 {
                    if is_dir {
                        new_dirs.push(NewDir { sandbox: o.sandbox.clone(), path: path.clone(), announce: true });
                    }
                    out.push(fs_event(&o.sandbox, "fs.created", json!({ "path": path, "dir": is_dir })));
                } else if m & libc::IN_CLOSE_WRITE != 0 {
                    out.push(fs_event(&o.sandbox, "fs.modified", json!({ "path": path })));
                } else if m & libc::IN_DELETE != 0 {
                    out.push(fs_event(&o.sandbox, "fs.deleted", json!({ "path": path, "dir": is_dir })));
                } else if m & libc::IN_MOVED_FROM != 0 {
                    if is_dir {
                        forget.push((o.sandbox.clone(), path.clone()));
                    }
                    moves.from(ev.cookie, &o.sandbox, path, is_dir, out);
                } else if m & libc::IN_MOVED_TO != 0 {
                    if is_dir {
                        new_dirs.push(NewDir { sandbox: o.sandbox.clone(), path: path.clone(), announce: false });
                    }
                    out.push(moves.to(ev.cookie, &o.sandbox, path, is_dir));
                }
            }
            for (sandbox, path) in forget {
                self.forget_subtree(&mut st, &sandbox, &path);
            }
        }
    }

    /// A directory moved away: its watches (and those below it) go; if it moved within a
    /// zone, IN_MOVED_TO watches it again under its new name.
    fn forget_subtree(&self, st: &mut State, sandbox: &Arc<str>, path: &str) {
        let prefix = format!("{path}/");
        let Some(w) = st.sandboxes.get_mut(sandbox) else { return };
        let mut gone = Vec::new();
        for wd in &w.wds {
            if let Some(owners) = st.wds.get(wd) {
                if owners.iter().any(|o| &o.sandbox == sandbox && (o.path == path || o.path.starts_with(&prefix))) {
                    gone.push(*wd);
                }
            }
        }
        for wd in gone {
            w.wds.remove(&wd);
            if let Some(owners) = st.wds.get_mut(&wd) {
                owners.retain(|o| &o.sandbox != sandbox);
                if owners.is_empty() {
                    st.wds.remove(&wd);
                    let _ = sys::inotify_rm_watch(self.inotify.as_fd(), wd);
                }
            }
        }
    }
}

struct Scan<'a, 'b> {
    sandbox: &'a Arc<str>,
    budget: &'a mut usize,
    announce: Option<&'b mut Vec<Pending>>,
    out: &'a mut Vec<Pending>,
}

struct NewDir {
    sandbox: Arc<str>,
    path: String,
    announce: bool,
}

/// The first halves of renames, awaiting their second half (same cookie).
#[derive(Default)]
struct Moves {
    pending: HashMap<u32, (Arc<str>, String, bool)>,
}

impl Moves {
    fn from(&mut self, cookie: u32, sandbox: &Arc<str>, path: String, is_dir: bool, out: &mut Vec<Pending>) {
        if self.pending.len() >= MAX_PENDING_MOVES {
            self.flush(out);
        }
        self.pending.insert(cookie, (sandbox.clone(), path, is_dir));
    }

    fn to(&mut self, cookie: u32, sandbox: &Arc<str>, path: String, is_dir: bool) -> Pending {
        let from = match self.pending.remove(&cookie) {
            Some((s, from, _)) if &s == sandbox => Some(from),
            _ => None,
        };
        fs_event(sandbox, "fs.moved", json!({ "from": from, "to": path, "dir": is_dir }))
    }

    /// Renames whose destination was never seen (moved out of every watched zone).
    fn flush(&mut self, out: &mut Vec<Pending>) {
        for (_, (sandbox, from, is_dir)) in self.pending.drain() {
            out.push(fs_event(&sandbox, "fs.moved", json!({ "from": from, "to": null, "dir": is_dir })));
        }
    }
}

fn fs_event(sandbox: &Arc<str>, kind: &'static str, data: Value) -> Pending {
    Pending { sandbox: sandbox.clone(), kind, data, notice: false }
}

/// The reader: waits for the inotify descriptor, drains it, emits. Ends when the observer
/// is dropped.
fn read_loop(shared: std::sync::Weak<Shared>) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut moves = Moves::default();
    loop {
        let Some(s) = shared.upgrade() else { return };
        let fd = s.inotify.as_raw_fd();
        drop(s);
        // A timeout, so the thread notices the observer is gone.
        match safehouse_sys::process::poll_readable(&[fd], 1000) {
            Ok(r) if r[0] => {}
            Ok(_) => continue,
            Err(_) => return,
        }
        let Some(s) = shared.upgrade() else { return };
        let mut out = Vec::new();
        let mut new_dirs = Vec::new();
        loop {
            let n = match (&s.inotify).read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => break, // WouldBlock: drained
            };
            s.translate(&buf[..n], &mut moves, &mut out, &mut new_dirs);
            if out.len() >= 4096 {
                s.emit_all(std::mem::take(&mut out));
            }
        }
        // Within one drained read the two halves of a rename are together (the kernel
        // queues them back to back); one left over moved out of every zone.
        moves.flush(&mut out);
        s.emit_all(out);
        if !new_dirs.is_empty() {
            let mut out = Vec::new();
            {
                let mut st = s.lock();
                for d in new_dirs {
                    let mut announced = Vec::new();
                    let announce = if d.announce { Some(&mut announced) } else { None };
                    s.add_dir(&mut st, &d.sandbox, &d.path, announce, &mut out);
                    out.append(&mut announced);
                }
            }
            s.emit_all(out);
        }
    }
}

/// The names in a directory (skipping `.` and `..`), with their `DT_*` kind, at most
/// `budget` of them in all.
pub(crate) fn scan(dir: BorrowedFd<'_>, budget: &mut usize) -> Vec<(Vec<u8>, u8)> {
    let mut names = Vec::new();
    let Ok(dup) = sys::openat(dir, c".", libc::O_RDONLY | libc::O_DIRECTORY, 0) else { return names };
    let mut buf = vec![0u8; 32 * 1024];
    while *budget > 0 {
        let n = match sys::getdents64(dup.as_fd(), &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        for ent in sys::dirents(&buf[..n]) {
            if ent.name == b"." || ent.name == b".." || ent.name.is_empty() || ent.name.contains(&b'/') {
                continue;
            }
            if *budget == 0 {
                break;
            }
            *budget -= 1;
            names.push((ent.name.to_vec(), ent.kind));
        }
    }
    names
}

fn normalize(zone: &str) -> String {
    let parts: Vec<&str> = zone.split('/').filter(|c| !c.is_empty() && *c != ".").collect();
    format!("/{}", parts.join("/"))
}

fn join(dir: &str, name: &str) -> String {
    if name.is_empty() {
        dir.to_string()
    } else if dir.ends_with('/') {
        format!("{dir}{name}")
    } else {
        format!("{dir}/{name}")
    }
}

#[cfg(test)]
mod tests;

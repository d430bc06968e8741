//! Exec observation for daemon sandboxes (docs/adr/0005-exec-observation.md).
//!
//! Every execve/execveat in a daemon sandbox stops on a seccomp user notification (the
//! filter of setup step 8b). The [`Watcher`], one host thread per sandbox, reads what the
//! caller asked to run (path, argv, cwd, parent) from /proc, checks the notification is
//! still valid, lets the exec continue and reports an [`ExecRecord`]. It also opens a
//! pidfd on each exec'd process and reports an [`ExitRecord`] when it ends, with the
//! status and CPU time as far as it could learn them (see [`ExitRecord`]).
//!
//! With `tools.limits` ([`ToolLimits`]), the watcher also identifies the exec'd file by
//! (dev, ino) inside the sandbox's root and, for a limited tool, has the shared
//! [`Limiter`] (crate::toollimit) move the caller into the tool's cgroup and arm its
//! timeout before it answers CONTINUE (one notification per exec; nothing of it runs for
//! sandboxes without `tools.limits`).
//!
//! Fail closed: the exec waits for the watcher. If no process holds the listener any
//! more, the kernel fails every exec in the sandbox with ENOSYS. A [`keeper`] process
//! holds a copy across daemon restarts, so a restarted daemon picks the listener up again
//! (execs wait meanwhile).

use std::collections::HashMap;
use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use safehouse_sys::files::{self as sf, RESOLVE_IN_ROOT, RESOLVE_NO_MAGICLINKS};
use safehouse_sys::process::process_vm_read;
use safehouse_sys::seccomp as sc;

use crate::cgroup::CgroupSupport;
use crate::toollimit::{Limiter, ToolEvent, ToolTable};

pub mod keeper;

/// Most arguments recorded per exec; more are dropped and the record marked truncated.
pub const MAX_ARGS: usize = 64;
/// Longest argument recorded (bytes); longer ones are cut and the record marked truncated.
pub const MAX_ARG_BYTES: usize = 4096;
/// Most argument bytes recorded per exec, all arguments together.
pub const MAX_ARGV_BYTES: usize = 32 * 1024;
/// Most processes whose exit one watcher follows at once; execs beyond it get no exit
/// record (counted in [`Stats::exits_unwatched`]).
pub const MAX_WATCHED_EXITS: usize = 4096;

/// Whether daemon sandboxes get the exec filter: on unless `SAFEHOUSE_EXECWATCH=0` (for
/// measuring its cost only; off means no exec records and no per-tool limits).
pub fn enabled() -> bool {
    std::env::var_os("SAFEHOUSE_EXECWATCH").is_none_or(|v| v != "0")
}

/// One exec in a sandbox, as the caller asked for it (read from its memory while it
/// waited; see the TOCTOU note in docs/threat-model.md).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ExecRecord {
    /// The process, as the sandbox sees it (its pid namespace).
    pub pid: i32,
    /// Its parent, as the sandbox sees it; 0 when the parent is outside the sandbox.
    pub ppid: i32,
    /// The same process on the host.
    pub host_pid: i32,
    /// The path given to execve (relative paths as given; not resolved), lossy UTF-8.
    pub path: String,
    /// The arguments, capped by MAX_ARGS / MAX_ARG_BYTES / MAX_ARGV_BYTES, lossy UTF-8.
    pub argv: Vec<String>,
    /// The caller's working directory, in the sandbox's view.
    pub cwd: String,
    /// Some argument, or the path, was cut or dropped.
    pub truncated: bool,
    /// When the exec was seen: milliseconds since the Unix epoch.
    pub time: u64,
}

/// The end of a process whose exec was recorded. The watcher is not its parent, so it
/// cannot wait for it: it learns the exit from the pidfd (opened while the exec waited,
/// so always), reads the status and CPU time from /proc while the process is still a
/// zombie (its parent has not reaped it yet), and after the reap asks the pidfd for the
/// status the kernel kept (Linux 6.15+; the CPU time is gone then). What it could not
/// learn is None, never guessed.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ExitRecord {
    pub pid: i32,
    pub host_pid: i32,
    /// When the exit was seen: milliseconds since the Unix epoch.
    pub time: u64,
    /// From the exec (the last one, for a process that exec'd several times) to the exit.
    pub wall_ms: u64,
    /// From the zombie's /proc/PID/stat, when caught before the reap.
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// User + system CPU time of the whole process, same source.
    pub cpu_ms: Option<u64>,
}

/// What the watcher calls; both run on the watcher's thread after the exec continued, so
/// they must be quick (queue, don't block).
pub type ExecHook = Arc<dyn Fn(ExecRecord) + Send + Sync>;
pub type ExitHook = Arc<dyn Fn(ExitRecord) + Send + Sync>;
/// A limited tool's run (`tools.limits`) started or ended.
pub type ToolHook = Arc<dyn Fn(ToolNote) + Send + Sync>;

/// What the watcher says of limited tool runs.
#[derive(Debug, Clone)]
pub enum ToolNote {
    /// Confined, before its exec went on; `origin` as in [`ToolEvent::origin`].
    Started { origin: Option<String> },
    /// Ended (its cgroup empty and removed), with the process's id in the sandbox (0 if
    /// unknown, e.g. a run adopted after a daemon restart).
    Ended { run: ToolEvent, pid: i32 },
}

#[derive(Clone)]
pub struct Hooks {
    pub exec: ExecHook,
    pub exit: ExitHook,
    pub tool: ToolHook,
}

/// `tools.limits` of a daemon sandbox, for its watcher.
pub struct ToolLimits {
    /// The limited tools' files in the sandbox (from its setup, or from its keeper).
    pub table: ToolTable,
    pub limits: Vec<safehouse_policy::tools::ToolLimit>,
    pub support: CgroupSupport,
    /// The sandbox's cgroup, where tool cgroups nest.
    pub sandbox_cgroup: String,
    /// After a daemon restart: take over the tool cgroups already there.
    pub adopt: bool,
}

/// Counters of one watcher.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct Stats {
    /// Records emitted.
    pub execs: u64,
    /// Notifications whose caller was gone (or changed) before its record was complete.
    pub dropped_invalid: u64,
    /// Execs of paths that name no file (a shell searching $PATH): answered, not recorded.
    pub missing: u64,
    pub exits: u64,
    pub exits_unwatched: u64,
}

/// The thread answering one sandbox's exec notifications.
pub struct Watcher {
    /// Dropping it (the pipe's write end) wakes the thread to stop.
    stop: Option<OwnedFd>,
    thread: Option<JoinHandle<()>>,
    stats: Arc<std::sync::Mutex<Stats>>,
}

impl Watcher {
    /// Starts answering `listener`'s notifications. The thread ends when the sandbox is
    /// gone (the listener hangs up) or at [`Watcher::stop`].
    pub fn start(listener: OwnedFd, hooks: Hooks, name: &str) -> std::io::Result<Watcher> {
        Watcher::start_limited(listener, hooks, name, None)
    }

    /// [`Watcher::start`], enforcing `tools.limits` when `tools` is given.
    pub fn start_limited(
        listener: OwnedFd,
        hooks: Hooks,
        name: &str,
        tools: Option<ToolLimits>,
    ) -> std::io::Result<Watcher> {
        let (stop_r, stop_w) = safehouse_sys::fs::pipe()?;
        let stats = Arc::new(std::sync::Mutex::new(Stats::default()));
        let stats2 = stats.clone();
        let thread =
            std::thread::Builder::new().name(format!("execwatch-{name}")).stack_size(256 << 10).spawn(move || {
                let limiter = tools.map(|t| {
                    let mut l = Limiter::new(t.table, t.limits, &t.support, &t.sandbox_cgroup);
                    if t.adopt {
                        l.adopt();
                    }
                    l
                });
                let mut w = Watch {
                    listener,
                    hooks,
                    exits: HashMap::new(),
                    stats: stats2,
                    root: None,
                    limiter,
                    tool_pids: HashMap::new(),
                };
                w.serve(&stop_r);
                w.finish_tools();
            })?;
        Ok(Watcher { stop: Some(stop_w), thread: Some(thread), stats })
    }

    pub fn stats(&self) -> Stats {
        *self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stops the thread and waits for it. The listener closes with it: while the sandbox
    /// lives on, its execs then wait for (or, with no keeper, fail without) a watcher.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.halt();
    }
}

/// A process whose exit is awaited.
struct Followed {
    pidfd: OwnedFd,
    pid: i32,
    /// From /proc/PID/stat once the pidfd was held; None if it had already been reaped.
    start_time: Option<u64>,
    since: Instant,
}

struct Watch {
    listener: OwnedFd,
    hooks: Hooks,
    /// By host pid.
    exits: HashMap<i32, Followed>,
    stats: Arc<std::sync::Mutex<Stats>>,
    /// The sandbox's root directory (see [`Watch::read_seen`]).
    root: Option<File>,
    /// With `tools.limits` only.
    limiter: Option<Limiter>,
    /// Confined tools: host pid → pid in the sandbox (for their events).
    tool_pids: HashMap<i32, i32>,
}

impl Watch {
    fn serve(&mut self, stop: &OwnedFd) {
        loop {
            let mut fds: Vec<(i32, i16)> =
                vec![(self.listener.as_raw_fd(), libc::POLLIN), (stop.as_raw_fd(), libc::POLLIN)];
            let order: Vec<i32> = self.exits.keys().copied().collect();
            fds.extend(order.iter().map(|p| (self.exits[p].pidfd.as_raw_fd(), libc::POLLIN)));
            let Ok(ready) = safehouse_sys::process::poll_events(&fds, self.tool_wait_ms()) else { return };
            if ready[1] != 0 {
                return;
            }
            // Notifications first: the callers are waiting.
            if ready[0] & libc::POLLIN != 0 {
                match sc::notif_recv(self.listener.as_fd()) {
                    Ok(n) => self.handle(n),
                    Err(_) if safehouse_sys::process::hung_up(&self.listener) => return,
                    Err(_) => {}
                }
            } else if ready[0] != 0 {
                return; // hung up: every task of the sandbox is gone
            }
            for (i, host_pid) in order.iter().enumerate() {
                if ready[i + 2] != 0 {
                    if let Some(f) = self.exits.remove(host_pid) {
                        self.exited(*host_pid, f);
                    }
                }
            }
            if self.limiter.is_some() {
                self.tend_tools();
            }
        }
    }

    /// How long to wait for the next notification: for ever, or with tools.limits and a
    /// tool running, until its timeout or half a second (to remove ended tools' cgroups).
    fn tool_wait_ms(&self) -> i32 {
        match &self.limiter {
            Some(l) if l.has_live() => {
                let due = l.next_due().unwrap_or(std::time::Duration::from_millis(500));
                due.as_millis().min(500) as i32
            }
            _ => -1,
        }
    }

    /// Kills tools past their timeout, removes the cgroups of ended ones, reports them.
    fn tend_tools(&mut self) {
        let Some(l) = self.limiter.as_mut() else { return };
        l.expire();
        l.reap();
        for e in l.take_events() {
            let pid = self.tool_pids.remove(&e.pid).unwrap_or(0);
            (self.hooks.tool)(ToolNote::Ended { run: e, pid });
        }
    }

    /// The sandbox is gone (or the daemon stops): kill and remove what is left of its
    /// tool cgroups and report them.
    fn finish_tools(&mut self) {
        if let Some(l) = self.limiter.take() {
            for e in l.finish() {
                let pid = self.tool_pids.remove(&e.pid).unwrap_or(0);
                (self.hooks.tool)(ToolNote::Ended { run: e, pid });
            }
        }
    }

    /// With tools.limits: the answer to an exec. A limited tool is moved into its cgroup
    /// first; an exec that cannot be identified, or whose limits cannot be applied, is
    /// refused (fail closed).
    fn tool_verdict(&mut self, seen: Option<&Seen>, valid: bool) -> Option<i32> {
        let l = self.limiter.as_mut()?;
        let seen = match seen {
            Some(s) if valid => s,
            _ => return Some(libc::EACCES),
        };
        let limit = seen.file.and_then(|(dev, ino)| l.tool_of(dev, ino))?;
        match l.confine(seen.rec.host_pid, limit) {
            Ok(origin) => {
                self.tool_pids.insert(seen.rec.host_pid, seen.rec.pid);
                (self.hooks.tool)(ToolNote::Started { origin });
                None
            }
            Err(e) => Some(e),
        }
    }

    fn bump(&self, f: impl FnOnce(&mut Stats)) {
        f(&mut self.stats.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// Reads what must be read while the caller waits (its memory, working directory,
    /// ids, whether the file exists), checks the notification still stands, answers
    /// CONTINUE, then completes the record (the parent's id), follows the process and
    /// reports. Observation never refuses an exec; only `tools.limits` can, when a limited
    /// tool cannot be identified or confined (fail closed). Everything the caller
    /// does not have to wait for happens after the answer (each /proc read costs 10–30 µs
    /// on a small VM, and the exec waits for all of them).
    fn handle(&mut self, n: sc::Notification) {
        let seen = self.read_seen(&n);
        // Held before the answer, so even a process that ends at once is followed to its
        // exit (the kernel keeps the exit status for a pidfd holder, see `exited`).
        let pidfd = seen
            .as_ref()
            .filter(|s| s.found && !self.exits.contains_key(&s.rec.host_pid))
            .and_then(|s| safehouse_sys::process::pidfd_open(s.rec.host_pid).ok());
        let valid = sc::notif_id_valid(self.listener.as_fd(), n.id);
        let verdict = if self.limiter.is_some() { self.tool_verdict(seen.as_ref(), valid) } else { None };
        let _ = sc::notif_respond(self.listener.as_fd(), n.id, verdict);
        match seen {
            Some(seen) if valid && seen.found => {
                let rec = seen.complete();
                self.follow(&rec, pidfd);
                self.bump(|s| s.execs += 1);
                (self.hooks.exec)(rec);
            }
            Some(_) if valid => self.bump(|s| s.missing += 1),
            _ => self.bump(|s| s.dropped_invalid += 1),
        }
    }

    /// [`read_seen`] with the sandbox's root directory, opened once: every process under
    /// this listener shares it (the sandbox's seccomp program refuses chroot, pivot_root,
    /// unshare and setns, so no process can move to another root).
    fn read_seen(&mut self, n: &sc::Notification) -> Option<Seen> {
        if self.root.is_none() && n.pid != 0 {
            self.root = File::open(format!("/proc/{}/root", n.pid)).ok();
        }
        read_seen(n, self.root.as_ref()?, self.limiter.is_some())
    }

    /// Follows `rec`'s process to its exit, with `pidfd` when one was opened already.
    fn follow(&mut self, rec: &ExecRecord, pidfd: Option<OwnedFd>) {
        if let Some(f) = self.exits.get_mut(&rec.host_pid) {
            if safehouse_sys::process::poll_events(&[(f.pidfd.as_raw_fd(), libc::POLLIN)], 0).is_ok_and(|r| r[0] == 0) {
                f.since = Instant::now(); // a process exec'ing again (still alive: same process)
                return;
            }
            // The number was reused: the one followed has ended; report it first.
            if let Some(f) = self.exits.remove(&rec.host_pid) {
                self.exited(rec.host_pid, f);
            }
        }
        if self.exits.len() >= MAX_WATCHED_EXITS {
            self.bump(|s| s.exits_unwatched += 1);
            return;
        }
        match pidfd.map_or_else(|| safehouse_sys::process::pidfd_open(rec.host_pid), Ok) {
            Ok(pidfd) => {
                // Read after the pidfd is held: if the process is already gone, the stat
                // is missing (exit status unknown), never another process's.
                let start_time = read_stat(rec.host_pid).map(|s| s.start_time);
                self.exits.insert(rec.host_pid, Followed { pidfd, pid: rec.pid, start_time, since: Instant::now() });
            }
            Err(_) => self.bump(|s| s.exits_unwatched += 1),
        }
    }

    fn exited(&mut self, host_pid: i32, f: Followed) {
        // Still a zombie of the same process (same start time)? Then its stat is final.
        // Reaped already? Then the kernel's copy of the status (Linux 6.15+), without the
        // CPU time, which went with the zombie.
        let zombie = read_stat(host_pid).filter(|s| s.state == 'Z' && Some(s.start_time) == f.start_time);
        let (status, cpu_ms) = match zombie {
            Some(s) => (Some(s.exit_status), Some(s.cpu_ticks * 1000 / clock_ticks())),
            None => (safehouse_sys::process::pidfd_exit_status(f.pidfd.as_fd()), None),
        };
        let (exit_code, signal) = match status {
            Some(st) if st & 0x7f == 0 => (Some((st >> 8) & 0xff), None),
            Some(st) => (None, Some(st & 0x7f)),
            None => (None, None),
        };
        self.bump(|s| s.exits += 1);
        (self.hooks.exit)(ExitRecord {
            pid: f.pid,
            host_pid,
            time: now_ms(),
            wall_ms: f.since.elapsed().as_millis() as u64,
            exit_code,
            signal,
            cpu_ms,
        });
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn clock_ticks() -> u64 {
    // Linux reports /proc times in USER_HZ, 100 on every architecture it supports.
    100
}

/// What the watcher needs from /proc/PID/stat.
struct Stat {
    state: char,
    start_time: u64,
    cpu_ticks: u64,
    exit_status: i32,
}

/// Reads a small /proc file (a few KiB at most) without the size probe and the growing
/// buffer of `read_to_string`.
fn read_proc(path: &str) -> Option<String> {
    let mut f = File::open(path).ok()?;
    let mut buf = [0u8; 4096];
    let mut len = 0;
    while len < buf.len() {
        match std::io::Read::read(&mut f, &mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(_) => return None,
        }
    }
    Some(String::from_utf8_lossy(&buf[..len]).into_owned())
}

fn read_stat(pid: i32) -> Option<Stat> {
    let text = read_proc(&format!("/proc/{pid}/stat"))?;
    let after = text.rsplit_once(") ")?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields counted from 3 (state) in proc(5).
    let at = |n: usize| f.get(n - 3).copied();
    let num = |n: usize| at(n).and_then(|v| v.parse::<u64>().ok());
    Some(Stat {
        state: at(3)?.chars().next()?,
        start_time: num(22)?,
        cpu_ticks: num(14)? + num(15)?,
        exit_status: at(52).and_then(|v| v.parse().ok()).unwrap_or(0),
    })
}

/// The ids of a process from one read of /proc/PID/status.
#[derive(Debug, PartialEq, Eq)]
struct Ids {
    /// Thread group id (the process) on the host.
    tgid: i32,
    /// Its parent on the host.
    ppid: i32,
    /// The process in its innermost pid namespace (`NStgid:`'s last entry).
    ns_pid: i32,
    /// How deep that namespace is (entries of `NStgid:`).
    depth: usize,
}

fn read_ids(pid: i32) -> Option<Ids> {
    let text = read_proc(&format!("/proc/{pid}/status"))?;
    let field = |name: &str| text.lines().find_map(|l| l.strip_prefix(name));
    let ns: Vec<i32> = field("NStgid:")?.split_whitespace().filter_map(|v| v.parse().ok()).collect();
    Some(Ids {
        tgid: field("Tgid:")?.trim().parse().ok()?,
        ppid: field("PPid:")?.trim().parse().ok()?,
        ns_pid: *ns.last()?,
        depth: ns.len(),
    })
}

/// What is read of an exec while its caller waits.
struct Seen {
    /// The record, its `ppid` still 0 (see [`Seen::complete`]).
    rec: ExecRecord,
    host_ppid: i32,
    depth: usize,
    /// The path names a file in the sandbox (else: a $PATH search's miss).
    found: bool,
    /// With tools.limits only: that file's (dev, ino).
    file: Option<(u64, u64)>,
}

impl Seen {
    /// Adds the parent's id in the sandbox, read after the exec went on: the parent waits
    /// for (or at least outlives the start of) its child; if it is gone by now, 0.
    fn complete(mut self) -> ExecRecord {
        self.rec.ppid = match read_ids(self.host_ppid) {
            Some(p) if p.depth == self.depth => p.ns_pid,
            _ => 0,
        };
        self.rec
    }
}

/// Reads notification `n`'s exec (None: the caller vanished or is unreadable); with
/// `identify`, also the (dev, ino) of the file it names.
fn read_seen(n: &sc::Notification, root: &File, identify: bool) -> Option<Seen> {
    if n.pid == 0 {
        return None;
    }
    let (dirfd, path_ptr, argv_ptr, flags) = match n.nr as libc::c_long {
        libc::SYS_execve => (libc::AT_FDCWD, n.args[0], n.args[1], 0),
        libc::SYS_execveat => (n.args[0] as i32, n.args[1], n.args[2], n.args[4] as i32),
        _ => return None,
    };
    // n.pid is the calling thread; the process is its thread group.
    let tid = n.pid as i32;
    let (path, path_cut) = read_cstr(tid, path_ptr, libc::PATH_MAX as usize)?;
    let (argv, argv_cut) = read_argv(tid, argv_ptr);
    let cwd = std::fs::read_link(format!("/proc/{tid}/cwd")).ok()?;
    let ids = read_ids(tid)?;
    let (found, file) = if path.is_empty() && flags & libc::AT_EMPTY_PATH != 0 {
        // execveat(fd, "", AT_EMPTY_PATH): the file is the descriptor itself.
        let file = if identify {
            use std::os::unix::fs::MetadataExt;
            let st = std::fs::metadata(format!("/proc/{tid}/fd/{dirfd}")).ok()?;
            Some((st.dev(), st.ino()))
        } else {
            None
        };
        (true, file)
    } else {
        let full = if path.starts_with(b"/") {
            path.clone()
        } else {
            let base = if dirfd == libc::AT_FDCWD {
                cwd.clone()
            } else {
                std::fs::read_link(format!("/proc/{tid}/fd/{dirfd}")).ok()?
            };
            let mut full = base.as_os_str().as_bytes().to_vec();
            full.push(b'/');
            full.extend_from_slice(&path);
            full
        };
        look_up_in_root(root, &full, identify)
    };
    let rec = ExecRecord {
        pid: ids.ns_pid,
        ppid: 0,
        host_pid: ids.tgid,
        path: String::from_utf8_lossy(&path).into_owned(),
        argv,
        cwd: String::from_utf8_lossy(cwd.as_os_str().as_bytes()).into_owned(),
        truncated: path_cut || argv_cut,
        time: now_ms(),
    };
    Some(Seen { rec, host_ppid: ids.ppid, depth: ids.depth, found, file })
}

/// Whether `path` names a file inside `root` (symlinks and `..` stay in it) and, with
/// `identify`, its (dev, ino).
fn look_up_in_root(root: &File, path: &[u8], identify: bool) -> (bool, Option<(u64, u64)>) {
    let Ok(c) = CString::new(path) else { return (false, None) };
    match sf::openat2(root.as_fd(), &c, libc::O_PATH, 0, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS) {
        Ok(fd) if identify => (true, sf::fstat(fd.as_fd()).ok().map(|st| (st.dev, st.ino))),
        Ok(_) => (true, None),
        Err(_) => (false, None),
    }
}

/// Reads bytes at `addr` in process `pid` until a NUL, at most `cap`; (bytes, cut). None
/// if unreadable.
fn read_cstr(pid: i32, addr: u64, cap: usize) -> Option<(Vec<u8>, bool)> {
    let mut out: Vec<u8> = Vec::new();
    let mut at = addr;
    while out.len() < cap {
        let page_left = 4096 - (at % 4096) as usize;
        let mut buf = vec![0u8; page_left.min(cap - out.len())];
        let n = process_vm_read(pid, at, &mut buf).ok()?;
        if n == 0 {
            return None;
        }
        if let Some(end) = buf[..n].iter().position(|&b| b == 0) {
            out.extend_from_slice(&buf[..end]);
            return Some((out, false));
        }
        out.extend_from_slice(&buf[..n]);
        at += n as u64;
    }
    Some((out, true))
}

/// Reads the argv array at `addr` in process `pid` within the caps; (args, cut).
fn read_argv(pid: i32, addr: u64) -> (Vec<String>, bool) {
    let mut args = Vec::new();
    let mut total = 0usize;
    if addr == 0 {
        return (args, false);
    }
    // The pointer array, MAX_ARGS + 1 entries (one more tells whether there are more).
    let mut ptrs = vec![0u8; (MAX_ARGS + 1) * 8];
    let mut got = 0;
    while got < ptrs.len() {
        match process_vm_read(pid, addr + got as u64, &mut ptrs[got..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    for (i, chunk) in ptrs[..got - got % 8].chunks_exact(8).enumerate() {
        let p = u64::from_ne_bytes(chunk.try_into().unwrap_or([0; 8]));
        if p == 0 {
            return (args, false);
        }
        if i == MAX_ARGS || total >= MAX_ARGV_BYTES {
            return (args, true);
        }
        let cap = MAX_ARG_BYTES.min(MAX_ARGV_BYTES - total);
        let Some((bytes, cut)) = read_cstr(pid, p, cap) else { return (args, true) };
        total += bytes.len();
        args.push(String::from_utf8_lossy(&bytes).into_owned());
        if cut {
            return (args, true);
        }
    }
    // The array ended unreadable before its NULL.
    (args, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv_is_read_with_caps() {
        let me = std::process::id() as i32;
        let a = CString::new("hello").unwrap();
        let b = CString::new("x".repeat(MAX_ARG_BYTES + 10)).unwrap();
        let ptrs: Vec<u64> = vec![a.as_ptr() as u64, a.as_ptr() as u64, 0];
        let (args, cut) = read_argv(me, ptrs.as_ptr() as u64);
        assert_eq!((args, cut), (vec!["hello".to_string(), "hello".to_string()], false));
        let ptrs: Vec<u64> = vec![a.as_ptr() as u64, b.as_ptr() as u64, 0];
        let (args, cut) = read_argv(me, ptrs.as_ptr() as u64);
        assert!(cut);
        assert_eq!(args.len(), 2);
        assert_eq!(args[1].len(), MAX_ARG_BYTES);
        let many: Vec<u64> = std::iter::repeat_n(a.as_ptr() as u64, 100).chain([0]).collect();
        let (args, cut) = read_argv(me, many.as_ptr() as u64);
        assert!(cut);
        assert_eq!(args.len(), MAX_ARGS);
        let huge: Vec<u64> = std::iter::repeat_n(b.as_ptr() as u64, 20).chain([0]).collect();
        let (args, cut) = read_argv(me, huge.as_ptr() as u64);
        assert!(cut);
        assert!(args.iter().map(|a| a.len()).sum::<usize>() <= MAX_ARGV_BYTES);
        assert_eq!(read_argv(me, 0), (Vec::new(), false));
    }

    #[test]
    fn stat_and_ids_of_self() {
        let me = std::process::id() as i32;
        let s = read_stat(me).unwrap();
        assert!(s.start_time > 0 && s.state != 'Z');
        let ids = read_ids(me).unwrap();
        assert_eq!((ids.tgid, ids.ppid), (me, std::os::unix::process::parent_id() as i32));
        assert!(ids.depth >= 1 && ids.ns_pid > 0);
        assert_eq!(read_ids(i32::MAX), None);
    }
}

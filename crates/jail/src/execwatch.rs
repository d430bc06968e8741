//! The exec-interception pipeline, one for `safehouse run` and the daemon
//! (docs/adr/0005-exec-observation.md, docs/adr/0007-one-exec-pipeline.md).
//!
//! Every execve/execveat of a sandbox with the exec filter (setup step `exec
//! notification`: daemon sandboxes always, `run` with `tools.limits`) stops on a seccomp
//! user notification. The [`Watcher`], one host thread per sandbox, reads the exec once
//! ([`read`]: path, and as its parts need them argv, cwd, ids, and the file by (dev, ino)
//! resolved beneath the sandbox's root), checks the notification is still valid, answers,
//! and hands the rest to its parts, each switched on by [`Options`]:
//!
//! - observation (the daemon): an [`ExecRecord`] per exec, and a pidfd on each exec'd
//!   process for an [`ExitRecord`] when it ends, with the status and CPU time as far as
//!   it could learn them (see [`ExitRecord`]);
//! - allow list (`tools.allow`, [`AllowList`]): an exec of a file it does not list goes
//!   to [`Hooks::denied`] (the kernel refused it; Landlock enforces);
//! - tool limits (`tools.limits`, [`ToolLimits`]): a limited tool is moved into its own
//!   cgroup by the shared [`Limiter`] (crate::toollimit), its timeout armed, before the
//!   answer; an exec whose file cannot be identified is refused.
//!
//! Fail closed: the exec waits for the watcher. If no process holds the listener any
//! more, the kernel fails every exec in the sandbox with ENOSYS. In the daemon a
//! [`keeper`] process holds a copy across daemon restarts, so a restarted daemon picks
//! the listener up again (execs wait meanwhile).

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use safehouse_sys::seccomp as sc;

use crate::cgroup::CgroupSupport;
use crate::toollimit::{Limiter, ToolEvent, ToolTable};
pub use crate::tools::AllowList;
use read::{Exec, Want};

pub mod keeper;
mod read;

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

/// What the watcher calls; all run on the watcher's thread after the exec continued, so
/// they must be quick (queue, don't block).
pub type ExecHook = Arc<dyn Fn(ExecRecord) + Send + Sync>;
pub type ExitHook = Arc<dyn Fn(ExitRecord) + Send + Sync>;
/// A limited tool's run (`tools.limits`) started or ended.
pub type ToolHook = Arc<dyn Fn(ToolNote) + Send + Sync>;
/// With an [`AllowList`]: an exec of a file it does not list (the kernel refuses it with
/// EACCES; Landlock enforces, this only tells), called before the record's [`ExecHook`].
pub type DeniedHook = Arc<dyn Fn(&ExecRecord) + Send + Sync>;

/// What the watcher says of limited tool runs.
#[derive(Debug, Clone)]
pub enum ToolNote {
    /// Confined, before its exec went on; `origin` as in [`ToolEvent::origin`].
    Started { origin: Option<String> },
    /// Ended (its cgroup empty and removed), with the process's id in the sandbox (0 if
    /// unknown, e.g. a run adopted after a daemon restart).
    Ended { run: ToolEvent, pid: i32 },
}

/// The pipeline's hooks: observation (exec, exit), allow-list (denied) and tool limits
/// (tool).
#[derive(Clone)]
pub struct Hooks {
    pub exec: ExecHook,
    pub exit: ExitHook,
    pub tool: ToolHook,
    pub denied: DeniedHook,
}

impl Hooks {
    /// Hooks that do nothing (a pipeline without observation, e.g. `safehouse run`'s, sets
    /// only [`Hooks::tool`]).
    pub fn none() -> Hooks {
        Hooks { exec: Arc::new(|_| {}), exit: Arc::new(|_| {}), tool: Arc::new(|_| {}), denied: Arc::new(|_| {}) }
    }
}

/// What one sandbox's pipeline does besides letting each exec go on.
#[derive(Default)]
pub struct Options {
    /// Observation: an [`ExecRecord`] per exec and an [`ExitRecord`] per exit (the
    /// daemon). Off, only what the other parts need is read (`safehouse run`).
    pub observe: bool,
    /// `tools.allow`: the files the sandbox may exec; an exec of another one goes to
    /// [`Hooks::denied`] (with `observe`).
    pub allowed: Option<AllowList>,
    /// `tools.limits`: enforced (a limited tool is confined before its exec goes on; an
    /// exec that cannot be identified is refused).
    pub tools: Option<ToolLimits>,
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
    /// Starts answering `listener`'s notifications with the parts `opts` turns on. The
    /// thread ends when the sandbox is gone (the listener hangs up) or at
    /// [`Watcher::stop`].
    pub fn start(listener: OwnedFd, hooks: Hooks, name: &str, opts: Options) -> std::io::Result<Watcher> {
        let Options { observe, allowed, tools } = opts;
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
                    observe,
                    allowed,
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
    /// Records and exits (see [`Options::observe`]).
    observe: bool,
    allowed: Option<AllowList>,
    /// By host pid.
    exits: HashMap<i32, Followed>,
    stats: Arc<std::sync::Mutex<Stats>>,
    /// The sandbox's root directory (see [`Watch::read`]).
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
    /// first; an exec whose file cannot be identified, or whose limits cannot be applied,
    /// is refused (fail closed), with the errno the exec would have failed with where
    /// there is one (ENOENT for a path that names nothing).
    fn tool_verdict(&mut self, exec: &Result<Exec, i32>, valid: bool) -> Option<i32> {
        let l = self.limiter.as_mut()?;
        let exec = match exec {
            Ok(e) if valid => e,
            Ok(_) => return Some(libc::EACCES),
            Err(errno) => return Some(*errno),
        };
        let (dev, ino) = match exec.target.id() {
            Ok(id) => id,
            Err(errno) => return Some(errno),
        };
        let limit = l.tool_of(dev, ino)?;
        let (host_pid, pid) = exec.ids.as_ref().map_or((0, 0), |i| (i.tgid, i.ns_pid));
        match l.confine(host_pid, limit) {
            Ok(origin) => {
                self.tool_pids.insert(host_pid, pid);
                (self.hooks.tool)(ToolNote::Started { origin });
                None
            }
            Err(e) => Some(e),
        }
    }

    fn bump(&self, f: impl FnOnce(&mut Stats)) {
        f(&mut self.stats.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// What must be read while the caller waits: with observation its memory, working
    /// directory and ids; with tools.limits its ids and the file's (dev, ino); always the
    /// path and whether it names a file.
    fn want(&self) -> Want {
        let limits = self.limiter.is_some();
        Want { record: self.observe, ids: self.observe || limits, identify: limits || self.allowed.is_some() }
    }

    /// Reads what [`Watch::want`] says while the caller waits, checks the notification
    /// still stands, answers (CONTINUE, unless `tools.limits` refuses), then completes the
    /// record (the parent's id), checks it against the allow list, follows the process
    /// and reports. Observation never refuses an exec; only `tools.limits` can, when a
    /// limited tool cannot be identified or confined (fail closed). Everything the caller
    /// does not have to wait for happens after the answer (each /proc read costs 10–30 µs
    /// on a small VM, and the exec waits for all of them).
    fn handle(&mut self, n: sc::Notification) {
        let exec = self.read(&n);
        // Held before the answer, so even a process that ends at once is followed to its
        // exit (the kernel keeps the exit status for a pidfd holder, see `exited`).
        let pidfd = match (&exec, self.observe) {
            (Ok(e), true) if e.target.found() => e
                .ids
                .as_ref()
                .filter(|i| !self.exits.contains_key(&i.tgid))
                .and_then(|i| safehouse_sys::process::pidfd_open(i.tgid).ok()),
            _ => None,
        };
        let valid = sc::notif_id_valid(self.listener.as_fd(), n.id);
        let verdict = if self.limiter.is_some() { self.tool_verdict(&exec, valid) } else { None };
        let _ = sc::notif_respond(self.listener.as_fd(), n.id, verdict);
        match exec {
            Ok(exec) if valid && exec.target.found() => {
                if !self.observe {
                    return;
                }
                let denied = match (&self.allowed, exec.target.id()) {
                    (Some(allowed), Ok((dev, ino))) => !allowed.allows(dev, ino),
                    _ => false,
                };
                let Some(rec) = record(exec) else { return };
                if denied {
                    (self.hooks.denied)(&rec);
                }
                self.follow(&rec, pidfd);
                self.bump(|s| s.execs += 1);
                (self.hooks.exec)(rec);
            }
            Ok(_) if valid => self.bump(|s| s.missing += 1),
            _ => self.bump(|s| s.dropped_invalid += 1),
        }
    }

    /// [`read::read`] with the sandbox's root directory, opened once: every process under
    /// this listener shares it (the sandbox's seccomp program refuses chroot, pivot_root,
    /// unshare and setns, so no process can move to another root).
    fn read(&mut self, n: &sc::Notification) -> Result<Exec, i32> {
        if self.root.is_none() && n.pid != 0 {
            self.root = File::open(format!("/proc/{}/root", n.pid)).ok();
        }
        let want = self.want();
        read::read(n, self.root.as_ref().ok_or(libc::ESRCH)?, want)
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
                let start_time = read::read_stat(rec.host_pid).map(|s| s.start_time);
                self.exits.insert(rec.host_pid, Followed { pidfd, pid: rec.pid, start_time, since: Instant::now() });
            }
            Err(_) => self.bump(|s| s.exits_unwatched += 1),
        }
    }

    fn exited(&mut self, host_pid: i32, f: Followed) {
        // Still a zombie of the same process (same start time)? Then its stat is final.
        // Reaped already? Then the kernel's copy of the status (Linux 6.15+), without the
        // CPU time, which went with the zombie.
        let zombie = read::read_stat(host_pid).filter(|s| s.state == 'Z' && Some(s.start_time) == f.start_time);
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

/// The record of an exec read with [`Want::record`], its parent's id in the sandbox read
/// now, after the exec went on: the parent waits for (or at least outlives the start of)
/// its child; if it is gone by now, 0.
fn record(exec: Exec) -> Option<ExecRecord> {
    let ids = exec.ids?;
    let ppid = match read::read_ids(ids.ppid) {
        Some(p) if p.depth == ids.depth => p.ns_pid,
        _ => 0,
    };
    Some(ExecRecord {
        pid: ids.ns_pid,
        ppid,
        host_pid: ids.tgid,
        path: String::from_utf8_lossy(&exec.path).into_owned(),
        argv: exec.argv,
        cwd: exec.cwd.map(|c| String::from_utf8_lossy(c.as_os_str().as_bytes()).into_owned()).unwrap_or_default(),
        truncated: exec.path_cut || exec.argv_cut,
        time: now_ms(),
    })
}

//! Exec observation for daemon sandboxes (docs/adr/0005-exec-observation.md).
//!
//! Every execve/execveat in a daemon sandbox stops on a seccomp user notification (the
//! filter of setup step 8b). The [`Watcher`], one host thread per sandbox, reads what the
//! caller asked to run (path, argv, cwd, parent) from /proc, checks the notification is
//! still valid, lets the exec continue and reports an [`ExecRecord`]. It also opens a
//! pidfd on each exec'd process and reports an [`ExitRecord`] when it ends, with the
//! status and CPU time only when it could read them from the zombie (see [`ExitRecord`]).
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
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use safehouse_sys::files::{self as sf, RESOLVE_IN_ROOT, RESOLVE_NO_MAGICLINKS};
use safehouse_sys::seccomp as sc;

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
/// cannot wait for it: it learns the exit from the pidfd (exact), and reads the status
/// and CPU time from /proc only while the process is still a zombie (its parent has not
/// reaped it yet). When it was too late, those fields are None, never guessed.
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

#[derive(Clone)]
pub struct Hooks {
    pub exec: ExecHook,
    pub exit: ExitHook,
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
        let (stop_r, stop_w) = safehouse_sys::fs::pipe()?;
        let stats = Arc::new(std::sync::Mutex::new(Stats::default()));
        let stats2 = stats.clone();
        let thread =
            std::thread::Builder::new().name(format!("execwatch-{name}")).stack_size(256 << 10).spawn(move || {
                let mut w = Watch { listener, hooks, exits: HashMap::new(), stats: stats2 };
                w.serve(&stop_r);
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
    start_time: u64,
    since: Instant,
}

struct Watch {
    listener: OwnedFd,
    hooks: Hooks,
    /// By host pid.
    exits: HashMap<i32, Followed>,
    stats: Arc<std::sync::Mutex<Stats>>,
}

impl Watch {
    fn serve(&mut self, stop: &OwnedFd) {
        loop {
            let mut fds: Vec<(i32, i16)> =
                vec![(self.listener.as_raw_fd(), libc::POLLIN), (stop.as_raw_fd(), libc::POLLIN)];
            let order: Vec<i32> = self.exits.keys().copied().collect();
            fds.extend(order.iter().map(|p| (self.exits[p].pidfd.as_raw_fd(), libc::POLLIN)));
            let Ok(ready) = safehouse_sys::process::poll_events(&fds, -1) else { return };
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
        }
    }

    fn bump(&self, f: impl FnOnce(&mut Stats)) {
        f(&mut self.stats.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// Reads the record, checks the notification still stands, answers CONTINUE, then
    /// reports. An exec is never refused here: observation only.
    fn handle(&mut self, n: sc::Notification) {
        let record = read_record(&n);
        let valid = sc::notif_id_valid(self.listener.as_fd(), n.id);
        let _ = sc::notif_respond(self.listener.as_fd(), n.id, None);
        match record {
            Some((rec, Found::File { start_time })) if valid => {
                self.follow(&rec, start_time);
                self.bump(|s| s.execs += 1);
                (self.hooks.exec)(rec);
            }
            Some((_, Found::Missing)) if valid => self.bump(|s| s.missing += 1),
            _ => self.bump(|s| s.dropped_invalid += 1),
        }
    }

    fn follow(&mut self, rec: &ExecRecord, start_time: u64) {
        if let Some(f) = self.exits.get_mut(&rec.host_pid) {
            if f.start_time == start_time {
                f.since = Instant::now(); // a process exec'ing again
                return;
            }
        }
        if self.exits.len() >= MAX_WATCHED_EXITS {
            self.bump(|s| s.exits_unwatched += 1);
            return;
        }
        match safehouse_sys::process::pidfd_open(rec.host_pid) {
            Ok(pidfd) => {
                self.exits.insert(rec.host_pid, Followed { pidfd, pid: rec.pid, start_time, since: Instant::now() });
            }
            Err(_) => self.bump(|s| s.exits_unwatched += 1),
        }
    }

    fn exited(&mut self, host_pid: i32, f: Followed) {
        // Still a zombie of the same process (same start time)? Then its stat is final.
        let zombie = read_stat(host_pid).filter(|s| s.state == 'Z' && s.start_time == f.start_time);
        let (exit_code, signal, cpu_ms) = match zombie {
            Some(s) => {
                let status = s.exit_status;
                let (code, sig) =
                    if status & 0x7f == 0 { (Some((status >> 8) & 0xff), None) } else { (None, Some(status & 0x7f)) };
                (code, sig, Some(s.cpu_ticks * 1000 / clock_ticks()))
            }
            None => (None, None, None),
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

enum Found {
    File { start_time: u64 },
    Missing,
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
    ppid: i32,
    start_time: u64,
    cpu_ticks: u64,
    exit_status: i32,
}

fn read_stat(pid: i32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = text.rsplit_once(") ")?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields counted from 3 (state) in proc(5).
    let at = |n: usize| f.get(n - 3).copied();
    let num = |n: usize| at(n).and_then(|v| v.parse::<u64>().ok());
    Some(Stat {
        state: at(3)?.chars().next()?,
        ppid: at(4)?.parse().ok()?,
        start_time: num(22)?,
        cpu_ticks: num(14)? + num(15)?,
        exit_status: at(52).and_then(|v| v.parse().ok()).unwrap_or(0),
    })
}

/// The process's pid in its innermost pid namespace and how deep that namespace is
/// (from the `NStgid:` line of /proc/PID/status).
fn ns_pid(pid: i32) -> Option<(i32, usize)> {
    ns_pid_and_tgid(pid).map(|(p, d, _)| (p, d))
}

/// [`ns_pid`] and the thread group id on the host (`Tgid:`), from one read of
/// /proc/PID/status (this runs while the exec waits).
fn ns_pid_and_tgid(pid: i32) -> Option<(i32, usize, Option<i32>)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let tgid = text.lines().find_map(|l| l.strip_prefix("Tgid:").and_then(|v| v.trim().parse().ok()));
    let line = text.lines().find(|l| l.starts_with("NStgid:"))?;
    let ids: Vec<i32> = line["NStgid:".len()..].split_whitespace().filter_map(|v| v.parse().ok()).collect();
    Some((*ids.last()?, ids.len(), tgid))
}

/// Builds the record of notification `n` (None: the caller vanished or is unreadable).
fn read_record(n: &sc::Notification) -> Option<(ExecRecord, Found)> {
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
    let mem = File::open(format!("/proc/{tid}/mem")).ok()?;
    let (path, path_cut) = read_cstr(&mem, path_ptr, libc::PATH_MAX as usize)?;
    let (argv, argv_cut) = read_argv(&mem, argv_ptr);
    let cwd = std::fs::read_link(format!("/proc/{tid}/cwd")).ok()?;
    let stat = read_stat(tid)?;
    let (pid, depth, tgid) = ns_pid_and_tgid(tid)?;
    let host_pid = tgid.unwrap_or(tid);
    let ppid = match ns_pid(stat.ppid) {
        Some((p, d)) if d == depth => p,
        _ => 0,
    };
    let found = if path.is_empty() && flags & libc::AT_EMPTY_PATH != 0 {
        Found::File { start_time: stat.start_time }
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
        if exists_in_root(tid, &full) {
            Found::File { start_time: stat.start_time }
        } else {
            Found::Missing
        }
    };
    let rec = ExecRecord {
        pid,
        ppid,
        host_pid,
        path: String::from_utf8_lossy(&path).into_owned(),
        argv,
        cwd: String::from_utf8_lossy(cwd.as_os_str().as_bytes()).into_owned(),
        truncated: path_cut || argv_cut,
        time: now_ms(),
    };
    Some((rec, found))
}

/// Whether `path` names a file inside the caller's root (symlinks and `..` stay in it).
fn exists_in_root(pid: i32, path: &[u8]) -> bool {
    let Ok(root) = File::open(format!("/proc/{pid}/root")) else { return false };
    let Ok(c) = CString::new(path) else { return false };
    sf::openat2(root.as_fd(), &c, libc::O_PATH, 0, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS).is_ok()
}

/// Reads bytes at `addr` until a NUL, at most `cap`; (bytes, cut). None if unreadable.
fn read_cstr(mem: &File, addr: u64, cap: usize) -> Option<(Vec<u8>, bool)> {
    let mut out: Vec<u8> = Vec::new();
    let mut at = addr;
    while out.len() < cap {
        let page_left = 4096 - (at % 4096) as usize;
        let mut buf = vec![0u8; page_left.min(cap - out.len())];
        let n = mem.read_at(&mut buf, at).ok()?;
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

/// Reads the argv array at `addr` within the caps; (args, cut).
fn read_argv(mem: &File, addr: u64) -> (Vec<String>, bool) {
    let mut args = Vec::new();
    let mut total = 0usize;
    if addr == 0 {
        return (args, false);
    }
    // The pointer array, MAX_ARGS + 1 entries (one more tells whether there are more).
    let mut ptrs = vec![0u8; (MAX_ARGS + 1) * 8];
    let mut got = 0;
    while got < ptrs.len() {
        match mem.read_at(&mut ptrs[got..], addr + got as u64) {
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
        let Some((bytes, cut)) = read_cstr(mem, p, cap) else { return (args, true) };
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
        let mem = File::open("/proc/self/mem").unwrap();
        let a = CString::new("hello").unwrap();
        let b = CString::new("x".repeat(MAX_ARG_BYTES + 10)).unwrap();
        let ptrs: Vec<u64> = vec![a.as_ptr() as u64, a.as_ptr() as u64, 0];
        let (args, cut) = read_argv(&mem, ptrs.as_ptr() as u64);
        assert_eq!((args, cut), (vec!["hello".to_string(), "hello".to_string()], false));
        let ptrs: Vec<u64> = vec![a.as_ptr() as u64, b.as_ptr() as u64, 0];
        let (args, cut) = read_argv(&mem, ptrs.as_ptr() as u64);
        assert!(cut);
        assert_eq!(args.len(), 2);
        assert_eq!(args[1].len(), MAX_ARG_BYTES);
        let many: Vec<u64> = std::iter::repeat_n(a.as_ptr() as u64, 100).chain([0]).collect();
        let (args, cut) = read_argv(&mem, many.as_ptr() as u64);
        assert!(cut);
        assert_eq!(args.len(), MAX_ARGS);
        let huge: Vec<u64> = std::iter::repeat_n(b.as_ptr() as u64, 20).chain([0]).collect();
        let (args, cut) = read_argv(&mem, huge.as_ptr() as u64);
        assert!(cut);
        assert!(args.iter().map(|a| a.len()).sum::<usize>() <= MAX_ARGV_BYTES);
        assert_eq!(read_argv(&mem, 0), (Vec::new(), false));
    }

    #[test]
    fn stat_and_ns_pid_of_self() {
        let me = std::process::id() as i32;
        let s = read_stat(me).unwrap();
        assert!(s.start_time > 0 && s.state != 'Z');
        assert_eq!(s.ppid, std::os::unix::process::parent_id() as i32);
        assert!(ns_pid(me).is_some());
    }
}

//! `[tools]` in a running sandbox.
//!
//! Sandbox side ([`expand`]): the allow patterns become files, in the sandbox's own view
//! (after the mount tree is built), each opened by path (so a symlink grants its target)
//! and granted EXECUTE by a file-level Landlock rule, with the ELF interpreter of each.
//!
//! Host side ([`Supervisor`]): with `tools.limits`, every execve/execveat of the sandbox
//! waits on a seccomp notification. The supervisor reads the path from the caller's
//! memory, resolves it inside the sandbox's root (never on the host), and when the file
//! is a limited tool moves the caller into a nested cgroup with the tool's memory cap and
//! arms its timeout, before letting the exec continue. Known gap: another thread of the
//! caller can rewrite the path between the check and the exec (docs/threat-model.md).

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;

use safehouse_policy::tools::{elf_interpreter, Pattern, ToolLimit, ToolsPlan};
use safehouse_sys::files::{self as sf, RESOLVE_IN_ROOT, RESOLVE_NO_MAGICLINKS};
use safehouse_sys::seccomp as sc;

use crate::cgroup::{self, Cgroup, CgroupSupport};

/// One executable the sandbox may run.
pub(crate) struct Grant {
    /// The sandbox path it was found at (for messages).
    pub path: String,
    /// O_PATH descriptor of the file itself (symlinks followed).
    pub fd: OwnedFd,
    pub dev: u64,
    pub ino: u64,
    /// Index into `tools.limits` when this file is a limited tool.
    pub limit: Option<usize>,
}

/// Most files one sandbox grants (a glob over a huge directory is a mistake).
const MAX_GRANTS: usize = 16_384;

/// Expands `tools.allow` in this (the sandbox's) filesystem view: the files each pattern
/// names, plus the ELF interpreter of each. A pattern that matches no file is an error
/// naming it, so a typo never silently grants nothing.
pub(crate) fn expand(tools: &ToolsPlan) -> Result<Vec<Grant>, String> {
    let mut grants: Vec<Grant> = Vec::new();
    for text in &tools.allow {
        let pattern = Pattern::parse("tools.allow", text).map_err(|e| e.to_string())?;
        let limit = tools.limits.iter().position(|l| &l.pattern == text);
        let before = grants.len();
        if pattern.is_glob() {
            let entries = std::fs::read_dir(&pattern.dir)
                .map_err(|e| format!("tools.allow: {text}: cannot list {} in the sandbox: {e}", pattern.dir))?;
            let mut names: Vec<String> = entries
                .flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| pattern.matches(n))
                .collect();
            names.sort();
            for name in names {
                // Directories, devices and dangling links are not executables: skipped.
                if let Ok(grant) = open_file(&pattern.join(&name), limit) {
                    push(&mut grants, grant)?;
                }
            }
        } else {
            let grant = open_file(text, limit).map_err(|e| format!("tools.allow: {text}: {e}"))?;
            push(&mut grants, grant)?;
        }
        if grants.len() == before {
            return Err(format!(
                "tools.allow: {text} matches no file in the sandbox; check the pattern (paths are the sandbox's, e.g. /usr/bin/python3)"
            ));
        }
    }
    // The kernel opens a dynamic binary's interpreter with exec semantics: grant it too.
    let mut interps: Vec<String> = Vec::new();
    for g in &grants {
        let Ok(mut f) = File::open(format!("/proc/self/fd/{}", g.fd.as_raw_fd())) else { continue };
        if let Ok(Some(interp)) = elf_interpreter(&mut f) {
            if !interps.contains(&interp) {
                interps.push(interp);
            }
        }
    }
    for interp in interps {
        match open_file(&interp, None) {
            Ok(grant) => push(&mut grants, grant)?,
            // Exec of that tool then fails with ENOENT, as it would outside.
            Err(_) => continue,
        }
    }
    Ok(grants)
}

fn push(grants: &mut Vec<Grant>, grant: Grant) -> Result<(), String> {
    if let Some(same) = grants.iter_mut().find(|g| (g.dev, g.ino) == (grant.dev, grant.ino)) {
        // One file reached by two patterns: the first limit wins (patterns in order).
        same.limit = same.limit.or(grant.limit);
        return Ok(());
    }
    if grants.len() >= MAX_GRANTS {
        return Err(format!("tools.allow: more than {MAX_GRANTS} files; list fewer tools"));
    }
    grants.push(grant);
    Ok(())
}

/// Opens `path` O_PATH, following symlinks; a regular file or an error.
fn open_file(path: &str, limit: Option<usize>) -> Result<Grant, String> {
    let c = CString::new(path).map_err(|_| "contains a NUL byte".to_string())?;
    let cwd = File::open("/").map_err(|e| e.to_string())?;
    let fd = sf::openat(cwd.as_fd(), &c, libc::O_PATH, 0).map_err(|e| match e.raw_os_error() {
        Some(libc::ENOENT) => "no such file in the sandbox".to_string(),
        _ => e.to_string(),
    })?;
    let st = sf::fstat(fd.as_fd()).map_err(|e| e.to_string())?;
    if st.file_type() != libc::S_IFREG {
        return Err("not a regular file; list executables, not directories".into());
    }
    Ok(Grant { path: path.to_string(), fd, dev: st.dev, ino: st.ino, limit })
}

/// The limited tools' files, as the host side needs them: `(limit index, dev, ino)`,
/// sent as text lines after a `T`.
pub(crate) fn encode_table(grants: &[Grant]) -> Vec<u8> {
    let mut out = b"T\n".to_vec();
    for g in grants {
        if let Some(i) = g.limit {
            out.extend(format!("{i} {} {}\n", g.dev, g.ino).into_bytes());
        }
    }
    out
}

/// Parses [`encode_table`]'s output; `limits` bounds the indexes.
pub(crate) fn decode_table(msg: &[u8], limits: usize) -> Result<BTreeMap<(u64, u64), usize>, String> {
    let text = std::str::from_utf8(msg).map_err(|_| "tool table is not text".to_string())?;
    let body = text.strip_prefix("T\n").ok_or("expected the tool table, got another message")?;
    let mut table = BTreeMap::new();
    for line in body.lines() {
        let f: Vec<u64> =
            line.split(' ').map(|x| x.parse::<u64>()).collect::<Result<_, _>>().map_err(|_| "bad tool table line")?;
        match f.as_slice() {
            [i, dev, ino] if (*i as usize) < limits => {
                table.insert((*dev, *ino), *i as usize);
            }
            _ => return Err("bad tool table line".into()),
        }
    }
    Ok(table)
}

/// What happened to one limited tool run (in the result record).
#[derive(Debug, Clone, Serialize)]
pub struct ToolEvent {
    /// The `tools.allow` pattern it matched.
    pub tool: String,
    /// Its host pid at exec time.
    pub pid: i32,
    /// Killed at its `timeout`.
    pub timed_out: bool,
    /// Killed by the OOM killer at its `memory` cap.
    pub oom_killed: bool,
}

/// The host-side thread answering exec notifications. Stop it after the sandbox is gone.
pub(crate) struct Supervisor {
    stop: OwnedFd,
    thread: JoinHandle<Vec<ToolEvent>>,
}

impl Supervisor {
    pub(crate) fn start(
        listener: OwnedFd,
        table: BTreeMap<(u64, u64), usize>,
        limits: Vec<ToolLimit>,
        support: CgroupSupport,
        sandbox_cgroup: String,
    ) -> std::io::Result<Supervisor> {
        let (stop_r, stop_w) = safehouse_sys::fs::pipe()?;
        let thread = std::thread::Builder::new().name("tool-limits".into()).spawn(move || {
            let parent = cgroup::open(&support, &sandbox_cgroup).ok();
            let mut w = Watch { listener, table, limits, parent, tools: Vec::new(), events: Vec::new(), next: 0 };
            w.serve(&stop_r);
            w.finish()
        })?;
        Ok(Supervisor { stop: stop_w, thread })
    }

    /// Stops the thread (killing what is left in tool cgroups) and returns the events.
    pub(crate) fn stop(self) -> Vec<ToolEvent> {
        drop(self.stop);
        self.thread.join().unwrap_or_default()
    }
}

/// One nested cgroup of a running tool.
struct ToolCgroup {
    /// None once the tool has ended and its cgroup is removed.
    cg: Option<Box<dyn Cgroup>>,
    /// Index of the enclosing tool cgroup (a limited tool started by another).
    parent: Option<usize>,
    limit: usize,
    pid: i32,
    deadline: Option<Instant>,
    timed_out: bool,
}

impl ToolCgroup {
    fn live(&self) -> Option<&dyn Cgroup> {
        self.cg.as_deref()
    }
}

struct Watch {
    listener: OwnedFd,
    table: BTreeMap<(u64, u64), usize>,
    limits: Vec<ToolLimit>,
    parent: Option<Box<dyn Cgroup>>,
    tools: Vec<ToolCgroup>,
    events: Vec<ToolEvent>,
    next: u64,
}

impl Watch {
    fn serve(&mut self, stop: &OwnedFd) {
        loop {
            let now = Instant::now();
            let wait = self
                .tools
                .iter()
                .filter(|t| t.live().is_some() && !t.timed_out)
                .filter_map(|t| t.deadline)
                .map(|d| d.saturating_duration_since(now))
                .min();
            // Also wake now and then to remove the cgroups of tools that have ended.
            let wait_ms = wait.unwrap_or(Duration::from_millis(500)).min(Duration::from_millis(500));
            let ms = (wait_ms.as_millis() as i32).max(if wait == Some(Duration::ZERO) { 0 } else { 1 });
            let Ok(ready) = safehouse_sys::process::poll_readable(&[self.listener.as_raw_fd(), stop.as_raw_fd()], ms)
            else {
                return;
            };
            if ready[1] {
                return;
            }
            if ready[0] {
                match sc::notif_recv(self.listener.as_fd()) {
                    Ok(n) => self.handle(n),
                    Err(_) if safehouse_sys::process::hung_up(&self.listener) => return,
                    Err(_) => {}
                }
            }
            self.expire();
            self.reap();
        }
    }

    /// Decides one exec: CONTINUE, after moving a limited tool into its cgroup; a refusal
    /// (with the errno the exec would have failed with) when it cannot tell what runs.
    fn handle(&mut self, n: sc::Notification) {
        let verdict = match self.identify(&n) {
            Ok(None) => None,
            Ok(Some(limit)) => self.confine(n.pid as i32, limit).err(),
            Err(Errno(e)) => Some(e),
        };
        if !sc::notif_id_valid(self.listener.as_fd(), n.id) {
            return; // the caller is gone
        }
        let _ = sc::notif_respond(self.listener.as_fd(), n.id, verdict);
    }

    /// Which limited tool (index) the exec runs, if any.
    fn identify(&self, n: &sc::Notification) -> Result<Option<usize>, Errno> {
        if n.pid == 0 {
            return Err(Errno(libc::EPERM));
        }
        let pid = n.pid;
        let (dirfd, ptr, flags) = match n.nr as libc::c_long {
            libc::SYS_execve => (libc::AT_FDCWD, n.args[0], 0),
            libc::SYS_execveat => (n.args[0] as i32, n.args[1], n.args[4] as i32),
            _ => return Ok(None),
        };
        let path = read_string(pid, ptr)?;
        // The memory read above may have raced with the caller's death and pid reuse.
        if !sc::notif_id_valid(self.listener.as_fd(), n.id) {
            return Err(Errno(libc::ESRCH));
        }
        let st = if path.is_empty() && flags & libc::AT_EMPTY_PATH != 0 {
            // execveat(fd, "", AT_EMPTY_PATH): the file is the descriptor itself.
            std::fs::metadata(format!("/proc/{pid}/fd/{dirfd}")).map_err(errno)?
        } else {
            let full = if path.starts_with(b"/") {
                path
            } else {
                let base = if dirfd == libc::AT_FDCWD {
                    std::fs::read_link(format!("/proc/{pid}/cwd"))
                } else {
                    std::fs::read_link(format!("/proc/{pid}/fd/{dirfd}"))
                }
                .map_err(errno)?;
                use std::os::unix::ffi::OsStrExt;
                let mut full = base.as_os_str().as_bytes().to_vec();
                full.push(b'/');
                full.extend_from_slice(&path);
                full
            };
            return self.lookup_in_root(pid, &full);
        };
        use std::os::unix::fs::MetadataExt;
        Ok(self.table.get(&(st.dev(), st.ino())).copied())
    }

    /// Resolves `path` inside the caller's root (symlinks and `..` stay in it).
    fn lookup_in_root(&self, pid: u32, path: &[u8]) -> Result<Option<usize>, Errno> {
        let root = File::open(format!("/proc/{pid}/root")).map_err(errno)?;
        let c = CString::new(path).map_err(|_| Errno(libc::EINVAL))?;
        let fd = sf::openat2(root.as_fd(), &c, libc::O_PATH, 0, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)
            .map_err(|e| Errno(e.raw_os_error().unwrap_or(libc::EACCES)))?;
        let st = sf::fstat(fd.as_fd()).map_err(|e| Errno(e.raw_os_error().unwrap_or(libc::EACCES)))?;
        Ok(self.table.get(&(st.dev, st.ino)).copied())
    }

    /// Moves `pid` into a new cgroup nested in the sandbox's (or in its current tool's, so
    /// a limited tool cannot shed its limits by starting another) and arms the timeout.
    fn confine(&mut self, pid: i32, limit: usize) -> Result<(), i32> {
        let l = self.limits[limit].clone();
        let within = self.current_tool(pid);
        self.next += 1;
        let name = format!("tool-{}", self.next);
        let limits = cgroup::Limits { memory_bytes: l.memory, pids: None, cpus: None, only_limited: false };
        let made = match within {
            Some(i) => match self.tools[i].live() {
                Some(cg) => cg.child(&name, &limits),
                None => return Err(libc::EACCES),
            },
            None => match &self.parent {
                Some(p) => p.child(&name, &limits),
                None => return Err(libc::EACCES),
            },
        };
        let cg = made.map_err(|e| {
            eprintln!("safehouse: cannot apply tools.limits for {}: {e}; the exec is refused", l.pattern);
            libc::EACCES
        })?;
        if let Err(e) = cg.add_pid(pid) {
            eprintln!("safehouse: cannot apply tools.limits for {}: {e}; the exec is refused", l.pattern);
            let _ = cg.destroy();
            return Err(libc::EACCES);
        }
        self.tools.push(ToolCgroup {
            cg: Some(cg),
            parent: within,
            limit,
            pid,
            deadline: l.timeout.map(|t| Instant::now() + t),
            timed_out: false,
        });
        Ok(())
    }

    /// The live tool cgroup `pid` is in, from its /proc/PID/cgroup.
    fn current_tool(&self, pid: i32) -> Option<usize> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
        let leaf = text.lines().filter_map(|l| l.rsplit('/').next()).find(|c| c.starts_with("tool-"))?;
        self.tools.iter().position(|t| t.live().is_some_and(|cg| cg.name().rsplit('/').next() == Some(leaf)))
    }

    /// Kills tools past their deadline, with everything nested in them.
    fn expire(&mut self) {
        let now = Instant::now();
        for i in 0..self.tools.len() {
            let t = &self.tools[i];
            if t.live().is_none() || t.timed_out || t.deadline.is_none_or(|d| d > now) {
                continue;
            }
            self.tools[i].timed_out = true;
            // Outermost first: a tool waiting for a nested one must die by the signal, not
            // see its child die first and exit on its own.
            for j in self.subtree(i) {
                if let Some(cg) = self.tools[j].live() {
                    let _ = cg.kill_all();
                }
            }
        }
    }

    /// `i` and every tool cgroup nested in it, parents first.
    fn subtree(&self, i: usize) -> Vec<usize> {
        let mut out = vec![i];
        for (j, t) in self.tools.iter().enumerate().skip(i + 1) {
            if t.parent.is_some_and(|p| out.contains(&p)) {
                out.push(j);
            }
        }
        out
    }

    /// Removes the cgroups of tools that have ended (children before parents).
    fn reap(&mut self) {
        for i in (0..self.tools.len()).rev() {
            let has_live_child = self.tools.iter().any(|t| t.live().is_some() && t.parent == Some(i));
            if has_live_child || !self.tools[i].live().is_some_and(|cg| cg.is_empty()) {
                continue;
            }
            self.retire(i);
        }
        while self.tools.last().is_some_and(|t| t.live().is_none()) {
            self.tools.pop();
        }
    }

    fn retire(&mut self, i: usize) {
        let t = &mut self.tools[i];
        let Some(cg) = t.cg.take() else { return };
        let oom_killed = cg.oom_kills().unwrap_or(0) > 0;
        self.events.push(ToolEvent {
            tool: self.limits[t.limit].pattern.clone(),
            pid: t.pid,
            timed_out: t.timed_out,
            oom_killed,
        });
        let _ = cg.destroy();
    }

    /// The sandbox is gone: kill and remove what is left, children first.
    fn finish(mut self) -> Vec<ToolEvent> {
        for i in (0..self.tools.len()).rev() {
            if let Some(cg) = self.tools[i].live() {
                let _ = cg.kill_all();
                self.retire(i);
            }
        }
        self.events.sort_by_key(|e| e.pid);
        self.events
    }
}

struct Errno(i32);

fn errno(e: std::io::Error) -> Errno {
    Errno(e.raw_os_error().unwrap_or(libc::EACCES))
}

/// Reads a NUL-terminated string (at most PATH_MAX) at `addr` in process `pid`, page by page.
fn read_string(pid: u32, addr: u64) -> Result<Vec<u8>, Errno> {
    let mem = File::open(format!("/proc/{pid}/mem")).map_err(errno)?;
    let mut out: Vec<u8> = Vec::new();
    let mut at = addr;
    while out.len() < libc::PATH_MAX as usize {
        let page_left = 4096 - (at % 4096) as usize;
        let mut buf = vec![0u8; page_left.min(libc::PATH_MAX as usize - out.len())];
        let n = mem.read_at(&mut buf, at).map_err(|_| Errno(libc::EFAULT))?;
        if n == 0 {
            return Err(Errno(libc::EFAULT));
        }
        if let Some(end) = buf[..n].iter().position(|&b| b == 0) {
            out.extend_from_slice(&buf[..end]);
            return Ok(out);
        }
        out.extend_from_slice(&buf[..n]);
        at += n as u64;
    }
    Err(Errno(libc::ENAMETOOLONG))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_table_decodes_strictly() {
        let t = decode_table(b"T\n0 2049 1234\n1 2049 99\n", 2).unwrap();
        assert_eq!(t.get(&(2049, 1234)), Some(&0));
        assert_eq!(t.get(&(2049, 99)), Some(&1));
        assert!(decode_table(b"T\n", 0).unwrap().is_empty());
        for bad in [&b"X\n"[..], b"T\n2 1 1\n", b"T\n0 1\n", b"T\n0 a 1\n", b"T\n0 1 1 1\n"] {
            assert!(decode_table(bad, 2).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }
}

//! `[tools]` in a running sandbox.
//!
//! Sandbox side ([`expand`]): the allow patterns become files, in the sandbox's own view
//! (after the mount tree is built), each opened by path (so a symlink grants its target)
//! and granted EXECUTE by a file-level Landlock rule, with the ELF interpreter of each.
//!
//! Host side ([`Supervisor`], `safehouse run`): with `tools.limits`, every execve/execveat
//! of the sandbox waits on a seccomp notification. The supervisor reads the path from the
//! caller's memory, resolves it inside the sandbox's root (never on the host), and when
//! the file is a limited tool has the [`Limiter`] (crate::toollimit, shared with the
//! daemon's exec watcher) move the caller into a nested cgroup with the tool's memory cap
//! and arm its timeout, before letting the exec continue. Known gap: another thread of the
//! caller can rewrite the path between the check and the exec (docs/threat-model.md).

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::thread::JoinHandle;
use std::time::Duration;

use safehouse_policy::tools::{elf_interpreter, Pattern, ToolLimit, ToolsPlan};
use safehouse_sys::files::{self as sf, RESOLVE_IN_ROOT, RESOLVE_NO_MAGICLINKS};
use safehouse_sys::seccomp as sc;

use crate::cgroup::CgroupSupport;
pub use crate::toollimit::ToolEvent;
use crate::toollimit::{Limiter, ToolTable};

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

/// The limited tools' files, as the host side needs them (crate::toollimit::encode_table).
pub(crate) fn encode_table(grants: &[Grant]) -> Vec<u8> {
    crate::toollimit::encode_table(grants.iter().filter_map(|g| g.limit.map(|i| (i, g.dev, g.ino))))
}

/// The host-side thread answering exec notifications. Stop it after the sandbox is gone.
pub(crate) struct Supervisor {
    stop: OwnedFd,
    thread: JoinHandle<Vec<ToolEvent>>,
}

impl Supervisor {
    pub(crate) fn start(
        listener: OwnedFd,
        table: ToolTable,
        limits: Vec<ToolLimit>,
        support: CgroupSupport,
        sandbox_cgroup: String,
    ) -> std::io::Result<Supervisor> {
        let (stop_r, stop_w) = safehouse_sys::fs::pipe()?;
        let thread = std::thread::Builder::new().name("tool-limits".into()).spawn(move || {
            let limiter = Limiter::new(table, limits, &support, &sandbox_cgroup);
            let mut w = Watch { listener, limiter };
            w.serve(&stop_r);
            w.limiter.finish()
        })?;
        Ok(Supervisor { stop: stop_w, thread })
    }

    /// Stops the thread (killing what is left in tool cgroups) and returns the events.
    pub(crate) fn stop(self) -> Vec<ToolEvent> {
        drop(self.stop);
        self.thread.join().unwrap_or_default()
    }
}

struct Watch {
    listener: OwnedFd,
    limiter: Limiter,
}

impl Watch {
    fn serve(&mut self, stop: &OwnedFd) {
        loop {
            let wait = self.limiter.next_due();
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
            self.limiter.expire();
            self.limiter.reap();
        }
    }

    /// Decides one exec: CONTINUE, after moving a limited tool into its cgroup; a refusal
    /// (with the errno the exec would have failed with) when it cannot tell what runs.
    fn handle(&mut self, n: sc::Notification) {
        let verdict = match self.identify(&n) {
            Ok(None) => None,
            Ok(Some(limit)) => self.limiter.confine(n.pid as i32, limit).err(),
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
        Ok(self.limiter.tool_of(st.dev(), st.ino()))
    }

    /// Resolves `path` inside the caller's root (symlinks and `..` stay in it).
    fn lookup_in_root(&self, pid: u32, path: &[u8]) -> Result<Option<usize>, Errno> {
        let root = File::open(format!("/proc/{pid}/root")).map_err(errno)?;
        let c = CString::new(path).map_err(|_| Errno(libc::EINVAL))?;
        let fd = sf::openat2(root.as_fd(), &c, libc::O_PATH, 0, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)
            .map_err(|e| Errno(e.raw_os_error().unwrap_or(libc::EACCES)))?;
        let st = sf::fstat(fd.as_fd()).map_err(|e| Errno(e.raw_os_error().unwrap_or(libc::EACCES)))?;
        Ok(self.limiter.tool_of(st.dev, st.ino))
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

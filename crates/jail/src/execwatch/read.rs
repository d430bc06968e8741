//! Reading one intercepted exec: what the caller asked to run (path, argv), from where
//! (its working directory), who it is (ids), and which file the path names, resolved
//! beneath the sandbox's root with `openat2(RESOLVE_IN_ROOT)` (never on the host). The one
//! reader of the pipeline ([`super::Watcher`]), for `safehouse run` and the daemon alike.
//!
//! Everything here runs while the caller waits on its notification, so it reads only what
//! was asked for ([`Want`]): each /proc read costs 10–30 µs on a small VM.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use safehouse_sys::files::{self as sf, RESOLVE_IN_ROOT, RESOLVE_NO_MAGICLINKS};
use safehouse_sys::process::process_vm_read;
use safehouse_sys::seccomp::Notification;

use super::{MAX_ARGS, MAX_ARGV_BYTES, MAX_ARG_BYTES};

/// What to read besides the path and the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Want {
    /// The arguments and the working directory (for the record).
    pub record: bool,
    /// The process's ids (the record, and moving a limited tool's process).
    pub ids: bool,
    /// The file's (dev, ino) while the caller waits, where it cannot be had later (an
    /// `execveat(fd, "", AT_EMPTY_PATH)`: the descriptor is gone after the exec).
    pub identify: bool,
}

/// The file an exec names.
#[derive(Debug)]
pub(crate) enum Target {
    /// Opened `O_PATH` beneath the root: its (dev, ino) can be read after the answer.
    Open(OwnedFd),
    /// `execveat(fd, "", AT_EMPTY_PATH)`: the caller's descriptor, (dev, ino) if identified.
    Descriptor(Option<(u64, u64)>),
    /// Resolving the path beneath the root failed with this errno (ENOENT: a $PATH
    /// search's miss).
    Missing(i32),
}

impl Target {
    pub(crate) fn found(&self) -> bool {
        !matches!(self, Target::Missing(_))
    }

    /// The file's (device, inode), or the errno an exec of it is refused with when it
    /// cannot be told.
    pub(crate) fn id(&self) -> Result<(u64, u64), i32> {
        match self {
            Target::Open(fd) => sf::fstat(fd.as_fd()).map(|st| (st.dev, st.ino)).map_err(errno),
            Target::Descriptor(Some(id)) => Ok(*id),
            Target::Descriptor(None) => Err(libc::EACCES),
            Target::Missing(e) => Err(*e),
        }
    }
}

/// One exec, as read while its caller waited.
#[derive(Debug)]
pub(crate) struct Exec {
    pub path: Vec<u8>,
    pub path_cut: bool,
    /// Empty unless [`Want::record`].
    pub argv: Vec<String>,
    pub argv_cut: bool,
    /// The caller's working directory, in the sandbox's view ([`Want::record`], or a
    /// relative path).
    pub cwd: Option<PathBuf>,
    pub ids: Option<Ids>,
    pub target: Target,
}

/// Reads notification `n`'s exec; `root` is the sandbox's root directory. Err: the errno
/// to refuse with when the caller cannot be read (it vanished, or its path pointer is
/// bad: EFAULT, as the kernel would answer).
pub(crate) fn read(n: &Notification, root: &File, want: Want) -> Result<Exec, i32> {
    if n.pid == 0 {
        return Err(libc::EPERM);
    }
    let (dirfd, path_ptr, argv_ptr, flags) = match n.nr as libc::c_long {
        libc::SYS_execve => (libc::AT_FDCWD, n.args[0], n.args[1], 0),
        libc::SYS_execveat => (n.args[0] as i32, n.args[1], n.args[2], n.args[4] as i32),
        _ => return Err(libc::ENOSYS),
    };
    // n.pid is the calling thread; the process is its thread group.
    let tid = n.pid as i32;
    let (path, path_cut) = read_cstr(tid, path_ptr, libc::PATH_MAX as usize).ok_or(libc::EFAULT)?;
    let (argv, argv_cut) = if want.record { read_argv(tid, argv_ptr) } else { (Vec::new(), false) };
    let relative = !path.starts_with(b"/") && !path.is_empty();
    let cwd = if want.record || (relative && dirfd == libc::AT_FDCWD) {
        Some(std::fs::read_link(format!("/proc/{tid}/cwd")).map_err(errno)?)
    } else {
        None
    };
    let ids = if want.ids || want.record { Some(read_ids(tid).ok_or(libc::ESRCH)?) } else { None };
    let target = if path.is_empty() && flags & libc::AT_EMPTY_PATH != 0 {
        // execveat(fd, "", AT_EMPTY_PATH): the file is the descriptor itself.
        let id = if want.identify {
            use std::os::unix::fs::MetadataExt;
            let st = std::fs::metadata(format!("/proc/{tid}/fd/{dirfd}")).map_err(errno)?;
            Some((st.dev(), st.ino()))
        } else {
            None
        };
        Target::Descriptor(id)
    } else {
        let full = if !relative {
            path.clone()
        } else {
            let base = match (&cwd, dirfd) {
                (Some(cwd), libc::AT_FDCWD) => cwd.clone(),
                _ => std::fs::read_link(format!("/proc/{tid}/fd/{dirfd}")).map_err(errno)?,
            };
            let mut full = base.as_os_str().as_bytes().to_vec();
            full.push(b'/');
            full.extend_from_slice(&path);
            full
        };
        look_up_in_root(root, &full)
    };
    Ok(Exec { path, path_cut, argv, argv_cut, cwd, ids, target })
}

fn errno(e: std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EACCES)
}

/// `path` beneath `root` (symlinks and `..` stay in it), opened O_PATH: the file itself is
/// never opened (a path the sandbox chose may name a FIFO or a device).
fn look_up_in_root(root: &File, path: &[u8]) -> Target {
    let Ok(c) = CString::new(path) else { return Target::Missing(libc::EINVAL) };
    match sf::openat2(root.as_fd(), &c, libc::O_PATH, 0, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS) {
        Ok(fd) => Target::Open(fd),
        Err(e) => Target::Missing(errno(e)),
    }
}

/// Reads bytes at `addr` in process `pid` until a NUL, at most `cap`; (bytes, cut). None
/// if unreadable.
pub(crate) fn read_cstr(pid: i32, addr: u64, cap: usize) -> Option<(Vec<u8>, bool)> {
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
pub(crate) fn read_argv(pid: i32, addr: u64) -> (Vec<String>, bool) {
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

/// What the watcher needs from /proc/PID/stat.
pub(crate) struct Stat {
    pub state: char,
    pub start_time: u64,
    pub cpu_ticks: u64,
    pub exit_status: i32,
}

pub(crate) fn read_stat(pid: i32) -> Option<Stat> {
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
pub(crate) struct Ids {
    /// Thread group id (the process) on the host.
    pub tgid: i32,
    /// Its parent on the host.
    pub ppid: i32,
    /// The process in its innermost pid namespace (`NStgid:`'s last entry).
    pub ns_pid: i32,
    /// How deep that namespace is (entries of `NStgid:`).
    pub depth: usize,
}

pub(crate) fn read_ids(pid: i32) -> Option<Ids> {
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

    /// An execve notification of this process (as a thread of the test) for `path`.
    fn notification(path: &CString, argv: &[u64]) -> Notification {
        Notification {
            id: 0,
            pid: std::process::id(),
            nr: libc::SYS_execve as i32,
            arch: 0,
            args: [path.as_ptr() as u64, argv.as_ptr() as u64, 0, 0, 0, 0],
        }
    }

    #[test]
    fn an_exec_is_read_and_its_file_resolved_beneath_the_root() {
        let dir = std::env::temp_dir().join(format!("safehouse-read-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        std::fs::write(dir.join("bin/tool"), b"").unwrap();
        let root = File::open(&dir).unwrap();
        let mine = {
            use std::os::unix::fs::MetadataExt;
            let m = std::fs::metadata(dir.join("bin/tool")).unwrap();
            (m.dev(), m.ino())
        };
        let path = CString::new("/bin/../../bin/tool").unwrap();
        let arg = CString::new("tool").unwrap();
        let argv = [arg.as_ptr() as u64, 0];
        let n = notification(&path, &argv);
        let lean = Want { record: false, ids: false, identify: false };
        let e = read(&n, &root, lean).unwrap();
        // `..` stays in the root: the sandbox's /bin/tool, not the host's.
        assert_eq!(e.target.id(), Ok(mine));
        assert!(e.argv.is_empty() && e.cwd.is_none() && e.ids.is_none(), "{e:?}");
        let full = Want { record: true, ids: true, identify: true };
        let e = read(&n, &root, full).unwrap();
        assert_eq!((e.path.as_slice(), e.argv.as_slice()), (path.as_bytes(), ["tool".to_string()].as_slice()));
        assert_eq!(e.ids.unwrap().tgid, std::process::id() as i32);
        assert_eq!(e.cwd, Some(std::env::current_dir().unwrap()));
        let missing = CString::new("/bin/none").unwrap();
        let e = read(&notification(&missing, &argv), &root, lean).unwrap();
        assert!(!e.target.found() && e.target.id() == Err(libc::ENOENT));
        // A bad path pointer: EFAULT, as the kernel would answer.
        let mut bad = notification(&path, &argv);
        bad.args[0] = 8;
        assert_eq!(read(&bad, &root, lean).unwrap_err(), libc::EFAULT);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

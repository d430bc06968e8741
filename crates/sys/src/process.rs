//! Process creation, waiting, signals and limits.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use crate::{check, check_int};

pub use libc::{
    CLONE_NEWCGROUP, CLONE_NEWIPC, CLONE_NEWNET, CLONE_NEWNS, CLONE_NEWPID, CLONE_NEWUSER, CLONE_NEWUTS, SIGKILL,
    SIGTERM,
};

const CLONE_PIDFD: u64 = 0x1000;
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// What `clone_process` returns in each process.
pub enum Forked {
    Parent { pid: i32, pidfd: OwnedFd },
    Child,
}

fn single_threaded() -> bool {
    std::fs::read_dir("/proc/self/task").map(|d| d.count() == 1).unwrap_or(false)
}

/// clone3 without CLONE_VM: a fork that can enter new namespaces and (cgroup v2) start in
/// a given cgroup, returning a pidfd to the parent. Refused in a multi-threaded process,
/// where the child could inherit a lock held by another thread.
pub fn clone_process(ns_flags: libc::c_int, cgroup: Option<BorrowedFd<'_>>) -> io::Result<Forked> {
    if !single_threaded() {
        return Err(io::Error::other("clone_process must be called from a single-threaded process"));
    }
    let mut pidfd: RawFd = -1;
    let mut args = CloneArgs {
        flags: ns_flags as u64 | CLONE_PIDFD,
        pidfd: &mut pidfd as *mut RawFd as u64,
        exit_signal: libc::SIGCHLD as u64,
        ..Default::default()
    };
    if let Some(cg) = cgroup {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = cg.as_raw_fd() as u64;
    }
    // SAFETY: `args` is a valid clone_args of the size passed; `pidfd` is writable and
    // alive. Without CLONE_VM the child gets a copy of this (single-threaded) address
    // space, like fork.
    let pid = check(unsafe {
        libc::syscall(libc::SYS_clone3, &mut args as *mut CloneArgs, std::mem::size_of::<CloneArgs>())
    })?;
    if pid == 0 {
        Ok(Forked::Child)
    } else {
        // SAFETY: with CLONE_PIDFD the kernel stored a new descriptor we own.
        Ok(Forked::Parent { pid: pid as i32, pidfd: unsafe { OwnedFd::from_raw_fd(pidfd) } })
    }
}

/// Plain fork, used inside the sandbox by its single-threaded init.
pub fn fork() -> io::Result<Option<i32>> {
    // SAFETY: the caller (the sandbox init) is single-threaded, so the child can keep
    // running Rust code.
    let pid = check_int(unsafe { libc::fork() })?;
    Ok(if pid == 0 { None } else { Some(pid) })
}

/// execve; returns only on failure.
pub fn execve(path: &CString, argv: &[CString], envp: &[CString]) -> io::Error {
    let mut a: Vec<*const libc::c_char> = argv.iter().map(|s| s.as_ptr()).collect();
    a.push(std::ptr::null());
    let mut e: Vec<*const libc::c_char> = envp.iter().map(|s| s.as_ptr()).collect();
    e.push(std::ptr::null());
    // SAFETY: `path`, and every string in the NULL-terminated arrays, are NUL-terminated
    // and alive for the call.
    unsafe { libc::execve(path.as_ptr(), a.as_ptr(), e.as_ptr()) };
    io::Error::last_os_error()
}

/// _exit(2): leave without running destructors or atexit handlers (safe after fork).
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit never returns and touches no Rust state.
    unsafe { libc::_exit(code) }
}

/// Exit status of a reaped child and its (and its reaped descendants') resource use.
#[derive(Debug, Clone, Copy)]
pub struct Reaped {
    pub pid: i32,
    pub status: i32,
    pub user_us: u64,
    pub sys_us: u64,
    pub maxrss_kib: u64,
}

impl Reaped {
    pub fn exit_code(&self) -> Option<i32> {
        libc::WIFEXITED(self.status).then(|| libc::WEXITSTATUS(self.status))
    }
    pub fn signal(&self) -> Option<i32> {
        libc::WIFSIGNALED(self.status).then(|| libc::WTERMSIG(self.status))
    }
}

/// wait4 on `pid` (-1 for any child); `nohang` returns Ok(None) if nothing exited.
pub fn wait4(pid: i32, nohang: bool) -> io::Result<Option<Reaped>> {
    let mut status = 0;
    // SAFETY: rusage is plain data; zeroed is valid.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let flags = if nohang { libc::WNOHANG } else { 0 } | libc::__WALL;
    loop {
        // SAFETY: `status` and `ru` are valid for the kernel to write.
        let r = unsafe { libc::wait4(pid, &mut status, flags, &mut ru) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(e);
        }
        if r == 0 {
            return Ok(None);
        }
        let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
        return Ok(Some(Reaped {
            pid: r,
            status,
            user_us: us(ru.ru_utime),
            sys_us: us(ru.ru_stime),
            maxrss_kib: ru.ru_maxrss as u64,
        }));
    }
}

/// CPU time the calling thread has used, in nanoseconds.
pub fn thread_cpu_ns() -> u64 {
    // SAFETY: timespec is plain data; zeroed is valid.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: `ts` is writable and outlives the call; the clock id is a constant.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if r != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

pub fn kill(pid: i32, sig: i32) -> io::Result<()> {
    // SAFETY: integer-only syscall.
    check_int(unsafe { libc::kill(pid, sig) })?;
    Ok(())
}

pub fn pidfd_send_signal(pidfd: &OwnedFd, sig: i32) -> io::Result<()> {
    // SAFETY: integer arguments and a null siginfo pointer, which the kernel allows.
    check(unsafe {
        libc::syscall(libc::SYS_pidfd_send_signal, pidfd.as_raw_fd(), sig, std::ptr::null::<libc::siginfo_t>(), 0u32)
    })?;
    Ok(())
}

pub fn setsid() -> io::Result<()> {
    // SAFETY: integer-only syscall.
    check_int(unsafe { libc::setsid() })?;
    Ok(())
}

pub fn set_pdeathsig(sig: i32) -> io::Result<()> {
    // SAFETY: integer-only prctl.
    check_int(unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong, 0, 0, 0) })?;
    Ok(())
}

pub fn set_dumpable(on: bool) -> io::Result<()> {
    // SAFETY: integer-only prctl.
    check_int(unsafe { libc::prctl(libc::PR_SET_DUMPABLE, on as libc::c_ulong, 0, 0, 0) })?;
    Ok(())
}

pub fn set_child_subreaper() -> io::Result<()> {
    // SAFETY: integer-only prctl.
    check_int(unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) })?;
    Ok(())
}

pub fn setrlimit(resource: libc::__rlimit_resource_t, soft: u64, hard: u64) -> io::Result<()> {
    let lim = libc::rlimit { rlim_cur: soft, rlim_max: hard };
    // SAFETY: `lim` is a valid rlimit alive for the call.
    check_int(unsafe { libc::setrlimit(resource, &lim) })?;
    Ok(())
}

/// Blocks (true) or unblocks (false) `signals` for this thread; returns nothing.
pub fn sigmask(signals: &[i32], block: bool) -> io::Result<()> {
    // SAFETY: sigset_t is plain data, initialised by sigemptyset before use.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t for these libc helpers.
    unsafe {
        libc::sigemptyset(&mut set);
        for s in signals {
            libc::sigaddset(&mut set, *s);
        }
    }
    let how = if block { libc::SIG_BLOCK } else { libc::SIG_UNBLOCK };
    // SAFETY: `set` is initialised; the old mask is not requested.
    check_int(unsafe { libc::sigprocmask(how, &set, std::ptr::null_mut()) })?;
    Ok(())
}

/// Empties the signal mask (before exec, so the command starts with a clean one).
pub fn unblock_all_signals() -> io::Result<()> {
    // SAFETY: as in `sigmask`.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t.
    unsafe { libc::sigemptyset(&mut set) };
    // SAFETY: `set` is initialised.
    check_int(unsafe { libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut()) })?;
    Ok(())
}

/// A signalfd for `signals` (which the caller has blocked).
pub fn signalfd(signals: &[i32]) -> io::Result<OwnedFd> {
    // SAFETY: as in `sigmask`.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t.
    unsafe {
        libc::sigemptyset(&mut set);
        for s in signals {
            libc::sigaddset(&mut set, *s);
        }
    }
    // SAFETY: `set` is initialised; -1 asks for a new descriptor.
    let fd = check_int(unsafe { libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK) })?;
    // SAFETY: a new descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Reads one pending signal number from a signalfd, if any.
pub fn read_signalfd(fd: &OwnedFd) -> Option<i32> {
    // SAFETY: signalfd_siginfo is plain data.
    let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::signalfd_siginfo>();
    // SAFETY: `info` is a writable buffer of `size` bytes.
    let n = unsafe { libc::read(fd.as_raw_fd(), &mut info as *mut _ as *mut libc::c_void, size) };
    (n as usize == size).then_some(info.ssi_signo as i32)
}

/// Installs `handler` for `sig` with SA_RESTART (the handler must be async-signal-safe).
pub fn set_signal_handler(sig: i32, handler: extern "C" fn(libc::c_int)) -> io::Result<()> {
    // SAFETY: sigaction is plain data; we fill the fields we use.
    let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
    sa.sa_sigaction = handler as usize;
    sa.sa_flags = libc::SA_RESTART;
    // SAFETY: `sa` is initialised; the old action is not requested.
    check_int(unsafe { libc::sigaction(sig, &sa, std::ptr::null_mut()) })?;
    Ok(())
}

/// Restores the default action for `sig`.
pub fn default_signal(sig: i32) {
    // SAFETY: SIG_DFL is always a valid disposition.
    unsafe { libc::signal(sig, libc::SIG_DFL) };
}

/// poll(2) over descriptors for readability; returns which are ready. `timeout_ms` < 0
/// waits forever.
pub fn poll_readable(fds: &[RawFd], timeout_ms: i32) -> io::Result<Vec<bool>> {
    let mut pfds: Vec<libc::pollfd> =
        fds.iter().map(|&fd| libc::pollfd { fd, events: libc::POLLIN, revents: 0 }).collect();
    // SAFETY: `pfds` is a valid array of `len` pollfd structures.
    let r = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, timeout_ms) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EINTR) {
            return Ok(vec![false; fds.len()]);
        }
        return Err(e);
    }
    Ok(pfds.iter().map(|p| p.revents != 0).collect())
}

/// poll(2) over `(descriptor, events)` pairs; returns each one's `revents` (POLLHUP and
/// POLLERR are reported even when not asked for, so events 0 waits for a hang-up only).
/// `timeout_ms` < 0 waits forever; EINTR returns all zeros.
pub fn poll_events(fds: &[(RawFd, i16)], timeout_ms: i32) -> io::Result<Vec<i16>> {
    let mut pfds: Vec<libc::pollfd> = fds.iter().map(|&(fd, events)| libc::pollfd { fd, events, revents: 0 }).collect();
    // SAFETY: `pfds` is a valid array of `len` pollfd structures.
    let r = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, timeout_ms) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EINTR) {
            return Ok(vec![0; fds.len()]);
        }
        return Err(e);
    }
    Ok(pfds.iter().map(|p| p.revents).collect())
}

/// Makes `fd` (a terminal) the controlling terminal of this session.
pub fn set_controlling_tty(fd: RawFd) -> io::Result<()> {
    // SAFETY: TIOCSCTTY takes an integer argument.
    check_int(unsafe { libc::ioctl(fd, libc::TIOCSCTTY, 0) })?;
    Ok(())
}

/// Opens a new pseudo-terminal pair: (master, slave).
pub fn openpty() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut master: RawFd = -1;
    let mut slave: RawFd = -1;
    // SAFETY: the out pointers are valid; name, termios and winsize may be null.
    check_int(unsafe {
        libc::openpty(&mut master, &mut slave, std::ptr::null_mut(), std::ptr::null(), std::ptr::null())
    })?;
    // SAFETY: openpty returned two new descriptors we own.
    let pair = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    crate::fs::set_cloexec(pair.0.as_raw_fd())?;
    crate::fs::set_cloexec(pair.1.as_raw_fd())?;
    Ok(pair)
}

/// Copies the window size of terminal `from` to terminal `to`.
pub fn copy_winsize(from: RawFd, to: RawFd) -> io::Result<()> {
    // SAFETY: winsize is plain data.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes a winsize into `ws`.
    check_int(unsafe { libc::ioctl(from, libc::TIOCGWINSZ, &mut ws) })?;
    // SAFETY: TIOCSWINSZ reads the winsize from `ws`.
    check_int(unsafe { libc::ioctl(to, libc::TIOCSWINSZ, &ws) })?;
    Ok(())
}

pub fn isatty(fd: RawFd) -> bool {
    // SAFETY: isatty only inspects the descriptor.
    unsafe { libc::isatty(fd) == 1 }
}

/// Puts terminal `fd` in raw mode; returns the previous settings to restore later.
pub fn make_raw(fd: RawFd) -> io::Result<libc::termios> {
    // SAFETY: termios is plain data filled by tcgetattr.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: `t` is writable.
    check_int(unsafe { libc::tcgetattr(fd, &mut t) })?;
    let saved = t;
    // SAFETY: `t` is a valid termios.
    unsafe { libc::cfmakeraw(&mut t) };
    // SAFETY: `t` is a valid termios.
    check_int(unsafe { libc::tcsetattr(fd, libc::TCSANOW, &t) })?;
    Ok(saved)
}

pub fn restore_termios(fd: RawFd, t: &libc::termios) {
    // SAFETY: `t` is a termios obtained from tcgetattr.
    unsafe { libc::tcsetattr(fd, libc::TCSANOW, t) };
}

/// unshare(2) of the given namespace flags.
pub fn unshare(flags: libc::c_int) -> io::Result<()> {
    // SAFETY: integer-only syscall.
    check_int(unsafe { libc::unshare(flags) })?;
    Ok(())
}

/// chdir(2) that accepts a &str.
pub fn chdir(path: &str) -> io::Result<()> {
    let p = crate::cstr(path)?;
    // SAFETY: `p` is NUL-terminated and alive for the call.
    check_int(unsafe { libc::chdir(p.as_ptr()) })?;
    Ok(())
}

/// Whether the peer of a connected socket has closed it (POLLHUP / POLLRDHUP), without
/// blocking.
pub fn hung_up(fd: &OwnedFd) -> bool {
    let mut p = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLRDHUP, revents: 0 };
    // SAFETY: one valid pollfd, zero timeout.
    let r = unsafe { libc::poll(&mut p, 1, 0) };
    r > 0 && p.revents & (libc::POLLHUP | libc::POLLRDHUP | libc::POLLERR) != 0
}

/// Starts a child that shares this process's memory until it execs or exits (CLONE_VM |
/// CLONE_VFORK, like posix_spawn): no page tables are copied, and this thread sleeps
/// until then. `child` runs on its own small stack and must only make syscalls (no
/// allocation, no locks): it should end in `execve`, and returns the exit status to use
/// if that fails. Returns the child's pid.
pub fn spawn_shared(child: &mut dyn FnMut() -> i32) -> io::Result<i32> {
    extern "C" fn trampoline(arg: *mut libc::c_void) -> libc::c_int {
        // SAFETY: `arg` is the `&mut &mut dyn FnMut` passed below; the parent is suspended
        // (CLONE_VFORK) so the borrow is exclusive for the child's whole life.
        let f = unsafe { &mut *(arg as *mut &mut dyn FnMut() -> i32) };
        let code = f();
        exit_now(code)
    }
    const STACK: usize = 256 * 1024;
    let mut stack = vec![0u8; STACK];
    // Stacks grow down on every architecture safehouse supports; keep 16-byte alignment.
    let top = (stack.as_mut_ptr() as usize + STACK) & !0xf;
    let mut arg: &mut dyn FnMut() -> i32 = child;
    // SAFETY: `top` is the aligned end of a live buffer that outlives the child's use of
    // it (the parent stays suspended until the child execs or exits); `arg` points at a
    // live fat pointer for the same duration.
    let pid = unsafe {
        libc::clone(
            trampoline,
            top as *mut libc::c_void,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            &mut arg as *mut &mut dyn FnMut() -> i32 as *mut libc::c_void,
        )
    };
    drop(stack);
    check_int(pid)
}

/// Blocks every signal; returns the previous mask for `restore_sigmask`.
pub fn block_all_signals() -> io::Result<libc::sigset_t> {
    // SAFETY: sigset_t is plain data, initialised by sigfillset/sigprocmask.
    let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: valid sigset_t pointers.
    unsafe { libc::sigfillset(&mut all) };
    // SAFETY: valid sigset_t pointers.
    check_int(unsafe { libc::sigprocmask(libc::SIG_SETMASK, &all, &mut old) })?;
    Ok(old)
}

pub fn restore_sigmask(old: &libc::sigset_t) {
    // SAFETY: `old` came from sigprocmask.
    unsafe { libc::sigprocmask(libc::SIG_SETMASK, old, std::ptr::null_mut()) };
}

/// chdir to a C string without allocating (safe in a `spawn_shared` child).
pub fn chdir_c(path: &std::ffi::CStr) -> io::Result<()> {
    // SAFETY: `path` is NUL-terminated.
    check_int(unsafe { libc::chdir(path.as_ptr()) })?;
    Ok(())
}

/// execve with pre-built NULL-terminated pointer arrays (no allocation, for `spawn_shared`).
pub fn execve_raw(path: &std::ffi::CStr, argv: &[*const libc::c_char], envp: &[*const libc::c_char]) -> io::Error {
    // SAFETY: the caller passes NULL-terminated arrays of pointers to live C strings.
    unsafe { libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    io::Error::last_os_error()
}

/// pidfd_open(2): a descriptor that refers to process `pid` (and only it, even if the
/// number is later reused).
pub fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: integer arguments.
    let fd = check(unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0u32) })?;
    // SAFETY: a new descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// The wait status of the exited process `pidfd` refers to (PIDFD_GET_INFO with
/// PIDFD_INFO_EXIT, Linux 6.15+): the kernel keeps it for every holder of a pidfd, also
/// after the process's parent has reaped it. None: still running, not available yet, or a
/// kernel without it.
pub fn pidfd_exit_status(pidfd: BorrowedFd<'_>) -> Option<i32> {
    // SAFETY: pidfd_info is plain integers, for which all zeroes is a valid value.
    let mut info: libc::pidfd_info = unsafe { std::mem::zeroed() };
    info.mask = u64::from(libc::PIDFD_INFO_EXIT);
    // SAFETY: the request encodes the size of `info`, which the kernel writes at most.
    let r = unsafe { libc::ioctl(pidfd.as_raw_fd(), libc::PIDFD_GET_INFO, &mut info) };
    (r == 0 && info.mask & u64::from(libc::PIDFD_INFO_EXIT) != 0).then_some(info.exit_code)
}

/// process_vm_readv(2) of one range: reads `buf.len()` bytes at `addr` in process `pid`
/// (a thread id works too) into `buf`; returns how many it got (fewer when the range runs
/// into an unmapped page). Same permission as /proc/PID/mem, without opening it.
pub fn process_vm_read(pid: i32, addr: u64, buf: &mut [u8]) -> io::Result<usize> {
    let local = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    let remote = libc::iovec { iov_base: addr as usize as *mut libc::c_void, iov_len: buf.len() };
    // SAFETY: `local` is our writable buffer of iov_len bytes; the remote address is only
    // read by the kernel in the other process, never dereferenced here.
    let n = unsafe { libc::process_vm_readv(pid, &local, 1, &remote, 1, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// Raises the soft RLIMIT_NOFILE to the hard limit; returns the new soft limit.
pub fn raise_nofile_limit() -> io::Result<u64> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `lim` is a valid rlimit to fill.
    check_int(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) })?;
    lim.rlim_cur = lim.rlim_max;
    // SAFETY: `lim` is a valid rlimit.
    check_int(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) })?;
    Ok(lim.rlim_cur)
}

/// Drops this process's resident pages of file mappings it never modified (code, read-only
/// data), which a fork inherits from its parent whether it uses them or not; they fault
/// back in from the page cache when touched. A mapping with any anonymous (copied-on-write)
/// page, such as relocated data, is left alone: dropping it would lose the changes.
/// Returns the bytes of mappings released.
pub fn release_inherited_code_pages() -> u64 {
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else { return 0 };
    let mut released = 0;
    let mut current: Option<(usize, usize, bool)> = None; // (start, end, file-backed)
    let flush = |m: Option<(usize, usize, bool)>, anon_kb: u64, released: &mut u64| {
        if let Some((start, end, true)) = m {
            if anon_kb == 0 {
                // SAFETY: [start, end) is a whole private file mapping of this process with
                // no modified page: dropping its pages only makes the next access read them
                // back from the file, identical.
                if unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) } == 0 {
                    *released += (end - start) as u64;
                }
            }
        }
    };
    let mut anon_kb = 0u64;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if let Some((a, b)) = first.split_once('-').filter(|(a, _)| a.chars().all(|c| c.is_ascii_hexdigit())) {
            flush(current.take(), anon_kb, &mut released);
            anon_kb = 0;
            let mut fields = line.split_whitespace();
            let perms = fields.nth(1).unwrap_or("");
            let path = fields.nth(3).unwrap_or("");
            if let (Ok(start), Ok(end)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16)) {
                current = Some((start, end, path.starts_with('/') && perms.ends_with('p')));
            }
        } else if let Some(rest) = line.strip_prefix("Anonymous:") {
            anon_kb = rest.trim().trim_end_matches("kB").trim().parse().unwrap_or(u64::MAX);
        }
    }
    flush(current.take(), anon_kb, &mut released);
    released
}

/// Arranges for `cmd`'s child to get `fd` at descriptor number `at` (without
/// close-on-exec), and nothing else beyond stdio: every other descriptor of this process is
/// close-on-exec already (Rust opens everything with O_CLOEXEC). `fd` must stay open until
/// the child is spawned.
pub fn pass_fd_to_child(cmd: &mut std::process::Command, fd: RawFd, at: RawFd) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the child between fork and exec, where only
    // async-signal-safe calls are allowed: it makes one dup2 or fcntl call on integers it
    // captured by value, allocates nothing and takes no lock.
    unsafe {
        cmd.pre_exec(move || {
            let r = if fd == at {
                let flags = libc::fcntl(fd, libc::F_GETFD);
                if flags < 0 {
                    -1
                } else {
                    libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC)
                }
            } else {
                // dup2 clears close-on-exec on the new descriptor.
                libc::dup2(fd, at)
            };
            if r < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(())
            }
        })
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    fn kernel_at_least(major: u32, minor: u32) -> bool {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let mut parts = release.split(|c: char| !c.is_ascii_digit()).filter_map(|p| p.parse::<u32>().ok());
        (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) >= (major, minor)
    }

    #[test]
    fn a_pidfd_keeps_the_exit_status_after_the_reap() {
        let mut child = std::process::Command::new("sh")
            .args(["-c", "read x; exit 7"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let pidfd = pidfd_open(child.id() as i32).unwrap();
        assert_eq!(pidfd_exit_status(pidfd.as_fd()), None, "running: no exit status yet");
        drop(child.stdin.take());
        assert_eq!(child.wait().unwrap().code(), Some(7)); // reaped here, by its parent
        let expected = if kernel_at_least(6, 15) { Some(7 << 8) } else { None };
        assert_eq!(pidfd_exit_status(pidfd.as_fd()), expected);
    }
}

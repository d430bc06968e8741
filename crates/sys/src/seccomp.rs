//! Installing a seccomp BPF filter.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use crate::check_int;

pub use libc::sock_filter;

/// Installs `program` for this thread and all threads created later (TSYNC is not needed:
/// the caller is single-threaded), with no_new_privs already set by the caller.
pub fn install_filter(program: &[sock_filter]) -> io::Result<()> {
    let len = u16::try_from(program.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "seccomp program too long"))?;
    let prog = libc::sock_fprog { len, filter: program.as_ptr() as *mut sock_filter };
    // SAFETY: `prog` points at `len` valid instructions that outlive the call; the kernel
    // copies the program.
    check_int(unsafe {
        libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &prog as *const libc::sock_fprog, 0, 0)
    })?;
    Ok(())
}

/// The `Seccomp:` mode of this process (0 none, 1 strict, 2 filter), or None when the kernel
/// has no seccomp.
pub fn current_mode() -> Option<i32> {
    // SAFETY: integer-only prctl.
    let r = unsafe { libc::prctl(libc::PR_GET_SECCOMP, 0, 0, 0, 0) };
    if r < 0 {
        None
    } else {
        Some(r)
    }
}

/// Whether the kernel supports the given filter return action (e.g. SECCOMP_RET_KILL_PROCESS).
pub fn action_available(action: u32) -> bool {
    const SECCOMP_GET_ACTION_AVAIL: u32 = 2;
    // SAFETY: the kernel reads one u32 from the pointer, which is alive for the call.
    let r = unsafe { libc::syscall(libc::SYS_seccomp, SECCOMP_GET_ACTION_AVAIL, 0u32, &action as *const u32) };
    r == 0
}

/// Installs `program` like [`install_filter`] and returns its notification listener
/// (SECCOMP_FILTER_FLAG_NEW_LISTENER): syscalls the program answers with
/// SECCOMP_RET_USER_NOTIF wait until whoever holds the listener responds. If every copy
/// of the listener is closed, they fail with ENOSYS instead.
pub fn install_listener_filter(program: &[sock_filter]) -> io::Result<OwnedFd> {
    let len = u16::try_from(program.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "seccomp program too long"))?;
    let prog = libc::sock_fprog { len, filter: program.as_ptr() as *mut sock_filter };
    // SAFETY: `prog` points at `len` valid instructions that outlive the call; the kernel
    // copies the program and returns a new descriptor.
    let fd = crate::check(unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            libc::SECCOMP_FILTER_FLAG_NEW_LISTENER,
            &prog as *const libc::sock_fprog,
        )
    })?;
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// One intercepted syscall, as the listener reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Notification {
    /// The cookie to answer with; valid while the caller still waits.
    pub id: u64,
    /// The calling thread, in the listener holder's pid namespace (0 if invisible there).
    pub pid: u32,
    pub nr: i32,
    pub arch: u32,
    pub args: [u64; 6],
}

/// Receives the next notification (blocks; poll the listener for POLLIN first). ENOENT
/// means the caller was gone before it could be read.
pub fn notif_recv(listener: BorrowedFd<'_>) -> io::Result<Notification> {
    // SAFETY: seccomp_notif is plain data; the kernel requires it zeroed on entry.
    let mut n: libc::seccomp_notif = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: `n` is a valid, zeroed seccomp_notif the kernel fills.
        let r = unsafe { libc::ioctl(listener.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_RECV, &mut n) };
        if r == 0 {
            break;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    Ok(Notification { id: n.id, pid: n.pid, nr: n.data.nr, arch: n.data.arch, args: n.data.args })
}

/// Whether the notification `id` still stands (its caller is waiting, not killed): check it
/// after reading the caller's memory, which may by then belong to another process.
pub fn notif_id_valid(listener: BorrowedFd<'_>, id: u64) -> bool {
    // SAFETY: the kernel reads one u64 from the pointer, alive for the call.
    unsafe { libc::ioctl(listener.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_ID_VALID, &id) == 0 }
}

/// Answers notification `id`: let the syscall run (`errno` None: SECCOMP_USER_NOTIF_FLAG_CONTINUE)
/// or fail it with `errno`. ENOENT means the caller is gone, which is no error for the caller.
pub fn notif_respond(listener: BorrowedFd<'_>, id: u64, errno: Option<i32>) -> io::Result<()> {
    let resp = libc::seccomp_notif_resp {
        id,
        val: 0,
        error: errno.map(|e| -e).unwrap_or(0),
        flags: if errno.is_none() { libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32 } else { 0 },
    };
    loop {
        // SAFETY: `resp` is a valid seccomp_notif_resp alive for the call; the kernel reads it.
        let r = unsafe { libc::ioctl(listener.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_SEND, &resp) };
        if r == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => {}
            Some(libc::ENOENT) => return Ok(()),
            _ => return Err(e),
        }
    }
}

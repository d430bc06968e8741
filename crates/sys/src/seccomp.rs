//! Installing a seccomp BPF filter.

use std::io;

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

//! Small file-descriptor helpers.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use crate::{check, check_int};

/// A pipe whose both ends are close-on-exec.
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` is a valid two-element array for pipe2 to fill.
    check_int(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: pipe2 returned two new descriptors that nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Takes ownership of descriptor `fd`, inherited from the parent at a number agreed on
/// (a child's control socket); fails with EBADF when nothing is open there. Marks it
/// close-on-exec.
pub fn inherited(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: integer-only fcntl; it only tells whether `fd` is open.
    check_int(unsafe { libc::fcntl(fd, libc::F_GETFD) })?;
    set_cloexec(fd)?;
    // SAFETY: `fd` is open (checked above) and, by the agreement with the parent, owned by
    // nothing else in this process.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Closes every descriptor in `first..=last` (nothing if the range is empty).
pub fn close_range(first: u32, last: u32) -> io::Result<()> {
    if first > last {
        return Ok(());
    }
    // SAFETY: close_range only closes descriptors; the caller owns none it still needs.
    check(unsafe { libc::syscall(libc::SYS_close_range, first, last, 0) })?;
    Ok(())
}

/// dup2 that clears close-on-exec on the new descriptor.
pub fn dup2(old: RawFd, new: RawFd) -> io::Result<()> {
    // SAFETY: dup2 on integer descriptors; errors are reported.
    check_int(unsafe { libc::dup2(old, new) })?;
    Ok(())
}

/// Clears close-on-exec so a descriptor survives execve.
pub fn clear_cloexec(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl F_SETFD with an integer flag.
    check_int(unsafe { libc::fcntl(fd, libc::F_SETFD, 0) })?;
    Ok(())
}

/// umask(2); returns the previous mask.
pub fn umask(mask: u32) -> u32 {
    // SAFETY: umask cannot fail.
    unsafe { libc::umask(mask) }
}

pub fn set_cloexec(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl F_SETFD with an integer flag.
    check_int(unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) })?;
    Ok(())
}

/// One read that does not block: None when nothing is ready, at EOF or on error.
pub fn read_nonblocking(f: &mut std::fs::File, buf: &mut [u8]) -> Option<usize> {
    use std::os::fd::AsRawFd;
    let ready = crate::process::poll_readable(&[f.as_raw_fd()], 0).ok()?;
    if !ready[0] {
        return None;
    }
    std::io::Read::read(f, buf).ok().filter(|n| *n > 0)
}

/// Closes every descriptor above 2 except those in `keep`.
pub fn close_all_except(keep: &[RawFd]) -> io::Result<()> {
    let mut keep: Vec<u32> = keep.iter().filter(|&&fd| fd > 2).map(|&fd| fd as u32).collect();
    keep.sort_unstable();
    let mut first = 3u32;
    for fd in keep {
        if fd > first {
            close_range(first, fd - 1)?;
        }
        first = fd + 1;
    }
    close_range(first, u32::MAX)
}

/// The filesystem type (`f_type`) of the mount holding `path`.
pub fn statfs_type(path: &str) -> io::Result<i64> {
    let p = crate::cstr(path)?;
    // SAFETY: statfs is plain data; zeroed is valid.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `p` is NUL-terminated, `st` writable, both alive for the call.
    check_int(unsafe { libc::statfs(p.as_ptr(), &mut st) })?;
    Ok(st.f_type as i64)
}

/// Takes an exclusive advisory lock on `fd` (flock), waiting for it; the lock goes with the
/// descriptor (released when it is closed, also when the process dies).
pub fn lock_exclusive(fd: std::os::fd::BorrowedFd<'_>) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    loop {
        // SAFETY: flock on a descriptor the caller keeps open for the call; integer flags.
        match check_int(unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX) }) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => return r.map(|_| ()),
        }
    }
}

/// `syncfs`: writes out the filesystem holding `fd` (on btrfs, commits its transaction).
pub fn syncfs(fd: std::os::fd::BorrowedFd<'_>) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: syncfs takes an integer descriptor the caller keeps open for the call.
    check_int(unsafe { libc::syncfs(fd.as_raw_fd()) })?;
    Ok(())
}

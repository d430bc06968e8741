//! Wrappers the in-sandbox agent needs beyond the rest of this crate: non-blocking stream
//! sockets that carry descriptors, poll with arbitrary events, terminal sizes, process
//! groups, and the few calls its spawned children make before exec (which must not
//! allocate: they share the agent's memory).

use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::check_int;

/// Sets O_NONBLOCK on the open file description of `fd`.
pub fn set_nonblocking(fd: impl AsFd) -> io::Result<()> {
    let fd = fd.as_fd().as_raw_fd();
    // SAFETY: fcntl F_GETFL/F_SETFL with integer arguments on a descriptor the caller owns.
    unsafe {
        let flags = check_int(libc::fcntl(fd, libc::F_GETFL))?;
        check_int(libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK))?;
    }
    Ok(())
}

/// Whether `fd` is an open descriptor.
pub fn fd_is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD only inspects the descriptor table.
    unsafe { libc::fcntl(fd, libc::F_GETFD) >= 0 }
}

/// accept4 with SOCK_CLOEXEC | SOCK_NONBLOCK; the peer address is not wanted.
pub fn accept(listener: impl AsFd) -> io::Result<OwnedFd> {
    // SAFETY: null address pointers are allowed when the peer address is not wanted.
    let fd = check_int(unsafe {
        libc::accept4(
            listener.as_fd().as_raw_fd(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
        )
    })?;
    // SAFETY: accept4 returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Most descriptors accepted with one `recv_with_fds` call; more make it fail.
pub const MAX_RECV_FDS: usize = 16;

/// One non-blocking recvmsg on a stream socket: bytes into `buf` (0 at end of stream) and
/// any descriptors that arrived with them (SCM_RIGHTS, close-on-exec) appended to `fds`.
/// On a stream socket, descriptors come with the first byte of the `sendmsg` that
/// carried them. More than [`MAX_RECV_FDS`] at once is an error (the kernel closes the
/// excess; the ones received are closed here).
pub fn recv_with_fds(sock: impl AsFd, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> io::Result<usize> {
    crate::unix::recvmsg_with_fds(sock.as_fd().as_raw_fd(), buf, libc::MSG_DONTWAIT, fds)
}

/// send(2) with MSG_NOSIGNAL | MSG_DONTWAIT: a closed peer is EPIPE, never SIGPIPE, and
/// a full socket is WouldBlock. Returns the bytes sent.
pub fn send(sock: impl AsFd, data: &[u8]) -> io::Result<usize> {
    loop {
        // SAFETY: `data` is a valid buffer of its length, alive for the call.
        let n = unsafe {
            libc::send(
                sock.as_fd().as_raw_fd(),
                data.as_ptr() as *const libc::c_void,
                data.len(),
                libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
            )
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// sendmsg on a stream socket with `fds` attached to the first byte (MSG_NOSIGNAL; blocks
/// unless the socket is non-blocking). Returns the bytes sent, which may be fewer than
/// `data.len()`: send the rest without descriptors.
pub fn send_with_fds(sock: impl AsFd, data: &[u8], fds: &[RawFd]) -> io::Result<usize> {
    if fds.len() > MAX_RECV_FDS {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "too many descriptors for one message"));
    }
    crate::unix::sendmsg_with_fds(sock.as_fd().as_raw_fd(), data, fds, libc::MSG_NOSIGNAL)
}

/// poll(2) over `fds` (events set by the caller, revents filled in); returns how many
/// are ready, 0 on timeout or when a signal interrupted the wait. `timeout_ms` < 0 waits
/// forever.
pub fn poll(fds: &mut [libc::pollfd], timeout_ms: i32) -> io::Result<usize> {
    // SAFETY: `fds` is a valid, writable array of `len` pollfd structures.
    let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(0);
        }
        return Err(e);
    }
    Ok(r as usize)
}

/// Sets the window size of terminal `fd` (TIOCSWINSZ); the kernel sends SIGWINCH to the
/// terminal's foreground process group.
pub fn set_winsize(fd: impl AsFd, rows: u16, cols: u16) -> io::Result<()> {
    let ws = libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCSWINSZ reads one winsize from the valid pointer.
    check_int(unsafe { libc::ioctl(fd.as_fd().as_raw_fd(), libc::TIOCSWINSZ, &ws) })?;
    Ok(())
}

/// Sends `sig` to every process of process group `pgrp`.
pub fn killpg(pgrp: i32, sig: i32) -> io::Result<()> {
    if pgrp <= 0 {
        // killpg(0) would signal the caller's own group.
        return Err(io::Error::from_raw_os_error(libc::ESRCH));
    }
    // SAFETY: integer-only call.
    check_int(unsafe { libc::killpg(pgrp, sig) })?;
    Ok(())
}

/// Ignores `sig` (SIG_IGN survives execve: children must reset it).
pub fn ignore_signal(sig: i32) -> io::Result<()> {
    // SAFETY: SIG_IGN is always a valid disposition.
    if unsafe { libc::signal(sig, libc::SIG_IGN) } == libc::SIG_ERR {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Restores the default disposition of every signal. No allocation: safe in a child
/// that shares its parent's memory. SIGKILL, SIGSTOP and the C library's reserved
/// signals refuse the change, which is fine.
pub fn reset_signal_dispositions() {
    for sig in 1..=64 {
        // SAFETY: SIG_DFL is always a valid disposition; failures change nothing.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
}

/// write(2) on a raw descriptor, retried on EINTR. No allocation: safe in a child that
/// shares its parent's memory.
pub fn write_raw(fd: RawFd, data: &[u8]) -> io::Result<usize> {
    loop {
        // SAFETY: `data` is a valid buffer of its length, alive for the call.
        let n = unsafe { libc::write(fd, data.as_ptr() as *const libc::c_void, data.len()) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Makes the C allocator hand large blocks straight back to the kernel: a fixed 64 KiB
/// mmap threshold (glibc otherwise raises it after each large free, so a later 16 MiB
/// buffer would stay in the heap) and a 128 KiB trim threshold. For long-lived processes
/// that must stay small when idle.
pub fn return_freed_memory_promptly() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only adjusts allocator parameters; invalid values are refused.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 << 10);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 128 << 10);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::net::UnixStream;

    #[test]
    fn descriptors_ride_on_a_stream_socket() {
        let (a, b) = UnixStream::pair().unwrap();
        let (r, w) = crate::fs::pipe().unwrap();
        assert_eq!(send_with_fds(&a, b"frame", &[w.as_raw_fd(), w.as_raw_fd()]).unwrap(), 5);
        drop(w);
        send(&a, b"more").unwrap();
        let mut buf = [0u8; 64];
        let mut fds = Vec::new();
        let n = recv_with_fds(&b, &mut buf, &mut fds).unwrap();
        assert_eq!((&buf[..n], fds.len()), (&b"frame"[..], 2));
        std::fs::File::from(fds.pop().unwrap()).write_all(b"0").unwrap();
        drop(fds);
        let mut got = String::new();
        std::io::Read::read_to_string(&mut std::fs::File::from(r), &mut got).unwrap();
        assert_eq!(got, "0");
        let mut fds = Vec::new();
        let n = recv_with_fds(&b, &mut buf, &mut fds).unwrap();
        assert_eq!((&buf[..n], fds.len()), (&b"more"[..], 0));
        let e = recv_with_fds(&b, &mut buf, &mut fds).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        drop(a);
        assert_eq!(recv_with_fds(&b, &mut buf, &mut fds).unwrap(), 0);
        assert_eq!(send(&b, b"x").unwrap_err().raw_os_error(), Some(libc::EPIPE));
    }

    #[test]
    fn poll_reports_requested_events() {
        let (a, b) = UnixStream::pair().unwrap();
        set_nonblocking(&a).unwrap();
        let mut p = [libc::pollfd { fd: a.as_raw_fd(), events: libc::POLLIN | libc::POLLOUT, revents: 0 }];
        assert_eq!(poll(&mut p, 0).unwrap(), 1);
        assert_eq!(p[0].revents, libc::POLLOUT);
        (&b).write_all(b"x").unwrap();
        assert_eq!(poll(&mut p, 0).unwrap(), 1);
        assert_eq!(p[0].revents, libc::POLLIN | libc::POLLOUT);
        assert!(fd_is_open(a.as_raw_fd()));
    }

    #[test]
    fn killpg_refuses_group_zero() {
        assert!(killpg(0, 0).is_err());
    }
}

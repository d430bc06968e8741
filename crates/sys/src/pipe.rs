//! splice(2) and pipe sizes: moving bytes between two sockets through a pipe (made by
//! [`crate::fs::pipe`]) without copying them into user space (the gateway's tunnels and
//! bodies).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use crate::{check, check_int};

/// Asks for a pipe buffer of `bytes` (F_SETPIPE_SZ); returns the capacity the kernel set.
/// Fails with EPERM past `fs.pipe-max-size` or the user's pipe-page budget.
pub fn set_pipe_size(pipe: BorrowedFd<'_>, bytes: usize) -> io::Result<usize> {
    let want = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: integer-only fcntl on a descriptor the caller borrows.
    let got = check_int(unsafe { libc::fcntl(pipe.as_raw_fd(), libc::F_SETPIPE_SZ, want) })?;
    Ok(got as usize)
}

/// The capacity of a pipe's buffer (F_GETPIPE_SZ).
pub fn pipe_size(pipe: BorrowedFd<'_>) -> io::Result<usize> {
    // SAFETY: integer-only fcntl on a descriptor the caller borrows.
    let got = check_int(unsafe { libc::fcntl(pipe.as_raw_fd(), libc::F_GETPIPE_SZ) })?;
    Ok(got as usize)
}

/// One splice(2) of at most `len` bytes from `from` to `to` (one of them a pipe), without
/// blocking on the pipe (SPLICE_F_NONBLOCK; a socket end blocks unless it is O_NONBLOCK).
/// `more`: more data follows (SPLICE_F_MORE, a hint to the socket to wait for it). Returns
/// the bytes moved; 0 means end of input. WouldBlock when nothing can move now.
pub fn splice(from: BorrowedFd<'_>, to: BorrowedFd<'_>, len: usize, more: bool) -> io::Result<usize> {
    let mut flags = libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK;
    if more {
        flags |= libc::SPLICE_F_MORE;
    }
    // SAFETY: both descriptors are borrowed for the call; null offsets mean "the file
    // position" (required for pipes and sockets); no memory of ours is passed.
    let n = check(unsafe {
        libc::splice(from.as_raw_fd(), std::ptr::null_mut(), to.as_raw_fd(), std::ptr::null_mut(), len, flags)
            as libc::c_long
    })?;
    Ok(n as usize)
}

/// Shuts down the sending side of a socket (FIN to the peer; reads go on).
pub fn shutdown_write(sock: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: integer-only call on a descriptor the caller borrows.
    check_int(unsafe { libc::shutdown(sock.as_raw_fd(), libc::SHUT_WR) })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsFd;

    #[test]
    fn splices_between_sockets_through_a_pipe() {
        let (mut a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let (c, mut d) = std::os::unix::net::UnixStream::pair().unwrap();
        let (r, w) = crate::fs::pipe().unwrap();
        let cap = set_pipe_size(r.as_fd(), 256 << 10).unwrap();
        assert!(cap >= 256 << 10, "{cap}");
        assert_eq!(pipe_size(w.as_fd()).unwrap(), cap);
        b.set_nonblocking(true).unwrap();
        // Nothing to read yet: WouldBlock, not a hang.
        let e = splice(b.as_fd(), w.as_fd(), 4096, false).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        a.write_all(b"hello through a pipe").unwrap();
        let n = splice(b.as_fd(), w.as_fd(), 4096, false).unwrap();
        assert_eq!(n, 20);
        assert_eq!(splice(r.as_fd(), c.as_fd(), n, false).unwrap(), 20);
        let mut got = [0u8; 20];
        d.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hello through a pipe");
        drop(a);
        assert_eq!(splice(b.as_fd(), w.as_fd(), 4096, false).unwrap(), 0, "end of input");
        shutdown_write(c.as_fd()).unwrap();
        assert_eq!(d.read(&mut got).unwrap(), 0);
    }
}

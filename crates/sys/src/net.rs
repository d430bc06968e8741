//! Bringing up loopback inside a fresh network namespace.

use std::io;

use crate::check_int;

/// Sets IFF_UP on `lo` (needs CAP_NET_ADMIN in the namespace's user namespace).
pub fn loopback_up() -> io::Result<()> {
    // SAFETY: a plain socket() call; the result is checked and closed below.
    let sock = check_int(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: ifreq is plain data; zeroed is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: `req` is a valid ifreq naming "lo"; the ioctls read and write only it.
    let result = unsafe {
        if libc::ioctl(sock, libc::SIOCGIFFLAGS, &mut req) < 0 {
            Err(io::Error::last_os_error())
        } else {
            req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
            if libc::ioctl(sock, libc::SIOCSIFFLAGS, &req) < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(())
            }
        }
    };
    // SAFETY: `sock` is ours and closed once.
    unsafe { libc::close(sock) };
    result
}

/// Sets the accept backlog of a listening socket (listen(2) again on a listening socket
/// only changes its backlog; the kernel caps it at net.core.somaxconn).
pub fn set_backlog(listener: &impl std::os::fd::AsRawFd, backlog: i32) -> io::Result<()> {
    // SAFETY: listen() on a descriptor the caller owns; no memory is passed.
    check_int(unsafe { libc::listen(listener.as_raw_fd(), backlog) })?;
    Ok(())
}

pub fn sethostname(name: &str) -> io::Result<()> {
    // SAFETY: the buffer and its length describe `name`, alive for the call.
    check_int(unsafe { libc::sethostname(name.as_ptr() as *const libc::c_char, name.len()) })?;
    Ok(())
}

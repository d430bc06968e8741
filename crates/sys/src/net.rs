//! Network namespaces: loopback inside a fresh one, and sockets made in another one.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

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

/// Binds `sock` (an AF_INET stream socket) to 127.0.0.1:`port` and listens with `backlog`.
/// SO_REUSEADDR, so connections of an earlier listener left in TIME_WAIT do not block the
/// port (a listening socket still does).
pub fn listen_on_loopback(sock: &OwnedFd, port: u16, backlog: i32) -> io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: `one` is a c_int alive for the call; the length is its size.
    check_int(unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            &one as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })?;
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from(std::net::Ipv4Addr::LOCALHOST).to_be() },
        sin_zero: [0; 8],
    };
    // SAFETY: `addr` is a valid sockaddr_in, alive for the call, with its exact length.
    check_int(unsafe {
        libc::bind(
            sock.as_raw_fd(),
            &addr as *const libc::sockaddr_in as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    })?;
    // SAFETY: listen() on a descriptor the caller owns; no memory is passed.
    check_int(unsafe { libc::listen(sock.as_raw_fd(), backlog) })?;
    Ok(())
}

pub fn sethostname(name: &str) -> io::Result<()> {
    // SAFETY: the buffer and its length describe `name`, alive for the call.
    check_int(unsafe { libc::sethostname(name.as_ptr() as *const libc::c_char, name.len()) })?;
    Ok(())
}

/// A TCP socket (`SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK`, not yet connected) created
/// inside the network namespace `netns`, from a process living in the namespace `home`.
///
/// A socket belongs to the namespace it was created in for its whole life, so connecting
/// it afterwards reaches that namespace's addresses (its loopback) from any thread.
///
/// Switching namespace is per thread, so the switch happens on a fresh thread made for this
/// one call: the caller's thread never changes namespace, and a thread that failed to get
/// back home ends here instead of serving anything else. Needs CAP_SYS_ADMIN over `netns`
/// and in the caller's own user namespace (EPERM otherwise: a rootless daemon).
pub fn tcp_socket_in_netns(netns: BorrowedFd<'_>, home: BorrowedFd<'_>, domain: libc::c_int) -> io::Result<OwnedFd> {
    std::thread::scope(|s| {
        let worker = std::thread::Builder::new()
            .name("netns-socket".into())
            .spawn_scoped(s, || socket_on_this_thread(netns, home, domain))?;
        worker.join().unwrap_or_else(|_| Err(io::Error::other("the netns socket thread panicked")))
    })
}

/// The body of [`tcp_socket_in_netns`]; changes the calling thread's network namespace
/// while it runs.
fn socket_on_this_thread(netns: BorrowedFd<'_>, home: BorrowedFd<'_>, domain: libc::c_int) -> io::Result<OwnedFd> {
    setns(netns, libc::CLONE_NEWNET)?;
    // SAFETY: a plain socket() call; on success the new descriptor is owned by nobody else
    // and is wrapped at once.
    let made =
        check_int(unsafe { libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK, 0) })
            // SAFETY: `fd` was just returned by socket() and is not owned elsewhere.
            .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) });
    // Back home before anything else; a failure leaves this thread, which is about to end,
    // in the wrong namespace, and the socket is dropped with it.
    setns(home, libc::CLONE_NEWNET)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot return to the daemon's network namespace: {e}")))?;
    made
}

/// `setns(fd, nstype)`: moves the calling thread into the namespace `fd` refers to.
pub fn setns(fd: BorrowedFd<'_>, nstype: libc::c_int) -> io::Result<()> {
    // SAFETY: `fd` is a valid descriptor borrowed for the call; setns reads nothing else.
    check_int(unsafe { libc::setns(fd.as_raw_fd(), nstype) })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;

    use super::*;

    fn own_netns() -> std::fs::File {
        std::fs::File::open("/proc/thread-self/ns/net").unwrap()
    }

    fn netns_ino() -> u64 {
        std::fs::metadata("/proc/thread-self/ns/net").unwrap().ino()
    }

    /// A fresh network namespace (its loopback down).
    fn fresh_netns() -> io::Result<std::fs::File> {
        std::thread::spawn(|| {
            crate::process::unshare(libc::CLONE_NEWNET)?;
            std::fs::File::open("/proc/thread-self/ns/net")
        })
        .join()
        .unwrap()
    }

    /// A blocking connect of `fd` to 127.0.0.1:`port`.
    fn connect_loopback(fd: &OwnedFd, port: u16) -> io::Result<TcpStream> {
        let sock = TcpStream::from(fd.try_clone()?);
        sock.set_nonblocking(false)?;
        let sa = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes([127, 0, 0, 1]) },
            sin_zero: [0; 8],
        };
        let len = std::mem::size_of_val(&sa) as libc::socklen_t;
        // SAFETY: `sa` is a valid sockaddr_in of `len` bytes, alive for the call; `sock` is open.
        check_int(unsafe { libc::connect(sock.as_raw_fd(), &sa as *const _ as *const libc::sockaddr, len) })?;
        Ok(sock)
    }

    fn skip_without_privilege(e: &io::Error) -> bool {
        let skip = e.raw_os_error() == Some(libc::EPERM);
        if skip {
            eprintln!("skipped: needs CAP_SYS_ADMIN ({e})");
        }
        skip
    }

    #[test]
    fn a_socket_made_at_home_reaches_home() {
        let home = own_netns();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let fd = match tcp_socket_in_netns(home.as_fd(), home.as_fd(), libc::AF_INET) {
            Err(e) if skip_without_privilege(&e) => return,
            r => r.unwrap(),
        };
        let mut sock = connect_loopback(&fd, listener.local_addr().unwrap().port()).unwrap();
        let (mut peer, _) = listener.accept().unwrap();
        sock.write_all(b"hi").unwrap();
        let mut buf = [0; 2];
        peer.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hi");
    }

    #[test]
    fn a_socket_made_elsewhere_lives_there_and_the_caller_stays_home() {
        let home = own_netns();
        let before = netns_ino();
        let other = match fresh_netns() {
            Err(e) if skip_without_privilege(&e) => return,
            r => r.unwrap(),
        };
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let fd = tcp_socket_in_netns(other.as_fd(), home.as_fd(), libc::AF_INET).unwrap();
        // The fresh namespace's loopback is down: the host's listener is out of reach.
        let err = connect_loopback(&fd, port).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENETUNREACH), "{err}");
        assert_eq!(netns_ino(), before, "the calling thread changed namespace");
        // The positive control: the same connect from a socket made at home succeeds.
        let fd = tcp_socket_in_netns(home.as_fd(), home.as_fd(), libc::AF_INET).unwrap();
        connect_loopback(&fd, port).unwrap();
    }

    #[test]
    fn a_descriptor_that_is_no_namespace_is_refused() {
        let home = own_netns();
        let not_ns = std::fs::File::open("/proc/self/stat").unwrap();
        let err = tcp_socket_in_netns(not_ns.as_fd(), home.as_fd(), libc::AF_INET).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EINVAL), "{err}");
    }
}

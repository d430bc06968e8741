//! The keeper of a sandbox's exec listener: a small host process (a fork of the spawner)
//! that holds a copy of the listener for the sandbox's whole life, so that a daemon
//! restart does not close the last copy (which would make every exec in the sandbox fail
//! with ENOSYS for good). It answers each connection on its socket (in the sandbox's
//! root-only directory, `DATA_DIR/sandboxes/<id>/exec.sock`) with the listener, and
//! exits when the listener hangs up, that is when no task of the sandbox is left. With
//! `tools.limits` it also keeps the limited tools' table (crate::toollimit::encode_table)
//! and sends it after the listener, so a restarted daemon identifies them again.
//!
//! It never reads notifications; it only holds the descriptor. It runs as the daemon's
//! user outside every namespace of the sandbox: sandboxed code cannot reach it.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

use safehouse_sys::process;

/// Forks the keeper (call from a single-threaded process: the spawner). `sock` is a
/// listening unix socket; the caller's copies of both descriptors stay the caller's.
/// `table`: the encoded tool table, empty without `tools.limits`.
pub(crate) fn start(listener: &OwnedFd, table: &[u8], sock: OwnedFd) -> io::Result<()> {
    match process::fork()? {
        Some(_) => Ok(()), // the spawner reaps it with its other children
        None => keep(listener, table, sock),
    }
}

fn keep(listener: &OwnedFd, table: &[u8], sock: OwnedFd) -> ! {
    let _ = process::setsid();
    if safehouse_sys::fs::close_all_except(&[listener.as_raw_fd(), sock.as_raw_fd()]).is_err() {
        process::exit_now(1);
    }
    let sock = UnixListener::from(sock);
    loop {
        // Events 0 on the listener: only its hang-up wakes us, not pending notifications.
        let ready = match process::poll_events(&[(listener.as_raw_fd(), 0), (sock.as_raw_fd(), libc::POLLIN)], -1) {
            Ok(r) => r,
            Err(_) => process::exit_now(1),
        };
        if ready[0] != 0 {
            process::exit_now(0);
        }
        if ready[1] != 0 {
            if let Ok((conn, _)) = sock.accept() {
                let conn = OwnedFd::from(conn);
                if safehouse_sys::unix::send_with_fds(&conn, b"L", &[listener.as_raw_fd()]).is_ok() {
                    let _ = std::os::unix::net::UnixStream::from(conn).write_all(table);
                }
            }
        }
    }
}

/// Most bytes of a tool table a keeper may send.
const MAX_TABLE: u64 = 4 << 20;

/// Fetches the listener and the tool table (empty without `tools.limits`, or from a
/// keeper older than per-tool limits in daemon sandboxes) from the keeper at `path` (a
/// restarted daemon).
pub fn fetch(path: &Path) -> io::Result<(OwnedFd, Vec<u8>)> {
    let stream = UnixStream::connect(path)?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
    let conn = OwnedFd::from(stream);
    let mut buf = [0u8; 1];
    let (n, fds) = safehouse_sys::unix::recv_with_fds(&conn, &mut buf)?;
    let fd = match fds.into_iter().next() {
        Some(fd) if n == 1 && buf[0] == b'L' => fd,
        _ => return Err(io::Error::other("the exec keeper sent no listener")),
    };
    let mut table = Vec::new();
    UnixStream::from(conn).take(MAX_TABLE).read_to_end(&mut table)?;
    Ok((fd, table))
}

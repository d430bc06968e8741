//! Descriptor-relative file syscalls for operating inside an untrusted directory tree.
//!
//! Every call takes a directory descriptor and a single name or a path resolved by
//! `openat2`; nothing here walks a string path on the host. Parsing of the kernel's
//! `getdents64` and inotify records is done in safe code over byte buffers.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use crate::{check, check_int};

pub use libc::{RESOLVE_BENEATH, RESOLVE_IN_ROOT, RESOLVE_NO_MAGICLINKS, RESOLVE_NO_SYMLINKS, RESOLVE_NO_XDEV};

/// The subset of `struct stat` file operations need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStat {
    pub dev: u64,
    pub ino: u64,
    /// Type and permission bits (`st_mode`).
    pub mode: u32,
    pub nlink: u64,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime_sec: i64,
    pub mtime_nsec: i64,
    pub atime_sec: i64,
    pub atime_nsec: i64,
    pub ctime_sec: i64,
    pub ctime_nsec: i64,
}

impl FileStat {
    /// The `S_IFMT` bits of `mode`.
    pub fn file_type(&self) -> u32 {
        self.mode & libc::S_IFMT
    }
}

/// `openat2(dir, path, {flags, mode, resolve})`. `O_CLOEXEC` is always added.
pub fn openat2(dir: BorrowedFd<'_>, path: &CStr, flags: i32, mode: u32, resolve: u64) -> io::Result<OwnedFd> {
    // SAFETY: open_how is plain data (three u64s); zeroed is a valid value.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.mode = mode as u64;
    how.resolve = resolve;
    // SAFETY: `path` is NUL-terminated and `how` is a fully initialised open_how whose size
    // is passed alongside it; both outlive the call. The kernel only reads them.
    let fd = check(unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            path.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    })?;
    // SAFETY: openat2 returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// `openat(dir, name, flags, mode)`. `O_CLOEXEC` is always added.
pub fn openat(dir: BorrowedFd<'_>, name: &CStr, flags: i32, mode: u32) -> io::Result<OwnedFd> {
    // SAFETY: `name` is NUL-terminated and outlives the call; the mode is passed as the
    // variadic argument openat expects.
    let fd = check_int(unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags | libc::O_CLOEXEC, mode) })?;
    // SAFETY: openat returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens the inode `fd` refers to (typically an `O_PATH` descriptor) again with `flags`,
/// through this process's `/proc/self/fd`. The new descriptor is the same inode on the
/// same mount; no name is looked up again.
pub fn reopen(fd: BorrowedFd<'_>, flags: i32) -> io::Result<OwnedFd> {
    let path = CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).expect("no NUL in a formatted number");
    // SAFETY: `path` is NUL-terminated and outlives the call.
    let new = check_int(unsafe { libc::open(path.as_ptr(), flags | libc::O_CLOEXEC | libc::O_NOCTTY) })?;
    // SAFETY: open returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// `fstatat(dir, name, flags)`; pass `AT_SYMLINK_NOFOLLOW` to stat a link itself.
pub fn fstatat(dir: BorrowedFd<'_>, name: &CStr, flags: i32) -> io::Result<FileStat> {
    // SAFETY: `stat` is plain data; zeroed is a valid value for fstatat to overwrite.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `name` is NUL-terminated and `st` writable; both outlive the call.
    check_int(unsafe { libc::fstatat(dir.as_raw_fd(), name.as_ptr(), &mut st, flags) })?;
    Ok(FileStat {
        dev: st.st_dev,
        ino: st.st_ino,
        mode: st.st_mode,
        nlink: st.st_nlink,
        uid: st.st_uid,
        gid: st.st_gid,
        size: st.st_size as u64,
        mtime_sec: st.st_mtime,
        mtime_nsec: st.st_mtime_nsec,
        atime_sec: st.st_atime,
        atime_nsec: st.st_atime_nsec,
        ctime_sec: st.st_ctime,
        ctime_nsec: st.st_ctime_nsec,
    })
}

/// `fstat` that also works on `O_PATH` descriptors and never follows a link.
pub fn fstat(fd: BorrowedFd<'_>) -> io::Result<FileStat> {
    fstatat(fd, c"", libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW)
}

/// The filesystem magic (`f_type`) of the filesystem holding `fd`.
pub fn fstatfs_type(fd: BorrowedFd<'_>) -> io::Result<i64> {
    // SAFETY: statfs is plain data; zeroed is valid.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is writable and outlives the call.
    check_int(unsafe { libc::fstatfs(fd.as_raw_fd(), &mut st) })?;
    Ok(st.f_type as i64)
}

/// The filesystem holding `fd`: its magic (`f_type`) and the bytes in use
/// (`(f_blocks - f_bfree) * f_bsize`).
pub fn fstatfs_used(fd: BorrowedFd<'_>) -> io::Result<(i64, u64)> {
    // SAFETY: statfs is plain data; zeroed is valid.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is writable and outlives the call.
    check_int(unsafe { libc::fstatfs(fd.as_raw_fd(), &mut st) })?;
    let used = (st.f_blocks as u64).saturating_sub(st.f_bfree as u64).saturating_mul(st.f_bsize as u64);
    Ok((st.f_type as i64, used))
}

/// `fstatfs`: the filesystem's magic, free bytes and free inodes (what an unprivileged
/// writer can still use).
pub fn fstatfs_free(fd: BorrowedFd<'_>) -> io::Result<(i64, u64, u64)> {
    // SAFETY: statfs is plain data; zeroed is valid.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is writable and outlives the call.
    check_int(unsafe { libc::fstatfs(fd.as_raw_fd(), &mut st) })?;
    Ok((st.f_type as i64, (st.f_bavail as u64).saturating_mul(st.f_bsize as u64), st.f_ffree as u64))
}

pub fn mkdirat(dir: BorrowedFd<'_>, name: &CStr, mode: u32) -> io::Result<()> {
    // SAFETY: `name` is NUL-terminated and outlives the call.
    check_int(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode) })?;
    Ok(())
}

pub fn mkfifoat(dir: BorrowedFd<'_>, name: &CStr, mode: u32) -> io::Result<()> {
    // SAFETY: `name` is NUL-terminated and outlives the call.
    check_int(unsafe { libc::mkfifoat(dir.as_raw_fd(), name.as_ptr(), mode) })?;
    Ok(())
}

/// `unlinkat(dir, name, flags)`; `AT_REMOVEDIR` removes an empty directory.
pub fn unlinkat(dir: BorrowedFd<'_>, name: &CStr, flags: i32) -> io::Result<()> {
    // SAFETY: `name` is NUL-terminated and outlives the call.
    check_int(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), flags) })?;
    Ok(())
}

/// `renameat2`; `flags` takes `RENAME_NOREPLACE` or `RENAME_EXCHANGE`.
pub fn renameat2(
    old_dir: BorrowedFd<'_>,
    old: &CStr,
    new_dir: BorrowedFd<'_>,
    new: &CStr,
    flags: u32,
) -> io::Result<()> {
    // SAFETY: both names are NUL-terminated and outlive the call.
    check_int(unsafe { libc::renameat2(old_dir.as_raw_fd(), old.as_ptr(), new_dir.as_raw_fd(), new.as_ptr(), flags) })?;
    Ok(())
}

pub use libc::{RENAME_EXCHANGE, RENAME_NOREPLACE};

/// `fchownat(fd, name, uid, gid, flags)`; with an empty name and `AT_EMPTY_PATH` it
/// changes the inode `fd` itself refers to, `O_PATH` descriptors included.
pub fn fchownat(fd: BorrowedFd<'_>, name: &CStr, uid: u32, gid: u32, flags: i32) -> io::Result<()> {
    // SAFETY: `name` is NUL-terminated and outlives the call.
    check_int(unsafe { libc::fchownat(fd.as_raw_fd(), name.as_ptr(), uid, gid, flags) })?;
    Ok(())
}

/// `fchmod` on an open (not `O_PATH`) descriptor.
pub fn fchmod(fd: BorrowedFd<'_>, mode: u32) -> io::Result<()> {
    // SAFETY: fchmod on an integer descriptor has no memory effects.
    check_int(unsafe { libc::fchmod(fd.as_raw_fd(), mode) })?;
    Ok(())
}

/// The target of the symbolic link `name` in `dir`, at most `PATH_MAX` bytes.
pub fn readlinkat(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
    // SAFETY: `buf` is writable for `buf.len()` bytes and `name` is NUL-terminated.
    let n = check(unsafe {
        libc::readlinkat(dir.as_raw_fd(), name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) as libc::c_long
    })? as usize;
    buf.truncate(n.min(libc::PATH_MAX as usize));
    Ok(buf)
}

/// Sets or clears `O_NONBLOCK` on an open file description.
pub fn set_nonblocking(fd: BorrowedFd<'_>, on: bool) -> io::Result<()> {
    // SAFETY: fcntl F_GETFL takes no pointer.
    let flags = check_int(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) })?;
    let flags = if on { flags | libc::O_NONBLOCK } else { flags & !libc::O_NONBLOCK };
    // SAFETY: fcntl F_SETFL with an integer flag.
    check_int(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags) })?;
    Ok(())
}

/// Moves a directory descriptor back to its first entry.
pub fn rewind_dir(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: lseek on an integer descriptor has no memory effects.
    check(unsafe { libc::lseek(fd.as_raw_fd(), 0, libc::SEEK_SET) } as libc::c_long)?;
    Ok(())
}

/// One `getdents64` call into `buf`; returns the bytes filled (0 at the end). Parse the
/// result with [`dirents`].
pub fn getdents64(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is writable for `buf.len()` bytes for the duration of the call.
    let n = check(unsafe { libc::syscall(libc::SYS_getdents64, fd.as_raw_fd(), buf.as_mut_ptr(), buf.len()) })?;
    Ok(n as usize)
}

/// One `linux_dirent64` record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dirent<'a> {
    pub ino: u64,
    /// `DT_*`; `DT_UNKNOWN` when the filesystem does not say.
    pub kind: u8,
    pub name: &'a [u8],
}

/// The records of a buffer filled by [`getdents64`]. Stops at the first malformed record.
pub fn dirents(buf: &[u8]) -> impl Iterator<Item = Dirent<'_>> {
    // Layout: d_ino u64, d_off i64, d_reclen u16, d_type u8, d_name NUL-terminated.
    const NAME_OFFSET: usize = 19;
    let mut at = 0usize;
    std::iter::from_fn(move || {
        let rec = buf.get(at..)?;
        if rec.len() < NAME_OFFSET {
            return None;
        }
        let reclen = u16::from_ne_bytes([rec[16], rec[17]]) as usize;
        if reclen < NAME_OFFSET || reclen > rec.len() {
            return None;
        }
        let ino = u64::from_ne_bytes(rec[0..8].try_into().ok()?);
        let raw_name = &rec[NAME_OFFSET..reclen];
        let name = &raw_name[..raw_name.iter().position(|&b| b == 0).unwrap_or(raw_name.len())];
        at += reclen;
        Some(Dirent { ino, kind: rec[18], name })
    })
}

/// A non-blocking, close-on-exec inotify instance.
pub fn inotify_init() -> io::Result<OwnedFd> {
    // SAFETY: inotify_init1 takes only flags.
    let fd = check_int(unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) })?;
    // SAFETY: inotify_init1 returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Watches the inode an open descriptor refers to, through `/proc/self/fd`, so no name is
/// resolved anywhere but in the descriptor table. Returns the watch descriptor.
pub fn inotify_add_watch_fd(inotify: BorrowedFd<'_>, target: BorrowedFd<'_>, mask: u32) -> io::Result<i32> {
    let path = CString::new(format!("/proc/self/fd/{}", target.as_raw_fd())).expect("no NUL in a formatted number");
    // SAFETY: `path` is NUL-terminated and outlives the call.
    check_int(unsafe { libc::inotify_add_watch(inotify.as_raw_fd(), path.as_ptr(), mask) })
}

pub fn inotify_rm_watch(inotify: BorrowedFd<'_>, wd: i32) -> io::Result<()> {
    // SAFETY: inotify_rm_watch takes two integers.
    check_int(unsafe { libc::inotify_rm_watch(inotify.as_raw_fd(), wd) })?;
    Ok(())
}

/// One `struct inotify_event`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InotifyEvent<'a> {
    pub wd: i32,
    pub mask: u32,
    pub cookie: u32,
    /// Empty for events about the watched inode itself.
    pub name: &'a [u8],
}

/// The records of a buffer read from an inotify descriptor. Stops at the first malformed
/// record.
pub fn inotify_events(buf: &[u8]) -> impl Iterator<Item = InotifyEvent<'_>> {
    const HEADER: usize = 16;
    let mut at = 0usize;
    std::iter::from_fn(move || {
        let rec = buf.get(at..)?;
        if rec.len() < HEADER {
            return None;
        }
        let word = |i: usize| [rec[i], rec[i + 1], rec[i + 2], rec[i + 3]];
        let len = u32::from_ne_bytes(word(12)) as usize;
        let raw_name = rec.get(HEADER..HEADER.checked_add(len)?)?;
        let name = &raw_name[..raw_name.iter().position(|&b| b == 0).unwrap_or(raw_name.len())];
        at += HEADER + len;
        Some(InotifyEvent {
            wd: i32::from_ne_bytes(word(0)),
            mask: u32::from_ne_bytes(word(4)),
            cookie: u32::from_ne_bytes(word(8)),
            name,
        })
    })
}

/// Sets this thread's filesystem uid and gid (setfsgid, then setfsuid); returns the
/// previous pair. Per thread: the other threads of the process keep theirs.
pub fn set_fs_ids(uid: u32, gid: u32) -> (u32, u32) {
    // SAFETY: setfsgid/setfsuid take integers and return the previous id.
    let old_gid = unsafe { libc::setfsgid(gid) } as u32;
    // SAFETY: as above.
    let old_uid = unsafe { libc::setfsuid(uid) } as u32;
    (old_uid, old_gid)
}

/// Restores what `set_fs_ids` returned (uid first, so the gid change is permitted).
pub fn restore_fs_ids(old: (u32, u32)) {
    // SAFETY: integer-only calls.
    unsafe {
        libc::setfsuid(old.0);
        libc::setfsgid(old.1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dirents_parse_and_stop_at_garbage() {
        let mut buf = Vec::new();
        for (ino, kind, name) in [(7u64, libc::DT_DIR, &b"."[..]), (9, libc::DT_REG, b"hello.txt")] {
            let reclen = (19 + name.len() + 1).next_multiple_of(8);
            let start = buf.len();
            buf.extend_from_slice(&ino.to_ne_bytes());
            buf.extend_from_slice(&0i64.to_ne_bytes());
            buf.extend_from_slice(&(reclen as u16).to_ne_bytes());
            buf.push(kind);
            buf.extend_from_slice(name);
            buf.resize(start + reclen, 0);
        }
        buf.extend_from_slice(&[0xff; 5]);
        let got: Vec<_> = dirents(&buf).collect();
        assert_eq!(got.len(), 2);
        assert_eq!(got[1], Dirent { ino: 9, kind: libc::DT_REG, name: b"hello.txt" });
    }

    #[test]
    fn inotify_events_parse_and_stop_at_truncation() {
        let mut buf = Vec::new();
        for (wd, name) in [(1i32, &b""[..]), (2, b"file\0\0\0")] {
            buf.extend_from_slice(&wd.to_ne_bytes());
            buf.extend_from_slice(&libc::IN_CREATE.to_ne_bytes());
            buf.extend_from_slice(&0u32.to_ne_bytes());
            buf.extend_from_slice(&(name.len() as u32).to_ne_bytes());
            buf.extend_from_slice(name);
        }
        buf.extend_from_slice(&3i32.to_ne_bytes());
        let got: Vec<_> = inotify_events(&buf).collect();
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].name, b"file");
        assert_eq!(got[0].wd, 1);
    }
}

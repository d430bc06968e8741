//! Mount syscalls: the classic API and the new fd-based one.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::ptr;

use crate::{check, check_int, cstr};

pub use libc::{
    MNT_DETACH, MS_BIND, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_PRIVATE, MS_RDONLY, MS_REC, MS_REMOUNT, MS_SLAVE,
};

pub const MOUNT_ATTR_RDONLY: u64 = 0x0000_0001;
pub const MOUNT_ATTR_NOSUID: u64 = 0x0000_0002;
pub const MOUNT_ATTR_NODEV: u64 = 0x0000_0004;
pub const MOUNT_ATTR_NOEXEC: u64 = 0x0000_0008;
pub const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

const AT_RECURSIVE: u32 = 0x8000;
const OPEN_TREE_CLONE: u32 = 1;
const MOVE_MOUNT_F_EMPTY_PATH: u32 = 0x0000_0004;

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// mount(2). `source`, `fstype` and `data` may be absent.
pub fn mount(
    source: Option<&str>,
    target: &str,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> io::Result<()> {
    let source = source.map(cstr).transpose()?;
    let target = cstr(target)?;
    let fstype = fstype.map(cstr).transpose()?;
    let data = data.map(cstr).transpose()?;
    let p = |c: &Option<CString>| c.as_ref().map_or(ptr::null(), |c| c.as_ptr());
    // SAFETY: every pointer is either null or a NUL-terminated string owned by this frame
    // and alive for the whole call.
    check_int(unsafe { libc::mount(p(&source), target.as_ptr(), p(&fstype), flags, p(&data) as *const libc::c_void) })?;
    Ok(())
}

pub fn umount2(target: &str, flags: libc::c_int) -> io::Result<()> {
    let target = cstr(target)?;
    // SAFETY: `target` is a NUL-terminated string alive for the call.
    check_int(unsafe { libc::umount2(target.as_ptr(), flags) })?;
    Ok(())
}

pub fn pivot_root(new_root: &str, put_old: &str) -> io::Result<()> {
    let new_root = cstr(new_root)?;
    let put_old = cstr(put_old)?;
    // SAFETY: both arguments are NUL-terminated strings alive for the call.
    check(unsafe { libc::syscall(libc::SYS_pivot_root, new_root.as_ptr(), put_old.as_ptr()) })?;
    Ok(())
}

/// mount_setattr(2) on `path`, recursively when asked: sets and clears mount attributes,
/// optionally with an idmapping user namespace.
pub fn set_attr(
    dirfd: Option<&OwnedFd>,
    path: &str,
    recursive: bool,
    set: u64,
    clear: u64,
    userns: Option<&OwnedFd>,
) -> io::Result<()> {
    let path = cstr(path)?;
    let attr = MountAttr {
        attr_set: set,
        attr_clr: clear,
        propagation: 0,
        userns_fd: userns.map_or(0, |f| f.as_raw_fd() as u64),
    };
    let mut flags: u32 = if recursive { AT_RECURSIVE } else { 0 };
    if dirfd.is_some() && path.as_bytes().is_empty() {
        flags |= libc::AT_EMPTY_PATH as u32;
    }
    let fd = dirfd.map_or(libc::AT_FDCWD, |f| f.as_raw_fd());
    // SAFETY: `path` is NUL-terminated, `attr` is a valid mount_attr of the size passed,
    // both alive for the call; `fd` is AT_FDCWD or an open descriptor we borrow.
    check(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd,
            path.as_ptr(),
            flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    })?;
    Ok(())
}

/// open_tree(2) with OPEN_TREE_CLONE: a detached copy of the mount tree at `path`.
pub fn clone_tree(path: &str, recursive: bool) -> io::Result<OwnedFd> {
    let path = cstr(path)?;
    let mut flags = OPEN_TREE_CLONE | libc::O_CLOEXEC as u32;
    if recursive {
        flags |= AT_RECURSIVE;
    }
    // SAFETY: `path` is NUL-terminated and alive for the call.
    let fd = check(unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, path.as_ptr(), flags) })?;
    // SAFETY: open_tree returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// move_mount(2) of a detached tree onto `target`.
pub fn attach_tree(tree: &OwnedFd, target: &str) -> io::Result<()> {
    let empty = cstr("")?;
    let target = cstr(target)?;
    // SAFETY: both strings are NUL-terminated and alive; `tree` is an open mount fd.
    check(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    })?;
    Ok(())
}

/// statvfs flags of the mount holding `path` (to keep locked flags when remounting).
pub fn statvfs_flags(path: &str) -> io::Result<u64> {
    let p = cstr(path)?;
    // SAFETY: statvfs is plain data, zeroed is valid.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `p` is NUL-terminated, `st` writable, both alive for the call.
    check_int(unsafe { libc::statvfs(p.as_ptr(), &mut st) })?;
    Ok(st.f_flag)
}

//! Landlock syscalls (there is no libc wrapper).

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use crate::{check, cstr};

const CREATE_RULESET_VERSION: u32 = 1 << 0;
const RULE_PATH_BENEATH: u32 = 1;

#[repr(C)]
struct RulesetAttr {
    handled_access_fs: u64,
    handled_access_net: u64,
    scoped: u64,
}

#[repr(C, packed)]
struct PathBeneathAttr {
    allowed_access: u64,
    parent_fd: i32,
}

/// The Landlock ABI version of the running kernel, or the error saying why it has none
/// (ENOSYS: not built in; EOPNOTSUPP: disabled at boot).
pub fn abi_version() -> io::Result<u32> {
    // SAFETY: with the VERSION flag the attribute pointer must be null and size zero.
    let v = check(unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<RulesetAttr>(),
            0usize,
            CREATE_RULESET_VERSION,
        )
    })?;
    Ok(v as u32)
}

/// Creates a ruleset handling `fs` rights and `scoped` scopes. The size passed tells the
/// kernel which fields we use, so older kernels (without `scoped`) still accept it when
/// `scoped` is zero.
pub fn create_ruleset(fs: u64, scoped: u64) -> io::Result<OwnedFd> {
    create_ruleset_with_net(fs, 0, scoped)
}

/// Like [`create_ruleset`], also handling the `net` rights (ABI 4: TCP bind and connect).
pub fn create_ruleset_with_net(fs: u64, net: u64, scoped: u64) -> io::Result<OwnedFd> {
    let attr = RulesetAttr { handled_access_fs: fs, handled_access_net: net, scoped };
    let size = if scoped == 0 { 16 } else { std::mem::size_of::<RulesetAttr>() };
    // SAFETY: `attr` is a valid ruleset_attr whose first `size` bytes the kernel reads.
    let fd =
        check(unsafe { libc::syscall(libc::SYS_landlock_create_ruleset, &attr as *const RulesetAttr, size, 0u32) })?;
    // SAFETY: the kernel returned a new descriptor we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Grants `access` beneath `path` (opened O_PATH here).
pub fn add_path_rule(ruleset: &OwnedFd, path: &str, access: u64) -> io::Result<()> {
    let p = cstr(path)?;
    // SAFETY: `p` is NUL-terminated; O_PATH opens no data.
    let fd = check(unsafe { libc::open(p.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) } as libc::c_long)?;
    // SAFETY: `fd` is the descriptor open() just returned, owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    add_fd_rule(ruleset, fd.as_fd(), access)
}

/// Grants `access` on what `fd` refers to: beneath it for a directory, the file itself
/// otherwise (then only file rights are accepted).
pub fn add_fd_rule(ruleset: &OwnedFd, fd: BorrowedFd<'_>, access: u64) -> io::Result<()> {
    let attr = PathBeneathAttr { allowed_access: access, parent_fd: fd.as_raw_fd() };
    // SAFETY: `attr` is a valid path_beneath_attr alive for the call; descriptors are open.
    check(unsafe {
        libc::syscall(
            libc::SYS_landlock_add_rule,
            ruleset.as_raw_fd(),
            RULE_PATH_BENEATH,
            &attr as *const PathBeneathAttr,
            0u32,
        )
    })?;
    Ok(())
}

/// Enforces the ruleset on this thread and its future children (needs no_new_privs).
pub fn restrict_self(ruleset: &OwnedFd) -> io::Result<()> {
    // SAFETY: integer arguments; the descriptor is open.
    check(unsafe { libc::syscall(libc::SYS_landlock_restrict_self, ruleset.as_raw_fd(), 0u32) })?;
    Ok(())
}

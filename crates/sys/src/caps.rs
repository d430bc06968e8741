//! Capabilities, securebits, no_new_privs and identity changes.

use std::io;

use crate::{check, check_int};

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Highest capability number the running kernel knows.
pub fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(40)
}

/// Drops every capability from the bounding set (needs CAP_SETPCAP in the current user
/// namespace), so no later execve can regain any.
pub fn drop_bounding_set() -> io::Result<()> {
    drop_bounding_set_except(0)
}

/// Drops every capability but those in `keep` (a bit mask) from the bounding set.
pub fn drop_bounding_set_except(keep: u64) -> io::Result<()> {
    for cap in 0..=last_cap() {
        if cap < 64 && keep & (1u64 << cap) != 0 {
            continue;
        }
        // SAFETY: prctl with PR_CAPBSET_DROP takes an integer capability number only.
        let r = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
        if r < 0 {
            let e = io::Error::last_os_error();
            // A capability number this kernel does not know is already absent.
            if e.raw_os_error() != Some(libc::EINVAL) {
                return Err(e);
            }
        }
    }
    Ok(())
}

/// Sets the permitted and effective sets to `caps` (a bit mask), the inheritable set to
/// empty.
pub fn set_capabilities(caps: u64) -> io::Result<()> {
    let mut header = CapHeader { version: LINUX_CAPABILITY_VERSION_3, pid: 0 };
    let mut data = [CapData::default(); 2];
    for (i, d) in data.iter_mut().enumerate() {
        let bits = (caps >> (32 * i)) as u32;
        d.effective = bits;
        d.permitted = bits;
    }
    // SAFETY: header and data are valid, properly sized v3 structures (two CapData for
    // 64 capability bits) that outlive the call.
    check(unsafe { libc::syscall(libc::SYS_capset, &mut header as *mut CapHeader, data.as_ptr()) })?;
    Ok(())
}

pub fn clear_ambient() -> io::Result<()> {
    // SAFETY: integer-only prctl.
    check_int(unsafe { libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) })?;
    Ok(())
}

/// Sets the effective, permitted and inheritable sets to empty.
pub fn clear_all() -> io::Result<()> {
    let mut header = CapHeader { version: LINUX_CAPABILITY_VERSION_3, pid: 0 };
    let data = [CapData::default(); 2];
    // SAFETY: header and data are valid, properly sized v3 structures (two CapData for
    // 64 capability bits) that outlive the call.
    check(unsafe { libc::syscall(libc::SYS_capset, &mut header as *mut CapHeader, data.as_ptr()) })?;
    Ok(())
}

pub fn set_no_new_privs() -> io::Result<()> {
    // SAFETY: integer-only prctl.
    check_int(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) })?;
    Ok(())
}

pub fn set_keep_caps(on: bool) -> io::Result<()> {
    // SAFETY: integer-only prctl.
    check_int(unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, on as libc::c_ulong, 0, 0, 0) })?;
    Ok(())
}

/// Sets the process's securebits (needs CAP_SETPCAP).
pub fn set_securebits(bits: u32) -> io::Result<()> {
    // SAFETY: integer-only prctl.
    check_int(unsafe { libc::prctl(libc::PR_SET_SECUREBITS, bits as libc::c_ulong, 0, 0, 0) })?;
    Ok(())
}

/// SECBIT_NOROOT | SECBIT_NOROOT_LOCKED | SECBIT_NO_SETUID_FIXUP(_LOCKED) |
/// SECBIT_KEEP_CAPS_LOCKED | SECBIT_NO_CAP_AMBIENT_RAISE(_LOCKED): root gains nothing by
/// exec, and nothing can be raised again.
pub const SECBITS_LOCKED_DOWN: u32 = 0x01 | 0x02 | 0x04 | 0x08 | 0x20 | 0x40 | 0x80;

pub fn setgroups_empty() -> io::Result<()> {
    // SAFETY: a zero-length list with a null pointer is valid for setgroups.
    check_int(unsafe { libc::setgroups(0, std::ptr::null()) })?;
    Ok(())
}

pub fn setresgid(gid: u32) -> io::Result<()> {
    // SAFETY: integer-only syscall.
    check_int(unsafe { libc::setresgid(gid, gid, gid) })?;
    Ok(())
}

pub fn setresuid(uid: u32) -> io::Result<()> {
    // SAFETY: integer-only syscall.
    check_int(unsafe { libc::setresuid(uid, uid, uid) })?;
    Ok(())
}

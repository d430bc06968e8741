//! Thin syscall wrappers: the one crate of safehouse allowed to contain `unsafe`.
//!
//! Each wrapper does one call, checks its result and turns failure into `io::Error`.
//! Policy decisions never live here.

pub mod agent_support;
pub mod btrfs;
pub mod caps;
pub mod files;
pub mod fs;
pub mod landlock;
pub mod mount;
pub mod net;
pub mod pipe;
pub mod process;
pub mod seccomp;
pub mod unix;

use std::ffi::CString;
use std::io;

/// Converts a `-1`-means-failure return value into a `Result`.
pub(crate) fn check(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

pub(crate) fn check_int(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// A path as a C string, refusing interior NUL bytes.
pub fn cstr(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, format!("path {s:?} contains a NUL byte")))
}

/// The kernel release string (`uname -r`).
pub fn kernel_release() -> String {
    // SAFETY: `utsname` is plain data; zeroed is a valid value and uname fills it.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `u` is a valid, writable utsname.
    if unsafe { libc::uname(&mut u) } != 0 {
        return "unknown".into();
    }
    // SAFETY: uname NUL-terminates `release` within the array.
    unsafe { std::ffi::CStr::from_ptr(u.release.as_ptr()) }.to_string_lossy().into_owned()
}

pub fn getuid() -> u32 {
    // SAFETY: getuid cannot fail and has no memory effects.
    unsafe { libc::getuid() }
}

pub fn getgid() -> u32 {
    // SAFETY: getgid cannot fail and has no memory effects.
    unsafe { libc::getgid() }
}

pub fn getegid() -> u32 {
    // SAFETY: getegid cannot fail and has no memory effects.
    unsafe { libc::getegid() }
}

pub fn geteuid() -> u32 {
    // SAFETY: geteuid cannot fail and has no memory effects.
    unsafe { libc::geteuid() }
}

pub fn getpid() -> i32 {
    // SAFETY: getpid cannot fail and has no memory effects.
    unsafe { libc::getpid() }
}

/// Monotonic clock in nanoseconds.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid timespec to write into.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

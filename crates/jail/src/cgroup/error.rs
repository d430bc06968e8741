//! The one error type of the cgroup module.

use std::io;
use std::path::{Path, PathBuf};

/// Why creating, driving or removing a cgroup failed.
///
/// Variants carry the cgroupfs path involved and the `io::Error`; messages are
/// lowercase and end with what to do when there is something to do.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// The cgroup name is not 1..=64 characters of `[A-Za-z0-9_-]`.
    #[error("invalid cgroup name {name:?}: use 1 to 64 characters from [A-Za-z0-9_-]")]
    InvalidName { name: String },

    /// A limit value the kernel would reject or that makes no sense.
    #[error("invalid {limit} limit {value}: {expected}")]
    InvalidLimit { limit: &'static str, value: String, expected: &'static str },

    /// A pid that cannot name another process (0 would move the writer itself).
    #[error("invalid pid {pid}: give the positive pid of the process to move")]
    InvalidPid { pid: i32 },

    /// Neither cgroup v1 hierarchies nor a cgroup2 mount were found.
    #[error("no usable cgroups on this host: {reason}")]
    Unavailable { reason: String },

    /// A controller needed for a limit or a statistic is not mounted (v1) or
    /// not enabled/available (v2).
    #[error(
        "cgroup controller {controller} is not available here but is needed for {purpose} — \
         enable it on the host (v1: mount its hierarchy; v2: make it available in the parent's \
         cgroup.controllers) or drop that limit"
    )]
    ControllerMissing { controller: &'static str, purpose: &'static str },

    /// `mkdir` of a cgroup directory failed.
    #[error("cannot create cgroup {}: {}{}", .path.display(), describe(.source), create_hint(.source))]
    Create { path: PathBuf, source: io::Error },

    /// Writing a control file failed.
    #[error(
        "cannot write {value:?} to {}: {}{}",
        .path.display(),
        describe(.source),
        write_hint(.path, .source)
    )]
    Write { path: PathBuf, value: String, source: io::Error },

    /// Reading a control or statistics file failed.
    #[error("cannot read {}: {}", .path.display(), describe(.source))]
    Read { path: PathBuf, source: io::Error },

    /// A control file did not hold what the kernel documents.
    #[error("unexpected contents in {}: {detail}", .path.display())]
    Parse { path: PathBuf, detail: String },

    /// A bounded wait (freeze, thaw, kill) ran out of time.
    #[error(
        "timed out after {waited_ms} ms waiting for {} to {what} — a task may be stuck in \
         uninterruptible sleep; retry or inspect the cgroup",
        .path.display()
    )]
    Timeout { path: PathBuf, what: &'static str, waited_ms: u64 },

    /// `rmdir` of a cgroup directory failed.
    #[error("cannot remove cgroup {}: {}{}", .path.display(), describe(.source), remove_hint(.source))]
    Remove { path: PathBuf, source: io::Error },

    /// Sending SIGKILL to the cgroup's processes failed.
    #[error("cannot kill the processes of cgroup {}: {}", .path.display(), describe(.source))]
    Kill { path: PathBuf, source: io::Error },
}

/// `io::Error`'s text with a lowercase first letter, to fit our messages.
fn describe(err: &io::Error) -> String {
    let text = err.to_string();
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => text,
    }
}

fn create_hint(err: &io::Error) -> &'static str {
    match err.kind() {
        io::ErrorKind::PermissionDenied => " — run as root or delegate a cgroup v2 subtree to this user",
        io::ErrorKind::AlreadyExists => " — another sandbox uses this name; pick a unique name or sweep stale cgroups",
        _ if err.raw_os_error() == Some(libc::EROFS) => {
            " — cgroupfs is mounted read-only here; run on the host or mount it read-write"
        }
        _ => "",
    }
}

fn write_hint(path: &Path, err: &io::Error) -> &'static str {
    let file = path.file_name().and_then(|f| f.to_str()).unwrap_or("");
    match (file, err.raw_os_error()) {
        ("cgroup.subtree_control", Some(libc::EBUSY)) => {
            " — the parent cgroup holds processes itself; move them into a leaf cgroup first \
             (cgroup v2 no-internal-processes rule)"
        }
        ("cgroup.procs", Some(libc::ESRCH)) => " — the process has already exited",
        ("cgroup.procs", Some(libc::EACCES | libc::EPERM)) => {
            " — run as root, or keep the process and the cgroup inside one delegated subtree"
        }
        (_, Some(libc::EACCES | libc::EPERM)) => " — run as root or delegate a cgroup v2 subtree to this user",
        _ => "",
    }
}

fn remove_hint(err: &io::Error) -> &'static str {
    match err.raw_os_error() {
        Some(libc::EBUSY) | Some(libc::ENOTEMPTY) => {
            " — processes or child cgroups are still inside; kill them and retry"
        }
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_permission_denied_says_what_to_do() {
        let err = CgroupError::Create {
            path: PathBuf::from("/sys/fs/cgroup/memory/safehouse/x"),
            source: io::Error::from_raw_os_error(libc::EACCES),
        };
        assert_eq!(
            err.to_string(),
            "cannot create cgroup /sys/fs/cgroup/memory/safehouse/x: permission denied \
             (os error 13) — run as root or delegate a cgroup v2 subtree to this user"
        );
    }

    #[test]
    fn subtree_control_ebusy_explains_the_v2_rule() {
        let err = CgroupError::Write {
            path: PathBuf::from("/sys/fs/cgroup/cgroup.subtree_control"),
            value: "+memory".into(),
            source: io::Error::from_raw_os_error(libc::EBUSY),
        };
        assert!(err.to_string().contains("no-internal-processes"), "{err}");
    }
}

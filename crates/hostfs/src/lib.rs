//! Host-side file operations inside a running sandbox, performed by the daemon on an API
//! caller's behalf, and change notifications on the sandbox's tree.
//!
//! The sandbox is hostile: it plants symlinks to host paths, swaps directories for
//! symlinks mid-operation, leaves FIFOs and devices where we read, and builds huge trees.
//! So no path from a request is ever walked on the host. Every lookup starts from the
//! sandbox's root descriptor ([`SandboxRoot::dir`], `/proc/<agent>/root`) with
//! `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`, which clamps `..` and absolute
//! symlink targets at that root; everything after the lookup works on descriptors
//! (`fstat`, `getdents64`, `*at` calls relative to the parent directory's descriptor).
//!
//! The functions are synchronous; call them from `tokio::task::spawn_blocking`.

#![forbid(unsafe_code)]

mod error;
mod info;
mod list;
mod ops;
mod path;
mod resolve;
mod watch;

#[cfg(test)]
mod tests;

pub use error::{FileError, Result};
pub use info::{FileInfo, FileType};
pub use list::list;
pub use ops::{create_write, mkdir, open_read, remove, rename, stat, NewFile};
pub use watch::{watch, FsEvent, FsEventType, Watcher};

use std::os::fd::OwnedFd;
use std::sync::Arc;

/// A sandbox's root, opened from the host side (`/proc/<agent>/root`): file operations
/// resolve every path beneath it with `openat2(RESOLVE_IN_ROOT)`.
#[derive(Debug, Clone)]
pub struct SandboxRoot {
    pub dir: Arc<OwnedFd>,
    /// Host uid/gid that own files the sandbox creates (files uploaded are chowned to them).
    pub uid: u32,
    pub gid: u32,
}

/// Longest request path accepted, in bytes.
pub const MAX_PATH_BYTES: usize = 4096;
/// Longest single path component accepted, in bytes.
pub const MAX_NAME_BYTES: usize = 255;
/// Deepest `list` recursion (`depth` is 1..=this).
pub const MAX_LIST_DEPTH: u32 = 16;
/// Most entries one `list` returns before failing with [`FileError::TooMany`].
pub const MAX_LIST_ENTRIES: usize = 100_000;
/// Most entries one recursive `remove` deletes before failing with [`FileError::TooMany`].
pub const MAX_REMOVE_ENTRIES: usize = 1_000_000;
/// Deepest directory nesting a recursive `remove` descends into.
pub const MAX_REMOVE_DEPTH: usize = 256;
/// Most directories one recursive [`Watcher`] watches.
pub const MAX_WATCHES: usize = 8192;

/// File operations run with the sandbox user's filesystem identity: files they create
/// belong to it (and can be created at all: the sandbox's tmpfs belongs to its user
/// namespace, where the daemon's root has no mapping — EOVERFLOW), and permissions are
/// checked as the sandbox would see them. Per thread; restored when dropped.
pub(crate) struct AsSandboxUser {
    old: (u32, u32),
}

pub(crate) fn as_sandbox_user(root: &SandboxRoot) -> AsSandboxUser {
    AsSandboxUser { old: safehouse_sys::files::set_fs_ids(root.uid, root.gid) }
}

impl Drop for AsSandboxUser {
    fn drop(&mut self) {
        safehouse_sys::files::restore_fs_ids(self.old);
    }
}

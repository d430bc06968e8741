//! Directory listings, recursive to a bounded depth and size.

use std::os::fd::{AsFd, BorrowedFd};

use super::error::{errno, FileError, Result};
use super::info::{FileInfo, FileType};
use super::path::{join_display, SandboxPath};
use super::resolve::{open_in_root, read_names};
use super::{SandboxRoot, MAX_LIST_DEPTH, MAX_LIST_ENTRIES};

/// The entries under the directory `path` (a symlink there is followed inside the root),
/// `depth` levels deep (1 = direct children), sorted by name within each directory, each
/// directory followed by its own entries. Symlinks to directories are listed, never
/// descended into. More than [`MAX_LIST_ENTRIES`] entries is [`FileError::TooMany`].
pub fn list(root: &SandboxRoot, path: &str, depth: u32) -> Result<Vec<FileInfo>> {
    let _as = super::as_sandbox_user(root);
    list_bounded(root, path, depth, MAX_LIST_ENTRIES)
}

/// [`list`] with another entry limit.
pub(super) fn list_bounded(root: &SandboxRoot, path: &str, depth: u32, limit: usize) -> Result<Vec<FileInfo>> {
    if !(1..=MAX_LIST_DEPTH).contains(&depth) {
        return Err(FileError::InvalidArgument(format!("depth must be between 1 and {MAX_LIST_DEPTH}, not {depth}")));
    }
    let p = SandboxPath::parse(path)?;
    let dir = open_in_root(root, &p, libc::O_RDONLY | libc::O_DIRECTORY)?;
    let mut walk = Walk { budget: limit, limit, out: Vec::new() };
    walk.dir(dir.as_fd(), &p.display(), depth)?;
    Ok(walk.out)
}

struct Walk {
    /// Names that may still be read. It counts names read, not only entries returned, so
    /// the names held by every level of the walk together stay within the limit.
    budget: usize,
    limit: usize,
    out: Vec<FileInfo>,
}

impl Walk {
    fn dir(&mut self, dir: BorrowedFd<'_>, shown: &str, depth: u32) -> Result<()> {
        let (mut names, more) = read_names(dir, self.budget, shown)?;
        if more {
            return Err(FileError::TooMany { what: "directory entries".into(), limit: self.limit });
        }
        self.budget -= names.len();
        names.sort_unstable();
        for (raw, _) in names {
            let Ok(name) = std::ffi::CString::new(raw) else { continue };
            let child = join_display(shown, name.as_bytes());
            let info = match FileInfo::at(dir, &name, child.clone()) {
                Ok(info) => info,
                // Removed since the directory was read.
                Err(e) if errno(&e) == libc::ENOENT => continue,
                Err(e) => return Err(FileError::from_io(child, e)),
            };
            let descend = depth > 1 && info.kind == FileType::Dir;
            self.out.push(info);
            if !descend {
                continue;
            }
            // O_NOFOLLOW: if the directory was swapped for a symlink since the stat, skip it.
            match safehouse_sys::files::openat(dir, &name, libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW, 0) {
                Ok(sub) => self.dir(sub.as_fd(), &child, depth - 1)?,
                Err(e)
                    if matches!(errno(&e), libc::ENOENT | libc::ENOTDIR | libc::ELOOP | libc::EACCES | libc::EPERM) => {
                }
                Err(e) => return Err(FileError::from_io(child, e)),
            }
        }
        Ok(())
    }
}

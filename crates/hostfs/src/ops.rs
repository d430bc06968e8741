//! Download, upload, stat, mkdir, move and remove.

use std::ffi::CStr;
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use safehouse_sys::files as sys;

use super::error::{errno, FileError, Result};
use super::info::FileInfo;
use super::path::{cname, join_display, SandboxPath};
use super::resolve::{
    adopt_new_dir, check_data_fs, kind_name, mkdir_all, open_dir, open_in_root, open_parent, read_names,
};
use super::{SandboxRoot, MAX_REMOVE_DEPTH, MAX_REMOVE_ENTRIES};

/// How often an upload retries when the sandbox keeps replacing the target between our
/// steps.
const RACE_RETRIES: usize = 16;

/// Names a recursive remove reads from a directory at a time.
const REMOVE_BATCH: usize = 256;

/// Opens a regular file for download, following symlinks inside the sandbox root.
///
/// The file is first opened `O_PATH` (which opens nothing: no FIFO blocks, no device
/// driver runs), checked, and only then reopened for reading through its descriptor.
pub fn open_read(root: &SandboxRoot, path: &str) -> Result<(File, FileInfo)> {
    let _as = super::as_sandbox_user(root);
    let p = SandboxPath::parse(path)?;
    let shown = p.display();
    let handle = open_in_root(root, &p, libc::O_PATH)?;
    let st = sys::fstat(handle.as_fd()).map_err(|e| FileError::from_io(&shown, e))?;
    ensure_regular(st.mode, &shown)?;
    check_data_fs(handle.as_fd(), &shown)?;
    let fd = sys::reopen(handle.as_fd(), libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY)
        .map_err(|e| FileError::from_io(&shown, e))?;
    let st2 = sys::fstat(fd.as_fd()).map_err(|e| FileError::from_io(&shown, e))?;
    if (st2.dev, st2.ino) != (st.dev, st.ino) {
        return Err(FileError::Io { path: shown, source: std::io::Error::other("the file changed while opening it") });
    }
    ensure_regular(st2.mode, &shown)?;
    sys::set_nonblocking(fd.as_fd(), false).map_err(|e| FileError::from_io(&shown, e))?;
    Ok((File::from(fd), FileInfo::new(shown, &st2, None)))
}

/// Creates or truncates a regular file for upload and returns it open for writing.
///
/// The parent is resolved inside the root (created, owned by the sandbox user, when
/// `mkdir_parents`); the last component is never followed: a symlink, FIFO, socket or
/// device there is refused. A new file is 0644 and owned by the sandbox user; an existing
/// one keeps its owner and mode (minus setuid/setgid). An existing file with other hard
/// links is replaced rather than truncated, so a link the sandbox planted cannot make the
/// upload overwrite some other file. Map write errors with [`FileError::from_io`]:
/// `ENOSPC`, `EDQUOT` and `EFBIG` become [`FileError::QuotaExceeded`].
///
/// The [`NewFile`] returned beside the file removes a file this call created unless the
/// upload calls [`NewFile::keep`]: a failed upload (over the disk cap, a dropped connection,
/// a stall) leaves no partial file behind. An existing file was truncated in place; a failed
/// upload leaves what it wrote.
pub fn create_write(root: &SandboxRoot, path: &str, mkdir_parents: bool) -> Result<(File, NewFile)> {
    let _as = super::as_sandbox_user(root);
    let p = SandboxPath::parse(path)?;
    let shown = p.display();
    let (parent_path, name) = p.split()?;
    let parent = if mkdir_parents { mkdir_all(root, &parent_path)? } else { open_dir(root, &parent_path)? };
    check_data_fs(parent.as_fd(), &shown)?;
    let name = cname(name);
    let io = |e| FileError::from_io(&shown, e);
    for _ in 0..RACE_RETRIES {
        // O_EXCL never follows a symlink at the name: it fails with EEXIST instead.
        let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_NONBLOCK;
        match sys::openat(parent.as_fd(), &name, flags, 0o644) {
            Ok(fd) => {
                let st = sys::fstat(fd.as_fd()).map_err(io)?;
                let undo = NewFile { made: Some((parent, name, st.dev, st.ino)), root: root.clone() };
                sys::fchmod(fd.as_fd(), 0o644).map_err(io)?;
                sys::fchownat(fd.as_fd(), c"", root.uid, root.gid, libc::AT_EMPTY_PATH).map_err(io)?;
                sys::set_nonblocking(fd.as_fd(), false).map_err(io)?;
                return Ok((File::from(fd), undo));
            }
            Err(e) if errno(&e) == libc::EEXIST => {}
            Err(e) => return Err(io(e)),
        }
        let handle = match sys::openat(parent.as_fd(), &name, libc::O_PATH | libc::O_NOFOLLOW, 0) {
            Ok(fd) => fd,
            Err(e) if errno(&e) == libc::ENOENT => continue,
            Err(e) => return Err(io(e)),
        };
        let st = sys::fstat(handle.as_fd()).map_err(io)?;
        ensure_regular(st.mode, &shown)?;
        check_data_fs(handle.as_fd(), &shown)?;
        if st.nlink > 1 {
            match sys::unlinkat(parent.as_fd(), &name, 0) {
                Ok(()) => continue,
                Err(e) if errno(&e) == libc::ENOENT => continue,
                Err(e) => return Err(io(e)),
            }
        }
        let fd = sys::reopen(handle.as_fd(), libc::O_WRONLY | libc::O_NONBLOCK).map_err(io)?;
        let file = File::from(fd);
        if st.mode & 0o6000 != 0 {
            sys::fchmod(file.as_fd(), st.mode & 0o1777).map_err(io)?;
        }
        file.set_len(0).map_err(io)?;
        sys::set_nonblocking(file.as_fd(), false).map_err(io)?;
        return Ok((file, NewFile { made: None, root: root.clone() }));
    }
    Err(FileError::Io { path: shown, source: std::io::Error::other("the target kept changing; try again") })
}

/// The file an upload created, removed when this is dropped without [`NewFile::keep`] (if
/// the name still holds that file: one the sandbox put there meanwhile stays).
#[must_use = "drop it only when the upload failed; call keep() when it completed"]
pub struct NewFile {
    made: Option<(OwnedFd, std::ffi::CString, u64, u64)>,
    root: SandboxRoot,
}

impl std::fmt::Debug for NewFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewFile").field("removed_on_drop", &self.made.is_some()).finish()
    }
}

impl NewFile {
    /// The upload completed: the file stays.
    pub fn keep(mut self) {
        self.made = None;
    }
}

impl Drop for NewFile {
    fn drop(&mut self) {
        let Some((parent, name, dev, ino)) = self.made.take() else { return };
        let _as = super::as_sandbox_user(&self.root);
        if sys::fstatat(parent.as_fd(), &name, libc::AT_SYMLINK_NOFOLLOW).is_ok_and(|st| (st.dev, st.ino) == (dev, ino))
        {
            let _ = sys::unlinkat(parent.as_fd(), &name, 0);
        }
    }
}

/// Describes `path` without following a symlink in its last component.
pub fn stat(root: &SandboxRoot, path: &str) -> Result<FileInfo> {
    let _as = super::as_sandbox_user(root);
    let p = SandboxPath::parse(path)?;
    if p.is_root() {
        let fd = open_dir(root, &p)?;
        let st = sys::fstat(fd.as_fd()).map_err(|e| FileError::from_io("/", e))?;
        return Ok(FileInfo::new("/".into(), &st, None));
    }
    let (parent, name) = open_parent(root, &p)?;
    FileInfo::at(parent.as_fd(), &cname(name), p.display()).map_err(|e| FileError::from_io(p.display(), e))
}

/// Creates a directory (0755, owned by the sandbox user). With `parents`, missing parents
/// are created too and an existing directory is not an error.
pub fn mkdir(root: &SandboxRoot, path: &str, parents: bool) -> Result<FileInfo> {
    let _as = super::as_sandbox_user(root);
    let p = SandboxPath::parse(path)?;
    let shown = p.display();
    if parents {
        let fd = mkdir_all(root, &p)?;
        let st = sys::fstat(fd.as_fd()).map_err(|e| FileError::from_io(&shown, e))?;
        return Ok(FileInfo::new(shown, &st, None));
    }
    let (parent, name) = open_parent(root, &p)?;
    check_data_fs(parent.as_fd(), &shown)?;
    let name = cname(name);
    sys::mkdirat(parent.as_fd(), &name, 0o755).map_err(|e| FileError::from_io(&shown, e))?;
    adopt_new_dir(root, parent.as_fd(), &name, &shown)?;
    FileInfo::at(parent.as_fd(), &name, shown.clone()).map_err(|e| FileError::from_io(shown, e))
}

/// Moves `from` to `to` (the entries themselves: symlinks are moved, not followed). Fails
/// with [`FileError::Exists`] rather than replace an existing `to`.
pub fn rename(root: &SandboxRoot, from: &str, to: &str) -> Result<FileInfo> {
    let _as = super::as_sandbox_user(root);
    let (src, dst) = (SandboxPath::parse(from)?, SandboxPath::parse(to)?);
    let (src_dir, src_name) = open_parent(root, &src)?;
    let (dst_dir, dst_name) = open_parent(root, &dst)?;
    check_data_fs(src_dir.as_fd(), &src.display())?;
    check_data_fs(dst_dir.as_fd(), &dst.display())?;
    let (src_name, dst_name) = (cname(src_name), cname(dst_name));
    sys::renameat2(src_dir.as_fd(), &src_name, dst_dir.as_fd(), &dst_name, sys::RENAME_NOREPLACE).map_err(|e| {
        match errno(&e) {
            libc::EEXIST | libc::ENOTEMPTY => FileError::Exists { path: dst.display() },
            libc::EINVAL => FileError::InvalidArgument(format!(
                "cannot move {} to {}: a directory cannot move into itself",
                src.display(),
                dst.display()
            )),
            libc::EXDEV => FileError::InvalidArgument(format!(
                "cannot move {} to {}: they are on different mounts; copy instead",
                src.display(),
                dst.display()
            )),
            libc::ENOENT => FileError::NotFound { path: src.display() },
            _ => FileError::from_io(src.display(), e),
        }
    })?;
    FileInfo::at(dst_dir.as_fd(), &dst_name, dst.display()).map_err(|e| FileError::from_io(dst.display(), e))
}

/// Removes a file, symlink (not its target) or empty directory; with `recursive`, a
/// directory and everything under it. The walk holds a descriptor per level and never
/// follows a symlink, so nothing outside the directory is touched whatever the sandbox
/// swaps in meanwhile.
pub fn remove(root: &SandboxRoot, path: &str, recursive: bool) -> Result<()> {
    let _as = super::as_sandbox_user(root);
    let p = SandboxPath::parse(path)?;
    let shown = p.display();
    let (parent, name) = open_parent(root, &p)?;
    check_data_fs(parent.as_fd(), &shown)?;
    let name = cname(name);
    let st =
        sys::fstatat(parent.as_fd(), &name, libc::AT_SYMLINK_NOFOLLOW).map_err(|e| FileError::from_io(&shown, e))?;
    if st.file_type() != libc::S_IFDIR {
        return sys::unlinkat(parent.as_fd(), &name, 0).map_err(|e| FileError::from_io(&shown, e));
    }
    if recursive {
        let dir =
            open_subdir(parent.as_fd(), &name, &shown)?.ok_or_else(|| FileError::NotFound { path: shown.clone() })?;
        let mut budget = MAX_REMOVE_ENTRIES;
        remove_tree(dir.as_fd(), &shown, 1, &mut budget)?;
    }
    sys::unlinkat(parent.as_fd(), &name, libc::AT_REMOVEDIR).map_err(|e| FileError::from_io(&shown, e))
}

/// Empties the directory `dir`.
fn remove_tree(dir: BorrowedFd<'_>, shown: &str, depth: usize, budget: &mut usize) -> Result<()> {
    if depth > MAX_REMOVE_DEPTH {
        return Err(FileError::TooMany { what: format!("{shown}: directory nesting"), limit: MAX_REMOVE_DEPTH });
    }
    check_data_fs(dir, shown)?;
    loop {
        sys::rewind_dir(dir).map_err(|e| FileError::from_io(shown, e))?;
        // A small batch: every level of the walk holds its own while descending.
        let (names, _) = read_names(dir, REMOVE_BATCH, shown)?;
        if names.is_empty() {
            return Ok(());
        }
        for (raw, kind) in names {
            *budget = budget.checked_sub(1).ok_or_else(|| FileError::TooMany {
                what: format!("{shown}: entries to remove"),
                limit: MAX_REMOVE_ENTRIES,
            })?;
            let child = join_display(shown, &raw);
            let Ok(name) = std::ffi::CString::new(raw) else { continue };
            let maybe_dir = kind == libc::DT_DIR || kind == libc::DT_UNKNOWN;
            let sub = if maybe_dir { open_subdir(dir, &name, &child)? } else { None };
            match sub {
                Some(sub) => {
                    remove_tree(sub.as_fd(), &child, depth + 1, budget)?;
                    ignore_missing(sys::unlinkat(dir, &name, libc::AT_REMOVEDIR), &child)?;
                }
                // Not a directory (or no longer one): unlink the entry itself. If it became
                // a directory meanwhile, EISDIR; the next pass sees it as one.
                None => match sys::unlinkat(dir, &name, 0) {
                    Err(e) if errno(&e) == libc::EISDIR => {}
                    r => ignore_missing(r, &child)?,
                },
            }
        }
    }
}

/// Opens `name` in `dir` for reading as a directory without following a symlink; `None`
/// when it is not a directory (or is gone).
fn open_subdir(dir: BorrowedFd<'_>, name: &CStr, shown: &str) -> Result<Option<OwnedFd>> {
    match sys::openat(dir, name, libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW, 0) {
        Ok(fd) => Ok(Some(fd)),
        Err(e) if matches!(errno(&e), libc::ENOTDIR | libc::ELOOP | libc::ENOENT) => Ok(None),
        Err(e) => Err(FileError::from_io(shown, e)),
    }
}

fn ignore_missing(r: std::io::Result<()>, shown: &str) -> Result<()> {
    match r {
        Err(e) if errno(&e) == libc::ENOENT => Ok(()),
        r => r.map_err(|e| FileError::from_io(shown, e)),
    }
}

fn ensure_regular(mode: u32, shown: &str) -> Result<()> {
    match mode & libc::S_IFMT {
        libc::S_IFREG => Ok(()),
        libc::S_IFDIR => Err(FileError::IsADirectory { path: shown.into() }),
        other => Err(FileError::NotRegular { path: shown.into(), kind: kind_name(other) }),
    }
}

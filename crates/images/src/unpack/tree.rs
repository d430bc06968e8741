//! Descriptor-relative operations inside a directory tree the unpacker owns: lookups
//! resolve with the tree's root as `/` (`openat2` with `RESOLVE_IN_ROOT`), so a symlink
//! planted by an earlier entry can point anywhere and still lead nowhere outside; final
//! components are never followed.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

const IN_ROOT: ResolveFlags = ResolveFlags::IN_ROOT.union(ResolveFlags::NO_MAGICLINKS).union(ResolveFlags::NO_XDEV);

/// Opens the directory at `path` (components joined by `/`), resolved inside `root`.
pub fn open_dir_in(root: BorrowedFd<'_>, path: &[u8]) -> Result<OwnedFd, Errno> {
    rfs::openat2(root, path, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty(), IN_ROOT)
}

/// Opens `name` in `dir` as a directory without following a symlink.
pub fn open_child_dir(dir: BorrowedFd<'_>, name: &[u8]) -> Result<OwnedFd, Errno> {
    rfs::openat(dir, name, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())
}

/// What `name` in `dir` is, without following it; None when nothing is there.
pub fn kind_at(dir: BorrowedFd<'_>, name: &[u8]) -> Result<Option<FileType>, Errno> {
    match rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(FileType::from_raw_mode(st.st_mode))),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Removes whatever is at `name` in `dir` (a directory with everything beneath it).
/// Returns whether something was there.
pub fn remove_at(dir: BorrowedFd<'_>, name: &[u8]) -> Result<bool, Errno> {
    match kind_at(dir, name)? {
        None => Ok(false),
        Some(FileType::Directory) => {
            let sub = open_child_dir(dir, name)?;
            empty_dir(sub.as_fd())?;
            rfs::unlinkat(dir, name, AtFlags::REMOVEDIR)?;
            Ok(true)
        }
        Some(_) => {
            rfs::unlinkat(dir, name, AtFlags::empty())?;
            Ok(true)
        }
    }
}

/// Removes everything inside the directory `dir`. Directories without write permission
/// (an image may ship mode 0555 ones) are made writable first, so the store can always
/// delete what it unpacked, with or without privileges.
pub fn empty_dir(dir: BorrowedFd<'_>) -> Result<(), Errno> {
    let st = rfs::fstat(dir)?;
    if st.st_mode & 0o300 != 0o300 {
        rfs::fchmod(dir, Mode::from_raw_mode((st.st_mode & 0o7777) | 0o700))?;
    }
    loop {
        // Re-read after each batch: removing while iterating one stream is unspecified.
        let mut names: Vec<(Vec<u8>, bool)> = Vec::new();
        let mut reader = rfs::Dir::read_from(dir)?;
        for entry in reader.by_ref() {
            let entry = entry?;
            let name = entry.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            names.push((name.to_vec(), entry.file_type() == FileType::Directory));
            if names.len() >= 4096 {
                break;
            }
        }
        if names.is_empty() {
            return Ok(());
        }
        for (name, is_dir) in names {
            if is_dir {
                let sub = open_child_dir(dir, &name)?;
                empty_dir(sub.as_fd())?;
                rfs::unlinkat(dir, &name, AtFlags::REMOVEDIR)?;
            } else {
                match rfs::unlinkat(dir, &name, AtFlags::empty()) {
                    // d_type may be unknown on some filesystems: a directory then.
                    Err(Errno::ISDIR) => {
                        remove_at(dir, &name)?;
                    }
                    r => r?,
                }
            }
        }
    }
}

/// Removes a whole tree given by path (the store's own paths, never an image's).
pub fn remove_tree(path: &std::path::Path) -> std::io::Result<()> {
    let parent = path.parent().unwrap_or(std::path::Path::new("/"));
    let Some(name) = path.file_name() else { return Ok(()) };
    let dir = rfs::open(parent, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?;
    use std::os::unix::ffi::OsStrExt;
    remove_at(dir.as_fd(), name.as_bytes())?;
    Ok(())
}

/// Opens the directory at `path` beneath `root` without following any symlink.
pub fn open_dir_beneath(root: BorrowedFd<'_>, path: &[u8]) -> Result<OwnedFd, Errno> {
    rfs::openat2(
        root,
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_XDEV,
    )
}

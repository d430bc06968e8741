//! Lookups from the sandbox root, and the checks every operation shares.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use safehouse_sys::files as sys;

use super::error::{errno, FileError, Result};
use super::path::{cname, SandboxPath};
use super::SandboxRoot;

/// `..` and absolute symlink targets stay at the sandbox root; `/proc/*/fd`-style magic
/// links are refused outright. Mount crossings are allowed: binds inside the sandbox are
/// its own filesystem.
const RESOLVE: u64 = sys::RESOLVE_IN_ROOT | sys::RESOLVE_NO_MAGICLINKS;

/// openat2 answers EAGAIN when a rename or mount raced a `..` step; a sandbox can cause
/// that at will, so retry a bounded number of times, then give up.
const EAGAIN_RETRIES: usize = 64;

/// Filesystems whose files are kernel interfaces rather than data. The daemon holds
/// every capability, so reading or writing them on a caller's behalf would act on the
/// host (core_pattern, binfmt_misc, cgroups, kernel memory), whatever the sandbox could
/// do itself. Metadata (`stat`, `list`) is still allowed; content and changes are not.
const KERNEL_FILESYSTEMS: &[(i64, &str)] = &[
    (0x9fa0, "proc"),
    (0x6265_6572, "sysfs"),
    (0x0027_e0eb, "cgroup"),
    (0x6367_7270, "cgroup2"),
    (0x6462_6720, "debugfs"),
    (0x7472_6163, "tracefs"),
    (0x7363_6673, "securityfs"),
    (0xcafe_4a11, "bpf"),
    (0x6265_6570, "configfs"),
    (0xde5e_81e4, "efivarfs"),
    (0x6165_676c, "pstore"),
    (0xf97c_ff8c, "selinuxfs"),
    (0x4341_5d53, "smackfs"),
    (0x6573_5543, "fusectl"),
    (0x4249_4e4d, "binfmt_misc"),
    (0x0187, "autofs"),
    (0x6e73_6673, "nsfs"),
    (0x1cd1, "devpts"),
];

/// Opens `path` from the sandbox root with `flags` (`O_CLOEXEC` is added).
pub(super) fn open_in_root(root: &SandboxRoot, path: &SandboxPath, flags: i32) -> Result<OwnedFd> {
    let rel = path.relative();
    let mut tries = 0;
    loop {
        match sys::openat2(root.dir.as_fd(), &rel, flags, 0, RESOLVE) {
            Ok(fd) => return Ok(fd),
            Err(e) if matches!(errno(&e), libc::EAGAIN | libc::EINTR) && tries < EAGAIN_RETRIES => tries += 1,
            Err(e) if matches!(errno(&e), libc::ENOSYS | libc::E2BIG) => {
                return Err(FileError::Io {
                    path: path.display(),
                    source: io::Error::new(
                        e.kind(),
                        format!("openat2 is unavailable (Linux 5.6 or later required): {e}"),
                    ),
                })
            }
            Err(e) => return Err(FileError::from_io(path.display(), e)),
        }
    }
}

/// An `O_PATH` descriptor of the directory at `path`, following symlinks inside the root.
pub(super) fn open_dir(root: &SandboxRoot, path: &SandboxPath) -> Result<OwnedFd> {
    open_in_root(root, path, libc::O_PATH | libc::O_DIRECTORY)
}

/// The parent directory of `path` (an `O_PATH` descriptor), its display path and the
/// last component. Operations then act on that one name relative to the descriptor, so
/// a symlink in the last position is never followed by accident.
pub(super) fn open_parent<'p>(root: &SandboxRoot, path: &'p SandboxPath) -> Result<(OwnedFd, &'p str)> {
    let (parent, name) = path.split()?;
    Ok((open_dir(root, &parent)?, name))
}

/// Refuses content access and changes on kernel pseudo-filesystems (see
/// [`KERNEL_FILESYSTEMS`]).
pub(super) fn check_data_fs(fd: BorrowedFd<'_>, path: &str) -> Result<()> {
    let magic = sys::fstatfs_type(fd).map_err(|e| FileError::from_io(path, e))?;
    match KERNEL_FILESYSTEMS.iter().find(|(m, _)| *m == magic) {
        Some((_, name)) => Err(FileError::PermissionDenied {
            path: path.into(),
            reason: format!("{name} is a kernel interface, not sandbox data"),
        }),
        None => Ok(()),
    }
}

/// Creates every missing directory of `path` (which may exist already) and returns an
/// `O_PATH` descriptor of it. New directories are 0755 and owned by the sandbox user.
pub(super) fn mkdir_all(root: &SandboxRoot, path: &SandboxPath) -> Result<OwnedFd> {
    match open_dir(root, path) {
        Err(FileError::NotFound { .. }) => {}
        other => return other,
    }
    let mut dir = open_dir(root, &SandboxPath::root())?;
    for (i, name) in path.components().iter().enumerate() {
        let prefix = path.prefix(i + 1);
        match open_dir(root, &prefix) {
            Ok(fd) => dir = fd,
            Err(FileError::NotFound { .. }) => {
                check_data_fs(dir.as_fd(), &prefix.display())?;
                let name = cname(name);
                match sys::mkdirat(dir.as_fd(), &name, 0o755) {
                    Ok(()) => adopt_new_dir(root, dir.as_fd(), &name, &prefix.display())?,
                    // Raced with another creator; or a dangling symlink, which the lookup
                    // below reports as not found.
                    Err(e) if errno(&e) == libc::EEXIST => {}
                    Err(e) => return Err(FileError::from_io(prefix.display(), e)),
                }
                // Looked up from the root again so a symlink placed here meanwhile is
                // still resolved inside the sandbox.
                dir = open_dir(root, &prefix)?;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(dir)
}

/// Gives a directory this call just created to the sandbox user, with mode 0755 whatever
/// the daemon's umask. If the name was swapped meanwhile for something the daemon did not
/// create (not owned by it), that entry is left alone.
pub(super) fn adopt_new_dir(root: &SandboxRoot, parent: BorrowedFd<'_>, name: &CStr, path: &str) -> Result<()> {
    let fd = match sys::openat(parent, name, libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW, 0) {
        Ok(fd) => fd,
        Err(e) if matches!(errno(&e), libc::ENOENT | libc::ENOTDIR | libc::ELOOP) => return Ok(()),
        Err(e) => return Err(FileError::from_io(path, e)),
    };
    let st = sys::fstat(fd.as_fd()).map_err(|e| FileError::from_io(path, e))?;
    if st.uid != safehouse_sys::geteuid() {
        return Ok(());
    }
    sys::fchmod(fd.as_fd(), 0o755).map_err(|e| FileError::from_io(path, e))?;
    sys::fchownat(fd.as_fd(), c"", root.uid, root.gid, libc::AT_EMPTY_PATH).map_err(|e| FileError::from_io(path, e))
}

/// A name read from a directory and its `DT_*` type.
pub(super) type NameAndKind = (Vec<u8>, u8);

/// Reads the names in a directory (opened `O_RDONLY`), skipping `.` and `..`, from its
/// current offset. Stops after `max` names and reports whether more remained.
pub(super) fn read_names(dir: BorrowedFd<'_>, max: usize, path: &str) -> Result<(Vec<NameAndKind>, bool)> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut names = Vec::new();
    loop {
        let n = sys::getdents64(dir, &mut buf).map_err(|e| FileError::from_io(path, e))?;
        if n == 0 {
            return Ok((names, false));
        }
        for ent in sys::dirents(&buf[..n]) {
            if ent.name == b"." || ent.name == b".." || ent.name.is_empty() || ent.name.contains(&b'/') {
                continue;
            }
            if names.len() == max {
                return Ok((names, true));
            }
            names.push((ent.name.to_vec(), ent.kind));
        }
    }
}

/// Names of the kinds of file `FileError::NotRegular` reports.
pub(super) fn kind_name(mode: u32) -> &'static str {
    match mode & libc::S_IFMT {
        libc::S_IFLNK => "symbolic link",
        libc::S_IFIFO => "FIFO",
        libc::S_IFSOCK => "socket",
        libc::S_IFCHR => "character device",
        libc::S_IFBLK => "block device",
        libc::S_IFDIR => "directory",
        _ => "special file",
    }
}

//! The pool: one btrfs filesystem with quota groups, under the data dir.

use std::fs::{self, File};
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::io_err;
use crate::probe::{Probe, BTRFS_MAGIC};
use crate::subvol::Kind;
use crate::StorageError;

/// The smallest pool image `mkfs.btrfs` makes with room to spare.
pub const MIN_POOL_SIZE: u64 = 256 << 20;
/// The default pool stops at this size even on a large disk.
const DEFAULT_POOL_MAX: u64 = 64 << 30;

/// How to make a new pool (an existing one keeps its size).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolOptions {
    /// The image's size in bytes: the most all layers, snapshots and volumes together hold.
    pub size: u64,
}

impl PoolOptions {
    /// Half of what is free under `data_dir` now, at most 64 GiB: the image is sparse, and
    /// a pool that could outgrow the disk would let sandboxes fill the host's disk.
    pub fn default_for(data_dir: &Path) -> PoolOptions {
        let free = free_bytes(data_dir).unwrap_or(0);
        PoolOptions { size: (free / 2).clamp(MIN_POOL_SIZE, DEFAULT_POOL_MAX) & !0xfffff }
    }
}

/// A mounted pool. Dropping it leaves it mounted (sandboxes use it); [`Pool::unmount`]
/// takes it down.
#[derive(Debug)]
pub struct Pool {
    root: PathBuf,
    pub(crate) dir: File,
    /// `/sys/fs/btrfs/<uuid>`: the quota groups' counters.
    pub(crate) sysfs: PathBuf,
}

impl Pool {
    /// Opens the pool of `data_dir`, making and mounting it first where needed:
    /// `DATA_DIR/storage/pool.img` (sparse, `opts.size`) mounted at `DATA_DIR/storage/pool`.
    /// A pool already mounted there (a daemon restart) is adopted as it is.
    pub fn open(data_dir: &Path, opts: &PoolOptions) -> Result<Pool, StorageError> {
        if safehouse_sys::geteuid() != 0 {
            let reason = Probe::run(data_dir).refusal(false).unwrap_or_else(|| "it needs root".into());
            return Err(StorageError::Unenforceable { reason });
        }
        let storage = data_dir.join("storage");
        fs::DirBuilder::new().recursive(true).mode(0o700).create(&storage).map_err(io_err("create", &storage))?;
        let root = storage.join("pool");
        match fs::DirBuilder::new().mode(0o700).create(&root) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(io_err("create", &root)(e)),
            _ => {}
        }
        if !is_mount_point(&root)? {
            let image = storage.join("pool.img");
            if image.exists() {
                if let Some(reason) = Probe::run(data_dir).refusal(false) {
                    return Err(StorageError::Unenforceable { reason });
                }
            } else {
                make_image(data_dir, &image, opts.size)?;
            }
            mount_image(&image, &root)?;
        }
        Pool::adopt(root)
    }

    /// Uses the btrfs mounted at `root` as a pool.
    fn adopt(root: PathBuf) -> Result<Pool, StorageError> {
        let dir = File::open(&root).map_err(io_err("open", &root))?;
        let magic = safehouse_sys::files::fstatfs_type(dir.as_fd()).map_err(io_err("statfs", &root))?;
        if magic != BTRFS_MAGIC {
            return Err(StorageError::NotAPool { path: root });
        }
        // Idempotent: a pool whose quotas are on stays as it is.
        safehouse_sys::btrfs::quota_enable(dir.as_fd()).map_err(io_err("enable quota groups on", &root))?;
        for kind in Kind::ALL {
            let sub = root.join(kind.dir());
            match fs::DirBuilder::new().mode(0o711).create(&sub) {
                Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(io_err("create", &sub)(e)),
                _ => {}
            }
        }
        let uuid = safehouse_sys::btrfs::fs_uuid(dir.as_fd()).map_err(io_err("read the filesystem id of", &root))?;
        let sysfs = PathBuf::from("/sys/fs/btrfs").join(uuid_string(&uuid));
        Ok(Pool { root, dir, sysfs })
    }

    /// Where the pool is mounted.
    /// Bytes free in the pool now. The space of a deleted layer, snapshot or
    /// volume comes back only once btrfs's cleaner has dropped it (within about 30 s: the
    /// next periodic transaction commit), not at the delete.
    pub fn free(&self) -> Result<u64, StorageError> {
        let (_, free, _) =
            safehouse_sys::files::fstatfs_free(self.dir.as_fd()).map_err(io_err("statfs", &self.root))?;
        Ok(free)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The pool's total size and free bytes.
    pub fn space(&self) -> Result<(u64, u64), StorageError> {
        let (_, free, _) =
            safehouse_sys::files::fstatfs_free(self.dir.as_fd()).map_err(io_err("statfs", &self.root))?;
        let (_, used) = safehouse_sys::files::fstatfs_used(self.dir.as_fd()).map_err(io_err("statfs", &self.root))?;
        Ok((used + free, free))
    }

    /// Unmounts the pool (its loop device goes with it). Fails with `EBUSY` while a
    /// sandbox still has a layer or volume of it mounted.
    pub fn unmount(self) -> Result<(), StorageError> {
        let Pool { root, dir, .. } = self;
        drop(dir);
        safehouse_sys::mount::umount2(&root.to_string_lossy(), 0).map_err(io_err("unmount", &root))
    }
}

fn is_mount_point(dir: &Path) -> Result<bool, StorageError> {
    let parent = dir.parent().unwrap_or(Path::new("/"));
    let (a, b) = (dir.metadata().map_err(io_err("stat", dir))?, parent.metadata().map_err(io_err("stat", parent))?);
    Ok(a.dev() != b.dev() || a.ino() == b.ino())
}

fn free_bytes(dir: &Path) -> Result<u64, StorageError> {
    let f = File::open(dir).map_err(io_err("open", dir))?;
    let (_, free, _) = safehouse_sys::files::fstatfs_free(f.as_fd()).map_err(io_err("statfs", dir))?;
    Ok(free)
}

/// Formats a new sparse image; it gets its final name only once formatted.
fn make_image(data_dir: &Path, image: &Path, size: u64) -> Result<(), StorageError> {
    let probe = Probe::run(data_dir);
    if let Some(reason) = probe.refusal(true) {
        return Err(StorageError::Unenforceable { reason });
    }
    if size < MIN_POOL_SIZE {
        return Err(StorageError::PoolTooSmall { size, min: MIN_POOL_SIZE });
    }
    let dir = image.parent().unwrap_or(Path::new("/"));
    let free = free_bytes(dir)?;
    if size > free {
        return Err(StorageError::PoolTooLarge { size, free, dir: dir.to_path_buf() });
    }
    let tmp = image.with_extension("img.new");
    let _ = fs::remove_file(&tmp);
    let f =
        fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).map_err(io_err("create", &tmp))?;
    f.set_len(size).map_err(io_err("size", &tmp))?;
    drop(f);
    let mkfs = probe.mkfs_btrfs.unwrap_or_else(|| PathBuf::from("mkfs.btrfs"));
    let out = Command::new(&mkfs).arg("-q").arg("-f").args(["-L", "safehouse-pool"]).arg(&tmp).output();
    let failed = match out {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(format!("{}: {}", o.status, String::from_utf8_lossy(&o.stderr).trim())),
        Err(e) => Some(e.to_string()),
    };
    if let Some(detail) = failed {
        let _ = fs::remove_file(&tmp);
        return Err(StorageError::Tool {
            step: "formatting the storage pool",
            command: format!("{} {}", mkfs.display(), tmp.display()),
            detail,
        });
    }
    fs::rename(&tmp, image).map_err(io_err("rename", &tmp))?;
    fs::set_permissions(image, fs::Permissions::from_mode(0o600)).map_err(io_err("chmod", image))
}

/// `mount -o loop` attaches a loop device that detaches itself at the unmount.
fn mount_image(image: &Path, root: &Path) -> Result<(), StorageError> {
    let out =
        Command::new("mount").args(["-t", "btrfs", "-o", "loop,noatime,nosuid,nodev"]).arg(image).arg(root).output();
    match out {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(StorageError::Tool {
            step: "mounting the storage pool",
            command: format!("mount -o loop {} {}", image.display(), root.display()),
            detail: format!("{}: {}", o.status, String::from_utf8_lossy(&o.stderr).trim()),
        }),
        Err(e) => Err(StorageError::Tool {
            step: "mounting the storage pool",
            command: "mount".into(),
            detail: e.to_string(),
        }),
    }
}

fn uuid_string(u: &[u8; 16]) -> String {
    let hex: String = u.iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_spelled_like_sysfs() {
        let u = [0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 0, 1, 2, 3, 4, 5, 6, 7];
        assert_eq!(uuid_string(&u), "12345678-9abc-def0-0001-020304050607");
    }

    #[test]
    fn the_default_size_is_bounded() {
        let o = PoolOptions::default_for(Path::new("/"));
        assert!(o.size >= MIN_POOL_SIZE && o.size <= DEFAULT_POOL_MAX, "{o:?}");
    }
}

//! Layers, snapshots and volumes: subvolumes of the pool, each capped by its quota group.

use std::fs::{self, File};
use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::io_err;
use crate::{check_name, Pool, StorageError};

/// The smallest cap: an empty subvolume already refers to 16 KiB of metadata.
pub const MIN_CAP: u64 = 1 << 20;

/// What a subvolume of the pool is for; each kind has its own directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A sandbox's writable layer (read-write).
    Layer,
    /// A point-in-time copy of a layer (read-only).
    Snapshot,
    /// A named volume (read-write).
    Volume,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Layer, Kind::Snapshot, Kind::Volume];

    pub(crate) fn dir(self) -> &'static str {
        match self {
            Kind::Layer => "layers",
            Kind::Snapshot => "snapshots",
            Kind::Volume => "volumes",
        }
    }

    pub fn noun(self) -> &'static str {
        match self {
            Kind::Layer => "layer",
            Kind::Snapshot => "snapshot",
            Kind::Volume => "volume",
        }
    }
}

/// Bytes a subvolume uses, as of the pool's last transaction commit (within ~30 s; a
/// [`Pool::sync`] makes it current).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// Everything it refers to (what its cap limits), shared extents included.
    pub referenced: u64,
    /// What only it refers to: what deleting it would free.
    pub exclusive: u64,
    /// Its cap, if any.
    pub cap: Option<u64>,
}

impl Pool {
    /// Where the subvolume `name` of `kind` is (it may not exist).
    pub fn path(&self, kind: Kind, name: &str) -> Result<PathBuf, StorageError> {
        check_name(kind.noun(), name)?;
        Ok(self.root().join(kind.dir()).join(name))
    }

    pub fn exists(&self, kind: Kind, name: &str) -> bool {
        self.path(kind, name).map(|p| p.exists()).unwrap_or(false)
    }

    /// A new, empty subvolume capped at `cap` bytes.
    pub fn create(&self, kind: Kind, name: &str, cap: u64) -> Result<PathBuf, StorageError> {
        let path = self.path(kind, name)?;
        check_cap(cap)?;
        let parent = self.kind_dir(kind)?;
        safehouse_sys::btrfs::subvolume_create(parent.as_fd(), name)
            .map_err(|e| exists_or(kind, name, &path, "create", e))?;
        self.capped(kind, name, path, cap)
    }

    /// A snapshot of `source` (of kind `from`) as `name` of kind `to`: read-only when `to`
    /// is [`Kind::Snapshot`], writable otherwise. Copy-on-write: its cost does not depend on
    /// the data's size. The new subvolume keeps the source's cap unless `cap` is given.
    /// Writes to `source` in flight are flushed first; a caller that needs a point where no
    /// process writes freezes them around this call.
    pub fn snapshot(
        &self,
        from: Kind,
        source: &str,
        to: Kind,
        name: &str,
        cap: Option<u64>,
    ) -> Result<PathBuf, StorageError> {
        let src_path = self.path(from, source)?;
        let path = self.path(to, name)?;
        if let Some(cap) = cap {
            check_cap(cap)?;
        }
        let src = File::open(&src_path).map_err(|e| not_found_or(from, source, &src_path, e))?;
        let parent = self.kind_dir(to)?;
        safehouse_sys::btrfs::snapshot_create(src.as_fd(), parent.as_fd(), name, to == Kind::Snapshot)
            .map_err(|e| exists_or(to, name, &path, "snapshot into", e))?;
        match cap {
            Some(cap) => self.capped(to, name, path, cap),
            None => Ok(path),
        }
    }

    /// [`Pool::snapshot`] of one source into many names at once. The snapshots are made
    /// on concurrent threads: btrfs makes pending snapshots in one transaction commit, so N
    /// of them cost about one commit instead of N. All or nothing: on a failure the ones
    /// made are deleted and the first error returned.
    pub fn snapshot_many(
        &self,
        from: Kind,
        source: &str,
        to: Kind,
        names: &[String],
        cap: Option<u64>,
    ) -> Result<Vec<PathBuf>, StorageError> {
        let results: Vec<Result<PathBuf, StorageError>> = std::thread::scope(|s| {
            let handles: Vec<_> =
                names.iter().map(|name| s.spawn(move || self.snapshot(from, source, to, name, cap))).collect();
            handles.into_iter().map(|h| h.join().expect("a snapshot thread panicked")).collect()
        });
        if let Some(pos) = results.iter().position(|r| r.is_err()) {
            for (name, r) in names.iter().zip(&results) {
                if r.is_ok() {
                    let _ = self.remove(to, name);
                }
            }
            return Err(results.into_iter().nth(pos).expect("position is in range").unwrap_err());
        }
        Ok(results.into_iter().map(|r| r.expect("checked above")).collect())
    }

    /// Deletes a subvolume and its contents. `false` when it did not exist.
    pub fn remove(&self, kind: Kind, name: &str) -> Result<bool, StorageError> {
        let path = self.path(kind, name)?;
        let parent = self.kind_dir(kind)?;
        match safehouse_sys::btrfs::subvolume_destroy(parent.as_fd(), name) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_err("delete", path)(e)),
        }
    }

    /// The names of every subvolume of `kind`, sorted.
    pub fn list(&self, kind: Kind) -> Result<Vec<String>, StorageError> {
        let dir = self.root().join(kind.dir());
        let mut names = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_err("list", &dir))? {
            let entry = entry.map_err(io_err("list", &dir))?;
            if let Some(name) = entry.file_name().to_str() {
                if check_name(kind.noun(), name).is_ok() {
                    names.push(name.to_string());
                }
            }
        }
        names.sort();
        Ok(names)
    }

    /// Changes a subvolume's cap.
    pub fn set_cap(&self, kind: Kind, name: &str, cap: u64) -> Result<(), StorageError> {
        let path = self.path(kind, name)?;
        check_cap(cap)?;
        let f = File::open(&path).map_err(|e| not_found_or(kind, name, &path, e))?;
        safehouse_sys::btrfs::qgroup_limit_referenced(f.as_fd(), cap).map_err(io_err("cap", &path))
    }

    /// What a subvolume uses (from its quota group's counters).
    pub fn usage(&self, kind: Kind, name: &str) -> Result<Usage, StorageError> {
        let path = self.path(kind, name)?;
        let f = File::open(&path).map_err(|e| not_found_or(kind, name, &path, e))?;
        let id = safehouse_sys::btrfs::subvolume_id(f.as_fd()).map_err(io_err("look up the subvolume of", &path))?;
        let dir = self.sysfs.join("qgroups").join(format!("0_{id}"));
        let read = |file: &str| -> Result<u64, StorageError> {
            let p = dir.join(file);
            let text = fs::read_to_string(&p).map_err(io_err("read", &p))?;
            text.trim().parse().map_err(|_| {
                io_err("parse", &p)(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{:?} is not a number", text.trim()),
                ))
            })
        };
        let cap = read("max_referenced")?;
        Ok(Usage {
            referenced: read("referenced")?,
            exclusive: read("exclusive")?,
            cap: (cap != 0 && cap != u64::MAX).then_some(cap),
        })
    }

    /// Commits the pool's transaction, so [`Pool::usage`] is current.
    pub fn sync(&self) -> Result<(), StorageError> {
        safehouse_sys::fs::syncfs(self.dir.as_fd()).map_err(io_err("sync", self.root()))
    }

    fn kind_dir(&self, kind: Kind) -> Result<File, StorageError> {
        let dir = self.root().join(kind.dir());
        File::open(&dir).map_err(io_err("open", dir))
    }

    /// Caps a subvolume just made; one that cannot be capped is deleted again.
    fn capped(&self, kind: Kind, name: &str, path: PathBuf, cap: u64) -> Result<PathBuf, StorageError> {
        let limited = File::open(&path)
            .and_then(|f| safehouse_sys::btrfs::qgroup_limit_referenced(f.as_fd(), cap))
            .map_err(io_err("cap", &path));
        if let Err(e) = limited {
            let _ = self.remove(kind, name);
            return Err(e);
        }
        Ok(path)
    }
}

fn check_cap(cap: u64) -> Result<(), StorageError> {
    if cap < MIN_CAP {
        return Err(StorageError::CapTooSmall { cap, min: MIN_CAP });
    }
    Ok(())
}

fn exists_or(kind: Kind, name: &str, path: &Path, step: &'static str, e: io::Error) -> StorageError {
    if e.kind() == io::ErrorKind::AlreadyExists {
        StorageError::Exists { kind, name: name.to_string() }
    } else {
        io_err(step, path)(e)
    }
}

fn not_found_or(kind: Kind, name: &str, path: &Path, e: io::Error) -> StorageError {
    if e.kind() == io::ErrorKind::NotFound {
        StorageError::NotFound { kind, name: name.to_string() }
    } else {
        io_err("open", path)(e)
    }
}

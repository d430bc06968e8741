//! Advisory locks (flock) that order the store's writers, its garbage collector and the
//! sandboxes using its layers. Locks die with their holder, so a crash never leaves the
//! store locked.

use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use rustix::fs::{flock, FlockOperation};

use crate::error::{ImageError, Result};

/// A held lock; released on drop (with the file).
#[derive(Debug)]
pub struct Held(File);

impl Held {
    /// The locked file itself (opened read-write by `exclusive` and `shared`).
    pub fn file(&self) -> &File {
        &self.0
    }

    /// Removes `path` if it still names the locked file (not one a later writer made).
    pub fn remove_if_same(&self, path: &Path) {
        use std::os::unix::fs::MetadataExt;
        if let (Ok(mine), Ok(there)) = (self.0.metadata(), std::fs::symlink_metadata(path)) {
            if mine.ino() == there.ino() && mine.dev() == there.dev() {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

fn open(path: &Path) -> Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| ImageError::io("open lock", path, e))
}

/// Waits for a shared lock on `path` (created if missing).
pub fn shared(path: &Path) -> Result<Held> {
    let f = open(path)?;
    flock(&f, FlockOperation::LockShared).map_err(|e| ImageError::io("lock", path, e.into()))?;
    Ok(Held(f))
}

/// Waits for an exclusive lock on `path` (created if missing).
pub fn exclusive(path: &Path) -> Result<Held> {
    let f = open(path)?;
    flock(&f, FlockOperation::LockExclusive).map_err(|e| ImageError::io("lock", path, e.into()))?;
    Ok(Held(f))
}

/// Takes an exclusive lock on an existing file if nobody holds it; None if someone does
/// (or the file is gone).
pub fn try_exclusive_existing(path: &Path) -> Result<Option<Held>> {
    let f = match std::fs::OpenOptions::new().read(true).custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(ImageError::io("open lock", path, e)),
    };
    match flock(&f, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(Some(Held(f))),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
        Err(e) => Err(ImageError::io("lock", path, e.into())),
    }
}

/// A shared lock on an existing file, read-only (a layer's lease); fails if missing.
pub fn shared_existing(path: &Path) -> Result<Held> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| ImageError::io("open", path, e))?;
    flock(&f, FlockOperation::LockShared).map_err(|e| ImageError::io("lock", path, e.into()))?;
    Ok(Held(f))
}

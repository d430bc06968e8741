use std::io;
use std::path::PathBuf;

/// A storage operation that failed, naming the step and what to change.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("disk-backed storage with a size cap cannot be enforced on this host: {reason}")]
    Unenforceable { reason: String },
    /// The message carries the errno's text; the error is not also a `source`, so a
    /// chain printer does not repeat it.
    #[error("{step} {}: {error}", path.display())]
    Io { step: &'static str, path: PathBuf, error: io::Error },
    #[error("invalid {what} name {name:?}: use 1 to 64 characters from a-z, A-Z, 0-9, '.', '_' and '-', not starting with '.' or '-'")]
    BadName { what: &'static str, name: String },
    #[error("{} {name:?} does not exist", kind.noun())]
    NotFound { kind: crate::Kind, name: String },
    #[error("{} {name:?} already exists", kind.noun())]
    Exists { kind: crate::Kind, name: String },
    #[error("a size cap of {cap} bytes is below the minimum of {min} bytes")]
    CapTooSmall { cap: u64, min: u64 },
    #[error("a storage pool of {size} bytes is too small: the minimum is {min} bytes")]
    PoolTooSmall { size: u64, min: u64 },
    #[error("a storage pool of {size} bytes does not fit in the {free} bytes free under {}; choose a smaller size", dir.display())]
    PoolTooLarge { size: u64, free: u64, dir: PathBuf },
    #[error("{step} failed ({command}): {detail}")]
    Tool { step: &'static str, command: String, detail: String },
    #[error("{} is not a btrfs mount; the storage pool must be (remove it or mount the pool image there)", path.display())]
    NotAPool { path: PathBuf },
}

pub(crate) fn io_err(step: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> StorageError {
    let path = path.into();
    move |error| StorageError::Io { step, path, error }
}

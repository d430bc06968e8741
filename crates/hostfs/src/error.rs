//! The error type of file operations, with the HTTP status each maps to.

use std::io;

pub type Result<T, E = FileError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{path}: no such file or directory")]
    NotFound { path: String },
    #[error("{path}: not a directory")]
    NotADirectory { path: String },
    #[error("{path}: is a directory")]
    IsADirectory { path: String },
    /// A FIFO, socket, device or symbolic link where a regular file is required.
    #[error("{path}: is a {kind}, not a regular file")]
    NotRegular { path: String, kind: &'static str },
    #[error("invalid path {path:?}: {reason}")]
    InvalidPath { path: String, reason: String },
    /// A bad parameter other than the path (a `depth` out of range, a move into itself).
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{path}: already exists")]
    Exists { path: String },
    #[error("{path}: directory not empty; pass recursive to remove it with its contents")]
    NotEmpty { path: String },
    #[error("{path}: permission denied ({reason})")]
    PermissionDenied { path: String, reason: String },
    #[error("{path}: the sandbox's disk quota is exhausted; free space in the sandbox or raise its disk limit")]
    QuotaExceeded { path: String },
    #[error("{what}: more than {limit}; narrow the request")]
    TooMany { what: String, limit: usize },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
}

impl FileError {
    /// Classifies an error from a syscall (or from writing to / reading from a file this
    /// module opened) on `path`. Use it for `ENOSPC`/`EDQUOT`/`EFBIG` while streaming an
    /// upload, which become [`FileError::QuotaExceeded`].
    pub fn from_io(path: impl Into<String>, e: io::Error) -> FileError {
        let path = path.into();
        let Some(errno) = e.raw_os_error() else {
            return FileError::Io { path, source: e };
        };
        match errno {
            libc::ENOENT => FileError::NotFound { path },
            libc::ENOTDIR => FileError::NotADirectory { path },
            libc::EISDIR => FileError::IsADirectory { path },
            libc::EEXIST => FileError::Exists { path },
            libc::ENOTEMPTY => FileError::NotEmpty { path },
            libc::EACCES | libc::EPERM => FileError::PermissionDenied { path, reason: "denied by the kernel".into() },
            libc::EROFS => FileError::PermissionDenied { path, reason: "read-only file system".into() },
            libc::EBUSY => FileError::PermissionDenied { path, reason: "busy: a mount point or in use".into() },
            libc::ETXTBSY => FileError::PermissionDenied { path, reason: "the file is being executed".into() },
            libc::ENOSPC | libc::EDQUOT | libc::EFBIG => FileError::QuotaExceeded { path },
            libc::ELOOP => FileError::InvalidPath {
                path,
                reason: "a symbolic link loop, or a link that may not be followed".into(),
            },
            libc::EXDEV => FileError::InvalidPath { path, reason: "crosses a mount or leaves the sandbox root".into() },
            libc::ENAMETOOLONG => FileError::InvalidPath { path, reason: "name too long".into() },
            libc::ENXIO => FileError::NotRegular { path, kind: "special file" },
            _ => FileError::Io { path, source: e },
        }
    }

    /// The HTTP status this error answers with.
    pub fn status(&self) -> u16 {
        match self {
            FileError::NotFound { .. } => 404,
            FileError::NotADirectory { .. }
            | FileError::IsADirectory { .. }
            | FileError::NotRegular { .. }
            | FileError::InvalidPath { .. }
            | FileError::InvalidArgument(_)
            | FileError::TooMany { .. } => 400,
            FileError::Exists { .. } | FileError::NotEmpty { .. } => 409,
            FileError::PermissionDenied { .. } => 403,
            FileError::QuotaExceeded { .. } => 413,
            FileError::Io { .. } => 500,
        }
    }

    /// The snake_case `error.code` of the API's error body.
    pub fn code(&self) -> &'static str {
        match self {
            FileError::NotFound { .. } => "not_found",
            FileError::NotADirectory { .. } => "not_a_directory",
            FileError::IsADirectory { .. } => "is_a_directory",
            FileError::NotRegular { .. } => "not_a_regular_file",
            FileError::InvalidPath { .. } => "invalid_path",
            FileError::InvalidArgument(_) => "invalid_request",
            FileError::Exists { .. } => "already_exists",
            FileError::NotEmpty { .. } => "directory_not_empty",
            FileError::PermissionDenied { .. } => "permission_denied",
            FileError::QuotaExceeded { .. } => "quota_exceeded",
            FileError::TooMany { .. } => "too_many_entries",
            FileError::Io { .. } => "internal",
        }
    }
}

/// The errno of an `io::Error`, 0 when it has none.
pub(super) fn errno(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

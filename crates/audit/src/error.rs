//! What can go wrong opening, writing, verifying or exporting the log.

use std::io;
use std::path::PathBuf;

/// Errors opening, reading or exporting the audit log. Tampering is not an error: `verify`
/// reports it in its [`crate::Report`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot {what} {path}: {source}")]
    Io { what: &'static str, path: PathBuf, source: io::Error },
    #[error(
        "signing key {path} has mode {mode:o}, readable or writable by others: chmod 600 it if it \
         cannot have leaked, else move the audit directory aside and start a new log"
    )]
    KeyPermissions { path: PathBuf, mode: u32 },
    #[error("{path} is not a hex-encoded 32-byte ed25519 key: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("the last record of the audit log ({path}, offset {offset}) is corrupt ({reason}): run `safehouse audit verify`")]
    CorruptTail { path: PathBuf, offset: u64, reason: String },
    #[error("bad time {value:?}: expected RFC 3339, e.g. 2026-01-31T12:00:00Z")]
    Time { value: String },
    #[error("no audit log in {path}")]
    NoLog { path: PathBuf },
}

impl Error {
    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { what, path, source }
    }
}

/// Why [`crate::AuditLog::append`] did not queue a record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppendError {
    /// An event was dropped: over the event rate limit or the queue is full. It is counted,
    /// and the count is written in the next record's `dropped` field.
    #[error("audit event dropped (rate limit or full queue)")]
    Dropped,
    /// Only the log itself writes checkpoints.
    #[error("checkpoint records are written by the log itself")]
    Reserved,
    /// The writer stopped on an I/O error (disk full, ...): nothing more will be recorded.
    #[error("the audit log failed: {0}")]
    Failed(String),
    /// The log is shutting down.
    #[error("the audit log is closed")]
    Closed,
}

//! Typed errors of the protocol crate.

use std::io;

/// Bytes that are not a valid frame sequence. After one, the stream is out of sync: close
/// the connection.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("frame length {len} exceeds the {max}-byte limit")]
    TooLarge { len: usize, max: usize },
    #[error("frame length is zero (every frame has a kind byte)")]
    Empty,
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    #[error("data frame body of {0} bytes is shorter than its 5-byte header")]
    ShortData(usize),
    #[error("unknown stream {0} (0 stdin, 1 stdout, 2 stderr)")]
    UnknownStream(u8),
    #[error("invalid JSON message: {0}")]
    Json(#[from] serde_json::Error),
    #[error("unexpected {got}: expected {expected}")]
    Unexpected { expected: &'static str, got: String },
    #[error("captured {stream} of process {pid} exceeds the {max}-byte limit")]
    CaptureTooLarge { pid: u32, stream: &'static str, max: usize },
    #[error("captured {stream} of process {pid} is {got} bytes but the exit message says {declared}")]
    CaptureLength { pid: u32, stream: &'static str, got: u64, declared: u64 },
    #[error("the stream ended inside a frame ({0} bytes of it received)")]
    Truncated(usize),
    #[error("the stream already failed to decode; reconnect")]
    Poisoned,
}

/// A message that cannot be put in frames.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("message of {len} bytes exceeds the {max}-byte frame limit")]
    TooLarge { len: usize, max: usize },
    #[error("captured output of {len} bytes exceeds the {max}-byte limit")]
    CaptureTooLarge { len: usize, max: usize },
    #[error("cannot serialise message: {0}")]
    Json(#[from] serde_json::Error),
}

/// Errors of the blocking [`crate::FrameReader`] and [`crate::FrameWriter`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error(transparent)]
    Encode(#[from] EncodeError),
}

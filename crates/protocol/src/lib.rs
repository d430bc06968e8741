//! The daemon ↔ agent protocol: typed messages over a byte stream (the agent's inherited
//! AF_UNIX socket).
//!
//! # Framing
//!
//! ```text
//! u32 LE  length of what follows (kind + body), 1 ..= MAX_FRAME
//! u8      kind: 1 Json, 2 Data, 3 Capture
//! body    Json:    serde_json of a `ToAgent` (daemon → agent) or `FromAgent` (agent → daemon)
//!         Data:    u32 LE pid, u8 stream (0 stdin, 1 stdout, 2 stderr), raw bytes
//!         Capture: same layout as Data; a piece of the captured output of an `Exited`
//! ```
//!
//! Process output never goes through JSON: streamed output travels in `Data` frames, and
//! the captured output of a run-to-completion command in `Capture` frames sent right
//! before its `Exited` message (a 16 MiB capture does not fit the 4 MiB frame limit). The
//! [`MessageDecoder`] joins them back, so the daemon sees `Exited { stdout: Some(..) }`.
//!
//! Decoding is defensive on both sides: a length above [`MAX_FRAME`], an unknown kind,
//! a short data header, invalid JSON or frames out of order are errors, never panics, and
//! no allocation is larger than what the peer has actually sent (bounded by the limits).

#![forbid(unsafe_code)]

mod codec;
mod error;
mod frame;
mod message;

pub use codec::{Assembly, FrameReader, FrameWriter, Incoming, Message, MessageDecoder};
pub use error::{DecodeError, EncodeError, Error};
pub use frame::{encode_data, DataFrame, Decoder, Frame, Kind, Stream};
pub use message::{Buffered, Exited, FromAgent, ProcessInfo, SpawnRequest, StdinMode, ToAgent, WinSize};

/// Version announced in `Hello`; bump when a change is not backwards compatible.
pub const PROTOCOL_VERSION: u32 = 1;

/// Largest value of the length field (kind byte + body): 4 MiB.
pub const MAX_FRAME: usize = 4 << 20;

/// Bytes of a frame header: the length field and the kind.
pub const HEADER_LEN: usize = 5;

/// Bytes of a `Data`/`Capture` body before the payload: pid and stream.
pub const DATA_HEADER_LEN: usize = 5;

/// Largest payload of one `Data` or `Capture` frame.
pub const MAX_DATA: usize = MAX_FRAME - 1 - DATA_HEADER_LEN;

/// Cap on the captured output of one stream of a run-to-completion command.
pub const CAPTURE_LIMIT: usize = 16 << 20;

/// Output the agent keeps per stream of a streamed process while no daemon is connected.
pub const DISCONNECTED_BUFFER: usize = 1 << 20;

/// Largest number of descriptors that may accompany one `Spawn` (its `cgroup_fds`).
pub const MAX_CGROUP_FDS: u8 = 8;

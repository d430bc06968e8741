//! The tamper-evident audit log (docs/adr/0004-audit-log.md).
//!
//! The daemon records every API call (who, what, result), every sandbox event and each
//! sandbox's policy (content and digest) in `DATA_DIR/audit/`, a directory (0700) that is
//! never mounted into a sandbox.
//!
//! - **Format.** One JSON object per line, in segment files `audit-000001.jsonl`,
//!   `audit-000002.jsonl`, ... (a new one every [`Options::rotate_bytes`]):
//!   `{"seq":N,"time":"2026-01-31T12:00:00.123Z","kind":"api","sandbox":"sb_..."|null,"tenant":..|null,"data":{..},["dropped":N,]"prev":"<hex>","hash":"<hex>"}`.
//!   `seq` counts from 1 without gaps across files; `prev` is the previous record's `hash`
//!   (zeros for the first); `hash` is the SHA-256 of the exact bytes of the line before
//!   `,"hash":`. Untrusted strings are JSON-escaped (no raw newline or ESC can reach the
//!   file) and capped ([`Options::max_string`], [`Options::max_data`]).
//! - **Checkpoints.** Every [`Options::checkpoint_records`] records, every
//!   [`Options::checkpoint_interval`] while records are unsigned, and on close, a
//!   `checkpoint` record signs (ed25519, `signing.key`, 0600) its `seq` and the chain hash
//!   before it; `signing.pub` lets anyone check it without the private key.
//! - **Durability.** [`AuditLog::append`] queues; a writer thread writes whatever is queued
//!   as one batch, fdatasyncs, then reports it durable ([`AuditLog::flush`],
//!   [`AuditLog::append_durable`]). A crash loses only records not yet reported durable; a
//!   torn last line is cut off when the log is reopened, and the `log` record written then
//!   says where.
//! - **Back-pressure.** The queue is bounded. Events (which sandboxes can cause at will)
//!   are rate-limited and dropped when the queue is full, never blocking; the count is
//!   written in the next record's `dropped`. Other kinds wait for room.
//! - **Verification.** [`verify`] names the first record that was modified, deleted,
//!   reordered or inserted, a missing segment file, or a bad checkpoint signature. It cannot
//!   see records cut off after the last checkpoint, nor whole trailing segments: compare
//!   [`Report::last_checkpoint`]/[`Report::last_hash`] with a copy kept elsewhere.

#![forbid(unsafe_code)]

mod error;
mod export;
mod key;
mod record;
mod segment;
mod time;
mod verify;
mod writer;

use std::path::{Path, PathBuf};

pub use error::{AppendError, Error};
pub use export::{export, Filter};
pub use key::read_public_key;
pub use record::{truncate as cap_string, Kind, Record};
pub use time::normalize as normalize_time;
pub use verify::{verify, verify_with, Problem, Report, TornTail};
pub use writer::{AuditLog, Options, Stats};

/// Re-exported so callers can pin a key for [`verify_with`].
pub use ed25519_dalek::VerifyingKey;

/// The audit directory inside a daemon data directory.
pub fn dir(data_dir: &Path) -> PathBuf {
    data_dir.join("audit")
}

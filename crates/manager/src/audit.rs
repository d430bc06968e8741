//! The daemon's side of the audit log (crates/audit, docs/adr/0004-audit-log.md): what it
//! records and how it keeps the async runtime from ever waiting on the disk.
//!
//! - **Events** are appended straight from the event bus: `AuditLog::append` never waits
//!   for them (over the log's own rate, or with its queue full, they are dropped and the
//!   count lands in the next record's `dropped`).
//! - **API calls and policies** must not be dropped, so `append` would wait for room when
//!   the log's queue is full (a stalled disk). They go through a bounded channel to one
//!   feeder thread instead: a request task waits asynchronously for channel room, never a
//!   runtime thread for the disk.
//! - **Durability.** Records are queued, not awaited: the log's writer thread writes and
//!   fdatasyncs what accumulated, at most once per `sync_interval` (10 ms) while records
//!   trickle in (group commit), so a record is on disk within ~10 ms plus one sync of the
//!   response. A crash can lose that window; `verify` passes after it (the torn tail is cut
//!   and said so). `GET /v1/audit` flushes before it reads.

use std::path::{Path, PathBuf};

use safehouse_audit::{AuditLog, Record};
use tokio::sync::mpsc;

use crate::events::Event;

/// Records waiting for the feeder thread before request tasks wait for room.
const FEED_QUEUE: usize = 8192;

/// Cheap to clone.
#[derive(Clone)]
pub struct Audit {
    log: AuditLog,
    tx: mpsc::Sender<Record>,
    dir: PathBuf,
}

impl Audit {
    /// Starts the feeder thread for `log`, which lives in `dir`.
    pub fn start(log: AuditLog, dir: &Path) -> std::io::Result<Audit> {
        let (tx, mut rx) = mpsc::channel::<Record>(FEED_QUEUE);
        let feed = log.clone();
        std::thread::Builder::new().name("audit-feed".into()).spawn(move || {
            while let Some(rec) = rx.blocking_recv() {
                // Fails only once the log has failed or closed; the writer said why on stderr.
                let _ = feed.append(rec);
            }
        })?;
        Ok(Audit { log, tx, dir: dir.to_path_buf() })
    }

    /// Queues an API call or policy record (waits asynchronously while the feed is full).
    pub async fn record(&self, rec: Record) {
        let _ = self.tx.send(rec).await;
    }

    /// Appends an event; never blocks.
    pub fn event(&self, e: &Event) {
        let data = serde_json::to_value(e).unwrap_or(serde_json::Value::Null);
        let mut rec = Record::event(&e.sandbox, data);
        if let Some(t) = &e.tenant {
            rec = rec.tenant(t.clone());
        }
        let _ = self.log.append(rec);
    }

    /// The log's directory (for `GET /v1/audit`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The log itself (for its counters and to flush it at shutdown).
    pub fn log(&self) -> &AuditLog {
        &self.log
    }
}

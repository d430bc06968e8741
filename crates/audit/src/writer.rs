//! The writer: `append` numbers a record and queues it in memory (cheap; for events it never
//! waits for the disk); one background thread chains and signs, writes each batch, fdatasyncs
//! it and only then marks it durable.

use std::borrow::Cow;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::key::Signer;
use crate::record::{encode_data, encode_line, hex, truncate, Caps, Kind, Pending, Record};
use crate::time::{format_ms, now_ms};
use crate::{segment, AppendError, Error};

/// Tuning. The defaults suit the daemon.
#[derive(Clone, Debug)]
pub struct Options {
    /// Start a new segment file when the current one would grow past this many bytes.
    /// Default 64 MiB.
    pub rotate_bytes: u64,
    /// The in-memory queue holds at most this many records... Default 262,144.
    pub queue_records: usize,
    /// ...and this many bytes of record data. Default 64 MiB. When full, events are dropped
    /// (and counted); other kinds wait for room.
    pub queue_bytes: usize,
    /// A signed checkpoint after this many records. Default 10,000.
    pub checkpoint_records: u64,
    /// ...or after this long with unsigned records. Default 1 s. This bounds what an
    /// attacker can cut off the end of the log undetected (see docs/adr/0004-audit-log.md).
    pub checkpoint_interval: Duration,
    /// Group commit: at most one fdatasync per this interval while records trickle in, so
    /// a steady stream of single records (an exec every millisecond brings 3–4) costs one
    /// disk flush per interval, not one per record. A caller waiting for durability
    /// ([`AuditLog::flush`], [`AuditLog::append_durable`]), a queue a quarter full and
    /// closing the log all write at once. Default 10 ms: a crash loses at most this much of
    /// the not yet durable tail. Zero: write as soon as records arrive.
    pub sync_interval: Duration,
    /// Events per second accepted (a token bucket); 0 = no limit. Default 5,000.
    pub event_rate: u32,
    /// Events accepted in a burst above the rate. Default 10,000.
    pub event_burst: u32,
    /// Bytes per string in a record's data, sandbox and tenant. Default 4 KiB.
    pub max_string: usize,
    /// Bytes of a record's serialized data; policies may use all of it for their text.
    /// Default 64 KiB.
    pub max_data: usize,
    /// Testing only: sleep this long after each batch write, as a slow disk would.
    #[doc(hidden)]
    pub slow_disk: Duration,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            rotate_bytes: 64 << 20,
            queue_records: 256 << 10,
            queue_bytes: 64 << 20,
            checkpoint_records: 10_000,
            checkpoint_interval: Duration::from_secs(1),
            sync_interval: Duration::from_millis(10),
            event_rate: 5_000,
            event_burst: 10_000,
            max_string: 4 << 10,
            max_data: 64 << 10,
            slow_disk: Duration::ZERO,
        }
    }
}

/// Counters, for the daemon's metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// The sequence number of the last record queued.
    pub last_seq: u64,
    /// Every record up to this one is on disk (fdatasync returned).
    pub durable_seq: u64,
    /// Events dropped since the log was opened.
    pub dropped: u64,
    /// Records waiting to be written.
    pub queued: usize,
    pub queued_bytes: usize,
}

/// The audit log's writing end. Cheap to clone; every clone appends to the same chain. The
/// writer thread drains the queue, writes a final checkpoint and stops when the last clone
/// is dropped (or on [`AuditLog::close`]).
#[derive(Clone)]
pub struct AuditLog {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

struct Shared {
    state: Mutex<State>,
    /// The writer waits here for records.
    work: Condvar,
    /// Appenders of kinds that must not be dropped wait here for room in the queue.
    space: Condvar,
    /// `flush` and `append_durable` wait here.
    durable: Condvar,
    opts: Options,
}

struct State {
    queue: Vec<Pending>,
    queued_bytes: usize,
    next_seq: u64,
    durable_seq: u64,
    /// Events dropped since the last record queued: written in the next one.
    dropped_pending: u64,
    dropped_total: u64,
    since_checkpoint: u64,
    last_checkpoint: Instant,
    tokens: f64,
    refilled: Instant,
    failed: Option<String>,
    shutdown: bool,
    stopped: bool,
    /// When the writer last finished a batch (group commit, [`Options::sync_interval`]).
    last_sync: Instant,
    /// Callers in [`AuditLog::wait_durable`]: the writer does not hold their records back.
    durable_waiters: usize,
    /// The writer sleeps with an empty queue: the next append must wake it (appends made
    /// while it holds a batch back for the group commit need not).
    writer_idle: bool,
}

impl State {
    fn full(&self, o: &Options) -> bool {
        self.queue.len() >= o.queue_records || self.queued_bytes >= o.queue_bytes
    }

    /// The queued records must be written now, not held for the group commit.
    fn urgent(&self, o: &Options) -> bool {
        self.durable_waiters > 0
            || self.shutdown
            || self.queue.len() >= o.queue_records / 4
            || self.queued_bytes >= o.queue_bytes / 4
    }

    fn push(&mut self, kind: Kind, sandbox: Option<String>, tenant: Option<String>, data: String) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        let p = Pending {
            seq,
            time_ms: now_ms(),
            kind,
            sandbox,
            tenant,
            data,
            dropped: std::mem::take(&mut self.dropped_pending),
        };
        self.queued_bytes += p.weight();
        self.queue.push(p);
        seq
    }

    fn push_checkpoint(&mut self) {
        self.push(Kind::Checkpoint, None, None, String::new());
        self.since_checkpoint = 0;
        self.last_checkpoint = Instant::now();
    }

    fn event_token(&mut self, o: &Options) -> bool {
        if o.event_rate == 0 {
            return true;
        }
        let now = Instant::now();
        let refill = now.duration_since(self.refilled).as_secs_f64() * f64::from(o.event_rate);
        self.tokens = (self.tokens + refill).min(f64::from(o.event_burst.max(1)));
        self.refilled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn gone(&self) -> Option<AppendError> {
        match &self.failed {
            Some(f) => Some(AppendError::Failed(f.clone())),
            None if self.shutdown || self.stopped => Some(AppendError::Closed),
            None => None,
        }
    }
}

impl AuditLog {
    /// Opens (or creates) the log in `dir` with the default [`Options`].
    pub fn open(dir: impl AsRef<Path>) -> Result<AuditLog, Error> {
        AuditLog::open_with(dir, Options::default())
    }

    /// Opens (or creates) the log in `dir`: makes the directory (mode 0700), loads or creates
    /// the signing key, cuts a torn last line left by a crash, continues the chain and the
    /// sequence, and writes a `log` record saying so (durably, so an unwritable log fails
    /// here rather than later).
    pub fn open_with(dir: impl AsRef<Path>, opts: Options) -> Result<AuditLog, Error> {
        let dir = dir.as_ref();
        fs::create_dir_all(dir).map_err(Error::io("create", dir))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(Error::io("chmod 700", dir))?;
        let signer = Signer::load_or_create(dir)?;
        let head = segment::recover(dir)?;
        let sink = Sink::open(dir, &head, signer, &opts)?;

        let mut state = State {
            queue: Vec::new(),
            queued_bytes: 0,
            next_seq: head.seq + 1,
            durable_seq: head.seq,
            dropped_pending: 0,
            dropped_total: 0,
            since_checkpoint: 0,
            last_checkpoint: Instant::now(),
            tokens: f64::from(opts.event_burst.max(1)),
            refilled: Instant::now(),
            failed: None,
            shutdown: false,
            stopped: false,
            last_sync: Instant::now(),
            durable_waiters: 0,
            writer_idle: false,
        };
        let mut data = serde_json::json!({
            "op": "open",
            "version": env!("CARGO_PKG_VERSION"),
            "pid": std::process::id(),
        });
        if let Some(t) = &head.torn {
            data["torn_tail"] = serde_json::to_value(t).unwrap_or_default();
        }
        state.push(Kind::Log, None, None, data.to_string());
        state.since_checkpoint = 1;

        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            work: Condvar::new(),
            space: Condvar::new(),
            durable: Condvar::new(),
            opts,
        });
        let writer = shared.clone();
        let thread = std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || writer.run(sink))
            .map_err(Error::io("start the writer thread for", dir))?;
        let log = AuditLog { inner: Arc::new(Inner { shared, thread: Mutex::new(Some(thread)) }) };
        log.flush().map_err(|e| Error::Io { what: "write to", path: dir.into(), source: io::Error::other(e) })?;
        Ok(log)
    }

    /// Queues a record and returns its sequence number; it is on disk once
    /// [`AuditLog::flush`] (or `durable_seq`) reaches it, normally within one fdatasync.
    ///
    /// Events never wait: over the rate limit or with the queue full they are dropped and
    /// counted ([`AppendError::Dropped`]). Other kinds wait for room in the queue.
    pub fn append(&self, rec: Record) -> Result<u64, AppendError> {
        let s = &self.inner.shared;
        let o = &s.opts;
        if rec.kind == Kind::Checkpoint {
            return Err(AppendError::Reserved);
        }
        // Serialized on the caller's thread, outside the lock.
        let caps = match rec.kind {
            Kind::Policy => Caps { string: o.max_data, data: o.max_data + 1024 },
            _ => Caps { string: o.max_string, data: o.max_data },
        };
        let data = encode_data(&rec.data, caps);
        let sandbox = rec.sandbox.map(|v| truncate(&v, o.max_string));
        let tenant = rec.tenant.map(|v| truncate(&v, o.max_string));

        let mut st = s.lock();
        if let Some(e) = st.gone() {
            return Err(e);
        }
        if rec.kind == Kind::Event {
            if st.full(o) || !st.event_token(o) {
                st.dropped_pending += 1;
                st.dropped_total += 1;
                return Err(AppendError::Dropped);
            }
        } else {
            while st.full(o) {
                st = s.space.wait(st).unwrap_or_else(|e| e.into_inner());
                if let Some(e) = st.gone() {
                    return Err(e);
                }
            }
        }
        if st.since_checkpoint >= o.checkpoint_records {
            st.push_checkpoint();
        }
        let seq = st.push(rec.kind, sandbox, tenant, data);
        st.since_checkpoint += 1;
        let wake = st.writer_idle || st.urgent(o);
        drop(st);
        if wake {
            s.work.notify_one();
        }
        Ok(seq)
    }

    /// Appends and waits until the record is on disk: for API calls, recorded before they
    /// are answered.
    pub fn append_durable(&self, rec: Record) -> Result<u64, AppendError> {
        let seq = self.append(rec)?;
        self.wait_durable(seq)?;
        Ok(seq)
    }

    /// Waits until everything appended so far is on disk; returns the durable sequence number.
    pub fn flush(&self) -> Result<u64, AppendError> {
        let target = self.inner.shared.lock().next_seq - 1;
        self.wait_durable(target)
    }

    /// Waits until record `seq` (and every one before it) is on disk.
    pub fn wait_durable(&self, seq: u64) -> Result<u64, AppendError> {
        let s = &self.inner.shared;
        let mut st = s.lock();
        st.durable_waiters += 1;
        s.work.notify_one();
        let result = loop {
            if st.durable_seq >= seq {
                break Ok(st.durable_seq);
            }
            if let Some(f) = &st.failed {
                break Err(AppendError::Failed(f.clone()));
            }
            if st.stopped {
                break Err(AppendError::Closed);
            }
            st = s.durable.wait(st).unwrap_or_else(|e| e.into_inner());
        };
        st.durable_waiters -= 1;
        result
    }

    pub fn stats(&self) -> Stats {
        let st = self.inner.shared.lock();
        Stats {
            last_seq: st.next_seq - 1,
            durable_seq: st.durable_seq,
            dropped: st.dropped_total,
            queued: st.queue.len(),
            queued_bytes: st.queued_bytes,
        }
    }

    /// Drains the queue, writes a final checkpoint and stops the writer (for every clone).
    /// Returns the last durable sequence number.
    pub fn close(self) -> Result<u64, AppendError> {
        self.inner.stop();
        let st = self.inner.shared.lock();
        match &st.failed {
            Some(f) => Err(AppendError::Failed(f.clone())),
            None => Ok(st.durable_seq),
        }
    }
}

impl Inner {
    fn stop(&self) {
        self.shared.lock().shutdown = true;
        self.shared.work.notify_all();
        self.shared.space.notify_all();
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(t) = thread {
            let _ = t.join();
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The writer thread.
    fn run(&self, mut sink: Sink) {
        loop {
            let batch = {
                let mut st = self.lock();
                loop {
                    if !st.queue.is_empty() {
                        let since = st.last_sync.elapsed();
                        if since >= self.opts.sync_interval || st.urgent(&self.opts) {
                            break;
                        }
                        // Group commit: hold the batch back a little for more records.
                        st = self
                            .work
                            .wait_timeout(st, self.opts.sync_interval - since)
                            .unwrap_or_else(|e| e.into_inner())
                            .0;
                        continue;
                    }
                    let unsigned = st.since_checkpoint > 0 || st.dropped_pending > 0;
                    if st.shutdown {
                        if unsigned {
                            st.push_checkpoint();
                            continue;
                        }
                        st.stopped = true;
                        drop(st);
                        self.durable.notify_all();
                        return;
                    }
                    let elapsed = st.last_checkpoint.elapsed();
                    if unsigned && elapsed >= self.opts.checkpoint_interval {
                        st.push_checkpoint();
                        break;
                    }
                    let wait =
                        if unsigned { self.opts.checkpoint_interval - elapsed } else { self.opts.checkpoint_interval };
                    st.writer_idle = true;
                    st = self.work.wait_timeout(st, wait).unwrap_or_else(|e| e.into_inner()).0;
                    st.writer_idle = false;
                }
                st.queued_bytes = 0;
                std::mem::take(&mut st.queue)
            };
            self.space.notify_all();
            let last = batch.last().map_or(0, |p| p.seq);
            let result = sink.write(&batch);
            drop(batch);
            let mut st = self.lock();
            st.last_sync = Instant::now();
            match result {
                Ok(()) => st.durable_seq = last,
                Err(e) => {
                    st.failed = Some(e);
                    st.stopped = true;
                }
            }
            let stop = st.stopped;
            drop(st);
            self.durable.notify_all();
            if stop {
                self.space.notify_all();
                return;
            }
        }
    }
}

/// The open segment and the chain's head; owned by the writer thread.
struct Sink {
    dir: PathBuf,
    file: File,
    segment: u32,
    size: u64,
    rotate_bytes: u64,
    prev: [u8; 32],
    signer: Signer,
    buf: Vec<u8>,
    time: (i64, String),
    slow_disk: Duration,
}

impl Sink {
    fn open(dir: &Path, head: &segment::Head, signer: Signer, opts: &Options) -> Result<Sink, Error> {
        let path = dir.join(segment::name(head.segment));
        let file = open_segment(&path).map_err(Error::io("open", &path))?;
        sync_dir(dir).map_err(Error::io("sync", dir))?;
        Ok(Sink {
            dir: dir.into(),
            file,
            segment: head.segment,
            size: head.size,
            rotate_bytes: opts.rotate_bytes.max(1),
            prev: head.hash,
            signer,
            buf: Vec::with_capacity(1 << 20),
            time: (i64::MIN, String::new()),
            slow_disk: opts.slow_disk,
        })
    }

    fn write(&mut self, batch: &[Pending]) -> Result<(), String> {
        self.buf.clear();
        for p in batch {
            let start = self.buf.len();
            if self.time.0 != p.time_ms {
                self.time = (p.time_ms, format_ms(p.time_ms));
            }
            let data = match p.kind {
                Kind::Checkpoint => Cow::Owned(self.checkpoint_data(p.seq)),
                _ => Cow::Borrowed(p.data.as_str()),
            };
            let hash = encode_line(&mut self.buf, p, &self.time.1, &data, &self.prev);
            if self.size + self.buf.len() as u64 > self.rotate_bytes && self.size + start as u64 > 0 {
                // This record opens the next segment.
                self.write_out(..start)?;
                self.rotate()?;
                self.buf.drain(..start);
            }
            self.prev = hash;
        }
        self.write_out(..)?;
        if !self.slow_disk.is_zero() {
            std::thread::sleep(self.slow_disk);
        }
        self.file.sync_data().map_err(|e| self.err("fdatasync", e))
    }

    fn write_out(&mut self, range: impl std::slice::SliceIndex<[u8], Output = [u8]>) -> Result<(), String> {
        let bytes = &self.buf[range];
        self.file.write_all(bytes).map_err(|e| self.err("write", e))?;
        self.size += bytes.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> Result<(), String> {
        self.file.sync_data().map_err(|e| self.err("fdatasync", e))?;
        let path = self.dir.join(segment::name(self.segment + 1));
        self.file = open_segment(&path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        self.segment += 1;
        self.size = 0;
        sync_dir(&self.dir).map_err(|e| format!("cannot sync {}: {e}", self.dir.display()))
    }

    fn checkpoint_data(&self, seq: u64) -> String {
        let sig = self.signer.sign(seq, &self.prev);
        format!(
            r#"{{"upto":{},"chain":"{}","key":"{}","sig":"{}"}}"#,
            seq - 1,
            hex(&self.prev),
            self.signer.public_hex,
            hex(&sig.to_bytes())
        )
    }

    fn err(&self, what: &str, e: io::Error) -> String {
        format!("cannot {what} {}: {e}", self.dir.join(segment::name(self.segment)).display())
    }
}

fn open_segment(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).mode(0o600).open(path)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

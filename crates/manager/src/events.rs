//! The event bus: everything that happens in or to a sandbox, numbered per sandbox, kept in
//! bounded replay rings, broadcast to live subscribers (the SSE routes) and handed to the
//! audit log (docs/design.md, "Events").
//!
//! Sources call [`EventBus::emit`] (the manager's [`crate::Manager::emit`]): it
//! never blocks and never waits for a subscriber or the disk. What a sandbox can cause is
//! bounded at the source (AG-04, AG-05):
//!
//! - **Rate.** A token bucket per sandbox ([`BusConfig::rate`] per second, bursts of
//!   [`BusConfig::burst`]). An event over the limit is dropped and counted; the next event
//!   that gets through carries the count in `dropped`, so a reader knows what it missed.
//! - **Size.** Every string in `data` (argv, paths, hosts...) is cut at
//!   [`BusConfig::max_string`] bytes with a `…[truncated, N bytes]` marker, and the whole of
//!   `data` at [`BusConfig::max_data`] bytes. Events are JSON, so a newline or the ESC of an
//!   ANSI sequence is escaped: one event is always one SSE `data:` line and one audit record.
//! - **Memory.** Rings are bounded by count and bytes; a slow subscriber that falls more
//!   than the broadcast buffer behind is told how many it missed (`lagged`), never waited for.
//! - **Disk.** What a sandbox drives reaches the sink (the audit log) up to
//!   [`BusConfig::audit_budget`] bytes per sandbox over its life; past it those events are
//!   still streamed but not audited, one `audit.budget_exceeded` event (audited) says so,
//!   and the terminal event carries the count (`events_unaudited`). The rate limit alone
//!   bounds the log's growth per second, not in total.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use serde::Serialize;
use serde_json::Value;
use tokio::sync::broadcast;

/// One event, as the SSE routes send it and the audit log records it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Event {
    /// The sandbox (`sb_...`).
    pub sandbox: String,
    /// Per sandbox, from 1, without gaps among the events that got through.
    pub seq: u64,
    /// UTC, RFC 3339 with milliseconds.
    pub time: String,
    /// `sandbox.created`, `exec.started`, `net.denied`, ... (docs/api.md lists them).
    pub kind: String,
    pub data: Value,
    /// Events of this sandbox dropped by the rate limit just before this one.
    #[serde(skip_serializing_if = "is_zero")]
    pub dropped: u64,
    /// The sandbox's tenant (for filtering; not sent).
    #[serde(skip)]
    pub tenant: Option<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Event {
    /// Whether this event ends its sandbox's stream.
    pub fn is_terminal(&self) -> bool {
        matches!(self.kind.as_str(), "sandbox.killed" | "sandbox.expired" | "sandbox.failed")
    }

    /// Approximate memory held (for the rings' byte bounds).
    fn weight(&self) -> usize {
        128 + self.sandbox.len() + self.kind.len() + approx_size(&self.data)
    }
}

/// Tunables; the defaults suit the daemon.
#[derive(Debug, Clone)]
pub struct BusConfig {
    /// Events per second and sandbox that get through.
    pub rate: f64,
    /// Events a sandbox may emit at once above the rate.
    pub burst: f64,
    /// Events kept per sandbox for replay (`since_seq`)...
    pub ring_events: usize,
    /// ...and at most this many bytes of them.
    pub ring_bytes: usize,
    /// Events kept across all sandboxes (replayed by `GET /v1/events`).
    pub global_events: usize,
    pub global_bytes: usize,
    /// Live events buffered per subscriber before it is told it lagged.
    pub broadcast: usize,
    /// Ended sandboxes whose rings are kept (oldest forgotten first).
    pub retired: usize,
    /// Bytes per string in `data`.
    pub max_string: usize,
    /// Bytes of one sandbox's rate-limited events sent to the sink over its life.
    pub audit_budget: u64,
    /// Bytes of all strings in one event's `data` together.
    pub max_data: usize,
}

impl Default for BusConfig {
    fn default() -> BusConfig {
        BusConfig {
            rate: 1000.0,
            burst: 5000.0,
            ring_events: 1024,
            ring_bytes: 1 << 20,
            global_events: 4096,
            global_bytes: 4 << 20,
            broadcast: 4096,
            retired: 256,
            max_string: 4096,
            max_data: 16 << 10,
            audit_budget: 64 << 20,
        }
    }
}

/// Where events go besides the rings and subscribers (the audit log). Must not block.
pub type Sink = Arc<dyn Fn(&Event) + Send + Sync>;

/// Whether one more rate-limited event of a tenant's sandboxes gets through (the tenant's
/// `events` quota, quota.rs). Must not block.
pub type TenantGate = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// Cheap to clone; every clone is the same bus.
#[derive(Clone)]
pub struct EventBus {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: BusConfig,
    tx: broadcast::Sender<Arc<Event>>,
    state: Mutex<State>,
    sink: OnceLock<Sink>,
    gate: OnceLock<TenantGate>,
}

#[derive(Default)]
struct State {
    sandboxes: HashMap<String, Stream>,
    global: Ring,
    /// Ended sandboxes, oldest first: their rings go when there are too many.
    retired: VecDeque<String>,
}

struct Stream {
    tenant: Option<String>,
    seq: u64,
    tokens: f64,
    refilled: Instant,
    dropped: u64,
    dropped_total: u64,
    /// Bytes of rate-limited events sent to the sink, and events past the budget.
    audited: u64,
    unaudited: u64,
    ring: Ring,
}

#[derive(Default)]
struct Ring {
    events: VecDeque<Arc<Event>>,
    bytes: usize,
}

impl Ring {
    fn push(&mut self, e: Arc<Event>, max_events: usize, max_bytes: usize) {
        self.bytes += e.weight();
        self.events.push_back(e);
        while self.events.len() > max_events || (self.bytes > max_bytes && self.events.len() > 1) {
            if let Some(old) = self.events.pop_front() {
                self.bytes -= old.weight();
            }
        }
    }
}

/// What a new subscriber gets: what was kept, then the live events after it.
pub struct Subscription {
    pub replay: Vec<Arc<Event>>,
    pub live: broadcast::Receiver<Arc<Event>>,
}

impl Default for EventBus {
    fn default() -> EventBus {
        EventBus::new(BusConfig::default())
    }
}

impl EventBus {
    pub fn new(cfg: BusConfig) -> EventBus {
        let (tx, _) = broadcast::channel(cfg.broadcast.max(1));
        EventBus {
            inner: Arc::new(Inner { cfg, tx, state: Mutex::default(), sink: OnceLock::new(), gate: OnceLock::new() }),
        }
    }

    /// Sends every event that gets through to `sink` too (once; later calls are ignored).
    pub fn set_sink(&self, sink: Sink) {
        let _ = self.inner.sink.set(sink);
    }

    /// Rate-limited events also pass `gate` with their sandbox's tenant (once; later calls
    /// are ignored): what it refuses is dropped and counted like the sandbox's own limit.
    pub fn set_tenant_gate(&self, gate: TenantGate) {
        let _ = self.inner.gate.set(gate);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Names the tenant of a sandbox, so its events reach that tenant's subscribers. Call it
    /// before the sandbox's first event.
    pub fn register(&self, sandbox: &str, tenant: &str) {
        let mut st = self.lock();
        let s = st.sandboxes.entry(sandbox.to_string()).or_insert_with(|| Stream::new(&self.inner.cfg));
        s.tenant = Some(tenant.to_string());
    }

    /// The sandbox ended: its ring is kept for replay until [`BusConfig::retired`] newer
    /// sandboxes have ended too.
    pub fn retire(&self, sandbox: &str) {
        let mut st = self.lock();
        if st.retired.iter().any(|s| s == sandbox) {
            return;
        }
        st.retired.push_back(sandbox.to_string());
        while st.retired.len() > self.inner.cfg.retired {
            if let Some(old) = st.retired.pop_front() {
                st.sandboxes.remove(&old);
            }
        }
    }

    /// Records that `kind` happened to `sandbox`, for what sandboxed code can cause at will
    /// (its execs, its network requests). Never blocks: over the sandbox's rate it drops the
    /// event (counted, reported in the next one) and returns `None`.
    pub fn emit(&self, sandbox: &str, kind: &str, data: Value) -> Option<Arc<Event>> {
        self.push(sandbox, kind, data, true)
    }

    /// Like [`EventBus::emit`] without the rate limit, for what the daemon does or the API
    /// asked for (lifecycle, API execs, file uploads): bounded by the API's own pace, and
    /// never lost to a sandbox's flood. It carries the flood's `dropped` count.
    pub fn emit_unlimited(&self, sandbox: &str, kind: &str, data: Value) -> Option<Arc<Event>> {
        self.push(sandbox, kind, data, false)
    }

    fn push(&self, sandbox: &str, kind: &str, data: Value, limited: bool) -> Option<Arc<Event>> {
        let cfg = &self.inner.cfg;
        let mut to_sink = true;
        let mut budget_crossed = false;
        let event = {
            let mut st = self.lock();
            if !st.sandboxes.contains_key(sandbox) && st.sandboxes.len() >= 65_536 {
                return None; // unknown ids from a confused caller must not grow the map
            }
            let s = st.sandboxes.entry(sandbox.to_string()).or_insert_with(|| Stream::new(cfg));
            let over_tenant = |s: &Stream| match (self.inner.gate.get(), &s.tenant) {
                (Some(gate), Some(tenant)) => !gate(tenant),
                _ => false,
            };
            if limited && (!s.take_token(cfg) || over_tenant(s)) {
                s.dropped += 1;
                s.dropped_total += 1;
                return None;
            }
            s.seq += 1;
            let event = Arc::new(Event {
                sandbox: cap_string(sandbox, cfg.max_string),
                seq: s.seq,
                time: now_ms(),
                kind: clean_kind(kind),
                // Capped under the lock so seq order is the order in the rings; the cost is
                // bounded by max_data.
                data: cap_data(&data, cfg.max_string, cfg.max_data),
                dropped: std::mem::take(&mut s.dropped),
                tenant: s.tenant.clone(),
            });
            if limited {
                let w = event.weight() as u64;
                if s.unaudited == 0 && s.audited + w <= cfg.audit_budget {
                    s.audited += w;
                } else {
                    to_sink = false;
                    s.unaudited += 1;
                    budget_crossed = s.unaudited == 1;
                }
            }
            s.ring.push(event.clone(), cfg.ring_events, cfg.ring_bytes);
            st.global.push(event.clone(), cfg.global_events, cfg.global_bytes);
            // Sent under the lock, so a subscriber that snapshots a ring and subscribes in one
            // critical section sees every event exactly once.
            let _ = self.inner.tx.send(event.clone());
            event
        };
        if let Some(sink) = self.inner.sink.get().filter(|_| to_sink) {
            sink(&event);
        }
        if budget_crossed {
            let data = serde_json::json!({ "budget_bytes": cfg.audit_budget,
                "message": "this sandbox's events past its audit budget are streamed but no longer written to the audit log; the terminal event counts them" });
            self.push(sandbox, "audit.budget_exceeded", data, false);
        }
        Some(event)
    }

    /// One sandbox's kept events with `seq > since_seq`, then its live ones.
    pub fn subscribe_sandbox(&self, sandbox: &str, since_seq: u64) -> Subscription {
        let st = self.lock();
        let replay = st
            .sandboxes
            .get(sandbox)
            .map(|s| s.ring.events.iter().filter(|e| e.seq > since_seq).cloned().collect())
            .unwrap_or_default();
        Subscription { replay, live: self.inner.tx.subscribe() }
    }

    /// The kept events of every sandbox `visible` accepts (by tenant), then the live ones.
    pub fn subscribe_all(&self, replay: bool, visible: impl Fn(&Event) -> bool) -> Subscription {
        let st = self.lock();
        let replay =
            if replay { st.global.events.iter().filter(|e| visible(e)).cloned().collect() } else { Vec::new() };
        Subscription { replay, live: self.inner.tx.subscribe() }
    }

    /// Events of `sandbox` streamed but not audited (past its audit budget).
    pub fn unaudited(&self, sandbox: &str) -> u64 {
        self.lock().sandboxes.get(sandbox).map(|s| s.unaudited).unwrap_or(0)
    }

    /// Events of `sandbox` dropped by the rate limit since it started.
    pub fn dropped(&self, sandbox: &str) -> u64 {
        self.lock().sandboxes.get(sandbox).map(|s| s.dropped_total).unwrap_or(0)
    }
}

impl Stream {
    fn new(cfg: &BusConfig) -> Stream {
        Stream {
            tenant: None,
            seq: 0,
            tokens: cfg.burst,
            refilled: Instant::now(),
            dropped: 0,
            dropped_total: 0,
            audited: 0,
            unaudited: 0,
            ring: Ring::default(),
        }
    }

    fn take_token(&mut self, cfg: &BusConfig) -> bool {
        if cfg.rate <= 0.0 {
            return true;
        }
        let now = Instant::now();
        let dt = now.duration_since(self.refilled).as_secs_f64();
        self.refilled = now;
        self.tokens = (self.tokens + dt * cfg.rate).min(cfg.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// A kind is a short dotted name (`[a-z0-9._-]`, ≤ 64 bytes); anything else becomes `_`,
/// so it can go in an SSE `event:` line as it is.
fn clean_kind(kind: &str) -> String {
    let ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-');
    let k: String = kind.chars().take(64).map(|c| if ok(c) { c } else { '_' }).collect();
    if k.is_empty() {
        "_".into()
    } else {
        k
    }
}

/// Now, UTC, RFC 3339 with milliseconds (`2026-01-31T12:00:00.123Z`).
pub fn now_ms() -> String {
    let t = time::OffsetDateTime::now_utc();
    let fmt = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    t.format(&fmt).unwrap_or_else(|_| "1970-01-01T00:00:00.000Z".into())
}

/// `s` if it fits in `cap` bytes, else its longest prefix on a character boundary followed
/// by `…[truncated, N bytes]` (the audit log caps its strings the same way).
pub use safehouse_audit::cap_string;

const MAX_DEPTH: usize = 16;

/// `data` with every string capped at `max_string` bytes and all strings together at
/// `max_data` bytes (later strings get what is left; arrays past the budget end with a
/// `…[N more]` marker); nesting is cut at 16 levels.
pub fn cap_data(data: &Value, max_string: usize, max_data: usize) -> Value {
    let mut budget = max_data;
    cap_value(data, max_string, &mut budget, 0)
}

fn cap_value(v: &Value, cap: usize, budget: &mut usize, depth: usize) -> Value {
    match v {
        Value::String(s) => {
            let c = cap.min(*budget);
            let out = cap_string(s, c);
            *budget = budget.saturating_sub(s.len().min(c) + 8);
            Value::String(out)
        }
        _ if depth >= MAX_DEPTH => Value::String("(nested too deep)".into()),
        Value::Array(a) => {
            let mut out = Vec::with_capacity(a.len().min(256));
            for (i, x) in a.iter().enumerate() {
                if *budget == 0 {
                    out.push(Value::String(format!("…[{} more]", a.len() - i)));
                    break;
                }
                out.push(cap_value(x, cap, budget, depth + 1));
            }
            Value::Array(out)
        }
        Value::Object(o) => {
            let mut out = serde_json::Map::new();
            for (k, x) in o {
                let key = cap_string(k, 256);
                *budget = budget.saturating_sub(key.len());
                out.insert(key, cap_value(x, cap, budget, depth + 1));
            }
            Value::Object(out)
        }
        other => {
            *budget = budget.saturating_sub(8);
            other.clone()
        }
    }
}

fn approx_size(v: &Value) -> usize {
    match v {
        Value::String(s) => s.len() + 8,
        Value::Array(a) => 8 + a.iter().map(approx_size).sum::<usize>(),
        Value::Object(o) => 8 + o.iter().map(|(k, x)| k.len() + 8 + approx_size(x)).sum::<usize>(),
        _ => 8,
    }
}

#[cfg(test)]
mod tests;

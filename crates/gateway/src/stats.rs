//! Counters a gateway keeps, and the snapshot [`Stats`] it hands out.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// How many denials [`Stats::recent_denials`] keeps.
pub const RECENT_DENIALS: usize = 32;

/// A snapshot of a gateway's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Client connections accepted (served or turned away), since start.
    pub connections: u64,
    /// Client connections open now.
    pub active_connections: u64,
    /// Client connections turned away with a 503 because `max_connections` were open.
    pub rejected_connections: u64,
    /// Requests (HTTP requests, CONNECTs, SOCKS requests) that reached the policy.
    pub requests: u64,
    /// Requests the policy allowed (name and every resolved address).
    pub allowed: u64,
    /// Requests the policy (or the spent budget) denied.
    pub denied: u64,
    /// Requests that passed `check_target` but then failed: resolution or connection
    /// failures, upstream errors.
    pub failed: u64,
    /// Bytes sent from the gateway to the outside.
    pub bytes_out: u64,
    /// Bytes received by the gateway from the outside.
    pub bytes_in: u64,
    /// True once `egress_bytes` was spent.
    pub budget_exceeded: bool,
    /// The last [`RECENT_DENIALS`] denials, oldest first.
    pub recent_denials: Vec<DenialRecord>,
}

/// One denial, as kept in [`Stats::recent_denials`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DenialRecord {
    /// Milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// `host:port` as requested.
    pub target: String,
    pub rule: String,
    pub reason: String,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub connections: AtomicU64,
    pub active: AtomicU64,
    pub rejected: AtomicU64,
    pub requests: AtomicU64,
    pub allowed: AtomicU64,
    pub denied: AtomicU64,
    pub failed: AtomicU64,
    pub bytes_out: AtomicU64,
    pub bytes_in: AtomicU64,
    pub denials: Mutex<VecDeque<DenialRecord>>,
}

impl Counters {
    pub fn bump(c: &AtomicU64) {
        c.fetch_add(1, Relaxed);
    }

    pub fn record_denial(&self, target: &str, rule: &str, reason: &str) {
        Self::bump(&self.denied);
        let time_ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
        let rec = DenialRecord { time_ms, target: target.into(), rule: rule.into(), reason: reason.into() };
        // A poisoned lock only means another thread panicked mid-push; the deque is still valid.
        let mut d = self.denials.lock().unwrap_or_else(|e| e.into_inner());
        if d.len() == RECENT_DENIALS {
            d.pop_front();
        }
        d.push_back(rec);
    }

    pub fn snapshot(&self, budget_exceeded: bool) -> Stats {
        let recent_denials = self.denials.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned().collect();
        Stats {
            connections: self.connections.load(Relaxed),
            active_connections: self.active.load(Relaxed),
            rejected_connections: self.rejected.load(Relaxed),
            requests: self.requests.load(Relaxed),
            allowed: self.allowed.load(Relaxed),
            denied: self.denied.load(Relaxed),
            failed: self.failed.load(Relaxed),
            bytes_out: self.bytes_out.load(Relaxed),
            bytes_in: self.bytes_in.load(Relaxed),
            budget_exceeded,
            recent_denials,
        }
    }
}

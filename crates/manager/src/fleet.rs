//! The fleet at a glance: the frames `GET /v1/metrics` streams (the web console's fleet
//! view), one per sampler round, with every live sandbox the caller can see.
//!
//! A stream tells its reader about each sandbox once (its details and recent history, the
//! first time it names it) and then only its numbers, so a frame for 1,000 sandboxes stays
//! small; sandboxes that ended since the last frame are listed in `gone`.

use std::collections::{HashMap, HashSet};

use serde::Serialize;
use tokio::sync::watch;

use super::metrics::Sample;
use super::{Manager, ManagerError, SandboxInfo};

/// Counts the sampler's rounds; each fleet stream waits for the next one.
pub(crate) struct Rounds(watch::Sender<u64>);

impl Default for Rounds {
    fn default() -> Rounds {
        Rounds(watch::channel(0).0)
    }
}

impl Rounds {
    pub(super) fn tick(&self) {
        self.0.send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// Most samples of history a frame carries per sandbox (what the sampler keeps).
pub const MAX_HISTORY: usize = super::metrics::HISTORY;

/// One sandbox in a frame: the last sampled second.
#[derive(Debug, Clone, Serialize)]
pub struct FleetEntry {
    pub id: String,
    /// `running` or `frozen`.
    pub state: &'static str,
    pub cpu_pct: f64,
    pub memory_bytes: u64,
    pub pids: u64,
    pub disk_bytes: u64,
    pub net_in: u64,
    pub net_out: u64,
    pub violations: u64,
    /// The sandbox, the first time this stream names it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub info: Option<SandboxInfo>,
    /// Its recent CPU and memory, oldest first, the first time this stream names it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<FleetHistory>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FleetHistory {
    pub cpu_pct: Vec<f64>,
    pub memory_bytes: Vec<u64>,
}

/// `event: fleet` of `GET /v1/metrics`.
#[derive(Debug, Clone, Serialize)]
pub struct FleetFrame {
    /// Unix time of the sampler round, seconds.
    pub t: f64,
    /// The first frame of a stream: every live sandbox is in it.
    pub full: bool,
    pub sandboxes: Vec<FleetEntry>,
    /// Sandboxes of earlier frames that are no longer live.
    pub gone: Vec<String>,
}

/// What one stream has told its reader so far.
#[derive(Debug, Default)]
pub struct FleetCursor {
    known: HashSet<String>,
    started: bool,
}

/// Past this many sandboxes new to a stream, one query for every live sandbox beats one
/// query each.
const BATCH_LOOKUP: usize = 16;

impl Manager {
    /// Changes once a sampler round is done (about once a second).
    pub fn sampler_rounds(&self) -> watch::Receiver<u64> {
        self.inner.metrics.rounds.0.subscribe()
    }

    /// The next frame for `tenant` (the admin tenant: every sandbox), after what `cursor`
    /// says the reader already has; `history`: samples sent for a sandbox named the first time.
    pub async fn fleet_frame(
        &self,
        tenant: &str,
        cursor: &mut FleetCursor,
        history: usize,
    ) -> Result<FleetFrame, ManagerError> {
        let admin = tenant == crate::auth::ADMIN_TENANT;
        let ids: Vec<String> = {
            let live = self.inner.live.lock().unwrap_or_else(|e| e.into_inner());
            live.values().filter(|l| admin || l.tenant == tenant).map(|l| l.id.clone()).collect()
        };
        let new: Vec<String> = ids.iter().filter(|id| !cursor.known.contains(*id)).cloned().collect();
        let mut infos = self.infos_of(tenant, new).await?;
        let mut sandboxes = Vec::with_capacity(ids.len());
        let mut t = 0.0f64;
        {
            let rings = self.inner.metrics.rings.lock().unwrap_or_else(|e| e.into_inner());
            for id in &ids {
                let ring = rings.get(id);
                let last = ring.and_then(|r| r.samples.back().copied()).unwrap_or_default();
                t = t.max(last.t);
                let info = if cursor.known.contains(id) {
                    None
                } else {
                    // Not in the store yet (its create is finishing): named in a later frame.
                    let Some(info) = infos.remove(id) else { continue };
                    Some(info)
                };
                let history = match (&info, ring) {
                    (Some(_), Some(r)) if history > 0 => Some(recent(r.samples.iter(), history)),
                    _ => None,
                };
                sandboxes.push(FleetEntry {
                    id: id.clone(),
                    state: if self.inner.control.is_frozen(id) { "frozen" } else { "running" },
                    cpu_pct: last.cpu_pct,
                    memory_bytes: last.memory_bytes,
                    pids: last.pids,
                    disk_bytes: last.disk_bytes,
                    net_in: last.net_in,
                    net_out: last.net_out,
                    violations: self.inner.control.violations(id),
                    info,
                    history,
                });
            }
        }
        let now: HashSet<String> = sandboxes.iter().map(|e| e.id.clone()).collect();
        let mut gone: Vec<String> = cursor.known.difference(&now).cloned().collect();
        gone.sort();
        let full = !cursor.started;
        cursor.known = now;
        cursor.started = true;
        if t == 0.0 {
            t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
        }
        Ok(FleetFrame { t, full, sandboxes, gone })
    }

    /// The records of `ids` (live sandboxes the caller can see), by id.
    async fn infos_of(&self, tenant: &str, ids: Vec<String>) -> Result<HashMap<String, SandboxInfo>, ManagerError> {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let (store, tenant) = (self.inner.store.clone(), tenant.to_string());
        tokio::task::spawn_blocking(move || {
            let mut out = HashMap::with_capacity(ids.len());
            if ids.len() > BATCH_LOOKUP {
                let wanted: HashSet<&String> = ids.iter().collect();
                for rec in store.list_running().map_err(super::internal)? {
                    if wanted.contains(&rec.id) {
                        out.insert(rec.id.clone(), rec.info());
                    }
                }
            } else {
                for id in &ids {
                    if let Some(rec) = store.get_sandbox(&tenant, id).map_err(super::internal)? {
                        out.insert(rec.id.clone(), rec.info());
                    }
                }
            }
            Ok(out)
        })
        .await
        .map_err(super::internal)?
    }
}

/// The last `n` samples' CPU and memory, oldest first.
fn recent<'a>(samples: impl DoubleEndedIterator<Item = &'a Sample> + ExactSizeIterator, n: usize) -> FleetHistory {
    let skip = samples.len().saturating_sub(n);
    let (cpu_pct, memory_bytes) = samples.skip(skip).map(|s| (s.cpu_pct, s.memory_bytes)).unzip();
    FleetHistory { cpu_pct, memory_bytes }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_keeps_the_newest_samples_oldest_first() {
        let samples: Vec<Sample> =
            (0..5).map(|i| Sample { cpu_pct: i as f64, memory_bytes: 100 + i, ..Sample::default() }).collect();
        assert_eq!(
            recent(samples.iter(), 3),
            FleetHistory { cpu_pct: vec![2.0, 3.0, 4.0], memory_bytes: vec![102, 103, 104] }
        );
        assert_eq!(recent(samples.iter(), 10).cpu_pct.len(), 5);
        assert_eq!(recent(samples.iter(), 0), FleetHistory { cpu_pct: vec![], memory_bytes: vec![] });
    }

    #[test]
    fn rounds_wake_their_subscribers() {
        let rounds = Rounds::default();
        let mut rx = rounds.0.subscribe();
        assert!(!rx.has_changed().unwrap());
        rounds.tick();
        assert!(rx.has_changed().unwrap());
        assert_eq!(*rx.borrow_and_update(), 1);
    }
}

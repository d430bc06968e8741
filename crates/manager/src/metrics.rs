//! Resource metrics: one sampler task for the daemon reads every live sandbox once a
//! second and keeps its last [`HISTORY`] samples; the daemon's own counters (sandboxes
//! created and ended, requests by route and status) live here too.
//!
//! A sample reads, per sandbox: the cgroup's CPU time, memory (current and peak) and task
//! count; the writable layer's use, by `fstatfs` on the sandbox's root (`/proc/<agent>/root`,
//! the size-capped tmpfs, or on `rootfs = DIR` the overlay, whose statfs reports its upper
//! tmpfs) plus its `/dev/shm` tmpfs (the same disk budget); and the gateway's byte counters.
//! Only filesystems whose magic is tmpfs or overlayfs are counted, so a path that somehow
//! led elsewhere could never report the host's disk.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{Live, Manager, ManagerError, SandboxState};

/// Samples kept per sandbox: five minutes at one a second.
pub const HISTORY: usize = 300;
/// The sampler's period.
pub const PERIOD: Duration = Duration::from_secs(1);

const TMPFS_MAGIC: i64 = 0x0102_1994;
const OVERLAYFS_MAGIC: i64 = 0x794c_7630;

/// One point of a sandbox's history.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Sample {
    /// Unix time, seconds.
    pub t: f64,
    /// CPU use over the period before `t`, in percent of one core.
    pub cpu_pct: f64,
    pub memory_bytes: u64,
    pub pids: u64,
    pub disk_bytes: u64,
    /// Gateway bytes received from / sent to the outside, since the sandbox started.
    pub net_in: u64,
    pub net_out: u64,
}

/// A sandbox's resource use now.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Current {
    pub t: f64,
    pub state: String,
    pub cpu_usage_ns: u64,
    pub cpu_pct: f64,
    pub memory_bytes: u64,
    pub memory_peak_bytes: Option<u64>,
    pub pids: u64,
    pub disk_bytes: u64,
    pub net_in: u64,
    pub net_out: u64,
    /// Violations noted so far (see `control.kill_after_violations`).
    pub violations: u64,
}

/// `GET /v1/sandboxes/{id}/metrics`.
#[derive(Debug, Clone, Serialize)]
pub struct SandboxMetrics {
    pub current: Current,
    /// Oldest first, one a second, at most [`HISTORY`].
    pub history: Vec<Sample>,
}

/// One raw reading.
#[derive(Debug, Clone, Copy, Default)]
struct Reading {
    cpu_ns: u64,
    memory: u64,
    peak: Option<u64>,
    pids: u64,
    disk: u64,
    net_in: u64,
    net_out: u64,
    /// Limit counters: OOM kills and refused forks (the cgroup's), and whether the root
    /// tmpfs or /dev/shm had no byte or inode left.
    oom_kills: u64,
    pids_hits: u64,
    disk_full: bool,
}

pub(super) struct Ring {
    pub(super) samples: VecDeque<Sample>,
    last: Reading,
    last_at: Instant,
}

/// Counters of the daemon since it started.
#[derive(Default)]
pub(crate) struct Counters {
    created: AtomicU64,
    killed: AtomicU64,
    expired: AtomicU64,
    failed: AtomicU64,
    kill_all: AtomicU64,
}

impl Counters {
    pub fn created(&self) {
        self.created.fetch_add(1, Relaxed);
    }
    pub fn ended(&self, state: SandboxState) {
        match state {
            SandboxState::Expired => &self.expired,
            SandboxState::Failed => &self.failed,
            _ => &self.killed,
        }
        .fetch_add(1, Relaxed);
    }
    pub fn kill_all(&self) {
        self.kill_all.fetch_add(1, Relaxed);
    }
}

#[derive(Default)]
pub(crate) struct MetricsState {
    pub(super) rings: Mutex<HashMap<String, Ring>>,
    /// Counts the sampler's rounds; the fleet streams wait on it (fleet.rs).
    pub(super) rounds: super::fleet::Rounds,
    pub counters: Counters,
    /// (method, route template, status) → count. Bounded by the route table.
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    sampler_runs: AtomicU64,
    sampler_cpu_ns: AtomicU64,
    sampler_last_us: AtomicU64,
    sampler_sandboxes: AtomicU64,
}

impl MetricsState {
    pub fn count_request(&self, method: &str, route: &str, status: u16) {
        let mut m = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        *m.entry((method.to_string(), route.to_string(), status)).or_default() += 1;
    }
}

fn now_unix() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// Reads one sandbox. Blocking (cgroupfs and procfs reads).
fn read(live: &Live, mgr: &super::Manager) -> Reading {
    let mut r = Reading::default();
    if let Some(cg) = live.cgroup.lock().unwrap_or_else(|e| e.into_inner()).as_deref() {
        r.cpu_ns = cg.cpu_usage_ns().unwrap_or(0);
        r.memory = cg.memory_current().unwrap_or(0);
        r.peak = cg.peak_memory().ok().flatten();
        r.pids = cg.pids_current().unwrap_or(0);
        r.oom_kills = cg.oom_kills().unwrap_or(0);
        r.pids_hits = cg.pids_limit_hits().unwrap_or(0);
    }
    (r.disk, r.disk_full) = disk_used(live).unwrap_or((0, false));
    // A layer on disk: what its subvolume refers to (its quota group; statfs would say
    // the whole pool's), as of the pool's last commit.
    if live.disk {
        if let Some(u) = mgr.layer_usage(&live.id) {
            let shm = r.disk;
            r.disk = u.referenced + shm;
            r.disk_full |= u.cap.is_some_and(|cap| u.referenced + (1 << 20) > cap);
        }
    }
    if let Some(gw) = &live.gateway {
        let s = gw.stats();
        (r.net_in, r.net_out) = (s.bytes_in, s.bytes_out);
    }
    r
}

/// Bytes used in the sandbox's writable layer: its root tmpfs (or overlay upper) and its
/// `/dev/shm`, opened beneath the agent's root and checked to be tmpfs or overlayfs; and
/// whether either is full (no byte or no inode left).
fn disk_used(live: &Live) -> std::io::Result<(u64, bool)> {
    use safehouse_sys::files as sys;
    let root = live.root_dir()?;
    let mut used = 0;
    let mut full = false;
    let (magic, bytes) = sys::fstatfs_used(root.as_fd())?;
    if !live.disk && (magic == TMPFS_MAGIC || magic == OVERLAYFS_MAGIC) {
        used += bytes;
        full |= is_full(root.as_fd());
    }
    let resolve = sys::RESOLVE_IN_ROOT | sys::RESOLVE_NO_SYMLINKS | sys::RESOLVE_NO_MAGICLINKS;
    if let Ok(shm) = sys::openat2(root.as_fd(), c"dev/shm", libc::O_PATH | libc::O_DIRECTORY, 0, resolve) {
        if let Ok((TMPFS_MAGIC, bytes)) = sys::fstatfs_used(shm.as_fd()) {
            used += bytes;
            full |= is_full(shm.as_fd());
        }
    }
    Ok((used, full))
}

/// No byte (less than a page) or no inode left for the sandbox.
fn is_full(fd: std::os::fd::BorrowedFd<'_>) -> bool {
    matches!(safehouse_sys::files::fstatfs_free(fd), Ok((_, bytes, inodes)) if bytes < 4096 || inodes == 0)
}

/// The `limit.*` events a new reading means, compared with the previous one.
fn limit_events(last: &Reading, now: &Reading) -> Vec<(&'static str, serde_json::Value)> {
    let mut out = Vec::new();
    if now.oom_kills > last.oom_kills {
        out.push((
            "limit.memory",
            serde_json::json!({ "oom_kills": now.oom_kills - last.oom_kills, "total": now.oom_kills,
                "message": "the sandbox reached its memory limit; the kernel killed a process" }),
        ));
    }
    if now.pids_hits > last.pids_hits {
        out.push((
            "limit.pids",
            serde_json::json!({ "refused_forks": now.pids_hits - last.pids_hits, "total": now.pids_hits,
                "message": "the sandbox reached its process limit; forks failed" }),
        ));
    }
    if now.disk_full && !last.disk_full {
        out.push((
            "limit.disk",
            serde_json::json!({ "used_bytes": now.disk,
                "message": "the sandbox's writable layer is full (bytes or inodes); writes fail with ENOSPC" }),
        ));
    }
    out
}

impl Manager {
    /// Counts one answered request (for `GET /metrics`).
    pub fn count_request(&self, method: &str, route: &str, status: u16) {
        self.inner.metrics.count_request(method, route, status);
    }

    /// Starts the daemon's one sampler (call once, inside the runtime).
    pub fn start_sampler(&self) {
        let mgr = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(PERIOD);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                mgr.sample_once().await;
            }
        });
    }

    /// One round: read every live sandbox, append to its history, enforce CPU budgets.
    pub(crate) async fn sample_once(&self) {
        let lives: Vec<Arc<Live>> =
            self.inner.live.lock().unwrap_or_else(|e| e.into_inner()).values().cloned().collect();
        let mgr = self.clone();
        let Ok(readings) = tokio::task::spawn_blocking(move || {
            let (cpu0, wall0) = (safehouse_sys::process::thread_cpu_ns(), Instant::now());
            let readings: Vec<(Arc<Live>, Reading, Instant)> =
                lives.into_iter().map(|l| (l.clone(), read(&l, &mgr), Instant::now())).collect();
            // Rules of sandboxes seen for the first time (one store read each, once).
            for (l, _, _) in &readings {
                if mgr.inner.control.rules(&l.id).is_none() {
                    if let Some(r) = super::control::load_rules(&mgr.inner.store, &l.tenant, &l.id) {
                        mgr.inner.control.set_rules(&l.id, r);
                    }
                }
            }
            let m = &mgr.inner.metrics;
            m.sampler_cpu_ns.fetch_add(safehouse_sys::process::thread_cpu_ns().saturating_sub(cpu0), Relaxed);
            m.sampler_last_us.store(wall0.elapsed().as_micros() as u64, Relaxed);
            m.sampler_runs.fetch_add(1, Relaxed);
            m.sampler_sandboxes.store(readings.len() as u64, Relaxed);
            readings
        })
        .await
        else {
            return;
        };
        let t = now_unix();
        let mut over_budget = Vec::new();
        let mut limits = Vec::new();
        {
            let mut rings = self.inner.metrics.rings.lock().unwrap_or_else(|e| e.into_inner());
            for (live, r, at) in &readings {
                let ring = rings.entry(live.id.clone()).or_insert_with(|| Ring {
                    samples: VecDeque::with_capacity(8),
                    last: *r,
                    last_at: *at,
                });
                let dt = at.duration_since(ring.last_at).as_secs_f64();
                let cpu_pct =
                    if dt > 0.0 { r.cpu_ns.saturating_sub(ring.last.cpu_ns) as f64 / 1e9 / dt * 100.0 } else { 0.0 };
                if ring.samples.len() == HISTORY {
                    ring.samples.pop_front();
                }
                ring.samples.push_back(Sample {
                    t,
                    cpu_pct: (cpu_pct * 10.0).round() / 10.0,
                    memory_bytes: r.memory,
                    pids: r.pids,
                    disk_bytes: r.disk,
                    net_in: r.net_in,
                    net_out: r.net_out,
                });
                limits.extend(limit_events(&ring.last, r).into_iter().map(|(k, d)| (live.id.clone(), k, d)));
                (ring.last, ring.last_at) = (*r, *at);
                if let Some(why) = self.inner.control.rules(&live.id).and_then(|rules| rules.cpu_verdict(r.cpu_ns)) {
                    over_budget.push((live.id.clone(), why));
                }
            }
            let live = self.inner.live.lock().unwrap_or_else(|e| e.into_inner());
            rings.retain(|id, _| live.contains_key(id));
            self.inner.control.retain(|id| live.contains_key(id));
        }
        self.inner.metrics.rounds.tick();
        // The daemon's own reading, once a second at most: not rate-limited.
        for (id, kind, data) in limits {
            self.note(&id, kind, data);
        }
        for (id, why) in over_budget {
            let mgr = self.clone();
            tokio::spawn(async move { mgr.stop_for_rule(&id, why).await });
        }
    }

    /// A sandbox's resource use now and its recent history.
    pub async fn metrics(&self, tenant: &str, id: &str) -> Result<SandboxMetrics, ManagerError> {
        if !super::ids::is_sandbox_id(id) {
            return Err(ManagerError::NotFound);
        }
        let live = self.present(tenant, id)?;
        let (live2, mgr) = (live.clone(), self.clone());
        let r = tokio::task::spawn_blocking(move || read(&live2, &mgr)).await.map_err(super::internal)?;
        let history: Vec<Sample> = self
            .inner
            .metrics
            .rings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .map(|ring| ring.samples.iter().copied().collect())
            .unwrap_or_default();
        let state = if self.inner.control.is_frozen(id) { "frozen" } else { "running" };
        let current = Current {
            t: now_unix(),
            state: state.into(),
            cpu_usage_ns: r.cpu_ns,
            cpu_pct: history.last().map(|s| s.cpu_pct).unwrap_or(0.0),
            memory_bytes: r.memory,
            memory_peak_bytes: r.peak,
            pids: r.pids,
            disk_bytes: r.disk,
            net_in: r.net_in,
            net_out: r.net_out,
            violations: self.inner.control.violations(id),
        };
        Ok(SandboxMetrics { current, history })
    }

    /// The daemon and the fleet in the Prometheus text format (0.0.4). Per-sandbox series
    /// exist for live (running or frozen) sandboxes, labelled by id and tenant: their
    /// number is bounded by the daemon's sandbox cap; paused sandboxes and volumes have one
    /// disk series each (`stored_disk`).
    pub fn prometheus(&self) -> String {
        let mut out = String::with_capacity(4096);
        let lives: Vec<(String, String)> = self
            .inner
            .live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|l| (l.id.clone(), l.tenant.clone()))
            .collect();
        let frozen = self.inner.control.frozen_count().min(lives.len());
        let m = &self.inner.metrics;
        let c = &m.counters;
        metric(&mut out, "safehouse_sandboxes", "gauge", "Live sandboxes by state.");
        out.push_str(&format!("safehouse_sandboxes{{state=\"running\"}} {}\n", lives.len() - frozen));
        out.push_str(&format!("safehouse_sandboxes{{state=\"frozen\"}} {frozen}\n"));
        let paused = self.inner.store.paused_with_tenants().unwrap_or_default();
        out.push_str(&format!("safehouse_sandboxes{{state=\"paused\"}} {}\n", paused.len()));
        metric(&mut out, "safehouse_sandboxes_created_total", "counter", "Sandboxes created since the daemon started.");
        out.push_str(&format!("safehouse_sandboxes_created_total {}\n", c.created.load(Relaxed)));
        metric(
            &mut out,
            "safehouse_sandboxes_ended_total",
            "counter",
            "Sandboxes ended since the daemon started, by how.",
        );
        for (state, n) in [("killed", &c.killed), ("expired", &c.expired), ("failed", &c.failed)] {
            out.push_str(&format!("safehouse_sandboxes_ended_total{{state=\"{state}\"}} {}\n", n.load(Relaxed)));
        }
        metric(&mut out, "safehouse_kill_all_total", "counter", "Emergency stops (POST /v1/kill-all).");
        out.push_str(&format!("safehouse_kill_all_total {}\n", c.kill_all.load(Relaxed)));
        metric(&mut out, "safehouse_http_requests_total", "counter", "HTTP requests by method, route and status.");
        for ((method, route, status), n) in m.requests.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            out.push_str(&format!(
                "safehouse_http_requests_total{{method=\"{}\",route=\"{}\",status=\"{status}\"}} {n}\n",
                escape(method),
                escape(route)
            ));
        }
        metric(&mut out, "safehouse_sampler_runs_total", "counter", "Rounds of the metrics sampler.");
        out.push_str(&format!("safehouse_sampler_runs_total {}\n", m.sampler_runs.load(Relaxed)));
        metric(&mut out, "safehouse_sampler_cpu_seconds_total", "counter", "CPU time the sampler has used.");
        out.push_str(&format!("safehouse_sampler_cpu_seconds_total {}\n", m.sampler_cpu_ns.load(Relaxed) as f64 / 1e9));
        metric(&mut out, "safehouse_sampler_last_duration_seconds", "gauge", "Wall time of the last sampler round.");
        out.push_str(&format!(
            "safehouse_sampler_last_duration_seconds {}\n",
            m.sampler_last_us.load(Relaxed) as f64 / 1e6
        ));
        metric(&mut out, "safehouse_sampler_sandboxes", "gauge", "Sandboxes read in the last sampler round.");
        out.push_str(&format!("safehouse_sampler_sandboxes {}\n", m.sampler_sandboxes.load(Relaxed)));

        // Per sandbox, from the last sample.
        let rings = m.rings.lock().unwrap_or_else(|e| e.into_inner());
        let per: Vec<(&str, &str, &Ring)> =
            lives.iter().filter_map(|(id, t)| rings.get(id).map(|r| (id.as_str(), t.as_str(), r))).collect();
        type Get = fn(&Ring) -> f64;
        let series: [(&str, &str, &str, Get); 7] = [
            ("safehouse_sandbox_cpu_seconds_total", "counter", "CPU time used by the sandbox.", |r| {
                r.last.cpu_ns as f64 / 1e9
            }),
            ("safehouse_sandbox_memory_bytes", "gauge", "Memory in use by the sandbox.", |r| r.last.memory as f64),
            ("safehouse_sandbox_memory_peak_bytes", "gauge", "Highest memory use of the sandbox.", |r| {
                r.last.peak.unwrap_or(r.last.memory) as f64
            }),
            ("safehouse_sandbox_pids", "gauge", "Tasks in the sandbox.", |r| r.last.pids as f64),
            ("safehouse_sandbox_disk_bytes", "gauge", "Bytes used in the sandbox's writable layer.", |r| {
                r.last.disk as f64
            }),
            (
                "safehouse_sandbox_network_receive_bytes_total",
                "counter",
                "Bytes the gateway received for the sandbox.",
                |r| r.last.net_in as f64,
            ),
            (
                "safehouse_sandbox_network_transmit_bytes_total",
                "counter",
                "Bytes the gateway sent for the sandbox.",
                |r| r.last.net_out as f64,
            ),
        ];
        for (name, kind, help, get) in series {
            metric(&mut out, name, kind, help);
            for (id, tenant, ring) in &per {
                out.push_str(&format!("{name}{{id=\"{id}\",tenant=\"{}\"}} {}\n", escape(tenant), get(ring)));
            }
        }
        drop(rings);
        self.stored_disk(&mut out, &paused);
        out
    }

    /// What lives on disk without a running sandbox: paused sandboxes' layers and volumes,
    /// from the storage pool's quota groups (as of its last commit). Read only when the pool
    /// is open (a daemon that never used it has none of either); one quota-group read each.
    fn stored_disk(&self, out: &mut String, paused: &[(String, String)]) {
        let Some(pool) = self.inner.pool.lock().unwrap_or_else(|e| e.into_inner()).clone() else { return };
        use safehouse_storage::Kind;
        metric(out, "safehouse_paused_disk_bytes", "gauge", "Bytes a paused sandbox's layer refers to, on disk.");
        for (id, tenant) in paused {
            if let Ok(u) = pool.usage(Kind::Layer, id) {
                out.push_str(&format!(
                    "safehouse_paused_disk_bytes{{id=\"{id}\",tenant=\"{}\"}} {}\n",
                    escape(tenant),
                    u.referenced
                ));
            }
        }
        metric(out, "safehouse_volume_disk_bytes", "gauge", "Bytes a volume refers to, on disk.");
        for v in self.inner.store.all_volumes().unwrap_or_default() {
            if let Ok(u) = pool.usage(Kind::Volume, &v.key) {
                out.push_str(&format!(
                    "safehouse_volume_disk_bytes{{tenant=\"{}\",name=\"{}\"}} {}\n",
                    escape(&v.tenant),
                    escape(&v.name),
                    u.referenced
                ));
            }
        }
    }
}

fn metric(out: &mut String, name: &str, kind: &str, help: &str) {
    out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
}

/// A label value in the text format: backslash, quote and newline escaped.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_events_fire_on_increase_and_on_the_edge_to_full() {
        let a = Reading { oom_kills: 1, pids_hits: 5, ..Reading::default() };
        assert!(limit_events(&a, &a).is_empty());
        let b = Reading { oom_kills: 3, pids_hits: 9, disk_full: true, ..a };
        let kinds: Vec<&str> = limit_events(&a, &b).iter().map(|(k, _)| *k).collect();
        assert_eq!(kinds, ["limit.memory", "limit.pids", "limit.disk"]);
        assert_eq!(limit_events(&a, &b)[0].1["oom_kills"], 2);
        assert_eq!(limit_events(&a, &b)[1].1["refused_forks"], 4);
        assert!(limit_events(&b, &b).is_empty(), "a disk that stays full is said once");
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn request_counts_accumulate() {
        let m = MetricsState::default();
        m.count_request("GET", "/v1/sandboxes/{id}", 200);
        m.count_request("GET", "/v1/sandboxes/{id}", 200);
        m.count_request("GET", "/v1/sandboxes/{id}", 404);
        let r = m.requests.lock().unwrap();
        assert_eq!(r[&("GET".into(), "/v1/sandboxes/{id}".into(), 200)], 2);
        assert_eq!(r.len(), 2);
    }
}

//! The control plane's actions: freeze and thaw, the emergency stop (`kill_all`), and the
//! automatic stop rules of a policy's `[control]` table (CPU budget, violations).
//!
//! Kill-all runs in three global phases, each across every victim with bounded
//! parallelism: (1) freeze every cgroup, so nothing runs, forks or writes while the rest
//! happens; (2) cut every gateway, so nothing leaves; (3) SIGKILL the frozen tasks (the
//! list is complete: frozen tasks cannot fork) and the agents, thaw so the kills land,
//! and wait until every agent's pidfd says it exited (PID 1 of a pid namespace exits
//! last). Every state is recorded in one transaction alongside the three phases. The call returns after
//! phase 3, when nothing of the victims runs; their cgroup directories, watchers and
//! socket directories are removed afterwards in the background (cleanup.rs).
//!
//! `SAFEHOUSE_TRACE_KILLALL=1` prints each kill-all's phase timings on stderr.

use std::collections::{HashMap, HashSet};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{internal, Live, Manager, ManagerError, SandboxInfo, SandboxState};
use crate::store::Store;

/// Worker threads per kill-all phase: each mostly waits on the kernel (a freeze to hold,
/// tasks to exit), so more than the cores.
const KILL_ALL_WIDTH: usize = 32;
/// How long kill-all waits for the killed agents to exit before removing the cgroups
/// anyway (whose removal then runs the slower freeze/kill loop on what is left).
const AGENT_EXIT_WAIT: Duration = Duration::from_secs(2);

/// The `[control]` rules of one sandbox, as the daemon enforces them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Rules {
    pub cpu_budget_ns: Option<u64>,
    pub kill_after_violations: Option<u64>,
}

impl Rules {
    pub fn of(policy: &safehouse_policy::Policy) -> Rules {
        let c = &policy.control;
        Rules {
            cpu_budget_ns: c.cpu_budget.map(|d| u64::try_from(d.0.as_nanos()).unwrap_or(u64::MAX)),
            kill_after_violations: c.kill_after_violations,
        }
    }

    /// Why the sandbox must stop after `cpu_ns` of CPU time, if it must.
    pub fn cpu_verdict(&self, cpu_ns: u64) -> Option<String> {
        let budget = self.cpu_budget_ns?;
        (cpu_ns >= budget).then(|| {
            format!(
                "control.cpu_budget: used {:.2} s of CPU time, the budget is {:.2} s",
                cpu_ns as f64 / 1e9,
                budget as f64 / 1e9
            )
        })
    }

    /// Why the sandbox must stop after `count` violations (the last one `what`), if it must.
    pub fn violation_verdict(&self, count: u64, what: &str) -> Option<String> {
        let max = self.kill_after_violations?;
        (count >= max).then(|| format!("control.kill_after_violations: {count} violations (the last: {what})"))
    }
}

/// Per-sandbox control state, keyed by sandbox id. Entries of sandboxes that are gone are
/// pruned by the sampler (`retain`).
#[derive(Default)]
pub(crate) struct ControlState {
    frozen: Mutex<HashSet<String>>,
    /// Rules, once loaded from the sandbox's recorded policy.
    rules: Mutex<HashMap<String, Rules>>,
    violations: Mutex<HashMap<String, u64>>,
}

impl ControlState {
    pub fn is_frozen(&self, id: &str) -> bool {
        lock(&self.frozen).contains(id)
    }

    pub fn set_frozen(&self, id: &str, frozen: bool) {
        let mut set = lock(&self.frozen);
        if frozen {
            set.insert(id.to_string());
        } else {
            set.remove(id);
        }
    }

    pub fn frozen_count(&self) -> usize {
        lock(&self.frozen).len()
    }

    pub fn rules(&self, id: &str) -> Option<Rules> {
        lock(&self.rules).get(id).copied()
    }

    pub fn set_rules(&self, id: &str, rules: Rules) {
        lock(&self.rules).insert(id.to_string(), rules);
    }

    /// Counts one violation; returns the sandbox's count so far.
    pub fn count_violation(&self, id: &str) -> u64 {
        let mut v = lock(&self.violations);
        let n = v.entry(id.to_string()).or_default();
        *n += 1;
        *n
    }

    pub fn violations(&self, id: &str) -> u64 {
        lock(&self.violations).get(id).copied().unwrap_or(0)
    }

    /// Forgets every sandbox `keep` says is gone.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        lock(&self.frozen).retain(|id| keep(id));
        lock(&self.rules).retain(|id, _| keep(id));
        lock(&self.violations).retain(|id, _| keep(id));
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What `POST /v1/freeze-all` and `POST /v1/thaw-all` answer (`count` is renamed
/// `frozen` or `thawed` by the API).
#[derive(Debug, Clone, Serialize)]
pub struct FleetReport {
    /// Sandboxes frozen (or thawed).
    pub count: usize,
    /// Wall time from the request to the last one done.
    pub ms: u64,
    /// Sandboxes that could not be frozen (or thawed), with the reason.
    pub failed: Vec<FleetFailure>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FleetFailure {
    pub id: String,
    pub error: String,
}

/// What `POST /v1/kill-all` answers.
#[derive(Debug, Clone, Serialize)]
pub struct KillAllReport {
    /// Sandboxes stopped.
    pub killed: usize,
    /// Wall time from the request to the last sandbox gone.
    pub ms: u64,
}

impl Manager {
    /// Stops every process of the sandbox with the cgroup freezer, keeping everything else
    /// (writable layer, network, deadline). Idempotent.
    pub async fn freeze(&self, tenant: &str, id: &str) -> Result<SandboxInfo, ManagerError> {
        let live = self.present(tenant, id)?;
        if !self.inner.control.is_frozen(id) {
            // Marked first, so no new command reaches the agent while it freezes.
            self.inner.control.set_frozen(id, true);
            let (live2, store) = (live.clone(), self.inner.store.clone());
            let done = tokio::task::spawn_blocking(move || -> Result<(), ManagerError> {
                with_cgroup(&live2, "freeze", |cg| cg.freeze())?;
                store.set_sandbox_state(&live2.id, SandboxState::Frozen, None).map_err(internal)?;
                Ok(())
            })
            .await
            .map_err(internal)?;
            if let Err(e) = done {
                self.inner.control.set_frozen(id, false);
                return Err(e);
            }
            if !self.is_live(id) {
                // Destroyed meanwhile: its final state stands.
                return Err(self.not_running(tenant, id));
            }
        }
        self.info(tenant, id).await
    }

    /// Lets a frozen sandbox run again. Idempotent.
    pub async fn thaw(&self, tenant: &str, id: &str) -> Result<SandboxInfo, ManagerError> {
        let live = self.present(tenant, id)?;
        if self.inner.control.is_frozen(id) {
            let (live2, store) = (live.clone(), self.inner.store.clone());
            tokio::task::spawn_blocking(move || -> Result<(), ManagerError> {
                with_cgroup(&live2, "thaw", |cg| cg.thaw())?;
                store.set_sandbox_state(&live2.id, SandboxState::Running, None).map_err(internal)?;
                Ok(())
            })
            .await
            .map_err(internal)??;
            self.inner.control.set_frozen(id, false);
        }
        self.info(tenant, id).await
    }

    /// Freezes every running sandbox of `tenant` (every tenant's for the admin tenant):
    /// the gentle stop, for investigation. All freezes are asked for first, so the sandboxes
    /// stop together; then each is waited for. A sandbox that cannot be frozen (no cgroup)
    /// is reported in `failed` and keeps running.
    pub async fn freeze_all(&self, tenant: &str) -> Result<FleetReport, ManagerError> {
        self.freeze_or_thaw_all(tenant, true).await
    }

    /// Thaws every frozen sandbox of `tenant` (every tenant's for the admin tenant).
    pub async fn thaw_all(&self, tenant: &str) -> Result<FleetReport, ManagerError> {
        self.freeze_or_thaw_all(tenant, false).await
    }

    async fn freeze_or_thaw_all(&self, tenant: &str, freeze: bool) -> Result<FleetReport, ManagerError> {
        let started = Instant::now();
        let admin = tenant == crate::auth::ADMIN_TENANT;
        let targets: Vec<Arc<Live>> = {
            let live = self.inner.live.lock().unwrap_or_else(|e| e.into_inner());
            live.values()
                .filter(|l| (admin || l.tenant == tenant) && self.inner.control.is_frozen(&l.id) != freeze)
                .cloned()
                .collect()
        };
        if freeze {
            // Marked first, so no new command reaches an agent while it freezes.
            for l in &targets {
                self.inner.control.set_frozen(&l.id, true);
            }
        }
        let (v, store) = (targets.clone(), self.inner.store.clone());
        let failed = tokio::task::spawn_blocking(move || {
            let what = if freeze { "freeze" } else { "thaw" };
            if freeze {
                for l in &v {
                    with_cgroup_quietly(l, |cg| cg.start_freeze());
                }
            }
            let failed: Mutex<Vec<FleetFailure>> = Mutex::default();
            let width = std::thread::available_parallelism().map_or(2, |n| n.get());
            parallel(&v, width, |l| {
                let done = with_cgroup(l, what, |cg| if freeze { cg.freeze() } else { cg.thaw() });
                if let Err(e) = done {
                    lock(&failed).push(FleetFailure { id: l.id.clone(), error: e.to_string() });
                }
            });
            let failed = failed.into_inner().unwrap_or_else(|e| e.into_inner());
            let done: Vec<&str> =
                v.iter().map(|l| l.id.as_str()).filter(|id| !failed.iter().any(|f| f.id == *id)).collect();
            let state = if freeze { SandboxState::Frozen } else { SandboxState::Running };
            store.set_sandboxes_state(&done, state, None).map_err(internal)?;
            Ok::<_, ManagerError>(failed)
        })
        .await
        .map_err(internal)??;
        for l in &targets {
            let ok = !failed.iter().any(|f| f.id == l.id);
            // A freeze that failed is undone; a thaw that succeeded lets commands in again.
            if freeze != ok {
                self.inner.control.set_frozen(&l.id, false);
            }
        }
        Ok(FleetReport { count: targets.len() - failed.len(), ms: started.elapsed().as_millis() as u64, failed })
    }

    /// The emergency stop: every sandbox of `tenant` (every sandbox at all for the admin
    /// tenant) frozen, cut off and killed; returns once nothing of them runs and their
    /// states are recorded. What is left of them that does not run (cgroup directories,
    /// namespaces, file watches, exec watchers, socket directories) is removed in the
    /// background (cleanup.rs; a restarted daemon finishes it).
    ///
    /// Runs to completion even if the caller goes away mid-way (its future is dropped):
    /// the victims are out of the live table from the first step, so a half-done stop
    /// would leave them frozen and unreachable.
    pub async fn kill_all(&self, tenant: &str) -> Result<KillAllReport, ManagerError> {
        let (mgr, tenant) = (self.clone(), tenant.to_string());
        tokio::spawn(async move { mgr.kill_all_inner(&tenant).await }).await.map_err(internal)?
    }

    async fn kill_all_inner(&self, tenant: &str) -> Result<KillAllReport, ManagerError> {
        let started = Instant::now();
        let trace = Arc::new(Timeline::new(started));
        let admin = tenant == crate::auth::ADMIN_TENANT;
        // Taken out of the live table at once: no request, deadline or watcher reaches
        // them any more, and `destroy` elsewhere sees them gone.
        let victims: Vec<Arc<Live>> = {
            let mut live = self.inner.live.lock().unwrap_or_else(|e| e.into_inner());
            let ids: Vec<String> =
                live.values().filter(|l| admin || l.tenant == tenant).map(|l| l.id.clone()).collect();
            ids.iter().filter_map(|id| live.remove(id)).collect()
        };
        for v in &victims {
            v.deadline_gen.fetch_add(1, Ordering::Relaxed);
            self.inner.quota.release(&v.id);
            self.inner.metrics.counters.ended(SandboxState::Killed);
        }
        self.inner.metrics.counters.kill_all();
        let killed = victims.len();
        if killed > 0 {
            let victims = Arc::new(victims);
            trace.mark("taken");
            // Every state recorded in one transaction, alongside the kernel's work below. A
            // daemon dying before the kills land leaves processes under a `killed` record:
            // its next start kills them (`sweep_leftovers`: their directories are still there).
            let (store, ids, t) =
                (self.inner.store.clone(), victims.iter().map(|l| l.id.clone()).collect::<Vec<_>>(), trace.clone());
            let recorded = tokio::task::spawn_blocking(move || {
                let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
                if let Err(e) = store.set_sandboxes_state(&ids, SandboxState::Killed, Some(KILLED_BY)) {
                    eprintln!("safehouse: kill-all: recording the sandboxes' state: {e}");
                }
                t.mark("states recorded");
            });
            let (v, t) = (victims.clone(), trace.clone());
            let namespaces = tokio::task::spawn_blocking(move || {
                // Every freeze asked for first, so all tasks stop together; then each waited.
                for l in v.iter() {
                    with_cgroup_quietly(l, |cg| cg.start_freeze());
                }
                t.mark("freeze asked");
                // The namespaces opened while the freezes take hold.
                let held: Vec<Mutex<HeldNamespaces>> = v.iter().map(|_| Mutex::default()).collect();
                let items: Vec<(&Arc<Live>, &Mutex<HeldNamespaces>)> = v.iter().zip(&held).collect();
                parallel(&items, KILL_ALL_WIDTH, |(l, slot)| {
                    *lock(slot) = hold_namespaces(l);
                    with_cgroup_quietly(l, |cg| cg.freeze());
                });
                t.mark("frozen, namespaces held");
                held.into_iter().map(|m| m.into_inner().unwrap_or_else(|e| e.into_inner())).collect::<Vec<_>>()
            })
            .await
            .map_err(internal)?;
            for l in victims.iter() {
                if let Some(gw) = &l.gateway {
                    gw.shutdown();
                }
                l.link.close();
            }
            trace.mark("network cut");
            let (v, t) = (victims.clone(), trace.clone());
            let cgroups = tokio::task::spawn_blocking(move || kill_and_wait(&v, &t)).await.map_err(internal)?;
            recorded.await.map_err(internal)?;
            // Said once nothing of them runs any more.
            for l in victims.iter() {
                self.note_ended(&l.id, "sandbox.killed", Some(KILLED_BY));
            }
            trace.mark("events");
            self.clean_up_in_background(victims, cgroups, namespaces, trace.clone());
            trace.mark("replied");
        }
        Ok(KillAllReport { killed, ms: started.elapsed().as_millis() as u64 })
    }

    /// Counts a policy violation of the sandbox (a gateway denial, a denied exec, ...):
    /// past `control.kill_after_violations` the sandbox is killed, with the reason as its
    /// error. Cheap and non-blocking; call it from any task of the daemon's runtime.
    pub fn note_violation(&self, sandbox_id: &str, what: &str) {
        if !self.is_live(sandbox_id) {
            return;
        }
        let count = self.inner.control.count_violation(sandbox_id);
        let (mgr, id, what) = (self.clone(), sandbox_id.to_string(), what.to_string());
        tokio::spawn(async move {
            let Some(rules) = mgr.rules_of(&id).await else { return };
            if let Some(why) = rules.violation_verdict(count, &what) {
                mgr.stop_for_rule(&id, why).await;
            }
        });
    }

    /// The sandbox's rules, loaded from its recorded policy the first time.
    pub(crate) async fn rules_of(&self, id: &str) -> Option<Rules> {
        if let Some(r) = self.inner.control.rules(id) {
            return Some(r);
        }
        let tenant = self.inner.live.lock().unwrap_or_else(|e| e.into_inner()).get(id)?.tenant.clone();
        let (store, id2) = (self.inner.store.clone(), id.to_string());
        let rules = tokio::task::spawn_blocking(move || load_rules(&store, &tenant, &id2)).await.ok()??;
        self.inner.control.set_rules(id, rules);
        Some(rules)
    }

    /// Kills a sandbox that broke one of its `[control]` rules; `why` becomes its error.
    pub(crate) async fn stop_for_rule(&self, id: &str, why: String) {
        let live = self.inner.live.lock().unwrap_or_else(|e| e.into_inner()).get(id).cloned();
        if let Some(live) = live {
            eprintln!("safehouse: sandbox {id}: {why}; killing it");
            let _ = self.destroy(&live, SandboxState::Killed, Some(why)).await;
        }
    }
}

/// The rules in a sandbox's recorded policy (none recorded: no rules).
pub(crate) fn load_rules(store: &Store, tenant: &str, id: &str) -> Option<Rules> {
    let rec = store.get_sandbox(tenant, id).ok()??;
    let policy = rec.policy.and_then(|p| serde_json::from_value::<safehouse_policy::Policy>(p).ok());
    Some(policy.map(|p| Rules::of(&p)).unwrap_or_default())
}

/// Runs `f` on the sandbox's cgroup; a sandbox without one (or torn down meanwhile) cannot
/// be frozen.
fn with_cgroup(
    live: &Live,
    what: &str,
    f: impl FnOnce(&dyn safehouse_jail::cgroup::Cgroup) -> Result<(), safehouse_jail::cgroup::CgroupError>,
) -> Result<(), ManagerError> {
    let guard = live.cgroup.lock().unwrap_or_else(|e| e.into_inner());
    match guard.as_deref() {
        Some(cg) => f(cg).map_err(|e| ManagerError::Internal(format!("{what} {}: {e}", live.id))),
        None => Err(ManagerError::NotRunning(format!(
            "without a cgroup (this daemon has no writable cgroup hierarchy), so it cannot {what}"
        ))),
    }
}

fn with_cgroup_quietly(
    live: &Live,
    f: impl FnOnce(&dyn safehouse_jail::cgroup::Cgroup) -> Result<(), safehouse_jail::cgroup::CgroupError>,
) {
    let guard = live.cgroup.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(cg) = guard.as_deref() {
        // A freeze that does not hold (a task in D state) still stops the others; the
        // kill loop in `teardown` deals with stragglers.
        let _ = f(cg);
    }
}

pub(crate) type OwnedCgroup = Option<Box<dyn safehouse_jail::cgroup::Cgroup>>;

/// The error recorded for every sandbox kill-all stops.
const KILLED_BY: &str = "stopped by kill-all";

/// Kill-all, phase 3, for frozen and cut-off sandboxes. Each step runs for every sandbox
/// before the next starts, so the kernel's work overlaps: (a) SIGKILL every task of each
/// frozen cgroup (the list is complete: frozen tasks cannot fork) and the agent, and ask
/// for the thaw so the kills land; (b) wait until every agent's pidfd says it exited —
/// PID 1 of a pid namespace exits only after every other task in it is gone, and every
/// process of a sandbox is in its pid namespace. Returns the cgroups, taken out of the
/// sandboxes, for removal.
fn kill_and_wait(victims: &[Arc<Live>], trace: &Timeline) -> Vec<OwnedCgroup> {
    let width = std::thread::available_parallelism().map_or(2, |n| n.get());
    let cgroups: Vec<Mutex<OwnedCgroup>> = victims.iter().map(|_| Mutex::new(None)).collect();
    {
        let items: Vec<(&Arc<Live>, &Mutex<OwnedCgroup>)> = victims.iter().zip(&cgroups).collect();
        parallel(&items, width, |(live, slot)| *lock(slot) = kill_frozen(live));
    }
    trace.mark("killed+thaw asked");
    let cgroups: Vec<OwnedCgroup> =
        cgroups.into_iter().map(|m| m.into_inner().unwrap_or_else(|e| e.into_inner())).collect();
    let left = wait_exited(victims, AGENT_EXIT_WAIT);
    trace.mark("agents exited");
    if !left.is_empty() {
        // Stragglers (a task stuck in the kernel): the retrying kill loop, then wait again.
        eprintln!(
            "safehouse: kill-all: {} agent(s) still running after {AGENT_EXIT_WAIT:?}; killing again",
            left.len()
        );
        for &i in &left {
            if let Some(cg) = &cgroups[i] {
                let _ = cg.kill_all();
            }
        }
        let again: Vec<Arc<Live>> = left.iter().map(|&i| victims[i].clone()).collect();
        for i in wait_exited(&again, AGENT_EXIT_WAIT) {
            eprintln!("safehouse: kill-all: sandbox {}: its agent did not exit", again[i].id);
        }
    }
    cgroups
}

/// Descriptors of a sandbox's mount and network namespaces.
pub(crate) type HeldNamespaces = Vec<std::os::fd::OwnedFd>;

/// Opens the sandbox's mount and network namespaces, held through its kill: their
/// teardown (unmounting its filesystems, its writable layer among them; dismantling its
/// network stack) then runs when the background cleanup closes them, instead of in its
/// last task's exit on the reply's path. Nothing of it runs either way. Empty when they
/// cannot be opened (a daemon without the right to) or the agent is gone.
fn hold_namespaces(live: &Live) -> HeldNamespaces {
    let held: HeldNamespaces = ["mnt", "net"]
        .iter()
        .filter_map(|ns| std::fs::File::open(format!("/proc/{}/ns/{ns}", live.pid)).ok().map(Into::into))
        .collect();
    // Opened while the agent was alive (its pidfd says so now), so never a recycled pid's.
    if safehouse_sys::process::pidfd_send_signal(&live.pidfd, 0).is_err() {
        return Vec::new();
    }
    held
}

/// Kill-all, phase 3a for one sandbox: SIGKILL every task of its frozen cgroup and the
/// agent, and ask for the thaw. Returns the cgroup, taken out of the sandbox.
fn kill_frozen(live: &Arc<Live>) -> OwnedCgroup {
    let cg = live.cgroup.lock().unwrap_or_else(|e| e.into_inner()).take();
    let _ = safehouse_sys::process::pidfd_send_signal(&live.pidfd, libc::SIGKILL);
    if let Some(cg) = &cg {
        let _ = cg.start_kill_frozen();
    }
    cg
}

/// Waits (at most `limit`) until every sandbox's agent has exited, polling all pidfds at
/// once. Returns the indices of those still running.
fn wait_exited(victims: &[Arc<Live>], limit: Duration) -> Vec<usize> {
    let deadline = Instant::now() + limit;
    let mut left: Vec<(usize, i32)> = victims.iter().map(|l| l.pidfd.as_raw_fd()).enumerate().collect();
    while !left.is_empty() && Instant::now() < deadline {
        let ms = deadline.saturating_duration_since(Instant::now()).as_millis().clamp(1, 50) as i32;
        let fds: Vec<i32> = left.iter().map(|&(_, fd)| fd).collect();
        match safehouse_sys::process::poll_readable(&fds, ms) {
            Ok(ready) => {
                let mut ready = ready.into_iter();
                left.retain(|_| !ready.next().unwrap_or(true));
            }
            Err(_) => break,
        }
    }
    left.into_iter().map(|(i, _)| i).collect()
}

/// Phase timings of one kill-all, printed as one line on stderr when the daemon runs with
/// `SAFEHOUSE_TRACE_KILLALL=1` (for measuring; off by default, then a mark costs nothing).
pub(crate) struct Timeline {
    start: Instant,
    marks: Option<Mutex<Vec<(&'static str, Duration)>>>,
}

impl Timeline {
    fn new(start: Instant) -> Timeline {
        let on = std::env::var_os("SAFEHOUSE_TRACE_KILLALL").is_some_and(|v| v == "1");
        Timeline { start, marks: on.then(Mutex::default) }
    }

    /// Notes that `what` is done, at the time since the start.
    pub(crate) fn mark(&self, what: &'static str) {
        if let Some(m) = &self.marks {
            lock(m).push((what, self.start.elapsed()));
        }
    }

    pub(crate) fn print(&self, victims: usize) {
        if let Some(m) = &self.marks {
            let line: Vec<String> =
                lock(m).iter().map(|(what, at)| format!("{what} {:.1}", at.as_secs_f64() * 1000.0)).collect();
            eprintln!("safehouse: kill-all of {victims} (ms since the request): {}", line.join(", "));
        }
    }
}

/// Runs `f` on every item with at most `width` threads.
pub(crate) fn parallel<T: Sync>(items: &[T], width: usize, f: impl Fn(&T) + Sync) {
    let next = AtomicUsize::new(0);
    let work = || loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        let Some(item) = items.get(i) else { break };
        f(item);
    };
    std::thread::scope(|s| {
        for _ in 1..width.min(items.len()) {
            s.spawn(work);
        }
        work();
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    #[test]
    fn violations_kill_at_the_threshold() {
        let state = ControlState::default();
        let rules = Rules { kill_after_violations: Some(3), ..Rules::default() };
        let mut verdicts = Vec::new();
        for _ in 0..4 {
            let n = state.count_violation("sb_a");
            verdicts.push(rules.violation_verdict(n, "gateway denied evil.example:443"));
        }
        assert_eq!(verdicts[..2], [None, None]);
        assert_eq!(
            verdicts[2].as_deref(),
            Some("control.kill_after_violations: 3 violations (the last: gateway denied evil.example:443)")
        );
        assert!(verdicts[3].is_some());
        // Counters are per sandbox.
        assert_eq!(state.count_violation("sb_b"), 1);
        assert_eq!(state.violations("sb_a"), 4);
        // Without the rule nothing is killed, however many.
        assert_eq!(Rules::default().violation_verdict(1_000_000, "x"), None);
        state.retain(|id| id == "sb_b");
        assert_eq!((state.violations("sb_a"), state.violations("sb_b")), (0, 1));
    }

    #[test]
    fn cpu_budget_verdict() {
        let rules = Rules { cpu_budget_ns: Some(1_000_000_000), ..Rules::default() };
        assert_eq!(rules.cpu_verdict(999_999_999), None);
        assert_eq!(
            rules.cpu_verdict(1_020_000_000).as_deref(),
            Some("control.cpu_budget: used 1.02 s of CPU time, the budget is 1.00 s")
        );
        assert_eq!(Rules::default().cpu_verdict(u64::MAX), None);
    }

    #[test]
    fn rules_from_a_policy() {
        let p = safehouse_policy::model::parse_toml(
            "version = 1\n[control]\ncpu_budget = \"1500ms\"\nkill_after_violations = 20\n",
            "test",
        )
        .unwrap();
        assert_eq!(Rules::of(&p), Rules { cpu_budget_ns: Some(1_500_000_000), kill_after_violations: Some(20) });
    }

    #[test]
    fn frozen_set() {
        let state = ControlState::default();
        state.set_frozen("sb_a", true);
        assert!(state.is_frozen("sb_a") && !state.is_frozen("sb_b"));
        state.set_frozen("sb_a", false);
        assert_eq!(state.frozen_count(), 0);
    }

    #[test]
    fn parallel_visits_each_item_once() {
        let items: Vec<usize> = (0..1000).collect();
        let seen = Mutex::new(Vec::new());
        parallel(&items, 8, |i| seen.lock().unwrap().push(*i));
        let mut seen = seen.into_inner().unwrap();
        seen.sort();
        assert_eq!(seen, items);
        parallel(&Vec::<usize>::new(), 8, |_| panic!("no items"));
    }
}

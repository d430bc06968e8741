//! Exec observation, the daemon's side (docs/adr/0005-exec-observation.md): one
//! `safehouse_jail::execwatch::Watcher` per sandbox answers its exec notifications; its
//! records land here.
//!
//! Placeholder sink: a bounded ring per sandbox (`GET /v1/sandboxes/{id}/execs`), until
//! the event bus exists; then [`ExecLog::push`]'s callers become `Manager::emit(id, "exec"
//! | "exit", ...)` in [`Manager::exec_hooks`], and this ring can go.

use std::collections::VecDeque;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde::Serialize;

use safehouse_jail::execwatch::{
    AllowList, ExecRecord, ExitRecord, Hooks, Options, Stats, ToolLimits, ToolNote, Watcher,
};
use safehouse_jail::toollimit::ToolEvent;

use super::Manager;

/// Most records one sandbox's ring keeps; older ones are evicted and counted.
pub const RING: usize = 8192;

/// One entry of the ring.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ExecEvent {
    Exec(ExecRecord),
    Exit(ExitRecord),
}

#[derive(Default)]
pub(crate) struct ExecLog {
    ring: Mutex<(VecDeque<ExecEvent>, u64)>,
    /// Limited tool runs that a limit killed, started from an API command's cgroup, until
    /// that command's result takes them (bounded: the oldest go first).
    hits: Mutex<VecDeque<ToolEvent>>,
    /// Limited tool runs still going, by origin (an API command's cgroup).
    running: Mutex<std::collections::HashMap<String, usize>>,
}

/// Most unclaimed tool limit hits kept per sandbox.
const MAX_HITS: usize = 256;

/// `GET /v1/sandboxes/{id}/execs`.
#[derive(Debug, Clone, Serialize)]
pub struct ExecList {
    pub events: Vec<ExecEvent>,
    /// Evicted from the ring (oldest first) before this read.
    pub evicted: u64,
    /// The watcher's counters; None when execs are not observed (SAFEHOUSE_EXECWATCH=0,
    /// or a sandbox recovered without its listener).
    pub stats: Option<Stats>,
}

impl ExecLog {
    pub(crate) fn push(&self, e: ExecEvent) {
        let mut g = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        if g.0.len() >= RING {
            g.0.pop_front();
            g.1 += 1;
        }
        g.0.push_back(e);
    }

    fn started(&self, origin: Option<String>) {
        if let Some(o) = origin {
            *self.running.lock().unwrap_or_else(|e| e.into_inner()).entry(o).or_default() += 1;
        }
    }

    fn running(&self, origin: &str) -> bool {
        self.running.lock().unwrap_or_else(|e| e.into_inner()).get(origin).is_some_and(|n| *n > 0)
    }

    /// A run ended: no longer running; kept when a limit killed it and it has an origin.
    fn hit(&self, run: &ToolEvent) {
        if let Some(o) = &run.origin {
            let mut g = self.running.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(n) = g.get_mut(o) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    g.remove(o);
                }
            }
        }
        if run.origin.is_none() || !(run.oom_killed || run.timed_out) {
            return;
        }
        let mut g = self.hits.lock().unwrap_or_else(|e| e.into_inner());
        if g.len() >= MAX_HITS {
            g.pop_front();
        }
        g.push_back(run.clone());
    }

    fn take_hits(&self, origin: &str) -> Vec<ToolEvent> {
        let mut g = self.hits.lock().unwrap_or_else(|e| e.into_inner());
        let (mine, rest): (Vec<ToolEvent>, Vec<ToolEvent>) =
            g.drain(..).partition(|r| r.origin.as_deref() == Some(origin));
        g.extend(rest);
        mine
    }

    fn snapshot(&self) -> (Vec<ExecEvent>, u64) {
        let g = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        (g.0.iter().cloned().collect(), g.1)
    }
}

/// A sandbox's exec observation: its watcher (None when off) and the records.
#[derive(Default)]
pub(crate) struct ExecWatch {
    pub log: Arc<ExecLog>,
    pub watcher: Mutex<Option<Watcher>>,
    /// The watcher enforces `tools.limits`.
    pub limited: bool,
}

impl ExecWatch {
    /// Starts answering `listener` (None: nothing to observe).
    /// With `allowed` (a sandbox with `tools.allow`), an exec of any other file is also a
    /// `policy.violation`. With `tools` (a sandbox with `tools.limits`), the watcher
    /// enforces them (safehouse_jail::toollimit).
    pub(crate) fn start(
        mgr: &Manager,
        id: &str,
        listener: Option<OwnedFd>,
        allowed: Option<AllowList>,
        tools: Option<ToolLimits>,
    ) -> std::io::Result<ExecWatch> {
        let w = ExecWatch { limited: tools.is_some() && listener.is_some(), ..ExecWatch::default() };
        if let Some(l) = listener {
            let opts = Options { observe: true, allowed, tools };
            let watcher = Watcher::start(l, mgr.exec_hooks(id, &w.log), id, opts)?;
            *w.watcher.lock().unwrap_or_else(|e| e.into_inner()) = Some(watcher);
        }
        Ok(w)
    }

    /// After a daemon restart: the listener from the sandbox's keeper, if it has one. A
    /// sandbox whose keeper is gone cannot exec any more (ENOSYS): said in the log.
    /// `tools` (its table empty): a sandbox with `tools.limits`; the keeper's copy of the
    /// table re-arms them, and the tool cgroups still running are taken over (their
    /// timeouts re-armed from their names). Without the table (a keeper that does not have
    /// it), the watcher refuses nothing and limits nothing new: said in the log.
    pub(crate) fn recover(
        mgr: &Manager,
        id: &str,
        socket_dir: &Path,
        allowed: Option<AllowList>,
        tools: Option<ToolLimits>,
    ) -> ExecWatch {
        let sock = socket_dir.join("exec.sock");
        if !sock.exists() {
            return ExecWatch::default();
        }
        let (listener, table) = match safehouse_jail::execwatch::keeper::fetch(&sock) {
            Ok((l, t)) => (Some(l), t),
            Err(e) => {
                eprintln!("safehouse: sandbox {id}: exec listener not recovered ({e}); its execs fail with ENOSYS");
                (None, Vec::new())
            }
        };
        let tools = tools.map(|mut t| {
            match safehouse_jail::toollimit::decode_table(&table, t.limits.len()) {
                Ok(table) => t.table = table,
                Err(e) => eprintln!(
                    "safehouse: sandbox {id}: tool table not recovered ({e}); tools.limits apply to the tools already running only"
                ),
            }
            t.adopt = true;
            t
        });
        ExecWatch::start(mgr, id, listener, allowed, tools).unwrap_or_default()
    }

    /// Stops the watcher (after the sandbox is killed).
    pub(crate) fn stop(&self) {
        if let Some(w) = self.watcher.lock().unwrap_or_else(|e| e.into_inner()).take() {
            w.stop();
        }
    }

    /// The limit hits of the tools an API command (cgroup `origin`, `cmd-N`) started. The
    /// watcher reports a run when it sees its cgroup empty, a moment after the tool ended:
    /// while a run of this command is still going, waited for, up to 300 ms (a run that
    /// outlives its command is not waited for longer).
    pub(crate) async fn take_tool_hits(&self, origin: &str) -> Vec<ToolEvent> {
        if !self.limited {
            return Vec::new();
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(300);
        while self.log.running(origin) && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        self.log.take_hits(origin)
    }

    pub(crate) fn list(&self) -> ExecList {
        let (events, evicted) = self.log.snapshot();
        let stats = self.watcher.lock().unwrap_or_else(|e| e.into_inner()).as_ref().map(|w| w.stats());
        ExecList { events, evicted, stats }
    }
}

impl Manager {
    /// Where a sandbox's exec and exit records go. At merge with the event bus:
    /// `mgr.emit(&id, "exec", serde_json::to_value(rec))` (and "exit").
    /// Every exec and exit goes to the event stream (and so the audit log), rate-limited
    /// at the source like everything sandboxed code can trigger, and to the sandbox's
    /// recent-exec ring (`GET /v1/sandboxes/{id}/execs`).
    fn exec_hooks(&self, id: &str, log: &Arc<ExecLog>) -> Hooks {
        let (l1, l2, l3) = (log.clone(), log.clone(), log.clone());
        let (m1, m2, m3, m4) = (
            Arc::downgrade(&self.inner),
            Arc::downgrade(&self.inner),
            Arc::downgrade(&self.inner),
            Arc::downgrade(&self.inner),
        );
        let (id1, id2, id3, id4) = (id.to_string(), id.to_string(), id.to_string(), id.to_string());
        let runtime = tokio::runtime::Handle::try_current().ok();
        Hooks {
            exec: Arc::new(move |rec: ExecRecord| {
                if let (Some(inner), Ok(data)) = (m1.upgrade(), serde_json::to_value(&rec)) {
                    inner.events.emit(&id1, "proc.exec", data);
                }
                l1.push(ExecEvent::Exec(rec))
            }),
            denied: Arc::new(move |rec: &ExecRecord| {
                if let (Some(inner), Some(rt)) = (m4.upgrade(), &runtime) {
                    Manager { inner }.denied_exec(rt, &id4, rec);
                }
            }),
            exit: Arc::new(move |rec: ExitRecord| {
                if let (Some(inner), Ok(data)) = (m2.upgrade(), serde_json::to_value(&rec)) {
                    inner.events.emit(&id2, "proc.exit", data);
                }
                l2.push(ExecEvent::Exit(rec))
            }),
            tool: Arc::new(move |note: ToolNote| match note {
                ToolNote::Started { origin } => l3.started(origin),
                ToolNote::Ended { run, pid } => {
                    l3.hit(&run);
                    if let Some(inner) = m3.upgrade() {
                        for (kind, data) in tool_limit_events(&run, pid) {
                            inner.events.emit(&id3, kind, data);
                        }
                    }
                }
            }),
        }
    }

    /// An exec the kernel refuses (the file is not in tools.allow): a `policy.violation`
    /// (rate-limited like every event the sandbox drives), counted toward
    /// `control.kill_after_violations`. Called on the watcher's thread.
    fn denied_exec(&self, rt: &tokio::runtime::Handle, id: &str, rec: &ExecRecord) {
        let data = serde_json::json!({
            "layer": "tools.allow", "path": rec.path, "argv": rec.argv, "pid": rec.pid,
            "message": "exec of a file tools.allow does not list: the kernel refused it (EACCES)",
        });
        self.emit(id, "policy.violation", data);
        let _entered = rt.enter();
        self.note_violation(id, &format!("exec of {} (not in tools.allow)", rec.path));
    }

    /// The recent execs and exits of a running sandbox.
    pub async fn execs(&self, tenant: &str, id: &str) -> Result<ExecList, super::ManagerError> {
        let live = self.running_or_resume(tenant, id).await?;
        Ok(live.execs.list())
    }
}

/// The `limit.*` events of one limited tool's run: `limit.memory` when the OOM killer
/// killed it at its `memory` cap, `limit.timeout` when its `timeout` killed it.
fn tool_limit_events(run: &ToolEvent, pid: i32) -> Vec<(&'static str, serde_json::Value)> {
    let mut out = Vec::new();
    if run.oom_killed {
        out.push((
            "limit.memory",
            serde_json::json!({ "oom_kills": 1, "tool": run.tool, "pid": pid, "host_pid": run.pid,
                "message": format!("the tool {} reached its tools.limits memory cap; the kernel killed it", run.tool) }),
        ));
    }
    if run.timed_out {
        out.push((
            "limit.timeout",
            serde_json::json!({ "tool": run.tool, "pid": pid, "host_pid": run.pid,
                "message": format!("the tool {} ran past its tools.limits timeout; it was killed with everything it started", run.tool) }),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_runs_map_to_limit_events() {
        let run = |timed_out, oom_killed| ToolEvent {
            tool: "/usr/bin/python3".into(),
            pid: 42,
            timed_out,
            oom_killed,
            origin: Some("cmd-1".into()),
        };
        assert!(tool_limit_events(&run(false, false), 7).is_empty());
        let e = tool_limit_events(&run(false, true), 7);
        assert_eq!((e.len(), e[0].0), (1, "limit.memory"));
        assert_eq!((e[0].1["pid"].as_i64(), e[0].1["host_pid"].as_i64()), (Some(7), Some(42)));
        let e = tool_limit_events(&run(true, false), 7);
        assert_eq!((e.len(), e[0].0), (1, "limit.timeout"));
        assert_eq!(e[0].1["tool"], "/usr/bin/python3");
        let log = ExecLog::default();
        log.started(Some("cmd-1".into()));
        log.started(Some("cmd-1".into()));
        log.started(None);
        assert!(log.running("cmd-1") && !log.running("cmd-2"));
        log.hit(&run(false, false)); // no limit hit: not kept
        assert!(log.running("cmd-1"));
        log.hit(&run(true, false));
        assert!(!log.running("cmd-1"));
        log.hit(&ToolEvent { origin: Some("cmd-2".into()), ..run(false, true) });
        assert!(log.take_hits("cmd-9").is_empty());
        assert_eq!(log.take_hits("cmd-1").len(), 1);
        assert!(log.take_hits("cmd-2")[0].oom_killed);
        assert!(log.take_hits("cmd-1").is_empty());
    }
}

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

use safehouse_jail::execwatch::{ExecRecord, ExitRecord, Hooks, Stats, Watcher};

use super::toolcheck::AllowedExecs;
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
}

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
}

impl ExecWatch {
    /// Starts answering `listener` (None: nothing to observe).
    /// With `allowed` (a sandbox with `tools.allow`), an exec of any other file is also a
    /// `policy.violation` (toolcheck.rs).
    pub(crate) fn start(
        mgr: &Manager,
        id: &str,
        listener: Option<OwnedFd>,
        allowed: Option<AllowedExecs>,
    ) -> std::io::Result<ExecWatch> {
        let w = ExecWatch::default();
        if let Some(l) = listener {
            let watcher = Watcher::start(l, mgr.exec_hooks(id, &w.log, allowed), id)?;
            *w.watcher.lock().unwrap_or_else(|e| e.into_inner()) = Some(watcher);
        }
        Ok(w)
    }

    /// After a daemon restart: the listener from the sandbox's keeper, if it has one. A
    /// sandbox whose keeper is gone cannot exec any more (ENOSYS): said in the log.
    pub(crate) fn recover(mgr: &Manager, id: &str, socket_dir: &Path, allowed: Option<AllowedExecs>) -> ExecWatch {
        let sock = socket_dir.join("exec.sock");
        if !sock.exists() {
            return ExecWatch::default();
        }
        let listener = match safehouse_jail::execwatch::keeper::fetch(&sock) {
            Ok(l) => Some(l),
            Err(e) => {
                eprintln!("safehouse: sandbox {id}: exec listener not recovered ({e}); its execs fail with ENOSYS");
                None
            }
        };
        ExecWatch::start(mgr, id, listener, allowed).unwrap_or_default()
    }

    /// Stops the watcher (after the sandbox is killed).
    pub(crate) fn stop(&self) {
        if let Some(w) = self.watcher.lock().unwrap_or_else(|e| e.into_inner()).take() {
            w.stop();
        }
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
    fn exec_hooks(&self, id: &str, log: &Arc<ExecLog>, allowed: Option<AllowedExecs>) -> Hooks {
        let (l1, l2) = (log.clone(), log.clone());
        let (m1, m2) = (Arc::downgrade(&self.inner), Arc::downgrade(&self.inner));
        let (id1, id2) = (id.to_string(), id.to_string());
        let runtime = tokio::runtime::Handle::try_current().ok();
        Hooks {
            exec: Arc::new(move |rec: ExecRecord| {
                if let (Some(inner), Ok(data)) = (m1.upgrade(), serde_json::to_value(&rec)) {
                    inner.events.emit(&id1, "proc.exec", data);
                    if let (Some(allowed), Some(rt)) = (&allowed, &runtime) {
                        if allowed.denies(&rec.path, &rec.cwd) {
                            Manager { inner }.denied_exec(rt, &id1, &rec);
                        }
                    }
                }
                l1.push(ExecEvent::Exec(rec))
            }),
            exit: Arc::new(move |rec: ExitRecord| {
                if let (Some(inner), Ok(data)) = (m2.upgrade(), serde_json::to_value(&rec)) {
                    inner.events.emit(&id2, "proc.exit", data);
                }
                l2.push(ExecEvent::Exit(rec))
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
        let live = self.running(tenant, id)?;
        Ok(live.execs.list())
    }
}

//! What is left of stopped sandboxes once nothing of them runs: their cgroup directories,
//! mount and network namespaces (kill-all holds them through the kill), exec watchers,
//! file watches and socket directories.
//!
//! Kill-all answers as soon as every process of its victims is gone and their states are
//! recorded; removing these leftovers (on cgroups v1 alone, one `rmdir` per hierarchy per
//! sandbox, each a few hundred microseconds of kernel work) happens afterwards on a
//! background thread ([`Manager::clean_up_in_background`]). The socket directory
//! `DATA_DIR/sandboxes/<id>` goes last: while it exists the sandbox may have leftovers, so a
//! daemon that dies half-way finishes the job when it starts again
//! ([`Manager::sweep_leftovers`], run by `recover`): every such directory whose sandbox is
//! not running gets its cgroup killed (should anything still run in it) and removed, then
//! the directory itself.

use std::path::Path;
use std::sync::{Arc, Mutex};

use safehouse_jail::cgroup::{self, CgroupSupport};

use super::control::{parallel, HeldNamespaces, OwnedCgroup, Timeline};
use super::{ids, Live, Manager};

impl Manager {
    /// Records that a sandbox ended (`kind`: `sandbox.killed`, ...) with the counts of its
    /// events lost on the way, and retires its event stream.
    pub(crate) fn note_ended(&self, id: &str, kind: &str, error: Option<&str>) {
        let dropped = self.inner.events.dropped(id);
        let unaudited = self.inner.events.unaudited(id);
        self.note(
            id,
            kind,
            serde_json::json!({ "error": error, "events_dropped": dropped, "events_unaudited": unaudited }),
        );
        self.inner.events.retire(id);
    }

    /// Removes the leftovers of `victims` (dead: every process gone) on a thread of their
    /// own; `cgroups[i]` is `victims[i]`'s cgroup, already taken out of it, and
    /// `namespaces[i]` its namespaces, held so that their teardown happens here.
    pub(crate) fn clean_up_in_background(
        &self,
        victims: Arc<Vec<Arc<Live>>>,
        cgroups: Vec<OwnedCgroup>,
        namespaces: Vec<HeldNamespaces>,
        trace: Arc<Timeline>,
    ) {
        let mgr = self.clone();
        let work = move || {
            mgr.remove_leftovers(&victims, cgroups, namespaces);
            trace.mark("leftovers removed");
            trace.print(victims.len());
        };
        if let Err(e) = std::thread::Builder::new().name("cleanup".into()).spawn(work) {
            // Nothing runs any more; a restarted daemon removes what stays.
            eprintln!("safehouse: cannot start the cleanup thread ({e}); leftovers stay until the next start");
        }
    }

    /// Per sandbox, in parallel (one thread per core): the exec watcher (its thread ended
    /// when the sandbox's tasks did; on its way out it removes the `tools.limits` cgroups
    /// nested in the sandbox's, which a v1 `rmdir` of the sandbox's would fail on), the
    /// cgroup (its `destroy` still kills a straggler first), the namespaces (unmounting
    /// its filesystems), its image's lease, the file watches and root descriptors, then the socket directory.
    fn remove_leftovers(&self, victims: &[Arc<Live>], cgroups: Vec<OwnedCgroup>, namespaces: Vec<HeldNamespaces>) {
        let width = std::thread::available_parallelism().map_or(2, |n| n.get());
        type Slot = Mutex<(OwnedCgroup, HeldNamespaces)>;
        let items: Vec<(&Arc<Live>, Slot)> =
            victims.iter().zip(cgroups.into_iter().zip(namespaces).map(Mutex::new)).collect();
        parallel(&items, width, |(live, slot)| {
            let (cg, namespaces) = std::mem::take(&mut *slot.lock().unwrap_or_else(|e| e.into_inner()));
            live.execs.stop();
            if let Some(cg) = cg {
                if let Err(e) = cg.destroy() {
                    eprintln!("safehouse: sandbox {}: removing its cgroup: {e}", live.id);
                }
            }
            drop(namespaces);
            // Its mounts are gone with its namespaces: its image's layers are free to go.
            live.release_image();
            self.unwatch_files(&live.id);
            if live.disk {
                self.remove_layer(&live.id);
            }
            let _ = std::fs::remove_dir_all(&live.socket_dir);
        });
    }

    /// At start, after `recover`: the leftovers of every sandbox that is not running but
    /// still has its directory under `DATA_DIR/sandboxes` (the daemon stopped before its
    /// cleanup finished). Returns how many were swept.
    pub(crate) async fn sweep_leftovers(&self) -> usize {
        let dir = self.inner.cfg.data_dir.join("sandboxes");
        let live: Vec<String> = self.inner.live.lock().unwrap_or_else(|e| e.into_inner()).keys().cloned().collect();
        let cgroups = self.inner.cgroups.clone();
        tokio::task::spawn_blocking(move || sweep(&dir, &live, &cgroups)).await.unwrap_or(0)
    }
}

/// Removes `DATA_DIR/sandboxes/<id>` and the cgroup `<id>` of every sandbox id there that
/// is not in `live`.
fn sweep(dir: &Path, live: &[String], cgroups: &CgroupSupport) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    let mut swept = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(id) = name.to_str() else { continue };
        if !ids::is_sandbox_id(id) || live.iter().any(|l| l == id) {
            continue;
        }
        if cgroups.writable {
            if let Ok(cg) = cgroup::open(cgroups, id) {
                if let Err(e) = cg.destroy() {
                    eprintln!("safehouse: sandbox {id}: removing its cgroup left from before: {e}");
                    continue; // the directory stays, so the next start tries again
                }
            }
        }
        if std::fs::remove_dir_all(entry.path()).is_ok() {
            swept += 1;
        }
    }
    swept
}

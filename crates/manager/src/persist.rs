//! Persistence: writable layers on disk (the storage pool), pause and resume, snapshots,
//! forks and volumes (docs/persistence.md).
//!
//! A paused sandbox is a store record in state `paused` and its layer in the pool: no
//! process, no cgroup, no memory. Resume starts a new agent on the same layer with the
//! recorded id, policy, environment and lifecycle (the network rules are the policy's).
//! On this tier the processes' memory is not kept: CRIU cannot checkpoint on this kernel.

use std::sync::Arc;

use safehouse_storage::{Kind, Pool, PoolOptions, StorageError};

use crate::store::{now_rfc3339, PersistRecord, SandboxRecord, SnapshotRecord, VolumeRecord};
use crate::{
    ids, internal, CreateRequest, Lifecycle, Live, Manager, ManagerError, OnTimeout, PauseResult, SandboxInfo,
    SandboxState, Storage,
};

/// What `pause` says it kept on this tier.
pub const MEMORY_NOTE: &str = "the filesystem is kept on disk; the processes' memory is not: process checkpointing (CRIU) does not work on this kernel, so resume starts the sandbox's processes afresh on the same files (the gVisor tier adds memory checkpoints)";

/// The most sandboxes one fork makes.
pub const MAX_FORK: u32 = 64;
/// Below this much free space in the storage pool, no sandbox starts on a disk layer.
const MIN_POOL_FREE: u64 = 32 << 20;

fn storage_error(e: StorageError) -> ManagerError {
    match e {
        StorageError::Unenforceable { reason } => ManagerError::Refused { layer: "storage: disk".into(), reason },
        StorageError::PoolTooLarge { .. } | StorageError::PoolTooSmall { .. } => ManagerError::Refused {
            layer: "storage: disk".into(),
            reason: format!("{e} (SAFEHOUSE_STORAGE_SIZE on the daemon)"),
        },
        StorageError::BadName { .. } | StorageError::CapTooSmall { .. } => ManagerError::Invalid(e.to_string()),
        StorageError::NotFound { .. } => ManagerError::NotFound,
        other => ManagerError::Internal(other.to_string()),
    }
}

/// Where a new sandbox's writable layer goes: on disk when asked, or when its lifecycle
/// needs it (pausing keeps the filesystem on disk).
pub(crate) fn storage_for(req: &CreateRequest) -> Result<Storage, ManagerError> {
    let lc = req.lifecycle.clone().unwrap_or_default();
    let needs_disk = lc.on_timeout == OnTimeout::Pause || req.snapshot.is_some();
    match req.storage {
        Some(Storage::Memory) if needs_disk => Err(ManagerError::Invalid(
            "lifecycle.on_timeout \"pause\" and snapshot keep the filesystem on disk: drop storage \"memory\" or give storage \"disk\"".into(),
        )),
        Some(s) => Ok(s),
        None if needs_disk || lc.auto_resume => Ok(Storage::Disk),
        None => Ok(Storage::Memory),
    }
}

pub(crate) fn check_lifecycle(lc: &Lifecycle, max_timeout_s: u64) -> Result<(), ManagerError> {
    if let Some(s) = lc.idle_timeout_s {
        if s == 0 || s > max_timeout_s {
            return Err(ManagerError::Invalid(format!(
                "lifecycle.idle_timeout_s must be between 1 and {max_timeout_s}"
            )));
        }
    }
    Ok(())
}

/// The pool's name for a tenant's volume: names are per tenant, the pool's are global.
fn volume_key(tenant: &str, name: &str) -> String {
    use sha2::Digest;
    let h = sha2::Sha256::digest(format!("{tenant}\0{name}").as_bytes());
    h[..12].iter().map(|b| format!("{b:02x}")).collect()
}

impl Manager {
    /// The storage pool, opened (made and mounted if needed) on first use. A host that
    /// cannot enforce disk caps gets the refusal, every time it is asked.
    pub(crate) fn pool(&self) -> Result<Arc<Pool>, ManagerError> {
        let mut slot = self.inner.pool.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = slot.as_ref() {
            return Ok(p.clone());
        }
        let dir = &self.inner.cfg.data_dir;
        let opts = match std::env::var("SAFEHOUSE_STORAGE_SIZE") {
            Ok(s) if !s.is_empty() => PoolOptions {
                size: safehouse_policy::units::parse_size(&s)
                    .map_err(|e| ManagerError::Invalid(format!("SAFEHOUSE_STORAGE_SIZE: {e}")))?,
            },
            _ => PoolOptions::default_for(dir),
        };
        let pool = Arc::new(Pool::open(dir, &opts).map_err(storage_error)?);
        *slot = Some(pool.clone());
        Ok(pool)
    }

    /// Whether sandboxes' files can be kept on disk here (the storage pool opens, made and
    /// mounted on first use); the reason it cannot is what a `storage: "disk"` create gets.
    pub async fn disk_storage_available(&self) -> bool {
        let mgr = self.clone();
        tokio::task::spawn_blocking(move || mgr.pool().is_ok()).await.unwrap_or(false)
    }

    /// At start, after `recover`: the pool's subvolumes that no record accounts for, removed
    /// (a crash between making one and recording it, or between a record's removal and
    /// the subvolume's): layers of no running, frozen or paused sandbox, snapshots and
    /// volumes without their record. Only a daemon whose data dir has a pool looks (none
    /// is made for this). Returns how many went.
    pub(crate) async fn sweep_pool(&self) -> usize {
        if !self.inner.cfg.data_dir.join("storage").join("pool").is_dir() {
            return 0;
        }
        let mgr = self.clone();
        tokio::task::spawn_blocking(move || {
            let Ok(pool) = mgr.pool() else { return 0 };
            let store = &mgr.inner.store;
            let mut keep: std::collections::HashSet<String> =
                mgr.inner.live.lock().unwrap_or_else(|e| e.into_inner()).keys().cloned().collect();
            let (Ok(paused), Ok(snaps), Ok(vols)) =
                (store.list_paused(), store.list_snapshots(crate::auth::ADMIN_TENANT), store.all_volumes())
            else {
                return 0; // the records cannot be read: remove nothing
            };
            keep.extend(paused);
            let snaps: std::collections::HashSet<String> = snaps.into_iter().map(|s| s.id).collect();
            let vols: std::collections::HashSet<String> = vols.into_iter().map(|v| v.key).collect();
            let mut removed = 0;
            // Only names the daemon makes: `safehouse run --storage disk` keeps `run-PID-...`
            // layers in the same pool (and sweeps them itself).
            let ours = |kind: Kind, name: &str| match kind {
                Kind::Layer => crate::ids::is_sandbox_id(name),
                Kind::Snapshot => crate::ids::is_snapshot_id(name),
                Kind::Volume => name.len() == 24 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
            };
            for (kind, known) in [(Kind::Layer, &keep), (Kind::Snapshot, &snaps), (Kind::Volume, &vols)] {
                for name in pool.list(kind).unwrap_or_default() {
                    if ours(kind, &name) && !known.contains(&name) && pool.remove(kind, &name).unwrap_or(false) {
                        removed += 1;
                    }
                }
            }
            removed
        })
        .await
        .unwrap_or(0)
    }

    /// The writable layer of sandbox `id` (blocking): made empty, or from a snapshot,
    /// or (a resume) the one it has.
    pub(crate) fn prepare_layer(
        &self,
        id: &str,
        cap: u64,
        snapshot: Option<&str>,
        resume: bool,
    ) -> Result<String, ManagerError> {
        let pool = self.pool()?;
        // A full pool fails a sandbox's setup deep inside (its overlay's work directory):
        // refused here instead, naming the pool.
        if let Ok(free) = pool.free() {
            if free < MIN_POOL_FREE {
                return Err(ManagerError::Capacity(format!(
                    "the storage pool is full ({} MiB free): delete snapshots, volumes or paused sandboxes (a deleted \
                     one's space comes back within about 30 s), or give the daemon a larger pool \
                     (SAFEHOUSE_STORAGE_SIZE; docs/persistence.md)",
                    free >> 20
                )));
            }
        }
        let path = if resume {
            let p = pool.path(Kind::Layer, id).map_err(storage_error)?;
            if !p.is_dir() {
                return Err(ManagerError::Internal(format!("the layer of paused sandbox {id} is gone from the pool")));
            }
            p
        } else if let Some(snap) = snapshot {
            pool.snapshot(Kind::Snapshot, snap, Kind::Layer, id, Some(cap)).map_err(storage_error)?
        } else {
            pool.create(Kind::Layer, id, cap).map_err(storage_error)?
        };
        Ok(path.to_string_lossy().into_owned())
    }

    /// Deletes a sandbox's layer (blocking, best effort: a layer the pool cannot delete
    /// now is reported and left for the operator).
    pub(crate) fn remove_layer(&self, id: &str) {
        let Ok(pool) = self.pool() else { return };
        if let Err(e) = pool.remove(Kind::Layer, id) {
            eprintln!("safehouse: sandbox {id}: its layer on disk was not removed: {e}");
        }
    }

    /// Pauses a sandbox: every process stopped, its cgroup removed (the memory freed), its
    /// layer kept on disk, the state `paused` recorded. Idempotent.
    pub async fn pause(&self, tenant: &str, id: &str) -> Result<PauseResult, ManagerError> {
        let result = |state| PauseResult {
            id: id.to_string(),
            state,
            filesystem: true,
            memory: false,
            note: MEMORY_NOTE.into(),
        };
        let live = match self.live(tenant, id) {
            Ok(l) => l,
            Err(_) => {
                let info = self.info(tenant, id).await?;
                return match info.state {
                    SandboxState::Paused => Ok(result(SandboxState::Paused)),
                    s => Err(ManagerError::NotRunning(crate::store::state_str(s).into())),
                };
            }
        };
        self.pause_live(&live).await?;
        Ok(result(SandboxState::Paused))
    }

    pub(crate) async fn pause_live(&self, live: &Arc<Live>) -> Result<(), ManagerError> {
        if !live.disk {
            return Err(ManagerError::Refused {
                layer: "pause".into(),
                reason: "this sandbox's writable layer is in RAM (storage \"memory\"), which a pause would lose; create it with storage \"disk\" to pause it".into(),
            });
        }
        self.inner.control.set_frozen(&live.id, false);
        self.destroy(live, SandboxState::Paused, None).await
    }

    /// Resumes a paused sandbox: a new agent on the same layer, with the recorded id,
    /// policy, environment and lifecycle, and a fresh deadline of its original length.
    /// Idempotent: a running sandbox is answered as it is.
    pub async fn resume(&self, tenant: &str, id: &str) -> Result<SandboxInfo, ManagerError> {
        if self.live(tenant, id).is_ok() {
            return self.info(tenant, id).await;
        }
        // One resume at a time per sandbox: concurrent calls wait for the first.
        let gate =
            self.inner.resuming.lock().unwrap_or_else(|e| e.into_inner()).entry(id.to_string()).or_default().clone();
        let _held = gate.lock().await;
        if self.live(tenant, id).is_ok() {
            return self.info(tenant, id).await;
        }
        let store = self.inner.store.clone();
        let (t, i) = (tenant.to_string(), id.to_string());
        let (rec, persist) = tokio::task::spawn_blocking(move || -> Result<_, crate::store::StoreError> {
            Ok((store.get_sandbox(&t, &i)?, store.get_persistence(&i)?))
        })
        .await
        .map_err(internal)?
        .map_err(internal)?;
        let rec = rec.ok_or(ManagerError::NotFound)?;
        if rec.state != SandboxState::Paused {
            return Err(ManagerError::NotRunning(crate::store::state_str(rec.state).into()));
        }
        let persist =
            persist.ok_or_else(|| ManagerError::Internal(format!("sandbox {id} has no persistence record")))?;
        let req = CreateRequest {
            policy: rec.policy.clone(),
            preset: None,
            timeout_s: Some(persist.timeout_s),
            env: persist.env.clone(),
            metadata: rec.metadata.clone(),
            created_by: rec.key_id.clone(),
            storage: Some(persist.storage),
            lifecycle: Some(persist.lifecycle.clone()),
            snapshot: None,
            volumes: persist.volumes.clone(),
            template: None,
        };
        let (mgr, tenant2) = (self.clone(), rec.tenant.clone());
        tokio::spawn(async move {
            mgr.create_inner(&tenant2, req, Some(crate::lifecycle::Start::Resume(Box::new(rec)))).await
        })
        .await
        .map_err(internal)?
    }

    /// A paused sandbox that resumes on use: resumed; else the state as an error.
    pub(crate) async fn resume_for_use(&self, tenant: &str, id: &str) -> Result<Arc<Live>, ManagerError> {
        if let Ok(live) = self.live(tenant, id) {
            return Ok(live);
        }
        if !ids::is_sandbox_id(id) {
            return Err(ManagerError::NotFound);
        }
        let store = self.inner.store.clone();
        let (t, i) = (tenant.to_string(), id.to_string());
        let (rec, persist) = tokio::task::spawn_blocking(move || -> Result<_, crate::store::StoreError> {
            Ok((store.get_sandbox(&t, &i)?, store.get_persistence(&i)?))
        })
        .await
        .map_err(internal)?
        .map_err(internal)?;
        match (rec, persist) {
            (Some(r), Some(p)) if r.state == SandboxState::Paused && p.lifecycle.auto_resume => {
                self.resume(tenant, id).await?;
                self.live(tenant, id)
            }
            (Some(r), _) if r.state == SandboxState::Paused => Err(ManagerError::Paused(id.to_string())),
            (Some(r), _) => Err(ManagerError::NotRunning(crate::store::state_str(r.state).into())),
            (None, _) => Err(ManagerError::NotFound),
        }
    }

    /// Like `running`, resuming a paused sandbox first when its lifecycle says so.
    pub(crate) async fn running_or_resume(&self, tenant: &str, id: &str) -> Result<Arc<Live>, ManagerError> {
        let live = self.resume_for_use(tenant, id).await?;
        if self.inner.control.is_frozen(id) {
            return Err(ManagerError::Frozen(id.to_string()));
        }
        self.touch(&live);
        Ok(live)
    }

    /// Like `present`, resuming a paused sandbox first when its lifecycle says so.
    pub(crate) async fn present_or_resume(&self, tenant: &str, id: &str) -> Result<Arc<Live>, ManagerError> {
        let live = self.resume_for_use(tenant, id).await?;
        self.touch(&live);
        Ok(live)
    }

    /// Records use of a sandbox (for `lifecycle.idle_timeout_s`).
    pub(crate) fn touch(&self, live: &Live) {
        live.last_used.store(safehouse_sys::monotonic_ns(), std::sync::atomic::Ordering::Relaxed);
    }

    /// `lifecycle.idle_timeout_s`: checks every few seconds whether the sandbox went
    /// without an API call that long, and then pauses (or kills, per `on_timeout`) it.
    pub(crate) fn arm_idle(&self, live: &Arc<Live>) {
        let Some(idle_s) = live.lifecycle.idle_timeout_s else { return };
        // Held weakly, and only while this incarnation runs: after a pause and resume (the
        // same id) the new one has its own watch.
        let (mgr, weak) = (self.clone(), Arc::downgrade(live));
        tokio::spawn(async move {
            let idle_ns = idle_s.saturating_mul(1_000_000_000);
            let tick = std::time::Duration::from_millis((idle_s * 1000 / 4).clamp(200, 5000));
            let mut cpu_before = None;
            loop {
                tokio::time::sleep(tick).await;
                let Some(live) = weak.upgrade() else { return };
                if !mgr.is_this_live(&live) {
                    return;
                }
                let last = live.last_used.load(std::sync::atomic::Ordering::Relaxed);
                // CPU used since the last tick: a sandbox working on its own is not idle.
                let cpu =
                    live.cgroup.lock().unwrap_or_else(|e| e.into_inner()).as_ref().and_then(|c| c.cpu_usage_ns().ok());
                let busy = match (cpu, cpu_before) {
                    (Some(now), Some(before)) => now.saturating_sub(before) > tick.as_nanos() as u64 / 100,
                    _ => false,
                };
                cpu_before = cpu;
                if busy {
                    mgr.touch(&live);
                }
                if safehouse_sys::monotonic_ns().saturating_sub(last) < idle_ns || busy {
                    continue;
                }
                mgr.note(&live.id, "sandbox.idle", serde_json::json!({ "idle_timeout_s": idle_s }));
                let _ = match live.lifecycle.on_timeout {
                    OnTimeout::Pause => mgr.pause_live(&live).await,
                    OnTimeout::Kill => mgr.destroy(&live, SandboxState::Expired, Some("idle".into())).await,
                };
                return;
            }
        });
    }

    /// Kills a paused sandbox: its record marked `killed`, its layer deleted.
    pub(crate) async fn kill_paused(&self, id: &str, tenant: &str) -> Result<(), ManagerError> {
        let (mgr, store, id2) = (self.clone(), self.inner.store.clone(), id.to_string());
        tokio::task::spawn_blocking(move || {
            mgr.remove_layer(&id2);
            store.set_sandbox_state(&id2, SandboxState::Killed, None)
        })
        .await
        .map_err(internal)?
        .map_err(internal)?;
        self.inner.quota.release(id);
        self.inner.events.register(id, tenant);
        self.note_ended(id, "sandbox.killed", None);
        Ok(())
    }

    /// The persistence fields of a sandbox's public view.
    pub(crate) async fn with_persistence(&self, mut info: SandboxInfo) -> SandboxInfo {
        let (store, id) = (self.inner.store.clone(), info.id.clone());
        if let Ok(Ok(Some(p))) = tokio::task::spawn_blocking(move || store.get_persistence(&id)).await {
            info.storage = Some(p.storage);
            info.lifecycle = Some(p.lifecycle);
        }
        info
    }

    // ---- snapshots and forks ----------------------------------------------------------

    /// Freezes the sandbox's processes (so no write is half done), snapshots its layer,
    /// thaws. A paused sandbox is snapshotted as it lies.
    pub async fn snapshot(&self, tenant: &str, id: &str) -> Result<SnapshotRecord, ManagerError> {
        let snap_id = ids::snapshot_id();
        let (rec, persist) = self.snapshot_source(tenant, id).await?;
        self.freeze_around(tenant, id, {
            let (mgr, id, snap_id) = (self.clone(), id.to_string(), snap_id.clone());
            move || -> Result<(), ManagerError> {
                let pool = mgr.pool()?;
                pool.snapshot(Kind::Layer, &id, Kind::Snapshot, &snap_id, None).map(|_| ()).map_err(storage_error)
            }
        })
        .await?;
        let record = SnapshotRecord {
            id: snap_id,
            tenant: rec.tenant.clone(),
            sandbox_id: id.to_string(),
            created_at: now_rfc3339(),
            policy: rec.policy.clone(),
            env: persist.env.clone(),
            timeout_s: persist.timeout_s,
        };
        let (store, r) = (self.inner.store.clone(), record.clone());
        tokio::task::spawn_blocking(move || store.insert_snapshot(&r)).await.map_err(internal)?.map_err(internal)?;
        self.note(id, "sandbox.snapshot", serde_json::json!({ "snapshot": record.id }));
        Ok(record)
    }

    /// `count` new sandboxes whose layers start as this sandbox's now (one frozen
    /// instant for all), with its policy, environment and lifecycle. Some may start when
    /// others cannot (a quota reached half-way): the ones that started, or the first
    /// refusal when none did. [`Manager::fork_each`] says what became of each.
    pub async fn fork(&self, tenant: &str, id: &str, count: u32) -> Result<Vec<SandboxInfo>, ManagerError> {
        let mut started = Vec::new();
        let mut first_error = None;
        for r in self.fork_each(tenant, id, count).await? {
            match r {
                Ok(info) => started.push(info),
                Err(e) => first_error = first_error.or(Some(e)),
            }
        }
        match first_error {
            Some(e) if started.is_empty() => Err(e),
            _ => Ok(started),
        }
    }

    /// As [`Manager::fork`], one result per fork asked for: each fork starts (or is
    /// refused, its layer removed) on its own.
    pub async fn fork_each(
        &self,
        tenant: &str,
        id: &str,
        count: u32,
    ) -> Result<Vec<Result<SandboxInfo, ManagerError>>, ManagerError> {
        if count == 0 || count > MAX_FORK {
            return Err(ManagerError::Invalid(format!("count must be between 1 and {MAX_FORK}")));
        }
        let (rec, persist) = self.snapshot_source(tenant, id).await?;
        let names: Vec<String> = (0..count).map(|_| ids::sandbox_id()).collect();
        self.freeze_around(tenant, id, {
            let (mgr, id, names) = (self.clone(), id.to_string(), names.clone());
            move || -> Result<(), ManagerError> {
                let pool = mgr.pool()?;
                pool.snapshot_many(Kind::Layer, &id, Kind::Layer, &names, None).map(|_| ()).map_err(storage_error)
            }
        })
        .await?;
        let req = CreateRequest {
            policy: rec.policy.clone(),
            timeout_s: Some(persist.timeout_s),
            env: persist.env.clone(),
            metadata: rec.metadata.clone(),
            created_by: rec.key_id.clone(),
            storage: Some(Storage::Disk),
            lifecycle: Some(persist.lifecycle.clone()),
            ..Default::default()
        };
        // The starts run concurrently (each is mostly waiting: the spawn, the agent's
        // connect, the gateway); each is admitted on its own, as a create would be.
        let starts: Vec<_> = names
            .iter()
            .map(|name| {
                let (mgr, tenant, req, name) = (self.clone(), rec.tenant.clone(), req.clone(), name.clone());
                tokio::spawn(async move {
                    let r = mgr.create_with_layer(&tenant, req, &name).await;
                    if r.is_err() {
                        // Refused before its launch (a quota, a check), its layer is still here.
                        let m = mgr.clone();
                        let _ = tokio::task::spawn_blocking(move || {
                            if m.pool().is_ok_and(|p| p.path(Kind::Layer, &name).is_ok_and(|p| p.is_dir())) {
                                m.remove_layer(&name);
                            }
                        })
                        .await;
                    }
                    r
                })
            })
            .collect();
        let mut out = Vec::with_capacity(starts.len());
        for start in starts {
            out.push(start.await.map_err(internal).and_then(|r| r));
        }
        let started = out.iter().filter(|r| r.is_ok()).count();
        if started > 0 {
            self.note(id, "sandbox.forked", serde_json::json!({ "count": started }));
        }
        Ok(out)
    }

    /// The record and persistence of a disk-backed sandbox of `tenant` to copy from.
    async fn snapshot_source(&self, tenant: &str, id: &str) -> Result<(SandboxRecord, PersistRecord), ManagerError> {
        if !ids::is_sandbox_id(id) {
            return Err(ManagerError::NotFound);
        }
        let store = self.inner.store.clone();
        let (t, i) = (tenant.to_string(), id.to_string());
        let (rec, persist) = tokio::task::spawn_blocking(move || -> Result<_, crate::store::StoreError> {
            Ok((store.get_sandbox(&t, &i)?, store.get_persistence(&i)?))
        })
        .await
        .map_err(internal)?
        .map_err(internal)?;
        let rec = rec.ok_or(ManagerError::NotFound)?;
        if !matches!(rec.state, SandboxState::Running | SandboxState::Frozen | SandboxState::Paused) {
            return Err(ManagerError::NotRunning(crate::store::state_str(rec.state).into()));
        }
        match persist {
            Some(p) if p.storage == Storage::Disk => Ok((rec, p)),
            _ => Err(ManagerError::Refused {
                layer: "snapshot".into(),
                reason: "this sandbox's writable layer is in RAM (storage \"memory\"); create it with storage \"disk\" to snapshot or fork it".into(),
            }),
        }
    }

    /// Runs `f` (blocking) with the sandbox's processes frozen, if it has any running.
    async fn freeze_around<F>(&self, tenant: &str, id: &str, f: F) -> Result<(), ManagerError>
    where
        F: FnOnce() -> Result<(), ManagerError> + Send + 'static,
    {
        let live = self.live(tenant, id).ok();
        let was_frozen = self.inner.control.is_frozen(id);
        let froze = match &live {
            Some(_) if !was_frozen => self.freeze(tenant, id).await.is_ok(),
            _ => false,
        };
        let r = tokio::task::spawn_blocking(f).await.map_err(internal);
        if froze {
            let _ = self.thaw(tenant, id).await;
        }
        r?
    }

    pub async fn list_snapshots(&self, tenant: &str) -> Result<Vec<SnapshotRecord>, ManagerError> {
        let (store, t) = (self.inner.store.clone(), tenant.to_string());
        tokio::task::spawn_blocking(move || store.list_snapshots(&t)).await.map_err(internal)?.map_err(internal)
    }

    pub async fn get_snapshot(&self, tenant: &str, id: &str) -> Result<SnapshotRecord, ManagerError> {
        let (store, t, i) = (self.inner.store.clone(), tenant.to_string(), id.to_string());
        tokio::task::spawn_blocking(move || store.get_snapshot(&t, &i))
            .await
            .map_err(internal)?
            .map_err(internal)?
            .ok_or(ManagerError::NotFound)
    }

    pub async fn delete_snapshot(&self, tenant: &str, id: &str) -> Result<(), ManagerError> {
        let snap = self.get_snapshot(tenant, id).await?;
        let (mgr, store) = (self.clone(), self.inner.store.clone());
        tokio::task::spawn_blocking(move || -> Result<(), ManagerError> {
            mgr.pool()?.remove(Kind::Snapshot, &snap.id).map_err(storage_error)?;
            store.delete_snapshot(&snap.id).map_err(internal)?;
            Ok(())
        })
        .await
        .map_err(internal)?
    }

    /// A create request from a snapshot: its policy, environment and lifetime unless the
    /// request gives its own.
    pub(crate) async fn apply_snapshot(&self, tenant: &str, req: &mut CreateRequest) -> Result<(), ManagerError> {
        let Some(id) = req.snapshot.clone() else { return Ok(()) };
        let snap = self.get_snapshot(tenant, &id).await?;
        if req.policy.is_none() && req.preset.is_none() {
            req.policy = snap.policy.clone();
        }
        if req.env.is_empty() {
            req.env = snap.env.clone();
        }
        req.timeout_s = req.timeout_s.or(Some(snap.timeout_s));
        req.snapshot = Some(snap.id);
        Ok(())
    }

    // ---- volumes -----------------------------------------------------------------------

    pub async fn create_volume(&self, tenant: &str, name: &str, size: u64) -> Result<VolumeRecord, ManagerError> {
        safehouse_storage::check_name("volume", name).map_err(|e| ManagerError::Invalid(e.to_string()))?;
        let rec = VolumeRecord {
            tenant: tenant.to_string(),
            name: name.to_string(),
            key: volume_key(tenant, name),
            size,
            created_at: now_rfc3339(),
        };
        let (mgr, store, r) = (self.clone(), self.inner.store.clone(), rec.clone());
        tokio::task::spawn_blocking(move || -> Result<(), ManagerError> {
            if store.get_volume(&r.tenant, &r.name).map_err(internal)?.is_some() {
                return Err(ManagerError::Conflict(format!("a volume named {:?} exists", r.name)));
            }
            let pool = mgr.pool()?;
            let path = pool.create(Kind::Volume, &r.key, r.size).map_err(storage_error)?;
            let (uid, gid) = mgr.sandbox_ids();
            std::os::unix::fs::chown(&path, Some(uid), Some(gid)).map_err(internal)?;
            if let Err(e) = store.insert_volume(&r) {
                let _ = pool.remove(Kind::Volume, &r.key);
                return Err(internal(e));
            }
            Ok(())
        })
        .await
        .map_err(internal)??;
        Ok(rec)
    }

    pub async fn list_volumes(&self, tenant: &str) -> Result<Vec<VolumeRecord>, ManagerError> {
        let (store, t) = (self.inner.store.clone(), tenant.to_string());
        tokio::task::spawn_blocking(move || store.list_volumes(&t)).await.map_err(internal)?.map_err(internal)
    }

    /// Refused while a sandbox (running, frozen or paused) has it mounted, naming them.
    pub async fn delete_volume(&self, tenant: &str, name: &str) -> Result<(), ManagerError> {
        let mut users = self.volume_users(tenant, name);
        let (store, t, n) = (self.inner.store.clone(), tenant.to_string(), name.to_string());
        let paused = tokio::task::spawn_blocking(move || store.paused_volume_users(&t, &n))
            .await
            .map_err(internal)?
            .map_err(internal)?;
        users.extend(paused.into_iter().map(|id| format!("{id} (paused)")));
        if !users.is_empty() {
            return Err(ManagerError::Conflict(format!(
                "volume {name:?} is mounted in {}; kill them first",
                users.join(", ")
            )));
        }
        let (mgr, store, t, n) = (self.clone(), self.inner.store.clone(), tenant.to_string(), name.to_string());
        tokio::task::spawn_blocking(move || -> Result<(), ManagerError> {
            let v = store.get_volume(&t, &n).map_err(internal)?.ok_or(ManagerError::NotFound)?;
            mgr.pool()?.remove(Kind::Volume, &v.key).map_err(storage_error)?;
            store.delete_volume(&t, &n).map_err(internal)?;
            Ok(())
        })
        .await
        .map_err(internal)?
    }

    /// A tenant's volume as a root for file operations (the files API without a sandbox):
    /// its directory in the pool, files owned by the sandbox user as a sandbox makes them.
    pub async fn volume_root(&self, tenant: &str, name: &str) -> Result<crate::SandboxRoot, ManagerError> {
        use std::os::unix::fs::OpenOptionsExt;
        let (mgr, t, n) = (self.clone(), tenant.to_string(), name.to_string());
        tokio::task::spawn_blocking(move || -> Result<crate::SandboxRoot, ManagerError> {
            let rec = mgr.inner.store.get_volume(&t, &n).map_err(internal)?.ok_or(ManagerError::NotFound)?;
            let path = mgr.pool()?.path(Kind::Volume, &rec.key).map_err(storage_error)?;
            let dir = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
                .open(&path)
                .map_err(|e| ManagerError::Internal(format!("volume {n:?}: cannot open {}: {e}", path.display())))?;
            let (uid, gid) = mgr.sandbox_ids();
            Ok(crate::SandboxRoot { dir: Arc::new(std::os::fd::OwnedFd::from(dir)), uid, gid })
        })
        .await
        .map_err(internal)?
    }

    /// The live sandboxes that mount a tenant's volume.
    fn volume_users(&self, tenant: &str, name: &str) -> Vec<String> {
        let live = self.inner.live.lock().unwrap_or_else(|e| e.into_inner());
        let mut users: Vec<String> = live
            .values()
            .filter(|l| l.tenant == tenant && l.volumes.iter().any(|v| v == name))
            .map(|l| l.id.clone())
            .collect();
        users.sort();
        users
    }

    /// The host directories of the volumes a create request mounts (tenant-checked).
    pub(crate) fn volume_mounts(
        &self,
        tenant: &str,
        volumes: &[crate::VolumeMount],
    ) -> Result<Vec<safehouse_policy::plan::MountSpec>, ManagerError> {
        let mut out = Vec::new();
        for v in volumes {
            let rec = self
                .inner
                .store
                .get_volume(tenant, &v.name)
                .map_err(internal)?
                .ok_or_else(|| ManagerError::Invalid(format!("no volume named {:?}; create it first", v.name)))?;
            let host = self.pool()?.path(Kind::Volume, &rec.key).map_err(storage_error)?;
            out.push(safehouse_policy::plan::MountSpec {
                host: host.to_string_lossy().into_owned(),
                path: v.path.clone(),
                writable: !v.read_only,
            });
        }
        Ok(out)
    }

    /// Disk used by a sandbox's layer, when on disk and the pool is open.
    pub(crate) fn layer_usage(&self, id: &str) -> Option<safehouse_storage::Usage> {
        let pool = self.inner.pool.lock().unwrap_or_else(|e| e.into_inner()).clone()?;
        pool.usage(Kind::Layer, id).ok()
    }
}

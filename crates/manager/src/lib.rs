//! The sandbox manager: the one place that creates, tracks, drives and destroys
//! sandboxes. No HTTP: the fronts (the native API, MCP, the E2B front) call only these
//! methods, and check requests with [`limits`], the one definition of what a request may
//! ask for.
//!
//! Every method takes the caller's tenant: a sandbox of another tenant is `NotFound`,
//! exactly like one that never existed.
//!
//! A live sandbox is: its agent (PID 1, a child of the spawner), a pidfd on it, a cgroup
//! `safehouse/<id>` the daemon made, a listening socket `DATA_DIR/sandboxes/<id>/agent.sock`
//! (reachable by root only, never by sandboxed code) and a connection to it. The store
//! records all of it, so a restarted daemon re-attaches (`recover`).

#![forbid(unsafe_code)]

mod agent_link;
pub mod audit;
pub mod auth;
mod cleanup;
pub mod codepool;
mod control;
pub mod events;
mod exec;
pub mod execwatch;
pub mod fleet;
pub mod fswatch;
pub mod ids;
pub mod images;
pub mod interp;
pub(crate) mod lifecycle;
pub mod limits;
pub mod metrics;
mod netns;
mod persist;
pub mod quota;
pub mod store;
pub mod template_build;
pub mod types;

#[cfg(test)]
mod testutil;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

pub use netns::GATEWAY_PORT;
pub use persist::{MAX_FORK, MEMORY_NOTE};
pub use store::Store;
pub use types::*;

use safehouse_jail::cgroup::{self, Cgroup, CgroupSupport};
use safehouse_jail::zygote::Zygote;

use agent_link::AgentLink;

/// The longest data dir whose sandbox sockets (`DATA_DIR/sandboxes/ID/agent.sock`) fit in
/// a unix socket address (108 bytes with the NUL).
pub const MAX_DATA_DIR_LEN: usize = 107 - "/sandboxes/sb_abcdefghijklmnopqrstuvwxyz/agent.sock".len();

/// A data dir too long for its sandboxes' agent sockets: refused before the daemon starts,
/// rather than every create failing.
#[derive(Debug, thiserror::Error)]
#[error(
    "the data dir {path} is {len} bytes long; the sandboxes' sockets under it need a path of at most \
     {MAX_DATA_DIR_LEN} bytes"
)]
pub struct DataDirTooLong {
    pub path: String,
    pub len: usize,
}

/// Checks that `data_dir` leaves room for its sandboxes' socket paths.
pub fn check_data_dir(data_dir: &std::path::Path) -> Result<(), DataDirTooLong> {
    let len = data_dir.as_os_str().len();
    if len > MAX_DATA_DIR_LEN {
        return Err(DataDirTooLong { path: data_dir.display().to_string(), len });
    }
    Ok(())
}

/// Tunables of the manager.
#[derive(Debug, Clone)]
pub struct ManagerConfig {
    pub data_dir: PathBuf,
    /// Lifetime when a create request gives none.
    pub default_timeout_s: u64,
    pub max_timeout_s: u64,
    /// Refuse creating more running sandboxes than this.
    pub max_sandboxes: usize,
    /// Warm code-interpreter sandboxes kept per pool (codepool.rs); 0: none.
    pub code_pool: usize,
    /// Per-tenant quotas (quota.rs); the default: none.
    pub quotas: quota::QuotaConfig,
}

impl ManagerConfig {
    pub fn new(data_dir: PathBuf) -> Self {
        ManagerConfig {
            data_dir,
            default_timeout_s: limits::DEFAULT_TIMEOUT_S,
            max_timeout_s: limits::MAX_TIMEOUT_S,
            max_sandboxes: 4096,
            code_pool: 0,
            quotas: Default::default(),
        }
    }
}

/// One running sandbox, as the daemon holds it in memory.
pub(crate) struct Live {
    pub id: String,
    pub tenant: String,
    pub pid: i32,
    pub pidfd: Arc<std::os::fd::OwnedFd>,
    pub cgroup: Mutex<Option<Box<dyn Cgroup>>>,
    pub link: AgentLink,
    pub socket_dir: PathBuf,
    pub uid: u32,
    pub gid: u32,
    /// Bumped on every new deadline, so an older deadline task knows it is stale.
    pub deadline_gen: std::sync::atomic::AtomicU64,
    pub next_cmd: std::sync::atomic::AtomicU64,
    /// With egress: the capability gateway serving the sandbox's 127.0.0.1:3128.
    pub gateway: Option<Arc<safehouse_gateway::Gateway>>,
    /// Every exec in the sandbox, observed (execwatch.rs).
    pub execs: execwatch::ExecWatch,
    /// The sandbox's root directory, handed over at setup; None for a sandbox re-attached
    /// after a daemon restart (`root_dir` opens `/proc/<agent>/root` then).
    pub root: Option<Arc<std::os::fd::OwnedFd>>,
    /// The code interpreter's driver, once started (interp.rs).
    pub interp: interp::Slot,
    /// Its writable layer is on disk (the pool's `layers/<id>`): it can pause.
    pub disk: bool,
    pub lifecycle: Lifecycle,
    /// When an API call last used it (`safehouse_sys::monotonic_ns`), for idle pauses.
    pub last_used: std::sync::atomic::AtomicU64,
    /// The names of the tenant's volumes it mounts.
    pub volumes: Vec<String>,
    /// Its root's image (`template` / `rootfs = "image:REF"`), leased while it lives:
    /// taken at teardown, once its mounts are gone (cleanup.rs).
    pub image: Mutex<Option<Arc<images::ImageInUse>>>,
}

impl Live {
    /// Ends its lease on its image (teardown, once nothing of the sandbox runs).
    pub fn release_image(&self) {
        self.image.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    /// The sandbox's root for file operations: the descriptor it handed over, or
    /// `/proc/<agent>/root` (root daemons only: the agent is non-dumpable), opened while
    /// the agent is known to live, so never a recycled pid's.
    pub fn root_dir(&self) -> std::io::Result<Arc<std::os::fd::OwnedFd>> {
        use std::os::unix::fs::OpenOptionsExt;
        let dir = match &self.root {
            Some(dir) => dir.clone(),
            None => Arc::new(
                std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
                    .open(format!("/proc/{}/root", self.pid))?
                    .into(),
            ),
        };
        if safehouse_sys::process::pidfd_send_signal(&self.pidfd, 0).is_err() {
            return Err(std::io::Error::other("gone"));
        }
        Ok(dir)
    }
}

#[derive(Clone)]
pub struct Manager {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub cfg: ManagerConfig,
    pub store: Arc<Store>,
    pub cgroups: CgroupSupport,
    pub root_mode: bool,
    /// Spawners; each serves one request at a time.
    pub zygotes: Vec<Mutex<Zygote>>,
    pub next_zygote: std::sync::atomic::AtomicUsize,
    pub live: Mutex<HashMap<String, Arc<Live>>>,
    /// How every sandbox's gateway resolves names (operator settings, from the environment).
    pub resolver: safehouse_gateway::Resolver,
    /// Everything that happens to sandboxes (crate::events).
    pub events: crate::events::EventBus,
    /// The audit log, once the daemon attached it (`Manager::set_audit`).
    pub audit: std::sync::OnceLock<crate::audit::Audit>,
    /// Freeze state, violation counters and stop rules (control.rs).
    pub control: control::ControlState,
    /// The sampler's history and the daemon's counters (metrics.rs).
    pub metrics: metrics::MetricsState,
    /// File events of every sandbox (fswatch.rs), started with the first sandbox; None
    /// when off (`SAFEHOUSE_FSWATCH=0`) or when the kernel refused an inotify instance.
    pub fswatch: std::sync::OnceLock<Option<fswatch::FsWatch>>,
    /// The code interpreter's warm pools (codepool.rs).
    pub codepool: codepool::PoolState,
    /// The storage pool, opened on first use (persist.rs).
    pub pool: Mutex<Option<Arc<safehouse_storage::Pool>>>,
    /// One resume at a time per sandbox.
    pub resuming: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// What each tenant holds and its rates (quota.rs).
    pub quota: Arc<quota::Quotas>,
    /// The highest `limits.nofile` a sandbox can set: the spawners' hard RLIMIT_NOFILE
    /// (limits::check_nofile); None when it cannot be read.
    pub nofile_max: Option<u64>,
    /// The images sandboxes run on (images.rs).
    pub images: images::ImageRoots,
    /// Template builds running (template_build.rs).
    pub builds: template_build::Builds,
}

impl Manager {
    /// `zygotes` were started (with `Zygote::start`) before the daemon's first thread.
    /// `resolver`: how the sandboxes' gateways resolve names.
    pub fn new(
        cfg: ManagerConfig,
        store: Arc<Store>,
        zygotes: Vec<Zygote>,
        resolver: safehouse_gateway::Resolver,
    ) -> Manager {
        let cgroups = cgroup::detect();
        let quota = quota::Quotas::new(cfg.quotas.clone());
        let nofile_max = limits::spawner_nofile_max(zygotes.iter().map(|z| z.pid()));
        let events = crate::events::EventBus::default();
        let q = quota.clone();
        events.set_tenant_gate(Arc::new(move |tenant| q.take_event(tenant)));
        Manager {
            inner: Arc::new(Inner {
                cfg,
                store,
                cgroups,
                root_mode: safehouse_sys::geteuid() == 0,
                zygotes: zygotes.into_iter().map(Mutex::new).collect(),
                next_zygote: Default::default(),
                live: Mutex::new(HashMap::new()),
                resolver,
                events,
                audit: Default::default(),
                control: Default::default(),
                metrics: Default::default(),
                fswatch: Default::default(),
                codepool: Default::default(),
                pool: Default::default(),
                resuming: Default::default(),
                quota,
                nofile_max,
                images: Default::default(),
                builds: Default::default(),
            }),
        }
    }

    /// The event bus (the SSE routes subscribe to it; the daemon attaches the audit log).
    pub fn events(&self) -> &crate::events::EventBus {
        &self.inner.events
    }

    /// Records every event, API call and sandbox policy in `audit` from now on (once).
    pub fn set_audit(&self, audit: crate::audit::Audit) {
        let sink = audit.clone();
        if self.inner.audit.set(audit).is_ok() {
            self.inner.events.set_sink(std::sync::Arc::new(move |e| sink.event(e)));
        }
    }

    /// The audit log, if attached.
    pub fn audit(&self) -> Option<&crate::audit::Audit> {
        self.inner.audit.get()
    }

    /// Records that `kind` happened in sandbox `sandbox` (an `sb_...` id): numbered, kept
    /// for replay, streamed to subscribers and audited. `kind` is dotted (`exec`,
    /// `exec.exited`, `net.denied`, ...; docs/api.md lists them); `data` is any JSON
    /// object, and strings in it may come straight from the sandbox: they are capped and
    /// escaped here. Cheap and never blocks (a mutex held for a few microseconds, no I/O),
    /// so it may be called from any thread or task. For what sandboxed code causes (its own
    /// execs, its network requests): over the sandbox's rate limit (1000/s, bursts of 5000)
    /// the event is dropped and counted (the next one that gets through carries `dropped`).
    pub fn emit(&self, sandbox: &str, kind: &str, data: serde_json::Value) {
        self.inner.events.emit(sandbox, kind, data);
    }

    /// Like `emit`, for what the daemon itself does or the API asked for (lifecycle, API
    /// execs, file operations): not rate-limited, so a sandbox's flood cannot hide them.
    pub fn note(&self, sandbox: &str, kind: &str, data: serde_json::Value) {
        self.inner.events.emit_unlimited(sandbox, kind, data);
    }

    /// The daemon's file observer (started on first use).
    pub(crate) fn fswatch(&self) -> Option<&fswatch::FsWatch> {
        self.inner
            .fswatch
            .get_or_init(|| {
                if !fswatch::enabled() {
                    return None;
                }
                fswatch::FsWatch::start(self.inner.events.clone())
                    .map_err(|e| eprintln!("safehouse: file events are off: no inotify instance ({e})"))
                    .ok()
            })
            .as_ref()
    }

    /// Starts reporting the file changes in a sandbox's writable zones (blocking: a scan).
    pub(crate) fn watch_files(&self, live: &Live, zones: &[String]) {
        let Some(w) = self.fswatch() else { return };
        let Ok(root) = live.root_dir().and_then(|r| r.try_clone()) else { return };
        w.add(&live.id, root, zones);
    }

    /// Stops reporting a sandbox's file changes (it ended) and lets its filesystem go.
    pub(crate) fn unwatch_files(&self, id: &str) {
        if let Some(Some(w)) = self.inner.fswatch.get() {
            w.remove(id);
        }
    }

    /// A live sandbox of `tenant`; the admin tenant reaches every tenant's (it could mint
    /// their keys anyway: `POST /v1/keys`).
    pub(crate) fn live(&self, tenant: &str, id: &str) -> Result<Arc<Live>, ManagerError> {
        let live = self.inner.live.lock().unwrap_or_else(|e| e.into_inner());
        match live.get(id) {
            Some(l) if l.tenant == tenant || tenant == crate::auth::ADMIN_TENANT => Ok(l.clone()),
            _ => Err(ManagerError::NotFound),
        }
    }

    /// A sandbox that exists for this tenant but is not running: its state, as an error.
    pub(crate) fn not_running(&self, tenant: &str, id: &str) -> ManagerError {
        match self.inner.store.get_sandbox(tenant, id) {
            Ok(Some(rec)) => ManagerError::NotRunning(crate::store::state_str(rec.state).into()),
            _ => ManagerError::NotFound,
        }
    }

    /// Whether the sandbox is running (any tenant; for long-lived streams to stop).
    pub fn is_live(&self, id: &str) -> bool {
        self.inner.live.lock().unwrap_or_else(|e| e.into_inner()).contains_key(id)
    }

    /// Whether `live` is the running incarnation of its sandbox (not one from before a
    /// pause and resume, which has the same id).
    pub(crate) fn is_this_live(&self, live: &Arc<Live>) -> bool {
        self.inner.live.lock().unwrap_or_else(|e| e.into_inner()).get(&live.id).is_some_and(|l| Arc::ptr_eq(l, live))
    }

    /// The daemon's data directory.
    pub fn data_dir(&self) -> &std::path::Path {
        &self.inner.cfg.data_dir
    }

    /// The tenant of a running or frozen sandbox (the E2B data plane knows only the id).
    pub fn tenant_of(&self, id: &str) -> Option<String> {
        self.inner.live.lock().unwrap_or_else(|e| e.into_inner()).get(id).map(|l| l.tenant.clone())
    }

    /// A sandbox whose processes can run: not frozen (a frozen agent answers nothing).
    pub(crate) fn running(&self, tenant: &str, id: &str) -> Result<Arc<Live>, ManagerError> {
        let live = self.present(tenant, id)?;
        if self.inner.control.is_frozen(id) {
            return Err(ManagerError::Frozen(id.to_string()));
        }
        Ok(live)
    }

    /// A sandbox that is running or frozen (its files and deadline stay reachable).
    pub(crate) fn present(&self, tenant: &str, id: &str) -> Result<Arc<Live>, ManagerError> {
        self.live(tenant, id).map_err(|_| self.not_running(tenant, id))
    }
}

fn internal(e: impl std::fmt::Display) -> ManagerError {
    ManagerError::Internal(e.to_string())
}

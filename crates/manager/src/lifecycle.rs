//! Creating, listing, expiring, killing and re-attaching sandboxes.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use safehouse_jail::cgroup::{self, CgroupVersion};
use safehouse_jail::execwatch::AllowList;
use safehouse_jail::run::ROOT_MODE_HOST_ID;
use safehouse_jail::spawn::CgroupHandle;
use safehouse_jail::JailError;
use safehouse_policy::model::parse_json;
use safehouse_policy::plan::{self, RunRequest};
use safehouse_policy::presets;

use super::agent_link::AgentLink;
use super::execwatch;
use super::{
    ids, internal, CreateRequest, ListFilter, Live, Manager, ManagerError, SandboxInfo, SandboxRoot, SandboxState,
};
use crate::store::{now_rfc3339, rfc3339, PersistRecord, SandboxRecord};
use crate::{Lifecycle, OnTimeout, Storage};

/// How `create_inner` starts a sandbox that is not new.
pub(crate) enum Start {
    /// A paused sandbox: same id, its layer.
    Resume(Box<SandboxRecord>),
    /// A fork: a new id whose layer the fork made.
    Forked(String),
}

/// What `launch` needs of a checked create request.
struct Launch {
    policy: safehouse_policy::Policy,
    preset: Option<String>,
    timeout_s: u64,
    lifecycle: Lifecycle,
    storage: Storage,
    run_req: RunRequest,
    id: String,
    disk_layer: Option<String>,
    image: Option<Arc<crate::images::ImageInUse>>,
}

fn jail_error(e: JailError) -> ManagerError {
    match e {
        JailError::LayerUnavailable { layer, reason } => ManagerError::Refused { layer, reason },
        JailError::Policy(p) => ManagerError::Invalid(p.to_string()),
        // A tools.allow pattern that names nothing in the sandbox is the caller's to fix;
        // it can only be checked in the sandbox's own view, so it arrives as a setup error
        // (written by the setup steps, before any untrusted code ran).
        JailError::Setup(m) if m.contains("tools.allow: ") => {
            let at = m.find("tools.allow: ").unwrap_or(0);
            ManagerError::Invalid(m[at..].to_string())
        }
        other => ManagerError::Internal(other.to_string()),
    }
}

fn expires(timeout_s: u64) -> String {
    rfc3339(time::OffsetDateTime::now_utc() + time::Duration::seconds(timeout_s as i64))
}

fn seconds_until(rfc: &str) -> u64 {
    time::OffsetDateTime::parse(rfc, &time::format_description::well_known::Rfc3339)
        .map(|t| (t - time::OffsetDateTime::now_utc()).whole_seconds().max(0) as u64)
        .unwrap_or(0)
}

/// The first `network.allow` entry of `policy` that reaches an address in a special range
/// (private, loopback, link-local, metadata...), if any.
fn private_address_rule(policy: &safehouse_policy::Policy) -> Option<String> {
    use safehouse_policy::network::{block_overlaps_special, HostPattern, NetPolicy};
    let net = NetPolicy::compile(&policy.network).ok()?;
    net.rules.into_iter().find_map(|r| match r.host {
        HostPattern::Net { addr, prefix } => block_overlaps_special(addr, prefix).map(|_| r.source),
        _ => None,
    })
}

/// The first `network.allow` address rule that names or covers an address of this host,
/// with why (`policy::network::NetPolicy::host_rule`), against the current host set.
fn host_address_rule(policy: &safehouse_policy::Policy) -> Result<Option<(String, String)>, ManagerError> {
    use safehouse_gateway::HostAddrSource;
    let Ok(net) = safehouse_policy::network::NetPolicy::compile(&policy.network) else { return Ok(None) };
    Ok(net.host_rule(&host_addrs()?.snapshot()))
}

/// The process's live set of host addresses (started by the daemon; refused, failing
/// closed, when the kernel cannot be asked).
fn host_addrs() -> Result<Arc<safehouse_gateway::HostWatch>, ManagerError> {
    safehouse_gateway::hostaddrs::watch().map_err(|e| ManagerError::Refused {
        layer: "network".into(),
        reason: format!("the gateway cannot tell this host's own addresses ({e}), so it allows no egress"),
    })
}

/// Who may open the host's own addresses through a sandbox's gateway: the admin tenant,
/// by exact address; nobody else.
fn host_reach(tenant: &str) -> safehouse_policy::network::HostReach {
    if tenant == crate::auth::ADMIN_TENANT {
        safehouse_policy::network::HostReach::ExactAddressRules
    } else {
        safehouse_policy::network::HostReach::Never
    }
}

/// The writable zones of a plan (paths inside the sandbox): its writable directories,
/// writable directory binds and `/dev/shm`. File events are reported for these.
pub(crate) fn writable_zones(ops: &[plan::MountOp]) -> Vec<String> {
    let mut zones = Vec::new();
    for op in ops {
        match op {
            plan::MountOp::WritableDir { path } => zones.push(path.clone()),
            plan::MountOp::Bind { path, writable: true, dir: true, .. } => zones.push(path.clone()),
            plan::MountOp::Dev { path, .. } => zones.push(format!("{}/shm", path.trim_end_matches('/'))),
            _ => {}
        }
    }
    zones
}

/// The writable zones of a recorded policy (after a restart), by planning it again.
fn zones_of_policy(policy: Option<serde_json::Value>) -> Vec<String> {
    let Some(policy) = policy.and_then(|p| serde_json::from_value::<safehouse_policy::Policy>(p).ok()) else {
        return Vec::new();
    };
    let req =
        RunRequest { policy, workdir: None, mounts: Vec::new(), env: Vec::new(), term: None, ..Default::default() };
    let view = safehouse_jail::host::host_view(&req);
    plan::compile(&req, &view).map(|p| writable_zones(&p.ops)).unwrap_or_default()
}

/// `/proc/PID/stat` field 22: the start time, to tell a recycled pid from the agent.
pub(crate) fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")?.1.split_whitespace().nth(19)?.parse().ok()
}

/// Descriptors one more sandbox may need while it is made and runs (agent socket, pidfd,
/// cgroup files, gateway, held namespaces, its clients' connections), with room to spare.
const FDS_PER_SANDBOX: u64 = 64;
/// Descriptors kept for everything else: accepting connections, exec, files, the store.
const FD_RESERVE: u64 = 256;

/// Admits a new sandbox only while the daemon's open-file limit leaves room for it and for
/// the sandboxes already running: past that a 503 that names the limit, instead of every
/// sandbox's exec failing once the limit is hit (issue 22 item 4).
fn check_fd_headroom() -> Result<(), ManagerError> {
    let Ok((limit, open)) = safehouse_sys::process::fd_usage() else { return Ok(()) };
    if open + FDS_PER_SANDBOX + FD_RESERVE > limit {
        return Err(ManagerError::Capacity(format!(
            "the daemon holds {open} of its {limit} open files; one more sandbox could leave the running ones \
             without descriptors: raise the daemon's open-file limit (LimitNOFILE= in its unit, ulimit -n) or \
             kill some sandboxes"
        )));
    }
    Ok(())
}

impl Manager {
    /// Runs to completion even if the caller goes away mid-way (its future is dropped):
    /// a half-made sandbox would otherwise be left running without a record or deadline.
    pub async fn create(&self, tenant: &str, mut req: CreateRequest) -> Result<SandboxInfo, ManagerError> {
        let (mgr, tenant) = (self.clone(), tenant.to_string());
        tokio::spawn(async move {
            mgr.apply_snapshot(&tenant, &mut req).await?;
            mgr.create_inner(&tenant, req, None).await
        })
        .await
        .map_err(internal)?
    }

    /// A new sandbox on the layer `id` a fork made for it.
    pub(crate) async fn create_with_layer(
        &self,
        tenant: &str,
        req: CreateRequest,
        id: &str,
    ) -> Result<SandboxInfo, ManagerError> {
        let (mgr, tenant, id) = (self.clone(), tenant.to_string(), id.to_string());
        tokio::spawn(async move { mgr.create_inner(&tenant, req, Some(Start::Forked(id))).await })
            .await
            .map_err(internal)?
    }

    /// Creates a sandbox; or, with `start`, resumes a paused one (same id, its layer) or
    /// starts a fork on the layer made for it.
    pub(crate) async fn create_inner(
        &self,
        tenant: &str,
        req: CreateRequest,
        start: Option<Start>,
    ) -> Result<SandboxInfo, ManagerError> {
        crate::limits::check_create(&req)?;
        let inner = &self.inner;
        let running = inner.live.lock().unwrap_or_else(|e| e.into_inner()).len();
        if running >= inner.cfg.max_sandboxes {
            return Err(ManagerError::Capacity(format!("{running} sandboxes are running; kill some first")));
        }
        check_fd_headroom()?;
        let (policy, preset) = match (&req.policy, &req.preset) {
            (Some(_), Some(_)) => return Err(ManagerError::Invalid("give either policy or preset, not both".into())),
            (Some(v), None) => {
                (parse_json(&v.to_string(), "policy").map_err(|e| ManagerError::Invalid(e.to_string()))?, None)
            }
            (None, Some(p)) => (presets::load(p).map_err(|e| ManagerError::Invalid(e.to_string()))?, Some(p.clone())),
            (None, None) => (presets::load("default").map_err(internal)?, Some("default".to_string())),
        };
        // Per-tool limits: the exec watcher enforces them in nested cgroups; refused (before
        // any work) when either is missing, never silently weakened.
        if !policy.tools.limits.is_empty() {
            self.check_tool_limits()?;
        }
        // A template is the policy's root: `rootfs = "image:NAME"` (never both).
        let mut policy = policy;
        if let Some(t) = &req.template {
            if policy.filesystem.rootfs != safehouse_policy::Rootfs::Host {
                return Err(ManagerError::Invalid(
                    "give either template or a policy with filesystem.rootfs, not both".into(),
                ));
            }
            policy.filesystem.rootfs = safehouse_policy::Rootfs::Image(t.clone());
        }
        // Host paths in a policy (binds, a rootfs directory) reach the host's filesystem with
        // the daemon's privileges: only the admin tenant (the host's operator) may name them.
        let fs = &policy.filesystem;
        let names_host_paths = !fs.read_only.is_empty()
            || !fs.read_write.is_empty()
            || matches!(fs.rootfs, safehouse_policy::Rootfs::Dir(_));
        if names_host_paths && tenant != crate::auth::ADMIN_TENANT {
            return Err(ManagerError::Refused {
                layer: "filesystem.read_only / read_write / rootfs".into(),
                reason: "host paths in a policy are for the admin tenant only; use files upload to move data in".into(),
            });
        }
        // Address rules reaching private, loopback or link-local ranges open the host's own
        // networks (and this daemon's port) to the sandbox: the operator's call, like host paths.
        if tenant != crate::auth::ADMIN_TENANT {
            if let Some(rule) = private_address_rule(&policy) {
                return Err(ManagerError::Refused {
                    layer: "network.allow".into(),
                    reason: format!("{rule:?} reaches private, loopback or link-local addresses, which only the admin tenant may allow; allow public names or addresses"),
                });
            }
            // The host's own addresses (any interface, local routes, this daemon's listen
            // address), public ones included: never a tenant's to open (NET-01).
            if !policy.network.allow.is_empty() {
                if let Some((entry, why)) = host_address_rule(&policy)? {
                    return Err(ManagerError::Refused {
                        layer: "network.allow".into(),
                        reason: format!("{entry:?} reaches this host: {why}; only the admin tenant may open the host's own addresses, and only by exact address; allow names or addresses that are not the host's"),
                    });
                }
            }
        }
        let timeout_s = req
            .timeout_s
            .or(policy.limits.timeout.map(|t| t.0.as_secs().max(1)))
            .unwrap_or(inner.cfg.default_timeout_s);
        if timeout_s == 0 || timeout_s > inner.cfg.max_timeout_s {
            return Err(ManagerError::Invalid(format!("timeout_s must be between 1 and {}", inner.cfg.max_timeout_s)));
        }
        let lifecycle = req.lifecycle.clone().unwrap_or_default();
        crate::persist::check_lifecycle(&lifecycle, inner.cfg.max_timeout_s)?;
        let storage = crate::persist::storage_for(&req)?;
        let mounts = if req.volumes.is_empty() {
            Vec::new()
        } else {
            let (mgr, t, v) = (self.clone(), tenant.to_string(), req.volumes.clone());
            tokio::task::spawn_blocking(move || mgr.volume_mounts(&t, &v)).await.map_err(internal)??
        };
        // An image root: leased (shared with the sandboxes already on it) and pinned by
        // digest in the recorded policy, so a resume, fork or snapshot finds the same
        // layers under its files even if the name moves to a new build.
        let image = match &policy.filesystem.rootfs {
            safehouse_policy::Rootfs::Image(name) => {
                let (mgr, name) = (self.clone(), name.clone());
                let rooted = tokio::task::spawn_blocking(move || mgr.image_root(&name)).await.map_err(internal)??;
                Some(rooted)
            }
            _ => None,
        };
        if let Some(r) = &image {
            policy.filesystem.rootfs = safehouse_policy::Rootfs::Image(r.digest.clone());
        }
        let env: Vec<(String, String)> = req.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let run_req = RunRequest {
            policy: policy.clone(),
            workdir: None,
            mounts,
            env,
            term: None,
            image: image.as_ref().map(|r| r.root.clone()),
            ..Default::default()
        };
        let (id, resumed, layer_exists) = match start {
            None => (ids::sandbox_id(), None, false),
            Some(Start::Resume(rec)) => (rec.id.clone(), Some(*rec), true),
            Some(Start::Forked(id)) => (id, None, true),
        };
        // What a sandbox can set, and the tenant's quotas: before any work (quota.rs).
        let charge = self.admit(tenant, &policy, &id, resumed.is_some())?;
        let disk_layer = match storage {
            Storage::Memory => None,
            Storage::Disk => {
                let cap = policy.limits.disk.map(|d| d.0).unwrap_or(safehouse_policy::model::defaults::DISK);
                let (mgr, id2, snap) = (self.clone(), id.clone(), req.snapshot.clone());
                Some(
                    tokio::task::spawn_blocking(move || mgr.prepare_layer(&id2, cap, snap.as_deref(), layer_exists))
                        .await
                        .map_err(internal)??,
                )
            }
        };
        let result = self
            .launch(
                tenant,
                &req,
                Launch { policy, preset, timeout_s, lifecycle, storage, run_req, id: id.clone(), disk_layer, image },
                resumed.as_ref(),
            )
            .await;
        // Held until it ends; a sandbox that did not start gives its charge back (dropped).
        if result.is_ok() {
            charge.commit();
        }
        // A new sandbox (or fork) that did not start takes its layer along; a paused one
        // that did not resume keeps it.
        if result.is_err() && storage == Storage::Disk && resumed.is_none() {
            let mgr = self.clone();
            let _ = tokio::task::spawn_blocking(move || mgr.remove_layer(&id)).await;
        }
        result
    }

    /// Spawns, connects and records a sandbox (new or resumed).
    async fn launch(
        &self,
        tenant: &str,
        req: &CreateRequest,
        launch: Launch,
        resumed: Option<&SandboxRecord>,
    ) -> Result<SandboxInfo, ManagerError> {
        let inner = &self.inner;
        let Launch { policy, preset, timeout_s, lifecycle, storage, run_req, id, disk_layer, image } = launch;
        let socket_dir = inner.cfg.data_dir.join("sandboxes").join(&id);

        // Host work (plan, cgroup, socket, spawn) is blocking: off the async threads.
        let mgr = self.clone();
        let (id2, dir2) = (id.clone(), socket_dir.clone());
        let spawned = tokio::task::spawn_blocking(move || mgr.spawn_blocking(&id2, &dir2, &run_req, disk_layer))
            .await
            .map_err(internal)??;
        let (spawned, cg, plan_json, zones) = spawned;
        let safehouse_jail::spawn::Spawned { pid, pidfd, gateway_listener, exec_listener, root, tool_table } = spawned;
        let link = match AgentLink::connect(&socket_dir.join("agent.sock"), &id, inner.events.clone()).await {
            Ok(link) => link,
            Err(e) => {
                let _ = safehouse_sys::process::pidfd_send_signal(&pidfd, libc::SIGKILL);
                if let Some(cg) = cg {
                    let _ = tokio::task::spawn_blocking(move || cg.destroy()).await;
                }
                let _ = std::fs::remove_dir_all(&socket_dir);
                return Err(ManagerError::Internal(format!("cannot reach the sandbox's agent: {e}")));
            }
        };
        let gateway = match gateway_listener.map(|fd| self.start_gateway(&id, tenant, &policy, fd)).transpose() {
            Ok(g) => g,
            Err(e) => {
                let _ = safehouse_sys::process::pidfd_send_signal(&pidfd, libc::SIGKILL);
                if let Some(cg) = cg {
                    let _ = tokio::task::spawn_blocking(move || cg.destroy()).await;
                }
                let _ = std::fs::remove_dir_all(&socket_dir);
                return Err(e);
            }
        };
        let record = SandboxRecord {
            id: id.clone(),
            tenant: tenant.to_string(),
            state: SandboxState::Running,
            created_at: resumed.map(|r| r.created_at.clone()).unwrap_or_else(now_rfc3339),
            expires_at: expires(timeout_s),
            metadata: req.metadata.clone(),
            preset: preset.or_else(|| resumed.and_then(|r| r.preset.clone())),
            policy: Some(plan_json),
            agent_pid: Some(pid),
            agent_start_time: start_time(pid),
            cgroup: cg.as_ref().map(|c| c.name().to_string()),
            socket_path: Some(socket_dir.join("agent.sock").display().to_string()),
            error: None,
            key_id: req.created_by.clone(),
        };
        let (uid, gid) = self.sandbox_ids_on(image.as_deref().map(|r| &r.root));
        // tools.allow, expanded as the setup did (one expansion, safehouse_jail::tools); a
        // pattern that matches nothing fails the create (the setup checked it a moment
        // ago, before any command ran).
        let allowed = if policy.tools.allow.is_empty() {
            Ok(None)
        } else {
            let tools = safehouse_policy::tools::ToolsPlan::compile(&policy.tools);
            let root = root.try_clone();
            tokio::task::spawn_blocking(move || {
                let root = root?;
                AllowList::expand(root.as_fd(), &tools).map(Some).map_err(std::io::Error::other)
            })
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)))
        };
        let tools = self.tool_limits(&policy, cg.as_ref().map(|c| c.name()), tool_table);
        let execs =
            match allowed.and_then(|allowed| execwatch::ExecWatch::start(self, &id, exec_listener, allowed, tools)) {
                Ok(w) => w,
                Err(e) => {
                    let _ = safehouse_sys::process::pidfd_send_signal(&pidfd, libc::SIGKILL);
                    if let Some(cg) = cg {
                        let _ = tokio::task::spawn_blocking(move || cg.destroy()).await;
                    }
                    let _ = std::fs::remove_dir_all(&socket_dir);
                    return Err(ManagerError::Internal(format!("cannot start the exec watcher: {e}")));
                }
            };
        let live = Arc::new(Live {
            id: id.clone(),
            tenant: tenant.to_string(),
            pid,
            pidfd: Arc::new(pidfd),
            cgroup: std::sync::Mutex::new(cg),
            link,
            socket_dir,
            uid,
            gid,
            deadline_gen: Default::default(),
            next_cmd: Default::default(),
            gateway,
            execs,
            root: Some(Arc::new(root)),
            interp: Default::default(),
            disk: storage == Storage::Disk,
            lifecycle: lifecycle.clone(),
            last_used: safehouse_sys::monotonic_ns().into(),
            volumes: req.volumes.iter().map(|v| v.name.clone()).collect(),
            image: std::sync::Mutex::new(image),
        });
        let store = inner.store.clone();
        let rec2 = record.clone();
        let persist = PersistRecord {
            id: id.clone(),
            env: req.env.clone(),
            storage,
            lifecycle: lifecycle.clone(),
            timeout_s,
            volumes: req.volumes.clone(),
        };
        let is_resume = resumed.is_some();
        tokio::task::spawn_blocking(move || {
            if is_resume {
                store.update_sandbox(&rec2).map(|_| ())?;
            } else {
                store.insert_sandbox(&rec2)?;
            }
            store.put_persistence(&persist)
        })
        .await
        .map_err(internal)?
        .map_err(internal)?;
        // File events from the start: before the caller can run anything inside.
        inner.events.register(&id, tenant);
        let (mgr, live2) = (self.clone(), live.clone());
        tokio::task::spawn_blocking(move || mgr.watch_files(&live2, &zones)).await.map_err(internal)?;
        inner.live.lock().unwrap_or_else(|e| e.into_inner()).insert(id.clone(), live.clone());
        inner.metrics.counters.created();
        self.arm_deadline(&live, timeout_s);
        self.arm_idle(&live);
        self.watch_agent(&live);
        inner.events.register(&id, tenant);
        if is_resume {
            self.note(&id, "sandbox.resumed", serde_json::json!({ "expires_at": record.expires_at, "pid": pid }));
            return Ok(SandboxInfo { storage: Some(storage), lifecycle: Some(lifecycle), ..record.info() });
        }
        self.note(
            &id,
            "sandbox.created",
            serde_json::json!({
                "preset": record.preset, "expires_at": record.expires_at, "pid": pid,
                "network": !policy.network.allow.is_empty(),
            }),
        );
        if let Some(audit) = self.audit() {
            let text = serde_json::to_string(&policy).unwrap_or_default();
            audit.record(safehouse_audit::Record::policy(&id, &text).tenant(tenant)).await;
        }
        Ok(SandboxInfo { storage: Some(storage), lifecycle: Some(lifecycle), ..record.info() })
    }

    /// Whether this daemon can enforce `tools.limits` (the exec watcher on, nested cgroup
    /// v1 memory limits); else the refusal, with its reason.
    fn check_tool_limits(&self) -> Result<(), ManagerError> {
        let refuse = |reason: String| Err(ManagerError::Refused { layer: "tools.limits".into(), reason });
        if !safehouse_jail::execwatch::enabled() {
            return refuse("per-tool limits in daemon sandboxes are enforced by the exec watcher, which SAFEHOUSE_EXECWATCH=0 turns off on this daemon; remove [tools.limits] or restart the daemon without SAFEHOUSE_EXECWATCH=0".into());
        }
        let cg = &self.inner.cgroups;
        if !cg.writable {
            return refuse(format!(
                "per-tool limits need nested cgroups, which this daemon cannot create ({}); run the daemon as root on a cgroup v1 host, or remove [tools.limits]",
                cg.reason.clone().unwrap_or_else(|| "no writable cgroup hierarchy".into())
            ));
        }
        if cg.version == Some(CgroupVersion::V2) {
            return refuse("per-tool limits need cgroup v1 for now (on cgroup v2 the sandbox's cgroup holds processes, so it cannot hand memory limits to nested cgroups); remove [tools.limits]".into());
        }
        Ok(())
    }

    /// What the exec watcher needs to enforce `policy`'s `tools.limits` (None without).
    fn tool_limits(
        &self,
        policy: &safehouse_policy::Policy,
        cgroup: Option<&str>,
        table: safehouse_jail::toollimit::ToolTable,
    ) -> Option<safehouse_jail::execwatch::ToolLimits> {
        let limits = safehouse_policy::tools::ToolsPlan::compile(&policy.tools).limits;
        if limits.is_empty() {
            return None;
        }
        Some(safehouse_jail::execwatch::ToolLimits {
            table,
            limits,
            support: self.inner.cgroups.clone(),
            // Checked at create: a sandbox with tools.limits has a cgroup. Without one every
            // limited exec is refused (fail closed).
            sandbox_cgroup: cgroup.unwrap_or_default().to_string(),
            adopt: false,
        })
    }

    /// The sandbox user's host identity (files uploaded belong to it).
    /// The host uid and gid of the sandbox's user on `image` (its config's user, shifted
    /// like the store shifts the image's files) or on the host root.
    pub(crate) fn sandbox_ids_on(&self, image: Option<&safehouse_policy::plan::ImageRoot>) -> (u32, u32) {
        match image {
            Some(i) if self.inner.root_mode => {
                (safehouse_policy::plan::IMAGE_HOST_ID_BASE + i.uid, safehouse_policy::plan::IMAGE_HOST_ID_BASE + i.gid)
            }
            _ => self.sandbox_ids(),
        }
    }

    pub(crate) fn sandbox_ids(&self) -> (u32, u32) {
        if self.inner.root_mode {
            (ROOT_MODE_HOST_ID, ROOT_MODE_HOST_ID)
        } else {
            (safehouse_sys::geteuid(), safehouse_sys::getegid())
        }
    }

    /// Serves a new sandbox's egress: its gateway on the listener the sandbox opened.
    fn start_gateway(
        &self,
        id: &str,
        tenant: &str,
        policy: &safehouse_policy::Policy,
        listener: OwnedFd,
    ) -> Result<Arc<safehouse_gateway::Gateway>, ManagerError> {
        let net = safehouse_policy::network::NetPolicy::compile(&policy.network)
            .map_err(|e| ManagerError::Invalid(e.to_string()))?
            .with_host_reach(host_reach(tenant));
        let listener = std::net::TcpListener::from(listener);
        listener.set_nonblocking(true).map_err(internal)?;
        let listener = tokio::net::TcpListener::from_std(listener).map_err(internal)?;
        let mut config = safehouse_gateway::Config::new(net, self.inner.resolver.clone(), host_addrs()?);
        config.on_event = Some(self.gateway_hook(id));
        let gateway = safehouse_gateway::Gateway::new(config);
        tokio::spawn(gateway.clone().serve(listener));
        Ok(gateway)
    }

    /// The gateway's decisions, as events of sandbox `id` (called on the gateway's
    /// connection tasks: `emit` does not block).
    fn gateway_hook(&self, id: &str) -> safehouse_gateway::EventHook {
        let (bus, id) = (self.inner.events.clone(), id.to_string());
        let weak = Arc::downgrade(&self.inner);
        Arc::new(move |e: &safehouse_gateway::Event| {
            use safehouse_gateway::Event as G;
            let (kind, data) = match e {
                G::Allowed { target, rule } => ("net.allowed", serde_json::json!({ "target": target, "rule": rule })),
                G::Denied { target, rule, reason } => {
                    // A denial is a policy violation ([control] kill_after_violations).
                    if let Some(inner) = weak.upgrade() {
                        Manager { inner }.note_violation(&id, &format!("net.denied {target}"));
                    }
                    ("net.denied", serde_json::json!({ "target": target, "rule": rule, "reason": reason }))
                }
                G::BudgetExceeded { limit } => {
                    // Once per gateway: never lost to the flood that may have caused it.
                    bus.emit_unlimited(&id, "net.budget_exceeded", serde_json::json!({ "limit": limit }));
                    return;
                }
            };
            bus.emit(&id, kind, data);
        })
    }

    /// After a daemon restart: the gateway's listener lived in the old daemon and is gone.
    /// Opens a new one on 127.0.0.1:GATEWAY_PORT in the sandbox's network namespace (the
    /// agent's, checked against its start time) and serves it. Fails closed: if sandboxed
    /// code took the port meanwhile, the sandbox stays without egress.
    async fn restore_gateway(
        &self,
        rec: &SandboxRecord,
        pid: i32,
    ) -> Result<Option<Arc<safehouse_gateway::Gateway>>, String> {
        let Some(policy) = rec.policy.clone() else { return Ok(None) };
        let policy: safehouse_policy::Policy =
            serde_json::from_value(policy).map_err(|e| format!("recorded policy unreadable: {e}"))?;
        if policy.network.allow.is_empty() {
            return Ok(None);
        }
        let expected = rec.agent_start_time;
        let listener = tokio::task::spawn_blocking(move || -> Result<OwnedFd, String> {
            let ns = std::fs::File::open(format!("/proc/{pid}/ns/net")).map_err(|e| format!("open netns: {e}"))?;
            if expected.is_some() && start_time(pid) != expected {
                return Err("agent pid was recycled".into());
            }
            let home = std::fs::File::open("/proc/thread-self/ns/net").map_err(|e| format!("open own netns: {e}"))?;
            use std::os::fd::AsFd;
            let sock = safehouse_sys::net::tcp_socket_in_netns(ns.as_fd(), home.as_fd(), libc::AF_INET)
                .map_err(|e| format!("socket in the sandbox's netns: {e}"))?;
            safehouse_sys::net::listen_on_loopback(&sock, plan::GATEWAY_PORT, 4096)
                .map_err(|e| format!("listen on 127.0.0.1:{}: {e}", plan::GATEWAY_PORT))?;
            Ok(sock)
        })
        .await
        .map_err(|e| e.to_string())??;
        self.start_gateway(&rec.id, &rec.tenant, &policy, listener).map(Some).map_err(|e| e.to_string())
    }

    /// Plan, cgroup, agent socket and spawn: everything that blocks.
    #[allow(clippy::type_complexity)]
    fn spawn_blocking(
        &self,
        id: &str,
        socket_dir: &std::path::Path,
        run_req: &RunRequest,
        disk_layer: Option<String>,
    ) -> Result<
        (safehouse_jail::spawn::Spawned, Option<Box<dyn cgroup::Cgroup>>, serde_json::Value, Vec<String>),
        ManagerError,
    > {
        let inner = &self.inner;
        let view = safehouse_jail::host::host_view(run_req);
        let mut plan = plan::compile(run_req, &view).map_err(|e| ManagerError::Invalid(e.to_string()))?;
        plan.disk_layer = disk_layer;
        let plan_json = serde_json::to_value(&run_req.policy).map_err(internal)?;
        // The cgroup: every limit enforced, or refused when asked for and impossible.
        let l = &plan.limits;
        let limits = cgroup::Limits {
            memory_bytes: Some(l.memory.value),
            pids: Some(l.pids.value),
            cpus: l.cpus.map(|c| c.value),
            only_limited: false,
        };
        let cg = if inner.cgroups.writable {
            Some(cgroup::create(&inner.cgroups, id, &limits).map_err(|e| ManagerError::Internal(e.to_string()))?)
        } else {
            if l.memory.required || l.pids.required || l.cpus.is_some() {
                return Err(ManagerError::Refused {
                    layer: "resource limits".into(),
                    reason: format!(
                        "no writable cgroup hierarchy: {}",
                        inner.cgroups.reason.clone().unwrap_or_default()
                    ),
                });
            }
            None
        };
        let cleanup = |cg: Option<Box<dyn cgroup::Cgroup>>| {
            if let Some(cg) = cg {
                let _ = cg.destroy();
            }
            let _ = std::fs::remove_dir_all(socket_dir);
        };
        let handle = match &cg {
            None => CgroupHandle::None,
            Some(c) if c.version() == CgroupVersion::V2 => match c.open_unified_dir() {
                Ok(Some(fd)) => CgroupHandle::V2Dir(fd),
                _ => {
                    cleanup(cg);
                    return Err(ManagerError::Internal("cannot open the sandbox's cgroup".into()));
                }
            },
            Some(c) => {
                let mut fds = Vec::new();
                for dir in c.dirs() {
                    match std::fs::OpenOptions::new().write(true).open(dir.join("tasks")) {
                        Ok(f) => fds.push(OwnedFd::from(f)),
                        Err(e) => {
                            cleanup(cg);
                            return Err(internal(e));
                        }
                    }
                }
                CgroupHandle::V1Tasks(fds)
            }
        };
        // The agent's socket: in a root-only directory; the fd goes into the sandbox.
        let listener = (|| -> std::io::Result<OwnedFd> {
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(socket_dir)?;
            let l = std::os::unix::net::UnixListener::bind(socket_dir.join("agent.sock"))?;
            Ok(OwnedFd::from(l))
        })();
        let listener = match listener {
            Ok(l) => l,
            Err(e) => {
                cleanup(cg);
                return Err(ManagerError::Internal(format!("agent socket: {e}")));
            }
        };
        // Every exec observed: the socket the exec listener's keeper serves a restarted
        // daemon on, next to the agent's (root-only directory).
        let exec_keeper = if safehouse_jail::execwatch::enabled() {
            match std::os::unix::net::UnixListener::bind(socket_dir.join("exec.sock")) {
                Ok(l) => Some(OwnedFd::from(l)),
                Err(e) => {
                    cleanup(cg);
                    return Err(ManagerError::Internal(format!("exec keeper socket: {e}")));
                }
            }
        } else {
            None
        };
        if inner.zygotes.is_empty() {
            cleanup(cg);
            return Err(ManagerError::Capacity("this daemon has no spawner".into()));
        }
        let which = inner.next_zygote.fetch_add(1, Ordering::Relaxed) % inner.zygotes.len();
        let spawned = {
            let zygote = inner.zygotes[which].lock().unwrap_or_else(|e| e.into_inner());
            zygote.spawn(&plan, listener, handle, exec_keeper)
        };
        match spawned {
            Ok(s) => Ok((s, cg, plan_json, writable_zones(&plan.ops))),
            Err(e) => {
                cleanup(cg);
                Err(jail_error(e))
            }
        }
    }

    pub async fn list(&self, tenant: &str, filter: &ListFilter) -> Result<Vec<SandboxInfo>, ManagerError> {
        let store = self.inner.store.clone();
        let (tenant, filter) = (tenant.to_string(), filter.clone());
        let recs = tokio::task::spawn_blocking(move || store.list_sandboxes(&tenant, &filter))
            .await
            .map_err(internal)?
            .map_err(internal)?;
        Ok(recs.iter().map(|r| r.info()).collect())
    }

    pub async fn info(&self, tenant: &str, id: &str) -> Result<SandboxInfo, ManagerError> {
        if !ids::is_sandbox_id(id) {
            return Err(ManagerError::NotFound);
        }
        let store = self.inner.store.clone();
        let (tenant, id) = (tenant.to_string(), id.to_string());
        let network = self.live(&tenant, &id).ok().and_then(|l| l.gateway.as_ref().map(|g| g.stats()));
        match tokio::task::spawn_blocking(move || store.get_sandbox(&tenant, &id)).await.map_err(internal)? {
            Ok(Some(rec)) => Ok(self.with_persistence(SandboxInfo { network, ..rec.info() }).await),
            Ok(None) => Err(ManagerError::NotFound),
            Err(e) => Err(internal(e)),
        }
    }

    /// The sandbox's effective policy as the daemon recorded it at creation (JSON); `None`
    /// for a sandbox recorded without one.
    pub async fn policy(&self, tenant: &str, id: &str) -> Result<Option<serde_json::Value>, ManagerError> {
        if !ids::is_sandbox_id(id) {
            return Err(ManagerError::NotFound);
        }
        let store = self.inner.store.clone();
        let (tenant, id) = (tenant.to_string(), id.to_string());
        match tokio::task::spawn_blocking(move || store.get_sandbox(&tenant, &id)).await.map_err(internal)? {
            Ok(Some(rec)) => Ok(rec.policy),
            Ok(None) => Err(ManagerError::NotFound),
            Err(e) => Err(internal(e)),
        }
    }

    /// `question` about a recorded policy, answered for the sandbox as this host builds it
    /// (what `safehouse policy explain` answers for a file).
    pub async fn explain(
        &self,
        policy: safehouse_policy::Policy,
        question: safehouse_policy::explain::Question,
    ) -> Result<Result<safehouse_policy::explain::Answer, safehouse_policy::explain::ExplainError>, ManagerError> {
        tokio::task::spawn_blocking(move || {
            let request = safehouse_policy::plan::RunRequest { policy, ..Default::default() };
            let host = safehouse_jail::host::host_view(&request);
            safehouse_policy::explain::explain(&request.policy, &host, &question)
        })
        .await
        .map_err(internal)
    }

    /// Idempotent: killing a killed sandbox succeeds.
    pub async fn kill(&self, tenant: &str, id: &str) -> Result<(), ManagerError> {
        match self.live(tenant, id) {
            Ok(live) => self.destroy(&live, SandboxState::Killed, None).await,
            Err(_) => {
                let info = self.info(tenant, id).await?;
                if info.state == SandboxState::Paused {
                    self.kill_paused(&info.id, &info.tenant).await?;
                }
                Ok(())
            }
        }
    }

    /// Tears a sandbox down: freeze and kill everything in its cgroup (or its PID 1, which
    /// takes its pid namespace along), remove the cgroup and the socket, record the state.
    pub(crate) async fn destroy(
        &self,
        live: &Arc<Live>,
        state: SandboxState,
        error: Option<String>,
    ) -> Result<(), ManagerError> {
        // Only this incarnation: a task of an earlier one (before a pause and resume, the
        // same id) must not take the running sandbox out of the map.
        let removed = {
            let mut map = self.inner.live.lock().unwrap_or_else(|e| e.into_inner());
            match map.get(&live.id) {
                Some(current) if Arc::ptr_eq(current, live) => map.remove(&live.id).is_some(),
                _ => false,
            }
        };
        if !removed {
            return Ok(()); // someone else is destroying it, or it is an earlier incarnation
        }
        self.quota_ended(&live.id, state);
        if state != SandboxState::Paused {
            self.inner.metrics.counters.ended(state);
        }
        live.deadline_gen.fetch_add(1, Ordering::Relaxed);
        // Cut the network first: nothing leaves while the rest is torn down.
        if let Some(gw) = &live.gateway {
            gw.shutdown();
        }
        live.link.close();
        let live2 = live.clone();
        let store = self.inner.store.clone();
        let mgr = self.clone();
        let ended = tokio::task::spawn_blocking(move || {
            let cg = live2.cgroup.lock().unwrap_or_else(|e| e.into_inner()).take();
            match cg {
                Some(cg) => {
                    let _ = cg.kill_all();
                    let _ = safehouse_sys::process::pidfd_send_signal(&live2.pidfd, libc::SIGKILL);
                    // The watcher removes the tool cgroups (tools.limits) nested in the
                    // sandbox's: stopped first, so the sandbox's can go.
                    live2.execs.stop();
                    let _ = cg.destroy();
                }
                None => {
                    let _ = safehouse_sys::process::pidfd_send_signal(&live2.pidfd, libc::SIGKILL);
                    live2.execs.stop();
                }
            }
            mgr.unwatch_files(&live2.id);
            // Wait (bounded) for PID 1 to be gone, so nothing of the sandbox runs on return.
            for _ in 0..200 {
                if safehouse_sys::process::poll_readable(&[live2.pidfd.as_raw_fd()], 10).map(|r| r[0]).unwrap_or(true) {
                    break;
                }
            }
            let _ = std::fs::remove_dir_all(&live2.socket_dir);
            live2.release_image();
            // Its layer on disk goes with it, unless it is paused (the layer is what stays).
            if live2.disk && state != SandboxState::Paused {
                mgr.remove_layer(&live2.id);
            }
            let r = store.set_sandbox_state(&live2.id, state, error.as_deref());
            (r, error)
        })
        .await
        .map_err(internal)?;
        // Said once nothing of the sandbox runs any more.
        let (recorded, error) = ended;
        let kind = match state {
            SandboxState::Expired => "sandbox.expired",
            SandboxState::Failed => "sandbox.failed",
            SandboxState::Paused => "sandbox.paused",
            _ => "sandbox.killed",
        };
        self.note_ended(&live.id, kind, error.as_deref());
        recorded.map_err(internal)?;
        Ok(())
    }

    pub async fn set_timeout(&self, tenant: &str, id: &str, timeout_s: u64) -> Result<SandboxInfo, ManagerError> {
        if timeout_s == 0 || timeout_s > self.inner.cfg.max_timeout_s {
            return Err(ManagerError::Invalid(format!(
                "timeout_s must be between 1 and {}",
                self.inner.cfg.max_timeout_s
            )));
        }
        let live = self.present(tenant, id)?;
        let at = expires(timeout_s);
        let store = self.inner.store.clone();
        let (id2, at2) = (id.to_string(), at.clone());
        tokio::task::spawn_blocking(move || store.set_sandbox_expiry(&id2, &at2))
            .await
            .map_err(internal)?
            .map_err(internal)?;
        self.arm_deadline(&live, timeout_s);
        self.info(tenant, id).await
    }

    /// Arms the sandbox's deadline `timeout_s` from now (the one before goes stale). The
    /// waiting task holds the sandbox weakly: a sandbox killed or paused before its
    /// deadline gives back its descriptors and memory at once, not when the deadline
    /// would have come (it held them until then: 3 descriptors per ended sandbox).
    fn arm_deadline(&self, live: &Arc<Live>, timeout_s: u64) {
        let generation = live.deadline_gen.fetch_add(1, Ordering::Relaxed) + 1;
        let (mgr, weak) = (self.clone(), Arc::downgrade(live));
        // Not aborted when a new deadline replaces it: it may be tearing the sandbox down
        // already (a stale one finds its generation old and does nothing).
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(timeout_s)).await;
            let Some(live) = weak.upgrade() else { return };
            if live.deadline_gen.load(Ordering::Relaxed) == generation {
                let _ = match live.lifecycle.on_timeout {
                    OnTimeout::Pause => mgr.pause_live(&live).await,
                    OnTimeout::Kill => mgr.destroy(&live, SandboxState::Expired, None).await,
                };
            }
        });
    }

    /// Notices the agent's death (killed from inside, crashed, OOM): the sandbox is marked
    /// failed and cleaned up.
    fn watch_agent(&self, live: &Arc<Live>) {
        let (mgr, live) = (self.clone(), live.clone());
        tokio::spawn(async move {
            let fd = match live.pidfd.try_clone() {
                Ok(fd) => fd,
                Err(_) => return,
            };
            // The AsyncFd owns the pidfd (an OwnedFd), so nothing can close it underneath.
            #[allow(deprecated)]
            let Ok(async_fd) = tokio::io::unix::AsyncFd::new(fd) else {
                return;
            };
            if async_fd.readable().await.is_ok() {
                let still_live = mgr.is_this_live(&live);
                if still_live {
                    let _ = mgr.destroy(&live, SandboxState::Failed, Some("the sandbox's agent exited".into())).await;
                }
            }
        });
    }

    /// The sandbox's root for file operations: `/proc/<agent>/root`, opened while the
    /// agent is verified alive (its pidfd), so a recycled pid can never be followed.
    pub async fn root(&self, tenant: &str, id: &str) -> Result<SandboxRoot, ManagerError> {
        let live = self.present_or_resume(tenant, id).await?;
        let dir = live.root_dir().map_err(|e| ManagerError::NotRunning(format!("unreachable ({e})")))?;
        Ok(SandboxRoot { dir, uid: live.uid, gid: live.gid })
    }

    /// After a daemon restart: re-attach every sandbox the store says is running whose
    /// agent is still the same process; clean up the others.
    pub async fn recover(&self) -> Result<(usize, usize), ManagerError> {
        let store = self.inner.store.clone();
        let recs =
            tokio::task::spawn_blocking(move || store.list_running()).await.map_err(internal)?.map_err(internal)?;
        let (mut attached, mut failed) = (0, 0);
        for rec in recs {
            match self.reattach(&rec).await {
                Ok(()) => attached += 1,
                Err(reason) => {
                    failed += 1;
                    self.cleanup_dead(&rec, &reason).await;
                }
            }
        }
        // Paused sandboxes keep their layers on disk: their disk counts against their tenants.
        let store = self.inner.store.clone();
        let paused = tokio::task::spawn_blocking(move || -> Result<Vec<SandboxRecord>, crate::store::StoreError> {
            let mut recs = Vec::new();
            for id in store.list_paused()? {
                recs.extend(store.get_sandbox(crate::auth::ADMIN_TENANT, &id)?);
            }
            Ok(recs)
        })
        .await
        .map_err(internal)?
        .map_err(internal)?;
        for rec in &paused {
            self.quota_adopt(rec, false);
        }
        // What a cleanup cut short by the daemon's end left behind (kill-all's is deferred).
        let swept = self.sweep_leftovers().await;
        if swept > 0 {
            eprintln!("safehouse: removed the leftovers of {swept} stopped sandbox(es)");
        }
        let orphans = self.sweep_pool().await;
        if orphans > 0 {
            eprintln!(
                "safehouse: removed {orphans} layer(s), snapshot(s) or volume(s) of the storage pool no record names"
            );
        }
        Ok((attached, failed))
    }

    async fn reattach(&self, rec: &SandboxRecord) -> Result<(), String> {
        let pid = rec.agent_pid.ok_or("no agent pid recorded")?;
        let pidfd = safehouse_sys::process::pidfd_open(pid).map_err(|e| format!("agent gone ({e})"))?;
        if rec.agent_start_time.is_some() && start_time(pid) != rec.agent_start_time {
            return Err("agent pid was recycled".into());
        }
        let socket = rec.socket_path.clone().ok_or("no socket recorded")?;
        let link = AgentLink::connect(std::path::Path::new(&socket), &rec.id, self.inner.events.clone())
            .await
            .map_err(|e| format!("agent unreachable ({e})"))?;
        let cg = match &rec.cgroup {
            Some(name) => Some(cgroup::open(&self.inner.cgroups, name).map_err(|e| e.to_string())?),
            None => None,
        };
        let policy = rec.policy.clone().and_then(|p| serde_json::from_value::<safehouse_policy::Policy>(p).ok());
        // Its image leased again (the layers are under its mounts); the lease is what keeps
        // garbage collection off them.
        let image = match policy.as_ref().map(|p| &p.filesystem.rootfs) {
            Some(safehouse_policy::Rootfs::Image(name)) => {
                let (mgr, name) = (self.clone(), name.clone());
                match tokio::task::spawn_blocking(move || mgr.image_root(&name)).await {
                    Ok(Ok(i)) => Some(i),
                    Ok(Err(e)) => {
                        eprintln!("safehouse: sandbox {}: its image is not leased again ({e})", rec.id);
                        None
                    }
                    Err(e) => return Err(e.to_string()),
                }
            }
            _ => None,
        };
        let (uid, gid) = self.sandbox_ids_on(image.as_deref().map(|i| &i.root));
        let gateway = match self.restore_gateway(rec, pid).await {
            Ok(g) => g,
            Err(reason) => {
                eprintln!("safehouse: sandbox {}: egress not restored ({reason}); it keeps loopback only", rec.id);
                None
            }
        };
        let socket_dir = std::path::Path::new(&socket).parent().map(|p| p.to_path_buf()).unwrap_or_default();
        let tools = policy.as_ref().and_then(|p| self.tool_limits(p, rec.cgroup.as_deref(), Default::default()));
        let allowed = policy.as_ref().filter(|p| !p.tools.allow.is_empty()).and_then(|p| {
            let tools = safehouse_policy::tools::ToolsPlan::compile(&p.tools);
            let expanded = std::fs::File::open(format!("/proc/{pid}/root"))
                .map_err(|e| e.to_string())
                .and_then(|root| AllowList::expand(root.as_fd(), &tools).map_err(|e| e.to_string()));
            expanded
                .map_err(|e| {
                    eprintln!("safehouse: sandbox {}: execs outside tools.allow are not reported ({e})", rec.id)
                })
                .ok()
        });
        let execs = execwatch::ExecWatch::recover(self, &rec.id, &socket_dir, allowed, tools);
        let (store, id) = (self.inner.store.clone(), rec.id.clone());
        let persist =
            tokio::task::spawn_blocking(move || store.get_persistence(&id)).await.ok().and_then(|r| r.ok()).flatten();
        let live = Arc::new(Live {
            id: rec.id.clone(),
            tenant: rec.tenant.clone(),
            pid,
            pidfd: Arc::new(pidfd),
            cgroup: std::sync::Mutex::new(cg),
            link,
            socket_dir,
            uid,
            gid,
            deadline_gen: Default::default(),
            next_cmd: Default::default(),
            gateway,
            execs,
            root: None,
            interp: Default::default(),
            disk: persist.as_ref().is_some_and(|p| p.storage == Storage::Disk),
            lifecycle: persist.as_ref().map(|p| p.lifecycle.clone()).unwrap_or_default(),
            last_used: safehouse_sys::monotonic_ns().into(),
            volumes: persist.as_ref().map(|p| p.volumes.iter().map(|v| v.name.clone()).collect()).unwrap_or_default(),
            image: std::sync::Mutex::new(image),
        });
        // A frozen sandbox stays frozen across the restart (its agent accepted the connection
        // into its backlog and answers once thawed).
        self.inner.control.set_frozen(&rec.id, rec.state == SandboxState::Frozen);
        self.inner.events.register(&rec.id, &rec.tenant);
        let (mgr, live2, policy) = (self.clone(), live.clone(), rec.policy.clone());
        let _ = tokio::task::spawn_blocking(move || mgr.watch_files(&live2, &zones_of_policy(policy))).await;
        self.quota_adopt(rec, true);
        self.inner.live.lock().unwrap_or_else(|e| e.into_inner()).insert(rec.id.clone(), live.clone());
        self.note(&rec.id, "sandbox.recovered", serde_json::json!({ "pid": pid, "network": live.gateway.is_some() }));
        let left = seconds_until(&rec.expires_at);
        if left == 0 {
            let _ = self.destroy(&live, SandboxState::Expired, None).await;
        } else {
            self.arm_deadline(&live, left);
            self.arm_idle(&live);
            self.watch_agent(&live);
        }
        Ok(())
    }

    async fn cleanup_dead(&self, rec: &SandboxRecord, reason: &str) {
        self.inner.events.register(&rec.id, &rec.tenant);
        let error = format!("lost while the daemon was down: {reason}");
        self.note(&rec.id, "sandbox.failed", serde_json::json!({ "error": error }));
        self.inner.events.retire(&rec.id);
        let (cgroups, store, rec, reason) =
            (self.inner.cgroups.clone(), self.inner.store.clone(), rec.clone(), reason.to_string());
        let _ = tokio::task::spawn_blocking(move || {
            // An agent still alive but unreachable is killed (only if it is the same process).
            if let Some(pid) = rec.agent_pid {
                if let Ok(pidfd) = safehouse_sys::process::pidfd_open(pid) {
                    if rec.agent_start_time.is_some() && start_time(pid) == rec.agent_start_time {
                        let _ = safehouse_sys::process::pidfd_send_signal(&pidfd, libc::SIGKILL);
                    }
                }
            }
            if let Some(name) = &rec.cgroup {
                if let Ok(cg) = cgroup::open(&cgroups, name) {
                    let _ = cg.kill_all();
                    let _ = cg.destroy();
                }
            }
            if let Some(sock) = &rec.socket_path {
                if let Some(dir) = std::path::Path::new(sock).parent() {
                    let _ = std::fs::remove_dir_all(dir);
                }
            }
            store.set_sandbox_state(
                &rec.id,
                SandboxState::Failed,
                Some(&format!("lost while the daemon was down: {reason}")),
            )
        })
        .await;
    }
}

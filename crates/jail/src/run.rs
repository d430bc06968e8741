//! The host side of `safehouse run`: check the host can enforce the plan, create the
//! cgroup, clone the sandbox into its namespaces, write its id maps, release it, relay
//! signals and the terminal, enforce the timeout, and collect the result.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use serde::Serialize;

use safehouse_policy::landlock::{scopes_for_abi, MIN_ABI};
use safehouse_policy::plan::{self, MountOp, Plan, RunRequest};
use safehouse_sys::mount as m;
use safehouse_sys::process::{self, Forked};

use crate::cgroup::{self, Cgroup};
use crate::error::JailError;
use crate::host::{self, Features};
use crate::report::Report;
use crate::setup::{self, ChildContext};

/// In root mode, sandboxed code runs as this host uid and gid (mapped to 1000 inside).
/// Nothing on a host should own files under it; writable binds are idmapped to it.
pub const ROOT_MODE_HOST_ID: u32 = 1_000_000_000;

/// The command and how to run it.
pub struct RunSpec {
    pub request: RunRequest,
    pub argv: Vec<String>,
    pub tty: bool,
    /// Required when the policy allows egress: runs the capability gateway on the
    /// listener the sandbox opens (the jail itself knows nothing of proxies).
    pub gateway: Option<Box<dyn EgressGateway>>,
    /// A host directory holding the writable layer on disk (a layer of the storage pool),
    /// in place of the tmpfs; see `Plan::disk_layer`.
    pub disk_layer: Option<String>,
}

/// The host side of a sandbox's egress.
pub trait EgressGateway {
    /// Starts serving on `listener`, a socket listening on 127.0.0.1:GATEWAY_PORT inside
    /// the sandbox's network namespace. Returns once it accepts connections.
    fn start(&mut self, listener: std::net::TcpListener) -> Result<(), String>;
    /// Stops it (the sandbox is gone) and returns its record for the result.
    fn finish(&mut self) -> Option<serde_json::Value>;
}

/// Receives the gateway's listener from a sandbox whose plan has `gateway` set.
pub(crate) fn receive_gateway_listener(sync: &OwnedFd) -> Result<std::net::TcpListener, JailError> {
    receive_from_sandbox(sync, b'g', "the gateway's listener").map(std::net::TcpListener::from)
}

/// One descriptor the sandbox's setup hands to the host side, tagged `tag`.
fn receive_from_sandbox(sync: &OwnedFd, tag: u8, what: &str) -> Result<OwnedFd, JailError> {
    let mut got = [0u8; 8];
    match safehouse_sys::unix::recv_with_fds(sync, &mut got) {
        Ok((1, mut fds)) if got[0] == tag && fds.len() == 1 => Ok(fds.remove(0)),
        Ok((0, _)) => Err(JailError::Setup(format!("the sandbox failed before sending {what}"))),
        Ok(_) => Err(JailError::Setup(format!("the sandbox sent something other than {what}"))),
        Err(e) => Err(JailError::host(format!("receive {what}"), e)),
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Unenforced {
    pub limit: String,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Layers {
    pub namespaces: Vec<&'static str>,
    pub seccomp: bool,
    pub landlock_abi: u32,
    pub landlock_scoping: bool,
    pub cgroup: Option<String>,
    pub no_new_privs: bool,
    pub capabilities: &'static str,
}

/// The result record of one run (`--json`).
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub sandbox_id: String,
    pub exit_code: i32,
    pub signal: Option<i32>,
    pub timed_out: bool,
    pub oom_killed: bool,
    pub wall_ms: u64,
    pub cpu_ms: u64,
    pub peak_memory_bytes: Option<u64>,
    pub mode: &'static str,
    pub layers: Layers,
    pub unenforced: Vec<Unenforced>,
    /// Set when the command could not be executed (not found, not executable).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exec_error: Option<String>,
    /// With egress: the gateway's record (requests, denials, bytes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<serde_json::Value>,
    /// Runs of tools with `tools.limits` and whether a limit killed them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_runs: Vec<crate::tools::ToolEvent>,
}

const NAMESPACES: [&str; 7] = ["user", "mount", "pid", "net", "ipc", "uts", "cgroup"];

fn random_id() -> String {
    let mut b = [0u8; 8];
    if File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b)).is_err() {
        b = safehouse_sys::monotonic_ns().to_le_bytes();
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Refuses up front what this host cannot enforce.
fn preflight(f: &Features) -> Result<u32, JailError> {
    if let Err(reason) = &f.user_namespaces {
        return Err(JailError::LayerUnavailable { layer: "user namespaces".into(), reason: reason.clone() });
    }
    if let Err(reason) = &f.seccomp {
        return Err(JailError::LayerUnavailable { layer: "seccomp".into(), reason: reason.clone() });
    }
    let abi =
        f.landlock_abi.clone().map_err(|reason| JailError::LayerUnavailable { layer: "landlock".into(), reason })?;
    if abi < MIN_ABI {
        return Err(JailError::LayerUnavailable { layer: "landlock".into(), reason: format!("ABI {abi} < {MIN_ABI}") });
    }
    Ok(abi)
}

/// The cgroup limits to create (if this host lets us) and the limits that go unenforced
/// without a cgroup.
type CgroupPlan = (Option<cgroup::Limits>, Vec<Unenforced>);

/// Decides whether the sandbox gets a cgroup; without one, lists what goes unenforced
/// and refuses if any of it was explicitly asked for.
fn plan_cgroup(f: &Features, plan: &Plan) -> Result<CgroupPlan, JailError> {
    let l = &plan.limits;
    let limits = cgroup::Limits {
        memory_bytes: Some(l.memory.value),
        pids: Some(l.pids.value),
        cpus: l.cpus.map(|c| c.value),
        only_limited: true,
    };
    let tool_limits = !plan.tools.limits.is_empty();
    if tool_limits && f.cgroups.writable && f.cgroups.version == Some(cgroup::CgroupVersion::V2) {
        return Err(JailError::LayerUnavailable {
            layer: "tools.limits".into(),
            reason: "per-tool limits need cgroup v1 for now (on cgroup v2 the sandbox's cgroup holds processes, so it cannot hand memory limits to nested cgroups); remove [tools.limits]".into(),
        });
    }
    if f.cgroups.writable {
        return Ok((Some(limits), Vec::new()));
    }
    let reason = if f.root {
        "no usable cgroup hierarchy on this host".to_string()
    } else {
        format!(
            "rootless mode cannot create cgroups here ({}); run as root or delegate a cgroup v2 subtree to uid {}",
            f.cgroup_summary, f.uid
        )
    };
    let mut unenforced = vec![
        Unenforced { limit: "memory".into(), reason: reason.clone() },
        Unenforced { limit: "pids".into(), reason: reason.clone() },
    ];
    if let Some(c) = l.cpus {
        unenforced.push(Unenforced { limit: "cpus".into(), reason: reason.clone() });
        if c.required {
            return Err(JailError::LayerUnavailable { layer: "the cpus limit".into(), reason });
        }
    }
    if tool_limits {
        return Err(JailError::LayerUnavailable {
            layer: "tools.limits (per-tool limits need root on a cgroup v1 host for now)".into(),
            reason,
        });
    }
    if l.memory.required {
        return Err(JailError::LayerUnavailable { layer: "the memory limit".into(), reason });
    }
    if l.pids.required {
        return Err(JailError::LayerUnavailable { layer: "the pids limit".into(), reason });
    }
    Ok((None, unenforced))
}

/// What the host side readies before cloning a sandbox (`run` and the daemon's spawner).
pub(crate) struct HostSide {
    /// Root mode: bind sources opened with the host's view and privileges.
    pub prepared: crate::mounts::Prepared,
    /// `--rootfs DIR` or an image's layers (bottom first): opened here so the sandbox
    /// never resolves their paths.
    pub lower_fds: Vec<OwnedFd>,
    /// The plan's `disk_layer`, cloned as a detached mount (root mode only).
    pub layer_fd: Option<OwnedFd>,
    /// (sandbox end, host end) of the go-message socket.
    pub sync: (OwnedFd, OwnedFd),
    /// (host end, sandbox end) of the status-record pipe.
    pub status: (OwnedFd, OwnedFd),
}

impl HostSide {
    pub(crate) fn prepare(plan: &Plan, root: bool) -> Result<HostSide, JailError> {
        let prepared = if root { prepare_binds(plan)? } else { Default::default() };
        // Root mode: the sandbox (an unprivileged host id) cannot walk the store's paths,
        // and overlayfs takes a lower layer only from the mounter's own mount namespace:
        // each layer is cloned here as a detached mount, which the sandbox attaches in
        // its namespace. Rootless: the sandbox walks the caller's own paths itself.
        let lower_dirs: Vec<&String> = match &plan.root {
            plan::RootSpec::Overlay { lower, .. } => vec![lower],
            plan::RootSpec::Image { layers, .. } => layers.iter().collect(),
            plan::RootSpec::Tmpfs { .. } => Vec::new(),
        };
        let mut lower_fds = Vec::new();
        if root {
            for dir in lower_dirs {
                lower_fds
                    .push(m::clone_tree(dir, false).map_err(|e| JailError::host(format!("open the layer {dir}"), e))?);
            }
        }
        let layer_fd = plan.disk_layer.as_deref().map(|dir| disk_layer(plan, dir, root)).transpose()?;
        let sync = safehouse_sys::unix::seqpacket_pair().map_err(|e| JailError::host("socketpair", e))?;
        let status = safehouse_sys::fs::pipe().map_err(|e| JailError::host("pipe", e))?;
        Ok(HostSide { prepared, lower_fds, layer_fd, sync, status })
    }
}

/// The namespaces every sandbox gets at clone (the cgroup namespace comes later, once the
/// sandbox is in its cgroup).
pub(crate) const SANDBOX_NAMESPACES: libc::c_int = libc::CLONE_NEWUSER
    | libc::CLONE_NEWNS
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUTS;

/// The sandbox's uid and gid maps, as written to `/proc/PID/{uid,gid}_map`.
pub(crate) fn id_maps(root: bool, plan: &Plan) -> (String, String) {
    match (plan.ids, root) {
        // An image root: its 65536 ids, shifted like the store shifts its files' owners.
        (plan::IdMapping::ImageRange, true) => {
            let m = format!("0 {} {}\n", plan::IMAGE_HOST_ID_BASE, plan::IMAGE_ID_RANGE);
            (m.clone(), m)
        }
        // The sandbox user to ROOT_MODE_HOST_ID as root, to the caller rootless.
        (_, true) => (format!("{} {ROOT_MODE_HOST_ID} 1\n", plan.uid), format!("{} {ROOT_MODE_HOST_ID} 1\n", plan.gid)),
        (_, false) => (
            format!("{} {} 1\n", plan.uid, safehouse_sys::geteuid()),
            format!("{} {} 1\n", plan.gid, safehouse_sys::getegid()),
        ),
    }
}

/// Maps the sandbox's ids to their host identities (`id_maps`); rootless, with
/// setgroups denied.
pub(crate) fn write_id_maps(pid: i32, root: bool, plan: &Plan) -> Result<(), JailError> {
    if !root {
        write_proc(pid, "setgroups", "deny")?;
    }
    let (uid_map, gid_map) = id_maps(root, plan);
    write_proc(pid, "uid_map", &uid_map)?;
    write_proc(pid, "gid_map", &gid_map)
}

pub(crate) fn write_proc(pid: i32, file: &str, contents: &str) -> Result<(), JailError> {
    std::fs::write(format!("/proc/{pid}/{file}"), contents)
        .map_err(|e| JailError::host(format!("write /proc/{pid}/{file}"), e))
}

/// A user namespace whose mapping makes `owner` (uid, gid) on disk appear as `host`, the
/// sandbox user's host identity: used to idmap writable binds in root mode.
fn idmap_userns(owner: (u32, u32), host: (u32, u32)) -> Result<OwnedFd, JailError> {
    let (r, w) = safehouse_sys::fs::pipe().map_err(|e| JailError::host("pipe", e))?;
    match process::clone_process(libc::CLONE_NEWUSER, None).map_err(|e| JailError::host("clone idmap helper", e))? {
        Forked::Child => {
            drop(w);
            let mut b = [0u8; 1];
            let _ = File::from(r).read(&mut b);
            process::exit_now(0);
        }
        Forked::Parent { pid, .. } => {
            drop(r);
            let result = (|| {
                write_proc(pid, "uid_map", &format!("{} {} 1\n", owner.0, host.0))?;
                write_proc(pid, "gid_map", &format!("{} {} 1\n", owner.1, host.1))?;
                File::open(format!("/proc/{pid}/ns/user"))
                    .map(OwnedFd::from)
                    .map_err(|e| JailError::host("open idmap namespace", e))
            })();
            drop(w);
            let _ = process::wait4(pid, false);
            result
        }
    }
}

/// The sandbox's writable layer on disk: made the sandbox user's (as its tmpfs would be:
/// the sandbox mounts that as its user) and cloned as a detached mount, which the sandbox
/// attaches where the tmpfs would go. Root only: the pool is root's.
fn disk_layer(plan: &Plan, dir: &str, root: bool) -> Result<OwnedFd, JailError> {
    if !root {
        return Err(JailError::LayerUnavailable {
            layer: "writable layer on disk".into(),
            reason: "disk-backed layers live in the storage pool, which needs root; rootless sandboxes keep their writable layer in RAM".into(),
        });
    }
    let (uid, gid) = sandbox_host_ids(plan);
    std::os::unix::fs::chown(dir, Some(uid), Some(gid))
        .map_err(|e| JailError::host(format!("hand the layer {dir} to the sandbox's user"), e))?;
    m::clone_tree(dir, false).map_err(|e| JailError::host(format!("open the layer {dir}"), e))
}

/// Root mode: the host uid and gid the sandbox's user runs as.
pub(crate) fn sandbox_host_ids(plan: &Plan) -> (u32, u32) {
    match plan.ids {
        plan::IdMapping::ImageRange => (plan::IMAGE_HOST_ID_BASE + plan.uid, plan::IMAGE_HOST_ID_BASE + plan.gid),
        plan::IdMapping::One => (ROOT_MODE_HOST_ID, ROOT_MODE_HOST_ID),
    }
}

/// Root mode: open every bind's host tree here, with the host's view and privileges, so
/// the sandbox never resolves a host path itself; writable ones are idmapped so files the
/// sandbox writes belong to the directory's owner.
pub(crate) fn prepare_binds(plan: &Plan) -> Result<crate::mounts::Prepared, JailError> {
    let mut prepared = crate::mounts::Prepared::new();
    for op in &plan.ops {
        let MountOp::Bind { host, path, writable, .. } = op else { continue };
        if plan::HOST_SYSTEM_DIRS.contains(&host.as_str()) && host == path {
            continue; // world-readable system dirs: the sandbox binds them itself
        }
        let tree = m::clone_tree(host, true).map_err(|e| JailError::host(format!("open {host} for mounting"), e))?;
        if *writable {
            let owner = host::owner(host)
                .ok_or_else(|| JailError::host(format!("stat {host}"), std::io::Error::last_os_error()))?;
            let ns = idmap_userns(owner, sandbox_host_ids(plan))?;
            m::set_attr(Some(&tree), "", true, m::MOUNT_ATTR_IDMAP, 0, Some(&ns)).map_err(|e| JailError::LayerUnavailable {
                layer: format!("the writable mount {host}"),
                reason: format!("idmapped mounts are not supported for it ({e}); use rootless mode or a filesystem that supports idmapping"),
            })?;
        }
        prepared.insert(path.clone(), tree);
    }
    Ok(prepared)
}

pub fn run(mut spec: RunSpec) -> Result<Outcome, JailError> {
    let start = safehouse_sys::monotonic_ns();
    trace("start");
    let root = safehouse_sys::geteuid() == 0;
    let view = host::host_view(&spec.request);
    let mut plan = plan::compile(&spec.request, &view)?;
    plan.disk_layer = spec.disk_layer.take();
    if spec.argv.is_empty() {
        return Err(JailError::Setup("no command given".into()));
    }
    let id = random_id();
    let cg_name = format!("run-{}-{id}", safehouse_sys::getpid());
    // Host detection (~0.2 ms, mostly cgroup discovery) runs before the clone only where
    // the cgroup must exist first: cgroup v2 (CLONE_INTO_CGROUP) and rootless mode. As
    // root on cgroup v1 it runs while the sandbox builds its filesystem; the sandbox waits
    // for its verdict (and its cgroup) before anything untrusted can run, and every check
    // is repeated, fail-closed, by the sandbox itself (Landlock, seccomp).
    let early = if !root || host::cgroup2_unified() {
        let f = host::features();
        trace("host features");
        preflight(&f)?;
        Some(f)
    } else {
        None
    };
    let mut cg: Option<Box<dyn Cgroup>> = None;
    let mut checked: Option<Checked> = None;
    if plan.gateway && spec.gateway.is_none() {
        return Err(JailError::Setup("the policy allows egress but no gateway was given to run it".into()));
    }
    let mut gateway = spec.gateway.take();
    let result = run_in(&spec, plan, root, early, cg_name, &mut cg, &mut checked, start, &mut gateway);
    let network = gateway.as_mut().and_then(|g| g.finish());
    trace("command done");
    let cg_stats =
        cg.as_deref().map(|c| (c.oom_kills().unwrap_or(0), c.peak_memory().ok().flatten(), c.cpu_usage_ns().ok()));
    if let Some(c) = cg {
        let _ = c.destroy();
    }
    trace("cgroup removed");
    let raw = result?;
    let Checked { features, abi, unenforced } =
        checked.ok_or_else(|| JailError::Setup("host checks did not run".into()))?;
    let (oom_kills, peak, cpu_ns) = cg_stats.unwrap_or((0, None, None));
    let signal = raw.signal;
    // Any kill by the memory limit counts (as in the daemon's exec record): a shell whose
    // child the limit killed exits 137 itself, with no signal of its own.
    let oom_killed = oom_kills > 0;
    let exit_code = if raw.timed_out {
        124
    } else if oom_killed && (signal == Some(libc::SIGKILL) || raw.init_killed) {
        137
    } else if let Some(code) = raw.exit_code {
        code
    } else {
        128 + signal.unwrap_or(libc::SIGKILL)
    };
    Ok(Outcome {
        sandbox_id: id,
        exit_code,
        signal,
        timed_out: raw.timed_out,
        oom_killed,
        wall_ms: (safehouse_sys::monotonic_ns() - start) / 1_000_000,
        cpu_ms: cpu_ns.map(|n| n / 1_000_000).unwrap_or(raw.cpu_us / 1000),
        peak_memory_bytes: peak.or(Some(raw.maxrss_kib * 1024)),
        mode: if features.root { "root" } else { "rootless" },
        layers: Layers {
            namespaces: NAMESPACES.to_vec(),
            seccomp: true,
            landlock_abi: abi,
            landlock_scoping: scopes_for_abi(abi) != 0,
            cgroup: features.cgroups.writable.then(|| features.cgroup_summary.clone()),
            no_new_privs: true,
            capabilities: "none",
        },
        unenforced,
        exec_error: raw.exec_error,
        network,
        tool_runs: raw.tool_runs,
    })
}

/// What the host checks found: the features, the Landlock ABI, unenforced limits.
struct Checked {
    features: Features,
    abi: u32,
    unenforced: Vec<Unenforced>,
}

struct Raw {
    exit_code: Option<i32>,
    signal: Option<i32>,
    timed_out: bool,
    init_killed: bool,
    cpu_us: u64,
    maxrss_kib: u64,
    exec_error: Option<String>,
    tool_runs: Vec<crate::tools::ToolEvent>,
}

/// Removes `safehouse/run-<pid>-<id>` cgroups whose `run` process no longer exists. Best
/// effort: a cgroup that still has tasks refuses the rmdir and stays.
fn sweep_orphaned_cgroups(support: &cgroup::CgroupSupport) {
    let mut parents: Vec<std::path::PathBuf> =
        support.hierarchies.iter().map(|h| h.mount_point.join(cgroup::ROOT_DIR)).collect();
    if support.version == Some(cgroup::CgroupVersion::V2) {
        parents.push(support.base.join(cgroup::ROOT_DIR));
    }
    for parent in parents {
        let Ok(entries) = std::fs::read_dir(&parent) else { continue };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(pid) = name
                .to_str()
                .and_then(|n| n.strip_prefix("run-"))
                .and_then(|n| n.split('-').next())
                .and_then(|p| p.parse::<i32>().ok())
            else {
                continue;
            };
            if pid > 0 && process::kill(pid, 0).err().and_then(|e| e.raw_os_error()) == Some(libc::ESRCH) {
                let _ = std::fs::remove_dir(entry.path());
            }
        }
    }
}

/// Prints how long each host-side step took, with SAFEHOUSE_TRACE=1 (for tuning).
pub(crate) fn trace(step: &str) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST: AtomicU64 = AtomicU64::new(0);
    // Read once, before the sandbox side erases its copy of the environment.
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if *ON.get_or_init(|| std::env::var_os("SAFEHOUSE_TRACE").is_some()) {
        let now = safehouse_sys::monotonic_ns();
        let last = LAST.swap(now, Ordering::Relaxed);
        let delta = if last == 0 { 0 } else { now - last };
        eprintln!("safehouse trace: {step:<28} +{:>6} us", delta / 1000);
    }
}

#[allow(clippy::too_many_arguments)]
fn run_in(
    spec: &RunSpec,
    plan: Plan,
    root: bool,
    early: Option<Features>,
    cg_name: String,
    cg_out: &mut Option<Box<dyn Cgroup>>,
    checked: &mut Option<Checked>,
    start: u64,
    gateway: &mut Option<Box<dyn EgressGateway>>,
) -> Result<Raw, JailError> {
    trace("planned");
    let HostSide { prepared, lower_fds, layer_fd, sync: (sync_read, sync_write), status: (status_read, status_write) } =
        HostSide::prepare(&plan, root)?;
    const RELAYED: [i32; 7] =
        [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT, libc::SIGUSR1, libc::SIGUSR2, libc::SIGWINCH];
    process::sigmask(&RELAYED, true).map_err(|e| JailError::host("block signals", e))?;
    let sigfd = process::signalfd(&RELAYED).map_err(|e| JailError::host("signalfd", e))?;

    let flags = crate::run::SANDBOX_NAMESPACES;
    let timeout = plan.limits.timeout;
    // cgroup v2: the cgroup exists before the sandbox and clone3 puts the sandbox in it
    // (CLONE_INTO_CGROUP). v1 has no such flag: the cgroup is created while the sandbox
    // builds its filesystem, and the sandbox moves itself in (see setup.rs, the `cgroup` step).
    let mut into_cgroup: Option<OwnedFd> = None;
    let mut cg_created_early = false;
    if let Some(f) = early.as_ref().filter(|f| f.cgroups.version == Some(cgroup::CgroupVersion::V2)) {
        let (cg_limits, _) = plan_cgroup(f, &plan)?;
        if let Some(limits) = cg_limits {
            let cg = cg_out.insert(cgroup::create(&f.cgroups, &cg_name, &limits)?);
            into_cgroup = cg.open_unified_dir()?;
            trace("cgroup created (v2)");
        }
        cg_created_early = true;
    }
    let forked = match process::clone_process(flags, into_cgroup.as_ref().map(|fd| fd.as_fd())) {
        Ok(forked) => forked,
        Err(e) => {
            // Name the missing layer if the host checks can (user namespaces disabled...).
            preflight(&host::features())?;
            return Err(JailError::host("clone the sandbox", e));
        }
    };
    let (pid, pidfd) = match forked {
        Forked::Child => {
            drop(sync_write);
            drop(status_read);
            drop(sigfd);
            setup::child_main(ChildContext {
                plan,
                argv: spec.argv.clone(),
                sync_read,
                status_write: File::from(status_write),
                prepared,
                lower_fds,
                layer_fd,
                privileged: root,
                agent: None,
                tty: spec.tty,
                tty_slave: None,
                watch_execs: false,
            })
        }
        Forked::Parent { pid, pidfd } => (pid, pidfd),
    };
    trace("cloned");
    drop(into_cgroup);
    drop(sync_read);
    drop(status_write);
    drop(prepared);
    let mut master: Option<OwnedFd> = None;

    // Release the child in two steps: once its id maps are written (it needs them to build
    // its filesystem), then with its cgroup (it joins before anything untrusted runs).
    let release = (|| {
        crate::run::write_id_maps(pid, root, &plan)?;
        let send = |msg: &[u8], fds: &[std::os::fd::RawFd]| {
            safehouse_sys::unix::send_with_fds(&sync_write, msg, fds)
                .map_err(|e| JailError::host("release the sandbox", e))
        };
        send(b"1", &[])?;
        trace("id maps written");
        // Host checks, unless they ran before the clone.
        let f = match early {
            Some(f) => f,
            None => {
                let f = host::features();
                trace("host features");
                f
            }
        };
        let abi = preflight(&f)?;
        let (cg_limits, unenforced) = plan_cgroup(&f, &plan)?;
        let mut tasks: Vec<File> = Vec::new();
        if let (Some(limits), false) = (cg_limits, cg_created_early) {
            let cg = cg_out.insert(cgroup::create(&f.cgroups, &cg_name, &limits)?);
            for dir in cg.dirs() {
                let path = dir.join("tasks");
                tasks.push(
                    std::fs::OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .map_err(|e| JailError::host(format!("open {}", path.display()), e))?,
                );
            }
            trace("cgroup created");
        }
        if cg_out.is_some() {
            // While the sandbox sets itself up: remove cgroups that runs killed with
            // SIGKILL left behind (their sandboxes died with them: parent-death signal).
            sweep_orphaned_cgroups(&f.cgroups);
        }
        *checked = Some(Checked { features: f, abi, unenforced });
        if spec.tty {
            master = Some(receive_from_sandbox(&sync_write, b't', "its terminal")?);
        }
        if plan.gateway {
            let listener = receive_gateway_listener(&sync_write)?;
            let gw =
                gateway.as_mut().ok_or_else(|| JailError::Setup("no gateway to run the sandbox's egress".into()))?;
            gw.start(listener)
                .map_err(|reason| JailError::LayerUnavailable { layer: "the capability gateway".into(), reason })?;
            trace("gateway started");
        }
        send(b"2", &tasks.iter().map(|t| t.as_raw_fd()).collect::<Vec<_>>())
    })();
    // sync_write stays open until the sandbox is gone: the sandbox treats a hang-up as
    // the host side's death.
    if let Err(e) = release {
        let _ = process::pidfd_send_signal(&pidfd, libc::SIGKILL);
        let _ = process::wait4(pid, false);
        // A sandbox that failed a setup step said which before it exited (the host side
        // then fails to release it): that is the error to report.
        return Err(setup_failure(&status_read).unwrap_or(e));
    }
    let supervisor = match supervise_tools(&plan, &sync_write, checked.as_ref(), cg_out.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            let _ = process::pidfd_send_signal(&pidfd, libc::SIGKILL);
            let _ = process::wait4(pid, false);
            return Err(e);
        }
    };

    let deadline = timeout.map(|t| start + t.as_nanos() as u64);
    let mut timed_out = false;
    let saved_termios = match &master {
        Some(mfd) if process::isatty(0) => {
            let _ = process::copy_winsize(0, mfd.as_raw_fd());
            process::make_raw(0).ok()
        }
        _ => None,
    };
    let mut stdin_open = master.is_some();
    loop {
        let wait_ms = match deadline {
            Some(d) => {
                let now = safehouse_sys::monotonic_ns();
                if now >= d {
                    timed_out = true;
                    let _ = process::pidfd_send_signal(&pidfd, libc::SIGKILL);
                    break;
                }
                ((d - now) / 1_000_000 + 1).min(i32::MAX as u64) as i32
            }
            None => -1,
        };
        let mut fds = vec![pidfd.as_raw_fd(), sigfd.as_raw_fd()];
        if let Some(mfd) = &master {
            fds.push(mfd.as_raw_fd());
            if stdin_open {
                fds.push(0);
            }
        }
        let ready = process::poll_readable(&fds, wait_ms).map_err(|e| JailError::host("poll", e))?;
        if ready[1] {
            while let Some(sig) = process::read_signalfd(&sigfd) {
                if sig == libc::SIGWINCH {
                    if let Some(mfd) = &master {
                        let _ = process::copy_winsize(0, mfd.as_raw_fd());
                    }
                } else {
                    let _ = process::pidfd_send_signal(&pidfd, sig);
                }
            }
        }
        if let Some(mfd) = &master {
            if ready[2] && !pump(mfd.as_fd(), &mut std::io::stdout()) {
                // The terminal closed: the command is gone or going.
            }
            if stdin_open && ready.len() > 3 && ready[3] {
                stdin_open = pump_in(mfd);
            }
        }
        if ready[0] {
            break;
        }
    }
    if let Some(mfd) = &master {
        while pump(mfd.as_fd(), &mut std::io::stdout()) {}
    }
    if let Some(t) = saved_termios {
        process::restore_termios(0, &t);
    }
    trace("sandbox exited");
    let reaped = process::wait4(pid, false)
        .map_err(|e| JailError::host("wait for the sandbox", e))?
        .ok_or_else(|| JailError::Setup("sandbox vanished".into()))?;
    drop(sync_write);
    let _ = process::sigmask(&RELAYED, false);
    let tool_runs = supervisor.map(|s| s.stop()).unwrap_or_default();

    let reports =
        Report::read_all(&mut File::from(status_read)).map_err(|e| JailError::host("read sandbox status", e))?;
    let reports = reports.map_err(|e| JailError::Setup(format!("the sandbox sent a malformed status record: {e}")))?;
    let mut raw = Raw {
        exit_code: None,
        signal: None,
        timed_out,
        init_killed: reaped.signal().is_some(),
        cpu_us: reaped.user_us + reaped.sys_us,
        maxrss_kib: reaped.maxrss_kib,
        exec_error: None,
        tool_runs,
    };
    for r in reports {
        match r {
            Report::SetupFailed(msg) if !timed_out => return Err(JailError::Setup(msg)),
            Report::SetupFailed(_) | Report::Started(_) | Report::Ready => {}
            Report::ExecFailed(errno, path) => {
                let err = std::io::Error::from_raw_os_error(errno);
                raw.exit_code = Some(if errno == libc::ENOENT { 127 } else { 126 });
                raw.exec_error = Some(if errno == libc::ENOENT {
                    format!("{path}: command not found")
                } else {
                    format!("{path}: {err}")
                });
            }
            Report::Exited(status) => {
                if libc::WIFEXITED(status) {
                    raw.exit_code = Some(libc::WEXITSTATUS(status));
                } else if libc::WIFSIGNALED(status) {
                    raw.signal = Some(libc::WTERMSIG(status));
                }
            }
        }
    }
    if raw.exit_code.is_none() && raw.signal.is_none() {
        // The init itself died (killed by the timeout, the OOM killer or from outside).
        raw.signal = reaped.signal().or(Some(libc::SIGKILL));
    }
    Ok(raw)
}

/// The `SetupFailed` report a dead sandbox left in the status pipe, if any (read without
/// waiting: the host side keeps a copy of the write end).
fn setup_failure(status: &OwnedFd) -> Option<JailError> {
    safehouse_sys::files::set_nonblocking(status.as_fd(), true).ok()?;
    let mut bytes = Vec::new();
    let mut f = File::from(status.try_clone().ok()?);
    let mut buf = [0u8; 4096];
    while let Ok(n) = f.read(&mut buf) {
        if n == 0 || bytes.len() > 64 << 10 {
            break;
        }
        bytes.extend_from_slice(&buf[..n]);
    }
    Report::decode_all(&bytes).ok()?.into_iter().find_map(|r| match r {
        Report::SetupFailed(msg) => Some(JailError::Setup(msg)),
        _ => None,
    })
}

/// `run`'s exec pipeline (crate::execwatch, without observation): enforces
/// `tools.limits` and collects the limited tools' runs for the result.
struct ToolWatch {
    watcher: crate::execwatch::Watcher,
    runs: std::sync::Arc<std::sync::Mutex<Vec<crate::tools::ToolEvent>>>,
}

impl ToolWatch {
    /// Stops the pipeline (after the sandbox is gone: it kills what is left in tool
    /// cgroups) and returns the runs.
    fn stop(self) -> Vec<crate::tools::ToolEvent> {
        self.watcher.stop();
        std::mem::take(&mut *self.runs.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// With `tools.limits`: receives the exec listener and the limited tools' inodes from the
/// sandbox (sent just before its seccomp filter) and starts answering its execs. A
/// sandbox that fails its setup first hangs up instead; its status record says why.
fn supervise_tools(
    plan: &Plan,
    sync: &OwnedFd,
    checked: Option<&Checked>,
    cg: Option<&dyn Cgroup>,
) -> Result<Option<ToolWatch>, JailError> {
    if plan.tools.limits.is_empty() {
        return Ok(None);
    }
    let (Some(checked), Some(cg)) = (checked, cg) else {
        return Err(JailError::LayerUnavailable {
            layer: "tools.limits".into(),
            reason: "the sandbox has no cgroup to nest tool cgroups in".into(),
        });
    };
    let mut buf = vec![0u8; 1 << 20];
    let (n, fds) = safehouse_sys::unix::recv_with_fds(sync, &mut buf)
        .map_err(|e| JailError::host("receive the exec listener", e))?;
    let Some(listener) = fds.into_iter().next().filter(|_| n > 0) else {
        return Ok(None);
    };
    let table = crate::toollimit::decode_table(&buf[..n], plan.tools.limits.len()).map_err(JailError::Setup)?;
    let runs = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = runs.clone();
    let hooks = crate::execwatch::Hooks {
        tool: std::sync::Arc::new(move |note| {
            if let crate::execwatch::ToolNote::Ended { run, .. } = note {
                sink.lock().unwrap_or_else(|e| e.into_inner()).push(run);
            }
        }),
        ..crate::execwatch::Hooks::none()
    };
    let tools = crate::execwatch::ToolLimits {
        table,
        limits: plan.tools.limits.clone(),
        support: checked.features.cgroups.clone(),
        sandbox_cgroup: cg.name().to_string(),
        adopt: false,
    };
    let opts = crate::execwatch::Options { observe: false, allowed: None, tools: Some(tools) };
    let watcher = crate::execwatch::Watcher::start(listener, hooks, "tool-limits", opts)
        .map_err(|e| JailError::host("start the tool supervisor", e))?;
    let supervisor = ToolWatch { watcher, runs };
    trace("tool supervisor started");
    Ok(Some(supervisor))
}

/// Copies what the terminal has to `out`; false at EOF or error.
fn pump(fd: std::os::fd::BorrowedFd<'_>, out: &mut impl Write) -> bool {
    let mut buf = [0u8; 16384];
    let mut f = File::from(fd.try_clone_to_owned().expect("dup terminal"));
    match safehouse_sys::fs::read_nonblocking(&mut f, &mut buf) {
        Some(n) if n > 0 => {
            let _ = out.write_all(&buf[..n]);
            let _ = out.flush();
            true
        }
        _ => false,
    }
}

fn pump_in(master: &OwnedFd) -> bool {
    let mut buf = [0u8; 4096];
    match std::io::stdin().lock().read(&mut buf) {
        Ok(0) | Err(_) => false,
        Ok(n) => File::from(master.try_clone().expect("dup terminal")).write_all(&buf[..n]).is_ok(),
    }
}

#[cfg(test)]
#[path = "run_tests.rs"]
mod tests;

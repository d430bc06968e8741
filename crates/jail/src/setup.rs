//! The sandbox side of creation: one readable sequence of named steps ([`Step`]), run by
//! the first process inside the new namespaces before anything untrusted exists. A
//! failing step is a [`SetupError`] naming the step, the operation and the errno; it is
//! reported to the host side and the process exits 125: nothing of the command runs.
//!
//! Every system call goes through [`Kernel`] (crate::kernel), so root-free tests run the
//! same sequence against a fake that records the calls and injects failures.

use std::fmt;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use thiserror::Error;

use safehouse_policy::landlock::{fs_rights_for_abi, scopes_for_abi, EXECUTE_FILE, MIN_ABI};
use safehouse_policy::plan::Plan;
use safehouse_sys::process;

use crate::init;
use crate::kernel::{Kernel, Real};
use crate::mounts::Prepared;
use crate::report::Report;
use crate::run::trace;

/// The setup steps, in the order they run (docs/design.md, "The setup sequence").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Step {
    /// Close inherited descriptors; erase the host command line (CVE-2024-21626).
    ForgetHost,
    /// Parent-death signal; wait until the host side has written the id maps.
    IdMaps,
    /// Become the sandbox user (capabilities kept for the rest of setup).
    Identity,
    /// The new root, binds, /proc, /dev, masks; the host root detached.
    Filesystem,
    /// With a terminal: one of the sandbox's own devpts (so `tty` and ttyname(3) find it
    /// under /dev/pts), its master to the host side.
    Terminal,
    /// Hostname, loopback; with egress, the gateway's listener to the host side.
    Network,
    /// Daemon sandboxes: the new root to the host side, for its file operations.
    HandOverRoot,
    /// Per-process resource limits.
    Rlimits,
    /// Join the cgroup the host side made; a cgroup namespace.
    Cgroup,
    /// Filesystem rules and scoping; with tools.allow, EXECUTE on the listed files only.
    Landlock,
    /// Securebits, bounding and ambient sets, capabilities, no_new_privs, non-dumpable.
    DropPrivileges,
    /// The exec notification filter; its listener to the host side.
    ExecNotification,
    /// The sandbox's seccomp filter, last.
    Seccomp,
}

impl Step {
    pub fn name(self) -> &'static str {
        match self {
            Step::ForgetHost => "forget the host",
            Step::IdMaps => "id maps",
            Step::Identity => "identity",
            Step::Filesystem => "filesystem",
            Step::Terminal => "terminal",
            Step::Network => "network",
            Step::HandOverRoot => "hand over the root",
            Step::Rlimits => "rlimits",
            Step::Cgroup => "cgroup",
            Step::Landlock => "landlock",
            Step::DropPrivileges => "drop privileges",
            Step::ExecNotification => "exec notification",
            Step::Seccomp => "seccomp",
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A setup step that failed: which step, which operation in it, and why (the errno, or
/// a reason where the kernel gave none).
#[derive(Debug, Error)]
#[error("{step}: {action}: {source}")]
pub struct SetupError {
    pub step: Step,
    pub action: String,
    #[source]
    pub source: io::Error,
}

impl SetupError {
    pub fn new(step: Step, action: impl Into<String>, source: io::Error) -> SetupError {
        SetupError { step, action: action.into(), source }
    }

    /// A failure without an errno.
    fn refused(step: Step, action: impl Into<String>, reason: impl Into<String>) -> SetupError {
        SetupError::new(step, action, io::Error::other(reason.into()))
    }

    pub fn errno(&self) -> Option<i32> {
        self.source.raw_os_error()
    }
}

/// How a daemon sandbox's PID 1 becomes its agent: the entry function (a plain function
/// pointer, valid in the spawner because it is a fork of the daemon) and the listening
/// socket the daemon connects to.
pub struct AgentEntry {
    pub run: fn(OwnedFd, &Plan) -> !,
    pub listener: OwnedFd,
}

/// Everything the child needs, moved into it by clone.
pub struct ChildContext {
    pub plan: Plan,
    pub argv: Vec<String>,
    pub sync_read: OwnedFd,
    pub status_write: File,
    pub prepared: Prepared,
    /// Root mode: the root's read-only lower layers (a rootfs directory, or an image's
    /// layers, bottom first) as detached mounts the host side cloned; empty rootless.
    pub lower_fds: Vec<OwnedFd>,
    /// The writable layer on disk (the plan's `disk_layer`), a detached mount the host
    /// side cloned; `None`: a tmpfs.
    pub layer_fd: Option<OwnedFd>,
    /// Root mode: we may (and must) drop supplementary groups.
    pub privileged: bool,
    /// A long-lived sandbox (daemon mode): its PID 1 is the agent, entered through this
    /// function with the agent's listening socket, and it outlives the process that
    /// created it (no parent-death signal). None for `run`, whose PID 1 is `init`.
    pub agent: Option<AgentEntry>,
    /// With --tty: the setup opens a terminal in the sandbox's own devpts, hands its
    /// master to the host side and keeps the other end here, to become the command's
    /// stdio and controlling terminal.
    pub tty: bool,
    pub tty_slave: Option<OwnedFd>,
    /// Install the exec notification filter and hand its listener to the host side even
    /// without tools.limits (daemon sandboxes: every exec is observed, crate::execwatch).
    pub watch_execs: bool,
}

/// Runs inside the new namespaces; never returns.
pub fn child_main(mut ctx: ChildContext) -> ! {
    trace("child: started");
    if let Err(e) = set_up(&mut Real, &mut ctx) {
        Report::SetupFailed(e.to_string()).send(&mut ctx.status_write);
        process::exit_now(125);
    }
    match ctx.agent.take() {
        Some(agent) => {
            Report::Ready.send(&mut ctx.status_write);
            drop(ctx.status_write);
            drop(ctx.sync_read);
            (agent.run)(agent.listener, &ctx.plan)
        }
        None => init::run(ctx),
    }
}

/// The setup sequence, top to bottom. Returns once seccomp is installed: the caller then
/// becomes the init or the agent.
pub fn set_up<K: Kernel>(k: &mut K, ctx: &mut ChildContext) -> Result<(), SetupError> {
    use Step::*;
    // Forget the host: drop what the sandbox init inherited from the caller of `run`:
    // every descriptor it does not need (a leaked directory fd is how CVE-2024-21626
    // escaped), and the host command line and environment in its memory, which sandboxed
    // code could otherwise read through /proc/1/cmdline.
    let mut keep = vec![ctx.sync_read.as_raw_fd(), ctx.status_write.as_raw_fd()];
    keep.extend(ctx.prepared.values().map(|fd| fd.as_raw_fd()));
    keep.extend(ctx.lower_fds.iter().map(|fd| fd.as_raw_fd()));
    keep.extend(ctx.layer_fd.iter().map(|fd| fd.as_raw_fd()));
    keep.extend(ctx.agent.iter().map(|a| a.listener.as_raw_fd()));
    k.close_fds_except(&keep).map_err(|e| SetupError::new(ForgetHost, "close inherited descriptors", e))?;
    trace("child: fds closed");
    k.erase_host_args().map_err(|e| SetupError::new(ForgetHost, "erase the host command line", e))?;
    trace("child: argv erased");

    // Id maps: die with the host side; then wait until it has written our uid/gid maps.
    // A hang-up instead of the go message means the host side died.
    if ctx.agent.is_none() {
        k.set_parent_death_signal().map_err(|e| SetupError::new(IdMaps, "set parent-death signal", e))?;
    }
    k.wait_for_host(&ctx.sync_read).map_err(|e| SetupError::new(IdMaps, "wait for the host side", e))?;
    trace("child: released");

    // Identity: become the sandbox user before creating any file, so everything in the
    // writable layer belongs to it (keeping capabilities for the rest of setup).
    k.keep_capabilities().map_err(|e| SetupError::new(Identity, "keep capabilities", e))?;
    if ctx.privileged {
        k.drop_supplementary_groups().map_err(|e| SetupError::new(Identity, "drop supplementary groups", e))?;
    }
    k.set_gid(ctx.plan.gid).map_err(|e| SetupError::new(Identity, "set gid", e))?;
    k.set_uid(ctx.plan.uid).map_err(|e| SetupError::new(Identity, "set uid", e))?;
    k.set_umask(0o022);

    // Filesystem: new root, binds, /proc, /dev, masks; the host root is detached.
    k.build_filesystem(&ctx.plan, &mut ctx.prepared, &ctx.lower_fds, ctx.layer_fd.as_ref())
        .map_err(|e| SetupError::new(Filesystem, "build the mount tree", e))?;
    trace("child: filesystem built");
    ctx.lower_fds.clear();
    ctx.layer_fd = None;

    // Terminal: opened here, in the sandbox's own devpts instance (one opened by the host
    // side before the clone would be a terminal the sandbox's /dev/pts does not list).
    if ctx.tty {
        let (master, slave) = k.open_terminal().map_err(|e| SetupError::new(Terminal, "open a terminal", e))?;
        k.send_to_host(&ctx.sync_read, b"t", &[master.as_raw_fd()])
            .map_err(|e| SetupError::new(Terminal, "hand the terminal to the host side", e))?;
        ctx.tty_slave = Some(slave);
    }

    // Network: own hostname; loopback up in the empty network namespace. With egress, a
    // listener on 127.0.0.1:GATEWAY_PORT handed to the host side, whose gateway accepts
    // on it; the sandbox keeps no copy (sandboxed code can connect, never accept).
    k.set_hostname(&ctx.plan.hostname).map_err(|e| SetupError::new(Network, "set hostname", e))?;
    k.bring_up_loopback().map_err(|e| SetupError::new(Network, "bring up loopback", e))?;
    if ctx.plan.gateway {
        let port = safehouse_policy::plan::GATEWAY_PORT;
        let listener = k
            .listen_on_loopback(port, 4096)
            .map_err(|e| SetupError::new(Network, format!("open the gateway's listener on 127.0.0.1:{port}"), e))?;
        k.send_to_host(&ctx.sync_read, b"g", &[listener.as_raw_fd()])
            .map_err(|e| SetupError::new(Network, "hand the gateway's listener to the host side", e))?;
    }

    // Hand over the root: a daemon sandbox gives the host side its new root, beneath
    // which it opens every path of the file API and the disk metrics. (`/proc/<agent>/root`
    // would do for a root daemon, but the agent is non-dumpable, so a rootless one cannot
    // open it.) The sandbox keeps no copy (it already has `/`).
    if ctx.agent.is_some() {
        let root = k.open_root().map_err(|e| SetupError::new(HandOverRoot, "open the new root", e))?;
        k.send_to_host(&ctx.sync_read, b"r", &[root.as_raw_fd()])
            .map_err(|e| SetupError::new(HandOverRoot, "hand the root to the host side", e))?;
    }

    // Rlimits that are per process (cgroups are the host side's).
    let l = &ctx.plan.limits;
    for (resource, value, what) in [
        (libc::RLIMIT_NOFILE, l.nofile, "limit open files"),
        (libc::RLIMIT_FSIZE, l.disk, "limit file size"),
        (libc::RLIMIT_CORE, 0, "disable core dumps"),
        (libc::RLIMIT_MEMLOCK, 8 << 20, "limit locked memory"),
    ] {
        k.set_rlimit(resource, value, value).map_err(|e| SetupError::new(Rlimits, what, e))?;
    }
    trace("child: hostname, net, rlimits");

    // Cgroup: join the cgroup the host side created meanwhile. cgroup v2: clone put us
    // there already. v1: the host sends each hierarchy's `tasks` file, opened with its
    // credentials, and we move ourselves by writing "0": a thread moving itself skips the
    // global lock (and its RCU grace period, 10-15 ms) that moving another process takes
    // (adr/0001). Then a cgroup namespace, so the sandbox sees its cgroup as the root.
    let tasks = k.wait_for_host(&ctx.sync_read).map_err(|e| SetupError::new(Cgroup, "wait for the host side", e))?;
    for t in tasks {
        k.join_cgroup(t).map_err(|e| SetupError::new(Cgroup, "join cgroup", e))?;
    }
    k.unshare_cgroup_namespace().map_err(|e| SetupError::new(Cgroup, "unshare cgroup namespace", e))?;
    trace("child: in cgroup");

    // Landlock: filesystem rules and scoping; a kernel without it fails closed here. With
    // tools.allow, EXECUTE is granted only on the listed files (expanded here, in the
    // sandbox's own view, crate::tools) and their ELF interpreters.
    let tools = if ctx.plan.tools.restricts_exec() {
        k.expand_tools(&ctx.plan.tools).map_err(|e| SetupError::new(Landlock, "expand", io::Error::other(e)))?
    } else {
        Vec::new()
    };
    apply_landlock(k, &ctx.plan, &tools)?;
    trace("child: landlock");

    // Drop privileges: lock securebits, empty the bounding and ambient sets, then every
    // capability. From here on nothing in the sandbox holds any privilege. A template
    // build's RUN step as root keeps only the file and identity capabilities over its
    // own user namespace (plan::BUILD_CAPABILITIES), bounded by no_new_privs below.
    if ctx.plan.build_capabilities {
        k.keep_only_capabilities(safehouse_policy::plan::BUILD_CAPABILITIES)
            .map_err(|e| SetupError::new(DropPrivileges, "keep only the build capabilities", e))?;
    } else {
        k.lock_securebits().map_err(|e| SetupError::new(DropPrivileges, "lock securebits", e))?;
        k.drop_bounding_set().map_err(|e| SetupError::new(DropPrivileges, "drop bounding set", e))?;
        k.clear_ambient_capabilities().map_err(|e| SetupError::new(DropPrivileges, "clear ambient capabilities", e))?;
        k.drop_capabilities().map_err(|e| SetupError::new(DropPrivileges, "drop capabilities", e))?;
    }
    k.set_no_new_privs().map_err(|e| SetupError::new(DropPrivileges, "set no_new_privs", e))?;
    k.make_non_dumpable().map_err(|e| SetupError::new(DropPrivileges, "make init non-dumpable", e))?;
    // Credential changes (the identity step) clear the parent-death signal: arm it again,
    // then make sure the host side did not die in between (it holds the sync socket open
    // for the sandbox's whole life, so a hang-up means it is gone).
    if ctx.agent.is_none() {
        k.set_parent_death_signal().map_err(|e| SetupError::new(DropPrivileges, "set parent-death signal", e))?;
    }
    if k.host_gone(&ctx.sync_read) {
        return Err(SetupError::refused(DropPrivileges, "check the host side", "the host side went away during setup"));
    }

    // Exec notification: every execve/execveat waits for the host side's exec pipeline
    // (crate::execwatch), which records it (daemon sandboxes) and, for a tool with
    // tools.limits, moves the caller into its own cgroup first. The listener goes to the
    // host with the limited tools' inodes; the sandbox keeps no copy (it is closed at the
    // end of this block, before any untrusted code exists).
    if !ctx.plan.tools.limits.is_empty() || ctx.watch_execs {
        if ctx.agent.is_some() && !ctx.plan.tools.limits.is_empty() && !ctx.watch_execs {
            return Err(SetupError::refused(ExecNotification, "tools.limits", "per-tool limits in daemon sandboxes are enforced by the exec watcher, which SAFEHOUSE_EXECWATCH=0 turns off; remove [tools.limits] or unset SAFEHOUSE_EXECWATCH"));
        }
        let program: Vec<libc::sock_filter> =
            safehouse_policy::seccomp::exec_notify_filter(&safehouse_policy::seccomp::NATIVE)
                .iter()
                .map(|i| libc::sock_filter { code: i.code, jt: i.jt, jf: i.jf, k: i.k })
                .collect();
        let listener = k
            .install_exec_listener(&program)
            .map_err(|e| SetupError::new(ExecNotification, "install the exec notification filter", e))?;
        k.send_to_host(&ctx.sync_read, &crate::tools::encode_table(&tools), &[listener.as_raw_fd()])
            .map_err(|e| SetupError::new(ExecNotification, "send the exec listener to the host side", e))?;
        drop(listener);
    }
    drop(tools);

    // Seccomp, last: after it only the allowlisted syscalls exist.
    // A template build's RUN step: setid chmods succeed without effect (the policy crate's
    // BUILD_STEP_OVERRIDES); everything else as in every sandbox.
    let program: &[libc::sock_filter] = if ctx.plan.build_capabilities {
        &crate::seccomp_program::BUILD_STEP_FILTER
    } else {
        &crate::seccomp_program::SANDBOX_FILTER
    };
    if program.is_empty() {
        return Err(SetupError::refused(
            Seccomp,
            "check the filter",
            "the filter is empty; refusing to run unfiltered",
        ));
    }
    trace("child: landlock, caps");
    k.install_seccomp(program).map_err(|e| SetupError::new(Seccomp, "install seccomp filter", e))?;
    trace("child: seccomp");
    Ok(())
}

fn apply_landlock<K: Kernel>(k: &mut K, plan: &Plan, tools: &[crate::tools::Grant]) -> Result<(), SetupError> {
    use Step::Landlock;
    let abi = k.landlock_abi().map_err(|e| {
        SetupError::refused(Landlock, "check the ABI", format!("unavailable ({e}); the sandbox requires it"))
    })?;
    if abi < MIN_ABI {
        return Err(SetupError::refused(
            Landlock,
            "check the ABI",
            format!("ABI {abi} is older than the required {MIN_ABI}"),
        ));
    }
    let rules = &plan.landlock;
    let handled = rules.handled & fs_rights_for_abi(abi);
    let scopes = rules.scopes & scopes_for_abi(abi);
    let ruleset = k.landlock_ruleset(handled, scopes).map_err(|e| SetupError::new(Landlock, "create ruleset", e))?;
    for rule in &rules.rules {
        let access = rule.access & handled;
        match k.landlock_path_rule(&ruleset, &rule.path, access) {
            Ok(()) => {}
            // A rule for a path this sandbox does not have (e.g. no /dev/tty on the host)
            // grants nothing; skipping it is the stricter outcome.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(SetupError::new(Landlock, format!("rule for {}", rule.path), e)),
        }
    }
    let exec = EXECUTE_FILE & handled;
    if plan.tools.restricts_exec() && exec == 0 {
        return Err(SetupError::refused(
            Landlock,
            "tools.allow",
            "this kernel cannot restrict execution, which tools.allow needs",
        ));
    }
    for grant in tools {
        k.landlock_fd_rule(&ruleset, grant, exec)
            .map_err(|e| SetupError::new(Landlock, format!("execute rule for {}", grant.path), e))?;
    }
    k.set_no_new_privs().map_err(|e| SetupError::new(Landlock, "set no_new_privs", e))?;
    k.landlock_restrict(&ruleset).map_err(|e| SetupError::new(Landlock, "restrict", e))
}

#[cfg(test)]
#[path = "setup_tests.rs"]
mod tests;

//! The sandbox side of creation: one readable sequence of named steps, run by the first
//! process inside the new namespaces before anything untrusted exists. Any failing step
//! reports which one and exits 125; nothing of the command runs.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

use safehouse_policy::landlock::{fs_rights_for_abi, scopes_for_abi, EXECUTE_FILE, MIN_ABI};
use safehouse_policy::plan::Plan;
use safehouse_sys::{caps, landlock, net, process};

use crate::init;
use crate::mounts::{self, Prepared};
use crate::report::Report;
use crate::run::trace;

/// Everything the child needs, moved into it by clone.
/// How a daemon sandbox's PID 1 becomes its agent: the entry function (a plain function
/// pointer, valid in the spawner because it is a fork of the daemon) and the listening
/// socket the daemon connects to.
pub struct AgentEntry {
    pub run: fn(OwnedFd, &Plan) -> !,
    pub listener: OwnedFd,
}

pub struct ChildContext {
    pub plan: Plan,
    pub argv: Vec<String>,
    pub sync_read: OwnedFd,
    pub status_write: File,
    pub prepared: Prepared,
    pub lower_fd: Option<OwnedFd>,
    /// Root mode: we may (and must) drop supplementary groups.
    pub privileged: bool,
    /// A long-lived sandbox (daemon mode): its PID 1 is the agent, entered through this
    /// function with the agent's listening socket, and it outlives the process that
    /// created it (no parent-death signal). None for `run`, whose PID 1 is `init`.
    pub agent: Option<AgentEntry>,
    /// With --tty: the terminal to make the command's stdio and controlling terminal.
    pub tty_slave: Option<OwnedFd>,
    /// Install the exec notification filter and hand its listener to the host side even
    /// without tools.limits (daemon sandboxes: every exec is observed, crate::execwatch).
    pub watch_execs: bool,
}

fn step(name: &str, r: std::io::Result<()>) -> Result<(), String> {
    r.map_err(|e| format!("{name}: {e}"))
}

/// Runs inside the new namespaces; never returns.
pub fn child_main(mut ctx: ChildContext) -> ! {
    trace("child: started");
    let result = forget_host(&ctx).and_then(|()| contain(&mut ctx));
    if let Err(message) = result {
        Report::SetupFailed(message).send(&mut ctx.status_write);
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

/// Drops what the sandbox init inherited from the caller of `run`: every descriptor it
/// does not need (a leaked directory fd is how CVE-2024-21626 escaped), and the host
/// command line and environment in its memory, which sandboxed code could otherwise read
/// through /proc/1/cmdline.
fn forget_host(ctx: &ChildContext) -> Result<(), String> {
    let mut keep: Vec<i32> = vec![ctx.sync_read.as_raw_fd(), ctx.status_write.as_raw_fd()];
    keep.extend(ctx.prepared.values().map(|fd| fd.as_raw_fd()));
    keep.extend(ctx.lower_fd.iter().map(|fd| fd.as_raw_fd()));
    keep.extend(ctx.tty_slave.iter().map(|fd| fd.as_raw_fd()));
    keep.extend(ctx.agent.iter().map(|a| a.listener.as_raw_fd()));
    step("close inherited descriptors", safehouse_sys::fs::close_all_except(&keep))?;
    trace("child: fds closed");
    step("erase the host command line", erase_host_args())?;
    trace("child: argv erased");
    Ok(())
}

/// Overwrites the argument and environment strings of this process with NUL bytes (and
/// a name), through /proc/self/mem so no pointer juggling is needed.
fn erase_host_args() -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // Fields after the parenthesised command name; arg_start is field 48 overall.
    let after = stat.rsplit_once(") ").map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<u64> = after.split_whitespace().map(|f| f.parse().unwrap_or(0)).collect();
    let field = |n: usize| fields.get(n - 3).copied().unwrap_or(0);
    let (arg_start, arg_end, env_start, env_end) = (field(48), field(49), field(50), field(51));
    let mem = std::fs::OpenOptions::new().write(true).open("/proc/self/mem")?;
    for (start, end) in [(arg_start, arg_end), (env_start, env_end)] {
        if start != 0 && end > start && end - start < (16 << 20) {
            mem.write_all_at(&vec![0u8; (end - start) as usize], start)?;
        }
    }
    if arg_end > arg_start + 16 {
        mem.write_all_at(b"safehouse-init\0", arg_start)?;
    }
    Ok(())
}

fn contain(ctx: &mut ChildContext) -> Result<(), String> {
    // 1. Die with the host side; then wait until it has written our uid/gid maps. EOF
    //    instead of the go message means the host side died.
    if ctx.agent.is_none() {
        step("set parent-death signal", process::set_pdeathsig(libc::SIGKILL))?;
    }
    wait_for_host(&ctx.sync_read, "id maps")?;
    trace("child: released");

    // 3. Identity: become the sandbox user before creating any file, so everything in the
    //    writable layer belongs to it (keeping capabilities for the rest of setup).
    step("keep capabilities", caps::set_keep_caps(true))?;
    if ctx.privileged {
        step("drop supplementary groups", caps::setgroups_empty())?;
    }
    step("set gid", caps::setresgid(ctx.plan.gid))?;
    step("set uid", caps::setresuid(ctx.plan.uid))?;
    safehouse_sys::fs::umask(0o022);

    // 4. Filesystem: new root, binds, /proc, /dev, masks; the host root is detached.
    mounts::build(&ctx.plan, &mut ctx.prepared, ctx.lower_fd.as_ref())?;
    trace("child: filesystem built");
    ctx.lower_fd = None;

    // 5. Own hostname; loopback up in the empty network namespace.
    step("set hostname", net::sethostname(&ctx.plan.hostname))?;
    step("bring up loopback", net::loopback_up())?;
    if ctx.plan.gateway {
        open_gateway_listener(&ctx.sync_read)?;
    }
    // 5b. A daemon sandbox hands its new root to the host side, which opens every path of
    //     the file API and the disk metrics beneath it. (`/proc/<agent>/root` would do for
    //     a root daemon, but the agent is non-dumpable, so a rootless one cannot open it.)
    if ctx.agent.is_some() {
        hand_over_root(&ctx.sync_read)?;
    }

    // 6. Resource limits that are per process (cgroups were set by the host side).
    let l = &ctx.plan.limits;
    step("limit open files", process::setrlimit(libc::RLIMIT_NOFILE, l.nofile, l.nofile))?;
    step("limit file size", process::setrlimit(libc::RLIMIT_FSIZE, l.disk, l.disk))?;
    step("disable core dumps", process::setrlimit(libc::RLIMIT_CORE, 0, 0))?;
    step("limit locked memory", process::setrlimit(libc::RLIMIT_MEMLOCK, 8 << 20, 8 << 20))?;

    trace("child: hostname, net, rlimits");

    // 6b. Join the cgroup the host side created meanwhile. cgroup v2: clone put us there
    //     already. v1: the host sends each hierarchy's `tasks` file, opened with its
    //     credentials, and we move ourselves by writing "0": a thread moving itself skips
    //     the global lock (and its RCU grace period, 10-15 ms) that moving another process
    //     takes. Then a cgroup namespace, so the sandbox sees its cgroup as the root.
    //     Nothing untrusted has run yet.
    for tasks in wait_for_host(&ctx.sync_read, "the cgroup")? {
        step("join cgroup", File::from(tasks).write_all(b"0"))?;
    }
    step("unshare cgroup namespace", process::unshare(libc::CLONE_NEWCGROUP))?;
    trace("child: in cgroup");

    // 7. Landlock: filesystem rules and scoping; a kernel without it fails closed here.
    //    With tools.allow, EXECUTE is granted only on the listed files (expanded here, in
    //    the sandbox's own view) and their ELF interpreters.
    let tools = if ctx.plan.tools.restricts_exec() {
        let root = File::open("/").map_err(|e| format!("tools.allow: open the sandbox's root: {e}"))?;
        crate::tools::expand(root.as_fd(), &ctx.plan.tools).map_err(|e| e.to_string())?
    } else {
        Vec::new()
    };
    apply_landlock(&ctx.plan, &tools)?;
    trace("child: landlock");

    // 8. Privilege drop: lock securebits, empty the bounding and ambient sets, then every
    //    capability. From here on nothing in the sandbox holds any privilege.
    step("lock securebits", caps::set_securebits(caps::SECBITS_LOCKED_DOWN))?;
    step("drop bounding set", caps::drop_bounding_set())?;
    step("clear ambient capabilities", caps::clear_ambient())?;
    step("drop capabilities", caps::clear_all())?;
    step("set no_new_privs", caps::set_no_new_privs())?;
    step("make init non-dumpable", process::set_dumpable(false))?;
    // Credential changes (setresuid above) clear the parent-death signal: arm it again,
    // then make sure the host side did not die in between (it holds the sync socket open
    // for the sandbox's whole life, so a hang-up means it is gone).
    if ctx.agent.is_none() {
        step("set parent-death signal", process::set_pdeathsig(libc::SIGKILL))?;
    }
    if safehouse_sys::process::hung_up(&ctx.sync_read) {
        return Err("the host side went away during setup".into());
    }

    // 8b. Exec notification: every execve/execveat waits for the host side, which
    //     records it (daemon sandboxes, crate::execwatch) and, for a tool with
    //     tools.limits, moves the caller into its own cgroup first. The listener goes to
    //     the host with the limited tools' inodes; the sandbox keeps no copy (the OwnedFd
    //     is closed at the end of this block, before any untrusted code exists).
    if !ctx.plan.tools.limits.is_empty() || ctx.watch_execs {
        if ctx.agent.is_some() && !ctx.plan.tools.limits.is_empty() && !ctx.watch_execs {
            return Err("tools.limits: per-tool limits in daemon sandboxes are enforced by the exec watcher, which SAFEHOUSE_EXECWATCH=0 turns off; remove [tools.limits] or unset SAFEHOUSE_EXECWATCH".into());
        }
        let program: Vec<libc::sock_filter> =
            safehouse_policy::seccomp::exec_notify_filter(&safehouse_policy::seccomp::NATIVE)
                .iter()
                .map(|i| libc::sock_filter { code: i.code, jt: i.jt, jf: i.jf, k: i.k })
                .collect();
        let listener = safehouse_sys::seccomp::install_listener_filter(&program)
            .map_err(|e| format!("install the exec notification filter: {e}"))?;
        step(
            "send the exec listener to the host side",
            safehouse_sys::unix::send_with_fds(
                &ctx.sync_read,
                &crate::tools::encode_table(&tools),
                &[listener.as_raw_fd()],
            ),
        )?;
        drop(listener);
    }
    drop(tools);

    // 9. Seccomp, last: after it only the allowlisted syscalls exist.
    let program = &crate::seccomp_program::SANDBOX_FILTER;
    if program.is_empty() {
        return Err("seccomp: the filter is empty; refusing to run unfiltered".into());
    }
    trace("child: landlock, caps");
    step("install seccomp filter", safehouse_sys::seccomp::install_filter(program))?;
    trace("child: seccomp");
    Ok(())
}

/// Egress allowed: listens on 127.0.0.1:GATEWAY_PORT in the sandbox's own network
/// namespace and hands the socket to the host side, whose gateway accepts on it. The
/// sandbox keeps no copy: sandboxed code can connect to it, never accept on it.
fn open_gateway_listener(sync: &OwnedFd) -> Result<(), String> {
    let port = safehouse_policy::plan::GATEWAY_PORT;
    let listener = std::net::TcpListener::bind(("127.0.0.1", port))
        .map_err(|e| format!("open the gateway's listener on 127.0.0.1:{port}: {e}"))?;
    // A deep queue: a burst of connections waits for the gateway instead of being dropped
    // (a dropped SYN costs the client a 1 s retransmit).
    step("size the gateway's accept queue", net::set_backlog(&listener, 4096))?;
    step(
        "hand the gateway's listener to the host side",
        safehouse_sys::unix::send_with_fds(sync, b"g", &[listener.as_raw_fd()]),
    )
}

/// Sends the host side a descriptor of this sandbox's root directory; the sandbox keeps
/// no copy (it already has `/`).
fn hand_over_root(sync: &OwnedFd) -> Result<(), String> {
    let root = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open("/")
        .map_err(|e| format!("open the new root for the host side: {e}"))?;
    step("hand the root to the host side", safehouse_sys::unix::send_with_fds(sync, b"r", &[root.as_raw_fd()]))
}

/// Waits for the host side's next go message; returns the descriptors it carried.
fn wait_for_host(sync: &OwnedFd, what: &str) -> Result<Vec<OwnedFd>, String> {
    let mut go = [0u8; 8];
    match safehouse_sys::unix::recv_with_fds(sync, &mut go) {
        Ok((n, fds)) if n > 0 => Ok(fds),
        _ => Err(format!("the host side went away before setting up {what}")),
    }
}

fn apply_landlock(plan: &Plan, tools: &[crate::tools::Grant]) -> Result<(), String> {
    let abi = landlock::abi_version().map_err(|e| format!("landlock: unavailable ({e}); the sandbox requires it"))?;
    if abi < MIN_ABI {
        return Err(format!("landlock: ABI {abi} is older than the required {MIN_ABI}"));
    }
    let rules = &plan.landlock;
    let handled = rules.handled & fs_rights_for_abi(abi);
    let scopes = rules.scopes & scopes_for_abi(abi);
    let ruleset = landlock::create_ruleset(handled, scopes).map_err(|e| format!("landlock: create ruleset: {e}"))?;
    for rule in &rules.rules {
        let access = rule.access & handled;
        match landlock::add_path_rule(&ruleset, &rule.path, access) {
            Ok(()) => {}
            // A rule for a path this sandbox does not have (e.g. no /dev/tty on the host)
            // grants nothing; skipping it is the stricter outcome.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(format!("landlock: rule for {}: {e}", rule.path)),
        }
    }
    let exec = EXECUTE_FILE & handled;
    if plan.tools.restricts_exec() && exec == 0 {
        return Err("landlock: this kernel cannot restrict execution, which tools.allow needs".into());
    }
    for grant in tools {
        landlock::add_fd_rule(&ruleset, grant.fd.as_fd(), exec)
            .map_err(|e| format!("landlock: execute rule for {}: {e}", grant.path))?;
    }
    step("set no_new_privs", caps::set_no_new_privs())?;
    landlock::restrict_self(&ruleset).map_err(|e| format!("landlock: restrict: {e}"))
}

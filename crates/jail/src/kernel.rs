//! The kernel as the sandbox's setup sees it: one trait over the system calls the setup
//! steps make ([`crate::setup`]), in the manner of youki's `Syscall`. [`Real`] makes them
//! (through `safehouse-sys`); the tests' fake records each call and fails the one it is
//! told to, so the order of the steps and what a failing step stops are checked without
//! root. The setup is generic over it: no dynamic dispatch on the start path.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use safehouse_policy::plan::Plan;
use safehouse_policy::tools::ToolsPlan;
use safehouse_sys::{caps, net, process};

use crate::mounts::Prepared;
use crate::tools::{Grant, ToolsError};

/// The system calls of the setup steps, each named for what it does.
pub trait Kernel {
    fn close_fds_except(&mut self, keep: &[RawFd]) -> io::Result<()>;
    fn erase_host_args(&mut self) -> io::Result<()>;
    fn set_parent_death_signal(&mut self) -> io::Result<()>;
    /// The host side's next go message and the descriptors it carried; an error when the
    /// host side hung up instead.
    fn wait_for_host(&mut self, sync: &OwnedFd) -> io::Result<Vec<OwnedFd>>;
    /// A message (and descriptors) to the host side.
    fn send_to_host(&mut self, sync: &OwnedFd, msg: &[u8], fds: &[RawFd]) -> io::Result<()>;
    /// Whether the host side has hung up.
    fn host_gone(&mut self, sync: &OwnedFd) -> bool;

    fn keep_capabilities(&mut self) -> io::Result<()>;
    fn drop_supplementary_groups(&mut self) -> io::Result<()>;
    fn set_gid(&mut self, gid: u32) -> io::Result<()>;
    fn set_uid(&mut self, uid: u32) -> io::Result<()>;
    fn set_umask(&mut self, mask: u32);

    /// The filesystem view (crate::mounts); the error names the operation.
    fn build_filesystem(
        &mut self,
        plan: &Plan,
        prepared: &mut Prepared,
        lowers: &[OwnedFd],
        layer: Option<&OwnedFd>,
    ) -> io::Result<()>;

    /// A new terminal (master, other end) from the sandbox's /dev/ptmx.
    fn open_terminal(&mut self) -> io::Result<(OwnedFd, OwnedFd)>;

    fn set_hostname(&mut self, name: &str) -> io::Result<()>;
    fn bring_up_loopback(&mut self) -> io::Result<()>;
    /// A socket listening on 127.0.0.1:`port` of the sandbox's network namespace.
    fn listen_on_loopback(&mut self, port: u16, backlog: i32) -> io::Result<OwnedFd>;
    /// The sandbox's root directory, opened.
    fn open_root(&mut self) -> io::Result<OwnedFd>;

    fn set_rlimit(&mut self, resource: libc::__rlimit_resource_t, soft: u64, hard: u64) -> io::Result<()>;
    /// Moves this process into a cgroup by writing "0" to its `tasks` file.
    fn join_cgroup(&mut self, tasks: OwnedFd) -> io::Result<()>;
    fn unshare_cgroup_namespace(&mut self) -> io::Result<()>;

    /// `tools.allow` in this (the sandbox's) view (crate::tools::expand).
    fn expand_tools(&mut self, tools: &ToolsPlan) -> Result<Vec<Grant>, ToolsError>;
    fn landlock_abi(&mut self) -> io::Result<u32>;
    fn landlock_ruleset(&mut self, handled: u64, scopes: u64) -> io::Result<OwnedFd>;
    fn landlock_path_rule(&mut self, ruleset: &OwnedFd, path: &str, access: u64) -> io::Result<()>;
    fn landlock_fd_rule(&mut self, ruleset: &OwnedFd, grant: &Grant, access: u64) -> io::Result<()>;
    fn landlock_restrict(&mut self, ruleset: &OwnedFd) -> io::Result<()>;

    fn lock_securebits(&mut self) -> io::Result<()>;
    fn drop_bounding_set(&mut self) -> io::Result<()>;
    fn clear_ambient_capabilities(&mut self) -> io::Result<()>;
    fn drop_capabilities(&mut self) -> io::Result<()>;
    /// A build step's root: the bounding set and the permitted and effective sets become
    /// `caps`, the ambient set empty (plan::BUILD_CAPABILITIES).
    fn keep_only_capabilities(&mut self, caps: u64) -> io::Result<()>;
    fn set_no_new_privs(&mut self) -> io::Result<()>;
    fn make_non_dumpable(&mut self) -> io::Result<()>;

    /// Installs the exec notification filter; returns its listener.
    fn install_exec_listener(&mut self, program: &[libc::sock_filter]) -> io::Result<OwnedFd>;
    fn install_seccomp(&mut self, program: &[libc::sock_filter]) -> io::Result<()>;
}

/// The real kernel.
pub struct Real;

impl Kernel for Real {
    fn close_fds_except(&mut self, keep: &[RawFd]) -> io::Result<()> {
        safehouse_sys::fs::close_all_except(keep)
    }

    fn erase_host_args(&mut self) -> io::Result<()> {
        erase_host_args()
    }

    fn set_parent_death_signal(&mut self) -> io::Result<()> {
        process::set_pdeathsig(libc::SIGKILL)
    }

    fn wait_for_host(&mut self, sync: &OwnedFd) -> io::Result<Vec<OwnedFd>> {
        let mut go = [0u8; 8];
        match safehouse_sys::unix::recv_with_fds(sync, &mut go) {
            Ok((n, fds)) if n > 0 => Ok(fds),
            Ok(_) => Err(io::Error::from_raw_os_error(libc::EPIPE)),
            Err(e) => Err(e),
        }
    }

    fn send_to_host(&mut self, sync: &OwnedFd, msg: &[u8], fds: &[RawFd]) -> io::Result<()> {
        safehouse_sys::unix::send_with_fds(sync, msg, fds)
    }

    fn host_gone(&mut self, sync: &OwnedFd) -> bool {
        process::hung_up(sync)
    }

    fn keep_capabilities(&mut self) -> io::Result<()> {
        caps::set_keep_caps(true)
    }

    fn drop_supplementary_groups(&mut self) -> io::Result<()> {
        caps::setgroups_empty()
    }

    fn set_gid(&mut self, gid: u32) -> io::Result<()> {
        caps::setresgid(gid)
    }

    fn set_uid(&mut self, uid: u32) -> io::Result<()> {
        caps::setresuid(uid)
    }

    fn set_umask(&mut self, mask: u32) {
        safehouse_sys::fs::umask(mask);
    }

    fn build_filesystem(
        &mut self,
        plan: &Plan,
        prepared: &mut Prepared,
        lowers: &[OwnedFd],
        layer: Option<&OwnedFd>,
    ) -> io::Result<()> {
        crate::mounts::build(self, plan, prepared, lowers, layer).map_err(io::Error::other)
    }

    fn open_terminal(&mut self) -> io::Result<(OwnedFd, OwnedFd)> {
        process::openpty()
    }

    fn set_hostname(&mut self, name: &str) -> io::Result<()> {
        net::sethostname(name)
    }

    fn bring_up_loopback(&mut self) -> io::Result<()> {
        net::loopback_up()
    }

    fn listen_on_loopback(&mut self, port: u16, backlog: i32) -> io::Result<OwnedFd> {
        let listener = std::net::TcpListener::bind(("127.0.0.1", port))?;
        // A deep queue: a burst of connections waits for the gateway instead of being
        // dropped (a dropped SYN costs the client a 1 s retransmit).
        net::set_backlog(&listener, backlog)?;
        Ok(listener.into())
    }

    fn open_root(&mut self) -> io::Result<OwnedFd> {
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open("/")
            .map(OwnedFd::from)
    }

    fn set_rlimit(&mut self, resource: libc::__rlimit_resource_t, soft: u64, hard: u64) -> io::Result<()> {
        process::setrlimit(resource, soft, hard)
    }

    fn join_cgroup(&mut self, tasks: OwnedFd) -> io::Result<()> {
        File::from(tasks).write_all(b"0")
    }

    fn unshare_cgroup_namespace(&mut self) -> io::Result<()> {
        process::unshare(libc::CLONE_NEWCGROUP)
    }

    fn expand_tools(&mut self, tools: &ToolsPlan) -> Result<Vec<Grant>, ToolsError> {
        let root =
            File::open("/").map_err(|source| ToolsError::List { pattern: String::new(), dir: "/".into(), source })?;
        crate::tools::expand(std::os::fd::AsFd::as_fd(&root), tools)
    }

    fn landlock_abi(&mut self) -> io::Result<u32> {
        safehouse_sys::landlock::abi_version()
    }

    fn landlock_ruleset(&mut self, handled: u64, scopes: u64) -> io::Result<OwnedFd> {
        safehouse_sys::landlock::create_ruleset(handled, scopes)
    }

    fn landlock_path_rule(&mut self, ruleset: &OwnedFd, path: &str, access: u64) -> io::Result<()> {
        safehouse_sys::landlock::add_path_rule(ruleset, path, access)
    }

    fn landlock_fd_rule(&mut self, ruleset: &OwnedFd, grant: &Grant, access: u64) -> io::Result<()> {
        safehouse_sys::landlock::add_fd_rule(ruleset, std::os::fd::AsFd::as_fd(&grant.fd), access)
    }

    fn landlock_restrict(&mut self, ruleset: &OwnedFd) -> io::Result<()> {
        safehouse_sys::landlock::restrict_self(ruleset)
    }

    fn lock_securebits(&mut self) -> io::Result<()> {
        caps::set_securebits(caps::SECBITS_LOCKED_DOWN)
    }

    fn drop_bounding_set(&mut self) -> io::Result<()> {
        caps::drop_bounding_set()
    }

    fn clear_ambient_capabilities(&mut self) -> io::Result<()> {
        caps::clear_ambient()
    }

    fn drop_capabilities(&mut self) -> io::Result<()> {
        caps::clear_all()
    }

    fn keep_only_capabilities(&mut self, keep: u64) -> io::Result<()> {
        caps::drop_bounding_set_except(keep)?;
        caps::clear_ambient()?;
        caps::set_capabilities(keep)
    }

    fn set_no_new_privs(&mut self) -> io::Result<()> {
        caps::set_no_new_privs()
    }

    fn make_non_dumpable(&mut self) -> io::Result<()> {
        process::set_dumpable(false)
    }

    fn install_exec_listener(&mut self, program: &[libc::sock_filter]) -> io::Result<OwnedFd> {
        safehouse_sys::seccomp::install_listener_filter(program)
    }

    fn install_seccomp(&mut self, program: &[libc::sock_filter]) -> io::Result<()> {
        safehouse_sys::seccomp::install_filter(program)
    }
}

/// Overwrites the argument and environment strings of this process with NUL bytes (and
/// a name), through /proc/self/mem so no pointer juggling is needed.
fn erase_host_args() -> io::Result<()> {
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

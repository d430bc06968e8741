//! How the gateway process gives up what it does not need, in order, before it reads a byte
//! a sandbox sent. It starts as a fresh image (the daemon re-executes its own binary), so
//! nothing of the daemon's memory (API keys, the audit signing key, the store) is in it.
//!
//! 1. **Descriptors**: everything but stdio and the control socket is closed.
//! 2. **Limits**: open files raised to the hard limit (it holds two sockets and two pipes
//!    per tunnel), no core dumps, not dumpable (no ptrace or `/proc/<pid>/mem` by its uid).
//! 3. **An empty filesystem view**: a new mount namespace whose root is an empty, read-only
//!    tmpfs — the data dir, the keys, the audit log and every host file are not there at all
//!    (ENOENT). As root directly; otherwise inside a new user namespace that maps only the
//!    process's own ids. Skipped (and reported) when neither is possible: Landlock below
//!    still refuses every path.
//! 4. **Identity**: as root, the bounding set is dropped and the process becomes an
//!    unprivileged uid and gid with no supplementary groups, which clears every capability
//!    (`setresuid` away from 0). In a user namespace, its capabilities there are cleared.
//! 5. **no_new_privs**.
//! 6. **Landlock**: every filesystem right handled and none granted (EACCES on any path),
//!    binding TCP ports handled and none granted, abstract unix sockets and signals scoped to
//!    the process. Required: without Landlock the process refuses to run.
//! 7. **seccomp** (last): the gateway profile (`safehouse_policy::seccomp::GATEWAY`).

use std::io;
use std::os::fd::RawFd;

use safehouse_policy::landlock::{fs_rights_for_abi, scopes_for_abi, MIN_ABI};
use safehouse_sys as sys;
use serde::{Deserialize, Serialize};

/// Landlock's `LANDLOCK_ACCESS_NET_BIND_TCP` (ABI 4).
const NET_BIND_TCP: u64 = 1 << 0;
/// The first ABI with network rights.
const NET_ABI: u32 = 4;

/// The unprivileged identity a root daemon's gateway process takes (`nobody`).
pub const DEFAULT_ID: u32 = 65534;

/// Where the empty root is mounted before it becomes the root.
const EMPTY_ROOT_AT: &str = "/tmp";

/// One layer of the confinement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layer {
    MountNs,
    Identity,
    Landlock,
    Seccomp,
}

/// What to apply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confinement {
    /// The identity a root process drops to.
    pub uid: u32,
    pub gid: u32,
    /// Layers to leave out: only the probe of the confinement tests uses this, to show one
    /// layer's own answer; the gateway process always applies every layer.
    #[serde(default)]
    pub skip: Vec<Layer>,
}

impl Default for Confinement {
    fn default() -> Confinement {
        Confinement { uid: DEFAULT_ID, gid: DEFAULT_ID, skip: Vec::new() }
    }
}

/// What was applied.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub layers: Vec<Layer>,
    /// Why a layer that was not skipped could not be applied (the empty view only).
    pub missing: Vec<String>,
    pub landlock_abi: u32,
}

#[derive(Debug, thiserror::Error)]
#[error("the gateway process cannot confine itself: {step}: {source}")]
pub struct ConfineError {
    pub step: &'static str,
    #[source]
    pub source: io::Error,
}

impl ConfineError {
    pub fn layer(&self) -> &'static str {
        self.step
    }
}

fn at(step: &'static str) -> impl Fn(io::Error) -> ConfineError {
    move |source| ConfineError { step, source }
}

/// Applies the confinement to this process, which must still be single-threaded (Landlock
/// and seccomp bind the calling thread and the threads it starts later). `keep`: the
/// descriptors that stay open besides stdio.
pub fn confine(c: &Confinement, keep: &[RawFd]) -> Result<Applied, ConfineError> {
    let mut applied = Applied::default();
    let skip = |l: Layer| c.skip.contains(&l);
    let root = sys::geteuid() == 0;
    let (uid, gid) = (sys::geteuid(), sys::getegid());

    // 1. Descriptors.
    sys::fs::close_all_except(keep).map_err(at("close inherited descriptors"))?;

    // 2. Limits.
    sys::process::raise_nofile_limit().map_err(at("raise the open-file limit"))?;
    sys::process::setrlimit(libc::RLIMIT_CORE, 0, 0).map_err(at("turn core dumps off"))?;
    sys::process::set_dumpable(false).map_err(at("make the process non-dumpable"))?;
    // The bounding set needs CAP_SETPCAP, which goes with the identity.
    let bounding_dropped = root && sys::caps::drop_bounding_set().is_ok();

    // 3. An empty filesystem view.
    if !skip(Layer::MountNs) {
        match empty_view(root, uid, gid) {
            Ok(()) => applied.layers.push(Layer::MountNs),
            Err(e) if root => return Err(e),
            Err(e) => applied.missing.push(format!("{}: {}", e.step, e.source)),
        }
    }

    // 4. Identity. Below this line the process holds no capability.
    if !skip(Layer::Identity) {
        if root {
            if !bounding_dropped {
                sys::caps::drop_bounding_set().map_err(at("drop the capability bounding set"))?;
            }
            sys::caps::setgroups_empty().map_err(at("drop supplementary groups"))?;
            sys::caps::setresgid(c.gid).map_err(at("become the unprivileged gid"))?;
            sys::caps::setresuid(c.uid).map_err(at("become the unprivileged uid"))?;
        } else if applied.layers.contains(&Layer::MountNs) {
            // The capabilities the new user namespace gave.
            let _ = sys::caps::drop_bounding_set();
            sys::caps::clear_ambient().map_err(at("clear ambient capabilities"))?;
            sys::caps::clear_all().map_err(at("clear capabilities"))?;
        }
        applied.layers.push(Layer::Identity);
    }

    // 5. no_new_privs (Landlock and seccomp need it without CAP_SYS_ADMIN).
    sys::caps::set_no_new_privs().map_err(at("set no_new_privs"))?;

    // 6. Landlock.
    if !skip(Layer::Landlock) {
        applied.landlock_abi = landlock().map_err(at("Landlock"))?;
        applied.layers.push(Layer::Landlock);
    }

    // 7. seccomp, last.
    if !skip(Layer::Seccomp) {
        let filter = safehouse_policy::seccomp::gateway_filter();
        let program: Vec<sys::seccomp::sock_filter> =
            filter.iter().map(|i| sys::seccomp::sock_filter { code: i.code, jt: i.jt, jf: i.jf, k: i.k }).collect();
        sys::seccomp::install_filter(&program).map_err(at("install the seccomp filter"))?;
        applied.layers.push(Layer::Seccomp);
    }
    Ok(applied)
}

/// A new mount namespace whose root is an empty read-only tmpfs.
fn empty_view(root: bool, uid: u32, gid: u32) -> Result<(), ConfineError> {
    if root {
        sys::process::unshare(libc::CLONE_NEWNS).map_err(at("a new mount namespace"))?;
    } else {
        sys::process::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS).map_err(at("a new user and mount namespace"))?;
        let write = |file: &str, text: String| std::fs::write(format!("/proc/self/{file}"), text);
        write("setgroups", "deny".into()).map_err(at("deny setgroups in the user namespace"))?;
        write("uid_map", format!("{uid} {uid} 1\n")).map_err(at("map the process's uid"))?;
        write("gid_map", format!("{gid} {gid} 1\n")).map_err(at("map the process's gid"))?;
    }
    let flags = (libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC) as libc::c_ulong;
    sys::mount::mount(None, "/", None, (libc::MS_REC | libc::MS_PRIVATE) as libc::c_ulong, None)
        .map_err(at("make the mounts private"))?;
    sys::mount::mount(Some("tmpfs"), EMPTY_ROOT_AT, Some("tmpfs"), flags, Some("size=4k,mode=0555"))
        .map_err(at("mount an empty tmpfs"))?;
    sys::process::chdir(EMPTY_ROOT_AT).map_err(at("enter the empty tmpfs"))?;
    sys::mount::pivot_root(".", ".").map_err(at("make the empty tmpfs the root"))?;
    sys::mount::umount2(".", libc::MNT_DETACH).map_err(at("detach the host's filesystem"))?;
    sys::process::chdir("/").map_err(at("enter the new root"))?;
    let ro = flags | (libc::MS_REMOUNT | libc::MS_RDONLY) as libc::c_ulong;
    sys::mount::mount(None, "/", None, ro, None).map_err(at("make the new root read-only"))?;
    Ok(())
}

/// Every filesystem right and TCP binding handled with nothing granted; abstract unix
/// sockets and signals scoped. Returns the ABI.
fn landlock() -> io::Result<u32> {
    let abi = sys::landlock::abi_version()?;
    if abi < MIN_ABI {
        return Err(io::Error::other(format!("ABI {abi} is older than {MIN_ABI}")));
    }
    let net = if abi >= NET_ABI { NET_BIND_TCP } else { 0 };
    let ruleset = sys::landlock::create_ruleset_with_net(fs_rights_for_abi(abi), net, scopes_for_abi(abi))?;
    sys::landlock::restrict_self(&ruleset)?;
    Ok(abi)
}

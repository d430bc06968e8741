//! What this host offers: the facts `run` checks before creating a sandbox and `doctor`
//! reports.

use std::os::unix::fs::MetadataExt;

use serde::Serialize;

use safehouse_policy::plan::{HostEntry, HostView, RunRequest};

use crate::cgroup::{self, CgroupSupport};

#[derive(Debug, Clone, Serialize)]
pub struct Features {
    pub kernel: String,
    pub root: bool,
    pub uid: u32,
    pub user_namespaces: Result<(), String>,
    pub landlock_abi: Result<u32, String>,
    pub seccomp: Result<(), String>,
    pub overlayfs: bool,
    #[serde(skip)]
    pub cgroups: CgroupSupport,
    pub cgroup_summary: String,
}

pub fn features() -> Features {
    let uid = safehouse_sys::geteuid();
    let cgroups = cgroup::detect();
    let cgroup_summary = summarize(&cgroups);
    Features {
        kernel: safehouse_sys::kernel_release(),
        root: uid == 0,
        uid,
        user_namespaces: user_namespaces(),
        landlock_abi: safehouse_sys::landlock::abi_version().map_err(|e| match e.raw_os_error() {
            Some(libc::ENOSYS) => "the kernel has no Landlock (CONFIG_SECURITY_LANDLOCK)".to_string(),
            Some(libc::EOPNOTSUPP) => "Landlock is disabled; add landlock to the lsm= boot parameter".to_string(),
            _ => e.to_string(),
        }),
        seccomp: match safehouse_sys::seccomp::current_mode() {
            None => Err("the kernel has no seccomp (CONFIG_SECCOMP_FILTER)".into()),
            Some(2) => Ok(()), // already filtered: stacking still works
            Some(_) if safehouse_sys::seccomp::action_available(0x8000_0000) => Ok(()),
            Some(_) => Err("seccomp filters with SECCOMP_RET_KILL_PROCESS are unavailable (kernel < 4.14)".into()),
        },
        overlayfs: std::fs::read_to_string("/proc/filesystems").map(|s| s.contains("\toverlay\n")).unwrap_or(false),
        cgroups,
        cgroup_summary,
    }
}

fn user_namespaces() -> Result<(), String> {
    let max =
        std::fs::read_to_string("/proc/sys/user/max_user_namespaces").ok().and_then(|s| s.trim().parse::<u64>().ok());
    if max == Some(0) {
        return Err("user.max_user_namespaces is 0; set it above 0 (sysctl user.max_user_namespaces=10000)".into());
    }
    if safehouse_sys::geteuid() != 0 {
        if let Ok(v) = std::fs::read_to_string("/proc/sys/kernel/unprivileged_userns_clone") {
            if v.trim() == "0" {
                return Err(
                    "unprivileged user namespaces are disabled; set kernel.unprivileged_userns_clone=1 or run as root"
                        .into(),
                );
            }
        }
        if let Ok(v) = std::fs::read_to_string("/proc/sys/kernel/apparmor_restrict_unprivileged_userns") {
            if v.trim() == "1" {
                return Err("AppArmor restricts unprivileged user namespaces (kernel.apparmor_restrict_unprivileged_userns=1); run as root or allow safehouse in an AppArmor profile".into());
            }
        }
    }
    Ok(())
}

/// Fills the planner's view of the host with `lstat` of every path it may ask about.
pub fn host_view(req: &RunRequest) -> HostView {
    let mut view = HostView::default();
    for path in HostView::wanted(req) {
        let entry = match std::fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_symlink() => HostEntry::Symlink(
                std::fs::read_link(&path).map(|t| t.to_string_lossy().into_owned()).unwrap_or_default(),
            ),
            Ok(m) if m.is_dir() => HostEntry::Dir,
            Ok(_) => HostEntry::File,
            Err(_) => HostEntry::Missing,
        };
        view.entries.insert(path, entry);
    }
    view
}

/// Owner uid and gid of a host path.
pub fn owner(path: &str) -> Option<(u32, u32)> {
    std::fs::metadata(path).ok().map(|m| (m.uid(), m.gid()))
}

/// One line about the cgroup setup, e.g. "v1 (memory, pids, cpu, cpuacct, freezer)".
pub fn summarize(c: &CgroupSupport) -> String {
    match &c.version {
        None => format!("none ({})", c.reason.clone().unwrap_or_default()),
        Some(v) => {
            let v = match v {
                cgroup::CgroupVersion::V1 => "v1",
                cgroup::CgroupVersion::V2 => "v2",
            };
            let mut s = format!("{v} ({})", c.controllers.join(", "));
            if !c.writable {
                s.push_str(&format!(", not writable: {}", c.reason.clone().unwrap_or_default()));
            }
            s
        }
    }
}

/// Whether /sys/fs/cgroup is a pure cgroup v2 mount (one statfs, no parsing).
pub fn cgroup2_unified() -> bool {
    safehouse_sys::fs::statfs_type("/sys/fs/cgroup").map(|t| t == CGROUP2_SUPER_MAGIC).unwrap_or(false)
}

const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

//! What the host offers: cgroup version, mount points, usable controllers and
//! whether we may create cgroups. Reads `/proc/self/{mountinfo,cgroup}`
//! and a few cgroupfs files; never writes.
//!
//! The decision is a pure function of those texts plus a [`Host`] that answers
//! "read this file" and "who owns this path", so the v2 paths are unit-tested
//! on this v1 machine with fixtures.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use super::CgroupVersion;

/// v1 controllers safehouse uses, in the order hierarchies are created.
pub(crate) const V1_CONTROLLERS: [&str; 5] = ["memory", "pids", "cpu", "cpuacct", "freezer"];
/// v2 controllers safehouse enables (freeze and kill are core v2 features).
pub(crate) const V2_CONTROLLERS: [&str; 3] = ["memory", "pids", "cpu"];

/// One cgroup v1 hierarchy safehouse uses.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct V1Hierarchy {
    /// Where the hierarchy is mounted, e.g. `/sys/fs/cgroup/memory`.
    pub mount_point: PathBuf,
    /// The safehouse controllers bound to it, e.g. `["cpu", "cpuacct"]` when co-mounted.
    pub controllers: Vec<String>,
}

/// What this host offers, from [`detect`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CgroupSupport {
    /// The version [`create`](super::create) will use; `None` when no cgroupfs is mounted.
    pub version: Option<CgroupVersion>,
    /// Usable controllers among those safehouse uses (v1: memory, pids, cpu,
    /// cpuacct, freezer; v2: memory, pids, cpu), sorted.
    pub controllers: Vec<String>,
    /// Best guess whether we may create cgroups (the mount is read-write and
    /// the parent directory is ours); `create` is the real test.
    pub writable: bool,
    /// v2: the cgroup under which `safehouse/<name>` is made (the unified root
    /// as root, the top of our delegated subtree rootless). v1: the directory
    /// holding the hierarchy mounts, for messages only.
    pub base: PathBuf,
    /// v1 only: the hierarchies `safehouse/<name>` is made in, one per mount.
    pub hierarchies: Vec<V1Hierarchy>,
    /// v2 only: `base` is a subtree delegated to a non-root user.
    pub delegated: bool,
    /// Why `version` is `None` or `writable` is false.
    pub reason: Option<String>,
}

/// Detects the host's cgroup support. Never fails: problems land in `reason`.
pub fn detect() -> CgroupSupport {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let self_cgroup = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    decide(&parse_mountinfo(&mountinfo), &self_cgroup, safehouse_sys::geteuid(), &RealHost)
}

/// The file-system questions detection asks, faked in tests.
pub(crate) trait Host {
    fn read(&self, path: &Path) -> Option<String>;
    fn owner(&self, path: &Path) -> Option<u32>;
}

pub(crate) struct RealHost;

impl Host for RealHost {
    fn read(&self, path: &Path) -> Option<String> {
        fs::read_to_string(path).ok()
    }
    fn owner(&self, path: &Path) -> Option<u32> {
        fs::symlink_metadata(path).ok().map(|m| m.uid())
    }
}

/// A cgroup or cgroup2 mount from mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CgroupMount {
    /// `major:minor`; equal for bind mounts of one hierarchy.
    pub dev: String,
    /// The cgroup mounted there, relative to the hierarchy (or namespace) root.
    pub root: String,
    pub mount_point: PathBuf,
    pub v2: bool,
    pub read_only: bool,
    /// v1: the safehouse controllers among the super options.
    pub controllers: Vec<String>,
}

/// Parses the cgroup mounts out of `/proc/self/mountinfo`.
pub(crate) fn parse_mountinfo(text: &str) -> Vec<CgroupMount> {
    text.lines().filter_map(parse_mount_line).collect()
}

fn parse_mount_line(line: &str) -> Option<CgroupMount> {
    // "<id> <parent> <dev> <root> <mount point> <options> [optional...] - <fstype> <source> <super options>"
    let (left, right) = line.split_once(" - ")?;
    let left: Vec<&str> = left.split(' ').collect();
    let right: Vec<&str> = right.split(' ').collect();
    if left.len() < 6 || right.len() < 3 {
        return None;
    }
    let v2 = match right[0] {
        "cgroup2" => true,
        "cgroup" => false,
        _ => return None,
    };
    let super_opts: Vec<&str> = right[2].split(',').collect();
    let read_only = left[5].split(',').any(|o| o == "ro") || super_opts.contains(&"ro");
    let controllers = if v2 {
        Vec::new()
    } else {
        V1_CONTROLLERS.iter().filter(|c| super_opts.contains(c)).map(|c| c.to_string()).collect()
    };
    Some(CgroupMount {
        dev: left[2].to_owned(),
        root: unescape(left[3]),
        mount_point: PathBuf::from(unescape(left[4])),
        v2,
        read_only,
        controllers,
    })
}

/// Undoes mountinfo's octal escapes (`\040` for space, `\011`, `\012`, `\134`).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match octal {
            Some(d) if bytes[i] == b'\\' && d[0] <= b'3' => {
                out.push((d[0] - b'0') << 6 | (d[1] - b'0') << 3 | (d[2] - b'0'));
                i += 4;
            }
            _ => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The v2 path from `/proc/self/cgroup` (the `0::/...` line).
pub(crate) fn v2_self_path(self_cgroup: &str) -> Option<&str> {
    self_cgroup.lines().find_map(|l| l.strip_prefix("0::"))
}

/// The whole decision, pure given its inputs.
pub(crate) fn decide(mounts: &[CgroupMount], self_cgroup: &str, euid: u32, host: &dyn Host) -> CgroupSupport {
    let v2 = v2_support(mounts, self_cgroup, euid, host);
    let v1 = v1_support(mounts, euid, host);
    let has = |s: &Option<CgroupSupport>, c: &str| s.as_ref().is_some_and(|s| s.controllers.iter().any(|x| x == c));
    // Prefer v2 when it carries the controllers that matter (pure v2 hosts);
    // on hybrid hosts the controllers sit on v1 and v2 is only for tracking.
    let v2_complete = has(&v2, "memory") && has(&v2, "pids");
    let chosen = if v2_complete {
        v2
    } else if has(&v1, "memory") {
        v1
    } else {
        v2.or(v1)
    };
    chosen.unwrap_or_else(|| CgroupSupport {
        version: None,
        controllers: Vec::new(),
        writable: false,
        base: PathBuf::new(),
        hierarchies: Vec::new(),
        delegated: false,
        reason: Some("no cgroup or cgroup2 file system is mounted".into()),
    })
}

/// The v2 candidate: the first cgroup2 mount, preferring `/sys/fs/cgroup`.
pub(crate) fn v2_support(
    mounts: &[CgroupMount],
    self_cgroup: &str,
    euid: u32,
    host: &dyn Host,
) -> Option<CgroupSupport> {
    let v2_mounts = || mounts.iter().filter(|m| m.v2);
    let mount = v2_mounts().find(|m| m.mount_point == Path::new("/sys/fs/cgroup")).or_else(|| v2_mounts().next())?;
    let mut support = CgroupSupport {
        version: Some(CgroupVersion::V2),
        controllers: Vec::new(),
        writable: false,
        base: mount.mount_point.clone(),
        hierarchies: Vec::new(),
        delegated: false,
        reason: None,
    };
    if mount.read_only {
        support.reason = Some(format!("cgroup2 at {} is mounted read-only", mount.mount_point.display()));
        return Some(support);
    }
    // Our own cgroup as a directory, then up while the directories are ours:
    // the topmost one is the root of our delegation (the mount itself as root).
    let own = v2_self_path(self_cgroup).and_then(|p| cgroup_dir(mount, p)).unwrap_or_else(|| mount.mount_point.clone());
    let owned = |dir: &Path| {
        ["", "cgroup.procs", "cgroup.subtree_control"].iter().all(|f| host.owner(&dir.join(f)) == Some(euid))
    };
    let mut base = None;
    let mut dir = own.as_path();
    while owned(dir) {
        base = Some(dir.to_owned());
        if dir == mount.mount_point {
            break;
        }
        match dir.parent() {
            Some(parent) => dir = parent,
            None => break,
        }
    }
    match base {
        Some(base) => {
            support.writable = true;
            support.delegated = base != mount.mount_point;
            support.base = base;
        }
        None => {
            support.reason = Some(format!(
                "{} is not owned by uid {euid}; run as root or delegate a cgroup v2 subtree \
                 (e.g. systemd-run --user --scope -p Delegate=yes)",
                own.display()
            ));
        }
    }
    let available = host.read(&support.base.join("cgroup.controllers")).unwrap_or_default();
    support.controllers = V2_CONTROLLERS
        .iter()
        .filter(|c| available.split_whitespace().any(|a| a == **c))
        .map(|c| c.to_string())
        .collect();
    support.controllers.sort();
    Some(support)
}

/// Maps a path from `/proc/self/cgroup` to a directory under `mount`, or
/// `None` when it lies outside what is mounted there or is not a plain path.
fn cgroup_dir(mount: &CgroupMount, path: &str) -> Option<PathBuf> {
    let path = Path::new(path);
    let relative = path.strip_prefix(&mount.root).ok()?;
    if !relative.components().all(|c| matches!(c, Component::Normal(_))) {
        return None;
    }
    if relative.as_os_str().is_empty() {
        return Some(mount.mount_point.clone());
    }
    Some(mount.mount_point.join(relative))
}

/// The v1 candidate: one entry per hierarchy carrying a safehouse controller.
pub(crate) fn v1_support(mounts: &[CgroupMount], euid: u32, host: &dyn Host) -> Option<CgroupSupport> {
    let mut seen_devs: Vec<&str> = Vec::new();
    let mut hierarchies = Vec::new();
    let mut read_only = Vec::new();
    for mount in mounts.iter().filter(|m| !m.v2 && !m.controllers.is_empty()) {
        // A hierarchy bind-mounted twice shares its device: use it once.
        if seen_devs.contains(&mount.dev.as_str()) {
            continue;
        }
        seen_devs.push(&mount.dev);
        if mount.read_only {
            read_only.push(mount.mount_point.display().to_string());
        }
        hierarchies
            .push(V1Hierarchy { mount_point: mount.mount_point.clone(), controllers: mount.controllers.clone() });
    }
    if hierarchies.is_empty() {
        return None;
    }
    let mut controllers: Vec<String> = hierarchies.iter().flat_map(|h| h.controllers.iter().cloned()).collect();
    controllers.sort();
    let not_ours: Vec<String> = hierarchies
        .iter()
        .filter(|h| host.owner(&h.mount_point) != Some(euid))
        .map(|h| h.mount_point.display().to_string())
        .collect();
    let reason = if !read_only.is_empty() {
        Some(format!("cgroup v1 hierarchies mounted read-only: {}", read_only.join(", ")))
    } else if !not_ours.is_empty() {
        Some(format!("cgroup v1 hierarchies not owned by uid {euid}: {}; cgroup v1 needs root", not_ours.join(", ")))
    } else {
        None
    };
    let base = hierarchies[0].mount_point.parent().map(Path::to_owned).unwrap_or_default();
    Some(CgroupSupport {
        version: Some(CgroupVersion::V1),
        controllers,
        writable: reason.is_none(),
        base,
        hierarchies,
        delegated: false,
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;
    use std::collections::HashMap;

    /// This machine: v1 hierarchies plus an empty cgroup2 at .../unified.
    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const HYBRID_SELF: &str = "9:name=systemd:/\n4:memory:/process_api/ebfb\n1:cpu:/\n0::/\n";

    /// A systemd host of the Docker era: cpu and cpuacct co-mounted, shared
    /// propagation fields, and a bind mount of the memory hierarchy.
    const HYBRID_COMOUNT: &str = "\
25 24 0:22 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
27 25 0:24 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,xattr,name=systemd
30 25 0:27 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,cpu,cpuacct
31 25 0:28 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,memory
32 25 0:29 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime shared:16 - cgroup cgroup rw,pids
33 25 0:30 / /sys/fs/cgroup/freezer rw,nosuid,nodev,noexec,relatime shared:17 - cgroup cgroup rw,freezer
90 60 0:28 / /mnt/mem\\040copy rw,relatime - cgroup cgroup rw,memory
";

    /// A pure v2 host (systemd unified mode).
    const PURE_V2: &str = "\
22 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw
30 22 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";
    const ROOTLESS_SELF: &str = "0::/user.slice/user-1000.slice/user@1000.service/app.slice/term.scope\n";

    /// Fake file system: file contents and owners; everything else is root's.
    #[derive(Default)]
    struct FakeHost {
        files: HashMap<PathBuf, String>,
        owners: HashMap<PathBuf, u32>,
    }

    impl FakeHost {
        fn file(mut self, path: &str, text: &str) -> Self {
            self.files.insert(path.into(), text.into());
            self
        }
        /// `dir`, its cgroup.procs and cgroup.subtree_control belong to `uid`.
        fn owned_cgroup(mut self, dir: &str, uid: u32) -> Self {
            for f in ["", "cgroup.procs", "cgroup.subtree_control"] {
                self.owners.insert(Path::new(dir).join(f), uid);
            }
            self
        }
    }

    impl Host for FakeHost {
        fn read(&self, path: &Path) -> Option<String> {
            self.files.get(path).cloned()
        }
        fn owner(&self, path: &Path) -> Option<u32> {
            Some(self.owners.get(path).copied().unwrap_or(0))
        }
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_hybrid_mountinfo() {
        let mounts = parse_mountinfo(HYBRID);
        assert_eq!(mounts.len(), 10, "tmpfs is not a cgroup mount");
        assert_eq!(
            mounts[0],
            CgroupMount {
                dev: "0:29".into(),
                root: "/".into(),
                mount_point: "/sys/fs/cgroup/cpu".into(),
                v2: false,
                read_only: false,
                controllers: strings(&["cpu"]),
            }
        );
        let unified = mounts.iter().find(|m| m.v2).unwrap();
        assert_eq!(unified.mount_point, Path::new("/sys/fs/cgroup/unified"));
        let systemd = mounts.iter().find(|m| m.mount_point.ends_with("systemd")).unwrap();
        assert!(systemd.controllers.is_empty(), "name=systemd is no controller");
    }

    #[test]
    fn detects_v1_on_this_kind_of_hybrid_host() {
        let host = FakeHost::default().file("/sys/fs/cgroup/unified/cgroup.controllers", "hugetlb\n");
        let support = decide(&parse_mountinfo(HYBRID), HYBRID_SELF, 0, &host);
        assert_eq!(
            support,
            CgroupSupport {
                version: Some(CgroupVersion::V1),
                controllers: strings(&["cpu", "cpuacct", "freezer", "memory", "pids"]),
                writable: true,
                base: "/sys/fs/cgroup".into(),
                hierarchies: vec![
                    V1Hierarchy { mount_point: "/sys/fs/cgroup/cpu".into(), controllers: strings(&["cpu"]) },
                    V1Hierarchy { mount_point: "/sys/fs/cgroup/cpuacct".into(), controllers: strings(&["cpuacct"]) },
                    V1Hierarchy { mount_point: "/sys/fs/cgroup/memory".into(), controllers: strings(&["memory"]) },
                    V1Hierarchy { mount_point: "/sys/fs/cgroup/freezer".into(), controllers: strings(&["freezer"]) },
                    V1Hierarchy { mount_point: "/sys/fs/cgroup/pids".into(), controllers: strings(&["pids"]) },
                ],
                delegated: false,
                reason: None,
            }
        );
    }

    #[test]
    fn comounted_and_bind_mounted_hierarchies_are_used_once() {
        let support = decide(&parse_mountinfo(HYBRID_COMOUNT), "0::/\n", 0, &FakeHost::default());
        assert_eq!(support.version, Some(CgroupVersion::V1));
        let mounts: Vec<&Path> = support.hierarchies.iter().map(|h| h.mount_point.as_path()).collect();
        assert_eq!(
            mounts,
            [
                Path::new("/sys/fs/cgroup/cpu,cpuacct"),
                Path::new("/sys/fs/cgroup/memory"),
                Path::new("/sys/fs/cgroup/pids"),
                Path::new("/sys/fs/cgroup/freezer"),
            ]
        );
        assert_eq!(support.hierarchies[0].controllers, strings(&["cpu", "cpuacct"]));
    }

    #[test]
    fn mount_point_escapes_are_decoded() {
        let mounts = parse_mountinfo(HYBRID_COMOUNT);
        assert!(mounts.iter().any(|m| m.mount_point == Path::new("/mnt/mem copy")));
        assert_eq!(unescape(r"a\134b\011"), "a\\b\t");
        assert_eq!(unescape(r"trailing\04"), r"trailing\04");
    }

    #[test]
    fn v1_needs_root() {
        let support = decide(&parse_mountinfo(HYBRID), HYBRID_SELF, 1000, &FakeHost::default());
        assert_eq!(support.version, Some(CgroupVersion::V1));
        assert!(!support.writable);
        assert!(support.reason.unwrap().contains("cgroup v1 needs root"));
    }

    #[test]
    fn detects_pure_v2_as_root() {
        let host = FakeHost::default()
            .file("/sys/fs/cgroup/cgroup.controllers", "cpuset cpu io memory hugetlb pids rdma misc\n");
        let support = decide(&parse_mountinfo(PURE_V2), "0::/user.slice/session-1.scope\n", 0, &host);
        assert_eq!(
            support,
            CgroupSupport {
                version: Some(CgroupVersion::V2),
                controllers: strings(&["cpu", "memory", "pids"]),
                writable: true,
                base: "/sys/fs/cgroup".into(),
                hierarchies: Vec::new(),
                delegated: false,
                reason: None,
            }
        );
    }

    #[test]
    fn detects_delegated_v2_subtree_rootless() {
        let service = "/sys/fs/cgroup/user.slice/user-1000.slice/user@1000.service";
        let host = FakeHost::default()
            .owned_cgroup(service, 1000)
            .owned_cgroup(&format!("{service}/app.slice"), 1000)
            .owned_cgroup(&format!("{service}/app.slice/term.scope"), 1000)
            .file(&format!("{service}/cgroup.controllers"), "cpu memory pids\n");
        let support = decide(&parse_mountinfo(PURE_V2), ROOTLESS_SELF, 1000, &host);
        assert_eq!(support.version, Some(CgroupVersion::V2));
        assert_eq!(support.base, Path::new(service));
        assert!(support.writable && support.delegated);
        assert_eq!(support.controllers, strings(&["cpu", "memory", "pids"]));
    }

    #[test]
    fn undelegated_v2_rootless_is_not_writable() {
        let host = FakeHost::default().file("/sys/fs/cgroup/cgroup.controllers", "cpu memory pids\n");
        let support = decide(&parse_mountinfo(PURE_V2), ROOTLESS_SELF, 1000, &host);
        assert_eq!(support.version, Some(CgroupVersion::V2));
        assert!(!support.writable);
        assert!(support.reason.unwrap().contains("delegate"));
    }

    #[test]
    fn self_path_escaping_the_mount_is_ignored() {
        let mounts = parse_mountinfo(PURE_V2);
        assert_eq!(cgroup_dir(&mounts[0], "/a/../../etc"), None);
        assert_eq!(cgroup_dir(&mounts[0], "/a/b"), Some("/sys/fs/cgroup/a/b".into()));
    }

    #[test]
    fn read_only_v2_mount_is_not_writable() {
        let ro = PURE_V2.replace("shared:4 - cgroup2 cgroup2 rw", "shared:4 - cgroup2 cgroup2 ro");
        let support = decide(&parse_mountinfo(&ro), "0::/\n", 0, &FakeHost::default());
        assert!(!support.writable);
        assert!(support.reason.unwrap().contains("read-only"));
    }

    #[test]
    fn no_cgroupfs_means_no_version() {
        let support = decide(&[], "", 0, &FakeHost::default());
        assert_eq!(support.version, None);
        assert!(!support.writable);
    }
}

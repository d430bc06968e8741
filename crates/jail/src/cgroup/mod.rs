//! Cgroups v1 and v2 behind one interface: limits, membership, statistics,
//! freeze, kill and teardown for one sandbox.
//!
//! # API
//!
//! ```text
//! pub fn detect() -> CgroupSupport;
//! pub fn create(support: &CgroupSupport, name: &str, limits: &Limits)
//!     -> Result<Box<dyn Cgroup>, CgroupError>;
//! pub fn sweep_stale(support: &CgroupSupport, prefix: &str) -> Result<Vec<PathBuf>, CgroupError>;
//! pub fn validate_name(name: &str) -> Result<(), CgroupError>;
//!
//! pub trait Cgroup: Send + Sync + Debug {
//!     fn version(&self) -> CgroupVersion;
//!     fn name(&self) -> &str;
//!     fn dirs(&self) -> Vec<&Path>;                 // one per v1 hierarchy, one on v2
//!     fn procs_paths(&self) -> Vec<PathBuf>;        // every cgroup.procs a process must join
//!     fn unified_dir(&self) -> Option<&Path>;       // v2: for clone3 CLONE_INTO_CGROUP
//!     fn open_unified_dir(&self) -> Result<Option<OwnedFd>, CgroupError>;
//!     fn add_pid(&self, pid: i32) -> Result<(), CgroupError>;
//!     fn pids(&self) -> Result<Vec<i32>, CgroupError>;
//!     fn oom_kills(&self) -> Result<u64, CgroupError>;
//!     fn peak_memory(&self) -> Result<Option<u64>, CgroupError>;
//!     fn memory_current(&self) -> Result<u64, CgroupError>;
//!     fn cpu_usage_ns(&self) -> Result<u64, CgroupError>;
//!     fn pids_current(&self) -> Result<u64, CgroupError>;
//!     fn pids_limit_hits(&self) -> Result<u64, CgroupError>;
//!     fn stats(&self) -> CgroupStats;               // all of the above, None where unavailable
//!     fn start_freeze(&self) -> Result<(), CgroupError>; // asks, does not wait
//!     fn freeze(&self) -> Result<(), CgroupError>;  // waits until frozen, bounded
//!     fn thaw(&self) -> Result<(), CgroupError>;
//!     fn kill_all(&self) -> Result<(), CgroupError>;// waits until empty, bounded
//!     fn start_kill_frozen(&self) -> Result<(), CgroupError>; // SIGKILL + thaw, no wait
//!     fn is_empty(&self) -> bool;
//!     fn destroy(self: Box<Self>) -> Result<(), CgroupError>; // kills first if needed
//! }
//! ```
//!
//! A typical run: `detect()` once per daemon, `sweep_stale` for leftovers of
//! crashed runs, then per sandbox `create`, `add_pid` (or clone3 into
//! `open_unified_dir()` on v2), `stats` at exit, `destroy`. Dropping a
//! [`Cgroup`] without `destroy` makes one attempt to `rmdir` it (which fails
//! harmlessly while processes remain); `sweep_stale` removes what is left.
//!
//! # Layout and version
//!
//! Each sandbox gets `<root>/safehouse/<name>`. On v1, `<root>` is each
//! hierarchy carrying a controller we use (memory, pids, cpu, cpuacct,
//! freezer), once per hierarchy even when co-mounted (`cpu,cpuacct`). On v2,
//! `<root>` is [`CgroupSupport::base`]: the unified root when running as root,
//! or the top of our delegated subtree when rootless; memory, pids and cpu are
//! enabled through `cgroup.subtree_control` on the way down. Detection picks
//! v2 when it carries memory and pids (pure v2 hosts), v1 when the memory
//! controller is on v1 (hybrid hosts), and otherwise whatever is mounted.
//!
//! # Limits
//!
//! v1: `memory.limit_in_bytes`, and `memory.memsw.limit_in_bytes` set to the
//! same value when swap accounting exists so swap cannot extend the limit
//! (without it the kernel does not charge swap at all); `pids.max`;
//! `cpu.cfs_period_us` = 100000 and `cpu.cfs_quota_us` = cores × 100000.
//! v2: `memory.max`, `memory.swap.max` = 0 when present, `pids.max`,
//! `cpu.max` = "quota 100000". The OOM killer stays enabled (v1
//! `memory.oom_control` untouched) so a memory bomb is killed rather than
//! left hanging; v1 `memory.use_hierarchy` keeps its default, which is
//! always 1 on current kernels (the knob is deprecated). A limit whose
//! controller is missing is an error, never silently dropped.
//!
//! # Security
//!
//! Paths come only from mountinfo, `/proc/self/cgroup` (checked to hold plain
//! components) and constants; the one caller-chosen part, `name`, is limited
//! to `[A-Za-z0-9_-]{1,64}`. Control files are opened `O_NOFOLLOW` and never
//! created. The v1 `release_agent` escape (CVE-2022-0492) needs a writable
//! cgroupfs inside the sandbox; the jail never mounts cgroupfs there, so the
//! sandbox cannot reach `release_agent` or any file written here.

mod detect;
mod error;
mod files;
mod kill;
mod v1;
mod v2;

#[cfg(test)]
mod privileged_tests;

use std::fmt::Debug;
use std::fs;
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use detect::{detect, CgroupSupport, V1Hierarchy};
pub use error::CgroupError;

/// The directory under each cgroup root that holds every safehouse cgroup.
pub const ROOT_DIR: &str = "safehouse";
/// Longest accepted cgroup name.
pub const MAX_NAME_LEN: usize = 64;
/// CFS period used for cpu limits, in microseconds (the kernel default).
pub const CPU_PERIOD_US: u64 = 100_000;
/// Smallest CFS quota the kernel accepts, in microseconds (1 ms).
pub const MIN_CPU_QUOTA_US: u64 = 1_000;
/// Largest cpu limit accepted, in cores.
pub const MAX_CPUS: f64 = 4096.0;
/// Upper bound on waiting for a freeze or thaw to take effect.
pub const FREEZE_TIMEOUT: Duration = Duration::from_secs(1);

/// Which cgroup interface a host offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupVersion {
    V1,
    V2,
}

/// Resource limits for one sandbox; `None` leaves that resource unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Limits {
    /// Memory in bytes (swap excluded: swap is held to zero). Default: unlimited.
    pub memory_bytes: Option<u64>,
    /// Maximum number of tasks (processes and threads). Default: unlimited.
    pub pids: Option<u64>,
    /// CPU time as a number of cores, e.g. 0.5; at least 0.01 (the kernel's
    /// 1 ms quota floor), at most [`MAX_CPUS`]. Default: unlimited.
    pub cpus: Option<f64>,
    /// v1: create only the hierarchies the limits above need (no cpuacct or freezer),
    /// for short-lived sandboxes that neither freeze nor read cgroup CPU accounting.
    /// Every hierarchy costs a mkdir, an attach and an rmdir on the start path.
    #[serde(default)]
    pub only_limited: bool,
}

impl Limits {
    /// Checks every limit without touching the system.
    pub fn validate(&self) -> Result<(), CgroupError> {
        if self.memory_bytes == Some(0) {
            return Err(CgroupError::InvalidLimit {
                limit: "memory",
                value: "0".into(),
                expected: "give a positive number of bytes",
            });
        }
        if self.pids == Some(0) {
            return Err(CgroupError::InvalidLimit {
                limit: "pids",
                value: "0".into(),
                expected: "give at least 1 task",
            });
        }
        self.cpu_quota_us().map(drop)
    }

    /// The CFS quota for [`CPU_PERIOD_US`], rounded to the nearest
    /// microsecond and raised to the kernel's 1 ms floor.
    pub fn cpu_quota_us(&self) -> Result<Option<u64>, CgroupError> {
        let Some(cpus) = self.cpus else {
            return Ok(None);
        };
        if !cpus.is_finite() || cpus <= 0.0 || cpus > MAX_CPUS {
            return Err(CgroupError::InvalidLimit {
                limit: "cpu",
                value: cpus.to_string(),
                expected: "give a positive number of cores, at most 4096",
            });
        }
        // In range by the check above: at most 4096 × 100000.
        let quota = (cpus * CPU_PERIOD_US as f64).round() as u64;
        Ok(Some(quota.max(MIN_CPU_QUOTA_US)))
    }
}

/// Every statistic at once; `None` where the controller or file is missing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CgroupStats {
    pub oom_kills: Option<u64>,
    pub peak_memory: Option<u64>,
    pub memory_current: Option<u64>,
    pub cpu_usage_ns: Option<u64>,
    pub pids_current: Option<u64>,
    pub pids_limit_hits: Option<u64>,
}

/// One sandbox's cgroup, on either version.
pub trait Cgroup: Send + Sync + Debug {
    fn version(&self) -> CgroupVersion;
    /// The validated name given to [`create`].
    fn name(&self) -> &str;
    /// Every directory this cgroup occupies: one per v1 hierarchy, one on v2.
    fn dirs(&self) -> Vec<&Path>;
    /// Every `cgroup.procs` a process must be written to, for callers that
    /// move a child themselves (for example by pre-opening them before fork).
    fn procs_paths(&self) -> Vec<PathBuf> {
        self.dirs().iter().map(|d| d.join("cgroup.procs")).collect()
    }
    /// v2: the directory whose fd clone3 takes with `CLONE_INTO_CGROUP`, so
    /// the child never runs outside the cgroup. `None` on v1.
    fn unified_dir(&self) -> Option<&Path>;
    /// Opens [`unified_dir`](Cgroup::unified_dir) (`O_DIRECTORY | O_CLOEXEC`).
    fn open_unified_dir(&self) -> Result<Option<OwnedFd>, CgroupError> {
        let Some(dir) = self.unified_dir() else {
            return Ok(None);
        };
        fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
            .open(dir)
            .map(|f| Some(OwnedFd::from(f)))
            .map_err(|source| CgroupError::Read { path: dir.to_owned(), source })
    }
    /// Moves `pid` (all its threads) into the cgroup, in every v1 hierarchy.
    fn add_pid(&self, pid: i32) -> Result<(), CgroupError>;
    /// The pids in the cgroup (v1: the union over hierarchies), sorted.
    fn pids(&self) -> Result<Vec<i32>, CgroupError>;
    /// How many tasks the OOM killer has killed in this cgroup.
    fn oom_kills(&self) -> Result<u64, CgroupError>;
    /// Highest memory use in bytes; `None` on v2 kernels without `memory.peak` (< 5.19).
    fn peak_memory(&self) -> Result<Option<u64>, CgroupError>;
    /// Current memory use in bytes.
    fn memory_current(&self) -> Result<u64, CgroupError>;
    /// CPU time consumed, in nanoseconds (v2 counts in microseconds).
    fn cpu_usage_ns(&self) -> Result<u64, CgroupError>;
    /// Tasks now in the cgroup.
    fn pids_current(&self) -> Result<u64, CgroupError>;
    /// How many forks failed because the pids limit was reached.
    fn pids_limit_hits(&self) -> Result<u64, CgroupError>;
    /// Every statistic, each `None` when it cannot be read.
    fn stats(&self) -> CgroupStats {
        CgroupStats {
            oom_kills: self.oom_kills().ok(),
            peak_memory: self.peak_memory().ok().flatten(),
            memory_current: self.memory_current().ok(),
            cpu_usage_ns: self.cpu_usage_ns().ok(),
            pids_current: self.pids_current().ok(),
            pids_limit_hits: self.pids_limit_hits().ok(),
        }
    }
    /// Freezes every task, waiting at most [`FREEZE_TIMEOUT`] for it to hold.
    /// On timeout the cgroup may be partly frozen: thaw or kill it.
    fn freeze(&self) -> Result<(), CgroupError>;
    /// Asks for a freeze without waiting for it to hold. To freeze many cgroups at once,
    /// start each, then [`freeze`](Cgroup::freeze) each: their tasks stop together
    /// instead of one cgroup after another while the rest keep the CPUs busy.
    fn start_freeze(&self) -> Result<(), CgroupError> {
        self.freeze()
    }
    /// Thaws every task, waiting at most [`FREEZE_TIMEOUT`].
    fn thaw(&self) -> Result<(), CgroupError>;
    /// SIGKILLs every task and waits (bounded, about 2 s) until none is left.
    fn kill_all(&self) -> Result<(), CgroupError>;
    /// For a cgroup frozen with [`freeze`](Cgroup::freeze): SIGKILLs every task (the list
    /// is complete, frozen tasks cannot fork) and asks for the thaw so the kills land;
    /// v1 and v2 wait for neither (this default waits for the thaw). The caller checks the
    /// tasks are gone ([`is_empty`](Cgroup::is_empty), or a pidfd); [`kill_all`](Cgroup::kill_all)
    /// is the waiting, retrying form.
    fn start_kill_frozen(&self) -> Result<(), CgroupError> {
        let sent = kill::sigkill(&self.pids()?);
        self.thaw()?;
        sent.map_err(|source| CgroupError::Kill {
            path: self.dirs().first().map(|d| d.to_path_buf()).unwrap_or_default(),
            source,
        })
    }
    /// No task is left (unreadable counts as not empty, missing as empty).
    fn is_empty(&self) -> bool;
    /// Kills what is left, then removes every directory (retrying `EBUSY`
    /// for about 200 ms).
    fn destroy(self: Box<Self>) -> Result<(), CgroupError>;
    /// A cgroup nested in this one (charged to it and bounded by its limits), for one
    /// command's own envelope. v1: made in the memory, cpuacct, pids and freezer
    /// hierarchies this cgroup has.
    fn child(&self, name: &str, limits: &Limits) -> Result<Box<dyn Cgroup>, CgroupError>;
}

/// Creates `safehouse/<name>` with `limits` where `support` says, or fails
/// without leaving directories behind. Fails if the name is taken.
pub fn create(support: &CgroupSupport, name: &str, limits: &Limits) -> Result<Box<dyn Cgroup>, CgroupError> {
    validate_name(name)?;
    limits.validate()?;
    match support.version {
        Some(CgroupVersion::V1) => Ok(Box::new(v1::V1Cgroup::create(&support.hierarchies, name, limits)?)),
        Some(CgroupVersion::V2) => Ok(Box::new(v2::V2Cgroup::create(&support.base, name, limits)?)),
        None => Err(CgroupError::Unavailable {
            reason: support.reason.clone().unwrap_or_else(|| "no cgroup file system found".into()),
        }),
    }
}

/// Re-opens an existing `safehouse/<name>` cgroup (after a daemon restart), without
/// creating or changing anything.
pub fn open(support: &CgroupSupport, name: &str) -> Result<Box<dyn Cgroup>, CgroupError> {
    validate_name(name)?;
    match support.version {
        Some(CgroupVersion::V1) => Ok(Box::new(v1::V1Cgroup::open(&support.hierarchies, name)?)),
        Some(CgroupVersion::V2) => Ok(Box::new(v2::V2Cgroup::open(&support.base, name)?)),
        None => Err(CgroupError::Unavailable { reason: support.reason.clone().unwrap_or_default() }),
    }
}

/// Opens an existing cgroup nested below the safehouse root, `name` being its path of
/// `/`-separated components (each one a valid name), e.g. `sandbox/tool-1-0-0`.
pub fn open_nested(support: &CgroupSupport, name: &str) -> Result<Box<dyn Cgroup>, CgroupError> {
    for part in name.split('/') {
        validate_name(part)?;
    }
    match support.version {
        Some(CgroupVersion::V1) => Ok(Box::new(v1::V1Cgroup::open(&support.hierarchies, name)?)),
        Some(CgroupVersion::V2) => Ok(Box::new(v2::V2Cgroup::open(&support.base, name)?)),
        None => Err(CgroupError::Unavailable { reason: support.reason.clone().unwrap_or_default() }),
    }
}

/// Accepts 1 to [`MAX_NAME_LEN`] characters from `[A-Za-z0-9_-]`, so a name
/// can never be `.`, `..` or hold a `/`.
pub fn validate_name(name: &str) -> Result<(), CgroupError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(CgroupError::InvalidName { name: name.chars().take(MAX_NAME_LEN + 8).collect() })
    }
}

/// Removes empty `safehouse/<prefix>*` cgroups left by crashed runs and
/// returns what it removed. Best-effort: busy or unreadable ones are skipped.
///
/// `prefix` follows the [`validate_name`] rules. It should be specific to the
/// caller (a daemon instance id, say): a cgroup another run has just created
/// is empty until its first process joins, and sweeping it would make that
/// run's `add_pid` fail.
pub fn sweep_stale(support: &CgroupSupport, prefix: &str) -> Result<Vec<PathBuf>, CgroupError> {
    validate_name(prefix)?;
    let roots: Vec<PathBuf> = match support.version {
        Some(CgroupVersion::V1) => support.hierarchies.iter().map(|h| h.mount_point.join(ROOT_DIR)).collect(),
        Some(CgroupVersion::V2) => vec![support.base.join(ROOT_DIR)],
        None => Vec::new(),
    };
    let mut removed = Vec::new();
    for root in roots {
        let Ok(entries) = fs::read_dir(&root) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            // file_type() does not follow symlinks; cgroupfs holds none anyway.
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            if !is_dir || !name.starts_with(prefix) || validate_name(name).is_err() {
                continue;
            }
            // One plain rmdir: the kernel refuses it while tasks remain.
            let path = entry.path();
            if fs::remove_dir(&path).is_ok() {
                removed.push(path);
            }
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    fn cpus(c: f64) -> Result<Option<u64>, CgroupError> {
        Limits { cpus: Some(c), ..Limits::default() }.cpu_quota_us()
    }

    #[test]
    fn cpu_quota_math() {
        assert_eq!(cpus(0.5).unwrap(), Some(50_000));
        assert_eq!(cpus(1.0).unwrap(), Some(100_000));
        assert_eq!(cpus(2.25).unwrap(), Some(225_000));
        assert_eq!(cpus(0.333_333).unwrap(), Some(33_333));
        // Below the kernel's 1 ms floor: raised to it rather than rejected.
        assert_eq!(cpus(0.001).unwrap(), Some(MIN_CPU_QUOTA_US));
        assert_eq!(cpus(MAX_CPUS).unwrap(), Some(409_600_000));
        assert_eq!(Limits::default().cpu_quota_us().unwrap(), None);
    }

    #[test]
    fn cpu_limits_out_of_range_are_rejected() {
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, MAX_CPUS + 1.0] {
            let err = cpus(bad).unwrap_err();
            assert!(matches!(err, CgroupError::InvalidLimit { limit: "cpu", .. }), "{bad}: {err}");
        }
    }

    #[test]
    fn zero_memory_or_pids_is_rejected() {
        let zero_mem = Limits { memory_bytes: Some(0), ..Limits::default() };
        assert!(zero_mem.validate().is_err());
        let zero_pids = Limits { pids: Some(0), ..Limits::default() };
        assert!(zero_pids.validate().is_err());
        let fine = Limits { memory_bytes: Some(1 << 20), pids: Some(1), cpus: Some(0.5), only_limited: false };
        assert!(fine.validate().is_ok());
    }

    #[test]
    fn name_validation() {
        for good in ["a", "run-42_x", "A0", &"x".repeat(MAX_NAME_LEN)] {
            assert!(validate_name(good).is_ok(), "{good}");
        }
        let too_long = "x".repeat(MAX_NAME_LEN + 1);
        for bad in ["", ".", "..", "a/b", "../x", "a b", "é", "a\0", "x.y", &too_long] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn create_without_cgroups_fails_closed() {
        let support = detect::decide(&[], "", 0, &NoHost);
        let err = create(&support, "x", &Limits::default()).unwrap_err();
        assert!(matches!(err, CgroupError::Unavailable { .. }), "{err}");
        assert!(sweep_stale(&support, "x").unwrap().is_empty());
    }

    #[test]
    fn create_validates_before_touching_anything() {
        let support = detect::decide(&[], "", 0, &NoHost);
        let err = create(&support, "../etc", &Limits::default()).unwrap_err();
        assert!(matches!(err, CgroupError::InvalidName { .. }), "{err}");
    }

    struct NoHost;
    impl detect::Host for NoHost {
        fn read(&self, _: &Path) -> Option<String> {
            None
        }
        fn owner(&self, _: &Path) -> Option<u32> {
            None
        }
    }
}

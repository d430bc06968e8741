//! Cgroup v1: one directory per hierarchy, kept in step.

use std::fs;
use std::path::{Path, PathBuf};

use super::files::{self, wait_until};
use super::kill;
use super::{Cgroup, CgroupError, CgroupVersion, Limits, V1Hierarchy, CPU_PERIOD_US, FREEZE_TIMEOUT, ROOT_DIR};

/// A sandbox cgroup on the v1 hierarchies.
#[derive(Debug)]
pub(crate) struct V1Cgroup {
    name: String,
    /// Directories we created, in creation order.
    dirs: Vec<Dir>,
    /// Set once `destroy` has run, so `Drop` does not try again.
    destroyed: bool,
}

#[derive(Debug)]
struct Dir {
    path: PathBuf,
    controllers: Vec<String>,
}

/// (controller, what needs it, whether these limits need it)
fn required(limits: &Limits) -> [(&'static str, &'static str, bool); 3] {
    [
        ("memory", "the memory limit", limits.memory_bytes.is_some()),
        ("pids", "the process limit", limits.pids.is_some()),
        ("cpu", "the cpu limit", limits.cpus.is_some()),
    ]
}

impl V1Cgroup {
    /// Makes `<hierarchy>/safehouse/<name>` in every hierarchy and applies
    /// `limits`. On error, `Drop` removes the directories made so far — never
    /// one that existed before.
    pub(crate) fn create(hierarchies: &[V1Hierarchy], name: &str, limits: &Limits) -> Result<Self, CgroupError> {
        for (controller, purpose, needed) in required(limits) {
            let mounted = hierarchies.iter().any(|h| h.controllers.iter().any(|c| c == controller));
            if needed && !mounted {
                return Err(CgroupError::ControllerMissing { controller, purpose });
            }
        }
        let mut cgroup = V1Cgroup { name: name.to_owned(), dirs: Vec::new(), destroyed: false };
        let mut used: Vec<&Path> = Vec::new();
        for hierarchy in hierarchies {
            if used.contains(&hierarchy.mount_point.as_path()) {
                continue;
            }
            used.push(&hierarchy.mount_point);
            let needed = required(limits);
            if limits.only_limited
                && !hierarchy.controllers.iter().any(|c| needed.iter().any(|(name, _, need)| *need && name == c))
            {
                continue;
            }
            let parent = hierarchy.mount_point.join(ROOT_DIR);
            files::ensure_dir(&parent)?;
            let path = parent.join(name);
            files::create_dir(&path)?;
            cgroup.dirs.push(Dir { path, controllers: hierarchy.controllers.clone() });
        }
        if cgroup.dirs.is_empty() {
            return Err(CgroupError::Unavailable {
                reason: "no cgroup v1 hierarchy with memory, pids, cpu, cpuacct or freezer".into(),
            });
        }
        cgroup.apply(limits)?;
        Ok(cgroup)
    }

    pub(crate) fn open(hierarchies: &[V1Hierarchy], name: &str) -> Result<Self, CgroupError> {
        let mut cgroup = V1Cgroup { name: name.to_owned(), dirs: Vec::new(), destroyed: false };
        for hierarchy in hierarchies {
            let path = hierarchy.mount_point.join(ROOT_DIR).join(name);
            if path.is_dir() && !cgroup.dirs.iter().any(|d| d.path == path) {
                cgroup.dirs.push(Dir { path, controllers: hierarchy.controllers.clone() });
            }
        }
        if cgroup.dirs.is_empty() {
            return Err(CgroupError::Unavailable { reason: format!("no cgroup named {name} exists") });
        }
        Ok(cgroup)
    }

    fn make_child(&self, name: &str, limits: &Limits) -> Result<Self, CgroupError> {
        super::validate_name(name)?;
        limits.validate()?;
        let mut child = V1Cgroup { name: format!("{}/{name}", self.name), dirs: Vec::new(), destroyed: false };
        for dir in &self.dirs {
            if !dir.controllers.iter().any(|c| matches!(c.as_str(), "memory" | "cpuacct" | "pids" | "freezer")) {
                continue;
            }
            let path = dir.path.join(name);
            files::create_dir(&path)?;
            child.dirs.push(Dir { path, controllers: dir.controllers.clone() });
        }
        child.apply(limits)?;
        Ok(child)
    }

    fn apply(&self, limits: &Limits) -> Result<(), CgroupError> {
        if let Some(bytes) = limits.memory_bytes {
            let dir = self.need("memory", "the memory limit")?;
            let value = bytes.to_string();
            // limit_in_bytes first: memsw may never be below it.
            files::write(&dir.join("memory.limit_in_bytes"), &value)?;
            // Without swap accounting there is no memsw file and swap is not charged: keep
            // the sandbox from swapping at all, so swap cannot extend the limit.
            let memsw = dir.join("memory.memsw.limit_in_bytes");
            if memsw.exists() {
                files::write(&memsw, &value)?;
            } else {
                files::write(&dir.join("memory.swappiness"), "0")?;
            }
        }
        if let Some(max) = limits.pids {
            let dir = self.need("pids", "the process limit")?;
            files::write(&dir.join("pids.max"), &max.to_string())?;
        }
        if let Some(quota) = limits.cpu_quota_us()? {
            let dir = self.need("cpu", "the cpu limit")?;
            files::write(&dir.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
            files::write(&dir.join("cpu.cfs_quota_us"), &quota.to_string())?;
        }
        Ok(())
    }

    fn dir(&self, controller: &str) -> Option<&Path> {
        self.dirs.iter().find(|d| d.controllers.iter().any(|c| c == controller)).map(|d| d.path.as_path())
    }

    fn need(&self, controller: &'static str, purpose: &'static str) -> Result<&Path, CgroupError> {
        self.dir(controller).ok_or(CgroupError::ControllerMissing { controller, purpose })
    }

    fn freezer_state(&self) -> Result<PathBuf, CgroupError> {
        Ok(self.need("freezer", "freezing")?.join("freezer.state"))
    }

    /// Writes `state` and waits until the kernel reports it. Writing again on
    /// each poll retries a freeze stalled in FREEZING, as the v1 docs advise.
    fn set_freezer(&self, state: &'static str) -> Result<(), CgroupError> {
        let path = self.freezer_state()?;
        files::write(&path, state)?;
        let reached = wait_until(FREEZE_TIMEOUT, || {
            if files::read(&path)?.trim() == state {
                return Ok(true);
            }
            files::write(&path, state)?;
            Ok(false)
        })?;
        if reached {
            Ok(())
        } else {
            Err(CgroupError::Timeout {
                path,
                what: if state == "FROZEN" { "freeze" } else { "thaw" },
                waited_ms: FREEZE_TIMEOUT.as_millis() as u64,
            })
        }
    }
}

impl Cgroup for V1Cgroup {
    fn child(&self, name: &str, limits: &Limits) -> Result<Box<dyn Cgroup>, CgroupError> {
        Ok(Box::new(self.make_child(name, limits)?))
    }

    fn version(&self) -> CgroupVersion {
        CgroupVersion::V1
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn dirs(&self) -> Vec<&Path> {
        self.dirs.iter().map(|d| d.path.as_path()).collect()
    }

    fn unified_dir(&self) -> Option<&Path> {
        None
    }

    fn add_pid(&self, pid: i32) -> Result<(), CgroupError> {
        if pid <= 0 {
            return Err(CgroupError::InvalidPid { pid });
        }
        let pid = pid.to_string();
        for dir in &self.dirs {
            files::write(&dir.path.join("cgroup.procs"), &pid)?;
        }
        Ok(())
    }

    fn pids(&self) -> Result<Vec<i32>, CgroupError> {
        // A process half-moved by a failed add_pid is in some hierarchies
        // only; the union catches it.
        let mut pids = Vec::new();
        for dir in &self.dirs {
            if let Some(text) = files::read_optional(&dir.path.join("cgroup.procs"))? {
                pids.extend(files::parse_pids(&text));
            }
        }
        pids.sort_unstable();
        pids.dedup();
        Ok(pids)
    }

    fn oom_kills(&self) -> Result<u64, CgroupError> {
        let dir = self.need("memory", "oom statistics")?;
        // The oom_kill field exists since Linux 4.13.
        files::read_keyed(&dir.join("memory.oom_control"), "oom_kill")
    }

    fn peak_memory(&self) -> Result<Option<u64>, CgroupError> {
        let dir = self.need("memory", "memory statistics")?;
        files::read_u64(&dir.join("memory.max_usage_in_bytes")).map(Some)
    }

    fn memory_current(&self) -> Result<u64, CgroupError> {
        let dir = self.need("memory", "memory statistics")?;
        files::read_u64(&dir.join("memory.usage_in_bytes"))
    }

    fn cpu_usage_ns(&self) -> Result<u64, CgroupError> {
        let dir = self.need("cpuacct", "cpu statistics")?;
        files::read_u64(&dir.join("cpuacct.usage"))
    }

    fn pids_current(&self) -> Result<u64, CgroupError> {
        let dir = self.need("pids", "process statistics")?;
        files::read_u64(&dir.join("pids.current"))
    }

    fn pids_limit_hits(&self) -> Result<u64, CgroupError> {
        let dir = self.need("pids", "process statistics")?;
        files::read_keyed(&dir.join("pids.events"), "max")
    }

    fn freeze(&self) -> Result<(), CgroupError> {
        self.set_freezer("FROZEN")
    }

    fn thaw(&self) -> Result<(), CgroupError> {
        self.set_freezer("THAWED")
    }

    fn start_freeze(&self) -> Result<(), CgroupError> {
        files::write(&self.freezer_state()?, "FROZEN")
    }

    fn kill_all(&self) -> Result<(), CgroupError> {
        kill::kill_by_signal(self, self.dir("freezer").is_some())
    }

    /// One `cgroup.procs` read (the freezer hierarchy's: what it froze is what is listed)
    /// and one write of `THAWED`, instead of the union over every hierarchy and a wait.
    fn start_kill_frozen(&self) -> Result<(), CgroupError> {
        let Some(freezer) = self.dir("freezer") else {
            return kill::kill_by_signal(self, false);
        };
        let text = files::read_optional(&freezer.join("cgroup.procs"))?.unwrap_or_default();
        let sent = kill::sigkill(&files::parse_pids(&text));
        files::write(&freezer.join("freezer.state"), "THAWED")?;
        sent.map_err(|source| CgroupError::Kill { path: freezer.to_owned(), source })
    }

    fn is_empty(&self) -> bool {
        self.pids().is_ok_and(|p| p.is_empty())
    }

    fn destroy(self: Box<Self>) -> Result<(), CgroupError> {
        let mut this = *self;
        this.destroyed = true;
        if !this.is_empty() {
            this.kill_all()?;
        }
        files::remove_dirs(&this.dirs())
    }
}

impl Drop for V1Cgroup {
    fn drop(&mut self) {
        if !self.destroyed {
            for dir in &self.dirs {
                let _ = fs::remove_dir(&dir.path);
            }
        }
    }
}

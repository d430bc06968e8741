//! Cgroup v2: one directory in the unified hierarchy.

use std::fs;
use std::path::{Path, PathBuf};

use super::detect::V2_CONTROLLERS;
use super::files::{self, wait_until};
use super::kill::{self, KILL_TIMEOUT};
use super::{Cgroup, CgroupError, CgroupVersion, Limits, CPU_PERIOD_US, FREEZE_TIMEOUT, ROOT_DIR};

/// A sandbox cgroup in the unified hierarchy.
#[derive(Debug)]
pub(crate) struct V2Cgroup {
    name: String,
    path: PathBuf,
    /// Set once `destroy` has run, so `Drop` does not try again.
    destroyed: bool,
}

/// What needs each controller, and whether these limits do.
fn purpose(controller: &str, limits: &Limits) -> Option<&'static str> {
    match controller {
        "memory" if limits.memory_bytes.is_some() => Some("the memory limit"),
        "pids" if limits.pids.is_some() => Some("the process limit"),
        "cpu" if limits.cpus.is_some() => Some("the cpu limit"),
        _ => None,
    }
}

/// Enables in `dir/cgroup.subtree_control` each safehouse controller that
/// `dir` offers, so its children get them. Controllers wanted only for
/// statistics are best-effort; one a limit needs must be enabled.
fn enable_controllers(dir: &Path, limits: &Limits) -> Result<(), CgroupError> {
    let control = dir.join("cgroup.subtree_control");
    let enabled = files::read(&control)?;
    let available = files::read(&dir.join("cgroup.controllers"))?;
    let has = |text: &str, c: &str| text.split_whitespace().any(|x| x == c);
    for controller in V2_CONTROLLERS {
        if has(&enabled, controller) {
            continue;
        }
        let needed = purpose(controller, limits);
        if !has(&available, controller) {
            match needed {
                Some(purpose) => return Err(CgroupError::ControllerMissing { controller, purpose }),
                None => continue,
            }
        }
        // One controller per write: a combined write fails as a whole.
        match files::write(&control, &format!("+{controller}")) {
            Err(e) if needed.is_some() => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

impl V2Cgroup {
    /// Makes `<base>/safehouse/<name>` with the controllers enabled on the
    /// way down and applies `limits`. On error, `Drop` removes the directory
    /// if we made it; the shared `safehouse/` parent stays.
    pub(crate) fn create(base: &Path, name: &str, limits: &Limits) -> Result<Self, CgroupError> {
        enable_controllers(base, limits)?;
        let parent = base.join(ROOT_DIR);
        files::ensure_dir(&parent)?;
        enable_controllers(&parent, limits)?;
        let path = parent.join(name);
        files::create_dir(&path)?;
        let cgroup = V2Cgroup { name: name.to_owned(), path, destroyed: false };
        cgroup.apply(limits)?;
        Ok(cgroup)
    }

    pub(crate) fn open(base: &Path, name: &str) -> Result<Self, CgroupError> {
        let path = base.join(ROOT_DIR).join(name);
        if !path.is_dir() {
            return Err(CgroupError::Unavailable { reason: format!("no cgroup named {name} exists") });
        }
        Ok(V2Cgroup { name: name.to_owned(), path, destroyed: false })
    }

    #[cfg(test)]
    pub(crate) fn open_for_test(path: PathBuf) -> Self {
        V2Cgroup { name: "test".into(), path, destroyed: true }
    }

    fn apply(&self, limits: &Limits) -> Result<(), CgroupError> {
        if let Some(bytes) = limits.memory_bytes {
            files::write(&self.path.join("memory.max"), &bytes.to_string())?;
            // Absent when the kernel has no swap accounting; swap is then
            // not usable by the cgroup's pages beyond memory.max anyway.
            let swap = self.path.join("memory.swap.max");
            if swap.exists() {
                files::write(&swap, "0")?;
            }
        }
        if let Some(max) = limits.pids {
            files::write(&self.path.join("pids.max"), &max.to_string())?;
        }
        if let Some(quota) = limits.cpu_quota_us()? {
            files::write(&self.path.join("cpu.max"), &format!("{quota} {CPU_PERIOD_US}"))?;
        }
        Ok(())
    }

    /// `file` in this cgroup, or `ControllerMissing` when the controller
    /// providing it is not enabled here.
    fn controller_file(
        &self,
        file: &str,
        controller: &'static str,
        purpose: &'static str,
    ) -> Result<PathBuf, CgroupError> {
        let path = self.path.join(file);
        if path.exists() {
            Ok(path)
        } else {
            Err(CgroupError::ControllerMissing { controller, purpose })
        }
    }

    /// A field of `cgroup.events` (`populated`, `frozen`).
    fn event(&self, key: &str) -> Result<u64, CgroupError> {
        files::read_keyed(&self.path.join("cgroup.events"), key)
    }

    fn set_frozen(&self, frozen: bool) -> Result<(), CgroupError> {
        let want = u64::from(frozen);
        files::write(&self.path.join("cgroup.freeze"), &want.to_string())?;
        if wait_until(FREEZE_TIMEOUT, || Ok(self.event("frozen")? == want))? {
            Ok(())
        } else {
            Err(CgroupError::Timeout {
                path: self.path.join("cgroup.events"),
                what: if frozen { "freeze" } else { "thaw" },
                waited_ms: FREEZE_TIMEOUT.as_millis() as u64,
            })
        }
    }
}

impl Cgroup for V2Cgroup {
    fn child(&self, name: &str, limits: &Limits) -> Result<Box<dyn Cgroup>, CgroupError> {
        super::validate_name(name)?;
        limits.validate()?;
        enable_controllers(&self.path, limits)?;
        let path = self.path.join(name);
        files::create_dir(&path)?;
        let child = V2Cgroup { name: format!("{}/{name}", self.name), path, destroyed: false };
        child.apply(limits)?;
        Ok(Box::new(child))
    }

    fn version(&self) -> CgroupVersion {
        CgroupVersion::V2
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn dirs(&self) -> Vec<&Path> {
        vec![&self.path]
    }

    fn unified_dir(&self) -> Option<&Path> {
        Some(&self.path)
    }

    fn add_pid(&self, pid: i32) -> Result<(), CgroupError> {
        if pid <= 0 {
            return Err(CgroupError::InvalidPid { pid });
        }
        files::write(&self.path.join("cgroup.procs"), &pid.to_string())
    }

    fn pids(&self) -> Result<Vec<i32>, CgroupError> {
        let text = files::read_optional(&self.path.join("cgroup.procs"))?.unwrap_or_default();
        let mut pids = files::parse_pids(&text);
        pids.sort_unstable();
        Ok(pids)
    }

    fn oom_kills(&self) -> Result<u64, CgroupError> {
        let events = self.controller_file("memory.events", "memory", "oom statistics")?;
        files::read_keyed(&events, "oom_kill")
    }

    fn peak_memory(&self) -> Result<Option<u64>, CgroupError> {
        // memory.peak arrived in Linux 5.19.
        match files::read_optional(&self.path.join("memory.peak"))? {
            Some(text) => files::parse_u64(&text).map(Some).ok_or_else(|| CgroupError::Parse {
                path: self.path.join("memory.peak"),
                detail: format!("expected an unsigned integer, got {:?}", text.trim()),
            }),
            None => Ok(None),
        }
    }

    fn memory_current(&self) -> Result<u64, CgroupError> {
        let current = self.controller_file("memory.current", "memory", "memory statistics")?;
        files::read_u64(&current)
    }

    fn cpu_usage_ns(&self) -> Result<u64, CgroupError> {
        // cpu.stat's usage_usec is core: present even without the cpu controller.
        let usec = files::read_keyed(&self.path.join("cpu.stat"), "usage_usec")?;
        Ok(usec.saturating_mul(1000))
    }

    fn pids_current(&self) -> Result<u64, CgroupError> {
        let current = self.controller_file("pids.current", "pids", "process statistics")?;
        files::read_u64(&current)
    }

    fn pids_limit_hits(&self) -> Result<u64, CgroupError> {
        let events = self.controller_file("pids.events", "pids", "process statistics")?;
        files::read_keyed(&events, "max")
    }

    fn freeze(&self) -> Result<(), CgroupError> {
        self.set_frozen(true)
    }

    fn thaw(&self) -> Result<(), CgroupError> {
        self.set_frozen(false)
    }

    fn start_freeze(&self) -> Result<(), CgroupError> {
        files::write(&self.path.join("cgroup.freeze"), "1")
    }

    fn kill_all(&self) -> Result<(), CgroupError> {
        let kill_file = self.path.join("cgroup.kill");
        if !kill_file.exists() {
            // Before Linux 5.14: signal each task under the freezer.
            return kill::kill_by_signal(self, true);
        }
        // One write kills every task, including ones forking right now.
        files::write(&kill_file, "1")?;
        if wait_until(KILL_TIMEOUT, || Ok(self.event("populated")? == 0))? {
            Ok(())
        } else {
            Err(CgroupError::Timeout {
                path: self.path.join("cgroup.events"),
                what: "become empty after cgroup.kill",
                waited_ms: KILL_TIMEOUT.as_millis() as u64,
            })
        }
    }

    /// `cgroup.kill` where the kernel has it (Linux 5.14+), then the thaw asked for.
    fn start_kill_frozen(&self) -> Result<(), CgroupError> {
        let kill_file = self.path.join("cgroup.kill");
        if kill_file.exists() {
            files::write(&kill_file, "1")?;
        } else {
            kill::sigkill(&self.pids()?).map_err(|source| CgroupError::Kill { path: self.path.clone(), source })?;
        }
        files::write(&self.path.join("cgroup.freeze"), "0")
    }

    fn is_empty(&self) -> bool {
        match fs::read_to_string(self.path.join("cgroup.events")) {
            Ok(text) => files::keyed_value(&text, "populated") == Some(0),
            Err(e) => e.kind() == std::io::ErrorKind::NotFound,
        }
    }

    fn destroy(self: Box<Self>) -> Result<(), CgroupError> {
        let mut this = *self;
        this.destroyed = true;
        if !this.is_empty() {
            this.kill_all()?;
        }
        files::remove_dirs(&[&this.path])
    }
}

impl Drop for V2Cgroup {
    fn drop(&mut self) {
        if !self.destroyed {
            let _ = fs::remove_dir(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    //! v2 reads against a fake cgroup directory: the stats files hold the
    //! kernel's text and nothing reacts to writes.
    use super::*;
    use pretty_assertions::assert_eq;
    use std::time::{Duration, Instant};

    struct FakeDir(PathBuf);

    impl FakeDir {
        fn new(tag: &str, files: &[(&str, &str)]) -> Self {
            let dir = std::env::temp_dir().join(format!("safehouse-cg-v2-{tag}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            for (name, text) in files {
                fs::write(dir.join(name), text).unwrap();
            }
            FakeDir(dir)
        }
    }

    impl Drop for FakeDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn reads_v2_statistics() {
        let fake = FakeDir::new(
            "stats",
            &[
                ("memory.events", "low 0\nhigh 0\nmax 9\noom 1\noom_kill 1\noom_group_kill 0\n"),
                ("memory.peak", "52428800\n"),
                ("memory.current", "4096\n"),
                ("cpu.stat", "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n"),
                ("pids.current", "3\n"),
                ("pids.events", "max 7\n"),
                ("cgroup.procs", "10\n11\n"),
                ("cgroup.events", "populated 1\nfrozen 0\n"),
            ],
        );
        let cg = V2Cgroup::open_for_test(fake.0.clone());
        assert_eq!(
            cg.stats(),
            super::super::CgroupStats {
                oom_kills: Some(1),
                peak_memory: Some(52_428_800),
                memory_current: Some(4096),
                cpu_usage_ns: Some(1_500_000),
                pids_current: Some(3),
                pids_limit_hits: Some(7),
            }
        );
        assert_eq!(cg.pids().unwrap(), vec![10, 11]);
        assert!(!cg.is_empty());
        assert_eq!(cg.unified_dir(), Some(fake.0.as_path()));
    }

    #[test]
    fn missing_controllers_read_as_missing() {
        let fake =
            FakeDir::new("bare", &[("cpu.stat", "usage_usec 2\n"), ("cgroup.events", "populated 0\nfrozen 0\n")]);
        let cg = V2Cgroup::open_for_test(fake.0.clone());
        assert_eq!(cg.peak_memory().unwrap(), None);
        assert!(matches!(cg.oom_kills().unwrap_err(), CgroupError::ControllerMissing { controller: "memory", .. }));
        assert!(matches!(cg.pids_current().unwrap_err(), CgroupError::ControllerMissing { controller: "pids", .. }));
        assert_eq!(cg.cpu_usage_ns().unwrap(), 2000);
        assert!(cg.is_empty());
    }

    #[test]
    fn freeze_that_never_takes_times_out() {
        let fake = FakeDir::new("freeze", &[("cgroup.freeze", "0\n"), ("cgroup.events", "populated 1\nfrozen 0\n")]);
        let cg = V2Cgroup::open_for_test(fake.0.clone());
        let start = Instant::now();
        let err = cg.freeze().unwrap_err();
        assert!(matches!(err, CgroupError::Timeout { what: "freeze", .. }), "{err}");
        assert!(start.elapsed() < FREEZE_TIMEOUT + Duration::from_millis(500));
    }

    #[test]
    fn enabling_a_missing_controller_for_a_limit_fails() {
        let fake = FakeDir::new("enable", &[("cgroup.subtree_control", ""), ("cgroup.controllers", "cpu io\n")]);
        let limits = Limits { pids: Some(10), ..Limits::default() };
        let err = enable_controllers(&fake.0, &limits).unwrap_err();
        assert!(matches!(err, CgroupError::ControllerMissing { controller: "pids", .. }), "{err}");
    }
}

//! Tests against the real cgroupfs. Each skips, saying why, unless running as
//! root on a host with what it needs; under CI=true a skip fails (crate::testkit).

use std::fs;
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::Duration;

use super::detect::{self, parse_mountinfo, RealHost};
use super::*;

fn euid() -> u32 {
    safehouse_sys::geteuid()
}

/// This host's v1 support, or `None` after printing why the test is skipped.
fn root_v1(test: &str) -> Option<CgroupSupport> {
    if euid() != 0 {
        crate::testkit::skip_privileged(test, "needs root");
        return None;
    }
    let support = detect();
    let wanted = ["memory", "pids", "cpu", "cpuacct", "freezer"];
    let complete = wanted.iter().all(|c| support.controllers.iter().any(|x| x == c));
    if support.version != Some(CgroupVersion::V1) || !complete || !support.writable {
        let why = format!("needs writable cgroup v1 hierarchies for {wanted:?}, found {support:?}");
        crate::testkit::skip_privileged(test, &why);
        return None;
    }
    Some(support)
}

/// A writable cgroup2 mount as root, even on a hybrid host where detection
/// prefers v1, so the v2 code runs for real here too.
fn root_v2(test: &str) -> Option<CgroupSupport> {
    if euid() != 0 {
        crate::testkit::skip_privileged(test, "needs root");
        return None;
    }
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let self_cgroup = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    match detect::v2_support(&parse_mountinfo(&mountinfo), &self_cgroup, 0, &RealHost) {
        Some(s) if s.writable => Some(s),
        other => {
            crate::testkit::skip_privileged(test, &format!("needs a writable cgroup2 mount, found {other:?}"));
            None
        }
    }
}

fn unique(tag: &str) -> String {
    format!("test-{tag}-{}", std::process::id())
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display())).trim().to_owned()
}

/// Spawns `sh -c script` that waits for a line on stdin before running, so
/// the test can move it into the cgroup first.
fn spawn_gated(script: &str) -> Child {
    Command::new("sh")
        .arg("-c")
        .arg(format!("read go; {script}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn sh")
}

fn release(child: &mut Child) {
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
}

fn pid(child: &Child) -> i32 {
    i32::try_from(child.id()).unwrap()
}

#[test]
fn v1_lifecycle() {
    let Some(support) = root_v1("v1_lifecycle") else {
        return;
    };
    let limits = Limits { memory_bytes: Some(64 << 20), pids: Some(32), cpus: Some(0.5), only_limited: false };
    let cg = create(&support, &unique("v1life"), &limits).unwrap();
    assert_eq!(cg.version(), CgroupVersion::V1);
    assert_eq!(cg.unified_dir(), None);
    assert!(cg.open_unified_dir().unwrap().is_none());

    let dir_of = |c: &str| {
        let h = support.hierarchies.iter().find(|h| h.controllers.iter().any(|x| x == c)).unwrap();
        h.mount_point.join(ROOT_DIR).join(cg.name())
    };
    let mem = dir_of("memory");
    assert_eq!(read(&mem.join("memory.limit_in_bytes")), "67108864");
    if mem.join("memory.memsw.limit_in_bytes").exists() {
        assert_eq!(read(&mem.join("memory.memsw.limit_in_bytes")), "67108864");
    }
    assert_eq!(read(&dir_of("pids").join("pids.max")), "32");
    assert_eq!(read(&dir_of("cpu").join("cpu.cfs_period_us")), "100000");
    assert_eq!(read(&dir_of("cpu").join("cpu.cfs_quota_us")), "50000");
    assert_eq!(cg.dirs().len(), support.hierarchies.len());

    let mut child = Command::new("sleep").arg("5").spawn().unwrap();
    cg.add_pid(pid(&child)).unwrap();
    assert_eq!(cg.pids().unwrap(), vec![pid(&child)]);
    assert_eq!(cg.pids_current().unwrap(), 1);
    assert!(!cg.is_empty());
    let stats = cg.stats();
    assert!(stats.memory_current.is_some() && stats.cpu_usage_ns.is_some(), "{stats:?}");
    assert_eq!(stats.oom_kills, Some(0));
    assert_eq!(stats.pids_limit_hits, Some(0));

    cg.freeze().unwrap();
    assert_eq!(read(&dir_of("freezer").join("freezer.state")), "FROZEN");
    cg.thaw().unwrap();
    assert_eq!(read(&dir_of("freezer").join("freezer.state")), "THAWED");

    cg.kill_all().unwrap();
    assert!(cg.is_empty());
    assert_eq!(child.wait().unwrap().signal(), Some(libc::SIGKILL));

    let dirs: Vec<_> = cg.dirs().iter().map(|d| d.to_path_buf()).collect();
    cg.destroy().unwrap();
    for dir in dirs {
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
}

#[test]
fn v1_destroy_kills_a_frozen_cgroup_with_unreaped_children() {
    let Some(support) = root_v1("v1_destroy_kills_a_frozen_cgroup_with_unreaped_children") else {
        return;
    };
    let cg = create(&support, &unique("v1destroy"), &Limits::default()).unwrap();
    let mut child = spawn_gated("sleep 30 & sleep 30 & wait");
    cg.add_pid(pid(&child)).unwrap();
    release(&mut child);
    // The shell and its two sleeps (a loaded machine may take a while to fork them).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while cg.pids().unwrap().len() < 3 && std::time::Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(cg.pids().unwrap().len(), 3);
    cg.freeze().unwrap();
    let dirs: Vec<_> = cg.dirs().iter().map(|d| d.to_path_buf()).collect();
    // `child` is not reaped until after destroy: a zombie must not block it.
    cg.destroy().unwrap();
    assert!(dirs.iter().all(|d| !d.exists()));
    assert_eq!(child.wait().unwrap().signal(), Some(libc::SIGKILL));
}

#[test]
fn v1_memory_bomb_is_oom_killed() {
    let Some(support) = root_v1("v1_memory_bomb_is_oom_killed") else {
        return;
    };
    let limits = Limits { memory_bytes: Some(32 << 20), ..Limits::default() };
    let cg = create(&support, &unique("v1oom"), &limits).unwrap();
    // dd fills a 256 MiB buffer from /dev/zero, touching every page.
    let mut child = spawn_gated("exec dd if=/dev/zero of=/dev/null bs=256M count=1");
    cg.add_pid(pid(&child)).unwrap();
    release(&mut child);
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
    assert!(cg.oom_kills().unwrap() >= 1);
    let peak = cg.peak_memory().unwrap().unwrap();
    assert!(peak <= 32 << 20, "peak {peak} above the limit");
    cg.destroy().unwrap();
}

#[test]
fn v1_pids_limit_is_enforced_and_counted() {
    let Some(support) = root_v1("v1_pids_limit_is_enforced_and_counted") else {
        return;
    };
    let limits = Limits { pids: Some(3), ..Limits::default() };
    let cg = create(&support, &unique("v1pids"), &limits).unwrap();
    let mut child = spawn_gated("for i in 1 2 3 4 5 6; do sleep 5 & done; wait");
    cg.add_pid(pid(&child)).unwrap();
    release(&mut child);
    // Until the loop has run into the limit (a loaded machine may take a while).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while cg.pids_limit_hits().unwrap() == 0 && std::time::Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    assert!(cg.pids_current().unwrap() <= 3);
    assert!(cg.pids_limit_hits().unwrap() >= 1);
    cg.kill_all().unwrap();
    child.wait().unwrap();
    cg.destroy().unwrap();
}

#[test]
fn v1_taken_name_fails_and_leaves_the_owner_alone() {
    let Some(support) = root_v1("v1_taken_name_fails_and_leaves_the_owner_alone") else {
        return;
    };
    let name = unique("v1taken");
    let first = create(&support, &name, &Limits::default()).unwrap();
    let err = create(&support, &name, &Limits::default()).unwrap_err();
    assert!(err.to_string().contains("pick a unique name"), "{err}");
    assert!(first.dirs().iter().all(|d| d.exists()), "the failed create removed the owner's dirs");
    first.destroy().unwrap();
}

#[test]
fn v1_failed_limit_write_cleans_up() {
    let Some(support) = root_v1("v1_failed_limit_write_cleans_up") else {
        return;
    };
    // Above the kernel's pids.max range (PID_MAX_LIMIT): the write fails
    // after the directories exist, and none may be left.
    let limits = Limits { pids: Some(10_000_000), ..Limits::default() };
    let name = unique("v1cleanup");
    assert!(create(&support, &name, &limits).is_err());
    for h in &support.hierarchies {
        assert!(!h.mount_point.join(ROOT_DIR).join(&name).exists());
    }
}

#[test]
fn v1_sweep_removes_empty_leftovers_only() {
    let Some(support) = root_v1("v1_sweep_removes_empty_leftovers_only") else {
        return;
    };
    let prefix = unique("v1sweep");
    let stale = create(&support, &format!("{prefix}-a"), &Limits::default()).unwrap();
    let stale_dirs: Vec<_> = stale.dirs().iter().map(|d| d.to_path_buf()).collect();
    std::mem::forget(stale); // a crashed run: no destroy, no drop
    let busy = create(&support, &format!("{prefix}-b"), &Limits::default()).unwrap();
    let mut child = Command::new("sleep").arg("5").spawn().unwrap();
    busy.add_pid(pid(&child)).unwrap();

    let removed = sweep_stale(&support, &prefix).unwrap();
    assert!(stale_dirs.iter().all(|d| removed.contains(d) && !d.exists()), "{removed:?}");
    assert!(busy.pids().unwrap().contains(&pid(&child)), "sweep touched a live cgroup");

    busy.destroy().unwrap();
    child.wait().unwrap();
}

#[test]
fn v2_lifecycle() {
    let Some(support) = root_v2("v2_lifecycle") else {
        return;
    };
    let has = |c: &str| support.controllers.iter().any(|x| x == c);
    let limits = Limits {
        memory_bytes: has("memory").then_some(64 << 20),
        pids: has("pids").then_some(32),
        cpus: has("cpu").then_some(0.5),
        only_limited: false,
    };
    let cg = create(&support, &unique("v2life"), &limits).unwrap();
    let dir = cg.unified_dir().unwrap().to_path_buf();
    assert_eq!(dir, support.base.join(ROOT_DIR).join(cg.name()));
    assert!(cg.open_unified_dir().unwrap().is_some());
    if has("memory") {
        assert_eq!(read(&dir.join("memory.max")), "67108864");
    }
    if has("pids") {
        assert_eq!(read(&dir.join("pids.max")), "32");
    }
    if has("cpu") {
        assert_eq!(read(&dir.join("cpu.max")), "50000 100000");
    }

    let mut child = Command::new("sleep").arg("5").spawn().unwrap();
    cg.add_pid(pid(&child)).unwrap();
    assert_eq!(cg.pids().unwrap(), vec![pid(&child)]);
    if has("pids") {
        assert_eq!(cg.pids_current().unwrap(), 1);
    }
    assert!(!cg.is_empty());
    assert!(cg.cpu_usage_ns().is_ok());

    cg.freeze().unwrap();
    assert!(read(&dir.join("cgroup.events")).contains("frozen 1"));
    cg.thaw().unwrap();
    assert!(read(&dir.join("cgroup.events")).contains("frozen 0"));

    cg.kill_all().unwrap();
    assert!(cg.is_empty());
    assert_eq!(child.wait().unwrap().signal(), Some(libc::SIGKILL));
    cg.destroy().unwrap();
    assert!(!dir.exists());
}

#[test]
fn v1_kill_all_stops_a_fork_loop() {
    let Some(support) = root_v1("v1_kill_all_stops_a_fork_loop") else {
        return;
    };
    let limits = Limits { pids: Some(64), ..Limits::default() };
    let cg = create(&support, &unique("v1forkloop"), &limits).unwrap();
    let mut child = spawn_gated("while :; do sleep 30 & done");
    cg.add_pid(pid(&child)).unwrap();
    release(&mut child);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while cg.pids().unwrap().len() < 8 && std::time::Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    assert!(cg.pids().unwrap().len() > 1, "the loop did not start");
    cg.kill_all().unwrap();
    assert!(cg.is_empty());
    child.wait().unwrap();
    cg.destroy().unwrap();
}

#[test]
fn v2_signal_fallback_kills_everything() {
    // Kernels before 5.14 have no cgroup.kill; run that path here directly.
    let Some(support) = root_v2("v2_signal_fallback_kills_everything") else {
        return;
    };
    let cg = create(&support, &unique("v2fallback"), &Limits::default()).unwrap();
    let mut child = spawn_gated("sleep 30 & sleep 30 & wait");
    cg.add_pid(pid(&child)).unwrap();
    release(&mut child);
    thread::sleep(Duration::from_millis(100));
    assert_eq!(cg.pids().unwrap().len(), 3);
    super::kill::kill_by_signal(&*cg, true).unwrap();
    assert!(cg.is_empty());
    assert_eq!(child.wait().unwrap().signal(), Some(libc::SIGKILL));
    cg.destroy().unwrap();
}

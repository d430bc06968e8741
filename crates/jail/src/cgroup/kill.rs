//! Killing every process of a cgroup where the kernel has no `cgroup.kill`
//! (all of v1; v2 before Linux 5.14): freeze, SIGKILL each listed pid, thaw,
//! repeat until the cgroup is empty or the time bound passes.

use std::io;
use std::time::{Duration, Instant};

use super::files::wait_until;
use super::{Cgroup, CgroupError};

/// Upper bound on the whole kill loop.
pub(crate) const KILL_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one round waits for the killed tasks to leave the cgroup.
const ROUND_WAIT: Duration = Duration::from_millis(100);

/// Kills everything in `cgroup`, bounded by [`KILL_TIMEOUT`]. With
/// `use_freezer`, each round runs with the cgroup frozen.
pub(crate) fn kill_by_signal(cgroup: &dyn Cgroup, use_freezer: bool) -> Result<(), CgroupError> {
    let deadline = Instant::now() + KILL_TIMEOUT;
    // Never signal ourselves, should the caller have joined the cgroup: the
    // loop then times out instead of killing the supervisor.
    let me = i32::try_from(std::process::id()).unwrap_or(i32::MAX);
    let others = || -> Result<Vec<i32>, CgroupError> { Ok(cgroup.pids()?.into_iter().filter(|&p| p != me).collect()) };
    loop {
        if others()?.is_empty() {
            return Ok(());
        }
        let dir = cgroup.dirs().first().map(|d| d.to_path_buf()).unwrap_or_default();
        if Instant::now() >= deadline {
            return Err(CgroupError::Timeout {
                path: dir,
                what: "become empty after SIGKILL",
                waited_ms: KILL_TIMEOUT.as_millis() as u64,
            });
        }
        // Frozen tasks cannot fork, so the list read next is complete. A
        // freeze that times out (a task in D state) still leaves a useful
        // round, so carry on and let the next round catch stragglers.
        if use_freezer {
            let _ = cgroup.freeze();
        }
        let sent = sigkill(&others()?);
        // SIGKILL reaches a frozen task only once it is thawed: always thaw.
        if use_freezer {
            cgroup.thaw()?;
        }
        sent.map_err(|source| CgroupError::Kill { path: dir, source })?;
        wait_until(ROUND_WAIT, || Ok(others()?.is_empty()))?;
    }
}

/// Sends SIGKILL to `pids`; a pid that has already exited is not an error.
pub(crate) fn sigkill(pids: &[i32]) -> io::Result<()> {
    for &pid in pids {
        // Only positive pids reach here (parse_pids), so this never signals a
        // process group or every process.
        match safehouse_sys::process::kill(pid, libc::SIGKILL) {
            Err(e) if e.raw_os_error() != Some(libc::ESRCH) => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

//! Reading and writing cgroupfs files, parsing their text, bounded waits.
//!
//! The parsers are pure functions over the file text so they are unit-tested
//! without a cgroupfs; the I/O wrappers only attach the path to errors.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use super::CgroupError;

/// Reads a whole control file.
pub(crate) fn read(path: &Path) -> Result<String, CgroupError> {
    fs::read_to_string(path).map_err(|source| CgroupError::Read { path: path.to_owned(), source })
}

/// Reads a control file that may legitimately be absent (a newer kernel's file).
pub(crate) fn read_optional(path: &Path) -> Result<Option<String>, CgroupError> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(CgroupError::Read { path: path.to_owned(), source }),
    }
}

/// Reads a file holding one unsigned integer (`memory.current`, `pids.current`, ...).
pub(crate) fn read_u64(path: &Path) -> Result<u64, CgroupError> {
    let text = read(path)?;
    parse_u64(&text).ok_or_else(|| CgroupError::Parse {
        path: path.to_owned(),
        detail: format!("expected an unsigned integer, got {:?}", text.trim()),
    })
}

/// Reads `key` from a flat-keyed file ("key value" per line: `memory.events`,
/// `cpu.stat`, `pids.events`, v1 `memory.oom_control`).
pub(crate) fn read_keyed(path: &Path, key: &str) -> Result<u64, CgroupError> {
    let text = read(path)?;
    keyed_value(&text, key).ok_or_else(|| CgroupError::Parse {
        path: path.to_owned(),
        detail: format!("no {key:?} field (kernel too old?)"),
    })
}

/// Writes `value` to an existing control file in one `write(2)`.
///
/// Never creates the file: a missing control file means a missing controller,
/// and creating a regular file instead would hide that. `O_NOFOLLOW` because
/// cgroupfs has no symlinks, so one would be an attack.
pub(crate) fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .and_then(|mut file| file.write_all(value.as_bytes()))
        .map_err(|source| CgroupError::Write { path: path.to_owned(), value: value.to_owned(), source })
}

/// `mkdir` that tolerates an existing directory (for the shared `safehouse/` parent).
pub(crate) fn ensure_dir(path: &Path) -> Result<(), CgroupError> {
    match fs::create_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(CgroupError::Create { path: path.to_owned(), source }),
    }
}

/// `mkdir` that fails if the directory exists: a cgroup of that name may belong
/// to another live sandbox, and sharing it would merge their limits.
pub(crate) fn create_dir(path: &Path) -> Result<(), CgroupError> {
    fs::create_dir(path).map_err(|source| CgroupError::Create { path: path.to_owned(), source })
}

/// How long [`remove_dirs`] keeps retrying on `EBUSY`: the kernel releases a
/// cgroup a moment after its last task exits. 10 × 20 ms bounds it near 200 ms.
const RMDIR_ROUNDS: u32 = 10;
const RMDIR_BACKOFF: Duration = Duration::from_millis(20);

/// `rmdir` each cgroup directory, retrying the busy ones briefly within one
/// shared time budget; an absent directory counts as removed.
pub(crate) fn remove_dirs(paths: &[&Path]) -> Result<(), CgroupError> {
    let mut pending: Vec<&Path> = paths.to_vec();
    let mut round = 1;
    loop {
        let mut busy = Vec::new();
        let mut failure = None;
        for path in pending {
            match fs::remove_dir(path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && round < RMDIR_ROUNDS => {
                    // Busy with tasks still exiting, or with cgroups nested below (a
                    // command's, a limited tool's) left by a daemon that died half-way.
                    if round == 1 {
                        remove_children(path);
                    }
                    busy.push(path)
                }
                Err(source) => {
                    failure.get_or_insert(CgroupError::Remove { path: path.to_owned(), source });
                }
            }
        }
        if let Some(err) = failure {
            return Err(err);
        }
        if busy.is_empty() {
            return Ok(());
        }
        pending = busy;
        round += 1;
        thread::sleep(RMDIR_BACKOFF);
    }
}

/// Removes the cgroup directories below `path`, deepest first (best effort: the rmdir of
/// `path` reports what stays).
fn remove_children(path: &Path) {
    let Ok(entries) = fs::read_dir(path) else { return };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            let child = entry.path();
            remove_children(&child);
            let _ = fs::remove_dir(&child);
        }
    }
}

/// Polls `done` with a short backoff until it returns true or `timeout` passes.
///
/// Returns `Ok(false)` on timeout so each caller can name what it waited for.
pub(crate) fn wait_until(
    timeout: Duration,
    mut done: impl FnMut() -> Result<bool, CgroupError>,
) -> Result<bool, CgroupError> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        if done()? {
            return Ok(true);
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(false);
        }
        thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(16));
    }
}

/// Parses one unsigned integer, ignoring surrounding whitespace.
pub(crate) fn parse_u64(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// The value of `key` in flat-keyed text ("key value" per line).
pub(crate) fn keyed_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        if fields.next()? != key {
            return None;
        }
        fields.next()?.parse().ok()
    })
}

/// The pids listed in a `cgroup.procs` file. Skips 0, which the kernel shows
/// for processes outside the reader's pid namespace: they cannot be signalled
/// from here anyway.
pub(crate) fn parse_pids(text: &str) -> Vec<i32> {
    text.lines().filter_map(|line| line.trim().parse::<i32>().ok()).filter(|&pid| pid > 0).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    #[test]
    fn keyed_value_reads_v1_oom_control() {
        let text = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
        assert_eq!(keyed_value(text, "oom_kill"), Some(3));
        assert_eq!(keyed_value(text, "under_oom"), Some(0));
        // "oom_kill" must not match "oom_kill_disable".
        assert_eq!(keyed_value("oom_kill_disable 1\n", "oom_kill"), None);
    }

    #[test]
    fn keyed_value_reads_v2_memory_events() {
        let text = "low 0\nhigh 0\nmax 17\noom 2\noom_kill 2\noom_group_kill 0\n";
        assert_eq!(keyed_value(text, "oom_kill"), Some(2));
        assert_eq!(keyed_value(text, "max"), Some(17));
    }

    #[test]
    fn keyed_value_reads_cpu_stat_and_pids_events() {
        let cpu = "usage_usec 123456\nuser_usec 100000\nsystem_usec 23456\n\
                   nr_periods 0\nnr_throttled 0\nthrottled_usec 0\n";
        assert_eq!(keyed_value(cpu, "usage_usec"), Some(123_456));
        assert_eq!(keyed_value("max 5\n", "max"), Some(5));
        assert_eq!(keyed_value("max 0", "max"), Some(0));
        assert_eq!(keyed_value("", "max"), None);
        assert_eq!(keyed_value("max lots\n", "max"), None);
    }

    #[test]
    fn parse_u64_trims_newline() {
        assert_eq!(parse_u64("9223372036854771712\n"), Some(9_223_372_036_854_771_712));
        assert_eq!(parse_u64("max\n"), None);
    }

    #[test]
    fn parse_pids_skips_blank_and_foreign() {
        assert_eq!(parse_pids("12\n0\n\n345\n"), vec![12, 345]);
        assert_eq!(parse_pids(""), Vec::<i32>::new());
    }

    #[test]
    fn wait_until_is_bounded() {
        let start = Instant::now();
        let done = wait_until(Duration::from_millis(30), || Ok(false)).unwrap();
        assert!(!done);
        assert!(start.elapsed() < Duration::from_millis(500));
        assert!(wait_until(Duration::ZERO, || Ok(true)).unwrap());
    }

    #[test]
    fn write_never_creates_files() {
        let dir = std::env::temp_dir().join(format!("safehouse-cg-files-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("memory.max");
        let err = write(&missing, "1").unwrap_err();
        assert!(matches!(err, CgroupError::Write { .. }), "{err}");
        assert!(!missing.exists());
        fs::remove_dir_all(&dir).unwrap();
    }
}

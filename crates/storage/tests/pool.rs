//! Privileged tests of the pool: a real btrfs image, loop-mounted, with real quota groups.
//! Each test makes its own data dir and pool and unmounts it at the end.

use std::fs;
use std::os::unix::fs::{chown, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use safehouse_jail::testkit::skip_privileged;
use safehouse_storage::{Kind, Pool, PoolOptions, Probe, StorageError};

const MIB: u64 = 1 << 20;
/// The unprivileged writer: the host id root-mode sandboxes run as.
const SANDBOX_ID: u32 = 1_000_000_000;

struct TestPool {
    data: PathBuf,
    pool: Option<Pool>,
}

impl TestPool {
    fn new(test: &str) -> Option<TestPool> {
        let data = std::env::temp_dir().join(format!("safehouse-storage-{test}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&data);
        fs::create_dir_all(&data).unwrap();
        if let Some(reason) = Probe::run(&data).refusal(true) {
            skip_privileged(test, &reason);
            let _ = fs::remove_dir_all(&data);
            return None;
        }
        let pool = Pool::open(&data, &PoolOptions { size: 256 * MIB }).expect("open the pool");
        // The writer here is a host process walking the path (a sandbox gets its layer
        // mounted instead), so it needs to pass through the root-only storage dir.
        fs::set_permissions(data.join("storage"), fs::Permissions::from_mode(0o711)).unwrap();
        Some(TestPool { data, pool: Some(pool) })
    }

    fn pool(&self) -> &Pool {
        self.pool.as_ref().unwrap()
    }

    fn reopen(&mut self) {
        self.pool.take().unwrap().unmount().expect("unmount");
        self.pool = Some(Pool::open(&self.data, &PoolOptions { size: 256 * MIB }).expect("reopen the pool"));
    }
}

impl Drop for TestPool {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take() {
            let root = pool.root().to_path_buf();
            if pool.unmount().is_err() {
                let _ = Command::new("umount").arg("-l").arg(&root).status();
            }
        }
        let _ = fs::remove_dir_all(&self.data);
    }
}

/// `dd` of `mib` MiB into `file` as the unprivileged sandbox id: (succeeded, stderr).
fn write_as_sandbox(file: &Path, mib: u64) -> (bool, String) {
    let out = Command::new("dd")
        .arg("if=/dev/zero")
        .arg(format!("of={}", file.display()))
        .args(["bs=1M", &format!("count={mib}"), "conv=fsync"])
        .uid(SANDBOX_ID)
        .gid(SANDBOX_ID)
        .output()
        .expect("run dd");
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn writable_by_sandbox(dir: &Path) {
    chown(dir, Some(SANDBOX_ID), Some(SANDBOX_ID)).unwrap();
}

#[test]
fn a_write_past_the_cap_fails_with_edquot_and_the_same_write_uncapped_succeeds() {
    let Some(t) = TestPool::new("cap") else { return };
    let layer = t.pool().create(Kind::Layer, "capped", 16 * MIB).unwrap();
    writable_by_sandbox(&layer);
    let (ok, err) = write_as_sandbox(&layer.join("big"), 32);
    assert!(!ok, "a 32 MiB write into a 16 MiB layer succeeded");
    assert!(err.contains("Disk quota exceeded"), "expected EDQUOT, dd said: {err}");
    let written = fs::metadata(layer.join("big")).unwrap().len();
    assert!(written <= 16 * MIB, "{written} bytes landed past the cap");

    // The control: the same write on the same filesystem, outside any capped subvolume.
    let free = t.pool().root().join("control");
    fs::create_dir(&free).unwrap();
    writable_by_sandbox(&free);
    let (ok, err) = write_as_sandbox(&free.join("big"), 32);
    assert!(ok, "the uncapped control write failed: {err}");
    assert_eq!(fs::metadata(free.join("big")).unwrap().len(), 32 * MIB);

    // Deleting frees the cap's room again; raising the cap lets the write through.
    fs::remove_file(layer.join("big")).unwrap();
    t.pool().set_cap(Kind::Layer, "capped", 64 * MIB).unwrap();
    let (ok, err) = write_as_sandbox(&layer.join("big"), 32);
    assert!(ok, "a 32 MiB write under a 64 MiB cap failed: {err}");
    t.pool().sync().unwrap();
    let usage = t.pool().usage(Kind::Layer, "capped").unwrap();
    assert_eq!(usage.cap, Some(64 * MIB));
    assert!(usage.referenced >= 32 * MIB && usage.referenced < 33 * MIB, "{usage:?}");
}

#[test]
fn a_snapshot_is_a_read_only_point_in_time_and_layers_start_from_it() {
    let Some(t) = TestPool::new("snapshot") else { return };
    let pool = t.pool();
    let layer = pool.create(Kind::Layer, "src", 64 * MIB).unwrap();
    fs::write(layer.join("notes.txt"), "before").unwrap();
    let snap = pool.snapshot(Kind::Layer, "src", Kind::Snapshot, "snap-1", None).unwrap();
    fs::write(layer.join("notes.txt"), "after").unwrap();
    fs::write(layer.join("new.txt"), "only in the layer").unwrap();

    assert_eq!(fs::read_to_string(snap.join("notes.txt")).unwrap(), "before");
    assert!(!snap.join("new.txt").exists());
    let err = fs::write(snap.join("notes.txt"), "tamper").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(30), "writing a snapshot: {err}"); // EROFS, even for root

    let child = pool.snapshot(Kind::Snapshot, "snap-1", Kind::Layer, "child", Some(8 * MIB)).unwrap();
    assert_eq!(fs::read_to_string(child.join("notes.txt")).unwrap(), "before");
    fs::write(child.join("notes.txt"), "child's").unwrap();
    assert_eq!(fs::read_to_string(snap.join("notes.txt")).unwrap(), "before");
    writable_by_sandbox(&child);
    let (ok, err) = write_as_sandbox(&child.join("big"), 16);
    assert!(!ok && err.contains("Disk quota exceeded"), "the child's own cap: {err}");

    assert_eq!(pool.list(Kind::Snapshot).unwrap(), vec!["snap-1".to_string()]);
    assert!(pool.remove(Kind::Snapshot, "snap-1").unwrap());
    assert!(!pool.remove(Kind::Snapshot, "snap-1").unwrap(), "a second delete finds nothing");
    // The child does not depend on the snapshot it came from.
    assert_eq!(fs::read_to_string(child.join("notes.txt")).unwrap(), "child's");
}

#[test]
fn ten_forks_see_the_parent_and_not_each_other() {
    let Some(t) = TestPool::new("fork") else { return };
    let pool = t.pool();
    let parent = pool.create(Kind::Layer, "parent", 64 * MIB).unwrap();
    fs::write(parent.join("shared.txt"), "from the parent").unwrap();
    let forks: Vec<PathBuf> = (0..10)
        .map(|i| pool.snapshot(Kind::Layer, "parent", Kind::Layer, &format!("fork-{i}"), None).unwrap())
        .collect();
    for (i, f) in forks.iter().enumerate() {
        fs::write(f.join(format!("mine-{i}")), "x").unwrap();
    }
    for (i, f) in forks.iter().enumerate() {
        assert_eq!(fs::read_to_string(f.join("shared.txt")).unwrap(), "from the parent");
        let names: Vec<String> =
            fs::read_dir(f).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        let mut names = names;
        names.sort();
        assert_eq!(names, vec![format!("mine-{i}"), "shared.txt".to_string()]);
        // A fork keeps its parent's cap.
        t.pool().sync().unwrap();
        assert_eq!(pool.usage(Kind::Layer, &format!("fork-{i}")).unwrap().cap, Some(64 * MIB));
    }
    assert_eq!(pool.list(Kind::Layer).unwrap().len(), 11);
    assert!(!parent.join("mine-0").exists());
}

#[test]
fn volumes_have_their_own_lifecycle_and_names_are_checked() {
    let Some(t) = TestPool::new("volumes") else { return };
    let pool = t.pool();
    pool.create(Kind::Volume, "data", 32 * MIB).unwrap();
    pool.create(Kind::Volume, "cache", 32 * MIB).unwrap();
    assert!(matches!(
        pool.create(Kind::Volume, "data", 32 * MIB),
        Err(StorageError::Exists { kind: Kind::Volume, .. })
    ));
    assert_eq!(pool.list(Kind::Volume).unwrap(), vec!["cache".to_string(), "data".to_string()]);
    for bad in ["../x", "..", ".hidden", "a/b", ""] {
        let err = pool.create(Kind::Volume, bad, 32 * MIB).unwrap_err();
        assert!(matches!(err, StorageError::BadName { .. }), "{bad:?}: {err}");
    }
    let err = pool.create(Kind::Volume, "tiny", 1024).unwrap_err();
    assert!(err.to_string().contains("below the minimum"), "{err}");
    assert!(matches!(pool.usage(Kind::Volume, "nope"), Err(StorageError::NotFound { .. })));
    assert!(pool.remove(Kind::Volume, "data").unwrap());
    assert_eq!(pool.list(Kind::Volume).unwrap(), vec!["cache".to_string()]);
}

#[test]
fn the_pool_survives_an_unmount_and_caps_hold_after_it() {
    let Some(mut t) = TestPool::new("reopen") else { return };
    let layer = t.pool().create(Kind::Layer, "kept", 8 * MIB).unwrap();
    fs::write(layer.join("file"), "still here").unwrap();
    t.pool().create(Kind::Volume, "vol", 8 * MIB).unwrap();
    // What a host reboot does to the pool: unmounted, then mounted again from its image.
    t.reopen();
    assert_eq!(fs::read_to_string(layer.join("file")).unwrap(), "still here");
    assert_eq!(t.pool().list(Kind::Volume).unwrap(), vec!["vol".to_string()]);
    writable_by_sandbox(&layer);
    let (ok, err) = write_as_sandbox(&layer.join("big"), 16);
    assert!(!ok && err.contains("Disk quota exceeded"), "the cap after remount: {err}");
    // Opening a mounted pool adopts it (a daemon restart).
    let again = Pool::open(&t.data, &PoolOptions { size: 256 * MIB }).unwrap();
    assert_eq!(again.root(), t.pool().root());
}

#[test]
fn a_pool_larger_than_the_free_disk_is_refused() {
    let data = std::env::temp_dir().join(format!("safehouse-storage-huge-{}", std::process::id()));
    fs::create_dir_all(&data).unwrap();
    if let Some(reason) = Probe::run(&data).refusal(true) {
        skip_privileged("huge", &reason);
        return;
    }
    let err = Pool::open(&data, &PoolOptions { size: 1 << 60 }).unwrap_err();
    let _ = fs::remove_dir_all(&data);
    assert!(matches!(err, StorageError::PoolTooLarge { .. }), "{err}");
    assert!(err.to_string().contains("choose a smaller size"), "{err}");
}

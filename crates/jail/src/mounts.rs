//! Executes a mount plan inside the sandbox's new mount namespace.
//!
//! The sequence follows bubblewrap's: make every mount private, mount the new root on a
//! staging directory, pivot into it with the old root kept at /oldroot, bind what the plan
//! asks for from /oldroot, then detach /oldroot so nothing of the host stays reachable.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{symlink, DirBuilderExt, OpenOptionsExt, PermissionsExt};

use safehouse_policy::plan::{MountOp, Plan, RootSpec};
use safehouse_sys::mount::{self as m, MS_BIND, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_PRIVATE, MS_RDONLY, MS_REC};

const STAGING: &str = "/tmp";
const OLDROOT: &str = "/oldroot";
const HIDE_FILE: &str = "/.safehouse-hidden-file";
const HIDE_DIR: &str = "/.safehouse-hidden-dir";

/// Mount trees the host side prepared (root mode): sandbox path -> detached mount fd.
pub type Prepared = BTreeMap<String, OwnedFd>;

/// A failed step, named for the error message.
fn step<T>(what: impl FnOnce() -> String, r: io::Result<T>) -> Result<T, String> {
    r.map_err(|e| format!("{}: {e}", what()))
}

fn mkdir_p(path: &str, mode: u32) -> io::Result<()> {
    fs::DirBuilder::new().recursive(true).mode(mode).create(path)
}

fn touch(path: &str, mode: u32) -> io::Result<()> {
    if let Some(parent) = std::path::Path::new(path).parent() {
        mkdir_p(&parent.to_string_lossy(), 0o755)?;
    }
    fs::OpenOptions::new().write(true).create(true).truncate(false).mode(mode).open(path).map(drop)
}

fn exists(path: &str) -> bool {
    fs::symlink_metadata(path).is_ok()
}

const LOCKDOWN: u64 = m::MOUNT_ATTR_NOSUID | m::MOUNT_ATTR_NODEV;

fn bind(src: &str, dst: &str, recursive: bool) -> io::Result<()> {
    m::mount(Some(src), dst, None, MS_BIND | if recursive { MS_REC } else { 0 }, None)
}

fn make_readonly(path: &str, recursive: bool) -> io::Result<()> {
    m::set_attr(None, path, recursive, m::MOUNT_ATTR_RDONLY | LOCKDOWN, 0, None)
}

/// Builds the whole filesystem view of the sandbox and leaves the process in its new root.
pub fn build(plan: &Plan, prepared: &mut Prepared, lower_fd: Option<&OwnedFd>) -> Result<(), String> {
    step(|| "make mounts private".into(), m::mount(None, "/", None, MS_REC | MS_PRIVATE, None))?;
    let new_root = match &plan.root {
        RootSpec::Tmpfs { size, inodes } => {
            let opts = format!("size={size},nr_inodes={inodes},mode=0755");
            step(
                || "mount root tmpfs".into(),
                m::mount(Some("tmpfs"), STAGING, Some("tmpfs"), MS_NOSUID | MS_NODEV, Some(&opts)),
            )?;
            STAGING.to_string()
        }
        RootSpec::Overlay { lower, size, inodes } => {
            let opts = format!("size={size},nr_inodes={inodes},mode=0755");
            step(
                || "mount overlay upper tmpfs".into(),
                m::mount(Some("tmpfs"), STAGING, Some("tmpfs"), MS_NOSUID | MS_NODEV, Some(&opts)),
            )?;
            for d in ["upper", "work", "root"] {
                step(|| format!("create overlay {d} dir"), mkdir_p(&format!("{STAGING}/{d}"), 0o755))?;
            }
            let lower = match lower_fd {
                Some(fd) => format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(fd)),
                None => lower.clone(),
            };
            let opts = format!("lowerdir={lower},upperdir={STAGING}/upper,workdir={STAGING}/work,userxattr");
            let target = format!("{STAGING}/root");
            step(
                || format!("mount overlay over rootfs {lower}"),
                m::mount(Some("overlay"), &target, Some("overlay"), MS_NOSUID | MS_NODEV, Some(&opts)),
            )?;
            target
        }
    };
    step(|| "create /oldroot".into(), mkdir_p(&format!("{new_root}{OLDROOT}"), 0o700))?;
    step(|| "pivot_root".into(), m::pivot_root(&new_root, &format!("{new_root}{OLDROOT}")))?;
    step(|| "chdir /".into(), std::env::set_current_dir("/"))?;

    crate::run::trace("child: pivoted");
    for op in &plan.ops {
        apply(op, prepared)?;
        if matches!(op, MountOp::Dev { .. } | MountOp::Proc { .. } | MountOp::Sysfs { .. } | MountOp::RootReadOnly) {
            crate::run::trace(&format!(
                "child: {}",
                match op {
                    MountOp::Dev { .. } => "dev",
                    MountOp::Proc { .. } => "proc",
                    MountOp::Sysfs { .. } => "sys",
                    _ => "sealed root",
                }
            ));
        }
    }
    Ok(())
}

fn apply(op: &MountOp, prepared: &mut Prepared) -> Result<(), String> {
    match op {
        MountOp::Bind { host, path, writable, dir } => {
            if *dir {
                step(|| format!("create mount point {path}"), mkdir_p(path, 0o755))?;
            } else {
                step(|| format!("create mount point {path}"), touch(path, 0o644))?;
            }
            if let Some(tree) = prepared.remove(path) {
                step(|| format!("attach {host} at {path}"), m::attach_tree(&tree, path))?;
            } else {
                step(|| format!("bind {host} at {path}"), bind(&format!("{OLDROOT}{host}"), path, true))?;
            }
            let attrs = if *writable { LOCKDOWN } else { LOCKDOWN | m::MOUNT_ATTR_RDONLY };
            step(|| format!("restrict mount {path}"), m::set_attr(None, path, true, attrs, 0, None))?;
        }
        MountOp::Symlink { target, path } => {
            step(|| format!("symlink {path}"), symlink(target, path))?;
        }
        MountOp::WritableDir { path } => {
            step(|| format!("create {path}"), mkdir_p(path, 0o755))?;
            if path == "/tmp" || path == "/var/tmp" {
                step(|| format!("chmod {path}"), fs::set_permissions(path, fs::Permissions::from_mode(0o1777)))?;
            }
            step(|| format!("bind {path}"), bind(path, path, false))?;
            step(|| format!("restrict {path}"), m::set_attr(None, path, false, LOCKDOWN, 0, None))?;
        }
        MountOp::Proc { path } => {
            step(|| format!("create {path}"), mkdir_p(path, 0o555))?;
            step(
                || "mount proc".into(),
                m::mount(Some("proc"), path, Some("proc"), MS_NOSUID | MS_NODEV | MS_NOEXEC, None),
            )?;
        }
        // /proc entries differ between kernels: a missing one needs no masking (ENOENT).
        MountOp::MaskWithNull { path } => {
            // Writes through the mask reach /dev/null, so it needs no read-only flag.
            skip_missing(|| format!("mask {path}"), bind(&format!("{OLDROOT}/dev/null"), path, false))?;
        }
        MountOp::ReadOnlyDir { path } => {
            if skip_missing(|| format!("bind {path}"), bind(path, path, true))? {
                step(|| format!("make {path} read-only"), make_readonly(path, true))?;
            }
        }
        MountOp::MaskDir { path } => {
            ensure_hide_dir()?;
            if skip_missing(|| format!("mask {path}"), bind(HIDE_DIR, path, false))? {
                step(|| format!("restrict {path}"), make_readonly(path, false))?;
            }
        }
        MountOp::Sysfs { path } => {
            step(|| format!("create {path}"), mkdir_p(path, 0o555))?;
            // Without sysfs the sandbox sees an empty /sys: stricter, so not an error.
            let _ = m::mount(Some("sysfs"), path, Some("sysfs"), MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, None);
        }
        MountOp::Dev { path, devices, shm_size, shm_inodes } => build_dev(path, devices, *shm_size, *shm_inodes)?,
        MountOp::Generated { path, contents } => {
            if exists(path) {
                let src = format!("/.safehouse-gen{}", path.replace('/', "-"));
                step(|| format!("write {src}"), fs::write(&src, contents))?;
                step(|| format!("bind {path}"), bind(&src, path, false))?;
                step(|| format!("restrict {path}"), make_readonly(path, false))?;
                // The source stays until the root is sealed: a mount over a bind of an
                // unlinked file fails, and a policy may hide this path later.
            }
        }
        MountOp::HideFile { path } => {
            if !exists(HIDE_FILE) {
                step(|| "create hidden-file source".into(), touch(HIDE_FILE, 0o000))?;
            }
            step(|| format!("hide {path}"), bind(HIDE_FILE, path, false))?;
            step(|| format!("restrict {path}"), make_readonly(path, false))?;
        }
        MountOp::HideDir { path } => {
            ensure_hide_dir()?;
            if !exists(path) {
                step(|| format!("create {path}"), mkdir_p(path, 0o755))?;
            }
            step(|| format!("hide {path}"), bind(HIDE_DIR, path, false))?;
            step(|| format!("restrict {path}"), make_readonly(path, false))?;
        }
        MountOp::Hide { path } => match fs::metadata(path) {
            Ok(m) if m.is_dir() => apply(&MountOp::HideDir { path: path.clone() }, prepared)?,
            Ok(_) => apply(&MountOp::HideFile { path: path.clone() }, prepared)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("hide {path}: {e}")),
        },
        MountOp::RootReadOnly => {
            step(|| "detach the host root".into(), m::umount2(OLDROOT, m::MNT_DETACH))?;
            step(|| "remove /oldroot".into(), fs::remove_dir(OLDROOT))?;
            let _ = fs::remove_file(HIDE_FILE);
            let _ = fs::remove_dir(HIDE_DIR);
            for entry in fs::read_dir("/").map_err(|e| format!("list /: {e}"))?.flatten() {
                if entry.file_name().to_string_lossy().starts_with(".safehouse-gen") {
                    // EBUSY: a policy hid the generated file, making its source a mount
                    // point; it then stays (read-only, and its content is public anyway).
                    match fs::remove_file(entry.path()) {
                        Err(e) if e.raw_os_error() != Some(libc::EBUSY) => {
                            return Err(format!("remove {}: {e}", entry.path().display()))
                        }
                        _ => {}
                    }
                }
            }
            step(
                || "make / read-only".into(),
                m::set_attr(None, "/", false, m::MOUNT_ATTR_RDONLY | LOCKDOWN, 0, None),
            )?;
        }
    }
    Ok(())
}

/// Runs a mount step whose target may not exist: Ok(false) if it does not.
fn skip_missing(what: impl FnOnce() -> String, r: io::Result<()>) -> Result<bool, String> {
    match r {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(format!("{}: {e}", what())),
    }
}

/// The empty, mode-000 directory bound over hidden directories.
fn ensure_hide_dir() -> Result<(), String> {
    if !exists(HIDE_DIR) {
        step(|| "create hidden-dir source".into(), fs::DirBuilder::new().mode(0o000).create(HIDE_DIR))?;
    }
    Ok(())
}

fn build_dev(path: &str, devices: &[String], shm_size: u64, shm_inodes: u64) -> Result<(), String> {
    step(|| format!("create {path}"), mkdir_p(path, 0o755))?;
    step(
        || "mount /dev tmpfs".into(),
        m::mount(Some("tmpfs"), path, Some("tmpfs"), MS_NOSUID | MS_NOEXEC, Some("size=64k,nr_inodes=64,mode=0755")),
    )?;
    for dev in devices {
        let dst = format!("{path}/{dev}");
        step(|| format!("create {dst}"), touch(&dst, 0o666))?;
        step(|| format!("bind /dev/{dev}"), bind(&format!("{OLDROOT}/dev/{dev}"), &dst, false))?;
    }
    let pts = format!("{path}/pts");
    step(|| "create /dev/pts".into(), mkdir_p(&pts, 0o755))?;
    step(
        || "mount devpts".into(),
        m::mount(
            Some("devpts"),
            &pts,
            Some("devpts"),
            MS_NOSUID | MS_NOEXEC,
            Some("newinstance,ptmxmode=0666,mode=0620"),
        ),
    )?;
    step(|| "link /dev/ptmx".into(), symlink("pts/ptmx", format!("{path}/ptmx")))?;
    let shm = format!("{path}/shm");
    step(|| "create /dev/shm".into(), mkdir_p(&shm, 0o755))?;
    step(
        || "mount /dev/shm".into(),
        m::mount(
            Some("tmpfs"),
            &shm,
            Some("tmpfs"),
            MS_NOSUID | MS_NODEV,
            Some(&format!("size={shm_size},nr_inodes={shm_inodes},mode=1777")),
        ),
    )?;
    for (name, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        step(|| format!("link /dev/{name}"), symlink(target, format!("{path}/{name}")))?;
    }
    step(
        || "make /dev read-only".into(),
        m::set_attr(None, path, false, m::MOUNT_ATTR_RDONLY | m::MOUNT_ATTR_NOSUID | m::MOUNT_ATTR_NOEXEC, 0, None),
    )?;
    Ok(())
}

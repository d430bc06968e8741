//! Executes a mount plan inside the sandbox's new mount namespace.
//!
//! The sequence follows bubblewrap's: make every mount private, mount the new root on a
//! staging directory, pivot into it with the old root kept at /oldroot, bind what the plan
//! asks for from /oldroot, then detach /oldroot so nothing of the host stays reachable.
//!
//! Every mount and file operation goes through [`MountOps`]: the sandbox's
//! `crate::kernel::Real` makes them; root-free tests run the sequence against a fake.

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

/// What a path is, following symlinks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir,
    Other,
}

/// The mount and file operations of building the filesystem view.
pub trait MountOps {
    fn mount(
        &mut self,
        source: Option<&str>,
        target: &str,
        fstype: Option<&str>,
        flags: libc::c_ulong,
        data: Option<&str>,
    ) -> io::Result<()>;
    /// `mount_setattr`: sets `attrs` on the mount at `path` (and beneath it, `recursive`).
    fn set_attr(&mut self, path: &str, recursive: bool, attrs: u64) -> io::Result<()>;
    /// Attaches a detached mount tree (from the host side) at `path`.
    fn attach_tree(&mut self, tree: &OwnedFd, path: &str) -> io::Result<()>;
    fn pivot_root(&mut self, new_root: &str, put_old: &str) -> io::Result<()>;
    /// Detaches the mount tree at `path` (`umount2(MNT_DETACH)`).
    fn detach(&mut self, path: &str) -> io::Result<()>;
    fn chdir(&mut self, path: &str) -> io::Result<()>;
    /// Creates `path` and its missing parents.
    fn mkdir_p(&mut self, path: &str, mode: u32) -> io::Result<()>;
    /// Creates the directory `path` (not its parents).
    fn mkdir(&mut self, path: &str, mode: u32) -> io::Result<()>;
    /// Creates the file `path` (and its parents) if it is missing.
    fn touch(&mut self, path: &str, mode: u32) -> io::Result<()>;
    fn write(&mut self, path: &str, contents: &str) -> io::Result<()>;
    fn symlink(&mut self, target: &str, path: &str) -> io::Result<()>;
    fn chmod(&mut self, path: &str, mode: u32) -> io::Result<()>;
    fn remove_dir(&mut self, path: &str) -> io::Result<()>;
    fn remove_file(&mut self, path: &str) -> io::Result<()>;
    /// Whether `path` exists (not following a final symlink).
    fn exists(&mut self, path: &str) -> bool;
    /// What `path` is, following symlinks.
    fn kind(&mut self, path: &str) -> io::Result<Kind>;
    /// The names in `/`.
    fn list_root(&mut self) -> io::Result<Vec<String>>;
    /// Opens the directory `path` (`O_PATH`), to name it later as `/proc/self/fd/N`.
    fn open_dir(&mut self, path: &str) -> io::Result<OwnedFd>;
}

impl MountOps for crate::kernel::Real {
    fn mount(
        &mut self,
        source: Option<&str>,
        target: &str,
        fstype: Option<&str>,
        flags: libc::c_ulong,
        data: Option<&str>,
    ) -> io::Result<()> {
        m::mount(source, target, fstype, flags, data)
    }

    fn set_attr(&mut self, path: &str, recursive: bool, attrs: u64) -> io::Result<()> {
        m::set_attr(None, path, recursive, attrs, 0, None)
    }

    fn attach_tree(&mut self, tree: &OwnedFd, path: &str) -> io::Result<()> {
        m::attach_tree(tree, path)
    }

    fn pivot_root(&mut self, new_root: &str, put_old: &str) -> io::Result<()> {
        m::pivot_root(new_root, put_old)
    }

    fn detach(&mut self, path: &str) -> io::Result<()> {
        m::umount2(path, m::MNT_DETACH)
    }

    fn chdir(&mut self, path: &str) -> io::Result<()> {
        std::env::set_current_dir(path)
    }

    fn mkdir_p(&mut self, path: &str, mode: u32) -> io::Result<()> {
        fs::DirBuilder::new().recursive(true).mode(mode).create(path)
    }

    fn mkdir(&mut self, path: &str, mode: u32) -> io::Result<()> {
        fs::DirBuilder::new().mode(mode).create(path)
    }

    fn touch(&mut self, path: &str, mode: u32) -> io::Result<()> {
        if let Some(parent) = std::path::Path::new(path).parent() {
            self.mkdir_p(&parent.to_string_lossy(), 0o755)?;
        }
        fs::OpenOptions::new().write(true).create(true).truncate(false).mode(mode).open(path).map(drop)
    }

    fn write(&mut self, path: &str, contents: &str) -> io::Result<()> {
        fs::write(path, contents)
    }

    fn symlink(&mut self, target: &str, path: &str) -> io::Result<()> {
        symlink(target, path)
    }

    fn chmod(&mut self, path: &str, mode: u32) -> io::Result<()> {
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
    }

    fn remove_dir(&mut self, path: &str) -> io::Result<()> {
        fs::remove_dir(path)
    }

    fn remove_file(&mut self, path: &str) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn exists(&mut self, path: &str) -> bool {
        fs::symlink_metadata(path).is_ok()
    }

    fn kind(&mut self, path: &str) -> io::Result<Kind> {
        fs::metadata(path).map(|m| if m.is_dir() { Kind::Dir } else { Kind::Other })
    }

    fn list_root(&mut self) -> io::Result<Vec<String>> {
        Ok(fs::read_dir("/")?.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
    }

    fn open_dir(&mut self, path: &str) -> io::Result<OwnedFd> {
        fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(path)
            .map(OwnedFd::from)
    }
}

const LOCKDOWN: u64 = m::MOUNT_ATTR_NOSUID | m::MOUNT_ATTR_NODEV;

fn bind<F: MountOps>(f: &mut F, src: &str, dst: &str, recursive: bool) -> io::Result<()> {
    f.mount(Some(src), dst, None, MS_BIND | if recursive { MS_REC } else { 0 }, None)
}

fn make_readonly<F: MountOps>(f: &mut F, path: &str, recursive: bool) -> io::Result<()> {
    f.set_attr(path, recursive, m::MOUNT_ATTR_RDONLY | LOCKDOWN)
}

/// Builds the whole filesystem view of the sandbox and leaves the process in its new root.
/// `lowers`: root mode, the root's read-only layers (a rootfs directory, or an image's
/// layers, bottom first) as detached mounts from the host side; rootless, none (the
/// plan's paths are walked here, as the caller). `layer`: the writable layer on disk (the
/// plan's `disk_layer`) as a detached mount from the host side, in place of a tmpfs.
pub fn build<F: MountOps>(
    f: &mut F,
    plan: &Plan,
    prepared: &mut Prepared,
    lowers: &[OwnedFd],
    layer: Option<&OwnedFd>,
) -> Result<(), String> {
    step(|| "make mounts private".into(), f.mount(None, "/", None, MS_REC | MS_PRIVATE, None))?;
    let new_root = match &plan.root {
        RootSpec::Tmpfs { size, inodes } => {
            writable_layer(f, *size, *inodes, layer, "root")?;
            STAGING.to_string()
        }
        RootSpec::Overlay { lower, size, inodes } => {
            overlay_root(f, std::slice::from_ref(lower), lowers, (*size, *inodes, layer), &format!("rootfs {lower}"))?
        }
        RootSpec::Image { layers, size, inodes } => {
            overlay_root(f, layers, lowers, (*size, *inodes, layer), &format!("the image's {} layers", layers.len()))?
        }
    };
    step(|| "create /oldroot".into(), f.mkdir_p(&format!("{new_root}{OLDROOT}"), 0o700))?;
    step(|| "pivot_root".into(), f.pivot_root(&new_root, &format!("{new_root}{OLDROOT}")))?;
    step(|| "chdir /".into(), f.chdir("/"))?;
    if !matches!(plan.root, RootSpec::Tmpfs { .. }) {
        // The staging tmpfs (the overlay's upper layer, which keeps its own reference to
        // it) covers the host's /tmp in the old root: detach it, so binds of host paths
        // under /tmp find them.
        step(|| "uncover the host's /tmp".into(), f.detach(&format!("{OLDROOT}{STAGING}")))?;
    }

    crate::run::trace("child: pivoted");
    for op in &plan.ops {
        apply(f, op, prepared)?;
        if matches!(
            op,
            MountOp::Dev { .. }
                | MountOp::Proc { .. }
                | MountOp::Sysfs { .. }
                | MountOp::RootReadOnly
                | MountOp::RootWritable
        ) {
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

/// Mounts the sandbox's writable layer at the staging directory: a tmpfs of `size` bytes
/// and `inodes` inodes, or, given `disk`, the layer on disk the host side cloned (its cap
/// is its quota group's). A disk layer may hold what an earlier run of the same sandbox
/// left (a resume): every step after this one accepts what it finds.
fn writable_layer<F: MountOps>(
    f: &mut F,
    size: u64,
    inodes: u64,
    disk: Option<&OwnedFd>,
    what: &str,
) -> Result<(), String> {
    match disk {
        None => {
            let opts = format!("size={size},nr_inodes={inodes},mode=0755");
            step(
                || format!("mount {what} tmpfs"),
                f.mount(Some("tmpfs"), STAGING, Some("tmpfs"), MS_NOSUID | MS_NODEV, Some(&opts)),
            )
        }
        Some(tree) => {
            step(|| format!("attach the {what} layer on disk"), f.attach_tree(tree, STAGING))?;
            step(|| format!("restrict the {what} layer on disk"), f.set_attr(STAGING, false, LOCKDOWN))
        }
    }
}

/// An overlay of `layers` (read-only, bottom first) under the sandbox's own writable
/// upper layer (`upper`: the tmpfs size and inodes, or the layer on disk); returns where
/// it is mounted. With `trees` (root mode), the layers are those detached mounts, attached
/// read-only in this mount namespace first (overlayfs takes lower layers only from it).
fn overlay_root<F: MountOps>(
    f: &mut F,
    layers: &[String],
    trees: &[OwnedFd],
    upper: (u64, u64, Option<&OwnedFd>),
    what: &str,
) -> Result<String, String> {
    // Rootless: the layers are the caller's own directories, opened here (before the
    // staging tmpfs can hide a path under /tmp) and named by descriptor.
    let mut opened = Vec::new();
    if trees.is_empty() {
        for l in layers {
            opened.push(step(|| format!("open the layer {l}"), f.open_dir(l))?);
        }
    } else if trees.len() != layers.len() {
        return Err(format!("the host side opened {} of the {} layers", trees.len(), layers.len()));
    }
    writable_layer(f, upper.0, upper.1, upper.2, "overlay upper")?;
    for d in ["upper", "work", "root"] {
        step(|| format!("create overlay {d} dir"), f.mkdir_p(&format!("{STAGING}/{d}"), 0o755))?;
    }
    let lower_paths: Vec<String> = if trees.is_empty() {
        opened.iter().map(|fd| format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(fd))).collect()
    } else {
        // Root mode: the host side's detached clones, attached in this mount namespace
        // (overlayfs takes lower layers only from the mounter's own), read-only.
        let mut paths = Vec::new();
        for (i, tree) in trees.iter().enumerate() {
            let at = format!("{STAGING}/lower/{i}");
            step(|| format!("create {at}"), f.mkdir_p(&at, 0o700))?;
            step(|| format!("attach layer {i}"), f.attach_tree(tree, &at))?;
            step(|| format!("restrict layer {i}"), f.set_attr(&at, false, m::MOUNT_ATTR_RDONLY | LOCKDOWN))?;
            paths.push(at);
        }
        paths
    };
    // overlayfs lists lower dirs top first. userxattr: overlayfs in a user namespace keeps
    // its metadata (and reads an image's opaque markers) in user.overlay.* xattrs.
    let lower: Vec<&str> = lower_paths.iter().rev().map(String::as_str).collect();
    let opts = format!("lowerdir={},upperdir={STAGING}/upper,workdir={STAGING}/work,userxattr", lower.join(":"));
    let target = format!("{STAGING}/root");
    step(
        || format!("mount overlay over {what}"),
        f.mount(Some("overlay"), &target, Some("overlay"), MS_NOSUID | MS_NODEV, Some(&opts)),
    )?;
    Ok(target)
}

fn apply<F: MountOps>(f: &mut F, op: &MountOp, prepared: &mut Prepared) -> Result<(), String> {
    match op {
        MountOp::Bind { host, path, writable, dir } => {
            if *dir {
                step(|| format!("create mount point {path}"), f.mkdir_p(path, 0o755))?;
            } else {
                step(|| format!("create mount point {path}"), f.touch(path, 0o644))?;
            }
            if let Some(tree) = prepared.remove(path) {
                step(|| format!("attach {host} at {path}"), f.attach_tree(&tree, path))?;
            } else {
                step(|| format!("bind {host} at {path}"), bind(f, &format!("{OLDROOT}{host}"), path, true))?;
            }
            let attrs = if *writable { LOCKDOWN } else { LOCKDOWN | m::MOUNT_ATTR_RDONLY };
            step(|| format!("restrict mount {path}"), f.set_attr(path, true, attrs))?;
        }
        MountOp::Symlink { target, path } => {
            // A layer on disk keeps the link an earlier run made (a resume): made anew.
            if f.exists(path) {
                step(|| format!("replace symlink {path}"), f.remove_file(path))?;
            }
            step(|| format!("symlink {path}"), f.symlink(target, path))?;
        }
        MountOp::WritableDir { path } => {
            step(|| format!("create {path}"), f.mkdir_p(path, 0o755))?;
            if path == "/tmp" || path == "/var/tmp" {
                match f.chmod(path, 0o1777) {
                    // A root filesystem's own /tmp that the sandbox's ids do not own (a
                    // rootfs directory in root mode): it keeps the mode it has there.
                    Err(e) if e.raw_os_error() == Some(libc::EPERM) => {}
                    r => step(|| format!("chmod {path}"), r)?,
                }
            }
            step(|| format!("bind {path}"), bind(f, path, path, false))?;
            step(|| format!("restrict {path}"), f.set_attr(path, false, LOCKDOWN))?;
        }
        MountOp::Proc { path } => {
            step(|| format!("create {path}"), f.mkdir_p(path, 0o555))?;
            step(
                || "mount proc".into(),
                f.mount(Some("proc"), path, Some("proc"), MS_NOSUID | MS_NODEV | MS_NOEXEC, None),
            )?;
        }
        // /proc entries differ between kernels: a missing one needs no masking (ENOENT).
        MountOp::MaskWithNull { path } => {
            // Writes through the mask reach /dev/null, so it needs no read-only flag.
            skip_missing(|| format!("mask {path}"), bind(f, &format!("{OLDROOT}/dev/null"), path, false))?;
        }
        MountOp::ReadOnlyDir { path } => {
            if skip_missing(|| format!("bind {path}"), bind(f, path, path, true))? {
                step(|| format!("make {path} read-only"), make_readonly(f, path, true))?;
            }
        }
        MountOp::MaskDir { path } => {
            ensure_hide_dir(f)?;
            if skip_missing(|| format!("mask {path}"), bind(f, HIDE_DIR, path, false))? {
                step(|| format!("restrict {path}"), make_readonly(f, path, false))?;
            }
        }
        MountOp::Sysfs { path } => {
            step(|| format!("create {path}"), f.mkdir_p(path, 0o555))?;
            // Without sysfs the sandbox sees an empty /sys: stricter, so not an error.
            let _ = f.mount(Some("sysfs"), path, Some("sysfs"), MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, None);
        }
        MountOp::Dev { path, devices, shm_size, shm_inodes } => build_dev(f, path, devices, *shm_size, *shm_inodes)?,
        MountOp::Generated { path, contents } => {
            if f.exists(path) {
                let src = format!("/.safehouse-gen{}", path.replace('/', "-"));
                step(|| format!("write {src}"), f.write(&src, contents))?;
                step(|| format!("bind {path}"), bind(f, &src, path, false))?;
                step(|| format!("restrict {path}"), make_readonly(f, path, false))?;
                // The source stays until the root is sealed: a mount over a bind of an
                // unlinked file fails, and a policy may hide this path later.
            }
        }
        MountOp::HideFile { path } => {
            if !f.exists(HIDE_FILE) {
                step(|| "create hidden-file source".into(), f.touch(HIDE_FILE, 0o000))?;
            }
            step(|| format!("hide {path}"), bind(f, HIDE_FILE, path, false))?;
            step(|| format!("restrict {path}"), make_readonly(f, path, false))?;
        }
        MountOp::HideDir { path } => {
            ensure_hide_dir(f)?;
            if !f.exists(path) {
                step(|| format!("create {path}"), f.mkdir_p(path, 0o755))?;
            }
            step(|| format!("hide {path}"), bind(f, HIDE_DIR, path, false))?;
            step(|| format!("restrict {path}"), make_readonly(f, path, false))?;
        }
        MountOp::Hide { path } => match f.kind(path) {
            Ok(Kind::Dir) => apply(f, &MountOp::HideDir { path: path.clone() }, prepared)?,
            Ok(Kind::Other) => apply(f, &MountOp::HideFile { path: path.clone() }, prepared)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("hide {path}: {e}")),
        },
        MountOp::RootReadOnly | MountOp::RootWritable => {
            step(|| "detach the host root".into(), f.detach(OLDROOT))?;
            step(|| "remove /oldroot".into(), f.remove_dir(OLDROOT))?;
            let _ = f.remove_file(HIDE_FILE);
            let _ = f.remove_dir(HIDE_DIR);
            for name in f.list_root().map_err(|e| format!("list /: {e}"))? {
                if name.starts_with(".safehouse-gen") {
                    // EBUSY: a policy hid the generated file, making its source a mount
                    // point; it then stays (read-only, and its content is public anyway).
                    match f.remove_file(&format!("/{name}")) {
                        Err(e) if e.raw_os_error() != Some(libc::EBUSY) => return Err(format!("remove /{name}: {e}")),
                        _ => {}
                    }
                }
            }
            // An image root stays writable: its writes land in the sandbox's own capped
            // layer. Either way nothing on it is setuid or a device.
            if matches!(op, MountOp::RootReadOnly) {
                step(|| "make / read-only".into(), f.set_attr("/", false, m::MOUNT_ATTR_RDONLY | LOCKDOWN))?;
            } else {
                step(|| "lock / down".into(), f.set_attr("/", false, LOCKDOWN))?;
            }
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
fn ensure_hide_dir<F: MountOps>(f: &mut F) -> Result<(), String> {
    if !f.exists(HIDE_DIR) {
        step(|| "create hidden-dir source".into(), f.mkdir(HIDE_DIR, 0o000))?;
    }
    Ok(())
}

fn build_dev<F: MountOps>(
    f: &mut F,
    path: &str,
    devices: &[String],
    shm_size: u64,
    shm_inodes: u64,
) -> Result<(), String> {
    step(|| format!("create {path}"), f.mkdir_p(path, 0o755))?;
    step(
        || "mount /dev tmpfs".into(),
        f.mount(Some("tmpfs"), path, Some("tmpfs"), MS_NOSUID | MS_NOEXEC, Some("size=64k,nr_inodes=64,mode=0755")),
    )?;
    for dev in devices {
        let dst = format!("{path}/{dev}");
        step(|| format!("create {dst}"), f.touch(&dst, 0o666))?;
        step(|| format!("bind /dev/{dev}"), bind(f, &format!("{OLDROOT}/dev/{dev}"), &dst, false))?;
    }
    let pts = format!("{path}/pts");
    step(|| "create /dev/pts".into(), f.mkdir_p(&pts, 0o755))?;
    step(
        || "mount devpts".into(),
        f.mount(
            Some("devpts"),
            &pts,
            Some("devpts"),
            MS_NOSUID | MS_NOEXEC,
            Some("newinstance,ptmxmode=0666,mode=0620"),
        ),
    )?;
    step(|| "link /dev/ptmx".into(), f.symlink("pts/ptmx", &format!("{path}/ptmx")))?;
    let shm = format!("{path}/shm");
    step(|| "create /dev/shm".into(), f.mkdir_p(&shm, 0o755))?;
    step(
        || "mount /dev/shm".into(),
        f.mount(
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
        step(|| format!("link /dev/{name}"), f.symlink(target, &format!("{path}/{name}")))?;
    }
    step(
        || "make /dev read-only".into(),
        f.set_attr(path, false, m::MOUNT_ATTR_RDONLY | m::MOUNT_ATTR_NOSUID | m::MOUNT_ATTR_NOEXEC),
    )?;
    Ok(())
}

#[cfg(test)]
#[path = "mounts_tests.rs"]
mod tests;

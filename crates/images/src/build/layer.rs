//! Layers a build makes, as tar archives the store then unpacks like any other (the
//! hostile-layer rules apply to what a build step wrote, too):
//!
//! - [`capture`]: a RUN step's changes, read from its overlay upper directory: overlayfs
//!   whiteouts (0/0 character devices) become `.wh.NAME`, opaque directories
//!   (`user.overlay.opaque`) `.wh..wh..opq`, owners are shifted back to image ids;
//!   the mount points the sandbox's setup made (empty stubs) are left out;
//! - [`copy`]: COPY/ADD sources from the build context, with their parent directories
//!   as the image has them (so a COPY into /tmp keeps /tmp's mode).

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::root::Layers;
use crate::unpack::{IdShift, ID_RANGE, OVERFLOW_ID};

/// Paths the sandbox's setup creates as mount points in its root (image roots): when
/// they are empty stubs in the upper directory, they are not the step's changes.
const MOUNT_POINTS: &[&str] =
    &["oldroot", "proc", "sys", "dev", "tmp", "var/tmp", "workspace", "etc/hosts", "etc/hostname", "etc/resolv.conf"];

/// Where build steps get the runner's files (the pip CA bundle): never part of a layer.
const BUILD_MOUNTS: &str = "run/safehouse-build";

/// What a capture wrote.
#[derive(Debug, Default)]
pub struct Captured {
    pub entries: u64,
    /// Entries of kinds a layer cannot carry (sockets, devices other than whiteouts).
    pub skipped: u64,
}

fn image_id(shift: IdShift, host: u32, caller_as: u32) -> u32 {
    match shift {
        IdShift::Base(b) if host >= b && host - b < ID_RANGE => host - b,
        IdShift::Base(_) => OVERFLOW_ID,
        IdShift::Caller => caller_as,
    }
}

fn header_for(meta: &fs::Metadata, shift: IdShift, caller_as: (u32, u32)) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_mode(meta.mode() & 0o7777);
    h.set_uid(image_id(shift, meta.uid(), caller_as.0) as u64);
    h.set_gid(image_id(shift, meta.gid(), caller_as.1) as u64);
    h.set_mtime(meta.mtime().max(0) as u64);
    h.set_size(0);
    h
}

fn is_empty_stub(path: &Path, meta: &fs::Metadata) -> bool {
    if meta.is_dir() {
        fs::read_dir(path).map(|mut d| d.next().is_none()).unwrap_or(false)
    } else {
        meta.is_file() && meta.len() == 0
    }
}

fn is_opaque(path: &Path) -> bool {
    let Ok(fd) = rustix::fs::open(
        path,
        rustix::fs::OFlags::RDONLY
            | rustix::fs::OFlags::DIRECTORY
            | rustix::fs::OFlags::NOFOLLOW
            | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    ) else {
        return false;
    };
    let mut buf = [0u8; 4];
    matches!(rustix::fs::fgetxattr(&fd, "user.overlay.opaque", &mut buf[..]), Ok(n) if &buf[..n] == b"y")
}

/// Writes the changes in `upper` (an overlay upper directory the caller owns; nothing in
/// it is followed) as a layer tar to `out`. `caller_as`: the image uid and gid a
/// rootless store's files stand for.
pub fn capture<W: Write>(upper: &Path, out: W, shift: IdShift, caller_as: (u32, u32)) -> io::Result<(W, Captured)> {
    let mut b = tar::Builder::new(out);
    b.follow_symlinks(false);
    let mut c = Captured::default();
    walk(&mut b, upper, upper, shift, caller_as, &mut c)?;
    let out = b.into_inner()?;
    Ok((out, c))
}

fn walk<W: Write>(
    b: &mut tar::Builder<W>,
    base: &Path,
    dir: &Path,
    shift: IdShift,
    ids: (u32, u32),
    c: &mut Captured,
) -> io::Result<()> {
    let mut entries: Vec<fs::DirEntry> = fs::read_dir(dir)?.collect::<io::Result<_>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = e.path();
        let rel = path.strip_prefix(base).map_err(io::Error::other)?;
        let rel_s = rel.to_string_lossy();
        let meta = fs::symlink_metadata(&path)?;
        let ft = meta.file_type();
        if rel_s == BUILD_MOUNTS || (MOUNT_POINTS.contains(&rel_s.as_ref()) && is_empty_stub(&path, &meta)) {
            continue;
        }
        if ft.is_char_device() && meta.rdev() == 0 {
            let name = rel.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let wh = rel.with_file_name(format!(".wh.{name}"));
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(0o600);
            h.set_size(0);
            b.append_data(&mut h, wh, io::empty())?;
            c.entries += 1;
            continue;
        }
        let mut h = header_for(&meta, shift, ids);
        if ft.is_dir() {
            h.set_entry_type(tar::EntryType::Directory);
            b.append_data(&mut h, rel, io::empty())?;
            c.entries += 1;
            if is_opaque(&path) {
                let mut w = tar::Header::new_gnu();
                w.set_entry_type(tar::EntryType::Regular);
                w.set_mode(0o600);
                w.set_size(0);
                b.append_data(&mut w, rel.join(".wh..wh..opq"), io::empty())?;
            }
            walk(b, base, &path, shift, ids, c)?;
        } else if ft.is_file() {
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(meta.len());
            let f = rustix::fs::open(
                &path,
                rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            )?;
            b.append_data(&mut h, rel, fs::File::from(f))?;
            c.entries += 1;
        } else if ft.is_symlink() {
            h.set_entry_type(tar::EntryType::Symlink);
            let target = fs::read_link(&path)?;
            b.append_link(&mut h, rel, target)?;
            c.entries += 1;
        } else if ft.is_fifo() {
            h.set_entry_type(tar::EntryType::Fifo);
            b.append_data(&mut h, rel, io::empty())?;
            c.entries += 1;
        } else {
            c.skipped += 1;
        }
    }
    Ok(())
}

/// A COPY/ADD: `sources` (already resolved inside the context, each a file, directory or
/// symlink) to `dest` (absolute, in the image), owned by `owner` (image ids). Parent
/// directories of `dest` keep the image's own attributes; those it lacks are made 0755
/// root. Returns the number of entries.
#[allow(clippy::too_many_arguments)]
pub fn copy<W: Write>(
    sources: &[PathBuf],
    dest: &str,
    dest_is_dir: bool,
    owner: (u32, u32),
    image: Option<&Layers>,
    shift: IdShift,
    ctx: &super::context::Context,
    out: W,
) -> Result<(W, u64), String> {
    let mut b = tar::Builder::new(out);
    b.follow_symlinks(false);
    let mut n = 0u64;
    let dest_rel = dest.trim_start_matches('/').trim_end_matches('/').to_string();
    // Parents (and dest itself when it is a directory).
    let comps: Vec<&str> = dest_rel.split('/').filter(|c| !c.is_empty()).collect();
    let upto = if dest_is_dir { comps.len() } else { comps.len().saturating_sub(1) };
    let io_err = |e: io::Error| format!("write the layer: {e}");
    for i in 1..=upto {
        let rel = comps[..i].join("/");
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        match image.and_then(|l| l.stat(&rel)) {
            Some(st) if rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Symlink => {
                return Err(format!(
                    "the destination passes through the image's symlink /{rel}; write the path it points to"
                ));
            }
            Some(st) if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::Directory => {
                return Err(format!("/{rel} is not a directory in the image"));
            }
            Some(st) => {
                h.set_mode(st.st_mode & 0o7777);
                h.set_uid(image_id(shift, st.st_uid, 0) as u64);
                h.set_gid(image_id(shift, st.st_gid, 0) as u64);
                h.set_mtime(st.st_mtime.max(0) as u64);
            }
            None => {
                h.set_mode(0o755);
                h.set_uid(0);
                h.set_gid(0);
            }
        }
        h.set_size(0);
        b.append_data(&mut h, &rel, io::empty()).map_err(io_err)?;
        n += 1;
    }
    for src in sources {
        let meta = fs::symlink_metadata(src).map_err(|e| format!("{}: {e}", src.display()))?;
        let target_rel = if dest_is_dir {
            if meta.is_dir() {
                dest_rel.clone()
            } else {
                let name = src.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                if dest_rel.is_empty() {
                    name
                } else {
                    format!("{dest_rel}/{name}")
                }
            }
        } else {
            dest_rel.clone()
        };
        if meta.is_dir() {
            copy_tree(&mut b, src, &target_rel, owner, ctx, &mut n).map_err(|e| format!("{}: {e}", src.display()))?;
        } else {
            append_one(&mut b, src, &meta, &target_rel, owner).map_err(|e| format!("{}: {e}", src.display()))?;
            n += 1;
        }
    }
    let out = b.into_inner().map_err(io_err)?;
    Ok((out, n))
}

fn append_one<W: Write>(
    b: &mut tar::Builder<W>,
    src: &Path,
    meta: &fs::Metadata,
    rel: &str,
    owner: (u32, u32),
) -> io::Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_mode(meta.mode() & 0o777);
    h.set_uid(owner.0 as u64);
    h.set_gid(owner.1 as u64);
    h.set_mtime(meta.mtime().max(0) as u64);
    let ft = meta.file_type();
    if ft.is_symlink() {
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, rel, fs::read_link(src)?)
    } else if ft.is_file() {
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(meta.len());
        let f = rustix::fs::open(
            src,
            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )?;
        b.append_data(&mut h, rel, fs::File::from(f))
    } else if ft.is_dir() {
        h.set_entry_type(tar::EntryType::Directory);
        h.set_size(0);
        b.append_data(&mut h, rel, io::empty())
    } else {
        Err(io::Error::other("neither a file, a directory nor a symlink"))
    }
}

fn copy_tree<W: Write>(
    b: &mut tar::Builder<W>,
    dir: &Path,
    rel: &str,
    owner: (u32, u32),
    ctx: &super::context::Context,
    n: &mut u64,
) -> io::Result<()> {
    let mut entries: Vec<fs::DirEntry> = fs::read_dir(dir)?.collect::<io::Result<_>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = e.path();
        // What .dockerignore leaves out (a directory with everything below it).
        if ctx.excluded(&path) {
            continue;
        }
        let meta = fs::symlink_metadata(&path)?;
        let name = e.file_name().to_string_lossy().into_owned();
        let child = if rel.is_empty() { name } else { format!("{rel}/{name}") };
        append_one(b, &path, &meta, &child, owner)?;
        *n += 1;
        if meta.is_dir() {
            copy_tree(b, &path, &child, owner, ctx, n)?;
        }
    }
    Ok(())
}

//! An image as a sandbox's root: its layers leased, its config's user resolved in its own
//! /etc/passwd and /etc/group, and what the planner needs (`policy::plan::ImageRoot`).
//!
//! Files of the image are read as overlayfs would show them (top layer first, whiteouts
//! and opaque directories honoured), each lookup resolved with the layer as `/`: a layer
//! whose `/etc` is a symlink to the host's never makes the host's passwd the image's.

use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, ResolveFlags};
use safehouse_policy::plan::ImageRoot;

use crate::config::RunConfig;
use crate::error::{ImageError, Result};
use crate::store::{ImageRecord, Lease, Store};

/// Largest /etc/passwd or /etc/group read.
const MAX_ID_FILE: u64 = 1 << 20;

/// The layers of an image as overlayfs stacks them.
pub struct Layers {
    /// Top first.
    fds: Vec<OwnedFd>,
}

impl Layers {
    /// Opens `dirs` (bottom first, as a lease lists them).
    pub fn open(dirs: &[PathBuf]) -> Result<Layers> {
        let mut fds = Vec::new();
        for d in dirs.iter().rev() {
            let fd = rfs::open(d, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
                .map_err(|e| ImageError::io("open layer", d, e.into()))?;
            fds.push(fd);
        }
        Ok(Layers { fds })
    }

    /// The content of the file at `rel` (no leading `/`) as the merged root shows it, if
    /// it is a regular file there; at most `cap` bytes.
    pub fn read(&self, rel: &str, cap: u64) -> Option<Vec<u8>> {
        let comps: Vec<&str> = rel.split('/').filter(|c| !c.is_empty() && *c != ".").collect();
        for layer in &self.fds {
            // A whiteout of the path or an ancestor in this layer hides everything below.
            let mut prefix = String::new();
            let mut opaque = false;
            for (i, c) in comps.iter().enumerate() {
                if i > 0 {
                    prefix.push('/');
                }
                prefix.push_str(c);
                match lstat_beneath(layer.as_fd(), &prefix) {
                    Some(st) if is_whiteout(&st) => return None,
                    Some(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory && i + 1 < comps.len() => {
                        opaque |= is_opaque(layer.as_fd(), &prefix);
                    }
                    _ => {}
                }
            }
            let found = rfs::openat2(
                layer,
                rel,
                OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK,
                Mode::empty(),
                ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS | ResolveFlags::NO_XDEV,
            );
            if let Ok(fd) = found {
                let st = rfs::fstat(&fd).ok()?;
                if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
                    return None;
                }
                let mut v = Vec::new();
                std::fs::File::from(fd).take(cap).read_to_end(&mut v).ok()?;
                return Some(v);
            }
            if opaque {
                return None;
            }
        }
        None
    }

    /// The entry at `rel` as the merged root shows it (not following a final symlink),
    /// with the layer it comes from; None if absent or whited out. Parents must be real
    /// directories in the layer that has the entry.
    pub fn stat(&self, rel: &str) -> Option<rfs::Stat> {
        let comps: Vec<&str> = rel.split('/').filter(|c| !c.is_empty() && *c != ".").collect();
        if comps.is_empty() {
            return self.fds.first().and_then(|l| rfs::fstat(l).ok());
        }
        let rel = comps.join("/");
        for layer in &self.fds {
            let mut prefix = String::new();
            let mut opaque = false;
            for (i, c) in comps.iter().enumerate() {
                if i > 0 {
                    prefix.push('/');
                }
                prefix.push_str(c);
                match lstat_beneath(layer.as_fd(), &prefix) {
                    Some(st) if is_whiteout(&st) => return None,
                    Some(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory && i + 1 < comps.len() => {
                        opaque |= is_opaque(layer.as_fd(), &prefix);
                    }
                    _ => {}
                }
            }
            if let Some(st) = lstat_beneath(layer.as_fd(), &rel) {
                return Some(st);
            }
            if opaque {
                return None;
            }
        }
        None
    }

    /// Directories at the top of the merged root (`/usr`, `/etc`, ...); symlinks such as
    /// `/bin -> usr/bin` are left out (writes through them land in their targets).
    pub fn top_dirs(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let mut hidden: Vec<String> = Vec::new();
        for layer in &self.fds {
            let Ok(dir) = rfs::Dir::read_from(layer) else { continue };
            for e in dir.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name == "." || name == ".." || out.contains(&name) || hidden.contains(&name) {
                    continue;
                }
                match lstat_beneath(layer.as_fd(), &name) {
                    Some(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => out.push(name),
                    Some(_) => hidden.push(name),
                    None => {}
                }
            }
        }
        let mut v: Vec<String> = out.into_iter().map(|n| format!("/{n}")).collect();
        v.sort();
        v
    }
}

fn lstat_beneath(layer: std::os::fd::BorrowedFd<'_>, rel: &str) -> Option<rfs::Stat> {
    // Only the final component may be anything; parents must be real directories of this
    // layer (no symlinks followed, none out).
    let (parent, name) = match rel.rsplit_once('/') {
        Some((p, n)) => (p, n),
        None => (".", rel),
    };
    let dir = rfs::openat2(
        layer,
        parent,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_XDEV,
    )
    .ok()?;
    rfs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW).ok()
}

fn is_whiteout(st: &rfs::Stat) -> bool {
    FileType::from_raw_mode(st.st_mode) == FileType::CharacterDevice && st.st_rdev == 0
}

fn is_opaque(layer: std::os::fd::BorrowedFd<'_>, rel: &str) -> bool {
    let Ok(fd) = rfs::openat2(
        layer,
        rel,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_XDEV,
    ) else {
        return false;
    };
    let mut buf = [0u8; 4];
    matches!(rfs::fgetxattr(&fd, "user.overlay.opaque", &mut buf[..]), Ok(n) if &buf[..n] == b"y")
}

/// Who the sandbox runs as: uid, gid, home.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
    pub home: String,
}

/// Resolves a config's `User` (`name`, `uid`, `name:group`, `uid:gid`; empty is root) in
/// the image's own passwd and group files, as Docker does.
pub fn resolve_user(spec: Option<&str>, passwd: &str, group: &str) -> std::result::Result<User, String> {
    let spec = spec.unwrap_or("").trim();
    let (user, grp) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let entries: Vec<Vec<&str>> =
        passwd.lines().map(|l| l.split(':').collect::<Vec<_>>()).filter(|f| f.len() >= 7).collect();
    let (uid, mut gid, home) = if user.is_empty() {
        let e = entries.iter().find(|f| f[2] == "0");
        (0, 0, e.map(|f| f[5].to_string()).unwrap_or_else(|| "/root".into()))
    } else if let Ok(uid) = user.parse::<u32>() {
        match entries.iter().find(|f| f[2].parse::<u32>().ok() == Some(uid)) {
            Some(f) => (uid, f[3].parse().unwrap_or(0), f[5].to_string()),
            None => (uid, 0, "/".to_string()),
        }
    } else {
        let f = entries
            .iter()
            .find(|f| f[0] == user)
            .ok_or_else(|| format!("the image's user {user:?} is not in its /etc/passwd"))?;
        let uid = f[2].parse().map_err(|_| format!("the image's /etc/passwd has a bad uid for {user:?}"))?;
        (uid, f[3].parse().unwrap_or(0), f[5].to_string())
    };
    if let Some(g) = grp.filter(|g| !g.is_empty()) {
        gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => group
                .lines()
                .map(|l| l.split(':').collect::<Vec<_>>())
                .find(|f| f.len() >= 3 && f[0] == g)
                .and_then(|f| f[2].parse().ok())
                .ok_or_else(|| format!("the image's group {g:?} is not in its /etc/group"))?,
        };
    }
    Ok(User { uid, gid, home: if home.is_empty() { "/".into() } else { home } })
}

/// An image ready to be a sandbox's root: the planner's view, the lease that keeps its
/// layers from garbage collection (hold it as long as the sandbox lives), and its config.
pub struct Rooted {
    pub root: ImageRoot,
    pub lease: Lease,
    pub config: RunConfig,
}

impl Store {
    /// Leases `image` and describes it for the planner.
    pub fn root_for(&self, image: &ImageRecord) -> Result<Rooted> {
        let lease = self.lease(image)?;
        let config = self.run_config(image)?;
        root_of(&image.name, lease, config)
    }
}

/// Describes leased layers with `config` for the planner: the user resolved in the
/// layers' own passwd and group files, the top directories listed.
pub fn root_of(name: &str, lease: Lease, config: RunConfig) -> Result<Rooted> {
    let layers = Layers::open(&lease.layers)?;
    let passwd =
        layers.read("etc/passwd", MAX_ID_FILE).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
    let group =
        layers.read("etc/group", MAX_ID_FILE).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
    let user = resolve_user(config.user.as_deref(), &passwd, &group)
        .map_err(|reason| ImageError::format(format!("image {name}"), reason))?;
    let root = ImageRoot {
        reference: name.to_string(),
        layers: lease.layers.iter().map(|p| p.to_string_lossy().into_owned()).collect(),
        env: config.env.clone(),
        working_dir: config.working_dir.clone(),
        uid: user.uid,
        gid: user.gid,
        home: user.home,
        top_dirs: layers.top_dirs(),
    };
    Ok(Rooted { root, lease, config })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001:app:/home/app:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nstaff:x:50:\napp:x:1001:\n";

    #[test]
    fn users_resolve_like_docker() {
        let u = |s: Option<&str>| resolve_user(s, PASSWD, GROUP);
        assert_eq!(u(None).unwrap(), User { uid: 0, gid: 0, home: "/root".into() });
        assert_eq!(u(Some("app")).unwrap(), User { uid: 1000, gid: 1001, home: "/home/app".into() });
        assert_eq!(u(Some("1000")).unwrap(), User { uid: 1000, gid: 1001, home: "/home/app".into() });
        assert_eq!(u(Some("4242")).unwrap(), User { uid: 4242, gid: 0, home: "/".into() });
        assert_eq!(u(Some("app:staff")).unwrap().gid, 50);
        assert_eq!(u(Some("1000:7")).unwrap().gid, 7);
        assert!(u(Some("ghost")).unwrap_err().contains("not in its /etc/passwd"));
        assert!(u(Some("app:ghosts")).unwrap_err().contains("not in its /etc/group"));
        assert_eq!(resolve_user(None, "", "").unwrap(), User { uid: 0, gid: 0, home: "/root".into() });
    }
}

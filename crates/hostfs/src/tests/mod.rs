//! Tests run against a temporary directory opened as the sandbox root: `RESOLVE_IN_ROOT`
//! treats it as `/`, exactly as it treats `/proc/<agent>/root`. Next to it, a "host"
//! directory holds what must never be read or written through the sandbox.

mod attacks;
mod ops;
mod race;
mod watch;

use std::fs;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::SandboxRoot;

/// Content of the host's secret; no test may ever read it through the module.
pub(super) const HOST_SECRET: &[u8] = b"HOST SECRET: never through the sandbox\n";

pub(super) fn is_root() -> bool {
    safehouse_sys::geteuid() == 0
}

/// `<tmp>/root` (the sandbox, with a `workspace` dir) and `<tmp>/host/secret`; removed on
/// drop.
pub(super) struct Tree {
    base: PathBuf,
}

impl Tree {
    pub(super) fn new() -> Tree {
        static N: AtomicU64 = AtomicU64::new(0);
        let base = std::env::temp_dir().join(format!(
            "safehouse-files-{}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed),
            safehouse_sys::monotonic_ns()
        ));
        fs::create_dir_all(base.join("root/workspace")).unwrap();
        fs::create_dir_all(base.join("host")).unwrap();
        fs::write(base.join("host/secret"), HOST_SECRET).unwrap();
        Tree { base }
    }

    /// A path inside the sandbox, as the host sees it.
    pub(super) fn inside(&self, rel: &str) -> PathBuf {
        self.base.join("root").join(rel.trim_start_matches('/'))
    }

    pub(super) fn host(&self) -> PathBuf {
        self.base.join("host")
    }

    /// The sandbox root descriptor; the sandbox user is 4242:4343 when running as root.
    pub(super) fn root(&self) -> SandboxRoot {
        // File operations run with the root's uid/gid as their filesystem identity; the
        // caller's own ids keep the fixture's files (made by the test) usable.
        open_root(&self.base.join("root"), safehouse_sys::geteuid(), safehouse_sys::getegid())
    }

    /// A root whose tree belongs to another user, as a real sandbox's writable layer
    /// belongs to the sandbox user (root only).
    pub(super) fn root_as(&self, uid: u32, gid: u32) -> SandboxRoot {
        chown_tree(&self.base.join("root"), uid, gid);
        open_root(&self.base.join("root"), uid, gid)
    }

    /// Everything under the host directory, with contents, for before/after comparison.
    pub(super) fn host_snapshot(&self) -> Vec<(String, Vec<u8>)> {
        let mut out: Vec<_> = fs::read_dir(self.host())
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (e.file_name().to_string_lossy().into_owned(), fs::read(e.path()).unwrap_or_default())
            })
            .collect();
        out.sort();
        out
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.base);
    }
}

fn chown_tree(dir: &Path, uid: u32, gid: u32) {
    let _ = std::os::unix::fs::lchown(dir, Some(uid), Some(gid));
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            let _ = std::os::unix::fs::lchown(&p, Some(uid), Some(gid));
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                chown_tree(&p, uid, gid);
            }
        }
    }
}

pub(super) fn open_root(dir: &Path, uid: u32, gid: u32) -> SandboxRoot {
    let fd: OwnedFd = fs::File::open(dir).unwrap().into();
    SandboxRoot { dir: Arc::new(fd), uid, gid }
}

pub(super) fn read_all(mut f: fs::File) -> Vec<u8> {
    let mut v = Vec::new();
    std::io::Read::read_to_end(&mut f, &mut v).unwrap();
    v
}

//! A RUN step's writable layer: a directory of the store's tmp/ the sandbox mounts in
//! place of its tmpfs (the jail's `RunSpec::disk_layer`, which also serves layers of the
//! storage pool), holding the overlay's `upper/` and `work/`. It is a tmpfs of the
//! build's disk cap, and `upper/` and `work/` belong to the sandbox's root (host id
//! [`HOST_ID_BASE`](crate::store::HOST_ID_BASE)). Root only (rootless, the jail refuses
//! such a layer, so the builder refuses first).

use std::path::{Path, PathBuf};

use crate::error::{ImageError, Result};
use crate::store::Store;
use crate::unpack::{tree, IdShift};

pub struct Dir {
    path: PathBuf,
    mounted: bool,
}

impl Dir {
    pub fn make(store: &Store, disk: u64) -> Result<Dir> {
        let path = store.tmp_path("build");
        std::fs::create_dir(&path).map_err(|e| ImageError::io("create", &path, e))?;
        let mut dir = Dir { path, mounted: false };
        if let IdShift::Base(base) = store.id_shift() {
            let opts = format!("size={disk},nr_inodes={},mode=0755", (disk / 4096).clamp(1024, 1 << 22));
            rustix::mount::mount(
                "tmpfs",
                &dir.path,
                "tmpfs",
                rustix::mount::MountFlags::NOSUID | rustix::mount::MountFlags::NODEV,
                std::ffi::CString::new(opts).expect("no NUL").as_c_str(),
            )
            .map_err(|e| ImageError::io("mount the build layer's tmpfs on", &dir.path, e.into()))?;
            dir.mounted = true;
            for d in ["upper", "work"] {
                let p = dir.path.join(d);
                std::fs::create_dir(&p).map_err(|e| ImageError::io("create", &p, e))?;
                rustix::fs::chown(&p, Some(rustix::fs::Uid::from_raw(base)), Some(rustix::fs::Gid::from_raw(base)))
                    .map_err(|e| ImageError::io("chown", &p, e.into()))?;
            }
        } else {
            return Err(ImageError::Unsupported(
                "template build needs root: each RUN step's writable layer is a directory the sandbox mounts, which the jail does for root only; run it as root (sudo), or build elsewhere and import the result".into(),
            ));
        }
        Ok(dir)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the layer's size was capped.
    pub fn capped(&self) -> bool {
        self.mounted
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        if self.mounted {
            let _ = rustix::mount::unmount(&self.path, rustix::mount::UnmountFlags::DETACH);
            let _ = std::fs::remove_dir(&self.path);
        } else {
            let _ = tree::remove_tree(&self.path);
        }
    }
}

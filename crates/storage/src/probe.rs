//! What this host can enforce, measured rather than assumed.

use std::path::{Path, PathBuf};

use serde::Serialize;

/// `BTRFS_SUPER_MAGIC`.
pub(crate) const BTRFS_MAGIC: i64 = 0x9123_683e;

/// The facts that decide whether a size-capped pool can be made under a data dir.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Probe {
    /// The data dir's filesystem (`ext4`, `btrfs`, `xfs`, `tmpfs`, or its magic in hex).
    pub data_dir_fs: String,
    /// Root (needed to attach a loop device and mount the pool).
    pub root: bool,
    /// `/dev/loop-control` exists.
    pub loop_devices: bool,
    /// The kernel lists btrfs in `/proc/filesystems`.
    pub btrfs: bool,
    /// Where `mkfs.btrfs` is (needed only to make a new pool).
    pub mkfs_btrfs: Option<PathBuf>,
}

impl Probe {
    /// Looks at the host. `data_dir` need not exist yet (its nearest existing parent counts).
    pub fn run(data_dir: &Path) -> Probe {
        let mut dir = data_dir;
        while !dir.exists() {
            dir = dir.parent().unwrap_or(Path::new("/"));
        }
        let data_dir_fs = match safehouse_sys::fs::statfs_type(&dir.to_string_lossy()) {
            Ok(magic) => fs_name(magic),
            Err(e) => format!("unknown ({e})"),
        };
        Probe {
            data_dir_fs,
            root: safehouse_sys::geteuid() == 0,
            loop_devices: Path::new("/dev/loop-control").exists(),
            btrfs: std::fs::read_to_string("/proc/filesystems")
                .map(|s| s.lines().any(|l| l.split_whitespace().last() == Some("btrfs")))
                .unwrap_or(false),
            mkfs_btrfs: find_on_path("mkfs.btrfs"),
        }
    }

    /// Why a new pool cannot be made here, or `None` when it can.
    pub fn refusal(&self, need_mkfs: bool) -> Option<String> {
        let mut why = Vec::new();
        if !self.root {
            why.push("the pool is a loop-mounted btrfs image and mounting it needs root (rootless sandboxes keep RAM-backed layers: storage = \"memory\")");
        }
        if !self.loop_devices {
            why.push("/dev/loop-control is missing (load the loop module)");
        }
        if !self.btrfs {
            why.push("the kernel has no btrfs (it is not in /proc/filesystems)");
        }
        if need_mkfs && self.mkfs_btrfs.is_none() {
            why.push("mkfs.btrfs is not on PATH (install btrfs-progs)");
        }
        if why.is_empty() {
            None
        } else {
            Some(why.join("; "))
        }
    }
}

fn fs_name(magic: i64) -> String {
    match magic {
        0xef53 => "ext4".into(),
        BTRFS_MAGIC => "btrfs".into(),
        0x5846_5342 => "xfs".into(),
        0x0102_1994 => "tmpfs".into(),
        0x794c_7630 => "overlay".into(),
        m => format!("{m:#x}"),
    }
}

fn find_on_path(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")
        .unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok() -> Probe {
        Probe {
            data_dir_fs: "ext4".into(),
            root: true,
            loop_devices: true,
            btrfs: true,
            mkfs_btrfs: Some("/usr/sbin/mkfs.btrfs".into()),
        }
    }

    #[test]
    fn a_capable_host_is_not_refused() {
        assert_eq!(ok().refusal(true), None);
    }

    #[test]
    fn every_missing_piece_is_named() {
        let p = Probe { root: false, loop_devices: false, btrfs: false, mkfs_btrfs: None, ..ok() };
        let why = p.refusal(true).unwrap();
        for part in ["needs root", "/dev/loop-control", "no btrfs", "install btrfs-progs"] {
            assert!(why.contains(part), "{why}");
        }
        // An existing pool does not need the formatter.
        let p = Probe { mkfs_btrfs: None, ..ok() };
        assert_eq!(p.refusal(false), None);
    }

    #[test]
    fn the_probe_of_a_missing_dir_looks_at_its_parent() {
        let p = Probe::run(Path::new("/proc/definitely/not/here"));
        assert!(!p.data_dir_fs.is_empty());
    }
}

//! btrfs ioctls: subvolumes, snapshots and quota groups (`linux/btrfs.h`).
//!
//! The storage crate keeps every sandbox's writable layer, snapshot and volume as a btrfs
//! subvolume whose quota group caps its size; these are the calls it makes. Each takes an
//! open directory descriptor and a single path component, never a path to walk.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use crate::check_int;

const MAGIC: u64 = 0x94;
const PATH_NAME_MAX: usize = 4087;
const SUBVOL_NAME_MAX: usize = 4039;
const INO_LOOKUP_PATH_MAX: usize = 4080;
/// The inode number of every subvolume's root directory.
const FIRST_FREE_OBJECTID: u64 = 256;

const fn ioc(dir: u64, nr: u64, size: usize) -> u64 {
    (dir << 30) | ((size as u64) << 16) | (MAGIC << 8) | nr
}
const W: u64 = 1;
const R: u64 = 2;
const WR: u64 = 3;

/// `struct btrfs_ioctl_vol_args`.
#[repr(C)]
struct VolArgs {
    fd: i64,
    name: [u8; PATH_NAME_MAX + 1],
}

/// `struct btrfs_ioctl_vol_args_v2` (the union members unused here are zero).
#[repr(C)]
struct VolArgsV2 {
    fd: i64,
    transid: u64,
    flags: u64,
    unused: [u64; 4],
    name: [u8; SUBVOL_NAME_MAX + 1],
}

#[repr(C)]
struct InoLookupArgs {
    treeid: u64,
    objectid: u64,
    name: [u8; INO_LOOKUP_PATH_MAX],
}

#[repr(C)]
struct QuotaCtlArgs {
    cmd: u64,
    status: u64,
}

#[repr(C)]
struct QgroupLimitArgs {
    qgroupid: u64,
    flags: u64,
    max_rfer: u64,
    max_excl: u64,
    rsv_rfer: u64,
    rsv_excl: u64,
}

#[repr(C)]
struct FsInfoArgs {
    max_id: u64,
    num_devices: u64,
    fsid: [u8; 16],
    rest: [u8; 1024 - 32],
}

const IOC_SUBVOL_CREATE: u64 = ioc(W, 14, std::mem::size_of::<VolArgs>());
const IOC_SNAP_DESTROY: u64 = ioc(W, 15, std::mem::size_of::<VolArgs>());
const IOC_INO_LOOKUP: u64 = ioc(WR, 18, std::mem::size_of::<InoLookupArgs>());
const IOC_SNAP_CREATE_V2: u64 = ioc(W, 23, std::mem::size_of::<VolArgsV2>());
const IOC_FS_INFO: u64 = ioc(R, 31, std::mem::size_of::<FsInfoArgs>());
const IOC_QUOTA_CTL: u64 = ioc(WR, 40, std::mem::size_of::<QuotaCtlArgs>());
const IOC_QGROUP_LIMIT: u64 = ioc(R, 43, std::mem::size_of::<QgroupLimitArgs>());

const SUBVOL_RDONLY: u64 = 1 << 1;
const QUOTA_CTL_ENABLE: u64 = 1;
const QGROUP_LIMIT_MAX_RFER: u64 = 1 << 0;

/// Copies a single path component into a NUL-padded name buffer.
fn name_into(name: &str, buf: &mut [u8]) -> io::Result<()> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{name:?} is not a single path component")));
    }
    if name.len() >= buf.len() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("name {name:?} is too long")));
    }
    buf[..name.len()].copy_from_slice(name.as_bytes());
    Ok(())
}

fn ioctl<T>(fd: BorrowedFd<'_>, request: u64, arg: &mut T) -> io::Result<()> {
    // SAFETY: every caller passes the request code whose argument type is `T` (the layouts
    // above mirror linux/btrfs.h, sizes encoded in the code), `arg` is a valid, writable
    // value of that type for the call's duration, and `fd` is an open descriptor.
    check_int(unsafe { libc::ioctl(fd.as_raw_fd(), request as libc::c_ulong, arg as *mut T) })?;
    Ok(())
}

/// Creates the subvolume `name` in the directory `dir`.
pub fn subvolume_create(dir: BorrowedFd<'_>, name: &str) -> io::Result<()> {
    let mut args = VolArgs { fd: 0, name: [0; PATH_NAME_MAX + 1] };
    name_into(name, &mut args.name)?;
    ioctl(dir, IOC_SUBVOL_CREATE, &mut args)
}

/// Snapshots the subvolume open at `source` as `name` in the directory `dir`.
pub fn snapshot_create(source: BorrowedFd<'_>, dir: BorrowedFd<'_>, name: &str, read_only: bool) -> io::Result<()> {
    let mut args = VolArgsV2 {
        fd: i64::from(source.as_raw_fd()),
        transid: 0,
        flags: if read_only { SUBVOL_RDONLY } else { 0 },
        unused: [0; 4],
        name: [0; SUBVOL_NAME_MAX + 1],
    };
    name_into(name, &mut args.name)?;
    ioctl(dir, IOC_SNAP_CREATE_V2, &mut args)
}

/// Deletes the subvolume `name` in the directory `dir` (its contents with it).
pub fn subvolume_destroy(dir: BorrowedFd<'_>, name: &str) -> io::Result<()> {
    let mut args = VolArgs { fd: 0, name: [0; PATH_NAME_MAX + 1] };
    name_into(name, &mut args.name)?;
    ioctl(dir, IOC_SNAP_DESTROY, &mut args)
}

/// The id of the subvolume holding the open file `fd` (also its level-0 quota group).
pub fn subvolume_id(fd: BorrowedFd<'_>) -> io::Result<u64> {
    let mut args = InoLookupArgs { treeid: 0, objectid: FIRST_FREE_OBJECTID, name: [0; INO_LOOKUP_PATH_MAX] };
    ioctl(fd, IOC_INO_LOOKUP, &mut args)?;
    Ok(args.treeid)
}

/// Turns quota groups on for the filesystem holding `fd`.
pub fn quota_enable(fd: BorrowedFd<'_>) -> io::Result<()> {
    let mut args = QuotaCtlArgs { cmd: QUOTA_CTL_ENABLE, status: 0 };
    ioctl(fd, IOC_QUOTA_CTL, &mut args)
}

/// Caps what the subvolume open at `fd` refers to (its whole visible size) at `max_bytes`.
pub fn qgroup_limit_referenced(fd: BorrowedFd<'_>, max_bytes: u64) -> io::Result<()> {
    // qgroupid 0: the quota group of the subvolume `fd` lies in.
    let mut args = QgroupLimitArgs {
        qgroupid: 0,
        flags: QGROUP_LIMIT_MAX_RFER,
        max_rfer: max_bytes,
        max_excl: 0,
        rsv_rfer: 0,
        rsv_excl: 0,
    };
    ioctl(fd, IOC_QGROUP_LIMIT, &mut args)
}

/// The filesystem's UUID (`/sys/fs/btrfs/<uuid>` names it).
pub fn fs_uuid(fd: BorrowedFd<'_>) -> io::Result<[u8; 16]> {
    let mut args = FsInfoArgs { max_id: 0, num_devices: 0, fsid: [0; 16], rest: [0; 1024 - 32] };
    ioctl(fd, IOC_FS_INFO, &mut args)?;
    Ok(args.fsid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argument_layouts_match_the_kernel_header() {
        assert_eq!(std::mem::size_of::<VolArgs>(), 4096);
        assert_eq!(std::mem::size_of::<VolArgsV2>(), 4096);
        assert_eq!(std::mem::size_of::<InoLookupArgs>(), 4096);
        assert_eq!(std::mem::size_of::<QgroupLimitArgs>(), 48);
        assert_eq!(std::mem::size_of::<FsInfoArgs>(), 1024);
        // Values from the kernel's uapi header, as the compiler computes them.
        assert_eq!(IOC_SUBVOL_CREATE, 0x5000_940e);
        assert_eq!(IOC_SNAP_CREATE_V2, 0x5000_9417);
        assert_eq!(IOC_QGROUP_LIMIT, 0x8030_942b);
        assert_eq!(IOC_QUOTA_CTL, 0xc010_9428);
        assert_eq!(IOC_INO_LOOKUP, 0xd000_9412);
        assert_eq!(IOC_FS_INFO, 0x8400_941f);
    }

    #[test]
    fn names_must_be_one_component() {
        let mut buf = [0u8; 16];
        for bad in ["", ".", "..", "a/b", "a\0b", "0123456789abcdef"] {
            assert!(name_into(bad, &mut buf).is_err(), "{bad:?}");
        }
        name_into("layer-1", &mut buf).unwrap();
        assert_eq!(&buf[..8], b"layer-1\0");
    }
}

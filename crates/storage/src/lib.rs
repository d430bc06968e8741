//! Disk-backed storage for sandboxes: writable layers with an enforced size cap, read-only
//! snapshots of them, forks, and named volumes with their own lifecycle.
//!
//! Everything lives in one **pool**: a btrfs filesystem under the data dir
//! (`DATA_DIR/storage/pool`, loop-mounted from the sparse image `DATA_DIR/storage/pool.img`).
//! Each layer, snapshot and volume is a btrfs subvolume whose quota group caps what it
//! refers to; a write past the cap fails with `EDQUOT` for every writer, root included.
//! Snapshots and forks are subvolume snapshots: copy-on-write, their cost independent of
//! the data's size. Why btrfs and not project quotas or one filesystem image per sandbox:
//! `docs/persistence.md` has the measurements.
//!
//! A host that cannot enforce the cap (no root for the loop mount, no btrfs in the kernel,
//! no `mkfs.btrfs`) gets [`StorageError::Unenforceable`] with the reason from [`Probe`];
//! nothing falls back to an uncapped directory. RAM-backed layers (tmpfs) are not this
//! crate's business: the jail mounts them itself.

#![forbid(unsafe_code)]

mod error;
mod name;
mod pool;
mod probe;
mod subvol;

pub use error::StorageError;
pub use name::check_name;
pub use pool::{Pool, PoolOptions, MIN_POOL_SIZE};
pub use probe::Probe;
pub use subvol::{Kind, Usage, MIN_CAP};

//! The content-addressed image store under `DATA_DIR/images`:
//!
//! ```text
//! images/
//!   store.json                  format version and how owners are written (IdShift)
//!   lock                        shared by writers, exclusive for garbage collection
//!   blobs/sha256/<hex>          manifests and configs, verified on write and on read
//!   layers/<diff_id hex>/       one unpacked layer: root/ (an overlay lower dir) and
//!                               layer.json (what the unpacker did; leases lock it)
//!   refs/<escaped name>.json    name -> image record (manifest, config, layers)
//!   tmp/                        downloads in progress (<hex>.partial, resumable),
//!                               layers being unpacked, trash being removed
//! ```
//!
//! Everything appears by `rename` from `tmp/`, so a reader never sees half an object, and
//! two writers of the same object both succeed (the second finds the first's).

mod blobs;
pub use blobs::MAX_JSON;
mod gc;
mod layers;
pub(crate) mod lock;
pub(crate) mod refs;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{ImageError, Result};
use crate::unpack::IdShift;

pub use gc::GcReport;
pub use layers::{LayerInfo, Lease};
pub use refs::{check_name, ImageRecord, Kind, LayerRecord};

/// Image uid/gid `n` is host id `HOST_ID_BASE + n` in a store owned by root, so image
/// uid 1000 is host id 1_000_000_000, the identity every host-root sandbox already runs
/// as in root mode. Sandboxes on an image map the 65536 ids from here.
pub const HOST_ID_BASE: u32 = 999_999_000;

const FORMAT: u32 = 1;

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct StoreMeta {
    format: u32,
    ids: IdShift,
}

/// An open image store.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
    shift: IdShift,
}

fn mkdir(path: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(path).map_err(|e| ImageError::io("create", path, e))
}

impl Store {
    /// Opens (creating if needed) the store of `data_dir`. A store written by root holds
    /// files owned by the sandbox id range; one written without privileges holds the
    /// user's own files: each can only be used the way it was written.
    pub fn open(data_dir: &Path) -> Result<Store> {
        let root = data_dir.join("images");
        for d in ["blobs/sha256", "layers", "refs", "tmp"] {
            mkdir(&root.join(d))?;
        }
        let shift = if rustix::process::geteuid().is_root() { IdShift::Base(HOST_ID_BASE) } else { IdShift::Caller };
        let meta_path = root.join("store.json");
        let want = StoreMeta { format: FORMAT, ids: shift };
        match std::fs::read(&meta_path) {
            Ok(bytes) => {
                let have: StoreMeta = serde_json::from_slice(&bytes).map_err(|e| ImageError::Store {
                    path: root.clone(),
                    reason: format!("store.json is unreadable ({e}); move the directory away and pull again"),
                })?;
                if have.format != FORMAT {
                    return Err(ImageError::Store {
                        path: root,
                        reason: format!("format {} is not the {FORMAT} this safehouse understands", have.format),
                    });
                }
                if have.ids != shift {
                    let (was, now) = match shift {
                        IdShift::Base(_) => ("without privileges", "as root"),
                        IdShift::Caller => ("as root", "without privileges"),
                    };
                    return Err(ImageError::Store {
                        path: root,
                        reason: format!(
                            "it was written {was} and cannot be used {now} (file owners differ); give this process its own --data-dir"
                        ),
                    });
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let store = Store { root: root.clone(), shift };
                store.write_atomic(&meta_path, &serde_json::to_vec_pretty(&want).expect("plain data"))?;
            }
            Err(e) => return Err(ImageError::io("read", meta_path, e)),
        }
        Ok(Store { root, shift })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// How this store writes file owners.
    pub fn id_shift(&self) -> IdShift {
        self.shift
    }

    pub(crate) fn tmp(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// Writers (pull, import, build) hold this shared; garbage collection exclusive.
    pub(crate) fn writer_lock(&self) -> Result<lock::Held> {
        lock::shared(&self.root.join("lock"))
    }

    /// A fresh name under tmp/.
    pub(crate) fn tmp_path(&self, what: &str) -> PathBuf {
        self.tmp().join(format!("{what}-{}", random_hex()))
    }

    /// Writes `bytes` to `path` through a temporary file and a rename.
    pub(crate) fn write_atomic(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        use std::io::Write;
        let tmp = self.tmp_path("write");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| ImageError::io("create", &tmp, e))?;
        f.write_all(bytes).and_then(|()| f.sync_data()).map_err(|e| ImageError::io("write", &tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            ImageError::io("rename into place", path, e)
        })
    }
}

pub(crate) fn random_hex() -> String {
    let mut b = [0u8; 8];
    let _ = rustix::rand::getrandom(&mut b, rustix::rand::GetRandomFlags::empty());
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub(crate) fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

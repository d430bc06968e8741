//! Garbage collection: layers and blobs no record names, unless a sandbox holds a lease
//! on them; and what interrupted writers left in tmp/ (partial downloads stay a week, for
//! resuming).

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::digest::Digest;
use crate::error::{ImageError, Result};
use crate::store::{lock, Store};
use crate::unpack::tree;

#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct GcReport {
    pub layers_removed: u64,
    pub blobs_removed: u64,
    /// Content bytes of the removed layers.
    pub bytes_freed: u64,
    /// Unreferenced layers kept because a running sandbox uses them.
    pub layers_in_use: u64,
    pub tmp_removed: u64,
}

/// How long an interrupted download is kept for a later pull to resume.
const PARTIAL_KEEP: Duration = Duration::from_secs(7 * 24 * 3600);

impl Store {
    /// Removes what no name references and no sandbox uses. Waits for running writers
    /// (pulls, imports, builds) to finish, and holds new ones off while it runs.
    pub fn gc(&self) -> Result<GcReport> {
        let _excl = lock::exclusive(&self.root.join("lock"))?;
        let mut report = GcReport::default();
        let mut layers: BTreeSet<Digest> = BTreeSet::new();
        let mut blobs: BTreeSet<Digest> = BTreeSet::new();
        for r in self.list()? {
            blobs.insert(r.digest.clone());
            blobs.insert(r.config.clone());
            layers.extend(r.layers.iter().map(|l| l.diff_id.clone()));
        }
        for d in self.list_layers()? {
            if layers.contains(&d) {
                continue;
            }
            let dir = self.layer_dir(&d);
            let json = dir.join("layer.json");
            // A lease is a shared lock on layer.json: if we cannot take it exclusively, a
            // sandbox is using the layer. A layer without layer.json is a leftover.
            let held = match lock::try_exclusive_existing(&json)? {
                Some(h) => Some(h),
                None if json.exists() => {
                    report.layers_in_use += 1;
                    continue;
                }
                None => None,
            };
            let size = self.layer_info(&d).map(|i| i.size).unwrap_or(0);
            // Out of layers/ first (one rename), then removed at leisure: a crash in between
            // leaves trash in tmp/, never half a layer under its name.
            let trash = self.tmp_path("trash");
            std::fs::rename(&dir, &trash).map_err(|e| ImageError::io("move to trash", &dir, e))?;
            drop(held);
            tree::remove_tree(&trash).map_err(|e| ImageError::io("remove", &trash, e))?;
            report.layers_removed += 1;
            report.bytes_freed += size;
        }
        for d in self.list_blobs()? {
            if !blobs.contains(&d) {
                let p = self.blob_path(&d);
                std::fs::remove_file(&p).map_err(|e| ImageError::io("remove", &p, e))?;
                report.blobs_removed += 1;
            }
        }
        // No writer runs now (they hold the lock shared): what is in tmp/ is left over.
        let tmp = self.tmp();
        for e in std::fs::read_dir(&tmp).map_err(|e| ImageError::io("list", &tmp, e))? {
            let e = e.map_err(|e| ImageError::io("list", &tmp, e))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".partial") {
                let age = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| SystemTime::now().duration_since(t).ok())
                    .unwrap_or_default();
                if age < PARTIAL_KEEP {
                    continue;
                }
            }
            tree::remove_tree(&e.path()).map_err(|err| ImageError::io("remove", e.path(), err))?;
            report.tmp_removed += 1;
        }
        Ok(report)
    }
}

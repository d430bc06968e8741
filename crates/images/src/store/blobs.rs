//! Small blobs (manifests, configs, indexes) by digest: verified when written and again
//! when read, so a blob changed on disk is an error, not an input.

use std::io::Read;
use std::path::PathBuf;

use crate::digest::Digest;
use crate::error::{ImageError, Result};
use crate::store::Store;

/// The largest manifest, index or config the store accepts.
pub const MAX_JSON: u64 = 16 << 20;

impl Store {
    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(d.hex())
    }

    pub fn has_blob(&self, d: &Digest) -> bool {
        self.blob_path(d).is_file()
    }

    /// Stores `bytes`, which must hash to `expected` (when given); returns its digest.
    pub fn put_blob(&self, bytes: &[u8], expected: Option<&Digest>, what: &str) -> Result<Digest> {
        let d = Digest::of(bytes);
        if let Some(e) = expected {
            e.verify(what, &d)?;
        }
        if !self.has_blob(&d) {
            self.write_atomic(&self.blob_path(&d), bytes)?;
        }
        Ok(d)
    }

    /// Reads a stored blob back, checking it still hashes to its name.
    pub fn read_blob(&self, d: &Digest) -> Result<Vec<u8>> {
        let path = self.blob_path(d);
        let f = std::fs::File::open(&path).map_err(|e| ImageError::io("open blob", &path, e))?;
        let mut bytes = Vec::new();
        f.take(MAX_JSON + 1).read_to_end(&mut bytes).map_err(|e| ImageError::io("read blob", &path, e))?;
        if bytes.len() as u64 > MAX_JSON {
            return Err(ImageError::format(format!("blob {d}"), format!("larger than {MAX_JSON} bytes")));
        }
        d.verify(format!("stored blob {}", path.display()), &Digest::of(&bytes))?;
        Ok(bytes)
    }

    pub(crate) fn list_blobs(&self) -> Result<Vec<Digest>> {
        let dir = self.root.join("blobs/sha256");
        let mut out = Vec::new();
        for e in std::fs::read_dir(&dir).map_err(|e| ImageError::io("list", &dir, e))? {
            let e = e.map_err(|e| ImageError::io("list", &dir, e))?;
            if let Ok(d) = Digest::parse(&format!("sha256:{}", e.file_name().to_string_lossy())) {
                out.push(d);
            }
        }
        Ok(out)
    }
}

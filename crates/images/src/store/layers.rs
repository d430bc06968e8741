//! Unpacked layers, keyed by their diff_id (the digest of the uncompressed tar), so a
//! layer shared by many images is unpacked once. A layer becomes visible only complete
//! and verified: it is unpacked under tmp/, both digests are checked, then it is renamed
//! into layers/.

use std::cell::RefCell;
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::rc::Rc;

use serde::{Deserialize, Serialize};

use crate::compress;
use crate::digest::{Digest, Hasher, HashingReader};
use crate::error::{ImageError, Result};
use crate::store::{lock, now_rfc3339, ImageRecord, Store};
use crate::unpack::{self, tree, Limits, Report};

/// What the store knows of an unpacked layer (`layer.json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LayerInfo {
    pub diff_id: Digest,
    /// Bytes of file content.
    pub size: u64,
    /// Bytes of the uncompressed tar.
    #[serde(default)]
    pub tar_size: u64,
    pub unpacked_at: String,
    pub report: Report,
}

/// Shared locks on the layers of an image: while held, garbage collection leaves them.
#[derive(Debug)]
pub struct Lease {
    _held: Vec<lock::Held>,
    /// The layers' root directories, bottom first.
    pub layers: Vec<PathBuf>,
}

/// Hashes the raw (possibly compressed) bytes as the decompressor pulls them.
struct Tee<R> {
    inner: R,
    hasher: Rc<RefCell<(Hasher, u64)>>,
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut h = self.hasher.borrow_mut();
        h.0.update(&buf[..n]);
        h.1 += n as u64;
        Ok(n)
    }
}

impl Store {
    pub fn layer_dir(&self, diff_id: &Digest) -> PathBuf {
        self.root.join("layers").join(diff_id.hex())
    }

    /// The directory overlayfs takes as a lower layer.
    pub fn layer_root(&self, diff_id: &Digest) -> PathBuf {
        self.layer_dir(diff_id).join("root")
    }

    pub fn has_layer(&self, diff_id: &Digest) -> bool {
        self.layer_dir(diff_id).join("layer.json").is_file()
    }

    pub fn layer_info(&self, diff_id: &Digest) -> Result<LayerInfo> {
        let p = self.layer_dir(diff_id).join("layer.json");
        let bytes = std::fs::read(&p).map_err(|e| ImageError::io("read", &p, e))?;
        serde_json::from_slice(&bytes).map_err(|e| ImageError::format(format!("{}", p.display()), e.to_string()))
    }

    /// Unpacks one layer from `input` (gzip, zstd or plain tar). `blob`: the digest the
    /// raw bytes must have; `diff_id`: the digest the uncompressed tar must have (both
    /// checked when given; an import of a plain root filesystem knows neither).
    pub fn unpack_layer<R: Read>(
        &self,
        mut input: R,
        blob: Option<&Digest>,
        diff_id: Option<&Digest>,
        limits: Limits,
    ) -> Result<LayerInfo> {
        if let Some(d) = diff_id {
            if self.has_layer(d) {
                return self.layer_info(d);
            }
        }
        let what = diff_id.or(blob).map(|d| d.to_string()).unwrap_or_else(|| "(new layer)".into());
        let work = self.tmp_path("layer");
        let root = work.join("root");
        std::fs::create_dir_all(&root).map_err(|e| ImageError::io("create", &root, e))?;
        let raw = Rc::new(RefCell::new((Hasher::new(), 0u64)));
        let result = (|| {
            let tee = Tee { inner: &mut input, hasher: raw.clone() };
            let decompressed =
                compress::decompress(tee).map_err(|e| ImageError::layer(&what, format!("decompress: {e}")))?;
            // Headers and padding come on top of the content the unpacker counts.
            let cap = limits.max_bytes.saturating_add(limits.max_entries.saturating_mul(1024)).saturating_add(1 << 20);
            let mut tar = HashingReader::new(decompressed, cap);
            let dir = std::fs::File::open(&root).map_err(|e| ImageError::io("open", &root, e))?;
            let report = unpack::unpack(&mut tar, dir.as_fd(), self.shift, limits)
                .map_err(|reason| ImageError::layer(&what, reason))?;
            let (tar_digest, tar_size) = tar.finish().map_err(|e| ImageError::layer(&what, format!("read: {e}")))?;
            if let Some(b) = blob {
                let raw = raw.borrow().0.clone();
                b.verify(format!("layer blob {b}"), &raw.finish())?;
            }
            if let Some(d) = diff_id {
                d.verify(format!("uncompressed layer (diff_id) {d}"), &tar_digest)?;
            }
            let info =
                LayerInfo { diff_id: tar_digest, size: report.bytes, tar_size, unpacked_at: now_rfc3339(), report };
            let json = serde_json::to_vec_pretty(&info).expect("plain data");
            std::fs::write(work.join("layer.json"), json)
                .map_err(|e| ImageError::io("write", work.join("layer.json"), e))?;
            Ok(info)
        })();
        let info = match result {
            Ok(info) => info,
            Err(e) => {
                let _ = tree::remove_tree(&work);
                // A corrupt blob often fails to decompress before its digest can be
                // checked: read the rest, and if the digest is wrong, say that instead.
                if let (Some(b), ImageError::Layer { .. }) = (blob, &e) {
                    let mut tee = Tee { inner: &mut input, hasher: raw.clone() };
                    if io::copy(&mut tee, &mut io::sink()).is_ok() {
                        let actual = raw.borrow().0.clone().finish();
                        b.verify(format!("layer blob {b}"), &actual)?;
                    }
                }
                return Err(e);
            }
        };
        let dest = self.layer_dir(&info.diff_id);
        match std::fs::rename(&work, &dest) {
            Ok(()) => Ok(info),
            // Another writer finished the same layer first: use theirs.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EEXIST) | Some(libc::ENOTEMPTY)) => {
                let _ = tree::remove_tree(&work);
                self.layer_info(&info.diff_id)
            }
            Err(e) => {
                let _ = tree::remove_tree(&work);
                Err(ImageError::io("move layer into place", dest, e))
            }
        }
    }

    /// Leases every layer of `image` (shared locks on their `layer.json`), refusing if one
    /// is missing. Taken under the writers' lock, so garbage collection cannot slip in
    /// between the lookup and the lease.
    pub fn lease(&self, image: &ImageRecord) -> Result<Lease> {
        let _w = self.writer_lock()?;
        let mut held = Vec::new();
        let mut layers = Vec::new();
        for l in &image.layers {
            let json = self.layer_dir(&l.diff_id).join("layer.json");
            let h = lock::shared_existing(&json).map_err(|_| ImageError::Store {
                path: self.root.clone(),
                reason: format!(
                    "layer {} of image {} is missing; remove the image and pull or import it again",
                    l.diff_id, image.name
                ),
            })?;
            held.push(h);
            layers.push(self.layer_root(&l.diff_id));
        }
        Ok(Lease { _held: held, layers })
    }

    pub(crate) fn list_layers(&self) -> Result<Vec<Digest>> {
        let dir = self.root.join("layers");
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

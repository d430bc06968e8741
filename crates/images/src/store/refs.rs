//! Names: one small JSON record per image or template, `refs/<escaped name>.json`,
//! replaced atomically. Records carry everything `image ls` shows, so listing reads no
//! manifest.

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::{ImageError, Result};
use crate::store::Store;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Pulled or imported.
    Image,
    /// Built from a Dockerfile.
    Template,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRecord {
    /// Digest of the uncompressed tar: the layer's name in the store.
    pub diff_id: Digest,
    /// Bytes of file content.
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    pub name: String,
    pub kind: Kind,
    /// The manifest's digest: the image's identity.
    pub digest: Digest,
    pub config: Digest,
    /// Bottom layer first.
    pub layers: Vec<LayerRecord>,
    /// Sum of the layers' content bytes (shared layers count in each image).
    pub size: u64,
    /// When the name was written.
    pub created: String,
    /// Where it came from: `pull REF`, `import PATH`, `build DIR`.
    pub source: String,
}

/// The longest name the store keeps.
pub const MAX_NAME: usize = 200;

/// Checks a name (an image reference or a template name) for the store.
pub fn check_name(name: &str) -> Result<()> {
    let bad = |reason: &str| Err(ImageError::Reference { reference: name.to_string(), reason: reason.to_string() });
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > MAX_NAME {
        return bad("longer than 200 characters");
    }
    if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return bad("contains whitespace or control characters");
    }
    if name.starts_with('-') || name.starts_with('.') || name.starts_with('/') {
        return bad("must start with a letter or digit");
    }
    Ok(())
}

/// `NAME` with `:latest` when it names neither a tag nor a digest.
pub fn with_default_tag(name: &str) -> String {
    let last = name.rsplit('/').next().unwrap_or(name);
    if last.contains(':') || name.contains('@') {
        name.to_string()
    } else {
        format!("{name}:latest")
    }
}

fn escape(name: &str) -> String {
    let mut s = String::with_capacity(name.len() + 8);
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-' {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

impl Store {
    fn ref_path(&self, name: &str) -> std::path::PathBuf {
        self.root.join("refs").join(format!("{}.json", escape(name)))
    }

    /// Writes (or replaces) the record for `record.name`.
    pub fn put_record(&self, record: &ImageRecord) -> Result<()> {
        check_name(&record.name)?;
        let bytes = serde_json::to_vec_pretty(record).expect("plain data");
        self.write_atomic(&self.ref_path(&record.name), &bytes)
    }

    fn read_record(&self, name: &str) -> Result<Option<ImageRecord>> {
        let p = self.ref_path(name);
        match std::fs::read(&p) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| ImageError::format(format!("record {}", p.display()), e.to_string())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(ImageError::io("read", p, e)),
        }
    }

    /// Finds an image by name: exactly as given, then with `:latest`, then as a registry
    /// reference would expand it (`busybox` is `docker.io/library/busybox:latest`), then
    /// by manifest digest (`sha256:...`, or its first 12 or more hex digits).
    pub fn get(&self, name: &str) -> Result<ImageRecord> {
        check_name(name)?;
        for c in [name.to_string(), with_default_tag(name)] {
            if let Some(r) = self.read_record(&c)? {
                return Ok(r);
            }
        }
        // Parsing a reference compiles a large regex (tens of milliseconds): only when the
        // plain names missed.
        if let Ok(r) = name.parse::<oci_client::Reference>() {
            if let Some(r) = self.read_record(&r.whole())? {
                return Ok(r);
            }
        }
        let hex = name.strip_prefix("sha256:").unwrap_or(name);
        if hex.len() >= 12 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            let found: Vec<ImageRecord> =
                self.list()?.into_iter().filter(|r| r.digest.hex().starts_with(hex)).collect();
            if let Some(r) = found.into_iter().next() {
                return Ok(r);
            }
        }
        Err(ImageError::NotFound(name.to_string()))
    }

    /// Every record, sorted by name.
    pub fn list(&self) -> Result<Vec<ImageRecord>> {
        let dir = self.root.join("refs");
        let mut out = Vec::new();
        for e in std::fs::read_dir(&dir).map_err(|e| ImageError::io("list", &dir, e))? {
            let e = e.map_err(|e| ImageError::io("list", &dir, e))?;
            if !e.file_name().to_string_lossy().ends_with(".json") {
                continue;
            }
            let p = e.path();
            let bytes = std::fs::read(&p).map_err(|e| ImageError::io("read", &p, e))?;
            match serde_json::from_slice::<ImageRecord>(&bytes) {
                Ok(r) => out.push(r),
                Err(e) => return Err(ImageError::format(format!("record {}", p.display()), e.to_string())),
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Removes the name (not its layers: see `gc`). Returns the record it had.
    pub fn remove_record(&self, name: &str) -> Result<ImageRecord> {
        let record = self.get(name)?;
        let p = self.ref_path(&record.name);
        std::fs::remove_file(&p).map_err(|e| ImageError::io("remove", &p, e))?;
        Ok(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(with_default_tag("busybox"), "busybox:latest");
        assert_eq!(with_default_tag("127.0.0.1:5000/busybox"), "127.0.0.1:5000/busybox:latest");
        assert_eq!(with_default_tag("127.0.0.1:5000/busybox:1"), "127.0.0.1:5000/busybox:1");
        assert_eq!(with_default_tag("r/x@sha256:00"), "r/x@sha256:00");
        assert_eq!(escape("127.0.0.1:5000/a/b:c"), "127.0.0.1%3A5000%2Fa%2Fb%3Ac");
        assert!(check_name("ok/name:1").is_ok());
        for bad in ["", "-x", "../x", "/etc", "a b", "a\nb"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }
}

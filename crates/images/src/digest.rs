//! Content digests (`sha256:<64 hex>`), and readers and writers that hash what passes
//! through them so content is verified as it streams, never after a second read.

use std::fmt;
use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::error::{ImageError, Result};

/// A verified-syntax `sha256:` digest. Other algorithms are refused by name: the store
/// addresses everything by sha256, which every registry serves.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Digest(String);

impl Digest {
    pub fn parse(text: &str) -> Result<Digest> {
        let Some(hex) = text.strip_prefix("sha256:") else {
            let algo = text.split_once(':').map(|(a, _)| a).unwrap_or("");
            return Err(ImageError::format(
                format!("digest {text:?}"),
                if algo.is_empty() {
                    "write it as sha256:<64 hex digits>".to_string()
                } else {
                    format!("algorithm {algo:?} is not supported; the store uses sha256")
                },
            ));
        };
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(ImageError::format(format!("digest {text:?}"), "expected sha256: and 64 lowercase hex digits"));
        }
        Ok(Digest(text.to_string()))
    }

    pub fn of(bytes: &[u8]) -> Digest {
        let mut h = Hasher::new();
        h.update(bytes);
        h.finish()
    }

    /// The 64 hex digits (file names in the store).
    pub fn hex(&self) -> &str {
        &self.0[7..]
    }

    /// The first 12 hex digits, for listings.
    pub fn short(&self) -> &str {
        &self.0[7..19]
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Fails with a digest error unless `actual` equals `self`.
    pub fn verify(&self, what: impl Into<String>, actual: &Digest) -> Result<()> {
        if self == actual {
            Ok(())
        } else {
            Err(ImageError::Digest { what: what.into(), expected: self.0.clone(), actual: actual.0.clone() })
        }
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.0)
    }
}

impl TryFrom<String> for Digest {
    type Error = String;
    fn try_from(s: String) -> std::result::Result<Self, String> {
        Digest::parse(&s).map_err(|e| e.to_string())
    }
}

impl From<Digest> for String {
    fn from(d: Digest) -> String {
        d.0
    }
}

/// An incremental sha256.
#[derive(Clone, Default)]
pub struct Hasher(Sha256);

impl Hasher {
    pub fn new() -> Hasher {
        Hasher(Sha256::new())
    }
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
    pub fn finish(self) -> Digest {
        let out = self.0.finalize();
        let mut s = String::with_capacity(71);
        s.push_str("sha256:");
        for b in out {
            s.push_str(&format!("{b:02x}"));
        }
        Digest(s)
    }
}

/// Hashes and counts everything read through it; past `cap` bytes, reads fail (a
/// decompression bomb stops there instead of filling the disk).
pub struct HashingReader<R> {
    inner: R,
    hasher: Hasher,
    count: u64,
    cap: u64,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R, cap: u64) -> Self {
        HashingReader { inner, hasher: Hasher::new(), count: 0, cap }
    }
    pub fn count(&self) -> u64 {
        self.count
    }
    /// Reads the rest (bounded by the cap), then returns the digest and byte count.
    pub fn finish(mut self) -> io::Result<(Digest, u64)> {
        io::copy(&mut self, &mut io::sink())?;
        Ok((self.hasher.finish(), self.count))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        if self.count > self.cap {
            return Err(io::Error::new(io::ErrorKind::FileTooLarge, CapExceeded(self.cap)));
        }
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// The error a [`HashingReader`] returns past its cap.
#[derive(Debug)]
pub struct CapExceeded(pub u64);

impl fmt::Display for CapExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "more than {} bytes", self.0)
    }
}

impl std::error::Error for CapExceeded {}

/// Hashes and counts everything written through it.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Hasher,
    count: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter { inner, hasher: Hasher::new(), count: 0 }
    }
    pub fn finish(self) -> (W, Digest, u64) {
        (self.inner, self.hasher.finish(), self.count)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses() {
        let d = Digest::of(b"");
        assert_eq!(d.as_str(), "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        assert_eq!(Digest::parse(d.as_str()).unwrap(), d);
        assert_eq!(d.short(), "e3b0c44298fc");
        for bad in [
            "e3b0",
            "sha256:abc",
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "sha256:../../../../etc/passwd0000000000000000000000000000000000000000",
        ] {
            assert!(Digest::parse(bad).is_err(), "{bad}");
        }
        let e = Digest::parse("sha512:00").unwrap_err().to_string();
        assert!(e.contains("\"sha512\" is not supported"), "{e}");
    }

    #[test]
    fn reader_hashes_and_caps() {
        let data = vec![7u8; 1000];
        let r = HashingReader::new(&data[..], 1000);
        let (d, n) = r.finish().unwrap();
        assert_eq!((d, n), (Digest::of(&data), 1000));
        let r = HashingReader::new(&data[..], 999);
        let e = r.finish().unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::FileTooLarge);
    }

    #[test]
    fn verify_names_both() {
        let a = Digest::of(b"a");
        let e = a.verify("blob x", &Digest::of(b"b")).unwrap_err().to_string();
        assert!(e.contains("blob x") && e.contains(a.as_str()), "{e}");
    }
}

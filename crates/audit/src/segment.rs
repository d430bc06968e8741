//! Segment files `audit-000001.jsonl`, `audit-000002.jsonl`, ...: naming, listing, and
//! finding the chain's head when the log is reopened.

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::record::{hash_body, split_line, GENESIS};
use crate::{Error, TornTail};

pub(crate) fn name(n: u32) -> String {
    format!("audit-{n:06}.jsonl")
}

fn parse_name(s: &str) -> Option<u32> {
    let digits = s.strip_prefix("audit-")?.strip_suffix(".jsonl")?;
    if digits.len() < 6 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The segment files in `dir`, in order.
pub(crate) fn list(dir: &Path) -> Result<Vec<(u32, PathBuf)>, Error> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(Error::io("list", dir))? {
        let entry = entry.map_err(Error::io("list", dir))?;
        if let Some(n) = entry.file_name().to_str().and_then(parse_name) {
            out.push((n, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// Where the chain ends: the last complete record.
pub(crate) struct Head {
    pub seq: u64,
    pub hash: [u8; 32],
    /// The segment to continue and its length.
    pub segment: u32,
    pub size: u64,
    /// A torn last line that was cut off.
    pub torn: Option<TornTail>,
}

/// Finds the head of the chain; cuts a torn last line (bytes after the last newline, left
/// by a crash in the middle of a write: never acknowledged as durable).
pub(crate) fn recover(dir: &Path) -> Result<Head, Error> {
    let segs = list(dir)?;
    let Some((last_n, last_path)) = segs.last().cloned() else {
        return Ok(Head { seq: 0, hash: GENESIS, segment: 1, size: 0, torn: None });
    };
    let bytes = fs::read(&last_path).map_err(Error::io("read", &last_path))?;
    let end = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let mut torn = None;
    if end < bytes.len() {
        let f = OpenOptions::new().write(true).open(&last_path).map_err(Error::io("open", &last_path))?;
        f.set_len(end as u64).map_err(Error::io("truncate", &last_path))?;
        f.sync_all().map_err(Error::io("sync", &last_path))?;
        torn = Some(TornTail { file: name(last_n), offset: end as u64, bytes: (bytes.len() - end) as u64 });
    }
    let mut head = Head { seq: 0, hash: GENESIS, segment: last_n, size: end as u64, torn };
    // The last complete line: in the last segment, or (if it is empty) an earlier one.
    let mut content = bytes;
    content.truncate(end);
    for (_, path) in segs.iter().rev() {
        if path != &last_path {
            content = fs::read(path).map_err(Error::io("read", path))?;
        }
        let Some(stripped) = content.strip_suffix(b"\n") else { continue };
        let start = stripped.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let line = &stripped[start..];
        let corrupt =
            |reason: &str| Error::CorruptTail { path: path.clone(), offset: start as u64, reason: reason.into() };
        let (body, hash) = split_line(line).ok_or_else(|| corrupt("no hash at the end"))?;
        if hash_body(body) != hash {
            return Err(corrupt("its hash does not match its bytes"));
        }
        #[derive(Deserialize)]
        struct Seq {
            seq: u64,
        }
        let s: Seq = serde_json::from_slice(line).map_err(|e| corrupt(&e.to_string()))?;
        head.seq = s.seq;
        head.hash = hash;
        break;
    }
    Ok(head)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(name(12), "audit-000012.jsonl");
        assert_eq!(parse_name("audit-000012.jsonl"), Some(12));
        assert_eq!(parse_name("audit-1234567.jsonl"), Some(1234567));
        assert_eq!(parse_name("audit-12.jsonl"), None);
        assert_eq!(parse_name("audit-000012.jsonl.bak"), None);
    }
}

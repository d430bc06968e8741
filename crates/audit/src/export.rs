//! `export`: the records that match a filter, as the JSON lines they are stored as (so an
//! exported record can still be checked against its hash).

use std::fs;
use std::io::{self, Write};
use std::path::Path;

use serde::Deserialize;

use crate::{segment, time, Error};

/// Which records to export; every set field must match.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub sandbox: Option<String>,
    /// Records at or after this time (the records' form: see [`Filter::since`]).
    pub since: Option<String>,
    /// Records strictly before this time.
    pub until: Option<String>,
    /// Any of these kinds (`api`, `event`, `policy`, `checkpoint`, `log`); empty = all.
    pub kinds: Vec<String>,
}

impl Filter {
    /// Sets `since` from any RFC 3339 time.
    pub fn since(mut self, rfc3339: &str) -> Result<Filter, Error> {
        self.since = Some(time::normalize(rfc3339)?);
        Ok(self)
    }

    /// Sets `until` from any RFC 3339 time.
    pub fn until(mut self, rfc3339: &str) -> Result<Filter, Error> {
        self.until = Some(time::normalize(rfc3339)?);
        Ok(self)
    }

    fn matches(&self, r: &Fields) -> bool {
        // Record times are fixed-width UTC, so string order is time order.
        self.sandbox.as_deref().is_none_or(|s| r.sandbox.as_deref() == Some(s))
            && self.since.as_deref().is_none_or(|t| r.time.as_str() >= t)
            && self.until.as_deref().is_none_or(|t| r.time.as_str() < t)
            && (self.kinds.is_empty() || self.kinds.contains(&r.kind))
    }
}

#[derive(Deserialize)]
struct Fields {
    time: String,
    kind: String,
    sandbox: Option<String>,
}

/// Writes the matching records of the log in `dir` to `out`, one per line; returns how many.
/// Lines that are not records (a torn tail, tampering) are skipped: run [`crate::verify`]
/// to learn about them.
pub fn export(dir: impl AsRef<Path>, filter: &Filter, out: &mut dyn Write) -> Result<u64, Error> {
    let dir = dir.as_ref();
    let segs = segment::list(dir)?;
    if segs.is_empty() {
        return Err(Error::NoLog { path: dir.into() });
    }
    let mut n = 0;
    let stdout_err = |e: io::Error| Error::Io { what: "write the export to", path: "the output".into(), source: e };
    for (_, path) in &segs {
        let bytes = fs::read(path).map_err(Error::io("read", path))?;
        for line in bytes.split_inclusive(|&b| b == b'\n') {
            if line.last() != Some(&b'\n') {
                break;
            }
            let Ok(fields) = serde_json::from_slice::<Fields>(line) else { continue };
            if filter.matches(&fields) {
                out.write_all(line).map_err(stdout_err)?;
                n += 1;
            }
        }
    }
    out.flush().map_err(stdout_err)?;
    Ok(n)
}

//! `verify`: walks every segment and checks each record's hash, the chain, the sequence,
//! the files' numbering and every checkpoint's signature; stops at the first bad record.

use std::borrow::Cow;
use std::fs;
use std::path::Path;

use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::key::{parse_public_key, read_public_key, verify_checkpoint, PUB_FILE};
use crate::record::{hash_body, hex, split_line, unhex, unhex32, GENESIS};
use crate::{segment, Error};

/// A last line cut short by a crash: not tampering, and never acknowledged as durable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TornTail {
    pub file: String,
    pub offset: u64,
    pub bytes: u64,
}

impl std::fmt::Display for TornTail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: tail truncated by a crash at offset {} ({} bytes)", self.file, self.offset, self.bytes)
    }
}

/// The first bad record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub file: String,
    /// 1-based line in `file`.
    pub line: u64,
    /// Byte offset of the line in `file`.
    pub offset: u64,
    /// The record's `seq`, when it could be read.
    pub seq: Option<u64>,
    pub what: String,
    /// The start of the bad line (at most 512 bytes, lossily decoded; it may hold anything,
    /// so escape it before printing it to a terminal).
    pub record: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{} (offset {}", self.file, self.line, self.offset)?;
        if let Some(seq) = self.seq {
            write!(f, ", seq {seq}")?;
        }
        write!(f, "): {}", self.what)
    }
}

/// What `verify` found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    pub ok: bool,
    pub files: u64,
    pub records: u64,
    pub last_seq: u64,
    /// The hash of the last good record: note it somewhere else to detect a later rollback.
    pub last_hash: String,
    pub checkpoints: u64,
    /// The last good signed checkpoint.
    pub last_checkpoint: Option<u64>,
    /// Records after the last checkpoint: they could be cut off undetected.
    pub unsigned_tail: u64,
    /// Events dropped (rate limit or full queue), as the records say.
    pub dropped: u64,
    /// A torn last line, not yet cut off by reopening the log.
    pub torn_tail: Option<TornTail>,
    /// Torn tails the writer cut off when it reopened the log.
    pub recovered: Vec<TornTail>,
    /// Oddities that are not tampering (a clock that went back).
    pub warnings: Vec<String>,
    /// The first bad record; `None` when the log is intact.
    pub problem: Option<Problem>,
}

/// Verifies the log in `dir` against its `signing.pub`.
pub fn verify(dir: impl AsRef<Path>) -> Result<Report, Error> {
    verify_with(dir, None)
}

/// Verifies the log in `dir`; with `key`, checkpoints must be signed by that key (pin it
/// somewhere an attacker of this machine cannot reach), else by `signing.pub`.
pub fn verify_with(dir: impl AsRef<Path>, key: Option<VerifyingKey>) -> Result<Report, Error> {
    let dir = dir.as_ref();
    if !dir.is_dir() {
        return Err(Error::NoLog { path: dir.into() });
    }
    let segs = segment::list(dir)?;
    if segs.is_empty() {
        return Err(Error::NoLog { path: dir.into() });
    }
    let key = match key {
        Some(k) => Ok(k),
        None => read_public_key(&dir.join(PUB_FILE)).map_err(|e| e.to_string()),
    };
    let mut v = Verifier {
        key,
        report: Report::default(),
        expected: 1,
        prev: GENESIS,
        prev_time: String::new(),
        file: String::new(),
    };
    for (i, (n, path)) in segs.iter().enumerate() {
        v.file = segment::name(*n);
        v.report.files += 1;
        let bytes = fs::read(path).map_err(Error::io("read", path))?;
        if *n != i as u32 + 1 {
            let missing = segment::name(i as u32 + 1);
            v.fail(1, 0, None, format!("{missing} is missing: segment files were deleted or renamed"));
            break;
        }
        if v.segment(&bytes, i + 1 == segs.len()).is_err() {
            break;
        }
    }
    let r = &mut v.report;
    r.ok = r.problem.is_none();
    r.last_seq = v.expected - 1;
    r.last_hash = hex(&v.prev);
    r.unsigned_tail = r.last_seq - r.last_checkpoint.unwrap_or(0);
    Ok(v.report)
}

struct Verifier {
    key: Result<VerifyingKey, String>,
    report: Report,
    expected: u64,
    prev: [u8; 32],
    prev_time: String,
    file: String,
}

/// The fields every line must have, and nothing else.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line<'a> {
    seq: u64,
    #[serde(borrow)]
    time: Cow<'a, str>,
    #[serde(borrow)]
    kind: Cow<'a, str>,
    #[allow(dead_code)]
    sandbox: Option<Cow<'a, str>>,
    #[allow(dead_code)]
    tenant: Option<Cow<'a, str>>,
    #[serde(borrow)]
    data: &'a RawValue,
    #[serde(default)]
    dropped: u64,
    prev: &'a str,
    #[allow(dead_code)]
    hash: &'a str,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckpointData<'a> {
    upto: u64,
    chain: &'a str,
    key: &'a str,
    sig: &'a str,
}

/// Stop walking: the problem is in the report.
struct Stop;

impl Verifier {
    fn fail(&mut self, line: u64, offset: u64, seq: Option<u64>, what: String) -> Stop {
        self.fail_on(&[], line, offset, seq, what)
    }

    fn fail_on(&mut self, text: &[u8], line: u64, offset: u64, seq: Option<u64>, what: String) -> Stop {
        let record = String::from_utf8_lossy(&text[..text.len().min(512)]).into_owned();
        self.report.problem = Some(Problem { file: self.file.clone(), line, offset, seq, what, record });
        Stop
    }

    fn segment(&mut self, bytes: &[u8], last: bool) -> Result<(), Stop> {
        let end = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let mut offset = 0;
        let mut line_no = 0;
        for line in bytes[..end].split_inclusive(|&b| b == b'\n') {
            line_no += 1;
            self.record(&line[..line.len() - 1], line_no, offset as u64)?;
            offset += line.len();
        }
        if end < bytes.len() {
            let tail = TornTail { file: self.file.clone(), offset: end as u64, bytes: (bytes.len() - end) as u64 };
            if !last {
                let what =
                    format!("{} bytes without a newline at the end of a segment that is not the last", tail.bytes);
                return Err(self.fail_on(&bytes[end..], line_no + 1, end as u64, None, what));
            }
            self.report.torn_tail = Some(tail);
        }
        Ok(())
    }

    fn record(&mut self, line: &[u8], line_no: u64, offset: u64) -> Result<(), Stop> {
        let Some((body, hash)) = split_line(line) else {
            return Err(self.fail_on(
                line,
                line_no,
                offset,
                None,
                "not a record: no hash at the end of the line".into(),
            ));
        };
        if hash_body(body) != hash {
            let seq = peek_seq(line);
            return Err(self.fail_on(
                line,
                line_no,
                offset,
                seq,
                "hash does not match the record's bytes: record modified".into(),
            ));
        }
        let rec: Line = match serde_json::from_slice(line) {
            Ok(r) => r,
            Err(e) => {
                return Err(self.fail_on(line, line_no, offset, peek_seq(line), format!("not a valid record: {e}")))
            }
        };
        let seq = Some(rec.seq);
        if rec.seq != self.expected {
            let what = if rec.seq < self.expected {
                format!(
                    "seq {} where {} was expected: records reordered, duplicated or inserted",
                    rec.seq, self.expected
                )
            } else {
                format!(
                    "seq {} where {} was expected: records {}..={} are missing (deleted records or files)",
                    rec.seq,
                    self.expected,
                    self.expected,
                    rec.seq - 1
                )
            };
            return Err(self.fail_on(line, line_no, offset, seq, what));
        }
        if unhex32(rec.prev.as_bytes()) != Some(self.prev) {
            let what =
                "prev does not match the previous record's hash: a record before it was removed, inserted or replaced";
            return Err(self.fail_on(line, line_no, offset, seq, what.into()));
        }
        if rec.kind == "checkpoint" {
            if let Err(what) = self.checkpoint(rec.seq, rec.data.get()) {
                let since =
                    self.report.last_checkpoint.map_or("the start".into(), |c| format!("the checkpoint at seq {c}"));
                return Err(self.fail_on(
                    line,
                    line_no,
                    offset,
                    seq,
                    format!("{what}: records after {since} were altered"),
                ));
            }
            self.report.checkpoints += 1;
            self.report.last_checkpoint = Some(rec.seq);
        }
        if rec.kind == "log" {
            #[derive(Deserialize)]
            struct Open {
                torn_tail: Option<TornTail>,
            }
            if let Ok(Open { torn_tail: Some(t) }) = serde_json::from_str(rec.data.get()) {
                self.report.recovered.push(t);
            }
        }
        if *rec.time < *self.prev_time {
            self.report
                .warnings
                .push(format!("{}:{line_no}: seq {}: time goes back to {}", self.file, rec.seq, rec.time));
        }
        self.prev_time = rec.time.into_owned();
        self.report.dropped += rec.dropped;
        self.report.records += 1;
        self.expected += 1;
        self.prev = hash;
        Ok(())
    }

    fn checkpoint(&self, seq: u64, data: &str) -> Result<(), String> {
        let c: CheckpointData = serde_json::from_str(data).map_err(|e| format!("malformed checkpoint: {e}"))?;
        if c.upto + 1 != seq || unhex32(c.chain.as_bytes()) != Some(self.prev) {
            return Err("checkpoint does not match the chain before it".into());
        }
        let key = self.key.as_ref().map_err(|e| format!("cannot check the checkpoint: {e}"))?;
        let signer = parse_public_key(c.key.as_bytes()).map_err(|e| format!("checkpoint key: {e}"))?;
        if signer != *key {
            return Err(format!("checkpoint signed by another key ({})", c.key));
        }
        let sig = unhex(c.sig.as_bytes()).ok_or("checkpoint signature is not hex")?;
        if !verify_checkpoint(key, seq, &self.prev, &sig) {
            return Err("checkpoint signature is invalid".into());
        }
        Ok(())
    }
}

/// The `seq` of a line that failed its checks, for the report, if it can be read.
fn peek_seq(line: &[u8]) -> Option<u64> {
    let rest = line.strip_prefix(b"{\"seq\":")?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()
}

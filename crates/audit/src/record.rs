//! One audit record: what callers hand in, how untrusted strings are bounded, and the exact
//! bytes written for it.
//!
//! A line is `{"seq":..,"time":..,"kind":..,"sandbox":..,"tenant":..,"data":..,["dropped":..,]"prev":"<hex>","hash":"<hex>"}`
//! where `hash` is the SHA-256 of every byte of the line before `,"hash":` (the *body*).
//! The body contains `prev`, the previous record's hash, so each hash covers the whole
//! history before it.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// The hash of the record before the first one.
pub const GENESIS: [u8; 32] = [0; 32];

/// What a record is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// An API call: who, what, result.
    Api,
    /// Something a sandbox did or had done to it (exec, exit, denial, OOM, ...).
    Event,
    /// A sandbox's policy: its content and digest.
    Policy,
    /// Written by the log: a signature over the chain so far.
    Checkpoint,
    /// Written by the log about itself (opened, recovered a torn tail).
    Log,
}

impl Kind {
    pub const ALL: [Kind; 5] = [Kind::Api, Kind::Event, Kind::Policy, Kind::Checkpoint, Kind::Log];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Api => "api",
            Kind::Event => "event",
            Kind::Policy => "policy",
            Kind::Checkpoint => "checkpoint",
            Kind::Log => "log",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A record to append. The log adds `seq`, `time`, `prev` and `hash`.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    pub kind: Kind,
    /// The sandbox the record is about, if any (`sb_...`).
    pub sandbox: Option<String>,
    /// The tenant that made the call or owns the sandbox, if any.
    pub tenant: Option<String>,
    /// Anything JSON. Strings longer than the cap are truncated (see [`crate::Options`]).
    pub data: Value,
}

impl Record {
    pub fn new(kind: Kind, data: Value) -> Record {
        Record { kind, sandbox: None, tenant: None, data }
    }

    pub fn sandbox(mut self, id: impl Into<String>) -> Record {
        self.sandbox = Some(id.into());
        self
    }

    pub fn tenant(mut self, tenant: impl Into<String>) -> Record {
        self.tenant = Some(tenant.into());
        self
    }

    /// An API call: `who` made `method path` and got `status`.
    pub fn api(who: &str, method: &str, path: &str, status: u16) -> Record {
        Record::new(Kind::Api, serde_json::json!({ "method": method, "path": path, "status": status })).tenant(who)
    }

    /// Something that happened in or to a sandbox.
    pub fn event(sandbox: &str, data: Value) -> Record {
        Record::new(Kind::Event, data).sandbox(sandbox)
    }

    /// A sandbox's policy: its SHA-256 (of the full text) and its text (capped like any data).
    pub fn policy(sandbox: &str, content: &str) -> Record {
        let digest = hex(&Sha256::digest(content.as_bytes()));
        Record::new(Kind::Policy, serde_json::json!({ "sha256": digest, "content": content })).sandbox(sandbox)
    }
}

/// Bounds what untrusted input can put in one record.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Caps {
    /// Bytes per string (keys and values); longer ones keep a prefix and a marker.
    pub string: usize,
    /// Bytes of serialized `data`; bigger data is replaced by a truncated preview.
    pub data: usize,
}

const MAX_DEPTH: usize = 32;

/// Serializes `data` with every string capped, nesting bounded and the total size bounded.
/// serde_json escapes control characters (newlines, ESC of ANSI sequences), so the result
/// never contains a raw newline: one record stays one line.
pub(crate) fn encode_data(data: &Value, caps: Caps) -> String {
    // Most records need no capping: serialize them as they are, without a copy.
    let out = if within_caps(data, caps.string, 0) {
        serde_json::to_string(data)
    } else {
        serde_json::to_string(&cap_value(data, caps.string, 0))
    };
    let out = out.unwrap_or_else(|_| "null".into());
    if out.len() <= caps.data {
        return out;
    }
    let preview = truncate(&out, caps.string.min(caps.data / 2));
    serde_json::json!({ "truncated": true, "bytes": out.len(), "preview": preview }).to_string()
}

fn within_caps(v: &Value, cap: usize, depth: usize) -> bool {
    match v {
        Value::String(s) => s.len() <= cap,
        _ if depth >= MAX_DEPTH => false,
        Value::Array(a) => a.iter().all(|x| within_caps(x, cap, depth + 1)),
        Value::Object(o) => o.iter().all(|(k, x)| k.len() <= cap && within_caps(x, cap, depth + 1)),
        _ => true,
    }
}

fn cap_value(v: &Value, cap: usize, depth: usize) -> Value {
    match v {
        Value::String(s) => Value::String(truncate(s, cap)),
        _ if depth >= MAX_DEPTH => Value::String("(nested too deep)".into()),
        Value::Array(a) => Value::Array(a.iter().map(|x| cap_value(x, cap, depth + 1)).collect()),
        Value::Object(o) => {
            Value::Object(o.iter().map(|(k, x)| (truncate(k, cap), cap_value(x, cap, depth + 1))).collect())
        }
        other => other.clone(),
    }
}

/// `s` if it fits in `cap` bytes, else its longest prefix on a character boundary followed
/// by `…[truncated, N bytes]`.
pub fn truncate(s: &str, cap: usize) -> String {
    if s.len() <= cap {
        return s.to_string();
    }
    let mut end = cap;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…[truncated, {} bytes]", &s[..end], s.len())
}

/// A record waiting in the queue, its data already serialized by the caller's thread.
pub(crate) struct Pending {
    pub seq: u64,
    pub time_ms: i64,
    pub kind: Kind,
    pub sandbox: Option<String>,
    pub tenant: Option<String>,
    /// Serialized JSON; empty for a checkpoint, whose data the writer computes.
    pub data: String,
    /// Events dropped since the previous record.
    pub dropped: u64,
}

impl Pending {
    pub fn weight(&self) -> usize {
        self.data.len()
            + self.sandbox.as_ref().map_or(0, String::len)
            + self.tenant.as_ref().map_or(0, String::len)
            + 96
    }
}

/// Length of `,"hash":"<64 hex>"}`.
pub(crate) const HASH_SUFFIX_LEN: usize = 9 + 64 + 2;

/// Appends the line for `p` (with its newline) to `buf`; returns its hash.
pub(crate) fn encode_line(buf: &mut Vec<u8>, p: &Pending, time: &str, data: &str, prev: &[u8; 32]) -> [u8; 32] {
    let start = buf.len();
    buf.extend_from_slice(b"{\"seq\":");
    buf.extend_from_slice(p.seq.to_string().as_bytes());
    buf.extend_from_slice(b",\"time\":\"");
    buf.extend_from_slice(time.as_bytes());
    buf.extend_from_slice(b"\",\"kind\":\"");
    buf.extend_from_slice(p.kind.as_str().as_bytes());
    buf.extend_from_slice(b"\",\"sandbox\":");
    json_opt_str(buf, p.sandbox.as_deref());
    buf.extend_from_slice(b",\"tenant\":");
    json_opt_str(buf, p.tenant.as_deref());
    buf.extend_from_slice(b",\"data\":");
    buf.extend_from_slice(data.as_bytes());
    if p.dropped > 0 {
        buf.extend_from_slice(b",\"dropped\":");
        buf.extend_from_slice(p.dropped.to_string().as_bytes());
    }
    buf.extend_from_slice(b",\"prev\":\"");
    push_hex(buf, prev);
    buf.push(b'"');
    let hash: [u8; 32] = Sha256::digest(&buf[start..]).into();
    buf.extend_from_slice(b",\"hash\":\"");
    push_hex(buf, &hash);
    buf.extend_from_slice(b"\"}\n");
    hash
}

fn json_opt_str(buf: &mut Vec<u8>, s: Option<&str>) {
    match s {
        // Writing a string into a Vec cannot fail.
        Some(s) => serde_json::to_writer(&mut *buf, s).unwrap_or(()),
        None => buf.extend_from_slice(b"null"),
    }
}

/// Splits a line (without its newline) into its body and its hash, if it has the shape.
pub(crate) fn split_line(line: &[u8]) -> Option<(&[u8], [u8; 32])> {
    if line.len() < HASH_SUFFIX_LEN + 2 {
        return None;
    }
    let (body, suffix) = line.split_at(line.len() - HASH_SUFFIX_LEN);
    let hex = suffix.strip_prefix(b",\"hash\":\"")?.strip_suffix(b"\"}")?;
    Some((body, unhex32(hex)?))
}

pub(crate) fn hash_body(body: &[u8]) -> [u8; 32] {
    Sha256::digest(body).into()
}

const HEX: &[u8; 16] = b"0123456789abcdef";

pub(crate) fn push_hex(buf: &mut Vec<u8>, bytes: &[u8]) {
    for b in bytes {
        buf.push(HEX[usize::from(b >> 4)]);
        buf.push(HEX[usize::from(b & 15)]);
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    let mut v = Vec::with_capacity(bytes.len() * 2);
    push_hex(&mut v, bytes);
    String::from_utf8(v).unwrap_or_default()
}

pub(crate) fn unhex32(hex: &[u8]) -> Option<[u8; 32]> {
    let v = unhex(hex)?;
    v.try_into().ok()
}

pub(crate) fn unhex(hex: &[u8]) -> Option<Vec<u8>> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        }
    }
    if hex.len() % 2 != 0 {
        return None;
    }
    hex.chunks(2).map(|p| Some(nibble(p[0])? << 4 | nibble(p[1])?)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const CAPS: Caps = Caps { string: 16, data: 200 };

    #[test]
    fn strings_are_escaped_and_capped() {
        let out = encode_data(&json!({"cmd": "a\nb\u{1b}[31m", "long": "x".repeat(40)}), CAPS);
        assert!(!out.contains('\n') && !out.contains('\u{1b}'));
        assert!(out.contains(r#""a\nb\u001b[31m""#), "{out}");
        assert!(out.contains(&format!("{}…[truncated, 40 bytes]", "x".repeat(16))), "{out}");
    }

    #[test]
    fn truncation_respects_char_boundaries() {
        assert_eq!(truncate("ééé", 3), "é…[truncated, 6 bytes]");
    }

    #[test]
    fn oversized_data_becomes_a_preview() {
        let many: Vec<Value> = (0..100).map(|i| json!(i)).collect();
        let out: Value = serde_json::from_str(&encode_data(&Value::Array(many), CAPS)).unwrap();
        assert_eq!(out["truncated"], json!(true));
    }

    #[test]
    fn line_hash_covers_the_body() {
        let p = Pending {
            seq: 7,
            time_ms: 0,
            kind: Kind::Api,
            sandbox: Some("sb_\"x".into()),
            tenant: None,
            data: "{}".into(),
            dropped: 2,
        };
        let mut buf = Vec::new();
        let h = encode_line(&mut buf, &p, "1970-01-01T00:00:00.000Z", "{}", &GENESIS);
        assert_eq!(buf.last(), Some(&b'\n'));
        let line = &buf[..buf.len() - 1];
        let (body, hash) = split_line(line).unwrap();
        assert_eq!(hash, h);
        assert_eq!(hash_body(body), h);
        let v: Value = serde_json::from_slice(line).unwrap();
        assert_eq!(v["sandbox"], json!("sb_\"x"));
        assert_eq!(v["dropped"], json!(2));
    }
}

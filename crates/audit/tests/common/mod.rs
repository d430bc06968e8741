//! Helpers shared by the audit tests: temporary directories, a log of N records, and
//! line surgery for the tampering tests.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};

use safehouse_audit::{AuditLog, Options, Record};
use sha2::{Digest, Sha256};

/// A directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let mut rnd = [0u8; 8];
        getrandom::getrandom(&mut rnd).unwrap();
        let p = std::env::temp_dir().join(format!(
            "safehouse-audit-{tag}-{}-{:x}",
            std::process::id(),
            u64::from_le_bytes(rnd)
        ));
        fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// The audit directory inside it.
    pub fn audit(&self) -> PathBuf {
        self.0.join("audit")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Small segments and frequent checkpoints, so 10k records make many of both.
pub fn small_opts() -> Options {
    Options { rotate_bytes: 256 << 10, checkpoint_records: 500, ..Options::default() }
}

/// Appends `n` API records (~200 bytes of data each) and closes the log.
pub fn make_log(dir: &Path, n: u64, opts: Options) -> u64 {
    let log = AuditLog::open_with(dir, opts).unwrap();
    for i in 0..n {
        log.append(sample(i)).unwrap();
    }
    log.close().unwrap()
}

pub fn sample(i: u64) -> Record {
    Record::api(
        &format!("tenant-{}", i % 7),
        "POST",
        &format!("/v1/sandboxes/sb_{:016x}/exec", i * 7919),
        if i % 13 == 0 { 403 } else { 200 },
    )
    .sandbox(format!("sb_{:016x}", i * 7919))
}

/// Segment files in order.
pub fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with("audit-"))
        .collect();
    v.sort();
    v
}

pub fn read_lines(path: &Path) -> Vec<String> {
    fs::read_to_string(path).unwrap().lines().map(String::from).collect()
}

pub fn write_lines(path: &Path, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    fs::write(path, text).unwrap();
}

pub fn seq_of(line: &str) -> u64 {
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    v["seq"].as_u64().unwrap()
}

pub fn hash_of(line: &str) -> String {
    line[line.len() - 66..line.len() - 2].to_string()
}

/// What a forger with the code but not the key can do: give `line` a new `seq` and `prev`
/// and recompute its hash.
pub fn reseal(line: &str, seq: u64, prev: &str) -> String {
    let body = &line[..line.len() - 75];
    let body = &body[..body.len() - 66];
    let rest = &body[body.find(",\"time\"").unwrap()..];
    let body = format!("{{\"seq\":{seq}{rest}\"{prev}\"");
    let hash: String = Sha256::digest(body.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
    format!("{body},\"hash\":\"{hash}\"}}")
}

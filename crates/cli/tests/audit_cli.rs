//! `safehouse audit verify|export` against real logs: exit statuses and output.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use safehouse_audit::{AuditLog, Kind, Record};
use serde_json::json;

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let p = std::env::temp_dir().join(format!("safehouse-audit-cli-{tag}-{}-{nanos}", std::process::id()));
        fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn safehouse(args: &[&str], data_dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_safehouse")).args(args).arg("--data-dir").arg(data_dir).output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A log with 3 sandboxes' events and policies, and an API call, in DATA_DIR/audit.
fn make(data_dir: &Path) {
    let log = AuditLog::open(safehouse_audit::dir(data_dir)).unwrap();
    for i in 0..300 {
        let sb = format!("sb_{}", i % 3);
        if i < 3 {
            log.append(Record::policy(&sb, "[network]\nallow = []\n")).unwrap();
        }
        log.append(Record::event(&sb, json!({"type": "exec", "argv": ["ls", "-l"], "i": i}))).unwrap();
    }
    log.append_durable(Record::api("tenant-a", "DELETE", "/v1/sandboxes/sb_1", 204)).unwrap();
    log.close().unwrap();
}

#[test]
fn verify_exits_0_on_an_intact_log_and_1_naming_the_first_bad_record() {
    let t = TempDir::new("verify");
    make(&t.0);
    let out = safehouse(&["audit", "verify"], &t.0);
    assert_eq!(out.status.code(), Some(0), "{}{}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stdout).contains("intact: "), "{}", text(&out.stdout));

    let out = safehouse(&["audit", "verify", "--json"], &t.0);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], json!(true));
    assert_eq!(report["problem"], json!(null));

    // Rewrite one record's command, with an ANSI escape in it.
    let seg = safehouse_audit::dir(&t.0).join("audit-000001.jsonl");
    let mut lines: Vec<String> = fs::read_to_string(&seg).unwrap().lines().map(String::from).collect();
    lines[50] = lines[50].replace(r#"["ls","-l"]"#, r#"["rm","\u001b[2J"]"#).replace("\"ls\"", "\u{1b}[2J");
    fs::write(&seg, lines.join("\n") + "\n").unwrap();
    let out = safehouse(&["audit", "verify"], &t.0);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("TAMPERED: audit-000001.jsonl:51 (offset "), "{stdout}");
    assert!(stdout.contains(", seq 51): hash does not match"), "{stdout}");
    assert!(!stdout.contains('\u{1b}'), "the bad record is escaped before printing: {stdout:?}");

    let out = safehouse(&["audit", "verify", "--json"], &t.0);
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["problem"]["seq"], json!(51));
    assert_eq!(report["problem"]["line"], json!(51));
}

#[test]
fn verify_exits_2_without_a_log_or_with_bad_arguments() {
    let t = TempDir::new("nolog");
    let out = safehouse(&["audit", "verify"], &t.0);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("no audit log in"), "{}", text(&out.stderr));
    let out = safehouse(&["audit", "verify", "--bogus"], &t.0);
    assert_eq!(out.status.code(), Some(2));
    let out = safehouse(&["audit", "export", "--since", "yesterday"], &t.0);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("bad time"), "{}", text(&out.stderr));
    let out = safehouse(&["audit", "export", "--kind", "nope"], &t.0);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn export_writes_the_matching_records_as_stored() {
    let t = TempDir::new("export");
    make(&t.0);
    let out = safehouse(&["audit", "export", "--sandbox", "sb_1", "--kind", "policy", "--kind", "event"], &t.0);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let lines: Vec<serde_json::Value> = text(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 101);
    assert!(lines.iter().all(|v| v["sandbox"] == json!("sb_1") && v["hash"].is_string()));
    assert_eq!(lines[0]["kind"], json!(Kind::Policy.as_str()));

    let out = safehouse(&["audit", "export", "--kind", "api", "--since", "2000-01-01T00:00:00Z"], &t.0);
    let api: Vec<serde_json::Value> = text(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(api.len(), 1);
    assert_eq!(api[0]["data"]["status"], json!(204));
    assert_eq!(api[0]["tenant"], json!("tenant-a"));
    let out = safehouse(&["audit", "export", "--until", "2000-01-01T00:00:00Z"], &t.0);
    assert_eq!((out.status.code(), out.stdout.len()), (Some(0), 0));
}

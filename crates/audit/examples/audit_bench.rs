//! `cargo run --release -p safehouse-audit --example audit_bench [-- RECORDS [DIR]]`
//!
//! Sustained durable appends per second (records of ~200 bytes of data, one producer
//! thread, every record fdatasynced in the writer's batches before the clock stops), verify
//! and export speed, against a baseline measured in the same run: the same number of bytes
//! written with plain `write` in 1 MiB chunks, each fdatasynced. Medians of 3 runs.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use safehouse_audit::{export, verify, AuditLog, Filter, Options, Record};
use serde_json::json;

fn main() {
    let mut args = std::env::args().skip(1);
    let n: u64 = args.next().map_or(2_000_000, |a| a.parse().expect("RECORDS is a number"));
    let base: PathBuf = args.next().map_or_else(std::env::temp_dir, PathBuf::from);
    let mut rows = Vec::new();
    for run in 0..3 {
        let dir = base.join(format!("safehouse-audit-bench-{}-{run}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        rows.push(one_run(&dir, n));
        let _ = fs::remove_dir_all(&dir);
    }
    println!("records per run: {n}; data per record ~200 bytes; dir: {}", base.display());
    println!("run  append/s (durable)  enqueue/s  MB/s   baseline MB/s  ratio  verify/s    export/s   line bytes");
    for (i, r) in rows.iter().enumerate() {
        println!(
            "{i:>3}  {:>18.0}  {:>9.0}  {:>5.1}  {:>13.1}  {:>5.2}  {:>10.0}  {:>9.0}  {:>5.0}",
            r.append,
            r.enqueue,
            r.mbps,
            r.baseline_mbps,
            r.mbps / r.baseline_mbps,
            r.verify,
            r.export,
            r.line
        );
    }
    let med = |f: fn(&Row) -> f64| {
        let mut v: Vec<f64> = rows.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "median: append {:.0}/s ({:.1} MB/s, {:.2}x the raw write+fdatasync baseline of {:.1} MB/s), verify {:.0}/s, export {:.0}/s",
        med(|r| r.append),
        med(|r| r.mbps),
        med(|r| r.mbps / r.baseline_mbps),
        med(|r| r.baseline_mbps),
        med(|r| r.verify),
        med(|r| r.export)
    );
}

struct Row {
    append: f64,
    enqueue: f64,
    mbps: f64,
    baseline_mbps: f64,
    verify: f64,
    export: f64,
    line: f64,
}

fn one_run(dir: &Path, n: u64) -> Row {
    let log = AuditLog::open_with(dir, Options { event_rate: 0, ..Options::default() }).expect("open");
    let start = Instant::now();
    for i in 0..n {
        let rec = Record::event(
            &format!("sb_{:016x}", i % 64),
            json!({
                "type": "exec",
                "argv": ["/usr/bin/python3", "-c", "import os; print(os.listdir('/workspace'))"],
                "cwd": "/workspace",
                "pid": 4000 + i % 1000,
                "exit": 0,
                "wall_ms": 12,
                "cpu_ms": 9,
            }),
        )
        .tenant("tenant-a");
        log.append(rec).expect("append");
    }
    let queued = start.elapsed().as_secs_f64();
    let durable = log.flush().expect("flush");
    let secs = start.elapsed().as_secs_f64();
    let dropped = log.stats().dropped;
    assert_eq!(dropped, 0, "the queue overflowed: the writer did not keep up");
    assert!(durable >= n);
    log.close().expect("close");
    let bytes: u64 = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().starts_with("audit-"))
        .map(|e| e.metadata().unwrap().len())
        .sum();

    let t = Instant::now();
    let report = verify(dir).expect("verify");
    let verify_secs = t.elapsed().as_secs_f64();
    assert!(report.ok, "{report:#?}");

    let t = Instant::now();
    let mut sink = std::io::sink();
    export(dir, &Filter { sandbox: Some("sb_0000000000000000".into()), ..Filter::default() }, &mut sink)
        .expect("export");
    let export_secs = t.elapsed().as_secs_f64();

    let baseline = baseline(dir, bytes);
    Row {
        append: n as f64 / secs,
        enqueue: n as f64 / queued,
        mbps: bytes as f64 / secs / 1e6,
        baseline_mbps: bytes as f64 / baseline / 1e6,
        verify: report.records as f64 / verify_secs,
        export: report.records as f64 / export_secs,
        line: bytes as f64 / report.records as f64,
    }
}

/// Seconds to write `bytes` with plain writes of 1 MiB, each followed by fdatasync.
fn baseline(dir: &Path, bytes: u64) -> f64 {
    let path = dir.join("baseline");
    let mut f = OpenOptions::new().create(true).append(true).open(&path).unwrap();
    let chunk = vec![b'x'; 1 << 20];
    let start = Instant::now();
    let mut left = bytes;
    while left > 0 {
        let k = left.min(chunk.len() as u64) as usize;
        f.write_all(&chunk[..k]).unwrap();
        f.sync_data().unwrap();
        left -= k as u64;
    }
    let secs = start.elapsed().as_secs_f64();
    let _ = fs::remove_file(path);
    secs
}

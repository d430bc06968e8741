//! `safehouse audit verify|export`: check the audit chain kept under `DATA_DIR/audit/`,
//! and export its records (docs/adr/0004-audit-log.md).

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use safehouse_audit::{Filter, Kind, Report};

/// Exit status when the log was checked and found tampered with.
const EXIT_TAMPERED: i32 = 1;
/// Exit status when it could not be checked (bad arguments, no log, unreadable).
const EXIT_USAGE: i32 = 2;

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Check every record's hash, the chain, the sequence, the segment files and the
    /// checkpoints' signatures: exit 0 if intact, 1 naming the first bad record, 2 if the
    /// log cannot be read
    Verify(VerifyArgs),
    /// Write the matching records to stdout as JSON lines, exactly as stored
    Export(ExportArgs),
}

#[derive(Args)]
pub struct VerifyArgs {
    /// The daemon's data directory (default: the one `safehouse serve` uses)
    #[arg(long, value_name = "DIR", env = "SAFEHOUSE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Print the report as JSON
    #[arg(long)]
    json: bool,
    /// Check checkpoint signatures against this public key (hex, as in
    /// DATA_DIR/audit/signing.pub, but kept somewhere safe) instead of the one in the directory
    #[arg(long, value_name = "FILE")]
    public_key: Option<PathBuf>,
}

#[derive(Args)]
pub struct ExportArgs {
    /// The daemon's data directory (default: the one `safehouse serve` uses)
    #[arg(long, value_name = "DIR", env = "SAFEHOUSE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Only records about this sandbox
    #[arg(long, value_name = "ID")]
    sandbox: Option<String>,
    /// Only records at or after this time (RFC 3339, e.g. 2026-01-31T12:00:00Z)
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
    /// Only records before this time (RFC 3339)
    #[arg(long, value_name = "TIME")]
    until: Option<String>,
    /// Only records of this kind (repeatable)
    #[arg(long, value_name = "KIND", value_parser = Kind::ALL.map(Kind::as_str))]
    kind: Vec<String>,
}

pub fn main(c: AuditCommand) -> i32 {
    match c {
        AuditCommand::Verify(a) => verify(a),
        AuditCommand::Export(a) => export(a),
    }
}

fn audit_dir(data_dir: Option<PathBuf>) -> PathBuf {
    safehouse_audit::dir(&data_dir.unwrap_or_else(safehouse_daemon::default_data_dir))
}

fn verify(a: VerifyArgs) -> i32 {
    let dir = audit_dir(a.data_dir);
    let key = match a.public_key.as_deref().map(safehouse_audit::read_public_key).transpose() {
        Ok(k) => k,
        Err(e) => {
            eprintln!("safehouse: {e}");
            return EXIT_USAGE;
        }
    };
    let report = match safehouse_audit::verify_with(&dir, key) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("safehouse: {e}");
            return EXIT_USAGE;
        }
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
    } else {
        print_report(&dir, &report);
    }
    if report.ok {
        0
    } else {
        EXIT_TAMPERED
    }
}

fn print_report(dir: &std::path::Path, r: &Report) {
    if let Some(p) = &r.problem {
        println!("{}: TAMPERED: {p}", dir.display());
        // The line may hold anything an attacker wrote: escape it for the terminal.
        println!("  record: {}", p.record.escape_debug());
        println!(
            "  intact up to seq {} ({} records, last signed checkpoint: {})",
            r.last_seq,
            r.records,
            checkpoint(r)
        );
    } else {
        println!(
            "{}: intact: {} records in {} files, {} signed checkpoints (last at seq {}), last seq {}",
            dir.display(),
            r.records,
            r.files,
            r.checkpoints,
            checkpoint(r),
            r.last_seq
        );
        println!("  last hash {}", r.last_hash);
        if r.unsigned_tail > 0 {
            println!("  note: {} records after the last checkpoint are not signed yet", r.unsigned_tail);
        }
    }
    if let Some(t) = &r.torn_tail {
        println!("  note: {t} (cut off when the log is next opened)");
    }
    for t in &r.recovered {
        println!("  note: recovered: {t}");
    }
    if r.dropped > 0 {
        println!("  note: {} events were dropped (rate limit or full queue) and counted", r.dropped);
    }
    for w in &r.warnings {
        println!("  warning: {}", w.escape_debug());
    }
}

fn checkpoint(r: &Report) -> String {
    r.last_checkpoint.map_or("none".into(), |c| c.to_string())
}

fn export(a: ExportArgs) -> i32 {
    let dir = audit_dir(a.data_dir);
    let mut filter = Filter { sandbox: a.sandbox, kinds: a.kind, ..Filter::default() };
    let times = (|| {
        if let Some(t) = &a.since {
            filter = std::mem::take(&mut filter).since(t)?;
        }
        if let Some(t) = &a.until {
            filter = std::mem::take(&mut filter).until(t)?;
        }
        Ok::<_, safehouse_audit::Error>(())
    })();
    if let Err(e) = times {
        eprintln!("safehouse: {e}");
        return EXIT_USAGE;
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
    match safehouse_audit::export(&dir, &filter, &mut out) {
        Ok(_) => 0,
        // `safehouse audit export | head` is fine.
        Err(safehouse_audit::Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::BrokenPipe => 0,
        Err(e @ safehouse_audit::Error::NoLog { .. }) => {
            eprintln!("safehouse: {e}");
            EXIT_USAGE
        }
        Err(e) => {
            let _ = out.flush();
            eprintln!("safehouse: {e}");
            1
        }
    }
}

//! `safehouse events [ID] [--follow] [--json]`: a sandbox's events, or every sandbox's the
//! key may see (GET /v1/sandboxes/{id}/events, GET /v1/events; Server-Sent Events).
//! Without `--follow` it prints what the daemon kept and exits.

use std::io::{BufRead, BufReader, Write};

use anyhow::Result;
use clap::Args;
use serde_json::Value;

use super::client::{finish, sandbox_path, Client};

#[derive(Args)]
pub struct EventsArgs {
    /// The sandbox; without it, every sandbox of the key's tenant (all of them for admin)
    pub id: Option<String>,
    /// Keep printing new events as they happen (until the sandbox ends, or Ctrl-C)
    #[arg(long, short)]
    pub follow: bool,
    /// Only events after this sequence number (with ID)
    #[arg(long, requires = "id")]
    pub since_seq: Option<u64>,
    /// One JSON object per line, as the daemon sends them
    #[arg(long)]
    pub json: bool,
}

pub fn main(args: EventsArgs) -> i32 {
    finish(Client::from_env().and_then(|client| run(&client, &args)))
}

fn run(client: &Client, args: &EventsArgs) -> Result<()> {
    let path = match &args.id {
        Some(id) => sandbox_path(id, "/events"),
        None => "/v1/events".to_string(),
    };
    let mut req = client.request("GET", &path).query("follow", if args.follow { "true" } else { "false" });
    if let Some(s) = args.since_seq {
        req = req.query("since_seq", &s.to_string());
    }
    let resp = client.check(req.set("Accept", "text/event-stream").call())?;
    let reader = BufReader::new(resp.into_reader());
    let mut out = std::io::stdout().lock();
    let (mut kind, mut data) = (String::new(), String::new());
    for line in reader.lines() {
        let line = line?;
        if line.is_empty() {
            if !data.is_empty() {
                print_event(&mut out, &kind, &data, args.json)?;
            }
            kind.clear();
            data.clear();
        } else if let Some(v) = line.strip_prefix("event:") {
            kind = v.trim_start().to_string();
        } else if let Some(v) = line.strip_prefix("data:") {
            data.push_str(v.trim_start());
        }
        // `id:` is in the data too; `:` lines are keep-alives.
    }
    Ok(())
}

fn print_event(out: &mut impl Write, kind: &str, data: &str, json: bool) -> Result<()> {
    let v: Value = serde_json::from_str(data).unwrap_or(Value::Null);
    if kind == "lagged" {
        let missed = v.get("missed").and_then(Value::as_u64).unwrap_or(0);
        if json {
            writeln!(out, "{}", serde_json::json!({ "kind": "lagged", "missed": missed }))?;
        } else {
            eprintln!("safehouse: this reader fell behind; {missed} event(s) were skipped");
        }
        return Ok(());
    }
    if json {
        writeln!(out, "{data}")?;
    } else {
        // The data stays JSON: strings from the sandbox arrive escaped, so they cannot move
        // the cursor or forge lines on this terminal.
        let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let seq = v.get("seq").and_then(Value::as_u64).unwrap_or(0);
        let dropped = match v.get("dropped").and_then(Value::as_u64) {
            Some(n) if n > 0 => format!(" (dropped {n} before)"),
            _ => String::new(),
        };
        let body = v.get("data").map(|d| d.to_string()).unwrap_or_default();
        writeln!(out, "{} {} {seq:>5} {:<20} {body}{dropped}", s("time"), s("sandbox"), s("kind"))?;
    }
    out.flush()?;
    Ok(())
}

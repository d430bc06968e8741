//! `safehouse sandbox create|ls|info|kill|timeout`: manage sandboxes on a daemon.

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use serde_json::{json, Map, Value};

use super::client::{field, finish, parse_pairs, print_json, print_table, sandbox_path, Client};

#[derive(Subcommand)]
pub enum SandboxCommand {
    /// Create a sandbox on the daemon; prints its id
    Create(CreateArgs),
    /// List this key's sandboxes
    Ls(LsArgs),
    /// Show one sandbox
    Info {
        id: String,
        /// Print the sandbox object as JSON
        #[arg(long)]
        json: bool,
    },
    /// Kill a sandbox and remove it (idempotent)
    Kill { id: String },
    /// Set a sandbox's deadline to SECS seconds from now
    Timeout {
        id: String,
        #[arg(value_name = "SECS")]
        secs: u64,
        /// Print the sandbox object as JSON
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
pub struct CreateArgs {
    /// A built-in policy (see `safehouse policy show`)
    #[arg(long, value_name = "NAME")]
    preset: Option<String>,
    /// A policy file (TOML); sent to the daemon as JSON
    #[arg(long, value_name = "FILE")]
    policy: Option<String>,
    /// Lifetime in seconds (the daemon's default is 300)
    #[arg(long, value_name = "SECS")]
    timeout: Option<u64>,
    /// Set a variable for every command in the sandbox (repeatable)
    #[arg(long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Attach a label to find the sandbox by (repeatable)
    #[arg(long = "metadata", value_name = "KEY=VALUE")]
    metadata: Vec<String>,
    /// Print the sandbox object as JSON instead of its id
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct LsArgs {
    /// Only sandboxes with this label (repeatable; all must match)
    #[arg(long = "metadata", value_name = "KEY=VALUE")]
    metadata: Vec<String>,
    /// Only sandboxes in this state (running, killed, expired, failed)
    #[arg(long, value_name = "STATE")]
    state: Option<String>,
    /// Print `{"sandboxes": [...]}` as JSON instead of a table
    #[arg(long)]
    json: bool,
}

pub fn main(c: SandboxCommand) -> i32 {
    finish(Client::from_env().and_then(|client| match c {
        SandboxCommand::Create(a) => create(&client, a),
        SandboxCommand::Ls(a) => ls(&client, a),
        SandboxCommand::Info { id, json } => info(&client, &id, json),
        SandboxCommand::Kill { id } => {
            client.delete(&sandbox_path(&id, ""), &[])?;
            println!("{id}");
            Ok(())
        }
        SandboxCommand::Timeout { id, secs, json } => {
            let sb = client.send_json("POST", &sandbox_path(&id, "/timeout"), &json!({ "timeout_s": secs }))?;
            if json {
                print_json(&sb);
            } else {
                println!("{id} expires at {}", field(&sb, "expires_at"));
            }
            Ok(())
        }
    }))
}

/// The create request body from the flags.
fn create_body(a: &CreateArgs) -> Result<Value> {
    let mut body = Map::new();
    if let Some(file) = &a.policy {
        let text = std::fs::read_to_string(file).with_context(|| format!("cannot read policy {file}"))?;
        // Sent as written: the daemon validates it and says what to change.
        let doc: toml::Value = toml::from_str(&text).with_context(|| format!("{file} is not valid TOML"))?;
        body.insert("policy".into(), serde_json::to_value(doc)?);
    }
    if let Some(p) = &a.preset {
        body.insert("preset".into(), json!(p));
    }
    if let Some(t) = a.timeout {
        body.insert("timeout_s".into(), json!(t));
    }
    if !a.env.is_empty() {
        body.insert("env".into(), json!(parse_pairs(&a.env, "--env")?));
    }
    if !a.metadata.is_empty() {
        body.insert("metadata".into(), json!(parse_pairs(&a.metadata, "--metadata")?));
    }
    Ok(Value::Object(body))
}

fn create(client: &Client, a: CreateArgs) -> Result<()> {
    let sb = client.send_json("POST", "/v1/sandboxes", &create_body(&a)?)?;
    if a.json {
        print_json(&sb);
    } else {
        println!("{}", field(&sb, "id"));
    }
    Ok(())
}

fn ls(client: &Client, a: LsArgs) -> Result<()> {
    let filters = parse_pairs(&a.metadata, "--metadata")?;
    let mut query: Vec<(String, String)> = filters.iter().map(|(k, v)| (format!("metadata.{k}"), v.clone())).collect();
    if let Some(s) = &a.state {
        query.push(("state".into(), s.clone()));
    }
    let query: Vec<(&str, &str)> = query.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let list = client.get_json("/v1/sandboxes", &query)?;
    if a.json {
        print_json(&list);
        return Ok(());
    }
    let empty = Vec::new();
    let sandboxes = list.get("sandboxes").and_then(Value::as_array).unwrap_or(&empty);
    let rows: Vec<Vec<String>> = sandboxes
        .iter()
        .map(|sb| {
            vec![
                field(sb, "id"),
                field(sb, "state"),
                field(sb, "created_at"),
                field(sb, "expires_at"),
                metadata_text(sb),
            ]
        })
        .collect();
    print_table(&["ID", "STATE", "CREATED", "EXPIRES", "METADATA"], &rows);
    Ok(())
}

fn info(client: &Client, id: &str, json: bool) -> Result<()> {
    let sb = client.get_json(&sandbox_path(id, ""), &[])?;
    if json {
        print_json(&sb);
        return Ok(());
    }
    for key in ["id", "state", "created_at", "expires_at", "preset", "pid", "cgroup", "error"] {
        if sb.get(key).is_some_and(|v| !v.is_null()) {
            println!("{:<11} {}", format!("{key}:"), field(&sb, key));
        }
    }
    println!("{:<11} {}", "metadata:", metadata_text(&sb));
    Ok(())
}

/// `k=v,k2=v2` (or `-`).
fn metadata_text(sb: &Value) -> String {
    let Some(m) = sb.get("metadata").and_then(Value::as_object) else { return "-".into() };
    if m.is_empty() {
        return "-".into();
    }
    m.iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_body_from_flags() {
        let dir = std::env::temp_dir().join(format!("safehouse-cli-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("p.toml");
        std::fs::write(&file, "version = 1\n[limits]\nmemory = \"64MiB\"\npids = 32\n").unwrap();
        let a = CreateArgs {
            preset: None,
            policy: Some(file.to_str().unwrap().into()),
            timeout: Some(30),
            env: vec!["A=1".into()],
            metadata: vec!["team=x".into()],
            json: false,
        };
        let body = create_body(&a).unwrap();
        assert_eq!(
            body,
            json!({
                "policy": {"version": 1, "limits": {"memory": "64MiB", "pids": 32}},
                "timeout_s": 30,
                "env": {"A": "1"},
                "metadata": {"team": "x"},
            })
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn metadata_rendering() {
        assert_eq!(metadata_text(&json!({"metadata": {}})), "-");
        assert_eq!(metadata_text(&json!({"metadata": {"a": "1", "b": "2"}})), "a=1,b=2");
    }
}

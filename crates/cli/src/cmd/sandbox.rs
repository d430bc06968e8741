//! `safehouse sandbox create|ls|info|kill|timeout|freeze|thaw|pause|resume|snapshot|fork`:
//! manage sandboxes on a daemon.

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use serde_json::{json, Map, Value};

use safehouse_policy::units::parse_duration;

use super::client::{field, finish, parse_pairs, print_json, print_table, sandbox_path, Client};
use super::policy_flags::{self, LimitFlags};

#[derive(Subcommand)]
pub enum SandboxCommand {
    /// Create a sandbox on the daemon; prints its id
    Create(Box<CreateArgs>),
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
    /// Stop every process of a sandbox (cgroup freezer), keeping its files for inspection
    Freeze { id: String },
    /// Let a frozen sandbox run again
    Thaw { id: String },
    /// Stop every process and free the memory, keeping the files on disk (storage disk);
    /// the processes' memory is not kept on this tier
    Pause {
        id: String,
        /// Print what was kept as JSON
        #[arg(long)]
        json: bool,
    },
    /// Start a paused sandbox again: same id, files, environment and policy
    Resume {
        id: String,
        /// Print the sandbox object as JSON
        #[arg(long)]
        json: bool,
    },
    /// Freeze a sandbox's filesystem into a snapshot; prints its id (create from it with
    /// `sandbox create --snapshot ID`)
    Snapshot {
        id: String,
        /// Print the snapshot as JSON
        #[arg(long)]
        json: bool,
    },
    /// Make N new sandboxes from a sandbox's current files; prints their ids
    Fork {
        id: String,
        /// How many
        #[arg(long, short = 'n', default_value_t = 1)]
        count: u32,
        /// Print `{"sandboxes": [...]}` as JSON
        #[arg(long)]
        json: bool,
    },
    /// Set a sandbox's deadline to DURATION from now (600, 10m, 1h30m)
    Timeout {
        id: String,
        #[arg(value_name = "DURATION")]
        duration: String,
        /// Print the sandbox object as JSON
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
pub struct CreateArgs {
    /// A built-in policy (see `safehouse policy show`)
    #[arg(long, value_name = "NAME", conflicts_with = "policy")]
    preset: Option<String>,
    /// A policy file (TOML), checked here (errors name its lines) and sent as JSON
    #[arg(long, value_name = "FILE")]
    policy: Option<String>,
    #[command(flatten)]
    limits: LimitFlags,
    /// Lifetime, e.g. 600, 10m or 1h30m (the daemon's default is 300 seconds)
    #[arg(long, value_name = "DURATION")]
    timeout: Option<String>,
    /// Set a variable for every command in the sandbox (repeatable)
    #[arg(long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Attach a label to find the sandbox by (repeatable)
    #[arg(long = "metadata", value_name = "KEY=VALUE")]
    metadata: Vec<String>,
    /// Where the writable layer lives: memory (default) or disk (needed to pause)
    #[arg(long, value_name = "memory|disk", value_parser = ["memory", "disk"])]
    storage: Option<String>,
    /// At the deadline: kill (default) or pause
    #[arg(long, value_name = "kill|pause", value_parser = ["kill", "pause"])]
    on_timeout: Option<String>,
    /// Resume a paused sandbox on any call that needs it
    #[arg(long)]
    auto_resume: bool,
    /// Pause (or kill, per --on-timeout) after this long without a call, e.g. 10m
    #[arg(long, value_name = "DURATION")]
    idle_timeout: Option<String>,
    /// Start from a snapshot's files (and its policy and environment unless given)
    #[arg(long, value_name = "ID")]
    snapshot: Option<String>,
    /// Mount a volume of yours: NAME:PATH[:ro] (repeatable)
    #[arg(long = "volume", value_name = "NAME:PATH[:ro]")]
    volumes: Vec<String>,
    /// A template or image of the daemon's image store as the root filesystem
    #[arg(long, value_name = "NAME")]
    template: Option<String>,
    /// Print the sandbox object as JSON instead of its id
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct LsArgs {
    /// Only sandboxes with this label (repeatable; all must match)
    #[arg(long = "metadata", value_name = "KEY=VALUE")]
    metadata: Vec<String>,
    /// Only sandboxes in this state (running, frozen, killed, expired, failed)
    #[arg(long, value_name = "STATE")]
    state: Option<String>,
    /// Print `{"sandboxes": [...]}` as JSON instead of a table
    #[arg(long)]
    json: bool,
}

pub fn main(c: SandboxCommand) -> i32 {
    finish(Client::from_env().and_then(|client| match c {
        SandboxCommand::Create(a) => create(&client, *a),
        SandboxCommand::Ls(a) => ls(&client, a),
        SandboxCommand::Info { id, json } => info(&client, &id, json),
        SandboxCommand::Kill { id } => {
            client.delete(&sandbox_path(&id, ""), &[])?;
            println!("{id}");
            Ok(())
        }
        SandboxCommand::Freeze { id } => {
            let sb = client.send_json("POST", &sandbox_path(&id, "/freeze"), &json!({}))?;
            println!("{id} {}", field(&sb, "state"));
            Ok(())
        }
        SandboxCommand::Thaw { id } => {
            let sb = client.send_json("POST", &sandbox_path(&id, "/thaw"), &json!({}))?;
            println!("{id} {}", field(&sb, "state"));
            Ok(())
        }
        SandboxCommand::Pause { id, json } => {
            let r = client.send_json("POST", &sandbox_path(&id, "/pause"), &json!({}))?;
            if json {
                print_json(&r);
            } else {
                println!("{id} {}", field(&r, "state"));
                eprintln!("kept: the filesystem; not kept: the processes' memory ({})", field(&r, "note"));
            }
            Ok(())
        }
        SandboxCommand::Resume { id, json } => {
            let sb = client.send_json("POST", &sandbox_path(&id, "/resume"), &json!({}))?;
            if json {
                print_json(&sb);
            } else {
                println!("{id} {}", field(&sb, "state"));
            }
            Ok(())
        }
        SandboxCommand::Snapshot { id, json } => {
            let snap = client.send_json("POST", &sandbox_path(&id, "/snapshots"), &json!({}))?;
            if json {
                print_json(&snap);
            } else {
                println!("{}", field(&snap, "id"));
            }
            Ok(())
        }
        SandboxCommand::Fork { id, count, json } => {
            let r = client.send_json("POST", &sandbox_path(&id, "/fork"), &json!({ "count": count }))?;
            if json {
                print_json(&r);
            } else {
                for sb in r.get("sandboxes").and_then(Value::as_array).into_iter().flatten() {
                    println!("{}", field(sb, "id"));
                }
            }
            Ok(())
        }
        SandboxCommand::Timeout { id, duration, json } => {
            let secs = seconds(&duration, "the duration")?;
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

/// A duration flag in whole seconds for the API (rounded up; at least 1).
pub fn seconds(text: &str, flag: &str) -> Result<u64> {
    let d = parse_duration(text).map_err(|e| anyhow::anyhow!("{flag}: {e}"))?;
    Ok((d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1))
}

/// The create request body from the flags.
fn create_body(a: &CreateArgs) -> Result<Value> {
    let mut body = Map::new();
    if a.limits.any() {
        // The flags override the file's (or the preset's) policy, as with `run`.
        let mut policy = policy_flags::load(a.policy.as_deref(), a.preset.as_deref())?;
        a.limits.apply(&mut policy)?;
        policy.validate()?;
        body.insert("policy".into(), serde_json::to_value(&policy)?);
    } else if let Some(file) = &a.policy {
        let (text, _) = policy_flags::read_policy_file(file)?;
        // Sent as written (it parsed and validated above).
        let doc: toml::Value = toml::from_str(&text).with_context(|| format!("{file} is not valid TOML"))?;
        body.insert("policy".into(), serde_json::to_value(doc)?);
    } else if let Some(p) = &a.preset {
        body.insert("preset".into(), json!(p));
    }
    if let Some(t) = &a.timeout {
        body.insert("timeout_s".into(), json!(seconds(t, "--timeout")?));
    }
    if !a.env.is_empty() {
        body.insert("env".into(), json!(parse_pairs(&a.env, "--env")?));
    }
    if !a.metadata.is_empty() {
        body.insert("metadata".into(), json!(parse_pairs(&a.metadata, "--metadata")?));
    }
    if let Some(s) = &a.storage {
        body.insert("storage".into(), json!(s));
    }
    if a.on_timeout.is_some() || a.auto_resume || a.idle_timeout.is_some() {
        let mut lc = Map::new();
        if let Some(o) = &a.on_timeout {
            lc.insert("on_timeout".into(), json!(o));
        }
        lc.insert("auto_resume".into(), json!(a.auto_resume));
        if let Some(t) = &a.idle_timeout {
            lc.insert("idle_timeout_s".into(), json!(seconds(t, "--idle-timeout")?));
        }
        body.insert("lifecycle".into(), Value::Object(lc));
    }
    if let Some(s) = &a.snapshot {
        body.insert("snapshot".into(), json!(s));
    }
    if let Some(t) = &a.template {
        body.insert("template".into(), json!(t));
    }
    if !a.volumes.is_empty() {
        let mut vols = Vec::new();
        for v in &a.volumes {
            let parts: Vec<&str> = v.split(':').collect();
            let (name, path, ro) = match parts[..] {
                [n, p] => (n, p, false),
                [n, p, "ro"] => (n, p, true),
                [n, p, "rw"] => (n, p, false),
                _ => anyhow::bail!("--volume {v:?}: write NAME:PATH, NAME:PATH:ro or NAME:PATH:rw"),
            };
            vols.push(json!({ "name": name, "path": path, "read_only": ro }));
        }
        body.insert("volumes".into(), Value::Array(vols));
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
    let live = matches!(sb.get("state").and_then(Value::as_str), Some("running" | "frozen"));
    if live {
        // Best effort: the sandbox may end between the two requests.
        if let Ok(m) = client.get_json(&sandbox_path(id, "/metrics"), &[]) {
            for line in metrics_lines(&m) {
                println!("{line}");
            }
        }
    }
    Ok(())
}

/// The `current` block of `GET /v1/sandboxes/{id}/metrics`, one `key: value` a line.
fn metrics_lines(m: &Value) -> Vec<String> {
    let Some(c) = m.get("current") else { return Vec::new() };
    let n = |k: &str| c.get(k).and_then(Value::as_u64);
    let mib = |b: Option<u64>| b.map(|b| format!("{:.1} MiB", b as f64 / 1048576.0)).unwrap_or_else(|| "-".into());
    let cpu_s = n("cpu_usage_ns").map(|ns| ns as f64 / 1e9).unwrap_or(0.0);
    let pct = c.get("cpu_pct").and_then(Value::as_f64).unwrap_or(0.0);
    vec![
        format!("{:<11} {cpu_s:.2} s ({pct:.1}% over the last second)", "cpu:"),
        format!("{:<11} {} (peak {})", "memory:", mib(n("memory_bytes")), mib(n("memory_peak_bytes"))),
        format!("{:<11} {}", "pids:", n("pids").unwrap_or(0)),
        format!("{:<11} {}", "disk:", mib(n("disk_bytes"))),
        format!("{:<11} in {} B, out {} B", "network:", n("net_in").unwrap_or(0), n("net_out").unwrap_or(0)),
    ]
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
        let mut a = CreateArgs {
            preset: None,
            policy: Some(file.to_str().unwrap().into()),
            limits: LimitFlags::default(),
            timeout: Some("1h30m".into()),
            env: vec!["A=1".into()],
            metadata: vec!["team=x".into()],
            storage: None,
            on_timeout: None,
            auto_resume: false,
            idle_timeout: None,
            snapshot: None,
            volumes: Vec::new(),
            template: None,
            json: false,
        };
        let body = create_body(&a).unwrap();
        assert_eq!(
            body,
            json!({
                "policy": {"version": 1, "limits": {"memory": "64MiB", "pids": 32}},
                "timeout_s": 5400,
                "env": {"A": "1"},
                "metadata": {"team": "x"},
            })
        );
        // The flags override the file.
        a.limits.memory = Some("128MiB".into());
        a.limits.allow_net = vec!["pypi.org:443".into()];
        let body = create_body(&a).unwrap();
        assert_eq!(body["policy"]["limits"]["memory"], json!("128MiB"));
        assert_eq!(body["policy"]["limits"]["pids"], json!(32));
        assert_eq!(body["policy"]["network"]["allow"], json!(["pypi.org:443"]));
        // A bad file is reported with its own line and column.
        std::fs::write(&file, "version = 1\n[limits]\nmemory = \"lots\"\n").unwrap();
        let err = format!("{:#}", create_body(&a).unwrap_err());
        assert!(err.contains("p.toml") && err.contains("line 3"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn metrics_rendering() {
        let m = json!({"current": {"cpu_usage_ns": 1_500_000_000u64, "cpu_pct": 99.5, "memory_bytes": 104857600,
            "memory_peak_bytes": 209715200, "pids": 3, "disk_bytes": 0, "net_in": 10, "net_out": 20}});
        assert_eq!(
            metrics_lines(&m),
            [
                "cpu:        1.50 s (99.5% over the last second)",
                "memory:     100.0 MiB (peak 200.0 MiB)",
                "pids:       3",
                "disk:       0.0 MiB",
                "network:    in 10 B, out 20 B",
            ]
        );
    }

    #[test]
    fn metadata_rendering() {
        assert_eq!(metadata_text(&json!({"metadata": {}})), "-");
        assert_eq!(metadata_text(&json!({"metadata": {"a": "1", "b": "2"}})), "a=1,b=2");
    }
}

#[cfg(test)]
mod persistence_tests {
    use super::*;

    #[test]
    fn persistence_flags_become_the_create_body() {
        let a = CreateArgs {
            preset: None,
            policy: None,
            limits: LimitFlags::default(),
            timeout: None,
            env: Vec::new(),
            metadata: Vec::new(),
            storage: Some("disk".into()),
            on_timeout: Some("pause".into()),
            auto_resume: true,
            idle_timeout: Some("10m".into()),
            snapshot: Some("snap_x".into()),
            volumes: vec!["data:/data".into(), "cache:/c:ro".into()],
            template: Some("py-data".into()),
            json: false,
        };
        assert_eq!(
            create_body(&a).unwrap(),
            json!({
                "template": "py-data",
                "storage": "disk",
                "lifecycle": {"on_timeout": "pause", "auto_resume": true, "idle_timeout_s": 600},
                "snapshot": "snap_x",
                "volumes": [
                    {"name": "data", "path": "/data", "read_only": false},
                    {"name": "cache", "path": "/c", "read_only": true},
                ],
            })
        );
        let bad = CreateArgs { volumes: vec!["data".into()], ..a };
        assert!(create_body(&bad).unwrap_err().to_string().contains("write NAME:PATH"));
    }
}

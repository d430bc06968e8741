//! The MCP tools: what `tools/list` describes and what `tools/call` runs. Each tool checks
//! its arguments like the matching API route and calls the same manager and file
//! functions, so policy, events and tenancy are exactly the API's.
//!
//! A call that ran answers a result (a command that exited non-zero ran: its `exit_code`
//! says so); a call the daemon refused (bad arguments, no such sandbox, a denied write, a
//! policy it cannot enforce) answers `isError: true` with the daemon's message, which
//! names what to change.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use super::schema;
use super::session::Session;
use safehouse_hostfs::{self as files, MAX_LIST_DEPTH};
use safehouse_http::files::{blocking, check_path};
use safehouse_http::params::is_sandbox_id;
use safehouse_http::{ApiError, AppState};
use safehouse_manager::auth::Tenant;
use safehouse_manager::interp::CodeRequest;
use safehouse_manager::{
    limits, Command, CreateRequest, ExecLimits, ExecRequest, ExecResult, Lifecycle, ListFilter, Storage,
};

/// Bytes of stdout (and of stderr) a tool result carries; the rest is cut with a note.
pub const MAX_STREAM_BYTES: usize = 64 * 1024;
/// Bytes `read_file` returns by default, and at most.
pub const DEFAULT_READ_BYTES: u64 = 256 * 1024;
pub const MAX_READ_BYTES: u64 = 1024 * 1024;
/// Entries `list_files` returns at most.
pub const MAX_LIST: usize = 1000;
/// Network denials one command's result lists at most.
const MAX_DENIALS: usize = 20;

/// What a tool call needs: the daemon, the caller and the MCP session.
pub struct Ctx<'a> {
    /// The daemon.
    pub st: &'a AppState,
    /// Who calls (from the API key).
    pub tenant: &'a Tenant,
    /// The MCP session the call came in.
    pub session: &'a Arc<Session>,
}

/// A tool's answer: text for the model, the same as structured content, and the HTTP
/// status the matching API call would have had (for the audit record).
#[derive(Debug)]
pub struct ToolResult {
    /// For the model: the outcome in words.
    pub text: String,
    /// `structuredContent`: the same as data (matches the tool's `outputSchema` unless an error).
    pub structured: Value,
    /// The daemon refused the call.
    pub is_error: bool,
    /// The status the same API call would have answered.
    pub status: u16,
    /// The sandbox the call was about, for the audit record.
    pub sandbox: Option<String>,
    /// Images for the model (`image` content blocks): (MIME type, base64 data).
    pub images: Vec<(String, String)>,
}

impl ToolResult {
    fn ok(status: u16, sandbox: Option<String>, text: String, structured: Value) -> ToolResult {
        ToolResult { text, structured, is_error: false, status, sandbox, images: Vec::new() }
    }

    fn error(sandbox: Option<String>, mut e: ApiError) -> ToolResult {
        // The native API's hint names its route; an MCP client has the tool.
        e.message = e.message.replace("check the id with GET /v1/sandboxes", "check the id with the sandbox_list tool");
        ToolResult {
            text: format!("error ({}): {}", e.code, e.message),
            structured: json!({"error": {"code": e.code, "message": e.message, "status": e.status.as_u16()}}),
            is_error: true,
            status: e.status.as_u16(),
            sandbox,
            images: Vec::new(),
        }
    }

    /// The `CallToolResult` document.
    pub fn to_value(&self) -> Value {
        let mut content = vec![json!({"type": "text", "text": self.text})];
        for (mime, data) in &self.images {
            content.push(json!({"type": "image", "data": data, "mimeType": mime}));
        }
        json!({
            "content": content,
            "structuredContent": self.structured,
            "isError": self.is_error,
        })
    }
}

/// Every tool's name.
pub const NAMES: &[&str] = &[
    "sandbox_create",
    "sandbox_list",
    "sandbox_kill",
    "sandbox_pause",
    "sandbox_resume",
    "run_command",
    "run_code",
    "read_file",
    "write_file",
    "list_files",
];

/// The `tools/list` answer.
pub fn list() -> Value {
    json!({ "tools": NAMES.iter().map(|n| schema::describe(n)).collect::<Vec<_>>() })
}

/// Runs tool `name`; `None` when there is no such tool.
pub async fn call(ctx: &Ctx<'_>, name: &str, args: Value) -> Option<ToolResult> {
    let sandbox = args.get("sandbox_id").and_then(Value::as_str).map(str::to_string);
    let r = match name {
        "sandbox_create" => sandbox_create(ctx, args).await,
        "sandbox_list" => sandbox_list(ctx, args).await,
        "sandbox_kill" => sandbox_kill(ctx, args).await,
        "sandbox_pause" => sandbox_pause(ctx, args).await,
        "sandbox_resume" => sandbox_resume(ctx, args).await,
        "run_command" => run_command(ctx, args).await,
        "run_code" => run_code(ctx, args).await,
        "read_file" => read_file(ctx, args).await,
        "write_file" => write_file(ctx, args).await,
        "list_files" => list_files(ctx, args).await,
        _ => return None,
    };
    Some(r.unwrap_or_else(|e| ToolResult::error(sandbox, e)))
}

/// Typed arguments; unknown or mistyped ones are refused naming the tool.
fn args<T: DeserializeOwned>(tool: &str, v: Value) -> Result<T, ApiError> {
    serde_json::from_value(v).map_err(|e| ApiError::invalid(format!("{tool} arguments: {e}")))
}

/// A well-formed sandbox id (anything else is "no such sandbox", as in the API).
fn sandbox_id(id: &str) -> Result<String, ApiError> {
    if is_sandbox_id(id) {
        Ok(id.to_string())
    } else {
        Err(ApiError::no_sandbox())
    }
}

// ---------------------------------------------------------------- sandboxes

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateArgs {
    preset: Option<String>,
    policy: Option<Value>,
    timeout_s: Option<u64>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
    #[serde(default)]
    keep: bool,
    storage: Option<Storage>,
    lifecycle: Option<Lifecycle>,
    template: Option<String>,
}

async fn sandbox_create(ctx: &Ctx<'_>, a: Value) -> Result<ToolResult, ApiError> {
    let a: CreateArgs = args("sandbox_create", a)?;
    let req = CreateRequest {
        policy: a.policy.map(policy_json).transpose()?,
        preset: a.preset,
        timeout_s: a.timeout_s,
        env: a.env,
        metadata: a.metadata,
        created_by: ctx.tenant.key_id.clone(),
        storage: a.storage,
        lifecycle: a.lifecycle,
        template: a.template,
        ..Default::default()
    };
    let info = create(ctx, req, a.keep).await?;
    let text = format!(
        "created sandbox {} ({}), running until {}. Pass sandbox_id {:?} to run_command, run_code, read_file, \
         write_file and list_files; sandbox_kill ends it{}.",
        info["id"].as_str().unwrap_or("?"),
        info["preset"].as_str().map(|p| format!("preset {p}")).unwrap_or_else(|| "own policy".into()),
        info["expires_at"].as_str().unwrap_or("?"),
        info["id"].as_str().unwrap_or("?"),
        if a.keep || ctx.session.keep_sandboxes { "" } else { " (and so does the end of this MCP session)" },
    );
    let id = info["id"].as_str().map(str::to_string);
    Ok(ToolResult::ok(201, id, text, info))
}

/// A policy as the API takes it: a JSON object as is, a string as a TOML document.
fn policy_json(p: Value) -> Result<Value, ApiError> {
    match p {
        Value::String(toml) => {
            let policy =
                safehouse_policy::model::parse_toml(&toml, "policy").map_err(|e| ApiError::invalid(e.to_string()))?;
            serde_json::to_value(policy).map_err(ApiError::internal)
        }
        obj @ Value::Object(_) => Ok(obj),
        _ => Err(ApiError::invalid("policy must be an object (the policy as JSON) or a string (a TOML document)")),
    }
}

/// Creates a sandbox as `POST /v1/sandboxes` does, remembered by the session unless kept.
async fn create(ctx: &Ctx<'_>, req: CreateRequest, keep: bool) -> Result<Value, ApiError> {
    let info = ctx.st.manager.create(&ctx.tenant.name, req).await?;
    if !keep {
        ctx.session.created(&info.id);
    }
    serde_json::to_value(info).map_err(ApiError::internal)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListArgs {
    state: Option<String>,
}

async fn sandbox_list(ctx: &Ctx<'_>, a: Value) -> Result<ToolResult, ApiError> {
    let a: ListArgs = args("sandbox_list", a)?;
    let mut filter = ListFilter::default();
    if let Some(s) = a.state {
        filter.state = Some(safehouse_manager::store::parse_state(&s).ok_or_else(|| {
            ApiError::invalid(format!("state must be running, frozen, paused, killed, expired or failed, not {s:?}"))
        })?);
    }
    let list = ctx.st.manager.list(&ctx.tenant.name, &filter).await?;
    let mut text = format!("{} sandbox(es)", list.len());
    for sb in &list {
        let state = serde_json::to_value(sb.state).unwrap_or_default();
        text.push_str(&format!(
            "\n{} {} preset={} expires_at={}",
            sb.id,
            state.as_str().unwrap_or("?"),
            sb.preset.as_deref().unwrap_or("-"),
            sb.expires_at
        ));
    }
    Ok(ToolResult::ok(200, None, text, json!({ "sandboxes": list })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SandboxArgs {
    sandbox_id: String,
}

async fn sandbox_kill(ctx: &Ctx<'_>, a: Value) -> Result<ToolResult, ApiError> {
    let a: SandboxArgs = args("sandbox_kill", a)?;
    let id = sandbox_id(&a.sandbox_id)?;
    ctx.st.manager.kill(&ctx.tenant.name, &id).await?;
    ctx.session.forget(&id);
    let text = format!("killed sandbox {id}");
    Ok(ToolResult::ok(204, Some(id.clone()), text, json!({"sandbox_id": id, "state": "killed"})))
}

async fn sandbox_pause(ctx: &Ctx<'_>, a: Value) -> Result<ToolResult, ApiError> {
    let a: SandboxArgs = args("sandbox_pause", a)?;
    let id = sandbox_id(&a.sandbox_id)?;
    let kept = ctx.st.manager.pause(&ctx.tenant.name, &id).await?;
    let text = format!(
        "paused sandbox {id}: no process runs and it holds no memory; {}. sandbox_resume brings it back with \
         the same id and files.",
        kept.note
    );
    let structured = json!({
        "sandbox_id": id,
        "state": kept.state,
        "filesystem": kept.filesystem,
        "memory": kept.memory,
        "note": kept.note,
    });
    Ok(ToolResult::ok(200, Some(id), text, structured))
}

async fn sandbox_resume(ctx: &Ctx<'_>, a: Value) -> Result<ToolResult, ApiError> {
    let a: SandboxArgs = args("sandbox_resume", a)?;
    let id = sandbox_id(&a.sandbox_id)?;
    let info = ctx.st.manager.resume(&ctx.tenant.name, &id).await?;
    let text = format!(
        "sandbox {id} is running again, until {}: its files are as they were at the pause; processes that ran \
         then were not kept.",
        info.expires_at
    );
    Ok(ToolResult::ok(200, Some(id), text, serde_json::to_value(info).map_err(ApiError::internal)?))
}

// ---------------------------------------------------------------- commands

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CommandArgs {
    sandbox_id: String,
    command: Command,
    cwd: Option<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    stdin: Option<String>,
    timeout_s: Option<f64>,
}

async fn run_command(ctx: &Ctx<'_>, a: Value) -> Result<ToolResult, ApiError> {
    let a: CommandArgs = args("run_command", a)?;
    let id = sandbox_id(&a.sandbox_id)?;
    let req = ExecRequest {
        cmd: a.command,
        env: a.env,
        cwd: a.cwd,
        stdin: a.stdin,
        timeout_s: a.timeout_s,
        limits: ExecLimits::default(),
    };
    let (r, denials) = exec(ctx.st, &ctx.tenant.name, &id, req).await?;
    let (text, structured) = envelope(&id, r, denials, false);
    Ok(ToolResult::ok(200, Some(id), text, structured))
}

#[derive(Deserialize, Default, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum Language {
    #[default]
    Python,
    Bash,
    Sh,
}

impl Language {
    /// The code interpreter's name for it (sh runs in a bash context).
    fn name(self) -> &'static str {
        match self {
            Language::Python => "python",
            Language::Bash | Language::Sh => "bash",
        }
    }

    /// The interpreter, reading the program from its stdin.
    fn argv(self) -> Vec<String> {
        let v: &[&str] = match self {
            Language::Python => &["python3", "-"],
            Language::Bash => &["bash", "-s"],
            Language::Sh => &["sh", "-s"],
        };
        v.iter().map(|s| s.to_string()).collect()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CodeArgs {
    code: String,
    #[serde(default)]
    language: Language,
    sandbox_id: Option<String>,
    preset: Option<String>,
    timeout_s: Option<f64>,
}

async fn run_code(ctx: &Ctx<'_>, a: Value) -> Result<ToolResult, ApiError> {
    let a: CodeArgs = args("run_code", a)?;
    if let Some(id) = a.sandbox_id {
        if a.preset.is_some() {
            return Err(ApiError::invalid(
                "run_code: preset is for a fresh sandbox; leave it out when you give sandbox_id",
            ));
        }
        let id = sandbox_id(&id)?;
        return run_code_in(ctx, id, a.code, a.language, a.timeout_s).await;
    }
    let req = ExecRequest {
        cmd: Command::Argv(a.language.argv()),
        env: BTreeMap::new(),
        cwd: None,
        stdin: Some(a.code),
        timeout_s: a.timeout_s,
        limits: ExecLimits::default(),
    };
    // One-shot: a fresh sandbox for this code alone, killed whatever happens. In a task of
    // its own, so a client that hangs up mid-run does not leave the sandbox behind.
    let create = CreateRequest { preset: a.preset, created_by: ctx.tenant.key_id.clone(), ..CreateRequest::default() };
    // Checked before the sandbox is made: a command that cannot run costs no sandbox.
    limits::check_create(&create)?;
    limits::check_exec(&req)?;
    let (st, tenant) = (ctx.st.clone(), ctx.tenant.name.clone());
    let task = tokio::spawn(async move {
        let info = st.manager.create(&tenant, create).await?;
        let ran = exec(&st, &tenant, &info.id, req).await;
        if let Err(e) = st.manager.kill(&tenant, &info.id).await {
            eprintln!("safehouse: mcp: cannot kill one-shot sandbox {}: {e}", info.id);
        }
        ran.map(|(r, denials)| (info.id, r, denials))
    });
    let (id, r, denials) = task.await.map_err(ApiError::internal)??;
    let (text, structured) = envelope(&id, r, denials, true);
    Ok(ToolResult::ok(200, Some(id), text, structured))
}

/// Images one run_code result carries to the model, at most.
const MAX_IMAGES: usize = 4;

/// run_code in a live sandbox: the code interpreter (state kept between calls, charts as
/// images), as `POST /v1/sandboxes/{id}/code` runs it.
async fn run_code_in(
    ctx: &Ctx<'_>,
    id: String,
    code: String,
    language: Language,
    timeout_s: Option<f64>,
) -> Result<ToolResult, ApiError> {
    let mut sub = ctx.st.manager.events().subscribe_sandbox(&id, u64::MAX);
    let req = CodeRequest {
        code,
        language: Some(language.name().to_string()),
        timeout_s: Some(timeout_s.unwrap_or(limits::DEFAULT_EXEC_TIMEOUT_S)),
        ..CodeRequest::default()
    };
    let mut run = ctx.st.manager.run_code(&ctx.tenant.name, &id, req).await?;
    let (mut stdout, mut stderr) = (String::new(), String::new());
    let (mut results, mut images, mut error, mut count) = (Vec::new(), Vec::new(), Value::Null, Value::Null);
    while let Some(o) = run.next().await {
        let text = o.get("text").and_then(Value::as_str).unwrap_or("");
        match o.get("type").and_then(Value::as_str) {
            Some("stdout") => stdout.push_str(text),
            Some("stderr") => stderr.push_str(text),
            Some("error") => error = json!({"name": o["name"], "value": o["value"], "traceback": o["traceback"]}),
            Some("number_of_executions") => count = o.get("execution_count").cloned().unwrap_or(Value::Null),
            Some("result") => {
                let mut formats: Vec<&str> = Vec::new();
                for (k, v) in &o {
                    if matches!(k.as_str(), "type" | "is_main_result" | "extra") {
                        continue;
                    }
                    formats.push(k);
                    let mime = match k.as_str() {
                        "png" => "image/png",
                        "jpeg" => "image/jpeg",
                        _ => continue,
                    };
                    if let (Some(data), true) = (v.as_str(), images.len() < MAX_IMAGES) {
                        images.push((mime.to_string(), data.to_string()));
                    }
                }
                let (text, _) = cap(text, MAX_STREAM_BYTES);
                results.push(json!({
                    "is_main_result": o.get("is_main_result").and_then(Value::as_bool).unwrap_or(false),
                    "text": text, "formats": formats,
                    "chart": o.get("chart").cloned().unwrap_or(Value::Null),
                }));
            }
            _ => {}
        }
    }
    let denials = drain_denials(&mut sub, &id);
    let (out, out_cut) = cap(&stdout, MAX_STREAM_BYTES);
    let (err, err_cut) = cap(&stderr, MAX_STREAM_BYTES);
    let mut text = match &error {
        Value::Null => "ok".to_string(),
        e => format!("error: {}: {}", e["name"].as_str().unwrap_or(""), e["value"].as_str().unwrap_or("")),
    };
    for (name, body, cut) in [("stdout", &out, out_cut), ("stderr", &err, err_cut)] {
        if !body.is_empty() {
            text.push_str(&format!("\n--- {name} ---\n{body}"));
            if cut > 0 {
                text.push_str(&format!("\n[{name} cut: {cut} more bytes]"));
            }
        }
    }
    if let Some(main) = results.iter().find(|r| r["is_main_result"] == true) {
        text.push_str(&format!("\n--- result ---\n{}", main["text"].as_str().unwrap_or("")));
    }
    if let Some(tb) = error.get("traceback").and_then(Value::as_str).filter(|t| !t.is_empty()) {
        text.push_str(&format!("\n--- traceback ---\n{}", cap(tb, MAX_STREAM_BYTES).0));
    }
    if !images.is_empty() {
        text.push_str(&format!("\n({} image(s) attached)", images.len()));
    }
    push_denials(&mut text, &denials);
    let structured = json!({
        "sandbox_id": id, "one_shot": false, "stdout": out, "stderr": err,
        "stdout_truncated": out_cut > 0, "stderr_truncated": err_cut > 0,
        "results": results, "error": error, "execution_count": count, "network_denials": denials,
    });
    let mut r = ToolResult::ok(200, Some(id), text, structured);
    r.images = images;
    Ok(r)
}

/// The network denials the sandbox's gateway reported since `sub` began.
fn drain_denials(sub: &mut safehouse_manager::events::Subscription, id: &str) -> Vec<Value> {
    let mut denials = Vec::new();
    loop {
        use tokio::sync::broadcast::error::TryRecvError;
        match sub.live.try_recv() {
            Ok(ev) if ev.sandbox == id && ev.kind == "net.denied" && denials.len() < MAX_DENIALS => {
                denials.push(ev.data.clone())
            }
            Ok(_) | Err(TryRecvError::Lagged(_)) => {}
            Err(TryRecvError::Empty | TryRecvError::Closed) => break,
        }
    }
    denials
}

/// Runs `req` as `POST /v1/sandboxes/{id}/exec` does, collecting the network denials the
/// sandbox's gateway reported meanwhile.
async fn exec(st: &AppState, tenant: &str, id: &str, req: ExecRequest) -> Result<(ExecResult, Vec<Value>), ApiError> {
    let mut sub = st.manager.events().subscribe_sandbox(id, u64::MAX);
    let r = st.manager.exec(tenant, id, req).await?;
    Ok((r, drain_denials(&mut sub, id)))
}

/// The result of a command: exit status, output (capped) and the resource envelope.
fn envelope(id: &str, r: ExecResult, denials: Vec<Value>, one_shot: bool) -> (String, Value) {
    let (stdout, out_cut) = cap(&r.stdout, MAX_STREAM_BYTES);
    let (stderr, err_cut) = cap(&r.stderr, MAX_STREAM_BYTES);
    let status = match (r.exit_code, r.signal) {
        (Some(c), _) => format!("exit_code {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        (None, None) => "no exit status".to_string(),
    };
    let mut text = format!(
        "{status}{}{} (wall {} ms, cpu {} ms, peak memory {})",
        if r.timed_out { ", timed out" } else { "" },
        if r.oom_killed { ", killed: out of memory" } else { "" },
        r.wall_ms,
        r.cpu_ms,
        r.peak_memory_bytes.map(human_bytes).unwrap_or_else(|| "unknown".into()),
    );
    for (name, body, cut, daemon_cut) in
        [("stdout", &stdout, out_cut, r.stdout_truncated), ("stderr", &stderr, err_cut, r.stderr_truncated)]
    {
        if body.is_empty() && !daemon_cut {
            continue;
        }
        text.push_str(&format!("\n--- {name} ---\n{body}"));
        if cut > 0 || daemon_cut {
            text.push_str(&format!(
                "\n[{name} cut: {}; write it to a file and read_file parts of it]",
                if cut > 0 { format!("{cut} more bytes") } else { "more than the daemon keeps".into() }
            ));
        }
    }
    push_denials(&mut text, &denials);
    if !denials.is_empty() {
        text.push_str("\n(the sandbox's policy decides what it may reach: network.allow in the policy, or a preset)");
    }
    let structured = json!({
        "sandbox_id": id,
        "one_shot": one_shot,
        "exit_code": r.exit_code,
        "signal": r.signal,
        "stdout": stdout,
        "stderr": stderr,
        "stdout_truncated": r.stdout_truncated || out_cut > 0,
        "stderr_truncated": r.stderr_truncated || err_cut > 0,
        "timed_out": r.timed_out,
        "oom_killed": r.oom_killed,
        "wall_ms": r.wall_ms,
        "cpu_ms": r.cpu_ms,
        "peak_memory_bytes": r.peak_memory_bytes,
        "network_denials": denials,
    });
    (text, structured)
}

/// At most `max` bytes of `s` (on a character boundary) and how many bytes were cut.
fn cap(s: &str, max: usize) -> (String, usize) {
    if s.len() <= max {
        return (s.to_string(), 0);
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    (s[..end].to_string(), s.len() - end)
}

fn human_bytes(n: u64) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    if n >= 1 << 20 {
        format!("{:.1} MiB", n as f64 / MIB)
    } else {
        format!("{:.1} KiB", n as f64 / 1024.0)
    }
}

// ---------------------------------------------------------------- files

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadArgs {
    sandbox_id: String,
    path: String,
    max_bytes: Option<u64>,
}

async fn read_file(ctx: &Ctx<'_>, a: Value) -> Result<ToolResult, ApiError> {
    let a: ReadArgs = args("read_file", a)?;
    let id = sandbox_id(&a.sandbox_id)?;
    check_path(&a.path)?;
    let max = a.max_bytes.unwrap_or(DEFAULT_READ_BYTES);
    if max == 0 || max > MAX_READ_BYTES {
        return Err(ApiError::invalid(format!("max_bytes must be between 1 and {MAX_READ_BYTES}")));
    }
    let root = ctx.st.manager.root(&ctx.tenant.name, &id).await?;
    let path = a.path;
    let (info, bytes) = blocking(move || {
        let (file, info) = files::open_read(&root, &path)?;
        let mut buf = Vec::new();
        file.take(max).read_to_end(&mut buf).map_err(|e| files::FileError::from_io(&info.path, e))?;
        Ok((info, buf))
    })
    .await?;
    let truncated = (bytes.len() as u64) < info.size;
    let (content, encoding) = match text_prefix(&bytes, truncated) {
        Some(t) => (t.to_string(), "utf-8"),
        None => (B64.encode(&bytes), "base64"),
    };
    let mut text = if encoding == "utf-8" {
        content.clone()
    } else {
        format!("{}: binary file of {} bytes, base64:\n{content}", info.path, info.size)
    };
    if truncated {
        text.push_str(&format!(
            "\n[{}: first {} of {} bytes; pass a larger max_bytes (at most {MAX_READ_BYTES}) or run_command \
             to read other parts]",
            info.path,
            bytes.len(),
            info.size
        ));
    }
    let structured = json!({
        "path": info.path, "size": info.size, "encoding": encoding, "content": content, "truncated": truncated,
    });
    Ok(ToolResult::ok(200, Some(id), text, structured))
}

/// `bytes` as text when it is UTF-8 (a cut file may end inside a character).
fn text_prefix(bytes: &[u8], truncated: bool) -> Option<&str> {
    match std::str::from_utf8(bytes) {
        Ok(s) => Some(s),
        Err(e) if truncated && e.error_len().is_none() => std::str::from_utf8(&bytes[..e.valid_up_to()]).ok(),
        Err(_) => None,
    }
}

#[derive(Deserialize, Default, Clone, Copy, PartialEq)]
enum Encoding {
    #[default]
    #[serde(rename = "utf-8")]
    Utf8,
    #[serde(rename = "base64")]
    Base64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WriteArgs {
    sandbox_id: String,
    path: String,
    content: String,
    #[serde(default)]
    encoding: Encoding,
}

async fn write_file(ctx: &Ctx<'_>, a: Value) -> Result<ToolResult, ApiError> {
    let a: WriteArgs = args("write_file", a)?;
    let id = sandbox_id(&a.sandbox_id)?;
    check_path(&a.path)?;
    let data = match a.encoding {
        Encoding::Utf8 => a.content.into_bytes(),
        Encoding::Base64 => {
            B64.decode(a.content.trim()).map_err(|e| ApiError::invalid(format!("content is not base64: {e}")))?
        }
    };
    let root = ctx.st.manager.root(&ctx.tenant.name, &id).await?;
    let path = a.path;
    let info = blocking(move || {
        use std::io::Write;
        let (mut file, new_file) = files::create_write(&root, &path, true)?;
        let io = |e| files::FileError::from_io(&path, e);
        file.write_all(&data).map_err(io)?;
        file.sync_data().map_err(io)?;
        drop(file);
        new_file.keep();
        files::stat(&root, &path)
    })
    .await?;
    ctx.st.manager.note(&id, "file.written", json!({ "path": info.path, "size": info.size }));
    let text = format!("wrote {} bytes to {}", info.size, info.path);
    let structured = serde_json::to_value(&info).map_err(ApiError::internal)?;
    Ok(ToolResult::ok(201, Some(id), text, structured))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListFilesArgs {
    sandbox_id: String,
    #[serde(default = "workspace")]
    path: String,
    depth: Option<u32>,
}

fn workspace() -> String {
    "/workspace".to_string()
}

async fn list_files(ctx: &Ctx<'_>, a: Value) -> Result<ToolResult, ApiError> {
    let a: ListFilesArgs = args("list_files", a)?;
    let id = sandbox_id(&a.sandbox_id)?;
    check_path(&a.path)?;
    let depth = a.depth.unwrap_or(1);
    if !(1..=MAX_LIST_DEPTH).contains(&depth) {
        return Err(ApiError::invalid(format!("depth must be between 1 and {MAX_LIST_DEPTH}")));
    }
    let root = ctx.st.manager.root(&ctx.tenant.name, &id).await?;
    let path = a.path.clone();
    let mut entries = blocking(move || files::list(&root, &path, depth)).await?;
    let total = entries.len();
    entries.truncate(MAX_LIST);
    let mut text = format!("{}: {total} entries", a.path);
    for e in &entries {
        let kind = serde_json::to_value(e.kind).unwrap_or_default();
        let kind = kind.as_str().unwrap_or("?");
        let link = e.symlink_target.as_deref().map(|t| format!(" -> {t}")).unwrap_or_default();
        text.push_str(&format!("\n{kind:<7} {:>10}  {}{link}", e.size, e.path));
    }
    if total > MAX_LIST {
        text.push_str(&format!("\n[first {MAX_LIST} of {total}; list a subdirectory or a smaller depth]"));
    }
    let structured = json!({"path": a.path, "entries": entries, "truncated": total > MAX_LIST});
    Ok(ToolResult::ok(200, Some(id), text, structured))
}

/// One line per network denial the command met, for a tool result's text.
fn push_denials(text: &mut String, denials: &[Value]) {
    for d in denials {
        text.push_str(&format!(
            "\nnetwork denied: {} (rule: {}): {}",
            d["target"].as_str().unwrap_or("?"),
            d["rule"].as_str().unwrap_or("-"),
            d["reason"].as_str().unwrap_or("")
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_capped_on_character_boundaries() {
        assert_eq!(cap("abc", 5), ("abc".to_string(), 0));
        let (s, cut) = cap("aé€", 2);
        assert_eq!((s.as_str(), cut), ("a", 5));
        let big = "x".repeat(MAX_STREAM_BYTES + 10);
        assert_eq!(cap(&big, MAX_STREAM_BYTES).1, 10);
    }

    #[test]
    fn text_or_binary() {
        assert_eq!(text_prefix(b"hello", false), Some("hello"));
        assert_eq!(text_prefix(b"\xff\x00", false), None);
        // A cut inside a character keeps the whole characters before it.
        let e = "é".as_bytes();
        assert_eq!(text_prefix(&[b'a', e[0]], true), Some("a"));
        assert_eq!(text_prefix(&[b'a', e[0]], false), None);
    }

    #[test]
    fn policies_as_toml_or_json() {
        let v = policy_json(json!("version = 1\n[network]\nallow = [\"example.com:443\"]\n")).unwrap();
        let back = safehouse_policy::model::parse_json(&v.to_string(), "policy").unwrap();
        assert_eq!(back.network.allow.len(), 1);
        assert_eq!(policy_json(json!({"version": 1})).unwrap(), json!({"version": 1}));
        assert!(policy_json(json!("version = ")).unwrap_err().message.contains("policy"));
        assert!(policy_json(json!(5)).is_err());
    }

    #[test]
    fn arguments_are_checked() {
        let e = args::<SandboxArgs>("sandbox_kill", json!({"sandbox_id": "sb_x", "force": true})).err().unwrap();
        assert!(e.message.contains("sandbox_kill") && e.message.contains("force"), "{e}");
        let c: CodeArgs = args("run_code", json!({"code": "print(1)"})).unwrap();
        assert_eq!(c.language.argv(), ["python3", "-"]);
        assert!(args::<CodeArgs>("run_code", json!({"code": "x", "language": "cobol"})).is_err());
        let r: CommandArgs = args("run_command", json!({"sandbox_id": "s", "command": ["ls", "-l"]})).unwrap();
        assert_eq!(r.command.argv(), ["ls", "-l"]);
        let w: WriteArgs = args("write_file", json!({"sandbox_id": "s", "path": "/a", "content": "x"})).unwrap();
        assert!(w.encoding == Encoding::Utf8);
        assert!(sandbox_id("../x").is_err());
        let c: CreateArgs = args(
            "sandbox_create",
            json!({"storage": "disk", "lifecycle": {"on_timeout": "pause", "auto_resume": true}}),
        )
        .unwrap();
        assert_eq!(c.storage, Some(Storage::Disk));
        assert!(c.lifecycle.unwrap().auto_resume);
        let e = args::<CreateArgs>("sandbox_create", json!({"lifecycle": {"on_idle": "pause"}})).err().unwrap();
        assert!(e.message.contains("sandbox_create") && e.message.contains("on_idle"), "{e}");
        let e = args::<SandboxArgs>("sandbox_pause", json!({})).err().unwrap();
        assert!(e.message.contains("sandbox_pause") && e.message.contains("sandbox_id"), "{e}");
    }

    #[test]
    fn every_tool_is_described() {
        let l = list();
        let tools = l["tools"].as_array().unwrap();
        assert_eq!(tools.len(), NAMES.len());
        for t in tools {
            assert!(t["description"].as_str().unwrap().len() > 20, "{t}");
            assert_eq!(t["inputSchema"]["type"], "object", "{t}");
            assert_eq!(t["outputSchema"]["type"], "object", "{t}");
        }
    }

    #[test]
    fn envelope_names_denials_and_cuts() {
        let r = ExecResult {
            exit_code: Some(1),
            signal: None,
            stdout: "y".repeat(MAX_STREAM_BYTES + 1),
            stderr: String::new(),
            stdout_truncated: false,
            stderr_truncated: false,
            timed_out: false,
            oom_killed: false,
            wall_ms: 5,
            cpu_ms: 2,
            peak_memory_bytes: Some(3 << 20),
            tool_limits: Vec::new(),
        };
        let d = json!({"target": "evil.test:80", "rule": "default deny", "reason": "not in network.allow"});
        let (text, s) = envelope("sb_x", r, vec![d], false);
        assert!(text.starts_with("exit_code 1 (wall 5 ms, cpu 2 ms, peak memory 3.0 MiB)"), "{text}");
        assert!(text.contains("[stdout cut: 1 more bytes"), "{text}");
        assert!(text.contains("network denied: evil.test:80 (rule: default deny)"), "{text}");
        assert_eq!(s["stdout_truncated"], true);
        assert_eq!(s["network_denials"][0]["target"], "evil.test:80");
    }
}

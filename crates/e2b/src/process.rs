//! `process.Process`, the commands API of the E2B SDK: Start and Connect (server streams of
//! start/data/end events), List, SendInput, StreamInput (a client stream), SendSignal,
//! CloseStdin and Update (PTY size). Each maps onto the manager's background processes.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use futures_util::StreamExt;
use serde_json::{json, Value};

use super::connect::{self, Code, ConnectError, StreamTx};
use safehouse_manager::auth::Tenant;
use safehouse_manager::{limits, AttachEvent, Command, PtySize, StartProcess};

use crate::filesystem::HOME;
use crate::E2b;

/// Default interval of the keepalive events sent on long streams (the SDK asks with the
/// `Keepalive-Ping-Interval` header, in seconds).
const KEEPALIVE: Duration = Duration::from_secs(50);

/// Dispatches one call by method name.
pub async fn call(st: &E2b, tenant: &Tenant, id: &str, method: &str, req: Request) -> Response {
    let stream = Stream { keepalive: keepalive_of(&req), deadline: connect::deadline_of(req.headers()) };
    match method {
        "Start" => match connect::read_stream_request(req).await {
            Ok(msg) => start(st.clone(), tenant.clone(), id.to_string(), msg, stream).await,
            Err(e) => connect::stream_error(e),
        },
        "Connect" => match connect::read_stream_request(req).await {
            Ok(msg) => attach(st.clone(), tenant.clone(), id.to_string(), msg, stream).await,
            Err(e) => connect::stream_error(e),
        },
        "StreamInput" => stream_input(st, tenant, id, req).await,
        _ => {
            let msg = match connect::read_unary(req).await {
                Ok(m) => m,
                Err(e) => return e.into_response(),
            };
            let r = match method {
                "List" => list(st, tenant, id).await,
                "SendInput" => send_input(st, tenant, id, &msg).await,
                "SendSignal" => send_signal(st, tenant, id, &msg).await,
                "CloseStdin" => close_stdin(st, tenant, id, &msg).await,
                "Update" => update(st, tenant, id, &msg).await,
                other => Err(ConnectError::unimplemented(format!("process.Process/{other} does not exist"))),
            };
            match r {
                Ok(v) => connect::unary_ok(v),
                Err(e) => e.into_response(),
            }
        }
    }
}

/// How a server stream runs: its keepalive interval and the client's deadline. At the
/// deadline the stream ends with `deadline_exceeded` (the SDK's `TimeoutException`); the
/// process goes on, as when a client disconnects (`commands.connect` reattaches).
#[derive(Clone, Copy)]
struct Stream {
    keepalive: Duration,
    deadline: Option<Duration>,
}

pub(super) fn keepalive_of(req: &Request) -> Duration {
    req.headers()
        .get("keepalive-ping-interval")
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .filter(|s| (1..=3600).contains(s))
        .map(Duration::from_secs)
        .unwrap_or(KEEPALIVE)
}

fn str_field<'a>(v: &'a Value, k: &str) -> Option<&'a str> {
    v.get(k).and_then(Value::as_str)
}

/// A protojson uint32 (a number, or a string of digits).
fn u32_field(v: &Value, k: &str) -> Option<u32> {
    match v.get(k)? {
        Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// The pid a `ProcessSelector` (`{"pid": N}` or `{"tag": "..."}`) names.
fn selected_pid(st: &E2b, id: &str, msg: &Value) -> Result<u32, ConnectError> {
    let sel = msg.get("process").ok_or_else(|| ConnectError::invalid("process: give {\"pid\": N} or {\"tag\": T}"))?;
    if let Some(pid) = u32_field(sel, "pid") {
        return Ok(pid);
    }
    if let Some(tag) = str_field(sel, "tag") {
        let tags = st.e2b.tags.lock().unwrap_or_else(|e| e.into_inner());
        return tags
            .get(&(id.to_string(), tag.to_string()))
            .copied()
            .ok_or_else(|| ConnectError::new(Code::NotFound, format!("no process with tag {tag:?}")));
    }
    Err(ConnectError::invalid("process: give {\"pid\": N} or {\"tag\": T}"))
}

/// The bytes of a protojson `bytes` field (base64, standard or URL alphabet).
fn bytes_field(v: &Value, k: &str) -> Result<Option<Vec<u8>>, ConnectError> {
    match v.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => {
            let t = s.trim_end_matches('=');
            base64::engine::general_purpose::STANDARD_NO_PAD
                .decode(t)
                .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(t))
                .map(Some)
                .map_err(|e| ConnectError::invalid(format!("{k}: not base64: {e}")))
        }
        Some(_) => Err(ConnectError::invalid(format!("{k} must be a base64 string"))),
    }
}

/// What `StartRequest` asks for, as a native `StartProcess`.
pub fn start_request(msg: &Value) -> Result<(StartProcess, Option<String>, bool), ConnectError> {
    let p = msg.get("process").ok_or_else(|| ConnectError::invalid("process is required"))?;
    let cmd = str_field(p, "cmd")
        .filter(|c| !c.is_empty())
        .ok_or_else(|| ConnectError::invalid("process.cmd is required"))?;
    let mut argv = vec![cmd.to_string()];
    if let Some(args) = p.get("args").and_then(Value::as_array) {
        for a in args {
            argv.push(a.as_str().ok_or_else(|| ConnectError::invalid("process.args: strings only"))?.to_string());
        }
    }
    let mut env = BTreeMap::new();
    if let Some(envs) = p.get("envs").and_then(Value::as_object) {
        for (k, v) in envs {
            env.insert(
                k.clone(),
                v.as_str().ok_or_else(|| ConnectError::invalid("process.envs: strings only"))?.into(),
            );
        }
    }
    limits::check_env(&env)?;
    // One working directory with the files API, as in E2B: the user's home, against which
    // relative paths (a relative `cwd` too) resolve.
    let cwd = Some(crate::filesystem::absolute(str_field(p, "cwd").filter(|c| !c.is_empty()).unwrap_or(HOME))?);
    let pty = match msg.get("pty").and_then(|p| p.get("size")) {
        None => None,
        Some(size) => {
            let (rows, cols) = (u32_field(size, "rows").unwrap_or(24), u32_field(size, "cols").unwrap_or(80));
            if rows == 0 || cols == 0 || rows > u16::MAX as u32 || cols > u16::MAX as u32 {
                return Err(ConnectError::invalid("pty.size: rows and cols must be between 1 and 65535"));
            }
            Some(PtySize { rows: rows as u16, cols: cols as u16 })
        }
    };
    let tag = str_field(msg, "tag").map(str::to_string);
    // Without `stdin: true` the SDK expects stdin closed (a `cat` must not wait forever).
    let keep_stdin = msg.get("stdin").and_then(Value::as_bool).unwrap_or(false) || pty.is_some();
    Ok((StartProcess { cmd: Command::Argv(argv), env, cwd, pty, limits: Default::default() }, tag, keep_stdin))
}

async fn start(st: E2b, tenant: Tenant, id: String, msg: Value, stream: Stream) -> Response {
    let (req, tag, keep_stdin) = match start_request(&msg) {
        Ok(r) => r,
        Err(e) => return connect::stream_error(e),
    };
    let pty = req.pty.is_some();
    let pid = match st.manager.start_process(&tenant.name, &id, req).await {
        Ok(pid) => pid,
        Err(e) => return connect::stream_error(e.into()),
    };
    if !keep_stdin {
        let _ = st.manager.stdin(&tenant.name, &id, pid, Vec::new(), true).await;
    }
    if let Some(tag) = tag {
        let mut tags = st.e2b.tags.lock().unwrap_or_else(|e| e.into_inner());
        tags.retain(|(s, _), _| st.manager.is_live(s));
        tags.insert((id.clone(), tag), pid);
    }
    let events = match st.manager.attach(&tenant.name, &id, pid).await {
        Ok(rx) => rx,
        Err(e) => return connect::stream_error(e.into()),
    };
    connect::stream_response(stream.deadline, move |tx| pump(tx, pid, pty, events, stream.keepalive))
}

async fn attach(st: E2b, tenant: Tenant, id: String, msg: Value, stream: Stream) -> Response {
    let pid = match selected_pid(&st, &id, &msg) {
        Ok(p) => p,
        Err(e) => return connect::stream_error(e),
    };
    let pty = match st.manager.processes(&tenant.name, &id).await {
        Ok(ps) => ps.iter().any(|p| p.pid == pid && p.pty),
        Err(e) => return connect::stream_error(e.into()),
    };
    let events = match st.manager.attach(&tenant.name, &id, pid).await {
        Ok(rx) => rx,
        Err(e) => return connect::stream_error(e.into()),
    };
    connect::stream_response(stream.deadline, move |tx| pump(tx, pid, pty, events, stream.keepalive))
}

/// Streams `{"event": ...}` messages: start, data (replayed then live), end.
async fn pump(
    tx: StreamTx,
    pid: u32,
    pty: bool,
    mut events: tokio::sync::mpsc::Receiver<AttachEvent>,
    keepalive: Duration,
) -> Result<(), ConnectError> {
    if !connect::send(&tx, json!({"event": {"start": {"pid": pid}}})).await {
        return Ok(());
    }
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + keepalive, keepalive);
    loop {
        let ev = tokio::select! {
            ev = events.recv() => ev,
            _ = tick.tick() => {
                if !connect::send(&tx, json!({"event": {"keepalive": {}}})).await {
                    return Ok(());
                }
                continue;
            }
        };
        let msg = match ev {
            None => {
                return Err(ConnectError::new(Code::Unavailable, "the process's output ended without an exit status"))
            }
            Some(AttachEvent::Stdout(b)) => data_event(if pty { "pty" } else { "stdout" }, &b),
            Some(AttachEvent::Stderr(b)) => data_event("stderr", &b),
            Some(AttachEvent::Truncated { .. }) => continue,
            Some(AttachEvent::Exit { exit_code, signal, .. }) => {
                let _ = connect::send(&tx, end_event(exit_code, signal)).await;
                return Ok(());
            }
        };
        if !connect::send(&tx, msg).await {
            return Ok(());
        }
    }
}

fn data_event(stream: &str, bytes: &[u8]) -> Value {
    json!({"event": {"data": {stream: B64.encode(bytes)}}})
}

/// The end event as envd words it: `exit status N`, or `signal: killed` with -1.
fn end_event(exit_code: Option<i32>, signal: Option<i32>) -> Value {
    let (code, status, exited) = match (exit_code, signal) {
        (Some(c), _) => (c, format!("exit status {c}"), true),
        (None, Some(s)) => (-1, format!("signal: {}", signal_name(s)), false),
        (None, None) => (-1, "unknown".to_string(), false),
    };
    json!({"event": {"end": {"exitCode": code, "exited": exited, "status": status}}})
}

fn signal_name(s: i32) -> String {
    match s {
        libc::SIGKILL => "killed".into(),
        libc::SIGTERM => "terminated".into(),
        libc::SIGINT => "interrupt".into(),
        libc::SIGHUP => "hangup".into(),
        other => format!("signal {other}"),
    }
}

async fn list(st: &E2b, tenant: &Tenant, id: &str) -> Result<Value, ConnectError> {
    let procs = st.manager.processes(&tenant.name, id).await?;
    let tags = st.e2b.tags.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let items: Vec<Value> = procs
        .iter()
        .filter(|p| p.running)
        .map(|p| {
            let tag = tags.iter().find(|((s, _), pid)| s == id && **pid == p.pid).map(|((_, t), _)| t.clone());
            let mut v = json!({
                "pid": p.pid,
                "config": {"cmd": p.cmd.first().cloned().unwrap_or_default(), "args": p.cmd.get(1..).unwrap_or(&[]), "envs": {}},
            });
            if let Some(t) = tag {
                v["tag"] = t.into();
            }
            v
        })
        .collect();
    Ok(json!({"processes": items}))
}

/// The bytes of a `ProcessInput` (`{"stdin": b64}` or `{"pty": b64}`).
pub fn input_bytes(input: Option<&Value>) -> Result<Vec<u8>, ConnectError> {
    let input = input.ok_or_else(|| ConnectError::invalid("input is required"))?;
    if let Some(b) = bytes_field(input, "stdin")? {
        return Ok(b);
    }
    Ok(bytes_field(input, "pty")?.unwrap_or_default())
}

async fn send_input(st: &E2b, tenant: &Tenant, id: &str, msg: &Value) -> Result<Value, ConnectError> {
    let pid = selected_pid(st, id, msg)?;
    let data = input_bytes(msg.get("input"))?;
    st.manager.stdin(&tenant.name, id, pid, data, false).await?;
    Ok(json!({}))
}

async fn send_signal(st: &E2b, tenant: &Tenant, id: &str, msg: &Value) -> Result<Value, ConnectError> {
    let pid = selected_pid(st, id, msg)?;
    let sig = match msg.get("signal") {
        Some(Value::String(s)) if s == "SIGNAL_SIGKILL" => libc::SIGKILL,
        Some(Value::String(s)) if s == "SIGNAL_SIGTERM" => libc::SIGTERM,
        Some(Value::Number(n)) if n.as_i64() == Some(9) || n.as_i64() == Some(15) => n.as_i64().unwrap_or(15) as i32,
        _ => return Err(ConnectError::invalid("signal must be SIGNAL_SIGTERM or SIGNAL_SIGKILL")),
    };
    // envd answers not_found for a process that has ended (the SDK's kill then says false).
    let running = st.manager.processes(&tenant.name, id).await?.iter().any(|p| p.pid == pid && p.running);
    if !running {
        return Err(ConnectError::new(Code::NotFound, format!("process {pid} is not running")));
    }
    st.manager.signal(&tenant.name, id, pid, sig).await?;
    Ok(json!({}))
}

async fn close_stdin(st: &E2b, tenant: &Tenant, id: &str, msg: &Value) -> Result<Value, ConnectError> {
    let pid = selected_pid(st, id, msg)?;
    st.manager.stdin(&tenant.name, id, pid, Vec::new(), true).await?;
    Ok(json!({}))
}

async fn update(st: &E2b, tenant: &Tenant, id: &str, msg: &Value) -> Result<Value, ConnectError> {
    let pid = selected_pid(st, id, msg)?;
    if let Some(size) = msg.get("pty").and_then(|p| p.get("size")) {
        let rows = u32_field(size, "rows").filter(|r| (1..=65535).contains(r));
        let cols = u32_field(size, "cols").filter(|c| (1..=65535).contains(c));
        let (Some(rows), Some(cols)) = (rows, cols) else {
            return Err(ConnectError::invalid("pty.size: rows and cols must be between 1 and 65535"));
        };
        st.manager.resize(&tenant.name, id, pid, rows as u16, cols as u16).await?;
    }
    Ok(json!({}))
}

/// `StreamInput`: envelopes `{"start": {"process": sel}}`, then `{"data": {"input": ...}}`
/// and `{"keepalive": {}}`, until the client closes the body; answered as a stream with one
/// empty message.
async fn stream_input(st: &E2b, tenant: &Tenant, id: &str, req: Request) -> Response {
    match stream_input_inner(st, tenant, id, req).await {
        Ok(()) => connect::stream_response(None, |tx| async move {
            connect::send(&tx, json!({})).await;
            Ok(())
        }),
        Err(e) => connect::stream_error(e),
    }
}

async fn stream_input_inner(st: &E2b, tenant: &Tenant, id: &str, req: Request) -> Result<(), ConnectError> {
    let mut reader = connect::FrameReader::for_request(req.headers())?;
    let mut body = req.into_body().into_data_stream();
    let mut pid = None;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| ConnectError::new(Code::Canceled, format!("the input stream broke: {e}")))?;
        reader.push(&chunk);
        while let Some((_, payload)) = reader.next_frame()? {
            let msg = connect::parse_message(&payload)?;
            if let Some(start) = msg.get("start") {
                pid = Some(selected_pid(st, id, start)?);
            } else if let Some(data) = msg.get("data") {
                let pid = pid.ok_or_else(|| ConnectError::invalid("send the start event before data"))?;
                let bytes = input_bytes(data.get("input"))?;
                st.manager.stdin(&tenant.name, id, pid, bytes, false).await?;
            }
        }
    }
    if reader.pending() > 0 {
        return Err(ConnectError::invalid("the input stream ended inside an envelope"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_requests_map_to_native_processes() {
        let msg = json!({
            "process": {"cmd": "/bin/bash", "args": ["-l", "-c", "echo hi"], "envs": {"A": "1"}, "cwd": "/tmp"},
            "tag": "t1", "stdin": false
        });
        let (p, tag, keep) = start_request(&msg).unwrap();
        assert_eq!(p.cmd.argv(), vec!["/bin/bash", "-l", "-c", "echo hi"]);
        assert_eq!(p.env.get("A").map(String::as_str), Some("1"));
        assert_eq!(p.cwd.as_deref(), Some("/tmp"));
        assert_eq!((tag.as_deref(), keep), (Some("t1"), false));
        let (p, _, keep) =
            start_request(&json!({"process": {"cmd": "sh"}, "pty": {"size": {"rows": 5, "cols": 7}}})).unwrap();
        assert_eq!((p.pty.unwrap().rows, keep), (5, true));
        // Commands start in the home, where relative file paths resolve too.
        let (p, _, _) = start_request(&json!({"process": {"cmd": "sh"}})).unwrap();
        assert_eq!(p.cwd.as_deref(), Some("/home/user"));
        let (p, _, _) = start_request(&json!({"process": {"cmd": "sh", "cwd": "proj"}})).unwrap();
        assert_eq!(p.cwd.as_deref(), Some("/home/user/proj"));
        assert!(start_request(&json!({"process": {"cmd": ""}})).is_err());
        assert!(start_request(&json!({"process": {"cmd": "sh", "args": [1]}})).is_err());
    }

    #[test]
    fn end_events_read_like_envd() {
        assert_eq!(
            end_event(Some(3), None)["event"]["end"],
            json!({"exitCode": 3, "exited": true, "status": "exit status 3"})
        );
        assert_eq!(end_event(None, Some(9))["event"]["end"]["status"], "signal: killed");
        assert_eq!(data_event("stdout", b"hi"), json!({"event": {"data": {"stdout": "aGk="}}}));
    }

    #[test]
    fn inputs_decode_base64() {
        assert_eq!(input_bytes(Some(&json!({"stdin": "aGk="}))).unwrap(), b"hi");
        assert_eq!(input_bytes(Some(&json!({"pty": "aGk"}))).unwrap(), b"hi");
        assert!(input_bytes(Some(&json!({"stdin": "!!"}))).is_err());
        assert!(input_bytes(None).is_err());
    }
}

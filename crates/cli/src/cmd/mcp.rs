//! `safehouse mcp`: the MCP stdio transport. Reads newline-delimited JSON-RPC on stdin,
//! forwards each message to the daemon's streamable HTTP endpoint (`SAFEHOUSE_URL/mcp`,
//! with `SAFEHOUSE_API_KEY`) and writes the answers to stdout, one per line. The tools
//! themselves live in the daemon (crates/mcp), so both transports behave the
//! same and every call is checked, evented and audited there.
//!
//! stdout carries JSON-RPC only; diagnostics go to stderr. When the daemon cannot be
//! reached, or refuses the key, each request is answered with a JSON-RPC error saying
//! which variable to fix. Requests run concurrently, up to 32 at a time (a long command
//! does not hold up a `ping`). On EOF the session is ended (`DELETE /mcp`), which kills the sandboxes it
//! created unless `--keep-sandboxes`; then the process exits 0. A session the daemon no
//! longer knows (it restarted) is opened again transparently.

use std::io::{BufRead, BufReader, Read, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Args;
use serde_json::{json, Value};

use super::client::{Client, DEFAULT_URL};

/// Longest message line read from stdin (the daemon takes bodies up to 1 MiB).
const MAX_LINE: u64 = 4 << 20;
/// Requests forwarded at once; past this, reading stdin waits for the oldest to finish.
const MAX_IN_FLIGHT: usize = 32;
/// JSON-RPC error codes this bridge answers with itself.
const PARSE_ERROR: i64 = -32700;
const SERVER_ERROR: i64 = -32000;

#[derive(Args)]
pub struct McpArgs {
    /// Keep the sandboxes this session creates when it ends (by default they are killed
    /// when the MCP client closes stdin; each also ends at its own timeout)
    #[arg(long)]
    keep_sandboxes: bool,
}

pub fn main(a: McpArgs) -> i32 {
    let bridge = Arc::new(Bridge::new(a.keep_sandboxes));
    match &bridge.target {
        Ok(t) => eprintln!("safehouse mcp: serving MCP on stdio for the daemon at {}", t.base),
        Err(e) => eprintln!("safehouse mcp: {e}"),
    }
    let mut input = BufReader::new(std::io::stdin().lock());
    let mut workers = Vec::new();
    loop {
        let line = match read_line(&mut input) {
            Ok(Some(Line::Message(l))) => l,
            Ok(Some(Line::TooLong)) => {
                bridge.emit(&error(Value::Null, PARSE_ERROR, format!("message longer than {MAX_LINE} bytes")));
                continue;
            }
            Ok(None) => break,
            Err(e) => {
                eprintln!("safehouse mcp: cannot read stdin: {e}");
                break;
            }
        };
        let text = line.trim();
        if text.is_empty() {
            continue;
        }
        let parsed: Option<Value> = serde_json::from_str(text).ok();
        let initialize = parsed.as_ref().is_some_and(is_initialize);
        if initialize {
            // Everything after it needs its session id: answered before the next line is read.
            bridge.handle(text, parsed.as_ref());
        } else {
            let (b, text) = (bridge.clone(), text.to_string());
            workers.retain(|w: &std::thread::JoinHandle<()>| !w.is_finished());
            while workers.len() >= MAX_IN_FLIGHT {
                let _ = workers.remove(0).join();
            }
            workers.push(std::thread::spawn(move || b.handle(&text, parsed.as_ref())));
        }
    }
    bridge.end_session();
    0
}

enum Line {
    Message(String),
    TooLong,
}

/// One line of stdin (`None` at EOF); an over-long line is skipped to its end.
fn read_line(input: &mut impl BufRead) -> std::io::Result<Option<Line>> {
    let mut buf = Vec::new();
    let n = input.by_ref().take(MAX_LINE + 1).read_until(b'\n', &mut buf)?;
    if n == 0 {
        return Ok(None);
    }
    if buf.len() as u64 > MAX_LINE && buf.last() != Some(&b'\n') {
        let mut rest = Vec::new();
        loop {
            rest.clear();
            let m = input.by_ref().take(MAX_LINE).read_until(b'\n', &mut rest)?;
            if m == 0 || rest.last() == Some(&b'\n') {
                break;
            }
        }
        return Ok(Some(Line::TooLong));
    }
    Ok(Some(Line::Message(String::from_utf8_lossy(&buf).into_owned())))
}

fn is_initialize(v: &Value) -> bool {
    v.get("method").and_then(Value::as_str) == Some("initialize") && v.get("id").is_some()
}

fn error(id: Value, code: i64, message: impl Into<String>) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message.into()}})
}

/// The ids of the requests in a message or batch (what needs an answer).
fn request_ids(msg: Option<&Value>) -> Vec<Value> {
    let one = |m: &Value| {
        let id = m.get("id")?;
        m.get("method")?;
        Some(id.clone())
    };
    match msg {
        Some(Value::Array(items)) => items.iter().filter_map(one).collect(),
        Some(m) => one(m).into_iter().collect(),
        // Not JSON: the daemon's parse error would have no id either.
        None => vec![Value::Null],
    }
}

/// Where the daemon is.
struct Target {
    base: String,
    key: String,
    agent: ureq::Agent,
}

/// What one POST brought back.
enum Reply {
    /// A JSON-RPC answer (or batch of answers), to pass on.
    Messages(Value),
    /// Accepted; nothing to answer (notifications).
    Nothing,
    /// The session is unknown to the daemon (404).
    NoSession,
    /// Refused or failed: the message for every request in it.
    Failed(String),
}

struct Bridge {
    target: Result<Target, String>,
    keep: bool,
    session: Mutex<Option<String>>,
    version: Mutex<Option<String>>,
    /// The client's `initialize`, to open a new session if the daemon forgot ours.
    init: Mutex<Option<String>>,
    out: Mutex<std::io::Stdout>,
}

impl Bridge {
    fn new(keep: bool) -> Bridge {
        let target = Client::from_env().map_err(|e| format!("{e:#}")).map(|c| Target {
            base: c.base().to_string(),
            key: c.key().to_string(),
            // No read timeout: a command may legitimately run long (its own timeout_s bounds it).
            agent: c.new_agent().user_agent(concat!("safehouse-mcp/", env!("CARGO_PKG_VERSION"))).build(),
        });
        Bridge {
            target,
            keep,
            session: Mutex::new(None),
            version: Mutex::new(None),
            init: Mutex::new(None),
            out: Mutex::new(std::io::stdout()),
        }
    }

    /// Writes one JSON-RPC document as one line. A closed stdout is the client leaving.
    fn emit(&self, v: &Value) {
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        let line = format!("{v}\n");
        if out.write_all(line.as_bytes()).and_then(|_| out.flush()).is_err() {
            eprintln!("safehouse mcp: stdout is closed");
        }
    }

    fn handle(&self, text: &str, parsed: Option<&Value>) {
        if parsed.is_some_and(is_initialize) {
            *self.init.lock().unwrap_or_else(|e| e.into_inner()) = Some(text.to_string());
        }
        let mut reply = self.post(text);
        if matches!(reply, Reply::NoSession) && !parsed.is_some_and(is_initialize) && self.reopen() {
            reply = self.post(text);
        }
        match reply {
            Reply::Messages(v) => self.emit(&v),
            Reply::Nothing => {}
            Reply::NoSession => self.fail(parsed, "the daemon no longer knows this MCP session; restart the client"),
            Reply::Failed(msg) => self.fail(parsed, &msg),
        }
    }

    fn fail(&self, parsed: Option<&Value>, msg: &str) {
        let ids = request_ids(parsed);
        if ids.is_empty() {
            eprintln!("safehouse mcp: {msg}");
        }
        for id in ids {
            self.emit(&error(id, SERVER_ERROR, msg));
        }
    }

    /// Sends one message (or batch) to the daemon.
    fn post(&self, text: &str) -> Reply {
        let t = match &self.target {
            Ok(t) => t,
            Err(e) => return Reply::Failed(e.clone()),
        };
        let mut req = t
            .agent
            .post(&format!("{}/mcp", t.base))
            .set("Authorization", &format!("Bearer {}", t.key))
            .set("Content-Type", "application/json")
            .set("Accept", "application/json, text/event-stream");
        let is_init = serde_json::from_str::<Value>(text).ok().as_ref().is_some_and(is_initialize);
        if !is_init {
            if let Some(s) = self.session.lock().unwrap_or_else(|e| e.into_inner()).as_deref() {
                req = req.set("Mcp-Session-Id", s);
            }
            if let Some(v) = self.version.lock().unwrap_or_else(|e| e.into_inner()).as_deref() {
                req = req.set("MCP-Protocol-Version", v);
            }
        } else if self.keep {
            req = req.set("Safehouse-Keep-Sandboxes", "true");
        }
        let resp = match req.send_string(text) {
            Ok(r) => r,
            Err(ureq::Error::Status(404, r)) if !is_init => {
                let body = r.into_string().unwrap_or_default();
                if body.contains("no such MCP session") {
                    return Reply::NoSession;
                }
                return jsonrpc_answer(&body).map(Reply::Messages).unwrap_or_else(|| refused(404, &body));
            }
            Err(ureq::Error::Status(status, r)) => {
                let body = r.into_string().unwrap_or_default();
                return match jsonrpc_answer(&body) {
                    Some(v) => Reply::Messages(v),
                    None => refused(status, &body),
                };
            }
            Err(ureq::Error::Transport(e)) => {
                if let Some(tls) = super::tls::failure_in(&e) {
                    return Reply::Failed(format!("cannot talk to the safehouse daemon at {}: {tls}", t.base));
                }
                return Reply::Failed(format!(
                    "cannot reach the safehouse daemon at {} ({e}); start it with `safehouse serve` or set \
                     SAFEHOUSE_URL to where it listens (default {DEFAULT_URL})",
                    t.base
                ));
            }
        };
        if resp.status() == 202 {
            return Reply::Nothing;
        }
        if is_init {
            if let Some(s) = resp.header("mcp-session-id") {
                *self.session.lock().unwrap_or_else(|e| e.into_inner()) = Some(s.to_string());
            }
        }
        let body = resp.into_string().unwrap_or_default();
        let Some(v) = jsonrpc_answer(&body) else {
            return Reply::Failed(format!("the daemon sent something that is not JSON-RPC: {:.200}", body));
        };
        if is_init {
            if let Some(ver) = v.pointer("/result/protocolVersion").and_then(Value::as_str) {
                *self.version.lock().unwrap_or_else(|e| e.into_inner()) = Some(ver.to_string());
            }
        }
        Reply::Messages(v)
    }

    /// Opens a new session with the client's own `initialize` (after a daemon restart).
    fn reopen(&self) -> bool {
        let Some(init) = self.init.lock().unwrap_or_else(|e| e.into_inner()).clone() else { return false };
        eprintln!("safehouse mcp: the daemon forgot the session; opening a new one");
        if !matches!(self.post(&init), Reply::Messages(_)) {
            return false;
        }
        let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"}).to_string();
        matches!(self.post(&initialized), Reply::Nothing | Reply::Messages(_))
    }

    /// `DELETE /mcp`: the daemon ends the session (and kills its sandboxes unless kept).
    fn end_session(&self) {
        let (Ok(t), Some(s)) = (&self.target, self.session.lock().unwrap_or_else(|e| e.into_inner()).clone()) else {
            return;
        };
        let r = t
            .agent
            .delete(&format!("{}/mcp", t.base))
            .timeout(Duration::from_secs(30))
            .set("Authorization", &format!("Bearer {}", t.key))
            .set("Mcp-Session-Id", &s)
            .call();
        if let Err(e) = r {
            eprintln!("safehouse mcp: could not end the session: {e}");
        }
    }
}

/// The body when it is a JSON-RPC answer (an object with `jsonrpc`, or a batch).
fn jsonrpc_answer(body: &str) -> Option<Value> {
    let v: Value = serde_json::from_str(body).ok()?;
    let ok = match &v {
        Value::Object(o) => o.contains_key("jsonrpc"),
        Value::Array(items) => items.iter().all(|i| i.get("jsonrpc").is_some()),
        _ => false,
    };
    ok.then_some(v)
}

/// An API error (a bad key, a refused Origin) as the message for the client.
fn refused(status: u16, body: &str) -> Reply {
    let e = super::client::ApiError::from_body(status, body);
    let hint = if status == 401 { "; check SAFEHOUSE_API_KEY" } else { "" };
    Reply::Failed(format!("the safehouse daemon refused the request (HTTP {status}): {}{hint}", e.message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_of_requests() {
        assert_eq!(request_ids(Some(&json!({"jsonrpc": "2.0", "id": 3, "method": "ping"}))), vec![json!(3)]);
        assert!(request_ids(Some(&json!({"jsonrpc": "2.0", "method": "notifications/x"}))).is_empty());
        let batch = json!([{"id": 1, "method": "a"}, {"method": "n"}, {"id": "z", "method": "b"}]);
        assert_eq!(request_ids(Some(&batch)), vec![json!(1), json!("z")]);
        assert_eq!(request_ids(None), vec![Value::Null]);
    }

    #[test]
    fn answers_and_refusals() {
        assert!(jsonrpc_answer(r#"{"jsonrpc":"2.0","id":1,"result":{}}"#).is_some());
        assert!(jsonrpc_answer(r#"[{"jsonrpc":"2.0","id":1,"result":{}}]"#).is_some());
        assert!(jsonrpc_answer(r#"{"error":{"code":"unauthorized","message":"invalid API key"}}"#).is_none());
        let Reply::Failed(m) = refused(401, r#"{"error":{"code":"unauthorized","message":"invalid API key"}}"#) else {
            panic!()
        };
        assert!(m.contains("invalid API key") && m.contains("SAFEHOUSE_API_KEY"), "{m}");
    }

    #[test]
    fn lines() {
        let mut r = BufReader::new(&b"{\"a\":1}\n\nlast"[..]);
        assert!(matches!(read_line(&mut r).unwrap(), Some(Line::Message(ref l)) if l == "{\"a\":1}\n"));
        assert!(matches!(read_line(&mut r).unwrap(), Some(Line::Message(ref l)) if l == "\n"));
        assert!(matches!(read_line(&mut r).unwrap(), Some(Line::Message(ref l)) if l == "last"));
        assert!(read_line(&mut r).unwrap().is_none());
    }
}

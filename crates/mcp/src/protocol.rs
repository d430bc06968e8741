//! The MCP methods: `initialize` (version negotiation), `ping`, `tools/list`,
//! `tools/call`, and the notifications a client sends. Every `tools/call` is audited like
//! an API call.

use std::time::Instant;

use serde_json::{json, Map, Value};

use super::jsonrpc::{self, Incoming, RpcError, INVALID_PARAMS, INVALID_REQUEST, METHOD_NOT_FOUND};
use super::tools::{self, Ctx};

/// Protocol versions served, newest first.
pub const PROTOCOL_VERSIONS: &[&str] = &["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"];

/// The version to speak: the client's when served, else the newest (the client then
/// decides whether it can go on).
pub fn negotiate(requested: &str) -> &'static str {
    PROTOCOL_VERSIONS.iter().find(|v| **v == requested).copied().unwrap_or(PROTOCOL_VERSIONS[0])
}

/// Whether `version` allows JSON-RPC batches (2025-06-18 removed them).
pub fn allows_batches(version: &str) -> bool {
    version <= "2025-03-26"
}

/// Checks `initialize` params and answers them: the agreed version and the result.
pub fn initialize(id: &Value, params: &Map<String, Value>) -> Result<(&'static str, Value), RpcError> {
    let Some(requested) = params.get("protocolVersion").and_then(Value::as_str) else {
        return Err(RpcError::new(id.clone(), INVALID_PARAMS, "initialize needs params.protocolVersion (a string)"));
    };
    let version = negotiate(requested);
    let result = json!({
        "protocolVersion": version,
        "capabilities": {"tools": {"listChanged": false}},
        "serverInfo": {"name": "safehouse", "title": "safehouse sandboxes", "version": env!("CARGO_PKG_VERSION")},
        "instructions": "Run code and commands in isolated sandboxes. run_code runs Python (or bash) in a \
                         fresh sandbox by default. For several steps, sandbox_create once, then run_command, \
                         write_file, read_file and list_files with its sandbox_id, and sandbox_kill when done. \
                         A sandbox created with storage \"disk\" can be paused (sandbox_pause: its files \
                         kept, no process, no memory) and resumed later (sandbox_resume). \
                         A denied action answers with the reason and what to change.",
    });
    Ok((version, result))
}

/// Answers one message of a session (`initialize` is the transport's, before a session
/// exists). `None` for notifications and responses, which get no answer.
pub async fn handle(ctx: &Ctx<'_>, msg: Value) -> Option<Value> {
    match jsonrpc::classify(msg) {
        Err(e) => Some(e.to_message()),
        Ok(Incoming::Response | Incoming::Notification { .. }) => None,
        Ok(Incoming::Request { id, method, params }) => Some(match request(ctx, &id, &method, params).await {
            Ok(result) => jsonrpc::result(&id, result),
            Err(e) => e.to_message(),
        }),
    }
}

/// The requests served.
#[derive(Debug, PartialEq, Eq)]
enum Method {
    Ping,
    ToolsList,
    ToolsCall,
}

fn method(id: &Value, name: &str) -> Result<Method, RpcError> {
    match name {
        "ping" => Ok(Method::Ping),
        "tools/list" => Ok(Method::ToolsList),
        "tools/call" => Ok(Method::ToolsCall),
        "initialize" => Err(RpcError::new(
            id.clone(),
            INVALID_REQUEST,
            "this session is already initialized; send initialize alone, without Mcp-Session-Id, to open another",
        )),
        other => Err(RpcError::new(
            id.clone(),
            METHOD_NOT_FOUND,
            format!("method {other:?} is not served; this server offers ping, tools/list and tools/call"),
        )),
    }
}

async fn request(ctx: &Ctx<'_>, id: &Value, name: &str, params: Map<String, Value>) -> Result<Value, RpcError> {
    match method(id, name)? {
        Method::Ping => Ok(json!({})),
        Method::ToolsList => Ok(tools::list()),
        Method::ToolsCall => call(ctx, id, params).await,
    }
}

async fn call(ctx: &Ctx<'_>, id: &Value, mut params: Map<String, Value>) -> Result<Value, RpcError> {
    let name = match params.remove("name") {
        Some(Value::String(n)) => n,
        _ => return Err(RpcError::new(id.clone(), INVALID_PARAMS, "tools/call needs params.name (a string)")),
    };
    let args = match params.remove("arguments") {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(a @ Value::Object(_)) => a,
        Some(_) => return Err(RpcError::new(id.clone(), INVALID_PARAMS, "params.arguments must be an object")),
    };
    let started = Instant::now();
    let Some(result) = tools::call(ctx, &name, args).await else {
        return Err(RpcError::new(
            id.clone(),
            INVALID_PARAMS,
            format!("unknown tool {name:?}; tools/list names them: {}", tools::NAMES.join(", ")),
        ));
    };
    audit(ctx, &name, &result, started).await;
    Ok(result.to_value())
}

/// One audit record per tool call: who, which tool, which sandbox, the status the same API
/// call would have had, whether it failed, how long it took.
async fn audit(ctx: &Ctx<'_>, tool: &str, r: &tools::ToolResult, started: Instant) {
    let Some(audit) = ctx.st.manager.audit() else { return };
    let mut rec = safehouse_audit::Record::api(&ctx.tenant.name, "MCP", &format!("tools/call {tool}"), r.status);
    if let Some(o) = rec.data.as_object_mut() {
        o.insert("tool".into(), tool.into());
        o.insert("is_error".into(), r.is_error.into());
        o.insert("session".into(), ctx.session.id.clone().into());
        o.insert("key_id".into(), ctx.tenant.key_id.clone().into());
        o.insert("ms".into(), (started.elapsed().as_micros() as f64 / 1000.0).into());
    }
    if let Some(sb) = r.sandbox.as_deref().filter(|s| safehouse_http::params::is_sandbox_id(s)) {
        rec.sandbox = Some(sb.to_string());
    }
    audit.record(rec).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_negotiation() {
        assert_eq!(negotiate("2025-06-18"), "2025-06-18");
        assert_eq!(negotiate("2025-03-26"), "2025-03-26");
        assert_eq!(negotiate("2025-11-25"), "2025-11-25");
        assert_eq!(negotiate("1999-01-01"), PROTOCOL_VERSIONS[0]);
        assert!(allows_batches("2025-03-26") && allows_batches("2024-11-05"));
        assert!(!allows_batches("2025-06-18") && !allows_batches("2025-11-25"));
    }

    #[test]
    fn methods() {
        assert_eq!(method(&json!(1), "ping"), Ok(Method::Ping));
        assert_eq!(method(&json!(1), "tools/list"), Ok(Method::ToolsList));
        assert_eq!(method(&json!(1), "tools/call"), Ok(Method::ToolsCall));
        let e = method(&json!("q"), "resources/list").unwrap_err();
        assert_eq!((e.code, e.id.clone()), (METHOD_NOT_FOUND, json!("q")));
        assert!(e.message.contains("resources/list"));
        assert_eq!(method(&json!(1), "initialize").unwrap_err().code, INVALID_REQUEST);
    }

    #[test]
    fn initialize_answers() {
        let mut p = Map::new();
        p.insert("protocolVersion".into(), json!("2025-06-18"));
        let (v, r) = initialize(&json!(1), &p).unwrap();
        assert_eq!(v, "2025-06-18");
        assert_eq!(r["protocolVersion"], "2025-06-18");
        assert_eq!(r["serverInfo"]["name"], "safehouse");
        assert!(r["capabilities"]["tools"].is_object());
        let e = initialize(&json!(1), &Map::new()).unwrap_err();
        assert_eq!((e.code, e.id), (INVALID_PARAMS, json!(1)));
    }
}

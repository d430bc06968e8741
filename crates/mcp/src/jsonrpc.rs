//! JSON-RPC 2.0 as MCP uses it: one message or (protocol 2025-03-26 and older) a batch,
//! classified into requests, notifications and the client's responses; answers and errors
//! built here so every error has the same shape.

use serde_json::{json, Map, Value};

/// Invalid JSON.
pub const PARSE_ERROR: i64 = -32700;
/// Valid JSON that is not a JSON-RPC message (or a batch where batches are not allowed).
pub const INVALID_REQUEST: i64 = -32600;
/// A method this server does not serve.
pub const METHOD_NOT_FOUND: i64 = -32601;
/// Params missing or of the wrong shape (also an unknown tool name).
pub const INVALID_PARAMS: i64 = -32602;
/// Server-defined: the daemon refused the call (authentication, session, capacity).
pub const SERVER_ERROR: i64 = -32000;

/// Most messages in one batch.
pub const MAX_BATCH: usize = 64;

/// A request id: MCP allows strings and integers (never null).
pub type Id = Value;

/// One incoming message, classified.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    Request {
        id: Id,
        method: String,
        params: Map<String, Value>,
    },
    Notification {
        method: String,
        params: Map<String, Value>,
    },
    /// A response to a request of ours; the daemon sends none, so these are dropped.
    Response,
}

/// A JSON-RPC error, with the id to answer it under (`Null` when none could be read).
#[derive(Debug, Clone, PartialEq)]
pub struct RpcError {
    pub id: Id,
    pub code: i64,
    pub message: String,
}

impl RpcError {
    /// An error answered under `id`.
    pub fn new(id: Id, code: i64, message: impl Into<String>) -> RpcError {
        RpcError { id, code, message: message.into() }
    }

    /// The error as a response message.
    pub fn to_message(&self) -> Value {
        json!({"jsonrpc": "2.0", "id": self.id, "error": {"code": self.code, "message": self.message}})
    }
}

/// A successful response message.
pub fn result(id: &Id, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

/// A body is one message or a batch of them.
#[derive(Debug)]
pub enum Body {
    /// One message.
    Single(Value),
    /// Several, answered together in one array.
    Batch(Vec<Value>),
}

/// Splits a parsed body into one message or a batch; `batches` says whether the
/// negotiated protocol version allows them (2025-06-18 removed batching).
pub fn split(v: Value, batches: bool) -> Result<Body, RpcError> {
    match v {
        Value::Array(_) if !batches => Err(RpcError::new(
            Value::Null,
            INVALID_REQUEST,
            "JSON-RPC batches are not supported in this protocol version; send one message per request",
        )),
        Value::Array(items) if items.is_empty() => {
            Err(RpcError::new(Value::Null, INVALID_REQUEST, "an empty batch is not a request"))
        }
        Value::Array(items) if items.len() > MAX_BATCH => {
            Err(RpcError::new(Value::Null, INVALID_REQUEST, format!("a batch may hold at most {MAX_BATCH} messages")))
        }
        Value::Array(items) => Ok(Body::Batch(items)),
        other => Ok(Body::Single(other)),
    }
}

/// Classifies one message. A malformed request whose id can be read is answered under it.
pub fn classify(v: Value) -> Result<Incoming, RpcError> {
    let Value::Object(mut obj) = v else {
        return Err(RpcError::new(Value::Null, INVALID_REQUEST, "a JSON-RPC message must be an object"));
    };
    let id = obj.remove("id");
    let answer_id = id.clone().filter(valid_id).unwrap_or(Value::Null);
    let invalid = |msg: &str| RpcError::new(answer_id.clone(), INVALID_REQUEST, msg);
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(invalid("the message must carry \"jsonrpc\": \"2.0\""));
    }
    if id.is_some() && (obj.contains_key("result") || obj.contains_key("error")) && !obj.contains_key("method") {
        return Ok(Incoming::Response);
    }
    let method = match obj.remove("method") {
        Some(Value::String(m)) => m,
        Some(_) => return Err(invalid("\"method\" must be a string")),
        None => return Err(invalid("the message has no \"method\"")),
    };
    let params = match obj.remove("params") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(p)) => p,
        Some(_) => {
            return Err(RpcError::new(answer_id, INVALID_PARAMS, "\"params\" must be an object"));
        }
    };
    match id {
        None => Ok(Incoming::Notification { method, params }),
        Some(id) if valid_id(&id) => Ok(Incoming::Request { id, method, params }),
        Some(_) => Err(invalid("\"id\" must be a string or an integer")),
    }
}

fn valid_id(id: &Value) -> bool {
    id.is_string() || id.is_i64() || id.is_u64()
}

/// Whether a body is exactly one `initialize` request (which opens a session).
pub fn is_initialize(v: &Value) -> bool {
    v.get("method").and_then(Value::as_str) == Some("initialize") && v.get("id").is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_notifications_and_responses() {
        let r = classify(json!({"jsonrpc": "2.0", "id": 7, "method": "ping"})).unwrap();
        assert_eq!(r, Incoming::Request { id: json!(7), method: "ping".into(), params: Map::new() });
        let r = classify(json!({"jsonrpc": "2.0", "id": "a", "method": "tools/call", "params": {"name": "x"}}));
        assert!(matches!(r, Ok(Incoming::Request { ref id, ref params, .. }) if id == "a" && params["name"] == "x"));
        let n = classify(json!({"jsonrpc": "2.0", "method": "notifications/initialized"})).unwrap();
        assert!(matches!(n, Incoming::Notification { ref method, .. } if method == "notifications/initialized"));
        assert_eq!(classify(json!({"jsonrpc": "2.0", "id": 1, "result": {}})).unwrap(), Incoming::Response);
        assert_eq!(classify(json!({"jsonrpc": "2.0", "id": 1, "error": {"code": 1}})).unwrap(), Incoming::Response);
    }

    #[test]
    fn malformed_messages() {
        let e = classify(json!([1])).unwrap_err();
        assert_eq!((e.code, e.id.clone()), (INVALID_REQUEST, Value::Null));
        let e = classify(json!("ping")).unwrap_err();
        assert_eq!(e.code, INVALID_REQUEST);
        // The id is kept when it can be read, so the client can match the error.
        let e = classify(json!({"id": 3, "method": "ping"})).unwrap_err();
        assert_eq!((e.code, e.id.clone()), (INVALID_REQUEST, json!(3)));
        assert!(e.message.contains("jsonrpc"));
        let e = classify(json!({"jsonrpc": "1.0", "id": 3, "method": "ping"})).unwrap_err();
        assert_eq!(e.code, INVALID_REQUEST);
        let e = classify(json!({"jsonrpc": "2.0", "id": 3})).unwrap_err();
        assert!(e.message.contains("method"), "{e:?}");
        let e = classify(json!({"jsonrpc": "2.0", "id": 3, "method": 5})).unwrap_err();
        assert_eq!(e.code, INVALID_REQUEST);
        let e = classify(json!({"jsonrpc": "2.0", "id": null, "method": "ping"})).unwrap_err();
        assert_eq!((e.code, e.id.clone()), (INVALID_REQUEST, Value::Null));
        let e = classify(json!({"jsonrpc": "2.0", "id": 1.5, "method": "ping"})).unwrap_err();
        assert_eq!(e.code, INVALID_REQUEST);
        let e = classify(json!({"jsonrpc": "2.0", "id": 4, "method": "ping", "params": [1]})).unwrap_err();
        assert_eq!((e.code, e.id.clone()), (INVALID_PARAMS, json!(4)));
    }

    #[test]
    fn batches_follow_the_protocol_version() {
        let two = json!([{"jsonrpc": "2.0", "id": 1, "method": "ping"}, {"jsonrpc": "2.0", "method": "x"}]);
        assert!(matches!(split(two.clone(), true), Ok(Body::Batch(ref v)) if v.len() == 2));
        let e = split(two, false).unwrap_err();
        assert_eq!(e.code, INVALID_REQUEST);
        assert!(e.message.contains("batch"));
        assert_eq!(split(json!([]), true).unwrap_err().code, INVALID_REQUEST);
        let big = Value::Array(vec![json!({"jsonrpc": "2.0", "method": "x"}); MAX_BATCH + 1]);
        assert!(split(big, true).unwrap_err().message.contains("at most"));
        assert!(matches!(split(json!({"a": 1}), false), Ok(Body::Single(_))));
    }

    #[test]
    fn message_shapes() {
        let e = RpcError::new(json!(2), METHOD_NOT_FOUND, "no");
        assert_eq!(e.to_message(), json!({"jsonrpc": "2.0", "id": 2, "error": {"code": -32601, "message": "no"}}));
        assert_eq!(result(&json!("x"), json!({})), json!({"jsonrpc": "2.0", "id": "x", "result": {}}));
        assert!(is_initialize(&json!({"jsonrpc": "2.0", "id": 1, "method": "initialize"})));
        assert!(!is_initialize(&json!({"jsonrpc": "2.0", "method": "initialize"})));
        assert!(!is_initialize(&json!([{"jsonrpc": "2.0", "id": 1, "method": "initialize"}])));
    }
}

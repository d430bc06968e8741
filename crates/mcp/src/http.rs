//! The streamable HTTP transport at `/mcp`: `POST` carries JSON-RPC (answered with
//! `application/json`; notifications and responses get 202), `DELETE` ends a session, `GET`
//! (a server-to-client stream, which this server does not offer) is 405. The guard in
//! front of every route has already checked Host, Origin and the API key.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::jsonrpc::{self, Body, RpcError, INVALID_REQUEST, PARSE_ERROR, SERVER_ERROR};
use super::protocol;
use super::session::{OpenError, Session};
use super::tools::Ctx;
use safehouse_http::json::{parse, read_body, MAX_JSON_BODY};
use safehouse_http::params::Caller;
use safehouse_manager::auth::Tenant;
use safehouse_manager::ManagerError;

use crate::Mcp;

/// Names the session on every request after `initialize`.
pub const SESSION_HEADER: &str = "mcp-session-id";
/// The negotiated protocol version, sent by clients after `initialize`.
pub const VERSION_HEADER: &str = "mcp-protocol-version";
/// `true` at initialize: the session's sandboxes outlive it (see `Session::keep_sandboxes`).
pub const KEEP_HEADER: &str = "safehouse-keep-sandboxes";

/// A JSON-RPC document with an HTTP status.
fn answer(status: StatusCode, body: &Value) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

/// An error not tied to a request id.
fn refuse(status: StatusCode, code: i64, message: impl Into<String>) -> Response {
    answer(status, &RpcError::new(Value::Null, code, message).to_message())
}

/// `POST /mcp`: `initialize` opens a session; anything else needs one, and is answered
/// (a request), accepted with 202 (notifications, responses) or refused with a JSON-RPC
/// error and a 4xx status (not JSON-RPC, no session, a batch the version does not allow).
pub async fn post(State(st): State<Mcp>, Caller(tenant): Caller, headers: HeaderMap, req: Request) -> Response {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().to_ascii_lowercase().starts_with("application/json"));
    if !is_json {
        return refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            INVALID_REQUEST,
            "send JSON-RPC with Content-Type: application/json",
        );
    }
    let body = match read_body(req, MAX_JSON_BODY).await {
        Ok(b) => b,
        Err(e) => return refuse(e.status, SERVER_ERROR, e.message),
    };
    let msg: Value = match parse(&body) {
        Ok(v) => v,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, PARSE_ERROR, format!("parse error: {}", e.message)),
    };
    if jsonrpc::is_initialize(&msg) {
        return initialize(&st, &tenant, &headers, msg);
    }
    let session = match session_of(&st, &tenant, &headers) {
        Ok(s) => s,
        Err(e) => return e.into_response(),
    };
    if let Some(v) = headers.get(VERSION_HEADER) {
        let v = v.to_str().unwrap_or("");
        if !protocol::PROTOCOL_VERSIONS.contains(&v) {
            return refuse(
                StatusCode::BAD_REQUEST,
                INVALID_REQUEST,
                format!("unsupported MCP-Protocol-Version {v:?}; served: {}", protocol::PROTOCOL_VERSIONS.join(", ")),
            );
        }
    }
    let ctx = Ctx { st: &st.app, tenant: &tenant, session: &session };
    match jsonrpc::split(msg, protocol::allows_batches(&session.version)) {
        Err(e) => answer(StatusCode::BAD_REQUEST, &e.to_message()),
        Ok(Body::Single(m)) => single(&ctx, m).await,
        Ok(Body::Batch(items)) => batch(&ctx, items).await,
    }
}

async fn single(ctx: &Ctx<'_>, m: Value) -> Response {
    // A message that is not JSON-RPC at all is refused at the HTTP level too.
    if let Err(e) = jsonrpc::classify(m.clone()) {
        return answer(StatusCode::BAD_REQUEST, &e.to_message());
    }
    match protocol::handle(ctx, m).await {
        Some(resp) => answer(StatusCode::OK, &resp),
        None => StatusCode::ACCEPTED.into_response(),
    }
}

async fn batch(ctx: &Ctx<'_>, items: Vec<Value>) -> Response {
    let mut out = Vec::new();
    for m in items {
        if jsonrpc::is_initialize(&m) {
            let id = m.get("id").cloned().unwrap_or(Value::Null);
            out.push(RpcError::new(id, INVALID_REQUEST, "initialize must be sent alone, not in a batch").to_message());
            continue;
        }
        out.extend(protocol::handle(ctx, m).await);
    }
    if out.is_empty() {
        return StatusCode::ACCEPTED.into_response();
    }
    answer(StatusCode::OK, &Value::Array(out))
}

/// Opens a session and answers `initialize` with its id.
fn initialize(st: &Mcp, tenant: &Tenant, headers: &HeaderMap, msg: Value) -> Response {
    let (id, params) = match jsonrpc::classify(msg) {
        Ok(jsonrpc::Incoming::Request { id, params, .. }) => (id, params),
        Ok(_) => return refuse(StatusCode::BAD_REQUEST, INVALID_REQUEST, "initialize must be a request"),
        Err(e) => return answer(StatusCode::BAD_REQUEST, &e.to_message()),
    };
    let (version, result) = match protocol::initialize(&id, &params) {
        Ok(r) => r,
        Err(e) => return answer(StatusCode::BAD_REQUEST, &e.to_message()),
    };
    let keep = headers
        .get(KEEP_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "true" | "1" | "yes"));
    let session = match st.sessions.open(tenant, version, keep) {
        Ok(s) => s,
        Err(OpenError::TenantFull) => {
            return refuse(
                StatusCode::TOO_MANY_REQUESTS,
                SERVER_ERROR,
                format!(
                    "this key's tenant has {} open MCP sessions; end one (DELETE /mcp) or wait an hour",
                    super::session::MAX_PER_TENANT
                ),
            )
        }
        Err(OpenError::DaemonFull) => {
            return refuse(StatusCode::SERVICE_UNAVAILABLE, SERVER_ERROR, "too many open MCP sessions; retry later")
        }
    };
    let mut resp = answer(StatusCode::OK, &jsonrpc::result(&id, result));
    if let Ok(v) = HeaderValue::from_str(&session.id) {
        resp.headers_mut().insert(HeaderName::from_static(SESSION_HEADER), v);
    }
    resp
}

/// Why a request has no session.
enum NoSession {
    Missing,
    Unknown,
}

impl NoSession {
    fn into_response(self) -> Response {
        match self {
            NoSession::Missing => refuse(
                StatusCode::BAD_REQUEST,
                SERVER_ERROR,
                "missing Mcp-Session-Id: send initialize first and echo the Mcp-Session-Id header of its answer",
            ),
            NoSession::Unknown => refuse(
                StatusCode::NOT_FOUND,
                SERVER_ERROR,
                "no such MCP session for this key (it ended, expired, its key was revoked, or the daemon restarted); initialize again",
            ),
        }
    }
}

/// The caller's session named by `Mcp-Session-Id` (another key's is unknown).
fn session_of(st: &Mcp, tenant: &Tenant, headers: &HeaderMap) -> Result<Arc<Session>, NoSession> {
    let id = headers.get(SESSION_HEADER).and_then(|v| v.to_str().ok()).ok_or(NoSession::Missing)?;
    st.sessions.get(tenant, id.trim()).ok_or(NoSession::Unknown)
}

/// `DELETE /mcp`: ends the session and kills the sandboxes it created (unless it was
/// opened with `Safehouse-Keep-Sandboxes: true` or they were created with `keep`).
pub async fn delete(State(st): State<Mcp>, Caller(tenant): Caller, headers: HeaderMap) -> Response {
    let session = match session_of(&st, &tenant, &headers) {
        Ok(s) => s,
        Err(e) => return e.into_response(),
    };
    if st.sessions.close(&tenant, &session.id).is_none() {
        return StatusCode::NO_CONTENT.into_response();
    }
    for id in session.to_kill() {
        // Already gone (expired, killed through the API) is fine.
        if let Err(e) = st.manager.kill(&tenant.name, &id).await {
            if !matches!(e, ManagerError::NotFound | ManagerError::NotRunning(_)) {
                eprintln!("safehouse: mcp: cannot kill {id} at the end of its session: {e}");
            }
        }
    }
    StatusCode::NO_CONTENT.into_response()
}

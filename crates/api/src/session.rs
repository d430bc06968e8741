//! What a browser session (the web console) needs besides the API itself: who the key
//! belongs to, and one-time tickets for WebSocket handshakes, which cannot carry the key
//! (safehouse_manager::auth::tickets).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use safehouse_http::json::ApiJson;
use safehouse_http::params::Caller;
use safehouse_http::ApiError;
use safehouse_http::AppState;
use safehouse_manager::auth::tickets::{ticket_path_ok, TTL};

/// `GET /v1/whoami`: the caller's tenant, key id (none for the bootstrap admin key) and
/// whether it is an admin key.
pub async fn whoami(Caller(tenant): Caller) -> impl IntoResponse {
    Json(json!({ "tenant": tenant.name, "key_id": tenant.key_id, "admin": tenant.is_admin() }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TicketRequest {
    pub path: String,
}

/// `POST /v1/tickets {path}`: a ticket that opens the WebSocket at `path` once, within
/// 30 s, as the caller (`GET path?ticket=T` with `Upgrade: websocket`, no Authorization).
pub async fn ticket(
    State(st): State<AppState>,
    Caller(tenant): Caller,
    ApiJson(req): ApiJson<TicketRequest>,
) -> Result<impl IntoResponse, ApiError> {
    if !ticket_path_ok(&req.path) {
        return Err(ApiError::invalid(
            "path must be the attach route of a process: /v1/sandboxes/{id}/processes/{pid}/attach",
        ));
    }
    let ticket = st.auth.tickets().issue(&tenant, &req.path)?;
    Ok((StatusCode::CREATED, Json(json!({ "ticket": ticket, "path": req.path, "expires_in_s": TTL.as_secs() }))))
}

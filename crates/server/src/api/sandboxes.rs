//! Sandbox lifecycle: create, list, info, kill, timeout.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::errors::ApiError;
use super::json::ApiJson;
use super::params::{QueryPairs, SandboxId};
use super::AppState;
use crate::auth::Tenant;
use crate::manager::{CreateRequest, ListFilter};
use crate::store::parse_state;

/// Longest sandbox lifetime a request may ask for.
pub const MAX_TIMEOUT_S: u64 = 86_400;
/// Most metadata pairs on one sandbox.
pub const MAX_METADATA_KEYS: usize = 64;

fn check_timeout(t: u64) -> Result<(), ApiError> {
    if t == 0 || t > MAX_TIMEOUT_S {
        return Err(ApiError::invalid(format!("timeout_s must be between 1 and {MAX_TIMEOUT_S}")));
    }
    Ok(())
}

pub async fn create(
    State(st): State<AppState>,
    tenant: Tenant,
    ApiJson(mut req): ApiJson<CreateRequest>,
) -> Result<impl IntoResponse, ApiError> {
    check_create(&req)?;
    req.created_by = tenant.key_id.clone();
    let info = st.manager.create(&tenant.name, req).await?;
    Ok((StatusCode::CREATED, Json(info)))
}

/// What the HTTP layer checks in a create request before the manager sees it (shared
/// with the MCP tools).
pub(crate) fn check_create(req: &CreateRequest) -> Result<(), ApiError> {
    if let Some(t) = req.timeout_s {
        check_timeout(t)?;
    }
    super::exec::check_env(&req.env)?;
    if req.metadata.len() > MAX_METADATA_KEYS {
        return Err(ApiError::invalid(format!("metadata has more than {MAX_METADATA_KEYS} keys")));
    }
    Ok(())
}

pub async fn list(State(st): State<AppState>, tenant: Tenant, q: QueryPairs) -> Result<impl IntoResponse, ApiError> {
    q.only(&["metadata.", "state"])?;
    let mut filter = ListFilter::default();
    for (k, v) in &q.0 {
        if let Some(key) = k.strip_prefix("metadata.") {
            filter.metadata.insert(key.to_string(), v.clone());
        } else if k == "state" {
            let s = parse_state(v).ok_or_else(|| {
                ApiError::invalid(format!("state must be running, frozen, killed, expired or failed, not {v:?}"))
            })?;
            filter.state = Some(s);
        }
    }
    let sandboxes = st.manager.list(&tenant.name, &filter).await?;
    Ok(Json(json!({ "sandboxes": sandboxes })))
}

pub async fn info(
    State(st): State<AppState>,
    tenant: Tenant,
    SandboxId(id): SandboxId,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(st.manager.info(&tenant.name, &id).await?))
}

pub async fn kill(
    State(st): State<AppState>,
    tenant: Tenant,
    SandboxId(id): SandboxId,
) -> Result<StatusCode, ApiError> {
    st.manager.kill(&tenant.name, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutRequest {
    timeout_s: u64,
}

pub async fn set_timeout(
    State(st): State<AppState>,
    tenant: Tenant,
    SandboxId(id): SandboxId,
    ApiJson(req): ApiJson<TimeoutRequest>,
) -> Result<impl IntoResponse, ApiError> {
    check_timeout(req.timeout_s)?;
    Ok(Json(st.manager.set_timeout(&tenant.name, &id, req.timeout_s).await?))
}

//! Sandbox lifecycle: create, list, info, kill, timeout.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use safehouse_http::json::ApiJson;
use safehouse_http::params::Caller;
use safehouse_http::params::{QueryPairs, SandboxId};
use safehouse_http::ApiError;
use safehouse_http::AppState;
use safehouse_manager::store::parse_state;
use safehouse_manager::{limits, CreateRequest, ListFilter};

pub async fn create(
    State(st): State<AppState>,
    Caller(tenant): Caller,
    ApiJson(mut req): ApiJson<CreateRequest>,
) -> Result<impl IntoResponse, ApiError> {
    req.created_by = tenant.key_id.clone();
    let info = st.manager.create(&tenant.name, req).await?;
    Ok((StatusCode::CREATED, Json(info)))
}

pub async fn list(
    State(st): State<AppState>,
    Caller(tenant): Caller,
    q: QueryPairs,
) -> Result<impl IntoResponse, ApiError> {
    q.only(&["metadata.", "state"])?;
    let mut filter = ListFilter::default();
    for (k, v) in &q.0 {
        if let Some(key) = k.strip_prefix("metadata.") {
            filter.metadata.insert(key.to_string(), v.clone());
        } else if k == "state" {
            let s = parse_state(v).ok_or_else(|| {
                ApiError::invalid(format!(
                    "state must be running, frozen, paused, killed, expired or failed, not {v:?}"
                ))
            })?;
            filter.state = Some(s);
        }
    }
    let sandboxes = st.manager.list(&tenant.name, &filter).await?;
    Ok(Json(json!({ "sandboxes": sandboxes })))
}

pub async fn info(
    State(st): State<AppState>,
    Caller(tenant): Caller,
    SandboxId(id): SandboxId,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(st.manager.info(&tenant.name, &id).await?))
}

pub async fn kill(
    State(st): State<AppState>,
    Caller(tenant): Caller,
    SandboxId(id): SandboxId,
) -> Result<StatusCode, ApiError> {
    st.manager.kill(&tenant.name, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutRequest {
    pub timeout_s: u64,
}

pub async fn set_timeout(
    State(st): State<AppState>,
    Caller(tenant): Caller,
    SandboxId(id): SandboxId,
    ApiJson(req): ApiJson<TimeoutRequest>,
) -> Result<impl IntoResponse, ApiError> {
    limits::check_timeout(req.timeout_s)?;
    Ok(Json(st.manager.set_timeout(&tenant.name, &id, req.timeout_s).await?))
}

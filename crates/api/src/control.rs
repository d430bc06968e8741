//! The emergency stop and freeze/thaw.

use axum::extract::State;
use axum::response::IntoResponse;
use axum::Json;

use safehouse_http::params::Caller;
use safehouse_http::params::SandboxId;
use safehouse_http::ApiError;
use safehouse_http::AppState;

/// `POST /v1/kill-all`: the admin key stops every sandbox on the daemon; any other key
/// stops its own tenant's. Answers once nothing of them runs.
pub async fn kill_all(State(st): State<AppState>, Caller(tenant): Caller) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(st.manager.kill_all(&tenant.name).await?))
}

pub async fn freeze(
    State(st): State<AppState>,
    Caller(tenant): Caller,
    SandboxId(id): SandboxId,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(st.manager.freeze(&tenant.name, &id).await?))
}

pub async fn thaw(
    State(st): State<AppState>,
    Caller(tenant): Caller,
    SandboxId(id): SandboxId,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(st.manager.thaw(&tenant.name, &id).await?))
}

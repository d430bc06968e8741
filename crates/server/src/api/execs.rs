//! The recent execs and exits observed in a sandbox (a placeholder until the event
//! stream carries them; manager/execwatch.rs).

use axum::extract::State;
use axum::response::IntoResponse;
use axum::Json;

use super::errors::ApiError;
use super::params::SandboxId;
use super::AppState;
use crate::auth::Tenant;

pub async fn list(
    State(st): State<AppState>,
    tenant: Tenant,
    SandboxId(id): SandboxId,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(st.manager.execs(&tenant.name, &id).await?))
}

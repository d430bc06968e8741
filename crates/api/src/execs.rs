//! The recent execs and exits observed in a sandbox (a placeholder until the event
//! stream carries them; manager/execwatch.rs).

use axum::extract::State;
use axum::response::IntoResponse;
use axum::Json;

use safehouse_http::params::Caller;
use safehouse_http::params::SandboxId;
use safehouse_http::ApiError;
use safehouse_http::AppState;

pub async fn list(
    State(st): State<AppState>,
    Caller(tenant): Caller,
    SandboxId(id): SandboxId,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(st.manager.execs(&tenant.name, &id).await?))
}

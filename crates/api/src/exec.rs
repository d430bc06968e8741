//! Run a command to completion.

use axum::extract::State;
use axum::response::IntoResponse;
use axum::Json;

use safehouse_http::json::ApiJson;
use safehouse_http::params::Caller;
use safehouse_http::params::SandboxId;
use safehouse_http::ApiError;
use safehouse_http::AppState;
use safehouse_manager::ExecRequest;

pub async fn exec(
    State(st): State<AppState>,
    Caller(tenant): Caller,
    SandboxId(id): SandboxId,
    ApiJson(req): ApiJson<ExecRequest>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(st.manager.exec(&tenant.name, &id, req).await?))
}

//! The code interpreter: run code in a sandbox's contexts (streamed), and the contexts.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use safehouse_http::code::ndjson;

use safehouse_http::json::ApiJson;
use safehouse_http::params::{Caller, SandboxId};
use safehouse_http::{ApiError, AppState};
use safehouse_manager::ids::is_sandbox_id;
use safehouse_manager::interp::{CodeRequest, CreateContext};

pub async fn run(
    State(st): State<AppState>,
    Caller(tenant): Caller,
    SandboxId(id): SandboxId,
    ApiJson(req): ApiJson<CodeRequest>,
) -> Result<Response, ApiError> {
    Ok(ndjson(st.manager.run_code(&tenant.name, &id, req).await?))
}

pub async fn list(
    State(st): State<AppState>,
    Caller(tenant): Caller,
    SandboxId(id): SandboxId,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(st.manager.code_contexts(&tenant.name, &id).await?))
}

pub async fn create(
    State(st): State<AppState>,
    Caller(tenant): Caller,
    SandboxId(id): SandboxId,
    ApiJson(req): ApiJson<CreateContext>,
) -> Result<impl IntoResponse, ApiError> {
    Ok((StatusCode::CREATED, Json(st.manager.create_code_context(&tenant.name, &id, req).await?)))
}

fn context_path(id: String, ctx: String) -> Result<(String, String), ApiError> {
    if !is_sandbox_id(&id) {
        return Err(ApiError::no_sandbox());
    }
    if ctx.is_empty() || ctx.len() > 128 || !ctx.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return Err(ApiError::not_found(format!(
            "no context {ctx:?} in this sandbox: list them with GET .../contexts"
        )));
    }
    Ok((id, ctx))
}

pub async fn restart(
    State(st): State<AppState>,
    Caller(tenant): Caller,
    Path((id, ctx)): Path<(String, String)>,
) -> Result<impl IntoResponse, ApiError> {
    let (id, ctx) = context_path(id, ctx)?;
    Ok(Json(st.manager.restart_code_context(&tenant.name, &id, &ctx).await?))
}

pub async fn remove(
    State(st): State<AppState>,
    Caller(tenant): Caller,
    Path((id, ctx)): Path<(String, String)>,
) -> Result<impl IntoResponse, ApiError> {
    let (id, ctx) = context_path(id, ctx)?;
    st.manager.remove_code_context(&tenant.name, &id, &ctx).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The warm pools: the admin sees every tenant's, a tenant its own.
pub async fn pool(State(st): State<AppState>, Caller(tenant): Caller) -> impl IntoResponse {
    let only = (tenant.name != safehouse_manager::auth::ADMIN_TENANT).then_some(tenant.name.as_str());
    Json(st.manager.code_pool_status(only))
}

//! Persistence routes: pause and resume, snapshots, forks, volumes (docs/persistence.md).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use safehouse_http::json::ApiJson;
use safehouse_http::params::{Caller, SandboxId};
use safehouse_http::ApiError;
use safehouse_http::AppState;
use safehouse_manager::ids::is_snapshot_id;

/// `POST /v1/sandboxes/{id}/pause`: what was kept (the filesystem; never the memory on
/// this tier).
pub async fn pause(
    State(st): State<AppState>,
    Caller(tenant): Caller,
    SandboxId(id): SandboxId,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(st.manager.pause(&tenant.name, &id).await?))
}

/// `POST /v1/sandboxes/{id}/resume`: the sandbox, running again.
pub async fn resume(
    State(st): State<AppState>,
    Caller(tenant): Caller,
    SandboxId(id): SandboxId,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(st.manager.resume(&tenant.name, &id).await?))
}

/// `POST /v1/sandboxes/{id}/snapshots` → 201 with the snapshot.
pub async fn snapshot(
    State(st): State<AppState>,
    Caller(tenant): Caller,
    SandboxId(id): SandboxId,
) -> Result<impl IntoResponse, ApiError> {
    Ok((StatusCode::CREATED, Json(st.manager.snapshot(&tenant.name, &id).await?)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForkRequest {
    #[serde(default = "one")]
    pub count: u32,
}

fn one() -> u32 {
    1
}

/// `POST /v1/sandboxes/{id}/fork {count}` → 201 with the new sandboxes.
pub async fn fork(
    State(st): State<AppState>,
    Caller(tenant): Caller,
    SandboxId(id): SandboxId,
    ApiJson(req): ApiJson<ForkRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let sandboxes = st.manager.fork(&tenant.name, &id, req.count).await?;
    Ok((StatusCode::CREATED, Json(json!({ "sandboxes": sandboxes }))))
}

pub async fn list_snapshots(State(st): State<AppState>, Caller(tenant): Caller) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(json!({ "snapshots": st.manager.list_snapshots(&tenant.name).await? })))
}

fn snapshot_id(id: &str) -> Result<(), ApiError> {
    if is_snapshot_id(id) {
        Ok(())
    } else {
        Err(ApiError::not_found("no such snapshot"))
    }
}

pub async fn get_snapshot(
    State(st): State<AppState>,
    Caller(tenant): Caller,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    snapshot_id(&id)?;
    Ok(Json(st.manager.get_snapshot(&tenant.name, &id).await.map_err(|_| ApiError::not_found("no such snapshot"))?))
}

pub async fn delete_snapshot(
    State(st): State<AppState>,
    Caller(tenant): Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    snapshot_id(&id)?;
    match st.manager.delete_snapshot(&tenant.name, &id).await {
        Err(safehouse_manager::ManagerError::NotFound) => Err(ApiError::not_found("no such snapshot")),
        r => r.map(|_| StatusCode::NO_CONTENT).map_err(Into::into),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeRequest {
    name: String,
    /// `"1GiB"` or a number of bytes.
    size: serde_json::Value,
}

impl VolumeRequest {
    /// The size asked for, in bytes.
    pub fn bytes(&self) -> Result<u64, ApiError> {
        match &self.size {
            serde_json::Value::Number(n) => n
                .as_u64()
                .ok_or_else(|| ApiError::invalid("size must be a whole number of bytes or a size like \"1GiB\"")),
            serde_json::Value::String(s) => {
                safehouse_policy::units::parse_size(s).map_err(|e| ApiError::invalid(format!("size: {e}")))
            }
            _ => Err(ApiError::invalid("size must be a whole number of bytes or a size like \"1GiB\"")),
        }
    }
}

pub async fn create_volume(
    State(st): State<AppState>,
    Caller(tenant): Caller,
    ApiJson(req): ApiJson<VolumeRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let size = req.bytes()?;
    Ok((StatusCode::CREATED, Json(st.manager.create_volume(&tenant.name, &req.name, size).await?)))
}

pub async fn list_volumes(State(st): State<AppState>, Caller(tenant): Caller) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(json!({ "volumes": st.manager.list_volumes(&tenant.name).await? })))
}

pub async fn delete_volume(
    State(st): State<AppState>,
    Caller(tenant): Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    match st.manager.delete_volume(&tenant.name, &name).await {
        Err(safehouse_manager::ManagerError::NotFound) => Err(ApiError::not_found(format!("no volume named {name:?}"))),
        r => r.map(|_| StatusCode::NO_CONTENT).map_err(Into::into),
    }
}

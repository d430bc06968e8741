//! The files API on a volume, without a sandbox: `GET`/`PUT /v1/volumes/{name}/files`,
//! `GET /v1/volumes/{name}/fs/list`, `GET .../fs/stat`, `POST .../fs/mkdir`,
//! `POST .../fs/move`, `DELETE .../fs`. The same
//! `safehouse_hostfs` operations as a sandbox's files, rooted at the volume's directory
//! (every path resolved beneath it: a symlink a sandbox planted there cannot lead out),
//! as the sandbox user that owns the volume's files.

use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use safehouse_hostfs::{self as files, SandboxRoot};
use safehouse_http::files::{blocking, check_path, file_body};
use safehouse_http::json::ApiJson;
use safehouse_http::params::{Caller, QueryPairs};
use safehouse_http::{ApiError, AppState};
use safehouse_manager::auth::Tenant;
use safehouse_manager::ManagerError;

use crate::files::{depth_param, path_param, write_upload, MkdirRequest, MoveRequest};

async fn root(st: &AppState, tenant: &Tenant, name: &str) -> Result<SandboxRoot, ApiError> {
    match st.manager.volume_root(&tenant.name, name).await {
        Err(ManagerError::NotFound) => Err(ApiError::not_found(format!("no volume named {name:?}"))),
        r => Ok(r?),
    }
}

/// The files API names a sandbox's quota; a volume's is its own size cap.
fn volume_error(name: &str) -> impl Fn(ApiError) -> ApiError + '_ {
    move |mut e| {
        if e.code == "quota_exceeded" {
            e.message =
                format!("volume {name:?} is full (its size cap): delete files in it, or copy them to a larger volume");
        }
        e
    }
}

pub async fn download(
    State(st): State<AppState>,
    Caller(tenant): Caller,
    Path(name): Path<String>,
    q: QueryPairs,
) -> Result<Response, ApiError> {
    q.only(&["path"])?;
    let path = path_param(&q)?;
    let root = root(&st, &tenant, &name).await?;
    let (file, _info) = blocking(move || files::open_read(&root, &path)).await?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], file_body(file)).into_response())
}

pub async fn upload(
    State(st): State<AppState>,
    Caller(tenant): Caller,
    Path(name): Path<String>,
    q: QueryPairs,
    req: Request,
) -> Result<Response, ApiError> {
    q.only(&["path"])?;
    let path = path_param(&q)?;
    let root = root(&st, &tenant, &name).await?;
    let info = write_upload(root, &path, req).await.map_err(volume_error(&name))?;
    Ok((StatusCode::CREATED, Json(info)).into_response())
}

pub async fn list(
    State(st): State<AppState>,
    Caller(tenant): Caller,
    Path(name): Path<String>,
    q: QueryPairs,
) -> Result<Response, ApiError> {
    q.only(&["path", "depth"])?;
    let path = path_param(&q)?;
    let depth = depth_param(&q)?;
    let root = root(&st, &tenant, &name).await?;
    let entries = blocking(move || files::list(&root, &path, depth)).await?;
    Ok(Json(json!({ "entries": entries })).into_response())
}

pub async fn stat(
    State(st): State<AppState>,
    Caller(tenant): Caller,
    Path(name): Path<String>,
    q: QueryPairs,
) -> Result<Response, ApiError> {
    q.only(&["path"])?;
    let path = path_param(&q)?;
    let root = root(&st, &tenant, &name).await?;
    Ok(Json(blocking(move || files::stat(&root, &path)).await?).into_response())
}

pub async fn remove(
    State(st): State<AppState>,
    Caller(tenant): Caller,
    Path(name): Path<String>,
    q: QueryPairs,
) -> Result<StatusCode, ApiError> {
    q.only(&["path", "recursive"])?;
    let path = path_param(&q)?;
    let recursive = q.flag("recursive")?;
    let root = root(&st, &tenant, &name).await?;
    blocking(move || files::remove(&root, &path, recursive)).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn mkdir(
    State(st): State<AppState>,
    Caller(tenant): Caller,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<MkdirRequest>,
) -> Result<Response, ApiError> {
    check_path(&req.path)?;
    let root = root(&st, &tenant, &name).await?;
    let info = blocking(move || files::mkdir(&root, &req.path, req.parents)).await.map_err(volume_error(&name))?;
    Ok((StatusCode::CREATED, Json(info)).into_response())
}

pub async fn rename(
    State(st): State<AppState>,
    Caller(tenant): Caller,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<MoveRequest>,
) -> Result<Response, ApiError> {
    check_path(&req.from)?;
    check_path(&req.to)?;
    let root = root(&st, &tenant, &name).await?;
    Ok(Json(blocking(move || files::rename(&root, &req.from, &req.to)).await?).into_response())
}

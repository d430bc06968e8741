//! File routes: download, upload, list, stat, mkdir, move, remove, watch. Parameters are
//! checked here; the sandbox is resolved through the manager (an unknown sandbox is 404 as
//! everywhere else); the operations themselves are `safehouse_hostfs`, run on the blocking
//! pool.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::json;
use tokio::io::AsyncWriteExt;

use safehouse_hostfs::{self as files, FileError, SandboxRoot, MAX_LIST_DEPTH};
use safehouse_http::files::{blocking, check_path, file_body, WatchSlot};
use safehouse_http::json::ApiJson;
use safehouse_http::params::{Caller, QueryPairs, SandboxId};
use safehouse_http::{ApiError, AppState};
use safehouse_manager::auth::Tenant;

/// An upload whose body makes no progress this long is abandoned (slow POST).
pub const UPLOAD_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
async fn root(st: &AppState, tenant: &Tenant, id: &str) -> Result<SandboxRoot, ApiError> {
    Ok(st.manager.root(&tenant.name, id).await?)
}

pub(crate) fn path_param(q: &QueryPairs) -> Result<String, ApiError> {
    let p = q.require("path")?;
    check_path(p)?;
    Ok(p.to_string())
}

pub async fn download(
    State(st): State<AppState>,
    Caller(tenant): Caller,
    SandboxId(id): SandboxId,
    q: QueryPairs,
) -> Result<Response, ApiError> {
    q.only(&["path"])?;
    let path = path_param(&q)?;
    let root = root(&st, &tenant, &id).await?;
    let (file, _info) = blocking(move || files::open_read(&root, &path)).await?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], file_body(file)).into_response())
}

pub async fn upload(
    State(st): State<AppState>,
    Caller(tenant): Caller,
    SandboxId(id): SandboxId,
    q: QueryPairs,
    req: Request,
) -> Result<Response, ApiError> {
    q.only(&["path"])?;
    let path = path_param(&q)?;
    let root = root(&st, &tenant, &id).await?;
    let info = write_upload(root, &path, req).await?;
    st.manager.note(&id, "file.written", json!({ "path": path, "size": info.size }));
    Ok((StatusCode::CREATED, Json(info)).into_response())
}

/// Writes a request's body to `path` under `root` (parents made), synced; its description.
pub(crate) async fn write_upload(root: SandboxRoot, path: &str, req: Request) -> Result<files::FileInfo, ApiError> {
    let (r, p) = (root.clone(), path.to_string());
    let (file, new_file) = blocking(move || files::create_write(&r, &p, true)).await?;
    let mut file = tokio::fs::File::from_std(file);
    let mut body = req.into_body().into_data_stream();
    loop {
        let chunk = match tokio::time::timeout(UPLOAD_IDLE_TIMEOUT, body.next()).await {
            Err(_) => {
                return Err(ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "request_timeout",
                    format!("the upload stalled for {}s", UPLOAD_IDLE_TIMEOUT.as_secs()),
                ))
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => return Err(ApiError::invalid(format!("cannot read the upload: {e}"))),
            Ok(Some(Ok(c))) => c,
        };
        file.write_all(&chunk).await.map_err(|e| FileError::from_io(path, e))?;
    }
    file.flush().await.map_err(|e| FileError::from_io(path, e))?;
    file.sync_data().await.map_err(|e| FileError::from_io(path, e))?;
    drop(file);
    new_file.keep();
    let p = path.to_string();
    blocking(move || files::stat(&root, &p)).await
}

pub async fn list(
    State(st): State<AppState>,
    Caller(tenant): Caller,
    SandboxId(id): SandboxId,
    q: QueryPairs,
) -> Result<Response, ApiError> {
    q.only(&["path", "depth"])?;
    let path = path_param(&q)?;
    let depth = depth_param(&q)?;
    let root = root(&st, &tenant, &id).await?;
    let entries = blocking(move || files::list(&root, &path, depth)).await?;
    Ok(Json(json!({ "entries": entries })).into_response())
}

/// `depth` of a listing: 1 unless given, at most [`MAX_LIST_DEPTH`].
pub(crate) fn depth_param(q: &QueryPairs) -> Result<u32, ApiError> {
    match q.get("depth") {
        None => Ok(1),
        Some(d) => d
            .parse::<u32>()
            .ok()
            .filter(|d| (1..=MAX_LIST_DEPTH).contains(d))
            .ok_or_else(|| ApiError::invalid(format!("depth must be between 1 and {MAX_LIST_DEPTH}"))),
    }
}

pub async fn stat(
    State(st): State<AppState>,
    Caller(tenant): Caller,
    SandboxId(id): SandboxId,
    q: QueryPairs,
) -> Result<Response, ApiError> {
    q.only(&["path"])?;
    let path = path_param(&q)?;
    let root = root(&st, &tenant, &id).await?;
    Ok(Json(blocking(move || files::stat(&root, &path)).await?).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MkdirRequest {
    pub path: String,
    #[serde(default)]
    pub parents: bool,
}

pub async fn mkdir(
    State(st): State<AppState>,
    Caller(tenant): Caller,
    SandboxId(id): SandboxId,
    ApiJson(req): ApiJson<MkdirRequest>,
) -> Result<Response, ApiError> {
    check_path(&req.path)?;
    let root = root(&st, &tenant, &id).await?;
    let path = req.path.clone();
    let info = blocking(move || files::mkdir(&root, &req.path, req.parents)).await?;
    st.manager.note(&id, "dir.created", json!({ "path": path }));
    Ok((StatusCode::CREATED, Json(info)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoveRequest {
    pub from: String,
    pub to: String,
}

pub async fn rename(
    State(st): State<AppState>,
    Caller(tenant): Caller,
    SandboxId(id): SandboxId,
    ApiJson(req): ApiJson<MoveRequest>,
) -> Result<Response, ApiError> {
    check_path(&req.from)?;
    check_path(&req.to)?;
    let root = root(&st, &tenant, &id).await?;
    let data = json!({ "from": req.from, "to": req.to });
    let info = blocking(move || files::rename(&root, &req.from, &req.to)).await?;
    st.manager.note(&id, "file.moved", data);
    Ok(Json(info).into_response())
}

pub async fn remove(
    State(st): State<AppState>,
    Caller(tenant): Caller,
    SandboxId(id): SandboxId,
    q: QueryPairs,
) -> Result<StatusCode, ApiError> {
    q.only(&["path", "recursive"])?;
    let path = path_param(&q)?;
    let recursive = q.flag("recursive")?;
    let root = root(&st, &tenant, &id).await?;
    let data = json!({ "path": path, "recursive": recursive });
    blocking(move || files::remove(&root, &path, recursive)).await?;
    st.manager.note(&id, "file.deleted", data);
    Ok(StatusCode::NO_CONTENT)
}

pub async fn watch(
    State(st): State<AppState>,
    Caller(tenant): Caller,
    SandboxId(id): SandboxId,
    q: QueryPairs,
) -> Result<Response, ApiError> {
    q.only(&["path", "recursive"])?;
    let path = path_param(&q)?;
    let recursive = q.flag("recursive")?;
    // Every watch holds one of root's inotify instances (a host-wide budget) and keeps the
    // sandbox's filesystem referenced: a fixed number at a time, and none past the sandbox.
    let slot = WatchSlot::take().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "capacity",
            "too many file watches are open; close one and retry",
        )
    })?;
    let root = root(&st, &tenant, &id).await?;
    let mut watcher = blocking(move || files::watch(&root, &path, recursive)).await?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Event>(256);
    let manager = st.manager.clone();
    // The watcher blocks in poll(2) for at most a second at a time, so it notices a gone
    // client (closed channel) or a gone sandbox within a second.
    tokio::task::spawn_blocking(move || {
        let _slot = slot;
        while !tx.is_closed() && manager.is_live(&id) {
            let events = match watcher.next_events(Duration::from_secs(1)) {
                Ok(ev) => ev,
                Err(_) => return,
            };
            let ts = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0);
            for ev in events {
                let data = json!({"type": ev.kind, "path": ev.path, "ts": ts});
                if tx.blocking_send(Event::default().event("fs").data(data.to_string())).is_err() {
                    return;
                }
            }
        }
    });
    let stream = tokio_stream_from(rx).map(Ok::<_, Infallible>);
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()).into_response())
}

fn tokio_stream_from<T: Send + 'static>(rx: tokio::sync::mpsc::Receiver<T>) -> impl futures_util::Stream<Item = T> {
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|v| (v, rx)) })
}

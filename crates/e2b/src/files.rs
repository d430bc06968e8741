//! The in-sandbox file transfer of E2B: `GET /files?path=` streams a file out, `POST
//! /files?path=` writes one from an `application/octet-stream` body or from each part of a
//! `multipart/form-data` body (a part's file name is its path when `path` is not given),
//! streamed to disk, answered with `[{"name", "type": "file", "path"}]`. Errors are
//! `{"code": status, "message"}` with the status of the native file routes.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::{Stream, StreamExt};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

use super::connect::ConnectError;
use super::filesystem::{absolute, blocking, root};
use safehouse_hostfs::{self as files, FileError};
use safehouse_http::files::file_body;
use safehouse_http::params::parse_query;
use safehouse_manager::auth::Tenant;

use crate::E2b;

/// An upload whose body makes no progress this long is abandoned.
const IDLE: Duration = Duration::from_secs(60);

/// An error as the SDK's envd HTTP client reads it: a status and `message`.
struct HttpError(StatusCode, String);

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({"code": self.0.as_u16(), "message": self.1}))).into_response()
    }
}

impl From<ConnectError> for HttpError {
    fn from(e: ConnectError) -> HttpError {
        HttpError(e.code.http_status(), e.message)
    }
}

impl From<FileError> for HttpError {
    fn from(e: FileError) -> HttpError {
        ConnectError::from(e).into()
    }
}

fn bad(msg: impl Into<String>) -> HttpError {
    HttpError(StatusCode::BAD_REQUEST, msg.into())
}

/// `path` (made absolute) and refusal of what safehouse does not do: another `username`
/// than E2B's `user` (commands run as the sandbox's one user) and signed URLs.
fn params(req: &Request) -> Result<Option<String>, HttpError> {
    let pairs = parse_query(req.uri().query().unwrap_or("")).map_err(|e| bad(e.message))?;
    let mut path = None;
    for (k, v) in pairs {
        match k.as_str() {
            "path" => path = Some(absolute(&v)?),
            "username" if v.is_empty() || v == "user" => {}
            "username" => return Err(bad(format!("username {v:?}: safehouse sandboxes have one user; omit it"))),
            "signature" | "signature_expiration" => {
                return Err(bad("signed file URLs are not supported by safehouse yet (docs/e2b.md)"))
            }
            other => return Err(bad(format!("unknown parameter {other:?}; /files takes path and username"))),
        }
    }
    Ok(path)
}

pub async fn download(st: &E2b, tenant: &Tenant, id: &str, req: Request) -> Response {
    match download_inner(st, tenant, id, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn download_inner(st: &E2b, tenant: &Tenant, id: &str, req: Request) -> Result<Response, HttpError> {
    let path = params(&req)?.ok_or_else(|| bad("path is required"))?;
    let root = root(st, tenant, id).await?;
    let (file, info) = blocking(move || files::open_read(&root, &path)).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_LENGTH, info.size.to_string()),
        ],
        file_body(file),
    )
        .into_response())
}

pub async fn upload(st: &E2b, tenant: &Tenant, id: &str, req: Request) -> Response {
    match upload_inner(st, tenant, id, req).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn upload_inner(st: &E2b, tenant: &Tenant, id: &str, req: Request) -> Result<Value, HttpError> {
    let path = params(&req)?;
    if req.headers().contains_key(header::CONTENT_ENCODING) {
        return Err(bad("compressed uploads are not supported yet; upload without gzip"));
    }
    let ctype = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let mut written = Vec::new();
    if ctype.starts_with("multipart/form-data") {
        let boundary = multer::parse_boundary(&ctype).map_err(|e| bad(format!("bad multipart content type: {e}")))?;
        let mut form = multer::Multipart::new(req.into_body().into_data_stream(), boundary);
        loop {
            let field = match form.next_field().await {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => return Err(bad(format!("bad multipart body: {e}"))),
            };
            let target = match (&path, field.file_name()) {
                (Some(p), _) if written.is_empty() => p.clone(),
                (_, Some(name)) if !name.is_empty() => absolute(name)?,
                _ => return Err(bad("each part needs a file name (its path), or give ?path= for one file")),
            };
            let chunks = futures_util::stream::unfold(field, |mut f| async move {
                match f.chunk().await {
                    Ok(Some(c)) => Some((Ok(c), f)),
                    Ok(None) => None,
                    Err(e) => Some((Err(e.to_string()), f)),
                }
            });
            written.push(write_file(st, tenant, id, &target, chunks).await?);
        }
    } else {
        let target = path.ok_or_else(|| bad("path is required for an octet-stream upload"))?;
        let chunks = req.into_body().into_data_stream().map(|c| c.map_err(|e| e.to_string()));
        written.push(write_file(st, tenant, id, &target, chunks).await?);
    }
    Ok(Value::Array(written))
}

/// Streams `chunks` into `path` (parents created), then notes `file.written` as the native
/// upload does.
async fn write_file(
    st: &E2b,
    tenant: &Tenant,
    id: &str,
    path: &str,
    chunks: impl Stream<Item = Result<Bytes, String>>,
) -> Result<Value, HttpError> {
    let root = root(st, tenant, id).await?;
    let (r, p) = (root.clone(), path.to_string());
    let file = blocking(move || files::create_write(&r, &p, true)).await?;
    let mut file = tokio::fs::File::from_std(file);
    let mut chunks = std::pin::pin!(chunks);
    loop {
        let chunk = match tokio::time::timeout(IDLE, chunks.next()).await {
            Err(_) => {
                return Err(HttpError(
                    StatusCode::REQUEST_TIMEOUT,
                    format!("the upload stalled for {}s", IDLE.as_secs()),
                ))
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => return Err(bad(format!("cannot read the upload: {e}"))),
            Ok(Some(Ok(c))) => c,
        };
        file.write_all(&chunk).await.map_err(|e| FileError::from_io(path, e))?;
    }
    file.flush().await.map_err(|e| FileError::from_io(path, e))?;
    file.sync_data().await.map_err(|e| FileError::from_io(path, e))?;
    drop(file);
    let p = path.to_string();
    let info = blocking(move || files::stat(&root, &p)).await?;
    st.manager.note(id, "file.written", json!({ "path": info.path, "size": info.size }));
    Ok(json!({"name": info.name, "type": "file", "path": info.path}))
}

//! The in-sandbox file transfer of E2B: `GET /files?path=` streams a file out, `POST
//! /files?path=` writes one from an `application/octet-stream` body or from each part of a
//! `multipart/form-data` body (a part's file name is its path when `path` is not given),
//! streamed to disk, answered with `[{"name", "type": "file", "path"}]`. Errors are
//! `{"code": status, "message"}` with the status of the native file routes. An octet-stream
//! upload may be gzip-compressed (`Content-Encoding: gzip`, the SDK's `gzip=True`): it is
//! decompressed as it streams to disk, bounded by the sandbox's disk limit like any write.
//! File metadata (`X-Metadata-*`, envd 0.6.2) is refused by name: the front advertises envd
//! 0.6.1.

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
pub(crate) struct HttpError(pub(crate) StatusCode, pub(crate) String);

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

pub(crate) fn bad(msg: impl Into<String>) -> HttpError {
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
                return Err(bad(
                    "a signed file URL is used as is, without the E2b-Sandbox-Id and X-Access-Token headers",
                ))
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
    if let Some(name) = req.headers().keys().find(|k| k.as_str().starts_with("x-metadata-")) {
        return Err(bad(format!(
            "{name}: file metadata (X-Metadata-* headers, envd 0.6.2) is not supported by safehouse, which serves \
             envd 0.6.1; upload without metadata"
        )));
    }
    let gzip = match req.headers().get(header::CONTENT_ENCODING).map(|v| v.to_str().unwrap_or("?").trim()) {
        None | Some("") | Some("identity") => false,
        Some(e) if e.eq_ignore_ascii_case("gzip") => true,
        Some(other) => {
            return Err(HttpError(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("Content-Encoding {other:?}: an upload is gzip or uncompressed"),
            ))
        }
    };
    let ctype = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    if gzip && ctype.starts_with("multipart/form-data") {
        return Err(bad(
            "Content-Encoding gzip applies to octet-stream uploads (Content-Type: application/octet-stream)",
        ));
    }
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
            written.push(write_file(st, tenant, id, &target, chunks, false).await?);
        }
    } else {
        let target = path.ok_or_else(|| bad("path is required for an octet-stream upload"))?;
        let chunks = req.into_body().into_data_stream().map(|c| c.map_err(|e| e.to_string()));
        written.push(write_file(st, tenant, id, &target, chunks, gzip).await?);
    }
    Ok(Value::Array(written))
}

/// Where upload chunks go: the file, or a gzip decoder writing to it (on the blocking pool:
/// its memory stays one chunk and a 32 KiB window, whatever the compression ratio).
enum Sink {
    Plain(tokio::fs::File),
    Gzip(Option<flate2::write::GzDecoder<std::fs::File>>),
}

fn gzip_error(path: &str, e: std::io::Error) -> HttpError {
    match e.kind() {
        std::io::ErrorKind::InvalidData | std::io::ErrorKind::InvalidInput | std::io::ErrorKind::UnexpectedEof => {
            bad(format!("the upload is not valid gzip (Content-Encoding: gzip): {e}"))
        }
        _ => FileError::from_io(path, e).into(),
    }
}

impl Sink {
    async fn write(&mut self, path: &str, chunk: Bytes) -> Result<(), HttpError> {
        match self {
            Sink::Plain(f) => f.write_all(&chunk).await.map_err(|e| FileError::from_io(path, e).into()),
            Sink::Gzip(slot) => {
                use std::io::Write;
                let Some(mut dec) = slot.take() else { return Err(bad("the upload failed before")) };
                let dec = tokio::task::spawn_blocking(move || dec.write_all(&chunk).map(|()| dec))
                    .await
                    .map_err(|e| HttpError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
                    .map_err(|e| gzip_error(path, e))?;
                *slot = Some(dec);
                Ok(())
            }
        }
    }

    async fn finish(self, path: &str) -> Result<(), HttpError> {
        match self {
            Sink::Plain(mut f) => {
                f.flush().await.map_err(|e| FileError::from_io(path, e))?;
                f.sync_data().await.map_err(|e| FileError::from_io(path, e))?;
                Ok(())
            }
            Sink::Gzip(None) => Err(bad("the upload failed before")),
            Sink::Gzip(Some(dec)) => tokio::task::spawn_blocking(move || dec.finish().and_then(|f| f.sync_data()))
                .await
                .map_err(|e| HttpError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
                .map_err(|e| gzip_error(path, e)),
        }
    }
}

/// Streams `chunks` (gzip-decompressed when `gzip`) into `path` (parents created), then
/// notes `file.written` as the native upload does.
async fn write_file(
    st: &E2b,
    tenant: &Tenant,
    id: &str,
    path: &str,
    chunks: impl Stream<Item = Result<Bytes, String>>,
    gzip: bool,
) -> Result<Value, HttpError> {
    let root = root(st, tenant, id).await?;
    let info = stream_into(root, path, chunks, gzip, true).await?;
    st.manager.note(id, "file.written", json!({ "path": info.path, "size": info.size }));
    Ok(json!({"name": info.name, "type": "file", "path": info.path}))
}

/// Streams `chunks` into `path` under `root` (parents made when `parents`): a file this
/// call made is removed again when the upload fails. What was written, described.
pub(crate) async fn stream_into(
    root: files::SandboxRoot,
    path: &str,
    chunks: impl Stream<Item = Result<Bytes, String>>,
    gzip: bool,
    parents: bool,
) -> Result<files::FileInfo, HttpError> {
    let (r, p) = (root.clone(), path.to_string());
    let (file, new_file) = blocking(move || files::create_write(&r, &p, parents)).await?;
    let mut sink = if gzip {
        Sink::Gzip(Some(flate2::write::GzDecoder::new(file)))
    } else {
        Sink::Plain(tokio::fs::File::from_std(file))
    };
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
        sink.write(path, chunk).await?;
    }
    sink.finish(path).await?;
    new_file.keep();
    let p = path.to_string();
    Ok(blocking(move || files::stat(&root, &p)).await?)
}

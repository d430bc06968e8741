//! E2B's volumes, onto the tenant's safehouse volumes (docs/persistence.md):
//!
//! - the control plane, key in `X-API-Key`: `POST /volumes {name}` (made with the default
//!   size cap, [`VOLUME_SIZE`]), `GET /volumes`, `GET /volumes/{id}`, `DELETE /volumes/{id}`
//!   (refused while a sandbox has it mounted, naming them). A volume's `volumeID` is its
//!   name, which is also what `volumeMounts` on create names.
//! - the volume content API (`/volumecontent/{id}/file|dir|path`), which the SDK's `Volume`
//!   calls at `E2B_VOLUME_API_URL` with the volume's token as `Authorization: Bearer`. The
//!   token is issued to the API key that asked (create, get) and works only while that key
//!   is active, like a sandbox's access token ([`crate::token`]); the files are the same
//!   `safehouse_hostfs` operations as the native `/v1/volumes/{name}/files` routes, every
//!   path resolved beneath the volume (a symlink a sandbox planted cannot lead out).
//!
//! Volume files belong to the sandbox user: `uid`, `gid` and `mode` on a write, and the
//! metadata update (`PATCH .../path`), are refused by name.

use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::StreamExt;
use serde_json::{json, Value};

use safehouse_hostfs::{self as files, FileInfo, FileType, SandboxRoot};
use safehouse_http::files::file_body;
use safehouse_http::params::{parse_query, Caller};
use safehouse_http::ApiError;
use safehouse_manager::auth::Tenant;
use safehouse_manager::store::VolumeRecord;
use safehouse_manager::ManagerError;

use crate::control::{answer, body_json};
use crate::files::{bad, stream_into, HttpError};
use crate::{e2b_error, token, E2b};

/// The size cap of a volume made through the E2B front (E2B's API gives none): 1 GiB.
pub const VOLUME_SIZE: u64 = 1 << 30;
/// Where the content API is.
pub const CONTENT_PREFIX: &str = "/volumecontent/";

/// What a volume token's MAC is over: never a sandbox id.
fn subject(name: &str) -> String {
    format!("volume/{name}")
}

fn no_volume(id: &str) -> ApiError {
    let shown: String = id.chars().filter(|c| c.is_ascii_graphic()).take(64).collect();
    ApiError::not_found(format!("volume {shown} not found"))
}

fn volume_json(v: &VolumeRecord) -> Value {
    json!({"volumeID": v.name, "name": v.name})
}

fn with_token(st: &E2b, tenant: &Tenant, v: &VolumeRecord) -> Value {
    let mut out = volume_json(v);
    out["token"] = st.e2b.access_token(&subject(&v.name), tenant, st.auth.admin_hash()).into();
    out
}

async fn find(st: &E2b, tenant: &Tenant, id: &str) -> Result<VolumeRecord, ApiError> {
    st.manager.list_volumes(&tenant.name).await?.into_iter().find(|v| v.name == id).ok_or_else(|| no_volume(id))
}

/// `POST /volumes {name}`: 201 with the volume and its token.
pub async fn create(State(st): State<E2b>, Caller(tenant): Caller, req: Request) -> Response {
    answer(
        async {
            let body = body_json(req).await?;
            if let Some(k) = body.keys().find(|k| k.as_str() != "name") {
                return Err(ApiError::invalid(format!("{k} is not supported by safehouse yet; remove it")));
            }
            let name = body.get("name").and_then(Value::as_str).ok_or_else(|| ApiError::invalid("name is required"))?;
            let v = st.manager.create_volume(&tenant.name, name, VOLUME_SIZE).await?;
            Ok((StatusCode::CREATED, Json(with_token(&st, &tenant, &v))).into_response())
        }
        .await,
    )
}

/// `GET /volumes`: the caller's volumes.
pub async fn list(State(st): State<E2b>, Caller(tenant): Caller) -> Response {
    answer(
        async {
            let all = st.manager.list_volumes(&tenant.name).await?;
            Ok(Json(all.iter().map(volume_json).collect::<Vec<_>>()).into_response())
        }
        .await,
    )
}

/// `GET /volumes/{id}`: the volume and a token for the caller's key.
pub async fn get(State(st): State<E2b>, Caller(tenant): Caller, Path(id): Path<String>) -> Response {
    answer(async { Ok(Json(with_token(&st, &tenant, &find(&st, &tenant, &id).await?)).into_response()) }.await)
}

/// `DELETE /volumes/{id}`: 204; 404 for one the caller does not have; 409 while mounted.
pub async fn delete(State(st): State<E2b>, Caller(tenant): Caller, Path(id): Path<String>) -> Response {
    answer(
        async {
            match st.manager.delete_volume(&tenant.name, &id).await {
                Ok(()) => Ok(StatusCode::NO_CONTENT.into_response()),
                Err(ManagerError::NotFound) => Err(no_volume(&id)),
                Err(e) => Err(e.into()),
            }
        }
        .await,
    )
}

// ---- the content API ------------------------------------------------------------------

/// E2B's `VolumeEntryStat`.
fn entry_json(info: &FileInfo) -> Value {
    let kind = match info.kind {
        FileType::Dir => "directory",
        FileType::File => "file",
        FileType::Symlink => "symlink",
        FileType::Other => "unknown",
    };
    let mut v = json!({
        "name": info.name, "type": kind, "path": info.path, "size": info.size, "mode": info.mode,
        "uid": info.owner.0, "gid": info.owner.1,
        "atime": info.atime, "mtime": info.mtime, "ctime": info.ctime,
    });
    if let Some(t) = &info.symlink_target {
        v["target"] = t.clone().into();
    }
    v
}

/// The caller of a content call: the token's key, still active, and its tenant's volume.
async fn authorize(st: &E2b, headers: &HeaderMap, id: &str) -> Result<(Tenant, SandboxRoot), HttpError> {
    let unauthorized = |m: &str| HttpError(StatusCode::UNAUTHORIZED, m.to_string());
    let tok = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            unauthorized("send the volume's token (Volume.create / Volume.connect give it) as Authorization: Bearer")
        })?;
    let holder = st
        .e2b
        .check_token(&subject(id), Some(tok), st.auth.admin_hash())
        .map_err(|_| unauthorized("this token is not the volume's token; get one with Volume.connect(volume_id)"))?;
    let tenant = match holder {
        token::Holder::Admin => Tenant { name: safehouse_manager::auth::ADMIN_TENANT.into(), key_id: None },
        token::Holder::Key(key) => st.auth.active_key(&key).await.map_err(|_| {
            unauthorized(
                "the API key this volume token was issued to has been revoked; connect with an active key \
                 (Volume.connect) for a new token",
            )
        })?,
    };
    let root = match st.manager.volume_root(&tenant.name, id).await {
        Ok(r) => r,
        Err(ManagerError::NotFound) => return Err(HttpError(StatusCode::NOT_FOUND, no_volume(id).message)),
        Err(e) => {
            let e = ApiError::from(e);
            return Err(HttpError(e.status, e.message));
        }
    };
    Ok((tenant, root))
}

/// The query of a content call: `path` (required, absolute inside the volume) and the
/// options each route takes.
struct Query {
    path: String,
    depth: u32,
    force: bool,
}

fn query(uri: &axum::http::Uri, takes: &[&str]) -> Result<Query, HttpError> {
    let pairs = parse_query(uri.query().unwrap_or("")).map_err(|e| bad(e.message))?;
    let mut q = Query { path: String::new(), depth: 1, force: false };
    for (k, v) in pairs {
        match k.as_str() {
            "path" => {
                q.path = if v.starts_with('/') { v } else { format!("/{v}") };
                safehouse_http::files::check_path(&q.path).map_err(|e| bad(e.message))?;
            }
            "uid" | "gid" | "mode" if takes.contains(&k.as_str()) => {
                return Err(bad(format!(
                    "{k}: volume files belong to the sandbox user with the default mode; omit {k} (safehouse)"
                )))
            }
            "depth" if takes.contains(&"depth") => {
                q.depth = v.parse().ok().filter(|d| (1..=32).contains(d)).ok_or_else(|| bad("depth must be 1-32"))?
            }
            "force" if takes.contains(&"force") => q.force = v == "true" || v == "1",
            other => return Err(bad(format!("unknown parameter {other:?} for this volume content call"))),
        }
    }
    if q.path.is_empty() {
        return Err(bad("path is required"));
    }
    Ok(q)
}

async fn run<T: Send + 'static>(f: impl FnOnce() -> files::Result<T> + Send + 'static) -> Result<T, HttpError> {
    crate::filesystem::blocking(f).await.map_err(HttpError::from)
}

/// A content call (the data-plane layer sends every `/volumecontent/` request here): Host
/// and Origin as for every request, the token, then the call, which (with what it streams)
/// lasts only as long as the token's key.
pub async fn content(st: &E2b, req: Request) -> Response {
    let refuse = |e: ApiError| e2b_error(e.status, e.message);
    if let Err(e) = st.hosts.check_host(req.headers(), req.uri()) {
        return refuse(e);
    }
    if let Err(e) = st.hosts.check_origin(req.headers()) {
        return refuse(e);
    }
    let rest = req.uri().path()[CONTENT_PREFIX.len()..].to_string();
    let (id, what) = rest.split_once('/').unwrap_or((rest.as_str(), ""));
    let (tenant, root) = match authorize(st, req.headers(), id).await {
        Ok(v) => v,
        Err(e) => return e2b_error(e.0, e.1),
    };
    let refused = || e2b_error(StatusCode::UNAUTHORIZED, safehouse_manager::auth::revocation::REVOKED_MESSAGE);
    let call = async {
        match call(root, id, what, req).await {
            Ok(r) => r,
            Err(e) => e2b_error(e.0, e.1),
        }
    };
    safehouse_http::revoked::run_with(st.auth.lease(&tenant), call, refused, None).await
}

async fn call(root: SandboxRoot, id: &str, what: &str, req: Request) -> Result<Response, HttpError> {
    let uri = req.uri().clone();
    match (req.method().clone(), what) {
        (Method::GET, "file") => {
            let q = query(&uri, &[])?;
            let (file, info) = run(move || files::open_read(&root, &q.path)).await?;
            Ok((
                [
                    (header::CONTENT_TYPE, "application/octet-stream".to_string()),
                    (header::CONTENT_LENGTH, info.size.to_string()),
                ],
                file_body(file),
            )
                .into_response())
        }
        (Method::PUT, "file") => {
            let q = query(&uri, &["uid", "gid", "mode", "force"])?;
            let chunks = req.into_body().into_data_stream().map(|c| c.map_err(|e| e.to_string()));
            let info = stream_into(root, &q.path, chunks, false, q.force).await.map_err(|e| full(e, id))?;
            Ok((StatusCode::CREATED, Json(entry_json(&info))).into_response())
        }
        (Method::GET, "dir") => {
            let q = query(&uri, &["depth"])?;
            let entries = run(move || files::list(&root, &q.path, q.depth)).await?;
            Ok(Json(entries.iter().map(entry_json).collect::<Vec<_>>()).into_response())
        }
        (Method::POST, "dir") => {
            let q = query(&uri, &["uid", "gid", "mode", "force"])?;
            let info = run(move || files::mkdir(&root, &q.path, q.force)).await.map_err(|e| full(e, id))?;
            Ok((StatusCode::CREATED, Json(entry_json(&info))).into_response())
        }
        (Method::GET, "path") => {
            let q = query(&uri, &[])?;
            Ok(Json(entry_json(&run(move || files::stat(&root, &q.path)).await?)).into_response())
        }
        (Method::DELETE, "path") => {
            let q = query(&uri, &[])?;
            run(move || files::remove(&root, &q.path, true)).await?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        (Method::PATCH, "path") => Err(HttpError(
            StatusCode::NOT_IMPLEMENTED,
            "updating a volume entry's owner or mode: not supported by safehouse yet (volume files belong to the \
             sandbox user)"
                .into(),
        )),
        (m, _) => Err(HttpError(
            StatusCode::NOT_FOUND,
            format!("{m} /volumecontent/{{id}}/{what} is not a route of the volume content API (docs/e2b.md)"),
        )),
    }
}

/// Over the volume's size cap: say so (not the sandbox disk's words).
fn full(e: HttpError, id: &str) -> HttpError {
    if e.0 == StatusCode::PAYLOAD_TOO_LARGE {
        HttpError(e.0, format!("volume {id:?} is full (its size cap, {} MiB): delete files in it", VOLUME_SIZE >> 20))
    } else {
        e
    }
}

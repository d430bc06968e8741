//! Templates: the images and Dockerfile templates of the daemon's image store, which
//! `template` on create names (docs/images.md).

use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::StreamExt;
use serde_json::json;
use tokio::io::AsyncWriteExt;

use safehouse_http::params::{Caller, QueryPairs};
use safehouse_http::ApiError;
use safehouse_http::AppState;
use safehouse_manager::template_build::{BuildRequest, BuildStarted, MAX_CONTEXT_BYTES};
use safehouse_manager::ManagerError;

use crate::files::UPLOAD_IDLE_TIMEOUT;

/// `GET /v1/templates`: every template and image a sandbox can start from, with how many
/// sandboxes run on each. The store is the host's: every tenant sees the same list.
pub async fn list(State(st): State<AppState>, Caller(_tenant): Caller) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(json!({ "templates": st.manager.templates().await? })))
}

/// `DELETE /v1/templates/{name}`: the name goes (its layers at the next `image gc`);
/// 409 while a sandbox runs on it. The admin key only: the store is the operator's.
pub async fn remove(
    State(st): State<AppState>,
    Caller(tenant): Caller,
    Path(name): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    if !tenant.is_admin() {
        return Err(ApiError::forbidden("templates are removed with the admin key only"));
    }
    Ok(Json(st.manager.remove_template(&name).await?))
}

/// `POST /v1/templates?tag=NAME[&dockerfile=PATH][&no_cache=1][&build_arg.KEY=VALUE...][&wait=1]`
/// with a tar of the build context (plain, gzip or zstd; at most 1 GiB) as the body: the
/// Dockerfile built as `safehouse template build` builds it, into this daemon's store.
/// 202 with `{build_id, tag}` at once (progress as `template.build.*` events under the
/// build id on `GET /v1/events`), or with `wait=1` the template (201) once built, or the
/// error naming the failed step. The admin key only: RUN steps reach the package
/// registries of the host's configuration.
pub async fn build(
    State(st): State<AppState>,
    Caller(tenant): Caller,
    q: QueryPairs,
    req: Request,
) -> Result<Response, ApiError> {
    if !tenant.is_admin() {
        return Err(ApiError::forbidden("templates are built with the admin key only"));
    }
    q.only(&["tag", "dockerfile", "no_cache", "wait", "build_arg."])?;
    let build = BuildRequest {
        tag: q.require("tag")?.to_string(),
        dockerfile: q.get("dockerfile").unwrap_or("Dockerfile").to_string(),
        no_cache: q.flag("no_cache")?,
        build_args: q
            .0
            .iter()
            .filter_map(|(k, v)| k.strip_prefix("build_arg.").map(|k| (k.to_string(), v.clone())))
            .collect(),
    };
    build.check()?;
    let wait = q.flag("wait")?;
    let (id, tar) = st.manager.reserve_build()?;
    if let Err(e) = receive_context(&tar, req).await {
        st.manager.release_build(&tar);
        return Err(e);
    }
    let task = st.manager.build_template(id.clone(), tar, build.clone()).await;
    if !wait {
        let started = BuildStarted { build_id: id, tag: build.tag };
        return Ok((StatusCode::ACCEPTED, Json(started)).into_response());
    }
    let template = task.await.map_err(|e| ApiError::from(ManagerError::Internal(e.to_string())))??;
    Ok((StatusCode::CREATED, Json(json!({ "build_id": id, "template": template }))).into_response())
}

/// The request's body into `path`, at most [`MAX_CONTEXT_BYTES`].
async fn receive_context(path: &std::path::Path, req: Request) -> Result<(), ApiError> {
    let mut file = tokio::fs::File::create(path)
        .await
        .map_err(|e| ApiError::from(ManagerError::Internal(format!("create {}: {e}", path.display()))))?;
    let mut body = req.into_body().into_data_stream();
    let mut total: u64 = 0;
    loop {
        let chunk = match tokio::time::timeout(UPLOAD_IDLE_TIMEOUT, body.next()).await {
            Err(_) => {
                return Err(ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "request_timeout",
                    format!("the build context stalled for {}s", UPLOAD_IDLE_TIMEOUT.as_secs()),
                ))
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => return Err(ApiError::invalid(format!("cannot read the build context: {e}"))),
            Ok(Some(Ok(c))) => c,
        };
        total += chunk.len() as u64;
        if total > MAX_CONTEXT_BYTES {
            return Err(ApiError::too_large(MAX_CONTEXT_BYTES as usize));
        }
        file.write_all(&chunk)
            .await
            .map_err(|e| ApiError::from(ManagerError::Internal(format!("write {}: {e}", path.display()))))?;
    }
    if total == 0 {
        return Err(ApiError::invalid(
            "the body is empty: send a tar of the build context (with its Dockerfile), e.g. `tar -C DIR -c .`",
        ));
    }
    file.flush().await.map_err(|e| ApiError::from(ManagerError::Internal(e.to_string())))
}

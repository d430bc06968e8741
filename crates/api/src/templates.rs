//! Templates: the images and Dockerfile templates of the daemon's image store, which
//! `template` on create names (docs/images.md).

use axum::extract::{Path, State};
use axum::response::IntoResponse;
use axum::Json;
use serde_json::json;

use safehouse_http::params::Caller;
use safehouse_http::ApiError;
use safehouse_http::AppState;

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

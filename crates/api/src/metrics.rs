//! Metrics: one sandbox's (JSON), the daemon's and the fleet's (Prometheus text). The
//! layer counting requests by route and status is `safehouse_http::metrics`.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;

use safehouse_http::params::Caller;
use safehouse_http::params::SandboxId;
use safehouse_http::ApiError;
use safehouse_http::AppState;

pub async fn sandbox(
    State(st): State<AppState>,
    Caller(tenant): Caller,
    SandboxId(id): SandboxId,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(st.manager.metrics(&tenant.name, &id).await?))
}

/// `GET /metrics`: admin only, as it names every tenant's sandboxes.
pub async fn prometheus(State(st): State<AppState>, Caller(tenant): Caller) -> Result<impl IntoResponse, ApiError> {
    if !tenant.is_admin() {
        return Err(ApiError::forbidden(
            "GET /metrics covers every tenant and needs the admin key; use GET /v1/sandboxes/{id}/metrics for yours",
        ));
    }
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], st.manager.prometheus()))
}

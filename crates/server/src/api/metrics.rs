//! Metrics: one sandbox's (JSON), the daemon's and the fleet's (Prometheus text), and the
//! middleware counting requests by route and status.

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::errors::ApiError;
use super::params::SandboxId;
use super::AppState;
use crate::auth::Tenant;

pub async fn sandbox(
    State(st): State<AppState>,
    tenant: Tenant,
    SandboxId(id): SandboxId,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(st.manager.metrics(&tenant.name, &id).await?))
}

/// `GET /metrics`: admin only, as it names every tenant's sandboxes.
pub async fn prometheus(State(st): State<AppState>, tenant: Tenant) -> Result<impl IntoResponse, ApiError> {
    if !tenant.is_admin() {
        return Err(ApiError::forbidden(
            "GET /metrics covers every tenant and needs the admin key; use GET /v1/sandboxes/{id}/metrics for yours",
        ));
    }
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], st.manager.prometheus()))
}

/// Counts each routed request under its route template (never the raw path, which would
/// make a label per sandbox id).
pub async fn count(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_string());
    let method = req.method().clone();
    let resp = next.run(req).await;
    if let Some(route) = route {
        st.manager.count_request(method.as_str(), &route, resp.status().as_u16());
    }
    resp
}

//! `GET /v1/quota`: what a tenant holds against its quotas (docs/quotas.md).

use axum::extract::State;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::json;

use safehouse_http::params::{Caller, QueryPairs};
use safehouse_http::{ApiError, AppState};

/// The caller's tenant's usage and limits (null: unlimited); the admin key may name any
/// tenant (`tenant=`).
pub async fn quota(
    State(st): State<AppState>,
    Caller(caller): Caller,
    q: QueryPairs,
) -> Result<impl IntoResponse, ApiError> {
    q.only(&["tenant"])?;
    let tenant = match q.get("tenant") {
        None => caller.name.clone(),
        Some(t) if t == caller.name => caller.name.clone(),
        Some(t) if caller.is_admin() => {
            safehouse_manager::auth::validate_tenant(t)?;
            t.to_string()
        }
        Some(_) => return Err(ApiError::forbidden("only the admin key may see another tenant's quota")),
    };
    let (usage, limits) = st.manager.quota_usage(&tenant);
    let limits = limits.unwrap_or_default();
    let rate = |r: Option<safehouse_manager::quota::Rate>| r.map(|r| r.to_string());
    Ok(Json(json!({
        "tenant": tenant,
        "usage": { "sandboxes": usage.sandboxes, "memory_bytes": usage.memory, "disk_bytes": usage.disk },
        "limits": {
            "sandboxes": limits.sandboxes,
            "memory_bytes": limits.memory,
            "disk_bytes": limits.disk,
            "creates": rate(limits.creates),
            "execs": rate(limits.execs),
            "events": rate(limits.events),
        },
    })))
}

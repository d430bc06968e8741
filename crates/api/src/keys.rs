//! API keys (admin only): create, list, revoke.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::json;

use safehouse_http::json::ApiJson;
use safehouse_http::params::is_key_id;
use safehouse_http::params::Caller;
use safehouse_http::ApiError;
use safehouse_http::AppState;
use safehouse_manager::auth::Tenant;
use safehouse_manager::store::KeyRecord;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    pub tenant: String,
    pub name: Option<String>,
}

/// A key as listed: never the secret, never its hash.
#[derive(Serialize)]
pub struct KeyView {
    id: String,
    tenant: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    created_at: String,
    revoked_at: Option<String>,
}

impl From<KeyRecord> for KeyView {
    fn from(k: KeyRecord) -> KeyView {
        KeyView { id: k.id, tenant: k.tenant, name: k.name, created_at: k.created_at, revoked_at: k.revoked_at }
    }
}

fn admin_only(t: &Tenant) -> Result<(), ApiError> {
    if t.is_admin() {
        Ok(())
    } else {
        Err(ApiError::forbidden("only an admin key may manage keys"))
    }
}

pub async fn create(
    State(st): State<AppState>,
    Caller(tenant): Caller,
    ApiJson(req): ApiJson<CreateKey>,
) -> Result<impl IntoResponse, ApiError> {
    admin_only(&tenant)?;
    let (rec, secret) = st.auth.create_key(&req.tenant, req.name.as_deref()).await?;
    // `e2b_key`: the same key in the form E2B SDKs accept (docs/e2b.md).
    let e2b_key = safehouse_manager::auth::e2b_form(&secret);
    let mut body =
        json!({"id": rec.id, "key": secret, "e2b_key": e2b_key, "tenant": rec.tenant, "created_at": rec.created_at});
    if let Some(n) = rec.name {
        body["name"] = json!(n);
    }
    Ok((StatusCode::CREATED, Json(body)))
}

pub async fn list(State(st): State<AppState>, Caller(tenant): Caller) -> Result<impl IntoResponse, ApiError> {
    admin_only(&tenant)?;
    let keys = st.auth.store().blocking(|s| s.list_keys()).await?;
    let keys: Vec<KeyView> = keys.into_iter().map(KeyView::from).collect();
    Ok(Json(json!({ "keys": keys })))
}

pub async fn revoke(
    State(st): State<AppState>,
    Caller(tenant): Caller,
    id: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<StatusCode, ApiError> {
    admin_only(&tenant)?;
    let no_key = || ApiError::not_found("no such key; see GET /v1/keys");
    let Ok(Path(id)) = id else { return Err(no_key()) };
    if !is_key_id(&id) {
        return Err(no_key());
    }
    // Ends, besides the key, everything opened with it: streams and WebSockets (through
    // their leases) and MCP sessions (the MCP front observes revocations). Its sandboxes
    // keep running (docs/api.md).
    if st.auth.revoke_key(&id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(no_key())
    }
}

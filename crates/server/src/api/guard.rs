//! The middleware every request passes first: Host and Origin allowlist, then the API key.
//! It wraps the whole router, fallbacks included, so a path no route matches (`//v1/...`,
//! `/v1/../healthz`, `/V1/...`) still needs a key. Only exactly `GET /healthz` and
//! `GET /v1/openapi.json` are public.

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::errors::ApiError;
use super::AppState;
use crate::auth::AuthError;

/// Longest `Authorization` value considered.
const MAX_AUTH_HEADER: usize = 512;

pub fn is_public(method: &Method, path: &str) -> bool {
    method == Method::GET && (path == "/healthz" || path == "/v1/openapi.json")
}

pub async fn guard(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let mut resp = match check(&state, &mut req).await {
        Ok(()) => {
            // Handed out again for the audit layer, which wraps this one.
            let who = req.extensions().get::<crate::auth::Tenant>().cloned();
            let mut resp = next.run(req).await;
            if let Some(who) = who {
                resp.extensions_mut().insert(who);
            }
            resp
        }
        Err(e) => e.into_response(),
    };
    let h = resp.headers_mut();
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    resp
}

async fn check(state: &AppState, req: &mut Request) -> Result<(), ApiError> {
    state.hosts.check_host(req.headers(), req.uri())?;
    state.hosts.check_origin(req.headers())?;
    if is_public(req.method(), req.uri().path()) {
        return Ok(());
    }
    let key = bearer(req)?;
    let tenant = state.auth.authenticate(key).await?;
    req.extensions_mut().insert(tenant);
    Ok(())
}

/// The key of the one `Authorization: Bearer KEY` header.
fn bearer(req: &Request) -> Result<&str, ApiError> {
    let mut values = req.headers().get_all(header::AUTHORIZATION).iter();
    let value = match (values.next(), values.next()) {
        (None, _) => return Err(AuthError::Missing.into()),
        (Some(v), None) => v,
        (Some(_), Some(_)) => return Err(ApiError::unauthorized("send exactly one Authorization header")),
    };
    let value = value.to_str().map_err(|_| ApiError::from(AuthError::Invalid))?;
    if value.len() > MAX_AUTH_HEADER {
        return Err(AuthError::Invalid.into());
    }
    let (scheme, key) = value.split_once(' ').ok_or(AuthError::Missing)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(ApiError::unauthorized("use `Authorization: Bearer KEY`"));
    }
    let key = key.trim();
    if key.is_empty() || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(AuthError::Invalid.into());
    }
    Ok(key)
}

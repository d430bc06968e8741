//! The middleware every request passes first: Host and Origin allowlist, then the API key,
//! whose [`crate::auth::Lease`] the request carries and runs under (`super::revoked`).
//! It wraps the whole router, fallbacks included, so a path no route matches (`//v1/...`,
//! `/v1/../healthz`, `/V1/...`) still needs a key. Only exactly `GET /healthz` and
//! `GET /v1/openapi.json` are public, and the web console's static files (`/`, `/ui`,
//! `/ui/...`: a page and scripts that call the API with the key the user types).
//!
//! A WebSocket handshake from a browser cannot carry `Authorization`: it may carry a
//! one-time ticket instead (`?ticket=`, from `POST /v1/tickets`), good for the one path it
//! was issued for; the parameter is taken out of the query before the handler sees it.

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::errors::ApiError;
use super::AppState;
use crate::auth::revocation::REVOKED_MESSAGE;
use crate::auth::{AuthError, Tenant};

/// Longest `Authorization` value considered.
const MAX_AUTH_HEADER: usize = 512;

pub fn is_public(method: &Method, path: &str) -> bool {
    (method == Method::GET && (path == "/healthz" || path == "/v1/openapi.json"))
        || ((method == Method::GET || method == Method::HEAD) && safehouse_console::is_console_path(path))
}

pub async fn guard(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let e2b = crate::e2b::control::is_control_path(req.uri().path());
    let mut resp = match check(&state, &mut req).await {
        Ok(None) => next.run(req).await,
        Ok(Some(who)) => {
            // The request, and whatever it opens, lasts only as long as its key.
            let lease = state.auth.lease(&who);
            req.extensions_mut().insert(lease.clone());
            let refused = move || {
                let e = ApiError::unauthorized(REVOKED_MESSAGE);
                if e2b {
                    crate::e2b::e2b_error(e.status, e.message)
                } else {
                    e.into_response()
                }
            };
            let mut resp = super::revoked::run(lease, next.run(req), refused).await;
            // Handed out again for the audit layer, which wraps this one.
            resp.extensions_mut().insert(who);
            resp
        }
        // The E2B SDK reads its own error shape.
        Err(e) if e2b => crate::e2b::e2b_error(e.status, e.message),
        Err(e) => e.into_response(),
    };
    let h = resp.headers_mut();
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    resp
}

/// Host, Origin and the key: the caller's tenant (put in the request's extensions), or
/// `None` for a public route.
async fn check(state: &AppState, req: &mut Request) -> Result<Option<Tenant>, ApiError> {
    state.hosts.check_host(req.headers(), req.uri())?;
    state.hosts.check_origin(req.headers())?;
    if is_public(req.method(), req.uri().path()) {
        return Ok(None);
    }
    if let Some(tenant) = websocket_ticket(state, req).await? {
        req.extensions_mut().insert(tenant.clone());
        return Ok(Some(tenant));
    }
    let key = match e2b_api_key(req) {
        Some(key) => key?,
        None => bearer(req)?,
    };
    let tenant = state.auth.authenticate(key).await?;
    req.extensions_mut().insert(tenant.clone());
    Ok(Some(tenant))
}

/// The tenant of a `?ticket=` on a WebSocket handshake without `Authorization` (the
/// parameter is removed from the request's query); `None` when the request is not one.
/// The key the ticket was issued to must still be active: a revoked key's tickets die with it.
async fn websocket_ticket(state: &AppState, req: &mut Request) -> Result<Option<Tenant>, ApiError> {
    let upgrade = req.headers().get(header::UPGRADE).and_then(|v| v.to_str().ok());
    if req.method() != Method::GET
        || req.headers().contains_key(header::AUTHORIZATION)
        || !upgrade.is_some_and(|u| u.eq_ignore_ascii_case("websocket"))
    {
        return Ok(None);
    }
    let Some(query) = req.uri().query() else { return Ok(None) };
    let (tickets, rest): (Vec<&str>, Vec<&str>) = query.split('&').partition(|p| p.starts_with("ticket="));
    let ticket = match tickets.as_slice() {
        [] => return Ok(None),
        [t] => t.trim_start_matches("ticket=").to_string(),
        _ => return Err(ApiError::unauthorized("send exactly one ticket")),
    };
    let path = req.uri().path().to_string();
    let tenant = state.auth.tickets().redeem(&ticket, &path)?;
    if let Some(id) = &tenant.key_id {
        state.auth.active_key(id).await?;
    }
    let path_and_query = if rest.is_empty() { path } else { format!("{path}?{}", rest.join("&")) };
    let mut parts = req.uri().clone().into_parts();
    parts.path_and_query = Some(path_and_query.parse().map_err(|_| ApiError::invalid("malformed query"))?);
    *req.uri_mut() = axum::http::Uri::from_parts(parts).map_err(|_| ApiError::invalid("malformed query"))?;
    Ok(Some(tenant))
}

/// The E2B SDK's `X-API-Key`, taken on the E2B control-plane routes only and only when no
/// `Authorization` header is sent; checked exactly like a bearer key.
fn e2b_api_key(req: &Request) -> Option<Result<&str, ApiError>> {
    if !crate::e2b::control::is_control_path(req.uri().path()) || req.headers().contains_key(header::AUTHORIZATION) {
        return None;
    }
    let mut values = req.headers().get_all("x-api-key").iter();
    let value = values.next()?;
    if values.next().is_some() {
        return Some(Err(ApiError::unauthorized("send exactly one X-API-Key header")));
    }
    let key = value
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|k| !k.is_empty() && k.len() <= MAX_AUTH_HEADER && k.bytes().all(|b| b.is_ascii_graphic()));
    Some(key.ok_or_else(|| AuthError::Invalid.into()))
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

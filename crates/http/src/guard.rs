//! The middleware every request passes first: Host and Origin allowlist, then the API key,
//! whose [`safehouse_manager::auth::Lease`] the request carries and runs under
//! ([`crate::revoked`]).
//! It wraps the whole router, fallbacks included, so a path no route matches (`//v1/...`,
//! `/v1/../healthz`, `/V1/...`) still needs a key. Only exactly `GET /healthz` and
//! `GET /v1/openapi.json` are public, and the web console's static files (`/`, `/ui`,
//! `/ui/...`: a page and scripts that call the API with the key the user types).
//!
//! A WebSocket handshake from a browser cannot carry `Authorization`: it may carry a
//! one-time ticket instead (`?ticket=`, from `POST /v1/tickets`), good for the one path it
//! was issued for; the parameter is taken out of the query before the handler sees it.
//!
//! A front whose clients send their key another way and read refusals in another shape
//! (the E2B control plane: `X-API-Key`, `{"code", "message"}`) registers a [`KeyDoor`]
//! when the daemon assembles the router; the guard knows no front by name.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use safehouse_manager::auth::revocation::REVOKED_MESSAGE;
use safehouse_manager::auth::{AuthError, Tenant};

use crate::errors::ApiError;
use crate::AppState;

/// Longest `Authorization` value considered.
const MAX_AUTH_HEADER: usize = 512;

pub fn is_public(method: &Method, path: &str) -> bool {
    (method == Method::GET && (path == "/healthz" || path == "/v1/openapi.json"))
        || ((method == Method::GET || method == Method::HEAD) && safehouse_console::is_console_path(path))
}

/// Routes that take their API key in a header of their own (when no `Authorization` is
/// sent) and answer the guard's refusals in their own shape.
#[derive(Clone, Copy)]
pub struct KeyDoor {
    /// Whether a request path is one of the door's routes.
    pub owns: fn(&str) -> bool,
    /// The header carrying the key, as documented (`X-API-Key`; looked up in any case).
    pub header: &'static str,
    /// A refusal, in the door's shape.
    pub refuse: fn(StatusCode, String) -> Response,
}

/// The guard's state: the fronts' shared state and the doors.
#[derive(Clone)]
pub struct Guard {
    pub app: AppState,
    pub doors: Arc<[KeyDoor]>,
}

impl Guard {
    fn door(&self, path: &str) -> Option<&KeyDoor> {
        self.doors.iter().find(|d| (d.owns)(path))
    }
}

pub async fn guard(State(guard): State<Guard>, mut req: Request, next: Next) -> Response {
    let door = guard.door(req.uri().path()).copied();
    let mut resp = match check(&guard.app, door.as_ref(), &mut req).await {
        Ok(None) => next.run(req).await,
        Ok(Some(who)) => {
            // The request, and whatever it opens, lasts only as long as its key.
            let lease = guard.app.auth.lease(&who);
            req.extensions_mut().insert(lease.clone());
            let refused = move || {
                let e = ApiError::unauthorized(REVOKED_MESSAGE);
                match door {
                    Some(d) => (d.refuse)(e.status, e.message),
                    None => e.into_response(),
                }
            };
            let mut resp = crate::revoked::run(lease, next.run(req), refused).await;
            // Handed out again for the audit layer, which wraps this one.
            resp.extensions_mut().insert(who);
            resp
        }
        // The door's clients read their own error shape.
        Err(e) => match door {
            Some(d) => (d.refuse)(e.status, e.message),
            None => e.into_response(),
        },
    };
    let h = resp.headers_mut();
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    resp
}

/// Host, Origin and the key: the caller's tenant (put in the request's extensions), or
/// `None` for a public route.
async fn check(state: &AppState, door: Option<&KeyDoor>, req: &mut Request) -> Result<Option<Tenant>, ApiError> {
    state.hosts.check_host(req.headers(), req.uri())?;
    state.hosts.check_origin(req.headers())?;
    if is_public(req.method(), req.uri().path()) {
        return Ok(None);
    }
    if let Some(tenant) = websocket_ticket(state, req).await? {
        req.extensions_mut().insert(tenant.clone());
        return Ok(Some(tenant));
    }
    let key = match door.and_then(|d| door_key(d, req)) {
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

/// The door's own key header (the E2B SDK's `X-API-Key`), taken on the door's routes only
/// and only when no `Authorization` header is sent; checked exactly like a bearer key.
fn door_key<'r>(door: &KeyDoor, req: &'r Request) -> Option<Result<&'r str, ApiError>> {
    if req.headers().contains_key(header::AUTHORIZATION) {
        return None;
    }
    let mut values = req.headers().get_all(door.header).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return Some(Err(ApiError::unauthorized(format!("send exactly one {} header", door.header))));
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

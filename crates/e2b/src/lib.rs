//! The E2B-compatible front (docs/e2b.md): another door into the same house. Code written
//! for the `e2b` SDK runs against the daemon when `E2B_API_URL` and `E2B_SANDBOX_URL` name
//! it and `E2B_API_KEY` is a safehouse key.
//!
//! - The control plane (`/v2/sandboxes`, `/sandboxes/{id}/...`, key in `X-API-Key`) is
//!   ordinary routes ([`control_routes`]) behind the daemon's guard, which takes their key
//!   and answers their refusals as E2B does ([`DOOR`]).
//! - The data plane is every request carrying `E2b-Sandbox-Id`: [`data_plane`] takes it
//!   before the router. Port 49983 (`E2b-Sandbox-Port`) is the in-sandbox API (Connect
//!   services [`process`] and [`filesystem`], `/files`, `/health`); any other port goes to
//!   the port proxy. It authenticates with the sandbox's access token (`X-Access-Token`),
//!   issued to one API key and good only while that key lives ([`token`]); every call runs
//!   under that key's [`safehouse_manager::auth::Lease`], so revoking the key ends its streams too.
//!
//! Every handler calls the same manager methods as the native API, so policy, events and
//! the audit log are the same; the audit layer records these calls with an `e2b:` path.

#![forbid(unsafe_code)]

pub mod connect;
pub mod control;
mod files;
mod filesystem;
pub mod interp;
mod listing;
mod observe;
mod persist;
mod process;
mod refused;
mod signed;
pub mod token;
mod volumes;

/// The checks of the envd (Connect) messages that need no sandbox, as the routes run them:
/// the fuzz target `e2b_connect` (crates/fuzzing) drives them.
pub mod messages {
    pub use crate::filesystem::{absolute, watch_request};
    pub use crate::process::{input_bytes, start_request};
}

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post, MethodRouter};
use axum::Router;
use base64::Engine;
use serde_json::json;

use safehouse_http::audit::AuditAs;
use safehouse_http::guard::KeyDoor;
use safehouse_http::params::Caller;
use safehouse_http::{ApiError, AppState};
use safehouse_manager::auth::revocation::REVOKED_MESSAGE;
use safehouse_manager::auth::Tenant;

/// The E2B control-plane routes (method, path) the router serves: E2B's own API, listed in
/// docs/e2b.md and deliberately not in docs/openapi.json (the OpenAPI tests check both).
/// The data plane is routed by the `E2b-Sandbox-Id` header before any route.
/// Both generations of E2B's routes are served: SDKs 2.0-2.x create with `POST /sandboxes`
/// and connect with `set_timeout` + `resume` or `POST /sandboxes/{id}/connect`; newer ones
/// use the `/v2` routes.
pub const ROUTES: &[(&str, &str)] = &[
    ("POST", "/v2/sandboxes"),
    ("GET", "/v2/sandboxes"),
    ("POST", "/sandboxes"),
    ("GET", "/sandboxes"),
    ("GET", "/sandboxes/metrics"),
    ("GET", "/sandboxes/{id}"),
    ("DELETE", "/sandboxes/{id}"),
    ("POST", "/sandboxes/{id}/timeout"),
    ("POST", "/sandboxes/{id}/refreshes"),
    ("POST", "/sandboxes/{id}/pause"),
    ("POST", "/sandboxes/{id}/resume"),
    ("POST", "/sandboxes/{id}/connect"),
    ("POST", "/v2/sandboxes/{id}/connect"),
    ("GET", "/sandboxes/{id}/metrics"),
    ("GET", "/sandboxes/{id}/logs"),
    ("GET", "/v2/sandboxes/{id}/logs"),
    ("POST", "/sandboxes/{id}/snapshots"),
    ("POST", "/sandboxes/{id}/fork"),
    ("GET", "/snapshots"),
    ("DELETE", "/templates/{id}"),
    ("POST", "/volumes"),
    ("GET", "/volumes"),
    ("GET", "/volumes/{id}"),
    ("DELETE", "/volumes/{id}"),
];

/// The port of the in-sandbox API (envd) in E2B's addressing.
pub const ENVD_PORT: u16 = 49983;
/// The envd version reported: the SDK turns features on by it. 0.6.1 is the last before
/// file metadata (0.6.2), watch events' entries (0.6.3) and network-mount watches (0.6.4),
/// which safehouse does not have: SDKs refuse them by name before asking, and the front
/// refuses them by name when asked anyway.
pub const ENVD_VERSION: &str = "0.6.1";
/// The header naming the sandbox of a data-plane request.
pub const SANDBOX_HEADER: &str = "e2b-sandbox-id";
const PORT_HEADER: &str = "e2b-sandbox-port";
const TOKEN_HEADER: &str = "x-access-token";
/// How the `e2b-code-interpreter` SDK authenticates its context calls (port 49999): the
/// `trafficAccessToken` of the create answer, which is the access token.
const TRAFFIC_TOKEN_HEADER: &str = "e2b-traffic-access-token";
/// The file holding the daemon's token secret, in the data directory.
const SECRET_FILE: &str = "e2b.secret";

/// What the front keeps beyond the manager: the token secret, watchers made with
/// `CreateWatcher`, process tags and the template each sandbox was created from.
pub struct E2bState {
    secret: [u8; 32],
    pub(crate) watchers: filesystem::Watchers,
    /// (sandbox, tag) → pid.
    pub(crate) tags: Mutex<HashMap<(String, String), u32>>,
    /// sandbox → template name given at create.
    pub(crate) templates: Mutex<HashMap<String, String>>,
    /// Whether the host can keep sandboxes' files on disk (the storage pool opened), asked
    /// once: E2B sandboxes then have their files on disk, as E2B's do.
    pub(crate) disk: std::sync::OnceLock<bool>,
}

impl E2bState {
    /// Reads the secret from `DATA_DIR/e2b.secret`, creating it (0600, 32 random bytes)
    /// the first time, so tokens survive a restart.
    pub fn load(data_dir: &Path) -> std::io::Result<E2bState> {
        let path = data_dir.join(SECRET_FILE);
        let secret = match std::fs::read(&path) {
            Ok(b) if b.len() == 32 => b,
            Ok(_) => return Err(std::io::Error::other(format!("{} is not 32 bytes; delete it", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut b = vec![0u8; 32];
                getrandom::getrandom(&mut b).map_err(|e| std::io::Error::other(e.to_string()))?;
                use std::io::Write;
                use std::os::unix::fs::OpenOptionsExt;
                let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path)?;
                f.write_all(&b)?;
                f.sync_all()?;
                b
            }
            Err(e) => return Err(e),
        };
        Ok(E2bState::with_secret(secret.try_into().unwrap_or([0; 32])))
    }

    /// A state with this secret (tests).
    pub fn with_secret(secret: [u8; 32]) -> E2bState {
        E2bState {
            secret,
            watchers: Default::default(),
            tags: Default::default(),
            templates: Default::default(),
            disk: Default::default(),
        }
    }

    /// The sandbox's `envdAccessToken` for the key `who` authenticated with (see [`token`]).
    pub fn access_token(&self, sandbox: &str, who: &Tenant, admin_hash: &[u8; 32]) -> String {
        token::issue(&self.secret, sandbox, who, admin_hash)
    }

    /// Whom `token` was issued to, if it is one of `sandbox`'s tokens.
    pub fn check_token(
        &self,
        sandbox: &str,
        token: Option<&str>,
        admin_hash: &[u8; 32],
    ) -> Result<token::Holder, token::TokenError> {
        token::verify(&self.secret, sandbox, token, admin_hash)
    }

    /// Forgets what the front kept for a sandbox that is gone.
    pub(crate) fn forget(&self, sandbox: &str) {
        self.tags.lock().unwrap_or_else(|e| e.into_inner()).retain(|(s, _), _| s != sandbox);
        self.templates.lock().unwrap_or_else(|e| e.into_inner()).remove(sandbox);
        self.watchers.forget(sandbox);
    }
}

/// The E2B front's state: the fronts' shared state and its own.
#[derive(Clone)]
pub struct E2b {
    pub app: AppState,
    pub e2b: Arc<E2bState>,
}

impl std::ops::Deref for E2b {
    type Target = AppState;
    fn deref(&self) -> &AppState {
        &self.app
    }
}

impl E2b {
    /// The front, with its token secret kept in the manager's data directory (a fresh one,
    /// said on stderr, when it cannot be kept there: tokens then last until a restart).
    pub fn new(app: AppState) -> E2b {
        let e2b = match E2bState::load(app.manager.data_dir()) {
            Ok(s) => s,
            Err(e) => {
                eprintln!(
                    "safehouse: e2b: cannot keep the token secret in the data directory ({e}); using a fresh one"
                );
                let mut secret = [0u8; 32];
                let _ = getrandom::getrandom(&mut secret);
                E2bState::with_secret(secret)
            }
        };
        E2b { app, e2b: Arc::new(e2b) }
    }
}

/// The control plane's routes, with their state. The data plane is [`data_plane`], a layer
/// the daemon puts in front of every route; the control plane's key header and error shape
/// are [`DOOR`], which the daemon gives the guard.
/// Every path under the front answers in E2B's shape: what E2B has and safehouse does not
/// yet is refused by name ([`refused`]), anything else is E2B's 404 or 405.
pub fn control_routes(e2b: E2b) -> Router {
    fn e2b_methods(r: MethodRouter<E2b>) -> MethodRouter<E2b> {
        r.fallback(refused::wrong_method)
    }
    let mut router = Router::new()
        .route("/sandboxes", e2b_methods(post(control::create).get(listing::list)))
        .route("/v2/sandboxes", e2b_methods(post(control::create).get(listing::list)))
        .route("/sandboxes/metrics", e2b_methods(get(observe::many_metrics)))
        .route("/sandboxes/{id}", e2b_methods(get(control::get).delete(control::kill)))
        .route("/sandboxes/{id}/timeout", e2b_methods(post(control::set_timeout)))
        .route("/sandboxes/{id}/refreshes", e2b_methods(post(control::refresh)))
        .route("/sandboxes/{id}/pause", e2b_methods(post(control::pause)))
        .route("/sandboxes/{id}/resume", e2b_methods(post(control::resume)))
        .route("/sandboxes/{id}/connect", e2b_methods(post(control::connect)))
        .route("/v2/sandboxes/{id}/connect", e2b_methods(post(control::connect)))
        .route("/sandboxes/{id}/metrics", e2b_methods(get(observe::metrics)))
        .route("/sandboxes/{id}/logs", e2b_methods(get(observe::logs)))
        .route("/v2/sandboxes/{id}/logs", e2b_methods(get(observe::logs_v2)))
        .route("/sandboxes/{id}/snapshots", e2b_methods(post(persist::snapshot)))
        .route("/sandboxes/{id}/fork", e2b_methods(post(persist::fork)))
        .route("/snapshots", e2b_methods(get(persist::list)))
        .route("/volumes", e2b_methods(post(volumes::create).get(volumes::list)))
        .route("/volumes/{id}", e2b_methods(get(volumes::get).delete(volumes::delete)))
        .route("/templates/{id}", any(refused::template))
        .route("/sandboxes/{id}/{*rest}", any(refused::sandbox_route))
        .route("/v2/sandboxes/{id}", any(refused::unknown))
        .route("/v2/sandboxes/{id}/{*rest}", any(refused::sandbox_route));
    for prefix in ["/v2/templates", "/v3/templates"] {
        router =
            router.route(prefix, any(refused::feature)).route(&format!("{prefix}/{{*rest}}"), any(refused::feature));
    }
    router = router
        .route("/templates", any(refused::feature))
        .route("/templates/{id}/{*rest}", any(refused::feature))
        .route("/snapshots/{*rest}", any(refused::unknown))
        .route("/volumes/{id}/{*rest}", any(refused::unknown));
    router.with_state(e2b)
}

/// The control plane's door: its key in `X-API-Key` (when no `Authorization` is sent), its
/// refusals in E2B's error shape.
pub const DOOR: KeyDoor = KeyDoor { owns: control::is_control_path, header: "X-API-Key", refuse: e2b_error_string };

fn e2b_error_string(status: StatusCode, message: String) -> Response {
    e2b_error(status, message)
}

/// The `E2b-Sandbox-Id` of a request, if it has one.
pub fn sandbox_header(headers: &HeaderMap) -> Option<&str> {
    headers.get(SANDBOX_HEADER).map(|v| v.to_str().unwrap_or(""))
}

/// An answer in the E2B control plane's error shape (`{"code": status, "message"}`).
pub fn e2b_error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({"code": status.as_u16(), "message": message.into()}))).into_response()
}

/// What an unknown, ended or other tenant's sandbox gets on the data plane, as E2B's edge
/// answers it: 502 and "... was not found".
fn sandbox_not_found(id: &str) -> Response {
    let shown: String = id.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_').take(64).collect();
    let mut resp = e2b_error(StatusCode::BAD_GATEWAY, format!("The sandbox {shown} was not found"));
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// The layer in front of the router: a request with `E2b-Sandbox-Id` is for the E2B data
/// plane and never reaches the native routes.
pub async fn data_plane(State(st): State<E2b>, req: Request, next: Next) -> Response {
    if req.uri().path().starts_with(volumes::CONTENT_PREFIX) {
        let audit_as = AuditAs { path: format!("e2b:{}", req.uri().path()), sandbox: None };
        let method = req.method().clone();
        let mut resp = volumes::content(&st, req).await;
        st.manager.count_request(method.as_str(), "e2b:volumecontent", resp.status().as_u16());
        resp.extensions_mut().insert(audit_as);
        resp.headers_mut().insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        return resp;
    }
    let id = match sandbox_header(req.headers()) {
        Some(id) => id.to_string(),
        None => match sandbox_of_token(&st, req.headers()).await {
            Some(id) => id,
            None if signed::is_file_url(&req) => return signed::serve(st, req).await,
            None => return next.run(req).await,
        },
    };
    if is_control_call(req.headers(), req.uri().path()) {
        return next.run(req).await;
    }
    let (method, route) = (req.method().clone(), route_label(req.headers(), req.uri().path()));
    // Audited as `e2b:PATH` (`e2b:/process.Process/Start`), with the sandbox from the header.
    let audit_as = AuditAs { path: format!("e2b:{}", req.uri().path()), sandbox: Some(id.clone()) };
    let mut req = req;
    let mut resp = match authorize(&st, req.method(), req.uri(), req.headers(), &id).await {
        Ok(tenant) => {
            // The call, and what it streams, lasts only as long as the token's key.
            let lease = st.auth.lease(&tenant);
            req.extensions_mut().insert(lease.clone());
            req.extensions_mut().insert(tenant.clone());
            let refused = || unauthorized(REVOKED_MESSAGE).into_response();
            let mut resp = safehouse_http::revoked::run_with(
                lease,
                dispatch(st.clone(), tenant.clone(), id, req),
                refused,
                Some(CONNECT_END),
            )
            .await;
            resp.extensions_mut().insert(tenant);
            resp
        }
        Err(resp) => answer_after_body(req, *resp).await,
    };
    st.manager.count_request(method.as_str(), &route, resp.status().as_u16());
    resp.extensions_mut().insert(audit_as);
    let h = resp.headers_mut();
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    resp
}

/// The sandbox of a data-plane request that names none: SDKs from 2.7 to about 2.30 send
/// a connected (not created) sandbox's calls to `E2B_SANDBOX_URL` with the access token
/// but without `E2b-Sandbox-Id`. The token names its key; the sandbox is the one among
/// that key's tenant's live sandboxes whose token it is (one HMAC each). `None` when the
/// request has no token of this daemon (it then goes on to the routes, as before).
async fn sandbox_of_token(st: &E2b, headers: &HeaderMap) -> Option<String> {
    let token = headers.get(TOKEN_HEADER)?.to_str().ok()?;
    let who = match token::named_holder(token)? {
        token::Holder::Admin => Tenant { name: safehouse_manager::auth::ADMIN_TENANT.into(), key_id: None },
        token::Holder::Key(id) => st.auth.active_key(&id).await.ok()?,
    };
    let filter = safehouse_manager::ListFilter::default();
    let candidates = st.manager.list(&who.name, &filter).await.ok()?;
    candidates
        .into_iter()
        .filter(|s| st.manager.tenant_of(&s.id).as_deref() == Some(who.name.as_str()))
        .find(|s| st.e2b.check_token(&s.id, Some(token), st.auth.admin_hash()).is_ok())
        .map(|s| s.id)
}

/// A control-plane call that also carries `E2b-Sandbox-Id` (SDKs from 2.7 to about 2.45
/// send it, with `E2b-Sandbox-Port`, on `POST /sandboxes/{id}/connect`, for E2B's edge to
/// route): a control path with the API key and no access token goes to the router.
fn is_control_call(headers: &HeaderMap, path: &str) -> bool {
    control::is_control_path(path) && headers.contains_key(DOOR.header) && !headers.contains_key(TOKEN_HEADER)
}

/// The data-plane call as a `GET /metrics` route label: one of a fixed set (never a raw
/// path, which would make a label per request).
fn route_label(headers: &HeaderMap, path: &str) -> String {
    const CALLS: &[&str] = &[
        "/process.Process/Start",
        "/process.Process/Connect",
        "/process.Process/List",
        "/process.Process/SendInput",
        "/process.Process/StreamInput",
        "/process.Process/SendSignal",
        "/process.Process/CloseStdin",
        "/process.Process/Update",
        "/filesystem.Filesystem/Stat",
        "/filesystem.Filesystem/MakeDir",
        "/filesystem.Filesystem/Move",
        "/filesystem.Filesystem/ListDir",
        "/filesystem.Filesystem/Remove",
        "/filesystem.Filesystem/WatchDir",
        "/filesystem.Filesystem/CreateWatcher",
        "/filesystem.Filesystem/GetWatcherEvents",
        "/filesystem.Filesystem/RemoveWatcher",
        "/files",
        "/health",
    ];
    let envd = headers.get(PORT_HEADER).is_none_or(|p| p.to_str().ok() == Some("49983"));
    let jupyter = headers.get(PORT_HEADER).and_then(|p| p.to_str().ok()) == Some("49999");
    match CALLS.iter().find(|c| **c == path) {
        _ if jupyter && path == "/execute" => "e2b:code/execute".to_string(),
        _ if jupyter => "e2b:code/contexts".to_string(),
        _ if !envd => "e2b:port".to_string(),
        Some(c) => format!("e2b:{c}"),
        None => "e2b:other".to_string(),
    }
}

/// Host and Origin as for every request, then the access token, the key it was issued to
/// (still active, of the sandbox's tenant), then the sandbox: the caller as that key.
/// envd's `/health` needs no token (it says nothing about the sandbox); a user port's
/// `/health` is the user's service and needs one like any other path.
/// (The request's parts, not the request: its body is not `Sync`.)
async fn authorize(
    st: &E2b,
    method: &Method,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
    id: &str,
) -> Result<Tenant, Box<Response>> {
    let refuse = |e: ApiError| Box::new(e.into_response());
    st.hosts.check_host(headers, uri).map_err(refuse)?;
    st.hosts.check_origin(headers).map_err(refuse)?;
    let envd = headers.get(PORT_HEADER).is_none_or(|p| p.to_str().ok() == Some("49983"));
    let public = envd && method == Method::GET && uri.path() == "/health";
    let owner = st.manager.tenant_of(id);
    if public {
        // The caller is nobody in particular: a tenant without a key, whose lease never ends.
        return owner.map(|name| Tenant { name, key_id: None }).ok_or_else(|| Box::new(sandbox_not_found(id)));
    }
    let jupyter = headers.get(PORT_HEADER).and_then(|p| p.to_str().ok()) == Some("49999");
    let token = match headers.get(TOKEN_HEADER) {
        Some(v) => Some(v.to_str().unwrap_or("")),
        None if jupyter => headers.get(TRAFFIC_TOKEN_HEADER).map(|v| v.to_str().unwrap_or("")),
        None => None,
    };
    let holder = st.e2b.check_token(id, token, st.auth.admin_hash()).map_err(|e| unauthorized(&e.to_string()))?;
    let who = match holder {
        token::Holder::Admin => Tenant { name: safehouse_manager::auth::ADMIN_TENANT.into(), key_id: None },
        token::Holder::Key(key) => st.auth.active_key(&key).await.map_err(|e| match e {
            safehouse_manager::auth::AuthError::Invalid => unauthorized(
                "the API key this envdAccessToken was issued to has been revoked; connect with an active key \
                 (Sandbox.connect) for a new token",
            ),
            e => refuse(e.into()),
        })?,
    };
    // A token is only ever issued for the key's own tenant's sandbox; one that outlived its
    // sandbox (or a reused id) finds nothing.
    match owner {
        Some(tenant) if tenant == who.name => Ok(who),
        _ => Err(Box::new(sandbox_not_found(id))),
    }
}

/// How a Connect stream ends when its key is revoked: an `unauthenticated` end envelope.
const CONNECT_END: safehouse_http::revoked::StreamEnd = safehouse_http::revoked::StreamEnd {
    content_type: connect::STREAM_CONTENT_TYPE,
    frame: || connect::ConnectError::new(connect::Code::Unauthenticated, REVOKED_MESSAGE).end_frame(),
};

fn unauthorized(message: &str) -> Box<Response> {
    Box::new(connect::ConnectError::new(connect::Code::Unauthenticated, message).into_response())
}

/// Routes a data-plane request by port and path.
async fn dispatch(st: E2b, tenant: Tenant, id: String, req: Request) -> Response {
    let port = match req.headers().get(PORT_HEADER).map(|v| v.to_str().unwrap_or("").parse::<u16>()) {
        None => ENVD_PORT,
        Some(Ok(p)) if p > 0 => p,
        Some(_) => {
            let e = e2b_error(StatusCode::BAD_REQUEST, "E2b-Sandbox-Port must be a port number (1-65535)");
            return answer_after_body(req, e).await;
        }
    };
    if port == interp::JUPYTER_PORT {
        return interp::call(&st, &tenant, &id, req).await;
    }
    if port != ENVD_PORT {
        return to_port(st, tenant, &id, port, req).await;
    }
    if let Err(e) = check_user(req.headers()) {
        return answer_after_body(req, e.into_response()).await;
    }
    let path = req.uri().path().to_string();
    match (req.method().clone(), path.as_str()) {
        (Method::GET, "/health") => health(&st, &tenant, &id).await,
        (Method::GET, "/files") => files::download(&st, &tenant, &id, req).await,
        (Method::POST, "/files") => files::upload(&st, &tenant, &id, req).await,
        (Method::POST, p) if p.starts_with("/process.Process/") => {
            process::call(&st, &tenant, &id, &p["/process.Process/".len()..], req).await
        }
        (Method::POST, p) if p.starts_with("/filesystem.Filesystem/") => {
            filesystem::call(&st, &tenant, &id, &p["/filesystem.Filesystem/".len()..], req).await
        }
        _ => {
            let e = connect::ConnectError::new(
                connect::Code::Unimplemented,
                format!("{} {path} is not part of the in-sandbox API safehouse serves (see docs/e2b.md)", req.method()),
            );
            answer_after_body(req, e.into_response()).await
        }
    }
}

/// envd's `/health`: 204 while the sandbox runs; a paused (frozen) one answers as E2B's
/// edge does for a sandbox that is not running, 502, so `is_running()` is false.
async fn health(st: &E2b, tenant: &Tenant, id: &str) -> Response {
    match st.manager.info(&tenant.name, id).await {
        Ok(info) if info.state == safehouse_manager::SandboxState::Running => StatusCode::NO_CONTENT.into_response(),
        Ok(info) if info.state == safehouse_manager::SandboxState::Frozen => e2b_error(
            StatusCode::BAD_GATEWAY,
            format!("The sandbox {id} is paused; connect to it (Sandbox.connect) to resume it"),
        ),
        _ => sandbox_not_found(id),
    }
}

/// Answers a refused request once the client has sent its body (read and dropped: at most
/// 1 MiB, for at most 5 s). The SDK streams bodies chunked; an answer sent while a body is
/// still arriving makes the connection close under the client, which then reports
/// "connection closed before message completed" instead of the error.
async fn answer_after_body(req: Request, resp: Response) -> Response {
    let drain = axum::body::to_bytes(req.into_body(), 1 << 20);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), drain).await;
    resp
}

/// The SDK names the user to run as in `Authorization: Basic base64(user:)`. A safehouse
/// sandbox has one user, E2B's default `user`; asking for another (`root`) is refused
/// rather than quietly ignored.
fn check_user(headers: &HeaderMap) -> Result<(), connect::ConnectError> {
    let Some(v) = headers.get(header::AUTHORIZATION) else { return Ok(()) };
    let user = v
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b.trim()).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .map(|s| s.split(':').next().unwrap_or("").to_string());
    match user.as_deref() {
        Some("user") | Some("") => Ok(()),
        Some(other) => Err(connect::ConnectError::new(
            connect::Code::PermissionDenied,
            format!("user {other:?}: safehouse sandboxes run everything as their one user; omit user= (docs/e2b.md)"),
        )),
        None => Err(connect::ConnectError::invalid("Authorization: expected Basic base64(user:)")),
    }
}

/// A user service in the sandbox: the native port proxy, as if the request had come to
/// `/v1/sandboxes/{id}/ports/{port}/...`.
async fn to_port(st: E2b, tenant: Tenant, id: &str, port: u16, mut req: Request) -> Response {
    let pq = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let uri = format!("/v1/sandboxes/{id}/ports/{port}{pq}");
    match uri.parse() {
        Ok(u) => *req.uri_mut() = u,
        Err(_) => return ApiError::invalid("the request path is not a valid URI").into_response(),
    }
    req.headers_mut().remove(SANDBOX_HEADER);
    req.headers_mut().remove(PORT_HEADER);
    req.headers_mut().remove(TOKEN_HEADER);
    match safehouse_http::ports::proxy(State(st.app.clone()), Caller(tenant), req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

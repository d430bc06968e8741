//! The HTTP API (docs/api.md): one router, one error shape, one guard in front of it.

mod audit;
mod control;
pub mod errors;
mod events;
pub(crate) mod exec;
mod execs;
mod files;
mod fleet;
pub mod guard;
mod health;
pub mod hosts;
pub mod json;
mod keys;
mod metrics;
pub mod params;
mod policy;
pub mod ports;
mod processes;
pub(crate) mod revoked;
pub(crate) mod sandboxes;
mod session;

use std::sync::Arc;

use axum::routing::{any, delete, get, post};
use axum::Router;

use crate::auth::Authenticator;
use crate::e2b;
use crate::manager::Manager;
pub use errors::ApiError;
pub(crate) use exec::check_env as exec_check_env;
pub(crate) use files::{file_body, WatchSlot};
pub use hosts::HostAllowlist;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub manager: Manager,
    pub auth: Authenticator,
    pub hosts: Arc<HostAllowlist>,
    pub ports: Arc<ports::PortProxy>,
    /// Open MCP sessions (crate::mcp).
    pub mcp: Arc<crate::mcp::Sessions>,
    /// The E2B-compatible front's own state (crate::e2b).
    pub e2b: Arc<crate::e2b::E2bState>,
}

/// Every native route as (method, path), in the router's path syntax. The OpenAPI test
/// checks that this table, the router and docs/openapi.json agree. The E2B-compatible
/// routes are E2B's API, not ours: `crate::e2b::ROUTES`, documented in docs/e2b.md.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/healthz"),
    ("GET", "/v1/openapi.json"),
    ("POST", "/v1/sandboxes"),
    ("GET", "/v1/sandboxes"),
    ("GET", "/v1/sandboxes/{id}"),
    ("DELETE", "/v1/sandboxes/{id}"),
    ("POST", "/v1/sandboxes/{id}/timeout"),
    ("POST", "/v1/sandboxes/{id}/exec"),
    ("GET", "/v1/sandboxes/{id}/execs"),
    ("POST", "/v1/sandboxes/{id}/processes"),
    ("GET", "/v1/sandboxes/{id}/processes"),
    ("POST", "/v1/sandboxes/{id}/processes/{pid}/signal"),
    ("POST", "/v1/sandboxes/{id}/processes/{pid}/stdin"),
    ("GET", "/v1/sandboxes/{id}/processes/{pid}/attach"),
    ("GET", "/v1/sandboxes/{id}/files"),
    ("PUT", "/v1/sandboxes/{id}/files"),
    ("GET", "/v1/sandboxes/{id}/fs/list"),
    ("GET", "/v1/sandboxes/{id}/fs/stat"),
    ("POST", "/v1/sandboxes/{id}/fs/mkdir"),
    ("POST", "/v1/sandboxes/{id}/fs/move"),
    ("DELETE", "/v1/sandboxes/{id}/fs"),
    ("GET", "/v1/sandboxes/{id}/fs/watch"),
    // The port proxy takes any method; these are the ones documented (HEAD and OPTIONS
    // are forwarded too).
    ("GET", "/v1/sandboxes/{id}/ports/{port}"),
    ("POST", "/v1/sandboxes/{id}/ports/{port}"),
    ("PUT", "/v1/sandboxes/{id}/ports/{port}"),
    ("PATCH", "/v1/sandboxes/{id}/ports/{port}"),
    ("DELETE", "/v1/sandboxes/{id}/ports/{port}"),
    ("GET", "/v1/sandboxes/{id}/ports/{port}/{*rest}"),
    ("POST", "/v1/sandboxes/{id}/ports/{port}/{*rest}"),
    ("PUT", "/v1/sandboxes/{id}/ports/{port}/{*rest}"),
    ("PATCH", "/v1/sandboxes/{id}/ports/{port}/{*rest}"),
    ("DELETE", "/v1/sandboxes/{id}/ports/{port}/{*rest}"),
    ("POST", "/v1/keys"),
    ("GET", "/v1/keys"),
    ("DELETE", "/v1/keys/{id}"),
    ("GET", "/v1/sandboxes/{id}/events"),
    ("GET", "/v1/events"),
    ("GET", "/v1/audit"),
    ("GET", "/v1/sandboxes/{id}/metrics"),
    ("POST", "/v1/sandboxes/{id}/freeze"),
    ("POST", "/v1/sandboxes/{id}/thaw"),
    ("POST", "/v1/kill-all"),
    ("GET", "/metrics"),
    ("POST", "/mcp"),
    ("DELETE", "/mcp"),
    // What the web console needs (docs/console.md).
    ("GET", "/v1/whoami"),
    ("POST", "/v1/tickets"),
    ("GET", "/v1/metrics"),
    ("POST", "/v1/freeze-all"),
    ("POST", "/v1/thaw-all"),
    ("GET", "/v1/sandboxes/{id}/policy"),
    ("GET", "/v1/sandboxes/{id}/policy/explain"),
    ("GET", "/v1/audit/verify"),
    // The console itself (crates/console): public static files.
    ("GET", "/"),
    ("GET", "/ui"),
    ("GET", "/ui/"),
    ("GET", "/ui/{*path}"),
];

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/v1/openapi.json", get(health::openapi))
        .route("/v1/sandboxes", post(sandboxes::create).get(sandboxes::list))
        .route("/v1/sandboxes/{id}", get(sandboxes::info).delete(sandboxes::kill))
        .route("/v1/sandboxes/{id}/timeout", post(sandboxes::set_timeout))
        .route("/v1/sandboxes/{id}/exec", post(exec::exec))
        .route("/v1/sandboxes/{id}/execs", get(execs::list))
        .route("/v1/sandboxes/{id}/processes", post(processes::start).get(processes::list))
        .route("/v1/sandboxes/{id}/processes/{pid}/signal", post(processes::signal))
        .route("/v1/sandboxes/{id}/processes/{pid}/stdin", post(processes::stdin))
        .route("/v1/sandboxes/{id}/processes/{pid}/attach", get(processes::attach))
        .route("/v1/sandboxes/{id}/files", get(files::download).put(files::upload))
        .route("/v1/sandboxes/{id}/fs/list", get(files::list))
        .route("/v1/sandboxes/{id}/fs/stat", get(files::stat))
        .route("/v1/sandboxes/{id}/fs/mkdir", post(files::mkdir))
        .route("/v1/sandboxes/{id}/fs/move", post(files::rename))
        .route("/v1/sandboxes/{id}/fs", delete(files::remove))
        .route("/v1/sandboxes/{id}/fs/watch", get(files::watch))
        .route("/v1/sandboxes/{id}/ports/{port}", any(ports::proxy))
        .route("/v1/sandboxes/{id}/ports/{port}/", any(ports::proxy))
        .route("/v1/sandboxes/{id}/ports/{port}/{*rest}", any(ports::proxy))
        .route("/v1/keys", post(keys::create).get(keys::list))
        .route("/v1/keys/{id}", delete(keys::revoke))
        .route("/v1/sandboxes/{id}/events", get(events::sandbox_events))
        .route("/v1/events", get(events::all_events))
        .route("/v1/audit", get(audit::export))
        .route("/v1/sandboxes/{id}/metrics", get(metrics::sandbox))
        .route("/v1/sandboxes/{id}/freeze", post(control::freeze))
        .route("/v1/sandboxes/{id}/thaw", post(control::thaw))
        .route("/v1/kill-all", post(control::kill_all))
        .route("/metrics", get(metrics::prometheus))
        .route("/v1/whoami", get(session::whoami))
        .route("/v1/tickets", post(session::ticket))
        .route("/v1/metrics", get(fleet::stream))
        .route("/v1/freeze-all", post(fleet::freeze_all))
        .route("/v1/thaw-all", post(fleet::thaw_all))
        .route("/v1/sandboxes/{id}/policy", get(policy::show))
        .route("/v1/sandboxes/{id}/policy/explain", get(policy::explain))
        .route("/v1/audit/verify", get(audit::verify))
        .merge(safehouse_console::router())
        .route("/mcp", post(crate::mcp::http::post).delete(crate::mcp::http::delete))
        .route("/v2/sandboxes", post(e2b::control::create).get(e2b::control::list))
        .route("/sandboxes/{id}", get(e2b::control::get).delete(e2b::control::kill))
        .route("/sandboxes/{id}/timeout", post(e2b::control::set_timeout))
        .route("/sandboxes/{id}/pause", post(e2b::control::pause))
        .route("/v2/sandboxes/{id}/connect", post(e2b::control::connect))
        .route("/sandboxes/{id}/metrics", get(e2b::control::metrics))
        // Runs after routing (it needs the matched route), for routed requests only.
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), metrics::count))
        .fallback(errors::unknown_route)
        .method_not_allowed_fallback(errors::wrong_method)
        // Added last so it wraps every route and both fallbacks.
        .layer(axum::middleware::from_fn_with_state(state.clone(), guard::guard))
        // Requests with E2b-Sandbox-Id are the E2B data plane: answered here, with their
        // own token check, never by the routes above.
        .layer(axum::middleware::from_fn_with_state(state.clone(), e2b::data_plane))
        // Outside the guard, so refused requests are recorded too.
        .layer(axum::middleware::from_fn_with_state(state.clone(), audit::record))
        .with_state(state)
}

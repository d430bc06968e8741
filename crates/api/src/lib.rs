//! The native HTTP API (docs/api.md, docs/openapi.json): its routes over the manager. The
//! error shape, the extractors, the guard and the port proxy are `safehouse_http`'s, shared
//! with the other fronts; the daemon assembles the router (`safehouse_daemon::router`).

#![forbid(unsafe_code)]

mod audit;
pub mod code;
mod control;
mod events;
mod exec;
mod execs;
mod files;
mod fleet;
mod health;
mod keys;
mod metrics;
pub mod openapi;
mod persist;
mod policy;
mod processes;
mod quota;
mod sandboxes;
mod session;
mod templates;
mod volume_files;

/// The JSON request bodies of the routes defined here (the manager's are
/// `safehouse_manager`'s types), as the routes parse them: the fuzz target `api_body`
/// (crates/fuzzing) reads them with `safehouse_http::json::parse`.
pub mod bodies {
    pub use crate::files::{MkdirRequest, MoveRequest};
    pub use crate::keys::CreateKey;
    pub use crate::persist::{ForkRequest, VolumeRequest};
    pub use crate::processes::{SignalRequest, SignalSpec};
    pub use crate::sandboxes::TimeoutRequest;
    pub use crate::session::TicketRequest;
}

use axum::routing::{any, delete, get, post};
use axum::Router;

use safehouse_http::{ports, AppState};

/// Every native route as (method, path), in the router's path syntax, but MCP's and the
/// console's (`safehouse_mcp::ROUTES`, `safehouse_console::ROUTES`, documented in the same
/// OpenAPI document). The OpenAPI test checks that these tables, the router and
/// docs/openapi.json agree. The E2B-compatible
/// routes are E2B's API, not ours: `safehouse_e2b::ROUTES`, documented in docs/e2b.md.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/healthz"),
    ("GET", "/v1/openapi.json"),
    ("POST", "/v1/sandboxes"),
    ("GET", "/v1/sandboxes"),
    ("GET", "/v1/sandboxes/{id}"),
    ("DELETE", "/v1/sandboxes/{id}"),
    ("POST", "/v1/sandboxes/{id}/timeout"),
    ("POST", "/v1/sandboxes/{id}/exec"),
    ("POST", "/v1/sandboxes/{id}/code"),
    ("GET", "/v1/sandboxes/{id}/contexts"),
    ("POST", "/v1/sandboxes/{id}/contexts"),
    ("POST", "/v1/sandboxes/{id}/contexts/{context}/restart"),
    ("DELETE", "/v1/sandboxes/{id}/contexts/{context}"),
    ("GET", "/v1/code/pool"),
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
    // What the web console needs (docs/console.md).
    ("GET", "/v1/whoami"),
    ("GET", "/v1/quota"),
    ("POST", "/v1/tickets"),
    ("GET", "/v1/metrics"),
    ("POST", "/v1/freeze-all"),
    ("POST", "/v1/thaw-all"),
    ("GET", "/v1/sandboxes/{id}/policy"),
    ("GET", "/v1/sandboxes/{id}/policy/explain"),
    ("GET", "/v1/audit/verify"),
    ("POST", "/v1/sandboxes/{id}/pause"),
    ("POST", "/v1/sandboxes/{id}/resume"),
    ("POST", "/v1/sandboxes/{id}/snapshots"),
    ("POST", "/v1/sandboxes/{id}/fork"),
    ("GET", "/v1/snapshots"),
    ("GET", "/v1/snapshots/{id}"),
    ("DELETE", "/v1/snapshots/{id}"),
    ("POST", "/v1/volumes"),
    ("GET", "/v1/volumes"),
    ("DELETE", "/v1/volumes/{name}"),
    ("GET", "/v1/templates"),
    ("POST", "/v1/templates"),
    ("DELETE", "/v1/templates/{*name}"),
    ("GET", "/v1/volumes/{name}/files"),
    ("PUT", "/v1/volumes/{name}/files"),
    ("GET", "/v1/volumes/{name}/fs/list"),
    ("GET", "/v1/volumes/{name}/fs/stat"),
    ("POST", "/v1/volumes/{name}/fs/mkdir"),
    ("POST", "/v1/volumes/{name}/fs/move"),
    ("DELETE", "/v1/volumes/{name}/fs"),
];

/// The native routes, with their state. The daemon adds the other fronts' routes and the
/// layers every request passes (safehouse_daemon::router).
pub fn routes(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/v1/openapi.json", get(health::openapi))
        .route("/v1/sandboxes", post(sandboxes::create).get(sandboxes::list))
        .route("/v1/sandboxes/{id}", get(sandboxes::info).delete(sandboxes::kill))
        .route("/v1/sandboxes/{id}/timeout", post(sandboxes::set_timeout))
        .route("/v1/sandboxes/{id}/exec", post(exec::exec))
        .route("/v1/sandboxes/{id}/code", post(code::run))
        .route("/v1/sandboxes/{id}/contexts", get(code::list).post(code::create))
        .route("/v1/sandboxes/{id}/contexts/{context}", delete(code::remove))
        .route("/v1/sandboxes/{id}/contexts/{context}/restart", post(code::restart))
        .route("/v1/code/pool", get(code::pool))
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
        .route("/v1/quota", get(quota::quota))
        .route("/v1/tickets", post(session::ticket))
        .route("/v1/metrics", get(fleet::stream))
        .route("/v1/freeze-all", post(fleet::freeze_all))
        .route("/v1/thaw-all", post(fleet::thaw_all))
        .route("/v1/sandboxes/{id}/policy", get(policy::show))
        .route("/v1/sandboxes/{id}/policy/explain", get(policy::explain))
        .route("/v1/audit/verify", get(audit::verify))
        .route("/v1/sandboxes/{id}/pause", post(persist::pause))
        .route("/v1/sandboxes/{id}/resume", post(persist::resume))
        .route("/v1/sandboxes/{id}/snapshots", post(persist::snapshot))
        .route("/v1/sandboxes/{id}/fork", post(persist::fork))
        .route("/v1/snapshots", get(persist::list_snapshots))
        .route("/v1/snapshots/{id}", get(persist::get_snapshot).delete(persist::delete_snapshot))
        .route("/v1/volumes", post(persist::create_volume).get(persist::list_volumes))
        .route("/v1/volumes/{name}", delete(persist::delete_volume))
        .route("/v1/templates", get(templates::list).post(templates::build))
        .route("/v1/templates/{*name}", delete(templates::remove))
        .route("/v1/volumes/{name}/files", get(volume_files::download).put(volume_files::upload))
        .route("/v1/volumes/{name}/fs/list", get(volume_files::list))
        .route("/v1/volumes/{name}/fs/stat", get(volume_files::stat))
        .route("/v1/volumes/{name}/fs/mkdir", post(volume_files::mkdir))
        .route("/v1/volumes/{name}/fs/move", post(volume_files::rename))
        .route("/v1/volumes/{name}/fs", delete(volume_files::remove))
        .with_state(state)
}

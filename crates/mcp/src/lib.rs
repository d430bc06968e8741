//! The MCP server (Model Context Protocol): sandboxes as tools for AI clients. One
//! implementation, inside the daemon: JSON-RPC (`jsonrpc`), the MCP methods (`protocol`),
//! the tools (`tools`, described in `schema`), sessions (`session`) and the streamable HTTP
//! transport at `/mcp` (`http`). `safehouse mcp` (the stdio transport) forwards each
//! message to `/mcp`, so both transports run exactly this code. docs/mcp.md documents it.

#![forbid(unsafe_code)]

pub mod http;
pub mod jsonrpc;
pub mod protocol;
pub mod schema;
pub mod session;
pub mod tools;

pub use session::Sessions;

use std::sync::Arc;

use axum::routing::post;
use axum::Router;
use safehouse_http::AppState;

/// MCP's routes (documented in docs/openapi.json with the native API's).
pub const ROUTES: &[(&str, &str)] = &[("POST", "/mcp"), ("DELETE", "/mcp")];

/// The MCP front's state: the fronts' shared state and the open sessions.
#[derive(Clone)]
pub struct Mcp {
    pub app: AppState,
    pub sessions: Arc<Sessions>,
}

impl std::ops::Deref for Mcp {
    type Target = AppState;
    fn deref(&self) -> &AppState {
        &self.app
    }
}

impl Mcp {
    /// The front, whose sessions end with the key that opened them.
    pub fn new(app: AppState) -> Mcp {
        let sessions = Arc::new(Sessions::default());
        let weak = Arc::downgrade(&sessions);
        app.auth.on_revoke(Arc::new(move |key_id: &str| {
            if let Some(sessions) = weak.upgrade() {
                sessions.close_key(key_id);
            }
        }));
        Mcp { app, sessions }
    }
}

/// The streamable HTTP transport's routes, with their state.
pub fn routes(mcp: Mcp) -> Router {
    Router::new().route("/mcp", post(http::post).delete(http::delete)).with_state(mcp)
}

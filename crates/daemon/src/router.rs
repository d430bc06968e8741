//! The daemon's router: every front's routes over one shared state, behind the layers every
//! request passes (outermost first): the audit record, the E2B data plane, the Host/Origin
//! and key guard, and, for routed requests, the request counter.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::middleware::from_fn_with_state;
use axum::Router;
use tokio::net::TcpListener;

use safehouse_e2b::E2b;
use safehouse_http::guard::Guard;
use safehouse_http::ports::PortProxy;
use safehouse_http::server::{serve_listener, serve_tls_listener, shutdown_signal, Limits};
use safehouse_http::tls::TlsConfig;
use safehouse_http::{errors, AppState, HostAllowlist};
use safehouse_manager::auth::{self, Authenticator};
use safehouse_manager::{Manager, Store};
use safehouse_mcp::Mcp;

#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// Extra names accepted in `Host` (`name` for any port, `name:port` for one).
    pub allowed_hosts: Vec<String>,
    /// Serve HTTPS only, with this certificate (docs/tls.md).
    pub tls: Option<TlsConfig>,
}

/// Runs the daemon's HTTP API until SIGTERM or SIGINT. The admin key is bootstrapped
/// here (from `SAFEHOUSE_ADMIN_KEY` or `DATA_DIR/admin.key`).
pub async fn serve(opts: ServeOptions, manager: Manager, store: Arc<Store>) -> io::Result<()> {
    let admin = auth::bootstrap_admin(&store, &opts.data_dir).map_err(io::Error::other)?;
    let listener = TcpListener::bind(opts.listen).await?;
    let addr = listener.local_addr()?;
    let app = router(addr, &opts.allowed_hosts, manager, Authenticator::new(store, &admin));
    let Some(tls) = opts.tls else {
        eprintln!("safehouse: listening on http://{addr}");
        return serve_listener(listener, app, Limits::default(), shutdown_signal()).await;
    };
    eprintln!("safehouse: listening on https://{addr}");
    eprintln!("safehouse: TLS certificate SHA-256 fingerprint {}", tls.fingerprint);
    if let Some(ca) = &tls.ca_file {
        eprintln!(
            "safehouse: self-signed: clients trust it with SAFEHOUSE_CA_CERT={} or SAFEHOUSE_TLS_FINGERPRINT={}",
            ca.display(),
            tls.fingerprint
        );
    }
    serve_tls_listener(listener, tls.server, app, Limits::default(), shutdown_signal()).await
}

/// The router of a daemon listening on `listen`: the native API, MCP, the E2B front and
/// the web console's static files.
pub fn router(listen: SocketAddr, allowed_hosts: &[String], manager: Manager, auth: Authenticator) -> Router {
    let app = AppState {
        manager,
        auth,
        hosts: Arc::new(HostAllowlist::new(listen, allowed_hosts)),
        ports: Arc::new(PortProxy::default()),
    };
    let e2b = E2b::new(app.clone());
    let guard = Guard { app: app.clone(), doors: Arc::new([safehouse_e2b::DOOR]) };
    Router::new()
        .merge(safehouse_api::routes(app.clone()))
        .merge(safehouse_mcp::routes(Mcp::new(app.clone())))
        .merge(safehouse_e2b::control_routes(e2b.clone()))
        .merge(safehouse_console::router())
        // Runs after routing (it needs the matched route), for routed requests only.
        .route_layer(from_fn_with_state(app.clone(), safehouse_http::metrics::count))
        .fallback(errors::unknown_route)
        .method_not_allowed_fallback(errors::wrong_method)
        // Added last so it wraps every route and both fallbacks.
        .layer(from_fn_with_state(guard, safehouse_http::guard::guard))
        // Requests with E2b-Sandbox-Id are the E2B data plane: answered here, with their
        // own token check, never by the routes above.
        .layer(from_fn_with_state(e2b, safehouse_e2b::data_plane))
        // Outside the guard, so refused requests are recorded too.
        .layer(from_fn_with_state(app, safehouse_http::audit::record))
}

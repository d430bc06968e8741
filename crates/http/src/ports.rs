//! The port proxy: `/v1/sandboxes/{id}/ports/{port}/...` forwards HTTP/1.1 and WebSocket
//! to a service listening on the sandbox's loopback — the one way in to a sandbox.
//!
//! A sandbox's network namespace has nothing but loopback, so the daemon makes the socket
//! *inside* that namespace (`safehouse_sys::net::tcp_socket_in_netns`) and connects it
//! from here. Authentication and the tenant check are the guard's and the manager's, as on
//! every sandbox route; the daemon's `Authorization` never reaches the service. A proxied
//! connection, WebSockets included, is closed when the key it came with is revoked.
//!
//! One upstream connection per proxied request (no pooling): a service sees a fresh
//! connection each time. Bodies stream both ways; nothing is buffered whole.

mod headers;
mod target;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpSocket, TcpStream};

use safehouse_manager::auth::Lease;
use safehouse_manager::{ManagerError, GATEWAY_PORT};

use crate::errors::ApiError;
use crate::params::Caller;
use crate::server::ConnPermit;
use crate::AppState;
use target::Target;

/// Longest wait for a service to accept the connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Proxied requests and WebSockets open at once into one sandbox; more get 503.
pub const MAX_CONNECTIONS_PER_SANDBOX: usize = 256;

/// The proxy's own state: the daemon's network namespace to return to, and the count of
/// open proxied connections per sandbox.
pub struct PortProxy {
    /// `/proc/thread-self/ns/net`, opened when the router is built (a thread that never
    /// changes namespace). An error here means the proxy cannot work on this host.
    home: Result<Arc<OwnedFd>, String>,
    max_per_sandbox: usize,
    open: Arc<Mutex<HashMap<String, usize>>>,
}

impl Default for PortProxy {
    fn default() -> Self {
        PortProxy::new(MAX_CONNECTIONS_PER_SANDBOX)
    }
}

impl PortProxy {
    pub fn new(max_per_sandbox: usize) -> PortProxy {
        let home = std::fs::File::open("/proc/thread-self/ns/net")
            .map(|f| Arc::new(OwnedFd::from(f)))
            .map_err(|e| format!("cannot open the daemon's own network namespace: {e}"));
        PortProxy { home, max_per_sandbox, open: Default::default() }
    }

    /// A slot of the per-sandbox cap, or `None` when the sandbox has used them all.
    fn acquire(&self, id: &str) -> Option<Slot> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(id.to_string()).or_insert(0);
        if *n >= self.max_per_sandbox {
            return None;
        }
        *n += 1;
        Some(Slot { open: self.open.clone(), id: id.to_string() })
    }

    /// A connected stream to the service on `port` inside the namespace `netns`: first
    /// 127.0.0.1 (which a service bound to 0.0.0.0 also answers), then [::1] for servers
    /// that listen on IPv6 loopback only (`localhost` on recent Node). Returns the stream
    /// and the `Host` to send.
    async fn connect(&self, netns: OwnedFd, id: &str, port: u16) -> Result<(TcpStream, String), ApiError> {
        let home = self.home.clone().map_err(unsupported)?;
        let netns = Arc::new(netns);
        let loopbacks =
            [(libc::AF_INET, IpAddr::V4(Ipv4Addr::LOCALHOST)), (libc::AF_INET6, IpAddr::V6(Ipv6Addr::LOCALHOST))];
        for (domain, ip) in loopbacks {
            let (ns, home) = (netns.clone(), home.clone());
            let made = tokio::task::spawn_blocking(move || {
                safehouse_sys::net::tcp_socket_in_netns(ns.as_fd(), home.as_fd(), domain)
            })
            .await
            .map_err(ApiError::internal)?;
            let fd = match made {
                Ok(fd) => fd,
                Err(e) if e.raw_os_error() == Some(libc::EPERM) => return Err(unsupported(e)),
                // No IPv6 in this kernel: the IPv4 answer stands.
                Err(e) if domain == libc::AF_INET6 && e.raw_os_error() == Some(libc::EAFNOSUPPORT) => break,
                Err(e) => return Err(ApiError::internal(format!("socket in the sandbox's namespace: {e}"))),
            };
            let sock = TcpSocket::from_std_stream(std::net::TcpStream::from(fd));
            match tokio::time::timeout(CONNECT_TIMEOUT, sock.connect(SocketAddr::new(ip, port))).await {
                Ok(Ok(stream)) => {
                    let _ = stream.set_nodelay(true);
                    return Ok((stream, SocketAddr::new(ip, port).to_string()));
                }
                Ok(Err(e)) if refused(&e) => continue,
                Ok(Err(e)) => {
                    return Err(ApiError::new(
                        StatusCode::BAD_GATEWAY,
                        "port_unreachable",
                        format!("cannot connect to port {port} inside sandbox {id}: {e}"),
                    ))
                }
                Err(_) => {
                    return Err(ApiError::new(
                        StatusCode::GATEWAY_TIMEOUT,
                        "port_timeout",
                        format!(
                        "port {port} inside sandbox {id} did not accept a connection within {}s; is the server stuck?",
                        CONNECT_TIMEOUT.as_secs()
                    ),
                    ))
                }
            }
        }
        Err(port_closed(id, port))
    }
}

/// Nothing listens at this address (IPv6 loopback may also be absent altogether).
fn refused(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::ConnectionRefused
        || matches!(e.raw_os_error(), Some(libc::EADDRNOTAVAIL) | Some(libc::ENETUNREACH))
}

fn port_closed(id: &str, port: u16) -> ApiError {
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        "port_closed",
        format!("nothing listens on port {port} inside sandbox {id}; start a server bound to 0.0.0.0 or 127.0.0.1"),
    )
}

fn unsupported(detail: impl std::fmt::Display) -> ApiError {
    eprintln!("safehouse: port proxy unavailable: {detail}");
    ApiError::new(
        StatusCode::NOT_IMPLEMENTED,
        "unsupported",
        "the port proxy needs a daemon running as root: entering a sandbox's network namespace takes \
         CAP_SYS_ADMIN, which a rootless daemon does not have",
    )
}

fn bad_gateway(id: &str, port: u16, e: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        "bad_gateway",
        format!("the server on port {port} inside sandbox {id} did not answer with HTTP/1.1: {e}"),
    )
}

/// One open proxied connection into a sandbox; released on drop.
struct Slot {
    open: Arc<Mutex<HashMap<String, usize>>>,
    id: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.id) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.id);
            }
        }
    }
}

/// Any method on `/v1/sandboxes/{id}/ports/{port}` and `.../{port}/{*rest}`.
pub async fn proxy(State(st): State<AppState>, Caller(tenant): Caller, req: Request) -> Result<Response, ApiError> {
    let target = Target::parse(req.uri())?;
    if target.port == GATEWAY_PORT {
        return Err(ApiError::forbidden(format!(
            "port {GATEWAY_PORT} is the sandbox's network gateway and is not reachable from outside; \
             use another port for your server"
        )));
    }
    let netns = st.manager.netns(&tenant.name, &target.id).map_err(|e| match e {
        // A rootless daemon: the route exists, this daemon cannot serve it.
        ManagerError::Refused { reason, .. } => ApiError::new(StatusCode::NOT_IMPLEMENTED, "unsupported", reason),
        e => e.into(),
    })?;
    let slot = st.ports.acquire(&target.id).ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "capacity",
            format!(
                "sandbox {} already has {} proxied connections open; close some and retry",
                target.id, st.ports.max_per_sandbox
            ),
        )
    })?;
    // Set by the guard or the E2B data plane: the proxied connection lasts as long as the key.
    let lease = req.extensions().get::<Lease>().cloned().ok_or_else(|| ApiError::unauthorized("missing API key"))?;
    let (stream, host) = st.ports.connect(netns, &target.id, target.port).await?;
    forward(req, stream, &host, &target, slot, lease).await
}

/// Sends `req` to the service over `stream` and returns its response, streaming; a
/// WebSocket handshake is answered and then both upgraded connections are spliced.
async fn forward(
    mut req: Request,
    stream: TcpStream,
    host: &str,
    target: &Target,
    slot: Slot,
    lease: Lease,
) -> Result<Response, ApiError> {
    let peer = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    let websocket = headers::is_websocket_upgrade(req.method(), req.headers());
    let proto = if req.extensions().get::<crate::server::Tls>().is_some() { "https" } else { "http" };
    let client_upgrade = websocket.then(|| hyper::upgrade::on(&mut req));
    let permit = req.extensions().get::<ConnPermit>().cloned();
    let (parts, body) = req.into_parts();
    let mut out = hyper::Request::new(body);
    *out.method_mut() = parts.method;
    *out.uri_mut() = target.upstream_uri()?;
    *out.headers_mut() = headers::upstream(&parts.headers, host, &target.prefix(), peer, websocket, proto);

    let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
        .handshake::<_, Body>(TokioIo::new(stream))
        .await
        .map_err(|e| bad_gateway(&target.id, target.port, e))?;
    let slot = Arc::new(slot);
    let (conn_slot, conn_lease) = (slot.clone(), lease.clone());
    tokio::spawn(async move {
        // Lives until the response body is done (or dropped) or the connection upgraded;
        // a revoked key drops it, which cuts both bodies off.
        let _slot = conn_slot;
        tokio::select! {
            _ = conn.with_upgrades() => {}
            () = conn_lease.revoked() => {}
        }
    });
    let mut resp = sender.send_request(out).await.map_err(|e| bad_gateway(&target.id, target.port, e))?;

    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client) = client_upgrade else {
            return Err(bad_gateway(&target.id, target.port, "it switched protocols unasked"));
        };
        let upstream = hyper::upgrade::on(&mut resp);
        tokio::spawn(async move {
            // The spliced connection keeps counting against both caps.
            let (_slot, _permit) = (slot, permit);
            let splice = async {
                if let (Ok(c), Ok(u)) = tokio::join!(client, upstream) {
                    let _ = tokio::io::copy_bidirectional(&mut TokioIo::new(c), &mut TokioIo::new(u)).await;
                }
            };
            // A revoked key closes both sockets (no close frame: the bytes in flight may be
            // mid-frame, so nothing can be added to them).
            tokio::select! {
                () = splice => {}
                () = lease.revoked() => {}
            }
        });
        let (mut parts, _) = resp.into_parts();
        parts.headers = headers::downstream(&parts.headers, true);
        return Ok(Response::from_parts(parts, Body::empty()));
    }
    let (mut parts, body) = resp.into_parts();
    parts.headers = headers::downstream(&parts.headers, false);
    Ok(Response::from_parts(parts, Body::new(body)))
}

//! The HTTP/1.1 front end: forward proxying of `http://` requests with a kept-alive upstream,
//! and CONNECT tunnels. Denials and errors are `text/plain` bodies an agent can read.
//!
//! `Host`: for an absolute-form request the gateway ignores the client's `Host` header and
//! sends the authority it checked (RFC 9112 §3.2.2), so the upstream never sees a host the
//! policy did not decide on.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1 as client;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::server::conn::http1 as server;
use hyper::upgrade::OnUpgrade;
use hyper::{Method, Request, Response, StatusCode, Uri, Version};
use hyper_util::rt::{TokioIo, TokioTimer};
use safehouse_policy::network::Target;
use tokio::net::TcpStream;

use crate::approve::Refusal;
use crate::gateway::Gateway;
use crate::meter::{Activity, Metered};
use crate::target::{connect_target, forward_target, TargetError};

type Body = BoxBody<Bytes, hyper::Error>;
type Upstream = Metered<TcpStream>;

/// Read buffer for upstream connections: large reads keep bulk downloads near loopback
/// speed (hyper's adaptive default starts at 8 KiB, one task hand-off per read).
const UPSTREAM_READ_BUF: usize = 1024 * 1024;

/// Headers that describe one hop, never forwarded (plus those `Connection` lists).
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// The upstream connection kept for the next request to the same authority.
struct Kept {
    target: Target,
    port: u16,
    sender: client::SendRequest<Incoming>,
    /// Drives the upstream connection; aborted when the connection is dropped.
    driver: tokio::task::JoinHandle<()>,
}

impl Drop for Kept {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// One client connection's state.
struct ClientConn {
    gw: Arc<Gateway>,
    activity: Arc<Activity>,
    kept: Mutex<Option<Kept>>,
    /// A CONNECT answered 200: the client's side is taken over once hyper lets go of it.
    tunnel: Mutex<Option<(OnUpgrade, Upstream)>>,
}

pub(crate) async fn serve(gw: Arc<Gateway>, client_io: Metered<TcpStream>, activity: Arc<Activity>) {
    let conn = Arc::new(ClientConn { gw: gw.clone(), activity, kept: Mutex::new(None), tunnel: Mutex::new(None) });
    let svc = {
        let conn = conn.clone();
        hyper::service::service_fn(move |req| {
            let conn = conn.clone();
            async move { Ok::<_, Infallible>(conn.handle(req).await) }
        })
    };
    let served = server::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(gw.config.handshake_timeout)
        .max_header_size(gw.config.max_header_bytes)
        .serve_connection(TokioIo::new(client_io), svc)
        .with_upgrades()
        .await;
    let tunnel = conn.tunnel.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let (Ok(()), Some((on_upgrade, upstream))) = (served, tunnel) {
        if let Ok(upgraded) = on_upgrade.await {
            crate::tunnel::splice(TokioIo::new(upgraded), upstream).await;
        }
    }
}

impl ClientConn {
    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        if req.method() == Method::CONNECT {
            self.connect(req).await
        } else {
            self.forward(req).await
        }
    }

    async fn connect(&self, mut req: Request<Incoming>) -> Response<Body> {
        let what = request_line(&req);
        let t = match connect_target(req.uri()) {
            Ok(t) => t,
            Err(e) => return bad_request(&what, &e),
        };
        let approved = match self.gw.approve(&t.target, t.port).await {
            Ok(a) => a,
            Err(r) => return refusal(&what, r),
        };
        let stream = match self.gw.dial(&approved).await {
            Ok(s) => s,
            Err(r) => return refusal(&what, r),
        };
        let upstream = Metered::upstream(stream, self.activity.clone(), self.gw.clone());
        *self.tunnel.lock().unwrap_or_else(|e| e.into_inner()) = Some((hyper::upgrade::on(&mut req), upstream));
        let mut resp = Response::new(empty());
        resp.extensions_mut().insert(hyper::ext::ReasonPhrase::from_static(b"Connection established"));
        resp
    }

    async fn forward(&self, req: Request<Incoming>) -> Response<Body> {
        let what = request_line(&req);
        let t = match forward_target(req.uri()) {
            Ok(t) => t,
            Err(e) => return bad_request(&what, &e),
        };
        let rule = match self.gw.admit(&t.target, t.port) {
            Ok(rule) => rule,
            Err(r) => return refusal(&what, r),
        };
        let (mut parts, body) = req.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        parts.uri = match path.parse::<Uri>() {
            Ok(u) => u,
            Err(e) => return bad_request(&what, &TargetError::Uri(e.to_string())),
        };
        parts.version = Version::HTTP_11;
        match HeaderValue::from_str(&t.authority) {
            Ok(h) => parts.headers.insert(header::HOST, h),
            Err(_) => return bad_request(&what, &TargetError::Host(t.authority.clone())),
        };
        let mut req = Request::from_parts(parts, body);

        // A kept upstream for this authority was dialled after its own full check; reuse it
        // (no new resolution). If it turns out closed before the request went out, dial anew.
        let kept = self.kept.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(mut kept) = kept.filter(|k| k.target == t.target && k.port == t.port && !k.sender.is_closed()) {
            if kept.sender.ready().await.is_ok() {
                match kept.sender.try_send_request(req).await {
                    Ok(resp) => {
                        self.gw.allowed(&t.target, t.port, &rule);
                        *self.kept.lock().unwrap_or_else(|e| e.into_inner()) = Some(kept);
                        return relay(resp);
                    }
                    Err(mut e) => match e.take_message() {
                        Some(unsent) => req = unsent,
                        None => {
                            self.gw.allowed(&t.target, t.port, &rule);
                            return refusal(&what, self.gw.fail(upstream_error(e.error())));
                        }
                    },
                }
            }
        }

        let approved = match self.gw.checked_addrs(&t.target, t.port, rule).await {
            Ok(a) => a,
            Err(r) => return refusal(&what, r),
        };
        let stream = match self.gw.dial(&approved).await {
            Ok(s) => s,
            Err(r) => return refusal(&what, r),
        };
        let io = TokioIo::new(Metered::upstream(stream, self.activity.clone(), self.gw.clone()));
        let (mut sender, conn) =
            match client::Builder::new().read_buf_exact_size(Some(UPSTREAM_READ_BUF)).handshake(io).await {
                Ok(x) => x,
                Err(e) => return refusal(&what, self.gw.fail(upstream_error(&e))),
            };
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        let result = sender.send_request(req).await;
        let kept = Kept { target: t.target, port: t.port, sender, driver };
        match result {
            Ok(resp) => {
                *self.kept.lock().unwrap_or_else(|e| e.into_inner()) = Some(kept);
                relay(resp)
            }
            Err(e) => refusal(&what, self.gw.fail(upstream_error(&e))),
        }
    }
}

fn relay(mut resp: Response<Incoming>) -> Response<Body> {
    strip_hop_by_hop(resp.headers_mut());
    resp.map(|b| b.boxed())
}

fn upstream_error(e: &hyper::Error) -> Refusal {
    Refusal::Connect(format!("the upstream connection failed: {e}"))
}

/// Removes hop-by-hop headers, including every header the `Connection` header names.
pub(crate) fn strip_hop_by_hop(h: &mut HeaderMap) {
    let listed: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in listed {
        h.remove(n);
    }
    for n in HOP_BY_HOP {
        h.remove(n);
    }
}

/// `METHOD target` for bodies, cut to a readable length.
fn request_line<B>(req: &Request<B>) -> String {
    let mut s = format!("{} {}", req.method(), req.uri());
    if s.len() > 300 {
        let mut cut = 300;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("...");
    }
    s
}

fn empty() -> Body {
    Full::new(Bytes::new()).map_err(|never| match never {}).boxed()
}

fn text(status: StatusCode, body: String) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from(body)).map_err(|never| match never {}).boxed());
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    resp
}

fn bad_request(what: &str, e: &TargetError) -> Response<Body> {
    text(StatusCode::BAD_REQUEST, format!("safehouse gateway: cannot serve {what}\n{e}\n"))
}

/// The response for a refusal: 403 naming the rule, or 502 for resolution/connect failures.
pub(crate) fn refusal(what: &str, r: Refusal) -> Response<Body> {
    match r {
        Refusal::Denied { rule, reason, hint } => {
            let body = format!("safehouse gateway denied {what}\nrule: {rule}\nreason: {reason}\nhint: {hint}\n");
            let mut resp = text(StatusCode::FORBIDDEN, body);
            let value = HeaderValue::from_str(&rule).unwrap_or_else(|_| HeaderValue::from_static("unprintable rule"));
            resp.headers_mut().insert("x-safehouse-denied", value);
            resp
        }
        Refusal::Resolve(m) => {
            text(StatusCode::BAD_GATEWAY, format!("safehouse gateway could not resolve the host of {what}\n{m}\n"))
        }
        Refusal::Connect(m) => {
            text(StatusCode::BAD_GATEWAY, format!("safehouse gateway could not reach the upstream of {what}\n{m}\n"))
        }
    }
}

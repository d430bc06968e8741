//! The HTTP/1.1 front end: forward proxying of `http://` requests with a kept-alive upstream,
//! and CONNECT tunnels. Denials and errors are `text/plain` bodies an agent can read.
//!
//! Heads are read by httparse ([`head`]); bodies are never read by the gateway: a body of
//! known length, and the data of each chunk of a chunked one, is spliced from one socket to
//! the other ([`crate::relay`]). Only heads and chunk-size lines pass through user space.
//!
//! `Host`: for an absolute-form request the gateway ignores the client's `Host` header and
//! sends the authority it checked (RFC 9112 §3.2.2), so the upstream never sees a host the
//! policy did not decide on.

mod forward;
pub use forward::HOP_BY_HOP;
pub mod head;
mod reply;

use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::conn::{Conn, Flow};
use crate::relay::LazyPipe;
use crate::target::connect_target;
use head::{BodyLen, Parsed, RequestHead};
use reply::Reply;

/// What the gateway would send upstream for the request head at the start of `buf`, the way
/// the front end reads it (httparse, the framing rules, the absolute-form target, the
/// rewrite): `Ok(None)` when more bytes are needed, `Err` with the status a client would
/// get. Pure; for tests and fuzzing (the target `gateway_http_head`, `crates/fuzzing`).
pub fn upstream_head(buf: &[u8]) -> Result<Option<Vec<u8>>, u16> {
    let head = match head::parse_request(buf) {
        Ok(Parsed::Done(h, _)) => h,
        Ok(Parsed::Partial) => return Ok(None),
        Err(e) => return Err(e.status()),
    };
    if head.method == "CONNECT" {
        let uri = head.target.parse::<http::Uri>().map_err(|_| 400u16)?;
        connect_target(&uri).map_err(|_| 400u16)?;
        return Ok(Some(Vec::new()));
    }
    let uri = head.target.parse::<http::Uri>().map_err(|_| 400u16)?;
    let t = crate::target::forward_target(&uri).map_err(|_| 400u16)?;
    Ok(Some(forward::request_head(&head, &forward::origin_form(&uri), &t.authority)))
}

/// What the client connection does after an exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    KeepAlive,
    Close,
}

/// The pipes of one client connection, made on first use: towards the upstream and back.
#[derive(Default)]
struct Pipes {
    up: LazyPipe,
    down: LazyPipe,
}

pub(crate) async fn serve(flow: Flow, mut client: Conn) {
    let mut kept = None;
    let mut pipes = Pipes::default();
    loop {
        let head = match read_request(&flow, &mut client).await {
            Ok(Some(h)) => h,
            Ok(None) => return,
            Err(r) => {
                let _ = client.write_all(&flow, &r.encode(true)).await;
                return;
            }
        };
        let next = if head.method == "CONNECT" {
            match connect(&flow, &mut client, &head).await {
                Ok(upstream) => {
                    drop(kept);
                    let _ = crate::relay::tunnel(client, Conn::upstream(upstream), &flow).await;
                    return;
                }
                Err(next) => next,
            }
        } else {
            forward::forward(&flow, &mut client, head, &mut kept, &mut pipes).await
        };
        if next == Next::Close {
            return;
        }
    }
}

/// Reads the next request head. The whole head must arrive within the handshake timeout,
/// which is also how long a kept-alive connection may wait for its next request. None when
/// the client closed, went silent or failed (nothing to answer).
async fn read_request(flow: &Flow, client: &mut Conn) -> Result<Option<RequestHead>, Reply> {
    let config = &flow.gw.config;
    let deadline = Instant::now() + config.handshake_timeout;
    loop {
        match head::parse_request(client.buffered()) {
            Ok(Parsed::Done(h, used)) => {
                client.consume(used);
                return Ok(Some(h));
            }
            Ok(Parsed::Partial) => {
                let have = client.buffered().len();
                if have >= config.max_header_bytes {
                    let msg = format!(
                        "safehouse gateway: the request head is larger than {} bytes\n",
                        config.max_header_bytes
                    );
                    return Err(Reply::text(431, msg));
                }
                match tokio::time::timeout_at(deadline, client.fill(flow, config.max_header_bytes - have)).await {
                    Ok(Ok(n)) if n > 0 => {}
                    _ => return Ok(None),
                }
            }
            Err(e) => return Err(Reply::text(e.status(), format!("safehouse gateway: {e}\n"))),
        }
    }
}

/// Answers a CONNECT: the dialled upstream once the client was told 200, or what the
/// client connection does after a refusal.
async fn connect(flow: &Flow, client: &mut Conn, head: &RequestHead) -> Result<TcpStream, Next> {
    let gw = &flow.gw;
    let what = reply::request_line(&head.method, &head.target);
    let next = if head.close { Next::Close } else { Next::KeepAlive };
    if head.body != BodyLen::Empty {
        let e = "a CONNECT request carries no body; send the tunnel's bytes after the 200";
        return Err(answer(flow, client, reply::bad_request(&what, &e), Next::Close).await);
    }
    let uri = match head.target.parse::<http::Uri>() {
        Ok(u) => u,
        Err(e) => return Err(answer(flow, client, reply::bad_request(&what, &e), next).await),
    };
    let t = match connect_target(&uri) {
        Ok(t) => t,
        Err(e) => return Err(answer(flow, client, reply::target_error(&what, &e), next).await),
    };
    let approved = match gw.approve(&t.target, t.port).await {
        Ok(a) => a,
        Err(r) => return Err(answer(flow, client, reply::refusal(&what, r), next).await),
    };
    let stream = match gw.dial(&approved).await {
        Ok(s) => s,
        Err(r) => return Err(answer(flow, client, reply::refusal(&what, r), next).await),
    };
    match client.write_all(flow, b"HTTP/1.1 200 Connection established\r\n\r\n").await {
        Ok(()) => Ok(stream),
        Err(_) => Err(Next::Close),
    }
}

/// Writes one of the gateway's own responses; what the connection does next.
async fn answer(flow: &Flow, client: &mut Conn, r: Reply, next: Next) -> Next {
    match client.write_all(flow, &r.encode(next == Next::Close)).await {
        Ok(()) => next,
        Err(_) => Next::Close,
    }
}

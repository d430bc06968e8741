//! Forwarding one `http://` request: the checks, the rewritten head, the body both ways,
//! and the upstream connection kept for the next request to the same authority.

use std::future::poll_fn;
use std::io;
use std::task::Poll;

use safehouse_policy::network::Target;

use super::head::{self, BodyLen, Field, Parsed, RequestHead, ResponseHead};
use super::reply::{self, Reply};
use super::{answer, Next, Pipes};
use crate::conn::{Conn, Flow};
use crate::relay::{self, LazyPipe};
use crate::target::forward_target;

/// Headers that describe one hop, never forwarded (plus those `Connection` lists).
pub const HOP_BY_HOP: [&str; 9] = [
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

/// Longest chunk-size line, and largest trailer section, accepted.
const MAX_CHUNK_LINE: usize = 4096;
const MAX_TRAILERS: usize = 16 << 10;

/// The upstream connection kept for the next request to the same authority.
pub(super) struct Kept {
    target: Target,
    port: u16,
    conn: Conn,
}

impl Kept {
    /// Whether the connection is still open and quiet: an upstream that closed it or sent
    /// something unasked is not reused.
    async fn usable(&mut self) -> bool {
        if !self.conn.buffered().is_empty() {
            return false;
        }
        let mut probe = [0u8; 1];
        let stream = &self.conn.stream;
        let peeked = poll_fn(|cx| {
            let mut buf = tokio::io::ReadBuf::new(&mut probe);
            Poll::Ready(stream.poll_peek(cx, &mut buf))
        })
        .await;
        peeked.is_pending()
    }
}

pub(super) async fn forward(
    flow: &Flow,
    client: &mut Conn,
    head: RequestHead,
    kept: &mut Option<Kept>,
    pipes: &mut Pipes,
) -> Next {
    let gw = &flow.gw;
    let what = reply::request_line(&head.method, &head.target);
    // After a refusal the body (if any) was not read: the connection cannot go on.
    let after_refusal = if head.close || head.body != BodyLen::Empty { Next::Close } else { Next::KeepAlive };
    let uri = match head.target.parse::<http::Uri>() {
        Ok(u) => u,
        Err(e) => return answer(flow, client, reply::bad_request(&what, &e), after_refusal).await,
    };
    let t = match forward_target(&uri) {
        Ok(t) => t,
        Err(e) => return answer(flow, client, reply::target_error(&what, &e), after_refusal).await,
    };
    let rule = match gw.admit(&t.target, t.port) {
        Ok(rule) => rule,
        Err(r) => return answer(flow, client, reply::refusal(&what, r), after_refusal).await,
    };
    let upstream_head = request_head(&head, &origin_form(&uri), &t.authority);

    // A kept upstream for this authority was dialled after its own full check; reuse it (no
    // new resolution). If it was closed meanwhile, or the head cannot be written, dial anew.
    let mut upstream = None;
    if let Some(mut k) = kept.take().filter(|k| k.target == t.target && k.port == t.port) {
        if k.usable().await && k.conn.write_all(flow, &upstream_head).await.is_ok() {
            gw.allowed(&t.target, t.port, &rule);
            upstream = Some(k.conn);
        }
    }
    let mut upstream = match upstream {
        Some(u) => u,
        None => {
            let approved = match gw.checked_addrs(&t.target, t.port, rule).await {
                Ok(a) => a,
                Err(r) => return answer(flow, client, reply::refusal(&what, r), after_refusal).await,
            };
            let stream = match gw.dial(&approved).await {
                Ok(s) => s,
                Err(r) => return answer(flow, client, reply::refusal(&what, r), after_refusal).await,
            };
            let mut conn = Conn::upstream(stream);
            if let Err(e) = conn.write_all(flow, &upstream_head).await {
                return answer(flow, client, upstream_failed(flow, &what, &e), Next::Close).await;
            }
            conn
        }
    };

    // The body, as it came: the gateway answered any `Expect: 100-continue` itself.
    if head.expect_continue
        && head.body != BodyLen::Empty
        && client.write_all(flow, b"HTTP/1.1 100 Continue\r\n\r\n").await.is_err()
    {
        return Next::Close;
    }
    let sent = match head.body {
        BodyLen::Empty | BodyLen::UntilClose => Ok(()),
        BodyLen::Length(n) => relay::exact(client, &mut upstream, n, &mut pipes.up, flow).await,
        BodyLen::Chunked => chunked(client, &mut upstream, true, &mut pipes.up, flow).await,
    };
    if let Err(e) = sent {
        return answer(flow, client, upstream_failed(flow, &what, &e), Next::Close).await;
    }

    let resp = match read_response(flow, &mut upstream).await {
        Ok(r) => r,
        Err(e) => return answer(flow, client, upstream_failed(flow, &what, &e), Next::Close).await,
    };
    let body = if head.method.eq_ignore_ascii_case("HEAD") { BodyLen::Empty } else { resp.body };
    let client_chunked = head.minor >= 1;
    let close = head.close || body == BodyLen::UntilClose || (body == BodyLen::Chunked && !client_chunked);
    if client.write_all(flow, &response_head(&resp, body, client_chunked, close)).await.is_err() {
        return Next::Close;
    }
    let relayed = match body {
        BodyLen::Empty => Ok(()),
        BodyLen::Length(n) => relay::exact(&mut upstream, client, n, &mut pipes.down, flow).await,
        BodyLen::Chunked => chunked(&mut upstream, client, client_chunked, &mut pipes.down, flow).await,
        BodyLen::UntilClose => relay::to_end(&mut upstream, client, &mut pipes.down, flow).await.map(|_| ()),
    };
    if relayed.is_err() {
        // Part of the response is out: the client can only learn of the failure by the close.
        return Next::Close;
    }
    if !resp.close && body != BodyLen::UntilClose {
        *kept = Some(Kept { target: t.target, port: t.port, conn: upstream });
    }
    if close {
        Next::Close
    } else {
        Next::KeepAlive
    }
}

/// A 502 for an upstream that failed after the request was allowed (counted as failed).
fn upstream_failed(flow: &Flow, what: &str, e: &io::Error) -> Reply {
    let r = crate::approve::Refusal::Connect(format!("the upstream connection failed: {e}"));
    reply::refusal(what, flow.gw.fail(r))
}

/// The names of the fields a message's `Connection` header lists (hop-by-hop as well).
fn listed_in_connection(fields: &[Field]) -> Vec<String> {
    head::values(fields, "connection").map(str::to_ascii_lowercase).collect()
}

fn forwarded(f: &Field, listed: &[String]) -> bool {
    let name = f.name.to_ascii_lowercase();
    !HOP_BY_HOP.contains(&name.as_str()) && !listed.contains(&name)
}

/// The origin form of an absolute URI's target: its path and query, with the `/` that a
/// URI like `http://host?q` leaves out (an origin-form target starts with one; without it
/// `?q` would reach the upstream as a target it may read as anything).
pub(super) fn origin_form(uri: &http::Uri) -> String {
    match uri.path_and_query().map(|p| p.as_str()) {
        Some(p) if p.starts_with('/') => p.to_string(),
        Some(p) => format!("/{p}"),
        None => "/".to_string(),
    }
}

/// The head sent upstream: origin form, HTTP/1.1, `Host` the checked authority, hop-by-hop
/// fields removed, the body framed as it came.
pub(super) fn request_head(head: &RequestHead, origin: &str, authority: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + head.fields.iter().map(|f| f.name.len() + f.value.len() + 4).sum::<usize>());
    out.extend_from_slice(format!("{} {} HTTP/1.1\r\nHost: {}\r\n", head.method, origin, authority).as_bytes());
    let listed = listed_in_connection(&head.fields);
    for f in &head.fields {
        let lower = f.name.to_ascii_lowercase();
        if lower == "host" || (lower == "expect" && head.expect_continue) || !forwarded(f, &listed) {
            continue;
        }
        push_field(&mut out, &f.name, &f.value);
    }
    if head.body == BodyLen::Chunked {
        out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// The head sent to the client for `resp`, whose body is `body` as relayed.
fn response_head(resp: &ResponseHead, body: BodyLen, client_chunked: bool, close: bool) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {} {}\r\n", resp.code, resp.reason).into_bytes();
    let listed = listed_in_connection(&resp.fields);
    let drop_length = matches!(body, BodyLen::Chunked | BodyLen::UntilClose);
    for f in &resp.fields {
        if !forwarded(f, &listed) || (drop_length && f.name.eq_ignore_ascii_case("content-length")) {
            continue;
        }
        push_field(&mut out, &f.name, &f.value);
    }
    if body == BodyLen::Chunked && client_chunked {
        out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
    }
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

fn push_field(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// Reads the upstream's response head, skipping interim (1xx) responses.
async fn read_response(flow: &Flow, upstream: &mut Conn) -> io::Result<ResponseHead> {
    let max = flow.gw.config.max_header_bytes;
    loop {
        match head::parse_response(upstream.buffered()).map_err(|e| invalid(&format!("a malformed response: {e}")))? {
            Parsed::Done(h, used) => {
                upstream.consume(used);
                match h.code {
                    101 => return Err(invalid("it switched protocols unasked")),
                    100..=199 => continue,
                    _ => return Ok(h),
                }
            }
            Parsed::Partial => {
                let have = upstream.buffered().len();
                if have >= max {
                    return Err(invalid(&format!("a response head larger than {max} bytes")));
                }
                if upstream.fill(flow, max - have).await? == 0 {
                    return Err(invalid("it closed the connection before answering"));
                }
            }
        }
    }
}

/// Relays a chunked body from `from` to `to`: the chunk-size lines through user space, the
/// data of each chunk spliced. `framed`: the receiver gets the chunked framing (HTTP/1.1);
/// otherwise only the data (an HTTP/1.0 client, whose connection then closes). Trailer
/// fields are read and dropped.
async fn chunked(from: &mut Conn, to: &mut Conn, framed: bool, pipe: &mut LazyPipe, flow: &Flow) -> io::Result<()> {
    loop {
        let size = loop {
            match httparse::parse_chunk_size(from.buffered()) {
                Ok(httparse::Status::Complete((used, size))) => {
                    from.consume(used);
                    break size;
                }
                Ok(httparse::Status::Partial) => {
                    if from.buffered().len() > MAX_CHUNK_LINE {
                        return Err(invalid("a chunk-size line too long"));
                    }
                    more(from, flow).await?;
                }
                Err(_) => return Err(invalid("a malformed chunk-size line")),
            }
        };
        if size == 0 {
            loop {
                let mut fields = [httparse::EMPTY_HEADER; 32];
                match httparse::parse_headers(from.buffered(), &mut fields) {
                    Ok(httparse::Status::Complete((used, _))) => {
                        from.consume(used);
                        break;
                    }
                    Ok(httparse::Status::Partial) if from.buffered().len() <= MAX_TRAILERS => more(from, flow).await?,
                    _ => return Err(invalid("a malformed or oversized trailer section")),
                }
            }
            if framed {
                to.write_all(flow, b"0\r\n\r\n").await?;
            }
            return Ok(());
        }
        if framed {
            to.write_all(flow, format!("{size:x}\r\n").as_bytes()).await?;
        }
        relay::exact(from, to, size, pipe, flow).await?;
        while from.buffered().len() < 2 {
            more(from, flow).await?;
        }
        if &from.buffered()[..2] != b"\r\n" {
            return Err(invalid("chunk data not followed by CRLF"));
        }
        from.consume(2);
        if framed {
            to.write_all(flow, b"\r\n").await?;
        }
    }
}

async fn more(from: &mut Conn, flow: &Flow) -> io::Result<()> {
    match from.fill(flow, MAX_CHUNK_LINE).await? {
        0 => Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the sender closed inside a chunked body")),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> RequestHead {
        match head::parse_request(s.as_bytes()).unwrap() {
            Parsed::Done(h, _) => h,
            Parsed::Partial => panic!(),
        }
    }

    #[test]
    fn the_upstream_head_is_origin_form_with_the_checked_host_and_no_hop_fields() {
        let h = parse(
            "GET http://a.test:81/x?y HTTP/1.0\r\nHost: evil\r\nConnection: keep-alive, X-Private\r\n\
             X-Private: 1\r\nProxy-Authorization: b\r\nX-Kept: 2\r\nTE: trailers\r\n\r\n",
        );
        let out = String::from_utf8(request_head(&h, "/x?y", "a.test:81")).unwrap();
        assert_eq!(out, "GET /x?y HTTP/1.1\r\nHost: a.test:81\r\nX-Kept: 2\r\n\r\n");
        let h = parse("POST http://a.test/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n");
        let out = String::from_utf8(request_head(&h, "/", "a.test")).unwrap();
        assert_eq!(out, "POST / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n");
    }

    /// Found by the fuzz target gateway_http_head (fuzz/corpus/gateway_http_head/
    /// crash-query-without-path): `http://0x?f.1:81/` went upstream as `GET ?f.1:81/`.
    #[test]
    fn the_origin_form_starts_with_a_slash() {
        let origin = |s: &str| origin_form(&s.parse().unwrap());
        assert_eq!(origin("http://0x?f.1:81/"), "/?f.1:81/");
        assert_eq!(origin("http://a.test"), "/");
        assert_eq!(origin("http://a.test/x?y"), "/x?y");
        assert_eq!(origin("http://a.test?"), "/?");
    }

    #[test]
    fn the_client_head_frames_the_body_as_relayed() {
        let resp = match head::parse_response(
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\nKeep-Alive: 5\r\nX: y\r\n\r\n",
        )
        .unwrap()
        {
            Parsed::Done(h, _) => h,
            Parsed::Partial => panic!(),
        };
        let out = String::from_utf8(response_head(&resp, BodyLen::Chunked, true, false)).unwrap();
        assert_eq!(out, "HTTP/1.1 200 OK\r\nX: y\r\nTransfer-Encoding: chunked\r\n\r\n");
        let out = String::from_utf8(response_head(&resp, BodyLen::Chunked, false, true)).unwrap();
        assert_eq!(out, "HTTP/1.1 200 OK\r\nX: y\r\nConnection: close\r\n\r\n");
    }
}

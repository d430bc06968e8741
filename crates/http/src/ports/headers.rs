//! Which headers cross the proxy. Hop-by-hop headers (RFC 9110 §7.6.1) and those a
//! `Connection` header names belong to one connection and are dropped both ways; the
//! daemon's `Authorization` and any forwarding headers the client made up are dropped on
//! the way in, and the proxy sets its own.

use std::net::IpAddr;

use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method};

const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Never forwarded to the service: the daemon's credential, and headers the proxy sets.
const REQUEST_ONLY: &[&str] = &[
    "authorization",
    "host",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-prefix",
    "x-forwarded-proto",
];

/// The tokens of every `Connection` header, lowercased.
fn connection_tokens(h: &HeaderMap) -> Vec<String> {
    h.get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

fn has_token(h: &HeaderMap, name: HeaderName, token: &str) -> bool {
    h.get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// A WebSocket handshake: `GET` with `Connection: upgrade` and `Upgrade: websocket`.
/// Other upgrades (h2c, ...) are not forwarded; those requests go on as plain HTTP.
pub fn is_websocket_upgrade(method: &Method, h: &HeaderMap) -> bool {
    method == Method::GET && has_token(h, header::CONNECTION, "upgrade") && has_token(h, header::UPGRADE, "websocket")
}

/// `src` without hop-by-hop headers, those `Connection` names, and `also`.
fn end_to_end(src: &HeaderMap, also: &[&str]) -> HeaderMap {
    let listed = connection_tokens(src);
    let mut out = HeaderMap::with_capacity(src.len());
    for (name, value) in src {
        let n = name.as_str();
        if HOP_BY_HOP.contains(&n) || also.contains(&n) || listed.iter().any(|t| t == n) {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    out
}

fn upgrade_to_websocket(h: &mut HeaderMap) {
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
}

/// The headers sent to the service. `host` is the address connected to (`127.0.0.1:PORT`).
pub fn upstream(
    src: &HeaderMap,
    host: &str,
    prefix: &str,
    peer: Option<IpAddr>,
    websocket: bool,
    proto: &'static str,
) -> HeaderMap {
    let mut h = end_to_end(src, REQUEST_ONLY);
    if src.contains_key(header::TRANSFER_ENCODING) {
        // The body was framed by chunks, so a Content-Length alongside is a lie (RFC 9112
        // §6.3); never let it frame the body towards the service.
        h.remove(header::CONTENT_LENGTH);
    }
    if let Ok(v) = HeaderValue::from_str(host) {
        h.insert(header::HOST, v);
    }
    if let Ok(v) = HeaderValue::from_str(prefix) {
        h.insert(HeaderName::from_static("x-forwarded-prefix"), v);
    }
    h.insert(HeaderName::from_static("x-forwarded-proto"), HeaderValue::from_static(proto));
    if let Some(Ok(v)) = peer.map(|ip| HeaderValue::from_str(&ip.to_string())) {
        h.insert(HeaderName::from_static("x-forwarded-for"), v);
    }
    if websocket {
        upgrade_to_websocket(&mut h);
    }
    h
}

/// The headers returned to the client; `switching` for a 101 to a WebSocket handshake.
pub fn downstream(src: &HeaderMap, switching: bool) -> HeaderMap {
    let mut h = end_to_end(src, &[]);
    if switching {
        upgrade_to_websocket(&mut h);
    }
    h
}

#[cfg(test)]
mod tests {
    use pretty_assertions::assert_eq;

    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn pairs(h: &HeaderMap) -> Vec<(String, String)> {
        let mut v: Vec<_> = h.iter().map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_string())).collect();
        v.sort();
        v
    }

    fn owned(p: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut v: Vec<_> = p.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        v.sort();
        v
    }

    const PREFIX: &str = "/v1/sandboxes/sb_aaaaaaaaaaaaaaaaaaaaaaaaaa/ports/8000";

    #[test]
    fn requests_lose_the_key_hop_by_hop_and_forged_forwarding_headers() {
        let src = map(&[
            ("authorization", "Bearer sh_secret"),
            ("host", "127.0.0.1:8700"),
            ("connection", "keep-alive, X-Secret-Hop"),
            ("x-secret-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("proxy-authorization", "Basic x"),
            ("upgrade", "h2c"),
            ("x-forwarded-for", "6.6.6.6"),
            ("forwarded", "for=6.6.6.6"),
            ("x-forwarded-prefix", "/evil"),
            ("accept", "text/html"),
            ("cookie", "a=b"),
            ("x-custom", "1"),
            ("x-custom", "2"),
        ]);
        let got = upstream(&src, "127.0.0.1:8000", PREFIX, Some("10.1.2.3".parse().unwrap()), false, "http");
        assert_eq!(
            pairs(&got),
            owned(&[
                ("accept", "text/html"),
                ("cookie", "a=b"),
                ("host", "127.0.0.1:8000"),
                ("x-custom", "1"),
                ("x-custom", "2"),
                ("x-forwarded-for", "10.1.2.3"),
                ("x-forwarded-prefix", PREFIX),
                ("x-forwarded-proto", "http"),
            ])
        );
    }

    #[test]
    fn a_content_length_beside_chunked_framing_is_dropped() {
        let src = map(&[("transfer-encoding", "chunked"), ("content-length", "5")]);
        let got = upstream(&src, "127.0.0.1:1", PREFIX, None, false, "http");
        assert!(!got.contains_key("content-length") && !got.contains_key("transfer-encoding"), "{got:?}");
        let got = upstream(&map(&[("content-length", "5")]), "127.0.0.1:1", PREFIX, None, false, "http");
        assert_eq!(got["content-length"], "5");
    }

    #[test]
    fn websocket_handshakes_keep_their_upgrade() {
        let src = map(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("sec-websocket-version", "13"),
            ("authorization", "Bearer k"),
        ]);
        assert!(is_websocket_upgrade(&Method::GET, &src));
        assert!(!is_websocket_upgrade(&Method::POST, &src));
        assert!(!is_websocket_upgrade(&Method::GET, &map(&[("connection", "upgrade"), ("upgrade", "h2c")])));
        assert!(!is_websocket_upgrade(&Method::GET, &map(&[("upgrade", "websocket")])));
        let got = upstream(&src, "127.0.0.1:9000", PREFIX, None, true, "http");
        assert_eq!(
            pairs(&got),
            owned(&[
                ("connection", "upgrade"),
                ("host", "127.0.0.1:9000"),
                ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
                ("sec-websocket-version", "13"),
                ("upgrade", "websocket"),
                ("x-forwarded-prefix", PREFIX),
                ("x-forwarded-proto", "http"),
            ])
        );
    }

    #[test]
    fn responses_lose_hop_by_hop_headers() {
        let src = map(&[
            ("connection", "close, x-hop"),
            ("x-hop", "1"),
            ("transfer-encoding", "chunked"),
            ("keep-alive", "timeout=5"),
            ("content-type", "text/html"),
            ("set-cookie", "s=1"),
        ]);
        assert_eq!(pairs(&downstream(&src, false)), owned(&[("content-type", "text/html"), ("set-cookie", "s=1")]));
        let switching = map(&[("connection", "Upgrade"), ("upgrade", "websocket"), ("sec-websocket-accept", "x")]);
        assert_eq!(
            pairs(&downstream(&switching, true)),
            owned(&[("connection", "upgrade"), ("sec-websocket-accept", "x"), ("upgrade", "websocket")])
        );
    }
}

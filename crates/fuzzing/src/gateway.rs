//! The gateway's parsers of what sandboxed code sends (and of what upstreams answer).

use safehouse_gateway::dns::{parse_response, TYPE_A, TYPE_AAAA};
use safehouse_gateway::http::head::{self, BodyLen, Parsed};
use safehouse_gateway::http::HOP_BY_HOP;
use safehouse_gateway::socks::{self, parse_greeting, parse_request, request_target};
use safehouse_gateway::target::parse_request_target;

/// `gateway_http_head`: a request head as the front end reads it (httparse, the framing
/// rules, the absolute-form target, the rewrite sent upstream); response heads and
/// chunk-size lines through the same parsers. The rewritten head parses again, names one
/// Host, carries no hop-by-hop field and frames the body as the client did.
pub fn http_head(data: &[u8]) {
    let _ = head::parse_response(data);
    let _ = httparse::parse_chunk_size(data);
    let Ok(Some(out)) = safehouse_gateway::http::upstream_head(data) else { return };
    let Ok(Parsed::Done(original, _)) = head::parse_request(data) else { panic!("rewrote a head that does not parse") };
    if original.method == "CONNECT" {
        return;
    }
    let rewritten = match head::parse_request(&out) {
        Ok(Parsed::Done(h, n)) => {
            assert_eq!(n, out.len(), "the rewritten head has trailing bytes");
            h
        }
        other => panic!("the rewritten head does not parse: {other:?}\n{}", String::from_utf8_lossy(&out)),
    };
    assert_eq!(rewritten.minor, 1);
    assert!(rewritten.target.starts_with('/') || rewritten.target == "*", "{}", rewritten.target);
    let hosts: Vec<_> = rewritten.fields.iter().filter(|f| f.name.eq_ignore_ascii_case("host")).collect();
    assert_eq!(hosts.len(), 1, "{}", String::from_utf8_lossy(&out));
    for f in &rewritten.fields {
        let name = f.name.to_ascii_lowercase();
        if name == "transfer-encoding" {
            assert_eq!(f.value, b"chunked");
            continue;
        }
        assert!(!HOP_BY_HOP.contains(&name.as_str()), "{name} forwarded");
    }
    let framing = |b: BodyLen| match b {
        BodyLen::Empty | BodyLen::Length(0) => BodyLen::Empty,
        other => other,
    };
    assert_eq!(framing(rewritten.body), framing(original.body));
}

/// `gateway_connect`: the target of a request line (CONNECT authority form, or an absolute
/// `http://` URI; the first byte picks the method). An accepted target has a port from 1,
/// no user info, and re-parses as a policy target.
pub fn connect(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else { return };
    let Ok(s) = std::str::from_utf8(rest) else { return };
    let method = if first & 1 == 0 { http::Method::CONNECT } else { http::Method::GET };
    if let Ok(t) = parse_request_target(&method, s) {
        assert!(t.port >= 1);
        assert!(!t.authority.contains('@'), "{}", t.authority);
        let again = safehouse_policy::network::parse_target(&t.target.to_string());
        assert!(again.is_ok(), "{:?} -> {:?}", t.target, again);
    }
}

/// `gateway_socks5`: the SOCKS5 greeting then request (RFC 1928) from one buffer. What a
/// message consumes is within the buffer, and every prefix of a request is `Incomplete`,
/// never a different answer.
pub fn socks5(data: &[u8]) {
    let whole = parse_greeting(data);
    let rest = match &whole {
        Ok(socks::Parsed::Done(_, used)) => {
            assert!(*used <= data.len());
            &data[*used..]
        }
        _ => data,
    };
    if let Ok(socks::Parsed::Done(req, used)) = parse_request(rest) {
        assert!(used <= rest.len());
        let _ = request_target(&req.addr);
        for cut in 0..used {
            assert_eq!(parse_request(&rest[..cut]), Ok(socks::Parsed::Incomplete), "cut {cut}");
        }
    }
}

/// `gateway_dns`: a DNS answer as the stub reads it, for both question types (the first
/// byte picks type and name). Only addresses of the asked family come back.
pub fn dns(data: &[u8]) {
    let Some((&sel, msg)) = data.split_first() else { return };
    let qtype = if sel & 1 == 0 { TYPE_A } else { TYPE_AAAA };
    let name = if sel & 2 == 0 { "a.test" } else { "www.example.com" };
    let id = if msg.len() >= 2 { u16::from_be_bytes([msg[0], msg[1]]) } else { 0 };
    if let Ok(answer) = parse_response(msg, id, name, qtype) {
        for a in answer.addrs {
            assert_eq!(a.is_ipv4(), qtype == TYPE_A, "{a} for type {qtype}");
        }
    }
}

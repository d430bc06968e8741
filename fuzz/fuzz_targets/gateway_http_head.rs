//! The gateway's HTTP request head, as the front end reads it: httparse, the framing rules
//! (no smuggling shapes), the absolute-form target and the rewrite sent upstream. Beyond "no
//! panic", the rewritten head must itself parse, name one Host (the checked authority),
//! carry no hop-by-hop field, and frame the body as the client did. Response heads and
//! chunk-size lines from an upstream go through the same parsers.
#![no_main]

use libfuzzer_sys::fuzz_target;
use safehouse_gateway::http::head::{self, BodyLen, Parsed};

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

fuzz_target!(|data: &[u8]| {
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
});

//! The E2B-compatible front: the Connect framing of the in-sandbox API (envelopes, JSON
//! messages, gzip), the messages' checks, the control plane's create body and the sandbox
//! access token.

use http::{HeaderMap, HeaderValue};
use safehouse_e2b::connect::{frame, parse_message, FrameReader, FLAG_COMPRESSED, MAX_MESSAGE};
use safehouse_e2b::control::{create_request, create_template, parse_body};
use safehouse_e2b::messages::{absolute, input_bytes, start_request, watch_request};
use safehouse_e2b::token::{self, Holder};
use safehouse_manager::auth::Tenant;
use safehouse_manager::limits;
use safehouse_policy::model::parse_json;
use serde_json::Value;

/// `e2b_connect`: the first byte picks what the rest is (its low two bits) and how it is
/// read (the others): a stream of envelopes, a message, a create body or an access token.
pub fn connect(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else { return };
    match sel & 3 {
        0 => envelopes(sel >> 2, rest),
        1 => message(rest),
        2 => create(sel & 4 != 0, sel & 8 != 0, rest),
        _ => access_token(rest),
    }
}

/// What a reader makes of `stream` pushed in pieces of `piece` bytes.
fn read(gzip: bool, stream: &[u8], piece: usize) -> (Vec<(u8, Vec<u8>)>, Option<String>) {
    let mut headers = HeaderMap::new();
    if gzip {
        headers.insert("connect-content-encoding", HeaderValue::from_static("gzip"));
    }
    let mut reader = FrameReader::for_request(&headers).expect("gzip and identity are encodings");
    let mut frames = Vec::new();
    for chunk in stream.chunks(piece) {
        reader.push(chunk);
        loop {
            match reader.next_frame() {
                Ok(Some((flag, payload))) => frames.push((flag, payload.to_vec())),
                Ok(None) => break,
                Err(e) => return (frames, Some(format!("{e:?}"))),
            }
        }
    }
    (frames, None)
}

/// Envelopes: the same whatever the pieces; without compression each one is exactly the
/// bytes it was read from; a decompressed message is within the limit; every payload is
/// read as a message.
fn envelopes(sel: u8, stream: &[u8]) {
    let gzip = sel & 1 != 0;
    let piece = (sel >> 1) as usize + 1;
    let (whole, whole_err) = read(gzip, stream, stream.len().max(1));
    let (pieces, pieces_err) = read(gzip, stream, piece);
    assert_eq!(whole, pieces, "envelopes depend on how the bytes arrive");
    assert_eq!(whole_err, pieces_err, "the outcome depends on how the bytes arrive");
    let mut at = 0;
    for (flag, payload) in &whole {
        assert_eq!(flag & FLAG_COMPRESSED, 0, "a flag still says compressed");
        assert!(payload.len() <= MAX_MESSAGE);
        if !gzip {
            let again = frame(*flag, payload);
            assert_eq!(&stream[at..at + again.len()], &again[..], "an envelope is not the bytes it came from");
            at += again.len();
        }
        if let Ok(v) = parse_message(payload) {
            assert!(v.is_object());
            checks(&v);
        }
    }
}

fn message(bytes: &[u8]) {
    if let Ok(v) = parse_message(bytes) {
        assert!(v.is_object());
        checks(&v);
    }
}

/// The checks the process and filesystem calls run on a message before any sandbox.
fn checks(v: &Value) {
    if let Ok((req, _tag, _stdin)) = start_request(v) {
        limits::check_start(&req).expect("a mapped start request passes the native checks");
        let cwd = req.cwd.expect("a mapped start request has a working directory");
        assert!(cwd.starts_with('/'), "{cwd}");
    }
    let _ = input_bytes(v.get("input"));
    if let Ok((path, _)) = watch_request(v) {
        assert!(path.starts_with('/'), "{path}");
    }
    if let Some(p) = v.get("path").and_then(Value::as_str) {
        if let Ok(abs) = absolute(p) {
            assert!(abs.starts_with('/'), "{abs}");
        }
    }
}

/// `POST /v2/sandboxes`: what the front makes of a body is a create request the native
/// checks accept, with a policy that is JSON the policy parser reads (accepted or refused
/// with a reason, as any caller's).
fn create(in_store: bool, from_snapshot: bool, body: &[u8]) {
    let Ok(body) = parse_body(body) else { return };
    let Ok(template) = create_template(&body) else { return };
    let Ok(req) = create_request(&body, &template, in_store, from_snapshot) else { return };
    limits::check_env(&req.env).expect("mapped env passes the native check");
    if let Some(t) = req.timeout_s {
        limits::check_timeout(t).expect("a mapped timeout passes the native check");
    }
    assert!(req.policy.is_none() || req.preset.is_none(), "both a policy and a preset");
    if let Some(p) = &req.policy {
        let _ = parse_json(&p.to_string(), "policy");
    }
}

const SECRET: [u8; 32] = [7; 32];
const ADMIN_HASH: [u8; 32] = [9; 32];
const SANDBOX: &str = "sb_aaaaaaaaaaaaaaaaaaaaaaaaaa";

/// A token is accepted only as exactly the token issued to the holder it names.
fn access_token(bytes: &[u8]) {
    let Ok(t) = std::str::from_utf8(bytes) else { return };
    let named = token::named_holder(t);
    if let Ok(holder) = token::verify(&SECRET, SANDBOX, Some(t), &ADMIN_HASH) {
        assert_eq!(named.as_ref(), Some(&holder));
        let who = match &holder {
            Holder::Admin => Tenant { name: "admin".into(), key_id: None },
            Holder::Key(id) => Tenant { name: "t".into(), key_id: Some(id.clone()) },
        };
        assert_eq!(t.trim(), token::issue(&SECRET, SANDBOX, &who, &ADMIN_HASH), "a token other than the issued one");
    }
}

//! Reading HTTP/1.x message heads (httparse does the bytes) and deciding how long the body
//! after them is (RFC 9112 §6). Pure functions over byte slices, fuzzed
//! (the target `gateway_http_head`, `crates/fuzzing`).
//!
//! The framing rules refuse what a request-smuggling attack needs: a request with both
//! `Transfer-Encoding` and `Content-Length`, a transfer coding other than a lone `chunked`,
//! `Content-Length` values that disagree or are not digits, `Transfer-Encoding` on
//! HTTP/1.0. A response gets the same reading, except that what cannot be framed is read
//! until the upstream closes (as RFC 9112 §6.3 says for a response).

/// Most header fields in one head; more is a 431 (a 502 from upstream). A request at the
/// limit must have a `Host` among them: the head sent upstream carries one (the checked
/// authority, in place of the client's) and must stay within the limit too.
pub const MAX_HEADERS: usize = 128;

/// Result of reading a head from a buffer that may hold only part of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed<T> {
    /// More bytes are needed.
    Partial,
    /// The head and how many bytes it took.
    Done(T, usize),
}

/// One header field as sent: the name's case is kept, the value is raw bytes (httparse
/// checked there is no CR, LF or NUL in it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    pub value: Vec<u8>,
}

/// How long a message body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyLen {
    /// No body.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Until the sender closes (responses only).
    UntilClose,
}

/// A request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    pub method: String,
    pub target: String,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor: u8,
    pub fields: Vec<Field>,
    pub body: BodyLen,
    /// The client asked to close after this exchange (`Connection: close`, or HTTP/1.0
    /// without `Connection: keep-alive`).
    pub close: bool,
    /// `Expect: 100-continue`.
    pub expect_continue: bool,
}

/// A response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    pub code: u16,
    pub reason: String,
    pub minor: u8,
    pub fields: Vec<Field>,
    /// Read as if the request was not HEAD; the caller knows better for HEAD.
    pub body: BodyLen,
    /// The upstream will close after this response.
    pub close: bool,
}

/// Why a head cannot be used; `Display` says it to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    #[error("the request head is malformed: {0}")]
    Syntax(String),
    #[error("the head has more than {MAX_HEADERS} header fields")]
    TooManyFields,
    #[error("Content-Length {0:?} is not a number of bytes")]
    ContentLength(String),
    #[error("Content-Length values disagree ({0:?} and {1:?})")]
    ContentLengths(String, String),
    #[error("both Transfer-Encoding and Content-Length are present; send one of them")]
    Ambiguous,
    #[error("transfer coding {0:?} is not supported; send the body with Content-Length or Transfer-Encoding: chunked")]
    Coding(String),
    #[error("HTTP/1.0 has no Transfer-Encoding; use HTTP/1.1 or Content-Length")]
    CodingOn10,
}

impl HeadError {
    /// The status a client gets for it.
    pub fn status(&self) -> u16 {
        match self {
            HeadError::TooManyFields => 431,
            HeadError::Coding(_) => 501,
            _ => 400,
        }
    }
}

fn syntax(e: httparse::Error) -> HeadError {
    match e {
        httparse::Error::TooManyHeaders => HeadError::TooManyFields,
        e => HeadError::Syntax(e.to_string()),
    }
}

fn fields(raw: &[httparse::Header<'_>]) -> Vec<Field> {
    raw.iter().map(|h| Field { name: h.name.to_string(), value: h.value.to_vec() }).collect()
}

/// Reads a request head from the start of `buf`.
pub fn parse_request(buf: &[u8]) -> Result<Parsed<RequestHead>, HeadError> {
    let mut raw = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut raw);
    let used = match req.parse(buf).map_err(syntax)? {
        httparse::Status::Partial => return Ok(Parsed::Partial),
        httparse::Status::Complete(n) => n,
    };
    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return Ok(Parsed::Partial);
    };
    let fields = fields(req.headers);
    if fields.len() >= MAX_HEADERS && !fields.iter().any(|f| f.name.eq_ignore_ascii_case("host")) {
        return Err(HeadError::TooManyFields);
    }
    let body = match framing(&fields)? {
        Framing::None => BodyLen::Empty,
        Framing::Length(n) => BodyLen::Length(n),
        Framing::Chunked if minor == 0 => return Err(HeadError::CodingOn10),
        Framing::Chunked => BodyLen::Chunked,
        Framing::Other(c) => return Err(HeadError::Coding(c)),
    };
    let close = wants_close(&fields, minor);
    let expect_continue = minor >= 1 && values(&fields, "expect").any(|v| v.eq_ignore_ascii_case("100-continue"));
    let head = RequestHead {
        method: method.to_string(),
        target: target.to_string(),
        minor,
        fields,
        body,
        close,
        expect_continue,
    };
    Ok(Parsed::Done(head, used))
}

/// Reads a response head from the start of `buf` (interim 1xx heads included: the caller
/// skips them).
pub fn parse_response(buf: &[u8]) -> Result<Parsed<ResponseHead>, HeadError> {
    let mut raw = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut raw);
    let used = match resp.parse(buf).map_err(syntax)? {
        httparse::Status::Partial => return Ok(Parsed::Partial),
        httparse::Status::Complete(n) => n,
    };
    let (Some(code), Some(minor)) = (resp.code, resp.version) else { return Ok(Parsed::Partial) };
    let fields = fields(resp.headers);
    let body = match code {
        100..=199 | 204 | 304 => BodyLen::Empty,
        _ => match framing(&fields) {
            Ok(Framing::None) | Ok(Framing::Other(_)) => BodyLen::UntilClose,
            Ok(Framing::Length(n)) => BodyLen::Length(n),
            Ok(Framing::Chunked) => BodyLen::Chunked,
            // Transfer-Encoding wins over Content-Length (RFC 9112 §6.3 item 3)...
            Err(HeadError::Ambiguous) => BodyLen::Chunked,
            // ... and a bad Content-Length cannot be framed at all.
            Err(e) => return Err(e),
        },
    };
    let close = wants_close(&fields, minor) || body == BodyLen::UntilClose;
    let reason = resp.reason.unwrap_or("").to_string();
    Ok(Parsed::Done(ResponseHead { code, reason, minor, fields, body, close }, used))
}

enum Framing {
    None,
    Length(u64),
    Chunked,
    Other(String),
}

/// The comma-separated values of every field named `name`, trimmed, empty ones skipped.
pub fn values<'a>(fields: &'a [Field], name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    fields
        .iter()
        .filter(move |f| f.name.eq_ignore_ascii_case(name))
        .filter_map(|f| std::str::from_utf8(&f.value).ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

fn framing(fields: &[Field]) -> Result<Framing, HeadError> {
    let has = |name: &str| fields.iter().any(|f| f.name.eq_ignore_ascii_case(name));
    let te = has("transfer-encoding");
    let mut length: Option<(u64, String)> = None;
    for f in fields.iter().filter(|f| f.name.eq_ignore_ascii_case("content-length")) {
        let text = String::from_utf8_lossy(&f.value).into_owned();
        let n = parse_length(&text).ok_or_else(|| HeadError::ContentLength(text.clone()))?;
        match &length {
            Some((m, first)) if *m != n => return Err(HeadError::ContentLengths(first.clone(), text)),
            _ => length = Some((n, text)),
        }
    }
    if te {
        if length.is_some() {
            return Err(HeadError::Ambiguous);
        }
        // Non-UTF-8 bytes in the field are a coding nobody knows.
        if fields
            .iter()
            .filter(|f| f.name.eq_ignore_ascii_case("transfer-encoding"))
            .any(|f| std::str::from_utf8(&f.value).is_err())
        {
            return Ok(Framing::Other("(not UTF-8)".into()));
        }
        let codings: Vec<&str> = values(fields, "transfer-encoding").collect();
        return Ok(match codings.as_slice() {
            [c] if c.eq_ignore_ascii_case("chunked") => Framing::Chunked,
            _ => Framing::Other(codings.join(", ")),
        });
    }
    Ok(match length {
        Some((n, _)) => Framing::Length(n),
        None => Framing::None,
    })
}

/// `1*DIGIT`, no sign, no spaces, no list: what a Content-Length may hold.
fn parse_length(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 19 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn wants_close(fields: &[Field], minor: u8) -> bool {
    let mut close = minor == 0;
    for v in values(fields, "connection") {
        if v.eq_ignore_ascii_case("close") {
            return true;
        }
        if v.eq_ignore_ascii_case("keep-alive") {
            close = false;
        }
    }
    close
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(s: &str) -> Result<RequestHead, HeadError> {
        match parse_request(s.as_bytes())? {
            Parsed::Done(h, n) => {
                assert_eq!(n, s.len());
                Ok(h)
            }
            Parsed::Partial => panic!("partial: {s:?}"),
        }
    }

    /// Found by the fuzz target gateway_http_head (fuzz/corpus/gateway_http_head/
    /// crash-128-fields-no-host): a request of 128 fields without `Host` went upstream with
    /// 129, past the limit its own reader keeps.
    #[test]
    fn a_request_leaves_room_for_the_host_sent_upstream() {
        let head = |n: usize| format!("GET http://a.test/ HTTP/1.0\r\n{}\r\n", "X-A: 1\r\n".repeat(n));
        assert!(req(&head(MAX_HEADERS - 1)).is_ok());
        assert_eq!(req(&head(MAX_HEADERS)).unwrap_err(), HeadError::TooManyFields);
        let with_host =
            format!("GET http://a.test/ HTTP/1.0\r\nHost: a.test\r\n{}\r\n", "X-A: 1\r\n".repeat(MAX_HEADERS - 1));
        assert!(req(&with_host).is_ok());
        let out = crate::http::upstream_head(head(MAX_HEADERS - 1).as_bytes()).unwrap().unwrap();
        let Parsed::Done(_, n) = parse_request(&out).unwrap() else { panic!("partial") };
        assert_eq!(n, out.len());
    }

    #[test]
    fn request_framing() {
        let h = req("GET http://a.test/ HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        assert_eq!((h.body, h.close, h.minor), (BodyLen::Empty, false, 1));
        let h = req("POST http://a.test/ HTTP/1.1\r\nContent-Length: 12\r\n\r\n").unwrap();
        assert_eq!(h.body, BodyLen::Length(12));
        let h = req("POST http://a.test/ HTTP/1.1\r\ncontent-length: 5\r\nContent-Length: 5\r\n\r\n").unwrap();
        assert_eq!(h.body, BodyLen::Length(5));
        let h = req("POST http://a.test/ HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n").unwrap();
        assert_eq!(h.body, BodyLen::Chunked);
        let h = req("GET http://a.test/ HTTP/1.0\r\n\r\n").unwrap();
        assert!(h.close);
        let h = req("GET http://a.test/ HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").unwrap();
        assert!(!h.close);
        let h = req("GET http://a.test/ HTTP/1.1\r\nConnection: foo, close\r\nExpect: 100-continue\r\n\r\n").unwrap();
        assert!(h.close && h.expect_continue);
    }

    #[test]
    fn smuggling_shapes_are_refused() {
        let e = |s: &str| req(s).unwrap_err();
        assert_eq!(
            e("POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"),
            HeadError::Ambiguous
        );
        assert_eq!(e("POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n").status(), 400);
        assert_eq!(e("POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n"), HeadError::ContentLength("5, 5".into()));
        assert_eq!(e("POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n").status(), 400);
        assert_eq!(e("POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n").status(), 400);
        assert_eq!(e("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n").status(), 501);
        assert_eq!(
            e("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n").status(),
            501
        );
        assert_eq!(e("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"), HeadError::CodingOn10);
        assert_eq!(e("GET / HTTP/1.1\r\nBad Name: x\r\n\r\n").status(), 400);
        assert_eq!(e("GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n").status(), 400, "obs-fold");
        let many: String = (0..200).map(|i| format!("X-{i}: 1\r\n")).collect();
        assert_eq!(e(&format!("GET / HTTP/1.1\r\n{many}\r\n")).status(), 431);
    }

    #[test]
    fn heads_arrive_in_pieces() {
        let s = b"GET http://a.test/ HTTP/1.1\r\nHost: a\r\n\r\nrest";
        for cut in 0..s.len() - 4 {
            assert_eq!(parse_request(&s[..cut]), Ok(Parsed::Partial), "cut {cut}");
        }
        assert!(matches!(parse_request(s), Ok(Parsed::Done(_, n)) if n == s.len() - 4));
    }

    #[test]
    fn response_framing() {
        let r = |s: &str| match parse_response(s.as_bytes()).unwrap() {
            Parsed::Done(h, _) => h,
            Parsed::Partial => panic!("partial"),
        };
        assert_eq!(r("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n").body, BodyLen::Length(3));
        let h = r("HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!((h.body, h.close), (BodyLen::UntilClose, true));
        assert_eq!(r("HTTP/1.1 204 No Content\r\nContent-Length: 3\r\n\r\n").body, BodyLen::Empty);
        assert_eq!(r("HTTP/1.1 100 Continue\r\n\r\n").body, BodyLen::Empty);
        let h = r("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(h.body, BodyLen::Chunked);
        assert_eq!(r("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n").body, BodyLen::UntilClose);
        assert!(r("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n").close);
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n").is_err());
        assert_eq!(r("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n").reason, "Not Found");
    }
}

//! The Connect protocol with the JSON codec, as the E2B SDK speaks it to its in-sandbox
//! API: unary calls are a plain JSON request and response; streams are envelopes (one flag
//! byte, a 4-byte big-endian length, the JSON message), and a server stream ends with an
//! envelope flagged [`FLAG_END`] carrying `{}` or `{"error": {...}}`.
//!
//! Requests may be gzip-compressed (`Content-Encoding: gzip` on a unary body; envelopes
//! flagged [`FLAG_COMPRESSED`] with `Connect-Content-Encoding: gzip` on a stream), each
//! message at most [`MAX_MESSAGE`] once decompressed. Answers are never compressed (the
//! client's `Connect-Accept-Encoding` is an offer). A client's deadline
//! (`Connect-Timeout-Ms`) ends a stream with `deadline_exceeded` ([`deadline_of`]).

use std::io::Read;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::{Buf, Bytes, BytesMut};
use futures_util::StreamExt;
use serde_json::{json, Value};

use safehouse_hostfs::FileError;
use safehouse_http::ApiError;
use safehouse_manager::ManagerError;

/// An envelope whose payload is compressed (with the stream's `Connect-Content-Encoding`).
pub const FLAG_COMPRESSED: u8 = 0x01;
/// The last envelope of a server stream.
pub const FLAG_END: u8 = 0x02;
/// Largest message accepted from a client (stdin chunks are the largest).
pub const MAX_MESSAGE: usize = 4 << 20;
/// The content type of streams.
pub const STREAM_CONTENT_TYPE: &str = "application/connect+json";

/// The Connect error codes the front answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    Canceled,
    InvalidArgument,
    DeadlineExceeded,
    NotFound,
    AlreadyExists,
    PermissionDenied,
    ResourceExhausted,
    FailedPrecondition,
    Unimplemented,
    Internal,
    Unavailable,
    Unauthenticated,
}

impl Code {
    /// The code's name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Canceled => "canceled",
            Code::InvalidArgument => "invalid_argument",
            Code::DeadlineExceeded => "deadline_exceeded",
            Code::NotFound => "not_found",
            Code::AlreadyExists => "already_exists",
            Code::PermissionDenied => "permission_denied",
            Code::ResourceExhausted => "resource_exhausted",
            Code::FailedPrecondition => "failed_precondition",
            Code::Unimplemented => "unimplemented",
            Code::Internal => "internal",
            Code::Unavailable => "unavailable",
            Code::Unauthenticated => "unauthenticated",
        }
    }

    /// The HTTP status of a unary error with this code (the Connect spec's table).
    pub fn http_status(self) -> StatusCode {
        match self {
            Code::Canceled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
            Code::InvalidArgument | Code::FailedPrecondition => StatusCode::BAD_REQUEST,
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
            Code::AlreadyExists => StatusCode::CONFLICT,
            Code::PermissionDenied => StatusCode::FORBIDDEN,
            Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
            Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        }
    }
}

/// A Connect error: a code and a message saying what to change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectError {
    pub code: Code,
    pub message: String,
}

impl ConnectError {
    pub fn new(code: Code, message: impl Into<String>) -> ConnectError {
        ConnectError { code, message: message.into() }
    }
    pub fn invalid(message: impl Into<String>) -> ConnectError {
        ConnectError::new(Code::InvalidArgument, message)
    }
    pub fn unimplemented(message: impl Into<String>) -> ConnectError {
        ConnectError::new(Code::Unimplemented, message)
    }
    pub fn internal(detail: impl std::fmt::Display) -> ConnectError {
        eprintln!("safehouse: e2b: internal error: {detail}");
        ConnectError::new(Code::Internal, "internal error; see the daemon's log")
    }

    /// `{"code", "message"}`, the error object of both unary and stream errors.
    pub fn to_json(&self) -> Value {
        json!({"code": self.code.as_str(), "message": self.message})
    }

    /// The envelope that ends a stream with this error.
    pub fn end_frame(&self) -> Bytes {
        frame(FLAG_END, json!({"error": self.to_json()}).to_string().as_bytes())
    }
}

impl IntoResponse for ConnectError {
    /// A unary error: the code's HTTP status and the error as JSON.
    fn into_response(self) -> Response {
        let mut resp = (self.code.http_status(), self.to_json().to_string()).into_response();
        resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        resp
    }
}

impl From<ManagerError> for ConnectError {
    fn from(e: ManagerError) -> ConnectError {
        let msg = e.to_string();
        match e {
            ManagerError::NotFound => ConnectError::new(Code::NotFound, "the sandbox was not found"),
            ManagerError::NoProcess => ConnectError::new(Code::NotFound, "process not found"),
            ManagerError::NoContext(_) | ManagerError::Missing(_) => ConnectError::new(Code::NotFound, msg),
            ManagerError::Invalid(_) => ConnectError::invalid(msg),
            ManagerError::Refused { .. } => ConnectError::new(Code::FailedPrecondition, msg),
            ManagerError::NotRunning(_) | ManagerError::Frozen(_) | ManagerError::Paused(_) => {
                ConnectError::new(Code::Unavailable, msg)
            }
            ManagerError::Conflict(_) => ConnectError::new(Code::FailedPrecondition, msg),
            ManagerError::Capacity(_) | ManagerError::Quota(_) => ConnectError::new(Code::ResourceExhausted, msg),
            ManagerError::AgentStalled(_) => ConnectError::new(Code::Unavailable, msg),
            ManagerError::Internal(_) => ConnectError::internal(msg),
        }
    }
}

impl From<FileError> for ConnectError {
    fn from(e: FileError) -> ConnectError {
        let code = match e.status() {
            404 => Code::NotFound,
            409 => Code::AlreadyExists,
            403 => Code::PermissionDenied,
            413 | 507 => Code::ResourceExhausted,
            500 => return ConnectError::internal(e),
            _ => Code::InvalidArgument,
        };
        ConnectError::new(code, e.to_string())
    }
}

impl From<ApiError> for ConnectError {
    fn from(e: ApiError) -> ConnectError {
        let code = match e.status.as_u16() {
            400 | 422 => Code::InvalidArgument,
            401 => Code::Unauthenticated,
            403 => Code::PermissionDenied,
            404 => Code::NotFound,
            409 => Code::AlreadyExists,
            413 | 429 => Code::ResourceExhausted,
            503 => Code::Unavailable,
            _ => Code::Internal,
        };
        ConnectError::new(code, e.message)
    }
}

/// One envelope: `flag`, the length of `payload` (big-endian u32), `payload`.
pub fn frame(flag: u8, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(5 + payload.len());
    out.extend_from_slice(&[flag]);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out.freeze()
}

/// The compression of a request's messages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Encoding {
    #[default]
    Identity,
    Gzip,
}

impl Encoding {
    /// The encoding a header names (`gzip`, `identity` or none).
    pub fn from_header(headers: &HeaderMap, name: &str) -> Result<Encoding, ConnectError> {
        match headers.get(name).map(|v| v.to_str().unwrap_or("?").trim()) {
            None | Some("") | Some("identity") => Ok(Encoding::Identity),
            Some(e) if e.eq_ignore_ascii_case("gzip") => Ok(Encoding::Gzip),
            Some(other) => {
                Err(ConnectError::unimplemented(format!("{name} {other:?}: messages may be gzip or identity")))
            }
        }
    }

    fn decode(self, payload: Bytes) -> Result<Bytes, ConnectError> {
        match self {
            Encoding::Identity => Ok(payload),
            Encoding::Gzip => gunzip(&payload),
        }
    }
}

/// A gzip message, at most [`MAX_MESSAGE`] bytes once decompressed.
fn gunzip(data: &[u8]) -> Result<Bytes, ConnectError> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(data)
        .take(MAX_MESSAGE as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| ConnectError::invalid(format!("the message is not valid gzip: {e}")))?;
    if out.len() > MAX_MESSAGE {
        return Err(ConnectError::new(
            Code::ResourceExhausted,
            format!("a message larger than {MAX_MESSAGE} bytes once decompressed"),
        ));
    }
    Ok(out.into())
}

/// Splits a byte stream into envelopes as the bytes arrive (compressed ones decompressed).
#[derive(Default)]
pub struct FrameReader {
    buf: BytesMut,
    encoding: Encoding,
}

impl FrameReader {
    /// A reader of a stream request's envelopes, compressed as its
    /// `Connect-Content-Encoding` says.
    pub fn for_request(headers: &HeaderMap) -> Result<FrameReader, ConnectError> {
        Ok(FrameReader { buf: BytesMut::new(), encoding: Encoding::from_header(headers, "connect-content-encoding")? })
    }

    /// Appends bytes read from the body.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next complete envelope `(flag, payload)`, `None` until one is complete.
    pub fn next_frame(&mut self) -> Result<Option<(u8, Bytes)>, ConnectError> {
        if self.buf.len() < 5 {
            return Ok(None);
        }
        let flag = self.buf[0];
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        if flag & FLAG_COMPRESSED != 0 && self.encoding == Encoding::Identity {
            return Err(ConnectError::invalid(
                "a compressed envelope needs Connect-Content-Encoding: gzip (or send it uncompressed)",
            ));
        }
        if len > MAX_MESSAGE {
            return Err(ConnectError::new(
                Code::ResourceExhausted,
                format!("a message of {len} bytes is larger than the limit of {MAX_MESSAGE}"),
            ));
        }
        if self.buf.len() < 5 + len {
            return Ok(None);
        }
        self.buf.advance(5);
        let payload = self.buf.split_to(len).freeze();
        let payload = if flag & FLAG_COMPRESSED != 0 { self.encoding.decode(payload)? } else { payload };
        Ok(Some((flag & !FLAG_COMPRESSED, payload)))
    }

    /// Bytes of an incomplete envelope still buffered.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

/// How long a request message may take to arrive (slow bodies hold a connection).
pub const READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

fn too_slow() -> ConnectError {
    ConnectError::new(
        Code::Canceled,
        format!("the request message took longer than {}s to arrive", READ_TIMEOUT.as_secs()),
    )
}

/// Reads a whole unary JSON body (at most [`MAX_MESSAGE`] bytes, within [`READ_TIMEOUT`];
/// gzip-decompressed when its `Content-Encoding` says so).
pub async fn read_unary(req: Request) -> Result<Value, ConnectError> {
    let encoding = Encoding::from_header(req.headers(), "content-encoding")?;
    let bytes = tokio::time::timeout(READ_TIMEOUT, axum::body::to_bytes(req.into_body(), MAX_MESSAGE))
        .await
        .map_err(|_| too_slow())?
        .map_err(|e| {
            ConnectError::invalid(format!("cannot read the request body (at most {MAX_MESSAGE} bytes): {e}"))
        })?;
    parse_message(&encoding.decode(bytes)?)
}

/// Reads the one envelope of a server-streaming request (within [`READ_TIMEOUT`]).
pub async fn read_stream_request(req: Request) -> Result<Value, ConnectError> {
    let reader = FrameReader::for_request(req.headers())?;
    tokio::time::timeout(READ_TIMEOUT, read_first_envelope(reader, req.into_body())).await.map_err(|_| too_slow())?
}

async fn read_first_envelope(mut reader: FrameReader, body: Body) -> Result<Value, ConnectError> {
    let mut data = body.into_data_stream();
    while let Some(chunk) = data.next().await {
        let chunk = chunk.map_err(|e| ConnectError::invalid(format!("cannot read the request body: {e}")))?;
        reader.push(&chunk);
        if let Some((_, payload)) = reader.next_frame()? {
            return parse_message(&payload);
        }
    }
    Err(ConnectError::invalid("the request body ended before a complete envelope (flag, length, JSON)"))
}

/// A JSON object (an empty body is the empty message).
pub fn parse_message(bytes: &[u8]) -> Result<Value, ConnectError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err(ConnectError::invalid("the message must be a JSON object")),
        Err(e) => Err(ConnectError::invalid(format!("the message is not valid JSON: {e}"))),
    }
}

/// A unary success: the message as JSON.
pub fn unary_ok(msg: Value) -> Response {
    let mut resp = (StatusCode::OK, msg.to_string()).into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// Sends the messages of a server stream; see [`stream_response`].
pub type StreamTx = tokio::sync::mpsc::Sender<Bytes>;

/// Sends one message on a stream; `false` once the client went away.
pub async fn send(tx: &StreamTx, msg: Value) -> bool {
    tx.send(frame(0, msg.to_string().as_bytes())).await.is_ok()
}

/// The client's deadline for the call (`Connect-Timeout-Ms`, at most 10 digits), if any.
pub fn deadline_of(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get("connect-timeout-ms")?.to_str().ok()?.trim();
    (!v.is_empty() && v.len() <= 10 && v.bytes().all(|b| b.is_ascii_digit()))
        .then(|| Duration::from_millis(v.parse().unwrap_or(u64::MAX)))
}

/// A streaming response whose messages `produce` sends; when it returns, the stream ends
/// with `{}` or its error, and at the client's `deadline` (if any) with
/// `deadline_exceeded`. `produce` runs in its own task and ends early when the client goes
/// away (its sends fail) or the deadline passes (it is dropped).
pub fn stream_response<F, Fut>(deadline: Option<Duration>, produce: F) -> Response
where
    F: FnOnce(StreamTx) -> Fut,
    Fut: std::future::Future<Output = Result<(), ConnectError>> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    let end_tx = tx.clone();
    let fut = produce(tx);
    tokio::spawn(async move {
        let result = match deadline {
            None => fut.await,
            Some(d) => tokio::time::timeout(d, fut).await.unwrap_or_else(|_| {
                Err(ConnectError::new(
                    Code::DeadlineExceeded,
                    format!("the call's deadline ({} ms, Connect-Timeout-Ms) passed", d.as_millis()),
                ))
            }),
        };
        let end = match result {
            Ok(()) => frame(FLAG_END, b"{}"),
            Err(e) => e.end_frame(),
        };
        let _ = end_tx.send(end).await;
    });
    // Ends after the end-of-stream envelope, even if clones of `tx` live on.
    let stream = futures_util::stream::unfold((rx, false), |(mut rx, ended)| async move {
        if ended {
            return None;
        }
        let b = rx.recv().await?;
        let end = b.first() == Some(&FLAG_END);
        Some((Ok::<_, std::convert::Infallible>(b), (rx, end)))
    });
    let mut resp = (StatusCode::OK, Body::from_stream(stream)).into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(STREAM_CONTENT_TYPE));
    resp
}

/// An error answered as a one-message stream (for calls that fail before streaming).
pub fn stream_error(e: ConnectError) -> Response {
    let mut resp = (StatusCode::OK, e.end_frame()).into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(STREAM_CONTENT_TYPE));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_in_pieces() {
        let mut wire = frame(0, br#"{"a":1}"#).to_vec();
        wire.extend_from_slice(&frame(FLAG_END, b"{}"));
        let mut r = FrameReader::default();
        let mut got = Vec::new();
        // One byte at a time: envelopes split anywhere are reassembled.
        for b in wire {
            r.push(&[b]);
            while let Some(f) = r.next_frame().unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got, vec![(0, Bytes::from_static(br#"{"a":1}"#)), (FLAG_END, Bytes::from_static(b"{}"))]);
        assert_eq!(r.pending(), 0);
    }

    #[test]
    fn oversized_and_compressed_frames_are_refused() {
        let mut r = FrameReader::default();
        r.push(&[0, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(r.next_frame().unwrap_err().code, Code::ResourceExhausted);
        let mut r = FrameReader::default();
        r.push(&frame(FLAG_COMPRESSED, b"{}"));
        assert_eq!(r.next_frame().unwrap_err().code, Code::InvalidArgument);
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn gzip_envelopes_are_decompressed_within_the_limit() {
        let mut h = HeaderMap::new();
        h.insert("connect-content-encoding", HeaderValue::from_static("gzip"));
        let mut r = FrameReader::for_request(&h).unwrap();
        r.push(&frame(FLAG_COMPRESSED, &gzip(br#"{"a":1}"#)));
        assert_eq!(r.next_frame().unwrap().unwrap(), (0, Bytes::from_static(br#"{"a":1}"#)));
        // A bomb: small on the wire, past the limit once decompressed.
        r.push(&frame(FLAG_COMPRESSED, &gzip(&vec![b' '; MAX_MESSAGE + 10])));
        assert_eq!(r.next_frame().unwrap_err().code, Code::ResourceExhausted);
        let mut r = FrameReader::for_request(&h).unwrap();
        r.push(&frame(FLAG_COMPRESSED, b"not gzip"));
        assert_eq!(r.next_frame().unwrap_err().code, Code::InvalidArgument);
        h.insert("connect-content-encoding", HeaderValue::from_static("br"));
        assert_eq!(FrameReader::for_request(&h).err().unwrap().code, Code::Unimplemented);
    }

    #[test]
    fn deadlines_come_from_connect_timeout_ms() {
        let mut h = HeaderMap::new();
        assert_eq!(deadline_of(&h), None);
        h.insert("connect-timeout-ms", HeaderValue::from_static("2000"));
        assert_eq!(deadline_of(&h), Some(Duration::from_secs(2)));
        for bad in ["", "-1", "1e3", "12345678901"] {
            h.insert("connect-timeout-ms", HeaderValue::from_str(bad).unwrap());
            assert_eq!(deadline_of(&h), None, "{bad}");
        }
    }

    #[tokio::test]
    async fn a_stream_ends_at_its_deadline() {
        let resp = stream_response(Some(Duration::from_millis(50)), |_tx| async move {
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok(())
        });
        let body = tokio::time::timeout(Duration::from_secs(5), axum::body::to_bytes(resp.into_body(), 1 << 16))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(body[0], FLAG_END);
        assert!(std::str::from_utf8(&body[5..]).unwrap().contains("deadline_exceeded"));
    }

    #[test]
    fn messages_must_be_objects() {
        assert_eq!(parse_message(b"").unwrap(), json!({}));
        assert_eq!(parse_message(br#"{"x":2}"#).unwrap(), json!({"x":2}));
        assert!(parse_message(b"[1]").is_err());
        assert!(parse_message(b"{nope").unwrap_err().message.contains("not valid JSON"));
    }

    #[test]
    fn errors_map_to_codes_and_statuses() {
        let e = ConnectError::from(ManagerError::NoProcess);
        assert_eq!((e.code, e.code.http_status().as_u16()), (Code::NotFound, 404));
        assert_eq!(ConnectError::from(ManagerError::Invalid("x".into())).code.http_status(), 400);
        assert_eq!(ConnectError::from(ManagerError::Capacity("x".into())).code.as_str(), "resource_exhausted");
        assert_eq!(ConnectError::from(ManagerError::Quota("x".into())).code.as_str(), "resource_exhausted");
        assert!(!ConnectError::from(ManagerError::Internal("/secret".into())).message.contains("secret"));
        let end = ConnectError::new(Code::NotFound, "gone").end_frame();
        assert_eq!(end[0], FLAG_END);
        let v: Value = serde_json::from_slice(&end[5..]).unwrap();
        assert_eq!(v, json!({"error": {"code": "not_found", "message": "gone"}}));
    }

    #[tokio::test]
    async fn streams_end_with_the_end_envelope() {
        let resp = stream_response(None, |tx| async move {
            send(&tx, json!({"n": 1})).await;
            Err(ConnectError::new(Code::Internal, "boom"))
        });
        assert_eq!(resp.headers()[header::CONTENT_TYPE], STREAM_CONTENT_TYPE);
        let body = axum::body::to_bytes(resp.into_body(), 1 << 16).await.unwrap();
        let mut r = FrameReader::default();
        r.push(&body);
        assert_eq!(r.next_frame().unwrap().unwrap(), (0, Bytes::from_static(br#"{"n":1}"#)));
        let (flag, end) = r.next_frame().unwrap().unwrap();
        assert_eq!(flag, FLAG_END);
        assert!(std::str::from_utf8(&end).unwrap().contains("boom"));
        assert!(r.next_frame().unwrap().is_none());
    }
}

//! JSON request bodies, checked before serde sees them: size (≤ 1 MiB, 413), UTF-8,
//! nesting depth (≤ 32), number literals (≤ 64 characters, integers within 64 bits, floats
//! finite) and duplicate object keys (which serde_json would accept, keeping the last).
//! Unknown fields are refused by the request types (`deny_unknown_fields`).

use std::collections::HashSet;
use std::fmt;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Request};
use axum::http::{header, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::de::{DeserializeOwned, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::errors::ApiError;

/// Largest JSON request body.
pub const MAX_JSON_BODY: usize = 1024 * 1024;
/// Deepest nesting of arrays and objects.
pub const MAX_JSON_DEPTH: usize = 32;
/// Longest number literal.
pub const MAX_NUMBER_LEN: usize = 64;
/// How long a client may take to send a whole bounded body (slow POST).
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// A checked JSON body. An empty body reads as `{}`.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, ApiError> {
        let body = read_body(req, MAX_JSON_BODY).await?;
        parse(&body).map(ApiJson)
    }
}

/// Reads a whole body of at most `limit` bytes within [`BODY_READ_TIMEOUT`].
pub async fn read_body(req: Request, limit: usize) -> Result<Bytes, ApiError> {
    let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::too_large(limit));
    }
    let body: Body = req.into_body();
    let collect = Limited::new(body, limit).collect();
    match tokio::time::timeout(BODY_READ_TIMEOUT, collect).await {
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            format!("the request body took longer than {}s to arrive", BODY_READ_TIMEOUT.as_secs()),
        )),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => Err(ApiError::too_large(limit)),
        Ok(Err(e)) => Err(ApiError::invalid(format!("cannot read the request body: {e}"))),
        Ok(Ok(c)) => Ok(c.to_bytes()),
    }
}

/// Checks and deserializes a JSON document.
pub fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) { b"{}" } else { body };
    if std::str::from_utf8(body).is_err() {
        return Err(ApiError::invalid("request body is not valid UTF-8"));
    }
    scan(body).map_err(ApiError::invalid)?;
    let mut de = serde_json::Deserializer::from_slice(body);
    NoDuplicates.deserialize(&mut de).map_err(|e| ApiError::invalid(format!("invalid JSON: {e}")))?;
    serde_json::from_slice(body).map_err(|e| ApiError::invalid(format!("invalid request: {e}")))
}

/// One pass over the raw bytes, outside strings: nesting depth and number literals.
fn scan(body: &[u8]) -> Result<(), String> {
    let mut depth = 0usize;
    let mut i = 0;
    while i < body.len() {
        match body[i] {
            b'"' => {
                i += 1;
                while i < body.len() && body[i] != b'"' {
                    i += if body[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'{' | b'[' => {
                depth += 1;
                if depth > MAX_JSON_DEPTH {
                    return Err(format!("JSON nested deeper than {MAX_JSON_DEPTH} levels"));
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            b'-' | b'0'..=b'9' => {
                let start = i;
                while i < body.len() && matches!(body[i], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9') {
                    i += 1;
                }
                check_number(&body[start..i])?;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

fn check_number(lit: &[u8]) -> Result<(), String> {
    if lit.len() > MAX_NUMBER_LEN {
        return Err(format!("number literal longer than {MAX_NUMBER_LEN} characters"));
    }
    // Malformed literals are left for serde to report.
    let Ok(s) = std::str::from_utf8(lit) else { return Ok(()) };
    if lit.iter().any(|b| matches!(b, b'.' | b'e' | b'E')) {
        if s.parse::<f64>().is_ok_and(|f| !f.is_finite()) {
            return Err(format!("number {s} is out of range"));
        }
    } else if s.parse::<i128>().is_ok_and(|n| n > u64::MAX as i128 || n < i64::MIN as i128) {
        return Err(format!("integer {s} is out of range (64 bits)"));
    }
    Ok(())
}

/// A serde pass that only fails on an object with the same key twice.
struct NoDuplicates;

impl<'de> DeserializeSeed<'de> for NoDuplicates {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for NoDuplicates {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(NoDuplicates)?.is_some() {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key.clone()) {
                return Err(serde::de::Error::custom(format_args!("duplicate key `{key}`")));
            }
            map.next_value_seed(NoDuplicates)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Req {
        a: Option<serde_json::Value>,
        n: Option<u64>,
    }

    fn err(body: &[u8]) -> String {
        let e = parse::<Req>(body).unwrap_err();
        assert_eq!(e.status, 400, "{e}");
        e.message
    }

    #[test]
    fn accepts_plain_documents() {
        assert_eq!(parse::<Req>(br#"{"a": [1, {"b": "x\"}"}], "n": 5}"#).unwrap().n, Some(5));
        assert_eq!(parse::<Req>(b"").unwrap(), Req { a: None, n: None });
        assert_eq!(parse::<Req>(b"  \n").unwrap(), Req { a: None, n: None });
        parse::<Req>(br#"{"a": -1.5e10}"#).unwrap();
        parse::<Req>(br#"{"a": "1e999999 [[[[[ 99999999999999999999999"}"#).unwrap();
    }

    #[test]
    fn depth_limit() {
        let ok = format!("{{\"a\":{}1{}}}", "[".repeat(MAX_JSON_DEPTH - 1), "]".repeat(MAX_JSON_DEPTH - 1));
        parse::<Req>(ok.as_bytes()).unwrap();
        let deep = format!("{{\"a\":{}1{}}}", "[".repeat(MAX_JSON_DEPTH), "]".repeat(MAX_JSON_DEPTH));
        assert!(err(deep.as_bytes()).contains("deeper"));
        // Unbalanced bombs fail fast too, without recursion.
        assert!(err("[".repeat(1_000_000).as_bytes()).contains("deeper"));
    }

    #[test]
    fn huge_numbers() {
        assert!(err(br#"{"n": 99999999999999999999999}"#).contains("out of range"));
        assert!(err(br#"{"a": -99999999999999999999999}"#).contains("out of range"));
        assert!(err(br#"{"a": 1e999}"#).contains("out of range"));
        assert!(err(format!("{{\"a\": {}}}", "1".repeat(100)).as_bytes()).contains("longer"));
        parse::<Req>(format!("{{\"a\": {}}}", u64::MAX).as_bytes()).unwrap();
        parse::<Req>(format!("{{\"a\": {}}}", i64::MIN).as_bytes()).unwrap();
    }

    #[test]
    fn duplicate_keys() {
        assert!(err(br#"{"n": 1, "n": 2}"#).contains("duplicate key `n`"));
        assert!(err(br#"{"a": {"x": 1, "\u0078": 2}}"#).contains("duplicate key `x`"));
        assert!(err(br#"{"a": [{"k": 1}, {"k": 2, "k": 3}]}"#).contains("duplicate"));
        parse::<Req>(br#"{"a": [{"k": 1}, {"k": 2}]}"#).unwrap();
    }

    #[test]
    fn unknown_fields_bad_utf8_and_garbage() {
        assert!(err(br#"{"zzz": 1}"#).contains("unknown field `zzz`"));
        assert!(err(b"{\"a\": \"\xff\xfe\"}").contains("UTF-8"));
        err(b"{\"a\": ");
        err(b"{} {}");
        err(b"nul");
        err(br#"{"a": "\ud800"}"#);
        err(br#"{"n": -1}"#);
    }
}

//! `GET /v1/audit` (admin only). The layer recording every call is `safehouse_http::audit`.

use std::io::Write;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use safehouse_audit::Filter;

use safehouse_http::params::{Caller, QueryPairs};
use safehouse_http::ApiError;
use safehouse_http::AppState;

/// Most records one `GET /v1/audit` answers.
pub const MAX_LIMIT: u64 = 10_000;
const DEFAULT_LIMIT: u64 = 1_000;

/// The records matching `sandbox`, `since`, `until` (RFC 3339) and `kind` (comma-separated:
/// api, event, policy, checkpoint, log), oldest first, at most `limit` (default 1000, at
/// most 10000), as JSON lines exactly as stored (each can be checked against its hash).
/// `X-Safehouse-Truncated: true` says more records matched.
pub async fn export(State(st): State<AppState>, Caller(tenant): Caller, q: QueryPairs) -> Result<Response, ApiError> {
    if !tenant.is_admin() {
        return Err(ApiError::forbidden("the audit log is for the admin key only"));
    }
    q.only(&["sandbox", "since", "until", "kind", "limit"])?;
    let mut filter = Filter { sandbox: q.get("sandbox").map(str::to_string), ..Filter::default() };
    if let Some(t) = q.get("since") {
        filter = filter.since(t).map_err(|e| ApiError::invalid(format!("since: {e}")))?;
    }
    if let Some(t) = q.get("until") {
        filter = filter.until(t).map_err(|e| ApiError::invalid(format!("until: {e}")))?;
    }
    if let Some(k) = q.get("kind") {
        for kind in k.split(',').filter(|k| !k.is_empty()) {
            if safehouse_audit::Kind::parse(kind).is_none() {
                return Err(ApiError::invalid(format!(
                    "kind {kind:?} is not one of api, event, policy, checkpoint, log"
                )));
            }
            filter.kinds.push(kind.to_string());
        }
    }
    let limit = match q.get("limit") {
        None => DEFAULT_LIMIT,
        Some(l) => l
            .parse::<u64>()
            .ok()
            .filter(|l| (1..=MAX_LIMIT).contains(l))
            .ok_or_else(|| ApiError::invalid(format!("limit must be between 1 and {MAX_LIMIT}")))?,
    };
    let audit = st.manager.audit().cloned().ok_or_else(|| {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "audit_off", "this daemon runs without an audit log")
    })?;
    // Reading the segments is blocking file I/O: off the async threads. Everything queued
    // before this call is written first (the writer holds small batches back for its
    // group commit), so an export sees every record of the calls answered before it.
    let dir = audit.dir().to_path_buf();
    let log = audit.log().clone();
    let (body, more) = tokio::task::spawn_blocking(move || {
        let _ = log.flush();
        let mut out = Limited { buf: Vec::new(), left: limit, more: false };
        safehouse_audit::export(&dir, &filter, &mut out).map(|_| (out.buf, out.more))
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::internal)?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-ndjson"),
            (header::HeaderName::from_static("x-safehouse-truncated"), if more { "true" } else { "false" }),
        ],
        body,
    )
        .into_response())
}

/// `GET /v1/audit/verify` (admin only): checks the whole chain, as `safehouse audit
/// verify` does (every record's hash, the chain, the numbering, every checkpoint's
/// signature against the log's `signing.pub`), after writing out what is queued.
pub async fn verify(State(st): State<AppState>, Caller(tenant): Caller) -> Result<Response, ApiError> {
    if !tenant.is_admin() {
        return Err(ApiError::forbidden("the audit log is for the admin key only"));
    }
    let audit = st.manager.audit().cloned().ok_or_else(|| {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "audit_off", "this daemon runs without an audit log")
    })?;
    let (dir, log) = (audit.dir().to_path_buf(), audit.log().clone());
    let report = tokio::task::spawn_blocking(move || {
        let _ = log.flush();
        safehouse_audit::verify(&dir)
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::internal)?;
    Ok(axum::Json(report).into_response())
}

/// Keeps the first `left` lines (export writes one record per call) and notes the rest.
struct Limited {
    buf: Vec<u8>,
    left: u64,
    more: bool,
}

impl Write for Limited {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            self.more = true;
        } else {
            self.buf.extend_from_slice(b);
            self.left -= 1;
        }
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

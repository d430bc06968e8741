//! `GET /v1/audit` (admin only) and the middleware that records every API call.

use std::io::Write;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use safehouse_audit::{Filter, Record};

use super::errors::ApiError;
use super::params::QueryPairs;
use super::AppState;
use crate::auth::Tenant;

/// Most records one `GET /v1/audit` answers.
pub const MAX_LIMIT: u64 = 10_000;
const DEFAULT_LIMIT: u64 = 1_000;

/// Records every request once answered: who (tenant and key id, never the key), method,
/// path (without the query, which may carry anything), status and duration. The guard
/// hands the tenant over in the response's extensions. Streams are recorded when their
/// head is sent. Queued, not awaited on disk (crate::audit says why that is enough).
pub async fn record(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let Some(audit) = st.manager.audit().cloned() else {
        return next.run(req).await;
    };
    let started = Instant::now();
    let method = req.method().to_string();
    // The E2B data plane is recorded as `e2b:PATH` (`e2b:/process.Process/Start`), with
    // the sandbox from its header.
    let e2b_sandbox = crate::e2b::sandbox_header(req.headers()).map(str::to_string);
    let path = match &e2b_sandbox {
        Some(_) => format!("e2b:{}", req.uri().path()),
        None => req.uri().path().to_string(),
    };
    let resp = next.run(req).await;
    let who = resp.extensions().get::<Tenant>();
    let mut rec = Record::api(who.map(|t| t.name.as_str()).unwrap_or("-"), &method, &path, resp.status().as_u16());
    if let Some(o) = rec.data.as_object_mut() {
        o.insert("key_id".into(), who.and_then(|t| t.key_id.clone()).into());
        o.insert("ms".into(), (started.elapsed().as_micros() as f64 / 1000.0).into());
    }
    if who.is_none() {
        rec.tenant = None;
    }
    if let Some(sb) = e2b_sandbox.as_deref().filter(|s| super::params::is_sandbox_id(s)).or_else(|| sandbox_of(&path)) {
        rec.sandbox = Some(sb.to_string());
    }
    audit.record(rec).await;
    resp
}

/// The sandbox id in `/v1/sandboxes/{id}/...` (or E2B's `/sandboxes/{id}/...`,
/// `/v2/sandboxes/{id}/...`), if the path names one.
fn sandbox_of(path: &str) -> Option<&str> {
    let rest = ["/v1/sandboxes/", "/v2/sandboxes/", "/sandboxes/"].iter().find_map(|p| path.strip_prefix(p))?;
    let id = rest.split('/').next()?;
    super::params::is_sandbox_id(id).then_some(id)
}

/// The records matching `sandbox`, `since`, `until` (RFC 3339) and `kind` (comma-separated:
/// api, event, policy, checkpoint, log), oldest first, at most `limit` (default 1000, at
/// most 10000), as JSON lines exactly as stored (each can be checked against its hash).
/// `X-Safehouse-Truncated: true` says more records matched.
pub async fn export(State(st): State<AppState>, tenant: Tenant, q: QueryPairs) -> Result<Response, ApiError> {
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
pub async fn verify(State(st): State<AppState>, tenant: Tenant) -> Result<Response, ApiError> {
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

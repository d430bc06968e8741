//! The layer that records every API call in the audit log, whichever front answered it.

use std::time::Instant;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use safehouse_audit::Record;
use safehouse_manager::auth::Tenant;

use crate::params::is_sandbox_id;
use crate::AppState;

/// How a front wants a call recorded when its path is not the request's own (the E2B data
/// plane records `e2b:PATH` with the sandbox from its header): put in the response's
/// extensions.
#[derive(Debug, Clone)]
pub struct AuditAs {
    pub path: String,
    pub sandbox: Option<String>,
}

/// Records every request once answered: who (tenant and key id, never the key), method,
/// path (without the query, which may carry anything), status and duration. The guard
/// hands the tenant over in the response's extensions. Streams are recorded when their
/// head is sent. Queued, not awaited on disk (safehouse_manager::audit says why that is
/// enough).
pub async fn record(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let Some(audit) = st.manager.audit().cloned() else {
        return next.run(req).await;
    };
    let started = Instant::now();
    let method = req.method().to_string();
    let own_path = req.uri().path().to_string();
    let resp = next.run(req).await;
    let (path, named) = match resp.extensions().get::<AuditAs>() {
        Some(a) => (a.path.clone(), a.sandbox.clone()),
        None => (own_path, None),
    };
    let who = resp.extensions().get::<Tenant>();
    let mut rec = Record::api(who.map(|t| t.name.as_str()).unwrap_or("-"), &method, &path, resp.status().as_u16());
    if let Some(o) = rec.data.as_object_mut() {
        o.insert("key_id".into(), who.and_then(|t| t.key_id.clone()).into());
        o.insert("ms".into(), (started.elapsed().as_micros() as f64 / 1000.0).into());
    }
    if who.is_none() {
        rec.tenant = None;
    }
    if let Some(sb) = named.as_deref().filter(|s| is_sandbox_id(s)).or_else(|| sandbox_of(&path)) {
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
    is_sandbox_id(id).then_some(id)
}

//! A sandbox's policy as recorded at its creation, and `explain` over it (the answers
//! `safehouse policy explain` gives for a file, for a running sandbox).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use safehouse_policy::explain::{ExplainError, PathKind, Question};
use safehouse_policy::Policy;
use serde_json::json;

use safehouse_http::params::{Caller, QueryPairs, SandboxId};
use safehouse_http::ApiError;
use safehouse_http::AppState;

/// `GET /v1/sandboxes/{id}/policy` → `{policy}` (null for a sandbox recorded without one).
pub async fn show(
    State(st): State<AppState>,
    Caller(tenant): Caller,
    SandboxId(id): SandboxId,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(json!({ "policy": st.manager.policy(&tenant.name, &id).await? })))
}

/// `GET /v1/sandboxes/{id}/policy/explain?net=HOST:PORT` (or `exec=`, `read=`, `write=`
/// with a sandbox path; exactly one) → the answer: `{question, allowed, rule, reason, hint,
/// notes?}`. Filesystem answers describe the sandbox as the daemon builds it on this host.
pub async fn explain(
    State(st): State<AppState>,
    Caller(tenant): Caller,
    SandboxId(id): SandboxId,
    q: QueryPairs,
) -> Result<impl IntoResponse, ApiError> {
    q.only(&["net", "exec", "read", "write"])?;
    if q.0.len() != 1 {
        return Err(ApiError::invalid("ask exactly one question: net=HOST:PORT, exec=PATH, read=PATH or write=PATH"));
    }
    let (kind, value) = (&q.0[0].0, &q.0[0].1);
    let question = match kind.as_str() {
        "net" => Question::net(value),
        "exec" => Question::path(PathKind::Exec, value),
        "read" => Question::path(PathKind::Read, value),
        _ => Question::path(PathKind::Write, value),
    }
    // The parser speaks the CLI's flags (`--net "x": ...`); the API's are query names.
    .map_err(|e| ApiError::invalid(e.to_string().replacen("--", "", 1)))?;
    let recorded = st.manager.policy(&tenant.name, &id).await?.ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            "no_policy",
            "this sandbox was recorded without a policy; nothing to explain",
        )
    })?;
    let policy: Policy = serde_json::from_value(recorded).map_err(ApiError::internal)?;
    let answer = st.manager.explain(policy, question).await?;
    match answer {
        Ok(a) => Ok(Json(a)),
        Err(ExplainError::Question(m)) => Err(ApiError::invalid(m)),
        Err(e @ ExplainError::Policy(_)) => {
            Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "policy_refused", e.to_string()))
        }
    }
}

//! Run a command to completion.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::response::IntoResponse;
use axum::Json;

use super::errors::ApiError;
use super::json::ApiJson;
use super::params::SandboxId;
use super::AppState;
use crate::auth::Tenant;
use crate::manager::{Command, ExecRequest};

pub async fn exec(
    State(st): State<AppState>,
    tenant: Tenant,
    SandboxId(id): SandboxId,
    ApiJson(req): ApiJson<ExecRequest>,
) -> Result<impl IntoResponse, ApiError> {
    check_request(&req)?;
    Ok(Json(st.manager.exec(&tenant.name, &id, req).await?))
}

/// What the HTTP layer checks in an exec request before the manager sees it (shared with
/// the MCP tools).
pub(crate) fn check_request(req: &ExecRequest) -> Result<(), ApiError> {
    check_command(&req.cmd)?;
    check_env(&req.env)?;
    if let Some(t) = req.timeout_s {
        if !t.is_finite() || t <= 0.0 || t > super::sandboxes::MAX_TIMEOUT_S as f64 {
            return Err(ApiError::invalid("timeout_s must be a positive number of seconds, at most 86400"));
        }
    }
    Ok(())
}

/// An argv must name a program; its strings go to the sandbox verbatim (no shell, no
/// option parsing), but NUL cannot cross `execve`.
pub fn check_command(cmd: &Command) -> Result<(), ApiError> {
    let argv = match cmd {
        Command::Argv(v) => v.as_slice(),
        Command::Shell(s) => std::slice::from_ref(s),
    };
    if argv.is_empty() || argv[0].is_empty() {
        return Err(ApiError::invalid("cmd must name a program: a non-empty argv array or a shell string"));
    }
    if argv.iter().any(|a| a.contains('\0')) {
        return Err(ApiError::invalid("cmd must not contain NUL characters"));
    }
    Ok(())
}

/// Environment names must be non-empty and free of `=` and NUL; values free of NUL.
pub fn check_env(env: &BTreeMap<String, String>) -> Result<(), ApiError> {
    for (k, v) in env {
        if k.is_empty() || k.contains('=') || k.contains('\0') {
            return Err(ApiError::invalid(format!("environment name {k:?} must be non-empty without `=` or NUL")));
        }
        if v.contains('\0') {
            return Err(ApiError::invalid(format!("environment value of {k} must not contain NUL")));
        }
    }
    Ok(())
}

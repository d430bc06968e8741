//! The one error shape of the API: a status and `{"error": {"code", "message"}}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use safehouse_manager::auth::AuthError;
use safehouse_manager::store::StoreError;
use safehouse_manager::ManagerError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into() }
    }
    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }
    /// What an unknown, malformed or other tenant's sandbox id gets: one answer for all.
    pub fn no_sandbox() -> ApiError {
        ApiError::not_found("no such sandbox; check the id with GET /v1/sandboxes")
    }
    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }
    pub fn too_large(limit: usize) -> ApiError {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("request body is larger than {limit} bytes; send less"),
        )
    }
    pub fn internal(detail: impl std::fmt::Display) -> ApiError {
        // The detail may name host paths: it goes to the daemon's log, not to the client.
        eprintln!("safehouse: internal error: {detail}");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error; see the daemon's log")
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.code, self.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        let mut resp = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(axum::http::header::WWW_AUTHENTICATE, axum::http::HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

impl From<ManagerError> for ApiError {
    fn from(e: ManagerError) -> ApiError {
        let msg = e.to_string();
        match e {
            ManagerError::NotFound => ApiError::no_sandbox(),
            ManagerError::NoProcess | ManagerError::NoContext(_) | ManagerError::Missing(_) => ApiError::not_found(msg),
            ManagerError::Invalid(_) => ApiError::invalid(msg),
            ManagerError::Refused { .. } => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "policy_refused", msg),
            ManagerError::NotRunning(_) => ApiError::new(StatusCode::CONFLICT, "not_running", msg),
            ManagerError::Frozen(_) => ApiError::new(StatusCode::CONFLICT, "frozen", msg),
            ManagerError::Capacity(_) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "capacity", msg),
            ManagerError::Quota(_) => ApiError::new(StatusCode::TOO_MANY_REQUESTS, "tenant_quota", msg),
            ManagerError::AgentStalled(_) => ApiError::new(StatusCode::GATEWAY_TIMEOUT, "agent_timeout", msg),
            ManagerError::Paused(_) => ApiError::new(StatusCode::CONFLICT, "paused", msg),
            ManagerError::Conflict(_) => ApiError::new(StatusCode::CONFLICT, "conflict", msg),
            ManagerError::Internal(_) => ApiError::internal(msg),
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> ApiError {
        match e {
            AuthError::Missing | AuthError::Invalid => ApiError::unauthorized(e.to_string()),
            AuthError::BadTenant | AuthError::BadName => ApiError::invalid(e.to_string()),
            AuthError::TooManyTickets => {
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, "too_many_tickets", e.to_string())
            }
            e => ApiError::internal(e),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        ApiError::internal(e)
    }
}

/// Fallback for paths no route matches.
pub async fn unknown_route() -> ApiError {
    ApiError::not_found("no such route; see GET /v1/openapi.json")
}

/// Fallback for a known path with the wrong method.
pub async fn wrong_method() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "this route does not take that method")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manager_errors_map_to_statuses() {
        let cases = [
            (ManagerError::NotFound, 404, "not_found"),
            (ManagerError::NoProcess, 404, "not_found"),
            (ManagerError::Invalid("bad".into()), 400, "invalid_request"),
            (ManagerError::Refused { layer: "landlock".into(), reason: "old kernel".into() }, 422, "policy_refused"),
            (ManagerError::NotRunning("killed".into()), 409, "not_running"),
            (ManagerError::Frozen("sb_x".into()), 409, "frozen"),
            (ManagerError::Capacity("full".into()), 503, "capacity"),
            (ManagerError::Quota("over".into()), 429, "tenant_quota"),
            (ManagerError::AgentStalled("slow".into()), 504, "agent_timeout"),
            (ManagerError::Paused("sb_x".into()), 409, "paused"),
            (ManagerError::Conflict("in use".into()), 409, "conflict"),
            (ManagerError::Internal("boom".into()), 500, "internal"),
        ];
        for (e, status, code) in cases {
            let a = ApiError::from(e);
            assert_eq!((a.status.as_u16(), a.code), (status, code));
        }
        let refused = ApiError::from(ManagerError::Refused { layer: "seccomp".into(), reason: "x".into() });
        assert!(refused.message.contains("seccomp"));
        // Internal details stay in the log.
        assert!(!ApiError::from(ManagerError::Internal("/secret/path".into())).message.contains("/secret"));
    }

    #[tokio::test]
    async fn error_body_shape() {
        let resp = ApiError::invalid("fix it").into_response();
        assert_eq!(resp.status(), 400);
        let body = axum::body::to_bytes(resp.into_body(), 1 << 16).await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v, json!({"error": {"code": "invalid_request", "message": "fix it"}}));
        let resp = ApiError::unauthorized("x").into_response();
        assert_eq!(resp.headers()["www-authenticate"], "Bearer");
    }
}

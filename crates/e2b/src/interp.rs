//! Port 49999: what the `e2b-code-interpreter` SDK calls (E2B's Jupyter server in its
//! `code-interpreter-v1` template), served by the sandbox's code interpreter:
//!
//! | call | does |
//! |---|---|
//! | `POST /execute` `{code, context_id?, language?, env_vars?}` | runs the code; NDJSON events (`stdout`, `stderr`, `result`, `error`, `number_of_executions`) |
//! | `POST /contexts` `{language?, cwd?}` | a new context: `{id, language, cwd}` |
//! | `GET /contexts` | the contexts |
//! | `DELETE /contexts/{id}` | removes one |
//! | `POST /contexts/{id}/restart` | a fresh kernel for it |
//!
//! Errors are `{"code", "message"}` with the status the SDK turns into its exceptions (404
//! `NotFoundException`, others `SandboxException` with the message).

use std::collections::BTreeMap;

use axum::extract::Request;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{json, Value};

use safehouse_http::ApiError;
use safehouse_manager::auth::Tenant;
use safehouse_manager::interp::{CodeRequest, CreateContext};

use super::{e2b_error, E2b};

/// The port the SDK addresses its Jupyter server on.
pub const JUPYTER_PORT: u16 = 49999;
/// Largest request body on this port (the code of one execution).
const MAX_BODY: usize = 5 << 20;

#[derive(Deserialize, Default)]
struct Execute {
    code: String,
    #[serde(default)]
    context_id: Option<String>,
    #[serde(default)]
    language: Option<String>,
    #[serde(default)]
    env_vars: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize, Default)]
struct NewContext {
    #[serde(default)]
    language: Option<String>,
    #[serde(default)]
    cwd: Option<String>,
}

fn fail(e: ApiError) -> Response {
    e2b_error(e.status, e.message)
}

async fn body<T: for<'de> Deserialize<'de> + Default>(req: Request, empty_ok: bool) -> Result<T, Response> {
    let bytes = axum::body::to_bytes(req.into_body(), MAX_BODY)
        .await
        .map_err(|_| e2b_error(StatusCode::PAYLOAD_TOO_LARGE, format!("the request body is over {MAX_BODY} bytes")))?;
    if bytes.iter().all(u8::is_ascii_whitespace) && empty_ok {
        return Ok(T::default());
    }
    serde_json::from_slice(&bytes).map_err(|e| e2b_error(StatusCode::BAD_REQUEST, format!("the request body: {e}")))
}

pub async fn call(st: &E2b, tenant: &Tenant, id: &str, req: Request) -> Response {
    let path = req.uri().path().to_string();
    let m = &st.manager;
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (req.method().clone(), parts.as_slice()) {
        (Method::POST, ["execute"]) => {
            let x: Execute = match body(req, false).await {
                Ok(x) => x,
                Err(r) => return r,
            };
            // Both given: the context decides (it has its language), as E2B's server does.
            let language = if x.context_id.is_some() { None } else { x.language };
            let r = CodeRequest {
                code: x.code,
                language,
                context: x.context_id,
                env: x.env_vars.unwrap_or_default(),
                // The SDK bounds the call on its side; it interrupts by hanging up.
                timeout_s: None,
            };
            match m.run_code(&tenant.name, id, r).await {
                Ok(run) => safehouse_http::code::ndjson(run),
                Err(e) => fail(e.into()),
            }
        }
        (Method::POST, ["contexts"]) => {
            let c: NewContext = match body(req, true).await {
                Ok(c) => c,
                Err(r) => return r,
            };
            let r = CreateContext { language: c.language, cwd: c.cwd, env: BTreeMap::new() };
            match m.create_code_context(&tenant.name, id, r).await {
                Ok(c) => axum::Json(json!({"id": c.id, "language": c.language, "cwd": c.cwd})).into_response(),
                Err(e) => fail(e.into()),
            }
        }
        (Method::GET, ["contexts"]) => match m.code_contexts(&tenant.name, id).await {
            Ok(cs) => {
                let v: Vec<Value> =
                    cs.into_iter().map(|c| json!({"id": c.id, "language": c.language, "cwd": c.cwd})).collect();
                axum::Json(v).into_response()
            }
            Err(e) => fail(e.into()),
        },
        (Method::DELETE, ["contexts", ctx]) => match m.remove_code_context(&tenant.name, id, ctx).await {
            Ok(()) => StatusCode::NO_CONTENT.into_response(),
            Err(e) => fail(e.into()),
        },
        (Method::POST, ["contexts", ctx, "restart"]) => match m.restart_code_context(&tenant.name, id, ctx).await {
            Ok(_) => StatusCode::NO_CONTENT.into_response(),
            Err(e) => fail(e.into()),
        },
        (method, _) => e2b_error(
            StatusCode::NOT_FOUND,
            format!("{method} {path} is not part of the code interpreter's API (see docs/e2b.md)"),
        ),
    }
}

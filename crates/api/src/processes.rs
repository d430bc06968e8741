//! Background processes: start, list, signal, stdin, and the attach WebSocket.

use axum::body::Bytes;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequest, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::Deserialize;
use serde_json::json;

use safehouse_http::json::{read_body, ApiJson};
use safehouse_http::params::{Caller, KeyLease, ProcessPath, QueryPairs, SandboxId};
use safehouse_http::{ApiError, AppState};
use safehouse_manager::auth::revocation::REVOKED_MESSAGE;
use safehouse_manager::auth::{Lease, Tenant};
use safehouse_manager::{limits, AttachEvent, StartProcess};

/// The close code of a WebSocket whose API key was revoked (1008, policy violation).
pub const REVOKED_CLOSE_CODE: u16 = 1008;

/// Largest body of one `stdin` request, and largest WebSocket message from a client.
pub const MAX_STDIN_BODY: usize = 1024 * 1024;

pub async fn start(
    State(st): State<AppState>,
    Caller(tenant): Caller,
    SandboxId(id): SandboxId,
    ApiJson(req): ApiJson<StartProcess>,
) -> Result<impl IntoResponse, ApiError> {
    limits::check_start(&req)?;
    if let Some(p) = req.pty {
        if p.rows == 0 || p.cols == 0 {
            return Err(ApiError::invalid("pty rows and cols must be at least 1"));
        }
    }
    let pid = st.manager.start_process(&tenant.name, &id, req).await?;
    Ok((StatusCode::CREATED, Json(json!({ "pid": pid }))))
}

pub async fn list(
    State(st): State<AppState>,
    Caller(tenant): Caller,
    SandboxId(id): SandboxId,
) -> Result<impl IntoResponse, ApiError> {
    let processes = st.manager.processes(&tenant.name, &id).await?;
    Ok(Json(json!({ "processes": processes })))
}

/// A signal number (1-64) or name (`"SIGTERM"` or `"TERM"`).
#[derive(Deserialize)]
#[serde(untagged)]
pub enum SignalSpec {
    Number(i64),
    Name(String),
}

impl SignalSpec {
    pub fn number(&self) -> Result<i32, ApiError> {
        match self {
            SignalSpec::Number(n) if (1..=64).contains(n) => Ok(*n as i32),
            SignalSpec::Number(n) => Err(ApiError::invalid(format!("signal {n} is not between 1 and 64"))),
            SignalSpec::Name(s) => signal_by_name(s).ok_or_else(|| {
                ApiError::invalid(format!("unknown signal {s:?}; use a number or a name like \"SIGTERM\""))
            }),
        }
    }
}

pub fn signal_by_name(name: &str) -> Option<i32> {
    let upper = name.to_ascii_uppercase();
    let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
    Some(match bare {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "ABRT" => libc::SIGABRT,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        "PIPE" => libc::SIGPIPE,
        "ALRM" => libc::SIGALRM,
        "TERM" => libc::SIGTERM,
        "CONT" => libc::SIGCONT,
        "STOP" => libc::SIGSTOP,
        "TSTP" => libc::SIGTSTP,
        "WINCH" => libc::SIGWINCH,
        _ => return None,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignalRequest {
    pub signal: SignalSpec,
}

pub async fn signal(
    State(st): State<AppState>,
    Caller(tenant): Caller,
    ProcessPath(id, pid): ProcessPath,
    ApiJson(req): ApiJson<SignalRequest>,
) -> Result<StatusCode, ApiError> {
    let sig = req.signal.number()?;
    st.manager.signal(&tenant.name, &id, pid, sig).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The raw stdin bytes of one request (≤ 1 MiB).
pub struct RawBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;
    async fn from_request(req: Request, _: &S) -> Result<Self, ApiError> {
        read_body(req, MAX_STDIN_BODY).await.map(RawBody)
    }
}

pub async fn stdin(
    State(st): State<AppState>,
    Caller(tenant): Caller,
    ProcessPath(id, pid): ProcessPath,
    q: QueryPairs,
    RawBody(body): RawBody,
) -> Result<StatusCode, ApiError> {
    q.only(&["eof"])?;
    let eof = q.flag("eof")?;
    st.manager.stdin(&tenant.name, &id, pid, body.to_vec(), eof).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn attach(
    State(st): State<AppState>,
    Caller(tenant): Caller,
    KeyLease(lease): KeyLease,
    ProcessPath(id, pid): ProcessPath,
    q: QueryPairs,
    permit: Option<axum::Extension<safehouse_http::server::ConnPermit>>,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    q.only(&["binary"])?;
    let binary = q.flag("binary")?;
    let ws = ws.map_err(|e| {
        ApiError::new(StatusCode::BAD_REQUEST, "websocket_required", format!("this route is a WebSocket: {e}"))
    })?;
    let events = st.manager.attach(&tenant.name, &id, pid).await?;
    let session = Session { st, tenant, id, pid, binary };
    Ok(ws.max_message_size(MAX_STDIN_BODY * 2).max_frame_size(MAX_STDIN_BODY * 2).on_upgrade(
        move |socket| async move {
            // The upgraded connection keeps counting against the connection cap.
            let _permit = permit;
            session.run(socket, events, lease).await;
        },
    ))
}

struct Session {
    st: AppState,
    tenant: Tenant,
    id: String,
    pid: u32,
    binary: bool,
}

/// A client → server frame.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
enum ClientFrame {
    Stdin { data: String },
    Eof,
    Resize { rows: u16, cols: u16 },
    Signal { signal: SignalSpec },
}

/// One server → client frame.
fn encode(ev: AttachEvent, binary: bool) -> Message {
    let v = match ev {
        AttachEvent::Stdout(data) if binary => return Message::Binary(data.into()),
        AttachEvent::Stdout(data) => json!({"type": "stdout", "data": B64.encode(data)}),
        AttachEvent::Stderr(data) => json!({"type": "stderr", "data": B64.encode(data)}),
        AttachEvent::Truncated { dropped_bytes } => json!({"type": "truncated", "dropped_bytes": dropped_bytes}),
        AttachEvent::Exit { exit_code, signal, wall_ms, cpu_ms, peak_memory_bytes } => json!({
            "type": "exit", "exit_code": exit_code, "signal": signal,
            "wall_ms": wall_ms, "cpu_ms": cpu_ms, "peak_memory_bytes": peak_memory_bytes,
        }),
    };
    Message::Text(v.to_string().into())
}

impl Session {
    async fn run(self, mut socket: WebSocket, mut events: tokio::sync::mpsc::Receiver<AttachEvent>, lease: Lease) {
        loop {
            tokio::select! {
                () = lease.revoked() => {
                    // 1008: policy violation, the close code for a credential that is no
                    // longer accepted. The process keeps running.
                    let close = CloseFrame { code: REVOKED_CLOSE_CODE, reason: REVOKED_MESSAGE.into() };
                    let _ = socket.send(Message::Close(Some(close))).await;
                    return;
                }
                ev = events.recv() => {
                    let Some(ev) = ev else {
                        let close = CloseFrame { code: 1000, reason: "process exited".into() };
                        let _ = socket.send(Message::Close(Some(close))).await;
                        return;
                    };
                    if socket.send(encode(ev, self.binary)).await.is_err() {
                        return;
                    }
                }
                msg = socket.recv() => {
                    let reply = match msg {
                        None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                        Some(Ok(Message::Text(t))) => self.handle(t.as_bytes()).await,
                        Some(Ok(Message::Binary(b))) => self.stdin(b.to_vec(), false).await,
                        Some(Ok(_)) => Ok(()),
                    };
                    if let Err(e) = reply {
                        let frame = json!({"type": "error", "code": e.code, "message": e.message});
                        if socket.send(Message::Text(frame.to_string().into())).await.is_err() {
                            return;
                        }
                    }
                }
            }
        }
    }

    async fn handle(&self, text: &[u8]) -> Result<(), ApiError> {
        match safehouse_http::json::parse::<ClientFrame>(text)? {
            ClientFrame::Stdin { data } => {
                let data = B64.decode(data).map_err(|e| ApiError::invalid(format!("stdin data is not base64: {e}")))?;
                self.stdin(data, false).await
            }
            ClientFrame::Eof => self.stdin(Vec::new(), true).await,
            ClientFrame::Resize { rows, cols } => {
                if rows == 0 || cols == 0 {
                    return Err(ApiError::invalid("rows and cols must be at least 1"));
                }
                Ok(self.st.manager.resize(&self.tenant.name, &self.id, self.pid, rows, cols).await?)
            }
            ClientFrame::Signal { signal } => {
                Ok(self.st.manager.signal(&self.tenant.name, &self.id, self.pid, signal.number()?).await?)
            }
        }
    }

    async fn stdin(&self, data: Vec<u8>, eof: bool) -> Result<(), ApiError> {
        Ok(self.st.manager.stdin(&self.tenant.name, &self.id, self.pid, data, eof).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals() {
        assert_eq!(signal_by_name("SIGTERM"), Some(15));
        assert_eq!(signal_by_name("kill"), Some(9));
        assert_eq!(signal_by_name("SIGNOPE"), None);
        assert_eq!(SignalSpec::Number(9).number().unwrap(), 9);
        assert!(SignalSpec::Number(0).number().is_err());
        assert!(SignalSpec::Number(65).number().is_err());
    }

    fn text(m: Message) -> serde_json::Value {
        match m {
            Message::Text(t) => serde_json::from_str(t.as_str()).unwrap(),
            other => panic!("not text: {other:?}"),
        }
    }

    #[test]
    fn server_frames() {
        assert_eq!(text(encode(AttachEvent::Stdout(b"hi".to_vec()), false)), json!({"type": "stdout", "data": "aGk="}));
        assert_eq!(text(encode(AttachEvent::Stderr(vec![0xff]), true)), json!({"type": "stderr", "data": "/w=="}));
        assert!(matches!(encode(AttachEvent::Stdout(b"hi".to_vec()), true), Message::Binary(b) if &b[..] == b"hi"));
        assert_eq!(
            text(encode(AttachEvent::Truncated { dropped_bytes: 7 }, false)),
            json!({"type": "truncated", "dropped_bytes": 7})
        );
        assert_eq!(
            text(encode(
                AttachEvent::Exit { exit_code: None, signal: Some(9), wall_ms: 12, cpu_ms: 3, peak_memory_bytes: 4096 },
                false,
            )),
            json!({"type": "exit", "exit_code": null, "signal": 9, "wall_ms": 12, "cpu_ms": 3, "peak_memory_bytes": 4096})
        );
    }

    #[test]
    fn client_frames() {
        assert!(matches!(safehouse_http::json::parse::<ClientFrame>(br#"{"type":"eof"}"#), Ok(ClientFrame::Eof)));
        assert!(safehouse_http::json::parse::<ClientFrame>(br#"{"type":"resize","rows":1}"#).is_err());
        assert!(safehouse_http::json::parse::<ClientFrame>(br#"{"type":"bogus"}"#).is_err());
        assert!(matches!(
            safehouse_http::json::parse::<ClientFrame>(br#"{"type":"signal","signal":"SIGINT"}"#),
            Ok(ClientFrame::Signal { .. })
        ));
    }
}

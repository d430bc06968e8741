//! The code interpreter of a sandbox: one driver process per sandbox (safehouse-interp),
//! started on first use (or by the warm pool), holding the sandbox's contexts. The driver
//! is an ordinary sandboxed process: the sandbox's policy, limits, network rules and exec
//! observation apply to it and to its kernels like to anything else in the sandbox.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Map, Value};
use tokio::sync::mpsc;

use safehouse_interp::{driver, ContextInfo, Event, Request, Session};
use safehouse_protocol::{SpawnRequest, StdinMode};

use super::{AttachEvent, Live, Manager, ManagerError};

/// How long the driver may take to say it is ready (python3 starting, nothing imported).
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a context operation (create, restart: a kernel start) may take.
const CONTEXT_TIMEOUT: Duration = Duration::from_secs(90);
/// How long `run_code` waits for the first event before it answers: a failure that comes
/// at once (an unknown context or language) becomes an error status, not a stream.
const FIRST_EVENT: Duration = Duration::from_millis(250);
/// The least memory limit with which kernels preload the data stack.
const PRELOAD_MIN_MEMORY: u64 = 512 << 20;
/// The last bytes of the driver's stderr kept to explain its exit.
const STDERR_TAIL: usize = 4096;

/// `POST /v1/sandboxes/{id}/code`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodeRequest {
    pub code: String,
    /// `python` (default) or `bash`; runs in that language's default context.
    #[serde(default)]
    pub language: Option<String>,
    /// A context id (from `POST .../contexts`); excludes `language`.
    #[serde(default)]
    pub context: Option<String>,
    /// Environment variables for this execution only.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Seconds; the kernel is interrupted when they run out (its state is kept). None: no
    /// limit but the sandbox's lifetime.
    #[serde(default)]
    pub timeout_s: Option<f64>,
}

/// `POST /v1/sandboxes/{id}/contexts`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateContext {
    #[serde(default)]
    pub language: Option<String>,
    #[serde(default)]
    pub cwd: Option<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

/// A running driver.
pub(crate) struct Driver {
    pid: u32,
    session: Arc<Session>,
}

/// A sandbox's driver, started once; a driver that exited is replaced on the next call.
#[derive(Default)]
pub(crate) struct Slot {
    driver: tokio::sync::Mutex<Option<Arc<Driver>>>,
}

/// The events of one execution, in the shape the `e2b-code-interpreter` SDK reads. Drop
/// it before the end and the execution is interrupted.
pub struct CodeRun {
    live: Arc<Live>,
    session: Arc<Session>,
    driver_pid: u32,
    request: u64,
    rx: mpsc::UnboundedReceiver<Event>,
    first: Option<Event>,
    oom_before: u64,
    done: bool,
    mgr: Manager,
}

impl CodeRun {
    /// The next output object (`stdout`, `stderr`, `result`, `error`,
    /// `number_of_executions`), or None at the end.
    pub async fn next(&mut self) -> Option<Map<String, Value>> {
        loop {
            if self.done {
                return None;
            }
            let event = match self.first.take() {
                Some(e) => e,
                None => match self.rx.recv().await {
                    Some(e) => e,
                    None => Event::Fail { code: "closed".into(), message: "the code interpreter went away".into() },
                },
            };
            match event {
                Event::Output(mut o) => {
                    if o.get("name").and_then(Value::as_str) == Some("DeadKernelError") {
                        self.explain_death(&mut o);
                    }
                    return Some(o);
                }
                Event::End => {
                    self.done = true;
                    return None;
                }
                Event::Fail { message, .. } => {
                    self.done = true;
                    let mut o = Map::new();
                    o.insert("type".into(), "error".into());
                    o.insert("name".into(), "InterpreterError".into());
                    o.insert("value".into(), message.into());
                    o.insert("traceback".into(), "".into());
                    return Some(o);
                }
                // Not an execution's event: ignore.
                Event::Context(_) | Event::Contexts(_) => continue,
            }
        }
    }

    /// A kernel killed while the sandbox's cgroup counted an OOM kill: say so.
    fn explain_death(&self, o: &mut Map<String, Value>) {
        let killed = o.get("signal").and_then(Value::as_i64) == Some(i64::from(libc::SIGKILL));
        o.remove("signal");
        o.remove("exit_code");
        if !killed || oom_kills(&self.live) <= self.oom_before {
            return;
        }
        o.insert("name".into(), "OutOfMemoryError".into());
        o.insert(
            "value".into(),
            "the kernel was killed by the out-of-memory killer: the code needed more memory than the sandbox's \
             limit (limits.memory) allows; the context's state is lost: restart it, and use less memory or \
             create the sandbox with a higher limit"
                .into(),
        );
        let data =
            serde_json::json!({ "interp": true, "message": "the code interpreter's kernel reached the memory limit" });
        self.mgr.note(&self.live.id, "limit.memory", data);
    }
}

impl Drop for CodeRun {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        self.session.forget(self.request);
        // The caller went away mid-run: stop the code (the context keeps its state).
        if let Ok((_, line, _)) = self.session.begin(&Request::Interrupt { context: None, request: Some(self.request) })
        {
            let _ = self.live.link.stdin(self.driver_pid, line);
        }
    }
}

fn oom_kills(live: &Live) -> u64 {
    let cg = live.cgroup.lock().unwrap_or_else(|e| e.into_inner());
    cg.as_ref().and_then(|c| c.oom_kills().ok()).unwrap_or(0)
}

fn failed(code: &str, message: String) -> ManagerError {
    match code {
        "not_found" => ManagerError::NoContext(message),
        "invalid" | "unavailable" => ManagerError::Invalid(message),
        _ => ManagerError::Internal(format!("the code interpreter: {message}")),
    }
}

impl Manager {
    /// The sandbox's driver, started if it is not running.
    async fn driver(&self, live: &Arc<Live>) -> Result<Arc<Driver>, ManagerError> {
        let mut slot = live.interp.driver.lock().await;
        if let Some(d) = slot.as_ref() {
            if d.session.closed().is_none() {
                return Ok(d.clone());
            }
        }
        let d = self.start_driver(live).await?;
        *slot = Some(d.clone());
        Ok(d)
    }

    /// Whether new kernels of this sandbox import the data stack up front: only with room
    /// for it (a kernel with numpy, pandas and matplotlib loaded holds ~100 MB).
    async fn preload(&self, live: &Live) -> bool {
        let policy = self.policy(&live.tenant, &live.id).await.ok().flatten();
        let memory = policy.as_ref().and_then(|p| p.pointer("/limits/memory")).and_then(|m| match m {
            serde_json::Value::String(s) => safehouse_policy::units::parse_size(s).ok(),
            serde_json::Value::Number(n) => n.as_u64(),
            _ => None,
        });
        memory.is_none_or(|m| m >= PRELOAD_MIN_MEMORY)
    }

    async fn start_driver(&self, live: &Arc<Live>) -> Result<Arc<Driver>, ManagerError> {
        let started = Instant::now();
        let preload = if self.preload(live).await { driver::PRELOAD } else { "" };
        let spawn = SpawnRequest {
            id: 0,
            argv: driver::argv(),
            env: vec![("SAFEHOUSE_INTERP_PRELOAD".to_string(), preload.to_string())],
            cwd: None,
            pty: None,
            stdin: StdinMode::Pipe,
            capture: false,
            cgroup_fds: 0,
        };
        let pid = live.link.spawn(spawn, Vec::new()).await.map_err(|e| {
            ManagerError::Invalid(format!(
                "cannot start the code interpreter (python3 -I -u -c ...) in this sandbox: {e}; it needs python3 \
                 (and ipykernel for Python contexts): use the code-interpreter image"
            ))
        })?;
        let mut out = live.link.subscribe(pid).ok_or_else(|| ManagerError::Internal("the driver vanished".into()))?;
        live.link.stdin(pid, driver::preamble()).map_err(|e| ManagerError::Internal(e.to_string()))?;
        let session = Arc::new(Session::new());
        let (s, mgr, id) = (session.clone(), self.clone(), live.id.clone());
        tokio::spawn(async move {
            let mut tail: Vec<u8> = Vec::new();
            let why = loop {
                match out.recv().await {
                    Some(AttachEvent::Stdout(b)) => s.feed(&b),
                    Some(AttachEvent::Stderr(b)) => {
                        tail.extend_from_slice(&b);
                        if tail.len() > STDERR_TAIL {
                            tail.drain(..tail.len() - STDERR_TAIL);
                        }
                    }
                    Some(AttachEvent::Truncated { .. }) => {}
                    Some(AttachEvent::Exit { exit_code, signal, .. }) => {
                        let how = match (exit_code, signal) {
                            (_, Some(sig)) => format!("was killed by signal {sig}"),
                            (Some(c), _) => format!("exited with status {c}"),
                            _ => "ended".to_string(),
                        };
                        let said = String::from_utf8_lossy(&tail).trim().to_string();
                        break if said.is_empty() {
                            format!("the code interpreter's driver {how}; its contexts are gone (the next call starts a new one)")
                        } else {
                            format!("the code interpreter's driver {how}: {said}; its contexts are gone")
                        };
                    }
                    None => break "the sandbox's agent connection closed".to_string(),
                }
            };
            s.close(&why);
            mgr.note(&id, "interp.exited", serde_json::json!({ "pid": pid, "message": why }));
        });
        session.wait_ready(READY_TIMEOUT).await.map_err(|e| {
            let _ = live.link.signal(pid, libc::SIGKILL);
            ManagerError::Invalid(format!("{e}; does the sandbox have python3 on its PATH?"))
        })?;
        let ms = started.elapsed().as_millis() as u64;
        self.note(&live.id, "interp.started", serde_json::json!({ "pid": pid, "ms": ms }));
        Ok(Arc::new(Driver { pid, session }))
    }

    /// Sends `req` and returns its events.
    async fn ask(
        &self,
        live: &Arc<Live>,
        req: &Request,
    ) -> Result<(Arc<Driver>, u64, mpsc::UnboundedReceiver<Event>), ManagerError> {
        let d = self.driver(live).await?;
        let (id, line, rx) = d.session.begin(req).map_err(|e| ManagerError::Internal(e.to_string()))?;
        live.link.stdin(d.pid, line).map_err(|e| ManagerError::Internal(format!("the code interpreter: {e}")))?;
        Ok((d, id, rx))
    }

    /// A context operation: its one answer.
    async fn ask_once(&self, live: &Arc<Live>, req: Request) -> Result<Event, ManagerError> {
        let (d, id, mut rx) = self.ask(live, &req).await?;
        let got = tokio::time::timeout(CONTEXT_TIMEOUT, async {
            let mut answer = None;
            while let Some(e) = rx.recv().await {
                match e {
                    Event::End => return Ok(answer.unwrap_or(Event::End)),
                    Event::Fail { code, message } => return Err(failed(&code, message)),
                    other => answer = Some(other),
                }
            }
            Err(ManagerError::Internal("the code interpreter went away".into()))
        })
        .await;
        match got {
            Ok(r) => r,
            Err(_) => {
                d.session.forget(id);
                Err(ManagerError::Internal(format!("the code interpreter did not answer within {CONTEXT_TIMEOUT:?}")))
            }
        }
    }

    /// Runs code in a context; the events stream from the returned run.
    pub async fn run_code(&self, tenant: &str, id: &str, req: CodeRequest) -> Result<CodeRun, ManagerError> {
        if req.language.is_some() && req.context.is_some() {
            return Err(ManagerError::Invalid(
                "give a context or a language, not both (a context has its language)".into(),
            ));
        }
        if req.code.len() > crate::limits::MAX_CODE {
            return Err(ManagerError::Invalid(format!(
                "code is {} bytes; the limit is {} (write big inputs to a file and read them from the code)",
                req.code.len(),
                crate::limits::MAX_CODE
            )));
        }
        if let Some(t) = req.timeout_s {
            if !(t.is_finite() && t > 0.0) {
                return Err(ManagerError::Invalid("timeout_s must be a positive number of seconds".into()));
            }
        }
        self.take_exec(tenant)?;
        let live = self.running(tenant, id)?;
        let oom_before = oom_kills(&live);
        let exec = Request::Execute {
            code: req.code,
            language: req.language,
            context: req.context,
            env: req.env,
            timeout: req.timeout_s,
        };
        let (d, request, mut rx) = self.ask(&live, &exec).await?;
        let mut run = CodeRun {
            live,
            session: d.session.clone(),
            driver_pid: d.pid,
            request,
            rx: mpsc::unbounded_channel().1,
            first: None,
            oom_before,
            done: false,
            mgr: self.clone(),
        };
        if let Ok(first) = tokio::time::timeout(FIRST_EVENT, rx.recv()).await {
            match first {
                Some(Event::Fail { code, message }) => {
                    run.done = true;
                    return Err(failed(&code, message));
                }
                Some(e) => run.first = Some(e),
                None => {
                    run.done = true;
                    return Err(ManagerError::Internal("the code interpreter went away".into()));
                }
            }
        }
        run.rx = rx;
        self.note(id, "code.run", serde_json::json!({ "request": request }));
        Ok(run)
    }

    pub async fn code_contexts(&self, tenant: &str, id: &str) -> Result<Vec<ContextInfo>, ManagerError> {
        let live = self.running(tenant, id)?;
        match self.ask_once(&live, Request::List).await? {
            Event::Contexts(c) => Ok(c),
            other => Err(ManagerError::Internal(format!("the code interpreter answered {:?}", other.kind()))),
        }
    }

    pub async fn create_code_context(
        &self,
        tenant: &str,
        id: &str,
        req: CreateContext,
    ) -> Result<ContextInfo, ManagerError> {
        let live = self.running(tenant, id)?;
        let r = Request::Create { language: req.language, cwd: req.cwd, env: req.env };
        match self.ask_once(&live, r).await? {
            Event::Context(c) => {
                self.note(id, "code.context.created", serde_json::json!({ "context": c.id, "language": c.language }));
                Ok(c)
            }
            other => Err(ManagerError::Internal(format!("the code interpreter answered {:?}", other.kind()))),
        }
    }

    pub async fn restart_code_context(
        &self,
        tenant: &str,
        id: &str,
        context: &str,
    ) -> Result<ContextInfo, ManagerError> {
        let live = self.running(tenant, id)?;
        match self.ask_once(&live, Request::Restart { context: context.to_string() }).await? {
            Event::Context(c) => {
                self.note(id, "code.context.restarted", serde_json::json!({ "context": c.id }));
                Ok(c)
            }
            other => Err(ManagerError::Internal(format!("the code interpreter answered {:?}", other.kind()))),
        }
    }

    pub async fn remove_code_context(&self, tenant: &str, id: &str, context: &str) -> Result<(), ManagerError> {
        let live = self.running(tenant, id)?;
        self.ask_once(&live, Request::Remove { context: context.to_string() }).await?;
        self.note(id, "code.context.removed", serde_json::json!({ "context": context }));
        Ok(())
    }

    /// Starts the driver and the default context of `language`, so the first call finds a
    /// kernel ready (the warm pool).
    pub async fn warm_code(&self, tenant: &str, id: &str, language: &str) -> Result<(), ManagerError> {
        let live = self.running(tenant, id)?;
        self.ask_once(&live, Request::Warm { language: language.to_string() }).await.map(|_| ())
    }
}

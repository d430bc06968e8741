//! The E2B control plane: create, get, list, kill, timeout, pause, connect and metrics of
//! sandboxes, in E2B's camelCase JSON, mapped onto the manager's own calls (templates onto
//! presets, the network options onto the gateway policy, pause/connect onto freeze/thaw).
//! Errors are E2B's shape, `{"code": status, "message": ...}`.

use std::collections::BTreeMap;

use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

use safehouse_http::params::{is_sandbox_id, Caller};
use safehouse_http::ApiError;
use safehouse_manager::auth::Tenant;
use safehouse_manager::limits::{self, MAX_TIMEOUT_S};
use safehouse_manager::{CreateRequest, Lifecycle, OnTimeout, SandboxInfo, SandboxState, Storage};

use super::{e2b_error, ENVD_VERSION};
use crate::E2b;

/// Largest create body.
const MAX_BODY: usize = 1 << 20;
/// The template every E2B program names by default.
pub const BASE_TEMPLATE: &str = "base";
/// The `e2b-code-interpreter` SDK's default template: `base` with the warm pool.
pub const CODE_INTERPRETER_TEMPLATE: &str = "code-interpreter-v1";

/// The paths under the front: E2B's API, both route generations, and what E2B serves that
/// safehouse does not yet (templates, snapshots, volumes), which is refused in E2B's shape.
const CONTROL_PREFIXES: &[&str] =
    &["/sandboxes", "/v2/sandboxes", "/templates", "/v2/templates", "/v3/templates", "/snapshots", "/volumes"];

/// Whether `path` is under the control plane (its key comes in `X-API-Key`, its errors in
/// E2B's shape).
pub fn is_control_path(path: &str) -> bool {
    CONTROL_PREFIXES.iter().any(|p| path.strip_prefix(p).is_some_and(|rest| rest.is_empty() || rest.starts_with('/')))
}

/// The E2B answer for an error of the native layer: same status, E2B's body.
pub(crate) fn answer(r: Result<Response, ApiError>) -> Response {
    match r {
        Ok(r) => r,
        Err(e) => e2b_error(e.status, e.message),
    }
}

fn not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("sandbox {id} not found"))
}

fn check_id(id: &str) -> Result<(), ApiError> {
    if is_sandbox_id(id) {
        Ok(())
    } else {
        Err(not_found(id))
    }
}

/// The id of a sandbox the tenant has and that has not ended (E2B forgets ended ones).
pub(crate) async fn alive(st: &E2b, tenant: &Tenant, id: &str) -> Result<SandboxInfo, ApiError> {
    check_id(id)?;
    let info = st.manager.info(&tenant.name, id).await.map_err(|_| not_found(id))?;
    match info.state {
        SandboxState::Running | SandboxState::Frozen | SandboxState::Paused => Ok(info),
        _ => Err(not_found(id)),
    }
}

pub(crate) async fn body_json(req: Request) -> Result<Map<String, Value>, ApiError> {
    parse_body(&safehouse_http::json::read_body(req, MAX_BODY).await?)
}

/// A control-plane body: a JSON object (an empty body is `{}`).
pub fn parse_body(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError::invalid("the body must be a JSON object")),
        Err(e) => Err(ApiError::invalid(format!("invalid JSON: {e}"))),
    }
}

/// A string map field (`metadata`, `envVars`).
fn string_map(body: &Map<String, Value>, field: &str) -> Result<BTreeMap<String, String>, ApiError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(BTreeMap::new()),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                _ => Err(ApiError::invalid(format!("{field}.{k} must be a string"))),
            })
            .collect(),
        Some(_) => Err(ApiError::invalid(format!("{field} must be an object of strings"))),
    }
}

fn string_list(net: &Map<String, Value>, field: &str) -> Result<Vec<String>, ApiError> {
    match net.get(field) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| ApiError::invalid(format!("network.{field}: strings only")))
            })
            .collect(),
        Some(_) => Err(ApiError::invalid(format!("network.{field} must be a list of strings"))),
    }
}

/// Options that safehouse cannot honour yet: refused with a clear error, never ignored.
fn refuse_unsupported(body: &Map<String, Value>) -> Result<(), ApiError> {
    // Unset, null, false, `{"enabled": false}` and empty lists ask for nothing.
    let set = |k: &str| {
        body.get(k).is_some_and(|v| match v {
            Value::Null | Value::Bool(false) => false,
            Value::Array(a) => !a.is_empty(),
            Value::Object(o) => o.get("enabled") != Some(&Value::Bool(false)),
            _ => true,
        })
    };
    for (field, what) in [("mcp", "MCP gateways"), ("iam", "workload identity tokens")] {
        if set(field) {
            return Err(ApiError::invalid(format!(
                "{field}: {what} is not supported by safehouse yet (docs/e2b.md); remove it"
            )));
        }
    }
    Ok(())
}

/// E2B's lifecycle fields as safehouse's: `autoPause` is `on_timeout: "pause"` with the
/// writable layer on disk (a filesystem pause: `autoPauseMemory: false`, or unset, which
/// leaves the kind to the API); `autoPause` with `autoPauseMemory: true` asks to keep the
/// processes' memory, which this tier cannot (no process checkpointing on this kernel):
/// refused by name. `autoResume: {enabled: true}` (or `true`) is `auto_resume`.
fn lifecycle_of(body: &Map<String, Value>) -> Result<(Option<Storage>, Option<Lifecycle>), ApiError> {
    let flag = |k: &str| -> Result<Option<bool>, ApiError> {
        match body.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(Value::Object(o)) => match o.get("enabled") {
                Some(Value::Bool(b)) => Ok(Some(*b)),
                None | Some(Value::Null) => Ok(Some(false)),
                Some(_) => Err(ApiError::invalid(format!("{k}.enabled must be true or false"))),
            },
            Some(_) => Err(ApiError::invalid(format!("{k} must be true or false"))),
        }
    };
    let pause = flag("autoPause")?.unwrap_or(false);
    let resume = flag("autoResume")?.unwrap_or(false);
    if pause && flag("autoPauseMemory")? == Some(true) {
        return Err(ApiError::invalid(
            "autoPauseMemory: a pause that keeps the processes' memory needs process checkpointing (CRIU), which \
             does not work on this kernel; pause to the filesystem instead (lifecycle on_timeout \
             {\"action\": \"pause\", \"mode\": \"filesystem\"}, or leave mode unset)",
        ));
    }
    if !pause && !resume {
        return Ok((None, None));
    }
    let lifecycle = Lifecycle {
        on_timeout: if pause { OnTimeout::Pause } else { OnTimeout::Kill },
        auto_resume: resume,
        idle_timeout_s: None,
    };
    Ok((Some(Storage::Disk), Some(lifecycle)))
}

/// `volumeMounts: [{name, path}]`: the tenant's safehouse volumes (made with the native
/// API, `POST /v1/volumes`, or `safehouse volume create`), mounted read-write.
fn volumes_of(body: &Map<String, Value>) -> Result<Vec<safehouse_manager::VolumeMount>, ApiError> {
    match body.get("volumeMounts") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) => a
            .iter()
            .map(|m| {
                let field = |k: &str| m.get(k).and_then(Value::as_str).map(str::to_string);
                match (field("name"), field("path")) {
                    (Some(name), Some(path)) => Ok(safehouse_manager::VolumeMount { name, path, read_only: false }),
                    _ => Err(ApiError::invalid("volumeMounts: each entry is {\"name\": ..., \"path\": ...}")),
                }
            })
            .collect(),
        Some(_) => Err(ApiError::invalid("volumeMounts must be a list of {name, path}")),
    }
}

/// The `network` section of a policy from `allow_internet_access` and `network`: E2B
/// sandboxes reach the internet unless told otherwise, so the default is every public host
/// (`"*"`, never private addresses). `denyOut` works only as "deny everything else"
/// (`0.0.0.0/0`): safehouse policies are allow-lists.
pub fn network_allow(body: &Map<String, Value>) -> Result<Option<Vec<String>>, ApiError> {
    let internet = match body.get("allow_internet_access") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => return Err(ApiError::invalid("allow_internet_access must be true or false")),
    };
    let net = match body.get("network") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(_) => return Err(ApiError::invalid("network must be an object")),
    };
    for (k, v) in &net {
        match k.as_str() {
            "allowOut" | "denyOut" => {}
            // SDKs before 2.46 send `true` (E2B's default) with every `network`; sandbox
            // ports stay behind the access token whatever it says (docs/e2b.md), and a
            // request without the token is refused with that reason when it comes.
            "allowPublicTraffic" if v.is_null() || v.is_boolean() => {}
            "allowPublicTraffic" => return Err(ApiError::invalid("network.allowPublicTraffic must be true or false")),
            "dnsServers" if v.is_null() => {}
            _ if v.is_null() => {}
            other => {
                return Err(ApiError::invalid(format!(
                    "network.{other} is not supported by safehouse yet (docs/e2b.md); remove it"
                )))
            }
        }
    }
    let allow_out = string_list(&net, "allowOut")?;
    let deny_out = string_list(&net, "denyOut")?;
    let deny_all = deny_out.iter().any(|d| d == "0.0.0.0/0" || d == "::/0");
    if !deny_out.is_empty() && !deny_all {
        return Err(ApiError::invalid(
            "network.denyOut: safehouse policies are allow-lists; deny everything with \"0.0.0.0/0\" and list \
             what may be reached in allowOut",
        ));
    }
    if internet.is_none() && net.is_empty() {
        return Ok(None);
    }
    let mut allow = Vec::new();
    if internet.unwrap_or(true) && !deny_all {
        allow.push("*".to_string());
    }
    allow.extend(allow_out);
    Ok(Some(allow))
}

/// What a template becomes in a create request: (policy, preset, store template).
type Mapped = (Option<Value>, Option<String>, Option<String>);

/// Template → (policy, preset, store template): `base` is the default policy with E2B's
/// network on the host's root; a safehouse preset name is that preset (network options
/// then refused); a template of the daemon's image store (`safehouse template build`,
/// `image pull`) is base's policy on that template's root. `code-interpreter-v1` is the
/// store's template of that name when there is one (scripts/interp-image builds it), else
/// base on the host's root, which then needs the host's python3 with ipykernel.
fn policy_for(template: &str, in_store: bool, body: &Map<String, Value>) -> Result<Mapped, ApiError> {
    let allow = network_allow(body)?;
    let base = |allow: Option<Vec<String>>| {
        let allow = allow.unwrap_or_else(|| vec!["*".to_string()]);
        Some(json!({"version": 1, "network": {"allow": allow}}))
    };
    if template == BASE_TEMPLATE {
        return Ok((base(allow), None, None));
    }
    if safehouse_policy::presets::names().contains(&template) {
        // `allow_internet_access: true` is E2B's default, which SDKs before 2.46 always
        // send: it asks for nothing. `false` or a `network` section would change the
        // preset's network, which a preset does not take.
        let asks = body.get("network").is_some_and(|n| !n.is_null())
            || body.get("allow_internet_access") == Some(&Value::Bool(false));
        if allow.is_some() && asks {
            return Err(ApiError::invalid(format!(
                "template {template:?} is a safehouse preset with its own network policy; drop \
                 allow_internet_access/network or use the \"base\" template"
            )));
        }
        return Ok((None, Some(template.to_string()), None));
    }
    if in_store {
        return Ok((base(allow), None, Some(template.to_string())));
    }
    if template == CODE_INTERPRETER_TEMPLATE {
        return Ok((base(allow), None, None));
    }
    Err(ApiError::invalid(format!(
        "template {template:?} does not exist here; use \"base\", \"{CODE_INTERPRETER_TEMPLATE}\", a safehouse preset ({}) \
         or a template of the daemon's image store (build one with `safehouse template build --tag {template} DIR`)",
        safehouse_policy::presets::names().join(", ")
    )))
}

/// `POST /v2/sandboxes`.
pub async fn create(State(st): State<E2b>, Caller(tenant): Caller, req: Request) -> Response {
    answer(create_inner(&st, &tenant, req).await)
}

async fn create_inner(st: &E2b, tenant: &Tenant, req: Request) -> Result<Response, ApiError> {
    let body = body_json(req).await?;
    let template = create_template(&body)?;
    let snapshot = crate::persist::snapshot_template(st, tenant, &template, &body).await?;
    let in_store = snapshot.is_none() && template != BASE_TEMPLATE && st.manager.template_exists(&template).await;
    let mut req = create_request(&body, &template, in_store, snapshot.is_some())?;
    if req.storage.is_none() && snapshot.is_none() && template != CODE_INTERPRETER_TEMPLATE && disk_here(st).await {
        // E2B's sandboxes keep their files on disk: snapshots, forks and a filesystem pause
        // then work on any of them, as on E2B (a create costs the same: BENCHMARKS.md).
        // The code interpreter's warm pool is of sandboxes in RAM.
        req.storage = Some(Storage::Disk);
    }
    req.snapshot = snapshot;
    req.created_by = tenant.key_id.clone();
    let info = if template == CODE_INTERPRETER_TEMPLATE {
        st.manager.create_for_code(&tenant.name, req, &template).await?.0
    } else {
        st.manager.create(&tenant.name, req).await?
    };
    let mut templates = st.e2b.templates.lock().unwrap_or_else(|e| e.into_inner());
    templates.retain(|sb, _| st.manager.is_live(sb));
    templates.insert(info.id.clone(), template.clone());
    drop(templates);
    Ok((StatusCode::CREATED, Json(sandbox_json(st, tenant, &info, &template))).into_response())
}

/// The template a create body names (`templateID`), once the options safehouse cannot
/// honour are refused.
pub fn create_template(body: &Map<String, Value>) -> Result<String, ApiError> {
    refuse_unsupported(body)?;
    match body.get("templateID") {
        Some(Value::String(t)) if !t.is_empty() => Ok(t.clone()),
        _ => Err(ApiError::invalid(
            "templateID is required (\"base\", a safehouse preset or a template of the image store)",
        )),
    }
}

/// A create body as the native create request (`in_store`: `template` is one of the image
/// store's; `from_snapshot`: it names a snapshot, whose sandbox's policy the new one gets);
/// everything but the caller, the snapshot and the disk the host decides.
pub fn create_request(
    body: &Map<String, Value>,
    template: &str,
    in_store: bool,
    from_snapshot: bool,
) -> Result<CreateRequest, ApiError> {
    let timeout_s = match body.get("timeout") {
        None | Some(Value::Null) => None,
        Some(v) => Some(timeout_of(v)?),
    };
    let (policy, preset, store_template) =
        if from_snapshot { (None, None, None) } else { policy_for(template, in_store, body)? };
    let (storage, lifecycle) = lifecycle_of(body)?;
    let volumes = volumes_of(body)?;
    let env = string_map(body, "envVars")?;
    limits::check_env(&env)?;
    let metadata = string_map(body, "metadata")?;
    Ok(CreateRequest {
        policy,
        preset,
        timeout_s,
        env,
        metadata,
        template: store_template,
        storage,
        lifecycle,
        volumes,
        ..Default::default()
    })
}

/// Whether this host keeps sandboxes' files on disk (its storage pool opens), asked once.
async fn disk_here(st: &E2b) -> bool {
    if let Some(d) = st.e2b.disk.get() {
        return *d;
    }
    let d = st.manager.disk_storage_available().await;
    *st.e2b.disk.get_or_init(|| d)
}

pub(crate) fn timeout_of(v: &Value) -> Result<u64, ApiError> {
    v.as_u64().filter(|t| (1..=MAX_TIMEOUT_S).contains(t)).ok_or_else(|| {
        ApiError::invalid(format!("timeout must be a whole number of seconds from 1 to {MAX_TIMEOUT_S}"))
    })
}

pub(crate) fn template_of(st: &E2b, info: &SandboxInfo) -> String {
    let known = st.e2b.templates.lock().unwrap_or_else(|e| e.into_inner()).get(&info.id).cloned();
    known.or_else(|| info.preset.clone()).unwrap_or_else(|| BASE_TEMPLATE.to_string())
}

/// E2B's `Sandbox` (the answer of create and connect), with a token for the caller's key.
/// `trafficAccessToken` is the same token: the `e2b-code-interpreter` SDK sends it (as
/// `E2B-Traffic-Access-Token`, accepted on port 49999 only) on its context calls.
pub(crate) fn sandbox_json(st: &E2b, tenant: &Tenant, info: &SandboxInfo, template: &str) -> Value {
    let token = st.e2b.access_token(&info.id, tenant, st.auth.admin_hash());
    json!({
        "sandboxID": info.id,
        "templateID": template,
        "clientID": "safehouse",
        "envdVersion": ENVD_VERSION,
        "envdAccessToken": token,
        "trafficAccessToken": token,
    })
}

pub(crate) fn host_cpus() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// Host memory in bytes (MemTotal): what a sandbox without a memory limit can use at most.
pub(crate) fn host_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            let line = m.lines().find(|l| l.starts_with("MemTotal:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map(|kib| kib * 1024)
        .unwrap_or(0)
}

fn state_name(s: SandboxState) -> &'static str {
    match s {
        SandboxState::Frozen | SandboxState::Paused => "paused",
        _ => "running",
    }
}

/// E2B's `ListedSandbox`; `with_token` (the caller's key) adds what `SandboxDetail` has more.
pub(crate) fn listed_json(st: &E2b, info: &SandboxInfo, with_token: Option<&Tenant>) -> Value {
    let mut v = json!({
        "sandboxID": info.id,
        "templateID": template_of(st, info),
        "clientID": "safehouse",
        "startedAt": info.created_at,
        "endAt": info.expires_at,
        "cpuCount": host_cpus(),
        "memoryMB": host_memory() >> 20,
        "diskSizeMB": 0,
        "state": state_name(info.state),
        "envdVersion": ENVD_VERSION,
        "metadata": info.metadata,
    });
    if let Some(tenant) = with_token {
        v["envdAccessToken"] = st.e2b.access_token(&info.id, tenant, st.auth.admin_hash()).into();
    }
    v
}

/// `GET /sandboxes/{id}`.
pub async fn get(State(st): State<E2b>, Caller(tenant): Caller, Path(id): Path<String>) -> Response {
    answer(async { Ok(Json(listed_json(&st, &alive(&st, &tenant, &id).await?, Some(&tenant))).into_response()) }.await)
}

/// `DELETE /sandboxes/{id}`: 204, or 404 for one that is not there (or ended).
pub async fn kill(State(st): State<E2b>, Caller(tenant): Caller, Path(id): Path<String>) -> Response {
    answer(
        async {
            alive(&st, &tenant, &id).await?;
            st.manager.kill(&tenant.name, &id).await?;
            st.e2b.forget(&id);
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        .await,
    )
}

/// `POST /sandboxes/{id}/timeout` with `{"timeout": seconds}`: the deadline, from now
/// (shorter or longer): 204. A paused sandbox is 404, as in E2B: SDKs before the connect
/// route (2.0) connect by setting the timeout and resume the sandbox when that fails.
pub async fn set_timeout(
    State(st): State<E2b>,
    Caller(tenant): Caller,
    Path(id): Path<String>,
    req: Request,
) -> Response {
    answer(
        async {
            let info = alive(&st, &tenant, &id).await?;
            if info.state == SandboxState::Frozen {
                return Err(ApiError::not_found(format!(
                    "sandbox {id} is paused; connect to it (Sandbox.connect resumes it) to set its timeout"
                )));
            }
            let body = body_json(req).await?;
            let t = timeout_of(body.get("timeout").unwrap_or(&Value::Null))?;
            st.manager.set_timeout(&tenant.name, &id, t).await?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        .await,
    )
}

/// `POST /sandboxes/{id}/pause` with an optional `{"memory": bool, "requireHealthyGuest":
/// bool}`: freezes it, memory kept (204); 409 if it is already paused. A pause that drops
/// the memory (`memory: false`, the SDK's `keep_memory=False`) is a filesystem snapshot,
/// which needs persistence: refused by name until it exists.
pub async fn pause(State(st): State<E2b>, Caller(tenant): Caller, Path(id): Path<String>, req: Request) -> Response {
    answer(
        async {
            let info = alive(&st, &tenant, &id).await?;
            let body = body_json(req).await?;
            let keep_memory = match body.get("memory") {
                None | Some(Value::Null) | Some(Value::Bool(true)) => true,
                Some(Value::Bool(false)) => false,
                Some(_) => return Err(ApiError::invalid("memory must be true or false")),
            };
            if let Some((k, _)) = body.iter().find(|(k, _)| !matches!(k.as_str(), "memory" | "requireHealthyGuest")) {
                return Err(ApiError::invalid(format!("pause: {k} is not supported by safehouse yet; remove it")));
            }
            if matches!(info.state, SandboxState::Frozen | SandboxState::Paused) {
                return Err(ApiError::new(StatusCode::CONFLICT, "frozen", format!("sandbox {id} is already paused")));
            }
            if keep_memory {
                // Memory kept: every process frozen where it stands (the cgroup freezer).
                st.manager.freeze(&tenant.name, &id).await?;
            } else {
                // A filesystem pause (`keep_memory=False`): the processes stop, the files stay
                // on disk, the memory is freed; needs the layer on disk (autoPause at create).
                st.manager.pause(&tenant.name, &id).await?;
            }
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        .await,
    )
}

/// Brings a paused sandbox back: a frozen one (memory kept) thawed, one paused to the
/// filesystem resumed (its processes start afresh on its files). Whether it was paused.
async fn wake(st: &E2b, tenant: &Tenant, info: &SandboxInfo) -> Result<bool, ApiError> {
    match info.state {
        SandboxState::Frozen => st.manager.thaw(&tenant.name, &info.id).await.map(|_| true).map_err(Into::into),
        SandboxState::Paused => st.manager.resume(&tenant.name, &info.id).await.map(|_| true).map_err(Into::into),
        _ => Ok(false),
    }
}

/// `POST /sandboxes/{id}/connect` and `POST /v2/sandboxes/{id}/connect` with
/// `{"timeout": seconds}`: thaws a paused sandbox (201) or answers for a running one (200).
/// The timeout only ever extends the deadline, as in E2B.
pub async fn connect(State(st): State<E2b>, Caller(tenant): Caller, Path(id): Path<String>, req: Request) -> Response {
    answer(
        async {
            let info = alive(&st, &tenant, &id).await?;
            let body = body_json(req).await?;
            let resumed = wake(&st, &tenant, &info).await?;
            extend(&st, &tenant, &info, body.get("timeout")).await?;
            let status = if resumed { StatusCode::CREATED } else { StatusCode::OK };
            Ok((status, Json(sandbox_json(&st, &tenant, &info, &template_of(&st, &info)))).into_response())
        }
        .await,
    )
}

/// `POST /sandboxes/{id}/resume` with `{"timeout": seconds}` (the first generation's
/// connect for paused sandboxes): thaws it (201, the sandbox); 409 for a running one.
pub async fn resume(State(st): State<E2b>, Caller(tenant): Caller, Path(id): Path<String>, req: Request) -> Response {
    answer(
        async {
            let info = alive(&st, &tenant, &id).await?;
            let body = body_json(req).await?;
            if body.get("autoPause").is_some_and(|v| *v == Value::Bool(true)) {
                return Err(ApiError::invalid(
                    "autoPause on resume: set it at create (autoPause, lifecycle on_timeout pause); remove it here",
                ));
            }
            if !wake(&st, &tenant, &info).await? {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "running",
                    format!("sandbox {id} is already running; connect to it instead"),
                ));
            }
            extend(&st, &tenant, &info, body.get("timeout")).await?;
            Ok((StatusCode::CREATED, Json(sandbox_json(&st, &tenant, &info, &template_of(&st, &info)))).into_response())
        }
        .await,
    )
}

/// `POST /sandboxes/{id}/refreshes` with `{"duration": seconds}` (default 60): extends the
/// deadline to at least that far from now (never shortens it): 204.
pub async fn refresh(State(st): State<E2b>, Caller(tenant): Caller, Path(id): Path<String>, req: Request) -> Response {
    answer(
        async {
            let info = alive(&st, &tenant, &id).await?;
            let body = body_json(req).await?;
            let duration = body.get("duration").cloned().unwrap_or(Value::from(60));
            extend(&st, &tenant, &info, Some(&duration)).await?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        .await,
    )
}

/// Moves the deadline to `timeout` seconds from now if that is later than it is: connect,
/// resume and refresh extend a sandbox's life, never shorten it.
async fn extend(st: &E2b, tenant: &Tenant, info: &SandboxInfo, timeout: Option<&Value>) -> Result<(), ApiError> {
    let Some(t) = timeout.filter(|v| !v.is_null()) else { return Ok(()) };
    let t = timeout_of(t)?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let ends = time::OffsetDateTime::parse(&info.expires_at, &time::format_description::well_known::Rfc3339)
        .map(|d| d.unix_timestamp())
        .unwrap_or(now);
    if now + t as i64 > ends {
        st.manager.set_timeout(&tenant.name, &info.id, t).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn network_options_map_to_allow_lists() {
        assert_eq!(network_allow(&obj(json!({}))).unwrap(), None);
        assert_eq!(network_allow(&obj(json!({"allow_internet_access": false}))).unwrap(), Some(vec![]));
        assert_eq!(network_allow(&obj(json!({"allow_internet_access": true}))).unwrap(), Some(vec!["*".into()]));
        assert_eq!(
            network_allow(&obj(json!({"network": {"allowOut": ["example.com"], "denyOut": ["0.0.0.0/0"]}}))).unwrap(),
            Some(vec!["example.com".into()])
        );
        let e = network_allow(&obj(json!({"network": {"denyOut": ["8.8.8.8"]}}))).unwrap_err();
        assert!(e.message.contains("allow-lists"));
        assert!(network_allow(&obj(json!({"network": {"rules": {"a.com": {}}}}))).is_err());
        assert!(network_allow(&obj(json!({"network": {"allowPublicTraffic": true}}))).is_ok());
        assert!(network_allow(&obj(json!({"network": {"allowPublicTraffic": "yes"}}))).is_err());
    }

    #[test]
    fn templates_map_to_policies() {
        let (p, preset, t) = policy_for("base", false, &Map::new()).unwrap();
        assert_eq!(p.unwrap()["network"]["allow"], json!(["*"]));
        assert_eq!((preset, t), (None, None));
        assert_eq!(policy_for("offline", false, &Map::new()).unwrap(), (None, Some("offline".into()), None));
        // true is the default older SDKs always send; false would change the preset.
        assert!(policy_for("offline", false, &obj(json!({"allow_internet_access": true}))).is_ok());
        assert!(policy_for("offline", false, &obj(json!({"allow_internet_access": false}))).is_err());
        assert!(policy_for("offline", false, &obj(json!({"network": {"allowOut": ["a.com"]}}))).is_err());
        assert!(policy_for("nope", false, &Map::new()).unwrap_err().message.contains("template build"));
        // A template of the store: base's network on its root.
        let (p, preset, t) = policy_for("mine", true, &obj(json!({"allow_internet_access": false}))).unwrap();
        assert_eq!((p.unwrap()["network"]["allow"].clone(), preset, t), (json!([]), None, Some("mine".into())));
        // The interpreter's name: the store's template when it has one, else the host's root.
        assert_eq!(
            policy_for(CODE_INTERPRETER_TEMPLATE, true, &Map::new()).unwrap().2.as_deref(),
            Some(CODE_INTERPRETER_TEMPLATE)
        );
        assert_eq!(policy_for(CODE_INTERPRETER_TEMPLATE, false, &Map::new()).unwrap().2, None);
        assert!(refuse_unsupported(&obj(json!({"mcp": {"x": {}}}))).is_err());
        assert!(refuse_unsupported(&obj(json!({"autoPause": true, "metadata": {}}))).is_ok());
        assert!(refuse_unsupported(&obj(json!({"autoResume": {"enabled": false}, "volumeMounts": []}))).is_ok());
        let v = volumes_of(&obj(json!({"volumeMounts": [{"name": "data", "path": "/data"}]}))).unwrap();
        assert_eq!((v[0].name.as_str(), v[0].path.as_str(), v[0].read_only), ("data", "/data", false));
        assert!(volumes_of(&obj(json!({"volumeMounts": [{"name": "data"}]}))).is_err());
        // Lifecycle: a filesystem pause on disk; a memory pause refused by name.
        assert_eq!(lifecycle_of(&obj(json!({}))).unwrap(), (None, None));
        assert_eq!(lifecycle_of(&obj(json!({"autoPause": false}))).unwrap(), (None, None));
        let (storage, lc) = lifecycle_of(&obj(json!({"autoPause": true, "autoResume": {"enabled": true}}))).unwrap();
        let lc = lc.unwrap();
        assert_eq!((storage, lc.on_timeout, lc.auto_resume), (Some(Storage::Disk), OnTimeout::Pause, true));
        assert!(lifecycle_of(&obj(json!({"autoPause": true, "autoPauseMemory": false}))).is_ok());
        let e = lifecycle_of(&obj(json!({"autoPause": true, "autoPauseMemory": true}))).unwrap_err();
        assert!(e.message.contains("CRIU"), "{}", e.message);
        assert!(lifecycle_of(&obj(json!({"autoPause": "yes"}))).is_err());
    }

    #[test]
    fn control_paths() {
        for p in ["/v2/sandboxes", "/sandboxes", "/sandboxes/sb_x/timeout", "/templates", "/v3/templates", "/volumes/v"]
        {
            assert!(is_control_path(p), "{p}");
        }
        for p in ["/v1/sandboxes", "/sandboxesx", "/templatesx/a", "/files", "/healthz", "/"] {
            assert!(!is_control_path(p), "{p}");
        }
    }
}

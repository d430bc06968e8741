//! E2B's snapshots and fork, onto the manager's persistence (docs/persistence.md): a
//! snapshot is the sandbox's filesystem frozen in an instant (`Sandbox.create_snapshot`),
//! listed with `Sandbox.list_snapshots`, deleted with `Sandbox.delete_snapshot` (E2B's
//! `DELETE /templates/{id}`), and named as the template of a new sandbox
//! (`Sandbox.create(snapshot_id)`); `Sandbox.fork(count=N)` makes N sandboxes from one
//! frozen instant of a running one.
//!
//! This tier keeps files, not the processes' memory (no process checkpointing on this
//! kernel): a snapshot or fork asked to keep memory (`memory: true`, the SDK's
//! `mode="full"`) is refused naming why; unset, the API picks the filesystem, and the new
//! sandboxes start their processes afresh on the snapshot's files.

use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

use safehouse_http::params::{Caller, QueryPairs};
use safehouse_http::ApiError;
use safehouse_manager::auth::Tenant;
use safehouse_manager::ids::is_snapshot_id;
use safehouse_manager::store::SnapshotRecord;
use safehouse_manager::ManagerError;
use safehouse_manager::MAX_FORK;

use crate::control::{alive, answer, body_json, sandbox_json, template_of};
use crate::E2b;

/// Page size of a snapshot listing when none is asked for, and the largest.
const DEFAULT_LIMIT: usize = 100;

fn memory_refused(what: &str) -> ApiError {
    ApiError::invalid(format!(
        "{what} with memory: keeping the processes' memory needs process checkpointing (CRIU), which does not work \
         on this kernel; take a filesystem {what} (mode=\"filesystem\", or leave mode unset)"
    ))
}

/// Only `memory: false` or unset: this tier keeps files.
fn check_memory(body: &Map<String, Value>, what: &str) -> Result<(), ApiError> {
    match body.get("memory") {
        None | Some(Value::Null) | Some(Value::Bool(false)) => Ok(()),
        Some(Value::Bool(true)) => Err(memory_refused(what)),
        Some(_) => Err(ApiError::invalid("memory must be true or false")),
    }
}

fn only(body: &Map<String, Value>, fields: &[&str], what: &str) -> Result<(), ApiError> {
    match body.keys().find(|k| !fields.contains(&k.as_str())) {
        Some(k) => Err(ApiError::invalid(format!("{what}: {k} is not supported by safehouse yet; remove it"))),
        None => Ok(()),
    }
}

/// E2B's `SnapshotInfo`. Snapshots here have ids, not names.
fn snapshot_json(s: &SnapshotRecord) -> Value {
    json!({"snapshotID": s.id, "names": []})
}

/// The sandbox is not on disk: say how to make one that is.
fn on_disk_hint(e: ManagerError) -> ApiError {
    match e {
        ManagerError::Refused { .. } => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "policy_refused",
            "this sandbox's files are in RAM, which cannot be snapshotted or forked in an instant; create it with \
             its files on disk: autoPause (lifecycle {\"on_timeout\": \"pause\"}) or autoResume, or start it from \
             a snapshot",
        ),
        e => e.into(),
    }
}

/// `POST /sandboxes/{id}/snapshots` with `{"name"?, "memory"?}`: 201 `{snapshotID, names}`.
pub async fn snapshot(State(st): State<E2b>, Caller(tenant): Caller, Path(id): Path<String>, req: Request) -> Response {
    answer(
        async {
            alive(&st, &tenant, &id).await?;
            let body = body_json(req).await?;
            only(&body, &["name", "memory"], "snapshot")?;
            check_memory(&body, "snapshot")?;
            if body.get("name").is_some_and(|n| !n.is_null()) {
                return Err(ApiError::invalid(
                    "name: named snapshots are not supported by safehouse yet; create it without a name and use the \
                     snapshotID it answers",
                ));
            }
            let snap = st.manager.snapshot(&tenant.name, &id).await.map_err(on_disk_hint)?;
            Ok((StatusCode::CREATED, Json(snapshot_json(&snap))).into_response())
        }
        .await,
    )
}

/// `GET /snapshots?sandboxID=&name=&limit=&nextToken=`: the caller's snapshots, oldest
/// first, in pages whose next token comes back in `x-next-token`.
pub async fn list(State(st): State<E2b>, Caller(tenant): Caller, q: QueryPairs) -> Response {
    answer(
        async {
            q.only(&["sandboxID", "name", "limit", "nextToken"])?;
            let limit = match q.get("limit") {
                None => DEFAULT_LIMIT,
                Some(l) => l.parse::<usize>().ok().filter(|l| (1..=DEFAULT_LIMIT).contains(l)).ok_or_else(|| {
                    ApiError::invalid(format!("limit must be a whole number from 1 to {DEFAULT_LIMIT}"))
                })?,
            };
            let mut all = st.manager.list_snapshots(&tenant.name).await?;
            if let Some(sb) = q.get("sandboxID") {
                all.retain(|s| s.sandbox_id == sb);
            }
            if let Some(name) = q.get("name") {
                // Snapshots have ids for names; a tag (`id:tag`) is not one of ours.
                all.retain(|s| s.id == name);
            }
            // The token is the place of the previous page's last snapshot: (created, id).
            let start = match q.get("nextToken") {
                None => 0,
                Some(t) => {
                    let (at, id) = t
                        .rsplit_once('_')
                        .filter(|(_, id)| is_snapshot_id(&format!("snap_{id}")))
                        .ok_or_else(|| {
                            ApiError::invalid("nextToken is not a token this daemon gave; list again from the start")
                        })?;
                    let after = (at.to_string(), format!("snap_{id}"));
                    all.iter().position(|s| (s.created_at.clone(), s.id.clone()) > after).unwrap_or(all.len())
                }
            };
            let page: Vec<&SnapshotRecord> = all.iter().skip(start).take(limit).collect();
            let more = start + page.len() < all.len();
            let mut resp = Json(page.iter().map(|s| snapshot_json(s)).collect::<Vec<_>>()).into_response();
            if let (true, Some(last)) = (more, page.last()) {
                if let Ok(v) = HeaderValue::from_str(&format!("{}_{}", last.created_at, &last.id[5..])) {
                    resp.headers_mut().insert("x-next-token", v);
                }
            }
            Ok(resp)
        }
        .await,
    )
}

/// `DELETE /templates/{id}` for a snapshot (how the SDK's `delete_snapshot` asks): 204, or
/// 404 for one the caller does not have. Any other template is the template routes'.
pub async fn delete_snapshot(st: &E2b, tenant: &Tenant, id: &str) -> Response {
    match st.manager.delete_snapshot(&tenant.name, id).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(ManagerError::NotFound) => crate::e2b_error(StatusCode::NOT_FOUND, format!("snapshot {id} not found")),
        Err(e) => answer(Err(e.into())),
    }
}

/// `POST /sandboxes/{id}/fork` with `{"timeout"?, "count"?}`: 201, one entry per fork asked
/// for, `{"sandbox": ...}` or `{"error": {code, message}}`.
pub async fn fork(State(st): State<E2b>, Caller(tenant): Caller, Path(id): Path<String>, req: Request) -> Response {
    answer(
        async {
            let info = alive(&st, &tenant, &id).await?;
            let body = body_json(req).await?;
            only(&body, &["timeout", "count"], "fork")?;
            let count =
                match body.get("count") {
                    None | Some(Value::Null) => 1,
                    Some(v) => v.as_u64().filter(|c| (1..=u64::from(MAX_FORK)).contains(c)).ok_or_else(|| {
                        ApiError::invalid(format!("count must be a whole number from 1 to {MAX_FORK}"))
                    })? as u32,
                };
            let timeout = body.get("timeout").filter(|v| !v.is_null()).cloned();
            if let Some(t) = &timeout {
                crate::control::timeout_of(t)?;
            }
            let template = template_of(&st, &info);
            let forks = st.manager.fork_each(&tenant.name, &id, count).await.map_err(on_disk_hint)?;
            let mut out = Vec::new();
            for r in forks {
                match r {
                    Ok(child) => {
                        if timeout.is_some() {
                            if let Err(e) = extend_exact(&st, &tenant, &child.id, timeout.as_ref()).await {
                                out.push(error_json(e));
                                continue;
                            }
                        }
                        st.e2b
                            .templates
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(child.id.clone(), template.clone());
                        out.push(json!({"sandbox": sandbox_json(&st, &tenant, &child, &template)}));
                    }
                    Err(e) => out.push(error_json(e.into())),
                }
            }
            Ok((StatusCode::CREATED, Json(out)).into_response())
        }
        .await,
    )
}

/// A fork's deadline is `timeout` from now (E2B: the forks' own timeout), not the parent's.
async fn extend_exact(st: &E2b, tenant: &Tenant, id: &str, timeout: Option<&Value>) -> Result<(), ApiError> {
    let Some(t) = timeout else { return Ok(()) };
    let secs = crate::control::timeout_of(t)?;
    st.manager.set_timeout(&tenant.name, id, secs).await?;
    Ok(())
}

fn error_json(e: ApiError) -> Value {
    json!({"error": {"code": e.status.as_u16(), "message": e.message}})
}

/// The snapshot a create's `templateID` names, if it names one (`Sandbox.create(snapshot_id)`):
/// the caller's own, else 404. A snapshot's sandboxes keep its sandbox's network policy:
/// a `network` section or `allow_internet_access: false` is refused (`true`, which SDKs
/// before 2.46 always send, asks for nothing).
pub(crate) async fn snapshot_template(
    st: &E2b,
    tenant: &Tenant,
    template: &str,
    body: &Map<String, Value>,
) -> Result<Option<String>, ApiError> {
    if !is_snapshot_id(template) {
        return Ok(None);
    }
    let snap = st
        .manager
        .get_snapshot(&tenant.name, template)
        .await
        .map_err(|_| ApiError::not_found(format!("snapshot {template} not found")))?;
    let asks = body.get("network").is_some_and(|n| !n.is_null())
        || body.get("allow_internet_access") == Some(&Value::Bool(false));
    if asks {
        return Err(ApiError::invalid(format!(
            "template {template:?} is a snapshot: its sandboxes keep the network policy of the sandbox it was taken \
             from; drop allow_internet_access/network"
        )));
    }
    Ok(Some(snap.id))
}

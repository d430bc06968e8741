//! `filesystem.Filesystem`: Stat, MakeDir, Move, ListDir, Remove, WatchDir (a server
//! stream) and the polled watchers (CreateWatcher, GetWatcherEvents, RemoveWatcher), on
//! `safehouse_hostfs` exactly as the native file routes use it (same events).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::connect::{self, Code, ConnectError};
use safehouse_hostfs::{self as files, FileInfo, FileType, FsEvent, FsEventType, SandboxRoot, MAX_LIST_DEPTH};
use safehouse_http::files::WatchSlot;
use safehouse_manager::auth::Tenant;

use crate::E2b;

/// The home directory relative paths are resolved from (E2B's user is `user`).
pub const HOME: &str = "/home/user";
/// Most events a polled watcher keeps between two `GetWatcherEvents`.
const MAX_PENDING_EVENTS: usize = 10_000;
/// Most polled watchers per sandbox.
const MAX_WATCHERS_PER_SANDBOX: usize = 16;

/// Dispatches one call by method name.
pub async fn call(st: &E2b, tenant: &Tenant, id: &str, method: &str, req: Request) -> Response {
    if method == "WatchDir" {
        let keepalive = super::process::keepalive_of(&req);
        let deadline = connect::deadline_of(req.headers());
        return match connect::read_stream_request(req).await {
            Ok(msg) => watch_dir(st.clone(), tenant.clone(), id.to_string(), msg, keepalive, deadline).await,
            Err(e) => connect::stream_error(e),
        };
    }
    let msg = match connect::read_unary(req).await {
        Ok(m) => m,
        Err(e) => return e.into_response(),
    };
    let r = match method {
        "Stat" => stat(st, tenant, id, &msg).await,
        "MakeDir" => make_dir(st, tenant, id, &msg).await,
        "Move" => move_entry(st, tenant, id, &msg).await,
        "ListDir" => list_dir(st, tenant, id, &msg).await,
        "Remove" => remove(st, tenant, id, &msg).await,
        "CreateWatcher" => create_watcher(st, tenant, id, &msg).await,
        "GetWatcherEvents" => watcher_events(st, id, &msg),
        "RemoveWatcher" => remove_watcher(st, id, &msg),
        other => Err(ConnectError::unimplemented(format!("filesystem.Filesystem/{other} does not exist"))),
    };
    match r {
        Ok(v) => connect::unary_ok(v),
        Err(e) => e.into_response(),
    }
}

/// An absolute sandbox path: relative ones are under [`HOME`], as in E2B.
pub fn absolute(p: &str) -> Result<String, ConnectError> {
    safehouse_http::files::check_path(p)?;
    Ok(if p.starts_with('/') { p.to_string() } else { format!("{HOME}/{p}") })
}

fn path_field(msg: &Value, k: &str) -> Result<String, ConnectError> {
    absolute(msg.get(k).and_then(Value::as_str).unwrap_or(""))
}

pub async fn root(st: &E2b, tenant: &Tenant, id: &str) -> Result<SandboxRoot, ConnectError> {
    Ok(st.manager.root(&tenant.name, id).await?)
}

/// Runs a file operation on the blocking pool.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> files::Result<T> + Send + 'static,
) -> Result<T, ConnectError> {
    safehouse_http::files::blocking_as(f).await
}

fn permissions(kind: FileType, mode: u32) -> String {
    let mut s = String::with_capacity(10);
    s.push(match kind {
        FileType::Dir => 'd',
        FileType::Symlink => 'l',
        _ => '-',
    });
    for shift in [6, 3, 0] {
        let bits = (mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    s
}

/// E2B's `EntryInfo` (protojson: int64 `size` as a string, enums by name).
pub fn entry_json(info: &FileInfo) -> Value {
    let kind = match info.kind {
        FileType::File => "FILE_TYPE_FILE",
        FileType::Dir => "FILE_TYPE_DIRECTORY",
        FileType::Symlink => "FILE_TYPE_SYMLINK",
        FileType::Other => "FILE_TYPE_UNSPECIFIED",
    };
    let mut v = json!({
        "name": info.name,
        "type": kind,
        "path": info.path,
        "size": info.size.to_string(),
        "mode": info.mode,
        "permissions": permissions(info.kind, info.mode),
        "owner": "user",
        "group": "user",
        "modifiedTime": info.mtime,
    });
    if let Some(t) = &info.symlink_target {
        v["symlinkTarget"] = t.clone().into();
    }
    v
}

async fn stat(st: &E2b, tenant: &Tenant, id: &str, msg: &Value) -> Result<Value, ConnectError> {
    let path = path_field(msg, "path")?;
    let root = root(st, tenant, id).await?;
    let info = blocking(move || files::stat(&root, &path)).await?;
    Ok(json!({"entry": entry_json(&info)}))
}

/// Creates the directory and its parents; an existing one is `already_exists` (the SDK's
/// `make_dir` then answers false).
async fn make_dir(st: &E2b, tenant: &Tenant, id: &str, msg: &Value) -> Result<Value, ConnectError> {
    let path = path_field(msg, "path")?;
    let root = root(st, tenant, id).await?;
    let (r, p) = (root.clone(), path.clone());
    if let Ok(existing) = blocking(move || files::stat(&r, &p)).await {
        let what = if existing.kind == FileType::Dir { "directory" } else { "file" };
        return Err(ConnectError::new(Code::AlreadyExists, format!("{path}: a {what} already exists there")));
    }
    let p = path.clone();
    let info = blocking(move || files::mkdir(&root, &p, true)).await?;
    st.manager.note(id, "dir.created", json!({ "path": path }));
    Ok(json!({"entry": entry_json(&info)}))
}

async fn move_entry(st: &E2b, tenant: &Tenant, id: &str, msg: &Value) -> Result<Value, ConnectError> {
    let (from, to) = (path_field(msg, "source")?, path_field(msg, "destination")?);
    let root = root(st, tenant, id).await?;
    let data = json!({ "from": from, "to": to });
    let info = blocking(move || files::rename(&root, &from, &to)).await?;
    st.manager.note(id, "file.moved", data);
    Ok(json!({"entry": entry_json(&info)}))
}

async fn list_dir(st: &E2b, tenant: &Tenant, id: &str, msg: &Value) -> Result<Value, ConnectError> {
    let path = path_field(msg, "path")?;
    let depth = match msg.get("depth") {
        None | Some(Value::Null) => 1,
        Some(v) => v
            .as_u64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            .filter(|d| *d <= MAX_LIST_DEPTH as u64)
            .map(|d| d.max(1) as u32)
            .ok_or_else(|| ConnectError::invalid(format!("depth must be between 1 and {MAX_LIST_DEPTH}")))?,
    };
    let root = root(st, tenant, id).await?;
    let entries = blocking(move || files::list(&root, &path, depth)).await?;
    Ok(json!({"entries": entries.iter().map(entry_json).collect::<Vec<_>>()}))
}

/// `Remove`: the path and everything under it. A path that is not there is a no-op, as in
/// E2B (a recursive watcher that deletes, or a second remove, must not fail).
async fn remove(st: &E2b, tenant: &Tenant, id: &str, msg: &Value) -> Result<Value, ConnectError> {
    let path = path_field(msg, "path")?;
    let root = root(st, tenant, id).await?;
    let data = json!({ "path": path, "recursive": true });
    match blocking(move || files::remove(&root, &path, true)).await {
        Ok(_) => st.manager.note(id, "file.deleted", data),
        Err(e) if e.code == Code::NotFound => {}
        Err(e) => return Err(e),
    }
    Ok(json!({}))
}

/// `FilesystemEvent`: the name relative to the watched directory and the E2B event type.
fn event_json(top: &str, ev: &FsEvent) -> Value {
    let kind = match ev.kind {
        FsEventType::Create => "EVENT_TYPE_CREATE",
        FsEventType::Modify => "EVENT_TYPE_WRITE",
        FsEventType::Delete => "EVENT_TYPE_REMOVE",
        FsEventType::Rename => "EVENT_TYPE_RENAME",
    };
    let name = ev.path.strip_prefix(top).map(|r| r.trim_start_matches('/')).filter(|r| !r.is_empty());
    json!({"name": name.unwrap_or(&ev.path), "type": kind})
}

pub fn watch_request(msg: &Value) -> Result<(String, bool), ConnectError> {
    let recursive = msg.get("recursive").and_then(Value::as_bool).unwrap_or(false);
    if msg.get("includeEntry").and_then(Value::as_bool) == Some(true) {
        return Err(ConnectError::invalid(
            "includeEntry: watch events with the entry's details (envd 0.6.3) are not supported by safehouse, \
             which serves envd 0.6.1; watch without include_entry and stat the path",
        ));
    }
    if msg.get("allowNetworkMounts").and_then(Value::as_bool) == Some(true) {
        return Err(ConnectError::invalid(
            "allowNetworkMounts: watching network mounts (envd 0.6.4) is not supported by safehouse, which serves \
             envd 0.6.1 (a sandbox has no network mounts); watch without allow_network_mounts",
        ));
    }
    Ok((path_field(msg, "path")?, recursive))
}

/// Starts a watcher on the blocking pool that hands every batch of events to `deliver`
/// until it returns false, the sandbox is gone, or `stop` is set.
fn spawn_watch(
    st: &E2b,
    id: &str,
    (mut watcher, slot): Held,
    top: String,
    stop: Arc<AtomicBool>,
    mut deliver: impl FnMut(Vec<Value>) -> bool + Send + 'static,
) {
    let manager = st.manager.clone();
    let id = id.to_string();
    tokio::task::spawn_blocking(move || {
        let _slot = slot;
        while !stop.load(Ordering::Relaxed) && manager.is_live(&id) && !watcher.is_closed() {
            let events = match watcher.next_events(Duration::from_millis(250)) {
                Ok(ev) => ev,
                Err(_) => return,
            };
            if !events.is_empty() && !deliver(events.iter().map(|e| event_json(&top, e)).collect()) {
                return;
            }
        }
    });
}

/// A watcher and the daemon-wide watch slot it holds (the native watch route's budget).
type Held = (files::Watcher, WatchSlot);

async fn open_watcher(st: &E2b, tenant: &Tenant, id: &str, msg: &Value) -> Result<(Held, String), ConnectError> {
    let (path, recursive) = watch_request(msg)?;
    let slot = WatchSlot::take().ok_or_else(|| {
        ConnectError::new(Code::ResourceExhausted, "too many file watches are open; remove one and retry")
    })?;
    let root = root(st, tenant, id).await?;
    let p = path.clone();
    let w = blocking(move || files::watch(&root, &p, recursive)).await?;
    Ok(((w, slot), path))
}

async fn watch_dir(
    st: E2b,
    tenant: Tenant,
    id: String,
    msg: Value,
    keepalive: Duration,
    deadline: Option<Duration>,
) -> Response {
    let (watcher, top) = match open_watcher(&st, &tenant, &id, &msg).await {
        Ok(w) => w,
        Err(e) => return connect::stream_error(e),
    };
    let (ev_tx, mut ev_rx) = tokio::sync::mpsc::channel::<Vec<Value>>(64);
    let stop = Arc::new(AtomicBool::new(false));
    spawn_watch(&st, &id, watcher, top, stop.clone(), move |batch| ev_tx.blocking_send(batch).is_ok());
    connect::stream_response(deadline, move |tx| async move {
        let _stop = StopOnDrop(stop);
        if !connect::send(&tx, json!({"start": {}})).await {
            return Ok(());
        }
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + keepalive, keepalive);
        loop {
            tokio::select! {
                batch = ev_rx.recv() => {
                    let Some(batch) = batch else { return Ok(()) };
                    for ev in batch {
                        if !connect::send(&tx, json!({"filesystem": ev})).await {
                            return Ok(());
                        }
                    }
                }
                _ = tick.tick() => {
                    if !connect::send(&tx, json!({"keepalive": {}})).await {
                        return Ok(());
                    }
                }
            }
        }
    })
}

struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// A watcher made by `CreateWatcher`: its events wait for `GetWatcherEvents`.
struct Polled {
    sandbox: String,
    events: Arc<Mutex<Vec<Value>>>,
    stop: Arc<AtomicBool>,
}

/// The polled watchers, by id.
#[derive(Default)]
pub struct Watchers(Mutex<HashMap<String, Polled>>);

impl Watchers {
    /// Stops and drops the watchers of a sandbox.
    pub fn forget(&self, sandbox: &str) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, w| {
            let keep = w.sandbox != sandbox;
            if !keep {
                w.stop.store(true, Ordering::Relaxed);
            }
            keep
        });
    }
}

async fn create_watcher(st: &E2b, tenant: &Tenant, id: &str, msg: &Value) -> Result<Value, ConnectError> {
    // Watchers of sandboxes that ended (expired: nobody called RemoveWatcher) go first.
    st.e2b.watchers.0.lock().unwrap_or_else(|e| e.into_inner()).retain(|_, w| st.manager.is_live(&w.sandbox));
    let count =
        st.e2b.watchers.0.lock().unwrap_or_else(|e| e.into_inner()).values().filter(|w| w.sandbox == id).count();
    if count >= MAX_WATCHERS_PER_SANDBOX {
        return Err(ConnectError::new(
            Code::ResourceExhausted,
            format!("this sandbox has {MAX_WATCHERS_PER_SANDBOX} watchers; remove one first"),
        ));
    }
    let (watcher, top) = open_watcher(st, tenant, id, msg).await?;
    let events = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let sink = events.clone();
    spawn_watch(st, id, watcher, top, stop.clone(), move |batch| {
        let mut q = sink.lock().unwrap_or_else(|e| e.into_inner());
        let room = MAX_PENDING_EVENTS.saturating_sub(q.len());
        q.extend(batch.into_iter().take(room));
        true
    });
    let wid = format!("w_{}", safehouse_manager::ids::sandbox_id().trim_start_matches("sb_"));
    st.e2b
        .watchers
        .0
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(wid.clone(), Polled { sandbox: id.to_string(), events, stop });
    Ok(json!({"watcherId": wid}))
}

fn watcher_id(msg: &Value) -> Result<&str, ConnectError> {
    msg.get("watcherId").and_then(Value::as_str).ok_or_else(|| ConnectError::invalid("watcherId is required"))
}

fn watcher_events(st: &E2b, id: &str, msg: &Value) -> Result<Value, ConnectError> {
    let wid = watcher_id(msg)?;
    let map = st.e2b.watchers.0.lock().unwrap_or_else(|e| e.into_inner());
    let w = map
        .get(wid)
        .filter(|w| w.sandbox == id)
        .ok_or_else(|| ConnectError::new(Code::NotFound, format!("watcher {wid} not found")))?;
    let events = std::mem::take(&mut *w.events.lock().unwrap_or_else(|e| e.into_inner()));
    Ok(json!({"events": events}))
}

fn remove_watcher(st: &E2b, id: &str, msg: &Value) -> Result<Value, ConnectError> {
    let wid = watcher_id(msg)?;
    let mut map = st.e2b.watchers.0.lock().unwrap_or_else(|e| e.into_inner());
    match map.get(wid) {
        Some(w) if w.sandbox == id => {
            w.stop.store(true, Ordering::Relaxed);
            map.remove(wid);
            Ok(json!({}))
        }
        _ => Err(ConnectError::new(Code::NotFound, format!("watcher {wid} not found"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_are_under_home() {
        assert_eq!(absolute("a/b").unwrap(), "/home/user/a/b");
        assert_eq!(absolute("/tmp/x").unwrap(), "/tmp/x");
        assert!(absolute("").is_err());
        assert!(absolute("a\0b").is_err());
    }

    #[test]
    fn entries_and_events_in_protojson() {
        let info = FileInfo {
            path: "/tmp/f".into(),
            name: "f".into(),
            kind: FileType::File,
            size: 12,
            mode: 0o644,
            mtime: "2026-01-01T00:00:00Z".into(),
            symlink_target: None,
            owner: (1000, 1000),
            atime: "2026-01-01T00:00:00Z".into(),
            ctime: "2026-01-01T00:00:00Z".into(),
        };
        let v = entry_json(&info);
        assert_eq!(v["size"], "12");
        assert_eq!(v["type"], "FILE_TYPE_FILE");
        assert_eq!(v["permissions"], "-rw-r--r--");
        let ev = FsEvent { kind: FsEventType::Create, path: "/tmp/d/x.txt".into() };
        assert_eq!(event_json("/tmp/d", &ev), json!({"name": "x.txt", "type": "EVENT_TYPE_CREATE"}));
    }
}

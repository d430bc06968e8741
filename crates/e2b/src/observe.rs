//! What the control plane shows of running sandboxes: metrics (one sandbox's history,
//! `GET /sandboxes/{id}/metrics`; the latest of many, `GET /sandboxes/metrics`) and logs
//! (`GET /sandboxes/{id}/logs`, `GET /v2/sandboxes/{id}/logs`): a sandbox's kept events
//! (the same ones `GET /v1/sandboxes/{id}/events` replays), one line each.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use safehouse_http::params::{Caller, QueryPairs};
use safehouse_http::ApiError;
use safehouse_manager::events::Event;
use safehouse_manager::metrics::Sample;

use crate::control::{alive, answer, host_cpus, host_memory};
use crate::E2b;

/// Most sandboxes one `GET /sandboxes/metrics` may name.
const MAX_IDS: usize = 100;
/// Log entries of one page when none is asked for, and the most.
const DEFAULT_LOGS: usize = 1000;

/// E2B's `SandboxMetric` of one sample.
fn metric_json(s: &Sample) -> Value {
    let cpus = host_cpus();
    json!({
        "timestamp": rfc3339(s.t),
        "timestampUnix": s.t as i64,
        "cpuCount": cpus,
        "cpuUsedPct": s.cpu_pct / cpus as f64,
        "memUsed": s.memory_bytes,
        "memTotal": host_memory(),
        "memCache": 0,
        "diskUsed": s.disk_bytes,
        "diskTotal": 0,
    })
}

fn rfc3339(t: f64) -> String {
    OffsetDateTime::from_unix_timestamp(t as i64).ok().and_then(|d| d.format(&Rfc3339).ok()).unwrap_or_default()
}

/// `GET /sandboxes/{id}/metrics?start=&end=` (Unix seconds): the sampler's history (one a
/// second, the last 5 minutes).
pub async fn metrics(State(st): State<E2b>, Caller(tenant): Caller, Path(id): Path<String>, q: QueryPairs) -> Response {
    answer(
        async {
            q.only(&["start", "end"])?;
            let bound = |k: &str| -> Result<Option<f64>, ApiError> {
                q.get(k)
                    .map(|v| v.parse::<f64>().map_err(|_| ApiError::invalid(format!("{k} must be Unix seconds"))))
                    .transpose()
            };
            let (start, end) = (bound("start")?, bound("end")?);
            alive(&st, &tenant, &id).await?;
            let m = st.manager.metrics(&tenant.name, &id).await?;
            let items: Vec<Value> = m
                .history
                .iter()
                .filter(|s| start.is_none_or(|t| s.t >= t) && end.is_none_or(|t| s.t <= t))
                .map(metric_json)
                .collect();
            Ok(Json(items).into_response())
        }
        .await,
    )
}

/// `GET /sandboxes/metrics?sandbox_ids=a,b,...`: `{"sandboxes": {id: latest metric}}` for
/// the named sandboxes the caller has and that run; others are left out, as in E2B.
pub async fn many_metrics(State(st): State<E2b>, Caller(tenant): Caller, q: QueryPairs) -> Response {
    answer(
        async {
            q.only(&["sandbox_ids"])?;
            let ids: Vec<&str> = q.require("sandbox_ids")?.split(',').filter(|s| !s.is_empty()).collect();
            if ids.is_empty() || ids.len() > MAX_IDS {
                return Err(ApiError::invalid(format!("sandbox_ids: name 1 to {MAX_IDS} sandboxes, comma-separated")));
            }
            let mut out = Map::new();
            for id in ids {
                if alive(&st, &tenant, id).await.is_err() {
                    continue;
                }
                if let Ok(m) = st.manager.metrics(&tenant.name, id).await {
                    if let Some(s) = m.history.last() {
                        out.insert(id.to_string(), metric_json(s));
                    }
                }
            }
            Ok(Json(json!({ "sandboxes": out })).into_response())
        }
        .await,
    )
}

/// A log entry's level: what went wrong is `error`, what was refused `warn`.
fn level(kind: &str) -> &'static str {
    if kind.ends_with(".failed") || kind.ends_with(".oom") {
        "error"
    } else if kind.contains("denied") || kind.contains("violation") || kind.contains("exceeded") {
        "warn"
    } else {
        "info"
    }
}

const LEVELS: &[&str] = &["debug", "info", "warn", "error"];

fn event_ms(e: &Event) -> i64 {
    OffsetDateTime::parse(&e.time, &Rfc3339).map(|d| (d.unix_timestamp_nanos() / 1_000_000) as i64).unwrap_or(0)
}

/// One event as a log line: its kind and its data.
fn line(e: &Event) -> String {
    format!("{} {}", e.kind, e.data)
}

fn entry_json(e: &Event) -> Value {
    json!({
        "timestamp": e.time,
        "message": line(e),
        "level": level(&e.kind),
        "fields": {"kind": e.kind, "seq": e.seq.to_string(), "sandboxID": e.sandbox},
    })
}

fn limit_of(q: &QueryPairs) -> Result<usize, ApiError> {
    match q.get("limit") {
        None => Ok(DEFAULT_LOGS),
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=DEFAULT_LOGS).contains(l))
            .ok_or_else(|| ApiError::invalid(format!("limit must be between 1 and {DEFAULT_LOGS}"))),
    }
}

fn ms_param(q: &QueryPairs, k: &str) -> Result<Option<i64>, ApiError> {
    q.get(k)
        .map(|v| v.parse::<i64>().map_err(|_| ApiError::invalid(format!("{k} must be Unix milliseconds"))))
        .transpose()
}

/// The sandbox's kept events, oldest first (the caller checked the sandbox is the tenant's).
fn kept_events(st: &E2b, id: &str) -> Vec<std::sync::Arc<Event>> {
    st.manager.events().subscribe_sandbox(id, 0).replay
}

/// `GET /sandboxes/{id}/logs?start=<ms>&limit=N`: `{"logs": [{timestamp, line}],
/// "logEntries": [...]}`, oldest first.
pub async fn logs(State(st): State<E2b>, Caller(tenant): Caller, Path(id): Path<String>, q: QueryPairs) -> Response {
    answer(
        async {
            q.only(&["start", "limit"])?;
            let (start, limit) = (ms_param(&q, "start")?, limit_of(&q)?);
            alive(&st, &tenant, &id).await?;
            let events: Vec<_> = kept_events(&st, &id)
                .into_iter()
                .filter(|e| start.is_none_or(|s| event_ms(e) >= s))
                .take(limit)
                .collect();
            let logs: Vec<Value> = events.iter().map(|e| json!({"timestamp": e.time, "line": line(e)})).collect();
            let entries: Vec<Value> = events.iter().map(|e| entry_json(e)).collect();
            Ok(Json(json!({"logs": logs, "logEntries": entries})).into_response())
        }
        .await,
    )
}

/// `GET /v2/sandboxes/{id}/logs?cursor=<ms>&limit=N&direction=forward|backward&level=L&search=S`:
/// `{"logs": [entries]}`, from the cursor in the direction asked (forward by default).
pub async fn logs_v2(State(st): State<E2b>, Caller(tenant): Caller, Path(id): Path<String>, q: QueryPairs) -> Response {
    answer(
        async {
            q.only(&["cursor", "limit", "direction", "level", "search"])?;
            let (cursor, limit) = (ms_param(&q, "cursor")?, limit_of(&q)?);
            let forward = match q.get("direction") {
                None | Some("forward") => true,
                Some("backward") => false,
                Some(d) => return Err(ApiError::invalid(format!("direction {d:?}: use forward or backward"))),
            };
            let min_level = match q.get("level") {
                None => 0,
                Some(l) => LEVELS
                    .iter()
                    .position(|x| *x == l)
                    .ok_or_else(|| ApiError::invalid(format!("level {l:?}: use one of {}", LEVELS.join(", "))))?,
            };
            let search = q.get("search").unwrap_or("");
            alive(&st, &tenant, &id).await?;
            let mut events: Vec<_> = kept_events(&st, &id)
                .into_iter()
                .filter(|e| LEVELS.iter().position(|x| *x == level(&e.kind)).unwrap_or(0) >= min_level)
                .filter(|e| search.is_empty() || line(e).contains(search))
                .filter(|e| cursor.is_none_or(|c| if forward { event_ms(e) >= c } else { event_ms(e) <= c }))
                .collect();
            if !forward {
                events.reverse();
            }
            events.truncate(limit);
            Ok(Json(json!({"logs": events.iter().map(|e| entry_json(e)).collect::<Vec<_>>()})).into_response())
        }
        .await,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_and_lines() {
        assert_eq!(level("sandbox.failed"), "error");
        assert_eq!(level("net.denied"), "warn");
        assert_eq!(level("process.started"), "info");
        let e = Event {
            sandbox: "sb_x".into(),
            seq: 3,
            time: "2026-12-07T10:00:00.250Z".into(),
            kind: "process.started".into(),
            data: json!({"pid": 2}),
            dropped: 0,
            tenant: None,
        };
        assert_eq!(line(&e), r#"process.started {"pid":2}"#);
        assert_eq!(event_ms(&e) % 1000, 250);
        assert_eq!(entry_json(&e)["fields"]["seq"], "3");
    }
}

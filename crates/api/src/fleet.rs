//! The fleet at once: its live numbers (`GET /v1/metrics`, a stream of frames, one per
//! sampler round) and the gentle stop, freeze-all and thaw-all. The admin key covers every
//! tenant; other keys their own tenant's sandboxes, like kill-all.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::stream;
use serde_json::json;

use safehouse_http::params::{Caller, QueryPairs};
use safehouse_http::ApiError;
use safehouse_http::AppState;
use safehouse_manager::fleet::{FleetCursor, FleetFrame, MAX_HISTORY};

const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// `GET /v1/metrics?history=N&follow=false`: Server-Sent Events, `event: fleet` with a
/// `FleetFrame` now and after every sampler round (about once a second).
pub async fn stream(State(st): State<AppState>, Caller(tenant): Caller, q: QueryPairs) -> Result<Response, ApiError> {
    q.only(&["history", "follow"])?;
    let history = match q.get("history") {
        None => 0,
        Some(h) => h
            .parse::<usize>()
            .ok()
            .filter(|h| *h <= MAX_HISTORY)
            .ok_or_else(|| ApiError::invalid(format!("history must be a whole number from 0 to {MAX_HISTORY}")))?,
    };
    let follow = match q.get("follow") {
        None => true,
        Some(_) => q.flag("follow")?,
    };
    let mut rounds = st.manager.sampler_rounds();
    rounds.borrow_and_update();
    let mut cursor = FleetCursor::default();
    let first = st.manager.fleet_frame(&tenant.name, &mut cursor, history).await?;
    let state = (st, tenant, cursor, rounds, Some(first), follow);
    let frames = stream::unfold(state, move |(st, tenant, mut cursor, mut rounds, first, follow)| async move {
        let frame = match first {
            Some(f) => f,
            None if !follow => return None,
            None => {
                rounds.changed().await.ok()?;
                st.manager.fleet_frame(&tenant.name, &mut cursor, history).await.ok()?
            }
        };
        Some((Ok::<_, Infallible>(to_sse(&frame)), (st, tenant, cursor, rounds, None, follow)))
    });
    Ok(Sse::new(frames).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)).into_response())
}

fn to_sse(frame: &FleetFrame) -> SseEvent {
    SseEvent::default().event("fleet").data(serde_json::to_string(frame).unwrap_or_else(|_| "null".into()))
}

/// `POST /v1/freeze-all` → `{frozen, ms, failed: [{id, error}]}`.
pub async fn freeze_all(State(st): State<AppState>, Caller(tenant): Caller) -> Result<impl IntoResponse, ApiError> {
    let r = st.manager.freeze_all(&tenant.name).await?;
    Ok(Json(json!({ "frozen": r.count, "ms": r.ms, "failed": r.failed })))
}

/// `POST /v1/thaw-all` → `{thawed, ms, failed: [{id, error}]}`.
pub async fn thaw_all(State(st): State<AppState>, Caller(tenant): Caller) -> Result<impl IntoResponse, ApiError> {
    let r = st.manager.thaw_all(&tenant.name).await?;
    Ok(Json(json!({ "thawed": r.count, "ms": r.ms, "failed": r.failed })))
}

//! The event streams (Server-Sent Events): one sandbox's, and every sandbox of the caller's
//! tenant (the admin tenant sees all).
//!
//! Each event is `id: <sandbox>:<seq>`, `event: <kind>`, `data: <the event as JSON>`. The
//! stream starts with what the bus kept (per sandbox: the events after `since_seq`), then
//! follows live; `follow=false` ends it after the replay. A subscriber that falls more than
//! the broadcast buffer behind gets `event: lagged` with `{"missed": N}` and continues:
//! producers never wait for it. A sandbox's stream ends after its terminal event
//! (`sandbox.killed`, `.expired`, `.failed`). A comment every 15 s keeps proxies from
//! closing an idle stream.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream};
use tokio::sync::broadcast::error::RecvError;

use safehouse_http::params::Caller;
use safehouse_http::params::{QueryPairs, SandboxId};
use safehouse_http::ApiError;
use safehouse_http::AppState;
use safehouse_manager::events::{Event, Subscription};

const KEEP_ALIVE: Duration = Duration::from_secs(15);

pub async fn sandbox_events(
    State(st): State<AppState>,
    Caller(tenant): Caller,
    SandboxId(id): SandboxId,
    q: QueryPairs,
) -> Result<Response, ApiError> {
    q.only(&["since_seq", "follow"])?;
    let since = match q.get("since_seq") {
        None => 0,
        Some(s) => s.parse::<u64>().map_err(|_| ApiError::invalid("since_seq must be a whole number"))?,
    };
    let follow = follow(&q)?;
    // Another tenant's sandbox is unknown here, exactly like one that never existed.
    st.manager.info(&tenant.name, &id).await?;
    let sub = st.manager.events().subscribe_sandbox(&id, since);
    // A sandbox that already ended (whose end may have left the ring) has nothing to follow.
    let follow = follow && st.manager.is_live(&id) && !sub.replay.iter().any(|e| e.is_terminal());
    let want = id.clone();
    Ok(sse(sub, follow, true, move |e| e.sandbox == want))
}

pub async fn all_events(
    State(st): State<AppState>,
    Caller(tenant): Caller,
    q: QueryPairs,
) -> Result<Response, ApiError> {
    q.only(&["follow", "replay"])?;
    let follow = follow(&q)?;
    let replay = match q.get("replay") {
        None => true,
        Some(_) => q.flag("replay")?,
    };
    let visible = move |e: &Event| tenant.is_admin() || e.tenant.as_deref() == Some(tenant.name.as_str());
    let sub = st.manager.events().subscribe_all(replay, &visible);
    Ok(sse(sub, follow, false, visible))
}

fn follow(q: &QueryPairs) -> Result<bool, ApiError> {
    match q.get("follow") {
        None => Ok(true),
        Some(_) => q.flag("follow"),
    }
}

struct Feed<F> {
    replay: VecDeque<Arc<Event>>,
    sub: Option<tokio::sync::broadcast::Receiver<Arc<Event>>>,
    wanted: F,
    /// End after a terminal event (a sandbox's own stream).
    end_on_terminal: bool,
    ended: bool,
}

fn sse<F>(sub: Subscription, follow: bool, end_on_terminal: bool, wanted: F) -> Response
where
    F: Fn(&Event) -> bool + Send + Sync + 'static,
{
    let feed =
        Feed { replay: sub.replay.into(), sub: follow.then_some(sub.live), wanted, end_on_terminal, ended: false };
    let stream = events_stream(feed);
    Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)).into_response()
}

fn events_stream<F>(feed: Feed<F>) -> impl Stream<Item = Result<SseEvent, Infallible>>
where
    F: Fn(&Event) -> bool + Send + Sync + 'static,
{
    stream::unfold(feed, |mut f| async move {
        if f.ended {
            return None;
        }
        if let Some(e) = f.replay.pop_front() {
            f.ended = f.end_on_terminal && e.is_terminal();
            return Some((Ok(to_sse(&e)), f));
        }
        let rx = f.sub.as_mut()?;
        loop {
            match rx.recv().await {
                Ok(e) if (f.wanted)(&e) => {
                    f.ended = f.end_on_terminal && e.is_terminal();
                    return Some((Ok(to_sse(&e)), f));
                }
                Ok(_) => continue,
                Err(RecvError::Lagged(n)) => {
                    let data = serde_json::json!({ "missed": n }).to_string();
                    return Some((Ok(SseEvent::default().event("lagged").data(data)), f));
                }
                Err(RecvError::Closed) => return None,
            }
        }
    })
}

fn to_sse(e: &Event) -> SseEvent {
    // Sandbox ids and kinds are plain names (the bus cleans kinds); ids are checked here too,
    // since a newline in an SSE field would split the event.
    let sandbox: String =
        e.sandbox.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect();
    let data = serde_json::to_string(e).unwrap_or_else(|_| "null".into());
    SseEvent::default().id(format!("{sandbox}:{}", e.seq)).event(&e.kind).data(data)
}

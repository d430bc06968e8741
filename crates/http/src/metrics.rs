//! The layer counting requests by route and status, for every front's routes.

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;

use crate::AppState;

/// Counts each routed request under its route template (never the raw path, which would
/// make a label per sandbox id).
pub async fn count(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_string());
    let method = req.method().clone();
    let resp = next.run(req).await;
    if let Some(route) = route {
        st.manager.count_request(method.as_str(), &route, resp.status().as_u16());
    }
    resp
}
